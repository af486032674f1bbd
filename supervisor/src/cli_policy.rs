//! `cordon explain PROFILE --can 'ACTION' [--verify]`: the answer of the compiled policy
//! (`policy::explain`), and with `--verify` the same action done for real by a shell in a
//! throwaway sandbox of that profile (extended with every monitor rule at `log`: a rule would
//! freeze the very probe it is asked about), compared with the answer. A disagreement is a
//! bug in the model or in the sandbox: exit 1, loudly.

use anyhow::{Context as _, Result};
use cordon::policy::explain::{explain, Answer, Query};
use cordon::policy::{self, NetworkPolicy};
use cordon::profile::{self, NetworkMode};
use cordon::text;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// What the probe in the sandbox found.
enum Seen {
    Allowed(String),
    Refused(String),
    /// Not done (why).
    Skipped(String),
}

pub fn explain_cmd(
    profile_name: &str,
    can: &[String],
    pol: &policy::Policy,
    p: &profile::Profile,
    verify: bool,
    json: bool,
) -> Result<i32> {
    let mut disagreements = 0;
    // The probes run under the profile with every monitor rule at `log` (a rule would freeze
    // the very probe it is asked about); the sandbox is otherwise the profile's.
    let scratch = std::env::temp_dir().join(format!("cordon-explain.{}", std::process::id()));
    let probe_profile = if verify {
        std::fs::create_dir_all(&scratch).with_context(|| format!("create {}", scratch.display()))?;
        logging_profile(profile_name, p, &scratch)?
    } else {
        String::new()
    };
    let code = answer_all(
        profile_name,
        &probe_profile,
        can,
        pol,
        p,
        verify,
        json,
        &mut disagreements,
    );
    if verify {
        let _ = std::fs::remove_dir_all(&scratch);
    }
    code?;
    if disagreements > 0 {
        text::eprint(&format!(
            "{disagreements} answer(s) disagree with what the sandbox did: the model or the sandbox is wrong"
        ));
        return Ok(1);
    }
    Ok(0)
}

#[allow(clippy::too_many_arguments)]
fn answer_all(
    profile_name: &str,
    probe_profile: &str,
    can: &[String],
    pol: &policy::Policy,
    p: &profile::Profile,
    verify: bool,
    json: bool,
    disagreements: &mut u32,
) -> Result<()> {
    for q in can {
        let query = Query::parse(q, &pol.context.home).map_err(|e| anyhow::anyhow!(e.0))?;
        let a = explain(p, pol, &query);
        let seen = verify.then(|| probe(profile_name, probe_profile, pol, &query));
        let agrees = match &seen {
            Some(Seen::Allowed(_)) => a.allowed,
            Some(Seen::Refused(_)) => !a.allowed,
            _ => true,
        };
        if !agrees {
            *disagreements += 1;
        }
        if json {
            let verified = seen.as_ref().map(|s| match s {
                Seen::Allowed(d) => serde_json::json!({"allowed": true, "detail": d, "agrees": agrees}),
                Seen::Refused(d) => serde_json::json!({"allowed": false, "detail": d, "agrees": agrees}),
                Seen::Skipped(d) => serde_json::json!({"skipped": d}),
            });
            println!(
                "{}",
                serde_json::json!({"query": query.to_string(), "answer": a, "verified": verified})
            );
        } else {
            print_answer(&query, &a);
            match &seen {
                Some(Seen::Allowed(d)) | Some(Seen::Refused(d)) => {
                    let did = if matches!(seen, Some(Seen::Allowed(_))) {
                        "done"
                    } else {
                        "refused"
                    };
                    let verdict = if agrees {
                        "agrees"
                    } else {
                        "DISAGREES with the answer above"
                    };
                    println!(
                        "  verified in a sandbox of {profile_name}: {did} ({}) — {verdict}",
                        text::escape(d)
                    );
                }
                Some(Seen::Skipped(why)) => println!("  not verified: {why}"),
                None => {}
            }
        }
    }
    Ok(())
}

