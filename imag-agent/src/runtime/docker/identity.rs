//! Which container is a host's. imag recognises its containers by their labels
//! (`imag.managed`, `imag.network`, `imag.host`), never by their names, and drives each by its
//! ID (unique, never reused): a container an operator renamed is still the host's, and a
//! container of someone else that happens to carry the host's name is never touched. A name
//! conflict on create is resolved only against a container whose labels say it is this host's;
//! anything else is reported as [`RuntimeError::Foreign`], naming the container and its owner.
//!
//! Names are for people: a container found by its labels under another name (the old
//! `<network>-<host>` scheme, or renamed by hand) is renamed to `<network>--<host>` when the
//! agent next looks at the whole network, if that name is free. Its neighbour `mod.rs` drives
//! the container through the IDs kept here.

use std::collections::HashMap;

use bollard::{
    models::ContainerSummary,
    query_parameters::{
        InspectContainerOptions, ListContainersOptions, RemoveContainerOptions,
        RenameContainerOptions,
    },
};
use tracing::{info, warn};

use super::{Docker, by_name::ByName, classify, status_of};
use crate::runtime::{
    ContainerSpec, LABEL_HOST, LABEL_MANAGED, LABEL_NETWORK, RuntimeError, legacy_container_name,
};

/// Host → its container's ID as last seen: `Some(None)` when the engine had none, absent from
/// the map when unknown (then the engine is asked by label). Shared by every clone.
#[derive(Clone, Default)]
pub(super) struct Identities(ByName<Option<String>>);

impl Identities {
    #[allow(
        clippy::option_option,
        reason = "unknown (ask the engine) versus known to have no container"
    )]
    fn get(&self, host: &str) -> Option<Option<String>> {
        self.0.get(host)
    }

    pub(super) fn set(&self, host: &str, id: Option<String>) {
        self.0.insert(host, id);
    }

    /// Forgets what was known (the next use asks the engine).
    pub(super) fn forget(&self, host: &str) {
        self.0.remove(host);
    }

    /// The container `id` is gone: forgets it if it was the one known for `host` (imag's own
    /// removals already recorded that the host has none).
    pub(super) fn gone(&self, host: &str, id: Option<&str>) {
        self.0
            .remove_if(host, |known| id.is_none() || known.as_deref() == id);
    }
}

/// Who holds a container name imag wants.
pub(super) enum Holder {
    /// This host's own container (by its labels), with its ID.
    Ours(String),
    /// Someone else's: who, as its labels say.
    Foreign(String),
    /// Nobody any more.
    Nobody,
}

/// Whether `labels` mark a container as host `host`'s on network `network`.
pub(super) fn is_ours(labels: Option<&HashMap<String, String>>, network: &str, host: &str) -> bool {
    labels.is_some_and(|l| {
        l.get(LABEL_MANAGED).map(String::as_str) == Some("true")
            && l.get(LABEL_NETWORK).map(String::as_str) == Some(network)
            && l.get(LABEL_HOST).map(String::as_str) == Some(host)
    })
}

/// Who owns a container, from its labels, in words for an operator.
pub(super) fn owner_of(labels: Option<&HashMap<String, String>>) -> String {
    let label = |key: &str| labels.and_then(|l| l.get(key)).map(String::as_str);
    match (
        label(LABEL_NETWORK),
        label(LABEL_HOST),
        label("com.docker.compose.project"),
    ) {
        (Some(network), Some(host), _) => {
            format!("it belongs to imag network {network:?}, host {host:?}")
        }
        (_, _, Some(project)) => format!(
            "it belongs to docker compose project {project:?}, service {:?}",
            label("com.docker.compose.service").unwrap_or("?")
        ),
        _ => "it has no imag labels: created by hand or by another tool".to_string(),
    }
}

impl Docker {
    /// The ID of `spec`'s host's container, found by its labels (remembered), or `None`.
    pub(super) async fn container_id(
        &self,
        spec: &ContainerSpec,
    ) -> Result<Option<String>, RuntimeError> {
        if let Some(known) = self.ids.get(&spec.host) {
            return Ok(known);
        }
        let mut found = self.labelled(&spec.network, Some(&spec.host)).await?;
        let id = match found.len() {
            0 => None,
            1 => found.pop().and_then(|c| c.id),
            _ => self.keep_one(spec, found).await?,
        };
        self.ids.set(&spec.host, id.clone());
        Ok(id)
    }

    /// imag's containers of `network` (of one `host`, if given), in any state.
    pub(super) async fn labelled(
        &self,
        network: &str,
        host: Option<&str>,
    ) -> Result<Vec<ContainerSummary>, RuntimeError> {
        let mut labels = vec![
            format!("{LABEL_MANAGED}=true"),
            format!("{LABEL_NETWORK}={network}"),
        ];
        labels.extend(host.map(|h| format!("{LABEL_HOST}={h}")));
        let options = ListContainersOptions {
            all: true,
            filters: Some(HashMap::from([("label".to_string(), labels)])),
            ..Default::default()
        };
        self.client
            .list_containers(Some(options))
            .await
            .map_err(|e| classify(e, "list containers of network", network))
    }

