//! The `[monitor]` section of a profile: which detectors watch the run and what each does
//! when it fires. One sub-table per rule; a profile that extends another replaces only the
//! keys it sets (`[monitor.execs]\nresponse = "kill"` keeps the inherited limit and window).

use serde::{Deserialize, Serialize};

use super::units::{Bytes, Millis};
use super::{ProfileError, RawProfile};

/// What cordon does when a rule fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Response {
    /// The rule does not run.
    Off,
    /// A `detection` event (in the stream and the trace), nothing else.
    Log,
    /// The event, a line on cordon's stderr and the hook, if any. The agent goes on.
    Alert,
    /// As alert, then the whole sandbox is frozen (cgroup freezer) until `cordon thaw` or
    /// `cordon kill` decides — or `frozen_limit` passes, and it is killed.
    Freeze,
    /// As alert, then every process of the sandbox is killed.
    Kill,
    /// Egress only: as alert, then every later connect and send to an address is refused.
    Deny,
    /// As freeze, and a question to a person (`cordon pending`, the approvals hook): approve
    /// thaws the sandbox, deny or no answer within `approvals.timeout` kills it.
    Ask,
    /// As kill, then the run's transactional workspace layer is discarded: the real
    /// workspace stays as it was (a direct run refuses to start with it).
    Rollback,
}

impl Response {
    pub fn name(self) -> &'static str {
        match self {
            Response::Off => "off",
            Response::Log => "log",
            Response::Alert => "alert",
            Response::Freeze => "freeze",
            Response::Kill => "kill",
            Response::Deny => "deny",
            Response::Rollback => "rollback",
            Response::Ask => "ask",
        }
    }
}

/// One rule as written: the keys that apply depend on the rule (checked when resolved).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    pub response: Option<Response>,
    /// Events per window (rates), bytes (written), or score × 1000 (baseline).
    pub limit: Option<Bytes>,
    pub window: Option<Millis>,
    /// Path patterns (sensitive_read, sensitive_write), programs (exec), syscall names
    /// (syscalls).
    pub paths: Option<Vec<String>>,
    pub allow: Option<Vec<String>>,
    pub names: Option<Vec<String>>,
    /// The baseline file (baseline).
    pub file: Option<String>,
    /// The score above which a window is anomalous (baseline), in (0, 1].
    pub threshold: Option<f64>,
    /// deleted: also fire once this share of the files the workspace held at the start,
    /// in (0, 1], is deleted.
    pub share: Option<f64>,
}

/// What the probes record of a sandbox (`[monitor] visibility`). Enforcement (mounts,
/// landlock, seccomp, limits, egress hooks) is the same at every level; only what is seen
/// and recorded differs, and what it costs (docs/monitor.md, "Visibility").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Visibility {
    /// Every syscall counted; files, programs with their arguments, sockets, credentials and
    /// namespaces recorded with arguments and results; every refused call recorded. While
    /// such a sandbox runs, every process on the host takes the kernel's traced-syscall path.
    #[default]
    Full,
    /// Processes (fork, exec with the program's path and arguments, exit) and network egress (every
    /// connect, send and bind, allowed or refused, and the traffic per remote) only: no
    /// per-syscall cost in the sandbox and none on the host. The rules that read syscall
    /// records (`SYSCALL_RULES`) cannot run.
    Process,
}

impl Visibility {
    pub fn name(self) -> &'static str {
        match self {
            Visibility::Full => "full",
            Visibility::Process => "process",
        }
    }
}

