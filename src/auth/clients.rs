//! Auth clients (CONTRACT §5, ARC `AuthClient`): the applications that log users in through
//! the code flow. A client belongs to one company and logs in only that company's users. The
//! secret is stored as an argon2id hash and shown once, when the client is created; a client
//! created with `clientType: "public"` has no secret and must use PKCE.

use std::collections::BTreeMap;

use actix_web::{HttpResponse, delete, get, patch, post, web};
use chrono::NaiveDateTime;
use diesel::prelude::*;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{
    arc,
    oauth::{self, IdentityProvider, ProviderConfig},
    password,
    saml::{self, SamlBody, SamlView},
};
use crate::core::{
    auth::{guard::Admin, session},
    crypto::random_token,
    db::{Db, schema::auth_clients},
    error::{ApiError, ApiResult, ErrorBody, is_unique_violation},
    extract::Json,
    state::AppState,
    types::{now, rfc3339},
};

/// ARC's DB defaults, except the code lifetime: CONTRACT §5 fixes codes at 60 s at most.
pub const DEFAULT_ACCESS_TTL: i64 = 900;
pub const DEFAULT_REFRESH_TTL: i64 = 30 * 86_400;
pub const MAX_CODE_TTL: i64 = 60;
pub const GRANT_CODE: &str = "authorization_code";
pub const GRANT_PASSWORD: &str = "password";
pub const GRANT_OTP: &str = "otp";
/// The Fynd SDK's platform OAuth (`…/oauth/token`): the client acts as its own service
/// account with company-admin rights, so it is never granted by default.
pub const GRANT_CLIENT_CREDENTIALS: &str = "client_credentials";
/// What a client gets when it names no grants.
const DEFAULT_GRANTS: [&str; 3] = [GRANT_CODE, GRANT_PASSWORD, GRANT_OTP];
const GRANTS: [&str; 4] = [GRANT_CODE, GRANT_PASSWORD, GRANT_OTP, GRANT_CLIENT_CREDENTIALS];

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = auth_clients)]
pub struct ClientRow {
    pub id: i64,
    pub company_id: i64,
    pub client_id: String,
    pub secret_hash: Option<String>,
    pub redirect_urls: String,
    pub grants: String,
    pub access_token_ttl: i64,
    pub refresh_token_ttl: i64,
    pub auth_code_ttl: i64,
    pub oidc: String,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
    /// The SAML identity provider (`auth::saml`), JSON.
    pub saml: Option<String>,
}

impl ClientRow {
    pub fn is_public(&self) -> bool {
        self.secret_hash.is_none()
    }

    pub fn allows(&self, grant: &str) -> bool {
        serde_json::from_str::<Vec<String>>(&self.grants).is_ok_and(|g| g.iter().any(|x| x == grant))
    }

    pub fn code_ttl(&self) -> i64 {
        self.auth_code_ttl.clamp(1, MAX_CODE_TTL)
    }

    pub fn redirect_urls(&self) -> Vec<String> {
        serde_json::from_str(&self.redirect_urls).unwrap_or_default()
    }
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(create).service(list).service(show).service(update).service(remove);
}

#[derive(utoipa::OpenApi)]
#[openapi(paths(create, list, show, update, remove), components(schemas(ClientBody, ClientPatch, ClientView)))]
pub struct Api;

/// Loads a client by its public `client_id` (any company: the caller then checks the user's
/// company against the client's).
pub fn by_client_id(c: &mut Db, client_id: &str) -> ApiResult<Option<ClientRow>> {
    Ok(auth_clients::table
        .filter(auth_clients::client_id.eq(client_id))
        .select(ClientRow::as_select())
        .first(c)
        .optional()?)
}

/// The lifetimes, in seconds, of the sessions and access tokens of the client `client_id`:
/// (refresh token, access token); `None` for an unknown client. Sessions opened through a client
/// live by these ([`session::rotate`]).
pub fn lifetimes(c: &mut Db, client_id: &str) -> ApiResult<Option<(i64, i64)>> {
    Ok(auth_clients::table
        .filter(auth_clients::client_id.eq(client_id))
        .select((auth_clients::refresh_token_ttl, auth_clients::access_token_ttl))
        .first(c)
        .optional()?)
}

