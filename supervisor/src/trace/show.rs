//! `cordon trace verify|head|show` and `cordon events FILE`: finished runs' traces, in words.

use std::fmt::Write as _;
use std::path::Path;

use super::pb::{self, record::Body};
use super::verify::Report;
use crate::events::pb as ev;
use crate::text;

/// A key or head given on the command line: the text itself, or a file holding it.
pub fn text_or_file(arg: &str) -> String {
    let p = Path::new(arg);
    if p.is_file() {
        std::fs::read_to_string(p).unwrap_or_else(|_| arg.to_string())
    } else {
        arg.to_string()
    }
}

/// Why a trace command could not give its answer (damage is an answer: it is in the report).
#[derive(Debug, thiserror::Error)]
pub enum ShowError {
    #[error("cannot read the trace {path}: {source}")]
    Read {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Key(#[from] crate::keys::KeyError),
    #[error(transparent)]
    Head(#[from] super::NotAHead),
    #[error("{0}: no signed checkpoint yet")]
    NoHead(std::path::PathBuf),
}

pub fn read(path: &Path) -> Result<Vec<u8>, ShowError> {
    std::fs::read(path).map_err(|source| ShowError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// `cordon trace verify`: print what the trace is and the verdict; true if it is valid.
/// `pubkey` and `head` are given as text or as files holding it.
pub fn verify_file(path: &Path, pubkey: Option<&str>, head: Option<&str>) -> Result<bool, ShowError> {
    let key = pubkey
        .map(|k| crate::keys::parse_public(text_or_file(k).trim()))
        .transpose()?;
    let head = head.map(|h| super::parse_head(&text_or_file(h))).transpose()?;
    let r = super::verify::verify(&read(path)?, key, head.as_ref());
    print!("{}", describe(path, &r));
    // What became of a transactional run's changes: signed records beside the sealed trace.
    let followed = match (&r.key, r.seal.is_some()) {
        (Some(k), true) => match super::followup::verify(path, k) {
            Ok(records) => {
                for f in &records {
                    println!("{}", text::escape(&super::followup::describe(f)));
                }
                true
            }
            Err(e) => {
                println!("FOLLOW-UP DAMAGED: {}", text::escape(&e.0));
                false
            }
        },
        _ => true,
    };
    Ok(r.valid() && followed)
}

/// `cordon trace head`: the latest signed head as text (damage after it is noted on stderr).
pub fn head(path: &Path) -> Result<String, ShowError> {
    let r = super::verify::verify(&read(path)?, None, None);
    if let Some(d) = &r.damage {
        text::eprint(&format!("note: {d}"));
    }
    r.last_head
        .as_ref()
        .map(super::head_text)
        .ok_or_else(|| ShowError::NoHead(path.to_path_buf()))
}

/// Read `path`, hand its intact records to `each` in order (until it returns false), name any
/// damage on stderr, and return the verification report.
pub fn replay(path: &Path, mut each: impl FnMut(&pb::Record) -> bool) -> Result<Report, ShowError> {
    let bytes = read(path)?;
    let r = super::verify::verify(&bytes, None, None);
    for rec in &super::verify::records(&bytes, &r) {
        if !each(rec) {
            break;
        }
    }
    if let Some(d) = &r.damage {
        text::eprint(&format!("{}: {d}", path.display()));
    }
    Ok(r)
}

use crate::text::hex;

/// What `cordon trace verify` prints: what the trace is, then the verdict. The header's
/// strings (command, identity, host) and the seal's notes may carry any byte.
pub fn describe(path: &Path, r: &Report) -> String {
    let mut s = String::new();
    // Each line is made whole, then escaped: a newline in a field cannot forge the next line.
    let mut put = |line: String| {
        s.push_str(&text::escape(&line));
        s.push('\n');
    };
    put(format!("trace     {}", path.display()));
    if let Some(h) = &r.header {
        put(format!("sandbox   {} on {} ({})", h.sandbox, h.host, h.kernel));
        put(format!("command   {}", h.command.join(" ")));
        put(format!("identity  {}", h.identity));
        put(format!(
            "profile   {} (sha256 {}){}",
            h.profile_name,
            h.profile_sha256,
            watched(h)
        ));
        put(format!(
            "file      {}",
            if h.append_only {
                "append-only (FS_APPEND_FL)".to_string()
            } else {
                format!("not append-only: {}", h.append_only_detail)
            }
        ));
    }
    if let Some(k) = &r.key {
        put(format!(
            "signer    {} ({})",
            crate::keys::public_text(k),
            if r.key_given {
                "the key given"
            } else {
                "as the trace's header says; pass --pubkey to check it is the host's"
            }
        ));
    }
    put(format!(
        "records   {} intact ({} events, {} summaries of routine reads, {} signed checkpoints; last signed head at record {})",
        r.intact,
        r.events,
        r.read_summaries,
        r.checkpoints,
        r.last_head.as_ref().map_or_else(|| "none".into(), |h| h.seq.to_string())
    ));
    if let Some(seal) = &r.seal {
        put(format!(
            "sealed    exit status {}; {} events recorded whole, {} summarised as routine reads, {} lost in the kernel{}",
            seal.exit_code,
            seal.events,
            seal.summarised,
            seal.kernel_drops,
            if seal.detail.is_empty() {
                String::new()
            } else {
                format!("; {}", seal.detail)
            }
        ));
    }
    match &r.damage {
        None => put("VALID: chain, signatures and seal check out".into()),
        Some(d) => put(format!("INVALID: {d}")),
    }
    s
}

/// One line per record for `cordon trace show`: for people, events formatted as in the live
/// stream and the other records as `#` comments; for programs, the whole `Record` in the
/// canonical proto3 JSON mapping (the body under its oneof name: `header`, `event`, …). The
/// text is escaped (`text`): the JSON keeps every byte as recorded.
/// How the run was watched, when not fully: after the profile in a trace's description.
fn watched(h: &pb::Header) -> String {
    if !h.monitored {
        ", NOT monitored (--no-probes)".to_string()
    } else if !h.visibility.is_empty() && h.visibility != "full" {
        format!(", visibility {} (no syscall records)", h.visibility)
    } else {
        String::new()
    }
}

pub fn line(rec: &pb::Record, json: bool, color: bool) -> Option<String> {
    let body = rec.body.as_ref()?;
    if json {
        return Some(serde_json::to_string(rec).unwrap_or_else(|err| format!("{{\"error\":\"{err}\"}}")));
    }
    Some(match body {
        Body::Event(e) => crate::events::text(e, color),
        Body::Header(h) => text::escape(&format!(
            "# trace of sandbox {} on {}: {} — profile {} ({}){} — {} — signed by {}",
            h.sandbox,
            h.host,
            h.command.join(" "),
            h.profile_name,
            &h.profile_sha256[..h.profile_sha256.len().min(12)],
            watched(h),
            h.identity,
            h.public_key
        ))
        .into_owned(),
        Body::Checkpoint(c) => {
            format!(
                "# checkpoint: records 0..={} signed ({})",
                c.seq,
                &hex(&c.chain)[..16]
            )
        }
        Body::Seal(x) => text::escape(&format!(
            "# seal: exit status {}; {} records, {} events, {} lost in the kernel{}",
            x.exit_code,
            x.records,
            x.events,
            x.kernel_drops,
            if x.detail.is_empty() {
                String::new()
            } else {
                format!("; {}", x.detail)
            }
        ))
        .into_owned(),
        Body::Reads(x) => reads_text(x),
    })
}

/// A read summary: one line, then one per path.
fn reads_text(x: &pb::ReadSummary) -> String {
    let t = |ns: u64| {
        let secs = ns / 1_000_000_000;
        format!(
            "{:02}:{:02}:{:02}.{:03}",
            (secs / 3600) % 24,
            (secs / 60) % 60,
            secs % 60,
            (ns / 1_000_000) % 1000
        )
    };
    let mut s = format!(
        "# routine reads {}–{}: {} opens of {} paths (events {}…{})",
        t(x.first_unix_ns),
        t(x.last_unix_ns),
        x.seqs.len(),
        x.paths.len(),
        x.seqs.first().copied().unwrap_or(0),
        x.seqs.last().copied().unwrap_or(0)
    );
    for p in &x.paths {
        let pids: Vec<String> = p.host_pids.iter().map(u32::to_string).collect();
        let _ = write!(
            s,
            "\n#   {} {}{} (host pids {}{})",
            text::escape(&p.path),
            if p.opened > 0 {
                format!("opened ×{}", p.opened)
            } else {
                String::new()
            },
            if p.missing > 0 {
                format!(" missing ×{}", p.missing)
            } else {
                String::new()
            },
            pids.join(","),
            if p.more_pids { ",…" } else { "" }
        );
    }
    s
}

/// The events among a finished run's records (`verify::records`), in order.
pub fn events(records: &[pb::Record]) -> impl Iterator<Item = &ev::Event> {
    records.iter().filter_map(|rec| match &rec.body {
        Some(Body::Event(e)) => Some(e),
        _ => None,
    })
}
