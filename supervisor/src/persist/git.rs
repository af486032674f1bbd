//! Git: gitdirs (whatever their name), their config, hooks and index; `.git` files that
//! point at a gitdir; gitlinks that make git recurse into a submodule's gitdir.
//!
//! git runs code from a gitdir's config (keys in `gitconfig::runs_code`) and hooks, in any
//! repository it works in, including a submodule it recurses into on `git status`. So a
//! gitlink in the outer index into a repository carrying such a key is how a plain
//! `git status` at the workspace root runs it.

use std::fs::{self, FileType};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::shell::{shell_quote, shell_quote_bytes};
use super::{gitconfig, index, normalize, read_regular, Scan, Unread};

/// What the scan learnt about one gitdir.
#[derive(Debug, Default)]
pub(crate) struct Gitdir {
    /// The path reported (under the workspace as given).
    shown: PathBuf,
    /// Findings in its config, hooks and pointers.
    findings: usize,
    /// Index files changed during the run, each with its gitlink paths.
    indexes: Vec<(PathBuf, Vec<Vec<u8>>)>,
    /// Work trees known to use it (where gitlink paths are rooted).
    roots: Vec<PathBuf>,
    gitlinks_done: bool,
}

/// git's own test (`is_git_directory`): HEAD, and objects/ and refs/ or a commondir file. Any
/// one of the latter is enough here, so a half-built gitdir is still inspected.
pub(crate) fn is_gitdir(entries: &[(std::ffi::OsString, FileType)]) -> bool {
    let has = |n: &str, dir: bool| entries.iter().any(|(name, t)| name == n && t.is_dir() == dir);
    has("HEAD", false) && (has("objects", true) || has("refs", true) || has("commondir", false))
}

/// Inspects the gitdir at `dir` once: its config files, hooks, commondir, info/attributes,
/// and the gitlinks of its changed index files.
pub(crate) fn inspect_gitdir(s: &mut Scan, dir: &Path) {
    let Ok(canon) = fs::canonicalize(dir) else { return };
    if s.gitdirs.contains_key(&canon) {
        return;
    }
    s.gitdirs.insert(
        canon.clone(),
        Gitdir {
            shown: dir.to_path_buf(),
            ..Gitdir::default()
        },
    );
    let before = s.findings.len();
    let mut hash_len = 20;
    let mut hooks_path = None;
    for name in ["config", "config.worktree"] {
        let Some(cfg) = config_file(s, &dir.join(name)) else {
            continue;
        };
        for e in cfg.entries {
            match (e.key.as_slice(), e.value) {
                (b"extensions.objectformat", Some(v)) if v.eq_ignore_ascii_case(b"sha256") => hash_len = 32,
                (b"core.hookspath", Some(v)) => hooks_path = Some(v),
                _ => {}
            }
        }
    }
    hooks(s, &dir.join("hooks"));
    if let Some(v) = hooks_path {
        custom_hooks(s, dir, &v);
    }
    commondir(s, dir);
    super::files::gitattributes(s, &dir.join("info").join("attributes"));
    let indexes = changed_indexes(s, dir, hash_len);
    let findings = s.findings.len() - before;
    let gd = s.gitdirs.get_mut(&canon).expect("inserted above");
    gd.findings = findings;
    gd.indexes = indexes;
    if dir.file_name().is_some_and(|n| n == ".git") {
        if let Some(parent) = dir.parent() {
            gd.roots.push(parent.to_path_buf());
        }
    }
}

/// Reads and parses a config file (every time: the object format is needed even when the
/// file is old) and reports its code-running keys if it changed during the run.
fn config_file(s: &mut Scan, path: &Path) -> Option<gitconfig::Parsed> {
    let md = fs::symlink_metadata(path).ok()?;
    if md.is_symlink() {
        if s.changed(&md) {
            s.push_symlink("git-config", path);
        }
        return None;
    }
    let (md, buf) = match read_regular(path) {
        Ok(r) => r,
        Err(Unread::TooLarge) => {
            if s.changed(&md) {
                let q = shell_quote(path);
                s.push(
                    "scan-incomplete",
                    path,
                    "too-large",
                    b"config larger than 64 MiB",
                    format!("ls -l {q}"),
                );
            }
            return None;
        }
        Err(Unread::NotRegular) => return None,
    };
    let parsed = gitconfig::parse(&buf);
    if !s.changed(&md) {
        return Some(parsed);
    }
    let q = shell_quote(path);
    for e in &parsed.entries {
        if gitconfig::runs_code(&e.key, e.value.as_deref()) {
            let inspect = format!("git config --file {q} --unset-all {}", shell_quote_bytes(&e.key));
            s.push(
                "git-config",
                path,
                &e.key,
                e.value.as_deref().unwrap_or(b"true"),
                inspect,
            );
        }
    }
    for line in &parsed.bad_lines {
        let text = buf.split(|&c| c == b'\n').nth(line - 1).unwrap_or_default();
        let mut value = format!("line {line} is not git config syntax: ").into_bytes();
        value.extend_from_slice(text);
        s.push("git-config", path, "", &value, format!("cat -v {q}"));
    }
    Some(parsed)
}

