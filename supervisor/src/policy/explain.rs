//! `cordon explain PROFILE --can 'ACTION'`: could the agent do this, and which layer decides?
//! Answered from the compiled policy — the same binds, stand-ins, read-only re-binds,
//! landlock places, seccomp rules and network policy the launcher applies (the rules
//! `launch::confine::landlock` adds are mirrored here: every bind readable, read-write binds
//! writable, executable places executable, the private /tmp writable and never executable,
//! /dev and /proc the sandbox's own) — with the profile line that causes it, and the monitor
//! rules the attempt would fire. `--verify` (the CLI) then does it for real in a throwaway
//! sandbox and compares.

use std::net::IpAddr;
use std::path::{Component, Path, PathBuf};

use serde::Serialize;

use super::{syscalls, Access, Policy};
use crate::glob;
use crate::profile::invariants::line_of;
use crate::profile::{NetworkMode, Profile};
use crate::text::Refusal;

/// What the agent would try.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Query {
    Read(PathBuf),
    Write(PathBuf),
    Exec(PathBuf),
    Connect(String, u16),
    Resolve(String),
    Syscall(String),
}

impl Query {
    /// `read ~/.ssh/id_rsa`, `write /etc/passwd`, `exec /tmp/x`, `connect 169.254.169.254:80`,
    /// `resolve evil.example`, `syscall bpf`. `~` is the profile's home.
    pub fn parse(q: &str, home: &Path) -> Result<Query, Refusal> {
        let (verb, arg) = q
            .trim()
            .split_once(char::is_whitespace)
            .map(|(v, a)| (v, a.trim()))
            .ok_or_else(|| format!("{q:?}: expected VERB ARGUMENT, e.g. 'write /etc/passwd'"))?;
        let path = || -> Result<PathBuf, Refusal> {
            let p = match arg.strip_prefix('~') {
                Some(rest) => home.join(rest.trim_start_matches('/')),
                None => PathBuf::from(arg),
            };
            if !p.is_absolute() {
                return Err(format!("{arg:?}: an absolute path (or one starting with ~) is needed").into());
            }
            Ok(normalize(&p))
        };
        Ok(match verb {
            "read" => Query::Read(path()?),
            "write" => Query::Write(path()?),
            "exec" => Query::Exec(path()?),
            "connect" => {
                let (host, port) = arg
                    .rsplit_once(':')
                    .ok_or_else(|| format!("connect {arg:?}: expected HOST:PORT"))?;
                let port = port
                    .parse()
                    .map_err(|_| format!("connect {arg:?}: {port:?} is not a port"))?;
                let host = host.trim_start_matches('[').trim_end_matches(']');
                Query::Connect(host.to_ascii_lowercase(), port)
            }
            "resolve" => Query::Resolve(arg.trim_end_matches('.').to_ascii_lowercase()),
            "syscall" => {
                if crate::kernel::resolve(arg).is_none() {
                    return Err(format!("syscall {arg:?}: no such syscall on x86_64").into());
                }
                Query::Syscall(arg.to_string())
            }
            other => {
                return Err(
                    format!("{other:?}: expected read, write, exec, connect, resolve or syscall").into(),
                )
            }
        })
    }
}

impl std::fmt::Display for Query {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Query::Read(p) => write!(f, "read {}", p.display()),
            Query::Write(p) => write!(f, "write {}", p.display()),
            Query::Exec(p) => write!(f, "exec {}", p.display()),
            Query::Connect(h, p) => write!(f, "connect {h}:{p}"),
            Query::Resolve(n) => write!(f, "resolve {n}"),
            Query::Syscall(s) => write!(f, "syscall {s}"),
        }
    }
}

/// The answer: yes or no, the layer that decides, why, the profile line, and what the
/// monitor would do about the attempt.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Answer {
    pub allowed: bool,
    pub layer: &'static str,
    pub why: String,
    pub at: Option<String>,
    pub monitor: Vec<String>,
}

fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in p.components() {
        match c {
            Component::Normal(s) => out.push(s),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

struct Cx<'a> {
    profile: &'a Profile,
    policy: &'a Policy,
    exists: &'a dyn Fn(&Path) -> bool,
}

impl Cx<'_> {
    /// `file:line` of the entry of one of `keys` that expands to `path`.
    fn line(&self, keys: &[(&str, &str)], path: &Path) -> Option<String> {
        let ctx = &self.policy.context;
        keys.iter().find_map(|(section, key)| {
            line_of(&self.profile.sources, &self.profile.texts, section, key, &|q| {
                let e = q
                    .replace("{home}", &ctx.home.to_string_lossy())
                    .replace("{workspace}", &ctx.workspace.to_string_lossy());
                Path::new(&e) == path
            })
        })
    }

    fn any_line(&self, section: &str, key: &str) -> Option<String> {
        line_of(&self.profile.sources, &self.profile.texts, section, key, &|_| {
            true
        })
    }

    /// The monitor rule among `rules` whose patterns match `path`, as "rule (response)".
    fn monitor_paths(&self, rule: &str, path: &Path) -> Vec<String> {
        let Some(r) = self.policy.monitor.rules.iter().find(|r| r.name == rule) else {
            return Vec::new();
        };
        let set = glob::Set::new(r.patterns.as_deref().unwrap_or_default());
        let s = path.to_string_lossy();
        let hit = match rule {
            // exec fires outside its allowed places.
            "exec" => set.matches(&s).is_none(),
            _ => set.matches(&s).is_some(),
        };
        if hit {
            vec![format!(
                "the monitor's {rule} rule would fire on the attempt ({})",
                r.response.name()
            )]
        } else {
            Vec::new()
        }
    }
}

const BIND_KEYS: &[(&str, &str)] = &[
    ("filesystem", "read_write"),
    ("filesystem", "state"),
    ("filesystem", "read_only"),
    ("filesystem", "own_credentials"),
    ("filesystem", "executable"),
];

/// Could the agent of `policy` (compiled from `profile`) do `q`? Paths are looked up on this
/// host (a protected path protects only when it exists at launch).
pub fn explain(profile: &Profile, policy: &Policy, q: &Query) -> Answer {
    explain_with(profile, policy, q, &|p: &Path| p.exists())
}

/// [`explain`] with the host's files looked up by `exists` (tests pretend).
pub fn explain_with(profile: &Profile, policy: &Policy, q: &Query, exists: &dyn Fn(&Path) -> bool) -> Answer {
    let cx = Cx {
        profile,
        policy,
        exists,
    };
    match q {
        Query::Read(p) | Query::Write(p) | Query::Exec(p) => path(&cx, q, p),
        Query::Connect(h, port) => connect(&cx, h, *port),
        Query::Resolve(n) => resolve(&cx, n),
        Query::Syscall(s) => syscall(&cx, s),
    }
}

fn answer(allowed: bool, layer: &'static str, why: String, at: Option<String>) -> Answer {
    Answer {
        allowed,
        layer,
        why,
        at,
        monitor: Vec::new(),
    }
}

fn path(cx: &Cx, q: &Query, p: &Path) -> Answer {
    let pol = cx.policy;
    let (write, exec) = (matches!(q, Query::Write(_)), matches!(q, Query::Exec(_)));
    let mut a = path_decision(cx, p, write, exec);
    let rule = match q {
        Query::Read(_) => "sensitive_read",
        Query::Write(_) => "sensitive_write",
        _ => "exec",
    };
    a.monitor = cx.monitor_paths(rule, p);
    // A path a grant may show.
    let grants = pol
        .grant_read
        .iter()
        .map(|g| (g, "read"))
        .chain(pol.grant_write.iter().map(|g| (g, "write")));
    for (g, how) in grants {
        if p.starts_with(g) && !a.allowed && (how == "write" || !write) {
            a.monitor.push(format!(
                "`cordon grant SANDBOX --{how} {}` can show it for a while ({})",
                g.display(),
                cx.line(&[("grants", how)], g).unwrap_or_else(|| "grants".into())
            ));
        }
    }
    a
}

