//! The storefront's one-statement session and user read ([`live`]): the one query on
//! `sessions` outside `core::auth::session`, which owns that table and every other storefront
//! session query (create, roll, list, revoke). Core imports no feature, so this join, which
//! returns the `users` row, cannot live there; and `users::store` cannot name the session row.

use diesel::prelude::*;

use crate::{
    core::{
        auth::session::{STOREFRONT_KIND, StorefrontSession},
        db::{
            Db,
            schema::{sessions, users},
        },
        error::ApiResult,
        types::now,
    },
    users::model::UserRow,
};

/// A live storefront session of this application and the user behind it: not revoked, not
/// expired, and the user still active (blocked, archived and deleted users are logged out).
pub fn live(
    c: &mut Db,
    session_id: &str,
    company_id: i64,
    application_id: i64,
) -> ApiResult<Option<(StorefrontSession, UserRow)>> {
    // The user comes with its session in this one statement, run on every storefront request;
    // so this join on `users` stays here, outside `users::store` (which cannot name the session row).
    let row: Option<(StorefrontSession, UserRow)> = sessions::table
        .inner_join(users::table)
        .filter(sessions::id.eq(session_id))
        .filter(sessions::kind.eq(STOREFRONT_KIND))
        .filter(sessions::company_id.eq(company_id))
        .filter(sessions::application_id.eq(application_id))
        .filter(sessions::revoked_at.is_null())
        .filter(sessions::expires_at.gt(now()))
        .select((StorefrontSession::as_select(), UserRow::as_select()))
        .first(c)
        .optional()?;
    Ok(row.filter(|(_, u)| u.is_active()))
}
