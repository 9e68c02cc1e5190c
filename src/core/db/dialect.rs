//! SQL that differs between PostgreSQL and SQLite and belongs to no table: the per-key
//! transaction lock. (The table queries that differ per backend live with their table's owner:
//! message search in `messaging::store`, the outbox claim in `core::outbox`.)

use diesel::{RunQueryDsl, sql_types::Text};

use super::Db;
use crate::core::error::ApiResult;

/// Serialises the writers of one logical `key` (a rate-limit window, say) until the end of the
/// current transaction, so a check and the insert that follows it cannot interleave with
/// another request's: `pg_advisory_xact_lock` on PostgreSQL; nothing on SQLite, where
/// [`super::Pool::write`] already admits one writer at a time.
pub fn lock_key(c: &mut Db, key: &str) -> ApiResult<()> {
    match c {
        Db::Sqlite(_) => Ok(()),
        Db::Pg(conn) => {
            diesel::sql_query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
                .bind::<Text, _>(key)
                .execute(conn)?;
            Ok(())
        }
    }
}
