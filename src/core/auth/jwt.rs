//! Access tokens: EdDSA (Ed25519) JWTs with `kid` (CONTRACT §2). Signing keys live in the
//! `signing_keys` table, private halves encrypted with the data key, so every node signs and
//! verifies with the same keys; `GET /.well-known/jwks.json` publishes the public halves.

use std::{
    collections::HashMap,
    sync::RwLock,
    time::{Duration, Instant},
};

use anyhow::{Context, anyhow};
use aws_lc_rs::{
    rand::SystemRandom,
    signature::{Ed25519KeyPair, KeyPair},
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use diesel::prelude::*;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use prometheus::IntCounter;
use serde::{Deserialize, Serialize};

use crate::core::{
    crypto::DataKey,
    db::{Db, Pool, schema::signing_keys},
    error::{ApiError, ApiResult},
    types::now,
};

/// Access tokens last 15 minutes (CONTRACT §2).
pub const ACCESS_TTL_SECS: i64 = 15 * 60;
pub const ISSUER: &str = "confab";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// The user id, as a string (JWT convention).
    pub sub: String,
    /// The session the token belongs to; revoking it stops the token (CONTRACT §2).
    pub sid: String,
    /// Company id.
    pub cid: i64,
    pub role: String,
    pub iat: i64,
    pub exp: i64,
    pub iss: String,
}

/// Clock skew allowed on `exp`, `nbf` and `iat`, in seconds.
const LEEWAY_SECS: u64 = 5;

/// At most one re-read of the key table per second for tokens naming an unknown key.
pub const KEY_RELOAD_INTERVAL: Duration = Duration::from_secs(1);
/// How long a key id that a fresh re-read did not find is refused without another read.
pub const UNKNOWN_KID_TTL: Duration = Duration::from_secs(5);
/// Longer key ids are refused unread (ours are 16 characters); bounds the negative cache.
const MAX_KID_LEN: usize = 64;
/// How long a verified token's claims are reused without checking its signature again, and
/// how many tokens are remembered (see [`Keys::verify`]).
const VERIFIED_TTL: Duration = Duration::from_secs(60);
const VERIFIED_MAX: u64 = 10_000;

pub struct Keys {
    signing: (String, EncodingKey),
    verifying: RwLock<HashMap<String, DecodingKey>>,
    public: RwLock<Vec<(String, String)>>,
    /// Key ids a re-read of the table did not find (issue 17: a flood of tokens with made-up
    /// `kid`s must not become a flood of database reads).
    unknown: moka::sync::Cache<String, ()>,
    /// Tokens this node verified, by their exact text, with their claims: the Ed25519
    /// signature check is most of what authenticating a request costs (about 45 µs, a tenth
    /// of an agent's `POST /message`, bench/README.md), and a client sends the same token
    /// for its whole lifetime. Only a token that passed every check gets in; its expiry is
    /// checked again at each use, and a re-read of the keys empties it.
    verified: moka::sync::Cache<String, Claims>,
    /// Serialises re-reads (concurrent misses share one) and remembers when the last one ran.
    last_reload: tokio::sync::Mutex<Option<Instant>>,
    /// Re-reads of the key table for unknown key ids (`confab_signing_key_reloads_total`).
    pub reloads: IntCounter,
}

impl Keys {
    /// Loads the active keys, creating the first one when there is none.
    pub fn load_or_create(db: &Pool, data_key: &DataKey) -> anyhow::Result<Self> {
        let rows = db.write_blocking(|c| {
            let rows = load_rows(c)?;
            if !rows.is_empty() {
                return Ok(rows);
            }
            insert_new_key(c, data_key).map_err(ApiError::Internal)?;
            load_rows(c)
        })?;
        let (kid, private, _) = rows.last().ok_or_else(|| anyhow!("no signing key"))?;
        let der = data_key.decrypt(private).context("decrypting the signing key")?;
        let keys = Self {
            signing: (kid.clone(), EncodingKey::from_ed_der(&der)),
            verifying: RwLock::new(HashMap::new()),
            public: RwLock::new(Vec::new()),
            unknown: moka::sync::Cache::builder().max_capacity(10_000).time_to_live(UNKNOWN_KID_TTL).build(),
            verified: moka::sync::Cache::builder().max_capacity(VERIFIED_MAX).time_to_live(VERIFIED_TTL).build(),
            last_reload: tokio::sync::Mutex::new(None),
            reloads: IntCounter::new(
                "signing_key_reloads_total",
                "Re-reads of the signing key table for tokens naming a key this node did not know",
            )?,
        };
        keys.install(&rows)?;
        Ok(keys)
    }

