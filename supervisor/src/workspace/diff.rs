//! What the agent changed: the overlay's upper layer read against the real workspace (its
//! lower layer, as it is now). A file in the upper layer whose bytes, target and mode equal the
//! real one's is no change (a copy-up by an open for writing, or a change already committed).
//! Overlay records a deletion as a whiteout (a 0/0 character device, or a file carrying
//! `trusted.overlay.whiteout`) and a directory that replaced one as opaque
//! (`trusted.overlay.opaque`); the layer is mounted with `redirect_dir=off`, so a renamed
//! directory is a deletion plus additions, and `metacopy=off`, so every upper file holds its
//! data.

use serde::Serialize;
use std::collections::HashMap;
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Added,
    Modified,
    Deleted,
    /// Only the permission bits changed.
    Mode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Type {
    File,
    Dir,
    Symlink,
    Other,
}

/// One side of a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Entry {
    pub ty: Type,
    pub mode: u32,
    pub size: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    /// Relative to the workspace.
    pub path: PathBuf,
    pub kind: Kind,
    /// The real workspace's entry (absent for an addition).
    pub old: Option<Entry>,
    /// The agent's entry (absent for a deletion).
    pub new: Option<Entry>,
    /// An addition whose bytes equal a file deleted in the same run: a rename.
    pub renamed_from: Option<PathBuf>,
    /// An added or modified file that is a hard link of an earlier changed path.
    pub link_of: Option<PathBuf>,
}

impl Change {
    pub fn letter(&self) -> char {
        match (self.kind, &self.renamed_from) {
            (Kind::Added, Some(_)) => 'R',
            (Kind::Added, None) => 'A',
            (Kind::Modified, _) => 'M',
            (Kind::Deleted, _) => 'D',
            (Kind::Mode, _) => 'P',
        }
    }
}

/// Every change in `upper` against `lower`, in path order (a directory before what it holds;
/// a deleted directory after what it held).
pub fn changes(upper: &Path, lower: &Path) -> io::Result<Vec<Change>> {
    let mut out = Vec::new();
    let mut inodes = HashMap::new();
    walk(upper, lower, Path::new(""), true, &mut out, &mut inodes)?;
    pair_renames(upper, lower, &mut out);
    Ok(out)
}

fn type_of(m: &fs::Metadata) -> Type {
    let t = m.file_type();
    if t.is_symlink() {
        Type::Symlink
    } else if t.is_dir() {
        Type::Dir
    } else if t.is_file() {
        Type::File
    } else {
        Type::Other
    }
}

fn entry(m: &fs::Metadata) -> Entry {
    Entry {
        ty: type_of(m),
        mode: m.mode() & 0o7777,
        size: if m.is_file() { m.len() } else { 0 },
    }
}

/// Whether `path` carries the overlay marker `name` (set, empty or `y`).
pub(super) fn xattr_is(path: &Path, name: &std::ffi::CStr) -> bool {
    let mut buf = [0u8; 4];
    crate::sys::lgetxattr(path, name, &mut buf).is_ok_and(|n| n == 0 || buf[0] == b'y')
}

/// An overlay whiteout: the deletion of what the lower layer has at this name.
pub fn is_whiteout(path: &Path, m: &fs::Metadata) -> bool {
    (m.file_type().is_char_device() && m.rdev() == 0)
        || (m.is_file() && m.len() == 0 && xattr_is(path, c"trusted.overlay.whiteout"))
}

fn is_opaque(path: &Path) -> bool {
    xattr_is(path, c"trusted.overlay.opaque")
}

fn sorted_names(dir: &Path) -> io::Result<Vec<std::ffi::OsString>> {
    let mut names: Vec<_> = fs::read_dir(dir)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<io::Result<_>>()?;
    names.sort();
    Ok(names)
}

