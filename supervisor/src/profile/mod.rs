//! Confinement profiles: TOML files that say what an agent may touch.
//!
//! A profile is parsed strictly (unknown keys and bad values are errors with file, line and
//! column), then resolved: `extends` chains are followed and every key a profile sets replaces
//! the value it inherits. Variables such as `{workspace}` stay unexpanded here; they are
//! expanded by `policy::compile` (with `template::expand`), which knows the run's context.

pub mod destination;
pub mod egress;
pub mod invariants;
pub mod monitor;
pub mod presets;
pub mod template;
pub mod units;

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use thiserror::Error;
use units::{Bytes, Millis};

pub use presets::{preset, PRESETS};

#[derive(Debug, Error)]
pub enum ProfileError {
    #[error("{file}:{line}:{column}: {message}")]
    Syntax {
        file: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("profile {name:?} not found: not a preset ({presets}) and no file at {path}")]
    NotFound {
        name: String,
        presets: String,
        path: String,
    },
    #[error("cannot read profile {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("profile {0}: `extends` forms a cycle")]
    Cycle(String),
    #[error("{file}: {message}")]
    Invalid { file: String, message: String },
}

/// One profile file as written. Every field is optional so that `extends` can tell what a
/// profile sets from what it inherits.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProfile {
    pub extends: Option<String>,
    pub description: Option<String>,
    #[serde(default)]
    pub filesystem: RawFilesystem,
    #[serde(default)]
    pub network: RawNetwork,
    #[serde(default)]
    pub limits: RawLimits,
    #[serde(default)]
    pub environment: RawEnvironment,
    #[serde(default)]
    pub syscalls: RawSyscalls,
    #[serde(default)]
    pub monitor: monitor::RawMonitor,
    #[serde(default)]
    pub terminal: RawTerminal,
    #[serde(default)]
    pub grants: RawGrants,
    #[serde(default)]
    pub invariants: invariants::RawInvariants,
    #[serde(default)]
    pub approvals: RawApprovals,
}

/// `[approvals]`: how questions to a person are asked and when they lapse (docs/approvals.md).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApprovals {
    /// Unanswered questions are refused after this long.
    pub timeout: Option<Millis>,
    /// New questions a minute; more are refused without asking.
    pub per_minute: Option<u32>,
    /// A command (absolute path first) that gets each question as JSON and may answer it.
    pub hook: Option<Vec<String>>,
    /// May the agent ask for a piece of the `[grants]` envelope (`cordon-request`), and who
    /// answers?
    pub requests: Option<RequestsMode>,
}

/// `approvals.requests`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RequestsMode {
    /// The sandbox has no request socket.
    #[default]
    Off,
    /// A person (or the hook) answers each request.
    Ask,
    /// A request inside the envelope is granted at once, without asking (autonomy level 5).
    Approve,
}

/// The resolved `[approvals]`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Approvals {
    pub timeout_ms: u64,
    pub per_minute: u32,
    pub hook: Vec<String>,
    pub requests: RequestsMode,
}

/// How long a question waits unless the profile says otherwise.
pub const DEFAULT_APPROVAL_TIMEOUT_MS: u64 = 2 * 60 * 1000;
/// New questions a minute unless the profile says otherwise.
pub const DEFAULT_APPROVALS_PER_MINUTE: u32 = 6;

/// `[grants]`: the envelope of what may be granted while the sandbox runs.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGrants {
    /// Paths (files or directories) hidden at start that `cordon grant --read` may show.
    pub read: Option<Vec<String>>,
    /// Paths (existing files or directories) bound read-write but hidden at start, that
    /// `cordon grant --write` may show.
    pub write: Option<Vec<String>>,
    /// Names (NAME[:PORT], *.SUFFIX[:PORT]) `cordon grant --net` may let the agent reach
    /// for a while (a `proxy` sandbox only).
    pub net: Option<Vec<String>>,
    /// Credentials (`network.credential`, by the variable the agent finds the placeholder
    /// in) the proxy puts in requests only while `cordon grant --secret` says so.
    pub secrets: Option<Vec<String>>,
    /// The longest a grant may last.
    pub max: Option<Millis>,
}

