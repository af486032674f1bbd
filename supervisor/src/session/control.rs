//! The sandbox's control socket (`/run/cordon/sandboxes/ID.sock`), both sides: the server in
//! the session's pipeline and the clients (`cordon ps`, `cordon events`, `cordon freeze|thaw|
//! kill`). One request line, then the answer: `stat` → one JSON line (meta and counters);
//! `events` → recent events as length-delimited protobuf; `follow` → the same, then live
//! events until the run ends; `freeze`/`thaw`/`kill` (root only) → `ok …` or `error …`.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use prost::Message as _;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::sync::{broadcast, oneshot};

use crate::events::pb::{self, event::Kind};
use crate::respond::Action;

pub const RUN_DIR: &str = "/run/cordon/sandboxes";
/// Recent events kept for `cordon events` (without --follow) and for clients that join late.
const HISTORY: usize = 8192;

/// What `cordon ps` shows about a run, written next to its socket.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, Default)]
pub struct Meta {
    pub sandbox: String,
    pub profile: String,
    pub profile_sha256: String,
    pub command: Vec<String>,
    pub identity: String,
    pub cordon_pid: u32,
    pub started_unix: u64,
}

impl Meta {
    /// A lifecycle event body for this run.
    pub fn lifecycle(&self, phase: &str, detail: String, exit_code: i32) -> Kind {
        Kind::Lifecycle(pb::Lifecycle {
            phase: phase.into(),
            detail,
            profile: self.profile.clone(),
            profile_sha256: self.profile_sha256.clone(),
            command: self.command.clone(),
            identity: self.identity.clone(),
            exit_code,
        })
    }

    /// `--no-probes`: the only event of the run says it was not monitored.
    pub fn unmonitored_event(&self) -> pb::Event {
        pb::Event {
            seq: 1,
            sandbox: self.sandbox.clone(),
            time_unix_ns: crate::events::unix_now_ns(),
            kind: Some(self.lifecycle(
                "unmonitored",
                "--no-probes: no events are recorded for this run".into(),
                0,
            )),
            ..Default::default()
        }
    }
}

/// Live counters, answered to `stat` requests.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Stats {
    pub events: u64,
    pub kernel_drops: u64,
    pub syscalls: u64,
    pub denied: u64,
}

pub fn socket_path(id: &str) -> PathBuf {
    Path::new(RUN_DIR).join(format!("{id}.sock"))
}

pub fn meta_path(id: &str) -> PathBuf {
    Path::new(RUN_DIR).join(format!("{id}.json"))
}

/// The socket and meta file of a running sandbox; removed when the session ends.
pub struct Socket {
    listener: Option<std::os::unix::net::UnixListener>,
    files: Vec<PathBuf>,
}

impl Socket {
    pub fn bind(meta: &Meta) -> std::io::Result<Socket> {
        std::fs::create_dir_all(RUN_DIR)?;
        let sock = socket_path(&meta.sandbox);
        let _ = std::fs::remove_file(&sock);
        let listener = std::os::unix::net::UnixListener::bind(&sock)?;
        listener.set_nonblocking(true)?;
        let meta_file = meta_path(&meta.sandbox);
        std::fs::write(&meta_file, serde_json::to_vec(meta).unwrap_or_default())?;
        Ok(Socket {
            listener: Some(listener),
            files: vec![sock, meta_file],
        })
    }

    pub fn listener(&self) -> std::io::Result<std::os::unix::net::UnixListener> {
        match &self.listener {
            Some(l) => l.try_clone(),
            None => Err(std::io::Error::other("the control socket is closed")),
        }
    }
}

impl Drop for Socket {
    fn drop(&mut self) {
        for f in &self.files {
            let _ = std::fs::remove_file(f);
        }
    }
}

/// What the server shares with the pipeline: recent events and counters.
pub struct Shared {
    history: Mutex<VecDeque<Arc<pb::Event>>>,
    stats: Mutex<Stats>,
    pub meta: Meta,
}

impl Shared {
    pub fn new(meta: Meta) -> Self {
        Self {
            history: Mutex::new(VecDeque::with_capacity(HISTORY)),
            stats: Mutex::new(Stats::default()),
            meta,
        }
    }

    /// Count and keep a published batch.
    pub fn note(&self, batch: &[Arc<pb::Event>]) {
        let mut history = self.history.lock().unwrap_or_else(|p| p.into_inner());
        let mut stats = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        for e in batch {
            stats.events = e.seq;
            if matches!(&e.kind, Some(Kind::Syscall(s)) if s.denied)
                || matches!(&e.kind, Some(Kind::Net(n)) if !n.allowed)
            {
                stats.denied += 1;
            }
            if let Some(Kind::Counts(c)) = &e.kind {
                stats.syscalls = c.total;
            }
            if history.len() == HISTORY {
                history.pop_front();
            }
            history.push_back(e.clone());
        }
    }
}

/// A freeze, thaw or kill asked for on the socket; the answer goes to `reply`.
pub struct Control {
    pub action: Action,
    pub uid: u32,
    pub reply: oneshot::Sender<Result<String, String>>,
}

