//! Looking up network interfaces by name: index, MAC address, and whether they are virtual.

use std::{ffi::CString, fs, path::Path};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub index: u32,
    pub mac: [u8; 6],
    /// veth, bridge, and other software devices (no `device` link in sysfs).
    pub is_virtual: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum InterfaceError {
    #[error("interface {0:?} does not exist: check the name with `ip link show`")]
    NotFound(String),
    #[error(
        "interface {name:?} has no Ethernet address ({why}); imag attaches to Ethernet interfaces only"
    )]
    NotEthernet { name: String, why: String },
}

impl Interface {
    pub fn lookup(name: &str) -> Result<Interface, InterfaceError> {
        let not_found = || InterfaceError::NotFound(name.to_string());
        if name.is_empty() || name.contains('/') {
            return Err(not_found());
        }
        let c_name = CString::new(name).map_err(|_| not_found())?;
        // SAFETY: c_name is a valid NUL-terminated string.
        let index = unsafe { libc::if_nametoindex(c_name.as_ptr()) };
        if index == 0 {
            return Err(not_found());
        }
        let sys = Path::new("/sys/class/net").join(name);
        let mac = fs::read_to_string(sys.join("address"))
            .map_err(|err| InterfaceError::NotEthernet {
                name: name.to_string(),
                why: err.to_string(),
            })
            .and_then(|text| {
                parse_mac(text.trim()).ok_or_else(|| InterfaceError::NotEthernet {
                    name: name.to_string(),
                    why: format!("address {:?}", text.trim()),
                })
            })?;
        Ok(Interface {
            name: name.to_string(),
            index,
            mac,
            is_virtual: !sys.join("device").exists(),
        })
    }
}

/// A container's `eth0` link as seen from the host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerLink {
    /// The host side of the veth pair.
    pub host_side: Interface,
    /// `eth0`'s own MAC address, inside the container (None: netlink did not say).
    pub container_mac: Option<[u8; 6]>,
}

/// Whether an interface of this name exists and is no bridge (`Some(kind)`, e.g. "veth" or
/// "device"): a name imag's Docker network cannot use for its bridge.
pub fn non_bridge(name: &str) -> Option<String> {
    let sys = Path::new("/sys/class/net").join(name);
    if name.is_empty() || name.contains('/') || name == "." || name == ".." || !sys.exists() {
        return None;
    }
    if sys.join("bridge").exists() {
        return None;
    }
    let uevent = fs::read_to_string(sys.join("uevent")).unwrap_or_default();
    let kind = uevent
        .lines()
        .find_map(|l| l.strip_prefix("DEVTYPE="))
        .map_or_else(
            || {
                if sys.join("device").exists() {
                    "network device".to_string()
                } else {
                    "virtual interface".to_string()
                }
            },
            str::to_string,
        );
    Some(kind)
}

/// The host side of a container's `eth0` veth pair: asks netlink, from inside the container's
/// network namespace (entered through `/proc/<pid>/ns/net` on a thread of its own), which
/// interface `eth0` is linked to (and its MAC address), and looks that index up here.
pub fn host_side_of_container(pid: u32) -> std::io::Result<ContainerLink> {
    use futures::TryStreamExt as _;
    use rtnetlink::packet_route::link::LinkAttribute;

    let (peer_index, container_mac) = std::thread::scope(|scope| {
        scope
            .spawn(|| -> std::io::Result<(u32, Option<[u8; 6]>)> {
                let netns = fs::File::open(format!("/proc/{pid}/ns/net"))?;
                // SAFETY: a valid namespace fd; setns affects only this thread.
                if unsafe {
                    libc::setns(std::os::fd::AsRawFd::as_raw_fd(&netns), libc::CLONE_NEWNET)
                } != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                // The netlink socket must be created on this thread, inside the namespace.
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_io()
                    .build()?;
                runtime.block_on(async {
                    let (connection, handle, _) = rtnetlink::new_connection()?;
                    tokio::spawn(connection);
                    let mut links = handle.link().get().match_name("eth0").execute();
                    while let Some(link) = links.try_next().await.map_err(std::io::Error::other)? {
                        let mut peer = None;
                        let mut mac = None;
                        for attr in link.attributes {
                            match attr {
                                LinkAttribute::Link(index) => peer = Some(index),
                                LinkAttribute::Address(bytes) => mac = bytes.try_into().ok(),
                                _ => {}
                            }
                        }
                        if let Some(index) = peer {
                            return Ok((index, mac));
                        }
                    }
                    Err(std::io::Error::other("the container has no veth eth0"))
                })
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })?;
    let name = name_of_index(peer_index).ok_or_else(std::io::Error::last_os_error)?;
    let host_side = Interface::lookup(&name).map_err(std::io::Error::other)?;
    Ok(ContainerLink {
        host_side,
        container_mac,
    })
}

/// The name of the interface with index `index`, if there is one (in this thread's namespace).
pub fn name_of_index(index: u32) -> Option<String> {
    let mut name = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: name has room for IF_NAMESIZE bytes.
    if unsafe { libc::if_indextoname(index, name.as_mut_ptr()) }.is_null() {
        return None;
    }
    // SAFETY: if_indextoname wrote a NUL-terminated string.
    let name = unsafe { std::ffi::CStr::from_ptr(name.as_ptr()) };
    Some(name.to_string_lossy().into_owned())
}

pub fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut mac {
        *byte = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_no_bridge_and_absent_names_are_free() {
        assert!(
            non_bridge("lo").is_some(),
            "lo exists and is no bridge, so it cannot be imag's bridge"
        );
        assert_eq!(non_bridge("imag-absent-if"), None);
        assert_eq!(
            non_bridge(".."),
            None,
            "never a path outside /sys/class/net"
        );
    }

    #[test]
    fn mac_parsing() {
        assert_eq!(
            parse_mac("02:42:0a:4d:00:0a"),
            Some([2, 0x42, 10, 0x4d, 0, 10])
        );
        assert_eq!(parse_mac("02:42:0a:4d:00"), None);
        assert_eq!(parse_mac("02:42:0a:4d:00:0a:01"), None);
        assert_eq!(parse_mac("zz:42:0a:4d:00:0a"), None);
    }

    #[test]
    fn loopback_exists_and_is_virtual() {
        let lo = Interface::lookup("lo").unwrap();
        assert_eq!(lo.index, 1);
        assert!(lo.is_virtual);
    }

    #[test]
    fn unknown_interface_names_the_fix() {
        let err = Interface::lookup("nosuchif0").unwrap_err().to_string();
        assert!(
            err.contains("does not exist") && err.contains("ip link"),
            "{err}"
        );
    }
}
