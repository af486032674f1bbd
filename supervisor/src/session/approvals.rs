//! The approval broker of one sandbox (docs/approvals.md): every question a person answers —
//! a connection no rule allows (`unlisted = "ask"`), a monitor rule whose response is `ask`,
//! the agent's own request (`cordon-request`) — is held here with an id until `cordon
//! approve|deny`, the profile's hook, a remembered answer or the timeout decides it.
//!
//! Fatigue controls live here too: an identical question while one is pending joins it
//! instead of asking again; an answer given `--for` is remembered for that long; more than
//! `approvals.per_minute` new questions a minute are refused without asking, and say so.
//! Every question and every answer is an `Approval` event.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use crate::events::pb::{self, event::Kind};
use crate::text::Refusal;

/// What the profile's `[approvals]` says, and the terminal to ask on.
#[derive(Clone)]
pub struct Settings {
    /// Unanswered questions are refused after this long.
    pub timeout: Duration,
    /// New questions a minute; past it they are refused without asking.
    pub per_minute: u32,
    /// A command that gets each question as JSON and may answer it.
    pub hook: Vec<String>,
    /// The hook runs as this user and group (the one who started the run).
    pub hook_ids: (u32, u32),
    /// Interactive runs: the user's terminal, where each question is asked too.
    pub desk: Option<Arc<crate::launch::desk::Desk>>,
    /// The agent's secrets: replaced in what it asks before anyone (the terminal, the hook,
    /// `cordon pending`, the events) sees it.
    pub redactor: crate::secret::Redactor,
}

/// One question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    /// "connect", "read", "write", "net", "rule".
    pub what: String,
    pub target: String,
    /// In the asker's words.
    pub why: String,
    /// "pid 412 (python3)", "rule breadth", "connection".
    pub asker: String,
}

/// How a question ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub approved: bool,
    /// "allowed", "refused", "timed out", "abandoned".
    pub state: &'static str,
    /// Who answered; empty when nobody did.
    pub by: String,
    /// What decided it.
    pub rule: String,
    /// `--for`: how long the answer is remembered (and a grant lasts); 0: this once.
    pub for_ms: u64,
}

impl Answer {
    pub fn refused(state: &'static str, rule: impl Into<String>) -> Answer {
        Answer {
            approved: false,
            state,
            by: String::new(),
            rule: rule.into(),
            for_ms: 0,
        }
    }
}

struct Pending {
    id: u64,
    q: Question,
    asked: Instant,
    waiters: Vec<oneshot::Sender<Answer>>,
}

struct Remembered {
    what: String,
    target: String,
    approved: bool,
    until: Instant,
    by: String,
    from: u64,
}

#[derive(Default)]
struct Inner {
    last_id: u64,
    pending: Vec<Pending>,
    remembered: Vec<Remembered>,
    /// When recent new questions were asked (for the rate limit).
    recent: VecDeque<Instant>,
    /// What the monitor said lately, for the summary line.
    seen: VecDeque<String>,
}

/// The broker.
pub struct Approvals {
    sandbox: String,
    settings: Settings,
    events: mpsc::Sender<Kind>,
    inner: Mutex<Inner>,
}

/// Detections kept for the summary line.
const SEEN: usize = 3;
/// A hook's answer is its first line; more than this is not read.
const HOOK_ANSWER_MAX: usize = 4096;

