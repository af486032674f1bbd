//! The kernel side of `network.mode = "proxy"`, against the real kernel, through the library
//! (no profile syntax for the mode yet): a sandbox in its own network namespace (`loopback`)
//! whose probes are switched to `netmode::PROXY` by `Watch::proxy`. The test plays the
//! supervisor: before release it listens inside the sandbox's namespace (TCP on 0.0.0.0:P,
//! DNS on 127.0.0.1:53), decodes each accepted connection's original destination from its
//! addresses alone and writes it back, and answers every DNS query with 203.0.113.99. The
//! agent (`tests/proxy/agent.py`) reports what it saw. Nothing leaves the sandbox's namespace:
//! this proxy never connects upstream.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, TcpListener, UdpSocket};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use common::*;
use cordon::events::pb::{event::Kind, Network};
use cordon::launch::{Observer, Sandbox};
use cordon::probes::{Probes, Watch};
use cordon_probe_common::proxy;

/// What every DNS query is answered with.
const ANSWER: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 99);

/// The test's supervisor side: the probes' watch and the proxy's two sockets, served on a
/// thread that also drains the sandbox's ring buffer into events.
struct ProxyObserver {
    probes: Option<Probes>,
    rules: cordon::probes::NetRules,
    /// The agent finds the listener's port here (`proxy_port`).
    workspace: std::path::PathBuf,
    /// Give the probes port 0 (the listener exists all the same).
    port_zero: bool,
    stop: Arc<AtomicBool>,
    server: Option<JoinHandle<Vec<Network>>>,
}

/// The listener and the DNS socket, created inside the sandbox's network namespace: a
/// thread `setns`'s into it and binds (a socket keeps the namespace it was created in).
fn sockets_in(pid: libc::pid_t) -> std::io::Result<(TcpListener, UdpSocket)> {
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/net"))?;
    std::thread::scope(|s| {
        s.spawn(|| {
            nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(std::io::Error::from)?;
            // lo is brought up by the sandbox's init after release; 127.0.0.1 exists only once
            // it is up (the kernel adds it then), so the DNS socket needs it up now.
            let probe = UdpSocket::bind("0.0.0.0:0")?;
            cordon::sys::interface_up(&probe, b"lo")?;
            let listener = TcpListener::bind("0.0.0.0:0")?;
            let dns = UdpSocket::bind("127.0.0.1:53")?;
            Ok((listener, dns))
        })
        .join()
        .expect("setns thread")
    })
}

fn dns_reply(q: &[u8]) -> Option<Vec<u8>> {
    // Header (12 bytes), then the question: labels up to a zero byte, type, class.
    let mut i = 12;
    while *q.get(i)? != 0 {
        i += 1 + usize::from(q[i]);
    }
    let end = i + 5;
    let qtype = u16::from_be_bytes([*q.get(i + 1)?, *q.get(i + 2)?]);
    let a = qtype == 1;
    let mut r = Vec::from(&q[..2]);
    r.extend_from_slice(&[0x81, 0x80, 0, 1, 0, u8::from(a), 0, 0, 0, 0]);
    r.extend_from_slice(q.get(12..end)?);
    if a {
        r.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
        r.extend_from_slice(&ANSWER.octets());
    }
    Some(r)
}

