//! The learned baseline: what a workload's syscall sequences look like when it behaves.
//!
//! Training keeps two things. Every n-gram (n = 1..=`N`) of each sequence, with its count:
//! the table STIDE and the locality frames look windows up in. And each training sequence's
//! *profile*: its counts of single syscalls and of pairs of consecutive syscalls, which the
//! kNN method (the default, `Method::Knn`) compares whole sequences by.
//!
//! The methods (`Method`, in `score`):
//! - `knn`: the distance between the sequence's profile and the nearest training profile
//!   (`sqrt(1 - cosine similarity)`). Chosen by `benches/baseline_eval.sh` (cross-validated
//!   on four corpora of full syscall sequences, docs/monitor.md): at least as good as STIDE-6
//!   on each and better on average.
//! - `frames`: at each position the anomaly is `1 - L/N`, `L` the length of the longest run
//!   ending there that training saw (STIDE with back-off); the score is the highest mean over
//!   `FRAME` consecutive positions. The live monitor uses it (constant memory per process).
//! - `stide`: the classic, the fraction of length-6 windows not seen in training.
//!
//! Every score is in [0, 1] and does not grow with the length of the input; every score comes
//! with the most anomalous frame and the n-grams in it training never saw, by name.
//!
//! Two alphabets: `syscalls` (plain syscall numbers, from files one trace per file, of the
//! x86_64 or i386 table: `Abi`) and `events` (what cordon records whole: the security-relevant
//! syscalls with their outcome, from traces and from the live stream). A baseline scores only
//! inputs of its alphabet and ABI.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use crate::events::pb::{self, event::Kind};

pub mod score;
mod store;

pub use score::Score;

/// Longest n-gram kept.
pub const N: usize = 6;
/// Positions in a locality frame.
pub const FRAME: usize = 20;

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

/// Which syscall table plain numbers are from (the `syscalls` alphabet; cordon's own recordings
/// are always x86_64's). Recorded in the baseline: numbers mean nothing without it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
pub enum Abi {
    #[default]
    #[serde(rename = "x86_64")]
    #[value(name = "x86_64")]
    X86_64,
    #[serde(rename = "i386")]
    #[value(name = "i386")]
    I386,
}

impl Abi {
    pub fn as_str(self) -> &'static str {
        match self {
            Abi::X86_64 => "x86_64",
            Abi::I386 => "i386",
        }
    }

    /// The name of syscall `nr` in this table; the number itself when the table has none.
    pub fn name(self, nr: u32) -> String {
        match self {
            Abi::X86_64 => crate::kernel::name(nr),
            Abi::I386 => crate::kernel::i386::name(nr).map(str::to_string),
        }
        .unwrap_or_else(|| nr.to_string())
    }
}

/// How a sequence is scored (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Method {
    /// Distance of the sequence's syscall and syscall-pair frequencies to the nearest
    /// training sequence's.
    #[default]
    Knn,
    /// n-grams with back-off over locality frames of 20 calls (the default before kNN;
    /// `cordon` is its old name).
    #[value(alias = "cordon")]
    Frames,
    /// The fraction of length-6 windows never seen in training.
    Stide,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Header {
    alphabet: Alphabet,
    /// The syscall table of the numbers (baselines from before `--abi` were x86_64's).
    #[serde(default)]
    abi: Abi,
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
    /// Where each profile's sequence came from (a file, or a file and a process).
    #[serde(default)]
    profile_labels: Vec<String>,
}

/// One training sequence's counts of single symbols and of consecutive pairs (`feature`
/// keys), sorted by key.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Profile(Vec<(u64, u32)>);

/// The key of a profile feature: a pair `(a, b)` of consecutive symbols, or a single symbol
/// (the top bit set). Symbols are below 2^31, so keys never collide.
#[inline]
fn feature(a: Option<u32>, b: u32) -> u64 {
    match a {
        Some(a) => (u64::from(a) << 32) | u64::from(b),
        None => (1 << 63) | u64::from(b),
    }
}

