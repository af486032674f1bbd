//! Live detection: the profile's `[monitor]` rules, run over every event of a sandbox in the
//! pipeline thread (before the trace and the bus, so nothing is missed), and the learned
//! baseline of normal syscall sequences (`baseline`).
//!
//! A rule that fires gives a [`Finding`]; the pipeline turns it into a `Detection` event and
//! carries out the rule's response (see `act`).

pub mod act;
pub mod baseline;
pub mod cwd;
mod finding;
pub mod live;
mod nested;
pub mod offline;
mod paths;
pub mod pipeline;
mod syscall;
pub mod tally;
mod window;

pub use finding::Finding;
pub use window::fmt_ms;

/// The `processes` rule counts the processes created while at least `limit / 8` (2 to 64) of
/// the sandbox's processes are alive at once: 62 for `default`'s 500, 4 for `strict`'s 32.
fn storm_live(limit: u64) -> i64 {
    i64::try_from(limit / 8).unwrap_or(64).clamp(2, 64)
}
use paths::{gitdir_of, is_directory, loader_target, set_hit};
use window::{Throttle, Window};

use std::collections::HashMap;

use crate::events::pb::{self, event::Kind};
use crate::glob;
use crate::kernel;
use crate::policy::monitor::Config;
use crate::profile::monitor::Rule;
use crate::profile::NetworkMode;

/// The rule the proxy names when it refuses a credential's placeholder sent where its secret
/// does not go (a `connection` event's rule; a `dns` event's rule starts with it).
pub const PLACEHOLDER_RULE: &str = "credential placeholder";
/// The rule the proxy names when data loss prevention refuses a request (a canary, a private
/// key, a token away from its service); a `dns` event's rule starts with it.
pub const DLP_RULE: &str = "data loss prevention";
/// Detections of one rule reported per second; the rest are counted and the count goes with
/// the next one reported (or with the last, at the end of the run).
const REPORTS_PER_SECOND: u32 = 20;
/// All targets of one rule together, per second (a sweep over many patterns stays bounded).
const RULE_REPORTS_PER_SECOND: u32 = 200;
/// Distinct (rule, target) keys kept for throttling.
const MAX_THROTTLE_KEYS: usize = 4096;

