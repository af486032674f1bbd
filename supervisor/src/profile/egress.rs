//! `network.allow` / `network.deny` entries: an address rule (`IP[/PREFIX]:port[/tcp|/udp]`,
//! see `destination`) or, for `mode = "proxy"`, a name rule: `api.anthropic.com:443`,
//! `*.githubusercontent.com`, `pypi.org`, `github.com:22`.
//!
//! Names are IDNA-normalised to lowercase ASCII with any trailing dot stripped. `*.suffix`
//! matches every name that ends in `.suffix` (at any depth), never the bare `suffix`. Without
//! a port a name rule allows 443 and 80.

use serde::Serialize;

use super::destination::{self, Destination};

/// Ports a name rule without one allows.
pub const DEFAULT_PORTS: [u16; 2] = [443, 80];
/// RFC 1035: a name is at most 253 characters, a label at most 63.
const MAX_NAME: usize = 253;
const MAX_LABEL: usize = 63;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Egress {
    Address(Destination),
    Name(NameRule),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NameRule {
    /// Lowercase ASCII (IDNA), no trailing dot; for a wildcard, the suffix after `*.`.
    pub name: String,
    pub wildcard: bool,
    /// None: 443 and 80.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

impl NameRule {
    /// Does this rule cover `name` (normalised) on `port`?
    pub fn matches(&self, name: &str, port: u16) -> bool {
        let port_ok = self.port.map_or(DEFAULT_PORTS.contains(&port), |p| p == port);
        port_ok && self.matches_name(name)
    }

    /// Does this rule cover `name` on some port?
    pub fn matches_name(&self, name: &str) -> bool {
        if self.wildcard {
            name.len() > self.name.len() + 1
                && name.ends_with(&self.name)
                && name.as_bytes()[name.len() - self.name.len() - 1] == b'.'
        } else {
            name == self.name
        }
    }
}

impl NameRule {
    /// Does `self` (a deny rule) refuse everything `allow` could let through: every name on
    /// every port it allows?
    pub fn covers(&self, allow: &NameRule) -> bool {
        let names = if self.wildcard {
            // `*.x` covers `*.x`, `*.sub.x` and `a.x`, never `x` itself.
            (allow.wildcard && allow.name == self.name) || allow.name.ends_with(&format!(".{}", self.name))
        } else {
            !allow.wildcard && allow.name == self.name
        };
        let ports = match (self.port, allow.port) {
            (None, None) => true,
            (None, Some(p)) => DEFAULT_PORTS.contains(&p),
            (Some(d), Some(a)) => d == a,
            (Some(_), None) => false,
        };
        names && ports
    }
}

impl std::fmt::Display for NameRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.wildcard {
            write!(f, "*.")?;
        }
        write!(f, "{}", self.name)?;
        match self.port {
            Some(p) => write!(f, ":{p}"),
            None => Ok(()),
        }
    }
}

impl std::fmt::Display for Egress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Egress::Address(d) => d.fmt(f),
            Egress::Name(n) => n.fmt(f),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EgressError {
    #[error(transparent)]
    Address(#[from] destination::DestinationError),
    #[error("expected NAME[:PORT] or *.SUFFIX[:PORT] (e.g. \"api.anthropic.com:443\", \"*.githubusercontent.com\"), or IP[/PREFIX]:PORT")]
    Empty,
    #[error("a wildcard may only be the whole first label (\"*.example.com\"), not {0:?}")]
    Wildcard(String),
    #[error(
        "\"*\" alone would allow every name; list the names (or use mode = \"allowlist\" with 0.0.0.0/0)"
    )]
    Everything,
    #[error("port {0:?} is not a number from 1 to 65535")]
    Port(String),
    #[error("{name:?} is not a domain name: {why}")]
    Name { name: String, why: String },
}

