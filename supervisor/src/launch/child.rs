//! The child side: from clone to the agent's execve. It runs as the sandbox's init (pid 1 in
//! its pid namespace): it builds the sandbox around itself, then forks the agent and waits.
//! Every failure is reported over the channel; nothing here may panic.

use super::channel::{Channel, Msg};
use super::confine;
use super::mounts::{self, Tree};
use super::pty;
use super::StepError;
use crate::policy::{Policy, INSIDE_ID};
use crate::{exit, sys};
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::unistd::{Gid, Pid, Uid};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicI32, Ordering};

pub struct ChildPlan<'a> {
    pub policy: &'a Policy,
    pub trees: &'a [Tree],
    pub seccomp_bpf: &'a [u8],
    /// The agent's program, argv and environment.
    pub exec: &'a sys::Exec,
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

pub fn signal_set(extra: &[libc::c_int]) -> SigSet {
    let mut set = SigSet::empty();
    // Every number here is a standard signal nix knows; none is dropped.
    for s in FORWARDED
        .iter()
        .chain(extra)
        .filter_map(|s| Signal::try_from(*s).ok())
    {
        set.add(s);
    }
    set
}

/// A failed id or prctl step, with its errno.
fn failed(step: &str) -> impl FnOnce(Errno) -> StepError + '_ {
    move |e| StepError::errno(step, e as i32, "")
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
            // Without running the destructors of the parent's owners we hold copies of.
            sys::exit_now(exit::CORDON_ERROR)
        }
    };
    crate::text::milestone("child: starting agent");
    let agent = spawn_agent(ch, plan, pty_slave.as_ref());
    crate::text::milestone("child: agent exec'd");
    let status = reap_until(agent);
    crate::text::milestone("child: agent reaped");
    let _ = ch.send(&Msg::AgentExited { status });
    sys::exit_now(0)
}

/// The launch sequence inside the sandbox, in the order that works (DESIGN.md).
fn setup(ch: &Channel, plan: &ChildPlan) -> Result<Option<OwnedFd>, StepError> {
    let policy = plan.policy;
    // 1. Join the v1 cgroups (hybrid hosts). ORDER: first, so that everything the sandbox
    // does from here on is charged to and limited by them.
    for (tasks, fd) in plan.v1_join {
        if let Err(e) = nix::unistd::write(fd, b"0") {
            return Err(StepError::errno(
                "cgroups: join v1 controller",
                e as i32,
                &tasks.display().to_string(),
            ));
        }
        // Close our copy: nothing in the sandbox may keep a host cgroupfs handle. The OwnedFd
        // is never dropped here (the child leaves by _exit), so nothing closes it twice.
        let _ = nix::unistd::close(fd.as_raw_fd());
    }
    // 2. Wait until the parent has written our uid/gid maps.
    match ch.recv() {
        Ok(Some(Msg::Release)) => {}
        _ => return Err(StepError::msg("handshake", "supervisor went away before release")),
    }
    // 3. Become the agent's identity. ORDER: before any file is created (unmapped ids give
    // EOVERFLOW). Host root's supplementary groups are dropped; capabilities in our own user
    // namespace survive because inside-root is unmapped.
    nix::unistd::setgroups(&[]).map_err(failed("identity: setgroups"))?;
    let (gid, uid) = (Gid::from_raw(INSIDE_ID), Uid::from_raw(INSIDE_ID));
    nix::unistd::setresgid(gid, gid, gid).map_err(failed("identity: setresgid"))?;
    nix::unistd::setresuid(uid, uid, uid).map_err(failed("identity: setresuid"))?;
    // 4. Die with the supervisor. ORDER: after the id change, which clears PDEATHSIG.
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(failed("lifecycle: PR_SET_PDEATHSIG"))?;
    // init holds a copy of the supervisor's memory (its environment included): nobody in the
    // sandbox may read it through /proc/1/{mem,environ}.
    nix::sys::prctl::set_dumpable(false).map_err(failed("lifecycle: PR_SET_DUMPABLE"))?;
    // The supervisor may have died before PDEATHSIG was armed: its end of the channel tells.
    // A seqpacket socket whose peer is closed is fully shut down, which poll reports as
    // POLLHUP whatever was asked (nix has no POLLRDHUP; it is set together with it here).
    let mut pfd = [PollFd::new(ch.0.as_fd(), PollFlags::empty())];
    if nix::poll::poll(&mut pfd, PollTimeout::ZERO).is_ok_and(|n| n != 0)
        && pfd[0].revents().is_some_and(|r| r.contains(PollFlags::POLLHUP))
    {
        return Err(StepError::msg("lifecycle", "supervisor died during setup"));
    }
    crate::text::milestone("child: identity set");
    // 5. The root filesystem, then pivot into it.
    mounts::build_root(policy, plan.trees)?;
    for fd in &plan.close_after_root {
        // Copies of the parent's descriptors that nothing here uses again. The child never runs
        // their owners' destructors (it leaves by _exit), so nothing closes them twice.
        let _ = nix::unistd::close(*fd);
    }
    crate::text::milestone("child: root built");
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
    nix::unistd::setsid().map_err(failed("session: setsid"))?;
    // 9. rlimits, landlock (ORDER: after the last mount; it also forbids later mounts),
    // capabilities (bounding set while CAP_SETPCAP is still effective), seccomp last.
    confine::rlimits(policy)?;
    crate::text::milestone("child: terminal, session, rlimits");
    confine::landlock(policy)?;
    crate::text::milestone("child: landlock");
    confine::drop_capabilities()?;
    confine::load_seccomp(plan.seccomp_bpf)?;
    crate::text::milestone("child: confined");
    // 10. Wait until the supervisor watches the sandbox (it did so while we built it): the
    // agent's first syscall is recorded and its first connect judged.
    match ch.recv() {
        Ok(Some(Msg::Go)) => {}
        _ => {
            return Err(StepError::msg(
                "handshake",
                "supervisor went away before the start",
            ))
        }
    }
    crate::text::milestone("child: go");
    ch.send(&Msg::Ready)
        .map_err(|e| StepError::io("handshake: ready", &e, ""))?;
    Ok(pty_slave)
}

