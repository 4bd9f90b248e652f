//! The DNS server on real loopback sockets (no privileges, no Docker): names from the table over
//! UDP and TCP, forwarding to a tiny upstream resolver the test runs itself, SERVFAIL when the
//! upstream is silent, truncation instead of large UDP answers, malformed packets counted while
//! the server keeps answering.

use std::{
    net::{Ipv4Addr, SocketAddr},
    time::Duration,
};

use hickory_proto::{
    op::{Edns, Message, Query, ResponseCode},
    rr::{Name, RData, Record, RecordType, rdata::A},
};
use imag_agent::dns::{
    self, DnsConfig, DnsMetrics, DnsServer, NameTable, Outcome,
    upstream::{read_framed, write_framed},
};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

const WAIT: Duration = Duration::from_secs(3);

fn query(name: &str, qtype: RecordType) -> Message {
    let mut message = Message::query();
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    message
}

/// What the test's upstream resolver answers: 192.0.2.1 for any name, 150 addresses for `big.`.
fn upstream_answer(bytes: &[u8]) -> Vec<u8> {
    let query = Message::from_vec(bytes).expect("the agent forwards a valid query");
    let mut response = Message::response(query.metadata.id, query.metadata.op_code);
    response.add_queries(query.queries.iter().cloned());
    let name = query.queries[0].name.clone();
    let count = if name.to_ascii().starts_with("big.") {
        150
    } else {
        1
    };
    for i in 0..count {
        let addr = Ipv4Addr::new(192, 0, 2, 1 + u8::try_from(i % 250).unwrap());
        response.add_answer(Record::from_rdata(name.clone(), 60, RData::A(A(addr))));
    }
    response.to_vec().unwrap()
}

/// A resolver on UDP and TCP of the same loopback port, answering with [`upstream_answer`].
async fn start_upstream() -> SocketAddr {
    let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = udp.local_addr().unwrap();
    let tcp = TcpListener::bind(addr).await.unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65535];
        loop {
            let (len, peer) = udp.recv_from(&mut buf).await.unwrap();
            udp.send_to(&upstream_answer(&buf[..len]), peer)
                .await
                .unwrap();
        }
    });
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = tcp.accept().await.unwrap();
            let bytes = read_framed(&mut stream).await.unwrap();
            write_framed(&mut stream, &upstream_answer(&bytes))
                .await
                .unwrap();
        }
    });
    addr
}

async fn start(upstream: Vec<SocketAddr>, timeout: Duration) -> (DnsServer, DnsMetrics) {
    let mut config = DnsConfig::default_for("imag");
    config.upstream = upstream;
    config.timeout = timeout;
    let names = NameTable::new(
        &config.domain,
        Some("10.77.0.0/24".parse().unwrap()),
        [("backend".to_string(), Ipv4Addr::new(10, 77, 0, 10))],
    );
    let metrics = DnsMetrics::new();
    let listen = vec!["127.0.0.1:0".parse().unwrap()];
    let server = dns::serve(&config, names, listen, metrics.clone())
        .await
        .expect("the DNS server starts on loopback");
    (server, metrics)
}

async fn udp_ask(server: SocketAddr, query: &Message) -> (Message, usize) {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.connect(server).await.unwrap();
    socket.send(&query.to_vec().unwrap()).await.unwrap();
    let mut buf = vec![0u8; 65535];
    let len = tokio::time::timeout(WAIT, socket.recv(&mut buf))
        .await
        .unwrap_or_else(|_| panic!("no UDP answer from {server} to {query:?}"))
        .unwrap();
    (Message::from_vec(&buf[..len]).expect("a valid answer"), len)
}

