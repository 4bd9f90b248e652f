//! The running agent's control socket, and the CLI side of it: `imag-agent status`, `wake`,
//! `sleep` and `detach` talk to the agent through a Unix socket only root can open
//! (`/run/imag/<network>.sock`, mode 0600), one JSON request and one JSON response per
//! connection.
//!
//! Nothing a client does can make the agent grow or stall: a request line is at most
//! [`MAX_REQUEST`] bytes and must arrive within [`REQUEST_TIMEOUT`]; at most [`MAX_WAITING`]
//! connections may wait for their request (a new one closes the oldest waiting one, so idle
//! clients never keep `status` out) and at most [`MAX_SERVING`] be answered at once; accept errors
//! (EMFILE) back off instead of spinning; the socket is bound in a private directory and moved
//! into place with its final mode; and only root or the agent's own user (`SO_PEERCRED`) is served.
//! The client gives up after [`CLIENT_TIMEOUT`] with a message naming the socket.

use std::{
    collections::VecDeque,
    os::unix::fs::{DirBuilderExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt as _, AsyncWriteExt, BufReader},
    net::{UnixListener, UnixStream},
    sync::{Semaphore, mpsc, oneshot, watch},
    task::AbortHandle,
};
use tracing::{debug, warn};

use crate::{
    orchestrator::Input,
    report::{Snapshot, StatusReport},
    runtime::Tier,
};

/// Longest request line the agent reads (requests are a few dozen bytes).
pub const MAX_REQUEST: usize = 64 << 10;
/// How long a connection may take to send its request line (and to take its answer).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections that may wait for their request line at once; a new one closes the oldest.
pub const MAX_WAITING: usize = 64;
/// Requests answered at once; one more is answered "busy" at once.
pub const MAX_SERVING: usize = 64;
/// Longest the agent waits for the orchestrator to take a command.
const DISPATCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Back-off after a failed accept (EMFILE, ENFILE, ENOMEM …): doubles up to the maximum.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// How long the CLI waits to connect and for the whole answer.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

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
        if connect(&path).await.is_ok() {
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
    let listener = bind(&path).await?;
    tokio::spawn(accept_loop(listener, handles));
    Ok(())
}

/// Binds the socket at `path` with mode 0600 from its first moment: it is bound inside a fresh
/// 0700 directory next to `path` (where nobody else can reach it), given its mode there, and
/// renamed into place.
async fn bind(path: &Path) -> std::io::Result<UnixListener> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    // A socket left by an agent that died: nobody listens on it any more.
    if path.exists() {
        if connect(path).await.is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!(
                    "cannot listen on {}: another agent is running for this network",
                    path.display()
                ),
            ));
        }
        std::fs::remove_file(path)?;
    }
    let private = dir.join(format!(".bind-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&private);
    std::fs::DirBuilder::new().mode(0o700).create(&private)?;
    let staged = private.join("control.sock");
    let bound = UnixListener::bind(&staged).and_then(|listener| {
        std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o600))?;
        std::fs::rename(&staged, path)?;
        Ok(listener)
    });
    let _ = std::fs::remove_dir_all(&private);
    bound.map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("cannot listen on {} ({e})", path.display()),
        )
    })
}

/// The connections still waiting for their request line, oldest first.
#[derive(Default)]
struct Waiting {
    next_id: u64,
    connections: VecDeque<(u64, AbortHandle)>,
}

async fn accept_loop(listener: UnixListener, handles: Handles) {
    let waiting = Arc::new(Mutex::new(Waiting::default()));
    let serving = Arc::new(Semaphore::new(MAX_SERVING));
    let mut backoff = ACCEPT_BACKOFF;
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => {
                backoff = ACCEPT_BACKOFF;
                stream
            }
            Err(err) => {
                // EMFILE and friends stay until something is closed: retrying at once would spin.
                warn!(error = %err, retry_in_ms = backoff.as_millis(), "control socket accept failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                continue;
            }
        };
        let handles = handles.clone();
        let serving = Arc::clone(&serving);
        let registry = Arc::clone(&waiting);
        let mut list = waiting.lock().expect("not poisoned");
        let id = list.next_id;
        list.next_id += 1;
        if list.connections.len() >= MAX_WAITING
            && let Some((_, oldest)) = list.connections.pop_front()
        {
            debug!("control socket: closing the oldest connection still waiting for its request");
            oldest.abort();
        }
        let task = tokio::spawn(async move {
            if let Err(err) = handle(stream, &handles, &serving, || {
                let mut list = registry.lock().expect("not poisoned");
                list.connections.retain(|(other, _)| *other != id);
            })
            .await
            {
                debug!(error = %err, "control connection failed");
            }
        });
        list.connections.push_back((id, task.abort_handle()));
    }
}

