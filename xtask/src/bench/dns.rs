//! The benchmark's names section: how fast a cold host's name is answered, against Docker's
//! embedded resolver answering a running container's name, measured in the same run from inside
//! the same container (`hello --dns-bench NAME COUNT`, which times each query in-process), and
//! how many queries per second the agent answers on one core (a window of queries kept in
//! flight from the host to the bridge gateway, the agent pinned to one CPU and the client to
//! another). Run by `super::run` right after the warm path, while `web` is still warm.

use std::{
    net::{SocketAddr, UdpSocket},
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use hickory_proto::{
    op::{Message, Query},
    rr::{Name, RecordType},
};
use serde::Serialize;

use super::{NETWORK, start_agent, wait_warm};

/// Lookups per series, and before them to warm up.
const LOOKUPS: usize = 200;
const WARM_UP: usize = 20;
/// How long the queries-per-second loop runs.
const QPS_TIME: Duration = Duration::from_secs(3);
/// Queries kept in flight by that loop: enough to keep one core busy.
const WINDOW: usize = 64;
/// The bridge gateway, where the agent answers DNS.
const GATEWAY: &str = "10.76.0.1:53";
/// A host that is never woken.
const COLD: &str = "cold";

#[derive(Debug, Default, Serialize)]
pub struct DnsRun {
    /// `cold`, asked of imag on the gateway, from inside `web`'s container (µs).
    pub imag_cold_us: Vec<f64>,
    /// The running container's name, asked of Docker's embedded resolver (127.0.0.11) (µs).
    pub docker_warm_us: Vec<f64>,
    /// `cold`, asked of Docker's embedded resolver, which forwards it to imag: what an
    /// application in a container sees (µs).
    pub docker_forwarded_cold_us: Vec<f64>,
    /// Answers per second from the agent pinned to one CPU.
    pub qps_one_core: f64,
}

/// The configuration's extra host: the name looked up, never woken.
pub fn cold_host(image: &str) -> String {
    format!(
        "[[host]]\nname = \"{COLD}\"\naddress = \"10.76.0.12\"\nimage = \"{image}\"\n\
         command = [\"/hello\"]\nports = [8080]\n"
    )
}

/// Starts an agent on `config` (the base hosts plus [`cold_host`]) and measures.
pub fn measure(binary: &Path, config: &Path) -> anyhow::Result<DnsRun> {
    let mut agent = start_agent(binary, config)?;
    // Woken here, not adopted: the section before (per-packet) cleans its network away.
    agent.command(&["wake", "web"])?;
    wait_warm(&agent, &["web"])?;
    // The host links' programs are attached just after adoption: let that settle first.
    std::thread::sleep(Duration::from_millis(1500));
    let web = super::engine::container_name(NETWORK, "web");
    let gateway = GATEWAY.trim_end_matches(":53");
    // Untimed: the first lookups pay for ARP and cold caches on both resolvers.
    lookups(&web, COLD, Some(gateway), WARM_UP)?;
    lookups(&web, &web, None, WARM_UP)?;
    let mut run = DnsRun {
        imag_cold_us: lookups(&web, COLD, Some(gateway), LOOKUPS)?,
        docker_warm_us: lookups(&web, &web, None, LOOKUPS)?,
        docker_forwarded_cold_us: lookups(&web, COLD, None, LOOKUPS)?,
        ..Default::default()
    };
    let pid = agent.pid().context("the agent's pid")?;
    run.qps_one_core = qps_one_core(pid)?;
    if agent.host(COLD)?["state"] != "asleep" {
        bail!("looking up {COLD} woke it");
    }
    agent.stop()?;
    Ok(run)
}

/// `hello --dns-bench NAME COUNT` in `container`: each lookup's latency in µs.
fn lookups(
    container: &str,
    name: &str,
    server: Option<&str>,
    count: usize,
) -> anyhow::Result<Vec<f64>> {
    let count = count.to_string();
    let mut command = Command::new("docker");
    command.args(["exec", container, "/hello", "--dns-bench", name, &count]);
    if let Some(server) = server {
        command.args(["--dns-server", server]);
    }
    let out = command.output().context("running docker exec")?;
    if !out.status.success() {
        bail!(
            "looking up {name} in {container} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().parse::<f64>().context("a latency in µs"))
        .collect()
}

/// Pins every thread of the agent to CPU 0 and this thread to CPU 1 (`taskset`'s way), keeps
/// [`WINDOW`] queries for `cold` in flight for [`QPS_TIME`], and counts the answers.
fn qps_one_core(agent: u32) -> anyhow::Result<f64> {
    let pinned = Command::new("taskset")
        .args(["-a", "-p", "-c", "0", &agent.to_string()])
        .output()
        .context("running taskset")?;
    if !pinned.status.success() {
        bail!(
            "pinning the agent to CPU 0: {}",
            String::from_utf8_lossy(&pinned.stderr)
        );
    }
    std::thread::scope(|scope| {
        scope
            .spawn(|| -> anyhow::Result<f64> {
                // SAFETY: a zeroed cpu_set_t is empty; CPU_SET writes within it; pid 0 is the
                // calling thread.
                unsafe {
                    let mut set: libc::cpu_set_t = std::mem::zeroed();
                    libc::CPU_SET(1, &mut set);
                    libc::sched_setaffinity(
                        0,
                        std::mem::size_of::<libc::cpu_set_t>(),
                        &raw const set,
                    );
                }
                let mut query = Message::query();
                query.add_query(Query::query(Name::from_ascii(COLD)?, RecordType::A));
                let bytes = query.to_vec()?;
                let server: SocketAddr = GATEWAY.parse()?;
                let socket = UdpSocket::bind("0.0.0.0:0")?;
                socket.connect(server)?;
                socket.set_read_timeout(Some(Duration::from_millis(20)))?;
                let mut buf = [0u8; 512];
                let (start, mut answered) = (Instant::now(), 0u64);
                while start.elapsed() < QPS_TIME {
                    // A fresh window at first and after losses (a full socket buffer drops).
                    for _ in 0..WINDOW {
                        socket.send(&bytes)?;
                    }
                    while socket.recv(&mut buf).is_ok() {
                        answered += 1;
                        socket.send(&bytes)?;
                        if start.elapsed() >= QPS_TIME {
                            break;
                        }
                    }
                }
                Ok(answered as f64 / start.elapsed().as_secs_f64())
            })
            .join()
            .expect("the query loop does not panic")
    })
}
