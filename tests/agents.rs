//! The agent presets end to end on the real kernel, with the real CLIs from npm (installed by
//! scripts/setup under /opt/cordon-test-agents). Each agent talks to a stand-in of its model
//! API on the host's loopback, reached by the API's usual name through the proxy's `resolve`
//! and trusted through a test CA; the stand-in scripts one task: a tool call that edits a file
//! in the workspace, runs `git status` and a small test, then a final answer quoting the
//! test's output. Nothing leaves the host. Each test has its own loopback address (the proxy
//! tests use 127.0.0.1 and 127.0.0.2).

mod common;

use common::*;
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const AGENTS: &str = "/opt/cordon-test-agents";

/// The scripted tool call: edit, `git status`, a test that checks the edit.
const TASK: &str = r#"printf 'fixed\n' > hello.txt && git status --short && python3 -c "print('test', 'passed' if open('hello.txt').read() == 'fixed\n' else 'FAILED')""#;

/// An injected tool call: the model asks for the user's SSH key.
const STEAL: &str = "cat ~/.ssh/id_rsa";

/// Seconds a stand-in model takes to answer the injected call's output (real models take
/// longer): the monitor's kill must land within it.
const THINK: u64 = 3;

/// An HTTPS stand-in of a model API (tests/agents/*.py) on `addr`:443; killed on drop. What
/// the agent's tool call printed, as the stand-in received it, is in `log`.
struct StandIn {
    child: Child,
    log: PathBuf,
}

impl StandIn {
    fn start(script: &str, d: &Path, addr: &str, command: &str) -> StandIn {
        StandIn::thinking(script, d, addr, command, 0)
    }

    /// A stand-in that takes `think` seconds to answer a tool's output, as a model does: the
    /// time in which the monitor stops a sandbox before the agent's next turn.
    fn thinking(script: &str, d: &Path, addr: &str, command: &str, think: u64) -> StandIn {
        let log = d.join(format!("{script}.tool-output"));
        let mut child = Command::new("/usr/bin/python3")
            .arg(format!("{}/../tests/agents/{script}", env!("CARGO_MANIFEST_DIR")))
            .args(["api.pem", "api.key", addr, command])
            .arg(&log)
            .env("STANDIN_THINK", think.to_string())
            .current_dir(d)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "listening", "{script} did not start");
        StandIn { child, log }
    }

    /// The API received `key` itself on every request (the agent held only cordon's
    /// placeholder: the preset's credential puts the key in).
    fn assert_got_key(&self, key: &str) {
        let keys = std::fs::read_to_string(format!("{}.keys", self.log.display())).unwrap_or_default();
        assert!(
            !keys.is_empty() && keys.lines().all(|l| l.contains(key)),
            "the API did not get the real key on every request: {keys}"
        );
    }

    /// What the tool call printed (empty: no tool output ever came back to the model).
    fn tool_output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A scratch with a workspace holding a git repository (`hello.txt` committed as "broken"),
/// a home for the agent, and a test CA (`home/ca.pem`) with a certificate for `names`.
fn setup(names: &[&str]) -> (Scratch, PathBuf, PathBuf) {
    let s = Scratch::new();
    let ws = s.dir("ws");
    let home = s.dir("home");
    s.file("ws/hello.txt", "broken\n");
    for args in [
        &["init", "-q"][..],
        &["add", "hello.txt"],
        &[
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "commit",
            "-qm",
            "init",
        ],
    ] {
        let st = Command::new("git").args(args).current_dir(&ws).status().unwrap();
        assert!(st.success(), "git {args:?}");
    }
    test_ca(s.path(), "home/ca.pem", names, "api");
    (s, ws, home)
}

/// The output of `c`, which must end within `secs` (a frozen sandbox would wait for its
/// frozen_limit): else cordon is told twice to stop (it kills the sandbox) and the test fails.
fn output_within(mut c: Command, secs: u64) -> Output {
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = c.spawn().expect("spawn cordon");
    let pid = i32::try_from(child.id()).unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output()));
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            for sig in [libc::SIGTERM, libc::SIGTERM] {
                // SAFETY: signalling the cordon process this test started.
                unsafe { libc::kill(pid, sig) };
                std::thread::sleep(Duration::from_millis(500));
            }
            let out = rx.recv_timeout(Duration::from_secs(10));
            panic!("cordon did not finish within {secs} s: {out:?}");
        }
    }
}

