//! The daemons a cluster runs (dockerd, BIRD, etcd), each started inside a network namespace with
//! `nsenter --net` and owned by a [`Daemon`] that stops it when dropped. `ip netns exec` is not
//! used: it remounts `/sys` in a mount namespace of its own, which hides the cgroup mounts dockerd
//! needs. nsenter without `--fork` execs the program itself, so the child's pid is the daemon's.

use std::{
    fs::File,
    io,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// `nsenter --net=/run/netns/NETNS PROGRAM`: a command that runs in the namespace `netns`.
pub fn in_netns(netns: &str, program: &str) -> Command {
    let mut command = Command::new("nsenter");
    command
        .arg(format!("--net=/run/netns/{netns}"))
        .arg(program);
    command
}

/// Runs `command` and returns its stdout; fails with its stderr.
pub fn output(mut command: Command) -> Result<String, String> {
    let shown = format!("{command:?}");
    let out = command
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{shown}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{shown} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        ))
    }
}

/// A long-running process of the cluster's, its output in a log file.
pub struct Daemon {
    what: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Daemon {
    /// Starts `command` with its output appended to `log`. The daemon inherits none of the test's
    /// descriptors (the test may hold `/tmp/imag-e2e.lock`, which a daemon would then hold
    /// forever) and gets SIGTERM when the thread that started it ends without stopping it
    /// (`PR_SET_PDEATHSIG`: a test killed outright still takes its daemons down).
    pub fn spawn(what: &str, mut command: Command, log: &Path) -> Result<Daemon, String> {
        let file = File::options()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| format!("opening the log {} of {what}: {e}", log.display()))?;
        let stderr = file
            .try_clone()
            .map_err(|e| format!("log of {what}: {e}"))?;
        command.stdin(Stdio::null()).stdout(file).stderr(stderr);
        // SAFETY: prctl and close_range are async-signal-safe system calls touching only the
        // child being exec'd.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(io::Error::last_os_error());
                }
                crate::close_inherited_fds()
            });
        }
        let child = command
            .spawn()
            .map_err(|e| format!("starting {what} ({command:?}): {e}"))?;
        Ok(Daemon {
            what: what.to_string(),
            child: Some(child),
            log: log.to_path_buf(),
        })
    }

    /// `Err` (naming the daemon, its exit status and the end of its log) if it has exited.
    pub fn check_running(&mut self) -> Result<(), String> {
        let exited = match self.child.as_mut().map(Child::try_wait) {
            Some(Ok(None)) => return Ok(()),
            Some(Ok(Some(status))) => status.to_string(),
            Some(Err(e)) => e.to_string(),
            None => "stopped by the harness".into(),
        };
        Err(format!(
            "{} exited ({exited}); the end of its log {}:\n{}",
            self.what,
            self.log.display(),
            self.log_tail()
        ))
    }

    /// The last lines of its log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// SIGTERM, then SIGKILL if it has not exited within `grace`.
    pub fn stop(&mut self, grace: Duration) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(pid) = libc::pid_t::try_from(child.id()) {
            // SAFETY: our own child, not yet reaped.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// SIGKILL: the daemon dies as in a crash, nothing of its own clean-up runs.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(10));
    }
}
