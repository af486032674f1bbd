//! `cordon learn` and `cordon score`: the baseline built from finished runs and used on them.
//!
//! Inputs are cordon traces (one sequence per process, in the `events` alphabet; their final
//! syscall counts feed the frequency check) or plain text files of whitespace-separated
//! syscall numbers, one trace per file (the `syscalls` alphabet, the format public syscall
//! datasets use).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::baseline::{self, Alphabet, Method, Model};
use crate::events::pb::event::Kind;
use crate::trace::pb::record::Body;

/// Why `cordon learn` or `cordon score` stopped.
#[derive(Debug, thiserror::Error)]
pub enum OfflineError {
    #[error(transparent)]
    Trace(#[from] crate::trace::show::ShowError),
    #[error(transparent)]
    Baseline(#[from] baseline::BaselineError),
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read the directory {path}: {source}")]
    ReadDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}: no files to learn from")]
    EmptyDir(PathBuf),
    #[error("{file}: a {input} input among {others} inputs; a baseline is learned from one kind")]
    MixedInputs {
        file: PathBuf,
        input: &'static str,
        others: &'static str,
    },
    #[error("{file}: a {input} input, but the baseline was learned from {baseline}")]
    OtherAlphabet {
        file: PathBuf,
        input: &'static str,
        baseline: &'static str,
    },
    #[error("nothing to learn from: give -- CMD, --from TRACE… or --from-syscalls DIR")]
    NothingToLearn,
    #[error("the inputs hold no syscalls to learn from")]
    NoSyscalls,
    #[error("cannot find the cordon binary: {0}")]
    NoBinary(#[source] std::io::Error),
    #[error("cannot start {exe}: {source}")]
    Start {
        exe: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("run {run} left no trace (exit status {status}); nothing learned")]
    NoTrace {
        run: u32,
        status: std::process::ExitStatus,
    },
}

/// What one input file holds.
pub struct Input {
    pub alphabet: Alphabet,
    /// (label, sequence): "pid 1234" per process of a trace, the file for a syscall file.
    pub sequences: Vec<(String, Vec<u32>)>,
    /// A trace's final syscall counts (all syscalls, by name).
    pub counts: HashMap<String, u64>,
}

fn is_trace(path: &Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 16];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok_and(|()| head.as_slice() == crate::trace::MAGIC)
}

pub fn read_input(path: &Path) -> Result<Input, OfflineError> {
    if is_trace(path) {
        let mut events = Vec::new();
        let mut counts = HashMap::new();
        crate::trace::show::replay(path, |rec| {
            if let Some(Body::Event(e)) = &rec.body {
                if let Some(Kind::Counts(c)) = &e.kind {
                    if c.last {
                        counts = c.counts.clone();
                    }
                }
                events.push(e.clone());
            }
            true
        })?;
        let sequences = baseline::sequences_of(&events)
            .into_iter()
            .map(|(pid, s)| (format!("pid {pid}"), s))
            .collect();
        return Ok(Input {
            alphabet: Alphabet::Events,
            sequences,
            counts,
        });
    }
    let text = std::fs::read_to_string(path).map_err(|source| OfflineError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let seq = baseline::parse_syscalls(&text, &path.display().to_string())?;
    Ok(Input {
        alphabet: Alphabet::Syscalls,
        sequences: vec![(path.display().to_string(), seq)],
        counts: HashMap::new(),
    })
}

/// The files of a directory, sorted (for `--from-syscalls DIR`).
pub fn files_in(dir: &Path) -> Result<Vec<PathBuf>, OfflineError> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|source| OfflineError::ReadDir {
            path: dir.to_path_buf(),
            source,
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(OfflineError::EmptyDir(dir.to_path_buf()));
    }
    Ok(files)
}

/// Build a baseline from `files` (all of one alphabet) and save it to `out`.
pub fn learn(files: &[PathBuf], out: &Path) -> Result<String, OfflineError> {
    let mut model: Option<Model> = None;
    for f in files {
        let input = read_input(f)?;
        let m = model.get_or_insert_with(|| Model::new(input.alphabet));
        if m.alphabet() != input.alphabet {
            return Err(OfflineError::MixedInputs {
                file: f.clone(),
                input: alphabet_name(input.alphabet),
                others: alphabet_name(m.alphabet()),
            });
        }
        for (_, s) in &input.sequences {
            m.train(s);
        }
        m.train_counts(&input.counts);
        m.add_source(f.display().to_string());
    }
    let model = model.ok_or(OfflineError::NothingToLearn)?;
    if model.grams() == 0 {
        return Err(OfflineError::NoSyscalls);
    }
    model.save(out)?;
    Ok(format!(
        "baseline {}: {} sequences from {} files, {} distinct n-grams (n <= {}), alphabet {}",
        out.display(),
        model.sequences(),
        files.len(),
        model.grams(),
        baseline::N,
        alphabet_name(model.alphabet())
    ))
}

fn alphabet_name(a: Alphabet) -> &'static str {
    match a {
        Alphabet::Syscalls => "syscalls (plain syscall numbers)",
        Alphabet::Events => "events (cordon's recorded syscalls and their outcomes)",
    }
}

/// One input's score and its most anomalous window.
pub struct Scored {
    pub score: f64,
    pub line: String,
}

