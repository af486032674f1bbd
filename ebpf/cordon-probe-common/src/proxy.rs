//! How a proxied TCP connect carries its original destination, in `netmode::PROXY`.
//!
//! The probes rewrite a connect to `a.b.c.d:port` into a connect to `127.b.c.d:proxy_port` and
//! bind the socket first (`bpf_bind`, port 0: the kernel picks the source port) to
//! `127.a.hi.lo`, where `hi.lo` is `port` big-endian. The supervisor's listener, bound to
//! `0.0.0.0:proxy_port` in the sandbox's namespace, accepts it; [`decode`] of the accepted
//! socket's local address and its peer's address gives `a.b.c.d:port` back, with no lookup.
//!
//! Destinations that cannot be carried are refused ([`encode`] returns `None`): port 0;
//! `a` = 0 (0/8), 127 (loopback, never redirected) or 224 and above (multicast, reserved,
//! broadcast: not TCP destinations); `b.c.d` = 0.0.0 or 255.255.255 (the listener address
//! would be 127/8's network or broadcast address). So the source of a redirected connection
//! is never `127.0.x.y`: a client that connects to the listener directly from `127.0.0.1`
//! decodes as `None`.

/// Where [`encode`] sends a connect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Redirect {
    /// The address the connect goes to (with the proxy's port): `127.b.c.d`.
    pub listen: [u8; 4],
    /// The address the socket is bound to (port 0): `127.a.hi.lo`.
    pub source: [u8; 4],
}

/// The redirect of a TCP connect to `dst:port`, or `None` if it cannot be encoded.
pub const fn encode(dst: [u8; 4], port: u16) -> Option<Redirect> {
    let [a, b, c, d] = dst;
    if port == 0 || a == 0 || a == 127 || a >= 224 {
        return None;
    }
    if (b == 0 && c == 0 && d == 0) || (b == 255 && c == 255 && d == 255) {
        return None;
    }
    let [hi, lo] = port.to_be_bytes();
    Some(Redirect {
        listen: [127, b, c, d],
        source: [127, a, hi, lo],
    })
}

/// The original destination of a connection the listener accepted: `local` is the
/// accepted socket's local address, `peer` its peer's. `None`: not a redirected connect
/// (something [`encode`] never produces, e.g. a client connecting directly from
/// `127.0.0.1`).
pub const fn decode(local: [u8; 4], peer: [u8; 4]) -> Option<([u8; 4], u16)> {
    let [l0, b, c, d] = local;
    let [p0, a, hi, lo] = peer;
    if l0 != 127 || p0 != 127 {
        return None;
    }
    let dst = [a, b, c, d];
    let port = u16::from_be_bytes([hi, lo]);
    match encode(dst, port) {
        Some(_) => Some((dst, port)),
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::{decode, encode, Redirect};

    /// A small deterministic generator (no dependencies in this crate).
    fn lcg(state: &mut u64) -> u32 {
        *state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (*state >> 32) as u32
    }

    #[test]
    fn encode_example() {
        assert_eq!(
            encode([203, 0, 113, 7], 443),
            Some(Redirect {
                listen: [127, 0, 113, 7],
                source: [127, 203, 1, 187],
            })
        );
        assert_eq!(
            decode([127, 0, 113, 7], [127, 203, 1, 187]),
            Some(([203, 0, 113, 7], 443))
        );
    }

    #[test]
    fn round_trip_over_many_destinations() {
        let mut seed = 7;
        let mut checked = 0u32;
        for _ in 0..200_000 {
            let dst = lcg(&mut seed).to_be_bytes();
            let port = (lcg(&mut seed) >> 16) as u16;
            match encode(dst, port) {
                Some(r) => {
                    assert_eq!(r.listen[0], 127);
                    assert_eq!(r.source[0], 127);
                    assert_eq!(decode(r.listen, r.source), Some((dst, port)), "{dst:?}:{port}");
                    checked += 1;
                }
                None => assert!(
                    port == 0
                        || dst[0] == 0
                        || dst[0] == 127
                        || dst[0] >= 224
                        || dst[1..] == [0, 0, 0]
                        || dst[1..] == [255, 255, 255],
                    "refused {dst:?}:{port}"
                ),
            }
        }
        assert!(checked > 150_000);
        // Every port, and the edges of the address space that can be carried.
        for port in 1..=u16::MAX {
            for dst in [
                [1, 0, 0, 1],
                [223, 255, 255, 254],
                [10, 1, 2, 3],
                [126, 0, 0, 1],
                [128, 0, 0, 1],
            ] {
                let r = encode(dst, port).expect("encodable");
                assert_eq!(decode(r.listen, r.source), Some((dst, port)));
            }
        }
    }

    #[test]
    fn refusals() {
        for (dst, port) in [
            ([203, 0, 113, 7], 0),
            ([0, 1, 2, 3], 80),
            ([127, 0, 0, 1], 80),
            ([127, 1, 2, 3], 80),
            ([224, 0, 0, 1], 80),
            ([240, 1, 2, 3], 80),
            ([255, 255, 255, 255], 80),
            ([10, 0, 0, 0], 80),
            ([10, 255, 255, 255], 80),
        ] {
            assert_eq!(encode(dst, port), None, "{dst:?}:{port}");
        }
    }

    #[test]
    fn what_encode_never_produces_does_not_decode() {
        // A client that connects to the listener directly, from 127.0.0.1 or ::ffff:127.0.0.1.
        assert_eq!(decode([127, 0, 0, 1], [127, 0, 0, 1]), None);
        assert_eq!(decode([127, 0, 0, 1], [127, 0, 1, 187]), None);
        // Not loopback at all.
        assert_eq!(decode([10, 0, 113, 7], [127, 203, 1, 187]), None);
        assert_eq!(decode([127, 0, 113, 7], [10, 203, 1, 187]), None);
        // Port 0, network and broadcast listener addresses.
        assert_eq!(decode([127, 0, 113, 7], [127, 203, 0, 0]), None);
        assert_eq!(decode([127, 0, 0, 0], [127, 203, 1, 187]), None);
        assert_eq!(decode([127, 255, 255, 255], [127, 203, 1, 187]), None);
        assert_eq!(decode([127, 1, 1, 1], [127, 255, 255, 255]), None);
    }
}
