//! The child side: from clone to the agent's execve. It runs as the sandbox's init (pid 1 in
//! its pid namespace): it builds the sandbox around itself, then forks the agent and waits.
//! Every failure is reported over the channel; nothing here may panic.

use super::channel::{Channel, Msg};
use super::confine;
use super::mounts::{self, Tree};
use super::pty;
use super::StepError;
use crate::policy::{Policy, INSIDE_ID};
use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};

pub struct ChildPlan<'a> {
    pub policy: &'a Policy,
    pub trees: &'a [Tree],
    pub seccomp_bpf: &'a [u8],
    pub program: CString,
    pub argv: Vec<CString>,
    pub envp: Vec<CString>,
    /// Give the agent a pty of its own (the supervisor relays it to the user's terminal).
    pub interactive: bool,
    /// Hybrid hosts: `tasks` files of the v1 leaves (memory, pids, cpu), opened by the parent.
    pub v1_join: &'a [(std::path::PathBuf, OwnedFd)],
    /// Host handles (bind trees, the cgroup2 directory) init drops once the root is built.
    pub close_after_root: Vec<std::os::fd::RawFd>,
}

/// Signals init forwards to the agent. They stay blocked in init and are taken with
/// sigwaitinfo: blocked signals reach pid 1 even though it installs no handlers.
pub const FORWARDED: &[libc::c_int] = &[
    libc::SIGINT,
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGWINCH,
];

pub fn signal_set(extra: &[libc::c_int]) -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset initialise and fill a local sigset.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in FORWARDED.iter().chain(extra) {
            libc::sigaddset(&mut set, *s);
        }
        set
    }
}

fn errno() -> i32 {
    super::sys::last_errno()
}

/// Entered right after clone3 in the child. Never returns.
pub fn main(ch: &Channel, plan: &ChildPlan) -> ! {
    let pty_slave = match setup(ch, plan) {
        Ok(slave) => slave,
        Err(e) => {
            let _ = ch.send(&Msg::SetupFailed {
                step: e.step,
                errno: e.errno,
                detail: e.detail,
            });
            // SAFETY: leaving the child without running the parent's destructors.
            unsafe { libc::_exit(125) }
        }
    };
    let agent = spawn_agent(ch, plan, pty_slave.as_ref());
    let status = reap_until(agent);
    let _ = ch.send(&Msg::AgentExited { status });
    // SAFETY: as above.
    unsafe { libc::_exit(0) }
}

/// The launch sequence inside the sandbox, in the order that works (DESIGN.md).
fn setup(ch: &Channel, plan: &ChildPlan) -> Result<Option<OwnedFd>, StepError> {
    let policy = plan.policy;
    // 1. Join the v1 cgroups (hybrid hosts). ORDER: first, so that everything the sandbox
    // does from here on is charged to and limited by them.
    for (tasks, fd) in plan.v1_join {
        // SAFETY: writing two bytes to a descriptor we hold.
        if unsafe { libc::write(fd.as_raw_fd(), b"0".as_ptr().cast(), 1) } != 1 {
            return Err(StepError::errno(
                "cgroups: join v1 controller",
                errno(),
                &tasks.display().to_string(),
            ));
        }
        // SAFETY: closing our copy; nothing in the sandbox may keep a host cgroupfs handle.
        unsafe { libc::close(fd.as_raw_fd()) };
    }
    // 2. Wait until the parent has written our uid/gid maps.
    match ch.recv() {
        Ok(Some(Msg::Release)) => {}
        _ => return Err(StepError::msg("handshake", "supervisor went away before release")),
    }
    // 3. Become the agent's identity. ORDER: before any file is created (unmapped ids give
    // EOVERFLOW). Host root's supplementary groups are dropped; capabilities in our own user
    // namespace survive because inside-root is unmapped.
    // SAFETY: plain id syscalls.
    unsafe {
        if libc::setgroups(0, std::ptr::null()) < 0 {
            return Err(StepError::errno("identity: setgroups", errno(), ""));
        }
        if libc::setresgid(INSIDE_ID, INSIDE_ID, INSIDE_ID) < 0 {
            return Err(StepError::errno("identity: setresgid", errno(), ""));
        }
        if libc::setresuid(INSIDE_ID, INSIDE_ID, INSIDE_ID) < 0 {
            return Err(StepError::errno("identity: setresuid", errno(), ""));
        }
    }
    // 4. Die with the supervisor. ORDER: after the id change, which clears PDEATHSIG.
    // SAFETY: prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) } < 0 {
        return Err(StepError::errno("lifecycle: PR_SET_PDEATHSIG", errno(), ""));
    }
    // init holds a copy of the supervisor's memory (its environment included): nobody in the
    // sandbox may read it through /proc/1/{mem,environ}.
    // SAFETY: prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } < 0 {
        return Err(StepError::errno("lifecycle: PR_SET_DUMPABLE", errno(), ""));
    }
    // The supervisor may have died before PDEATHSIG was armed: its end of the channel tells.
    let mut pfd = libc::pollfd {
        fd: ch.0.as_raw_fd(),
        events: libc::POLLRDHUP,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    if unsafe { libc::poll(&mut pfd, 1, 0) } != 0 && pfd.revents & (libc::POLLHUP | libc::POLLRDHUP) != 0 {
        return Err(StepError::msg("lifecycle", "supervisor died during setup"));
    }
    // 5. The root filesystem, then pivot into it.
    mounts::build_root(policy, plan.trees)?;
    for fd in &plan.close_after_root {
        // The child never runs the owners' destructors (it leaves by _exit), so no double close.
        // SAFETY: closing copies of the parent's descriptors that nothing here uses again.
        unsafe { libc::close(*fd) };
    }
    // 6. UTS and network namespaces.
    confine::hostname_and_loopback(policy.network.mode)?;
    std::env::set_current_dir(&policy.context.workspace).map_err(|e| {
        StepError::io(
            "filesystem: chdir workspace",
            &e,
            &policy.context.workspace.display().to_string(),
        )
    })?;
    // 7. The agent's own terminal: a pty of the sandbox's devpts, master sent to the supervisor.
    let pty_slave = if plan.interactive {
        let (master, slave) =
            pty::open_in_sandbox().map_err(|e| StepError::io("terminal: open pty", &e, ""))?;
        ch.send_fd(&Msg::PtyMaster, master.as_raw_fd())
            .map_err(|e| StepError::io("terminal: hand pty to supervisor", &e, ""))?;
        Some(slave)
    } else {
        None
    };
    // 8. A session of our own: no controlling terminal shared with the user.
    // SAFETY: setsid has no arguments.
    if unsafe { libc::setsid() } < 0 {
        return Err(StepError::errno("session: setsid", errno(), ""));
    }
    // 9. rlimits, landlock (ORDER: after the last mount; it also forbids later mounts),
    // capabilities (bounding set while CAP_SETPCAP is still effective), seccomp last.
    confine::rlimits(policy)?;
    confine::landlock(policy)?;
    confine::drop_capabilities()?;
    confine::load_seccomp(plan.seccomp_bpf)?;
    ch.send(&Msg::Ready)
        .map_err(|e| StepError::io("handshake: ready", &e, ""))?;
    Ok(pty_slave)
}

