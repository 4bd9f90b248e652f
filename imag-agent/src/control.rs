//! The running agent's control socket, and the CLI side of it: `imag-agent status`, `wake`,
//! `sleep` and `detach` talk to the agent through a Unix socket only root can open
//! (`/run/imag/<network>.sock`, mode 0600), one JSON request and one JSON response per
//! connection.

use std::{
    fmt::Write as _,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::{UnixListener, UnixStream},
    sync::{mpsc, oneshot},
};
use tracing::{debug, warn};

use crate::{orchestrator::Input, runtime::Tier};

/// Where the agent of a network listens.
pub fn socket_path(network: &str) -> PathBuf {
    PathBuf::from(format!("/run/imag/{network}.sock"))
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Request {
    Status,
    Wake { host: String },
    Sleep { host: String, tier: Option<Tier> },
    Detach,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Response {
    Status(StatusReport),
    Ok { message: String },
    Error { message: String },
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    pub network: String,
    pub subnet: String,
    pub hosts: Vec<HostStatus>,
    pub held_packets: u64,
    pub delivered_packets: u64,
    pub refused_packets: u64,
    pub dropped_packets: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HostStatus {
    pub name: String,
    pub address: String,
    pub state: String,
    /// The tier a sleeping host is in (`absent`, `stopped`, `paused`).
    pub tier: Option<Tier>,
    pub container: String,
    /// End-to-end latency of the latest successful wake, in milliseconds.
    pub last_wake_ms: Option<f64>,
    pub last_wake_from: Option<String>,
    pub last_failure: Option<String>,
    /// Seconds since the last packet that counts for idleness (warm hosts).
    pub idle_for_s: Option<f64>,
    pub open_connections: u64,
    pub held_packets: usize,
}

/// Serves the control socket, forwarding requests to the orchestrator. `detach` is sent on
/// when the operator asks the agent to detach and exit.
pub async fn serve(
    path: PathBuf,
    inputs: mpsc::Sender<Input>,
    detach: mpsc::Sender<()>,
) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // A socket left by an agent that died: nobody listens on it any more.
    if path.exists() && UnixStream::connect(&path).await.is_err() {
        std::fs::remove_file(&path)?;
    }
    let listener = UnixListener::bind(&path).map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!(
                "cannot listen on {} ({e}): is another agent running for this network?",
                path.display()
            ),
        )
    })?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let inputs = inputs.clone();
            let detach = detach.clone();
            tokio::spawn(async move {
                if let Err(err) = handle(stream, inputs, detach).await {
                    debug!(error = %err, "control connection failed");
                }
            });
        }
    });
    Ok(())
}

async fn handle(
    stream: UnixStream,
    inputs: mpsc::Sender<Input>,
    detach: mpsc::Sender<()>,
) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    BufReader::new(read).read_line(&mut line).await?;
    let response = match serde_json::from_str::<Request>(&line) {
        Err(err) => Response::Error {
            message: format!("bad request: {err}"),
        },
        Ok(request) => dispatch(request, &inputs, &detach).await,
    };
    let mut text = serde_json::to_string(&response).expect("responses serialize");
    text.push('\n');
    write.write_all(text.as_bytes()).await
}

async fn dispatch(
    request: Request,
    inputs: &mpsc::Sender<Input>,
    detach: &mpsc::Sender<()>,
) -> Response {
    let gone = || Response::Error {
        message: "the agent is shutting down".into(),
    };
    match request {
        Request::Status => {
            let (reply, answer) = oneshot::channel();
            if inputs.send(Input::Status { reply }).await.is_err() {
                return gone();
            }
            answer
                .await
                .map(Response::Status)
                .unwrap_or_else(|_| gone())
        }
        Request::Wake { host } => {
            let message = format!("waking {host}");
            ask(inputs, |reply| Input::Wake { host, reply }, message).await
        }
        Request::Sleep { host, tier } => {
            let to = tier;
            let message = format!("putting {host} to sleep");
            ask(inputs, |reply| Input::Sleep { host, to, reply }, message).await
        }
        Request::Detach => {
            if detach.send(()).await.is_err() {
                warn!("detach requested while already shutting down");
            }
            Response::Ok {
                message: "detaching: the agent removes everything it installed and exits".into(),
            }
        }
    }
}

