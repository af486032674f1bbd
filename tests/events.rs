//! The eBPF probes and the live event stream, against the real kernel: known actions give
//! exactly the expected events, egress is enforced per sandbox, nothing outside a sandbox is
//! recorded, two sandboxes are told apart, and a syscall storm is counted exactly.

mod common;

use common::*;
use serde_json::Value;
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::sync::RwLock;

/// Tests that look at host-wide probe state take this exclusively; the others share it.
static HOST_STATE: RwLock<()> = RwLock::new(());

fn shared() -> std::sync::RwLockReadGuard<'static, ()> {
    HOST_STATE.read().unwrap_or_else(|e| e.into_inner())
}

/// Processes with a sandbox slot file open (they may hold its lock), with their command.
fn slot_holders() -> Vec<String> {
    let mut found = Vec::new();
    for p in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(fds) = std::fs::read_dir(p.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let target = std::fs::read_link(fd.path()).unwrap_or_default();
            if target.starts_with("/run/cordon/slots") {
                let cmd = std::fs::read_to_string(p.path().join("cmdline")).unwrap_or_default();
                found.push(format!(
                    "{} {} {}",
                    p.file_name().to_string_lossy(),
                    target.display(),
                    cmd.replace('\0', " ")
                ));
            }
        }
    }
    found
}

/// Pins of the syscall tracepoints' links, of any cordon build.
/// The lingerers' own cgroups beneath ours (`cordon-PID-keep`), where they hold the probes'
/// cgroup hooks.
fn keep_cgroups() -> Vec<std::path::PathBuf> {
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let v2 = own
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .unwrap_or("/")
        .trim_start_matches('/');
    let root = ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
        .iter()
        .map(std::path::Path::new)
        .find(|r| r.join("cgroup.procs").exists() && r.join("cgroup.controllers").exists())
        .unwrap();
    let Ok(dir) = std::fs::read_dir(root.join(v2)) else {
        return Vec::new();
    };
    dir.flatten()
        .map(|e| e.path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            n.starts_with("cordon-") && n.ends_with("-keep")
        })
        .collect()
}

/// How many programs are attached to the cgroup `dir` at the kernel's attach type `ty`
/// (`BPF_PROG_QUERY`).
fn attached_programs(dir: &std::path::Path, ty: u32) -> u32 {
    use std::os::fd::AsRawFd;
    let cg = std::fs::File::open(dir).unwrap();
    #[repr(C)]
    #[derive(Default)]
    struct Query {
        target_fd: u32,
        attach_type: u32,
        query_flags: u32,
        attach_flags: u32,
        prog_ids: u64,
        prog_cnt: u32,
        _pad: [u32; 9],
    }
    let mut ids = [0u32; 8];
    let mut q = Query {
        target_fd: u32::try_from(cg.as_raw_fd()).unwrap(),
        attach_type: ty,
        prog_ids: ids.as_mut_ptr() as u64,
        prog_cnt: 8,
        ..Query::default()
    };
    const BPF_PROG_QUERY: libc::c_long = 16;
    // The attribute is a zero-padded bpf_attr query of its size; the kernel writes at most
    // `prog_cnt` ids into `ids`, which outlives the call.
    // SAFETY: as above: valid pointers and sizes for the duration of the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_QUERY,
            &mut q as *mut Query,
            std::mem::size_of::<Query>(),
        )
    };
    assert_eq!(
        r,
        0,
        "BPF_PROG_QUERY {}: {}",
        dir.display(),
        std::io::Error::last_os_error()
    );
    q.prog_cnt
}

fn syscall_link_pins() -> Vec<std::path::PathBuf> {
    let Ok(builds) = std::fs::read_dir("/sys/fs/bpf/cordon") else {
        return Vec::new();
    };
    let mut pins: Vec<std::path::PathBuf> = builds
        .flatten()
        .flat_map(|b| ["sys_enter", "sys_exit"].map(|n| b.path().join("links").join(n)))
        .filter(|p| p.exists())
        .collect();
    pins.sort();
    pins
}

/// (kind name, body) of an event.
fn kind(e: &Value) -> (&str, &Value) {
    event_kind(e).expect("one kind")
}

fn of_kind<'a>(events: &'a [Value], k: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| kind(e).0 == k).collect()
}

fn agent_pid(stdout: &str) -> u64 {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("pid "))
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("agent did not print its pid: {stdout}"))
}

