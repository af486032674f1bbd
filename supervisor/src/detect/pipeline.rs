//! The monitor inside a sandbox's live pipeline: the rules (and the live baseline) run over
//! each batch of events before it is published — so a freeze is not delayed by the trace's
//! writes — and their findings become `Detection` events and responses.

use std::path::PathBuf;

use super::baseline::{Alphabet, Model};
use super::live::Live;
use super::{act::Actor, cwd, nested::Nested, Config, Detector, Finding};
use crate::events::decode::Decoder;
use crate::events::pb;
use crate::probes::Watch;
use crate::respond::Action;

pub struct Detect {
    rules: Detector,
    actor: Actor,
    findings: Vec<Finding>,
    nested: Nested,
    /// Rules whose findings come from the session's live checks (`supply_chain`).
    external: Vec<crate::profile::monitor::Rule>,
}

/// The run's monitor cannot start.
#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    #[error(transparent)]
    Baseline(#[from] super::baseline::BaselineError),
    #[error("the baseline {0} was learned from plain syscall files; a live run needs one learned from cordon runs or traces")]
    PlainBaseline(String),
}

impl Detect {
    /// Can the run's monitor be built? (The baseline the profile names is read: a missing one
    /// stops the run before the sandbox exists.)
    pub fn check(cfg: &Config) -> Result<(), DetectError> {
        baseline(cfg).map(|_| ())
    }

    /// The run's monitor; the baseline the profile names, if any, is read here.
    pub fn new(cfg: &Config, cgroup: PathBuf, sandbox: String) -> Result<Self, DetectError> {
        let mut rules = Detector::new(cfg, cwd::proc_lookup());
        if let (Some(model), Some(r)) = (baseline(cfg)?, cfg.rule("baseline")) {
            rules.set_baseline(Live::new(model, r.threshold), r);
        }
        Ok(Self {
            rules,
            actor: Actor::new(cfg, cgroup, sandbox),
            findings: Vec::new(),
            nested: Nested::default(),
            external: cfg.rule("supply_chain").into_iter().cloned().collect(),
        })
    }

    /// Judge `events` (a drained batch); detections and responses are appended to it.
    pub fn run(&mut self, watch: &mut Watch, dec: &mut Decoder, events: &mut Vec<pb::Event>) {
        // Whatever the rules: an agent's own sandbox failing inside cordon's is said once.
        let notices: Vec<String> = events.iter().filter_map(|e| self.nested.observe(e)).collect();
        for detail in notices {
            if self.actor.stderr {
                crate::text::eprint(&detail);
            }
            self.actor.notes.push(detail.clone());
            let e = dec.bare(pb::event::Kind::Lifecycle(pb::Lifecycle {
                phase: "notice".into(),
                detail,
                ..Default::default()
            }));
            dec.emit(e, events);
        }
        if self.rules.is_idle() {
            return;
        }
        for e in events.iter() {
            self.rules.observe(e, &mut self.findings);
        }
        if self.rules.wants_written() {
            let now = crate::events::unix_now_ns();
            self.rules.written(watch.written(), now, &mut self.findings);
        }
        self.act(watch, dec, events);
    }

    /// Each finding so far becomes a `Detection` event and its rule's response.
    fn act(&mut self, watch: &mut Watch, dec: &mut Decoder, events: &mut Vec<pb::Event>) {
        for f in std::mem::take(&mut self.findings) {
            let e = dec.bare(f.event());
            dec.emit(e, events);
            let seq = events.last().map_or(0, |e| e.seq);
            let mut deny = || watch.cut_egress();
            if let Some(kind) = self.actor.act(&f, seq, &mut deny) {
                let e = dec.bare(kind);
                dec.emit(e, events);
            }
        }
    }

    /// Does the profile run `rule` (one whose findings the session's live checks make)?
    pub fn runs(&self, rule: &str) -> bool {
        self.external.iter().any(|r| r.name == rule)
    }

