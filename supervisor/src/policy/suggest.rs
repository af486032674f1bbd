//! `cordon profile suggest --from TRACE…`: the least profile under which the recorded runs
//! would have done what they did — the places they read, wrote and ran programs from, the
//! names they reached — extending a base profile (its hidden and protected paths, monitor,
//! invariants and limits stay), each entry with a comment saying what used it.
//!
//! Places are kept coarse enough to be stable from run to run: a top-level system directory
//! (`/usr`, `/lib`), one entry under `/etc` or the home (`/etc/ssl`, `{home}/.gitconfig`). The
//! workspace is always read-write; `/tmp`, `/proc` and `/dev` are the sandbox's own.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};

use super::Context;

/// What the recorded runs did.
#[derive(Debug, Default)]
pub struct Usage {
    pub read: BTreeSet<PathBuf>,
    pub written: BTreeSet<PathBuf>,
    pub executed: BTreeSet<PathBuf>,
    /// `host:port` the proxy let through.
    pub reached: BTreeSet<String>,
    /// What the base refused in the runs (not granted by the suggestion: said in a comment).
    pub refused: BTreeSet<String>,
    pub traces: Vec<String>,
}

/// The place a path is granted through, as a profile template; None for what needs no entry.
fn place(p: &Path, ctx: &Context) -> Option<String> {
    if p.starts_with(&ctx.workspace) {
        return None;
    }
    let first = |base: &Path, shown: &str| -> Option<String> {
        let rest = p.strip_prefix(base).ok()?;
        match rest.components().next() {
            Some(Component::Normal(c)) => Some(format!("{shown}/{}", c.to_string_lossy())),
            _ => None,
        }
    };
    if p.starts_with(&ctx.home) {
        return first(&ctx.home, "{home}");
    }
    // A top-level directory itself (`/opt`): listed, or probed by the sandbox's own init while
    // it builds the mounts; nothing under it was used.
    if p.components().count() <= 2 {
        return None;
    }
    let top = match p.components().nth(1) {
        Some(Component::Normal(c)) => c.to_string_lossy().into_owned(),
        _ => return None,
    };
    match top.as_str() {
        "tmp" | "proc" | "dev" | "sys" | "run" => None,
        "etc" => first(Path::new("/etc"), "/etc"),
        _ => Some(format!("/{top}")),
    }
}

/// The dynamic loaders of this architecture.
const LOADERS: &[&str] = &["/lib64/ld-linux-x86-64.so.2", "/lib/ld-musl-x86_64.so.1"];

