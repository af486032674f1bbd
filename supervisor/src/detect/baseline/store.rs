//! The baseline file: a magic line, a JSON header line, then little-endian binary: the n-gram
//! table (count, then key u64 + count u32 each) and the profiles (count, then per profile
//! its length u32 and its features, key u64 + count u32 each).
//!
//! v2 added the profiles (the kNN method) and the ABI. A v1 file (no profiles) still loads, for
//! the live monitor and the frames and stide methods; `cordon score` refuses kNN on it.

use std::io::{Read, Write};
use std::path::Path;

use super::{BaselineError, Grams, Header, Model, Profile, FRAME, N};

const MAGIC: &[u8] = b"cordon-baseline-v2\n";
const MAGIC_V1: &[u8] = b"cordon-baseline-v1\n";

impl Model {
    pub fn save(&self, path: &Path) -> Result<(), BaselineError> {
        let mut header = self.header.clone();
        header.frequency = self.freq.iter().map(|(&s, &n)| (s, n)).collect();
        header.frequency.sort_unstable();
        let mut keys: Vec<(u64, u32)> = self.grams.iter().map(|(&k, &v)| (k, v)).collect();
        keys.sort_unstable();
        let feats: usize = self.profiles.iter().map(|p| p.0.len()).sum();
        let mut out = Vec::with_capacity(MAGIC.len() + 256 + (keys.len() + feats) * 12);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(
            serde_json::to_string(&header)
                .map_err(BaselineError::Encode)?
                .as_bytes(),
        );
        out.push(b'\n');
        out.extend_from_slice(&(keys.len() as u64).to_le_bytes());
        for (k, v) in keys {
            out.extend_from_slice(&k.to_le_bytes());
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&(self.profiles.len() as u64).to_le_bytes());
        for p in &self.profiles {
            let len = u32::try_from(p.0.len()).expect("fewer than 2^32 features");
            out.extend_from_slice(&len.to_le_bytes());
            for &(k, v) in &p.0 {
                out.extend_from_slice(&k.to_le_bytes());
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
        let tmp = path.with_extension("tmp");
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&out)?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)
        };
        write().map_err(|source| {
            let _ = std::fs::remove_file(&tmp);
            BaselineError::Write {
                path: path.to_path_buf(),
                source,
            }
        })
    }

    pub fn load(path: &Path) -> Result<Model, BaselineError> {
        let mut bytes = Vec::new();
        std::fs::File::open(path)
            .and_then(|mut f| f.read_to_end(&mut bytes))
            .map_err(|source| BaselineError::Read {
                path: path.to_path_buf(),
                source,
            })?;
        let bad = |why: &str| BaselineError::Invalid {
            path: path.to_path_buf(),
            why: why.into(),
        };
        let (v1, rest) = match (bytes.strip_prefix(MAGIC_V1), bytes.strip_prefix(MAGIC)) {
            (Some(rest), _) => (true, rest),
            (_, Some(rest)) => (false, rest),
            _ => return Err(bad("it does not start with cordon-baseline-v2")),
        };
        let nl = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| bad("no header"))?;
        let mut header: Header =
            serde_json::from_slice(&rest[..nl]).map_err(|e| bad(&format!("header: {e}")))?;
        if v1 {
            header.profile_labels.clear();
        }
        if header.n != N || header.frame != FRAME {
            return Err(bad(&format!(
                "made with n={} frame={}, this cordon uses n={N} frame={FRAME}",
                header.n, header.frame
            )));
        }
        let mut r = Reader(&rest[nl + 1..]);
        let short = || bad("cut short");
        let count = r.u64().ok_or_else(short)?;
        let mut grams = Grams::default();
        grams.reserve(usize::try_from(count).unwrap_or(0).min(r.0.len() / 12));
        for _ in 0..count {
            let (k, v) = r.pair().ok_or_else(short)?;
            grams.insert(k, v);
        }
        let count = if v1 { 0 } else { r.u64().ok_or_else(short)? };
        let mut profiles = Vec::with_capacity(usize::try_from(count).unwrap_or(0).min(r.0.len() / 4));
        for _ in 0..count {
            let len = r.u32().ok_or_else(short)?;
            let p: Option<Vec<(u64, u32)>> = (0..len).map(|_| r.pair()).collect();
            profiles.push(Profile(p.ok_or_else(short)?));
        }
        if !r.0.is_empty() {
            return Err(bad(&format!("{} bytes after the profiles", r.0.len())));
        }
        if profiles.len() != header.profile_labels.len() {
            return Err(bad("the profiles and their labels do not match"));
        }
        let freq = header.frequency.iter().copied().collect();
        Ok(Model {
            header,
            grams,
            freq,
            profiles,
            index: Default::default(),
        })
    }
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const K: usize>(&mut self) -> Option<[u8; K]> {
        let (head, rest) = self.0.split_first_chunk::<K>()?;
        self.0 = rest;
        Some(*head)
    }
    fn u64(&mut self) -> Option<u64> {
        self.take().map(u64::from_le_bytes)
    }
    fn u32(&mut self) -> Option<u32> {
        self.take().map(u32::from_le_bytes)
    }
    fn pair(&mut self) -> Option<(u64, u32)> {
        Some((self.u64()?, self.u32()?))
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Alphabet, Method};
    use super::*;

    #[test]
    fn save_load_round_trip_and_bad_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("b");
        let mut m = Model::new(Alphabet::Syscalls);
        m.train(&[1, 2, 3, 4, 5, 6, 7, 8], "a");
        m.train(&[1, 2, 3, 4, 1, 2, 3, 4], "b");
        m.save(&p).unwrap();
        let back = Model::load(&p).unwrap();
        assert_eq!(back.grams(), m.grams());
        assert_eq!(back.profiles, m.profiles);
        let probe = [1, 2, 3, 9, 5, 6, 7, 8];
        for method in [Method::Knn, Method::Frames, Method::Stide] {
            assert_eq!(back.score(&probe, method), m.score(&probe, method));
        }
        std::fs::write(&p, b"hello").unwrap();
        assert!(Model::load(&p)
            .unwrap_err()
            .to_string()
            .contains("not a cordon baseline"));
        let mut bytes = Vec::new();
        m.save(&p).unwrap();
        std::fs::File::open(&p).unwrap().read_to_end(&mut bytes).unwrap();
        std::fs::write(&p, &bytes[..bytes.len() - 5]).unwrap();
        assert!(Model::load(&p).unwrap_err().to_string().contains("cut short"));
        // A v1 file: the same without the profiles; it loads, for the methods that need none.
        let profiles: usize = m.profiles.iter().map(|p| 4 + 12 * p.0.len()).sum();
        let mut v1 = bytes[..bytes.len() - 8 - profiles].to_vec();
        v1[..MAGIC.len()].copy_from_slice(MAGIC_V1);
        std::fs::write(&p, &v1).unwrap();
        let old = Model::load(&p).unwrap();
        assert!(!old.has_profiles() && m.has_profiles());
        assert_eq!(old.score(&probe, Method::Frames), m.score(&probe, Method::Frames));
    }
}
