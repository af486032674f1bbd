//! The learned baseline: which short syscall sequences a workload makes when it behaves.
//!
//! Training keeps every n-gram (n = 1..=`N`) of each process's syscall sequence, with its
//! count, and how often each syscall occurred. Scoring slides over a sequence; at each
//! position the anomaly is `1 - L/N`, where `L` is the length of the longest run of syscalls
//! ending there that training saw (STIDE with back-off: a window that is new only in its
//! oldest call scores 1/N, a syscall never seen at all scores 1). A sequence's score is the
//! highest mean anomaly over `FRAME` consecutive positions (a locality frame), so it is in
//! [0, 1] and does not grow with the length of the input. The frame that scored highest is
//! the explanation: its syscalls are printed.
//!
//! `Method::Stide` is the classic method for comparison: the fraction of length-6 windows
//! not seen in training.
//!
//! Two alphabets: `syscalls` (plain syscall numbers, from files one trace per file) and
//! `events` (what cordon records whole: the security-relevant syscalls with their outcome,
//! from traces and from the live stream). A baseline scores only inputs of its alphabet.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::io::{Read, Write};
use std::path::Path;

use crate::events::pb::{self, event::Kind};

/// Longest n-gram kept.
pub const N: usize = 6;
/// Positions in a locality frame.
pub const FRAME: usize = 20;
const MAGIC: &[u8] = b"cordon-baseline-v1\n";

/// Keys are already mixed: hash them as they are.
#[derive(Default)]
pub struct Identity(u64);

