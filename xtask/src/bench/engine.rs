//! The engine's own floor: Docker API calls timed directly on its Unix socket (no CLI process in
//! the measurement), for the baselines that imag's wakes are compared with.

use std::{
    io::{Read, Write},
    os::unix::net::UnixStream,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

const SOCKET: &str = "/var/run/docker.sock";

/// The name of a host's container, as the agent names it (`imag_agent::runtime::container_name`:
/// `<network>--<host>`).
pub fn container_name(network: &str, host: &str) -> String {
    format!("{network}--{host}")
}

/// `POST /containers/<name>/<action>` (start, stop, pause, unpause); returns how long the engine
/// took to answer.
pub fn container_action(name: &str, action: &str) -> anyhow::Result<Duration> {
    let mut stream =
        UnixStream::connect(SOCKET).with_context(|| format!("connecting to {SOCKET}"))?;
    let start = Instant::now();
    write!(
        stream,
        "POST /containers/{name}/{action} HTTP/1.1\r\nHost: docker\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let took = start.elapsed();
    let status = response.split_whitespace().nth(1).unwrap_or("?");
    if !matches!(status, "204" | "304") {
        bail!(
            "docker {action} {name}: HTTP {status}: {}",
            response.lines().last().unwrap_or("")
        );
    }
    Ok(took)
}

/// The container's state as the engine reports it (`running`, `paused`, `exited`, …).
pub fn container_state(name: &str) -> anyhow::Result<String> {
    let mut stream = UnixStream::connect(SOCKET)?;
    write!(
        stream,
        "GET /containers/{name}/json HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    // The body may be chunked; the state object is small enough to find by its key.
    let state = body
        .split("\"Status\":\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .context("no state in the engine's answer")?;
    Ok(state.to_string())
}

/// Waits until the container is in `state`.
pub fn wait_for_state(name: &str, state: &str, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if container_state(name).is_ok_and(|s| s == state) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{name} did not become {state} within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One request on the engine's socket; its status code and body (de-chunked).
pub fn request(method: &str, path: &str, body: Option<&str>) -> anyhow::Result<(u16, String)> {
    let mut stream =
        UnixStream::connect(SOCKET).with_context(|| format!("connecting to {SOCKET}"))?;
    let body = body.unwrap_or("");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: docker\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("{method} {path}: no status in the engine's answer"))?;
    let (head, raw) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut out = String::new();
        let mut rest = raw;
        while let Some((size, after)) = rest.split_once("\r\n") {
            let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            if size == 0 || after.len() < size {
                break;
            }
            out.push_str(&after[..size]);
            rest = after[size..].trim_start_matches("\r\n");
        }
        out
    } else {
        raw.to_string()
    };
    Ok((status, body))
}
