//! Carrying out a rule's response, from the pipeline thread: the `Detection` event is already
//! out; this freezes, kills or cuts the network, tells the person at the terminal, runs the
//! hook, and kills a sandbox a rule froze once nobody has decided for `frozen_limit`.

use std::io::Write as _;
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{Config, Finding};
use crate::events::pb::{self, event::Kind};
use crate::profile::monitor::Response;
use crate::respond::{self, Action};

/// Hooks running at once; further alerts skip the hook (and say so).
const MAX_HOOKS: usize = 8;

pub struct Actor {
    cgroup: PathBuf,
    sandbox: String,
    hook: Vec<String>,
    hook_ids: (u32, u32),
    frozen_limit: Duration,
    /// A rule froze the sandbox at this time, and nobody has thawed it since.
    frozen_by_rule: Option<(Instant, &'static str)>,
    egress_denied: bool,
    /// A rule killed the sandbox: nothing is left to act on.
    killed: bool,
    /// The rule whose `rollback` response killed it (the session discards the layer).
    pub rolled_back: Option<&'static str>,
    hooks: Vec<Child>,
    /// What the rules did, for the end of the run ("killed by rule processes").
    pub notes: Vec<String>,
    /// Print alerts on stderr (off in tests of the pipeline).
    pub stderr: bool,
    /// Rules whose `ask` response froze the sandbox: the question to put to a person (rule,
    /// summary), taken by the session's approval broker.
    pub asks: Vec<(&'static str, String)>,
}

impl Actor {
    pub fn new(cfg: &Config, cgroup: PathBuf, sandbox: String) -> Self {
        Self {
            cgroup,
            sandbox,
            hook: cfg.hook.clone(),
            hook_ids: (cfg.hook_uid, cfg.hook_gid),
            frozen_limit: Duration::from_millis(cfg.frozen_limit_ms),
            frozen_by_rule: None,
            egress_denied: false,
            killed: false,
            rolled_back: None,
            hooks: Vec::new(),
            notes: Vec::new(),
            stderr: true,
            asks: Vec::new(),
        }
    }

    /// Carry out `f`'s response; `detection` is the seq of its Detection event, `deny_egress`
    /// cuts the sandbox's network. The Response event to emit, if the response acts.
    pub fn act(
        &mut self,
        f: &Finding,
        detection: u64,
        deny_egress: &mut dyn FnMut() -> Result<(), crate::probes::ProbeError>,
    ) -> Option<Kind> {
        if f.response == Response::Log {
            return None;
        }
        let reason = format!("rule {} (event {detection})", f.rule);
        // Events recorded before the sandbox stopped keep arriving: a sandbox a rule already
        // froze (and nobody thawed) or killed is not acted on again.
        let stopped = self.killed
            || (self.frozen_by_rule.is_some() && matches!(f.response, Response::Freeze | Response::Ask));
        let result = match f.response {
            _ if stopped => None,
            Response::Log | Response::Off | Response::Alert => None,
            Response::Freeze | Response::Ask => Some((
                Action::Freeze.name(),
                respond::apply(&self.cgroup, Action::Freeze).map_err(|e| e.to_string()),
            )),
            Response::Kill | Response::Rollback => Some((
                f.response.name(),
                respond::apply(&self.cgroup, Action::Kill).map_err(|e| e.to_string()),
            )),
            Response::Deny if self.egress_denied => None,
            Response::Deny => Some((
                "deny",
                deny_egress().map(|()| String::new()).map_err(|e| e.to_string()),
            )),
        };
        let what = match (&f.response, &result) {
            (Response::Freeze, Some((_, Ok(_)))) => {
                self.frozen_by_rule.get_or_insert((Instant::now(), f.rule));
                format!(
                    "froze the sandbox: `cordon thaw {id}` resumes it, `cordon kill {id}` ends it (killed in {} if nobody decides)",
                    super::fmt_ms(u64::try_from(self.frozen_limit.as_millis()).unwrap_or(u64::MAX)),
                    id = self.sandbox
                )
            }
            (Response::Ask, Some((_, Ok(_)))) => {
                self.frozen_by_rule.get_or_insert((Instant::now(), f.rule));
                self.asks.push((f.rule, f.summary.clone()));
                format!(
                    "froze the sandbox and asks: `cordon approve {id}/N` thaws it, `cordon deny {id}/N` ends it (`cordon pending` shows N)",
                    id = self.sandbox
                )
            }
            (Response::Kill, Some((_, Ok(_)))) => {
                self.killed = true;
                self.notes.push(format!("killed by rule {}", f.rule));
                "killed every process of the sandbox".into()
            }
            (Response::Rollback, Some((_, Ok(_)))) => {
                self.killed = true;
                self.rolled_back = Some(f.rule);
                self.notes.push(format!(
                    "killed by rule {}; its transactional workspace changes are discarded",
                    f.rule
                ));
                "killed every process of the sandbox; its workspace changes are discarded".into()
            }
            (Response::Deny, Some((_, Ok(_)))) => {
                self.egress_denied = true;
                self.notes.push(format!("network cut by rule {}", f.rule));
                "refuses every further connect and send of the sandbox".into()
            }
            // The run ended between the offending event and the response: nothing to stop.
            (_, Some((_, Err(_)))) if !self.cgroup.exists() => {
                format!(
                    "the sandbox had already ended: nothing left to {}",
                    f.response.name()
                )
            }
            (_, Some((_, Err(e)))) => format!("could not {}: {e}", f.response.name()),
            _ if stopped => "the sandbox is already stopped".into(),
            _ => "the agent goes on".into(),
        };
        if self.stderr {
            // The summary quotes the agent's paths and comm: escaped, one line.
            crate::text::eprint(&format!(
                "ALERT {}: rule {}: {} — {what}",
                self.sandbox, f.rule, f.summary
            ));
        }
        self.run_hook(f);
        result.map(|(action, r)| {
            let (done, detail) = match r {
                Ok(d) => (true, d),
                Err(e) => (false, e),
            };
            Kind::Response(pb::Response {
                action: action.into(),
                reason,
                done,
                detail,
            })
        })
    }

    /// Someone thawed or killed the sandbox: the rule's freeze is decided.
    pub fn decided(&mut self, action: Action) {
        self.frozen_by_rule = None;
        self.killed |= action == Action::Kill;
    }

    /// Reap finished hooks; kill a sandbox a rule froze once `frozen_limit` has passed.
    pub fn tick(&mut self) -> Option<Kind> {
        self.hooks.retain_mut(|c| matches!(c.try_wait(), Ok(None)));
        let (since, rule) = self.frozen_by_rule?;
        // Only the sandbox's init is left (the agent ended before the freeze landed): there is
        // nothing to decide about, and a frozen init would hold the run until the limit.
        let only_init =
            std::fs::read_to_string(self.cgroup.join("cgroup.procs")).is_ok_and(|p| p.lines().count() <= 1);
        if since.elapsed() < self.frozen_limit && !only_init {
            return None;
        }
        self.frozen_by_rule = None;
        let r = respond::apply(&self.cgroup, Action::Kill);
        self.notes.push(if only_init {
            format!("frozen by rule {rule} after the agent had ended; the sandbox was closed")
        } else {
            format!(
                "killed: frozen by rule {rule} and not decided within {}",
                super::fmt_ms(u64::try_from(self.frozen_limit.as_millis()).unwrap_or(u64::MAX))
            )
        });
        if self.stderr {
            eprintln!(
                "cordon: {}: frozen by rule {rule} and nobody decided; killed",
                self.sandbox
            );
        }
        let (done, detail) = match r {
            Ok(d) => (true, d),
            Err(e) => (false, e.to_string()),
        };
        Some(Kind::Response(pb::Response {
            action: "kill".into(),
            reason: if only_init {
                format!("frozen by rule {rule}; the agent had already ended")
            } else {
                format!("frozen by rule {rule} for the whole frozen_limit")
            },
            done,
            detail,
        }))
    }

    fn run_hook(&mut self, f: &Finding) {
        let Some((program, args)) = self.hook.split_first() else {
            return;
        };
        if self.hooks.len() >= MAX_HOOKS {
            self.notes.push(format!(
                "hook skipped for rule {} ({MAX_HOOKS} still running)",
                f.rule
            ));
            return;
        }
        let e = pb::Event {
            sandbox: self.sandbox.clone(),
            time_unix_ns: crate::events::unix_now_ns(),
            kind: Some(f.event()),
            ..Default::default()
        };
        let mut cmd = Command::new(program);
        crate::sys::at_base_nice(&mut cmd);
        let child = cmd
            .args(args)
            .env("CORDON_SANDBOX", &self.sandbox)
            .env("CORDON_RULE", f.rule)
            .env("CORDON_RESPONSE", f.response.name())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .uid(self.hook_ids.0)
            .gid(self.hook_ids.1)
            .spawn();
        match child {
            Ok(mut c) => {
                if let Some(mut stdin) = c.stdin.take() {
                    let _ = writeln!(stdin, "{}", crate::events::json(&e));
                }
                self.hooks.push(c);
            }
            Err(err) => self.notes.push(format!("hook {program} could not start: {err}")),
        }
    }
}
