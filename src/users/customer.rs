//! Customers (role `customer`) as the Fynd APIs see them: a user row with its e-mails and
//! phones. A customer belongs to an application when `application_id` is that application's,
//! and to every application of its company while `application_id` is unset (a WhatsApp
//! contact that never registered on a storefront): CONTRACT §9 "one identity".

use std::collections::HashMap;

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::model::UserRow;
use crate::core::{
    db::{Db, schema::*},
    error::{ApiError, ApiResult},
    query::{LIKE_ESCAPE, like_contains},
    types::{Email, Phone, Role, now},
};

diesel::define_sql_function!(fn lower(x: diesel::sql_types::Text) -> diesel::sql_types::Text);

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = user_emails)]
pub struct EmailRow {
    pub id: i64,
    pub user_id: i64,
    pub email: String,
    pub is_primary: bool,
    pub verified: bool,
    pub active: bool,
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = user_phones)]
pub struct PhoneRow {
    pub id: i64,
    pub user_id: i64,
    pub e164: String,
    pub country_code: i32,
    pub is_primary: bool,
    pub verified: bool,
    pub active: bool,
}

impl PhoneRow {
    /// The national part of the number (`8652523958` for `+918652523958`), as Fynd shows it.
    pub fn national(&self) -> &str {
        let cc = self.country_code.to_string();
        self.e164.trim_start_matches('+').strip_prefix(cc.as_str()).unwrap_or(&self.e164)
    }
}

/// A customer with its active e-mails and phones, primary first.
#[derive(Debug, Clone)]
pub struct Customer {
    pub user: UserRow,
    pub emails: Vec<EmailRow>,
    pub phones: Vec<PhoneRow>,
}

/// One e-mail or phone to store for a customer.
#[derive(Debug, Clone)]
pub struct NewContact<T> {
    pub value: T,
    pub primary: bool,
    pub verified: bool,
}

/// A search over e-mail, phone and name (CONTRACT §9 `q`).
pub type Boxed<'a> = users::BoxedQuery<'a, <Db as diesel::Connection>::Backend>;

fn visible<'a>(company_id: i64, application_id: i64) -> Boxed<'a> {
    users::table
        .filter(users::company_id.eq(company_id))
        .filter(users::role.eq(Role::Customer.as_str()))
        .filter(users::application_id.eq(application_id).or(users::application_id.is_null()))
        .into_boxed()
}

fn search<'a>(company_id: i64, application_id: i64, q: Option<&str>) -> Boxed<'a> {
    let query = visible(company_id, application_id);
    let Some(q) = q.map(str::trim).filter(|q| !q.is_empty()) else { return query };
    let like = like_contains(&q.to_lowercase());
    let digits: String = q.chars().filter(char::is_ascii_digit).collect();
    let by_email = user_emails::table
        .filter(user_emails::company_id.eq(company_id))
        .filter(user_emails::active)
        .filter(user_emails::email.like(like.clone()).escape(LIKE_ESCAPE))
        .select(user_emails::user_id);
    let by_name = lower(users::first_name)
        .like(like.clone())
        .escape(LIKE_ESCAPE)
        .or(lower(users::last_name).like(like).escape(LIKE_ESCAPE));
    if digits.len() >= 3 {
        let by_phone = user_phones::table
            .filter(user_phones::company_id.eq(company_id))
            .filter(user_phones::active)
            .filter(user_phones::e164.like(format!("%{digits}%")))
            .select(user_phones::user_id);
        query.filter(users::id.eq_any(by_email).or(by_name).or(users::id.eq_any(by_phone)))
    } else {
        query.filter(users::id.eq_any(by_email).or(by_name))
    }
}

/// A page of the application's customers matching `q`, oldest first, and the total count.
pub fn list(
    c: &mut Db,
    company_id: i64,
    application_id: i64,
    q: Option<&str>,
    limit: i64,
    offset: i64,
) -> ApiResult<(Vec<UserRow>, i64)> {
    let total: i64 = search(company_id, application_id, q).count().get_result(c)?;
    let rows = search(company_id, application_id, q)
        .order(users::id)
        .limit(limit)
        .offset(offset)
        .select(UserRow::as_select())
        .load(c)?;
    Ok((rows, total))
}

/// A customer visible to the application; anything else (another company's, another
/// application's, staff) is `NotFound`.
pub fn get(c: &mut Db, company_id: i64, application_id: i64, user_id: i64) -> ApiResult<UserRow> {
    Ok(visible(company_id, application_id).filter(users::id.eq(user_id)).select(UserRow::as_select()).first(c)?)
}

/// The user (any role) of the company holding this phone on an active row.
pub fn find_by_phone(c: &mut Db, company_id: i64, phone: &str) -> ApiResult<Option<UserRow>> {
    Ok(users::table
        .inner_join(user_phones::table.on(user_phones::user_id.eq(users::id)))
        .filter(user_phones::company_id.eq(company_id))
        .filter(user_phones::e164.eq(phone))
        .filter(user_phones::active)
        .select(UserRow::as_select())
        .first(c)
        .optional()?)
}

