//! Social and enterprise logins (CONTRACT §5, seed 003, auth.md §1.9): OpenID Connect for
//! Google, Apple, Azure (Entra ID), Cognito and Keycloak (`openidconnect`), plain OAuth 2 plus a
//! profile endpoint for Facebook and Instagram (`oauth2`). SAML ends in the same place
//! ([`finish`], `auth::saml`).
//!
//! ARC's routes and outcome are kept: `POST /auth/{provider}` with a confab auth client's
//! `client_id`/`client_secret` answers 302 to the provider, the provider calls
//! `GET /auth/{provider}-auth-redirect?code&state`, and that answers 302 to the auth client's
//! redirect URL with `?code=`, which the SPA exchanges at `POST /auth/token`. Unlike ARC
//! (auth.md §1.13) `state` is a random value bound to a server-side record (stored hashed,
//! 10 minutes, claimed once atomically), PKCE S256 is used towards every provider, OIDC sends a
//! `nonce`, and ID tokens are verified against the provider's JWKS (signature, issuer, audience,
//! expiry, nonce). Users are found by verified e-mail, in the auth client's company only; no
//! account is created.
//!
//! Each auth client names its providers (`providers` on `/auth-clients`, see
//! [`ProviderConfig`]), so every company uses its own upstream applications and tests point a
//! client at a local mock.

use std::{collections::BTreeMap, sync::LazyLock, time::Duration};

use actix_web::{HttpRequest, HttpResponse, http::header, web};
use chrono::Duration as ChronoDuration;
use diesel::prelude::*;
use openidconnect::{
    AuthorizationCode, ClaimsVerificationError, ClientId, ClientSecret, CsrfToken, EndpointMaybeSet, EndpointNotSet,
    EndpointSet, IssuerUrl, Nonce, OAuth2TokenResponse, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope,
    TokenResponse,
    core::{CoreAuthenticationFlow, CoreClient, CoreClientAuthMethod, CoreProviderMetadata},
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{
    arc,
    clients::{self, ClientRow},
    proof,
    service::Origin,
};
use crate::{
    core::{
        crypto::{DataKey, token_hash},
        db::{Db, schema::oauth_states},
        error::{ApiError, ApiResult, ErrorBody},
        extract::parse_json_or_form,
        state::AppState,
        types::{Email, now},
    },
    users::{model::UserRow, store},
};

/// A state record lives 10 minutes: long enough for a login at the provider, short enough
/// that a leaked one is soon useless.
const STATE_TTL_SECS: i64 = 600;

/// The upstream identity providers confab can log users in with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum IdentityProvider {
    Google,
    Apple,
    Azure,
    Cognito,
    Keycloak,
    Facebook,
    Instagram,
}

impl IdentityProvider {
    pub const ALL: [IdentityProvider; 7] = [
        IdentityProvider::Google,
        IdentityProvider::Apple,
        IdentityProvider::Azure,
        IdentityProvider::Cognito,
        IdentityProvider::Keycloak,
        IdentityProvider::Facebook,
        IdentityProvider::Instagram,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Google => "google",
            Self::Apple => "apple",
            Self::Azure => "azure",
            Self::Cognito => "cognito",
            Self::Keycloak => "keycloak",
            Self::Facebook => "facebook",
            Self::Instagram => "instagram",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name() == name)
    }

    /// The route that starts a login (seed 003).
    fn start_path(self) -> &'static str {
        match self {
            Self::Google => "/auth/google",
            Self::Apple => "/auth/oauth-apple",
            Self::Azure => "/auth/azure",
            Self::Cognito => "/auth/cognito",
            Self::Keycloak => "/auth/keycloak",
            Self::Facebook => "/auth/facebook",
            Self::Instagram => "/auth/instagram",
        }
    }

    /// The route the provider sends the browser back to (seed 003); registered at the provider
    /// as `<public URL><path>`.
    pub fn callback_path(self) -> &'static str {
        match self {
            Self::Google => "/auth/google-auth-redirect",
            Self::Apple => "/auth/apple-oauth-redirect",
            Self::Azure => "/auth/azure-oauth-redirect",
            Self::Cognito => "/auth/cognito-auth-redirect",
            Self::Keycloak => "/auth/keycloak-auth-redirect",
            Self::Facebook => "/auth/facebook-auth-redirect",
            Self::Instagram => "/auth/instagram-auth-redirect",
        }
    }

    /// Seed 003 also has a (deprecated) `GET` start for these: the client secret travels in
    /// the query string there.
    fn has_get_start(self) -> bool {
        matches!(self, Self::Google | Self::Azure | Self::Cognito | Self::Keycloak)
    }

    pub fn is_oidc(self) -> bool {
        !matches!(self, Self::Facebook | Self::Instagram)
    }

    /// Issuers that are the same for everybody; Azure (tenant), Cognito (pool) and Keycloak
    /// (realm) need one configured.
    fn default_issuer(self) -> Option<&'static str> {
        match self {
            Self::Google => Some("https://accounts.google.com"),
            Self::Apple => Some("https://appleid.apple.com"),
            _ => None,
        }
    }

    /// Authorization, token and profile endpoints of the plain OAuth 2 providers.
    fn default_endpoints(self) -> Option<[&'static str; 3]> {
        match self {
            Self::Facebook => Some([
                "https://www.facebook.com/v21.0/dialog/oauth",
                "https://graph.facebook.com/v21.0/oauth/access_token",
                "https://graph.facebook.com/v21.0/me?fields=id,name,email",
            ]),
            Self::Instagram => Some([
                "https://www.instagram.com/oauth/authorize",
                "https://api.instagram.com/oauth/access_token",
                "https://graph.instagram.com/me?fields=id,username",
            ]),
            _ => None,
        }
    }

    fn scopes(self) -> &'static [&'static str] {
        match self {
            Self::Apple => &["name", "email"],
            Self::Facebook => &["email"],
            Self::Instagram => &["instagram_business_basic"],
            _ => &["email", "profile"],
        }
    }
}

