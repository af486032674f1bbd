//! A profile's `[network]`: the mode, the proxy's name and address rules, credentials, the
//! model gateway, data loss prevention and the `unlisted` policy — parsed (`Raw*`), then
//! resolved over the `extends` chain with every mistake located at its line and column.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use super::units::{Bytes, Millis};
use super::{egress, line_col, ProfileError, RawProfile, Source};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    /// A network namespace with no interface up: every socket operation that needs a route fails.
    None,
    /// A network namespace of its own with only `lo` up (not the host's loopback).
    Loopback,
    /// Egress only to the listed IP/CIDR:port destinations.
    Allowlist,
    /// A network namespace of its own with only `lo` up, whose every TCP connect and DNS
    /// query goes to cordon's proxy: egress by name (`network.allow` names), decided and
    /// recorded by the supervisor (docs/network.md).
    Proxy,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNetwork {
    pub mode: Option<NetworkMode>,
    pub allow: Option<Vec<toml::Spanned<String>>>,
    pub deny: Option<Vec<toml::Spanned<String>>>,
    /// `proxy` mode: fixed upstream addresses for names, like curl's `--resolve`.
    pub resolve: Option<BTreeMap<String, toml::Spanned<String>>>,
    /// `proxy` mode: what happens to a connection no rule allows.
    pub unlisted: Option<toml::Spanned<Unlisted>>,
    /// `unlisted = "ask"`: how long a held connection waits for an answer before it is refused.
    pub ask_timeout: Option<Millis>,
    /// `proxy` mode: credentials the proxy adds for a host; the agent sees a placeholder.
    pub credential: Option<Vec<RawCredential>>,
    /// `proxy` mode: a PEM file of extra CAs cordon trusts for upstream TLS (with the system's).
    pub upstream_ca: Option<toml::Spanned<String>>,
    /// `proxy` mode: the model gateway (what is recorded of model API traffic).
    pub gateway: Option<RawGateway>,
    /// `proxy` mode: data loss prevention.
    pub dlp: Option<RawDlp>,
}

/// `[network.dlp]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDlp {
    /// Hosts whose TLS cordon opens to search what is sent ("*" for every allowed name).
    pub inspect: Option<Vec<toml::Spanned<String>>>,
    /// Plant canary credentials where the profile hides real ones (default true).
    pub canaries: Option<bool>,
}

/// The resolved `[network.dlp]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Dlp {
    /// Every allowed name is inspected.
    pub inspect_all: bool,
    pub inspect: Vec<egress::NameRule>,
    pub canaries: bool,
}

/// `[network.gateway]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGateway {
    /// Model API hosts to intercept and record besides the credentials' hosts.
    pub hosts: Option<Vec<toml::Spanned<String>>>,
    pub record: Option<Record>,
    /// The most of one message, text or tool input recorded.
    pub max_bytes: Option<Bytes>,
}

/// How much of the model traffic the trace keeps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Record {
    /// Messages, text and tool arguments (bounded by `max_bytes`).
    #[default]
    Full,
    /// Their SHA-256 only.
    Hash,
    /// Models, tool names, token counts, stop reasons: no content.
    None,
}

/// The resolved `[network.gateway]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Gateway {
    pub hosts: Vec<String>,
    pub record: Record,
    pub max_bytes: u64,
}

/// The most of one message recorded by default.
pub const DEFAULT_GATEWAY_MAX_BYTES: u64 = 16 * 1024;

/// One `[[network.credential]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCredential {
    pub host: toml::Spanned<String>,
    pub secret: toml::Spanned<String>,
    pub header: Option<toml::Spanned<String>>,
    pub env: Option<toml::Spanned<String>>,
    /// An `env:` secret that is absent is skipped instead of stopping the run.
    pub optional: Option<bool>,
}

/// Where a credential's secret comes from, read by cordon when the run starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase", tag = "from", content = "what")]
pub enum SecretSource {
    /// A variable of cordon's own environment (the invoker's, e.g. with `sudo -E`).
    Env(String),
    /// A file's contents (read as the invoking user), trailing newline removed.
    File(String),
    /// A command's standard output (run by `sh -c` as the invoking user), trailing newline removed.
    Cmd(String),
}

