//! Removing everything a cluster named after its tag: processes (its daemons, the containers of
//! its engines, their shims), mounts and directories, cgroups, namespaces. [`sweep`] is the
//! forceful end of every teardown (after the graceful one in `Cluster`'s Drop) and what the next
//! holder of a crashed run's lease index runs; [`leftovers`] lists what is still there, for the
//! test that checks the teardown.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

/// Where a cluster keeps its state (data roots, etcd data, configs, logs).
pub fn state_dir(tag: &str) -> PathBuf {
    Path::new("/var/lib/imag-testkit").join(tag)
}

/// What agents started in the cluster's nodes keep outside it, for networks named `<tag>…`
/// (each node's agent needs a network name of its own: the pins, the state and the control
/// socket are named after it and shared by every namespace).
fn agent_leftovers(tag: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    // `/run/imag-testkit/<node's namespace>.sys`: `agent::sysfs_dir`.
    for dir in [
        "/sys/fs/bpf/imag",
        "/var/lib/imag",
        "/run/imag",
        "/run/imag-testkit",
    ] {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        found.extend(
            entries
                .filter_map(Result::ok)
                .filter(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    name.starts_with(tag) && name != format!("{tag}.cluster")
                })
                .map(|e| e.path()),
        );
    }
    found
}

/// Where a cluster keeps its sockets, pid files and engines' exec roots.
pub fn run_dir(tag: &str) -> PathBuf {
    Path::new("/run/imag-testkit").join(format!("{tag}.cluster"))
}

/// The cgroup parent of node `i`'s containers.
pub fn cgroup_parent(tag: &str, i: usize) -> String {
    format!("imag-{tag}-n{i}")
}

/// The cluster's network namespaces: router `<tag>r`, client `<tag>c`, nodes `<tag>n<i>`.
fn namespaces(tag: &str) -> Vec<String> {
    let listed = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    listed
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| {
            name.strip_prefix(tag).is_some_and(|rest| {
                rest == "r"
                    || rest == "c"
                    || rest
                        .strip_prefix('n')
                        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            })
        })
        .map(String::from)
        .collect()
}

/// Processes whose command line names one of the cluster's directories (its daemons, the
/// engines' containerd and shims, agents started with a config there).
fn processes(tag: &str) -> Vec<libc::pid_t> {
    let needles = [
        state_dir(tag).display().to_string(),
        run_dir(tag).display().to_string(),
    ];
    let own = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != own)
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline);
            needles.iter().any(|n| cmdline.contains(n.as_str()))
        })
        .filter_map(|pid| libc::pid_t::try_from(pid).ok())
        .collect()
}

/// The cluster's cgroup directories, in every v1 hierarchy (and the v2 one), deepest first.
fn cgroups(tag: &str) -> Vec<PathBuf> {
    let prefix = format!("imag-{tag}-n");
    let mut found = Vec::new();
    let root = Path::new("/sys/fs/cgroup");
    // cgroup v1: one hierarchy per directory under the root; v2: the root itself.
    let mut hierarchies = vec![root.to_path_buf()];
    if let Ok(entries) = std::fs::read_dir(root) {
        hierarchies.extend(entries.filter_map(|e| Some(e.ok()?.path())));
    }
    for hierarchy in hierarchies {
        let Ok(children) = std::fs::read_dir(&hierarchy) else {
            continue;
        };
        for child in children.filter_map(Result::ok) {
            if child.file_name().to_string_lossy().starts_with(&prefix) {
                collect_depth_first(&child.path(), &mut found);
            }
        }
    }
    found
}

fn collect_depth_first(dir: &Path, found: &mut Vec<PathBuf>) {
    if let Ok(children) = std::fs::read_dir(dir) {
        for child in children.filter_map(Result::ok) {
            if child.file_type().is_ok_and(|t| t.is_dir()) {
                collect_depth_first(&child.path(), found);
            }
        }
    }
    found.push(dir.to_path_buf());
}

