//! `unlisted = "ask"`: connections no rule allows, held while a person decides. A held
//! connection waits for the first live rule that speaks for it (`cordon net allow|deny`, the
//! hook the approvals work builds on), for its timeout, or for the agent to give up.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::sync::oneshot;

use super::rules::{Rules, Verdict};

/// A connection waiting for an answer.
struct Held {
    id: u64,
    /// The name the agent resolved; empty for a literal address.
    name: String,
    ip: IpAddr,
    port: u16,
    answer: oneshot::Sender<Answer>,
}

/// The rule that decided a held connection, and who made it.
pub struct Answer {
    pub verdict: Verdict,
    pub by: String,
}

/// How a hold ended.
pub enum Outcome {
    Answered(Answer),
    TimedOut,
    /// The agent closed its end first.
    Abandoned,
}

/// The connections held in one sandbox.
#[derive(Default)]
pub struct Holds {
    held: Mutex<Vec<Held>>,
    last_id: AtomicU64,
}

impl Holds {
    fn held(&self) -> std::sync::MutexGuard<'_, Vec<Held>> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Hold a connection to `name` (or the literal `ip`) on `port`; the receiver gets the
    /// answer.
    pub fn add(&self, name: &str, ip: IpAddr, port: u16) -> (u64, oneshot::Receiver<Answer>) {
        let id = self.last_id.fetch_add(1, Ordering::Relaxed) + 1;
        let (answer, rx) = oneshot::channel();
        self.held().push(Held {
            id,
            name: name.into(),
            ip,
            port,
            answer,
        });
        (id, rx)
    }

    /// The rules changed (by `by`): every held connection a rule now speaks for gets its
    /// answer, allowed or refused; the rest keep waiting.
    pub fn decide(&self, rules: &Rules, by: &str) {
        let mut held = self.held();
        let mut i = 0;
        while i < held.len() {
            let h = &held[i];
            let verdict = if h.name.is_empty() {
                rules.address(h.ip, h.port)
            } else {
                rules.name_port(&h.name, h.port)
            };
            if verdict.unlisted {
                i += 1;
                continue;
            }
            let h = held.swap_remove(i);
            // The waiter is gone only when its connection already ended.
            let _ = h.answer.send(Answer {
                verdict,
                by: by.into(),
            });
        }
    }

    /// Stop holding `id` (its wait ended without an answer).
    pub fn forget(&self, id: u64) {
        self.held().retain(|h| h.id != id);
    }
}

/// Wait for the answer to a held connection, at most `timeout`, noticing when the agent
/// closes its end (its first bytes stay queued for the relay).
pub async fn wait(conn: &TcpStream, answer: oneshot::Receiver<Answer>, timeout: Duration) -> Outcome {
    let closed = async {
        loop {
            match conn.ready(Interest::READABLE).await {
                Ok(r) if r.is_read_closed() => return,
                Ok(_) => {
                    // Bytes arrived (the agent spoke first): clear the readiness without
                    // reading them and wait for the next change.
                    let _ = conn.try_io(Interest::READABLE, || {
                        Err::<(), _>(std::io::ErrorKind::WouldBlock.into())
                    });
                }
                Err(_) => return,
            }
        }
    };
    tokio::select! {
        a = answer => match a {
            Ok(a) => Outcome::Answered(a),
            Err(_) => Outcome::TimedOut,
        },
        () = tokio::time::sleep(timeout) => Outcome::TimedOut,
        () = closed => Outcome::Abandoned,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::egress::parse;

    #[test]
    fn a_live_rule_answers_only_the_holds_it_speaks_for() {
        let mut rules = Rules::for_test(&["a.test"], &[]);
        let holds = Holds::default();
        let ip: IpAddr = "198.18.0.2".parse().unwrap();
        let (_, mut b) = holds.add("b.test", ip, 443);
        let (_, mut c) = holds.add("c.test", ip, 443);
        let (_, mut lit) = holds.add("", "203.0.113.9".parse().unwrap(), 22);
        holds.decide(&rules, "uid 0");
        assert!(
            b.try_recv().is_err() && c.try_recv().is_err(),
            "nothing decided yet"
        );
        rules.add(parse("b.test:443").unwrap(), true, None);
        rules.add(parse("c.test").unwrap(), false, None);
        holds.decide(&rules, "uid 0");
        let b = b.try_recv().unwrap();
        assert!(b.verdict.allowed && b.verdict.rule == "live allow b.test:443" && b.by == "uid 0");
        let c = c.try_recv().unwrap();
        assert!(!c.verdict.allowed && c.verdict.rule == "live deny c.test");
        assert!(lit.try_recv().is_err(), "the literal address is still waiting");
        rules.add(parse("203.0.113.9:22").unwrap(), true, None);
        holds.decide(&rules, "uid 1000");
        assert!(lit.try_recv().unwrap().verdict.allowed);
        assert!(holds.held().is_empty());
    }
}