impl Approvals {
    pub fn new(sandbox: String, settings: Settings, events: mpsc::Sender<Kind>) -> Arc<Self> {
        Arc::new(Self {
            sandbox,
            settings,
            events,
            inner: Mutex::new(Inner::default()),
        })
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn timeout(&self) -> Duration {
        self.settings.timeout
    }

    /// The monitor fired `rule`: kept for the next questions' summary lines.
    pub fn saw(&self, rule: &str, summary: &str) {
        let mut inner = self.inner();
        if inner.seen.len() == SEEN {
            inner.seen.pop_front();
        }
        inner.seen.push_back(format!(
            "{rule}: {}",
            crate::text::preview(summary.as_bytes(), 120)
        ));
    }

    /// Ask `q` and wait for its answer (a person's, the hook's, a remembered one, or the
    /// timeout's). Returns the request's id with it.
    pub async fn ask(self: &Arc<Self>, q: Question) -> (u64, Answer) {
        let (id, rx) = match self.open(q).await {
            Ok(done) => return done,
            Err(waiting) => waiting,
        };
        self.wait(id, rx).await
    }

    /// Ask `q` without waiting: `Ok` when it is decided at once (remembered, over the limit),
    /// else its id and where the answer will come.
    pub async fn open(
        self: &Arc<Self>,
        mut q: Question,
    ) -> Result<(u64, Answer), (u64, oneshot::Receiver<Answer>)> {
        self.settings.redactor.field(&mut q.target);
        self.settings.redactor.field(&mut q.why);
        let now = Instant::now();
        let (tx, rx) = oneshot::channel();
        let decided = {
            let mut inner = self.inner();
            inner.remembered.retain(|r| r.until > now);
            if let Some(p) = inner
                .pending
                .iter_mut()
                .find(|p| p.q.what == q.what && p.q.target == q.target)
            {
                // The same question is already waiting: one answer serves both.
                p.waiters.push(tx);
                return Err((p.id, rx));
            }
            inner.last_id += 1;
            let id = inner.last_id;
            if let Some(r) = inner
                .remembered
                .iter()
                .find(|r| r.what == q.what && r.target == q.target)
            {
                (
                    id,
                    Some(Answer {
                        approved: r.approved,
                        state: if r.approved { "allowed" } else { "refused" },
                        by: r.by.clone(),
                        rule: format!("remembered from #{}", r.from),
                        for_ms: 0,
                    }),
                )
            } else {
                while inner
                    .recent
                    .front()
                    .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(60))
                {
                    inner.recent.pop_front();
                }
                if inner.recent.len() >= self.settings.per_minute as usize {
                    (
                        id,
                        Some(Answer::refused(
                            "refused",
                            format!(
                                "over approvals.per_minute ({} questions a minute): refused without asking",
                                self.settings.per_minute
                            ),
                        )),
                    )
                } else {
                    inner.recent.push_back(now);
                    inner.pending.push(Pending {
                        id,
                        q: q.clone(),
                        asked: now,
                        waiters: vec![tx],
                    });
                    (id, None)
                }
            }
        };
        match decided {
            (id, Some(answer)) => {
                self.event(id, &q, &answer, Duration::ZERO).await;
                Ok((id, answer))
            }
            (id, None) => {
                let asked = pb::Approval {
                    state: "asked".into(),
                    timeout_ms: millis(self.settings.timeout),
                    ..record(id, &q)
                };
                let _ = self.events.send(Kind::Approval(asked)).await;
                if let Some(d) = &self.settings.desk {
                    let line = describe(&q.what, &q.target, &q.why, &q.asker);
                    d.ask(id, crate::text::escape(&line).into_owned());
                }
                if !self.settings.hook.is_empty() {
                    let me = self.clone();
                    tokio::spawn(async move { me.run_hook(id, q).await });
                }
                Err((id, rx))
            }
        }
    }

    /// Record `q` as refused without asking anyone (it asks for what nobody may grant).
    pub async fn refuse_unasked(&self, q: Question, why: &str) {
        self.unasked(&q, Answer::refused("refused", why)).await;
    }

    /// Record `q` as approved without asking anyone, by `by` (the profile says so).
    pub async fn approve_unasked(&self, q: Question, by: &str) -> (u64, Answer) {
        let a = Answer {
            approved: true,
            state: "allowed",
            by: by.into(),
            rule: "unasked".into(),
            for_ms: 0,
        };
        (self.unasked(&q, a.clone()).await, a)
    }

    async fn unasked(&self, q: &Question, a: Answer) -> u64 {
        let id = {
            let mut inner = self.inner();
            inner.last_id += 1;
            inner.last_id
        };
        self.event(id, q, &a, Duration::ZERO).await;
        id
    }

    /// Wait for request `id`'s answer, at most the profile's timeout from now.
    pub async fn wait(self: &Arc<Self>, id: u64, rx: oneshot::Receiver<Answer>) -> (u64, Answer) {
        self.wait_for(id, rx, self.settings.timeout).await
    }

    /// [`Self::wait`] with another timeout (a held connection's `network.ask_timeout`).
    pub async fn wait_for(
        &self,
        id: u64,
        mut rx: oneshot::Receiver<Answer>,
        timeout: Duration,
    ) -> (u64, Answer) {
        tokio::select! {
            a = &mut rx => return (id, a.unwrap_or_else(|_| Answer::refused("refused", "the run is ending"))),
            () = tokio::time::sleep(timeout) => {}
        }
        let rule = format!("nobody answered within {} s", timeout.as_secs());
        self.close(id, Answer::refused("timed out", rule)).await;
        // An answer may have raced the timeout: whichever closed it first is the answer.
        let a = rx.await;
        (
            id,
            a.unwrap_or_else(|_| Answer::refused("refused", "the run is ending")),
        )
    }

