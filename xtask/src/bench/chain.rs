//! Section 7 of `cargo xtask bench`, chains of cold hosts: one request to a host that calls a
//! second that calls a third, all three stopped, against one cold host alone, in the same run.
//! Four ways, each round measuring every way once (a different order each round):
//!
//! - `single`: one cold host (the floor: one engine start);
//! - `chain`: three cold hosts that wake one after another as each one's traffic reaches the next;
//! - `wakes_with`: the same chain with `wakes_with` (a wakes with b, b with c): one packet starts
//!   all three in parallel;
//! - `learned`: the same chain, after two requests taught the agent the edges (`[wake]
//!   prewake = "on"`).
//!
//! The first three run under one agent with `prewake = "off"` (so that the plain chain stays
//! plain), the learned chain under a second agent with learning on; each agent serves its own
//! `single` host, so every chain is compared with a single wake of the same agent and round.
//! `--chain-only` runs this section alone (`target/bench/chain.{md,json}`).

use std::{
    fmt::Write as _,
    net::{Ipv4Addr, SocketAddr},
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use imag_testkit::{AgentProcess, ClientNs, Launch};
use serde::Serialize;

use super::{HOST_IF, METRICS, NETNS, cleanup, client, engine, stats::summarize};
use crate::{image, workspace_root};

/// The client namespace routes it through the attach interface.
pub const SUBNET: &str = "10.69.0.0/24";
const NETWORK: &str = "imagchain";
/// The target: a chain answers its first request in at most this many times a single wake.
pub const TARGET_RATIO: f64 = 1.3;

#[derive(Debug, Default, Serialize)]
pub struct ChainRun {
    pub rounds: usize,
    /// Client connect → first byte of the answer, per way (ms); `single_learned_agent` is the
    /// single host of the second agent.
    pub single_ms: Vec<f64>,
    pub chain_ms: Vec<f64>,
    pub wakes_with_ms: Vec<f64>,
    pub single_learned_agent_ms: Vec<f64>,
    pub learned_ms: Vec<f64>,
    /// The engine alone, per round: one start call, and three start calls at once until the
    /// last returned (ms): the floor of any parallel wake.
    pub engine_one_ms: Vec<f64>,
    pub engine_three_ms: Vec<f64>,
    /// Learned pre-wakes used and unused over the learned rounds (`imag_prewakes_total`).
    pub prewakes_used: u64,
    pub prewakes_unused: u64,
}

/// The hosts of one agent: `s` alone, and chains named by `prefix` (`x1 → x2 → x3`).
fn config_text(prewake: &str, chains: &[(&str, bool)]) -> String {
    let mut text = format!(
        "[network]\nsubnet = \"{SUBNET}\"\nname = \"{NETWORK}\"\nbridge = \"{NETWORK}0\"\n\n\
         [wake]\nprewake = \"{prewake}\"\n"
    );
    let mut host = |name: &str, octet: u8, backend: Option<u8>, with: Option<&str>| {
        let backend = backend
            .map(|o| format!(", \"--backend\", \"10.69.0.{o}:8080\""))
            .unwrap_or_default();
        let with = with
            .map(|w| format!("wakes_with = [\"{w}\"]\n"))
            .unwrap_or_default();
        write!(
            text,
            "\n[[host]]\nname = \"{name}\"\naddress = \"10.69.0.{octet}\"\nimage = \"{}\"\n\
             command = [\"/hello\", \"--port\", \"8080\"{backend}]\nports = [8080]\n\
             idle_timeout = \"never\"\n{with}",
            image::IMAGE
        )
        .expect("writing to a string");
    };
    host("s", 10, None, None);
    for (i, (prefix, wakes_with)) in chains.iter().enumerate() {
        let base = u8::try_from(20 + 10 * i).expect("a few chains");
        for hop in 1..=3u8 {
            let next = (hop < 3).then_some(base + hop + 1);
            let with = format!("{prefix}{}", hop + 1);
            let with = (*wakes_with && hop < 3).then_some(with.as_str());
            host(&format!("{prefix}{hop}"), base + hop, next, with);
        }
    }
    text
}

fn address(host: &str) -> SocketAddr {
    let octet = match host {
        "s" => 10,
        "p1" | "l1" => 21,
        "w1" => 31,
        other => panic!("no entry host {other}"),
    };
    SocketAddr::from((Ipv4Addr::new(10, 69, 0, octet), 8080))
}

fn start(binary: &Path, config: &Path) -> anyhow::Result<AgentProcess> {
    Ok(AgentProcess::start(
        Launch::new(binary, config, &[HOST_IF]).args(&["--metrics", METRICS]),
    )?)
}

/// Stops every host of `hosts` through the agent and waits until all are asleep and exited.
fn all_cold(agent: &AgentProcess, hosts: &[String]) -> anyhow::Result<()> {
    for h in hosts {
        if agent.host(h)?["state"] != "asleep" {
            agent.command(&["sleep", h, "--tier", "stop"])?;
        }
    }
    let deadline = Instant::now() + Duration::from_mins(1);
    for h in hosts {
        while agent.host(h)?["state"] != "asleep" {
            if Instant::now() > deadline {
                bail!("{h} did not fall asleep");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        engine::wait_for_state(
            &engine::container_name(NETWORK, h),
            "exited",
            Duration::from_secs(30),
        )?;
    }
    Ok(())
}

/// One request to `entry` with `hosts` cold; ms to the first byte.
fn cold_request(
    agent: &AgentProcess,
    client: &ClientNs,
    entry: &str,
    hosts: &[String],
) -> anyhow::Result<f64> {
    all_cold(agent, hosts)?;
    let took =
        client.run(|| client::time_to_first_byte(address(entry), Duration::from_secs(30)))??;
    Ok(took.as_secs_f64() * 1000.0)
}

/// With the hosts cold (through the agent), starts `one` alone and then `three` at once through
/// the engine's API; how long until the call (the last call) returned, in ms. They are stopped
/// again through the engine; the agent, which believes them stopped, is not involved.
fn engine_floor(
    agent: &AgentProcess,
    one: &[String],
    three: &[String],
) -> anyhow::Result<(f64, f64)> {
    let mut took = [0.0; 2];
    for (i, hosts) in [one, three].into_iter().enumerate() {
        all_cold(agent, hosts)?;
        let names: Vec<String> = hosts
            .iter()
            .map(|h| engine::container_name(NETWORK, h))
            .collect();
        let start = Instant::now();
        std::thread::scope(|scope| {
            let calls: Vec<_> = names
                .iter()
                .map(|n| scope.spawn(move || engine::container_action(n, "start")))
                .collect();
            calls
                .into_iter()
                .try_for_each(|c| c.join().expect("no panic").map(|_| ()))
        })?;
        took[i] = start.elapsed().as_secs_f64() * 1000.0;
        for n in &names {
            engine::container_action(n, "stop")?;
            engine::wait_for_state(n, "exited", Duration::from_secs(30))?;
        }
    }
    Ok((took[0], took[1]))
}

fn chain_hosts(prefix: &str) -> Vec<String> {
    (1..=3).map(|i| format!("{prefix}{i}")).collect()
}

/// Waits until no pre-wake of the learned agent is pending (a host put to sleep before its
/// pre-wake was judged would count as unused, and teach the agent the wrong thing).
fn prewakes_judged(agent: &AgentProcess) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let status = agent.status()?;
        let pending = status["prewake"]["recent"]
            .as_array()
            .is_some_and(|r| r.iter().any(|r| r["result"] == "pending"));
        if !pending {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("pre-wakes still pending: {}", status["prewake"]);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs the section: `rounds` rounds of each way.
pub fn measure(
    binary: &Path,
    dir: &Path,
    client: &ClientNs,
    rounds: usize,
) -> anyhow::Result<ChainRun> {
    let mut run = ChainRun {
        rounds,
        ..ChainRun::default()
    };
    let single = vec!["s".to_string()];

    let plain = dir.join("imag-chain-off.toml");
    std::fs::write(&plain, config_text("off", &[("p", false), ("w", true)]))?;
    cleanup(binary, &plain);
    eprintln!("bench: chains of three cold hosts ({rounds} rounds): single, chain, wakes_with");
    let result = (|| -> anyhow::Result<()> {
        let agent = start(binary, &plain)?;
        // Creates every container once; the rounds then start stopped ones.
        for entry in ["s", "p1", "w1"] {
            client.run(|| client::time_to_first_byte(address(entry), Duration::from_mins(1)))??;
        }
        for round in 0..rounds {
            let mut ways = [
                ("s", &single),
                ("p1", &chain_hosts("p")),
                ("w1", &chain_hosts("w")),
            ]
            .map(|(e, h)| (e, h.clone()));
            ways.rotate_left(round % 3);
            for (entry, hosts) in ways {
                let ms = cold_request(&agent, client, entry, &hosts)?;
                match entry {
                    "s" => run.single_ms.push(ms),
                    "p1" => run.chain_ms.push(ms),
                    _ => run.wakes_with_ms.push(ms),
                }
            }
            let (one, three) = engine_floor(&agent, &single, &chain_hosts("p"))?;
            run.engine_one_ms.push(one);
            run.engine_three_ms.push(three);
            eprint!("\r  round {}/{rounds}", round + 1);
        }
        eprintln!();
        Ok(())
    })();
    cleanup(binary, &plain);
    result?;

    let learning = dir.join("imag-chain-on.toml");
    std::fs::write(&learning, config_text("on", &[("l", false)]))?;
    cleanup(binary, &learning);
    let state = Path::new("/var/lib/imag").join(NETWORK);
    let _ = std::fs::remove_dir_all(&state);
    eprintln!(
        "bench: the chain learned ({rounds} rounds after two chains to learn): single, learned"
    );
    let result = (|| -> anyhow::Result<()> {
        let agent = start(binary, &learning)?;
        let learned = chain_hosts("l");
        // The first request creates the containers (and is the first chain seen), the second
        // starts them stopped: two chains, an edge.
        for entry in ["s", "l1"] {
            client.run(|| client::time_to_first_byte(address(entry), Duration::from_mins(1)))??;
        }
        cold_request(&agent, client, "l1", &learned)?;
        let edges = agent.status()?["prewake"]["edges"].clone();
        let is_learned = |from: &str, to: &str| {
            edges.as_array().is_some_and(|e| {
                e.iter()
                    .any(|e| e["from"] == from && e["to"] == to && e["learned"] == true)
            })
        };
        if !(is_learned("l1", "l2") && is_learned("l2", "l3")) {
            bail!("two chains did not teach the agent l1 → l2 → l3: {edges}");
        }
        for round in 0..rounds {
            let mut ways = [("s", &single), ("l1", &learned)].map(|(e, h)| (e, h.clone()));
            ways.rotate_left(round % 2);
            for (entry, hosts) in ways {
                let ms = cold_request(&agent, client, entry, &hosts)?;
                prewakes_judged(&agent)?;
                match entry {
                    "s" => run.single_learned_agent_ms.push(ms),
                    _ => run.learned_ms.push(ms),
                }
            }
            eprint!("\r  round {}/{rounds}", round + 1);
        }
        eprintln!();
        let p = &agent.status()?["prewake"];
        run.prewakes_used = p["used"].as_u64().unwrap_or(0);
        run.prewakes_unused = p["unused"].as_u64().unwrap_or(0);
        Ok(())
    })();
    cleanup(binary, &learning);
    let _ = std::fs::remove_dir_all(&state);
    result?;
    Ok(run)
}

/// The section as Markdown.
pub fn markdown(run: &ChainRun) -> String {
    let mut md = String::new();
    let single = summarize(&run.single_ms);
    let single2 = summarize(&run.single_learned_agent_ms);
    let _ = writeln!(
        md,
        "## Chains of three cold hosts\n\nOne request to a host that calls a second that calls \
         a third, all three stopped, against a single stopped host, {} rounds, client connect → \
         first byte. Target: a chain in at most {TARGET_RATIO}× a single cold wake with \
         `wakes_with` and once learned.\n\n\
         | way | p50 ms | p95 ms | max ms | p50 ÷ single p50 (same agent) |\n|---|---|---|---|---|",
        run.rounds
    );
    for (way, samples, base) in [
        ("single host", &run.single_ms, single.p50),
        ("chain, one after another", &run.chain_ms, single.p50),
        ("chain with `wakes_with`", &run.wakes_with_ms, single.p50),
        (
            "single host (learning agent)",
            &run.single_learned_agent_ms,
            single2.p50,
        ),
        ("chain, learned", &run.learned_ms, single2.p50),
    ] {
        let s = summarize(samples);
        let _ = writeln!(
            md,
            "| {way} | {:.0} | {:.0} | {:.0} | {:.2} |",
            s.p50,
            s.p95,
            s.max,
            s.p50 / base
        );
    }
    let (one, three) = (
        summarize(&run.engine_one_ms),
        summarize(&run.engine_three_ms),
    );
    let _ = writeln!(
        md,
        "\nThe engine alone, same rounds: one start call p50 {:.0} ms; three start calls at once, \
         until the last returned, p50 {:.0} ms ({:.2}×): the floor of any parallel wake of three \
         stopped containers on this machine.\n\nLearned pre-wakes over the run: {} used, {} unused.",
        one.p50,
        three.p50,
        three.p50 / one.p50,
        run.prewakes_used,
        run.prewakes_unused
    );
    md
}

/// `--chain-only`: this section alone, written to `target/bench/chain.{md,json}`.
pub fn run_alone(binary: &Path, dir: &Path, rounds: usize) -> anyhow::Result<()> {
    let client = ClientNs::create(NETNS, HOST_IF, "10.79.0.1/24", "10.79.0.2/24", &[SUBNET])
        .context("creating the benchmark's client namespace")?;
    let run = measure(binary, dir, &client, rounds);
    drop(client);
    let run = run?;
    std::fs::write(dir.join("chain.json"), serde_json::to_string_pretty(&run)?)?;
    let markdown = markdown(&run);
    std::fs::write(dir.join("chain.md"), &markdown)?;
    println!("{markdown}");
    let shown = dir.strip_prefix(workspace_root()).unwrap_or(dir).display();
    println!("written: {shown}/chain.md, {shown}/chain.json");
    Ok(())
}
