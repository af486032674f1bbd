//! Acting on a whole running sandbox through its cgroup: freeze (the cgroup freezer stops
//! every process at once), thaw, kill. Used by `cordon freeze|thaw|kill` (through the
//! sandbox's socket, so the action is recorded as an event) and by the trace writer when the
//! trace cannot be written.

use std::path::Path;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Freeze,
    Thaw,
    Kill,
}

impl Action {
    pub fn parse(s: &str) -> Option<Action> {
        match s {
            "freeze" => Some(Action::Freeze),
            "thaw" => Some(Action::Thaw),
            "kill" => Some(Action::Kill),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Action::Freeze => "freeze",
            Action::Thaw => "thaw",
            Action::Kill => "kill",
        }
    }
}

/// How long a freeze may take to complete before it is reported as not done.
const SETTLE: Duration = Duration::from_secs(2);

/// Is the cgroup2 directory `cg` frozen (its `cgroup.events` says `frozen 1`)?
pub fn frozen(cg: &Path) -> bool {
    std::fs::read_to_string(cg.join("cgroup.events")).is_ok_and(|e| e.lines().any(|l| l.trim() == "frozen 1"))
}

/// Apply `action` to the cgroup2 directory `cg`; for freeze and thaw, wait (bounded) until the
/// kernel reports the new state. Returns what happened, in words.
pub fn apply(cg: &Path, action: Action) -> Result<String, String> {
    let write = |file: &str, v: &str| {
        std::fs::write(cg.join(file), v).map_err(|e| format!("{}: {e}", cg.join(file).display()))
    };
    match action {
        Action::Kill => write("cgroup.kill", "1").map(|()| "every process killed".into()),
        Action::Freeze | Action::Thaw => {
            let want = action == Action::Freeze;
            write("cgroup.freeze", if want { "1" } else { "0" })?;
            let start = Instant::now();
            while frozen(cg) != want {
                if start.elapsed() > SETTLE {
                    return Err(format!(
                        "the kernel did not report the sandbox {} within {} s",
                        if want { "frozen" } else { "thawed" },
                        SETTLE.as_secs()
                    ));
                }
                std::thread::sleep(Duration::from_micros(100));
            }
            Ok(format!(
                "{} in {:.1} ms",
                if want {
                    "every process stopped"
                } else {
                    "running again"
                },
                start.elapsed().as_secs_f64() * 1e3
            ))
        }
    }
}
