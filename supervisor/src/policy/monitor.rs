//! The monitor of one run: the profile's `[monitor]` section compiled for one workspace
//! (variables expanded, the exec rule's default allowlist filled in). `detect` runs it.

use crate::profile::monitor::{Monitor, Rule, Visibility};
use crate::profile::template::PathError;
use crate::profile::NetworkMode;

/// A monitor pattern whose variables cannot be expanded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("monitor.{rule} {pattern:?}: {source}")]
pub struct ConfigError {
    pub rule: String,
    pub pattern: String,
    #[source]
    pub source: PathError,
}

/// The monitor of one run, with variables expanded.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Config {
    pub hook: Vec<String>,
    pub frozen_limit_ms: u64,
    pub rules: Vec<Rule>,
    pub net_mode: Option<NetworkMode>,
    /// What the probes record of the sandbox.
    pub visibility: Visibility,
    /// Rules the profile inherits that this visibility cannot feed (they do not run).
    pub unseen: Vec<&'static str>,
    /// Host uid and gid the hook runs as (the invoking user).
    pub hook_uid: u32,
    pub hook_gid: u32,
}

impl Config {
    /// Expand `{home}` and `{workspace}` in the monitor's patterns; the exec rule's default
    /// allowlist is the profile's `filesystem.executable` places.
    pub fn compile(
        m: &Monitor,
        executable: &[std::path::PathBuf],
        net_mode: NetworkMode,
        expand: impl Fn(&str) -> Result<String, PathError>,
    ) -> Result<Config, ConfigError> {
        let mut rules = m.rules.clone();
        for r in &mut rules {
            if r.name == "syscalls" {
                continue;
            }
            if r.name == "exec" && r.patterns.is_none() {
                r.patterns = Some(executable.iter().map(|p| format!("{}/**", p.display())).collect());
            }
            if let Some(ps) = &mut r.patterns {
                for p in ps.iter_mut() {
                    let (bang, body) = p.strip_prefix('!').map_or(("", p.as_str()), |b| ("!", b));
                    let expanded = if body.starts_with("**") {
                        body.to_string()
                    } else {
                        expand(body).map_err(|source| ConfigError {
                            rule: r.name.to_string(),
                            pattern: p.clone(),
                            source,
                        })?
                    };
                    // `exec.allow` names places like `filesystem.executable` does: a plain
                    // directory ("/usr") means everything beneath it.
                    let expanded = if r.name == "exec" && !expanded.contains(['*', '?', '[']) {
                        format!("{}/**", expanded.trim_end_matches('/'))
                    } else {
                        expanded
                    };
                    *p = format!("{bang}{expanded}");
                }
            }
        }
        Ok(Config {
            hook: m.hook.clone(),
            frozen_limit_ms: m.frozen_limit_ms,
            rules,
            net_mode: Some(net_mode),
            visibility: m.visibility,
            unseen: m.unseen.clone(),
            hook_uid: 0,
            hook_gid: 0,
        })
    }

    /// Add `!pattern` exceptions to a path rule (no-op for a rule the profile turned off).
    pub fn except(&mut self, rule: &str, negated: &[String]) {
        if negated.is_empty() {
            return;
        }
        if let Some(r) = self.rules.iter_mut().find(|r| r.name == rule) {
            r.patterns
                .get_or_insert_with(Vec::new)
                .extend(negated.iter().cloned());
        }
    }

    pub fn rule(&self, name: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| r.name == name)
    }
}