/// One upstream provider of an auth client, as stored in `auth_clients.oidc` (a JSON object
/// keyed by provider name). The upstream secret is sealed with the data key and never shown.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProviderConfig {
    /// The client id confab has at the provider (the ID token's audience).
    pub client_id: String,
    /// Write only. Apple: the client-secret JWT generated from the Sign in with Apple key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
    /// OIDC providers: the issuer (discovery at `<issuer>/.well-known/openid-configuration`).
    /// Defaults: Google `https://accounts.google.com`, Apple `https://appleid.apple.com`;
    /// required for Azure (`https://login.microsoftonline.com/<tenant>/v2.0`), Cognito
    /// (`https://cognito-idp.<region>.amazonaws.com/<pool>`) and Keycloak (`…/realms/<realm>`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issuer_url: Option<String>,
    /// Facebook/Instagram: authorization endpoint (default: the Graph API's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_url: Option<String>,
    /// Facebook/Instagram: token endpoint.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_url: Option<String>,
    /// Facebook/Instagram: profile endpoint answering `{id, email?}` for the access token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile_url: Option<String>,
}

/// The stored providers of a client (`auth_clients.oidc`).
pub fn stored(json: &str) -> BTreeMap<IdentityProvider, ProviderConfig> {
    serde_json::from_str(json).unwrap_or_default()
}

/// What `/auth-clients` shows: the providers without their secrets.
pub fn public_view(json: &str) -> BTreeMap<IdentityProvider, ProviderConfig> {
    let mut all = stored(json);
    for cfg in all.values_mut() {
        cfg.client_secret = None;
    }
    all
}

/// Applies `providers` from a create or update body to the stored JSON: a provider set to
/// `null` is removed, a provider without `clientSecret` keeps the one it had. Secrets are
/// sealed here; URLs must be absolute http(s).
pub fn merge(current: &str, changes: BTreeMap<String, Option<ProviderConfig>>, key: &DataKey) -> ApiResult<String> {
    let mut all = stored(current);
    for (name, change) in changes {
        let field = format!("providers.{name}");
        let provider = IdentityProvider::parse(&name).ok_or_else(|| ApiError::field(&field, "unknown provider"))?;
        let Some(mut cfg) = change else {
            all.remove(&provider);
            continue;
        };
        if cfg.client_id.trim().is_empty() {
            return Err(ApiError::field(&format!("{field}.clientId"), "is required"));
        }
        let urls = [
            ("issuerUrl", &cfg.issuer_url),
            ("authUrl", &cfg.auth_url),
            ("tokenUrl", &cfg.token_url),
            ("profileUrl", &cfg.profile_url),
        ];
        for (key, value) in urls {
            if let Some(v) = value
                && url::Url::parse(v).map_or(true, |u| !matches!(u.scheme(), "http" | "https"))
            {
                return Err(ApiError::field(&format!("{field}.{key}"), "must be an absolute http(s) URL"));
            }
        }
        if provider.is_oidc() && cfg.issuer_url.is_none() && provider.default_issuer().is_none() {
            return Err(ApiError::field(&format!("{field}.issuerUrl"), "is required for this provider"));
        }
        cfg.client_secret = match cfg.client_secret.take().filter(|s| !s.is_empty()) {
            Some(secret) => Some(key.encrypt(secret.as_bytes())),
            None => all.get(&provider).and_then(|old| old.client_secret.clone()),
        };
        all.insert(provider, cfg);
    }
    serde_json::to_string(&all).map_err(|e| ApiError::Internal(e.into()))
}

