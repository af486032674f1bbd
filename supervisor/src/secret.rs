//! Secrets never land in a trace, an event, a log line or an error message: what the agent
//! is given in its environment (except names known to be harmless) and strings shaped like
//! well-known tokens are replaced by a marker carrying a short hash, so two records of the
//! same secret can still be matched without revealing it.

use std::borrow::Cow;

/// Environment variables whose values are shown as they are (everything else is a hash).
pub const HARMLESS: &[&str] = &[
    "PATH",
    "TERM",
    "LANG",
    "LANGUAGE",
    "LC_ALL",
    "LC_CTYPE",
    "LC_MESSAGES",
    "TZ",
    "COLORTERM",
    "NO_COLOR",
    "HOME",
    "TMPDIR",
    "USER",
    "LOGNAME",
    "SHELL",
    "PWD",
    "XDG_CACHE_HOME",
    "XDG_CONFIG_HOME",
    "XDG_DATA_HOME",
    "XDG_STATE_HOME",
    "npm_config_cache",
    "PIP_CACHE_DIR",
    "NODE_EXTRA_CA_CERTS",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "GIT_SSL_CAINFO",
    "EDITOR",
    "VISUAL",
    "PAGER",
    "CI",
    "DEBIAN_FRONTEND",
];

/// Shorter values are not treated as secrets (they would match everywhere).
const MIN_SECRET: usize = 8;

/// A value that is an absolute path without spaces.
fn is_path(v: &str) -> bool {
    v.starts_with('/') && !v.contains(char::is_whitespace)
}

/// Does the variable's name say it holds a credential (`*_API_KEY`, `*_TOKEN`, …)?
pub fn credential_name(name: &str) -> bool {
    let n = name.to_ascii_uppercase();
    [
        "API_KEY",
        "_TOKEN",
        "SECRET",
        "PASSWORD",
        "ACCESS_KEY",
        "AUTH_KEY",
    ]
    .iter()
    .any(|p| n.contains(p))
        || n.ends_with("_KEY")
}

pub fn harmless(name: &str) -> bool {
    HARMLESS.contains(&name)
}

/// `[secret sha256:0123456789ab]`: the marker a secret becomes.
pub fn marker(value: &str) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(value.as_bytes());
    let hex: String = d[..6].iter().map(|b| format!("{b:02x}")).collect();
    format!("[secret sha256:{hex}]")
}

/// Replaces known secret values and token-shaped strings in text.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    /// Longest first, so a secret containing another is replaced whole.
    values: Vec<String>,
}

/// Token prefixes of well-known services, and the characters their bodies use.
const TOKEN_PREFIXES: &[&str] = &[
    "sk-ant-",
    "sk-proj-",
    "sk-",
    "ghp_",
    "gho_",
    "ghu_",
    "ghs_",
    "ghr_",
    "github_pat_",
    "glpat-",
    "xoxb-",
    "xoxp-",
    "xoxa-",
    "xoxs-",
    "AKIA",
    "ASIA",
    "AIza",
    "hf_",
    "npm_",
    "pypi-",
];
/// A token body at least this long follows the prefix (shorter: an ordinary word).
const TOKEN_BODY_MIN: usize = 16;

fn token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '_'
}

impl Redactor {
    /// Secrets: the values of `env` whose names are not [`HARMLESS`].
    pub fn from_env<'a>(env: impl IntoIterator<Item = (&'a String, &'a String)>) -> Self {
        let mut values: Vec<String> = env
            .into_iter()
            // An absolute path is a place, not a secret (CLAUDE_CONFIG_DIR, CODEX_HOME, …).
            .filter(|(k, v)| !harmless(k) && v.len() >= MIN_SECRET && !is_path(v))
            .map(|(_, v)| v.clone())
            .collect();
        values.sort_by_key(|v| std::cmp::Reverse(v.len()));
        values.dedup();
        Self { values }
    }

    /// Also replace `extra` values (secrets that are not in the agent's environment, such as
    /// the credentials the proxy adds).
    pub fn with<'a>(mut self, extra: impl IntoIterator<Item = &'a str>) -> Self {
        self.values.extend(
            extra
                .into_iter()
                .filter(|v| v.len() >= MIN_SECRET)
                .map(String::from),
        );
        self.values.sort_by_key(|v| std::cmp::Reverse(v.len()));
        self.values.dedup();
        self
    }

    /// `s` with every secret value and token replaced by its marker.
    pub fn redact<'a>(&self, s: &'a str) -> Cow<'a, str> {
        let mut out = Cow::Borrowed(s);
        for v in &self.values {
            if out.contains(v.as_str()) {
                out = Cow::Owned(out.replace(v.as_str(), &marker(v)));
            }
        }
        match redact_tokens(&out) {
            Some(t) => Cow::Owned(t),
            None => out,
        }
    }

    /// Redact a string in place.
    pub fn field(&self, s: &mut String) {
        if let Cow::Owned(r) = self.redact(s) {
            *s = r;
        }
    }
}

/// The bytes a token prefix starts with: most word boundaries are passed over with one lookup
/// (the trace header's profile texts are searched at every launch).
static STARTS_A_PREFIX: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < TOKEN_PREFIXES.len() {
        t[TOKEN_PREFIXES[i].as_bytes()[0] as usize] = true;
        i += 1;
    }
    t
};

/// Token-shaped substrings replaced, or None when there are none.
fn redact_tokens(s: &str) -> Option<String> {
    let mut out = String::new();
    let mut last = 0;
    let mut i = 0;
    let bytes = s.as_bytes();
    while i < s.len() {
        // A token starts at a word boundary.
        let boundary = i == 0 || !token_char(char::from(bytes[i - 1]));
        let prefix = (boundary && STARTS_A_PREFIX[usize::from(bytes[i])])
            .then(|| TOKEN_PREFIXES.iter().find(|p| s[i..].starts_with(**p)))
            .flatten();
        if let Some(p) = prefix {
            let body: usize = s[i + p.len()..]
                .chars()
                .take_while(|c| token_char(*c))
                .map(char::len_utf8)
                .sum();
            if body >= TOKEN_BODY_MIN {
                let end = i + p.len() + body;
                out.push_str(&s[last..i]);
                out.push_str(&marker(&s[i..end]));
                last = end;
                i = end;
                continue;
            }
        }
        i += s[i..].chars().next().map_or(1, char::len_utf8);
    }
    (last > 0).then(|| {
        out.push_str(&s[last..]);
        out
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn passed_values_and_tokens_become_markers() {
        let env: BTreeMap<String, String> = [
            ("ANTHROPIC_API_KEY", "key-value-1234567890"),
            ("HOME", "/home/alice"),
            ("SHORT", "abc"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let r = Redactor::from_env(&env);
        let out = r.redact("curl -H x-api-key:key-value-1234567890 /home/alice/abc");
        assert_eq!(
            out,
            format!(
                "curl -H x-api-key:{} /home/alice/abc",
                marker("key-value-1234567890")
            )
        );
        let gh = "ghp_abcdefghijklmnopqrstuvwxyz0123456789";
        let url = format!("git push https://{gh}@github.com/x");
        let out = r.redact(&url);
        assert!(!out.contains(gh) && out.contains("[secret sha256:"), "{out}");
        // Words that merely start like a prefix stay.
        assert_eq!(r.redact("task-runner sk-learn AKIA"), "task-runner sk-learn AKIA");
        assert!(matches!(r.redact("nothing here"), Cow::Borrowed(_)));
    }
}
