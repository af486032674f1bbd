//! Path patterns for the monitor's rules: `profile` checks them, `detect` matches paths against
//! them. Pure string work, no crate imports: the bottom layer.
//!
//! A pattern is an absolute path whose segments may hold `*` (any run of characters within a
//! segment) and `?` (one character); a segment `**` stands for any number of segments,
//! including none. A pattern starting with `**/` matches at any depth. A leading `!` makes an
//! exception: a path matched by an exception is not matched by the set.
//!
//! Paths are compared lexically, after removing empty and `.` segments and resolving `..`
//! against the segments before it; symbolic links are not followed.

/// A pattern that is not anchored: it would match relative to wherever the agent stands.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("a pattern must be absolute, start with a {{variable}}, or start with **/")]
pub struct RelativePattern;

/// A pattern that can be compiled (variables already expanded).
pub fn check(pattern: &str) -> Result<(), RelativePattern> {
    let p = pattern.strip_prefix('!').unwrap_or(pattern);
    if p.starts_with('/') || p.starts_with('{') || p.starts_with("**/") {
        Ok(())
    } else {
        Err(RelativePattern)
    }
}

#[derive(Debug, Clone)]
struct Pattern {
    text: String,
    segs: Vec<String>,
}

impl Pattern {
    fn new(text: &str) -> Self {
        Self {
            text: text.to_string(),
            segs: text
                .split('/')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect(),
        }
    }

    fn matches(&self, path: &[&str]) -> bool {
        match_segs(&self.segs, path)
    }
}

fn match_segs(pat: &[String], path: &[&str]) -> bool {
    match pat.split_first() {
        None => path.is_empty(),
        Some((first, rest)) if first == "**" => (0..=path.len()).any(|skip| match_segs(rest, &path[skip..])),
        Some((first, rest)) => path
            .split_first()
            .is_some_and(|(seg, more)| wildcard(first.as_bytes(), seg.as_bytes()) && match_segs(rest, more)),
    }
}

/// Could a path strictly beneath `path` match `pat`? (A directory moved or linked to `path`
/// brings everything in it there.)
fn match_beneath(pat: &[String], path: &[&str]) -> bool {
    let Some((first, rest)) = pat.split_first() else {
        return false;
    };
    if first == "**" {
        // `**` may not swallow the whole path: its last segment must meet a named segment
        // of the pattern, or any directory would match `**/x`.
        return rest.is_empty() || (0..path.len()).any(|skip| match_beneath(rest, &path[skip..]));
    }
    match path.split_first() {
        None => false,
        Some((seg, [])) => wildcard(first.as_bytes(), seg.as_bytes()) && !rest.is_empty(),
        Some((seg, more)) => wildcard(first.as_bytes(), seg.as_bytes()) && match_beneath(rest, more),
    }
}

/// `*` and `?` within one segment.
fn wildcard(p: &[u8], s: &[u8]) -> bool {
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() && (p[pi] == b'?' || p[pi] == s[si]) {
            pi += 1;
            si += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, si));
            pi += 1;
        } else if let Some((sp, ss)) = star {
            pi = sp + 1;
            si = ss + 1;
            star = Some((sp, ss + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// Segments of `path` after lexical clean-up; `None` if `..` climbs above the start of a
/// relative path.
pub fn segments(path: &str) -> Option<Vec<&str>> {
    let mut out: Vec<&str> = Vec::new();
    for seg in path.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                if out.pop().is_none() && !path.starts_with('/') {
                    return None;
                }
            }
            s => out.push(s),
        }
    }
    Some(out)
}

/// Paths a `Set` remembers its answer for: agents open the same files again and again (the
/// monitor matched every open against every pattern: the pipeline's largest cost).
const MEMO: usize = 4096;

/// Patterns with exceptions.
#[derive(Debug, Default)]
pub struct Set {
    include: Vec<Pattern>,
    exclude: Vec<Pattern>,
    /// Absolute path → the index of the include pattern that matched it (None: no match).
    memo: std::sync::Mutex<std::collections::HashMap<Box<str>, Option<usize>>>,
}

impl Clone for Set {
    fn clone(&self) -> Self {
        Self {
            include: self.include.clone(),
            exclude: self.exclude.clone(),
            memo: Default::default(),
        }
    }
}

impl Set {
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Self {
        let mut set = Set::default();
        for p in patterns {
            match p.as_ref().strip_prefix('!') {
                Some(ex) => set.exclude.push(Pattern::new(ex)),
                None => set.include.push(Pattern::new(p.as_ref())),
            }
        }
        set
    }

