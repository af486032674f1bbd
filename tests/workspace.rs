//! The transactional workspace on the real kernel: the agent's writes land in an overlay
//! layer; the real workspace is byte-identical until `cordon commit`, which leaves exactly the
//! agent's result; `cordon rollback` leaves it as it was; a file the user changed meanwhile is
//! refused; `write_quota` is ENOSPC to the agent; a killed cordon leaves a layer that `diff`
//! and `rollback` still work on.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Stdio};

/// Every entry under `root` (`.git` included): type, mode and bytes or link target.
fn snapshot(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let what = if m.file_type().is_symlink() {
                format!("link {}", std::fs::read_link(&p).unwrap().display())
            } else if m.is_dir() {
                stack.push(p.clone());
                format!("dir {:o}", m.mode() & 0o7777)
            } else {
                let bytes = std::fs::read(&p).unwrap();
                format!("file {:o} {}", m.mode() & 0o7777, hex_sha256(&bytes))
            };
            out.insert(rel, what);
        }
    }
    out
}

fn hex_sha256(b: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

/// The keys whose values differ between two listings (for a readable failure).
fn differing(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>) -> Vec<String> {
    a.keys()
        .chain(b.keys())
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| format!("{k}: {:?} vs {:?}", a.get(k), b.get(k)))
        .collect()
}

/// The same listing, made by the agent inside the sandbox (what it sees of its workspace).
const DUMP: &str = r#"
import hashlib, os, sys
out = {}
for d, dirs, files in os.walk(".", followlinks=False):
    for n in dirs + files:
        p = os.path.join(d, n)[2:]
        st = os.lstat(p)
        if os.path.islink(p): out[p] = "link " + os.readlink(p)
        elif os.path.isdir(p): out[p] = "dir %o" % (st.st_mode & 0o7777)
        else: out[p] = "file %o %s" % (st.st_mode & 0o7777, hashlib.sha256(open(p, "rb").read()).hexdigest())
for k in sorted(out): print("DUMP\t%s\t%s" % (k, out[k]))
"#;

fn parse_dump(stdout: &str) -> BTreeMap<String, String> {
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix("DUMP\t"))
        .map(|l| {
            let (k, v) = l.split_once('\t').unwrap();
            (k.to_string(), v.to_string())
        })
        .collect()
}

fn git(ws: &Path, args: &[&str]) {
    let st = Command::new("git")
        .current_dir(ws)
        .args(["-c", "user.email=t@t", "-c", "user.name=t"])
        .args(args)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "git {args:?}");
}

fn project(s: &Scratch) -> std::path::PathBuf {
    let ws = s.dir("ws");
    s.file("ws/edit.txt", "one\ntwo\n");
    s.file("ws/gone.txt", "bye\n");
    s.file("ws/old-name.txt", "moved\n");
    s.file("ws/run.sh", "#!/bin/sh\n");
    s.file("ws/sub/deep/keep.txt", "keep\n");
    s.file("ws/tree/a.txt", "a\n");
    s.file("ws/tree/b.txt", "b\n");
    git(&ws, &["init", "-q", "."]);
    git(&ws, &["add", "-A"]);
    git(&ws, &["commit", "-qm", "init"]);
    ws
}

/// The agent's edits of the first test: one of each kind, then a git commit and a gc.
const EDITS: &str = "set -e
echo three >> edit.txt
echo new > added.txt
rm gone.txt
mv old-name.txt new-name.txt
chmod 755 run.sh
ln -s edit.txt link
ln added.txt hard
rm -r tree
mkdir -p made/inner && echo z > made/inner/z.txt
git -c user.email=a@a -c user.name=a add -A
git -c user.email=a@a -c user.name=a commit -qm agent
git gc -q
";

fn run_transactional(ws: &Path, extra: &[&str], script: &str) -> std::process::Output {
    let mut args = vec!["--transactional"];
    args.extend_from_slice(extra);
    output(run_cmd("default", ws, &args, &["/bin/sh", "-c", script]))
}

fn cordon_out(args: &[&str]) -> std::process::Output {
    let mut c = cordon_command();
    c.args(args);
    output(c)
}

/// Refused with cordon's status (125) and a message holding `why`.
fn refused(out: &std::process::Output, why: &str) {
    assert_eq!(out.status.code(), Some(125), "{}", stderr(out));
    assert!(stderr(out).contains(why), "{}", stderr(out));
}

