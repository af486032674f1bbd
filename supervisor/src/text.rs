//! Text for a person's terminal. Whatever came from the sandbox (paths, argv, comm, file
//! contents, and the summaries built from them) is attacker-chosen: printed raw, a carriage
//! return or `ESC[2K` erases cordon's own words, a newline forges a line of its own, `ESC[8m`
//! hides what follows, a bidi override reorders it. Every such character is shown as `\xNN`
//! (bytes below 0x80 and bytes that are not UTF-8) or `\u{N}` (C1 controls, invisible and
//! reordering characters), and `\` itself as `\\`, so the rendering cannot be mistaken for
//! what it escapes.
//!
//! Escape where text for a person is produced (a stderr line, the text rendering of an event),
//! never where data is recorded: events, the trace and JSON keep the exact strings.

use std::borrow::Cow;

/// `s` as it may be printed: borrowed when nothing in it needs escaping.
pub fn escape(s: &str) -> Cow<'_, str> {
    if !s.chars().any(needs_escape) {
        return Cow::Borrowed(s);
    }
    Cow::Owned(cut(s.as_bytes(), usize::MAX))
}

/// `bytes` as they may be printed (invalid UTF-8 as `\xNN`).
pub fn escape_bytes(bytes: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(s) => escape(s),
        Err(_) => Cow::Owned(cut(bytes, usize::MAX)),
    }
}

/// At most `max` characters of `bytes`, escaped (the escapes count, so a preview of control
/// bytes is shorter in content but never longer on screen); `…` marks a cut.
pub fn preview(bytes: &[u8], max: usize) -> String {
    cut(bytes, max)
}

/// One line of cordon's own on stderr, `cordon: ` first, escaped: a message may quote a path,
/// a command or an error that carries sandbox-controlled text.
pub fn eprint(line: &str) {
    // One write: stderr is unbuffered and `eprintln!` writes each piece on its own, so the
    // agent's output (the same terminal or pipe) could land between "cordon: " and the rest.
    use std::io::Write as _;
    let text = format!("cordon: {}\n", escape(line));
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}

fn cut(bytes: &[u8], max: usize) -> String {
    let mut out = String::new();
    let mut shown = 0usize;
    let mut tokens = Tokens { rest: bytes };
    while let Some(tok) = tokens.next_token() {
        let n = tok.chars().count();
        // Room for the token and, if more follows, the cut mark.
        let more = !tokens.rest.is_empty();
        if shown + n > max || (more && shown + n >= max) {
            out.push('…');
            break;
        }
        out.push_str(&tok);
        shown += n;
    }
    out
}

/// Splits bytes into display tokens: one printable char, or one escape.
struct Tokens<'a> {
    rest: &'a [u8],
}

impl<'a> Tokens<'a> {
    fn next_token(&mut self) -> Option<Cow<'a, str>> {
        let first = *self.rest.first()?;
        // One char if the next bytes decode as one, else one invalid byte.
        let len = utf8_len(first);
        let (tok, len) = match self.rest.get(..len).and_then(|s| std::str::from_utf8(s).ok()) {
            Some("\\") => (Cow::Borrowed("\\\\"), 1),
            Some(s) => match s.chars().next() {
                Some(c) if hidden(c) && c.is_ascii() => (Cow::Owned(format!("\\x{first:02x}")), len),
                Some(c) if hidden(c) => (Cow::Owned(format!("\\u{{{:x}}}", u32::from(c))), len),
                _ => (Cow::Borrowed(s), len),
            },
            None => (Cow::Owned(format!("\\x{first:02x}")), 1),
        };
        self.rest = &self.rest[len..];
        Some(tok)
    }
}

fn utf8_len(first: u8) -> usize {
    match first {
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xf7 => 4,
        _ => 1,
    }
}

fn needs_escape(c: char) -> bool {
    c == '\\' || hidden(c)
}

/// Characters that are invisible or change how the rest of the line is shown: C0, DEL and
/// C1 controls, soft hyphen, bidi marks and overrides, zero-width and separator characters.
fn hidden(c: char) -> bool {
    c.is_control()
        || matches!(u32::from(c),
            0xad | 0x61c | 0x180e | 0x200b..=0x200f | 0x2028..=0x202e | 0x2060..=0x206f
            | 0xfeff | 0xfff9..=0xfffb)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_bytes_are_escaped_and_backslash_doubled() {
        assert_eq!(escape_bytes(b"a\x1b[31mb\\\n"), "a\\x1b[31mb\\\\\\x0a");
        assert_eq!(escape_bytes(b"\xff\xfe"), "\\xff\\xfe");
        assert_eq!(escape("é\u{202e}x\u{85}"), "é\\u{202e}x\\u{85}");
        assert_eq!(escape("\r\x07\u{9b}2J\t\x7f"), "\\x0d\\x07\\u{9b}2J\\x09\\x7f");
    }

    #[test]
    fn plain_text_is_borrowed() {
        assert!(matches!(escape("/ws/a b/ü → ok"), Cow::Borrowed(_)));
        assert!(matches!(escape_bytes(b"/ws/file"), Cow::Borrowed(_)));
        assert!(matches!(escape("a\\b"), Cow::Owned(_)));
    }

    #[test]
    fn a_stray_continuation_byte_is_not_a_c1_control_inside_a_character() {
        // "ě" is c4 9b: its second byte is the 8-bit CSI only when it stands alone.
        assert_eq!(escape_bytes("ě".as_bytes()), "ě");
        assert_eq!(escape_bytes(b"\x9b31m"), "\\x9b31m");
    }

    #[test]
    fn preview_is_at_most_max_chars_with_a_cut_mark() {
        let p = preview(&[b'x'; 500], 120);
        assert_eq!(p.chars().count(), 120);
        assert!(p.ends_with('…'));
        let p = preview(&[0x01; 100], 120);
        assert!(p.chars().count() <= 120 && p.ends_with('…'), "{p}");
        assert_eq!(preview(&[b'y'; 120], 120), "y".repeat(120));
    }
}

/// Lowercase hexadecimal of `b`.
pub fn hex(b: &[u8]) -> String {
    use std::fmt::Write;
    b.iter().fold(String::with_capacity(b.len() * 2), |mut s, x| {
        let _ = write!(s, "{x:02x}");
        s
    })
}

/// Why something was refused or failed, in words for a person (no other structure to it):
/// the error of steps whose every failure is a sentence.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refusal(pub String);

impl From<String> for Refusal {
    fn from(s: String) -> Self {
        Refusal(s)
    }
}

impl From<&str> for Refusal {
    fn from(s: &str) -> Self {
        Refusal(s.into())
    }
}

/// `CORDON_TIMES=1`: one line on stderr per step of a run, with the milliseconds since the
/// first step (to see where a launch's time goes; `benches/compare.sh` times the whole).
pub fn milestone(what: &str) {
    use std::sync::OnceLock;
    use std::time::Instant;
    static START: OnceLock<Option<Instant>> = OnceLock::new();
    let start = START.get_or_init(|| std::env::var_os("CORDON_TIMES").map(|_| Instant::now()));
    if let Some(t0) = start {
        // The monotonic clock too: a harness can place the binary's own start and exit.
        let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
            .unwrap_or(nix::sys::time::TimeSpec::new(0, 0));
        eprint(&format!(
            "time {:>8.2} ms  {what} @{}.{:09}",
            t0.elapsed().as_secs_f64() * 1e3,
            now.tv_sec(),
            now.tv_nsec()
        ));
    }
}
