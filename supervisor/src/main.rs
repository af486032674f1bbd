//! The `cordon` command line.

use anyhow::{bail, Context as _, Result};
use clap::Parser;
use cordon::{doctor, identity::Identity, launch, policy, profile, text};
use std::collections::BTreeMap;
use std::path::PathBuf;

mod cli_approvals;
mod cli_args;
mod cli_changes;
mod cli_policy;
mod cli_run;

use cli_args::{Cli, Cmd, KeyCmd, NetCmd, ProbesCmd, ProfileCmd, RunArgs, RunOnly, RunOnlyCmd, TraceCmd};
use cli_run::{run, RunOutput};

use cordon::exit;

fn main() {
    text::milestone("main");
    let cli = parse(cli_approvals::argv());
    // A command that prints (`cordon profile list | head`) ends quietly when its reader goes
    // away. Not `run`: its proxy and relays write to sockets, where EPIPE is an answer.
    let run = matches!(cli.cmd, Cmd::Run(..));
    if !run {
        // SAFETY: setting a signal's disposition to the default touches no memory.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    let code = match dispatch(cli.cmd) {
        Ok(code) => code,
        Err(e) => {
            let not_found = e
                .downcast_ref::<launch::LaunchError>()
                .is_some_and(|l| matches!(l, launch::LaunchError::NotFound(..)));
            text::eprint(&format!("error: {e:#}"));
            if not_found {
                exit::NOT_FOUND
            } else {
                exit::CORDON_ERROR
            }
        }
    };
    text::milestone("exit");
    if run {
        // The address space is torn down after cordon is gone, not before its caller's wait
        // returns (a failure only means cordon tears it down itself).
        let _ = cordon::sys::leave_memory_to_heir();
    }
    std::process::exit(code);
}

/// The command line: `cordon run …` by a parser that knows only `run` (a launch does not build
/// every other subcommand's arguments); anything it does not take cleanly (help, an error) is
/// parsed again by the whole `Cli`, which prints what it always printed.
fn parse(argv: Vec<std::ffi::OsString>) -> Cli {
    if argv.get(1).is_some_and(|a| a == "run") {
        if let Ok(RunOnly {
            cmd: RunOnlyCmd::Run(args),
        }) = RunOnly::try_parse_from(&argv)
        {
            return Cli { cmd: Cmd::Run(args) };
        }
    }
    Cli::parse_from(argv)
}

