//! Shared helpers for the real-kernel integration tests. They run the real `cordon` binary;
//! they need root (CI runs as root) and fail loudly without it rather than pass vacuously.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub fn cordon() -> &'static str {
    env!("CARGO_BIN_EXE_cordon")
}

/// Where the tests' runs leave their traces (not the host's /var/lib/cordon/traces);
/// scripts/test empties it before a run (the files are append-only: `chattr -R -a` first).
pub const TEST_TRACE_DIR: &str = "/tmp/cordon-test-traces";

/// The cordon binary, with default traces going to `TEST_TRACE_DIR`, and a lingerer that
/// leaves 2 s after the last sandbox (the tests look at the host's probe state between runs;
/// `tests/events.rs` tests the keep-warm hold itself).
pub fn cordon_command() -> Command {
    let mut c = Command::new(cordon());
    c.env("CORDON_TRACE_DIR", TEST_TRACE_DIR);
    c.env("CORDON_KEEP_WARM", "0");
    c
}

/// cordon run as user `nobody` (65534, no groups).
pub fn cordon_as_nobody() -> Command {
    let mut c = Command::new("setpriv");
    c.args(["--reuid=65534", "--regid=65534", "--clear-groups", cordon()]);
    c
}

/// Clear the append-only attribute of every file under `dir` so it can be removed.
pub fn clear_append_only(dir: &Path) {
    use std::os::fd::AsRawFd;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            clear_append_only(&p);
        } else if let Ok(f) = std::fs::File::open(&p) {
            let mut flags: libc::c_long = 0;
            // SAFETY: FS_IOC_GETFLAGS/SETFLAGS read and write one long.
            unsafe {
                if libc::ioctl(f.as_raw_fd(), 0x8008_6601, &mut flags) == 0 && flags & 0x20 != 0 {
                    flags &= !0x20;
                    libc::ioctl(f.as_raw_fd(), 0x4008_6602, &flags);
                }
            }
        }
    }
}

/// The members of the event `kind` oneof (events.proto) as the JSON lines name them: in the
/// proto3 JSON mapping the one set is a key of the event itself.
pub const EVENT_KINDS: &[&str] = &[
    "syscall",
    "fork",
    "exec",
    "exit",
    "net",
    "counts",
    "loss",
    "lifecycle",
    "traffic",
    "response",
    "detection",
    "dns",
    "connection",
    "http",
    "netChange",
];

/// (kind, body) of a JSON event line.
pub fn event_kind(e: &serde_json::Value) -> Option<(&'static str, &serde_json::Value)> {
    EVENT_KINDS.iter().find_map(|k| e.get(*k).map(|v| (*k, v)))
}

/// A 64-bit integer of a JSON event line (proto3 JSON writes `uint64`/`int64` as strings).
pub fn uint(v: &serde_json::Value) -> Option<u64> {
    v.as_str().and_then(|s| s.parse().ok())
}

pub fn int(v: &serde_json::Value) -> Option<i64> {
    v.as_str().and_then(|s| s.parse().ok())
}

pub fn require_root() {
    // SAFETY: geteuid cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "integration tests run the real sandbox and need root: run `sudo scripts/test`"
    );
}

/// A scratch directory removed on drop.
pub struct Scratch(pub tempfile::TempDir);

impl Scratch {
    pub fn new() -> Scratch {
        let d = tempfile::Builder::new()
            .prefix("cordon-test.")
            .tempdir()
            .expect("tempdir");
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        Scratch(d)
    }
    pub fn path(&self) -> &Path {
        self.0.path()
    }
    pub fn dir(&self, rel: &str) -> PathBuf {
        let p = self.path().join(rel);
        std::fs::create_dir_all(&p).unwrap();
        p
    }
    pub fn file(&self, rel: &str, text: &str) -> PathBuf {
        let p = self.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        p
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        clear_append_only(self.path());
    }
}

