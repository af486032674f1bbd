//! Fail closed: when a session component panics or fails for good, the whole sandbox is
//! stopped at once (freeze, then kill) and the reason is kept for the trace's seal and the
//! person at the terminal. An agent never keeps running unwatched or unrecorded.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::Mutex;

use crate::respond::{apply, Action};

pub struct Fuse {
    /// The sandbox's cgroup2 directory.
    cgroup: PathBuf,
    failures: Mutex<Vec<String>>,
}

impl Fuse {
    pub fn new(cgroup: PathBuf) -> Self {
        Self {
            cgroup,
            failures: Mutex::new(Vec::new()),
        }
    }

    /// `component` cannot go on: stop the sandbox and say why.
    pub fn blow(&self, component: &str, why: &str) {
        // ORDER: freeze first so every process stops at the same instant, then kill.
        let freeze = apply(&self.cgroup, Action::Freeze);
        let kill = apply(&self.cgroup, Action::Kill);
        let how = match (freeze, kill) {
            (_, Ok(_)) => "the sandbox was frozen and killed".to_string(),
            (_, Err(e)) => format!("killing the sandbox failed too: {e}"),
        };
        let msg =
            format!("the session's {component} failed ({why}): {how} so the agent would not run unwatched");
        crate::text::eprint(&format!("error: {msg}"));
        self.failures.lock().unwrap_or_else(|p| p.into_inner()).push(msg);
    }

    pub fn failures(&self) -> Vec<String> {
        self.failures.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Run a component's body; a panic in it blows the fuse (None is returned).
    pub fn guard<T>(&self, component: &str, body: impl FnOnce() -> T) -> Option<T> {
        match catch_unwind(AssertUnwindSafe(body)) {
            Ok(v) => Some(v),
            Err(payload) => {
                let why = payload
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic".into());
                self.blow(component, &format!("panic: {why}"));
                None
            }
        }
    }
}

/// Tests inject faults into a session component with `CORDON_TEST_FAULT=<component>` (debug
/// builds only): the component panics once it has started work.
pub fn injected(component: &str) -> bool {
    cfg!(debug_assertions) && std::env::var("CORDON_TEST_FAULT").is_ok_and(|v| v == component)
}
