//! `network.mode = "proxy"` end to end on the real kernel: fixture servers on the host's
//! loopback reached *by name* (through `resolve`) from a sandbox whose agent sets no proxy
//! variable; unlisted names, literal addresses, fronting and metadata refused; every decision
//! an event. Nothing leaves the host: every upstream is 127.0.0.1, every other destination a
//! documentation range the proxy refuses.

mod common;

use common::*;
use serde_json::Value;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;

/// A server that speaks first (like ssh), for `n` connections.
fn banner_fixture(n: usize) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut c in l.incoming().take(n).flatten() {
            let _ = c.write_all(b"SSH-2.0-fixture\r\n");
        }
    });
    port
}

const AGENT: &str = r#"
import socket, struct, sys, urllib.request, errno
http_port, ssh_port = int(sys.argv[1]), int(sys.argv[2])
def out(k, v): print(f"{k}\t{v}", flush=True)
def attempt(k, f):
    try: out(k, f())
    except OSError as e: out(k, "errno:" + errno.errorcode.get(e.errno, str(e.errno)))
    except Exception as e: out(k, type(e).__name__)
attempt("http", lambda: urllib.request.urlopen(f"http://api.fixture.test:{http_port}/v1/messages", timeout=10).read().decode())
def banner():
    s = socket.create_connection(("git.fixture.test", ssh_port), timeout=10)
    return s.recv(64).decode().strip()
attempt("banner", banner)
attempt("unlisted", lambda: socket.getaddrinfo("unlisted.test", 443))
attempt("metadata_name", lambda: socket.getaddrinfo("meta.fixture.test", 80))
def literal():
    s = socket.create_connection(("192.0.2.1", 80), timeout=5)
    s.sendall(b"GET / HTTP/1.0\r\n\r\n")
    return s.recv(10) or b"eof"
attempt("literal", literal)
def fronted():
    s = socket.create_connection(("api.fixture.test", http_port), timeout=5)
    s.sendall(b"GET / HTTP/1.1\r\nHost: evil.test\r\n\r\n")
    return s.recv(10) or b"eof"
attempt("fronted", fronted)
def dns_to(server):
    q = struct.pack(">HHHHHH", 0x4242, 0x0100, 1, 0, 0, 0) + b"\x03api\x07fixture\x04test\x00" + struct.pack(">HH", 1, 1)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(5)
    s.sendto(q, (server, 53))
    data, src = s.recvfrom(512)
    return f"{src[0]} id={struct.unpack('>H', data[:2])[0]:#x} answers={struct.unpack('>H', data[6:8])[0]}"
attempt("dns_any_server", lambda: dns_to("8.8.8.8"))
def quic():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.sendto(b"x", ("192.0.2.1", 443))
attempt("quic", quic)
"#;

