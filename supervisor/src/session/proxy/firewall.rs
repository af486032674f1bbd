//! The AI firewall's credentials (`[[network.credential]]`): each secret is read by cordon
//! when the run starts (from its own environment, a file or a command), kept only in this
//! process (zeroed on drop) and never given to the agent, which finds a per-run placeholder
//! in its environment instead. The proxy intercepts TLS to the credential's host and puts the
//! secret where the placeholder was; the placeholder going anywhere else is refused.

use crate::text::Refusal;
use std::path::Path;
use std::sync::Arc;

use zeroize::Zeroizing;

use std::path::PathBuf;

use base64::Engine;

use super::dlp::{random_from, Canary, Scanner};
use super::tls::{self, Authority, TlsError};
use crate::launch::mounts::SYSTEM_BUNDLES;
use crate::policy::{Decoy, Policy, Trust};
use crate::profile::{Credential as Rule, SecretSource};

/// Why the run cannot start with the profile's credentials.
#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    #[error("network.credential for {host} ({source_kind}): {why}; no agent was started")]
    Secret {
        host: String,
        source_kind: String,
        why: String,
    },
    #[error("TLS interception: {0}; no agent was started")]
    Tls(#[from] TlsError),
    #[error(
        "TLS interception: no system CA bundle to add the run's CA to (looked for {0}); no agent was started"
    )]
    NoBundle(String),
}

/// A secret value: only in this process, zeroed when dropped, shown only as its hash.
pub struct Secret(Zeroizing<String>);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&crate::secret::marker(&self.0))
    }
}

/// One credential, ready for the proxy.
#[derive(Debug)]
pub struct Credential {
    pub rule: Rule,
    /// What the agent has instead of the secret.
    pub placeholder: String,
    pub secret: Secret,
}

impl Credential {
    /// The secret as a marker with its hash (what the start line and records show).
    pub fn secret_hash(&self) -> String {
        crate::secret::marker(self.secret.expose())
    }
}

/// TLS interception: the run's CA, the agent-facing and upstream configurations.
#[derive(Debug)]
pub struct Interception {
    pub authority: Arc<Authority>,
    /// The agent-facing TLS configuration (certificates from `authority`).
    pub server: Arc<rustls::ServerConfig>,
    pub upstream: tls::Upstream,
}

/// What the proxy of a `proxy` sandbox needs beyond its rules: credentials, the model
/// gateway, data loss prevention, and TLS interception when any of them asks for plaintext.
#[derive(Debug)]
pub struct Firewall {
    /// None when nothing needs plaintext: every connection is relayed untouched.
    pub tls: Option<Interception>,
    pub credentials: Vec<Credential>,
    /// The model gateway: what is recorded of model API requests on intercepted hosts.
    pub recorder: super::gateway::Recorder,
    pub dlp: Scanner,
    /// Where the canaries were planted ("~/.aws/credentials"), for the start line.
    pub canaries: Vec<String>,
    inspect_all: bool,
    inspect: Vec<crate::profile::egress::NameRule>,
    /// `[grants] secrets`: which credentials are put in requests right now.
    pub gate: Arc<SecretGate>,
}

/// `[grants] secrets`: a credential of the envelope goes into requests only while a grant
/// lasts; the others always do.
#[derive(Debug, Default)]
pub struct SecretGate {
    /// The credentials' variables the envelope holds.
    pub envelope: Vec<String>,
    open: std::sync::Mutex<Vec<(String, std::time::Instant)>>,
}

impl SecretGate {
    pub fn new(envelope: Vec<String>) -> SecretGate {
        SecretGate {
            envelope,
            open: std::sync::Mutex::default(),
        }
    }

    fn open(&self) -> std::sync::MutexGuard<'_, Vec<(String, std::time::Instant)>> {
        self.open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// May the credential in `env` go into a request now?
    pub fn allows(&self, env: &str) -> bool {
        !self.envelope.iter().any(|e| e == env)
            || self
                .open()
                .iter()
                .any(|(e, until)| e == env && *until > std::time::Instant::now())
    }

