//! Bad input gets a clear error, and no agent is started.

mod common;
use common::*;

fn cordon_cmd(args: &[&str]) -> std::process::Output {
    cordon_command().args(args).output().unwrap()
}

#[test]
fn missing_profile_names_the_presets() {
    require_root();
    let s = Scratch::new();
    let out = output(run_cmd("no-such-profile", s.path(), &[], &["/bin/touch", "ran"]));
    assert_eq!(out.status.code(), Some(125));
    let err = stderr(&out);
    assert!(
        err.contains("profile \"no-such-profile\" not found") && err.contains("default, offline-analyst"),
        "{err}"
    );
    assert!(!s.path().join("ran").exists());
}

#[test]
fn unknown_key_and_bad_value_are_located() {
    require_root();
    let s = Scratch::new();
    let bad_key = s.file(
        "bad-key.toml",
        "extends = \"default\"\n[filesystem]\nread_only = []\nwritable = [\"/\"]\n",
    );
    let out = output(run_cmd(
        bad_key.to_str().unwrap(),
        s.path(),
        &[],
        &["/bin/touch", "ran"],
    ));
    assert_eq!(out.status.code(), Some(125));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("{}:4:1: unknown field `writable`", bad_key.display())),
        "{err}"
    );
    assert!(!s.path().join("ran").exists());

    let bad_value = s.file("bad-value.toml", "[limits]\nmemory = \"lots\"\n");
    let out = cordon_cmd(&[
        "profile",
        "check",
        bad_key.to_str().unwrap(),
        bad_value.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    // Every file's error is reported, not just the first.
    assert!(err.contains("bad-key.toml:4:1"), "{err}");
    assert!(
        err.contains(&format!("{}:2:10: expected a size", bad_value.display())),
        "{err}"
    );

    let good = s.file("good.toml", "extends = \"strict\"\n[limits]\npids = 8\n");
    let out = cordon_cmd(&["profile", "check", good.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn nonexistent_workspace_is_refused() {
    require_root();
    let out = output(run_cmd(
        "default",
        std::path::Path::new("/nonexistent/cordon-ws"),
        &[],
        &["/bin/true"],
    ));
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains("workspace /nonexistent/cordon-ws does not exist"),
        "{}",
        stderr(&out)
    );
}

/// An agent preset whose state directory is a file on the host: a clear message, nothing
/// started, the file untouched.
#[test]
fn a_state_directory_that_is_a_file_is_refused_naming_it() {
    require_root();
    let s = Scratch::new();
    let home = s.dir("home");
    std::fs::write(home.join(".claude"), "not a directory\n").unwrap();
    let marker = s.path().join("ran");
    // A workspace beside the home (one that contains it breaks default's promises about the
    // home's rc files that do not exist: refused for that reason first — docs/proofs.md).
    let ws = s.dir("ws");
    let out = output(run_cmd(
        "claude",
        &ws,
        &["--home", home.to_str().unwrap()],
        &["/usr/bin/touch", marker.to_str().unwrap()],
    ));
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
    let want = format!("{} exists and is not a directory", home.join(".claude").display());
    assert!(stderr(&out).contains(&want), "{}", stderr(&out));
    assert!(!marker.exists(), "the agent ran");
    assert_eq!(
        std::fs::read_to_string(home.join(".claude")).unwrap(),
        "not a directory\n"
    );
}

#[test]
fn command_not_found_is_127_with_a_message() {
    require_root();
    let s = Scratch::new();
    let out = output(run_cmd("default", s.path(), &["-q"], &["no-such-agent-cmd"]));
    assert_eq!(out.status.code(), Some(127));
    assert!(
        stderr(&out).contains("command not found: no-such-agent-cmd"),
        "{}",
        stderr(&out)
    );
    // A program that exists on the host but not in the sandbox's view is not found either.
    let hidden = s.file("hidden/tool", "#!/bin/sh\necho ran\n");
    std::fs::set_permissions(&hidden, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let ws = s.dir("ws");
    let out = output(run_cmd("strict", &ws, &["-q"], &[hidden.to_str().unwrap()]));
    assert_eq!(out.status.code(), Some(127), "{}", stderr(&out));
}

#[test]
fn without_root_cordon_says_so_and_starts_nothing() {
    require_root();
    let s = Scratch::new();
    std::fs::set_permissions(s.path(), std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let out = cordon_as_nobody()
        .args(["run", "--workspace"])
        .arg(s.path())
        .args(["--", "/bin/touch", "ran"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains("cordon needs root") && stderr(&out).contains("sudo"),
        "{}",
        stderr(&out)
    );
    assert!(!s.path().join("ran").exists());
}

#[test]
fn profile_list_show_and_doctor() {
    let out = cordon_cmd(&["profile", "list"]);
    let text = stdout(&out);
    for p in [
        "default",
        "offline-analyst",
        "networked",
        "agent",
        "ip-allowlist",
        "mcp-server",
        "strict",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(p)),
            "{p} missing from:\n{text}"
        );
    }
    let s = Scratch::new();
    let out = cordon_cmd(&[
        "profile",
        "show",
        "default",
        "--workspace",
        s.path().to_str().unwrap(),
    ]);
    let text = stdout(&out);
    assert!(
        text.contains(&format!("read-write {}", s.path().display())),
        "{text}"
    );
    assert!(
        text.contains("/.ssh") && text.contains("clone3") && text.contains("memory     4096 MiB"),
        "{text}"
    );
    // The monitor is part of what a profile promises.
    assert!(
        text.contains("[monitor]")
            && text.contains("sensitive_read   freeze")
            && text.contains("connects         freeze  200 in 10 s"),
        "{text}"
    );
    let out = cordon_cmd(&["doctor"]);
    let text = stdout(&out);
    assert!(text.contains("landlock") && text.contains("ABI"), "{text}");
    assert!(text.contains("cgroups"), "{text}");
    // The probes are loaded (by doctor itself if need be) and the always-on hooks attached.
    assert!(
        text.contains("probes") && text.contains("pinned at /sys/fs/bpf/cordon/"),
        "{text}"
    );
    assert!(
        text.contains("sched_exec   tracepoint sched_process_exec: attached"),
        "{text}"
    );
    assert!(!text.contains("NOT"), "{text}");
    assert_eq!(out.status.code(), Some(0), "{text}");
    let out = cordon_cmd(&["run", "--help"]);
    assert!(stdout(&out).contains("Examples"), "{}", stdout(&out));
}

#[test]
fn the_signing_key_is_created_once_root_only_and_refused_when_exposed() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    require_root();
    let s = Scratch::new();
    let dir = s.path().join("keys");
    let d = dir.to_str().unwrap();
    let show = cordon_cmd(&["key", "show", "--dir", d]);
    assert!(!show.status.success());
    assert!(stderr(&show).contains("cordon key init"), "{}", stderr(&show));

    let first = cordon_cmd(&["key", "init", "--dir", d]);
    assert!(first.status.success(), "{}", stderr(&first));
    let public = stdout(&first);
    assert!(
        public.starts_with("ed25519:") && public.trim().len() == 8 + 64,
        "{public}"
    );
    let key = std::fs::metadata(dir.join("signing.key")).unwrap();
    assert_eq!((key.mode() & 0o777, key.uid(), key.len()), (0o600, 0, 32));
    assert_eq!(std::fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);

    // A second init keeps the key; show prints the same public key.
    let again = cordon_cmd(&["key", "init", "--dir", d]);
    assert_eq!(stdout(&again), public);
    assert!(stderr(&again).contains("already exists"), "{}", stderr(&again));
    assert_eq!(stdout(&cordon_cmd(&["key", "show", "--dir", d])), public);

    // A key others can read is refused, not used.
    std::fs::set_permissions(dir.join("signing.key"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let exposed = cordon_cmd(&["key", "show", "--dir", d]);
    assert!(!exposed.status.success());
    assert!(
        stderr(&exposed).contains("lets others in"),
        "{}",
        stderr(&exposed)
    );
}

/// A profile that extends `default` and widens it past its `[invariants]` is refused before
/// anything starts, naming the promise, the layer and the line; `profile check` says the
/// same, and proves every preset's promises.
#[test]
fn a_profile_breaking_its_invariants_is_refused_before_anything_starts() {
    require_root();
    let s = Scratch::new();
    let ws = s.dir("ws");
    let bad = profile_file(
        &s,
        "wide",
        "[filesystem]\nread_write = [\"{workspace}\", \"/etc\"]\n",
    );
    let out = output(run_cmd(&bad, &ws, &[], &["/bin/sh", "-c", "echo ran > ran.txt"]));
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("invariant never_write \"/etc/**\" broken by mounts") && err.contains("wide.toml:3"),
        "{err}"
    );
    assert!(!ws.join("ran.txt").exists(), "the agent ran");
    let check = output({
        let mut c = cordon_command();
        c.args(["profile", "check", &bad, "-w"]).arg(&ws);
        c
    });
    assert_eq!(check.status.code(), Some(1));
    assert!(stderr(&check).contains("wide.toml:3"), "{}", stderr(&check));
    for preset in [
        "default",
        "agent",
        "claude",
        "codex",
        "gemini",
        "strict",
        "networked",
    ] {
        let ok = output({
            let mut c = cordon_command();
            c.args(["profile", "check", preset, "-w"]).arg(&ws);
            c
        });
        assert!(ok.status.success(), "{preset}: {}", stderr(&ok));
        assert!(stdout(&ok).contains("invariants proven"), "{}", stdout(&ok));
    }
    // The run records what it proved in the trace's policy.
    let trace = s.path().join("run.trace");
    let run = output(run_cmd(
        "default",
        &ws,
        &["--trace", trace.to_str().unwrap()],
        &["/bin/true"],
    ));
    assert!(run.status.success(), "{}", stderr(&run));
    let shown = output({
        let mut c = cordon_command();
        c.args(["trace", "show", "--format", "json"]).arg(&trace);
        c
    });
    let header = stdout(&shown).lines().next().unwrap_or_default().to_string();
    assert!(
        header.contains("[invariants] (proven against this policy)")
            && header.contains("never_write \\\"/etc/**\\\""),
        "{header}"
    );
}

/// Every preset, as `cordon profile list` names them.
fn preset_names() -> Vec<String> {
    let list = stdout(&output({
        let mut c = cordon_command();
        c.args(["profile", "list"]);
        c
    }));
    let names: Vec<String> = list
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(String::from)
        .collect();
    assert!(names.len() >= 18, "{list}");
    names
}

/// `cordon explain --verify` on the presets: every answer of the model agrees with what a
/// throwaway sandbox of the profile really does (reads, writes, exec, loopback connects).
#[test]
fn explain_agrees_with_the_sandbox_on_every_preset() {
    require_root();
    let s = Scratch::new();
    let ws = s.dir("ws");
    s.file("ws/src/a.txt", "hello\n");
    std::fs::create_dir_all(ws.join(".git/hooks")).unwrap();
    let w = ws.to_str().unwrap();
    let mut questions: Vec<String> = Vec::new();
    for p in [
        "/etc/hostname",
        "/etc/passwd",
        "/etc/hosts",
        "/etc/os-release",
        "/usr/bin/env",
        "/bin/sh",
        "~/.gitconfig",
        "~/.bashrc",
        "~/.profile",
        "~/.ssh/id_rsa",
        "~/.aws/credentials",
        "~/.npmrc",
        "~/.claude/.credentials.json",
        "/proc/self/status",
        "/dev/null",
        "/srv/cordon-nothing-here",
        "/var/log/dpkg.log",
        "/etc/ssl/certs/ca-certificates.crt",
        "/usr/lib/os-release",
        "/usr/share/common-licenses/GPL-3",
        "/etc/ld.so.cache",
    ] {
        questions.push(format!("read {p}"));
    }
    for p in [
        "/etc/hostname",
        "/etc/cordon-new-file",
        "/usr/local/bin/planted",
        "/bin/planted",
        "~/.bashrc",
        "~/.profile",
        "~/.gitconfig",
        "~/cordon-planted.txt",
        "~/.ssh/authorized_keys",
        "/tmp/scratch.txt",
        "/dev/null",
        "/var/tmp/cordon-x",
        "/usr/share/cordon-planted",
        "/etc/ssl/certs/cordon-planted.pem",
        "/lib/cordon-planted.so",
    ] {
        questions.push(format!("write {p}"));
    }
    for p in [
        "src/a.txt",
        "new.txt",
        ".git/hooks/pre-commit",
        ".git/config",
        ".envrc",
    ] {
        questions.push(format!("read {w}/{p}"));
        questions.push(format!("write {w}/{p}"));
    }
    for p in [
        "/usr/bin/true",
        "/bin/true",
        "/tmp/planted",
        "~/cordon-planted-bin",
        "/dev/shm/planted",
        "/usr/bin/env",
        "/usr/bin/git",
    ] {
        questions.push(format!("exec {p}"));
    }
    questions.push(format!("exec {w}/tool"));
    for q in [
        "connect 127.0.0.1:9",
        "connect [::1]:9",
        "connect 127.0.0.1:80",
        "syscall bpf",
        "syscall getpid",
        "resolve example.invalid",
    ] {
        questions.push(q.to_string());
    }
    assert!(questions.len() >= 40, "{}", questions.len());
    let presets = preset_names();
    for preset in presets.iter().map(String::as_str) {
        let mut c = cordon_command();
        c.args(["explain", preset, "--verify", "-w", w]);
        for q in &questions {
            c.args(["--can", q]);
        }
        let out = output(c);
        let text = stdout(&out);
        assert!(out.status.success(), "{preset}:\n{text}\n{}", stderr(&out));
        assert!(!text.contains("DISAGREES"), "{preset}:\n{text}");
        if preset != "strict" {
            // Verified, not skipped: the reads, writes and execs were done.
            assert!(
                text.matches("verified in a sandbox").count() >= 40,
                "{preset}:\n{text}"
            );
        }
    }
    // The default's answers, with the deciding layer.
    let out = output({
        let mut c = cordon_command();
        c.args([
            "explain",
            "default",
            "-w",
            w,
            "--can",
            "write /etc/passwd",
            "--can",
            "exec /tmp/x",
            "--can",
            "syscall bpf",
        ]);
        c
    });
    let text = stdout(&out);
    assert!(
        text.contains("write /etc/passwd: no — mounts: /etc is bound read-only"),
        "{text}"
    );
    assert!(text.contains("exec /tmp/x: no — landlock"), "{text}");
    assert!(text.contains("syscall bpf: no — seccomp"), "{text}");
    assert!(text.contains("preset:default:"), "{text}");
    // Nothing the probes did stayed behind.
    assert!(!ws.join("new.txt").exists());
    assert_eq!(std::fs::read_to_string(ws.join("src/a.txt")).unwrap(), "hello\n");
}

/// `cordon why TRACE SEQ` explains a recorded refusal and a detection against the policy the
/// run was held to (the profile as the trace recorded it), naming the layer and the line.
#[test]
fn why_explains_a_recorded_refusal_and_a_detection() {
    require_root();
    let s = Scratch::new();
    let ws = s.dir("ws");
    let trace = s.path().join("run.trace");
    // The read is detected and alerted on (not frozen: nobody is there to thaw it).
    let profile = profile_file(&s, "alerting", "[monitor.sensitive_read]\nresponse = \"alert\"\n");
    let out = output(run_cmd(
        &profile,
        &ws,
        &["--trace", trace.to_str().unwrap()],
        &[
            "/bin/sh",
            "-c",
            "echo x >> /etc/passwd; cat ~/.ssh/id_rsa; sleep 1; true",
        ],
    ));
    assert!(out.status.code().is_some(), "{}", stderr(&out));
    let shown = output({
        let mut c = cordon_command();
        c.args(["trace", "show", "--format", "json"]).arg(&trace);
        c
    });
    let records: Vec<serde_json::Value> = stdout(&shown)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let seq_of = |f: &dyn Fn(&serde_json::Value) -> bool| -> String {
        let e = records
            .iter()
            .filter_map(|r| r.get("event"))
            .find(|e| f(e))
            .unwrap_or_else(|| panic!("no such event in {}", stdout(&shown)));
        e["seq"]
            .as_str()
            .map(String::from)
            .unwrap_or_else(|| e["seq"].to_string())
    };
    let refused = seq_of(&|e| e["syscall"]["path"] == "/etc/passwd" && e["syscall"]["errno"] == "EROFS");
    let detected = seq_of(&|e| e["detection"]["rule"] == "sensitive_read");
    let why = |seq: &str| {
        let mut c = cordon_command();
        c.args(["why"]).arg(&trace).arg(seq);
        output(c)
    };
    let w = why(&refused);
    assert!(w.status.success(), "{}", stderr(&w));
    assert!(
        stdout(&w).contains("write /etc/passwd: no — mounts: /etc is bound read-only"),
        "{}",
        stdout(&w)
    );
    assert!(stdout(&w).contains("preset:default:"), "{}", stdout(&w));
    let w = why(&detected);
    let text = stdout(&w);
    assert!(
        text.contains("rule sensitive_read (alert)") && text.contains("alerting.toml:3"),
        "{text}"
    );
    assert!(text.contains("id_rsa: no — mounts (hidden)"), "{text}");
    let missing = why("999999");
    assert_eq!(missing.status.code(), Some(125));
    assert!(
        stderr(&missing).contains("no event 999999"),
        "{}",
        stderr(&missing)
    );
}

/// `cordon profile suggest --from TRACE`: the suggested profile holds only the places the run
/// used (not the whole home, not /opt), keeps the base's promises, and the same workload runs
/// under it with the same output and not one refusal.
#[test]
fn a_suggested_profile_runs_the_same_workload_without_a_refusal() {
    require_root();
    let s = Scratch::new();
    let ws = s.dir("ws");
    s.file(
        "ws/work.sh",
        "cat /etc/hostname\nls /usr/share >/dev/null && echo listed\necho x > out.txt; mkdir -p d; rm -rf d\n\
         if command -v python3 >/dev/null; then python3 -c 'import json; print(json.dumps([1]))'; fi\n\
         git --version >/dev/null && echo git\n\
         echo awk | awk '{ print $1 }'\n",
    );
    let run = |profile: &str, trace: &std::path::Path| {
        output(run_cmd(
            profile,
            &ws,
            &["--trace", trace.to_str().unwrap()],
            &["/bin/sh", "work.sh"],
        ))
    };
    let first = run("default", &s.path().join("first.trace"));
    assert!(first.status.success(), "{}", stderr(&first));
    let suggested = s.path().join("suggested.toml");
    let sug = output({
        let mut c = cordon_command();
        c.args(["profile", "suggest", "--from"])
            .arg(s.path().join("first.trace"))
            .arg("--out")
            .arg(&suggested);
        c
    });
    assert!(sug.status.success(), "{}", stderr(&sug));
    assert!(stderr(&sug).contains("invariants proven"), "{}", stderr(&sug));
    let text = std::fs::read_to_string(&suggested).unwrap();
    assert!(text.contains("extends = \"default\""), "{text}");
    assert!(
        text.contains("\"/etc/hostname\", # read: /etc/hostname"),
        "{text}"
    );
    assert!(!text.contains("\"{home}\","), "the whole home: {text}");
    assert!(!text.contains("\"/opt\""), "{text}");
    let second = run(suggested.to_str().unwrap(), &s.path().join("second.trace"));
    assert!(second.status.success(), "{}\n{text}", stderr(&second));
    assert_eq!(stdout(&second), stdout(&first), "{text}");
    let shown = output({
        let mut c = cordon_command();
        c.args(["trace", "show", "--format", "json"])
            .arg(s.path().join("second.trace"));
        c
    });
    let shown = stdout(&shown);
    let refusals: Vec<&str> = shown
        .lines()
        .filter(|l| {
            l.contains("\"denied\":true")
                || l.contains("\"errno\":\"EACCES\"")
                || l.contains("\"errno\":\"EROFS\"")
        })
        .collect();
    assert!(refusals.is_empty(), "{refusals:#?}\n{text}");
}

/// `cordon selftest` on the presets: every attempt of the battery is blocked on this host.
/// A profile that lets a real-looking key into the environment is caught (exit 1, the
/// variable named, its value nowhere).
#[test]
fn selftest_blocks_every_attempt_on_the_presets_and_catches_a_weak_profile() {
    require_root();
    // Every preset, strict and offline-analyst included (they show no C library, or let
    // nothing run from the workspace: the probe is bound in with its libraries).
    let presets = preset_names();
    for preset in presets.iter().map(String::as_str) {
        let out = output({
            let mut c = cordon_command();
            c.args(["selftest", "--profile", preset]);
            c
        });
        let text = stdout(&out);
        assert!(out.status.success(), "{preset}:\n{text}\n{}", stderr(&out));
        assert!(!text.contains("GOT THROUGH"), "{preset}:\n{text}");
        let least = if preset == "strict" { 25 } else { 30 };
        assert!(text.matches("blocked ").count() >= least, "{preset}:\n{text}");
        for family in [
            "namespaces",
            "mounts",
            "ptrace",
            "/proc",
            "kernel",
            "io_uring",
            "terminal",
            "ABI",
            "filesystem",
            "network",
            "resources",
            "secrets",
        ] {
            assert!(
                text.contains(&format!(" {family} ")),
                "{preset}: no {family} attempt\n{text}"
            );
        }
    }
    let s = Scratch::new();
    let weak = profile_file(
        &s,
        "weak",
        "[environment]\npass = [\"PATH\", \"CORDON_TEST_KEY\"]\n",
    );
    let secret = "sk-ant-api03-selftestSECRETvalue0123456789";
    let out = output({
        let mut c = cordon_command();
        c.args(["selftest", "--profile", &weak])
            .env("CORDON_TEST_KEY", secret);
        c
    });
    assert_eq!(out.status.code(), Some(1), "{}\n{}", stdout(&out), stderr(&out));
    assert!(
        stdout(&out).contains("GOT THROUGH secrets     find real API keys in the environment"),
        "{}",
        stdout(&out)
    );
    assert!(
        stdout(&out).contains("found in CORDON_TEST_KEY"),
        "{}",
        stdout(&out)
    );
    assert!(!stdout(&out).contains(secret) && !stderr(&out).contains(secret));
    // A profile that shares the host's network and lets the agent reach a host service.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let shared = s.file(
        "profiles/shared.toml",
        &format!(
            "extends = \"ip-allowlist\"\n[network]\nallow = [\"127.0.0.1:{port}\"]\n[invariants]\nnetwork_only = [\"127.0.0.1:{port}\"]\n"
        ),
    );
    let out = output({
        let mut c = cordon_command();
        c.args([
            "selftest",
            "--profile",
            shared.to_str().unwrap(),
            "--port",
            &port.to_string(),
        ]);
        c
    });
    assert_eq!(out.status.code(), Some(1), "{}\n{}", stdout(&out), stderr(&out));
    assert!(
        stdout(&out).contains(&format!(
            "GOT THROUGH network     connect to a service on the host's loopback (127.0.0.1:{port})"
        )),
        "{}",
        stdout(&out)
    );
}
