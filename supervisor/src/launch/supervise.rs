//! The supervisor's loop while the sandbox runs: one thread, one poll over the signalfd, the
//! init process's pidfd, the child channel and (interactive runs) the pty relay.

use super::channel::{Channel, Msg};
use super::pty::{copy_window_size, pump, write_all, RawMode};
use super::terminal::{Allow, Filter};
use super::{cgroup::Cgroup, LaunchError, Outcome, StepError};
use crate::{exit, sys};
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, SigmaskHow};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

/// SIGKILLs the sandbox's init if the supervisor leaves early (an error after clone).
pub struct KillOnDrop<'a>(pub &'a OwnedFd);

impl Drop for KillOnDrop<'_> {
    fn drop(&mut self) {
        let _ = sys::pidfd_send_signal(self.0, libc::SIGKILL);
    }
}

/// Signals blocked for the length of a run (they arrive through the signalfd, and the child
/// inherits them blocked); unblocked on every way out.
pub struct BlockedSignals(SigSet);

impl BlockedSignals {
    pub fn block(set: SigSet) -> BlockedSignals {
        let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), None);
        BlockedSignals(set)
    }
}

impl Drop for BlockedSignals {
    fn drop(&mut self) {
        let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_UNBLOCK, Some(&self.0), None);
    }
}

pub struct Running<'a> {
    pub pid: libc::pid_t,
    pub pidfd: &'a OwnedFd,
    pub channel: &'a Channel,
    pub cgroup: &'a Cgroup,
    pub interactive: bool,
    pub wall_clock_ms: Option<u64>,
    /// Signals cordon's caller ignores: they are not forwarded.
    pub ignored: &'a [libc::c_int],
    /// What the agent's output may do to the user's terminal beyond its screen.
    pub terminal: &'a [crate::profile::TerminalFeature],
    /// Questions to ask on the user's terminal (interactive runs).
    pub desk: Option<&'a super::desk::Desk>,
    /// Asked once the agent has ended and only init is left (a run without a terminal):
    /// true when the observer stopped recording the sandbox; then the run may end while init
    /// is still on its way out (`Outcome::teardown`).
    pub quiet: &'a mut dyn FnMut() -> bool,
}

/// Whether the sandbox's init is the only process left in its cgroup.
fn only_init(r: &Running) -> bool {
    std::fs::read_to_string(r.cgroup.v2.join("cgroup.procs"))
        .is_ok_and(|procs| procs.trim() == r.pid.to_string())
}

fn signalfd() -> io::Result<SignalFd> {
    let set = super::child::signal_set(&[libc::SIGCHLD]);
    Ok(SignalFd::with_flags(
        &set,
        SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK,
    )?)
}

fn read_signal(fd: &SignalFd) -> Option<libc::c_int> {
    // Nothing pending (EAGAIN) or an error both end the batch.
    let info = fd.read_signal().ok()??;
    Some(libc::c_int::try_from(info.ssi_signo).unwrap_or(0))
}

