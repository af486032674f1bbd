//! Rules that count distinct things over the whole run, beside the rates: what an agent that
//! stays under every per-window rate still adds up to.
//! - `deleted`: distinct files deleted under its paths; over `limit`, or over `share` of the
//!   files the workspace held at the start (a small project deleted slowly never reaches an
//!   absolute limit);
//! - `rewritten`: the same for files truncated or replaced by a rename (every file of the
//!   project rewritten in place — encrypted, emptied — deletes nothing);
//! - `breadth`: distinct directories listed under its paths (your home, outside the
//!   workspace): a recursive search — `grep -r`, `find` — lists thousands; tools list a few;
//! - `secrets`: secret-bearing files (`.env`, keys, another process's environment) read from
//!   more than `limit` distinct directories: one app reads its own `.env` files; harvesting
//!   reads them wherever they are.

use std::collections::HashSet;
use std::hash::{BuildHasher as _, RandomState};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use super::{Detector, Finding};
use crate::events::pb;
use crate::glob;
use crate::profile::monitor::Rule;

/// Files at the start below which the share alone never fires (deleting 3 of 4 files is a
/// refactor as often as not); the absolute limit still counts them.
const SHARE_FLOOR: u64 = 10;
/// The walk that counts the workspace's files at the start: entries read, wall time.
const WALK_ENTRIES: usize = 400_000;
const WALK_TIME: Duration = Duration::from_secs(5);

/// Distinct keys counted over the run, and whether the rule fired (it fires once).
pub(super) struct Tally {
    pub rule: Rule,
    pub set: glob::Set,
    seen: HashSet<String>,
    fired: bool,
}

impl Tally {
    pub fn new(rule: &Rule) -> Self {
        Self {
            rule: rule.clone(),
            set: glob::Set::new(rule.patterns.as_deref().unwrap_or_default()),
            seen: HashSet::new(),
            fired: false,
        }
    }

    /// Count `key`; the count when it goes over the limit (once).
    fn add(&mut self, key: String) -> Option<usize> {
        if self.fired {
            return None;
        }
        self.seen.insert(key);
        let n = self.seen.len();
        (n as u64 > self.rule.limit).then(|| {
            self.fired = true;
            n
        })
    }
}

/// The files under the `deleted` rule's paths when the run started (hashes of their paths),
/// read on a thread while the agent starts.
pub struct StartFiles {
    hasher: RandomState,
    pub(super) files: HashSet<u64>,
    /// The walk stopped at a bound: `files` is a lower bound (the share fires sooner).
    pub partial: bool,
}

impl StartFiles {
    fn key(&self, path: &str) -> u64 {
        self.hasher.hash_one(path)
    }

    /// Count the files under `root` that `set` matches, not following symlinks, not
    /// descending into directories nothing beneath which it matches. A file modified at or
    /// after `since` (the run's start) is the run's own, not the start's: the walk runs beside
    /// the agent and may reach a directory after the agent wrote in it.
    pub fn read(root: &Path, set: &glob::Set, since: std::time::SystemTime) -> Self {
        let hasher = RandomState::new();
        let mut files = HashSet::new();
        let deadline = Instant::now() + WALK_TIME;
        let mut budget = WALK_ENTRIES;
        let mut partial = false;
        let mut stack: Vec<PathBuf> = vec![root.to_path_buf()];
        'walk: while let Some(dir) = stack.pop() {
            let Ok(rd) = std::fs::read_dir(&dir) else { continue };
            for entry in rd.flatten() {
                if budget == 0 || Instant::now() >= deadline {
                    partial = true;
                    break 'walk;
                }
                budget -= 1;
                let path = entry.path();
                let Some(s) = path.to_str() else { continue };
                match entry.file_type() {
                    Ok(t) if t.is_dir() => {
                        if set.matches(&format!("{s}/_")).is_some() {
                            stack.push(path);
                        }
                    }
                    Ok(_) if set.matches(s).is_some() => {
                        let before = entry
                            .metadata()
                            .and_then(|m| m.modified())
                            .is_ok_and(|t| t < since);
                        if before {
                            files.insert(hasher.hash_one(s));
                        }
                    }
                    _ => {}
                }
            }
        }
        Self {
            hasher,
            files,
            partial,
        }
    }
}

/// `deleted` and `rewritten`: all distinct files, and those the start held.
pub(super) struct Share {
    pub tally: Tally,
    /// Filled by the thread that reads the workspace at the start.
    pub start: Arc<OnceLock<StartFiles>>,
    /// Paths counted before the start's files were known.
    deleted: Vec<String>,
    /// Of them, files the start held (counted once the start is known).
    of_start: HashSet<u64>,
    share_fired: bool,
}

impl Share {
    pub fn new(rule: &Rule) -> Self {
        Self {
            tally: Tally::new(rule),
            start: Arc::new(OnceLock::new()),
            deleted: Vec::new(),
            of_start: HashSet::new(),
            share_fired: false,
        }
    }

