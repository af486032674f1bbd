//! `[invariants]`: what a profile promises, checked against its *compiled* policy
//! (`policy::prove`) before a run and by `cordon profile check`: a profile that extends
//! another and widens it past the parent's promises is refused, naming the promise, the
//! layer and the line. Keys replace key by key along the `extends` chain like every other
//! key: a derived profile inherits each promise it does not restate.
//!
//! Where a profile's lines are (`line_of`): the most derived file of the chain that sets the
//! section's key and holds the value.

use serde::{Deserialize, Serialize};

use crate::text::Refusal;

/// `[invariants]` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawInvariants {
    /// Path patterns the agent can never write (no writable mount, no write grant reaches).
    pub never_write: Option<Vec<String>>,
    /// Path patterns the agent can never read (nothing shows them, no grant can).
    pub never_read: Option<Vec<String>>,
    /// Path patterns nothing may be run from.
    pub never_exec: Option<Vec<String>>,
    /// Path patterns no `[grants]` envelope may reach.
    pub never_grant: Option<Vec<String>>,
    /// "none" (no network at all), "loopback" (nothing beyond the sandbox's own loopback), or
    /// "any" (no promise: a derived profile that widens its parent's says so).
    pub network: Option<String>,
    /// `HOST:PORT` (or `HOST`): every destination the profile lets the agent reach is one
    /// of these.
    pub network_only: Option<Vec<String>>,
    /// Syscalls the seccomp filter must refuse.
    pub deny_syscalls: Option<Vec<String>>,
}

/// The resolved invariants (patterns still unexpanded).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Invariants {
    pub never_write: Vec<String>,
    pub never_read: Vec<String>,
    pub never_exec: Vec<String>,
    pub never_grant: Vec<String>,
    pub network: Option<String>,
    pub network_only: Option<Vec<String>>,
    pub deny_syscalls: Vec<String>,
}

impl Invariants {
    pub fn is_empty(&self) -> bool {
        *self == Invariants::default()
    }

    /// Check what can be checked without a run: patterns, names.
    pub fn check(&self) -> Result<(), Refusal> {
        for (key, pats) in [
            ("never_write", &self.never_write),
            ("never_read", &self.never_read),
            ("never_exec", &self.never_exec),
            ("never_grant", &self.never_grant),
        ] {
            for p in pats {
                let body = p.strip_prefix('!').unwrap_or(p);
                crate::glob::check(body).map_err(|e| format!("invariants.{key} {p:?}: {e}"))?;
            }
        }
        if let Some(n) = &self.network {
            if !matches!(n.as_str(), "none" | "loopback" | "any") {
                return Err(format!(
                    "invariants.network: expected \"none\", \"loopback\" or \"any\", found {n:?}"
                )
                .into());
            }
        }
        for s in &self.deny_syscalls {
            if crate::kernel::resolve(s).is_none() {
                return Err(format!("invariants.deny_syscalls: unknown syscall {s:?}").into());
            }
        }
        Ok(())
    }
}

/// `file:line` of the first line in `[section]` under `key` that holds a quoted string for
/// which `is_it` holds, in the most derived text of the chain that sets `section.key`.
/// `texts` and `labels` are the chain's, most derived first.
pub fn line_of(
    labels: &[String],
    texts: &[String],
    section: &str,
    key: &str,
    is_it: &dyn Fn(&str) -> bool,
) -> Option<String> {
    for (label, text) in labels.iter().zip(texts) {
        let mut in_section = false;
        let mut in_key = false;
        let mut sets_key = false;
        for (i, line) in text.lines().enumerate() {
            let t = line.trim();
            if t.starts_with('[') && !t.starts_with("[[") && t.ends_with(']') && !in_key_array(t) {
                in_section = t.trim_matches(|c| c == '[' || c == ']').trim() == section;
                in_key = false;
                continue;
            }
            if !in_section {
                continue;
            }
            if let Some((k, _)) = t.split_once('=') {
                if !t.starts_with('"') {
                    in_key = k.trim() == key;
                    sets_key |= in_key;
                }
            }
            if in_key && quoted(t).iter().any(|q| is_it(q)) {
                return Some(format!("{label}:{}", i + 1));
            }
        }
        if sets_key {
            // This file sets the key (and replaces every other file's): the value is not in
            // it, so it is nowhere in effect.
            return None;
        }
    }
    None
}

/// A line like `"a", "b",]` inside an array is not a section header.
fn in_key_array(t: &str) -> bool {
    t.contains('"')
}

/// The double-quoted strings on a line (no escapes in paths).
fn quoted(line: &str) -> Vec<&str> {
    let line = line.split(" #").next().unwrap_or(line);
    line.split('"').skip(1).step_by(2).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_found_in_the_most_derived_file_that_sets_the_key() {
        let labels = vec!["mine.toml".to_string(), "preset:default".to_string()];
        let texts = vec![
            "extends = \"default\"\n[filesystem]\nread_write = [\n  \"{workspace}\",\n  \"/etc\",\n]\n"
                .to_string(),
            "[filesystem]\nread_only = [\"/usr\", \"/etc\"]\nread_write = [\"{workspace}\"]\n".to_string(),
        ];
        let at = |key: &str, v: &str| line_of(&labels, &texts, "filesystem", key, &|q| q == v);
        assert_eq!(at("read_write", "/etc").as_deref(), Some("mine.toml:5"));
        assert_eq!(at("read_only", "/etc").as_deref(), Some("preset:default:2"));
        // mine.toml sets read_write: default's is not in effect.
        assert_eq!(at("read_write", "/nowhere"), None);
    }

    #[test]
    fn bad_invariants_are_named() {
        let bad = Invariants {
            network: Some("some".into()),
            ..Default::default()
        };
        assert!(bad.check().unwrap_err().0.contains("invariants.network"));
        let bad = Invariants {
            deny_syscalls: vec!["nosuch".into()],
            ..Default::default()
        };
        assert!(bad.check().unwrap_err().0.contains("nosuch"));
        let bad = Invariants {
            never_write: vec!["relative/**".into()],
            ..Default::default()
        };
        assert!(bad.check().unwrap_err().0.contains("invariants.never_write"));
    }
}