const AGENT: &str = r#"
import os, socket, subprocess, sys
print("pid", os.getpid(), flush=True)
subprocess.run(["/bin/true"])
open("known.txt").read()
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5); s.close()
print("allowed ok", flush=True)
try:
    socket.create_connection(("127.0.0.1", int(sys.argv[2])), timeout=5)
    print("blocked connected")
except OSError as e:
    print("blocked errno", e.errno)
try:
    os.chmod("known.txt", 0o4755)
    print("chmod ok")
except OSError as e:
    print("chmod errno", e.errno)
os.rename("known.txt", "moved.txt")
subprocess.run(["/bin/echo", "a" * 200], stdout=subprocess.DEVNULL)
try:
    open("d" * 300)
except OSError as e:
    print("long errno", e.errno)
"#;

#[test]
fn known_actions_give_exactly_the_expected_events() {
    require_root();
    let _host = shared();
    let s = Scratch::new();
    s.file("known.txt", "hello\n");
    s.file("agent.py", AGENT);
    let allowed = TcpListener::bind("127.0.0.1:0").unwrap();
    let blocked = TcpListener::bind("127.0.0.1:0").unwrap();
    let (pa, pb) = (
        allowed.local_addr().unwrap().port(),
        blocked.local_addr().unwrap().port(),
    );
    // Refused egress is what is under test: the monitor (which would freeze on it) only logs.
    let prof = log_only_profile(
        &s,
        "egress",
        "default",
        &format!("[network]\nmode = \"allowlist\"\nallow = [\"127.0.0.1:{pa}\"]\n"),
    );
    let ev = s.path().join("events.jsonl");
    let out = output(run_cmd(
        &prof,
        s.path(),
        &["--events", ev.to_str().unwrap()],
        &["/usr/bin/python3", "agent.py", &pa.to_string(), &pb.to_string()],
    ));
    let so = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{so}\n{}", stderr(&out));
    assert!(so.contains("allowed ok"), "{so}");
    assert!(
        so.contains("blocked errno 1\n"),
        "the blocked connect must fail with EPERM: {so}"
    );
    assert!(so.contains("chmod errno 1\n"), "{so}");
    let pid = agent_pid(&so);
    let events = events_of(&ev);

    // Sequence numbers start at 1 and have no gaps; one sandbox id throughout.
    for (i, e) in events.iter().enumerate() {
        assert_eq!(uint(&e["seq"]), Some(i as u64 + 1), "{e}");
        assert_eq!(e["sandbox"], events[0]["sandbox"]);
    }
    assert_eq!(kind(&events[0]).1["phase"], "started");
    let last = kind(events.last().unwrap());
    assert_eq!(
        (last.0, last.1["phase"].as_str(), last.1["exitCode"].as_i64()),
        ("lifecycle", Some("exited"), Some(0))
    );

    // exec of /bin/true by a child of the agent, with its argv and ancestry.
    let execs: Vec<_> = of_kind(&events, "exec")
        .into_iter()
        .filter(|e| kind(e).1["filename"] == "/bin/true")
        .collect();
    assert_eq!(execs.len(), 1, "{execs:?}");
    assert_eq!(kind(execs[0]).1["argv"], serde_json::json!(["/bin/true"]));
    assert_eq!(execs[0]["ancestry"][0].as_u64(), Some(pid), "{}", execs[0]);

    // The open of the known file, by the agent, succeeded.
    let opens: Vec<_> = of_kind(&events, "syscall")
        .into_iter()
        .filter(|e| kind(e).1["path"] == "known.txt" && kind(e).1["name"] == "openat")
        .collect();
    assert_eq!(opens.len(), 1, "{opens:?}");
    assert_eq!(opens[0]["pid"].as_u64(), Some(pid));
    assert!(int(&kind(opens[0]).1["ret"]).unwrap() >= 0, "{}", opens[0]);

    // One allowed and one blocked connect, with the rule that allowed the first.
    let conns: Vec<_> = of_kind(&events, "net")
        .into_iter()
        .filter(|e| kind(e).1["op"] == "connect")
        .collect();
    assert_eq!(conns.len(), 2, "{conns:?}");
    let c = |e: &Value| {
        let n = kind(e).1;
        (
            n["ip"].as_str().unwrap().to_string(),
            n["port"].as_u64().unwrap(),
            n["allowed"].as_bool().unwrap(),
        )
    };
    assert_eq!(c(conns[0]), ("127.0.0.1".into(), u64::from(pa), true));
    assert_eq!(kind(conns[0]).1["rule"], format!("127.0.0.1/32:{pa}"));
    assert_eq!(c(conns[1]), ("127.0.0.1".into(), u64::from(pb), false));
    assert!(conns.iter().all(|e| e["pid"].as_u64() == Some(pid)));
    // The blocked connect is also a denied syscall with the address.
    assert!(of_kind(&events, "syscall").iter().any(|e| {
        let s = kind(e).1;
        s["name"] == "connect"
            && s["denied"] == true
            && s["errno"] == "EPERM"
            && s["addr"]["port"] == u64::from(pb)
    }));

    // The setuid chmod was refused by seccomp before sys_enter: recorded at exit, whole.
    let chmods: Vec<_> = of_kind(&events, "syscall")
        .into_iter()
        .filter(|e| kind(e).1["path"] == "known.txt" && kind(e).1["name"].as_str().unwrap().contains("chmod"))
        .collect();
    assert_eq!(chmods.len(), 1, "{chmods:?}");
    let ch = kind(chmods[0]).1;
    assert_eq!(
        (ch["errno"].as_str(), ch["denied"].as_bool()),
        (Some("EPERM"), Some(true))
    );
    assert_eq!(chmods[0]["pid"].as_u64(), Some(pid));

    // A record holds only the bytes it uses (the second path right after the first): the
    // rename has both; a path longer than the record's 256 bytes is cut there and said so.
    assert!(so.contains("long errno 36\n"), "{so}");
    let renames: Vec<_> = of_kind(&events, "syscall")
        .into_iter()
        .filter(|e| kind(e).1["name"].as_str().unwrap().starts_with("rename"))
        .map(|e| {
            let s = kind(e).1;
            (s["path"].as_str(), s["path2"].as_str(), s["truncated"].as_bool())
        })
        .collect();
    assert_eq!(renames, vec![(Some("known.txt"), Some("moved.txt"), Some(false))]);
    let long: Vec<_> = of_kind(&events, "syscall")
        .into_iter()
        .filter(|e| kind(e).1["path"].as_str().unwrap().starts_with("ddd"))
        .map(|e| {
            let s = kind(e).1;
            (
                s["path"].as_str().unwrap().len(),
                s["truncated"].as_bool(),
                s["errno"].as_str(),
            )
        })
        .collect();
    assert_eq!(long, vec![(255, Some(true), Some("ENAMETOOLONG"))]);
    // An argument longer than its 128-byte piece is cut there, and the event says so.
    let echo: Vec<_> = of_kind(&events, "syscall")
        .into_iter()
        .filter(|e| kind(e).1["name"] == "execve" && kind(e).1["path"] == "/bin/echo")
        .map(|e| {
            let s = kind(e).1;
            (s["argv"][1].as_str().map(str::len), s["truncated"].as_bool())
        })
        .collect();
    assert_eq!(echo, vec![(Some(127), Some(true))]);

    // Every process event comes from inside the sandbox's pid namespace.
    assert!(events
        .iter()
        .filter(|e| e["hostPid"].as_u64() != Some(0))
        .all(|e| e["pid"].as_u64().unwrap() > 0 && e["pid"].as_u64() != e["hostPid"].as_u64()));
}

