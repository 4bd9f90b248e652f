//! `imag-agent`: makes configured imaginary hosts look always up, and runs them only while used.

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use imag_agent::{agent, config::Config, datapath::XdpModeChoice};
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
        } => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|rt| {
                rt.block_on(agent::attach(agent::AttachOptions {
                    interfaces,
                    config,
                    xdp_mode,
                }))
            }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("imag-agent: {err:#}");
            ExitCode::FAILURE
        }
    }
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
