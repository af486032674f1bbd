//! A `write_quota` layer lives on a tmpfs while the run goes on (the cap is the tmpfs's size).
//! When the run ends its upper directory is copied to the disk — whiteouts, opaque markers,
//! hard links, owners and modes included — and the tmpfs is unmounted, so the pending changes
//! survive a reboot like any other layer's.

use super::{Error, Layer};
use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

const OPAQUE: &std::ffi::CStr = c"trusted.overlay.opaque";

impl Layer {
    /// Copy a tmpfs layer's upper directory to `SANDBOX/layer/upper` on the disk and unmount
    /// the tmpfs. Nothing to do for a layer already on the disk.
    pub fn move_to_disk(&self) -> Result<(), Error> {
        if self.record.quota.is_none() || !is_tmpfs(&self.layer_dir()) {
            return Ok(());
        }
        let staged = self.dir.join("upper.copy");
        let _ = fs::remove_dir_all(&staged);
        let mut links = HashMap::new();
        copy_tree(&self.upper(), &staged, &mut links)
            .map_err(Error::io("cannot copy the layer to the disk", &staged))?;
        let root = self.layer_dir();
        nix::mount::umount2(&root, nix::mount::MntFlags::MNT_DETACH)
            .map_err(|e| Error::io("cannot unmount the write_quota tmpfs", &root)(e.into()))?;
        fs::rename(&staged, self.upper()).map_err(Error::io("cannot put the layer in place", &staged))
    }
}

fn is_tmpfs(p: &Path) -> bool {
    nix::sys::statfs::statfs(p).is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC)
}

fn chown(p: &Path, m: &fs::Metadata) -> io::Result<()> {
    std::os::unix::fs::lchown(p, Some(m.uid()), Some(m.gid()))
}

/// Copy `from` to `to` (which must not exist), never following a symlink.
fn copy_tree(from: &Path, to: &Path, links: &mut HashMap<(u64, u64), std::path::PathBuf>) -> io::Result<()> {
    let m = fs::symlink_metadata(from)?;
    let t = m.file_type();
    if t.is_dir() {
        fs::create_dir(to)?;
        if super::diff::xattr_is(from, OPAQUE) {
            set_opaque(to)?;
        }
        for e in fs::read_dir(from)? {
            let e = e?;
            copy_tree(&e.path(), &to.join(e.file_name()), links)?;
        }
        chown(to, &m)?;
        return fs::set_permissions(to, fs::Permissions::from_mode(m.mode() & 0o7777));
    }
    if m.nlink() > 1 && !t.is_dir() {
        if let Some(first) = links.get(&(m.dev(), m.ino())) {
            return fs::hard_link(first, to);
        }
        links.insert((m.dev(), m.ino()), to.to_path_buf());
    }
    if t.is_symlink() {
        std::os::unix::fs::symlink(fs::read_link(from)?, to)?;
    } else if t.is_char_device() {
        // A whiteout (0/0): the deletion of what the workspace has at this name.
        nix::sys::stat::mknod(
            to,
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::empty(),
            m.rdev(),
        )
        .map_err(io::Error::from)?;
    } else if t.is_file() {
        fs::copy(from, to)?;
        chown(to, &m)?;
        return fs::set_permissions(to, fs::Permissions::from_mode(m.mode() & 0o7777));
    } else {
        return Ok(()); // a fifo or socket the agent made: not a change a commit applies
    }
    chown(to, &m)
}

fn set_opaque(p: &Path) -> io::Result<()> {
    crate::sys::lsetxattr(p, OPAQUE, b"y")
}
