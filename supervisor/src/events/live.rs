//! The live pipeline of one sandbox, on its own thread with a tokio runtime:
//! ring buffer → decoder → bounded broadcast bus → consumers (the `--events` writer and
//! `cordon events` clients on the sandbox's socket).
//!
//! The bus never blocks the reader: a consumer that falls behind by more than the bus holds
//! is skipped ahead and told how many events it lost, as a `Loss` event. Records the probes
//! could not even put in the ring buffer are counted in the kernel and reported the same way.

use std::collections::VecDeque;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prost::Message as _;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::sync::{broadcast, oneshot};

use super::decode::Decoder;
use super::pb::{self, event::Kind};
use crate::probes::Watch;
use crate::respond::Action;
use crate::trace::record::Recording;

/// Events the bus holds for consumers that are behind.
pub const BUS_CAPACITY: usize = 1 << 16;
/// Recent events kept for `cordon events` (without --follow) and for clients that join late.
const HISTORY: usize = 8192;
pub const RUN_DIR: &str = "/run/cordon/sandboxes";
/// How often the reader drains the ring buffer when the probes have not woken it.
const DRAIN_MS: u64 = 5;

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
            time_unix_ns: super::unix_now_ns(),
            kind: Some(self.lifecycle(
                "unmonitored",
                "--no-probes: no events are recorded for this run".into(),
                0,
            )),
            ..Default::default()
        }
    }

    /// `--no-probes` with `--events`: that event is the whole stream.
    pub fn record_unmonitored(&self, e: &pb::Event, out: Output) -> std::io::Result<()> {
        let mut w = out.into_writer();
        writeln!(w, "{}", super::json(e))?;
        w.flush()
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

#[derive(Debug)]
pub struct Summary {
    pub events: u64,
    pub kernel_drops: u64,
    pub stream_losses: u64,
    pub trace: Option<crate::trace::record::TraceOutcome>,
}

pub struct Monitor {
    stop: Option<oneshot::Sender<(i32, String)>>,
    thread: Option<std::thread::JoinHandle<Summary>>,
    files: Vec<PathBuf>,
}

/// Where `--events` goes.
pub enum Output {
    Stdout,
    File(std::fs::File),
}

impl Output {
    pub fn open(spec: &str) -> std::io::Result<Self> {
        if spec == "-" {
            return Ok(Self::Stdout);
        }
        std::fs::File::create(spec).map(Self::File)
    }

    fn into_writer(self) -> Box<dyn std::io::Write + Send> {
        match self {
            Self::Stdout => Box::new(std::io::BufWriter::new(std::io::stdout())),
            Self::File(f) => Box::new(std::io::BufWriter::new(f)),
        }
    }
}

pub fn socket_path(id: &str) -> PathBuf {
    Path::new(RUN_DIR).join(format!("{id}.sock"))
}

pub fn meta_path(id: &str) -> PathBuf {
    Path::new(RUN_DIR).join(format!("{id}.json"))
}

fn syscall_name(nr: u32) -> String {
    i32::try_from(nr)
        .ok()
        .and_then(|nr| libseccomp::ScmpSyscall::from(nr).get_name().ok())
        .unwrap_or_default()
}

fn boot_to_unix_ns() -> i64 {
    let now = |clock| {
        // SAFETY: zeroed timespec is a valid out buffer.
        let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        unsafe { libc::clock_gettime(clock, &mut ts) };
        ts.tv_sec * 1_000_000_000 + ts.tv_nsec
    };
    now(libc::CLOCK_REALTIME) - now(libc::CLOCK_BOOTTIME)
}

impl Monitor {
    /// Start reading `watch`'s records. Events are numbered from 1; the first is `started`.
    /// Every event goes to `trace` (if any) before anything else sees it.
    pub fn start(
        watch: Watch,
        meta: Meta,
        out: Option<Output>,
        trace: Option<Recording>,
        cgroup: PathBuf,
        monitor: crate::detect::Config,
    ) -> std::io::Result<Self> {
        // A baseline the profile names is read now: a missing one stops the run before the
        // agent starts.
        let detect = crate::detect::pipeline::Detect::new(&monitor, cgroup.clone(), meta.sandbox.clone())
            .map_err(std::io::Error::other)?;
        std::fs::create_dir_all(RUN_DIR)?;
        let sock = socket_path(&meta.sandbox);
        let _ = std::fs::remove_file(&sock);
        let listener = std::os::unix::net::UnixListener::bind(&sock)?;
        listener.set_nonblocking(true)?;
        let meta_file = meta_path(&meta.sandbox);
        std::fs::write(&meta_file, serde_json::to_vec(&meta).unwrap_or_default())?;
        let (stop, stopped) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("cordon-events".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("tokio runtime");
                rt.block_on(pipeline(
                    Run {
                        watch,
                        meta,
                        out,
                        trace,
                        cgroup,
                        detect,
                    },
                    listener,
                    stopped,
                ))
            })?;
        Ok(Self {
            stop: Some(stop),
            thread: Some(thread),
            files: vec![sock, meta_file],
        })
    }

    /// The sandbox is gone: drain what is left, write the final summary, seal the trace with
    /// the exit status and cordon's notes about the run (limits hit, wall clock, …), stop.
    pub fn finish(mut self, exit_code: i32, notes: &[String]) -> Option<Summary> {
        if let Some(s) = self.stop.take() {
            let _ = s.send((exit_code, notes.join("; ")));
        }
        self.thread.take()?.join().ok()
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send((-1, "cordon ended the pipeline without an exit status".into()));
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        for f in &self.files {
            let _ = std::fs::remove_file(f);
        }
    }
}