    /// A grant: `env` until `until` (the latest of its grants counts).
    pub fn grant(&self, env: &str, until: std::time::Instant) {
        self.open().push((env.to_string(), until));
    }

    /// Every grant of `env` ended (revoked, or expired).
    pub fn close(&self, env: &str) {
        self.open().retain(|(e, _)| e != env);
    }
}

impl Firewall {
    /// Does the proxy terminate TLS for `name`?
    pub fn intercepts(&self, name: &str) -> bool {
        self.tls.is_some()
            && (self.credentials.iter().any(|c| c.rule.host == name)
                || self.recorder.cfg.hosts.iter().any(|h| h == name)
                || (self.inspect_all && !name.is_empty())
                || self.inspect.iter().any(|n| n.matches_name(name)))
    }

    /// The names whose TLS is opened, as the profile gave them.
    pub fn intercepted(&self) -> Vec<String> {
        let mut v: Vec<String> = self.credentials.iter().map(|c| c.rule.host.clone()).collect();
        v.extend(self.recorder.cfg.hosts.iter().cloned());
        v.extend(self.inspect.iter().map(ToString::to_string));
        if self.inspect_all {
            v.push("every allowed name".into());
        }
        v.dedup();
        v
    }

    /// The credential whose placeholder appears in `text`, if any.
    pub fn placeholder_in(&self, text: &str) -> Option<&Credential> {
        self.credentials.iter().find(|c| text.contains(&c.placeholder))
    }

    /// The secret values (for the redactor: they must not appear in any record).
    pub fn secrets(&self) -> impl Iterator<Item = &str> {
        self.credentials.iter().map(|c| c.secret.expose())
    }
}

/// For a `proxy` sandbox: read the secrets and give the agent placeholders, plant the
/// canaries, and when anything needs plaintext make the run's CA and put it in the
/// sandbox's trust store. None for the other network modes.
pub fn prepare(policy: &mut Policy, sandbox: &str) -> Result<Option<Firewall>, FirewallError> {
    if policy.network.mode != crate::profile::NetworkMode::Proxy {
        return Ok(None);
    }
    let mut credentials = Vec::new();
    for rule in &policy.network.credentials {
        if let (true, SecretSource::Env(v)) = (rule.optional, &rule.secret) {
            if std::env::var_os(v).is_none() {
                continue;
            }
        }
        let reader = Reader {
            uid: policy.context.owner_uid,
            gid: policy.context.owner_gid,
            home: &policy.context.home,
        };
        let secret = read(&rule.secret, Some(&reader)).map_err(|why| FirewallError::Secret {
            host: rule.host.clone(),
            source_kind: describe(&rule.secret),
            why: why.0,
        })?;
        let placeholder = format!("cordon-placeholder-{}", random_hex(16));
        policy.env.insert(rule.env.clone(), placeholder.clone());
        credentials.push(Credential {
            rule: rule.clone(),
            placeholder,
            secret,
        });
    }
    let canaries = if policy.network.dlp.canaries {
        plant(policy)
    } else {
        Vec::new()
    };
    let dlp = &policy.network.dlp;
    let needs_tls = !credentials.is_empty()
        || !policy.network.gateway.hosts.is_empty()
        || dlp.inspect_all
        || !dlp.inspect.is_empty();
    let tls = if needs_tls {
        Some(interception(policy, sandbox)?)
    } else {
        None
    };
    Ok(Some(Firewall {
        tls,
        credentials,
        recorder: super::gateway::Recorder::new(policy.network.gateway.clone()),
        dlp: Scanner::new(&canaries, model_hosts(policy)),
        canaries: {
            let mut at: Vec<String> = canaries.iter().map(|c| c.planted.clone()).collect();
            at.dedup();
            at
        },
        inspect_all: policy.network.dlp.inspect_all,
        inspect: policy.network.dlp.inspect.clone(),
        gate: Arc::new(SecretGate::new(policy.grant_secrets.clone())),
    }))
}

/// The hosts of the run's model APIs: its credentials' and the gateway's.
fn model_hosts(policy: &Policy) -> Vec<String> {
    let mut h: Vec<String> = policy
        .network
        .credentials
        .iter()
        .map(|c| c.host.clone())
        .collect();
    h.extend(policy.network.gateway.hosts.iter().cloned());
    h
}

