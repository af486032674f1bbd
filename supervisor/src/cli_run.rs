//! `cordon run`: one sandboxed run, from the profile to the sealed trace.

use anyhow::{bail, Context as _, Result};
use cordon::{identity::Identity, launch, policy, profile, text};
use std::path::PathBuf;

use cordon::trace::writer::TraceFile;

use crate::{cli_changes, compile};
use cordon::exit;

/// How a run reports: what `cordon run`'s output flags asked for.
pub(crate) struct RunOutput {
    pub(crate) quiet: bool,
    pub(crate) events: Option<String>,
    pub(crate) trace: Option<PathBuf>,
    pub(crate) no_probes: bool,
    /// `--selftest-probe` (hidden): the battery's binary and libraries bound in.
    pub(crate) selftest_probe: bool,
    /// `--transactional` / `--direct`, over the profile's choice.
    pub(crate) workspace: Option<profile::WorkspaceMode>,
    pub(crate) commit: Option<profile::CommitMode>,
}

pub(crate) fn run(
    asked_profile: Option<&str>,
    workspace: Option<PathBuf>,
    on_behalf_of: Option<String>,
    home: Option<PathBuf>,
    output: RunOutput,
    command: Vec<String>,
) -> Result<i32> {
    let quiet = output.quiet;
    text::milestone("run: start");
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "cordon needs root to build the sandbox (namespaces, cgroups, idmapped mounts): \
             run it with sudo. The agent itself never runs as root."
        );
    }
    // Read when the run ends (a lingerer started then stays this long): refused now, not then.
    cordon::probes::keep_warm().map_err(anyhow::Error::msg)?;
    // `--profile` always wins; a known agent gets its preset, and the start line says so.
    let picked = asked_profile
        .is_none()
        .then(|| profile::presets::for_command(&command))
        .flatten();
    let profile_name = asked_profile.or(picked).unwrap_or("default");
    let p = profile::load(profile_name)?;
    text::milestone("run: profile read");
    let mut id = Identity::detect(on_behalf_of);
    if let Some(h) = home {
        id.home = h
            .canonicalize()
            .with_context(|| format!("home {} does not exist or cannot be resolved", h.display()))?;
    }
    let mut pol = compile(&p, &id, workspace)?;
    text::milestone("run: policy compiled");
    // The profile's promises, proven against what will be built: a broken one stops the run.
    let proof = policy::prove::prove(&p, &pol);
    if !proof.broken.is_empty() {
        for b in &proof.broken {
            text::eprint(&b.to_string());
        }
        bail!(
            "profile {}: {} of its invariants broken by its own policy (`cordon profile check {}` shows them); nothing was started. A profile that means to widen a promise restates it in its own [invariants] (docs/proofs.md)",
            p.name,
            proof.broken.len(),
            p.name
        );
    }
    pol.invariants = proof.kept;
    text::milestone("run: invariants proven");
    let sandbox_id = sandbox_id();
    // Credentials the proxy adds: read now (a missing one stops the run before anything
    // starts); the agent gets placeholders and a trust store with the run's CA.
    let firewall = cordon::session::proxy::firewall::prepare(&mut pol, &sandbox_id)?;
    cordon::session::requests::prepare(&mut pol, &sandbox_id)
        .context("approvals.requests: the run's request directory")?;
    if output.selftest_probe {
        pol.probe_files = cordon::selftest::probe_files().context("selftest: cordon's own files")?;
    }
    if !quiet {
        text::eprint(&format!(
            "sandbox {sandbox_id} {} — profile {}{} ({}) workspace {}",
            id.line(),
            p.name,
            if picked.is_some() {
                " (the preset for this agent; --profile overrides)"
            } else {
                ""
            },
            &p.hash[..12],
            pol.context.workspace.display()
        ));
    }
    if let (Some(fw), false) = (&firewall, quiet) {
        for c in &fw.credentials {
            text::eprint(&format!(
                "credential for {} ({}): the agent has a placeholder in {}; cordon puts the real one in requests to {} only",
                c.rule.host,
                c.secret_hash(),
                c.rule.env,
                c.rule.host
            ));
        }
        if let Some(tls) = &fw.tls {
            text::eprint(&format!(
                "TLS to the hosts cordon reads ({}) is intercepted with this run's CA (sha256 {}), trusted inside the sandbox only",
                fw.intercepted().join(", "),
                &tls.authority.fingerprint[..16]
            ));
        }
        if !fw.canaries.is_empty() {
            text::eprint(&format!(
                "canary credentials stand in for the hidden {}: sending one anywhere is an exfiltration alarm",
                fw.canaries.join(", ")
            ));
        }
    }
    if !quiet {
        // Credentials the agent gets as they are (passed, not declared as network.credential).
        let placeholders: Vec<&str> = firewall
            .iter()
            .flat_map(|f| f.credentials.iter().map(|c| c.rule.env.as_str()))
            .collect();
        for (name, value) in pol
            .env
            .iter()
            .filter(|(k, _)| cordon::secret::credential_name(k) && !placeholders.contains(&k.as_str()))
        {
            text::eprint(&format!(
                "the agent gets {name} as it is ({}): declare it as a network.credential to give it a placeholder instead",
                cordon::secret::marker(value)
            ));
        }
        for c in pol.own_credentials.iter().filter(|c| c.exists()) {
            text::eprint(&format!(
                "the agent can read its own credential file {} (read-only; every other agent's stays hidden)",
                c.display()
            ));
        }
    }
    // SAFETY: isatty only inspects the descriptor.
    let interactive = unsafe { libc::isatty(0) == 1 && libc::isatty(1) == 1 };
    let out = output
        .events
        .as_deref()
        .map(cordon::session::Output::open)
        .transpose()
        .with_context(|| {
            format!(
                "cannot open the events file {:?}",
                output.events.as_deref().unwrap_or("")
            )
        })?;
    // What is recorded and shown of the command: the agent's secrets replaced (the real
    // command runs).
    let redactor = cordon::secret::Redactor::from_env(&pol.env).with(
        firewall
            .iter()
            .flat_map(cordon::session::proxy::firewall::Firewall::secrets),
    );
    let shown_command: Vec<String> = command.iter().map(|a| redactor.redact(a).into_owned()).collect();
    let meta = cordon::session::Meta {
        sandbox: sandbox_id.clone(),
        profile: p.name.clone(),
        profile_sha256: p.hash.clone(),
        command: shown_command.clone(),
        identity: id.line(),
        cordon_pid: std::process::id(),
        started_unix: cordon::events::unix_now_ns() / 1_000_000_000,
        owner_uid: id.owner_uid,
    };
    text::milestone("profile loaded, compiled and proven");
    let transactional =
        output.workspace.unwrap_or(pol.workspace_mode) == profile::WorkspaceMode::Transactional;
    let launch_opts = |layer: Option<PathBuf>| launch::Options {
        sandbox_id: sandbox_id.clone(),
        command: command.clone(),
        interactive,
        layer,
        desk: None,
    };
    // The sandbox is made ready (refusals, seccomp filter, cgroups, mount trees) on a thread
    // while the trace is started: nothing runs in it before the trace's header is on disk (no
    // trace, no run). A transactional run's layer is made after the header (it names the
    // trace), and its sandbox is prepared after it.
    let (launched, session, layer) = std::thread::scope(|s| -> Result<_> {
        let early = (!transactional).then(|| s.spawn(|| launch::prepare(&pol, launch_opts(None))));
        let key = cordon::keys::init(std::path::Path::new(cordon::keys::DEFAULT_DIR))
            .context("the trace signing key")?
            .0;
        let trace_path = output
            .trace
            .clone()
            .unwrap_or_else(|| cordon::trace::default_dir().join(format!("{sandbox_id}.trace")));
        let header = cordon::trace::header(&cordon::trace::Start {
            sandbox: &sandbox_id,
            command: &shown_command,
            identity: &id,
            profile: &p,
            policy: &pol,
            key: &key.public(),
            monitored: !output.no_probes,
        });
        let trace = TraceFile::create(&trace_path, key.signing.clone(), header)?;
        if output.no_probes {
            eprintln!(
                "cordon: WARNING: --no-probes: this run is NOT monitored; no events are recorded and the profile's {} monitor rules do not run",
                pol.monitor.rules.len()
            );
        } else if !pol.monitor.unseen.is_empty() {
            eprintln!(
                "cordon: monitor.visibility = \"{}\": no syscall is recorded; these inherited rules read syscall records and do not run: {}",
                pol.monitor.visibility.name(),
                pol.monitor.unseen.join(", ")
            );
        }
        cli_changes::refuse_direct(&pol, transactional)?;
        let layer = transactional
            .then(|| cli_changes::start(&pol, &sandbox_id, &p.name, &shown_command, &trace_path, quiet))
            .transpose()?;
        // Questions to a person are asked on the terminal too when cordon relays the agent's.
        let desk = interactive
            .then(launch::desk::Desk::new)
            .transpose()
            .context("approvals: the terminal's question desk (eventfd)")?;
        text::milestone("trace header written");
        let mut session = cordon::session::Session::prepare(
            &pol,
            cordon::session::Setup {
                meta,
                out,
                trace,
                monitored: !output.no_probes,
                firewall,
                layer_upper: layer.as_ref().map(cordon::workspace::Layer::upper),
                desk: desk.clone(),
            },
        )?;
        text::milestone("session prepared (probes ready)");
        let prepared = match early {
            Some(preparing) => preparing.join().unwrap_or_else(|p| std::panic::resume_unwind(p)),
            None => launch::prepare(
                &pol,
                launch_opts(layer.as_ref().map(cordon::workspace::Layer::layer_dir)),
            ),
        };
        let launched = prepared.and_then(|mut sandbox| {
            sandbox.set_desk(desk);
            sandbox.start(&mut session)
        });
        Ok((launched, session, layer))
    })?;
    let mut outcome = match launched {
        Ok(o) => o,
        Err(e) => {
            if let Some(l) = &layer {
                let _ = l.remove();
            }
            // The trace says the run never started (sealed with cordon's error status).
            let _ = session.finish(&launch::Outcome {
                exit_code: exit::CORDON_ERROR,
                notes: vec![format!("no agent was started: {e}")],
                teardown: None,
            });
            return Err(e.into());
        }
    };
    // The seal names every path the agent changed in its layer and the hash of what it left.
    let mut sealed = launch::Outcome {
        exit_code: outcome.exit_code,
        notes: outcome.notes.clone(),
        teardown: None,
    };
    let (layer, removing) = match layer {
        Some(l) => {
            let (layer, removing, notes) = cli_changes::at_end(l, outcome.exit_code);
            sealed.notes.extend(notes);
            (layer, removing)
        }
        None => (None, None),
    };
    text::milestone("agent exited");
    // The sandbox's init, if it was still exiting: reaped and its cgroups removed while the
    // session ends (nothing of it is recorded any more), before cordon exits.
    let teardown = outcome
        .teardown
        .take()
        .map(|t| std::thread::spawn(move || drop(t)));
    let report = session.finish(&sealed);
    text::milestone("session finished (trace sealed)");
    if let Some(t) = teardown {
        let _ = t.join();
    }
    if let Some(r) = removing {
        let _ = r.join();
    }
    // Printed with -q too: each is code that runs later, outside any sandbox.
    // A planted config value may carry a token: the line is redacted like the events.
    for f in &report.persistence {
        let line = format!("cordon: WARNING: the agent left code that runs later: {f}");
        eprintln!("{}", redactor.redact(&line));
    }
    if !report.build_files.is_empty() {
        let files: Vec<String> = report
            .build_files
            .iter()
            .map(|f| f.file.display().to_string())
            .collect();
        text::eprint(&format!(
            "note: the agent created or changed build files, which run code when you build: {}",
            files.join(", ")
        ));
    }
    if !quiet {
        // Notes may quote the agent's bytes (a program that could not run, a path it created).
        for n in &outcome.notes {
            text::eprint(n);
        }
        if let Some(ev) = &report.events {
            eprintln!(
                "cordon: {} events; {} lost in the kernel (ring buffer full){}{}",
                ev.events,
                ev.kernel_drops,
                if ev.stream_losses > 0 {
                    format!(", {} lost by the --events writer", ev.stream_losses)
                } else {
                    String::new()
                },
                if ev.stream_stuck {
                    ", the --events output was still blocked at the end (the events it held were not delivered)"
                } else {
                    ""
                }
            );
        }
    }
    let rolled_back = report.events.as_ref().and_then(|e| e.rolled_back.clone());
    if let Some(l) = layer {
        cli_changes::after_the_seal(
            l,
            rolled_back.as_deref(),
            output.commit.unwrap_or(pol.commit),
            interactive,
            quiet,
        )?;
    }
    let t = report.trace;
    match &t.error {
        Some(err) => text::eprint(&format!(
            "error: the trace {} is incomplete: {err}",
            t.path.display()
        )),
        None if !quiet => text::eprint(&format!(
            "trace {} (sealed; check it with `cordon trace verify {}`)",
            t.path.display(),
            t.path.display()
        )),
        None => {}
    }
    Ok(outcome.exit_code)
}

fn sandbox_id() -> String {
    let mut b = [0u8; 6];
    // SAFETY: b is a valid buffer of its length.
    unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    b.iter().map(|x| format!("{x:02x}")).collect()
}