    /// End request `id` with `answer` (from a person, a live rule, the asker giving up):
    /// every waiter gets it and it is recorded. False if it was not pending.
    pub async fn close(&self, id: u64, answer: Answer) -> bool {
        let taken = {
            let mut inner = self.inner();
            let Some(i) = inner.pending.iter().position(|p| p.id == id) else {
                return false;
            };
            let p = inner.pending.swap_remove(i);
            // A rule's question is about what the agent just did, not about the rule: its
            // answer is never remembered (that would switch the rule off for a while).
            let rememberable = p.q.what != "rule";
            if rememberable && answer.for_ms > 0 && (answer.state == "allowed" || answer.state == "refused") {
                let (what, target) = (p.q.what.clone(), p.q.target.clone());
                inner
                    .remembered
                    .retain(|r| !(r.what == what && r.target == target));
                inner.remembered.push(Remembered {
                    what,
                    target,
                    approved: answer.approved,
                    until: Instant::now() + Duration::from_millis(answer.for_ms),
                    by: answer.by.clone(),
                    from: id,
                });
            }
            p
        };
        self.event(id, &taken.q, &answer, taken.asked.elapsed()).await;
        if let Some(d) = &self.settings.desk {
            d.withdraw(id, how(&answer));
        }
        for w in taken.waiters {
            let _ = w.send(answer.clone());
        }
        true
    }

    /// The run is ending: every question still waiting is refused ("abandoned") and recorded.
    /// Synchronous (the session's end is not async); the event queue is not full at the end.
    pub fn end_all(&self, why: &str) {
        let pending = std::mem::take(&mut self.inner().pending);
        for p in pending {
            let answer = Answer::refused("abandoned", why);
            let e = decided(p.id, &p.q, &answer, p.asked.elapsed());
            let _ = self.events.try_send(e);
            if let Some(d) = &self.settings.desk {
                d.withdraw(p.id, how(&answer));
            }
            for w in p.waiters {
                let _ = w.send(answer.clone());
            }
        }
    }

    /// `cordon approve|deny`: answer request `id`.
    pub async fn answer(&self, id: u64, approve: bool, for_ms: u64, by: &str) -> Result<String, Refusal> {
        let q = {
            let inner = self.inner();
            match inner.pending.iter().find(|p| p.id == id) {
                Some(p) => p.q.clone(),
                None if id == 0 || id > inner.last_id => {
                    return Err(Refusal::from(format!(
                        "no request #{id} in this sandbox (`cordon pending` lists them)"
                    )))
                }
                None => {
                    return Err(Refusal::from(format!(
                        "request #{id} is no longer pending (answered, timed out or given up; its events say which)"
                    )))
                }
            }
        };
        let answer = Answer {
            approved: approve,
            state: if approve { "allowed" } else { "refused" },
            by: by.into(),
            rule: "answered".into(),
            for_ms,
        };
        if !self.close(id, answer).await {
            return Err(Refusal::from(format!("request #{id} was decided meanwhile")));
        }
        let remembered = if for_ms > 0 {
            format!(", remembered for {}", crate::detect::fmt_ms(for_ms))
        } else {
            String::new()
        };
        Ok(format!(
            "#{id} {} {} {}{remembered}",
            if approve { "approved:" } else { "denied:" },
            q.what,
            q.target
        ))
    }

    /// The pending requests, one summary line each (who, what, why, what the monitor saw).
    pub fn list(&self) -> String {
        let inner = self.inner();
        if inner.pending.is_empty() {
            return String::new();
        }
        let seen = if inner.seen.is_empty() {
            "nothing".to_string()
        } else {
            inner.seen.iter().cloned().collect::<Vec<_>>().join("; ")
        };
        let mut lines: Vec<String> = inner
            .pending
            .iter()
            .map(|p| summary(&self.sandbox, p, self.settings.timeout, &seen))
            .collect();
        lines.sort();
        lines.join("\n")
    }

    /// How many are waiting.
    pub fn waiting(&self) -> usize {
        self.inner().pending.len()
    }

    async fn event(&self, id: u64, q: &Question, a: &Answer, waited: Duration) {
        let _ = self.events.send(decided(id, q, a, waited)).await;
    }

