//! The transactional workspace's overlay (parent side, like the other bind trees): the real
//! workspace as the lower layer, the run's layer directory as upper and work. docs/workspace.md.

use super::StepError;
use crate::sys;
use std::fs;
use std::os::fd::OwnedFd;
use std::path::Path;

/// A detached copy of the tree at `path`, idmapped when `idmap` is given (attributes other
/// than the idmapping are set by the caller).
pub(super) fn clone_tree(path: &Path, idmap: Option<&OwnedFd>) -> Result<OwnedFd, StepError> {
    let shown = path.display().to_string();
    let fd = sys::open_tree_clone(path).map_err(|e| StepError::io("filesystem: open_tree", &e, &shown))?;
    if idmap.is_some() {
        sys::set_tree_attrs(&fd, false, false, idmap).map_err(|e| {
            let detail = if e.raw_os_error() == Some(libc::EINVAL) {
                format!(
                    "{shown} ({}): this filesystem cannot be idmapped, which cordon needs to show its owner's files as the agent's; use a directory on ext4, xfs, btrfs or tmpfs",
                    fs_name(path)
                )
            } else {
                shown.clone()
            };
            StepError::io("filesystem: idmapped mount", &e, &detail)
        })?;
    }
    Ok(fd)
}

/// The transactional workspace: an overlay whose lower layer is the real workspace and whose
/// upper and work directories are in the run's layer directory. Only the lower layer is
/// idmapped: overlay makes its work directories with the mounter's (root's) ids, which an
/// idmapped upper cannot map, so the upper layer holds the agent's host ids and a commit gives
/// the files to the workspace's owner. `redirect_dir=off` and
/// `metacopy=off` keep the upper layer a plain tree `cordon diff` can read (a renamed directory
/// is copied; every changed file holds its bytes).
pub(super) fn overlay(
    workspace: &Path,
    layer: &Path,
    idmap: Option<&OwnedFd>,
    noexec: bool,
) -> Result<OwnedFd, StepError> {
    let what = "filesystem: transactional workspace (overlay)";
    let lower = clone_tree(workspace, idmap)?;
    let layer_tree = clone_tree(layer, None)?;
    let dir = |name: &str| {
        sys::open_dir_at(&layer_tree, Path::new(name))
            .map_err(|e| StepError::io(what, &e, &layer.join(name).display().to_string()))
    };
    let (upper, work) = (dir("upper")?, dir("work")?);
    let options = [
        ("redirect_dir", "off"),
        ("metacopy", "off"),
        ("index", "off"),
        ("xino", "off"),
        ("volatile", ""),
    ];
    let fd = sys::overlay_mount(&lower, &upper, &work, &options).map_err(|e| {
        let fs = fs_name(workspace);
        StepError::io(
            what,
            &e,
            &format!(
                "{} ({fs}): overlayfs cannot use it as a lower layer here; run with --direct",
                workspace.display()
            ),
        )
    })?;
    sys::set_tree_attrs(&fd, false, noexec, None)
        .map_err(|e| StepError::io(what, &e, &workspace.display().to_string()))?;
    Ok(fd)
}

/// The filesystem type of `path`'s mount, for an error message.
fn fs_name(path: &Path) -> String {
    let Ok(mounts) = fs::read_to_string("/proc/self/mounts") else {
        return "unknown filesystem".into();
    };
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split(' ');
            let (_, at, ty) = (f.next()?, f.next()?, f.next()?);
            path.starts_with(at).then(|| (at.len(), ty.to_string()))
        })
        .max()
        .map_or("unknown filesystem".into(), |(_, ty)| ty)
}
