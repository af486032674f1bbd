//! Appending to a trace: `Chain` builds frames in memory (hash chain, checkpoints, seal);
//! `TraceFile` owns the append-only file they go to and its durability policy.
//!
//! Durability (group commit): records are encoded into a buffer as events arrive, written to
//! the file on every drain of the event pipeline (at least every 10 ms), `fdatasync`ed at most
//! once per `SYNC_MS` when something was written, and the seal is followed by `fsync` of the
//! file and of its directory. A machine that loses power loses at most the last `SYNC_MS` of
//! records; a killed cordon loses only what it had not yet written (≤ 10 ms).

use std::fs::File;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use prost::Message as _;

use super::pb::{self, record::Body};
use super::{hash, Hash, FORMAT_VERSION, MAGIC};
use crate::events::pb as ev;

/// A checkpoint every this many records…
pub const CHECKPOINT_RECORDS: u32 = 4096;
/// …or this long after the first record it would cover, whichever comes first.
pub const CHECKPOINT_MS: u32 = 1000;
/// Written records reach the disk (`fdatasync`) at most this long after they were written.
pub const SYNC_MS: u64 = 1000;
pub const DURABILITY: &str = "the header is written before the agent starts and fdatasynced \
    with the first records (off the launch path); records are written to the file at least every \
    10 ms; fdatasync at most once per second when something was written (the first one fsyncs the \
    directory too); the seal is fsynced";

#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("cannot create the trace {path}: {source}")]
    Create { path: PathBuf, source: std::io::Error },
    #[error("cannot write the trace {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
}

fn mono_ns() -> u64 {
    // CLOCK_MONOTONIC, the clock the kernel's events are stamped with; it cannot fail.
    let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .unwrap_or(nix::sys::time::TimeSpec::new(0, 0));
    u64::try_from(ts.tv_sec()).unwrap_or(0) * 1_000_000_000 + u64::try_from(ts.tv_nsec()).unwrap_or(0)
}

/// The records of one trace, as frames in a buffer the caller drains with `take`.
pub struct Chain {
    key: SigningKey,
    sandbox: String,
    buf: Vec<u8>,
    next_seq: u64,
    prev: Hash,
    since_checkpoint: u32,
    first_uncovered: Option<Instant>,
    pub events: u64,
    pub kernel_drops: u64,
    /// Events summarised in `ReadSummary` records.
    pub summarised: u64,
    last_head: Option<pb::Checkpoint>,
}

impl Chain {
    /// A chain that starts with the magic and `header` (record 0), stamped with the format
    /// version this writer writes.
    pub fn new(key: SigningKey, header: &pb::Header) -> Chain {
        let mut c = Chain {
            key,
            sandbox: header.sandbox.clone(),
            buf: MAGIC.to_vec(),
            next_seq: 0,
            prev: [0; 32],
            since_checkpoint: 0,
            first_uncovered: None,
            events: 0,
            kernel_drops: 0,
            summarised: 0,
            last_head: None,
        };
        c.push(Body::Header(pb::Header {
            format_version: FORMAT_VERSION,
            ..header.clone()
        }));
        c
    }

    /// Append the next record, with `body`, as a frame in `buf`.
    fn push(&mut self, body: Body) {
        let record = pb::Record {
            seq: self.next_seq,
            wall_ns: crate::events::unix_now_ns(),
            mono_ns: mono_ns(),
            prev: self.prev.to_vec(),
            body: Some(body),
        };
        let start = self.buf.len();
        self.buf.extend_from_slice(&[0; 8]);
        // A Vec grows as needed: encoding into it cannot run out of room.
        record.encode(&mut self.buf).expect("encoding into a Vec");
        let payload = &self.buf[start + 8..];
        let len = u32::try_from(payload.len()).expect("a record under 4 GiB");
        let h = hash(payload);
        self.buf[start..start + 4].copy_from_slice(&len.to_le_bytes());
        self.buf[start + 4..start + 8].copy_from_slice(&(!len).to_le_bytes());
        self.buf.extend_from_slice(&h);
        self.prev = h;
        self.next_seq += 1;
        self.since_checkpoint += 1;
        self.first_uncovered.get_or_insert_with(Instant::now);
    }

    /// Append an event; a checkpoint follows when `CHECKPOINT_RECORDS` are uncovered.
    pub fn event(&mut self, e: &ev::Event) {
        if let Some(ev::event::Kind::Loss(l)) = &e.kind {
            if l.source == "kernel" {
                self.kernel_drops = self.kernel_drops.max(l.total);
            }
        }
        self.push(Body::Event(e.clone()));
        self.events += 1;
        if self.since_checkpoint >= CHECKPOINT_RECORDS {
            self.checkpoint();
        }
    }

