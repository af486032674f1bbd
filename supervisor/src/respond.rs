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

#[derive(Debug, thiserror::Error)]
pub enum RespondError {
    #[error("{path}: {source}")]
    Write {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the kernel did not report the sandbox {0} within {1} s")]
    Unsettled(&'static str, u64),
}

/// Is the cgroup2 directory `cg` frozen (its `cgroup.events` says `frozen 1`)?
pub fn frozen(cg: &Path) -> bool {
    std::fs::read_to_string(cg.join("cgroup.events")).is_ok_and(|e| is_frozen(&e))
}

fn is_frozen(events: &str) -> bool {
    events.lines().any(|l| l.trim() == "frozen 1")
}

/// Wait until `cgroup.events` says `frozen want`, woken by the kernel's notification on that
/// file (kernfs signals POLLPRI on every change), never by sleeping. False at the deadline.
fn settle(cg: &Path, want: bool, deadline: Instant) -> bool {
    use std::io::{Read as _, Seek as _};
    use std::os::fd::AsRawFd as _;
    let Ok(mut f) = std::fs::File::open(cg.join("cgroup.events")) else {
        return false;
    };
    let mut text = String::new();
    loop {
        text.clear();
        // ORDER: read, then poll: a change after the read wakes the poll.
        if f.rewind().and_then(|()| f.read_to_string(&mut text)).is_err() {
            return false;
        }
        if is_frozen(&text) == want {
            return true;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        let mut pfd = libc::pollfd {
            fd: f.as_raw_fd(),
            events: libc::POLLPRI,
            revents: 0,
        };
        let ms = libc::c_int::try_from(left.as_millis().max(1)).unwrap_or(libc::c_int::MAX);
        // SAFETY: `pfd` is one valid pollfd for an open file we own, and 1 is its count.
        unsafe { libc::poll(&mut pfd, 1, ms) };
    }
}

/// Apply `action` to the cgroup2 directory `cg`; for freeze and thaw, wait (bounded) until the
/// kernel reports the new state. Returns what happened, in words.
pub fn apply(cg: &Path, action: Action) -> Result<String, RespondError> {
    let write = |file: &str, v: &str| {
        std::fs::write(cg.join(file), v).map_err(|source| RespondError::Write {
            path: cg.join(file),
            source,
        })
    };
    match action {
        Action::Kill => write("cgroup.kill", "1").map(|()| "every process killed".into()),
        Action::Freeze | Action::Thaw => {
            let want = action == Action::Freeze;
            let start = Instant::now();
            write("cgroup.freeze", if want { "1" } else { "0" })?;
            if !settle(cg, want, start + SETTLE) {
                return Err(RespondError::Unsettled(
                    if want { "frozen" } else { "thawed" },
                    SETTLE.as_secs(),
                ));
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
