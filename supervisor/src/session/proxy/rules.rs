//! What the proxy lets through: the profile's name and address rules, `deny`, live changes
//! (`cordon net allow|deny`, with their expiry), and the addresses no rule can open up.
//! Pure logic: every decision names the rule that made it.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Instant;

use crate::policy::NetworkPolicy;
use crate::profile::destination::Destination;
use crate::profile::egress::{Egress, NameRule};

/// A verdict and the rule (as the profile wrote it) or reason behind it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub allowed: bool,
    pub rule: String,
    /// Refused because no rule speaks for it (not by a `deny` rule or the addresses nothing
    /// may reach): what `unlisted = "ask"` holds and asks about.
    pub unlisted: bool,
}

impl Verdict {
    pub fn allow(rule: impl ToString) -> Self {
        Self {
            allowed: true,
            rule: rule.to_string(),
            unlisted: false,
        }
    }
    pub fn refuse(rule: impl ToString) -> Self {
        Self {
            allowed: false,
            rule: rule.to_string(),
            unlisted: false,
        }
    }
    fn unlisted(rule: impl ToString) -> Self {
        Self {
            unlisted: true,
            ..Self::refuse(rule)
        }
    }
}

/// A rule added while the sandbox runs.
#[derive(Debug, Clone)]
struct Live {
    rule: Egress,
    allow: bool,
    until: Option<Instant>,
}

#[derive(Debug, Clone)]
pub struct Rules {
    names: Vec<NameRule>,
    addresses: Vec<Destination>,
    deny: Vec<Egress>,
    resolve: BTreeMap<String, IpAddr>,
    live: Vec<Live>,
    ask: Option<std::time::Duration>,
}

/// An upstream address cordon will not connect to for a name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unreachable {
    #[error("{ip} is {why}")]
    Never { ip: IpAddr, why: &'static str },
    #[error("{ip} is {why}; only an address rule naming it allows it")]
    NeedsRule { ip: IpAddr, why: &'static str },
}

/// Why an upstream address is refused whatever the rules say, if it is.
pub fn never(ip: IpAddr) -> Option<&'static str> {
    let v4 = match ip {
        IpAddr::V4(a) => Some(a),
        IpAddr::V6(a) => a.to_ipv4_mapped(),
    };
    if let Some(a) = v4 {
        let o = a.octets();
        return match o {
            [169, 254, ..] => Some("link-local (cloud metadata lives here)"),
            [100, 100, 100, 200] => Some("cloud metadata"),
            [0, ..] => Some("\"this network\" (0.0.0.0/8)"),
            [224..=255, ..] => Some("multicast or reserved"),
            _ => None,
        };
    }
    let IpAddr::V6(a) = ip else { return None };
    let s = a.segments();
    if s[0] & 0xffc0 == 0xfe80 {
        return Some("link-local");
    }
    if a == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) {
        return Some("cloud metadata");
    }
    if a.is_multicast() || a.is_unspecified() {
        return Some("multicast or unspecified");
    }
    None
}

/// Why an upstream address needs a rule that names it (loopback, private ranges), if it does.
pub fn private(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(a) => private_v4(a),
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(m) => private_v4(m),
            None if a.is_loopback() => Some("loopback"),
            None if a.segments()[0] & 0xfe00 == 0xfc00 => Some("a private range (fc00::/7)"),
            None => None,
        },
    }
}

fn private_v4(a: Ipv4Addr) -> Option<&'static str> {
    let o = a.octets();
    match o {
        [127, ..] => Some("loopback"),
        [10, ..] => Some("a private range (10.0.0.0/8)"),
        [172, 16..=31, ..] => Some("a private range (172.16.0.0/12)"),
        [192, 168, ..] => Some("a private range (192.168.0.0/16)"),
        [100, 64..=127, ..] => Some("shared address space (100.64.0.0/10)"),
        _ => None,
    }
}

fn dest_matches(d: &Destination, ip: IpAddr, port: u16) -> bool {
    if d.port != 0 && d.port != port {
        return false;
    }
    if d.protocol.is_some_and(|p| i32::from(p) != libc::IPPROTO_TCP) {
        return false;
    }
    let bits = |ip: IpAddr| -> u128 {
        match ip {
            IpAddr::V4(a) => u128::from(u32::from(a)) << 96,
            IpAddr::V6(a) => u128::from(a),
        }
    };
    if d.addr.is_ipv4() != ip.is_ipv4() {
        return false;
    }
    let width: u32 = if ip.is_ipv4() { 32 } else { 128 };
    let keep = u32::from(d.prefix).min(width);
    if keep == 0 {
        return true;
    }
    let mask = u128::MAX << (128 - keep);
    bits(d.addr) & mask == bits(ip) & mask
}