    /// Append a summary of routine reads (see `record::Reads`).
    pub fn reads(&mut self, r: pb::ReadSummary) {
        self.summarised += r.seqs.len() as u64;
        self.push(Body::Reads(r));
        if self.since_checkpoint >= CHECKPOINT_RECORDS {
            self.checkpoint();
        }
    }

    /// A checkpoint if records have waited `CHECKPOINT_MS` for one.
    pub fn tick(&mut self) {
        if self
            .first_uncovered
            .is_some_and(|t| t.elapsed() >= Duration::from_millis(CHECKPOINT_MS.into()))
        {
            self.checkpoint();
        }
    }

    /// Sign the head (the last record and its hash) into a checkpoint record.
    pub fn checkpoint(&mut self) {
        let mut c = pb::Checkpoint {
            sandbox: self.sandbox.clone(),
            seq: self.next_seq - 1,
            chain: self.prev.to_vec(),
            signature: Vec::new(),
        };
        super::sign_head(&self.key, &mut c);
        self.push(Body::Checkpoint(c.clone()));
        self.last_head = Some(c);
        self.since_checkpoint = 0;
        self.first_uncovered = None;
    }

    /// The last records: a checkpoint (so the latest head covers every event), then the
    /// seal with the exit status and totals, signed.
    pub fn seal(&mut self, exit_code: i32, detail: String) {
        self.checkpoint();
        let mut s = pb::Seal {
            sandbox: self.sandbox.clone(),
            seq: self.next_seq - 1,
            chain: self.prev.to_vec(),
            exit_code,
            records: self.next_seq,
            events: self.events,
            kernel_drops: self.kernel_drops,
            summarised: self.summarised,
            detail,
            signature: Vec::new(),
        };
        super::sign_seal(&self.key, &mut s);
        self.push(Body::Seal(s));
    }

    /// The frames built since the last call.
    pub fn pending(&self) -> &[u8] {
        &self.buf
    }

    pub fn clear(&mut self) {
        self.buf.clear();
    }

    pub fn records(&self) -> u64 {
        self.next_seq
    }

    /// The latest signed head, for `cordon trace head`.
    pub fn last_head(&self) -> Option<&pb::Checkpoint> {
        self.last_head.as_ref()
    }
}

/// The append-only inode flag (linux/fs.h).
const FS_APPEND_FL: libc::c_long = 0x20;

/// Set the kernel's append-only attribute: even root must clear it (`chattr -a`) before the
/// file can be truncated, rewritten or removed.
fn set_append_only(f: &File) -> Result<(), std::io::Error> {
    crate::sys::add_inode_flags(f, FS_APPEND_FL)
}

/// An open trace file: created new (never over an existing file), opened O_APPEND and marked
/// append-only where the filesystem allows.
pub struct TraceFile {
    pub path: PathBuf,
    file: File,
    pub chain: Chain,
    last_sync: Instant,
    unsynced: bool,
    /// The directory holding the file's name was fsynced (with the first records): the seal
    /// then fsyncs the file alone.
    dir_synced: bool,
    /// Sealed, or abandoned after a write failed: nothing more is written.
    done: bool,
}

impl TraceFile {
    /// Create `path` (its directory too, root-only, when it is the default one), mark it
    /// append-only, and write the header. `header` gets the append-only outcome filled in.
    pub fn create(path: &Path, key: SigningKey, mut header: pb::Header) -> Result<TraceFile, TraceError> {
        let err = |source| TraceError::Create {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(err)?;
        }
        let file = std::fs::OpenOptions::new()
            .append(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC)
            .open(path)
            .map_err(err)?;
        match set_append_only(&file) {
            Ok(()) => {
                header.append_only = true;
                header.append_only_detail = "FS_APPEND_FL set".into();
            }
            Err(e) => {
                header.append_only = false;
                header.append_only_detail = format!("the filesystem refused FS_APPEND_FL: {e}");
            }
        }
        header.checkpoint_records = CHECKPOINT_RECORDS;
        header.checkpoint_ms = CHECKPOINT_MS;
        header.durability = DURABILITY.into();
        let mut t = TraceFile {
            path: path.to_path_buf(),
            file,
            chain: Chain::new(key, &header),
            last_sync: Instant::now(),
            unsynced: false,
            dir_synced: false,
            done: false,
        };
        // The header is written before the agent runs: a trace that cannot start stops the run.
        // Its fdatasync is due at once but left to the first write after this one — the trace
        // writer's, on its own thread while the agent starts (it protects the first records
        // against a host crash, as every later sync does; a failure there stops the run like
        // any later one).
        if let Err(e) = t.write_io() {
            t.abandon();
            return Err(err(e));
        }
        t.last_sync = Instant::now()
            .checked_sub(Duration::from_millis(SYNC_MS))
            .unwrap_or(t.last_sync);
        Ok(t)
    }