    fn install(&self, rows: &[(String, String, String)]) -> anyhow::Result<()> {
        let mut verifying = HashMap::new();
        let mut public = Vec::new();
        for (kid, _, x) in rows {
            let raw = URL_SAFE_NO_PAD.decode(x).context("public key")?;
            verifying.insert(kid.clone(), DecodingKey::from_ed_der(&raw));
            public.push((kid.clone(), x.clone()));
        }
        *self.verifying.write().unwrap_or_else(|p| p.into_inner()) = verifying;
        *self.public.write().unwrap_or_else(|p| p.into_inner()) = public;
        self.verified.invalidate_all();
        Ok(())
    }

    /// Re-reads the key table (a token signed with a key another node just created).
    pub async fn reload(&self, db: &Pool) -> ApiResult<()> {
        let rows = db.run(load_rows).await?;
        self.install(&rows).map_err(ApiError::Internal)
    }

    /// [`Keys::verify`], re-reading the key table when the token names a key this node does
    /// not know: a key another node created is accepted once this node re-reads, which it does
    /// at most once per [`KEY_RELOAD_INTERVAL`], so within that interval of the key's first
    /// use here. A key id that a re-read made for this very request did not find is refused
    /// without reading for [`UNKNOWN_KID_TTL`]; a key id that arrives while re-reads are
    /// throttled is refused without reading. Made-up key ids therefore cost at most one read
    /// per interval, however many arrive.
    pub async fn verify_or_reload(&self, db: &Pool, token: &str) -> ApiResult<Claims> {
        if let Some(claims) = self.verify(token)? {
            return Ok(claims);
        }
        let refused = ApiError::Unauthorized("invalid_token");
        let kid = jsonwebtoken::decode_header(token)
            .ok()
            .and_then(|h| h.kid)
            .ok_or(ApiError::Unauthorized("invalid_token"))?;
        if kid.len() > MAX_KID_LEN || self.unknown.contains_key(&kid) {
            return Err(refused);
        }
        let arrived = Instant::now();
        {
            let mut last = self.last_reload.lock().await;
            // A re-read that started after this request arrived has already looked.
            let fresh = last.is_some_and(|t| t >= arrived);
            let throttled = last.is_some_and(|t| t.elapsed() < KEY_RELOAD_INTERVAL);
            if !fresh && !throttled {
                let started = Instant::now();
                self.reloads.inc();
                self.reload(db).await?;
                *last = Some(started);
            }
            let looked = last.is_some_and(|t| t >= arrived);
            if let Some(claims) = self.verify(token)? {
                return Ok(claims);
            }
            if looked {
                self.unknown.insert(kid, ());
            }
        }
        Err(refused)
    }

    pub fn sign(&self, user_id: i64, company_id: i64, role: &str, session_id: &str) -> ApiResult<(String, i64)> {
        self.sign_for(user_id, company_id, role, session_id, ACCESS_TTL_SECS)
    }

