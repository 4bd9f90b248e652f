//! DNS queries as the agent's server receives them: decoding (`dns::answer::parse_query`), the
//! decision against a name table (`decide`), and every encoding of the answer — UDP within the
//! client's limit (else truncated), TCP in full, SERVFAIL for a forward that found no room — plus
//! the check of an upstream's answer (`answers_query`) and the host's resolv.conf reader.
//!
//! Beyond "no panic": a UDP answer never exceeds the client's buffer, and only queries are
//! answered (a response or garbage gets nothing).

#![no_main]

use std::{net::Ipv4Addr, sync::OnceLock};

use hickory_proto::op::{Message, MessageType, ResponseCode};
use imag_agent::dns::{
    answer::{self, NameTable, Verdict},
    upstream,
};
use libfuzzer_sys::fuzz_target;

fn table() -> &'static NameTable {
    static TABLE: OnceLock<NameTable> = OnceLock::new();
    TABLE.get_or_init(|| {
        NameTable::new(
            "imag.internal",
            Some("10.77.0.0/24".parse().expect("a subnet")),
            [
                ("web".to_string(), Ipv4Addr::new(10, 77, 0, 10)),
                ("Backend.".to_string(), Ipv4Addr::new(10, 77, 0, 11)),
                ("db".to_string(), Ipv4Addr::new(10, 77, 0, 11)),
            ],
        )
    })
}

fn check_udp(response: &Message, query: &Message) {
    let limit = answer::udp_limit(query);
    assert!((usize::from(answer::UDP_CLASSIC)..=usize::from(answer::UDP_MAX)).contains(&limit));
    let (bytes, truncated) = answer::encode_udp(response, limit);
    assert!(
        bytes.len() <= limit,
        "a {} byte UDP answer for a client that takes {limit} (truncated: {truncated})",
        bytes.len()
    );
    let back = Message::from_vec(&bytes).expect("our own answer decodes");
    assert_eq!(back.metadata.message_type, MessageType::Response);
    assert_eq!(back.metadata.id, query.metadata.id);
}

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = upstream::parse_resolv_conf(text);
    }
    let Ok(query) = answer::parse_query(data) else {
        return;
    };
    assert_eq!(query.metadata.message_type, MessageType::Query);
    assert_eq!(query.queries.len(), 1);
    match answer::decide(table(), &query) {
        Verdict::Reply(response, _outcome) => {
            check_udp(&response, &query);
            let _ = response.to_vec(); // TCP: the whole answer, framed
            // The query's own bytes are not the answer to it (they are a query).
            assert!(!answer::answers_query(data, &query));
        }
        Verdict::Forward => {
            check_udp(&answer::response_to(&query, ResponseCode::ServFail), &query);
            let _ = answer::truncated(&answer::response_to(&query, ResponseCode::NoError));
        }
    }
});