/// A shared object the loader maps executable.
fn shared_object(p: &Path) -> bool {
    let name = p.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
    // `libz.so`, `libz.so.1.2.13` (not `ld.so.cache`).
    name.ends_with(".so")
        || name.split_once(".so.").is_some_and(|(_, v)| {
            !v.is_empty()
                && v.split('.')
                    .all(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
        })
}

/// Places with up to two example paths each.
fn places(paths: impl Iterator<Item = PathBuf>, ctx: &Context) -> BTreeMap<String, Vec<PathBuf>> {
    let mut out: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for p in paths {
        if let Some(pl) = place(&p, ctx) {
            let v = out.entry(pl).or_default();
            if v.len() < 2 {
                v.push(p);
            }
        }
    }
    out
}

fn array(key: &str, first: &[(&str, &str)], entries: &BTreeMap<String, Vec<PathBuf>>, verb: &str) -> String {
    let mut s = format!("{key} = [\n");
    for (v, why) in first {
        s.push_str(&format!("  \"{v}\", # {why}\n"));
    }
    for (pl, ex) in entries {
        let shown: Vec<String> = ex.iter().map(|p| p.display().to_string()).collect();
        s.push_str(&format!("  {}, # {verb} {}\n", toml_str(pl), shown.join(", ")));
    }
    s.push_str("]\n");
    s
}

fn toml_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

/// The suggested profile's text.
pub fn suggest(base: &str, ctx: &Context, u: &Usage) -> String {
    let mut s = String::new();
    s.push_str(&format!(
        "# Suggested by `cordon profile suggest` from {}: what those runs used, nothing more.\n\
         # Everything else comes from {base} (hidden and protected paths, monitor, invariants, limits).\n",
        u.traces.join(", ")
    ));
    s.push_str(&format!("extends = {}\n\n[filesystem]\n", toml_str(base)));
    let written = places(u.written.iter().cloned(), ctx);
    let executed = places(
        u.executed
            .iter()
            .cloned()
            .chain(u.read.iter().filter(|p| shared_object(p)).cloned()),
        ctx,
    );
    let mut executed = executed;
    let mut read = places(u.read.iter().cloned().chain(u.executed.iter().cloned()), ctx);
    // The dynamic loader: the kernel opens it inside execve, so no event records it.
    if !u.executed.is_empty() {
        for l in LOADERS.iter().map(Path::new).filter(|l| l.exists()) {
            if let Some(pl) = place(l, ctx) {
                read.entry(pl.clone()).or_insert_with(|| vec![l.to_path_buf()]);
                executed.entry(pl).or_insert_with(|| vec![l.to_path_buf()]);
            }
        }
    }
    read.retain(|k, _| !written.contains_key(k));
    s.push_str(&array("read_only", &[], &read, "read:"));
    s.push_str(&array(
        "read_write",
        &[("{workspace}", "the workspace")],
        &written,
        "written:",
    ));
    s.push_str(&array(
        "executable",
        &[("{workspace}", "programs the agent builds")],
        &executed,
        "ran or mapped:",
    ));
    if !u.reached.is_empty() {
        let list: Vec<String> = u.reached.iter().map(|r| toml_str(r)).collect();
        s.push_str(&format!(
            "\n# Reached through cordon's proxy in the runs.\n[network]\nmode = \"proxy\"\nallow = [{}]\n\n[invariants]\nnetwork = \"any\"\nnetwork_only = [{}]\n",
            list.join(", "),
            list.join(", ")
        ));
    }
    if !u.refused.is_empty() {
        s.push_str(&format!(
            "\n# Refused in the runs (by {base}), and not granted here — add what the agent needs:\n"
        ));
        for r in u.refused.iter().take(40) {
            s.push_str(&format!("#   {}\n", r.replace('\n', " ")));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> Context {
        crate::policy::test_context()
    }

    #[test]
    fn places_are_coarse_and_what_needs_none_is_left_out() {
        let c = ctx();
        let at = |p: &str| place(Path::new(p), &c);
        assert_eq!(at("/usr/lib/x86_64-linux-gnu/libc.so.6").as_deref(), Some("/usr"));
        assert_eq!(at("/etc/ssl/certs/ca.pem").as_deref(), Some("/etc/ssl"));
        assert_eq!(at("/etc/hostname").as_deref(), Some("/etc/hostname"));
        assert_eq!(at("/home/alice/.gitconfig").as_deref(), Some("{home}/.gitconfig"));
        assert_eq!(at("/home/alice/proj/src/a.rs"), None);
        assert_eq!(at("/tmp/x"), None);
        assert_eq!(at("/proc/self/status"), None);
        assert_eq!(at("/opt"), None);
        assert!(
            shared_object(Path::new("/lib/libc.so.6"))
                && shared_object(Path::new("/x/_ssl.cpython-311-x86_64-linux-gnu.so"))
        );
        assert!(!shared_object(Path::new("/etc/ld.so.cache")));
    }

    #[test]
    fn the_suggestion_holds_what_was_used_with_where_it_came_from() {
        let u = Usage {
            read: [
                "/etc/hostname",
                "/usr/lib/libz.so.1",
                "/home/alice/.gitconfig",
                "/home/alice/proj/a",
            ]
            .into_iter()
            .map(PathBuf::from)
            .collect(),
            written: ["/home/alice/proj/out"].into_iter().map(PathBuf::from).collect(),
            executed: ["/usr/bin/python3"].into_iter().map(PathBuf::from).collect(),
            reached: ["pypi.org:443".to_string()].into_iter().collect(),
            refused: ["openat /etc/shadow: EACCES".to_string()].into_iter().collect(),
            traces: vec!["a.trace".into()],
        };
        let text = suggest("default", &ctx(), &u);
        let raw: crate::profile::RawProfile = toml::from_str(&text).expect(&text);
        // The loader (added whenever something ran) where this host has it.
        let loader = |mut v: Vec<String>| {
            v.retain(|p| p != "/lib64" && p != "/lib");
            v
        };
        let ro = loader(raw.filesystem.read_only.unwrap());
        assert_eq!(ro, vec!["/etc/hostname", "/usr", "{home}/.gitconfig"], "{text}");
        assert_eq!(raw.filesystem.read_write.unwrap(), vec!["{workspace}"]);
        let exec = loader(raw.filesystem.executable.unwrap());
        assert_eq!(exec, vec!["{workspace}", "/usr"]);
        if Path::new("/lib64/ld-linux-x86-64.so.2").exists() {
            assert!(
                text.contains("\"/lib64\", # ran or mapped: /lib64/ld-linux-x86-64.so.2"),
                "{text}"
            );
        }
        assert!(text.contains("# read: /etc/hostname"), "{text}");
        assert!(text.contains("mode = \"proxy\""), "{text}");
        assert!(text.contains("#   openat /etc/shadow: EACCES"), "{text}");
    }
}
