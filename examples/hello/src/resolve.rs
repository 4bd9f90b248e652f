//! Name lookups for a binary that runs FROM scratch: static glibc's `getaddrinfo` needs NSS
//! modules at run time that a scratch image does not have, so `hello` asks the DNS server
//! itself. The server is the first `nameserver` of /etc/resolv.conf (Docker writes its embedded
//! resolver, 127.0.0.11, there on user-defined networks, and that resolver forwards the names it
//! does not know — imag's cold hosts — to imag); `search` domains are tried after a bare name.
//! The wire format is hickory-proto's. `main.rs` uses [`Backend`] for `--backend NAME:PORT`,
//! and [`lookup`] for `--resolve` and `--dns-bench`.

use std::{
    fmt,
    fmt::Write as _,
    net::{Ipv4Addr, SocketAddr, UdpSocket},
    time::{Duration, Instant},
};

use hickory_proto::{
    op::{Message, Query, ResponseCode},
    rr::{Name, RData, RecordType, rdata::A},
};

const RESOLV_CONF: &str = "/etc/resolv.conf";
/// One attempt's wait for an answer; a lost datagram is asked again once.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(3);
const ATTEMPTS: usize = 2;

/// `--backend NAME_OR_ADDR:PORT`: resolved at each request, so that a name's answer may change.
#[derive(Clone, Debug)]
pub struct Backend {
    pub host: String,
    pub port: u16,
}

impl std::str::FromStr for Backend {
    type Err = String;

    fn from_str(text: &str) -> Result<Backend, String> {
        let (host, port) = text
            .rsplit_once(':')
            .ok_or(format!("{text:?} is not NAME_OR_ADDR:PORT"))?;
        let port = port.parse().map_err(|e| format!("port of {text:?}: {e}"))?;
        if host.is_empty() {
            return Err(format!("{text:?} has no host"));
        }
        Ok(Backend {
            host: host.to_string(),
            port,
        })
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

impl Backend {
    /// The address to connect to now: the literal address, or the name's first A record.
    pub fn resolve(&self, server: Option<SocketAddr>) -> Result<SocketAddr, String> {
        if let Ok(addr) = self.host.parse::<Ipv4Addr>() {
            return Ok(SocketAddr::from((addr, self.port)));
        }
        let addrs = lookup(&self.host, server)?;
        Ok(SocketAddr::from((addrs[0], self.port)))
    }
}

/// What /etc/resolv.conf says: the servers (port 53) and the search domains.
pub struct ResolvConf {
    pub servers: Vec<SocketAddr>,
    pub search: Vec<String>,
}

pub fn resolv_conf() -> ResolvConf {
    let text = std::fs::read_to_string(RESOLV_CONF).unwrap_or_default();
    let mut conf = ResolvConf {
        servers: Vec::new(),
        search: Vec::new(),
    };
    for line in text.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => {
                if let Some(addr) = words.next().and_then(|w| w.parse::<Ipv4Addr>().ok()) {
                    conf.servers.push(SocketAddr::from((addr, 53)));
                }
            }
            Some("search" | "domain") => conf.search.extend(words.map(String::from)),
            _ => {}
        }
    }
    conf
}

/// A server given on the command line: `ADDR` (port 53) or `ADDR:PORT`.
pub fn parse_server(text: &str) -> Result<SocketAddr, String> {
    text.parse::<SocketAddr>()
        .or_else(|_| text.parse::<Ipv4Addr>().map(|a| SocketAddr::from((a, 53))))
        .map_err(|_| format!("{text:?} is not ADDR or ADDR:PORT"))
}

