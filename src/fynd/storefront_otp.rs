//! Storefront OTP flows (auth.md §2.3/§2.4): login or registration by mobile or e-mail OTP,
//! forgot password by OTP, and account deletion confirmed by OTP. Codes come from
//! [`crate::codes`] and are delivered through the shared notifier ([`crate::core::notify`]: SMTP when configured, else
//! outbox files).

use actix_web::{HttpResponse, post, web};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{
    credentials::{AppClient, StoreSession, removal_cookie, session_cookie},
    service::{self, Identifier},
    views::{self, UserView, phone_from_parts},
};
use crate::{
    auth::{
        password,
        proof::{self, Contact, Proof},
        service::Origin,
    },
    codes::{self, Challenge},
    core::{
        error::{ApiError, ApiResult, ErrorBody},
        extract::Json,
        state::AppState,
        types::{Email, Phone, now},
    },
    users::{customer, model::UserRow, store},
};

const MOBILE: &str = "mobile";
const EMAIL: &str = "email";
const FORGOT: &str = "forgot";
const FORGOT_TOKEN: &str = "forgot_token";

fn national(p: &Phone) -> String {
    p.as_str().trim_start_matches('+')[p.country_code().to_string().len()..].to_owned()
}

/// Issues a code for `destination` and delivers it (only when `deliver`: the forgot flows
/// answer the same for unknown accounts but send nothing).
async fn send_code(
    st: &AppState,
    client: &AppClient,
    user: Option<&UserRow>,
    to: &Identifier,
    purpose: &'static str,
    deliver: bool,
    android_hash: Option<String>,
) -> ApiResult<String> {
    let (company_id, user_id) = (client.app.company_id, user.map(|u| u.id));
    let (channel, destination) = match to {
        Identifier::Phone(p) => ("sms", p.as_str().to_owned()),
        Identifier::Email(e) => ("email", e.as_str().to_owned()),
    };
    let key = st.data_key.clone();
    let dest = destination.clone();
    let issued = st
        .db
        .write(move |c| codes::issue(c, &key, &Challenge { company_id, user_id, channel, destination: &dest, purpose }))
        .await?;
    if deliver {
        let text = format!("{} is your {} code. It expires in 5 minutes.", issued.code, client.settings.display);
        match to {
            Identifier::Phone(_) => {
                // Android's SMS Retriever reads the app hash from the end of the message.
                let text = match android_hash.filter(|h| !h.trim().is_empty()) {
                    Some(h) => format!("{text}\n{}", h.trim()),
                    None => text,
                };
                crate::providers::send_sms(st, client.app.company_id, &destination, &text).await?
            }
            Identifier::Email(_) => st.mail.send(&destination, "Your verification code", &text).await?,
        }
    }
    Ok(issued.request_id)
}

async fn customer_by(st: &AppState, client: &AppClient, id: Identifier) -> ApiResult<(Identifier, Option<UserRow>)> {
    let app = client.app.clone();
    st.db
        .run(move |c| {
            let user = service::find_customer(c, &app, &id)?;
            Ok((id, user))
        })
        .await
}

/// `SendOtpRequestSchema` / `SendMobileOtpRequestSchema`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct SendMobileOtpBody {
    pub mobile: String,
    pub country_code: Option<String>,
    pub action: Option<String>,
    pub token: Option<String>,
    pub android_hash: Option<String>,
    pub force: Option<String>,
    pub captcha_code: Option<String>,
    pub encrypt_otp: Option<bool>,
}

/// `SendOtp` / `SendOtpSuccess`.
#[derive(Debug, Serialize, ToSchema)]
pub struct SendOtpView {
    pub success: bool,
    pub request_id: String,
    pub message: String,
    pub mobile: String,
    pub country_code: String,
    pub resend_timer: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_exists: Option<bool>,
}

async fn send_mobile(
    st: &AppState,
    client: &AppClient,
    b: SendMobileOtpBody,
    with_exists: bool,
) -> ApiResult<SendOtpView> {
    let phone = phone_from_parts(b.country_code.as_deref(), &b.mobile, "mobile")?;
    let (to, user) = customer_by(st, client, Identifier::Phone(phone.clone())).await?;
    let request_id = send_code(st, client, user.as_ref(), &to, MOBILE, true, b.android_hash).await?;
    Ok(SendOtpView {
        success: true,
        request_id,
        message: "OTP sent".into(),
        mobile: national(&phone),
        country_code: phone.country_code().to_string(),
        resend_timer: codes::RESEND_SECS,
        user_exists: with_exists.then(|| user.is_some_and(|u| u.is_active())),
    })
}