/// The id of the run with pending changes in `ws` (`cordon changes`).
fn pending_id(ws: &Path) -> Option<String> {
    let out = stdout(&cordon_out(&["changes"]));
    out.lines()
        .find(|l| l.contains(&*ws.to_string_lossy()))
        .map(|l| l.split_whitespace().next().unwrap().to_string())
}

type Lines = std::io::Lines<BufReader<std::process::ChildStdout>>;

/// Start a transactional run of `sh -c SCRIPT` (stdin piped) and return once the script
/// printed `ready`, with the rest of its output.
fn start_ready(ws: &Path, commit: &str, script: &str) -> (std::process::Child, Lines) {
    let mut child = run_cmd(
        "default",
        ws,
        &["--transactional", "--commit", commit, "-q"],
        &["/bin/sh", "-c", script],
    )
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .spawn()
    .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "ready");
    (child, lines)
}

#[test]
fn the_workspace_is_untouched_until_commit_and_then_holds_the_agents_result() {
    require_root();
    let s = Scratch::new();
    let ws = project(&s);
    let before = snapshot(&ws);
    let script = format!("{EDITS}\npython3 -c '{}'", DUMP.replace('\'', "'\\''"));
    let out = run_transactional(&ws, &["--commit", "never"], &script);
    assert!(out.status.success(), "{}", stderr(&out));
    let agent_view = parse_dump(&stdout(&out));
    assert!(agent_view.contains_key("made/inner/z.txt"), "{agent_view:?}");
    assert_eq!(
        differing(&snapshot(&ws), &before),
        Vec::<String>::new(),
        "the real workspace changed before commit"
    );

    let id = pending_id(&ws).expect("the run's changes are pending");
    let names = stdout(&cordon_out(&["diff", &id, "--stat"]));
    let ours: Vec<&str> = names.lines().filter(|l| !l.contains(" .git")).collect();
    assert_eq!(
        ours,
        [
            "A added.txt (4 bytes, mode 644)",
            "M edit.txt (8 -> 14 bytes)",
            "D gone.txt (4 bytes, mode 644)",
            "A hard (hard link of added.txt)",
            "A link (symlink)",
            "A made (directory, mode 755)",
            "A made/inner (directory, mode 755)",
            "A made/inner/z.txt (2 bytes, mode 644)",
            "R old-name.txt -> new-name.txt",
            "P run.sh (mode 644 -> 755)",
            "D tree/a.txt (2 bytes, mode 644)",
            "D tree/b.txt (2 bytes, mode 644)",
            "D tree (directory, mode 755)",
        ],
        "{names}"
    );
    let unified = stdout(&cordon_out(&["diff", &id, "edit.txt"]));
    assert!(
        unified.contains("+++ b/edit.txt") && unified.contains("+three"),
        "{unified}"
    );

    let c = cordon_out(&["commit", &id]);
    assert!(c.status.success(), "{}{}", stdout(&c), stderr(&c));
    assert_eq!(
        differing(&snapshot(&ws), &agent_view),
        Vec::<String>::new(),
        "after commit the workspace is the agent's result"
    );
    let hard = std::fs::metadata(ws.join("hard")).unwrap();
    assert_eq!(hard.ino(), std::fs::metadata(ws.join("added.txt")).unwrap().ino());
    assert_eq!(
        owner_of(&ws.join("added.txt")),
        0,
        "committed files belong to the workspace owner"
    );
    let fsck = Command::new("git")
        .current_dir(&ws)
        .args(["fsck"])
        .output()
        .unwrap();
    assert!(
        fsck.status.success(),
        "{}{}",
        String::from_utf8_lossy(&fsck.stdout),
        String::from_utf8_lossy(&fsck.stderr)
    );
    let log = Command::new("git")
        .current_dir(&ws)
        .args(["log", "--format=%s"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&log.stdout), "agent\ninit\n");
    assert_eq!(pending_id(&ws), None, "nothing pending after a full commit");
    // The sealed trace names every change; a signed follow-up beside it records the commit.
    let trace = Path::new(TEST_TRACE_DIR).join(format!("{id}.trace"));
    let v = cordon_out(&["trace", "verify", &trace.to_string_lossy()]);
    let said = stdout(&v);
    assert!(v.status.success(), "{said}{}", stderr(&v));
    assert!(said.contains("follow-up 0: commit by uid 0"), "{said}");
    let shown = stdout(&cordon_out(&["trace", "show", &trace.to_string_lossy()]));
    let sha = hex_sha256(b"z\n");
    assert!(shown.contains(&format!("A made/inner/z.txt {sha}")), "{shown}");
    let again = cordon_out(&["commit", &id]);
    refused(&again, "no run with pending changes");
}

