//! The paths of the gitlinks (mode 160000: a submodule's commit) in a git index file,
//! formats 2, 3 and 4 (Documentation/gitformat-index.txt). Only the entries are read; the
//! extensions and the trailing checksum are not needed to find gitlinks.

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum IndexError {
    NotAnIndex,
    Version(u32),
    Truncated,
}

const GITLINK: u32 = 0o160000;
const TYPE_MASK: u32 = 0o170000;
/// ctime, mtime (8 bytes each), dev, ino, mode, uid, gid, size (4 each).
const STAT_LEN: usize = 40;
const MODE_AT: usize = 24;

fn be32(b: &[u8], at: usize) -> Result<u32, IndexError> {
    let s = b.get(at..at + 4).ok_or(IndexError::Truncated)?;
    Ok(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

/// Gitlink paths in `buf`, for an object hash of `hash_len` bytes (20 SHA-1, 32 SHA-256).
pub(crate) fn gitlinks(buf: &[u8], hash_len: usize) -> Result<Vec<Vec<u8>>, IndexError> {
    if buf.get(..4) != Some(b"DIRC") {
        return Err(IndexError::NotAnIndex);
    }
    let version = be32(buf, 4)?;
    if !(2..=4).contains(&version) {
        return Err(IndexError::Version(version));
    }
    let count = be32(buf, 8)?;
    let mut pos = 12usize;
    let mut prev: Vec<u8> = Vec::new();
    let mut out = Vec::new();
    for _ in 0..count {
        let start = pos;
        let mode = be32(buf, start + MODE_AT)?;
        let flags_at = start + STAT_LEN + hash_len;
        let flags = buf.get(flags_at..flags_at + 2).ok_or(IndexError::Truncated)?;
        let flags = u16::from_be_bytes([flags[0], flags[1]]);
        let mut name_at = flags_at + 2;
        if version >= 3 && flags & 0x4000 != 0 {
            name_at += 2;
        }
        let name;
        if version == 4 {
            // The name is the previous one with `strip` bytes cut off, then a NUL-ended tail.
            let (strip, tail_at) = varint(buf, name_at)?;
            let tail_len = nul_at(buf, tail_at)?;
            let keep = prev.len().checked_sub(strip).ok_or(IndexError::Truncated)?;
            let mut n = prev[..keep].to_vec();
            n.extend_from_slice(&buf[tail_at..tail_at + tail_len]);
            name = n;
            pos = tail_at + tail_len + 1;
        } else {
            let len = usize::from(flags & 0xfff);
            let len = if len == 0xfff { nul_at(buf, name_at)? } else { len };
            name = buf
                .get(name_at..name_at + len)
                .ok_or(IndexError::Truncated)?
                .to_vec();
            // 1 to 8 NULs pad the entry to a multiple of 8 bytes.
            pos = start + ((name_at - start + len + 8) & !7);
        }
        if pos > buf.len() {
            return Err(IndexError::Truncated);
        }
        if mode & TYPE_MASK == GITLINK {
            out.push(name.clone());
        }
        prev = name;
    }
    Ok(out)
}

/// Length of the NUL-terminated string at `at`.
fn nul_at(buf: &[u8], at: usize) -> Result<usize, IndexError> {
    buf.get(at..)
        .and_then(|s| s.iter().position(|&c| c == 0))
        .ok_or(IndexError::Truncated)
}

/// git's offset varint (`decode_varint`): big-endian 7-bit groups, each continuation adding 1.
fn varint(buf: &[u8], mut at: usize) -> Result<(usize, usize), IndexError> {
    let mut c = *buf.get(at).ok_or(IndexError::Truncated)?;
    at += 1;
    let mut val = usize::from(c & 0x7f);
    while c & 0x80 != 0 {
        c = *buf.get(at).ok_or(IndexError::Truncated)?;
        at += 1;
        val = val
            .checked_add(1)
            .and_then(|v| v.checked_mul(128))
            .ok_or(IndexError::Truncated)?
            + usize::from(c & 0x7f);
    }
    Ok((val, at))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An index of `entries` (mode, path) in `version`, SHA-1.
    pub(crate) fn build(version: u32, entries: &[(u32, &str)]) -> Vec<u8> {
        let mut b = b"DIRC".to_vec();
        b.extend_from_slice(&version.to_be_bytes());
        b.extend_from_slice(&u32::try_from(entries.len()).unwrap().to_be_bytes());
        let mut prev = "";
        for (mode, path) in entries {
            let start = b.len();
            b.extend_from_slice(&[0; 24]);
            b.extend_from_slice(&mode.to_be_bytes());
            b.extend_from_slice(&[0; 12]);
            b.extend_from_slice(&[0xab; 20]);
            let len = u16::try_from(path.len().min(0xfff)).unwrap();
            b.extend_from_slice(&len.to_be_bytes());
            if version == 4 {
                let common = prev.bytes().zip(path.bytes()).take_while(|(a, c)| a == c).count();
                b.push(u8::try_from(prev.len() - common).unwrap());
                b.extend_from_slice(&path.as_bytes()[common..]);
                b.push(0);
            } else {
                b.extend_from_slice(path.as_bytes());
                let pad = 8 - (b.len() - start) % 8;
                b.extend(std::iter::repeat_n(0, pad));
            }
            prev = path;
        }
        b.extend_from_slice(&[0; 20]);
        b
    }

    #[test]
    fn gitlinks_in_v2_v3_v4() {
        let entries = [
            (0o100644, "a.txt"),
            (0o160000, "sub"),
            (0o100755, "sub2/x"),
            (0o160000, "sub2/y"),
        ];
        for v in [2, 3, 4] {
            let got = gitlinks(&build(v, &entries), 20).unwrap();
            assert_eq!(got, vec![b"sub".to_vec(), b"sub2/y".to_vec()], "version {v}");
        }
    }

    #[test]
    fn malformed_indexes_are_errors_not_panics() {
        assert_eq!(gitlinks(b"XXXX", 20), Err(IndexError::NotAnIndex));
        let mut b = build(2, &[(0o160000, "sub")]);
        b[7] = 9;
        assert_eq!(gitlinks(&b, 20), Err(IndexError::Version(9)));
        let b = build(2, &[(0o160000, "sub")]);
        assert_eq!(gitlinks(&b[..70], 20), Err(IndexError::Truncated));
        assert_eq!(varint(&[0x80, 0x00], 0), Ok((128, 2)));
    }
}