/// `loginWithOTP`: sends a code to the mobile; `otp/mobile/verify` logs in (or, for a new
/// number, answers a `register_token`). 403 `otp_login_disabled` when the application turned
/// OTP login off; 429 within the resend window.
#[utoipa::path(tag = "fynd-storefront", request_body = SendMobileOtpBody, responses((status = 200, body = SendOtpView),
    (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 429, body = ErrorBody)))]
#[post("/service/application/user/authentication/v1.0/login/otp")]
async fn login_with_otp(
    client: AppClient,
    st: web::Data<AppState>,
    Json(b): Json<SendMobileOtpBody>,
) -> ApiResult<HttpResponse> {
    if !client.settings.login.otp {
        return Err(ApiError::Denied {
            code: "otp_login_disabled",
            message: "OTP login is disabled for this application".into(),
        });
    }
    Ok(HttpResponse::Ok().json(send_mobile(&st, &client, b, true).await?))
}

/// `sendOTPOnMobile`.
#[utoipa::path(tag = "fynd-storefront", request_body = SendMobileOtpBody, responses((status = 200, body = SendOtpView),
    (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 429, body = ErrorBody)))]
#[post("/service/application/user/authentication/v1.0/otp/mobile/send")]
async fn send_otp_on_mobile(
    client: AppClient,
    st: web::Data<AppState>,
    Json(b): Json<SendMobileOtpBody>,
) -> ApiResult<HttpResponse> {
    Ok(HttpResponse::Ok().json(send_mobile(&st, &client, b, false).await?))
}

/// `VerifyOtpRequestSchema`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct VerifyOtpBody {
    pub request_id: String,
    pub otp: String,
    pub register_token: Option<String>,
}

/// `VerifyOtpSuccess`.
#[derive(Debug, Serialize, ToSchema)]
pub struct VerifyOtpView {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<UserView>,
    pub user_exists: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub register_token: Option<String>,
}

/// After a verified code to `destination`: the account holding it is logged in (cookie) and
/// the contact marked verified; without an account the answer carries a `register_token`.
/// A code to a contact the account had not verified is a proof from outside it
/// ([`crate::auth::proof`]): it claims an account nobody proved anything on (dropping the
/// password and sessions its registrant set up), and on an account someone else proved it
/// releases the contact and answers as for a new one.
async fn after_verified(st: &AppState, client: &AppClient, origin: &Origin, to: Identifier) -> ApiResult<HttpResponse> {
    let (to, user) = customer_by(st, client, to).await?;
    let destination = match &to {
        Identifier::Phone(p) => p.as_str().to_owned(),
        Identifier::Email(e) => e.as_str().to_owned(),
    };
    let new_account = |st: &AppState| {
        let register_token = codes::register_token(&st.data_key, client.app.id, &destination);
        HttpResponse::Ok().json(VerifyOtpView { user: None, user_exists: false, register_token: Some(register_token) })
    };
    let Some(user) = user else { return Ok(new_account(st)) };
    if !user.is_active() {
        return Err(ApiError::Unauthorized("invalid_credentials"));
    }
    if !client.settings.login.otp {
        return Err(ApiError::Denied {
            code: "otp_login_disabled",
            message: "OTP login is disabled for this application".into(),
        });
    }
    let (uid, app_id, company_id) = (user.id, client.app.id, client.app.company_id);
    let is_phone = matches!(to, Identifier::Phone(_));
    let (dest, ip) = (destination.clone(), origin.ip.clone());
    let outcome = st
        .db
        .write(move |c| {
            let contact = if is_phone { Contact::Phone(&dest) } else { Contact::Email(&dest) };
            let kind = if is_phone { "phone" } else { "email" };
            let revoked = match proof::prove(c, uid, contact)? {
                Proof::AlreadyVerified => Vec::new(),
                Proof::Claimed { revoked } => {
                    let detail = serde_json::json!({"via": "otp", "contact": kind});
                    store::audit(c, Some(company_id), Some(uid), "account_claimed", &ip, detail)?;
                    revoked
                }
                Proof::Unproven => {
                    proof::release(c, uid, contact)?;
                    let detail = serde_json::json!({"via": "otp", "contact": kind});
                    store::audit(c, Some(company_id), Some(uid), "contact_released", &ip, detail)?;
                    return Ok(None);
                }
            };
            // A company-wide contact logging in here becomes this application's customer.
            let mut user = customer::get(c, company_id, app_id, uid)?;
            if user.application_id.is_none() {
                let change = customer::ProfileChange { application_id: Some(app_id), ..Default::default() };
                user = customer::update_profile(c, uid, &change)?;
            }
            Ok(Some((service::view(c, user.clone(), app_id)?, user, revoked)))
        })
        .await?;
    let Some((view, user, revoked)) = outcome else { return Ok(new_account(st)) };
    proof::forget(st, revoked);
    let ttl = client.settings.session_ttl();
    let (_, value) = service::start_session(st, &client.app, &user, origin, None, ttl).await?;
    Ok(HttpResponse::Ok().cookie(session_cookie(&st.config, value, ttl.num_seconds())).json(VerifyOtpView {
        user: Some(view),
        user_exists: true,
        register_token: None,
    }))
}