fn path_decision(cx: &Cx, p: &Path, write: bool, exec: bool) -> Answer {
    let pol = cx.policy;
    if let Some(h) = pol
        .hidden
        .iter()
        .filter(|h| p.starts_with(h))
        .max_by_key(|h| h.components().count())
    {
        return answer(
            false,
            "mounts (hidden)",
            format!(
                "{} is hidden: an empty, read-only stand-in covers it",
                h.display()
            ),
            cx.line(&[("filesystem", "hidden")], h),
        );
    }
    if write {
        if let Some(pr) = pol
            .protected
            .iter()
            .filter(|x| p.starts_with(x))
            .max_by_key(|x| x.components().count())
        {
            if (cx.exists)(pr) {
                return answer(
                    false,
                    "mounts (protected)",
                    format!(
                        "{} is protected: bound read-only inside a writable place (EROFS)",
                        pr.display()
                    ),
                    cx.line(&[("filesystem", "protected")], pr),
                );
            }
            // A protected path is a read-only bind of what exists at launch: a missing one is
            // not there to bind, and the agent can create it.
            let mut a = bind_decision(cx, p, write, exec);
            a.why = format!(
                "{} — {} is protected but does not exist here: a protected path guards only what exists at launch, so the agent can create it",
                a.why,
                pr.display()
            );
            return a;
        }
    }
    bind_decision(cx, p, write, exec)
}

/// The decision of the binds, landlock's exec places and the sandbox's own filesystems.
fn bind_decision(cx: &Cx, p: &Path, write: bool, exec: bool) -> Answer {
    let pol = cx.policy;
    let bind = pol
        .binds
        .iter()
        .filter(|b| p.starts_with(&b.path))
        .max_by_key(|b| b.path.components().count());
    let exec_place = pol.exec_only.iter().find(|e| p.starts_with(e));
    if exec {
        let place = bind.filter(|b| b.exec).map(|b| &b.path).or(exec_place);
        return match place {
            Some(e) => answer(
                true,
                "landlock",
                format!("{} is an executable place (landlock allows exec; its mount is not noexec)", e.display()),
                cx.line(&[("filesystem", "executable")], e),
            ),
            None => answer(
                false,
                "landlock",
                format!(
                    "{} is not in an executable place (filesystem.executable): landlock refuses exec (EACCES) and its mount is noexec",
                    p.display()
                ),
                cx.any_line("filesystem", "executable"),
            ),
        };
    }
    if let Some(b) = bind {
        let at = cx.line(BIND_KEYS, &b.path);
        return match (b.access, write) {
            (_, false) => answer(
                true,
                "mounts",
                format!(
                    "{} is bound into the sandbox ({}): landlock allows reading",
                    b.path.display(),
                    access_name(b.access)
                ),
                at,
            ),
            (Access::ReadOnly, true) => answer(
                false,
                "mounts",
                format!(
                    "{} is bound read-only (EROFS); landlock allows only reading",
                    b.path.display()
                ),
                at,
            ),
            (Access::ReadWrite, true) => {
                let layer = pol.workspace_mode == crate::profile::WorkspaceMode::Transactional
                    && p.starts_with(&pol.context.workspace);
                let into = if layer {
                    " — into the run's transactional layer: the real workspace changes only on `cordon commit`"
                } else {
                    ""
                };
                answer(
                    true,
                    "mounts",
                    format!(
                        "{} is bound read-write; landlock allows writing{into}",
                        b.path.display()
                    ),
                    at,
                )
            }
        };
    }
    for (special, what) in [
        (
            "/tmp",
            "the sandbox's private /tmp (a tmpfs): nothing reaches the host's /tmp",
        ),
        ("/dev/shm", "the sandbox's private /dev/shm"),
        (
            "/proc",
            "the sandbox's own /proc: its own processes only, kernel knobs read-only",
        ),
        (
            "/dev",
            "the sandbox's own /dev: null, zero, full, random, urandom, tty, pts",
        ),
    ] {
        if p.starts_with(special) {
            return answer(true, "mounts", what.to_string(), None);
        }
    }
    answer(
        false,
        "mounts",
        format!(
            "nothing binds {} into the sandbox: it does not exist there (ENOENT)",
            p.display()
        ),
        None,
    )
}

fn access_name(a: Access) -> &'static str {
    match a {
        Access::ReadOnly => "read-only",
        Access::ReadWrite => "read-write",
    }
}

