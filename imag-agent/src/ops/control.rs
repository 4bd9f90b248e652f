//! The running agent's control socket, and the CLI side of it: `imag-agent status`, `wake`,
//! `sleep` and `detach` talk to the agent through a Unix socket only root can open
//! (`/run/imag/<network>.sock`, mode 0600), one JSON request and one JSON response per
//! connection.

use std::{
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::{UnixListener, UnixStream},
    sync::{mpsc, oneshot, watch},
};
use tracing::{debug, warn};

use crate::{
    orchestrator::Input,
    report::{Snapshot, StatusReport},
    runtime::Tier,
};

/// Where the agent of a network listens.
pub fn socket_path(network: &str) -> PathBuf {
    Path::new(SOCKET_DIR).join(format!("{network}.sock"))
}

/// Where every agent's control socket lives.
pub const SOCKET_DIR: &str = "/run/imag";

/// The running agents: the networks whose control socket accepts a connection, by name.
pub async fn running_agents() -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(SOCKET_DIR) else {
        return Vec::new();
    };
    let mut networks = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let Some(network) = path
            .extension()
            .filter(|e| *e == "sock")
            .and(path.file_stem())
            .and_then(|s| s.to_str())
        else {
            continue;
        };
        if UnixStream::connect(&path).await.is_ok() {
            networks.push(network.to_string());
        }
    }
    networks.sort();
    networks
}

/// Picks the one running agent when the command names none (no `--config`, no `--network`).
pub async fn the_running_agent() -> Result<String, ClientError> {
    let mut agents = running_agents().await;
    match agents.len() {
        1 => Ok(agents.remove(0)),
        0 => Err(ClientError::NoneRunning),
        _ => Err(ClientError::Several(agents)),
    }
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
    /// Boxed: a report is large next to the other answers.
    Status(Box<StatusReport>),
    Ok {
        message: String,
    },
    Error {
        message: String,
    },
}

/// What the control socket talks to: the orchestrator's inputs (commands), its published
/// snapshot (status), and the agent's detach signal.
#[derive(Clone)]
pub struct Handles {
    pub inputs: mpsc::Sender<Input>,
    pub snapshot: watch::Receiver<Snapshot>,
    /// Sent on when the operator asks the agent to detach and exit.
    pub detach: mpsc::Sender<()>,
}

/// Serves the control socket at `path`.
pub async fn serve(path: PathBuf, handles: Handles) -> std::io::Result<()> {
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
            let handles = handles.clone();
            tokio::spawn(async move {
                if let Err(err) = handle(stream, &handles).await {
                    debug!(error = %err, "control connection failed");
                }
            });
        }
    });
    Ok(())
}

async fn handle(stream: UnixStream, handles: &Handles) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    BufReader::new(read).read_line(&mut line).await?;
    let response = match parse_request(&line) {
        Err(err) => Response::Error {
            message: format!("bad request: {err}"),
        },
        Ok(request) => dispatch(request, handles).await,
    };
    let mut text = serde_json::to_string(&response).expect("responses serialize");
    text.push('\n');
    write.write_all(text.as_bytes()).await
}

/// Reads one request line as a client sent it (the trailing newline, if any, included).
pub fn parse_request(line: &str) -> Result<Request, serde_json::Error> {
    serde_json::from_str(line)
}

async fn dispatch(request: Request, handles: &Handles) -> Response {
    let inputs = &handles.inputs;
    match request {
        Request::Status => Response::Status(Box::new(handles.snapshot.borrow().status())),
        Request::Wake { host } => {
            let message = format!("waking {host}");
            ask(inputs, |reply| Input::Wake { host, reply }, message).await
        }
        Request::Sleep { host, tier } => {
            let message = format!("putting {host} to sleep");
            ask(
                inputs,
                |reply| Input::Sleep {
                    host,
                    to: tier,
                    reply,
                },
                message,
            )
            .await
        }
        Request::Detach => {
            if handles.detach.send(()).await.is_err() {
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
    #[error(
        "no imag agent is running (no live control socket in {SOCKET_DIR}): start one with \
         `imag-agent attach IFACE --config FILE`"
    )]
    NoneRunning,
    #[error(
        "{} agents are running (networks {}): name one with --network NAME or --config FILE",
        .0.len(),
        .0.join(", ")
    )]
    Several(Vec<String>),
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
}
