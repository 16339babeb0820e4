//! Encryption of sensitive settings at rest: AES-256-GCM with a random 12-byte nonce, stored as
//! `base64(nonce ‖ ciphertext ‖ tag)`, byte-compatible with the original app.

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rand::RngCore;

/// Why `TERARCHITECT_SECRET_KEY` was not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The variable is unset or empty.
    #[error("TERARCHITECT_SECRET_KEY is not set")]
    Missing,
    /// The variable is not 64 hexadecimal characters.
    #[error("TERARCHITECT_SECRET_KEY must be a 64-character hex string")]
    Malformed,
}

/// The cipher for sensitive settings. Its Debug output never shows the key.
#[derive(Clone)]
pub struct SecretBox {
    cipher: Aes256Gcm,
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBox(<key redacted>)")
    }
}

impl SecretBox {
    /// Parses the key as the original does: trims whitespace and one pair of matching quotes,
    /// then requires exactly 64 hex characters.
    pub fn from_env_value(raw: Option<&str>) -> Result<Self, KeyError> {
        let trimmed = raw.map(str::trim).unwrap_or("");
        if trimmed.is_empty() {
            return Err(KeyError::Missing);
        }
        let unquoted = strip_matching_quotes(trimmed);
        if unquoted.len() != 64 {
            return Err(KeyError::Malformed);
        }
        let bytes = hex::decode(unquoted).map_err(|_| KeyError::Malformed)?;
        let cipher = Aes256Gcm::new_from_slice(&bytes).map_err(|_| KeyError::Malformed)?;
        Ok(Self { cipher })
    }

    /// Encrypts `plaintext` with a fresh random nonce.
    pub fn encrypt(&self, plaintext: &str) -> String {
        let mut nonce = [0u8; 12];
        rand::rng().fill_bytes(&mut nonce);
        let ciphertext = self
            .cipher
            .encrypt(Nonce::from_slice(&nonce), plaintext.as_bytes())
            .expect("AES-GCM encryption of an in-memory buffer cannot fail");
        let mut blob = nonce.to_vec();
        blob.extend_from_slice(&ciphertext);
        STANDARD.encode(blob)
    }

    /// Decrypts a stored value; None for anything that does not decrypt with this key.
    pub fn decrypt(&self, stored: &str) -> Option<String> {
        let blob = STANDARD.decode(stored.trim()).ok()?;
        if blob.len() < 13 {
            return None;
        }
        let (nonce, ciphertext) = blob.split_at(12);
        let plain = self
            .cipher
            .decrypt(Nonce::from_slice(nonce), ciphertext)
            .ok()?;
        String::from_utf8(plain).ok()
    }
}

fn strip_matching_quotes(s: &str) -> &str {
    for q in ['"', '\''] {
        if s.len() >= 2 && s.starts_with(q) && s.ends_with(q) {
            return &s[1..s.len() - 1];
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

    #[test]
    fn round_trip_and_fresh_nonce() {
        let b = SecretBox::from_env_value(Some(KEY)).unwrap();
        let a1 = b.encrypt("ghp_secret");
        let a2 = b.encrypt("ghp_secret");
        assert_ne!(a1, a2, "every encryption uses a new nonce");
        assert!(!a1.contains("ghp_secret"));
        assert_eq!(b.decrypt(&a1).as_deref(), Some("ghp_secret"));
        assert_eq!(b.decrypt(&a2).as_deref(), Some("ghp_secret"));
    }

    #[test]
    fn key_parsing_follows_the_original() {
        assert!(SecretBox::from_env_value(Some(&format!("  \"{KEY}\"  "))).is_ok());
        assert!(SecretBox::from_env_value(Some(&format!("'{KEY}'"))).is_ok());
        assert_eq!(
            SecretBox::from_env_value(None).unwrap_err(),
            KeyError::Missing
        );
        assert_eq!(
            SecretBox::from_env_value(Some("  ")).unwrap_err(),
            KeyError::Missing
        );
        assert_eq!(
            SecretBox::from_env_value(Some("abcd")).unwrap_err(),
            KeyError::Malformed
        );
        let not_hex = "z".repeat(64);
        assert_eq!(
            SecretBox::from_env_value(Some(&not_hex)).unwrap_err(),
            KeyError::Malformed
        );
    }

    #[test]
    fn wrong_key_or_garbage_decrypts_to_none() {
        let b = SecretBox::from_env_value(Some(KEY)).unwrap();
        let other = SecretBox::from_env_value(Some(&"1".repeat(64))).unwrap();
        let sealed = b.encrypt("value");
        assert_eq!(other.decrypt(&sealed), None);
        assert_eq!(b.decrypt("not base64!"), None);
        assert_eq!(
            b.decrypt(&STANDARD.encode([0u8; 12])),
            None,
            "shorter than 13 bytes"
        );
        assert_eq!(b.decrypt("plain text"), None);
    }
}
