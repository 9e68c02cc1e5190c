//! Storefront credentials (CONTRACT §9): the application authenticates with
//! `Authorization: Bearer base64(applicationId:applicationToken)` ([`AppClient`]); the end
//! user's session travels in the `f.session` cookie ([`StoreSession`]). The cookie value has
//! express-session's shape, `s%3A<session id>.<signature>`, the signature an HMAC of the id
//! with the data key, so a forged or altered cookie is rejected before any lookup.

use std::{future::Future, pin::Pin};

use actix_web::{
    FromRequest, HttpRequest, HttpResponseBuilder,
    cookie::{Cookie, SameSite, time::Duration as CookieDuration},
    dev::Payload,
    web::Data,
};

use super::{config::Settings, store};
use crate::{
    core::{
        auth::{
            guard::{Admin, bearer_token, credential_pair},
            session::{self, Principal},
        },
        config::Config,
        crypto::{DataKey, constant_time_eq, token_hash},
        error::{ApiError, ApiResult},
        state::AppState,
        types::now,
    },
    users::{application, application::ApplicationRow, model::UserRow},
};

pub const COOKIE: &str = "f.session";

/// An authenticated application (sales channel) and its platform configuration.
#[derive(Debug, Clone)]
pub struct AppClient {
    pub app: ApplicationRow,
    pub settings: Settings,
}

fn app_credentials(req: &HttpRequest) -> ApiResult<(i64, String)> {
    let invalid = || ApiError::Unauthorized("invalid_application_token");
    bearer_token(req).ok_or(ApiError::Unauthorized("application_token_required"))?;
    let (id, token) = credential_pair(req, "bearer").ok_or_else(invalid)?;
    Ok((id.trim().parse().map_err(|_| invalid())?, token))
}

/// The application of a platform route (`…/company/{company_id}/application/{application_id}`,
/// CONTRACT §9) and the admin calling it. Only an admin of that company gets it: another
/// company's id, an unknown application or a malformed id is 404, as if it did not exist.
#[derive(Debug, Clone)]
pub struct PlatformApp {
    pub app: ApplicationRow,
    pub admin: Principal,
}

impl FromRequest for PlatformApp {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = ApiResult<Self>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            let Admin(admin) = Admin::extract(&req).await?;
            let id = |name: &str| -> ApiResult<i64> {
                req.match_info().get(name).and_then(|v| v.trim().parse().ok()).ok_or(ApiError::NotFound)
            };
            let (company_id, application_id) = (id("company_id")?, id("application_id")?);
            if company_id != admin.company_id {
                return Err(ApiError::NotFound);
            }
            let app = state(&req)?.db.run(move |c| application::get(c, company_id, application_id)).await?;
            Ok(Self { app, admin })
        })
    }
}

/// Checks an application credential: the token's hash must equal the stored one
/// (constant-time); any mismatch, unknown id or malformed header is 401.
pub async fn authenticate_app(st: &AppState, req: &HttpRequest) -> ApiResult<AppClient> {
    let (id, token) = app_credentials(req)?;
    let app = st.db.run(move |c| application::find_for_credential(c, id)).await?;
    let hash = token_hash(&token);
    match app {
        Some(app) if constant_time_eq(app.token_hash.as_bytes(), hash.as_bytes()) => {
            let settings = Settings::of(&app)?;
            Ok(AppClient { app, settings })
        }
        _ => Err(ApiError::Unauthorized("invalid_application_token")),
    }
}

fn state(req: &HttpRequest) -> ApiResult<Data<AppState>> {
    req.app_data::<Data<AppState>>().cloned().ok_or_else(|| ApiError::Internal(anyhow::anyhow!("no app state")))
}

impl FromRequest for AppClient {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = ApiResult<Self>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move { authenticate_app(&*state(&req)?, &req).await })
    }
}

/// HMAC of the session id, domain-separated from the data key's other signatures.
fn signature(key: &DataKey, session_id: &str) -> String {
    key.sign(format!("f.session:{session_id}").as_bytes())
}

/// The signed cookie value for a session id.
pub fn cookie_value(key: &DataKey, session_id: &str) -> String {
    format!("s%3A{session_id}.{}", signature(key, session_id))
}