    /// The first pattern that matches the absolute `path` (and no exception does).
    pub fn matches(&self, path: &str) -> Option<&str> {
        let mut memo = self
            .memo
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(hit) = memo.get(path) {
            return hit.map(|i| self.include[i].text.as_str());
        }
        let hit = self.hit(&segments(path)?);
        if memo.len() >= MEMO {
            memo.clear();
        }
        memo.insert(path.into(), hit);
        hit.map(|i| self.include[i].text.as_str())
    }

    /// The first pattern that something beneath the absolute `path` could match (exceptions
    /// do not apply: what the directory holds is not known).
    pub fn matches_beneath(&self, path: &str) -> Option<&str> {
        let segs = segments(path)?;
        self.include
            .iter()
            .find(|p| match_beneath(&p.segs, &segs))
            .map(|p| p.text.as_str())
    }

    pub fn matches_segments(&self, segs: &[&str]) -> Option<&str> {
        self.hit(segs).map(|i| self.include[i].text.as_str())
    }

    /// The index of the first include pattern matching `segs`, unless an exception does.
    fn hit(&self, segs: &[&str]) -> Option<usize> {
        let i = self.include.iter().position(|p| p.matches(segs))?;
        (!self.exclude.iter().any(|p| p.matches(segs))).then_some(i)
    }

    /// For a relative path that could not be resolved: only patterns that start with `**`
    /// can match it.
    pub fn matches_relative(&self, path: &str) -> Option<&str> {
        let segs = segments(path)?;
        let hit = self
            .include
            .iter()
            .filter(|p| p.segs.first().is_some_and(|s| s == "**"))
            .find(|p| p.matches(&segs))?;
        (!self.exclude.iter().any(|p| p.matches(&segs))).then_some(hit.text.as_str())
    }

    pub fn is_empty(&self) -> bool {
        self.include.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembered_answers_are_the_answers() {
        let s = Set::new(&["/home/u/.ssh/**", "**/.env", "!**/sample/.env"]);
        for _ in 0..2 {
            assert_eq!(s.matches("/home/u/.ssh/id_rsa"), Some("/home/u/.ssh/**"));
            assert_eq!(s.matches("/w/.env"), Some("**/.env"));
            assert_eq!(s.matches("/w/sample/.env"), None);
            assert_eq!(s.matches("/w/readme"), None);
        }
        // Past its capacity the memo starts over; answers stay right.
        for i in 0..(MEMO + 10) {
            assert_eq!(s.matches(&format!("/w/{i}/.env")), Some("**/.env"));
        }
        assert_eq!(s.matches("/home/u/.ssh/config"), Some("/home/u/.ssh/**"));
        assert_eq!(s.clone().matches("/w/sample/.env"), None);
    }

    #[test]
    fn segments_and_wildcards() {
        let s = Set::new(&[
            "/home/u/.ssh/**",
            "/etc/shadow",
            "**/id_rsa*",
            "**/.git/hooks/*",
            "!**/.git/hooks/*.sample",
        ]);
        assert_eq!(s.matches("/home/u/.ssh/id_ed25519"), Some("/home/u/.ssh/**"));
        assert_eq!(s.matches("/home/u/.ssh"), Some("/home/u/.ssh/**"));
        assert_eq!(s.matches("/home/u/.sshx/a"), None);
        assert_eq!(s.matches("//etc/./shadow"), Some("/etc/shadow"));
        assert_eq!(s.matches("/etc/shadow-"), None);
        assert_eq!(s.matches("/tmp/x/../../etc/shadow"), Some("/etc/shadow"));
        assert_eq!(s.matches("/w/keys/id_rsa.pub"), Some("**/id_rsa*"));
        assert_eq!(s.matches("/w/.git/hooks/pre-commit"), Some("**/.git/hooks/*"));
        assert_eq!(s.matches("/w/.git/hooks/pre-commit.sample"), None);
        assert_eq!(s.matches("/w/.git/hooks"), None);
        assert_eq!(
            s.matches_relative(".git/hooks/post-merge"),
            Some("**/.git/hooks/*")
        );
        assert_eq!(s.matches_relative("shadow"), None);
        assert_eq!(s.matches_relative("../x"), None);
    }

    #[test]
    fn wildcard_edges() {
        assert!(wildcard(b"*", b""));
        assert!(wildcard(b"a*b*c", b"axxbyyc"));
        assert!(!wildcard(b"a*b*c", b"axxbyy"));
        assert!(wildcard(b"?x", b"ax"));
        assert!(!wildcard(b"?x", b"x"));
    }

    #[test]
    fn checks() {
        assert!(check("/etc").is_ok() && check("{home}/.ssh").is_ok() && check("!**/x").is_ok());
        assert!(check("etc/shadow").is_err());
    }
}
