//! Diesel queries for companies and users. Company data is always looked up with its
//! company id (CONTRACT §2 tenancy).

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::model::{NewUser, PENDING, Person, UserRow};
use crate::core::{
    db::{Db, schema::*},
    error::ApiResult,
    types::{Email, Phone, Role, now},
};

pub fn insert_company(c: &mut Db, name: &str) -> ApiResult<i64> {
    Ok(diesel::insert_into(companies::table)
        .values((companies::name.eq(name), companies::created_at.eq(now())))
        .returning(companies::id)
        .get_result(c)?)
}

pub fn find_company_by_name(c: &mut Db, name: &str) -> ApiResult<Option<i64>> {
    Ok(companies::table.filter(companies::name.eq(name)).select(companies::id).first(c).optional()?)
}

pub fn company_exists(c: &mut Db, id: i64) -> ApiResult<bool> {
    Ok(diesel::select(diesel::dsl::exists(companies::table.find(id))).get_result(c)?)
}

pub fn insert_user(c: &mut Db, new: &NewUser<'_>) -> ApiResult<UserRow> {
    Ok(diesel::insert_into(users::table).values(new).returning(users::all_columns).get_result(c)?)
}

/// Creates a user with its primary e-mail and phone (both optional, both unverified unless
/// `verified`).
#[allow(clippy::too_many_arguments)]
pub fn create_person(
    c: &mut Db,
    company_id: i64,
    role: Role,
    first_name: &str,
    last_name: &str,
    password_hash: Option<&str>,
    email: Option<&Email>,
    phone: Option<&Phone>,
    verified: bool,
) -> ApiResult<UserRow> {
    let t = now();
    let user = insert_user(
        c,
        &NewUser {
            company_id,
            application_id: None,
            role: role.as_str(),
            first_name,
            last_name,
            password_hash,
            status: "active",
            created_at: t,
            updated_at: t,
        },
    )?;
    if let Some(email) = email {
        add_email(c, user.id, company_id, email, true, verified)?;
    }
    if let Some(phone) = phone {
        add_phone(c, user.id, company_id, phone, true, verified)?;
    }
    Ok(user)
}

pub fn add_email(
    c: &mut Db,
    user_id: i64,
    company_id: i64,
    email: &Email,
    primary: bool,
    verified: bool,
) -> ApiResult<()> {
    diesel::insert_into(user_emails::table)
        .values((
            user_emails::user_id.eq(user_id),
            user_emails::company_id.eq(company_id),
            user_emails::email.eq(email.as_str()),
            user_emails::is_primary.eq(primary),
            user_emails::verified.eq(verified),
            user_emails::active.eq(true),
            user_emails::created_at.eq(now()),
        ))
        .execute(c)?;
    Ok(())
}

pub fn add_phone(
    c: &mut Db,
    user_id: i64,
    company_id: i64,
    phone: &Phone,
    primary: bool,
    verified: bool,
) -> ApiResult<()> {
    diesel::insert_into(user_phones::table)
        .values((
            user_phones::user_id.eq(user_id),
            user_phones::company_id.eq(company_id),
            user_phones::e164.eq(phone.as_str()),
            user_phones::country_code.eq(i32::from(phone.country_code())),
            user_phones::is_primary.eq(primary),
            user_phones::verified.eq(verified),
            user_phones::active.eq(true),
            user_phones::created_at.eq(now()),
        ))
        .execute(c)?;
    Ok(())
}

/// Staff (admins and agents) log in with e-mail alone, so a staff e-mail is unique across
/// companies; this finds that one account, whatever its status — except a sign-up still
/// pending its e-mail verification, which does not hold the address (issue 17: an unverified
/// sign-up must not squat another company's future staff e-mail).
pub fn find_staff_by_email(c: &mut Db, email: &Email) -> ApiResult<Option<UserRow>> {
    Ok(users::table
        .inner_join(user_emails::table.on(user_emails::user_id.eq(users::id)))
        .filter(user_emails::email.eq(email.as_str()))
        .filter(user_emails::active)
        .filter(users::role.eq_any([Role::Admin.as_str(), Role::Agent.as_str()]))
        .filter(users::status.ne(PENDING))
        .select(UserRow::as_select())
        .first(c)
        .optional()?)
}

