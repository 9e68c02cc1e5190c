//! Sessions and refresh tokens (SCHEMA "Sessions and credentials"). A refresh token is opaque,
//! stored as its SHA-256, and single use: claiming it is one `UPDATE … WHERE used_at IS NULL`,
//! so two concurrent refreshes cannot both win, and presenting a used token again revokes the
//! whole session (reuse detection, CONTRACT §5).
//!
//! This module owns the `sessions` and `refresh_tokens` tables (issue 19): API sessions, bot
//! sessions and the storefront's cookie sessions (CONTRACT §9) are all created, rolled, listed
//! and revoked here. Two reads join another table: the session guard ([`lookup`]) reads `users`
//! directly because core imports no feature (`users::store` owns every other query on it), and
//! the storefront's one-statement session and user read stays with the storefront
//! (`fynd::store::live`). An auth client's token lifetimes come from the caller of [`rotate`]
//! (the auth feature owns the clients).

use std::time::Duration;

use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::core::{
    crypto::{random_hex_id, random_token, token_hash},
    db::{
        Db, Pool,
        schema::{refresh_tokens, sessions, users},
    },
    error::{ApiError, ApiResult},
    types::{Role, now},
};

/// API sessions live 30 days from their last refresh.
pub const SESSION_TTL: chrono::Duration = chrono::Duration::days(30);
/// How long a node may keep answering from its cache after a session is revoked elsewhere
/// (CONTRACT §2: "within 2 seconds").
pub const CACHE_TTL: Duration = Duration::from_secs(2);

/// Who is calling: resolved once per request by the middleware (STYLE "Auth and tenancy").
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Principal {
    pub user_id: i64,
    pub company_id: i64,
    pub role: Role,
    pub session_id: String,
}

pub struct NewSession<'a> {
    pub user_id: i64,
    pub company_id: i64,
    pub kind: &'a str,
    pub client_id: Option<&'a str>,
    pub application_id: Option<i64>,
    pub ip: &'a str,
    pub user_agent: &'a str,
    pub ttl: chrono::Duration,
}

/// Creates a session and its first refresh token; returns (session id, refresh token).
pub fn create(c: &mut Db, s: &NewSession<'_>) -> ApiResult<(String, String)> {
    let id = random_hex_id();
    let t = now();
    diesel::insert_into(sessions::table)
        .values((
            sessions::id.eq(&id),
            sessions::user_id.eq(s.user_id),
            sessions::company_id.eq(s.company_id),
            sessions::kind.eq(s.kind),
            sessions::client_id.eq(s.client_id),
            sessions::application_id.eq(s.application_id),
            sessions::ip.eq(s.ip),
            sessions::user_agent.eq(truncate(s.user_agent, 512)),
            sessions::created_at.eq(t),
            sessions::last_seen_at.eq(t),
            sessions::expires_at.eq(t + s.ttl),
        ))
        .execute(c)?;
    let token = insert_refresh(c, &id, None, t + s.ttl)?;
    Ok((id, token))
}

/// How an agent bot's API token starts (issue 23): `cfbot_` and 32 random bytes, base64url.
pub const BOT_TOKEN_PREFIX: &str = "cfbot_";

/// The session a bot token opens: its id is derived from the token (`bot:` and the token's
/// SHA-256), so the token itself is never stored and a request resolves it with the same cached
/// session lookup as an access token. Bot sessions do not expire; rotating the token or
/// deleting the bot revokes them.
pub fn bot_session_id(token: &str) -> String {
    format!("bot:{}", token_hash(token))
}

