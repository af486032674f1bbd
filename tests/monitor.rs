//! The monitor's responses and the learned baseline, on the real kernel with the real binary:
//! `deny` cuts the network, `alert` runs the hook and lets the agent go on, the written budget
//! kills, and `cordon learn` / `cordon score` / `[monitor.baseline]` work end to end.

mod common;
use common::*;

use std::process::Output;

/// The bodies of the events of `kind` ("detection", "response") in a JSON-lines file.
fn kinds(events: &std::path::Path, kind: &str) -> Vec<serde_json::Value> {
    std::fs::read_to_string(events)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|e| e.get(kind).cloned())
        .collect()
}

fn detections(events: &std::path::Path) -> Vec<serde_json::Value> {
    kinds(events, "detection")
}

fn responses(events: &std::path::Path) -> Vec<serde_json::Value> {
    kinds(events, "response")
}

fn run_with_events(profile: &str, ws: &std::path::Path, events: &std::path::Path, script: &str) -> Output {
    let mut c = run_cmd(
        profile,
        ws,
        &["-q", "--events", events.to_str().unwrap()],
        &["sh", "-c", script],
    );
    c.stdin(std::process::Stdio::null());
    output(c)
}

/// A loopback port whose listener accepts (and closes) up to 4 connections.
fn closing_listener() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for c in listener.incoming().take(4) {
            drop(c);
        }
    });
    port
}

/// A workspace whose `c.py` connects to an allowlisted loopback port and to an unlisted one
/// (then runs `more`, where `PORT` is the listed port), and a profile allowing that port with
/// `monitor` (a `[monitor]` section, or "") and `egress` set to deny: (workspace, scratch
/// holding the profile, profile).
fn egress_case(name: &str, monitor: &str, more: &str) -> (Scratch, Scratch, String) {
    let port = closing_listener();
    let s = Scratch::new();
    let out = Scratch::new();
    let profile = profile_file(
        &out,
        name,
        &format!(
            "[network]\nmode = \"allowlist\"\nallow = [\"127.0.0.1:{port}\"]\n\
             {monitor}[monitor.egress]\nresponse = \"deny\"\n"
        ),
    );
    let py = format!(
        "import socket, time\n\
         def tryc(p):\n    try:\n        socket.create_connection(('127.0.0.1', p), timeout=2).close(); return 'ok'\n    except OSError as e:\n        return type(e).__name__\n\
         print('listed', tryc({port}))\n\
         print('unlisted', tryc(9))\n{}",
        more.replace("PORT", &port.to_string())
    );
    s.file("c.py", &py);
    (s, out, profile)
}

#[test]
fn deny_cuts_the_network_after_an_unlisted_connect() {
    require_root();
    let (s, out, profile) = egress_case("deny", "", "time.sleep(0.5)\nprint('listed again', tryc(PORT))\n");
    let ev = out.path().join("ev.jsonl");
    let o = run_with_events(&profile, s.path(), &ev, "/usr/bin/python3 c.py");
    assert_eq!(
        stdout(&o),
        "listed ok\nunlisted PermissionError\nlisted again PermissionError\n",
        "{}",
        stderr(&o)
    );
    assert_eq!(
        o.status.code(),
        Some(0),
        "deny lets the agent go on: {}",
        stderr(&o)
    );
    let d = detections(&ev);
    assert!(
        d.iter().any(|d| d["rule"] == "egress" && d["response"] == "deny"),
        "{d:#?}"
    );
    let r = responses(&ev);
    assert!(
        r.iter().any(|r| r["action"] == "deny" && r["done"] == true),
        "{r:#?}"
    );
}