/// A credential the proxy adds to requests for `host` in place of a placeholder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Credential {
    /// Normalised name, exact (no wildcard).
    pub host: String,
    /// The header it goes in; None: any header holding the placeholder.
    pub header: Option<String>,
    pub secret: SecretSource,
    /// The variable the agent finds the placeholder in.
    pub env: String,
    /// Skipped when its `env:` variable is not set (the presets' model API keys).
    pub optional: bool,
}

/// `network.unlisted`: what the proxy does with a name or address no rule allows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Unlisted {
    /// Refused at once (NXDOMAIN for a name, a reset for a connection).
    #[default]
    Deny,
    /// The connection is held and a person is asked (`cordon net allow|deny`); refused when
    /// nobody answers within `ask_timeout`.
    Ask,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Network {
    pub mode: NetworkMode,
    pub allow: Vec<egress::Egress>,
    pub deny: Vec<egress::Egress>,
    /// Normalised name → the address the proxy connects to for it.
    pub resolve: BTreeMap<String, std::net::IpAddr>,
    pub unlisted: Unlisted,
    /// `unlisted = "ask"`: milliseconds a held connection waits for an answer.
    pub ask_timeout_ms: u64,
    pub credentials: Vec<Credential>,
    pub upstream_ca: Option<String>,
    pub gateway: Gateway,
    pub dlp: Dlp,
}

/// How long a held connection waits for a person by default: long enough to read the line
/// and answer, short enough that an agent's own timeouts have not all fired.
pub const DEFAULT_ASK_TIMEOUT_MS: u64 = 120_000;

