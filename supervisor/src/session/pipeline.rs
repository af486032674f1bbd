//! The event pipeline of one sandbox, on its own thread with a tokio runtime:
//! ring buffer → decoder → monitor → trace writer (bounded queue, lossless) and bounded
//! broadcast bus → consumers (the `--events` writer, `cordon events` clients on the control
//! socket).
//!
//! The bus never blocks the reader: a consumer that falls behind by more than the bus holds
//! is skipped ahead and told how many events it lost, as a `Loss` event. Records the probes
//! could not even put in the ring buffer are counted in the kernel and reported the same way.
//! Nothing on this thread blocks on an output: the trace and `--events` have their own.

use std::path::PathBuf;
use std::sync::mpsc::SyncSender;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::control::{self, Control, Meta, Shared};
use super::fuse::{injected, Fuse};
use super::outputs::{Output, Writer};
use super::tracer::Msg as TraceMsg;
use crate::detect::pipeline::Detect;
use crate::events::decode::Decoder;
use crate::events::pb::{self, event::Kind};
use crate::probes::Watch;
use crate::respond::Action;

/// How often the reader drains the ring buffer when the probes have not woken it.
const DRAIN_MS: u64 = 5;
/// Drains that found nothing before the reader sleeps (100 ms of a quiet sandbox): then the
/// probes wake it with the next record (`Watch::set_asleep`), and it looks at its duties
/// (rule timers, the workspace watches, drops) only every `ASLEEP_MS`.
const QUIET_DRAINS: u32 = 20;
const ASLEEP_MS: u64 = 250;

/// When the pipeline's periodic duties fall due next.
struct Duties {
    watches: std::time::Instant,
    drops: std::time::Instant,
    quota: std::time::Instant,
    counts: std::time::Instant,
}

impl Duties {
    fn new() -> Self {
        let now = std::time::Instant::now();
        Self {
            watches: now,
            drops: now,
            quota: now,
            counts: now,
        }
    }

    /// Whether the duty stamped `at` is due every `ms` (restamped when it is).
    fn due(at: &mut std::time::Instant, ms: u64) -> bool {
        let now = std::time::Instant::now();
        if now.duration_since(*at) >= Duration::from_millis(ms) {
            *at = now;
            return true;
        }
        false
    }
}

#[derive(Debug)]
pub struct Summary {
    pub events: u64,
    pub kernel_drops: u64,
    /// Events the `--events` writer lost (it fell behind), and whether it was still blocked
    /// on its output when the run ended.
    pub stream_losses: u64,
    pub stream_stuck: bool,
    /// The pipeline handed the trace writer its seal.
    pub sealed: bool,
    /// A rule whose response is `rollback` killed the sandbox: its transactional layer is to
    /// be discarded.
    pub rolled_back: Option<String>,
}

/// What the pipeline works on.
pub struct Parts {
    pub watch: Watch,
    pub meta: Meta,
    pub out: Option<Output>,
    pub trace: SyncSender<TraceMsg>,
    /// The sandbox's cgroup2 directory, for freeze, thaw and kill.
    pub cgroup: PathBuf,
    pub detect: Detect,
    pub fuse: Arc<Fuse>,
    /// Events made by other components (the egress proxy), numbered and judged here like
    /// the probes' own.
    pub extra: Option<mpsc::Receiver<Kind>>,
    /// Where `cordon net allow|deny` goes (a `proxy` sandbox only).
    pub net_changes: Option<mpsc::Sender<super::proxy::Change>>,
    /// `cordon grant`: the profile's `[grants]` envelope, if it has one.
    pub grants: Option<Arc<super::grants::Grants>>,
    /// The questions waiting for a person (held connections, `ask` responses, requests).
    pub approvals: Arc<super::approvals::Approvals>,
    /// Answers typed on the user's terminal: (request id, approve, remember for ms).
    pub terminal_answers: mpsc::UnboundedReceiver<(u64, bool, u64)>,
    /// `approvals.requests`: the socket the sandbox's `cordon-request` asks on, and whether
    /// its requests are granted without asking.
    pub requests: Option<(std::os::unix::net::UnixListener, bool)>,
    /// The agent's secrets, replaced in every event.
    pub redactor: crate::secret::Redactor,
    /// Live persistence check of the gitdirs the agent writes.
    pub gitwatch: super::gitwatch::GitWatch,
    /// The live supply-chain check, when the profile runs its rule.
    pub supply: Option<super::supply::SupplyWatch>,
    /// `write_quota`: the layer's directory (on its tmpfs) and the cap, watched so that
    /// reaching it is an event while the run goes on.
    pub quota: Option<(PathBuf, u64)>,
}