/// Opens a session for a bot user and returns its new token (shown once).
pub fn create_bot(c: &mut Db, user_id: i64, company_id: i64) -> ApiResult<String> {
    let token = format!("{BOT_TOKEN_PREFIX}{}", random_token());
    let t = now();
    diesel::insert_into(sessions::table)
        .values((
            sessions::id.eq(bot_session_id(&token)),
            sessions::user_id.eq(user_id),
            sessions::company_id.eq(company_id),
            sessions::kind.eq("bot"),
            sessions::created_at.eq(t),
            sessions::last_seen_at.eq(t),
            sessions::expires_at.eq(t + chrono::Duration::days(365 * 100)),
        ))
        .execute(c)?;
    Ok(token)
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

fn insert_refresh(c: &mut Db, session_id: &str, parent: Option<&str>, expires_at: NaiveDateTime) -> ApiResult<String> {
    let token = random_token();
    diesel::insert_into(refresh_tokens::table)
        .values((
            refresh_tokens::token_hash.eq(token_hash(&token)),
            refresh_tokens::session_id.eq(session_id),
            refresh_tokens::parent_hash.eq(parent),
            refresh_tokens::created_at.eq(now()),
            refresh_tokens::expires_at.eq(expires_at),
        ))
        .execute(c)?;
    Ok(token)
}

/// What a refresh token was good for.
pub enum Refreshed {
    /// A new refresh token for this live session.
    /// `access_ttl`: seconds the new access token lives (an auth client's own lifetime for
    /// sessions opened through the ARC code flow).
    Rotated { principal: Principal, refresh_token: String, access_ttl: i64 },
    /// The token had already been used: the session is now revoked.
    Reused { principal: Principal },
}

/// Claims a refresh token and rotates it. Errors with 401 `invalid_token` when the token is
/// unknown, expired, or its session is revoked or its user inactive.
///
/// A session opened through an auth client lives by that client's lifetimes:
/// `client_lifetimes` gives them for a client id, (refresh token, access token) in seconds, or
/// `None` for an unknown client (the auth feature owns the clients; core imports no feature).
pub fn rotate(
    c: &mut Db,
    token: &str,
    client_lifetimes: impl FnOnce(&mut Db, &str) -> ApiResult<Option<(i64, i64)>>,
) -> ApiResult<Refreshed> {
    let hash = token_hash(token);
    let t = now();
    let claimed = diesel::update(
        refresh_tokens::table
            .filter(refresh_tokens::token_hash.eq(&hash))
            .filter(refresh_tokens::used_at.is_null())
            .filter(refresh_tokens::expires_at.gt(t)),
    )
    .set(refresh_tokens::used_at.eq(t))
    .execute(c)?;
    let session_id: Option<String> =
        refresh_tokens::table.find(&hash).select(refresh_tokens::session_id).first(c).optional()?;
    let Some(session_id) = session_id else { return Err(ApiError::Unauthorized("invalid_token")) };
    let principal = lookup(c, &session_id)?.ok_or(ApiError::Unauthorized("invalid_token"))?;
    if claimed == 0 {
        let used: Option<NaiveDateTime> = refresh_tokens::table.find(&hash).select(refresh_tokens::used_at).first(c)?;
        if used.is_some() {
            revoke(c, &session_id, "refresh_token_reuse")?;
            return Ok(Refreshed::Reused { principal });
        }
        return Err(ApiError::Unauthorized("invalid_token"));
    }
    // Sessions opened through an auth client live by that client's lifetimes.
    let client: Option<String> = sessions::table.find(&session_id).select(sessions::client_id).first(c)?;
    let lifetimes = match client {
        Some(client_id) => client_lifetimes(c, &client_id)?,
        None => None,
    };
    let (session_ttl, access_ttl) = lifetimes
        .map(|(refresh, access)| (chrono::Duration::seconds(refresh), access))
        .unwrap_or((SESSION_TTL, super::jwt::ACCESS_TTL_SECS));
    let expires = t + session_ttl;
    diesel::update(sessions::table.find(&session_id))
        .set((sessions::last_seen_at.eq(t), sessions::expires_at.eq(expires)))
        .execute(c)?;
    let refresh_token = insert_refresh(c, &session_id, Some(&hash), expires)?;
    Ok(Refreshed::Rotated { principal, refresh_token, access_ttl })
}

/// The principal of a live session (not revoked, not expired, user active), else `None`.
pub fn lookup(c: &mut Db, session_id: &str) -> ApiResult<Option<Principal>> {
    let row: Option<(i64, i64, String, String, Option<NaiveDateTime>)> = sessions::table
        .inner_join(users::table)
        .filter(sessions::id.eq(session_id))
        .filter(sessions::revoked_at.is_null())
        .filter(sessions::expires_at.gt(now()))
        .select((users::id, users::company_id, users::role, users::status, users::deleted_at))
        .first(c)
        .optional()?;
    Ok(row.and_then(|(user_id, company_id, role, status, deleted_at)| {
        (status == "active" && deleted_at.is_none()).then(|| Principal {
            user_id,
            company_id,
            role: Role::parse(&role).unwrap_or(Role::Customer),
            session_id: session_id.to_owned(),
        })
    }))
}

pub fn revoke(c: &mut Db, session_id: &str, reason: &str) -> ApiResult<()> {
    diesel::update(sessions::table.find(session_id).filter(sessions::revoked_at.is_null()))
        .set((sessions::revoked_at.eq(now()), sessions::revoke_reason.eq(reason)))
        .execute(c)?;
    Ok(())
}

/// Revokes every live session of a user (password change or reset, deactivation, block),
/// except `keep` when given. Returns the revoked session ids.
pub fn revoke_all(c: &mut Db, user_id: i64, keep: Option<&str>, reason: &str) -> ApiResult<Vec<String>> {
    let ids: Vec<String> = sessions::table
        .filter(sessions::user_id.eq(user_id))
        .filter(sessions::revoked_at.is_null())
        .filter(sessions::id.ne(keep.unwrap_or("")))
        .select(sessions::id)
        .load(c)?;
    revoke_ids(c, ids, reason)
}

fn revoke_ids(c: &mut Db, ids: Vec<String>, reason: &str) -> ApiResult<Vec<String>> {
    diesel::update(sessions::table.filter(sessions::id.eq_any(&ids)))
        .set((sessions::revoked_at.eq(now()), sessions::revoke_reason.eq(reason)))
        .execute(c)?;
    Ok(ids)
}

/// Revokes every live session opened through the auth client `client_id` (the client was
/// deleted). Returns the revoked session ids.
pub fn revoke_client(c: &mut Db, client_id: &str, reason: &str) -> ApiResult<Vec<String>> {
    let ids: Vec<String> = sessions::table
        .filter(sessions::client_id.eq(client_id))
        .filter(sessions::revoked_at.is_null())
        .select(sessions::id)
        .load(c)?;
    revoke_ids(c, ids, reason)
}

/// The auth client whose session a refresh token belongs to (`None` for an unknown token or
/// a session opened without a client).
pub fn client_of_refresh(c: &mut Db, token: &str) -> ApiResult<Option<String>> {
    Ok(refresh_tokens::table
        .inner_join(sessions::table)
        .filter(refresh_tokens::token_hash.eq(token_hash(token)))
        .select(sessions::client_id)
        .first::<Option<String>>(c)
        .optional()?
        .flatten())
}

/// Whether any session was ever opened for the user: live, expired or revoked, of any kind.
pub fn any_for_user(c: &mut Db, user_id: i64) -> ApiResult<bool> {
    Ok(diesel::select(diesel::dsl::exists(sessions::table.filter(sessions::user_id.eq(user_id)))).get_result(c)?)
}

/// The kind of a storefront session: bound to one application, its id carried by the
/// `f.session` cookie (CONTRACT §9); it has no refresh token.
pub const STOREFRONT_KIND: &str = "fynd_cookie";

/// A storefront session (kind [`STOREFRONT_KIND`]).
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = sessions)]
pub struct StorefrontSession {
    pub id: String,
    pub user_id: i64,
    pub application_id: Option<i64>,
    pub ip: String,
    pub user_agent: String,
    pub domain: Option<String>,
    pub last_seen_at: NaiveDateTime,
    pub expires_at: NaiveDateTime,
}

