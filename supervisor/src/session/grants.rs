//! Just-in-time grants (`cordon grant`): a path of the profile's `[grants] read` envelope,
//! hidden at start, is shown to the running sandbox for a while and hidden again when the
//! grant ends. Landlock already allows the whole envelope (it cannot be widened later); the
//! sandbox's mount namespace decides, changed from outside by a single-threaded helper
//! (`sys::in_mount_ns`: a child sharing cordon's memory joins that namespace). A `[grants] net` name is a live allow rule
//! of the egress proxy for the grant's time. Nothing outside the envelope can be granted.

use crate::text::Refusal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::proxy::firewall::SecretGate;
use super::proxy::Change;
use crate::events::pb::{self, event::Kind};
use crate::profile::egress::Egress;

/// Does the envelope's `e` cover the asked-for `asked`?
fn covers(e: &Egress, asked: &Egress) -> bool {
    match (e, asked) {
        (Egress::Name(e), Egress::Name(a)) => e.covers(a),
        (Egress::Address(e), Egress::Address(a)) => e == a,
        _ => false,
    }
}

/// A piece of the envelope, as `cordon grant` names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Read(String),
    Write(String),
    /// NAME[:PORT] or *.SUFFIX[:PORT].
    Net(String),
    /// A credential of `[grants] secrets`, by its variable.
    Secret(String),
}

impl Piece {
    pub fn what(&self) -> &'static str {
        match self {
            Piece::Read(_) => "read",
            Piece::Write(_) => "write",
            Piece::Net(_) => "net",
            Piece::Secret(_) => "secret",
        }
    }

    pub fn target(&self) -> &str {
        match self {
            Piece::Read(t) | Piece::Write(t) | Piece::Net(t) | Piece::Secret(t) => t,
        }
    }
}

/// One grant, as `cordon grants` lists it.
struct Record {
    id: u64,
    /// "read", "write" or "net".
    what: &'static str,
    /// The path shown, or the rule allowed (as text).
    path: PathBuf,
    by: String,
    reason: String,
    for_ms: u64,
    until: Instant,
    /// "active", "expired", "revoked".
    state: &'static str,
}

/// The grants of one sandbox.
pub struct Grants {
    envelope: Vec<PathBuf>,
    write_envelope: Vec<PathBuf>,
    net_envelope: Vec<Egress>,
    /// The egress proxy's live rules (a `proxy` sandbox).
    net_changes: Option<mpsc::Sender<Change>>,
    /// The firewall's credentials that go into requests only while granted.
    secrets: Option<Arc<SecretGate>>,
    max_ms: u64,
    /// The sandbox's mount namespace, opened at start (not looked up by pid at each grant: a
    /// pid can be reused once the sandbox is gone).
    mount_ns: Option<Arc<std::fs::File>>,
    events: mpsc::Sender<Kind>,
    records: Mutex<Vec<Record>>,
    last_id: AtomicU64,
}

impl Grants {
    pub fn new(
        (envelope, write_envelope, net_envelope): (Vec<PathBuf>, Vec<PathBuf>, Vec<Egress>),
        (net_changes, secrets): (Option<mpsc::Sender<Change>>, Option<Arc<SecretGate>>),
        max_ms: u64,
        pid: i32,
        events: mpsc::Sender<Kind>,
    ) -> Arc<Self> {
        Arc::new(Self {
            envelope,
            write_envelope,
            net_envelope,
            net_changes,
            secrets,
            max_ms,
            mount_ns: std::fs::File::open(format!("/proc/{pid}/ns/mnt"))
                .ok()
                .map(Arc::new),
            events,
            records: Mutex::new(Vec::new()),
            last_id: AtomicU64::new(0),
        })
    }

