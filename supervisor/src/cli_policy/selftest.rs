//! `cordon selftest`: the battery (`cordon::selftest`) run by a copy of this binary inside a
//! sandbox of the profile.

use super::logging_profile;
use anyhow::{Context as _, Result};
use cordon::policy;
use cordon::profile;
use cordon::text;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A fresh directory for the selftest's sandbox to use as its workspace.
pub fn selftest_workspace() -> Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    let ws = std::env::temp_dir().join(format!("cordon-selftest.{}", std::process::id()));
    std::fs::create_dir_all(&ws).with_context(|| format!("create {}", ws.display()))?;
    std::fs::set_permissions(&ws, std::fs::Permissions::from_mode(0o755))?;
    Ok(ws)
}

/// `cordon selftest`: the battery (`cordon::selftest`) run by a copy of this binary inside a
/// sandbox of the profile (its monitor at `log`: the battery is all attacks).
pub fn selftest_cmd(
    profile_name: &str,
    p: &profile::Profile,
    pol: &policy::Policy,
    json: bool,
    port: Option<u16>,
) -> Result<i32> {
    use cordon::selftest::{Attempt, Setup};
    let ws = &pol.context.workspace;
    let listener = std::net::TcpListener::bind(("127.0.0.1", port.unwrap_or(0)))
        .context("a port on the host's loopback")?;
    // The places the profile promises are never written: each one that exists is tried.
    let exceptions: Vec<String> = p
        .invariants
        .never_write
        .iter()
        .filter_map(|x| x.strip_prefix('!'))
        .map(|x| expand(pol, x))
        .collect();
    // "/**" promises everything: the system's usual places stand for it.
    let everything = [Path::new("/etc"), Path::new("/usr"), Path::new("/var")].map(Path::to_path_buf);
    let never_write: Vec<PathBuf> = p
        .invariants
        .never_write
        .iter()
        .filter(|x| !x.starts_with('!'))
        .map(|x| policy::prove::literal_start(&expand(pol, x)))
        .flat_map(|d| {
            if d == Path::new("/") {
                let mut all = everything.to_vec();
                all.push(pol.context.home.clone());
                all
            } else {
                vec![d]
            }
        })
        .filter(|d| d.is_dir() && d != Path::new("/") && !d.starts_with("/tmp") && !d.starts_with(ws))
        .filter(|d| {
            !exceptions
                .iter()
                .any(|x| d.starts_with(policy::prove::literal_start(x)))
        })
        .collect();
    // The host's service: it greets whoever reaches it with a token the probe checks.
    let host_token = format!("cordon-selftest-{}", std::process::id());
    let served = listener.try_clone()?;
    served.set_nonblocking(true)?;
    let token = host_token.clone();
    let serving = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let still = serving.clone();
    let server = std::thread::spawn(move || {
        use std::io::Write as _;
        // Bounded: it stops when the battery is done (or after two minutes).
        let end = std::time::Instant::now() + std::time::Duration::from_secs(120);
        while still.load(std::sync::atomic::Ordering::Relaxed) && std::time::Instant::now() < end {
            match served.accept() {
                Ok((mut c, _)) => {
                    let _ = c.write_all(format!("{token}\n").as_bytes());
                }
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(10)),
            }
        }
    });
    let setup = Setup {
        host_port: listener.local_addr()?.port(),
        host_token,
        never_write,
        home: pol.context.home.clone(),
        ssh_on_host: cordon::selftest::entries(&pol.context.home.join(".ssh")),
        pids: p.limits.pids,
    };
    let scratch = ws.join(".profile");
    std::fs::create_dir_all(&scratch)?;
    let logging = logging_profile(profile_name, p, &scratch)?;
    let out = Command::new(std::env::current_exe()?)
        .args([
            "run",
            "-q",
            "--selftest-probe",
            "--profile",
            &logging,
            "--workspace",
        ])
        .arg(ws)
        .arg("--")
        .arg(policy::SELFTEST_PROBE)
        .args(["__selftest", &serde_json::to_string(&setup)?])
        .stdin(Stdio::null())
        .output()
        .context("cordon run")?;
    serving.store(false, std::sync::atomic::Ordering::Relaxed);
    let _ = server.join();
    drop(listener);
    let attempts: Vec<Attempt> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    if attempts.is_empty() {
        let err = String::from_utf8_lossy(&out.stderr);
        let why = match out.status.code() {
            Some(126 | 127) => format!(
                "the probe (cordon's own binary, bound at {}) cannot run there: {}",
                policy::SELFTEST_PROBE,
                err.lines().last().unwrap_or("").trim()
            ),
            code => format!("exit {code:?}: {}", err.lines().last().unwrap_or("").trim()),
        };
        anyhow::bail!("the battery did not run inside a sandbox of {profile_name}: {why}");
    }
    let through = attempts.iter().filter(|a| !a.blocked).count();
    let lacking: Vec<String> = cordon::doctor::checks()
        .into_iter()
        .filter(|c| !c.ok)
        .map(|c| format!("{}: {}", c.layer, c.detail))
        .collect();
    if json {
        println!(
            "{}",
            serde_json::json!({"profile": profile_name, "attempts": attempts, "got_through": through, "host_lacks": lacking})
        );
    } else {
        for a in &attempts {
            let verdict = if a.blocked { "blocked    " } else { "GOT THROUGH" };
            println!(
                "{verdict} {:<11} {} — {} ({})",
                a.family,
                text::escape(&a.what),
                a.layer,
                text::escape(&a.detail)
            );
        }
        for l in &lacking {
            println!("this host lacks: {}", text::escape(l));
        }
        println!(
            "{profile_name}: {} attempts, {} blocked, {through} got through",
            attempts.len(),
            attempts.len() - through
        );
    }
    Ok(if through > 0 { 1 } else { 0 })
}

fn expand(pol: &policy::Policy, pat: &str) -> String {
    pat.replace("{home}", &pol.context.home.to_string_lossy())
        .replace("{workspace}", &pol.context.workspace.to_string_lossy())
}
