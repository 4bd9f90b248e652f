//! Where the datapath lives on the BPF filesystem so that it outlives the agent:
//! `/sys/fs/bpf/imag/<network>/` holds the maps (by name) and the links (`link-…`). A restarted
//! agent — also after `kill -9` — reopens the maps and adopts the links; `detach` removes the
//! directory, which detaches everything.

use std::{
    ffi::CString,
    io,
    path::{Path, PathBuf},
};

use aya::{maps::MapData, programs::links::FdLink};
use imag_common::maps;

const BPFFS: &str = "/sys/fs/bpf";
const TRACEFS: &str = "/sys/kernel/tracing";

/// Why the pin directory (or a file system the datapath needs) cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PinsError {
    #[error(
        "{fstype} is not mounted at {target} and mounting it failed: mount it with \
         `mount -t {fstype} {fstype} {target}`"
    )]
    Mount {
        fstype: &'static str,
        target: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("creating the pin directory {} failed (imag needs root)", dir.display())]
    CreateDir {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "cannot open the pinned map {}: run `imag-agent detach` to remove the datapath an \
         earlier agent left",
        path.display()
    )]
    OpenMap {
        path: PathBuf,
        #[source]
        source: aya::maps::MapError,
    },
    #[error(
        "the pinned map {} was left by an incompatible imag version (key/value sizes \
         {found_key}/{found_value}, expected {key}/{value}): run `imag-agent detach` first",
        path.display()
    )]
    Incompatible {
        path: PathBuf,
        found_key: u32,
        found_value: u32,
        key: usize,
        value: usize,
    },
    #[error(
        "the datapath pinned in {} was left by an older imag version: it has no {map} map, and \
         its attached programs lack what goes with it; run `imag-agent detach` first",
        dir.display()
    )]
    Outdated { dir: PathBuf, map: &'static str },
    #[error(
        "the pinned map {} has room for {room} hosts, but the configuration has {needed}: run \
         `imag-agent detach` first (the agent sizes its maps for the configuration)",
        path.display()
    )]
    TooSmall {
        path: PathBuf,
        room: u32,
        needed: u32,
    },
    #[error("pinning link {name} at {} failed", path.display())]
    PinLink {
        name: String,
        path: PathBuf,
        #[source]
        source: aya::pin::PinError,
    },
}

/// The pin directory of one imag network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pins {
    dir: PathBuf,
}

