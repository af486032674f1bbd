//! What the first bytes of a connection say about where it is going: the TLS ClientHello's
//! server name, or a plain-HTTP request's method, path and Host. Pure parsing of untrusted
//! bytes, bounds-checked everywhere.

/// What the agent's first bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Opening {
    /// A TLS ClientHello, with its server name if it sent one.
    Tls { sni: Option<String> },
    /// A plain-HTTP request.
    Http {
        method: String,
        path: String,
        host: Option<String>,
    },
    /// Not enough bytes yet to tell.
    Incomplete,
    /// Something else (ssh, a custom protocol).
    Other,
}

/// Look at the bytes the agent sent first (up to what arrived).
pub fn opening(buf: &[u8]) -> Opening {
    if buf.is_empty() {
        return Opening::Incomplete;
    }
    if buf[0] == 0x16 {
        return tls(buf);
    }
    http(buf)
}

struct Cursor<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(n)?;
        let s = self.b.get(self.at..end)?;
        self.at = end;
        Some(s)
    }
    fn u8(&mut self) -> Option<usize> {
        self.take(1).map(|b| usize::from(b[0]))
    }
    fn u16(&mut self) -> Option<usize> {
        self.take(2)
            .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
    }
    fn u24(&mut self) -> Option<usize> {
        self.take(3)
            .map(|b| (usize::from(b[0]) << 16) | (usize::from(b[1]) << 8) | usize::from(b[2]))
    }
}

fn tls(buf: &[u8]) -> Opening {
    // Record header: type 0x16, version (2), length (2); then the handshake header.
    let mut rec = Cursor { b: buf, at: 0 };
    let Some(header) = rec.take(5) else {
        return Opening::Incomplete;
    };
    let record_len = usize::from(u16::from_be_bytes([header[3], header[4]]));
    let Some(body) = rec.take(record_len) else {
        return Opening::Incomplete;
    };
    let mut c = Cursor { b: body, at: 0 };
    let mut hello = || -> Option<Option<String>> {
        if c.u8()? != 1 {
            return None; // not a ClientHello
        }
        let len = c.u24()?;
        let mut h = Cursor {
            b: c.take(len)?,
            at: 0,
        };
        h.take(2 + 32)?; // version, random
        let sid = h.u8()?;
        h.take(sid)?;
        let suites = h.u16()?;
        h.take(suites)?;
        let comp = h.u8()?;
        h.take(comp)?;
        if h.at == h.b.len() {
            return Some(None); // no extensions
        }
        let ext_len = h.u16()?;
        let mut e = Cursor {
            b: h.take(ext_len)?,
            at: 0,
        };
        while e.at < e.b.len() {
            let ty = e.u16()?;
            let len = e.u16()?;
            let data = e.take(len)?;
            if ty != 0 {
                continue; // server_name is extension 0
            }
            let mut s = Cursor { b: data, at: 0 };
            let list = s.u16()?;
            let mut l = Cursor {
                b: s.take(list)?,
                at: 0,
            };
            while l.at < l.b.len() {
                let kind = l.u8()?;
                let n = l.u16()?;
                let name = l.take(n)?;
                if kind == 0 {
                    return Some(Some(String::from_utf8_lossy(name).into_owned()));
                }
            }
            return Some(None);
        }
        Some(None)
    };
    match hello() {
        Some(sni) => Opening::Tls { sni },
        // A ClientHello split over records, or garbage: the caller decides (a name rule
        // still binds the connection to the name the agent resolved).
        None => Opening::Other,
    }
}

const METHODS: &[&str] = &[
    "GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "CONNECT", "TRACE",
];

fn http(buf: &[u8]) -> Opening {
    let could_be_method = METHODS.iter().any(|m| {
        let m = m.as_bytes();
        let n = m.len().min(buf.len());
        buf[..n] == m[..n] && (buf.len() <= m.len() || buf[m.len()] == b' ')
    });
    if !could_be_method {
        return Opening::Other;
    }
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return if buf.len() > 16 * 1024 {
            Opening::Other
        } else {
            Opening::Incomplete
        };
    };
    let head = String::from_utf8_lossy(&buf[..end]);
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or("").split(' ');
    let (Some(method), Some(path)) = (first.next(), first.next()) else {
        return Opening::Other;
    };
    let host = lines.find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case("host")
            .then(|| v.trim().to_string())
    });
    Opening::Http {
        method: method.to_string(),
        path: path.to_string(),
        host,
    }
}

