//! The Docker side of what is not one container: the network that holds the imaginary hosts,
//! observing all of its containers in one call, and the engine's event stream. Its neighbour
//! `mod.rs` drives single containers (wake, sleep, inspect).

use std::{collections::HashMap, pin::Pin, time::Duration};

use bollard::{
    errors::Error as BollardError,
    models::{EventMessage, Ipam, IpamConfig, NetworkCreateRequest},
    query_parameters::{EventsOptions, InspectNetworkOptions},
};
use futures::{Stream, StreamExt as _, stream::BoxStream};
use tracing::{info, warn};

use super::{Docker, classify, message_of, status_of};
use crate::runtime::{
    ContainerRuntime as _, ContainerSpec, ContainerStatus, LABEL_HOST, LABEL_MANAGED,
    LABEL_NETWORK, LABEL_SPEC, NetworkSpec, Observed, RuntimeError, RuntimeEvent,
};

/// How long to wait before resubscribing when the engine's event stream ends or fails.
const EVENTS_RECONNECT: Duration = Duration::from_secs(1);

impl Docker {
    /// Observes every container of `network` in one engine call (instead of one inspect per
    /// host): container name → what the engine says. Hosts without an entry have no container.
    pub(super) async fn list_network(
        &self,
        network: &str,
        specs: &[ContainerSpec],
    ) -> Result<HashMap<String, Observed>, RuntimeError> {
        use bollard::{
            models::ContainerSummaryStateEnum as State, query_parameters::ListContainersOptions,
        };
        let options = ListContainersOptions {
            all: true,
            filters: Some(HashMap::from([(
                "label".to_string(),
                vec![format!("{LABEL_NETWORK}={network}")],
            )])),
            ..Default::default()
        };
        let listed = self
            .client
            .list_containers(Some(options))
            .await
            .map_err(|e| classify(e, "list containers of network", network))?;
        let fingerprints: HashMap<&str, String> = specs
            .iter()
            .map(|s| (s.name.as_str(), s.fingerprint()))
            .collect();
        let mut observed = HashMap::new();
        for container in listed {
            let Some(name) = container
                .names
                .as_ref()
                .and_then(|n| n.first())
                .map(|n| n.trim_start_matches('/').to_string())
            else {
                continue;
            };
            let Some(fingerprint) = fingerprints.get(name.as_str()) else {
                continue;
            };
            let status = match container.state {
                Some(State::RUNNING) => ContainerStatus::Running,
                // Whether it is really frozen needs a closer look (a fast wake may have thawed it).
                Some(State::PAUSED) => {
                    let spec = specs.iter().find(|s| s.name == name).expect("found above");
                    observed.insert(name, self.observe(spec).await?);
                    continue;
                }
                Some(State::RESTARTING | State::REMOVING) => ContainerStatus::Transitional,
                _ => ContainerStatus::Stopped,
            };
            let current = container
                .labels
                .as_ref()
                .and_then(|l| l.get(LABEL_SPEC))
                .is_some_and(|f| f == fingerprint);
            observed.insert(name, Observed::Present { status, current });
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

    /// "Container died" events of this network's containers, resubscribing after
    /// [`EVENTS_RECONNECT`] whenever the engine's stream ends or fails.
    pub(super) fn die_events(&self, network: &str) -> BoxStream<'static, RuntimeEvent> {
        type Events = Pin<Box<dyn Stream<Item = Result<EventMessage, BollardError>> + Send>>;
        let subscribe = |client: &bollard::Docker, network: &str| -> Events {
            let options = EventsOptions {
                filters: Some(HashMap::from([
                    ("type".to_string(), vec!["container".to_string()]),
                    ("event".to_string(), vec!["die".to_string()]),
                    (
                        "label".to_string(),
                        vec![format!("{LABEL_NETWORK}={network}")],
                    ),
                ])),
                ..Default::default()
            };
            Box::pin(client.events(Some(options)))
        };
        let state = (self.client.clone(), network.to_string(), None::<Events>);
        futures::stream::unfold(state, move |(client, network, mut events)| async move {
            loop {
                let stream = events.get_or_insert_with(|| subscribe(&client, &network));
                match stream.next().await {
                    Some(Ok(event)) => {
                        let host = event
                            .actor
                            .and_then(|a| a.attributes)
                            .and_then(|a| a.get(LABEL_HOST).cloned());
                        if let Some(host) = host {
                            return Some((RuntimeEvent::Exited { host }, (client, network, events)));
                        }
                    }
                    Some(Err(err)) => {
                        warn!(error = %err, "the engine's event stream failed; reconnecting in 1 s");
                        events = None;
                        tokio::time::sleep(EVENTS_RECONNECT).await;
                    }
                    None => {
                        events = None;
                        tokio::time::sleep(EVENTS_RECONNECT).await;
                    }
                }
            }
        })
        .boxed()
    }
}