/// `verifyMobileOTP`: 400 `invalid_otp` for a wrong, used or expired code (5 attempts), and
/// for any code while the number's codes are locked ([`codes::check`]).
#[utoipa::path(tag = "fynd-storefront", request_body = VerifyOtpBody, responses((status = 200, body = VerifyOtpView),
    (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
#[post("/service/application/user/authentication/v1.0/otp/mobile/verify")]
async fn verify_mobile_otp(
    client: AppClient,
    st: web::Data<AppState>,
    origin: Origin,
    Json(b): Json<VerifyOtpBody>,
) -> ApiResult<HttpResponse> {
    let (key, company_id, ip) = (st.data_key.clone(), client.app.company_id, origin.ip.clone());
    let verified = st
        .db
        .write(move |c| codes::check(c, &key, company_id, &b.request_id, &[MOBILE], &b.otp, &ip))
        .await?
        .accepted()?;
    let phone = Phone::try_from(verified.destination)
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("stored destination: {e}")))?;
    after_verified(&st, &client, &origin, Identifier::Phone(phone)).await
}

/// `SendEmailOtpRequestSchema`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct SendEmailOtpBody {
    pub email: String,
    pub action: Option<String>,
    pub token: Option<String>,
    pub register_token: Option<String>,
}

/// `EmailOtpSuccess`.
#[derive(Debug, Serialize, ToSchema)]
pub struct EmailOtpView {
    pub success: bool,
}

/// `sendOTPOnEmail`.
#[utoipa::path(tag = "fynd-storefront", request_body = SendEmailOtpBody, responses((status = 200, body = EmailOtpView),
    (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 429, body = ErrorBody)))]
#[post("/service/application/user/authentication/v1.0/otp/email/send")]
async fn send_otp_on_email(
    client: AppClient,
    st: web::Data<AppState>,
    Json(b): Json<SendEmailOtpBody>,
) -> ApiResult<HttpResponse> {
    let email = views::email(&b.email, "email")?;
    let (to, user) = customer_by(&st, &client, Identifier::Email(email)).await?;
    send_code(&st, &client, user.as_ref(), &to, EMAIL, true, None).await?;
    Ok(HttpResponse::Ok().json(EmailOtpView { success: true }))
}

/// `VerifyEmailOtpRequestSchema`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct VerifyEmailOtpBody {
    pub email: String,
    pub otp: String,
    pub action: Option<String>,
    pub register_token: Option<String>,
}

async fn check_by_destination(
    st: &AppState,
    company_id: i64,
    destination: String,
    purpose: &'static str,
    code: String,
    origin: &Origin,
) -> ApiResult<codes::Verified> {
    let (key, ip) = (st.data_key.clone(), origin.ip.clone());
    st.db
        .write(move |c| match codes::latest_request(c, company_id, &destination, &[purpose])? {
            Some(request_id) => codes::check(c, &key, company_id, &request_id, &[purpose], &code, &ip),
            None => Ok(codes::Checked::Rejected),
        })
        .await?
        .accepted()
}

