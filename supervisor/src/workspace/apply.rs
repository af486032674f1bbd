//! `cordon commit`: the agent's changes applied to the real workspace, file by file.
//!
//! Runs as root over a directory the invoking user (and, while it runs, the agent's overlay)
//! controls, so every step goes through a directory descriptor opened beneath the workspace
//! with no symlink followed (`openat2` RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS): a symlink
//! planted in the real workspace cannot turn a commit into a root write elsewhere. A file is
//! written to a temporary name beside its target, all of them are made durable with one
//! `syncfs`, then each is renamed over its target: a reader sees the old file or the new one,
//! never half of it. A path whose real file changed after the run started (its ctime is later;
//! or, for a path cordon committed before, different from what that commit left) is refused
//! and named; the others are applied.

use super::diff::{self, Change, Kind, Type};
use super::{ctime_ns, Error, Layer};
use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::Mode;
use std::collections::{HashMap, HashSet};
use std::fs;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

#[derive(Debug, Default)]
pub struct Outcome {
    pub applied: Vec<PathBuf>,
    /// Paths not applied, and why.
    pub refused: Vec<(PathBuf, String)>,
    /// Whether nothing is pending any more (the layer was removed when the run had ended).
    pub finished: bool,
}

/// Apply the changes under `only` (all of them when empty).
pub fn commit(layer: &mut Layer, only: &[PathBuf]) -> Result<Outcome, Error> {
    let upper = layer.upper();
    let all =
        diff::changes(&upper, &layer.record.workspace).map_err(Error::io("cannot read the layer", &upper))?;
    commit_changes(layer, &all, only)
}

/// [`commit`] with the layer's changes already read (`diff::changes`).
pub fn commit_changes(layer: &mut Layer, all: &[Change], only: &[PathBuf]) -> Result<Outcome, Error> {
    let ws = layer.record.workspace.clone();
    let upper = layer.upper();
    for o in only {
        if !all.iter().any(|c| c.path.starts_with(o)) {
            return Err(Error::Refused(format!(
                "{}: the agent did not change it (`cordon diff {} --name-only` lists what it changed)",
                o.display(),
                layer.record.sandbox
            )));
        }
    }
    let selected: Vec<&Change> = all.iter().filter(|c| diff::selects(only, &c.path)).collect();
    if selected.is_empty() {
        return Err(Error::Refused(format!(
            "sandbox {} has no changes to commit",
            layer.record.sandbox
        )));
    }
    let root = fs::File::open(&ws).map_err(Error::io("cannot open the workspace", &ws))?;
    let mut out = Outcome::default();
    let mut ok: Vec<&Change> = Vec::new();
    for c in selected {
        match conflict(layer, c) {
            Some(why) => out.refused.push((c.path.clone(), why)),
            None => ok.push(c),
        }
    }
    let mut dirs = Dirs {
        root: root
            .as_fd()
            .try_clone_to_owned()
            .map_err(Error::io("cannot open", &ws))?,
        open: HashMap::new(),
    };
    let via = Via::choose(layer, &ws)?;
    let to_owner = |u, g| layer.to_owner(u, g);
    let ids: Ids = &to_owner;
    // 1. New directories now; files and symlinks to temporary names beside their targets.
    let mut staged: Vec<(&Change, Staged)> = Vec::new();
    for c in ok {
        match stage(&mut dirs, &upper, &via, ids, c) {
            Ok(tmp) => staged.push((c, tmp)),
            Err(e) => out.refused.push((c.path.clone(), e)),
        }
    }
    // 2. Every new byte on disk before any name points at it.
    let new_files: Vec<PathBuf> = staged
        .iter()
        .filter_map(|(c, st)| match st {
            Staged::Temp(t) => Some(ws.join(c.path.parent().unwrap_or(Path::new(""))).join(t)),
            Staged::Upper => Some(upper.join(&c.path)),
            Staged::Nothing => None,
        })
        .collect();
    durable(&root, &new_files);
    // 3. Renames, deletions and mode changes, in path order (contents before their directory).
    // A hard link may point at a path that is applied or that the agent left unchanged.
    let mut linkable: HashSet<PathBuf> = HashSet::new();
    let changed: HashSet<&Path> = all.iter().map(|c| c.path.as_path()).collect();
    for (c, tmp) in staged {
        let can_link = |p: &Path| linkable.contains(p) || !changed.contains(p);
        match finish(&mut dirs, &upper, &via, ids, c, tmp, can_link) {
            Ok(()) => {
                linkable.insert(c.path.clone());
                out.applied.push(c.path.clone());
            }
            Err(e) => out.refused.push((c.path.clone(), e)),
        }
    }
    let mut parents: Vec<PathBuf> = out
        .applied
        .iter()
        .map(|p| ws.join(p.parent().unwrap_or(Path::new(""))))
        .collect();
    parents.sort();
    parents.dedup();
    durable(&root, &parents);
    for p in &out.applied {
        if let Ok(m) = fs::symlink_metadata(ws.join(p)) {
            layer.record.committed.insert(p.clone(), ctime_ns(&m));
        }
    }
    layer.save()?;
    if out.applied.len() == all.len() && !layer.running() {
        match via {
            // The layer holds the replaced files: removed in the background.
            Via::Move { .. } if all.len() > DISCARD_INLINE_MAX => layer.discard_later()?,
            Via::Move { .. } => layer.remove()?,
            Via::Copy => layer.remove()?,
        }
        out.finished = true;
    } else if let Via::Move { trash, n } = &via {
        // The upper paths of applied files now hold the old real ones: out of the layer.
        let upper_fd = fs::File::open(&upper).map_err(Error::io("cannot open", &upper))?;
        for p in &out.applied {
            let _ = nix::fcntl::renameat(&upper_fd, p.as_path(), trash, trash_name(n).as_str());
        }
    }
    out.refused.sort();
    Ok(out)
}

