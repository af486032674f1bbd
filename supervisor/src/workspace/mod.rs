//! The transactional workspace. The agent sees its workspace through an overlay whose upper
//! layer lives in cordon's state directory (`/var/lib/cordon/changes/SANDBOX/`), so the real
//! workspace is untouched until a person applies the changes (`commit`) or discards them
//! (`rollback`), while the run goes on or after it — also after cordon died or the host
//! rebooted (`SANDBOX/{upper,work,run.json}`; with a write quota `upper` and `work` are on a
//! tmpfs mounted on `SANDBOX/layer/`). `launch::mounts` mounts the overlay; this module owns the directory, its record
//! (`run.json`), and listing (`diff`), applying (`apply`) and discarding the changes.
//! docs/workspace.md.

pub mod apply;
pub mod diff;
mod ondisk;

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Where each transactional run keeps its layer and record (root-only).
pub const STATE_DIR: &str = "/var/lib/cordon/changes";
const RECORD: &str = "run.json";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no run with pending changes matches {0:?} (`cordon changes` lists them)")]
    Unknown(String),
    #[error("{0:?} matches more than one run with pending changes: {1}")]
    Ambiguous(String, String),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("{0}")]
    Refused(String),
}

impl Error {
    pub fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> Error + 'a {
        move |source| Error::Io {
            what,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// What a run's layer directory says about it (`run.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub sandbox: String,
    /// The real workspace (the overlay's lower layer).
    pub workspace: PathBuf,
    /// Wall clock (ns since the epoch) when the layer was made: a real file whose ctime is
    /// later was changed under the agent, and a commit refuses to overwrite it.
    pub started_ns: i64,
    pub profile: String,
    /// The command as recorded (secrets replaced).
    pub command: Vec<String>,
    pub trace: Option<PathBuf>,
    /// `write_quota`: the layer is a tmpfs of this many bytes mounted on `layer/`.
    pub quota: Option<u64>,
    /// The supervisor while the run lasts (pid and its start time, so a reused pid is not
    /// taken for it).
    pub cordon_pid: u32,
    pub cordon_start: u64,
    /// Set when the run ended (its exit status), absent while it runs or if cordon died.
    pub ended: Option<i32>,
    /// The agent's host uid and gid (what its files in the upper layer belong to) and the
    /// workspace owner's, whom a commit gives them to.
    pub agent_ids: (u32, u32),
    pub owner_ids: (u32, u32),
    /// Paths (relative to the workspace) cordon committed, with the real file's ctime right
    /// after: a later commit of the same path refuses if it changed since.
    #[serde(default)]
    pub committed: BTreeMap<PathBuf, i64>,
}

/// One run's layer directory.
#[derive(Debug)]
pub struct Layer {
    pub dir: PathBuf,
    pub record: Record,
}

impl Layer {
    /// Make the layer for a new run: `layer/upper` (whose root carries the workspace's mode
    /// and the agent's ids: it is the root the agent sees) and `layer/work`, on a tmpfs of `quota` bytes
    /// when one is set.
    pub fn create(record: Record) -> Result<Layer, Error> {
        let base = Path::new(STATE_DIR);
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(base)
            .map_err(Error::io("cannot create the changes directory", base))?;
        let dir = base.join(&record.sandbox);
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(Error::io("cannot create the layer directory", &dir))?;
        let layer = Layer { dir, record };
        let made = layer.make_dirs();
        if made.is_err() {
            let _ = layer.remove();
        }
        made.map(|()| layer)
    }

