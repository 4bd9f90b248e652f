//! Shared support for the privileged integration tests: a per-test topology (client namespace,
//! Docker network, subnet) and the real agent as a child process, all cleaned up on drop, also
//! when a test fails.
//!
//! Every test names a distinct `slot` (1..=250): its resources are named and numbered after it
//! (`imagt<slot>` network and bridge, 10.200.<slot>.0/24 imaginary subnet, 10.201.<slot>.0/24
//! client link), so that tests never collide with each other or with the demo (10.77.0.0/24).
#![allow(dead_code)]

#[path = "../../../xtask/src/netkit.rs"]
pub mod netkit;

use std::{
    io::{BufRead, BufReader},
    net::{Ipv4Addr, SocketAddr},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

pub use netkit::ClientNs;

pub const IMAGE: &str = "imag-example/hello";

/// Fails the test with the fix if this is not root or the example image is missing.
pub fn require_environment() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "the integration tests need root (eBPF, namespaces, Docker): run `cargo xtask test` as root"
    );
    let image = Command::new("docker")
        .args(["image", "inspect", IMAGE])
        .output();
    assert!(
        image.is_ok_and(|o| o.status.success()),
        "the example image {IMAGE} is missing (or Docker is unreachable): `cargo xtask test` builds \
         it; or run `cargo xtask image`"
    );
}

/// The names and addresses a test uses.
#[derive(Clone, Debug)]
pub struct Slot {
    pub n: u8,
}

impl Slot {
    pub fn new(n: u8) -> Slot {
        assert!((1..=250).contains(&n));
        Slot { n }
    }
    pub fn network(&self) -> String {
        format!("imagt{}", self.n)
    }
    pub fn subnet(&self) -> String {
        format!("10.200.{}.0/24", self.n)
    }
    /// The address of imaginary host number `i` (i ≥ 2; .1 is the gateway).
    pub fn host_addr(&self, i: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 200, self.n, i)
    }
    pub fn host_if(&self) -> String {
        format!("imagt{}h", self.n)
    }
    pub fn host_side_addr(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 201, self.n, 1)
    }
    /// Where this slot's agent serves metrics.
    pub fn metrics_addr(&self) -> String {
        format!("127.0.0.1:{}", 19000 + u16::from(self.n))
    }

    pub fn container(&self, host: &str) -> String {
        format!("{}-{host}", self.network())
    }

    /// A client namespace linked to the host by `host_if()`, routing the imaginary subnet there.
    pub fn client(&self) -> ClientNs {
        ClientNs::create(
            &format!("imagt{}c", self.n),
            &self.host_if(),
            &format!("10.201.{}.1/24", self.n),
            &format!("10.201.{}.2/24", self.n),
            &[&self.subnet()],
        )
        .expect("creating the client namespace")
    }

    /// The `[network]` section for this slot.
    pub fn network_toml(&self) -> String {
        format!(
            "[network]\nsubnet = \"{}\"\nname = \"{}\"\nbridge = \"{}\"\n",
            self.subnet(),
            self.network(),
            self.network()
        )
    }

    /// A `[[host]]` running the example HTTP service on 8080 with extra arguments.
    pub fn http_host(&self, name: &str, i: u8, extra_args: &[&str]) -> String {
        let mut command = vec!["/hello", "--port", "8080"];
        command.extend_from_slice(extra_args);
        let command: Vec<String> = command.iter().map(|a| format!("{a:?}")).collect();
        format!(
            "\n[[host]]\nname = \"{name}\"\naddress = \"{}\"\nimage = \"{IMAGE}\"\ncommand = [{}]\nports = [8080]\n",
            self.host_addr(i),
            command.join(", ")
        )
    }

    /// Removes whatever an earlier, interrupted run of this slot left behind.
    pub fn clean_docker(&self) {
        let ids = Command::new("docker")
            .args([
                "ps",
                "-aq",
                "--filter",
                &format!("label=imag.network={}", self.network()),
            ])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
            .unwrap_or_default();
        for id in ids.split_whitespace() {
            let _ = Command::new("docker").args(["rm", "-f", id]).output();
        }
        let _ = Command::new("docker")
            .args(["network", "rm", &self.network()])
            .output();
    }
}

/// The agent binary built for these tests.
pub fn agent_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_imag-agent"))
}

/// A running `imag-agent attach`, its log collected; stopped with SIGTERM on drop, after which
/// the slot's containers and network are removed.
pub struct Agent {
    child: Option<Child>,
    pub log: Arc<Mutex<Vec<String>>>,
    slot: Slot,
    pub config_path: PathBuf,
    /// Whether dropping this agent removes the slot's containers, network and pins.
    clean_up: bool,
}

