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
    /// None, or more than one.
    Invalid,
}

pub(super) fn body(rec: &pb::RecordLink) -> Body<'_> {
    let bodies = [
        rec.header.is_some(),
        rec.event.is_some(),
        rec.checkpoint.is_some(),
        rec.seal.is_some(),
        rec.reads.is_some(),
    ];
    if bodies.iter().filter(|b| **b).count() != 1 {
        return Body::Invalid;
    }
    match (&rec.header, &rec.checkpoint, &rec.seal) {
        (Some(h), _, _) => Body::Header(h),
        (_, Some(c), _) => Body::Checkpoint(c),
        (_, _, Some(s)) => Body::Seal(s),
        _ if rec.event.is_some() => Body::Event,
        _ => Body::Reads,
    }
}

/// One frame as found in the file.
pub(super) struct Frame {
    pub(super) offset: usize,
    pub(super) end: usize,
    pub(super) stored: Hash,
    pub(super) intact: bool,
    pub(super) record: Option<pb::RecordLink>,
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
            record: pb::RecordLink::decode(payload).ok(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use pb::record::Body as B;

    /// `RecordLink` mirrors `Record`: every body lands in its own field, with seq and prev.
    #[test]
    fn the_link_view_reads_every_body_of_a_record() {
        let bodies = [
            B::Header(pb::Header::default()),
            B::Event(crate::events::pb::Event::default()),
            B::Checkpoint(pb::Checkpoint::default()),
            B::Seal(pb::Seal::default()),
            B::Reads(pb::ReadSummary::default()),
        ];
        for b in bodies {
            let which = format!("{b:?}");
            let rec = pb::Record {
                seq: 7,
                wall_ns: 1,
                mono_ns: 2,
                prev: vec![3; 32],
                body: Some(b),
            };
            let link = pb::RecordLink::decode(rec.encode_to_vec().as_slice()).unwrap();
            assert_eq!((link.seq, link.prev.as_slice()), (7, &[3; 32][..]));
            let got = match body(&link) {
                Body::Header(_) => "Header",
                Body::Event => "Event",
                Body::Checkpoint(_) => "Checkpoint",
                Body::Seal(_) => "Seal",
                Body::Reads => "Reads",
                Body::Invalid => "Invalid",
            };
            assert!(which.starts_with(got), "{which} read as {got}");
        }
    }
}
