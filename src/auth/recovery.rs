//! Password reset and the sign-up token flow (CONTRACT §5, ARC `/auth/forget-password`,
//! `/auth/verify-reset-password-link`, `/auth/reset-password`, `/auth/sign-up/*`).
//!
//! Tokens are opaque (256 random bits), e-mailed as links, stored as their SHA-256 in
//! `otp_challenges` through its owner [`crate::codes`] (`purpose` `reset:<client_id>` or
//! `signup`), single use through one `UPDATE … WHERE consumed_at IS NULL`. `forget-password` answers 204 whether or not the account
//! exists; a reset revokes every session of the user.

use actix_web::{HttpRequest, HttpResponse, get, patch, post, web};
use chrono::Duration;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{
    arc::SuccessView,
    clients, password, proof,
    service::{self, Origin, Signup},
};
use crate::{
    codes,
    core::{
        auth::{guard::bearer_token, session},
        crypto::random_token,
        db::Db,
        error::{ApiError, ApiResult, ErrorBody},
        extract::Json,
        state::AppState,
        types::{Email, Phone},
    },
    users::store,
};

pub const RESET_TTL_SECS: i64 = 30 * 60;
pub const SIGNUP_TTL_SECS: i64 = 30 * 60;
/// A new link for the same address at most this often (extra requests are silently dropped).
pub const RESEND_AFTER_SECS: i64 = codes::RESEND_SECS;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(forget_password)
        .service(verify_reset_link)
        .service(reset_password)
        .service(signup_create_token)
        .service(signup_verify_token)
        .service(signup_create_user);
}

#[derive(utoipa::OpenApi)]
#[openapi(
    paths(
        forget_password,
        verify_reset_link,
        reset_password,
        signup_create_token,
        signup_verify_token,
        signup_create_user
    ),
    components(schemas(
        ForgetBody,
        ResetBody,
        SignupTokenBody,
        SignupTokenView,
        CreateUserBody,
        CreatedUserView,
        CreatedUser
    ))
)]
pub struct Api;

/// Stores a link token for `dest`; `None` within the per-recipient resend window
/// ([`crate::codes::throttle`]: one link per address and purpose every [`RESEND_AFTER_SECS`],
/// a capped number an hour). Extra requests are dropped silently: the answer is the same
/// whether or not a mail goes out.
pub(crate) fn store_token(
    c: &mut Db,
    company_id: Option<i64>,
    user_id: Option<i64>,
    dest: &str,
    purpose: &str,
    ttl: i64,
) -> ApiResult<Option<String>> {
    // Staff addresses are unique across companies: one window per address everywhere.
    match codes::throttle(c, None, dest, purpose) {
        Ok(()) => {}
        Err(ApiError::TooManyRequests { .. }) => return Ok(None),
        Err(e) => return Err(e),
    }
    let token = random_token();
    let ch = codes::HashedToken {
        company_id,
        user_id,
        channel: "email",
        destination: dest,
        purpose,
        ttl: Duration::seconds(ttl),
        resend_after: Duration::seconds(RESEND_AFTER_SECS),
    };
    codes::store_hashed(c, &token, &ch)?;
    Ok(Some(token))
}

/// (user id, destination, purpose) of a live token for one of `purposes`.
pub(crate) fn live_token(
    c: &mut Db,
    token: &str,
    purposes: &[String],
) -> ApiResult<Option<(Option<i64>, String, String)>> {
    Ok(codes::live_hashed(c, token)?
        .filter(|t| purposes.contains(&t.purpose))
        .map(|t| (t.user_id, t.destination, t.purpose)))
}

/// Single-use claim of a password-reset token (of any client) that was sent for `user_id`
/// (`PATCH /auth/change-password {resetToken}`); `false` when it is not one.
pub(crate) fn claim_reset_of(c: &mut Db, token: &str, user_id: i64) -> ApiResult<bool> {
    match codes::live_hashed(c, token)? {
        Some(t) if t.purpose.starts_with("reset:") && t.user_id == Some(user_id) => {
            codes::claim_hashed(c, token, &t.purpose)
        }
        _ => Ok(false),
    }
}

fn send_link(st: &AppState, to: String, subject: &'static str, intro: &'static str, path: &'static str, token: String) {
    let link = format!("{}{path}?token={token}", st.config.public_url.trim_end_matches('/'));
    let mail = st.mail.clone();
    actix_web::rt::spawn(async move {
        let body = format!("{intro}\n\n{link}\n\nThe link works once and expires in 30 minutes.\nToken: {token}\n");
        if let Err(e) = mail.send(&to, subject, &body).await {
            tracing::warn!(error = ?e, "link e-mail not delivered");
        }
    });
}

/// ARC `ForgetPasswordDto`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ForgetBody {
    /// The user's e-mail.
    pub username: String,
    pub client_id: String,
    pub client_secret: Option<String>,
}

/// E-mails a reset link to the user of the client's company with this e-mail, if there is one
/// and the address is verified. 204 either way.
#[utoipa::path(tag = "auth", request_body = ForgetBody, responses(
    (status = 204), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