/// Every login route of this module.
#[allow(deprecated)]
pub fn configure(cfg: &mut web::ServiceConfig) {
    for p in IdentityProvider::ALL {
        let mut start = web::resource(p.start_path()).app_data(web::Data::new(p)).route(web::post().to(start_post));
        if p.has_get_start() {
            start = start.route(web::get().to(start_get));
        }
        cfg.service(start);
        cfg.service(
            web::resource(p.callback_path())
                .app_data(web::Data::new(p))
                .route(web::get().to(callback_route))
                .route(web::post().to(callback_route)),
        );
    }
}

#[derive(utoipa::OpenApi)]
#[openapi(
    paths(start_post, start_get, callback_route),
    components(schemas(StartBody, IdentityProvider, ProviderConfig))
)]
pub struct Api;

/// ARC `ClientAuthRequest`, plus the confab client's own PKCE challenge (required for public
/// clients) and the choice among its redirect URLs.
#[derive(Debug, Deserialize, ToSchema, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StartBody {
    pub client_id: String,
    pub client_secret: Option<String>,
    /// base64url(SHA-256(code_verifier)) for the confab code issued at the end.
    pub code_challenge: Option<String>,
    /// Only `S256`.
    pub code_challenge_method: Option<String>,
    /// One of the auth client's redirect URLs (default: the first).
    pub redirect_url: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams, ToSchema)]
#[into_params(parameter_in = Query)]
pub struct CallbackQuery {
    pub code: Option<String>,
    pub state: Option<String>,
    /// Set by the provider when the user refused or the request was bad.
    pub error: Option<String>,
}

/// Starts a login at the provider: 302 to its authorization endpoint. The body is a form (as
/// in ARC) or JSON. `provider` is the path's provider; Apple's route is `/auth/oauth-apple`.
#[utoipa::path(post, path = "/auth/{provider}", tag = "auth",
    params(("provider" = IdentityProvider, Path, description = "google, azure, cognito, keycloak, facebook, instagram; Apple: `POST /auth/oauth-apple`")),
    request_body(content = StartBody, content_type = "application/x-www-form-urlencoded"),
    responses((status = 302, description = "to the provider's authorization endpoint"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 502, body = ErrorBody)))]
async fn start_post(
    st: web::Data<AppState>,
    provider: web::Data<IdentityProvider>,
    req: HttpRequest,
    bytes: web::Bytes,
) -> ApiResult<HttpResponse> {
    start(&st, **provider, read_params(&req, &bytes)?).await
}

/// Deprecated (the client secret travels in the URL, seed 003): same as the `POST`.
#[utoipa::path(get, path = "/auth/{provider}", tag = "auth", params(
    ("provider" = IdentityProvider, Path, description = "google, azure, cognito, keycloak"), StartBody),
    responses((status = 302, description = "to the provider's authorization endpoint"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
#[deprecated]
async fn start_get(
    st: web::Data<AppState>,
    provider: web::Data<IdentityProvider>,
    q: web::Query<StartBody>,
) -> ApiResult<HttpResponse> {
    start(&st, **provider, q.into_inner()).await
}

/// The provider's answer, as a query (`GET`) or, for Apple's `response_mode=form_post`, a
/// form (`POST`). Success: 302 to the auth client's redirect URL with `?code=` (and
/// `&mfa=true` when the user has an authenticator app: that code only opens the second step,
/// as after a password login). Failures are 401: `invalid_state` (unknown, used or expired),
/// `provider_error` (the provider refused or the code exchange failed), `invalid_id_token`,
/// `email_not_verified`, `no_account` (no active staff user with that e-mail in the client's
/// company), `identity_mismatch`. Routes: `/auth/google-auth-redirect`,
/// `/auth/apple-oauth-redirect`, `/auth/azure-oauth-redirect`, `/auth/cognito-auth-redirect`,
/// `/auth/keycloak-auth-redirect`, `/auth/facebook-auth-redirect`,
/// `/auth/instagram-auth-redirect`.
#[utoipa::path(method(get, post), path = "/auth/{provider}-auth-redirect", tag = "auth",
    params(("provider" = IdentityProvider, Path), CallbackQuery),
    request_body(content = CallbackQuery, content_type = "application/x-www-form-urlencoded",
        description = "`POST` only (Apple's form_post)"),
    responses((status = 302, description = "to the auth client's redirect URL with `?code=`"),
        (status = 401, body = ErrorBody)))]
