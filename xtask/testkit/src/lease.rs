//! Generated identities for test networks, so that no test picks a name or a subnet by hand and
//! tests running at the same time (threads of one test binary, or several processes) never
//! collide. [`crate::testnet::TestNet`] builds its names and subnets from a [`Lease`].
//!
//! A lease is an index in `1..=250` (it numbers the subnets `10.200.<index>.0/24` and
//! `10.201.<index>.0/24`) held exclusively through an advisory lock on
//! `/run/imag-testkit/<index>.lock`: a lock the kernel drops when its holder dies, however it
//! dies. Indices are tried from a per-process atomic counter, so that threads of one process
//! take different ones without contending. The tag naming the lease's resources (`imt<index>p<pid>`,
//! in the style of aya's `NetNsGuard`) also carries the pid, so that a name is never reused by a
//! later run while Docker may still be removing the last one. The lock file records the tag of
//! its holder: whoever takes an index next finds there what a crashed holder may have left.

use std::{
    fs::{File, OpenOptions},
    io::{self, Read as _, Seek as _, Write as _},
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
    sync::atomic::{AtomicUsize, Ordering},
};

/// Where the lock files live (a tmpfs: emptied at boot, when no test can be running).
const LOCK_DIR: &str = "/run/imag-testkit";
/// Indices 1..=250 keep `.0` and `.255` out of the subnet numbering.
const INDICES: usize = 250;

static NEXT: AtomicUsize = AtomicUsize::new(0);

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("cannot use the lock directory {LOCK_DIR}: {0}")]
    LockDir(io::Error),
    #[error("all {INDICES} test network indices are in use (tests of other runs still hold them)")]
    Exhausted,
}

/// An exclusive index and the tag naming its resources, held until dropped.
#[derive(Debug)]
pub struct Lease {
    index: u8,
    tag: String,
    /// The tag of the previous holder, if it did not release the index cleanly.
    stale: Option<String>,
    lock: File,
}

impl Lease {
    /// Takes the next free index.
    pub fn take() -> Result<Lease, LeaseError> {
        std::fs::create_dir_all(LOCK_DIR).map_err(LeaseError::LockDir)?;
        let first = NEXT.fetch_add(1, Ordering::Relaxed);
        for i in 0..INDICES {
            let index = (first + i) % INDICES + 1;
            let path = Path::new(LOCK_DIR).join(format!("{index}.lock"));
            let mut lock = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(LeaseError::LockDir)?;
            // SAFETY: flock on a descriptor we own; non-blocking, so a held index is skipped.
            if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
                continue;
            }
            let mut previous = String::new();
            lock.read_to_string(&mut previous)
                .map_err(LeaseError::LockDir)?;
            let index = u8::try_from(index).expect("at most 250");
            let tag = format!("imt{index}p{}", std::process::id() % 100_000);
            record(&mut lock, &tag).map_err(LeaseError::LockDir)?;
            return Ok(Lease {
                index,
                tag,
                stale: Some(previous.trim().to_string()).filter(|p| !p.is_empty()),
                lock,
            });
        }
        Err(LeaseError::Exhausted)
    }

    /// The index, in `1..=250`.
    pub fn index(&self) -> u8 {
        self.index
    }

    /// The name stem of everything this lease owns; at most 13 characters, so that a suffix of
    /// two more still fits an interface name (15, IFNAMSIZ less the terminating NUL).
    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// The tag of a previous holder of this index that did not release it cleanly (its
    /// resources may still exist).
    pub fn stale(&self) -> Option<&str> {
        self.stale.as_deref()
    }

    /// A file in the temporary directory named after this lease.
    pub fn temp_file(&self, suffix: &str) -> PathBuf {
        std::env::temp_dir().join(format!("{}{suffix}", self.tag))
    }

    /// Marks the index as cleanly released: the next holder has nothing to clean up.
    pub fn release(&mut self) {
        let _ = record(&mut self.lock, "");
    }
}

fn record(lock: &mut File, tag: &str) -> io::Result<()> {
    lock.set_len(0)?;
    lock.rewind()?;
    lock.write_all(tag.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_held_at_once_differ_and_fit_interface_names() {
        // Unprivileged runs cannot create the lock directory: nothing to check there.
        let Ok(mut a) = Lease::take() else { return };
        let mut b = Lease::take().expect("a second index");
        assert_ne!(a.index(), b.index());
        assert_ne!(a.tag(), b.tag());
        assert!(a.tag().len() <= 13, "{}", a.tag());
        a.release();
        b.release();
    }
}