fn connect(cx: &Cx, host: &str, port: u16) -> Answer {
    let net = &cx.policy.network;
    let at = cx.any_line("network", "mode");
    let ip: Option<IpAddr> = host.parse().ok();
    let mut a = match net.mode {
        NetworkMode::None => answer(
            false,
            "network (landlock and the network namespace)",
            "landlock refuses every TCP connect and bind (EACCES), and the sandbox's own network namespace has nothing beyond it (UDP: no route)".into(),
            at,
        ),
        NetworkMode::Loopback => {
            let ok = ip.is_some_and(|i| i.is_loopback());
            let why = if ok {
                "loopback: the sandbox's own (its network namespace has only lo)".to_string()
            } else {
                "only the sandbox's own loopback exists (its own network namespace): no route".to_string()
            };
            answer(ok, "network", why, at)
        }
        // The proxy's sandbox has a network namespace of its own: its loopback is its own.
        NetworkMode::Proxy if ip.is_some_and(|i| i.is_loopback()) => answer(
            true,
            "network",
            "the sandbox's own loopback (its own network namespace; cordon's proxy takes every other connect): nothing leaves".into(),
            at,
        ),
        NetworkMode::Allowlist | NetworkMode::Proxy => {
            let by_addr = ip.and_then(|i| {
                net.allow
                    .iter()
                    .find(|d| d.port == port && within(i, d.addr, d.prefix))
            });
            let by_name = ip
                .is_none()
                .then(|| net.names.iter().find(|n| n.matches(host, port)))
                .flatten();
            let denied = net
                .deny
                .iter()
                .find(|d| d.to_string().split(':').next() == Some(host));
            match (
                by_addr
                    .map(ToString::to_string)
                    .or(by_name.map(ToString::to_string)),
                denied,
            ) {
                (_, Some(d)) => answer(
                    false,
                    "network (deny rule)",
                    format!("refused by the deny rule {d}"),
                    cx.any_line("network", "deny"),
                ),
                (Some(rule), None) => {
                    let how = if net.mode == NetworkMode::Proxy {
                        "through cordon's proxy (the agent's connects all go to it)"
                    } else {
                        "the kernel allowlist"
                    };
                    answer(
                        true,
                        "network",
                        format!("allowed by {rule}, {how}"),
                        cx.any_line("network", "allow"),
                    )
                }
                (None, None) => {
                    let why = if ip.is_none() && net.mode == NetworkMode::Allowlist {
                        "the allowlist holds addresses only: a name is never resolved".to_string()
                    } else if net.ask.is_some() {
                        "no rule allows it: the proxy holds the connection and asks a person (`unlisted = \"ask\"`)".to_string()
                    } else {
                        "no rule of the allowlist covers it: refused (EPERM in the kernel, or by the proxy)"
                            .to_string()
                    };
                    answer(false, "network", why, cx.any_line("network", "allow"))
                }
            }
        }
    };
    if !a.allowed {
        if let Some(r) = cx.policy.monitor.rules.iter().find(|r| r.name == "egress") {
            a.monitor.push(format!(
                "the monitor's egress rule would fire on the attempt ({})",
                r.response.name()
            ));
        }
    }
    a
}

