//! `cordon learn` and `cordon score`: the baseline built from finished runs and used on them.
//!
//! Inputs are cordon traces (one sequence per process, in the `events` alphabet; their final
//! syscall counts feed the frequency check) or plain text files of whitespace-separated
//! syscall numbers, one trace per file (the `syscalls` alphabet, the format public syscall
//! datasets use).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::baseline::{self, Abi, Alphabet, Method, Model};
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
    #[error("{0}: no files in it to learn from (one trace per file expected)")]
    EmptyDir(PathBuf),
    #[error("{0} was made by a cordon before kNN and has no trace profiles: learn it again, or score with --method frames or stide")]
    NoProfiles(PathBuf),
    #[error("--abi {abi}: only plain syscall files have an ABI to choose; {file} is a cordon trace (always x86_64)")]
    AbiOfTrace { file: PathBuf, abi: &'static str },
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
    // (An empty file is an error above: a trace of nothing is a recording that failed.)
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
        // Hidden files (editors' and file managers' droppings) are not traces.
        .filter(|p| {
            p.is_file()
                && !p
                    .file_name()
                    .is_some_and(|n| n.as_encoded_bytes().starts_with(b"."))
        })
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(OfflineError::EmptyDir(dir.to_path_buf()));
    }
    Ok(files)
}

/// Build a baseline from `files` (all of one alphabet; plain syscall numbers of `abi`'s table)
/// and save it to `out`.
pub fn learn(files: &[PathBuf], abi: Option<Abi>, out: &Path) -> Result<String, OfflineError> {
    let mut model: Option<Model> = None;
    for f in files {
        let input = read_input(f)?;
        check_abi(&input, f, abi)?;
        let m = model.get_or_insert_with(|| Model::with_abi(input.alphabet, abi.unwrap_or_default()));
        if m.alphabet() != input.alphabet {
            return Err(OfflineError::MixedInputs {
                file: f.clone(),
                input: alphabet_name(input.alphabet),
                others: alphabet_name(m.alphabet()),
            });
        }
        for (label, s) in &input.sequences {
            // A trace's sequences are labelled by process: say which trace too.
            match input.alphabet {
                Alphabet::Syscalls => m.train(s, label),
                Alphabet::Events => m.train(s, &format!("{} {label}", f.display())),
            }
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
        "baseline {}: {} sequences from {} files, {} distinct n-grams (n <= {}), alphabet {}{}",
        out.display(),
        model.sequences(),
        files.len(),
        model.grams(),
        baseline::N,
        alphabet_name(model.alphabet()),
        match model.alphabet() {
            Alphabet::Syscalls => format!(", ABI {}", model.abi().as_str()),
            Alphabet::Events => String::new(),
        }
    ))
}

