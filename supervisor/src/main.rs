//! The `cordon` command line.

use anyhow::{bail, Context as _, Result};
use clap::{Parser, Subcommand};
use cordon::{doctor, identity::Identity, launch, policy, profile, text};
use std::collections::BTreeMap;
use std::path::PathBuf;

mod cli_approvals;
mod cli_changes;
mod cli_policy;
mod cli_run;

use cli_run::{run, RunOutput};

/// cordon runs an AI agent's command in a sandbox the kernel enforces: it can read the
/// system, write only its workspace, reach no network and see no secrets unless its profile
/// says so.
#[derive(Parser)]
#[command(name = "cordon", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a command in a sandbox: `sudo cordon run -- python3 agent.py`
    #[command(after_help = "Exit status: the agent's own, 128+N if a signal N killed it, \
        127 if the command was not found, 125 if cordon could not build the sandbox \
        (then no agent was started).\n\nExamples:\n  sudo cordon run -- python3 agent.py\n  \
        sudo cordon run --profile offline-analyst --workspace ~/src/app -- claude\n  \
        sudo cordon run --profile ./my-profile.toml -- npx some-mcp-server")]
    Run {
        /// Preset name (see `cordon profile list`) or path to a profile file. Default: the
        /// preset for a known agent (`claude`), else `default`.
        #[arg(long, short)]
        profile: Option<String>,
        /// The directory the agent may work in. Default: the current directory.
        #[arg(long, short)]
        workspace: Option<PathBuf>,
        /// The person or principal the agent acts for (recorded and printed at start).
        #[arg(long, value_name = "NAME")]
        on_behalf_of: Option<String>,
        /// The home directory the agent sees as {home}. Default: the invoking user's.
        #[arg(long, value_name = "DIR")]
        home: Option<PathBuf>,
        /// Do not print the identity line and end-of-run notes.
        #[arg(long, short)]
        quiet: bool,
        /// Stream this run's events as JSON lines to FILE ("-": standard output) while it runs.
        #[arg(long, value_name = "FILE")]
        events: Option<String>,
        /// Write the run's trace to FILE (a new file) instead of
        /// /var/lib/cordon/traces/SANDBOX.trace.
        #[arg(long, value_name = "FILE")]
        trace: Option<PathBuf>,
        /// Run without the eBPF probes: nothing is recorded and network allowlists cannot be
        /// enforced. Said so at start and in --events.
        #[arg(long)]
        no_probes: bool,
        /// The agent writes into a layer (`cordon diff`, `commit`, `rollback`), not the
        /// workspace itself. Default: the profile's filesystem.workspace.
        #[arg(long, conflicts_with = "direct")]
        transactional: bool,
        /// The agent writes the workspace itself.
        #[arg(long)]
        direct: bool,
        /// Transactional runs: what to do with the changes at the end. Default: the profile's
        /// filesystem.commit (ask: on a terminal, else keep them pending).
        #[arg(long, value_parser = ["always", "ask", "never"])]
        commit: Option<String>,
        /// Internal (`cordon selftest`): bind cordon's own binary and shared libraries into
        /// the sandbox, read-only and executable, so the battery runs in any profile.
        #[arg(long, hide = true)]
        selftest_probe: bool,
        /// The agent's command and its arguments, after `--`.
        #[arg(required = true, last = true, value_name = "CMD")]
        command: Vec<String>,
    },
    /// List, show and check profiles.
    #[command(subcommand)]
    Profile(ProfileCmd),
    /// Learn a baseline of normal behaviour: from benign runs of CMD (`--profile P -- CMD`),
    /// from their traces (`--from TRACE…`), or from syscall files (`--from-syscalls DIR`).
    #[command(after_help = cordon::detect::offline::LEARN_HELP)]
    Learn(cordon::detect::offline::LearnArgs),
    /// Score finished traces or syscall files against a baseline: one line per input with the
    /// anomaly score (0 to 1, higher is more anomalous; comparable across lengths) and the
    /// most anomalous window.
    Score(cordon::detect::offline::ScoreArgs),
    /// Show a running sandbox's events (`cordon events --follow 3f2a`), or a finished run's
    /// from its trace file (`cordon events /var/lib/cordon/traces/3f2a….trace`)
    #[command(
        after_help = "Kinds for --kind: process, exec, file, net, syscall, denied, counts, traffic, loss, lifecycle, response"
    )]
    Events {
        /// Sandbox id (or a unique prefix of it), as `cordon ps` lists it, or a trace file.
        sandbox: String,
        /// Keep printing events as they happen until the run ends.
        #[arg(long, short)]
        follow: bool,
        /// Output format.
        #[arg(long, value_parser = ["text", "json"], default_value = "text")]
        format: String,
        /// Only these kinds, comma-separated.
        #[arg(long, value_name = "KINDS")]
        kind: Option<String>,
    },
    /// List running sandboxes with their command, profile, identity and event counts.
    Ps,
    /// What a transactional run changed: added (A), modified (M), deleted (D), renamed (R),
    /// mode (P); a unified diff for text files, sizes for binary ones.
    Diff {
        /// Sandbox id (or a unique prefix), as `cordon changes` lists it.
        sandbox: String,
        /// One line per change.
        #[arg(long, conflicts_with = "name_only")]
        stat: bool,
        /// Only the changed paths.
        #[arg(long)]
        name_only: bool,
        /// Only these paths (and what is beneath them), relative to the workspace.
        paths: Vec<PathBuf>,
    },
    /// Apply a transactional run's changes to the real workspace, file by file, atomically;
    /// a file the user changed since the run started is refused and named (exit 1).
    Commit {
        sandbox: String,
        /// Only these paths (and what is beneath them).
        paths: Vec<PathBuf>,
    },
    /// Discard a finished transactional run's changes (the workspace stays as it was).
    Rollback { sandbox: String },
    /// List transactional runs whose changes are pending; `--prune D` discards those of runs
    /// that started more than D ago and are no longer running (as `cordon rollback` would).
    Changes {
        /// An age ("7d", "12h"): discard what older finished runs left pending.
        #[arg(long, value_name = "AGE")]
        prune: Option<String>,
    },
    /// Freeze a running sandbox: every process in it stops at once (cgroup freezer).
    Freeze {
        /// Sandbox id (or a unique prefix), as `cordon ps` lists it.
        sandbox: String,
    },
    /// Let a frozen sandbox run again.
    Thaw { sandbox: String },
    /// Kill every process of a running sandbox; the run ends (status 137).
    Kill { sandbox: String },
    /// Change a running `proxy` sandbox's egress rules; each change is an event, and one
    /// given `--for` lapses by itself.
    #[command(subcommand)]
    Net(NetCmd),
    /// Grant a running sandbox a piece of its profile's `[grants]` envelope for a while (root
    /// or the user who started it): a path to read or write, a name to reach. It lapses by
    /// itself. Nothing outside the envelope can be granted.
    #[command(
        after_help = "Examples:\n  sudo cordon grant 0cd4 --read ~/datasets --for 10m --reason \"train run\"\n  sudo cordon grant 0cd4 --net pypi.org:443 --for 5m"
    )]
    Grant {
        sandbox: String,
        #[command(flatten)]
        piece: cli_approvals::PieceArgs,
        /// How long ("90s", "10m"), at most the profile's grants.max.
        #[arg(long = "for")]
        lasts: String,
        #[arg(long, default_value = "")]
        reason: String,
        /// The person the grant is for (recorded with it).
        #[arg(long, default_value = "")]
        on_behalf_of: String,
    },
    /// A running sandbox's grants: active (time left), expired, revoked, who gave each.
    Grants { sandbox: String },
    /// End a grant now (root or the user who started the run).
    Revoke { sandbox: String, grant: u64 },
    /// Questions waiting for an answer (held connections, rules whose response is `ask`,
    /// the agent's requests), one line each: who asks, what, why, what the monitor saw lately.
    Pending {
        /// Only this sandbox (default: every running one).
        sandbox: Option<String>,
    },
    /// Approve a waiting question (SANDBOX/N, or N when only one sandbox has an N waiting).
    Approve(cli_approvals::AnswerArgs),
    /// Refuse a waiting question (a rule's question: the sandbox is killed).
    Deny(cli_approvals::AnswerArgs),
    /// Inside a sandbox whose profile takes requests (`approvals.requests`): ask for a piece
    /// of its `[grants]` envelope and wait for the answer (exit 0 granted, 1 refused). The
    /// sandbox has this as `cordon-request` on its PATH.
    Request {
        #[command(flatten)]
        piece: cli_approvals::PieceArgs,
        /// How long it is wanted (the person may give less or more, up to grants.max).
        #[arg(long = "for")]
        lasts: Option<String>,
        /// Why, for the person who answers.
        #[arg(long, default_value = "")]
        why: String,
    },
    /// Run a battery of escape and abuse attempts inside a sandbox of the profile on this
    /// host: one line per attempt (blocked, by which layer, or GOT THROUGH) and what this
    /// host's kernel lacks. Exit 1 if anything got through.
    Selftest {
        #[arg(long, default_value = "default")]
        profile: String,
        #[arg(long)]
        json: bool,
        /// The port on the host's loopback the network attempt targets (cordon listens on
        /// it during the battery; default: a free one). To check an allowlist that names it.
        #[arg(long)]
        port: Option<u16>,
    },
    /// Internal: the selftest battery itself, run inside the sandbox.
    #[command(name = "__selftest", hide = true)]
    SelftestProbe { setup: String },
    /// Manage the eBPF probes shared by all sandboxes on this host.
    #[command(subcommand)]
    Probes(ProbesCmd),
    /// Verify, print and show the trace a run left.
    #[command(subcommand)]
    Trace(TraceCmd),
    /// Manage the host key that signs traces.
    #[command(subcommand)]
    Key(KeyCmd),
    /// Could the agent of a profile do this? Yes or no, the layer that decides and the
    /// profile line that causes it (`cordon explain default --can 'write /etc/passwd'`).
    Explain {
        /// Preset name or file.
        profile: String,
        /// 'read PATH', 'write PATH', 'exec PATH', 'connect HOST:PORT', 'resolve NAME',
        /// 'syscall NAME' (`~` is the home); repeat for more.
        #[arg(long = "can", required = true)]
        can: Vec<String>,
        /// The workspace the policy is compiled for (default: the current directory).
        #[arg(long, short)]
        workspace: Option<PathBuf>,
        /// Also do it for real in a throwaway sandbox of the profile; exit 1 if what the
        /// sandbox did disagrees with the answer.
        #[arg(long)]
        verify: bool,
        /// One JSON object per question.
        #[arg(long)]
        json: bool,
    },
    /// Explain a recorded event (a refusal, an attempt, a detection) against the policy the
    /// run was held to: the layer that decided, the profile line (`cordon why run.trace 42`).
    Why { trace: PathBuf, seq: u64 },
    /// Show what this kernel offers and which profile layers it can enforce.
    Doctor,
}

