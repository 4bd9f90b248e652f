//! What a replay costs, sampled every 100 ms: the memory charged to each host's container cgroup
//! (cgroup v1 `memory.usage_in_bytes`, v2 `memory.current`; a stopped container has no cgroup and
//! holds nothing), the agent's resident memory, and CPU time (each cgroup's `cpuacct.usage` or
//! `cpu.stat`, summed over the incarnations of a container; the agent's utime + stime). Memory
//! paged out to a zram swap device is still memory: what the devices hold (compressed, with
//! their overhead: `mm_stat`'s `mem_used_total`) counts as the hosts' too. Swap on disk does not.

use std::{
    collections::HashMap,
    process::Command,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use serde::Serialize;

pub const EVERY: Duration = Duration::from_millis(100);

/// One sample: seconds since the replay began, the hosts' memory and the agent's (MiB).
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Sample {
    pub t_s: f64,
    /// The hosts' cgroups and what zram swap holds.
    pub hosts_mb: f64,
    /// Of `hosts_mb`, what zram swap holds.
    pub swap_mb: f64,
    pub agent_mb: f64,
    /// Containers holding memory (running or paused).
    pub resident: usize,
}

#[derive(Debug, Default)]
pub struct Sampled {
    pub samples: Vec<Sample>,
    pub host_cpu_s: f64,
}

impl Sampled {
    /// ∫ memory dt over the samples (MiB·s): each sample holds until the next.
    pub fn memory_mb_s(&self, pick: impl Fn(&Sample) -> f64) -> f64 {
        self.samples
            .windows(2)
            .map(|w| pick(&w[0]) * (w[1].t_s - w[0].t_s))
            .sum()
    }
}

fn read_number(path: &str) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The container's CPU time so far in this incarnation (ns).
fn cpu_ns(id: &str) -> Option<u64> {
    if let Some(ns) = read_number(&format!("/sys/fs/cgroup/cpuacct/docker/{id}/cpuacct.usage")) {
        return Some(ns);
    }
    [
        format!("/sys/fs/cgroup/system.slice/docker-{id}.scope/cpu.stat"),
        format!("/sys/fs/cgroup/docker/{id}/cpu.stat"),
    ]
    .into_iter()
    .find_map(|p| {
        let text = std::fs::read_to_string(p).ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix("usage_usec "))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|us| us * 1000)
    })
}

/// The zram devices swap uses (`zram0`, …), from `/proc/swaps`: read once per replay.
fn zram_swaps() -> Vec<String> {
    (crate::preflight::swaps().into_iter())
        .filter_map(|(name, _)| Some(name.strip_prefix("/dev/")?.to_string()))
        .filter(|dev| dev.starts_with("zram"))
        .collect()
}

/// The memory `devices` (zram) use now, compressed pages and overhead: `mem_used_total` (bytes).
fn zram_bytes(devices: &[String]) -> u64 {
    (devices.iter())
        .filter_map(|dev| {
            let stat = std::fs::read_to_string(format!("/sys/block/{dev}/mm_stat")).ok()?;
            stat.split_whitespace().nth(2)?.parse::<u64>().ok()
        })
        .sum()
}

/// A process's resident memory (MiB).
pub fn rss_mb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// A process's CPU time, user and system (seconds).
pub fn cpu_s(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command (which may hold spaces) end with ')'.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the command.
    (ticks(11) + ticks(12)) / hz.max(1.0)
}

/// The full IDs of the network's containers, as the engine lists them.
fn containers(network: &str) -> Vec<String> {
    let out = Command::new("docker")
        .args(["ps", "-aq", "--no-trunc", "--filter"])
        .arg(format!("label=imag.network={network}"))
        .output();
    out.map(|o| {
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect()
    })
    .unwrap_or_default()
}

/// Samples until `done`: every [`EVERY`], the memory of the network's containers and of the agent
/// (`agent_pid`); the container list is refreshed every second on a thread of its own, so that
/// asking the engine never delays a sample. Only what happens from `from` on is kept (samples
/// stamped in seconds since then, CPU time used since then): the warm-up before it is not measured.
pub fn run(network: &str, agent_pid: u32, from: Instant, done: &AtomicBool) -> Sampled {
    let ids = Arc::new(Mutex::new(containers(network)));
    let zram = zram_swaps();
    std::thread::scope(|scope| {
        scope.spawn(|| {
            while !done.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_secs(1));
                let fresh = containers(network);
                *ids.lock().expect("not poisoned") = fresh;
            }
        });
        let mut sampled = Sampled::default();
        // What the containers used before the replay is not the replay's.
        let mut last_cpu: HashMap<String, u64> = ids
            .lock()
            .expect("not poisoned")
            .iter()
            .filter_map(|id| Some((id.clone(), cpu_ns(id)?)))
            .collect();
        let mut cpu_ns_total = 0u64;
        let mut next = Instant::now();
        while !done.load(Ordering::Relaxed) {
            let now_ids = ids.lock().expect("not poisoned").clone();
            let (mut bytes, mut resident) = (0u64, 0usize);
            for id in &now_ids {
                if let Some(b) = imag_testkit::docker::cgroup_memory_bytes(id) {
                    bytes += b;
                    resident += 1;
                }
                if let Some(ns) = cpu_ns(id) {
                    let last = last_cpu.insert(id.clone(), ns).unwrap_or(0);
                    // A restarted container starts a new cgroup at 0.
                    cpu_ns_total += if ns >= last { ns - last } else { ns };
                }
            }
            let swap = zram_bytes(&zram);
            match Instant::now().checked_duration_since(from) {
                Some(since) => sampled.samples.push(Sample {
                    t_s: since.as_secs_f64(),
                    hosts_mb: (bytes + swap) as f64 / f64::from(1 << 20),
                    swap_mb: swap as f64 / f64::from(1 << 20),
                    agent_mb: rss_mb(agent_pid),
                    resident,
                }),
                // Still in the warm-up: the CPU used so far is not the measured span's.
                None => cpu_ns_total = 0,
            }
            next += EVERY;
            if let Some(wait) = next.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            } else {
                next = Instant::now();
            }
        }
        sampled.host_cpu_s = cpu_ns_total as f64 / 1e9;
        sampled
    })
}
