//! The command line of the transactional workspace: `cordon diff`, `commit`, `rollback`,
//! `changes`, and what `cordon run` does with a run's changes when it ends.

use anyhow::{bail, Context as _, Result};
use cordon::profile::CommitMode;
use cordon::text;
use cordon::workspace::{apply, diff, Layer};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

/// Paths as the user typed them (relative to the workspace, or absolute inside it).
fn relative(layer: &Layer, paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let ws = &layer.record.workspace;
    paths
        .iter()
        .map(|p| {
            let rel = if p.is_absolute() {
                p.strip_prefix(ws)
                    .with_context(|| format!("{} is not inside the workspace {}", p.display(), ws.display()))?
                    .to_path_buf()
            } else {
                p.components().collect()
            };
            if rel
                .components()
                .any(|c| !matches!(c, std::path::Component::Normal(_)))
            {
                bail!("{}: give a path inside the workspace, without `..`", p.display());
            }
            Ok(rel)
        })
        .collect()
}

fn changes_of(layer: &Layer) -> Result<Vec<diff::Change>> {
    diff::changes(&layer.upper(), &layer.record.workspace)
        .with_context(|| format!("reading the layer of sandbox {}", layer.record.sandbox))
}

pub fn diff_cmd(sandbox: &str, stat: bool, name_only: bool, paths: &[PathBuf]) -> Result<i32> {
    let layer = Layer::find(sandbox)?;
    let only = relative(&layer, paths)?;
    let all: Vec<diff::Change> = changes_of(&layer)?
        .into_iter()
        .filter(|c| diff::selects(&only, &c.path))
        .collect();
    let mut out = std::io::stdout().lock();
    for c in all.iter().filter(|c| !is_rename_source(&all, c)) {
        let line = if name_only {
            text::escape(&c.path.to_string_lossy()).into_owned()
        } else if stat {
            diff::stat_line(c)
        } else {
            diff::unified(c, &layer.upper(), &layer.record.workspace)
        };
        if writeln!(out, "{}", line.trim_end()).is_err() {
            break;
        }
    }
    Ok(0)
}

/// A deletion shown as the source of a rename (`R old -> new`) is not listed again.
fn is_rename_source(all: &[diff::Change], c: &diff::Change) -> bool {
    c.kind == diff::Kind::Deleted && all.iter().any(|a| a.renamed_from.as_deref() == Some(&c.path))
}

pub fn commit_cmd(sandbox: &str, paths: &[PathBuf]) -> Result<i32> {
    let mut layer = Layer::find(sandbox)?;
    let only = relative(&layer, paths)?;
    let out = commit_recorded(&mut layer, None, &only)?;
    Ok(if out.refused.is_empty() { 0 } else { 1 })
}

/// Commit (the changes already read, or read now), print what happened, and record it
/// beside the run's trace.
fn commit_recorded(
    layer: &mut Layer,
    all: Option<&[diff::Change]>,
    only: &[PathBuf],
) -> Result<apply::Outcome> {
    let out = match all {
        Some(all) => apply::commit_changes(layer, all, only)?,
        None => apply::commit(layer, only)?,
    };
    report_commit(layer, &out);
    let refused = out
        .refused
        .iter()
        .map(|(p, why)| format!("{}: {why}", p.display()))
        .collect();
    follow_up(layer, "commit", &out.applied, refused);
    Ok(out)
}

/// Append a signed follow-up record to the run's trace (when it has a sealed one). A record
/// that cannot be written is said, not fatal: the changes are already applied.
pub fn follow_up(layer: &Layer, action: &str, paths: &[PathBuf], refused: Vec<String>) {
    let Some(trace) = layer.record.trace.as_deref().filter(|t| t.exists()) else {
        return;
    };
    let written = cordon::keys::init(Path::new(cordon::keys::DEFAULT_DIR))
        .map_err(|e| e.to_string())
        .and_then(|(key, _)| {
            cordon::trace::followup::append(
                trace,
                &key.signing,
                cordon::trace::followup::FollowUp {
                    sandbox: layer.record.sandbox.clone(),
                    trace_sha256: String::new(),
                    seq: 0,
                    prev: String::new(),
                    action: action.into(),
                    by_uid: invoking_uid(),
                    at_unix: 0,
                    paths: paths.iter().map(|p| p.to_string_lossy().into_owned()).collect(),
                    refused,
                    signature: String::new(),
                },
            )
            .map_err(|e| e.to_string())
        });
    if let Err(e) = written {
        text::eprint(&format!(
            "warning: the {action} is not recorded beside the trace {}: {e}",
            trace.display()
        ));
    }
}

/// The person behind this command: sudo's caller, else the real uid.
fn invoking_uid() -> u32 {
    std::env::var("SUDO_UID")
        .ok()
        .and_then(|u| u.parse().ok())
        // SAFETY: getuid cannot fail.
        .unwrap_or_else(|| unsafe { libc::getuid() })
}

