//! The event stream: typed events (proto/cordon/events/v2/events.proto), their two renderings
//! (JSON lines for programs, in the canonical proto3 JSON mapping; aligned text for people)
//! and the kind filter of `--kind`.

pub mod decode;
pub mod names;

/// Types generated from the `.proto` schema.
#[allow(clippy::all, clippy::pedantic)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/cordon.events.v2.rs"));
    include!(concat!(env!("OUT_DIR"), "/cordon.events.v2.serde.rs"));
}

use pb::event::Kind;

/// The `--kind` names and what each selects.
pub const KINDS: &[(&str, &str)] = &[
    ("process", "fork, exec and exit"),
    ("exec", "programs executed"),
    ("file", "syscalls on a path (open, unlink, rename, chmod, …)"),
    ("net", "connect/sendmsg/bind decisions and network syscalls"),
    ("syscall", "every recorded syscall"),
    (
        "denied",
        "anything refused: syscalls with EPERM/EACCES and blocked network",
    ),
    ("counts", "syscall count summaries"),
    ("traffic", "bytes and packets per remote address and port"),
    ("loss", "events lost (ring buffer full, slow consumer)"),
    ("lifecycle", "start and end of the run"),
    ("response", "the sandbox frozen, thawed or killed, and why"),
    (
        "detection",
        "a monitor rule fired: what was seen and the evidence",
    ),
    (
        "model",
        "requests to model APIs and the model's answers (text, tool calls, tokens)",
    ),
    (
        "grant",
        "just-in-time grants (cordon grant): given, expired, revoked",
    ),
    (
        "approval",
        "something held until a person answers (network.unlisted = \"ask\"), and the answer",
    ),
];

/// Does `e` belong to kind `k` (one of `KINDS`)?
pub fn is_kind(e: &pb::Event, k: &str) -> bool {
    match (&e.kind, k) {
        (Some(Kind::Fork(_) | Kind::Exec(_) | Kind::Exit(_)), "process") => true,
        (Some(Kind::Exec(_)), "exec") => true,
        (Some(Kind::Syscall(s)), "file") => !s.path.is_empty() && s.addr.is_none(),
        (Some(Kind::Syscall(s)), "net") => s.addr.is_some(),
        (Some(Kind::Net(_)), "net") => true,
        (Some(Kind::Syscall(_)), "syscall") => true,
        (Some(Kind::Syscall(s)), "denied") => s.denied,
        (Some(Kind::Net(n)), "denied") => !n.allowed,
        (Some(Kind::Dns(_) | Kind::Connection(_) | Kind::Http(_) | Kind::NetChange(_)), "net") => true,
        (Some(Kind::Dns(d)), "denied") => !d.allowed,
        (Some(Kind::Connection(c)), "denied") => !c.allowed,
        (Some(Kind::Counts(_)), "counts") => true,
        (Some(Kind::Traffic(_)), "traffic" | "net") => true,
        (Some(Kind::Loss(_)), "loss") => true,
        (Some(Kind::Lifecycle(_)), "lifecycle") => true,
        (Some(Kind::Response(_)), "response" | "lifecycle") => true,
        (Some(Kind::Detection(_)), "detection" | "response") => true,
        (Some(Kind::Approval(_)), "approval" | "net") => true,
        (Some(Kind::Grant(_)), "grant") => true,
        (Some(Kind::ModelRequest(_) | Kind::ModelResponse(_)), "model") => true,
        (Some(Kind::Approval(a)), "denied") => a.state != "asked" && a.state != "allowed",
        _ => false,
    }
}

/// Check a `--kind` list; return the names.
pub fn parse_kinds(list: &str) -> Result<Vec<String>, String> {
    list.split(',')
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .map(|k| {
            if KINDS.iter().any(|(n, _)| *n == k) {
                Ok(k.to_string())
            } else {
                let known: Vec<&str> = KINDS.iter().map(|(n, _)| *n).collect();
                Err(format!(
                    "unknown event kind {k:?}; known kinds: {}",
                    known.join(", ")
                ))
            }
        })
        .collect()
}