async fn callback_route(
    st: web::Data<AppState>,
    provider: web::Data<IdentityProvider>,
    origin: Origin,
    req: HttpRequest,
    bytes: web::Bytes,
) -> ApiResult<HttpResponse> {
    callback(&st, **provider, &origin, read_params(&req, &bytes)?).await
}

/// Parameters from the query string of a `GET`, else from a JSON or form body.
pub(super) fn read_params<T: serde::de::DeserializeOwned>(req: &HttpRequest, bytes: &[u8]) -> ApiResult<T> {
    if req.method() == actix_web::http::Method::GET {
        serde_urlencoded::from_str(req.query_string())
            .map_err(|e| ApiError::bad_request("invalid_query", e.to_string()))
    } else {
        parse_json_or_form(req, bytes)
    }
}

pub(super) fn redirect_to(location: &str) -> HttpResponse {
    HttpResponse::Found()
        .insert_header((header::LOCATION, location))
        .insert_header(header::CacheControl(vec![header::CacheDirective::NoStore]))
        .finish()
}

/// Discovery documents and their JWKS, per issuer, for 5 minutes; an ID token whose signature
/// does not verify makes the next check fetch them again (key rotation at the provider).
static DISCOVERED: LazyLock<moka::sync::Cache<String, CoreProviderMetadata>> =
    LazyLock::new(|| moka::sync::Cache::builder().max_capacity(256).time_to_live(Duration::from_secs(300)).build());

type OidcClient =
    CoreClient<EndpointSet, EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointMaybeSet, EndpointMaybeSet>;
type OAuthClient = oauth2::basic::BasicClient<EndpointSet, EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointSet>;

/// A provider of one auth client, ready to talk to.
struct Upstream {
    provider: IdentityProvider,
    cfg: ProviderConfig,
    secret: Option<String>,
    redirect: RedirectUrl,
    /// The server's outbound client ([`crate::core::net`]): no redirects (an upstream answer never
    /// sends confab elsewhere), and only public addresses, since the issuer and the endpoints
    /// its discovery document names are the tenant's choice.
    http: reqwest::Client,
}

impl Upstream {
    fn of(st: &AppState, client: &ClientRow, provider: IdentityProvider) -> ApiResult<Self> {
        let cfg = stored(&client.oidc).remove(&provider).ok_or_else(|| {
            ApiError::bad_request(
                "provider_not_configured",
                format!("{} is not configured for this client", provider.name()),
            )
        })?;
        let secret = match &cfg.client_secret {
            Some(sealed) => Some(
                String::from_utf8(st.data_key.decrypt(sealed)?)
                    .map_err(|e| ApiError::Internal(anyhow::Error::new(e).context("provider secret")))?,
            ),
            None => None,
        };
        let callback = format!("{}{}", st.config.public_url.trim_end_matches('/'), provider.callback_path());
        let redirect =
            RedirectUrl::new(callback).map_err(|e| ApiError::Internal(anyhow::Error::new(e).context("public URL")))?;
        Ok(Self { provider, cfg, secret, redirect, http: st.http.clone() })
    }

    fn unavailable(&self, what: &str, e: impl std::fmt::Display) -> ApiError {
        tracing::warn!(provider = self.provider.name(), error = %e, "{what}");
        ApiError::BadGateway {
            code: "provider_unavailable",
            message: format!("{} is unavailable", self.provider.name()),
        }
    }

    fn issuer(&self) -> String {
        self.cfg.issuer_url.as_deref().or(self.provider.default_issuer()).unwrap_or_default().to_owned()
    }

    async fn oidc(&self) -> ApiResult<OidcClient> {
        let issuer = self.issuer();
        let meta = match DISCOVERED.get(&issuer) {
            Some(m) => m,
            None => {
                let url = IssuerUrl::new(issuer.clone()).map_err(|e| self.unavailable("issuer URL", e))?;
                let m = CoreProviderMetadata::discover_async(url, &self.http)
                    .await
                    .map_err(|e| self.unavailable("OIDC discovery failed", e))?;
                DISCOVERED.insert(issuer, m.clone());
                m
            }
        };
        // Apple accepts the secret only in the body (`client_secret_post`).
        let post_only = meta.token_endpoint_auth_methods_supported().is_some_and(|m| {
            !m.contains(&CoreClientAuthMethod::ClientSecretBasic) && m.contains(&CoreClientAuthMethod::ClientSecretPost)
        });
        let mut client = CoreClient::from_provider_metadata(
            meta,
            ClientId::new(self.cfg.client_id.clone()),
            self.secret.clone().map(ClientSecret::new),
        )
        .set_redirect_uri(self.redirect.clone());
        if post_only {
            client = client.set_auth_type(openidconnect::AuthType::RequestBody);
        }
        Ok(client)
    }

