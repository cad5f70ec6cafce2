//! Secrets at rest: job secret values are sealed with ChaCha20-Poly1305 before
//! a job is stored, and opened only to build the `RunJobCommand` for its worker.
//!
//! A sealed value reads `hodei-sealed:v1:<base64(nonce ‖ ciphertext)>`; the
//! secret's name is the associated data, so sealed values cannot be swapped
//! between names.

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use rand::RngCore;

const PREFIX: &str = "hodei-sealed:v1:";
const NONCE_LEN: usize = 12;

/// Why a secret could not be sealed or opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SecretsError {
    /// The key is not 32 bytes of base64 or hex.
    #[error("the secrets key must be 32 bytes, base64 or hex encoded")]
    BadKey,
    /// A stored value is not sealed, or not with this key.
    #[error("secret {0:?} cannot be opened: not sealed, corrupted, or sealed with another key")]
    CannotOpen(String),
}

/// Seals and opens secret values with one 256-bit key.
#[derive(Clone)]
pub struct SecretSealer {
    cipher: ChaCha20Poly1305,
}

impl fmt::Debug for SecretSealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretSealer(***)")
    }
}

impl SecretSealer {
    /// A sealer from a 32-byte key.
    #[must_use]
    pub fn new(key: [u8; 32]) -> Self {
        Self {
            cipher: ChaCha20Poly1305::new(Key::from_slice(&key)),
        }
    }

    /// A sealer with a random key that lives as long as this process (fine
    /// for the in-memory store, which is lost at exit too).
    #[must_use]
    pub fn ephemeral() -> Self {
        let mut key = [0u8; 32];
        rand::rng().fill_bytes(&mut key);
        Self::new(key)
    }

    /// A sealer from a key given as base64 or hex text (e.g. `HODEI_SECRETS_KEY`).
    pub fn from_encoded(text: &str) -> Result<Self, SecretsError> {
        let t = text.trim();
        let bytes = hex::decode(t)
            .ok()
            .filter(|b| b.len() == 32)
            .or_else(|| STANDARD.decode(t).ok())
            .ok_or(SecretsError::BadKey)?;
        let key: [u8; 32] = bytes.try_into().map_err(|_| SecretsError::BadKey)?;
        Ok(Self::new(key))
    }

    /// Whether a stored value is sealed.
    #[must_use]
    pub fn is_sealed(value: &str) -> bool {
        value.starts_with(PREFIX)
    }

    fn seal_one(&self, name: &str, value: &str) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        // Encryption with a valid key and nonce cannot fail for in-memory data.
        let ct = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: value.as_bytes(),
                    aad: name.as_bytes(),
                },
            )
            .unwrap_or_default();
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ct);
        format!("{PREFIX}{}", STANDARD.encode(out))
    }

    fn open_one(&self, name: &str, sealed: &str) -> Result<String, SecretsError> {
        let err = || SecretsError::CannotOpen(name.to_owned());
        let raw = STANDARD
            .decode(sealed.strip_prefix(PREFIX).ok_or_else(err)?)
            .map_err(|_| err())?;
        if raw.len() < NONCE_LEN {
            return Err(err());
        }
        let (nonce, ct) = raw.split_at(NONCE_LEN);
        let pt = self
            .cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ct,
                    aad: name.as_bytes(),
                },
            )
            .map_err(|_| err())?;
        String::from_utf8(pt).map_err(|_| err())
    }

    /// Seals every value (already sealed values are kept).
    #[must_use]
    pub fn seal(&self, secrets: &BTreeMap<String, String>) -> BTreeMap<String, String> {
        secrets
            .iter()
            .map(|(k, v)| {
                let sealed = if Self::is_sealed(v) {
                    v.clone()
                } else {
                    self.seal_one(k, v)
                };
                (k.clone(), sealed)
            })
            .collect()
    }

    /// Opens every value.
    pub fn open(
        &self,
        secrets: &BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, String>, SecretsError> {
        secrets
            .iter()
            .map(|(k, v)| Ok((k.clone(), self.open_one(k, v)?)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(k: &str, v: &str) -> BTreeMap<String, String> {
        [(k.to_owned(), v.to_owned())].into()
    }

    #[test]
    fn seal_then_open_round_trips_and_hides_the_value() {
        let s = SecretSealer::ephemeral();
        let sealed = s.seal(&one("TOKEN", "canary-secret-value"));
        let v = &sealed["TOKEN"];
        assert!(SecretSealer::is_sealed(v));
        assert!(!v.contains("canary"));
        assert_eq!(
            s.open(&sealed).unwrap(),
            one("TOKEN", "canary-secret-value")
        );
        // Sealing twice does not double-seal.
        assert_eq!(s.seal(&sealed), sealed);
    }

    #[test]
    fn another_key_or_another_name_cannot_open() {
        let s = SecretSealer::ephemeral();
        let sealed = s.seal(&one("A", "value-123456"));
        assert!(SecretSealer::ephemeral().open(&sealed).is_err());
        let swapped = one("B", &sealed["A"]);
        assert!(s.open(&swapped).is_err());
        assert!(s.open(&one("A", "plain")).is_err());
    }

    #[test]
    fn keys_parse_from_hex_and_base64() {
        let key = [7u8; 32];
        let a = SecretSealer::from_encoded(&hex::encode(key)).unwrap();
        let b = SecretSealer::from_encoded(&STANDARD.encode(key)).unwrap();
        let sealed = a.seal(&one("K", "value-abcdef"));
        assert_eq!(b.open(&sealed).unwrap()["K"], "value-abcdef");
        assert_eq!(
            SecretSealer::from_encoded("short").unwrap_err(),
            SecretsError::BadKey
        );
    }
}
