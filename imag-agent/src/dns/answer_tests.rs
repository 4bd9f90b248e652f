//! Table-driven tests of [`super::decide`]: query in, response (or "forward") out.

use std::str::FromStr as _;

use hickory_proto::{
    op::{Edns, Message, OpCode, Query, ResponseCode},
    rr::{DNSClass, Name, RData, RecordType, rdata::A},
};

use super::*;

fn table() -> NameTable {
    NameTable::new(
        "imag.internal",
        Some(Ipv4Net::from_str("10.77.0.0/24").unwrap()),
        [
            ("backend".to_string(), Ipv4Addr::new(10, 77, 0, 10)),
            ("Web".to_string(), Ipv4Addr::new(10, 77, 0, 11)),
        ],
    )
}

fn query(name: &str, qtype: RecordType) -> Message {
    let mut message = Message::query();
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    message
}

/// What a test expects: a reply with this code and these answers, or a forward.
#[derive(Debug, PartialEq)]
enum Expect {
    Reply(ResponseCode, Outcome, Vec<String>),
    Forward,
}

fn outcome(table: &NameTable, query: &Message) -> Expect {
    match decide(table, query) {
        Verdict::Forward => Expect::Forward,
        Verdict::Reply(response, outcome) => {
            assert_eq!(response.metadata.id, query.metadata.id, "the id is echoed");
            assert_eq!(response.queries, query.queries, "the question is echoed");
            assert!(response.metadata.recursion_desired);
            // Every reply survives a round trip through the wire format.
            let bytes = response.to_vec().expect("encodes");
            let decoded = Message::from_vec(&bytes).expect("decodes");
            let answers = decoded
                .answers
                .iter()
                .map(|r| match &r.data {
                    RData::A(A(addr)) => format!("A {addr}"),
                    RData::PTR(ptr) => format!("PTR {}", ptr.0),
                    other => format!("{other:?}"),
                })
                .collect();
            Expect::Reply(decoded.metadata.response_code, outcome, answers)
        }
    }
}

fn ok(answers: &[&str]) -> Expect {
    Expect::Reply(
        ResponseCode::NoError,
        Outcome::Answered,
        answers
            .iter()
            .map(std::string::ToString::to_string)
            .collect(),
    )
}

fn nx() -> Expect {
    Expect::Reply(ResponseCode::NXDomain, Outcome::NxDomain, Vec::new())
}

#[test]
fn answers_by_table() {
    use RecordType::*;
    let rows: &[(&str, RecordType, Expect)] = &[
        ("backend", A, ok(&["A 10.77.0.10"])),
        ("backend.", A, ok(&["A 10.77.0.10"])),
        ("BACKEND", A, ok(&["A 10.77.0.10"])),
        ("backend.imag.internal", A, ok(&["A 10.77.0.10"])),
        ("Backend.IMAG.Internal.", A, ok(&["A 10.77.0.10"])),
        ("web.imag.internal.", A, ok(&["A 10.77.0.11"])),
        ("web", ANY, ok(&["A 10.77.0.11"])),
        ("backend", AAAA, ok(&[])),
        ("backend.imag.internal.", AAAA, ok(&[])),
        ("backend.imag.internal.", MX, ok(&[])),
        ("imag.internal.", A, ok(&[])),
        ("imag.internal.", SOA, ok(&[])),
        ("nosuch.imag.internal.", A, nx()),
        ("nosuch.imag.internal.", AAAA, nx()),
        ("a.backend.imag.internal.", A, nx()),
        (
            "10.0.77.10.in-addr.arpa.",
            PTR,
            ok(&["PTR backend.imag.internal."]),
        ),
        (
            "11.0.77.10.IN-ADDR.ARPA.",
            PTR,
            ok(&["PTR web.imag.internal."]),
        ),
        ("10.0.77.10.in-addr.arpa.", A, ok(&[])),
        ("99.0.77.10.in-addr.arpa.", PTR, nx()),
        ("1.1.168.192.in-addr.arpa.", PTR, Expect::Forward),
        ("nosuch", A, Expect::Forward),
        ("example.com.", A, Expect::Forward),
        ("example.com.", AAAA, Expect::Forward),
        // A name that merely ends like the domain is not inside it.
        ("backendimag.internal.", A, Expect::Forward),
        (
            "imag.internal.",
            AXFR,
            Expect::Reply(ResponseCode::Refused, Outcome::Refused, Vec::new()),
        ),
    ];
    let table = table();
    for (name, qtype, expected) in rows {
        let got = outcome(&table, &query(name, *qtype));
        assert_eq!(&got, expected, "{name} {qtype}");
    }
}

