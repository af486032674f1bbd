//! The sandbox's control socket (`/run/cordon/sandboxes/ID.sock`), both sides: the server in
//! the session's pipeline and the clients (`cordon ps`, `cordon events`, `cordon freeze|thaw|
//! kill`). The messages are `proto/cordon/control/v1/control.proto`, length-delimited (prost's
//! framing) both ways: one `Request`, then `Reply`s — one for `stat` and `act`, a stream of
//! events for `events`.

use crate::text::Refusal;
use std::collections::VecDeque;
use std::io::Read;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use prost::Message;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::{broadcast, oneshot};

use crate::events::pb::{self, event::Kind};
use crate::respond::Action;

/// The generated control messages.
#[allow(clippy::all, clippy::pedantic)]
pub mod wire {
    include!(concat!(env!("OUT_DIR"), "/cordon.control.v1.rs"));
    include!(concat!(env!("OUT_DIR"), "/cordon.control.v1.serde.rs"));
}
use wire::{reply, request};
pub use wire::{Meta, Stats};

pub const RUN_DIR: &str = "/run/cordon/sandboxes";
/// Recent events kept for `cordon events` (without --follow) and for clients that join late.
const HISTORY: usize = 8192;
/// No control message comes near this; a longer length prefix is garbage, not a request.
const MAX_FRAME: usize = 16 << 20;
/// A varint length prefix is at most 10 bytes.
const MAX_PREFIX: usize = 10;

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

impl From<Action> for wire::Action {
    fn from(a: Action) -> Self {
        match a {
            Action::Freeze => wire::Action::Freeze,
            Action::Thaw => wire::Action::Thaw,
            Action::Kill => wire::Action::Kill,
        }
    }
}

fn action_of(a: i32) -> Option<Action> {
    match wire::Action::try_from(a).ok()? {
        wire::Action::Freeze => Some(Action::Freeze),
        wire::Action::Thaw => Some(Action::Thaw),
        wire::Action::Kill => Some(Action::Kill),
        wire::Action::Unspecified => None,
    }
}

fn frame_too_long(len: usize) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!("a control message of {len} bytes (at most {MAX_FRAME})"),
    )
}

/// The length a complete varint prefix encodes (prost's decoder), refusing oversized frames.
fn frame_len(prefix: &[u8]) -> std::io::Result<usize> {
    let len = prost::decode_length_delimiter(prefix)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    if len > MAX_FRAME {
        return Err(frame_too_long(len));
    }
    Ok(len)
}

fn decode<M: Message + Default>(body: &[u8]) -> std::io::Result<M> {
    M::decode(body).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// The next length-delimited message, or `None` where the stream ends between messages.
pub fn read_frame<M: Message + Default>(r: &mut impl Read) -> std::io::Result<Option<M>> {
    let mut prefix = Vec::with_capacity(MAX_PREFIX);
    loop {
        let mut b = [0u8; 1];
        if r.read(&mut b)? == 0 {
            return if prefix.is_empty() {
                Ok(None)
            } else {
                Err(std::io::ErrorKind::UnexpectedEof.into())
            };
        }
        prefix.push(b[0]);
        if b[0] < 0x80 || prefix.len() == MAX_PREFIX {
            break;
        }
    }
    let mut body = vec![0u8; frame_len(&prefix)?];
    r.read_exact(&mut body)?;
    decode(&body).map(Some)
}

/// [`read_frame`] on the server's async side.
async fn read_frame_async<M: Message + Default>(
    r: &mut (impl AsyncRead + Unpin),
) -> std::io::Result<Option<M>> {
    let mut prefix = Vec::with_capacity(MAX_PREFIX);
    loop {
        let b = match r.read_u8().await {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && prefix.is_empty() => return Ok(None),
            Err(e) => return Err(e),
        };
        prefix.push(b);
        if b < 0x80 || prefix.len() == MAX_PREFIX {
            break;
        }
    }
    let mut body = vec![0u8; frame_len(&prefix)?];
    r.read_exact(&mut body).await?;
    decode(&body).map(Some)
}

fn framed(kind: reply::Kind) -> Vec<u8> {
    wire::Reply { kind: Some(kind) }.encode_length_delimited_to_vec()
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
        // Root and the user who started the run may connect (and the server checks which).
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::os::unix::fs::chown(&sock, Some(meta.owner_uid), None)?;
            std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o600))?;
        }
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
    net_changes: Option<tokio::sync::mpsc::Sender<super::proxy::Change>>,
    /// `[grants]`: what `cordon grant` may show.
    grants: Option<Arc<super::grants::Grants>>,
    /// The questions waiting for a person.
    pub approvals: Arc<super::approvals::Approvals>,
}

