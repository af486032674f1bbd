//! Requests from inside the sandbox (`cordon-request`, docs/approvals.md): the agent or one
//! of its tools asks for a piece of the profile's `[grants]` envelope instead of failing.
//! The socket is `/run/cordon/request.sock` in the sandbox (a read-only bind of a directory
//! of cordon's); each connection carries one JSON request and gets one JSON answer.
//!
//! Only processes of this sandbox are heard (the peer's cgroup is checked). A request outside
//! the envelope is refused at once without bothering anyone; one inside it is a question to
//! the approval broker, and an approval is carried out as a grant by whoever approved it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _};

use super::approvals::{Approvals, Question};
use super::grants::{Grants, Piece};

pub use crate::policy::{REQUESTS_INSIDE as INSIDE_DIR, REQUEST_CLIENT as CLIENT_NAME};
pub const SOCKET_NAME: &str = "request.sock";
/// The request directories of running sandboxes, on the host.
pub const HOST_DIR: &str = "/run/cordon/requests";
/// A grant approved without a duration lasts this long (or the envelope's maximum, if less).
const DEFAULT_GRANT_MS: u64 = 5 * 60 * 1000;
/// A request line longer than this is refused.
const MAX_REQUEST: usize = 16 * 1024;

/// One request, as the client sends it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Request {
    /// "read", "write" or "net".
    pub what: String,
    /// A path of the envelope, or NAME[:PORT].
    pub target: String,
    /// How long it is wanted (0: the default).
    #[serde(default)]
    pub for_ms: u64,
    #[serde(default)]
    pub why: String,
}

/// The answer.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Reply {
    pub granted: bool,
    pub detail: String,
}

/// The host directory of sandbox `id`'s requests.
pub fn host_dir(id: &str) -> PathBuf {
    Path::new(HOST_DIR).join(id)
}

/// `approvals.requests = true`: make the run's request directory (the socket goes in it when
/// the session starts; an empty file is the client's mountpoint) and tell the policy, which
/// binds it at `/run/cordon` and gives the agent `CORDON_REQUEST` and the client on its PATH.
pub fn prepare(policy: &mut crate::policy::Policy, id: &str) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    if policy.approvals.requests == crate::profile::RequestsMode::Off {
        return Ok(());
    }
    let dir = host_dir(id);
    std::fs::create_dir_all(&dir)?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
    let client = dir.join(CLIENT_NAME);
    std::fs::write(&client, b"")?;
    std::fs::set_permissions(&client, std::fs::Permissions::from_mode(0o755))?;
    policy.request_dir = Some(dir);
    let inside = format!("{INSIDE_DIR}/{CLIENT_NAME}");
    policy.env.insert("CORDON_REQUEST".into(), inside);
    let path = policy.env.get("PATH").cloned().unwrap_or_default();
    let path = if path.is_empty() {
        INSIDE_DIR.to_string()
    } else {
        format!("{path}:{INSIDE_DIR}")
    };
    policy.env.insert("PATH".into(), path);
    Ok(())
}

/// The listening socket in the run's request directory, connectable by every process of
/// the sandbox (only they see the directory; the peer's cgroup is checked anyway).
pub fn listen(dir: &Path) -> std::io::Result<std::os::unix::net::UnixListener> {
    use std::os::unix::fs::PermissionsExt as _;
    let path = dir.join(SOCKET_NAME);
    let _ = std::fs::remove_file(&path);
    let l = std::os::unix::net::UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666))?;
    l.set_nonblocking(true)?;
    Ok(l)
}

/// Serve requests until the run ends.
/// What a request is answered with.
#[derive(Clone)]
pub struct Desk {
    pub approvals: Arc<Approvals>,
    pub grants: Option<Arc<Grants>>,
    /// The sandbox's cgroup2 directory: only its processes are heard.
    pub cgroup: PathBuf,
    /// `approvals.requests = "approve"`: granted inside the envelope without asking.
    pub unasked: bool,
}

/// Requests served at once; more wait to be accepted (each holds a descriptor of cordon's).
const AT_ONCE: usize = 64;
/// A request line must arrive this soon after connecting.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

pub async fn serve(listener: tokio::net::UnixListener, desk: Desk) {
    let slots = Arc::new(tokio::sync::Semaphore::new(AT_ONCE));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        match listener.accept().await {
            Ok((conn, _)) => {
                let desk = desk.clone();
                tokio::spawn(async move {
                    let _ = one(conn, &desk).await;
                    drop(permit);
                });
            }
            // Out of descriptors, or a connection gone before it was accepted: keep serving.
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

async fn one(conn: tokio::net::UnixStream, desk: &Desk) -> std::io::Result<()> {
    let pid = conn.peer_cred().ok().and_then(|c| c.pid()).unwrap_or(0);
    let (r, mut w) = conn.into_split();
    let mut line = String::new();
    let mut r = tokio::io::BufReader::new(tokio::io::AsyncReadExt::take(r, MAX_REQUEST as u64));
    let read = tokio::time::timeout(READ_TIMEOUT, r.read_line(&mut line)).await;
    let read = read.unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()));
    let reply = match read {
        _ if !in_sandbox(pid, &desk.cgroup) => Reply {
            granted: false,
            detail: "only the sandbox's own processes may ask here".into(),
        },
        Ok(_) if line.len() >= MAX_REQUEST => refused("a request longer than 16 KiB"),
        Ok(_) => match serde_json::from_str::<Request>(line.trim_end()) {
            Ok(req) => decide(req, pid, desk).await,
            Err(e) => refused(&format!("an unreadable request: {e}")),
        },
        Err(e) => refused(&format!("an unreadable request: {e}")),
    };
    let mut out = serde_json::to_vec(&reply).unwrap_or_default();
    out.push(b'\n');
    w.write_all(&out).await
}