/// The rule detectors of one run.
pub struct Detector {
    read: Option<(Rule, glob::Set)>,
    write: Option<(Rule, glob::Set)>,
    exec: Option<(Rule, glob::Set)>,
    syscalls: Option<(Rule, Vec<String>)>,
    egress: Option<Rule>,
    exfiltration: Option<Rule>,
    net_mode: Option<NetworkMode>,
    connects: Option<Window>,
    execs: Option<Window>,
    deletions: Option<Window>,
    deleted: Option<tally::Share>,
    rewritten: Option<tally::Share>,
    breadth: Option<tally::Tally>,
    secrets: Option<tally::Tally>,
    denials: Option<Window>,
    processes: Option<Window>,
    /// The sandbox's processes alive now (forks minus exits, as recorded; init is one), and
    /// how many make a storm (`storm_live`).
    live_processes: i64,
    storm_live: i64,
    repeated: Option<(Rule, HashMap<String, Window>)>,
    written: Option<Rule>,
    written_fired: bool,
    baseline: Option<(Rule, live::Live)>,
    cwds: cwd::Cwds,
    /// Does a path exist on the host (the sandbox may hide it)? Swapped in tests.
    on_host: fn(&str) -> bool,
    /// Directories that may be gitdirs whose config, hooks or index the agent just wrote
    /// (for the session's live persistence check).
    git_touches: Vec<String>,
    /// Which written files the session judges live (`supply_chain`); none unless it says.
    watched: Option<fn(&str) -> bool>,
    /// Files written since the last call that `watched` picks, with the seq of the write.
    touched: Vec<(String, u64)>,
    /// The last connect or send the egress hooks reported per thread (host tid → ip, port):
    /// the syscall's own event that follows on that thread is the same attempt. Per thread:
    /// another thread's connect or lookup often comes in between (Codex's runtime threads).
    last_net: HashMap<u32, (String, u32)>,
    /// Reports per (rule, target) in the current second, and per rule overall.
    throttle: HashMap<(&'static str, String), Throttle>,
    rule_budget: HashMap<&'static str, Throttle>,
}

impl Detector {
    pub fn new(cfg: &Config, lookup: cwd::Lookup) -> Self {
        let set = |name: &str| {
            cfg.rule(name).map(|r| {
                (
                    r.clone(),
                    glob::Set::new(r.patterns.as_deref().unwrap_or_default()),
                )
            })
        };
        let window = |name: &str, what: &'static str| cfg.rule(name).map(|r| Window::new(r, what));
        Self {
            on_host: |p| std::path::Path::new(p).exists(),
            git_touches: Vec::new(),
            watched: None,
            touched: Vec::new(),
            read: set("sensitive_read"),
            write: set("sensitive_write"),
            exec: set("exec"),
            syscalls: cfg
                .rule("syscalls")
                .map(|r| (r.clone(), r.patterns.clone().unwrap_or_default())),
            egress: cfg.rule("egress").cloned(),
            exfiltration: cfg.rule("exfiltration").cloned(),
            net_mode: cfg.net_mode,
            connects: window("connects", "connects"),
            execs: window("execs", "programs started"),
            deletions: window("deletions", "deletions"),
            deleted: cfg.rule("deleted").map(tally::Share::new),
            rewritten: cfg.rule("rewritten").map(tally::Share::new),
            breadth: cfg.rule("breadth").map(tally::Tally::new),
            secrets: cfg.rule("secrets").map(tally::Tally::new),
            denials: window("denials", "refused operations"),
            processes: window("processes", "processes created while many are alive"),
            live_processes: 1,
            storm_live: cfg.rule("processes").map_or(64, |r| storm_live(r.limit)),
            repeated: cfg.rule("repeated_denials").map(|r| (r.clone(), HashMap::new())),
            written: cfg.rule("written").cloned(),
            written_fired: false,
            baseline: None,
            cwds: cwd::Cwds::new(lookup),
            last_net: HashMap::new(),
            throttle: HashMap::new(),
            rule_budget: HashMap::new(),
        }
    }

    /// Score each process's syscall sequence against a learned baseline (the `baseline` rule).
    pub fn set_baseline(&mut self, live: live::Live, rule: &Rule) {
        self.baseline = Some((rule.clone(), live));
    }

    /// The written rule runs: the pipeline reads the probes' counter for it.
    pub fn wants_written(&self) -> bool {
        self.written.is_some() && !self.written_fired
    }

    /// Nothing to do: no rule looks at events.
    pub fn is_idle(&self) -> bool {
        self.baseline.is_none()
            && self.watched.is_none()
            && self.written.is_none()
            && self.read.is_none()
            && self.write.is_none()
            && self.exec.is_none()
            && self.syscalls.is_none()
            && self.egress.is_none()
            && self.connects.is_none()
            && self.execs.is_none()
            && self.deletions.is_none()
            && self.deleted.is_none()
            && self.rewritten.is_none()
            && self.breadth.is_none()
            && self.secrets.is_none()
            && self.exfiltration.is_none()
            && self.denials.is_none()
            && self.processes.is_none()
            && self.repeated.is_none()
    }

    /// Written files that `watched` picks are kept for the session (see `take_touched`).
    pub fn watch_writes(&mut self, watched: fn(&str) -> bool) {
        self.watched = Some(watched);
    }

    /// The files written since the last call that the session watches, with the seq of the
    /// latest write to each.
    pub fn take_touched(&mut self) -> Vec<(String, u64)> {
        std::mem::take(&mut self.touched)
    }