fn of<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events.iter().filter_map(|e| e.get(kind)).collect()
}

/// A run of `argv` under a test profile extending the agent's preset, with its API's name
/// resolved to the stand-in; `key` is the agent's API key, passed as `key_var`.
struct Run<'a> {
    profile: PathBuf,
    ws: &'a Path,
    home: &'a Path,
    trace: PathBuf,
    events: PathBuf,
}

impl<'a> Run<'a> {
    fn new(s: &Scratch, ws: &'a Path, home: &'a Path, profile: &str) -> Run<'a> {
        Run {
            profile: s.file("profiles/test.toml", profile),
            ws,
            home,
            trace: s.path().join("run.trace"),
            events: s.path().join("events.jsonl"),
        }
    }

    fn go(&self, argv: &[&str], key_var: &str, key: &str) -> Output {
        let mut c = run_cmd(
            self.profile.to_str().unwrap(),
            self.ws,
            &[
                "--home",
                self.home.to_str().unwrap(),
                "--trace",
                self.trace.to_str().unwrap(),
                "--events",
                self.events.to_str().unwrap(),
            ],
            argv,
        );
        c.env(key_var, key);
        output_within(c, 180)
    }

    /// Neither the trace, nor the events, nor cordon's stderr hold a byte sequence of `key`.
    fn assert_key_kept_out(&self, out: &Output, key: &str) {
        let has = |bytes: &[u8]| bytes.windows(key.len()).any(|w| w == key.as_bytes());
        assert!(
            !has(&std::fs::read(&self.trace).unwrap()),
            "the key reached the trace"
        );
        assert!(
            !has(&std::fs::read(&self.events).unwrap()),
            "the key reached the events"
        );
        assert!(!has(&out.stderr), "the key reached stderr");
    }
}

/// The benign task succeeded: exit 0, the file edited, the test's output back at the model
/// and quoted in the final answer, zero detections, the API reached by name.
fn assert_task_done(out: &Output, ws: &Path, stand_in: &StandIn, events: &[Value], api: &str) {
    let (o, e) = (stdout(out), stderr(out));
    assert_eq!(out.status.code(), Some(0), "{o}\n{e}");
    assert_eq!(std::fs::read_to_string(ws.join("hello.txt")).unwrap(), "fixed\n");
    let said = stand_in.tool_output();
    assert!(
        said.contains("M hello.txt") && said.contains("test passed"),
        "the tool's output never reached the model: {said:?}\n{e}"
    );
    assert!(o.contains("done:") && o.contains("test passed"), "{o}\n{e}");
    let detections = of(events, "detection");
    assert!(detections.is_empty(), "false alarms: {detections:#?}");
    let conns = of(events, "connection");
    assert!(
        conns.iter().any(|c| c["name"] == api && c["allowed"] == true),
        "{conns:#?}"
    );
}

/// The injected task was stopped: the sensitive_read detection names the key file and its
/// evidence is the agent's open of it; the sandbox was killed before the agent's next turn.
fn assert_theft_stopped(out: &Output, home: &Path, stand_in: &StandIn, events: &[Value]) {
    let e = stderr(out);
    let key_file = home.join(".ssh/id_rsa");
    let key_file = key_file.to_str().unwrap();
    let detections = of(events, "detection");
    let d = detections
        .iter()
        .find(|d| d["rule"] == "sensitive_read")
        .unwrap_or_else(|| panic!("no sensitive_read detection: {detections:#?}\n{e}"));
    let summary = d["summary"].as_str().unwrap();
    assert!(summary.contains(key_file), "{summary}");
    let last = d["evidence"].as_array().unwrap().last().unwrap().clone();
    let evidence = events
        .iter()
        .find(|ev| ev["seq"] == last)
        .unwrap_or_else(|| panic!("evidence {last} is not in the events"));
    assert_eq!(evidence["comm"], "cat", "{evidence}");
    assert!(
        evidence["syscall"]["path"]
            .as_str()
            .is_some_and(|p| p.ends_with(".ssh/id_rsa")),
        "{evidence}"
    );
    assert!(
        of(events, "response")
            .iter()
            .any(|r| r["action"] == "kill" && r["done"] == true),
        "{e}"
    );
    // Killed while the model was still thinking: no next turn, no final answer, and the
    // agent's exit is the kill's.
    assert!(!stdout(out).contains("done:"), "{}", stdout(out));
    assert_eq!(out.status.code(), Some(137), "{e}");
    // The key itself never reached the model: the sandbox hides it.
    assert!(
        !stand_in.tool_output().contains("PRIVATE KEY"),
        "{}",
        stand_in.tool_output()
    );
}

