//! A container's memory cgroup, for `swap_after`: a paused container's memory paged out to the
//! machine's swap, so that a host asleep in the pause tier holds (almost) no memory and still
//! wakes with a thaw. The kernel's own reclaim does the work: cgroup v1's `memory.force_empty`
//! (reclaim everything the group holds; anonymous pages go to swap) or v2's `memory.reclaim`.
//! On a wake, what was paged out is read back ahead of the process ([`MemoryCgroup::prefetch`]):
//! the kernel is asked to start reading every anonymous mapping of the group's processes from
//! swap at once (and their code), while the thawed process faults in what it touches first, instead of one fault (and
//! its few pages of readahead) at a time.
//!
//! Without swap the kernel can drop only clean file pages, and the paused host stays resident:
//! the agent refuses `swap_after` on a machine without active swap ([`require_swap`]).

use std::{io, path::PathBuf};

use super::freezer::container_groups;

/// Where a container's memory cgroup is, and which interface it has.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemoryCgroup {
    dir: PathBuf,
    v2: bool,
}

/// What a page-out did to a container's memory cgroup (bytes charged to it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PagedOut {
    pub before: u64,
    pub after: u64,
}

impl MemoryCgroup {
    /// The memory cgroup of the container with ID `id` (see `Freezer::of_container`: found from
    /// the ID, never a PID).
    pub fn of_container(id: &str, parent: Option<&str>) -> Option<MemoryCgroup> {
        MemoryCgroup::for_id(id, parent, |path| std::path::Path::new(path).exists())
    }

    fn for_id(
        id: &str,
        parent: Option<&str>,
        exists: impl Fn(&str) -> bool,
    ) -> Option<MemoryCgroup> {
        let groups = container_groups(id, parent)?;
        let v1 = groups.iter().map(|g| {
            (
                format!("/sys/fs/cgroup/memory/{g}"),
                false,
                "memory.force_empty",
            )
        });
        let v2 = groups
            .iter()
            .map(|g| (format!("/sys/fs/cgroup/{g}"), true, "memory.reclaim"));
        v1.chain(v2)
            .find(|(dir, _, file)| exists(&format!("{dir}/{file}")))
            .map(|(dir, v2, _)| MemoryCgroup {
                dir: PathBuf::from(dir),
                v2,
            })
    }

    /// Bytes charged to the group now.
    pub fn usage(&self) -> io::Result<u64> {
        let file = if self.v2 {
            "memory.current"
        } else {
            "memory.usage_in_bytes"
        };
        let text = std::fs::read_to_string(self.dir.join(file))?;
        text.trim()
            .parse()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{file}: {e}")))
    }

    /// Reclaims as much of the group's memory as the kernel can (blocking: the kernel compresses
    /// or writes out every page, some milliseconds per MiB), unless `woken` says the container was
    /// thawed meanwhile: then the reclaim is interrupted (the kernel's reclaim loop stops at a
    /// pending signal) so that it does not fight a running process for its pages.
    pub fn page_out(&self, woken: impl Fn() -> bool) -> io::Result<PagedOut> {
        let before = self.usage()?;
        let (file, value) = if self.v2 {
            // Asks for everything; the kernel answers EAGAIN when it reclaimed less, which is
            // what is left resident (shown by `after`), not a failure.
            (self.dir.join("memory.reclaim"), before.to_string())
        } else {
            (self.dir.join("memory.force_empty"), "0".to_string())
        };
        let (done_tx, done) = std::sync::mpsc::channel();
        let worker = std::thread::Builder::new()
            .name("imag-page-out".into())
            .spawn(move || {
                // One write call: `write_all` would retry an interrupted one.
                let written = std::fs::OpenOptions::new()
                    .write(true)
                    .open(file)
                    .and_then(|mut f| std::io::Write::write(&mut f, value.as_bytes()).map(drop));
                let _ = done_tx.send(());
                written
            })?;
        let mut interrupted = false;
        while done.recv_timeout(WOKEN_POLL).is_err() {
            if woken() {
                interrupted = true;
                interrupt(&worker);
            }
        }
        match worker.join() {
            Ok(Err(err)) if interrupted && err.kind() == io::ErrorKind::Interrupted => {
                return Err(io::Error::new(
                    io::ErrorKind::Interrupted,
                    "the container was woken during its page-out, which was stopped",
                ));
            }
            Ok(Err(err)) if !(self.v2 && err.raw_os_error() == Some(libc::EAGAIN)) => {
                return Err(err);
            }
            Ok(_) => {}
            Err(_) => return Err(io::Error::other("the page-out thread panicked")),
        }
        Ok(PagedOut {
            before,
            after: self.usage()?,
        })
    }
}