pub struct Pipeline {
    stop: Option<oneshot::Sender<End>>,
    thread: Option<std::thread::JoinHandle<Option<Summary>>>,
    _socket: control::Socket,
}

impl Pipeline {
    /// Start reading the probes' records. Events are numbered from 1; the first is `started`.
    /// Every event goes to the trace writer before anything else sees it.
    pub fn start(p: Parts) -> std::io::Result<Self> {
        let socket = control::Socket::bind(&p.meta)?;
        let listener = socket.listener()?;
        crate::text::milestone("pipeline: control socket bound");
        let (stop, stopped) = oneshot::channel();
        let fuse = p.fuse.clone();
        let thread = std::thread::Builder::new()
            .name("cordon-events".into())
            .spawn(move || {
                super::favour_this_recorder();
                fuse.guard("event pipeline", move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("tokio runtime");
                    rt.block_on(run(p, listener, stopped))
                })
            })?;
        Ok(Self {
            stop: Some(stop),
            thread: Some(thread),
            _socket: socket,
        })
    }

    /// The sandbox is gone: drain what is left, emit the final counts and `exited`, hand the
    /// trace writer its seal (exit status and cordon's notes about the run), stop. None if
    /// the pipeline had failed (the fuse says why).
    pub fn finish(mut self, end: End) -> Option<Summary> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(end);
        }
        self.thread.take()?.join().ok().flatten()
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(End {
                exit_code: -1,
                notes: "cordon ended the pipeline without an exit status".into(),
                after: Vec::new(),
            });
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// How the run ended, for the pipeline's last events.
pub struct End {
    pub exit_code: i32,
    pub notes: String,
    /// Events the session found after the agent was gone (the persistence scan's
    /// detections), recorded before `exited`.
    pub after: Vec<Kind>,
}

/// Where each batch goes: the trace writer first (lossless), then the bus and the history.
struct Publish {
    trace: SyncSender<TraceMsg>,
    bus: Arc<control::Bus>,
    shared: Arc<Shared>,
    fuse: Arc<Fuse>,
    trace_alive: bool,
}

impl Publish {
    fn send(&mut self, events: &mut Vec<pb::Event>) {
        if events.is_empty() {
            return;
        }
        let batch: Vec<Arc<pb::Event>> = events.drain(..).map(Arc::new).collect();
        if self.trace_alive && self.trace.send(TraceMsg::Events(batch.clone())).is_err() {
            // The writer is gone (its own failure already stopped the sandbox, or it
            // panicked): no event may go unrecorded from here on.
            self.trace_alive = false;
            self.fuse.blow("trace writer", "it stopped taking events");
        }
        self.shared.note(&batch);
        self.bus.send(batch);
    }
}

