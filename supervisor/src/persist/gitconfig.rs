//! A git config file parser that reads the file the way git's own `config.c` does (a port of
//! `git_parse_source`, `get_base_var`, `get_value`, `parse_value`), and the list of keys
//! whose value git runs as a program.
//!
//! Fidelity matters more than convenience: an attacker who finds a spelling git accepts and
//! this parser does not (odd case, a key on the header's line as in `[core] fsmonitor = x`,
//! quotes in the middle of a value, a continuation line) hides the key. Where the parser
//! meets a line git would reject, it says so (the caller reports it) and resynchronises at
//! the next line, so a key after the bad line is still seen.

/// One `key = value` as git sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    /// `section[.subsection].name`: section and name lowercased, a quoted subsection kept as
    /// written (git's canonical form, the one `git config --unset` takes).
    pub key: Vec<u8>,
    /// `None` for a bare `key` line (a boolean true).
    pub value: Option<Vec<u8>>,
    /// 1-based line of the key.
    pub line: usize,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Parsed {
    pub entries: Vec<Entry>,
    /// Lines git would refuse (1-based).
    pub bad_lines: Vec<usize>,
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    line: usize,
    eof: bool,
}

impl Reader<'_> {
    /// git's `get_next_char`: CRLF reads as LF, the end of the file as one final LF.
    fn next(&mut self) -> u8 {
        let Some(&c) = self.buf.get(self.pos) else {
            self.eof = true;
            return b'\n';
        };
        self.pos += 1;
        if c == b'\r' && self.buf.get(self.pos) == Some(&b'\n') {
            self.pos += 1;
            self.line += 1;
            return b'\n';
        }
        if c == b'\n' {
            self.line += 1;
        }
        c
    }

    /// Skips to just after the next LF (resynchronising after a bad line).
    fn skip_line(&mut self) {
        while !self.eof && self.next() != b'\n' {}
    }
}

fn is_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | b'\r')
}

fn is_keychar(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'-'
}

pub(crate) fn parse(buf: &[u8]) -> Parsed {
    let buf = buf.strip_prefix(b"\xef\xbb\xbf").unwrap_or(buf);
    let mut r = Reader {
        buf,
        pos: 0,
        line: 1,
        eof: false,
    };
    let mut out = Parsed::default();
    let mut section: Vec<u8> = Vec::new();
    let mut comment = false;
    loop {
        let line = r.line;
        let c = r.next();
        if c == b'\n' {
            if r.eof {
                return out;
            }
            comment = false;
            continue;
        }
        if comment || is_space(c) {
            continue;
        }
        if c == b'#' || c == b';' {
            comment = true;
            continue;
        }
        if c == b'[' {
            match base_var(&mut r) {
                Some(s) => section = s,
                None => {
                    out.bad_lines.push(line);
                    // An unreadable header: keys after it belong to no known section, which
                    // git would never reach; keep them under a name no rule matches.
                    section = b"?".to_vec();
                    if r.line == line {
                        r.skip_line();
                    }
                }
            }
            continue;
        }
        if !c.is_ascii_alphabetic() {
            out.bad_lines.push(line);
            r.skip_line();
            continue;
        }
        match key_value(&mut r, c) {
            Some((name, value)) => {
                let mut key = section.clone();
                key.push(b'.');
                key.extend_from_slice(&name);
                out.entries.push(Entry { key, value, line });
            }
            None => {
                out.bad_lines.push(line);
                if r.line == line {
                    r.skip_line();
                }
            }
        }
    }
}

/// After `[`: `name]`, `name.sub]` (lowercased), or `name "sub"]` (sub kept as written).
fn base_var(r: &mut Reader) -> Option<Vec<u8>> {
    let mut name = Vec::new();
    loop {
        let c = r.next();
        if r.eof || c == b'\n' {
            return None;
        }
        if c == b']' {
            return Some(name);
        }
        if is_space(c) {
            return extended_base_var(r, name);
        }
        if !is_keychar(c) && c != b'.' {
            return None;
        }
        name.push(c.to_ascii_lowercase());
    }
}

fn extended_base_var(r: &mut Reader, mut name: Vec<u8>) -> Option<Vec<u8>> {
    let mut c;
    loop {
        c = r.next();
        if !is_space(c) || c == b'\n' {
            break;
        }
    }
    if c != b'"' {
        return None;
    }
    name.push(b'.');
    loop {
        c = r.next();
        if c == b'\n' {
            return None;
        }
        if c == b'"' {
            break;
        }
        if c == b'\\' {
            c = r.next();
            if c == b'\n' {
                return None;
            }
        }
        name.push(c);
    }
    (r.next() == b']').then_some(name)
}

