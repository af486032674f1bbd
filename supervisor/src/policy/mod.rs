//! Policy compilation: a resolved `Profile` plus the run's context become the exact set of
//! kernel objects to create. Pure: no syscalls here, so every preset can be tested as data.

pub mod explain;
pub mod monitor;
pub mod prove;
mod render;
pub mod suggest;
pub mod syscalls;
pub use render::render;

use crate::profile::destination::Destination;
use crate::profile::egress::{Egress, NameRule};
use crate::profile::template::{self, PathError};
use crate::profile::{NetworkMode, Profile, SyscallRule};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Facts about this run that a profile's variables and identity mapping depend on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Context {
    /// Canonical absolute path of the workspace.
    pub workspace: PathBuf,
    /// Home directory of the invoking user.
    pub home: PathBuf,
    /// The invoking user's host ids: files the agent creates in the workspace belong to them.
    pub owner_uid: u32,
    pub owner_gid: u32,
    /// Unprivileged host ids the agent runs as.
    pub agent_uid: u32,
    pub agent_gid: u32,
}

/// The uid and gid the agent sees for itself inside its user namespace.
pub const INSIDE_ID: u32 = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Access {
    ReadOnly,
    ReadWrite,
}

/// One bind of a host tree into the sandbox, at the same absolute path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Bind {
    pub path: PathBuf,
    pub access: Access,
    pub exec: bool,
    /// Whether the invoking user's files appear as the agent's (idmapped mount).
    pub idmap: bool,
    /// Missing sources are an error for read-write binds (the agent was promised them) and
    /// skipped for read-only ones (nothing to expose).
    pub required: bool,
}

