//! The engine's event stream for the containers of one network: exits, pauses, unpauses,
//! starts, renames and removals, by anyone (an operator's `docker pause` as much as imag's
//! own). When the stream breaks (dockerd restarting), it is resubscribed once the engine answers
//! again, from the time of the last event seen (`since`, so that events between the two
//! subscriptions are not lost while the engine lived), and [`RuntimeEvent::Resumed`] tells the
//! consumer that events may still have been lost (an engine keeps its events in memory only:
//! those before a restart are gone) and that everything must be observed again.

use std::{collections::HashMap, pin::Pin, time::Duration};

use bollard::{
    errors::Error as BollardError, models::EventMessage, query_parameters::EventsOptions,
};
use futures::{Stream, StreamExt as _, stream::BoxStream};
use tracing::{info, warn};

use super::{Docker, identity::Identities};
use crate::runtime::{LABEL_HOST, LABEL_MANAGED, LABEL_NETWORK, RuntimeEvent};

/// How long to wait between attempts to reach the engine again after its stream ended.
const EVENTS_RECONNECT: Duration = Duration::from_secs(1);

type Events = Pin<Box<dyn Stream<Item = Result<EventMessage, BollardError>> + Send>>;

/// The stream's state between two items.
struct Follow {
    client: bollard::Docker,
    ids: Identities,
    network: String,
    /// The last event's time as the engine's `since` takes it (`seconds.nanoseconds`).
    since: Option<String>,
    events: Option<Events>,
    /// The stream broke: say [`RuntimeEvent::Resumed`] once it is back.
    broke: bool,
}

impl Follow {
    fn subscribe(&self) -> Events {
        let options = EventsOptions {
            since: self.since.clone(),
            filters: Some(HashMap::from([
                ("type".to_string(), vec!["container".to_string()]),
                (
                    "event".to_string(),
                    ["die", "pause", "unpause", "start", "rename", "destroy"]
                        .map(String::from)
                        .to_vec(),
                ),
                (
                    "label".to_string(),
                    vec![
                        format!("{LABEL_MANAGED}=true"),
                        format!("{LABEL_NETWORK}={}", self.network),
                    ],
                ),
            ])),
            ..Default::default()
        };
        Box::pin(self.client.events(Some(options)))
    }

    /// The next event worth reporting, reconnecting as long as it takes.
    async fn next(&mut self) -> RuntimeEvent {
        loop {
            if self.events.is_none() {
                if self.broke {
                    // Subscribing is lazy: make sure the engine answers before saying "resumed".
                    while self.client.ping().await.is_err() {
                        tokio::time::sleep(EVENTS_RECONNECT).await;
                    }
                }
                self.events = Some(self.subscribe());
                if std::mem::take(&mut self.broke) {
                    info!(network = %self.network, since = ?self.since,
                        "the engine's event stream is back; observing every host again");
                    return RuntimeEvent::Resumed;
                }
            }
            let stream = self.events.as_mut().expect("subscribed above");
            match stream.next().await {
                Some(Ok(event)) => {
                    if let Some(nanos) = event.time_nano {
                        self.since = Some(format!(
                            "{}.{:09}",
                            nanos.div_euclid(1_000_000_000),
                            nanos.rem_euclid(1_000_000_000)
                        ));
                    }
                    if let Some(event) = self.translate(event) {
                        return event;
                    }
                }
                failed => {
                    if let Some(Err(err)) = failed {
                        warn!(error = %err, "the engine's event stream failed; resubscribing");
                    } else {
                        warn!("the engine's event stream ended; resubscribing");
                    }
                    self.events = None;
                    self.broke = true;
                    tokio::time::sleep(EVENTS_RECONNECT).await;
                }
            }
        }
    }

    fn translate(&self, event: EventMessage) -> Option<RuntimeEvent> {
        let actor = event.actor?;
        let id = actor.id;
        let attributes = actor.attributes.unwrap_or_default();
        let host = attributes.get(LABEL_HOST)?.clone();
        Some(match event.action.as_deref()? {
            "die" => RuntimeEvent::Exited { host },
            "pause" => RuntimeEvent::Paused { host },
            "unpause" | "start" => RuntimeEvent::Unpaused { host },
            "rename" => RuntimeEvent::Renamed {
                host,
                name: attributes.get("name").cloned().unwrap_or_default(),
            },
            "destroy" => {
                // If it was the one known as the host's, ask the engine again next time.
                self.ids.gone(&host, id.as_deref());
                RuntimeEvent::Destroyed { host }
            }
            _ => return None,
        })
    }
}

impl Docker {
    /// The events of this network's containers (see the module's text).
    pub(super) fn container_events(&self, network: &str) -> BoxStream<'static, RuntimeEvent> {
        let follow = Follow {
            client: self.client.clone(),
            ids: self.ids.clone(),
            network: network.to_string(),
            since: None,
            events: None,
            broke: false,
        };
        futures::stream::unfold(follow, |mut follow| async move {
            let event = follow.next().await;
            Some((event, follow))
        })
        .boxed()
    }
}
