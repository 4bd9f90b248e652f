//! What the DNS server says to one query, as a pure function of the query and the name table:
//! [`decide`] either replies (a host's address, an empty answer, NXDOMAIN, REFUSED) or asks the
//! server ([`super::server`]) to forward the query upstream. No I/O, no clock: the socket code
//! around it only receives, sends and forwards. Wire format comes from hickory-proto.

use std::{collections::HashMap, net::Ipv4Addr};

use hickory_proto::{
    op::{Edns, Header, Message, MessageType, OpCode, ResponseCode},
    rr::{
        DNSClass, Name, RData, Record, RecordType,
        rdata::{A, PTR},
    },
    serialize::binary::{BinDecodable, BinDecoder},
};
use ipnet::{IpNet, Ipv4Net};

/// Time to live of our answers. Addresses only change when the agent restarts with another
/// configuration, but a short TTL keeps a stale cache from outliving that for long.
pub const TTL: u32 = 30;

/// The largest UDP answer we ever send, whatever the client's EDNS buffer says (the DNS flag
/// day's 1232 bytes): larger answers go over TCP.
pub const UDP_MAX: u16 = 1232;

/// The classic limit for clients that do not speak EDNS.
pub const UDP_CLASSIC: u16 = 512;

/// A query has one question and at most a few extra records (OPT, a cookie, a signature).
const MAX_QUERY_RECORDS: u16 = 4;

/// The names the server knows: host name → address, read-only for the server's life. Built
/// once from the configuration; looking a name up never touches the host itself.
#[derive(Clone, Debug)]
pub struct NameTable {
    /// Lower case, no trailing dot, e.g. `imag.internal`.
    domain: String,
    subnet: Option<Ipv4Net>,
    by_name: HashMap<String, Ipv4Addr>,
    by_addr: HashMap<Ipv4Addr, String>,
}

impl NameTable {
    /// `domain` without trailing dot; names and the domain are matched case-insensitively.
    /// Reverse (PTR) lookups are answered for addresses in `subnet`.
    pub fn new(
        domain: &str,
        subnet: Option<Ipv4Net>,
        hosts: impl IntoIterator<Item = (String, Ipv4Addr)>,
    ) -> NameTable {
        let mut by_name = HashMap::new();
        let mut by_addr = HashMap::new();
        for (name, addr) in hosts {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            by_addr.entry(addr).or_insert_with(|| name.clone());
            by_name.insert(name, addr);
        }
        NameTable {
            domain: domain.trim_end_matches('.').to_ascii_lowercase(),
            subnet,
            by_name,
            by_addr,
        }
    }

    /// The hosts of a configuration, under `domain`.
    pub fn from_config(config: &crate::config::Config, domain: &str) -> NameTable {
        NameTable::new(
            domain,
            Some(config.network.subnet),
            config.hosts.iter().map(|h| (h.name.clone(), h.address)),
        )
    }

    pub fn domain(&self) -> &str {
        &self.domain
    }

    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

/// What became of a query, as counted in `imag_dns_queries_total{result}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Answered from the table (an address, a name, or an empty answer for a known name).
    Answered,
    /// A name inside the domain (or a subnet address) that no host has.
    NxDomain,
    /// Forwarded, and an upstream resolver answered.
    Forwarded,
    /// Forwarded, and no upstream resolver answered in time (or none is configured).
    ServFail,
    /// Not a DNS query: dropped without an answer.
    Malformed,
    /// A query we do not serve (another opcode or class, a zone transfer, too busy).
    Refused,
}

impl Outcome {
    pub const ALL: [Outcome; 6] = [
        Outcome::Answered,
        Outcome::NxDomain,
        Outcome::Forwarded,
        Outcome::ServFail,
        Outcome::Malformed,
        Outcome::Refused,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Answered => "answered",
            Outcome::NxDomain => "nxdomain",
            Outcome::Forwarded => "forwarded",
            Outcome::ServFail => "servfail",
            Outcome::Malformed => "malformed",
            Outcome::Refused => "refused",
        }
    }
}

/// The decision for one query.
#[derive(Debug)]
pub enum Verdict {
    /// Send this response.
    Reply(Box<Message>, Outcome),
    /// Not ours: forward the query as received to the upstream resolvers.
    Forward,
}

/// Why bytes are not a query we answer (they are dropped and counted as malformed).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Malformed {
    #[error("not a DNS message: {0}")]
    Decode(String),
    #[error("a response, not a query")]
    Response,
    #[error("{0} questions (a query has exactly one)")]
    Questions(u16),
    #[error("{0} records besides the question")]
    Records(u16),
}

/// Decodes a query. The header is read first so that a packet claiming thousands of records is
/// refused before the decoder reserves room for them.
pub fn parse_query(bytes: &[u8]) -> Result<Message, Malformed> {
    let header =
        Header::read(&mut BinDecoder::new(bytes)).map_err(|e| Malformed::Decode(e.to_string()))?;
    if header.metadata.message_type != MessageType::Query {
        return Err(Malformed::Response);
    }
    let counts = header.counts;
    if counts.queries != 1 {
        return Err(Malformed::Questions(counts.queries));
    }
    let extra = counts
        .answers
        .saturating_add(counts.authorities)
        .saturating_add(counts.additionals);
    if extra > MAX_QUERY_RECORDS {
        return Err(Malformed::Records(extra));
    }
    Message::from_vec(bytes).map_err(|e| Malformed::Decode(e.to_string()))
}