fn spawn_agent(ch: &Channel, plan: &ChildPlan, pty_slave: Option<&OwnedFd>) -> libc::pid_t {
    // SAFETY: init is single-threaded; fork semantics as in the parent.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        let _ = ch.send(&Msg::SetupFailed {
            step: "fork agent".into(),
            errno: errno(),
            detail: String::new(),
        });
        // SAFETY: leaving init.
        unsafe { libc::_exit(125) }
    }
    if pid > 0 {
        if pty_slave.is_some() {
            // init keeps nothing of the user's terminal.
            quiet_stdio();
        }
        return pid;
    }
    exec_agent(ch, plan, pty_slave)
}

fn quiet_stdio() {
    // SAFETY: opening /dev/null and duplicating it over our own stdio.
    unsafe {
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC);
        if null >= 0 {
            for fd in 0..3 {
                libc::dup2(null, fd);
            }
            libc::close(null);
        }
    }
}

fn exec_agent(ch: &Channel, plan: &ChildPlan, pty_slave: Option<&OwnedFd>) -> ! {
    // SAFETY: everything below runs in the freshly forked agent process before execve.
    unsafe {
        // The Rust runtime ignores SIGPIPE, callers may ignore more, and ignored signals
        // survive execve: give the agent default dispositions for every signal (else
        // `yes | head` reports EPIPE instead of dying quietly). The raw syscall also reaches
        // the real-time signals glibc reserves for itself.
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
                libc::syscall(
                    libc::SYS_rt_sigaction,
                    sig,
                    &dfl as *const KernelSigaction,
                    0usize,
                    8usize,
                );
            }
        }
        let empty = signal_set(&[libc::SIGCHLD]);
        libc::sigprocmask(libc::SIG_UNBLOCK, &empty, std::ptr::null_mut());
        libc::setsid();
        if let Some(slave) = pty_slave {
            let s = slave.as_raw_fd();
            libc::ioctl(s, libc::TIOCSCTTY, 0);
            for fd in 0..3 {
                libc::dup2(s, fd);
            }
        }
        // Nothing but stdio crosses execve.
        libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, libc::CLOSE_RANGE_CLOEXEC);
        let mut argv: Vec<*const libc::c_char> = plan.argv.iter().map(|a| a.as_ptr()).collect();
        argv.push(std::ptr::null());
        let mut envp: Vec<*const libc::c_char> = plan.envp.iter().map(|a| a.as_ptr()).collect();
        envp.push(std::ptr::null());
        libc::execve(plan.program.as_ptr(), argv.as_ptr(), envp.as_ptr());
        let e = errno();
        let _ = ch.send(&Msg::ExecFailed {
            errno: e,
            program: plan.program.to_string_lossy().into_owned(),
        });
        libc::_exit(if e == libc::ENOENT { 127 } else { 126 })
    }
}

/// Reap every child (init adopts orphans); forward signals to the agent; return the agent's
/// wait status when it ends.
fn reap_until(agent: libc::pid_t) -> i32 {
    let set = signal_set(&[libc::SIGCHLD]);
    loop {
        let mut status = 0;
        loop {
            // SAFETY: reaping our own children without blocking.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid == agent {
                return status;
            }
            if pid <= 0 {
                break;
            }
        }
        // SAFETY: zeroed siginfo is a valid out buffer for sigwaitinfo.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: set is a valid sigset; info a valid buffer.
        let sig = unsafe { libc::sigwaitinfo(&set, &mut info) };
        if sig > 0 && sig != libc::SIGCHLD {
            // SAFETY: forwarding to the agent's process group (it leads its own session).
            unsafe { libc::kill(-agent, sig) };
        }
    }
}
