//! Storefront flows by link (auth.md §2.3/§2.4): password reset by e-mailed or texted link
//! (`login/password/reset`, `…/mobile/reset`, `…/reset/token`, `…/reset/forgot`) and contact
//! verification links (`profile/v1.0/{email,mobile}/link/send`, `verify/{email,mobile}`).
//! The link carries a single-use code stored hashed ([`crate::codes::issue_token`]).

use actix_web::{HttpResponse, post, web};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{
    credentials::{AppClient, StoreSession, session_cookie},
    service::{self, Identifier},
    storefront::LoginSuccessView,
    views::{self, EmailBody, MobileBody, phone_from_parts},
};
use crate::{
    auth::{password, proof, service::Origin},
    codes,
    core::{
        error::{ApiError, ApiResult, ErrorBody},
        extract::Json,
        state::AppState,
        types::Email,
    },
    users::{application::ApplicationRow, customer, store},
};

const RESET: &str = "reset_link";
const VERIFY_EMAIL: &str = "verify_email";
const VERIFY_MOBILE: &str = "verify_mobile";

/// A page of the storefront (the application's domain, with the public URL's scheme).
fn storefront_link(st: &AppState, app: &ApplicationRow, page: &str, code: &str) -> String {
    let scheme = if super::credentials::secure_cookies(&st.config) { "https" } else { "http" };
    format!("{scheme}://{}/{page}?code={code}", app.domain)
}

async fn send_link(
    st: &AppState,
    client: &AppClient,
    user_id: i64,
    to: &Identifier,
    purpose: &'static str,
    page: &str,
    what: &str,
) -> ApiResult<()> {
    let (channel, destination) = match to {
        Identifier::Phone(p) => ("sms", p.as_str().to_owned()),
        Identifier::Email(e) => ("email", e.as_str().to_owned()),
    };
    let (key, company_id, dest) = (st.data_key.clone(), client.app.company_id, destination.clone());
    let token = st
        .db
        .write(move |c| {
            let ch = codes::Challenge { company_id, user_id: Some(user_id), channel, destination: &dest, purpose };
            codes::issue_token(c, &key, &ch)
        })
        .await?;
    let link = storefront_link(st, &client.app, page, &token);
    let text = format!("{what} for {}: {link}\nThe link works once, within 15 minutes.", client.settings.display);
    match to {
        Identifier::Phone(_) => crate::providers::send_sms(st, client.app.company_id, &destination, &text).await?,
        Identifier::Email(_) => st.mail.send(&destination, what, &text).await?,
    }
    Ok(())
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StatusView {
    pub status: String,
}

/// `SendResetPasswordEmailRequestSchema`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ResetEmailBody {
    pub email: String,
    pub captcha_code: Option<String>,
}

