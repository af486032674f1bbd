//! `cordon explain PROFILE --can 'ACTION' [--verify]`: the answer of the compiled policy
//! (`policy::explain`), and with `--verify` the same action done for real by a shell in a
//! throwaway sandbox of that profile (extended with every monitor rule at `log`: a rule would
//! freeze the very probe it is asked about), compared with the answer. A disagreement is a
//! bug in the model or in the sandbox: exit 1, loudly.

use super::{logging_profile, print_answer};
use anyhow::{Context as _, Result};
use cordon::policy::explain::{explain, Query};
use cordon::policy::{self, NetworkPolicy};
use cordon::profile::{self, NetworkMode};
use cordon::text;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// What the probe in the sandbox found.
enum Seen {
    Allowed(String),
    Refused(String),
    /// Not done (why).
    Skipped(String),
}

pub fn explain_cmd(
    profile_name: &str,
    can: &[String],
    pol: &policy::Policy,
    p: &profile::Profile,
    verify: bool,
    json: bool,
) -> Result<i32> {
    let mut disagreements = 0;
    // The probes run under the profile with every monitor rule at `log` (a rule would freeze
    // the very probe it is asked about); the sandbox is otherwise the profile's.
    let scratch = std::env::temp_dir().join(format!("cordon-explain.{}", std::process::id()));
    let probe_profile = if verify {
        std::fs::create_dir_all(&scratch).with_context(|| format!("create {}", scratch.display()))?;
        logging_profile(profile_name, p, &scratch)?
    } else {
        String::new()
    };
    let code = answer_all(
        profile_name,
        &probe_profile,
        can,
        pol,
        p,
        verify,
        json,
        &mut disagreements,
    );
    if verify {
        let _ = std::fs::remove_dir_all(&scratch);
    }
    code?;
    if disagreements > 0 {
        text::eprint(&format!(
            "{disagreements} answer(s) disagree with what the sandbox did: the model or the sandbox is wrong"
        ));
        return Ok(1);
    }
    Ok(0)
}

#[allow(clippy::too_many_arguments)]
fn answer_all(
    profile_name: &str,
    probe_profile: &str,
    can: &[String],
    pol: &policy::Policy,
    p: &profile::Profile,
    verify: bool,
    json: bool,
    disagreements: &mut u32,
) -> Result<()> {
    for q in can {
        let query = Query::parse(q, &pol.context.home).map_err(|e| anyhow::anyhow!(e.0))?;
        let a = explain(p, pol, &query);
        let seen = verify.then(|| probe(profile_name, probe_profile, pol, &query));
        let agrees = match &seen {
            Some(Seen::Allowed(_)) => a.allowed,
            Some(Seen::Refused(_)) => !a.allowed,
            _ => true,
        };
        if !agrees {
            *disagreements += 1;
        }
        if json {
            let verified = seen.as_ref().map(|s| match s {
                Seen::Allowed(d) => serde_json::json!({"allowed": true, "detail": d, "agrees": agrees}),
                Seen::Refused(d) => serde_json::json!({"allowed": false, "detail": d, "agrees": agrees}),
                Seen::Skipped(d) => serde_json::json!({"skipped": d}),
            });
            println!(
                "{}",
                serde_json::json!({"query": query.to_string(), "answer": a, "verified": verified})
            );
        } else {
            print_answer(&query, &a);
            match &seen {
                Some(Seen::Allowed(d)) | Some(Seen::Refused(d)) => {
                    let did = if matches!(seen, Some(Seen::Allowed(_))) {
                        "done"
                    } else {
                        "refused"
                    };
                    let verdict = if agrees {
                        "agrees"
                    } else {
                        "DISAGREES with the answer above"
                    };
                    println!(
                        "  verified in a sandbox of {profile_name}: {did} ({}) — {verdict}",
                        text::escape(d)
                    );
                }
                Some(Seen::Skipped(why)) => println!("  not verified: {why}"),
                None => {}
            }
        }
    }
    Ok(())
}

