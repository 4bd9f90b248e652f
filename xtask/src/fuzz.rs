//! The fuzz targets' smoke run at the end of `cargo xtask test`: every cargo-fuzz target in
//! `fuzz/` runs for a bounded time, from its committed seed corpus, and a crash fails the run.
//!
//! cargo-fuzz needs the nightly toolchain ([`crate::setup`] brings it for the eBPF build anyway)
//! and is installed here, at a pinned version, when missing. Targets are built without a
//! sanitizer (the agent is safe Rust, where the address sanitizer finds nothing more and halves
//! the executions) but with debug assertions and overflow checks, into the target directory's
//! `fuzz/`. New inputs the fuzzer finds go to a scratch corpus there too, so that the committed
//! seeds (`fuzz/corpus/<target>`) only change by hand; a crash leaves its input in
//! `fuzz/artifacts/<target>/`.

use std::{path::PathBuf, process::Command, time::Instant};

use anyhow::{Context as _, bail};

use crate::{cmd_output, run_cmd, workspace_root};

/// The cargo-fuzz release used (and installed when missing).
const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// `cargo +nightly fuzz …` in the workspace root.
fn cargo_fuzz() -> Command {
    let mut cmd = Command::new("cargo");
    // The outer `cargo xtask` points these at the stable toolchain; cargo-fuzz picks its own.
    cmd.env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("CARGO")
        .current_dir(workspace_root())
        .args(["+nightly", "fuzz"]);
    cmd
}

fn ensure_cargo_fuzz() -> anyhow::Result<()> {
    let installed = cmd_output(Command::new("cargo-fuzz").arg("--version"));
    if installed.is_some_and(|v| v.split_whitespace().last() == Some(CARGO_FUZZ_VERSION)) {
        return Ok(());
    }
    eprintln!("xtask: installing cargo-fuzz {CARGO_FUZZ_VERSION} (about a minute, once)");
    run_cmd(
        Command::new(env!("CARGO"))
            .args(["install", "cargo-fuzz", "--locked", "--force", "--version"])
            .arg(format!("={CARGO_FUZZ_VERSION}")),
    )
    .context("installing cargo-fuzz failed; it needs network access to crates.io")
}

/// Runs every fuzz target for `seconds`, one after the other; fails naming the targets that
/// crashed (their inputs are in `fuzz/artifacts/`).
pub fn smoke(seconds: u32) -> anyhow::Result<()> {
    ensure_cargo_fuzz()?;
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| workspace_root().join("target"), PathBuf::from)
        .join("fuzz");
    let targets = cmd_output(cargo_fuzz().arg("list")).context("`cargo fuzz list` failed")?;
    let targets: Vec<&str> = targets
        .lines()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect();
    if targets.is_empty() {
        bail!("`cargo fuzz list` found no fuzz target in fuzz/");
    }
    run_cmd(
        cargo_fuzz()
            .args(["build", "--sanitizer", "none", "--target-dir"])
            .arg(&target_dir),
    )
    .context("building the fuzz targets failed")?;

    let started = Instant::now();
    let mut crashed = Vec::new();
    for target in &targets {
        let scratch = target_dir.join("corpus").join(target);
        std::fs::create_dir_all(&scratch)
            .with_context(|| format!("creating {}", scratch.display()))?;
        let seeds = workspace_root().join("fuzz/corpus").join(target);
        eprintln!("xtask: fuzzing {target} for {seconds} s");
        let result = run_cmd(
            cargo_fuzz()
                .args(["run", "--sanitizer", "none", "--target-dir"])
                .arg(&target_dir)
                .arg(target)
                .arg(&scratch)
                .arg(&seeds)
                .arg("--")
                .arg(format!("-max_total_time={seconds}"))
                // An input that takes seconds is a bug too (a hang reachable from input).
                .arg("-timeout=10")
                .arg("-print_final_stats=1"),
        );
        if let Err(err) = result {
            eprintln!("xtask: {err:#}");
            crashed.push(*target);
        }
    }
    eprintln!(
        "xtask: fuzzed {} targets in {:.0} s",
        targets.len(),
        started.elapsed().as_secs_f64()
    );
    if !crashed.is_empty() {
        bail!(
            "fuzz targets failed: {} (the input is in fuzz/artifacts/<target>/; reproduce with \
             `cargo +nightly fuzz run -s none <target> <input>`)",
            crashed.join(", ")
        );
    }
    Ok(())
}