/// The session id in a cookie value, when its signature is ours. Accepts the value raw or
/// percent-decoded.
pub fn session_id(key: &DataKey, value: &str) -> Option<String> {
    let v = value.strip_prefix("s%3A").or_else(|| value.strip_prefix("s%3a")).or_else(|| value.strip_prefix("s:"))?;
    let (sid, sig) = v.split_once('.')?;
    constant_time_eq(signature(key, sid).as_bytes(), sig.as_bytes()).then(|| sid.to_owned())
}

fn https(config: &Config) -> bool {
    config.public_url.trim().to_ascii_lowercase().starts_with("https://")
}

/// The `f.session` cookie: HttpOnly always; `Secure; SameSite=None` behind https (a storefront
/// on another origin can send it), `SameSite=Lax` otherwise (CONTRACT §9).
pub fn session_cookie(config: &Config, value: String, max_age_secs: i64) -> Cookie<'static> {
    let secure = https(config);
    Cookie::build(COOKIE, value)
        .path("/")
        .http_only(true)
        .secure(secure)
        .same_site(if secure { SameSite::None } else { SameSite::Lax })
        .max_age(CookieDuration::seconds(max_age_secs.max(0)))
        .finish()
}

/// Expires the cookie in the browser (logout).
pub fn removal_cookie(config: &Config) -> Cookie<'static> {
    let mut c = session_cookie(config, String::new(), 0);
    c.make_removal();
    c
}

pub fn secure_cookies(config: &Config) -> bool {
    https(config)
}

/// A logged-in storefront user: the application's credential plus a live `f.session` cookie
/// of that application. A rolling session's expiry moves forward on use and the refreshed
/// cookie is sent back through [`StoreSession::attach`].
#[derive(Debug, Clone)]
pub struct StoreSession {
    pub client: AppClient,
    pub user: UserRow,
    pub session_id: String,
    rolled: Option<Cookie<'static>>,
}

impl StoreSession {
    /// Adds the refreshed cookie of a rolling session to a response.
    pub fn attach(&self, res: &mut HttpResponseBuilder) {
        if let Some(c) = &self.rolled {
            res.cookie(c.clone());
        }
    }
}

/// Rolling sessions are extended at most once a minute, so reads stay reads.
const ROLL_EVERY: chrono::Duration = chrono::Duration::seconds(60);

async fn resolve_session(req: HttpRequest) -> ApiResult<StoreSession> {
    let st = state(&req)?;
    let client = authenticate_app(&st, &req).await?;
    let unauthenticated = || ApiError::Unauthorized("unauthenticated");
    let cookie = req.cookie(COOKIE).ok_or_else(unauthenticated)?;
    let sid = session_id(&st.data_key, cookie.value()).ok_or_else(unauthenticated)?;
    let (company_id, app_id) = (client.app.company_id, client.app.id);
    let lookup = sid.clone();
    let (session, user) =
        st.db.run(move |c| store::live(c, &lookup, company_id, app_id)).await?.ok_or_else(unauthenticated)?;
    let mut rolled = None;
    if client.settings.session_config.is_rolling && now() - session.last_seen_at > ROLL_EVERY {
        let ttl = client.settings.session_ttl();
        let (id, expires) = (sid.clone(), now() + ttl);
        st.db.write(move |c| session::roll(c, &id, expires)).await?;
        rolled = Some(session_cookie(&st.config, cookie_value(&st.data_key, &sid), ttl.num_seconds()));
    }
    Ok(StoreSession { client, user, session_id: sid, rolled })
}

impl FromRequest for StoreSession {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = ApiResult<Self>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        Box::pin(resolve_session(req.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookie_values_are_signed() {
        let key = DataKey::from_bytes([3; 32]);
        let v = cookie_value(&key, "abc");
        assert!(v.starts_with("s%3Aabc."));
        assert_eq!(session_id(&key, &v).as_deref(), Some("abc"));
        assert_eq!(session_id(&key, &v.replacen("s%3A", "s:", 1)).as_deref(), Some("abc"));
        assert_eq!(session_id(&key, &v.replacen("abc", "abd", 1)), None);
        assert_eq!(session_id(&DataKey::from_bytes([4; 32]), &v), None);
    }
}
