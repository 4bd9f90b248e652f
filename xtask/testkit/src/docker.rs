//! What the Docker engine says about the containers and networks imag manages, read through the
//! `docker` CLI so that tests observe the engine the way an operator would, independent of the
//! agent's own engine client. [`crate::testnet`] also removes leftovers through these.

use std::process::Command;

/// `docker inspect --format FORMAT container`, trimmed; `None` if it does not exist.
pub fn inspect(container: &str, format: &str) -> Option<String> {
    let out = Command::new("docker")
        .args(["inspect", "--format", format, container])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Bytes charged to the memory cgroup of the container with ID `id` (cgroup v1 or v2, cgroupfs
/// or systemd driver); `None` without one (a stopped container holds nothing).
pub fn cgroup_memory_bytes(id: &str) -> Option<u64> {
    [
        format!("/sys/fs/cgroup/memory/docker/{id}/memory.usage_in_bytes"),
        format!("/sys/fs/cgroup/memory/system.slice/docker-{id}.scope/memory.usage_in_bytes"),
        format!("/sys/fs/cgroup/system.slice/docker-{id}.scope/memory.current"),
        format!("/sys/fs/cgroup/docker/{id}/memory.current"),
    ]
    .into_iter()
    .find_map(|p| std::fs::read_to_string(p).ok()?.trim().parse().ok())
}

/// The container's state as `docker inspect` reports it (`running`, `paused`, `exited`, …).
pub fn container_status(container: &str) -> Option<String> {
    inspect(container, "{{.State.Status}}")
}

/// The container's address on `network`.
pub fn container_address(container: &str, network: &str) -> Option<String> {
    inspect(
        container,
        &format!("{{{{(index .NetworkSettings.Networks \"{network}\").IPAddress}}}}"),
    )
}

/// The container's MAC address on `network`.
pub fn container_mac(container: &str, network: &str) -> Option<String> {
    inspect(
        container,
        &format!("{{{{(index .NetworkSettings.Networks \"{network}\").MacAddress}}}}"),
    )
}

/// Containers (any state) that imag labelled as belonging to `network`; none if the engine
/// could not be asked.
pub fn containers_on(network: &str) -> Vec<String> {
    list_containers_on(network).unwrap_or_default()
}

/// [`containers_on`], with an error when the engine could not be asked (where an empty list
/// would read as "nothing there").
fn list_containers_on(network: &str) -> Result<Vec<String>, String> {
    let listed = Command::new("docker")
        .args([
            "ps",
            "-aq",
            "--filter",
            &format!("label=imag.network={network}"),
        ])
        .output()
        .map_err(|e| format!("running docker ps: {e}"))?;
    if !listed.status.success() {
        return Err(format!(
            "docker ps failed: {}",
            String::from_utf8_lossy(&listed.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&listed.stdout)
        .split_whitespace()
        .map(String::from)
        .collect())
}

/// The containers on `network` (as [`containers_on`]) that have a process now (running or
/// paused), by name with that process's ID: two calls to the engine for all of them. An error
/// when the engine could not be asked.
pub fn processes_on(network: &str) -> Result<Vec<(String, u32)>, String> {
    let ids = list_containers_on(network)?;
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let out = Command::new("docker")
        .args(["inspect", "--format", "{{.State.Pid}} {{.Name}}"])
        .args(&ids)
        .output()
        .map_err(|e| format!("running docker inspect: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    // A container removed between the two calls fails the inspect of it alone (the exit status
    // says so) while the others' lines are printed; nothing printed at all is a failure.
    if !out.status.success() && text.trim().is_empty() {
        return Err(format!(
            "docker inspect failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(text
        .lines()
        .filter_map(|line| {
            let (pid, name) = line.trim().split_once(' ')?;
            let pid = pid.parse::<u32>().ok().filter(|&p| p > 0)?;
            Some((name.trim_start_matches('/').to_string(), pid))
        })
        .collect())
}

/// Whether the engine has a network named `network`.
pub fn network_exists(network: &str) -> bool {
    Command::new("docker")
        .args(["network", "inspect", network])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Removes `network` and every container imag labelled as belonging to it (a clean-up: what is
/// already gone is left alone).
pub fn remove_network(network: &str) {
    for id in containers_on(network) {
        let _ = Command::new("docker").args(["rm", "-f", &id]).output();
    }
    if network_exists(network) {
        let _ = Command::new("docker")
            .args(["network", "rm", network])
            .output();
    }
}

/// Whether the engine has the image `image`.
pub fn image_exists(image: &str) -> bool {
    Command::new("docker")
        .args(["image", "inspect", image])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Whether the engine keeps containers running while it restarts (`live-restore`).
pub fn live_restore() -> bool {
    Command::new("docker")
        .args(["info", "--format", "{{.LiveRestoreEnabled}}"])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "true")
}

/// Whether the engine answers.
pub fn engine_answers() -> bool {
    Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Restarts the Docker engine the way it runs on this machine and waits (up to 60 s) until it
/// answers again: `systemctl restart docker` where systemd is the init, else the running
/// dockerd is stopped (SIGTERM, as its service would) and started again with its own command
/// line and environment, its output appended to where it went before. Without live restore the
/// engine stops every running container on the way down. Hold [`crate::E2E_LOCK`] (see
/// [`crate::serialised`]): other tests' containers are stopped too.
pub fn restart_engine() -> Result<(), String> {
    let systemd = std::fs::read_to_string("/proc/1/comm").is_ok_and(|c| c.trim() == "systemd");
    if systemd {
        let out = Command::new("systemctl")
            .args(["restart", "docker"])
            .output()
            .map_err(|e| format!("systemctl restart docker: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "systemctl restart docker failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    } else {
        restart_by_hand()?;
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_mins(1);
    while !engine_answers() {
        if std::time::Instant::now() > deadline {
            return Err("the Docker engine did not answer within 60 s of its restart".into());
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    Ok(())
}

/// Without systemd: stop the running dockerd and start it again as it was started.
fn restart_by_hand() -> Result<(), String> {
    use std::os::unix::process::CommandExt as _;
    let pid: i32 = std::fs::read_to_string("/var/run/docker.pid")
        .map_err(|e| format!("no /var/run/docker.pid ({e}): is dockerd running?"))?
        .trim()
        .parse()
        .map_err(|e| format!("/var/run/docker.pid: {e}"))?;
    let split = |bytes: Vec<u8>| -> Vec<String> {
        bytes
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect()
    };
    let argv = split(
        std::fs::read(format!("/proc/{pid}/cmdline")).map_err(|e| format!("dockerd {pid}: {e}"))?,
    );
    let env = split(std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default());
    let log = std::fs::read_link(format!("/proc/{pid}/fd/1"))
        .ok()
        .filter(|p| p.is_file())
        .unwrap_or_else(|| "/var/log/dockerd.log".into());
    let (program, rest) = argv.split_first().ok_or("dockerd has no command line")?;
    // SAFETY: kill has no memory preconditions.
    if unsafe { libc::kill(pid, libc::SIGTERM) } != 0 {
        return Err(format!("cannot signal dockerd {pid}"));
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_mins(1);
    while std::path::Path::new(&format!("/proc/{pid}")).exists() {
        if std::time::Instant::now() > deadline {
            return Err(format!("dockerd {pid} did not stop within 60 s"));
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let output = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .map_err(|e| format!("{}: {e}", log.display()))?;
    let mut command = Command::new(program);
    command
        .args(rest)
        .env_clear()
        .envs(env.iter().filter_map(|kv| kv.split_once('=')))
        .stdin(std::process::Stdio::null())
        .stdout(output.try_clone().map_err(|e| e.to_string())?)
        .stderr(output);
    // Its own session: it must outlive the test, as a service does. And none of the test's
    // descriptors: the test runs under `flock /tmp/imag-e2e.lock`, whose descriptor a daemon
    // would otherwise inherit and hold (the lock would never be released again). Every
    // descriptor above stderr is marked close-on-exec (CLOSE_RANGE_CLOEXEC, Linux 5.11).
    // SAFETY: setsid and close_range are async-signal-safe system calls.
    unsafe {
        command.pre_exec(|| {
            libc::setsid();
            crate::close_inherited_fds()
        });
    }
    command
        .spawn()
        .map_err(|e| format!("starting {program} again: {e}"))?;
    Ok(())
}
