//! The data key and the small primitives built on it: secrets encrypted at rest
//! (AES-256-GCM), opaque tokens hashed at rest (SHA-256), random tokens and codes.

use std::path::Path;

use anyhow::{Context, anyhow, bail};
use aws_lc_rs::{
    aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey},
    rand::{SecureRandom, SystemRandom},
};
use base64::{Engine, engine::general_purpose::STANDARD, engine::general_purpose::URL_SAFE_NO_PAD};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

/// The key that encrypts secrets at rest (CONTRACT §1 `CONFAB_SECRET_KEY`).
pub struct DataKey {
    key: LessSafeKey,
    raw: [u8; 32],
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey(..)")
    }
}

impl DataKey {
    /// From the configured value, or from `<data_dir>/secret.key`, generated (mode 0600) on
    /// first start. Several nodes must share one value: set `CONFAB_SECRET_KEY` on each.
    pub fn load(configured: Option<&SecretString>, data_dir: &Path) -> anyhow::Result<Self> {
        let encoded = match configured {
            Some(s) => s.expose_secret().trim().to_owned(),
            None => {
                let path = data_dir.join("secret.key");
                match std::fs::read_to_string(&path) {
                    Ok(s) => s.trim().to_owned(),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        std::fs::create_dir_all(data_dir)?;
                        let encoded = STANDARD.encode(random_bytes::<32>());
                        write_private(&path, &encoded)?;
                        encoded
                    }
                    Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
                }
            }
        };
        let bytes = STANDARD.decode(&encoded).context("CONFAB_SECRET_KEY must be base64")?;
        let raw: [u8; 32] =
            bytes.try_into().map_err(|_| anyhow!("CONFAB_SECRET_KEY must be 32 bytes (base64 of 32 random bytes)"))?;
        Ok(Self::from_bytes(raw))
    }

    pub fn from_bytes(raw: [u8; 32]) -> Self {
        let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &raw).expect("32-byte AES key"));
        Self { key, raw }
    }

    /// `v1.` + base64(nonce ‖ ciphertext ‖ tag).
    pub fn encrypt(&self, plaintext: &[u8]) -> String {
        let nonce_bytes = random_bytes::<NONCE_LEN>();
        let mut buf = plaintext.to_vec();
        self.key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce_bytes), Aad::empty(), &mut buf)
            .expect("AES-GCM seal cannot fail for in-memory buffers");
        let mut out = nonce_bytes.to_vec();
        out.extend_from_slice(&buf);
        format!("v1.{}", STANDARD.encode(out))
    }

    pub fn decrypt(&self, sealed: &str) -> anyhow::Result<Vec<u8>> {
        let Some(b64) = sealed.strip_prefix("v1.") else { bail!("unknown secret format") };
        let bytes = STANDARD.decode(b64)?;
        if bytes.len() < NONCE_LEN {
            bail!("sealed secret too short");
        }
        let (nonce, rest) = bytes.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| anyhow!("bad nonce"))?;
        let mut buf = rest.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::empty(), &mut buf)
            .map_err(|_| anyhow!("secret does not decrypt with this CONFAB_SECRET_KEY"))?;
        Ok(plain.to_vec())
    }

    /// HMAC-SHA256 with the data key (signed media links and similar short-lived proofs).
    pub fn sign(&self, message: &[u8]) -> String {
        use hmac::{Mac, SimpleHmac};
        let mut mac = <SimpleHmac<Sha256> as Mac>::new_from_slice(&self.raw).expect("any key length");
        mac.update(message);
        hex::encode(mac.finalize().into_bytes())
    }
}

fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(path).with_context(|| format!("creating {}", path.display()))?;
    f.write_all(contents.as_bytes())?;
    f.sync_all()?;
    Ok(())
}

pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    SystemRandom::new().fill(&mut buf).expect("system randomness");
    buf
}

/// An opaque 256-bit token, URL-safe.
pub fn random_token() -> String {
    URL_SAFE_NO_PAD.encode(random_bytes::<32>())
}

/// 32 lowercase hex characters of randomness (session ids and similar).
pub fn random_hex_id() -> String {
    hex::encode(random_bytes::<16>())
}

/// A password a person can type: 20 characters from an unambiguous alphabet.
pub fn random_password() -> String {
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    random_bytes::<20>().iter().map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char).collect()
}

/// Tokens and codes are stored as their SHA-256 (they are random, so no slow hash is needed).
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Constant-time equality for secrets (webhook signatures, tokens).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_secrets_round_trip_and_differ_each_time() {
        let key = DataKey::from_bytes([7; 32]);
        let a = key.encrypt(b"token");
        let b = key.encrypt(b"token");
        assert_ne!(a, b);
        assert_eq!(key.decrypt(&a).unwrap(), b"token");
        assert!(DataKey::from_bytes([8; 32]).decrypt(&a).is_err());
    }

    #[test]
    fn generated_key_is_persisted_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let k1 = DataKey::load(None, dir.path()).unwrap();
        let k2 = DataKey::load(None, dir.path()).unwrap();
        assert_eq!(k2.decrypt(&k1.encrypt(b"x")).unwrap(), b"x");
    }
}