#[post("/auth/forget-password")]
async fn forget_password(
    st: web::Data<AppState>,
    origin: Origin,
    Json(b): Json<ForgetBody>,
) -> ApiResult<HttpResponse> {
    let client = clients::authenticate(&st, &b.client_id, b.client_secret.as_deref()).await?;
    let Ok(email) = Email::try_from(b.username.trim().to_owned()) else {
        return Ok(HttpResponse::NoContent().finish());
    };
    let purpose = format!("reset:{}", client.client_id);
    let (company_id, ip) = (client.company_id, origin.ip.clone());
    let dest = email.as_str().to_owned();
    let token = st
        .db
        .write(move |c| {
            let user = store::find_staff_by_email(c, &email)?.filter(|u| u.company_id == company_id && u.is_active());
            let Some(user) = user else { return Ok(None) };
            // Reset links go only to verified addresses (README "Account takeover and abuse").
            if !proof::is_verified(c, user.id, proof::Contact::Email(email.as_str()))? {
                return Ok(None);
            }
            let token = store_token(c, Some(company_id), Some(user.id), email.as_str(), &purpose, RESET_TTL_SECS)?;
            if token.is_some() {
                store::audit(
                    c,
                    Some(company_id),
                    Some(user.id),
                    "password_reset_requested",
                    &ip,
                    serde_json::json!({}),
                )?;
            }
            Ok(token)
        })
        .await?;
    if let Some(token) = token {
        send_link(
            &st,
            dest,
            "Reset your password",
            "Someone asked to reset your confab password. If it was you, open:",
            "/reset-password",
            token,
        );
    }
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct TokenQuery {
    pub token: String,
}

/// 200 `{success: true}` while the reset link is unused and unexpired, else 401 `invalid_token`.
#[utoipa::path(tag = "auth", params(TokenQuery), responses(
    (status = 200, body = SuccessView), (status = 401, body = ErrorBody)))]
#[get("/auth/verify-reset-password-link")]
async fn verify_reset_link(st: web::Data<AppState>, q: web::Query<TokenQuery>) -> ApiResult<HttpResponse> {
    let token = q.into_inner().token;
    let live =
        st.db.run(move |c| Ok(codes::live_hashed(c, &token)?.is_some_and(|t| t.purpose.starts_with("reset:")))).await?;
    if !live {
        return Err(ApiError::Unauthorized("invalid_token"));
    }
    Ok(HttpResponse::Ok().json(SuccessView { success: true }))
}

/// ARC `ResetPasswordWithClient`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ResetBody {
    pub token: String,
    pub password: String,
    pub client_id: String,
    pub client_secret: Option<String>,
}

/// Sets a new password with a reset token (single use); every session of the user is revoked.
#[utoipa::path(tag = "auth", request_body = ResetBody, responses(
    (status = 204), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
#[patch("/auth/reset-password")]
async fn reset_password(st: web::Data<AppState>, origin: Origin, Json(b): Json<ResetBody>) -> ApiResult<HttpResponse> {
    let client = clients::authenticate(&st, &b.client_id, b.client_secret.as_deref()).await?;
    let purpose = format!("reset:{}", client.client_id);
    let token = b.token.clone();
    let purposes = vec![purpose.clone()];
    let found = st.db.run(move |c| live_token(c, &token, &purposes)).await?;
    let Some((Some(user_id), email, _)) = found else { return Err(ApiError::Unauthorized("invalid_token")) };
    password::check_new(&b.password, Email::try_from(email).ok().as_ref())?;
    let new = b.password;
    let hash = web::block(move || password::hash(&new)).await??;
    let (token, ip) = (b.token, origin.ip.clone());
    let revoked = st
        .db
        .write(move |c| {
            if !codes::claim_hashed(c, &token, &purpose)? {
                return Err(ApiError::Unauthorized("invalid_token"));
            }
            store::set_password_hash(c, user_id, &hash)?;
            let revoked = session::revoke_all(c, user_id, None, "password_reset")?;
            let company = store::company_of(c, user_id)?;
            store::audit(c, company, Some(user_id), "password_reset", &ip, serde_json::json!({}))?;
            Ok(revoked)
        })
        .await?;
    for s in revoked {
        st.sessions.forget(&s);
    }
    Ok(HttpResponse::NoContent().finish())
}

/// ARC `SignupRequestDto`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct SignupTokenBody {
    pub email: String,
    /// Accepted for compatibility; not stored.
    #[schema(value_type = Object)]
    pub data: Option<serde_json::Value>,
}

/// E-mails a sign-up link. 204 whether or not the address already has an account (an existing
/// account gets no mail). 422 `signup_closed` when open sign-up is off.
#[utoipa::path(tag = "auth", request_body = SignupTokenBody, responses(
    (status = 204), (status = 400, body = ErrorBody), (status = 422, body = ErrorBody)))]
