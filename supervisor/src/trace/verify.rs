//! Reading a trace back: every complete record is recovered, and the first damage is named
//! with its kind and the record it concerns.
//!
//! How damage is told apart (each frame carries its own hash, and each record the hash of
//! the record before it):
//! - a frame whose content does not match its own hash, or whose length field does not match
//!   its complement: **modified**;
//! - an intact frame that does not follow the one before it but follows the one before that:
//!   the one in between was **inserted**; an intact frame repeating an earlier sequence number:
//!   **inserted** (a copy);
//! - an intact frame with the expected sequence number that does not follow its predecessor:
//!   the predecessor was **modified** and re-hashed;
//! - a sequence number ahead of the expected one: **reordered** if the expected record comes
//!   later, else **deleted**;
//! - a chain that links but a checkpoint or seal whose signature does not verify: records
//!   after the last good checkpoint were **modified** and re-hashed without the key;
//! - a frame cut short at the end: **truncated**; a trace that ends on a record boundary
//!   without a seal: **unsealed** (cordon was killed, or the file was cut there: a head
//!   stored elsewhere, `--head`, tells which).

use std::fmt;

use ed25519_dalek::VerifyingKey;

use super::frames::{body, frames, Body, Frame, Tail};
pub use super::frames::{frame_bounds, records};
use super::{pb, Hash, FORMAT_VERSION, MAGIC};

/// The format versions this reader checks. Version 1 (events as `cordon.events.v1`, records
/// encoded by hand) has the same framing, wire encoding and signed messages as version 2
/// (records encoded through the generated types, events as `cordon.events.v2`): only the
/// schema's package names changed, which never reach the wire.
pub const READS_VERSIONS: std::ops::RangeInclusive<u32> = 1..=FORMAT_VERSION;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    NotATrace,
    Modified,
    Inserted,
    Deleted,
    Reordered,
    Truncated,
    Unsealed,
    WrongKey,
    /// Written in a format version this cordon does not read (`READS_VERSIONS`).
    Unsupported,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(match self {
            Kind::NotATrace => "not a trace",
            Kind::Modified => "modified",
            Kind::Inserted => "inserted",
            Kind::Deleted => "deleted",
            Kind::Reordered => "reordered",
            Kind::Truncated => "truncated",
            Kind::Unsealed => "unsealed",
            Kind::WrongKey => "wrong key",
            Kind::Unsupported => "unsupported format version",
        })
    }
}

/// The first damage found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    pub kind: Kind,
    /// The record it concerns, by position (= its sequence number in an intact trace).
    pub record: u64,
    /// Byte offset of that record's frame in the file.
    pub offset: u64,
    pub detail: String,
}

impl fmt::Display for Damage {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "{} at record {} (byte {}): {}",
            self.kind, self.record, self.offset, self.detail
        )
    }
}

/// What a trace holds and whether it is whole.
#[derive(Debug, Default)]
pub struct Report {
    pub header: Option<pb::Header>,
    /// Records intact, in order, up to the first damage (header and seal included);
    /// `records` decodes them.
    pub intact: usize,
    pub events: u64,
    /// `ReadSummary` records (routine reads summarised per interval).
    pub read_summaries: u64,
    pub checkpoints: u64,
    /// The latest checkpoint that verified: the head `cordon trace head` prints (the writer
    /// puts one right before the seal, so in a sealed trace it covers every event).
    pub last_head: Option<pb::Checkpoint>,
    pub seal: Option<pb::Seal>,
    /// The key signatures were checked against, and whether it came from `--pubkey`.
    pub key: Option<VerifyingKey>,
    pub key_given: bool,
    pub damage: Option<Damage>,
}

impl Report {
    pub fn valid(&self) -> bool {
        self.damage.is_none()
    }
}

fn damage(kind: Kind, record: u64, offset: usize, detail: impl Into<String>) -> Option<Damage> {
    Some(Damage {
        kind,
        record,
        offset: offset as u64,
        detail: detail.into(),
    })
}