/// A layer with at most this many changes is removed at once; a bigger one in the background.
const DISCARD_INLINE_MAX: usize = 256;

/// Past this many files, one `syncfs` is cheaper than an `fsync` each.
const FSYNC_EACH_MAX: usize = 64;

/// Make `paths` (files, or directories whose entries changed) durable: an fsync each when
/// they are few (a `syncfs` would flush everything else the host wrote meanwhile), one
/// `syncfs` of the workspace's filesystem when they are many. A symlink is made durable by its
/// directory's fsync.
fn durable(root: &fs::File, paths: &[PathBuf]) {
    if paths.len() > FSYNC_EACH_MAX {
        let _ = nix::unistd::syncfs(root);
        return;
    }
    for p in paths {
        let f = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(p);
        if let Ok(f) = f {
            let _ = f.sync_all();
        }
    }
}

/// How files reach the workspace.
enum Via {
    /// Copied to a temporary name beside the target (while the run goes on, or when the
    /// layer is on another filesystem or a tmpfs).
    Copy,
    /// Moved out of the layer (the run has ended; the layer is on the workspace's
    /// filesystem): each upper file is exchanged with the real one (`renameat2`
    /// RENAME_EXCHANGE: atomic, and no inode is freed on the commit's path); deleted real
    /// files are moved to `trash`; what the layer then holds is removed in the background.
    Move { trash: OwnedFd, n: std::cell::Cell<u64> },
}

impl Via {
    fn choose(layer: &Layer, ws: &Path) -> Result<Via, Error> {
        let dev = |p: &Path| fs::metadata(p).map(|m| m.dev()).ok();
        if layer.running() || layer.record.quota.is_some() || dev(&layer.dir) != dev(ws) {
            return Ok(Via::Copy);
        }
        let dir = layer.dir.join("trash");
        match fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(Error::io("cannot create", &dir)(e)),
        }
        let trash = fs::File::open(&dir).map_err(Error::io("cannot open", &dir))?;
        Ok(Via::Move {
            trash: trash.into(),
            n: std::cell::Cell::new(0),
        })
    }
}

