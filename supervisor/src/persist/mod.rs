//! After a run: what did the agent leave in its workspace that will run code later, under
//! whoever next uses the workspace (often root)? A git config key git runs as a command, a
//! hook, a `.envrc`, an editor task, a package lifecycle script, a gitlink into a repository
//! carrying any of those. docs/persistence.md lists the vectors and what is not covered.
//!
//! Only what was created or changed during the run is reported. The test is the inode's
//! change time (`st_ctime`): the agent can set a file's mtime back with `utimes`, but that
//! very call sets the ctime to now, and nothing short of changing the clock sets it back.
//!
//! The scan is bounded (entries read, wall time) and reads the workspace without following a
//! symlink out of it: a symlink is never descended into, and a symlink standing where a file
//! of interest would be (`.git`, `.envrc`, a hook) is a finding itself. When a bound cuts the
//! walk short the result says so with a `scan-incomplete` finding: fail closed.
//!
//! The steps, in order:
//! 1. walk the workspace, inspecting each gitdir met (config, hooks, index) and each file of
//!    interest (`files`);
//! 2. follow the `.git` files and gitlinks the walk saw to gitdirs it did not reach, and
//!    report each gitlink into a gitdir with a finding or outside the workspace (`git`);
//! 3. sort by file, so two scans of one tree read the same.

mod files;
mod git;
mod gitconfig;
mod index;
mod shell;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::{self, FileType, Metadata};
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::text;
use shell::shell_quote;

/// The longest `value_preview`, in characters.
const PREVIEW_MAX: usize = 120;

/// One thing left in the workspace that runs code later.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Finding {
    /// `git-config`, `git-hook`, `gitdir-pointer`, `gitlink`, `gitattributes`, `gitmodules`,
    /// `envrc`, `editor-task`, `editor-settings`, `package-script`, `package-config`,
    /// `build-file`, or `scan-incomplete`.
    pub vector: &'static str,
    /// The file that holds it (absolute). Raw bytes from the agent: print it escaped (the
    /// `Display` impl does).
    pub file: PathBuf,
    /// Where in the file: `core.fsmonitor`, `scripts.postinstall`, a hook's name, `symlink`
    /// when the file is a symlink, `""` when the whole file is the finding.
    pub key: String,
    /// The value, escaped for a terminal, at most 120 characters.
    pub value_preview: String,
    /// The shell command that shows or removes it, paths quoted.
    pub inspect: String,
}

/// One line for a terminal: every field is escaped (the path too), so printing it is safe.
impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let file = text::escape_bytes(std::os::unix::ffi::OsStrExt::as_bytes(self.file.as_os_str()));
        let key = if self.key.is_empty() {
            String::new()
        } else {
            format!(" {}", self.key)
        };
        write!(
            f,
            "{}: {file}{key}: {} (inspect: {})",
            self.vector, self.value_preview, self.inspect
        )
    }
}

/// How much of the workspace one scan may read.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Directory entries read, over the whole scan.
    pub max_entries: usize,
    /// Wall time.
    pub max_time: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_entries: 200_000,
            max_time: Duration::from_secs(5),
        }
    }
}

/// The kernel stamps ctime from a clock that may lag the one `SystemTime::now` reads by a
/// tick (up to 10 ms at HZ=100); a file written just after `since` must not read as older.
const SINCE_SLACK: Duration = Duration::from_millis(100);

/// The largest file read whole (config, manifest, index); a larger one is not parsed and the
/// scan reports it as incomplete rather than judging part of it.
const MAX_FILE: u64 = 64 << 20;

/// Directories not descended into: package and build trees that hold many thousands of
/// files and that git ignores; a tool run in the workspace does not execute their contents
/// by being run there (see docs/persistence.md).
const SKIP_DIR_NAMES: &[&str] = &["node_modules"];
/// A directory holding one of these is a cache (`CACHEDIR.TAG`: cargo's `target/`) or a
/// Python virtualenv (`pyvenv.cfg`), skipped for the same reason, but only when the marker
/// predates the run: otherwise an agent could hide `.vscode/` by writing a marker into it.
const SKIP_DIR_MARKERS: &[&str] = &["CACHEDIR.TAG", "pyvenv.cfg"];

/// Findings in `workspace` created or changed since `since`, with the default [`Limits`].
pub fn scan(workspace: &Path, since: SystemTime) -> Vec<Finding> {
    scan_with(workspace, since, Limits::default())
}

/// [`scan`] with explicit bounds.
pub fn scan_with(workspace: &Path, since: SystemTime, limits: Limits) -> Vec<Finding> {
    let mut s = Scan::new(workspace, since, limits);
    s.walk();
    git::finish(&mut s);
    s.findings.sort_by(|a, b| {
        (&a.file, &a.key, a.vector, &a.value_preview).cmp(&(&b.file, &b.key, b.vector, &b.value_preview))
    });
    s.findings.dedup();
    s.findings
}

