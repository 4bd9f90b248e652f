//! The agent as a child process whose log lines are collected (demo and benchmarks).

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

pub struct AgentProcess {
    child: Child,
    lines: mpsc::Receiver<String>,
    binary: std::path::PathBuf,
    config: std::path::PathBuf,
}

impl AgentProcess {
    /// Starts `imag-agent attach INTERFACES --config CONFIG EXTRA…` and waits until it is
    /// attached.
    pub fn start(
        binary: &Path,
        config: &Path,
        interfaces: &[&str],
        extra: &[&str],
    ) -> anyhow::Result<AgentProcess> {
        let mut child = Command::new(binary)
            .arg("attach")
            .args(interfaces)
            .arg("--config")
            .arg(config)
            .args(extra)
            .env("RUST_LOG", "info")
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let stderr = child.stderr.take().expect("piped");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut agent = AgentProcess {
            child,
            lines,
            binary: binary.to_path_buf(),
            config: config.to_path_buf(),
        };
        if let Err(err) = agent.wait_for_line("imag is attached", Duration::from_secs(120)) {
            agent.stop();
            return Err(err);
        }
        Ok(agent)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for a log line containing `needle` (lines before it are consumed).
    pub fn wait_for_line(&mut self, needle: &str, timeout: Duration) -> anyhow::Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return Ok(line),
                Ok(line) if line.contains("imag-agent:") => bail!("the agent failed: {line}"),
                Ok(_) => {}
                Err(_) => bail!("the agent did not log {needle:?} within {timeout:?}"),
            }
        }
    }

    /// Runs `imag-agent ARGS --config CONFIG` (a control command) and returns its stdout.
    pub fn command(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = Command::new(&self.binary)
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .output()?;
        if !out.status.success() {
            bail!(
                "imag-agent {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// SIGTERM, and waits for the exit.
    pub fn stop(&mut self) {
        // SAFETY: kill with a valid pid of our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.stop();
        }
    }
}