pub fn email_in_use_by_staff(c: &mut Db, email: &Email) -> ApiResult<bool> {
    Ok(find_staff_by_email(c, email)?.is_some())
}

pub fn get(c: &mut Db, company_id: i64, user_id: i64) -> ApiResult<UserRow> {
    Ok(users::table.filter(users::company_id.eq(company_id)).find(user_id).select(UserRow::as_select()).first(c)?)
}

/// Records a customer's STOP (`true`) or START (`false`).
pub fn set_opted_out(c: &mut Db, user_id: i64, opted_out: bool) -> ApiResult<()> {
    diesel::update(users::table.find(user_id).filter(users::opted_out.ne(opted_out)))
        .set((users::opted_out.eq(opted_out), users::updated_at.eq(now())))
        .execute(c)?;
    Ok(())
}

/// The company's customers with these WhatsApp business-scoped user ids: `(bsuid, user id)`.
pub fn customers_by_bsuid(c: &mut Db, company_id: i64, bsuids: &[&str]) -> ApiResult<Vec<(String, i64)>> {
    if bsuids.is_empty() {
        return Ok(Vec::new());
    }
    let rows: Vec<(Option<String>, i64)> = crate::on_backend!(c, |c| crate::core::db::CacheBySql::up_to(
        bsuids.len(),
        users::table
            .filter(users::company_id.eq(company_id))
            .filter(users::wa_bsuid.eq_any(bsuids))
            .select((users::wa_bsuid, users::id))
    )
    .load(c))?;
    Ok(rows.into_iter().filter_map(|(b, id)| Some((b?, id))).collect())
}

/// The customer's WhatsApp business-scoped user id, if known.
pub fn bsuid_of(c: &mut Db, user_id: i64) -> ApiResult<Option<String>> {
    Ok(users::table.find(user_id).select(users::wa_bsuid).first::<Option<String>>(c).optional()?.flatten())
}

/// Records a customer's business-scoped user id when the customer has none yet (a customer's
/// BSUID, once known, is their WhatsApp identity and does not change).
pub fn set_bsuid_if_unset(c: &mut Db, user_id: i64, bsuid: &str) -> ApiResult<()> {
    diesel::update(users::table.find(user_id).filter(users::wa_bsuid.is_null()))
        .set((users::wa_bsuid.eq(bsuid), users::updated_at.eq(now())))
        .execute(c)?;
    Ok(())
}

/// The company's users of one role that are not deleted, oldest first.
pub fn with_role(c: &mut Db, company_id: i64, role: Role) -> ApiResult<Vec<UserRow>> {
    Ok(users::table
        .filter(users::company_id.eq(company_id))
        .filter(users::role.eq(role.as_str()))
        .filter(users::deleted_at.is_null())
        .filter(users::status.ne("deleted"))
        .order(users::id)
        .select(UserRow::as_select())
        .load(c)?)
}

pub fn primary_email(c: &mut Db, user_id: i64) -> ApiResult<Option<String>> {
    Ok(user_emails::table
        .filter(user_emails::user_id.eq(user_id).and(user_emails::active))
        .order((user_emails::is_primary.desc(), user_emails::id))
        .select(user_emails::email)
        .first(c)
        .optional()?)
}

pub fn primary_phone(c: &mut Db, user_id: i64) -> ApiResult<Option<String>> {
    Ok(user_phones::table
        .filter(user_phones::user_id.eq(user_id).and(user_phones::active))
        .order((user_phones::is_primary.desc(), user_phones::id))
        .select(user_phones::e164)
        .first(c)
        .optional()?)
}