impl Hasher for Identity {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, _: &[u8]) {
        unreachable!("only u64 keys")
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type Grams = HashMap<u64, u32, BuildHasherDefault<Identity>>;

#[inline]
fn mix(h: u64, sym: u32) -> u64 {
    (h ^ u64::from(sym))
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .rotate_left(29)
        ^ 0xA076_1D64_78BD_642F
}

const SEED: u64 = 0x2545_F491_4F6C_DD1D;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Alphabet {
    Syscalls,
    Events,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Cordon,
    Stide,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Header {
    alphabet: Alphabet,
    n: usize,
    frame: usize,
    sequences: u64,
    symbols: u64,
    /// Occurrences of each symbol in training.
    frequency: Vec<(u32, u64)>,
    /// Every syscall the training runs made, by name, with its count (from the runs' syscall
    /// counts, which cover all syscalls, not only the recorded ones).
    #[serde(default)]
    syscalls: std::collections::BTreeMap<String, u64>,
    sources: Vec<String>,
}

/// A trained baseline.
#[derive(Debug, Clone)]
pub struct Model {
    header: Header,
    grams: Grams,
    freq: HashMap<u32, u64>,
}

/// The score of one sequence and where it was worst.
#[derive(Debug, Clone, PartialEq)]
pub struct Score {
    pub score: f64,
    /// Position (index in the sequence) where the worst frame ends.
    pub at: usize,
    /// The syscalls of the worst frame (at most `FRAME`).
    pub window: Vec<u32>,
}

impl Model {
    pub fn new(alphabet: Alphabet) -> Self {
        Self {
            header: Header {
                alphabet,
                n: N,
                frame: FRAME,
                sequences: 0,
                symbols: 0,
                frequency: Vec::new(),
                syscalls: Default::default(),
                sources: Vec::new(),
            },
            grams: Grams::default(),
            freq: HashMap::new(),
        }
    }

    pub fn alphabet(&self) -> Alphabet {
        self.header.alphabet
    }

    pub fn sequences(&self) -> u64 {
        self.header.sequences
    }

    pub fn grams(&self) -> usize {
        self.grams.len()
    }

    pub fn add_source(&mut self, s: String) {
        self.header.sources.push(s);
    }

    /// Learn the syscall counts of a run (all syscalls, by name).
    pub fn train_counts<'a>(&mut self, counts: impl IntoIterator<Item = (&'a String, &'a u64)>) {
        for (name, n) in counts {
            *self.header.syscalls.entry(name.clone()).or_default() += n;
        }
    }

    /// Learn one sequence.
    pub fn train(&mut self, seq: &[u32]) {
        self.header.sequences += 1;
        self.header.symbols += seq.len() as u64;
        if self.header.alphabet == Alphabet::Syscalls {
            for &s in seq {
                *self
                    .header
                    .syscalls
                    .entry(symbol_name(s, Alphabet::Syscalls))
                    .or_default() += 1;
            }
        }
        for i in 0..seq.len() {
            *self.freq.entry(seq[i]).or_default() += 1;
            let mut h = SEED;
            for l in 0..N.min(i + 1) {
                h = mix(h, seq[i - l]);
                let c = self.grams.entry(h).or_default();
                *c = c.saturating_add(1);
            }
        }
    }

    /// Length of the longest run ending at `i` that training saw (0..=N).
    #[inline]
    fn known(&self, seq: &[u32], i: usize) -> usize {
        let mut h = SEED;
        for l in 0..N.min(i + 1) {
            h = mix(h, seq[i - l]);
            if !self.grams.contains_key(&h) {
                return l;
            }
        }
        N.min(i + 1)
    }

    /// Anomaly of position `i` (see the module doc).
    #[inline]
    pub fn anomaly(&self, seq: &[u32], i: usize) -> f64 {
        let full = N.min(i + 1);
        1.0 - self.known(seq, i) as f64 / full as f64
    }

    pub fn score(&self, seq: &[u32], method: Method) -> Score {
        match method {
            Method::Cordon => self.score_frames(seq),
            Method::Stide => self.score_stide(seq),
        }
    }

    fn score_frames(&self, seq: &[u32]) -> Score {
        if seq.is_empty() {
            return Score {
                score: 0.0,
                at: 0,
                window: Vec::new(),
            };
        }
        let frame = FRAME.min(seq.len());
        let mut ring = [0.0f64; FRAME];
        let mut sum = 0.0;
        let (mut best, mut at) = (-1.0, 0);
        for i in 0..seq.len() {
            let a = self.anomaly(seq, i);
            sum += a - ring[i % frame];
            ring[i % frame] = a;
            if i + 1 >= frame {
                let mean = sum / frame as f64;
                if mean > best + 1e-12 {
                    best = mean;
                    at = i;
                }
            }
        }
        Score {
            score: best.clamp(0.0, 1.0),
            at,
            window: seq[at + 1 - frame..=at].to_vec(),
        }
    }

    fn score_stide(&self, seq: &[u32]) -> Score {
        if seq.len() < N {
            let unseen = self.known(seq, seq.len().saturating_sub(1)) < seq.len();
            return Score {
                score: if unseen { 1.0 } else { 0.0 },
                at: seq.len().saturating_sub(1),
                window: seq.to_vec(),
            };
        }
        let mut miss = 0usize;
        let mut first = None;
        for i in N - 1..seq.len() {
            if self.known(seq, i) < N {
                miss += 1;
                first.get_or_insert(i);
            }
        }
        let at = first.unwrap_or(N - 1);
        Score {
            score: miss as f64 / (seq.len() + 1 - N) as f64,
            at,
            window: seq[at + 1 - N..=at].to_vec(),
        }
    }

    /// Did any training run make this syscall (by name)?
    pub fn knows_syscall(&self, name: &str) -> bool {
        self.header.syscalls.is_empty() || self.header.syscalls.contains_key(name)
    }

    pub fn save(&self, path: &Path) -> Result<(), BaselineError> {
        let mut header = self.header.clone();
        header.frequency = self.freq.iter().map(|(&s, &n)| (s, n)).collect();
        header.frequency.sort_unstable();
        let mut keys: Vec<(u64, u32)> = self.grams.iter().map(|(&k, &v)| (k, v)).collect();
        keys.sort_unstable();
        let mut out = Vec::with_capacity(MAGIC.len() + 256 + keys.len() * 12);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(
            serde_json::to_string(&header)
                .map_err(BaselineError::Encode)?
                .as_bytes(),
        );
        out.push(b'\n');
        out.extend_from_slice(&(keys.len() as u64).to_le_bytes());
        for (k, v) in keys {
            out.extend_from_slice(&k.to_le_bytes());
            out.extend_from_slice(&v.to_le_bytes());
        }
        let tmp = path.with_extension("tmp");
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&out)?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)
        };
        write().map_err(|source| {
            let _ = std::fs::remove_file(&tmp);
            BaselineError::Write {
                path: path.to_path_buf(),
                source,
            }
        })
    }

    pub fn load(path: &Path) -> Result<Model, BaselineError> {
        let mut bytes = Vec::new();
        std::fs::File::open(path)
            .and_then(|mut f| f.read_to_end(&mut bytes))
            .map_err(|source| BaselineError::Read {
                path: path.to_path_buf(),
                source,
            })?;
        let bad = |why: &str| BaselineError::Invalid {
            path: path.to_path_buf(),
            why: why.into(),
        };
        let rest = bytes
            .strip_prefix(MAGIC)
            .ok_or_else(|| bad("it does not start with cordon-baseline-v1"))?;
        let nl = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| bad("no header"))?;
        let header: Header = serde_json::from_slice(&rest[..nl]).map_err(|e| bad(&format!("header: {e}")))?;
        if header.n != N || header.frame != FRAME {
            return Err(bad(&format!(
                "made with n={} frame={}, this cordon uses n={N} frame={FRAME}",
                header.n, header.frame
            )));
        }
        let body = &rest[nl + 1..];
        let count = body
            .get(..8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
            .ok_or_else(|| bad("cut short"))?;
        let body = &body[8..];
        if body.len() as u64 != count.saturating_mul(12) {
            return Err(bad(&format!(
                "{count} n-grams announced, {} bytes follow",
                body.len()
            )));
        }
        let mut grams = Grams::default();
        grams.reserve(usize::try_from(count).unwrap_or(0));
        for c in body.as_chunks::<12>().0 {
            let k = u64::from_le_bytes(c[..8].try_into().expect("8 bytes"));
            let v = u32::from_le_bytes(c[8..].try_into().expect("4 bytes"));
            grams.insert(k, v);
        }
        let freq = header.frequency.iter().copied().collect();
        Ok(Model { header, grams, freq })
    }
}

