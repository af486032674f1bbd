//! The proxy's sockets and tasks: a TCP listener and a DNS socket made inside the sandbox's
//! network namespace and served from the supervisor's (host) namespace, where the upstream
//! connections are made. The probes send the sandbox's connects and DNS datagrams here
//! (`probes::Watch::proxy`); the original destination of a connection is read back from its
//! two loopback addresses (`cordon_probe_common::proxy_decode`).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;

use super::super::approvals::{Answer, Approvals, Question};
use super::ask::{self, Holds, Outcome};
use super::dns::{self, Entry, Synth};
use super::firewall::Firewall;
use super::intercept;
use super::relay::{inspect, relay, RelayError, Seen};
use super::rules::{Rules, Verdict};
use super::sniff::{self, Opening};
use crate::events::pb::{self, event::Kind};
use crate::profile::egress::Egress;

/// How long cordon waits for an upstream TCP handshake, and for its own DNS lookup.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a stopping proxy waits for its connections and questions to record themselves
/// once told the run has ended (each stops at once; this bounds a stuck pipeline).
const RECORD_TIMEOUT: Duration = Duration::from_secs(5);

/// The sockets the proxy serves, made in the sandbox's network namespace.
pub struct Sockets {
    tcp: std::net::TcpListener,
    dns: std::net::UdpSocket,
    /// The listener's port (what the probes redirect connects to).
    pub port: u16,
}

/// Make the proxy's sockets inside the network namespace of process `pid`: a helper thread
/// joins the namespace (sockets keep the namespace they were made in), brings `lo` up and
/// binds a TCP listener on 0.0.0.0 (every 127/8 address the probes rewrite to) and the DNS
/// socket on 127.0.0.1:53.
pub fn sockets_in(pid: i32) -> std::io::Result<Sockets> {
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/net"))?;
    std::thread::scope(|s| {
        s.spawn(|| -> std::io::Result<Sockets> {
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)?;
            crate::sys::lo_up()?;
            let tcp = std::net::TcpListener::bind((Ipv4Addr::UNSPECIFIED, 0))?;
            let dns = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 53))?;
            tcp.set_nonblocking(true)?;
            dns.set_nonblocking(true)?;
            let port = tcp.local_addr()?.port();
            Ok(Sockets { tcp, dns, port })
        })
        .join()
        .unwrap_or_else(|_| Err(std::io::Error::other("the namespace helper thread panicked")))
    })
}

/// A change to the rules while the sandbox runs (`cordon net allow|deny`).
pub struct Change {
    pub allow: bool,
    pub rule: Egress,
    /// None: until the run ends.
    pub lasts: Option<Duration>,
    /// Who asked ("uid 0").
    pub by: String,
    /// Take back the live allow rules equal to `rule` (a revoked grant) instead of adding.
    pub withdraw: bool,
}

struct State {
    rules: Mutex<Rules>,
    synth: Mutex<Synth>,
    events: mpsc::Sender<Kind>,
    host_addrs: Vec<IpAddr>,
    holds: Holds,
    /// Where held connections are asked about.
    approvals: Arc<Approvals>,
    /// Credentials and TLS interception (`network.credential`).
    firewall: Option<Arc<Firewall>>,
    /// Becomes true when the run ends: what is still open is cut and recorded.
    ended: watch::Receiver<bool>,
}

impl State {
    fn rules(&self) -> std::sync::MutexGuard<'_, Rules> {
        self.rules.lock().unwrap_or_else(PoisonError::into_inner)
    }
    fn synth(&self) -> std::sync::MutexGuard<'_, Synth> {
        self.synth.lock().unwrap_or_else(PoisonError::into_inner)
    }
    async fn emit(&self, kind: Kind) {
        // The pipeline outlives the proxy (it is stopped first); a send can only fail after
        // the run's end, when nothing more is recorded anyway.
        let _ = self.events.send(kind).await;
    }
    /// Resolves once the run has ended (at once if it already has).
    async fn run_ended(&self) {
        let mut ended = self.ended.clone();
        let _ = ended.wait_for(|e| *e).await;
    }
}

/// This host's own addresses: an allowed name must not resolve to them (rebinding).
fn host_addresses() -> Vec<IpAddr> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    addrs
        .filter_map(|a| {
            let sa = a.address?;
            sa.as_sockaddr_in()
                .map(|v4| IpAddr::V4(v4.ip()))
                .or_else(|| sa.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip())))
        })
        .collect()
}

