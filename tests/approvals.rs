//! Approvals on the real kernel (docs/approvals.md): the agent asks for a piece of the
//! `[grants]` envelope with `cordon-request` and gets it only once a person (`cordon approve`)
//! or the profile's hook says yes, for the time given; what is outside the envelope is refused
//! at once; a monitor rule whose response is `ask` freezes the sandbox until the answer (thawed
//! when approved, killed when denied); a `[grants] net` name is reachable only during its
//! grant; only root or the user who started the run may answer.

mod common;

use common::*;
use std::process::Stdio;
use std::time::Duration;

/// The first pending line of sandbox `id` that contains `needle`, waited for.
fn pending_line(id: &str, needle: &str) -> String {
    let mut found = String::new();
    assert!(
        eventually(20_000, || {
            let mut c = cordon_command();
            c.args(["pending", id]);
            let out = stdout(&output(c));
            match out.lines().find(|l| l.contains(needle)) {
                Some(l) => {
                    found = l.to_string();
                    true
                }
                None => false,
            }
        }),
        "nothing pending in {id} with {needle:?}"
    );
    found
}

/// The request id (`SANDBOX/N`) a pending line starts with.
fn request_of(line: &str) -> String {
    line.split_whitespace().next().unwrap().to_string()
}

/// Start `sh -c SCRIPT` under `profile` with `home` as the home, its events to a file.
fn start_sh(
    s: &Scratch,
    profile: &str,
    home: &std::path::Path,
    script: &str,
) -> (std::process::Child, std::path::PathBuf) {
    let ev = s.path().join("events.jsonl");
    let mut c = run_cmd(
        profile,
        s.path(),
        &["--home", home.to_str().unwrap(), "--events", ev.to_str().unwrap()],
        &["/bin/sh", "-c", script],
    );
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    (c.spawn().unwrap(), ev)
}

fn cordon_ok(args: &[&str]) -> String {
    let mut c = cordon_command();
    c.args(args);
    let out = output(c);
    assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
    stdout(&out)
}

fn approvals_in(events: &[serde_json::Value]) -> Vec<serde_json::Value> {
    events.iter().filter_map(|e| e.get("approval").cloned()).collect()
}