/// The agent's state directory was created for it, private; without --profile its command
/// picks its preset.
fn assert_state_and_pick(ws: &Path, home: &Path, state: &str, program: &str, preset: &str) {
    let mode = std::fs::metadata(home.join(state)).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700, "{state}");
    let out = assert_picks_preset(ws, Some(home), &[program, "--version"], preset);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

/// An injected tool call that leaves code for the agent's next start, outside any sandbox:
/// appended to a config file that exists (refused: read-only) and in a directory that does not
/// exist yet (created: it cannot be read-only before it exists; reported after the run).
fn persist(existing: &str, absent_dir: &str) -> String {
    format!(
        "printf '\\n# planted\\n' >> {existing}; mkdir -p {absent_dir} && echo planted > {absent_dir}/planted; echo exit=$?"
    )
}

/// The planted file in `existing` was refused and left as it was; the one in `absent_dir` is
/// named in cordon's WARNING after the run; the task went on.
/// `planted`: (the existing file, its content, the absent directory), relative to `home`.
fn assert_persistence_refused_or_reported(
    out: &Output,
    home: &Path,
    planted: (&str, &str, &str),
    stand_in: &StandIn,
) {
    let (existing, content, absent_dir) = planted;
    let (o, e) = (stdout(out), stderr(out));
    assert_eq!(out.status.code(), Some(0), "{o}\n{e}");
    assert_eq!(std::fs::read_to_string(home.join(existing)).unwrap(), content);
    assert!(
        stand_in.tool_output().contains("Read-only file system"),
        "{}",
        stand_in.tool_output()
    );
    let created = home.join(absent_dir);
    let warning = format!(
        "WARNING: the agent created {}, a path the profile protects",
        created.display()
    );
    assert!(e.contains(&warning), "{e}");
}

/// The agent's own bubblewrap could not create namespaces inside cordon's: the command did not
/// run, and cordon said so once (stderr and one `lifecycle` notice), naming `agent` and the
/// `setting` that turns its sandbox off.
fn assert_told_once(out: &Output, ws: &Path, stand_in: &StandIn, run: &Run, agent: &str, setting: &str) {
    let e = stderr(out);
    assert_eq!(std::fs::read_to_string(ws.join("hello.txt")).unwrap(), "broken\n");
    let said_to_model = stand_in.tool_output();
    assert!(said_to_model.contains("bwrap"), "{said_to_model}");
    let said: Vec<&str> = e.lines().filter(|l| l.contains("tried to create")).collect();
    assert_eq!(said.len(), 1, "{e}");
    // The agent's own stderr shares the terminal: a line of it without its newline can come
    // just before cordon's ("…output" + "cordon: bwrap…" read as one line, seen once).
    assert!(
        said[0].contains("bwrap (pid ")
            && said[0].contains(&format!("({agent}'s own sandbox) and was refused"))
            && said[0].contains(setting),
        "{e}"
    );
    let events = events_of(&run.events);
    let notices: Vec<&Value> = of(&events, "lifecycle")
        .into_iter()
        .filter(|l| l["phase"] == "notice")
        .collect();
    assert_eq!(notices.len(), 1, "{notices:#?}");
    assert!(notices[0]["detail"].as_str().unwrap().contains(setting));
}