/// Serve until `stop` fires. Events go to `events` (the session's pipeline).
pub async fn serve(
    sockets: Sockets,
    rules: Rules,
    firewall: Option<Arc<Firewall>>,
    (events, approvals): (mpsc::Sender<Kind>, Arc<Approvals>),
    mut changes: mpsc::Receiver<Change>,
    mut stop: oneshot::Receiver<()>,
) -> std::io::Result<()> {
    let tcp = TcpListener::from_std(sockets.tcp)?;
    let udp = Arc::new(UdpSocket::from_std(sockets.dns)?);
    let (end, ended) = watch::channel(false);
    let state = Arc::new(State {
        rules: Mutex::new(rules),
        synth: Mutex::new(Synth::default()),
        events,
        host_addrs: host_addresses(),
        holds: Holds::default(),
        approvals,
        firewall,
        ended,
    });
    // Every connection and question in flight: none is dropped unrecorded at the end.
    let mut tasks = JoinSet::new();
    let mut buf = vec![0u8; 4096];
    loop {
        let next_expiry = state.rules().next_expiry();
        tokio::select! {
            _ = &mut stop => break,
            accepted = tcp.accept() => {
                if let Ok((conn, peer)) = accepted {
                    tasks.spawn(connection(state.clone(), conn, peer));
                }
            }
            got = udp.recv_from(&mut buf) => {
                if let Ok((n, from)) = got {
                    tasks.spawn(question(state.clone(), udp.clone(), buf[..n].to_vec(), from));
                }
            }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            Some(c) = changes.recv() => change(&state, c).await,
            () = sleep_until(next_expiry) => {
                let gone = state.rules().expire(Instant::now());
                for rule in gone {
                    state.emit(Kind::NetChange(pb::NetChange {
                        action: "expire".into(),
                        rule,
                        by: "cordon".into(),
                        for_ms: 0,
                    })).await;
                }
            }
        }
    }
    // The agent is gone: what is still open is cut, and each records itself.
    let _ = end.send(true);
    let all = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(RECORD_TIMEOUT, all).await.is_err() {
        return Err(std::io::Error::other(format!(
            "{} connections or questions were not recorded within {RECORD_TIMEOUT:?} of the run's end",
            tasks.len()
        )));
    }
    Ok(())
}