#[test]
fn rollback_leaves_the_workspace_as_it_was() {
    require_root();
    let s = Scratch::new();
    let ws = project(&s);
    let before = snapshot(&ws);
    let out = run_transactional(
        &ws,
        &["--commit", "never"],
        "rm -rf ./*; echo x > planted.sh; echo x >> .git/HEAD; echo evil >> .git/config || echo protected",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    // Protected paths stay protected inside the layer.
    assert!(stdout(&out).contains("protected"), "{}", stdout(&out));
    let id = pending_id(&ws).unwrap();
    let bad = cordon_out(&["commit", &id, "not-changed.txt"]);
    refused(&bad, "not-changed.txt: the agent did not change it");
    let r = cordon_out(&["rollback", &id]);
    assert!(r.status.success(), "{}", stderr(&r));
    assert_eq!(differing(&snapshot(&ws), &before), Vec::<String>::new());
    assert_eq!(pending_id(&ws), None);
    assert!(!Path::new("/var/lib/cordon/changes").join(&id).exists());
}

#[test]
fn a_file_the_user_changed_meanwhile_is_refused_and_the_others_applied() {
    require_root();
    let s = Scratch::new();
    let ws = project(&s);
    let (mut child, _lines) = start_ready(
        &ws,
        "always",
        "echo agent > edit.txt; echo agent > added.txt; echo ready; sleep 3",
    );
    // The user edits the same file in the real workspace while the agent runs.
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::write(ws.join("edit.txt"), "user\n").unwrap();
    let st = wait_within(&mut child, 30_000);
    assert!(st.success());
    assert_eq!(std::fs::read_to_string(ws.join("edit.txt")).unwrap(), "user\n");
    assert_eq!(std::fs::read_to_string(ws.join("added.txt")).unwrap(), "agent\n");
    let id = pending_id(&ws).expect("the refused change stays pending");
    let names = stdout(&cordon_out(&["diff", &id, "--name-only"]));
    assert_eq!(names, "edit.txt\n");
    let again = cordon_out(&["commit", &id]);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        stderr(&again)
            .contains("not committed: edit.txt: changed in the real workspace after the run started"),
        "{}",
        stderr(&again)
    );
    assert!(cordon_out(&["rollback", &id]).status.success());
}

#[test]
fn write_quota_is_enospc_to_the_agent() {
    require_root();
    let s = Scratch::new();
    let ws = s.dir("ws");
    s.file("ws/gone.txt", "bye\n");
    s.file("ws/d/x.txt", "x\n");
    let profile = profile_file(
        &s,
        "quota",
        "[filesystem]\nworkspace = \"transactional\"\nwrite_quota = \"4M\"\ncommit = \"never\"\n",
    );
    let ev = s.path().join("events.jsonl");
    let out = output(run_cmd(
        &profile,
        &ws,
        &["--events", ev.to_str().unwrap()],
        &[
            "/bin/sh",
            "-c",
            // The agent goes on a while after: the cap is reported while the run goes on.
            "rm gone.txt; rm -r d; mkdir d; echo y > d/y.txt; dd if=/dev/zero of=big bs=1M count=16 2>&1; echo dd=$?; sleep 0.6",
        ],
    ));
    let text = stdout(&out);
    assert!(
        text.contains("No space left on device") && text.contains("dd=1"),
        "{text}{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("reached its write quota"),
        "{}",
        stderr(&out)
    );
    assert!(!ws.join("big").exists(), "the host's workspace is untouched");
    let reached: Vec<serde_json::Value> = events_of(&ev)
        .iter()
        .filter_map(|e| e.get("detection").cloned())
        .filter(|d| d["rule"] == "write_quota")
        .collect();
    assert_eq!(
        reached.len(),
        1,
        "one live event says the cap was reached: {reached:#?}"
    );
    assert!(
        reached[0]["summary"].as_str().unwrap().contains("ENOSPC"),
        "{reached:#?}"
    );
    let id = pending_id(&ws).unwrap();
    // The layer left its tmpfs for the disk when the run ended (it survives a reboot), with
    // its whiteouts and opaque directory.
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    assert!(!mounts.contains(&id), "{mounts}");
    assert_eq!(
        stdout(&cordon_out(&["diff", &id, "--name-only"])),
        "big\nd/x.txt\nd/y.txt\ngone.txt\n"
    );
    let stat = stdout(&cordon_out(&["diff", &id, "--stat", "big"]));
    let size: u64 = stat
        .split_whitespace()
        .nth(2)
        .and_then(|n| n.trim_start_matches('(').parse().ok())
        .unwrap_or(u64::MAX);
    assert!(size <= 4 << 20, "{stat}");
    assert!(cordon_out(&["rollback", &id]).status.success());
    // --direct cannot drop the cap silently.
    let direct = output(run_cmd(&profile, &ws, &["--direct"], &["/bin/true"]));
    refused(&direct, "write_quota");
}

