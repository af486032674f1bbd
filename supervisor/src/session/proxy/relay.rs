//! Moving one connection's bytes: the agent's first bytes read and checked (TLS server name
//! or HTTP Host against the resolved name, placeholders and DLP on what is in the clear), then
//! both directions relayed by the kernel (splice through a pipe), counted.

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::net::TcpStream;

use super::firewall::Firewall;
use super::sniff::{self, Opening};
use crate::events::pb;

/// The agent's first bytes are read up to this much to find a TLS server name or a Host.
const SNIFF_MAX: usize = 16 * 1024;

/// What the proxy learned about one connection, for its event.
#[derive(Default)]
pub(super) struct Seen {
    pub(super) sni: String,
    pub(super) http: Option<pb::HttpRequest>,
}

/// Why a relayed connection was refused on its first bytes, or ended early.
#[derive(Debug, thiserror::Error)]
pub(super) enum RelayError {
    #[error("TLS server name {sni:?} is not {name}, the name the agent resolved")]
    ServerName { sni: String, name: String },
    #[error("HTTP Host {host:?} is not {name}, the name the agent resolved")]
    Host { host: String, name: String },
    #[error("the placeholder of {env} (for {host}) was sent to {to}; refused")]
    Placeholder { env: String, host: String, to: String },
    #[error("{what} in what the agent sent to {to}; refused")]
    Dlp { what: String, to: String },
    #[error("{0}")]
    Intercept(String),
    #[error("agent: {0}")]
    Agent(#[source] std::io::Error),
    #[error("upstream: {0}")]
    Upstream(#[source] std::io::Error),
}

impl RelayError {
    /// The connection is refused (fronting), not merely ended.
    pub(super) fn refuses(&self) -> bool {
        matches!(
            self,
            RelayError::ServerName { .. }
                | RelayError::Host { .. }
                | RelayError::Placeholder { .. }
                | RelayError::Dlp { .. }
        )
    }
}

/// Check the agent's first bytes against the name it resolved: a TLS server name or an HTTP
/// Host for another name is refused (domain fronting). Returns the bytes to forward.
pub(super) async fn inspect(agent: &TcpStream, name: &str, seen: &mut Seen) -> Result<Vec<u8>, RelayError> {
    let mut first = Vec::new();
    let mut buf = vec![0u8; 4096];
    loop {
        match sniff::opening(&first) {
            Opening::Incomplete if first.len() < SNIFF_MAX => {}
            Opening::Tls { sni } => {
                if let Some(sni) = sni {
                    seen.sni.clone_from(&sni);
                    let host = sniff::host_only(&sni);
                    if !name.is_empty() && host != name {
                        return Err(RelayError::ServerName {
                            sni,
                            name: name.into(),
                        });
                    }
                }
                return Ok(first);
            }
            Opening::Http { method, path, host } => {
                let host = host.map(|h| sniff::host_only(&h)).unwrap_or_default();
                if !name.is_empty() && !host.is_empty() && host != name {
                    return Err(RelayError::Host {
                        host,
                        name: name.into(),
                    });
                }
                seen.http = Some(pb::HttpRequest {
                    method,
                    host,
                    path,
                    status: 0,
                });
                return Ok(first);
            }
            Opening::Incomplete | Opening::Other => return Ok(first),
        }
        let n = read_some(agent, &mut buf).await.map_err(RelayError::Agent)?;
        if n == 0 {
            return Ok(first);
        }
        first.extend_from_slice(&buf[..n]);
    }
}

async fn read_some(s: &TcpStream, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        s.readable().await?;
        match s.try_read(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            r => return r,
        }
    }
}

async fn write_all(s: &TcpStream, mut buf: &[u8]) -> std::io::Result<()> {
    while !buf.is_empty() {
        s.writable().await?;
        match s.try_write(buf) {
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// No more bytes go out on `s` (the other side's EOF is passed on).
fn shutdown_write(s: &TcpStream) {
    let _ = nix::sys::socket::shutdown(
        std::os::fd::AsRawFd::as_raw_fd(s),
        nix::sys::socket::Shutdown::Write,
    );
}

/// Bytes the kernel moves per splice, and the pipe's size.
const SPLICE_CHUNK: usize = 1 << 20;
const PIPE_SIZE: i32 = 1 << 20;

/// Move everything `from` sends to `to` through a pipe, in the kernel (splice): the bytes
/// never pass through this process. Returns at `from`'s EOF.
async fn splice_all(from: &TcpStream, to: &TcpStream, count: &AtomicU64) -> std::io::Result<()> {
    use nix::fcntl::{splice, OFlag, SpliceFFlags};
    use tokio::io::Interest;
    let (pipe_r, pipe_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)?;
    // A bigger pipe moves more per call (the default holds 64 KiB); best effort.
    let _ = nix::fcntl::fcntl(&pipe_w, nix::fcntl::FcntlArg::F_SETPIPE_SZ(PIPE_SIZE));
    let flags = SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_NONBLOCK;
    let mut in_pipe = 0usize;
    loop {
        if in_pipe == 0 {
            from.readable().await?;
            let filled = from.try_io(Interest::READABLE, || {
                splice(from, None, &pipe_w, None, SPLICE_CHUNK, flags).map_err(std::io::Error::from)
            });
            match filled {
                Ok(0) => return Ok(()),
                Ok(n) => in_pipe = n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            continue;
        }
        to.writable().await?;
        let drained = to.try_io(Interest::WRITABLE, || {
            splice(&pipe_r, None, to, None, in_pipe, flags).map_err(std::io::Error::from)
        });
        match drained {
            Ok(n) => {
                in_pipe -= n;
                count.fetch_add(n as u64, Ordering::Relaxed);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
}

/// Relay both ways until both sides are done. The agent's first bytes are inspected before
/// any reach upstream; the upstream's flow from the start (a server may speak first). After
/// the first bytes each way, the kernel moves the rest (splice).
#[allow(clippy::too_many_arguments)]
pub(super) async fn relay(
    agent: TcpStream,
    up: TcpStream,
    first: Option<Vec<u8>>,
    name: &str,
    fw: Option<&Firewall>,
    up_bytes: &AtomicU64,
    down_bytes: &AtomicU64,
    seen: &mut Seen,
) -> Result<String, RelayError> {
    let sniff_status = std::sync::atomic::AtomicBool::new(false);
    let mut status = None;
    let agent_to_up = async {
        let first = match first {
            Some(f) => f,
            None => inspect(&agent, name, seen).await?,
        };
        // A placeholder or a secret in what the agent sends in the clear (a plain-HTTP
        // request): refused before any of it leaves.
        let to = || {
            if name.is_empty() {
                "a literal address".to_string()
            } else {
                name.to_string()
            }
        };
        if let Some(c) = fw.and_then(|f| f.placeholder_in(&String::from_utf8_lossy(&first))) {
            return Err(RelayError::Placeholder {
                env: c.rule.env.clone(),
                host: c.rule.host.clone(),
                to: to(),
            });
        }
        if let Some(f) = fw.and_then(|f| f.dlp.scan(&first, name)) {
            return Err(RelayError::Dlp {
                what: f.what,
                to: to(),
            });
        }
        sniff_status.store(seen.http.is_some(), Ordering::Relaxed);
        write_all(&up, &first).await.map_err(RelayError::Upstream)?;
        up_bytes.fetch_add(first.len() as u64, Ordering::Relaxed);
        if !first.is_empty() {
            splice_all(&agent, &up, up_bytes)
                .await
                .map_err(RelayError::Upstream)?;
        }
        shutdown_write(&up);
        Ok::<(), RelayError>(())
    };
    let up_to_agent = async {
        // The response's first bytes pass through here (the HTTP status is read from them).
        let mut buf = vec![0u8; 4096];
        let n = read_some(&up, &mut buf).await?;
        if n > 0 {
            status = sniff::http_status(&buf[..n]);
            write_all(&agent, &buf[..n]).await?;
            down_bytes.fetch_add(n as u64, Ordering::Relaxed);
            splice_all(&up, &agent, down_bytes).await?;
        }
        shutdown_write(&agent);
        Ok::<(), std::io::Error>(())
    };
    let how = {
        tokio::pin!(agent_to_up, up_to_agent);
        let (mut a_done, mut u_done) = (false, false);
        let mut how = "closed".to_string();
        while !(a_done && u_done) {
            tokio::select! {
                r = &mut agent_to_up, if !a_done => {
                    a_done = true;
                    if let Err(why) = r {
                        if why.refuses() {
                            return Err(why);
                        }
                        how = why.to_string();
                    }
                }
                r = &mut up_to_agent, if !u_done => {
                    u_done = true;
                    if let Err(e) = r {
                        how = format!("agent side: {e}");
                    }
                }
            }
        }
        how
    };
    if let (Some(h), Some(s)) = (
        seen.http.as_mut(),
        status.filter(|_| sniff_status.load(Ordering::Relaxed)),
    ) {
        h.status = u32::from(s);
    }
    Ok(how)
}
