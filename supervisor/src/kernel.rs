//! The x86_64 system call table and the errno names, in one place for the whole supervisor:
//! the syscall numbers code names (the detector's rules, the raw calls in `sys`), name to
//! number for seccomp rules and profile checks (`resolve`), number to name for events
//! (`name`), and errnos by name both ways. Pure data, no crate imports: the bottom layer.
//!
//! The numbers are written out, as in the kernel's `syscall_64.tbl`, so that a reader can
//! compare them with the probes' table; the tests check each against libc's. The eBPF probes
//! keep their own numbers (`cordon-probe-common` cannot link this crate); the tests check that
//! the two agree.

pub mod i386;

#[cfg(not(target_arch = "x86_64"))]
compile_error!(
    "cordon supports x86_64 only for now: the syscall table, the seccomp ABI checks and pt_regs offsets are x86_64's"
);

pub const OPEN: u32 = 2;
pub const RT_SIGACTION: u32 = 13;
pub const EXECVE: u32 = 59;
pub const TRUNCATE: u32 = 76;
pub const CHDIR: u32 = 80;
pub const FCHDIR: u32 = 81;
pub const RENAME: u32 = 82;
pub const MKDIR: u32 = 83;
pub const RMDIR: u32 = 84;
pub const CREAT: u32 = 85;
pub const LINK: u32 = 86;
pub const UNLINK: u32 = 87;
pub const SYMLINK: u32 = 88;
pub const CHMOD: u32 = 90;
pub const CHOWN: u32 = 92;
pub const LCHOWN: u32 = 94;
pub const MKNOD: u32 = 133;
pub const OPENAT: u32 = 257;
pub const MKDIRAT: u32 = 258;
pub const MKNODAT: u32 = 259;
pub const FCHOWNAT: u32 = 260;
pub const UNLINKAT: u32 = 263;
pub const RENAMEAT: u32 = 264;
pub const LINKAT: u32 = 265;
pub const SYMLINKAT: u32 = 266;
pub const FCHMODAT: u32 = 268;
pub const RENAMEAT2: u32 = 316;
pub const SECCOMP: u32 = 317;
pub const EXECVEAT: u32 = 322;
pub const PIDFD_SEND_SIGNAL: u32 = 424;
pub const OPEN_TREE: u32 = 428;
pub const MOVE_MOUNT: u32 = 429;
pub const FSOPEN: u32 = 430;
pub const FSCONFIG: u32 = 431;
pub const FSMOUNT: u32 = 432;
pub const CLONE3: u32 = 435;
pub const BPF: u32 = 321;
pub const CLOSE_RANGE: u32 = 436;
pub const OPENAT2: u32 = 437;
pub const MOUNT_SETATTR: u32 = 442;
pub const LANDLOCK_CREATE_RULESET: u32 = 444;
pub const FCHMODAT2: u32 = 452;
/// Linux 6.15; libc has no constant for it yet.
pub const OPEN_TREE_ATTR: u32 = 467;

/// Syscalls that change what is at their (first) path.
pub const CHANGE_PATH: &[u32] = &[
    CREAT, UNLINK, UNLINKAT, RMDIR, TRUNCATE, MKDIR, MKDIRAT, CHMOD, FCHMODAT, FCHMODAT2, CHOWN, LCHOWN,
    FCHOWNAT, MKNOD, MKNODAT,
];
/// rename, renameat, renameat2: both paths change.
pub const RENAMES: &[u32] = &[RENAME, RENAMEAT, RENAMEAT2];
/// link, linkat, symlink, symlinkat: the second path is created.
pub const CREATE_SECOND: &[u32] = &[LINK, LINKAT, SYMLINK, SYMLINKAT];
/// link, linkat: the first path is read (a new name for a secret).
pub const LINKS: &[u32] = &[LINK, LINKAT];

/// Syscalls libseccomp 2.5 does not know by name yet.
const NEWER_SYSCALLS: &[(&str, u32)] = &[("fchmodat2", FCHMODAT2), ("open_tree_attr", OPEN_TREE_ATTR)];