#[test]
fn a_killed_cordon_leaves_a_layer_diff_and_rollback_still_work_on() {
    require_root();
    let s = Scratch::new();
    let ws = project(&s);
    let before = snapshot(&ws);
    let (mut child, _lines) = start_ready(&ws, "never", "echo agent >> edit.txt; echo ready; sleep 20");
    let id = pending_id(&ws).unwrap();
    let running = cordon_out(&["rollback", &id]);
    refused(&running, "still running");
    // The diff works while it runs.
    assert_eq!(stdout(&cordon_out(&["diff", &id, "--name-only"])), "edit.txt\n");
    child.kill().unwrap();
    child.wait().unwrap();
    let listed = stdout(&cordon_out(&["changes"]));
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with(&id) && l.contains("cordon died")),
        "{listed}"
    );
    assert_eq!(stdout(&cordon_out(&["diff", &id, "--name-only"])), "edit.txt\n");
    // The agent may outlive its supervisor for a moment; the rollback is refused only while
    // cordon itself runs.
    assert!(eventually(10_000, || cordon_out(&["rollback", &id])
        .status
        .success()));
    assert_eq!(differing(&snapshot(&ws), &before), Vec::<String>::new());
}

#[test]
fn bad_input_is_refused_with_a_clear_message() {
    require_root();
    let unknown = cordon_out(&["diff", "zzzz-no-such-run"]);
    refused(&unknown, "no run with pending changes matches");
    let s = Scratch::new();
    let ws = s.dir("ws");
    let out = run_transactional(&ws, &[], "true");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        pending_id(&ws),
        None,
        "a run that changed nothing leaves no layer"
    );
}

#[test]
fn a_mass_deletion_stopped_by_a_rollback_rule_leaves_every_file_in_place() {
    require_root();
    let s = Scratch::new();
    let ws = project(&s);
    for i in 0..40 {
        s.file(&format!("ws/many/f{i}.txt"), "data\n");
    }
    let before = snapshot(&ws);
    let profile = profile_file(
        &s,
        "rollback",
        "[filesystem]\nworkspace = \"transactional\"\ncommit = \"always\"\n[monitor]\nfrozen_limit = \"5s\"\n[monitor.deleted]\nresponse = \"rollback\"\nlimit = 20\n",
    );
    let out = output(run_cmd(
        &profile,
        &ws,
        &[],
        &[
            "/bin/sh",
            "-c",
            "for f in many/* edit.txt; do rm \"$f\"; done; sleep 5; echo survived",
        ],
    ));
    assert_eq!(out.status.code(), Some(137), "{}", stderr(&out));
    assert!(!stdout(&out).contains("survived"));
    let err = stderr(&out);
    assert!(err.contains("rule deleted rolled the run back"), "{err}");
    let id = err
        .split_whitespace()
        .skip_while(|w| *w != "sandbox")
        .nth(1)
        .expect("the start line names the sandbox")
        .to_string();
    let trace = Path::new(TEST_TRACE_DIR).join(format!("{id}.trace"));
    let v = cordon_out(&["trace", "verify", &trace.to_string_lossy()]);
    assert!(v.status.success(), "{}{}", stdout(&v), stderr(&v));
    assert!(
        stdout(&v).contains("follow-up 0: rollback (rule deleted) by uid 0"),
        "{}",
        stdout(&v)
    );
    assert_eq!(differing(&snapshot(&ws), &before), Vec::<String>::new());
    assert_eq!(pending_id(&ws), None);
    // The same rule in a direct run cannot keep its promise: refused before the agent starts.
    let direct = output(run_cmd(&profile, &ws, &["--direct"], &["/bin/true"]));
    refused(&direct, "monitor.deleted: response \"rollback\"");
}