    fn records(&self) -> std::sync::MutexGuard<'_, Vec<Record>> {
        self.records.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Is `piece` inside the envelope? The refusal says what the envelope holds.
    pub fn check(&self, piece: &Piece) -> Result<(), Refusal> {
        let (inside, listed): (bool, Vec<String>) = match piece {
            Piece::Read(p) | Piece::Write(p) => {
                let envelope = if matches!(piece, Piece::Write(_)) {
                    &self.write_envelope
                } else {
                    &self.envelope
                };
                (
                    envelope.contains(&PathBuf::from(p)),
                    envelope.iter().map(|p| p.display().to_string()).collect(),
                )
            }
            Piece::Net(n) => {
                let rule = crate::profile::egress::parse(n)
                    .map_err(|e| Refusal::from(format!("--net {n:?}: {e}")))?;
                (
                    self.net_envelope.iter().any(|e| covers(e, &rule)),
                    self.net_envelope.iter().map(ToString::to_string).collect(),
                )
            }
            Piece::Secret(n) => {
                let envelope = self
                    .secrets
                    .as_ref()
                    .map(|g| g.envelope.clone())
                    .unwrap_or_default();
                (envelope.contains(n), envelope)
            }
        };
        if inside {
            return Ok(());
        }
        Err(Refusal::from(format!(
            "{} is not in this sandbox's [grants] {} envelope ({}); nothing outside it can be granted",
            piece.target(),
            piece.what(),
            if listed.is_empty() {
                "empty".to_string()
            } else {
                listed.join(", ")
            }
        )))
    }

    /// The longest a grant may last.
    pub fn max_ms(&self) -> u64 {
        self.max_ms
    }