/// `verifyEmailOTP`: like `verifyMobileOTP`, the challenge named by the e-mail.
#[utoipa::path(tag = "fynd-storefront", request_body = VerifyEmailOtpBody, responses((status = 200, body = VerifyOtpView),
    (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
#[post("/service/application/user/authentication/v1.0/otp/email/verify")]
async fn verify_email_otp(
    client: AppClient,
    st: web::Data<AppState>,
    origin: Origin,
    Json(b): Json<VerifyEmailOtpBody>,
) -> ApiResult<HttpResponse> {
    let email = views::email(&b.email, "email")?;
    check_by_destination(&st, client.app.company_id, email.as_str().to_owned(), EMAIL, b.otp, &origin).await?;
    after_verified(&st, &client, &origin, Identifier::Email(email)).await
}

fn forgot_enabled(client: &AppClient) -> ApiResult<()> {
    if client.settings.forgot_password {
        Ok(())
    } else {
        Err(ApiError::Denied {
            code: "forgot_password_disabled",
            message: "password reset is disabled for this application".into(),
        })
    }
}

/// Who a forgot-password code may go to: an active account, at a contact it verified (README
/// "Account takeover and abuse": an unverified contact may be anyone's). `None` still gets the
/// same answer, and a challenge that can never succeed, but no message.
async fn reset_target(st: &AppState, to: &Identifier, user: Option<UserRow>) -> ApiResult<Option<UserRow>> {
    let Some(user) = user.filter(UserRow::is_active) else { return Ok(None) };
    let (uid, id) = (user.id, to.clone());
    let verified = st.db.run(move |c| proof::is_verified(c, uid, id.contact())).await?;
    Ok(verified.then_some(user))
}

/// `sendForgotOTPOnMobile`: the same answer whether or not the number has an account; the
/// code is only sent to an active account at a verified number.
#[utoipa::path(tag = "fynd-storefront", request_body = SendMobileOtpBody, responses((status = 200, body = SendOtpView),
    (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 429, body = ErrorBody)))]
#[post("/service/application/user/authentication/v1.0/otp/forgot/mobile/send")]
async fn send_forgot_otp_on_mobile(
    client: AppClient,
    st: web::Data<AppState>,
    Json(b): Json<SendMobileOtpBody>,
) -> ApiResult<HttpResponse> {
    forgot_enabled(&client)?;
    let phone = phone_from_parts(b.country_code.as_deref(), &b.mobile, "mobile")?;
    let (to, user) = customer_by(&st, &client, Identifier::Phone(phone.clone())).await?;
    let user = reset_target(&st, &to, user).await?;
    let request_id = send_code(&st, &client, user.as_ref(), &to, FORGOT, user.is_some(), b.android_hash).await?;
    Ok(HttpResponse::Ok().json(SendOtpView {
        success: true,
        request_id,
        message: "OTP sent".into(),
        mobile: national(&phone),
        country_code: phone.country_code().to_string(),
        resend_timer: codes::RESEND_SECS,
        user_exists: None,
    }))
}

/// `VerifyMobileForgotOtpRequestSchema`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct VerifyForgotMobileBody {
    pub request_id: String,
    pub otp: String,
}

/// `VerifyForgotOtpSuccess`.
#[derive(Debug, Serialize, ToSchema)]
pub struct VerifyForgotView {
    pub success: bool,
    /// Single use, 15 minutes: the `code` of `login/password/forgot`.
    pub forgot_token: String,
}

async fn forgot_token(st: &AppState, client: &AppClient, verified: codes::Verified) -> ApiResult<HttpResponse> {
    let Some(user_id) = verified.user_id else {
        return Err(ApiError::bad_request("invalid_otp", "the code is wrong, used or expired"));
    };
    let (key, company_id) = (st.data_key.clone(), client.app.company_id);
    let dest = verified.destination.clone();
    let token = st
        .db
        .write(move |c| {
            let ch = Challenge {
                company_id,
                user_id: Some(user_id),
                channel: "token",
                destination: &dest,
                purpose: FORGOT_TOKEN,
            };
            codes::issue_token(c, &key, &ch)
        })
        .await?;
    Ok(HttpResponse::Ok().json(VerifyForgotView { success: true, forgot_token: token }))
}