fn egress_matches_name(rule: &Egress, name: &str, port: Option<u16>) -> bool {
    match rule {
        Egress::Name(n) => match port {
            Some(p) => n.matches(name, p),
            None => n.matches_name(name),
        },
        Egress::Address(_) => false,
    }
}

impl Rules {
    pub fn new(net: &NetworkPolicy) -> Self {
        Self {
            names: net.names.clone(),
            addresses: net.allow.clone(),
            deny: net.deny.clone(),
            resolve: net.resolve.clone(),
            live: Vec::new(),
            ask: net.ask,
        }
    }

    /// Rules from profile-style entries (tests).
    #[cfg(test)]
    pub fn for_test(allow: &[&str], deny: &[&str]) -> Rules {
        use crate::profile::egress::parse;
        let mut r = Rules {
            names: Vec::new(),
            addresses: Vec::new(),
            deny: deny.iter().map(|d| parse(d).unwrap()).collect(),
            resolve: BTreeMap::new(),
            live: Vec::new(),
            ask: None,
        };
        for a in allow {
            match parse(a).unwrap() {
                Egress::Name(n) => r.names.push(n),
                Egress::Address(d) => r.addresses.push(d),
            }
        }
        r
    }

    /// `unlisted = "ask"`: how long an unlisted connection is held; None: refused at once.
    pub fn ask(&self) -> Option<std::time::Duration> {
        self.ask
    }

    /// Add a live rule; `until` None lasts for the run.
    pub fn add(&mut self, rule: Egress, allow: bool, until: Option<Instant>) {
        self.live.push(Live { rule, allow, until });
    }

    /// Drop the live allow rules equal to `rule` (a grant revoked before its time).
    pub fn withdraw(&mut self, rule: &Egress) {
        self.live.retain(|l| !(l.allow && &l.rule == rule));
    }

    /// Drop live rules whose time is up; returns them (to be recorded).
    pub fn expire(&mut self, now: Instant) -> Vec<String> {
        let (gone, kept): (Vec<Live>, Vec<Live>) = std::mem::take(&mut self.live)
            .into_iter()
            .partition(|l| l.until.is_some_and(|u| u <= now));
        self.live = kept;
        gone.into_iter().map(|l| l.rule.to_string()).collect()
    }

