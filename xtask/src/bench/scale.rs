//! Scale: 1,000 and 10,000 configured hosts (the agent's memory, attach time, map memory) and
//! storms of cold hosts woken at once.

use std::{
    fmt::Write as _,
    net::SocketAddr,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use imag_testkit::{AgentProcess, ClientNs, Launch};

use super::{HOST_IF, Results, ScaleRun, StormRun, cleanup, client, stats};
use crate::{cmd_output, image};

/// The subnet of the 50/100-host storms.
pub const STORM_SUBNET: &str = "10.65.0.0/24";

/// 1,000 and 10,000 configured hosts; storms of 50 and 100 cold hosts woken at once.
#[allow(
    clippy::too_many_lines,
    reason = "two scales, then two storms, in the order they run"
)]
pub(super) fn scale(
    binary: &Path,
    dir: &Path,
    client: &ClientNs,
    results: &mut Results,
) -> anyhow::Result<()> {
    for hosts in [1_000usize, 10_000] {
        eprintln!("bench: {hosts} configured hosts");
        let config = dir.join(format!("scale-{hosts}.toml"));
        let mut text =
            "[network]\nsubnet = \"10.64.0.0/18\"\nname = \"imagscale\"\nbridge = \"imagscale0\"\n"
                .to_string();
        for i in 0..hosts {
            let n = i + 2;
            write!(
                text,
                "\n[[host]]\nname = \"h{i}\"\naddress = \"10.64.{}.{}\"\nimage = \"{}\"\nports = [8080]\n",
                n / 256,
                n % 256,
                image::IMAGE
            )?;
        }
        std::fs::write(&config, text)?;
        cleanup(binary, &config);
        let start = Instant::now();
        let mut agent = AgentProcess::start(
            Launch::new(binary, &config, &[HOST_IF]).args(&["--metrics", "off"]),
        )?;
        let attach_ms = start.elapsed().as_secs_f64() * 1000.0;
        std::thread::sleep(Duration::from_secs(1));
        let rss_mib =
            std::fs::read_to_string(format!("/proc/{}/status", agent.pid().unwrap_or_default()))
                .ok()
                .and_then(|s| {
                    s.lines()
                        .find_map(|l| l.strip_prefix("VmRSS:"))
                        .and_then(|v| {
                            v.split_whitespace()
                                .next()
                                .and_then(|kb| kb.parse::<f64>().ok())
                        })
                })
                .map_or(f64::NAN, |kb| kb / 1024.0);
        let map_memory_mib = map_memory("imagscale").map(|b| b as f64 / f64::from(1 << 20));
        agent.stop()?;
        cleanup(binary, &config);
        eprintln!("  attach {attach_ms:.0} ms, RSS {rss_mib:.1} MiB, maps {map_memory_mib:?} MiB");
        results.scale.push(ScaleRun {
            hosts,
            attach_ms,
            rss_mib,
            map_memory_mib,
        });
    }

    let config = dir.join("storm.toml");
    let mut text = format!(
        "[network]\nsubnet = \"{STORM_SUBNET}\"\nname = \"imagstorm\"\nbridge = \"imagstorm0\"\n"
    );
    for i in 0..150 {
        write!(
            text,
            "\n[[host]]\nname = \"s{i}\"\naddress = \"10.65.0.{}\"\nimage = \"{}\"\ncommand = [\"/hello\", \"--port\", \"8080\"]\nports = [8080]\nwake_timeout = \"300s\"\n",
            i + 2,
            image::IMAGE
        )?;
    }
    std::fs::write(&config, text)?;
    cleanup(binary, &config);
    let agent = AgentProcess::start(Launch::new(binary, &config, &[HOST_IF]).args(&[
        "--metrics",
        "off",
        "--on-exit",
        "keep",
    ]))?;
    for (first, count) in [(0usize, 50usize), (50, 100)] {
        eprintln!("bench: storm of {count} cold hosts woken at once");
        let outcomes: Vec<Result<f64, String>> = client.run(|| {
            std::thread::scope(|scope| {
                let workers: Vec<_> = (first..first + count)
                    .map(|i| {
                        scope.spawn(move || {
                            #[allow(
                                clippy::cast_possible_truncation,
                                reason = "storms wake hosts 0..150: addresses .2 to .151"
                            )]
                            let addr = SocketAddr::from(([10, 65, 0, (i + 2) as u8], 8080));
                            client::time_to_first_byte(addr, Duration::from_mins(5))
                                .map(|d| d.as_secs_f64() * 1000.0)
                                .map_err(|e| e.to_string())
                        })
                    })
                    .collect();
                workers
                    .into_iter()
                    .map(|w| w.join().expect("no panic"))
                    .collect()
            })
        })?;
        let client_ms: Vec<f64> = outcomes
            .iter()
            .filter_map(|o| o.as_ref().ok().copied())
            .collect();
        for failure in outcomes.iter().filter_map(|o| o.as_ref().err()) {
            eprintln!("  failed: {failure}");
        }
        eprintln!(
            "  {}/{count} answered, p99 {:.0} ms",
            client_ms.len(),
            stats::summarize(&client_ms).p99
        );
        results.storms.push(StormRun {
            hosts: count,
            succeeded: client_ms.len(),
            client_ms,
        });
    }
    drop(agent);
    cleanup(binary, &config);
    Ok(())
}

/// Bytes of kernel memory held by the network's pinned maps (bpftool's `bytes_memlock`).
fn map_memory(network: &str) -> Option<u64> {
    let json = cmd_output(Command::new("bpftool").args(["-j", "-f", "map", "show"]))?;
    let maps: serde_json::Value = serde_json::from_str(&json).ok()?;
    let prefix = format!("/sys/fs/bpf/imag/{network}/");
    Some(
        maps.as_array()?
            .iter()
            .filter(|m| {
                m["pinned"].as_array().is_some_and(|p| {
                    p.iter()
                        .any(|p| p.as_str().is_some_and(|p| p.starts_with(&prefix)))
                })
            })
            .filter_map(|m| m["bytes_memlock"].as_u64())
            .sum(),
    )
}
