//! Follow-up records of a sealed trace: what became of the run's transactional changes after
//! it ended (`cordon commit`, `cordon rollback`, a `rollback` rule). The trace itself is sealed,
//! so they go to a JSON-lines file beside it (`TRACE.followup`, append-only like the trace),
//! one record per line, each signed by the host key and tied to the sealed trace (the sha256
//! of its bytes) and to the line before it (the sha256 of that line). `cordon trace verify`
//! checks them after the trace. The seal already names every changed path and the hash of
//! what the agent left; a record says which of those paths reached the workspace.

use crate::text::{hex, Refusal};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

const DOMAIN: &[u8] = b"cordon trace follow-up v1\0";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FollowUp {
    pub sandbox: String,
    /// sha256 of the sealed trace file.
    pub trace_sha256: String,
    /// 0 for the first record.
    pub seq: u64,
    /// sha256 of the previous line ("" for the first).
    pub prev: String,
    /// `commit` or `rollback`.
    pub action: String,
    /// Who: the invoking user (the sudo user's uid, else the caller's).
    pub by_uid: u32,
    pub at_unix: u64,
    /// Paths (relative to the workspace) applied to the workspace, or discarded.
    pub paths: Vec<String>,
    /// Paths a commit refused, with why.
    pub refused: Vec<String>,
    /// ed25519 over `DOMAIN` and this record serialised without it, hex.
    #[serde(default)]
    pub signature: String,
}

/// The follow-up file of `trace`.
pub fn path_for(trace: &Path) -> PathBuf {
    let mut name = trace.file_name().unwrap_or_default().to_os_string();
    name.push(".followup");
    trace.with_file_name(name)
}

fn message(f: &FollowUp) -> Vec<u8> {
    let unsigned = FollowUp {
        signature: String::new(),
        ..f.clone()
    };
    [DOMAIN, &serde_json::to_vec(&unsigned).unwrap_or_default()].concat()
}

fn sha256_hex(b: &[u8]) -> String {
    hex(&Sha256::digest(b))
}

/// Sign `f` (its `sandbox`, `action`, `by_uid`, `paths` and `refused` set by the caller) and
/// append it to the trace's follow-up file.
pub fn append(trace: &Path, key: &SigningKey, mut f: FollowUp) -> io::Result<FollowUp> {
    let sealed = fs::read(trace)?;
    let file = path_for(trace);
    let before = match fs::read_to_string(&file) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e),
    };
    let lines: Vec<&str> = before.lines().collect();
    f.trace_sha256 = sha256_hex(&sealed);
    f.seq = lines.len() as u64;
    f.prev = lines.last().map_or(String::new(), |l| sha256_hex(l.as_bytes()));
    f.at_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    f.signature = hex(&key.sign(&message(&f)).to_bytes());
    let mut line = serde_json::to_vec(&f).map_err(io::Error::other)?;
    line.push(b'\n');
    let mut out = fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(&file)?;
    if lines.is_empty() {
        // Append-only like the trace (not every filesystem has the flag: best effort).
        let _ = crate::sys::add_inode_flags(&out, FS_APPEND_FL);
    }
    out.write_all(&line)?;
    out.sync_all()?;
    Ok(f)
}

const FS_APPEND_FL: libc::c_long = 0x20;

/// Check the follow-up file of `trace` (if any) against the trace's bytes and `key`: every
/// line signed, chained and tied to this trace. The records, or the first damage.
pub fn verify(trace: &Path, key: &VerifyingKey) -> Result<Vec<FollowUp>, Refusal> {
    let file = path_for(trace);
    let text = match fs::read_to_string(&file) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("{}: {e}", file.display()).into()),
    };
    let sealed = fs::read(trace).map_err(|e| Refusal(format!("{}: {e}", trace.display())))?;
    let trace_hash = sha256_hex(&sealed);
    let mut prev = String::new();
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let bad = |why: &str| Refusal(format!("{} line {}: {why}", file.display(), n + 1));
        let f: FollowUp =
            serde_json::from_str(line).map_err(|e| bad(&format!("not a follow-up record: {e}")))?;
        let sig = super::unhex(&f.signature)
            .and_then(|b| Signature::from_slice(&b).ok())
            .ok_or_else(|| bad("no valid signature"))?;
        if key.verify(&message(&f), &sig).is_err() {
            return Err(bad(
                "the signature does not match (changed, or signed by another key)",
            ));
        }
        if f.trace_sha256 != trace_hash {
            return Err(bad("it belongs to another trace (or the trace changed after it)"));
        }
        if f.seq != n as u64 || f.prev != prev {
            return Err(bad("out of order: a record before it was removed or changed"));
        }
        prev = sha256_hex(line.as_bytes());
        out.push(f);
    }
    Ok(out)
}

/// One line per record for `cordon trace verify`.
pub fn describe(f: &FollowUp) -> String {
    format!(
        "follow-up {}: {} by uid {} at {} — {} path(s){}",
        f.seq,
        f.action,
        f.by_uid,
        f.at_unix,
        f.paths.len(),
        if f.refused.is_empty() {
            String::new()
        } else {
            format!(", {} refused", f.refused.len())
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(action: &str) -> FollowUp {
        FollowUp {
            sandbox: "ab".into(),
            trace_sha256: String::new(),
            seq: 0,
            prev: String::new(),
            action: action.into(),
            by_uid: 1000,
            at_unix: 0,
            paths: vec!["a.txt".into()],
            refused: Vec::new(),
            signature: String::new(),
        }
    }

    #[test]
    fn records_chain_and_any_change_is_found() {
        let d = tempfile::tempdir().unwrap();
        let trace = d.path().join("x.trace");
        fs::write(&trace, b"sealed bytes").unwrap();
        let key = SigningKey::from_bytes(&[7u8; 32]);
        append(&trace, &key, record("commit")).unwrap();
        append(&trace, &key, record("rollback")).unwrap();
        let got = verify(&trace, &key.verifying_key()).unwrap();
        assert_eq!(
            got.iter().map(|f| f.action.as_str()).collect::<Vec<_>>(),
            ["commit", "rollback"]
        );
        assert_eq!(got[1].prev.len(), 64);

        // Another key, an edited line, a removed first line, another trace: each refused.
        let other = SigningKey::from_bytes(&[8u8; 32]);
        assert!(verify(&trace, &other.verifying_key()).is_err());
        let file = path_for(&trace);
        let text = fs::read_to_string(&file).unwrap();
        // Root sets the append-only flag: cleared to forge the file.
        let rewrite = |t: &str| {
            let _ = std::process::Command::new("chattr").arg("-a").arg(&file).status();
            fs::write(&file, t).unwrap();
        };
        rewrite(&text.replace("a.txt", "b.txt"));
        assert!(verify(&trace, &key.verifying_key()).is_err());
        rewrite(text.lines().nth(1).unwrap());
        assert!(verify(&trace, &key.verifying_key())
            .unwrap_err()
            .0
            .contains("out of order"));
        rewrite(&text);
        fs::write(&trace, b"other bytes").unwrap();
        assert!(verify(&trace, &key.verifying_key())
            .unwrap_err()
            .0
            .contains("another trace"));
    }
}
