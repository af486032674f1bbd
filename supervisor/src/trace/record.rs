//! The trace writer inside a run's event pipeline. It sees every event before the bus does
//! (so it never lags and never loses one), and when the trace cannot be written it freezes the
//! sandbox and then kills it: an agent never keeps running unrecorded.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::pb as pb_trace;
use super::writer::TraceFile;
use crate::events::pb::{self, event::Kind};

/// Routine reads are summarised at least this often…
const READS_MS: u64 = 1000;
/// …and whenever this many distinct paths are pending.
const READS_PATHS: usize = 4096;
const PIDS_KEPT: usize = 16;

/// Is `e` a routine read: an open for reading only that succeeded or found no file?
pub fn routine_read(e: &pb::Event) -> bool {
    let Some(Kind::Syscall(s)) = &e.kind else {
        return false;
    };
    let flags = match s.name.as_str() {
        "open" => s.args.get(1),
        "openat" => s.args.get(2),
        _ => None,
    };
    let Some(&flags) = flags else { return false };
    let writes = (libc::O_ACCMODE | libc::O_CREAT | libc::O_TRUNC | libc::O_APPEND) as u64;
    s.completed
        && !s.denied
        && !s.truncated
        && flags & writes == 0
        && (s.ret >= 0 || s.errno == "ENOENT" || s.errno == "ENOTDIR")
}

/// Routine reads waiting to be summarised.
#[derive(Default)]
struct Reads {
    since: Option<Instant>,
    summary: pb_trace::ReadSummary,
    paths: BTreeMap<String, pb_trace::PathReads>,
}

impl Reads {
    fn add(&mut self, e: &pb::Event) {
        let Some(Kind::Syscall(s)) = &e.kind else { return };
        self.since.get_or_insert_with(Instant::now);
        if self.summary.seqs.is_empty() {
            self.summary.first_unix_ns = e.time_unix_ns;
        }
        self.summary.last_unix_ns = e.time_unix_ns;
        self.summary.seqs.push(e.seq);
        let p = self.paths.entry(s.path.clone()).or_default();
        if s.ret >= 0 {
            p.opened += 1;
        } else {
            p.missing += 1;
        }
        if !p.host_pids.contains(&e.host_pid) {
            if p.host_pids.len() < PIDS_KEPT {
                p.host_pids.push(e.host_pid);
            } else {
                p.more_pids = true;
            }
        }
    }

    fn due(&self) -> bool {
        self.paths.len() >= READS_PATHS
            || self
                .since
                .is_some_and(|t| t.elapsed() >= Duration::from_millis(READS_MS))
    }

    fn take(&mut self) -> Option<pb_trace::ReadSummary> {
        if self.summary.seqs.is_empty() {
            return None;
        }
        let mut out = std::mem::take(&mut self.summary);
        out.paths = std::mem::take(&mut self.paths)
            .into_iter()
            .map(|(path, p)| pb_trace::PathReads { path, ..p })
            .collect();
        self.since = None;
        Some(out)
    }
}

pub struct Recording {
    file: Option<TraceFile>,
    path: PathBuf,
    /// The sandbox's cgroup2 directory (`cgroup.freeze`, `cgroup.kill`).
    cgroup: PathBuf,
    error: Option<String>,
    reads: Reads,
}

/// How the trace ended.
#[derive(Debug, Clone)]
pub struct TraceOutcome {
    pub path: PathBuf,
    /// Why the trace could not be completed (then the sandbox was frozen and killed).
    pub error: Option<String>,
}

impl Recording {
    pub fn new(file: TraceFile, cgroup: PathBuf) -> Recording {
        Recording {
            path: file.path.clone(),
            file: Some(file),
            cgroup,
            error: None,
            reads: Reads::default(),
        }
    }