/// Read and check a whole trace. `key`: the expected signer (else the header's key);
/// `head`: a signed head stored elsewhere that the trace must still contain.
pub fn verify(bytes: &[u8], key: Option<VerifyingKey>, head: Option<&pb::Checkpoint>) -> Report {
    let mut r = Report {
        key,
        key_given: key.is_some(),
        ..Default::default()
    };
    if bytes.len() < MAGIC.len() || bytes[..MAGIC.len()] != MAGIC[..] {
        let differing = MAGIC.iter().zip(bytes).filter(|(a, b)| a != b).count();
        r.damage = if bytes.len() < MAGIC.len() && MAGIC.starts_with(bytes) {
            damage(
                Kind::Truncated,
                0,
                0,
                format!("the file ends after {} bytes", bytes.len()),
            )
        } else if bytes.len() >= MAGIC.len() && differing <= 2 {
            damage(
                Kind::Modified,
                0,
                0,
                "the trace magic at the start of the file is damaged",
            )
        } else {
            damage(
                Kind::NotATrace,
                0,
                0,
                "the file does not start with \"cordon-trace-v1\"",
            )
        };
        return r;
    }
    let (frames, tail) = frames(bytes);
    r.damage = walk(&frames, &mut r);
    if r.damage.is_some() {
        return r;
    }
    let end = frames.len() as u64;
    r.damage = match tail {
        Tail::Clean => None,
        Tail::Torn { offset, have, need } => damage(
            Kind::Truncated,
            end,
            offset,
            format!(
                "the file ends inside record {end} ({have} of {} bytes present); the {end} records before it are complete; the trace is unsealed",
                if need == 8 { "≥8".to_string() } else { need.to_string() }
            ),
        ),
        Tail::BadLength { offset } => damage(
            Kind::Modified,
            end,
            offset,
            "its length field does not match its check value",
        ),
    };
    if r.damage.is_none() {
        if let Some(h) = head {
            r.damage = check_head(&frames, &r, h);
        }
    }
    if r.damage.is_none() && r.seal.is_none() {
        let last = end.saturating_sub(1);
        let offset = frames.last().map_or(MAGIC.len(), |f| f.offset);
        r.damage = damage(
            Kind::Unsealed,
            last,
            offset,
            format!(
                "the trace ends after record {last} without a seal: cordon was killed, the machine stopped, or the file was cut at a record boundary (verify --head with a head stored elsewhere tells which); {} records up to the last checkpoint are signed",
                r.last_head.as_ref().map_or(0, |h| h.seq + 1)
            ),
        );
    }
    r
}

fn check_head(frames: &[Frame], r: &Report, h: &pb::Checkpoint) -> Option<Damage> {
    let key = r.key?;
    let sandbox = r.header.as_ref().map(|h| h.sandbox.as_str()).unwrap_or_default();
    if !super::head_signed_by(&key, h) || h.sandbox != sandbox {
        return damage(
            Kind::WrongKey,
            h.seq,
            0,
            format!(
                "the head given is not a head of this trace signed by its key (head of sandbox {})",
                h.sandbox
            ),
        );
    }
    match frames.get(usize::try_from(h.seq).unwrap_or(usize::MAX)) {
        None => {
            let end = frames.len() as u64;
            damage(
                Kind::Truncated,
                end,
                frames.last().map_or(0, |f| f.offset),
                format!(
                    "the head says records 0..={} existed, the trace ends after record {}: records {end}..={} were cut off",
                    h.seq,
                    end.saturating_sub(1),
                    h.seq
                ),
            )
        }
        Some(f) if f.stored[..] != h.chain[..] => damage(
            Kind::Modified,
            h.seq,
            f.offset,
            "the trace does not extend the head given: records up to it were changed and re-hashed",
        ),
        Some(_) => None,
    }
}