/// Serve until `stop`: each accepted connection gets the destination decoded from its
/// addresses as one line; each DNS query an answer. The sandbox's network events are
/// decoded on the way.
fn serve(listener: TcpListener, dns: UdpSocket, mut watch: Watch, stop: Arc<AtomicBool>) -> Vec<Network> {
    listener.set_nonblocking(true).unwrap();
    dns.set_nonblocking(true).unwrap();
    let mut decoder = cordon::events::decode::Decoder::new("proxy-test", 0, |_| String::new(), vec![]);
    let mut events = Vec::new();
    let mut nets = Vec::new();
    let mut buf = [0u8; 512];
    loop {
        let stopping = stop.load(Ordering::SeqCst);
        let mut idle = true;
        if let Ok((mut conn, peer)) = listener.accept() {
            idle = false;
            let local = conn.local_addr().unwrap();
            let line = match (local.ip(), peer.ip()) {
                (IpAddr::V4(l), IpAddr::V4(p)) => match proxy::decode(l.octets(), p.octets()) {
                    Some((dst, port)) => format!("{}:{port}", Ipv4Addr::from(dst)),
                    None => format!("direct {peer}"),
                },
                _ => format!("not ipv4 {local} {peer}"),
            };
            let _ = conn.set_nonblocking(false);
            let _ = writeln!(conn, "{line}");
        }
        if let Ok((n, from)) = dns.recv_from(&mut buf) {
            idle = false;
            if let Some(r) = dns_reply(&buf[..n]) {
                let _ = dns.send_to(&r, from);
            }
        }
        while let Some(rec) = watch.ring.next() {
            idle = false;
            decoder.record(rec, &mut events);
        }
        decoder.flush(&mut events);
        nets.extend(events.drain(..).filter_map(|e| match e.kind {
            Some(Kind::Net(n)) => Some(n),
            _ => None,
        }));
        if stopping && idle {
            return nets;
        }
        if idle {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

impl Observer for ProxyObserver {
    fn attach(&mut self, sb: &Sandbox<'_>) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let probes = self.probes.take().expect("attached once");
        let mut watch = cordon::session::watch(probes, sb, self.rules.clone(), Default::default())?;
        let (listener, dns) = sockets_in(sb.pid)?;
        let port = listener.local_addr()?.port();
        std::fs::write(self.workspace.join("proxy_port"), port.to_string())?;
        // ORDER: the agent is released after attach returns, with its egress already sent to
        // the listener.
        watch.proxy(if self.port_zero { 0 } else { port })?;
        let stop = self.stop.clone();
        self.server = Some(std::thread::spawn(move || serve(listener, dns, watch, stop)));
        Ok(())
    }
}

fn policy_for(ws: &std::path::Path) -> cordon::policy::Policy {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("proxy-test.toml");
    std::fs::write(&file, "extends = \"default\"\n\n[network]\nmode = \"loopback\"\n").unwrap();
    let profile = cordon::profile::load(file.to_str().unwrap()).expect("profile");
    let id = cordon::identity::Identity::detect(None);
    let (agent_uid, agent_gid) = id.agent_ids();
    let ctx = cordon::policy::Context {
        workspace: ws.canonicalize().unwrap(),
        home: id.home.clone(),
        owner_uid: id.owner_uid,
        owner_gid: id.owner_gid,
        agent_uid,
        agent_gid,
    };
    let env = BTreeMap::from([("PATH".to_string(), "/usr/bin:/bin".to_string())]);
    cordon::policy::compile(&profile, &ctx, &env).expect("compile")
}

/// Run `agent.py ARGS` in a fresh sandbox of `loopback` mode switched to the proxy; its
/// results and the sandbox's network events.
fn run_agent(args: &[&str], port_zero: bool) -> Run {
    let s = Scratch::new();
    s.file("agent.py", include_str!("proxy/agent.py"));
    let policy = policy_for(s.path());
    // A loopback sandbox whose watch starts in proxy mode with no port yet (all egress
    // refused), as the session starts a `proxy` one: the reply-side hooks are attached to
    // proxy-mode watches only.
    let mut rules = cordon::probes::net_rules(&policy.network);
    rules.policy.mode = cordon_probe_common::netmode::PROXY;
    let mut observer = ProxyObserver {
        probes: Some(Probes::ready().expect("probes")),
        rules,
        workspace: policy.context.workspace.clone(),
        port_zero,
        stop: Arc::new(AtomicBool::new(false)),
        server: None,
    };
    let mut command = vec!["/usr/bin/python3".to_string(), "agent.py".to_string()];
    command.extend(args.iter().map(|a| a.to_string()));
    let outcome = cordon::launch::run(
        &policy,
        cordon::launch::Options {
            sandbox_id: format!("proxy-test-{}-{}", std::process::id(), args.join("-")),
            command,
            interactive: false,
            layer: None,
            desk: None,
        },
        &mut observer,
    )
    .expect("launch");
    observer.stop.store(true, Ordering::SeqCst);
    let nets = observer.server.take().expect("attached").join().expect("server");
    assert_eq!(outcome.exit_code, 0, "agent failed: {:?}", outcome.notes);
    let text = std::fs::read_to_string(s.path().join("results.json")).expect("results.json");
    eprintln!("{text}\n{} network events", nets.len());
    let got = serde_json::from_str(&text).unwrap();
    Run { text, got, nets }
}

/// What the agent reported (`results.json`) and the sandbox's network events.
struct Run {
    text: String,
    got: BTreeMap<String, String>,
    nets: Vec<Network>,
}

impl Run {
    fn at(&self, k: &str) -> &str {
        let text = &self.text;
        self.got
            .get(k)
            .unwrap_or_else(|| panic!("no {k:?} in {text}"))
            .as_str()
    }

    /// The one `op` event to `ip:port`.
    fn net(&self, op: &str, ip: &str, port: u32) -> &Network {
        let nets = &self.nets;
        nets.iter()
            .find(|n| n.op == op && n.ip == ip && n.port == port)
            .unwrap_or_else(|| panic!("no {op} {ip}:{port} event in {nets:#?}"))
    }

    /// Each of these was refused, and recorded so.
    fn check_refused(&self, refused: &[(&str, &str, u32)]) {
        for &(op, ip, port) in refused {
            let n = self.net(op, ip, port);
            assert!(!n.allowed && n.rule.is_empty(), "{n:?}");
        }
    }

    /// The agent's connect to the listener's own address is loopback, left alone: the proxy
    /// sees the agent's own source, which decodes as no destination.
    fn check_direct_connect(&self) {
        let direct = self.at("tcp listener directly");
        assert!(direct.starts_with("direct 127.0.0.1:"), "{}", self.text);
    }
}

/// One sandbox after the other (launch blocks signals and reads SIGCHLD per run: two runs
/// in one process at once are not what it is built for).
#[test]
fn egress_goes_to_the_proxy_with_its_destination() {
    require_root();
    proxied_run();
    closed_run();
}

fn proxied_run() {
    let run = run_agent(&[], false);
    let at = |k: &str| run.at(k);

    // TCP: the proxy decodes the destination the agent asked for from the addresses alone,
    // and getpeername shows the agent that destination, not the listener.
    assert_eq!(at("tcp 203.0.113.7:443"), "203.0.113.7:443 peer=203.0.113.7:443");
    assert_eq!(at("tcp 10.1.2.3:22"), "10.1.2.3:22 peer=10.1.2.3:22");
    assert_eq!(
        at("tcp6 ::ffff:198.51.100.9:8443"),
        "198.51.100.9:8443 peer=::ffff:198.51.100.9:8443"
    );
    run.check_direct_connect();
    // What cannot be carried is refused: IPv6 proper, port 0, a socket bound beforehand.
    assert_eq!(at("tcp6 2001:db8::1:443"), "errno=EPERM");
    assert_eq!(at("tcp 192.0.2.1:0"), "errno=EPERM");
    assert_eq!(at("tcp bound first"), "errno=EPERM");

    // DNS: every server is the supervisor's DNS socket; replies come from the server asked.
    assert_eq!(at("dns 8.8.8.8"), "id=0x1111 src=8.8.8.8:53");
    assert_eq!(at("dns 127.0.0.1 same socket"), "id=0x2222 src=127.0.0.1:53");
    assert_eq!(at("dns 127.0.0.1"), "id=0x3333 src=127.0.0.1:53");
    assert_eq!(at("dns connected 192.0.2.53"), "id=0x4444 src=192.0.2.53:53");
    assert_eq!(at("dns connected peer"), "192.0.2.53:53");
    assert_eq!(
        at("dns6 ::ffff:198.51.100.53"),
        "id=0x5555 src=::ffff:198.51.100.53:53"
    );
    assert_eq!(at("dns6 2001:db8::53"), "errno=EPERM");
    assert_eq!(at("udp 1.1.1.1:443"), "errno=EPERM");

    // Loopback is the agent's own.
    assert_eq!(at("tcp local").split(" peer=").next(), Some("local 127.0.0.1"));
    assert!(at("tcp local").contains("peer=127.0.0.1:"), "{}", at("tcp local"));
    assert_eq!(at("udp local"), "ping from 127.0.0.1");

    // glibc's resolver accepts the redirected reply (it checks the source) when
    // /etc/resolv.conf names a server off loopback; then a connect to the name's address.
    let first_server = std::fs::read_to_string("/etc/resolv.conf")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("nameserver").map(|a| a.trim().to_string()));
    match first_server.and_then(|a| a.parse::<IpAddr>().ok()) {
        Some(IpAddr::V4(a)) if !a.is_loopback() => {
            assert_eq!(at("getaddrinfo"), ANSWER.to_string());
            assert_eq!(at("tcp by name"), "203.0.113.99:443 peer=203.0.113.99:443");
        }
        other => eprintln!("getaddrinfo not checked: /etc/resolv.conf's first server is {other:?}"),
    }

    // Every decision is an event: redirects are allowed with rule "proxy".
    let find = |op: &str, ip: &str, port: u32| run.net(op, ip, port);
    let proxied = |n: &Network| n.allowed && n.rule == "proxy";
    assert!(proxied(find("connect", "203.0.113.7", 443)));
    assert!(proxied(find("connect", "198.51.100.9", 8443)));
    assert!(proxied(find("sendmsg", "8.8.8.8", 53)));
    assert!(proxied(find("connect", "192.0.2.53", 53)));
    assert!(proxied(find("sendmsg", "198.51.100.53", 53)));
    run.check_refused(&[
        ("connect", "2001:db8::1", 443),
        ("connect", "192.0.2.1", 0),
        ("connect", "203.0.113.7", 80),
        ("sendmsg", "2001:db8::53", 53),
        ("sendmsg", "1.1.1.1", 443),
    ]);
    let local = find("sendmsg", "127.0.0.1", 53);
    assert!(local.allowed && local.rule.is_empty(), "{local:?}");
}

/// With port 0 (the proxy is not listening yet) every egress is refused, DNS included;
/// loopback still works.
fn closed_run() {
    let run = run_agent(&["closed"], true);
    let at = |k: &str| run.at(k);
    run.check_direct_connect();
    assert_eq!(at("tcp 203.0.113.7:443"), "errno=EPERM");
    assert_eq!(at("dns 8.8.8.8"), "errno=EPERM");
    assert_eq!(at("dns 127.0.0.1"), "id=0x8888 src=127.0.0.1:53");
    run.check_refused(&[("connect", "203.0.113.7", 443), ("sendmsg", "8.8.8.8", 53)]);
}