/// The rules that read syscall records: they need `visibility = "full"`.
pub const SYSCALL_RULES: &[&str] = &[
    "sensitive_read",
    "sensitive_write",
    "syscalls",
    "deletions",
    "deleted",
    "rewritten",
    "breadth",
    "secrets",
    "denials",
    "repeated_denials",
    "written",
    "baseline",
];

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMonitor {
    /// What the probes record (full, process).
    pub visibility: Option<Visibility>,
    /// A command run (as the invoking user) for every alert, with the detection as one JSON
    /// line on its stdin.
    pub hook: Option<Vec<String>>,
    /// How long a sandbox a rule froze may stay frozen before it is killed.
    pub frozen_limit: Option<Millis>,
    pub sensitive_read: Option<RawRule>,
    pub sensitive_write: Option<RawRule>,
    pub egress: Option<RawRule>,
    pub exfiltration: Option<RawRule>,
    pub exec: Option<RawRule>,
    pub syscalls: Option<RawRule>,
    pub connects: Option<RawRule>,
    pub execs: Option<RawRule>,
    pub deletions: Option<RawRule>,
    pub deleted: Option<RawRule>,
    pub rewritten: Option<RawRule>,
    pub breadth: Option<RawRule>,
    pub secrets: Option<RawRule>,
    pub supply_chain: Option<RawRule>,
    pub denials: Option<RawRule>,
    pub repeated_denials: Option<RawRule>,
    pub processes: Option<RawRule>,
    pub written: Option<RawRule>,
    pub baseline: Option<RawRule>,
}

/// Which keys a rule takes besides `response`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// `paths` (patterns).
    Paths,
    /// Nothing else.
    Plain,
    /// `allow` (program patterns).
    Allow,
    /// `names` (syscall names).
    Names,
    /// `limit` (count) and `window`.
    Rate,
    /// `limit` (bytes).
    Budget,
    /// `limit` (a count over the whole run) and `paths`.
    Tally,
    /// `file`, `threshold`.
    Baseline,
}

/// Every rule, in the order they are checked and shown.
pub const RULES: &[(&str, &str)] = &[
    ("sensitive_read", "reads of credential and secret files"),
    ("sensitive_write", "writes to persistence points and logs"),
    (
        "egress",
        "connects and sends to destinations outside the allowlist, even refused",
    ),
    (
        "exfiltration",
        "a credential's placeholder sent where its secret does not go (refused by the proxy)",
    ),
    (
        "exec",
        "programs run from outside the allowed places, even refused",
    ),
    ("syscalls", "any use of the listed syscalls"),
    ("connects", "connects per window"),
    ("execs", "programs started per window"),
    ("deletions", "files and directories deleted per window"),
    (
        "deleted",
        "distinct files deleted under the paths over the whole run (slow deletion stays under any rate)",
    ),
    (
        "rewritten",
        "distinct files truncated or replaced under the paths over the whole run, or a share of the workspace's files",
    ),
    (
        "breadth",
        "distinct directories listed under the paths over the whole run (a recursive search of your home)",
    ),
    (
        "secrets",
        "secret-bearing files (the paths) read from more than `limit` distinct directories over the run (harvesting)",
    ),
    (
        "supply_chain",
        "a file in the workspace that runs code later (CI, build, manifest lifecycle, package-manager or editor config) gains a step that fetches and runs code, a lifecycle hook, a task",
    ),
    ("denials", "refused operations per window"),
    ("repeated_denials", "refusals of the same syscall per window"),
    ("processes", "processes created per window"),
    ("written", "bytes written over the run"),
    ("baseline", "syscall windows unlike the learned baseline"),
];

fn shape(rule: &str) -> Shape {
    match rule {
        "sensitive_read" | "sensitive_write" => Shape::Paths,
        "egress" | "exfiltration" | "supply_chain" => Shape::Plain,
        "exec" => Shape::Allow,
        "syscalls" => Shape::Names,
        "written" => Shape::Budget,
        "deleted" | "rewritten" | "breadth" | "secrets" => Shape::Tally,
        "baseline" => Shape::Baseline,
        _ => Shape::Rate,
    }
}