/// Every hook (any entry of hooks/ not ending in `.sample`: git runs hooks by name) created
/// or changed during the run; a hook that was there before and is untouched is not.
fn hooks(s: &mut Scan, dir: &Path) {
    let Ok(md) = fs::symlink_metadata(dir) else { return };
    if md.is_symlink() {
        if s.changed(&md) {
            s.push_symlink("git-hook", dir);
        }
        return;
    }
    let Ok(rd) = fs::read_dir(dir) else { return };
    for entry in rd {
        if !s.spend() {
            s.push_incomplete(dir);
            return;
        }
        let Ok(entry) = entry else { continue };
        let name = entry.file_name();
        let path = entry.path();
        let Ok(md) = fs::symlink_metadata(&path) else {
            continue;
        };
        if name.as_bytes().ends_with(b".sample") || md.is_dir() || !s.changed(&md) {
            continue;
        }
        let key = name.as_bytes().to_vec();
        let value = if md.is_symlink() {
            let mut v = b"symlink -> ".to_vec();
            v.extend_from_slice(fs::read_link(&path).unwrap_or_default().as_os_str().as_bytes());
            v
        } else {
            let body = read_regular(&path).map(|(_, b)| b).unwrap_or_default();
            body.split(|&c| c == b'\n')
                .find(|l| !l.is_empty() && !l.starts_with(b"#!"))
                .unwrap_or_default()
                .to_vec()
        };
        s.push(
            "git-hook",
            &path,
            &key,
            &value,
            format!("rm {}", shell_quote(&path)),
        );
    }
}

/// A `core.hooksPath` that predates the run and points into the workspace (husky's
/// `.husky/_`, a `.githooks/`): a hook added there during the run is reported like one in
/// hooks/. Relative paths are taken from the work tree (the parent of a `.git` directory),
/// or the gitdir itself for a bare one. husky's `_/` wrappers call the hooks one level up,
/// so that directory is read too.
fn custom_hooks(s: &mut Scan, gitdir: &Path, value: &[u8]) {
    let v = Path::new(std::ffi::OsStr::from_bytes(value));
    let base = match gitdir.file_name() {
        Some(n) if n == ".git" => gitdir.parent().unwrap_or(gitdir),
        _ => gitdir,
    };
    let dir = normalize(&base.join(v));
    if !s.inside(&dir) || dir == gitdir.join("hooks") {
        return;
    }
    hooks(s, &dir);
    if dir.file_name().is_some_and(|n| n == "_") {
        if let Some(parent) = dir.parent() {
            hooks(s, parent);
        }
    }
}

/// A linked worktree's gitdir names the shared one in `commondir`; git takes config and hooks
/// from there, so one outside the workspace is a finding.
fn commondir(s: &mut Scan, dir: &Path) {
    let path = dir.join("commondir");
    let Ok((md, buf)) = read_regular(&path) else {
        return;
    };
    let target = dir.join(std::ffi::OsStr::from_bytes(trim_end(&buf)));
    if !s.inside(&target) {
        if s.changed(&md) {
            s.push(
                "gitdir-pointer",
                &path,
                "commondir",
                &buf,
                format!("cat -v {}", shell_quote(&path)),
            );
        }
    } else if target.is_dir() {
        inspect_gitdir(s, &normalize(&target));
    }
}

fn trim_end(b: &[u8]) -> &[u8] {
    let end = b
        .iter()
        .rposition(|c| !matches!(c, b'\n' | b'\r'))
        .map_or(0, |i| i + 1);
    &b[..end]
}

/// The `index` and split-index `sharedindex.*` files changed during the run, with their
/// gitlinks. An index that cannot be parsed is reported: git's own reader may disagree.
fn changed_indexes(s: &mut Scan, dir: &Path, hash_len: usize) -> Vec<(PathBuf, Vec<Vec<u8>>)> {
    let mut names = vec![std::ffi::OsString::from("index")];
    if let Ok(rd) = fs::read_dir(dir) {
        names.extend(
            rd.flatten()
                .map(|e| e.file_name())
                .filter(|n| n.as_bytes().starts_with(b"sharedindex.")),
        );
    }
    let mut out = Vec::new();
    for name in names {
        let path = dir.join(name);
        let Ok(md) = fs::symlink_metadata(&path) else {
            continue;
        };
        if !s.changed(&md) {
            continue;
        }
        let q = shell_quote(&path);
        let buf = match read_regular(&path) {
            Ok((_, b)) => b,
            Err(Unread::TooLarge) => {
                s.push(
                    "scan-incomplete",
                    &path,
                    "too-large",
                    b"index larger than 64 MiB",
                    format!("ls -l {q}"),
                );
                continue;
            }
            Err(Unread::NotRegular) => {
                s.push(
                    "scan-incomplete",
                    &path,
                    "unreadable",
                    b"index is not a regular file",
                    format!("ls -l {q}"),
                );
                continue;
            }
        };
        let other = if hash_len == 20 { 32 } else { 20 };
        match index::gitlinks(&buf, hash_len).or_else(|_| index::gitlinks(&buf, other)) {
            Ok(links) => out.push((path, links)),
            Err(e) => {
                let msg = format!("index not parsed ({e:?}); its gitlinks are unknown");
                s.push(
                    "scan-incomplete",
                    &path,
                    "unreadable",
                    msg.as_bytes(),
                    format!("ls -l {q}"),
                );
            }
        }
    }
    out
}