/// Wall-clock now, in nanoseconds since the Unix epoch.
pub fn unix_now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// A `Loss` event: `count` events of `source` lost now, `total` so far.
pub fn loss_event(sandbox: &str, source: &str, count: u64, total: u64) -> pb::Event {
    pb::Event {
        sandbox: sandbox.into(),
        time_unix_ns: unix_now_ns(),
        kind: Some(Kind::Loss(pb::Loss {
            source: source.into(),
            count,
            total,
        })),
        ..Default::default()
    }
}

/// One JSON line: the canonical proto3 JSON mapping of the event (docs/events.md).
pub fn json(e: &pb::Event) -> String {
    serde_json::to_string(e).unwrap_or_else(|err| format!("{{\"error\":\"{err}\"}}"))
}

/// One aligned line for a person, every character from the sandbox escaped (`text`). Denials
/// are marked `DENIED` (and red on a terminal).
pub fn text(e: &pb::Event, color: bool) -> String {
    let secs = e.time_unix_ns / 1_000_000_000;
    let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
    let ms = (e.time_unix_ns / 1_000_000) % 1000;
    let who = if e.host_pid == 0 {
        String::new()
    } else {
        format!("{:>6} {:<15}", e.pid, e.comm)
    };
    let (what, denied) = match &e.kind {
        Some(Kind::Syscall(s)) => {
            let mut d = s.path.clone();
            if !s.path2.is_empty() {
                d = format!("{d} -> {}", s.path2);
            }
            if let Some(a) = &s.addr {
                d = if a.family == "unix" {
                    a.path.clone()
                } else {
                    format!("{}:{}", a.ip, a.port)
                };
            }
            if !s.argv.is_empty() {
                d = format!("{d} [{}]", s.argv.join(" "));
            }
            let res = if !s.completed {
                "(no result)".to_string()
            } else if s.ret < 0 && !s.errno.is_empty() {
                s.errno.clone()
            } else {
                format!("= {}", s.ret)
            };
            (format!("{:<10} {d} {res}", s.name), s.denied)
        }
        Some(Kind::Fork(f)) => (
            format!(
                "{:<10} host pid {}",
                if f.thread { "thread" } else { "fork" },
                f.child_host_pid
            ),
            false,
        ),
        Some(Kind::Exec(x)) => (
            format!("{:<10} {} [{}]", "exec", x.filename, x.argv.join(" ")),
            false,
        ),
        Some(Kind::Exit(x)) if x.signal != 0 => {
            (format!("{:<10} killed by signal {}", "exit", x.signal), false)
        }
        Some(Kind::Exit(x)) => (format!("{:<10} status {}", "exit", x.status), false),
        Some(Kind::Net(n)) => (
            format!(
                "{:<10} {} {}:{} {}{}",
                n.op,
                n.protocol,
                n.ip,
                n.port,
                if n.allowed { "allowed" } else { "blocked" },
                if n.rule.is_empty() {
                    String::new()
                } else {
                    format!(" by {}", n.rule)
                }
            ),
            !n.allowed,
        ),
        Some(Kind::Dns(d)) => (
            format!(
                "{:<10} {} {} {} {}{}",
                "dns",
                d.qtype,
                d.name,
                d.rcode,
                d.answers.join(","),
                if d.rule.is_empty() {
                    String::new()
                } else {
                    format!(" by {}", d.rule)
                }
            ),
            !d.allowed,
        ),
        Some(Kind::Connection(c)) => (
            format!(
                "{:<10} {}{}:{} {} up {} B down {} B in {} ms{}{}",
                "proxy",
                if c.name.is_empty() {
                    String::new()
                } else {
                    format!("{} ", c.name)
                },
                c.ip,
                c.port,
                if c.allowed { "allowed" } else { "refused" },
                c.bytes_up,
                c.bytes_down,
                c.duration_ms,
                if c.rule.is_empty() {
                    String::new()
                } else {
                    format!(" by {}", c.rule)
                },
                if c.reason.is_empty() {
                    String::new()
                } else {
                    format!(": {}", c.reason)
                }
            ),
            !c.allowed,
        ),
        Some(Kind::Http(h)) => (
            format!(
                "{:<10} {} http://{}{} {}",
                "http", h.method, h.host, h.path, h.status
            ),
            false,
        ),
        Some(Kind::NetChange(n)) => (
            format!(
                "{:<10} {} {} by {}{}",
                "net rule",
                n.action,
                n.rule,
                n.by,
                if n.for_ms > 0 {
                    format!(" for {} s", n.for_ms / 1000)
                } else {
                    String::new()
                }
            ),
            false,
        ),
        Some(Kind::Grant(g)) => (
            format!(
                "{:<10} #{} {} {} {} by {}{}{}",
                "grant",
                g.id,
                g.what,
                g.target,
                g.state,
                g.by,
                if g.state == "granted" {
                    format!(" for {} s", g.for_ms / 1000)
                } else {
                    String::new()
                },
                if g.reason.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", g.reason)
                }
            ),
            false,
        ),
        Some(Kind::ModelRequest(m)) => (
            format!(
                "{:<10} → {} {} {}{} {} new of {} messages{}{}",
                "model",
                m.api,
                m.host,
                m.model,
                if m.stream { " (streamed)" } else { "" },
                m.messages.len(),
                m.total_messages,
                if m.tools.is_empty() {
                    String::new()
                } else {
                    format!("; tools {}", m.tools.join(", "))
                },
                m.messages
                    .last()
                    .map(|l| format!("; {}: {}", l.role, preview(&l.content)))
                    .unwrap_or_default()
            ),
            false,
        ),
        Some(Kind::ModelResponse(m)) => (
            format!(
                "{:<10} ← {} {} {}, {} tokens in, {} out{}{}",
                "model",
                m.status,
                m.model,
                if m.stop_reason.is_empty() {
                    "no stop reason"
                } else {
                    &m.stop_reason
                },
                m.input_tokens,
                m.output_tokens,
                if m.text.is_empty() {
                    String::new()
                } else {
                    format!(": {}", preview(&m.text))
                },
                m.tool_calls
                    .iter()
                    .map(|t| format!("; asks to run {} {}", t.name, preview(&t.input)))
                    .collect::<String>()
            ),
            false,
        ),
        Some(Kind::Approval(a)) => (
            format!(
                "{:<10} #{} {} {} {}{}{}",
                "approval",
                a.id,
                a.what,
                a.target,
                a.state,
                if a.by.is_empty() {
                    String::new()
                } else {
                    format!(" by {}", a.by)
                },
                match a.state.as_str() {
                    "asked" => format!(" (waits {} s)", a.timeout_ms / 1000),
                    _ if a.rule.is_empty() => format!(" after {} ms", a.waited_ms),
                    _ => format!(" after {} ms: {}", a.waited_ms, a.rule),
                }
            ),
            a.state != "asked" && a.state != "allowed",
        ),
        Some(Kind::Counts(c)) => {
            let mut top: Vec<_> = c.counts.iter().collect();
            top.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
            let top: Vec<String> = top.iter().take(6).map(|(k, v)| format!("{k}={v}")).collect();
            (
                format!("{:<10} {} syscalls: {}", "counts", c.total, top.join(" ")),
                false,
            )
        }
        Some(Kind::Traffic(t)) => {
            let top: Vec<String> = t
                .remotes
                .iter()
                .take(4)
                .map(|r| {
                    format!(
                        "{}:{}/{} out {} B in {} B",
                        r.ip, r.port, r.protocol, r.bytes_out, r.bytes_in
                    )
                })
                .collect();
            let untracked = if t.untracked_packets > 0 {
                format!(" ({} packets untracked)", t.untracked_packets)
            } else {
                String::new()
            };
            (
                format!(
                    "{:<10} {} remotes: {}{untracked}",
                    "traffic",
                    t.remotes.len(),
                    top.join(", ")
                ),
                false,
            )
        }
        Some(Kind::Loss(l)) => (
            format!(
                "{:<10} {} events lost ({}), {} in total",
                "LOSS", l.count, l.source, l.total
            ),
            false,
        ),
        Some(Kind::Lifecycle(l)) => (
            format!("{:<10} {} {}", l.phase, l.detail, l.command.join(" ")),
            false,
        ),
        Some(Kind::Response(r)) => (
            format!(
                "{:<10} {}: {}{}",
                r.action,
                r.reason,
                if r.done { "done" } else { "FAILED" },
                if r.detail.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", r.detail)
                }
            ),
            false,
        ),
        Some(Kind::Detection(d)) => (
            format!(
                "{:<10} {}: {}{}{} -> {}",
                "DETECTED",
                d.rule,
                d.summary,
                if d.window.is_empty() {
                    String::new()
                } else {
                    format!(" [{}]", d.window)
                },
                if d.suppressed > 0 {
                    format!(" (+{} similar)", d.suppressed)
                } else {
                    String::new()
                },
                d.response
            ),
            // DETECTED says it; DENIED is for what the kernel refused (a detection may be
            // about an open that succeeded).
            false,
        ),
        None => (String::from("?"), false),
    };
    let mark = if denied { "DENIED " } else { "" };
    // Paths, argv, comm and the summaries built from them are the agent's bytes: escaped here,
    // where the line is made for a person (every literal above is printable ASCII).
    let line = format!("{h:02}:{m:02}:{s:02}.{ms:03} {:>6} {who} {mark}{what}", e.seq);
    let line = crate::text::escape(&line).into_owned();
    if denied && color {
        format!("\x1b[1;31m{line}\x1b[0m")
    } else {
        line
    }
}