struct Shared {
    history: Mutex<VecDeque<Arc<pb::Event>>>,
    stats: Mutex<Stats>,
    meta: Meta,
}

fn publish(
    tx: &broadcast::Sender<Arc<pb::Event>>,
    shared: &Shared,
    trace: &mut Option<Recording>,
    events: &mut Vec<pb::Event>,
) {
    if events.is_empty() {
        return;
    }
    if let Some(t) = trace {
        t.record(events);
    }
    let mut history = shared.history.lock().expect("history lock");
    let mut stats = shared.stats.lock().expect("stats lock");
    for e in events.drain(..) {
        stats.events = e.seq;
        if matches!(&e.kind, Some(Kind::Syscall(s)) if s.denied)
            || matches!(&e.kind, Some(Kind::Net(n)) if !n.allowed)
        {
            stats.denied += 1;
        }
        if let Some(Kind::Counts(c)) = &e.kind {
            stats.syscalls = c.total;
        }
        let e = Arc::new(e);
        if history.len() == HISTORY {
            history.pop_front();
        }
        history.push_back(e.clone());
        let _ = tx.send(e);
    }
}

/// What the pipeline works on.
struct Run {
    watch: Watch,
    meta: Meta,
    out: Option<Output>,
    trace: Option<Recording>,
    /// The sandbox's cgroup2 directory, for freeze, thaw and kill.
    cgroup: PathBuf,
    detect: crate::detect::pipeline::Detect,
}

/// A freeze, thaw or kill asked for on the sandbox's socket; the answer goes to `reply`.
struct Control {
    action: Action,
    uid: u32,
    reply: oneshot::Sender<String>,
}