/// The run ends as soon as the agent has and nothing else runs (cordon does not wait for its
/// init's namespaces to be torn down); a process the agent left running keeps that from
/// happening: it is killed with the sandbox and its end is recorded before the seal.
#[test]
fn a_process_the_agent_leaves_behind_is_killed_and_recorded() {
    require_root();
    let _host = shared();
    let s = Scratch::new();
    let ev = s.path().join("events.jsonl");
    let started = std::time::Instant::now();
    let out = output(run_cmd(
        "default",
        s.path(),
        &["-q", "--events", ev.to_str().unwrap()],
        &["/bin/sh", "-c", "sleep 30 & echo left $!; exit 7"],
    ));
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
    let left: u64 = stdout(&out)
        .trim()
        .strip_prefix("left ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{}", stdout(&out)));
    let events = events_of(&ev);
    let exit_of = |pid: u64| {
        events
            .iter()
            .find(|e| e["pid"].as_u64() == Some(pid) && event_kind(e).is_some_and(|(k, _)| k == "exit"))
            .map(|e| e["exit"].clone())
    };
    let sleep = exit_of(left).unwrap_or_else(|| panic!("no exit of the left process {left}"));
    assert_eq!(sleep["signal"].as_i64(), Some(9), "{sleep}");
    let last = kind(events.last().unwrap());
    assert_eq!(
        (last.0, last.1["phase"].as_str(), last.1["exitCode"].as_i64()),
        ("lifecycle", Some("exited"), Some(7))
    );
    // Nothing was recorded after the seal: every event is in the trace, numbered without gaps.
    for (i, e) in events.iter().enumerate() {
        assert_eq!(uint(&e["seq"]), Some(i as u64 + 1), "{e}");
    }
}