/// `approvals.requests`: where the request directory appears inside the sandbox, and the
/// name of the client in it (cordon's own binary, bound there).
pub const REQUESTS_INSIDE: &str = "/run/cordon";
pub const REQUEST_CLIENT: &str = "cordon-request";
/// Where `cordon selftest` puts its probe (cordon's own binary) in the sandbox.
pub const SELFTEST_PROBE: &str = "/run/cordon-selftest/cordon";

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Policy {
    pub profile: String,
    pub profile_hash: String,
    pub context: Context,
    /// Binds, parents before children.
    pub binds: Vec<Bind>,
    /// Paths replaced by empty, read-only stand-ins.
    pub hidden: Vec<PathBuf>,
    /// Paths inside writable binds that are made read-only.
    pub protected: Vec<PathBuf>,
    /// Paths exec is allowed from that are not already binds with `exec`.
    pub exec_only: Vec<PathBuf>,
    /// `filesystem.state`: created (owned by the invoking user, 0700) before the binds.
    pub create: Vec<PathBuf>,
    /// `filesystem.own_credentials`: shown read-only, not sensitive reads.
    pub own_credentials: Vec<PathBuf>,
    pub tmp_size: u64,
    pub network: NetworkPolicy,
    pub limits: crate::profile::Limits,
    pub env: BTreeMap<String, String>,
    pub seccomp: Vec<syscalls::Rule>,
    pub uid_map: String,
    pub gid_map: String,
    /// Maps for the idmapped mounts: on-disk owner id -> agent host id.
    pub idmap_uid_map: Option<String>,
    pub idmap_gid_map: Option<String>,
    /// The `[monitor]` rules, patterns expanded.
    pub monitor: monitor::Config,
    /// What the agent's terminal output may do beyond its screen (interactive runs).
    pub terminal: Vec<crate::profile::TerminalFeature>,
    /// Certificates the sandbox trusts besides the system's: set when the proxy intercepts
    /// TLS (`network.credential`), after compiling (the CA is made per run). Not in the
    /// trace's policy (the bundle is the host's; the run's start line names the CA).
    #[serde(skip)]
    pub trust: Option<Trust>,
    /// Canary credentials planted where real ones are hidden (`network.dlp.canaries`), set
    /// after compiling like `trust`: the decoy's path (inside a hidden directory, or a hidden
    /// file itself) and its contents. Not in the trace (the proxy knows the values).
    #[serde(skip)]
    pub decoys: Vec<Decoy>,
    /// `approvals.requests`: the run's request directory on the host (bound at
    /// `/run/cordon` with the `cordon-request` client), set by the run.
    #[serde(skip)]
    pub request_dir: Option<PathBuf>,
    /// `cordon selftest` only: files bound read-only and executable, each at its path, so
    /// the battery (cordon's own binary, at `SELFTEST_PROBE`) runs whatever the profile shows:
    /// (source on the host, where in the sandbox).
    #[serde(skip)]
    pub probe_files: Vec<(PathBuf, PathBuf)>,
    /// `[grants] read`: paths hidden at start that `cordon grant --read` may show for a while
    /// (each inside a read-only or read-write bind: landlock already allows reading it).
    pub grant_read: Vec<PathBuf>,
    /// `[grants] write`: bound read-write, hidden at start, shown by `cordon grant --write`.
    pub grant_write: Vec<PathBuf>,
    /// `[grants] net`: names `cordon grant --net` may let the agent reach for a while.
    pub grant_net: Vec<String>,
    /// `[grants] secrets`: credentials injected only while granted (`cordon grant --secret`).
    pub grant_secrets: Vec<String>,
    /// The longest a grant may last.
    pub grant_max_ms: u64,
    /// `[approvals]`: how questions to a person are asked.
    pub approvals: crate::profile::Approvals,
    /// `filesystem.workspace`: transactional runs see the workspace through an overlay.
    pub workspace_mode: crate::profile::WorkspaceMode,
    pub write_quota: Option<u64>,
    pub commit: crate::profile::CommitMode,
    /// The profile's `[invariants]` proven against this policy (`prove`), recorded with the
    /// policy in the trace header; set by the run once proven.
    pub invariants: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoy {
    pub path: PathBuf,
    pub content: String,
}

/// The sandbox's trust store when cordon's proxy intercepts TLS: the host's CA bundle plus
/// cordon's per-run CA (certificate only; its key never leaves the supervisor).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trust {
    /// The host's bundle, cordon's CA and any extra CAs the agent was told to trust, PEM.
    pub bundle_pem: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NetworkPolicy {
    pub mode: NetworkMode,
    /// Address rules: enforced in the kernel (`allowlist`), or literal addresses the proxy
    /// lets the agent reach (`proxy`).
    pub allow: Vec<Destination>,
    /// `proxy`: the names the agent may reach.
    pub names: Vec<NameRule>,
    /// `proxy`: rules that refuse even what `allow` lets through.
    pub deny: Vec<Egress>,
    /// `proxy`: fixed upstream addresses for names.
    pub resolve: BTreeMap<String, std::net::IpAddr>,
    /// `proxy` with `unlisted = "ask"`: how long a connection no rule allows is held while a
    /// person is asked; None: refused at once.
    pub ask: Option<std::time::Duration>,
    /// `proxy`: credentials the proxy adds (sources, not values).
    pub credentials: Vec<crate::profile::Credential>,
    /// `proxy`: extra CAs cordon trusts upstream.
    pub upstream_ca: Option<PathBuf>,
    /// `proxy`: the model gateway.
    pub gateway: crate::profile::Gateway,
    /// `proxy`: data loss prevention.
    pub dlp: crate::profile::Dlp,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CompileError {
    #[error("workspace {0} must not be the root directory")]
    RootWorkspace(PathBuf),
    #[error("home {0} must not be the root directory")]
    RootHome(PathBuf),
    #[error("filesystem path {0:?}: {1}")]
    Path(String, #[source] PathError),
    #[error(transparent)]
    Monitor(#[from] monitor::ConfigError),
    #[error("grants.read {0}: not inside anything the profile shows (add it, or a directory above it, to filesystem.read_only)")]
    GrantOutside(PathBuf),
    #[error("grants.{0} {1}: inside the read-write place {2}, where the agent could replace it with a symlink or keep it by moving it, and a read grant would be writable; put it under a read-only place")]
    GrantInWritable(&'static str, PathBuf, PathBuf),
}

/// A context for unit tests: alice's project under her home.
#[cfg(test)]
pub(crate) fn test_context() -> Context {
    Context {
        workspace: "/home/alice/proj".into(),
        home: "/home/alice".into(),
        owner_uid: 1000,
        owner_gid: 1000,
        agent_uid: 2_147_000_000,
        agent_gid: 2_147_000_000,
    }
}

fn depth(p: &Path) -> usize {
    p.components().count()
}

impl Policy {
    /// Must the mount at `p` allow exec: is `p` inside an executable bind, or inside or above
    /// an executable place that has no mount of its own? (An executable bind beneath `p` is a
    /// mount of its own and keeps its own flag.) Where not, the mount is `noexec`: the kernel
    /// then refuses `PROT_EXEC` mappings of its files whoever maps them, the dynamic loader
    /// included.
    pub fn mount_needs_exec(&self, p: &Path) -> bool {
        self.binds.iter().any(|b| b.exec && p.starts_with(&b.path))
            || self
                .exec_only
                .iter()
                .any(|e| p.starts_with(e) || e.starts_with(p))
    }
}

/// Compile a resolved profile for one run. `caller_env` is the environment cordon was
/// started with; only what the profile passes survives.
pub fn compile(
    profile: &Profile,
    ctx: &Context,
    caller_env: &BTreeMap<String, String>,
) -> Result<Policy, CompileError> {
    if ctx.workspace == Path::new("/") {
        return Err(CompileError::RootWorkspace(ctx.workspace.clone()));
    }
    if ctx.home == Path::new("/") {
        return Err(CompileError::RootHome(ctx.home.clone()));
    }
    let fs = &profile.filesystem;
    let ex = |list: &[String]| -> Result<Vec<PathBuf>, CompileError> {
        list.iter()
            .map(|p| {
                template::expand(p, &ctx.workspace, &ctx.home).map_err(|e| CompileError::Path(p.clone(), e))
            })
            .collect()
    };
    let executable = ex(&fs.executable)?;
    let is_exec = |p: &Path| executable.iter().any(|e| p.starts_with(e));
    let needs_idmap = ctx.owner_uid != ctx.agent_uid || ctx.owner_gid != ctx.agent_gid;
    let owned = |p: &Path| needs_idmap && (p.starts_with(&ctx.workspace) || p.starts_with(&ctx.home));

    // A later, more specific entry wins over an earlier one for the same path; read-write
    // wins over read-only when a path is listed as both.
    let mut by_path: BTreeMap<PathBuf, Bind> = BTreeMap::new();
    for (list, access) in [
        (&fs.read_only, Access::ReadOnly),
        (&fs.read_write, Access::ReadWrite),
        (&fs.state, Access::ReadWrite),
        // A write grant's envelope: bound read-write (landlock allows writing it), masked
        // until granted.
        (&profile.grants.write, Access::ReadWrite),
    ] {
        for path in ex(list)? {
            by_path.insert(
                path.clone(),
                Bind {
                    exec: is_exec(&path),
                    idmap: owned(&path),
                    required: access == Access::ReadWrite,
                    access,
                    path,
                },
            );
        }
    }
    let mut binds: Vec<Bind> = by_path.into_values().collect();
    binds.sort_by_key(|b| depth(&b.path));

    let exec_only = executable
        .iter()
        .filter(|e| !binds.iter().any(|b| b.exec && e.starts_with(&b.path)))
        .cloned()
        .collect();

    let mut env = BTreeMap::new();
    for key in &profile.environment.pass {
        if let Some(v) = caller_env.get(key) {
            env.insert(key.clone(), v.clone());
        }
    }
    for (k, v) in &profile.environment.set {
        // Substituted, not normalised: a value may be a URL (`http://…` keeps its `//`).
        let v = template::substitute(v, &ctx.workspace, &ctx.home).unwrap_or_else(|_| v.clone());
        env.insert(k.clone(), v);
    }

    let mut seccomp = syscalls::baseline();
    seccomp.extend(
        profile
            .syscalls
            .iter()
            .map(|SyscallRule { name, errno, reason }| syscalls::Rule {
                name: name.clone(),
                action: syscalls::Action::Errno(crate::kernel::errno_by_name(errno).unwrap_or(libc::EPERM)),
                when: syscalls::When::Always,
                reason: reason.clone(),
            }),
    );

    // The request client (`approvals.requests`) is a program the agent may run.
    let mut runs: Vec<PathBuf> = executable.clone();
    if profile.approvals.requests != crate::profile::RequestsMode::Off {
        runs.push(Path::new(REQUESTS_INSIDE).join(REQUEST_CLIENT));
    }
    let mut monitor = monitor::Config::compile(&profile.monitor, &runs, profile.network.mode, |p| {
        template::expand(p, &ctx.workspace, &ctx.home).map(|p| p.to_string_lossy().into_owned())
    })?;
    // Reading its own credential file is what the agent is for; every other one still counts.
    let own: Vec<String> = fs
        .own_credentials
        .iter()
        .filter_map(|p| template::expand(p, &ctx.workspace, &ctx.home).ok())
        .map(|p| format!("!{}", p.display()))
        .collect();
    monitor.except("sensitive_read", &own);
    monitor.hook_uid = ctx.owner_uid;
    monitor.hook_gid = ctx.owner_gid;

    // The agent's own credential files are shown (read-only), everything else hidden.
    let hidden: Vec<PathBuf> = {
        let own = ex(&fs.own_credentials)?;
        ex(&fs.hidden)?.into_iter().filter(|h| !own.contains(h)).collect()
    };
    // The grant envelope is shown to landlock and the mounts (a bind above it) and hidden at
    // start; a grant reveals it in the running sandbox's mount namespace.
    let grant_read = ex(&profile.grants.read)?;
    let grant_write = ex(&profile.grants.write)?;
    if let Some(outside) = grant_read
        .iter()
        .find(|g| !binds.iter().any(|b| g.starts_with(&b.path)))
    {
        return Err(CompileError::GrantOutside(outside.clone()));
    }
    // A grant changes mounts at the envelope's path as root: nothing on that path may be the
    // agent's to change (the innermost place holding it, the write envelope's own bind aside).
    let innermost = |p: &PathBuf, own: bool| {
        binds
            .iter()
            .filter(|b| p.starts_with(&b.path) && !(own && &b.path == p))
            .max_by_key(|b| b.path.components().count())
    };
    for (key, list, own) in [("read", &grant_read, false), ("write", &grant_write, true)] {
        for g in list {
            if let Some(b) = innermost(g, own).filter(|b| b.access == Access::ReadWrite) {
                return Err(CompileError::GrantInWritable(key, g.clone(), b.path.clone()));
            }
        }
    }

    Ok(Policy {
        profile: profile.name.clone(),
        profile_hash: profile.hash.clone(),
        context: ctx.clone(),
        binds,
        protected: {
            let mut p = ex(&fs.protected)?;
            p.extend(ex(&fs.own_credentials)?);
            p
        },
        own_credentials: ex(&fs.own_credentials)?,
        exec_only,
        create: ex(&fs.state)?,
        tmp_size: fs.tmp_size,
        network: NetworkPolicy {
            mode: profile.network.mode,
            allow: profile
                .network
                .allow
                .iter()
                .filter_map(|r| match r {
                    Egress::Address(d) => Some(*d),
                    Egress::Name(_) => None,
                })
                .collect(),
            names: profile
                .network
                .allow
                .iter()
                .filter_map(|r| match r {
                    Egress::Name(n) => Some(n.clone()),
                    Egress::Address(_) => None,
                })
                .collect(),
            deny: profile.network.deny.clone(),
            resolve: profile.network.resolve.clone(),
            ask: (profile.network.unlisted == crate::profile::Unlisted::Ask)
                .then(|| std::time::Duration::from_millis(profile.network.ask_timeout_ms)),
            credentials: profile.network.credentials.clone(),
            upstream_ca: profile
                .network
                .upstream_ca
                .as_ref()
                .map(|p| {
                    template::expand(p, &ctx.workspace, &ctx.home)
                        .map_err(|e| CompileError::Path(p.clone(), e))
                })
                .transpose()?,
            gateway: profile.network.gateway.clone(),
            dlp: profile.network.dlp.clone(),
        },
        limits: profile.limits.clone(),
        env,
        seccomp,
        uid_map: format!("{INSIDE_ID} {} 1\n", ctx.agent_uid),
        gid_map: format!("{INSIDE_ID} {} 1\n", ctx.agent_gid),
        idmap_uid_map: needs_idmap.then(|| format!("{} {} 1\n", ctx.owner_uid, ctx.agent_uid)),
        idmap_gid_map: needs_idmap.then(|| format!("{} {} 1\n", ctx.owner_gid, ctx.agent_gid)),
        monitor,
        terminal: profile.terminal.allow.clone(),
        trust: None,
        decoys: Vec::new(),
        request_dir: None,
        probe_files: Vec::new(),
        hidden: {
            let mut h = hidden;
            let more: Vec<PathBuf> = grant_read
                .iter()
                .chain(&grant_write)
                .filter(|g| !h.contains(g))
                .cloned()
                .collect();
            h.extend(more);
            h
        },
        grant_read,
        grant_write,
        grant_net: profile.grants.net.clone(),
        grant_secrets: profile.grants.secrets.clone(),
        grant_max_ms: profile.grants.max_ms,
        approvals: profile.approvals.clone(),
        workspace_mode: fs.workspace,
        write_quota: fs.write_quota,
        commit: fs.commit,
        invariants: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::ROOT_CALLER_AGENT_ID;
    use crate::profile::load;

    fn ctx(owner: u32, agent: u32) -> Context {
        Context {
            workspace: "/home/alice/proj".into(),
            home: "/home/alice".into(),
            owner_uid: owner,
            owner_gid: owner,
            agent_uid: agent,
            agent_gid: agent,
        }
    }

    fn env() -> BTreeMap<String, String> {
        [
            ("PATH", "/usr/bin:/bin"),
            ("SECRET_TOKEN", "hunter2"),
            ("TERM", "xterm"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    #[test]
    fn a_mount_stays_exec_only_where_an_executable_place_needs_it() {
        let mut profile = load("default").unwrap();
        profile.filesystem.read_write.push("/data".into());
        profile.filesystem.executable.push("/data/bin".into());
        profile.filesystem.executable.push("/tmp/tools".into());
        let p = compile(&profile, &ctx(0, ROOT_CALLER_AGENT_ID), &env()).unwrap();
        // /data holds an executable place without a mount of its own; so does /tmp.
        assert!(p.mount_needs_exec(Path::new("/data")));
        assert!(p.mount_needs_exec(Path::new("/tmp")));
        assert!(!p.mount_needs_exec(Path::new("/etc")));
    }

    #[test]
    fn a_grant_envelope_under_a_place_the_agent_writes_is_refused() {
        let c = ctx(0, ROOT_CALLER_AGENT_ID);
        // Under the read-write workspace: the agent could swap it for a symlink.
        let mut profile = load("default").unwrap();
        profile.grants.read.push("{workspace}/data".into());
        let e = compile(&profile, &c, &env()).unwrap_err().to_string();
        assert!(
            e.contains("grants.read /home/alice/proj/data: inside the read-write place /home/alice/proj"),
            "{e}"
        );
        let mut profile = load("default").unwrap();
        profile.grants.write.push("{workspace}/out".into());
        assert!(compile(&profile, &c, &env()).is_err());
        // Under the read-only home: fine, and a write envelope is its own bind.
        let mut profile = load("default").unwrap();
        profile.grants.read.push("{home}/datasets".into());
        profile.grants.write.push("{home}/.cache/pip".into());
        assert!(compile(&profile, &c, &env()).is_ok());
    }

    #[test]
    fn environment_set_adds_to_the_inherited_table_and_keeps_urls_intact() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("p.toml");
        std::fs::write(
            &f,
            "extends = \"default\"\n[environment]\nset = { ANTHROPIC_BASE_URL = \"http://127.0.0.1:34247/v1\", DATA = \"{workspace}/./data/\" }\n",
        )
        .unwrap();
        let p = compile(
            &load(f.to_str().unwrap()).unwrap(),
            &ctx(0, ROOT_CALLER_AGENT_ID),
            &env(),
        )
        .unwrap();
        assert_eq!(p.env["ANTHROPIC_BASE_URL"], "http://127.0.0.1:34247/v1");
        assert_eq!(p.env["DATA"], "/home/alice/proj/./data/");
        // Inherited from default, not replaced.
        assert_eq!(p.env["HOME"], "/home/alice");
        assert_eq!(p.env["TMPDIR"], "/tmp");
    }

    #[test]
    fn default_preset_snapshot() {
        let p = compile(&load("default").unwrap(), &ctx(0, ROOT_CALLER_AGENT_ID), &env()).unwrap();
        let rw: Vec<_> = p
            .binds
            .iter()
            .filter(|b| b.access == Access::ReadWrite)
            .map(|b| b.path.clone())
            .collect();
        assert_eq!(rw, vec![PathBuf::from("/home/alice/proj")]);
        let home = p
            .binds
            .iter()
            .find(|b| b.path == Path::new("/home/alice"))
            .unwrap();
        assert_eq!(
            (home.access, home.exec, home.idmap),
            (Access::ReadOnly, true, true)
        );
        let etc = p.binds.iter().find(|b| b.path == Path::new("/etc")).unwrap();
        assert_eq!(
            (etc.access, etc.exec, etc.idmap),
            (Access::ReadOnly, false, false)
        );
        // Parents are mounted before the trees inside them.
        let pos = |x: &str| p.binds.iter().position(|b| b.path == Path::new(x)).unwrap();
        assert!(pos("/home/alice") < pos("/home/alice/proj"));
        assert!(p.hidden.contains(&PathBuf::from("/home/alice/.ssh")));
        assert!(p
            .protected
            .contains(&PathBuf::from("/home/alice/proj/.git/hooks")));
        assert_eq!(p.network.mode, NetworkMode::None);
        assert_eq!(p.limits.memory, Some(4 << 30));
        assert_eq!(p.env.get("SECRET_TOKEN"), None);
        assert_eq!(p.env.get("PATH").map(String::as_str), Some("/usr/bin:/bin"));
        assert_eq!(p.env.get("HOME").map(String::as_str), Some("/home/alice"));
        assert_eq!(p.uid_map, "1000 2147000000 1\n");
        assert_eq!(p.idmap_uid_map.as_deref(), Some("0 2147000000 1\n"));
        assert!(p.exec_only.is_empty(), "{:?}", p.exec_only);
        // Mounts outside the executable places are noexec, /tmp and /etc included.
        for (path, exec) in [
            ("/etc", false),
            ("/tmp", false),
            ("/usr", true),
            ("/home/alice/proj/x", true),
        ] {
            assert_eq!(p.mount_needs_exec(Path::new(path)), exec, "{path}");
        }
        assert!(p
            .seccomp
            .iter()
            .any(|r| r.name == "clone3" && r.action == syscalls::Action::Errno(libc::ENOSYS)));
    }

    #[test]
    fn sudo_caller_needs_no_idmap() {
        let p = compile(&load("default").unwrap(), &ctx(1000, 1000), &env()).unwrap();
        assert!(p.binds.iter().all(|b| !b.idmap));
        assert_eq!(p.idmap_uid_map, None);
    }

    #[test]
    fn offline_analyst_has_no_writable_path() {
        let p = compile(&load("offline-analyst").unwrap(), &ctx(0, 5), &env()).unwrap();
        assert!(p.binds.iter().all(|b| b.access == Access::ReadOnly));
        assert!(p.binds.iter().any(|b| b.path == Path::new("/home/alice/proj")));
    }

    #[test]
    fn strict_exposes_only_the_workspace() {
        let p = compile(&load("strict").unwrap(), &ctx(0, 5), &env()).unwrap();
        assert_eq!(p.binds.len(), 1);
        assert_eq!(p.env.keys().collect::<Vec<_>>(), vec!["HOME", "PATH"]);
        assert_eq!(p.limits.pids, Some(16));
    }

    #[test]
    fn ip_allowlist_parses_allowlist() {
        let p = compile(&load("ip-allowlist").unwrap(), &ctx(0, 5), &env()).unwrap();
        assert_eq!(p.network.mode, NetworkMode::Allowlist);
        assert_eq!(p.network.allow[0].port, 8080);
    }

    #[test]
    fn root_workspace_refused() {
        let mut c = ctx(0, 5);
        c.workspace = "/".into();
        assert_eq!(
            compile(&load("default").unwrap(), &c, &env()).unwrap_err(),
            CompileError::RootWorkspace("/".into())
        );
    }
}
