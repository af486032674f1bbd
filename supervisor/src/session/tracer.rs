//! The trace writer, on its own thread. The pipeline hands it every event batch through a
//! bounded queue before anything else sees the batch: the trace never lags and never loses an
//! event (a full queue makes the pipeline wait; the ring buffer absorbs the agent meanwhile).
//! Slow disks and fsyncs stay off the pipeline's thread.

use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::fuse::{injected, Fuse};
use crate::events::pb;
use crate::trace::record::{Recording, TraceOutcome};

/// Batches queued for the writer.
const QUEUE: usize = 256;
/// Summaries and checkpoints fall due on this tick.
const TICK: Duration = Duration::from_millis(5);
/// How long the writer waits for events when nothing is due (an idle sandbox's writer does
/// not wake 200 times a second).
const QUIET_WAIT: Duration = Duration::from_secs(1);

pub enum Msg {
    Events(Vec<Arc<pb::Event>>),
    /// The run is over: seal with this exit status and these notes.
    Seal(i32, String),
}

pub struct Tracer {
    tx: Option<SyncSender<Msg>>,
    thread: Option<std::thread::JoinHandle<Option<TraceOutcome>>>,
    path: std::path::PathBuf,
}

impl Tracer {
    pub fn start(rec: Recording, fuse: Arc<Fuse>) -> std::io::Result<Tracer> {
        let (tx, rx) = sync_channel(QUEUE);
        let path = rec.path().to_path_buf();
        let thread = std::thread::Builder::new()
            .name("cordon-trace".into())
            .spawn(move || {
                super::favour_this_recorder();
                fuse.guard("trace writer", move || write(rec, rx))
            })?;
        Ok(Tracer {
            tx: Some(tx),
            thread: Some(thread),
            path,
        })
    }

    pub fn sender(&self) -> SyncSender<Msg> {
        self.tx.clone().expect("the tracer is running")
    }

    /// Wait for the writer to end. `seal`: the session seals (the pipeline could not).
    pub fn finish(mut self, seal: Option<(i32, String)>) -> TraceOutcome {
        if let (Some(tx), Some((code, notes))) = (self.tx.take(), seal) {
            let _ = tx.send(Msg::Seal(code, notes));
        }
        self.tx = None;
        let done = self.thread.take().and_then(|t| t.join().ok()).flatten();
        done.unwrap_or_else(|| TraceOutcome {
            path: self.path.clone(),
            error: Some("the trace writer failed: the events after its failure are not in the trace, which was sealed where it stopped, saying so".into()),
        })
    }
}

/// A trace that cannot be written freezes and kills the sandbox itself (`Recording`).
fn write(mut rec: Recording, rx: Receiver<Msg>) -> TraceOutcome {
    let mut last_tick = Instant::now();
    let mut batches = 0u64;
    let (code, notes) = loop {
        let wait = if rec.quiet() { QUIET_WAIT } else { TICK };
        match rx.recv_timeout(wait) {
            Ok(Msg::Events(batch)) => {
                rec.record(batch.iter().map(|e| &**e));
                batches += 1;
                if batches == 2 && injected("trace writer") {
                    panic!("fault injected for a test");
                }
            }
            Ok(Msg::Seal(code, notes)) => break (code, notes),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                break (-1, "cordon's pipeline ended without an exit status".into())
            }
        }
        if last_tick.elapsed() >= TICK {
            rec.tick();
            last_tick = Instant::now();
        }
    };
    rec.finish(code, notes)
}