#[test]
fn an_agent_gets_a_path_it_asks_for_only_once_approved_and_only_for_the_time_given() {
    require_root();
    let s = Scratch::new();
    let home = s.dir("home");
    s.file("home/data/x", "the data\n");
    let data = home.join("data");
    let profile = log_only_profile(
        &s,
        "req",
        "default",
        "[grants]\nread = [\"{home}/data\"]\n[approvals]\nrequests = \"ask\"\ntimeout = \"20s\"\n",
    );
    let marker = "approvals-request-3317";
    let script = format!(
        r#"d={d}
cat $d/x 2>&1
cordon-request --read $d --for 2s --why "need the training data"; echo "rc=$?"
cat $d/x 2>&1
cordon-request --read /etc --why "just looking"; echo "outside rc=$?"
sleep 3
cat $d/x 2>&1
: {marker}"#,
        d = data.display()
    );
    let (child, ev) = start_sh(&s, &profile, &home, &script);
    let id = sandbox_id_of(marker);
    let line = pending_line(&id, "read");
    assert!(
        line.contains(&format!("read {}", data.display()))
            && line.contains("\"need the training data\"")
            && line.contains("asked by pid")
            && line.contains("(cordon-request)"),
        "the summary says who asks, what and why: {line}"
    );
    let said = cordon_ok(&["approve", &request_of(&line)]);
    assert!(said.contains("approved"), "{said}");
    let o = child.wait_with_output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{out}\n{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].contains("No such file or directory"), "before: {out}");
    assert!(
        lines[1].contains("approved by uid 0") && lines[1].contains("readable for 2 s"),
        "{out}"
    );
    assert_eq!(lines[2], "rc=0", "{out}");
    assert_eq!(lines[3], "the data", "during: {out}");
    assert_eq!(lines[4], "outside rc=1", "{out}\n{err}");
    assert!(lines[5].contains("No such file or directory"), "after: {out}");
    assert!(
        err.contains("/etc is not in this sandbox's [grants] read envelope"),
        "{err}"
    );
    let approvals = approvals_in(&events_of(&ev));
    let states: Vec<(&str, &str)> = approvals
        .iter()
        .map(|a| (a["target"].as_str().unwrap(), a["state"].as_str().unwrap()))
        .collect();
    let d = data.to_str().unwrap();
    assert_eq!(
        states,
        [(d, "asked"), (d, "allowed"), ("/etc", "refused")],
        "{approvals:#?}"
    );
    assert_eq!(approvals[1]["by"], "uid 0");
    assert_eq!(approvals[0]["why"], "need the training data");
    let grants: Vec<String> = events_of(&ev)
        .iter()
        .filter_map(|e| e.get("grant"))
        .map(|g| g["state"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(grants, ["granted", "expired"]);
}

#[test]
fn at_level_5_a_request_inside_the_envelope_is_granted_without_asking() {
    require_root();
    let s = Scratch::new();
    let home = s.dir("home");
    s.file("home/data/x", "the data\n");
    let profile = log_only_profile(&s, "auto", "level-5", "[grants]\nread = [\"{home}/data\"]\n");
    let script = format!(
        "cordon-request --read {h}/data --why 'eval'; echo \"rc=$?\"; cat {h}/data/x",
        h = home.display()
    );
    let (child, ev) = start_sh(&s, &profile, &home, &script);
    let o = child.wait_with_output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("rc=0\nthe data"),
        "{out}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let approvals = approvals_in(&events_of(&ev));
    assert_eq!(
        approvals.len(),
        1,
        "one decided event, no question: {approvals:#?}"
    );
    assert_eq!(approvals[0]["state"], "allowed");
    assert!(
        approvals[0]["by"]
            .as_str()
            .unwrap()
            .contains("approvals.requests"),
        "{approvals:#?}"
    );
}

const HOOK: &str = r#"#!/bin/sh
# Approve reading the data set for a minute; refuse everything else for a minute.
req=$(cat)
case "$req" in
  *'"target":"'*/data'"'*) echo "approve for 1m" ;;
  *) echo "deny 1m" ;;
esac
"#;

#[test]
fn the_profiles_hook_answers_and_its_refusal_is_remembered() {
    require_root();
    let s = Scratch::new();
    let home = s.dir("home");
    s.file("home/data/x", "the data\n");
    s.file("home/other/y", "other\n");
    let hook = s.file("hook.sh", HOOK);
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let profile = log_only_profile(
        &s,
        "hooked",
        "default",
        &format!(
            "[grants]\nread = [\"{{home}}/data\", \"{{home}}/other\"]\n[approvals]\nrequests = \"ask\"\ntimeout = \"10s\"\nhook = [\"{}\"]\n",
            hook.display()
        ),
    );
    let script = format!(
        r#"cordon-request --read {h}/data --why "data"; echo "data rc=$?"
cat {h}/data/x
cordon-request --read {h}/other; echo "other rc=$?"
cordon-request --read {h}/other; echo "again rc=$?"
cat {h}/other/y 2>&1"#,
        h = home.display()
    );
    let (child, ev) = start_sh(&s, &profile, &home, &script);
    let o = child.wait_with_output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    let err = String::from_utf8_lossy(&o.stderr);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 6, "{out}\n{err}");
    assert!(lines[0].contains("approved by hook"), "{out}\n{err}");
    assert_eq!(
        lines[1..5],
        ["data rc=0", "the data", "other rc=1", "again rc=1"],
        "{out}\n{err}"
    );
    assert!(lines[5].contains("No such file or directory"), "{out}");
    let approvals = approvals_in(&events_of(&ev));
    let decided: Vec<(&str, &str, &str)> = approvals
        .iter()
        .filter(|a| a["state"] != "asked")
        .map(|a| {
            (
                a["state"].as_str().unwrap(),
                a["by"].as_str().unwrap(),
                a["rule"].as_str().unwrap(),
            )
        })
        .collect();
    let by = format!("hook {}", hook.display());
    assert_eq!(decided.len(), 3, "{approvals:#?}");
    assert_eq!((decided[0].0, decided[0].1), ("allowed", by.as_str()));
    assert_eq!((decided[1].0, decided[1].1), ("refused", by.as_str()));
    assert!(
        decided[2].0 == "refused" && decided[2].2.starts_with("remembered from #"),
        "the second ask is answered by the remembered refusal, without a question: {approvals:#?}"
    );
    assert_eq!(
        approvals.iter().filter(|a| a["state"] == "asked").count(),
        2,
        "{approvals:#?}"
    );
}