#[test]
fn names_reach_fixtures_through_the_proxy_and_everything_else_is_refused_and_recorded() {
    require_root();
    let s = Scratch::new();
    // Two HTTP connections (the request and the fronting attempt, which must never arrive)
    // and one banner connection.
    let http = http_fixture("hello from the fixture", 2);
    let ssh = banner_fixture(1);
    s.file("agent.py", AGENT);
    let profile = log_only_profile(
        &s,
        "proxy",
        "default",
        &format!(
            "[network]\nmode = \"proxy\"\n\
             allow = [\"api.fixture.test:{http}\", \"git.fixture.test:{ssh}\", \"meta.fixture.test\"]\n\
             resolve = {{ \"api.fixture.test\" = \"127.0.0.1\", \"git.fixture.test\" = \"127.0.0.1\", \"meta.fixture.test\" = \"169.254.169.254\" }}\n"
        ),
    );
    let ev = s.path().join("events.jsonl");
    let out = output(run_cmd(
        &profile,
        s.path(),
        &["--events", ev.to_str().unwrap()],
        &[
            "/usr/bin/python3",
            "agent.py",
            &http.to_string(),
            &ssh.to_string(),
        ],
    ));
    let r = results(&stdout(&out));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{r:?}\n{err}");
    assert_eq!(r["http"], "hello from the fixture", "{r:?}\n{err}");
    assert_eq!(r["banner"], "SSH-2.0-fixture", "{r:?}");
    // getaddrinfo: EAI_NONAME (-2) for NXDOMAIN; a REFUSED answer is a failure too.
    assert_eq!(r["unlisted"], "errno:-2", "{r:?}");
    assert!(r["metadata_name"].starts_with("errno:-"), "{r:?}");
    assert!(
        ["errno:ECONNRESET", "b'eof'", "errno:EPIPE"].contains(&r["literal"].as_str()),
        "{r:?}"
    );
    assert!(
        ["errno:ECONNRESET", "b'eof'", "errno:EPIPE"].contains(&r["fronted"].as_str()),
        "{r:?}"
    );
    assert!(
        r["dns_any_server"].starts_with("8.8.8.8 id=0x4242 answers=1"),
        "{r:?}"
    );
    assert_eq!(r["quic"], "errno:EPERM", "{r:?}");

    let events = events_of(&ev);
    let of = |k: &str| -> Vec<&Value> { events.iter().filter_map(|e| e.get(k)).collect() };
    let dns = of("dns");
    assert!(
        dns.iter()
            .any(|d| d["name"] == "api.fixture.test" && d["allowed"] == true && d["rcode"] == "NOERROR"),
        "{dns:?}"
    );
    assert!(
        dns.iter().any(|d| d["name"] == "unlisted.test"
            && d["allowed"] == false
            && d["rcode"] == "NXDOMAIN"
            && d["rule"] == "unlisted"),
        "{dns:?}"
    );
    assert!(
        dns.iter().any(|d| d["name"] == "meta.fixture.test"
            && d["rcode"] == "REFUSED"
            && d["rule"]
                .as_str()
                .unwrap()
                .contains("169.254.169.254 is link-local")),
        "{dns:?}"
    );
    let conns = of("connection");
    let ok = conns
        .iter()
        .find(|c| c["name"] == "api.fixture.test" && c["allowed"] == true)
        .unwrap_or_else(|| panic!("{conns:?}"));
    assert_eq!(ok["upstream"], format!("127.0.0.1:{http}"));
    assert_eq!(
        ok["httpHost"],
        format!("api.fixture.test:{http}").split(':').next().unwrap()
    );
    assert!(uint(&ok["bytesDown"]).unwrap() > 20, "{ok}");
    assert!(
        conns
            .iter()
            .any(|c| c["ip"] == "192.0.2.1" && c["allowed"] == false && c["rule"] == "unlisted address"),
        "{conns:?}"
    );
    assert!(
        conns.iter().any(|c| c["allowed"] == false
            && c["reason"]
                .as_str()
                .unwrap()
                .contains("HTTP Host \"evil.test\" is not api.fixture.test")),
        "{conns:?}"
    );
    assert!(
        conns.iter().any(|c| c["name"] == "git.fixture.test"
            && c["allowed"] == true
            && uint(&c["bytesDown"]) == Some(17)),
        "{conns:?}"
    );
    let http_events = of("http");
    assert!(
        http_events
            .iter()
            .any(|h| h["method"] == "GET" && h["path"] == "/v1/messages" && h["status"] == 200),
        "{http_events:?}"
    );
    // The monitor's egress rule judged the refused connections (it only logs here).
    assert!(
        of("detection").iter().any(|d| d["rule"] == "egress"),
        "no egress detection: {:?}",
        of("detection")
    );
}

/// A server that answers one request and then holds the connection open (it never closes
/// first, like a keep-alive API), for up to 60 s.
fn holding_fixture() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        if let Some(Ok(mut c)) = l.incoming().next() {
            let mut b = [0u8; 5];
            if c.read_exact(&mut b).is_ok() {
                let _ = c.write_all(b"pong\n");
            }
            // Held open, whatever the other end does.
            std::thread::sleep(std::time::Duration::from_secs(60));
            drop(c);
        }
    });
    port
}