fn refused(why: &str) -> Reply {
    Reply {
        granted: false,
        detail: why.into(),
    }
}

/// Is `pid` a process of the sandbox whose cgroup2 directory is `cgroup`?
fn in_sandbox(pid: i32, cgroup: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/cgroup")) else {
        return false;
    };
    let Some(rel) = text.lines().find_map(|l| l.strip_prefix("0::")) else {
        return false;
    };
    // The sandbox's directory under the cgroup2 mount (unified or hybrid layout).
    let ours = ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
        .iter()
        .find_map(|root| cgroup.strip_prefix(root).ok());
    ours.is_some_and(|ours| Path::new(rel.trim_start_matches('/')).starts_with(ours))
}

fn asker(pid: i32) -> String {
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    format!("pid {pid} ({})", comm.trim())
}

async fn decide(req: Request, pid: i32, desk: &Desk) -> Reply {
    let approvals = &desk.approvals;
    let piece = match req.what.as_str() {
        "read" => Piece::Read(req.target.clone()),
        "write" => Piece::Write(req.target.clone()),
        "net" => Piece::Net(req.target.clone()),
        "secret" => Piece::Secret(req.target.clone()),
        other => return refused(&format!("cannot ask for {other:?} (read, write, net or secret)")),
    };
    let q = Question {
        what: req.what.clone(),
        target: req.target.clone(),
        why: req.why.clone(),
        asker: asker(pid),
    };
    let Some(grants) = &desk.grants else {
        let why = "this sandbox's profile has no [grants] envelope: nothing can be granted";
        approvals.refuse_unasked(q, why).await;
        return refused(why);
    };
    if let Err(why) = grants.check(&piece) {
        approvals.refuse_unasked(q, &why.0).await;
        return refused(&why.0);
    }
    let (id, a) = if desk.unasked {
        approvals
            .approve_unasked(q, "the profile (approvals.requests = \"approve\")")
            .await
    } else {
        approvals.ask(q).await
    };
    if !a.approved {
        let by = if a.by.is_empty() {
            String::new()
        } else {
            format!(" by {}", a.by)
        };
        return refused(&format!("request #{id} {}{by}: {}", a.state, a.rule));
    }
    let wanted = [a.for_ms, req.for_ms]
        .into_iter()
        .find(|&ms| ms > 0)
        .unwrap_or(DEFAULT_GRANT_MS);
    let lasts = wanted.min(grants.max_ms());
    let reason = format!("request #{id}: {}", req.why);
    match grants.grant(&piece, lasts, &reason, &a.by).await {
        Ok(detail) => Reply {
            granted: true,
            detail: format!("request #{id} approved by {}; {detail}", a.by),
        },
        Err(why) => refused(&format!(
            "request #{id} approved, but the grant failed: {}",
            why.0
        )),
    }
}

/// The client side (`cordon-request` inside the sandbox): send `req`, wait for the answer
/// (a person may take as long as the profile's timeout).
pub fn ask(socket: &Path, req: &Request) -> std::io::Result<Reply> {
    use std::io::{BufRead as _, Write as _};
    let mut s = std::os::unix::net::UnixStream::connect(socket)?;
    let mut line = serde_json::to_vec(req).map_err(std::io::Error::other)?;
    line.push(b'\n');
    s.write_all(&line)?;
    let mut answer = String::new();
    s.set_read_timeout(Some(Duration::from_secs(24 * 3600)))?;
    std::io::BufReader::new(s).read_line(&mut answer)?;
    serde_json::from_str(answer.trim_end())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_replies_round_trip_and_defaults_fill_in() {
        let r: Request = serde_json::from_str(r#"{"what":"read","target":"/d"}"#).unwrap();
        assert_eq!((r.for_ms, r.why.as_str()), (0, ""));
        let back: Request = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back, r);
        assert!(serde_json::from_str::<Request>(r#"{"target":"/d"}"#).is_err());
    }

    #[test]
    fn a_process_outside_the_sandbox_is_not_heard() {
        // This test's own process is not in a cgroup called that.
        let me = i32::try_from(std::process::id()).unwrap();
        assert!(!in_sandbox(
            me,
            Path::new("/sys/fs/cgroup/unified/no-such-sandbox")
        ));
        assert!(!in_sandbox(0, Path::new("/")));
    }
}