#[test]
fn a_commit_while_the_run_goes_on_applies_what_the_agent_wrote_so_far() {
    require_root();
    let s = Scratch::new();
    let ws = project(&s);
    let (mut child, mut lines) = start_ready(
        &ws,
        "never",
        "echo first > edit.txt; echo ready; read go; echo second > edit.txt; echo again",
    );
    let id = pending_id(&ws).unwrap();
    let c = cordon_out(&["commit", &id, "edit.txt"]);
    assert!(c.status.success(), "{}", stderr(&c));
    assert_eq!(std::fs::read_to_string(ws.join("edit.txt")).unwrap(), "first\n");
    assert_eq!(
        stdout(&cordon_out(&["diff", &id, "--name-only"])),
        "",
        "nothing pending after it"
    );
    use std::io::Write;
    writeln!(child.stdin.take().unwrap(), "go").unwrap();
    assert_eq!(lines.next().unwrap().unwrap(), "again");
    assert!(wait_within(&mut child, 30_000).success());
    // The agent's later write is pending again; the earlier commit does not count as a conflict.
    assert_eq!(stdout(&cordon_out(&["diff", &id, "--name-only"])), "edit.txt\n");
    let c = cordon_out(&["commit", &id]);
    assert!(c.status.success(), "{}", stderr(&c));
    assert_eq!(std::fs::read_to_string(ws.join("edit.txt")).unwrap(), "second\n");
    assert_eq!(pending_id(&ws), None);
}

#[test]
fn on_a_terminal_the_run_asks_before_committing() {
    require_root();
    let s = Scratch::new();
    for (answer, committed) in [("y", true), ("n", false)] {
        let ws = project(&s);
        let mut c = cordon_command();
        c.args(["run", "--profile", "default", "--transactional", "--workspace"])
            .arg(&ws)
            .args(["--", "/bin/sh", "-c", "echo from-agent > asked.txt"]);
        let (mut child, mut pty) = spawn_on_pty(c);
        let shown = pty.read_until("? [y/N]", 20_000);
        assert!(shown.contains("A asked.txt (11 bytes"), "{shown}");
        pty.send(&format!("{answer}\r"));
        let rest = pty.read_until(if committed { "applied" } else { "kept" }, 10_000);
        assert!(wait_within(&mut child, 10_000).success(), "{shown}{rest}");
        assert_eq!(ws.join("asked.txt").exists(), committed, "{answer}: {rest}");
        let pending = pending_id(&ws);
        assert_eq!(pending.is_some(), !committed);
        if let Some(id) = pending {
            assert!(cordon_out(&["rollback", &id]).status.success());
        }
        std::fs::remove_dir_all(&ws).unwrap();
    }
}

#[test]
fn code_planted_in_the_layer_is_reported_live_and_after_the_run() {
    require_root();
    let s = Scratch::new();
    let ws = project(&s);
    let attack = "set -e\n\
         mkdir v2 && cd v2 && git init -q --separate-git-dir=../.g2 .\n\
         printf '[core]\\n\\tfsmonitor = \"touch /tmp/x; false\"\\n' >> ../.g2/config\n\
         echo planted; sleep 1";
    let ev = s.path().join("events.jsonl");
    let profile = log_only_profile(&s, "plant", "default", "");
    let out = output(run_cmd(
        &profile,
        &ws,
        &[
            "--transactional",
            "--commit",
            "never",
            "--events",
            ev.to_str().unwrap(),
        ],
        &["/bin/sh", "-c", attack],
    ));
    let err = stderr(&out);
    assert!(stdout(&out).contains("planted"), "{err}");
    let events = std::fs::read_to_string(&ev).unwrap();
    // Live: read in the layer (the write is only there), reported with its path in the layer.
    let live = "/upper/.g2/config core.fsmonitor";
    assert!(
        events
            .lines()
            .any(|l| l.contains("\"window\":\"live\"") && l.contains(live)),
        "no live persistence alert for {live}:\n{events}"
    );
    // After the run: the scan of the layer.
    assert!(
        err.lines()
            .any(|l| l.contains("the agent left code that runs later")
                && l.contains(".g2/config core.fsmonitor")),
        "{err}"
    );
    let id = pending_id(&ws).unwrap();
    assert!(cordon_out(&["rollback", &id]).status.success());
}

