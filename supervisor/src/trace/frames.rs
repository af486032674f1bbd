//! Frames as found in a trace file: the byte layout (trace.proto's header comment), read
//! without trusting any of it. `verify` walks them; tools and tests cut and splice by them.

use prost::Message as _;

use super::{hash, pb, Hash, FRAME_OVERHEAD, MAGIC, MAX_RECORD};

/// What verification reads of a record. An event's content is skipped, not decoded: the
/// chain and signatures are checked without building every event (`records` decodes them).
#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct Link {
    #[prost(uint64, tag = "1")]
    pub(super) seq: u64,
    #[prost(bytes = "vec", tag = "4")]
    pub(super) prev: Vec<u8>,
    #[prost(message, optional, tag = "10")]
    header: Option<pb::Header>,
    #[prost(message, optional, tag = "11")]
    event: Option<Skipped>,
    #[prost(message, optional, tag = "12")]
    checkpoint: Option<pb::Checkpoint>,
    #[prost(message, optional, tag = "13")]
    seal: Option<pb::Seal>,
    #[prost(message, optional, tag = "14")]
    reads: Option<Skipped>,
}

#[derive(Clone, Copy, PartialEq, prost::Message)]
struct Skipped {}

pub(super) enum Body<'a> {
    Header(&'a pb::Header),
    Event,
    Checkpoint(&'a pb::Checkpoint),
    Seal(&'a pb::Seal),
    Reads,
    /// None, or more than one.
    Invalid,
}

impl Link {
    pub(super) fn body(&self) -> Body<'_> {
        let bodies = [
            self.header.is_some(),
            self.event.is_some(),
            self.checkpoint.is_some(),
            self.seal.is_some(),
            self.reads.is_some(),
        ];
        if bodies.iter().filter(|b| **b).count() != 1 {
            return Body::Invalid;
        }
        match (&self.header, &self.checkpoint, &self.seal) {
            (Some(h), _, _) => Body::Header(h),
            (_, Some(c), _) => Body::Checkpoint(c),
            (_, _, Some(s)) => Body::Seal(s),
            _ if self.event.is_some() => Body::Event,
            _ => Body::Reads,
        }
    }
}

/// One frame as found in the file.
pub(super) struct Frame {
    pub(super) offset: usize,
    pub(super) end: usize,
    pub(super) stored: Hash,
    pub(super) intact: bool,
    pub(super) record: Option<Link>,
}

/// How the frames end: cleanly, cut short, or with a damaged length field.
pub(super) enum Tail {
    Clean,
    Torn { offset: usize, have: usize, need: usize },
    BadLength { offset: usize },
}

pub(super) fn frames(bytes: &[u8]) -> (Vec<Frame>, Tail) {
    let mut out = Vec::new();
    let mut pos = MAGIC.len();
    loop {
        let rest = &bytes[pos..];
        let offset = pos;
        if rest.is_empty() {
            return (out, Tail::Clean);
        }
        if rest.len() < 8 {
            return (
                out,
                Tail::Torn {
                    offset,
                    have: rest.len(),
                    need: 8,
                },
            );
        }
        let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]);
        let check = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]);
        if check != !len || len as usize > MAX_RECORD {
            return (out, Tail::BadLength { offset });
        }
        let need = len as usize + FRAME_OVERHEAD;
        if rest.len() < need {
            return (
                out,
                Tail::Torn {
                    offset,
                    have: rest.len(),
                    need,
                },
            );
        }
        let payload = &rest[8..8 + len as usize];
        let mut stored = [0; 32];
        stored.copy_from_slice(&rest[8 + len as usize..need]);
        let intact = hash(payload) == stored;
        out.push(Frame {
            offset,
            end: offset + need,
            stored,
            intact,
            record: Link::decode(payload).ok(),
        });
        pos += need;
    }
}

/// The intact records of a verified trace, decoded (events whole).
pub fn records(bytes: &[u8], r: &super::verify::Report) -> Vec<pb::Record> {
    frames(bytes)
        .0
        .iter()
        .take(r.intact)
        .filter_map(|f| pb::Record::decode(&bytes[f.offset + 8..f.end - 32]).ok())
        .collect()
}

/// Byte ranges of the frames of a trace (magic excluded), as far as they can be read: for
/// tools and tests that cut or splice traces.
pub fn frame_bounds(bytes: &[u8]) -> Vec<std::ops::Range<usize>> {
    frames(bytes).0.iter().map(|f| f.offset..f.end).collect()
}
