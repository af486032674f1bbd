//! `cordon`'s arguments: every command and its options (clap), with the help text people read.

use clap::{Parser, Subcommand};
use std::path::PathBuf;

use crate::cli_approvals;

/// cordon runs an AI agent's command in a sandbox the kernel enforces: it can read the
/// system, write only its workspace, reach no network and see no secrets unless its profile
/// says so.
#[derive(Parser)]
#[command(name = "cordon", version, about, long_about = None)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) cmd: Cmd,
}

#[derive(Subcommand)]
pub(crate) enum Cmd {
    /// Run a command in a sandbox: `sudo cordon run -- python3 agent.py`
    #[command(after_help = "Exit status: the agent's own, 128+N if a signal N killed it, \
        127 if the command was not found, 125 if cordon could not build the sandbox \
        (then no agent was started).\n\nExamples:\n  sudo cordon run -- python3 agent.py\n  \
        sudo cordon run --profile offline-analyst --workspace ~/src/app -- claude\n  \
        sudo cordon run --profile ./my-profile.toml -- npx some-mcp-server")]
    Run(RunArgs),
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
pub(crate) enum TraceCmd {
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
pub(crate) enum KeyCmd {
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
pub(crate) enum NetCmd {
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
pub(crate) enum ProbesCmd {
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
pub(crate) enum ProfileCmd {
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

// `cordon run`'s arguments (its help text is the `Run` variant's).
#[derive(clap::Args)]
pub(crate) struct RunArgs {
    /// Preset name (see `cordon profile list`) or path to a profile file. Default: the
    /// preset for a known agent (`claude`), else `default`.
    #[arg(long, short)]
    pub(crate) profile: Option<String>,
    /// The directory the agent may work in. Default: the current directory.
    #[arg(long, short)]
    pub(crate) workspace: Option<PathBuf>,
    /// The person or principal the agent acts for (recorded and printed at start).
    #[arg(long, value_name = "NAME")]
    pub(crate) on_behalf_of: Option<String>,
    /// The home directory the agent sees as {home}. Default: the invoking user's.
    #[arg(long, value_name = "DIR")]
    pub(crate) home: Option<PathBuf>,
    /// Do not print the identity line and end-of-run notes.
    #[arg(long, short)]
    pub(crate) quiet: bool,
    /// Stream this run's events as JSON lines to FILE ("-": standard output) while it runs.
    #[arg(long, value_name = "FILE")]
    pub(crate) events: Option<String>,
    /// Write the run's trace to FILE (a new file) instead of
    /// /var/lib/cordon/traces/SANDBOX.trace.
    #[arg(long, value_name = "FILE")]
    pub(crate) trace: Option<PathBuf>,
    /// Run without the eBPF probes: nothing is recorded and network allowlists cannot be
    /// enforced. Said so at start and in --events.
    #[arg(long)]
    pub(crate) no_probes: bool,
    /// The agent writes into a layer (`cordon diff`, `commit`, `rollback`), not the
    /// workspace itself. Default: the profile's filesystem.workspace.
    #[arg(long, conflicts_with = "direct")]
    pub(crate) transactional: bool,
    /// The agent writes the workspace itself.
    #[arg(long)]
    pub(crate) direct: bool,
    /// Transactional runs: what to do with the changes at the end. Default: the profile's
    /// filesystem.commit (ask: on a terminal, else keep them pending).
    #[arg(long, value_parser = ["always", "ask", "never"])]
    pub(crate) commit: Option<String>,
    /// Internal (`cordon selftest`): bind cordon's own binary and shared libraries into
    /// the sandbox, read-only and executable, so the battery runs in any profile.
    #[arg(long, hide = true)]
    pub(crate) selftest_probe: bool,
    /// The agent's command and its arguments, after `--`.
    #[arg(required = true, last = true, value_name = "CMD")]
    pub(crate) command: Vec<String>,
}

/// `cordon run …` parsed alone (issue 19): building the whole command tree (every subcommand's
/// arguments) for each launch cost ~0.2 ms of its CPU. Only what parses cleanly is taken from
/// here; help, `--version` and every error come from the full `Cli`, which parses again.
#[derive(Parser)]
#[command(name = "cordon", version, about, long_about = None)]
pub(crate) struct RunOnly {
    #[command(subcommand)]
    pub(crate) cmd: RunOnlyCmd,
}

#[derive(Subcommand)]
pub(crate) enum RunOnlyCmd {
    Run(RunArgs),
}
