//! The sandbox's root filesystem. The parent (host root) clones and marks each bind tree as a
//! detached mount, because only it can traverse every source and create idmapped mounts; the
//! child attaches them to a fresh tmpfs root, adds /dev, /proc, /tmp and masks, and pivots.

use super::StepError;
use crate::policy::{Access, Bind, Policy};
use crate::sys;
use nix::mount::MsFlags;
use std::fs;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Where the new root is assembled inside the child's private mount namespace.
const STAGING: &str = "/tmp";
/// An empty, read-only file in the new root, bound over hidden files.
const EMPTY_FILE: &str = "/.cordon-empty";

pub struct Tree {
    pub bind: Bind,
    pub is_dir: bool,
    pub fd: OwnedFd,
}

/// Parent side: detached, attribute-marked copies of every bind source; with a `layer`, the
/// workspace is an overlay of its real tree under the layer's upper directory.
pub fn prepare(
    policy: &Policy,
    idmap_ns: Option<&OwnedFd>,
    layer: Option<&Path>,
) -> Result<Vec<Tree>, StepError> {
    create_state_dirs(policy)?;
    let ws = &policy.context.workspace;
    if layer.is_some()
        && !policy
            .binds
            .iter()
            .any(|b| &b.path == ws && b.access == Access::ReadWrite)
    {
        return Err(StepError::msg(
            "filesystem: transactional workspace",
            "the profile does not bind the workspace read-write: there is nothing to make transactional",
        ));
    }
    let mut trees = Vec::new();
    for bind in &policy.binds {
        let meta = match fs::metadata(&bind.path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound && !bind.required => continue,
            Err(e) => {
                return Err(StepError::io(
                    "filesystem: bind source",
                    &e,
                    &bind.path.display().to_string(),
                ))
            }
        };
        let idmap = if bind.idmap { idmap_ns } else { None };
        let noexec = !policy.mount_needs_exec(&bind.path);
        let fd = match layer {
            Some(layer) if &bind.path == ws => super::overlay::overlay(&bind.path, layer, idmap, noexec)?,
            _ => {
                let fd = super::overlay::clone_tree(&bind.path, idmap)?;
                sys::set_tree_attrs(&fd, bind.access == Access::ReadOnly, noexec, None).map_err(|e| {
                    StepError::io("filesystem: mount_setattr", &e, &bind.path.display().to_string())
                })?;
                fd
            }
        };
        trees.push(Tree {
            bind: bind.clone(),
            is_dir: meta.is_dir(),
            fd,
        });
    }
    if let Some(dir) = &policy.request_dir {
        trees.extend(request_trees(dir)?);
    }
    for (src, at) in &policy.probe_files {
        // A library the profile shows already is used where it is.
        if policy.binds.iter().any(|b| at.starts_with(&b.path)) {
            continue;
        }
        trees.push(ro_tree(src, at, false, "selftest: a file of the probe")?);
    }
    Ok(trees)
}

/// `approvals.requests`: the run's request directory at `/run/cordon` (read-only: the agent
/// connects to the socket in it, nothing more) and cordon's own binary over the empty
/// `cordon-request` file in it (read-only, executable: the client).
fn request_trees(dir: &Path) -> Result<Vec<Tree>, StepError> {
    use crate::policy::{REQUESTS_INSIDE as INSIDE_DIR, REQUEST_CLIENT as CLIENT_NAME};
    let exe = fs::read_link("/proc/self/exe")
        .map_err(|e| StepError::io("approvals: cordon's own binary", &e, "/proc/self/exe"))?;
    let inside = Path::new(INSIDE_DIR);
    Ok(vec![
        ro_tree(dir, inside, true, "approvals: the request directory")?,
        ro_tree(
            &exe,
            &inside.join(CLIENT_NAME),
            false,
            "approvals: the request client",
        )?,
    ])
}