/// Mount points under the cluster's directories, deepest first.
fn mounts(tag: &str) -> Vec<String> {
    let dirs = [
        state_dir(tag).display().to_string(),
        run_dir(tag).display().to_string(),
    ];
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut found: Vec<String> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| dirs.iter().any(|d| m.starts_with(d.as_str())))
        .map(String::from)
        .collect();
    found.sort_by_key(|m| std::cmp::Reverse(m.len()));
    found
}

/// Kills every process of node `i`'s containers (its cgroup) and every process naming
/// `needle` on its command line: the node dies as in a power cut.
pub fn kill_node_processes(tag: &str, i: usize, needle: &str) {
    let parent = cgroup_parent(tag, i);
    for cgroup in cgroups(tag)
        .iter()
        .filter(|c| c.components().any(|p| p.as_os_str() == parent.as_str()))
    {
        kill_all(&procs_of(cgroup));
    }
    let own = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    let pids: Vec<libc::pid_t> = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != own)
        .filter(|pid| {
            String::from_utf8_lossy(
                &std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default(),
            )
            .contains(needle)
        })
        .filter_map(|pid| libc::pid_t::try_from(pid).ok())
        .collect();
    kill_all(&pids);
}

fn procs_of(cgroup: &Path) -> Vec<libc::pid_t> {
    std::fs::read_to_string(cgroup.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

fn kill_all(pids: &[libc::pid_t]) {
    for pid in pids {
        // SAFETY: kill has no memory preconditions; a pid that is gone is an error we ignore.
        unsafe { libc::kill(*pid, libc::SIGKILL) };
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while pids
        .iter()
        .any(|p| Path::new(&format!("/proc/{p}")).exists() && !zombie(*p))
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn zombie(pid: libc::pid_t) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| Some(s.rsplit_once(')')?.1.trim_start().starts_with('Z')))
        .unwrap_or(true)
}

/// Removes everything named after `tag`, whatever state it is in.
pub fn sweep(tag: &str) {
    // Containers first (their shims would otherwise be left reaping nothing), then the rest.
    for cgroup in cgroups(tag) {
        kill_all(&procs_of(&cgroup));
    }
    kill_all(&processes(tag));
    for mount in mounts(tag) {
        if let Ok(path) = std::ffi::CString::new(mount) {
            // SAFETY: a NUL-terminated path; MNT_DETACH has no further preconditions.
            unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) };
        }
    }
    for cgroup in cgroups(tag) {
        let _ = std::fs::remove_dir(&cgroup);
    }
    for netns in namespaces(tag) {
        let _ = Command::new("ip").args(["netns", "del", &netns]).output();
    }
    // The client link's host side, had the cluster stopped before moving it to the router.
    let _ = Command::new("ip")
        .args(["link", "del", &format!("{tag}h")])
        .output();
    for path in agent_leftovers(tag) {
        if std::fs::remove_dir_all(&path).is_err() {
            let _ = std::fs::remove_file(&path);
        }
    }
    let _ = std::fs::remove_dir_all(state_dir(tag));
    let _ = std::fs::remove_dir_all(run_dir(tag));
}

/// What of the cluster named `tag` still exists (empty after a clean teardown).
pub fn leftovers(tag: &str) -> Vec<String> {
    let mut left: Vec<String> = namespaces(tag)
        .into_iter()
        .map(|n| format!("network namespace {n}"))
        .collect();
    left.extend(processes(tag).iter().map(|p| {
        let cmdline = std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
        format!(
            "process {p}: {}",
            String::from_utf8_lossy(&cmdline).replace('\0', " ")
        )
    }));
    left.extend(
        cgroups(tag)
            .iter()
            .map(|c| format!("cgroup {}", c.display())),
    );
    left.extend(mounts(tag).into_iter().map(|m| format!("mount {m}")));
    for dir in [state_dir(tag), run_dir(tag)]
        .into_iter()
        .chain(agent_leftovers(tag))
    {
        if dir.exists() {
            left.push(format!("{}", dir.display()));
        }
    }
    left
}