    fn oauth(&self) -> ApiResult<(OAuthClient, String)> {
        let [auth, token, profile] = self.provider.default_endpoints().unwrap_or_default();
        let pick = |v: &Option<String>, d: &str| v.clone().unwrap_or_else(|| d.to_owned());
        let auth = oauth2::AuthUrl::new(pick(&self.cfg.auth_url, auth)).map_err(|e| self.unavailable("auth URL", e))?;
        let token =
            oauth2::TokenUrl::new(pick(&self.cfg.token_url, token)).map_err(|e| self.unavailable("token URL", e))?;
        let mut client = oauth2::basic::BasicClient::new(ClientId::new(self.cfg.client_id.clone()))
            .set_auth_uri(auth)
            .set_token_uri(token)
            .set_redirect_uri(self.redirect.clone())
            .set_auth_type(oauth2::AuthType::RequestBody);
        if let Some(s) = &self.secret {
            client = client.set_client_secret(ClientSecret::new(s.clone()));
        }
        Ok((client, pick(&self.cfg.profile_url, profile)))
    }

    /// The provider's authorization URL for this state, nonce and PKCE challenge.
    async fn authorize_url(&self, state: &CsrfToken, nonce: &Nonce, pkce: PkceCodeChallenge) -> ApiResult<url::Url> {
        let scopes = self.provider.scopes().iter().map(|s| Scope::new((*s).to_owned()));
        if !self.provider.is_oidc() {
            let (client, _) = self.oauth()?;
            let (url, _) = client.authorize_url(|| state.clone()).add_scopes(scopes).set_pkce_challenge(pkce).url();
            return Ok(url);
        }
        let client = self.oidc().await?;
        let (state, nonce) = (state.clone(), nonce.clone());
        let mut req = client
            .authorize_url(CoreAuthenticationFlow::AuthorizationCode, move || state, move || nonce)
            .add_scopes(scopes)
            .set_pkce_challenge(pkce);
        req = match self.provider {
            IdentityProvider::Apple => req.add_extra_param("response_mode", "form_post"),
            IdentityProvider::Azure => req.add_extra_param("response_mode", "query"),
            _ => req,
        };
        let (url, _, _) = req.url();
        Ok(url)
    }

    /// Exchanges the code and returns who the provider says the user is. Every failure that
    /// is about this login (not about the provider being down) is a 401 code.
    async fn identify(&self, code: String, verifier: String, nonce: Option<String>) -> ApiResult<Identity> {
        let refuse = |code: &'static str, e: &dyn std::fmt::Display| {
            tracing::info!(provider = self.provider.name(), reason = code, error = %e, "upstream login refused");
            ApiError::Unauthorized(code)
        };
        let code = AuthorizationCode::new(code);
        let verifier = PkceCodeVerifier::new(verifier);
        if !self.provider.is_oidc() {
            let (client, profile_url) = self.oauth()?;
            let token = client
                .exchange_code(code)
                .set_pkce_verifier(verifier)
                .request_async(&self.http)
                .await
                .map_err(|e| refuse("provider_error", &e))?;
            return self.profile(&profile_url, token.access_token().secret()).await;
        }
        let client = self.oidc().await?;
        let token = client
            .exchange_code(code)
            .map_err(|e| self.unavailable("no token endpoint", e))?
            .set_pkce_verifier(verifier)
            .request_async(&self.http)
            .await
            .map_err(|e| refuse("provider_error", &e))?;
        let id_token = token.id_token().ok_or_else(|| refuse("invalid_id_token", &"no id_token"))?;
        let nonce = Nonce::new(nonce.unwrap_or_default());
        let claims = match id_token.claims(&client.id_token_verifier(), &nonce) {
            // The provider may have rotated its keys since its JWKS was cached: fetch it again
            // and check once more.
            Err(ClaimsVerificationError::SignatureVerification(_)) => {
                DISCOVERED.invalidate(&self.issuer());
                let fresh = self.oidc().await?;
                id_token.claims(&fresh.id_token_verifier(), &nonce)
            }
            other => other,
        }
        .map_err(|e| refuse("invalid_id_token", &e))?;
        Ok(Identity {
            subject: claims.subject().to_string(),
            email: claims.email().map(|e| e.to_string()),
            email_verified: claims.email_verified() == Some(true),
        })
    }

    /// Facebook's Graph API only returns e-mails the user has confirmed, so a returned e-mail
    /// counts as verified; without one (Instagram never sends one) nobody can be matched.
    async fn profile(&self, url: &str, access_token: &str) -> ApiResult<Identity> {
        #[derive(Deserialize)]
        struct Profile {
            id: serde_json::Value,
            email: Option<String>,
        }
        let res =
            self.http.get(url).bearer_auth(access_token).send().await.map_err(|e| self.unavailable("profile", e))?;
        if !res.status().is_success() {
            tracing::info!(provider = self.provider.name(), status = %res.status(), "profile request refused");
            return Err(ApiError::Unauthorized("provider_error"));
        }
        let p: Profile = res.json().await.map_err(|e| self.unavailable("profile answer", e))?;
        let subject = match p.id {
            serde_json::Value::String(s) => s,
            other => other.to_string(),
        };
        Ok(Identity { subject, email_verified: p.email.is_some(), email: p.email })
    }
}

