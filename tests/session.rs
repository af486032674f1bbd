//! The session fails closed: a failing component stops the sandbox and the trace says why; a
//! slow `--events` reader never costs the trace an event; a signal to cordon ends a frozen
//! run; a kernel lacking a landlock right the profile relies on is refused.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use cordon::events::pb::event::Kind;
use cordon::trace::pb::record::Body;
use cordon::trace::verify;

/// The trace at `t`, verified: its records and its seal.
fn read_trace(
    t: &std::path::Path,
) -> (
    Vec<cordon::trace::pb::Record>,
    Option<cordon::trace::pb::Seal>,
    verify::Report,
) {
    let bytes = std::fs::read(t).unwrap();
    let r = verify::verify(&bytes, None, None);
    let recs = verify::records(&bytes, &r);
    (recs, r.seal.clone(), r)
}

#[test]
fn a_panicking_event_pipeline_kills_the_sandbox_and_the_trace_is_sealed_with_the_reason() {
    require_root();
    let s = Scratch::new();
    let t = s.path().join("run.trace");
    let marker = "session-fault-7781";
    let mut c = run_cmd(
        "default",
        s.path(),
        &["--trace", &t.to_string_lossy()],
        &["/bin/sh", "-c", &format!("sleep 60 # {marker}")],
    );
    c.env("CORDON_TEST_FAULT", "event pipeline")
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let status = wait_within(&mut child, 15_000);
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(128 + libc::SIGKILL), "{err}");
    assert!(
        err.contains("event pipeline failed (panic: fault injected for a test)") && err.contains("killed"),
        "{err}"
    );
    assert!(
        host_pids_with(marker).is_empty(),
        "no process of the sandbox is left"
    );
    let (_, seal, r) = read_trace(&t);
    assert!(r.valid(), "{:?}", r.damage);
    let seal = seal.expect("sealed");
    assert_eq!(seal.exit_code, 128 + libc::SIGKILL);
    assert!(seal.detail.contains("event pipeline failed"), "{}", seal.detail);
}

#[test]
fn a_panicking_trace_writer_kills_the_sandbox_and_cordon_says_the_trace_is_incomplete() {
    require_root();
    let s = Scratch::new();
    let t = s.path().join("run.trace");
    let marker = "session-fault-7782";
    let mut c = run_cmd(
        "default",
        s.path(),
        &["--trace", &t.to_string_lossy()],
        &[
            "/bin/sh",
            "-c",
            &format!("while :; do ls / >/dev/null; done # {marker}"),
        ],
    );
    c.env("CORDON_TEST_FAULT", "trace writer").stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let status = wait_within(&mut child, 15_000);
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(128 + libc::SIGKILL), "{err}");
    assert!(err.contains("trace writer failed"), "{err}");
    assert!(err.contains("is incomplete"), "{err}");
    assert!(
        host_pids_with(marker).is_empty(),
        "no process of the sandbox is left"
    );
    // What was written before the failure is intact, sealed where it stopped, saying so.
    let (recs, seal, r) = read_trace(&t);
    assert!(r.valid(), "{:?}", r.damage);
    let seal = seal.expect("sealed where the writer stopped");
    assert_eq!(seal.exit_code, 125);
    assert!(
        seal.detail.contains("stopped before the run ended normally"),
        "{}",
        seal.detail
    );
    assert!(recs.len() > 2);
}

#[test]
fn an_events_pipe_nobody_reads_loses_stream_events_but_never_a_trace_event() {
    require_root();
    let s = Scratch::new();
    let t = s.path().join("run.trace");
    // ~100k recorded syscalls (failed opens: each a whole event) and plenty of plain ones.
    let script = "import os\nfor i in range(100000):\n    try:\n        os.open('/nonexistent/x', os.O_WRONLY)\n    except OSError:\n        pass\n";
    let mut c = run_cmd(
        "default",
        s.path(),
        &["--trace", &t.to_string_lossy(), "--events", "-"],
        &["/usr/bin/python3", "-c", script],
    );
    // cordon's stdout is a pipe this test never reads: the --events writer blocks at 64 KiB.
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let status = wait_within(&mut child, 120_000);
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(0), "{err}");
    assert!(
        err.contains("lost by the --events writer") || err.contains("--events output was still blocked"),
        "the stream's losses are reported: {err}"
    );
    let (recs, seal, r) = read_trace(&t);
    assert!(r.valid(), "{:?}", r.damage);
    let seal = seal.expect("sealed");
    // Every event number from 1 to the last is in the trace, whole or in a read summary.
    let mut seqs: Vec<u64> = Vec::new();
    let mut opens = 0u64;
    for rec in &recs {
        match &rec.body {
            Some(Body::Event(e)) => {
                seqs.push(e.seq);
                if matches!(&e.kind, Some(Kind::Syscall(x)) if x.path == "/nonexistent/x") {
                    opens += 1;
                }
            }
            Some(Body::Reads(rs)) => seqs.extend(&rs.seqs),
            _ => {}
        }
    }
    seqs.sort_unstable();
    let n = seqs.len() as u64;
    assert_eq!(seqs.first(), Some(&1));
    assert_eq!(seqs.last(), Some(&n), "no gap in the trace's event numbers");
    assert_eq!(seal.events + seal.summarised, n);
    // Records the kernel could not queue (the ring buffer full while a debug build decodes)
    // are counted and reported, never silent: every open is in the trace or in that count.
    assert!(
        opens + seal.kernel_drops >= 100_000,
        "{opens} opens recorded, {} records dropped in the kernel",
        seal.kernel_drops
    );
}

