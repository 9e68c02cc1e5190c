//! Storefront social logins (auth.md §2.3): `login/facebook-token`, `login/google-token`,
//! `login/google-android`, `login/google-ios` and `login/apple-ios`. The storefront sends what
//! the provider's SDK gave it; the `profile` in the body is never trusted, the token is checked
//! with the provider:
//!
//! - **Facebook**: `GET {graph}/debug_token` with the app token `app_id|app_secret` of the
//!   platform config's `social_tokens.facebook` must call the token valid for that app; the
//!   profile then comes from `GET {graph}/me` with `appsecret_proof`. Facebook only returns
//!   confirmed e-mails, so that e-mail counts as verified.
//! - **Google**: `GET {tokeninfo}?access_token=` must name `social_tokens.google.app_id` as its
//!   audience (`aud` or `azp`) and be unexpired; its e-mail counts only when `email_verified`.
//! - **Apple**: the `identity_token` is a JWT checked against Apple's JWKS (`iss`
//!   `https://appleid.apple.com`, `aud` = `social_tokens.apple.app_id`, unexpired, `sub` =
//!   `user_identifier`). The key set is kept 5 minutes and fetched again for a key it lacks.
//!
//! The provider URLs are settings (`CONFAB_FACEBOOK_GRAPH_URL`, `CONFAB_GOOGLE_TOKENINFO_URL`,
//! `CONFAB_APPLE_KEYS_URL`) so tests run against local mocks. The platform config's
//! `social.<provider>` switch must be on (else 403 `<provider>_login_disabled`).
//!
//! The account: the identity already linked to a customer of this application, else the
//! customer holding the provider's verified e-mail, else a new customer (when registration is
//! on) with that e-mail verified and the provider's names. A customer whose own record of the
//! e-mail is unverified is handled by [`crate::auth::proof`]: claimed (its password and
//! sessions dropped) when nothing else was ever proven on it, else the e-mail is released to
//! a new account. The link is kept in
//! `oauth_identities` under the provider key `fynd:<application id>:<provider>`. Blocked,
//! archived and deleted accounts answer 401 `invalid_credentials`.

use std::sync::{Arc, OnceLock};

use actix_web::{HttpResponse, post, web};
use hmac::{Hmac, Mac};
use jsonwebtoken::{DecodingKey, Validation, jwk::JwkSet};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use utoipa::ToSchema;

use super::{
    credentials::{AppClient, session_cookie},
    service::{self, NewCustomer},
    views::UserView,
};
use crate::{
    auth::{
        proof::{self, Contact, Proof},
        service::Origin,
    },
    core::{
        db::Db,
        error::{ApiError, ApiResult, ErrorBody},
        extract::Json,
        state::AppState,
        types::Email,
    },
    users::{model::UserRow, store},
};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(facebook).service(google).service(google_android).service(google_ios).service(apple_ios);
}

#[derive(utoipa::OpenApi)]
#[openapi(
    paths(facebook, google, google_android, google_ios, apple_ios),
    components(schemas(OAuthRequestBody, OAuth2Token, OAuthProfile, AppleLoginBody, AppleToken, AuthSuccessView))
)]
pub struct Api;

/// `OAuthRequestSchema`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct OAuthRequestBody {
    pub is_signed_in: Option<bool>,
    pub oauth2: OAuth2Token,
    /// Names are taken from here for a new account; the identity is always the provider's.
    pub profile: Option<OAuthProfile>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct OAuth2Token {
    pub access_token: String,
    pub expiry: Option<i64>,
    pub refresh_token: Option<String>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct OAuthProfile {
    pub id: Option<String>,
    pub email: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub full_name: Option<String>,
    pub image: Option<String>,
}

/// `OAuthRequestAppleSchema`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct AppleLoginBody {
    pub user_identifier: String,
    pub oauth: AppleToken,
    pub profile: Option<OAuthProfile>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct AppleToken {
    pub identity_token: String,
}

/// `AuthSuccess`: `user_exists` says whether the account existed before this login.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuthSuccessView {
    pub user_exists: bool,
    pub user: UserView,
}

/// What a provider vouched for.
struct Verified {
    provider: &'static str,
    subject: String,
    email: Option<Email>,
    first_name: Option<String>,
    last_name: Option<String>,
}