    /// The directories written since the last call that may be gitdirs (see `gitdir_of`).
    pub fn take_git_touches(&mut self) -> Vec<String> {
        std::mem::take(&mut self.git_touches)
    }

    /// Where the host's files are looked up (tests pretend).
    pub fn with_host_files(mut self, on_host: fn(&str) -> bool) -> Self {
        self.on_host = on_host;
        self
    }

    /// Look at one event; findings go to `out`.
    pub fn observe(&mut self, e: &pb::Event, out: &mut Vec<Finding>) {
        let mut found = Vec::new();
        self.cwds.observe(e);
        // The sandbox's init (pid 1) is cordon's own code: it builds the sandbox (its probing
        // of paths it may not reach is refused by design), forks the agent and reaps.
        if e.pid == 1 && !matches!(e.kind, Some(Kind::Counts(_))) {
            return;
        }
        match &e.kind {
            Some(Kind::Syscall(s)) => self.syscall(e, s, &mut found),
            // The proxy refused a connection (an unlisted address, a port no rule allows, a
            // TLS name or Host that is not the resolved one): an egress attempt.
            // A credential's placeholder carried somewhere else: proof of an attempt to
            // exfiltrate it (the proxy refused it; the secret itself never was in reach).
            Some(Kind::Connection(c)) if !c.allowed && (c.rule == PLACEHOLDER_RULE || c.rule == DLP_RULE) => {
                if let Some(rule) = self.exfiltration.as_ref().or(self.egress.as_ref()) {
                    let summary = format!("{} (refused by the proxy)", c.reason);
                    found.push(self.instant(rule, e, summary));
                }
            }
            Some(Kind::Dns(d)) if d.rule.starts_with(PLACEHOLDER_RULE) || d.rule.starts_with(DLP_RULE) => {
                if let Some(rule) = self.exfiltration.as_ref().or(self.egress.as_ref()) {
                    let summary = format!("DNS question for {} refused by the proxy: {}", d.name, d.rule);
                    found.push(self.instant(rule, e, summary));
                }
            }
            Some(Kind::Connection(c)) if !c.allowed => {
                if let Some(rule) = &self.egress {
                    let to = if c.name.is_empty() {
                        format!("{}:{}", c.ip, c.port)
                    } else {
                        format!("{} ({}:{})", c.name, c.ip, c.port)
                    };
                    let summary = format!("connect to {to} refused by the proxy: {}", c.reason);
                    found.push(self.instant(rule, e, summary));
                }
            }
            Some(Kind::Exec(x)) => {
                if let Some(f) = self
                    .execs
                    .as_mut()
                    .and_then(|w| w.push(e.time_unix_ns, e.seq, ""))
                {
                    found.push(f);
                }
                self.exec_check(e, &x.filename, "exec", &mut found);
                // The loader maps the program itself: landlock sees only the loader's exec.
                if let Some(program) = loader_target(&x.filename, &x.argv) {
                    self.exec_check(e, program, "exec through the dynamic loader", &mut found);
                }
            }
            Some(Kind::Fork(f)) if !f.thread => {
                self.live_processes += 1;
                // A fork storm keeps what it makes alive; a loop of short commands (a shell
                // pipeline per file) makes as many but never holds many at once.
                let storm = self.live_processes >= self.storm_live;
                if let Some(f) = self
                    .processes
                    .as_mut()
                    .filter(|_| storm)
                    .and_then(|w| w.push(e.time_unix_ns, e.seq, ""))
                {
                    found.push(f);
                }
            }
            Some(Kind::Exit(x)) if x.process => {
                self.live_processes = (self.live_processes - 1).max(0);
            }
            Some(Kind::Net(n)) => self.net(e, n, &mut found),
            Some(Kind::Counts(c)) => self.frequencies(e, c, &mut found),
            _ => {}
        }
        if let Some((rule, live)) = &mut self.baseline {
            if let Some(hit) = live.observe(e) {
                found.push(Finding {
                    rule: rule.name,
                    response: rule.response,
                    summary: format!(
                        "pid {} ({}) made a run of syscalls unlike the baseline: score {:.2} over its last {} recorded syscalls",
                        e.pid,
                        e.comm,
                        hit.score,
                        baseline::FRAME
                    ),
                    evidence: hit.evidence,
                    score: hit.score,
                    threshold: rule.threshold,
                    window: hit.window,
                    offending_ns: e.time_unix_ns,
                    suppressed: 0,
                    target: String::new(),
                });
            }
        }
        for f in found {
            self.report(f, out);
        }
    }

