//! `cargo xtask …`: set-up, tests, demo and benchmarks for imag.
//!
//! The xtask orchestrates; it does not duplicate the build (the agent's build script builds the
//! eBPF object). Every command first brings what it needs ([`setup`]) and checks the machine
//! ([`preflight`]), stopping with one sentence naming the cause and the fix.

mod bench;
mod demo;
mod fuzz;
mod image;
mod preflight;
mod setup;

use std::process::{Command, ExitCode};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what building imag needs: the nightly rust-src component and bpf-linker.
    Setup,
    /// Build the example image (imag-example/hello) from examples/hello.
    Image,
    /// Run every test: unit tests, the privileged integration tests (root, Docker), then a short
    /// run of every fuzz target (fuzz/).
    Test {
        /// How long each fuzz target runs after the tests, in seconds (0: no fuzzing).
        #[arg(long, default_value_t = 15)]
        fuzz_seconds: u32,
        /// Extra arguments for `cargo test` (after `--`), e.g. a test name filter.
        #[arg(trailing_var_arg = true)]
        args: Vec<String>,
    },
    /// Run every fuzz target (fuzz/) for a bounded time, as the end of `test` does; fails on a crash.
    Fuzz {
        /// How long each target runs, in seconds.
        #[arg(long, default_value_t = 15)]
        seconds: u32,
    },
    /// Wake a cold host from a client namespace and print the answer and the wake latency.
    Demo,
    /// Measure wakes, the warm path and scale against their baselines; writes bench/results.*
    /// (and the trace benchmark, bench/trace.*; `cargo xtask bench trace` runs it alone).
    Bench(bench::BenchOptions),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Task::Setup => setup::run(),
        Task::Image => setup::run().and_then(|()| image::build()),
        Task::Test { fuzz_seconds, args } => test(fuzz_seconds, &args),
        Task::Fuzz { seconds } => setup::run().and_then(|()| fuzz::smoke(seconds)),
        Task::Demo => demo::run(),
        Task::Bench(opts) => bench::run(&opts),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn test(fuzz_seconds: u32, args: &[String]) -> anyhow::Result<()> {
    setup::run()?;
    preflight::require_privileges("cargo xtask test")?;
    preflight::ensure_swap(2)?;
    image::build()?;
    // Integration tests wake real containers and count TCP retransmissions; running them one at a
    // time keeps a shared 2-core machine from stretching a wake past TCP's 1 s SYN timeout.
    let mut cmd = Command::new(env!("CARGO"));
    cmd.current_dir(workspace_root())
        .args(["test", "--workspace", "--all-targets", "--no-fail-fast"])
        .arg("--")
        .arg("--test-threads=1")
        .args(args);
    let tests = run_cmd(&mut cmd);
    // The fuzz smoke run comes after the tests, and runs whatever they said.
    let fuzzing = if fuzz_seconds == 0 {
        Ok(())
    } else {
        fuzz::smoke(fuzz_seconds)
    };
    match (tests, fuzzing) {
        (Ok(()), Ok(())) => Ok(()),
        (Err(err), Ok(())) | (Ok(()), Err(err)) => Err(err),
        (Err(tests), Err(fuzzing)) => bail!("{tests:#}\nand {fuzzing:#}"),
    }
}

/// What running the agent for real needs, in order: the toolchain, privileges and a Docker
/// engine, the example image, and a release build of the agent. Returns the agent binary.
pub fn prepare_agent(what: &str) -> anyhow::Result<std::path::PathBuf> {
    setup::run()?;
    preflight::require_privileges(what)?;
    image::build()?;
    let root = workspace_root();
    run_cmd(Command::new(env!("CARGO")).current_dir(&root).args([
        "build",
        "--release",
        "--quiet",
        "-p",
        "imag-agent",
    ]))?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| root.join("target"), std::path::PathBuf::from);
    Ok(target.join("release/imag-agent"))
}

/// The workspace's root directory (the xtask lives one level below it).
pub fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives inside the workspace")
        .to_path_buf()
}

/// Runs a command, inheriting stdio; fails with the command line if it fails.
pub fn run_cmd(cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("could not run {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed ({status})");
    }
    Ok(())
}

/// Runs a command and returns its trimmed stdout if it succeeded.
pub fn cmd_output(cmd: &mut Command) -> Option<String> {
    let out = cmd.output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}
