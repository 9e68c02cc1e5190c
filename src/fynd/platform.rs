//! Fynd platform (admin) user API, CONTRACT §9 and seeds 000/001: every route under
//! `/service/platform/user/v1.0/company/{company_id}/application/{application_id}`, for an
//! admin of that company; another company's id or application is 404.

use actix_web::{HttpResponse, delete, get, patch, post, put, web};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;

use super::{
    config,
    credentials::{PlatformApp, secure_cookies},
    service::{self, NewCustomer},
    views::{self, GroupView, IdParam, PageView, UserView, paging, parse_id, phone_from_parts, search_view},
};
use crate::{
    auth::service::Origin,
    core::{
        auth::session,
        error::{ApiError, ApiResult, ErrorBody},
        extract::Json,
        query::{Paging, search_text},
        state::AppState,
        types::{now, rfc3339},
    },
    users::{
        application,
        customer::{self, NewContact, ProfileChange},
        group::{self, Condition, GroupChange, GroupFilter, NewGroup, Op},
        store,
    },
};

type AppItemPath = web::Path<(String, String, String)>;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct CustomersQuery {
    pub q: Option<String>,
    pub page_size: Option<i64>,
    pub page_no: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CustomerListView {
    pub items: Vec<UserView>,
    pub page: PageView,
}

/// `getCustomers`: the application's customers, `q` matching e-mail, phone or name.
#[utoipa::path(tag = "fynd-platform", params(("company_id" = String, Path), ("application_id" = String, Path), CustomersQuery),
    responses((status = 200, body = CustomerListView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
#[get("/service/platform/user/v1.0/company/{company_id}/application/{application_id}/customers/list")]
async fn get_customers(
    PlatformApp { app, .. }: PlatformApp,
    st: web::Data<AppState>,
    q: web::Query<CustomersQuery>,
) -> ApiResult<HttpResponse> {
    let Paging { page, size, offset } = paging(q.page_no, q.page_size)?;
    let text = q.q.as_deref().map(|t| search_text("q", t)).transpose()?.flatten();
    let (items, total) = st
        .db
        .run(move |c| {
            let (rows, total) = customer::list(c, app.company_id, app.id, text.as_deref(), size, offset)?;
            let items = customer::load_many(c, rows)?.into_iter().map(|u| search_view(u, app.id)).collect::<Vec<_>>();
            Ok((items, total))
        })
        .await?;
    Ok(HttpResponse::Ok().json(CustomerListView { items, page: PageView::new(page, size, total) }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct SearchQuery {
    pub q: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UserSearchView {
    pub users: Vec<UserView>,
}

/// `searchUsers`: up to 50 customers matching `q` (e-mail, phone or name).
#[utoipa::path(tag = "fynd-platform", params(("company_id" = String, Path), ("application_id" = String, Path), SearchQuery),
    responses((status = 200, body = UserSearchView), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
#[get("/service/platform/user/v1.0/company/{company_id}/application/{application_id}/customers/search")]
async fn search_users(
    PlatformApp { app, .. }: PlatformApp,
    st: web::Data<AppState>,
    q: web::Query<SearchQuery>,
) -> ApiResult<HttpResponse> {
    let text = q.q.as_deref().map(|t| search_text("q", t)).transpose()?.flatten();
    let users = st
        .db
        .run(move |c| {
            let (rows, _) = customer::list(c, app.company_id, app.id, text.as_deref(), 50, 0)?;
            Ok(customer::load_many(c, rows)?.into_iter().map(|u| search_view(u, app.id)).collect::<Vec<_>>())
        })
        .await?;
    Ok(HttpResponse::Ok().json(UserSearchView { users }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct CreateQuery {
    /// Marks the given e-mail and phone as verified.
    pub verified: Option<bool>,
}

/// `CreateUserRequestSchema`. Seed 001 marks `phone_number` required; a customer known only
/// by e-mail is created too (`phone_number` absent or `""` when `email` is given).
#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateUserBody {
    /// International form (`+919999999999`), or national with `country_code`.
    pub phone_number: Option<String>,
    pub country_code: Option<IdParam>,
    pub email: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub gender: Option<String>,
    pub username: Option<String>,
    /// An object, or the JSON-encoded string of one (seed 001 types `meta` as a string; the
    /// SDK sends what it is given).
    #[schema(value_type = Option<Object>)]
    pub meta: Option<Value>,
    pub external_id: Option<String>,
    pub rr_id: Option<String>,
    pub dob: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UserEnvelope {
    pub user: UserView,
}

fn code_text(p: &Option<IdParam>) -> Option<String> {
    p.as_ref().map(|c| match c {
        IdParam::Text(s) => s.clone(),
        IdParam::Number(n) => n.to_string(),
    })
}

/// `meta` as seed 001 types it (a string holding JSON) or as the SDK's schema and examples
/// show it (an object); stored and answered as an object either way (CONTRACT §9). `""` and
/// `null` mean none.
fn meta(v: Option<Value>) -> ApiResult<Option<Value>> {
    let invalid = || ApiError::field("meta", "must be an object or a JSON-encoded object");
    match v {
        Some(Value::Object(m)) => Ok(Some(Value::Object(m))),
        Some(Value::Null) | None => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => match serde_json::from_str::<Value>(&s) {
            Ok(Value::Object(m)) => Ok(Some(Value::Object(m))),
            _ => Err(invalid()),
        },
        Some(_) => Err(invalid()),
    }
}

/// `createUser`: a customer of the application, with a phone, an e-mail or both. An existing
/// WhatsApp contact with the same phone is the same person and is adopted (CONTRACT §9); an
/// existing account is 409.
#[utoipa::path(tag = "fynd-platform", params(("company_id" = String, Path), ("application_id" = String, Path), CreateQuery),
    request_body = CreateUserBody, responses((status = 200, body = UserEnvelope), (status = 400, body = ErrorBody),
    (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)), security(("bearer" = [])))]
#[post("/service/platform/user/v1.0/company/{company_id}/application/{application_id}/customers")]
async fn create_user(
    PlatformApp { app, admin }: PlatformApp,
    st: web::Data<AppState>,
    origin: Origin,
    q: web::Query<CreateQuery>,
    Json(b): Json<CreateUserBody>,
) -> ApiResult<HttpResponse> {
    let phone = b
        .phone_number
        .as_deref()
        .filter(|p| !p.trim().is_empty())
        .map(|p| phone_from_parts(code_text(&b.country_code).as_deref(), p, "phone_number"))
        .transpose()?;
    let email = b.email.as_deref().filter(|e| !e.trim().is_empty()).map(|e| views::email(e, "email")).transpose()?;
    if phone.is_none() && email.is_none() {
        return Err(ApiError::field("phone_number", "give phone_number or email"));
    }
    let n = NewCustomer {
        phone,
        email,
        phone_verified: q.verified.unwrap_or(false),
        email_verified: q.verified.unwrap_or(false),
        first_name: b.first_name,
        last_name: b.last_name,
        gender: b.gender,
        dob: b.dob,
        username: b.username,
        external_id: b.external_id,
        meta: meta(b.meta)?,
        password_hash: None,
        trusted: true,
    };
    let admin_id = admin.user_id;
    let user = st
        .db
        .write(move |c| {
            let user = service::create_or_adopt(c, &app, &n)?;
            store::audit(
                c,
                Some(app.company_id),
                Some(admin_id),
                "fynd_user_created",
                &origin.ip,
                json!({"user": user.id}),
            )?;
            let user = customer::get(c, app.company_id, app.id, user.id)?;
            service::view(c, user, app.id)
        })
        .await?;
    Ok(HttpResponse::Ok().json(UserEnvelope { user }))
}

/// `UserPhoneNumbers` (country code as a string, as the seed has it).
#[derive(Debug, Deserialize, ToSchema)]
pub struct PhoneBody {
    pub phone: String,
    pub country_code: Option<IdParam>,
    pub active: Option<bool>,
    pub primary: Option<bool>,
    pub verified: Option<bool>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct EmailBody {
    pub email: String,
    pub active: Option<bool>,
    pub primary: Option<bool>,
    pub verified: Option<bool>,
}

/// `UpdateUserRequestSchema`: `phone_numbers` and `emails`, when sent, replace the existing ones.
#[derive(Debug, Deserialize, ToSchema)]
pub struct UpdateUserBody {
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub gender: Option<String>,
    pub dob: Option<String>,
    pub username: Option<String>,
    pub external_id: Option<String>,
    pub rr_id: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub meta: Option<Value>,
    pub phone_numbers: Option<Vec<PhoneBody>>,
    pub emails: Option<Vec<EmailBody>>,
}

/// `updateUser`. A company admin (or an auth client's service account) may replace a
/// customer's e-mails and phones, with the `verified` flags it sends, even for an account that
/// signs in: unlike an agent at `PUT /contact`, it can already open a session for any customer
/// (`createUserSession`), so refusing would protect nothing (README "Account takeover and
/// abuse"). Each change of contacts is audited (`fynd_user_contacts_changed`).
#[utoipa::path(tag = "fynd-platform", params(("company_id" = String, Path), ("application_id" = String, Path), ("user_id" = String, Path)),
    request_body = UpdateUserBody, responses((status = 200, body = UserEnvelope), (status = 400, body = ErrorBody),
    (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)), security(("bearer" = [])))]
#[put("/service/platform/user/v1.0/company/{company_id}/application/{application_id}/customers/{user_id}")]
async fn update_user(
    PlatformApp { app, admin }: PlatformApp,
    st: web::Data<AppState>,
    origin: Origin,
    path: AppItemPath,
    Json(b): Json<UpdateUserBody>,
) -> ApiResult<HttpResponse> {
    let user_id = parse_id(&path.2)?;
    let phones = b
        .phone_numbers
        .map(|list| {
            list.iter()
                .enumerate()
                .filter(|(_, p)| p.active.unwrap_or(true))
                .map(|(i, p)| {
                    let value = phone_from_parts(
                        code_text(&p.country_code).as_deref(),
                        &p.phone,
                        &format!("phone_numbers[{i}].phone"),
                    )?;
                    Ok(NewContact { value, primary: p.primary.unwrap_or(false), verified: p.verified.unwrap_or(false) })
                })
                .collect::<ApiResult<Vec<_>>>()
        })
        .transpose()?;
    let emails = b
        .emails
        .map(|list| {
            list.iter()
                .enumerate()
                .filter(|(_, e)| e.active.unwrap_or(true))
                .map(|(i, e)| {
                    let value = views::email(&e.email, &format!("emails[{i}].email"))?;
                    Ok(NewContact { value, primary: e.primary.unwrap_or(false), verified: e.verified.unwrap_or(false) })
                })
                .collect::<ApiResult<Vec<_>>>()
        })
        .transpose()?;
    let change = ProfileChange {
        first_name: b.first_name.map(|s| s.trim().to_owned()),
        last_name: b.last_name.map(|s| s.trim().to_owned()),
        gender: b.gender,
        dob: b.dob,
        username: b.username,
        external_id: b.external_id,
        meta: meta(b.meta)?.map(|m| m.to_string()),
        ..Default::default()
    };
    let user = st
        .db
        .write(move |c| {
            let user = customer::get(c, app.company_id, app.id, user_id)?;
            let user = customer::update_profile(c, user.id, &change)?;
            if let Some(phones) = &phones {
                customer::replace_phones(c, &user, phones)?;
            }
            if let Some(emails) = &emails {
                customer::replace_emails(c, &user, emails)?;
            }
            if phones.is_some() || emails.is_some() {
                let detail = json!({"user": user.id, "phone_numbers": phones.is_some(), "emails": emails.is_some()});
                store::audit(
                    c,
                    Some(app.company_id),
                    Some(admin.user_id),
                    "fynd_user_contacts_changed",
                    &origin.ip,
                    detail,
                )?;
            }
            service::view(c, user, app.id)
        })
        .await?;
    Ok(HttpResponse::Ok().json(UserEnvelope { user }))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct ArchiveBody {
    pub user_id: IdParam,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SuccessView {
    pub success: bool,
}

/// `archiveUser`: the user can no longer log in, its sessions end, and its e-mails and phones
/// are released so they can register again (seed 001).
#[utoipa::path(tag = "fynd-platform", params(("company_id" = String, Path), ("application_id" = String, Path)),
    request_body = ArchiveBody, responses((status = 200, body = SuccessView), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
#[put("/service/platform/user/v1.0/company/{company_id}/application/{application_id}/customers/archive")]
async fn archive_user(
    PlatformApp { app, .. }: PlatformApp,
    st: web::Data<AppState>,
    origin: Origin,
    Json(b): Json<ArchiveBody>,
) -> ApiResult<HttpResponse> {
    service::set_state(&st, &app, vec![b.user_id.id()?], "archived", String::new(), origin.ip).await?;
    Ok(HttpResponse::Ok().json(SuccessView { success: true }))
}

/// `BlockUserRequestSchema`: `status` false blocks, true unblocks.
#[derive(Debug, Deserialize, ToSchema)]
pub struct BlockBody {
    pub status: bool,
    pub user_id: Vec<IdParam>,
    pub reason: Option<String>,
}

/// `blockOrUnblockUsers`: blocked users cannot log in and their sessions end at once.
#[utoipa::path(tag = "fynd-platform", params(("company_id" = String, Path), ("application_id" = String, Path)),
    request_body = BlockBody, responses((status = 200, body = SuccessView), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
#[put("/service/platform/user/v1.0/company/{company_id}/application/{application_id}/customers/activation")]
async fn block_or_unblock(
    PlatformApp { app, .. }: PlatformApp,
    st: web::Data<AppState>,
    origin: Origin,
    Json(b): Json<BlockBody>,
) -> ApiResult<HttpResponse> {
    if b.user_id.is_empty() {
        return Err(ApiError::field("user_id", "must name at least one user"));
    }
    let ids = b.user_id.iter().map(IdParam::id).collect::<ApiResult<Vec<_>>>()?;
    let to = if b.status { "active" } else { "blocked" };
    service::set_state(&st, &app, ids, to, b.reason.unwrap_or_default(), origin.ip).await?;
    Ok(HttpResponse::Ok().json(SuccessView { success: true }))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct UndeleteBody {
    pub user_id: IdParam,
    pub reason: Option<String>,
    pub reason_id: Option<String>,
}

/// `unDeleteUser`: within the application's `delete_account_day` grace period.
#[utoipa::path(tag = "fynd-platform", params(("company_id" = String, Path), ("application_id" = String, Path)),
    request_body = UndeleteBody, responses((status = 200, body = SuccessView), (status = 404, body = ErrorBody),
    (status = 422, body = ErrorBody)), security(("bearer" = [])))]
#[put("/service/platform/user/v1.0/company/{company_id}/application/{application_id}/customers/undelete")]
async fn undelete_user(
    PlatformApp { app, .. }: PlatformApp,
    st: web::Data<AppState>,
    origin: Origin,
    Json(b): Json<UndeleteBody>,
) -> ApiResult<HttpResponse> {
    let reason = format!("{} {}", b.reason_id.unwrap_or_default(), b.reason.unwrap_or_default()).trim().to_owned();
    service::undelete(&st, &app, b.user_id.id()?, reason, origin.ip).await?;
    Ok(HttpResponse::Ok().json(SuccessView { success: true }))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct SessionBody {
    pub user_id: IdParam,
    pub domain: Option<String>,
    /// Seconds; default from the application's `session_config`.
    pub max_age: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreateSessionView {
    pub domain: String,
    pub max_age: i64,
    pub secure: bool,
    pub http_only: bool,
    #[schema(value_type = Object)]
    pub cookie: Value,
}

/// `createUserSession`: a storefront session for a customer, as the `f.session` cookie.
#[utoipa::path(tag = "fynd-platform", params(("company_id" = String, Path), ("application_id" = String, Path)),
    request_body = SessionBody, responses((status = 200, body = CreateSessionView), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
#[post("/service/platform/user/v1.0/company/{company_id}/application/{application_id}/customers/session")]
async fn create_session(
    PlatformApp { app, .. }: PlatformApp,
    st: web::Data<AppState>,
    origin: Origin,
    Json(b): Json<SessionBody>,
) -> ApiResult<HttpResponse> {
    let settings = config::Settings::of(&app)?;
    let user_id = b.user_id.id()?;
    let max_age = match b.max_age {
        Some(s) if s <= 0 || s > 366 * 86_400 => {
            return Err(ApiError::field("max_age", "must be 1 to 31622400 seconds"));
        }
        Some(s) => s,
        None => settings.session_ttl().num_seconds(),
    };
    let domain = b.domain.map(|d| d.trim().to_owned()).filter(|d| !d.is_empty()).unwrap_or_else(|| app.domain.clone());
    let (company_id, app_id) = (app.company_id, app.id);
    let user = st.db.run(move |c| customer::get(c, company_id, app_id, user_id)).await?;
    if !user.is_active() {
        return Err(ApiError::unprocessable("user_inactive", "the user is blocked, archived or deleted"));
    }
    let (_, value) =
        service::start_session(&st, &app, &user, &origin, Some(domain.clone()), chrono::Duration::seconds(max_age))
            .await?;
    Ok(HttpResponse::Ok().json(CreateSessionView {
        domain,
        max_age,
        secure: secure_cookies(&st.config),
        http_only: true,
        cookie: json!({ super::credentials::COOKIE: value }),
    }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct SessionsQuery {
    pub id: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SessionInfoView {
    pub session_id: String,
    pub user_agent: String,
    pub ip: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// When the session expires (RFC 3339).
    pub expire_in: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SessionListView {
    pub items: Vec<SessionInfoView>,
}

/// `getActiveSessions`: the customer's live storefront sessions in this application, as
/// `{items: [{session_id, user_agent, ip, domain, expire_in}]}`. Seed 001 types `items` as
/// bare strings; the SDK 3.4 schema (which validates answers) as these objects, and where the
/// two disagree the SDK wins (CONTRACT §9): a session's id is `items[].session_id`.
#[utoipa::path(tag = "fynd-platform", params(("company_id" = String, Path), ("application_id" = String, Path), SessionsQuery),
    responses((status = 200, body = SessionListView), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
#[get("/service/platform/user/v1.0/company/{company_id}/application/{application_id}/customers/sessions")]
async fn get_active_sessions(
    PlatformApp { app, .. }: PlatformApp,
    st: web::Data<AppState>,
    q: web::Query<SessionsQuery>,
) -> ApiResult<HttpResponse> {
    let user_id = parse_id(&q.id)?;
    let rows = st
        .db
        .run(move |c| {
            customer::get(c, app.company_id, app.id, user_id)?;
            session::list_storefront(c, user_id, app.id)
        })
        .await?;
    let items = rows
        .into_iter()
        .map(|s| SessionInfoView {
            session_id: s.id,
            user_agent: s.user_agent,
            ip: s.ip,
            domain: s.domain,
            expire_in: rfc3339(s.expires_at),
        })
        .collect();
    Ok(HttpResponse::Ok().json(SessionListView { items }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct DeleteSessionQuery {
    pub id: String,
    pub session_id: String,
    /// Recorded in the audit log; optional.
    pub reason: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SessionDeleteView {
    pub user_id: String,
    pub session_id: String,
}

/// `deleteSession`: ends one session of the customer, recording the reason.
#[utoipa::path(tag = "fynd-platform", params(("company_id" = String, Path), ("application_id" = String, Path), DeleteSessionQuery),
    responses((status = 200, body = SessionDeleteView), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
#[delete("/service/platform/user/v1.0/company/{company_id}/application/{application_id}/customers/session")]
async fn delete_session(
    PlatformApp { app, .. }: PlatformApp,
    st: web::Data<AppState>,
    origin: Origin,
    q: web::Query<DeleteSessionQuery>,
) -> ApiResult<HttpResponse> {
    let user_id = parse_id(&q.id)?;
    let (sid, reason) = (q.session_id.clone(), q.reason.clone().unwrap_or_default());
    let state = st.clone();
    st.db
        .write(move |c| {
            customer::get(c, app.company_id, app.id, user_id)?;
            if !session::revoke_of_user(c, user_id, &sid, &reason)? {
                return Err(ApiError::NotFound);
            }
            state.sessions.forget(&sid);
            store::audit(
                c,
                Some(app.company_id),
                Some(user_id),
                "session_revoked",
                &origin.ip,
                json!({"reason": reason}),
            )
        })
        .await?;
    Ok(HttpResponse::Ok().json(SessionDeleteView { user_id: user_id.to_string(), session_id: q.session_id.clone() }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct DeleteSessionsQuery {
    pub id: String,
    /// Recorded in the audit log; optional (seed 001's `deleteActiveSessions` takes only `id`).
    pub reason: Option<String>,
}

/// Seed 001's `SessionDeleteResponseSchema` (`items`: the ended session ids) together with the
/// SDK's `SessionsDeleteResponseSchema` (`user_id`, `session_ids`): the two disagree, and an
/// answer with both fields satisfies either (the SDK's validation allows the extra key).
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionsDeleteView {
    pub items: Vec<String>,
    pub user_id: String,
    pub session_ids: Vec<String>,
}

/// `deleteActiveSessions`: ends every session of the customer; `reason` is optional.
#[utoipa::path(tag = "fynd-platform", params(("company_id" = String, Path), ("application_id" = String, Path), DeleteSessionsQuery),
    responses((status = 200, body = SessionsDeleteView), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
#[delete("/service/platform/user/v1.0/company/{company_id}/application/{application_id}/customers/sessions")]
async fn delete_active_sessions(
    PlatformApp { app, .. }: PlatformApp,
    st: web::Data<AppState>,
    origin: Origin,
    q: web::Query<DeleteSessionsQuery>,
) -> ApiResult<HttpResponse> {
    let user_id = parse_id(&q.id)?;
    let reason = q.reason.clone().unwrap_or_default();
    let state = st.clone();
    let session_ids: Vec<String> = st
        .db
        .write(move |c| {
            customer::get(c, app.company_id, app.id, user_id)?;
            let ids = service::revoke_everything(&state, c, user_id, &reason)?;
            store::audit(
                c,
                Some(app.company_id),
                Some(user_id),
                "sessions_revoked",
                &origin.ip,
                json!({"reason": reason}),
            )?;
            Ok(ids)
        })
        .await?;
    Ok(HttpResponse::Ok().json(SessionsDeleteView {
        items: session_ids.clone(),
        user_id: user_id.to_string(),
        session_ids,
    }))
}

/// `getPlatformConfig`: the whole `PlatformSchema`, defaults filled in.
#[utoipa::path(tag = "fynd-platform", params(("company_id" = String, Path), ("application_id" = String, Path)),
    responses((status = 200, description = "PlatformSchema", body = Object), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
#[get("/service/platform/user/v1.0/company/{company_id}/application/{application_id}/platform/config")]
async fn get_platform_config(PlatformApp { app, .. }: PlatformApp) -> ApiResult<HttpResponse> {
    Ok(HttpResponse::Ok().json(config::public_view(&app)))
}

/// `updatePlatformConfig` (POST, as the SDK sends it): fields sent replace the stored ones,
/// objects merge, `null` resets a field to its default; `_id`, timestamps and `__v` are the
/// server's.
#[utoipa::path(tag = "fynd-platform", params(("company_id" = String, Path), ("application_id" = String, Path)),
    request_body(content = Object, description = "PlatformSchema"),
    responses((status = 200, description = "PlatformSchema", body = Object), (status = 400, body = ErrorBody),
    (status = 404, body = ErrorBody)), security(("bearer" = [])))]
#[post("/service/platform/user/v1.0/company/{company_id}/application/{application_id}/platform/config")]
async fn update_platform_config(
    PlatformApp { app, admin }: PlatformApp,
    st: web::Data<AppState>,
    origin: Origin,
    Json(body): Json<Value>,
) -> ApiResult<HttpResponse> {
    let admin_id = admin.user_id;
    let app = st
        .db
        .write(move |c| {
            let app = application::get(c, app.company_id, app.id)?;
            let stored = config::apply_update(&app, &body, &rfc3339(now()))?;
            application::set_platform_config(c, app.company_id, app.id, &stored)?;
            store::audit(
                c,
                Some(app.company_id),
                Some(admin_id),
                "platform_config_updated",
                &origin.ip,
                json!({"application": app.id}),
            )?;
            application::get(c, app.company_id, app.id)
        })
        .await?;
    Ok(HttpResponse::Ok().json(config::public_view(&app)))
}

/// `CreateUserGroupSchema`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateGroupBody {
    pub name: String,
    /// Optional (seed 001 marks it required; the SDK does not).
    pub description: Option<String>,
    pub file_url: Option<String>,
    /// `basic` (the default), `bulk`, or `conditional` (then `conditions` is required).
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// A conditional group's rules: its members are the application's customers whose
    /// attributes meet all of them.
    pub conditions: Option<Vec<Condition>>,
}

fn group_kind(kind: Option<String>) -> ApiResult<Option<String>> {
    match kind.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(k @ ("basic" | "bulk" | "conditional")) => Ok(Some(k.to_owned())),
        Some(_) => Err(ApiError::field("type", "must be basic, bulk or conditional")),
    }
}

/// The type and stored rules of a group being created, or of one whose `type` or
/// `conditions` change (`current`: its type now). Rules make a group `conditional` and a
/// conditional group needs them; a group never changes between conditional and listed
/// members, since that would silently drop one or the other.
fn group_rules(
    current: Option<&str>,
    kind: Option<String>,
    conditions: Option<Vec<Condition>>,
) -> ApiResult<(Option<String>, Option<String>)> {
    let kind = group_kind(kind)?;
    let conditional = match (current, kind.as_deref(), &conditions) {
        (Some(now), Some(k), _) if (now == "conditional") != (k == "conditional") => {
            return Err(ApiError::field("type", "a group cannot change between conditional and listed members"));
        }
        (Some(now), _, _) => now == "conditional",
        (None, Some(k), _) => k == "conditional",
        (None, None, rules) => rules.as_ref().is_some_and(|r| !r.is_empty()),
    };
    match (conditional, conditions) {
        (true, Some(rules)) => Ok((Some("conditional".into()), Some(group::stored_conditions(&rules)?))),
        (true, None) if current.is_none() => {
            Err(ApiError::field("conditions", "a conditional group needs at least one condition"))
        }
        (false, Some(rules)) if !rules.is_empty() => {
            Err(ApiError::field("conditions", "only a conditional group has conditions"))
        }
        (_, _) => Ok((kind, None)),
    }
}

fn non_empty(v: &str, field: &str) -> ApiResult<String> {
    let v = v.trim();
    if v.is_empty() || v.len() > 500 {
        return Err(ApiError::field(field, "must be 1 to 500 characters"));
    }
    Ok(v.to_owned())
}

/// `createUserGroup`. A `basic` or `bulk` group's members are added and removed with
/// `updateUserGroupPartially`; a `conditional` group's members are the customers meeting its
/// `conditions` (see [`Op`] for the comparisons).
#[utoipa::path(tag = "fynd-platform", params(("company_id" = String, Path), ("application_id" = String, Path)),
    request_body = CreateGroupBody, responses((status = 200, body = GroupView), (status = 400, body = ErrorBody),
    (status = 404, body = ErrorBody)), security(("bearer" = [])))]
#[post("/service/platform/user/v1.0/company/{company_id}/application/{application_id}/user_group")]
async fn create_user_group(
    PlatformApp { app, .. }: PlatformApp,
    st: web::Data<AppState>,
    Json(b): Json<CreateGroupBody>,
) -> ApiResult<HttpResponse> {
    let name = non_empty(&b.name, "name")?;
    let description = b.description.as_deref().unwrap_or("").trim().to_owned();
    let (kind, conditions) = group_rules(None, b.kind, b.conditions)?;
    let kind = kind.unwrap_or_else(|| "basic".into());
    let conditions = conditions.unwrap_or_else(|| "[]".into());
    let file_url = b.file_url.filter(|u| !u.trim().is_empty());
    let row = st
        .db
        .write(move |c| {
            let new = NewGroup {
                name: &name,
                description: &description,
                file_url: file_url.as_deref(),
                kind: &kind,
                conditions: &conditions,
            };
            group::insert(c, app.company_id, app.id, &new)
        })
        .await?;
    Ok(HttpResponse::Ok().json(GroupView::from(row)))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct GroupsQuery {
    pub page_no: Option<i64>,
    pub page_size: Option<i64>,
    pub name: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub status: Option<String>,
    pub group_uid: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct GroupListView {
    pub items: Vec<GroupView>,
    pub page: PageView,
}

/// `getUserGroups`.
#[utoipa::path(tag = "fynd-platform", params(("company_id" = String, Path), ("application_id" = String, Path), GroupsQuery),
    responses((status = 200, body = GroupListView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
#[get("/service/platform/user/v1.0/company/{company_id}/application/{application_id}/user_group")]
async fn get_user_groups(
    PlatformApp { app, .. }: PlatformApp,
    st: web::Data<AppState>,
    q: web::Query<GroupsQuery>,
) -> ApiResult<HttpResponse> {
    let Paging { page, size, offset } = paging(q.page_no, q.page_size)?;
    let q = q.into_inner();
    let name = q.name.as_deref().map(|t| search_text("name", t)).transpose()?.flatten();
    let filter = GroupFilter { name, kind: q.kind, status: q.status, uid: q.group_uid };
    let (rows, total) = st.db.run(move |c| group::list(c, app.company_id, app.id, &filter, size, offset)).await?;
    Ok(HttpResponse::Ok().json(GroupListView {
        items: rows.into_iter().map(GroupView::from).collect(),
        page: PageView::new(page, size, total),
    }))
}

/// `getUserGroupById` (the group's `_id` or `uid`, the same number).
#[utoipa::path(tag = "fynd-platform", params(("company_id" = String, Path), ("application_id" = String, Path), ("group_id" = String, Path)),
    responses((status = 200, body = GroupView), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
#[get("/service/platform/user/v1.0/company/{company_id}/application/{application_id}/user_group/{group_id}")]
async fn get_user_group(
    PlatformApp { app, .. }: PlatformApp,
    st: web::Data<AppState>,
    path: AppItemPath,
) -> ApiResult<HttpResponse> {
    let id = parse_id(&path.2)?;
    let row = st.db.run(move |c| group::get(c, app.company_id, app.id, id)).await?;
    Ok(HttpResponse::Ok().json(GroupView::from(row)))
}

/// `UpdateUserGroupSchema`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct UpdateGroupBody {
    pub name: Option<String>,
    pub description: Option<String>,
    pub file_url: Option<String>,
    /// Replaces a conditional group's rules.
    pub conditions: Option<Vec<Condition>>,
}

/// `updateUserGroup`.
#[utoipa::path(tag = "fynd-platform", params(("company_id" = String, Path), ("application_id" = String, Path), ("group_id" = String, Path)),
    request_body = UpdateGroupBody, responses((status = 200, body = GroupView), (status = 400, body = ErrorBody),
    (status = 404, body = ErrorBody)), security(("bearer" = [])))]
#[put("/service/platform/user/v1.0/company/{company_id}/application/{application_id}/user_group/{group_id}")]
async fn update_user_group(
    PlatformApp { app, .. }: PlatformApp,
    st: web::Data<AppState>,
    path: AppItemPath,
    Json(b): Json<UpdateGroupBody>,
) -> ApiResult<HttpResponse> {
    let id = parse_id(&path.2)?;
    let mut change = GroupChange {
        name: b.name.as_deref().map(|n| non_empty(n, "name")).transpose()?,
        description: b.description.map(|d| d.trim().to_owned()),
        file_url: b.file_url,
        ..Default::default()
    };
    let row = st
        .db
        .write(move |c| {
            let row = group::get(c, app.company_id, app.id, id)?;
            (change.kind, change.conditions) = group_rules(Some(&row.kind), None, b.conditions)?;
            group::update(c, id, &change)
        })
        .await?;
    Ok(HttpResponse::Ok().json(GroupView::from(row)))
}

#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum MemberAction {
    Add,
    Remove,
}

/// `UserGroupUpdateData`: one customer, by id, phone or e-mail.
#[derive(Debug, Deserialize, ToSchema)]
pub struct UserDataBody {
    pub user_id: Option<IdParam>,
    pub phone_number: Option<String>,
    pub email: Option<String>,
    pub action: MemberAction,
}

/// `PartialUserGroupUpdateSchema`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct PatchGroupBody {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub name: Option<String>,
    pub description: Option<String>,
    pub file_url: Option<String>,
    /// Members to add or remove; not for a conditional group, whose members follow its rules.
    pub user_data: Option<Vec<UserDataBody>>,
    /// Replaces a conditional group's rules.
    pub conditions: Option<Vec<Condition>>,
}

/// `updateUserGroupPartially`: changes the fields sent and adds or removes members, each named
/// by `user_id`, `phone_number` or `email`; a member that is not a customer of the
/// application is 400 naming the entry.
#[utoipa::path(tag = "fynd-platform", params(("company_id" = String, Path), ("application_id" = String, Path), ("group_id" = String, Path)),
    request_body = PatchGroupBody, responses((status = 200, body = GroupView), (status = 400, body = ErrorBody),
    (status = 404, body = ErrorBody)), security(("bearer" = [])))]
#[patch("/service/platform/user/v1.0/company/{company_id}/application/{application_id}/user_group/{group_id}")]
async fn update_user_group_partially(
    PlatformApp { app, .. }: PlatformApp,
    st: web::Data<AppState>,
    path: AppItemPath,
    Json(b): Json<PatchGroupBody>,
) -> ApiResult<HttpResponse> {
    let id = parse_id(&path.2)?;
    let mut change = GroupChange {
        name: b.name.as_deref().map(|n| non_empty(n, "name")).transpose()?,
        description: b.description.map(|d| d.trim().to_owned()),
        file_url: b.file_url,
        ..Default::default()
    };
    let (kind, conditions) = (b.kind, b.conditions);
    let mut members = Vec::new();
    for (i, d) in b.user_data.unwrap_or_default().into_iter().enumerate() {
        let field = format!("user_data[{i}]");
        let who = if let Some(uid) = &d.user_id {
            Who::Id(uid.id().map_err(|_| ApiError::field(&field, "no such customer"))?)
        } else if let Some(p) = d.phone_number.as_deref().filter(|p| !p.trim().is_empty()) {
            Who::Identifier(service::Identifier::Phone(phone_from_parts(None, p, &format!("{field}.phone_number"))?))
        } else if let Some(e) = d.email.as_deref().filter(|e| !e.trim().is_empty()) {
            Who::Identifier(service::Identifier::Email(views::email(e, &format!("{field}.email"))?))
        } else {
            return Err(ApiError::field(&field, "needs user_id, phone_number or email"));
        };
        members.push((field, who, d.action));
    }
    let row = st
        .db
        .write(move |c| {
            let row = group::get(c, app.company_id, app.id, id)?;
            if row.kind == "conditional" && !members.is_empty() {
                return Err(ApiError::field("user_data", "a conditional group's members follow its conditions"));
            }
            (change.kind, change.conditions) = group_rules(Some(&row.kind), kind, conditions)?;
            let row = group::update(c, id, &change)?;
            for (field, who, action) in &members {
                let user = match who {
                    Who::Id(uid) => customer::get(c, app.company_id, app.id, *uid).ok(),
                    Who::Identifier(ident) => service::find_customer(c, &app, ident)?,
                };
                let user = user.ok_or_else(|| ApiError::field(field, "no such customer"))?;
                match action {
                    MemberAction::Add => group::add_member(c, id, user.id)?,
                    MemberAction::Remove => group::remove_member(c, id, user.id)?,
                }
            }
            Ok(row)
        })
        .await?;
    Ok(HttpResponse::Ok().json(GroupView::from(row)))
}

enum Who {
    Id(i64),
    Identifier(service::Identifier),
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeleteGroupView {
    pub id: String,
    pub success: bool,
}

/// `deleteUserGroup` (newer SDKs): removes the group and its memberships.
#[utoipa::path(tag = "fynd-platform", params(("company_id" = String, Path), ("application_id" = String, Path), ("group_id" = String, Path)),
    responses((status = 200, body = DeleteGroupView), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
#[delete("/service/platform/user/v1.0/company/{company_id}/application/{application_id}/user_group/{group_id}")]
async fn delete_user_group(
    PlatformApp { app, .. }: PlatformApp,
    st: web::Data<AppState>,
    path: AppItemPath,
) -> ApiResult<HttpResponse> {
    let id = parse_id(&path.2)?;
    st.db
        .write(move |c| {
            group::get(c, app.company_id, app.id, id)?;
            group::delete(c, id)
        })
        .await?;
    Ok(HttpResponse::Ok().json(DeleteGroupView { id: id.to_string(), success: true }))
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    // Fixed segments before `{user_id}` / `{group_id}`: actix matches in registration order.
    cfg.service(get_customers)
        .service(search_users)
        .service(create_user)
        .service(archive_user)
        .service(block_or_unblock)
        .service(undelete_user)
        .service(update_user)
        .service(create_session)
        .service(get_active_sessions)
        .service(delete_session)
        .service(delete_active_sessions)
        .service(get_platform_config)
        .service(update_platform_config)
        .service(create_user_group)
        .service(get_user_groups)
        .service(get_user_group)
        .service(update_user_group)
        .service(update_user_group_partially)
        .service(delete_user_group);
}

#[derive(utoipa::OpenApi)]
#[openapi(
    paths(
        get_customers,
        search_users,
        create_user,
        update_user,
        archive_user,
        block_or_unblock,
        undelete_user,
        create_session,
        get_active_sessions,
        delete_session,
        delete_active_sessions,
        get_platform_config,
        update_platform_config,
        create_user_group,
        get_user_groups,
        get_user_group,
        update_user_group,
        update_user_group_partially,
        delete_user_group
    ),
    components(schemas(
        CustomerListView,
        UserView,
        PageView,
        UserSearchView,
        CreateUserBody,
        UserEnvelope,
        UpdateUserBody,
        PhoneBody,
        EmailBody,
        ArchiveBody,
        SuccessView,
        BlockBody,
        UndeleteBody,
        SessionBody,
        CreateSessionView,
        SessionInfoView,
        SessionListView,
        SessionDeleteView,
        SessionsDeleteView,
        CreateGroupBody,
        GroupListView,
        GroupView,
        UpdateGroupBody,
        UserDataBody,
        MemberAction,
        PatchGroupBody,
        DeleteGroupView,
        Condition,
        Op,
        IdParam
    ))
)]
pub struct Api;