/// Follow the chain frame by frame; fill `r` with what is intact; return the first damage.
fn walk(frames: &[Frame], r: &mut Report) -> Option<Damage> {
    let mut prev: Hash = [0; 32];
    let mut prevprev: Option<Hash> = None;
    let mut last_good_checkpoint = 0u64;
    for (i, f) in frames.iter().enumerate() {
        let expected = i as u64;
        let at = |kind, record, detail: String| damage(kind, record, f.offset, detail);
        let rec = match (&f.record, f.intact) {
            (Some(rec), true) => rec,
            (_, false) => {
                return at(
                    Kind::Modified,
                    expected,
                    "its content does not match its hash".into(),
                )
            }
            (None, true) => return at(Kind::Modified, expected, "it is not a record".into()),
        };
        if rec.prev[..] != prev[..] && i == 0 && rec.seq == 0 {
            return at(Kind::Modified, 0, "record 0 does not start the chain".into());
        }
        if rec.prev[..] != prev[..] {
            // Damage of the record before this one (for record 0, the case above).
            let at_previous = |kind, detail: String| damage(kind, expected - 1, frames[i - 1].offset, detail);
            if prevprev.is_some_and(|pp| rec.prev[..] == pp[..]) {
                return at_previous(
                    Kind::Inserted,
                    format!(
                        "record {} is not part of the chain: record {expected} follows the one before it",
                        expected - 1
                    ),
                );
            }
            if rec.seq < expected {
                return at(
                    Kind::Inserted,
                    expected,
                    format!(
                        "a second record {} appears where record {expected} belongs",
                        rec.seq
                    ),
                );
            }
            if rec.seq == expected {
                return at_previous(
                    Kind::Modified,
                    format!(
                        "record {} was changed and re-hashed: record {expected} does not follow it",
                        expected - 1
                    ),
                );
            }
            let later = |seq: u64| {
                frames[i + 1..]
                    .iter()
                    .position(|g| g.record.as_ref().is_some_and(|g| g.seq == seq))
            };
            if later(rec.seq).is_some() {
                return at(
                    Kind::Inserted,
                    expected,
                    format!(
                        "a copy of record {} appears where record {expected} belongs",
                        rec.seq
                    ),
                );
            }
            if let Some(j) = later(expected) {
                return at(
                    Kind::Reordered,
                    expected,
                    format!(
                        "record {} stands where record {expected} belongs; record {expected} comes {} frame(s) later",
                        rec.seq,
                        j + 1
                    ),
                );
            }
            return at(
                Kind::Deleted,
                expected,
                format!("records {expected}..={} are missing", rec.seq - 1),
            );
        }
        if rec.seq != expected {
            // The chain links, so the file was re-hashed after records were renumbered.
            let kind = if rec.seq > expected {
                Kind::Deleted
            } else {
                Kind::Inserted
            };
            return at(
                kind,
                expected,
                format!("record {} stands where record {expected} belongs", rec.seq),
            );
        }
        match (body(rec), i) {
            (Body::Header(h), 0) => {
                if !READS_VERSIONS.contains(&h.format_version) {
                    return at(
                        Kind::Unsupported,
                        0,
                        format!(
                            "the header says format version {}; this cordon reads versions {}..={}",
                            h.format_version,
                            READS_VERSIONS.start(),
                            READS_VERSIONS.end()
                        ),
                    );
                }
                let declared = crate::keys::parse_public(&h.public_key).ok();
                match (r.key, declared) {
                    (None, Some(k)) => r.key = Some(k),
                    (None, None) => {
                        return at(Kind::Modified, 0, "the header names no valid signing key".into())
                    }
                    (Some(given), d) if d != Some(given) => {
                        return at(
                            Kind::WrongKey,
                            0,
                            format!(
                                "the trace says it is signed by {}, not by the key given",
                                h.public_key
                            ),
                        )
                    }
                    _ => {}
                }
                r.header = Some(h.clone());
            }
            (_, 0) => return at(Kind::Modified, 0, "record 0 is not a header".into()),
            (Body::Header(_), _) => return at(Kind::Inserted, expected, "a second header".into()),
            (Body::Event, _) => r.events += 1,
            (Body::Reads, _) => r.read_summaries += 1,
            (Body::Checkpoint(c), _) => {
                let ok = c.seq + 1 == expected
                    && c.chain[..] == prev[..]
                    && r.header.as_ref().is_some_and(|h| h.sandbox == c.sandbox)
                    && r.key.is_some_and(|k| super::head_signed_by(&k, c));
                if !ok {
                    return forged(f, last_good_checkpoint, expected, "checkpoint");
                }
                r.checkpoints += 1;
                last_good_checkpoint = expected;
                r.last_head = Some(c.clone());
            }
            (Body::Seal(s), _) => {
                let ok = s.seq + 1 == expected
                    && s.chain[..] == prev[..]
                    && s.records == expected
                    && s.events == r.events
                    && r.header.as_ref().is_some_and(|h| h.sandbox == s.sandbox)
                    && r.key.is_some_and(|k| super::seal_signed_by(&k, s));
                if !ok {
                    return forged(f, last_good_checkpoint, expected, "seal");
                }
                if let Some(next) = frames.get(i + 1) {
                    return damage(
                        Kind::Inserted,
                        expected + 1,
                        next.offset,
                        "records follow the seal".to_string(),
                    );
                }
                r.seal = Some(s.clone());
            }
            (Body::Invalid, _) => {
                return at(
                    Kind::Modified,
                    expected,
                    "the record has no body, or more than one".into(),
                )
            }
        }
        r.intact += 1;
        prevprev = Some(prev);
        prev = f.stored;
    }
    None
}

