//! The interactive agent's own pseudo-terminal, relayed to the user's terminal. The agent
//! never holds a descriptor of the user's tty, so it cannot inject input into it (TIOCSTI).

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// Child side: a pty from the sandbox's own devpts instance, so that inside the sandbox
/// `tty` names it (/dev/pts/0). ORDER: after /dev/pts is mounted and before landlock, which
/// restricts ioctls on device files opened after it.
pub fn open_in_sandbox() -> io::Result<(OwnedFd, OwnedFd)> {
    // SAFETY: opening the multiplexer of our own devpts instance.
    let m = unsafe {
        libc::open(
            c"/dev/ptmx".as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    };
    if m < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: m is new and ours.
    let master = unsafe { OwnedFd::from_raw_fd(m) };
    let unlock: libc::c_int = 0;
    // SAFETY: ioctls on our own master.
    let s = unsafe {
        if libc::ioctl(m, libc::TIOCSPTLCK, &unlock) < 0 {
            return Err(io::Error::last_os_error());
        }
        libc::ioctl(
            m,
            libc::TIOCGPTPEER,
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    };
    if s < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: s is new and ours.
    Ok((master, unsafe { OwnedFd::from_raw_fd(s) }))
}

/// Copy the user's window size to the agent's terminal (at start and on SIGWINCH).
pub fn copy_window_size(master: RawFd) {
    // SAFETY: zeroed winsize is a valid out buffer; ioctls on our own fds.
    unsafe {
        let mut ws: libc::winsize = std::mem::zeroed();
        if libc::ioctl(libc::STDIN_FILENO, libc::TIOCGWINSZ, &mut ws) == 0 {
            libc::ioctl(master, libc::TIOCSWINSZ, &ws);
        }
    }
}

/// The user's terminal in raw mode for the length of the run; restored on drop.
pub struct RawMode {
    fd: RawFd,
    saved: libc::termios,
}

impl RawMode {
    pub fn enter(fd: RawFd) -> Option<RawMode> {
        // SAFETY: termios out buffers for our own terminal fd.
        unsafe {
            let mut t: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(fd, &mut t) < 0 {
                return None;
            }
            let saved = t;
            libc::cfmakeraw(&mut t);
            libc::tcsetattr(fd, libc::TCSANOW, &t);
            Some(RawMode { fd, saved })
        }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // SAFETY: restoring the attributes we saved.
        unsafe { libc::tcsetattr(self.fd, libc::TCSANOW, &self.saved) };
    }
}

/// Copy what is available from one fd to another. Returns false at EOF or error.
pub fn pump(from: RawFd, to: RawFd) -> bool {
    let mut buf = [0u8; 16 * 1024];
    // SAFETY: buf is valid for its length.
    let n = unsafe { libc::read(from, buf.as_mut_ptr().cast(), buf.len()) };
    if n <= 0 {
        return n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted;
    }
    let mut rest = &buf[..usize::try_from(n).unwrap_or(0)];
    while !rest.is_empty() {
        // SAFETY: rest is a valid slice.
        let w = unsafe { libc::write(to, rest.as_ptr().cast(), rest.len()) };
        if w < 0 {
            if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return false;
        }
        rest = &rest[usize::try_from(w).unwrap_or(0)..];
    }
    true
}