/// The chain's `[network]`: each key from the most derived profile that sets it, every entry
/// checked against the mode, errors at the entry's line and column.
pub(super) fn resolve_network(chain: &[(Source, RawProfile)]) -> Result<Network, ProfileError> {
    let mode = pick!(chain, network.mode).unwrap_or(NetworkMode::None);
    let at = |src: &Source, span: std::ops::Range<usize>, message: String| {
        let (line, column) = line_col(&src.text, span.start);
        ProfileError::Syntax {
            file: src.label.clone(),
            line,
            column,
            message,
        }
    };
    let rules = |key: &str, get: fn(&RawNetwork) -> &Option<Vec<toml::Spanned<String>>>| {
        let Some((src, list)) = chain
            .iter()
            .find_map(|(src, r)| get(&r.network).as_ref().map(|l| (src, l)))
        else {
            return Ok(Vec::new());
        };
        list.iter()
            .map(|entry| {
                let text = entry.get_ref();
                let rule = egress::parse(text)
                    .map_err(|e| at(src, entry.span(), format!("network.{key} entry {text:?}: {e}")))?;
                let fits = match (mode, &rule) {
                    (NetworkMode::Allowlist, egress::Egress::Address(_)) | (NetworkMode::Proxy, _) => None,
                    (NetworkMode::Allowlist, egress::Egress::Name(_)) => Some(
                        "names need mode = \"proxy\" (\"allowlist\" is enforced in the kernel by address)",
                    ),
                    _ => Some("network rules need mode = \"allowlist\" or \"proxy\""),
                };
                match fits {
                    Some(why) => Err(at(
                        src,
                        entry.span(),
                        format!("network.{key} entry {text:?}: {why}"),
                    )),
                    None => Ok(rule),
                }
            })
            .collect::<Result<Vec<_>, ProfileError>>()
    };
    let allow = rules("allow", |n| &n.allow)?;
    let deny = rules("deny", |n| &n.deny)?;
    // An allow rule a deny rule refuses entirely can never match: a mistake to point at.
    if let Some((src, list)) = chain
        .iter()
        .find_map(|(src, r)| r.network.allow.as_ref().map(|l| (src, l)))
    {
        for (entry, rule) in list.iter().zip(&allow) {
            let egress::Egress::Name(a) = rule else { continue };
            let covering = deny.iter().find_map(|d| match d {
                egress::Egress::Name(d) if d.covers(a) => Some(d),
                _ => None,
            });
            if let Some(d) = covering {
                return Err(at(
                    src,
                    entry.span(),
                    format!("network.allow entry {:?} can never match: network.deny {:?} refuses everything it allows", entry.get_ref(), d.to_string()),
                ));
            }
        }
    }
    if mode == NetworkMode::Allowlist && !deny.is_empty() {
        let src = chain
            .iter()
            .find(|(_, r)| r.network.deny.is_some())
            .map_or(&chain[0].0, |(s, _)| s);
        return Err(ProfileError::Invalid {
            file: src.label.clone(),
            message: "network.deny needs mode = \"proxy\" (an allowlist refuses what it does not list)"
                .into(),
        });
    }
    let mut resolve = BTreeMap::new();
    if let Some((src, map)) = chain
        .iter()
        .find_map(|(src, r)| r.network.resolve.as_ref().map(|m| (src, m)))
    {
        for (name, addr) in map {
            let bad = |why: String| at(src, addr.span(), format!("network.resolve {name:?}: {why}"));
            if mode != NetworkMode::Proxy {
                return Err(bad("needs mode = \"proxy\"".into()));
            }
            let name = egress::normalize_name(name).map_err(|e| bad(e.to_string()))?;
            let ip = addr
                .get_ref()
                .parse::<std::net::IpAddr>()
                .map_err(|_| bad(format!("{:?} is not an IP address", addr.get_ref())))?;
            resolve.insert(name, ip);
        }
    }
    let unlisted = match chain
        .iter()
        .find_map(|(src, r)| r.network.unlisted.as_ref().map(|u| (src, u)))
    {
        Some((src, u)) if mode != NetworkMode::Proxy && *u.get_ref() == Unlisted::Ask => {
            return Err(at(
                src,
                u.span(),
                "network.unlisted = \"ask\" needs mode = \"proxy\" (only the proxy can hold a connection)"
                    .into(),
            ));
        }
        Some((_, u)) => *u.get_ref(),
        None => Unlisted::Deny,
    };
    let ask_timeout_ms = pick!(chain, network.ask_timeout).map_or(DEFAULT_ASK_TIMEOUT_MS, |m| m.0);
    let mut credentials = Vec::new();
    // Where `allow` and the credentials were set (0: the profile itself, then its parents).
    let allow_from = chain.iter().position(|(_, r)| r.network.allow.is_some());
    if let Some((i, (src, list))) = chain
        .iter()
        .enumerate()
        .find_map(|(i, (src, r))| r.network.credential.as_ref().map(|l| (i, (src, l))))
    {
        // A profile that narrows its parent's allowlist drops the parent's credentials for
        // hosts it no longer allows; its own must each be usable.
        let inherited = allow_from.is_some_and(|a| a < i);
        for c in list {
            match credential(c, mode, &allow) {
                Ok(cred) => credentials.push(cred),
                Err((_, CredentialProblem::NotAllowed(_))) if inherited => {}
                Err((span, why)) => return Err(at(src, span, format!("network.credential: {why}"))),
            }
        }
    }
    let upstream_ca = match chain
        .iter()
        .find_map(|(src, r)| r.network.upstream_ca.as_ref().map(|u| (src, u)))
    {
        Some((src, u)) if mode != NetworkMode::Proxy => {
            return Err(at(
                src,
                u.span(),
                "network.upstream_ca needs mode = \"proxy\"".into(),
            ));
        }
        Some((_, u)) => Some(u.get_ref().clone()),
        None => None,
    };
    let mut gateway = Gateway {
        hosts: Vec::new(),
        record: Record::Full,
        max_bytes: DEFAULT_GATEWAY_MAX_BYTES,
    };
    if let Some((src, g)) = chain
        .iter()
        .find_map(|(src, r)| r.network.gateway.as_ref().map(|g| (src, g)))
    {
        for h in g.hosts.iter().flatten() {
            let raw = h.get_ref();
            let bad = |why: String| at(src, h.span(), format!("network.gateway host {raw:?}: {why}"));
            if mode != NetworkMode::Proxy {
                return Err(bad("needs mode = \"proxy\"".into()));
            }
            let host = egress::normalize_name(raw).map_err(|e| bad(e.to_string()))?;
            if !allow
                .iter()
                .any(|a| matches!(a, egress::Egress::Name(n) if n.matches_name(&host)))
            {
                return Err(bad("not in network.allow, so it could never be reached".into()));
            }
            gateway.hosts.push(host);
        }
        gateway.record = g.record.unwrap_or_default();
        gateway.max_bytes = g.max_bytes.map_or(DEFAULT_GATEWAY_MAX_BYTES, |b| b.0);
    }
    let mut dlp = Dlp {
        inspect_all: false,
        inspect: Vec::new(),
        canaries: true,
    };
    if let Some((src, d)) = chain
        .iter()
        .find_map(|(src, r)| r.network.dlp.as_ref().map(|d| (src, d)))
    {
        for h in d.inspect.iter().flatten() {
            let raw = h.get_ref();
            let bad = |why: String| at(src, h.span(), format!("network.dlp inspect {raw:?}: {why}"));
            if mode != NetworkMode::Proxy {
                return Err(bad("needs mode = \"proxy\"".into()));
            }
            if raw == "*" {
                dlp.inspect_all = true;
                continue;
            }
            match egress::parse(raw).map_err(|e| bad(e.to_string()))? {
                egress::Egress::Name(n) if n.port.is_none() => dlp.inspect.push(n),
                _ => return Err(bad("expected a name or *.suffix without a port, or \"*\"".into())),
            }
        }
        dlp.canaries = d.canaries.unwrap_or(true);
    }
    Ok(Network {
        mode,
        allow,
        deny,
        resolve,
        unlisted,
        ask_timeout_ms,
        credentials,
        upstream_ca,
        gateway,
        dlp,
    })
}