/// The agent exits while its connection is open and its upstream keeps it so: the connection
/// is still recorded (cut at the run's end), with the bytes that crossed it.
#[test]
fn a_connection_still_open_when_the_agent_exits_is_recorded() {
    require_root();
    let s = Scratch::new();
    let port = holding_fixture();
    let profile = log_only_profile(
        &s,
        "proxy",
        "default",
        &format!(
            "[network]\nmode = \"proxy\"\nallow = [\"api.fixture.test:{port}\"]\n\
             resolve = {{ \"api.fixture.test\" = \"127.0.0.1\" }}\n"
        ),
    );
    let agent = format!(
        "import socket\ns = socket.create_connection(('api.fixture.test', {port}), timeout=10)\n\
         s.sendall(b'ping\\n')\nprint('got', s.recv(64).decode().strip(), flush=True)\n"
    );
    let ev = s.path().join("events.jsonl");
    let out = output(run_cmd(
        &profile,
        s.path(),
        &["--events", ev.to_str().unwrap()],
        &["/usr/bin/python3", "-c", &agent],
    ));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "got pong");
    let events = events_of(&ev);
    let conns: Vec<&Value> = events.iter().filter_map(|e| e.get("connection")).collect();
    let c = conns
        .iter()
        .find(|c| c["name"] == "api.fixture.test")
        .unwrap_or_else(|| panic!("the open connection was not recorded: {conns:?}"));
    assert_eq!(c["allowed"], true, "{c}");
    assert_eq!(c["reason"], "open when the run ended; cut", "{c}");
    assert_eq!(uint(&c["bytesUp"]), Some(5), "{c}");
    assert_eq!(uint(&c["bytesDown"]), Some(5), "{c}");
}

const MANY: &str = r#"
import socket, sys, threading, time, errno
port, n = int(sys.argv[1]), int(sys.argv[2])
ok = []
def one(i):
    try:
        s = socket.create_connection(("echo.fixture.test", port), timeout=20)
        s.sendall(b"%d\n" % i)
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(64)
            if not chunk: break
            data += chunk
        ok.append(data == b"%d\n" % i)
        s.close()
    except OSError as e:
        ok.append(False)
threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
for t in threads: t.start()
for t in threads: t.join(30)
print(f"many\t{sum(ok)}/{n}", flush=True)
# Live rules: late.fixture.test is unlisted until the test runs `cordon net allow`.
def late():
    try:
        socket.getaddrinfo("late.fixture.test", port)
        return "resolved"
    except OSError as e:
        return "errno:%d" % e.errno
print(f"late_before\t{late()}", flush=True)
open("ready", "w").close()
deadline = time.time() + 20
while time.time() < deadline and late() != "resolved":
    time.sleep(0.1)
print(f"late_after\t{late()}", flush=True)
s = socket.create_connection(("late.fixture.test", port), timeout=10)
s.sendall(b"late\n")
print(f"late_echo\t{s.recv(64).decode().strip()}", flush=True)
s.close()
open("used", "w").close()
# The grant lapses by itself (--for 2s): a new lookup fails again.
deadline = time.time() + 20
while time.time() < deadline and late() == "resolved":
    time.sleep(0.1)
print(f"late_expired\t{late()}", flush=True)
"#;

/// An echo server (one line back) for up to `n` connections at once, bounded in time.
fn echo_fixture(n: usize) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut c in l.incoming().take(n).flatten() {
            std::thread::spawn(move || {
                let _ = c.set_read_timeout(Some(std::time::Duration::from_secs(20)));
                let mut line = Vec::new();
                let mut b = [0u8; 1];
                while let Ok(1) = c.read(&mut b) {
                    line.push(b[0]);
                    if b[0] == b'\n' {
                        break;
                    }
                }
                let _ = c.write_all(&line);
            });
        }
    });
    port
}