async fn pipeline(
    run: Run,
    listener: std::os::unix::net::UnixListener,
    mut stopped: oneshot::Receiver<(i32, String)>,
) -> Summary {
    let Run {
        watch,
        meta,
        out,
        mut trace,
        cgroup,
        mut detect,
    } = run;
    let (tx, _) = broadcast::channel::<Arc<pb::Event>>(BUS_CAPACITY);
    let (ctl_tx, mut ctl_rx) = tokio::sync::mpsc::channel::<Control>(8);
    let shared = Arc::new(Shared {
        history: Mutex::new(VecDeque::with_capacity(HISTORY)),
        stats: Mutex::new(Stats::default()),
        meta: meta.clone(),
    });
    let writer = out.map(|o| tokio::spawn(write_json(tx.subscribe(), meta.sandbox.clone(), o)));
    let server = tokio::net::UnixListener::from_std(listener)
        .ok()
        .map(|l| tokio::spawn(serve(l, tx.clone(), ctl_tx, shared.clone())));

    let mut dec = Decoder::new(
        &meta.sandbox,
        boot_to_unix_ns(),
        syscall_name,
        watch.rules.texts.clone(),
    );
    let mut events = Vec::new();
    let load = watch.load_time().map_or("probes already loaded".into(), |d| {
        format!("probes loaded in {} ms", d.as_millis())
    });
    let e = dec.bare(meta.lifecycle("started", load, 0));
    dec.emit(e, &mut events);
    publish(&tx, &shared, &mut trace, &mut events);

    let mut watch = watch;
    let mut drops_seen = 0u64;
    // The probes wake this reader only when a ring is a quarter full (see submit_flags), so it
    // drains on this tick: at most ~5 ms between a syscall and its event.
    let mut tick = tokio::time::interval(Duration::from_millis(DRAIN_MS));
    let mut ticks = 0u64;
    let ring_dup = std::os::fd::AsFd::as_fd(&watch.ring)
        .try_clone_to_owned()
        .expect("duplicate the ring buffer fd");
    // The AsyncFd owns `ring_dup`, a duplicate of the ring's fd.
    // SAFETY: the registered descriptor is owned by the AsyncFd, so it stays open while registered.
    let registered = unsafe { tokio::io::unix::AsyncFd::register(ring_dup) };
    let ring_fd = registered.expect("ring buffer fd is pollable");
    let (exit_code, notes) = loop {
        tokio::select! {
            ready = ring_fd.readable() => {
                if let Ok(mut g) = ready {
                    g.clear_ready();
                }
                drain(&mut watch, &mut dec, &mut events);
                detect.run(&mut watch, &mut dec, &mut events);
                publish(&tx, &shared, &mut trace, &mut events);
            }
            _ = tick.tick() => {
                drain(&mut watch, &mut dec, &mut events);
                ticks += 1;
                if ticks.is_multiple_of(25) {
                    report_drops(&watch, &mut dec, &mut drops_seen, &mut events);
                }
                if ticks.is_multiple_of(500) {
                    dec.counts(&watch.counts(), false, &mut events);
                    let (remotes, untracked) = watch.traffic();
                    if !remotes.is_empty() || untracked > 0 {
                        dec.traffic(&remotes, untracked, false, &mut events);
                    }
                }
                detect.run(&mut watch, &mut dec, &mut events);
                detect.tick(&mut dec, &mut events);
                publish(&tx, &shared, &mut trace, &mut events);
                if let Some(t) = &mut trace {
                    t.tick();
                }
            }
            Some(c) = ctl_rx.recv() => {
                drain(&mut watch, &mut dec, &mut events);
                detect.run(&mut watch, &mut dec, &mut events);
                let result = crate::respond::apply(&cgroup, c.action);
                if c.action != Action::Freeze && result.is_ok() {
                    detect.decided(c.action);
                }
                let (done, detail) = match &result {
                    Ok(d) => (true, d.clone()),
                    Err(e) => (false, e.clone()),
                };
                let e = dec.bare(Kind::Response(pb::Response {
                    action: c.action.name().into(),
                    reason: format!("cordon {} by uid {}", c.action.name(), c.uid),
                    done,
                    detail: detail.clone(),
                }));
                dec.emit(e, &mut events);
                publish(&tx, &shared, &mut trace, &mut events);
                let _ = c.reply.send(if done { format!("ok {detail}") } else { format!("error {detail}") });
            }
            end = &mut stopped => break end.unwrap_or((-1, "cordon's supervisor ended without an exit status".into())),
        }
    };
    drain(&mut watch, &mut dec, &mut events);
    dec.flush(&mut events);
    report_drops(&watch, &mut dec, &mut drops_seen, &mut events);
    dec.counts(&watch.counts(), true, &mut events);
    let (remotes, untracked) = watch.traffic();
    dec.traffic(&remotes, untracked, true, &mut events);
    detect.run(&mut watch, &mut dec, &mut events);
    let notes = detect.notes(notes);
    let detail = if notes.is_empty() {
        format!("exit status {exit_code}")
    } else {
        format!("exit status {exit_code}; {notes}")
    };
    let e = dec.bare(meta.lifecycle("exited", detail, exit_code));
    dec.emit(e, &mut events);
    publish(&tx, &shared, &mut trace, &mut events);
    drop(watch);
    // ORDER: the server holds a sender; stop it first so the bus closes and consumers end.
    if let Some(s) = server {
        s.abort();
        let _ = s.await;
    }
    drop(tx);
    let mut stream_losses = 0;
    if let Some(w) = writer {
        stream_losses = w.await.unwrap_or(0);
    }
    Summary {
        events: dec.events_so_far(),
        kernel_drops: drops_seen,
        stream_losses,
        trace: trace.map(|t| t.finish(exit_code, notes)),
    }
}