/// `--abi` applies to plain syscall files only.
fn check_abi(input: &Input, file: &Path, abi: Option<Abi>) -> Result<(), OfflineError> {
    match abi {
        Some(a) if input.alphabet == Alphabet::Events && a != Abi::X86_64 => Err(OfflineError::AbiOfTrace {
            file: file.to_path_buf(),
            abi: a.as_str(),
        }),
        _ => Ok(()),
    }
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

/// Score each file against the baseline by `method`: one line per input. `abi`, if given, must
/// be the baseline's.
pub fn score(
    baseline: &Path,
    files: &[PathBuf],
    method: Method,
    abi: Option<Abi>,
) -> Result<Vec<Scored>, OfflineError> {
    let model = Model::load(baseline)?;
    if method == Method::Knn && !model.has_profiles() {
        return Err(OfflineError::NoProfiles(baseline.to_path_buf()));
    }
    if let Some(a) = abi {
        if a != model.abi() {
            return Err(baseline::BaselineError::OtherAbi {
                path: baseline.to_path_buf(),
                baseline: model.abi().as_str(),
                asked: a.as_str(),
            }
            .into());
        }
    }
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
        check_abi(&input, f, abi)?;
        let worst = input
            .sequences
            .iter()
            .map(|(label, s)| (label, model.score(s, method)))
            .max_by(|a, b| a.1.score.total_cmp(&b.1.score));
        let (score, detail) = match worst {
            None => (0.0, "no syscalls".to_string()),
            Some((_, s)) if s.score == 0.0 => (0.0, "nothing unlike the baseline".to_string()),
            Some((label, s)) => {
                let at = if input.alphabet == Alphabet::Events {
                    format!("{label}, call {}", s.at + 1)
                } else {
                    format!("call {}", s.at + 1)
                };
                (s.score, format!("{at}: {}", explain(&model, &s)))
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

/// A score in words: the worst frame, the n-grams in it training never saw, and (kNN) the
/// nearest training sequence and what this one has more of.
pub fn explain(model: &Model, s: &baseline::Score) -> String {
    let names = |syms: &[u32], sep: &str| -> String {
        syms.iter().map(|&x| model.name(x)).collect::<Vec<_>>().join(sep)
    };
    let mut out = names(&s.window, " ");
    if !s.unseen.is_empty() {
        let grams: Vec<String> = s.unseen.iter().map(|g| format!("[{}]", names(g, " "))).collect();
        out.push_str(&format!("; never seen: {}", grams.join(" ")));
    }
    if let Some(n) = &s.nearest {
        let more: Vec<String> = n
            .excess
            .iter()
            .map(|(g, c, cn)| format!("{} x{c} (there x{cn})", names(g, ">")))
            .collect();
        out.push_str(&format!("; nearest {}", n.label));
        if !more.is_empty() {
            out.push_str(&format!(", more of: {}", more.join(", ")));
        }
    }
    out
}

pub const LEARN_HELP: &str = "A profile uses it with\n  [monitor.baseline]\n  file = \"/path/BASELINE\"\n  threshold = 0.5\n  response = \"alert\"\n\nExamples:\n  sudo cordon learn --profile default --runs 3 --out py.baseline -- python3 -m pytest\n  cordon learn --from /var/lib/cordon/traces/*.trace --out agent.baseline\n  cordon learn --from-syscalls dataset/normal --out normal.baseline\n  cordon learn --from-syscalls adfa/train --abi i386 --out adfa.baseline";

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
    /// The syscall table of the numbers in `--from-syscalls` files (recorded in the baseline).
    #[arg(long, value_enum, value_name = "ABI")]
    pub abi: Option<Abi>,
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
    /// How sequences are scored (docs/monitor.md compares them).
    #[arg(long, value_enum, default_value = "knn")]
    pub method: Method,
    /// The syscall table of plain syscall files; it must be the baseline's (the default).
    #[arg(long, value_enum, value_name = "ABI")]
    pub abi: Option<Abi>,
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
    println!("{}", crate::text::escape(&learn(&files, a.abi, &a.out)?));
    Ok(0)
}

/// `cordon score`: one line per input.
pub fn score_main(a: &ScoreArgs) -> Result<i32, OfflineError> {
    for s in score(&a.baseline, &a.files, a.method, a.abi)? {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn dir_with(files: &[(&str, &str)]) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for (name, text) in files {
            std::fs::write(d.path().join(name), text).unwrap();
        }
        d
    }

    fn learn_dir(d: &Path, abi: Option<Abi>) -> Result<String, OfflineError> {
        learn(&files_in(d)?, abi, &d.join("..").join("b.baseline"))
    }

    #[test]
    fn bad_inputs_name_the_file_and_the_item() {
        let d = dir_with(&[("a.txt", "1 2 3\n4 5 6"), ("b.txt", "1 2\n3 open 5")]);
        let e = learn_dir(d.path(), None).unwrap_err().to_string();
        assert!(
            e.ends_with("b.txt: line 2, item 4: \"open\" is not a syscall number (0 to 65535)"),
            "{e}"
        );
        let d = dir_with(&[("a.txt", "1 2 3"), ("empty.txt", "")]);
        let e = learn_dir(d.path(), None).unwrap_err().to_string();
        assert!(
            e.ends_with("empty.txt: no syscall numbers in it (an empty trace)"),
            "{e}"
        );
        let d = dir_with(&[(".hidden", "1 2 3")]);
        let e = learn_dir(d.path(), None).unwrap_err().to_string();
        assert_eq!(
            e,
            format!(
                "{}: no files in it to learn from (one trace per file expected)",
                d.path().display()
            )
        );
    }

    #[test]
    fn a_baseline_from_before_knn_scores_by_the_other_methods_only() {
        let d = dir_with(&[("a.txt", "1 2 3")]);
        let b = d.path().join("old.baseline");
        let mut v1 = b"cordon-baseline-v1\n{\"alphabet\":\"syscalls\",\"n\":6,\"frame\":20,\"sequences\":0,\"symbols\":0,\"frequency\":[],\"sources\":[]}\n".to_vec();
        v1.extend_from_slice(&0u64.to_le_bytes());
        std::fs::write(&b, v1).unwrap();
        let probe = [d.path().join("a.txt")];
        let e = score(&b, &probe, Method::Knn, None).err().unwrap().to_string();
        assert!(
            e.contains("has no trace profiles: learn it again, or score with --method frames"),
            "{e}"
        );
        assert_eq!(score(&b, &probe, Method::Frames, None).unwrap()[0].score, 1.0);
    }

    #[test]
    fn the_abi_is_recorded_and_checked() {
        let d = dir_with(&[("a.txt", "5 3 3 6 1"), ("b.txt", "5 3 6 1")]);
        let b = d.path().join("b.baseline");
        let said = learn(&files_in(d.path()).unwrap(), Some(Abi::I386), &b).unwrap();
        assert!(said.ends_with("ABI i386"), "{said}");
        let probe = d.path().join("a.txt");
        // i386 names: 5 open, 3 read, 6 close; the explanation uses them.
        let s = score(&b, std::slice::from_ref(&probe), Method::Knn, Some(Abi::I386)).unwrap();
        assert!(s[0].score < 0.2, "{}", s[0].line);
        std::fs::write(&probe, "5 3 11 6").unwrap();
        let s = score(&b, std::slice::from_ref(&probe), Method::Knn, None).unwrap();
        assert!(s[0].line.contains("open read execve close"), "{}", s[0].line);
        assert!(s[0].line.contains("never seen: [execve]"), "{}", s[0].line);
        let e = score(&b, &[probe], Method::Knn, Some(Abi::X86_64))
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("learned from i386 syscall numbers, but --abi x86_64 was given"),
            "{e}"
        );
        assert!(e.starts_with(&b.display().to_string()), "{e}");
    }
}
