//! How kernel values are shown in events: addresses, protocols (errno names: `kernel`).

use super::pb;

/// A `struct sockaddr` as bytes → a readable address.
/// An address the probes copied in network byte order (IPv4 in the first word).
pub fn ip_text(family: u32, addr: &[u32; 4]) -> String {
    if family == 4 {
        std::net::Ipv4Addr::from(u32::from_be(addr[0])).to_string()
    } else {
        let mut b = [0u8; 16];
        for (i, w) in addr.iter().enumerate() {
            b[4 * i..4 * i + 4].copy_from_slice(&w.to_ne_bytes());
        }
        std::net::Ipv6Addr::from(b).to_string()
    }
}

pub fn protocol_name(p: u32) -> String {
    match i32::try_from(p) {
        Ok(libc::IPPROTO_TCP) => "tcp".into(),
        Ok(libc::IPPROTO_UDP) => "udp".into(),
        _ => format!("proto({p})"),
    }
}

pub fn sockaddr(b: &[u8]) -> Option<pb::SocketAddress> {
    let family = u16::from_ne_bytes([*b.first()?, *b.get(1)?]);
    let port = || u16::from_be_bytes([b[2], b[3]]) as u32;
    Some(match family as i32 {
        libc::AF_INET if b.len() >= 8 => pb::SocketAddress {
            family: "inet".into(),
            ip: std::net::Ipv4Addr::new(b[4], b[5], b[6], b[7]).to_string(),
            port: port(),
            path: String::new(),
        },
        libc::AF_INET6 if b.len() >= 24 => {
            let mut a = [0u8; 16];
            a.copy_from_slice(&b[8..24]);
            pb::SocketAddress {
                family: "inet6".into(),
                ip: std::net::Ipv6Addr::from(a).to_string(),
                port: port(),
                path: String::new(),
            }
        }
        libc::AF_UNIX => {
            let p = &b[2.min(b.len())..];
            let path = match p.first() {
                Some(0) => format!(
                    "@{}",
                    String::from_utf8_lossy(p[1..].split(|&c| c == 0).next().unwrap_or(&[]))
                ),
                _ => String::from_utf8_lossy(p.split(|&c| c == 0).next().unwrap_or(&[])).into_owned(),
            };
            pb::SocketAddress {
                family: "unix".into(),
                ip: String::new(),
                port: 0,
                path,
            }
        }
        f => pb::SocketAddress {
            family: format!("other({f})"),
            ..Default::default()
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockaddr_forms() {
        let mut v4 = vec![2u8, 0, 0x1f, 0x90, 127, 0, 0, 1];
        v4.extend([0; 8]);
        let a = sockaddr(&v4).unwrap();
        assert_eq!(
            (a.family.as_str(), a.ip.as_str(), a.port),
            ("inet", "127.0.0.1", 8080)
        );
        let un = [1u8, 0, 0, b'x', b'y', 0];
        assert_eq!(sockaddr(&un).unwrap().path, "@xy");
    }
}
