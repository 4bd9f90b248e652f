//! imag's test kit: what the privileged integration tests (`imag-agent/tests/`), the demo and the
//! benchmarks (`xtask`) share, so that all three build topologies and run the agent the same way.
//!
//! - [`netns`]: client network namespaces joined to the host by a veth pair.
//! - [`clients`]: real clients (HTTP, UDP, ICMP) and the kernel's TCP counters.
//! - [`agent`]: the agent as a child process, observed through `status --json` and its log.
//! - [`metrics`]: one scrape of `/metrics`, looked up by name and labels.
//! - [`docker`]: what the engine says about containers and networks.
//! - [`lease`] and [`testnet`]: a generated, collision-free network per test, removed on drop.
//!
//! `imag-agent/tests/TESTING.md` tells how to add a test.

pub mod agent;
pub mod clients;
pub mod docker;
pub mod lease;
pub mod metrics;
pub mod netns;
pub mod testnet;

pub use agent::{AgentError, AgentProcess, Launch};
pub use metrics::Metrics;
pub use netns::ClientNs;
pub use testnet::{IMAGE, TestNet, require_environment};

/// The `imag-agent` binary cargo built for the calling integration test (only cargo knows it,
/// and only while compiling a test of the `imag-agent` package).
#[macro_export]
macro_rules! agent_binary {
    () => {
        ::std::path::Path::new(env!("CARGO_BIN_EXE_imag-agent"))
    };
}

/// Polls `condition` every 50 ms until it holds; panics with `what` after `timeout`.
pub fn wait_until(what: &str, timeout: std::time::Duration, mut condition: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + timeout;
    while !condition() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting until {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
