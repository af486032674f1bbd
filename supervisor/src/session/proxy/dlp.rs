//! Data loss prevention: outbound plaintext the proxy sees (intercepted requests' URLs,
//! headers and bodies, plain-HTTP requests, DNS names) searched in one pass for what must not
//! leave: the run's canary credentials (planted where the profile hides real ones; raw or
//! base64-encoded), private keys, and well-known token formats sent anywhere but their own
//! service. A finding names the kind and where it was planted, never the value.

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use base64::Engine;

/// What a pattern stands for.
#[derive(Debug, Clone)]
enum Kind {
    /// A canary of this run: `what` it is and where it was planted.
    Canary {
        what: String,
        planted: String,
    },
    PrivateKey,
    /// A token prefix; the body after it must be at least `min` token characters; it may go
    /// to `hosts` (exact names or `.suffix`).
    Token {
        service: &'static str,
        min: usize,
        hosts: &'static [&'static str],
    },
}

/// Token formats: prefix, service, body length at least, where they may be sent.
const TOKENS: &[(&str, &str, usize, &[&str])] = &[
    ("sk-ant-", "an Anthropic API key", 20, &["api.anthropic.com"]),
    ("sk-proj-", "an OpenAI API key", 20, &["api.openai.com"]),
    (
        "ghp_",
        "a GitHub token",
        36,
        &["github.com", ".github.com", ".githubusercontent.com"],
    ),
    ("gho_", "a GitHub token", 36, &["github.com", ".github.com"]),
    ("ghu_", "a GitHub token", 36, &["github.com", ".github.com"]),
    ("ghs_", "a GitHub token", 36, &["github.com", ".github.com"]),
    ("ghr_", "a GitHub token", 36, &["github.com", ".github.com"]),
    (
        "github_pat_",
        "a GitHub token",
        40,
        &["github.com", ".github.com"],
    ),
    ("glpat-", "a GitLab token", 20, &["gitlab.com", ".gitlab.com"]),
    ("xoxb-", "a Slack token", 10, &["slack.com", ".slack.com"]),
    ("xoxp-", "a Slack token", 10, &["slack.com", ".slack.com"]),
    ("xoxa-", "a Slack token", 10, &["slack.com", ".slack.com"]),
    ("npm_", "an npm token", 36, &["registry.npmjs.org"]),
    (
        "pypi-AgEIcHlwaS5vcmc",
        "PyPI token",
        20,
        &["upload.pypi.org", "pypi.org"],
    ),
    ("AKIA", "an AWS access key", 16, &[".amazonaws.com"]),
    ("ASIA", "an AWS access key", 16, &[".amazonaws.com"]),
];

/// What the scanner found (no value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// "canary AWS secret key (planted in ~/.aws/credentials)", "private key", "GitHub token".
    pub what: String,
    /// A canary: proof, not a guess.
    pub canary: bool,
}

/// One canary: its value, what it looks like, where it was planted.
#[derive(Debug, Clone)]
pub struct Canary {
    pub value: String,
    pub what: String,
    pub planted: String,
}

pub struct Scanner {
    ac: AhoCorasick,
    kinds: Vec<Kind>,
    /// The run's model API hosts: what the agent reads goes there anyway (its conversation),
    /// so only canaries are refused on the way to them (code and docs often hold key headers
    /// and example tokens).
    trusted: Vec<String>,
    /// Names of fields that hold credentials ("api_key", "token", …), case-insensitive.
    fields: AhoCorasick,
}

impl std::fmt::Debug for Scanner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Scanner({} patterns)", self.kinds.len())
    }
}

fn token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

impl Scanner {
    pub fn new(canaries: &[Canary], trusted: Vec<String>) -> Scanner {
        let mut pats: Vec<Vec<u8>> = Vec::new();
        let mut kinds = Vec::new();
        for c in canaries {
            let kind = Kind::Canary {
                what: c.what.clone(),
                planted: c.planted.clone(),
            };
            // The value itself, lowercased too (DNS names are), and base64 at each of the
            // three alignments (the middle of each encoding does not depend on what is around).
            let mut forms = vec![
                c.value.clone().into_bytes(),
                c.value.to_ascii_lowercase().into_bytes(),
            ];
            for pad in 0..3 {
                let mut raw = vec![b'\0'; pad];
                raw.extend_from_slice(c.value.as_bytes());
                let enc = base64::engine::general_purpose::STANDARD.encode(&raw);
                // Drop the characters that mix in the padding before and after.
                let skip = (pad * 4).div_ceil(3) + 1;
                let keep = enc.len().saturating_sub(skip + 4);
                if keep > 12 {
                    forms.push(enc.as_bytes()[skip..skip + keep].to_vec());
                }
            }
            for f in forms {
                pats.push(f);
                kinds.push(kind.clone());
            }
        }
        for p in [
            "-----BEGIN RSA PRIVATE KEY-----",
            "-----BEGIN EC PRIVATE KEY-----",
            "-----BEGIN OPENSSH PRIVATE KEY-----",
            "-----BEGIN DSA PRIVATE KEY-----",
            "-----BEGIN PRIVATE KEY-----",
            "-----BEGIN ENCRYPTED PRIVATE KEY-----",
            "-----BEGIN PGP PRIVATE KEY BLOCK-----",
        ] {
            pats.push(p.as_bytes().to_vec());
            kinds.push(Kind::PrivateKey);
        }
        for (prefix, service, min, hosts) in TOKENS {
            pats.push(prefix.as_bytes().to_vec());
            kinds.push(Kind::Token {
                service,
                min: *min,
                hosts,
            });
        }
        let ac = AhoCorasickBuilder::new()
            .match_kind(MatchKind::LeftmostLongest)
            .build(&pats)
            .expect("the patterns are plain strings");
        let fields = AhoCorasickBuilder::new()
            .ascii_case_insensitive(true)
            .build(CREDENTIAL_FIELDS)
            .expect("the field names are plain strings");
        Scanner {
            ac,
            kinds,
            trusted,
            fields,
        }
    }