/// What a new storefront session is opened with.
pub struct NewStorefrontSession<'a> {
    pub user_id: i64,
    pub company_id: i64,
    pub application_id: i64,
    pub ip: &'a str,
    pub user_agent: &'a str,
    /// The domain the cookie is set for, when the storefront named one.
    pub domain: Option<&'a str>,
    pub ttl: chrono::Duration,
}

/// Opens a storefront session (no refresh token: the cookie is the credential).
pub fn create_storefront(c: &mut Db, s: &NewStorefrontSession<'_>) -> ApiResult<StorefrontSession> {
    let id = random_hex_id();
    let t = now();
    let ua = truncate(s.user_agent, 512);
    diesel::insert_into(sessions::table)
        .values((
            sessions::id.eq(&id),
            sessions::user_id.eq(s.user_id),
            sessions::company_id.eq(s.company_id),
            sessions::kind.eq(STOREFRONT_KIND),
            sessions::application_id.eq(s.application_id),
            sessions::ip.eq(s.ip),
            sessions::user_agent.eq(ua),
            sessions::domain.eq(s.domain),
            sessions::created_at.eq(t),
            sessions::last_seen_at.eq(t),
            sessions::expires_at.eq(t + s.ttl),
        ))
        .execute(c)?;
    Ok(StorefrontSession {
        id,
        user_id: s.user_id,
        application_id: Some(s.application_id),
        ip: s.ip.to_owned(),
        user_agent: ua.to_owned(),
        domain: s.domain.map(str::to_owned),
        last_seen_at: t,
        expires_at: t + s.ttl,
    })
}