/// The answer to `query` (one question, as [`parse_query`] returns).
pub fn decide(table: &NameTable, query: &Message) -> Verdict {
    let Some(question) = query.queries.first() else {
        return reply(query, ResponseCode::FormErr, Outcome::Malformed);
    };
    if query.metadata.op_code != OpCode::Query {
        return reply(query, ResponseCode::NotImp, Outcome::Refused);
    }
    if question.query_class != DNSClass::IN {
        return reply(query, ResponseCode::Refused, Outcome::Refused);
    }
    let qtype = question.query_type;
    let key = normalize(&question.name);

    if let Some(addr) = reverse_v4(&question.name) {
        if !table.subnet.is_some_and(|net| net.contains(&addr)) {
            return Verdict::Forward;
        }
        return match table.by_addr.get(&addr) {
            Some(host) if qtype == RecordType::PTR => {
                let Ok(target) = Name::from_ascii(format!("{host}.{}.", table.domain)) else {
                    return reply(query, ResponseCode::ServFail, Outcome::ServFail);
                };
                let record =
                    Record::from_rdata(question.name.clone(), TTL, RData::PTR(PTR(target)));
                answer(query, vec![record])
            }
            Some(_) => answer(query, Vec::new()),
            None => reply(query, ResponseCode::NXDomain, Outcome::NxDomain),
        };
    }

    let in_domain = key == table.domain
        || key
            .strip_suffix(table.domain.as_str())
            .is_some_and(|rest| rest.ends_with('.'));
    let host = if key == table.domain {
        None
    } else if in_domain {
        Some(&key[..key.len() - table.domain.len() - 1])
    } else {
        Some(key.as_str())
    };
    if matches!(qtype, RecordType::AXFR | RecordType::IXFR) && in_domain {
        return reply(query, ResponseCode::Refused, Outcome::Refused);
    }
    match host.and_then(|h| table.by_name.get(h)) {
        Some(&addr) => {
            let records = if matches!(qtype, RecordType::A | RecordType::ANY) {
                vec![Record::from_rdata(
                    question.name.clone(),
                    TTL,
                    RData::A(A(addr)),
                )]
            } else {
                // AAAA and every other type: the name exists, it has no such record.
                Vec::new()
            };
            answer(query, records)
        }
        // The domain itself exists (it holds the hosts) but has no records of its own.
        None if key == table.domain => answer(query, Vec::new()),
        None if in_domain => reply(query, ResponseCode::NXDomain, Outcome::NxDomain),
        None => Verdict::Forward,
    }
}

/// `Some(address)` for a name of the form `d.c.b.a.in-addr.arpa`.
fn reverse_v4(name: &Name) -> Option<Ipv4Addr> {
    let mut name = name.clone();
    name.set_fqdn(true);
    match name.parse_arpa_name().ok()? {
        IpNet::V4(net) if net.prefix_len() == 32 => Some(net.addr()),
        _ => None,
    }
}

/// Lower case, without the trailing dot: `Backend.Imag.Internal.` → `backend.imag.internal`.
fn normalize(name: &Name) -> String {
    let mut text = name.to_lowercase().to_ascii();
    if text.ends_with('.') {
        text.pop();
    }
    text
}

fn answer(query: &Message, records: Vec<Record>) -> Verdict {
    let mut response = response_to(query, ResponseCode::NoError);
    response.metadata.authoritative = true;
    response.add_answers(records);
    Verdict::Reply(Box::new(response), Outcome::Answered)
}

fn reply(query: &Message, code: ResponseCode, outcome: Outcome) -> Verdict {
    let mut response = response_to(query, code);
    response.metadata.authoritative = matches!(outcome, Outcome::NxDomain);
    Verdict::Reply(Box::new(response), outcome)
}

/// A response header and question for `query`, with no records.
pub fn response_to(query: &Message, code: ResponseCode) -> Message {
    let mut response = Message::response(query.metadata.id, query.metadata.op_code);
    response.metadata.response_code = code;
    response.metadata.recursion_desired = query.metadata.recursion_desired;
    response.metadata.recursion_available = true;
    response.metadata.checking_disabled = query.metadata.checking_disabled;
    response.add_queries(query.queries.iter().cloned());
    // RFC 6891: a response to a query with an OPT record carries one.
    if query.edns.is_some() {
        let mut edns = Edns::new();
        edns.set_max_payload(UDP_MAX);
        response.set_edns(edns);
    }
    response
}

/// The largest answer `query`'s sender accepts over UDP: 512 bytes, or its EDNS buffer size
/// up to [`UDP_MAX`].
pub fn udp_limit(query: &Message) -> usize {
    usize::from(
        query
            .edns
            .as_ref()
            .map_or(UDP_CLASSIC, Edns::max_payload)
            .clamp(UDP_CLASSIC, UDP_MAX),
    )
}

/// `response` encoded for UDP: as it is when it fits `limit`, else only its header and question
/// with the TC bit set (the client asks again over TCP). The bool says whether it was truncated.
pub fn encode_udp(response: &Message, limit: usize) -> (Vec<u8>, bool) {
    match response.to_vec() {
        Ok(bytes) if bytes.len() <= limit => (bytes, false),
        _ => (truncated(response), true),
    }
}

/// Header and question of `response` with the TC bit set: no larger than the query itself.
pub fn truncated(response: &Message) -> Vec<u8> {
    // Encoding a header and the question we decoded ourselves cannot fail.
    response.truncate().to_vec().unwrap_or_default()
}

/// Whether `bytes` is the upstream's answer to `query` (same id and question), so that a stray
/// or spoofed datagram is not passed on.
pub fn answers_query(bytes: &[u8], query: &Message) -> bool {
    match Message::from_vec(bytes) {
        Ok(response) => {
            response.metadata.message_type == MessageType::Response
                && response.metadata.id == query.metadata.id
                && response.queries == query.queries
        }
        Err(_) => false,
    }
}

#[cfg(test)]
#[path = "answer_tests.rs"]
mod tests;
