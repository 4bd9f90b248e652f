//! Sections run on their own (`--per-packet-only`, `--storm-only`), written to
//! `target/bench/<section>.{md,json}` so that a partial run never replaces the full report.

use std::{fmt::Write as _, path::Path};

use anyhow::Context as _;
use imag_testkit::ClientNs;
use serde::Serialize;

use super::{HOST_IF, NETNS, cleanup, config_text, per_packet, report, storm};
use crate::image;

/// `--per-packet-only`: the per-packet section on its own.
pub(super) fn per_packet(binary: &Path, dir: &Path, rounds: usize) -> anyhow::Result<()> {
    let client = client(&["10.76.0.0/24"])?;
    let config = dir.join("imag-per-packet.toml");
    std::fs::write(&config, config_text(&per_packet::echo_host(image::IMAGE)))?;
    cleanup(binary, &config);
    let run = per_packet::measure(binary, &config, &client, rounds);
    cleanup(binary, &config);
    drop(client);
    let run = run?;
    let (targets, body) = (run.targets(), run.markdown());
    write(
        dir,
        "per-packet",
        "imag per-packet figures",
        &run,
        targets,
        &body,
    )
}

/// `--storm-only`: the storm against the engine's floor on its own.
pub(super) fn storm(binary: &Path, dir: &Path) -> anyhow::Result<()> {
    let client = client(&[storm::SUBNET])?;
    let run = storm::measure(binary, dir, &client);
    drop(client);
    let run = run?;
    let (targets, body) = (run.targets(), run.markdown());
    write(
        dir,
        "storm",
        "imag storm against the engine",
        &run,
        targets,
        &body,
    )
}

fn client(routes: &[&str]) -> anyhow::Result<ClientNs> {
    ClientNs::create(NETNS, HOST_IF, "10.79.0.1/24", "10.79.0.2/24", routes)
        .context("creating the benchmark's client namespace")
}

/// Writes `<stem>.json` and `<stem>.md` (the targets table, then the section's own report).
fn write(
    dir: &Path,
    stem: &str,
    title: &str,
    run: &impl Serialize,
    targets: Vec<(String, String, bool)>,
    body: &str,
) -> anyhow::Result<()> {
    std::fs::write(
        dir.join(format!("{stem}.json")),
        serde_json::to_string_pretty(run)?,
    )?;
    let mut markdown = format!("# {title}\n\n| target | measured | |\n|---|---|---|\n");
    for (target, measured, met) in targets {
        let _ = writeln!(
            markdown,
            "| {target} | {measured} | {} |",
            report::mark(met)
        );
    }
    markdown.push_str(body);
    std::fs::write(dir.join(format!("{stem}.md")), &markdown)?;
    println!("{markdown}");
    println!("written: target/bench/{stem}.md, target/bench/{stem}.json");
    Ok(())
}