fn report_commit(layer: &Layer, out: &apply::Outcome) {
    let ws = layer.record.workspace.display();
    println!(
        "sandbox {}: {} change(s) applied to {ws}{}",
        layer.record.sandbox,
        out.applied.len(),
        if out.finished {
            "; nothing is pending any more"
        } else {
            ""
        }
    );
    for (p, why) in &out.refused {
        text::eprint(&format!("not committed: {}: {why}", p.display()));
    }
}

pub fn rollback_cmd(sandbox: &str) -> Result<i32> {
    let layer = Layer::find(sandbox)?;
    let discarded = apply::rollback(&layer)?;
    follow_up(&layer, "rollback", &discarded, Vec::new());
    println!(
        "sandbox {}: {} pending change(s) discarded; {} is as it was{}",
        layer.record.sandbox,
        discarded.len(),
        layer.record.workspace.display(),
        if layer.record.committed.is_empty() {
            ""
        } else {
            " apart from what was committed before"
        }
    );
    Ok(0)
}

/// `cordon changes --prune AGE`: roll back the pending changes of runs that started more than
/// AGE ago and are not running (each recorded as a rollback follow-up of its trace).
pub fn prune_cmd(age: &str) -> Result<i32> {
    let ms =
        cordon::profile::units::parse_millis(age).map_err(|e| anyhow::anyhow!("--prune {age:?}: {e}"))?;
    let now = i64::try_from(cordon::events::unix_now_ns()).unwrap_or(i64::MAX);
    let cutoff = now.saturating_sub(i64::try_from(ms).unwrap_or(i64::MAX).saturating_mul(1_000_000));
    let mut pruned = 0;
    for l in Layer::list() {
        if l.running() || l.record.started_ns > cutoff {
            continue;
        }
        let discarded = apply::rollback(&l)?;
        follow_up(&l, "rollback", &discarded, Vec::new());
        println!(
            "sandbox {}: {} pending change(s) discarded ({})",
            text::escape(&l.record.sandbox),
            discarded.len(),
            text::escape(&l.record.workspace.to_string_lossy())
        );
        pruned += 1;
    }
    if pruned == 0 {
        println!("nothing pending is older than {age} (running runs are never pruned)");
    }
    Ok(0)
}

pub fn list_cmd() -> Result<i32> {
    println!(
        "{:<14} {:<10} {:>8}  {:<36} COMMAND",
        "SANDBOX", "STATE", "CHANGES", "WORKSPACE"
    );
    for l in Layer::list() {
        let state = match (l.running(), l.record.ended) {
            (true, _) => "running".to_string(),
            (false, Some(code)) => format!("exit {code}"),
            (false, None) => "cordon died".to_string(),
        };
        let n = changes_of(&l).map_or("?".into(), |c| c.len().to_string());
        let command: Vec<_> = l.record.command.iter().map(|a| text::escape(a)).collect();
        println!(
            "{:<14} {:<10} {:>8}  {:<36} {}",
            text::escape(&l.record.sandbox),
            state,
            n,
            text::escape(&l.record.workspace.to_string_lossy()),
            command.join(" ")
        );
    }
    Ok(0)
}

/// A run's layer once the run ended, with its changes as read then (`None`: the layer could
/// not be read; it is kept as it is).
pub struct Ended {
    layer: Layer,
    changes: Option<Vec<diff::Change>>,
}

/// What the seal says about the layer, and the layer if changes are pending. A run that
/// changed nothing has its layer removed in a thread, while the session seals the trace.
/// The layer is read once here; the seal and what happens after it use that reading.
pub fn at_end(
    mut layer: Layer,
    code: i32,
) -> (Option<Ended>, Option<std::thread::JoinHandle<()>>, Vec<String>) {
    let changes = changes_of(&layer);
    if changes.as_ref().is_ok_and(Vec::is_empty) {
        let remove = std::thread::spawn(move || {
            if let Err(e) = layer.remove() {
                text::eprint(&format!("error: {e}"));
            }
        });
        return (
            None,
            Some(remove),
            vec!["transactional workspace: no changes".into()],
        );
    }
    let full = layer.quota_used().filter(|(u, q)| u + (64 << 10) >= *q);
    if let Err(e) = layer.move_to_disk() {
        text::eprint(&format!(
            "error: {e} (the changes stay on the tmpfs until a reboot)"
        ));
    }
    if let Err(e) = layer.mark_ended(code) {
        text::eprint(&format!("error: {e}"));
    }
    // Every path and the hash of what the agent left there.
    let mut notes = vec![match &changes {
        Ok(c) => format!(
            "transactional workspace: {} change(s): {}",
            c.len(),
            diff::summary(c, &layer.upper()).join("; ")
        ),
        Err(e) => format!("transactional workspace: the layer cannot be read: {e:#}"),
    }];
    if let Some((used, quota)) = full {
        let note = format!(
            "the agent reached its write quota ({used} of {quota} bytes): writes past it failed with ENOSPC"
        );
        text::eprint(&note);
        notes.push(note);
    }
    let changes = changes.ok();
    (Some(Ended { layer, changes }), None, notes)
}