/// Who an upstream provider (OAuth, OIDC or SAML) says the user is.
pub(super) struct Identity {
    /// The provider's stable id of the account (linked in `oauth_identities`).
    pub subject: String,
    pub email: Option<String>,
    pub email_verified: bool,
}

/// `POST /auth/{provider}`: authenticates the confab client, records the state and answers
/// 302 to the provider.
async fn start(st: &AppState, provider: IdentityProvider, b: StartBody) -> ApiResult<HttpResponse> {
    let client = clients::authenticate(st, &b.client_id, b.client_secret.as_deref()).await?;
    if !client.allows(clients::GRANT_CODE) {
        return Err(ApiError::Unauthorized("unauthorized_client"));
    }
    let challenge = arc::pkce_challenge(&client, b.code_challenge, b.code_challenge_method.as_deref())?;
    let target = redirect_target(&client, b.redirect_url.as_deref())?;
    let upstream = Upstream::of(st, &client, provider)?;
    let (pkce, verifier) = PkceCodeChallenge::new_random_sha256();
    let (state, nonce) = (CsrfToken::new_random(), Nonce::new_random());
    let url = upstream.authorize_url(&state, &nonce, pkce).await?;
    let pending = Pending {
        provider: provider.name(),
        sealed_verifier: st.data_key.encrypt(verifier.secret().as_bytes()),
        nonce: provider.is_oidc().then(|| nonce.secret().clone()),
        redirect: target,
        challenge,
    };
    record_state(st, state.secret(), &client, pending).await?;
    Ok(redirect_to(url.as_str()))
}

/// What a state record remembers until the provider sends the browser back.
pub(super) struct Pending {
    /// `google`, …, or `saml`: the record is claimed only at that provider's callback.
    pub provider: &'static str,
    /// The PKCE verifier towards the provider, sealed with the data key (empty for SAML).
    pub sealed_verifier: String,
    /// OIDC: the nonce; SAML: the AuthnRequest ID the Response must answer (`InResponseTo`).
    pub nonce: Option<String>,
    /// The auth client's redirect URL the confab code goes to.
    pub redirect: String,
    /// The confab client's own PKCE challenge.
    pub challenge: Option<String>,
}

/// Stores the state record (as the state's SHA-256, 10 minutes), deleting expired ones.
pub(super) async fn record_state(st: &AppState, state: &str, client: &ClientRow, p: Pending) -> ApiResult<()> {
    let hash = token_hash(state);
    let client_id = client.client_id.clone();
    st.db.write(move |c| insert_state(c, &hash, &client_id, p)).await
}

/// Deletes the expired state records and stores a new one, keyed by `hash` (the state's
/// SHA-256), for [`STATE_TTL_SECS`].
fn insert_state(c: &mut Db, hash: &str, client_id: &str, p: Pending) -> ApiResult<()> {
    let t = now();
    diesel::delete(oauth_states::table.filter(oauth_states::expires_at.lt(t))).execute(c)?;
    diesel::insert_into(oauth_states::table)
        .values((
            oauth_states::state_hash.eq(hash),
            oauth_states::client_id.eq(client_id),
            oauth_states::provider.eq(p.provider),
            oauth_states::pkce_verifier.eq(p.sealed_verifier),
            oauth_states::nonce.eq(p.nonce),
            oauth_states::redirect_uri.eq(p.redirect),
            oauth_states::code_challenge.eq(p.challenge),
            oauth_states::expires_at.eq(t + ChronoDuration::seconds(STATE_TTL_SECS)),
            oauth_states::created_at.eq(t),
        ))
        .execute(c)?;
    Ok(())
}