    /// Append `events` (routine reads to the pending summary) and write them out (group
    /// commit). Summaries and checkpoints that fall due are the pipeline tick's (`tick`).
    pub fn record<'a>(&mut self, events: impl IntoIterator<Item = &'a pb::Event>) {
        if let Some(f) = &mut self.file {
            for e in events {
                if routine_read(e) {
                    self.reads.add(e);
                } else {
                    f.chain.event(e);
                }
            }
        }
        self.write();
    }

    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// The pending read summary and a checkpoint when due; write.
    /// Nothing is due on a tick: no summary, checkpoint, write or sync waits.
    pub fn quiet(&self) -> bool {
        self.reads.summary.seqs.is_empty() && self.file.as_ref().is_none_or(TraceFile::quiet)
    }

    pub fn tick(&mut self) {
        if let Some(f) = &mut self.file {
            if self.reads.due() {
                if let Some(r) = self.reads.take() {
                    f.chain.reads(r);
                }
            }
            f.chain.tick();
        }
        self.write();
    }

    fn write(&mut self) {
        let Some(f) = &mut self.file else { return };
        if let Err(e) = f.write() {
            self.fail(e.to_string());
        }
    }

    /// The trace cannot be written: stop the agent at once (freeze), say why, then end it.
    fn fail(&mut self, why: String) {
        if let Some(f) = self.file.take() {
            f.abandon();
        }
        use crate::respond::{apply, Action};
        let freeze = apply(&self.cgroup, Action::Freeze);
        let kill = apply(&self.cgroup, Action::Kill);
        let how = match (freeze, kill) {
            (Ok(_), Ok(_)) => "the sandbox was frozen, then killed".to_string(),
            (f, k) => format!(
                "stopping the sandbox: freeze {}, kill {}",
                f.unwrap_or_else(|e| e.to_string()),
                k.unwrap_or_else(|e| e.to_string())
            ),
        };
        let msg = format!("{why}; {how} so the agent would not run unrecorded");
        crate::text::eprint(&format!("error: {msg}"));
        self.error = Some(msg);
    }

    /// The run is over: seal with the exit status and `detail` (cordon's notes about the run),
    /// or report why the trace is incomplete.
    pub fn finish(mut self, exit_code: i32, detail: String) -> TraceOutcome {
        if let (Some(f), Some(r)) = (&mut self.file, self.reads.take()) {
            f.chain.reads(r);
        }
        if let Some(f) = self.file.take() {
            if let Err(e) = f.seal(exit_code, detail) {
                self.error = Some(e.to_string());
            }
        }
        TraceOutcome {
            path: self.path,
            error: self.error,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(name: &str, flags: i32, ret: i64, errno: &str) -> pb::Event {
        let flags = u64::try_from(flags).unwrap();
        let args = if name == "open" {
            vec![0, flags]
        } else {
            vec![0, 0, flags]
        };
        pb::Event {
            seq: 1,
            host_pid: 9,
            kind: Some(Kind::Syscall(pb::Syscall {
                name: name.into(),
                args,
                ret,
                completed: true,
                denied: errno == "EACCES",
                errno: errno.into(),
                path: "/usr/lib/x.py".into(),
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    #[test]
    fn only_read_only_opens_that_succeeded_or_found_nothing_are_routine() {
        assert!(routine_read(&open(
            "openat",
            libc::O_RDONLY | libc::O_CLOEXEC,
            3,
            ""
        )));
        assert!(routine_read(&open("open", libc::O_RDONLY, 3, "")));
        assert!(routine_read(&open("openat", libc::O_RDONLY, -2, "ENOENT")));
        assert!(!routine_read(&open("openat", libc::O_WRONLY, 3, "")));
        assert!(!routine_read(&open("openat", libc::O_RDWR, 3, "")));
        assert!(!routine_read(&open(
            "openat",
            libc::O_RDONLY | libc::O_CREAT,
            3,
            ""
        )));
        assert!(!routine_read(&open(
            "openat",
            libc::O_RDONLY | libc::O_TRUNC,
            3,
            ""
        )));
        assert!(!routine_read(&open("openat", libc::O_RDONLY, -13, "EACCES")));
        assert!(!routine_read(&open("openat", libc::O_RDONLY, -40, "ELOOP")));
        assert!(!routine_read(&open("openat2", libc::O_RDONLY, 3, "")));
        assert!(!routine_read(&open("execve", 0, 0, "")));
    }

    #[test]
    fn a_summary_keeps_every_path_its_counts_and_the_sequence_numbers() {
        let mut r = Reads::default();
        for (seq, ret, errno) in [(4, 3, ""), (5, -2, "ENOENT"), (7, 3, "")] {
            let mut e = open("openat", libc::O_RDONLY, ret, errno);
            e.seq = seq;
            r.add(&e);
        }
        let s = r.take().unwrap();
        assert_eq!(s.seqs, vec![4, 5, 7]);
        assert_eq!(s.paths.len(), 1);
        assert_eq!((s.paths[0].opened, s.paths[0].missing), (2, 1));
        assert_eq!(s.paths[0].host_pids, vec![9]);
        assert!(r.take().is_none());
    }
}