/// A key's name (its first char already read) and its value.
fn key_value(r: &mut Reader, first: u8) -> Option<(Vec<u8>, Option<Vec<u8>>)> {
    let mut name = vec![first.to_ascii_lowercase()];
    let mut c;
    loop {
        c = r.next();
        if r.eof || !is_keychar(c) {
            break;
        }
        name.push(c.to_ascii_lowercase());
    }
    while c == b' ' || c == b'\t' {
        c = r.next();
    }
    if c == b'\n' {
        return Some((name, None));
    }
    if c != b'=' {
        return None;
    }
    parse_value(r).map(|v| (name, Some(v)))
}

fn parse_value(r: &mut Reader) -> Option<Vec<u8>> {
    let mut value = Vec::new();
    let (mut quote, mut comment, mut space) = (false, false, 0usize);
    loop {
        let mut c = r.next();
        if c == b'\n' {
            return (!quote).then_some(value);
        }
        if comment {
            continue;
        }
        if is_space(c) && !quote {
            if !value.is_empty() {
                space += 1;
            }
            continue;
        }
        if !quote && (c == b';' || c == b'#') {
            comment = true;
            continue;
        }
        value.extend(std::iter::repeat_n(b' ', space));
        space = 0;
        if c == b'\\' {
            c = r.next();
            match c {
                b'\n' => continue,
                b't' => c = b'\t',
                b'b' => c = 0x08,
                b'n' => c = b'\n',
                b'\\' | b'"' => {}
                _ => return None,
            }
            value.push(c);
            continue;
        }
        if c == b'"' {
            quote = !quote;
            continue;
        }
        value.push(c);
    }
}

/// git's `git_parse_maybe_bool`: `None` when the value is not a boolean.
fn as_bool(value: Option<&[u8]>) -> Option<bool> {
    let Some(v) = value else { return Some(true) };
    let v = v.to_ascii_lowercase();
    match v.as_slice() {
        b"true" | b"yes" | b"on" | b"1" => Some(true),
        b"false" | b"no" | b"off" | b"0" | b"" => Some(false),
        _ => None,
    }
}

/// Splits `section.sub.name` at its first and last dot (git's rule for a dotted subsection).
fn split(key: &[u8]) -> (&[u8], Option<&[u8]>, &[u8]) {
    let first = key.iter().position(|&c| c == b'.').unwrap_or(0);
    let last = key.iter().rposition(|&c| c == b'.').unwrap_or(0);
    let section = &key[..first];
    let name = &key[last + 1..];
    let sub = (last > first).then(|| &key[first + 1..last]);
    (section, sub, name)
}