impl MemoryCgroup {
    /// Asks the kernel to read back, asynchronously, what the group's processes had paged out:
    /// `process_madvise(MADV_WILLNEED)` over each of their anonymous mappings (heap, stacks,
    /// private allocations: what went to swap) and their code starts reading their pages back;
    /// nothing waits for the reads. Other file mappings are left alone (the kernel would read
    /// their whole range, a large mapped file too). Returns the bytes of the mappings advised; an error if no advice
    /// was taken at all (the kernel lacks `process_madvise`, or the agent the right to use it).
    /// Processes that exit meanwhile are skipped.
    pub fn prefetch(&self) -> io::Result<u64> {
        let procs = std::fs::read_to_string(self.dir.join("cgroup.procs"))?;
        let mut advised = 0;
        let mut failed = None;
        for pid in procs
            .lines()
            .filter_map(|l| l.trim().parse::<libc::pid_t>().ok())
        {
            // The pidfd first: the maps read after it are its process's (a PID reused later
            // cannot be advised through it).
            let Ok(pidfd) = pidfd_open(pid) else {
                continue;
            };
            let Ok(maps) = std::fs::read_to_string(format!("/proc/{pid}/maps")) else {
                continue;
            };
            for (start, end) in prefetched_mappings(&maps) {
                // One range per call: a mapping the kernel refuses fails alone.
                match advise_willneed(&pidfd, start, end - start) {
                    Ok(()) => advised += end - start,
                    Err(err) => failed = Some(err),
                }
            }
        }
        match failed {
            Some(err) if advised == 0 => Err(err),
            _ => Ok(advised),
        }
    }
}

/// The address ranges of a process's anonymous mappings (`/proc/PID/maps`: no file, or
/// `[heap]`, `[stack]`, `[anon:…]`) and of its code (executable file mappings: what it runs
/// first as it thaws, and small); not its other file mappings (a large mapped data file would
/// be read whole), nor the kernel's own (`[vvar]`, `[vdso]`, …).
fn prefetched_mappings(maps: &str) -> impl Iterator<Item = (u64, u64)> + '_ {
    maps.lines().filter_map(|line| {
        let mut fields = line.split_whitespace();
        let (start, end) = fields.next()?.split_once('-')?;
        let perms = fields.next()?;
        let name = fields.nth(3).unwrap_or("");
        let anonymous = name.is_empty()
            || name == "[heap]"
            || name.starts_with("[stack")
            || name.starts_with("[anon:");
        let code = perms.contains('x') && name.starts_with('/');
        if !(anonymous || code) {
            return None;
        }
        let start = u64::from_str_radix(start, 16).ok()?;
        let end = u64::from_str_radix(end, 16).ok()?;
        (end > start).then_some((start, end))
    })
}

fn pidfd_open(pid: libc::pid_t) -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: plain syscall; the returned descriptor is owned right away.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = libc::c_int::try_from(fd).map_err(io::Error::other)?;
    // SAFETY: a fresh descriptor nobody else owns.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

fn advise_willneed(pidfd: &std::os::fd::OwnedFd, start: u64, len: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let iov = libc::iovec {
        iov_base: start as *mut libc::c_void,
        iov_len: usize::try_from(len).map_err(io::Error::other)?,
    };
    // SAFETY: the iovec names another process's range (the kernel checks it); no memory of ours
    // is read or written.
    let done = unsafe {
        libc::syscall(
            libc::SYS_process_madvise,
            pidfd.as_raw_fd(),
            &raw const iov,
            1usize,
            libc::MADV_WILLNEED,
            0u32,
        )
    };
    if done < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// How often a page-out looks whether its container was woken.
const WOKEN_POLL: std::time::Duration = std::time::Duration::from_millis(5);

/// The signal that interrupts a page-out's reclaim: a real-time one, with a handler that does
/// nothing (an ignored signal would never be pending; the handler makes the write return EINTR).
fn interrupt_signal() -> libc::c_int {
    libc::SIGRTMIN() + 4
}

extern "C" fn ignore(_: libc::c_int) {}

/// Interrupts the worker's reclaim (the kernel checks for a pending signal between passes).
fn interrupt(worker: &std::thread::JoinHandle<io::Result<()>>) {
    use std::os::unix::thread::JoinHandleExt;
    static HANDLER: std::sync::Once = std::sync::Once::new();
    HANDLER.call_once(|| {
        // SAFETY: installs a handler that does nothing (async-signal-safe) for a real-time
        // signal nothing else in the agent uses; no SA_RESTART, so the write returns EINTR.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = ignore as *const () as libc::sighandler_t;
            libc::sigemptyset(&raw mut action.sa_mask);
            libc::sigaction(interrupt_signal(), &raw const action, std::ptr::null_mut());
        }
    });
    // SAFETY: the thread has not been joined (the handle is borrowed), so its pthread_t is
    // valid; a thread that just finished makes this a harmless ESRCH or a no-op handler call.
    unsafe {
        libc::pthread_kill(worker.as_pthread_t(), interrupt_signal());
    }
}