#[test]
fn two_hundred_connections_complete_and_a_live_grant_opens_and_lapses() {
    require_root();
    let s = Scratch::new();
    let port = echo_fixture(202);
    s.file("many.py", MANY);
    let profile = log_only_profile(
        &s,
        "many",
        "default",
        &format!(
            "[network]\nmode = \"proxy\"\nallow = [\"echo.fixture.test:{port}\"]\n\
             resolve = {{ \"echo.fixture.test\" = \"127.0.0.1\", \"late.fixture.test\" = \"127.0.0.1\" }}\n"
        ),
    );
    let ev = s.path().join("events.jsonl");
    let mut c = run_cmd(
        &profile,
        s.path(),
        &["--events", ev.to_str().unwrap()],
        &["/usr/bin/python3", "many.py", &port.to_string(), "200"],
    );
    c.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = c.spawn().unwrap();
    assert!(
        eventually(30_000, || s.path().join("ready").exists()),
        "the agent never got ready"
    );
    let id = sandbox_id_of("many.py");
    let mut allow = cordon_command();
    allow.args([
        "net",
        "allow",
        &id,
        &format!("late.fixture.test:{port}"),
        "--for",
        "2s",
    ]);
    let out = output(allow);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("allows late.fixture.test"),
        "{}",
        stdout(&out)
    );
    let o = child.wait_with_output().unwrap();
    let r = results(&String::from_utf8_lossy(&o.stdout));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(r.get("many").map(String::as_str), Some("200/200"), "{r:?}\n{err}");
    assert_eq!(r["late_before"], "errno:-2", "{r:?}");
    assert_eq!(r["late_after"], "resolved", "{r:?}");
    assert_eq!(r["late_echo"], "late", "{r:?}");
    assert_eq!(r["late_expired"], "errno:-2", "{r:?}");
    let events = events_of(&ev);
    let changes: Vec<&Value> = events.iter().filter_map(|e| e.get("netChange")).collect();
    assert!(
        changes
            .iter()
            .any(|c| c["action"] == "allow" && c["by"] == "uid 0" && uint(&c["forMs"]) == Some(2000)),
        "{changes:?}"
    );
    assert!(
        changes
            .iter()
            .any(|c| c["action"] == "expire" && c["by"] == "cordon"),
        "{changes:?}"
    );
    let conns = events
        .iter()
        .filter_map(|e| e.get("connection"))
        .filter(|c| c["allowed"] == true)
        .count();
    assert!(conns >= 201, "{conns} allowed connections recorded");
}

/// A stand-in of the Messages API over HTTPS on the host's 127.0.0.1:443, with a certificate
/// for api.anthropic.com from a CA made for the test. Answers one request, then exits.
const STAND_IN: &str = r#"
import http.server, json, ssl, sys
cert, key = sys.argv[1], sys.argv[2]
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        asked = body["messages"][0]["content"]
        reply = {"id": "msg_standin", "type": "message", "role": "assistant", "model": body["model"],
                 "content": [{"type": "text", "text": f"stand-in heard: {asked}"}],
                 "stop_reason": "end_turn", "stop_sequence": None,
                 "usage": {"input_tokens": 3, "output_tokens": 4}}
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
    def log_message(self, *a): pass