/// Findings in the one gitdir `dir` created or changed since `since` (the live watch: the
/// agent just wrote a gitdir's config, hooks or index). Empty when `dir` is not a gitdir.
pub fn scan_gitdir(workspace: &Path, dir: &Path, since: SystemTime) -> Vec<Finding> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let entries: Vec<(OsString, FileType)> = entries
        .flatten()
        .filter_map(|e| Some((e.file_name(), e.file_type().ok()?)))
        .collect();
    if !git::is_gitdir(&entries) {
        return Vec::new();
    }
    let mut s = Scan::new(workspace, since, Limits::default());
    git::inspect_gitdir(&mut s, dir);
    s.findings.sort();
    s.findings.dedup();
    s.findings
}

/// Is `path` a work-tree file whose content can make a tool run code later (a build or CI
/// file, a manifest, a package-manager or editor config)? By its name and directory only.
pub fn watched(path: &Path) -> bool {
    files::of_interest(path)
}

/// Findings in the one work-tree file `file` (the live watch: the agent just wrote it),
/// judged as the end-of-run scan judges it. Empty when it is not one of interest or did not
/// change since `since`.
pub fn scan_file(workspace: &Path, file: &Path, since: SystemTime) -> Vec<Finding> {
    let (Some(dir), Some(name)) = (file.parent(), file.file_name().and_then(|n| n.to_str())) else {
        return Vec::new();
    };
    let Ok(md) = fs::symlink_metadata(file) else {
        return Vec::new();
    };
    let mut s = Scan::new(workspace, since, Limits::default());
    files::check(&mut s, dir, name, file, &md.file_type());
    s.findings.sort();
    s.findings.dedup();
    s.findings
}

/// The state of one scan, shared by the `git` and `files` inspectors.
pub(crate) struct Scan {
    /// The workspace, absolute and lexically normal: the prefix of every reported path.
    ws: PathBuf,
    /// The workspace with symlinks resolved, for "is this inside" tests.
    root: PathBuf,
    since: SystemTime,
    deadline: Instant,
    entries_left: usize,
    /// Why the budget ran out, once it has.
    cut: Option<&'static str>,
    findings: Vec<Finding>,
    /// Gitdirs inspected, by canonical path.
    gitdirs: BTreeMap<PathBuf, git::Gitdir>,
    /// `.git` files and symlinks seen: (the `.git` entry, the gitdir it names).
    pointers: Vec<(PathBuf, PathBuf)>,
}

impl Scan {
    fn new(workspace: &Path, since: SystemTime, limits: Limits) -> Self {
        let ws = normalize(&std::path::absolute(workspace).unwrap_or_else(|_| workspace.to_path_buf()));
        let root = fs::canonicalize(&ws).unwrap_or_else(|_| ws.clone());
        Scan {
            ws,
            root,
            since: since.checked_sub(SINCE_SLACK).unwrap_or(UNIX_EPOCH),
            deadline: Instant::now() + limits.max_time,
            entries_left: limits.max_entries,
            cut: None,
            findings: Vec::new(),
            gitdirs: BTreeMap::new(),
            pointers: Vec::new(),
        }
    }

    /// Step 1: a depth-first walk that never follows a symlink.
    fn walk(&mut self) {
        let mut stack = vec![self.ws.clone()];
        while let Some(dir) = stack.pop() {
            let Some(entries) = self.read_dir(&dir) else {
                if self.cut.is_some() {
                    stack.push(dir);
                    break;
                }
                continue;
            };
            let has = |n: &str| entries.iter().any(|(name, _)| name == n);
            // A marker the agent wrote itself does not buy a directory out of the scan.
            let old_marker = |m: &&str| {
                has(m) && fs::symlink_metadata(dir.join(m)).is_ok_and(|md| md.is_file() && !self.changed(&md))
            };
            if dir != self.ws && SKIP_DIR_MARKERS.iter().any(old_marker) {
                continue;
            }
            if git::is_gitdir(&entries) {
                git::inspect_gitdir(self, &dir);
                // Inside a gitdir only submodule and worktree gitdirs matter; objects/ can
                // hold a million files.
                for sub in ["modules", "worktrees"] {
                    if entries.iter().any(|(n, t)| n == sub && t.is_dir()) {
                        stack.push(dir.join(sub));
                    }
                }
                continue;
            }
            for (name, ft) in &entries {
                let path = dir.join(name);
                if ft.is_dir() {
                    if !SKIP_DIR_NAMES.iter().any(|n| name == n) {
                        stack.push(path);
                    }
                } else if name == ".git" {
                    git::pointer(self, &path, ft);
                } else if let Some(name) = name.to_str() {
                    // A name that is not UTF-8 is never one of interest.
                    files::check(self, &dir, name, &path, ft);
                }
            }
        }
        if let Some(why) = self.cut {
            let (first, more) = match stack.first() {
                Some(d) => (d.clone(), stack.len() - 1),
                None => (self.ws.clone(), 0),
            };
            let msg = format!("{why}: {} and {more} more directories not read", first.display());
            self.push(
                "scan-incomplete",
                &first,
                why,
                msg.as_bytes(),
                format!("ls -la {}", shell_quote(&first)),
            );
        }
    }