#[test]
fn sigterm_to_cordon_while_the_sandbox_is_frozen_ends_the_run_at_once() {
    require_root();
    let s = Scratch::new();
    let t = s.path().join("run.trace");
    let marker = "session-frozen-7783";
    let mut c = run_cmd(
        "default",
        s.path(),
        &["--trace", &t.to_string_lossy()],
        &["/bin/sh", "-c", &format!("sleep 60 # {marker}")],
    );
    c.stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let id = sandbox_id_of(marker);
    let mut f = cordon_command();
    f.args(["freeze", &id]);
    let out = output(f);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    let sent = Instant::now();
    // SAFETY: signalling the cordon this test started.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = wait_within(&mut child, 5_000);
    let took = sent.elapsed();
    assert_eq!(status.code(), Some(128 + libc::SIGTERM));
    assert!(
        took < Duration::from_secs(1),
        "cordon took {took:?} to end a frozen run"
    );
    assert!(
        host_pids_with(marker).is_empty(),
        "no process of the sandbox is left"
    );
    let (_, seal, r) = read_trace(&t);
    assert!(r.valid(), "{:?}", r.damage);
    let seal = seal.expect("sealed");
    assert!(
        seal.detail.contains("SIGTERM while the sandbox was frozen"),
        "{}",
        seal.detail
    );
}

#[test]
fn a_second_sigterm_ends_a_run_whose_agent_ignores_the_first() {
    require_root();
    let s = Scratch::new();
    let marker = "session-ignore-7784";
    let mut c = run_cmd(
        "default",
        s.path(),
        &[],
        &[
            "/bin/sh",
            "-c",
            &format!("trap '' TERM; : > ignoring; while :; do sleep 0.1; done # {marker}"),
        ],
    );
    c.stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    sandbox_id_of(marker);
    // The shell's command line is visible before it has run `trap`: wait until it has.
    let ready = s.path().join("ignoring");
    assert!(eventually(10_000, || ready.exists()), "the agent set its trap");
    // SAFETY: signalling the cordon this test started.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the agent ignores the first SIGTERM"
    );
    // SAFETY: as above, the cordon this test started.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = wait_within(&mut child, 5_000);
    assert_eq!(status.code(), Some(128 + libc::SIGTERM));
    assert!(
        host_pids_with(marker).is_empty(),
        "no process of the sandbox is left"
    );
}

#[test]
fn a_kernel_without_a_landlock_right_the_profile_relies_on_is_refused_naming_it() {
    require_root();
    let s = Scratch::new();
    // `ip-allowlist` shares the host's network: it relies on the abstract-socket scope (ABI 6).
    let mut c = run_cmd("ip-allowlist", s.path(), &[], &["/bin/true"]);
    c.env("CORDON_TEST_LANDLOCK_ABI", "5");
    let out = output(c);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(125), "{err}");
    assert!(
        err.contains("abstract-unix-socket scope (landlock ABI 6)") && err.contains("offers landlock ABI 5"),
        "{err}"
    );
    // `default` has its own network namespace: ABI 5 is enough.
    let mut c = run_cmd("default", s.path(), &[], &["/bin/true"]);
    c.env("CORDON_TEST_LANDLOCK_ABI", "5");
    let out = output(c);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // No landlock at all: nothing runs.
    let mut c = run_cmd("default", s.path(), &[], &["/bin/true"]);
    c.env("CORDON_TEST_LANDLOCK_ABI", "0");
    let out = output(c);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(125), "{err}");
    assert!(err.contains("offers no landlock"), "{err}");
}
