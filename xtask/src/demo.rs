//! `cargo xtask demo`: a client namespace sends one request to a cold imaginary host; imag wakes
//! it; the demo prints the answer, the latency the client saw, and the agent's phase timings.

use std::{net::SocketAddr, process::Command, time::Duration};

use anyhow::Context as _;
use imag_testkit::{AgentProcess, ClientNs, Launch, clients};

use crate::workspace_root;

const CONFIG: &str = include_str!("../../examples/demo.toml");
const NETNS: &str = "imag-demo-client";
const HOST_IF: &str = "imag-demo";
const SERVICE: &str = "10.77.0.10:8080";

pub fn run() -> anyhow::Result<()> {
    let binary = crate::prepare_agent("cargo xtask demo")?;
    let root = workspace_root();
    let config_path = root.join("target/demo/imag.toml");
    std::fs::create_dir_all(config_path.parent().expect("has a parent"))?;
    std::fs::write(&config_path, CONFIG)?;
    // Start cold: a container left running by an earlier demo would answer without a wake.
    let _ = Command::new("docker")
        .args(["rm", "-f", "imag--web"])
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

    let mut agent = AgentProcess::start(Launch::new(&binary, &config_path, &[HOST_IF]))?;
    println!("imag-agent attached to {HOST_IF}");
    let result = requests(&client, &mut agent);
    // Leave nothing behind: `detach` through the running agent removes its programs, rules,
    // containers and the Docker network it created, and the agent exits.
    let detached = agent.command(&["detach"]);
    agent.stop()?;
    drop(client);
    match detached {
        Ok(_) => {
            println!("\n$ imag-agent detach   # programs, rules, containers and network removed");
        }
        Err(err) => eprintln!("detaching after the demo failed: {err}"),
    }
    result
}

fn requests(client: &ClientNs, agent: &mut AgentProcess) -> anyhow::Result<()> {
    let addr: SocketAddr = SERVICE.parse().expect("a valid address");
    println!("\n$ curl http://{SERVICE}/   # host 'web' is cold: no container exists");
    let (body, took) = client
        .run(|| clients::http_get(addr, Duration::from_secs(30)))?
        .context("the request to the cold host failed")?;
    print!("{body}");
    println!(
        "→ answered in {:.1} ms (cold: container created, started, probed, first SYN re-delivered)",
        ms(took)
    );
    let woke = agent.wait_for_line("woke", Duration::from_secs(5))?;
    println!("  agent: {}", phases(&woke));
    let retrans = client.run(|| clients::net_counter("TcpExt", "TCPSynRetrans"))??;
    println!("  client SYN retransmissions: {retrans}");

    let (body, took) = client.run(|| clients::http_get(addr, Duration::from_secs(5)))??;
    println!("\n$ curl http://{SERVICE}/   # again, now warm");
    print!("{body}");
    println!(
        "→ answered in {:.2} ms (warm: straight through the kernel, no proxy)",
        ms(took)
    );
    println!("\n$ imag-agent status");
    print!("{}", agent.command(&["status"])?);
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