/// The run's CA, in the sandbox's trust store.
fn interception(policy: &mut Policy, sandbox: &str) -> Result<Interception, FirewallError> {
    let authority = Arc::new(Authority::new(sandbox)?);
    let upstream = tls::Upstream::new(policy.network.upstream_ca.as_deref())?;
    // The system bundle the sandbox sees (cordon's is bound over it); the variables that
    // name a bundle point there too. The agent's own extra CAs (NODE_EXTRA_CA_CERTS names
    // one file) stay trusted: they go into the bundle.
    let Some((path, system)) = SYSTEM_BUNDLES
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok().map(|text| (*p, text)))
    else {
        return Err(FirewallError::NoBundle(SYSTEM_BUNDLES.join(", ")));
    };
    let mut bundle_pem = format!("{system}\n{}", authority.cert_pem);
    if let Some(theirs) = policy.env.get("NODE_EXTRA_CA_CERTS") {
        if let Ok(text) = std::fs::read_to_string(theirs) {
            bundle_pem.push_str(&text);
        }
    }
    policy.trust = Some(Trust { bundle_pem });
    for var in [
        "SSL_CERT_FILE",
        "REQUESTS_CA_BUNDLE",
        "CURL_CA_BUNDLE",
        "GIT_SSL_CAINFO",
        "NODE_EXTRA_CA_CERTS",
    ] {
        policy.env.insert(var.into(), path.into());
    }
    Ok(Interception {
        server: authority.server_config(),
        authority,
        upstream,
    })
}

const UPPER_DIGITS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// Decoy credentials where the profile hides real ones that exist on the host: each holds
/// canaries made for this run. Returns the canaries (the proxy searches for them).
fn plant(policy: &mut Policy) -> Vec<Canary> {
    let home = policy.context.home.clone();
    let shown = |p: &Path| match p.strip_prefix(&home) {
        Ok(rest) => format!("~/{}", rest.display()),
        Err(_) => p.display().to_string(),
    };
    let mut canaries = Vec::new();
    let mut decoys = Vec::new();
    // A grant envelope path is hidden to be shown, not a credential store to mimic.
    for hidden in policy.hidden.iter().filter(|h| !policy.grant_read.contains(h)) {
        let Ok(meta) = std::fs::metadata(hidden) else {
            continue;
        };
        let name = hidden.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let (file, content, planted): (PathBuf, String, Vec<(String, &str)>) = match (name, meta.is_dir()) {
            (".aws", true) => {
                let id = format!("AKIA{}", random_from(UPPER_DIGITS, 16));
                let key = random_from(ALNUM, 40);
                (
                    hidden.join("credentials"),
                    format!("[default]\naws_access_key_id = {id}\naws_secret_access_key = {key}\n"),
                    vec![(id, "AWS access key"), (key, "AWS secret key")],
                )
            }
            (".ssh", true) => {
                let marker = format!("cordon{}", random_from(ALNUM, 24));
                let body = base64::engine::general_purpose::STANDARD
                    .encode(format!("openssh-key-v1\0{marker}{}", random_from(ALNUM, 96)));
                (
                    hidden.join("id_ed25519"),
                    format!(
                        "-----BEGIN OPENSSH PRIVATE KEY-----\n{body}\n-----END OPENSSH PRIVATE KEY-----\n"
                    ),
                    vec![(marker, "SSH private key")],
                )
            }
            (".netrc", false) => {
                let token = format!("ghp_{}", random_from(ALNUM, 36));
                (
                    hidden.clone(),
                    format!("machine github.com\n  login agent\n  password {token}\n"),
                    vec![(token, "GitHub token")],
                )
            }
            (".git-credentials", false) => {
                let token = format!("ghp_{}", random_from(ALNUM, 36));
                (
                    hidden.clone(),
                    format!("https://agent:{token}@github.com\n"),
                    vec![(token, "GitHub token")],
                )
            }
            _ => continue,
        };
        let at = shown(&file);
        for (value, what) in planted {
            canaries.push(Canary {
                value,
                what: what.into(),
                planted: at.clone(),
            });
        }
        decoys.push(Decoy { path: file, content });
    }
    policy.decoys = decoys;
    canaries
}

