//! The append-only, tamper-evident trace every `cordon run` leaves (format: docs/trace.md and
//! proto/cordon/trace/v1/trace.proto).
//!
//! `writer` appends records (hash chain, signed checkpoints, seal) for one sandbox; `verify`
//! reads a trace back, recovers every complete record and names the first damage.

pub mod followup;
mod frames;
pub mod record;
pub mod show;
pub mod verify;
pub mod writer;

/// Types generated from `trace.proto`.
#[allow(clippy::all, clippy::pedantic)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/cordon.trace.v1.rs"));
    include!(concat!(env!("OUT_DIR"), "/cordon.trace.v1.serde.rs"));
}

use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};
use prost::Message as _;

/// The first bytes of every trace file. It names the framing (trace.proto's header comment),
/// which has not changed since version 1: the header's `format_version` says which writer.
pub const MAGIC: &[u8; 16] = b"cordon-trace-v1\n";
/// The format the writer writes, in every header (`verify::READS_VERSIONS`: what it reads).
/// 2: records encoded through the generated types; events are `cordon.events.v2`.
pub const FORMAT_VERSION: u32 = 2;
/// Bytes around each payload: length, its complement, and the payload's BLAKE3 hash.
pub const FRAME_OVERHEAD: usize = 8 + 32;
/// No record is larger than this; a length beyond it is damage, not data.
pub const MAX_RECORD: usize = 16 << 20;
/// Where traces go unless `--trace` says otherwise (`CORDON_TRACE_DIR` overrides, for tests).
pub const DEFAULT_DIR: &str = "/var/lib/cordon/traces";

pub type Hash = [u8; 32];

const HEAD_DOMAIN: &[u8] = b"cordon-trace-v1 head\0";
const SEAL_DOMAIN: &[u8] = b"cordon-trace-v1 seal\0";

pub fn hash(payload: &[u8]) -> Hash {
    *blake3::hash(payload).as_bytes()
}

/// The directory traces go to by default.
pub fn default_dir() -> std::path::PathBuf {
    std::env::var_os("CORDON_TRACE_DIR")
        .filter(|d| !d.is_empty())
        .map_or_else(|| DEFAULT_DIR.into(), Into::into)
}

fn head_message(c: &pb::Checkpoint) -> Vec<u8> {
    let unsigned = pb::Checkpoint {
        signature: Vec::new(),
        ..c.clone()
    };
    [HEAD_DOMAIN, &unsigned.encode_to_vec()].concat()
}

fn seal_message(s: &pb::Seal) -> Vec<u8> {
    let unsigned = pb::Seal {
        signature: Vec::new(),
        ..s.clone()
    };
    [SEAL_DOMAIN, &unsigned.encode_to_vec()].concat()
}

pub fn sign_head(key: &SigningKey, c: &mut pb::Checkpoint) {
    c.signature = key.sign(&head_message(c)).to_bytes().to_vec();
}

pub fn sign_seal(key: &SigningKey, s: &mut pb::Seal) {
    s.signature = key.sign(&seal_message(s)).to_bytes().to_vec();
}

fn signature_ok(key: &VerifyingKey, msg: &[u8], sig: &[u8]) -> bool {
    Signature::from_slice(sig).is_ok_and(|sig| key.verify(msg, &sig).is_ok())
}

pub fn head_signed_by(key: &VerifyingKey, c: &pb::Checkpoint) -> bool {
    signature_ok(key, &head_message(c), &c.signature)
}

pub fn seal_signed_by(key: &VerifyingKey, s: &pb::Seal) -> bool {
    signature_ok(key, &seal_message(s), &s.signature)
}

use crate::text::hex;