    /// Nothing waits to be written, synced or covered by a checkpoint.
    pub fn quiet(&self) -> bool {
        self.done
            || (self.chain.pending().is_empty() && !self.unsynced && self.chain.first_uncovered.is_none())
    }

    /// Write what the chain holds (group commit), and fdatasync when `SYNC_MS` have passed.
    pub fn write(&mut self) -> Result<(), TraceError> {
        self.write_io().map_err(|source| TraceError::Write {
            path: self.path.clone(),
            source,
        })
    }

    fn write_io(&mut self) -> std::io::Result<()> {
        if !self.chain.pending().is_empty() {
            self.file.write_all(self.chain.pending())?;
            self.chain.clear();
            self.unsynced = true;
        }
        if self.unsynced && self.last_sync.elapsed() >= Duration::from_millis(SYNC_MS) {
            self.sync()?;
        }
        Ok(())
    }

    fn sync(&mut self) -> std::io::Result<()> {
        self.file.sync_data()?;
        // The first sync (the header's, on the writer's thread while the agent runs) makes the
        // file's name durable too: the seal, on the path to cordon's exit, fsyncs the file only.
        if !self.dir_synced {
            self.sync_dir()?;
        }
        self.last_sync = Instant::now();
        self.unsynced = false;
        Ok(())
    }

    fn sync_dir(&mut self) -> std::io::Result<()> {
        if let Some(d) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            File::open(d)?.sync_all()?;
        }
        self.dir_synced = true;
        Ok(())
    }

    /// Seal, write, and make it durable with the directory entry.
    pub fn seal(mut self, exit_code: i32, detail: String) -> Result<PathBuf, TraceError> {
        self.seal_io(exit_code, detail)?;
        Ok(self.path.clone())
    }

    fn seal_io(&mut self, exit_code: i32, detail: String) -> Result<(), TraceError> {
        self.done = true;
        self.chain.seal(exit_code, detail);
        self.write()?;
        let synced = self.file.sync_all().and_then(|()| match self.dir_synced {
            true => Ok(()),
            false => self.sync_dir(),
        });
        synced.map_err(|source| TraceError::Write {
            path: self.path.clone(),
            source,
        })
    }

    /// Stop writing after a failure: appending after a partial write would corrupt what is
    /// already there. The file keeps every complete record; readers report the torn tail.
    pub fn abandon(mut self) {
        self.done = true;
    }
}

/// A trace nobody sealed (the sandbox could not be built after the trace was started, or
/// the pipeline ended abnormally) is sealed here, saying so, rather than left looking like a
/// crash.
impl Drop for TraceFile {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.seal_io(
                crate::exit::CORDON_ERROR,
                "cordon stopped before the run ended normally: the sandbox was not built, or the event pipeline failed (see cordon's error message)".into(),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_carry_their_length_its_complement_and_their_hash() {
        let header = pb::Header {
            sandbox: "s".into(),
            ..Default::default()
        };
        let mut c = Chain::new(SigningKey::from_bytes(&[3; 32]), &header);
        c.event(&ev::Event {
            seq: 1,
            ..Default::default()
        });
        let b = c.pending().to_vec();
        assert_eq!(&b[..16], MAGIC);
        let len32 = u32::from_le_bytes(b[16..20].try_into().unwrap());
        assert_eq!(u32::from_le_bytes(b[20..24].try_into().unwrap()), !len32);
        let len = len32 as usize;
        let payload = &b[24..24 + len];
        assert_eq!(&b[24 + len..24 + len + 32], &hash(payload));
        let second = 24 + len + 32;
        let len2 = u32::from_le_bytes(b[second..second + 4].try_into().unwrap()) as usize;
        let r: pb::Record = prost::Message::decode(&b[second + 8..second + 8 + len2]).unwrap();
        assert_eq!(r.seq, 1);
        assert_eq!(r.prev, hash(payload).to_vec());
        assert_eq!(c.records(), 2);
    }

    #[test]
    fn a_checkpoint_follows_every_n_records() {
        let mut c = Chain::new(SigningKey::from_bytes(&[3; 32]), &pb::Header::default());
        for _ in 0..CHECKPOINT_RECORDS {
            c.event(&ev::Event::default());
        }
        // header + N-1 events reach N records; the checkpoint is record N.
        let head = c.last_head().expect("a checkpoint");
        assert_eq!(head.seq, u64::from(CHECKPOINT_RECORDS) - 1);
        assert_eq!(c.records(), u64::from(CHECKPOINT_RECORDS) + 2);
    }
}
