//! `imag-agent`: makes configured imaginary hosts look always up, and runs them only while used.

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use imag_agent::{
    agent::{self, OnExit},
    config::{self, Config},
    datapath::HookChoice,
    ops::{
        control::{self, ClientError, Request, Response},
        table,
    },
    runtime::Tier,
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
        #[command(flatten)]
        file: ConfigFile,
        /// How to hook the holding program into the interfaces: XDP native on NICs and TC on
        /// virtual interfaces (auto), or one for all.
        #[arg(long, value_enum, default_value_t = HookChoice::Auto)]
        hook: HookChoice,
        /// What SIGINT/SIGTERM leave behind.
        #[arg(long, value_enum, default_value_t = OnExit::Detach)]
        on_exit: OnExit,
        /// Where to serve Prometheus metrics ("off" to turn them off); overrides [agent] metrics.
        #[arg(long, value_name = "ADDR|off")]
        metrics: Option<String>,
    },
    /// Show every host of the running agent: state, container, last wake, idleness, held packets.
    Status {
        #[command(flatten)]
        target: Target,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Wake a host now, as its first packet would.
    Wake {
        host: String,
        #[command(flatten)]
        target: Target,
    },
    /// Put a host to sleep now (in its configured tier, or --tier pause|stop|remove).
    Sleep {
        host: String,
        #[arg(long)]
        tier: Option<Tier>,
        #[command(flatten)]
        target: Target,
    },
    /// Remove everything imag installed for a configuration: programs, pins, firewall rules,
    /// containers and the Docker network (through the running agent, if there is one).
    Detach {
        #[command(flatten)]
        target: Target,
        /// Stop the containers instead of removing them (the network stays for them).
        #[arg(long)]
        keep_containers: bool,
    },
    /// Check a configuration file and report every problem with its line and column.
    Validate {
        #[command(flatten)]
        file: ConfigFile,
    },
}

/// The configuration: imag's TOML (`--config`) or a compose file (`--compose`).
#[derive(clap::Args)]
struct ConfigFile {
    #[arg(long, short, default_value = DEFAULT_CONFIG, env = "IMAG_CONFIG")]
    config: PathBuf,
    /// A compose file as the configuration: each service becomes a host (imag's own settings
    /// under `x-imag`). Takes precedence over `--config` (and `IMAG_CONFIG`).
    #[arg(long, value_name = "FILE")]
    compose: Option<PathBuf>,
}

impl ConfigFile {
    fn path_and_format(self) -> (PathBuf, config::Format) {
        if let Some(path) = self.compose {
            (path, config::Format::Compose)
        } else {
            // A `.yml`/`.yaml` file given as --config is a compose file too.
            let format = config::Format::of(&self.config);
            (self.config, format)
        }
    }
}

/// Which running agent a command talks to. Without either option: the one agent running (its
/// control socket in /run/imag), or an error listing them when there are several.
#[derive(clap::Args)]
struct Target {
    /// The agent's configuration file.
    #[arg(long, short, env = "IMAG_CONFIG")]
    config: Option<PathBuf>,
    /// The agent's network name (`[network] name`), instead of its configuration file.
    #[arg(long, conflicts_with = "config")]
    network: Option<String>,
}

