//! Names as real clients see them, end to end: the agent's DNS server (`src/dns/`) on the imag
//! bridge's gateway, asked by a container through Docker's embedded resolver, and on a
//! `[dns] listen` address, asked from a client namespace over UDP and TCP. Looking a name up
//! never wakes its host; names outside the domain go to an upstream resolver the test runs;
//! malformed packets are counted; a chain of hosts that call each other by name wakes through
//! those names. `tests/dns.rs` covers the server itself on loopback sockets.
//!
//! Lookups from inside a container use the example image's own `hello --resolve NAME` (it asks
//! resolv.conf's server with hickory-proto): no second image or busybox is needed, and it is the
//! same code path as `--backend NAME:PORT`.

#![allow(
    clippy::float_cmp,
    reason = "metrics are whole counts carried in f64: equality is exact"
)]

use std::{
    io::{Read as _, Write as _},
    net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket},
    process::Command,
    time::{Duration, Instant},
};

use hickory_proto::{
    op::{Message, Query, ResponseCode},
    rr::{Name, RData, Record, RecordType, rdata::A},
};
use imag_testkit::{TestNet, agent_binary, clients, wait_until};

const COLD_WAKE_TIMEOUT: Duration = Duration::from_secs(30);
const WAIT: Duration = Duration::from_secs(3);
/// Where the agent answers the client namespace (a `[dns] listen` address).
const LISTEN_PORT: u16 = 5353;
/// What the test's upstream resolver answers for every name.
const UPSTREAM_ANSWER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 7);

fn query(name: &str, qtype: RecordType) -> Message {
    let mut message = Message::query();
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    message
}

fn addresses(message: &Message) -> Vec<Ipv4Addr> {
    message
        .answers
        .iter()
        .filter_map(|r| match r.data {
            RData::A(A(addr)) => Some(addr),
            _ => None,
        })
        .collect()
}

/// One query over UDP (run inside the client namespace).
fn udp_ask(server: SocketAddr, name: &str, qtype: RecordType) -> Message {
    let bytes = query(name, qtype).to_vec().unwrap();
    let (answer, _) = clients::udp_request(server, &bytes, WAIT)
        .unwrap_or_else(|e| panic!("no UDP answer from {server} for {name} {qtype}: {e}"));
    Message::from_vec(&answer).expect("a valid DNS answer")
}

/// One query over TCP: RFC 1035 §4.2.2's two-byte length before each message.
fn tcp_ask(server: SocketAddr, name: &str, qtype: RecordType) -> Message {
    let bytes = query(name, qtype).to_vec().unwrap();
    let mut stream = TcpStream::connect_timeout(&server, WAIT).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream
        .write_all(&u16::try_from(bytes.len()).unwrap().to_be_bytes())
        .unwrap();
    stream.write_all(&bytes).unwrap();
    let mut len = [0u8; 2];
    stream
        .read_exact(&mut len)
        .unwrap_or_else(|e| panic!("no TCP answer from {server} for {name}: {e}"));
    let mut answer = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut answer).unwrap();
    Message::from_vec(&answer).expect("a valid DNS answer")
}

/// A resolver on a loopback UDP port answering [`UPSTREAM_ANSWER`] to every A query.
fn start_upstream() -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok((len, peer)) = socket.recv_from(&mut buf) {
            let Ok(query) = Message::from_vec(&buf[..len]) else {
                continue;
            };
            let mut response = Message::response(query.metadata.id, query.metadata.op_code);
            response.add_queries(query.queries.iter().cloned());
            let name = query.queries[0].name.clone();
            response.add_answer(Record::from_rdata(name, 60, RData::A(A(UPSTREAM_ANSWER))));
            let _ = socket.send_to(&response.to_vec().unwrap(), peer);
        }
    });
    addr
}

/// `docker exec CONTAINER ARGS…`: success, stdout, stderr.
fn exec(container: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new("docker")
        .arg("exec")
        .arg(container)
        .args(args)
        .output()
        .expect("running docker exec");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        String::from_utf8_lossy(&out.stderr).trim().to_string(),
    )
}

fn dns_config(net: &TestNet, upstream: SocketAddr, timeout: &str) -> String {
    format!(
        "\n[dns]\nlisten = [\"{}:{LISTEN_PORT}\"]\nupstream = [\"{upstream}\"]\ntimeout = \"{timeout}\"\n",
        net.host_side_addr()
    )
}

fn domain(net: &TestNet) -> String {
    format!("{}.internal", net.network())
}