/// A profile extending `name` whose monitor rules only log, written in `dir`.
fn logging_profile(name: &str, p: &profile::Profile, dir: &Path) -> Result<String> {
    let base = if name.contains('/') || name.ends_with(".toml") {
        std::fs::canonicalize(name)
            .with_context(|| format!("profile {name}"))?
            .to_string_lossy()
            .into_owned()
    } else {
        name.to_string()
    };
    // A TOML basic string is a JSON string.
    let mut text = format!("extends = {}\n", serde_json::to_string(&base)?);
    for r in &p.monitor.rules {
        text.push_str(&format!("[monitor.{}]\nresponse = \"log\"\n", r.name));
    }
    let f = dir.join("explain-verify.toml");
    std::fs::write(&f, text).with_context(|| format!("write {}", f.display()))?;
    Ok(f.to_string_lossy().into_owned())
}

fn print_answer(q: &Query, a: &Answer) {
    let yes = if a.allowed { "yes" } else { "no" };
    let at = a.at.as_ref().map(|l| format!(" ({l})")).unwrap_or_default();
    println!(
        "{}: {yes} — {}: {}{at}",
        text::escape(&q.to_string()),
        a.layer,
        text::escape(&a.why)
    );
    for m in &a.monitor {
        println!("  {}", text::escape(m));
    }
}

/// Do `q` for real in a sandbox of the profile.
fn probe(profile_name: &str, probe_profile: &str, pol: &policy::Policy, q: &Query) -> Seen {
    // The probe is a shell: a profile that shows none cannot be probed this way.
    if !std::path::Path::new("/bin/sh").exists()
        || !pol
            .binds
            .iter()
            .any(|b| b.exec && Path::new("/bin/sh").starts_with(&b.path))
    {
        return Seen::Skipped(format!("{profile_name} lets no /bin/sh run to probe with"));
    }
    if let Query::Read(p) = q {
        if std::fs::symlink_metadata(p).is_err() {
            return Seen::Skipped("nothing is there on the host to read".into());
        }
        let empty = if p.is_dir() {
            std::fs::read_dir(p).is_ok_and(|mut d| d.next().is_none())
        } else {
            std::fs::metadata(p).is_ok_and(|m| m.len() == 0)
        };
        if empty {
            return Seen::Skipped(
                "it is empty on the host: reading it cannot tell a stand-in from it".into(),
            );
        }
    }
    let (script, arg): (&str, String) = match q {
        Query::Read(p) if p.is_dir() => ("ls -A -- \"$1\" | head -c1 | wc -c", path_arg(p)),
        // The shell opens it (a failure ends the script); then: did it hold anything?
        Query::Read(p) => ("exec 3< \"$1\" && head -c1 <&3 | wc -c", path_arg(p)),
        Query::Write(p) if p.is_dir() => (
            "f=\"$1/.cordon-explain-$$\" && : > \"$f\" && rm -f -- \"$f\" && echo written",
            path_arg(p),
        ),
        // Opened for appending, nothing written: the file stays as it was.
        Query::Write(p) if p.exists() => ("exec 3>> \"$1\" && echo opened", path_arg(p)),
        Query::Write(p) => (": > \"$1\" && rm -f -- \"$1\" && echo created", path_arg(p)),
        Query::Exec(p) if p.is_file() => (
            "\"$1\" --version </dev/null >/dev/null 2>&1; s=$?; [ $s -ne 126 ] && [ $s -ne 127 ] && echo ran",
            path_arg(p),
        ),
        Query::Exec(p) => (
            "cp /bin/true \"$1\" 2>/dev/null || exit 3; \"$1\"; s=$?; rm -f -- \"$1\"; [ $s -eq 0 ] && echo ran",
            path_arg(p),
        ),
        Query::Connect(host, port) => return connect_probe(probe_profile, pol, host, *port),
        Query::Resolve(_) => return Seen::Skipped("a lookup would go to the host's resolver when the profile allows it".into()),
        Query::Syscall(_) => {
            return Seen::Skipped(
                "EPERM is also the kernel's own answer to a process without capabilities: the effect cannot tell the layers apart".into(),
            )
        }
    };
    run_probe(probe_profile, pol, script, &arg)
}