/// The syscall for a name, including the ones newer than the installed libseccomp.
pub fn resolve(name: &str) -> Option<libseccomp::ScmpSyscall> {
    libseccomp::ScmpSyscall::from_name(name).ok().or_else(|| {
        NEWER_SYSCALLS
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, nr)| libseccomp::ScmpSyscall::from(nr.cast_signed()))
    })
}

/// The name of a syscall number, as the installed libseccomp knows it. Events have always
/// named only those (the newer ones are `syscall_N` in events and traces).
pub fn name(nr: u32) -> Option<String> {
    i32::try_from(nr)
        .ok()
        .and_then(|nr| libseccomp::ScmpSyscall::from(nr).get_name().ok())
}

/// The errnos a profile may name for a denied syscall (`syscalls.deny`).
pub fn errno_by_name(name: &str) -> Option<i32> {
    Some(match name {
        "EPERM" => libc::EPERM,
        "EACCES" => libc::EACCES,
        "ENOSYS" => libc::ENOSYS,
        "EINVAL" => libc::EINVAL,
        "ENOENT" => libc::ENOENT,
        "EROFS" => libc::EROFS,
        "ENOTSUP" | "EOPNOTSUPP" => libc::EOPNOTSUPP,
        _ => return None,
    })
}

/// An errno as events show it: its name, or `E<number>` for one not listed here.
pub fn errno_name(e: i64) -> String {
    let name = match e {
        1 => "EPERM",
        2 => "ENOENT",
        3 => "ESRCH",
        4 => "EINTR",
        5 => "EIO",
        9 => "EBADF",
        11 => "EAGAIN",
        12 => "ENOMEM",
        13 => "EACCES",
        14 => "EFAULT",
        16 => "EBUSY",
        17 => "EEXIST",
        18 => "EXDEV",
        20 => "ENOTDIR",
        21 => "EISDIR",
        22 => "EINVAL",
        24 => "EMFILE",
        27 => "EFBIG",
        28 => "ENOSPC",
        30 => "EROFS",
        32 => "EPIPE",
        36 => "ENAMETOOLONG",
        38 => "ENOSYS",
        39 => "ENOTEMPTY",
        40 => "ELOOP",
        95 => "EOPNOTSUPP",
        97 => "EAFNOSUPPORT",
        98 => "EADDRINUSE",
        99 => "EADDRNOTAVAIL",
        101 => "ENETUNREACH",
        110 => "ETIMEDOUT",
        111 => "ECONNREFUSED",
        115 => "EINPROGRESS",
        _ => return format!("E{e}"),
    };
    name.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_the_x86_64_table() {
        let table: &[(u32, libc::c_long)] = &[
            (OPEN, libc::SYS_open),
            (RT_SIGACTION, libc::SYS_rt_sigaction),
            (EXECVE, libc::SYS_execve),
            (TRUNCATE, libc::SYS_truncate),
            (CHDIR, libc::SYS_chdir),
            (FCHDIR, libc::SYS_fchdir),
            (RENAME, libc::SYS_rename),
            (MKDIR, libc::SYS_mkdir),
            (RMDIR, libc::SYS_rmdir),
            (CREAT, libc::SYS_creat),
            (LINK, libc::SYS_link),
            (UNLINK, libc::SYS_unlink),
            (SYMLINK, libc::SYS_symlink),
            (CHMOD, libc::SYS_chmod),
            (CHOWN, libc::SYS_chown),
            (LCHOWN, libc::SYS_lchown),
            (MKNOD, libc::SYS_mknod),
            (OPENAT, libc::SYS_openat),
            (MKDIRAT, libc::SYS_mkdirat),
            (MKNODAT, libc::SYS_mknodat),
            (FCHOWNAT, libc::SYS_fchownat),
            (UNLINKAT, libc::SYS_unlinkat),
            (RENAMEAT, libc::SYS_renameat),
            (LINKAT, libc::SYS_linkat),
            (SYMLINKAT, libc::SYS_symlinkat),
            (FCHMODAT, libc::SYS_fchmodat),
            (RENAMEAT2, libc::SYS_renameat2),
            (SECCOMP, libc::SYS_seccomp),
            (EXECVEAT, libc::SYS_execveat),
            (PIDFD_SEND_SIGNAL, libc::SYS_pidfd_send_signal),
            (OPEN_TREE, libc::SYS_open_tree),
            (MOVE_MOUNT, libc::SYS_move_mount),
            (FSOPEN, libc::SYS_fsopen),
            (FSCONFIG, libc::SYS_fsconfig),
            (FSMOUNT, libc::SYS_fsmount),
            (CLONE3, libc::SYS_clone3),
            (CLOSE_RANGE, libc::SYS_close_range),
            (OPENAT2, libc::SYS_openat2),
            (MOUNT_SETATTR, libc::SYS_mount_setattr),
            (LANDLOCK_CREATE_RULESET, libc::SYS_landlock_create_ruleset),
            (FCHMODAT2, libc::SYS_fchmodat2),
        ];
        for &(ours, libc) in table {
            assert_eq!(libc::c_long::from(ours), libc, "syscall {ours}");
        }
    }

    #[test]
    fn names_resolve_both_ways() {
        assert_eq!(resolve("openat").map(i32::from), Some(OPENAT.cast_signed()));
        assert_eq!(
            resolve("open_tree_attr").map(i32::from),
            Some(OPEN_TREE_ATTR.cast_signed())
        );
        assert_eq!(resolve("no_such_syscall"), None);
        assert_eq!(name(EXECVE).as_deref(), Some("execve"));
    }

    #[test]
    fn errno_names_round_trip() {
        for name in [
            "EPERM",
            "EACCES",
            "ENOSYS",
            "EINVAL",
            "ENOENT",
            "EROFS",
            "EOPNOTSUPP",
        ] {
            let e = errno_by_name(name).unwrap();
            assert_eq!(errno_name(e.into()), name);
        }
        assert_eq!(errno_by_name("ENOTSUP"), Some(libc::EOPNOTSUPP));
        assert_eq!(errno_by_name("EWHATEVER"), None);
        assert_eq!(errno_name(4095), "E4095");
    }

    /// The probes name these numbers in their own table (`cordon_probe_common::nr`).
    #[test]
    fn the_probes_number_syscalls_alike() {
        use cordon_probe_common::nr;
        assert_eq!(nr::EXECVE, EXECVE);
        assert_eq!(nr::EXECVEAT, EXECVEAT);
        assert_eq!(libc::c_long::from(nr::EXIT_GROUP), libc::SYS_exit_group);
        assert_eq!(libc::c_long::from(nr::GETPPID), libc::SYS_getppid);
    }

    /// The detector reads the paths of these syscalls: the probes must record them
    /// (`cordon_probe_common::syscall_spec`), or the rules silently see nothing.
    #[test]
    fn the_probes_record_the_paths_the_detector_reads() {
        use cordon_probe_common::{spec, syscall_spec};
        let has = |nr: u32, shift: u32| spec::arg(syscall_spec(nr), shift) != 0;
        let first = [OPEN, OPENAT, OPENAT2, EXECVE, EXECVEAT, CHDIR];
        for &nr in first
            .iter()
            .chain(CHANGE_PATH)
            .chain(RENAMES)
            .chain(CREATE_SECOND)
        {
            assert!(has(nr, spec::PATH_SHIFT), "syscall {nr}: no path recorded");
        }
        for &nr in RENAMES.iter().chain(CREATE_SECOND) {
            assert!(
                has(nr, spec::PATH2_SHIFT),
                "syscall {nr}: no second path recorded"
            );
        }
        assert_ne!(syscall_spec(FCHDIR) & spec::RECORD, 0, "fchdir is not recorded");
    }
}