/// A consumer's view of the bus: events in order, with a `Loss` event where it fell behind.
async fn next_or_loss(
    rx: &mut broadcast::Receiver<Arc<pb::Event>>,
    sandbox: &str,
    lost_total: &mut u64,
) -> Option<Arc<pb::Event>> {
    match rx.recv().await {
        Ok(e) => Some(e),
        Err(broadcast::error::RecvError::Lagged(n)) => {
            *lost_total += n;
            Some(Arc::new(crate::events::loss_event(
                sandbox,
                "stream",
                n,
                *lost_total,
            )))
        }
        Err(broadcast::error::RecvError::Closed) => None,
    }
}

pub async fn serve(
    listener: tokio::net::UnixListener,
    tx: broadcast::Sender<Arc<pb::Event>>,
    ctl: tokio::sync::mpsc::Sender<Control>,
    shared: Arc<Shared>,
) {
    while let Ok((conn, _)) = listener.accept().await {
        let rx = tx.subscribe();
        let shared = shared.clone();
        let ctl = ctl.clone();
        tokio::spawn(async move {
            let _ = client(conn, rx, ctl, shared).await;
        });
    }
}

async fn client(
    conn: tokio::net::UnixStream,
    mut rx: broadcast::Receiver<Arc<pb::Event>>,
    ctl: tokio::sync::mpsc::Sender<Control>,
    shared: Arc<Shared>,
) -> std::io::Result<()> {
    let uid = conn.peer_cred().map_or(u32::MAX, |c| c.uid());
    let (r, mut w) = conn.into_split();
    let mut line = String::new();
    tokio::io::BufReader::new(r).read_line(&mut line).await?;
    if let Some(action) = Action::parse(line.trim()) {
        let answer = if uid == 0 {
            let (reply, answer) = oneshot::channel();
            let sent = ctl.send(Control { action, uid, reply }).await;
            match (sent, answer.await) {
                (Ok(()), Ok(Ok(a))) => format!("ok {a}"),
                (Ok(()), Ok(Err(e))) => format!("error {e}"),
                _ => "error the run is ending".into(),
            }
        } else {
            format!(
                "error only root may {} a sandbox (uid {uid} asked)",
                action.name()
            )
        };
        return w.write_all(format!("{answer}\n").as_bytes()).await;
    }
    match line.trim() {
        "stat" => {
            let stats = shared.stats.lock().unwrap_or_else(|p| p.into_inner()).clone();
            let v = serde_json::json!({ "meta": shared.meta, "stats": stats });
            w.write_all(format!("{v}\n").as_bytes()).await
        }
        req @ ("events" | "follow") => {
            let recent: Vec<Arc<pb::Event>> = shared
                .history
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .cloned()
                .collect();
            let mut last = 0;
            for e in &recent {
                w.write_all(&e.encode_length_delimited_to_vec()).await?;
                last = e.seq;
            }
            if req == "events" {
                return Ok(());
            }
            let mut lost = 0;
            while let Some(e) = next_or_loss(&mut rx, &shared.meta.sandbox, &mut lost).await {
                if e.seq != 0 && e.seq <= last {
                    continue;
                }
                w.write_all(&e.encode_length_delimited_to_vec()).await?;
            }
            Ok(())
        }
        other => {
            w.write_all(format!("unknown request {other:?}\n").as_bytes())
                .await
        }
    }
}

// ---- clients ----

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
    // SAFETY: signal 0 only checks that the process exists; it touches no memory.
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

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("no running sandbox {0:?} (see `cordon ps`)")]
    NoSuchSandbox(String),
    #[error("{0:?} matches {1} sandboxes; give more of the id")]
    Ambiguous(String, usize),
    #[error("sandbox {id}: {source}")]
    Io {
        id: String,
        #[source]
        source: std::io::Error,
    },
    #[error("sandbox {id}: {answer}")]
    Refused { id: String, answer: String },
}

/// Ask a running sandbox's cordon to freeze, thaw or kill it (recorded as a `Response`
/// event). Returns cordon's answer.
pub fn control(id: &str, action: Action) -> Result<String, ControlError> {
    let talk = || -> std::io::Result<String> {
        let mut s = connect(id)?;
        s.write_all(format!("{}\n", action.name()).as_bytes())?;
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line)?;
        Ok(line.trim().to_string())
    };
    let answer = talk().map_err(|source| ControlError::Io {
        id: id.into(),
        source,
    })?;
    match answer.split_once(' ') {
        Some(("ok", rest)) => Ok(rest.to_string()),
        Some(("error", rest)) => Err(ControlError::Refused {
            id: id.into(),
            answer: rest.into(),
        }),
        _ => Err(ControlError::Refused {
            id: id.into(),
            answer: format!("unexpected answer {answer:?}"),
        }),
    }
}

/// Resolve a sandbox given by id or by a unique prefix of it.
pub fn resolve(given: &str) -> Result<String, ControlError> {
    let running = list();
    let hits: Vec<&Running> = running
        .iter()
        .filter(|r| r.meta.sandbox.starts_with(given))
        .collect();
    match hits.as_slice() {
        [one] => Ok(one.meta.sandbox.clone()),
        [] => Err(ControlError::NoSuchSandbox(given.into())),
        _ => Err(ControlError::Ambiguous(given.into(), hits.len())),
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
