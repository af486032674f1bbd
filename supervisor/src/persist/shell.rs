//! Shell commands a finding suggests (`inspect`): attacker-chosen paths quoted so that pasting
//! the command runs nothing else and carries no raw control byte to the terminal.

use std::os::unix::ffi::OsStrExt;
use std::path::Path;

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
    fn shell_quoting_is_plain_or_ansi_c() {
        assert_eq!(shell_quote(Path::new("/ws/it's")), "'/ws/it'\\''s'");
        let odd = OsStr::from_bytes(b"/ws/a\nb'\xff");
        assert_eq!(shell_quote(Path::new(odd)), "$'/ws/a\\x0ab\\'\\xff'");
    }
}
