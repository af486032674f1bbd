//! What reaches a person's terminal. The agent chooses file names, argv and its comm: in every
//! text cordon prints for a person (stderr of `cordon run`, `cordon ps`, `cordon events`,
//! `cordon trace show|verify`) those bytes are escaped, while the JSON keeps them exact.

mod common;

use common::*;
use serde_json::Value;

/// Printed raw, this name would return the cursor, erase cordon's line, forge one of its own,
/// hide what follows, ring the bell and (8-bit CSI as U+009B) clear the screen; `\xff` is not
/// UTF-8.
const HOSTILE_DIR: &str = r"b'x\r\x1b[2K\ncordon: all clear\x1b[8m\x07\xc2\x9b2J\xff'";
/// What the events hold for it (the invalid byte is U+FFFD in a JSON string).
const HOSTILE_DIR_TEXT: &str = "x\r\x1b[2K\ncordon: all clear\x1b[8m\x07\u{9b}2J\u{fffd}";
/// How a person sees it.
const HOSTILE_DIR_SHOWN: &str = r"x\x0d\x1b[2K\x0acordon: all clear\x1b[8m\x07\u{9b}2J";
/// A program name, hence the comm of the process that runs it.
const HOSTILE_COMM: &str = r"b'c\x1b[8m\r\x07'";
/// An argument of the agent's command (argv must be UTF-8 for cordon's command line).
const HOSTILE_ARG: &str = "\x1b]0;pwned\x07\r\x1b[2Kok\u{9b}8m";
const HOSTILE_ARG_SHOWN: &str = r"\x1b]0;pwned\x07\x0d\x1b[2Kok\u{9b}8m";

/// What is wrong with a text for a person, if anything: a byte that moves the cursor, erases,
/// rings or starts a sequence; not UTF-8; a line forged by a newline inside a name.
fn unprintable(bytes: &[u8]) -> Option<String> {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return Some(format!("not UTF-8: {bytes:?}"));
    };
    let raw: Vec<char> = ['\x1b', '\r', '\x07', '\u{9b}']
        .into_iter()
        .filter(|c| text.contains(*c))
        .collect();
    let forged = text.lines().any(|l| l.starts_with("cordon: all clear"));
    (!raw.is_empty() || forged).then(|| format!("carries {raw:?}, forged line: {forged}:\n{text:?}"))
}

/// Lets the agent finish when dropped (also when the test fails while it runs).
struct Go(std::path::PathBuf);

impl Drop for Go {
    fn drop(&mut self) {
        let _ = std::fs::write(&self.0, "");
    }
}

fn cordon_text(args: &[&str]) -> Vec<u8> {
    let mut c = cordon_command();
    c.args(args);
    let out = output(c);
    assert!(out.status.success(), "cordon {args:?}: {}", stderr(&out));
    out.stdout
}

#[test]
fn the_agents_bytes_are_escaped_in_every_text_for_a_person() {
    require_root();
    let s = Scratch::new();
    // The rule under test alerts (a line on stderr) and lets the agent go on.
    let prof = profile_file(&s, "alert", "[monitor.sensitive_read]\nresponse = \"alert\"\n");
    let (ev, trace) = (s.path().join("ev.jsonl"), s.path().join("run.trace"));
    let ws = s.dir("ws");
    // The script is a file: the command line (shown by `cordon ps`) has no newline of its own.
    let script = format!(
        "import os, subprocess, time\n\
         d = {HOSTILE_DIR}\n\
         os.mkdir(d)\n\
         open(d + b'/id_rsa', 'w').write('k')\n\
         open(d + b'/id_rsa').read()\n\
         os.symlink('/usr/bin/cat', {HOSTILE_COMM})\n\
         subprocess.run([b'./' + {HOSTILE_COMM}, d + b'/id_rsa'], stdout=subprocess.DEVNULL)\n\
         open('ready', 'w').close()\n\
         end = time.time() + 20\n\
         while not os.path.exists('go') and time.time() < end: time.sleep(0.05)\n"
    );
    std::fs::write(ws.join("agent.py"), script).unwrap();
    let mut run = run_cmd(
        &prof,
        &ws,
        &[
            "--events",
            ev.to_str().unwrap(),
            "--trace",
            trace.to_str().unwrap(),
        ],
        &["/usr/bin/python3", "agent.py", "output-escape-test", HOSTILE_ARG],
    );
    run.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = run.spawn().expect("spawn cordon");
    let go = Go(ws.join("go"));
    assert!(
        eventually(20_000, || ws.join("ready").exists()),
        "the agent never got ready"
    );

    // While it runs: `cordon ps` and `cordon events ID`.
    let id = sandbox_id_of("output-escape-test");
    let ps = cordon_text(&["ps"]);
    let live = cordon_text(&["events", &id]);
    drop(go);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    // A finished run's texts.
    let t = trace.to_str().unwrap();
    let texts = [
        ("stderr of cordon run", out.stderr.clone()),
        ("cordon ps", ps),
        ("cordon events ID", live),
        ("cordon events TRACE", cordon_text(&["events", t])),
        ("cordon trace show", cordon_text(&["trace", "show", t])),
        ("cordon trace verify", cordon_text(&["trace", "verify", t])),
    ];
    let dirty: Vec<String> = texts
        .iter()
        .filter_map(|(what, bytes)| unprintable(bytes).map(|p| format!("{what} {p}")))
        .collect();
    assert!(dirty.is_empty(), "{}", dirty.join("\n\n"));

    // Every text shows the agent's bytes escaped: the argument (in the command) everywhere but
    // on stderr, the directory's name wherever events are shown.
    for (what, bytes) in &texts[1..] {
        let text = String::from_utf8_lossy(bytes);
        assert!(
            text.contains(HOSTILE_ARG_SHOWN),
            "{what} shows the command:\n{text}"
        );
        if !what.contains("ps") && !what.contains("verify") {
            assert!(text.contains(HOSTILE_DIR_SHOWN), "{what}:\n{text}");
        }
    }
    // The ALERT line: one line, escaped, naming the whole path and the comm.
    let err = stderr(&out);
    let alerts: Vec<&str> = err.lines().filter(|l| l.starts_with("cordon: ALERT")).collect();
    assert!(
        alerts
            .iter()
            .any(|a| a.contains(&format!("{HOSTILE_DIR_SHOWN}\u{fffd}/id_rsa"))
                && a.contains(r"(c\x1b[8m\x0d\x07)")),
        "an ALERT line names the whole path and the comm, escaped:\n{err}"
    );

    // The JSON keeps the exact strings: the path, the comm, the argv.
    let events: Vec<Value> = std::fs::read_to_string(&ev)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let path = format!("{HOSTILE_DIR_TEXT}/id_rsa");
    assert!(
        events
            .iter()
            .any(|e| e["syscall"]["path"].as_str() == Some(&path)),
        "no syscall event on {path:?}"
    );
    assert!(
        events.iter().any(|e| e["comm"] == "c\x1b[8m\r\x07"),
        "the events keep the comm exact"
    );
    let detection = events
        .iter()
        .find_map(|e| e.get("detection"))
        .expect("a detection");
    assert!(
        detection["summary"].as_str().unwrap().contains(&path),
        "{detection}"
    );
    let argv_has =
        |e: &Value, k: &str, f: &str, x: &str| e[k][f].as_array().is_some_and(|a| a.iter().any(|v| v == x));
    assert!(
        events
            .iter()
            .any(|e| argv_has(e, "exec", "argv", &format!("{HOSTILE_DIR_TEXT}/id_rsa"))),
        "the exec event keeps the argument exact"
    );
    assert!(
        events
            .iter()
            .any(|e| argv_has(e, "lifecycle", "command", HOSTILE_ARG)),
        "the start event keeps the command exact"
    );
}

