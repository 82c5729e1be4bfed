//! Signed provenance: an Ed25519 key signs the manifest (which names the SHA-256 of the
//! picture data), so a manifest cannot be moved to other content or edited without the
//! signature failing. Who holds a key is for the reader to trust (a server publishes its
//! public key); the signature proves only that the holder of that key made the claim.
//!
//! The signed message is the manifest without its `signature` field, serialised by
//! `serde_json` (keys sorted), so a verifier rebuilds it from what it reads.

use std::fmt;
use std::path::{Path, PathBuf};

use ed25519_dalek::{Signer as _, Verifier as _};
use serde_json::{json, Value};

/// Why a key could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("signing key {path}: {detail}; make one with `tessera keygen {path}`")]
    Read { path: PathBuf, detail: String },
    #[error(
        "{path} already exists; a key is never overwritten (choose another path or delete it)"
    )]
    Exists { path: PathBuf },
    #[error("writing the signing key {path}: {detail}")]
    Write { path: PathBuf, detail: String },
}

/// A signing key (the 32-byte Ed25519 seed).
#[derive(Clone)]
pub struct SigningKey(ed25519_dalek::SigningKey);

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the secret.
        write!(f, "SigningKey(public {})", self.public_hex())
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex<const N: usize>(s: &str) -> Option<[u8; N]> {
    let s = s.trim();
    if s.len() != 2 * N || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

impl SigningKey {
    /// A new key from the operating system's randomness.
    pub fn generate() -> Self {
        Self(ed25519_dalek::SigningKey::from_bytes(&rand::random()))
    }

    /// Reads a key file: the seed as 64 hex digits.
    pub fn read(path: &Path) -> Result<Self, KeyError> {
        let err = |detail: String| KeyError::Read {
            path: path.to_path_buf(),
            detail,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let seed = unhex::<32>(&text).ok_or_else(|| err("not 64 hex digits".into()))?;
        Ok(Self(ed25519_dalek::SigningKey::from_bytes(&seed)))
    }

    /// Writes a new key to `path` (owner-only permissions), refusing to replace a file.
    pub fn create(path: &Path) -> Result<Self, KeyError> {
        let err = |e: std::io::Error| KeyError::Write {
            path: path.to_path_buf(),
            detail: e.to_string(),
        };
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => KeyError::Exists {
                path: path.to_path_buf(),
            },
            _ => err(e),
        })?;
        let key = Self::generate();
        std::io::Write::write_all(
            &mut file,
            format!("{}\n", hex(&key.0.to_bytes())).as_bytes(),
        )
        .and_then(|()| file.sync_all())
        .map_err(err)?;
        Ok(key)
    }

    /// The public key, 64 hex digits: what a reader checks signatures against.
    pub fn public_hex(&self) -> String {
        hex(self.0.verifying_key().as_bytes())
    }

    /// Adds a `signature` field to `manifest` (a JSON object) signing the rest of it.
    pub fn sign(&self, manifest: &mut Value) {
        if let Some(map) = manifest.as_object_mut() {
            map.remove("signature");
        }
        let message = serde_json::to_vec(manifest).expect("JSON values serialise");
        let signature = self.0.sign(&message);
        manifest["signature"] = json!({
            "alg": "Ed25519",
            "public_key": self.public_hex(),
            "value": hex(&signature.to_bytes()),
        });
    }
}

/// A manifest's signature, checked.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Verified {
    /// Who signed (hex public key).
    pub public_key: String,
    /// Whether the signature holds for the manifest as read.
    pub valid: bool,
}

/// Checks the `signature` field of `manifest`; `None` when it has none.
pub fn verify(manifest: &Value) -> Option<Verified> {
    let sig = manifest.get("signature")?;
    let public_key = sig["public_key"].as_str().unwrap_or_default().to_string();
    let mut rest = manifest.clone();
    rest.as_object_mut()?.remove("signature");
    let message = serde_json::to_vec(&rest).ok()?;
    let valid = (|| {
        let key = ed25519_dalek::VerifyingKey::from_bytes(&unhex::<32>(&public_key)?).ok()?;
        let value = ed25519_dalek::Signature::from_bytes(&unhex::<64>(sig["value"].as_str()?)?);
        key.verify(&message, &value).ok()
    })()
    .is_some();
    Some(Verified { public_key, valid })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_manifest_verifies_and_any_change_breaks_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        let key = SigningKey::create(&path).unwrap();
        assert!(matches!(
            SigningKey::create(&path),
            Err(KeyError::Exists { .. })
        ));
        let again = SigningKey::read(&path).unwrap();
        assert_eq!(again.public_hex(), key.public_hex());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(!format!("{key:?}").contains(&hex(&key.0.to_bytes())));

        let mut m =
            json!({"claim_generator": "tessera", "content_sha256": "ab", "assertions": [1, 2]});
        assert_eq!(verify(&m), None);
        again.sign(&mut m);
        let ok = verify(&m).unwrap();
        assert_eq!(
            ok,
            Verified {
                public_key: key.public_hex(),
                valid: true
            }
        );
        // Signing is deterministic: the same manifest, the same bytes.
        let mut m2 = m.clone();
        key.sign(&mut m2);
        assert_eq!(m, m2);

        let mut moved = m.clone();
        moved["content_sha256"] = json!("cd");
        assert!(!verify(&moved).unwrap().valid);
        let mut other_key = m.clone();
        other_key["signature"]["public_key"] = json!(SigningKey::generate().public_hex());
        assert!(!verify(&other_key).unwrap().valid);
        let mut garbage = m;
        garbage["signature"]["value"] = json!("zz");
        assert!(!verify(&garbage).unwrap().valid);
    }

    #[test]
    fn a_bad_key_file_is_named_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, "not hex").unwrap();
        let err = SigningKey::read(&path).unwrap_err().to_string();
        assert!(
            err.contains("64 hex digits") && err.contains("tessera keygen"),
            "{err}"
        );
    }
}
