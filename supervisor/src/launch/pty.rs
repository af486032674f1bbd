//! The interactive agent's own pseudo-terminal, relayed to the user's terminal. The agent
//! never holds a descriptor of the user's tty, so it cannot inject input into it (TIOCSTI),
//! and what it writes reaches that tty through `terminal::Filter` (no title, clipboard or
//! report sequences unless the profile allows them).

use super::terminal::Filter;
use crate::sys;
use nix::fcntl::OFlag;
use nix::sys::termios::{self, SetArg, Termios};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

/// Child side: a pty from the sandbox's own devpts instance, so that inside the sandbox
/// `tty` names it (/dev/pts/0). ORDER: after /dev/pts is mounted and before landlock, which
/// restricts ioctls on device files opened after it.
pub fn open_in_sandbox() -> io::Result<(OwnedFd, OwnedFd)> {
    // posix_openpt opens /dev/ptmx, which in the sandbox links to its own devpts' pts/ptmx.
    let master = nix::pty::posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)?;
    nix::pty::unlockpt(&master)?;
    let slave = sys::pty_peer(master.as_fd())?;
    Ok((master.into(), slave))
}

/// Copy the user's window size to the agent's terminal (at start and on SIGWINCH).
pub fn copy_window_size(master: BorrowedFd<'_>) {
    sys::copy_window_size(io::stdin().as_fd(), master);
}

/// The user's terminal in raw mode for the length of the run; restored on drop.
pub struct RawMode<'a> {
    fd: BorrowedFd<'a>,
    saved: Termios,
}

impl<'a> RawMode<'a> {
    pub fn enter(fd: BorrowedFd<'a>) -> Option<RawMode<'a>> {
        let saved = termios::tcgetattr(fd).ok()?;
        let mut t = saved.clone();
        termios::cfmakeraw(&mut t);
        let _ = termios::tcsetattr(fd, SetArg::TCSANOW, &t);
        Some(RawMode { fd, saved })
    }
}

impl Drop for RawMode<'_> {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(self.fd, SetArg::TCSANOW, &self.saved);
    }
}

/// Copy what is available from one fd to another, through `filter` if given. Returns false
/// at EOF or error.
pub fn pump(from: BorrowedFd<'_>, to: BorrowedFd<'_>, filter: Option<&mut Filter>) -> bool {
    let mut buf = [0u8; 16 * 1024];
    let n = match nix::unistd::read(from, &mut buf) {
        Ok(0) => return false,
        Ok(n) => n,
        Err(e) => return e == nix::errno::Errno::EINTR,
    };
    match filter {
        None => write_all(to, &buf[..n]),
        Some(f) => {
            let mut out = Vec::with_capacity(n);
            f.feed(&buf[..n], &mut out);
            write_all(to, &out)
        }
    }
}

/// Write all of `bytes`; false on error.
pub fn write_all(to: BorrowedFd<'_>, bytes: &[u8]) -> bool {
    let mut rest = bytes;
    while !rest.is_empty() {
        match nix::unistd::write(to, rest) {
            Ok(w) => rest = &rest[w..],
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return false,
        }
    }
    true
}