    /// A finding of a rule the session checks itself (`supply_chain`), judged like any
    /// other: its event, then its rule's response. `evidence` is the seq of the event that
    /// led to it.
    pub fn external(
        &mut self,
        rule: &str,
        summary: String,
        evidence: u64,
        (watch, dec, events): (&mut Watch, &mut Decoder, &mut Vec<pb::Event>),
    ) {
        let Some(r) = self.external.iter().find(|r| r.name == rule) else {
            return;
        };
        self.findings.push(Finding {
            rule: r.name,
            response: r.response,
            summary,
            evidence: vec![evidence],
            score: 1.0,
            threshold: 1.0,
            window: "live".into(),
            offending_ns: crate::events::unix_now_ns(),
            suppressed: 0,
            target: String::new(),
        });
        self.act(watch, dec, events);
    }

    /// Count the files the workspace holds now, on a thread, for the shares of `deleted` and
    /// `rewritten` (those that have one). The workspace is read as the host sees it: in a
    /// transactional run that is the state before the agent's writes, which stay in its layer.
    pub fn count_start(&self, workspace: &std::path::Path) {
        let wanted = self.rules.start_files();
        if wanted.is_empty() {
            return;
        }
        let ws = workspace.to_path_buf();
        let since = std::time::SystemTime::now();
        let spawned = std::thread::Builder::new()
            .name("cordon-count".into())
            .spawn(move || {
                for (cell, set) in wanted {
                    let _ = cell.set(super::tally::StartFiles::read(&ws, &set, since));
                }
            });
        // No thread: the shares are not judged; the rules' absolute limits still are.
        drop(spawned);
    }

    /// Written files that `watched` picks are kept for the session's live checks.
    pub fn watch_writes(&mut self, watched: fn(&str) -> bool) {
        self.rules.watch_writes(watched);
    }

    /// The files written since the last call that the session watches.
    pub fn take_touched(&mut self) -> Vec<(String, u64)> {
        self.rules.take_touched()
    }

    /// Directories the agent wrote that may be gitdirs (config, hooks, index).
    pub fn take_git_touches(&mut self) -> Vec<String> {
        self.rules.take_git_touches()
    }

    /// The pipeline tick: a rule's freeze that has run out (or has only init left) becomes a
    /// kill, emitted into `events`.
    pub fn tick(&mut self, dec: &mut Decoder, events: &mut Vec<pb::Event>) {
        if let Some(kind) = self.actor.tick() {
            let e = dec.bare(kind);
            dec.emit(e, events);
        }
    }

    /// Someone thawed or killed the sandbox through its socket.
    /// Questions the `ask` responses of rules put to a person since the last call: (rule,
    /// summary). The sandbox is frozen until the answer.
    pub fn take_asks(&mut self) -> Vec<(&'static str, String)> {
        std::mem::take(&mut self.actor.asks)
    }

    pub fn decided(&mut self, action: Action) {
        self.actor.decided(action);
    }

    /// The rule whose `rollback` response killed the sandbox, if one did.
    pub fn rolled_back(&self) -> Option<String> {
        self.actor.rolled_back.map(str::to_string)
    }

    /// cordon's notes about the run with what the rules did added.
    pub fn notes(&self, notes: String) -> String {
        let mut all: Vec<String> = Vec::new();
        if !notes.is_empty() {
            all.push(notes);
        }
        all.extend(self.actor.notes.iter().cloned());
        for (rule, n) in self.rules.unreported() {
            all.push(format!(
                "{n} further detections of rule {rule} not reported one by one"
            ));
        }
        all.join("; ")
    }
}

/// The baseline model the profile's `baseline` rule names, if any.
fn baseline(cfg: &Config) -> Result<Option<Model>, DetectError> {
    let Some(r) = cfg.rule("baseline") else {
        return Ok(None);
    };
    let path = r.file.clone().unwrap_or_default();
    let model = Model::load(std::path::Path::new(&path))?;
    if model.alphabet() != Alphabet::Events {
        return Err(DetectError::PlainBaseline(path));
    }
    Ok(Some(model))
}