fn queries(net: &TestNet, result: &str) -> f64 {
    net.scrape()
        .sum("imag_dns_queries_total", &[("result", result)])
}

#[test]
fn a_cold_hosts_name_answers_inside_a_container_and_wakes_nothing() {
    let net = TestNet::new(agent_binary!());
    let _client = net.client(); // the link the agent attaches to
    let config =
        net.network_toml() + &net.http_host("web", 10, &[]) + &net.http_host("db", 11, &[]);
    let agent = net.start_agent(&config, &[]);
    agent.command(&["wake", "web"]).unwrap();
    wait_until("web is warm", COLD_WAKE_TIMEOUT, || {
        agent.host("web").is_ok_and(|h| h["state"] == "warm")
    });
    let web = net.container("web");
    let db = net.host_addr(11).to_string();

    // resolv.conf names Docker's embedded resolver, which does not know a sleeping host and
    // forwards to imag on the gateway.
    for name in ["db".to_string(), format!("db.{}", domain(&net))] {
        let (ok, out, err) = exec(&web, &["/hello", "--resolve", &name]);
        assert!(
            ok,
            "looking up {name} inside a container: {err}\n{}",
            agent.log_text()
        );
        assert_eq!(out, db, "{name} answers the cold host's address");
    }
    let (ok, _, err) = exec(
        &web,
        &["/hello", "--resolve", &format!("nosuch.{}", domain(&net))],
    );
    assert!(
        !ok && err.contains("Non-Existent Domain"),
        "NXDOMAIN, got: {err}"
    );
    // A warm host: Docker answers for its running container (name and hostname), the same
    // address imag has for it.
    let (_, by_docker, err) = exec(&web, &["/hello", "--resolve", &web]);
    let (_, by_host_name, _) = exec(&web, &["/hello", "--resolve", "web"]);
    assert_eq!(
        by_docker,
        net.host_addr(10).to_string(),
        "Docker's answer: {err}"
    );
    assert_eq!(
        by_host_name, by_docker,
        "the host's name and its container's agree"
    );

    assert_eq!(
        agent.host("db").unwrap()["state"],
        "asleep",
        "a lookup wakes nothing"
    );
    assert_eq!(net.containers().len(), 1, "only web's container exists");
    assert_eq!(
        queries(&net, "answered"),
        2.0,
        "db and db.<domain>, forwarded to imag by Docker"
    );
    assert_eq!(queries(&net, "nxdomain"), 1.0);
}

#[test]
fn names_from_a_client_through_dns_listen_and_forwarding() {
    let net = TestNet::new(agent_binary!());
    let client = net.client();
    let upstream = start_upstream();
    let config = net.network_toml()
        + &net.http_host("web", 10, &[])
        + &net.http_host("db", 11, &[])
        + &dns_config(&net, upstream, "500ms");
    let agent = net.start_agent(&config, &[]);
    let server = SocketAddr::from((net.host_side_addr(), LISTEN_PORT));
    let db = net.host_addr(11);
    let domain = domain(&net);

    client
        .run(|| {
            for name in [
                "db".to_string(),
                format!("db.{domain}."),
                format!("DB.{domain}"),
            ] {
                let answer = udp_ask(server, &name, RecordType::A);
                assert_eq!(
                    answer.metadata.response_code,
                    ResponseCode::NoError,
                    "{name}"
                );
                assert_eq!(addresses(&answer), [db], "{name} over UDP");
                assert_eq!(
                    addresses(&tcp_ask(server, &name, RecordType::A)),
                    [db],
                    "{name} over TCP"
                );
            }
            let aaaa = udp_ask(server, &format!("db.{domain}."), RecordType::AAAA);
            assert_eq!(
                aaaa.metadata.response_code,
                ResponseCode::NoError,
                "AAAA: NOERROR"
            );
            assert!(
                aaaa.answers.is_empty(),
                "AAAA: no records, got {:?}",
                aaaa.answers
            );
            for ask in [udp_ask, tcp_ask] {
                let unknown = ask(server, &format!("nosuch.{domain}."), RecordType::A);
                assert_eq!(unknown.metadata.response_code, ResponseCode::NXDomain);
            }
            // Outside the domain: the upstream resolver's answer.
            let outside = udp_ask(server, "example.com.", RecordType::A);
            assert_eq!(addresses(&outside), [UPSTREAM_ANSWER], "forwarded upstream");
        })
        .unwrap();

    let metrics = net.scrape();
    assert_eq!(
        metrics.sum("imag_dns_queries_total", &[("result", "answered")]),
        7.0
    );
    assert_eq!(
        metrics.sum("imag_dns_queries_total", &[("result", "nxdomain")]),
        2.0
    );
    assert_eq!(
        metrics.sum("imag_dns_queries_total", &[("result", "forwarded")]),
        1.0
    );
    assert!(net.containers().is_empty(), "no lookup wakes anything");
    for host in ["web", "db"] {
        assert_eq!(agent.host(host).unwrap()["state"], "asleep", "{host}");
    }
}

