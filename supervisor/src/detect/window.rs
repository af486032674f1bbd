//! Counting events over a sliding time window (the rate rules), and the per-rule throttle.

use std::collections::VecDeque;

use super::Finding;
use crate::profile::monitor::Rule;

pub struct Window {
    rule: Rule,
    what: &'static str,
    times: VecDeque<(u64, u64)>,
}

impl Window {
    pub fn new(rule: &Rule, what: &'static str) -> Self {
        Self {
            rule: rule.clone(),
            what,
            times: VecDeque::new(),
        }
    }

    /// Count one event; fire when more than `limit` fall within the window (then start over).
    pub fn push(&mut self, t: u64, seq: u64, label: &str) -> Option<Finding> {
        let window_ns = self.rule.window_ms * 1_000_000;
        while self
            .times
            .front()
            .is_some_and(|&(t0, _)| t.saturating_sub(t0) > window_ns)
        {
            self.times.pop_front();
        }
        self.times.push_back((t, seq));
        if (self.times.len() as u64) <= self.rule.limit {
            return None;
        }
        let n = self.times.len();
        let span = t.saturating_sub(self.times[0].0);
        let evidence: Vec<u64> = self.times.iter().map(|&(_, s)| s).collect();
        self.times.clear();
        Some(Finding {
            rule: self.rule.name,
            response: self.rule.response,
            summary: format!(
                "{n} {}{label} within {:.2} s (limit {} per {})",
                self.what,
                span as f64 / 1e9,
                self.rule.limit,
                fmt_ms(self.rule.window_ms)
            ),
            evidence: keep_ends(evidence),
            score: n as f64,
            threshold: self.rule.limit as f64,
            window: format!("{n} in {:.2} s", span as f64 / 1e9),
            offending_ns: t,
            suppressed: 0,
            target: String::new(),
        })
    }
}

pub fn fmt_ms(ms: u64) -> String {
    if ms.is_multiple_of(1000) {
        format!("{} s", ms / 1000)
    } else {
        format!("{ms} ms")
    }
}

/// Evidence of a rate: the first 8 and the last 8 events (the offending one last).
fn keep_ends(mut v: Vec<u64>) -> Vec<u64> {
    if v.len() > 16 {
        let tail = v.split_off(v.len() - 8);
        v.truncate(8);
        v.extend(tail);
    }
    v
}

#[derive(Default)]
pub struct Throttle {
    pub second: u64,
    pub reported: u32,
    pub suppressed: u64,
}