/// A read-only bind of `src` at `at` in the sandbox: a directory not executable, a file
/// executable.
fn ro_tree(src: &Path, at: &Path, is_dir: bool, step_name: &'static str) -> Result<Tree, StepError> {
    let fd = super::overlay::clone_tree(src, None)?;
    sys::set_tree_attrs(&fd, true, is_dir, None)
        .map_err(|e| StepError::io(step_name, &e, &src.display().to_string()))?;
    Ok(Tree {
        bind: Bind {
            path: at.to_path_buf(),
            access: Access::ReadOnly,
            exec: !is_dir,
            idmap: false,
            required: true,
        },
        is_dir,
        fd,
    })
}

/// `filesystem.state` directories that do not exist yet are made, as the invoking user's
/// (0700): the agent's own state (`~/.claude`), not a place cordon may create in anyone
/// else's name. Parents that are missing too are made the same way.
fn create_state_dirs(policy: &Policy) -> Result<(), StepError> {
    use std::os::unix::fs::DirBuilderExt;
    for dir in &policy.create {
        match fs::metadata(dir) {
            Ok(m) if m.is_dir() => continue,
            Ok(_) => {
                return Err(StepError::msg(
                    "filesystem: state directory",
                    &format!(
                        "{} exists and is not a directory: the agent keeps its state there (move the file away, or use another profile)",
                        dir.display()
                    ),
                ))
            }
            Err(_) => {}
        }
        let mut missing: Vec<&Path> = dir.ancestors().take_while(|p| !p.exists()).collect();
        missing.reverse();
        for p in missing {
            fs::DirBuilder::new()
                .mode(0o700)
                .create(p)
                .map_err(step("filesystem: state directory", p))?;
            nix::unistd::chown(
                p,
                Some(nix::unistd::Uid::from_raw(policy.context.owner_uid)),
                Some(nix::unistd::Gid::from_raw(policy.context.owner_gid)),
            )
            .map_err(|e| {
                StepError::io(
                    "filesystem: state directory owner",
                    &e.into(),
                    &p.display().to_string(),
                )
            })?;
        }
    }
    Ok(())
}

/// The sandbox's /etc/passwd and /etc/group, written into the root tmpfs.
const PASSWD_FILE: &str = "/.cordon-passwd";
const GROUP_FILE: &str = "/.cordon-group";

fn identity_files(root: &Path, policy: &Policy) -> Result<(), StepError> {
    let id = crate::policy::INSIDE_ID;
    let home = policy
        .env
        .get("HOME")
        .cloned()
        .unwrap_or_else(|| policy.context.home.display().to_string());
    let passwd = format!(
        "root:x:0:0:root:/root:/usr/sbin/nologin\nagent:x:{id}:{id}:cordon agent:{home}:/bin/sh\n\
         nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
    );
    let group = format!("root:x:0:\nagent:x:{id}:\nnogroup:x:65534:\n");
    for (file, text) in [(PASSWD_FILE, passwd), (GROUP_FILE, group)] {
        let path = under(root, Path::new(file));
        write_readable(&path, &text).map_err(step("filesystem: user database", &path))?;
    }
    if let Some(t) = &policy.trust {
        let path = under(root, Path::new(TRUST_BUNDLE));
        write_readable(&path, &t.bundle_pem).map_err(step("filesystem: TLS trust store", &path))?;
    }
    Ok(())
}

/// With TLS interception: the host's bundle plus cordon's CA, in the root tmpfs, bound over
/// the system trust paths (the agent reaches it there: the root itself is outside landlock's
/// rules).
const TRUST_BUNDLE: &str = "/.cordon-ca-bundle.pem";
/// Where distributions keep the system's CA bundle (Debian/Ubuntu/Alpine, Fedora/RHEL,
/// OpenSSL's default file, SUSE).
pub const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
    "/etc/ssl/ca-bundle.pem",
];

/// A file every process in the sandbox can read (whatever the launcher's umask).
fn write_readable(path: &Path, text: &str) -> io::Result<()> {
    use std::io::Write;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .open(path)?;
    f.set_permissions(fs::Permissions::from_mode(0o644))?;
    f.write_all(text.as_bytes())
}

fn under(root: &Path, p: &Path) -> PathBuf {
    root.join(p.strip_prefix("/").unwrap_or(p))
}