/// One line of at most 160 characters of `s`.
fn preview(s: &str) -> String {
    let one: String = s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    match one.char_indices().nth(160) {
        Some((i, _)) => format!("{}…", &one[..i]),
        None => one,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_checked() {
        assert_eq!(parse_kinds("exec, net").unwrap(), vec!["exec", "net"]);
        assert!(parse_kinds("exec,bogus").unwrap_err().contains("bogus"));
    }

    #[test]
    fn denied_lines_are_marked() {
        let e = pb::Event {
            seq: 7,
            host_pid: 10,
            pid: 3,
            kind: Some(Kind::Net(pb::Network {
                op: "connect".into(),
                allowed: false,
                ..Default::default()
            })),
            ..Default::default()
        };
        assert!(text(&e, false).contains("DENIED connect"));
        assert!(is_kind(&e, "denied") && is_kind(&e, "net") && !is_kind(&e, "file"));
        assert!(json(&e).contains("\"allowed\":false"));
    }

    #[test]
    fn the_agents_bytes_cannot_rewrite_the_line() {
        let hostile = "/ws/x\r\x1b[2K\ncordon: all clear\x1b[8m\x07\u{9b}\\";
        let e = pb::Event {
            seq: 9,
            host_pid: 10,
            pid: 3,
            comm: "sh\x1b]0;t\x07".into(),
            kind: Some(Kind::Syscall(pb::Syscall {
                name: "openat".into(),
                path: hostile.into(),
                argv: vec!["a\nb".into()],
                completed: true,
                ..Default::default()
            })),
            ..Default::default()
        };
        let line = text(&e, false);
        assert!(!line.chars().any(char::is_control), "{line:?}");
        assert!(
            line.contains("/ws/x\\x0d\\x1b[2K\\x0acordon: all clear\\x1b[8m\\x07\\u{9b}\\\\"),
            "{line}"
        );
        assert!(
            line.contains("sh\\x1b]0;t\\x07") && line.contains("[a\\x0ab]"),
            "{line}"
        );
        // The JSON keeps the agent's exact bytes.
        let back: pb::Event = serde_json::from_str(&json(&e)).unwrap();
        assert_eq!(back, e);
    }
}