/// Who starts cordon: root directly, or an unprivileged user through sudo (simulated with
/// the SUDO_UID/SUDO_GID that sudo sets).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    Root,
    Sudo(u32),
}

pub const SUDO_TEST_UID: u32 = 4242;

impl Caller {
    pub fn owner(self) -> u32 {
        match self {
            Caller::Root => 0,
            Caller::Sudo(u) => u,
        }
    }
    pub fn apply(self, cmd: &mut Command) {
        cmd.env_remove("SUDO_UID")
            .env_remove("SUDO_GID")
            .env_remove("SUDO_USER");
        if let Caller::Sudo(u) = self {
            cmd.env("SUDO_UID", u.to_string()).env("SUDO_GID", u.to_string());
        }
    }
}

pub fn chown_tree(p: &Path, uid: u32) {
    let st = Command::new("chown")
        .arg("-R")
        .arg(format!("{uid}:{uid}"))
        .arg(p)
        .status()
        .unwrap();
    assert!(st.success());
}

/// Build a `cordon run` command.
pub fn run_cmd(profile: &str, ws: &Path, extra: &[&str], argv: &[&str]) -> Command {
    let mut c = cordon_command();
    c.arg("run")
        .arg("--profile")
        .arg(profile)
        .arg("--workspace")
        .arg(ws);
    c.args(extra).arg("--").args(argv);
    c.stdin(Stdio::null());
    c
}

pub fn output(mut c: Command) -> Output {
    c.output().expect("spawn cordon")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Run `sh -c SCRIPT` in `profile`; return the output.
pub fn sh(profile: &str, ws: &Path, script: &str) -> Output {
    output(run_cmd(profile, ws, &[], &["/bin/sh", "-c", script]))
}

pub fn owner_of(p: &Path) -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(p).unwrap().uid()
}

/// Processes whose command line contains `needle`, except cordon's own processes on the host:
/// the supervisor and its heir — a `CLONE_VM` child that keeps the supervisor's memory (argv
/// included, so `cmdline` shows cordon's) for a moment after it exits (`sys::leave_memory_to_heir`).
/// Everything of a sandbox (init included) is in a pid namespace of its own, so it is kept.
pub fn host_pids_with(needle: &str) -> Vec<i32> {
    let own_ns = std::fs::read_link("/proc/self/ns/pid").ok();
    let cordon = std::fs::canonicalize(cordon()).unwrap();
    let supervisor = |dir: &Path| {
        std::fs::read_link(dir.join("ns/pid")).ok() == own_ns
            && std::fs::read_link(dir.join("exe")).is_ok_and(|e| e == cordon)
    };
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if let Ok(cmd) = std::fs::read(e.path().join("cmdline")) {
            if String::from_utf8_lossy(&cmd).replace('\0', " ").contains(needle) && !supervisor(&e.path()) {
                out.push(pid);
            }
        }
    }
    out
}

/// A task's nice value (field 19 of its stat file, e.g. `/proc/PID/stat`).
pub fn nice_of(stat: &Path) -> i64 {
    let text = std::fs::read_to_string(stat).unwrap();
    let after_comm = text.rsplit_once(')').unwrap().1;
    after_comm.split_whitespace().nth(16).unwrap().parse().unwrap()
}

/// Poll `f` every 20 ms for at most `ms`; true as soon as it holds.
pub fn eventually(ms: u64, mut f: impl FnMut() -> bool) -> bool {
    let end = std::time::Instant::now() + std::time::Duration::from_millis(ms);
    while std::time::Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    f()
}

/// A profile file extending `default` with extra TOML.
pub fn profile_file(s: &Scratch, name: &str, body: &str) -> String {
    s.file(
        &format!("profiles/{name}.toml"),
        &format!("extends = \"default\"\n{body}{}", network_waiver(body)),
    )
    .to_string_lossy()
    .into_owned()
}