/// Do `q` for real in a sandbox of the profile.
fn probe(profile_name: &str, probe_profile: &str, pol: &policy::Policy, q: &Query) -> Seen {
    // The probe is a shell: a profile that shows none cannot be probed this way.
    if !std::path::Path::new("/bin/sh").exists()
        || !pol
            .binds
            .iter()
            .any(|b| b.exec && Path::new("/bin/sh").starts_with(&b.path))
    {
        return Seen::Skipped(format!("{profile_name} lets no /bin/sh run to probe with"));
    }
    if let Query::Read(p) = q {
        if std::fs::symlink_metadata(p).is_err() {
            return Seen::Skipped("nothing is there on the host to read".into());
        }
        let empty = if p.is_dir() {
            std::fs::read_dir(p).is_ok_and(|mut d| d.next().is_none())
        } else {
            std::fs::metadata(p).is_ok_and(|m| m.len() == 0)
        };
        if empty {
            return Seen::Skipped(
                "it is empty on the host: reading it cannot tell a stand-in from it".into(),
            );
        }
    }
    let (script, arg): (&str, String) = match q {
        Query::Read(p) if p.is_dir() => ("ls -A -- \"$1\" | head -c1 | wc -c", path_arg(p)),
        // The shell opens it (a failure ends the script); then: did it hold anything?
        Query::Read(p) => ("exec 3< \"$1\" && head -c1 <&3 | wc -c", path_arg(p)),
        Query::Write(p) if p.is_dir() => (
            "f=\"$1/.cordon-explain-$$\" && : > \"$f\" && rm -f -- \"$f\" && echo written",
            path_arg(p),
        ),
        // Opened for appending, nothing written: the file stays as it was.
        Query::Write(p) if p.exists() => ("exec 3>> \"$1\" && echo opened", path_arg(p)),
        Query::Write(p) => (": > \"$1\" && rm -f -- \"$1\" && echo created", path_arg(p)),
        Query::Exec(p) if p.is_file() => (
            "\"$1\" --version </dev/null >/dev/null 2>&1; s=$?; [ $s -ne 126 ] && [ $s -ne 127 ] && echo ran",
            path_arg(p),
        ),
        Query::Exec(p) => (
            "cp /bin/true \"$1\" 2>/dev/null || exit 3; \"$1\"; s=$?; rm -f -- \"$1\"; [ $s -eq 0 ] && echo ran",
            path_arg(p),
        ),
        Query::Connect(host, port) => return connect_probe(probe_profile, pol, host, *port),
        Query::Resolve(_) => return Seen::Skipped("a lookup would go to the host's resolver when the profile allows it".into()),
        Query::Syscall(_) => {
            return Seen::Skipped(
                "EPERM is also the kernel's own answer to a process without capabilities: the effect cannot tell the layers apart".into(),
            )
        }
    };
    run_probe(probe_profile, pol, script, &arg)
}

fn path_arg(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

fn connect_probe(profile_name: &str, pol: &policy::Policy, host: &str, port: u16) -> Seen {
    let NetworkPolicy { mode, .. } = &pol.network;
    let loopback = host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if !(loopback || *mode == NetworkMode::None) {
        return Seen::Skipped(
            "it would send traffic beyond this machine (verified only for loopback, or with no network)"
                .into(),
        );
    }
    if !Path::new("/usr/bin/python3").exists() {
        return Seen::Skipped("no /usr/bin/python3 to connect with".into());
    }
    // Refused by the peer means the network let it through.
    let script = "/usr/bin/python3 -c 'import socket,sys\ns=socket.socket(socket.AF_INET6 if \":\" in sys.argv[1] else socket.AF_INET)\ns.settimeout(2)\ntry:\n s.connect((sys.argv[1], int(sys.argv[2]))); print(\"connected\")\nexcept ConnectionRefusedError: print(\"refused by the peer\")\n' \"$1\" \"$2\"";
    run_probe_args(profile_name, pol, script, &[host.to_string(), port.to_string()])
}

fn run_probe(profile_name: &str, pol: &policy::Policy, script: &str, arg: &str) -> Seen {
    run_probe_args(profile_name, pol, script, &[arg.to_string()])
}

fn run_probe_args(profile_name: &str, pol: &policy::Policy, script: &str, args: &[String]) -> Seen {
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("cordon"));
    let out = Command::new(exe)
        .args(["run", "-q", "--profile", profile_name, "--workspace"])
        .arg(&pol.context.workspace)
        .args(["--", "/bin/sh", "-c", script, "sh"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("cordon run");
    let out = match out {
        Ok(o) => o,
        Err(e) => return Seen::Skipped(format!("the sandbox did not start: {e:#}")),
    };
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    let last_err = stderr.lines().last().unwrap_or("").to_string();
    match out.status.code() {
        Some(125) => Seen::Skipped(format!("the sandbox did not start: {last_err}")),
        // The exec probe could not put a program where none is: nothing to run there.
        Some(3) if script.starts_with("cp /bin/true") => {
            Seen::Skipped("nothing is there to run, and the sandbox cannot put a program there".into())
        }
        Some(0) if stdout == "0" => Seen::Refused("opened, but empty: a stand-in, or an empty file".into()),
        Some(0) => Seen::Allowed(stdout),
        Some(code) => Seen::Refused(if last_err.is_empty() {
            format!("exit status {code}")
        } else {
            last_err
        }),
        None => Seen::Refused("killed by a signal".into()),
    }
}
