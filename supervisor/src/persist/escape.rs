//! Rendering attacker-chosen bytes (file names, config values) for a terminal: a finding is
//! printed to the person who must act on it, so nothing in it may move their cursor, recolour
//! the screen or reorder text (bidi overrides). Every such byte is shown as `\xNN` or `\u{N}`.

use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// The longest `value_preview`, in characters (the escapes count, so a preview of control
/// bytes is shorter in content but never longer on screen).
pub(crate) const PREVIEW_MAX: usize = 120;

/// At most [`PREVIEW_MAX`] characters of `bytes`, escaped; `…` marks a cut.
pub(crate) fn preview(bytes: &[u8]) -> String {
    escape(bytes, PREVIEW_MAX)
}

/// All of `bytes`, escaped (for keys, whose length the config parser already bounds).
pub(crate) fn render(bytes: &[u8]) -> String {
    escape(bytes, usize::MAX)
}

fn escape(bytes: &[u8], max: usize) -> String {
    let mut out = String::new();
    let mut shown = 0usize;
    let mut tokens = Tokens::new(bytes);
    while let Some(tok) = tokens.next_token() {
        let n = tok.chars().count();
        // Room for the token and, if more follows, the cut mark.
        let more = !tokens.done();
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
    fn new(bytes: &'a [u8]) -> Self {
        Tokens { rest: bytes }
    }

    fn done(&self) -> bool {
        self.rest.is_empty()
    }

    fn next_token(&mut self) -> Option<String> {
        let first = *self.rest.first()?;
        if first < 0x80 {
            self.rest = &self.rest[1..];
            return Some(match first {
                b'\\' => "\\\\".to_string(),
                0x20..=0x7e => char::from(first).to_string(),
                _ => format!("\\x{first:02x}"),
            });
        }
        // A multi-byte char if the next bytes decode as one, else one invalid byte.
        let len = utf8_len(first);
        if let Some(c) = self
            .rest
            .get(..len)
            .and_then(|s| std::str::from_utf8(s).ok())
            .and_then(|s| s.chars().next())
        {
            self.rest = &self.rest[len..];
            return Some(if hidden(c) {
                format!("\\u{{{:x}}}", u32::from(c))
            } else {
                c.to_string()
            });
        }
        self.rest = &self.rest[1..];
        Some(format!("\\x{first:02x}"))
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

/// Characters that are invisible or change how the rest of the line is shown.
fn hidden(c: char) -> bool {
    c.is_control()
        || matches!(u32::from(c),
            0xad | 0x61c | 0x180e | 0x200b..=0x200f | 0x2028..=0x202e | 0x2060..=0x206f
            | 0xfeff | 0xfff9..=0xfffb)
}

/// `path` quoted for a POSIX shell: `'…'` when every byte is printable ASCII, else bash's
/// `$'…'` with `\xNN` escapes, so the command never carries a raw control byte.
pub(crate) fn shell_quote(path: &Path) -> String {
    shell_quote_bytes(path.as_os_str().as_bytes())
}

pub(crate) fn shell_quote_bytes(b: &[u8]) -> String {
    if b.iter().all(|c| (0x20..=0x7e).contains(c)) {
        let mut out = String::from("'");
        for &c in b {
            if c == b'\'' {
                out.push_str("'\\''");
            } else {
                out.push(char::from(c));
            }
        }
        out.push('\'');
        return out;
    }
    let mut out = String::from("$'");
    for &c in b {
        match c {
            b'\'' => out.push_str("\\'"),
            b'\\' => out.push_str("\\\\"),
            0x20..=0x7e => out.push(char::from(c)),
            _ => out.push_str(&format!("\\x{c:02x}")),
        }
    }
    out.push('\'');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn control_bytes_are_escaped_and_backslash_doubled() {
        assert_eq!(preview(b"a\x1b[31mb\\\n"), "a\\x1b[31mb\\\\\\x0a");
        assert_eq!(preview(b"\xff\xfe"), "\\xff\\xfe");
        assert_eq!(preview("é\u{202e}x\u{85}".as_bytes()), "é\\u{202e}x\\u{85}");
    }

    #[test]
    fn preview_is_at_most_120_chars_with_a_cut_mark() {
        let p = preview(&[b'x'; 500]);
        assert_eq!(p.chars().count(), PREVIEW_MAX);
        assert!(p.ends_with('…'));
        let p = preview(&[0x01; 100]);
        assert!(p.chars().count() <= PREVIEW_MAX && p.ends_with('…'), "{p}");
        assert_eq!(preview(&[b'y'; 120]), "y".repeat(120));
    }

    #[test]
    fn shell_quoting_is_plain_or_ansi_c() {
        assert_eq!(shell_quote(Path::new("/ws/it's")), "'/ws/it'\\''s'");
        let odd = OsStr::from_bytes(b"/ws/a\nb'\xff");
        assert_eq!(shell_quote(Path::new(odd)), "$'/ws/a\\x0ab\\'\\xff'");
    }
}