#[test]
fn an_allowlist_rule_for_udp_does_not_open_tcp() {
    require_root();
    let _host = shared();
    let s = Scratch::new();
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let (pt, pu) = (tcp.local_addr().unwrap().port(), udp.local_addr().unwrap().port());
    // Refused egress is what is under test: the monitor (which would freeze on it) only logs.
    let prof = log_only_profile(
        &s,
        "udp-only",
        "default",
        &format!(
            "[network]\nmode = \"allowlist\"\nallow = [\"127.0.0.1:{pt}/udp\", \"127.0.0.1:{pu}/udp\"]\n"
        ),
    );
    let script = format!(
        "import socket\n\
         try:\n    socket.create_connection(('127.0.0.1', {pt}), timeout=5); print('tcp connected')\n\
         except OSError as e:\n    print('tcp errno', e.errno)\n\
         u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         print('udp sent', u.sendto(b'x', ('127.0.0.1', {pu})))\n"
    );
    let out = output(run_cmd(
        &prof,
        s.path(),
        &["-q"],
        &["/usr/bin/python3", "-c", &script],
    ));
    let so = stdout(&out);
    assert!(
        so.contains("tcp errno 1\n"),
        "TCP to a UDP-only rule must fail with EPERM: {so}"
    );
    assert!(so.contains("udp sent 1\n"), "{so}\n{}", stderr(&out));
    let mut buf = [0u8; 4];
    udp.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    assert_eq!(
        udp.recv(&mut buf).unwrap(),
        1,
        "the datagram reached the host listener"
    );
}

/// A sandbox that opens `marker` files for a while, recording to `ev`.
fn marker_run(s: &Scratch, marker: &str, ev: &Path) -> std::process::Child {
    run_cmd(
        "default",
        s.path(),
        &["-q", "--events", ev.to_str().unwrap()],
        &[
            "/bin/sh",
            "-c",
            &format!("for i in 1 2 3 4 5 6 7 8 9 10; do cat {marker}-$i 2>/dev/null; sleep 0.05; done"),
        ],
    )
    .spawn()
    .unwrap()
}

#[test]
fn two_sandboxes_are_told_apart_and_the_host_is_not_recorded() {
    require_root();
    let _host = shared();
    let (a, b) = (Scratch::new(), Scratch::new());
    let (ea, eb) = (a.path().join("a.jsonl"), b.path().join("b.jsonl"));
    let mut ra = marker_run(&a, "marker-aaa", &ea);
    let mut rb = marker_run(&b, "marker-bbb", &eb);
    // Meanwhile the host opens its own marker files.
    let host = Command::new("/bin/sh")
        .args([
            "-c",
            "for i in 1 2 3 4 5 6 7 8 9 10; do cat /tmp/marker-host-$i 2>/dev/null; sleep 0.05; done",
        ])
        .status()
        .unwrap();
    assert!(host.success());
    assert!(ra.wait().unwrap().success() && rb.wait().unwrap().success());
    let (va, vb) = (events_of(&ea), events_of(&eb));
    let opens = |v: &[Value], m: &str| {
        of_kind(v, "syscall")
            .iter()
            .filter(|e| kind(e).1["path"].as_str().unwrap().starts_with(m))
            .count()
    };
    assert_eq!(opens(&va, "marker-aaa-"), 10, "all ten opens of sandbox a");
    assert_eq!(opens(&vb, "marker-bbb-"), 10, "all ten opens of sandbox b");
    let text = |v: &[Value]| v.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n");
    let (ta, tb) = (text(&va), text(&vb));
    assert!(
        !ta.contains("marker-bbb") && !tb.contains("marker-aaa"),
        "sandboxes mixed up"
    );
    assert!(
        !ta.contains("marker-host") && !tb.contains("marker-host"),
        "host activity recorded"
    );
    assert_ne!(va[0]["sandbox"], vb[0]["sandbox"]);
}