/// The user (any role) of the company holding this e-mail on an active row.
pub fn find_by_email(c: &mut Db, company_id: i64, email: &str) -> ApiResult<Option<UserRow>> {
    Ok(users::table
        .inner_join(user_emails::table.on(user_emails::user_id.eq(users::id)))
        .filter(user_emails::company_id.eq(company_id))
        .filter(user_emails::email.eq(email))
        .filter(user_emails::active)
        .select(UserRow::as_select())
        .first(c)
        .optional()?)
}

pub fn load(c: &mut Db, user: UserRow) -> ApiResult<Customer> {
    load_many(c, vec![user])?.pop().ok_or(ApiError::NotFound)
}

/// Attaches active e-mails and phones to each user, two queries for the whole page.
pub fn load_many(c: &mut Db, users: Vec<UserRow>) -> ApiResult<Vec<Customer>> {
    let ids: Vec<i64> = users.iter().map(|u| u.id).collect();
    let emails: Vec<EmailRow> = user_emails::table
        .filter(user_emails::user_id.eq_any(&ids))
        .filter(user_emails::active)
        .order((user_emails::is_primary.desc(), user_emails::id))
        .select(EmailRow::as_select())
        .load(c)?;
    let phones: Vec<PhoneRow> = user_phones::table
        .filter(user_phones::user_id.eq_any(&ids))
        .filter(user_phones::active)
        .order((user_phones::is_primary.desc(), user_phones::id))
        .select(PhoneRow::as_select())
        .load(c)?;
    let mut by_user: HashMap<i64, (Vec<EmailRow>, Vec<PhoneRow>)> = HashMap::new();
    for e in emails {
        by_user.entry(e.user_id).or_default().0.push(e);
    }
    for p in phones {
        by_user.entry(p.user_id).or_default().1.push(p);
    }
    Ok(users
        .into_iter()
        .map(|user| {
            let (emails, phones) = by_user.remove(&user.id).unwrap_or_default();
            Customer { user, emails, phones }
        })
        .collect())
}

fn taken(what: &'static str) -> ApiError {
    ApiError::conflict("user_exists", format!("this {what} belongs to another account"))
}

/// Adds an e-mail; an address already active on another account of the company is 409.
pub fn add_email(c: &mut Db, user: &UserRow, contact: &NewContact<Email>) -> ApiResult<()> {
    if let Some(owner) = find_by_email(c, user.company_id, contact.value.as_str())? {
        if owner.id != user.id {
            return Err(taken("e-mail"));
        }
        return Ok(());
    }
    if contact.primary {
        diesel::update(user_emails::table.filter(user_emails::user_id.eq(user.id)))
            .set(user_emails::is_primary.eq(false))
            .execute(c)?;
    }
    super::store::add_email(c, user.id, user.company_id, &contact.value, contact.primary, contact.verified)
        .map_err(|e| if e.is_unique_violation() { taken("e-mail") } else { e })?;
    Ok(())
}

/// Adds a phone; a number already active on another account of the company is 409.
pub fn add_phone(c: &mut Db, user: &UserRow, contact: &NewContact<Phone>) -> ApiResult<()> {
    if let Some(owner) = find_by_phone(c, user.company_id, contact.value.as_str())? {
        if owner.id != user.id {
            return Err(taken("phone number"));
        }
        return Ok(());
    }
    if contact.primary {
        diesel::update(user_phones::table.filter(user_phones::user_id.eq(user.id)))
            .set(user_phones::is_primary.eq(false))
            .execute(c)?;
    }
    super::store::add_phone(c, user.id, user.company_id, &contact.value, contact.primary, contact.verified)
        .map_err(|e| if e.is_unique_violation() { taken("phone number") } else { e })?;
    Ok(())
}

/// Replaces all e-mails of a user (platform `updateUser` with `emails`). When none is marked
/// primary the first becomes primary.
pub fn replace_emails(c: &mut Db, user: &UserRow, list: &[NewContact<Email>]) -> ApiResult<()> {
    diesel::delete(user_emails::table.filter(user_emails::user_id.eq(user.id))).execute(c)?;
    let first_primary = list.iter().position(|e| e.primary).unwrap_or(0);
    for (i, e) in list.iter().enumerate() {
        add_email(c, user, &NewContact { primary: i == first_primary, ..e.clone() })?;
    }
    Ok(())
}

/// Replaces all phones of a user, like [`replace_emails`].
pub fn replace_phones(c: &mut Db, user: &UserRow, list: &[NewContact<Phone>]) -> ApiResult<()> {
    diesel::delete(user_phones::table.filter(user_phones::user_id.eq(user.id))).execute(c)?;
    let first_primary = list.iter().position(|p| p.primary).unwrap_or(0);
    for (i, p) in list.iter().enumerate() {
        add_phone(c, user, &NewContact { primary: i == first_primary, ..p.clone() })?;
    }
    Ok(())
}