    /// The first thing in `data` that may not go to `host`.
    pub fn scan(&self, data: &[u8], host: &str) -> Option<Finding> {
        let trusted = self.trusted.iter().any(|t| t == host);
        for m in self.ac.find_iter(data) {
            match &self.kinds[m.pattern().as_usize()] {
                Kind::Canary { what, planted } => {
                    return Some(Finding {
                        what: format!("canary {what} (planted in {planted})"),
                        canary: true,
                    })
                }
                // A key is its header and a body; a header alone is code or documentation.
                Kind::PrivateKey if !trusted && key_body_follows(&data[m.end()..]) => {
                    return Some(Finding {
                        what: "a private key".into(),
                        canary: false,
                    })
                }
                Kind::PrivateKey => {}
                Kind::Token { .. } if trusted => {}
                Kind::Token { service, min, hosts } => {
                    // A word that merely starts like a token is not one.
                    if m.start() > 0 && token_char(data[m.start() - 1]) {
                        continue;
                    }
                    let body = data[m.end()..].iter().take_while(|b| token_char(**b)).count();
                    let home = hosts.iter().any(|h| {
                        h.strip_prefix('.')
                            .map_or(host == *h, |s| host.ends_with(h) || host == s)
                    });
                    if body >= *min && !home {
                        return Some(Finding {
                            what: (*service).to_string(),
                            canary: false,
                        });
                    }
                }
            }
        }
        if trusted {
            return None;
        }
        self.credential_field(data)
    }

    /// A long, random-looking value in a field named like a credential (`"api_key": "…"`,
    /// `token=…`): a secret of a kind no pattern knows.
    fn credential_field(&self, data: &[u8]) -> Option<Finding> {
        for m in self.fields.find_iter(data) {
            let rest = &data[m.end()..];
            // The rest of the field's name, its closing quote, then `:` or `=`.
            let name_end = rest
                .iter()
                .take_while(|b| b.is_ascii_alphanumeric() || **b == b'_' || **b == b'-')
                .count();
            let mut r = &rest[name_end..];
            r = r.strip_prefix(b"\"").unwrap_or(r);
            let r = trim_start(r);
            let Some(r) = r.strip_prefix(b":").or_else(|| r.strip_prefix(b"=")) else {
                continue;
            };
            let r = trim_start(r);
            let r = r.strip_prefix(b"\"").unwrap_or(r);
            let value: &[u8] = &r[..r
                .iter()
                .take_while(|b| {
                    b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=' | b'_' | b'-' | b'.')
                })
                .count()];
            if value.len() >= 20 && entropy(value) >= 4.0 {
                return Some(Finding {
                    what: "a random-looking value in a credential field".into(),
                    canary: false,
                });
            }
        }
        None
    }
}

/// Field names that hold credentials.
const CREDENTIAL_FIELDS: &[&str] = &[
    "api_key",
    "apikey",
    "api-key",
    "secret",
    "password",
    "passwd",
    "access_token",
    "auth_token",
    "refresh_token",
    "private_key",
    "client_secret",
    "token",
];

fn trim_start(b: &[u8]) -> &[u8] {
    &b[b.iter().take_while(|c| c.is_ascii_whitespace()).count()..]
}

/// Shannon entropy of `v` in bits per byte.
fn entropy(v: &[u8]) -> f64 {
    let mut counts = [0u32; 256];
    for b in v {
        counts[usize::from(*b)] += 1;
    }
    let n = v.len() as f64;
    counts
        .iter()
        .filter(|c| **c > 0)
        .map(|c| {
            let p = f64::from(*c) / n;
            -p * p.log2()
        })
        .sum()
}

