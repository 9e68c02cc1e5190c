//! Diesel queries for companies and users. Company data is always looked up with its
//! company id (CONTRACT §2 tenancy).
//!
//! The `users` module owns the `users`, `user_phones`, `user_emails`, `oauth_identities` and
//! `invites` tables (issue 19): other features call these functions (or `customer`'s and
//! `group`'s) and write no query on them. Two joins stay with their other table: core's session guard (`core::auth::session`),
//! because core imports no feature, and fynd's storefront session lookup (`fynd::store::live`),
//! which takes the user in the same statement as its session row.

use std::collections::HashMap;

use chrono::NaiveDateTime;
use diesel::{
    dsl,
    expression::{SqlLiteral, UncheckedBind},
    prelude::*,
    sql_types::{Bool, Text},
};

use super::model::{Contact, InviteRow, NewUser, PENDING, Person, UserRow};
use crate::core::{
    auth::session,
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
    let linked = has_linked_identity(c, user_id)?;
    let signed_in = session::any_for_user(c, user_id)?;
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

/// The user with this id, whatever its company: for sign-in steps that reach a user through a
/// code or token and then check its company and status themselves.
pub fn find_by_id(c: &mut Db, user_id: i64) -> ApiResult<Option<UserRow>> {
    Ok(users::table.find(user_id).select(UserRow::as_select()).first(c).optional()?)
}

/// One row of the audit log: (id, kind, user id, ip, detail as JSON text, time).
pub type AuditRow = (i64, String, Option<i64>, String, String, NaiveDateTime);

/// A page of the company's audit log, newest first, optionally of one kind and one user, and
/// the count of all the rows that match.
pub fn audit_page(
    c: &mut Db,
    company_id: i64,
    kind: Option<&str>,
    user_id: Option<i64>,
    offset: i64,
    limit: i64,
) -> ApiResult<(i64, Vec<AuditRow>)> {
    let filtered = || {
        let mut query = audit_log::table.filter(audit_log::company_id.eq(company_id)).into_boxed();
        if let Some(kind) = kind {
            query = query.filter(audit_log::kind.eq(kind.to_owned()));
        }
        if let Some(user_id) = user_id {
            query = query.filter(audit_log::user_id.eq(user_id));
        }
        query
    };
    let total: i64 = filtered().count().get_result(c)?;
    let rows = filtered()
        .order(audit_log::id.desc())
        .offset(offset)
        .limit(limit)
        .select((audit_log::id, audit_log::kind, audit_log::user_id, audit_log::ip, audit_log::detail, audit_log::at))
        .load(c)?;
    Ok((total, rows))
}

/// The company of the user with this id (`None` when there is no such user): for audit rows.
pub fn company_of(c: &mut Db, user_id: i64) -> ApiResult<Option<i64>> {
    Ok(users::table.find(user_id).select(users::company_id).first(c).optional()?)
}

/// The company's admin or agent (any status) holding this phone on an active row: whom an SMS
/// login code goes to.
pub fn find_staff_by_phone(c: &mut Db, company_id: i64, e164: &str) -> ApiResult<Option<UserRow>> {
    Ok(users::table
        .inner_join(user_phones::table.on(user_phones::user_id.eq(users::id)))
        .filter(user_phones::e164.eq(e164))
        .filter(user_phones::active)
        .filter(user_phones::company_id.eq(company_id))
        .filter(users::role.eq_any([Role::Admin.as_str(), Role::Agent.as_str()]))
        .select(UserRow::as_select())
        .first(c)
        .optional()?)
}

/// The company's user with this `external_id` (the key of an API client's service account).
pub fn find_by_external_id(c: &mut Db, company_id: i64, external_id: &str) -> ApiResult<Option<UserRow>> {
    Ok(users::table
        .filter(users::company_id.eq(company_id))
        .filter(users::external_id.eq(external_id))
        .select(UserRow::as_select())
        .first(c)
        .optional()?)
}

/// Sets the user's `external_id` (leaves `updated_at` as it is: the row was just created).
pub fn set_external_id(c: &mut Db, user_id: i64, external_id: &str) -> ApiResult<()> {
    diesel::update(users::table.find(user_id)).set(users::external_id.eq(external_id)).execute(c)?;
    Ok(())
}

/// The company's user linked to this provider identity (`oauth_identities`), whatever its
/// status.
pub fn find_by_identity(c: &mut Db, company_id: i64, provider: &str, subject: &str) -> ApiResult<Option<UserRow>> {
    Ok(oauth_identities::table
        .filter(oauth_identities::provider.eq(provider))
        .filter(oauth_identities::subject.eq(subject))
        .inner_join(users::table)
        .filter(users::company_id.eq(company_id))
        .select(UserRow::as_select())
        .first(c)
        .optional()?)
}

/// Whether a provider identity (`oauth_identities`) is linked to the user.
pub fn has_linked_identity(c: &mut Db, user_id: i64) -> ApiResult<bool> {
    Ok(diesel::select(diesel::dsl::exists(oauth_identities::table.filter(oauth_identities::user_id.eq(user_id))))
        .get_result(c)?)
}

/// The user (any company) this provider identity is linked to, if any.
pub fn identity_user_id(c: &mut Db, provider: &str, subject: &str) -> ApiResult<Option<i64>> {
    Ok(oauth_identities::table
        .filter(oauth_identities::provider.eq(provider))
        .filter(oauth_identities::subject.eq(subject))
        .select(oauth_identities::user_id)
        .first(c)
        .optional()?)
}

/// Links a provider identity to the user (`(provider, subject)` is unique: a second link of it
/// is a database error).
pub fn link_identity(c: &mut Db, provider: &str, subject: &str, user_id: i64) -> ApiResult<()> {
    diesel::insert_into(oauth_identities::table)
        .values((
            oauth_identities::provider.eq(provider),
            oauth_identities::subject.eq(subject),
            oauth_identities::user_id.eq(user_id),
            oauth_identities::created_at.eq(now()),
        ))
        .execute(c)?;
    Ok(())
}

/// Drops the link of a provider identity, whichever user it names.
pub fn unlink_identity(c: &mut Db, provider: &str, subject: &str) -> ApiResult<()> {
    let link = oauth_identities::table
        .filter(oauth_identities::provider.eq(provider))
        .filter(oauth_identities::subject.eq(subject));
    diesel::delete(link).execute(c)?;
    Ok(())
}

/// Removes the user's password (`updated_at` moves): an account claimed by whoever proved its
/// contact keeps no credential of the earlier holder.
pub fn clear_password_hash(c: &mut Db, user_id: i64) -> ApiResult<()> {
    diesel::update(users::table.find(user_id))
        .set((users::password_hash.eq(None::<String>), users::updated_at.eq(now())))
        .execute(c)?;
    Ok(())
}

/// Sets the user's role.
pub fn set_role(c: &mut Db, user_id: i64, role: Role) -> ApiResult<()> {
    diesel::update(users::table.find(user_id))
        .set((users::role.eq(role.as_str()), users::updated_at.eq(now())))
        .execute(c)?;
    Ok(())
}

/// The company's admins and agents in any status, deleted ones included, oldest first.
pub fn list_staff(c: &mut Db, company_id: i64) -> ApiResult<Vec<UserRow>> {
    Ok(users::table
        .filter(users::company_id.eq(company_id))
        .filter(users::role.eq_any(["admin", "agent"]))
        .order(users::id)
        .select(UserRow::as_select())
        .load(c)?)
}

/// The active agents and admins of the company among `ids`.
pub fn active_staff_among(c: &mut Db, company_id: i64, ids: &[i64]) -> ApiResult<Vec<i64>> {
    Ok(users::table
        .filter(users::company_id.eq(company_id).and(users::id.eq_any(ids)))
        .filter(users::role.eq_any(["agent", "admin"]))
        .filter(users::status.eq("active").and(users::deleted_at.is_null()))
        .select(users::id)
        .load(c)?)
}

/// A page of the company's customers that are not deleted, oldest first, optionally those
/// with an active phone containing `digits`, and the total count.
pub fn customers_page(
    c: &mut Db,
    company_id: i64,
    digits: Option<&str>,
    offset: i64,
    limit: i64,
) -> ApiResult<(i64, Vec<UserRow>)> {
    let build = || {
        let mut q = users::table
            .filter(users::company_id.eq(company_id))
            .filter(users::role.eq("customer"))
            .filter(users::deleted_at.is_null())
            .into_boxed();
        if let Some(d) = digits {
            let matching = user_phones::table
                .filter(user_phones::company_id.eq(company_id))
                .filter(user_phones::active)
                .filter(user_phones::e164.like(format!("%{d}%")))
                .select(user_phones::user_id);
            q = q.filter(users::id.eq_any(matching));
        }
        q
    };
    let total: i64 = build().count().get_result(c)?;
    let rows = build().order(users::id).offset(offset).limit(limit).select(UserRow::as_select()).load(c)?;
    Ok((total, rows))
}

/// `lower(first_name || ' ' || last_name) LIKE $1 ESCAPE '\'`.
type NameLike = SqlLiteral<Bool, UncheckedBind<SqlLiteral<Bool>, dsl::AsExprOf<String, Text>>>;

/// The subquery of [`ids_named_like`].
pub type IdsNamedLike =
    dsl::Select<dsl::Filter<dsl::Filter<users::table, dsl::Eq<users::company_id, i64>>, NameLike>, users::id>;

/// The subquery of [`ids_with_phone_containing`].
pub type IdsWithPhoneContaining = dsl::Select<
    dsl::Filter<
        dsl::Filter<user_phones::table, dsl::Eq<user_phones::company_id, i64>>,
        dsl::Like<user_phones::e164, String>,
    >,
    user_phones::user_id,
>;

/// A subquery for another table's search (the conversation list's `q`): the ids of the
/// company's users whose "first last" name matches the LIKE `pattern` (lower-cased, escaped
/// with `\`). Not boxed: the multi-backend connection cannot run a boxed subselect.
pub fn ids_named_like(company_id: i64, pattern: String) -> IdsNamedLike {
    let name_like: NameLike =
        dsl::sql::<Bool>("lower(first_name || ' ' || last_name) LIKE ").bind::<Text, _>(pattern).sql(" ESCAPE '\\'");
    users::table.filter(users::company_id.eq(company_id)).filter(name_like).select(users::id)
}

/// A subquery for another table's search (the conversation list's `q`): the ids of the users
/// with a phone of the company, active or not, containing `digits`.
pub fn ids_with_phone_containing(company_id: i64, digits: &str) -> IdsWithPhoneContaining {
    user_phones::table
        .filter(user_phones::company_id.eq(company_id))
        .filter(user_phones::e164.like(format!("%{digits}%")))
        .select(user_phones::user_id)
}

/// The id of the company's user (any role) holding this phone on an active row. Runs on the
/// concrete connection: every inbound message without a known BSUID asks it.
pub fn id_by_phone(c: &mut Db, company_id: i64, phone: &Phone) -> ApiResult<Option<i64>> {
    Ok(crate::on_backend!(c, |c| user_phones::table
        .filter(user_phones::company_id.eq(company_id))
        .filter(user_phones::e164.eq(phone.as_str()))
        .filter(user_phones::active)
        .select(user_phones::user_id)
        .first(c)
        .optional())?)
}

/// What a conversation shows of its customer: (first name, last name, opted out, WhatsApp
/// BSUID).
pub type Profile = (String, String, bool, Option<String>);

/// For a page of conversations: each user's [`Profile`] by id. No company filter: the ids come
/// from the company's own rows.
pub fn profiles_by_id(c: &mut Db, ids: &[i64]) -> ApiResult<HashMap<i64, Profile>> {
    Ok(users::table
        .filter(users::id.eq_any(ids))
        .select((users::id, users::first_name, users::last_name, users::opted_out, users::wa_bsuid))
        .load::<(i64, String, String, bool, Option<String>)>(c)?
        .into_iter()
        .map(|(id, f, l, o, b)| (id, (f, l, o, b)))
        .collect())
}

/// [`primary_phone`] of each of these users, in one query (users without an active phone are
/// missing).
pub fn primary_phones_by_id(c: &mut Db, ids: &[i64]) -> ApiResult<HashMap<i64, String>> {
    let mut phones = HashMap::new();
    // Ascending by preference: the last row of each user, the one kept, is the one
    // `primary_phone` picks.
    for (uid, e164) in user_phones::table
        .filter(user_phones::user_id.eq_any(ids).and(user_phones::active))
        .order((user_phones::is_primary.asc(), user_phones::id.desc()))
        .select((user_phones::user_id, user_phones::e164))
        .load::<(i64, String)>(c)?
    {
        phones.insert(uid, e164);
    }
    Ok(phones)
}

/// [`primary_email`] of each of these users, in one query, like [`primary_phones_by_id`].
pub fn primary_emails_by_id(c: &mut Db, ids: &[i64]) -> ApiResult<HashMap<i64, String>> {
    let mut emails = HashMap::new();
    for (uid, email) in user_emails::table
        .filter(user_emails::user_id.eq_any(ids).and(user_emails::active))
        .order((user_emails::is_primary.asc(), user_emails::id.desc()))
        .select((user_emails::user_id, user_emails::email))
        .load::<(i64, String)>(c)?
    {
        emails.insert(uid, email);
    }
    Ok(emails)
}

/// The phone a message to the customer goes to: a primary active phone, else the newest
/// active one (where [`primary_phone`] falls back to the oldest).
pub fn recipient_phone(c: &mut Db, user_id: i64) -> ApiResult<Option<String>> {
    Ok(user_phones::table
        .filter(user_phones::user_id.eq(user_id).and(user_phones::active))
        .order((user_phones::is_primary.desc(), user_phones::id.desc()))
        .select(user_phones::e164)
        .first(c)
        .optional()?)
}

/// Deactivates the user's active phones (a new primary one follows).
pub fn deactivate_phones(c: &mut Db, user_id: i64) -> ApiResult<()> {
    diesel::update(user_phones::table.filter(user_phones::user_id.eq(user_id).and(user_phones::active)))
        .set(user_phones::active.eq(false))
        .execute(c)?;
    Ok(())
}

/// Deactivates the user's active e-mails (a new primary one follows).
pub fn deactivate_emails(c: &mut Db, user_id: i64) -> ApiResult<()> {
    diesel::update(user_emails::table.filter(user_emails::user_id.eq(user_id).and(user_emails::active)))
        .set(user_emails::active.eq(false))
        .execute(c)?;
    Ok(())
}

/// The user's active row for `contact`: (row id, verified).
pub fn contact_row(c: &mut Db, user_id: i64, contact: Contact<'_>) -> ApiResult<Option<(i64, bool)>> {
    Ok(match contact {
        Contact::Email(e) => user_emails::table
            .filter(user_emails::user_id.eq(user_id))
            .filter(user_emails::email.eq(e))
            .filter(user_emails::active)
            .select((user_emails::id, user_emails::verified))
            .first(c)
            .optional()?,
        Contact::Phone(p) => user_phones::table
            .filter(user_phones::user_id.eq(user_id))
            .filter(user_phones::e164.eq(p))
            .filter(user_phones::active)
            .select((user_phones::id, user_phones::verified))
            .first(c)
            .optional()?,
    })
}

/// Whether the user has a verified active e-mail or phone other than row `row_id` of
/// `contact`'s kind.
pub fn has_verified_contact_besides(c: &mut Db, user_id: i64, contact: Contact<'_>, row_id: i64) -> ApiResult<bool> {
    let (email_row, phone_row) = match contact {
        Contact::Email(_) => (row_id, -1),
        Contact::Phone(_) => (-1, row_id),
    };
    let email: bool = diesel::select(diesel::dsl::exists(
        user_emails::table
            .filter(user_emails::user_id.eq(user_id))
            .filter(user_emails::active)
            .filter(user_emails::verified)
            .filter(user_emails::id.ne(email_row)),
    ))
    .get_result(c)?;
    let phone: bool = diesel::select(diesel::dsl::exists(
        user_phones::table
            .filter(user_phones::user_id.eq(user_id))
            .filter(user_phones::active)
            .filter(user_phones::verified)
            .filter(user_phones::id.ne(phone_row)),
    ))
    .get_result(c)?;
    Ok(email || phone)
}

/// Marks row `row_id` (of `contact`'s kind, from [`contact_row`]) verified.
pub fn verify_contact_row(c: &mut Db, contact: Contact<'_>, row_id: i64) -> ApiResult<()> {
    match contact {
        Contact::Email(_) => {
            diesel::update(user_emails::table.find(row_id)).set(user_emails::verified.eq(true)).execute(c)?;
        }
        Contact::Phone(_) => {
            diesel::update(user_phones::table.find(row_id)).set(user_phones::verified.eq(true)).execute(c)?;
        }
    }
    Ok(())
}

/// Deactivates row `row_id` (of `contact`'s kind, from [`contact_row`]); when it was the
/// primary one, the user's oldest other active contact of that kind becomes primary.
pub fn release_contact_row(c: &mut Db, user_id: i64, contact: Contact<'_>, row_id: i64) -> ApiResult<()> {
    match contact {
        Contact::Email(_) => {
            diesel::update(user_emails::table.find(row_id))
                .set((user_emails::active.eq(false), user_emails::is_primary.eq(false)))
                .execute(c)?;
            let primary: bool = diesel::select(diesel::dsl::exists(
                user_emails::table
                    .filter(user_emails::user_id.eq(user_id))
                    .filter(user_emails::active)
                    .filter(user_emails::is_primary),
            ))
            .get_result(c)?;
            let next: Option<i64> = user_emails::table
                .filter(user_emails::user_id.eq(user_id))
                .filter(user_emails::active)
                .order(user_emails::id)
                .select(user_emails::id)
                .first(c)
                .optional()?;
            if let (false, Some(id)) = (primary, next) {
                diesel::update(user_emails::table.find(id)).set(user_emails::is_primary.eq(true)).execute(c)?;
            }
        }
        Contact::Phone(_) => {
            diesel::update(user_phones::table.find(row_id))
                .set((user_phones::active.eq(false), user_phones::is_primary.eq(false)))
                .execute(c)?;
            let primary: bool = diesel::select(diesel::dsl::exists(
                user_phones::table
                    .filter(user_phones::user_id.eq(user_id))
                    .filter(user_phones::active)
                    .filter(user_phones::is_primary),
            ))
            .get_result(c)?;
            let next: Option<i64> = user_phones::table
                .filter(user_phones::user_id.eq(user_id))
                .filter(user_phones::active)
                .order(user_phones::id)
                .select(user_phones::id)
                .first(c)
                .optional()?;
            if let (false, Some(id)) = (primary, next) {
                diesel::update(user_phones::table.find(id)).set(user_phones::is_primary.eq(true)).execute(c)?;
            }
        }
    }
    Ok(())
}

// ---- invites ----

/// Stores an invitation to join the company as `role` (single use; only its token's hash is
/// kept).
pub fn insert_invite(
    c: &mut Db,
    token_hash: &str,
    company_id: i64,
    role: Role,
    email: &Email,
    invited_by: i64,
    expires_at: NaiveDateTime,
) -> ApiResult<()> {
    diesel::insert_into(invites::table)
        .values((
            invites::token_hash.eq(token_hash),
            invites::company_id.eq(company_id),
            invites::role.eq(role.as_str()),
            invites::email.eq(email.as_str()),
            invites::invited_by.eq(invited_by),
            invites::expires_at.eq(expires_at),
            invites::created_at.eq(now()),
        ))
        .execute(c)?;
    Ok(())
}

/// The invitation with this token hash, unless it was used or expired by `at`.
pub fn open_invite(c: &mut Db, token_hash: &str, at: NaiveDateTime) -> ApiResult<Option<InviteRow>> {
    Ok(invites::table
        .filter(invites::token_hash.eq(token_hash))
        .filter(invites::used_at.is_null())
        .filter(invites::expires_at.gt(at))
        .select(InviteRow::as_select())
        .first(c)
        .optional()?)
}

/// Marks the invitation used at `at`, unless it already was (compare-and-set): `false` when
/// another sign-up took it first.
pub fn mark_invite_used(c: &mut Db, id: i64, at: NaiveDateTime) -> ApiResult<bool> {
    let claimed = diesel::update(invites::table.find(id).filter(invites::used_at.is_null()))
        .set(invites::used_at.eq(at))
        .execute(c)?;
    Ok(claimed > 0)
}