/// The real Claude Code (npm, installed by scripts/setup) under its preset, transactional: the
/// model's Bash tool call writes a file, which lands in the layer, not the workspace; `cordon
/// commit` puts it there; the API key is in none of the records the layer adds.
#[test]
fn claude_code_works_in_a_transactional_workspace() {
    require_root();
    let claude = Path::new("/opt/cordon-test-agents/node_modules/.bin/claude");
    assert!(claude.exists(), "scripts/setup installs Claude Code there");
    let s = Scratch::new();
    let d = s.path();
    let ws = project(&s);
    let home = s.dir("home");
    test_ca(d, "ca.pem", &["api.anthropic.com"], "api");
    let key = "sk-ant-api03-layer-canary-99aa88bb77cc66dd55ee44ff33";
    let api = messages_stand_in_with(
        d,
        "127.0.0.12",
        "the file is made",
        Some(key),
        &[("TOOL_COMMAND", "echo from-the-model > made-by-tool.txt")],
    );
    let profile = log_only_profile(
        &s,
        "claude-tx",
        "claude",
        &anthropic_stand_in("127.0.0.12", &d.join("ca.pem")),
    );
    let ev = d.join("events.jsonl");
    let extra = [
        "--transactional",
        "--commit",
        "never",
        "--home",
        home.to_str().unwrap(),
        "--events",
        ev.to_str().unwrap(),
    ];
    let out = run_claude(&profile, &ws, &extra, "make the file", key, api);
    assert!(stdout(&out).contains("the file is made"), "{}", stdout(&out));
    assert!(
        !ws.join("made-by-tool.txt").exists(),
        "the write went to the layer"
    );
    let id = pending_id(&ws).expect("the agent's change is pending");
    let names = stdout(&cordon_out(&["diff", &id, "--name-only"]));
    assert!(names.lines().any(|l| l == "made-by-tool.txt"), "{names}");
    let layer_record =
        std::fs::read(Path::new("/var/lib/cordon/changes").join(&id).join("run.json")).unwrap();
    let c = cordon_out(&["commit", &id]);
    assert!(c.status.success(), "{}", stderr(&c));
    assert_eq!(
        std::fs::read_to_string(ws.join("made-by-tool.txt"))
            .unwrap()
            .trim(),
        "from-the-model"
    );
    let trace = Path::new(TEST_TRACE_DIR).join(format!("{id}.trace"));
    let followup = std::fs::read(trace.with_file_name(format!("{id}.trace.followup"))).unwrap();
    let has = |bytes: &[u8]| bytes.windows(key.len()).any(|w| w == key.as_bytes());
    for (what, bytes) in [
        ("trace", std::fs::read(&trace).unwrap()),
        ("follow-up", followup),
        ("events", std::fs::read(&ev).unwrap()),
        ("run.json", layer_record),
        ("stderr", out.stderr.clone()),
        ("diff", cordon_out(&["diff", &id]).stdout),
    ] {
        assert!(!has(&bytes), "the key reached the {what}");
    }
}

/// `git clone` of a repository in the workspace, hard-linking its objects (the default for a
/// local path), again and again inside one layer: linking a lower file copies it up, and git
/// checks each link it made ("hardlink different from source" on a plain overlay mounted
/// `xino=auto`, which cordon does not use).
#[test]
fn local_git_clones_inside_the_layer_keep_their_hard_links() {
    require_root();
    let s = Scratch::new();
    let ws = project(&s);
    let before = snapshot(&ws);
    let out = run_transactional(
        &ws,
        &["--commit", "never"],
        "set -e
for i in 1 2 3; do
  rm -rf clone
  git clone -q . clone
  git -C clone log --oneline >/dev/null
  git -C clone fsck --no-progress >/dev/null
done
echo cloned",
    );
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("cloned"), "{}", stdout(&out));
    assert_eq!(differing(&snapshot(&ws), &before), Vec::<String>::new());
    let id = pending_id(&ws).unwrap();
    let d = cordon_out(&["diff", &id, "--name-only"]);
    assert!(
        stdout(&d).lines().any(|l| l.ends_with("clone/.git/HEAD")),
        "{}",
        stdout(&d)
    );
    let r = cordon_out(&["rollback", &id]);
    assert!(r.status.success(), "{}", stderr(&r));
}