    /// [`Keys::sign`] with a lifetime of `ttl_secs` (an auth client's `accessTokenExpiration`,
    /// at most [`ACCESS_TTL_SECS`]).
    pub fn sign_for(
        &self,
        user_id: i64,
        company_id: i64,
        role: &str,
        session_id: &str,
        ttl_secs: i64,
    ) -> ApiResult<(String, i64)> {
        let iat = now().and_utc().timestamp();
        let exp = iat + ttl_secs.clamp(1, ACCESS_TTL_SECS);
        let claims = Claims {
            sub: user_id.to_string(),
            sid: session_id.to_owned(),
            cid: company_id,
            role: role.to_owned(),
            iat,
            exp,
            iss: ISSUER.to_owned(),
        };
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.signing.0.clone());
        let token = jsonwebtoken::encode(&header, &claims, &self.signing.1).context("signing a token")?;
        Ok((token, exp * 1000))
    }

    /// `Ok(None)` when the token names a key this node does not know yet. A token verified
    /// here in the last [`VERIFIED_TTL`] is answered from memory, its expiry checked again.
    pub fn verify(&self, token: &str) -> Result<Option<Claims>, ApiError> {
        self.verify_at(token, now().and_utc().timestamp())
    }

    /// [`Keys::verify`] at the Unix time `at` (for the reused claims' expiry).
    fn verify_at(&self, token: &str, at: i64) -> Result<Option<Claims>, ApiError> {
        if let Some(claims) = self.verified.get(token) {
            // The same rule as jsonwebtoken's: expired once `exp` is more than the leeway ago.
            if claims.exp < at - LEEWAY_SECS as i64 {
                return Err(ApiError::Unauthorized("token_expired"));
            }
            return Ok(Some(claims));
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| ApiError::Unauthorized("invalid_token"))?;
        if header.alg != Algorithm::EdDSA {
            return Err(ApiError::Unauthorized("invalid_token"));
        }
        let kid = header.kid.ok_or(ApiError::Unauthorized("invalid_token"))?;
        let keys = self.verifying.read().unwrap_or_else(|p| p.into_inner());
        let Some(key) = keys.get(&kid) else { return Ok(None) };
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "iat", "iss", "sub"]);
        validation.leeway = LEEWAY_SECS;
        // A token that is not valid yet (`nbf`), or says it was issued in the future, is refused:
        // this server never mints one, so it is forged or from a clock gone wrong (issue 24).
        validation.validate_nbf = true;
        match jsonwebtoken::decode::<Claims>(token, key, &validation) {
            Ok(data) if data.claims.iat > now().and_utc().timestamp() + LEEWAY_SECS as i64 => {
                Err(ApiError::Unauthorized("invalid_token"))
            }
            Ok(data) => {
                self.verified.insert(token.to_owned(), data.claims.clone());
                Ok(Some(data.claims))
            }
            Err(e) if matches!(e.kind(), jsonwebtoken::errors::ErrorKind::ExpiredSignature) => {
                Err(ApiError::Unauthorized("token_expired"))
            }
            Err(_) => Err(ApiError::Unauthorized("invalid_token")),
        }
    }

    /// RFC 7517 key set of the active and recently retired keys.
    pub fn jwks(&self) -> serde_json::Value {
        let public = self.public.read().unwrap_or_else(|p| p.into_inner());
        let keys: Vec<_> = public
            .iter()
            .map(|(kid, x)| {
                serde_json::json!({"kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "use": "sig", "alg": "EdDSA"})
            })
            .collect();
        serde_json::json!({ "keys": keys })
    }
}

/// (kid, encrypted private PKCS#8, base64url public key), oldest first.
fn load_rows(c: &mut Db) -> ApiResult<Vec<(String, String, String)>> {
    Ok(signing_keys::table
        .filter(signing_keys::retired_at.is_null())
        .order(signing_keys::created_at)
        .select((signing_keys::kid, signing_keys::private_key, signing_keys::public_key))
        .load(c)?)
}

/// Adds a signing key. Nodes that start afterwards sign with it; running nodes verify its
/// tokens once they re-read the table ([`Keys::verify_or_reload`]).
pub fn insert_new_key(c: &mut Db, data_key: &DataKey) -> anyhow::Result<()> {
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).map_err(|_| anyhow!("generating a key"))?;
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).map_err(|_| anyhow!("reading the new key"))?;
    let public = URL_SAFE_NO_PAD.encode(pair.public_key().as_ref());
    let kid = crate::core::crypto::random_hex_id()[..16].to_owned();
    diesel::insert_into(signing_keys::table)
        .values((
            signing_keys::kid.eq(&kid),
            signing_keys::algorithm.eq("EdDSA"),
            signing_keys::private_key.eq(data_key.encrypt(pkcs8.as_ref())),
            signing_keys::public_key.eq(public),
            signing_keys::created_at.eq(now()),
        ))
        .execute(c)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> (tempfile::TempDir, Keys) {
        let dir = tempfile::tempdir().unwrap();
        let db = Pool::connect(&format!("sqlite://{}/keys.db", dir.path().display()), 1).unwrap();
        db.migrate().unwrap();
        let keys = Keys::load_or_create(&db, &DataKey::from_bytes([7; 32])).unwrap();
        (dir, keys)
    }

    fn refused(r: Result<Option<Claims>, ApiError>) -> &'static str {
        match r {
            Err(ApiError::Unauthorized(code)) => code,
            other => panic!("expected a 401, got {other:?}"),
        }
    }

    #[test]
    fn a_reused_token_still_expires_and_a_changed_one_is_checked_again() {
        let (_dir, keys) = keys();
        let (token, _) = keys.sign(1, 2, "agent", "s1").unwrap();
        let claims = keys.verify(&token).unwrap().expect("a known key");
        assert_eq!((claims.sub.as_str(), claims.cid, claims.sid.as_str()), ("1", 2, "s1"));
        assert!(keys.verified.contains_key(&token), "a verified token is remembered");
        // From memory: within the leeway after `exp` still valid, past it expired.
        let exp = claims.exp;
        assert!(keys.verify_at(&token, exp + LEEWAY_SECS as i64).unwrap().is_some());
        assert_eq!(refused(keys.verify_at(&token, exp + LEEWAY_SECS as i64 + 1)), "token_expired");
        // Another signature on the same header and claims is not the remembered token.
        let (head, sig) = token.rsplit_once('.').unwrap();
        let flipped = if sig.starts_with('A') { "B" } else { "A" };
        let forged = format!("{head}.{flipped}{}", &sig[1..]);
        assert_eq!(refused(keys.verify(&forged)), "invalid_token");
        assert!(!keys.verified.contains_key(&forged), "a refused token is not remembered");
    }

    #[test]
    fn a_re_read_of_the_keys_forgets_the_verified_tokens() {
        let (_dir, keys) = keys();
        let (token, _) = keys.sign(1, 2, "agent", "s1").unwrap();
        keys.verify(&token).unwrap().expect("a known key");
        keys.install(&[]).unwrap();
        assert_eq!(keys.verify(&token).unwrap().map(|c| c.sub), None, "its key is gone: unknown until a re-read");
    }
}