/// The resolved `[grants]` (paths still unexpanded).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Grants {
    pub read: Vec<String>,
    pub write: Vec<String>,
    pub net: Vec<String>,
    pub secrets: Vec<String>,
    pub max_ms: u64,
}

/// The longest a grant lasts unless the profile says otherwise.
pub const DEFAULT_GRANT_MAX_MS: u64 = 60 * 60 * 1000;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFilesystem {
    pub read_only: Option<Vec<String>>,
    pub read_write: Option<Vec<String>>,
    pub hidden: Option<Vec<String>>,
    pub protected: Option<Vec<String>>,
    pub executable: Option<Vec<String>>,
    pub tmp_size: Option<Bytes>,
    /// Writable directories the agent keeps its own state in, created (owned by the user,
    /// mode 0700) when missing.
    pub state: Option<Vec<String>>,
    /// The agent's own credential files: visible read-only (not hidden), and reading them is
    /// not a sensitive read. Every other agent's stay hidden.
    pub own_credentials: Option<Vec<String>>,
    /// `direct` (the agent writes the real workspace) or `transactional` (into a layer that
    /// `cordon diff` shows and `cordon commit` applies).
    pub workspace: Option<WorkspaceMode>,
    /// Transactional: the most the agent may write (ENOSPC past it).
    pub write_quota: Option<Bytes>,
    /// Transactional: what happens to the changes when the run ends.
    pub commit: Option<CommitMode>,
}

/// `filesystem.workspace`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkspaceMode {
    #[default]
    Direct,
    Transactional,
}

/// `filesystem.commit`: applied by itself, asked on the terminal, or kept pending.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CommitMode {
    Always,
    /// Show the changes and ask on the terminal; without one, keep them pending.
    #[default]
    Ask,
    Never,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    pub memory: Option<Bytes>,
    pub cpu: Option<f64>,
    pub pids: Option<u32>,
    pub open_files: Option<u32>,
    pub file_size: Option<Bytes>,
    pub wall_clock: Option<Millis>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEnvironment {
    pub pass: Option<Vec<String>>,
    pub set: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSyscalls {
    pub deny: Option<Vec<SyscallRule>>,
}

/// What an interactive agent may do to the user's terminal beyond its own screen
/// (`launch::terminal` removes the rest from what it writes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TerminalFeature {
    /// Set the window and icon title (OSC 0, 1, 2).
    Title,
    /// Write the clipboard (OSC 52). Reading it is never passed.
    Clipboard,
    /// Hyperlinks of any scheme (OSC 8); http and https links always pass.
    Hyperlinks,
    /// Desktop notifications (OSC 9, 99, 777).
    Notifications,
}