fn spawn_agent(ch: &Channel, plan: &ChildPlan, pty_slave: Option<&OwnedFd>) -> Pid {
    // The agent shares init's memory until its execve (vfork): nothing of init's is copied
    // for a process that replaces itself at once. It leaves its execve's errno here.
    let exec_errno = AtomicI32::new(0);
    let started = sys::vfork_start(&mut || exec_agent(plan, pty_slave, &exec_errno));
    let agent = match started {
        Err(e) => {
            let _ = ch.send(&Msg::SetupFailed {
                step: "start agent".into(),
                errno: e.raw_os_error().unwrap_or(libc::EIO),
                detail: String::new(),
            });
            sys::exit_now(exit::CORDON_ERROR)
        }
        Ok(agent) => agent,
    };
    let errno = exec_errno.load(Ordering::Acquire);
    if errno != 0 {
        let _ = ch.send(&Msg::ExecFailed {
            errno,
            program: plan.exec.program().to_string_lossy().into_owned(),
        });
    }
    if pty_slave.is_some() {
        // init keeps nothing of the user's terminal.
        quiet_stdio();
    }
    agent
}

fn quiet_stdio() {
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        let _ = nix::unistd::dup2_stdin(&null);
        let _ = nix::unistd::dup2_stdout(&null);
        let _ = nix::unistd::dup2_stderr(&null);
    }
}

/// The agent process, up to execve: system calls only (it runs in init's memory, init
/// suspended). Returns its exit status only if execve failed, with the errno in `exec_errno`.
fn exec_agent(plan: &ChildPlan, pty_slave: Option<&OwnedFd>, exec_errno: &AtomicI32) -> i32 {
    // The Rust runtime ignores SIGPIPE, callers may ignore more, and ignored signals survive
    // execve: give the agent default dispositions for every signal (else `yes | head` reports
    // EPIPE instead of dying quietly). The agent has its own copy of the dispositions (no
    // CLONE_SIGHAND), its own signal mask and its own descriptor table (no CLONE_FILES).
    sys::reset_signal_dispositions();
    let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_UNBLOCK, Some(&signal_set(&[libc::SIGCHLD])), None);
    let _ = nix::unistd::setsid();
    if let Some(slave) = pty_slave {
        let _ = sys::set_controlling_tty(slave.as_fd());
        let _ = nix::unistd::dup2_stdin(slave);
        let _ = nix::unistd::dup2_stdout(slave);
        let _ = nix::unistd::dup2_stderr(slave);
    }
    // Nothing but stdio crosses execve.
    let _ = sys::close_range_cloexec(3);
    let e = plan.exec.execve();
    exec_errno.store(e as i32, Ordering::Release);
    if e == Errno::ENOENT {
        exit::NOT_FOUND
    } else {
        exit::CANNOT_EXECUTE
    }
}

/// Reap every child (init adopts orphans); forward signals to the agent; return the agent's
/// raw wait status when it ends. Raw, not nix's `WaitStatus`: that cannot hold a death by a
/// real-time signal, and the agent's status would be lost with the child already reaped.
fn reap_until(agent: Pid) -> i32 {
    let set = signal_set(&[libc::SIGCHLD]);
    loop {
        loop {
            match sys::waitpid(-1, true) {
                Ok((pid, status)) if pid == agent.as_raw() => return status,
                Ok((pid, _)) if pid > 0 => {}
                _ => break,
            }
        }
        if let Ok(sig) = set.wait() {
            if sig != Signal::SIGCHLD {
                // The agent leads its own process group (its own session).
                let _ = nix::sys::signal::kill(Pid::from_raw(-agent.as_raw()), sig);
            }
        }
    }
}