fn trash_name(n: &std::cell::Cell<u64>) -> String {
    n.set(n.get() + 1);
    n.get().to_string()
}

/// What phase 1 left for phase 3.
enum Staged {
    Nothing,
    /// A temporary name beside the target.
    Temp(String),
    /// The file stays in the upper layer until it is exchanged with the target.
    Upper,
}

/// Why `c` must not be applied: the real file changed after the run started, or after
/// cordon's last commit of it.
fn conflict(layer: &Layer, c: &Change) -> Option<String> {
    let real = fs::symlink_metadata(layer.record.workspace.join(&c.path)).ok()?;
    let ctime = ctime_ns(&real);
    match layer.record.committed.get(&c.path) {
        Some(&after) if ctime != after => {
            Some("changed in the workspace after cordon last committed it".into())
        }
        Some(_) => None,
        None if ctime > layer.record.started_ns => Some(
            "changed in the real workspace after the run started: not overwritten (commit it by hand, or rollback)"
                .into(),
        ),
        None => None,
    }
}

/// Directory descriptors beneath the workspace, opened without following any symlink.
struct Dirs {
    root: OwnedFd,
    open: HashMap<PathBuf, OwnedFd>,
}

impl Dirs {
    fn get(&mut self, rel: &Path) -> Result<&OwnedFd, String> {
        if rel.as_os_str().is_empty() {
            return Ok(&self.root);
        }
        if !self.open.contains_key(rel) {
            let how = OpenHow::new()
                .flags(OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
                .resolve(
                    ResolveFlag::RESOLVE_BENEATH
                        | ResolveFlag::RESOLVE_NO_SYMLINKS
                        | ResolveFlag::RESOLVE_NO_MAGICLINKS,
                );
            let fd = nix::fcntl::openat2(&self.root, rel, how).map_err(|e| {
                format!(
                    "cannot open its directory {} in the workspace: {e}",
                    rel.display()
                )
            })?;
            self.open.insert(rel.to_path_buf(), fd);
        }
        Ok(&self.open[rel])
    }
}

fn split(rel: &Path) -> (&Path, &std::ffi::OsStr) {
    (
        rel.parent().unwrap_or(Path::new("")),
        rel.file_name().unwrap_or_default(),
    )
}

fn temp_name(name: &std::ffi::OsStr) -> String {
    let mut b = [0u8; 6];
    let _ = getrandom::fill(&mut b);
    format!(
        ".{}.cordon-commit-{}",
        name.to_string_lossy(),
        crate::text::hex(&b)
    )
}

fn owner(ids: Ids, m: &fs::Metadata) -> (Option<nix::unistd::Uid>, Option<nix::unistd::Gid>) {
    let (uid, gid) = ids(m.uid(), m.gid());
    (
        Some(nix::unistd::Uid::from_raw(uid)),
        Some(nix::unistd::Gid::from_raw(gid)),
    )
}

/// The agent's host ids → the workspace owner's (`Layer::to_owner`).
type Ids<'a> = &'a dyn Fn(u32, u32) -> (u32, u32);

/// Phase 1 for one change: a new directory is made; a file or symlink is written to a
/// temporary name (returned).
fn stage(dirs: &mut Dirs, upper: &Path, via: &Via, ids: Ids, c: &Change) -> Result<Staged, String> {
    let Some(new) = c.new else {
        return Ok(Staged::Nothing);
    };
    if c.kind == Kind::Mode {
        return Ok(Staged::Nothing);
    }
    let src = upper.join(&c.path);
    let um = fs::symlink_metadata(&src).map_err(|e| format!("cannot read it in the layer: {e}"))?;
    let (parent, name) = split(&c.path);
    let dir = dirs.get(parent)?;
    let (uid, gid) = owner(ids, &um);
    let at = nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW;
    let movable = matches!(new.ty, Type::Symlink) || (new.ty == Type::File && c.link_of.is_none());
    if let (Via::Move { .. }, true) = (via, movable) {
        nix::unistd::fchownat(nix::fcntl::AT_FDCWD, &src, uid, gid, at)
            .map_err(|e| format!("cannot set its owner: {e}"))?;
        return Ok(Staged::Upper);
    }
    match new.ty {
        Type::Dir => {
            nix::sys::stat::mkdirat(dir, name, Mode::from_bits_truncate(new.mode))
                .map_err(|e| format!("cannot create the directory: {e}"))?;
            nix::unistd::fchownat(dir, name, uid, gid, at)
                .map_err(|e| format!("cannot set its owner: {e}"))?;
            Ok(Staged::Nothing)
        }
        Type::File if c.link_of.is_some() => Ok(Staged::Nothing), // linked in phase 3
        Type::File => {
            let tmp = temp_name(name);
            let fd = nix::fcntl::openat(
                dir,
                tmp.as_str(),
                OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(0o600),
            )
            .map_err(|e| format!("cannot create a temporary file beside it: {e}"))?;
            let mut to = fs::File::from(fd);
            let copied = fs::File::open(&src)
                .and_then(|mut from| std::io::copy(&mut from, &mut to))
                .map_err(|e| e.to_string())
                .and_then(|_| nix::unistd::fchown(&to, uid, gid).map_err(|e| e.to_string()))
                .and_then(|()| {
                    nix::sys::stat::fchmod(&to, Mode::from_bits_truncate(new.mode)).map_err(|e| e.to_string())
                });
            if let Err(e) = copied {
                let _ = nix::unistd::unlinkat(dir, tmp.as_str(), nix::unistd::UnlinkatFlags::NoRemoveDir);
                return Err(format!("cannot write it: {e}"));
            }
            Ok(Staged::Temp(tmp))
        }
        Type::Symlink => {
            let target = fs::read_link(&src).map_err(|e| format!("cannot read the symlink: {e}"))?;
            let tmp = temp_name(name);
            nix::unistd::symlinkat(&target, dir, tmp.as_str())
                .map_err(|e| format!("cannot create the symlink: {e}"))?;
            nix::unistd::fchownat(dir, tmp.as_str(), uid, gid, at)
                .map_err(|e| format!("cannot set its owner: {e}"))?;
            Ok(Staged::Temp(tmp))
        }
        Type::Other => Err("a special file (device, fifo or socket): not committed".into()),
    }
}

/// Phase 3 for one change: the temporary name renamed over the target; a deletion; a mode.
fn finish(
    dirs: &mut Dirs,
    upper: &Path,
    via: &Via,
    ids: Ids,
    c: &Change,
    staged: Staged,
    can_link: impl Fn(&Path) -> bool,
) -> Result<(), String> {
    let (parent, name) = split(&c.path);
    let dir = dirs.get(parent)?.try_clone().map_err(|e| e.to_string())?;
    match (c.kind, c.new.map(|n| n.ty)) {
        (Kind::Deleted, _) if c.old.is_some_and(|o| o.ty != Type::Dir) && matches!(via, Via::Move { .. }) => {
            let Via::Move { trash, n } = via else {
                return Ok(());
            };
            match nix::fcntl::renameat(&dir, name, trash, trash_name(n).as_str()) {
                Ok(()) | Err(nix::errno::Errno::ENOENT) => Ok(()),
                Err(e) => Err(format!("cannot delete it: {e}")),
            }
        }
        (Kind::Deleted, _) => {
            let flag = if c.old.is_some_and(|o| o.ty == Type::Dir) {
                nix::unistd::UnlinkatFlags::RemoveDir
            } else {
                nix::unistd::UnlinkatFlags::NoRemoveDir
            };
            match nix::unistd::unlinkat(&dir, name, flag) {
                Ok(()) | Err(nix::errno::Errno::ENOENT) => Ok(()),
                Err(e) => Err(format!("cannot delete it: {e}")),
            }
        }
        (Kind::Mode, Some(ty)) => {
            let mode = c.new.map_or(0, |n| n.mode);
            let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
            let flags = if ty == Type::Dir {
                flags | OFlag::O_DIRECTORY
            } else {
                flags
            };
            let fd = nix::fcntl::openat(&dir, name, flags, Mode::empty())
                .map_err(|e| format!("cannot open it: {e}"))?;
            nix::sys::stat::fchmod(&fd, Mode::from_bits_truncate(mode))
                .map_err(|e| format!("cannot change its mode: {e}"))
        }
        (_, Some(Type::File)) if c.link_of.is_some() => {
            let first = c.link_of.as_deref().unwrap_or(Path::new(""));
            let tmp = temp_name(name);
            if can_link(first) {
                let (fp, fname) = split(first);
                let fdir = dirs.get(fp)?.try_clone().map_err(|e| e.to_string())?;
                nix::unistd::linkat(&fdir, fname, &dir, tmp.as_str(), nix::fcntl::AtFlags::empty())
                    .map_err(|e| format!("cannot link it to {}: {e}", first.display()))?;
                rename(&dir, &tmp, name)
            } else {
                // The first name was not committed: this one gets its own copy.
                let copy = Change {
                    link_of: None,
                    ..c.clone()
                };
                match stage(dirs, upper, &Via::Copy, ids, &copy)? {
                    Staged::Temp(t) => rename(&dir, &t, name),
                    _ => Ok(()),
                }
            }
        }
        (_, Some(Type::Dir)) => Ok(()),
        _ => match staged {
            Staged::Temp(t) => rename(&dir, &t, name),
            Staged::Upper => exchange(&upper.join(&c.path), &dir, name),
            Staged::Nothing => Ok(()),
        },
    }
}

/// Put the upper file `src` at `name` in `dir`: exchanged with the real file when there is
/// one (atomic; the old one is left at `src`), else moved there (refused if one appeared).
fn exchange(src: &Path, dir: &OwnedFd, name: &std::ffi::OsStr) -> Result<(), String> {
    use nix::fcntl::{renameat2, RenameFlags};
    match renameat2(nix::fcntl::AT_FDCWD, src, dir, name, RenameFlags::RENAME_EXCHANGE) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::ENOENT) => renameat2(
            nix::fcntl::AT_FDCWD,
            src,
            dir,
            name,
            RenameFlags::RENAME_NOREPLACE,
        )
        .map_err(|e| format!("cannot put it in place: {e}")),
        Err(e) => Err(format!("cannot put it in place: {e}")),
    }
}

fn rename(dir: &OwnedFd, tmp: &str, name: &std::ffi::OsStr) -> Result<(), String> {
    nix::fcntl::renameat(dir, tmp, dir, name).map_err(|e| {
        let _ = nix::unistd::unlinkat(dir, tmp, nix::unistd::UnlinkatFlags::NoRemoveDir);
        format!("cannot put it in place: {e}")
    })
}

/// `cordon rollback`: discard the layer. Refused while the run goes on (kill it first: the
/// agent would keep writing into a layer that no longer exists).
/// The paths discarded (for the record), as far as the layer could be read.
pub fn rollback(layer: &Layer) -> Result<Vec<PathBuf>, Error> {
    if layer.running() {
        return Err(Error::Refused(format!(
            "sandbox {} is still running: stop it first (`cordon kill {}`), then roll back",
            layer.record.sandbox, layer.record.sandbox
        )));
    }
    let discarded = diff::changes(&layer.upper(), &layer.record.workspace)
        .map(|c| c.into_iter().map(|c| c.path).collect())
        .unwrap_or_default();
    layer.remove()?;
    Ok(discarded)
}