fn dispatch(cmd: Cmd) -> Result<i32> {
    match cmd {
        Cmd::Run(RunArgs {
            profile,
            workspace,
            on_behalf_of,
            home,
            quiet,
            events,
            trace,
            no_probes,
            transactional,
            direct,
            commit,
            selftest_probe,
            command,
        }) => run(
            profile.as_deref(),
            workspace,
            on_behalf_of,
            home,
            RunOutput {
                quiet,
                events,
                trace,
                no_probes,
                selftest_probe,
                workspace: match (transactional, direct) {
                    (true, _) => Some(profile::WorkspaceMode::Transactional),
                    (_, true) => Some(profile::WorkspaceMode::Direct),
                    _ => None,
                },
                commit: commit.map(|c| match c.as_str() {
                    "always" => profile::CommitMode::Always,
                    "never" => profile::CommitMode::Never,
                    _ => profile::CommitMode::Ask,
                }),
            },
            command,
        ),
        Cmd::Events {
            sandbox,
            follow,
            format,
            kind,
        } => tail(&sandbox, follow, &format, kind.as_deref()),
        Cmd::Ps => {
            let running = cordon::session::control::list();
            println!(
                "{:<12} {:<8} {:<16} {:>9} {:>9} {:>7}  {:<14} {:<28} COMMAND",
                "SANDBOX", "PID", "PROFILE", "EVENTS", "SYSCALLS", "DENIED", "STATE", "IDENTITY"
            );
            let now = cordon::events::unix_now_ns() / 1_000_000_000;
            for r in running {
                // The command (and the id, profile and identity, read back from a file) are
                // shown escaped: a command line may carry any byte.
                let command: Vec<_> = r.meta.command.iter().map(|a| text::escape(a)).collect();
                let state = match (r.stats.frozen_since_unix, r.stats.waiting) {
                    (0, 0) => "running".to_string(),
                    (0, n) => format!("asking ({n})"),
                    (t, _) => format!("frozen {}s", now.saturating_sub(t)),
                };
                println!(
                    "{:<12} {:<8} {:<16} {:>9} {:>9} {:>7}  {:<14} {:<28} {}",
                    text::escape(&r.meta.sandbox),
                    r.meta.cordon_pid,
                    text::escape(&r.meta.profile),
                    r.stats.events,
                    r.stats.syscalls,
                    r.stats.denied,
                    state,
                    text::escape(&r.meta.identity),
                    command.join(" ")
                );
            }
            Ok(0)
        }
        Cmd::Diff {
            sandbox,
            stat,
            name_only,
            paths,
        } => cli_changes::diff_cmd(&sandbox, stat, name_only, &paths),
        Cmd::Commit { sandbox, paths } => cli_changes::commit_cmd(&sandbox, &paths),
        Cmd::Rollback { sandbox } => cli_changes::rollback_cmd(&sandbox),
        Cmd::Changes { prune: None } => cli_changes::list_cmd(),
        Cmd::Changes { prune: Some(age) } => cli_changes::prune_cmd(&age),
        Cmd::Trace(t) => trace_cmd(t),
        Cmd::Learn(a) => cordon::detect::offline::learn_main(a).map_err(anyhow::Error::msg),
        Cmd::Score(a) => cordon::detect::offline::score_main(&a).map_err(anyhow::Error::msg),
        Cmd::Freeze { sandbox } => respond(&sandbox, cordon::respond::Action::Freeze),
        Cmd::Thaw { sandbox } => respond(&sandbox, cordon::respond::Action::Thaw),
        Cmd::Kill { sandbox } => respond(&sandbox, cordon::respond::Action::Kill),
        Cmd::Grant {
            sandbox,
            piece,
            lasts,
            reason,
            on_behalf_of,
        } => cli_approvals::grant(cli_approvals::GrantArgs {
            sandbox,
            piece: piece.into(),
            lasts,
            reason,
            on_behalf_of,
        }),
        Cmd::Grants { sandbox } => cli_approvals::grants(&sandbox),
        Cmd::Revoke { sandbox, grant } => cli_approvals::revoke(&sandbox, grant),
        Cmd::Pending { sandbox } => cli_approvals::pending(sandbox.as_deref()),
        Cmd::Approve(a) => cli_approvals::answer(&a, true),
        Cmd::Deny(a) => cli_approvals::answer(&a, false),
        Cmd::Request { piece, lasts, why } => cli_approvals::request(piece.into(), lasts.as_deref(), &why),
        Cmd::Selftest { profile, json, port } => {
            let p = profile::load(&profile)?;
            let ws = cli_policy::selftest_workspace()?;
            let pol = compile(&p, &Identity::detect(None), Some(ws.clone()));
            let code = pol.and_then(|pol| cli_policy::selftest_cmd(&profile, &p, &pol, json, port));
            let _ = std::fs::remove_dir_all(&ws);
            code
        }
        Cmd::SelftestProbe { setup } => {
            let setup: cordon::selftest::Setup =
                serde_json::from_str(&setup).context("the selftest's setup")?;
            for a in cordon::selftest::run(&setup) {
                println!("{}", serde_json::to_string(&a)?);
            }
            Ok(0)
        }
        Cmd::Net(NetCmd::Allow { sandbox, rule, lasts }) => {
            net_change(&sandbox, true, &rule, lasts.as_deref())
        }
        Cmd::Net(NetCmd::Deny { sandbox, rule, lasts }) => {
            net_change(&sandbox, false, &rule, lasts.as_deref())
        }
        Cmd::Key(KeyCmd::Init { dir }) => {
            let (key, created) = cordon::keys::init(&dir)?;
            if created {
                eprintln!("cordon: created the signing key in {}", dir.display());
            } else {
                eprintln!("cordon: a signing key already exists in {} (kept)", dir.display());
            }
            println!("{}", cordon::keys::public_text(&key.public()));
            Ok(0)
        }
        Cmd::Key(KeyCmd::Show { dir }) => {
            println!(
                "{}",
                cordon::keys::public_text(&cordon::keys::load(&dir)?.public())
            );
            Ok(0)
        }
        Cmd::Probes(ProbesCmd::Load) => {
            let p = cordon::probes::Probes::ready()?;
            match p.loaded_in {
                Some(d) => println!("probes loaded and pinned in {:.1} ms", d.as_secs_f64() * 1e3),
                None => println!("probes were already loaded"),
            }
            Ok(0)
        }
        Cmd::Probes(ProbesCmd::Cool) => {
            let stopped = cordon::probes::cool()?;
            if stopped.is_empty() {
                println!("no lingerer runs");
            }
            for pid in stopped {
                println!("lingerer {pid} stopped");
            }
            Ok(0)
        }
        Cmd::Probes(ProbesCmd::Linger { pins, hold }) => {
            use std::os::fd::AsFd;
            // An empty cgroup of its own to hold the probes' cgroup hooks (see `linger`); without
            // one it still detaches the tracepoints on time.
            let keep = launch::Cgroup::create("keep", &cordon::profile::Limits::default()).ok();
            let fd = keep.as_ref().and_then(|k| k.v2_dir_fd().ok());
            cordon::probes::linger(
                &pins,
                fd.as_ref().map(AsFd::as_fd),
                std::time::Duration::from_secs(hold),
            )?;
            Ok(0)
        }
        Cmd::Probes(ProbesCmd::Unload) => {
            let removed = cordon::probes::Probes::unload()?;
            println!(
                "{}",
                if removed {
                    "probes unpinned"
                } else {
                    "no probes of this build were loaded"
                }
            );
            Ok(0)
        }
        Cmd::Profile(ProfileCmd::List) => {
            for (name, _) in profile::PRESETS {
                let p = profile::load(name)?;
                println!("{name:<16} {}", p.description);
            }
            Ok(0)
        }
        Cmd::Profile(ProfileCmd::Show { profile, workspace }) => {
            let p = profile::load(&profile)?;
            let id = Identity::detect(None);
            let mut pol = compile(&p, &id, workspace)?;
            let proof = policy::prove::prove(&p, &pol);
            pol.invariants = proof.kept;
            print!("{}", policy::render(&p, &pol));
            for b in &proof.broken {
                println!("  BROKEN: {}", text::escape(&b.to_string()));
            }
            Ok(0)
        }
        Cmd::Profile(ProfileCmd::Suggest { from, extends, out }) => {
            cli_policy::suggest_cmd(&from, extends.as_deref(), out.as_deref())
        }
        Cmd::Profile(ProfileCmd::Check { files, workspace }) => {
            let id = Identity::detect(None);
            let mut bad = 0;
            for f in &files {
                let p = match profile::load(f) {
                    Ok(p) => p,
                    Err(e) => {
                        eprintln!("{}", text::escape(&e.to_string()));
                        bad += 1;
                        continue;
                    }
                };
                let proof = policy::prove::prove(&p, &compile(&p, &id, workspace.clone())?);
                for k in &proof.kept {
                    println!("{f}: proven: {}", text::escape(k));
                }
                for b in &proof.broken {
                    eprintln!("{f}: {}", text::escape(&b.to_string()));
                }
                if proof.broken.is_empty() {
                    println!(
                        "{f}: ok (sha256 {}; {} invariants proven)",
                        &p.hash[..16],
                        proof.kept.len()
                    );
                } else {
                    bad += 1;
                }
            }
            Ok(if bad > 0 { 1 } else { 0 })
        }
        Cmd::Explain {
            profile,
            can,
            workspace,
            verify,
            json,
        } => {
            let p = profile::load(&profile)?;
            let pol = compile(&p, &Identity::detect(None), workspace)?;
            cli_policy::explain_cmd(&profile, &can, &pol, &p, verify, json)
        }
        Cmd::Why { trace, seq } => cli_policy::why_cmd(&trace, seq),
        Cmd::Doctor => {
            let checks = doctor::checks();
            for c in &checks {
                println!(
                    "{:<12} {:<4} {}",
                    c.layer,
                    if c.ok { "ok" } else { "NO" },
                    c.detail
                );
            }
            Ok(if checks.iter().all(|c| c.ok) { 0 } else { 1 })
        }
    }
}

