//! Account routes of the messaging family (CONTRACT §3 sign-up and login) and the token routes
//! every family shares (CONTRACT §5): refresh, logout, me, JWKS.

use actix_web::{HttpResponse, get, post, web};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::service::{self, Issued, Origin, Signup};
use crate::{
    core::{
        auth::guard::AuthUser,
        error::{ApiResult, ErrorBody},
        extract::{Json, parse},
        state::AppState,
        types::{Email, Phone},
    },
    users::store,
};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(signup)
        .service(verify_signup)
        .service(login)
        .service(token_refresh)
        .service(logout)
        .service(me)
        .service(jwks);
}

#[derive(utoipa::OpenApi)]
#[openapi(
    paths(signup, verify_signup, login, token_refresh, logout, me, jwks),
    components(schemas(
        SignupBody,
        SignupView,
        VerifySignupBody,
        VerifiedView,
        LoginBody,
        LoginRequest,
        LoginView,
        LoginUserView,
        TokenView,
        RefreshBody,
        MeView,
        LogoutView
    ))
)]
pub struct Api;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SignupBody {
    #[schema(value_type = String, format = "email")]
    pub email: Email,
    pub password: String,
    pub first_name: String,
    pub last_name: String,
    /// International format; normalised to E.164.
    #[schema(value_type = String, example = "+94717936775")]
    pub phone: Phone,
    pub company_name: Option<String>,
    pub invite_token: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SignupView {
    pub user_id: i64,
    pub first_name: String,
    pub last_name: String,
    pub phone: String,
}

/// CONTRACT §3: without an invite a new company is created with this user as its admin,
/// *pending* until `POST /auth/signup/verify` with the token mailed to the address (the answer
/// keeps the seed's shape); with `inviteToken` the user joins the inviting company at once (the
/// invite's e-mail must match; the mailed invitation proves the address). 429 when a sign-up
/// for the address mailed a verification token in the last 30 s.
#[utoipa::path(tag = "auth", request_body = SignupBody, responses(
    (status = 201, body = SignupView), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody),
    (status = 422, body = ErrorBody), (status = 429, body = ErrorBody)))]
