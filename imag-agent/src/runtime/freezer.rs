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
    /// The freezer of the container with ID `id` (under `parent`, the engine's cgroup parent
    /// when one was set). Found from the ID, never through the container's PID: a PID can be
    /// reused by an unrelated process once the container is gone, while an ID names one
    /// container, and its cgroup disappears with it (a late thaw then fails instead of
    /// touching someone else).
    pub fn of_container(id: &str, parent: Option<&str>) -> Option<Freezer> {
        Freezer::for_id(id, parent, |path| std::path::Path::new(path).exists())
    }

    /// The first of the places a container's freezer lives, by cgroup version and driver, that
    /// `exists` says is there: v1 `freezer/<parent>/<id>` (cgroupfs driver) or
    /// `freezer/<slice>/docker-<id>.scope` (systemd driver), else the same under v2.
    fn for_id(id: &str, parent: Option<&str>, exists: impl Fn(&str) -> bool) -> Option<Freezer> {
        let groups = container_groups(id, parent)?;
        let v1 = groups
            .iter()
            .map(|g| (format!("/sys/fs/cgroup/freezer/{g}/freezer.state"), false));
        let v2 = groups
            .iter()
            .map(|g| (format!("/sys/fs/cgroup/{g}/cgroup.freeze"), true));
        v1.chain(v2)
            .find(|(file, _)| exists(file))
            .map(|(file, v2)| Freezer {
                file: PathBuf::from(file),
                v2,
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

/// Where the cgroup of the container with ID `id` may sit, below a controller's mount (v1) or the
/// unified hierarchy (v2): `<parent>/<id>` (cgroupfs driver, parent "docker" unless the engine
/// was given another) or `<slice>/docker-<id>.scope` (systemd driver). `None` for an ID that is
/// not hex (it must not become part of a path).
pub(super) fn container_groups(id: &str, parent: Option<&str>) -> Option<[String; 2]> {
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let parent = parent
        .map(|p| p.trim_matches('/'))
        .filter(|p| !p.is_empty() && !p.split('/').any(|part| part == ".."));
    let cgroupfs = parent.unwrap_or("docker");
    let slice = parent
        .filter(|p| {
            std::path::Path::new(p)
                .extension()
                .is_some_and(|e| e == "slice")
        })
        .unwrap_or("system.slice");
    Some([
        format!("{cgroupfs}/{id}"),
        format!("{slice}/docker-{id}.scope"),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "f6e536270e239ead8cd92119508895f297ab36c7142807178021cbc82a260555";

    #[test]
    fn finds_the_v1_freezer_of_a_docker_container_by_its_id() {
        let freezer = Freezer::for_id(ID, None, |f| {
            f.starts_with("/sys/fs/cgroup/freezer/docker/")
        })
        .unwrap();
        assert_eq!(
            freezer.file,
            PathBuf::from(format!("/sys/fs/cgroup/freezer/docker/{ID}/freezer.state"))
        );
        assert!(!freezer.v2);
    }

    #[test]
    fn finds_the_systemd_and_v2_freezers() {
        let systemd = Freezer::for_id(ID, None, |f| f.contains(".scope/freezer.state")).unwrap();
        assert_eq!(
            systemd.file,
            PathBuf::from(format!(
                "/sys/fs/cgroup/freezer/system.slice/docker-{ID}.scope/freezer.state"
            ))
        );
        let v2 = Freezer::for_id(ID, Some("/custom"), |f| f.ends_with("cgroup.freeze")).unwrap();
        assert_eq!(
            v2.file,
            PathBuf::from(format!("/sys/fs/cgroup/custom/{ID}/cgroup.freeze"))
        );
        assert!(v2.v2);
    }

    #[test]
    fn no_freezer_without_a_cgroup_or_from_a_bad_id() {
        assert_eq!(Freezer::for_id(ID, None, |_| false), None);
        assert_eq!(Freezer::for_id("../../etc", None, |_| true), None);
        assert_eq!(Freezer::for_id("", None, |_| true), None);
        assert_eq!(
            Freezer::for_id(ID, Some("../x"), |_| true).unwrap().file,
            PathBuf::from(format!("/sys/fs/cgroup/freezer/docker/{ID}/freezer.state"))
        );
    }
}
