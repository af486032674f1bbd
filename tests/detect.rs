//! The scenario corpus (tests/scenarios) under the `default` profile, on the real kernel:
//! every benign workload runs to its end without a single detection; every rogue one is
//! detected by the rule it names and stopped (frozen or killed) before its last line.

mod common;
use common::*;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// A rogue scenario that is not stopped ends by itself well within this.
const LIMIT: Duration = Duration::from_secs(90);

struct Outcome {
    exit: Option<i32>,
    stdout: String,
    stderr: String,
    events: Vec<serde_json::Value>,
    /// The scenario reached its last line.
    finished: bool,
    /// `cordon kill` was sent after a freeze.
    killed_after_freeze: bool,
}

fn scenario_path(kind: &str, name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/scenarios")
        .join(kind)
        .join(format!("{name}.sh"))
}

fn events_in(file: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn kind<'a>(e: &'a serde_json::Value, k: &str) -> Option<&'a serde_json::Value> {
    e.get(k)
}

/// A scenario that says `# workspace: N files` finds a project of N files in the workspace
/// when it starts (`project/src/pkgK/mNNN.py`): files the person had before the agent came.
fn populate(ws: &Path, script: &str) {
    let Some(n) = script
        .lines()
        .find_map(|l| l.strip_prefix("# workspace: "))
        .and_then(|l| l.strip_suffix(" files"))
    else {
        return;
    };
    let n: usize = n.parse().expect("# workspace: N files");
    for i in 0..n {
        let dir = ws.join(format!("project/src/pkg{}", i / 40));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join(format!("m{i:03}.py")),
            format!("def f{i}():\n    return {i}\n"),
        )
        .unwrap();
    }
}