#[test]
fn a_syscall_storm_is_counted_exactly() {
    require_root();
    let _host = shared();
    let s = Scratch::new();
    let src = s.file(
        "storm.c",
        "#include <unistd.h>\n#include <sys/syscall.h>\nint main(void){for(long i=0;i<10000000;i++)syscall(SYS_getppid);return 0;}\n",
    );
    let bin = s.path().join("storm");
    let st = Command::new("gcc")
        .args(["-O2", "-o"])
        .arg(&bin)
        .arg(&src)
        .status()
        .unwrap();
    assert!(st.success());
    let ev = s.path().join("storm.jsonl");
    let out = output(run_cmd(
        "default",
        s.path(),
        &["-q", "--events", ev.to_str().unwrap()],
        &["./storm"],
    ));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let events = events_of(&ev);
    let last_counts = of_kind(&events, "counts")
        .into_iter()
        .rfind(|e| kind(e).1["last"] == true)
        .expect("final counts");
    let counts = kind(last_counts).1;
    // Counts live in per-CPU kernel maps: none are lost, so the count is exact.
    assert_eq!(uint(&counts["counts"]["getppid"]), Some(10_000_000), "{counts}");
    let kernel_losses: u64 = of_kind(&events, "loss")
        .iter()
        .filter(|e| kind(e).1["source"] == "kernel")
        .map(|e| uint(&kind(e).1["count"]).unwrap())
        .sum();
    assert_eq!(kernel_losses, 0, "getppid is only counted, never recorded");
}

#[test]
fn running_sandboxes_are_listed_and_tailed() {
    require_root();
    let _host = shared();
    let s = Scratch::new();
    // Ready once the file was opened; its event reaches the stream within a drain tick.
    let run = Killed(spawn_until_ready(
        "default",
        s.path(),
        "cat /etc/hostname; touch ready; sleep 30",
    ));
    let run = &run.0;
    let ps = output({
        let mut c = cordon_command();
        c.arg("ps");
        c
    });
    let listing = stdout(&ps);
    let line = listing
        .lines()
        .find(|l| l.contains(&run.id().to_string()))
        .unwrap_or_else(|| panic!("cordon ps does not list our run: {listing}"));
    assert!(line.contains("default") && line.contains("sleep 30"), "{line}");
    let id = line.split_whitespace().next().unwrap().to_string();
    let tail = || {
        output({
            let mut c = cordon_command();
            c.args(["events", "--format", "json", "--kind", "file", &id[..6]]);
            c
        })
    };
    let mut last = tail();
    eventually(5_000, || {
        last = tail();
        stdout(&last).contains("\"/etc/hostname\"")
    });
    let text = stdout(&last);
    assert!(last.status.success(), "{}", stderr(&last));
    assert!(text.contains("\"/etc/hostname\""), "{text}");
    assert!(
        text.lines().all(|l| l.contains("\"syscall\":")),
        "--kind file shows only syscalls on paths: {text}"
    );
    let human = output({
        let mut c = cordon_command();
        c.args(["events", "--kind", "exec", &id]);
        c
    });
    assert!(
        stdout(&human).contains("exec       /usr/bin/cat"),
        "{}",
        stdout(&human)
    );
}

/// A cordon ended (SIGKILL) however the test ends, so a failed assertion leaves no sandbox
/// holding a slot for the tests after it.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_recording_threads_run_above_the_sandbox_they_watch() {
    require_root();
    let _host = shared();
    let s = Scratch::new();
    let run = Killed(spawn_until_ready("default", s.path(), "touch ready; sleep 29.25"));
    let pid = run.0.id();
    let main = nice_of(Path::new(&format!("/proc/{pid}/stat")));
    let mut seen = Vec::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap().flatten() {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap();
        let comm = comm.trim();
        if comm == "cordon-events" || comm == "cordon-trace" {
            // Five nice steps above the rest of cordon: a busy agent on a saturated host
            // cannot outrun them into the ring buffer's drops.
            assert_eq!(nice_of(&t.path().join("stat")), (main - 5).max(-20), "{comm}");
            seen.push(comm.to_string());
        }
    }
    seen.sort();
    assert_eq!(seen, ["cordon-events", "cordon-trace"]);
    // The sandbox (init, the shell, its sleep) keeps cordon's own nice: only the recorder is
    // favoured, never the agent.
    let sandbox: Vec<i32> = host_pids_with("sleep 29.25")
        .into_iter()
        .filter(|p| *p != i32::try_from(pid).unwrap())
        .collect();
    assert!(sandbox.len() >= 2, "init and the agent: {sandbox:?}");
    for p in sandbox {
        assert_eq!(nice_of(Path::new(&format!("/proc/{p}/stat"))), main, "pid {p}");
    }
}