srv = http.server.HTTPServer(("127.0.0.1", 443), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
srv.socket.settimeout(60)
print("listening", flush=True)
srv.handle_request()
"#;

const SDK_AGENT: &str = r#"
const Anthropic = require('/opt/cordon-test-agents/node_modules/@anthropic-ai/sdk');
const client = new Anthropic({ apiKey: 'sk-test-not-a-real-key', maxRetries: 0, timeout: 20000 });
client.messages.create({ model: 'claude-test', max_tokens: 16, messages: [{ role: 'user', content: 'hello sandbox' }] })
  .then(m => { console.log('reply\t' + m.content[0].text); })
  .catch(e => { console.log('error\t' + e); process.exit(1); });
"#;

#[test]
fn the_anthropic_sdk_from_npm_reaches_its_usual_endpoint_by_name_under_the_agent_preset() {
    require_root();
    let sdk = Path::new("/opt/cordon-test-agents/node_modules/@anthropic-ai/sdk");
    assert!(sdk.exists(), "scripts/setup installs the SDK there");
    let s = Scratch::new();
    let d = s.path();
    test_ca(d, "ca.pem", &["api.anthropic.com"], "api");
    s.file("standin.py", STAND_IN);
    s.file("agent.js", SDK_AGENT);
    let mut stand_in = std::process::Command::new("/usr/bin/python3")
        .args(["standin.py", "api.pem", "api.key"])
        .current_dir(d)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::BufRead;
        let mut line = String::new();
        std::io::BufReader::new(stand_in.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(
            line.trim(),
            "listening",
            "the stand-in could not bind 127.0.0.1:443"
        );
    }
    // The `agent` preset as shipped, plus what only a test needs: the stand-in's address for
    // the name, and its CA for node (no proxy variable anywhere).
    let profile = s.file(
        "profiles/sdk.toml",
        &format!(
            "extends = \"agent\"\n[network]\nresolve = {{ \"api.anthropic.com\" = \"127.0.0.1\" }}\n\
             [environment]\nset = {{ NODE_EXTRA_CA_CERTS = \"{}/ca.pem\" }}\n",
            d.display()
        ),
    );
    let ev = d.join("events.jsonl");
    let out = output(run_cmd(
        profile.to_str().unwrap(),
        d,
        &["--events", ev.to_str().unwrap()],
        &["/usr/bin/node", "agent.js"],
    ));
    let _ = stand_in.kill();
    let _ = stand_in.wait();
    let r = results(&stdout(&out));
    assert_eq!(
        r.get("reply").map(String::as_str),
        Some("stand-in heard: hello sandbox"),
        "{r:?}\n{}",
        stderr(&out)
    );
    let events = events_of(&ev);
    let conn = events
        .iter()
        .filter_map(|e| e.get("connection"))
        .find(|c| c["name"] == "api.anthropic.com")
        .unwrap_or_else(|| panic!("no connection event for api.anthropic.com"));
    assert_eq!(conn["allowed"], true, "{conn}");
    assert_eq!(conn["sni"], "api.anthropic.com", "{conn}");
    assert_eq!(conn["upstream"], "127.0.0.1:443", "{conn}");
    assert_eq!(conn["rule"], "api.anthropic.com", "{conn}");
}

/// A static file server (HTTPS when given a certificate) over `dir` on the host's loopback,
/// serving until killed: git's dumb HTTP protocol and pip's simple index are static files.
const STATIC: &str = r#"
import http.server, functools, ssl, sys
root, port = sys.argv[1], int(sys.argv[2])
handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=root)
handler.log_message = lambda *a: None
srv = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
if len(sys.argv) > 3:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(sys.argv[3], sys.argv[4])
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
print("listening", flush=True)
srv.serve_forever()
"#;