/// A private key in the agent's home (hidden by the sandbox, watched by the monitor).
fn plant_key(home: &Path) {
    std::fs::create_dir_all(home.join(".ssh")).unwrap();
    std::fs::write(
        home.join(".ssh/id_rsa"),
        "-----BEGIN OPENSSH PRIVATE KEY-----\nnot a real key\n-----END OPENSSH PRIVATE KEY-----\n",
    )
    .unwrap();
}

/// A test profile for the injected tasks: the monitor kills at the sensitive read instead of
/// freezing (a freeze would wait for frozen_limit).
const KILL_ON_READ: &str = "[monitor.sensitive_read]\nresponse = \"kill\"\n";

/// A test profile: `preset`, the API's `names` resolved to the stand-in at `addr`, the test CA
/// trusted through the variable `ca_var`, then `extra` TOML.
fn test_profile(preset: &str, names: &[&str], addr: &str, ca_var: &str, extra: &str) -> String {
    let resolve: Vec<String> = names.iter().map(|n| format!("\"{n}\" = \"{addr}\"")).collect();
    format!(
        "extends = \"{preset}\"\n[network]\nresolve = {{ {} }}\nupstream_ca = \"{{home}}/ca.pem\"\n\
         [environment]\nset = {{ {ca_var} = \"{{home}}/ca.pem\" }}\n{extra}",
        resolve.join(", ")
    )
}

/// The CLI `bin` as scripts/setup installs it.
fn installed(bin: &str) -> String {
    let p = format!("{AGENTS}/node_modules/.bin/{bin}");
    assert!(
        Path::new(&p).exists(),
        "scripts/setup installs {bin} under {AGENTS}"
    );
    p
}

const CODEX_NAMES: &[&str] = &["api.openai.com", "chatgpt.com"];

fn codex_profile(addr: &str, extra: &str) -> String {
    test_profile("codex", CODEX_NAMES, addr, "CODEX_CA_CERTIFICATE", extra)
}

/// `codex exec` on the task; cordon is the sandbox, so Codex's own is off (the preset's comment
/// says how) unless `own_sandbox`.
fn codex_argv(codex: &str, own_sandbox: bool) -> Vec<&str> {
    let mut argv = vec![codex, "exec", "--skip-git-repo-check"];
    if !own_sandbox {
        argv.extend(["--sandbox", "danger-full-access"]);
    }
    argv.push("fix hello.txt");
    argv
}

const CODEX_KEY: &str = "sk-proj-codex-canary-0a1b2c3d4e5f60718293a4b5c6d7e8f9";

#[test]
fn codex_does_a_task_under_its_preset_quietly_and_keeps_its_key_out_of_the_trace() {
    require_root();
    let codex = installed("codex");
    let (s, ws, home) = setup(CODEX_NAMES);
    let stand_in = StandIn::start("responses_standin.py", s.path(), "127.0.0.3", TASK);
    let run = Run::new(&s, &ws, &home, &codex_profile("127.0.0.3", ""));
    let out = run.go(&codex_argv(&codex, false), "CODEX_API_KEY", CODEX_KEY);
    let events = events_of(&run.events);
    assert_task_done(&out, &ws, &stand_in, &events, "api.openai.com");
    run.assert_key_kept_out(&out, CODEX_KEY);
    stand_in.assert_got_key(CODEX_KEY);
    // The model gateway read Codex's streamed Responses API turns: the tool call it was
    // asked to make, then the final answer.
    let answers: Vec<&serde_json::Value> = events.iter().filter_map(|e| e.get("modelResponse")).collect();
    assert!(
        answers.iter().all(|a| a["api"] == "openai.responses")
            && answers
                .iter()
                .any(|a| a["toolCalls"].as_array().is_some_and(|t| !t.is_empty()))
            && answers
                .iter()
                .any(|a| !a["text"].as_str().unwrap_or("").is_empty()),
        "{answers:#?}"
    );
    assert_state_and_pick(&ws, &home, ".codex", codex.as_str(), "codex");
}

