//! The supervisor's loop while the sandbox runs: one thread, one poll over the signalfd, the
//! init process's pidfd, the child channel and (interactive runs) the pty relay.

use super::channel::{Channel, Msg};
use super::pty::{copy_window_size, pump, RawMode};
use super::{cgroup::Cgroup, sys, LaunchError, Outcome, StepError};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
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
pub struct BlockedSignals(libc::sigset_t);

impl BlockedSignals {
    pub fn block(set: libc::sigset_t) -> BlockedSignals {
        // SAFETY: blocking signals in this (single) thread.
        unsafe { libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
        BlockedSignals(set)
    }
}

impl Drop for BlockedSignals {
    fn drop(&mut self) {
        // SAFETY: restoring the signal mask of this thread.
        unsafe { libc::sigprocmask(libc::SIG_UNBLOCK, &self.0, std::ptr::null_mut()) };
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
}

fn signalfd() -> std::io::Result<OwnedFd> {
    let set = super::child::signal_set(&[libc::SIGCHLD]);
    // SAFETY: creating a new signalfd for a valid set.
    let fd = unsafe { libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is new and ours.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn read_signal(fd: &OwnedFd) -> Option<libc::c_int> {
    // SAFETY: zeroed signalfd_siginfo is a valid buffer.
    let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<libc::signalfd_siginfo>();
    // SAFETY: reading one record into info.
    let n = unsafe {
        libc::read(
            fd.as_raw_fd(),
            (&mut info as *mut libc::signalfd_siginfo).cast(),
            size,
        )
    };
    (usize::try_from(n).ok() == Some(size)).then(|| libc::c_int::try_from(info.ssi_signo).unwrap_or(0))
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
                copy_window_size(fd.as_raw_fd());
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

pub fn run(r: Running) -> Result<Outcome, LaunchError> {
    let sigfd = signalfd().map_err(|e| StepError::io("lifecycle: signalfd", &e, ""))?;
    let _raw = if r.interactive {
        RawMode::enter(libc::STDIN_FILENO)
    } else {
        None
    };
    // The agent's pty master arrives from the child once its devpts exists.
    let mut master: Option<OwnedFd> = None;
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

    loop {
        let mut fds = vec![
            libc::pollfd {
                fd: sigfd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: r.pidfd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: if channel_open { r.channel.0.as_raw_fd() } else { -1 },
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        if let Some(m) = &master {
            fds.push(libc::pollfd {
                fd: if stdin_open { libc::STDIN_FILENO } else { -1 },
                events: libc::POLLIN,
                revents: 0,
            });
            fds.push(libc::pollfd {
                fd: if master_open { m.as_raw_fd() } else { -1 },
                events: libc::POLLIN,
                revents: 0,
            });
        }
        let timeout = match deadline {
            Some(d) if !timed_out => {
                i32::try_from(d.saturating_duration_since(Instant::now()).as_millis()).unwrap_or(i32::MAX)
            }
            _ => -1,
        };
        // SAFETY: fds is a valid array of pollfd.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
        if n < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(StepError::errno("lifecycle: poll", sys::last_errno(), "").into());
        }
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
        if fds[0].revents & libc::POLLIN != 0 {
            while let Some(sig) = read_signal(&sigfd) {
                match (sig, &master) {
                    (libc::SIGCHLD, _) => {}
                    (libc::SIGWINCH, Some(m)) => copy_window_size(m.as_raw_fd()),
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
                            forced_exit.get_or_insert(128 + s);
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
        if fds[2].revents != 0 {
            channel_open = reports.take(r.channel.recv_fd());
            if master.is_none() {
                master = reports.pty_master.take();
            }
        }
        if let (Some(m), true) = (&master, fds.len() == 5) {
            if fds[3].revents != 0 && !pump(libc::STDIN_FILENO, m.as_raw_fd()) {
                stdin_open = false;
            }
            if fds[4].revents != 0 && !pump(m.as_raw_fd(), libc::STDOUT_FILENO) {
                master_open = false;
            }
        }
        if fds[1].revents & libc::POLLIN != 0 {
            break;
        }
    }

    // init is gone (and with it, the pid namespace). Collect its status.
    let mut init_status = 0;
    // SAFETY: reaping our own child.
    unsafe { libc::waitpid(r.pid, &mut init_status, 0) };
    // Drain what the agent's last words left in the channel and the pty.
    while channel_open {
        channel_open = reports.take(r.channel.recv_fd());
    }
    if let Some(m) = &master {
        // SAFETY: making our master non-blocking for the final drain.
        unsafe { libc::fcntl(m.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) };
        while master_open && pump(m.as_raw_fd(), libc::STDOUT_FILENO) {}
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
        128 + libc::WTERMSIG(status)
    } else {
        125
    };
    if agent_status.is_none() && !timed_out {
        notes.push("the sandbox's init ended before the agent reported: the whole sandbox was killed".into());
    }
    Ok(Outcome {
        exit_code: forced_exit.unwrap_or(exit_code),
        notes,
    })
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
