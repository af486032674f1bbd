//! TLS for the hosts the proxy intercepts (`network.credential`): a CA made for one run whose
//! key exists only in this process, certificates for the names the agent asks for signed by
//! it on demand, and the client side that verifies each upstream against the system's roots
//! (plus `network.upstream_ca`).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// What cannot be set up for interception.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot make the run's certificate authority: {0}")]
    Authority(#[from] rcgen::Error),
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
    #[error("network.upstream_ca {path}: {why}")]
    UpstreamCa { path: String, why: String },
    #[error("no trusted root certificates: the system has none and no network.upstream_ca was given")]
    NoRoots,
}

/// The run's certificate authority.
pub struct Authority {
    issuer: Issuer<'static, KeyPair>,
    /// Its certificate, PEM (what the sandbox trusts).
    pub cert_pem: String,
    /// SHA-256 of its certificate (DER), hex: what the start line and the trace name.
    pub fingerprint: String,
    leaves: Mutex<HashMap<String, Arc<CertifiedKey>>>,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Authority(sha256:{})", self.fingerprint)
    }
}

impl Authority {
    /// A new CA for sandbox `id`, valid from an hour ago (clock skew) for 30 days.
    pub fn new(id: &str) -> Result<Self, TlsError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, format!("cordon sandbox {id} interception CA"));
        dn.push(DnType::OrganizationName, "cordon");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let now = time_now();
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + time::Duration::days(30);
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        use sha2::Digest;
        let fingerprint = crate::text::hex(&sha2::Sha256::digest(cert.der()));
        Ok(Self {
            issuer: Issuer::new(params, key),
            cert_pem: cert.pem(),
            fingerprint,
            leaves: Mutex::new(HashMap::new()),
        })
    }

    /// The certificate and key presented for `name` (made once per name).
    pub fn leaf(&self, name: &str) -> Result<Arc<CertifiedKey>, TlsError> {
        let mut leaves = self.leaves.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(l) = leaves.get(name) {
            return Ok(l.clone());
        }
        let mut params = CertificateParams::new(vec![name.to_string()])?;
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, name.to_string());
        let now = time_now();
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + time::Duration::days(30);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let signer = rustls::crypto::ring::sign::any_supported_type(&der)?;
        let leaf = Arc::new(CertifiedKey::new(vec![cert.der().clone()], signer));
        leaves.insert(name.to_string(), leaf.clone());
        Ok(leaf)
    }

    /// The server side the agent talks to: a certificate for whatever name it asks for
    /// (the proxy already checked that name against the one it resolved), HTTP/2 or 1.1.
    pub fn server_config(self: &Arc<Self>) -> Arc<rustls::ServerConfig> {
        let mut c =
            rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .expect("ring supports TLS 1.2 and 1.3")
                .with_no_client_auth()
                .with_cert_resolver(Arc::new(Leaves(self.clone())));
        c.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Arc::new(c)
    }
}

fn time_now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

#[derive(Debug)]
struct Leaves(Arc<Authority>);

impl ResolvesServerCert for Leaves {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // No server name: nothing to be sure of; the handshake fails (and is recorded).
        self.0.leaf(hello.server_name()?).ok()
    }
}

/// The client side towards upstreams, built on the first intercepted connection (reading the
/// system's roots costs milliseconds no launch should wait for, and a run that never reaches
/// an intercepted host never pays them); `upstream_ca` is checked at once, so a bad file
/// still stops the run before the agent starts.
pub struct Upstream {
    extra: Option<std::path::PathBuf>,
    ready: std::sync::OnceLock<Result<Arc<rustls::ClientConfig>, String>>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Upstream")
    }
}

impl Upstream {
    /// Check `extra` now; read nothing else yet.
    pub fn new(extra: Option<&Path>) -> Result<Self, TlsError> {
        if let Some(p) = extra {
            extra_roots(p)?;
        }
        Ok(Self {
            extra: extra.map(Path::to_path_buf),
            ready: std::sync::OnceLock::new(),
        })
    }

    /// The configuration (built the first time).
    pub fn get(&self) -> Result<Arc<rustls::ClientConfig>, String> {
        self.ready
            .get_or_init(|| client_config(self.extra.as_deref()).map_err(|e| e.to_string()))
            .clone()
    }
}

/// The PEM certificates in `path`.
fn extra_roots(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bad = |why: String| TlsError::UpstreamCa {
        path: path.display().to_string(),
        why,
    };
    let text = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let certs: Vec<CertificateDer<'static>> = rustls::pki_types::pem::PemObject::pem_slice_iter(&text)
        .collect::<Result<_, _>>()
        .map_err(|e| bad(format!("not PEM certificates: {e:?}")))?;
    if certs.is_empty() {
        return Err(bad("holds no certificate".into()));
    }
    Ok(certs)
}

/// The client side towards upstreams: the system's roots plus the PEM certificates in
/// `extra`; HTTP/2 or 1.1.
pub fn client_config(extra: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    // The system's bundle, one file (what the sandbox's own trust store extends); without
    // one, whatever the platform's usual places hold.
    let bundle = crate::launch::mounts::SYSTEM_BUNDLES
        .iter()
        .find_map(|p| std::fs::read(p).ok());
    let system: Vec<CertificateDer<'static>> = match bundle {
        Some(text) => rustls::pki_types::pem::PemObject::pem_slice_iter(&text)
            .filter_map(Result::ok)
            .collect(),
        None => rustls_native_certs::load_native_certs().certs,
    };
    for c in system {
        // A root the library cannot parse is one the upstream cannot be verified by anyway.
        let _ = roots.add(c);
    }
    if let Some(path) = extra {
        for c in extra_roots(path)? {
            roots.add(c).map_err(|e| TlsError::UpstreamCa {
                path: path.display().to_string(),
                why: e.to_string(),
            })?;
        }
    }
    if roots.is_empty() {
        return Err(TlsError::NoRoots);
    }
    let mut c =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
    c.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(c))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::client::danger::ServerCertVerifier;

    #[test]
    fn leaves_chain_to_the_run_authority_and_are_made_once() {
        let ca = Arc::new(Authority::new("t").unwrap());
        let a = ca.leaf("api.example.test").unwrap();
        let b = ca.leaf("api.example.test").unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        // A client trusting only the run's CA verifies the leaf for that name.
        let mut roots = rustls::RootCertStore::empty();
        let ca_der = rustls::pki_types::pem::PemObject::from_pem_slice(ca.cert_pem.as_bytes()).unwrap();
        roots.add(ca_der).unwrap();
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .unwrap();
        let name = rustls::pki_types::ServerName::try_from("api.example.test").unwrap();
        let now = rustls::pki_types::UnixTime::now();
        verifier
            .verify_server_cert(&a.cert[0], &[], &name, &[], now)
            .expect("the leaf verifies against the run's CA");
        let other = rustls::pki_types::ServerName::try_from("other.test").unwrap();
        assert!(verifier
            .verify_server_cert(&a.cert[0], &[], &other, &[], now)
            .is_err());
        assert_eq!(ca.fingerprint.len(), 64);
    }
}