/// Removes one e-mail; the primary one cannot be removed while others exist.
pub fn remove_email(c: &mut Db, user_id: i64, email: &str) -> ApiResult<()> {
    let row: EmailRow = user_emails::table
        .filter(user_emails::user_id.eq(user_id))
        .filter(user_emails::email.eq(email))
        .filter(user_emails::active)
        .select(EmailRow::as_select())
        .first(c)?;
    if row.is_primary {
        return Err(ApiError::unprocessable("primary_contact", "make another e-mail primary before removing this one"));
    }
    diesel::delete(user_emails::table.find(row.id)).execute(c)?;
    Ok(())
}

pub fn remove_phone(c: &mut Db, user_id: i64, e164: &str) -> ApiResult<()> {
    let row: PhoneRow = user_phones::table
        .filter(user_phones::user_id.eq(user_id))
        .filter(user_phones::e164.eq(e164))
        .filter(user_phones::active)
        .select(PhoneRow::as_select())
        .first(c)?;
    if row.is_primary {
        return Err(ApiError::unprocessable("primary_contact", "make another number primary before removing this one"));
    }
    diesel::delete(user_phones::table.find(row.id)).execute(c)?;
    Ok(())
}

pub fn set_primary_email(c: &mut Db, user_id: i64, email: &str) -> ApiResult<()> {
    let id: i64 = user_emails::table
        .filter(user_emails::user_id.eq(user_id))
        .filter(user_emails::email.eq(email))
        .filter(user_emails::active)
        .select(user_emails::id)
        .first(c)?;
    diesel::update(user_emails::table.filter(user_emails::user_id.eq(user_id)))
        .set(user_emails::is_primary.eq(user_emails::id.eq(id)))
        .execute(c)?;
    Ok(())
}

pub fn set_primary_phone(c: &mut Db, user_id: i64, e164: &str) -> ApiResult<()> {
    let id: i64 = user_phones::table
        .filter(user_phones::user_id.eq(user_id))
        .filter(user_phones::e164.eq(e164))
        .filter(user_phones::active)
        .select(user_phones::id)
        .first(c)?;
    diesel::update(user_phones::table.filter(user_phones::user_id.eq(user_id)))
        .set(user_phones::is_primary.eq(user_phones::id.eq(id)))
        .execute(c)?;
    Ok(())
}

/// Deactivates a user's e-mails and phones so the same addresses can register again
/// (platform `archiveUser`).
pub fn release_contacts(c: &mut Db, user_id: i64) -> ApiResult<()> {
    diesel::update(user_emails::table.filter(user_emails::user_id.eq(user_id)))
        .set(user_emails::active.eq(false))
        .execute(c)?;
    diesel::update(user_phones::table.filter(user_phones::user_id.eq(user_id)))
        .set(user_phones::active.eq(false))
        .execute(c)?;
    Ok(())
}

pub fn set_status(c: &mut Db, user_id: i64, status: &str, deleted_at: Option<NaiveDateTime>) -> ApiResult<()> {
    diesel::update(users::table.find(user_id))
        .set((users::status.eq(status), users::deleted_at.eq(deleted_at), users::updated_at.eq(now())))
        .execute(c)?;
    Ok(())
}

/// Profile fields a customer or an admin may change; `None` leaves a field as it is.
#[derive(Debug, Default, Clone, AsChangeset)]
#[diesel(table_name = users)]
pub struct ProfileChange {
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub gender: Option<String>,
    pub dob: Option<String>,
    pub username: Option<String>,
    pub external_id: Option<String>,
    pub meta: Option<String>,
    pub attributes: Option<String>,
    pub profile_pic_url: Option<String>,
    pub application_id: Option<i64>,
    pub password_hash: Option<String>,
}

pub fn update_profile(c: &mut Db, user_id: i64, change: &ProfileChange) -> ApiResult<UserRow> {
    Ok(diesel::update(users::table.find(user_id))
        .set((change, users::updated_at.eq(now())))
        .returning(users::all_columns)
        .get_result(c)?)
}

/// Marks a user's phone verified (after an OTP to it).
pub fn mark_phone_verified(c: &mut Db, user_id: i64, e164: &str) -> ApiResult<()> {
    diesel::update(
        user_phones::table
            .filter(user_phones::user_id.eq(user_id))
            .filter(user_phones::e164.eq(e164))
            .filter(user_phones::active),
    )
    .set(user_phones::verified.eq(true))
    .execute(c)?;
    Ok(())
}

/// Marks a user's e-mail verified (after an OTP to it).
pub fn mark_email_verified(c: &mut Db, user_id: i64, email: &str) -> ApiResult<()> {
    diesel::update(
        user_emails::table
            .filter(user_emails::user_id.eq(user_id))
            .filter(user_emails::email.eq(email))
            .filter(user_emails::active),
    )
    .set(user_emails::verified.eq(true))
    .execute(c)?;
    Ok(())
}
