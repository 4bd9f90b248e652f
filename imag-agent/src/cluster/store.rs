//! The store side of the cluster (etcd v3 through `etcd-client`): the keys imag keeps under
//! `/imag/<network>/` — `nodes/<node>` = `{"address": …}` under the node's lease, and
//! `hosts/<host>` = `<node>` while that node serves the host — and the transactions that make a
//! host's key exclusive. Nothing here decides; `task.rs` and `mod.rs` call these.

use std::{net::Ipv4Addr, time::Duration};

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, PutOptions, Txn, TxnOp,
    TxnOpResponse, WatchOptions, WatchStream,
};

use super::decide::World;

/// How long one store call may take before the store counts as unreachable.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("etcd did not answer within {0:?}")]
    Timeout(Duration),
    #[error("etcd: {0}")]
    Etcd(#[from] etcd_client::Error),
}

/// The value of a node's key.
#[derive(serde::Serialize, serde::Deserialize)]
struct NodeValue {
    address: Ipv4Addr,
}

/// What a claim transaction found.
pub enum Taken {
    /// The key is this node's now (or already was).
    Ours,
    /// Another node's; `revision` is the key's modification revision (watch after it).
    Theirs { node: String, revision: i64 },
}

/// One network's keys in the store, seen from one node.
#[derive(Clone)]
pub struct Store {
    client: Client,
    root: String,
    node: String,
}