/// The requested redirect URL when it is one of the client's, else the client's first.
pub(super) fn redirect_target(client: &ClientRow, wanted: Option<&str>) -> ApiResult<String> {
    let urls = client.redirect_urls();
    match wanted {
        Some(w) => urls
            .into_iter()
            .find(|u| u == w)
            .ok_or_else(|| ApiError::field("redirect_url", "is not one of the client's redirect URLs")),
        None => urls
            .into_iter()
            .next()
            .ok_or_else(|| ApiError::bad_request("no_redirect_url", "the client has no redirect URL")),
    }
}

/// client_id, sealed PKCE verifier, nonce, redirect URL, confab PKCE challenge.
type StateRow = (Option<String>, String, Option<String>, Option<String>, Option<String>);

/// A claimed state record.
pub(super) struct Claimed {
    /// The PKCE verifier towards the provider, still sealed.
    sealed_verifier: String,
    /// OIDC nonce, or the SAML AuthnRequest ID.
    pub nonce: Option<String>,
    redirect: String,
    challenge: Option<String>,
}

/// Claims the state record once: only the request whose `UPDATE … WHERE used_at IS NULL`
/// changes the row goes on; unknown, used, expired and other-provider states are all `None`.
fn claim_state(c: &mut Db, hash: &str, provider: &str) -> ApiResult<Option<StateRow>> {
    let t = now();
    let claimed = diesel::update(
        oauth_states::table
            .find(hash)
            .filter(oauth_states::used_at.is_null())
            .filter(oauth_states::provider.eq(provider))
            .filter(oauth_states::expires_at.gt(t)),
    )
    .set(oauth_states::used_at.eq(t))
    .execute(c)?;
    if claimed == 0 {
        return Ok(None);
    }
    Ok(Some(
        oauth_states::table
            .find(hash)
            .select((
                oauth_states::client_id,
                oauth_states::pkce_verifier,
                oauth_states::nonce,
                oauth_states::redirect_uri,
                oauth_states::code_challenge,
            ))
            .first(c)?,
    ))
}

/// `GET /auth/{provider}-auth-redirect`: see [`callback_route`].
async fn callback(
    st: &AppState,
    provider: IdentityProvider,
    origin: &Origin,
    q: CallbackQuery,
) -> ApiResult<HttpResponse> {
    let (claimed, client) = claim(st, provider.name(), q.state).await?;
    let who = upstream_identity(st, provider, &client, &claimed, q.code, q.error).await;
    finish(st, provider.name(), &client, &claimed, origin, who).await
}

/// Claims the state record made for `provider` (once: unknown, used, expired and
/// other-provider states are all 401 `invalid_state`) and loads its auth client.
pub(super) async fn claim(
    st: &AppState,
    provider: &'static str,
    state: Option<String>,
) -> ApiResult<(Claimed, ClientRow)> {
    let state = state.filter(|s| !s.is_empty()).ok_or(ApiError::Unauthorized("invalid_state"))?;
    let hash = token_hash(&state);
    let row = st.db.write(move |c| claim_state(c, &hash, provider)).await?;
    let Some((Some(client_id), sealed_verifier, nonce, Some(redirect), challenge)) = row else {
        return Err(ApiError::Unauthorized("invalid_state"));
    };
    let client = st
        .db
        .run(move |c| clients::by_client_id(c, &client_id))
        .await?
        .ok_or(ApiError::Unauthorized("invalid_state"))?;
    Ok((Claimed { sealed_verifier, nonce, redirect, challenge }, client))
}

/// The end of every upstream login, OAuth, OIDC and SAML alike: the account with the
/// identity's verified e-mail in the client's company, the confab code through
/// [`arc::issue_code`] like a password login, the audit entry (`oauth_login` or
/// `oauth_login_failed` with the reason), and 302 to the client's redirect URL with `?code=`
/// (and `&mfa=true`).
pub(super) async fn finish(
    st: &AppState,
    provider: &'static str,
    client: &ClientRow,
    claimed: &Claimed,
    origin: &Origin,
    who: ApiResult<Identity>,
) -> ApiResult<HttpResponse> {
    let outcome = match who {
        Ok(who) => account_code(st, provider, client, claimed.challenge.clone(), who, &origin.ip).await,
        Err(e) => Err((None, e)),
    };
    let (ip, company) = (origin.ip.clone(), client.company_id);
    let detail = serde_json::json!({"provider": provider, "client": client.client_id});
    match outcome {
        Ok((user, code, mfa)) => {
            st.db.write(move |c| store::audit(c, Some(company), Some(user), "oauth_login", &ip, detail)).await?;
            let mut url = url::Url::parse(&claimed.redirect)
                .map_err(|e| ApiError::Internal(anyhow::Error::new(e).context("redirect URL")))?;
            url.query_pairs_mut().append_pair("code", &code);
            if mfa {
                url.query_pairs_mut().append_pair("mfa", "true");
            }
            Ok(redirect_to(url.as_str()))
        }
        Err((user, e)) => {
            let (_, reason) = e.status_and_code();
            let mut detail = detail;
            detail["reason"] = reason.into();
            st.db.write(move |c| store::audit(c, Some(company), user, "oauth_login_failed", &ip, detail)).await?;
            Err(e)
        }
    }
}