fn path_arg(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

fn connect_probe(profile_name: &str, pol: &policy::Policy, host: &str, port: u16) -> Seen {
    let NetworkPolicy { mode, .. } = &pol.network;
    let loopback = host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if !(loopback || *mode == NetworkMode::None) {
        return Seen::Skipped(
            "it would send traffic beyond this machine (verified only for loopback, or with no network)"
                .into(),
        );
    }
    if !Path::new("/usr/bin/python3").exists() {
        return Seen::Skipped("no /usr/bin/python3 to connect with".into());
    }
    // Refused by the peer means the network let it through.
    let script = "/usr/bin/python3 -c 'import socket,sys\ns=socket.socket(socket.AF_INET6 if \":\" in sys.argv[1] else socket.AF_INET)\ns.settimeout(2)\ntry:\n s.connect((sys.argv[1], int(sys.argv[2]))); print(\"connected\")\nexcept ConnectionRefusedError: print(\"refused by the peer\")\n' \"$1\" \"$2\"";
    run_probe_args(profile_name, pol, script, &[host.to_string(), port.to_string()])
}

fn run_probe(profile_name: &str, pol: &policy::Policy, script: &str, arg: &str) -> Seen {
    run_probe_args(profile_name, pol, script, &[arg.to_string()])
}

fn run_probe_args(profile_name: &str, pol: &policy::Policy, script: &str, args: &[String]) -> Seen {
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("cordon"));
    let out = Command::new(exe)
        .args(["run", "-q", "--profile", profile_name, "--workspace"])
        .arg(&pol.context.workspace)
        .args(["--", "/bin/sh", "-c", script, "sh"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("cordon run");
    let out = match out {
        Ok(o) => o,
        Err(e) => return Seen::Skipped(format!("the sandbox did not start: {e:#}")),
    };
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    let last_err = stderr.lines().last().unwrap_or("").to_string();
    match out.status.code() {
        Some(125) => Seen::Skipped(format!("the sandbox did not start: {last_err}")),
        // The exec probe could not put a program where none is: nothing to run there.
        Some(3) if script.starts_with("cp /bin/true") => {
            Seen::Skipped("nothing is there to run, and the sandbox cannot put a program there".into())
        }
        Some(0) if stdout == "0" => Seen::Refused("opened, but empty: a stand-in, or an empty file".into()),
        Some(0) => Seen::Allowed(stdout),
        Some(code) => Seen::Refused(if last_err.is_empty() {
            format!("exit status {code}")
        } else {
            last_err
        }),
        None => Seen::Refused("killed by a signal".into()),
    }
}

/// `cordon why TRACE SEQ`: the recorded event SEQ (a refusal, an attempt, a detection)
/// explained against the policy the run was held to — its profile resolved again from the
/// texts the trace recorded, compiled for the recorded workspace and home.
pub fn why_cmd(trace: &Path, seq: u64) -> Result<i32> {
    use cordon::trace::pb::record::Body;
    let mut header = None;
    let mut events = Vec::new();
    let report = cordon::trace::show::replay(trace, |rec| {
        match &rec.body {
            Some(Body::Header(h)) => header = Some(h.clone()),
            Some(Body::Event(e)) => events.push(e.clone()),
            _ => {}
        }
        true
    })
    .map_err(anyhow::Error::msg)?;
    if !report.valid() {
        text::eprint(&format!(
            "{}: the trace does not verify (`cordon trace verify` says where): explaining what it holds anyway",
            trace.display()
        ));
    }
    let h = header.with_context(|| format!("{}: no header", trace.display()))?;
    let Some(e) = events.iter().find(|e| e.seq == seq) else {
        anyhow::bail!(
            "{}: no event {seq} (it holds {} events)",
            trace.display(),
            events.len()
        );
    };
    let sources: Vec<(String, String)> = h
        .profile_sources
        .iter()
        .map(|s| (s.label.clone(), s.text.clone()))
        .collect();
    let p = profile::from_recorded(&h.profile_name, &sources)?;
    let ctx = recorded_context(&h)?;
    let pol = policy::compile(&p, &ctx, &Default::default())?;
    println!("event {seq}: {}", text::escape(&cordon::events::text(e, false)));
    let mut subjects = vec![e.clone()];
    if let Some(cordon::events::pb::event::Kind::Detection(d)) = &e.kind {
        let rule = pol.monitor.rules.iter().find(|r| r.name == d.rule);
        let at = rule.and_then(|_| {
            let section = format!("monitor.{}", d.rule);
            profile::invariants::line_of(&p.sources, &p.texts, &section, "response", &|_| true)
                .or_else(|| profile::invariants::line_of(&p.sources, &p.texts, &section, "paths", &|_| true))
        });
        println!(
            "  rule {} ({}) of the profile{}",
            d.rule,
            rule.map_or("not in the recorded profile: a built-in check", |r| r
                .response
                .name()),
            at.map(|a| format!(", {a}")).unwrap_or_default()
        );
        subjects = Vec::new();
        for s in d.evidence.iter().take(3) {
            match events.iter().find(|e| e.seq == *s) {
                Some(ev) => subjects.push(ev.clone()),
                // Routine reads (read-only opens that succeeded or found nothing) are
                // summarised in the trace, not recorded one by one.
                None => println!("  evidence {s}: not in the trace (a routine read, summarised)"),
            }
        }
        // A path rule names the path in its summary ("openat of /p (ENOENT; …"): explained
        // even when its event was summarised.
        if subjects.is_empty() {
            let path = d
                .summary
                .split_once(" of ")
                .and_then(|(_, rest)| rest.split_once(" ("))
                .map(|(p, _)| p);
            let q = match (d.rule.as_str(), path) {
                ("sensitive_read", Some(p)) => Some(Query::Read(PathBuf::from(p))),
                ("sensitive_write", Some(p)) => Some(Query::Write(PathBuf::from(p))),
                _ => None,
            };
            if let Some(q) = q.filter(|q| matches!(q, Query::Read(p) | Query::Write(p) if p.is_absolute())) {
                print_answer(&q, &explain(&p, &pol, &q));
            }
        }
    }
    for ev in &subjects {
        let Some(q) = query_of(ev, &pol.context.workspace) else {
            if ev.seq != seq {
                println!(
                    "  evidence {}: {}",
                    ev.seq,
                    text::escape(&cordon::events::text(ev, false))
                );
            }
            continue;
        };
        if ev.seq != seq {
            println!(
                "  evidence {}: {}",
                ev.seq,
                text::escape(&cordon::events::text(ev, false))
            );
        }
        print_answer(&q, &explain(&p, &pol, &q));
    }
    Ok(0)
}

/// The action an event records, as a question for `explain`.
fn query_of(e: &cordon::events::pb::Event, workspace: &Path) -> Option<Query> {
    use cordon::events::pb::event::Kind;
    let abs = |p: &str| -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            workspace.join(p)
        }
    };
    match e.kind.as_ref()? {
        Kind::Syscall(s) => {
            let flags = match s.name.as_str() {
                "open" => s.args.get(1).copied(),
                "openat" => s.args.get(2).copied(),
                _ => None,
            };
            #[allow(clippy::cast_possible_truncation)]
            let writes = |f: u64| {
                (f as i32) & (libc::O_WRONLY | libc::O_RDWR | libc::O_CREAT | libc::O_TRUNC | libc::O_APPEND)
                    != 0
            };
            Some(match s.name.as_str() {
                "open" | "openat" if !s.path.is_empty() => {
                    if flags.is_some_and(writes) {
                        Query::Write(abs(&s.path))
                    } else {
                        Query::Read(abs(&s.path))
                    }
                }
                "openat2" | "creat" | "unlink" | "unlinkat" | "rmdir" | "mkdir" | "mkdirat" | "rename"
                | "renameat" | "renameat2" | "link" | "linkat" | "symlink" | "symlinkat" | "chmod"
                | "fchmodat" | "fchmodat2" | "chown" | "fchownat" | "lchown" | "truncate" | "mknod"
                | "mknodat"
                    if !s.path.is_empty() =>
                {
                    Query::Write(abs(&s.path))
                }
                "execve" | "execveat" if !s.path.is_empty() => Query::Exec(abs(&s.path)),
                "connect" | "sendto" | "sendmsg" => {
                    let a = s
                        .addr
                        .as_ref()
                        .filter(|a| a.family == "inet" || a.family == "inet6")?;
                    Query::Connect(a.ip.clone(), u16::try_from(a.port).ok()?)
                }
                name => Query::Syscall(name.to_string()),
            })
        }
        Kind::Exec(x) => Some(Query::Exec(abs(&x.filename))),
        Kind::Connection(c) => {
            let host = if c.name.is_empty() {
                c.ip.clone()
            } else {
                c.name.clone()
            };
            Some(Query::Connect(host, u16::try_from(c.port).ok()?))
        }
        Kind::Net(n) if n.op == "connect" => Some(Query::Connect(n.ip.clone(), u16::try_from(n.port).ok()?)),
        _ => None,
    }
}