/// Does `hay` hold `needle`?
fn holds(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn an_interactive_agent_cannot_set_the_clipboard_or_the_title() {
    require_root();
    let s = Scratch::new();
    let ev = s.path().join("ev.jsonl");
    let ws = s.dir("ws");
    // A clipboard write, a title, a colored line, a link to a local file, a title report
    // request; `trace` on cordon's last stderr line ends the reading.
    let script = r"printf 'before\033]52;c;cHduZWQ=\007\033]0;pwned-title\033\\\033[1;31mred line\033[0m|\033]8;;file:///etc/passwd\007link\033]8;;\007|\033[21tafter'";
    let (mut child, mut pty) = spawn_on_pty(run_cmd(
        "default",
        &ws,
        &["--events", ev.to_str().unwrap()],
        &["/bin/sh", "-c", script],
    ));
    let seen = pty.read_bytes_until(b"cordon: trace ", 20_000);
    let status = wait_within(&mut child, 10_000);
    let text = String::from_utf8_lossy(&seen);
    assert!(status.success(), "{text}");
    for gone in [
        b"\x1b]52".as_slice(),
        b"cHduZWQ=",
        b"\x1b]0;",
        b"pwned-title",
        b"file:///etc/passwd",
        b"\x1b[21t",
    ] {
        assert!(
            !holds(&seen, gone),
            "{:?} reached the terminal: {text:?}",
            String::from_utf8_lossy(gone)
        );
    }
    assert!(
        holds(&seen, b"before\x1b[1;31mred line\x1b[0m|link\x1b]8;;\x07|after"),
        "the agent's screen, byte for byte: {text:?}"
    );
    let note = "filtered 4 terminal sequences from the agent (1 clipboard write, 1 title change, \
                1 non-web hyperlink, 1 terminal report request)";
    assert!(text.contains(&format!("cordon: {note}")), "{text}");
    // The run's notes carry the counts into the exited event and the seal.
    let exited = std::fs::read_to_string(&ev)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|e| e["lifecycle"]["phase"] == "exited")
        .expect("an exited event");
    assert!(
        exited["lifecycle"]["detail"].as_str().unwrap().contains(note),
        "{exited}"
    );
}

#[test]
fn the_profile_lets_titles_and_clipboard_writes_through() {
    require_root();
    let s = Scratch::new();
    let prof = profile_file(&s, "titles", "[terminal]\nallow = [\"title\", \"clipboard\"]\n");
    let ws = s.dir("ws");
    let script = r"printf '\033]52;c;eA==\007\033]0;my title\033\\\033]52;c;?\007done'";
    let (mut child, mut pty) = spawn_on_pty(run_cmd(&prof, &ws, &[], &["/bin/sh", "-c", script]));
    let seen = pty.read_bytes_until(b"cordon: trace ", 20_000);
    let status = wait_within(&mut child, 10_000);
    let text = String::from_utf8_lossy(&seen);
    assert!(status.success(), "{text}");
    assert!(
        holds(&seen, b"\x1b]52;c;eA==\x07\x1b]0;my title\x1b\\done"),
        "{text:?}"
    );
    // Reading the clipboard is never passed.
    assert!(
        text.contains("filtered 1 terminal sequence from the agent (1 terminal report request)"),
        "{text}"
    );
}