/// Sends the orchestrator an input that answers Ok or an error message, and turns the answer
/// into a response.
async fn ask(
    inputs: &mpsc::Sender<Input>,
    input: impl FnOnce(oneshot::Sender<Result<(), String>>) -> Input,
    ok_message: String,
) -> Response {
    let gone = || Response::Error {
        message: "the agent is shutting down".into(),
    };
    let (reply, answer) = oneshot::channel();
    if inputs.send(input(reply)).await.is_err() {
        return gone();
    }
    match answer.await {
        Ok(Ok(())) => Response::Ok {
            message: ok_message,
        },
        Ok(Err(message)) => Response::Error { message },
        Err(_) => gone(),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "no agent is running for this network (nothing listens on {0}): start one with `imag-agent attach`"
    )]
    NoAgent(String),
    #[error("permission denied on {0}: the control socket is root-only; run this with sudo")]
    Permission(String),
    #[error("talking to the agent on {path} failed: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the agent's answer could not be read: {0}")]
    Protocol(String),
}

/// Sends one request to the agent listening on `path` and returns its response.
pub async fn request(path: &Path, request: &Request) -> Result<Response, ClientError> {
    let display = path.display().to_string();
    let stream = UnixStream::connect(path)
        .await
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
                ClientError::NoAgent(display.clone())
            }
            std::io::ErrorKind::PermissionDenied => ClientError::Permission(display.clone()),
            _ => ClientError::Io {
                path: display.clone(),
                source: e,
            },
        })?;
    let io = |source| ClientError::Io {
        path: display.clone(),
        source,
    };
    let (read, mut write) = stream.into_split();
    let mut text = serde_json::to_string(request).expect("requests serialize");
    text.push('\n');
    write.write_all(text.as_bytes()).await.map_err(io)?;
    let mut line = String::new();
    BufReader::new(read)
        .read_line(&mut line)
        .await
        .map_err(io)?;
    serde_json::from_str(&line).map_err(|e| ClientError::Protocol(e.to_string()))
}

/// The status as a table, as `imag-agent status` prints it.
pub fn render_table(report: &StatusReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "network {} ({}): held {}, delivered {}, refused {}, dropped {}",
        report.network,
        report.subnet,
        report.held_packets,
        report.delivered_packets,
        report.refused_packets,
        report.dropped_packets
    );
    let rows: Vec<[String; 8]> = std::iter::once(
        [
            "HOST",
            "ADDRESS",
            "STATE",
            "CONTAINER",
            "LAST WAKE",
            "IDLE FOR",
            "CONNS",
            "HELD",
        ]
        .map(String::from),
    )
    .chain(report.hosts.iter().map(|h| {
        let state = match &h.tier {
            Some(tier) => format!("{} ({tier})", h.state),
            None => h.state.clone(),
        };
        let last_wake = match (&h.last_failure, h.last_wake_ms, &h.last_wake_from) {
            (Some(failure), _, _) => {
                format!("failed: {}", failure.split(':').next().unwrap_or(failure))
            }
            (None, Some(ms), Some(from)) => format!("{ms:.1} ms from {from}"),
            _ => "-".into(),
        };
        [
            h.name.clone(),
            h.address.clone(),
            state,
            h.container.clone(),
            last_wake,
            h.idle_for_s.map_or("-".into(), |s| format!("{s:.1}s")),
            h.open_connections.to_string(),
            h.held_packets.to_string(),
        ]
    }))
    .collect();
    let widths: Vec<usize> = (0..8)
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_responses_round_trip_as_json() {
        let request = Request::Sleep {
            host: "web".into(),
            tier: Some(Tier::Paused),
        };
        let text = serde_json::to_string(&request).unwrap();
        assert_eq!(text, r#"{"command":"sleep","host":"web","tier":"paused"}"#);
        assert_eq!(serde_json::from_str::<Request>(&text).unwrap(), request);
        let response = Response::Error {
            message: "no".into(),
        };
        let text = serde_json::to_string(&response).unwrap();
        assert_eq!(serde_json::from_str::<Response>(&text).unwrap(), response);
    }

    #[test]
    fn the_table_has_a_row_per_host() {
        let report = StatusReport {
            network: "imag".into(),
            subnet: "10.77.0.0/24".into(),
            hosts: vec![
                HostStatus {
                    name: "web".into(),
                    address: "10.77.0.10".into(),
                    state: "warm".into(),
                    container: "imag-web".into(),
                    last_wake_ms: Some(272.34),
                    last_wake_from: Some("absent".into()),
                    idle_for_s: Some(3.21),
                    ..Default::default()
                },
                HostStatus {
                    name: "db".into(),
                    address: "10.77.0.11".into(),
                    state: "asleep".into(),
                    tier: Some(Tier::Paused),
                    container: "imag-db".into(),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let table = render_table(&report);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 4);
        assert!(lines[1].starts_with("HOST"));
        assert!(
            lines[2].contains("web")
                && lines[2].contains("272.3 ms from absent")
                && lines[2].contains("3.2s")
        );
        assert!(lines[3].contains("asleep (paused)"));
    }
}
