//! The Docker side of what is not one container: the network that holds the imaginary hosts,
//! and observing all of its containers in one call. Its neighbours: `mod.rs` drives single
//! containers (wake, sleep, inspect), `events.rs` follows the engine's event stream.

use std::collections::HashMap;

use bollard::{
    models::{Ipam, IpamConfig, NetworkCreateRequest},
    query_parameters::InspectNetworkOptions,
};
use tracing::info;

use super::{Docker, classify, identity::name_of, message_of, status_of};
use crate::runtime::{
    ContainerRuntime as _, ContainerSpec, ContainerStatus, LABEL_HOST, LABEL_MANAGED, LABEL_SPEC,
    NetworkSpec, Observed, RuntimeError,
};

impl Docker {
    /// Observes every container of `network` in one engine call (instead of one inspect per
    /// host): the spec's container name → what the engine says. Containers are matched to hosts
    /// by their labels; one under another name is renamed to the host's (see `identity.rs`).
    /// Hosts without an entry have no container.
    pub(super) async fn list_network(
        &self,
        network: &str,
        specs: &[ContainerSpec],
    ) -> Result<HashMap<String, Observed>, RuntimeError> {
        use bollard::models::ContainerSummaryStateEnum as State;
        let mut by_host: HashMap<String, Vec<_>> = HashMap::new();
        for container in self.labelled(network, None).await? {
            let host = container
                .labels
                .as_ref()
                .and_then(|l| l.get(LABEL_HOST))
                .cloned();
            if let Some(host) = host {
                by_host.entry(host).or_default().push(container);
            }
        }
        let mut observed = HashMap::new();
        for spec in specs {
            let mut found = by_host.remove(&spec.host).unwrap_or_default();
            if found.len() > 1 {
                let keep = self.keep_one(spec, found.clone()).await?;
                found.retain(|c| c.id == keep);
            }
            let Some(container) = found.pop() else {
                self.ids.set(&spec.host, None);
                continue;
            };
            let Some(id) = container.id.clone() else {
                continue;
            };
            self.ids.set(&spec.host, Some(id.clone()));
            if let Some(name) = name_of(&container)
                && name != spec.name
            {
                self.restore_name(spec, &id, &name).await;
            }
            let status = match container.state {
                Some(State::RUNNING) => ContainerStatus::Running,
                // Whether it is really frozen needs a closer look (a fast wake may have thawed it).
                Some(State::PAUSED) => {
                    observed.insert(spec.name.clone(), self.observe(spec).await?);
                    continue;
                }
                Some(State::RESTARTING | State::REMOVING) => ContainerStatus::Transitional,
                _ => ContainerStatus::Stopped,
            };
            let current = container
                .labels
                .as_ref()
                .and_then(|l| l.get(LABEL_SPEC))
                .is_some_and(|f| *f == spec.fingerprint());
            observed.insert(spec.name.clone(), Observed::Present { status, current });
        }
        Ok(observed)
    }

    /// Creates the network for the imaginary subnet, or reuses it if it exists with that subnet.
    pub(super) async fn ensure_docker_network(
        &self,
        net: &NetworkSpec,
    ) -> Result<(), RuntimeError> {
        match self
            .client
            .inspect_network(&net.name, None::<InspectNetworkOptions>)
            .await
        {
            Ok(existing) => {
                let subnets: Vec<String> = existing
                    .ipam
                    .and_then(|ipam| ipam.config)
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|c| c.subnet)
                    .collect();
                if !subnets.contains(&net.subnet.to_string()) {
                    return Err(RuntimeError::Engine {
                        action: "reuse network",
                        container: net.name.clone(),
                        message: format!(
                            "it exists with subnet(s) {subnets:?}, but the configuration says {}: \
                             remove it (`docker network rm {}`) or set [network] name to another \
                             network",
                            net.subnet, net.name
                        ),
                    });
                }
                let bridge = existing
                    .options
                    .as_ref()
                    .and_then(|o| o.get("com.docker.network.bridge.name"))
                    .cloned()
                    .unwrap_or_default();
                if bridge != net.bridge {
                    return Err(RuntimeError::Engine {
                        action: "reuse network",
                        container: net.name.clone(),
                        message: format!(
                            "its bridge is {bridge:?} but the configuration says {:?}: remove \
                             the network (`docker network rm {}`) or set [network] bridge = {bridge:?}",
                            net.bridge, net.name
                        ),
                    });
                }
                info!(network = %net.name, subnet = %net.subnet, "reusing Docker network");
                Ok(())
            }
            Err(err) if status_of(&err) == Some(404) => {
                let request = NetworkCreateRequest {
                    name: net.name.clone(),
                    driver: Some("bridge".into()),
                    ipam: Some(Ipam {
                        driver: Some("default".into()),
                        config: Some(vec![IpamConfig {
                            subnet: Some(net.subnet.to_string()),
                            gateway: Some(net.gateway.to_string()),
                            ..Default::default()
                        }]),
                        options: None,
                    }),
                    options: Some(HashMap::from([(
                        "com.docker.network.bridge.name".to_string(),
                        net.bridge.clone(),
                    )])),
                    labels: Some(HashMap::from([(
                        LABEL_MANAGED.to_string(),
                        "true".to_string(),
                    )])),
                    ..Default::default()
                };
                self.client
                    .create_network(request)
                    .await
                    .map_err(|e| RuntimeError::Engine {
                        action: "create network",
                        container: net.name.clone(),
                        message: format!(
                            "{}; if the subnet {} overlaps another network, choose a free one",
                            message_of(&e),
                            net.subnet
                        ),
                    })?;
                info!(network = %net.name, subnet = %net.subnet, bridge = %net.bridge,
                    "created Docker network");
                Ok(())
            }
            Err(err) => Err(classify(err, "inspect network", &net.name)),
        }
    }

    /// Removes a network imag created (labelled `imag.managed`); returns false, leaving it, for
    /// a network someone else made (`detach` must not remove what it did not install).
    pub(super) async fn remove_docker_network(&self, name: &str) -> Result<bool, RuntimeError> {
        match self
            .client
            .inspect_network(name, None::<InspectNetworkOptions>)
            .await
        {
            Ok(network) => {
                let managed = network
                    .labels
                    .as_ref()
                    .is_some_and(|l| l.get(LABEL_MANAGED).map(String::as_str) == Some("true"));
                if !managed {
                    return Ok(false);
                }
            }
            Err(err) if status_of(&err) == Some(404) => return Ok(true),
            Err(err) => return Err(classify(err, "inspect network", name)),
        }
        match self.client.remove_network(name).await.map(|()| true) {
            Ok(removed) => Ok(removed),
            Err(err) if status_of(&err) == Some(404) => Ok(true),
            Err(err) => Err(classify(err, "remove network", name)),
        }
    }
}
