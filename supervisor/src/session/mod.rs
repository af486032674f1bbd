//! One sandbox's life after launch. `launch` builds and releases the sandbox; the session owns
//! everything that lives as long as it does: the probes' watch, the event pipeline (decode,
//! monitor, bus), the trace writer, the `--events` output, the control socket — and is where
//! the egress proxy, the approval broker, grant timers and the workspace layer attach.
//!
//! Each component runs on its own thread with a start, a stop and typed messages:
//! ```text
//!   ring buffer ─▶ pipeline (decode → monitor) ─┬─▶ trace writer   (bounded queue, lossless)
//!                    ▲ control socket (actions) └─▶ bus ─┬─▶ --events output  (lossy, counted)
//!                                                        └─▶ `cordon events` clients (lossy)
//! ```
//! Fail closed: a component that panics or fails blows the session's fuse, which freezes and
//! kills the whole sandbox at once; the trace is sealed with the reason (`fuse`).

pub mod approvals;
pub mod control;
pub mod fuse;
mod gitwatch;
pub mod grants;
pub mod outputs;
pub mod pipeline;
pub mod proxy;
pub mod requests;
mod supply;
mod tracer;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use crate::launch::{Observer, Outcome, Sandbox};
use crate::policy::Policy;
use crate::probes::{ProbeError, Probes, Watch};
use crate::profile::NetworkMode;
use crate::trace::record::TraceOutcome;
use crate::trace::writer::TraceFile;

pub use control::Meta;
pub use fuse::Fuse;
pub use outputs::Output;

/// How much higher than the rest of cordon the threads that take a sandbox's records from the
/// kernel and write its trace (`cordon-events`, `cordon-trace`) are scheduled, in nice steps.
/// Under CPU contention they run ahead of the sandbox they watch (a nice -5 thread weighs 3121
/// against a nice-0 task's or a cgroup's 1024), so a busy agent on a saturated host cannot
/// outrun its own recorder into the ring buffer's drops: `N=50 RATE=30000 benches/scale.sh`
/// (10 sandboxes asking 30k opens/s each on 2 cores), 10 runs each, alternated: at nice 0,
/// 613,809 events lost in all, 3 runs of 10 without loss; raised, 42,982 and 7 of 10. They
/// spend only what the sandbox's events cost, so the host loses nothing it would not have spent.
/// What they spawn (hooks, the lingerer) starts at cordon's own nice (`sys::at_base_nice`). A
/// refusal leaves them where they were; drops are still counted and reported.
const RECORDER_PRIORITY: i32 = 5;

/// Called first by the recording threads (`RECORDER_PRIORITY`).
fn favour_this_recorder() {
    let _ = crate::sys::raise_thread_priority(RECORDER_PRIORITY);
}

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("{0}; no agent was started (run `cordon doctor`; `--no-probes` runs unmonitored)")]
    Probes(ProbeError),
    #[error("network: an allowlist or a proxy needs the eBPF egress hooks, which --no-probes turns off; no agent was started")]
    AllowlistNeedsProbes,
    #[error("monitor: {0}; no agent was started")]
    Monitor(#[source] crate::detect::pipeline::DetectError),
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("events: {0}")]
    Events(#[source] std::io::Error),
}

/// What a run asks the session for, decided by the CLI before anything is created.
pub struct Setup {
    pub meta: Meta,
    /// `--events`.
    pub out: Option<Output>,
    /// The run's trace, header already on disk (no trace, no run).
    pub trace: TraceFile,
    /// `false` with `--no-probes`: nothing is recorded but the `unmonitored` event.
    pub monitored: bool,
    /// `network.credential`: the secrets and the run's CA (`proxy::firewall::prepare`).
    pub firewall: Option<proxy::firewall::Firewall>,
    /// Transactional workspace: the layer's upper directory, where the agent's writes are
    /// (the persistence scan at the end reads it instead of the untouched workspace).
    pub layer_upper: Option<PathBuf>,
    /// Interactive runs: the user's terminal, where questions are asked too (the same desk
    /// goes to the launcher, whose loop shows them).
    pub desk: Option<Arc<crate::launch::desk::Desk>>,
}