async fn run(
    p: Parts,
    listener: std::os::unix::net::UnixListener,
    mut stopped: oneshot::Receiver<End>,
) -> Summary {
    let Parts {
        mut watch,
        meta,
        out,
        trace,
        cgroup,
        mut detect,
        fuse,
        mut extra,
        net_changes,
        grants,
        approvals,
        mut terminal_answers,
        requests,
        redactor,
        mut gitwatch,
        mut supply,
        quota,
    } = p;
    let mut quota_reached = false;
    let bus = Arc::new(control::Bus::default());
    let (ctl_tx, mut ctl_rx) = mpsc::channel::<Control>(8);
    let asks = requests.and_then(|(l, unasked)| {
        let l = tokio::net::UnixListener::from_std(l).ok()?;
        let desk = super::requests::Desk {
            approvals: approvals.clone(),
            grants: grants.clone(),
            cgroup: cgroup.clone(),
            unasked,
        };
        Some(tokio::spawn(super::requests::serve(l, desk)))
    });
    let shared = Arc::new(Shared::new(meta.clone(), net_changes, grants, approvals.clone()));
    let writer = out.and_then(|o| Writer::start(bus.subscribe(), meta.sandbox.clone(), o).ok());
    let server = tokio::net::UnixListener::from_std(listener)
        .ok()
        .map(|l| tokio::spawn(control::serve(l, bus.clone(), ctl_tx.clone(), shared.clone())));
    let mut publish = Publish {
        trace,
        bus,
        shared,
        fuse,
        trace_alive: true,
    };

    let mut dec = Decoder::new(
        &meta.sandbox,
        boot_to_unix_ns(),
        syscall_name,
        watch.rules.texts.clone(),
    );
    dec.redact_with(redactor);
    let mut events = Vec::new();
    let load = watch.load_time().map_or("probes already loaded".into(), |d| {
        format!("probes loaded in {} ms", d.as_millis())
    });
    let e = dec.bare(meta.lifecycle("started", load, 0));
    dec.emit(e, &mut events);
    publish.send(&mut events);

    let mut drops_seen = 0u64;
    // The probes wake this reader only when a ring is a quarter full (see submit_flags), or
    // when it sleeps: it drains on this timer, at most ~5 ms between a syscall and its event.
    let mut next = tokio::time::Instant::now() + Duration::from_millis(DRAIN_MS);
    let mut quiet = 0u32;
    let mut asleep = false;
    let mut duties = Duties::new();
    let (mut counted, mut trafficked) = (0u64, 0u64);
    let mut ticks = 0u64;
    let ring_dup = std::os::fd::AsFd::as_fd(&watch.ring)
        .try_clone_to_owned()
        .expect("duplicate the ring buffer fd");
    // The registered descriptor is a duplicate of the ring's, owned by the AsyncFd.
    // SAFETY: it stays open for as long as it is registered.
    let registered = unsafe { tokio::io::unix::AsyncFd::register(ring_dup) };
    let ring_fd = registered.expect("ring buffer fd is pollable");
    let End {
        exit_code,
        notes,
        after,
    } = loop {
        tokio::select! {
            ready = ring_fd.readable() => {
                if let Ok(mut g) = ready {
                    g.clear_ready();
                }
                if asleep {
                    // The probes cleared the flag as they woke us; drain on the timer again.
                    asleep = false;
                    quiet = 0;
                    next = tokio::time::Instant::now() + Duration::from_millis(DRAIN_MS);
                }
                drain(&mut watch, &mut dec, &mut events);
                detect.run(&mut watch, &mut dec, &mut events);
                put_questions(&mut detect, &approvals, &ctl_tx);
                publish.send(&mut events);
            }
            Some(kind) = recv_extra(&mut extra) => {
                drain(&mut watch, &mut dec, &mut events);
                let e = dec.bare(kind);
                dec.emit(e, &mut events);
                // The line quotes the event as recorded: secrets already replaced.
                if let Some(kind) = events.last().and_then(|e| e.kind.as_ref()) {
                    ask_line(kind, &meta.sandbox);
                }
                detect.run(&mut watch, &mut dec, &mut events);
                put_questions(&mut detect, &approvals, &ctl_tx);
                publish.send(&mut events);
            }
            _ = tokio::time::sleep_until(next) => {
                let found = drain(&mut watch, &mut dec, &mut events);
                ticks += 1;
                gitwatch.touched(detect.take_git_touches());
                let watches_due = Duties::due(&mut duties.watches, 50);
                if let Some(s) = supply.as_mut() {
                    s.touched(detect.take_touched());
                    if watches_due {
                        for x in s.check(std::time::Instant::now()) {
                            let at = (&mut watch, &mut dec, &mut events);
                            detect.external("supply_chain", x.summary, x.evidence, at);
                        }
                    }
                }
                if watches_due {
                    for kind in gitwatch.check(std::time::Instant::now()) {
                        let e = dec.bare(kind);
                        dec.emit(e, &mut events);
                        // The line quotes the event as recorded: secrets already replaced.
                        if let Some(kind) = events.last().and_then(|e| e.kind.as_ref()) {
                            alert_line(kind, &meta.sandbox);
                        }
                    }
                }
                if !quota_reached && Duties::due(&mut duties.quota, 250) {
                    if let Some(kind) = quota.as_ref().and_then(|(dir, q)| quota_detection(dir, *q)) {
                        quota_reached = true;
                        alert_line(&kind, &meta.sandbox);
                        let e = dec.bare(kind);
                        dec.emit(e, &mut events);
                    }
                }
                if ticks == 20 && injected("event pipeline") {
                    panic!("fault injected for a test");
                }
                if Duties::due(&mut duties.drops, 125) {
                    report_drops(&watch, &mut dec, &mut drops_seen, &mut events);
                }
                if Duties::due(&mut duties.counts, 2500) {
                    // Only what changed: an idle sandbox adds nothing to its trace.
                    let counts = watch.counts();
                    let total: u64 = counts.iter().map(|(_, n)| n).sum();
                    if total != counted {
                        counted = total;
                        dec.counts(&counts, false, &mut events);
                    }
                    let (remotes, untracked) = watch.traffic();
                    let moved = remotes
                        .iter()
                        .map(|(_, t)| t.packets_in + t.packets_out)
                        .sum::<u64>()
                        + untracked;
                    if moved != trafficked {
                        trafficked = moved;
                        dec.traffic(&remotes, untracked, false, &mut events);
                    }
                }
                detect.run(&mut watch, &mut dec, &mut events);
                detect.tick(&mut dec, &mut events);
                put_questions(&mut detect, &approvals, &ctl_tx);
                let settled = supply.as_ref().is_none_or(|s| s.settled()) && gitwatch.settled();
                quiet = if found == 0 && events.is_empty() { quiet + 1 } else { 0 };
                publish.send(&mut events);
                if asleep && quiet == 0 {
                    asleep = false;
                    watch.set_asleep(false);
                } else if !asleep && quiet >= QUIET_DRAINS && settled && ticks > 20 {
                    // ORDER: the flag first, then a last drain: a record that came between
                    // the two either is drained here or wakes us.
                    watch.set_asleep(true);
                    if drain(&mut watch, &mut dec, &mut events) == 0 {
                        asleep = true;
                    } else {
                        watch.set_asleep(false);
                        quiet = 0;
                        detect.run(&mut watch, &mut dec, &mut events);
                        publish.send(&mut events);
                    }
                }
                let period = if asleep { ASLEEP_MS } else { DRAIN_MS };
                next = tokio::time::Instant::now() + Duration::from_millis(period);
            }
            Some((id, approve, for_ms)) = terminal_answers.recv() => {
                // On a task of its own: the answer's event goes into the queue this loop drains.
                let by = format!("the terminal (uid {})", meta.owner_uid);
                let approvals = approvals.clone();
                tokio::spawn(async move { approvals.answer(id, approve, for_ms, &by).await });
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
                    Err(e) => (false, e.to_string()),
                };
                let e = dec.bare(Kind::Response(pb::Response {
                    action: c.action.name().into(),
                    reason: c.reason,
                    done,
                    detail: detail.clone(),
                }));
                dec.emit(e, &mut events);
                publish.send(&mut events);
                let _ = c.reply.send(control::wire::ActReply { done, detail });
            }
            end = &mut stopped => break end.unwrap_or_else(|_| End {
                exit_code: -1,
                notes: "cordon's supervisor ended without an exit status".into(),
                after: Vec::new(),
            }),
        }
    };
    drain(&mut watch, &mut dec, &mut events);
    // The proxy has stopped (the session stops it first): what it still holds is recorded.
    if let Some(rx) = extra.as_mut() {
        while let Ok(kind) = rx.try_recv() {
            let e = dec.bare(kind);
            dec.emit(e, &mut events);
        }
    }
    dec.flush(&mut events);
    report_drops(&watch, &mut dec, &mut drops_seen, &mut events);
    dec.counts(&watch.counts(), true, &mut events);
    let (remotes, untracked) = watch.traffic();
    dec.traffic(&remotes, untracked, true, &mut events);
    detect.run(&mut watch, &mut dec, &mut events);
    for kind in after {
        let e = dec.bare(kind);
        dec.emit(e, &mut events);
    }
    let notes = detect.notes(notes);
    let detail = if notes.is_empty() {
        format!("exit status {exit_code}")
    } else {
        format!("exit status {exit_code}; {notes}")
    };
    let e = dec.bare(meta.lifecycle("exited", detail, exit_code));
    dec.emit(e, &mut events);
    publish.send(&mut events);
    let sealed = publish.trace_alive && publish.trace.send(TraceMsg::Seal(exit_code, notes)).is_ok();
    crate::text::milestone("pipeline: last events out, seal sent");
    drop(watch);
    crate::text::milestone("pipeline: probes released");
    // ORDER: the server stops first (no consumer joins after), then the bus closes and the
    // consumers end once they have read what it holds.
    if let Some(s) = server {
        s.abort();
        let _ = s.await;
    }
    if let Some(a) = asks {
        a.abort();
        let _ = a.await;
    }
    publish.bus.close();
    drop(publish);
    let (stream_losses, stream_stuck) = match writer.map(Writer::finish) {
        Some(Some(lost)) => (lost, false),
        Some(None) => (0, true),
        None => (0, false),
    };
    Summary {
        events: dec.events_so_far(),
        kernel_drops: drops_seen,
        stream_losses,
        stream_stuck,
        sealed,
        rolled_back: detect.rolled_back(),
    }
}