fn raw_rule<'a>(m: &'a RawMonitor, name: &str) -> Option<&'a RawRule> {
    match name {
        "sensitive_read" => m.sensitive_read.as_ref(),
        "sensitive_write" => m.sensitive_write.as_ref(),
        "egress" => m.egress.as_ref(),
        "exfiltration" => m.exfiltration.as_ref(),
        "exec" => m.exec.as_ref(),
        "syscalls" => m.syscalls.as_ref(),
        "connects" => m.connects.as_ref(),
        "execs" => m.execs.as_ref(),
        "deletions" => m.deletions.as_ref(),
        "deleted" => m.deleted.as_ref(),
        "rewritten" => m.rewritten.as_ref(),
        "breadth" => m.breadth.as_ref(),
        "secrets" => m.secrets.as_ref(),
        "supply_chain" => m.supply_chain.as_ref(),
        "denials" => m.denials.as_ref(),
        "repeated_denials" => m.repeated_denials.as_ref(),
        "processes" => m.processes.as_ref(),
        "written" => m.written.as_ref(),
        "baseline" => m.baseline.as_ref(),
        _ => None,
    }
}

/// A resolved rule. Variables in patterns are still unexpanded.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rule {
    pub name: &'static str,
    pub response: Response,
    /// Rates: events per window; written: bytes; deleted: files over the run.
    pub limit: u64,
    pub window_ms: u64,
    /// Path or program patterns, or syscall names. `None` for exec: the profile's
    /// `filesystem.executable` places.
    pub patterns: Option<Vec<String>>,
    pub file: Option<String>,
    pub threshold: f64,
    /// deleted: the share of the workspace's files at the start (0: none).
    pub share: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct Monitor {
    pub hook: Vec<String>,
    pub frozen_limit_ms: u64,
    /// Rules that run (response other than `off`).
    pub rules: Vec<Rule>,
    pub visibility: Visibility,
    /// Rules an extended profile turned on that this visibility cannot feed: they do not run
    /// (`cordon profile explain` and the run's start say so).
    pub unseen: Vec<&'static str>,
}

impl Monitor {
    pub fn rule(&self, name: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| r.name == name)
    }
}

/// Default for `frozen_limit`: long enough for a person to look, short enough that a run
/// nobody watches does not hang for ever.
const FROZEN_LIMIT_MS: u64 = 10 * 60 * 1000;

