//! cordon's resolver for the sandbox: every question is judged by the rules; an allowed name
//! gets a stand-in IPv4 address from 198.18.0.0/15 (RFC 2544's benchmarking range, never
//! routed) that the proxy maps back to the name, and no IPv6 address (clients fall back to
//! IPv4). The agent's answer is never what cordon connects to: cordon resolves the name
//! itself and checks those addresses (rebinding) before answering.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, Record, RecordType};

/// The stand-in range: 198.18.0.0/15.
const SYNTH_BASE: u32 = u32::from_be_bytes([198, 18, 0, 0]);
const SYNTH_SIZE: u32 = 1 << 17;
/// Seconds the agent may cache an answer (the mapping itself lasts the whole run).
const TTL: u32 = 60;

/// A name the agent resolved through cordon.
#[derive(Debug, Clone)]
pub struct Entry {
    pub name: String,
    /// Where cordon connects for it.
    pub upstream: Vec<IpAddr>,
    /// From the profile's `resolve`, not from DNS.
    pub fixed: bool,
}

/// Names ↔ stand-in addresses, for the run.
#[derive(Debug, Default)]
pub struct Synth {
    by_name: HashMap<String, u32>,
    entries: Vec<Entry>,
}

impl Synth {
    /// The stand-in address for `entry.name` (the same one on every question), or None
    /// when the range is used up.
    pub fn assign(&mut self, entry: Entry) -> Option<Ipv4Addr> {
        if let Some(&i) = self.by_name.get(&entry.name) {
            self.entries[i as usize] = entry;
            return Some(Ipv4Addr::from(SYNTH_BASE + i + 1));
        }
        let i = u32::try_from(self.entries.len())
            .ok()
            .filter(|i| i + 2 < SYNTH_SIZE)?;
        self.by_name.insert(entry.name.clone(), i);
        self.entries.push(entry);
        Some(Ipv4Addr::from(SYNTH_BASE + i + 1))
    }

    /// The name behind a stand-in address; None for an address cordon never gave out.
    pub fn lookup(&self, ip: Ipv4Addr) -> Option<&Entry> {
        let n = u32::from(ip).checked_sub(SYNTH_BASE + 1)?;
        self.entries.get(n as usize)
    }

    /// Is `ip` in the stand-in range (given out or not)?
    pub fn in_range(ip: Ipv4Addr) -> bool {
        u32::from(ip).wrapping_sub(SYNTH_BASE) < SYNTH_SIZE
    }
}

/// One question from the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    pub id: u16,
    /// Normalised (lowercase, no trailing dot); raw when it is not a valid name.
    pub name: String,
    pub qtype: RecordType,
}

/// A datagram that is not one question cordon answers.
#[derive(Debug, thiserror::Error)]
pub enum QuestionError {
    #[error("not a DNS message: {0}")]
    NotDns(#[from] hickory_proto::ProtoError),
    #[error("not a standard query")]
    NotQuery,
    #[error("{0} questions (one expected)")]
    Questions(usize),
}

/// Parse a query datagram.
pub fn parse(datagram: &[u8]) -> Result<(Message, Question), QuestionError> {
    let msg = Message::from_vec(datagram)?;
    if msg.message_type() != MessageType::Query || msg.op_code() != OpCode::Query {
        return Err(QuestionError::NotQuery);
    }
    let [q] = msg.queries() else {
        return Err(QuestionError::Questions(msg.queries().len()));
    };
    let raw = q.name().to_ascii();
    let raw = raw.strip_suffix('.').unwrap_or(&raw).to_ascii_lowercase();
    let name = crate::profile::egress::normalize_name(&raw).unwrap_or(raw);
    let question = Question {
        id: msg.id(),
        name,
        qtype: q.query_type(),
    };
    Ok((msg, question))
}

/// The reply to `query`: `code`, and for an A question the stand-in `answer`.
pub fn reply(query: &Message, code: ResponseCode, answer: Option<Ipv4Addr>) -> Vec<u8> {
    let mut m = Message::new();
    m.set_id(query.id())
        .set_message_type(MessageType::Response)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(query.recursion_desired())
        .set_recursion_available(true)
        .set_authoritative(false)
        .set_response_code(code);
    for q in query.queries() {
        m.add_query(q.clone());
        if let Some(ip) = answer {
            m.add_answer(Record::from_rdata(q.name().clone(), TTL, RData::A(A(ip))));
        }
    }
    m.to_vec().unwrap_or_default()
}

/// Name of a response code for events.
pub fn rcode_name(code: ResponseCode) -> &'static str {
    match code {
        ResponseCode::NoError => "NOERROR",
        ResponseCode::NXDomain => "NXDOMAIN",
        ResponseCode::Refused => "REFUSED",
        ResponseCode::ServFail => "SERVFAIL",
        ResponseCode::NotImp => "NOTIMP",
        ResponseCode::FormErr => "FORMERR",
        _ => "OTHER",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::Query;
    use hickory_proto::rr::Name;
    use std::str::FromStr;

    fn query(name: &str, ty: RecordType) -> Vec<u8> {
        let mut m = Message::new();
        m.set_id(0x1234).set_recursion_desired(true);
        m.add_query(Query::query(Name::from_str(name).unwrap(), ty));
        m.to_vec().unwrap()
    }

    #[test]
    fn questions_are_normalised_and_answers_echo_them() {
        let (msg, q) = parse(&query("API.Example.COM.", RecordType::A)).unwrap();
        assert_eq!(
            (q.id, q.name.as_str(), q.qtype),
            (0x1234, "api.example.com", RecordType::A)
        );
        let bytes = reply(&msg, ResponseCode::NoError, Some(Ipv4Addr::new(198, 18, 0, 1)));
        let r = Message::from_vec(&bytes).unwrap();
        assert_eq!(r.id(), 0x1234);
        assert_eq!(r.message_type(), MessageType::Response);
        assert_eq!(r.answers().len(), 1);
        match r.answers()[0].data() {
            RData::A(a) => assert_eq!(a.0, Ipv4Addr::new(198, 18, 0, 1)),
            other => panic!("{other:?}"),
        }
        let nx = Message::from_vec(&reply(&msg, ResponseCode::NXDomain, None)).unwrap();
        assert_eq!(nx.response_code(), ResponseCode::NXDomain);
        assert!(nx.answers().is_empty());
        assert!(parse(b"\x00\x01garbage").is_err());
    }

    #[test]
    fn stand_ins_are_stable_per_name_and_map_back() {
        let mut s = Synth::default();
        let e = |n: &str| Entry {
            name: n.into(),
            upstream: vec!["203.0.113.1".parse().unwrap()],
            fixed: false,
        };
        let a = s.assign(e("a.test")).unwrap();
        let b = s.assign(e("b.test")).unwrap();
        assert_eq!(a, Ipv4Addr::new(198, 18, 0, 1));
        assert_eq!(b, Ipv4Addr::new(198, 18, 0, 2));
        assert_eq!(s.assign(e("a.test")), Some(a));
        assert_eq!(s.lookup(b).unwrap().name, "b.test");
        assert!(s.lookup(Ipv4Addr::new(198, 18, 0, 9)).is_none());
        assert!(Synth::in_range(Ipv4Addr::new(198, 19, 255, 255)));
        assert!(!Synth::in_range(Ipv4Addr::new(198, 20, 0, 0)));
    }
}