/// `verifyMobileForgotOTP`.
#[utoipa::path(tag = "fynd-storefront", request_body = VerifyForgotMobileBody, responses((status = 200, body = VerifyForgotView),
    (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
#[post("/service/application/user/authentication/v1.0/otp/forgot/mobile/verify")]
async fn verify_mobile_forgot_otp(
    client: AppClient,
    st: web::Data<AppState>,
    origin: Origin,
    Json(b): Json<VerifyForgotMobileBody>,
) -> ApiResult<HttpResponse> {
    let (key, company_id, ip) = (st.data_key.clone(), client.app.company_id, origin.ip);
    let verified = st
        .db
        .write(move |c| codes::check(c, &key, company_id, &b.request_id, &[FORGOT], &b.otp, &ip))
        .await?
        .accepted()?;
    forgot_token(&st, &client, verified).await
}

/// `SendEmailForgotOtpRequestSchema`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct SendForgotEmailBody {
    pub email: String,
    pub action: Option<String>,
    pub token: Option<String>,
}

/// `sendForgotOTPOnEmail`: the same answer whether or not the address has an account; the code
/// is only sent to an active account at a verified address.
#[utoipa::path(tag = "fynd-storefront", request_body = SendForgotEmailBody, responses((status = 200, body = EmailOtpView),
    (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 429, body = ErrorBody)))]
#[post("/service/application/user/authentication/v1.0/otp/forgot/email/send")]
async fn send_forgot_otp_on_email(
    client: AppClient,
    st: web::Data<AppState>,
    Json(b): Json<SendForgotEmailBody>,
) -> ApiResult<HttpResponse> {
    forgot_enabled(&client)?;
    let email = views::email(&b.email, "email")?;
    let (to, user) = customer_by(&st, &client, Identifier::Email(email)).await?;
    let user = reset_target(&st, &to, user).await?;
    send_code(&st, &client, user.as_ref(), &to, FORGOT, user.is_some(), None).await?;
    Ok(HttpResponse::Ok().json(EmailOtpView { success: true }))
}

/// `VerifyEmailForgotOtpRequestSchema`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct VerifyForgotEmailBody {
    pub email: String,
    pub otp: String,
}