fn compile(p: &profile::Profile, id: &Identity, workspace: Option<PathBuf>) -> Result<policy::Policy> {
    let ws = match workspace {
        Some(w) => w,
        None => std::env::current_dir().context("cannot read the current directory")?,
    };
    let ws = ws
        .canonicalize()
        .with_context(|| format!("workspace {} does not exist or cannot be resolved", ws.display()))?;
    if !ws.is_dir() {
        bail!("workspace {} is not a directory", ws.display());
    }
    let (agent_uid, agent_gid) = id.agent_ids();
    let ctx = policy::Context {
        workspace: ws,
        home: id.home.clone(),
        owner_uid: id.owner_uid,
        owner_gid: id.owner_gid,
        agent_uid,
        agent_gid,
    };
    let env: BTreeMap<String, String> = std::env::vars().collect();
    Ok(policy::compile(p, &ctx, &env)?)
}

fn tail(sandbox: &str, follow: bool, format: &str, kinds: Option<&str>) -> Result<i32> {
    use cordon::events;
    let kinds = kinds
        .map(events::parse_kinds)
        .transpose()
        .map_err(anyhow::Error::msg)?;
    // SAFETY: isatty only inspects the descriptor.
    let color = unsafe { libc::isatty(1) == 1 };
    let mut out = std::io::stdout().lock();
    let mut print = |e: &events::pb::Event| {
        use std::io::Write;
        if kinds
            .as_ref()
            .is_some_and(|ks| !ks.iter().any(|k| events::is_kind(e, k)))
        {
            return true;
        }
        let line = if format == "json" {
            events::json(e)
        } else {
            events::text(e, color)
        };
        writeln!(out, "{line}").is_ok()
    };
    // A finished run: its trace file.
    let file = std::path::Path::new(sandbox);
    if file.is_file() {
        let r = cordon::trace::show::replay(file, |rec| match &rec.body {
            Some(cordon::trace::pb::record::Body::Event(e)) => print(e),
            _ => true,
        })
        .map_err(anyhow::Error::msg)?;
        if r.read_summaries > 0 {
            text::eprint(&format!(
                "routine reads (read-only opens that succeeded or found no file) are \
                 summarised per interval in this trace, not listed here: `cordon trace show {}` \
                 lists their paths",
                file.display()
            ));
        }
        return Ok(if r.valid() { 0 } else { 1 });
    }
    let id = cordon::session::control::resolve(sandbox)?;
    cordon::session::control::events(&id, follow, |e| print(&e))
        .with_context(|| format!("reading the events of sandbox {id}"))?;
    Ok(0)
}