    /// Bytes the sandbox wrote so far (from the probes' counter), checked against the budget.
    pub fn written(&mut self, bytes: u64, now_ns: u64, out: &mut Vec<Finding>) {
        let Some(r) = &self.written else { return };
        if self.written_fired || bytes <= r.limit {
            return;
        }
        self.written_fired = true;
        let f = Finding {
            rule: r.name,
            response: r.response,
            summary: format!("{bytes} bytes written, over the budget of {}", r.limit),
            evidence: Vec::new(),
            score: bytes as f64,
            threshold: r.limit as f64,
            window: "whole run".into(),
            offending_ns: now_ns,
            suppressed: 0,
            target: String::new(),
        };
        self.report(f, out);
    }

    /// At the end of the run: a count of detections that were suppressed and never reported.
    pub fn unreported(&self) -> Vec<(&'static str, u64)> {
        let mut by_rule: HashMap<&'static str, u64> = HashMap::new();
        for ((r, _), t) in &self.throttle {
            *by_rule.entry(r).or_default() += t.suppressed;
        }
        for (r, t) in &self.rule_budget {
            *by_rule.entry(r).or_default() += t.suppressed;
        }
        let mut v: Vec<_> = by_rule.into_iter().filter(|(_, n)| *n > 0).collect();
        v.sort();
        v
    }

    /// Report `f` unless its (rule, target) already reported REPORTS_PER_SECOND times this
    /// second, or the rule RULE_REPORTS_PER_SECOND times over all its targets; what is held
    /// back is counted and carried by the next report (`suppressed`).
    fn report(&mut self, mut f: Finding, out: &mut Vec<Finding>) {
        let second = f.offending_ns / 1_000_000_000;
        let roll = |t: &mut Throttle| {
            if second != t.second {
                t.second = second;
                t.reported = 0;
            }
        };
        // Distinct targets are bounded in memory: past the cap, new ones share the rule's key.
        let key = if self.throttle.len() < MAX_THROTTLE_KEYS
            || self.throttle.contains_key(&(f.rule, f.target.clone()))
        {
            (f.rule, f.target.clone())
        } else {
            (f.rule, String::new())
        };
        let overall = self.rule_budget.entry(f.rule).or_default();
        roll(overall);
        let t = self.throttle.entry(key).or_default();
        roll(t);
        if t.reported >= REPORTS_PER_SECOND {
            t.suppressed += 1;
            return;
        }
        if overall.reported >= RULE_REPORTS_PER_SECOND {
            overall.suppressed += 1;
            return;
        }
        t.reported += 1;
        overall.reported += 1;
        f.suppressed = std::mem::take(&mut t.suppressed) + std::mem::take(&mut overall.suppressed);
        out.push(f);
    }

    fn net(&mut self, e: &pb::Event, n: &pb::Network, found: &mut Vec<Finding>) {
        if n.op == "bind" {
            if !n.allowed {
                self.denied(e, "bind", found);
            }
            return;
        }
        if self.last_net.len() >= MAX_THROTTLE_KEYS {
            // Threads that died between a hook's report and their syscall's exit.
            self.last_net.clear();
        }
        self.last_net.insert(e.host_tid, (n.ip.clone(), n.port));
        if !n.allowed {
            self.denied(e, &n.op, found);
        }
        self.egress_seen(e, n, found);
    }