impl Shared {
    pub fn new(
        meta: Meta,
        net_changes: Option<tokio::sync::mpsc::Sender<super::proxy::Change>>,
        grants: Option<Arc<super::grants::Grants>>,
        approvals: Arc<super::approvals::Approvals>,
    ) -> Self {
        Self {
            history: Mutex::new(VecDeque::with_capacity(HISTORY)),
            stats: Mutex::new(Stats::default()),
            meta,
            net_changes,
            grants,
            approvals,
        }
    }

    /// Root, or the user who started the run (peer credentials of the socket).
    fn may_decide(&self, uid: u32) -> bool {
        uid == 0 || uid == self.meta.owner_uid
    }

    /// "uid N", or "uid N on behalf of P".
    fn principal(uid: u32, on_behalf_of: &str) -> String {
        if on_behalf_of.is_empty() {
            format!("uid {uid}")
        } else {
            format!("uid {uid} on behalf of {on_behalf_of}")
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
            // Freezes and thaws, by a rule or by a person, as `cordon ps` shows them.
            if let Some(Kind::Response(r)) = &e.kind {
                match r.action.as_str() {
                    "freeze" if r.done => stats.frozen_since_unix = e.time_unix_ns / 1_000_000_000,
                    "thaw" if r.done => stats.frozen_since_unix = 0,
                    _ => {}
                }
            }
            if let Some(Kind::Detection(d)) = &e.kind {
                self.approvals.saw(&d.rule, &d.summary);
            }
            if history.len() == HISTORY {
                history.pop_front();
            }
            history.push_back(e.clone());
        }
    }
}

/// A freeze, thaw or kill asked for on the socket or by an answered question; the answer
/// goes to `reply`.
pub struct Control {
    pub action: Action,
    /// Who, as the Response event records it ("cordon thaw by uid 0").
    pub reason: String,
    pub reply: oneshot::Sender<wire::ActReply>,
}

/// Events the bus holds for consumers that are behind (~80 ms of 200k events/s).
pub const BUS_CAPACITY: usize = 1 << 14;

/// The run's events for live consumers (`--events`, `cordon events --follow`). Its
/// `BUS_CAPACITY` slots (512 KiB, written when made: ~0.5 ms of page faults) are made when the
/// first consumer subscribes, so a run nobody follows never makes them (a bus with no
/// receiver keeps nothing either). `close` ends every consumer's stream.
#[derive(Default)]
pub struct Bus(Mutex<BusState>);

#[derive(Default)]
enum BusState {
    #[default]
    Unused,
    Open(broadcast::Sender<Arc<pb::Event>>),
    Closed,
}

impl Bus {
    fn state(&self) -> std::sync::MutexGuard<'_, BusState> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A receiver of every event sent from now on (closed at once if the bus is).
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<pb::Event>> {
        let mut state = self.state();
        match &*state {
            BusState::Open(tx) => tx.subscribe(),
            BusState::Unused => {
                let (tx, rx) = broadcast::channel(BUS_CAPACITY);
                *state = BusState::Open(tx);
                rx
            }
            BusState::Closed => broadcast::channel(1).1,
        }
    }