/// A `.git` entry that is not a directory: a `gitdir: PATH` file or a symlink. Either is
/// remembered (step 2 follows it); one made during the run is reported when it is a symlink
/// or names a gitdir outside the workspace.
pub(crate) fn pointer(s: &mut Scan, path: &Path, ft: &FileType) {
    let Ok(md) = fs::symlink_metadata(path) else {
        return;
    };
    let dir = path.parent().unwrap_or(Path::new("/"));
    if ft.is_symlink() {
        if s.changed(&md) {
            s.push_symlink("gitdir-pointer", path);
        }
        if let Ok(target) = fs::read_link(path) {
            s.pointers
                .push((path.to_path_buf(), normalize(&dir.join(target))));
        }
        return;
    }
    let Ok((md, buf)) = read_regular(path) else { return };
    // git's read_gitfile: "gitdir: " then the path, trailing CR/LF dropped; anything else
    // makes git stop with "invalid gitfile format", so runs nothing.
    let Some(rest) = buf.strip_prefix(b"gitdir: ") else {
        return;
    };
    let target = normalize(&dir.join(std::ffi::OsStr::from_bytes(trim_end(rest))));
    if s.changed(&md) && !s.inside(&target) {
        s.push(
            "gitdir-pointer",
            path,
            "gitdir",
            &buf,
            format!("cat -v {}", shell_quote(path)),
        );
    }
    s.pointers.push((path.to_path_buf(), target));
}

/// Step 2. Inspects the gitdirs named by `.git` entries that the walk did not reach (in a
/// skipped directory, say), then each gitlink of each changed index: a gitlink is reported
/// when its submodule's gitdir has a finding or lies outside the workspace. Repeats until no
/// new gitdir turns up (a submodule's own index may hold gitlinks).
pub(crate) fn finish(s: &mut Scan) {
    let pointers = std::mem::take(&mut s.pointers);
    for (dotgit, target) in &pointers {
        if s.inside(target) && target.is_dir() {
            inspect_gitdir(s, target);
        }
        if let (Ok(canon), Some(root)) = (fs::canonicalize(target), dotgit.parent()) {
            if let Some(gd) = s.gitdirs.get_mut(&canon) {
                gd.roots.push(root.to_path_buf());
            }
        }
    }
    while let Some(key) = s
        .gitdirs
        .iter()
        .find(|(_, g)| !g.gitlinks_done)
        .map(|(k, _)| k.clone())
    {
        let gd = s.gitdirs.get_mut(&key).expect("found above");
        gd.gitlinks_done = true;
        let (indexes, roots) = (std::mem::take(&mut gd.indexes), gd.roots.clone());
        for root in &roots {
            for (index_file, links) in &indexes {
                for link in links {
                    gitlink(s, root, index_file, link);
                }
            }
        }
    }
}

fn gitlink(s: &mut Scan, root: &Path, index_file: &Path, link: &[u8]) {
    let sub = normalize(&root.join(std::ffi::OsStr::from_bytes(link)));
    let Some(why) = submodule_risk(s, &sub) else {
        return;
    };
    let inspect = format!(
        "git -c core.fsmonitor=false -c core.hooksPath=/dev/null -C {} rm --cached -f -q -- {}",
        shell_quote(root),
        shell_quote_bytes(link)
    );
    s.push("gitlink", index_file, link, why.as_bytes(), inspect);
}

/// Why git recursing into the submodule checked out at `sub` would run code, if it would.
fn submodule_risk(s: &mut Scan, sub: &Path) -> Option<String> {
    if !s.inside(sub) {
        return Some(format!(
            "submodule path {} is outside the workspace",
            sub.display()
        ));
    }
    let dotgit = sub.join(".git");
    let md = fs::symlink_metadata(&dotgit).ok()?;
    let gitdir = if md.is_dir() {
        dotgit
    } else if md.is_symlink() {
        normalize(&sub.join(fs::read_link(&dotgit).ok()?))
    } else {
        let (_, buf) = read_regular(&dotgit).ok()?;
        let rest = buf.strip_prefix(b"gitdir: ")?;
        normalize(&sub.join(std::ffi::OsStr::from_bytes(trim_end(rest))))
    };
    if !s.inside(&gitdir) {
        return Some(format!(
            "submodule gitdir {} is outside the workspace",
            gitdir.display()
        ));
    }
    inspect_gitdir(s, &gitdir);
    let canon = fs::canonicalize(&gitdir).ok()?;
    let gd = s.gitdirs.get_mut(&canon)?;
    if !gd.roots.iter().any(|r| r == sub) {
        gd.roots.push(sub.to_path_buf());
    }
    (gd.findings > 0).then(|| {
        format!(
            "submodule gitdir {} has {} finding(s); git status runs them",
            gd.shown.display(),
            gd.findings
        )
    })
}