/// Whether git (or a tool reading git config: git-lfs, git-send-email) would run `value` as
/// a program, or load more config from it. Keys that only name a built-in tool
/// (`merge.tool = vimdiff`) are not listed: they run nothing the repository chose.
pub(crate) fn runs_code(key: &[u8], value: Option<&[u8]>) -> bool {
    let (section, sub, name) = split(key);
    let v = value.unwrap_or_default();
    let nonempty = !v.iter().all(|c| is_space(*c));
    let not_bool = as_bool(value).is_none();
    let bang = v.iter().find(|c| !is_space(**c)) == Some(&b'!');
    let has_sub = sub.is_some();
    match (section, name) {
        // A boolean selects git's built-in daemon; any other value is a hook command.
        (b"core", b"fsmonitor") => !has_sub && not_bool,
        (
            b"core",
            b"hookspath"
            | b"sshcommand"
            | b"pager"
            | b"editor"
            | b"askpass"
            | b"gitproxy"
            | b"alternaterefscommand",
        ) => nonempty,
        (b"sequence", b"editor") | (b"interactive", b"difffilter") | (b"diff", b"external") => nonempty,
        // pager.<command> is a boolean or the pager to run.
        (b"pager", _) => not_bool,
        (b"diff", b"command" | b"textconv") => has_sub && nonempty,
        (b"difftool" | b"mergetool" | b"browser" | b"man" | b"guitool", b"cmd" | b"path") => {
            has_sub && nonempty
        }
        (b"filter", b"clean" | b"smudge" | b"process") => has_sub && nonempty,
        (b"merge", b"driver") => has_sub && nonempty,
        (b"credential", b"helper") => nonempty,
        (b"gpg", b"program" | b"defaultkeycommand") => nonempty,
        (b"alias", _) => bang,
        // The included file can hold any of the above and can sit anywhere.
        (b"include", b"path") => !has_sub && nonempty,
        (b"includeif", b"path") => has_sub && nonempty,
        (b"remote", b"uploadpack" | b"receivepack") => has_sub && nonempty,
        // `ext::` remotes run a command; they are off unless allowed.
        (b"protocol", b"allow") => match sub {
            Some(s) => s.eq_ignore_ascii_case(b"ext") && !v.eq_ignore_ascii_case(b"never"),
            None => v.eq_ignore_ascii_case(b"always"),
        },
        (b"submodule", b"update") => bang,
        (b"sendemail", b"tocmd" | b"cccmd" | b"headercmd" | b"sendmailcmd") => nonempty,
        (b"sendemail", b"smtpserver") => v.first() == Some(&b'/'),
        (b"uploadpack", b"packobjectshook") => nonempty,
        (b"instaweb", b"httpd") => nonempty,
        (b"lfs", b"path" | b"clean" | b"smudge") => has_sub && nonempty,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(text: &str) -> Vec<(String, Option<String>)> {
        let p = parse(text.as_bytes());
        assert!(p.bad_lines.is_empty(), "{:?}", p.bad_lines);
        p.entries
            .into_iter()
            .map(|e| {
                (
                    String::from_utf8(e.key).unwrap(),
                    e.value.map(|v| String::from_utf8(v).unwrap()),
                )
            })
            .collect()
    }

    fn kv(k: &str, v: &str) -> (String, Option<String>) {
        (k.to_string(), Some(v.to_string()))
    }

    #[test]
    fn key_on_the_header_line_odd_case_and_spacing() {
        assert_eq!(
            keys("[core] fsmonitor = \"touch /x; false\""),
            vec![kv("core.fsmonitor", "touch /x; false")]
        );
        assert_eq!(
            keys("[CoRe]\n\t FSMonitor\t=  a b  \n"),
            vec![kv("core.fsmonitor", "a b")]
        );
        assert_eq!(keys("[core]\r\nfsmonitor=x\r\n"), vec![kv("core.fsmonitor", "x")]);
    }

    #[test]
    fn subsections_quotes_escapes_comments_continuations() {
        assert_eq!(
            keys("[filter \"Ev\\\"il\"]\n clean = a\" ;not comment\"b ; comment\n"),
            vec![kv("filter.Ev\"il.clean", "a ;not commentb")]
        );
        assert_eq!(
            keys("[Filter.EVIL]\nsmudge = x\n"),
            vec![kv("filter.evil.smudge", "x")]
        );
        // git keeps the space before the backslash and the one after the newline.
        assert_eq!(
            keys("[alias]\n x = !sh \\\n -c id\n"),
            vec![kv("alias.x", "!sh  -c id")]
        );
        assert_eq!(
            keys("# c\n; c\n[core]\nbare\n"),
            vec![("core.bare".to_string(), None)]
        );
        assert_eq!(keys("[a]\nk = \"x\\ty\\n\"\n"), vec![kv("a.k", "x\ty\n")]);
    }

    #[test]
    fn a_bad_line_is_reported_and_later_keys_still_seen() {
        let p = parse(b"[core]\n%%% junk\n[ core]\nfsmonitor = x\n[core]\nhookspath = /h\n");
        assert_eq!(p.bad_lines, vec![2, 3]);
        let found: Vec<_> = p.entries.iter().map(|e| e.key.clone()).collect();
        assert_eq!(found, vec![b"?.fsmonitor".to_vec(), b"core.hookspath".to_vec()]);
        assert_eq!(parse(b"[a]\nk = \"open\n").bad_lines, vec![2]);
    }

    #[test]
    fn which_keys_run_code() {
        let yes: &[(&[u8], Option<&[u8]>)] = &[
            (b"core.fsmonitor", Some(b"touch x")),
            (b"core.hookspath", Some(b"/tmp/h")),
            (b"pager.log", Some(b"sh -c x")),
            (b"filter.Evil.clean", Some(b"x")),
            (b"diff.x.textconv", Some(b"x")),
            (b"alias.st", Some(b"!sh")),
            (b"include.path", Some(b"/etc/x")),
            (b"includeif.gitdir:/x/.path", Some(b"y")),
            (b"credential.https://h.helper", Some(b"x")),
            (b"gpg.ssh.program", Some(b"x")),
            (b"protocol.ext.allow", Some(b"always")),
            (b"submodule.s.update", Some(b"!x")),
        ];
        for (k, v) in yes {
            assert!(runs_code(k, *v), "{}", String::from_utf8_lossy(k));
        }
        let no: &[(&[u8], Option<&[u8]>)] = &[
            (b"core.fsmonitor", Some(b"true")),
            (b"core.fsmonitor", None),
            (b"pager.log", Some(b"false")),
            (b"alias.st", Some(b"status")),
            (b"core.worktree", Some(b"../x")),
            (b"url.x.insteadof", Some(b"y")),
            (b"http.proxy", Some(b"http://p")),
            (b"filter.lfs.required", Some(b"true")),
            (b"protocol.ext.allow", Some(b"never")),
            (b"submodule.s.url", Some(b"../s")),
            (b"credential.helper", Some(b"")),
        ];
        for (k, v) in no {
            assert!(!runs_code(k, *v), "{}", String::from_utf8_lossy(k));
        }
    }
}
