//! Commands that read recorded runs: `cordon why TRACE SEQ` and `cordon profile suggest
//! --from TRACE…`, over one reader of a trace (`Recorded`).

use super::print_answer;
use anyhow::{Context as _, Result};
use cordon::policy;
use cordon::policy::explain::{explain, Query};
use cordon::profile;
use cordon::text;
use std::path::{Path, PathBuf};

/// What a trace holds for these commands.
struct Recorded {
    header: cordon::trace::pb::Header,
    events: Vec<cordon::events::pb::Event>,
    /// Paths its read summaries say were opened.
    reads: Vec<String>,
    /// The hash chain and signatures verify.
    valid: bool,
}

impl Recorded {
    fn read(trace: &Path) -> Result<Recorded> {
        use cordon::trace::pb::record::Body;
        let (mut header, mut events, mut reads) = (None, Vec::new(), Vec::new());
        let report = cordon::trace::show::replay(trace, |rec| {
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
        Ok(Recorded {
            header: header.with_context(|| format!("{}: no header", trace.display()))?,
            events,
            reads,
            valid: report.valid(),
        })
    }
}

/// `cordon why TRACE SEQ`: the recorded event SEQ (a refusal, an attempt, a detection)
/// explained against the policy the run was held to — its profile resolved again from the
/// texts the trace recorded, compiled for the recorded workspace and home.
pub fn why_cmd(trace: &Path, seq: u64) -> Result<i32> {
    let Recorded {
        header: h,
        events,
        valid,
        ..
    } = Recorded::read(trace)?;
    if !valid {
        text::eprint(&format!(
            "{}: the trace does not verify (`cordon trace verify` says where): explaining what it holds anyway",
            trace.display()
        ));
    }
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
    let mut u = Usage::default();
    let mut ctx = None;
    let mut recorded_profile = None;
    for t in traces {
        let Recorded {
            header: h,
            events,
            reads,
            valid,
        } = Recorded::read(t)?;
        if !valid {
            anyhow::bail!(
                "{}: the trace does not verify (`cordon trace verify`): not suggesting from it",
                t.display()
            );
        }
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
