//! The resolved policy in words: what `cordon profile show` prints and the trace header
//! records.

use super::Policy;
use crate::profile::Profile;

/// Every layer of `pol`, as the agent will meet it.
pub fn render(p: &Profile, pol: &Policy) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(s, "profile      {} (sha256 {})", p.name, p.hash);
    let _ = writeln!(s, "from         {}", p.sources.join(" <- "));
    let _ = writeln!(s, "workspace    {}", pol.context.workspace.display());
    let _ = writeln!(s, "home         {}", pol.context.home.display());
    let _ = writeln!(
        s,
        "identity     agent = host uid {} gid {} (inside uid {})",
        pol.context.agent_uid,
        pol.context.agent_gid,
        super::INSIDE_ID
    );
    let _ = writeln!(s, "\n[filesystem] (missing read-only paths are skipped)");
    for b in &pol.binds {
        let _ = writeln!(
            s,
            "  {:<10} {}{}{}",
            match b.access {
                super::Access::ReadOnly => "read-only",
                super::Access::ReadWrite => "read-write",
            },
            b.path.display(),
            if b.exec { "  +exec" } else { "" },
            if b.idmap {
                "  (your files appear as the agent's)"
            } else {
                ""
            }
        );
    }
    let _ = writeln!(
        s,
        "  tmpfs      /tmp ({} MiB), /dev (minimal), /proc (own pid namespace, /proc/sys read-only)",
        pol.tmp_size >> 20
    );
    for h in &pol.hidden {
        let _ = writeln!(s, "  hidden     {}", h.display());
    }
    for h in &pol.protected {
        let _ = writeln!(s, "  protected  {} (read-only)", h.display());
    }
    for c in &pol.own_credentials {
        let _ = writeln!(
            s,
            "  credential {} (the agent's own: visible read-only, not a sensitive read)",
            c.display()
        );
    }
    let _ = writeln!(s, "\n[network]\n  mode       {:?}", pol.network.mode);
    for d in &pol.network.allow {
        let _ = writeln!(s, "  allow      {d}");
    }
    for n in &pol.network.names {
        let ports = n.port.map_or("443, 80".into(), |p| p.to_string());
        let _ = writeln!(s, "  allow      {n} (ports {ports}, through cordon's proxy)");
    }
    for d in &pol.network.deny {
        let _ = writeln!(s, "  deny       {d}");
    }
    for (name, ip) in &pol.network.resolve {
        let _ = writeln!(s, "  resolve    {name} -> {ip}");
    }
    for c in &pol.network.credentials {
        let _ = writeln!(
            s,
            "  credential {} for {}{}: the agent gets a placeholder in {}; cordon adds the real one{}",
            match &c.secret {
                crate::profile::SecretSource::Env(v) => format!("env:{v}"),
                crate::profile::SecretSource::File(p) => format!("file:{p}"),
                crate::profile::SecretSource::Cmd(_) => "cmd:…".into(),
            },
            c.host,
            c.header.as_ref().map_or(String::new(), |h| format!(" ({h})")),
            c.env,
            if c.optional { " (when set)" } else { "" }
        );
    }
    let g = &pol.network.gateway;
    if pol.network.mode == crate::profile::NetworkMode::Proxy {
        let _ = writeln!(
            s,
            "  gateway    model API traffic on intercepted hosts{} recorded: {:?}, at most {} bytes a message",
            if g.hosts.is_empty() {
                String::new()
            } else {
                format!(" (and {})", g.hosts.join(", "))
            },
            g.record,
            g.max_bytes
        );
        let d = &pol.network.dlp;
        let mut inspected: Vec<String> = d.inspect.iter().map(ToString::to_string).collect();
        if d.inspect_all {
            inspected.push("every allowed name".into());
        }
        let _ = writeln!(
            s,
            "  dlp        canaries {}; TLS opened for {}",
            if d.canaries {
                "planted where credentials are hidden"
            } else {
                "off"
            },
            if inspected.is_empty() {
                "credential and gateway hosts only".into()
            } else {
                inspected.join(", ")
            }
        );
    }
    if pol.network.mode == crate::profile::NetworkMode::Proxy {
        let _ = match pol.network.ask {
            Some(d) => writeln!(
                s,
                "  unlisted   ask: held while a person decides (cordon net allow|deny), refused after {} s",
                d.as_secs()
            ),
            None => writeln!(s, "  unlisted   refused"),
        };
    }
    let l = &pol.limits;
    let _ = writeln!(s, "\n[limits]");
    let opt = |v: Option<String>| v.unwrap_or_else(|| "unlimited".into());
    let _ = writeln!(
        s,
        "  memory     {}",
        opt(l.memory.map(|m| format!("{} MiB", m >> 20)))
    );
    let _ = writeln!(s, "  cpu        {}", opt(l.cpu.map(|c| format!("{c} cores"))));
    let _ = writeln!(s, "  pids       {}", opt(l.pids.map(|v| v.to_string())));
    let _ = writeln!(s, "  open_files {}", opt(l.open_files.map(|v| v.to_string())));
    let _ = writeln!(
        s,
        "  file_size  {}",
        opt(l.file_size.map(|m| format!("{} MiB", m >> 20)))
    );
    let _ = writeln!(
        s,
        "  wall_clock {}",
        opt(l.wall_clock_ms.map(|m| format!("{} s", m / 1000)))
    );
    let _ = writeln!(s, "\n[environment] (everything else is removed)");
    // Values are shown only for harmless names; the rest as a hash (secrets never land in a
    // trace header or on a screen).
    for (k, v) in &pol.env {
        if crate::secret::harmless(k) {
            let _ = writeln!(s, "  {k}={v}");
        } else {
            let _ = writeln!(s, "  {k}={} ({} bytes)", crate::secret::marker(v), v.len());
        }
    }
    let m = &pol.monitor;
    let _ = writeln!(
        s,
        "\n[monitor] (a frozen sandbox nobody decides about is killed after {} s)",
        m.frozen_limit_ms / 1000
    );
    if m.visibility != crate::profile::monitor::Visibility::Full {
        let _ = writeln!(
            s,
            "  visibility       {} (processes and egress only: no syscall is counted or recorded){}",
            m.visibility.name(),
            if m.unseen.is_empty() {
                String::new()
            } else {
                format!(
                    "; not running, they read syscall records: {}",
                    m.unseen.join(", ")
                )
            }
        );
    }
    for r in &m.rules {
        let what = match (&r.patterns, r.limit, r.window_ms) {
            (Some(p), _, _) if !p.is_empty() => {
                let shown: Vec<&str> = p.iter().take(3).map(String::as_str).collect();
                let more = p.len().saturating_sub(shown.len());
                format!(
                    "{}{}",
                    shown.join(", "),
                    if more > 0 {
                        format!(" and {more} more")
                    } else {
                        String::new()
                    }
                )
            }
            (_, limit, window) if window > 0 => format!("{limit} in {} s", window as f64 / 1000.0),
            (_, limit, _) if limit > 0 => format!("limit {limit}"),
            _ => String::new(),
        };
        let _ = writeln!(s, "  {:<16} {:<7} {what}", r.name, r.response.name());
    }
    if !m.hook.is_empty() {
        let _ = writeln!(s, "  hook             {}", m.hook.join(" "));
    }
    let allowed: Vec<&str> = pol.terminal.iter().map(|f| f.name()).collect();
    let _ = writeln!(
        s,
        "\n[terminal] (what an interactive agent's output may do beyond its screen)\n  allow      {}",
        if allowed.is_empty() {
            "nothing (titles, clipboard, non-web links, notifications, reports removed)".to_string()
        } else {
            allowed.join(", ")
        }
    );
    let _ = writeln!(
        s,
        "\n[syscalls] (default allow; non-native ABIs kill the process)"
    );
    for r in &pol.seccomp {
        let action = match r.action {
            super::syscalls::Action::Errno(e) => format!("{}", std::io::Error::from_raw_os_error(e)),
            super::syscalls::Action::KillProcess => "kill".into(),
        };
        let when = match r.when {
            super::syscalls::When::Always => String::new(),
            super::syscalls::When::ArgMasked { index, mask, .. } => format!(" if arg{index} & {mask:#x}"),
            super::syscalls::When::Both([(i, m, _), (j, n, _)]) => {
                format!(" if arg{i} & {m:#x} and arg{j} & {n:#x}")
            }
        };
        let _ = writeln!(s, "  {:<18} -> {action}{when}: {}", r.name, r.reason);
    }
    if !pol.invariants.is_empty() {
        let _ = writeln!(s, "\n[invariants] (proven against this policy)");
        for i in &pol.invariants {
            let _ = writeln!(s, "  {i}");
        }
    }
    s
}