#[test]
fn unmonitored_runs_are_asked_for_and_recorded_as_such() {
    require_root();
    let _host = shared();
    let s = Scratch::new();
    let ev = s.path().join("e.jsonl");
    let out = output(run_cmd(
        "default",
        s.path(),
        &["--no-probes", "--events", ev.to_str().unwrap()],
        &["/bin/true"],
    ));
    assert_eq!(out.status.code(), Some(0));
    assert!(stderr(&out).contains("NOT monitored"), "{}", stderr(&out));
    let events = events_of(&ev);
    assert_eq!(events.len(), 1);
    assert_eq!(kind(&events[0]).1["phase"], "unmonitored");
    // An allowlist cannot be enforced without the probes: refused, nothing runs.
    let out = output(run_cmd(
        "ip-allowlist",
        s.path(),
        &["--no-probes"],
        &["/bin/touch", "ran"],
    ));
    assert_eq!(out.status.code(), Some(125));
    assert!(stderr(&out).contains("--no-probes turns off"), "{}", stderr(&out));
    assert!(!s.path().join("ran").exists());
}

#[test]
fn syscall_tracepoints_are_attached_only_while_a_sandbox_is_watched() {
    require_root();
    let _host = HOST_STATE.write().unwrap_or_else(|e| e.into_inner());
    let s = Scratch::new();
    // A lingerer started outside the tests may keep the hooks warm for minutes: end it.
    cool();
    // Sandboxes that ended just before (other tests) keep them attached for `LINGER` (2 s).
    let _ = eventually(5_000, || syscall_link_pins().is_empty());
    // Another cordon build on this host (a developer's, a benchmark's) pins its own links in
    // its own directory: only what this run adds and removes is this build's.
    let before = syscall_link_pins();
    let mut run = spawn_until_ready(
        "default",
        s.path(),
        "touch ready; i=0; while [ ! -e stop ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done",
    );
    let added: Vec<std::path::PathBuf> = syscall_link_pins()
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect();
    std::fs::write(s.path().join("stop"), "").unwrap();
    let status = wait_within(&mut run, 15_000);
    assert!(status.success(), "{status:?}");
    assert_eq!(
        added.len(),
        2,
        "sys_enter and sys_exit are attached while a sandbox runs: {added:?} (already there: {before:?})"
    );
    // They linger a moment (a next launch need not attach them again)…
    assert_eq!(
        syscall_link_pins().len(),
        before.len() + 2,
        "attached for 2 s after the last sandbox ends"
    );
    // …and so do the cgroup hooks, held by the lingerer on an empty cgroup of its own (a next
    // launch's attach and detach do not switch the kernel's cgroup-BPF keys).
    const BPF_CGROUP_INET4_CONNECT: u32 = 10;
    let keep = keep_cgroups();
    assert!(
        eventually(2_000, || keep_cgroups()
            .iter()
            .any(|k| attached_programs(k, BPF_CGROUP_INET4_CONNECT) == 1)),
        "no lingerer's cgroup holds the connect4 hook: {keep:?}"
    );
    // …then, the last sandbox gone, every process on the host is off the slow syscall path
    // again (as far as this build goes).
    assert!(
        eventually(6_000, || syscall_link_pins() == before),
        "still attached: {:?}; slot files open in: {:?}",
        syscall_link_pins(),
        slot_holders()
    );
    assert!(
        eventually(3_000, || keep_cgroups().is_empty()),
        "the lingerer's cgroup is still there: {:?}; slot files open in: {:?}",
        keep_cgroups(),
        slot_holders()
    );
}

