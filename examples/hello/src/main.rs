//! `hello`: the tiny services imag's demo, tests and benchmarks wake. Built as a static binary and
//! run FROM scratch, so it uses only `std` (and hickory-proto to ask DNS itself, [`resolve`]).
//!
//! ```text
//! hello [--port 8080]                              HTTP: "hello from <hostname>[: $GREETING]"
//! hello --port 8080 --backend 10.77.0.11:8080      HTTP frontend: asks the backend, wraps its answer
//! hello --port 8080 --backend backend:8080         the same by name, looked up at each request
//! hello --resolve NAME                             prints NAME's addresses (exit 1: none)
//! hello --dns-bench NAME COUNT                     COUNT lookups, each one's latency in µs
//! hello --udp 5353                                 UDP request/response: "answer <request>"
//! hello --sink 9000                                 TCP sink: reads to EOF, answers the byte count
//! ```
//! `--count-file PATH` counts its starts in PATH (on a volume: the count survives the container) and
//! says "hello from <hostname> (start N)"; `hello --probe 8080` exits 0 if 127.0.0.1:8080 accepts a
//! TCP connection, else 1 (a healthcheck for an image without a shell).
//! `--delay-ms N` waits N ms before listening (a slow-starting service); `--exit-after-ms N` exits
//! with status 3 after N ms (a crashing one); `--stop-delay-ms N` takes N ms to exit on SIGTERM
//! (a slow-stopping one). `--dns-server ADDR[:PORT]` asks that server instead of resolv.conf's.
//!
//! Environment: `BALLAST_MB=N` allocates N MiB and writes to every page of it before listening, so
//! that the service holds that much resident memory for real (the trace benchmark's footprints):
//! half of each page pseudo-random bytes, half zeros, so that it compresses about 2:1 like
//! typical process memory rather than to nothing (what swap to zram keeps of it is honest);
//! `BALLAST_TOUCH=1` makes every HTTP request read a byte of every ballast page before it is
//! answered (the whole footprint is working set: memory paged out while paused comes back);
//! `SERVICE_MS=N` makes every HTTP request take N ms (a sleep: time, not CPU) before it is answered.

use std::{
    env,
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    process, thread,
    time::Duration,
};

use resolve::Backend;

mod resolve;

struct Options {
    port: u16,
    backend: Option<Backend>,
    dns_server: Option<SocketAddr>,
    resolve: Option<String>,
    dns_bench: Option<(String, usize)>,
    udp: Option<u16>,
    sink: Option<u16>,
    delay_ms: u64,
    exit_after_ms: Option<u64>,
    stop_delay_ms: Option<u64>,
    count_file: Option<String>,
}

fn parse_args() -> Result<Options, String> {
    let mut opts = Options {
        port: 8080,
        backend: None,
        dns_server: None,
        resolve: None,
        dns_bench: None,
        udp: None,
        sink: None,
        delay_ms: 0,
        exit_after_ms: None,
        stop_delay_ms: None,
        count_file: None,
    };
    let mut args = env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--port" => {
                opts.port = value("--port")?
                    .parse()
                    .map_err(|e| format!("--port: {e}"))?;
            }
            "--backend" => {
                opts.backend = Some(
                    value("--backend")?
                        .parse()
                        .map_err(|e| format!("--backend: {e}"))?,
                );
            }
            "--dns-server" => {
                opts.dns_server = Some(
                    resolve::parse_server(&value("--dns-server")?)
                        .map_err(|e| format!("--dns-server: {e}"))?,
                );
            }
            "--resolve" => opts.resolve = Some(value("--resolve")?),
            "--dns-bench" => {
                let name = value("--dns-bench")?;
                let count = value("--dns-bench")?
                    .parse()
                    .map_err(|e| format!("--dns-bench COUNT: {e}"))?;
                opts.dns_bench = Some((name, count));
            }
            "--udp" => opts.udp = Some(value("--udp")?.parse().map_err(|e| format!("--udp: {e}"))?),
            "--sink" => {
                opts.sink = Some(
                    value("--sink")?
                        .parse()
                        .map_err(|e| format!("--sink: {e}"))?,
                );
            }
            "--delay-ms" => {
                opts.delay_ms = value("--delay-ms")?
                    .parse()
                    .map_err(|e| format!("--delay-ms: {e}"))?;
            }
            "--exit-after-ms" => {
                opts.exit_after_ms = Some(
                    value("--exit-after-ms")?
                        .parse()
                        .map_err(|e| format!("--exit-after-ms: {e}"))?,
                );
            }
            "--stop-delay-ms" => {
                opts.stop_delay_ms = Some(
                    value("--stop-delay-ms")?
                        .parse()
                        .map_err(|e| format!("--stop-delay-ms: {e}"))?,
                );
            }
            "--count-file" => opts.count_file = Some(value("--count-file")?),
            "--probe" => {
                let port: u16 = value("--probe")?
                    .parse()
                    .map_err(|e| format!("--probe: {e}"))?;
                let addr = SocketAddr::from(([127, 0, 0, 1], port));
                let up = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok();
                process::exit(i32::from(!up));
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(opts)
}