/// `verifyEmailForgotOTP`.
#[utoipa::path(tag = "fynd-storefront", request_body = VerifyForgotEmailBody, responses((status = 200, body = VerifyForgotView),
    (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
#[post("/service/application/user/authentication/v1.0/otp/forgot/email/verify")]
async fn verify_email_forgot_otp(
    client: AppClient,
    st: web::Data<AppState>,
    origin: Origin,
    Json(b): Json<VerifyForgotEmailBody>,
) -> ApiResult<HttpResponse> {
    let email: Email = views::email(&b.email, "email")?;
    let verified =
        check_by_destination(&st, client.app.company_id, email.as_str().to_owned(), FORGOT, b.otp, &origin).await?;
    forgot_token(&st, &client, verified).await
}

/// `ForgotPasswordRequestSchema`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ForgotPasswordBody {
    pub code: String,
    pub password: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SuccessView {
    pub success: bool,
}

/// `resetForgotPassword`: sets the password with a `forgot_token` (single use) and ends every
/// session of the user; it does not log in.
#[utoipa::path(tag = "fynd-storefront", request_body = ForgotPasswordBody, responses((status = 200, body = SuccessView),
    (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
#[post("/service/application/user/authentication/v1.0/login/password/forgot")]
async fn reset_forgot_password(
    client: AppClient,
    st: web::Data<AppState>,
    origin: Origin,
    Json(b): Json<ForgotPasswordBody>,
) -> ApiResult<HttpResponse> {
    let (key, company_id, app_id) = (st.data_key.clone(), client.app.company_id, client.app.id);
    let invalid = || ApiError::bad_request("invalid_code", "the reset code is wrong, used or expired");
    // The code and the password policy are checked before the password is hashed: a wrong
    // code costs no argon2 work (README "Account takeover and abuse").
    let (k, code) = (key.clone(), b.code.clone());
    let (user, email) = st
        .db
        .run(move |c| {
            let (_, user_id, _) = codes::peek_token(c, &k, company_id, &code, FORGOT_TOKEN)?.ok_or_else(invalid)?;
            let user = customer::get(c, company_id, app_id, user_id).map_err(|_| invalid())?;
            let email = store::primary_email(c, user.id)?.and_then(|e| Email::try_from(e).ok());
            Ok((user, email))
        })
        .await?;
    password::check_new(&b.password, email.as_ref())?;
    let pw = b.password;
    let hash = web::block(move || password::hash(&pw)).await??;
    let state = st.clone();
    st.db
        .write(move |c| {
            // The single-use claim; the code may have been used since it was checked.
            let (user_id, _) = codes::consume_token(c, &key, company_id, &b.code, FORGOT_TOKEN)?.ok_or_else(invalid)?;
            if user_id != user.id {
                return Err(invalid());
            }
            store::set_password_hash(c, user.id, &hash)?;
            service::revoke_everything(&state, c, user.id, "password_reset")?;
            store::audit(
                c,
                Some(company_id),
                Some(user.id),
                "password_reset",
                &origin.ip,
                serde_json::json!({"kind": "fynd"}),
            )
        })
        .await?;
    Ok(HttpResponse::Ok().json(SuccessView { success: true }))
}

/// `DeleteApplicationUserRequestSchema`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct DeleteUserBody {
    pub user_id: views::IdParam,
    pub reason: Option<String>,
    pub reason_id: Option<String>,
    pub request_id: String,
    pub otp: String,
}

/// `deleteUser`: the logged-in user deletes its own account, confirmed by a code sent to one
/// of its numbers (`otp/mobile/send`); `reason_id` must be one of the platform config's
/// `delete_account_reasons` when any are configured. The account can be restored by the
/// platform's `unDeleteUser` within `delete_account_day` days.
#[utoipa::path(tag = "fynd-storefront", request_body = DeleteUserBody, responses((status = 200, body = SuccessView),
    (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
#[post("/service/application/user/authentication/v1.0/delete")]
async fn delete_user(
    s: StoreSession,
    st: web::Data<AppState>,
    origin: Origin,
    Json(b): Json<DeleteUserBody>,
) -> ApiResult<HttpResponse> {
    if b.user_id.id().ok() != Some(s.user.id) {
        return Err(ApiError::Forbidden);
    }
    let reasons = &s.client.settings.delete_account_reasons;
    if !reasons.is_empty() && !reasons.iter().any(|r| Some(&r.reason_id) == b.reason_id.as_ref()) {
        return Err(ApiError::field("reason_id", "must be one of the application's delete_account_reasons"));
    }
    let (key, user) = (st.data_key.clone(), s.user.clone());
    let state = st.clone();
    let reason = serde_json::json!({"reason_id": b.reason_id, "reason": b.reason});
    let deleted = st
        .db
        .write(move |c| {
            let phones: Vec<String> = customer::load(c, user.clone())?.phones.into_iter().map(|p| p.e164).collect();
            let verified = match codes::check(c, &key, user.company_id, &b.request_id, &[MOBILE], &b.otp, &origin.ip)? {
                codes::Checked::Accepted(v) if phones.contains(&v.destination) => v,
                _ => return Ok(false),
            };
            customer::set_status(c, user.id, "deleted", Some(now()))?;
            service::revoke_everything(&state, c, user.id, "account_deleted")?;
            store::audit(
                c,
                Some(user.company_id),
                Some(user.id),
                "fynd_user_deleted",
                &origin.ip,
                serde_json::json!({"request": verified.request_id, "why": reason}),
            )?;
            Ok(true)
        })
        .await?;
    if !deleted {
        return Err(ApiError::bad_request("invalid_otp", "the code is wrong, used or expired"));
    }
    Ok(HttpResponse::Ok().cookie(removal_cookie(&st.config)).json(SuccessView { success: true }))
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(login_with_otp)
        .service(send_otp_on_mobile)
        .service(verify_mobile_otp)
        .service(send_otp_on_email)
        .service(verify_email_otp)
        .service(send_forgot_otp_on_mobile)
        .service(verify_mobile_forgot_otp)
        .service(send_forgot_otp_on_email)
        .service(verify_email_forgot_otp)
        .service(reset_forgot_password)
        .service(delete_user);
}

#[derive(utoipa::OpenApi)]
#[openapi(
    paths(
        login_with_otp,
        send_otp_on_mobile,
        verify_mobile_otp,
        send_otp_on_email,
        verify_email_otp,
        send_forgot_otp_on_mobile,
        verify_mobile_forgot_otp,
        send_forgot_otp_on_email,
        verify_email_forgot_otp,
        reset_forgot_password,
        delete_user
    ),
    components(schemas(
        SendMobileOtpBody,
        SendOtpView,
        VerifyOtpBody,
        VerifyOtpView,
        SendEmailOtpBody,
        EmailOtpView,
        VerifyEmailOtpBody,
        VerifyForgotMobileBody,
        VerifyForgotView,
        SendForgotEmailBody,
        VerifyForgotEmailBody,
        ForgotPasswordBody,
        SuccessView,
        DeleteUserBody
    ))
)]
pub struct Api;