fn describe(s: &SecretSource) -> String {
    match s {
        SecretSource::Env(v) => format!("env:{v}"),
        SecretSource::File(p) => format!("file:{p}"),
        SecretSource::Cmd(_) => "cmd:…".into(),
    }
}

/// The secret's value; the error never quotes it.
/// Who reads `file:` and runs `cmd:` sources: the invoking user, not root (cordon may
/// not read, on a profile's word, a file its invoker could not).
pub struct Reader<'a> {
    pub uid: u32,
    pub gid: u32,
    pub home: &'a Path,
}

fn read(source: &SecretSource, by: Option<&Reader<'_>>) -> Result<Secret, Refusal> {
    use std::os::unix::process::CommandExt;
    let run = |mut c: std::process::Command| -> Result<String, Refusal> {
        if let Some(r) = by.filter(|r| r.uid != 0) {
            c.uid(r.uid).gid(r.gid).env("HOME", r.home);
        }
        let out = c
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .output()
            .map_err(|e| format!("cannot run it: {e}"))?;
        if !out.status.success() {
            return Err(Refusal::from(format!(
                "it failed as the invoking user ({})",
                out.status
            )));
        }
        String::from_utf8(out.stdout).map_err(|_| Refusal::from("it is not UTF-8"))
    };
    let mut value = Zeroizing::new(match source {
        SecretSource::Env(v) => std::env::var(v).map_err(|_| {
            format!("cordon's environment has no {v} (with sudo, keep it with `sudo --preserve-env={v}`)")
        })?,
        SecretSource::File(p) if by.is_some_and(|r| r.uid != 0) => {
            let mut c = std::process::Command::new("/bin/cat");
            c.arg("--").arg(p);
            run(c).map_err(|e| format!("cannot read it: {e}"))?
        }
        SecretSource::File(p) => {
            std::fs::read_to_string(Path::new(p)).map_err(|e| format!("cannot read it: {e}"))?
        }
        SecretSource::Cmd(c) => {
            let mut cmd = std::process::Command::new("/bin/sh");
            cmd.args(["-c", c]);
            run(cmd).map_err(|e| format!("the command: {e}"))?
        }
    });
    while value.ends_with('\n') || value.ends_with('\r') {
        value.pop();
    }
    if value.is_empty() {
        return Err(Refusal::from("it is empty"));
    }
    if value.contains(['\r', '\n']) {
        return Err(Refusal::from("it spans several lines (a header value cannot)"));
    }
    Ok(Secret(value))
}

fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    getrandom::fill(&mut b).expect("the kernel's random source");
    crate::text::hex(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_read_trimmed_and_never_quoted_in_errors() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("k");
        std::fs::write(&f, "sk-file-secret-value\n").unwrap();
        let s = read(&SecretSource::File(f.display().to_string()), None).unwrap();
        assert_eq!(s.expose(), "sk-file-secret-value");
        assert!(!format!("{s:?}").contains("sk-file"));
        let s = read(&SecretSource::Cmd("printf 'sk-cmd-value\\n'".into()), None).unwrap();
        assert_eq!(s.expose(), "sk-cmd-value");
        let e = read(
            &SecretSource::Cmd("echo sk-leaked-in-output; exit 3".into()),
            None,
        )
        .unwrap_err()
        .0;
        assert!(e.contains("failed") && !e.contains("sk-leaked"), "{e}");
        let e = read(&SecretSource::Env("CORDON_TEST_SURELY_UNSET_VAR".into()), None)
            .unwrap_err()
            .0;
        assert!(e.contains("--preserve-env=CORDON_TEST_SURELY_UNSET_VAR"), "{e}");
        let e = read(&SecretSource::File("/nonexistent/k".into()), None)
            .unwrap_err()
            .0;
        assert!(e.contains("cannot read"), "{e}");
    }
}
