//! Contacts: the company's customers as the messaging API shows them (CONTRACT §3).

use diesel::prelude::*;

use super::{model::ContactView, store};
use crate::{
    db::{
        Db,
        schema::{user_emails, user_phones, users},
    },
    error::{ApiError, ApiResult, is_unique_violation},
    types::{Email, Phone, now},
};

/// A page of customers, oldest first, optionally those whose phone contains `digits`.
pub fn page(
    c: &mut Db,
    company_id: i64,
    digits: Option<&str>,
    offset: i64,
    limit: i64,
) -> ApiResult<(i64, Vec<ContactView>)> {
    let build = || {
        let mut q = users::table
            .filter(users::company_id.eq(company_id))
            .filter(users::role.eq("customer"))
            .filter(users::deleted_at.is_null())
            .into_boxed();
        if let Some(d) = digits {
            let matching = user_phones::table
                .filter(user_phones::company_id.eq(company_id))
                .filter(user_phones::active.eq(true))
                .filter(user_phones::e164.like(format!("%{d}%")))
                .select(user_phones::user_id);
            q = q.filter(users::id.eq_any(matching));
        }
        q
    };
    let total: i64 = build().count().get_result(c)?;
    let rows = build()
        .order(users::id)
        .offset(offset)
        .limit(limit)
        .select(crate::users::model::UserRow::as_select())
        .load(c)?;
    let views = rows.into_iter().map(|u| store::contact_view(c, u)).collect::<ApiResult<Vec<_>>>()?;
    Ok((total, views))
}

/// Updates a customer's name, primary phone and primary e-mail. A phone or e-mail that another
/// customer of the company already has is a 409.
pub fn update(
    c: &mut Db,
    company_id: i64,
    user_id: i64,
    first_name: Option<String>,
    last_name: Option<String>,
    phone: Option<Phone>,
    email: Option<Email>,
) -> ApiResult<ContactView> {
    let user = store::customer(c, company_id, user_id)?;
    if first_name.is_some() || last_name.is_some() {
        diesel::update(users::table.find(user.id))
            .set((
                users::first_name.eq(first_name.as_deref().map(str::trim).unwrap_or(&user.first_name)),
                users::last_name.eq(last_name.as_deref().map(str::trim).unwrap_or(&user.last_name)),
                users::updated_at.eq(now()),
            ))
            .execute(c)?;
    }
    let taken = |e: diesel::result::Error, field: &str| -> ApiError {
        if is_unique_violation(&e) {
            ApiError::conflict("contact_exists", format!("another contact has this {field}"))
        } else {
            e.into()
        }
    };
    if let Some(phone) = phone {
        let current = crate::users::store::primary_phone(c, user.id)?;
        if current.as_deref() != Some(phone.as_str()) {
            diesel::update(
                user_phones::table.filter(user_phones::user_id.eq(user.id).and(user_phones::active.eq(true))),
            )
            .set(user_phones::active.eq(false))
            .execute(c)?;
            diesel::insert_into(user_phones::table)
                .values((
                    user_phones::user_id.eq(user.id),
                    user_phones::company_id.eq(company_id),
                    user_phones::e164.eq(phone.as_str()),
                    user_phones::country_code.eq(i32::from(phone.country_code())),
                    user_phones::is_primary.eq(true),
                    user_phones::verified.eq(false),
                    user_phones::active.eq(true),
                    user_phones::created_at.eq(now()),
                ))
                .execute(c)
                .map_err(|e| taken(e, "phone"))?;
        }
    }
    if let Some(email) = email {
        let current = crate::users::store::primary_email(c, user.id)?;
        if current.as_deref() != Some(email.as_str()) {
            diesel::update(
                user_emails::table.filter(user_emails::user_id.eq(user.id).and(user_emails::active.eq(true))),
            )
            .set(user_emails::active.eq(false))
            .execute(c)?;
            diesel::insert_into(user_emails::table)
                .values((
                    user_emails::user_id.eq(user.id),
                    user_emails::company_id.eq(company_id),
                    user_emails::email.eq(email.as_str()),
                    user_emails::is_primary.eq(true),
                    user_emails::verified.eq(false),
                    user_emails::active.eq(true),
                    user_emails::created_at.eq(now()),
                ))
                .execute(c)
                .map_err(|e| taken(e, "e-mail"))?;
        }
    }
    let user = store::customer(c, company_id, user_id)?;
    store::contact_view(c, user)
}