impl Agent {
    /// Writes `config`, starts the agent on `interfaces` (from a clean slate: no containers,
    /// network or pins of the slot), and waits until it is attached.
    pub fn start(slot: &Slot, config: &str, interfaces: &[&str]) -> Agent {
        slot.clean_docker();
        Agent::start_with(slot, config, interfaces, &[])
    }

    /// Like [`Agent::start`] without cleaning up first (to adopt what an earlier agent left),
    /// with extra command-line arguments.
    pub fn start_with(slot: &Slot, config: &str, interfaces: &[&str], extra: &[&str]) -> Agent {
        let config_path = std::env::temp_dir().join(format!("imag-test-{}.toml", slot.n));
        std::fs::write(&config_path, config).expect("writing the test config");
        let mut child = Command::new(agent_binary())
            .arg("attach")
            .args(interfaces)
            .arg("--config")
            .arg(&config_path)
            .arg("--metrics")
            .arg(slot.metrics_addr())
            .args(extra)
            .env("RUST_LOG", "imag_agent=debug")
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting imag-agent");
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("piped");
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[agent] {line}");
                sink.lock().unwrap().push(line);
            }
        });
        let mut agent = Agent {
            child: Some(child),
            log,
            slot: slot.clone(),
            config_path,
            clean_up: true,
        };
        agent.wait_for_log("imag is attached", Duration::from_secs(30));
        agent
    }

    /// Waits until a log line contains `needle`; panics with the log if it never does.
    pub fn wait_for_log(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self.log.lock().unwrap().iter().find(|l| l.contains(needle)) {
                return line.clone();
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "imag-agent exited ({status}) before logging {needle:?}:\n{}",
                    self.log_text()
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "imag-agent did not log {needle:?} within {timeout:?}:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Log lines containing `needle`.
    pub fn lines_with(&self, needle: &str) -> Vec<String> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .cloned()
            .collect()
    }

    /// Sends SIGTERM and waits for the agent to exit; returns its exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("agent still running");
        // SAFETY: kill with our own child's pid.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().expect("waiting for imag-agent") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!(
                    "imag-agent did not exit within 30 s of SIGTERM:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the agent with SIGKILL: nothing of its own clean-up runs, and dropping this handle
    /// leaves everything in place (for a restarted agent to adopt).
    pub fn kill9(mut self) {
        let mut child = self.child.take().expect("agent still running");
        let _ = child.kill();
        let _ = child.wait();
        self.clean_up = false;
    }

    /// Runs `imag-agent detach` on this agent's configuration.
    pub fn detach_command(&self) -> std::process::Output {
        Command::new(agent_binary())
            .args(["detach", "--config"])
            .arg(&self.config_path)
            .output()
            .expect("running imag-agent detach")
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.stop();
        }
        if !self.clean_up {
            return;
        }
        if std::path::Path::new(&format!("/sys/fs/bpf/imag/{}", self.slot.network())).exists() {
            let _ = self.detach_command();
        }
        self.slot.clean_docker();
        let _ = std::fs::remove_file(&self.config_path);
    }
}

/// Polls `condition` every 50 ms until it holds; panics with `what` after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting until {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The container's state as `docker inspect` reports it (`running`, `paused`, `exited`, …).
pub fn container_status(container: &str) -> Option<String> {
    docker_inspect(container, "{{.State.Status}}")
}

/// `docker inspect --format FORMAT container`, trimmed; `None` if it does not exist.
pub fn docker_inspect(container: &str, format: &str) -> Option<String> {
    let out = Command::new("docker")
        .args(["inspect", "--format", format, container])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Containers (any state) on the slot's network.
pub fn containers_of(slot: &Slot) -> Vec<String> {
    let out = Command::new("docker")
        .args([
            "ps",
            "-aq",
            "--filter",
            &format!("label=imag.network={}", slot.network()),
        ])
        .output()
        .expect("docker ps");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(String::from)
        .collect()
}

pub fn http_addr(addr: Ipv4Addr) -> SocketAddr {
    SocketAddr::from((addr, 8080))
}

/// Whether any of imag's programs is attached to `iface`: XDP (as `ip link` shows it) or a TC
/// ingress program (as the kernel's TCX query reports it).
pub fn holding_program_attached(iface: &str) -> bool {
    let link = Command::new("ip")
        .args(["link", "show", iface])
        .output()
        .expect("ip link");
    let xdp = String::from_utf8_lossy(&link.stdout).contains("xdp");
    let tc =
        aya::programs::SchedClassifier::query_tcx(iface, aya::programs::tc::TcAttachType::Ingress)
            .map(|(_, programs)| !programs.is_empty())
            .unwrap_or(false);
    xdp || tc
}