pub fn person(c: &mut Db, user: UserRow) -> ApiResult<Person> {
    let email = primary_email(c, user.id)?;
    let phone = primary_phone(c, user.id)?;
    Ok(Person { user, email, phone })
}

pub fn set_status(c: &mut Db, user_id: i64, status: &str) -> ApiResult<()> {
    diesel::update(users::table.find(user_id))
        .set((users::status.eq(status), users::updated_at.eq(now())))
        .execute(c)?;
    Ok(())
}

/// Marks the user's (active) address `email` verified.
pub fn set_email_verified(c: &mut Db, user_id: i64, email: &Email) -> ApiResult<()> {
    diesel::update(
        user_emails::table
            .filter(user_emails::user_id.eq(user_id))
            .filter(user_emails::email.eq(email.as_str()))
            .filter(user_emails::active),
    )
    .set(user_emails::verified.eq(true))
    .execute(c)?;
    Ok(())
}

pub fn set_password_hash(c: &mut Db, user_id: i64, hash: &str) -> ApiResult<()> {
    diesel::update(users::table.find(user_id))
        .set((users::password_hash.eq(hash), users::updated_at.eq(now())))
        .execute(c)?;
    Ok(())
}

pub fn application_ids(c: &mut Db, company_id: i64) -> ApiResult<Vec<i64>> {
    Ok(applications::table
        .filter(applications::company_id.eq(company_id))
        .order(applications::id)
        .select(applications::id)
        .load(c)?)
}

pub fn audit(
    c: &mut Db,
    company_id: Option<i64>,
    user_id: Option<i64>,
    kind: &str,
    ip: &str,
    detail: serde_json::Value,
) -> ApiResult<()> {
    diesel::insert_into(audit_log::table)
        .values((
            audit_log::company_id.eq(company_id),
            audit_log::user_id.eq(user_id),
            audit_log::kind.eq(kind),
            audit_log::ip.eq(ip),
            audit_log::detail.eq(detail.to_string()),
            audit_log::at.eq(now()),
        ))
        .execute(c)?;
    Ok(())
}

pub fn touch(c: &mut Db, user_id: i64, at: NaiveDateTime) -> ApiResult<()> {
    diesel::update(users::table.find(user_id)).set(users::updated_at.eq(at)).execute(c)?;
    Ok(())
}

/// "An account with credentials" (README "Account takeover and abuse"): someone can sign in to
/// it other than by proving one of its contacts anew, because it has a password, a linked
/// provider identity (`oauth_identities`), or any session ever opened for it — a storefront
/// cookie, an API token or a platform-made session, live, expired or revoked. A WhatsApp
/// contact that never signed in has none.
pub fn has_credentials(c: &mut Db, user_id: i64) -> ApiResult<bool> {
    let password: bool =
        diesel::select(diesel::dsl::exists(users::table.find(user_id).filter(users::password_hash.is_not_null())))
            .get_result(c)?;
    let linked: bool =
        diesel::select(diesel::dsl::exists(oauth_identities::table.filter(oauth_identities::user_id.eq(user_id))))
            .get_result(c)?;
    let signed_in: bool =
        diesel::select(diesel::dsl::exists(sessions::table.filter(sessions::user_id.eq(user_id)))).get_result(c)?;
    Ok(password || linked || signed_in)
}

/// The company's active staff as `(id, first name)`: whom an `@Name` can mention.
pub fn active_staff_first_names(c: &mut Db, company_id: i64) -> ApiResult<Vec<(i64, String)>> {
    Ok(users::table
        .filter(users::company_id.eq(company_id))
        .filter(users::role.eq_any(["admin", "agent"]))
        .filter(users::status.eq("active").and(users::deleted_at.is_null()))
        .order(users::id)
        .select((users::id, users::first_name))
        .load(c)?)
}
