//! Frames as found in a trace file: the byte layout (trace.proto's header comment), read
//! without trusting any of it. `verify` walks them; tools and tests cut and splice by them.

use prost::Message as _;

use super::{hash, pb, Hash, FRAME_OVERHEAD, MAGIC, MAX_RECORD};

/// A record's body as verification walks it (events and read summaries are only counted).
pub(super) enum Body<'a> {
    Header(&'a pb::Header),
    Event,
    Checkpoint(&'a pb::Checkpoint),
    Seal(&'a pb::Seal),
    Reads,
    /// None.
    Invalid,
}

pub(super) fn body(rec: &pb::Record) -> Body<'_> {
    match &rec.body {
        Some(pb::record::Body::Header(h)) => Body::Header(h),
        Some(pb::record::Body::Event(_)) => Body::Event,
        Some(pb::record::Body::Checkpoint(c)) => Body::Checkpoint(c),
        Some(pb::record::Body::Seal(s)) => Body::Seal(s),
        Some(pb::record::Body::Reads(_)) => Body::Reads,
        None => Body::Invalid,
    }
}

/// Decode a payload as a `Record`, and only if every byte of it is accounted for: the writer
/// encodes each record exactly once, so extra bytes — a second body (protobuf keeps the last
/// of a oneof), a field this version does not know, a repeated scalar — mean the record was
/// not written as it reads. (Lengths, not bytes, are compared: a map's entries may come back
/// in another order.)
fn decode(payload: &[u8]) -> Option<pb::Record> {
    pb::Record::decode(payload)
        .ok()
        .filter(|r| r.encoded_len() == payload.len())
}

/// One frame as found in the file.
pub(super) struct Frame {
    pub(super) offset: usize,
    pub(super) end: usize,
    pub(super) stored: Hash,
    pub(super) intact: bool,
    /// The record, when the payload is exactly one (see `decode`).
    pub(super) record: Option<pb::Record>,
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
            record: decode(payload),
        });
        pos += need;
    }
}

/// The intact records of a verified trace, decoded.
pub fn records(bytes: &[u8], r: &super::verify::Report) -> Vec<pb::Record> {
    frames(bytes)
        .0
        .into_iter()
        .take(r.intact)
        .filter_map(|f| f.record)
        .collect()
}

/// Byte ranges of the frames of a trace (magic excluded), as far as they can be read: for
/// tools and tests that cut or splice traces.
pub fn frame_bounds(bytes: &[u8]) -> Vec<std::ops::Range<usize>> {
    frames(bytes).0.iter().map(|f| f.offset..f.end).collect()
}
