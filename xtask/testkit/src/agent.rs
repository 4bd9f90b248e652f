//! The real agent as a child process: the one harness the integration tests, the demo and the
//! benchmarks start `imag-agent attach` with. Its log is collected (tests print it when they
//! fail; the demo and benchmarks read their phase timings from it), and it is driven and
//! observed through its own CLI (`status --json`, `wake`, `sleep`, `detach`), as an operator
//! would. Dropping it stops the process with SIGTERM.

use std::{
    fmt,
    io::{BufRead as _, BufReader},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Output, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

/// How long an agent may take to attach (10,000 hosts in the benchmarks take a while).
const ATTACH_TIMEOUT: Duration = Duration::from_mins(2);
/// How long an agent may take to exit after SIGTERM (it finishes wakes under way first).
const EXIT_TIMEOUT: Duration = Duration::from_secs(30);

/// What to start.
#[derive(Clone, Debug)]
pub struct Launch {
    pub binary: PathBuf,
    pub config: PathBuf,
    /// The interfaces clients arrive on.
    pub interfaces: Vec<String>,
    /// Further `attach` arguments (`--metrics ADDR`, `--hook xdp-generic`, …).
    pub args: Vec<String>,
    /// `RUST_LOG` for the agent.
    pub log_filter: String,
    /// Whether to copy each log line to this process's stderr as `[NAME] …` (tests: shown
    /// when a test fails).
    pub echo: bool,
    /// The prefix of echoed log lines (`agent`; a cluster's nodes use `node<i>`).
    pub name: String,
    /// The network namespace to run in (`nsenter --net=/run/netns/NETNS`), if not this one's;
    /// see [`in_netns`]. The control socket is a file, so `status` and the other commands still
    /// reach the agent.
    pub netns: Option<String>,
    /// Further environment (a cluster node's `DOCKER_HOST`).
    pub env: Vec<(String, String)>,
}

impl Launch {
    pub fn new(binary: &Path, config: &Path, interfaces: &[&str]) -> Launch {
        Launch {
            binary: binary.to_path_buf(),
            config: config.to_path_buf(),
            interfaces: interfaces.iter().map(ToString::to_string).collect(),
            args: Vec::new(),
            // IMAG_TEST_LOG=FILTER sets the agents' RUST_LOG (e.g. "info,imag_agent=debug").
            log_filter: std::env::var("IMAG_TEST_LOG").unwrap_or_else(|_| "info".into()),
            // IMAG_TEST_ECHO=1 echoes every agent's log as it runs (for debugging a test).
            echo: std::env::var_os("IMAG_TEST_ECHO").is_some(),
            name: "agent".into(),
            netns: None,
            env: Vec::new(),
        }
    }

    /// With further `attach` arguments.
    #[must_use]
    pub fn args(mut self, args: &[&str]) -> Launch {
        self.args.extend(args.iter().map(ToString::to_string));
        self
    }
}

/// Why the harness could not do what it was asked. Debug shows the message (with the agent's
/// log where it helps), so that `unwrap` in a test prints something readable.
#[derive(thiserror::Error)]
pub enum AgentError {
    #[error("cannot start {binary}: {error}")]
    Spawn {
        binary: String,
        error: std::io::Error,
    },
    #[error("imag-agent exited ({status}) before {what}:\n{log}")]
    Exited {
        status: ExitStatus,
        what: String,
        log: String,
    },
    #[error("imag-agent did not {what} within {timeout:?}:\n{log}")]
    Timeout {
        what: String,
        timeout: Duration,
        log: String,
    },
    #[error("imag-agent {args}: {stderr}")]
    Command { args: String, stderr: String },
    #[error("imag-agent status --json printed something else than a report ({0})")]
    Status(serde_json::Error),
    #[error("the agent's status has no host {0:?}")]
    NoHost(String),
}

impl fmt::Debug for AgentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A running `imag-agent attach`.
pub struct AgentProcess {
    child: Option<Child>,
    log: Arc<Mutex<Vec<String>>>,
    /// Lines before this index were consumed by [`AgentProcess::wait_for_line`].
    cursor: usize,
    binary: PathBuf,
    config: PathBuf,
}

impl AgentProcess {
    /// Starts `imag-agent attach INTERFACES --config CONFIG ARGS…` and waits until it is attached
    /// (its control socket answers a status request, which the agent serves only once its
    /// datapath is attached and its orchestrator runs).
    pub fn start(launch: Launch) -> Result<AgentProcess, AgentError> {
        let mut command = match &launch.netns {
            Some(netns) => in_netns(netns, &launch.binary).map_err(|error| AgentError::Spawn {
                binary: launch.binary.display().to_string(),
                error,
            })?,
            None => Command::new(&launch.binary),
        };
        command
            .envs(launch.env.iter().map(|(k, v)| (k, v)))
            .arg("attach")
            .args(&launch.interfaces)
            .arg("--config")
            .arg(&launch.config)
            .args(&launch.args)
            .env("RUST_LOG", &launch.log_filter)
            .stderr(Stdio::piped());
        // If this process dies without dropping the handle (SIGKILL, abort), the agent gets the
        // SIGTERM that Drop would have sent, and cleans up after itself. It inherits none of the
        // test's descriptors (the e2e lock).
        // SAFETY: prctl and close_range are async-signal-safe and touch only the child being
        // exec'd.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                crate::close_inherited_fds()
            });
        }
        let mut child = command.spawn().map_err(|error| AgentError::Spawn {
            binary: launch.binary.display().to_string(),
            error,
        })?;
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("piped");
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if launch.echo {
                    eprintln!("[{}] {line}", launch.name);
                }
                sink.lock().expect("log lock").push(line);
            }
        });
        let mut agent = AgentProcess {
            child: Some(child),
            log,
            cursor: 0,
            binary: launch.binary,
            config: launch.config,
        };
        agent.wait("attach", ATTACH_TIMEOUT, |agent| agent.status().is_ok())?;
        Ok(agent)
    }

    /// The agent's process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The configuration file it runs with.
    pub fn config(&self) -> &Path {
        &self.config
    }

    /// Polls `done` every 20 ms until it holds; fails if the agent exits first or `timeout`
    /// passes.
    fn wait(
        &mut self,
        what: &str,
        timeout: Duration,
        mut done: impl FnMut(&mut AgentProcess) -> bool,
    ) -> Result<(), AgentError> {
        let deadline = Instant::now() + timeout;
        loop {
            if done(self) {
                return Ok(());
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                return Err(AgentError::Exited {
                    status,
                    what: what.into(),
                    log: self.log_text(),
                });
            }
            if Instant::now() > deadline {
                return Err(AgentError::Timeout {
                    what: what.into(),
                    timeout,
                    log: self.log_text(),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the next log line containing `needle` (lines before it are consumed, so that
    /// the next call finds the next such line).
    pub fn wait_for_line(&mut self, needle: &str, timeout: Duration) -> Result<String, AgentError> {
        let mut found = None;
        self.wait(&format!("log {needle:?}"), timeout, |agent| {
            let log = agent.log.lock().expect("log lock");
            if let Some(i) = log[agent.cursor..].iter().position(|l| l.contains(needle)) {
                found = Some(log[agent.cursor + i].clone());
                agent.cursor += i + 1;
            }
            found.is_some()
        })?;
        Ok(found.expect("found"))
    }

    /// The length (ms) of `host`'s latest completed wake, from the agent's log (`woke host=…
    /// total_ms=…`).
    pub fn last_wake_ms(&self, host: &str) -> Option<f64> {
        let needle = format!(" woke host={host} ");
        let log = self.log.lock().expect("log lock");
        let line = log.iter().rev().find(|l| l.contains(&needle))?;
        log_field(line, "total_ms")?.parse().ok()
    }

    /// The SYN retransmissions `host`'s latest wake forced by its length alone
    /// ([`crate::clients::syn_retransmissions_forced`]): a test allows none beyond them. Panics if
    /// the log has no wake of `host` within 5 s.
    ///
    /// The agent logs a wake right after delivering its packets, so a client may have its answer
    /// a moment before the line is written: it is waited for, up to 5 s.
    pub fn syn_retransmissions_forced(&self, host: &str) -> u64 {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let wake_ms = loop {
            if let Some(ms) = self.last_wake_ms(host) {
                break ms;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{host}'s wake is not in the log:\n{}",
                self.log_text()
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        crate::clients::syn_retransmissions_forced(wake_ms)
    }

    /// Every log line so far.
    pub fn log_text(&self) -> String {
        self.log.lock().expect("log lock").join("\n")
    }

    /// Runs `imag-agent ARGS --config CONFIG` (a control command); whatever its outcome.
    pub fn run(&self, args: &[&str]) -> std::io::Result<Output> {
        Command::new(&self.binary)
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .output()
    }

    /// Runs a control command and returns its stdout; fails with its stderr.
    pub fn command(&self, args: &[&str]) -> Result<String, AgentError> {
        let failed = |stderr: String| AgentError::Command {
            args: args.join(" "),
            stderr,
        };
        let out = self.run(args).map_err(|e| failed(e.to_string()))?;
        if !out.status.success() {
            return Err(failed(String::from_utf8_lossy(&out.stderr).trim().into()));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `imag-agent status --json`.
    pub fn status(&self) -> Result<serde_json::Value, AgentError> {
        serde_json::from_str(&self.command(&["status", "--json"])?).map_err(AgentError::Status)
    }

    /// One host's entry in `imag-agent status --json`.
    pub fn host(&self, name: &str) -> Result<serde_json::Value, AgentError> {
        self.status()?["hosts"]
            .as_array()
            .and_then(|hosts| hosts.iter().find(|h| h["name"] == name))
            .cloned()
            .ok_or_else(|| AgentError::NoHost(name.into()))
    }

    /// Sends SIGTERM and waits for the agent to exit; returns its exit status. Killed if it
    /// does not exit within 30 s.
    pub fn stop(&mut self) -> Result<ExitStatus, AgentError> {
        let Some(mut child) = self.child.take() else {
            return Err(AgentError::Command {
                args: "stop".into(),
                stderr: "the agent was already stopped".into(),
            });
        };
        // SAFETY: kill with our own child's pid, not yet reaped.
        #[allow(
            clippy::cast_possible_wrap,
            reason = "a pid fits pid_t; `Child::id` only reports it as u32"
        )]
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM)
        };
        let deadline = Instant::now() + EXIT_TIMEOUT;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Ok(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(AgentError::Timeout {
                    what: "exit after SIGTERM".into(),
                    timeout: EXIT_TIMEOUT,
                    log: self.log_text(),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the agent with SIGKILL: nothing of its own clean-up runs, and everything it set up
    /// stays in place (for a restarted agent to adopt).
    pub fn kill9(mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The directory where [`in_netns`] mounts the sysfs of `netns` (in the agent's own mount
/// namespace; the directory stays, empty, and goes with the cluster's clean-up).
pub fn sysfs_dir(netns: &str) -> PathBuf {
    Path::new("/run/imag-testkit").join(format!("{netns}.sys"))
}

/// `binary` run in the network namespace `netns`, with a sysfs that shows that namespace's
/// interfaces. nsenter alone would leave `/sys` showing the root namespace's interfaces (sysfs
/// shows the namespace of whoever mounted it), and the agent reads interfaces' addresses there;
/// `ip netns exec` remounts the whole of `/sys`, which hides bpffs and the cgroup mounts the agent
/// needs. So: a private mount namespace (`unshare --mount`) in which a sysfs mounted from inside
/// `netns` is bound over `/sys/class/net` and `/sys/devices/virtual/net` only. nsenter, unshare
/// and sh each exec the next: the child's pid is the agent's.
fn in_netns(netns: &str, binary: &Path) -> std::io::Result<Command> {
    let sysfs = sysfs_dir(netns);
    std::fs::create_dir_all(&sysfs)?;
    let mut command = Command::new("nsenter");
    command
        .arg(format!("--net=/run/netns/{netns}"))
        .args(["unshare", "--mount", "--propagation", "private", "sh", "-c"])
        .arg(
            "mount -t sysfs sysfs \"$0\" && mount --bind \"$0/class/net\" /sys/class/net && \
             mount --bind \"$0/devices/virtual/net\" /sys/devices/virtual/net && exec \"$@\"",
        )
        .arg(&sysfs)
        .arg(binary);
    Ok(command)
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        if self.child.is_some() {
            let _ = self.stop();
        }
    }
}

/// The value of `name=value` in an agent's log line (quotes trimmed).
pub fn log_field(line: &str, name: &str) -> Option<String> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{name}=")))
        .map(|v| v.trim_matches('"').to_string())
}
