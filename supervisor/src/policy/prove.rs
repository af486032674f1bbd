//! Proving a profile's `[invariants]` against its compiled policy: the binds the launcher
//! mounts (and so what landlock allows: the same lists), the stand-ins that hide paths, the
//! read-only re-binds that protect them, the places exec is allowed from, the seccomp rules,
//! the network mode and destinations, and the `[grants]` envelopes. Each broken promise names
//! the layer that breaks it and the profile line that causes it.
//!
//! A path promise (`never_write = ["/etc/**"]`) is broken by a place P the layer opens when
//! some path the pattern matches lies inside P and is not inside a hidden or protected path:
//! either the pattern's literal start (`/etc` of `/etc/**`) is inside P and not covered, or P
//! is inside that start, the pattern can match beneath P, and P is not covered.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{syscalls, Access, Policy};
use crate::glob;
use crate::profile::invariants::{line_of, Invariants};
use crate::profile::{NetworkMode, Profile};

/// A promise the compiled policy breaks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Breach {
    /// `never_write "/etc/**"`.
    pub invariant: String,
    /// The layer that lets it through: mounts, landlock, seccomp, network, grants.
    pub layer: &'static str,
    pub detail: String,
    /// The profile line that causes it (`file:line`), when one does.
    pub at: Option<String>,
}

impl std::fmt::Display for Breach {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "invariant {} broken by {}: {}",
            self.invariant, self.layer, self.detail
        )?;
        if let Some(at) = &self.at {
            write!(f, " ({at})")?;
        }
        Ok(())
    }
}

/// What a check found: the promises kept (one line each) and those broken.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Proof {
    pub kept: Vec<String>,
    pub broken: Vec<Breach>,
}

/// Expand `{home}` and `{workspace}` in a pattern (the policy's context).
fn expand(p: &Policy, pat: &str) -> String {
    pat.replace("{home}", &p.context.home.to_string_lossy())
        .replace("{workspace}", &p.context.workspace.to_string_lossy())
}

/// The literal start of a pattern: its segments before the first with a wildcard.
pub fn literal_start(pat: &str) -> PathBuf {
    let mut out = PathBuf::from("/");
    for seg in pat.split('/').filter(|s| !s.is_empty()) {
        if seg.contains(['*', '?', '[']) {
            break;
        }
        out.push(seg);
    }
    out
}

/// Where inside `place` the pattern matches something, if anywhere.
fn region(pat: &str, set: &glob::Set, place: &Path) -> Option<PathBuf> {
    let start = literal_start(pat);
    if start.starts_with(place) {
        return Some(start);
    }
    let s = place.to_string_lossy();
    (place.starts_with(&start) && (set.matches(&s).is_some() || set.matches_beneath(&s).is_some()))
        .then(|| place.to_path_buf())
}

/// A place a layer opens: its path, the layer, and the profile keys that can name it.
type Place<'k> = (PathBuf, &'static str, &'k [(&'k str, &'k str)]);

struct Ctx<'a> {
    profile: &'a Profile,
    policy: &'a Policy,
}