impl Pins {
    pub fn for_network(network: &str) -> Pins {
        Pins {
            dir: Path::new(BPFFS).join("imag").join(network),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether an earlier agent left a datapath here.
    pub fn exists(&self) -> bool {
        self.map(maps::HOSTS).exists()
    }

    /// Mounts the BPF filesystem if needed and creates the directory.
    pub fn prepare(&self) -> Result<(), PinsError> {
        ensure_bpffs()?;
        std::fs::create_dir_all(&self.dir).map_err(|source| PinsError::CreateDir {
            dir: self.dir.clone(),
            source,
        })
    }

    pub fn map(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    pub fn link(&self, name: &str) -> PathBuf {
        self.dir.join(format!("link-{name}"))
    }

    /// Opens a pinned link, if there is one.
    pub fn open_link(&self, name: &str) -> Option<FdLink> {
        let path = self.link(name);
        if !path.exists() {
            return None;
        }
        aya::programs::links::PinnedLink::from_pin(&path)
            .ok()
            .map(FdLink::from)
    }

    /// Removes a link's pin; the link is detached once no process holds it.
    pub fn remove_link(&self, name: &str) {
        let _ = std::fs::remove_file(self.link(name));
    }

    /// Removes every pin and the directory: detaches all links and frees all maps (once no
    /// process holds them).
    pub fn remove_all(&self) -> io::Result<()> {
        match std::fs::read_dir(&self.dir) {
            Ok(entries) => {
                // Another process (an agent detaching while `imag-agent detach` cleans up) may
                // remove the same pins at the same time: what is already gone is fine.
                let gone = |result: io::Result<()>| match result {
                    Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
                    other => other,
                };
                for entry in entries {
                    gone(entry.and_then(|e| std::fs::remove_file(e.path())))?;
                }
                gone(std::fs::remove_dir(&self.dir))?;
                let _ = std::fs::remove_dir(self.dir.parent().expect("imag/<network>"));
                Ok(())
            }
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(err) => Err(err),
        }
    }

    /// Checks that a datapath left here (if any) has every map in `names`: one without a map
    /// this agent needs came from an older version whose programs are still attached.
    pub fn check_complete(&self, names: &[&'static str]) -> Result<(), PinsError> {
        match names.iter().find(|name| !self.map(name).exists()) {
            Some(map) if self.exists() => Err(PinsError::Outdated {
                dir: self.dir.clone(),
                map,
            }),
            _ => Ok(()),
        }
    }

    /// Checks that a pinned map has the key and value sizes this agent expects and room for
    /// `entries`; a datapath left by an incompatible version, or sized for fewer hosts, must be
    /// detached before this agent can adopt it.
    pub fn check_map(
        &self,
        name: &str,
        key_size: usize,
        value_size: usize,
        entries: u32,
    ) -> Result<(), PinsError> {
        let path = self.map(name);
        if !path.exists() {
            return Ok(());
        }
        let info = match MapData::from_pin(&path).and_then(|m| m.info()) {
            Ok(info) => info,
            Err(source) => return Err(PinsError::OpenMap { path, source }),
        };
        if info.key_size() as usize != key_size || info.value_size() as usize != value_size {
            return Err(PinsError::Incompatible {
                path,
                found_key: info.key_size(),
                found_value: info.value_size(),
                key: key_size,
                value: value_size,
            });
        }
        if info.max_entries() < entries {
            return Err(PinsError::TooSmall {
                path,
                room: info.max_entries(),
                needed: entries,
            });
        }
        Ok(())
    }

    /// Pins `link` as `name` (see [`Pins::link`]).
    pub fn pin_link(&self, name: &str, link: FdLink) -> Result<FdLink, PinsError> {
        let path = self.link(name);
        match link.pin(&path) {
            Ok(pinned) => Ok(FdLink::from(pinned)),
            Err(source) => Err(PinsError::PinLink {
                name: name.to_string(),
                path,
                source,
            }),
        }
    }
}

/// `link` pinned as `name` when the datapath is pinned (`pins`), else as it is.
pub fn pin_if_pinning(pins: Option<&Pins>, name: &str, link: FdLink) -> Result<FdLink, PinsError> {
    match pins {
        Some(pins) => pins.pin_link(name, link),
        None => Ok(link),
    }
}

fn ensure_bpffs() -> Result<(), PinsError> {
    mount_unless("bpf", BPFFS, |fields| {
        fields.get(1) == Some(&BPFFS) && fields.get(2) == Some(&"bpf")
    })
}

/// Mounts tracefs at /sys/kernel/tracing if no tracefs is mounted (tracepoints need it).
pub fn ensure_tracefs() -> Result<(), PinsError> {
    mount_unless("tracefs", TRACEFS, |fields| {
        fields.get(2) == Some(&"tracefs")
    })
}

/// Mounts a `fstype` file system at `target` unless a line of /proc/self/mounts (split into its
/// fields) says `mounted`.
fn mount_unless(
    fstype: &'static str,
    target: &'static str,
    mounted: impl Fn(&[&str]) -> bool,
) -> Result<(), PinsError> {
    let failed = |source| PinsError::Mount {
        fstype,
        target,
        source,
    };
    let mounts = std::fs::read_to_string("/proc/self/mounts").map_err(failed)?;
    if mounts
        .lines()
        .any(|l| mounted(&l.split_whitespace().collect::<Vec<_>>()))
    {
        return Ok(());
    }
    let c_target = CString::new(target).expect("no NUL");
    let c_fstype = CString::new(fstype).expect("no NUL");
    // SAFETY: valid NUL-terminated strings; no data argument.
    let rc = unsafe {
        libc::mount(
            c_fstype.as_ptr(),
            c_target.as_ptr(),
            c_fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(failed(io::Error::last_os_error()));
    }
    Ok(())
}