async fn bounded<T>(
    call: impl Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, StoreError> {
    tokio::time::timeout(CALL_TIMEOUT, call)
        .await
        .map_err(|_| StoreError::Timeout(CALL_TIMEOUT))?
        .map_err(StoreError::from)
}

impl Store {
    /// A client for `endpoints` (it connects lazily: the first call says whether etcd answers).
    pub async fn connect(
        endpoints: &[String],
        network: &str,
        node: &str,
    ) -> Result<Store, StoreError> {
        let options = ConnectOptions::new()
            .with_connect_timeout(CALL_TIMEOUT)
            .with_keep_alive(Duration::from_secs(2), CALL_TIMEOUT);
        let client = bounded(Client::connect(endpoints, Some(options))).await?;
        Ok(Store {
            client,
            root: format!("/imag/{network}/"),
            node: node.to_string(),
        })
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    fn nodes_prefix(&self) -> String {
        format!("{}nodes/", self.root)
    }

    fn host_key(&self, host: &str) -> String {
        format!("{}hosts/{host}", self.root)
    }

    /// A new lease of `ttl`.
    pub async fn grant(&self, ttl: Duration) -> Result<i64, StoreError> {
        let seconds = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX).max(1);
        let mut client = self.client.clone();
        Ok(bounded(client.lease_grant(seconds, None)).await?.id())
    }

    /// Writes this node's key under `lease`.
    pub async fn register(&self, lease: i64, address: Ipv4Addr) -> Result<(), StoreError> {
        let value = serde_json::to_string(&NodeValue { address }).expect("serializable");
        let key = format!("{}{}", self.nodes_prefix(), self.node);
        let mut client = self.client.clone();
        bounded(client.put(key, value, Some(PutOptions::new().with_lease(lease)))).await?;
        Ok(())
    }

    /// Revokes `lease`: this node's key and every host key it holds go at once (clean exit).
    pub async fn revoke(&self, lease: i64) -> Result<(), StoreError> {
        let mut client = self.client.clone();
        bounded(client.lease_revoke(lease)).await?;
        Ok(())
    }

    /// The keep-alive stream of `lease` (the first request is sent already).
    pub async fn keep_alive(
        &self,
        lease: i64,
    ) -> Result<(etcd_client::LeaseKeeper, etcd_client::LeaseKeepAliveStream), StoreError> {
        let mut client = self.client.clone();
        bounded(client.lease_keep_alive(lease)).await
    }

    /// Every node and host key now, and the revision they were read at.
    pub async fn snapshot(&self) -> Result<(World, i64), StoreError> {
        let mut client = self.client.clone();
        let response =
            bounded(client.get(self.root.clone(), Some(GetOptions::new().with_prefix()))).await?;
        let revision = response
            .header()
            .map_or(0, etcd_client::ResponseHeader::revision);
        let mut world = World::default();
        for kv in response.kvs() {
            self.apply(&mut world, kv.key(), Some(kv.value()));
        }
        Ok((world, revision))
    }

    /// Watches every key of the network from `revision` on.
    pub async fn watch(&self, revision: i64) -> Result<WatchStream, StoreError> {
        let mut client = self.client.clone();
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(revision);
        bounded(client.watch(self.root.clone(), Some(options))).await
    }

    /// Applies one key's new value (`None`: deleted) to `world`; keys that are not imag's are
    /// ignored.
    pub fn apply(&self, world: &mut World, key: &[u8], value: Option<&[u8]>) {
        let Some(key) = std::str::from_utf8(key)
            .ok()
            .and_then(|k| k.strip_prefix(self.root.as_str()))
        else {
            return;
        };
        if let Some(node) = key.strip_prefix("nodes/") {
            match value.map(serde_json::from_slice::<NodeValue>) {
                Some(Ok(v)) => {
                    world.nodes.insert(node.to_string(), v.address);
                }
                Some(Err(err)) => {
                    tracing::warn!(node, error = %err, "a node key holds no {{\"address\"}}: ignored");
                    world.nodes.remove(node);
                }
                None => {
                    world.nodes.remove(node);
                }
            }
        } else if let Some(host) = key.strip_prefix("hosts/") {
            match value.and_then(|v| std::str::from_utf8(v).ok()) {
                Some(node) => world.holders.insert(host.to_string(), node.to_string()),
                None => world.holders.remove(host),
            };
        }
    }

    /// Applies a watch event.
    pub fn apply_event(&self, world: &mut World, event: &etcd_client::Event) {
        if let Some(kv) = event.kv() {
            let value = (event.event_type() == EventType::Put).then(|| kv.value());
            self.apply(world, kv.key(), value);
        }
    }

    /// Takes `host`'s key for this node under `lease` if nobody holds it (create revision 0).
    pub async fn take(&self, host: &str, lease: i64) -> Result<Taken, StoreError> {
        let key = self.host_key(host);
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                key.clone(),
                self.node.clone(),
                Some(PutOptions::new().with_lease(lease)),
            )])
            .or_else([TxnOp::get(key.clone(), None)]);
        let mut client = self.client.clone();
        let response = bounded(client.txn(txn)).await?;
        if response.succeeded() {
            return Ok(Taken::Ours);
        }
        for op in response.op_responses() {
            if let TxnOpResponse::Get(get) = op
                && let Some(kv) = get.kvs().first()
            {
                let node = String::from_utf8_lossy(kv.value()).into_owned();
                if node == self.node && kv.lease() != lease {
                    // Ours from an earlier agent's lease (a restart with warm hosts): move it to
                    // this lease before that one runs out, unless it changed meanwhile.
                    let rebind = Txn::new()
                        .when([Compare::mod_revision(
                            key.clone(),
                            CompareOp::Equal,
                            kv.mod_revision(),
                        )])
                        .and_then([TxnOp::put(
                            key.clone(),
                            self.node.clone(),
                            Some(PutOptions::new().with_lease(lease)),
                        )]);
                    if !bounded(client.txn(rebind)).await?.succeeded() {
                        return Ok(Taken::Theirs {
                            node: String::new(),
                            revision: kv.mod_revision(),
                        });
                    }
                }
                if node == self.node {
                    return Ok(Taken::Ours);
                }
                return Ok(Taken::Theirs {
                    node,
                    revision: kv.mod_revision(),
                });
            }
        }
        // Deleted between the compare and the get: nobody holds it; the caller may retry.
        Ok(Taken::Theirs {
            node: String::new(),
            revision: response
                .header()
                .map_or(0, etcd_client::ResponseHeader::revision),
        })
    }

    /// Waits (at most `wait`) for `host`'s key to be deleted after `revision`; true if it was.
    pub async fn deleted_after(&self, host: &str, revision: i64, wait: Duration) -> bool {
        let key = self.host_key(host);
        let watched = async {
            let mut client = self.client.clone();
            let options = WatchOptions::new().with_start_revision(revision + 1);
            let mut stream = client.watch(key, Some(options)).await.ok()?;
            while let Ok(Some(response)) = stream.message().await {
                if response
                    .events()
                    .iter()
                    .any(|e| e.event_type() == EventType::Delete)
                {
                    return Some(());
                }
            }
            None
        };
        matches!(tokio::time::timeout(wait, watched).await, Ok(Some(())))
    }

    /// Deletes `host`'s key if this node holds it.
    pub async fn give_back(&self, host: &str) -> Result<bool, StoreError> {
        let key = self.host_key(host);
        let txn = Txn::new()
            .when([Compare::value(
                key.clone(),
                CompareOp::Equal,
                self.node.clone(),
            )])
            .and_then([TxnOp::delete(key, None)]);
        let mut client = self.client.clone();
        Ok(bounded(client.txn(txn)).await?.succeeded())
    }
}
