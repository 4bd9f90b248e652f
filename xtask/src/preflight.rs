//! Checks that the machine can run imag for real, with one sentence per failure naming the fix.

use std::{path::Path, process::Command};

use anyhow::bail;

use crate::cmd_output as output;

/// Root, a reachable Docker engine, a kernel with BTF, and the network tools the tests use.
pub fn require_privileges(what: &str) -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "`{what}` needs root: it loads eBPF programs, creates network namespaces and talks to \
             Docker; run it as root (e.g. `sudo -E {what}`)"
        );
    }
    if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        bail!(
            "this kernel has no BTF (/sys/kernel/btf/vmlinux is missing): imag needs a Linux \
             kernel built with CONFIG_DEBUG_INFO_BTF (5.18 or newer)"
        );
    }
    if let Some(release) = output(Command::new("uname").arg("-r")) {
        let mut parts = release
            .split(|c: char| !c.is_ascii_digit())
            .filter_map(|p| p.parse::<u32>().ok());
        let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
        if (major, minor) < (5, 18) {
            bail!(
                "kernel {release} is too old: imag re-delivers held packets with XDP live frames (Linux 5.18 or newer)"
            );
        }
    }
    for (tool, package) in [("ip", "iproute2"), ("iptables", "iptables")] {
        if output(Command::new(tool).arg("-V")).is_none()
            && output(Command::new(tool).arg("--version")).is_none()
        {
            bail!("`{tool}` is not installed: install the {package} package");
        }
    }
    if output(Command::new("docker").arg("--version")).is_none() {
        bail!("the docker command is not installed: install Docker (the engine and its CLI)");
    }
    if output(Command::new("docker").args(["version", "--format", "{{.Server.Version}}"])).is_none()
    {
        bail!(
            "the Docker engine is not reachable: start it (e.g. `systemctl start docker`) and check /var/run/docker.sock"
        );
    }
    Ok(())
}

/// Swap for the `swap_after` tier (its tests and the trace bench's policy): when none is in use,
/// brings a compressed RAM device (zram) or, without zram, a swap file, and says so. Left in
/// place afterwards, like the Docker engine the tests start.
pub fn ensure_swap(size_gib: u32) -> anyhow::Result<()> {
    if !swaps().is_empty() {
        return Ok(());
    }
    let size = format!("{size_gib}G");
    let zram = output(Command::new("zramctl").args(["--find", "--size", &size]))
        .map(|d| d.trim().to_string())
        .filter(|d| d.starts_with("/dev/"));
    let device = if let Some(device) = zram {
        device
    } else {
        make_swap_file(&size).map_err(|e| {
            anyhow::anyhow!("no swap is in use and no zram device (zramctl --find) was made: {e}")
        })?
    };
    enable_swap(&device, None)?;
    eprintln!("xtask: no swap was in use; enabled {size} of swap on {device} (swap_after tier)");
    Ok(())
}

/// Makes sure swap on disk is in use and preferred over any zram device (a higher priority),
/// adding (or raising) a swap file of `size_gib` when it is not: the trace bench measures memory
/// freed, and what zram holds is still memory.
pub fn ensure_disk_swap(size_gib: u32) -> anyhow::Result<()> {
    let table = swap_table();
    let is_zram = |name: &str| name.starts_with("/dev/zram");
    let zram_top = (table.iter())
        .filter(|(name, ..)| is_zram(name))
        .map(|&(.., priority)| priority)
        .max();
    let preferred = |priority: i32| zram_top.is_none_or(|top| priority > top);
    if (table.iter()).any(|(name, _, priority)| !is_zram(name) && preferred(*priority)) {
        return Ok(());
    }
    let priority = zram_top.map_or(100, |top| (top + 1).max(100));
    if priority > MAX_SWAP_PRIORITY {
        bail!(
            "a zram device is in use at the highest swap priority ({MAX_SWAP_PRIORITY}), so no \
             swap on disk can be preferred over it: swapoff it, or give it a lower priority, for \
             the trace bench (what zram holds is still memory)"
        );
    }
    if table.iter().any(|(name, ..)| name == SWAP_FILE) {
        // Ours, from an earlier run, below zram: enabled again at a priority above it.
        run(Command::new("swapoff").arg(SWAP_FILE)).map_err(anyhow::Error::msg)?;
    } else {
        make_swap_file(&format!("{size_gib}G"))?;
    }
    enable_swap(SWAP_FILE, Some(priority))?;
    eprintln!(
        "xtask: enabled swap on {SWAP_FILE} at priority {priority}, preferred over zram (trace \
         bench)"
    );
    Ok(())
}

const SWAP_FILE: &str = "/var/lib/imag-swap";
/// The highest priority `swapon --priority` takes.
const MAX_SWAP_PRIORITY: i32 = 32_767;

/// A swap file of `size` (as fallocate takes it) at [`SWAP_FILE`], readable by root only.
fn make_swap_file(size: &str) -> anyhow::Result<String> {
    let made = run(Command::new("fallocate").args(["-l", size, SWAP_FILE]))
        .and_then(|()| run(Command::new("chmod").args(["600", SWAP_FILE])));
    if let Err(why) = made {
        let _ = std::fs::remove_file(SWAP_FILE);
        bail!(
            "a swap file ({SWAP_FILE}, {size}) could not be made ({why}): add swap by hand \
             (mkswap + swapon) for the swap_after tier"
        );
    }
    Ok(SWAP_FILE.to_string())
}

/// `mkswap` and `swapon` (at `priority`, else the kernel's default) on `device`; a swap file of
/// ours that cannot be enabled is removed again.
fn enable_swap(device: &str, priority: Option<i32>) -> anyhow::Result<()> {
    let mut swapon = Command::new("swapon");
    if let Some(priority) = priority {
        swapon.args(["--priority", &priority.to_string()]);
    }
    let enabled = run(Command::new("mkswap").arg(device)).and_then(|()| run(swapon.arg(device)));
    if let Err(why) = enabled {
        if device == SWAP_FILE {
            let _ = std::fs::remove_file(SWAP_FILE);
        }
        bail!(
            "enabling swap on {device} failed ({why}): add swap by hand (mkswap + swapon) for the \
             swap_after tier"
        );
    }
    Ok(())
}

/// Runs `cmd`; on failure, says which program and what it wrote to stderr.
fn run(cmd: &mut Command) -> Result<(), String> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let out = cmd.output().map_err(|e| format!("{program}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// `/proc/swaps`: (device or file, type, priority) per swap in use.
fn swap_table() -> Vec<(String, String, i32)> {
    let text = std::fs::read_to_string("/proc/swaps").unwrap_or_default();
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            Some((
                (*fields.first()?).to_string(),
                (*fields.get(1)?).to_string(),
                fields.get(4)?.parse().ok()?,
            ))
        })
        .collect()
}

/// The swap in use, as `/proc/swaps` lists it: (device or file, type).
pub fn swaps() -> Vec<(String, String)> {
    swap_table()
        .into_iter()
        .map(|(name, kind, _)| (name, kind))
        .collect()
}