/// poll(2) over `fds`, where `None` entries are left out (the kernel's fd -1); returns the
/// number of ready entries and the revents of each entry (empty for those left out).
fn poll(fds: &[Option<BorrowedFd<'_>>], timeout: i32) -> Result<(libc::c_int, Vec<PollFlags>), Errno> {
    let mut polled: Vec<PollFd> = fds
        .iter()
        .flatten()
        .map(|fd| PollFd::new(*fd, PollFlags::POLLIN))
        .collect();
    let n = nix::poll::poll(
        &mut polled,
        PollTimeout::try_from(timeout).unwrap_or(PollTimeout::NONE),
    )?;
    // poll only reports what was asked (POLLIN) and POLLERR/POLLHUP/POLLNVAL, all of which
    // nix knows; anything else still counts as "something happened", but not as POLLIN.
    let mut revents = polled.iter().map(|p| p.revents().unwrap_or(PollFlags::POLLERR));
    Ok((
        n,
        fds.iter()
            .map(|fd| fd.and_then(|_| revents.next()).unwrap_or(PollFlags::empty()))
            .collect(),
    ))
}

/// What the child reported over the channel.
#[derive(Default)]
struct Reports {
    setup_error: Option<StepError>,
    agent_status: Option<i32>,
    notes: Vec<String>,
    pty_master: Option<OwnedFd>,
}

impl Reports {
    /// Take one message; false once the channel is closed.
    fn take(&mut self, received: std::io::Result<Option<(Msg, Option<OwnedFd>)>>) -> bool {
        match received {
            Ok(Some((Msg::PtyMaster, Some(fd)))) => {
                copy_window_size(fd.as_fd());
                self.pty_master = Some(fd);
            }
            Ok(Some((Msg::SetupFailed { step, errno, detail }, _))) => {
                self.setup_error = Some(StepError { step, errno, detail })
            }
            Ok(Some((Msg::ExecFailed { errno, program }, _))) => self.notes.push(format!(
                "cannot execute {program}: {}",
                std::io::Error::from_raw_os_error(errno)
            )),
            Ok(Some((Msg::AgentExited { status }, _))) => self.agent_status = Some(status),
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => return false,
        }
        true
    }
}

/// Supervise until the sandbox is gone — or, without a terminal, until the agent has ended
/// and only init is left, which the observer stopped recording (then true: init is still
/// exiting and must be reaped).
pub fn run(r: Running) -> Result<(Outcome, bool), LaunchError> {
    let sigfd = signalfd().map_err(|e| StepError::io("lifecycle: signalfd", &e, ""))?;
    let (stdin, stdout) = (io::stdin(), io::stdout());
    let _raw = if r.interactive {
        RawMode::enter(stdin.as_fd())
    } else {
        None
    };
    // The agent's pty master arrives from the child once its devpts exists.
    let mut master: Option<OwnedFd> = None;
    let mut filter = Filter::new(Allow::from_features(r.terminal));
    let deadline = r
        .wall_clock_ms
        .map(|ms| Instant::now() + Duration::from_millis(ms));
    let mut notes = Vec::new();
    let mut reports = Reports::default();
    let mut channel_open = true;
    let mut stdin_open = r.interactive;
    let mut master_open = r.interactive;
    let mut timed_out = false;
    // A terminating signal to cordon (TERM, INT, HUP) is forwarded to the agent. A frozen
    // sandbox cannot act on it, so then — and on any second one — cordon kills the sandbox
    // and exits 128+signal: `timeout`, Ctrl-C and a closed terminal always end the run.
    let mut terminating = 0u32;
    let mut forced_exit: Option<i32> = None;
    // A question on the user's terminal pauses the relay both ways until it is answered.
    let mut asking = super::desk::Asking::default();
    let mut init_left = false;

    loop {
        let mut fds = vec![
            Some(sigfd.as_fd()),
            Some(r.pidfd.as_fd()),
            channel_open.then(|| r.channel.0.as_fd()),
        ];
        if let Some(m) = &master {
            fds.push(stdin_open.then(|| stdin.as_fd()));
            fds.push((master_open && asking.current.is_none()).then(|| m.as_fd()));
        }
        let desk_at = fds.len();
        if let (Some(d), Some(_)) = (r.desk, &master) {
            fds.push(Some(d.fd()));
        }
        let timeout = match deadline {
            Some(d) if !timed_out => {
                i32::try_from(d.saturating_duration_since(Instant::now()).as_millis()).unwrap_or(i32::MAX)
            }
            _ => -1,
        };
        let (n, revents) = match poll(&fds, timeout) {
            Ok(ready) => ready,
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(StepError::errno("lifecycle: poll", e as i32, "").into()),
        };
        if n == 0 && deadline.is_some() && !timed_out {
            timed_out = true;
            notes.push(format!(
                "the wall-clock limit of {} was reached: the sandbox was killed",
                human_ms(r.wall_clock_ms.unwrap_or(0))
            ));
            r.cgroup.kill_all();
            let _ = sys::pidfd_send_signal(r.pidfd, libc::SIGKILL);
            continue;
        }
        if revents[0].contains(PollFlags::POLLIN) {
            while let Some(sig) = read_signal(&sigfd) {
                match (sig, &master) {
                    (libc::SIGCHLD, _) => {}
                    (libc::SIGWINCH, Some(m)) => copy_window_size(m.as_fd()),
                    (s, _) if r.ignored.contains(&s) => {}
                    (s @ (libc::SIGTERM | libc::SIGINT | libc::SIGHUP), _) => {
                        terminating += 1;
                        let frozen = crate::respond::frozen(&r.cgroup.v2);
                        if frozen || terminating > 1 {
                            notes.push(format!(
                                "cordon received {}{}: the sandbox was killed",
                                signal_name(s),
                                if frozen {
                                    " while the sandbox was frozen"
                                } else {
                                    " a second time"
                                }
                            ));
                            r.cgroup.kill_all();
                            let _ = sys::pidfd_send_signal(r.pidfd, libc::SIGKILL);
                            forced_exit.get_or_insert(exit::signaled(s));
                        } else {
                            let _ = sys::pidfd_send_signal(r.pidfd, s);
                        }
                    }
                    (s, _) => {
                        let _ = sys::pidfd_send_signal(r.pidfd, s);
                    }
                }
            }
        }
        if !revents[2].is_empty() {
            channel_open = reports.take(r.channel.recv_fd());
            if master.is_none() {
                master = reports.pty_master.take();
            }
            // The agent ended, nothing else of the sandbox runs: init only exits now (its
            // namespaces torn down, ~1 ms), which the end of the run need not wait for.
            if reports.agent_status.is_some()
                && !r.interactive
                && forced_exit.is_none()
                && !timed_out
                && only_init(&r)
                && (r.quiet)()
            {
                crate::text::milestone("supervise: agent ended, only init left");
                init_left = true;
                break;
            }
        }
        if let Some(d) = r
            .desk
            .filter(|_| revents.get(desk_at).is_some_and(|e| !e.is_empty()))
        {
            write_all(stdout.as_fd(), asking.update(d).as_bytes());
        }
        if let (Some(m), true) = (&master, revents.len() >= 5) {
            if let (Some(d), Some(_), false) = (r.desk, asking.current, revents[3].is_empty()) {
                // The person's keys answer the question; they do not reach the agent.
                let mut buf = [0u8; 64];
                match nix::unistd::read(stdin.as_fd(), &mut buf) {
                    Ok(0) => stdin_open = false,
                    Ok(n) => {
                        for &b in &buf[..n] {
                            if asking.current.is_some() {
                                write_all(stdout.as_fd(), asking.key(d, b).as_bytes());
                            }
                        }
                    }
                    Err(_) => {}
                }
            } else if !revents[3].is_empty() && !pump(stdin.as_fd(), m.as_fd(), None) {
                stdin_open = false;
            }
            if !revents[4].is_empty() && !pump(m.as_fd(), stdout.as_fd(), Some(&mut filter)) {
                master_open = false;
            }
        }
        if revents[1].contains(PollFlags::POLLIN) {
            crate::text::milestone("supervise: init gone");
            break;
        }
    }

    // init is gone (and with it, the pid namespace). Collect its status.
    // Raw statuses throughout (sys::waitpid): nix's WaitStatus cannot hold a death by a
    // real-time signal.
    let init_status = if init_left {
        0
    } else {
        sys::waitpid(r.pid, false).map_or(0, |(_, status)| status)
    };
    // Drain what the agent's last words left in the channel and the pty (init sends nothing
    // after the agent's status).
    while channel_open && !init_left {
        channel_open = reports.take(r.channel.recv_fd());
    }
    if let Some(m) = &master {
        // Non-blocking for the final drain.
        let _ = nix::fcntl::fcntl(m, nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK));
        while master_open && pump(m.as_fd(), stdout.as_fd(), Some(&mut filter)) {}
        // A sequence the agent left unfinished is dropped; a kept string it left open is
        // closed, so the user's shell does not continue it.
        let mut tail = Vec::new();
        filter.finish(&mut tail);
        write_all(stdout.as_fd(), &tail);
        notes.extend(filter.counts().note());
    }
    let Reports {
        setup_error,
        agent_status,
        notes: reported,
        ..
    } = reports;
    notes.extend(reported);
    if let Some(e) = setup_error {
        return Err(LaunchError::Step(e));
    }
    let status = agent_status.unwrap_or(init_status);
    let exit_code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else if libc::WIFSIGNALED(status) {
        exit::signaled(libc::WTERMSIG(status))
    } else {
        exit::CORDON_ERROR
    };
    if agent_status.is_none() && !timed_out {
        notes.push("the sandbox's init ended before the agent reported: the whole sandbox was killed".into());
    }
    Ok((
        Outcome {
            exit_code: forced_exit.unwrap_or(exit_code),
            notes,
            teardown: None,
        },
        init_left,
    ))
}

fn signal_name(s: libc::c_int) -> &'static str {
    match s {
        libc::SIGTERM => "SIGTERM",
        libc::SIGINT => "SIGINT",
        libc::SIGHUP => "SIGHUP",
        _ => "a signal",
    }
}

fn human_ms(ms: u64) -> String {
    if ms.is_multiple_of(3_600_000) {
        format!("{}h", ms / 3_600_000)
    } else if ms.is_multiple_of(60_000) {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}
