//! What a rule reports when it fires.

use crate::events::pb::{self, event::Kind};
use crate::profile::monitor::Response;

/// A rule fired.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub rule: &'static str,
    pub response: Response,
    pub summary: String,
    pub evidence: Vec<u64>,
    pub score: f64,
    pub threshold: f64,
    pub window: String,
    pub offending_ns: u64,
    pub suppressed: u64,
    /// What the rule fired about (a path rule's pattern): reports are throttled per (rule,
    /// target), so one noisy target never hides another. Empty: the rule as a whole.
    pub target: String,
}

impl Finding {
    /// The same finding, throttled apart from the rule's other targets.
    pub fn about(mut self, target: impl Into<String>) -> Self {
        self.target = target.into();
        self
    }

    pub fn event(&self) -> Kind {
        Kind::Detection(pb::Detection {
            rule: self.rule.into(),
            summary: self.summary.clone(),
            response: self.response.name().into(),
            evidence: self.evidence.clone(),
            score: self.score,
            threshold: self.threshold,
            window: self.window.clone(),
            offending_time_unix_ns: self.offending_ns,
            suppressed: self.suppressed,
        })
    }
}
