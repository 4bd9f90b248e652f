//! Readiness by event, in one owner. A wake that waits for `tcp:PORT` takes a [`PortWatch`] for
//! the port: while any watch on a port lives, the port is in the datapath's `WAITING_PORTS` map
//! (several wakes may wait on one port: 8080 is common), and the tracepoint's LISTEN events for it
//! reach the watch. Dropping the watch — the wake finished, failed or was abandoned — takes the
//! port out again when it was the last one. Nobody else touches the map or the events.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use tokio::sync::broadcast;

use crate::datapath::WaitingPorts;

/// The ports wakes wait on, and the LISTEN events the datapath reports for them.
#[derive(Clone)]
pub struct ListenWatch {
    inner: Arc<Mutex<Waiting>>,
    events: broadcast::Sender<u16>,
}

struct Waiting {
    /// The datapath's table; `None` without a datapath (unit tests) or when the tracepoint is
    /// not attached (events never come; readiness polls).
    table: Option<WaitingPorts>,
    waiters: HashMap<u16, u32>,
}

impl ListenWatch {
    pub fn new(table: Option<WaitingPorts>) -> ListenWatch {
        ListenWatch {
            inner: Arc::new(Mutex::new(Waiting {
                table,
                waiters: HashMap::new(),
            })),
            events: broadcast::channel(64).0,
        }
    }

    /// Where the reader of the datapath's socket events publishes the ports that started
    /// listening.
    pub fn events(&self) -> broadcast::Sender<u16> {
        self.events.clone()
    }

    /// Starts waiting for a socket to listen on `port`, until the returned watch is dropped.
    pub fn watch(&self, port: u16) -> PortWatch {
        // Subscribe before the port is in the map: no event for it can be missed.
        let events = self.events.subscribe();
        let mut waiting = self.inner.lock().expect("not poisoned");
        let count = waiting.waiters.entry(port).or_default();
        *count += 1;
        let count = *count;
        if let Some(table) = waiting.table.as_mut() {
            table.insert(port, count);
        }
        PortWatch {
            port,
            owner: self.clone(),
            events,
        }
    }

    /// How many watches wait on `port`.
    pub fn waiters(&self, port: u16) -> u32 {
        let waiting = self.inner.lock().expect("not poisoned");
        waiting.waiters.get(&port).copied().unwrap_or(0)
    }

    fn release(&self, port: u16) {
        let mut waiting = self.inner.lock().expect("not poisoned");
        let Some(count) = waiting.waiters.get_mut(&port) else {
            return;
        };
        *count -= 1;
        if *count == 0 {
            waiting.waiters.remove(&port);
            if let Some(table) = waiting.table.as_mut() {
                table.remove(port);
            }
        }
    }
}

/// One wake's wait for a socket listening on `port`.
pub struct PortWatch {
    port: u16,
    owner: ListenWatch,
    events: broadcast::Receiver<u16>,
}

impl PortWatch {
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Returns when a socket starts listening on the port (at once if events were missed, so
    /// that the caller tries again rather than waiting for an event already gone; never if the
    /// event source is gone).
    pub async fn listening(&mut self) {
        loop {
            match self.events.recv().await {
                Ok(port) if port == self.port => return,
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(_)) => return,
                Err(broadcast::error::RecvError::Closed) => std::future::pending::<()>().await,
            }
        }
    }
}

impl Drop for PortWatch {
    fn drop(&mut self) {
        self.owner.release(self.port);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn watches_are_counted_per_port_and_released_on_drop() {
        let listen = ListenWatch::new(None);
        let a = listen.watch(8080);
        let b = listen.watch(8080);
        let c = listen.watch(53);
        assert_eq!(listen.waiters(8080), 2);
        drop(a);
        assert_eq!(listen.waiters(8080), 1, "the other wake still waits");
        drop(b);
        drop(c);
        assert_eq!(listen.waiters(8080), 0);
        assert_eq!(listen.waiters(53), 0);
    }

    #[tokio::test]
    async fn a_watch_hears_its_port_only() {
        let listen = ListenWatch::new(None);
        let mut watch = listen.watch(8080);
        let events = listen.events();
        events.send(9090).unwrap();
        events.send(8080).unwrap();
        tokio::time::timeout(Duration::from_secs(1), watch.listening())
            .await
            .expect("the event for 8080 arrives");
        let mut other = listen.watch(7070);
        events.send(8080).unwrap();
        assert!(
            tokio::time::timeout(Duration::from_millis(50), other.listening())
                .await
                .is_err(),
            "no event for 7070"
        );
    }
}
