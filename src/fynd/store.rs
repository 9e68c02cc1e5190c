//! Storefront sessions: rows of the shared `sessions` table with kind `fynd_cookie`, bound to
//! one application; the `f.session` cookie carries the id (CONTRACT §9).

use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::{
    auth::service::Origin,
    core::{
        crypto::random_hex_id,
        db::{
            Db,
            schema::{sessions, users},
        },
        error::ApiResult,
        types::now,
    },
    users::model::UserRow,
};

pub const KIND: &str = "fynd_cookie";

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = sessions)]
pub struct SessionRow {
    pub id: String,
    pub user_id: i64,
    pub application_id: Option<i64>,
    pub ip: String,
    pub user_agent: String,
    pub domain: Option<String>,
    pub last_seen_at: NaiveDateTime,
    pub expires_at: NaiveDateTime,
}

pub fn create(
    c: &mut Db,
    user: &UserRow,
    application_id: i64,
    origin: &Origin,
    domain: Option<&str>,
    ttl: chrono::Duration,
) -> ApiResult<SessionRow> {
    let id = random_hex_id();
    let t = now();
    let ua: String = origin.user_agent.chars().take(512).collect();
    diesel::insert_into(sessions::table)
        .values((
            sessions::id.eq(&id),
            sessions::user_id.eq(user.id),
            sessions::company_id.eq(user.company_id),
            sessions::kind.eq(KIND),
            sessions::application_id.eq(application_id),
            sessions::ip.eq(&origin.ip),
            sessions::user_agent.eq(&ua),
            sessions::domain.eq(domain),
            sessions::created_at.eq(t),
            sessions::last_seen_at.eq(t),
            sessions::expires_at.eq(t + ttl),
        ))
        .execute(c)?;
    Ok(SessionRow {
        id,
        user_id: user.id,
        application_id: Some(application_id),
        ip: origin.ip.clone(),
        user_agent: ua,
        domain: domain.map(str::to_owned),
        last_seen_at: t,
        expires_at: t + ttl,
    })
}

/// A live storefront session of this application and the user behind it: not revoked, not
/// expired, and the user still active (blocked, archived and deleted users are logged out).
pub fn live(
    c: &mut Db,
    session_id: &str,
    company_id: i64,
    application_id: i64,
) -> ApiResult<Option<(SessionRow, UserRow)>> {
    // The user comes with its session in this one statement, run on every storefront request;
    // so this join on `users` stays here, outside `users::store` (which cannot name `SessionRow`).
    let row: Option<(SessionRow, UserRow)> = sessions::table
        .inner_join(users::table)
        .filter(sessions::id.eq(session_id))
        .filter(sessions::kind.eq(KIND))
        .filter(sessions::company_id.eq(company_id))
        .filter(sessions::application_id.eq(application_id))
        .filter(sessions::revoked_at.is_null())
        .filter(sessions::expires_at.gt(now()))
        .select((SessionRow::as_select(), UserRow::as_select()))
        .first(c)
        .optional()?;
    Ok(row.filter(|(_, u)| u.is_active()))
}

/// Rolling sessions: pushes the expiry forward from now.
pub fn roll(c: &mut Db, session_id: &str, expires_at: NaiveDateTime) -> ApiResult<()> {
    diesel::update(sessions::table.find(session_id))
        .set((sessions::last_seen_at.eq(now()), sessions::expires_at.eq(expires_at)))
        .execute(c)?;
    Ok(())
}

/// The user's live storefront sessions in this application, newest first.
pub fn list(c: &mut Db, user_id: i64, application_id: i64) -> ApiResult<Vec<SessionRow>> {
    Ok(sessions::table
        .filter(sessions::user_id.eq(user_id))
        .filter(sessions::kind.eq(KIND))
        .filter(sessions::application_id.eq(application_id))
        .filter(sessions::revoked_at.is_null())
        .filter(sessions::expires_at.gt(now()))
        .order(sessions::created_at.desc())
        .select(SessionRow::as_select())
        .load(c)?)
}

/// Revokes one live session of the user; `false` when there is no such live session.
pub fn revoke(c: &mut Db, user_id: i64, session_id: &str, reason: &str) -> ApiResult<bool> {
    let n = diesel::update(
        sessions::table
            .filter(sessions::id.eq(session_id))
            .filter(sessions::user_id.eq(user_id))
            .filter(sessions::revoked_at.is_null()),
    )
    .set((sessions::revoked_at.eq(now()), sessions::revoke_reason.eq(reason)))
    .execute(c)?;
    Ok(n > 0)
}