type Failed = (Option<i64>, ApiError);
/// The user, the confab code and whether it opens the MFA step; or who failed and why.
type LoginOutcome = Result<(i64, String, bool), Failed>;

/// The OAuth/OIDC provider's answer: the code exchanged (with the PKCE verifier) for who the
/// user is.
async fn upstream_identity(
    st: &AppState,
    provider: IdentityProvider,
    client: &ClientRow,
    claimed: &Claimed,
    code: Option<String>,
    error: Option<String>,
) -> ApiResult<Identity> {
    if error.is_some() {
        return Err(ApiError::Unauthorized("provider_error"));
    }
    let code = code.filter(|c| !c.is_empty()).ok_or(ApiError::Unauthorized("provider_error"))?;
    let verifier = String::from_utf8(st.data_key.decrypt(&claimed.sealed_verifier)?)
        .map_err(|e| ApiError::Internal(anyhow::Error::new(e).context("PKCE verifier")))?;
    let upstream = Upstream::of(st, client, provider)?;
    upstream.identify(code, verifier, claimed.nonce.clone()).await
}

/// The account of an upstream identity, then the confab code.
async fn account_code(
    st: &AppState,
    provider: &'static str,
    client: &ClientRow,
    challenge: Option<String>,
    who: Identity,
    ip: &str,
) -> LoginOutcome {
    let fail = |e: ApiError| (None, e);
    if !who.email_verified {
        return Err(fail(ApiError::Unauthorized("email_not_verified")));
    }
    let email = who.email.and_then(|e| Email::try_from(e).ok()).ok_or(fail(ApiError::Unauthorized("no_account")))?;
    let (cl, ip) = (client.clone(), ip.to_owned());
    let (outcome, revoked) = st
        .db
        .write(move |c| -> ApiResult<(LoginOutcome, Vec<String>)> {
            let user = store::find_staff_by_email(c, &email)?
                .filter(|u: &UserRow| u.is_active() && u.company_id == cl.company_id);
            let Some(user) = user else { return Ok((Err(fail(ApiError::Unauthorized("no_account"))), Vec::new())) };
            // The provider verified the e-mail; the account's record of it may not be
            // (README "Account takeover and abuse"): an account nobody proved anything on is
            // claimed, one proven otherwise is not opened by an e-mail it never verified.
            let revoked = match proof::prove(c, user.id, proof::Contact::Email(email.as_str()))? {
                proof::Proof::AlreadyVerified => Vec::new(),
                proof::Proof::Claimed { revoked } => {
                    let detail = serde_json::json!({"via": provider, "contact": "email"});
                    store::audit(c, Some(user.company_id), Some(user.id), "account_claimed", &ip, detail)?;
                    revoked
                }
                proof::Proof::Unproven => {
                    return Ok((Err((Some(user.id), ApiError::Unauthorized("email_not_verified"))), Vec::new()));
                }
            };
            if !link_identity(c, provider, &who.subject, user.id)? {
                return Ok((Err((Some(user.id), ApiError::Unauthorized("identity_mismatch"))), revoked));
            }
            let (code, mfa) = arc::issue_code(c, &cl, &user, challenge)?;
            Ok((Ok((user.id, code, mfa)), revoked))
        })
        .await
        .map_err(fail)?;
    proof::forget(st, revoked);
    outcome
}

/// Remembers which provider account logged in as which user. The first login links; later
/// logins of that provider account must resolve to the same user (a provider account whose
/// e-mail was changed to another user's does not take over that user).
fn link_identity(c: &mut Db, provider: &str, subject: &str, user_id: i64) -> ApiResult<bool> {
    match store::identity_user_id(c, provider, subject)? {
        Some(u) => Ok(u == user_id),
        None => {
            store::link_identity(c, provider, subject, user_id)?;
            Ok(true)
        }
    }
}