/// The status code of an HTTP response's first bytes, once its status line has arrived.
pub fn http_status(buf: &[u8]) -> Option<u16> {
    let line_end = buf.windows(2).position(|w| w == b"\r\n")?;
    let line = std::str::from_utf8(&buf[..line_end]).ok()?;
    let mut parts = line.split(' ');
    parts.next().filter(|v| v.starts_with("HTTP/"))?;
    parts.next()?.parse().ok()
}

/// The host part of a Host header or SNI, lowercase, without a port or trailing dot.
pub fn host_only(h: &str) -> String {
    let h = if h.starts_with('[') {
        h.split(']').next().unwrap_or(h).trim_start_matches('[')
    } else {
        h.rsplit_once(':').map_or(h, |(host, port)| {
            if port.bytes().all(|b| b.is_ascii_digit()) {
                host
            } else {
                h
            }
        })
    };
    h.trim_end_matches('.').to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn be16(n: usize) -> [u8; 2] {
        u16::try_from(n).unwrap().to_be_bytes()
    }

    /// A minimal TLS 1.2-style ClientHello carrying `sni`.
    pub fn client_hello(sni: Option<&str>) -> Vec<u8> {
        let mut ext = Vec::new();
        if let Some(name) = sni {
            let n = name.as_bytes();
            let mut list = vec![0u8];
            list.extend(be16(n.len()));
            list.extend(n);
            let mut data = be16(list.len()).to_vec();
            data.extend(list);
            ext.extend(0u16.to_be_bytes());
            ext.extend(be16(data.len()));
            ext.extend(data);
        }
        // An unrelated extension first (supported_groups), to be skipped.
        let mut all = vec![0x00, 0x0a, 0x00, 0x04, 0x00, 0x02, 0x00, 0x1d];
        all.extend(ext);
        let mut hello = vec![0x03, 0x03];
        hello.extend([7u8; 32]);
        hello.push(0); // session id
        hello.extend([0x00, 0x02, 0x13, 0x01]); // one suite
        hello.extend([0x01, 0x00]); // null compression
        hello.extend(be16(all.len()));
        hello.extend(all);
        let mut hs = vec![0x01];
        hs.extend(&u32::try_from(hello.len()).unwrap().to_be_bytes()[1..]);
        hs.extend(hello);
        let mut rec = vec![0x16, 0x03, 0x01];
        rec.extend(be16(hs.len()));
        rec.extend(hs);
        rec
    }

    #[test]
    fn tls_server_name_is_read_and_partial_hellos_wait() {
        let h = client_hello(Some("api.example.com"));
        assert_eq!(
            opening(&h),
            Opening::Tls {
                sni: Some("api.example.com".into())
            }
        );
        for cut in 1..h.len() {
            assert_eq!(opening(&h[..cut]), Opening::Incomplete, "cut at {cut}");
        }
        assert_eq!(opening(&client_hello(None)), Opening::Tls { sni: None });
    }

    #[test]
    fn garbage_never_panics() {
        let h = client_hello(Some("x.test"));
        for i in 5..h.len() {
            let mut bad = h.clone();
            bad[i] = 0xff;
            let _ = opening(&bad);
        }
        let _ = opening(&[0x16, 0x03, 0x01, 0x00, 0x01, 0x09]);
    }

    #[test]
    fn http_requests_and_statuses() {
        let req = b"GET /simple/pip/ HTTP/1.1\r\nHost: PyPI.org:80\r\nAccept: */*\r\n\r\n";
        match opening(req) {
            Opening::Http { method, path, host } => {
                assert_eq!((method.as_str(), path.as_str()), ("GET", "/simple/pip/"));
                assert_eq!(host_only(host.as_deref().unwrap()), "pypi.org");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(opening(b"GE"), Opening::Incomplete);
        assert_eq!(opening(b"GET / HTTP/1.1\r\nHost: a"), Opening::Incomplete);
        assert_eq!(opening(b"SSH-2.0-OpenSSH_9.6\r\n"), Opening::Other);
        assert_eq!(http_status(b"HTTP/1.1 404 Not Found\r\n"), Some(404));
        assert_eq!(http_status(b"HTTP/1.1 20"), None);
        assert_eq!(host_only("[::1]:8080"), "::1");
        assert_eq!(host_only("example.com."), "example.com");
    }
}
