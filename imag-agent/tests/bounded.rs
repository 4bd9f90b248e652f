//! Nothing a client or a flood does makes the real agent grow without bound or stop answering:
//! oversized and idle control connections do not keep `status` out, and a flood of packets to a
//! cold host leaves the agent's memory bounded and its control socket answering. Memory is
//! measured (the agent's RSS), never time.

use std::{
    io::{Read as _, Write as _},
    os::unix::{net::UnixStream, process::CommandExt as _},
    path::PathBuf,
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use imag_testkit::{AgentProcess, TestNet, agent_binary};

/// The agent's resident memory in KiB.
fn rss_kib(agent: &AgentProcess) -> u64 {
    let pid = agent.pid().expect("the agent runs");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status"))
}

/// How many files the agent has open.
fn open_fds(agent: &AgentProcess) -> usize {
    let pid = agent.pid().expect("the agent runs");
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

fn socket(net: &TestNet) -> PathBuf {
    PathBuf::from(format!("/run/imag/{}.sock", net.network()))
}

fn status_answers(agent: &AgentProcess, when: &str) {
    let status = agent
        .status()
        .unwrap_or_else(|err| panic!("status should answer {when}: {err}"));
    assert!(status["hosts"].is_array(), "{status}");
}

#[test]
fn oversized_and_idle_control_connections_do_not_stop_status() {
    let net = TestNet::new(agent_binary!());
    net.client();
    let agent = net.start_agent(&(net.network_toml() + &net.http_host("web", 10, &[])), &[]);
    let path = socket(&net);
    let rss_before = rss_kib(&agent);
    let fds_before = open_fds(&agent);

    // Far more silent clients than the agent keeps waiting for a request.
    let idle: Vec<UnixStream> = (0..400)
        .map(|_| UnixStream::connect(&path).expect("connecting to the control socket"))
        .collect();
    status_answers(&agent, "with 400 idle connections open");
    let fds_held = open_fds(&agent).saturating_sub(fds_before);
    assert!(
        fds_held <= 64 + 8,
        "the agent should keep at most 64 waiting connections, but holds {fds_held} more files \
         with 400 idle clients"
    );

    // A request line without end: the agent reads 64 KiB of it, answers and closes.
    let mut big = UnixStream::connect(&path).unwrap();
    big.set_write_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    big.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let chunk = vec![b'x'; 64 << 10];
    let mut sent = 0usize;
    while sent < 256 << 20 {
        match big.write(&chunk) {
            Ok(n) => sent += n,
            Err(_) => break,
        }
    }
    let mut answer = Vec::new();
    let _ = big.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.contains("request longer than 65536 bytes"),
        "the oversized request should be refused with a reason, got {answer:?} after {sent} bytes"
    );
    assert!(
        sent < 16 << 20,
        "the agent should stop reading an oversized request, but took {sent} bytes"
    );
    status_answers(&agent, "after an oversized request");
    let grown = rss_kib(&agent).saturating_sub(rss_before);
    assert!(
        grown < 32 << 10,
        "the agent grew by {grown} KiB on idle and oversized control connections"
    );
    drop(idle);

    // Only root may use the socket: another user gets a clear refusal from the CLI.
    let out = std::process::Command::new(agent_binary!())
        .args(["status", "--network", net.network()])
        .env_remove("IMAG_CONFIG")
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "an unprivileged user got an answer");
    assert!(
        err.contains("permission denied") && err.contains(&path.display().to_string()),
        "{err}"
    );
}

