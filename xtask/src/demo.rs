//! `cargo xtask demo`: a client namespace sends one request to a cold imaginary host; imag wakes
//! it; the demo prints the answer, the latency the client saw, and the agent's phase timings.

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use anyhow::{Context as _, bail};

use crate::{image, netkit::ClientNs, preflight, run_cmd, setup, workspace_root};

const CONFIG: &str = include_str!("../../examples/demo.toml");
const NETNS: &str = "imag-demo-client";
const HOST_IF: &str = "imag-demo";
const SERVICE: &str = "10.77.0.10:8080";

pub fn run() -> anyhow::Result<()> {
    setup::run()?;
    preflight::require_privileges("cargo xtask demo")?;
    image::build()?;
    let root = workspace_root();
    run_cmd(Command::new(env!("CARGO")).current_dir(&root).args([
        "build",
        "--release",
        "--quiet",
        "-p",
        "imag-agent",
    ]))?;
    let config_path = root.join("target/demo/imag.toml");
    std::fs::create_dir_all(config_path.parent().expect("has a parent"))?;
    std::fs::write(&config_path, CONFIG)?;
    // Start cold: a container left running by an earlier demo would answer without a wake.
    let _ = Command::new("docker")
        .args(["rm", "-f", "imag-web"])
        .output();

    let client = ClientNs::create(
        NETNS,
        HOST_IF,
        "10.78.0.1/24",
        "10.78.0.2/24",
        &["10.77.0.0/24"],
    )
    .context("creating the demo's client namespace")?;
    println!(
        "client namespace {NETNS} (10.78.0.2) → {HOST_IF} (10.78.0.1) → imaginary 10.77.0.0/24"
    );

    let mut agent = Agent::start(&root.join("target/release/imag-agent"), &config_path)?;
    let result = requests(&client, &mut agent);
    agent.stop();
    drop(client);
    result
}

fn requests(client: &ClientNs, agent: &mut Agent) -> anyhow::Result<()> {
    let addr: SocketAddr = SERVICE.parse().expect("a valid address");
    println!("\n$ curl http://{SERVICE}/   # host 'web' is cold: no container exists");
    let (body, took) = client
        .run(|| crate::netkit::http_get(addr, Duration::from_secs(30)))?
        .context("the request to the cold host failed")?;
    print!("{body}");
    println!(
        "→ answered in {:.1} ms (cold: container created, started, probed, first SYN re-delivered)",
        ms(took)
    );
    let woke = agent.wait_for_line("woke", Duration::from_secs(5))?;
    println!("  agent: {}", phases(&woke));
    let retrans = client.run(|| crate::netkit::net_counter("TcpExt", "TCPSynRetrans"))??;
    println!("  client SYN retransmissions: {retrans}");

    let (body, took) = client.run(|| crate::netkit::http_get(addr, Duration::from_secs(5)))??;
    println!("\n$ curl http://{SERVICE}/   # again, now warm");
    print!("{body}");
    println!(
        "→ answered in {:.2} ms (warm: straight through the kernel, no proxy)",
        ms(took)
    );
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The phase fields of the agent's "woke" log line.
fn phases(line: &str) -> String {
    line.split_whitespace()
        .filter(|w| w.contains("_ms=") || w.starts_with("from="))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The agent as a child process whose log lines are collected.
struct Agent {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Agent {
    fn start(binary: &std::path::Path, config: &std::path::Path) -> anyhow::Result<Agent> {
        let mut child = Command::new(binary)
            .args(["attach", HOST_IF, "--config"])
            .arg(config)
            .env("RUST_LOG", "info")
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let stderr = child.stderr.take().expect("piped");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut agent = Agent { child, lines };
        if let Err(err) = agent.wait_for_line("attached", Duration::from_secs(30)) {
            agent.stop();
            return Err(err);
        }
        println!("imag-agent attached to {HOST_IF}");
        Ok(agent)
    }

    fn wait_for_line(&mut self, needle: &str, timeout: Duration) -> anyhow::Result<String> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return Ok(line),
                Ok(line) if line.contains("imag-agent:") => bail!("the agent failed: {line}"),
                Ok(_) => {}
                Err(_) => bail!("the agent did not log {needle:?} within {timeout:?}"),
            }
        }
    }

    fn stop(&mut self) {
        // SAFETY: kill with a valid pid of our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}