/// How the session ended, for the CLI to report.
#[derive(Debug)]
pub struct Report {
    /// Events recorded (None: the run was not monitored).
    pub events: Option<pipeline::Summary>,
    pub trace: TraceOutcome,
    /// Why a component stopped the sandbox, if one did.
    pub failures: Vec<String>,
    /// What the agent left in the workspace that runs code later without anyone choosing to
    /// run it (recorded as `persistence` detections; the CLI warns about each).
    pub persistence: Vec<crate::persist::Finding>,
    /// Build files the agent created or changed: they run code when someone builds, which is
    /// what an agent is asked to change every day. A note in the seal, not a detection.
    pub build_files: Vec<crate::persist::Finding>,
}

/// Splits a scan into implicit code (hooks, config keys, `.envrc`, editor tasks, install
/// scripts…) and build files.
fn split_scan(
    found: Vec<crate::persist::Finding>,
) -> (Vec<crate::persist::Finding>, Vec<crate::persist::Finding>) {
    found.into_iter().partition(|f| f.vector != "build-file")
}

/// The seal's note about build files changed during the run.
fn build_files_note(files: &[crate::persist::Finding]) -> Option<String> {
    (!files.is_empty()).then(|| {
        let names: Vec<String> = files
            .iter()
            .map(|f| f.file.to_string_lossy().into_owned())
            .collect();
        format!(
            "build files created or changed during the run (they run code when you build): {}",
            names.join(", ")
        )
    })
}

/// Started between clone and release.
struct Components {
    fuse: Arc<Fuse>,
    tracer: tracer::Tracer,
    pipeline: pipeline::Pipeline,
    /// `network.mode = "proxy"`: the egress proxy.
    proxy: Option<proxy::Proxy>,
    approvals: Arc<approvals::Approvals>,
}

pub struct Session {
    meta: Meta,
    policy_monitor: crate::policy::monitor::Config,
    network: crate::policy::NetworkPolicy,
    redactor: crate::secret::Redactor,
    firewall: Option<Arc<proxy::firewall::Firewall>>,
    /// `[grants] read` and its longest grant.
    grant_read: Vec<PathBuf>,
    grant_write: Vec<PathBuf>,
    grant_net: Vec<crate::profile::egress::Egress>,
    grant_max_ms: u64,
    approvals: crate::profile::Approvals,
    /// `approvals.requests`: the run's request directory (removed when the session ends).
    request_dir: Option<RequestDir>,
    desk: Option<Arc<crate::launch::desk::Desk>>,
    net_rules: crate::probes::NetRules,
    probes: Option<Probes>,
    out: Option<Output>,
    trace: Option<TraceFile>,
    running: Option<Components>,
    workspace: PathBuf,
    /// Where the end-of-run persistence scan looks: the layer's upper directory in a
    /// transactional run, else the workspace.
    scanned: Option<PathBuf>,
    /// When the agent could first run (set on attach): the persistence scan reports what
    /// changed since.
    attached_at: Option<SystemTime>,
    /// `write_quota`: the layer's upper directory and the cap.
    quota: Option<(PathBuf, u64)>,
    /// Watched by the probes: what marks the sandbox quiet once only its init is left (an
    /// error: it cannot be, and cordon waits for init before its last drain).
    quieter: Option<Result<crate::probes::Quieter, ProbeError>>,
}

