//! A container's cgroup freezer, driven directly: how the engine pauses and unpauses, without the
//! engine's round trip through containerd and a freshly executed runc (tens of milliseconds).
//!
//! The engine keeps its own idea of "paused", and runc refuses to resume a container whose
//! freezer is already thawed ("container not paused"), so a direct thaw leaves `docker inspect`
//! saying paused. [`super::docker::Docker`] therefore repairs the engine's view later, at a quiet
//! moment: freeze again, then let the engine unpause (`settle`, in `docker/thaw.rs`).

use std::{io, path::PathBuf};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Freezer {
    /// `freezer.state` (cgroup v1) or `cgroup.freeze` (cgroup v2).
    file: PathBuf,
    v2: bool,
}

impl Freezer {
    /// The freezer of the cgroup process `pid` lives in.
    pub fn of_process(pid: u32) -> io::Result<Freezer> {
        let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
        Freezer::from_cgroups(&cgroups, |path| std::path::Path::new(path).exists())
            .ok_or_else(|| io::Error::other(format!("process {pid} has no freezer cgroup")))
    }

    /// The freezer named by a `/proc/<pid>/cgroup` listing: the v1 freezer controller's
    /// `freezer.state`, else the v2 group's `cgroup.freeze` (if `exists` says it is there).
    fn from_cgroups(listing: &str, exists: impl Fn(&str) -> bool) -> Option<Freezer> {
        for line in listing.lines() {
            let mut parts = line.splitn(3, ':');
            let (Some(_), Some(controllers), Some(path)) =
                (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            if controllers.split(',').any(|c| c == "freezer") && path != "/" {
                return Some(Freezer {
                    file: PathBuf::from(format!("/sys/fs/cgroup/freezer{path}/freezer.state")),
                    v2: false,
                });
            }
        }
        let v2 = listing.lines().find_map(|l| l.strip_prefix("0::"))?;
        let file = format!("/sys/fs/cgroup{v2}/cgroup.freeze");
        exists(&file).then(|| Freezer {
            file: PathBuf::from(file),
            v2: true,
        })
    }

    pub fn thaw(&self) -> io::Result<()> {
        std::fs::write(&self.file, if self.v2 { "0" } else { "THAWED" })
    }

    pub fn freeze(&self) -> io::Result<()> {
        std::fs::write(&self.file, if self.v2 { "1" } else { "FROZEN" })
    }

    pub fn is_frozen(&self) -> io::Result<bool> {
        let state = std::fs::read_to_string(&self.file)?;
        Ok(if self.v2 {
            state.trim() == "1"
        } else {
            state.trim() == "FROZEN"
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_v1_freezer_of_a_docker_container() {
        let listing =
            "12:pids:/docker/abc\n6:freezer:/docker/abc\n1:name=systemd:/docker/abc\n0::/\n";
        let freezer = Freezer::from_cgroups(listing, |_| false).unwrap();
        assert_eq!(
            freezer.file,
            PathBuf::from("/sys/fs/cgroup/freezer/docker/abc/freezer.state")
        );
        assert!(!freezer.v2);
    }

    #[test]
    fn finds_the_v2_freeze_file() {
        let listing = "0::/system.slice/docker-abc.scope\n";
        let freezer = Freezer::from_cgroups(listing, |_| true).unwrap();
        assert_eq!(
            freezer.file,
            PathBuf::from("/sys/fs/cgroup/system.slice/docker-abc.scope/cgroup.freeze")
        );
        assert!(freezer.v2);
    }

    #[test]
    fn the_root_cgroup_has_no_freezer() {
        assert_eq!(
            Freezer::from_cgroups("6:freezer:/\n0::/\n", |_| false),
            None
        );
    }
}
