//! Fynd storefront (application) user API, CONTRACT §9, seed 002 and reference auth.md §2.3:
//! the application authenticates with its credential ([`AppClient`]), the end user with the
//! `f.session` cookie ([`StoreSession`]). `?platform=` is accepted and ignored: the
//! application is always the one whose credential is presented.

use actix_web::{HttpResponse, HttpResponseBuilder, delete, get, patch, post, put, web};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use super::{
    config,
    credentials::{AppClient, StoreSession, removal_cookie, session_cookie},
    service::{self, NewCustomer},
    views::{self, EmailBody, MobileBody, UserView, phone_from_parts},
};
use crate::{
    auth::{password, service::Origin},
    core::{
        auth::session,
        db::Db,
        error::{ApiError, ApiResult, ErrorBody},
        extract::Json,
        state::AppState,
    },
    users::{
        customer::{self, NewContact, ProfileChange},
        model::UserRow,
        store,
    },
};

fn ok(s: &StoreSession) -> HttpResponseBuilder {
    let mut res = HttpResponse::Ok();
    s.attach(&mut res);
    res
}

async fn user_view(st: &AppState, s: &StoreSession) -> ApiResult<UserView> {
    let (company_id, app_id, user_id) = (s.client.app.company_id, s.client.app.id, s.user.id);
    st.db
        .run(move |c| {
            let user = customer::get(c, company_id, app_id, user_id)?;
            service::view(c, user, app_id)
        })
        .await
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct PasswordLoginBody {
    /// An e-mail, or a mobile number in international form.
    pub username: String,
    pub password: String,
    pub captcha_code: Option<String>,
}

/// `LoginSuccess`.
#[derive(Debug, Serialize, ToSchema)]
pub struct LoginSuccessView {
    pub user: UserView,
}

/// `loginWithEmailAndPassword`: sets the `f.session` cookie. Unknown user, wrong password,
/// blocked, archived or deleted accounts and an account locked after 5 wrong passwords
/// ([`service::password_login`]) all answer 401 `invalid_credentials`; a disabled method is 403
/// `password_login_disabled`.
#[utoipa::path(tag = "fynd-storefront", request_body = PasswordLoginBody, responses((status = 200, body = LoginSuccessView),
    (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
#[post("/service/application/user/authentication/v1.0/login/password")]
async fn login_with_password(
    client: AppClient,
    st: web::Data<AppState>,
    origin: Origin,
    Json(b): Json<PasswordLoginBody>,
) -> ApiResult<HttpResponse> {
    let (user, row, value) = service::password_login(&st, &client, &b.username, b.password, &origin).await?;
    let app_id = client.app.id;
    let user = st.db.run(move |c| service::view(c, user, app_id)).await?;
    let max_age = (row.expires_at - row.last_seen_at).num_seconds();
    Ok(HttpResponse::Ok().cookie(session_cookie(&st.config, value, max_age)).json(LoginSuccessView { user }))
}

/// `TokenRequestBodySchema`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct TokenLoginBody {
    pub token: String,
}

/// `loginWithToken`: the hand-over of a session the platform API made. The merchant's backend
/// calls `createUserSession` and passes its `cookie["f.session"]` value to its storefront,
/// which posts it here as `token`; the answer is `LoginSuccess` with the browser's own
/// `f.session` cookie. The token is single use: the exchange ends the handed-over session
/// (one atomic update) and opens a new one with the same expiry. A forged, spent or expired
/// token, another application's, or an inactive user's is 401 `invalid_token`.
#[utoipa::path(tag = "fynd-storefront", request_body = TokenLoginBody, responses((status = 200, body = LoginSuccessView),
    (status = 401, body = ErrorBody)))]
