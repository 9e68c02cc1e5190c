//! Fynd user operations shared by the platform (admin) and storefront routes: tenancy checks,
//! the one-identity rule, account states and storefront sessions.

use super::{
    config::Settings,
    credentials::{AppClient, cookie_value},
    views::{UserView, user_view},
};
use crate::{
    auth::{
        proof,
        service::{self as auth_service, Origin},
    },
    core::{
        auth::{
            lockout,
            session::{self, NewStorefrontSession, StorefrontSession},
        },
        db::Db,
        error::{ApiError, ApiResult},
        state::AppState,
        types::{Email, Phone, Role, now},
    },
    users::{
        application::ApplicationRow,
        customer::{self, NewContact, ProfileChange},
        model::{NewUser, UserRow},
        store,
    },
};

/// What a new (or adopted) customer brings.
#[derive(Debug, Clone, Default)]
pub struct NewCustomer {
    pub phone: Option<Phone>,
    pub email: Option<Email>,
    pub phone_verified: bool,
    pub email_verified: bool,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub gender: Option<String>,
    pub dob: Option<String>,
    pub username: Option<String>,
    pub external_id: Option<String>,
    pub meta: Option<serde_json::Value>,
    pub password_hash: Option<String>,
    /// The caller may adopt an existing contact without proof (a company admin); a storefront
    /// may only adopt the contact whose phone or e-mail it proved by OTP.
    pub trusted: bool,
}

fn exists() -> ApiError {
    ApiError::conflict("user_exists", "an account with this e-mail or phone number already exists")
}

/// Creates a customer of the application, or adopts the company's existing contact with the
/// same phone or e-mail (a WhatsApp contact that never registered: no password, no
/// application) when the caller is trusted or proved that phone or e-mail. One person is one
/// row per company (CONTRACT §9 "one identity"); anything else is 409 `user_exists`.
pub fn create_or_adopt(c: &mut Db, app: &ApplicationRow, n: &NewCustomer) -> ApiResult<UserRow> {
    let by_phone = match &n.phone {
        Some(p) => customer::find_by_phone(c, app.company_id, p.as_str())?,
        None => None,
    };
    let by_email = match &n.email {
        Some(e) => customer::find_by_email(c, app.company_id, e.as_str())?,
        None => None,
    };
    let proven = n.trusted || (by_phone.is_some() && n.phone_verified) || (by_email.is_some() && n.email_verified);
    let existing = match (by_phone, by_email) {
        (Some(a), Some(b)) if a.id != b.id => return Err(exists()),
        (Some(a), _) => Some(a),
        (None, b) => b,
    };
    let meta = n.meta.as_ref().map(|m| m.to_string());
    let user = match existing {
        Some(u) => {
            let adoptable = u.role() == Role::Customer
                && u.password_hash.is_none()
                && u.is_active()
                && u.application_id.is_none_or(|a| a == app.id);
            // Claiming someone's WhatsApp contact by typing its number would be an account
            // takeover: without an admin, the matching contact must have been proven by OTP.
            if !adoptable || !proven || (u.application_id == Some(app.id) && n.password_hash.is_none()) {
                return Err(exists());
            }
            let keep = |current: &str, new: &Option<String>| {
                if current.is_empty() { new.clone() } else { None }
            };
            customer::update_profile(
                c,
                u.id,
                &ProfileChange {
                    first_name: keep(&u.first_name, &n.first_name),
                    last_name: keep(&u.last_name, &n.last_name),
                    gender: n.gender.clone(),
                    dob: n.dob.clone(),
                    username: n.username.clone(),
                    external_id: n.external_id.clone(),
                    meta,
                    application_id: Some(app.id),
                    password_hash: n.password_hash.clone(),
                    ..Default::default()
                },
            )?
        }
        None => {
            let t = now();
            let u = store::insert_user(
                c,
                &NewUser {
                    company_id: app.company_id,
                    application_id: Some(app.id),
                    role: Role::Customer.as_str(),
                    first_name: n.first_name.as_deref().unwrap_or("").trim(),
                    last_name: n.last_name.as_deref().unwrap_or("").trim(),
                    password_hash: n.password_hash.as_deref(),
                    status: "active",
                    created_at: t,
                    updated_at: t,
                },
            )?;
            customer::update_profile(
                c,
                u.id,
                &ProfileChange {
                    gender: n.gender.clone(),
                    dob: n.dob.clone(),
                    username: n.username.clone(),
                    external_id: n.external_id.clone(),
                    meta,
                    ..Default::default()
                },
            )?
        }
    };
    if let Some(p) = &n.phone {
        let primary = customer::load(c, user.clone())?.phones.is_empty();
        customer::add_phone(c, &user, &NewContact { value: p.clone(), primary, verified: n.phone_verified })?;
    }
    if let Some(e) = &n.email {
        let primary = customer::load(c, user.clone())?.emails.is_empty();
        customer::add_email(c, &user, &NewContact { value: e.clone(), primary, verified: n.email_verified })?;
    }
    Ok(user)
}