/// Score each file against the baseline (with plain STIDE if `stide`): one line per input.
pub fn score(baseline: &Path, files: &[PathBuf], stide: bool) -> Result<Vec<Scored>, OfflineError> {
    let method = if stide { Method::Stide } else { Method::Cordon };
    let model = Model::load(baseline)?;
    let mut out = Vec::new();
    for f in files {
        let input = read_input(f)?;
        if input.alphabet != model.alphabet() {
            return Err(OfflineError::OtherAlphabet {
                file: f.clone(),
                input: alphabet_name(input.alphabet),
                baseline: alphabet_name(model.alphabet()),
            });
        }
        let worst = input
            .sequences
            .iter()
            .map(|(label, s)| (label, model.score(s, method)))
            .max_by(|a, b| a.1.score.total_cmp(&b.1.score));
        let (score, detail) = match worst {
            None => (0.0, "no syscalls".to_string()),
            Some((label, s)) => {
                let names: Vec<String> = s
                    .window
                    .iter()
                    .map(|&x| baseline::symbol_name(x, model.alphabet()))
                    .collect();
                let at = if input.alphabet == Alphabet::Events {
                    format!("{label}, call {}", s.at + 1)
                } else {
                    format!("call {}", s.at + 1)
                };
                if s.score == 0.0 {
                    (0.0, "no window unlike the baseline".to_string())
                } else {
                    (s.score, format!("{at}: {}", names.join(" ")))
                }
            }
        };
        let unseen = if input.counts.is_empty() {
            String::new()
        } else {
            let mut counts: Vec<(&String, &u64)> = input.counts.iter().collect();
            counts.sort();
            let new: Vec<String> = counts
                .into_iter()
                .filter(|(n, &c)| c > 0 && !model.knows_syscall(n))
                .map(|(n, c)| format!("{n} x{c}"))
                .collect();
            if new.is_empty() {
                String::new()
            } else {
                format!("; syscalls no baseline run made: {}", new.join(", "))
            }
        };
        out.push(Scored {
            score,
            line: format!("{score:.4}  {}  {detail}{unseen}", f.display()),
        });
    }
    Ok(out)
}

pub const LEARN_HELP: &str = "A profile uses it with\n  [monitor.baseline]\n  file = \"/path/BASELINE\"\n  threshold = 0.5\n  response = \"alert\"\n\nExamples:\n  sudo cordon learn --profile default --runs 3 --out py.baseline -- python3 -m pytest\n  cordon learn --from /var/lib/cordon/traces/*.trace --out agent.baseline\n  cordon learn --from-syscalls dataset/normal --out normal.baseline";

/// `cordon learn`'s arguments.
#[derive(clap::Args)]
pub struct LearnArgs {
    /// Where the baseline is written.
    #[arg(long, value_name = "BASELINE")]
    pub out: PathBuf,
    /// Traces of benign runs.
    #[arg(long, num_args = 1.., value_name = "TRACE", conflicts_with_all = ["from_syscalls", "command"])]
    pub from: Vec<PathBuf>,
    /// A directory of text files, one trace per file, each a whitespace-separated sequence of
    /// syscall numbers.
    #[arg(long, value_name = "DIR", conflicts_with = "command")]
    pub from_syscalls: Option<PathBuf>,
    /// The profile CMD runs under.
    #[arg(long, short, default_value = "default")]
    pub profile: String,
    #[arg(long, short)]
    pub workspace: Option<PathBuf>,
    /// How many times CMD is run.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub runs: u32,
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

/// `cordon score`'s arguments.
#[derive(clap::Args)]
pub struct ScoreArgs {
    #[arg(long, value_name = "BASELINE")]
    pub baseline: PathBuf,
    /// `cordon` (n-grams with back-off over locality frames) or `stide` (the fraction of
    /// length-6 windows never seen, for comparison).
    #[arg(long, default_value = "cordon", value_parser = ["cordon", "stide"])]
    pub method: String,
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
}

/// `cordon learn`: gather the inputs, learn, save, say what was learned.
pub fn learn_main(a: LearnArgs) -> Result<i32, OfflineError> {
    let files = match (a.from_syscalls, a.from.is_empty(), a.command.is_empty()) {
        (Some(dir), _, _) => files_in(&dir)?,
        (None, false, _) => a.from,
        (None, true, false) => record_runs(&a.profile, a.workspace.as_deref(), a.runs, &a.command)?,
        (None, true, true) => return Err(OfflineError::NothingToLearn),
    };
    println!("{}", crate::text::escape(&learn(&files, &a.out)?));
    Ok(0)
}

/// `cordon score`: one line per input.
pub fn score_main(a: &ScoreArgs) -> Result<i32, OfflineError> {
    for s in score(&a.baseline, &a.files, a.method == "stide")? {
        // The line names the file (any bytes) beside the score.
        println!("{}", crate::text::escape(&s.line));
    }
    Ok(0)
}

/// `cordon learn --profile P -- CMD`: run CMD `runs` times under P with this cordon binary,
/// each run traced to a new file in the trace directory; the traces' paths.
pub fn record_runs(
    profile: &str,
    workspace: Option<&Path>,
    runs: u32,
    command: &[String],
) -> Result<Vec<PathBuf>, OfflineError> {
    let exe = std::env::current_exe().map_err(OfflineError::NoBinary)?;
    let dir = crate::trace::default_dir();
    let mut traces = Vec::new();
    for i in 1..=runs {
        let trace = dir.join(format!("learn-{}-{i}.trace", std::process::id()));
        let mut cmd = std::process::Command::new(&exe);
        cmd.args(["run", "-q", "--profile", profile, "--trace"])
            .arg(&trace);
        if let Some(w) = workspace {
            cmd.arg("--workspace").arg(w);
        }
        let st = cmd
            .arg("--")
            .args(command)
            .status()
            .map_err(|source| OfflineError::Start {
                exe: exe.clone(),
                source,
            })?;
        if !trace.exists() {
            return Err(OfflineError::NoTrace { run: i, status: st });
        }
        if !st.success() {
            eprintln!("cordon: learn: run {i} exited with {st}; learning from it anyway");
        }
        crate::text::eprint(&format!("learn: run {i} traced to {}", trace.display()));
        traces.push(trace);
    }
    Ok(traces)
}