    /// The earliest expiry of a live rule.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.live.iter().filter_map(|l| l.until).min()
    }

    /// The fixed upstream address the profile gives for `name`.
    pub fn fixed(&self, name: &str) -> Option<IpAddr> {
        self.resolve.get(name).copied()
    }

    /// May the agent look up `name` (on some port)? Deny wins over allow; a live rule wins
    /// over the profile's (the latest live rule first).
    pub fn name(&self, name: &str) -> Verdict {
        self.decide_name(name, None)
    }

    /// May the agent connect to `name` on `port`?
    pub fn name_port(&self, name: &str, port: u16) -> Verdict {
        self.decide_name(name, Some(port))
    }

    fn decide_name(&self, name: &str, port: Option<u16>) -> Verdict {
        let now = Instant::now();
        for l in self.live.iter().rev().filter(|l| l.until.is_none_or(|u| u > now)) {
            if egress_matches_name(&l.rule, name, port) {
                let rule = format!("live {} {}", if l.allow { "allow" } else { "deny" }, l.rule);
                return if l.allow {
                    Verdict::allow(rule)
                } else {
                    Verdict::refuse(rule)
                };
            }
        }
        if let Some(d) = self.deny.iter().find(|d| egress_matches_name(d, name, port)) {
            return Verdict::refuse(format!("deny {d}"));
        }
        match self.names.iter().find(|n| match port {
            Some(p) => n.matches(name, p),
            None => n.matches_name(name),
        }) {
            Some(n) => Verdict::allow(n),
            None => Verdict::unlisted(match port {
                Some(p) if self.names.iter().any(|n| n.matches_name(name)) => {
                    format!("no rule allows port {p} for {name}")
                }
                _ => "unlisted".into(),
            }),
        }
    }

    /// May the agent connect to the literal address `ip:port` (no name)?
    pub fn address(&self, ip: IpAddr, port: u16) -> Verdict {
        let now = Instant::now();
        for l in self.live.iter().rev().filter(|l| l.until.is_none_or(|u| u > now)) {
            if let Egress::Address(d) = &l.rule {
                if dest_matches(d, ip, port) {
                    let rule = format!("live {} {}", if l.allow { "allow" } else { "deny" }, l.rule);
                    return if l.allow {
                        Verdict::allow(rule)
                    } else {
                        Verdict::refuse(rule)
                    };
                }
            }
        }
        if let Some(d) = self
            .deny
            .iter()
            .find(|d| matches!(d, Egress::Address(a) if dest_matches(a, ip, port)))
        {
            return Verdict::refuse(format!("deny {d}"));
        }
        if let Some(why) = never(ip) {
            return Verdict::refuse(format!("{ip} is {why}"));
        }
        match self.addresses.iter().find(|d| dest_matches(d, ip, port)) {
            Some(d) => Verdict::allow(d),
            None => Verdict::unlisted("unlisted address"),
        }
    }

    /// May cordon connect to `ip` for an allowed name? Addresses the profile fixed with
    /// `resolve` are trusted except where nothing may go (link-local, metadata); resolved
    /// ones must also not be loopback, private or this host's own (DNS rebinding) unless an
    /// address rule names them.
    pub fn upstream(&self, ip: IpAddr, fixed: bool, host_addrs: &[IpAddr]) -> Result<(), Unreachable> {
        if let Some(why) = never(ip) {
            return Err(Unreachable::Never { ip, why });
        }
        if fixed {
            return Ok(());
        }
        let named = self
            .addresses
            .iter()
            .any(|d| dest_matches(d, ip, 0) || d.addr == ip);
        if named {
            return Ok(());
        }
        if let Some(why) = private(ip) {
            return Err(Unreachable::NeedsRule { ip, why });
        }
        if host_addrs.contains(&ip) {
            return Err(Unreachable::NeedsRule {
                ip,
                why: "this host's own address",
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::egress::parse;

    fn rules(allow: &[&str], deny: &[&str]) -> Rules {
        Rules::for_test(allow, deny)
    }

    #[test]
    fn names_ports_and_deny() {
        let r = rules(
            &["api.example.com:443", "*.cdn.test", "git.test:22"],
            &["evil.cdn.test"],
        );
        assert!(r.name("api.example.com").allowed);
        assert!(r.name_port("api.example.com", 443).allowed);
        let v = r.name_port("api.example.com", 80);
        assert_eq!(
            (v.allowed, v.rule.as_str()),
            (false, "no rule allows port 80 for api.example.com")
        );
        assert!(r.name_port("a.cdn.test", 80).allowed);
        assert_eq!(r.name("evil.cdn.test"), Verdict::refuse("deny evil.cdn.test"));
        assert_eq!(r.name("cdn.test"), Verdict::unlisted("unlisted"));
        assert!(!r.name("evil.cdn.test").unlisted, "a deny rule decided it");
        assert!(r.name_port("git.test", 22).allowed && !r.name_port("git.test", 443).allowed);
    }

    #[test]
    fn live_rules_win_and_expire() {
        let mut r = rules(&["a.test"], &[]);
        let now = Instant::now();
        r.add(
            parse("b.test:443").unwrap(),
            true,
            Some(now + std::time::Duration::from_secs(60)),
        );
        r.add(parse("a.test").unwrap(), false, None);
        assert!(r.name("b.test").allowed);
        assert_eq!(r.name("a.test"), Verdict::refuse("live deny a.test"));
        assert_eq!(r.expire(now + std::time::Duration::from_secs(61)), ["b.test:443"]);
        assert!(!r.name("b.test").allowed);
    }

    #[test]
    fn addresses_metadata_and_rebinding() {
        let r = rules(&["192.0.2.0/24:22", "10.1.2.3:443"], &["192.0.2.9:22"]);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(r.address(ip("192.0.2.7"), 22).allowed);
        assert!(!r.address(ip("192.0.2.7"), 23).allowed);
        assert!(!r.address(ip("192.0.2.9"), 22).allowed);
        assert!(!r.address(ip("169.254.169.254"), 80).allowed);
        // Upstream addresses of an allowed name.
        assert!(r.upstream(ip("203.0.113.5"), false, &[]).is_ok());
        assert!(r
            .upstream(ip("127.0.0.1"), false, &[])
            .unwrap_err()
            .to_string()
            .contains("loopback"));
        assert!(r.upstream(ip("::ffff:192.168.1.1"), false, &[]).is_err());
        assert!(r.upstream(ip("10.1.2.3"), false, &[]).is_ok(), "named by a rule");
        assert!(r
            .upstream(ip("203.0.113.5"), false, &[ip("203.0.113.5")])
            .unwrap_err()
            .to_string()
            .contains("own"));
        assert!(r.upstream(ip("127.0.0.1"), true, &[]).is_ok(), "fixed by resolve");
        assert!(
            r.upstream(ip("169.254.169.254"), true, &[]).is_err(),
            "never, even fixed"
        );
        assert!(r.upstream(ip("fe80::1"), true, &[]).is_err());
    }
}
