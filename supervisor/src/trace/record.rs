//! The trace writer inside a run's event pipeline. It sees every event before the bus does
//! (so it never lags and never loses one), and when the trace cannot be written it freezes the
//! sandbox and then kills it: an agent never keeps running unrecorded.

use std::path::PathBuf;

use super::writer::TraceFile;
use crate::events::pb;

pub struct Recording {
    file: Option<TraceFile>,
    path: PathBuf,
    /// The sandbox's cgroup2 directory (`cgroup.freeze`, `cgroup.kill`).
    cgroup: PathBuf,
    error: Option<String>,
}

/// How the trace ended.
#[derive(Debug, Clone)]
pub struct TraceOutcome {
    pub path: PathBuf,
    pub records: u64,
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
        }
    }

    /// Append `events` and write them out (group commit).
    pub fn record(&mut self, events: &[pb::Event]) {
        if let Some(f) = &mut self.file {
            for e in events {
                f.chain.event(e);
            }
        }
        self.write();
    }

    /// A checkpoint when one is due; write.
    pub fn tick(&mut self) {
        if let Some(f) = &mut self.file {
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
        let freeze = std::fs::write(self.cgroup.join("cgroup.freeze"), "1");
        let kill = std::fs::write(self.cgroup.join("cgroup.kill"), "1");
        let how = match (freeze, kill) {
            (Ok(()), Ok(())) => "the sandbox was frozen, then killed".to_string(),
            (f, k) => format!(
                "stopping the sandbox: freeze {}, kill {}",
                f.map_or_else(|e| e.to_string(), |()| "ok".into()),
                k.map_or_else(|e| e.to_string(), |()| "ok".into())
            ),
        };
        let msg = format!("{why}; {how} so the agent would not run unrecorded");
        eprintln!("cordon: error: {msg}");
        self.error = Some(msg);
    }

    /// The run is over: seal with the exit status (or report why the trace is incomplete).
    pub fn finish(mut self, exit_code: i32) -> TraceOutcome {
        let records = self.file.as_ref().map_or(0, |f| f.chain.records() + 2);
        if let Some(f) = self.file.take() {
            if let Err(e) = f.seal(exit_code, String::new()) {
                self.error = Some(e.to_string());
            }
        }
        TraceOutcome {
            path: self.path,
            records,
            error: self.error,
        }
    }
}