impl Ctx<'_> {
    /// `file:line` of the entry of `section.key` that expands to `path`.
    fn line(&self, section: &str, key: &str, path: &Path) -> Option<String> {
        let pol = self.policy;
        line_of(&self.profile.sources, &self.profile.texts, section, key, &|q| {
            Path::new(&expand(pol, q)) == path
        })
    }

    /// The line that makes `place` what it is for `layer` (read_write, executable, …).
    fn line_of_place(&self, keys: &[(&str, &str)], place: &Path) -> Option<String> {
        keys.iter().find_map(|(s, k)| self.line(s, k, place))
    }

    fn covered(&self, region: &Path, by: &[&Vec<PathBuf>]) -> bool {
        by.iter().any(|v| v.iter().any(|c| region.starts_with(c)))
    }

    /// Every place in `places` where a pattern of `pats` matches something not covered.
    fn paths(&self, key: &str, pats: &[String], places: &[Place], covers: &[&Vec<PathBuf>], out: &mut Proof) {
        // `!` entries are exceptions: a region wholly inside one is not promised.
        // (raw, expanded) exceptions.
        let exceptions: Vec<(&str, String)> = pats
            .iter()
            .filter_map(|p| p.strip_prefix('!'))
            .map(|p| (p, expand(self.policy, p)))
            .collect();
        for pat in pats.iter().filter(|p| !p.starts_with('!')) {
            let expanded = expand(self.policy, pat);
            let set = glob::Set::new(std::slice::from_ref(&expanded));
            // An exception narrows the patterns that do not themselves name the place it
            // excepts: `!{workspace}/**` excepts `/usr/**` and `{home}/.bashrc` where the
            // workspace holds them, not `{workspace}/.git/hooks/**`.
            let narrowing: Vec<&String> = exceptions
                .iter()
                .filter(|(raw, _)| {
                    let named = raw
                        .split(['*', '?', '['])
                        .next()
                        .unwrap_or(raw)
                        .trim_end_matches('/');
                    named.is_empty() || !pat.starts_with(named)
                })
                .map(|(_, x)| x)
                .collect();
            let excepted = glob::Set::new(&narrowing);
            let mut kept = true;
            for (place, layer, keys) in places {
                let Some(r) = region(&expanded, &set, place) else {
                    continue;
                };
                // A stand-in or a read-only re-bind covers what a bind shows; nothing covers
                // what a grant may show (its paths are hidden until granted).
                if *layer != GRANT && self.covered(&r, covers) {
                    continue;
                }
                let r_str = r.to_string_lossy();
                if !excepted.is_empty()
                    && excepted.matches(&r_str).is_some()
                    && excepted.matches(&format!("{r_str}/_")).is_some()
                {
                    continue;
                }
                kept = false;
                out.broken.push(Breach {
                    invariant: format!("{key} {pat:?}"),
                    layer,
                    detail: format!("{} is inside {}", r.display(), what(layer, place)),
                    at: self.line_of_place(keys, place),
                });
            }
            if kept {
                out.kept.push(format!("{key} {pat:?}"));
            }
        }
    }
}

fn what(layer: &str, place: &Path) -> String {
    let kind = match layer {
        RW => "the writable bind",
        GRANT => "the grant envelope",
        EXEC => "the executable place",
        _ => "the bind",
    };
    format!("{kind} {}", place.display())
}

const RW: &str = "mounts (read-write bind; landlock allows writing)";
const RO: &str = "mounts (bind; landlock allows reading)";
const EXEC: &str = "landlock (an executable place; its mount allows exec)";
const GRANT: &str = "grants";

/// Check `profile`'s invariants against `policy` (compiled from it), with the host's files
/// (a protected path covers only when it exists at launch).
pub fn prove(profile: &Profile, policy: &Policy) -> Proof {
    prove_with(profile, policy, &|p: &Path| p.exists())
}