/// `cordon probes cool`: no lingerer runs after it.
fn cool() -> String {
    let out = output({
        let mut c = cordon_command();
        c.args(["probes", "cool"]);
        c
    });
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(lingerers().is_empty(), "still running: {:?}", lingerers());
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Running `cordon probes linger` processes: (pid, command line).
fn lingerers() -> Vec<(u32, String)> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|p| {
            let pid: u32 = p.file_name().to_str()?.parse().ok()?;
            let cmd = std::fs::read(p.path().join("cmdline")).ok()?;
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            cmd.contains(" probes linger ").then_some((pid, cmd))
        })
        .collect()
}

/// kB of a process's memory locked (VmLck in /proc/PID/status).
fn locked_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmLck:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn the_lingerer_keeps_hooks_and_code_warm_for_the_time_asked_then_cools_on_request() {
    require_root();
    let _host = HOST_STATE.write().unwrap_or_else(|e| e.into_inner());
    let s = Scratch::new();
    cool();
    let before = syscall_link_pins();
    let mut c = run_cmd("default", s.path(), &["-q"], &["/bin/true"]);
    c.env("CORDON_KEEP_WARM", "30");
    c.env("LINGER_TEST_API_KEY", "sk-lingerer-must-not-keep-this");
    let out = output(c);
    assert!(out.status.success(), "{}", stderr(&out));
    // The sandbox that ended started it, asked to stay 30 s.
    assert!(
        eventually(3_000, || lingerers()
            .iter()
            .any(|(_, cmd)| cmd.contains("--hold 30 "))),
        "no lingerer with the hold asked: {:?}",
        lingerers()
    );
    let (pid, _) = lingerers()
        .into_iter()
        .find(|(_, cmd)| cmd.contains("--hold 30 "))
        .unwrap();
    // It was spawned by the run's recording thread (5 nice steps up) but starts at the run's
    // own nice, the test's.
    assert_eq!(
        nice_of(Path::new(&format!("/proc/{pid}/stat"))),
        nice_of(Path::new("/proc/self/stat"))
    );
    // It lives for minutes: it keeps none of the run's environment (an agent's keys).
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    assert!(
        !String::from_utf8_lossy(&environ).contains("sk-lingerer-must-not-keep-this"),
        "the lingerer holds the run's environment"
    );
    // cordon's code is held in memory (a release build: ~9.5 MiB; this test's debug build more).
    assert!(
        eventually(3_000, || locked_kib(pid) > 1024),
        "the lingerer locked {} kB",
        locked_kib(pid)
    );
    // The syscall tracepoints go after 2 s as before (every process on the host pays them)…
    assert!(
        eventually(6_000, || syscall_link_pins() == before),
        "still attached: {:?}",
        syscall_link_pins()
    );
    // …while the cgroup hooks stay on the lingerer's empty cgroup, past that.
    std::thread::sleep(std::time::Duration::from_millis(1_000));
    const BPF_CGROUP_INET4_CONNECT: u32 = 10;
    assert!(
        keep_cgroups()
            .iter()
            .any(|k| attached_programs(k, BPF_CGROUP_INET4_CONNECT) == 1),
        "the hooks were let go before the hold: {:?}",
        keep_cgroups()
    );
    assert!(
        lingerers().iter().any(|(p, _)| *p == pid),
        "the lingerer left early"
    );
    // Asked to cool, it lets everything go and removes its cgroup.
    let said = cool();
    assert!(said.contains(&format!("lingerer {pid} stopped")), "{said}");
    assert!(
        keep_cgroups().is_empty(),
        "its cgroup is left: {:?}",
        keep_cgroups()
    );
    assert_eq!(cool().trim(), "no lingerer runs");
}

#[test]
fn a_keep_warm_that_is_not_whole_seconds_is_refused_before_anything_runs() {
    require_root();
    let _g = shared();
    let s = Scratch::new();
    let mut c = run_cmd("default", s.path(), &["-q"], &["/bin/touch", "ran"]);
    c.env("CORDON_KEEP_WARM", "10m");
    let out = output(c);
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("CORDON_KEEP_WARM=\"10m\": expected whole seconds"),
        "{}",
        stderr(&out)
    );
    assert!(!s.path().join("ran").exists());
}

const TALKER: &str = r#"
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5)
s.sendall(b"y" * 100000); s.shutdown(socket.SHUT_WR)
got = 0
while True:
    d = s.recv(65536)
    if not d: break
    got += len(d)
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.sendto(b"z" * 500, ("127.0.0.1", int(sys.argv[2])))
print("got", got, flush=True)
"#;