#[test]
fn a_silent_upstream_gives_servfail_and_malformed_packets_are_counted() {
    let net = TestNet::new(agent_binary!());
    let client = net.client();
    // Bound, never read: every forwarded query times out.
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let config = net.network_toml()
        + &net.http_host("db", 11, &[])
        + &dns_config(&net, silent.local_addr().unwrap(), "300ms");
    let agent = net.start_agent(&config, &[]);
    let server = SocketAddr::from((net.host_side_addr(), LISTEN_PORT));

    let (answer, waited) = client
        .run(|| {
            let start = Instant::now();
            (
                udp_ask(server, "example.com.", RecordType::A),
                start.elapsed(),
            )
        })
        .unwrap();
    assert_eq!(answer.metadata.response_code, ResponseCode::ServFail);
    assert!(
        waited >= Duration::from_millis(300),
        "SERVFAIL only after the timeout: {waited:?}"
    );

    let good = query("db.", RecordType::A).to_vec().unwrap();
    let response = Message::response(7, hickory_proto::op::OpCode::Query)
        .to_vec()
        .unwrap();
    let junk: [&[u8]; 5] = [
        b"",
        b"\x12\x34\x01",           // a header cut short
        b"GET / HTTP/1.1\r\n\r\n", // not DNS at all
        &good[..good.len() - 3],   // a question cut short
        &response,                 // an answer, not a question
    ];
    client
        .run(|| {
            let socket = UdpSocket::bind("0.0.0.0:0").unwrap();
            for packet in junk {
                socket.send_to(packet, server).unwrap();
            }
            // Over TCP a frame of garbage.
            let mut stream = TcpStream::connect_timeout(&server, WAIT).unwrap();
            stream.write_all(b"\x00\x03\xff\xff\xff").unwrap();
            stream.set_read_timeout(Some(WAIT)).unwrap();
            let mut buf = [0u8; 2];
            assert!(
                !matches!(stream.read(&mut buf), Ok(n) if n > 0),
                "garbage over TCP gets no answer"
            );
            // The server is unharmed: the next question is answered, on both transports.
            let db = [net.host_addr(11)];
            assert_eq!(addresses(&udp_ask(server, "db.", RecordType::A)), db);
            assert_eq!(addresses(&tcp_ask(server, "db.", RecordType::A)), db);
            socket
                .set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            assert!(socket.recv(&mut [0u8; 512]).is_err(), "junk gets no answer");
        })
        .unwrap();
    wait_until("6 malformed queries are counted", WAIT, || {
        queries(&net, "malformed") == 6.0
    });
    assert_eq!(queries(&net, "servfail"), 1.0);
    assert_eq!(agent.host("db").unwrap()["state"], "asleep");
    drop(silent);
}

#[test]
fn a_chain_called_by_names_wakes_through_them() {
    let net = TestNet::new(agent_binary!());
    let client = net.client();
    let config = net.network_toml()
        + &net.http_host("a", 10, &["--backend", "b:8080"])
        + &net.http_host("b", 11, &["--backend", "c:8080"])
        + &net.http_host("c", 12, &[]);
    let agent = net.start_agent(&config, &[]);
    assert!(net.containers().is_empty(), "all three start cold");

    let (body, retransmits) = client
        .run(|| {
            let answer = clients::http_get(net.http_addr(10), COLD_WAKE_TIMEOUT);
            (answer, clients::net_counter("TcpExt", "TCPSynRetrans"))
        })
        .unwrap();
    let (body, _) = body.unwrap_or_else(|e| panic!("a answers: {e}\n{}", agent.log_text()));
    assert_eq!(
        body,
        "a via backend: b via backend: hello from c\n",
        "every hop, found by name:\n{}",
        agent.log_text()
    );
    assert_eq!(
        retransmits.unwrap(),
        0,
        "the client's first SYN completed the handshake"
    );
    for host in ["a", "b", "c"] {
        assert_eq!(agent.host(host).unwrap()["state"], "warm", "{host}");
    }
    assert_eq!(net.containers().len(), 3);
}