    /// A connect or send to an address: from the egress hooks (`Net`), or from the syscall
    /// itself when it was refused before the hooks ran (seccomp, or no route in an empty
    /// network namespace).
    fn egress_seen(&mut self, e: &pb::Event, n: &pb::Network, found: &mut Vec<Finding>) {
        if n.op == "connect" {
            if let Some(f) = self
                .connects
                .as_mut()
                .and_then(|w| w.push(e.time_unix_ns, e.seq, ""))
            {
                found.push(f);
            }
        }
        let Some(rule) = &self.egress else { return };
        // Connecting a UDP socket to port 0 sends nothing (clients do it to learn the source
        // address a route would use): not an egress attempt.
        if n.protocol == "udp" && n.port == 0 && n.op == "connect" {
            return;
        }
        // A name lookup that could not get out (no network, or only loopback): every tool
        // resolves names, and without a route nothing leaves — recorded, not an alarm.
        if n.port == 53
            && matches!(
                self.net_mode,
                Some(NetworkMode::None | NetworkMode::Loopback) | None
            )
        {
            return;
        }
        let loopback = n.ip.starts_with("127.") || n.ip == "::1";
        let outside = match self.net_mode {
            Some(NetworkMode::Allowlist | NetworkMode::Proxy) => !n.allowed,
            Some(NetworkMode::Loopback) => !loopback,
            Some(NetworkMode::None) | None => true,
        };
        if outside {
            let verdict = if n.allowed {
                "not refused: the sandbox has its own network namespace"
            } else {
                "it did not get out"
            };
            let proto = if n.protocol.is_empty() {
                String::new()
            } else {
                format!("{} ", n.protocol)
            };
            found.push(self.instant(
                rule,
                e,
                format!(
                    "{} {proto}{}:{} outside the allowlist ({verdict})",
                    n.op, n.ip, n.port
                ),
            ));
        }
    }

    /// The per-sandbox frequency check of the baseline: syscalls the sandbox made that no
    /// training run made (reported once each).
    fn frequencies(&mut self, e: &pb::Event, c: &pb::SyscallCounts, found: &mut Vec<Finding>) {
        let Some((rule, live)) = &mut self.baseline else {
            return;
        };
        let new = live.new_syscalls(&c.counts);
        if new.is_empty() {
            return;
        }
        let list: Vec<String> = new.iter().map(|(n, c)| format!("{n} x{c}")).collect();
        found.push(Finding {
            rule: rule.name,
            response: rule.response,
            summary: format!("syscalls no baseline run made: {}", list.join(", ")),
            evidence: vec![e.seq],
            score: 1.0,
            threshold: rule.threshold,
            window: "syscall counts".into(),
            offending_ns: e.time_unix_ns,
            suppressed: 0,
            target: String::new(),
        });
    }

    fn denied(&mut self, e: &pb::Event, what: &str, found: &mut Vec<Finding>) {
        let t = e.time_unix_ns;
        if let Some(f) = self.denials.as_mut().and_then(|w| w.push(t, e.seq, "")) {
            found.push(f);
        }
        if let Some((rule, by_kind)) = &mut self.repeated {
            let w = by_kind
                .entry(what.to_string())
                .or_insert_with(|| Window::new(rule, "refusals"));
            if let Some(mut f) = w.push(t, e.seq, &format!(" of {what}")) {
                f.window = format!("{what}: {}", f.window);
                found.push(f);
            }
        }
    }

    fn instant(&self, rule: &Rule, e: &pb::Event, summary: String) -> Finding {
        Finding {
            rule: rule.name,
            response: rule.response,
            summary: format!("{summary} by pid {} ({})", e.pid, e.comm),
            evidence: vec![e.seq],
            score: 1.0,
            threshold: 1.0,
            window: String::new(),
            offending_ns: e.time_unix_ns,
            suppressed: 0,
            target: String::new(),
        }
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_tally;