fn mkdirs(p: &Path) -> io::Result<()> {
    fs::DirBuilder::new().recursive(true).mode(0o755).create(p)
}

fn touch(p: &Path) -> io::Result<()> {
    // A mountpoint that exists already (inside a read-only bind) is used as it is.
    if fs::symlink_metadata(p).is_ok_and(|m| m.is_file()) {
        return Ok(());
    }
    if let Some(parent) = p.parent() {
        mkdirs(parent)?;
    }
    fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o444)
        .open(p)
        .map(drop)
}

fn step<'a>(name: &'static str, p: &'a Path) -> impl FnOnce(io::Error) -> StepError + 'a {
    move |e| StepError::io(name, &e, &p.display().to_string())
}

const NOSUID_NODEV: MsFlags = MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV);

/// Bind `src` on `dst` and make that bind read-only, keeping the flags the source mount has
/// (a remount that drops a locked flag is refused, and dropping noexec would weaken it).
fn bind_ro(src: &Path, dst: &Path, extra: MsFlags) -> io::Result<()> {
    let inherited = mount_flags(src)?;
    sys::mount(
        &src.to_string_lossy(),
        dst,
        "",
        MsFlags::MS_BIND | MsFlags::MS_REC,
        "",
    )?;
    sys::mount(
        "",
        dst,
        "",
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | inherited | extra,
        "",
    )
}

/// The per-mount flags of the mount holding `p`, as MS_* bits for a bind remount.
fn mount_flags(p: &Path) -> io::Result<MsFlags> {
    use nix::sys::statvfs::FsFlags;
    let st = nix::sys::statvfs::statvfs(p)?;
    let mut flags = MsFlags::empty();
    for (st_flag, ms_flag) in [
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
    ] {
        if st.flags().contains(st_flag) {
            flags |= ms_flag;
        }
    }
    Ok(flags)
}

fn unreachable_errno(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOENT | libc::EACCES | libc::ENOTDIR)
    )
}

/// Replace hidden paths with empty, read-only stand-ins: an empty tmpfs for a directory, an
/// empty file for anything else. Runs after pivot_root, so symlinks resolve in the sandbox.
fn hide(policy: &Policy) -> Result<(), StepError> {
    for (n, hidden) in policy.hidden.iter().enumerate() {
        let inside: Vec<&crate::policy::Decoy> = policy
            .decoys
            .iter()
            .filter(|d| d.path.parent() == Some(hidden))
            .collect();
        let itself = policy.decoys.iter().find(|d| &d.path == hidden);
        match fs::metadata(hidden) {
            Ok(m) if m.is_dir() && !inside.is_empty() => decoy_dir(hidden, &inside),
            Ok(m) if m.is_dir() => sys::mount(
                "tmpfs",
                hidden,
                "tmpfs",
                NOSUID_NODEV | MsFlags::MS_NOEXEC | MsFlags::MS_RDONLY,
                "size=4k,nr_inodes=1,mode=0755",
            ),
            Ok(_) if itself.is_some() => {
                // The decoy is written beside the other stand-ins in the root tmpfs.
                let file = PathBuf::from(format!("/.cordon-decoy-{n}"));
                write_readable(&file, itself.map(|d| d.content.as_str()).unwrap_or_default())
                    .and_then(|()| bind_ro(&file, hidden, NOSUID_NODEV | MsFlags::MS_NOEXEC))
            }
            Ok(_) => bind_ro(Path::new(EMPTY_FILE), hidden, NOSUID_NODEV | MsFlags::MS_NOEXEC),
            // Absent, or unreachable with the agent's own credentials: nothing to hide.
            Err(e) if unreachable_errno(&e) => continue,
            Err(e) => Err(e),
        }
        .map_err(step("filesystem: hide", hidden))?;
    }
    Ok(())
}

