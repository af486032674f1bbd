//! The `cordon` command line.

use anyhow::{bail, Context as _, Result};
use clap::{Parser, Subcommand};
use cordon::{doctor, identity::Identity, launch, policy, profile};
use std::collections::BTreeMap;
use std::path::PathBuf;

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
        /// Preset name (see `cordon profile list`) or path to a profile file.
        #[arg(long, short, default_value = "default")]
        profile: String,
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
        /// Run without the eBPF probes: nothing is recorded and network allowlists cannot be
        /// enforced. Said so at start and in --events.
        #[arg(long)]
        no_probes: bool,
        /// The agent's command and its arguments, after `--`.
        #[arg(required = true, last = true, value_name = "CMD")]
        command: Vec<String>,
    },
    /// List, show and check profiles.
    #[command(subcommand)]
    Profile(ProfileCmd),
    /// Show a running sandbox's events: `cordon events --follow 3f2a`
    #[command(
        after_help = "Kinds for --kind: process, exec, file, net, syscall, denied, counts, loss, lifecycle"
    )]
    Events {
        /// Sandbox id (or a unique prefix of it), as `cordon ps` lists it.
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
    /// Manage the eBPF probes shared by all sandboxes on this host.
    #[command(subcommand)]
    Probes(ProbesCmd),
    /// Manage the host key that signs traces.
    #[command(subcommand)]
    Key(KeyCmd),
    /// Show what this kernel offers and which profile layers it can enforce.
    Doctor,
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
enum ProbesCmd {
    /// Load and pin the probes now (otherwise the first `cordon run` does); print the time.
    Load,
    /// Detach and unpin this build's probes (running sandboxes keep theirs until they end).
    Unload,
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
    /// Validate a profile file; print every error with file:line:column.
    Check {
        /// Profile file(s).
        #[arg(required = true)]
        files: Vec<String>,
    },
}

const EXIT_CORDON_ERROR: i32 = 125;
const EXIT_NOT_FOUND: i32 = 127;

fn main() {
    let cli = Cli::parse();
    let code = match dispatch(cli.cmd) {
        Ok(code) => code,
        Err(e) => {
            let not_found = e
                .downcast_ref::<launch::LaunchError>()
                .is_some_and(|l| matches!(l, launch::LaunchError::NotFound(..)));
            eprintln!("cordon: error: {e:#}");
            if not_found {
                EXIT_NOT_FOUND
            } else {
                EXIT_CORDON_ERROR
            }
        }
    };
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
            no_probes,
            command,
        } => run(
            &profile,
            workspace,
            on_behalf_of,
            home,
            RunOutput {
                quiet,
                events,
                no_probes,
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
            let running = cordon::events::tail::list();
            println!(
                "{:<12} {:<8} {:<16} {:>9} {:>9} {:>7}  {:<28} COMMAND",
                "SANDBOX", "PID", "PROFILE", "EVENTS", "SYSCALLS", "DENIED", "IDENTITY"
            );
            for r in running {
                println!(
                    "{:<12} {:<8} {:<16} {:>9} {:>9} {:>7}  {:<28} {}",
                    r.meta.sandbox,
                    r.meta.cordon_pid,
                    r.meta.profile,
                    r.stats.events,
                    r.stats.syscalls,
                    r.stats.denied,
                    r.meta.identity,
                    r.meta.command.join(" ")
                );
            }
            Ok(0)
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
            let pol = compile(&p, &id, workspace)?;
            print!("{}", render_policy(&p, &pol));
            Ok(0)
        }
        Cmd::Profile(ProfileCmd::Check { files }) => {
            let mut bad = 0;
            for f in &files {
                match profile::load(f) {
                    Ok(p) => println!("{f}: ok (sha256 {})", &p.hash[..16]),
                    Err(e) => {
                        eprintln!("{e}");
                        bad += 1;
                    }
                }
            }
            Ok(if bad > 0 { 1 } else { 0 })
        }
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

struct RunOutput {
    quiet: bool,
    events: Option<String>,
    no_probes: bool,
}

fn tail(sandbox: &str, follow: bool, format: &str, kinds: Option<&str>) -> Result<i32> {
    use cordon::events;
    let kinds = kinds
        .map(events::parse_kinds)
        .transpose()
        .map_err(anyhow::Error::msg)?;
    let id = events::tail::resolve(sandbox).map_err(anyhow::Error::msg)?;
    // SAFETY: isatty only inspects the descriptor.
    let color = unsafe { libc::isatty(1) == 1 };
    let mut out = std::io::stdout().lock();
    events::tail::events(&id, follow, |e| {
        use std::io::Write;
        if kinds
            .as_ref()
            .is_some_and(|ks| !ks.iter().any(|k| events::is_kind(&e, k)))
        {
            return true;
        }
        let line = if format == "json" {
            events::json(&e)
        } else {
            events::text(&e, color)
        };
        writeln!(out, "{line}").is_ok()
    })
    .with_context(|| format!("reading the events of sandbox {id}"))?;
    Ok(0)
}

fn run(
    profile_name: &str,
    workspace: Option<PathBuf>,
    on_behalf_of: Option<String>,
    home: Option<PathBuf>,
    output: RunOutput,
    command: Vec<String>,
) -> Result<i32> {
    let quiet = output.quiet;
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "cordon needs root to build the sandbox (namespaces, cgroups, idmapped mounts): \
             run it with sudo. The agent itself never runs as root."
        );
    }
    let p = profile::load(profile_name)?;
    let mut id = Identity::detect(on_behalf_of);
    if let Some(h) = home {
        id.home = h
            .canonicalize()
            .with_context(|| format!("home {} does not exist or cannot be resolved", h.display()))?;
    }
    let pol = compile(&p, &id, workspace)?;
    let sandbox_id = sandbox_id();
    if !quiet {
        eprintln!(
            "cordon: sandbox {sandbox_id} {} — profile {} ({}) workspace {}",
            id.line(),
            p.name,
            &p.hash[..12],
            pol.context.workspace.display()
        );
    }
    // SAFETY: isatty only inspects the descriptor.
    let interactive = unsafe { libc::isatty(0) == 1 && libc::isatty(1) == 1 };
    let out = output
        .events
        .as_deref()
        .map(cordon::events::live::Output::open)
        .transpose()
        .with_context(|| {
            format!(
                "cannot open the events file {:?}",
                output.events.as_deref().unwrap_or("")
            )
        })?;
    let meta = cordon::events::live::Meta {
        sandbox: sandbox_id.clone(),
        profile: p.name.clone(),
        profile_sha256: p.hash.clone(),
        command: command.clone(),
        identity: id.line(),
        cordon_pid: std::process::id(),
        started_unix: cordon::events::unix_now_ns() / 1_000_000_000,
    };
    let monitoring = if output.no_probes {
        eprintln!("cordon: WARNING: --no-probes: this run is NOT monitored; no events are recorded");
        if let Some(out) = out {
            meta.record_unmonitored(out)
                .context("cannot write the events file")?;
        }
        launch::Monitoring::Off
    } else {
        launch::Monitoring::On { meta, out }
    };
    let outcome = launch::run(
        &pol,
        launch::Options {
            sandbox_id,
            monitoring,
            command,
            interactive,
        },
    )?;
    if !quiet {
        for n in &outcome.notes {
            eprintln!("cordon: {n}");
        }
        if let Some(ev) = &outcome.events {
            eprintln!(
                "cordon: {} events; {} lost in the kernel (ring buffer full){}",
                ev.events,
                ev.kernel_drops,
                if ev.stream_losses > 0 {
                    format!(", {} lost by the --events writer", ev.stream_losses)
                } else {
                    String::new()
                }
            );
        }
    }
    Ok(outcome.exit_code)
}

