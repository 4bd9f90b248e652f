//! imag's test kit: what the privileged integration tests (`imag-agent/tests/`), the demo and the
//! benchmarks (`xtask`) share, so that all three build topologies and run the agent the same way.
//!
//! - [`netns`]: client network namespaces joined to the host by a veth pair.
//! - [`clients`]: real clients (HTTP, UDP, ICMP) and the kernel's TCP counters.
//! - [`agent`]: the agent as a child process, observed through `status --json` and its log.
//! - [`metrics`]: one scrape of `/metrics`, looked up by name and labels.
//! - [`docker`]: what the engine says about containers and networks.
//! - [`lease`] and [`testnet`]: a generated, collision-free network per test, removed on drop.
//! - [`cluster`]: several nodes (each with its own Docker engine and BGP daemon), a router, etcd
//!   and a client, for the scale-out tests; removed on drop.
//!
//! `imag-agent/tests/TESTING.md` tells how to add a test.

pub mod agent;
pub mod clients;
pub mod cluster;
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
/// In a child between fork and exec (`pre_exec`): marks every descriptor above stderr
/// close-on-exec (`close_range` with `CLOSE_RANGE_CLOEXEC`, Linux 5.11), so that a process a test
/// starts never inherits, and holds, the test's descriptors (`/tmp/imag-e2e.lock` above all: a
/// daemon holding it would keep every later test waiting). Async-signal-safe: one system call.
pub fn close_inherited_fds() -> std::io::Result<()> {
    const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
    // SAFETY: close_range only changes this process's descriptor flags.
    let done = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3 as libc::c_uint,
            libc::c_uint::MAX,
            CLOSE_RANGE_CLOEXEC,
        )
    };
    if done == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

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

/// The lock every privileged test run holds (`flock /tmp/imag-e2e.lock cargo test …`).
pub const E2E_LOCK: &str = "/tmp/imag-e2e.lock";

/// Holds [`E2E_LOCK`] for as long as the returned guard lives, for a test that disturbs the
/// whole machine (restarting the Docker engine): taken here unless an ancestor of this process
/// (`flock` around `cargo test`) already holds it, then `None` (taking it again would wait
/// forever).
pub fn serialised() -> Option<std::fs::File> {
    use std::os::{fd::AsRawFd as _, unix::fs::MetadataExt as _};
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(E2E_LOCK)
        .unwrap_or_else(|e| panic!("opening {E2E_LOCK}: {e}"));
    // SAFETY: flock on a descriptor this function owns.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return Some(file);
    }
    let inode = file.metadata().map(|m| m.ino()).unwrap_or_default();
    let holders: Vec<u32> = std::fs::read_to_string("/proc/locks")
        .unwrap_or_default()
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let at = fields.iter().position(|f| *f == "FLOCK")?;
            let pid = fields.get(at + 3)?.parse().ok()?;
            let ino: u64 = fields.get(at + 4)?.rsplit(':').next()?.parse().ok()?;
            (ino == inode).then_some(pid)
        })
        .collect();
    let mut pid = std::process::id();
    while pid > 1 {
        if holders.contains(&pid) {
            return None;
        }
        pid = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| {
                let after = s.rsplit_once(')')?.1.split_whitespace().nth(1)?.to_string();
                after.parse().ok()
            })
            .unwrap_or(1);
    }
    // SAFETY: as above; blocks until the holder lets go.
    let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
    assert_eq!(locked, 0, "locking {E2E_LOCK}");
    Some(file)
}