impl Target {
    /// The network whose agent to talk to, and its configuration when one was named.
    async fn resolve(&self) -> anyhow::Result<(String, Option<Config>)> {
        if let Some(path) = &self.config {
            let config = Config::load_as(path, config::Format::of(path))?;
            return Ok((config.network.name.clone(), Some(config)));
        }
        if let Some(network) = &self.network {
            return Ok((network.clone(), None));
        }
        Ok((control::the_running_agent().await?, None))
    }
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
        Command::Validate { file } => {
            let (path, format) = file.path_and_format();
            validate(&path, format)
        }
        Command::Attach {
            interfaces,
            file,
            hook,
            on_exit,
            metrics,
        } => metrics
            .as_deref()
            .map(config::parse_metrics_address)
            .transpose()
            .map_err(anyhow::Error::msg)
            .and_then(|metrics| {
                let (config, format) = file.path_and_format();
                block_on(agent::attach(agent::AttachOptions {
                    interfaces,
                    config,
                    format,
                    hook,
                    on_exit,
                    metrics,
                }))
            }),
        Command::Status { target, json } => control_request(&target, &Request::Status, json),
        Command::Wake { host, target } => control_request(&target, &Request::Wake { host }, false),
        Command::Sleep { host, tier, target } => {
            control_request(&target, &Request::Sleep { host, tier }, false)
        }
        Command::Detach {
            target,
            keep_containers,
        } => block_on(detach(target, keep_containers)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("imag-agent: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Sends one request to the running agent and prints the answer.
fn control_request(target: &Target, request: &Request, json: bool) -> anyhow::Result<()> {
    let response = block_on(async {
        let (network, _) = target.resolve().await?;
        Ok(control::request(&control::socket_path(&network), request).await?)
    })?;
    match response {
        Response::Status(report) if json => {
            println!("{}", serde_json::to_string_pretty(&report)?);
        }
        Response::Status(report) => print!("{}", table::render_table(&report)),
        Response::Ok { message } => println!("{message}"),
        Response::Error { message } => anyhow::bail!("{message}"),
    }
    Ok(())
}

/// `detach`: through the running agent if there is one, else directly (which needs the
/// configuration, for the containers of its hosts).
async fn detach(target: Target, keep_containers: bool) -> anyhow::Result<()> {
    let (network, config) = match target.resolve().await {
        Ok(found) => found,
        Err(err) => match err.downcast_ref::<ClientError>() {
            Some(ClientError::NoneRunning) => anyhow::bail!(
                "no imag agent is running; to remove what an earlier agent left behind, name its \
                 configuration: imag-agent detach --config FILE"
            ),
            _ => return Err(err),
        },
    };
    let socket = control::socket_path(&network);
    // The running agent knows the file it was started with.
    let config = match config {
        Some(config) => config,
        None => match control::request(&socket, &Request::Status).await {
            Ok(Response::Status(report)) => match report.config {
                Some(path) => {
                    let path = std::path::Path::new(&path);
                    Config::load_as(path, config::Format::of(path))?
                }
                None => anyhow::bail!(
                    "the agent of network {network} did not say its configuration: name it with \
                     --config FILE"
                ),
            },
            Err(ClientError::NoAgent(_)) => anyhow::bail!(
                "no agent is running for network {network}; to remove what it left behind, name \
                 its configuration: imag-agent detach --config FILE"
            ),
            Ok(other) => anyhow::bail!("unexpected answer from the agent: {other:?}"),
            Err(err) => return Err(err.into()),
        },
    };
    match control::request(&socket, &Request::Detach).await {
        Ok(Response::Ok { message }) => {
            println!("{message}");
            // Wait for the agent to finish (its socket goes away last).
            for _ in 0..600 {
                if !socket.exists() {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            if keep_containers {
                return Ok(());
            }
            agent::detach(&config, keep_containers).await
        }
        Ok(other) => anyhow::bail!("the agent refused to detach: {other:?}"),
        Err(ClientError::NoAgent(_)) => agent::detach(&config, keep_containers).await,
        Err(err) => Err(err.into()),
    }
}

fn block_on<T>(future: impl std::future::Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(future)
}

fn validate(path: &std::path::Path, format: config::Format) -> anyhow::Result<()> {
    let config = Config::load_as(path, format)?;
    for warning in &config.warnings {
        println!(
            "{}:{}:{}: warning: {}",
            path.display(),
            warning.line,
            warning.column,
            warning.message
        );
    }
    println!(
        "{}: ok ({} host{} in {})",
        path.display(),
        config.hosts.len(),
        if config.hosts.len() == 1 { "" } else { "s" },
        config.network.subnet
    );
    Ok(())
}