/// `write_quota` reached (within 64 KiB: tmpfs allocates in pages): a detection, once. The
/// kernel already refuses the writes past it (ENOSPC); this says so while the run goes on.
fn quota_detection(dir: &std::path::Path, quota: u64) -> Option<Kind> {
    let st = nix::sys::statvfs::statvfs(dir).ok()?;
    let used = quota.saturating_sub(st.blocks_available() * st.fragment_size());
    (used + (64 << 10) >= quota).then(|| {
        Kind::Detection(pb::Detection {
            rule: "write_quota".into(),
            summary: format!(
                "the agent reached its write quota ({used} of {quota} bytes): writes past it fail with ENOSPC"
            ),
            response: "alert".into(),
            window: "whole run".into(),
            score: used as f64,
            threshold: quota as f64,
            offending_time_unix_ns: crate::events::unix_now_ns(),
            ..Default::default()
        })
    })
}

/// The stderr line of a live persistence finding (escaped: it quotes the agent's bytes).
fn alert_line(kind: &Kind, sandbox: &str) {
    if let Kind::Detection(d) = kind {
        crate::text::eprint(&format!("ALERT {sandbox}: rule {} (live): {}", d.rule, d.summary));
    }
}

/// The stderr lines of a question to a person: what it is and how to answer, then the
/// answer. Escaped: the target and the reason are the agent's words.
fn ask_line(kind: &Kind, sandbox: &str) {
    let Kind::Approval(a) = kind else { return };
    let what = super::approvals::describe(&a.what, &a.target, &a.why, &a.asker);
    let line = match a.state.as_str() {
        "asked" => format!(
            "ASK {sandbox}: #{id} {what} — held; answer with `cordon approve {sandbox}/{id}` or `cordon deny {sandbox}/{id}`{net}; refused in {} s",
            a.timeout_ms / 1000,
            id = a.id,
            net = if a.what == "connect" {
                format!(" (or `cordon net allow {sandbox} {}`)", a.target)
            } else {
                String::new()
            },
        ),
        state if a.by.is_empty() => format!("ASK {sandbox}: #{} {} {} {state} ({})", a.id, a.what, a.target, a.rule),
        state => format!("ASK {sandbox}: #{} {} {} {state} by {} ({})", a.id, a.what, a.target, a.by, a.rule),
    };
    crate::text::eprint(&line);
}

