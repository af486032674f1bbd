//! Just-in-time grants on the real kernel: a path of the profile's `[grants] read` envelope is
//! hidden from the agent at start (ENOENT), readable while a grant lasts, hidden again when it
//! expires — a file the agent opened during the grant stays readable through that open file —
//! and a path outside the envelope cannot be granted by anyone.

mod common;

use common::*;

const AGENT: &str = r#"
import os, sys, time
path = sys.argv[1]
def state():
    try:
        with open(path) as f: return "read:" + f.read().strip()
    except OSError as e: return "error:" + os.strerror(e.errno)
seen, held = [], None
open("ready", "w").close()
deadline = time.time() + 30
while time.time() < deadline:
    s = state()
    if not seen or seen[-1] != s:
        seen.append(s)
        print(f"state\t{len(seen)}\t{s}", flush=True)
    if s.startswith("read:") and held is None:
        held = open(path)
    if len(seen) >= 3:
        break
    time.sleep(0.02)
print("held\t" + (held.read().strip() if held else "none"), flush=True)
"#;

/// Start `python3 SCRIPT ARG` under `profile`; return it once it is ready, with its sandbox id.
fn start(
    s: &Scratch,
    profile: &str,
    extra: &[&str],
    script: &str,
    arg: &str,
) -> (std::process::Child, String) {
    let mut c = run_cmd(profile, s.path(), extra, &["/usr/bin/python3", script, arg]);
    c.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = c.spawn().unwrap();
    assert!(
        eventually(20_000, || s.path().join("ready").exists()),
        "the agent never got ready"
    );
    (child, sandbox_id_of(script))
}

/// The `state` lines an agent printed: its successive observations.
fn states(out: &str) -> Vec<&str> {
    out.lines()
        .filter_map(|l| l.strip_prefix("state\t"))
        .map(|l| l.split_once('\t').unwrap().1)
        .collect()
}

#[test]
fn a_read_grant_shows_a_path_for_its_duration_and_nothing_outside_the_envelope() {
    require_root();
    let s = Scratch::new();
    let home = s.dir("home");
    std::fs::create_dir_all(home.join("datasets")).unwrap();
    std::fs::write(home.join("datasets/data.txt"), "granted rows\n").unwrap();
    s.file("agent.py", AGENT);
    let profile = log_only_profile(
        &s,
        "g",
        "default",
        "[grants]\nread = [\"{home}/datasets\"]\nmax = \"1m\"\n",
    );
    let ev = s.path().join("events.jsonl");
    let (child, id) = start(
        &s,
        &profile,
        &["--home", home.to_str().unwrap(), "--events", ev.to_str().unwrap()],
        "agent.py",
        home.join("datasets/data.txt").to_str().unwrap(),
    );
    let cordon = |args: &[&str]| {
        let mut c = cordon_command();
        c.args(args);
        output(c)
    };
    // Outside the envelope: refused, whoever asks.
    let out = cordon(&["grant", &id, "--read", "/etc", "--for", "2s"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        stderr(&out).contains("not in this sandbox's [grants] read envelope"),
        "{}",
        stderr(&out)
    );
    // Longer than the envelope allows: refused.
    let datasets = home.join("datasets");
    let out = cordon(&["grant", &id, "--read", datasets.to_str().unwrap(), "--for", "2h"]);
    assert!(
        stderr(&out).contains("at most the profile's grants.max"),
        "{}",
        stderr(&out)
    );
    std::thread::sleep(std::time::Duration::from_millis(300));
    let out = cordon(&[
        "grant",
        &id,
        "--read",
        datasets.to_str().unwrap(),
        "--for",
        "2s",
        "--reason",
        "test",
        "--on-behalf-of",
        "alice@example.com",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let listed = stdout(&cordon(&["grants", &id]));
    assert!(
        listed.contains("active") && listed.contains("datasets"),
        "{listed}"
    );
    let o = child.wait_with_output().unwrap();
    let r = String::from_utf8_lossy(&o.stdout).to_string();
    assert_eq!(
        states(&r),
        [
            "error:No such file or directory",
            "read:granted rows",
            "error:No such file or directory"
        ],
        "before, during, after the grant:\n{r}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        r.contains("held\tgranted rows"),
        "a file opened during the grant: {r}"
    );
    let events = events_of(&ev);
    let grants: Vec<&serde_json::Value> = events.iter().filter_map(|e| e.get("grant")).collect();
    let states: Vec<&str> = grants.iter().map(|g| g["state"].as_str().unwrap()).collect();
    assert_eq!(states, ["granted", "expired"], "{grants:#?}");
    assert_eq!(grants[0]["by"], "uid 0 on behalf of alice@example.com");
    assert_eq!(grants[0]["reason"], "test");
}

const WRITER: &str = r#"
import os, sys, time
path = sys.argv[1]
def state():
    try:
        with open(path, "a") as f: f.write("line\n")
        return "wrote"
    except OSError as e: return "error:" + os.strerror(e.errno)
seen = []
open("ready", "w").close()
deadline = time.time() + 30
while time.time() < deadline:
    s = state()
    if not seen or seen[-1] != s:
        seen.append(s)
        print(f"state\t{len(seen)}\t{s}", flush=True)
    if len(seen) >= 3:
        break
    time.sleep(0.02)
"#;

/// A write grant: the envelope path is bound read-write but masked; the agent cannot write
/// there before the grant (EROFS), can during it, cannot after; what it wrote is on the host.
#[test]
fn a_write_grant_makes_a_path_writable_for_its_duration() {
    require_root();
    let s = Scratch::new();
    let home = s.dir("home");
    std::fs::create_dir_all(home.join("cache")).unwrap();
    s.file("writer.py", WRITER);
    let profile = log_only_profile(&s, "w", "default", "[grants]\nwrite = [\"{home}/cache\"]\n");
    let target = home.join("cache/out.txt");
    let (child, id) = start(
        &s,
        &profile,
        &["--home", home.to_str().unwrap()],
        "writer.py",
        target.to_str().unwrap(),
    );
    std::thread::sleep(std::time::Duration::from_millis(300));
    let mut g = cordon_command();
    g.args([
        "grant",
        &id,
        "--write",
        home.join("cache").to_str().unwrap(),
        "--for",
        "1s",
    ]);
    let out = output(g);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("writable for 1 s"), "{}", stdout(&out));
    let o = child.wait_with_output().unwrap();
    let r = String::from_utf8_lossy(&o.stdout).to_string();
    assert_eq!(
        states(&r),
        [
            "error:Read-only file system",
            "wrote",
            "error:Read-only file system"
        ],
        "before, during, after:\n{r}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let written = std::fs::read_to_string(&target).unwrap();
    assert!(written.starts_with("line\n"), "{written:?}");
}
