//! `--events FILE|-`: the run's events as JSON lines, written on their own thread. The writer
//! reads the bus like any consumer: if it cannot keep up (a pipe nobody reads, a slow disk)
//! it falls behind and loses events, counted and reported as `Loss` events and at the end of
//! the run — it never delays the monitor or the trace.

use std::io::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::broadcast;

use crate::events::pb;

/// How long the end of a run waits for the writer to deliver what it still holds.
const DRAIN: Duration = Duration::from_secs(2);

/// Where `--events` goes.
pub enum Output {
    Stdout,
    File(std::fs::File),
}

impl Output {
    pub fn open(spec: &str) -> std::io::Result<Self> {
        if spec == "-" {
            return Ok(Self::Stdout);
        }
        std::fs::File::create(spec).map(Self::File)
    }

    fn into_writer(self) -> Box<dyn std::io::Write + Send> {
        match self {
            Self::Stdout => Box::new(std::io::BufWriter::new(std::io::stdout())),
            Self::File(f) => Box::new(std::io::BufWriter::new(f)),
        }
    }
}

/// `--no-probes` with `--events`: the one event is the whole stream.
pub fn write_one(e: &pb::Event, out: Output) -> std::io::Result<()> {
    let mut w = out.into_writer();
    writeln!(w, "{}", crate::events::json(e))?;
    w.flush()
}

pub struct Writer {
    done: std::sync::mpsc::Receiver<u64>,
}

impl Writer {
    /// Start writing what `rx` (subscribed before the first event) carries.
    pub fn start(
        rx: broadcast::Receiver<Arc<pb::Event>>,
        sandbox: String,
        out: Output,
    ) -> std::io::Result<Writer> {
        let (tx, done) = std::sync::mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name("cordon-events-out".into())
            .spawn(move || {
                let lost = write_lines(rx, &sandbox, out);
                let _ = tx.send(lost);
            })?;
        Ok(Writer { done })
    }

    /// The bus is closed: wait (bounded) for the writer to finish. Returns the events it
    /// lost, or None if it is still blocked on its output (those it still held are lost; the
    /// thread ends with cordon).
    pub fn finish(self) -> Option<u64> {
        let deadline = Instant::now() + DRAIN;
        self.done
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .ok()
    }
}

fn write_lines(mut rx: broadcast::Receiver<Arc<pb::Event>>, sandbox: &str, out: Output) -> u64 {
    let mut lost = 0;
    let mut buf = out.into_writer();
    loop {
        let e = match rx.blocking_recv() {
            Ok(e) => e,
            Err(broadcast::error::RecvError::Lagged(n)) => {
                lost += n;
                Arc::new(crate::events::loss_event(sandbox, "stream", n, lost))
            }
            Err(broadcast::error::RecvError::Closed) => break,
        };
        if writeln!(buf, "{}", crate::events::json(&e)).is_err() {
            // The reader went away: keep draining (and counting) so the bus is not held.
            continue;
        }
        if rx.is_empty() {
            let _ = buf.flush();
        }
    }
    let _ = buf.flush();
    lost
}