/// `hosts` set `swap_after` and there is no swap to page them out to: their memory would stay
/// resident, silently.
#[derive(Debug, thiserror::Error)]
pub enum SwapMissing {
    #[error("cannot read /proc/swaps to check swap for swap_after: {0}")]
    Unreadable(io::Error),
    #[error(
        "host(s) {hosts} set swap_after, but this machine has no swap in use (/proc/swaps lists \
         none), so a paused host's memory would stay resident: add swap (a file: fallocate -l 4G \
         /swapfile && chmod 600 /swapfile && mkswap /swapfile && swapon /swapfile; or zram: \
         zramctl --find --size 4G, mkswap and swapon that device), or remove swap_after"
    )]
    None { hosts: String },
}

/// Checks that the machine has swap in use when any of `hosts` (those with `swap_after`) does.
pub fn require_swap(hosts: &[&str]) -> Result<(), SwapMissing> {
    if hosts.is_empty() {
        return Ok(());
    }
    let swaps = std::fs::read_to_string("/proc/swaps").map_err(SwapMissing::Unreadable)?;
    if swaps_listed(&swaps) {
        Ok(())
    } else {
        Err(SwapMissing::None {
            hosts: hosts.join(", "),
        })
    }
}

fn swaps_listed(proc_swaps: &str) -> bool {
    proc_swaps.lines().skip(1).any(|l| !l.trim().is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "f6e536270e239ead8cd92119508895f297ab36c7142807178021cbc82a260555";

    #[test]
    fn finds_the_v1_and_v2_memory_cgroups_by_id() {
        let v1 =
            MemoryCgroup::for_id(ID, None, |f| f.starts_with("/sys/fs/cgroup/memory/")).unwrap();
        assert_eq!(
            v1.dir,
            PathBuf::from(format!("/sys/fs/cgroup/memory/docker/{ID}"))
        );
        assert!(!v1.v2);
        let v2 = MemoryCgroup::for_id(ID, None, |f| f.ends_with(".scope/memory.reclaim")).unwrap();
        assert_eq!(
            v2.dir,
            PathBuf::from(format!("/sys/fs/cgroup/system.slice/docker-{ID}.scope"))
        );
        assert!(v2.v2);
        assert_eq!(MemoryCgroup::for_id("../x", None, |_| true), None);
        assert_eq!(MemoryCgroup::for_id(ID, None, |_| false), None);
    }

    #[test]
    fn anonymous_mappings_and_code_are_read_back() {
        let maps = "\
55d0c0a00000-55d0c0a21000 r--p 00000000 00:1f 123 /hello
55d0c0a21000-55d0c0b00000 r-xp 00021000 00:1f 123 /hello
7e0000000000-7e0040000000 r--s 00000000 00:1f 456 /data/big.db
55d0c2000000-55d0c2022000 rw-p 00000000 00:00 0 [heap]
7f0000000000-7f0004000000 rw-p 00000000 00:00 0
7ffd1000-7ffd2000 rw-p 00000000 00:00 0 [stack]
7ffd3000-7ffd5000 r--p 00000000 00:00 0 [vvar]
7ffd5000-7ffd7000 r-xp 00000000 00:00 0 [vdso]
ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0 [vsyscall]
garbage line
";
        let found: Vec<(u64, u64)> = prefetched_mappings(maps).collect();
        assert_eq!(
            found,
            [
                (0x55d0_c0a2_1000, 0x55d0_c0b0_0000),
                (0x55d0_c200_0000, 0x55d0_c202_2000),
                (0x7f00_0000_0000, 0x7f00_0400_0000),
                (0x7ffd_1000, 0x7ffd_2000),
            ]
        );
    }

    #[test]
    fn swap_is_active_when_proc_swaps_lists_one() {
        let header = "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n";
        assert!(!swaps_listed(header));
        assert!(!swaps_listed(""));
        assert!(swaps_listed(&format!(
            "{header}/dev/zram0                              partition\t4194300\t\t0\t\t100\n"
        )));
    }
}