    /// A directory's entries with their types (not following symlinks). `None` if
    /// unreadable (reported) or if the budget ran out.
    fn read_dir(&mut self, dir: &Path) -> Option<Vec<(OsString, FileType)>> {
        let rd = match fs::read_dir(dir) {
            Ok(rd) => rd,
            Err(e) => {
                let msg = format!("cannot read directory: {e}");
                self.push(
                    "scan-incomplete",
                    dir,
                    "unreadable",
                    msg.as_bytes(),
                    format!("ls -la {}", shell_quote(dir)),
                );
                return None;
            }
        };
        let mut out = Vec::new();
        for entry in rd {
            if !self.spend() {
                return None;
            }
            let Ok(entry) = entry else { continue };
            let Ok(ft) = entry.file_type() else { continue };
            out.push((entry.file_name(), ft));
        }
        Some(out)
    }

    /// Takes one entry from the budget; false once it is spent or the time is up.
    fn spend(&mut self) -> bool {
        if self.cut.is_some() {
            return false;
        }
        if self.entries_left == 0 {
            self.cut = Some("entries");
        } else if Instant::now() >= self.deadline {
            self.cut = Some("time");
        } else {
            self.entries_left -= 1;
            return true;
        }
        false
    }

    /// Whether the inode behind `md` was created or changed during the run.
    fn changed(&self, md: &Metadata) -> bool {
        let ctime = match u64::try_from(md.ctime()) {
            Ok(secs) => UNIX_EPOCH + Duration::new(secs, u32::try_from(md.ctime_nsec()).unwrap_or(0)),
            Err(_) => UNIX_EPOCH,
        };
        ctime >= self.since
    }

    /// Whether `p` lies in the workspace once symlinks are resolved (or, if it does not
    /// exist, once `..` is resolved).
    fn inside(&self, p: &Path) -> bool {
        match fs::canonicalize(p) {
            Ok(c) => c.starts_with(&self.root),
            Err(_) => {
                let n = normalize(p);
                n.starts_with(&self.ws) || n.starts_with(&self.root)
            }
        }
    }

    /// Records a finding; `key` and `value` are escaped here, whatever their source.
    fn push(
        &mut self,
        vector: &'static str,
        file: &Path,
        key: impl AsRef<[u8]>,
        value: &[u8],
        inspect: String,
    ) {
        self.findings.push(Finding {
            vector,
            file: file.to_path_buf(),
            key: text::escape_bytes(key.as_ref()).into_owned(),
            value_preview: text::preview(value, PREVIEW_MAX),
            inspect,
        });
    }

    /// A symlink where a file of interest would be: the finding is the link itself.
    fn push_symlink(&mut self, vector: &'static str, path: &Path) {
        let target = fs::read_link(path).unwrap_or_default();
        let mut value = b"symlink -> ".to_vec();
        value.extend_from_slice(std::os::unix::ffi::OsStrExt::as_bytes(target.as_os_str()));
        self.push(
            vector,
            path,
            "symlink",
            &value,
            format!("ls -l {}", shell_quote(path)),
        );
    }

    /// The budget ran out inside `path`: say where.
    fn push_incomplete(&mut self, path: &Path) {
        let why = self.cut.unwrap_or("entries");
        let msg = format!("{why}: stopped while reading {}", path.display());
        self.push(
            "scan-incomplete",
            path,
            why,
            msg.as_bytes(),
            format!("ls -la {}", shell_quote(path)),
        );
    }
}

/// Why a file of interest was not read.
pub(crate) enum Unread {
    /// Not a regular file (a FIFO would block the reader), or gone.
    NotRegular,
    /// Larger than [`MAX_FILE`].
    TooLarge,
}

/// Reads a regular file without following a symlink and without blocking on a FIFO swapped
/// in after the `lstat`; the metadata is the opened file's own.
pub(crate) fn read_regular(path: &Path) -> Result<(Metadata, Vec<u8>), Unread> {
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|_| Unread::NotRegular)?;
    let md = file.metadata().map_err(|_| Unread::NotRegular)?;
    if !md.is_file() {
        return Err(Unread::NotRegular);
    }
    if md.len() > MAX_FILE {
        return Err(Unread::TooLarge);
    }
    let mut buf = Vec::new();
    file.take(MAX_FILE + 1)
        .read_to_end(&mut buf)
        .map_err(|_| Unread::NotRegular)?;
    if buf.len() as u64 > MAX_FILE {
        return Err(Unread::TooLarge);
    }
    Ok((md, buf))
}

/// `path` with `.` and `..` resolved lexically.
pub(crate) fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests;
