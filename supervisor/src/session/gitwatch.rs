//! The live half of the persistence check: when the agent writes a gitdir's config, hooks or
//! index (wherever the gitdir is, `--separate-git-dir` ones included), that gitdir is
//! inspected shortly after (its content is written after the open the monitor saw), and what
//! would run code later is an `alert` at once — not only in the end-of-run scan.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use crate::events::pb::{self, event::Kind};
use crate::persist::Finding;

/// Quiet time after the last write before a gitdir is inspected (git writes a lock file,
/// then renames it into place).
const SETTLE: Duration = Duration::from_millis(150);

pub struct GitWatch {
    workspace: PathBuf,
    since: SystemTime,
    /// A transactional run's layer (its upper directory): the agent's writes under the
    /// workspace are only there, so gitdirs under the workspace are read in it (and reported
    /// with their path in the layer, as the end-of-run scan of the layer reports them).
    layer: Option<PathBuf>,
    /// Gitdir candidates and the time of their latest write.
    pending: HashMap<PathBuf, Instant>,
    /// What was already reported, so each finding is alerted once.
    reported: BTreeSet<(PathBuf, String, String)>,
}

impl GitWatch {
    pub fn new(workspace: PathBuf, since: SystemTime, layer: Option<PathBuf>) -> Self {
        Self {
            workspace,
            since,
            layer,
            pending: HashMap::new(),
            reported: BTreeSet::new(),
        }
    }

    /// Nothing written waits to be judged.
    pub fn settled(&self) -> bool {
        self.pending.is_empty()
    }

    /// The agent wrote these (possible) gitdirs just now.
    pub fn touched(&mut self, dirs: Vec<String>) {
        let now = Instant::now();
        for d in dirs {
            self.pending.insert(PathBuf::from(d), now);
        }
    }

    /// Inspect the gitdirs whose writes have settled; the new findings as detection events.
    pub fn check(&mut self, now: Instant) -> Vec<Kind> {
        let due: Vec<PathBuf> = self
            .pending
            .iter()
            .filter(|(_, t)| now.duration_since(**t) >= SETTLE)
            .map(|(d, _)| d.clone())
            .collect();
        let mut out = Vec::new();
        for dir in due {
            self.pending.remove(&dir);
            let (ws, dir) = match (&self.layer, dir.strip_prefix(&self.workspace)) {
                (Some(upper), Ok(rel)) => (upper.clone(), upper.join(rel)),
                _ => (self.workspace.clone(), dir),
            };
            for f in crate::persist::scan_gitdir(&ws, &dir, self.since) {
                if self
                    .reported
                    .insert((f.file.clone(), f.key.clone(), f.value_preview.clone()))
                {
                    out.push(detection(&f, "live"));
                }
            }
        }
        out
    }
}

/// A persistence finding as a detection event (exact bytes; text renderings escape them);
/// `window` says when it was found ("live", "after the run").
pub(super) fn detection(f: &Finding, window: &str) -> Kind {
    let key = if f.key.is_empty() {
        String::new()
    } else {
        format!(" {}", f.key)
    };
    Kind::Detection(pb::Detection {
        rule: "persistence".into(),
        summary: format!(
            "{}: {}{key}: {} (inspect: {})",
            f.vector,
            f.file.to_string_lossy(),
            f.value_preview,
            f.inspect
        ),
        response: "alert".into(),
        window: window.into(),
        offending_time_unix_ns: crate::events::unix_now_ns(),
        ..Default::default()
    })
}