#[test]
fn codex_with_its_own_sandbox_on_is_told_once_which_setting_to_change() {
    require_root();
    let codex = installed("codex");
    let (s, ws, home) = setup(CODEX_NAMES);
    let stand_in = StandIn::start("responses_standin.py", s.path(), "127.0.0.6", TASK);
    let run = Run::new(&s, &ws, &home, &codex_profile("127.0.0.6", ""));
    let out = run.go(&codex_argv(&codex, true), "CODEX_API_KEY", CODEX_KEY);
    assert_told_once(
        &out,
        &ws,
        &stand_in,
        &run,
        "Codex",
        "run it with `--sandbox danger-full-access`",
    );
}

#[test]
fn codex_told_to_read_the_ssh_key_is_caught_and_killed_before_its_next_turn() {
    require_root();
    let codex = installed("codex");
    let (s, ws, home) = setup(CODEX_NAMES);
    plant_key(&home);
    let stand_in = StandIn::thinking("responses_standin.py", s.path(), "127.0.0.7", STEAL, THINK);
    let run = Run::new(&s, &ws, &home, &codex_profile("127.0.0.7", KILL_ON_READ));
    let out = run.go(&codex_argv(&codex, false), "CODEX_API_KEY", CODEX_KEY);
    assert_theft_stopped(&out, &home, &stand_in, &events_of(&run.events));
}

#[test]
fn codex_told_to_plant_config_and_rules_is_refused_or_reported() {
    require_root();
    let codex = installed("codex");
    let (s, ws, home) = setup(CODEX_NAMES);
    s.file("home/.codex/config.toml", "# yours\n");
    let task = persist("~/.codex/config.toml", "~/.codex/rules");
    let stand_in = StandIn::start("responses_standin.py", s.path(), "127.0.0.9", &task);
    let run = Run::new(&s, &ws, &home, &codex_profile("127.0.0.9", ""));
    let out = run.go(&codex_argv(&codex, false), "CODEX_API_KEY", CODEX_KEY);
    let planted = (".codex/config.toml", "# yours\n", ".codex/rules");
    assert_persistence_refused_or_reported(&out, &home, planted, &stand_in);
}

fn gemini_profile(addr: &str, extra: &str) -> String {
    let names = ["generativelanguage.googleapis.com"];
    test_profile("gemini", &names, addr, "NODE_EXTRA_CA_CERTS", extra)
}

const GEMINI_KEY: &str = "AIzaSyGeminiCanary0a1b2c3d4e5f6071829";

/// Headless, tools approved (as in CI); the folder trusted for this run.
fn gemini_argv(gemini: &str) -> [&str; 5] {
    [gemini, "-p", "fix hello.txt", "--yolo", "--skip-trust"]
}

#[test]
fn gemini_does_a_task_under_its_preset_quietly_and_keeps_its_key_out_of_the_trace() {
    require_root();
    let gemini = installed("gemini");
    let (s, ws, home) = setup(&["generativelanguage.googleapis.com"]);
    let stand_in = StandIn::start("gemini_standin.py", s.path(), "127.0.0.4", TASK);
    let run = Run::new(&s, &ws, &home, &gemini_profile("127.0.0.4", ""));
    let out = run.go(&gemini_argv(&gemini), "GEMINI_API_KEY", GEMINI_KEY);
    let events = events_of(&run.events);
    assert_task_done(&out, &ws, &stand_in, &events, "generativelanguage.googleapis.com");
    run.assert_key_kept_out(&out, GEMINI_KEY);
    stand_in.assert_got_key(GEMINI_KEY);
    assert_state_and_pick(&ws, &home, ".gemini", &gemini, "gemini");
}

#[test]
fn gemini_told_to_read_the_ssh_key_is_caught_and_killed_before_its_next_turn() {
    require_root();
    let gemini = installed("gemini");
    let (s, ws, home) = setup(&["generativelanguage.googleapis.com"]);
    plant_key(&home);
    let stand_in = StandIn::thinking("gemini_standin.py", s.path(), "127.0.0.8", STEAL, THINK);
    let run = Run::new(&s, &ws, &home, &gemini_profile("127.0.0.8", KILL_ON_READ));
    let out = run.go(&gemini_argv(&gemini), "GEMINI_API_KEY", GEMINI_KEY);
    assert_theft_stopped(&out, &home, &stand_in, &events_of(&run.events));
}