/// `cordon profile suggest --from TRACE…`: the least profile under which these runs would
/// have done what they did (`policy::suggest`), checked (`prove`) before it is printed.
pub fn suggest_cmd(traces: &[PathBuf], base: Option<&str>, out: Option<&Path>) -> Result<i32> {
    use cordon::events::pb::event::Kind;
    use cordon::policy::suggest::{suggest, Usage};
    use cordon::trace::pb::record::Body;
    let mut u = Usage::default();
    let mut ctx = None;
    let mut recorded_profile = None;
    for t in traces {
        let mut header = None;
        let mut events = Vec::new();
        let mut reads = Vec::new();
        let r = cordon::trace::show::replay(t, |rec| {
            match &rec.body {
                Some(Body::Header(h)) => header = Some(h.clone()),
                Some(Body::Event(e)) => events.push(e.clone()),
                Some(Body::Reads(s)) => {
                    reads.extend(s.paths.iter().filter(|p| p.opened > 0).map(|p| p.path.clone()))
                }
                _ => {}
            }
            true
        })
        .map_err(anyhow::Error::msg)?;
        if !r.valid() {
            anyhow::bail!(
                "{}: the trace does not verify (`cordon trace verify`): not suggesting from it",
                t.display()
            );
        }
        let h = header.with_context(|| format!("{}: no header", t.display()))?;
        let ws = PathBuf::from(&h.workspace);
        recorded_profile.get_or_insert(h.profile_name.clone());
        if ctx.is_none() {
            ctx = Some(recorded_context(&h)?);
        }
        u.traces.push(t.display().to_string());
        let abs = |p: &str| {
            if Path::new(p).is_absolute() {
                PathBuf::from(p)
            } else {
                ws.join(p)
            }
        };
        u.read.extend(reads.iter().map(|p| abs(p)));
        for e in &events {
            match e.kind.as_ref() {
                Some(Kind::Syscall(s)) if !s.path.is_empty() => {
                    let refused = s.denied || matches!(s.errno.as_str(), "EACCES" | "EPERM" | "EROFS");
                    if refused {
                        u.refused.insert(format!("{} {}: {}", s.name, s.path, s.errno));
                        continue;
                    }
                    if !(s.completed && s.ret >= 0) {
                        continue;
                    }
                    match query_of(e, &ws) {
                        Some(Query::Read(p)) => {
                            u.read.insert(p);
                        }
                        Some(Query::Write(p)) => {
                            u.written.insert(p);
                            if !s.path2.is_empty() {
                                u.written.insert(abs(&s.path2));
                            }
                        }
                        Some(Query::Exec(p)) => {
                            u.executed.insert(p);
                        }
                        _ => {}
                    }
                }
                Some(Kind::Exec(x)) => {
                    u.executed.insert(abs(&x.filename));
                }
                Some(Kind::Connection(c)) if c.allowed => {
                    let host = if c.name.is_empty() { &c.ip } else { &c.name };
                    u.reached.insert(format!("{host}:{}", c.port));
                }
                Some(Kind::Connection(c)) => {
                    u.refused
                        .insert(format!("connect {}:{}: {}", c.name, c.port, c.reason));
                }
                _ => {}
            }
        }
    }
    let ctx = ctx.context("no trace given")?;
    // The kernel follows symlinks inside open and execve without an event: each hop of a
    // used path is a place too (/usr/bin/awk -> /etc/alternatives/awk -> /usr/bin/mawk).
    for set in [&mut u.executed, &mut u.read] {
        let hops: Vec<PathBuf> = set.iter().flat_map(|p| symlink_hops(p)).collect();
        set.extend(hops);
    }
    let recorded = recorded_profile.unwrap_or_default();
    let base = base.map_or_else(
        || {
            if recorded.contains('/') || recorded.ends_with(".toml") {
                "default".to_string()
            } else {
                recorded.clone()
            }
        },
        str::to_string,
    );
    let text = suggest(&base, &ctx, &u);
    // Checked before anyone uses it: it loads, and it keeps every promise of its base.
    let dir = std::env::temp_dir().join(format!("cordon-suggest.{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let file = match out {
        Some(o) => o.to_path_buf(),
        None => dir.join("suggested.toml"),
    };
    std::fs::write(&file, &text).with_context(|| format!("write {}", file.display()))?;
    let checked = (|| -> Result<policy::prove::Proof> {
        let p = profile::load(&file.to_string_lossy())?;
        let pol = policy::compile(&p, &ctx, &Default::default())?;
        Ok(policy::prove::prove(&p, &pol))
    })();
    let _ = std::fs::remove_dir_all(&dir);
    let proof = checked?;
    if out.is_none() {
        print!("{text}");
    }
    for b in &proof.broken {
        text::eprint(&b.to_string());
    }
    text::eprint(&format!(
        "suggested from {} trace(s), extending {base}: {} invariants proven{}",
        traces.len(),
        proof.kept.len(),
        out.map(|o| format!("; written to {}", o.display()))
            .unwrap_or_default()
    ));
    Ok(if proof.broken.is_empty() { 0 } else { 1 })
}

/// The context a recorded run was compiled for: its workspace, and its home (a line of the
/// recorded policy; older traces: the invoking user's home).
fn recorded_context(h: &cordon::trace::pb::Header) -> Result<policy::Context> {
    let home = h
        .policy
        .lines()
        .find_map(|l| l.strip_prefix("home "))
        .map(|v| PathBuf::from(v.trim()))
        .or_else(|| {
            nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(h.invoking_uid))
                .ok()
                .flatten()
                .map(|u| u.dir)
        })
        .context("the trace records no home and its invoking user has none")?;
    Ok(policy::Context {
        workspace: PathBuf::from(&h.workspace),
        home,
        owner_uid: h.invoking_uid,
        owner_gid: h.invoking_uid,
        agent_uid: 0,
        agent_gid: 0,
    })
}