/// Rolling sessions: pushes the expiry forward from now.
pub fn roll(c: &mut Db, session_id: &str, expires_at: NaiveDateTime) -> ApiResult<()> {
    diesel::update(sessions::table.find(session_id))
        .set((sessions::last_seen_at.eq(now()), sessions::expires_at.eq(expires_at)))
        .execute(c)?;
    Ok(())
}

/// The user's live storefront sessions in this application, newest first.
pub fn list_storefront(c: &mut Db, user_id: i64, application_id: i64) -> ApiResult<Vec<StorefrontSession>> {
    Ok(sessions::table
        .filter(sessions::user_id.eq(user_id))
        .filter(sessions::kind.eq(STOREFRONT_KIND))
        .filter(sessions::application_id.eq(application_id))
        .filter(sessions::revoked_at.is_null())
        .filter(sessions::expires_at.gt(now()))
        .order(sessions::created_at.desc())
        .select(StorefrontSession::as_select())
        .load(c)?)
}

/// Revokes one live session of the user; `false` when there is no such live session.
pub fn revoke_of_user(c: &mut Db, user_id: i64, session_id: &str, reason: &str) -> ApiResult<bool> {
    let n = diesel::update(
        sessions::table
            .filter(sessions::id.eq(session_id))
            .filter(sessions::user_id.eq(user_id))
            .filter(sessions::revoked_at.is_null()),
    )
    .set((sessions::revoked_at.eq(now()), sessions::revoke_reason.eq(reason)))
    .execute(c)?;
    Ok(n > 0)
}

/// Per-node cache of session lookups: at most [`CACHE_TTL`] stale, so a revocation anywhere
/// takes effect everywhere within 2 s; a revocation on this node takes effect at once.
#[derive(Clone)]
pub struct SessionCache {
    cache: moka::sync::Cache<String, Option<Principal>>,
}

impl Default for SessionCache {
    fn default() -> Self {
        Self { cache: moka::sync::Cache::builder().max_capacity(100_000).time_to_live(CACHE_TTL).build() }
    }
}

impl SessionCache {
    pub async fn principal(&self, db: &Pool, session_id: &str) -> ApiResult<Option<Principal>> {
        if let Some(hit) = self.cache.get(session_id) {
            return Ok(hit);
        }
        let sid = session_id.to_owned();
        let found = db.run(move |c| lookup(c, &sid)).await?;
        self.cache.insert(session_id.to_owned(), found.clone());
        Ok(found)
    }

    pub fn forget(&self, session_id: &str) {
        self.cache.invalidate(session_id);
    }
}