/// Client authentication (ARC's client-password strategy, fixed): the secret is checked against
/// its argon2 hash; an unknown client burns the same work. Public clients need no secret.
/// Every failure is 401 `invalid_client`.
pub async fn authenticate(st: &AppState, client_id: &str, secret: Option<&str>) -> ApiResult<ClientRow> {
    let id = client_id.to_owned();
    let client = st.db.run(move |c| by_client_id(c, &id)).await?;
    let secret = secret.unwrap_or("").to_owned();
    let stored = client.as_ref().map(|c| c.secret_hash.clone());
    let ok = web::block(move || match stored {
        Some(Some(hash)) => password::verify(&hash, &secret),
        Some(None) => true,
        None => {
            password::verify_dummy(&secret);
            false
        }
    })
    .await?;
    match client {
        Some(client) if ok => Ok(client),
        _ => Err(ApiError::Unauthorized("invalid_client")),
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClientBody {
    pub client_id: String,
    /// Omitted for a confidential client: one is generated. Shown only in the create answer.
    pub client_secret: Option<String>,
    /// ARC's per-client signing secret. confab signs every token with its own keys, so this
    /// is accepted for compatibility and not stored.
    pub secret: Option<String>,
    /// One URL, or several separated by commas (the OAuth redirect targets).
    pub redirect_url: Option<String>,
    /// Seconds, 1–900 (default 900).
    pub access_token_expiration: Option<i64>,
    /// Seconds (default 30 days).
    pub refresh_token_expiration: Option<i64>,
    /// Seconds, at most 60 (default 60).
    pub auth_code_expiration: Option<i64>,
    /// `private` (default: has a secret) or `public` (no secret; PKCE required).
    pub client_type: Option<String>,
    /// Allowed grants: `authorization_code`, `password` (`/auth/login-token`), `otp`, and
    /// `client_credentials` (the Fynd SDK's platform OAuth: the client then acts as a service
    /// account with company-admin rights). Default: the first three.
    pub grants: Option<Vec<String>>,
    /// Upstream identity providers for `/auth/google`, `/auth/oauth-apple`, … keyed by
    /// `google`, `apple`, `azure`, `cognito`, `keycloak`, `facebook`, `instagram`.
    #[schema(value_type = Option<BTreeMap<String, ProviderConfig>>)]
    pub providers: Option<BTreeMap<String, Option<ProviderConfig>>>,
    /// The SAML identity provider for `POST /auth/saml` (README "Authentication service").
    #[serde(default, deserialize_with = "saml::present")]
    #[schema(value_type = Option<SamlBody>)]
    pub saml: Option<Option<SamlBody>>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClientPatch {
    pub redirect_url: Option<String>,
    pub access_token_expiration: Option<i64>,
    pub refresh_token_expiration: Option<i64>,
    pub auth_code_expiration: Option<i64>,
    pub grants: Option<Vec<String>>,
    /// A new secret for a confidential client (shown once, in this answer).
    pub client_secret: Option<String>,
    /// Providers to add or replace; `null` removes one. A provider sent without
    /// `clientSecret` keeps its current secret.
    #[schema(value_type = Option<BTreeMap<String, ProviderConfig>>)]
    pub providers: Option<BTreeMap<String, Option<ProviderConfig>>>,
    /// Sets the SAML identity provider (without metadata: keeps the current one, with a new
    /// `spEntityId`); `null` removes it.
    #[serde(default, deserialize_with = "saml::present")]
    #[schema(value_type = Option<SamlBody>)]
    pub saml: Option<Option<SamlBody>>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClientView {
    pub id: i64,
    pub client_id: String,
    /// Only in the answer that set it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
    pub client_type: &'static str,
    pub redirect_url: String,
    pub access_token_expiration: i64,
    pub refresh_token_expiration: i64,
    pub auth_code_expiration: i64,
    pub grants: Vec<String>,
    /// The upstream providers, without their secrets.
    #[schema(value_type = BTreeMap<String, ProviderConfig>)]
    pub providers: BTreeMap<IdentityProvider, ProviderConfig>,
    /// The SAML identity provider, when one is set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub saml: Option<SamlView>,
    pub deleted: bool,
    pub created_on: String,
    pub modified_on: String,
}

impl ClientView {
    fn new(st: &AppState, row: &ClientRow, secret: Option<String>) -> Self {
        Self {
            id: row.id,
            client_id: row.client_id.clone(),
            client_secret: secret,
            client_type: if row.is_public() { "public" } else { "private" },
            redirect_url: row.redirect_urls().join(","),
            access_token_expiration: row.access_token_ttl,
            refresh_token_expiration: row.refresh_token_ttl,
            auth_code_expiration: row.auth_code_ttl,
            grants: serde_json::from_str(&row.grants).unwrap_or_default(),
            providers: oauth::public_view(&row.oidc),
            saml: saml::public_view(st, row),
            deleted: false,
            created_on: rfc3339(row.created_at),
            modified_on: rfc3339(row.updated_at),
        }
    }
}

fn ttl(name: &str, value: Option<i64>, default: i64, max: i64) -> ApiResult<i64> {
    match value {
        None => Ok(default),
        Some(v) if (1..=max).contains(&v) => Ok(v),
        Some(_) => Err(ApiError::field(name, format!("must be between 1 and {max} seconds"))),
    }
}

fn redirects(value: Option<&str>) -> ApiResult<String> {
    let urls: Vec<&str> = value.unwrap_or("").split(',').map(str::trim).filter(|u| !u.is_empty()).collect();
    for u in &urls {
        if !(u.starts_with("https://") || u.starts_with("http://")) {
            return Err(ApiError::field("redirectUrl", "must be http(s) URLs"));
        }
    }
    Ok(serde_json::to_string(&urls).unwrap_or_else(|_| "[]".into()))
}

fn grants(value: Option<Vec<String>>) -> ApiResult<String> {
    let names = value.unwrap_or_else(|| DEFAULT_GRANTS.iter().map(|g| (*g).to_owned()).collect());
    if let Some(bad) = names.iter().find(|g| !GRANTS.contains(&g.as_str())) {
        return Err(ApiError::field("grants", format!("unknown grant `{bad}`")));
    }
    Ok(serde_json::to_string(&names).unwrap_or_else(|_| "[]".into()))
}

fn check_secret(secret: &str) -> ApiResult<()> {
    if secret.len() < 16 {
        return Err(ApiError::field("clientSecret", "must be at least 16 characters"));
    }
    Ok(())
}

async fn hash(secret: String) -> ApiResult<String> {
    Ok(web::block(move || password::hash(&secret)).await??)
}

fn load(c: &mut Db, company_id: i64, id: i64) -> ApiResult<ClientRow> {
    Ok(auth_clients::table
        .filter(auth_clients::company_id.eq(company_id))
        .find(id)
        .select(ClientRow::as_select())
        .first(c)?)
}

/// The settings of a client that [`insert_client`] and [`update_client`] write, checked and
/// encoded as stored (secret hashed, URLs, grants and providers as JSON).
#[derive(Insertable, AsChangeset)]
#[diesel(table_name = auth_clients, treat_none_as_null = true)]
struct ClientFields {
    secret_hash: Option<String>,
    redirect_urls: String,
    grants: String,
    access_token_ttl: i64,
    refresh_token_ttl: i64,
    auth_code_ttl: i64,
    oidc: String,
    saml: Option<String>,
}

/// Stores a new client of the company and loads it back; 409 `client_id_taken` when the
/// `client_id` is in use.
fn insert_client(c: &mut Db, company_id: i64, client_id: &str, f: &ClientFields) -> ApiResult<ClientRow> {
    let t = now();
    let inserted = c.transaction(|c| {
        diesel::insert_into(auth_clients::table)
            .values((
                f,
                auth_clients::company_id.eq(company_id),
                auth_clients::client_id.eq(client_id),
                auth_clients::created_at.eq(t),
                auth_clients::updated_at.eq(t),
            ))
            .returning(auth_clients::id)
            .get_result::<i64>(c)
    });
    match inserted {
        Ok(id) => load(c, company_id, id),
        Err(e) if is_unique_violation(&e) => {
            Err(ApiError::conflict("client_id_taken", "an auth client with this clientId exists"))
        }
        Err(e) => Err(e.into()),
    }
}

/// The company's clients, oldest first.
fn company_clients(c: &mut Db, company_id: i64) -> ApiResult<Vec<ClientRow>> {
    Ok(auth_clients::table
        .filter(auth_clients::company_id.eq(company_id))
        .order(auth_clients::id)
        .select(ClientRow::as_select())
        .load(c)?)
}

/// Overwrites the settings of the company's client `id` and loads it back (404 when the
/// company has no such client).
fn update_client(c: &mut Db, company_id: i64, id: i64, f: &ClientFields) -> ApiResult<ClientRow> {
    diesel::update(auth_clients::table.filter(auth_clients::company_id.eq(company_id)).find(id))
        .set((f, auth_clients::updated_at.eq(now())))
        .execute(c)?;
    load(c, company_id, id)
}

/// Deletes the company's client `id` (404 when there is none) with its codes, and revokes the
/// sessions opened through it; returns the revoked session ids.
fn delete_client(c: &mut Db, company_id: i64, id: i64) -> ApiResult<Vec<String>> {
    let row = load(c, company_id, id)?;
    arc::delete_codes_of(c, &row.client_id)?;
    diesel::delete(auth_clients::table.find(row.id)).execute(c)?;
    session::revoke_client(c, &row.client_id, "auth_client_deleted")
}

/// Creates a client of the admin's company. The answer is the only place the secret appears.
#[utoipa::path(tag = "auth-clients", request_body = ClientBody, responses(
    (status = 201, body = ClientView), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
#[post("/auth-clients")]
async fn create(st: web::Data<AppState>, admin: Admin, Json(b): Json<ClientBody>) -> ApiResult<HttpResponse> {
    let client_id = b.client_id.trim().to_owned();
    if client_id.is_empty() || client_id.len() > 200 {
        return Err(ApiError::field("clientId", "must be 1–200 characters"));
    }
    let public = match b.client_type.as_deref() {
        None | Some("private") => false,
        Some("public") => true,
        Some(_) => return Err(ApiError::field("clientType", "must be `public` or `private`")),
    };
    let secret = match (public, b.client_secret) {
        (true, Some(_)) => return Err(ApiError::field("clientSecret", "a public client has no secret")),
        (true, None) => None,
        (false, Some(s)) => {
            check_secret(&s)?;
            Some(s)
        }
        (false, None) => Some(random_token()),
    };
    let access_token_ttl =
        ttl("accessTokenExpiration", b.access_token_expiration, DEFAULT_ACCESS_TTL, DEFAULT_ACCESS_TTL)?;
    let refresh_token_ttl =
        ttl("refreshTokenExpiration", b.refresh_token_expiration, DEFAULT_REFRESH_TTL, 365 * 86_400)?;
    let auth_code_ttl = ttl("authCodeExpiration", b.auth_code_expiration, MAX_CODE_TTL, MAX_CODE_TTL)?;
    let redirect_urls = redirects(b.redirect_url.as_deref())?;
    let grants = grants(b.grants)?;
    let oidc = oauth::merge("{}", b.providers.unwrap_or_default(), &st.data_key)?;
    let saml = saml::merge(&st, &client_id, None, b.saml.flatten()).await?;
    let secret_hash = match &secret {
        Some(s) => Some(hash(s.clone()).await?),
        None => None,
    };
    let fields = ClientFields {
        secret_hash,
        redirect_urls,
        grants,
        access_token_ttl,
        refresh_token_ttl,
        auth_code_ttl,
        oidc,
        saml,
    };
    let company_id = admin.company_id;
    let row = st.db.write(move |c| insert_client(c, company_id, &client_id, &fields)).await?;
    Ok(HttpResponse::Created().json(ClientView::new(&st, &row, secret)))
}

/// The admin's company's clients (secrets never shown).
#[utoipa::path(tag = "auth-clients", responses((status = 200, body = [ClientView])), security(("bearer" = [])))]
#[get("/auth-clients")]
async fn list(st: web::Data<AppState>, admin: Admin) -> ApiResult<HttpResponse> {
    let company_id = admin.company_id;
    let rows = st.db.run(move |c| company_clients(c, company_id)).await?;
    Ok(HttpResponse::Ok().json(rows.iter().map(|r| ClientView::new(&st, r, None)).collect::<Vec<_>>()))
}

#[utoipa::path(tag = "auth-clients", params(("id" = i64, Path)), responses(
    (status = 200, body = ClientView), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
#[get("/auth-clients/{id}")]
async fn show(st: web::Data<AppState>, admin: Admin, id: web::Path<i64>) -> ApiResult<HttpResponse> {
    let (company_id, id) = (admin.company_id, id.into_inner());
    let row = st.db.run(move |c| load(c, company_id, id)).await?;
    Ok(HttpResponse::Ok().json(ClientView::new(&st, &row, None)))
}

/// Changes lifetimes, redirect URLs, grants, or sets a new secret (shown once, here).
#[utoipa::path(tag = "auth-clients", params(("id" = i64, Path)), request_body = ClientPatch, responses(
    (status = 200, body = ClientView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
#[patch("/auth-clients/{id}")]
async fn update(
    st: web::Data<AppState>,
    admin: Admin,
    id: web::Path<i64>,
    Json(b): Json<ClientPatch>,
) -> ApiResult<HttpResponse> {
    let (company_id, id) = (admin.company_id, id.into_inner());
    let current = st.db.run(move |c| load(c, company_id, id)).await?;
    if b.client_secret.is_some() && current.is_public() {
        return Err(ApiError::field("clientSecret", "a public client has no secret"));
    }
    let access_token_ttl =
        ttl("accessTokenExpiration", b.access_token_expiration, current.access_token_ttl, DEFAULT_ACCESS_TTL)?;
    let refresh_token_ttl =
        ttl("refreshTokenExpiration", b.refresh_token_expiration, current.refresh_token_ttl, 365 * 86_400)?;
    let auth_code_ttl = ttl("authCodeExpiration", b.auth_code_expiration, current.auth_code_ttl, MAX_CODE_TTL)?;
    let redirect_urls = match b.redirect_url.as_deref() {
        Some(r) => redirects(Some(r))?,
        None => current.redirect_urls.clone(),
    };
    let grants = match b.grants {
        Some(g) => grants(Some(g))?,
        None => current.grants.clone(),
    };
    let oidc = match b.providers {
        Some(p) => oauth::merge(&current.oidc, p, &st.data_key)?,
        None => current.oidc.clone(),
    };
    let saml = match b.saml {
        Some(Some(body)) => saml::merge(&st, &current.client_id, current.saml.as_deref(), Some(body)).await?,
        Some(None) => None,
        None => current.saml.clone(),
    };
    let secret = b.client_secret;
    if let Some(s) = &secret {
        check_secret(s)?;
    }
    let secret_hash = match &secret {
        Some(s) => Some(hash(s.clone()).await?),
        None => current.secret_hash.clone(),
    };
    let fields = ClientFields {
        secret_hash,
        redirect_urls,
        grants,
        access_token_ttl,
        refresh_token_ttl,
        auth_code_ttl,
        oidc,
        saml,
    };
    let row = st.db.write(move |c| update_client(c, company_id, id, &fields)).await?;
    Ok(HttpResponse::Ok().json(ClientView::new(&st, &row, secret)))
}

/// Deletes a client; its unused codes stop working.
#[utoipa::path(tag = "auth-clients", params(("id" = i64, Path)), responses(
    (status = 204), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
#[delete("/auth-clients/{id}")]
async fn remove(st: web::Data<AppState>, admin: Admin, id: web::Path<i64>) -> ApiResult<HttpResponse> {
    let (company_id, id) = (admin.company_id, id.into_inner());
    let revoked = st.db.write(move |c| delete_client(c, company_id, id)).await?;
    for sid in &revoked {
        st.sessions.forget(sid);
    }
    st.broker.revoked(revoked);
    Ok(HttpResponse::NoContent().finish())
}