fn main() {
    let opts = parse_args().unwrap_or_else(|e| {
        eprintln!("hello: {e}");
        process::exit(2);
    });
    if let Some(name) = &opts.resolve {
        match resolve::lookup(name, opts.dns_server) {
            Ok(addrs) => addrs.iter().for_each(|a| println!("{a}")),
            Err(e) => {
                eprintln!("hello: {e}");
                process::exit(1);
            }
        }
        return;
    }
    if let Some((name, count)) = &opts.dns_bench {
        if let Err(e) = resolve::bench(name, *count, opts.dns_server) {
            eprintln!("hello: {e}");
            process::exit(1);
        }
        return;
    }
    if let Some(ms) = opts.exit_after_ms {
        thread::spawn(move || {
            thread::sleep(Duration::from_millis(ms));
            eprintln!("hello: exiting on purpose (--exit-after-ms)");
            process::exit(3);
        });
    }
    if let Some(ms) = opts.stop_delay_ms {
        exit_slowly_on_sigterm(ms);
    }
    thread::sleep(Duration::from_millis(opts.delay_ms));
    let ballast_mb = env_number("BALLAST_MB");
    if ballast_mb > 0 {
        hold_ballast(ballast_mb);
    }
    let service = Duration::from_millis(env_number("SERVICE_MS"));
    let name = hostname();
    let greeting = env::var("GREETING").ok();
    let mut identity = match greeting {
        Some(g) => format!("{name}: {g}"),
        None => name,
    };
    if let Some(path) = &opts.count_file {
        let starts = std::fs::read_to_string(path)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(0)
            + 1;
        if let Err(e) = std::fs::write(path, format!("{starts}\n")) {
            eprintln!("hello: cannot write {path}: {e}");
            process::exit(2);
        }
        identity = format!("{identity} (start {starts})");
    }
    if let Some(port) = opts.sink {
        serve_sink(port);
    } else if let Some(port) = opts.udp {
        serve_udp(port, &identity);
    } else {
        serve_http(opts.port, opts.backend, opts.dns_server, identity, service);
    }
}

static TERMINATING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn on_sigterm(_: libc::c_int) {
    TERMINATING.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// On SIGTERM, keep serving for `ms` milliseconds, then exit.
fn exit_slowly_on_sigterm(ms: u64) {
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe { libc::signal(libc::SIGTERM, on_sigterm as *const () as libc::sighandler_t) };
    thread::spawn(move || {
        while !TERMINATING.load(std::sync::atomic::Ordering::SeqCst) {
            thread::sleep(Duration::from_millis(5));
        }
        thread::sleep(Duration::from_millis(ms));
        process::exit(0);
    });
}

/// A whole number from the environment; 0 when unset, and an exit naming the variable when it is
/// not a number.
fn env_number(name: &str) -> u64 {
    match env::var(name) {
        Err(_) => 0,
        Ok(text) => text.trim().parse().unwrap_or_else(|e| {
            eprintln!("hello: {name}={text:?} is not a whole number: {e}");
            process::exit(2);
        }),
    }
}

/// The ballast, when `BALLAST_TOUCH=1` asks requests to read it.
static TOUCHED_BALLAST: std::sync::OnceLock<&'static [u8]> = std::sync::OnceLock::new();

/// Allocates `mb` MiB, writes to each of its pages (so the kernel really backs them, and the
/// container's memory cgroup is charged), and keeps it for the life of the process. Each page is
/// half pseudo-random (xorshift) and half zeros.
fn hold_ballast(mb: u64) {
    let bytes = usize::try_from(mb << 20).unwrap_or_else(|_| {
        eprintln!("hello: BALLAST_MB={mb} does not fit this machine's address space");
        process::exit(2);
    });
    let ballast: &'static mut [u8] = vec![0u8; bytes].leak();
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    for page in ballast.chunks_mut(4096) {
        let half = page.len() / 2;
        for word in page[..half].chunks_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            word.copy_from_slice(&state.to_le_bytes()[..word.len()]);
        }
    }
    std::hint::black_box(&ballast);
    if env_number("BALLAST_TOUCH") > 0 {
        let _ = TOUCHED_BALLAST.set(ballast);
    }
}