fn sandbox_id() -> String {
    let mut b = [0u8; 6];
    // SAFETY: b is a valid buffer of its length.
    unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn render_policy(p: &profile::Profile, pol: &policy::Policy) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(s, "profile      {} (sha256 {})", p.name, p.hash);
    let _ = writeln!(s, "from         {}", p.sources.join(" <- "));
    let _ = writeln!(s, "workspace    {}", pol.context.workspace.display());
    let _ = writeln!(
        s,
        "identity     agent = host uid {} gid {} (inside uid {})",
        pol.context.agent_uid,
        pol.context.agent_gid,
        policy::INSIDE_ID
    );
    let _ = writeln!(s, "\n[filesystem] (missing read-only paths are skipped)");
    for b in &pol.binds {
        let _ = writeln!(
            s,
            "  {:<10} {}{}{}",
            match b.access {
                policy::Access::ReadOnly => "read-only",
                policy::Access::ReadWrite => "read-write",
            },
            b.path.display(),
            if b.exec { "  +exec" } else { "" },
            if b.idmap {
                "  (your files appear as the agent's)"
            } else {
                ""
            }
        );
    }
    let _ = writeln!(
        s,
        "  tmpfs      /tmp ({} MiB), /dev (minimal), /proc (own pid namespace, /proc/sys read-only)",
        pol.tmp_size >> 20
    );
    for h in &pol.hidden {
        let _ = writeln!(s, "  hidden     {}", h.display());
    }
    for h in &pol.protected {
        let _ = writeln!(s, "  protected  {} (read-only)", h.display());
    }
    let _ = writeln!(s, "\n[network]\n  mode       {:?}", pol.network.mode);
    for d in &pol.network.allow {
        let _ = writeln!(s, "  allow      {d}");
    }
    let l = &pol.limits;
    let _ = writeln!(s, "\n[limits]");
    let opt = |v: Option<String>| v.unwrap_or_else(|| "unlimited".into());
    let _ = writeln!(
        s,
        "  memory     {}",
        opt(l.memory.map(|m| format!("{} MiB", m >> 20)))
    );
    let _ = writeln!(s, "  cpu        {}", opt(l.cpu.map(|c| format!("{c} cores"))));
    let _ = writeln!(s, "  pids       {}", opt(l.pids.map(|v| v.to_string())));
    let _ = writeln!(s, "  open_files {}", opt(l.open_files.map(|v| v.to_string())));
    let _ = writeln!(
        s,
        "  file_size  {}",
        opt(l.file_size.map(|m| format!("{} MiB", m >> 20)))
    );
    let _ = writeln!(
        s,
        "  wall_clock {}",
        opt(l.wall_clock_ms.map(|m| format!("{} s", m / 1000)))
    );
    let _ = writeln!(s, "\n[environment] (everything else is removed)");
    for (k, v) in &pol.env {
        let _ = writeln!(s, "  {k}={v}");
    }
    let _ = writeln!(
        s,
        "\n[syscalls] (default allow; non-native ABIs kill the process)"
    );
    for r in &pol.seccomp {
        let action = match r.action {
            policy::syscalls::Action::Errno(e) => format!("{}", std::io::Error::from_raw_os_error(e)),
            policy::syscalls::Action::KillProcess => "kill".into(),
        };
        let when = match r.when {
            policy::syscalls::When::Always => String::new(),
            policy::syscalls::When::ArgMasked { index, mask, .. } => format!(" if arg{index} & {mask:#x}"),
            policy::syscalls::When::Both([(i, m, _), (j, n, _)]) => {
                format!(" if arg{i} & {m:#x} and arg{j} & {n:#x}")
            }
        };
        let _ = writeln!(s, "  {:<18} -> {action}{when}: {}", r.name, r.reason);
    }
    s
}