#[test]
fn gemini_told_to_plant_settings_and_commands_is_refused_or_reported() {
    require_root();
    let gemini = installed("gemini");
    let (s, ws, home) = setup(&["generativelanguage.googleapis.com"]);
    s.file("home/.gemini/settings.json", "{}\n");
    let task = persist("~/.gemini/settings.json", "~/.gemini/commands");
    let stand_in = StandIn::start("gemini_standin.py", s.path(), "127.0.0.10", &task);
    let run = Run::new(&s, &ws, &home, &gemini_profile("127.0.0.10", ""));
    let out = run.go(&gemini_argv(&gemini), "GEMINI_API_KEY", GEMINI_KEY);
    let planted = (".gemini/settings.json", "{}\n", ".gemini/commands");
    assert_persistence_refused_or_reported(&out, &home, planted, &stand_in);
}

#[test]
fn gemini_with_its_tool_sandbox_on_is_told_once_which_setting_to_change() {
    require_root();
    let gemini = installed("gemini");
    let (s, ws, home) = setup(&["generativelanguage.googleapis.com"]);
    s.file(
        "home/.gemini/settings.json",
        "{\"security\": {\"toolSandboxing\": true}}\n",
    );
    let stand_in = StandIn::start("gemini_standin.py", s.path(), "127.0.0.11", TASK);
    let run = Run::new(&s, &ws, &home, &gemini_profile("127.0.0.11", ""));
    let out = run.go(&gemini_argv(&gemini), "GEMINI_API_KEY", GEMINI_KEY);
    let setting = "set security.toolSandboxing to false in ~/.gemini/settings.json";
    assert_told_once(&out, &ws, &stand_in, &run, "Gemini CLI", setting);
}

const OPENAI_KEY: &str = "sk-proj-python-canary-9f8e7d6c5b4a39281706f5e4d3c2b1a0";

#[test]
fn a_python_agent_does_a_task_under_its_preset_quietly_and_keeps_its_key_out_of_the_trace() {
    require_root();
    let (s, ws, home) = setup(&["api.openai.com"]);
    let agent = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/agents/py_agent.py");
    std::fs::copy(agent, home.join("agent.py")).unwrap();
    let stand_in = StandIn::start("responses_standin.py", s.path(), "127.0.0.5", TASK);
    let run = Run::new(
        &s,
        &ws,
        &home,
        "extends = \"python-agent\"\n[network]\nresolve = { \"api.openai.com\" = \"127.0.0.5\" }\n\
         upstream_ca = \"{home}/ca.pem\"\n[environment]\nset = { SSL_CERT_FILE = \"{home}/ca.pem\" }\n",
    );
    let agent = home.join("agent.py");
    let out = run.go(
        &["/usr/bin/python3", agent.to_str().unwrap()],
        "OPENAI_API_KEY",
        OPENAI_KEY,
    );
    let events = events_of(&run.events);
    assert_task_done(&out, &ws, &stand_in, &events, "api.openai.com");
    run.assert_key_kept_out(&out, OPENAI_KEY);
    stand_in.assert_got_key(OPENAI_KEY);
}

/// One JSON-RPC exchange over an MCP server's stdio: the answer to request `id`.
fn rpc(
    stdin: &mut impl Write,
    lines: &mpsc::Receiver<String>,
    id: u64,
    method: &str,
    params: Value,
) -> Value {
    let req = serde_json::json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
    writeln!(stdin, "{req}").unwrap();
    stdin.flush().unwrap();
    loop {
        let line = lines
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("no answer to {method}"));
        let msg: Value = serde_json::from_str(&line).unwrap();
        if msg["id"] == id {
            return msg;
        }
    }
}