    /// Several containers carry one host's labels (never made by one agent; left by two agents
    /// racing, or copied by hand): keeps the one with the host's name (else a running one, else
    /// the first) and removes the others, so that a host never has two containers.
    pub(super) async fn keep_one(
        &self,
        spec: &ContainerSpec,
        mut found: Vec<ContainerSummary>,
    ) -> Result<Option<String>, RuntimeError> {
        let rank = |c: &ContainerSummary| {
            let named = name_of(c).as_deref() == Some(spec.name.as_str());
            let running = c.state.is_some_and(|s| {
                s == bollard::models::ContainerSummaryStateEnum::RUNNING
                    || s == bollard::models::ContainerSummaryStateEnum::PAUSED
            });
            (!named, !running)
        };
        found.sort_by_key(rank);
        let mut kept = found.into_iter();
        let keep = kept.next().and_then(|c| c.id);
        for extra in kept.filter_map(|c| c.id) {
            warn!(host = %spec.host, container = %extra,
                "a second container carries the host's labels; removing it");
            self.remove_id(&extra, &spec.name).await?;
        }
        Ok(keep)
    }

    /// Whose container holds `spec.name` (after a create found the name taken).
    pub(super) async fn holder_of_name(
        &self,
        spec: &ContainerSpec,
    ) -> Result<Holder, RuntimeError> {
        match self
            .client
            .inspect_container(&spec.name, None::<InspectContainerOptions>)
            .await
        {
            Ok(found) => {
                let labels = found.config.as_ref().and_then(|c| c.labels.as_ref());
                Ok(match found.id {
                    Some(id) if is_ours(labels, &spec.network, &spec.host) => Holder::Ours(id),
                    _ => Holder::Foreign(owner_of(labels)),
                })
            }
            Err(err) if status_of(&err) == Some(404) => Ok(Holder::Nobody),
            Err(err) => Err(classify(err, "inspect", &spec.name)),
        }
    }

    /// Removes the container with ID `id` (imag's, found by its labels), never its volumes.
    pub(super) async fn remove_id(&self, id: &str, name: &str) -> Result<(), RuntimeError> {
        let options = RemoveContainerOptions {
            force: true,
            // Never the volumes: a named volume is the host's data, and must survive every sleep
            // tier (and `detach`), `remove` included.
            v: false,
            ..Default::default()
        };
        match self.client.remove_container(id, Some(options)).await {
            Ok(()) => Ok(()),
            Err(err) if status_of(&err) == Some(404) => Ok(()),
            Err(err) => Err(classify(err, "remove", name)),
        }
    }

    /// Gives a container found by its labels under another name the host's name, if that name
    /// is free (a container of the old `<network>-<host>` scheme, or one renamed by hand). A
    /// failure only costs the name: the container is the host's either way.
    pub(super) async fn restore_name(&self, spec: &ContainerSpec, id: &str, current: &str) {
        let options = RenameContainerOptions {
            name: spec.name.clone(),
        };
        let why = if current == legacy_container_name(&spec.network, &spec.host) {
            "the old <network>-<host> scheme"
        } else {
            "renamed by hand"
        };
        match self.client.rename_container(id, options).await {
            Ok(()) => info!(host = %spec.host, from = %current, to = %spec.name, why,
                "renamed the host's container"),
            Err(err) => {
                warn!(host = %spec.host, container = %current, error = %super::message_of(&err),
                "the host's container keeps its name (recognised by its labels)");
            }
        }
    }
}

/// A listed container's name, without Docker's leading '/'.
pub(super) fn name_of(container: &ContainerSummary) -> Option<String> {
    container
        .names
        .as_ref()
        .and_then(|n| n.first())
        .map(|n| n.trim_start_matches('/').to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect()
    }

    #[test]
    fn only_a_container_labelled_for_this_network_and_host_is_ours() {
        let ours = labels(&[
            (LABEL_MANAGED, "true"),
            (LABEL_NETWORK, "a"),
            (LABEL_HOST, "b-c"),
        ]);
        assert!(is_ours(Some(&ours), "a", "b-c"));
        // The same name under the old scheme: network "a-b", host "c".
        assert!(!is_ours(Some(&ours), "a-b", "c"));
        assert!(!is_ours(None, "a", "b-c"));
        assert!(!is_ours(Some(&labels(&[(LABEL_HOST, "b-c")])), "a", "b-c"));
    }

    #[test]
    fn owners_are_named_from_labels() {
        assert!(owner_of(None).contains("no imag labels"));
        let imag = labels(&[(LABEL_NETWORK, "a-b"), (LABEL_HOST, "c")]);
        assert_eq!(
            owner_of(Some(&imag)),
            "it belongs to imag network \"a-b\", host \"c\""
        );
        let compose = labels(&[
            ("com.docker.compose.project", "shop"),
            ("com.docker.compose.service", "db"),
        ]);
        assert!(owner_of(Some(&compose)).contains("compose project \"shop\", service \"db\""));
    }
}