    fn make_dirs(&self) -> Result<(), Error> {
        let root = self.layer_dir();
        if let Some(bytes) = self.record.quota {
            fs::DirBuilder::new()
                .mode(0o700)
                .create(&root)
                .map_err(Error::io("cannot create the layer", &root))?;
            nix::mount::mount(
                Some("cordon-layer"),
                &root,
                Some("tmpfs"),
                nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV,
                Some(format!("size={bytes},mode=0700").as_str()),
            )
            .map_err(|e| Error::io("cannot mount the write_quota tmpfs on", &root)(e.into()))?;
        }
        let ws = fs::metadata(&self.record.workspace)
            .map_err(Error::io("cannot read the workspace", &self.record.workspace))?;
        let upper = self.upper();
        let mode = ws.mode() & 0o7777;
        fs::DirBuilder::new()
            .mode(mode)
            .create(&upper)
            .map_err(Error::io("cannot create the upper layer", &upper))?;
        let (uid, gid) = self.to_agent(ws.uid(), ws.gid());
        std::os::unix::fs::chown(&upper, Some(uid), Some(gid))
            .map_err(Error::io("cannot give the upper layer the agent's ids", &upper))?;
        // The umask may have taken bits off (and chown clears set-id bits).
        if fs::metadata(&upper).map(|m| m.mode() & 0o7777).ok() != Some(mode) {
            fs::set_permissions(&upper, fs::Permissions::from_mode(mode)).map_err(Error::io(
                "cannot give the upper layer the workspace's mode",
                &upper,
            ))?;
        }
        let work = root.join("work");
        fs::create_dir(&work).map_err(Error::io("cannot create the overlay work directory", &work))?;
        // A new directory: the record is written in place (later saves replace it atomically).
        let path = self.dir.join(RECORD);
        let text = serde_json::to_vec_pretty(&self.record).map_err(|e| Error::Refused(e.to_string()))?;
        fs::write(&path, text).map_err(Error::io("cannot write", &path))
    }

    /// Ids as the upper layer holds them (the owner's become the agent's).
    fn to_agent(&self, uid: u32, gid: u32) -> (u32, u32) {
        let r = &self.record;
        (
            if uid == r.owner_ids.0 { r.agent_ids.0 } else { uid },
            if gid == r.owner_ids.1 { r.agent_ids.1 } else { gid },
        )
    }

    /// Ids for the real workspace (the agent's become the owner's).
    pub fn to_owner(&self, uid: u32, gid: u32) -> (u32, u32) {
        let r = &self.record;
        (
            if uid == r.agent_ids.0 { r.owner_ids.0 } else { uid },
            if gid == r.agent_ids.1 { r.owner_ids.1 } else { gid },
        )
    }

    /// The directory holding `upper` and `work`: the run's directory, or with a quota the
    /// tmpfs mounted on its `layer/`.
    pub fn layer_dir(&self) -> PathBuf {
        if self.record.quota.is_some() {
            self.dir.join("layer")
        } else {
            self.dir.clone()
        }
    }

    pub fn upper(&self) -> PathBuf {
        self.layer_dir().join("upper")
    }

    pub fn save(&self) -> Result<(), Error> {
        let path = self.dir.join(RECORD);
        let tmp = self.dir.join(".run.json.tmp");
        let text = serde_json::to_vec_pretty(&self.record).map_err(|e| Error::Refused(e.to_string()))?;
        fs::write(&tmp, text).map_err(Error::io("cannot write", &tmp))?;
        fs::rename(&tmp, &path).map_err(Error::io("cannot write", &path))
    }

    /// The run ended with `code`: recorded, keeping what commits made meanwhile by other
    /// processes (`cordon commit` while it ran) wrote into the record.
    pub fn mark_ended(&mut self, code: i32) -> Result<(), Error> {
        if let Ok(on_disk) = Layer::read(&self.dir) {
            self.record.committed = on_disk.record.committed;
        }
        self.record.ended = Some(code);
        self.save()
    }

    /// Read one run's layer (`dir` is `STATE_DIR/SANDBOX`).
    pub fn read(dir: &Path) -> Result<Layer, Error> {
        let path = dir.join(RECORD);
        let text = fs::read(&path).map_err(Error::io("cannot read", &path))?;
        let record = serde_json::from_slice(&text)
            .map_err(|e| Error::Refused(format!("{}: not a layer record: {e}", path.display())))?;
        Ok(Layer {
            dir: dir.to_path_buf(),
            record,
        })
    }

