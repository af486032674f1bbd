//! Acting on a running sandbox: `cordon freeze` stops every process at once (their CPU time
//! stops growing), `cordon thaw` resumes them, `cordon kill` leaves no process behind; each
//! is an event in the run's trace. Only root may do it.

mod common;

use common::*;
use cordon::events::pb::event::Kind;
use cordon::trace::{show, verify};

/// utime + stime (clock ticks) of host process `pid`.
fn cpu_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after_comm = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after_comm.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

/// The agent's shells (not cordon, whose own argv also carries the marker).
fn agent_pids(marker: &str) -> Vec<i32> {
    host_pids_with(marker)
        .into_iter()
        .filter(|p| std::fs::read(format!("/proc/{p}/cmdline")).is_ok_and(|c| c.starts_with(b"/bin/sh\0")))
        .collect()
}

fn control(action: &str, id: &str) -> std::process::Output {
    let mut c = cordon_command();
    c.args([action, id]);
    output(c)
}

#[test]
fn freeze_stops_every_process_thaw_resumes_kill_leaves_nothing_and_all_are_recorded() {
    require_root();
    let s = Scratch::new();
    let t = s.path().join("run.trace");
    let marker = "respond-marker-3310";
    let script = format!("while :; do :; done & while :; do :; done # {marker}");
    let mut c = run_cmd(
        "default",
        s.path(),
        &["--trace", &t.to_string_lossy()],
        &["/bin/sh", "-c", &script],
    );
    c.stderr(std::process::Stdio::null());
    let mut child = c.spawn().unwrap();
    let id = sandbox_id_of(marker);
    // Two busy loops: the shell and its background child.
    assert!(eventually(5000, || agent_pids(marker).len() == 2));
    let busy = agent_pids(marker);
    let pid = busy[0];
    assert!(eventually(5000, || cpu_ticks(pid) > 0));

    // Someone who is not root is refused, and nothing changes.
    let out = cordon_as_nobody().args(["freeze", &id]).output().unwrap();
    assert_ne!(out.status.code(), Some(0), "{}", stdout(&out));
    let before = cpu_ticks(pid);
    assert!(eventually(2000, || cpu_ticks(pid) > before), "still running");

    // A request that is not a control message is refused in words, and nothing changes.
    {
        use std::io::{Read, Write};
        let sock = format!("/run/cordon/sandboxes/{id}.sock");
        let mut conn = std::os::unix::net::UnixStream::connect(&sock).unwrap();
        // One whole frame whose body is not a Request (nothing left unread: a close with
        // unread bytes would be a reset).
        conn.write_all(b"\x06freeze").unwrap();
        let mut answer = Vec::new();
        conn.read_to_end(&mut answer).unwrap();
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.contains("an unreadable request"), "{answer:?}");
        let before = cpu_ticks(pid);
        assert!(eventually(2000, || cpu_ticks(pid) > before), "still running");
    }

    let out = control("freeze", &id);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("every process stopped"), "{}", stdout(&out));
    let frozen: Vec<u64> = busy.iter().map(|p| cpu_ticks(*p)).collect();
    std::thread::sleep(std::time::Duration::from_millis(600));
    let later: Vec<u64> = busy.iter().map(|p| cpu_ticks(*p)).collect();
    assert_eq!(frozen, later, "no CPU time while frozen (pids {busy:?})");

    let ps_state = |id: &str| {
        let mut c = cordon_command();
        c.arg("ps");
        let listing = stdout(&output(c));
        let line = listing.lines().find(|l| l.starts_with(id)).map(str::to_string);
        line.unwrap_or_else(|| panic!("{id} not in {listing}"))
    };
    assert!(ps_state(&id).contains(" frozen "), "{}", ps_state(&id));

    let out = control("thaw", &id);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(ps_state(&id).contains(" running "), "{}", ps_state(&id));
    assert!(eventually(2000, || cpu_ticks(pid) > later[0]), "running again");

    let out = control("kill", &id);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let status = wait_within(&mut child, 10_000);
    assert_eq!(status.code(), Some(128 + libc::SIGKILL));
    assert!(
        host_pids_with(marker).is_empty(),
        "no process of the sandbox is left"
    );

    let bytes = std::fs::read(&t).unwrap();
    let r = verify::verify(&bytes, None, None);
    assert!(r.valid(), "{:?}", r.damage);
    let recs = verify::records(&bytes, &r);
    let responses: Vec<(String, bool, String)> = show::events(&recs)
        .filter_map(|e| match &e.kind {
            Some(Kind::Response(x)) => Some((x.action.clone(), x.done, x.reason.clone())),
            _ => None,
        })
        .collect();
    let actions: Vec<&str> = responses.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(actions, ["freeze", "thaw", "kill"]);
    assert!(
        responses.iter().all(|r| r.1 && r.2.contains("by uid 0")),
        "{responses:?}"
    );
}
