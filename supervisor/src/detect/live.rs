//! The learned baseline, live: each process of a sandbox scored as its recorded syscalls arrive
//! (`[monitor.baseline]`), with the locality-frame method (`Method::Frames`): a per-position
//! anomaly that needs no more than the last `N` symbols, so it runs in constant memory per
//! process. The whole-sequence kNN method (`cordon score`'s default) is not used live: see
//! docs/monitor.md.

use std::collections::HashMap;

use super::baseline::{event_symbol, symbol_name, Abi, Alphabet, Model, FRAME, N};
use crate::events::pb::{self, event::Kind};

/// Live scoring of one sandbox: a sliding frame per process.
pub struct Live {
    model: Model,
    threshold: f64,
    procs: HashMap<u32, Proc>,
    reported: std::collections::HashSet<String>,
}

#[derive(Default)]
struct Proc {
    recent: Vec<u32>,
    seqs: Vec<u64>,
    anomalies: [f64; FRAME],
    sum: f64,
    seen: usize,
    fired: bool,
}

/// A live window over the threshold.
pub struct Hit {
    pub score: f64,
    pub window: String,
    pub evidence: Vec<u64>,
}

impl Live {
    pub fn new(model: Model, threshold: f64) -> Self {
        Self {
            model,
            threshold,
            procs: HashMap::new(),
            reported: Default::default(),
        }
    }

    /// Syscalls in `counts` no training run made, not reported before, with their counts.
    pub fn new_syscalls(&mut self, counts: &std::collections::HashMap<String, u64>) -> Vec<(String, u64)> {
        if self.model.syscalls().is_empty() {
            return Vec::new();
        }
        let mut new: Vec<(String, u64)> = counts
            .iter()
            .filter(|(n, &c)| c > 0 && !self.model.syscalls().contains_key(*n) && !self.reported.contains(*n))
            .map(|(n, &c)| (n.clone(), c))
            .collect();
        new.sort();
        for (n, _) in &new {
            self.reported.insert(n.clone());
        }
        new
    }

    pub fn model(&self) -> &Model {
        &self.model
    }

    /// Add one event; a hit when the process's last frame scores at or over the threshold
    /// (once per process, until its frame falls below the threshold again).
    pub fn observe(&mut self, e: &pb::Event) -> Option<Hit> {
        if let Some(Kind::Exit(x)) = &e.kind {
            if x.process {
                self.procs.remove(&e.host_pid);
            }
            return None;
        }
        let sym = event_symbol(e)?;
        let p = self.procs.entry(e.host_pid).or_default();
        if p.recent.len() == N {
            p.recent.remove(0);
        }
        p.recent.push(sym);
        if p.seqs.len() == FRAME {
            p.seqs.remove(0);
        }
        p.seqs.push(e.seq);
        // The recent symbols stand in for the whole sequence: position = len - 1.
        let a = self.model.anomaly(&p.recent, p.recent.len() - 1);
        let slot = p.seen % FRAME;
        p.sum += a - p.anomalies[slot];
        p.anomalies[slot] = a;
        p.seen += 1;
        if p.seen < FRAME {
            return None;
        }
        let mean = p.sum / FRAME as f64;
        if mean < self.threshold {
            p.fired = false;
            return None;
        }
        if p.fired {
            return None;
        }
        p.fired = true;
        let names: Vec<String> = p
            .recent
            .iter()
            .map(|&s| symbol_name(s, Alphabet::Events, Abi::X86_64))
            .collect();
        Some(Hit {
            score: mean,
            window: names.join(" "),
            evidence: p.seqs.clone(),
        })
    }
}