impl Session {
    /// Before the sandbox exists: the probes are loaded (or opened, if another cordon loaded
    /// them) and the monitor's baseline is read, so that if either cannot be had nothing has
    /// been created yet.
    pub fn prepare(policy: &Policy, setup: Setup) -> Result<Session, SessionError> {
        let Setup {
            meta,
            mut out,
            mut trace,
            monitored,
            firewall,
            layer_upper,
            desk,
        } = setup;
        let probes = if monitored {
            Some(Probes::ready().map_err(SessionError::Probes)?)
        } else {
            if matches!(policy.network.mode, NetworkMode::Allowlist | NetworkMode::Proxy) {
                return Err(SessionError::AllowlistNeedsProbes);
            }
            // The run's only event says it is not monitored, in the trace and in --events.
            let e = meta.unmonitored_event();
            trace.chain.event(&e);
            trace.write().map_err(|e| SessionError::Io {
                what: "trace",
                source: std::io::Error::other(e),
            })?;
            if let Some(out) = out.take() {
                outputs::write_one(&e, out).map_err(SessionError::Events)?;
            }
            None
        };
        // A baseline the profile names is read now: a missing one stops the run.
        crate::detect::pipeline::Detect::check(&policy.monitor).map_err(SessionError::Monitor)?;
        Ok(Session {
            meta,
            policy_monitor: policy.monitor.clone(),
            network: policy.network.clone(),
            redactor: crate::secret::Redactor::from_env(&policy.env)
                .with(firewall.iter().flat_map(proxy::firewall::Firewall::secrets)),
            firewall: firewall.map(Arc::new),
            grant_read: policy.grant_read.clone(),
            grant_write: policy.grant_write.clone(),
            grant_net: policy
                .grant_net
                .iter()
                .filter_map(|r| crate::profile::egress::parse(r).ok())
                .collect(),
            grant_max_ms: policy.grant_max_ms,
            approvals: policy.approvals.clone(),
            request_dir: policy.request_dir.clone().map(RequestDir),
            desk,
            net_rules: crate::probes::net_rules(&policy.network),
            probes,
            out,
            trace: Some(trace),
            running: None,
            workspace: policy.context.workspace.clone(),
            quota: policy.write_quota.zip(layer_upper.clone()).map(|(q, u)| (u, q)),
            scanned: layer_upper,
            attached_at: None,
            quieter: None,
        })
    }

