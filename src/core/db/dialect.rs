//! The few queries whose SQL differs between PostgreSQL and SQLite, one function per need,
//! both arms tested (STYLE "Diesel").

use diesel::{
    QueryableByName, RunQueryDsl,
    sql_types::{BigInt, Text},
};

use super::Db;
use crate::core::error::ApiResult;

#[derive(QueryableByName)]
struct Pk {
    #[diesel(sql_type = BigInt)]
    pk: i64,
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// Full-text search over a company's messages (CONTRACT §3 message-search): SQLite FTS5 over
/// `messages_fts`, PostgreSQL `tsvector` with `plainto_tsquery('simple', …)`. Every word of the
/// term must match. Returns message `pk`s newest first and the total number of matches.
pub fn search_messages(c: &mut Db, company_id: i64, term: &str, offset: i64, limit: i64) -> ApiResult<(Vec<i64>, i64)> {
    match c {
        Db::Sqlite(conn) => {
            // Each word quoted: user input never reaches FTS5's query syntax.
            let query: String = term
                .split_whitespace()
                .map(|w| format!("\"{}\"", w.replace('"', "\"\"")))
                .collect::<Vec<_>>()
                .join(" ");
            if query.is_empty() {
                return Ok((Vec::new(), 0));
            }
            let from = "FROM messages_fts JOIN messages m ON m.pk = messages_fts.rowid \
                        WHERE messages_fts MATCH ? AND m.company_id = ?";
            let pks: Vec<Pk> =
                diesel::sql_query(format!("SELECT m.pk AS pk {from} ORDER BY m.pk DESC LIMIT ? OFFSET ?"))
                    .bind::<Text, _>(&query)
                    .bind::<BigInt, _>(company_id)
                    .bind::<BigInt, _>(limit)
                    .bind::<BigInt, _>(offset)
                    .load(conn)?;
            let n: Count = diesel::sql_query(format!("SELECT count(*) AS n {from}"))
                .bind::<Text, _>(&query)
                .bind::<BigInt, _>(company_id)
                .get_result(conn)?;
            Ok((pks.into_iter().map(|p| p.pk).collect(), n.n))
        }
        Db::Pg(conn) => {
            let from = "FROM messages WHERE company_id = $2 AND content_tsv @@ plainto_tsquery('simple', $1)";
            let pks: Vec<Pk> = diesel::sql_query(format!("SELECT pk {from} ORDER BY pk DESC LIMIT $3 OFFSET $4"))
                .bind::<Text, _>(term)
                .bind::<BigInt, _>(company_id)
                .bind::<BigInt, _>(limit)
                .bind::<BigInt, _>(offset)
                .load(conn)?;
            let n: Count = diesel::sql_query(format!("SELECT count(*) AS n {from}"))
                .bind::<Text, _>(term)
                .bind::<BigInt, _>(company_id)
                .get_result(conn)?;
            Ok((pks.into_iter().map(|p| p.pk).collect(), n.n))
        }
    }
}

#[derive(QueryableByName)]
struct Id {
    #[diesel(sql_type = BigInt)]
    id: i64,
}

/// Ids of due, unleased outbox jobs of a kind, oldest due first (the claim's candidates). On
/// PostgreSQL the rows are locked `FOR UPDATE SKIP LOCKED`, so concurrent claimers on other
/// nodes skip them instead of waiting; SQLite has one writer, so a plain SELECT is enough.
pub fn due_outbox_ids(c: &mut Db, kind: &str, t: chrono::NaiveDateTime, limit: i64) -> ApiResult<Vec<i64>> {
    use diesel::sql_types::Timestamp;
    match c {
        Db::Sqlite(conn) => {
            use diesel::prelude::*;

            use super::schema::outbox;
            Ok(outbox::table
                .filter(outbox::done_at.is_null())
                .filter(outbox::kind.eq(kind))
                .filter(outbox::next_attempt_at.le(t))
                .filter(outbox::lease_until.is_null().or(outbox::lease_until.lt(t)))
                .order(outbox::next_attempt_at)
                .limit(limit)
                .select(outbox::id)
                .load(conn)?)
        }
        Db::Pg(conn) => {
            let rows: Vec<Id> = diesel::sql_query(
                "SELECT id FROM outbox WHERE done_at IS NULL AND kind = $1 AND next_attempt_at <= $2 \
                 AND (lease_until IS NULL OR lease_until < $2) ORDER BY next_attempt_at LIMIT $3 \
                 FOR UPDATE SKIP LOCKED",
            )
            .bind::<Text, _>(kind)
            .bind::<Timestamp, _>(t)
            .bind::<BigInt, _>(limit)
            .load(conn)?;
            Ok(rows.into_iter().map(|r| r.id).collect())
        }
    }
}

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
