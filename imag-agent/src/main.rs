//! `imag-agent`: makes configured imaginary hosts look always up, and runs them only while used.

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use imag_agent::{
    agent::{self, OnExit},
    config::Config,
    datapath::XdpModeChoice,
};
use tracing_subscriber::EnvFilter;

const DEFAULT_CONFIG: &str = "/etc/imag/imag.toml";

#[derive(Parser)]
#[command(
    name = "imag-agent",
    version,
    about = "Imaginary hosts: woken by their first packet, asleep when unused"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Attach to interfaces and serve the configured hosts until SIGINT/SIGTERM.
    Attach {
        /// Interfaces that clients' packets arrive on (e.g. eth0).
        #[arg(required = true, value_name = "IFACE")]
        interfaces: Vec<String>,
        #[arg(long, short, default_value = DEFAULT_CONFIG, env = "IMAG_CONFIG")]
        config: PathBuf,
        /// How to attach XDP.
        #[arg(long, value_enum, default_value_t = XdpModeChoice::Auto)]
        xdp_mode: XdpModeChoice,
        /// What SIGINT/SIGTERM leave behind.
        #[arg(long, value_enum, default_value_t = OnExit::Detach)]
        on_exit: OnExit,
    },
    /// Remove everything imag installed for a configuration: programs, pins, firewall rules,
    /// containers and the Docker network.
    Detach {
        #[arg(long, short, default_value = DEFAULT_CONFIG, env = "IMAG_CONFIG")]
        config: PathBuf,
        /// Stop the containers instead of removing them (the network stays for them).
        #[arg(long)]
        keep_containers: bool,
    },
    /// Check a configuration file and report every problem with its line and column.
    Validate {
        #[arg(long, short, default_value = DEFAULT_CONFIG, env = "IMAG_CONFIG")]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let result = match cli.command {
        Command::Validate { config } => validate(&config),
        Command::Attach {
            interfaces,
            config,
            xdp_mode,
            on_exit,
        } => block_on(agent::attach(agent::AttachOptions {
            interfaces,
            config,
            xdp_mode,
            on_exit,
        })),
        Command::Detach {
            config,
            keep_containers,
        } => Config::load(&config)
            .map_err(anyhow::Error::from)
            .and_then(|config| block_on(agent::detach(&config, keep_containers))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("imag-agent: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn block_on(future: impl std::future::Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(future)
}

fn validate(path: &std::path::Path) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    println!(
        "{}: ok ({} host{} in {})",
        path.display(),
        config.hosts.len(),
        if config.hosts.len() == 1 { "" } else { "s" },
        config.network.subnet
    );
    Ok(())
}