/// A fresh directory for the selftest's sandbox to use as its workspace.
pub fn selftest_workspace() -> Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    let ws = std::env::temp_dir().join(format!("cordon-selftest.{}", std::process::id()));
    std::fs::create_dir_all(&ws).with_context(|| format!("create {}", ws.display()))?;
    std::fs::set_permissions(&ws, std::fs::Permissions::from_mode(0o755))?;
    Ok(ws)
}

/// `cordon selftest`: the battery (`cordon::selftest`) run by a copy of this binary inside a
/// sandbox of the profile (its monitor at `log`: the battery is all attacks).
pub fn selftest_cmd(
    profile_name: &str,
    p: &profile::Profile,
    pol: &policy::Policy,
    json: bool,
    port: Option<u16>,
) -> Result<i32> {
    use cordon::selftest::{Attempt, Setup};
    use std::os::unix::fs::PermissionsExt as _;
    let ws = &pol.context.workspace;
    let probe = ws.join("cordon-selftest");
    std::fs::copy(std::env::current_exe()?, &probe).context("copy cordon into the selftest's workspace")?;
    std::fs::set_permissions(&probe, std::fs::Permissions::from_mode(0o755))?;
    let listener = std::net::TcpListener::bind(("127.0.0.1", port.unwrap_or(0)))
        .context("a port on the host's loopback")?;
    // The places the profile promises are never written: each one that exists is tried.
    let exceptions: Vec<String> = p
        .invariants
        .never_write
        .iter()
        .filter_map(|x| x.strip_prefix('!'))
        .map(|x| expand(pol, x))
        .collect();
    let never_write: Vec<PathBuf> = p
        .invariants
        .never_write
        .iter()
        .filter(|x| !x.starts_with('!'))
        .map(|x| policy::prove::literal_start(&expand(pol, x)))
        .filter(|d| d.is_dir() && d != Path::new("/") && !d.starts_with("/tmp") && !d.starts_with(ws))
        .filter(|d| {
            !exceptions
                .iter()
                .any(|x| d.starts_with(policy::prove::literal_start(x)))
        })
        .collect();
    let setup = Setup {
        host_port: listener.local_addr()?.port(),
        never_write,
        home: pol.context.home.clone(),
        ssh_entries_on_host: std::fs::read_dir(pol.context.home.join(".ssh")).map_or(0, |d| d.count()),
        pids: p.limits.pids,
    };
    let scratch = ws.join(".profile");
    std::fs::create_dir_all(&scratch)?;
    let logging = logging_profile(profile_name, p, &scratch)?;
    let out = Command::new(std::env::current_exe()?)
        .args(["run", "-q", "--profile", &logging, "--workspace"])
        .arg(ws)
        .arg("--")
        .arg(&probe)
        .args(["__selftest", &serde_json::to_string(&setup)?])
        .stdin(Stdio::null())
        .output()
        .context("cordon run")?;
    drop(listener);
    let attempts: Vec<Attempt> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    if attempts.is_empty() {
        let err = String::from_utf8_lossy(&out.stderr);
        let why = match out.status.code() {
            Some(126 | 127) => "the probe (a copy of cordon, placed in the workspace) cannot run there: the profile lets nothing run from the workspace, or shows no C library".to_string(),
            code => format!("exit {code:?}: {}", err.lines().last().unwrap_or("").trim()),
        };
        anyhow::bail!("the battery did not run inside a sandbox of {profile_name}: {why}");
    }
    let through = attempts.iter().filter(|a| !a.blocked).count();
    let lacking: Vec<String> = cordon::doctor::checks()
        .into_iter()
        .filter(|c| !c.ok)
        .map(|c| format!("{}: {}", c.layer, c.detail))
        .collect();
    if json {
        println!(
            "{}",
            serde_json::json!({"profile": profile_name, "attempts": attempts, "got_through": through, "host_lacks": lacking})
        );
    } else {
        for a in &attempts {
            let verdict = if a.blocked { "blocked    " } else { "GOT THROUGH" };
            println!(
                "{verdict} {:<11} {} — {} ({})",
                a.family,
                text::escape(&a.what),
                a.layer,
                text::escape(&a.detail)
            );
        }
        for l in &lacking {
            println!("this host lacks: {}", text::escape(l));
        }
        println!(
            "{profile_name}: {} attempts, {} blocked, {through} got through",
            attempts.len(),
            attempts.len() - through
        );
    }
    Ok(if through > 0 { 1 } else { 0 })
}

fn expand(pol: &policy::Policy, pat: &str) -> String {
    pat.replace("{home}", &pol.context.home.to_string_lossy())
        .replace("{workspace}", &pol.context.workspace.to_string_lossy())
}

/// The paths a symlink chain at `p` passes through on this host (at most 8 hops; the links in
/// its parent directories are not followed).
fn symlink_hops(p: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut cur = p.to_path_buf();
    for _ in 0..8 {
        let Ok(target) = std::fs::read_link(&cur) else {
            break;
        };
        let next = if target.is_absolute() {
            target
        } else {
            cur.parent().unwrap_or(Path::new("/")).join(target)
        };
        out.push(next.clone());
        cur = next;
    }
    out
}