/// The A records of `name` from `server` (else resolv.conf's first server), trying the search
/// domains after the bare name when it has no dot. An error says what the server answered.
pub fn lookup(name: &str, server: Option<SocketAddr>) -> Result<Vec<Ipv4Addr>, String> {
    let conf = resolv_conf();
    let server = server
        .or(conf.servers.first().copied())
        .ok_or(format!("no nameserver in {RESOLV_CONF}"))?;
    let mut candidates = vec![name.to_string()];
    if !name.contains('.') {
        candidates.extend(conf.search.iter().map(|d| format!("{name}.{d}")));
    }
    let mut last = String::new();
    for candidate in &candidates {
        match ask(server, candidate) {
            Ok((ResponseCode::NoError, addrs)) if !addrs.is_empty() => return Ok(addrs),
            Ok((code, _)) => last = format!("{candidate}: {code} from {server}"),
            Err(e) => return Err(format!("{candidate}: {e}")),
        }
    }
    Err(last)
}

/// One A query over UDP: the response code and addresses, or why there was no answer.
pub fn ask(server: SocketAddr, name: &str) -> Result<(ResponseCode, Vec<Ipv4Addr>), String> {
    let name = Name::from_ascii(name).map_err(|e| format!("not a DNS name: {e}"))?;
    let mut query = Message::query();
    query.metadata.recursion_desired = true;
    query.add_query(Query::query(name, RecordType::A));
    let id = query.metadata.id;
    let bytes = query.to_vec().map_err(|e| e.to_string())?;
    let socket = UdpSocket::bind("0.0.0.0:0").map_err(|e| e.to_string())?;
    socket.connect(server).map_err(|e| e.to_string())?;
    let mut buf = [0u8; 4096];
    for _ in 0..ATTEMPTS {
        socket.send(&bytes).map_err(|e| e.to_string())?;
        let deadline = Instant::now() + ATTEMPT_TIMEOUT;
        // Answers to an earlier attempt or someone else's id are skipped.
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            socket
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .map_err(|e| e.to_string())?;
            let Ok(len) = socket.recv(&mut buf) else {
                break;
            };
            let Ok(answer) = Message::from_vec(&buf[..len]) else {
                continue;
            };
            if answer.metadata.id != id {
                continue;
            }
            let addrs = answer
                .answers
                .iter()
                .filter_map(|r| match r.data {
                    RData::A(A(addr)) => Some(addr),
                    _ => None,
                })
                .collect();
            return Ok((answer.metadata.response_code, addrs));
        }
    }
    Err(format!("no answer from {server} in {ATTEMPTS} attempts"))
}

/// `--dns-bench NAME COUNT`: COUNT lookups one after another; prints each one's latency in µs
/// on its own line. Fails on the first lookup that does not answer an address.
pub fn bench(name: &str, count: usize, server: Option<SocketAddr>) -> Result<(), String> {
    let server = server
        .or(resolv_conf().servers.first().copied())
        .ok_or(format!("no nameserver in {RESOLV_CONF}"))?;
    let mut out = String::new();
    for _ in 0..count {
        let start = Instant::now();
        match ask(server, name)? {
            (ResponseCode::NoError, addrs) if !addrs.is_empty() => {}
            (code, _) => return Err(format!("{name}: {code} from {server}")),
        }
        let _ = writeln!(out, "{:.1}", start.elapsed().as_secs_f64() * 1e6);
    }
    print!("{out}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_is_a_name_or_an_address_with_a_port() {
        let by_name: Backend = "backend:8080".parse().unwrap();
        assert_eq!((by_name.host.as_str(), by_name.port), ("backend", 8080));
        assert_eq!(by_name.to_string(), "backend:8080");
        let by_addr: Backend = "10.77.0.11:8080".parse().unwrap();
        assert_eq!(
            by_addr.resolve(None).unwrap(),
            "10.77.0.11:8080".parse().unwrap(),
            "an address needs no lookup"
        );
        for bad in ["backend", ":8080", "backend:http", "backend:70000"] {
            assert!(bad.parse::<Backend>().is_err(), "{bad}");
        }
        assert_eq!(parse_server("127.0.0.11").unwrap().port(), 53);
        assert_eq!(parse_server("10.0.0.1:5353").unwrap().port(), 5353);
    }
}
