//! The few queries whose SQL differs between PostgreSQL and SQLite, one function per need,
//! both arms tested (STYLE "Diesel").

use diesel::{
    QueryableByName, RunQueryDsl,
    sql_types::{BigInt, Text},
};

use super::Db;
use crate::error::ApiResult;

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