#[test]
fn the_mcp_filesystem_server_started_by_npx_serves_the_workspace_under_its_preset() {
    require_root();
    let cache = Path::new(AGENTS).join("npm-cache");
    assert!(
        cache.is_dir(),
        "scripts/setup fills {} (npx's cache)",
        cache.display()
    );
    let s = Scratch::new();
    let ws = s.dir("ws");
    s.file("ws/notes.txt", "hello from the workspace\n");
    s.file("ws/.mcp.json", "{\"mcpServers\": {}}\n");
    // npx fetches nothing: the preset's cache (cordon's own, in the home) already holds the
    // server, as after a first run.
    let home = s.dir("home");
    std::fs::create_dir_all(home.join(".cache/cordon")).unwrap();
    let st = Command::new("cp")
        .arg("-a")
        .arg(&cache)
        .arg(home.join(".cache/cordon/npm"))
        .status()
        .unwrap();
    assert!(st.success());
    let profile = s.file(
        "profiles/test.toml",
        "extends = \"mcp-package\"\n[environment]\nset = { npm_config_offline = \"true\" }\n",
    );
    let ev = s.path().join("events.jsonl");
    let w = ws.to_str().unwrap();
    let package = concat!("@modelcontextprotocol/server-filesystem@", "2026.8.31");
    let mut c = run_cmd(
        profile.to_str().unwrap(),
        &ws,
        &["--events", ev.to_str().unwrap(), "--home", home.to_str().unwrap()],
        &["npx", "-y", package, w],
    );
    c.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let out = child.stdout.take().unwrap();
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    let init = rpc(
        &mut stdin,
        &lines,
        1,
        "initialize",
        serde_json::json!({
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "cordon-test", "version": "1"}}),
    );
    assert_eq!(
        init["result"]["serverInfo"]["name"], "secure-filesystem-server",
        "{init}"
    );
    writeln!(
        stdin,
        "{}",
        serde_json::json!({"jsonrpc": "2.0", "method": "notifications/initialized"})
    )
    .unwrap();
    let tools = rpc(&mut stdin, &lines, 2, "tools/list", serde_json::json!({}));
    let names: Vec<&str> = tools["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert!(
        names.contains(&"read_text_file") && names.contains(&"write_file"),
        "{names:?}"
    );
    let call = |stdin: &mut std::process::ChildStdin, id, name: &str, args: Value| {
        rpc(
            stdin,
            &lines,
            id,
            "tools/call",
            serde_json::json!({"name": name, "arguments": args}),
        )
    };
    let read = call(
        &mut stdin,
        3,
        "read_text_file",
        serde_json::json!({"path": format!("{w}/notes.txt")}),
    );
    assert_eq!(
        read["result"]["content"][0]["text"], "hello from the workspace\n",
        "{read}"
    );
    let write = call(
        &mut stdin,
        4,
        "write_file",
        serde_json::json!({"path": format!("{w}/out.txt"), "content": "written by the server"}),
    );
    assert!(write["result"]["isError"].is_null(), "{write}");
    // Another agent's configuration in the workspace it serves stays as it was.
    let planted = call(
        &mut stdin,
        5,
        "write_file",
        serde_json::json!({"path": format!("{w}/.mcp.json"), "content": "{\"mcpServers\": {\"x\": {\"command\": \"sh\"}}}"}),
    );
    assert_eq!(planted["result"]["isError"], true, "{planted}");
    drop(stdin);
    let st = wait_within(&mut child, 30_000);
    assert_eq!(st.code(), Some(0));
    assert_eq!(
        std::fs::read_to_string(ws.join("out.txt")).unwrap(),
        "written by the server"
    );
    assert_eq!(
        std::fs::read_to_string(ws.join(".mcp.json")).unwrap(),
        "{\"mcpServers\": {}}\n"
    );
    let events = events_of(&ev);
    let detections = of(&events, "detection");
    assert!(detections.is_empty(), "false alarms: {detections:#?}");
    // Without --profile, `npx` of an MCP server picks the preset (offline: nothing fetched).
    assert_picks_preset(&ws, None, &["npx", "--offline", "-y", package, w], "mcp-package");
}