/// Start `STATIC` and wait until it listens.
fn static_server(dir: &Path, root: &Path, port: u16, tls: Option<(&str, &str)>) -> std::process::Child {
    let mut c = std::process::Command::new("/usr/bin/python3");
    c.arg(dir.join("static.py")).arg(root).arg(port.to_string());
    if let Some((cert, key)) = tls {
        c.arg(dir.join(cert)).arg(dir.join(key));
    }
    listening(c.stdout(std::process::Stdio::piped()).spawn().unwrap())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn git_clone_over_https_and_pip_download_from_an_index_work_by_name() {
    require_root();
    let s = Scratch::new();
    let d = s.path();
    s.file("static.py", STATIC);
    // A CA and a certificate for git.fixture.test.
    test_ca(d, "ca.pem", &["git.fixture.test"], "git");
    // A bare repository served as static files (git's dumb HTTP protocol).
    let sh = |script: &str| {
        let st = std::process::Command::new("sh")
            .args(["-ec", script])
            .current_dir(d)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .status()
            .unwrap();
        assert!(st.success(), "{script}");
    };
    sh(
        "mkdir src && cd src && git init -q . && echo fixture > README && git add README && \
        git -c user.name=t -c user.email=t@example.invalid commit -q -m first && cd .. && \
        git clone -q --bare src srv/repo.git && git -C srv/repo.git update-server-info",
    );
    // A simple index with one real wheel.
    sh("mkdir -p idx/simple/cordon-fixture wheel/cordon_fixture-1.0.dist-info && \
        printf 'Metadata-Version: 2.1\\nName: cordon-fixture\\nVersion: 1.0\\n' > wheel/cordon_fixture-1.0.dist-info/METADATA && \
        printf 'Wheel-Version: 1.0\\nGenerator: test\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n' > wheel/cordon_fixture-1.0.dist-info/WHEEL && \
        printf 'cordon_fixture-1.0.dist-info/METADATA,,\\ncordon_fixture-1.0.dist-info/WHEEL,,\\ncordon_fixture-1.0.dist-info/RECORD,,\\n' > wheel/cordon_fixture-1.0.dist-info/RECORD && \
        cd wheel && python3 -m zipfile -c ../idx/simple/cordon-fixture/cordon_fixture-1.0-py3-none-any.whl cordon_fixture-1.0.dist-info && cd .. && \
        printf '<a href=\"cordon_fixture-1.0-py3-none-any.whl\">cordon_fixture-1.0-py3-none-any.whl</a>\\n' > idx/simple/cordon-fixture/index.html");
    let (git_port, pip_port) = (free_port(), free_port());
    let mut git = static_server(d, &d.join("srv"), git_port, Some(("git.pem", "git.key")));
    let mut pip = static_server(d, &d.join("idx"), pip_port, None);
    let profile = s.file(
        "profiles/tools.toml",
        &format!(
            "extends = \"default\"\n[network]\nmode = \"proxy\"\n\
             allow = [\"git.fixture.test:{git_port}\", \"pypi.fixture.test:{pip_port}\"]\n\
             resolve = {{ \"git.fixture.test\" = \"127.0.0.1\", \"pypi.fixture.test\" = \"127.0.0.1\" }}\n\
             [environment]\nset = {{ GIT_SSL_CAINFO = \"{}/ca.pem\", GIT_CONFIG_NOSYSTEM = \"1\" }}\n\
             [invariants]\nnetwork = \"any\"\n",
            d.display()
        ),
    );
    let script = format!(
        "set -e; git clone -q https://git.fixture.test:{git_port}/repo.git cloned; cat cloned/README; \
         python3 -m pip download -q --no-deps --disable-pip-version-check --trusted-host pypi.fixture.test --index-url http://pypi.fixture.test:{pip_port}/simple -d dl cordon-fixture; ls dl"
    );
    let ev = d.join("events.jsonl");
    let out = output(run_cmd(
        profile.to_str().unwrap(),
        d,
        &["--events", ev.to_str().unwrap()],
        &["/bin/sh", "-c", &script],
    ));
    let _ = git.kill();
    let _ = pip.kill();
    let _ = git.wait();
    let _ = pip.wait();
    assert_eq!(out.status.code(), Some(0), "{}\n{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("fixture\n"), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("cordon_fixture-1.0-py3-none-any.whl"),
        "{}",
        stdout(&out)
    );
    let events = events_of(&ev);
    let names: Vec<String> = events
        .iter()
        .filter_map(|e| e.get("connection"))
        .filter(|c| c["allowed"] == true)
        .map(|c| c["name"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(names.iter().any(|n| n == "git.fixture.test"), "{names:?}");
    assert!(names.iter().any(|n| n == "pypi.fixture.test"), "{names:?}");
    assert!(
        events.iter().filter_map(|e| e.get("http")).any(|h| h["path"]
            .as_str()
            .is_some_and(|p| p.starts_with("/simple/cordon-fixture"))),
        "no recorded index request"
    );
}

/// Claude Code (`claude -p "say hi"`) under `claude` extended by `extra`, its API answered by
/// a stand-in on `addr` reached by name; asserts it answered, raised no detection, made its
/// state, and left its key in no byte of the trace, the stream or stderr. Returns its events.
fn claude_says_hi(s: &Scratch, addr: &str, extra: &str) -> Vec<Value> {
    let claude = Path::new("/opt/cordon-test-agents/node_modules/.bin/claude");
    assert!(claude.exists(), "scripts/setup installs Claude Code there");
    let d = s.path();
    let ws = s.dir("ws");
    let home = s.dir("home");
    test_ca(d, "ws/ca.pem", &["api.anthropic.com"], "api");
    let mut stand_in = messages_stand_in(d, addr, "claude under cordon", None);
    let profile = s.file(
        "profiles/claude-test.toml",
        // The preset intercepts its API's TLS (the key is a credential): cordon verifies the
        // stand-in with the test CA.
        &format!(
            "extends = \"claude\"\n{extra}\n[network]\nresolve = {{ \"api.anthropic.com\" = \"{addr}\" }}\n\
             upstream_ca = \"{}\"\n",
            ws.join("ca.pem").display()
        ),
    );
    let key = "sk-ant-api03-claude-canary-0a1b2c3d4e5f60718293a4b5c6d7e8f9";
    let trace = d.join("run.trace");
    let ev = d.join("events.jsonl");
    let mut c = run_cmd(
        profile.to_str().unwrap(),
        &ws,
        &[
            "--home",
            home.to_str().unwrap(),
            "--trace",
            trace.to_str().unwrap(),
            "--events",
            ev.to_str().unwrap(),
        ],
        &[claude.to_str().unwrap(), "-p", "say hi"],
    );
    c.env("ANTHROPIC_API_KEY", key);
    let out = output(c);
    let _ = stand_in.kill();
    let _ = stand_in.wait();
    assert_eq!(out.status.code(), Some(0), "{}\n{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("claude under cordon"), "{}", stdout(&out));
    let events = events_of(&ev);
    let detections: Vec<&Value> = events.iter().filter_map(|e| e.get("detection")).collect();
    assert!(detections.is_empty(), "false alarms: {detections:#?}");
    assert!(home.join(".claude").is_dir(), "its state directory was created");
    let has = |bytes: &[u8]| bytes.windows(key.len()).any(|w| w == key.as_bytes());
    assert!(!has(&std::fs::read(&trace).unwrap()), "the key reached the trace");
    assert!(!has(&std::fs::read(&ev).unwrap()), "the key reached the events");
    assert!(!has(&out.stderr), "the key reached stderr");
    events
}

/// Issue 14's acceptance test: the real Claude Code CLI from npm (installed by scripts/setup)
/// under the `claude` preset, with its usual endpoint answered by a stand-in of the Messages
/// API (streaming) reached by name: it answers, creates its state in ~/.claude, raises no
/// detection, and its API key is in no byte of the trace or the stream.
#[test]
fn claude_code_works_under_its_preset_quietly_and_keeps_its_key_out_of_the_trace() {
    require_root();
    let s = Scratch::new();
    // 127.0.0.2: the SDK test's stand-in has 127.0.0.1:443.
    claude_says_hi(&s, "127.0.0.2", "");
    let claude = Path::new("/opt/cordon-test-agents/node_modules/.bin/claude");
    let (ws, home) = (s.path().join("ws"), s.path().join("home"));
    // Without --profile, the command picks its preset and the start line says so.
    let out = assert_picks_preset(
        &ws,
        Some(&home),
        &[claude.to_str().unwrap(), "--version"],
        "claude",
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

/// Issue 19: the same real agent with `[monitor] visibility = "process"` (no syscall
/// tracepoints): it works the same, its programs are recorded with their arguments, its
/// API traffic goes through the proxy as before, and no syscall is recorded.
#[test]
fn claude_code_works_with_process_visibility() {
    require_root();
    let s = Scratch::new();
    let events = claude_says_hi(&s, "127.0.0.16", "[monitor]\nvisibility = \"process\"\n");
    let kinds = |k: &str| events.iter().filter(|e| e.get(k).is_some()).count();
    assert_eq!(kinds("syscall"), 0, "no syscall is recorded");
    let execs: Vec<&Value> = events.iter().filter_map(|e| e.get("exec")).collect();
    assert!(
        execs
            .iter()
            .any(|x| x["argv"].as_array().is_some_and(|a| !a.is_empty())),
        "programs come with their arguments: {execs:?}"
    );
    assert!(
        kinds("http") + kinds("connection") > 0,
        "its API calls are recorded by the proxy"
    );
}