/// One symbol of the `events` alphabet: the syscall number and its outcome (0 succeeded,
/// 1 not found, 2 refused, 3 other error, 4 no result). `None` for events that are not
/// part of the sequences: everything but whole syscalls (routine reads are summarised in
/// the trace, so they are left out live as well).
pub fn event_symbol(e: &pb::Event) -> Option<u32> {
    let Some(Kind::Syscall(s)) = &e.kind else {
        return None;
    };
    if crate::trace::record::routine_read(e) {
        return None;
    }
    let outcome = if !s.completed {
        4
    } else if s.denied {
        2
    } else if s.ret >= 0 {
        0
    } else if s.errno == "ENOENT" {
        1
    } else {
        3
    };
    Some(s.nr | (outcome << 16))
}

/// A symbol in words: the syscall name, with its outcome in the `events` alphabet.
pub fn symbol_name(sym: u32, alphabet: Alphabet) -> String {
    let nr = sym & 0xffff;
    let name = crate::kernel::name(nr).unwrap_or_else(|| format!("syscall{nr}"));
    match (alphabet, sym >> 16) {
        (Alphabet::Syscalls, _) | (Alphabet::Events, 0) => name,
        (_, 1) => format!("{name}:ENOENT"),
        (_, 2) => format!("{name}:DENIED"),
        (_, 3) => format!("{name}:ERR"),
        _ => format!("{name}:?"),
    }
}

/// Per-process sequences of the `events` alphabet, in event order.
pub fn sequences_of<'a>(events: impl IntoIterator<Item = &'a pb::Event>) -> Vec<(u32, Vec<u32>)> {
    let mut by_pid: Vec<(u32, Vec<u32>)> = Vec::new();
    let mut index: HashMap<u32, usize> = HashMap::new();
    for e in events {
        if let Some(s) = event_symbol(e) {
            let i = *index.entry(e.host_pid).or_insert_with(|| {
                by_pid.push((e.host_pid, Vec::new()));
                by_pid.len() - 1
            });
            by_pid[i].1.push(s);
        }
    }
    by_pid
}