pub fn view(c: &mut Db, user: UserRow, application_id: i64) -> ApiResult<UserView> {
    Ok(user_view(customer::load(c, user)?, application_id))
}

/// Ends every session of a user (storefront cookies and API tokens) and forgets them in this
/// node's cache at once; other nodes follow within the cache TTL (CONTRACT §2).
pub fn revoke_everything(st: &AppState, c: &mut Db, user_id: i64, reason: &str) -> ApiResult<Vec<String>> {
    let ids = session::revoke_all(c, user_id, None, reason)?;
    for id in &ids {
        st.sessions.forget(id);
    }
    Ok(ids)
}

/// Sets an account state, revoking sessions when the user may no longer log in.
pub async fn set_state(
    st: &AppState,
    app: &ApplicationRow,
    user_ids: Vec<i64>,
    to: &'static str,
    reason: String,
    ip: String,
) -> ApiResult<()> {
    let (company_id, app_id) = (app.company_id, app.id);
    let state = st.clone();
    st.db
        .write(move |c| {
            for id in &user_ids {
                let user = customer::get(c, company_id, app_id, *id)?;
                match to {
                    "archived" => {
                        if user.status == "deleted" {
                            return Err(ApiError::NotFound);
                        }
                        customer::release_contacts(c, user.id)?;
                        customer::set_status(c, user.id, "archived", user.deleted_at)?;
                    }
                    "blocked" => {
                        if user.status == "active" {
                            customer::set_status(c, user.id, "blocked", None)?;
                        }
                    }
                    _ => {
                        if user.status == "blocked" {
                            customer::set_status(c, user.id, "active", None)?;
                        }
                    }
                }
                if to != "active" {
                    revoke_everything(&state, c, user.id, to)?;
                }
                store::audit(
                    c,
                    Some(company_id),
                    Some(user.id),
                    &format!("fynd_user_{to}"),
                    &ip,
                    serde_json::json!({"reason": reason}),
                )?;
            }
            Ok(())
        })
        .await
}

/// Platform `unDeleteUser`: a user deleted from the storefront comes back while the
/// application's `delete_account_day` grace period has not elapsed.
pub async fn undelete(st: &AppState, app: &ApplicationRow, user_id: i64, reason: String, ip: String) -> ApiResult<()> {
    let settings = Settings::of(app)?;
    let (company_id, app_id) = (app.company_id, app.id);
    st.db
        .write(move |c| {
            let user = customer::get(c, company_id, app_id, user_id)?;
            let within = user
                .deleted_at
                .is_some_and(|at| now() - at <= chrono::Duration::days(i64::from(settings.delete_account_day)));
            if user.status != "deleted" || !within {
                return Err(ApiError::unprocessable(
                    "not_deleted",
                    "the user is not deleted or the grace period has elapsed",
                ));
            }
            customer::set_status(c, user.id, "active", None)?;
            store::audit(
                c,
                Some(company_id),
                Some(user.id),
                "fynd_user_undeleted",
                &ip,
                serde_json::json!({"reason": reason}),
            )
        })
        .await
}

