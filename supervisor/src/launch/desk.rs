//! Questions asked on the person's own terminal (docs/approvals.md). When cordon relays the
//! agent's pty, the approval broker leaves each question here; the supervisor's loop pauses
//! the relay (the agent's output waits in its pty), prints the question on the real terminal,
//! reads one key — `y` approve this once, `a` approve and remember for 10 minutes, `n` (or
//! Ctrl-C) deny — and hands the answer back. A question answered elsewhere first (`cordon
//! approve`, the hook, its timeout) is withdrawn, and the relay resumes.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::{Arc, Mutex, PoisonError};

/// How long `a` remembers an approval.
pub const REMEMBER_MS: u64 = 10 * 60 * 1000;

type Answerer = Box<dyn Fn(u64, bool, u64) + Send>;
/// Request ids with a line of text (the question, or how it was decided).
type Lines = Vec<(u64, String)>;

#[derive(Default)]
struct Inner {
    asked: VecDeque<(u64, String)>,
    withdrawn: Vec<(u64, String)>,
    answer: Option<Answerer>,
}

/// Shared by the broker (which asks and withdraws) and the supervisor's loop (which shows
/// and answers); an eventfd wakes the loop.
pub struct Desk {
    wake: OwnedFd,
    inner: Mutex<Inner>,
}

impl Desk {
    pub fn new() -> io::Result<Arc<Desk>> {
        // SAFETY: eventfd takes no pointers; the result is checked before use.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Arc::new(Desk {
            // SAFETY: `fd` is a fresh descriptor this process owns.
            wake: unsafe { OwnedFd::from_raw_fd(fd) },
            inner: Mutex::new(Inner::default()),
        }))
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn poke(&self) {
        let one = 1u64.to_ne_bytes();
        let _ = nix::unistd::write(self.wake.as_fd(), &one);
    }

    /// Where the loop's answers go: (request id, approve, remember for ms).
    pub fn on_answer(&self, f: impl Fn(u64, bool, u64) + Send + 'static) {
        self.inner().answer = Some(Box::new(f));
    }

    /// Ask `text` (one line, already escaped) as request `id`.
    pub fn ask(&self, id: u64, text: String) {
        self.inner().asked.push_back((id, text));
        self.poke();
    }

    /// Request `id` was decided elsewhere (`how`, in words).
    pub fn withdraw(&self, id: u64, how: String) {
        self.inner().withdrawn.push((id, how));
        self.poke();
    }

    pub(super) fn fd(&self) -> BorrowedFd<'_> {
        self.wake.as_fd()
    }

    /// New questions and withdrawals since the last call.
    pub(super) fn take(&self) -> (Lines, Lines) {
        let mut buf = [0u8; 8];
        let _ = nix::unistd::read(self.wake.as_fd(), &mut buf);
        let mut inner = self.inner();
        let asked = inner.asked.drain(..).collect();
        (asked, std::mem::take(&mut inner.withdrawn))
    }

    pub(super) fn answer(&self, id: u64, approve: bool, remember_ms: u64) {
        if let Some(f) = &self.inner().answer {
            f(id, approve, remember_ms);
        }
    }
}

/// The answer one key gives: (approve, remember for ms); None for any other key.
pub(super) fn key(b: u8) -> Option<(bool, u64)> {
    match b {
        b'y' | b'Y' => Some((true, 0)),
        b'a' | b'A' => Some((true, REMEMBER_MS)),
        // n, or Ctrl-C: a person who wants out does not approve.
        b'n' | b'N' | 0x03 => Some((false, 0)),
        _ => None,
    }
}

/// The prompt for request `id` on the real terminal (raw mode: explicit carriage returns).
pub(super) fn prompt(id: u64, text: &str) -> String {
    format!(
        "\r\n\x1b[1mcordon ASK #{id}\x1b[0m {text}\r\n  [y] approve once  [a] approve, remember 10 min  [n] deny: "
    )
}

/// What the loop shows about the question it is asking, and the ones waiting behind it.
#[derive(Default)]
pub(super) struct Asking {
    pub current: Option<u64>,
    waiting: VecDeque<(u64, String)>,
}

impl Asking {
    /// Take the desk's news; returns the text to write on the terminal.
    pub fn update(&mut self, desk: &Desk) -> String {
        let (asked, withdrawn) = desk.take();
        self.waiting.extend(asked);
        let mut out = String::new();
        for (id, how) in withdrawn {
            self.waiting.retain(|(w, _)| *w != id);
            if self.current == Some(id) {
                self.current = None;
                out.push_str(&format!("\r\n  answered elsewhere: {how}\r\n"));
            }
        }
        out.push_str(&self.next());
        out
    }

    /// A key from the person, while asking: the answer, and what to write.
    pub fn key(&mut self, desk: &Desk, b: u8) -> String {
        let Some(id) = self.current else {
            return String::new();
        };
        let Some((approve, remember)) = key(b) else {
            return String::new();
        };
        self.current = None;
        desk.answer(id, approve, remember);
        let said = match (approve, remember) {
            (true, 0) => "approved\r\n",
            (true, _) => "approved (remembered 10 min)\r\n",
            (false, _) => "denied\r\n",
        };
        format!("{said}{}", self.next())
    }

    fn next(&mut self) -> String {
        if self.current.is_some() {
            return String::new();
        }
        match self.waiting.pop_front() {
            Some((id, text)) => {
                self.current = Some(id);
                prompt(id, &text)
            }
            None => String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_question_at_a_time_keys_answer_it_and_a_withdrawal_moves_on() {
        let desk = Desk::new().unwrap();
        let got = Arc::new(Mutex::new(Vec::new()));
        let g = got.clone();
        desk.on_answer(move |id, ok, ms| g.lock().unwrap().push((id, ok, ms)));
        let mut a = Asking::default();
        desk.ask(1, "first".into());
        desk.ask(2, "second".into());
        let shown = a.update(&desk);
        assert!(shown.contains("#1") && shown.contains("first") && !shown.contains("second"));
        assert_eq!(a.key(&desk, b'x'), "", "other keys do nothing");
        let next = a.key(&desk, b'a');
        assert!(
            next.starts_with("approved (remembered") && next.contains("#2"),
            "{next}"
        );
        desk.withdraw(2, "allowed by uid 0".into());
        let shown = a.update(&desk);
        assert!(shown.contains("answered elsewhere: allowed by uid 0"), "{shown}");
        assert_eq!(a.current, None);
        desk.ask(3, "third".into());
        a.update(&desk);
        assert_eq!(a.key(&desk, 0x03), "denied\r\n");
        assert_eq!(*got.lock().unwrap(), [(1, true, REMEMBER_MS), (3, false, 0)]);
    }
}