/// Reads one byte of every ballast page (`BALLAST_TOUCH=1`), faulting back in what was paged out.
fn touch_ballast() {
    if let Some(ballast) = TOUCHED_BALLAST.get() {
        let sum = ballast
            .iter()
            .step_by(4096)
            .fold(0u8, |acc, b| acc.wrapping_add(*b));
        std::hint::black_box(sum);
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map_or_else(|_| "unknown".into(), |s| s.trim().to_string())
}

fn serve_udp(port: u16, identity: &str) {
    let socket = UdpSocket::bind(("0.0.0.0", port)).unwrap_or_else(|e| {
        eprintln!("hello: binding udp port {port}: {e}");
        process::exit(1);
    });
    let mut buf = [0u8; 2048];
    loop {
        let Ok((len, peer)) = socket.recv_from(&mut buf) else {
            continue;
        };
        let request = String::from_utf8_lossy(&buf[..len]);
        let answer = format!("answer {} from {identity}", request.trim());
        let _ = socket.send_to(answer.as_bytes(), peer);
    }
}

/// Listens on TCP `port` with an accept queue as deep as the system allows (`SOMAXCONN`, which
/// the kernel caps at `net.core.somaxconn`), as servers such as Go's and nginx's do; std's own
/// is 128, and a burst of connections to a service slowed for a moment (reading its memory back
/// from swap after a wake) would overflow it: the kernel drops the SYNs beyond it and the
/// clients retransmit a second later.
fn listen(port: u16) -> TcpListener {
    use std::os::fd::AsRawFd as _;
    let listener = TcpListener::bind(("0.0.0.0", port)).unwrap_or_else(|e| {
        eprintln!("hello: binding tcp port {port}: {e}");
        process::exit(1);
    });
    // SAFETY: plain system call on a socket this function owns; listen() on a listening socket
    // only changes its backlog.
    if unsafe { libc::listen(listener.as_raw_fd(), libc::SOMAXCONN) } != 0 {
        eprintln!(
            "hello: deepening the accept queue of port {port}: {}",
            std::io::Error::last_os_error()
        );
    }
    listener
}

/// For throughput measurements: each connection's bytes are read to EOF and counted; the count
/// is the answer.
fn serve_sink(port: u16) {
    let listener = listen(port);
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        thread::spawn(move || {
            let mut buf = vec![0u8; 1 << 16];
            let mut total: u64 = 0;
            while let Ok(n) = stream.read(&mut buf) {
                if n == 0 {
                    break;
                }
                total += n as u64;
            }
            let _ = writeln!(stream, "{total}");
        });
    }
}

fn serve_http(
    port: u16,
    backend: Option<Backend>,
    dns_server: Option<SocketAddr>,
    identity: String,
    service: Duration,
) {
    let listener = listen(port);
    let identity: &'static str = Box::leak(identity.into_boxed_str());
    let backend: Option<&'static Backend> = backend.map(|b| &*Box::leak(Box::new(b)));
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        thread::spawn(move || {
            let _ = handle(stream, backend, dns_server, identity, service);
        });
    }
}

/// Answers HTTP/1.1 requests on one connection (keep-alive), each with a short text body.
fn handle(
    stream: TcpStream,
    backend: Option<&Backend>,
    dns_server: Option<SocketAddr>,
    identity: &str,
    service: Duration,
) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line)? == 0 {
            return Ok(());
        }
        let mut close = false;
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header)? == 0 {
                return Ok(());
            }
            if header.eq_ignore_ascii_case("connection: close\r\n") {
                close = true;
            }
            if header == "\r\n" || header == "\n" {
                break;
            }
        }
        touch_ballast();
        if !service.is_zero() {
            thread::sleep(service);
        }
        let body = match backend {
            None => format!("hello from {identity}\n"),
            Some(backend) => match backend
                .resolve(dns_server)
                .and_then(|addr| http_get(addr, backend).map_err(|e| e.to_string()))
            {
                Ok(answer) => format!("{identity} via backend: {answer}"),
                Err(e) => format!("{identity}: backend {backend} failed: {e}\n"),
            },
        };
        // One write, one segment: the response is formatted first.
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n{}\r\n{body}",
            body.len(),
            if close { "Connection: close\r\n" } else { "" }
        );
        writer.write_all(response.as_bytes())?;
        if close {
            return Ok(());
        }
    }
}

/// A minimal HTTP GET returning the response body.
fn http_get(addr: SocketAddr, host: &Backend) -> std::io::Result<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(30))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        stream,
        "GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(response
        .split_once("\r\n\r\n")
        .map_or(response.clone(), |(_, body)| body.to_string()))
}