/// [`prove`] with the host's files looked up by `exists` (tests pretend).
pub fn prove_with(profile: &Profile, policy: &Policy, exists: &dyn Fn(&Path) -> bool) -> Proof {
    let inv: &Invariants = &profile.invariants;
    let cx = Ctx { profile, policy };
    // A protected path that does not exist is no read-only bind: the agent can create it.
    let protected: Vec<PathBuf> = policy.protected.iter().filter(|p| exists(p)).cloned().collect();
    let mut out = Proof::default();
    let fs_keys: &[(&str, &str)] = &[
        ("filesystem", "read_write"),
        ("filesystem", "state"),
        ("filesystem", "read_only"),
        ("filesystem", "own_credentials"),
        ("filesystem", "executable"),
    ];
    let rw_keys: &[(&str, &str)] = &[("filesystem", "read_write"), ("filesystem", "state")];
    let grant_w: &[(&str, &str)] = &[("grants", "write")];
    let grant_r: &[(&str, &str)] = &[("grants", "read")];
    let exec_keys: &[(&str, &str)] = &[("filesystem", "executable")];
    let hidden = &policy.hidden;
    let protected = &protected;

    let mut writable: Vec<Place> = policy
        .binds
        .iter()
        .filter(|b| b.access == Access::ReadWrite)
        .map(|b| (b.path.clone(), RW, rw_keys))
        .collect();
    writable.extend(policy.grant_write.iter().map(|p| (p.clone(), GRANT, grant_w)));
    cx.paths(
        "never_write",
        &inv.never_write,
        &writable,
        &[hidden, protected],
        &mut out,
    );

    let mut readable: Vec<Place> = policy
        .binds
        .iter()
        .map(|b| (b.path.clone(), RO, fs_keys))
        .collect();
    readable.extend(policy.own_credentials.iter().map(|p| (p.clone(), RO, fs_keys)));
    readable.extend(policy.grant_read.iter().map(|p| (p.clone(), GRANT, grant_r)));
    readable.extend(policy.grant_write.iter().map(|p| (p.clone(), GRANT, grant_w)));
    cx.paths("never_read", &inv.never_read, &readable, &[hidden], &mut out);

    let mut exec: Vec<Place> = policy
        .binds
        .iter()
        .filter(|b| b.exec)
        .map(|b| (b.path.clone(), EXEC, exec_keys))
        .collect();
    exec.extend(policy.exec_only.iter().map(|p| (p.clone(), EXEC, exec_keys)));
    cx.paths("never_exec", &inv.never_exec, &exec, &[hidden], &mut out);

    let mut grants: Vec<Place> = policy
        .grant_read
        .iter()
        .map(|p| (p.clone(), GRANT, grant_r))
        .collect();
    grants.extend(policy.grant_write.iter().map(|p| (p.clone(), GRANT, grant_w)));
    cx.paths("never_grant", &inv.never_grant, &grants, &[], &mut out);

    network(&cx, inv, &mut out);
    seccomp(&cx, inv, &mut out);
    out
}

fn network(cx: &Ctx, inv: &Invariants, out: &mut Proof) {
    let net = &cx.policy.network;
    let mode_line = || {
        line_of(&cx.profile.sources, &cx.profile.texts, "network", "mode", &|_| {
            true
        })
    };
    if let Some(want) = inv.network.as_ref().filter(|w| *w != "any") {
        let ok = match want.as_str() {
            "none" => net.mode == NetworkMode::None,
            _ => matches!(net.mode, NetworkMode::None | NetworkMode::Loopback),
        };
        let name = format!("network {want:?}");
        if ok {
            out.kept.push(name);
        } else {
            out.broken.push(Breach {
                invariant: name,
                layer: "network",
                detail: format!("network.mode is {:?}", net.mode),
                at: mode_line(),
            });
        }
    }
    if let Some(only) = &inv.network_only {
        let name = format!("network_only ({} destinations)", only.len());
        let mut reach: Vec<(String, &str)> = Vec::new();
        for n in &net.names {
            match n.port {
                Some(_) => reach.push((n.to_string(), "allow")),
                // No port: 443 and 80.
                None => {
                    reach.push((format!("{n}:443"), "allow"));
                    reach.push((format!("{n}:80"), "allow"));
                }
            }
        }
        for d in &net.allow {
            let full = if d.addr.is_ipv4() { 32 } else { 128 };
            let s = if d.prefix == full && d.protocol.is_none() {
                format!("{}:{}", d.addr, d.port)
            } else {
                d.to_string()
            };
            reach.push((s, "allow"));
        }
        // `*`: no promise (a derived profile that means to reach anything says so).
        let listed = |r: &str| {
            only.iter().any(|o| {
                o == "*" || o == r || (!o.contains(':') && r.rsplit_once(':').is_some_and(|(h, _)| h == o))
            })
        };
        let before = out.broken.len();
        let anything = only.iter().any(|o| o == "*");
        if net.ask.is_some() && !anything {
            out.broken.push(Breach {
                invariant: name.clone(),
                layer: "network",
                detail:
                    "network.unlisted = \"ask\": a person's answer can let the agent reach any destination"
                        .into(),
                at: line_of(
                    &cx.profile.sources,
                    &cx.profile.texts,
                    "network",
                    "unlisted",
                    &|_| true,
                ),
            });
        }
        // A net grant reaches its name while it lasts: the list must hold it.
        for g in &cx.policy.grant_net {
            let covered = anything
                || only.iter().any(|o| {
                    let (o, g) = (o.as_str(), g.as_str());
                    o == g || (!o.contains(':') && g.rsplit_once(':').is_some_and(|(h, _)| h == o))
                });
            if !covered {
                out.broken.push(Breach {
                    invariant: name.clone(),
                    layer: "grants",
                    detail: format!("[grants] net lets a grant reach {g}, which the list does not hold"),
                    at: line_of(&cx.profile.sources, &cx.profile.texts, "grants", "net", &|q| {
                        q == g
                    }),
                });
            }
        }
        if matches!(net.mode, NetworkMode::Allowlist | NetworkMode::Proxy) {
            for (r, key) in reach.iter().filter(|(r, _)| !listed(r)) {
                let host = r.rsplit_once(':').map_or(r.as_str(), |(h, _)| h);
                out.broken.push(Breach {
                    invariant: name.clone(),
                    layer: "network",
                    detail: format!("the profile lets the agent reach {r}, which the list does not hold"),
                    at: line_of(&cx.profile.sources, &cx.profile.texts, "network", key, &|q| {
                        q == host || q.starts_with(&format!("{host}:")) || q.starts_with(&format!("{host}/"))
                    }),
                });
            }
        }
        if out.broken.len() == before {
            out.kept.push(name);
        }
    }
}