    fn start(&mut self, sb: &Sandbox<'_>, probes: Probes) -> Result<(), SessionError> {
        let mut watch = watch(probes, sb, self.net_rules.clone(), self.policy_monitor.visibility)?;
        crate::text::milestone("session: watch started");
        self.quieter = Some(watch.quieter());
        crate::text::milestone("session: probes watch the sandbox");
        let fuse = Arc::new(Fuse::new(sb.cgroup.to_path_buf()));
        // ORDER: the proxy listens inside the sandbox's namespace before the probes send it
        // anything, and both before release: the agent's first connect already goes there.
        // Events of the components beside the probes (the proxy, grants), numbered and judged
        // by the pipeline; a full queue makes them wait, never drop.
        let (extra_tx, extra_rx) = tokio::sync::mpsc::channel(4096);
        let approvals = approvals::Approvals::new(
            self.meta.sandbox.clone(),
            approvals::Settings {
                timeout: std::time::Duration::from_millis(self.approvals.timeout_ms),
                per_minute: self.approvals.per_minute,
                hook: self.approvals.hook.clone(),
                hook_ids: (self.policy_monitor.hook_uid, self.policy_monitor.hook_gid),
                desk: self.desk.clone(),
                redactor: self.redactor.clone(),
            },
            extra_tx.clone(),
        );
        // The terminal's answers reach the broker through the pipeline's runtime.
        let (answers_tx, answers) = tokio::sync::mpsc::unbounded_channel();
        if let Some(d) = &self.desk {
            d.on_answer(move |id, approve, for_ms| {
                let _ = answers_tx.send((id, approve, for_ms));
            });
        }
        let proxy = if self.network.mode == NetworkMode::Proxy {
            let io = |what| move |source| SessionError::Io { what, source };
            let sockets = proxy::sockets_in(sb.pid)
                .map_err(io("egress proxy: sockets in the sandbox's network namespace"))?;
            watch.proxy(sockets.port).map_err(SessionError::Probes)?;
            let p = proxy::Proxy::start(
                sockets,
                &self.network,
                self.firewall.clone(),
                (extra_tx.clone(), approvals.clone()),
                fuse.clone(),
            )
            .map_err(io("egress proxy: thread"))?;
            Some(p)
        } else {
            None
        };
        let requests = match &self.request_dir {
            Some(d) => {
                let l = requests::listen(&d.0).map_err(|source| SessionError::Io {
                    what: "approvals: the request socket",
                    source,
                })?;
                Some((
                    l,
                    self.approvals.requests == crate::profile::RequestsMode::Approve,
                ))
            }
            None => None,
        };
        let net_changes = proxy.as_ref().map(proxy::Proxy::changes);
        let secrets = self.firewall.as_ref().map(|f| f.gate.clone());
        let has_envelope = !(self.grant_read.is_empty()
            && self.grant_write.is_empty()
            && self.grant_net.is_empty()
            && secrets.as_ref().is_none_or(|g| g.envelope.is_empty()));
        let grants = has_envelope.then(|| {
            grants::Grants::new(
                (
                    self.grant_read.clone(),
                    self.grant_write.clone(),
                    self.grant_net.clone(),
                ),
                (net_changes.clone(), secrets.clone()),
                self.grant_max_ms,
                sb.pid,
                extra_tx.clone(),
            )
        });
        crate::text::milestone("session: proxy, approvals, grants");
        let trace = self.trace.take().expect("the trace is started once");
        let recording = crate::trace::record::Recording::new(trace, sb.cgroup.to_path_buf());
        let tracer = tracer::Tracer::start(recording, fuse.clone()).map_err(|e| SessionError::Io {
            what: "trace writer thread",
            source: e,
        })?;
        crate::text::milestone("session: trace writer started");
        let mut detect = crate::detect::pipeline::Detect::new(
            &self.policy_monitor,
            sb.cgroup.to_path_buf(),
            self.meta.sandbox.clone(),
        )
        .map_err(SessionError::Monitor)?;
        detect.count_start(&self.workspace);
        let started = self.attached_at.unwrap_or_else(std::time::SystemTime::now);
        let supply = detect.runs("supply_chain").then(|| {
            detect.watch_writes(|p| crate::persist::watched(std::path::Path::new(p)));
            supply::SupplyWatch::new(self.workspace.clone(), started, self.scanned.clone())
        });
        crate::text::milestone("session: monitor ready");
        let pipeline = pipeline::Pipeline::start(pipeline::Parts {
            watch,
            meta: self.meta.clone(),
            out: self.out.take(),
            trace: tracer.sender(),
            cgroup: sb.cgroup.to_path_buf(),
            detect,
            fuse: fuse.clone(),
            extra: Some(extra_rx),
            net_changes,
            grants,
            approvals: approvals.clone(),
            terminal_answers: answers,
            requests,
            redactor: self.redactor.clone(),
            gitwatch: gitwatch::GitWatch::new(self.workspace.clone(), started, self.scanned.clone()),
            supply,
            quota: self.quota.clone(),
        })
        .map_err(SessionError::Events)?;
        crate::text::milestone("session: pipeline started");
        self.running = Some(Components {
            fuse,
            tracer,
            pipeline,
            proxy,
            approvals,
        });
        Ok(())
    }