/// Check one `[[network.credential]]`; an error names the span it is about.
/// What is wrong with a `[[network.credential]]`.
#[derive(Debug)]
enum CredentialProblem {
    NotAllowed(String),
    Other(String),
}

impl std::fmt::Display for CredentialProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CredentialProblem::NotAllowed(s) | CredentialProblem::Other(s) => f.write_str(s),
        }
    }
}

impl From<String> for CredentialProblem {
    fn from(s: String) -> Self {
        CredentialProblem::Other(s)
    }
}

impl From<&str> for CredentialProblem {
    fn from(s: &str) -> Self {
        CredentialProblem::Other(s.into())
    }
}

fn credential(
    c: &RawCredential,
    mode: NetworkMode,
    allow: &[egress::Egress],
) -> Result<Credential, (std::ops::Range<usize>, CredentialProblem)> {
    if mode != NetworkMode::Proxy {
        return Err((
            c.host.span(),
            String::from("needs mode = \"proxy\" (the proxy adds it)").into(),
        ));
    }
    let raw = c.host.get_ref();
    let host =
        egress::normalize_name(raw).map_err(|e| (c.host.span(), format!("host {raw:?}: {e}").into()))?;
    if !allow
        .iter()
        .any(|a| matches!(a, egress::Egress::Name(n) if n.matches_name(&host)))
    {
        return Err((
            c.host.span(),
            CredentialProblem::NotAllowed(format!(
                "host {host:?} is not in network.allow, so the credential could never be used"
            )),
        ));
    }
    let text = c.secret.get_ref();
    let secret = match text.split_once(':') {
        Some(("env", v)) if !v.is_empty() => SecretSource::Env(v.into()),
        Some(("file", v)) if !v.is_empty() => SecretSource::File(v.into()),
        Some(("cmd", v)) if !v.is_empty() => SecretSource::Cmd(v.into()),
        _ => {
            return Err((
                c.secret.span(),
                format!("secret {text:?}: expected \"env:VARIABLE\", \"file:PATH\" or \"cmd:COMMAND\"")
                    .into(),
            ))
        }
    };
    let env = match (&c.env, &secret) {
        (Some(e), _) => e.get_ref().clone(),
        (None, SecretSource::Env(v)) => v.clone(),
        (None, _) => {
            return Err((
                c.secret.span(),
                "a file: or cmd: secret needs env = \"VARIABLE\" (where the agent finds its placeholder)"
                    .into(),
            ))
        }
    };
    let header = c.header.as_ref().map(|h| h.get_ref().to_ascii_lowercase());
    let optional = c.optional.unwrap_or(false);
    if optional && !matches!(secret, SecretSource::Env(_)) {
        return Err((
            c.secret.span(),
            String::from("optional = true is for env: secrets (a file or command that fails is an error)")
                .into(),
        ));
    }
    Ok(Credential {
        host,
        header,
        secret,
        env,
        optional,
    })
}