fn forged(f: &Frame, last_good: u64, at: u64, what: &str) -> Option<Damage> {
    damage(
        Kind::Modified,
        last_good + 1,
        f.offset,
        format!(
            "the {what} at record {at} does not verify with the signing key: records {}..{at} were changed and re-hashed by someone without the key",
            last_good + 1
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::pb as ev;
    use crate::trace::writer::Chain;
    use ed25519_dalek::SigningKey;

    const KEY: [u8; 32] = [5; 32];

    /// A sealed trace of `n` events (checkpoint every 4096 records, so one before the seal).
    fn trace(n: u64) -> Vec<u8> {
        let key = SigningKey::from_bytes(&KEY);
        let header = pb::Header {
            sandbox: "t1".into(),
            public_key: crate::keys::public_text(&key.verifying_key()),
            ..Default::default()
        };
        let mut c = Chain::new(key, &header);
        for i in 0..n {
            c.event(&ev::Event {
                seq: i + 1,
                comm: format!("proc{i}"),
                ..Default::default()
            });
            if i == n / 2 {
                c.checkpoint();
            }
        }
        c.seal(0, String::new());
        c.pending().to_vec()
    }

    fn check(bytes: &[u8]) -> Option<(Kind, u64)> {
        verify(bytes, None, None).damage.map(|d| (d.kind, d.record))
    }

    fn splice(bytes: &[u8], parts: &[std::ops::Range<usize>]) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        for p in parts {
            out.extend_from_slice(&bytes[p.clone()]);
        }
        out
    }

    #[test]
    fn an_untouched_trace_verifies() {
        let t = trace(20);
        let r = verify(&t, None, None);
        assert!(r.valid(), "{:?}", r.damage);
        assert_eq!(r.events, 20);
        assert_eq!(r.checkpoints, 2);
        assert_eq!(r.seal.as_ref().unwrap().records, r.intact as u64 - 1);
        assert_eq!(records(&t, &r).len(), r.intact);
        let head = r.last_head.as_ref().unwrap();
        assert!(verify(&t, None, Some(head)).valid());
    }

    #[test]
    fn every_kind_of_damage_is_named_with_its_record() {
        let t = trace(20);
        let f = frame_bounds(&t);
        let n = f.len();
        // Delete record 5.
        let mut parts: Vec<_> = f.clone();
        parts.remove(5);
        assert_eq!(check(&splice(&t, &parts)), Some((Kind::Deleted, 5)));
        // Swap 7 and 8.
        let mut parts = f.clone();
        parts.swap(7, 8);
        assert_eq!(check(&splice(&t, &parts)), Some((Kind::Reordered, 7)));
        // Insert a copy of record 3 after record 9.
        let mut parts = f.clone();
        parts.insert(10, f[3].clone());
        assert_eq!(check(&splice(&t, &parts)), Some((Kind::Inserted, 10)));
        // Cut at every record boundary: unsealed after the last whole record.
        for k in 1..n {
            let cut = &t[..f[k].start];
            assert_eq!(check(cut), Some((Kind::Unsealed, k as u64 - 1)), "cut before {k}");
        }
        // Cut inside every record: truncated at that record.
        for (k, r) in f.iter().enumerate() {
            for at in [r.start + 1, r.start + 7, r.start + 9, r.end - 1] {
                assert_eq!(check(&t[..at]), Some((Kind::Truncated, k as u64)), "cut at {at}");
            }
        }
        // Flip a byte anywhere in a frame: that record is modified.
        for (k, r) in f.iter().enumerate() {
            for at in (r.start..r.end).step_by(3) {
                let mut m = t.clone();
                m[at] ^= 0x40;
                assert_eq!(
                    check(&m),
                    Some((Kind::Modified, k as u64)),
                    "flip at {at} in record {k}"
                );
            }
        }
    }

    #[test]
    fn a_first_record_that_does_not_start_the_chain_is_modified_not_a_panic() {
        let rec = pb::Record {
            prev: vec![1; 32],
            body: Some(pb::record::Body::Header(pb::Header::default())),
            ..Default::default()
        };
        let payload = prost::Message::encode_to_vec(&rec);
        let len = u32::try_from(payload.len()).unwrap();
        let mut t = MAGIC.to_vec();
        t.extend_from_slice(&len.to_le_bytes());
        t.extend_from_slice(&(!len).to_le_bytes());
        t.extend_from_slice(&payload);
        t.extend_from_slice(&crate::trace::hash(&payload));
        assert_eq!(check(&t), Some((Kind::Modified, 0)));
    }

    /// A sealed trace of one event, framed and signed here record by record, its header
    /// saying `version`; `event` is the event record's payload as it is put in the file.
    fn framed(version: u32, event: impl Fn(Vec<u8>) -> Vec<u8>) -> Vec<u8> {
        use prost::Message as _;
        let key = SigningKey::from_bytes(&KEY);
        let header = pb::Header {
            format_version: version,
            sandbox: "t2".into(),
            public_key: crate::keys::public_text(&key.verifying_key()),
            ..Default::default()
        };
        let mut out = MAGIC.to_vec();
        let mut prev = [0u8; 32];
        let mut push = |seq: u64, body: pb::record::Body, edit: &dyn Fn(Vec<u8>) -> Vec<u8>| {
            let rec = pb::Record {
                seq,
                wall_ns: 1,
                mono_ns: 1,
                prev: prev.to_vec(),
                body: Some(body),
            };
            let payload = edit(rec.encode_to_vec());
            let len = u32::try_from(payload.len()).unwrap();
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(&(!len).to_le_bytes());
            out.extend_from_slice(&payload);
            prev = crate::trace::hash(&payload);
            out.extend_from_slice(&prev);
            prev
        };
        let same = |p: Vec<u8>| p;
        push(0, pb::record::Body::Header(header), &same);
        let h = push(1, pb::record::Body::Event(ev::Event::default()), &event);
        let mut seal = pb::Seal {
            sandbox: "t2".into(),
            seq: 1,
            chain: h.to_vec(),
            records: 2,
            events: 1,
            ..Default::default()
        };
        crate::trace::sign_seal(&key, &mut seal);
        push(2, pb::record::Body::Seal(seal), &same);
        out
    }

    #[test]
    fn version_1_traces_are_read_and_unknown_versions_are_named() {
        assert!(verify(&framed(1, |p| p), None, None).valid());
        assert!(verify(&framed(FORMAT_VERSION, |p| p), None, None).valid());
        for v in [0, FORMAT_VERSION + 1] {
            let r = verify(&framed(v, |p| p), None, None);
            assert_eq!(
                r.damage.map(|d| (d.kind, d.record)),
                Some((Kind::Unsupported, 0)),
                "{v}"
            );
        }
        // The writer stamps its own version, whatever the header it is given says.
        let t = trace(1);
        let r = verify(&t, None, None);
        assert_eq!(r.header.unwrap().format_version, FORMAT_VERSION);
    }

    #[test]
    fn a_record_with_two_bodies_is_modified() {
        use prost::Message as _;
        // A second body before the event (in `Record`'s oneof only the last would count).
        let second_body = |p: Vec<u8>| {
            let extra = pb::Record {
                body: Some(pb::record::Body::Reads(pb::ReadSummary::default())),
                ..Default::default()
            };
            [extra.encode_to_vec(), p].concat()
        };
        assert_eq!(
            check(&framed(FORMAT_VERSION, second_body)),
            Some((Kind::Modified, 1))
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

        /// The reader never panics, whatever it is given.
        #[test]
        fn any_bytes_are_read_without_panic(bytes in proptest::collection::vec(0u8..=255, 0..600)) {
            let mut with_magic = MAGIC.to_vec();
            with_magic.extend_from_slice(&bytes);
            let _ = verify(&bytes, None, None);
            let r = verify(&with_magic, None, None);
            proptest::prop_assert!(r.damage.is_some() || r.seal.is_some());
        }

        /// Any change to a sealed trace — a byte replaced, bytes inserted or removed — is
        /// reported, never passed as valid, and never panics.
        #[test]
        fn any_edit_of_a_sealed_trace_is_detected(
            at in 0usize..10_000,
            value in 0u8..=255,
            op in 0u8..3,
            len in 1usize..40,
        ) {
            let t = trace(6);
            let at = at % t.len();
            let mut m = t.clone();
            match op {
                0 => m[at] = value,
                1 => { m.splice(at..at, std::iter::repeat_n(value, len)); }
                _ => { m.drain(at..(at + len).min(t.len())); }
            }
            if m != t {
                proptest::prop_assert!(verify(&m, None, None).damage.is_some());
            }
        }
    }
}