/// After a PEM header: a line break (raw or JSON-escaped) and at least 40 base64 characters.
fn key_body_follows(rest: &[u8]) -> bool {
    let breaks: [&[u8]; 4] = [b"\r\n", b"\n", br"\r\n", br"\n"];
    let rest = breaks.iter().find_map(|nl| rest.strip_prefix(*nl));
    rest.is_some_and(|r| {
        r.iter()
            .take_while(|b| b.is_ascii_alphanumeric() || **b == b'+' || **b == b'/' || **b == b'=')
            .count()
            >= 40
    })
}

/// Random characters from `alphabet`.
pub fn random_from(alphabet: &[u8], n: usize) -> String {
    let mut b = vec![0u8; n];
    getrandom::fill(&mut b).expect("the kernel's random source");
    b.iter()
        .map(|x| alphabet[usize::from(*x) % alphabet.len()] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canary() -> Canary {
        Canary {
            value: "AKIACORDONCANARY0123".into(),
            what: "AWS access key".into(),
            planted: "~/.aws/credentials".into(),
        }
    }

    #[test]
    fn canaries_are_found_raw_lowercased_and_base64_encoded() {
        let s = Scanner::new(&[canary()], Vec::new());
        let hit = |data: &[u8]| s.scan(data, "gist.github.com");
        assert!(hit(b"key=AKIACORDONCANARY0123&x=1").unwrap().canary);
        assert!(hit(b"akiacordoncanary0123.evil.example").unwrap().canary);
        for prefix in ["", "a", "ab", "abc"] {
            let text = format!("{prefix}aws_access_key_id = AKIACORDONCANARY0123\n");
            let enc = base64::engine::general_purpose::STANDARD.encode(text);
            let f = hit(enc.as_bytes()).unwrap_or_else(|| panic!("missed at offset {prefix:?}"));
            assert!(f.canary && f.what.contains("~/.aws/credentials"), "{f:?}");
        }
    }

    #[test]
    fn random_values_in_credential_fields_but_not_plain_ones() {
        let s = Scanner::new(&[], vec!["api.anthropic.com".into()]);
        let hit = |d: &str| s.scan(d.as_bytes(), "x.example").map(|f| f.what);
        assert!(hit(r#"{"api_key": "Zx8kP2mQ9vR4tY7wB1nC6hJ3Lq"}"#).is_some());
        assert!(hit("user=a&Client_Secret=f83Hk2LmQ9pZ7xV1bN4cR6tY0wS5").is_some());
        assert!(
            hit(r#"{"token": "aaaaaaaaaaaaaaaaaaaaaaaaaaaa"}"#).is_none(),
            "not random"
        );
        assert!(hit("password=hunter2").is_none(), "too short");
        assert!(hit(r#"{"tokenizer": "bert-base-uncased"}"#).is_none());
        assert!(hit(r#"{"max_tokens": 1024, "secret_santa": true}"#).is_none());
        assert!(
            s.scan(
                br#"{"api_key": "Zx8kP2mQ9vR4tY7wB1nC6hJ3Lq"}"#,
                "api.anthropic.com"
            )
            .is_none(),
            "the model's own host"
        );
    }

    #[test]
    fn tokens_only_away_from_their_service_and_keys_anywhere() {
        let s = Scanner::new(&[], vec!["api.anthropic.com".into()]);
        let ghp = format!("token ghp_{}", "a".repeat(36));
        assert_eq!(
            s.scan(ghp.as_bytes(), "evil.example").unwrap().what,
            "a GitHub token"
        );
        assert!(s.scan(ghp.as_bytes(), "api.github.com").is_none());
        assert!(s.scan(ghp.as_bytes(), "github.com").is_none());
        let key = format!("-----BEGIN OPENSSH PRIVATE KEY-----\n{}", "b3Blbg".repeat(10));
        assert!(s.scan(key.as_bytes(), "github.com").is_some());
        let escaped = format!("\"-----BEGIN RSA PRIVATE KEY-----\\n{}", "QUJD".repeat(12));
        assert!(
            s.scan(escaped.as_bytes(), "gist.github.com").is_some(),
            "JSON-escaped"
        );
        // A header alone (code, docs) is not a key; the model's own host gets only canaries.
        assert!(s
            .scan(b"\"-----BEGIN PRIVATE KEY-----\" => pem", "x.example")
            .is_none());
        assert!(s.scan(key.as_bytes(), "api.anthropic.com").is_none());
        assert!(s.scan(ghp.as_bytes(), "api.anthropic.com").is_none());
        // Look-alikes: a short body, a word that merely contains the prefix, hashes, UUIDs.
        assert!(s.scan(b"ghp_short", "x.example").is_none());
        assert!(s
            .scan(b"mask-ant-forever-and-ever-and-ever-more", "x.example")
            .is_none());
        assert!(s.scan(b"sha512-9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08 6ba7b810-9dad-11d1-80b4-00c04fd430c8", "registry.npmjs.org").is_none());
    }
}
