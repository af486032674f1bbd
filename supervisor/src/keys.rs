//! The host's trace signing key (ed25519): `cordon key init` creates it, `cordon key show`
//! prints its public half. Traces are signed with it (checkpoints and seal), so only root may
//! read it: the directory is 0700, the key file 0600, both owned by root, and a key whose file
//! others could read is refused rather than used.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use ed25519_dalek::{SigningKey, VerifyingKey};

/// Where the key lives unless `--dir` says otherwise.
pub const DEFAULT_DIR: &str = "/var/lib/cordon/keys";
const SECRET: &str = "signing.key";
const PUBLIC: &str = "signing.pub";
/// How a public key is written: this prefix, then 64 hex digits.
const PREFIX: &str = "ed25519:";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: {why}; refusing to use it (fix: chown root and chmod {mode:o}, or move it away and run `cordon key init`)")]
    Insecure { path: PathBuf, why: String, mode: u32 },
    #[error("no signing key in {0} (create one with `sudo cordon key init`)")]
    Missing(PathBuf),
    #[error("{path}: not a signing key ({why})")]
    Malformed { path: PathBuf, why: String },
    #[error("not a public key: {0:?} (expected {PREFIX} and 64 hex digits, as `cordon key show` prints)")]
    BadPublic(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> KeyError + '_ {
    move |source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The host key, loaded.
pub struct HostKey {
    pub signing: SigningKey,
}

impl HostKey {
    pub fn public(&self) -> VerifyingKey {
        self.signing.verifying_key()
    }
}

/// Create the key in `dir` unless it exists; return it and whether it was created now.
pub fn init(dir: &Path) -> Result<(HostKey, bool), KeyError> {
    match load(dir) {
        Err(KeyError::Missing(_)) => {}
        other => return other.map(|k| (k, false)),
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io(dir))?;
    check_private(dir, 0o700)?;
    let mut seed = [0u8; 32];
    getrandom(&mut seed).map_err(io(dir))?;
    let key = SigningKey::from_bytes(&seed);
    let secret = dir.join(SECRET);
    // O_EXCL: two `cordon key init` at once never overwrite each other's key.
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&secret)
        .map_err(io(&secret))?;
    f.write_all(&seed)
        .and_then(|()| f.sync_all())
        .map_err(io(&secret))?;
    let public = dir.join(PUBLIC);
    std::fs::write(&public, format!("{}\n", public_text(&key.verifying_key()))).map_err(io(&public))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))?;
    Ok((HostKey { signing: key }, true))
}

/// Load the key from `dir`, refusing one others could read.
pub fn load(dir: &Path) -> Result<HostKey, KeyError> {
    let secret = dir.join(SECRET);
    let bytes = match std::fs::read(&secret) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(KeyError::Missing(dir.to_path_buf()))
        }
        Err(e) => return Err(io(&secret)(e)),
    };
    check_private(dir, 0o700)?;
    check_private(&secret, 0o600)?;
    let seed: [u8; 32] = bytes.as_slice().try_into().map_err(|_| KeyError::Malformed {
        path: secret.clone(),
        why: format!("{} bytes, expected 32", bytes.len()),
    })?;
    Ok(HostKey {
        signing: SigningKey::from_bytes(&seed),
    })
}

/// Owned by root and not accessible to group or others.
fn check_private(path: &Path, mode: u32) -> Result<(), KeyError> {
    let m = std::fs::symlink_metadata(path).map_err(io(path))?;
    let why = if m.file_type().is_symlink() {
        Some("is a symbolic link".to_string())
    } else if m.uid() != 0 {
        Some(format!("owned by uid {}, not root", m.uid()))
    } else if m.mode() & 0o077 != 0 {
        Some(format!("mode {:o} lets others in", m.mode() & 0o777))
    } else {
        None
    };
    match why {
        Some(why) => Err(KeyError::Insecure {
            path: path.to_path_buf(),
            why,
            mode,
        }),
        None => Ok(()),
    }
}

fn getrandom(buf: &mut [u8]) -> std::io::Result<()> {
    getrandom::fill(buf).map_err(|e| std::io::Error::from_raw_os_error(e.raw_os_error().unwrap_or(libc::EIO)))
}

/// `ed25519:` and the key in hex.
pub fn public_text(k: &VerifyingKey) -> String {
    let hex: String = k.as_bytes().iter().map(|b| format!("{b:02x}")).collect();
    format!("{PREFIX}{hex}")
}

/// Parse what `public_text` writes (surrounding whitespace allowed).
pub fn parse_public(text: &str) -> Result<VerifyingKey, KeyError> {
    let bad = || KeyError::BadPublic(text.trim().to_string());
    let hex = text.trim().strip_prefix(PREFIX).ok_or_else(bad)?;
    if hex.len() != 64 || !hex.is_ascii() {
        return Err(bad());
    }
    let mut b = [0u8; 32];
    for (i, out) in b.iter_mut().enumerate() {
        *out = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
    }
    VerifyingKey::from_bytes(&b).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_keys_round_trip_and_bad_ones_are_named() {
        let k = SigningKey::from_bytes(&[7u8; 32]).verifying_key();
        let text = public_text(&k);
        assert!(text.starts_with("ed25519:") && text.len() == 8 + 64);
        assert_eq!(parse_public(&format!(" {text}\n")).unwrap(), k);
        for bad in [
            "",
            "ed25519:",
            "ed25519:zz",
            &text[..text.len() - 1],
            &text.replace("ed25519:", "rsa:"),
        ] {
            assert!(
                matches!(parse_public(bad), Err(KeyError::BadPublic(_))),
                "{bad:?}"
            );
        }
    }
}