    /// The start's files deleted so far, and the share's threshold, once it goes over.
    fn share_over(&mut self, path: &str) -> Option<(usize, u64, &StartFiles)> {
        let share = self.tally.rule.share;
        if share <= 0.0 || self.share_fired {
            return None;
        }
        // Paths are kept only until the start's files are known, then counted as they come.
        let Some(start) = self.start.get() else {
            self.deleted.push(path.to_string());
            return None;
        };
        for p in std::mem::take(&mut self.deleted)
            .iter()
            .map(String::as_str)
            .chain([path])
        {
            let k = start.key(p);
            if start.files.contains(&k) {
                self.of_start.insert(k);
            }
        }
        let total = start.files.len() as u64;
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let threshold = ((total as f64 * share).ceil() as u64).max(SHARE_FLOOR);
        let n = self.of_start.len();
        if total < SHARE_FLOOR || (n as u64) < threshold {
            return None;
        }
        self.share_fired = true;
        Some((n, total, start))
    }
}

impl Detector {
    /// Where the `deleted` and `rewritten` rules learn the workspace's files at the start
    /// (the session reads them on a thread), for those with a share.
    pub fn start_files(&self) -> Vec<(Arc<OnceLock<StartFiles>>, glob::Set)> {
        [&self.deleted, &self.rewritten]
            .into_iter()
            .flatten()
            .filter(|d| d.tally.rule.share > 0.0)
            .map(|d| (d.start.clone(), d.tally.set.clone()))
            .collect()
    }

    /// One file deleted: counted once per path under the `deleted` rule's paths.
    pub(super) fn deleted_one(&mut self, e: &pb::Event, dirfd: i64, path: &str, found: &mut Vec<Finding>) {
        self.share_one(e, dirfd, path, "deleted", found);
    }

    /// One file truncated or replaced: counted once per path under `rewritten`'s paths.
    pub(super) fn rewritten_one(&mut self, e: &pb::Event, dirfd: i64, path: &str, found: &mut Vec<Finding>) {
        self.share_one(e, dirfd, path, "rewritten", found);
    }

    fn share_one(&mut self, e: &pb::Event, dirfd: i64, path: &str, verb: &str, found: &mut Vec<Finding>) {
        let rule = if verb == "deleted" {
            &mut self.deleted
        } else {
            &mut self.rewritten
        };
        let Some(d) = rule.as_mut() else { return };
        let Some((_, abs)) = Self::path_hit(&mut self.cwds, &d.tally.set, e, dirfd, path) else {
            return;
        };
        let limit = d.tally.rule.limit;
        let found_now = if let Some(n) = d.tally.add(abs.clone()) {
            let summary =
                format!("{n} files {verb} over the run, over the budget of {limit} (the last: {abs})");
            Some((d.tally.rule.clone(), summary, n, limit))
        } else if let Some((n, total, start)) = d.share_over(&abs) {
            let at_least = if start.partial { "at least " } else { "" };
            let share = d.tally.rule.share;
            let summary = format!(
                "{n} of the {at_least}{total} files the workspace held at the start {verb} over the run, reaching the share of {:.0}% (the last: {abs})",
                share * 100.0
            );
            #[allow(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                clippy::cast_precision_loss
            )]
            let threshold = (total as f64 * share).ceil() as u64;
            Some((d.tally.rule.clone(), summary, n, threshold))
        } else {
            None
        };
        if let Some((rule, summary, n, threshold)) = found_now {
            found.push(self.whole_run(&rule, e, summary, n, threshold));
        }
    }

    /// A directory opened for listing: counted once per path under `breadth`'s paths.
    pub(super) fn listed(&mut self, e: &pb::Event, abs: Option<&str>, path: &str, found: &mut Vec<Finding>) {
        let Some(t) = self.breadth.as_mut() else { return };
        let Some((_, abs)) = super::set_hit(&t.set, abs, path) else {
            return;
        };
        if let Some(n) = t.add(abs.clone()) {
            let limit = t.rule.limit;
            let rule = t.rule.clone();
            let summary = format!(
                "{n} distinct directories listed outside the workspace over the run, over the budget of {limit} (a recursive search; the last: {abs})"
            );
            found.push(self.whole_run(&rule, e, summary, n, limit));
        }
    }

    /// A secret-bearing file read: its directory counted once.
    pub(super) fn secret_read(
        &mut self,
        e: &pb::Event,
        abs: Option<&str>,
        path: &str,
        found: &mut Vec<Finding>,
    ) {
        let Some(t) = self.secrets.as_mut() else { return };
        let Some((pat, abs)) = super::set_hit(&t.set, abs, path) else {
            return;
        };
        // Processes' environments are one place, whichever pid: `ps` reads them all (Claude
        // Code runs it), and a harvest of them is one source among the .env files it reads.
        let dir = if abs.starts_with("/proc/") {
            "/proc"
        } else {
            abs.rsplit_once('/')
                .map_or("/", |(d, _)| if d.is_empty() { "/" } else { d })
        };
        if let Some(n) = t.add(dir.to_string()) {
            let limit = t.rule.limit;
            let rule = t.rule.clone();
            let summary = format!(
                "secret-bearing files read from {n} distinct directories over the run, over the budget of {limit} (harvesting; the last: {abs}, pattern {pat})"
            );
            found.push(self.whole_run(&rule, e, summary, n, limit));
        }
    }

    fn whole_run(&self, rule: &Rule, e: &pb::Event, summary: String, n: usize, limit: u64) -> Finding {
        let mut f = self.instant(rule, e, summary);
        f.score = n as f64;
        f.threshold = limit as f64;
        "whole run".clone_into(&mut f.window);
        f
    }
}