fn drain(watch: &mut Watch, dec: &mut Decoder, events: &mut Vec<pb::Event>) {
    while let Some(item) = watch.ring.next() {
        dec.record(&item, events);
    }
}

fn report_drops(watch: &Watch, dec: &mut Decoder, seen: &mut u64, events: &mut Vec<pb::Event>) {
    let total = watch.drops();
    if total > *seen {
        let e = dec.bare(Kind::Loss(pb::Loss {
            source: "kernel".into(),
            count: total - *seen,
            total,
        }));
        dec.emit(e, events);
        *seen = total;
    }
}

/// A consumer's view of the bus: events in order, with a `Loss` event where it fell behind.
pub async fn next_or_loss(
    rx: &mut broadcast::Receiver<Arc<pb::Event>>,
    sandbox: &str,
    lost_total: &mut u64,
) -> Option<Arc<pb::Event>> {
    match rx.recv().await {
        Ok(e) => Some(e),
        Err(broadcast::error::RecvError::Lagged(n)) => {
            *lost_total += n;
            Some(Arc::new(pb::Event {
                sandbox: sandbox.into(),
                time_unix_ns: super::unix_now_ns(),
                kind: Some(Kind::Loss(pb::Loss {
                    source: "stream".into(),
                    count: n,
                    total: *lost_total,
                })),
                ..Default::default()
            }))
        }
        Err(broadcast::error::RecvError::Closed) => None,
    }
}

async fn write_json(mut rx: broadcast::Receiver<Arc<pb::Event>>, sandbox: String, out: Output) -> u64 {
    let mut lost = 0;
    let mut buf = out.into_writer();
    while let Some(e) = next_or_loss(&mut rx, &sandbox, &mut lost).await {
        let _ = writeln!(buf, "{}", super::json(&e));
        if rx.is_empty() {
            let _ = buf.flush();
        }
    }
    let _ = buf.flush();
    lost
}

/// The sandbox's socket: one request line, then the answer.
/// `stat` → one JSON line (meta and counters); `events` → recent events as length-delimited
/// protobuf; `follow` → the same, then live events until the run ends.
async fn serve(
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
                (Ok(()), Ok(a)) => a,
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
            let stats = shared.stats.lock().expect("stats lock").clone();
            let v = serde_json::json!({ "meta": shared.meta, "stats": stats });
            w.write_all(format!("{v}\n").as_bytes()).await
        }
        req @ ("events" | "follow") => {
            let recent: Vec<Arc<pb::Event>> = shared
                .history
                .lock()
                .expect("history lock")
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