/// A profile whose `sensitive_read` asks about reading `bait*` in the workspace.
fn asking_profile(s: &Scratch, name: &str) -> String {
    profile_file(
        s,
        name,
        "[monitor.sensitive_read]\nresponse = \"ask\"\npaths = [\"{workspace}/bait*\"]\n[approvals]\ntimeout = \"20s\"\n",
    )
}

#[test]
fn a_rule_that_asks_freezes_the_sandbox_until_approved_and_a_denial_kills_it() {
    require_root();
    for (approve, marker) in [(true, "ask-rule-approve-5521"), (false, "ask-rule-deny-5522")] {
        let s = Scratch::new();
        s.file("bait.env", "TOKEN=x\n");
        let profile = asking_profile(&s, "asks");
        // The agent goes on after the read: the rule's freeze stops it there.
        let script = format!("cat bait.env > /dev/null; sleep 1; echo after > after.txt # {marker}");
        let mut c = run_cmd(&profile, s.path(), &[], &["/bin/sh", "-c", &script]);
        c.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        let id = sandbox_id_of(marker);
        let line = pending_line(&id, "rule sensitive_read");
        assert!(
            line.contains("bait.env"),
            "the question says what the rule saw: {line}"
        );
        // Frozen while it waits: the agent has not gone on.
        std::thread::sleep(Duration::from_millis(300));
        assert!(!s.path().join("after.txt").exists(), "the sandbox waits frozen");
        let verb = if approve { "approve" } else { "deny" };
        cordon_ok(&[verb, &request_of(&line)]);
        let status = wait_within(&mut child, 20_000);
        let mut err = String::new();
        use std::io::Read as _;
        child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
        if approve {
            assert_eq!(status.code(), Some(0), "{err}");
            assert!(s.path().join("after.txt").exists(), "thawed, it went on: {err}");
        } else {
            assert_eq!(status.code(), Some(137), "{err}");
            assert!(!s.path().join("after.txt").exists(), "killed, it did not go on");
        }
        assert!(
            err.contains("ASK ") && err.contains("rule sensitive_read froze the sandbox"),
            "{err}"
        );
    }
}

const NET_AGENT: &str = r#"
import os, sys, time, urllib.request
port = int(sys.argv[1])
def get():
    try:
        return urllib.request.urlopen(f"http://granted.fixture.test:{port}/", timeout=5).read().decode()
    except Exception as e:
        return "error:" + type(e).__name__
def wait(name):
    end = time.time() + 20
    while not os.path.exists(name) and time.time() < end:
        time.sleep(0.02)
print("before\t" + get(), flush=True)
open("ready", "w").close()
wait("go")
print("during\t" + get(), flush=True)
wait("expired")
print("after\t" + get(), flush=True)
"#;

#[test]
fn a_net_grant_makes_a_name_of_the_envelope_reachable_for_its_time_only() {
    require_root();
    let s = Scratch::new();
    let port = http_fixture("granted hello", 2);
    s.file("net.py", NET_AGENT);
    let profile = log_only_profile(
        &s,
        "netgrant",
        "default",
        &format!(
            "[network]\nmode = \"proxy\"\nresolve = {{ \"granted.fixture.test\" = \"127.0.0.1\" }}\n[grants]\nnet = [\"granted.fixture.test:{port}\"]\n"
        ),
    );
    let mut c = run_cmd(
        &profile,
        s.path(),
        &[],
        &["/usr/bin/python3", "net.py", &port.to_string()],
    );
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = c.spawn().unwrap();
    assert!(
        eventually(20_000, || s.path().join("ready").exists()),
        "the agent never got ready"
    );
    let id = sandbox_id_of("net.py");
    // Outside the envelope: refused at the command, nothing changed.
    let mut bad = cordon_command();
    bad.args(["grant", &id, "--net", "evil.test:443", "--for", "1m"]);
    let out = output(bad);
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("not in this sandbox's [grants] net envelope"),
        "{}",
        stderr(&out)
    );
    let said = cordon_ok(&[
        "grant",
        &id,
        "--net",
        &format!("granted.fixture.test:{port}"),
        "--for",
        "2s",
    ]);
    assert!(said.contains("reachable for 2 s"), "{said}");
    std::fs::write(s.path().join("go"), "").unwrap();
    std::thread::sleep(Duration::from_millis(2_500));
    std::fs::write(s.path().join("expired"), "").unwrap();
    let o = child.wait_with_output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    let err = String::from_utf8_lossy(&o.stderr);
    let got: Vec<&str> = out.lines().collect();
    assert!(got[0].starts_with("before\terror:"), "{out}\n{err}");
    assert_eq!(got[1], "during\tgranted hello", "{out}\n{err}");
    assert!(got[2].starts_with("after\terror:"), "{out}\n{err}");
}