/// The symbols of a feature key (the inverse of `feature`).
fn symbols_of(key: u64) -> Vec<u32> {
    let low = u32::try_from(key & 0xffff_ffff).expect("32 bits");
    if key >> 63 == 1 {
        vec![low]
    } else {
        vec![u32::try_from(key >> 32).expect("32 bits"), low]
    }
}

impl Profile {
    pub fn of(seq: &[u32]) -> Profile {
        let mut counts: HashMap<u64, u32> = HashMap::with_capacity(64);
        for (i, &s) in seq.iter().enumerate() {
            *counts.entry(feature(None, s)).or_default() += 1;
            if i > 0 {
                *counts.entry(feature(Some(seq[i - 1]), s)).or_default() += 1;
            }
        }
        let mut v: Vec<(u64, u32)> = counts.into_iter().collect();
        v.sort_unstable();
        Profile(v)
    }

    fn norm(&self) -> f64 {
        self.0
            .iter()
            .map(|&(_, c)| f64::from(c) * f64::from(c))
            .sum::<f64>()
            .sqrt()
    }

    fn count(&self, key: u64) -> u32 {
        self.0
            .binary_search_by_key(&key, |&(k, _)| k)
            .map_or(0, |i| self.0[i].1)
    }
}

/// A trained baseline.
#[derive(Debug, Clone)]
pub struct Model {
    header: Header,
    grams: Grams,
    freq: HashMap<u32, u64>,
    profiles: Vec<Profile>,
    /// Built from `profiles` when first needed: feature -> (profile, count), and the norms.
    index: std::sync::OnceLock<score::Index>,
}

impl Model {
    pub fn new(alphabet: Alphabet) -> Self {
        Self::with_abi(alphabet, Abi::X86_64)
    }

    pub fn with_abi(alphabet: Alphabet, abi: Abi) -> Self {
        Self {
            header: Header {
                alphabet,
                abi,
                n: N,
                frame: FRAME,
                sequences: 0,
                symbols: 0,
                frequency: Vec::new(),
                syscalls: Default::default(),
                sources: Vec::new(),
                profile_labels: Vec::new(),
            },
            grams: Grams::default(),
            freq: HashMap::new(),
            profiles: Vec::new(),
            index: Default::default(),
        }
    }

    pub fn alphabet(&self) -> Alphabet {
        self.header.alphabet
    }

    pub fn abi(&self) -> Abi {
        self.header.abi
    }

    pub fn sequences(&self) -> u64 {
        self.header.sequences
    }

    pub fn grams(&self) -> usize {
        self.grams.len()
    }

    /// Does the baseline keep its training sequences' profiles (the kNN method)? Not one made
    /// by a cordon before kNN.
    pub fn has_profiles(&self) -> bool {
        !self.profiles.is_empty()
    }

    pub fn add_source(&mut self, s: String) {
        self.header.sources.push(s);
    }

    /// Every syscall the training runs made, by name (empty for a baseline without counts).
    pub fn syscalls(&self) -> &std::collections::BTreeMap<String, u64> {
        &self.header.syscalls
    }