/// Apply a change to the live rules (`cordon net allow|deny`, a grant, an approval given
/// `--for`): held connections it speaks for are answered; recorded as a `NetChange`.
async fn change(state: &State, c: Change) {
    let text = c.rule.to_string();
    if c.withdraw {
        state.rules().withdraw(&c.rule);
        state
            .emit(Kind::NetChange(pb::NetChange {
                action: "withdraw".into(),
                rule: text,
                by: c.by,
                for_ms: 0,
            }))
            .await;
        return;
    }
    let until = c.lasts.map(|d| Instant::now() + d);
    {
        let mut rules = state.rules();
        rules.add(c.rule, c.allow, until);
        state.holds.decide(&rules, &c.by);
    }
    state
        .emit(Kind::NetChange(pb::NetChange {
            action: if c.allow { "allow" } else { "deny" }.into(),
            rule: text,
            by: c.by,
            for_ms: c.lasts.map_or(0, millis),
        }))
        .await;
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

async fn sleep_until(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}

/// Answer one DNS datagram of the agent.
async fn question(state: Arc<State>, udp: Arc<UdpSocket>, datagram: Vec<u8>, from: SocketAddr) {
    let (msg, q) = match dns::parse(&datagram) {
        Ok(x) => x,
        Err(why) => {
            state
                .emit(Kind::Dns(pb::Dns {
                    rule: format!("unreadable question: {why}"),
                    rcode: "FORMERR".into(),
                    ..Default::default()
                }))
                .await;
            return;
        }
    };
    let mut event = pb::Dns {
        name: q.name.clone(),
        qtype: q.qtype.to_string(),
        ..Default::default()
    };
    let mut verdict = state.rules().name(&q.name);
    // Data can leave in a name: a credential's placeholder in one is refused.
    if let Some(fw) = &state.firewall {
        if let Some(c) = fw.placeholder_in(&q.name) {
            verdict = Verdict::refuse(format!(
                "{}: the placeholder of {} is in the name",
                crate::detect::PLACEHOLDER_RULE,
                c.rule.env
            ));
        } else if let Some(f) = fw.dlp.scan(q.name.as_bytes(), "") {
            verdict = Verdict::refuse(format!("{}: {} in the name", crate::detect::DLP_RULE, f.what));
        }
    }
    // `unlisted = "ask"`: the name gets a stand-in now and its connection is held; cordon
    // looks the name up only once a person allows it (a question alone leaks nothing).
    let ask = verdict.unlisted && state.rules().ask().is_some();
    event.allowed = verdict.allowed;
    event.rule = if ask {
        format!("{} (ask: held at connect)", verdict.rule)
    } else {
        verdict.rule
    };
    let (code, answer) = if !verdict.allowed && !ask {
        (ResponseCode::NXDomain, None)
    } else if q.qtype != RecordType::A {
        // No IPv6 (clients fall back to IPv4) and nothing else: an empty answer.
        (ResponseCode::NoError, None)
    } else if ask {
        let entry = Entry {
            name: q.name.clone(),
            upstream: Vec::new(),
            fixed: false,
        };
        stand_in(&state, entry, &mut event)
    } else {
        let looked_up = tokio::select! {
            r = upstream_for(&state, &q.name) => r,
            () = state.run_ended() => Err((ResponseCode::ServFail, "the run ended before the lookup answered".into())),
        };
        match looked_up {
            Ok(entry) => {
                event.upstream = entry.upstream.iter().map(ToString::to_string).collect();
                stand_in(&state, entry, &mut event)
            }
            Err((code, why)) => {
                event.allowed = code != ResponseCode::Refused && event.allowed;
                event.rule = format!("{}: {why}", event.rule);
                (code, None)
            }
        }
    };
    event.rcode = dns::rcode_name(code).into();
    event.answers = answer.iter().map(ToString::to_string).collect();
    let _ = udp.send_to(&dns::reply(&msg, code, answer), from).await;
    state.emit(Kind::Dns(event)).await;
}

/// The stand-in address for `entry`, or SERVFAIL when the range is used up.
fn stand_in(state: &State, entry: Entry, event: &mut pb::Dns) -> (ResponseCode, Option<Ipv4Addr>) {
    match state.synth().assign(entry) {
        Some(ip) => (ResponseCode::NoError, Some(ip)),
        None => {
            event.rule = "no stand-in addresses left (131070 names this run)".into();
            (ResponseCode::ServFail, None)
        }
    }
}

/// Hold a connection no rule allows until a person answers (`unlisted = "ask"`): a question
/// to the approval broker (`cordon approve|deny`, the hook), which a live rule (`cordon net
/// allow|deny`) may also answer. Returns the verdict that ends the hold.
async fn held(state: &State, conn: &TcpStream, name: &str, ip: IpAddr, port: u16, wait: Duration) -> Verdict {
    let target = if name.is_empty() {
        SocketAddr::new(ip, port).to_string()
    } else {
        format!("{name}:{port}")
    };
    let q = Question {
        what: "connect".into(),
        target: target.clone(),
        why: String::new(),
        asker: "connection".into(),
    };
    let (id, rx) = match state.approvals.open(q).await {
        Ok((id, a)) => return approved(state, id, &target, a).await,
        Err(waiting) => waiting,
    };
    let (hold, by_rule) = state.holds.add(name, ip, port);
    // The broker's timeout decides; the hold's own wait only has to outlast it.
    let answer = tokio::select! {
        (id, a) = state.approvals.wait_for(id, rx, wait) => (id, a),
        outcome = ask::wait(conn, by_rule, wait + Duration::from_secs(1)) => {
            let answer = match outcome {
                Outcome::Answered(a) => Answer {
                    approved: a.verdict.allowed,
                    state: if a.verdict.allowed { "allowed" } else { "refused" },
                    by: a.by,
                    rule: a.verdict.rule,
                    for_ms: 0,
                },
                Outcome::TimedOut => Answer::refused("timed out", "nobody answered"),
                Outcome::Abandoned => Answer::refused(
                    "abandoned",
                    "the agent closed the connection while it was held",
                ),
            };
            state.approvals.close(id, answer.clone()).await;
            (id, answer)
        }
    };
    state.holds.forget(hold);
    approved(state, answer.0, &target, answer.1).await
}

/// The verdict of an answered connect; approved `--for` a while, it becomes a live allow
/// rule for that long (the next connections are not asked).
async fn approved(state: &State, id: u64, target: &str, a: Answer) -> Verdict {
    if !a.approved {
        return Verdict::refuse(format!("#{id} {}: {}", a.state, a.rule));
    }
    if a.for_ms > 0 {
        if let Ok(rule) = crate::profile::egress::parse(target) {
            let c = Change {
                allow: true,
                rule,
                lasts: Some(Duration::from_millis(a.for_ms)),
                by: a.by.clone(),
                withdraw: false,
            };
            change(state, c).await;
        }
    }
    if a.rule.starts_with("live ") {
        Verdict::allow(a.rule)
    } else {
        Verdict::allow(format!("#{id} approved by {} ({})", a.by, a.rule))
    }
}

/// Where cordon connects for an allowed `name`: the profile's fixed address, or its own DNS
/// lookup, keeping only addresses the rules let it reach.
async fn upstream_for(state: &State, name: &str) -> Result<Entry, (ResponseCode, String)> {
    let fixed = state.rules().fixed(name);
    let (found, is_fixed) = match fixed {
        Some(ip) => (vec![ip], true),
        None => {
            let lookup = tokio::time::timeout(UPSTREAM_TIMEOUT, tokio::net::lookup_host((name, 0))).await;
            match lookup {
                Ok(Ok(addrs)) => (addrs.map(|a| a.ip()).collect::<Vec<_>>(), false),
                Ok(Err(e)) => return Err((ResponseCode::NXDomain, format!("cordon's lookup failed: {e}"))),
                Err(_) => return Err((ResponseCode::ServFail, "cordon's lookup timed out".into())),
            }
        }
    };
    let rules = state.rules();
    let mut refused = Vec::new();
    let upstream: Vec<IpAddr> = found
        .into_iter()
        .filter(|ip| match rules.upstream(*ip, is_fixed, &state.host_addrs) {
            Ok(()) => true,
            Err(why) => {
                refused.push(why.to_string());
                false
            }
        })
        .collect();
    if upstream.is_empty() {
        return Err((
            ResponseCode::Refused,
            if refused.is_empty() {
                "it has no address".into()
            } else {
                refused.join("; ")
            },
        ));
    }
    Ok(Entry {
        name: name.into(),
        upstream,
        fixed: is_fixed,
    })
}

/// How one connection ended, before its event is written.
enum Ended {
    /// Refused before any byte was relayed (the agent's end reset); the reason is in the event.
    Refused,
    /// Allowed, but no upstream address answered; the reason is in the event.
    Unreachable,
    /// Relayed until one side closed: how, or why it was cut.
    Relayed(Result<String, RelayError>),
    /// Still open (or still held) when the run ended.
    Cut,
}

/// Relay one connection of the agent, or refuse it, and record it: a `Connection` event
/// (and the `Http` request seen on it) when it ends, or when the run ends with it open.
async fn connection(state: Arc<State>, conn: TcpStream, peer: SocketAddr) {
    let started = Instant::now();
    let mut event = pb::Connection::default();
    let counts = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut seen = Seen::default();
    let ended = tokio::select! {
        e = follow(&state, conn, peer, &mut event, &counts, &mut seen) => e,
        () = state.run_ended() => Ended::Cut,
    };
    event.sni = std::mem::take(&mut seen.sni);
    event.http_host = seen.http.as_ref().map(|h| h.host.clone()).unwrap_or_default();
    event.bytes_up = counts.0.load(Ordering::Relaxed);
    event.bytes_down = counts.1.load(Ordering::Relaxed);
    event.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    match ended {
        Ended::Refused | Ended::Unreachable => {}
        Ended::Relayed(Ok(how)) => event.reason = how,
        Ended::Relayed(Err(refusal)) => {
            event.allowed = false;
            match refusal {
                RelayError::Placeholder { .. } => crate::detect::PLACEHOLDER_RULE.clone_into(&mut event.rule),
                RelayError::Dlp { .. } => crate::detect::DLP_RULE.clone_into(&mut event.rule),
                _ => {}
            }
            event.reason = refusal.to_string();
        }
        Ended::Cut if event.allowed => event.reason = "open when the run ended; cut".into(),
        Ended::Cut => event.reason = "the run ended before it was decided".into(),
    }
    if let Some(h) = seen.http.take() {
        state.emit(Kind::Http(h)).await;
    }
    state.emit(Kind::Connection(event)).await;
}

/// Decide on one connection and relay it; what is learnt goes into `event` and `seen` as it
/// is learnt (the run may end before this does).
async fn follow(
    state: &State,
    conn: TcpStream,
    peer: SocketAddr,
    event: &mut pb::Connection,
    (up_bytes, down_bytes): &(Arc<AtomicU64>, Arc<AtomicU64>),
    seen: &mut Seen,
) -> Ended {
    // Both legs without Nagle: the proxy re-sends what arrived at once, and a small write
    // held for an ACK the agent delays would add ~40 ms to every request/response turn.
    let _ = conn.set_nodelay(true);
    let target = match (conn.local_addr(), peer) {
        (Ok(SocketAddr::V4(local)), SocketAddr::V4(peer)) => {
            cordon_probe_common::proxy::decode(local.ip().octets(), peer.ip().octets())
        }
        _ => None,
    };
    let Some((ip, port)) = target.map(|(ip, port)| (Ipv4Addr::from(ip), port)) else {
        event.reason = "not a connection the probes redirected".into();
        return reset(conn);
    };
    event.ip = ip.to_string();
    event.port = u32::from(port);
    let (mut verdict, mut upstream) = if Synth::in_range(ip) {
        let entry = state.synth().lookup(ip).cloned();
        match entry {
            Some(e) => {
                event.name = e.name.clone();
                (state.rules().name_port(&e.name, port), e.upstream)
            }
            None => (
                Verdict::refuse("an address cordon's resolver never gave out"),
                Vec::new(),
            ),
        }
    } else {
        (state.rules().address(IpAddr::V4(ip), port), vec![IpAddr::V4(ip)])
    };
    let ask = state.rules().ask();
    if let Some(wait) = ask.filter(|_| verdict.unlisted) {
        verdict = held(state, &conn, &event.name, IpAddr::V4(ip), port, wait).await;
    }
    // A name first answered while unlisted has no upstream address yet: look it up now.
    if verdict.allowed && upstream.is_empty() && !event.name.is_empty() {
        match upstream_for(state, &event.name).await {
            Ok(entry) => {
                upstream.clone_from(&entry.upstream);
                state.synth().assign(entry);
            }
            Err((_, why)) => {
                event.rule = verdict.rule;
                event.reason = why;
                return reset(conn);
            }
        }
    }
    event.rule = verdict.rule.clone();
    if !verdict.allowed {
        event.reason = verdict.rule;
        return reset(conn);
    }
    event.allowed = true;
    let up = match connect_any(&upstream, port).await {
        Ok(up) => up,
        Err(why) => {
            event.reason = format!("upstream: {why}");
            return Ended::Unreachable;
        }
    };
    event.upstream = up.peer_addr().map(|a| a.to_string()).unwrap_or_default();
    // A credential's host: TLS ends here and each request is read (its first bytes say
    // whether it speaks TLS at all).
    let fw = state.firewall.clone().filter(|f| f.intercepts(&event.name));
    let first = match &fw {
        Some(_) => Some(inspect(&conn, &event.name, seen).await),
        None => None,
    };
    Ended::Relayed(match (fw, first) {
        (_, Some(Err(e))) => Err(e),
        (Some(fw), Some(Ok(first))) if matches!(sniff::opening(&first), Opening::Tls { .. }) => {
            let counts = (up_bytes.clone(), down_bytes.clone());
            intercept::serve(fw, conn, first, up, &event.name, state.events.clone(), counts)
                .await
                .map_err(|e| RelayError::Intercept(e.to_string()))
        }
        (_, first) => {
            let first = first.and_then(Result::ok);
            let fw = state.firewall.as_deref();
            relay(conn, up, first, &event.name, fw, up_bytes, down_bytes, seen).await
        }
    })
}

/// Refuse with a reset, not a clean close: the agent's next read fails at once.
fn reset(conn: TcpStream) -> Ended {
    let reset = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    let _ = nix::sys::socket::setsockopt(&conn, nix::sys::socket::sockopt::Linger, &reset);
    drop(conn);
    Ended::Refused
}

async fn connect_any(addrs: &[IpAddr], port: u16) -> Result<TcpStream, UpstreamError> {
    let mut last = UpstreamError::NoAddress;
    for ip in addrs {
        let to = SocketAddr::new(*ip, port);
        match tokio::time::timeout(UPSTREAM_TIMEOUT, TcpStream::connect(to)).await {
            Ok(Ok(s)) => {
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Ok(Err(e)) => last = UpstreamError::Io(to, e),
            Err(_) => last = UpstreamError::Timeout(to),
        }
    }
    Err(last)
}

/// Why no upstream connection could be made.
#[derive(Debug, thiserror::Error)]
enum UpstreamError {
    #[error("no address")]
    NoAddress,
    #[error("{0}: {1}")]
    Io(SocketAddr, #[source] std::io::Error),
    #[error("{0}: no answer in {secs} s", secs = UPSTREAM_TIMEOUT.as_secs())]
    Timeout(SocketAddr),
}
