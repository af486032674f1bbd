//! The command line of policy you can check (docs/proofs.md): `cordon explain` and its
//! `--verify` (`explain`), `cordon why` and `cordon profile suggest`, both read from traces
//! (`recorded`), and `cordon selftest` (`selftest`).

mod explain;
mod recorded;
mod selftest;

pub use explain::explain_cmd;
pub use recorded::{suggest_cmd, why_cmd};
pub use selftest::{selftest_cmd, selftest_workspace};

use anyhow::{Context as _, Result};
use cordon::policy::explain::{Answer, Query};
use cordon::profile;
use cordon::text;
use std::path::Path;

/// A profile extending `name` whose monitor rules only log, written in `dir`.
pub(super) fn logging_profile(name: &str, p: &profile::Profile, dir: &Path) -> Result<String> {
    let base = if name.contains('/') || name.ends_with(".toml") {
        std::fs::canonicalize(name)
            .with_context(|| format!("profile {name}"))?
            .to_string_lossy()
            .into_owned()
    } else {
        name.to_string()
    };
    // A TOML basic string is a JSON string.
    let mut text = format!("extends = {}\n", serde_json::to_string(&base)?);
    for r in &p.monitor.rules {
        text.push_str(&format!("[monitor.{}]\nresponse = \"log\"\n", r.name));
    }
    let f = dir.join("explain-verify.toml");
    std::fs::write(&f, text).with_context(|| format!("write {}", f.display()))?;
    Ok(f.to_string_lossy().into_owned())
}

pub(super) fn print_answer(q: &Query, a: &Answer) {
    let yes = if a.allowed { "yes" } else { "no" };
    let at = a.at.as_ref().map(|l| format!(" ({l})")).unwrap_or_default();
    println!(
        "{}: {yes} — {}: {}{at}",
        text::escape(&q.to_string()),
        a.layer,
        text::escape(&a.why)
    );
    for m in &a.monitor {
        println!("  {}", text::escape(m));
    }
}