    /// Grant `piece` for `for_ms`. The answer says what happened, or why not.
    pub async fn grant(
        self: &Arc<Self>,
        piece: &Piece,
        for_ms: u64,
        reason: &str,
        by: &str,
    ) -> Result<String, Refusal> {
        self.check(piece)?;
        let what = piece.what();
        let path = PathBuf::from(piece.target());
        if for_ms == 0 || for_ms > self.max_ms {
            return Err(Refusal::from(format!(
                "--for must be above 0 and at most the profile's grants.max ({} s)",
                self.max_ms / 1000
            )));
        }
        let already = self
            .records()
            .iter()
            .any(|r| r.path == path && r.what == what && r.state == "active");
        match piece {
            Piece::Net(n) => self.net(n, for_ms, by, false).await?,
            Piece::Secret(n) => {
                if let Some(g) = &self.secrets {
                    g.grant(n, Instant::now() + Duration::from_millis(for_ms));
                }
            }
            _ if already => {}
            _ => mask(self.mount_ns.clone(), &path, true).await?,
        }
        let id = self.last_id.fetch_add(1, Ordering::Relaxed) + 1;
        self.records().push(Record {
            id,
            what,
            path: path.clone(),
            by: by.into(),
            reason: reason.into(),
            for_ms,
            until: Instant::now() + Duration::from_millis(for_ms),
            state: "active",
        });
        self.event(id, what, &path, "granted", by, reason, for_ms).await;
        let me = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(for_ms)).await;
            let _ = me.end(id, "expired", "cordon").await;
        });
        Ok(format!(
            "grant {id}: {} {} for {} s",
            path.display(),
            match piece {
                Piece::Read(_) => "readable",
                Piece::Write(_) => "writable",
                Piece::Net(_) => "reachable",
                Piece::Secret(_) => "put in its host's requests",
            },
            for_ms / 1000
        ))
    }

    /// Allow (or withdraw) `name` in the proxy's live rules.
    async fn net(&self, name: &str, for_ms: u64, by: &str, withdraw: bool) -> Result<(), Refusal> {
        let Some(tx) = &self.net_changes else {
            return Err(Refusal::from("this sandbox's network.mode is not \"proxy\""));
        };
        let rule = crate::profile::egress::parse(name).map_err(|e| Refusal::from(e.to_string()))?;
        let change = Change {
            allow: true,
            rule,
            lasts: Some(Duration::from_millis(for_ms)),
            by: by.into(),
            withdraw,
        };
        tx.send(change)
            .await
            .map_err(|_| Refusal::from("the run is ending"))
    }

    /// End grant `id` ("expired" by its timer, "revoked" by a person). The path is hidden
    /// again unless another active grant still shows it.
    pub async fn end(&self, id: u64, how: &'static str, by: &str) -> Result<String, Refusal> {
        let (what, path, reason, for_ms, still_shown) = {
            let mut records = self.records();
            let Some(r) = records.iter_mut().find(|r| r.id == id) else {
                return Err(Refusal::from(format!("no grant {id} in this sandbox")));
            };
            if r.state != "active" {
                return Err(Refusal::from(format!("grant {id} already {}", r.state)));
            }
            r.state = how;
            let (what, path, reason, for_ms) = (r.what, r.path.clone(), r.reason.clone(), r.for_ms);
            let still = records
                .iter()
                .any(|o| o.path == path && o.what == what && o.state == "active");
            (what, path, reason, for_ms, still)
        };
        let target = path.display().to_string();
        match what {
            // Its live rule lapses by itself at the same time; a revocation withdraws it.
            "net" if how == "expired" || still_shown => {}
            "net" => self.net(&target, 0, by, true).await?,
            "secret" if still_shown => {}
            "secret" => {
                if let Some(g) = &self.secrets {
                    g.close(&target);
                }
            }
            _ if still_shown => {}
            _ => mask(self.mount_ns.clone(), &path, false).await?,
        }
        self.event(id, what, &path, how, by, &reason, for_ms).await;
        if what == "net" || what == "secret" {
            Ok(format!("grant {id} {how}: {target} refused again"))
        } else {
            Ok(format!("grant {id} {how}: {target} hidden again"))
        }
    }

    /// The grants, one line each.
    pub fn list(&self) -> String {
        let now = Instant::now();
        let records = self.records();
        if records.is_empty() {
            let all: Vec<String> = self
                .envelope
                .iter()
                .chain(&self.write_envelope)
                .map(|p| p.display().to_string())
                .chain(self.net_envelope.iter().map(ToString::to_string))
                .chain(self.secrets.iter().flat_map(|g| g.envelope.iter().cloned()))
                .collect();
            return format!("no grants yet; the envelope: {}", all.join(", "));
        }
        records
            .iter()
            .map(|r| {
                let left = match r.state {
                    "active" => format!("{} s left", r.until.saturating_duration_since(now).as_secs()),
                    _ => String::new(),
                };
                format!(
                    "{:>3}  {:<8} {} {}  by {}  for {} s {}{}",
                    r.id,
                    r.state,
                    r.what,
                    r.path.display(),
                    r.by,
                    r.for_ms / 1000,
                    left,
                    if r.reason.is_empty() {
                        String::new()
                    } else {
                        format!("  ({})", r.reason)
                    }
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[allow(clippy::too_many_arguments)]
    async fn event(
        &self,
        id: u64,
        what: &str,
        path: &Path,
        state: &str,
        by: &str,
        reason: &str,
        for_ms: u64,
    ) {
        let _ = self
            .events
            .send(Kind::Grant(pb::Grant {
                id,
                what: what.into(),
                target: path.display().to_string(),
                state: state.into(),
                by: by.into(),
                reason: reason.into(),
                for_ms,
            }))
            .await;
    }
}

/// Show (`show`) or hide `path` in the sandbox's mount namespace `ns` (`sys::in_mount_ns`: a
/// vfork-like child joins it; the path resolves as the agent sees it).
async fn mask(ns: Option<Arc<std::fs::File>>, path: &Path, show: bool) -> Result<(), Refusal> {
    let Some(ns) = ns else {
        return Err(Refusal::from(
            "the sandbox's mount namespace could not be opened when it started",
        ));
    };
    let path = path.to_path_buf();
    let done = tokio::task::spawn_blocking(move || {
        crate::sys::in_mount_ns(&ns, &mut || {
            if show {
                crate::launch::mounts::unmask(&path)
            } else {
                crate::launch::mounts::mask(&path)
            }
        })
    })
    .await
    .map_err(|e| Refusal::from(format!("the mount helper: {e}")))?;
    done.map_err(|e| Refusal::from(format!("the mount helper failed: {e}")))
}