    /// Give the question to the profile's hook (JSON on its stdin); its first line of output
    /// may answer: `approve`, `approve 10m`, `deny`, `deny 10m`. Anything else leaves it to
    /// a person.
    async fn run_hook(self: Arc<Self>, id: u64, q: Question) {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let Some((program, args)) = self.settings.hook.split_first() else {
            return;
        };
        let request = serde_json::json!({
            "sandbox": self.sandbox,
            "id": id,
            "what": q.what,
            "target": q.target,
            "why": q.why,
            "asker": q.asker,
            "timeout_ms": millis(self.settings.timeout),
        });
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(args)
            .env("CORDON_SANDBOX", &self.sandbox)
            .env("CORDON_REQUEST", id.to_string())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .uid(self.settings.hook_ids.0)
            .gid(self.settings.hook_ids.1)
            .kill_on_drop(true);
        crate::sys::at_base_nice(cmd.as_std_mut());
        let Ok(mut child) = cmd.spawn() else {
            return;
        };
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(format!("{request}\n").as_bytes()).await;
        }
        let Some(stdout) = child.stdout.take() else {
            return;
        };
        let mut out = Vec::new();
        let mut limited = stdout.take(HOOK_ANSWER_MAX as u64);
        let read = limited.read_to_end(&mut out);
        if tokio::time::timeout(self.settings.timeout, read).await.is_err() {
            return;
        }
        // A hook that closed its output but goes on is not waited for (dropped: killed).
        let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
        let text = String::from_utf8_lossy(&out);
        if let Some((approve, for_ms)) = parse_hook_answer(text.lines().next().unwrap_or("")) {
            let by = format!("hook {program}");
            let _ = self.answer(id, approve, for_ms, &by).await;
        }
    }
}

/// `approve`, `approve 10m`, `approve for 10m`, `deny`… (case-insensitive).
fn parse_hook_answer(line: &str) -> Option<(bool, u64)> {
    let mut words = line.split_whitespace();
    let approve = match words.next()?.to_ascii_lowercase().as_str() {
        "approve" | "allow" | "yes" => true,
        "deny" | "refuse" | "no" => false,
        _ => return None,
    };
    let mut rest: Vec<&str> = words.collect();
    if rest.first() == Some(&"for") {
        rest.remove(0);
    }
    let for_ms = match rest.as_slice() {
        [] => 0,
        [d] => crate::profile::units::parse_millis(d).ok()?,
        _ => return None,
    };
    Some((approve, for_ms))
}

/// Request `id`'s question as an event, before its state is set.
fn record(id: u64, q: &Question) -> pb::Approval {
    pb::Approval {
        id,
        what: q.what.clone(),
        target: q.target.clone(),
        why: q.why.clone(),
        asker: q.asker.clone(),
        ..Default::default()
    }
}

/// The event of request `id` decided by `a` after `waited`.
fn decided(id: u64, q: &Question, a: &Answer, waited: Duration) -> Kind {
    Kind::Approval(pb::Approval {
        state: a.state.into(),
        rule: a.rule.clone(),
        by: a.by.clone(),
        waited_ms: millis(waited),
        for_ms: a.for_ms,
        ..record(id, q)
    })
}

/// A question in words, as the terminal and cordon's stderr show it (escaped by the caller):
/// who asks what, and why in the asker's words.
pub fn describe(what: &str, target: &str, why: &str, asker: &str) -> String {
    let said = match what {
        "connect" => format!("the agent wants to connect to {target}"),
        "rule" => return format!("rule {target} froze the sandbox: {why}"),
        w => format!("{asker} asks to {w} {target}"),
    };
    if why.is_empty() {
        said
    } else {
        format!("{said} — \"{}\"", crate::text::preview(why.as_bytes(), 200))
    }
}

/// An answer in words ("allowed by uid 0", "timed out").
fn how(a: &Answer) -> String {
    if a.by.is_empty() {
        format!("{} ({})", a.state, a.rule)
    } else {
        format!("{} by {}", a.state, a.by)
    }
}