fn seccomp(cx: &Ctx, inv: &Invariants, out: &mut Proof) {
    for s in &inv.deny_syscalls {
        let name = format!("deny_syscalls {s:?}");
        let refused = cx
            .policy
            .seccomp
            .iter()
            .any(|r| r.name == *s && r.when == syscalls::When::Always);
        if refused {
            out.kept.push(name);
        } else {
            out.broken.push(Breach {
                invariant: name,
                layer: "seccomp",
                detail: format!("the filter lets every call of {s} through"),
                at: line_of(
                    &cx.profile.sources,
                    &cx.profile.texts,
                    "syscalls",
                    "deny",
                    &|_| true,
                ),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{compile, Context};
    use crate::profile::{load, Profile};

    fn ctx() -> Context {
        crate::policy::test_context()
    }

    fn proof_of(text: &str) -> Proof {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("p.toml");
        std::fs::write(&f, text).unwrap();
        let p: Profile = load(f.to_str().unwrap()).unwrap();
        let pol = compile(&p, &ctx(), &Default::default()).unwrap();
        // The host is pretended to hold every path.
        let mut proof = prove_with(&p, &pol, &|_| true);
        // Lines are named by the file: keep only its name.
        for b in &mut proof.broken {
            b.at =
                b.at.as_ref()
                    .map(|a| a.rsplit('/').next().unwrap_or(a).to_string());
        }
        proof
    }

    #[test]
    fn every_preset_keeps_its_promises() {
        for (name, _) in crate::profile::PRESETS {
            let p = load(name).unwrap();
            let pol = compile(&p, &ctx(), &Default::default()).unwrap();
            let proof = prove(&p, &pol);
            assert_eq!(proof.broken, vec![], "{name}");
            let least = if *name == "strict" { 8 } else { 40 };
            assert!(proof.kept.len() >= least, "{name}: {:?}", proof.kept);
        }
    }

    #[test]
    fn widening_a_parent_past_its_promises_is_refused_with_the_layer_and_line() {
        let p = proof_of("extends = \"default\"\n[filesystem]\nread_write = [\"{workspace}\", \"/etc\"]\n");
        assert_eq!(p.broken.len(), 1, "{:#?}", p.broken);
        let b = &p.broken[0];
        assert_eq!(b.invariant, "never_write \"/etc/**\"");
        assert!(b.layer.starts_with("mounts"), "{}", b.layer);
        assert_eq!(b.at.as_deref(), Some("p.toml:3"));

        // A workspace under /usr is the workspace: writable by design.
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("d.toml");
        std::fs::write(&f, "extends = \"default\"\n").unwrap();
        let p = load(f.to_str().unwrap()).unwrap();
        let mut c = ctx();
        c.workspace = "/usr/src/proj".into();
        let pol = compile(&p, &c, &Default::default()).unwrap();
        assert_eq!(prove(&p, &pol).broken, vec![]);

        // A protected path dropped: the workspace's hooks (promised here) become writable.
        let promise = "[invariants]\nnever_write = [\"{workspace}/.git/hooks/**\"]\n";
        assert_eq!(
            proof_of(&format!("extends = \"default\"\n{promise}")).broken,
            vec![]
        );
        let p = proof_of(&format!(
            "extends = \"default\"\n[filesystem]\nprotected = []\n{promise}"
        ));
        assert!(
            p.broken.iter().any(|b| b.invariant.contains(".git/hooks")),
            "{:#?}",
            p.broken
        );

        // A hidden path dropped: the SSH keys become readable.
        let p = proof_of("extends = \"default\"\n[filesystem]\nhidden = [\"{home}/.aws\"]\n");
        assert!(
            p.broken
                .iter()
                .any(|b| b.invariant == "never_read \"{home}/.ssh/**\""),
            "{:#?}",
            p.broken
        );

        // A grant envelope that reaches a never-read path.
        let p = proof_of("extends = \"default\"\n[grants]\nread = [\"{home}/.aws\"]\n");
        let b = p
            .broken
            .iter()
            .find(|b| b.layer == "grants")
            .expect("grants breach");
        assert_eq!(b.invariant, "never_read \"{home}/.aws/**\"");
        assert_eq!(b.at.as_deref(), Some("p.toml:3"));

        // The network widened, and an executable /tmp.
        let p = proof_of("extends = \"default\"\n[network]\nmode = \"loopback\"\n[filesystem]\nexecutable = [\"/usr\", \"/tmp\"]\n");
        assert!(
            p.broken
                .iter()
                .any(|b| b.layer == "network" && b.at.as_deref() == Some("p.toml:3")),
            "{:#?}",
            p.broken
        );
        assert!(
            p.broken
                .iter()
                .any(|b| b.invariant == "never_exec \"/tmp/**\"" && b.at.as_deref() == Some("p.toml:5")),
            "{:#?}",
            p.broken
        );
    }

    #[test]
    fn a_person_who_may_allow_anything_or_a_net_grant_outside_the_list_breaks_network_only() {
        let p = proof_of("extends = \"agent\"\n[network]\nunlisted = \"ask\"\n");
        assert_eq!(p.broken.len(), 1, "{:#?}", p.broken);
        assert!(
            p.broken[0].detail.contains("a person's answer"),
            "{}",
            p.broken[0].detail
        );
        assert_eq!(p.broken[0].at.as_deref(), Some("p.toml:3"));
        let p = proof_of("extends = \"agent\"\n[grants]\nnet = [\"pypi.org:443\", \"evil.example:443\"]\n");
        assert_eq!(
            p.broken.len(),
            1,
            "pypi.org is listed, evil.example is not: {:#?}",
            p.broken
        );
        assert_eq!(
            (p.broken[0].layer, p.broken[0].at.as_deref()),
            ("grants", Some("p.toml:3"))
        );
        let p = proof_of(
            "extends = \"agent\"\n[network]\nunlisted = \"ask\"\n[invariants]\nnetwork_only = [\"*\"]\n",
        );
        assert_eq!(p.broken, vec![]);
    }

    #[test]
    fn seccomp_and_destination_promises() {
        // A syscall the filter lets through.
        let p = proof_of("extends = \"default\"\n[invariants]\ndeny_syscalls = [\"bpf\", \"socket\"]\n");
        assert_eq!(p.broken.len(), 1, "{:#?}", p.broken);
        assert_eq!(
            (p.broken[0].invariant.as_str(), p.broken[0].layer),
            ("deny_syscalls \"socket\"", "seccomp")
        );
        let p = proof_of("extends = \"default\"\n[syscalls]\ndeny = [{ name = \"socket\", errno = \"EACCES\", reason = \"no sockets\" }]\n[invariants]\ndeny_syscalls = [\"socket\"]\n");
        assert_eq!(p.broken, vec![]);
        // A destination the promise does not list.
        let p =
            proof_of("extends = \"agent\"\n[network]\nallow = [\"api.anthropic.com\", \"evil.example\"]\n");
        let b = p
            .broken
            .iter()
            .find(|b| b.layer == "network")
            .expect("network breach");
        assert!(b.detail.contains("evil.example:443"), "{}", b.detail);
        assert_eq!(b.at.as_deref(), Some("p.toml:3"));
    }
}