/// The questions of rules whose response is `ask` (the sandbox is frozen): each goes to the
/// broker; approved, the sandbox is thawed, else killed (as `cordon thaw|kill` would).
fn put_questions(
    detect: &mut Detect,
    approvals: &Arc<super::approvals::Approvals>,
    ctl: &mpsc::Sender<Control>,
) {
    for (rule, summary) in detect.take_asks() {
        let approvals = approvals.clone();
        let ctl = ctl.clone();
        tokio::spawn(async move {
            let q = super::approvals::Question {
                what: "rule".into(),
                target: rule.into(),
                why: summary,
                asker: format!("rule {rule}"),
            };
            let (id, a) = approvals.ask(q).await;
            let action = if a.approved { Action::Thaw } else { Action::Kill };
            let reason = if a.by.is_empty() {
                format!("request #{id} {}: {}", a.state, a.rule)
            } else {
                format!("request #{id} {} by {}", a.state, a.by)
            };
            let (reply, _answer) = oneshot::channel();
            let _ = ctl
                .send(Control {
                    action,
                    reason,
                    reply,
                })
                .await;
        });
    }
}

async fn recv_extra(rx: &mut Option<mpsc::Receiver<Kind>>) -> Option<Kind> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Decode what the ring holds; how many records that was.
fn drain(watch: &mut Watch, dec: &mut Decoder, events: &mut Vec<pb::Event>) -> usize {
    let mut n = 0;
    while let Some(item) = watch.ring.next() {
        dec.record(item, events);
        n += 1;
    }
    n
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

fn syscall_name(nr: u32) -> String {
    crate::kernel::name(nr).unwrap_or_default()
}

fn boot_to_unix_ns() -> i64 {
    let now = |clock| {
        // SAFETY: zeroed timespec is a valid out buffer.
        let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
        // SAFETY: clock_gettime writes one timespec into the valid buffer `ts`.
        unsafe { libc::clock_gettime(clock, &mut ts) };
        ts.tv_sec * 1_000_000_000 + ts.tv_nsec
    };
    now(libc::CLOCK_REALTIME) - now(libc::CLOCK_BOOTTIME)
}
