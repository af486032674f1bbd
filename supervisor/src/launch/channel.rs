//! The typed channel between the supervisor and the sandbox's init process.
//! A panic after clone is invisible, so the child reports every failure here instead.

use nix::errno::Errno;
use nix::sys::socket::{self, ControlMessage, ControlMessageOwned, MsgFlags};
use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Msg {
    /// Parent → child: maps written and cgroups joined; build the sandbox.
    Release,
    /// Parent → child: the sandbox is watched (probes, proxy, monitor); start the agent.
    Go,
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
            Msg::Go => b"G".to_vec(),
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
            b'G' => Msg::Go,
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

pub fn pair() -> io::Result<(Channel, Channel)> {
    let (a, b) = socket::socketpair(
        socket::AddressFamily::Unix,
        socket::SockType::SeqPacket,
        None,
        socket::SockFlag::SOCK_CLOEXEC,
    )?;
    Ok((Channel(a), Channel(b)))
}

impl Channel {
    pub fn send(&self, m: &Msg) -> io::Result<()> {
        socket::send(self.0.as_raw_fd(), &m.encode(), MsgFlags::MSG_NOSIGNAL)?;
        Ok(())
    }

    /// Send a message with one descriptor attached.
    pub fn send_fd(&self, m: &Msg, fd: RawFd) -> io::Result<()> {
        let b = m.encode();
        socket::sendmsg::<()>(
            self.0.as_raw_fd(),
            &[IoSlice::new(&b)],
            &[ControlMessage::ScmRights(&[fd])],
            MsgFlags::MSG_NOSIGNAL,
            None,
        )?;
        Ok(())
    }

    /// Blocking receive; `Ok(None)` when the other side is gone.
    pub fn recv(&self) -> io::Result<Option<Msg>> {
        self.recv_fd().map(|r| r.map(|(m, _)| m))
    }

    /// Blocking receive of a message and the descriptor it may carry.
    pub fn recv_fd(&self) -> io::Result<Option<(Msg, Option<OwnedFd>)>> {
        let mut buf = [0u8; 4096];
        let mut cbuf = nix::cmsg_space!([RawFd; 1]);
        let mut reset_seen = false;
        let (n, fds) = loop {
            let mut iov = [IoSliceMut::new(&mut buf)];
            match socket::recvmsg::<()>(
                self.0.as_raw_fd(),
                &mut iov,
                Some(&mut cbuf),
                MsgFlags::MSG_CMSG_CLOEXEC,
            ) {
                Err(Errno::EINTR) => continue,
                // The peer closed with our message (`Go`) unread: the kernel reports that once
                // (ECONNRESET, then cleared) before the messages it sent us, which are still
                // queued: its SetupFailed must not be lost behind it.
                Err(Errno::ECONNRESET) if !reset_seen => {
                    reset_seen = true;
                    continue;
                }
                Err(e) => return Err(e.into()),
                Ok(msg) => {
                    let mut fds = Vec::new();
                    // nix does not parse a truncated control buffer (ENOBUFS): only init
                    // writes here, and it attaches one descriptor, which always fits.
                    for c in msg.cmsgs().into_iter().flatten() {
                        if let ControlMessageOwned::ScmRights(raw) = c {
                            fds.extend(raw);
                        }
                    }
                    break (msg.bytes, fds);
                }
            }
        };
        // SAFETY: with SCM_RIGHTS the kernel installed each of these descriptors in this
        // process for this message alone; nothing else holds them.
        let owned: Vec<OwnedFd> = fds
            .into_iter()
            .map(|raw| unsafe { OwnedFd::from_raw_fd(raw) })
            .collect();
        // Only one descriptor is expected; any other is closed as `owned` drops.
        let fd = owned.into_iter().next();
        if n == 0 {
            return Ok(None);
        }
        Ok(Msg::decode(&buf[..n]).map(|m| (m, fd)))
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
            Msg::Go,
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

    /// The child failed and exited while our `Go` sat unread in its queue: its report still
    /// reaches us (the kernel's ECONNRESET comes first), then the end.
    #[test]
    fn a_report_behind_a_reset_is_read() {
        let (parent, child) = pair().unwrap();
        let failed = Msg::SetupFailed {
            step: "limits".into(),
            errno: 1,
            detail: String::new(),
        };
        child.send(&failed).unwrap();
        parent.send(&Msg::Go).unwrap();
        drop(child);
        assert_eq!(parent.recv().unwrap(), Some(failed));
        assert_eq!(parent.recv().unwrap(), None);
    }
}
