//! Questions asked on the person's own terminal (docs/approvals.md). When cordon relays the
//! agent's pty, the approval broker leaves each question here; the supervisor's loop pauses
//! the relay (the agent's output waits in its pty), prints the question on the real terminal,
//! reads the answer — `y` approve this once, `a` approve and remember for 10 minutes, `n`
//! deny, each followed by Enter; Ctrl-C denies at once — and hands it back. A question
//! answered elsewhere first (`cordon approve`, the hook, its timeout) is withdrawn, and the
//! relay resumes.
//!
//! Only a person's typing answers: the agent can make the terminal send bytes (replies to
//! queries, mouse reports, which end in letters like `y`), so escape sequences are dropped
//! whole, input in the first `GUARD` after the question appears is thrown away, and a key
//! counts only when Enter follows it.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::{Arc, Mutex, PoisonError};

/// How long `a` remembers an approval.
pub const REMEMBER_MS: u64 = 10 * 60 * 1000;
/// Input this soon after a question appears is thrown away (replies the agent provoked).
const GUARD: std::time::Duration = std::time::Duration::from_millis(300);

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

/// The answer a typed key gives: (approve, remember for ms); None for any other key.
pub(super) fn key(b: u8) -> Option<(bool, u64)> {
    match b {
        b'y' | b'Y' => Some((true, 0)),
        b'a' | b'A' => Some((true, REMEMBER_MS)),
        b'n' | b'N' => Some((false, 0)),
        _ => None,
    }
}

/// The prompt for request `id` on the real terminal (raw mode: explicit carriage returns).
pub(super) fn prompt(id: u64, text: &str) -> String {
    format!(
        "\r\n\x1b[1mcordon ASK #{id}\x1b[0m {text}\r\n  [y] approve once  [a] approve, remember 10 min  [n] deny — then Enter: "
    )
}

/// Where the reader is in an escape sequence.
#[derive(Default, Clone, Copy, PartialEq, Eq)]
enum Esc {
    #[default]
    None,
    /// After ESC.
    Start,
    /// In a CSI (`ESC [`) or SS3 (`ESC O`) sequence, up to its final byte.
    Csi,
    /// In a string (`ESC ]`, `ESC P`, …) up to BEL or ST.
    Str,
    /// The three raw bytes of an X10 mouse report (`ESC [ M b x y`).
    Mouse(u8),
}

/// What the loop shows about the question it is asking, and the ones waiting behind it.
#[derive(Default)]
pub(super) struct Asking {
    pub current: Option<u64>,
    waiting: VecDeque<(u64, String)>,
    /// When the current question appeared.
    shown: Option<std::time::Instant>,
    /// The key typed so far (Enter confirms it).
    typed: Option<u8>,
    esc: Esc,
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

    /// A byte from the terminal, while asking: what to write back (an answer, once given).
    pub fn key(&mut self, desk: &Desk, b: u8) -> String {
        let Some(id) = self.current else {
            return String::new();
        };
        // Escape sequences are dropped whole, final byte included: a terminal's reply or a
        // mouse report is not a person typing.
        let in_sequence = self.esc != Esc::None || b == 0x1b;
        self.esc = match (self.esc, b) {
            (Esc::None, 0x1b) => Esc::Start,
            (Esc::None, _) => Esc::None,
            (Esc::Start, b'[' | b'O') => Esc::Csi,
            (Esc::Start, b']' | b'P' | b'_' | b'^' | b'X') => Esc::Str,
            (Esc::Start, _) => Esc::None,
            (Esc::Csi, b'M') => Esc::Mouse(3),
            (Esc::Csi, 0x40..=0x7e) => Esc::None,
            (Esc::Csi, _) => Esc::Csi,
            (Esc::Str, 0x07) => Esc::None,
            (Esc::Str, 0x1b) => Esc::Start,
            (Esc::Str, _) => Esc::Str,
            (Esc::Mouse(1), _) => Esc::None,
            (Esc::Mouse(n), _) => Esc::Mouse(n - 1),
        };
        if in_sequence {
            return String::new();
        }
        if self.shown.is_some_and(|t| t.elapsed() < GUARD) {
            return String::new();
        }
        let (approve, remember) = match b {
            // Ctrl-C: a person who wants out does not approve.
            0x03 => (false, 0),
            b'\r' | b'\n' => match self.typed.and_then(key) {
                Some(answer) => answer,
                None => return String::new(),
            },
            0x7f | 0x08 => {
                self.typed = None;
                return "\x08 \x08".into();
            }
            _ if key(b).is_some() => {
                let echo = if self.typed.is_some() { "\x08" } else { "" };
                self.typed = Some(b);
                return format!("{echo}{}", char::from(b));
            }
            _ => return String::new(),
        };
        self.current = None;
        self.typed = None;
        desk.answer(id, approve, remember);
        let said = match (approve, remember) {
            (true, 0) => "\r\n  approved\r\n",
            (true, _) => "\r\n  approved (remembered 10 min)\r\n",
            (false, _) => "\r\n  denied\r\n",
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
                self.shown = Some(std::time::Instant::now());
                self.typed = None;
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
        let typed =
            |a: &mut Asking, bytes: &[u8]| -> String { bytes.iter().map(|&b| a.key(&desk, b)).collect() };
        desk.ask(1, "first".into());
        desk.ask(2, "second".into());
        let shown = a.update(&desk);
        assert!(shown.contains("#1") && shown.contains("first") && !shown.contains("second"));
        // Right after the question appears, input is thrown away.
        assert_eq!(typed(&mut a, b"y\r"), "");
        a.shown = Some(std::time::Instant::now() - GUARD);
        // A terminal reply ending in `y`, a mouse report of `a`, an arrow key: nothing.
        assert_eq!(
            typed(&mut a, b"\x1b[?2026;2$y\r\x1b[M a \r\x1bOA\r\x1b]52;c;eQ==\x07\r"),
            ""
        );
        assert_eq!(a.current, Some(1));
        assert_eq!(typed(&mut a, b"x\r"), "", "other keys do nothing");
        // A key alone does not answer; Enter after it does.
        assert_eq!(typed(&mut a, b"a"), "a");
        let next = typed(&mut a, b"\r");
        assert!(
            next.contains("approved (remembered") && next.contains("#2"),
            "{next}"
        );
        desk.withdraw(2, "allowed by uid 0".into());
        let shown = a.update(&desk);
        assert!(shown.contains("answered elsewhere: allowed by uid 0"), "{shown}");
        assert_eq!(a.current, None);
        desk.ask(3, "third".into());
        a.update(&desk);
        a.shown = Some(std::time::Instant::now() - GUARD);
        assert!(typed(&mut a, b"\x03").contains("denied"));
        assert_eq!(*got.lock().unwrap(), [(1, true, REMEMBER_MS), (3, false, 0)]);
    }
}
