//! `network.allow` entries: `IP[/PREFIX]:port[/tcp|/udp]`. A profile is checked with `parse`
//! when it is loaded; `policy::compile` parses the entries again into its network rules.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Destination {
    pub addr: std::net::IpAddr,
    pub prefix: u8,
    pub port: u16,
    /// IPPROTO_TCP or IPPROTO_UDP when the rule names one (`…:443/tcp`); None: either.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<u8>,
}

impl std::fmt::Display for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}:{}", self.addr, self.prefix, self.port)?;
        match self.protocol.map(i32::from) {
            Some(libc::IPPROTO_TCP) => write!(f, "/tcp"),
            Some(libc::IPPROTO_UDP) => write!(f, "/udp"),
            _ => Ok(()),
        }
    }
}

/// A `network.allow` entry that is not `IP[/PREFIX]:port[/tcp|/udp]`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DestinationError {
    #[error("expected IP[/PREFIX]:port[/tcp|/udp], e.g. \"10.0.0.0/8:443/tcp\" (a port is required)")]
    NoPort,
    #[error("protocol {0:?} must be \"tcp\" or \"udp\"")]
    Protocol(String),
    #[error("port {0:?} is not a number from 0 to 65535")]
    Port(String),
    #[error("{0:?} is not an IP address (domain names are not supported yet)")]
    Ip(String),
    #[error("prefix {prefix:?} must be 0..={max}")]
    Prefix { prefix: String, max: u8 },
}

pub fn parse(s: &str) -> Result<Destination, DestinationError> {
    let (host, port) = s
        .rsplit_once(':')
        .filter(|(h, _)| !h.is_empty())
        .ok_or(DestinationError::NoPort)?;
    let (port, protocol) = match port.split_once('/') {
        Some((port, "tcp")) => (port, Some(6)),  // IPPROTO_TCP
        Some((port, "udp")) => (port, Some(17)), // IPPROTO_UDP
        Some((_, other)) => return Err(DestinationError::Protocol(other.into())),
        None => (port, None),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port: u16 = port.parse().map_err(|_| DestinationError::Port(port.into()))?;
    let (ip, prefix) = match host.split_once('/') {
        Some((ip, prefix)) => (ip, Some(prefix)),
        None => (host, None),
    };
    let addr: std::net::IpAddr = ip.parse().map_err(|_| DestinationError::Ip(ip.into()))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        Some(p) => p
            .parse::<u8>()
            .ok()
            .filter(|p| *p <= max)
            .ok_or_else(|| DestinationError::Prefix {
                prefix: p.into(),
                max,
            })?,
        None => max,
    };
    Ok(Destination {
        addr,
        prefix,
        port,
        protocol,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations() {
        let d = parse("10.0.0.0/8:443").unwrap();
        assert_eq!((d.prefix, d.port), (8, 443));
        assert_eq!(parse("[::1]:22").unwrap().prefix, 128);
        assert_eq!(
            parse("example.com:443"),
            Err(DestinationError::Ip("example.com".into()))
        );
        assert!(parse("1.2.3.4/33:1").is_err());
        assert!(parse("1.2.3.4:99999").is_err());
        let udp = parse("127.0.0.53:53/udp").unwrap();
        assert_eq!((udp.port, udp.protocol), (53, Some(17)));
        assert_eq!(udp.to_string(), "127.0.0.53/32:53/udp");
        assert_eq!(parse("10.0.0.0/8:443").unwrap().protocol, None);
        assert_eq!(
            parse("1.2.3.4:1/icmp"),
            Err(DestinationError::Protocol("icmp".into()))
        );
    }
}