#[test]
fn alert_runs_the_hook_and_the_agent_goes_on() {
    require_root();
    let s = Scratch::new();
    let out = Scratch::new();
    let hook_out = out.path().join("hook.json");
    let profile = profile_file(
        &out,
        "alert",
        &format!(
            "[monitor]\nhook = [\"/bin/sh\", \"-c\", \"cat > {0}; echo $CORDON_RULE >> {0}; \
             echo nice=$(cut -d' ' -f19 /proc/$$/stat) >> {0}\"]\n\
             [monitor.sensitive_read]\nresponse = \"alert\"\n",
            hook_out.display()
        ),
    );
    let ev = out.path().join("ev.jsonl");
    let o = run_with_events(
        &profile,
        s.path(),
        &ev,
        "cat /etc/shadow 2>/dev/null; sleep 0.3; echo still here",
    );
    assert_eq!(stdout(&o), "still here\n");
    assert_eq!(o.status.code(), Some(0));
    assert!(
        stderr(&o).contains("cordon: ALERT") && stderr(&o).contains("/etc/shadow"),
        "{}",
        stderr(&o)
    );
    assert!(
        eventually(5000, || std::fs::read_to_string(&hook_out)
            .is_ok_and(|t| t.contains("sensitive_read\n")
                && t.ends_with('\n')
                && t.contains("nice="))),
        "hook output: {:?}",
        std::fs::read_to_string(&hook_out)
    );
    let text = std::fs::read_to_string(&hook_out).unwrap();
    // The hook starts at cordon's nice, not at its recording thread's (which spawned it).
    let own_nice = nice_of(std::path::Path::new("/proc/self/stat"));
    assert!(text.contains(&format!("nice={own_nice}\n")), "{text}");
    let line: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(line["detection"]["rule"], "sensitive_read");
    assert!(responses(&ev).is_empty(), "alert does not act on the sandbox");
}

#[test]
fn the_written_budget_kills() {
    require_root();
    let s = Scratch::new();
    let out = Scratch::new();
    let profile = profile_file(
        &out,
        "budget",
        "[monitor.written]\nlimit = \"1M\"\nresponse = \"kill\"\n",
    );
    let ev = out.path().join("ev.jsonl");
    let o = run_with_events(
        &profile,
        s.path(),
        &ev,
        "dd if=/dev/zero of=big bs=64k count=64 2>/dev/null; sleep 10; touch finished",
    );
    assert_eq!(o.status.code(), Some(137), "{}", stderr(&o));
    assert!(!s.path().join("finished").exists());
    let d = detections(&ev);
    assert!(
        d.iter()
            .any(|d| d["rule"] == "written" && d["score"].as_f64().unwrap() > 1_048_576.0),
        "{d:#?}"
    );
}

fn cordon_out(args: &[&str]) -> Output {
    let mut c = cordon_command();
    c.args(args);
    output(c)
}

