//! `network.unlisted = "ask"` on the real kernel: a connection no rule allows is held, cordon
//! says on its stderr what to type, and `cordon net allow|deny` answers it while the agent
//! waits; nobody answering refuses it after `ask_timeout`. Every step is an `approval` event.
//! Upstreams are fixtures on the host's 127.0.0.1, reached by name through `resolve`.

mod common;

use common::*;
use std::io::BufRead;

const AGENT: &str = r#"
import sys, urllib.request
port = int(sys.argv[1])
def get(name, timeout=60):
    try:
        return urllib.request.urlopen(f"http://{name}:{port}/", timeout=timeout).read().decode()
    except Exception as e:
        return "error:" + type(e).__name__
for key, name in [("first", "held.fixture.test"), ("second", "refused.fixture.test"),
                  ("third", "silent.fixture.test"), ("again", "held.fixture.test")]:
    print(f"{key}\t{get(name)}", flush=True)
# An agent that gives up before anyone answers: its hold ends with it.
print(f"impatient\t{get('gone.fixture.test', timeout=1)}", flush=True)
"#;

#[test]
fn an_unlisted_name_is_held_until_a_person_answers_and_refused_when_nobody_does() {
    require_root();
    let s = Scratch::new();
    let port = http_fixture("fixture says hi", 4);
    s.file("ask.py", AGENT);
    let profile = log_only_profile(
        &s,
        "ask",
        "default",
        "[network]\nmode = \"proxy\"\nunlisted = \"ask\"\nask_timeout = \"3s\"\n\
         resolve = { \"held.fixture.test\" = \"127.0.0.1\", \"refused.fixture.test\" = \"127.0.0.1\", \
         \"silent.fixture.test\" = \"127.0.0.1\", \"gone.fixture.test\" = \"127.0.0.1\" }\n",
    );
    let ev = s.path().join("events.jsonl");
    let mut c = run_cmd(
        &profile,
        s.path(),
        &["--events", ev.to_str().unwrap()],
        &["/usr/bin/python3", "ask.py", &port.to_string()],
    );
    c.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = c.spawn().unwrap();
    let stderr_lines = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut said = Vec::new();
    let mut asking_seen = false;
    // A person at the terminal: allow the first, refuse the second, ignore the third.
    for line in stderr_lines.lines().map_while(Result::ok) {
        said.push(line.clone());
        let Some(rest) = line.strip_prefix("cordon: ASK ") else {
            continue;
        };
        let id = rest.split(':').next().unwrap().to_string();
        if !rest.contains("wants to connect to") {
            continue;
        }
        let mut ps = cordon_command();
        ps.arg("ps");
        let listed = stdout(&output(ps));
        asking_seen |= listed
            .lines()
            .any(|l| l.starts_with(&id) && l.contains("asking (1)"));
        let answer = if rest.contains(&format!("held.fixture.test:{port}")) {
            "allow"
        } else if rest.contains("refused.fixture.test") {
            "deny"
        } else {
            continue;
        };
        let host = if answer == "allow" { "held" } else { "refused" };
        let mut net = cordon_command();
        net.args(["net", answer, &id, &format!("{host}.fixture.test:{port}")]);
        let out = output(net);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    }
    let out = child.wait_with_output().unwrap();
    let said = said.join("\n");
    assert_eq!(out.status.code(), Some(0), "{said}");
    let r = results(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(r["first"], "fixture says hi", "{r:?}\n{said}");
    assert!(r["second"].starts_with("error:"), "{r:?}");
    assert!(r["third"].starts_with("error:"), "{r:?}");
    assert_eq!(r["again"], "fixture says hi", "the allow rule lasts: {r:?}");
    assert!(asking_seen, "`cordon ps` never showed the sandbox asking\n{said}");
    assert!(
        said.contains("ASK ")
            && said.contains("held; answer with `cordon approve ")
            && said.contains("(or `cordon net allow "),
        "{said}"
    );
    let events = events_of(&ev);
    let approvals: Vec<&serde_json::Value> = events.iter().filter_map(|e| e.get("approval")).collect();
    let decided = |target: &str| {
        approvals
            .iter()
            .find(|a| a["target"] == target && a["state"] != "asked")
            .unwrap_or_else(|| panic!("no decision for {target}: {approvals:#?}"))
    };
    let first = decided(&format!("held.fixture.test:{port}"));
    assert_eq!(first["state"], "allowed");
    assert_eq!(first["by"], "uid 0");
    assert_eq!(first["rule"], format!("live allow held.fixture.test:{port}"));
    let second = decided(&format!("refused.fixture.test:{port}"));
    assert_eq!(second["state"], "refused");
    assert_eq!(second["rule"], format!("live deny refused.fixture.test:{port}"));
    let third = decided(&format!("silent.fixture.test:{port}"));
    assert_eq!(third["state"], "timed out");
    assert!(uint(&third["waitedMs"]).unwrap() >= 3000, "{third}");
    let gone = decided(&format!("gone.fixture.test:{port}"));
    assert_eq!(gone["state"], "abandoned", "{gone}");
    assert!(uint(&gone["waitedMs"]).unwrap() < 3000, "{gone}");
    assert_eq!(
        approvals.iter().filter(|a| a["state"] == "asked").count(),
        4,
        "the second request to an allowed name is not held: {approvals:#?}"
    );
    // The name was answered with a stand-in and looked up by cordon only once allowed.
    let dns_held = events
        .iter()
        .filter_map(|e| e.get("dns"))
        .find(|d| d["name"] == "silent.fixture.test" && d["qtype"] == "A")
        .expect("the question was recorded");
    assert!(
        dns_held["rule"]
            .as_str()
            .unwrap()
            .contains("ask: held at connect"),
        "{dns_held}"
    );
    assert!(
        dns_held
            .get("upstream")
            .and_then(|u| u.as_array())
            .is_none_or(Vec::is_empty),
        "{dns_held}"
    );
}