impl TerminalFeature {
    pub fn name(self) -> &'static str {
        match self {
            TerminalFeature::Title => "title",
            TerminalFeature::Clipboard => "clipboard",
            TerminalFeature::Hyperlinks => "hyperlinks",
            TerminalFeature::Notifications => "notifications",
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTerminal {
    pub allow: Option<Vec<TerminalFeature>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SyscallRule {
    pub name: String,
    #[serde(default = "default_errno")]
    pub errno: String,
    pub reason: String,
}

fn default_errno() -> String {
    "EPERM".into()
}

/// A profile with its `extends` chain resolved. Variables are still unexpanded.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Profile {
    pub name: String,
    pub description: String,
    /// Where each layer of the chain came from, most derived first.
    pub sources: Vec<String>,
    /// SHA-256 over the text of every file in the chain, most derived first.
    pub hash: String,
    /// Those texts, in the same order (recorded whole in the trace header).
    #[serde(skip)]
    pub texts: Vec<String>,
    pub filesystem: Filesystem,
    pub network: Network,
    pub limits: Limits,
    pub environment: Environment,
    pub syscalls: Vec<SyscallRule>,
    pub monitor: monitor::Monitor,
    pub terminal: Terminal,
    pub grants: Grants,
    pub approvals: Approvals,
    /// What the profile promises (checked against the compiled policy: `policy::prove`).
    pub invariants: invariants::Invariants,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Filesystem {
    pub read_only: Vec<String>,
    pub read_write: Vec<String>,
    pub hidden: Vec<String>,
    pub protected: Vec<String>,
    pub executable: Vec<String>,
    pub tmp_size: u64,
    pub state: Vec<String>,
    pub own_credentials: Vec<String>,
    pub workspace: WorkspaceMode,
    pub write_quota: Option<u64>,
    pub commit: CommitMode,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Limits {
    pub memory: Option<u64>,
    pub cpu: Option<f64>,
    pub pids: Option<u32>,
    pub open_files: Option<u32>,
    pub file_size: Option<u64>,
    pub wall_clock_ms: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Terminal {
    /// Sorted, without repeats; empty: nothing beyond the agent's screen.
    pub allow: Vec<TerminalFeature>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Environment {
    pub pass: Vec<String>,
    pub set: BTreeMap<String, String>,
}

/// Where profile text came from: a preset embedded in the binary or a file.
struct Source {
    label: String,
    text: String,
    dir: Option<PathBuf>,
}

/// Parse one profile text strictly, reporting the first error with line and column.
pub fn parse(label: &str, text: &str) -> Result<RawProfile, ProfileError> {
    toml::from_str::<RawProfile>(text).map_err(|e| {
        let (line, column) = e.span().map(|s| line_col(text, s.start)).unwrap_or((1, 1));
        ProfileError::Syntax {
            file: label.to_string(),
            line,
            column,
            message: e.message().trim().to_string(),
        }
    })
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

fn locate(name: &str, relative_to: Option<&Path>) -> Result<Source, ProfileError> {
    let looks_like_path = name.contains('/') || name.ends_with(".toml");
    if !looks_like_path {
        if let Some(text) = preset(name) {
            return Ok(Source {
                label: format!("preset:{name}"),
                text: text.to_string(),
                dir: None,
            });
        }
    }
    let path = match relative_to {
        Some(dir) if !Path::new(name).is_absolute() => dir.join(name),
        _ => PathBuf::from(name),
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(Source {
            label: path.display().to_string(),
            text,
            dir: path.parent().map(Path::to_path_buf),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(ProfileError::NotFound {
            name: name.to_string(),
            presets: PRESETS.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", "),
            path: path.display().to_string(),
        }),
        Err(source) => Err(ProfileError::Read {
            path: path.display().to_string(),
            source,
        }),
    }
}

/// Load a profile by preset name or file path and resolve its `extends` chain.
pub fn load(name: &str) -> Result<Profile, ProfileError> {
    let mut chain: Vec<(Source, RawProfile)> = Vec::new();
    let mut next = Some((name.to_string(), None::<PathBuf>));
    while let Some((n, dir)) = next.take() {
        let src = locate(&n, dir.as_deref())?;
        if chain.iter().any(|(s, _)| s.label == src.label) {
            return Err(ProfileError::Cycle(src.label));
        }
        let raw = parse(&src.label, &src.text)?;
        next = raw.extends.clone().map(|e| (e, src.dir.clone()));
        chain.push((src, raw));
    }
    resolve(name, &chain)
}

/// The profile a trace recorded (`label`, `text` of each file of its chain, most derived
/// first), resolved again from those texts alone: what the run was held to, whatever the
/// files say now.
pub fn from_recorded(name: &str, sources: &[(String, String)]) -> Result<Profile, ProfileError> {
    let mut chain = Vec::new();
    for (label, text) in sources {
        let raw = parse(label, text)?;
        chain.push((
            Source {
                label: label.clone(),
                text: text.clone(),
                dir: None,
            },
            raw,
        ));
    }
    if chain.is_empty() {
        return Err(ProfileError::Invalid {
            file: name.to_string(),
            message: "the trace recorded no profile text".into(),
        });
    }
    resolve(name, &chain)
}

macro_rules! pick {
    ($chain:expr, $($field:ident).+) => {
        $chain.iter().find_map(|(_, r)| r.$($field).+.clone())
    };
}

// After `pick!`: the network section uses it.
mod network;
use network::resolve_network;
pub use network::{
    Credential, Dlp, Gateway, Network, NetworkMode, RawCredential, RawDlp, RawGateway, RawNetwork, Record,
    SecretSource, Unlisted, DEFAULT_ASK_TIMEOUT_MS, DEFAULT_GATEWAY_MAX_BYTES,
};

fn resolve(name: &str, chain: &[(Source, RawProfile)]) -> Result<Profile, ProfileError> {
    use sha2::Digest;
    let mut hasher = sha2::Sha256::new();
    for (src, _) in chain {
        hasher.update(src.text.as_bytes());
    }
    let label = chain[0].0.label.clone();
    let invalid = |message: String| ProfileError::Invalid {
        file: label.clone(),
        message,
    };
    let network = resolve_network(chain)?;
    let limits = Limits {
        memory: pick!(chain, limits.memory).map(|b| b.0),
        cpu: pick!(chain, limits.cpu),
        pids: pick!(chain, limits.pids),
        open_files: pick!(chain, limits.open_files),
        file_size: pick!(chain, limits.file_size).map(|b| b.0),
        wall_clock_ms: pick!(chain, limits.wall_clock).map(|m| m.0),
    };
    if let Some(cpu) = limits.cpu {
        if !(cpu > 0.0 && cpu <= 1024.0) {
            return Err(invalid(format!(
                "limits.cpu must be a number of cores in (0, 1024], found {cpu}"
            )));
        }
    }
    if limits.memory.is_some_and(|m| m < (8 << 20)) {
        return Err(invalid("limits.memory below 8M cannot start a process".into()));
    }
    if limits.pids == Some(0) || limits.open_files.is_some_and(|n| n < 8) {
        return Err(invalid(
            "limits.pids must be at least 1 and limits.open_files at least 8".into(),
        ));
    }
    let syscalls = pick!(chain, syscalls.deny).unwrap_or_default();
    for rule in &syscalls {
        crate::kernel::errno_by_name(&rule.errno).ok_or_else(|| {
            invalid(format!(
                "syscalls.deny {:?}: unknown errno {:?}",
                rule.name, rule.errno
            ))
        })?;
        if crate::kernel::resolve(&rule.name).is_none() {
            return Err(invalid(format!("syscalls.deny: unknown syscall {:?}", rule.name)));
        }
    }
    let environment = Environment {
        pass: pick!(chain, environment.pass).unwrap_or_default(),
        // `set` adds to what the profiles it extends set (a key set again wins): a profile
        // that sets one variable keeps HOME, TMPDIR and the rest.
        set: chain
            .iter()
            .rev()
            .filter_map(|(_, r)| r.environment.set.as_ref())
            .flat_map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())))
            .collect(),
    };
    for key in environment.pass.iter().chain(environment.set.keys()) {
        if key.is_empty() || key.contains('=') || key.contains('\0') {
            return Err(invalid(format!(
                "environment: {key:?} is not a valid variable name"
            )));
        }
    }
    let filesystem = Filesystem {
        read_only: pick!(chain, filesystem.read_only).unwrap_or_default(),
        read_write: pick!(chain, filesystem.read_write).unwrap_or_default(),
        hidden: pick!(chain, filesystem.hidden).unwrap_or_default(),
        protected: pick!(chain, filesystem.protected).unwrap_or_default(),
        executable: pick!(chain, filesystem.executable).unwrap_or_default(),
        tmp_size: pick!(chain, filesystem.tmp_size).map_or(256 << 20, |b| b.0),
        state: pick!(chain, filesystem.state).unwrap_or_default(),
        own_credentials: pick!(chain, filesystem.own_credentials).unwrap_or_default(),
        workspace: pick!(chain, filesystem.workspace).unwrap_or_default(),
        write_quota: pick!(chain, filesystem.write_quota).map(|b| b.0),
        commit: pick!(chain, filesystem.commit).unwrap_or_default(),
    };
    if filesystem.write_quota.is_some() && filesystem.workspace != WorkspaceMode::Transactional {
        return Err(invalid(
            "filesystem.write_quota caps what the agent writes into the transactional layer: it needs workspace = \"transactional\"".into(),
        ));
    }
    for p in filesystem
        .read_only
        .iter()
        .chain(&filesystem.read_write)
        .chain(&filesystem.state)
        .chain(&filesystem.own_credentials)
        .chain(&filesystem.hidden)
        .chain(&filesystem.protected)
        .chain(&filesystem.executable)
    {
        template::check(p).map_err(|e| invalid(format!("filesystem path {p:?}: {e}")))?;
    }
    let mut terminal = Terminal {
        allow: pick!(chain, terminal.allow).unwrap_or_default(),
    };
    terminal.allow.sort();
    terminal.allow.dedup();
    let raws: Vec<&RawProfile> = chain.iter().map(|(_, r)| r).collect();
    let monitor = monitor::resolve(&raws, &invalid)?;
    for p in monitor.rules.iter().filter(|r| r.name != "syscalls") {
        for pat in p.patterns.iter().flatten() {
            crate::glob::check(pat)
                .map_err(|e| invalid(format!("monitor.{} pattern {pat:?}: {e}", p.name)))?;
        }
    }
    let invariants = invariants::Invariants {
        never_write: pick!(chain, invariants.never_write).unwrap_or_default(),
        never_read: pick!(chain, invariants.never_read).unwrap_or_default(),
        never_exec: pick!(chain, invariants.never_exec).unwrap_or_default(),
        never_grant: pick!(chain, invariants.never_grant).unwrap_or_default(),
        network: pick!(chain, invariants.network),
        network_only: pick!(chain, invariants.network_only),
        deny_syscalls: pick!(chain, invariants.deny_syscalls).unwrap_or_default(),
    };
    invariants.check().map_err(|e| invalid(e.0))?;
    let grant_net: Vec<String> = pick!(chain, grants.net).unwrap_or_default();
    for rule in &grant_net {
        egress::parse(rule).map_err(|e| invalid(format!("grants.net {rule:?}: {e}")))?;
    }
    if !grant_net.is_empty() && network.mode != NetworkMode::Proxy {
        return Err(invalid(
            "grants.net needs network.mode = \"proxy\" (only the proxy can change what the agent reaches while it runs)".into(),
        ));
    }
    let grant_secrets: Vec<String> = pick!(chain, grants.secrets).unwrap_or_default();
    for name in &grant_secrets {
        if !network.credentials.iter().any(|c| &c.env == name) {
            return Err(invalid(format!(
                "grants.secrets {name:?}: no network.credential gives the agent a placeholder in {name} (the envelope names credentials by their variable)"
            )));
        }
    }
    let approvals = Approvals {
        timeout_ms: pick!(chain, approvals.timeout).map_or(DEFAULT_APPROVAL_TIMEOUT_MS, |m| m.0),
        per_minute: pick!(chain, approvals.per_minute).unwrap_or(DEFAULT_APPROVALS_PER_MINUTE),
        hook: pick!(chain, approvals.hook).unwrap_or_default(),
        requests: pick!(chain, approvals.requests).unwrap_or_default(),
    };
    if approvals.hook.first().is_some_and(|c| !c.starts_with('/')) {
        return Err(invalid(format!(
            "approvals.hook: the command must be an absolute path, found {:?}",
            approvals.hook[0]
        )));
    }
    if approvals.timeout_ms == 0 || approvals.per_minute == 0 {
        return Err(invalid(
            "approvals: timeout and per_minute must be above 0 (to ask nothing, leave nothing on \"ask\")"
                .into(),
        ));
    }
    Ok(Profile {
        name: name.to_string(),
        description: pick!(chain, description).unwrap_or_default(),
        sources: chain.iter().map(|(s, _)| s.label.clone()).collect(),
        hash: format!("{:x}", hasher.finalize()),
        texts: chain.iter().map(|(s, _)| s.text.clone()).collect(),
        filesystem,
        network,
        limits,
        environment,
        syscalls,
        monitor,
        terminal,
        grants: Grants {
            read: pick!(chain, grants.read).unwrap_or_default(),
            write: pick!(chain, grants.write).unwrap_or_default(),
            net: grant_net,
            secrets: grant_secrets,
            max_ms: pick!(chain, grants.max).map_or(DEFAULT_GRANT_MAX_MS, |m| m.0),
        },
        approvals,
        invariants,
    })
}

#[cfg(test)]
mod tests;