/// Run one scenario; a sandbox a rule froze is killed with `cordon kill`, as a person would.
fn run(kind_dir: &str, name: &str) -> Outcome {
    require_root();
    let ws = Scratch::new();
    let out = Scratch::new();
    std::fs::copy(scenario_path(kind_dir, name), ws.path().join("scenario.sh")).unwrap();
    populate(
        ws.path(),
        &std::fs::read_to_string(scenario_path(kind_dir, name)).unwrap(),
    );
    let events = out.path().join("events.jsonl");
    let mut child = cordon_command()
        .args(["run", "-q", "--profile", "default", "--workspace"])
        .arg(ws.path())
        .arg("--events")
        .arg(&events)
        .args(["--", "sh", "scenario.sh"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let mut killed_after_freeze = false;
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break Some(st);
        }
        if start.elapsed() > LIMIT {
            let _ = child.kill();
            break child.wait().ok();
        }
        if !killed_after_freeze {
            let evs = events_in(&events);
            let frozen = evs
                .iter()
                .find(|e| kind(e, "response").is_some_and(|r| r["action"] == "freeze" && r["done"] == true));
            if let Some(e) = frozen {
                let id = e["sandbox"].as_str().unwrap().to_string();
                let k = cordon_command().args(["kill", &id]).output().unwrap();
                assert!(k.status.success(), "cordon kill: {}", stderr(&k));
                killed_after_freeze = true;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let o = child.wait_with_output().unwrap();
    Outcome {
        exit: status.and_then(|s| s.code()),
        stdout: String::from_utf8_lossy(&o.stdout).into(),
        stderr: String::from_utf8_lossy(&o.stderr).into(),
        events: events_in(&events),
        finished: ws.path().join("finished").exists(),
        killed_after_freeze,
    }
}

fn detections(o: &Outcome) -> Vec<&serde_json::Value> {
    o.events.iter().filter_map(|e| kind(e, "detection")).collect()
}

fn benign(name: &str) {
    let o = run("benign", name);
    let found = detections(&o);
    assert!(
        found.is_empty(),
        "benign scenario {name} raised detections: {found:#?}\nstderr:\n{}",
        o.stderr
    );
    assert_eq!(
        (o.exit, o.stdout.trim_end().lines().last()),
        (Some(0), Some("ok")),
        "benign scenario {name} did not complete:\nstdout:\n{}\nstderr:\n{}",
        o.stdout,
        o.stderr
    );
}

fn rogue(name: &str) {
    let text = std::fs::read_to_string(scenario_path("rogue", name)).unwrap();
    let expect: Vec<&str> = text
        .lines()
        .find_map(|l| l.strip_prefix("# expect: "))
        .expect("a rogue scenario names its rules")
        .split(',')
        .map(str::trim)
        .collect();
    let o = run("rogue", name);
    let found = detections(&o);
    assert!(
        found
            .iter()
            .any(|d| expect.contains(&d["rule"].as_str().unwrap_or(""))),
        "rogue scenario {name}: none of {expect:?} fired; detections {found:#?}\nstderr:\n{}",
        o.stderr
    );
    // Stopped: a response froze or killed the sandbox, and the scenario never got to its end.
    let stopped = o.events.iter().filter_map(|e| kind(e, "response")).any(|r| {
        (r["action"] == "freeze" || r["action"] == "kill")
            && r["done"] == true
            && r["reason"].as_str().unwrap_or("").starts_with("rule ")
    });
    assert!(
        stopped,
        "rogue scenario {name} was detected but not stopped: {:#?}",
        o.events
            .iter()
            .filter_map(|e| kind(e, "response"))
            .collect::<Vec<_>>()
    );
    assert!(!o.finished, "rogue scenario {name} ran to its end");
    assert_eq!(
        o.exit,
        Some(137),
        "rogue scenario {name}: cordon's exit status\n{}",
        o.stderr
    );
    // Every detection carries its evidence, and the first one says why on stderr.
    for d in &found {
        assert!(
            d["evidence"].as_array().is_some_and(|v| !v.is_empty())
                || d["rule"] == "written"
                // Found by the scan after the run: the file is the evidence.
                || d["rule"] == "persistence",
            "{d}"
        );
    }
    assert!(o.stderr.contains("cordon: ALERT"), "{}", o.stderr);
    if o.killed_after_freeze {
        assert!(o
            .events
            .iter()
            .filter_map(|e| kind(e, "response"))
            .any(|r| r["action"] == "kill" && r["done"] == true));
    }
}

macro_rules! scenarios {
    ($f:ident: $($name:ident),+ $(,)?) => {
        $(
            #[test]
            fn $name() {
                $f(stringify!($name));
            }
        )+
    };
}

mod benign_corpus {
    use super::benign;
    scenarios!(benign: cargo_build, cargo_test, pytest, git_ops, pip_wheel, sed_edit, node_script,
        long_compile, make_build, python_data, archive_tools, file_churn, interpreter_repl, ci_edit,
        refactor_delete, dotenv_app, home_tools);
}

mod rogue_corpus {
    use super::rogue;
    scenarios!(rogue: cred_hunt_home, cred_hunt_etc, mass_delete, exfil_loopback, reverse_shell,
        miner, fork_bomb, persist_rc, persist_git_hook, port_scan, download_exec, escape_attempts,
        proc_memory, log_tamper, ptrace_attach, persist_rename_dirfd, persist_dir_rename,
        supply_ci_curl, supply_npm_hook, supply_dockerfile, harvest_home_search, harvest_env_files,
        cred_stores_wide, slow_delete);
}

/// Every script in the corpus has a test above (a new scenario cannot be forgotten).
#[test]
fn every_scenario_is_run() {
    let src =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/detect.rs")).unwrap();
    for kind in ["benign", "rogue"] {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/scenarios")
            .join(kind);
        let mut n = 0;
        for e in std::fs::read_dir(dir).unwrap() {
            let name = e.unwrap().file_name().into_string().unwrap();
            let stem = name.strip_suffix(".sh").unwrap();
            assert!(
                src.contains(&format!(" {stem},")) || src.contains(&format!(" {stem})")),
                "{kind}/{name} has no test"
            );
            n += 1;
        }
        assert!(n >= 12, "{kind}: {n} scenarios");
    }
}