#[test]
fn learn_and_score_syscall_files() {
    require_root();
    let s = Scratch::new();
    // "normal" traces: loops over a few syscall patterns; the anomalous one has a burst of
    // calls the normal ones never make in that order.
    let normal = |k: usize| -> String {
        (0..400)
            .map(|i| [0, 1, 3, 9, 0, 1, 3, 257][(i + k) % 8].to_string())
            .collect::<Vec<_>>()
            .join(" ")
    };
    for k in 0..4 {
        s.file(&format!("normal/{k}"), &normal(k));
    }
    s.file("test/normal", &normal(5));
    let mut odd: Vec<String> = normal(2).split(' ').map(String::from).collect();
    for (i, x) in ["101", "101", "59", "42", "33", "33", "59"].iter().enumerate() {
        odd[200 + i] = (*x).to_string();
    }
    s.file("test/odd", &odd.join(" "));
    s.file("bad/one", "1 2 x 4");
    let b = s.path().join("n.baseline");
    let o = cordon_out(&[
        "learn",
        "--from-syscalls",
        s.path().join("normal").to_str().unwrap(),
        "--out",
        b.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("4 sequences from 4 files"), "{}", stdout(&o));
    let score = |method: &str| -> Vec<(f64, String)> {
        let t = s.path().join("test");
        let o = cordon_out(&[
            "score",
            "--baseline",
            b.to_str().unwrap(),
            "--method",
            method,
            t.join("normal").to_str().unwrap(),
            t.join("odd").to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        stdout(&o)
            .lines()
            .map(|l| {
                (
                    l.split_whitespace().next().unwrap().parse().unwrap(),
                    l.to_string(),
                )
            })
            .collect()
    };
    // ("cordon" is the frames method's old name.)
    for method in ["knn", "frames", "cordon", "stide"] {
        let r = score(method);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].0, 0.0, "{method}: {r:?}");
        // STIDE's and kNN's scores are diluted by the length of the trace; the locality
        // frame's is not.
        let floor = if matches!(method, "stide" | "knn") {
            0.0
        } else {
            0.2
        };
        assert!(r[1].0 > floor, "{method}: {r:?}");
    }
    // The most anomalous window is named, in syscall names, and what in it is new.
    assert!(score("cordon")[1].1.contains("ptrace"), "{:?}", score("cordon"));
    assert!(
        score("knn")[1].1.contains("never seen: [ptrace]"),
        "{:?}",
        score("knn")
    );
    // Bad input: the file and the item.
    let o = cordon_out(&[
        "learn",
        "--from-syscalls",
        s.path().join("bad").to_str().unwrap(),
        "--out",
        b.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("item 3") && stderr(&o).contains("\"x\""),
        "{}",
        stderr(&o)
    );
    let o = cordon_out(&[
        "score",
        "--baseline",
        s.path().join("bad/one").to_str().unwrap(),
        b.to_str().unwrap(),
    ]);
    assert!(stderr(&o).contains("not a cordon baseline"), "{}", stderr(&o));
}

#[test]
fn a_baseline_learned_from_runs_flags_a_different_workload_live() {
    require_root();
    let s = Scratch::new();
    let out = Scratch::new();
    s.file(
        "work.sh",
        "for i in 1 2 3 4 5 6 7 8; do echo $i > f$i; mkdir d$i; mv f$i d$i/; rm -r d$i; done\n",
    );
    let b = out.path().join("w.baseline");
    let o = cordon_out(&[
        "learn",
        "--profile",
        "default",
        "--workspace",
        s.path().to_str().unwrap(),
        "--runs",
        "3",
        "--out",
        b.to_str().unwrap(),
        "--",
        "sh",
        "work.sh",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let learn_output = o;
    let profile = profile_file(
        &out,
        "bl",
        &format!(
            "[monitor.baseline]\nfile = \"{}\"\nthreshold = 0.3\nresponse = \"alert\"\n",
            b.display()
        ),
    );
    // The same workload: nothing unusual.
    let ev = out.path().join("same.jsonl");
    let o = run_with_events(&profile, s.path(), &ev, "sh work.sh");
    assert!(o.status.success(), "{}", stderr(&o));
    let d = detections(&ev);
    assert!(
        !d.iter()
            .any(|d| d["rule"] == "baseline" && d["window"] != "syscall counts"),
        "{d:#?}"
    );
    // A different one: links, renames and mode changes the baseline never saw.
    s.file(
        "other.py",
        "import os\nfor i in range(40):\n    open(f'x{i}', 'w').close()\n    os.chmod(f'x{i}', 0o600)\n    os.symlink(f'x{i}', f'l{i}')\n    os.rename(f'l{i}', f'm{i}')\n    os.unlink(f'm{i}')\n    os.unlink(f'x{i}')\n",
    );
    let ev = out.path().join("other.jsonl");
    let o = run_with_events(&profile, s.path(), &ev, "/usr/bin/python3 other.py");
    assert!(o.status.success(), "{}", stderr(&o));
    let d = detections(&ev);
    let hit = d
        .iter()
        .find(|d| d["rule"] == "baseline" && d["window"] != "syscall counts");
    let hit = hit.unwrap_or_else(|| panic!("no baseline window flagged: {d:#?}"));
    assert!(hit["score"].as_f64().unwrap() >= 0.3, "{hit}");
    assert!(hit["window"].as_str().unwrap().contains("symlink"), "{hit}");
    assert_eq!(hit["evidence"].as_array().unwrap().len(), 20);
    // Offline: a training run's own trace has nothing the baseline did not see.
    let learned = stderr(&learn_output)
        .lines()
        .find_map(|l| l.split(" traced to ").nth(1).map(str::to_string))
        .expect("learn names its traces");
    let o = cordon_out(&["score", "--baseline", b.to_str().unwrap(), &learned]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).starts_with("0.0000 "), "{}", stdout(&o));
}

#[test]
fn a_missing_baseline_stops_the_run_before_the_agent() {
    require_root();
    let s = Scratch::new();
    let out = Scratch::new();
    let missing = out.path().join("nope.baseline");
    let profile = profile_file(
        &out,
        "missing",
        &format!("[monitor.baseline]\nfile = \"{}\"\n", missing.display()),
    );
    let o = output(run_cmd(&profile, s.path(), &["-q"], &["/bin/touch", "ran"]));
    assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
    assert!(stderr(&o).contains("cannot read the baseline"), "{}", stderr(&o));
    assert!(!s.path().join("ran").exists());
    // A baseline of the other alphabet is refused the same way.
    s.file("n/1", "1 2 3 4 5 6 7");
    let b = out.path().join("plain.baseline");
    let l = cordon_out(&[
        "learn",
        "--from-syscalls",
        s.path().join("n").to_str().unwrap(),
        "--out",
        b.to_str().unwrap(),
    ]);
    assert!(l.status.success(), "{}", stderr(&l));
    let profile = profile_file(
        &out,
        "plain",
        &format!("[monitor.baseline]\nfile = \"{}\"\n", b.display()),
    );
    let o = output(run_cmd(&profile, s.path(), &["-q"], &["/bin/touch", "ran"]));
    assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
    assert!(stderr(&o).contains("plain syscall files"), "{}", stderr(&o));
    assert!(!s.path().join("ran").exists());
}

/// `[monitor] visibility = "process"`: no syscall is counted or recorded, while processes
/// and egress still are — and enforcement is the same: the unlisted connect is refused by the
/// kernel and the egress rule cuts the network.
#[test]
fn process_visibility_records_processes_and_egress_but_no_syscalls() {
    require_root();
    // argv is now read from memory: a secret the agent passes on a command line is redacted
    // like every other field.
    let secret = "tok-visibility-canary-5e1f0a9c";
    let (s, out, profile) = egress_case(
        "process",
        &format!(
            "[environment]\nset = {{ API_TOKEN = \"{secret}\" }}\n[monitor]\nvisibility = \"process\"\n"
        ),
        "",
    );
    let ev = out.path().join("ev.jsonl");
    let trace = out.path().join("t.trace");
    let o = output(run_cmd(
        &profile,
        s.path(),
        &[
            "-q",
            "--events",
            ev.to_str().unwrap(),
            "--trace",
            trace.to_str().unwrap(),
        ],
        &[
            "sh",
            "-c",
            &format!("cat /etc/hostname >/dev/null; /bin/echo {secret} >/dev/null; /usr/bin/python3 c.py"),
        ],
    ));
    assert_eq!(
        stdout(&o),
        "listed ok\nunlisted PermissionError\n",
        "{}",
        stderr(&o)
    );
    assert!(
        stderr(&o).contains("sensitive_read") && stderr(&o).contains("do not run"),
        "the run says which inherited rules cannot run: {}",
        stderr(&o)
    );
    let events = events_of(&ev);
    let of = |kind: &str| -> Vec<&serde_json::Value> {
        events
            .iter()
            .filter_map(|e| event_kind(e).filter(|(k, _)| *k == kind).map(|(_, b)| b))
            .collect()
    };
    assert!(of("syscall").is_empty(), "no syscall record: {:?}", of("syscall"));
    let counts = of("counts");
    assert!(
        !counts.is_empty() && counts.iter().all(|c| uint(&c["total"]).unwrap_or(0) == 0),
        "no syscall counted: {counts:?}"
    );
    let execs: Vec<&str> = of("exec").iter().filter_map(|x| x["filename"].as_str()).collect();
    assert!(
        execs.contains(&"/usr/bin/cat") && execs.contains(&"/usr/bin/python3"),
        "{execs:?}"
    );
    assert!(
        of("exec")
            .iter()
            .any(|x| x["argv"] == serde_json::json!(["cat", "/etc/hostname"])),
        "argv is read from the new program's memory: {:?}",
        of("exec")
    );
    let echo = of("exec")
        .into_iter()
        .find(|x| x["filename"] == "/usr/bin/echo" || x["filename"] == "/bin/echo")
        .cloned();
    assert!(
        echo.as_ref()
            .is_some_and(|x| x["argv"][1].as_str().is_some_and(|a| a.starts_with("[secret"))),
        "the secret in argv is redacted: {echo:?}"
    );
    for bytes in [
        std::fs::read(&ev).unwrap(),
        std::fs::read(&trace).unwrap(),
        o.stderr.clone(),
    ] {
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "the secret reached the output"
        );
    }
    assert!(!of("fork").is_empty() && !of("exit").is_empty());
    assert!(
        of("net")
            .iter()
            .any(|n| n.to_string().contains(":9") || n.to_string().contains("\"port\":9")),
        "the refused connect is recorded: {:?}",
        of("net")
    );
    assert!(
        detections(&ev)
            .iter()
            .any(|d| d["rule"] == "egress" && d["response"] == "deny"),
        "{:?}",
        detections(&ev)
    );
    let show = cordon_out(&["trace", "show", trace.to_str().unwrap()]);
    assert!(stdout(&show).contains("visibility process"), "{}", stdout(&show));
}