#[post("/service/application/user/authentication/v1.0/login/token")]
async fn login_with_token(
    client: AppClient,
    st: web::Data<AppState>,
    origin: Origin,
    Json(b): Json<TokenLoginBody>,
) -> ApiResult<HttpResponse> {
    let invalid = || ApiError::Unauthorized("invalid_token");
    let sid = super::credentials::session_id(&st.data_key, b.token.trim()).ok_or_else(invalid)?;
    let (company_id, app_id) = (client.app.company_id, client.app.id);
    let handed = st
        .db
        .write(move |c| {
            let Some((row, user)) = super::store::live(c, &sid, company_id, app_id)? else { return Ok(None) };
            Ok(session::revoke_of_user(c, user.id, &sid, "login_token_exchanged")?.then_some((row, user)))
        })
        .await?;
    let (row, user) = handed.ok_or_else(invalid)?;
    let ttl = (row.expires_at - crate::core::types::now()).max(chrono::Duration::seconds(1));
    let (_, value) = service::start_session(&st, &client.app, &user, &origin, row.domain, ttl).await?;
    let user = st.db.run(move |c| service::view(c, user, app_id)).await?;
    Ok(HttpResponse::Ok().cookie(session_cookie(&st.config, value, ttl.num_seconds())).json(LoginSuccessView { user }))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct RegisterPhoneBody {
    pub country_code: Option<String>,
    pub mobile: String,
}

/// `FormRegisterRequestSchema`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct FormRegisterBody {
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub gender: Option<String>,
    pub email: Option<String>,
    pub password: String,
    pub phone: Option<RegisterPhoneBody>,
    pub register_token: Option<String>,
}

/// `RegisterFormSuccess`.
#[derive(Debug, Serialize, ToSchema)]
pub struct RegisterFormView {
    pub success: bool,
    pub user_exists: bool,
    pub verify_email_otp: bool,
    pub verify_mobile_otp: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mobile: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub country_code: Option<String>,
    pub message: String,
}

