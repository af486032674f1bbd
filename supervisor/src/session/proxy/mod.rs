//! The egress proxy of a `network.mode = "proxy"` sandbox (docs/network.md).

pub mod ask;
pub mod dlp;
pub mod dns;
pub mod firewall;
pub mod gateway;
pub mod intercept;
mod relay;
pub mod rules;
pub mod server;
pub mod sniff;
pub mod tls;

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::Fuse;
use crate::events::pb::event::Kind;
use crate::policy::NetworkPolicy;
pub use server::{sockets_in, Change, Sockets};

/// The running proxy: its thread and runtime, and the way to change its rules.
pub struct Proxy {
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    changes: mpsc::Sender<Change>,
}

impl Proxy {
    /// Serve `sockets` on a thread of its own; events go to the returned receiver.
    pub fn start(
        sockets: Sockets,
        net: &NetworkPolicy,
        firewall: Option<Arc<firewall::Firewall>>,
        (events, approvals): (mpsc::Sender<Kind>, Arc<super::approvals::Approvals>),
        fuse: Arc<Fuse>,
    ) -> std::io::Result<Proxy> {
        let (changes, changes_rx) = mpsc::channel(16);
        let (stop, stopped) = oneshot::channel();
        let rules = rules::Rules::new(net);
        // One thread: the bytes are moved by the kernel (splice), and a runtime with workers
        // costs launch time every sandbox pays.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let thread = std::thread::Builder::new()
            .name("cordon-proxy".into())
            .spawn(move || {
                fuse.clone().guard("egress proxy", move || {
                    if let Err(e) = rt.block_on(server::serve(
                        sockets,
                        rules,
                        firewall,
                        (events, approvals),
                        changes_rx,
                        stopped,
                    )) {
                        fuse.blow("egress proxy", &e.to_string());
                    }
                });
            })?;
        Ok(Proxy {
            stop: Some(stop),
            thread: Some(thread),
            changes,
        })
    }

    /// Where `cordon net allow|deny` sends its changes.
    pub fn changes(&self) -> mpsc::Sender<Change> {
        self.changes.clone()
    }

    /// Stop serving; connections still open are cut (the agent is gone).
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.halt();
    }
}
