//! A container's socket tables, read through the `procfs` crate from `/proc/<pid>/net/*`, which
//! shows the network namespace of process `pid` (the container's init): the orchestrator counts
//! a host's established connections when it decides idleness, and [`crate::readiness`] asks
//! whether a `udp:PORT` probe's socket is bound.
//!
//! A table that cannot be read counts as empty, so both answers are plain values: the process
//! may just have exited (the container stopped), which the caller learns from the engine, and
//! `tcp6`/`udp6` are missing when IPv6 is disabled.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use procfs::{
    ProcResult,
    net::{TcpNetEntry, TcpState},
    process::Process,
};

/// Established TCP connections whose local address is `addr` (plain IPv4, or v4-mapped in
/// `tcp6`), in the network namespace of process `pid`.
pub fn established_connections(pid: u32, addr: Ipv4Addr) -> u64 {
    let Some(process) = process(pid) else {
        return 0;
    };
    [process.tcp(), process.tcp6()]
        .into_iter()
        .filter_map(Result::ok)
        .map(|table| count_established(&table, addr))
        .sum()
}

/// Whether a UDP socket (IPv4 or IPv6) is bound to local `port` in the network namespace of
/// process `pid`.
pub fn udp_port_bound(pid: u32, port: u16) -> bool {
    let Some(process) = process(pid) else {
        return false;
    };
    let bound = |table: ProcResult<Vec<procfs::net::UdpNetEntry>>| {
        table.is_ok_and(|entries| has_local_port(entries.iter().map(|e| e.local_address), port))
    };
    // The second table is read only when the first has no such socket.
    bound(process.udp()) || bound(process.udp6())
}

/// The memory charged to the cgroup of process `pid` (a container's init): cgroup v1's
/// `memory/<path>/memory.usage_in_bytes`, or v2's `<path>/memory.current`. `None` if the process
/// is gone or neither file can be read. The orchestrator weighs hosts without a `memory` limit by
/// it.
pub fn memory_usage(pid: u32) -> Option<u64> {
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let read =
        |path: String| -> Option<u64> { std::fs::read_to_string(path).ok()?.trim().parse().ok() };
    cgroup_files(&cgroups).into_iter().find_map(read)
}

/// Where the memory usage of a process in the cgroups `cgroups` (`/proc/<pid>/cgroup`) is
/// read, in order of preference.
fn cgroup_files(cgroups: &str) -> Vec<String> {
    let mut files = Vec::new();
    for line in cgroups.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next(), parts.next(), parts.next());
        let (Some(controllers), Some(path)) = (controllers, path) else {
            continue;
        };
        if controllers.split(',').any(|c| c == "memory") {
            files.insert(
                0,
                format!("/sys/fs/cgroup/memory{path}/memory.usage_in_bytes"),
            );
        } else if controllers.is_empty() {
            files.push(format!("/sys/fs/cgroup{path}/memory.current"));
        }
    }
    files
}

fn process(pid: u32) -> Option<Process> {
    Process::new(i32::try_from(pid).ok()?).ok()
}

/// Counts the ESTABLISHED entries of a tcp or tcp6 table whose local address is `addr`.
fn count_established(table: &[TcpNetEntry], addr: Ipv4Addr) -> u64 {
    table
        .iter()
        .filter(|entry| {
            entry.state == TcpState::Established && local_ipv4(entry.local_address) == Some(addr)
        })
        .count() as u64
}

/// The IPv4 address of a socket: its own, or the one inside a v4-mapped IPv6 address (how a
/// dual-stack listener's IPv4 connections appear in tcp6).
fn local_ipv4(local: SocketAddr) -> Option<Ipv4Addr> {
    match local.ip() {
        IpAddr::V4(ip) => Some(ip),
        IpAddr::V6(ip) => ip.to_ipv4_mapped(),
    }
}

fn has_local_port(mut locals: impl Iterator<Item = SocketAddr>, port: u16) -> bool {
    locals.any(|local| local.port() == port)
}

