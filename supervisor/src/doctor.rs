//! `cordon doctor`: what this kernel offers, and which profile layers it can enforce.

use crate::launch::{detect_layout, landlock_abi, Layout};
use std::path::Path;

pub struct Check {
    pub layer: &'static str,
    pub ok: bool,
    pub detail: String,
}

fn read(p: &str) -> String {
    std::fs::read_to_string(p).unwrap_or_default().trim().to_string()
}

pub fn checks() -> Vec<Check> {
    let mut out = Vec::new();
    let root = nix::unistd::geteuid().is_root();
    out.push(Check {
        layer: "privileges",
        ok: root,
        detail: if root {
            "running as root: cordon can create namespaces, cgroups and idmapped mounts".into()
        } else {
            "not root: `cordon run` needs sudo (the agent itself never runs as root)".into()
        },
    });
    let release = read("/proc/sys/kernel/osrelease");
    out.push(Check {
        layer: "kernel",
        ok: true,
        detail: format!("Linux {release}"),
    });

    let abi = landlock_abi();
    out.push(Check {
        layer: "landlock",
        ok: abi >= 1,
        detail: match abi {
            a if a < 1 => "not available: filesystem rules cannot be enforced, so no profile can run (enable the landlock LSM at boot)".into(),
            a if a < 4 => format!("ABI {a}: filesystem rules; no TCP rules (ABI 4) or scopes (ABI 6)"),
            a if a < 6 => format!("ABI {a}: filesystem and TCP bind/connect rules; no abstract-socket/signal scopes (ABI 6)"),
            a => format!("ABI {a}: filesystem rules, TCP bind/connect rules, abstract unix socket and signal scopes"),
        },
    });

    let actions = read("/proc/sys/kernel/seccomp/actions_avail");
    out.push(Check {
        layer: "seccomp",
        ok: actions.contains("kill_process") && actions.contains("errno"),
        detail: if actions.is_empty() {
            "not available: syscall filtering cannot be enforced".into()
        } else {
            format!("filters available (actions: {actions})")
        },
    });

    let ns: Vec<&str> = ["user", "pid", "mnt", "net", "ipc", "uts", "cgroup", "time"]
        .into_iter()
        .filter(|n| Path::new("/proc/self/ns").join(n).exists())
        .collect();
    let max_userns = read("/proc/sys/user/max_user_namespaces");
    out.push(Check {
        layer: "namespaces",
        ok: ns.len() >= 7 && max_userns != "0",
        detail: format!(
            "{} available; user namespaces allowed: {}",
            ns.join(", "),
            if max_userns == "0" {
                "no (user.max_user_namespaces = 0)".to_string()
            } else {
                format!("yes (max {max_userns})")
            }
        ),
    });

    let layout = detect_layout();
    out.push(Check {
        layer: "cgroups",
        ok: layout.is_some(),
        detail: match layout {
            Some(Layout::Hybrid) => "hybrid: v1 controllers for memory, cpu, pids + cgroup2 at /sys/fs/cgroup/unified for placement and kill".into(),
            Some(Layout::Unified) => "cgroup v2: memory, cpu, pids limits need those controllers enabled for cordon's cgroup's children".into(),
            None => "no cgroup2 hierarchy: limits cannot be enforced".into(),
        },
    });

    out.extend(probe_checks(root, ns.contains(&"net")));
    out
}

/// The probes as this host runs them: loaded (loading them now if no `cordon` has), each
/// program's hook and whether it is attached, and what the egress proxy will need.
fn probe_checks(root: bool, netns: bool) -> Vec<Check> {
    let btf = Path::new("/sys/kernel/btf/vmlinux").exists();
    let bpffs = read("/proc/mounts")
        .lines()
        .any(|l| l.split_whitespace().nth(2) == Some("bpf"));
    let basics = format!(
        "BTF {}; bpffs {}",
        if btf { "present" } else { "missing" },
        if bpffs {
            "mounted"
        } else {
            "not mounted (cordon mounts it)"
        }
    );
    if !root {
        return vec![Check {
            layer: "ebpf",
            ok: false,
            detail: format!("{basics}; probes not checked: loading them needs root"),
        }];
    }
    let probes = match crate::probes::Probes::ready() {
        Ok(p) => p,
        Err(e) => {
            return vec![Check {
                layer: "ebpf",
                ok: false,
                detail: format!(
                    "{basics}; {e}: no monitored run is possible (`--no-probes` runs unrecorded)"
                ),
            }]
        }
    };
    let mut out = vec![Check {
        layer: "ebpf",
        ok: true,
        detail: format!(
            "{basics}; probes {} and pinned at {}",
            match probes.loaded_in {
                Some(t) => format!("loaded just now in {} ms", t.as_millis()),
                None => "already loaded".into(),
            },
            probes.pin_dir().display()
        ),
    }];
    let hooks = probes.hooks();
    for h in &hooks {
        out.push(Check {
            layer: "bpf hook",
            ok: h.loaded && !h.attached.starts_with("NOT"),
            detail: format!(
                "{:<12} {}: {}",
                h.program,
                h.hook,
                if h.loaded { h.attached } else { "NOT loaded" }
            ),
        });
    }
    out.push(Check {
        layer: "keep-warm",
        ok: true,
        detail: match crate::probes::lingerer() {
            Some(l) => format!(
                "a lingerer (pid {}) holds the cgroup hooks on an empty cgroup and {} MiB of cordon's code locked in memory, until {} s after the last sandbox ends ({}; `cordon probes cool` ends it now)",
                l.pid,
                l.locked_kib / 1024,
                l.hold.as_secs(),
                crate::probes::KEEP_WARM_ENV
            ),
            None => format!(
                "no lingerer runs: the next launch switches the kernel's cgroup-BPF keys on itself; the lingerer it starts as it ends stays {} s ({})",
                crate::probes::keep_warm().unwrap_or(crate::probes::KEEP_WARM).as_secs(),
                crate::probes::KEEP_WARM_ENV
            ),
        },
    });
    let redirect = [
        "connect4",
        "connect6",
        "sendmsg4",
        "sendmsg6",
        "recvmsg4",
        "recvmsg6",
        "getpeername4",
        "getpeername6",
    ];
    let hooks_ok = redirect
        .iter()
        .all(|p| hooks.iter().any(|h| h.program == *p && h.loaded));
    out.push(Check {
        layer: "proxy",
        ok: hooks_ok && netns,
        detail: format!(
            "network.mode = \"proxy\" (egress by name, the AI firewall): cgroup connect4/6, sendmsg4/6, recvmsg4/6 and getpeername4/6 hooks {}, network namespaces {}; TLS interception needs a system CA bundle to extend: {}",
            if hooks_ok { "load" } else { "do NOT load" },
            if netns { "available" } else { "NOT available" },
            crate::launch::mounts::SYSTEM_BUNDLES
                .iter()
                .find(|p| std::path::Path::new(p).is_file())
                .map_or("NONE found (credentials and the gateway cannot be used)".to_string(), |p| (*p).to_string())
        ),
    });
    out
}