async fn reset_link(st: &AppState, client: &AppClient, to: Identifier) -> ApiResult<HttpResponse> {
    if !client.settings.forgot_password {
        return Err(ApiError::Denied {
            code: "forgot_password_disabled",
            message: "password reset is disabled for this application".into(),
        });
    }
    let app = client.app.clone();
    let (to, user) = st
        .db
        .run(move |c| {
            let user = service::find_customer(c, &app, &to)?;
            Ok((to, user))
        })
        .await?;
    // The same answer whether or not an account exists (no enumeration); only an active
    // account gets a link, and only at a verified contact (README "Account takeover and
    // abuse": an unverified address may be anyone's).
    if let Some(user) = user.filter(|u| u.is_active()) {
        let (uid, id) = (user.id, to.clone());
        if !st.db.run(move |c| proof::is_verified(c, uid, id.contact())).await? {
            return Ok(HttpResponse::Ok().json(StatusView { status: "sent".into() }));
        }
        // Within the resend window nothing more is sent, and the answer stays the same
        // (a 429 here would tell that the account exists).
        match send_link(st, client, user.id, &to, RESET, "auth/reset-password", "Reset your password").await {
            Ok(()) | Err(ApiError::TooManyRequests { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(HttpResponse::Ok().json(StatusView { status: "sent".into() }))
}

/// `sendResetPasswordEmail`: mails a reset link to an active account; answers `sent` either way.
#[utoipa::path(tag = "fynd-storefront", request_body = ResetEmailBody, responses((status = 200, body = StatusView),
    (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
#[post("/service/application/user/authentication/v1.0/login/password/reset")]
async fn send_reset_password_email(
    client: AppClient,
    st: web::Data<AppState>,
    Json(b): Json<ResetEmailBody>,
) -> ApiResult<HttpResponse> {
    let email = views::email(&b.email, "email")?;
    reset_link(&st, &client, Identifier::Email(email)).await
}

/// `SendResetPasswordMobileRequestSchema`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ResetMobileBody {
    pub mobile: String,
    pub country_code: Option<String>,
    pub captcha_code: Option<String>,
}

/// `sendResetPasswordMobile`: texts a reset link to an active account; answers `sent` either way.
#[utoipa::path(tag = "fynd-storefront", request_body = ResetMobileBody, responses((status = 200, body = StatusView),
    (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
#[post("/service/application/user/authentication/v1.0/login/password/mobile/reset")]
async fn send_reset_password_mobile(
    client: AppClient,
    st: web::Data<AppState>,
    Json(b): Json<ResetMobileBody>,
) -> ApiResult<HttpResponse> {
    let phone = phone_from_parts(b.country_code.as_deref(), &b.mobile, "mobile")?;
    reset_link(&st, &client, Identifier::Phone(phone)).await
}

/// `CodeRequestBodySchema`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct CodeBody {
    pub code: String,
}

fn invalid_code() -> ApiError {
    ApiError::bad_request("invalid_code", "the code is wrong, used or expired")
}

/// `sendResetToken`: checks a reset link's code without using it up.
#[utoipa::path(tag = "fynd-storefront", request_body = CodeBody, responses((status = 200, body = StatusView),
    (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
#[post("/service/application/user/authentication/v1.0/login/password/reset/token")]
async fn send_reset_token(
    client: AppClient,
    st: web::Data<AppState>,
    Json(b): Json<CodeBody>,
) -> ApiResult<HttpResponse> {
    let (key, company_id) = (st.data_key.clone(), client.app.company_id);
    let live = st.db.run(move |c| codes::peek_token(c, &key, company_id, &b.code, RESET)).await?;
    live.ok_or_else(invalid_code)?;
    Ok(HttpResponse::Ok().json(StatusView { status: "success".into() }))
}

/// `ForgotPasswordRequestSchema`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ResetPasswordBody {
    pub code: String,
    pub password: String,
}

/// `forgotPassword`: sets the password with a reset link's code (single use), ends every other
/// session of the user, and logs in (cookie).
#[utoipa::path(tag = "fynd-storefront", request_body = ResetPasswordBody, responses((status = 200, body = LoginSuccessView),
    (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
#[post("/service/application/user/authentication/v1.0/login/password/reset/forgot")]
async fn forgot_password(
    client: AppClient,
    st: web::Data<AppState>,
    origin: Origin,
    Json(b): Json<ResetPasswordBody>,
) -> ApiResult<HttpResponse> {
    let (key, company_id, app_id) = (st.data_key.clone(), client.app.company_id, client.app.id);
    // The code and the password policy are checked before the password is hashed: a wrong
    // code costs no argon2 work (README "Account takeover and abuse").
    let (k, code) = (key.clone(), b.code.clone());
    let (user, email) = st
        .db
        .run(move |c| {
            let (_, user_id, _) = codes::peek_token(c, &k, company_id, &code, RESET)?.ok_or_else(invalid_code)?;
            let user = customer::get(c, company_id, app_id, user_id).map_err(|_| invalid_code())?;
            if !user.is_active() {
                return Err(invalid_code());
            }
            let email = store::primary_email(c, user.id)?.and_then(|e| Email::try_from(e).ok());
            Ok((user, email))
        })
        .await?;
    password::check_new(&b.password, email.as_ref())?;
    let pw = b.password.clone();
    let hash = web::block(move || password::hash(&pw)).await??;
    let (state, ip) = (st.clone(), origin.ip.clone());
    let user = st
        .db
        .write(move |c| {
            // The single-use claim; the code may have been used since it was checked.
            let (user_id, _) = codes::consume_token(c, &key, company_id, &b.code, RESET)?.ok_or_else(invalid_code)?;
            if user_id != user.id {
                return Err(invalid_code());
            }
            store::set_password_hash(c, user.id, &hash)?;
            service::revoke_everything(&state, c, user.id, "password_reset")?;
            store::audit(
                c,
                Some(company_id),
                Some(user.id),
                "password_reset",
                &ip,
                serde_json::json!({"kind": "fynd_link"}),
            )?;
            Ok(user)
        })
        .await?;
    let ttl = client.settings.session_ttl();
    let (_, value) = service::start_session(&st, &client.app, &user, &origin, None, ttl).await?;
    let view = st.db.run(move |c| service::view(c, user, app_id)).await?;
    Ok(HttpResponse::Ok()
        .cookie(session_cookie(&st.config, value, ttl.num_seconds()))
        .json(LoginSuccessView { user: view }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EmailLinkView {
    pub verify_email_link: bool,
}

/// `sendVerificationLinkToEmail`: one of the user's own e-mails (else 404); one link per
/// address every 30 s (429, the per-recipient window of [`codes::throttle`]).
#[utoipa::path(tag = "fynd-storefront", request_body = EmailBody, responses((status = 200, body = EmailLinkView),
    (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
    (status = 429, body = ErrorBody)))]
#[post("/service/application/user/profile/v1.0/email/link/send")]
async fn send_verification_link_to_email(
    s: StoreSession,
    st: web::Data<AppState>,
    Json(b): Json<EmailBody>,
) -> ApiResult<HttpResponse> {
    let email = b.address()?;
    let user = s.user.clone();
    let owned = st
        .db
        .run(move |c| Ok(customer::load(c, user)?.emails.into_iter().any(|e| e.email == b.email.trim().to_lowercase())))
        .await?;
    if !owned {
        return Err(ApiError::NotFound);
    }
    send_link(
        &st,
        &s.client,
        s.user.id,
        &Identifier::Email(email),
        VERIFY_EMAIL,
        "auth/verify-email",
        "Verify your e-mail",
    )
    .await?;
    let mut res = HttpResponse::Ok();
    s.attach(&mut res);
    Ok(res.json(EmailLinkView { verify_email_link: true }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MobileLinkView {
    pub verify_mobile_link: bool,
}

/// `sendVerificationLinkToMobile`: one of the user's own numbers (else 404); one link per
/// number every 30 s (429).
#[utoipa::path(tag = "fynd-storefront", request_body = MobileBody, responses((status = 200, body = MobileLinkView),
    (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
    (status = 429, body = ErrorBody)))]
#[post("/service/application/user/profile/v1.0/mobile/link/send")]
async fn send_verification_link_to_mobile(
    s: StoreSession,
    st: web::Data<AppState>,
    Json(b): Json<MobileBody>,
) -> ApiResult<HttpResponse> {
    let phone = b.number()?;
    let (user, e164) = (s.user.clone(), phone.as_str().to_owned());
    let owned = st.db.run(move |c| Ok(customer::load(c, user)?.phones.into_iter().any(|p| p.e164 == e164))).await?;
    if !owned {
        return Err(ApiError::NotFound);
    }
    send_link(
        &st,
        &s.client,
        s.user.id,
        &Identifier::Phone(phone),
        VERIFY_MOBILE,
        "auth/verify-mobile",
        "Verify your number",
    )
    .await?;
    let mut res = HttpResponse::Ok();
    s.attach(&mut res);
    Ok(res.json(MobileLinkView { verify_mobile_link: true }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct VerifiedView {
    pub message: String,
}

async fn verify_contact(
    st: &AppState,
    client: &AppClient,
    code: String,
    purpose: &'static str,
) -> ApiResult<HttpResponse> {
    let (key, company_id) = (st.data_key.clone(), client.app.company_id);
    st.db
        .write(move |c| {
            let (user_id, destination) =
                codes::consume_token(c, &key, company_id, &code, purpose)?.ok_or_else(invalid_code)?;
            if purpose == VERIFY_EMAIL {
                customer::mark_email_verified(c, user_id, &destination)
            } else {
                customer::mark_phone_verified(c, user_id, &destination)
            }
        })
        .await?;
    Ok(HttpResponse::Ok().json(VerifiedView { message: "verified".into() }))
}

/// `verifyEmail`: the code of a verification link marks that e-mail verified.
#[utoipa::path(tag = "fynd-storefront", request_body = CodeBody, responses((status = 200, body = VerifiedView),
    (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
#[post("/service/application/user/authentication/v1.0/verify/email")]
async fn verify_email(client: AppClient, st: web::Data<AppState>, Json(b): Json<CodeBody>) -> ApiResult<HttpResponse> {
    verify_contact(&st, &client, b.code, VERIFY_EMAIL).await
}

/// `verifyMobile`: the code of a verification link marks that number verified.
#[utoipa::path(tag = "fynd-storefront", request_body = CodeBody, responses((status = 200, body = VerifiedView),
    (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
#[post("/service/application/user/authentication/v1.0/verify/mobile")]
async fn verify_mobile(client: AppClient, st: web::Data<AppState>, Json(b): Json<CodeBody>) -> ApiResult<HttpResponse> {
    verify_contact(&st, &client, b.code, VERIFY_MOBILE).await
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(send_reset_password_email)
        .service(send_reset_password_mobile)
        .service(send_reset_token)
        .service(forgot_password)
        .service(send_verification_link_to_email)
        .service(send_verification_link_to_mobile)
        .service(verify_email)
        .service(verify_mobile);
}

#[derive(utoipa::OpenApi)]
#[openapi(
    paths(
        send_reset_password_email,
        send_reset_password_mobile,
        send_reset_token,
        forgot_password,
        send_verification_link_to_email,
        send_verification_link_to_mobile,
        verify_email,
        verify_mobile
    ),
    components(schemas(
        StatusView,
        ResetEmailBody,
        ResetMobileBody,
        CodeBody,
        ResetPasswordBody,
        EmailLinkView,
        MobileLinkView,
        VerifiedView
    ))
)]
pub struct Api;