fn walk(
    upper: &Path,
    lower: &Path,
    rel: &Path,
    lower_live: bool,
    out: &mut Vec<Change>,
    inodes: &mut HashMap<(u64, u64), PathBuf>,
) -> io::Result<()> {
    let dir = upper.join(rel);
    let names = sorted_names(&dir)?;
    if lower_live && !rel.as_os_str().is_empty() && is_opaque(&dir) {
        // The directory replaced the real one: what the real one held and the layer does not
        // is deleted.
        for name in sorted_names(&lower.join(rel)).unwrap_or_default() {
            if !names.contains(&name) {
                let r = rel.join(&name);
                if let Ok(lm) = fs::symlink_metadata(lower.join(&r)) {
                    deleted_tree(lower, &r, &lm, out);
                }
            }
        }
    }
    for name in names {
        let r = rel.join(&name);
        let up = upper.join(&r);
        let um = fs::symlink_metadata(&up)?;
        let lm = if lower_live {
            fs::symlink_metadata(lower.join(&r)).ok()
        } else {
            None
        };
        if is_whiteout(&up, &um) {
            if let Some(lm) = lm {
                deleted_tree(lower, &r, &lm, out);
            }
            continue;
        }
        let new = entry(&um);
        let link_of = if new.ty == Type::File && um.nlink() > 1 {
            let key = (um.dev(), um.ino());
            let first = inodes.get(&key).cloned();
            inodes.entry(key).or_insert_with(|| r.clone());
            first
        } else {
            None
        };
        let change = |kind, old: Option<Entry>| Change {
            path: r.clone(),
            kind,
            old,
            new: Some(new),
            renamed_from: None,
            link_of: link_of.clone(),
        };
        match lm {
            Some(lm) if type_of(&lm) == new.ty => {
                let old = entry(&lm);
                if new.ty == Type::Dir {
                    if old.mode != new.mode {
                        out.push(change(Kind::Mode, Some(old)));
                    }
                    walk(upper, lower, &r, true, out, inodes)?;
                } else if (new.ty == Type::File && old.size != new.size)
                    || !same_content(&up, &lower.join(&r), new.ty)?
                {
                    out.push(change(Kind::Modified, Some(old)));
                } else if old.mode != new.mode && new.ty != Type::Symlink {
                    out.push(change(Kind::Mode, Some(old)));
                } else if link_of
                    .as_ref()
                    .is_some_and(|first| !same_inode(&lower.join(first), &lower.join(&r)))
                {
                    // A new hard link to an unchanged file: the link itself is the change.
                    out.push(change(Kind::Modified, Some(old)));
                }
            }
            other => {
                if let Some(lm) = other {
                    deleted_tree(lower, &r, &lm, out);
                }
                out.push(change(Kind::Added, None));
                if new.ty == Type::Dir {
                    walk(upper, lower, &r, false, out, inodes)?;
                }
            }
        }
    }
    Ok(())
}

fn same_inode(a: &Path, b: &Path) -> bool {
    match (fs::symlink_metadata(a), fs::symlink_metadata(b)) {
        (Ok(x), Ok(y)) => (x.dev(), x.ino()) == (y.dev(), y.ino()),
        _ => false,
    }
}

/// A deleted real entry, and for a directory everything in it (contents first).
fn deleted_tree(lower: &Path, rel: &Path, m: &fs::Metadata, out: &mut Vec<Change>) {
    if m.is_dir() {
        for name in sorted_names(&lower.join(rel)).unwrap_or_default() {
            let r = rel.join(name);
            if let Ok(cm) = fs::symlink_metadata(lower.join(&r)) {
                deleted_tree(lower, &r, &cm, out);
            }
        }
    }
    out.push(Change {
        path: rel.to_path_buf(),
        kind: Kind::Deleted,
        old: Some(entry(m)),
        new: None,
        renamed_from: None,
        link_of: None,
    });
}

fn same_content(a: &Path, b: &Path, ty: Type) -> io::Result<bool> {
    match ty {
        Type::Symlink => Ok(fs::read_link(a)? == fs::read_link(b)?),
        Type::File => {
            // Callers compare the sizes first (from the metadata they hold).
            let (mut fa, mut fb) = (fs::File::open(a)?, fs::File::open(b)?);
            let (mut ba, mut bb) = (vec![0u8; 64 << 10], vec![0u8; 64 << 10]);
            loop {
                let n = read_full(&mut fa, &mut ba)?;
                let m = read_full(&mut fb, &mut bb)?;
                if n != m || ba[..n] != bb[..m] {
                    return Ok(false);
                }
                if n == 0 {
                    return Ok(true);
                }
            }
        }
        Type::Dir | Type::Other => Ok(true),
    }
}

