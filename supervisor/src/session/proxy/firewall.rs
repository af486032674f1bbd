//! The AI firewall's credentials (`[[network.credential]]`): each secret is read by cordon
//! when the run starts (from its own environment, a file or a command), kept only in this
//! process (zeroed on drop) and never given to the agent, which finds a per-run placeholder
//! in its environment instead. The proxy intercepts TLS to the credential's host and puts the
//! secret where the placeholder was; the placeholder going anywhere else is refused.

use std::path::Path;
use std::sync::Arc;

use zeroize::Zeroizing;

use super::tls::{self, Authority, TlsError};
use crate::launch::mounts::SYSTEM_BUNDLES;
use crate::policy::{Policy, Trust};
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

/// Everything the proxy needs to intercept: the run's CA, the upstream trust, credentials.
#[derive(Debug)]
pub struct Firewall {
    pub authority: Arc<Authority>,
    /// The agent-facing TLS configuration (certificates from `authority`).
    pub server: Arc<rustls::ServerConfig>,
    pub upstream: Arc<rustls::ClientConfig>,
    pub credentials: Vec<Credential>,
    /// The model gateway: what is recorded of model API requests on intercepted hosts.
    pub recorder: super::gateway::Recorder,
}

impl Firewall {
    /// Does the proxy terminate TLS for `name`?
    pub fn intercepts(&self, name: &str) -> bool {
        self.credentials.iter().any(|c| c.rule.host == name)
            || self.recorder.cfg.hosts.iter().any(|h| h == name)
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

/// Read the secrets, give the agent placeholders, make the run's CA and put it in the
/// sandbox's trust store. None when the profile names no credential.
pub fn prepare(policy: &mut Policy, sandbox: &str) -> Result<Option<Firewall>, FirewallError> {
    if policy.network.credentials.is_empty() && policy.network.gateway.hosts.is_empty() {
        return Ok(None);
    }
    let mut credentials = Vec::new();
    for rule in &policy.network.credentials {
        let secret = read(&rule.secret).map_err(|why| FirewallError::Secret {
            host: rule.host.clone(),
            source_kind: describe(&rule.secret),
            why,
        })?;
        let placeholder = format!("cordon-placeholder-{}", random_hex(16));
        policy.env.insert(rule.env.clone(), placeholder.clone());
        credentials.push(Credential {
            rule: rule.clone(),
            placeholder,
            secret,
        });
    }
    let authority = Arc::new(Authority::new(sandbox)?);
    let upstream = tls::client_config(policy.network.upstream_ca.as_deref())?;
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
    Ok(Some(Firewall {
        recorder: super::gateway::Recorder::new(policy.network.gateway.clone()),
        server: authority.server_config(),
        authority,
        upstream,
        credentials,
    }))
}

fn describe(s: &SecretSource) -> String {
    match s {
        SecretSource::Env(v) => format!("env:{v}"),
        SecretSource::File(p) => format!("file:{p}"),
        SecretSource::Cmd(_) => "cmd:…".into(),
    }
}

/// The secret's value; the error never quotes it.
fn read(source: &SecretSource) -> Result<Secret, String> {
    let mut value = Zeroizing::new(match source {
        SecretSource::Env(v) => std::env::var(v).map_err(|_| {
            format!("cordon's environment has no {v} (with sudo, keep it with `sudo --preserve-env={v}`)")
        })?,
        SecretSource::File(p) => {
            std::fs::read_to_string(Path::new(p)).map_err(|e| format!("cannot read it: {e}"))?
        }
        SecretSource::Cmd(c) => {
            let out = std::process::Command::new("/bin/sh")
                .args(["-c", c])
                .stdin(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .output()
                .map_err(|e| format!("cannot run it: {e}"))?;
            if !out.status.success() {
                return Err(format!("the command failed ({})", out.status));
            }
            String::from_utf8(out.stdout).map_err(|_| "the command's output is not UTF-8".to_string())?
        }
    });
    while value.ends_with('\n') || value.ends_with('\r') {
        value.pop();
    }
    if value.is_empty() {
        return Err("it is empty".into());
    }
    if value.contains(['\r', '\n']) {
        return Err("it spans several lines (a header value cannot)".into());
    }
    Ok(Secret(value))
}

fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    getrandom::fill(&mut b).expect("the kernel's random source");
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_read_trimmed_and_never_quoted_in_errors() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("k");
        std::fs::write(&f, "sk-file-secret-value\n").unwrap();
        let s = read(&SecretSource::File(f.display().to_string())).unwrap();
        assert_eq!(s.expose(), "sk-file-secret-value");
        assert!(!format!("{s:?}").contains("sk-file"));
        let s = read(&SecretSource::Cmd("printf 'sk-cmd-value\\n'".into())).unwrap();
        assert_eq!(s.expose(), "sk-cmd-value");
        let e = read(&SecretSource::Cmd("echo sk-leaked-in-output; exit 3".into())).unwrap_err();
        assert!(e.contains("failed") && !e.contains("sk-leaked"), "{e}");
        let e = read(&SecretSource::Env("CORDON_TEST_SURELY_UNSET_VAR".into())).unwrap_err();
        assert!(e.contains("--preserve-env=CORDON_TEST_SURELY_UNSET_VAR"), "{e}");
        let e = read(&SecretSource::File("/nonexistent/k".into())).unwrap_err();
        assert!(e.contains("cannot read"), "{e}");
    }
}