#[test]
fn only_root_or_the_user_who_started_the_run_may_decide_for_it() {
    require_root();
    let s = Scratch::new();
    let marker = "approvals-owner-8812";
    let home = s.dir("home");
    let mut c = run_cmd(
        "default",
        s.path(),
        &["--home", home.to_str().unwrap()],
        &["/bin/sh", "-c", &format!("sleep 30 # {marker}")],
    );
    c.env("SUDO_UID", "1000").env("SUDO_GID", "1000");
    c.stdout(Stdio::null()).stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let id = sandbox_id_of(marker);
    // A copy of cordon other users can run wherever the build directory is.
    let bin = s.dir("bin");
    {
        use std::os::unix::fs::PermissionsExt as _;
        for d in [s.path(), bin.as_path()] {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        std::fs::copy(cordon(), bin.join("cordon")).unwrap();
    }
    let as_uid = |uid: &str, args: &[&str]| {
        let mut c = std::process::Command::new("setpriv");
        c.args(["--reuid", uid, "--regid", uid, "--clear-groups", "--"])
            .arg(bin.join("cordon"))
            .args(args)
            .env("CORDON_TRACE_DIR", "/tmp");
        output(c)
    };
    // Another user is refused and nothing changes.
    let other = as_uid("1001", &["freeze", &id]);
    assert_ne!(other.status.code(), Some(0), "{}", stdout(&other));
    let ps = cordon_ok(&["ps"]);
    assert!(
        !ps.lines().any(|l| l.starts_with(&id) && l.contains("frozen")),
        "{ps}"
    );
    // The owner may.
    let owner = as_uid("1000", &["freeze", &id]);
    assert_eq!(owner.status.code(), Some(0), "{}", stderr(&owner));
    let owner = as_uid("1000", &["kill", &id]);
    assert_eq!(owner.status.code(), Some(0), "{}", stderr(&owner));
    let status = wait_within(&mut child, 10_000);
    assert_eq!(status.code(), Some(137));
}

#[test]
fn on_a_terminal_the_question_is_asked_there_and_one_key_answers_it() {
    require_root();
    let s = Scratch::new();
    let home = s.dir("home");
    s.file("home/data/x", "the data\n");
    s.file("home/other/y", "other\n");
    let profile = log_only_profile(
        &s,
        "tty",
        "default",
        "[grants]\nread = [\"{home}/data\", \"{home}/other\"]\n[approvals]\nrequests = \"ask\"\ntimeout = \"20s\"\n",
    );
    let script = format!(
        "cordon-request --read {h}/data --why 'tty test'; echo \"first rc=$?\"; cat {h}/data/x; \
         cordon-request --read {h}/other; echo \"second rc=$?\"",
        h = home.display()
    );
    let (mut child, mut pty) = spawn_on_pty(run_cmd(
        &profile,
        s.path(),
        &["--home", home.to_str().unwrap()],
        &["/bin/sh", "-c", &script],
    ));
    let first = pty.read_until("then Enter: ", 20_000);
    assert!(
        first.contains("cordon ASK #1") && first.contains("asks to read") && first.contains("\"tty test\""),
        "{first}"
    );
    // Keys typed the moment the question appears are thrown away (the agent could provoke
    // terminal replies); a key counts with Enter after it.
    std::thread::sleep(std::time::Duration::from_millis(400));
    pty.send("y\r");
    let second = pty.read_until("then Enter: ", 20_000);
    assert!(second.contains("approved"), "{second}");
    assert!(
        second.contains("first rc=0") && second.contains("the data"),
        "{second}"
    );
    assert!(second.contains("cordon ASK #2"), "{second}");
    std::thread::sleep(std::time::Duration::from_millis(400));
    pty.send("n\r");
    let rest = pty.read_until("second rc=", 20_000);
    let rest = rest + &pty.read_until("\n", 2_000);
    assert!(rest.contains("denied") && rest.contains("second rc=1"), "{rest}");
    let status = wait_within(&mut child, 20_000);
    assert_eq!(status.code(), Some(0));
}

#[test]
fn a_secret_grant_puts_the_real_key_in_its_hosts_requests_only_while_it_lasts() {
    require_root();
    let s = Scratch::new();
    let d = s.path();
    test_ca(d, "ca.pem", &["api.anthropic.com"], "api");
    let key = "sk-ant-api03-secret-grant-canary-5511aa22bb33cc44dd55";
    let mut api = messages_stand_in(d, "127.0.0.14", "stand-in got the real key", Some(key));
    let profile = log_only_profile(
        &s,
        "secretgrant",
        "agent",
        &format!(
            "{}[grants]\nsecrets = [\"ANTHROPIC_API_KEY\"]\n",
            anthropic_stand_in("127.0.0.14", &d.join("ca.pem"))
        ),
    );
    let script = r#"call() { curl -s -o /dev/null -w '%{http_code}' -X POST -H "x-api-key: $ANTHROPIC_API_KEY" \
  -H 'content-type: application/json' -H 'anthropic-version: 2023-06-01' \
  -d '{"model":"m","max_tokens":8,"messages":[{"role":"user","content":"hi"}]}' https://api.anthropic.com/v1/messages; }
wait_for() { i=0; while [ ! -e "$1" ] && [ $i -lt 400 ]; do sleep 0.05; i=$((i+1)); done; }
echo "before $(call)"; : > ready; wait_for go
echo "during $(call)"; wait_for expired
echo "after $(call)" # secret-grant-7731"#;
    let (trace, ev) = (d.join("run.trace"), d.join("events.jsonl"));
    let mut c = run_cmd(
        &profile,
        d,
        &[
            "--trace",
            trace.to_str().unwrap(),
            "--events",
            ev.to_str().unwrap(),
        ],
        &["/bin/sh", "-c", script],
    );
    c.env("ANTHROPIC_API_KEY", key);
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = c.spawn().unwrap();
    assert!(
        eventually(20_000, || d.join("ready").exists()),
        "the agent never got ready"
    );
    let id = sandbox_id_of("secret-grant-7731");
    let mut bad = cordon_command();
    bad.args(["grant", &id, "--secret", "OPENAI_API_KEY", "--for", "1m"]);
    let out = output(bad);
    assert!(
        stderr(&out).contains("not in this sandbox's [grants] secret envelope"),
        "{}",
        stderr(&out)
    );
    let said = cordon_ok(&["grant", &id, "--secret", "ANTHROPIC_API_KEY", "--for", "2s"]);
    assert!(said.contains("for 2 s"), "{said}");
    std::fs::write(d.join("go"), "").unwrap();
    std::thread::sleep(Duration::from_millis(2_500));
    std::fs::write(d.join("expired"), "").unwrap();
    let o = child.wait_with_output().unwrap();
    let _ = api.kill();
    let _ = api.wait();
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    let r: Vec<&str> = out.lines().collect();
    assert_eq!(r.len(), 3, "{out}\n{err}");
    assert!(
        r[0].starts_with("before ") && r[0] != "before 200",
        "{out}\n{err}"
    );
    assert_eq!(r[1], "during 200", "{out}\n{err}");
    assert!(r[2].starts_with("after ") && r[2] != "after 200", "{out}\n{err}");
    let events = events_of(&ev);
    let refused = events
        .iter()
        .filter_map(|e| e.get("connection").or_else(|| e.get("http")))
        .filter(|c| c["rule"] == "secret not granted")
        .count();
    assert!(
        refused >= 2,
        "before and after were refused as not granted: {events:#?}"
    );
    assert!(
        !events
            .iter()
            .filter_map(|e| e.get("detection"))
            .any(|x| x["rule"] == "exfiltration"),
        "the placeholder went where its secret goes: not an exfiltration"
    );
    let has = |b: &[u8]| b.windows(key.len()).any(|w| w == key.as_bytes());
    assert!(!has(&std::fs::read(&trace).unwrap()) && !has(&std::fs::read(&ev).unwrap()));
    // The grant is in the signed trace, in order: granted, then expired.
    let verified = cordon_ok(&["trace", "verify", trace.to_str().unwrap()]);
    assert!(!verified.is_empty());
    let shown = cordon_ok(&["trace", "show", trace.to_str().unwrap(), "--format", "json"]);
    let states: Vec<String> = shown
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|r| r.get("event").and_then(|e| e.get("grant")).cloned())
        .map(|g| g["state"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(states, ["granted", "expired"]);
    assert!(!has(out.as_bytes()) && !has(err.as_bytes()));
}

const CONNECT_AGENT: &str = r#"
import sys, urllib.request
port = int(sys.argv[1])
def get(name):
    try:
        return urllib.request.urlopen(f"http://{name}:{port}/", timeout=30).read().decode()
    except Exception as e:
        return "error:" + type(e).__name__
print("first\t" + get("held.fixture.test"), flush=True)
print("again\t" + get("held.fixture.test"), flush=True)
print("refused\t" + get("nope.fixture.test"), flush=True)
"#;

#[test]
fn a_held_connection_goes_through_when_approved_and_an_approval_for_a_while_allows_the_next() {
    require_root();
    let s = Scratch::new();
    let port = http_fixture("approved hello", 3);
    s.file("connect.py", CONNECT_AGENT);
    let profile = log_only_profile(
        &s,
        "held",
        "default",
        "[network]\nmode = \"proxy\"\nunlisted = \"ask\"\nask_timeout = \"20s\"\n\
         resolve = { \"held.fixture.test\" = \"127.0.0.1\", \"nope.fixture.test\" = \"127.0.0.1\" }\n",
    );
    let ev = s.path().join("events.jsonl");
    let mut c = run_cmd(
        &profile,
        s.path(),
        &["--events", ev.to_str().unwrap()],
        &["/usr/bin/python3", "connect.py", &port.to_string()],
    );
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = c.spawn().unwrap();
    let id = sandbox_id_of("connect.py");
    let line = pending_line(&id, &format!("connect held.fixture.test:{port}"));
    cordon_ok(&["approve", &request_of(&line), "--for", "1m"]);
    let line = pending_line(&id, "connect nope.fixture.test");
    cordon_ok(&["deny", &request_of(&line)]);
    let o = child.wait_with_output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    let err = String::from_utf8_lossy(&o.stderr);
    let r = results(&out);
    assert_eq!(r["first"], "approved hello", "{out}\n{err}");
    assert_eq!(r["again"], "approved hello", "{out}\n{err}");
    assert!(r["refused"].starts_with("error:"), "{out}");
    let approvals = approvals_in(&events_of(&ev));
    let asked = approvals.iter().filter(|a| a["state"] == "asked").count();
    assert_eq!(
        asked, 2,
        "the second connection is allowed by the answer given for a while: {approvals:#?}"
    );
    let first = approvals
        .iter()
        .find(|a| a["state"] == "allowed")
        .unwrap_or_else(|| panic!("{approvals:#?}"));
    assert_eq!(
        (first["by"].as_str(), first["forMs"].as_str()),
        (Some("uid 0"), Some("60000")),
        "{first}"
    );
    let changes: Vec<serde_json::Value> = events_of(&ev)
        .iter()
        .filter_map(|e| e.get("netChange").cloned())
        .collect();
    assert!(
        changes
            .iter()
            .any(|c| c["action"] == "allow" && c["rule"] == format!("held.fixture.test:{port}")),
        "{changes:#?}"
    );
}

#[test]
fn a_grant_in_one_sandbox_shows_nothing_in_another() {
    require_root();
    let s = Scratch::new();
    let home = s.dir("home");
    s.file("home/data/x", "the data\n");
    let profile = log_only_profile(&s, "two", "default", "[grants]\nread = [\"{home}/data\"]\n");
    let x = home.join("data/x");
    let script = |marker: &str| {
        format!(
            "i=0; while [ ! -e {go} ] && [ $i -lt 400 ]; do sleep 0.05; i=$((i+1)); done; cat {x} 2>&1 # {marker}",
            go = s.path().join("go").display(),
            x = x.display()
        )
    };
    let spawn = |marker: &str| {
        let mut c = run_cmd(
            &profile,
            s.path(),
            &["--home", home.to_str().unwrap()],
            &["/bin/sh", "-c", &script(marker)],
        );
        c.stdout(Stdio::piped()).stderr(Stdio::piped());
        c.spawn().unwrap()
    };
    let (a, b) = (spawn("two-sandboxes-a-4411"), spawn("two-sandboxes-b-4412"));
    let ida = sandbox_id_of("two-sandboxes-a-4411");
    sandbox_id_of("two-sandboxes-b-4412");
    cordon_ok(&[
        "grant",
        &ida,
        "--read",
        home.join("data").to_str().unwrap(),
        "--for",
        "1m",
    ]);
    std::fs::write(s.path().join("go"), "").unwrap();
    let (oa, ob) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert_eq!(String::from_utf8_lossy(&oa.stdout).trim(), "the data");
    assert!(
        String::from_utf8_lossy(&ob.stdout).contains("No such file or directory"),
        "{}",
        String::from_utf8_lossy(&ob.stdout)
    );
}

const APPROVE_HOOK: &str = "#!/bin/sh\ncat > /dev/null\necho approve\n";

#[test]
fn claude_code_asks_for_a_path_with_cordon_request_and_gets_it_when_the_hook_approves() {
    require_root();
    let s = Scratch::new();
    let d = s.path();
    let ws = s.dir("ws");
    let home = s.dir("home");
    s.file("home/data/x", "the held-out data\n");
    let hook = s.file("approve.sh", APPROVE_HOOK);
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    test_ca(d, "ca.pem", &["api.anthropic.com"], "api");
    let key = "sk-ant-api03-approvals-canary-99887766554433221100aa";
    let data = home.join("data");
    let tool = format!(
        "cordon-request --read {} --why 'the task needs the data' && cat {}/x > got.txt",
        data.display(),
        data.display()
    );
    let api = messages_stand_in_with(d, "127.0.0.15", "done", Some(key), &[("TOOL_COMMAND", &tool)]);
    let profile = log_only_profile(
        &s,
        "claude-asks",
        "claude",
        &format!(
            "{}[grants]\nread = [\"{{home}}/data\"]\n\
             [approvals]\nrequests = \"ask\"\ntimeout = \"30s\"\nhook = [\"{}\"]\n",
            anthropic_stand_in("127.0.0.15", &d.join("ca.pem")),
            hook.display()
        ),
    );
    let ev = d.join("events.jsonl");
    let extra = ["--home", home.to_str().unwrap(), "--events", ev.to_str().unwrap()];
    let out = run_claude(&profile, &ws, &extra, "use the data", key, api);
    assert_eq!(
        std::fs::read_to_string(ws.join("got.txt"))
            .unwrap_or_default()
            .trim(),
        "the held-out data",
        "{}\n{}",
        stdout(&out),
        stderr(&out)
    );
    let events = events_of(&ev);
    let approvals = approvals_in(&events);
    let by = format!("hook {}", hook.display());
    assert!(
        approvals
            .iter()
            .any(|a| a["state"] == "allowed" && a["by"] == by.as_str() && a["what"] == "read"),
        "{approvals:#?}"
    );
    assert!(
        events
            .iter()
            .filter_map(|e| e.get("grant"))
            .any(|g| g["state"] == "granted"),
        "the approval became a grant"
    );
    let detections: Vec<&serde_json::Value> = events.iter().filter_map(|e| e.get("detection")).collect();
    assert!(detections.is_empty(), "false alarms: {detections:#?}");
}
