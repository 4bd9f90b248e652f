//! A per-test topology for the privileged integration tests: a generated name and subnets
//! ([`crate::lease`]), a client namespace linked to the host, the configuration text of an imag
//! network, and agents started on it ([`crate::agent`]). Dropping it removes everything named
//! after it — containers, Docker network and bridge, pinned datapath, forwarding rules, client
//! namespace — also when the test failed; what a crashed run left behind is removed by the next
//! test that takes the same index.
//!
//! Names: network and bridge `<tag>`, client namespace `<tag>c`, host side of its link `<tag>h`,
//! container of host `web` `<tag>-web`. Addresses: imaginary hosts in `10.200.<index>.0/24`
//! (host `i` is `.i`), the client link `10.201.<index>.0/24` (host side `.1`, client `.2`).

use std::{
    net::{Ipv4Addr, SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
};

use crate::{
    agent::{AgentProcess, Launch},
    docker,
    lease::Lease,
    metrics::Metrics,
    netns::{ClientNs, ip},
};

/// The example image every test host runs (`cargo xtask image` builds it).
pub const IMAGE: &str = "imag-example/hello";

/// Where imag pins the datapath of a network.
fn pins_dir(network: &str) -> PathBuf {
    Path::new("/sys/fs/bpf/imag").join(network)
}

/// Fails the test with the fix if this is not root or the example image is missing.
pub fn require_environment() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "the integration tests need root (eBPF, namespaces, Docker): run `cargo xtask test` as root"
    );
    assert!(
        docker::image_exists(IMAGE),
        "the example image {IMAGE} is missing (or Docker is unreachable): `cargo xtask test` builds \
         it; or run `cargo xtask image`"
    );
}

/// One test's network of imaginary hosts and its client.
pub struct TestNet {
    lease: Lease,
    binary: PathBuf,
    metrics: SocketAddr,
    client: OnceLock<ClientNs>,
}

impl TestNet {
    /// Checks the environment, takes a fresh index, and removes whatever a crashed earlier
    /// holder of that index left. `binary` is the agent to run (`agent_binary!()`).
    pub fn new(binary: &Path) -> TestNet {
        require_environment();
        let lease = Lease::take().expect("taking a test network index");
        if let Some(stale) = lease.stale() {
            sweep(stale, None);
            // The index may have been a crashed cluster's.
            crate::cluster::sweep_stale(stale);
        }
        // A free port now; the agent binds it moments later (and again after a restart).
        let metrics = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free local port for the agent's metrics");
        TestNet {
            lease,
            binary: binary.to_path_buf(),
            metrics,
            client: OnceLock::new(),
        }
    }

    /// The Docker network's name (and its bridge's).
    pub fn network(&self) -> &str {
        self.lease.tag()
    }

    /// The imaginary subnet.
    pub fn subnet(&self) -> String {
        format!("10.200.{}.0/24", self.lease.index())
    }