    /// The sandbox is gone (`outcome` says how): drain and stop every component, seal the
    /// trace with the exit status, cordon's notes and any component's failure.
    pub fn finish(mut self, outcome: &Outcome) -> Report {
        // Only a run whose agent started can have left anything.
        let (persistence, build_files) = split_scan(
            self.attached_at
                .map(|t| crate::persist::scan(self.scanned.as_ref().unwrap_or(&self.workspace), t))
                .unwrap_or_default(),
        );
        crate::text::milestone("session: persistence scan");
        let mut run_notes = outcome.notes.clone();
        run_notes.extend(build_files_note(&build_files));
        let Some(c) = self.running.take() else {
            // Never attached (`--no-probes`, or the launch failed before release).
            let trace = self
                .trace
                .take()
                .map(|t| seal_directly(t, outcome.exit_code, run_notes.join("; ")))
                .unwrap_or_else(|| TraceOutcome {
                    path: PathBuf::new(),
                    error: Some("the trace was lost".into()),
                });
            return Report {
                events: None,
                trace,
                failures: vec![],
                persistence,
                build_files,
            };
        };
        // ORDER: the proxy stops first, so the pipeline records the last of its events.
        if let Some(p) = c.proxy {
            p.stop();
        }
        // Questions nobody answered before the agent was gone are recorded as abandoned.
        c.approvals.end_all("the run ended before anyone answered");
        let events = c.pipeline.finish(pipeline::End {
            exit_code: outcome.exit_code,
            notes: run_notes.join("; "),
            after: persistence
                .iter()
                .map(|f| gitwatch::detection(f, "after the run"))
                .collect(),
        });
        crate::text::milestone("session: pipeline drained and stopped (probes released)");
        let failures = c.fuse.failures();
        let mut notes = run_notes;
        notes.extend(failures.iter().cloned());
        // The pipeline sends the seal with its own notes added; if it failed, the session
        // seals with what it knows.
        let sealed_by_pipeline = events.as_ref().is_some_and(|e| e.sealed);
        let trace = c
            .tracer
            .finish((!sealed_by_pipeline).then(|| (outcome.exit_code, notes.join("; "))));
        Report {
            events,
            trace,
            failures: c.fuse.failures(),
            persistence,
            build_files,
        }
    }
}

impl Observer for Session {
    fn attach(&mut self, sb: &Sandbox<'_>) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        self.attached_at = Some(SystemTime::now());
        match self.probes.take() {
            Some(p) => self.start(sb, p).map_err(Into::into),
            None => Ok(()),
        }
    }

    fn quiet(&mut self) -> bool {
        match &mut self.quieter {
            // Not watched by the probes: nothing of init's would be recorded.
            None => true,
            Some(Ok(q)) => q.quiet().is_ok(),
            Some(Err(_)) => false,
        }
    }
}

/// The run's request directory on the host, removed with the session.
struct RequestDir(PathBuf);

impl Drop for RequestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn seal_directly(t: TraceFile, exit_code: i32, notes: String) -> TraceOutcome {
    let path = t.path.clone();
    match t.seal(exit_code, notes) {
        Ok(path) => TraceOutcome { path, error: None },
        Err(e) => TraceOutcome {
            path,
            error: Some(e.to_string()),
        },
    }
}

/// Register the sandbox with the probes: its cgroup id and pid namespace go into their maps,
/// its egress hooks are attached (see `probes::watch`). Public for tests that observe a
/// sandbox with the probes alone (`tests/proxy_redirect.rs`).
pub fn watch(
    probes: Probes,
    sb: &Sandbox<'_>,
    rules: crate::probes::NetRules,
    visibility: crate::profile::monitor::Visibility,
) -> Result<Watch, SessionError> {
    use std::os::unix::fs::MetadataExt;
    let io = |what| move |source| SessionError::Io { what, source };
    let ns = std::fs::metadata(format!("/proc/{}/ns/pid", sb.pid))
        .map_err(io("probes: pid namespace of the sandbox"))?;
    let cg = std::fs::File::from(sb.cgroup_fd.try_clone().map_err(io("probes: cgroup"))?)
        .metadata()
        .map_err(io("probes: cgroup id"))?;
    Watch::start(
        probes,
        sb.cgroup_fd,
        cg.ino(),
        (ns.dev(), ns.ino()),
        rules,
        visibility == crate::profile::monitor::Visibility::Full,
    )
    .map_err(SessionError::Probes)
}