fn read_full(f: &mut fs::File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// An added file with the size and bytes of a deleted one is shown as a rename.
fn pair_renames(upper: &Path, lower: &Path, out: &mut [Change]) {
    let deleted: Vec<(PathBuf, u64)> = out
        .iter()
        .filter(|c| c.kind == Kind::Deleted && c.old.is_some_and(|o| o.ty == Type::File))
        .map(|c| (c.path.clone(), c.old.map_or(0, |o| o.size)))
        .collect();
    let mut used = Vec::new();
    for c in out.iter_mut().filter(|c| c.kind == Kind::Added) {
        let Some(new) = c.new.filter(|n| n.ty == Type::File && n.size > 0) else {
            continue;
        };
        let hit = deleted.iter().find(|(p, size)| {
            *size == new.size
                && !used.contains(p)
                && same_content(&upper.join(&c.path), &lower.join(p), Type::File).unwrap_or(false)
        });
        if let Some((p, _)) = hit {
            used.push(p.clone());
            c.renamed_from = Some(p.clone());
        }
    }
}

/// Whether a path given on the command line selects `change` (itself or beneath it).
pub fn selects(only: &[PathBuf], change: &Path) -> bool {
    only.is_empty() || only.iter().any(|o| change.starts_with(o))
}

/// One line per change for `--stat` (paths escaped for a terminal).
pub fn stat_line(c: &Change) -> String {
    use crate::text::escape;
    let p = escape(&c.path.to_string_lossy()).into_owned();
    let what = match (c.kind, c.old, c.new) {
        (Kind::Added, _, Some(n)) => match (&c.renamed_from, &c.link_of) {
            (Some(from), _) => format!("{} -> {p}", escape(&from.to_string_lossy())),
            (None, Some(l)) => format!("{p} (hard link of {})", escape(&l.to_string_lossy())),
            (None, None) => format!("{p} ({})", describe(n)),
        },
        (Kind::Modified, Some(o), Some(n)) if o.ty == Type::File => {
            format!("{p} ({} -> {} bytes{})", o.size, n.size, mode_note(o, n))
        }
        (Kind::Modified, _, _) => format!("{p} ({})", c.new.map_or("changed".into(), describe)),
        (Kind::Mode, Some(o), Some(n)) => format!("{p} (mode {:o} -> {:o})", o.mode, n.mode),
        (_, o, _) => format!("{p} ({})", o.map_or("gone".into(), describe)),
    };
    format!("{} {what}", c.letter())
}

fn mode_note(o: Entry, n: Entry) -> String {
    if o.mode == n.mode {
        String::new()
    } else {
        format!(", mode {:o} -> {:o}", o.mode, n.mode)
    }
}

fn describe(e: Entry) -> String {
    match e.ty {
        Type::File => format!("{} bytes, mode {:o}", e.size, e.mode),
        Type::Dir => format!("directory, mode {:o}", e.mode),
        Type::Symlink => "symlink".into(),
        Type::Other => "special file".into(),
    }
}

/// Text files up to this size get a unified diff; larger or binary ones their sizes.
const DIFF_MAX: u64 = 8 << 20;

/// The unified diff of one change (headers `a/PATH`, `b/PATH`), escaped for a terminal.
pub fn unified(c: &Change, upper: &Path, lower: &Path) -> String {
    use crate::text::escape;
    let p = c.path.to_string_lossy();
    let read = |side: Option<Entry>, root: &Path, rel: &Path| -> Option<Vec<u8>> {
        match side?.ty {
            Type::File if side?.size <= DIFF_MAX => fs::read(root.join(rel)).ok(),
            Type::Symlink => fs::read_link(root.join(rel))
                .ok()
                .map(|t| format!("-> {}\n", t.to_string_lossy()).into_bytes()),
            _ => None,
        }
    };
    let old_rel = c.renamed_from.as_deref().unwrap_or(&c.path);
    let old = if c.kind == Kind::Added && c.renamed_from.is_none() {
        Some(Vec::new())
    } else {
        read(
            c.old.or(c.new.filter(|_| c.renamed_from.is_some())),
            lower,
            old_rel,
        )
    };
    let new = if c.kind == Kind::Deleted {
        Some(Vec::new())
    } else {
        read(c.new, upper, &c.path)
    };
    let head = format!("{} {}\n", c.letter(), stat_line(c).get(2..).unwrap_or(""));
    if c.kind == Kind::Mode
        || c.new.is_some_and(|n| n.ty == Type::Dir)
        || c.old.is_some_and(|o| o.ty == Type::Dir)
    {
        return head;
    }
    match (as_text(old.as_deref()), as_text(new.as_deref())) {
        (Some(o), Some(n)) => {
            let diff = similar::TextDiff::from_lines(o, n);
            let body = diff
                .unified_diff()
                .context_radius(3)
                .header(&format!("a/{p}"), &format!("b/{p}"))
                .to_string();
            let escaped: Vec<String> = body.lines().map(|l| escape(l).into_owned()).collect();
            format!("{head}{}\n", escaped.join("\n"))
        }
        _ => format!(
            "{head}  binary or large: {} -> {} bytes\n",
            c.old.map_or(0, |o| o.size),
            c.new.map_or(0, |n| n.size)
        ),
    }
}

fn as_text(b: Option<&[u8]>) -> Option<&str> {
    b.filter(|b| !b.contains(&0))
        .and_then(|b| std::str::from_utf8(b).ok())
}

/// `path sha256` of what the agent left at each changed path (`-` for a deletion), for the
/// trace's seal: what `trace verify` proves the agent changed.
pub fn summary(changes: &[Change], upper: &Path) -> Vec<String> {
    use sha2::{Digest, Sha256};
    changes
        .iter()
        .map(|c| {
            let hash = match c.new.map(|n| n.ty) {
                Some(Type::File) => fs::read(upper.join(&c.path))
                    .map(|b| crate::text::hex(&Sha256::digest(&b)))
                    .unwrap_or_else(|_| "unreadable".into()),
                Some(Type::Symlink) => fs::read_link(upper.join(&c.path))
                    .map(|t| format!("symlink {}", t.to_string_lossy()))
                    .unwrap_or_default(),
                Some(Type::Dir) => "directory".into(),
                Some(Type::Other) => "special".into(),
                None => "-".into(),
            };
            format!("{} {} {hash}", c.letter(), c.path.to_string_lossy())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let t = tempfile::tempdir().unwrap();
        let (u, l) = (t.path().join("upper"), t.path().join("lower"));
        fs::create_dir_all(&u).unwrap();
        fs::create_dir_all(&l).unwrap();
        (t, u, l)
    }

    #[test]
    fn added_modified_unchanged_and_renamed() {
        let (_t, u, l) = tree();
        fs::write(l.join("same"), "x\n").unwrap();
        fs::write(u.join("same"), "x\n").unwrap(); // a copy-up without a change
        fs::write(l.join("edit"), "one\n").unwrap();
        fs::write(u.join("edit"), "two\n").unwrap();
        fs::write(u.join("new"), "hello\n").unwrap();
        fs::write(l.join("old"), "moved bytes\n").unwrap();
        fs::write(u.join("moved"), "moved bytes\n").unwrap();
        // `old` is gone in the layer only through a whiteout, which needs root (mknod); a
        // deletion is tested in tests/workspace.rs. Here: no whiteout, so no rename.
        let c = changes(&u, &l).unwrap();
        let lines: Vec<String> = c.iter().map(stat_line).collect();
        assert_eq!(
            lines,
            [
                "M edit (4 -> 4 bytes)",
                "A moved (12 bytes, mode 644)",
                "A new (6 bytes, mode 644)"
            ]
        );
        let d = unified(&c[0], &u, &l);
        assert!(d.contains("-one\n+two"), "{d}");
    }

    #[test]
    fn selection_is_by_path_prefix() {
        assert!(selects(&[], Path::new("a/b")));
        assert!(selects(&[PathBuf::from("a")], Path::new("a/b")));
        assert!(!selects(&[PathBuf::from("a/b")], Path::new("a/bc")));
    }

    #[test]
    fn agent_bytes_are_escaped_in_the_diff() {
        let (_t, u, l) = tree();
        fs::write(u.join("x"), "\x1b]0;owned\x07\n").unwrap();
        let c = changes(&u, &l).unwrap();
        let d = unified(&c[0], &u, &l);
        assert!(!d.contains('\x1b'), "{d:?}");
    }
}
