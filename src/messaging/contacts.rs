//! Contacts: the company's customers as the messaging API shows them (CONTRACT §3).

use super::{model::ContactView, store};
use crate::{
    core::{
        db::Db,
        error::{ApiError, ApiResult},
        types::{Email, Phone},
    },
    users::customer::{self, ProfileChange},
};

/// A page of customers, oldest first, optionally those whose phone contains `digits`.
pub fn page(
    c: &mut Db,
    company_id: i64,
    digits: Option<&str>,
    offset: i64,
    limit: i64,
) -> ApiResult<(i64, Vec<ContactView>)> {
    let (total, rows) = crate::users::store::customers_page(c, company_id, digits, offset, limit)?;
    let views = rows.into_iter().map(|u| store::contact_view(c, u)).collect::<ApiResult<Vec<_>>>()?;
    Ok((total, views))
}

/// Updates a customer's name, primary phone and primary e-mail; a new phone or e-mail is
/// unverified. A phone or e-mail that another customer of the company already has is a 409.
/// The login phone and e-mail of an account with credentials (a password, a linked provider,
/// a session ever opened: [`crate::users::store::has_credentials`]) are the customer's own: an
/// agent changing them could send the account's reset links or codes to itself, so that is
/// 409 `login_contact_locked` (README "Account takeover and abuse").
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
    let current_phone = crate::users::store::primary_phone(c, user.id)?;
    let current_email = crate::users::store::primary_email(c, user.id)?;
    let phone = phone.filter(|p| current_phone.as_deref() != Some(p.as_str()));
    let email = email.filter(|e| current_email.as_deref() != Some(e.as_str()));
    if (phone.is_some() || email.is_some()) && crate::users::store::has_credentials(c, user.id)? {
        return Err(ApiError::conflict(
            "login_contact_locked",
            "this customer signs in with its phone and e-mail; only the customer can change them",
        ));
    }
    if first_name.is_some() || last_name.is_some() {
        let change = ProfileChange {
            first_name: Some(first_name.as_deref().map(str::trim).unwrap_or(&user.first_name).to_owned()),
            last_name: Some(last_name.as_deref().map(str::trim).unwrap_or(&user.last_name).to_owned()),
            ..ProfileChange::default()
        };
        customer::update_profile(c, user.id, &change)?;
    }
    if let Some(phone) = phone {
        crate::users::store::deactivate_phones(c, user.id)?;
        crate::users::store::add_phone(c, user.id, company_id, &phone, true, false)
            .map_err(|e| e.on_unique("contact_exists", "another contact has this phone"))?;
    }
    if let Some(email) = email {
        crate::users::store::deactivate_emails(c, user.id)?;
        crate::users::store::add_email(c, user.id, company_id, &email, true, false)
            .map_err(|e| e.on_unique("contact_exists", "another contact has this e-mail"))?;
    }
    let user = store::customer(c, company_id, user_id)?;
    store::contact_view(c, user)
}