    /// The address of imaginary host number `i` (i ≥ 2; .1 is the gateway).
    pub fn host_addr(&self, i: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 200, self.lease.index(), i)
    }

    /// `host_addr(i)`, port 8080 (the example service).
    pub fn http_addr(&self, i: u8) -> SocketAddr {
        SocketAddr::from((self.host_addr(i), 8080))
    }

    /// The attach interface: the host side of the client's link.
    pub fn host_if(&self) -> String {
        format!("{}h", self.lease.tag())
    }

    /// The host side's address on the client link.
    pub fn host_side_addr(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 201, self.lease.index(), 1)
    }

    /// The container imag runs for `host`.
    pub fn container(&self, host: &str) -> String {
        format!("{}--{host}", self.lease.tag())
    }

    /// Containers (any state) on this network.
    pub fn containers(&self) -> Vec<String> {
        docker::containers_on(self.network())
    }

    /// Where this network's agents serve metrics.
    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics
    }

    /// One scrape of the agent's `/metrics`.
    pub fn scrape(&self) -> Metrics {
        Metrics::scrape(self.metrics).expect("/metrics answers")
    }

    /// A configuration file path of this network's, for a config written by the test itself.
    pub fn temp_file(&self, suffix: &str) -> PathBuf {
        self.lease.temp_file(suffix)
    }

    /// The client namespace, linked to the host by `host_if()` and routing the imaginary subnet
    /// there (created on first use).
    pub fn client(&self) -> &ClientNs {
        self.client
            .get_or_init(|| self.make_client(&[&self.subnet()]))
    }

    /// Instead of [`TestNet::client`]: a client that believes the imaginary subnet is on its own
    /// link, so that it asks ARP for the hosts, not a router.
    pub fn on_link_client(&self) -> &ClientNs {
        self.client.get_or_init(|| {
            let client = self.make_client(&[]);
            ip(&[
                "-n",
                &client.name,
                "route",
                "add",
                &self.subnet(),
                "dev",
                "eth0",
            ])
            .expect("routing the imaginary subnet on the client's link");
            client
        })
    }

    fn make_client(&self, routes: &[&str]) -> ClientNs {
        let n = self.lease.index();
        ClientNs::create(
            &format!("{}c", self.lease.tag()),
            &self.host_if(),
            &format!("10.201.{n}.1/24"),
            &format!("10.201.{n}.2/24"),
            routes,
        )
        .expect("creating the client namespace")
    }

    /// The `[network]` section.
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

    fn config_path(&self) -> PathBuf {
        self.lease.temp_file(".toml")
    }

    /// Writes `config` and starts an agent on the client's link with extra `attach` arguments;
    /// panics with its log if it does not attach. A second agent (after a first was killed)
    /// finds what the first left in place.
    pub fn start_agent(&self, config: &str, args: &[&str]) -> AgentProcess {
        std::fs::write(self.config_path(), config).expect("writing the test config");
        let metrics = self.metrics.to_string();
        let mut launch = Launch::new(&self.binary, &self.config_path(), &[&self.host_if()])
            .args(&["--metrics", &metrics])
            .args(args);
        launch.log_filter = "imag_agent=debug".into();
        launch.echo = true;
        AgentProcess::start(launch).unwrap_or_else(|err| panic!("{err}"))
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        let config = self.config_path();
        let detach = config
            .exists()
            .then_some((self.binary.as_path(), config.as_path()));
        sweep(self.lease.tag(), detach);
        let _ = std::fs::remove_file(&config);
        // Deleting the namespace after the detach: the datapath is removed before its link.
        drop(self.client.take());
        self.lease.release();
    }
}

/// Removes everything named after `tag`: through `imag-agent detach` when its config is at
/// hand (`detach`: binary and config), then whatever is left by hand.
pub(crate) fn sweep(tag: &str, detach: Option<(&Path, &Path)>) {
    if let Some((binary, config)) = detach.filter(|_| pins_dir(tag).exists()) {
        let _ = Command::new(binary)
            .args(["detach", "--config"])
            .arg(config)
            .output();
    }
    docker::remove_network(tag);
    let _ = ip(&["netns", "del", &format!("{tag}c")]);
    let _ = ip(&["link", "del", &format!("{tag}h")]);
    let _ = std::fs::remove_dir_all(pins_dir(tag));
    // What the agent learned about this network (`/var/lib/imag/<network>/`).
    let _ = std::fs::remove_dir_all(Path::new("/var/lib/imag").join(tag));
    let comment = format!("\"imag:{tag}\"");
    let rules = Command::new("iptables")
        .args(["-S", "DOCKER-USER"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    for rule in rules.lines().filter(|l| l.contains(&comment)) {
        let args: Vec<&str> = rule
            .split_whitespace()
            .map(|w| if w == "-A" { "-D" } else { w.trim_matches('"') })
            .collect();
        let _ = Command::new("iptables").args(&args).output();
    }
    // The agent's own chain for the network (its jump, tagged, went above); test tags are short
    // enough to be named in full (`imag_agent::firewall::chain_of`).
    let chain = format!("IMAG-{tag}");
    for verb in ["-F", "-X"] {
        let _ = Command::new("iptables").args([verb, &chain]).output();
    }
}