    /// Every run that has a layer, oldest first. Unreadable entries are skipped.
    pub fn list() -> Vec<Layer> {
        let Ok(rd) = fs::read_dir(STATE_DIR) else {
            return Vec::new();
        };
        let mut all: Vec<Layer> = rd
            .filter_map(Result::ok)
            .filter_map(|e| Layer::read(&e.path()).ok())
            .collect();
        all.sort_by_key(|l| l.record.started_ns);
        all
    }

    /// The run whose sandbox id is `id` or starts with it.
    pub fn find(id: &str) -> Result<Layer, Error> {
        let mut hits: Vec<Layer> = Layer::list()
            .into_iter()
            .filter(|l| !id.is_empty() && l.record.sandbox.starts_with(id))
            .collect();
        match hits.len() {
            0 => Err(Error::Unknown(id.into())),
            1 => Ok(hits.remove(0)),
            _ => Err(Error::Ambiguous(
                id.into(),
                hits.iter()
                    .map(|l| l.record.sandbox.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            )),
        }
    }

    /// Whether the run is still going: not ended, and its supervisor alive.
    pub fn running(&self) -> bool {
        self.record.ended.is_none() && process_start(self.record.cordon_pid) == Some(self.record.cordon_start)
    }

    /// Discard the layer: unmount its tmpfs (if any) and remove the directory.
    pub fn remove(&self) -> Result<(), Error> {
        if self.record.quota.is_some() {
            // Not mounted any more (after a reboot) is fine.
            let _ = nix::mount::umount2(&self.layer_dir(), nix::mount::MntFlags::MNT_DETACH);
        }
        fs::remove_dir_all(&self.dir).map_err(Error::io("cannot remove the layer", &self.dir))
    }

    /// Discard the layer without waiting: renamed out of the way at once (the run is no
    /// longer listed), its files removed by a background `rm` (freeing thousands of inodes
    /// takes seconds on a slow disk). Falls back to removing it here.
    pub fn discard_later(&self) -> Result<(), Error> {
        let gone = Path::new(STATE_DIR).join(format!(".discarded-{}", self.record.sandbox));
        if self.record.quota.is_some() || fs::rename(&self.dir, &gone).is_err() {
            return self.remove();
        }
        let spawned = std::process::Command::new("rm")
            .arg("-rf")
            .arg("--one-file-system")
            .arg(&gone)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
        if spawned.is_err() {
            fs::remove_dir_all(&gone).map_err(Error::io("cannot remove the layer", &gone))?;
        }
        Ok(())
    }

    /// Bytes and inodes the upper layer holds (`statvfs` of its tmpfs with a quota).
    pub fn quota_used(&self) -> Option<(u64, u64)> {
        let quota = self.record.quota?;
        let st = nix::sys::statvfs::statvfs(&self.layer_dir()).ok()?;
        let free = st.blocks_available() * st.fragment_size();
        Some((quota.saturating_sub(free), quota))
    }
}

/// A process's start time (clock ticks since boot, field 22 of /proc/PID/stat).
pub fn process_start(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count from the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Wall clock now, ns since the epoch (comparable with ctimes).
pub fn now_ns() -> i64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

/// A file's ctime in ns since the epoch.
pub fn ctime_ns(m: &fs::Metadata) -> i64 {
    m.ctime()
        .saturating_mul(1_000_000_000)
        .saturating_add(m.ctime_nsec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_start_time_is_read() {
        let me = std::process::id();
        assert!(process_start(me).is_some_and(|t| t > 0));
        assert_eq!(process_start(u32::MAX), None);
    }

    #[test]
    fn record_round_trips() {
        let r = Record {
            sandbox: "ab12".into(),
            workspace: "/w".into(),
            started_ns: 5,
            profile: "default".into(),
            command: vec!["sh".into()],
            trace: None,
            quota: Some(1 << 20),
            cordon_pid: 1,
            cordon_start: 2,
            ended: Some(0),
            agent_ids: (3, 4),
            owner_ids: (0, 0),
            committed: BTreeMap::from([(PathBuf::from("a/b"), 7)]),
        };
        let text = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<Record>(&text).unwrap(), r);
    }
}
