//! Client network namespaces: the far end of a link imag attaches to. The demo, the benchmarks and
//! the integration tests build their topology with these, so all three look the same; the test
//! networks ([`crate::testnet`]) name them, the clients ([`crate::clients`]) run inside them.
//!
//! A [`ClientNs`] is a namespace joined to the root namespace by a veth pair: the host side (the
//! interface imag attaches to) gets `host_cidr`, the namespace side (`eth0`) gets `client_cidr`,
//! and the namespace routes the given prefixes via the host side. Dropping it deletes the
//! namespace, which deletes the veth pair with it.

use std::{fs::File, io, os::fd::AsRawFd, process::Command};

pub struct ClientNs {
    pub name: String,
    /// Host-side interface of the veth pair (the attach interface).
    pub host_if: String,
    pub host_cidr: String,
    pub client_cidr: String,
}

/// Runs `ip` with `args`, failing with its stderr.
pub fn ip(args: &[&str]) -> io::Result<()> {
    let out = Command::new("ip").args(args).output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

impl ClientNs {
    /// Creates the namespace and veth pair, replacing leftovers of an earlier run with the same
    /// names.
    pub fn create(
        name: &str,
        host_if: &str,
        host_cidr: &str,
        client_cidr: &str,
        routes: &[&str],
    ) -> io::Result<ClientNs> {
        let _ = ip(&["netns", "del", name]);
        let _ = ip(&["link", "del", host_if]);
        ip(&["netns", "add", name])?;
        let ns = ClientNs {
            name: name.to_string(),
            host_if: host_if.to_string(),
            host_cidr: host_cidr.to_string(),
            client_cidr: client_cidr.to_string(),
        };
        ip(&[
            "link", "add", host_if, "type", "veth", "peer", "name", "eth0", "netns", name,
        ])?;
        ip(&["addr", "add", host_cidr, "dev", host_if])?;
        ip(&["link", "set", host_if, "up"])?;
        ip(&["-n", name, "addr", "add", client_cidr, "dev", "eth0"])?;
        ip(&["-n", name, "link", "set", "eth0", "up"])?;
        ip(&["-n", name, "link", "set", "lo", "up"])?;
        let gateway = host_cidr.split('/').next().unwrap_or(host_cidr);
        for route in routes {
            ip(&["-n", name, "route", "add", route, "via", gateway])?;
        }
        Ok(ns)
    }

    /// The client's own address.
    pub fn client_addr(&self) -> &str {
        self.client_cidr
            .split('/')
            .next()
            .unwrap_or(&self.client_cidr)
    }

    /// Runs `f` on a thread that has entered this namespace.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> io::Result<T> {
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    enter_netns(&self.name)?;
                    Ok(f())
                })
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }
}

impl Drop for ClientNs {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.name]);
        let _ = ip(&["link", "del", &self.host_if]);
    }
}

/// Moves the calling thread into the named network namespace.
pub fn enter_netns(name: &str) -> io::Result<()> {
    let file = File::open(format!("/var/run/netns/{name}"))?;
    // SAFETY: a valid namespace fd; setns affects only the calling thread.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Whether any of imag's programs is attached to `iface`: XDP (as `ip link` shows it) or a TC
/// ingress program (as the kernel's TCX query reports it).
pub fn holding_program_attached(iface: &str) -> bool {
    let xdp = Command::new("ip")
        .args(["link", "show", iface])
        .output()
        .is_ok_and(|link| String::from_utf8_lossy(&link.stdout).contains("xdp"));
    let tc =
        aya::programs::SchedClassifier::query_tcx(iface, aya::programs::tc::TcAttachType::Ingress)
            .is_ok_and(|(_, programs)| !programs.is_empty());
    xdp || tc
}