#[test]
fn refuses_other_classes_and_opcodes() {
    let table = table();
    let mut chaos = query("version.bind.", RecordType::TXT);
    chaos.queries[0].query_class = DNSClass::CH;
    assert_eq!(
        outcome(&table, &chaos),
        Expect::Reply(ResponseCode::Refused, Outcome::Refused, Vec::new())
    );
    let mut notify = query("backend.", RecordType::A);
    notify.metadata.op_code = OpCode::Notify;
    assert_eq!(
        outcome(&table, &notify),
        Expect::Reply(ResponseCode::NotImp, Outcome::Refused, Vec::new())
    );
}

#[test]
fn parse_query_drops_what_is_not_one_question() {
    let good = query("backend.", RecordType::A).to_vec().unwrap();
    assert!(parse_query(&good).is_ok());
    assert!(matches!(parse_query(&[]), Err(Malformed::Decode(_))));
    assert!(matches!(
        parse_query(&good[..good.len() - 3]),
        Err(Malformed::Decode(_))
    ));
    let mut two = query("a.", RecordType::A);
    two.add_query(Query::query(Name::from_ascii("b.").unwrap(), RecordType::A));
    assert_eq!(
        parse_query(&two.to_vec().unwrap()),
        Err(Malformed::Questions(2))
    );
    let response = response_to(&query("a.", RecordType::A), ResponseCode::NoError);
    assert_eq!(
        parse_query(&response.to_vec().unwrap()),
        Err(Malformed::Response)
    );
    // A header claiming 65535 answers is refused before anything is decoded.
    let mut huge = good.clone();
    huge[6] = 0xff;
    huge[7] = 0xff;
    assert_eq!(parse_query(&huge), Err(Malformed::Records(0xffff)));
}

#[test]
fn edns_queries_get_an_opt_record_and_a_larger_limit() {
    let mut q = query("backend.", RecordType::A);
    assert_eq!(udp_limit(&q), 512);
    let mut edns = Edns::new();
    edns.set_max_payload(4096);
    q.set_edns(edns);
    assert_eq!(udp_limit(&q), usize::from(UDP_MAX));
    let Verdict::Reply(response, _) = decide(&table(), &q) else {
        panic!("a known name is answered")
    };
    assert_eq!(response.edns.as_ref().map(Edns::max_payload), Some(UDP_MAX));
}

#[test]
fn udp_answers_that_do_not_fit_are_truncated_to_the_question() {
    let q = query("backend.", RecordType::A);
    let query_len = q.to_vec().unwrap().len();
    let mut big = response_to(&q, ResponseCode::NoError);
    for i in 0..100u8 {
        big.add_answer(Record::from_rdata(
            Name::from_ascii("backend.").unwrap(),
            TTL,
            RData::A(A(Ipv4Addr::new(10, 0, 0, i))),
        ));
    }
    let (bytes, truncated) = encode_udp(&big, udp_limit(&q));
    assert!(truncated);
    assert_eq!(
        bytes.len(),
        query_len,
        "a truncated answer is no larger than the query"
    );
    let decoded = Message::from_vec(&bytes).unwrap();
    assert!(decoded.metadata.truncation);
    assert!(decoded.answers.is_empty());

    let Verdict::Reply(small, _) = decide(&table(), &q) else {
        panic!("answered")
    };
    let (bytes, truncated) = encode_udp(&small, udp_limit(&q));
    assert!(!truncated);
    assert!(bytes.len() <= query_len + 16, "one A record adds 16 bytes");
}

#[test]
fn upstream_answers_must_match_the_question() {
    let q = query("example.com.", RecordType::A);
    let mut answer = response_to(&q, ResponseCode::NoError);
    assert!(answers_query(&answer.to_vec().unwrap(), &q));
    answer.metadata.id = q.metadata.id.wrapping_add(1);
    assert!(!answers_query(&answer.to_vec().unwrap(), &q));
    let other = response_to(&query("example.org.", RecordType::A), ResponseCode::NoError);
    assert!(!answers_query(&other.to_vec().unwrap(), &q));
    assert!(!answers_query(b"junk", &q));
}
