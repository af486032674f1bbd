//! The typed channel between the supervisor and the sandbox's init process.
//! A panic after clone is invisible, so the child reports every failure here instead.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Msg {
    /// Parent → child: maps written and cgroups joined; go on.
    Release,
    /// Child → parent: every layer is in place; the agent is being started.
    Ready,
    /// Child → parent: a setup step failed; nothing of the agent ran.
    SetupFailed {
        step: String,
        errno: i32,
        detail: String,
    },
    /// Agent → parent: execve failed.
    ExecFailed { errno: i32, program: String },
    /// Child → parent: the agent ended with this wait status.
    AgentExited { status: i32 },
    /// Child → parent: the master side of the agent's pty (carried as SCM_RIGHTS).
    PtyMaster,
}

impl Msg {
    fn encode(&self) -> Vec<u8> {
        match self {
            Msg::Release => b"R".to_vec(),
            Msg::Ready => b"Y".to_vec(),
            Msg::SetupFailed { step, errno, detail } => format!("S{errno}\0{step}\0{detail}").into_bytes(),
            Msg::ExecFailed { errno, program } => format!("X{errno}\0{program}").into_bytes(),
            Msg::AgentExited { status } => format!("E{status}").into_bytes(),
            Msg::PtyMaster => b"P".to_vec(),
        }
    }

    fn decode(b: &[u8]) -> Option<Msg> {
        let (&tag, rest) = b.split_first()?;
        let text = String::from_utf8_lossy(rest);
        let mut parts = text.splitn(3, '\0');
        Some(match tag {
            b'R' => Msg::Release,
            b'Y' => Msg::Ready,
            b'S' => Msg::SetupFailed {
                errno: parts.next()?.parse().ok()?,
                step: parts.next()?.to_string(),
                detail: parts.next().unwrap_or("").to_string(),
            },
            b'X' => Msg::ExecFailed {
                errno: parts.next()?.parse().ok()?,
                program: parts.next().unwrap_or("").to_string(),
            },
            b'E' => Msg::AgentExited {
                status: parts.next()?.parse().ok()?,
            },
            b'P' => Msg::PtyMaster,
            _ => return None,
        })
    }
}

pub struct Channel(pub OwnedFd);

/// Size of one descriptor in an SCM_RIGHTS payload.
const FD_SIZE: u32 = 4;
const _: () = assert!(std::mem::size_of::<RawFd>() == FD_SIZE as usize);

pub fn pair() -> io::Result<(Channel, Channel)> {
    let mut fds = [0; 2];
    // SAFETY: fds is a valid out array of two ints.
    let r = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: socketpair returned two new descriptors we now own.
    Ok(unsafe {
        (
            Channel(OwnedFd::from_raw_fd(fds[0])),
            Channel(OwnedFd::from_raw_fd(fds[1])),
        )
    })
}

impl Channel {
    pub fn send(&self, m: &Msg) -> io::Result<()> {
        let b = m.encode();
        // SAFETY: b is a valid buffer of b.len() bytes.
        let r = unsafe { libc::send(self.0.as_raw_fd(), b.as_ptr().cast(), b.len(), libc::MSG_NOSIGNAL) };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// Send a message with one descriptor attached.
    pub fn send_fd(&self, m: &Msg, fd: RawFd) -> io::Result<()> {
        let mut b = m.encode();
        let mut iov = libc::iovec {
            iov_base: b.as_mut_ptr().cast(),
            iov_len: b.len(),
        };
        // SAFETY: CMSG_SPACE is a pure size computation.
        let space = unsafe { libc::CMSG_SPACE(FD_SIZE) } as usize;
        let mut cbuf = vec![0u8; space];
        // SAFETY: zeroed msghdr is valid; we point it at live buffers below.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf.as_mut_ptr().cast();
        msg.msg_controllen = space;
        // SAFETY: msg has a control buffer large enough for one fd; CMSG_* walk inside it.
        unsafe {
            let c = libc::CMSG_FIRSTHDR(&msg);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(FD_SIZE) as usize;
            std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<RawFd>(), fd);
        }
        // SAFETY: msg describes valid buffers.
        if unsafe { libc::sendmsg(self.0.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Blocking receive; `Ok(None)` when the other side is gone.
    pub fn recv(&self) -> io::Result<Option<Msg>> {
        self.recv_fd().map(|r| r.map(|(m, _)| m))
    }

    /// Blocking receive of a message and the descriptor it may carry.
    pub fn recv_fd(&self) -> io::Result<Option<(Msg, Option<OwnedFd>)>> {
        let mut buf = [0u8; 4096];
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // SAFETY: CMSG_SPACE is a pure size computation.
        let space = unsafe { libc::CMSG_SPACE(FD_SIZE) } as usize;
        let mut cbuf = vec![0u8; space];
        loop {
            // SAFETY: zeroed msghdr is valid; it points at live buffers.
            let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = cbuf.as_mut_ptr().cast();
            msg.msg_controllen = space;
            // SAFETY: msg describes valid buffers.
            let r = unsafe { libc::recvmsg(self.0.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
            if r < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let n = usize::try_from(r).unwrap_or(0);
            if n == 0 {
                return Ok(None);
            }
            let mut fd = None;
            // SAFETY: walking the control messages the kernel wrote into cbuf.
            unsafe {
                let c = libc::CMSG_FIRSTHDR(&msg);
                if !c.is_null() && (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                    let raw = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<RawFd>());
                    fd = Some(OwnedFd::from_raw_fd(raw));
                }
            }
            return Ok(Msg::decode(&buf[..n]).map(|m| (m, fd)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let (a, b) = pair().unwrap();
        for m in [
            Msg::Release,
            Msg::Ready,
            Msg::SetupFailed {
                step: "landlock".into(),
                errno: 38,
                detail: "x y".into(),
            },
            Msg::ExecFailed {
                errno: 2,
                program: "nope".into(),
            },
            Msg::AgentExited { status: 9 },
            Msg::PtyMaster,
        ] {
            a.send(&m).unwrap();
            assert_eq!(b.recv().unwrap(), Some(m));
        }
        let (r, _w) = std::os::unix::net::UnixStream::pair().unwrap();
        a.send_fd(&Msg::PtyMaster, r.as_raw_fd()).unwrap();
        let (m, fd) = b.recv_fd().unwrap().unwrap();
        assert_eq!(m, Msg::PtyMaster);
        assert!(fd.is_some());
        drop(a);
        assert_eq!(b.recv().unwrap(), None);
    }
}