/// A baseline or syscall file that cannot be written or read.
#[derive(Debug, thiserror::Error)]
pub enum BaselineError {
    #[error("cannot write the baseline {path}: {source}")]
    Write {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot encode the baseline's header: {0}")]
    Encode(#[source] serde_json::Error),
    #[error("cannot read the baseline {path}: {source}")]
    Read {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a cordon baseline: {why}")]
    Invalid { path: std::path::PathBuf, why: String },
    #[error("{label}: item {item} is {word:?}, not a syscall number")]
    NotASyscall {
        label: String,
        item: usize,
        word: String,
    },
}

/// A file of whitespace-separated syscall numbers.
pub fn parse_syscalls(text: &str, label: &str) -> Result<Vec<u32>, BaselineError> {
    text.split_whitespace()
        .enumerate()
        .map(|(i, w)| {
            w.parse::<u32>()
                .ok()
                .filter(|&n| n < 0x10000)
                .ok_or_else(|| BaselineError::NotASyscall {
                    label: label.into(),
                    item: i + 1,
                    word: w.into(),
                })
        })
        .collect()
}

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
        if self.model.header.syscalls.is_empty() {
            return Vec::new();
        }
        let mut new: Vec<(String, u64)> = counts
            .iter()
            .filter(|(n, &c)| {
                c > 0 && !self.model.header.syscalls.contains_key(*n) && !self.reported.contains(*n)
            })
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
            .map(|&s| symbol_name(s, Alphabet::Events))
            .collect();
        Some(Hit {
            score: mean,
            window: names.join(" "),
            evidence: p.seqs.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(train: &[&[u32]]) -> Model {
        let mut m = Model::new(Alphabet::Syscalls);
        for s in train {
            m.train(s);
        }
        m
    }

    #[test]
    fn known_sequences_score_zero_and_new_ones_do_not() {
        let normal: Vec<u32> = (0..200).map(|i| [0, 1, 2, 3, 9][i % 5]).collect();
        let m = model(&[&normal]);
        assert_eq!(m.score(&normal, Method::Cordon).score, 0.0);
        assert_eq!(m.score(&normal, Method::Stide).score, 0.0);
        let mut odd = normal.clone();
        for x in &mut odd[100..110] {
            *x = 7;
        }
        let s = m.score(&odd, Method::Cordon);
        assert!(s.score > 0.4, "{s:?}");
        assert!(s.window.contains(&7));
        assert!((90..=130).contains(&s.at), "{s:?}");
        assert!(m.score(&odd, Method::Stide).score > 0.0);
    }

    #[test]
    fn back_off_grades_positions() {
        let normal: Vec<u32> = (0..300).map(|i| [0, 1, 2, 3, 4, 5][i % 6]).collect();
        let m = model(&[&normal]);
        let mut alien = normal.clone();
        alien[150] = 99;
        // A syscall never seen scores 1; the positions after it recover one call at a time.
        let a: Vec<f64> = (150..157).map(|i| m.anomaly(&alien, i)).collect();
        assert_eq!(a[0], 1.0);
        for w in a.windows(2) {
            assert!(w[1] < w[0], "{a:?}");
        }
        assert_eq!(a[6], 0.0);
        let mut swapped = normal.clone();
        swapped.swap(150, 151);
        let s = m.score(&swapped, Method::Cordon);
        assert!(s.score > 0.0 && s.window.len() == FRAME, "{s:?}");
    }

    #[test]
    fn score_does_not_grow_with_length() {
        let normal: Vec<u32> = (0..60).map(|i| [0, 1, 2][i % 3]).collect();
        let m = model(&[&normal]);
        let long: Vec<u32> = normal.iter().cycle().take(6000).copied().collect();
        assert_eq!(m.score(&long, Method::Cordon).score, 0.0);
        let s = m.score(&[0, 1, 2, 5, 5, 5], Method::Cordon).score;
        assert!(s > 0.0 && s <= 1.0);
    }

    #[test]
    fn save_load_round_trip_and_bad_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("b");
        let m = model(&[&[1, 2, 3, 4, 5, 6, 7, 8]]);
        m.save(&p).unwrap();
        let back = Model::load(&p).unwrap();
        assert_eq!(back.grams(), m.grams());
        let probe = [1, 2, 3, 9, 5, 6, 7, 8];
        assert_eq!(
            back.score(&probe, Method::Cordon),
            m.score(&probe, Method::Cordon)
        );
        std::fs::write(&p, b"hello").unwrap();
        assert!(Model::load(&p)
            .unwrap_err()
            .to_string()
            .contains("not a cordon baseline"));
        let mut bytes = Vec::new();
        m.save(&p).unwrap();
        std::fs::File::open(&p).unwrap().read_to_end(&mut bytes).unwrap();
        std::fs::write(&p, &bytes[..bytes.len() - 5]).unwrap();
        assert!(Model::load(&p).unwrap_err().to_string().contains("bytes follow"));
    }

    #[test]
    fn syscall_files_parse_strictly() {
        assert_eq!(parse_syscalls("1 2\n3\t4", "f").unwrap(), vec![1, 2, 3, 4]);
        assert!(parse_syscalls("1 x 3", "f")
            .unwrap_err()
            .to_string()
            .contains("item 2"));
    }
}
