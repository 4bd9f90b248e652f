//! The file as written: what serde reads in the first pass. Unknown keys are refused here
//! (`deny_unknown_fields`), and every value a later check may complain about keeps its byte span
//! (`toml::Spanned`) so that the problem can be placed. Nothing outside `config` sees these
//! structs; the sections (`network.rs`, `host.rs`, `hold.rs`, `wake.rs`, `agent.rs`) turn them
//! into the validated ones.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub network: Spanned<Network>,
    #[serde(default)]
    pub host: Vec<Spanned<Host>>,
    pub hold: Option<Hold>,
    pub wake: Option<Wake>,
    pub agent: Option<Agent>,
    pub dns: Option<super::dns::DnsSection>,
    pub limits: Option<Limits>,
    pub cluster: Option<Spanned<Cluster>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cluster {
    pub name: Option<Spanned<String>>,
    pub node: Option<Spanned<String>>,
    pub store: Spanned<Vec<Spanned<String>>>,
    pub address: Option<Spanned<String>>,
    pub table: Option<Spanned<i64>>,
    pub lease: Option<Spanned<String>>,
    pub fence_margin: Option<Spanned<String>>,
    pub metric: Option<Spanned<ClusterMetric>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterMetric {
    pub serving: Option<Spanned<u32>>,
    pub owner: Option<Spanned<u32>>,
    pub fallback: Option<Spanned<u32>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    pub max_warm: Option<Spanned<usize>>,
    pub memory_budget: Option<Spanned<String>>,
    pub default_host_memory: Option<Spanned<String>>,
    pub evict_busy: Option<bool>,
    pub wakes_per_source: Option<Spanned<String>>,
    pub wakes_per_second: Option<Spanned<usize>>,
    pub max_concurrent_wakes: Option<Spanned<usize>>,
    pub max_engine_calls: Option<Spanned<usize>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Agent {
    pub metrics: Option<Spanned<String>>,
    pub engine: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(
    clippy::struct_field_names,
    reason = "the fields are the TOML keys, `max_` and all"
)]
pub struct Hold {
    pub max_packets_per_host: Option<Spanned<usize>>,
    pub max_bytes_per_host: Option<Spanned<usize>>,
    pub max_packets: Option<Spanned<usize>>,
    pub max_bytes: Option<Spanned<usize>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Wake {
    pub backoff: Option<Spanned<String>>,
    pub backoff_max: Option<Spanned<String>>,
    pub ready_events: Option<bool>,
    pub fast_thaw: Option<bool>,
    pub prewake: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Network {
    pub subnet: Spanned<String>,
    pub name: Option<Spanned<String>>,
    pub bridge: Option<Spanned<String>>,
    pub gateway: Option<Spanned<String>>,
    pub proxy_arp: Option<bool>,
    pub answer_ping: Option<bool>,
    #[serde(default)]
    pub idle_ignore: Vec<Spanned<String>>,
    pub allow_from: Option<Vec<Spanned<String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Host {
    pub name: Spanned<String>,
    pub address: Spanned<String>,
    pub image: Spanned<String>,
    pub command: Option<Vec<String>>,
    #[serde(default)]
    pub env: BTreeMap<Spanned<String>, String>,
    #[serde(default)]
    pub ports: Vec<Spanned<u16>>,
    pub ready: Option<Spanned<String>>,
    pub wake_timeout: Option<Spanned<String>>,
    pub idle_timeout: Option<Spanned<String>>,
    pub sleep: Option<Spanned<String>>,
    pub stop_after: Option<Spanned<String>>,
    pub swap_after: Option<Spanned<String>>,
    pub swap_prefetch: Option<bool>,
    pub min_warm: Option<Spanned<String>>,
    pub priority: Option<Spanned<i64>>,
    pub idle_ignore: Option<Vec<Spanned<String>>>,
    pub allow_from: Option<Vec<Spanned<String>>>,
    pub ready_poll: Option<Spanned<String>>,
    pub proxy_arp: Option<bool>,
    pub answer_ping: Option<bool>,
    pub depends_on: Option<Vec<Spanned<String>>>,
    pub wakes_with: Option<Vec<Spanned<String>>>,
    pub extra_hosts: Option<Vec<Spanned<String>>>,
    /// The nodes this host may run on (`[cluster]`); absent: every node.
    pub nodes: Option<Vec<Spanned<String>>>,
    // Container options (`container.rs`).
    #[serde(default)]
    pub volumes: Vec<Spanned<String>>,
    #[serde(default)]
    pub mounts: Vec<Spanned<Mount>>,
    pub user: Option<Spanned<String>>,
    pub working_dir: Option<Spanned<String>>,
    pub entrypoint: Option<Spanned<Vec<String>>>,
    pub memory: Option<Spanned<String>>,
    pub cpus: Option<Spanned<f64>>,
    pub pids_limit: Option<Spanned<i64>>,
    #[serde(default)]
    pub cap_add: Vec<Spanned<String>>,
    #[serde(default)]
    pub cap_drop: Vec<Spanned<String>>,
    #[serde(default)]
    pub tmpfs: Vec<Spanned<String>>,
    #[serde(default)]
    pub labels: BTreeMap<Spanned<String>, String>,
    pub healthcheck: Option<Spanned<Healthcheck>>,
}

/// The long form of a mount (`mounts = [{ type = "volume", source = "data", target = "/d" }]`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mount {
    #[serde(rename = "type")]
    pub kind: Spanned<String>,
    pub source: Spanned<String>,
    pub target: Spanned<String>,
    #[serde(default)]
    pub read_only: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Healthcheck {
    pub test: Spanned<StringOrList>,
    pub interval: Option<Spanned<String>>,
    pub timeout: Option<Spanned<String>>,
    pub start_period: Option<Spanned<String>>,
    pub start_interval: Option<Spanned<String>>,
    pub retries: Option<Spanned<u32>>,
}

/// A command written as one string (run by the shell) or as a list.
#[derive(Deserialize)]
#[serde(untagged)]
pub enum StringOrList {
    String(String),
    List(Vec<String>),
}