/// Mask `path` (a directory: an empty read-only tmpfs; a file: the empty file), as hiding
/// does at start. Run in the sandbox's mount namespace (`sys::in_mount_ns`).
pub fn mask(path: &Path) -> io::Result<()> {
    // A grant's path is never a symlink (the envelope lies under read-only places only; this
    // is the second line).
    if fs::symlink_metadata(path)?.file_type().is_symlink() {
        return Err(io::Error::from_raw_os_error(libc::ELOOP));
    }
    if fs::metadata(path)?.is_dir() {
        sys::mount(
            "tmpfs",
            path,
            "tmpfs",
            NOSUID_NODEV | MsFlags::MS_NOEXEC | MsFlags::MS_RDONLY,
            "size=4k,nr_inodes=1,mode=0755",
        )
    } else {
        bind_ro(Path::new(EMPTY_FILE), path, NOSUID_NODEV | MsFlags::MS_NOEXEC)
    }
}

/// Take the mask off `path`: what it hid is visible (and open files opened through the mask
/// keep what they had). Run in the sandbox's mount namespace.
pub fn unmask(path: &Path) -> io::Result<()> {
    sys::umount_detach(path)
}

/// A hidden directory holding only the run's decoys: a small tmpfs, filled, then read-only.
fn decoy_dir(dir: &Path, decoys: &[&crate::policy::Decoy]) -> io::Result<()> {
    sys::mount(
        "tmpfs",
        dir,
        "tmpfs",
        NOSUID_NODEV | MsFlags::MS_NOEXEC,
        "size=64k,nr_inodes=16,mode=0755",
    )?;
    for d in decoys {
        write_readable(&d.path, &d.content)?;
    }
    sys::mount(
        "",
        dir,
        "",
        MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | NOSUID_NODEV | MsFlags::MS_NOEXEC,
        "",
    )
}

/// Make protected paths read-only inside writable binds. Every directory between the
/// writable bind and the protected path is pinned (bound onto itself): a mountpoint cannot be
/// renamed or removed, so `mv .git .git.old && mkdir .git` cannot swap the protection away.
/// Paths that do not exist are skipped here; the supervisor reports any the agent creates.
fn protect(policy: &Policy) -> Result<(), StepError> {
    let mut pinned: Vec<PathBuf> = Vec::new();
    for target in &policy.protected {
        let Some(base) = policy
            .binds
            .iter()
            .filter(|b| b.access == Access::ReadWrite && target.starts_with(&b.path))
            .map(|b| b.path.clone())
            .max_by_key(|p| p.components().count())
        else {
            continue; // inside nothing writable: already read-only, or absent
        };
        let mut chain = Vec::new();
        let mut cur = base.clone();
        let mut present = true;
        for comp in target.strip_prefix(&base).unwrap_or(Path::new("")).components() {
            cur.push(comp);
            match fs::symlink_metadata(&cur) {
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(StepError::msg(
                        "filesystem: protect",
                        &format!(
                            "{} is a symlink inside the protected path {}; refusing to guess what to protect",
                            cur.display(),
                            target.display()
                        ),
                    ))
                }
                Ok(_) => chain.push(cur.clone()),
                Err(e) if unreachable_errno(&e) => {
                    present = false;
                    break;
                }
                Err(e) => return Err(step("filesystem: protect", target)(e)),
            }
        }
        if !present {
            continue;
        }
        for dir in &chain[..chain.len().saturating_sub(1)] {
            if !pinned.contains(dir) {
                sys::mount(
                    &dir.to_string_lossy(),
                    dir,
                    "",
                    MsFlags::MS_BIND | MsFlags::MS_REC,
                    "",
                )
                .map_err(step("filesystem: pin protected parent", dir))?;
                pinned.push(dir.clone());
            }
        }
        bind_ro(target, target, MsFlags::empty()).map_err(step("filesystem: protect", target))?;
    }
    Ok(())
}