/// A new storefront session for `user`; returns the session and the signed cookie value.
pub async fn start_session(
    st: &AppState,
    app: &ApplicationRow,
    user: &UserRow,
    origin: &Origin,
    domain: Option<String>,
    ttl: chrono::Duration,
) -> ApiResult<(StorefrontSession, String)> {
    let (app_id, user_c, origin_c) = (app.id, user.clone(), origin.clone());
    let row = st
        .db
        .write(move |c| {
            let row = session::create_storefront(
                c,
                &NewStorefrontSession {
                    user_id: user_c.id,
                    company_id: user_c.company_id,
                    application_id: app_id,
                    ip: &origin_c.ip,
                    user_agent: &origin_c.user_agent,
                    domain: domain.as_deref(),
                    ttl,
                },
            )?;
            store::audit(
                c,
                Some(user_c.company_id),
                Some(user_c.id),
                "login",
                &origin_c.ip,
                serde_json::json!({"kind": session::STOREFRONT_KIND, "application": app_id}),
            )?;
            Ok(row)
        })
        .await?;
    let value = cookie_value(&st.data_key, &row.id);
    Ok((row, value))
}

/// Storefront identifiers: an e-mail, or a phone in international form.
#[derive(Debug, Clone)]
pub enum Identifier {
    Email(Email),
    Phone(Phone),
}

impl Identifier {
    pub fn contact(&self) -> proof::Contact<'_> {
        match self {
            Identifier::Email(e) => proof::Contact::Email(e.as_str()),
            Identifier::Phone(p) => proof::Contact::Phone(p.as_str()),
        }
    }
}

pub fn identifier(text: &str, field: &str) -> ApiResult<Identifier> {
    if text.contains('@') {
        Ok(Identifier::Email(super::views::email(text, field)?))
    } else {
        Ok(Identifier::Phone(super::views::phone_from_parts(None, text, field)?))
    }
}

/// The application's customer holding this identifier, whatever its state.
pub fn find_customer(c: &mut Db, app: &ApplicationRow, id: &Identifier) -> ApiResult<Option<UserRow>> {
    let user = match id {
        Identifier::Email(e) => customer::find_by_email(c, app.company_id, e.as_str())?,
        Identifier::Phone(p) => customer::find_by_phone(c, app.company_id, p.as_str())?,
    };
    Ok(user.filter(|u| u.role() == Role::Customer && u.application_id.is_none_or(|a| a == app.id)))
}

/// Storefront password login, through the same password check as the staff logins
/// ([`crate::auth::service::verify_password`]) on a brute-force counter per application and
/// identifier (`fynd:<application>:<e-mail or E.164>`): at most 5 checks between locks, however
/// many requests run in parallel, and a locked account answers exactly like a wrong password.
/// Unknown identifier, wrong password and a blocked, archived or deleted account all answer the
/// same 401 `invalid_credentials`, after the same hashing work.
pub async fn password_login(
    st: &AppState,
    client: &AppClient,
    username: &str,
    password: String,
    origin: &Origin,
) -> ApiResult<(UserRow, StorefrontSession, String)> {
    if !client.settings.login.password {
        return Err(ApiError::Denied {
            code: "password_login_disabled",
            message: "password login is disabled for this application".into(),
        });
    }
    let id = identifier(username, "username")?;
    let subject = match &id {
        Identifier::Email(e) => format!("{}:{}", client.app.id, e.as_str()),
        Identifier::Phone(p) => format!("{}:{}", client.app.id, p.as_str()),
    };
    let keys = lockout::Keys::scoped("fynd", &subject, &origin.ip);
    let app = client.app.clone();
    let find = move |c: &mut Db| find_customer(c, &app, &id);
    let detail = serde_json::json!({"kind": session::STOREFRONT_KIND, "application": client.app.id});
    let user =
        auth_service::verify_password(st, keys, find, password, origin, Some(client.app.company_id), detail).await?;
    let (row, value) = start_session(st, &client.app, &user, origin, None, client.settings.session_ttl()).await?;
    Ok((user, row, value))
}
