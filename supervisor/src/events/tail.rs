//! Clients of a running sandbox's socket: `cordon events` and `cordon ps`.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;

use prost::Message as _;

use super::live::{meta_path, socket_path, Meta, Stats, RUN_DIR};
use super::pb;

/// A running sandbox as `cordon ps` lists it.
pub struct Running {
    pub meta: Meta,
    pub stats: Stats,
}

fn connect(id: &str) -> std::io::Result<UnixStream> {
    UnixStream::connect(socket_path(id))
}

/// Every sandbox whose cordon still answers on its socket. Entries of dead cordons (killed
/// before they could clean up) are removed.
pub fn list() -> Vec<Running> {
    let Ok(dir) = std::fs::read_dir(RUN_DIR) else {
        return vec![];
    };
    let mut out = vec![];
    for e in dir.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(id) = name.strip_suffix(".json") else {
            continue;
        };
        match stat(id) {
            Ok(r) => out.push(r),
            // Only a dead cordon's entry is removed: a live one may just be busy.
            Err(_) if !cordon_alive(id) => {
                let _ = std::fs::remove_file(meta_path(id));
                let _ = std::fs::remove_file(socket_path(id));
            }
            Err(_) => {}
        }
    }
    out.sort_by_key(|r| r.meta.started_unix);
    out
}

/// Is the cordon that wrote sandbox `id`'s meta file still running?
fn cordon_alive(id: &str) -> bool {
    let pid = std::fs::read(meta_path(id))
        .ok()
        .and_then(|b| serde_json::from_slice::<Meta>(&b).ok())
        .map_or(0, |m| m.cordon_pid);
    // SAFETY: signal 0 only checks that the process exists.
    pid != 0 && i32::try_from(pid).is_ok_and(|p| unsafe { libc::kill(p, 0) } == 0)
}

pub fn stat(id: &str) -> std::io::Result<Running> {
    let mut s = connect(id)?;
    s.write_all(b"stat\n")?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line)?;
    let v: serde_json::Value = serde_json::from_str(&line).map_err(std::io::Error::other)?;
    Ok(Running {
        meta: serde_json::from_value(v["meta"].clone()).map_err(std::io::Error::other)?,
        stats: serde_json::from_value(v["stats"].clone()).map_err(std::io::Error::other)?,
    })
}

/// Ask a running sandbox's cordon to freeze, thaw or kill it (recorded as a `Response`
/// event). Returns cordon's answer.
pub fn control(id: &str, action: crate::respond::Action) -> Result<String, String> {
    let talk = || -> std::io::Result<String> {
        let mut s = connect(id)?;
        s.write_all(format!("{}\n", action.name()).as_bytes())?;
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line)?;
        Ok(line.trim().to_string())
    };
    let answer = talk().map_err(|e| format!("sandbox {id}: {e}"))?;
    match answer.split_once(' ') {
        Some(("ok", rest)) => Ok(rest.to_string()),
        Some(("error", rest)) => Err(rest.to_string()),
        _ => Err(format!("sandbox {id}: unexpected answer {answer:?}")),
    }
}

/// Resolve a sandbox given by id or by a unique prefix of it.
pub fn resolve(given: &str) -> Result<String, String> {
    let running = list();
    let hits: Vec<&Running> = running
        .iter()
        .filter(|r| r.meta.sandbox.starts_with(given))
        .collect();
    match hits.as_slice() {
        [one] => Ok(one.meta.sandbox.clone()),
        [] => Err(format!("no running sandbox {given:?} (see `cordon ps`)")),
        _ => Err(format!(
            "{given:?} matches {} sandboxes; give more of the id",
            hits.len()
        )),
    }
}

/// Read varint-length-delimited events from `r`, calling `each` until the stream ends.
pub fn read_stream(r: impl Read, mut each: impl FnMut(pb::Event) -> bool) -> std::io::Result<()> {
    let mut r = BufReader::new(r);
    loop {
        let mut len: u64 = 0;
        let mut shift = 0;
        loop {
            let mut b = [0u8; 1];
            if r.read(&mut b)? == 0 {
                return Ok(());
            }
            len |= u64::from(b[0] & 0x7f) << shift;
            if b[0] & 0x80 == 0 {
                break;
            }
            shift += 7;
            if shift > 63 {
                return Err(std::io::Error::other("bad frame length"));
            }
        }
        let mut buf = vec![0u8; usize::try_from(len).map_err(std::io::Error::other)?];
        r.read_exact(&mut buf)?;
        let e = pb::Event::decode(buf.as_slice()).map_err(std::io::Error::other)?;
        if !each(e) {
            return Ok(());
        }
    }
}

/// Stream a running sandbox's events (recent ones, then live ones with `follow`).
pub fn events(id: &str, follow: bool, each: impl FnMut(pb::Event) -> bool) -> std::io::Result<()> {
    let mut s = connect(id)?;
    s.write_all(if follow { b"follow\n" } else { b"events\n" })?;
    read_stream(s, each)
}