fn within(ip: IpAddr, net: IpAddr, prefix: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

fn resolve(cx: &Cx, name: &str) -> Answer {
    let net = &cx.policy.network;
    match net.mode {
        NetworkMode::Proxy => match net.names.iter().find(|n| n.matches(name, n.port.unwrap_or(443))) {
            Some(r) => answer(
                true,
                "network (proxy DNS)",
                format!("the proxy answers for names its rules allow: {r}"),
                cx.any_line("network", "allow"),
            ),
            None => answer(
                false,
                "network (proxy DNS)",
                "the proxy answers no name its rules do not allow (the question is recorded)".into(),
                cx.any_line("network", "allow"),
            ),
        },
        _ => answer(
            false,
            "network",
            format!(
                "no resolver is reachable (network.mode = {:?}): every lookup fails",
                net.mode
            ),
            cx.any_line("network", "mode"),
        ),
    }
}

fn syscall(cx: &Cx, name: &str) -> Answer {
    let rules: Vec<&syscalls::Rule> = cx.policy.seccomp.iter().filter(|r| r.name == name).collect();
    let mut a = match rules.first() {
        None => answer(true, "seccomp", format!("the filter lets {name} through (the kernel may still refuse it: no capabilities, its own namespaces)"), None),
        Some(r) => {
            let what = match r.action {
                syscalls::Action::Errno(e) => format!("fails with {}", std::io::Error::from_raw_os_error(e)),
                syscalls::Action::KillProcess => "kills the process".into(),
            };
            let always = rules.iter().any(|r| r.when == syscalls::When::Always);
            let when = if always { "" } else { " with the arguments the rule names" };
            let at = line_of(&cx.profile.sources, &cx.profile.texts, "syscalls", "deny", &|q| q == name);
            let layer = if at.is_some() { "seccomp (the profile's rule)" } else { "seccomp (cordon's built-in rule)" };
            answer(!always, layer, format!("{name}{when} {what}: {}", r.reason), at)
        }
    };
    if let Some(r) = cx.policy.monitor.rules.iter().find(|r| r.name == "syscalls") {
        if r.patterns.iter().flatten().any(|n| n == name) {
            a.monitor.push(format!(
                "the monitor's syscalls rule would fire on the attempt ({})",
                r.response.name()
            ));
        }
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::compile;
    use crate::profile::load;

    fn ask(profile: &str, q: &str) -> Answer {
        let p = load(profile).unwrap();
        let ctx = crate::policy::test_context();
        let pol = compile(&p, &ctx, &Default::default()).unwrap();
        // The host is pretended to hold every path.
        explain_with(&p, &pol, &Query::parse(q, &ctx.home).unwrap(), &|_| true)
    }

    #[test]
    fn each_layer_answers_for_what_it_decides() {
        let a = ask("default", "write /etc/passwd");
        assert!(!a.allowed);
        assert_eq!(a.layer, "mounts");
        assert!(a.why.contains("/etc is bound read-only"), "{}", a.why);
        assert!(
            a.at.as_deref().is_some_and(|l| l.starts_with("preset:default:")),
            "{:?}",
            a.at
        );
        assert!(a.monitor.iter().any(|m| m.contains("sensitive_write")) || a.monitor.is_empty());

        let a = ask("default", "read ~/.ssh/id_rsa");
        assert_eq!((a.allowed, a.layer), (false, "mounts (hidden)"));
        assert!(
            a.monitor
                .iter()
                .any(|m| m.contains("sensitive_read") && m.contains("freeze")),
            "{:?}",
            a.monitor
        );

        let a = ask("default", "write ~/proj/.git/hooks/pre-commit");
        assert_eq!((a.allowed, a.layer), (false, "mounts (protected)"));
        assert!(ask("default", "write ~/proj/src/main.rs").allowed);
        assert!(ask("default", "read /etc/hostname").allowed);

        let a = ask("default", "exec /tmp/x");
        assert_eq!((a.allowed, a.layer), (false, "landlock"));
        assert!(ask("default", "exec /usr/bin/true").allowed);
        assert!(!ask("default", "read /srv/data").allowed);

        let a = ask("default", "connect 169.254.169.254:80");
        assert_eq!(
            (a.allowed, a.layer),
            (false, "network (landlock and the network namespace)")
        );
        assert!(a.monitor.iter().any(|m| m.contains("egress")));
        assert!(!ask("default", "resolve evil.example").allowed);

        let a = ask("default", "syscall bpf");
        assert_eq!((a.allowed, a.layer), (false, "seccomp (cordon's built-in rule)"));
        assert!(a.monitor.iter().any(|m| m.contains("syscalls rule")));
        assert!(ask("default", "syscall getpid").allowed);

        // The agent preset: its API by name through the proxy, nothing else.
        let a = ask("agent", "connect api.anthropic.com:443");
        assert!(a.allowed, "{a:?}");
        assert!(!ask("agent", "connect evil.example:443").allowed);
        assert!(ask("agent", "connect 127.0.0.1:9").allowed, "its own loopback");
        assert!(ask("agent", "resolve api.openai.com").allowed);
        assert!(!ask("agent", "resolve evil.example").allowed);
    }

    #[test]
    fn bad_questions_are_refused_clearly() {
        let home = Path::new("/h");
        for (q, why) in [
            ("frobnicate /x", "expected read, write"),
            ("read", "expected VERB ARGUMENT"),
            ("read relative/x", "absolute path"),
            ("connect host", "HOST:PORT"),
            ("connect host:http", "not a port"),
            ("syscall nosuch", "no such syscall"),
        ] {
            let e = Query::parse(q, home).unwrap_err();
            assert!(e.0.contains(why), "{q}: {}", e.0);
        }
        assert_eq!(
            Query::parse("read ~/a/../b", home).unwrap(),
            Query::Read("/h/b".into())
        );
    }
}