/// Whether a peer of user `uid` may control an agent run by `owner`: root, or the same user.
fn may_control(uid: u32, owner: u32) -> bool {
    uid == 0 || uid == owner
}

/// Why a connection is not served.
fn refusal(stream: &UnixStream) -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    let owner = unsafe { libc::geteuid() };
    match stream.peer_cred() {
        Ok(cred) if may_control(cred.uid(), owner) => None,
        Ok(cred) => Some(format!(
            "permission denied: uid {} may not control this agent (only root or uid {owner}, \
             which runs it); run the command as root",
            cred.uid()
        )),
        Err(err) => Some(format!("cannot tell who is asking ({err}); refused")),
    }
}

/// Reads one request line of at most [`MAX_REQUEST`] bytes within [`REQUEST_TIMEOUT`].
async fn read_request(
    read: impl tokio::io::AsyncRead + Unpin,
) -> Result<Result<Request, String>, std::io::Error> {
    let mut line = Vec::new();
    let limit = u64::try_from(MAX_REQUEST).unwrap_or(u64::MAX) + 1;
    let mut reader = BufReader::new(read.take(limit));
    match tokio::time::timeout(REQUEST_TIMEOUT, reader.read_until(b'\n', &mut line)).await {
        Err(_) => Ok(Err(format!(
            "no request within {}s: send one JSON line right after connecting",
            REQUEST_TIMEOUT.as_secs()
        ))),
        Ok(Err(err)) => Err(err),
        Ok(Ok(_)) if line.len() > MAX_REQUEST => Ok(Err(format!(
            "request longer than {MAX_REQUEST} bytes: a request is one short JSON line"
        ))),
        Ok(Ok(_)) => {
            Ok(serde_json::from_slice::<Request>(&line)
                .map_err(|err| format!("bad request: {err}")))
        }
    }
}

/// Serves one connection; `read_done` is called once its request was read (or could not be),
/// when it stops counting as waiting.
async fn handle(
    stream: UnixStream,
    handles: &Handles,
    serving: &Semaphore,
    read_done: impl FnOnce(),
) -> std::io::Result<()> {
    let refused = refusal(&stream);
    let (read, mut write) = stream.into_split();
    let request = match refused {
        Some(message) => Ok(Err(message)),
        None => read_request(read).await,
    };
    read_done();
    let request = request?;
    let response = match request {
        Err(message) => Response::Error { message },
        Ok(request) => match serving.try_acquire() {
            Err(_) => Response::Error {
                message: format!("the agent is busy ({MAX_SERVING} requests under way): try again"),
            },
            Ok(_permit) => tokio::time::timeout(DISPATCH_TIMEOUT, dispatch(request, handles))
                .await
                .unwrap_or_else(|_| Response::Error {
                    message: format!(
                        "the agent did not take the command within {}s",
                        DISPATCH_TIMEOUT.as_secs()
                    ),
                }),
        },
    };
    let mut text = serde_json::to_string(&response).expect("responses serialize");
    text.push('\n');
    tokio::time::timeout(REQUEST_TIMEOUT, write.write_all(text.as_bytes()))
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?
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
        "the agent on {0} did not answer within {secs}s: it may be overloaded or stuck; check \
         its log (and `ps`), or restart it with `imag-agent attach`",
        secs = CLIENT_TIMEOUT.as_secs()
    )]
    Timeout(String),
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

/// Connects to the socket at `path`, giving up after [`CLIENT_TIMEOUT`].
async fn connect(path: &Path) -> std::io::Result<UnixStream> {
    tokio::time::timeout(CLIENT_TIMEOUT, UnixStream::connect(path))
        .await
        .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
}