/// The run ended with changes: commit, ask or keep them.
fn after_run(
    mut layer: Layer,
    all: Option<Vec<diff::Change>>,
    mode: CommitMode,
    interactive: bool,
    quiet: bool,
) -> Result<()> {
    let id = layer.record.sandbox.clone();
    let Some(all) = all else {
        text::eprint(&format!(
            "the layer of sandbox {id} could not be read: kept as it is (`cordon diff {id}`)"
        ));
        return Ok(());
    };
    let ask = mode == CommitMode::Ask && interactive;
    if ask || !quiet {
        text::eprint(&format!(
            "the agent's {} change(s) to {} are in a layer, not yet in the workspace:",
            all.len(),
            layer.record.workspace.display()
        ));
        for c in all.iter().filter(|c| !is_rename_source(&all, c)).take(40) {
            eprintln!("  {}", diff::stat_line(c));
        }
        if all.len() > 40 {
            eprintln!("  … and {} more (cordon diff {id} --stat)", all.len() - 40);
        }
    }
    let commit = match mode {
        CommitMode::Always => true,
        CommitMode::Never => false,
        CommitMode::Ask if interactive => confirm(&format!(
            "commit them to {}? [y/N] ",
            layer.record.workspace.display()
        )),
        CommitMode::Ask => false,
    };
    if commit {
        commit_recorded(&mut layer, Some(&all), &[])?;
    } else if !quiet || mode == CommitMode::Never {
        text::eprint(&format!(
            "kept: see them with `cordon diff {id}`, apply with `cordon commit {id}`, discard with `cordon rollback {id}`"
        ));
    }
    Ok(())
}

fn confirm(question: &str) -> bool {
    eprint!("{question}");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer).is_ok() && matches!(answer.trim(), "y" | "Y" | "yes")
}

/// A direct run of a profile whose promises need the layer is refused before anything
/// starts: a write cap, a rule that rolls back.
pub fn refuse_direct(pol: &cordon::policy::Policy, transactional: bool) -> Result<()> {
    if transactional {
        return Ok(());
    }
    if pol.write_quota.is_some() {
        bail!(
            "filesystem: the profile caps what the agent writes (write_quota), which needs the transactional workspace: run without --direct"
        );
    }
    if let Some(r) = pol
        .monitor
        .rules
        .iter()
        .find(|r| r.response == cordon::profile::monitor::Response::Rollback)
    {
        bail!(
            "monitor.{}: response \"rollback\" discards the agent's changes, which needs the transactional workspace: run without --direct (or with --transactional)",
            r.name
        );
    }
    Ok(())
}

/// The layer of a new transactional run, said on stderr unless `quiet`.
pub fn start(
    pol: &cordon::policy::Policy,
    sandbox: &str,
    profile: &str,
    command: &[String],
    trace: &Path,
    quiet: bool,
) -> Result<Layer> {
    let layer = create_layer(sandbox, &pol.context, profile, command, trace, pol.write_quota)?;
    if !quiet {
        text::eprint(&format!(
            "transactional workspace: the agent's writes go to a layer ({}){}; the workspace is untouched until `cordon commit {sandbox}`",
            layer.dir.display(),
            pol.write_quota.map_or(String::new(), |q| format!(", at most {q} bytes"))
        ));
    }
    Ok(layer)
}

/// After the trace is sealed: a `rollback` rule's run is discarded (and recorded); otherwise
/// the changes are committed, asked about or kept (`after_run`).
pub fn after_the_seal(
    ended: Ended,
    rolled_back_by: Option<&str>,
    mode: CommitMode,
    interactive: bool,
    quiet: bool,
) -> Result<()> {
    let Ended { layer, changes } = ended;
    let Some(rule) = rolled_back_by else {
        return after_run(layer, changes, mode, interactive, quiet);
    };
    match apply::rollback(&layer) {
        Ok(discarded) => {
            follow_up(&layer, &format!("rollback (rule {rule})"), &discarded, Vec::new());
            text::eprint(&format!(
                "rule {rule} rolled the run back: its {} change(s) are discarded; {} is as it was",
                discarded.len(),
                layer.record.workspace.display()
            ));
        }
        Err(e) => text::eprint(&format!("error: rule {rule} asked for a rollback: {e}")),
    }
    Ok(())
}

/// Where the layer of a new transactional run goes, and its record.
fn create_layer(
    sandbox: &str,
    ctx: &cordon::policy::Context,
    profile: &str,
    command: &[String],
    trace: &Path,
    quota: Option<u64>,
) -> Result<Layer> {
    let me = std::process::id();
    Layer::create(cordon::workspace::Record {
        sandbox: sandbox.into(),
        workspace: ctx.workspace.clone(),
        agent_ids: (ctx.agent_uid, ctx.agent_gid),
        owner_ids: (ctx.owner_uid, ctx.owner_gid),
        started_ns: cordon::workspace::now_ns(),
        profile: profile.into(),
        command: command.to_vec(),
        trace: Some(trace.to_path_buf()),
        quota,
        cordon_pid: me,
        cordon_start: cordon::workspace::process_start(me).unwrap_or(0),
        ended: None,
        committed: Default::default(),
    })
    .context("filesystem: transactional workspace")
}