#[test]
fn a_flood_to_a_cold_host_keeps_memory_bounded_and_the_control_socket_answering() {
    let net = TestNet::new(agent_binary!());
    let client = net.client();
    // The host stays waking through the flood: every packet to it is held or dropped.
    let host = net.http_host("slow", 10, &[]) + "ready = \"delay:20s\"\nwake_timeout = \"40s\"\n";
    let agent = net.start_agent(&(net.network_toml() + &host), &[]);
    let target = std::net::SocketAddr::from((net.host_addr(10), 9));
    let rss_before = rss_kib(&agent);

    let flooding = AtomicBool::new(true);
    let mut peak = rss_before;
    let mut answered = 0;
    let sent = std::thread::scope(|scope| {
        let flood = scope.spawn(|| {
            client
                .run(|| {
                    let socket = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
                    let payload = vec![0x5a; 1400];
                    let mut sent = 0u64;
                    while flooding.load(Ordering::Relaxed) {
                        if socket.send_to(&payload, target).is_ok() {
                            sent += 1;
                        }
                    }
                    sent
                })
                .unwrap()
        });
        for _ in 0..20 {
            std::thread::sleep(Duration::from_millis(300));
            peak = peak.max(rss_kib(&agent));
            status_answers(&agent, "during the flood");
            answered += 1;
        }
        flooding.store(false, Ordering::Relaxed);
        flood.join().unwrap()
    });
    let grown = peak.saturating_sub(rss_before);
    println!(
        "flood: {sent} packets of 1400 bytes; agent RSS {rss_before} KiB before, peak {peak} KiB \
         (+{grown} KiB); status answered {answered} times"
    );
    assert!(
        sent > 10_000,
        "the flood should have sent many packets, sent {sent}"
    );
    // Held packets are bounded by [hold] (4 MiB per host by default), the ring by 4 MiB, the
    // channel to the orchestrator by 4096 frames: far below this.
    assert!(
        grown < 96 << 10,
        "the agent's memory grew by {grown} KiB under a flood of {sent} packets to a cold host"
    );
    let status = agent.host("slow").unwrap();
    let held = status["held_packets"]
        .as_u64()
        .unwrap_or_else(|| panic!("no held_packets in {status}"));
    assert!(
        held <= 1024,
        "at most max_packets_per_host are held, {held} are"
    );
}

/// The agent's CPU time (user + system) in clock ticks.
fn cpu_ticks(agent: &AgentProcess) -> u64 {
    let pid = agent.pid().expect("the agent runs");
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // After the command name in parentheses: state is field 3, utime 14 and stime 15.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[test]
fn running_out_of_files_does_not_make_the_control_socket_spin() {
    let net = TestNet::new(agent_binary!());
    net.client();
    let agent = net.start_agent(&(net.network_toml() + &net.http_host("web", 10, &[])), &[]);
    let path = socket(&net);
    let pid = i32::try_from(agent.pid().unwrap()).unwrap();
    // Room for a few more files only: the connections below exhaust it, and every accept then
    // fails with EMFILE until some are closed.
    let limit = u64::try_from(open_fds(&agent)).unwrap() + 8;
    let set_limit = |soft: Option<u64>| {
        let mut old = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: valid pointers for an existing process. Only the soft limit moves: raising
        // the hard one back would need CAP_SYS_RESOURCE.
        let got =
            unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, std::ptr::null(), &raw mut old) };
        assert_eq!(
            got,
            0,
            "prlimit failed: {}",
            std::io::Error::last_os_error()
        );
        let new = libc::rlimit {
            rlim_cur: soft.unwrap_or(old.rlim_max),
            rlim_max: old.rlim_max,
        };
        // SAFETY: as above.
        let set = unsafe {
            libc::prlimit(
                pid,
                libc::RLIMIT_NOFILE,
                &raw const new,
                std::ptr::null_mut(),
            )
        };
        assert_eq!(
            set,
            0,
            "prlimit failed: {}",
            std::io::Error::last_os_error()
        );
    };
    set_limit(Some(limit));
    let idle: Vec<UnixStream> = (0..40)
        .map(|_| UnixStream::connect(&path).expect("connecting to the control socket"))
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let (ticks_before, fds_at_limit) = (cpu_ticks(&agent), open_fds(&agent));
    std::thread::sleep(Duration::from_secs(3));
    let spent = cpu_ticks(&agent) - ticks_before;
    // SAFETY: sysconf has no preconditions.
    let hz = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).unwrap();
    println!(
        "EMFILE: {fds_at_limit} files open at a limit of {limit}; the agent used {spent} ticks \
         ({hz}/s) of CPU in 3 s"
    );
    assert!(
        u64::try_from(fds_at_limit).unwrap() >= limit - 1,
        "the connections should have used up the agent's files ({fds_at_limit} of {limit})"
    );
    assert!(
        spent < hz / 2,
        "accept errors should back off, but the agent used {spent} ticks of CPU in 3 s"
    );
    drop(idle);
    // The waiting connections close: the socket answers again.
    status_answers(&agent, "once the idle connections are gone");
    set_limit(None);
}