    pub fn send(&self, batch: Vec<Arc<pb::Event>>) {
        if let BusState::Open(tx) = &*self.state() {
            for e in batch {
                let _ = tx.send(e);
            }
        }
    }

    /// No more events: consumers end once they have read what the bus holds.
    pub fn close(&self) {
        *self.state() = BusState::Closed;
    }
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
    bus: Arc<Bus>,
    ctl: tokio::sync::mpsc::Sender<Control>,
    shared: Arc<Shared>,
) {
    loop {
        let conn = match listener.accept().await {
            Ok((conn, _)) => conn,
            // Out of descriptors for a moment: `cordon kill` must keep working after.
            Err(_) => {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let bus = bus.clone();
        let shared = shared.clone();
        let ctl = ctl.clone();
        tokio::spawn(async move {
            let _ = client(conn, &bus, ctl, shared).await;
        });
    }
}

fn act_answer(a: Result<String, Refusal>) -> reply::Kind {
    match a {
        Ok(detail) => reply::Kind::Act(wire::ActReply { done: true, detail }),
        Err(why) => reply::Kind::Refused(why.0),
    }
}

async fn client(
    conn: tokio::net::UnixStream,
    bus: &Bus,
    ctl: tokio::sync::mpsc::Sender<Control>,
    shared: Arc<Shared>,
) -> std::io::Result<()> {
    let uid = conn.peer_cred().map_or(u32::MAX, |c| c.uid());
    let (mut r, mut w) = conn.into_split();
    let request = match read_frame_async::<wire::Request>(&mut r).await {
        Ok(req) => req.and_then(|req| req.kind),
        Err(e) => {
            let refused = reply::Kind::Refused(format!("an unreadable request: {e}"));
            return w.write_all(&framed(refused)).await;
        }
    };
    match request {
        Some(request::Kind::Act(a)) => {
            let answer = match action_of(a.action) {
                None => reply::Kind::Refused(format!("no such action ({})", a.action)),
                Some(action) if !shared.may_decide(uid) => reply::Kind::Refused(format!(
                    "only root or the user who started the run may {} it (uid {uid} asked)",
                    action.name()
                )),
                Some(action) => {
                    let (reply, answer) = oneshot::channel();
                    let reason = format!("cordon {} by uid {uid}", action.name());
                    let sent = ctl
                        .send(Control {
                            action,
                            reason,
                            reply,
                        })
                        .await;
                    match (sent, answer.await) {
                        (Ok(()), Ok(done)) => reply::Kind::Act(done),
                        _ => reply::Kind::Refused("the run is ending".into()),
                    }
                }
            };
            w.write_all(&framed(answer)).await
        }
        Some(request::Kind::Net(n)) => {
            let answer = match (uid, &shared.net_changes, crate::profile::egress::parse(&n.rule)) {
                (u, _, _) if !shared.may_decide(u) => reply::Kind::Refused(format!(
                    "only root or the user who started the run may change its network rules (uid {u} asked)"
                )),
                (_, None, _) => reply::Kind::Refused("this sandbox's network.mode is not \"proxy\"".into()),
                (_, _, Err(e)) => reply::Kind::Refused(format!("rule {:?}: {e}", n.rule)),
                (_, Some(tx), Ok(rule)) => {
                    let text = rule.to_string();
                    let change = super::proxy::Change {
                        allow: n.allow,
                        rule,
                        lasts: (n.for_ms > 0).then(|| std::time::Duration::from_millis(n.for_ms)),
                        by: format!("uid {uid}"),
                        withdraw: false,
                    };
                    match tx.send(change).await {
                        Ok(()) => reply::Kind::Act(wire::ActReply {
                            done: true,
                            detail: format!("{} {text}", if n.allow { "allows" } else { "denies" }),
                        }),
                        Err(_) => reply::Kind::Refused("the run is ending".into()),
                    }
                }
            };
            w.write_all(&framed(answer)).await
        }
        Some(request::Kind::Grant(g)) => {
            let answer = match (uid, &shared.grants) {
                (u, _) if !shared.may_decide(u) => Err(Refusal::from(format!(
                    "only root or the user who started the run may grant (uid {u} asked)"
                ))),
                (_, None) => Err(Refusal::from("this sandbox's profile has no [grants] envelope")),
                (_, Some(gr)) => {
                    let by = Shared::principal(uid, &g.on_behalf_of);
                    let piece = if !g.secret.is_empty() {
                        super::grants::Piece::Secret(g.secret.clone())
                    } else if !g.net.is_empty() {
                        super::grants::Piece::Net(g.net.clone())
                    } else if !g.write.is_empty() {
                        super::grants::Piece::Write(g.write.clone())
                    } else {
                        super::grants::Piece::Read(g.read.clone())
                    };
                    gr.grant(&piece, g.for_ms, &g.reason, &by).await
                }
            };
            w.write_all(&framed(act_answer(answer))).await
        }
        Some(request::Kind::Revoke(r)) => {
            let answer = match (uid, &shared.grants) {
                (u, _) if !shared.may_decide(u) => Err(Refusal::from(format!(
                    "only root or the user who started the run may revoke (uid {u} asked)"
                ))),
                (_, None) => Err(Refusal::from("this sandbox's profile has no [grants] envelope")),
                (_, Some(gr)) => gr.end(r.id, "revoked", &format!("uid {uid}")).await,
            };
            w.write_all(&framed(act_answer(answer))).await
        }
        Some(request::Kind::Pending(_)) => {
            w.write_all(&framed(act_answer(Ok(shared.approvals.list()))))
                .await
        }
        Some(request::Kind::Answer(a)) => {
            let answer = if shared.may_decide(uid) {
                let by = Shared::principal(uid, &a.on_behalf_of);
                shared.approvals.answer(a.id, a.approve, a.for_ms, &by).await
            } else {
                Err(Refusal::from(format!(
                    "only root or the user who started the run may answer its requests (uid {uid} asked)"
                )))
            };
            w.write_all(&framed(act_answer(answer))).await
        }
        Some(request::Kind::Grants(_)) => {
            let answer = match &shared.grants {
                None => Err(Refusal::from("this sandbox's profile has no [grants] envelope")),
                Some(gr) => Ok(gr.list()),
            };
            w.write_all(&framed(act_answer(answer))).await
        }
        Some(request::Kind::Stat(_)) => {
            let mut stats = *shared.stats.lock().unwrap_or_else(|p| p.into_inner());
            stats.waiting = u32::try_from(shared.approvals.waiting()).unwrap_or(u32::MAX);
            let stat = wire::StatReply {
                meta: Some(shared.meta.clone()),
                stats: Some(stats),
            };
            w.write_all(&framed(reply::Kind::Stat(stat))).await
        }
        Some(request::Kind::Events(wire::EventsRequest { follow })) => {
            // ORDER: subscribed before the history is read, with no await between (the
            // pipeline publishes on this same thread): every event is in one or the other,
            // and those in both are passed over by their number below.
            let mut rx = bus.subscribe();
            let recent: Vec<Arc<pb::Event>> = shared
                .history
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .cloned()
                .collect();
            let mut last = 0;
            for e in &recent {
                w.write_all(&framed(reply::Kind::Event(pb::Event::clone(e))))
                    .await?;
                last = e.seq;
            }
            if !follow {
                return Ok(());
            }
            let mut lost = 0;
            while let Some(e) = next_or_loss(&mut rx, &shared.meta.sandbox, &mut lost).await {
                if e.seq != 0 && e.seq <= last {
                    continue;
                }
                w.write_all(&framed(reply::Kind::Event(pb::Event::clone(&e))))
                    .await?;
            }
            Ok(())
        }
        None => {
            let refused = reply::Kind::Refused("an empty request".into());
            w.write_all(&framed(refused)).await
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
                let _ = std::fs::remove_dir_all(super::requests::host_dir(id));
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

/// Send one request and read the first reply.
fn ask(id: &str, kind: request::Kind) -> std::io::Result<(UnixStream, Option<reply::Kind>)> {
    use std::io::Write as _;
    let mut s = connect(id)?;
    s.write_all(&wire::Request { kind: Some(kind) }.encode_length_delimited_to_vec())?;
    let first = read_frame::<wire::Reply>(&mut s)?.and_then(|r| r.kind);
    Ok((s, first))
}

fn unexpected(what: Option<reply::Kind>) -> std::io::Error {
    let what = match what {
        Some(reply::Kind::Refused(why)) => format!("refused: {why}"),
        Some(_) => "an answer to another request".into(),
        None => "no answer".into(),
    };
    std::io::Error::new(std::io::ErrorKind::InvalidData, what)
}

pub fn stat(id: &str) -> std::io::Result<Running> {
    match ask(id, request::Kind::Stat(wire::StatRequest {}))?.1 {
        Some(reply::Kind::Stat(s)) => Ok(Running {
            meta: s.meta.unwrap_or_default(),
            stats: s.stats.unwrap_or_default(),
        }),
        other => Err(unexpected(other)),
    }
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

/// Grant a piece of the envelope (`--read PATH`, `--write PATH`, `--net NAME[:PORT]`) for
/// `for_ms`.
pub fn grant(
    id: &str,
    piece: &super::grants::Piece,
    for_ms: u64,
    reason: &str,
    on_behalf_of: &str,
) -> Result<String, ControlError> {
    use super::grants::Piece;
    let mut g = wire::GrantRequest {
        for_ms,
        reason: reason.into(),
        on_behalf_of: on_behalf_of.into(),
        ..Default::default()
    };
    match piece {
        Piece::Read(p) => g.read.clone_from(p),
        Piece::Write(p) => g.write.clone_from(p),
        Piece::Net(n) => g.net.clone_from(n),
        Piece::Secret(n) => g.secret.clone_from(n),
    }
    answer(id, request::Kind::Grant(g))
}

/// The requests of sandbox `id` waiting for an answer, one line each (empty: none).
pub fn pending(id: &str) -> Result<String, ControlError> {
    answer(id, request::Kind::Pending(wire::PendingRequest {}))
}

/// Approve or deny request `request` of sandbox `id`; `for_ms` > 0 remembers the answer.
pub fn answer_request(
    id: &str,
    request: u64,
    approve: bool,
    for_ms: u64,
    on_behalf_of: &str,
) -> Result<String, ControlError> {
    answer(
        id,
        request::Kind::Answer(wire::AnswerRequest {
            id: request,
            approve,
            for_ms,
            on_behalf_of: on_behalf_of.into(),
        }),
    )
}

/// The sandbox's grants, as text.
pub fn grants(id: &str) -> Result<String, ControlError> {
    answer(id, request::Kind::Grants(wire::GrantsRequest {}))
}

/// End grant `grant` now.
pub fn revoke(id: &str, grant: u64) -> Result<String, ControlError> {
    answer(id, request::Kind::Revoke(wire::RevokeRequest { id: grant }))
}

/// Ask a running sandbox's cordon to freeze, thaw or kill it (recorded as a `Response`
/// event). Returns cordon's answer.
pub fn control(id: &str, action: Action) -> Result<String, ControlError> {
    let act = request::Kind::Act(wire::ActRequest {
        action: wire::Action::from(action).into(),
    });
    answer(id, act)
}

/// Allow or deny `rule` in a running `proxy` sandbox, for `for_ms` (0: the rest of the run).
pub fn net_change(id: &str, allow: bool, rule: &str, for_ms: u64) -> Result<String, ControlError> {
    let req = request::Kind::Net(wire::NetRequest {
        allow,
        rule: rule.into(),
        for_ms,
    });
    answer(id, req)
}

/// Send one request whose answer is an `ActReply`.
fn answer(id: &str, req: request::Kind) -> Result<String, ControlError> {
    let io = |source| ControlError::Io {
        id: id.into(),
        source,
    };
    let refused = |answer: String| ControlError::Refused {
        id: id.into(),
        answer,
    };
    match ask(id, req).map_err(io)?.1 {
        Some(reply::Kind::Act(a)) if a.done => Ok(a.detail),
        Some(reply::Kind::Act(a)) => Err(refused(a.detail)),
        Some(reply::Kind::Refused(why)) => Err(refused(why)),
        other => Err(io(unexpected(other))),
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

/// Stream a running sandbox's events (recent ones, then live ones with `follow`), calling
/// `each` until it returns false or the stream ends.
pub fn events(id: &str, follow: bool, mut each: impl FnMut(pb::Event) -> bool) -> std::io::Result<()> {
    let (mut s, mut next) = ask(id, request::Kind::Events(wire::EventsRequest { follow }))?;
    loop {
        match next {
            Some(reply::Kind::Event(e)) => {
                if !each(e) {
                    return Ok(());
                }
            }
            None => return Ok(()),
            other => return Err(unexpected(other)),
        }
        next = read_frame::<wire::Reply>(&mut s)?.and_then(|r| r.kind);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stat_request() -> wire::Request {
        wire::Request {
            kind: Some(request::Kind::Stat(wire::StatRequest {})),
        }
    }

    #[test]
    fn frames_round_trip_and_the_stream_ends_between_them() {
        let act = wire::Request {
            kind: Some(request::Kind::Act(wire::ActRequest {
                action: wire::Action::from(Action::Kill).into(),
            })),
        };
        let mut bytes = stat_request().encode_length_delimited_to_vec();
        bytes.extend(act.encode_length_delimited_to_vec());
        let mut r = bytes.as_slice();
        assert_eq!(read_frame::<wire::Request>(&mut r).unwrap(), Some(stat_request()));
        let got = read_frame::<wire::Request>(&mut r).unwrap().unwrap();
        match got.kind {
            Some(request::Kind::Act(a)) => assert_eq!(action_of(a.action), Some(Action::Kill)),
            other => panic!("{other:?}"),
        }
        assert_eq!(read_frame::<wire::Request>(&mut r).unwrap(), None);
    }

    #[test]
    fn truncated_oversized_and_garbage_frames_are_errors() {
        // Cut inside the prefix, and inside the body of a 255-byte message.
        let mut long = vec![0xff, 0x01];
        long.extend(vec![0u8; 10]);
        for bad in [&long[..1], &long[..]] {
            let e = read_frame::<wire::Request>(&mut &bad[..]).unwrap_err();
            assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof, "{bad:?}");
        }
        let mut huge = Vec::new();
        prost::encode_length_delimiter(MAX_FRAME + 1, &mut huge).unwrap();
        let e = read_frame::<wire::Request>(&mut huge.as_slice()).unwrap_err();
        assert!(e.to_string().contains("at most"), "{e}");
        let endless = [0x80u8; 12];
        let e = read_frame::<wire::Request>(&mut &endless[..]).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidData, "{e}");
        // A frame whose body is not a Request.
        let e = read_frame::<wire::Request>(&mut &[2u8, 0x0a, 0x05][..]).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidData, "{e}");
    }

    #[test]
    fn unknown_actions_are_not_guessed() {
        assert_eq!(action_of(0), None);
        assert_eq!(action_of(99), None);
        for a in [Action::Freeze, Action::Thaw, Action::Kill] {
            assert_eq!(action_of(wire::Action::from(a).into()), Some(a));
        }
    }
}
