//! Just-in-time grants (`cordon grant`): a path of the profile's `[grants] read` envelope,
//! hidden at start, is shown to the running sandbox for a while and hidden again when the
//! grant ends. Landlock already allows the whole envelope (it cannot be widened later); the
//! sandbox's mount namespace decides, changed from outside by a single-threaded helper
//! (`cordon __mask`, which joins that namespace). Nothing outside the envelope can be granted.

use crate::text::Refusal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::events::pb::{self, event::Kind};

/// One grant, as `cordon grants` lists it.
struct Record {
    id: u64,
    /// "read" or "write".
    what: &'static str,
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
    max_ms: u64,
    /// The sandbox's init on the host: its mount namespace is the sandbox's.
    pid: i32,
    events: mpsc::Sender<Kind>,
    records: Mutex<Vec<Record>>,
    last_id: AtomicU64,
}

impl Grants {
    pub fn new(
        envelope: Vec<PathBuf>,
        write_envelope: Vec<PathBuf>,
        max_ms: u64,
        pid: i32,
        events: mpsc::Sender<Kind>,
    ) -> Arc<Self> {
        Arc::new(Self {
            envelope,
            write_envelope,
            max_ms,
            pid,
            events,
            records: Mutex::new(Vec::new()),
            last_id: AtomicU64::new(0),
        })
    }

    fn records(&self) -> std::sync::MutexGuard<'_, Vec<Record>> {
        self.records.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Show `path` for `for_ms`. The answer says what happened, or why not.
    pub async fn grant(
        self: &Arc<Self>,
        write: bool,
        path: &str,
        for_ms: u64,
        reason: &str,
        by: &str,
    ) -> Result<String, Refusal> {
        let path = PathBuf::from(path);
        let (what, envelope) = if write {
            ("write", &self.write_envelope)
        } else {
            ("read", &self.envelope)
        };
        if !envelope.contains(&path) {
            return Err(Refusal::from(format!(
                "{} is not in this sandbox's [grants] {what} envelope ({}); nothing outside it can be granted",
                path.display(),
                if envelope.is_empty() {
                    "empty".to_string()
                } else {
                    envelope
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            )));
        }
        if for_ms == 0 || for_ms > self.max_ms {
            return Err(Refusal::from(format!(
                "--for must be above 0 and at most the profile's grants.max ({} s)",
                self.max_ms / 1000
            )));
        }
        let already = self
            .records()
            .iter()
            .any(|r| r.path == path && r.state == "active");
        if !already {
            mask(self.pid, &path, true).await?;
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
            if write { "writable" } else { "readable" },
            for_ms / 1000
        ))
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
            let still = records.iter().any(|o| o.path == path && o.state == "active");
            (what, path, reason, for_ms, still)
        };
        if !still_shown {
            mask(self.pid, &path, false).await?;
        }
        self.event(id, what, &path, how, by, &reason, for_ms).await;
        Ok(format!("grant {id} {how}: {} hidden again", path.display()))
    }

    /// The grants, one line each.
    pub fn list(&self) -> String {
        let now = Instant::now();
        let records = self.records();
        if records.is_empty() {
            return format!(
                "no grants yet; the envelope: {}",
                self.envelope
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
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

/// Show (`show`) or hide `path` in the mount namespace of `pid`, through `cordon __mask`
/// (joining a mount namespace needs a single-threaded process).
async fn mask(pid: i32, path: &Path, show: bool) -> Result<(), Refusal> {
    let exe = std::env::current_exe().map_err(|e| format!("cordon's own binary: {e}"))?;
    let mut c = tokio::process::Command::new(exe);
    c.arg("__mask").arg(pid.to_string());
    if show {
        c.arg("--show");
    }
    let out = c
        .arg(path)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|e| format!("the mount helper: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Refusal::from(format!(
            "the mount helper failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}