/// Child side, in its own user and mount namespaces: build the root and pivot into it.
pub fn build_root(policy: &Policy, trees: &[Tree]) -> Result<(), StepError> {
    let root = Path::new(STAGING);
    // ORDER: make every mount private first so nothing below propagates back to the host.
    sys::mount("", Path::new("/"), "", MsFlags::MS_REC | MsFlags::MS_PRIVATE, "")
        .map_err(step("filesystem: make / private", root))?;
    sys::mount("tmpfs", root, "tmpfs", NOSUID_NODEV, "mode=0755,size=1m")
        .map_err(step("filesystem: root tmpfs", root))?;
    touch(&under(root, Path::new(EMPTY_FILE))).map_err(step("filesystem: empty file", root))?;
    identity_files(root, policy)?;

    let has_tmp_bind = trees.iter().any(|t| t.bind.path == Path::new("/tmp"));
    let mut tmp_done = has_tmp_bind;
    for tree in trees {
        // /tmp (depth 1) goes in before any bind beneath it.
        if !tmp_done && tree.bind.path.components().count() > 2 {
            mount_tmp(root, policy)?;
            tmp_done = true;
        }
        let target = under(root, &tree.bind.path);
        if tree.is_dir {
            mkdirs(&target)
        } else {
            touch(&target)
        }
        .map_err(step("filesystem: mountpoint", &tree.bind.path))?;
        sys::move_mount_to(&tree.fd, &target).map_err(step("filesystem: attach bind", &tree.bind.path))?;
    }
    if !tmp_done {
        mount_tmp(root, policy)?;
    }

    crate::text::milestone("child: binds attached");
    build_dev(root)?;
    crate::text::milestone("child: /dev built");
    // ORDER: proc is mounted before pivot_root: the kernel only lets a user namespace mount
    // proc while a fully visible proc mount exists in its mount namespace (the host's).
    build_proc(root)?;
    crate::text::milestone("child: /proc mounted");

    std::env::set_current_dir(root).map_err(step("filesystem: chdir new root", root))?;
    sys::pivot_root_here().map_err(step("filesystem: pivot_root", root))?;
    std::env::set_current_dir("/").map_err(step("filesystem: chdir /", root))?;
    // ORDER: masks and protections after pivot_root, so that symlinks among those paths
    // resolve inside the sandbox's view rather than the host's.
    crate::text::milestone("child: pivoted");
    protect(policy)?;
    hide(policy)?;
    crate::text::milestone("child: protected and hidden");
    // The sandbox's own user database: the agent is `agent` (uid 1000), not whoever the host
    // calls uid 1000, and the host's accounts are not listed.
    for (ours, theirs) in [(PASSWD_FILE, "/etc/passwd"), (GROUP_FILE, "/etc/group")] {
        if Path::new(theirs).exists() {
            bind_ro(
                Path::new(ours),
                Path::new(theirs),
                NOSUID_NODEV | MsFlags::MS_NOEXEC,
            )
            .map_err(step("filesystem: user database", Path::new(theirs)))?;
        }
    }
    // TLS interception: the system trust store includes cordon's CA, so clients that read
    // it trust the proxy without the agent's help.
    if policy.trust.is_some() {
        for theirs in SYSTEM_BUNDLES.iter().map(Path::new).filter(|p| p.is_file()) {
            bind_ro(Path::new(TRUST_BUNDLE), theirs, NOSUID_NODEV | MsFlags::MS_NOEXEC)
                .map_err(step("filesystem: TLS trust store", theirs))?;
        }
    }
    // The root tmpfs only holds mountpoints: nothing may be created beside them.
    sys::mount(
        "",
        Path::new("/"),
        "",
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | NOSUID_NODEV | MsFlags::MS_NOEXEC,
        "",
    )
    .map_err(step("filesystem: read-only root", Path::new("/")))?;
    Ok(())
}

/// The private /tmp: `noexec` unless the profile makes a place in it executable.
fn mount_tmp(root: &Path, policy: &Policy) -> Result<(), StepError> {
    let tmp = under(root, Path::new("/tmp"));
    let size = policy.tmp_size;
    mkdirs(&tmp).map_err(step("filesystem: /tmp", &tmp))?;
    let noexec = if policy.mount_needs_exec(Path::new("/tmp")) {
        MsFlags::empty()
    } else {
        MsFlags::MS_NOEXEC
    };
    sys::mount(
        "tmpfs",
        &tmp,
        "tmpfs",
        NOSUID_NODEV | noexec,
        &format!("mode=1777,size={size}"),
    )
    .map_err(step("filesystem: /tmp", &tmp))
}