#[test]
fn traffic_is_counted_per_remote() {
    require_root();
    let _host = shared();
    let s = Scratch::new();
    s.file("talker.py", TALKER);
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let (pt, pu) = (tcp.local_addr().unwrap().port(), udp.local_addr().unwrap().port());
    let server = std::thread::spawn(move || {
        use std::io::{Read, Write};
        let (mut c, _) = tcp.accept().unwrap();
        let mut all = Vec::new();
        c.read_to_end(&mut all).unwrap();
        c.write_all(&[b'x'; 1000]).unwrap();
        all.len()
    });
    let prof = profile_file(
        &s,
        "talk",
        &format!(
            "[network]\nmode = \"allowlist\"\nallow = [\"127.0.0.1:{pt}/tcp\", \"127.0.0.1:{pu}/udp\"]\n"
        ),
    );
    let ev = s.path().join("events.jsonl");
    let out = output(run_cmd(
        &prof,
        s.path(),
        &["--events", ev.to_str().unwrap()],
        &["/usr/bin/python3", "talker.py", &pt.to_string(), &pu.to_string()],
    ));
    assert!(
        stdout(&out).contains("got 1000"),
        "{}\n{}",
        stdout(&out),
        stderr(&out)
    );
    assert_eq!(server.join().unwrap(), 100_000);
    let events = events_of(&ev);
    let last = of_kind(&events, "traffic")
        .into_iter()
        .map(|e| kind(e).1)
        .find(|t| t["last"] == true)
        .expect("a final traffic summary");
    let remote = |port: u16, proto: &str| {
        last["remotes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["ip"] == "127.0.0.1" && r["port"] == port && r["protocol"] == proto)
            .unwrap_or_else(|| panic!("no {proto} remote on port {port}: {last}"))
            .clone()
    };
    let u = remote(pu, "udp");
    // One datagram: 500 bytes of payload, 8 of UDP header, 20 of IPv4 header.
    assert_eq!(
        (uint(&u["bytesOut"]), uint(&u["packetsOut"])),
        (Some(528), Some(1)),
        "{u}"
    );
    let t = remote(pt, "tcp");
    let (bytes, packets) = (uint(&t["bytesOut"]).unwrap(), uint(&t["packetsOut"]).unwrap());
    // The payload plus at most 80 bytes of IP and TCP headers per packet.
    assert!((100_000..=100_000 + 80 * packets).contains(&bytes), "{t}");
    let (bytes_in, packets_in) = (uint(&t["bytesIn"]).unwrap(), uint(&t["packetsIn"]).unwrap());
    assert!((1000..=1000 + 80 * packets_in).contains(&bytes_in), "{t}");
    assert_eq!(uint(&last["untrackedPackets"]), Some(0));
}

/// A kernel without the bpf() syscall, as seen by one process: a preloaded `syscall()` that
/// fails `SYS_bpf` with ENOSYS, which is what such a kernel returns.
const NO_BPF: &str = r#"
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdarg.h>
#include <sys/syscall.h>
long syscall(long nr, ...) {
    va_list ap; va_start(ap, nr);
    long a[6]; for (int i = 0; i < 6; i++) a[i] = va_arg(ap, long);
    va_end(ap);
    if (nr == SYS_bpf) { errno = ENOSYS; return -1; }
    static long (*real)(long, ...);
    if (!real) real = dlsym(RTLD_NEXT, "syscall");
    return real(nr, a[0], a[1], a[2], a[3], a[4], a[5]);
}
"#;

#[test]
fn probes_that_cannot_load_stop_the_run_naming_the_missing_feature() {
    require_root();
    let _host = shared();
    let s = Scratch::new();
    s.file("nobpf.c", NO_BPF);
    let cc = Command::new("gcc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(s.path().join("nobpf.so"))
        .arg(s.path().join("nobpf.c"))
        .arg("-ldl")
        .status()
        .expect("a C compiler");
    assert!(cc.success());
    let mut c = run_cmd("default", s.path(), &[], &["/bin/sh", "-c", "touch ran"]);
    c.env("LD_PRELOAD", s.path().join("nobpf.so"));
    let out = output(c);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(125), "{err}");
    assert!(
        err.contains("eBPF probes") && err.contains("no bpf() system call") && err.contains("--no-probes"),
        "{err}"
    );
    assert_eq!(err.matches("no bpf() system call").count(), 1, "said once: {err}");
    assert!(!s.path().join("ran").exists(), "no agent may run unmonitored");
}