pub(crate) fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.is_ascii() {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

/// A signed head as one line of text, to store away from the trace:
/// `cordon-head-v1 <sandbox> <seq> <hash hex> <signature hex>`.
pub fn head_text(c: &pb::Checkpoint) -> String {
    format!(
        "cordon-head-v1 {} {} {} {}",
        c.sandbox,
        c.seq,
        hex(&c.chain),
        hex(&c.signature)
    )
}

/// Text that is not a head as `head_text` writes it.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("not a trace head: {0:?} (expected `cordon-head-v1 SANDBOX SEQ HASH SIGNATURE`, as `cordon trace head` prints)")]
pub struct NotAHead(pub String);

pub fn parse_head(text: &str) -> Result<pb::Checkpoint, NotAHead> {
    let bad = || NotAHead(text.trim().into());
    let parts: Vec<&str> = text.split_whitespace().collect();
    let [magic, sandbox, seq, chain, sig] = parts[..] else {
        return Err(bad());
    };
    if magic != "cordon-head-v1" {
        return Err(bad());
    }
    let chain = unhex(chain).filter(|c| c.len() == 32).ok_or_else(bad)?;
    let signature = unhex(sig).filter(|s| s.len() == 64).ok_or_else(bad)?;
    Ok(pb::Checkpoint {
        sandbox: sandbox.into(),
        seq: seq.parse().map_err(|_| bad())?,
        chain,
        signature,
    })
}

/// Record 0 of a run's trace. The append-only outcome and the checkpoint and durability
/// policies are filled in by `TraceFile::create`, the format version by `writer::Chain`.
pub struct Start<'a> {
    pub sandbox: &'a str,
    pub command: &'a [String],
    pub identity: &'a crate::identity::Identity,
    pub profile: &'a crate::profile::Profile,
    pub policy: &'a crate::policy::Policy,
    pub key: &'a VerifyingKey,
    pub monitored: bool,
}

fn uname() -> (String, String) {
    let Ok(u) = nix::sys::utsname::uname() else {
        return (String::new(), String::new());
    };
    let text = |f: &std::ffi::OsStr| f.to_string_lossy().into_owned();
    (
        text(u.nodename()),
        format!(
            "{} {} {}",
            text(u.release()),
            text(u.version()),
            text(u.machine())
        ),
    )
}

pub fn header(s: &Start) -> pb::Header {
    let (host, kernel) = uname();
    let redactor = crate::secret::Redactor::from_env(&s.policy.env);
    pb::Header {
        sandbox: s.sandbox.into(),
        host,
        kernel,
        cordon_version: env!("CARGO_PKG_VERSION").into(),
        start_unix_ns: crate::events::unix_now_ns(),
        command: s.command.to_vec(),
        identity: s.identity.line(),
        invoking_uid: s.identity.owner_uid,
        on_behalf_of: s.identity.on_behalf_of.clone().unwrap_or_default(),
        workspace: s.policy.context.workspace.display().to_string(),
        profile_name: s.profile.name.clone(),
        profile_sha256: s.profile.hash.clone(),
        profile_sources: s
            .profile
            .sources
            .iter()
            .zip(&s.profile.texts)
            .map(|(label, text)| pb::ProfileSource {
                label: label.clone(),
                // A secret written into a profile (`[environment] set`) stays out of the trace.
                text: redactor.redact(text).into_owned(),
            })
            .collect(),
        policy: crate::policy::render(s.profile, s.policy),
        public_key: crate::keys::public_text(s.key),
        monitored: s.monitored,
        visibility: s.policy.monitor.visibility.name().into(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_are_signed_and_round_trip_as_text() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let mut c = pb::Checkpoint {
            sandbox: "abc123".into(),
            seq: 42,
            chain: vec![9; 32],
            signature: vec![],
        };
        sign_head(&key, &mut c);
        assert!(head_signed_by(&key.verifying_key(), &c));
        let back = parse_head(&head_text(&c)).unwrap();
        assert_eq!(back, c);
        let mut forged = c.clone();
        forged.seq = 43;
        assert!(!head_signed_by(&key.verifying_key(), &forged));
        let other = SigningKey::from_bytes(&[8; 32]);
        assert!(!head_signed_by(&other.verifying_key(), &c));
        assert!(parse_head("cordon-head-v1 abc 1 00 11").is_err());
        assert!(parse_head("nonsense").is_err());
    }

    #[test]
    fn a_seal_signature_covers_its_totals() {
        let key = SigningKey::from_bytes(&[1; 32]);
        let mut s = pb::Seal {
            sandbox: "x".into(),
            seq: 10,
            chain: vec![1; 32],
            exit_code: 0,
            records: 11,
            events: 9,
            ..Default::default()
        };
        sign_seal(&key, &mut s);
        assert!(seal_signed_by(&key.verifying_key(), &s));
        s.exit_code = 1;
        assert!(!seal_signed_by(&key.verifying_key(), &s));
    }
}