/// A rebase inside the layer (branch, commits on both sides, `git rebase`), then `git gc`:
/// the layer's repository is whole (`fsck`), its history is the rebased one, and the real
/// workspace's is untouched until the commit.
#[test]
fn a_git_rebase_inside_the_layer_works_and_stays_there() {
    require_root();
    let s = Scratch::new();
    let ws = project(&s);
    let before = snapshot(&ws);
    let out = run_transactional(
        &ws,
        &["--commit", "never"],
        "set -e
g() { git -c user.email=a@a -c user.name=a \"$@\"; }
main=$(git rev-parse --abbrev-ref HEAD)
g checkout -q -b topic
echo topic >> edit.txt && g commit -qam topic1
echo more > topic.txt && g add topic.txt && g commit -qm topic2
g checkout -q \"$main\"
echo main > main.txt && g add main.txt && g commit -qm main1
g checkout -q topic
g rebase -q \"$main\"
g gc -q
git fsck --no-progress >/dev/null
git log --format=%s | tr '\\n' ' '",
    );
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    assert!(
        stdout(&out).starts_with("topic2 topic1 main1 init"),
        "{}",
        stdout(&out)
    );
    assert_eq!(differing(&snapshot(&ws), &before), Vec::<String>::new());
    let id = pending_id(&ws).unwrap();
    let r = cordon_out(&["rollback", &id]);
    assert!(r.status.success(), "{}", stderr(&r));
}

/// `cordon changes --prune AGE` discards what finished runs older than AGE left pending, and
/// nothing younger (the age is when the run started: here made old in its record).
#[test]
fn changes_prune_discards_only_what_is_older_than_the_age() {
    require_root();
    let s = Scratch::new();
    let ws = s.dir("ws");
    s.file("ws/keep.txt", "mine\n");
    let out = run_transactional(&ws, &["--commit", "never"], "echo agent > new.txt; rm keep.txt");
    assert!(out.status.success(), "{}", stderr(&out));
    let id = pending_id(&ws).expect("pending");
    let young = cordon_out(&["changes", "--prune", "1d"]);
    assert!(!stdout(&young).contains(&id), "{}", stdout(&young));
    assert_eq!(pending_id(&ws).as_deref(), Some(id.as_str()));
    let record = Path::new("/var/lib/cordon/changes").join(&id).join("run.json");
    let mut run: serde_json::Value = serde_json::from_slice(&std::fs::read(&record).unwrap()).unwrap();
    let two_days_ago = run["started_ns"].as_i64().unwrap() - 2 * 86_400 * 1_000_000_000;
    run["started_ns"] = serde_json::json!(two_days_ago);
    std::fs::write(&record, serde_json::to_vec(&run).unwrap()).unwrap();
    let pruned = cordon_out(&["changes", "--prune", "1d"]);
    assert!(pruned.status.success(), "{}", stderr(&pruned));
    assert!(
        stdout(&pruned).contains(&format!("sandbox {id}: 2 pending change(s) discarded")),
        "{}",
        stdout(&pruned)
    );
    assert_eq!(pending_id(&ws), None);
    assert_eq!(std::fs::read_to_string(ws.join("keep.txt")).unwrap(), "mine\n");
    assert!(!ws.join("new.txt").exists());
}

/// A workspace on a filesystem cordon cannot use (ramfs: no idmapped mounts) is refused in both
/// modes before the agent starts, naming the filesystem and what to do; nothing is left behind.
#[test]
fn a_workspace_on_a_filesystem_cordon_cannot_use_is_refused_naming_it() {
    require_root();
    let s = Scratch::new();
    let ws = s.dir("ramfs");
    let mounted = std::process::Command::new("mount")
        .args(["-t", "ramfs", "ramfs"])
        .arg(&ws)
        .status()
        .unwrap();
    assert!(mounted.success());
    std::fs::write(ws.join("a.txt"), "x\n").unwrap();
    let tx = run_transactional(&ws, &[], "true");
    let direct = output(run_cmd("default", &ws, &["--direct"], &["/bin/true"]));
    let _ = std::process::Command::new("umount").arg(&ws).status();
    for out in [&tx, &direct] {
        refused(out, "(ramfs): this filesystem cannot be idmapped");
        assert!(stderr(out).contains("no agent was started"), "{}", stderr(out));
    }
    assert_eq!(pending_id(&ws), None, "no layer is left");
}
