//! The raw system calls no crate wraps, made by the numbers in `kernel` (x86_64 only). Every
//! module may use them: the launch sequence, the probes (mounting bpffs), the trace (its
//! append-only flag). Everything else goes through `nix` (and `caps`, `landlock`, `libseccomp`,
//! `aya`); see docs/architecture.md, "Syscall crates". Each function here does one kernel
//! thing and returns the OS error; callers attach the step name. Every `unsafe` block of the
//! launch sequence that is not about descriptor ownership lives here, with the precondition it
//! relies on.

use crate::kernel;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

pub fn cstr(p: &Path) -> io::Result<CString> {
    use std::os::unix::ffi::OsStrExt;
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn check(ret: libc::c_long) -> io::Result<libc::c_long> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Take ownership of a descriptor a raw syscall just returned.
///
/// # Safety
/// `ret` is the return value of a syscall that creates a descriptor (or fails with -1), and
/// nothing else has taken ownership of that descriptor.
unsafe fn fd_from(ret: libc::c_long) -> io::Result<OwnedFd> {
    let fd = RawFd::try_from(check(ret)?).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
    // SAFETY: by this function's contract, the kernel just created `fd` for us alone.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

pub enum Forked {
    Child,
    Parent { pid: libc::pid_t, pidfd: OwnedFd },
}

/// clone3 without CLONE_VM: fork semantics, plus namespaces, a pidfd and an initial cgroup
/// (nix has neither clone3 nor CLONE_INTO_CGROUP).
/// The caller must be single-threaded (the child gets a copy of this one thread).
pub fn clone3(flags: u64, cgroup: Option<RawFd>) -> io::Result<Forked> {
    let mut pidfd: libc::c_int = -1;
    let mut args = CloneArgs {
        flags: flags | libc::CLONE_PIDFD as u64,
        pidfd: &mut pidfd as *mut libc::c_int as u64,
        exit_signal: libc::SIGCHLD as u64,
        ..Default::default()
    };
    if let Some(fd) = cgroup {
        args.flags |= CLONE_INTO_CGROUP;
        args.cgroup = u64::try_from(fd).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
    }
    // Without CLONE_VM and with a null stack the child resumes here on its own copy of our
    // memory, as after fork.
    // SAFETY: args is a valid clone_args of the size passed; its pidfd points at a live int.
    let ret = unsafe {
        libc::syscall(
            kernel::CLONE3.into(),
            &mut args as *mut CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    match check(ret)? {
        0 => Ok(Forked::Child),
        pid => Ok(Forked::Parent {
            pid: libc::pid_t::try_from(pid).map_err(|_| io::Error::from_raw_os_error(libc::ERANGE))?,
            // SAFETY: clone3 succeeded with CLONE_PIDFD, so the kernel stored a new descriptor
            // in `pidfd` that nothing else owns.
            pidfd: unsafe { OwnedFd::from_raw_fd(pidfd) },
        }),
    }
}

const OPEN_TREE_CLONE: libc::c_uint = 1;
const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NOSUID: u64 = 0x2;
const MOUNT_ATTR_NODEV: u64 = 0x4;
const MOUNT_ATTR_NOEXEC: u64 = 0x8;
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// A detached copy of the mount tree at `path` (with submounts). New mount API: not in nix.
pub fn open_tree_clone(path: &Path) -> io::Result<OwnedFd> {
    let c = cstr(path)?;
    let flags = OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint | libc::AT_RECURSIVE as libc::c_uint;
    // open_tree returns a new descriptor (or -1), which fd_from takes.
    // SAFETY: c is a NUL-terminated path that outlives the call.
    unsafe {
        fd_from(libc::syscall(
            kernel::OPEN_TREE.into(),
            libc::AT_FDCWD,
            c.as_ptr(),
            flags,
        ))
    }
}

/// Set attributes on every mount of a detached tree. New mount API: not in nix.
pub fn set_tree_attrs(
    tree: &OwnedFd,
    read_only: bool,
    noexec: bool,
    idmap: Option<&OwnedFd>,
) -> io::Result<()> {
    let mut attr = MountAttr {
        attr_set: MOUNT_ATTR_NOSUID
            | MOUNT_ATTR_NODEV
            | if read_only { MOUNT_ATTR_RDONLY } else { 0 }
            | if noexec { MOUNT_ATTR_NOEXEC } else { 0 },
        attr_clr: 0,
        propagation: libc::MS_PRIVATE,
        userns_fd: 0,
    };
    if let Some(ns) = idmap {
        attr.attr_set |= MOUNT_ATTR_IDMAP;
        attr.userns_fd =
            u64::try_from(ns.as_raw_fd()).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
    }
    let empty = c"";
    // The empty path with AT_EMPTY_PATH names `tree` itself.
    // SAFETY: tree is open, the path NUL-terminated, attr a live mount_attr of the size passed.
    let ret = unsafe {
        libc::syscall(
            kernel::MOUNT_SETATTR.into(),
            tree.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_EMPTY_PATH | libc::AT_RECURSIVE,
            &mut attr as *mut MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    check(ret).map(drop)
}

/// Attach a detached tree at `target`. New mount API: not in nix.
pub fn move_mount_to(tree: &OwnedFd, target: &Path) -> io::Result<()> {
    let t = cstr(target)?;
    let empty = c"";
    // SAFETY: tree is an open descriptor; both paths are NUL-terminated and outlive the call.
    let ret = unsafe {
        libc::syscall(
            kernel::MOVE_MOUNT.into(),
            tree.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_FDCWD,
            t.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    check(ret).map(drop)
}

const FSCONFIG_SET_FLAG: libc::c_uint = 0;
const FSCONFIG_SET_STRING: libc::c_uint = 1;
const FSCONFIG_SET_FD: libc::c_uint = 5;
const FSCONFIG_CMD_CREATE: libc::c_uint = 6;

/// An overlay mount, detached: `lower` (read-only) under `upper`, `work` beside it (both
/// descriptors of directories in one mount), built with the new mount API so that each layer
/// can be a detached, idmapped tree (Linux 6.13: layers by descriptor). `options` are
/// `key=value` strings, or flags (`key` with an empty value). Returns the mount's descriptor, for `move_mount_to`.
pub fn overlay_mount(
    lower: &OwnedFd,
    upper: &OwnedFd,
    work: &OwnedFd,
    options: &[(&str, &str)],
) -> io::Result<OwnedFd> {
    // SAFETY: the name is NUL-terminated; fsopen returns a new descriptor or -1.
    let fs = unsafe { fd_from(libc::syscall(kernel::FSOPEN.into(), c"overlay".as_ptr(), 1))? };
    let config =
        |cmd: libc::c_uint, key: Option<&std::ffi::CStr>, value: *const libc::c_char, aux: libc::c_int| {
            // SAFETY: fs is open; key and value are NUL-terminated (or null) and outlive the call.
            let ret = unsafe {
                libc::syscall(
                    kernel::FSCONFIG.into(),
                    fs.as_raw_fd(),
                    cmd,
                    key.map_or(std::ptr::null(), std::ffi::CStr::as_ptr),
                    value,
                    aux,
                )
            };
            check(ret).map(drop)
        };
    for (key, fd) in [(c"lowerdir+", lower), (c"upperdir", upper), (c"workdir", work)] {
        config(FSCONFIG_SET_FD, Some(key), std::ptr::null(), fd.as_raw_fd())?;
    }
    for (k, v) in options {
        let k = CString::new(*k).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        if v.is_empty() {
            config(FSCONFIG_SET_FLAG, Some(&k), std::ptr::null(), 0)?;
            continue;
        }
        let v = CString::new(*v).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        config(FSCONFIG_SET_STRING, Some(&k), v.as_ptr(), 0)?;
    }
    config(FSCONFIG_CMD_CREATE, None, std::ptr::null(), 0)?;
    // SAFETY: fs is a configured filesystem context; fsmount returns a new descriptor or -1.
    unsafe { fd_from(libc::syscall(kernel::FSMOUNT.into(), fs.as_raw_fd(), 1, 0)) }
}

/// A directory beneath a (possibly detached) mount, as an O_PATH descriptor.
pub fn open_dir_at(base: &OwnedFd, name: &Path) -> io::Result<OwnedFd> {
    let c = cstr(name)?;
    // SAFETY: base is open, c NUL-terminated; openat returns a new descriptor or -1.
    unsafe {
        fd_from(libc::c_long::from(libc::openat(
            base.as_raw_fd(),
            c.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC | libc::O_NOFOLLOW,
        )))
    }
}

/// An extended attribute of `path` itself (not a symlink's target) into `buf`: its length.
pub fn lgetxattr(path: &Path, name: &std::ffi::CStr, buf: &mut [u8]) -> io::Result<usize> {
    let c = cstr(path)?;
    // SAFETY: c and name are NUL-terminated; buf is writable for its length.
    let n = unsafe { libc::lgetxattr(c.as_ptr(), name.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

/// Set an extended attribute of `path` itself.
pub fn lsetxattr(path: &Path, name: &std::ffi::CStr, value: &[u8]) -> io::Result<()> {
    let c = cstr(path)?;
    // SAFETY: c and name are NUL-terminated; value is a live buffer of the length passed.
    let r = unsafe { libc::lsetxattr(c.as_ptr(), name.as_ptr(), value.as_ptr().cast(), value.len(), 0) };
    check(libc::c_long::from(r)).map(drop)
}

/// mount(2) with every string passed (empty rather than NULL), as the launch steps expect.
pub fn mount(
    src: &str,
    target: &Path,
    fstype: &str,
    flags: nix::mount::MsFlags,
    data: &str,
) -> io::Result<()> {
    nix::mount::mount(Some(src), target, Some(fstype), flags, Some(data)).map_err(io::Error::from)
}

/// pivot_root(".", ".") stacks the old root under the new one; then detach the old root.
pub fn pivot_root_here() -> io::Result<()> {
    nix::unistd::pivot_root(".", ".")?;
    nix::mount::umount2(".", nix::mount::MntFlags::MNT_DETACH).map_err(io::Error::from)
}

/// Signal a process through its pidfd (immune to pid reuse). Not in nix.
pub fn pidfd_send_signal(pidfd: &OwnedFd, sig: libc::c_int) -> io::Result<()> {
    // SAFETY: pidfd is an open descriptor; a null siginfo means "as if by kill"; no memory is
    // written.
    check(unsafe {
        libc::syscall(
            kernel::PIDFD_SEND_SIGNAL.into(),
            pidfd.as_raw_fd(),
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    })
    .map(drop)
}

pub fn last_errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// waitpid(2) with the raw wait status: nix's `WaitStatus` has no place for a death by a
/// real-time signal (it fails after the child is already reaped). Returns (pid, status); pid
/// 0 with WNOHANG when no child has changed state.
pub fn waitpid(pid: libc::pid_t, nohang: bool) -> io::Result<(libc::pid_t, i32)> {
    let mut status = 0;
    let flags = if nohang { libc::WNOHANG } else { 0 };
    // SAFETY: status is a live int the kernel writes the wait status into.
    let ret = unsafe { libc::waitpid(pid, &mut status, flags) };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok((ret, status))
    }
}

/// Make the terminal `tty` this session's controlling terminal (TIOCSCTTY; not in nix).
pub fn set_controlling_tty(tty: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: TIOCSCTTY takes an int by value (0: do not steal) and touches no memory.
    if unsafe { libc::ioctl(tty.as_raw_fd(), libc::TIOCSCTTY, 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Drop capability `cap` from the bounding set by number, for capabilities newer than the
/// caps crate's list (which names them by enum).
pub fn capbset_drop(cap: u32) -> io::Result<()> {
    // SAFETY: prctl(PR_CAPBSET_DROP) takes integers only and touches no memory.
    if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, libc::c_ulong::from(cap), 0, 0, 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Set the securebits (PR_SET_SECUREBITS: neither nix nor caps sets them).
pub fn set_securebits(bits: libc::c_ulong) -> io::Result<()> {
    // SAFETY: prctl(PR_SET_SECUREBITS) takes integers only and touches no memory.
    if unsafe { libc::prctl(libc::PR_SET_SECUREBITS, bits, 0, 0, 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Leave the process now, without running destructors or atexit handlers: after clone and
/// fork the child holds copies of the parent's owners, which must not act twice. Not in nix.
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit has no preconditions; it never returns and touches no Rust state.
    unsafe { libc::_exit(code) }
}

/// Lock `len` bytes of this process's address space from `start` in memory (mlock(2)): their
/// pages are read in now and stay resident. nix's `mlock` takes a pointer; the ranges come
/// from /proc/self/maps as numbers.
pub fn mlock(start: usize, len: usize) -> io::Result<()> {
    // SAFETY: mlock only changes how the kernel treats the range's pages; it reads or writes
    // no memory of ours, and a range that is not mapped is refused with ENOMEM.
    if unsafe { libc::mlock(start as *const libc::c_void, len) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The nice value a thread had before `raise_thread_priority` (all such threads start from
/// the main thread's): what `at_base_nice` gives the processes they spawn.
static BASE_NICE: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

/// Lower the calling thread's nice value by `by` (Linux's nice is per thread: setpriority(2) on
/// its tid; nix has none). Returns the new value.
pub fn raise_thread_priority(by: i32) -> io::Result<i32> {
    let tid = nix::unistd::gettid().as_raw().cast_unsigned();
    // getpriority can return -1 as a value: errno tells an error apart.
    nix::errno::Errno::clear();
    // SAFETY: getpriority takes plain integers and touches no memory of ours.
    let base = unsafe { libc::getpriority(libc::PRIO_PROCESS, tid) };
    if base == -1 && nix::errno::Errno::last_raw() != 0 {
        return Err(io::Error::last_os_error());
    }
    BASE_NICE.store(base, std::sync::atomic::Ordering::Relaxed);
    let raised = (base - by).max(-20);
    // SAFETY: as above.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, raised) } == 0 {
        Ok(raised)
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `cmd`'s process starts at the nice its spawner's thread had before `raise_thread_priority`
/// (nice is inherited across fork): a `pre_exec` hook that only calls setpriority, which is
/// async-signal-safe; raising one's own nice needs no privilege, and a refusal never fails the
/// spawn. For a tokio `Command`, pass `as_std_mut()`.
pub fn at_base_nice(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt as _;
    let base = BASE_NICE.load(std::sync::atomic::Ordering::Relaxed);
    // The hook runs between fork and exec.
    // SAFETY: it only calls setpriority: plain integers, no memory of ours, async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            libc::setpriority(libc::PRIO_PROCESS, 0, base);
            Ok(())
        })
    };
}

/// Give every signal (1..=64, real-time ones included) the default disposition, as the agent
/// must start with: ignored signals survive execve. nix's `sigaction` only knows the signals
/// of its `Signal` enum and cannot reach the real-time signals glibc reserves for itself, so
/// this is the raw kernel call. Only for a process about to execve (the forked agent).
pub fn reset_signal_dispositions() {
    #[repr(C)]
    struct KernelSigaction {
        handler: usize,
        flags: u64,
        restorer: usize,
        mask: u64,
    }
    let dfl = KernelSigaction {
        handler: libc::SIG_DFL,
        flags: 0,
        restorer: 0,
        mask: 0,
    };
    for sig in 1..=64 {
        if sig != libc::SIGKILL && sig != libc::SIGSTOP {
            // SIG_DFL installs no handler; a null old-action pointer asks for nothing back.
            // SAFETY: dfl is a live kernel sigaction of the 8-byte mask size passed.
            unsafe {
                libc::syscall(
                    kernel::RT_SIGACTION.into(),
                    sig,
                    &dfl as *const KernelSigaction,
                    0usize,
                    8usize,
                )
            };
        }
    }
}

/// Mark every descriptor from `first` up close-on-exec. Not in nix.
pub fn close_range_cloexec(first: u32) -> io::Result<()> {
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets a flag on descriptors; it closes
    // none and touches no memory.
    check(unsafe {
        libc::syscall(
            kernel::CLOSE_RANGE.into(),
            first,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    })
    .map(drop)
}

/// Install a classic-BPF seccomp filter (as exported by libseccomp) on this thread. The
/// libseccomp crate loads only from its own context; the filter is compiled in the parent
/// and only loaded in the child.
pub fn seccomp_set_mode_filter(bpf: &[u8]) -> io::Result<()> {
    let insn = std::mem::size_of::<libc::sock_filter>();
    if !bpf.len().is_multiple_of(insn) {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let len = u16::try_from(bpf.len() / insn).map_err(|_| io::Error::from_raw_os_error(libc::E2BIG))?;
    let prog = libc::sock_fprog {
        len,
        filter: bpf.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: prog points at `len` whole sock_filter instructions inside `bpf`, which outlives
    // the call; the kernel copies them and never writes through the pointer.
    check(unsafe {
        libc::syscall(
            kernel::SECCOMP.into(),
            libc::SECCOMP_SET_MODE_FILTER,
            0,
            &prog as *const libc::sock_fprog,
        )
    })
    .map(drop)
}

/// The landlock ABI version this kernel offers (negative: none). The landlock crate keeps
/// its own probe private.
pub fn landlock_abi_version() -> i64 {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
    // A null attr of size 0 with the VERSION flag is the documented query.
    // SAFETY: it creates no descriptor and touches no memory.
    unsafe {
        libc::syscall(
            kernel::LANDLOCK_CREATE_RULESET.into(),
            std::ptr::null::<u8>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    }
}

/// Open the peer (slave) of a pty master by descriptor, never by path (TIOCGPTPEER, which
/// neither nix nor libc wraps).
pub fn pty_peer(master: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    // TIOCGPTPEER takes its open flags by value and returns a new descriptor (or -1).
    // SAFETY: the master is open for the call; fd_from takes the descriptor it returns.
    unsafe {
        fd_from(libc::c_long::from(libc::ioctl(
            master.as_raw_fd(),
            libc::TIOCGPTPEER,
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )))
    }
}

/// Copy the window size of terminal `from` to terminal `to`, if `from` has one.
pub fn copy_window_size(from: BorrowedFd<'_>, to: BorrowedFd<'_>) {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // TIOCGWINSZ writes one winsize into `ws`, TIOCSWINSZ reads one from it.
    // SAFETY: both descriptors are open for the call and `ws` is a live winsize.
    unsafe {
        if libc::ioctl(from.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) == 0 {
            libc::ioctl(to.as_raw_fd(), libc::TIOCSWINSZ, &ws);
        }
    }
}

/// Set IFF_UP|IFF_RUNNING on interface `name` through socket `sock` (nix can read interface
/// flags but not set them).
pub fn interface_up(sock: impl AsFd, name: &[u8]) -> io::Result<()> {
    // SAFETY: ifreq is plain data (a name and a union of integers); all zeros is valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    if name.len() >= req.ifr_name.len() {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    for (d, s) in req.ifr_name.iter_mut().zip(name) {
        *d = *s as libc::c_char;
    }
    req.ifr_ifru.ifru_flags = libc::c_short::try_from(libc::IFF_UP | libc::IFF_RUNNING).unwrap_or(1);
    // SAFETY: sock is an open socket and req a live, NUL-terminated ifreq the kernel only reads.
    if unsafe { libc::ioctl(sock.as_fd().as_raw_fd(), libc::SIOCSIFFLAGS, &req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// FS_IOC_GETFLAGS / FS_IOC_SETFLAGS: the inode flags (chattr's) of an open file.
const FS_IOC_GETFLAGS: libc::c_ulong = 0x8008_6601;
const FS_IOC_SETFLAGS: libc::c_ulong = 0x4008_6602;

/// Add inode flags (`chattr +…`) to an open file.
pub fn add_inode_flags(f: impl AsFd, add: libc::c_long) -> io::Result<()> {
    let fd = f.as_fd().as_raw_fd();
    let mut flags: libc::c_long = 0;
    // SAFETY: FS_IOC_GETFLAGS writes one long into `flags`, which lives across the call.
    if unsafe { libc::ioctl(fd, FS_IOC_GETFLAGS, &mut flags) } != 0 {
        return Err(io::Error::last_os_error());
    }
    flags |= add;
    // SAFETY: FS_IOC_SETFLAGS reads one long from `flags`, which lives across the call.
    if unsafe { libc::ioctl(fd, FS_IOC_SETFLAGS, &flags) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Write `value` to the open sysctl `file` as a process of the pid namespace `pidns`.
/// Per-pid-namespace sysctls (`vm.memfd_noexec`) act on the *writer's* namespace, and only a
/// writer that is root in the initial user namespace passes proc's permission check: so a
/// helper thread (started in `scope`, its result read at `join`; the caller goes on meanwhile)
/// joins the namespace for its children (setns) and starts one writer sharing cordon's memory
/// (`vfork_child`: a fork of the whole supervisor copied its page tables, ~1 ms of a launch),
/// which calls only write(2) and reports the errno as its exit status.
pub fn write_sysctl_in_pid_ns<'scope>(
    scope: &'scope std::thread::Scope<'scope, '_>,
    pidns: OwnedFd,
    file: std::fs::File,
    value: &'static [u8],
) -> std::thread::ScopedJoinHandle<'scope, io::Result<()>> {
    scope.spawn(move || -> io::Result<()> {
        // Only this helper thread's children join the namespace.
        nix::sched::setns(&pidns, nix::sched::CloneFlags::CLONE_NEWPID)?;
        let fd = file.as_raw_fd();
        vfork_child("the sysctl writer", &mut || {
            // SAFETY: `fd` is open and `value` is a live slice of `value.len()` bytes.
            let n = unsafe { libc::write(fd, value.as_ptr().cast(), value.len()) };
            if usize::try_from(n).is_ok_and(|n| n == value.len()) {
                0
            } else {
                nix::errno::Errno::last() as i32
            }
        })
    })
}

/// Bring the current thread's network namespace's `lo` up (it is down in a new namespace).
pub fn lo_up() -> io::Result<()> {
    use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};
    let s = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    interface_up(&s, b"lo")
}

/// Detach the mount at `path` (lazily: open files keep what they opened).
pub fn umount_detach(path: &Path) -> io::Result<()> {
    use nix::mount::MntFlags;
    nix::mount::umount2(path, MntFlags::MNT_DETACH | MntFlags::UMOUNT_NOFOLLOW).map_err(io::Error::from)
}

/// Run `op` in the mount namespace `ns` (a `/proc/PID/ns/mnt` opened while the process lived:
/// a pid reused later cannot lead elsewhere), in a `vfork_child` (it shares cordon's memory but
/// not its filesystem context: the kernel refuses `setns(CLONE_NEWNS)` to a task sharing that
/// context with other threads). `op` must only make system calls. The child's error is its
/// exit status (an errno).
pub fn in_mount_ns(ns: &std::fs::File, op: &mut (dyn FnMut() -> io::Result<()> + Send)) -> io::Result<()> {
    use std::os::fd::AsRawFd as _;
    let fd = ns.as_raw_fd();
    vfork_child("the mount namespace helper", &mut || {
        // SAFETY: setns on a descriptor this process holds open; no memory is passed.
        if unsafe { libc::setns(fd, libc::CLONE_NEWNS) } != 0 {
            return nix::errno::Errno::last() as i32;
        }
        match op() {
            Ok(()) => 0,
            Err(e) => e.raw_os_error().unwrap_or(libc::EIO),
        }
    })
}

const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;

/// `union bpf_attr` as the BPF_MAP_*_ELEM commands read it.
#[repr(C)]
struct MapElemAttr {
    map_fd: u32,
    key: u64,
    value: u64,
    flags: u64,
}

fn map_elem(cmd: libc::c_long, map: BorrowedFd<'_>, key: &u32, value: *mut u32) -> io::Result<()> {
    let attr = MapElemAttr {
        map_fd: u32::try_from(map.as_raw_fd()).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?,
        key: std::ptr::from_ref(key) as u64,
        value: value as u64,
        flags: 0,
    };
    // The value is written only by a lookup.
    // SAFETY: `attr` is a bpf_attr prefix of the size passed; key and value outlive the call.
    check(unsafe {
        libc::syscall(
            kernel::BPF.into(),
            cmd,
            std::ptr::from_ref(&attr),
            std::mem::size_of::<MapElemAttr>(),
        )
    })
    .map(drop)
}

/// The id of the inner map at `index` of the map of maps `map`, or None where the entry is
/// empty. (aya's `ArrayOfMaps::get` opens the inner map to say it: for a ring buffer that maps
/// its every page, ~0.6 ms for 4 MiB, and unmaps them again.)
pub fn map_of_maps_id(map: BorrowedFd<'_>, index: u32) -> io::Result<Option<u32>> {
    let mut id = 0u32;
    match map_elem(BPF_MAP_LOOKUP_ELEM, map, &index, &mut id) {
        Ok(()) => Ok(Some(id)),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Put the map `inner` at `index` of the map of maps `map`.
pub fn map_of_maps_set(map: BorrowedFd<'_>, index: u32, inner: BorrowedFd<'_>) -> io::Result<()> {
    let mut fd = u32::try_from(inner.as_raw_fd()).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
    map_elem(BPF_MAP_UPDATE_ELEM, map, &index, &mut fd)
}

/// A process in a new user namespace that only waits until it is released, for setting up
/// that namespace through `/proc/PID/…` (idmapped mounts). It shares this process's memory
/// (`CLONE_VM`): a fork copied the supervisor's page tables while its other threads ran
/// (TLB shootdowns on every CPU) and tore them down again at the helper's exit, ~0.3 ms of
/// the launch path. Dropping it releases the process and reaps it.
pub struct UsernsHolder {
    pid: libc::pid_t,
    release: Option<OwnedFd>,
    _stack: Vec<u8>,
}

impl UsernsHolder {
    pub fn start() -> io::Result<UsernsHolder> {
        // Freed only once the child has been reaped (Drop).
        let mut stack = vec![0u8; 64 * 1024];
        let (pid, release) = start_waiter(libc::CLONE_NEWUSER | libc::SIGCHLD, &mut stack)?;
        Ok(UsernsHolder {
            pid,
            release: Some(release),
            _stack: stack,
        })
    }

    pub fn pid(&self) -> libc::pid_t {
        self.pid
    }
}

impl Drop for UsernsHolder {
    fn drop(&mut self) {
        // Closing the write end ends the child's read; the stack is freed only once it is gone.
        drop(self.release.take());
        let _ = waitpid(self.pid, false);
    }
}

/// Leave this process's memory to a child that outlives it by a moment, so that tearing the
/// address space down (`exit_mmap`: every page table of the binary, the heap and the stacks,
/// ~0.5 ms of CPU for a `cordon run`) happens after this process is gone instead of before its
/// caller's `wait` returns. Call right before exiting. The child (`start_waiter`) keeps no
/// descriptor of this process's (the caller's pipes see their end when this process exits)
/// and exits when this process's end of its pipe closes, at its exit. No exit signal: nobody
/// here waits for it; it is reparented and reaped like any orphan.
pub fn leave_memory_to_heir() -> io::Result<()> {
    // The heir is what keeps the memory, its stack included: never freed.
    let stack: &'static mut [u8] = Vec::leak(vec![0u8; 16 * 1024]);
    let (_, release) = start_waiter(0, stack)?;
    // Held open until this process exits.
    std::mem::forget(release);
    Ok(())
}

/// Start a child that shares this process's memory (`CLONE_VM | flags`) and nothing else: on
/// `stack` it closes every descriptor it was given but the read end of a new pipe, waits for
/// the write end (returned) to close, and exits. It makes raw system calls only: no
/// allocation, no lock, no errno (it shares this thread's thread-local storage); glibc's clone
/// ends it with the exit system call. `stack` must outlive the child.
fn start_waiter(flags: libc::c_int, stack: &mut [u8]) -> io::Result<(libc::pid_t, OwnedFd)> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let read_end = usize::try_from(r.as_raw_fd()).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
    let top = stack.as_mut_ptr_range().end;
    let top = top.wrapping_sub(top as usize % 16);
    // `wait_for_release` takes its argument as a descriptor number.
    // SAFETY: `top` is the 16-byte aligned end of a buffer the caller keeps past the child.
    let pid = unsafe {
        libc::clone(
            wait_for_release,
            top.cast(),
            libc::CLONE_VM | flags,
            read_end as *mut libc::c_void,
        )
    };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((pid, w))
}

/// The body of `start_waiter`'s child.
extern "C" fn wait_for_release(arg: *mut libc::c_void) -> libc::c_int {
    let read_end = arg as usize;
    let mut byte = 0u8;
    // Its own descriptor table is a copy (no CLONE_FILES): closing it touches nothing of the
    // parent's.
    // SAFETY: system calls on this child's own descriptors and one byte of its own stack.
    unsafe {
        if read_end > 0 {
            raw_syscall3(libc::SYS_close_range, 0, read_end - 1, 0);
        }
        raw_syscall3(libc::SYS_close_range, read_end + 1, u32::MAX as usize, 0);
        while raw_syscall3(libc::SYS_read, read_end, std::ptr::addr_of_mut!(byte) as usize, 1)
            == -i64::from(libc::EINTR)
        {}
    }
    0
}

/// A system call without libc's wrapper (which writes errno): for a `CLONE_VM` child.
///
/// # Safety
/// The arguments must be what the call `nr` expects.
unsafe fn raw_syscall3(nr: libc::c_long, a: usize, b: usize, c: usize) -> i64 {
    let ret: i64;
    // The x86_64 convention: number in rax, arguments in rdi, rsi, rdx.
    // SAFETY: the caller passes what `nr` expects; the kernel clobbers only rcx and r11.
    unsafe {
        std::arch::asm!(
            "syscall",
            inlateout("rax") nr => ret,
            in("rdi") a,
            in("rsi") b,
            in("rdx") c,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack)
        );
    }
    ret
}

/// A program with its argv and environment and the null-terminated pointer arrays execve(2)
/// takes, made ahead: `execve` then allocates nothing (it runs in a vfork child).
pub struct Exec {
    program: CString,
    /// Owned for the pointer arrays, which point into them.
    _argv: Vec<CString>,
    _envp: Vec<CString>,
    argv_ptrs: Vec<*const libc::c_char>,
    envp_ptrs: Vec<*const libc::c_char>,
}

// The pointers point into the heap buffers of the CStrings this value owns and never mutates.
// SAFETY: moving or sharing the value leaves those buffers, and so the pointers, valid.
unsafe impl Send for Exec {}
// SAFETY: as above: nothing is mutated through a shared reference.
unsafe impl Sync for Exec {}

impl Exec {
    pub fn new(program: CString, argv: Vec<CString>, envp: Vec<CString>) -> Exec {
        let ptrs = |v: &[CString]| {
            v.iter()
                .map(|c| c.as_ptr())
                .chain(std::iter::once(std::ptr::null()))
                .collect()
        };
        Exec {
            argv_ptrs: ptrs(&argv),
            envp_ptrs: ptrs(&envp),
            program,
            _argv: argv,
            _envp: envp,
        }
    }

    pub fn program(&self) -> &CString {
        &self.program
    }

    /// execve(2); returns only when it failed, with its errno.
    pub fn execve(&self) -> nix::errno::Errno {
        // Both arrays are null-terminated and point at C strings this value owns.
        // SAFETY: every pointer passed is a live C string or array for the whole call.
        unsafe {
            libc::execve(
                self.program.as_ptr(),
                self.argv_ptrs.as_ptr(),
                self.envp_ptrs.as_ptr(),
            )
        };
        nix::errno::Errno::last()
    }
}

/// Start a child that shares this process's memory (`CLONE_VM | CLONE_VFORK`, like
/// posix_spawn) and runs `op`, which ends in execve or returns the child's exit status
/// (0..=255). This thread is suspended until the child has exec'd or exited: no page table is
/// copied for a child that only execs, and none torn down at its execve. `op` must only make
/// system calls: it runs on its own stack but in this process's memory, while other threads
/// of the process (if any) keep running.
pub fn vfork_start(op: &mut (dyn FnMut() -> i32 + Send)) -> io::Result<nix::unistd::Pid> {
    let mut stack = vec![0u8; 256 * 1024];
    let cb = Box::new(move || -> isize { isize::try_from(op().clamp(0, 255)).unwrap_or(1) });
    let flags = nix::sched::CloneFlags::CLONE_VM | nix::sched::CloneFlags::CLONE_VFORK;
    // The child runs `cb` on its own stack and ends with execve or the exit system call; `cb`
    // only makes system calls. CLONE_VFORK is what makes sharing memory sound: nix keeps `cb`
    // in its own frame and `stack` is freed when this returns, so the child must have left
    // this memory by then (a CLONE_VM child without it once outlived that frame, faulted, and
    // left std's thread-info lock held: the next thread exit in cordon hung).
    // SAFETY: a private stack and a callback that outlive the child's use of them (vfork).
    Ok(unsafe { nix::sched::clone(cb, &mut stack, flags, Some(libc::SIGCHLD)) }?)
}

/// Run `op` in a child that shares cordon's memory but not its filesystem context
/// (`CLONE_VM | CLONE_VFORK`, no `CLONE_FS`): it starts in microseconds, where a fork copies the
/// supervisor's page tables and a new process of cordon's binary takes milliseconds. The
/// calling thread waits while it runs (vfork), so `op` must only make system calls (no
/// allocation, no locks: other threads keep running). `op` returns 0 or an errno, which
/// becomes the child's exit status and the error.
fn vfork_child(what: &str, op: &mut (dyn FnMut() -> i32 + Send)) -> io::Result<()> {
    let child = vfork_start(op)?;
    let status = loop {
        match nix::sys::wait::waitpid(child, None) {
            Err(nix::errno::Errno::EINTR) => continue,
            other => break other?,
        }
    };
    match status {
        nix::sys::wait::WaitStatus::Exited(_, 0) => Ok(()),
        nix::sys::wait::WaitStatus::Exited(_, code) => Err(io::Error::from_raw_os_error(code)),
        other => Err(io::Error::other(format!("{what} ended: {other:?}"))),
    }
}