/// `registerWithForm`: creates the customer with a password and logs it in (cookie). The
/// platform config's `register` switch and `register_required_fields` apply; a WhatsApp
/// contact with the same phone becomes this account (one identity) when `register_token`
/// proves the phone; otherwise an existing account is 409 `user_exists`. A contact is verified when `register_token` (from a verified
/// OTP) vouches for it, else it stays unverified.
#[utoipa::path(tag = "fynd-storefront", request_body = FormRegisterBody, responses((status = 200, body = RegisterFormView),
    (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
#[post("/service/application/user/authentication/v1.0/register/form")]
async fn register_with_form(
    client: AppClient,
    st: web::Data<AppState>,
    origin: Origin,
    Json(b): Json<FormRegisterBody>,
) -> ApiResult<HttpResponse> {
    if !client.settings.register {
        return Err(ApiError::Denied {
            code: "registration_disabled",
            message: "registration is disabled for this application".into(),
        });
    }
    let email = b.email.as_deref().filter(|e| !e.trim().is_empty()).map(|e| views::email(e, "email")).transpose()?;
    let phone = b
        .phone
        .as_ref()
        .filter(|p| !p.mobile.trim().is_empty())
        .map(|p| phone_from_parts(p.country_code.as_deref(), &p.mobile, "phone.mobile"))
        .transpose()?;
    if email.is_none() && client.settings.email_required() {
        return Err(ApiError::field("email", "is required"));
    }
    if phone.is_none() && client.settings.mobile_required() {
        return Err(ApiError::field("phone.mobile", "is required"));
    }
    if email.is_none() && phone.is_none() {
        return Err(ApiError::field("email", "an e-mail or a mobile number is required"));
    }
    password::check_new(&b.password, email.as_ref())?;
    let pw = b.password.clone();
    let hash = web::block(move || password::hash(&pw)).await??;
    // A register_token from a verified OTP marks that contact verified (auth.md §2.4).
    let vouched =
        b.register_token.as_deref().and_then(|t| crate::codes::verified_destination(&st.data_key, client.app.id, t));
    let n = NewCustomer {
        phone: phone.clone(),
        email: email.clone(),
        phone_verified: vouched.is_some() && vouched.as_deref() == phone.as_ref().map(|p| p.as_str()),
        email_verified: vouched.is_some() && vouched.as_deref() == email.as_ref().map(|e| e.as_str()),
        first_name: b.first_name.map(|s| s.trim().to_owned()),
        last_name: b.last_name.map(|s| s.trim().to_owned()),
        gender: b.gender,
        password_hash: Some(hash),
        ..Default::default()
    };
    let app = client.app.clone();
    let ip = origin.ip.clone();
    let user = st
        .db
        .write(move |c| {
            let user = service::create_or_adopt(c, &app, &n)?;
            store::audit(
                c,
                Some(app.company_id),
                Some(user.id),
                "signup",
                &ip,
                serde_json::json!({"kind": "fynd", "application": app.id}),
            )?;
            Ok(user)
        })
        .await?;
    let ttl = client.settings.session_ttl();
    let (_, value) = service::start_session(&st, &client.app, &user, &origin, None, ttl).await?;
    Ok(HttpResponse::Ok().cookie(session_cookie(&st.config, value, ttl.num_seconds())).json(RegisterFormView {
        success: true,
        user_exists: false,
        verify_email_otp: false,
        verify_mobile_otp: false,
        email: email.map(String::from),
        mobile: phone
            .as_ref()
            .map(|p| p.as_str().trim_start_matches('+')[p.country_code().to_string().len()..].to_owned()),
        country_code: phone.as_ref().map(|p| p.country_code().to_string()),
        message: "registered".into(),
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UserObjectView {
    pub user: UserView,
}

/// `getLoggedInUser`.
#[utoipa::path(tag = "fynd-storefront", responses((status = 200, body = UserObjectView), (status = 401, body = ErrorBody)))]
#[get("/service/application/user/authentication/v1.0/session")]
async fn get_logged_in_user(s: StoreSession, st: web::Data<AppState>) -> ApiResult<HttpResponse> {
    let user = user_view(&st, &s).await?;
    Ok(ok(&s).json(UserObjectView { user }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SessionListSuccessView {
    pub sessions: Vec<String>,
}

/// `getListOfActiveSessions`: the ids of the user's live sessions in this application.
#[utoipa::path(tag = "fynd-storefront", responses((status = 200, body = SessionListSuccessView), (status = 401, body = ErrorBody)))]
#[get("/service/application/user/authentication/v1.0/sessions")]
async fn get_list_of_active_sessions(s: StoreSession, st: web::Data<AppState>) -> ApiResult<HttpResponse> {
    let (user_id, app_id) = (s.user.id, s.client.app.id);
    let rows = st.db.run(move |c| session::list_storefront(c, user_id, app_id)).await?;
    Ok(ok(&s).json(SessionListSuccessView { sessions: rows.into_iter().map(|r| r.id).collect() }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LogoutView {
    pub logout: bool,
}

/// `logout` (GET, as the SDK calls it): ends this session and expires the cookie.
#[utoipa::path(tag = "fynd-storefront", responses((status = 200, body = LogoutView), (status = 401, body = ErrorBody)))]
#[get("/service/application/user/authentication/v1.0/logout")]
async fn logout(s: StoreSession, st: web::Data<AppState>, origin: Origin) -> ApiResult<HttpResponse> {
    let (sid, user_id, company_id) = (s.session_id.clone(), s.user.id, s.user.company_id);
    st.db
        .write(move |c| {
            session::revoke(c, &sid, "logout")?;
            store::audit(
                c,
                Some(company_id),
                Some(user_id),
                "logout",
                &origin.ip,
                serde_json::json!({"kind": session::STOREFRONT_KIND}),
            )
        })
        .await?;
    Ok(HttpResponse::Ok().cookie(removal_cookie(&st.config)).json(LogoutView { logout: true }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct UserExistsQuery {
    /// An e-mail or a mobile number in international form.
    pub q: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UserExistsView {
    pub user_exists: bool,
}

/// `userExists`: discloses whether an account exists, by design of the Fynd API (auth.md §2.4);
/// archived and deleted accounts count as absent.
#[utoipa::path(tag = "fynd-storefront", params(UserExistsQuery), responses((status = 200, body = UserExistsView),
    (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 429, body = ErrorBody)))]
#[get("/service/application/user/authentication/v1.0/user-exists")]
async fn user_exists(
    client: AppClient,
    st: web::Data<AppState>,
    q: web::Query<UserExistsQuery>,
) -> ApiResult<HttpResponse> {
    let ident = service::identifier(&q.q, "q")?;
    let app = client.app.clone();
    let user = st.db.run(move |c| service::find_customer(c, &app, &ident)).await?;
    let exists = user.is_some_and(|u| u.status == "active" || u.status == "blocked");
    Ok(HttpResponse::Ok().json(UserExistsView { user_exists: exists }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct HasPasswordView {
    /// 1 when the user has a password, else 0 (the seed's integer).
    pub result: u8,
}

/// `hasPassword`.
#[utoipa::path(tag = "fynd-storefront", responses((status = 200, body = HasPasswordView), (status = 401, body = ErrorBody)))]
#[get("/service/application/user/authentication/v1.0/has-password")]
async fn has_password(s: StoreSession) -> ApiResult<HttpResponse> {
    Ok(ok(&s).json(HasPasswordView { result: u8::from(s.user.password_hash.is_some()) }))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct UpdatePasswordBody {
    pub old_password: Option<String>,
    pub new_password: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MessageView {
    pub message: String,
}

/// `updatePassword`: the old password is required when one is set; every other session of
/// the user ends.
#[utoipa::path(tag = "fynd-storefront", request_body = UpdatePasswordBody, responses((status = 200, body = MessageView),
    (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
#[post("/service/application/user/authentication/v1.0/password")]
async fn update_password(
    s: StoreSession,
    st: web::Data<AppState>,
    origin: Origin,
    Json(b): Json<UpdatePasswordBody>,
) -> ApiResult<HttpResponse> {
    let uid = s.user.id;
    let primary = st.db.run(move |c| store::primary_email(c, uid)).await?;
    let email = primary.and_then(|e| crate::core::types::Email::try_from(e).ok());
    password::check_new(&b.new_password, email.as_ref())?;
    let stored = s.user.password_hash.clone();
    let (old, new) = (b.old_password.unwrap_or_default(), b.new_password);
    let hash = web::block(move || -> ApiResult<String> {
        if let Some(stored) = stored
            && !password::verify(&stored, &old)
        {
            return Err(ApiError::field("old_password", "is not the current password"));
        }
        Ok(password::hash(&new)?)
    })
    .await??;
    let (user_id, company_id, keep) = (s.user.id, s.user.company_id, s.session_id.clone());
    let state = st.clone();
    st.db
        .write(move |c| {
            store::set_password_hash(c, user_id, &hash)?;
            for id in session::revoke_all(c, user_id, Some(&keep), "password_change")? {
                state.sessions.forget(&id);
            }
            store::audit(
                c,
                Some(company_id),
                Some(user_id),
                "password_changed",
                &origin.ip,
                serde_json::json!({"kind": "fynd"}),
            )
        })
        .await?;
    Ok(ok(&s).json(MessageView { message: "success".into() }))
}

/// `EditProfileRequestSchema`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct EditProfileBody {
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub mobile: Option<MobileBody>,
    pub country_code: Option<String>,
    pub email: Option<String>,
    pub gender: Option<String>,
    pub dob: Option<String>,
    pub profile_pic_url: Option<String>,
    pub android_hash: Option<String>,
    pub sender: Option<String>,
    pub register_token: Option<String>,
    pub encrypt_otp: Option<bool>,
}

/// `ProfileEditSuccess`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProfileEditView {
    pub user: UserView,
    pub success: bool,
    pub verify_email_otp: bool,
    pub verify_mobile_otp: bool,
    pub verify_email_link: bool,
    pub user_exists: bool,
}

/// `updateProfile`: names, gender, dob and picture; a new e-mail or mobile is added to the
/// account unverified (primary only when it is the first).
#[utoipa::path(tag = "fynd-storefront", request_body = EditProfileBody, responses((status = 200, body = ProfileEditView),
    (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 409, body = ErrorBody)))]
#[post("/service/application/user/profile/v1.0/detail")]
async fn update_profile(
    s: StoreSession,
    st: web::Data<AppState>,
    Json(b): Json<EditProfileBody>,
) -> ApiResult<HttpResponse> {
    let email = b.email.as_deref().filter(|e| !e.trim().is_empty()).map(|e| views::email(e, "email")).transpose()?;
    let phone = b
        .mobile
        .as_ref()
        .filter(|m| !m.phone.trim().is_empty())
        .map(|m| phone_from_parts(m.country_code.as_deref().or(b.country_code.as_deref()), &m.phone, "mobile.phone"))
        .transpose()?;
    let change = ProfileChange {
        first_name: b.first_name.map(|s| s.trim().to_owned()),
        last_name: b.last_name.map(|s| s.trim().to_owned()),
        gender: b.gender,
        dob: b.dob,
        profile_pic_url: b.profile_pic_url,
        ..Default::default()
    };
    let (user_id, app_id) = (s.user.id, s.client.app.id);
    let user = st
        .db
        .write(move |c| {
            let user = customer::update_profile(c, user_id, &change)?;
            let current = customer::load(c, user.clone())?;
            if let Some(e) = email {
                customer::add_email(
                    c,
                    &user,
                    &NewContact { value: e, primary: current.emails.is_empty(), verified: false },
                )?;
            }
            if let Some(p) = phone {
                customer::add_phone(
                    c,
                    &user,
                    &NewContact { value: p, primary: current.phones.is_empty(), verified: false },
                )?;
            }
            service::view(c, user, app_id)
        })
        .await?;
    Ok(ok(&s).json(ProfileEditView {
        user,
        success: true,
        verify_email_otp: false,
        verify_mobile_otp: false,
        verify_email_link: false,
        user_exists: true,
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MobileAddedView {
    pub user: UserView,
    pub verify_mobile_link: bool,
}

/// Applies one change to the signed-in customer's e-mails or numbers in a write transaction
/// and answers the profile as it stands afterwards: the one body of the six handlers below.
async fn change_contacts<F>(s: &StoreSession, st: &AppState, change: F) -> ApiResult<UserView>
where
    F: FnOnce(&mut Db, &UserRow) -> ApiResult<()> + Send + 'static,
{
    let (user, app_id) = (s.user.clone(), s.client.app.id);
    st.db
        .write(move |c| {
            change(c, &user)?;
            service::view(c, user, app_id)
        })
        .await
}

/// `addMobileNumber`: unverified, primary only when it is the first.
#[utoipa::path(tag = "fynd-storefront", request_body = MobileBody, responses((status = 200, body = MobileAddedView),
    (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 409, body = ErrorBody)))]
#[put("/service/application/user/profile/v1.0/mobile")]
async fn add_mobile_number(
    s: StoreSession,
    st: web::Data<AppState>,
    Json(b): Json<MobileBody>,
) -> ApiResult<HttpResponse> {
    let phone = b.number()?;
    let user = change_contacts(&s, &st, move |c, user| {
        let primary = customer::load(c, user.clone())?.phones.is_empty();
        customer::add_phone(c, user, &NewContact { value: phone, primary, verified: false })
    })
    .await?;
    Ok(ok(&s).json(MobileAddedView { user, verify_mobile_link: false }))
}

/// `deleteMobileNumber`: the primary number cannot be removed (422 `primary_contact`).
#[utoipa::path(tag = "fynd-storefront", params(MobileBody), responses((status = 200, body = LoginSuccessView),
    (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
#[delete("/service/application/user/profile/v1.0/mobile")]
async fn delete_mobile_number(
    s: StoreSession,
    st: web::Data<AppState>,
    q: web::Query<MobileBody>,
) -> ApiResult<HttpResponse> {
    let phone = q.number()?;
    let user = change_contacts(&s, &st, move |c, user| customer::remove_phone(c, user.id, phone.as_str())).await?;
    Ok(ok(&s).json(LoginSuccessView { user }))
}

/// `setMobileNumberAsPrimary`.
#[utoipa::path(tag = "fynd-storefront", request_body = MobileBody, responses((status = 200, body = LoginSuccessView),
    (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
#[post("/service/application/user/profile/v1.0/mobile/primary")]
async fn set_mobile_number_as_primary(
    s: StoreSession,
    st: web::Data<AppState>,
    Json(b): Json<MobileBody>,
) -> ApiResult<HttpResponse> {
    let phone = b.number()?;
    let user = change_contacts(&s, &st, move |c, user| customer::set_primary_phone(c, user.id, phone.as_str())).await?;
    Ok(ok(&s).json(LoginSuccessView { user }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EmailAddedView {
    pub user: UserView,
    pub verify_email_link: bool,
}

/// `addEmail`: unverified, primary only when it is the first.
#[utoipa::path(tag = "fynd-storefront", request_body = EmailBody, responses((status = 200, body = EmailAddedView),
    (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 409, body = ErrorBody)))]
#[put("/service/application/user/profile/v1.0/email")]
async fn add_email(s: StoreSession, st: web::Data<AppState>, Json(b): Json<EmailBody>) -> ApiResult<HttpResponse> {
    let email = b.address()?;
    let user = change_contacts(&s, &st, move |c, user| {
        let primary = customer::load(c, user.clone())?.emails.is_empty();
        customer::add_email(c, user, &NewContact { value: email, primary, verified: false })
    })
    .await?;
    Ok(ok(&s).json(EmailAddedView { user, verify_email_link: false }))
}

/// `deleteEmail`: the primary e-mail cannot be removed (422 `primary_contact`).
#[utoipa::path(tag = "fynd-storefront", params(EmailBody), responses((status = 200, body = LoginSuccessView),
    (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
#[delete("/service/application/user/profile/v1.0/email")]
async fn delete_email(s: StoreSession, st: web::Data<AppState>, q: web::Query<EmailBody>) -> ApiResult<HttpResponse> {
    let email = q.address()?;
    let user = change_contacts(&s, &st, move |c, user| customer::remove_email(c, user.id, email.as_str())).await?;
    Ok(ok(&s).json(LoginSuccessView { user }))
}

/// `setEmailAsPrimary`.
#[utoipa::path(tag = "fynd-storefront", request_body = EmailBody, responses((status = 200, body = LoginSuccessView),
    (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
#[post("/service/application/user/profile/v1.0/email/primary")]
async fn set_email_as_primary(
    s: StoreSession,
    st: web::Data<AppState>,
    Json(b): Json<EmailBody>,
) -> ApiResult<HttpResponse> {
    let email = b.address()?;
    let user = change_contacts(&s, &st, move |c, user| customer::set_primary_email(c, user.id, email.as_str())).await?;
    Ok(ok(&s).json(LoginSuccessView { user }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct AttributesQuery {
    pub slug: Option<String>,
}

/// `UserAttributes` / `UpdateUserAttributes`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AttributesView {
    #[schema(value_type = Object)]
    pub attributes: Map<String, Value>,
}

fn attributes(raw: &str) -> Map<String, Value> {
    match serde_json::from_str(raw) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    }
}

/// `getUserAttributes`: all, or only `slug`.
#[utoipa::path(tag = "fynd-storefront", params(AttributesQuery), responses((status = 200, body = AttributesView),
    (status = 401, body = ErrorBody)))]
#[get("/service/application/user/profile/v1.0/user-attributes")]
async fn get_user_attributes(s: StoreSession, q: web::Query<AttributesQuery>) -> ApiResult<HttpResponse> {
    let mut all = attributes(&s.user.attributes);
    if let Some(slug) = &q.slug {
        all.retain(|k, _| k == slug);
    }
    Ok(ok(&s).json(AttributesView { attributes: all }))
}

/// `updateUserAttributes`: merges the attributes sent; `null` removes one.
#[utoipa::path(tag = "fynd-storefront", request_body = AttributesView, responses((status = 200, body = AttributesView),
    (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
#[patch("/service/application/user/profile/v1.0/user-attributes")]
async fn update_user_attributes(
    s: StoreSession,
    st: web::Data<AppState>,
    Json(b): Json<AttributesView>,
) -> ApiResult<HttpResponse> {
    let (user_id, company_id) = (s.user.id, s.user.company_id);
    let patch = b.attributes;
    let merged = st
        .db
        .write(move |c| {
            let user = store::get(c, company_id, user_id)?;
            let mut all = attributes(&user.attributes);
            for (k, v) in patch {
                if v.is_null() {
                    all.remove(&k);
                } else {
                    all.insert(k, v);
                }
            }
            let change =
                ProfileChange { attributes: Some(Value::Object(all.clone()).to_string()), ..Default::default() };
            customer::update_profile(c, user_id, &change)?;
            Ok(all)
        })
        .await?;
    Ok(ok(&s).json(AttributesView { attributes: merged }))
}

/// `getPlatformConfig` (storefront): the application's configuration without provider secrets.
#[utoipa::path(tag = "fynd-storefront", responses((status = 200, description = "PlatformSchema", body = Object),
    (status = 401, body = ErrorBody)))]
#[get("/service/application/user/platform/v1.0/config")]
async fn get_platform_config(client: AppClient) -> ApiResult<HttpResponse> {
    Ok(HttpResponse::Ok().json(config::public_view(&client.app)))
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(login_with_password)
        .service(login_with_token)
        .service(register_with_form)
        .service(get_logged_in_user)
        .service(get_list_of_active_sessions)
        .service(logout)
        .service(user_exists)
        .service(has_password)
        .service(update_password)
        .service(update_profile)
        .service(add_mobile_number)
        .service(delete_mobile_number)
        .service(set_mobile_number_as_primary)
        .service(add_email)
        .service(delete_email)
        .service(set_email_as_primary)
        .service(get_user_attributes)
        .service(update_user_attributes)
        .service(get_platform_config);
}

#[derive(utoipa::OpenApi)]
#[openapi(
    paths(
        login_with_password,
        login_with_token,
        register_with_form,
        get_logged_in_user,
        get_list_of_active_sessions,
        logout,
        user_exists,
        has_password,
        update_password,
        update_profile,
        add_mobile_number,
        delete_mobile_number,
        set_mobile_number_as_primary,
        add_email,
        delete_email,
        set_email_as_primary,
        get_user_attributes,
        update_user_attributes,
        get_platform_config
    ),
    components(schemas(
        PasswordLoginBody,
        TokenLoginBody,
        LoginSuccessView,
        RegisterPhoneBody,
        FormRegisterBody,
        RegisterFormView,
        UserObjectView,
        SessionListSuccessView,
        LogoutView,
        UserExistsView,
        HasPasswordView,
        UpdatePasswordBody,
        MessageView,
        EditProfileBody,
        ProfileEditView,
        MobileBody,
        MobileAddedView,
        EmailBody,
        EmailAddedView,
        AttributesView
    ))
)]
pub struct Api;