#[post("/auth/signup")]
async fn signup(st: web::Data<AppState>, origin: Origin, Json(b): Json<SignupBody>) -> ApiResult<HttpResponse> {
    let phone = b.phone.as_str().to_owned();
    let user = service::signup(
        &st,
        Signup {
            email: b.email,
            password: b.password,
            first_name: b.first_name,
            last_name: b.last_name,
            phone: Some(b.phone),
            company_name: b.company_name,
            invite_token: b.invite_token,
            email_proven: false,
        },
        &origin,
    )
    .await?;
    Ok(HttpResponse::Created().json(SignupView {
        user_id: user.id,
        first_name: user.first_name,
        last_name: user.last_name,
        phone,
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct VerifySignupBody {
    /// The token of the "Confirm your e-mail address" mail.
    pub token: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct VerifiedView {
    pub user_id: i64,
    pub email: String,
    pub email_verified: bool,
}

/// Activates a pending sign-up (issue 17): the token works once, for 60 minutes. 401
/// `invalid_token` when unknown, used or expired; 409 `email_taken` when another account
/// proved the address first.
#[utoipa::path(tag = "auth", request_body = VerifySignupBody, responses(
    (status = 200, body = VerifiedView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
    (status = 409, body = ErrorBody)))]
#[post("/auth/signup/verify")]
async fn verify_signup(
    st: web::Data<AppState>,
    origin: Origin,
    Json(b): Json<VerifySignupBody>,
) -> ApiResult<HttpResponse> {
    let user = service::verify_signup(&st, b.token.trim().to_owned(), &origin).await?;
    let email = st.db.run(move |c| store::primary_email(c, user.id)).await?.unwrap_or_default();
    Ok(HttpResponse::Ok().json(VerifiedView { user_id: user.id, email, email_verified: true }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LoginBody {
    #[schema(value_type = String, format = "email")]
    pub email: Email,
    pub password: String,
    /// The second factor of an account with an authenticator app: a current 6-digit code or an
    /// unused recovery code. Without it such an account answers 401 `mfa_required`; a wrong
    /// one 401 `invalid_otp` (five wrong codes lock the second factor, README "Security").
    #[serde(default)]
    pub otp: Option<String>,
}

/// The two bodies `POST /auth/login` accepts, told apart by `client_id`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum LoginRequest {
    Arc(super::arc::ArcLoginBody),
    Messaging(LoginBody),
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LoginUserView {
    pub user_id: i64,
    pub first_name: String,
    pub last_name: String,
    pub phone: Option<String>,
    pub email: Option<String>,
    pub role: String,
    pub company_id: i64,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LoginView {
    pub access_token: String,
    pub refresh_token: String,
    /// Access-token expiry, epoch milliseconds.
    pub expires: i64,
    pub user: LoginUserView,
}

/// TokenResponse of the ARC seed; `pubnubToken` is always absent (there is no PubNub).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenView {
    pub access_token: String,
    pub refresh_token: String,
    pub expires: i64,
}

impl From<Issued> for TokenView {
    fn from(i: Issued) -> Self {
        Self { access_token: i.access_token, refresh_token: i.refresh_token, expires: i.expires }
    }
}

/// CONTRACT §3 login of the messaging family. A wrong password, an unknown e-mail and an
/// inactive account all answer the same 401 `invalid_credentials`.
///
/// A body with `client_id` is instead ARC's code-flow login (CONTRACT §5): `{client_id,
/// client_secret, username, password}` → `{code}` for `POST /auth/token`.
#[utoipa::path(tag = "auth", request_body = LoginRequest, responses(
    (status = 200, body = LoginView), (status = 200, body = super::arc::CodeView), (status = 401, body = ErrorBody)))]
#[post("/auth/login")]
async fn login(
    st: web::Data<AppState>,
    origin: Origin,
    Json(body): Json<serde_json::Value>,
) -> ApiResult<HttpResponse> {
    let bytes = serde_json::to_vec(&body).map_err(anyhow::Error::from)?;
    if body.get("client_id").is_some() {
        return super::arc::code_login(&st, &origin, parse(&bytes)?).await;
    }
    let b: LoginBody = parse(&bytes)?;
    let (user, issued) = service::login(&st, b.email, b.password, b.otp, &origin).await?;
    let person = st.db.run(move |c| store::person(c, user)).await?;
    Ok(HttpResponse::Ok().json(LoginView {
        access_token: issued.access_token,
        refresh_token: issued.refresh_token,
        expires: issued.expires,
        user: LoginUserView {
            user_id: person.user.id,
            role: person.user.role.clone(),
            company_id: person.user.company_id,
            first_name: person.user.first_name,
            last_name: person.user.last_name,
            phone: person.phone,
            email: person.email,
        },
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RefreshBody {
    pub refresh_token: String,
}

/// Rotates the refresh token (single use). Presenting a used one revokes the whole session.
#[utoipa::path(tag = "auth", request_body = RefreshBody, responses(
    (status = 200, body = TokenView), (status = 401, body = ErrorBody)))]
#[post("/auth/token-refresh")]
async fn token_refresh(st: web::Data<AppState>, origin: Origin, Json(b): Json<RefreshBody>) -> ApiResult<HttpResponse> {
    let issued = service::refresh(&st, b.refresh_token, &origin).await?;
    Ok(HttpResponse::Ok().json(TokenView::from(issued)))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LogoutView {
    pub success: bool,
    /// The user whose session ended.
    pub key: i64,
}

/// Ends the caller's session (bearer required); its access and refresh tokens stop working.
#[utoipa::path(tag = "auth", responses((status = 200, body = LogoutView), (status = 401, body = ErrorBody)),
    security(("bearer" = [])))]
#[post("/logout")]
async fn logout(st: web::Data<AppState>, user: AuthUser, origin: Origin) -> ApiResult<HttpResponse> {
    service::logout(&st, &user, &origin).await?;
    Ok(HttpResponse::Ok().json(LogoutView { success: true, key: user.user_id }))
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MeView {
    pub id: i64,
    pub user_id: i64,
    pub email: Option<String>,
    pub first_name: String,
    pub last_name: String,
    pub role: String,
    pub company_id: i64,
    pub application_ids: Vec<i64>,
}

/// CONTRACT §5 `GET /auth/me`.
#[utoipa::path(tag = "auth", responses((status = 200, body = MeView), (status = 401, body = ErrorBody)),
    security(("bearer" = [])))]
#[get("/auth/me")]
async fn me(st: web::Data<AppState>, user: AuthUser) -> ApiResult<HttpResponse> {
    let (company_id, user_id) = (user.company_id, user.user_id);
    let (person, application_ids) = st
        .db
        .run(move |c| {
            let row = store::get(c, company_id, user_id)?;
            Ok((store::person(c, row)?, store::application_ids(c, company_id)?))
        })
        .await?;
    Ok(HttpResponse::Ok().json(MeView {
        id: person.user.id,
        user_id: person.user.id,
        email: person.email,
        role: person.user.role.clone(),
        company_id: person.user.company_id,
        first_name: person.user.first_name,
        last_name: person.user.last_name,
        application_ids,
    }))
}

/// Public keys that verify access tokens (RFC 7517).
#[utoipa::path(tag = "auth", responses((status = 200, description = "JWK set", body = Object)))]
#[get("/.well-known/jwks.json")]
async fn jwks(st: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().insert_header(("Cache-Control", "public, max-age=300")).json(st.keys.jwks())
}