async fn tcp_ask(server: SocketAddr, query: &Message) -> Message {
    let mut stream = TcpStream::connect(server).await.unwrap();
    write_framed(&mut stream, &query.to_vec().unwrap())
        .await
        .unwrap();
    let bytes = tokio::time::timeout(WAIT, read_framed(&mut stream))
        .await
        .unwrap_or_else(|_| panic!("no TCP answer from {server}"))
        .unwrap();
    Message::from_vec(&bytes).expect("a valid answer")
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

#[tokio::test]
async fn names_over_udp_and_tcp_and_forwarding() {
    let upstream = start_upstream().await;
    let (server, metrics) = start(vec![upstream], Duration::from_secs(2)).await;
    let addr = server.local_addrs()[0];
    assert_eq!(server.upstream(), [upstream]);

    for name in ["backend", "backend.imag.internal.", "BACKEND.Imag.Internal"] {
        let (answer, _) = udp_ask(addr, &query(name, RecordType::A)).await;
        assert_eq!(
            answer.metadata.response_code,
            ResponseCode::NoError,
            "{name}"
        );
        assert_eq!(addresses(&answer), [Ipv4Addr::new(10, 77, 0, 10)], "{name}");
        let answer = tcp_ask(addr, &query(name, RecordType::A)).await;
        assert_eq!(
            addresses(&answer),
            [Ipv4Addr::new(10, 77, 0, 10)],
            "{name} over TCP"
        );
    }
    let (answer, _) = udp_ask(addr, &query("backend.imag.internal.", RecordType::AAAA)).await;
    assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
    assert!(answer.answers.is_empty(), "AAAA of a host: empty NOERROR");
    let (answer, _) = udp_ask(addr, &query("nosuch.imag.internal.", RecordType::A)).await;
    assert_eq!(answer.metadata.response_code, ResponseCode::NXDomain);
    let (answer, _) = udp_ask(addr, &query("10.0.77.10.in-addr.arpa.", RecordType::PTR)).await;
    match &answer.answers[..] {
        [record] => match &record.data {
            RData::PTR(ptr) => assert_eq!(ptr.0.to_ascii(), "backend.imag.internal."),
            other => panic!("expected a PTR record, got {other:?}"),
        },
        other => panic!("expected one PTR answer, got {other:?}"),
    }
    assert_eq!(metrics.count(Outcome::Answered), 8);
    assert_eq!(metrics.count(Outcome::NxDomain), 1);

    // Outside the domain: upstream's answer, over both transports.
    let (answer, _) = udp_ask(addr, &query("example.com.", RecordType::A)).await;
    assert_eq!(addresses(&answer), [Ipv4Addr::new(192, 0, 2, 1)]);
    let answer = tcp_ask(addr, &query("example.com.", RecordType::A)).await;
    assert_eq!(addresses(&answer), [Ipv4Addr::new(192, 0, 2, 1)]);
    assert_eq!(metrics.count(Outcome::Forwarded), 2);

    // 150 addresses do not fit a UDP answer: the question with TC, no larger than the query;
    // over TCP the whole answer.
    let big = query("big.example.com.", RecordType::A);
    let (answer, len) = udp_ask(addr, &big).await;
    assert!(
        answer.metadata.truncation,
        "a large forwarded answer is truncated over UDP"
    );
    assert!(answer.answers.is_empty());
    assert!(
        len <= big.to_vec().unwrap().len(),
        "no amplification: {len} bytes"
    );
    let mut with_edns = big.clone();
    let mut edns = Edns::new();
    edns.set_max_payload(4096);
    with_edns.set_edns(edns);
    let (answer, len) = udp_ask(addr, &with_edns).await;
    assert!(
        answer.metadata.truncation,
        "even a 4096-byte EDNS buffer gets at most 1232"
    );
    assert!(len <= 1232);
    let answer = tcp_ask(addr, &big).await;
    assert_eq!(
        addresses(&answer).len(),
        150,
        "TCP carries the whole answer"
    );
    assert_eq!(metrics.truncated(), 2);
}

#[tokio::test]
async fn servfail_when_upstream_is_silent() {
    let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let (server, metrics) = start(
        vec![silent.local_addr().unwrap()],
        Duration::from_millis(200),
    )
    .await;
    let addr = server.local_addrs()[0];
    let started = std::time::Instant::now();
    let (answer, _) = udp_ask(addr, &query("example.com.", RecordType::A)).await;
    assert_eq!(answer.metadata.response_code, ResponseCode::ServFail);
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "SERVFAIL only after the upstream's timeout"
    );
    // Nobody listens on TCP there: SERVFAIL over TCP too.
    let answer = tcp_ask(addr, &query("example.com.", RecordType::A)).await;
    assert_eq!(answer.metadata.response_code, ResponseCode::ServFail);
    assert_eq!(metrics.count(Outcome::ServFail), 2);
    // Names in the table never wait for upstream.
    let (answer, _) = udp_ask(addr, &query("backend.", RecordType::A)).await;
    assert_eq!(addresses(&answer), [Ipv4Addr::new(10, 77, 0, 10)]);
    drop(silent);
}

#[tokio::test]
async fn malformed_packets_are_counted_and_the_server_keeps_answering() {
    let (server, metrics) = start(Vec::new(), Duration::from_millis(100)).await;
    let addr = server.local_addrs()[0];
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let good = query("backend.", RecordType::A).to_vec().unwrap();
    let response = Message::response(1, hickory_proto::op::OpCode::Query)
        .to_vec()
        .unwrap();
    let junk: [&[u8]; 5] = [
        b"",
        b"\x00",
        b"hello, is this DNS?",
        &good[..good.len() - 2],
        &response,
    ];
    for packet in junk {
        socket.send_to(packet, addr).await.unwrap();
    }
    // Over TCP: a frame of garbage closes the connection.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    write_framed(&mut stream, b"\xff\xff\xff").await.unwrap();
    assert!(
        read_framed(&mut stream).await.is_err(),
        "garbage gets no answer"
    );

    // UDP is unordered only across sockets: this answer comes after the junk was read.
    let (answer, _) = udp_ask(addr, &query("backend.", RecordType::A)).await;
    assert_eq!(addresses(&answer), [Ipv4Addr::new(10, 77, 0, 10)]);
    let mut buf = [0u8; 512];
    let nothing =
        tokio::time::timeout(Duration::from_millis(200), socket.recv_from(&mut buf)).await;
    assert!(nothing.is_err(), "malformed packets get no answer");
    assert_eq!(metrics.count(Outcome::Malformed), 6);
}

#[tokio::test]
async fn answers_only_on_its_own_addresses() {
    let (server, _) = start(Vec::new(), Duration::from_millis(100)).await;
    let port = server.local_addrs()[0].port();
    // The same port on another loopback address has no server.
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.connect(("127.0.0.2", port)).await.unwrap();
    socket
        .send(&query("backend.", RecordType::A).to_vec().unwrap())
        .await
        .unwrap();
    let mut buf = [0u8; 512];
    if let Ok(Ok(len)) =
        tokio::time::timeout(Duration::from_millis(300), socket.recv(&mut buf)).await
    {
        panic!("an answer ({len} bytes) from an address not listened on");
    }
    // A port already taken is an error that names the address and the fix.
    let taken = server.local_addrs()[0];
    let mut config = DnsConfig::default_for("imag");
    config.upstream = vec![taken];
    let err = dns::serve(
        &config,
        NameTable::new("imag.internal", None, []),
        vec![taken],
        DnsMetrics::new(),
    )
    .await
    .err()
    .expect("a second server on the same port fails");
    let message = err.to_string();
    assert!(
        message.contains(&taken.to_string()) && message.contains("[dns] listen"),
        "{message}"
    );
}