    /// Learn the syscall counts of a run (all syscalls, by name).
    pub fn train_counts<'a>(&mut self, counts: impl IntoIterator<Item = (&'a String, &'a u64)>) {
        for (name, n) in counts {
            *self.header.syscalls.entry(name.clone()).or_default() += n;
        }
    }

    /// Learn one sequence; `label` says where it came from (named when it is the nearest).
    pub fn train(&mut self, seq: &[u32], label: &str) {
        if seq.is_empty() {
            return;
        }
        self.header.sequences += 1;
        self.header.symbols += seq.len() as u64;
        if self.header.alphabet == Alphabet::Syscalls {
            for &s in seq {
                *self.header.syscalls.entry(self.name(s)).or_default() += 1;
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
        self.profiles.push(Profile::of(seq));
        self.header.profile_labels.push(label.to_string());
        self.index = Default::default();
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

    /// Did any training run make this syscall (by name)?
    pub fn knows_syscall(&self, name: &str) -> bool {
        self.header.syscalls.is_empty() || self.header.syscalls.contains_key(name)
    }

    /// A symbol of this baseline in words (the syscall's name in its ABI's table).
    pub fn name(&self, sym: u32) -> String {
        symbol_name(sym, self.header.alphabet, self.header.abi)
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

/// A symbol in words: the syscall name (the number where the table has none), with its outcome
/// in the `events` alphabet.
pub fn symbol_name(sym: u32, alphabet: Alphabet, abi: Abi) -> String {
    let nr = sym & 0xffff;
    let name = abi.name(nr);
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
    #[error("{label}: line {line}, item {item}: {word:?} is not a syscall number (0 to 65535)")]
    NotASyscall {
        label: String,
        line: usize,
        item: usize,
        word: String,
    },
    #[error("{0}: no syscall numbers in it (an empty trace)")]
    EmptyTrace(String),
    #[error("{path} was learned from {baseline} syscall numbers, but --abi {asked} was given")]
    OtherAbi {
        path: std::path::PathBuf,
        baseline: &'static str,
        asked: &'static str,
    },
}

/// A file of whitespace-separated syscall numbers: not empty, nothing else in it. An error
/// names the line and the item (counted from 1 in the file).
pub fn parse_syscalls(text: &str, label: &str) -> Result<Vec<u32>, BaselineError> {
    let mut out = Vec::with_capacity(text.len() / 3);
    for (l, line) in text.lines().enumerate() {
        for w in line.split_whitespace() {
            let n = w.parse::<u32>().ok().filter(|&n| n < 0x10000);
            out.push(n.ok_or_else(|| BaselineError::NotASyscall {
                label: label.into(),
                line: l + 1,
                item: out.len() + 1,
                word: w.chars().take(40).collect(),
            })?);
        }
    }
    if out.is_empty() {
        return Err(BaselineError::EmptyTrace(label.into()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syscall_files_parse_strictly() {
        assert_eq!(parse_syscalls("1 2\n3\t4\n", "f").unwrap(), vec![1, 2, 3, 4]);
        let e = parse_syscalls("1 2\n3 x 5", "dir/f").unwrap_err().to_string();
        assert_eq!(
            e,
            "dir/f: line 2, item 4: \"x\" is not a syscall number (0 to 65535)"
        );
        let e = parse_syscalls("1 70000", "f").unwrap_err().to_string();
        assert!(e.contains("item 2: \"70000\""), "{e}");
        let e = parse_syscalls("-1", "f").unwrap_err().to_string();
        assert!(e.contains("\"-1\""), "{e}");
    }

    #[test]
    fn an_empty_file_is_an_error_naming_it() {
        for text in ["", " \n\n\t"] {
            let e = parse_syscalls(text, "traces/empty.txt").unwrap_err().to_string();
            assert_eq!(e, "traces/empty.txt: no syscall numbers in it (an empty trace)");
        }
    }

    #[test]
    fn names_come_from_the_baselines_table() {
        // 3 is read on i386, close on x86_64; 999 is in neither table: printed as a number.
        assert_eq!(symbol_name(3, Alphabet::Syscalls, Abi::I386), "read");
        assert_eq!(symbol_name(3, Alphabet::Syscalls, Abi::X86_64), "close");
        assert_eq!(symbol_name(999, Alphabet::Syscalls, Abi::I386), "999");
        assert_eq!(symbol_name(999, Alphabet::Syscalls, Abi::X86_64), "999");
        let mut m = Model::with_abi(Alphabet::Syscalls, Abi::I386);
        m.train(&[5, 3, 6], "t");
        assert!(m.syscalls().contains_key("open") && m.syscalls().contains_key("read"));
        assert_eq!(m.name(11), "execve");
    }

    #[test]
    fn profiles_count_syscalls_and_pairs() {
        let p = Profile::of(&[1, 2, 1, 2]);
        assert_eq!(p.count(feature(None, 1)), 2);
        assert_eq!(p.count(feature(Some(1), 2)), 2);
        assert_eq!(p.count(feature(Some(2), 1)), 1);
        assert_eq!(p.count(feature(Some(2), 2)), 0);
        assert_ne!(feature(None, 5), feature(Some(0), 5));
        assert_eq!(symbols_of(feature(None, 5)), vec![5]);
        assert_eq!(symbols_of(feature(Some(0x4_0101), 5)), vec![0x4_0101, 5]);
    }
}