fn summary(sandbox: &str, p: &Pending, timeout: Duration, seen: &str) -> String {
    let left = timeout.saturating_sub(p.asked.elapsed()).as_secs();
    let why = if p.q.why.is_empty() {
        String::new()
    } else {
        format!(" — \"{}\"", crate::text::preview(p.q.why.as_bytes(), 200))
    };
    let joined = if p.waiters.len() > 1 {
        format!(" ({} asks)", p.waiters.len())
    } else {
        String::new()
    };
    format!(
        "{sandbox}/{:<3} {} {}{why}  asked by {}{joined} {} s ago, refused in {left} s; monitor lately: {seen}",
        p.id,
        p.q.what,
        p.q.target,
        p.q.asker,
        p.asked.elapsed().as_secs(),
    )
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn broker(per_minute: u32, timeout_ms: u64) -> (Arc<Approvals>, mpsc::Receiver<Kind>) {
        let (tx, rx) = mpsc::channel(64);
        let settings = Settings {
            timeout: Duration::from_millis(timeout_ms),
            per_minute,
            hook: vec![],
            hook_ids: (0, 0),
            desk: None,
            redactor: crate::secret::Redactor::default(),
        };
        (Approvals::new("sb".into(), settings, tx), rx)
    }

    fn q(what: &str, target: &str) -> Question {
        Question {
            what: what.into(),
            target: target.into(),
            why: "because".into(),
            asker: "pid 7 (sh)".into(),
        }
    }

    fn states(rx: &mut mpsc::Receiver<Kind>) -> Vec<(u64, String, String)> {
        let mut out = vec![];
        while let Ok(Kind::Approval(a)) = rx.try_recv() {
            out.push((a.id, a.state, a.rule));
        }
        out
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn an_answer_reaches_every_asker_of_the_same_question_and_is_remembered_for_its_time() {
        rt().block_on(async {
            let (b, mut rx) = broker(10, 5_000);
            let (id, first) = b.open(q("read", "/d")).await.unwrap_err();
            let (id2, second) = b.open(q("read", "/d")).await.unwrap_err();
            assert_eq!(id, id2, "an identical question joins the pending one");
            assert!(b.list().contains("(2 asks)"), "{}", b.list());
            let said = b.answer(id, true, 60_000, "uid 0").await.unwrap();
            assert!(said.contains("approved") && said.contains("remembered"), "{said}");
            assert!(first.await.unwrap().approved && second.await.unwrap().approved);
            // Asked again within its time: answered at once, without a question.
            let (id3, again) = b.open(q("read", "/d")).await.unwrap();
            assert!(again.approved && again.rule == format!("remembered from #{id}"));
            assert!(id3 > id);
            // Another question is asked.
            assert!(b.open(q("read", "/e")).await.is_err());
            let s = states(&mut rx);
            let got: Vec<&str> = s.iter().map(|x| x.1.as_str()).collect();
            assert_eq!(got, ["asked", "allowed", "allowed", "asked"], "{s:?}");
        });
    }

    #[test]
    fn nobody_answering_refuses_at_the_timeout_and_late_answers_are_refused() {
        rt().block_on(async {
            let (b, mut rx) = broker(10, 50);
            let (id, a) = b.ask(q("connect", "x.test:443")).await;
            assert_eq!((a.approved, a.state), (false, "timed out"));
            let late = b.answer(id, true, 0, "uid 0").await.unwrap_err();
            assert!(late.0.contains("no longer pending"), "{}", late.0);
            let never = b.answer(99, true, 0, "uid 0").await.unwrap_err();
            assert!(never.0.contains("no request #99"), "{}", never.0);
            let s = states(&mut rx);
            assert_eq!(s.len(), 2);
            assert!(s[1].2.contains("nobody answered"), "{s:?}");
        });
    }

    #[test]
    fn questions_past_the_rate_limit_are_refused_without_asking() {
        rt().block_on(async {
            let (b, mut rx) = broker(2, 5_000);
            assert!(b.open(q("read", "/a")).await.is_err());
            assert!(b.open(q("read", "/b")).await.is_err());
            let (_, over) = b.open(q("read", "/c")).await.unwrap();
            assert!(
                !over.approved && over.rule.contains("per_minute"),
                "{}",
                over.rule
            );
            assert_eq!(b.waiting(), 2);
            assert_eq!(states(&mut rx).len(), 3);
        });
    }

    #[test]
    fn a_denial_given_for_a_while_refuses_the_same_question_meanwhile() {
        rt().block_on(async {
            let (b, _rx) = broker(10, 5_000);
            let (id, _w) = b.open(q("net", "evil.test:443")).await.unwrap_err();
            b.answer(id, false, 60_000, "uid 1000").await.unwrap();
            let (_, again) = b.open(q("net", "evil.test:443")).await.unwrap();
            assert!(!again.approved && again.by == "uid 1000");
        });
    }

    #[test]
    fn hook_answers_are_read_strictly() {
        assert_eq!(parse_hook_answer("approve"), Some((true, 0)));
        assert_eq!(parse_hook_answer("APPROVE for 10m"), Some((true, 600_000)));
        assert_eq!(parse_hook_answer("deny 30s"), Some((false, 30_000)));
        assert_eq!(parse_hook_answer("approve forever"), None);
        assert_eq!(parse_hook_answer("maybe"), None);
        assert_eq!(parse_hook_answer(""), None);
    }
}