#[utoipa::path(tag = "fynd-storefront", request_body = OAuthRequestBody, responses((status = 200, body = AuthSuccessView),
    (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
#[post("/service/application/user/authentication/v1.0/login/facebook-token")]
async fn facebook(
    client: AppClient,
    st: web::Data<AppState>,
    origin: Origin,
    Json(b): Json<OAuthRequestBody>,
) -> ApiResult<HttpResponse> {
    let (app_id, secret) = credentials(&client, "facebook")?;
    let v = verify_facebook(&st, &app_id, &secret, &b.oauth2.access_token).await?;
    login(&st, &client, &origin, v, b.profile).await
}

#[utoipa::path(tag = "fynd-storefront", request_body = OAuthRequestBody, responses((status = 200, body = AuthSuccessView),
    (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
#[post("/service/application/user/authentication/v1.0/login/google-token")]
async fn google(
    client: AppClient,
    st: web::Data<AppState>,
    origin: Origin,
    Json(b): Json<OAuthRequestBody>,
) -> ApiResult<HttpResponse> {
    google_login(&st, &client, &origin, b).await
}

#[utoipa::path(tag = "fynd-storefront", request_body = OAuthRequestBody, responses((status = 200, body = AuthSuccessView),
    (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
#[post("/service/application/user/authentication/v1.0/login/google-android")]
async fn google_android(
    client: AppClient,
    st: web::Data<AppState>,
    origin: Origin,
    Json(b): Json<OAuthRequestBody>,
) -> ApiResult<HttpResponse> {
    google_login(&st, &client, &origin, b).await
}

#[utoipa::path(tag = "fynd-storefront", request_body = OAuthRequestBody, responses((status = 200, body = AuthSuccessView),
    (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
#[post("/service/application/user/authentication/v1.0/login/google-ios")]
async fn google_ios(
    client: AppClient,
    st: web::Data<AppState>,
    origin: Origin,
    Json(b): Json<OAuthRequestBody>,
) -> ApiResult<HttpResponse> {
    google_login(&st, &client, &origin, b).await
}

#[utoipa::path(tag = "fynd-storefront", request_body = AppleLoginBody, responses((status = 200, body = AuthSuccessView),
    (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
#[post("/service/application/user/authentication/v1.0/login/apple-ios")]
async fn apple_ios(
    client: AppClient,
    st: web::Data<AppState>,
    origin: Origin,
    Json(b): Json<AppleLoginBody>,
) -> ApiResult<HttpResponse> {
    let (bundle_id, _) = credentials(&client, "apple")?;
    let v = verify_apple(&st, &bundle_id, &b.oauth.identity_token, &b.user_identifier).await?;
    login(&st, &client, &origin, v, b.profile).await
}

async fn google_login(
    st: &AppState,
    client: &AppClient,
    origin: &Origin,
    b: OAuthRequestBody,
) -> ApiResult<HttpResponse> {
    let (client_id, _) = credentials(client, "google")?;
    let v = verify_google(st, &client_id, &b.oauth2.access_token).await?;
    login(st, client, origin, v, b.profile).await
}

/// The provider's `(app_id, app_secret)` from the platform config, when its login is on.
fn credentials(client: &AppClient, provider: &'static str) -> ApiResult<(String, String)> {
    let disabled = || ApiError::Denied {
        code: match provider {
            "facebook" => "facebook_login_disabled",
            "google" => "google_login_disabled",
            _ => "apple_login_disabled",
        },
        message: format!("{provider} login is disabled for this application"),
    };
    let doc = super::config::effective(&client.app);
    if doc["social"][provider].as_bool() != Some(true) {
        return Err(disabled());
    }
    let tokens = &doc["social_tokens"][provider];
    let app_id = tokens["app_id"].as_str().filter(|s| !s.is_empty()).ok_or_else(disabled)?;
    Ok((app_id.to_owned(), tokens["app_secret"].as_str().unwrap_or("").to_owned()))
}

fn rejected() -> ApiError {
    ApiError::Unauthorized("invalid_social_token")
}

/// GETs a provider URL: a 2xx JSON body, `None` for a 4xx (the provider refused the token),
/// an error when the provider cannot be reached or answers 5xx.
async fn provider_json(st: &AppState, url: &str, query: &[(&str, &str)]) -> ApiResult<Option<serde_json::Value>> {
    let res = st.http.get(url).query(query).send().await.map_err(|e| {
        tracing::warn!(error = %e.without_url(), "identity provider unreachable");
        ApiError::Unavailable("the identity provider".into())
    })?;
    let status = res.status();
    if status.is_client_error() {
        return Ok(None);
    }
    if !status.is_success() {
        tracing::warn!(%status, "identity provider failed");
        return Err(ApiError::Unavailable("the identity provider".into()));
    }
    res.json().await.map(Some).map_err(|_| ApiError::Unavailable("the identity provider".into()))
}

async fn verify_facebook(st: &AppState, app_id: &str, secret: &str, token: &str) -> ApiResult<Verified> {
    let graph = st.config.facebook_graph_url.trim_end_matches('/');
    let app_token = format!("{app_id}|{secret}");
    let debug =
        provider_json(st, &format!("{graph}/debug_token"), &[("input_token", token), ("access_token", &app_token)])
            .await?
            .ok_or_else(rejected)?;
    let data = &debug["data"];
    if data["is_valid"].as_bool() != Some(true) || data["app_id"].as_str() != Some(app_id) {
        return Err(rejected());
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).map_err(anyhow::Error::from)?;
    mac.update(token.as_bytes());
    let proof = hex::encode(mac.finalize().into_bytes());
    let me = provider_json(
        st,
        &format!("{graph}/me"),
        &[("fields", "id,email,first_name,last_name"), ("access_token", token), ("appsecret_proof", &proof)],
    )
    .await?
    .ok_or_else(rejected)?;
    let subject = me["id"].as_str().filter(|id| Some(*id) == data["user_id"].as_str()).ok_or_else(rejected)?;
    Ok(Verified {
        provider: "facebook",
        subject: subject.to_owned(),
        email: me["email"].as_str().and_then(|e| Email::try_from(e.to_owned()).ok()),
        first_name: me["first_name"].as_str().map(str::to_owned),
        last_name: me["last_name"].as_str().map(str::to_owned),
    })
}

async fn verify_google(st: &AppState, client_id: &str, token: &str) -> ApiResult<Verified> {
    let info =
        provider_json(st, &st.config.google_tokeninfo_url, &[("access_token", token)]).await?.ok_or_else(rejected)?;
    let audience_ok = [&info["aud"], &info["azp"]].iter().any(|a| a.as_str() == Some(client_id));
    let expires_in = info["expires_in"].as_str().and_then(|s| s.parse::<i64>().ok()).or(info["expires_in"].as_i64());
    let subject = info["sub"].as_str().filter(|s| !s.is_empty());
    let (true, Some(1..), Some(subject)) = (audience_ok, expires_in, subject) else { return Err(rejected()) };
    let verified = info["email_verified"].as_str() == Some("true") || info["email_verified"].as_bool() == Some(true);
    Ok(Verified {
        provider: "google",
        subject: subject.to_owned(),
        email: info["email"].as_str().filter(|_| verified).and_then(|e| Email::try_from(e.to_owned()).ok()),
        first_name: None,
        last_name: None,
    })
}

#[derive(Debug, Deserialize)]
struct AppleClaims {
    sub: String,
    email: Option<String>,
    /// Apple sends `"true"` or `true`.
    email_verified: Option<serde_json::Value>,
}

/// Apple's signing keys, per JWKS address, kept 5 minutes (as the OIDC logins keep theirs,
/// `auth::oauth`), so a login does not wait on Apple each time.
fn apple_keys() -> &'static moka::sync::Cache<String, Arc<JwkSet>> {
    static KEYS: OnceLock<moka::sync::Cache<String, Arc<JwkSet>>> = OnceLock::new();
    KEYS.get_or_init(|| {
        moka::sync::Cache::builder().max_capacity(16).time_to_live(std::time::Duration::from_secs(300)).build()
    })
}

async fn verify_apple(st: &AppState, bundle_id: &str, token: &str, user_identifier: &str) -> ApiResult<Verified> {
    let header = jsonwebtoken::decode_header(token).map_err(|_| rejected())?;
    let kid = header.kid.as_deref().ok_or_else(rejected)?;
    let keys = match apple_keys().get(&st.config.apple_keys_url) {
        Some(keys) if keys.find(kid).is_some() => keys,
        // Not cached yet, or Apple has rotated its keys since: fetch the set again.
        _ => {
            let fetched = provider_json(st, &st.config.apple_keys_url, &[]).await?.ok_or_else(rejected)?;
            let keys: Arc<JwkSet> = Arc::new(
                serde_json::from_value(fetched).map_err(|_| ApiError::Unavailable("the identity provider".into()))?,
            );
            apple_keys().insert(st.config.apple_keys_url.clone(), keys.clone());
            keys
        }
    };
    let jwk = keys.find(kid).ok_or_else(rejected)?;
    let key = DecodingKey::from_jwk(jwk).map_err(|_| rejected())?;
    let mut validation = Validation::new(header.alg);
    validation.set_issuer(&["https://appleid.apple.com"]);
    validation.set_audience(&[bundle_id]);
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    let claims = jsonwebtoken::decode::<AppleClaims>(token, &key, &validation).map_err(|_| rejected())?.claims;
    if claims.sub != user_identifier {
        return Err(rejected());
    }
    let verified = matches!(&claims.email_verified, Some(serde_json::Value::Bool(true)))
        || claims.email_verified.as_ref().and_then(|v| v.as_str()) == Some("true");
    Ok(Verified {
        provider: "apple",
        subject: claims.sub,
        email: claims.email.filter(|_| verified).and_then(|e| Email::try_from(e).ok()),
        first_name: None,
        last_name: None,
    })
}

/// Finds, links or creates the customer (see the module doc) and starts its session.
async fn login(
    st: &AppState,
    client: &AppClient,
    origin: &Origin,
    v: Verified,
    profile: Option<OAuthProfile>,
) -> ApiResult<HttpResponse> {
    let profile = profile.unwrap_or_default();
    let provider_key = format!("fynd:{}:{}", client.app.id, v.provider);
    let n = NewCustomer {
        email: v.email.clone(),
        email_verified: v.email.is_some(),
        first_name: v.first_name.or(profile.first_name).map(|s| s.trim().to_owned()),
        last_name: v.last_name.or(profile.last_name).map(|s| s.trim().to_owned()),
        ..Default::default()
    };
    let (app, register, subject, ip) = (client.app.clone(), client.settings.register, v.subject, origin.ip.clone());
    let (user, existed, revoked) = st
        .db
        .write(move |c| {
            if let Some(user) = linked(c, &provider_key, &subject, app.company_id)? {
                return Ok((user, true, Vec::new()));
            }
            let mut revoked = Vec::new();
            let by_email = match &n.email {
                Some(e) => match service::find_customer(c, &app, &service::Identifier::Email(e.clone()))? {
                    // The provider verified the e-mail; the account's own record of it may
                    // not be (README "Account takeover and abuse", `auth::proof`).
                    Some(u) if u.is_active() => match proof::prove(c, u.id, Contact::Email(e.as_str()))? {
                        Proof::AlreadyVerified => Some(u),
                        Proof::Claimed { revoked: r } => {
                            revoked = r;
                            let detail = serde_json::json!({"via": provider_key, "contact": "email"});
                            store::audit(c, Some(app.company_id), Some(u.id), "account_claimed", &ip, detail)?;
                            Some(store::get(c, app.company_id, u.id)?)
                        }
                        Proof::Unproven => {
                            proof::release(c, u.id, Contact::Email(e.as_str()))?;
                            let detail = serde_json::json!({"via": provider_key, "contact": "email"});
                            store::audit(c, Some(app.company_id), Some(u.id), "contact_released", &ip, detail)?;
                            None
                        }
                    },
                    other => other,
                },
                None => None,
            };
            let (user, existed) = match by_email {
                Some(u) => (u, true),
                None if register => {
                    let u = service::create_or_adopt(c, &app, &n)?;
                    store::audit(
                        c,
                        Some(app.company_id),
                        Some(u.id),
                        "signup",
                        &ip,
                        serde_json::json!({"kind": provider_key}),
                    )?;
                    (u, false)
                }
                None => {
                    return Err(ApiError::Denied {
                        code: "registration_disabled",
                        message: "registration is disabled for this application".into(),
                    });
                }
            };
            store::link_identity(c, &provider_key, &subject, user.id)?;
            Ok((user, existed, revoked))
        })
        .await?;
    proof::forget(st, revoked);
    if !user.is_active() {
        return Err(ApiError::Unauthorized("invalid_credentials"));
    }
    let ttl = client.settings.session_ttl();
    let (_, value) = service::start_session(st, &client.app, &user, origin, None, ttl).await?;
    let app_id = client.app.id;
    let view = st.db.run(move |c| service::view(c, user, app_id)).await?;
    Ok(HttpResponse::Ok()
        .cookie(session_cookie(&st.config, value, ttl.num_seconds()))
        .json(AuthSuccessView { user_exists: existed, user: view }))
}

/// The customer linked to this provider identity. The link of an archived account is dropped
/// (archiving frees the person to sign up again as a new account).
fn linked(c: &mut Db, provider_key: &str, subject: &str, company_id: i64) -> ApiResult<Option<UserRow>> {
    match store::find_by_identity(c, company_id, provider_key, subject)? {
        Some(u) if u.status == "archived" => {
            store::unlink_identity(c, provider_key, subject)?;
            Ok(None)
        }
        other => Ok(other),
    }
}