/// Resolve the `[monitor]` sections of an `extends` chain (most derived first), key by key.
pub(super) fn resolve(
    chain: &[&RawProfile],
    invalid: &dyn Fn(String) -> ProfileError,
) -> Result<Monitor, ProfileError> {
    let hook = chain
        .iter()
        .find_map(|p| p.monitor.hook.clone())
        .unwrap_or_default();
    if hook.first().is_some_and(|c| !c.starts_with('/')) {
        return Err(invalid(format!(
            "monitor.hook: the command must be an absolute path, found {:?}",
            hook[0]
        )));
    }
    let frozen_limit_ms = chain
        .iter()
        .find_map(|p| p.monitor.frozen_limit)
        .map_or(FROZEN_LIMIT_MS, |m| m.0);
    // The layer that chose the visibility (most derived first): a rule that layer or a more
    // derived one turns on and the visibility cannot feed is a contradiction; one only
    // inherited from below it is switched off and listed.
    let chosen_at = chain.iter().position(|p| p.monitor.visibility.is_some());
    let visibility = chosen_at
        .and_then(|i| chain[i].monitor.visibility)
        .unwrap_or_default();
    let mut rules = Vec::new();
    let mut unseen = Vec::new();
    for &(name, _) in RULES {
        // The rule as each layer of the chain writes it, most derived first.
        let layers: Vec<&RawRule> = chain.iter().filter_map(|p| raw_rule(&p.monitor, name)).collect();
        if layers.is_empty() {
            continue;
        }
        let blind = visibility != Visibility::Full && SYSCALL_RULES.contains(&name);
        let shape = shape(name);
        let response = layers.iter().find_map(|r| r.response).unwrap_or(Response::Alert);
        let limit = layers.iter().find_map(|r| r.limit).map(|b| b.0);
        let window_ms = layers.iter().find_map(|r| r.window).map(|m| m.0);
        let patterns = match shape {
            Shape::Paths | Shape::Tally => layers.iter().find_map(|r| r.paths.clone()),
            Shape::Allow => layers.iter().find_map(|r| r.allow.clone()),
            Shape::Names => layers.iter().find_map(|r| r.names.clone()),
            _ => None,
        };
        let file = layers.iter().find_map(|r| r.file.clone());
        let threshold = layers.iter().find_map(|r| r.threshold);
        let share = layers.iter().find_map(|r| r.share);
        let any = |f: &dyn Fn(&RawRule) -> bool| layers.iter().any(|r| f(r));
        let misplaced: Vec<&str> = [
            (
                "limit",
                any(&|r| r.limit.is_some()),
                matches!(shape, Shape::Rate | Shape::Budget | Shape::Tally),
            ),
            ("window", any(&|r| r.window.is_some()), shape == Shape::Rate),
            (
                "paths",
                any(&|r| r.paths.is_some()),
                matches!(shape, Shape::Paths | Shape::Tally),
            ),
            ("allow", any(&|r| r.allow.is_some()), shape == Shape::Allow),
            ("names", any(&|r| r.names.is_some()), shape == Shape::Names),
            ("file", any(&|r| r.file.is_some()), shape == Shape::Baseline),
            (
                "threshold",
                any(&|r| r.threshold.is_some()),
                shape == Shape::Baseline,
            ),
            ("share", share.is_some(), matches!(name, "deleted" | "rewritten")),
        ]
        .into_iter()
        .filter(|(_, set, fits)| *set && !fits)
        .map(|(k, _, _)| k)
        .collect();
        if !misplaced.is_empty() {
            return Err(invalid(format!(
                "monitor.{name}: `{}` does not apply to this rule",
                misplaced.join("`, `")
            )));
        }
        if response == Response::Deny && name != "egress" {
            return Err(invalid(format!(
                "monitor.{name}: response \"deny\" applies only to egress (use log, alert, freeze or kill)"
            )));
        }
        if response == Response::Off {
            continue;
        }
        if blind {
            let set_with_visibility = chain
                .iter()
                .take(chosen_at.map_or(0, |i| i + 1))
                .any(|p| raw_rule(&p.monitor, name).is_some());
            if set_with_visibility {
                return Err(invalid(format!(
                    "monitor.{name} reads syscall records, which monitor.visibility = \"{}\" does not record: set its response to \"off\" or the visibility to \"full\"",
                    visibility.name()
                )));
            }
            unseen.push(name);
            continue;
        }
        let need = |what: &str| invalid(format!("monitor.{name}: `{what}` is required"));
        let (limit, window_ms) = match shape {
            Shape::Rate => {
                let limit = limit.ok_or_else(|| need("limit"))?;
                let window = window_ms.ok_or_else(|| need("window"))?;
                if limit == 0 || window == 0 {
                    return Err(invalid(format!(
                        "monitor.{name}: limit and window must be above 0"
                    )));
                }
                (limit, window)
            }
            Shape::Budget | Shape::Tally => (limit.ok_or_else(|| need("limit"))?, 0),
            _ => (0, 0),
        };
        if shape == Shape::Names {
            for n in patterns.iter().flatten() {
                if crate::kernel::resolve(n).is_none() {
                    return Err(invalid(format!("monitor.syscalls: unknown syscall {n:?}")));
                }
            }
        }
        if matches!(shape, Shape::Paths | Shape::Names | Shape::Tally) && patterns.is_none() {
            return Err(need(if shape == Shape::Paths { "paths" } else { "names" }));
        }
        let threshold = match shape {
            Shape::Baseline => {
                if file.is_none() {
                    return Err(need("file"));
                }
                let t = threshold.unwrap_or(0.5);
                if !(t > 0.0 && t <= 1.0) {
                    return Err(invalid(format!(
                        "monitor.baseline: threshold must be in (0, 1], found {t}"
                    )));
                }
                t
            }
            _ => 0.0,
        };
        let share = share.unwrap_or(0.0);
        if !(0.0..=1.0).contains(&share) {
            return Err(invalid(format!(
                "monitor.{name}: share must be in (0, 1], found {share}"
            )));
        }
        rules.push(Rule {
            name,
            response,
            limit,
            window_ms,
            patterns,
            file,
            threshold,
            share,
        });
    }
    Ok(Monitor {
        hook,
        frozen_limit_ms,
        rules,
        visibility,
        unseen,
    })
}