/// A test profile that sets its own network states that it widens the network promises of
/// the preset it extends (`[invariants]`, docs/proofs.md), unless it sets invariants itself.
pub fn network_waiver(body: &str) -> &'static str {
    if body.contains("[network]") && !body.contains("[invariants]") {
        "\n[invariants]\nnetwork = \"any\"\nnetwork_only = [\"*\"]\n"
    } else {
        ""
    }
}

/// A profile extending `base` whose monitor rules only log: for tests of the kernel layers,
/// whose hostile probes the default monitor would otherwise freeze at the first one.
pub fn log_only_profile(s: &Scratch, name: &str, base: &str, body: &str) -> String {
    let mut text = format!("extends = \"{base}\"\n{body}\n{}", network_waiver(body));
    for rule in [
        "sensitive_read",
        "sensitive_write",
        "egress",
        "exfiltration",
        "exec",
        "syscalls",
        "connects",
        "execs",
        "deletions",
        "deleted",
        "rewritten",
        "breadth",
        "secrets",
        "supply_chain",
        "denials",
        "repeated_denials",
        "processes",
        "written",
    ] {
        text.push_str(&format!("[monitor.{rule}]\nresponse = \"log\"\n"));
    }
    s.file(&format!("profiles/{name}.toml"), &text)
        .to_string_lossy()
        .into_owned()
}

/// The cgroup leaves cordon process `pid` created (they carry its pid in their name).
pub fn cgroup_leaves_of(pid: u32) -> Vec<PathBuf> {
    let prefix = format!("cordon-{pid}-");
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::from("/sys/fs/cgroup")];
    let mut budget = 20_000;
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            budget -= 1;
            if budget == 0 {
                return out;
            }
            let Ok(ft) = e.file_type() else { continue };
            if !ft.is_dir() {
                continue;
            }
            if e.file_name().to_string_lossy().starts_with(&prefix) {
                out.push(e.path());
            } else {
                stack.push(e.path());
            }
        }
    }
    out
}

/// A terminal for tests of interactive runs: cordon gets the slave as stdin/stdout/stderr.
pub struct TestPty {
    pub master: std::fs::File,
}