#[derive(Subcommand)]
enum TraceCmd {
    /// Check the hash chain, the signatures and the seal; name the first damage (exit 1).
    Verify {
        file: PathBuf,
        /// The signer's public key (`ed25519:<hex>`, or a file holding it), as
        /// `cordon key show` prints it on the host that ran the agent. Default: the key the
        /// trace's header names.
        #[arg(long, value_name = "KEY")]
        pubkey: Option<String>,
        /// A head stored earlier (`cordon trace head`; the text or a file holding it): the
        /// trace must still contain it. This is what catches a cut after the last checkpoint.
        #[arg(long, value_name = "HEAD")]
        head: Option<String>,
    },
    /// Print the latest signed head (sequence, hash, signature), to store elsewhere.
    Head { file: PathBuf },
    /// Print every record: header, events (as the live stream shows them), checkpoints, seal.
    Show {
        file: PathBuf,
        #[arg(long, value_parser = ["text", "json"], default_value = "text")]
        format: String,
    },
}

#[derive(Subcommand)]
enum KeyCmd {
    /// Create the host signing key (ed25519, root-only) unless it exists; print its public key.
    Init {
        /// Key directory.
        #[arg(long, default_value = cordon::keys::DEFAULT_DIR)]
        dir: PathBuf,
    },
    /// Print the public key, to verify traces elsewhere (`cordon trace verify --pubkey`).
    Show {
        /// Key directory.
        #[arg(long, default_value = cordon::keys::DEFAULT_DIR)]
        dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum NetCmd {
    /// Let the sandbox reach RULE: NAME[:PORT], *.SUFFIX[:PORT] or IP[/PREFIX]:PORT.
    #[command(after_help = "Example:\n  sudo cordon net allow 0cd4 registry.npmjs.org:443 --for 10m")]
    Allow {
        sandbox: String,
        rule: String,
        /// How long it lasts ("90s", "10m"); without it, until the run ends.
        #[arg(long = "for")]
        lasts: Option<String>,
    },
    /// Refuse RULE from now on (it wins over the profile's allow rules).
    Deny {
        sandbox: String,
        rule: String,
        #[arg(long = "for")]
        lasts: Option<String>,
    },
}

#[derive(Subcommand)]
enum ProbesCmd {
    /// Load and pin the probes now (otherwise the first `cordon run` does); print the time.
    Load,
    /// Detach and unpin this build's probes (running sandboxes keep theirs until they end).
    Unload,
    /// End the lingerer now: the probes' cgroup hooks and cordon's code it keeps warm are let
    /// go (the next launch after a pause pays for them again), the syscall tracepoints detached
    /// if no sandbox needs them.
    Cool,
    /// (Internal) Started by a sandbox as it ends when none runs: keeps the probes' attach
    /// points and cordon's code warm while sandboxes run and for `--hold` after the last;
    /// detaches the syscall tracepoints 2 s after the last sandbox that needs them.
    #[command(hide = true)]
    Linger {
        /// Seconds to stay after the last sandbox (`CORDON_KEEP_WARM`).
        #[arg(long, default_value_t = cordon::probes::KEEP_WARM.as_secs())]
        hold: u64,
        /// The pin directory of the build whose tracepoints to detach (the binary on disk may
        /// be another build by now).
        pins: PathBuf,
    },
}

#[derive(Subcommand)]
enum ProfileCmd {
    /// List the preset profiles built into cordon.
    List,
    /// Print the fully resolved policy of a profile for the current directory and user.
    Show {
        /// Preset name or file.
        profile: String,
        #[arg(long, short)]
        workspace: Option<PathBuf>,
    },
    /// Write the least profile under which these recorded runs would have done what they
    /// did (places read, written and run from, names reached), extending a base profile.
    Suggest {
        /// Traces of the runs (`cordon run --trace FILE`).
        #[arg(long = "from", required = true, num_args = 1..)]
        from: Vec<PathBuf>,
        /// The profile it extends (default: the one the runs had, if a preset; else default).
        #[arg(long)]
        extends: Option<String>,
        /// Write it here instead of printing it.
        #[arg(long, short)]
        out: Option<PathBuf>,
    },
    /// Validate a profile (file or preset): every error with file:line:column, then each of
    /// its `[invariants]` proven against its compiled policy, or broken (layer, file:line).
    Check {
        /// Profile file(s) or preset names.
        #[arg(required = true)]
        files: Vec<String>,
        /// The workspace the policy is compiled for (default: the current directory).
        #[arg(long, short)]
        workspace: Option<PathBuf>,
    },
}

use cordon::exit;

fn main() {
    text::milestone("main");
    let cli = Cli::parse_from(cli_approvals::argv());
    // A command that prints (`cordon profile list | head`) ends quietly when its reader goes
    // away. Not `run`: its proxy and relays write to sockets, where EPIPE is an answer.
    if !matches!(cli.cmd, Cmd::Run { .. }) {
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
    std::process::exit(code);
}

fn dispatch(cmd: Cmd) -> Result<i32> {
    match cmd {
        Cmd::Run {
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
        } => run(
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