fn build_dev(root: &Path) -> Result<(), StepError> {
    let dev = under(root, Path::new("/dev"));
    mkdirs(&dev).map_err(step("filesystem: /dev", &dev))?;
    sys::mount(
        "tmpfs",
        &dev,
        "tmpfs",
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        "mode=0755,size=64k",
    )
    .map_err(step("filesystem: /dev", &dev))?;
    // mknod is refused in a user namespace, so device nodes are bound from the host.
    for node in ["null", "zero", "full", "random", "urandom", "tty"] {
        let target = dev.join(node);
        touch(&target).map_err(step("filesystem: /dev node", &target))?;
        let src = Path::new("/dev").join(node);
        sys::mount(&src.to_string_lossy(), &target, "", MsFlags::MS_BIND, "")
            .map_err(step("filesystem: /dev node", &src))?;
    }
    let pts = dev.join("pts");
    mkdirs(&pts).map_err(step("filesystem: /dev/pts", &pts))?;
    sys::mount(
        "devpts",
        &pts,
        "devpts",
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        "newinstance,ptmxmode=0666,mode=0620",
    )
    .map_err(step("filesystem: /dev/pts", &pts))?;
    let shm = dev.join("shm");
    mkdirs(&shm).map_err(step("filesystem: /dev/shm", &shm))?;
    sys::mount(
        "tmpfs",
        &shm,
        "tmpfs",
        NOSUID_NODEV | MsFlags::MS_NOEXEC,
        "mode=1777,size=64m",
    )
    .map_err(step("filesystem: /dev/shm", &shm))?;
    for (link, to) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        std::os::unix::fs::symlink(to, dev.join(link)).map_err(step("filesystem: /dev link", &dev))?;
    }
    sys::mount(
        "",
        &dev,
        "",
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        "",
    )
    .map_err(step("filesystem: /dev read-only", &dev))
}

/// Writable kernel interfaces under /proc that are made read-only or blanked.
const PROC_READ_ONLY: &[&str] = &["sys", "sysrq-trigger", "irq", "bus", "fs"];
const PROC_BLANKED: &[&str] = &[
    "kcore",
    "kmsg",
    "keys",
    "timer_list",
    "sched_debug",
    "kallsyms",
    "kpagecount",
    "kpageflags",
];

fn build_proc(root: &Path) -> Result<(), StepError> {
    let proc = under(root, Path::new("/proc"));
    mkdirs(&proc).map_err(step("filesystem: /proc", &proc))?;
    sys::mount("proc", &proc, "proc", NOSUID_NODEV | MsFlags::MS_NOEXEC, "")
        .map_err(step("filesystem: mount /proc", &proc))?;
    let flags = NOSUID_NODEV | MsFlags::MS_NOEXEC;
    for name in PROC_READ_ONLY {
        let p = proc.join(name);
        if p.exists() {
            bind_ro(&p, &p, flags).map_err(step("filesystem: read-only /proc entry", &p))?;
        }
    }
    let empty = under(root, Path::new(EMPTY_FILE));
    for name in PROC_BLANKED {
        let p = proc.join(name);
        if p.exists() {
            bind_ro(&empty, &p, flags).map_err(step("filesystem: blank /proc entry", &p))?;
        }
    }
    Ok(())
}

/// A user namespace whose only mapping is `owner -> agent`, for idmapped mounts. It is held
/// by a short-lived helper process that exits as soon as the namespace fd is open.
pub fn idmap_userns(uid_map: &str, gid_map: &str) -> Result<OwnedFd, StepError> {
    let failed = |e: io::Error| StepError::io("identity: idmap user namespace", &e, "");
    let holder = sys::UsernsHolder::start().map_err(failed)?;
    let base = PathBuf::from(format!("/proc/{}", holder.pid()));
    let res = (|| -> io::Result<OwnedFd> {
        fs::write(base.join("uid_map"), uid_map)?;
        fs::write(base.join("setgroups"), "deny")?;
        fs::write(base.join("gid_map"), gid_map)?;
        Ok(fs::File::open(base.join("ns/user"))?.into())
    })();
    // Released and reaped.
    drop(holder);
    res.map_err(failed)
}