pub fn spawn_on_pty(mut c: Command) -> (std::process::Child, TestPty) {
    use std::os::fd::{FromRawFd, OwnedFd};
    let (mut m, mut s) = (0, 0);
    // SAFETY: openpty fills two descriptors; the optional arguments are null.
    let r = unsafe {
        libc::openpty(
            &mut m,
            &mut s,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(r, 0, "openpty");
    // SAFETY: openpty returned two new descriptors we now own.
    let (master, slave) = unsafe { (std::fs::File::from_raw_fd(m), OwnedFd::from_raw_fd(s)) };
    c.stdin(slave.try_clone().unwrap())
        .stdout(slave.try_clone().unwrap())
        .stderr(slave);
    let child = c.spawn().expect("spawn cordon on a pty");
    // SAFETY: making our own master non-blocking.
    unsafe { libc::fcntl(m, libc::F_SETFL, libc::O_NONBLOCK) };
    (child, TestPty { master })
}

impl TestPty {
    pub fn send(&mut self, s: &str) {
        use std::io::Write;
        self.master.write_all(s.as_bytes()).unwrap();
    }
    /// Read until `needle` shows up or `ms` pass; returns everything read.
    pub fn read_until(&mut self, needle: &str, ms: u64) -> String {
        String::from_utf8_lossy(&self.read_bytes_until(needle.as_bytes(), ms)).into_owned()
    }
    /// The bytes as they came: until `needle` shows up or `ms` pass.
    pub fn read_bytes_until(&mut self, needle: &[u8], ms: u64) -> Vec<u8> {
        use std::io::Read;
        let mut all = Vec::new();
        let end = std::time::Instant::now() + std::time::Duration::from_millis(ms);
        let mut buf = [0u8; 4096];
        while std::time::Instant::now() < end && !all.windows(needle.len()).any(|w| w == needle) {
            match self.master.read(&mut buf) {
                Ok(n) if n > 0 => all.extend_from_slice(&buf[..n]),
                _ => std::thread::sleep(std::time::Duration::from_millis(20)),
            }
        }
        all
    }
}

/// Wait for a child with a deadline; kill it and fail if it overruns.
pub fn wait_within(child: &mut std::process::Child, ms: u64) -> std::process::ExitStatus {
    let end = std::time::Instant::now() + std::time::Duration::from_millis(ms);
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        if std::time::Instant::now() > end {
            child.kill().ok();
            child.wait().ok();
            panic!("cordon did not finish within {ms} ms");
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// Start `sh -c SCRIPT` in `profile` with the workspace `ws` and wait until the script has
/// created the file `ready` there (so the sandbox is up); panics after 10 s.
pub fn spawn_until_ready(profile: &str, ws: &Path, script: &str) -> std::process::Child {
    let child = run_cmd(profile, ws, &["-q"], &["/bin/sh", "-c", script])
        .spawn()
        .expect("spawn cordon");
    assert!(
        eventually(10_000, || ws.join("ready").exists()),
        "the agent never started"
    );
    child
}

/// The id of the running sandbox whose `cordon ps` line holds `marker` (waits up to 10 s).
pub fn sandbox_id_of(marker: &str) -> String {
    let mut id = String::new();
    assert!(
        eventually(10_000, || {
            let mut ps = cordon_command();
            ps.arg("ps");
            let out = stdout(&output(ps));
            match out.lines().find(|l| l.contains(marker)) {
                Some(l) => {
                    id = l.split_whitespace().next().unwrap().to_string();
                    true
                }
                None => false,
            }
        }),
        "the sandbox running {marker} never appeared in `cordon ps`"
    );
    id
}

/// An HTTP server on the host's loopback answering every request with `body`, for `n`
/// connections (bounded), in a thread.
pub fn http_fixture(body: &'static str, n: usize) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in l.incoming().take(n) {
            let Ok(mut c) = conn else { continue };
            let _ = c.set_read_timeout(Some(std::time::Duration::from_secs(5)));
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                match c.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(k) => req.extend_from_slice(&buf[..k]),
                }
            }
            let _ = write!(
                c,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    port
}

/// `key<TAB>value` lines an agent script printed.
pub fn results(stdout: &str) -> std::collections::BTreeMap<String, String> {
    stdout
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The events of a `--events FILE` (JSON lines).
pub fn events_of(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .expect("events file")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .collect()
}

/// A CA at `ca` and a certificate it signed for `names` (`STEM.pem`, `STEM.key`), in `d`: for
/// HTTPS stand-ins of real services, reached by name through the proxy's `resolve`.
pub fn test_ca(d: &Path, ca: &str, names: &[&str], stem: &str) {
    let (key, csr, pem) = (
        format!("{stem}.key"),
        format!("{stem}.csr"),
        format!("{stem}.pem"),
    );
    let subj = format!("/CN={}", names[0]);
    let ca_req = [
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", ca,
    ];
    openssl(
        &[&ca_req[..], &["-days", "2", "-subj", "/CN=cordon test CA"]].concat(),
        d,
    );
    openssl(
        &[
            "req", "-newkey", "rsa:2048", "-nodes", "-keyout", &key, "-out", &csr, "-subj", &subj,
        ],
        d,
    );
    let alt: Vec<String> = names.iter().map(|n| format!("DNS:{n}")).collect();
    std::fs::write(d.join("ext.cnf"), format!("subjectAltName={}\n", alt.join(","))).unwrap();
    let sign = [
        "x509",
        "-req",
        "-in",
        &csr,
        "-CA",
        ca,
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        &pem,
    ];
    openssl(&[&sign[..], &["-days", "2", "-extfile", "ext.cnf"]].concat(), d);
}

pub fn openssl(args: &[&str], dir: &Path) {
    let st = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "openssl {args:?}");
}

/// tests/proxy/messages_standin.py (an HTTPS stand-in of the Messages API) on `addr`:443 with
/// `api.pem`/`api.key` from `dir`, answering `reply`; with `expect_key`, other keys get a 401.
/// Returns once it listens.
pub fn messages_stand_in(
    dir: &Path,
    addr: &str,
    reply: &str,
    expect_key: Option<&str>,
) -> std::process::Child {
    messages_stand_in_with(dir, addr, reply, expect_key, &[])
}

/// `messages_stand_in` with extra environment (`TOOL_COMMAND`: answer with a Bash tool call).
pub fn messages_stand_in_with(
    dir: &Path,
    addr: &str,
    reply: &str,
    expect_key: Option<&str>,
    env: &[(&str, &str)],
) -> std::process::Child {
    let mut c = Command::new("/usr/bin/python3");
    c.arg(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/proxy/messages_standin.py"
    ))
    .args(["api.pem", "api.key", addr, reply])
    .current_dir(dir)
    .stdout(Stdio::piped())
    .stderr(Stdio::null());
    if let Some(k) = expect_key {
        c.env("EXPECT_KEY", k);
    }
    c.envs(env.iter().copied());
    listening(c.spawn().unwrap())
}

/// Wait for a fixture server's first line, "listening" (its stdout piped).
pub fn listening(mut child: std::process::Child) -> std::process::Child {
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "listening");
    child
}

/// `cordon run -- ARGV` with no --profile picks `preset` for this agent and its start line says
/// so (the run itself is short: `--version` or a command that ends at once).
pub fn assert_picks_preset(ws: &Path, home: Option<&Path>, argv: &[&str], preset: &str) -> Output {
    let mut c = cordon_command();
    c.args(["run", "--workspace"]).arg(ws);
    if let Some(h) = home {
        c.arg("--home").arg(h);
    }
    c.arg("--").args(argv).stdin(Stdio::null());
    let out = output(c);
    let want = format!("profile {preset} (the preset for this agent; --profile overrides)");
    assert!(stderr(&out).contains(&want), "{}", stderr(&out));
    out
}

/// The real Claude Code from `scripts/setup`, run headless (`-p PROMPT --allowedTools Bash`)
/// under `profile` in `ws` with `key` as its API key; its model's stand-in `api` is stopped
/// when it ends. The run must succeed (its output is in the message otherwise).
pub fn run_claude(
    profile: &str,
    ws: &Path,
    extra: &[&str],
    prompt: &str,
    key: &str,
    mut api: std::process::Child,
) -> Output {
    let claude = Path::new("/opt/cordon-test-agents/node_modules/.bin/claude");
    assert!(claude.exists(), "scripts/setup installs Claude Code there");
    let mut c = run_cmd(
        profile,
        ws,
        extra,
        &[claude.to_str().unwrap(), "-p", prompt, "--allowedTools", "Bash"],
    );
    c.env("ANTHROPIC_API_KEY", key);
    let out = output(c);
    let _ = api.kill();
    let _ = api.wait();
    assert_eq!(out.status.code(), Some(0), "{}\n{}", stdout(&out), stderr(&out));
    out
}

/// A profile's `[network]` for a stand-in of the Anthropic API at `addr` (reached by name,
/// verified with the test CA `ca`) and the key in `ANTHROPIC_API_KEY` as a credential the
/// proxy adds: the agent holds a placeholder.
pub fn anthropic_stand_in(addr: &str, ca: &Path) -> String {
    format!(
        "[network]\nresolve = {{ \"api.anthropic.com\" = \"{addr}\" }}\nupstream_ca = \"{}\"\n\
         [[network.credential]]\nhost = \"api.anthropic.com\"\nheader = \"x-api-key\"\nsecret = \"env:ANTHROPIC_API_KEY\"\n",
        ca.display()
    )
}