fn respond(sandbox: &str, action: cordon::respond::Action) -> Result<i32> {
    use cordon::session::control;
    let id = control::resolve(sandbox)?;
    let done = control::control(&id, action)?;
    println!("sandbox {id}: {} — {done}", action.name());
    Ok(0)
}

fn net_change(sandbox: &str, allow: bool, rule: &str, lasts: Option<&str>) -> Result<i32> {
    use cordon::session::control;
    let for_ms = match lasts {
        Some(d) => {
            cordon::profile::units::parse_millis(d).map_err(|e| anyhow::anyhow!("--for {d:?}: {e}"))?
        }
        None => 0,
    };
    let id = control::resolve(sandbox)?;
    let done = control::net_change(&id, allow, rule, for_ms)?;
    println!(
        "sandbox {id}: {done}{}",
        lasts.map_or(String::new(), |d| format!(" for {d}"))
    );
    Ok(0)
}

fn trace_cmd(cmd: TraceCmd) -> Result<i32> {
    use cordon::trace::show;
    match cmd {
        TraceCmd::Verify { file, pubkey, head } => {
            let valid =
                show::verify_file(&file, pubkey.as_deref(), head.as_deref()).map_err(anyhow::Error::msg)?;
            Ok(if valid { 0 } else { 1 })
        }
        TraceCmd::Head { file } => {
            println!("{}", show::head(&file).map_err(anyhow::Error::msg)?);
            Ok(0)
        }
        TraceCmd::Show { file, format } => {
            // SAFETY: isatty only inspects the descriptor.
            let color = unsafe { libc::isatty(1) == 1 };
            let mut out = std::io::stdout().lock();
            let r = show::replay(&file, |rec| {
                use std::io::Write;
                show::line(rec, format == "json", color).is_none_or(|l| writeln!(out, "{l}").is_ok())
            })
            .map_err(anyhow::Error::msg)?;
            Ok(if r.valid() { 0 } else { 1 })
        }
    }
}