/// Sends one request to the agent listening on `path` and returns its response.
pub async fn request(path: &Path, request: &Request) -> Result<Response, ClientError> {
    let display = path.display().to_string();
    let stream = connect(path).await.map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
            ClientError::NoAgent(display.clone())
        }
        std::io::ErrorKind::PermissionDenied => ClientError::Permission(display.clone()),
        std::io::ErrorKind::TimedOut => ClientError::Timeout(display.clone()),
        _ => ClientError::Io {
            path: display.clone(),
            source: e,
        },
    })?;
    let exchange = async {
        let (read, mut write) = stream.into_split();
        let mut text = serde_json::to_string(request).expect("requests serialize");
        text.push('\n');
        write.write_all(text.as_bytes()).await?;
        let mut line = String::new();
        // Answers are small; a peer that streams without end is not the agent.
        BufReader::new(read.take(64 << 20))
            .read_line(&mut line)
            .await?;
        Ok::<_, std::io::Error>(line)
    };
    let line = tokio::time::timeout(CLIENT_TIMEOUT, exchange)
        .await
        .map_err(|_| ClientError::Timeout(display.clone()))?
        .map_err(|source| ClientError::Io {
            path: display.clone(),
            source,
        })?;
    serde_json::from_str(&line).map_err(|e| ClientError::Protocol(e.to_string()))
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt as _;

    use super::*;

    /// A control socket in a fresh directory, served with an empty snapshot.
    async fn served(name: &str) -> (PathBuf, mpsc::Receiver<Input>) {
        let dir = std::env::temp_dir().join(format!("imag-control-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("t.sock");
        let (inputs, inputs_rx) = mpsc::channel(4);
        let (_snapshot_tx, snapshot) = watch::channel(Snapshot::default());
        let (detach, _) = mpsc::channel(1);
        serve(
            path.clone(),
            Handles {
                inputs,
                snapshot,
                detach,
            },
        )
        .await
        .unwrap();
        (path, inputs_rx)
    }

    async fn status_answers(path: &Path) {
        match request(path, &Request::Status).await {
            Ok(Response::Status(_)) => {}
            other => panic!("expected a status report, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn the_socket_has_its_mode_from_the_start_and_no_staging_is_left() {
        let (path, _inputs) = served("mode").await;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let left: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, vec![std::ffi::OsString::from("t.sock")]);
        status_answers(&path).await;
        let again = bind(&path)
            .await
            .expect_err("a live agent's socket is not taken over");
        assert!(
            again.to_string().contains("another agent is running"),
            "{again}"
        );
    }

    #[tokio::test]
    async fn an_oversized_request_is_answered_and_closed_and_status_still_works() {
        let (path, _inputs) = served("oversized").await;
        let mut stream = UnixStream::connect(&path).await.unwrap();
        let chunk = vec![b'x'; 8192];
        let mut sent = 0;
        // The agent stops reading after MAX_REQUEST bytes: the writes may then fail.
        while sent <= MAX_REQUEST + 8192 {
            if stream.write_all(&chunk).await.is_err() {
                break;
            }
            sent += chunk.len();
        }
        // The agent closes with the rest unread, so the read ends in a reset after the answer.
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer).await;
        let answer = String::from_utf8_lossy(&answer);
        assert!(
            answer.contains("request longer than 65536 bytes"),
            "expected a refusal of the oversized request, got {answer:?}"
        );
        status_answers(&path).await;
    }

    #[tokio::test]
    async fn idle_connections_beyond_the_cap_close_the_oldest_and_never_keep_status_out() {
        let (path, _inputs) = served("idle").await;
        let mut idle = Vec::new();
        for _ in 0..MAX_WAITING * 3 {
            idle.push(UnixStream::connect(&path).await.unwrap());
        }
        status_answers(&path).await;
        // The oldest idle connection was closed by the agent: reading it ends at once.
        let mut buf = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(2), idle[0].read(&mut buf))
            .await
            .expect("the oldest idle connection should have been closed");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_client_is_answered_after_the_request_timeout() {
        let (_client, server) = tokio::io::duplex(64);
        let got = read_request(server).await.unwrap();
        assert!(
            got.as_ref()
                .is_err_and(|m| m.starts_with("no request within 5s")),
            "{got:?}"
        );
    }

    #[tokio::test]
    async fn a_request_of_exactly_the_limit_is_read() {
        let mut text = serde_json::to_string(&Request::Status).unwrap();
        text.push_str(&" ".repeat(MAX_REQUEST - text.len() - 1));
        text.push('\n');
        assert_eq!(text.len(), MAX_REQUEST);
        let got = read_request(text.as_bytes()).await.unwrap();
        assert_eq!(got, Ok(Request::Status));
        let longer = format!(" {text}");
        let got = read_request(longer.as_bytes()).await.unwrap();
        assert!(got.is_err_and(|m| m.starts_with("request longer than")));
    }

    #[test]
    fn only_root_and_the_agents_user_may_control_it() {
        assert!(may_control(0, 0));
        assert!(may_control(0, 1000));
        assert!(may_control(1000, 1000));
        assert!(!may_control(1000, 0));
        assert!(!may_control(1001, 1000));
    }

    #[test]
    fn the_longest_network_name_fits_a_socket_path() {
        let longest = socket_path(&"n".repeat(crate::config::MAX_NETWORK_NAME));
        assert_eq!(
            longest.as_os_str().len(),
            107,
            "sun_path holds 107 bytes and a NUL"
        );
        assert!(std::os::unix::net::SocketAddr::from_pathname(&longest).is_ok());
        let longer = socket_path(&"n".repeat(crate::config::MAX_NETWORK_NAME + 1));
        assert!(std::os::unix::net::SocketAddr::from_pathname(&longer).is_err());
    }

    #[tokio::test]
    async fn the_client_names_the_socket_when_no_agent_listens() {
        let path = std::env::temp_dir().join("imag-control-nobody.sock");
        let err = request(&path, &Request::Status).await.unwrap_err();
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );
    }

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