#[post("/auth/sign-up/create-token")]
async fn signup_create_token(st: web::Data<AppState>, Json(b): Json<SignupTokenBody>) -> ApiResult<HttpResponse> {
    if !st.config.open_signup {
        return Err(ApiError::unprocessable("signup_closed", "sign-up requires an invitation"));
    }
    let email = Email::try_from(b.email.trim().to_owned()).map_err(|e| ApiError::field("email", e.0))?;
    let dest = email.as_str().to_owned();
    let token = st
        .db
        .write(move |c| {
            if store::email_in_use_by_staff(c, &email)? {
                return Ok(None);
            }
            store_token(c, None, None, email.as_str(), "signup", SIGNUP_TTL_SECS)
        })
        .await?;
    if let Some(token) = token {
        send_link(&st, dest, "Finish signing up", "Open this link to create your confab account:", "/sign-up", token);
    }
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SignupTokenView {
    pub email: String,
}

fn signup_token(req: &HttpRequest) -> ApiResult<String> {
    bearer_token(req).map(str::to_owned).ok_or(ApiError::Unauthorized("invalid_token"))
}

async fn signup_email(st: &AppState, token: String) -> ApiResult<String> {
    let found = st.db.run(move |c| live_token(c, &token, &["signup".to_owned()])).await?;
    found.map(|(_, email, _)| email).ok_or(ApiError::Unauthorized("invalid_token"))
}

/// `Authorization: Bearer <sign-up token>` → the e-mail it was issued for.
#[utoipa::path(tag = "auth", responses((status = 200, body = SignupTokenView), (status = 401, body = ErrorBody)),
    security(("bearer" = [])))]
#[get("/auth/sign-up/verify-token")]
async fn signup_verify_token(st: web::Data<AppState>, req: HttpRequest) -> ApiResult<HttpResponse> {
    let email = signup_email(&st, signup_token(&req)?).await?;
    Ok(HttpResponse::Ok().json(SignupTokenView { email }))
}

/// ARC `LocalUserProfileDto`, plus what a confab account needs.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateUserBody {
    /// Must be the address the token was sent to.
    pub email: String,
    pub password: String,
    #[serde(default)]
    pub first_name: String,
    #[serde(default)]
    pub last_name: String,
    #[schema(value_type = Option<String>)]
    pub phone: Option<Phone>,
    pub company_name: Option<String>,
}

/// Seed 003 answers `LocalUserProfileDto` (`email`, and the `password` the client sent, which
/// confab never echoes: README "Differences from the seeds"); ARC's provider answers
/// `{email, user}`. Both are here, with the new account's ids at the top level as before.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreatedUserView {
    pub email: String,
    pub user: CreatedUser,
    pub user_id: i64,
    pub company_id: i64,
    pub role: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreatedUser {
    pub id: i64,
    pub email: String,
    pub first_name: String,
    pub last_name: String,
    pub company_id: i64,
    pub role: String,
}

/// Creates the account (a new company with this user as admin) with a sign-up token, once.
#[utoipa::path(tag = "auth", request_body = CreateUserBody, responses(
    (status = 200, body = CreatedUserView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
    (status = 409, body = ErrorBody)), security(("bearer" = [])))]
#[post("/auth/sign-up/create-user")]
async fn signup_create_user(
    st: web::Data<AppState>,
    req: HttpRequest,
    origin: Origin,
    Json(b): Json<CreateUserBody>,
) -> ApiResult<HttpResponse> {
    let token = signup_token(&req)?;
    let email = signup_email(&st, token.clone()).await?;
    if !b.email.trim().eq_ignore_ascii_case(&email) {
        return Err(ApiError::field("email", "is not the address the sign-up link was sent to"));
    }
    let email = Email::try_from(email).map_err(|e| ApiError::field("email", e.0))?;
    password::check_new(&b.password, Some(&email))?;
    let t = token.clone();
    if !st.db.write(move |c| codes::claim_hashed(c, &t, "signup")).await? {
        return Err(ApiError::Unauthorized("invalid_token"));
    }
    let created = service::signup(
        &st,
        Signup {
            email: email.clone(),
            password: b.password,
            first_name: b.first_name,
            last_name: b.last_name,
            phone: b.phone,
            company_name: b.company_name,
            invite_token: None,
            email_proven: true,
        },
        &origin,
    )
    .await;
    let user = match created {
        Ok(user) => user,
        Err(e) => {
            // Give the token back: the account was not created.
            st.db.write(move |c| codes::unclaim_hashed(c, &token)).await?;
            return Err(e);
        }
    };
    Ok(HttpResponse::Ok().json(CreatedUserView {
        email: email.as_str().to_owned(),
        user: CreatedUser {
            id: user.id,
            email: email.as_str().to_owned(),
            first_name: user.first_name.clone(),
            last_name: user.last_name.clone(),
            company_id: user.company_id,
            role: user.role.clone(),
        },
        user_id: user.id,
        company_id: user.company_id,
        role: user.role,
    }))
}