/// Normalise a domain name as DNS and TLS see it: IDNA to ASCII, lowercase, no trailing dot.
pub fn normalize_name(name: &str) -> Result<String, EgressError> {
    let bad = |why: &str| EgressError::Name {
        name: name.into(),
        why: why.into(),
    };
    let trimmed = name.strip_suffix('.').unwrap_or(name);
    if trimmed.is_empty() {
        return Err(bad("it is empty"));
    }
    let ascii = idna::domain_to_ascii(trimmed).map_err(|_| bad("IDNA cannot encode it"))?;
    if ascii.len() > MAX_NAME {
        return Err(bad("longer than 253 characters"));
    }
    for label in ascii.split('.') {
        if label.is_empty() {
            return Err(bad("it has an empty label"));
        }
        if label.len() > MAX_LABEL {
            return Err(bad("a label is longer than 63 characters"));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            || label.starts_with('-')
            || label.ends_with('-')
        {
            return Err(bad("labels are letters, digits and inner hyphens"));
        }
    }
    Ok(ascii)
}

/// Parse one entry: an address rule when its host part is an IP address or prefix, else a
/// name rule.
pub fn parse(s: &str) -> Result<Egress, EgressError> {
    let s = s.trim();
    if s.is_empty() {
        return Err(EgressError::Empty);
    }
    let looks_ip = |h: &str| {
        let h = h.trim_start_matches('[').trim_end_matches(']');
        h.split('/')
            .next()
            .is_some_and(|ip| ip.parse::<std::net::IpAddr>().is_ok())
    };
    if looks_ip(s) || s.rsplit_once(':').is_some_and(|(h, _)| looks_ip(h)) {
        return Ok(Egress::Address(destination::parse(s)?));
    }
    let (name, port) = match s.rsplit_once(':') {
        Some((n, p)) => {
            let port = p
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| EgressError::Port(p.into()))?;
            (n, Some(port))
        }
        None => (s, None),
    };
    if name == "*" || name == "*." {
        return Err(EgressError::Everything);
    }
    let (wildcard, bare) = match name.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, name),
    };
    if bare.contains('*') {
        return Err(EgressError::Wildcard(name.into()));
    }
    Ok(Egress::Name(NameRule {
        name: normalize_name(bare)?,
        wildcard,
        port,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> NameRule {
        match parse(s).unwrap() {
            Egress::Name(n) => n,
            other => panic!("{s}: {other:?}"),
        }
    }

    #[test]
    fn names_are_normalised_and_ports_default_to_https_and_http() {
        let r = name("API.Anthropic.com.");
        assert_eq!(
            (r.name.as_str(), r.wildcard, r.port),
            ("api.anthropic.com", false, None)
        );
        assert!(r.matches("api.anthropic.com", 443) && r.matches("api.anthropic.com", 80));
        assert!(!r.matches("api.anthropic.com", 22) && !r.matches("x.api.anthropic.com", 443));
        assert_eq!(name("bücher.example:8443").name, "xn--bcher-kva.example");
        assert_eq!(name("github.com:22").port, Some(22));
        assert_eq!(name("github.com:22").to_string(), "github.com:22");
    }

    #[test]
    fn a_wildcard_matches_subdomains_at_any_depth_but_not_the_bare_domain() {
        let r = name("*.githubusercontent.com");
        assert!(r.wildcard);
        assert!(r.matches("raw.githubusercontent.com", 443));
        assert!(r.matches("a.b.githubusercontent.com", 443));
        assert!(!r.matches("githubusercontent.com", 443));
        assert!(!r.matches("evilgithubusercontent.com", 443));
        assert_eq!(r.to_string(), "*.githubusercontent.com");
    }

    #[test]
    fn a_deny_rule_covers_the_allow_rules_it_makes_useless() {
        assert!(name("*.example.com").covers(&name("api.example.com:443")));
        assert!(name("*.example.com").covers(&name("*.cdn.example.com")));
        assert!(!name("*.example.com").covers(&name("example.com")));
        assert!(name("api.example.com").covers(&name("api.example.com")));
        assert!(
            !name("api.example.com:443").covers(&name("api.example.com")),
            "80 stays"
        );
        assert!(!name("api.example.com").covers(&name("api.example.com:22")));
        assert!(!name("api.example.com").covers(&name("*.api.example.com")));
    }

    #[test]
    fn addresses_stay_address_rules() {
        assert!(matches!(parse("10.0.0.0/8:443/tcp"), Ok(Egress::Address(_))));
        assert!(matches!(parse("[::1]:53/udp"), Ok(Egress::Address(_))));
        assert!(matches!(parse("127.0.0.1"), Err(EgressError::Address(_))));
    }

    #[test]
    fn malformed_entries_say_what_was_expected() {
        for (bad, want) in [
            ("", EgressError::Empty),
            ("*", EgressError::Everything),
            ("*:443", EgressError::Everything),
            ("api.*.com", EgressError::Wildcard("api.*.com".into())),
            ("*.*.com", EgressError::Wildcard("*.*.com".into())),
            ("example.com:0", EgressError::Port("0".into())),
            ("example.com:http", EgressError::Port("http".into())),
        ] {
            assert_eq!(parse(bad), Err(want), "{bad:?}");
        }
        for bad in [
            "exa mple.com",
            "-x.com",
            "a..b",
            ".",
            &format!("{}.com", "a".repeat(64)),
        ] {
            assert!(matches!(parse(bad), Err(EgressError::Name { .. })), "{bad:?}");
        }
    }
}