#[cfg(test)]
mod tests {
    use procfs::{
        FromBufReadSI, current_system_info,
        net::{TcpNetEntries, UdpNetEntries},
    };

    use super::*;

    // Tables as the kernel writes them (addresses are the hex of each 32-bit word in host byte
    // order), parsed by procfs itself.
    fn tcp(text: &str) -> Vec<TcpNetEntry> {
        TcpNetEntries::from_buf_read(text.as_bytes(), current_system_info())
            .unwrap()
            .0
    }

    fn udp_locals(text: &str) -> Vec<SocketAddr> {
        UdpNetEntries::from_buf_read(text.as_bytes(), current_system_info())
            .unwrap()
            .0
            .iter()
            .map(|e| e.local_address)
            .collect()
    }

    const TCP_HEADER: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when \
                              retrnsmt   uid  timeout inode\n";

    #[test]
    fn memory_is_read_from_the_v1_controller_first_else_v2() {
        let v1 = "12:memory:/docker/abc\n0::/system.slice/x.scope\n";
        assert_eq!(
            cgroup_files(v1),
            vec![
                "/sys/fs/cgroup/memory/docker/abc/memory.usage_in_bytes".to_string(),
                "/sys/fs/cgroup/system.slice/x.scope/memory.current".to_string(),
            ]
        );
        assert!(cgroup_files("3:cpu,cpuacct:/docker/abc\n").is_empty());
        assert_eq!(memory_usage(u32::MAX), None, "no such process");
    }

    #[test]
    fn established_connections_are_counted_by_local_address() {
        let table = format!(
            "{TCP_HEADER}\
   0: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 101 1 0 100 0 0 10 0
   1: 0A004D0A:1F90 02004E0A:9C40 01 00000000:00000000 00:00000000 00000000     0        0 102 1 0 20 4 30 10 -1
   2: 0A004D0A:1F90 02004E0A:9C41 06 00000000:00000000 03:00001770 00000000     0        0 0 3 0
   3: 0B004D0A:1F90 02004E0A:9C42 01 00000000:00000000 00:00000000 00000000     0        0 103 1 0 20 4 30 10 -1
"
        );
        assert_eq!(
            count_established(&tcp(&table), Ipv4Addr::new(10, 77, 0, 10)),
            1,
            "listening, time-wait and other hosts do not count"
        );
        let table6 = format!(
            "{TCP_HEADER}\
   0: 0000000000000000FFFF00000A004D0A:1F90 0000000000000000FFFF000002004E0A:9C40 01 00000000:00000000 00:00000000 00000000     0        0 104 1 0 20 4 30 10 -1
   1: 00000000000000000000000001000000:1F90 00000000000000000000000001000000:9C41 01 00000000:00000000 00:00000000 00000000     0        0 105 1 0 20 4 30 10 -1
"
        );
        assert_eq!(
            count_established(&tcp(&table6), Ipv4Addr::new(10, 77, 0, 10)),
            1,
            "v4-mapped counts, ::1 does not"
        );
    }

    #[test]
    fn reads_bound_ports_from_udp_tables() {
        let udp = udp_locals(
            "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  123: 00000000:14E9 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 41 2 0000000000000000 0
",
        );
        assert!(has_local_port(udp.iter().copied(), 5353));
        assert!(!has_local_port(udp.iter().copied(), 53));
        let udp6 = udp_locals(
            "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
    5: 00000000000000000000000000000000:0035 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 42 2 0000000000000000 0
",
        );
        assert!(has_local_port(udp6.iter().copied(), 53));
        assert!(!has_local_port(udp_locals("header only\n").into_iter(), 53));
    }

    /// Reads this test process's own tables through the same path as another pid's: a socket
    /// it binds must show up.
    #[test]
    fn reads_a_live_process_table() {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = socket.local_addr().unwrap().port();
        assert!(udp_port_bound(std::process::id(), port));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let _server = listener.accept().unwrap();
        assert!(
            established_connections(std::process::id(), Ipv4Addr::LOCALHOST) >= 2,
            "both ends of {client:?} are established on 127.0.0.1"
        );
    }
}
