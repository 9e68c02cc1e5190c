//! The outbox machinery every job kind shares (SCHEMA `outbox`): jobs are queued in the
//! transaction that makes them necessary ([`insert`]), claimed with a lease in the database
//! (`lease_owner`, `lease_until`) so two nodes never run one job at once and a job claimed by a
//! process that died is taken again once its lease expires, retried with backoff, and finished
//! exactly once. What a job does is its kind's: provider sends and media downloads
//! (`providers`), webhook deliveries (`hooks`), reopening snoozed conversations (`messaging`).
//! A job may fall due later than it is queued ([`insert_due`]): that is how scheduled sends
//! and snoozes wait, with no scheduler of their own.

use diesel::prelude::*;

use crate::core::{
    db::{self, Db, schema::outbox},
    error::{ApiError, ApiResult},
    state::AppState,
    types::now,
};

const BATCH: i64 = 32;
/// Attempts before a job is given up (a send fails, a webhook delivery is dead-lettered).
pub const MAX_ATTEMPTS: i32 = 8;

#[derive(Debug, Clone)]
pub struct Job {
    pub id: i64,
    pub kind: String,
    pub ref_id: String,
    pub attempts: i32,
    /// The company the job works for (its handler's tenancy filter).
    pub company_id: i64,
    /// Must never run twice ([`mark_at_most_once`]).
    pub at_most_once: bool,
    /// An earlier attempt of an at-most-once job began ([`begin_attempt`]) and recorded no
    /// outcome: its process died (or its lease ran out) during the call, which may have done
    /// its work.
    pub interrupted: bool,
    /// What the work returned, recorded before its effects were written ([`record_answer`]):
    /// the job's process died (or its lease ran out) in between. Finish it from this answer;
    /// do not do the work again.
    pub answer: Option<String>,
}

/// A job to queue in the caller's transaction (the outbox pattern, CONTRACT §6).
pub struct NewJob<'a> {
    pub kind: &'a str,
    pub ref_id: &'a str,
    pub company_id: i64,
    pub channel_id: Option<i64>,
    /// Jobs with the same key run one at a time, in the order they were queued
    /// ([`claim_ordered`]); `None`: no order.
    pub ordering_key: Option<&'a str>,
}

pub fn insert(c: &mut Db, job: &NewJob<'_>) -> ApiResult<()> {
    insert_due(c, job, now())
}

/// Queues a job that falls due at `due` (a scheduled send, a snoozed conversation's reopening:
/// issue 22); claimed, leased and finished like any other, so it runs once, on one node, also
/// after a restart. A time in the past is due at once.
pub fn insert_due(c: &mut Db, job: &NewJob<'_>, due: chrono::NaiveDateTime) -> ApiResult<()> {
    insert_many(c, &[(job, due)])
}

/// Queues several jobs, each due at its time, with one INSERT ([`db::insert_batch`]: a group
/// commit's sends in one round trip, not one per job).
pub fn insert_many(c: &mut Db, jobs: &[(&NewJob<'_>, chrono::NaiveDateTime)]) -> ApiResult<()> {
    let t = now();
    let rows: Vec<_> = jobs
        .iter()
        .map(|(job, due)| {
            (
                outbox::kind.eq(job.kind),
                outbox::ref_id.eq(job.ref_id),
                outbox::company_id.eq(job.company_id),
                outbox::channel_id.eq(job.channel_id),
                outbox::ordering_key.eq(job.ordering_key),
                outbox::next_attempt_at.eq(*due),
                outbox::created_at.eq(t),
            )
        })
        .collect();
    db::insert_batch(c, outbox::table, rows)
}

/// Claims due jobs of one kind (`send`, `media_fetch`): an UPDATE that re-checks the lease, so
/// concurrent claimers on other nodes cannot both win a row (on PostgreSQL the candidates are
/// also locked with `FOR UPDATE SKIP LOCKED`, so claimers do not queue behind each other).
pub async fn claim(st: &AppState, owner: &str, kind: &'static str) -> ApiResult<Vec<Job>> {
    claim_where(st, owner, vec![kind], false).await
}

/// Like [`claim`] for several kinds at once, in one transaction (a worker that runs them all:
/// one write per round, not one per kind); each [`Job`] says its kind.
pub async fn claim_kinds(st: &AppState, owner: &str, kinds: &[&'static str]) -> ApiResult<Vec<Job>> {
    claim_where(st, owner, kinds.to_vec(), false).await
}

/// Like [`claim`], but of each `ordering_key` only the oldest unfinished job is claimable: a
/// later job waits until the one before it is done (delivered or given up), also while that
/// one waits for its retry or is running on another node. Jobs without a key are claimed as
/// they fall due.
pub async fn claim_ordered(st: &AppState, owner: &str, kind: &'static str) -> ApiResult<Vec<Job>> {
    claim_where(st, owner, vec![kind], true).await
}

#[derive(diesel::QueryableByName)]
struct Id {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    id: i64,
}

/// Ids of due, unleased outbox jobs of a kind, oldest due first (the claim's candidates). On
/// PostgreSQL the rows are locked `FOR UPDATE SKIP LOCKED`, so concurrent claimers on other
/// nodes skip them instead of waiting; SQLite has one writer, so a plain SELECT is enough.
fn due_ids(c: &mut Db, kind: &str, t: chrono::NaiveDateTime, limit: i64) -> ApiResult<Vec<i64>> {
    use diesel::sql_types::{BigInt, Text, Timestamp};
    match c {
        Db::Sqlite(conn) => Ok(outbox::table
            .filter(outbox::done_at.is_null())
            .filter(outbox::kind.eq(kind))
            .filter(outbox::next_attempt_at.le(t))
            .filter(outbox::lease_until.is_null().or(outbox::lease_until.lt(t)))
            .order(outbox::next_attempt_at)
            .limit(limit)
            .select(outbox::id)
            .load(conn)?),
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

async fn claim_where(st: &AppState, owner: &str, kinds: Vec<&'static str>, ordered: bool) -> ApiResult<Vec<Job>> {
    let owner = owner.to_owned();
    let lease = chrono::Duration::seconds(st.config.outbox_lease_secs.max(1) as i64);
    st.db
        .write(move |c| {
            let t = now();
            let mut ids = Vec::new();
            for kind in &kinds {
                let mut due = due_ids(c, kind, t, BATCH)?;
                if ordered && !due.is_empty() {
                    due = heads_only(c, kind, due)?;
                }
                ids.extend(due);
            }
            if ids.is_empty() {
                return Ok(Vec::new());
            }
            // The candidates are this transaction's (locked on PostgreSQL, the one writer on
            // SQLite); the re-check of what can change under another claimer stays, by id only,
            // so the planner goes by primary key however stale its statistics of the queue.
            let still_free = outbox::id
                .eq_any(&ids)
                .and(outbox::done_at.is_null())
                .and(outbox::lease_until.is_null().or(outbox::lease_until.lt(t)));
            diesel::update(outbox::table.filter(still_free))
                .set((
                    outbox::lease_owner.eq(&owner),
                    outbox::lease_until.eq(t + lease),
                    outbox::attempts.eq(outbox::attempts + 1),
                ))
                .execute(c)?;
            type Claimed = (i64, String, String, i32, i64, bool, Option<chrono::NaiveDateTime>, Option<String>);
            let rows: Vec<Claimed> = outbox::table
                .filter(outbox::id.eq_any(&ids).and(outbox::lease_owner.eq(&owner)).and(outbox::lease_until.gt(t)))
                .order(outbox::id)
                .select((
                    outbox::id,
                    outbox::kind,
                    outbox::ref_id,
                    outbox::attempts,
                    outbox::company_id,
                    outbox::at_most_once,
                    outbox::attempt_started_at,
                    outbox::answer,
                ))
                .load(c)?;
            Ok(rows
                .into_iter()
                .map(|(id, kind, ref_id, attempts, company_id, at_most_once, started, answer)| Job {
                    id,
                    kind,
                    ref_id,
                    attempts,
                    company_id,
                    at_most_once,
                    interrupted: at_most_once && started.is_some() && answer.is_none(),
                    answer,
                })
                .collect())
        })
        .await
}

/// The candidates that are the oldest unfinished job of their ordering key (or have none).
fn heads_only(c: &mut Db, kind: &str, ids: Vec<i64>) -> ApiResult<Vec<i64>> {
    let keyed: Vec<(i64, Option<String>)> =
        outbox::table.filter(outbox::id.eq_any(&ids)).select((outbox::id, outbox::ordering_key)).load(c)?;
    let keys: Vec<String> = keyed.iter().filter_map(|(_, k)| k.clone()).collect();
    let heads: std::collections::HashMap<String, i64> = if keys.is_empty() {
        Default::default()
    } else {
        outbox::table
            .filter(outbox::done_at.is_null())
            .filter(outbox::kind.eq(kind))
            .filter(outbox::ordering_key.eq_any(&keys))
            .group_by(outbox::ordering_key)
            .select((outbox::ordering_key, diesel::dsl::min(outbox::id)))
            .load::<(Option<String>, Option<i64>)>(c)?
            .into_iter()
            .filter_map(|(k, id)| Some((k?, id?)))
            .collect()
    };
    Ok(keyed
        .into_iter()
        .filter(|(id, key)| key.as_ref().is_none_or(|k| heads.get(k) == Some(id)))
        .map(|(id, _)| id)
        .collect())
}

/// How many jobs are unfinished (the depth gauge).
pub fn depth(c: &mut Db) -> ApiResult<i64> {
    Ok(outbox::table.filter(outbox::done_at.is_null()).count().get_result(c)?)
}

/// Finishes the unfinished jobs of these kinds for `ref_id` that no worker holds (no lease, or
/// an expired one), recording `reason`; true when none is left unfinished (a leased one is in
/// flight and stays).
pub fn cancel_unleased(c: &mut Db, kinds: &[&str], ref_id: &str, reason: &str) -> ApiResult<bool> {
    let t = now();
    let open = || {
        outbox::table
            .filter(outbox::kind.eq_any(kinds))
            .filter(outbox::ref_id.eq(ref_id).and(outbox::done_at.is_null()))
    };
    diesel::update(open().filter(outbox::lease_until.is_null().or(outbox::lease_until.lt(t))))
        .set((outbox::done_at.eq(t), outbox::last_error.eq(reason)))
        .execute(c)?;
    let left: i64 = open().count().get_result(c)?;
    Ok(left == 0)
}

/// When the next claimable job of these kinds (unleased, or its lease expired) is due.
pub fn next_due(c: &mut Db, kinds: &[&str]) -> ApiResult<Option<chrono::NaiveDateTime>> {
    Ok(outbox::table
        .filter(outbox::done_at.is_null())
        .filter(outbox::kind.eq_any(kinds))
        .filter(outbox::lease_until.is_null().or(outbox::lease_until.lt(now())))
        .select(diesel::dsl::min(outbox::next_attempt_at))
        .first(c)?)
}

/// Exponential backoff with jitter: base·2^attempts (capped at 10 minutes), ±25 %.
pub fn backoff(base_ms: u64, attempts: i32) -> chrono::Duration {
    let base = (base_ms.max(1) as i64).saturating_mul(2_i64.saturating_pow(attempts.clamp(0, 20) as u32)).min(600_000);
    let jitter = (crate::core::crypto::random_bytes::<2>()[0] as i64 * base / 2 / 255) - base / 4;
    chrono::Duration::milliseconds(base + jitter)
}

/// Marks the job done, only if this worker still holds its lease (else the transaction rolls
/// back: the node that took the job over records the outcome).
pub fn finish(c: &mut Db, job_id: i64, owner: &str, error: Option<&str>) -> ApiResult<()> {
    let n = diesel::update(
        outbox::table.find(job_id).filter(outbox::lease_owner.eq(owner)).filter(outbox::done_at.is_null()),
    )
    .set((
        outbox::done_at.eq(now()),
        outbox::lease_until.eq(None::<chrono::NaiveDateTime>),
        outbox::last_error.eq(error),
    ))
    .execute(c)?;
    held(n)
}

/// Ok when an update by lease touched the job; else this worker no longer holds it (the
/// transaction rolls back: the node that took the job over records the outcome).
fn held(updated: usize) -> ApiResult<()> {
    if updated == 0 {
        return Err(ApiError::conflict("lease_lost", "the job's lease passed to another worker"));
    }
    Ok(())
}

/// Marks the unfinished jobs of this kind and reference as at-most-once, in the transaction
/// that queued them: their worker calls [`begin_attempt`] before the work, and a job found
/// begun but unfinished ([`Job::interrupted`]) is not run again (issue 23: a campaign never
/// sends a recipient twice, also when a process is killed in the middle of a provider call).
pub fn mark_at_most_once(c: &mut Db, kind: &str, ref_id: &str) -> ApiResult<()> {
    diesel::update(
        outbox::table.filter(outbox::kind.eq(kind).and(outbox::ref_id.eq(ref_id))).filter(outbox::done_at.is_null()),
    )
    .set(outbox::at_most_once.eq(true))
    .execute(c)?;
    Ok(())
}

/// Records, committed before the work starts, that an attempt of this job begins (only while
/// this worker holds it). [`retry_later`] clears it when the attempt ended with a definite
/// "not done".
pub fn begin_attempt(c: &mut Db, job_id: i64, owner: &str) -> ApiResult<()> {
    let n = diesel::update(
        outbox::table.find(job_id).filter(outbox::lease_owner.eq(owner)).filter(outbox::done_at.is_null()),
    )
    .set(outbox::attempt_started_at.eq(now()))
    .execute(c)?;
    held(n)
}

/// Records, committed before the next job's work starts, what this job's work returned (only
/// while this worker holds it), so that its effects can be written later, together with other
/// work, without the work being done again if the process dies first ([`Job::answer`]).
pub fn record_answer(c: &mut Db, job_id: i64, owner: &str, answer: &str) -> ApiResult<()> {
    let n = diesel::update(
        outbox::table.find(job_id).filter(outbox::lease_owner.eq(owner)).filter(outbox::done_at.is_null()),
    )
    .set(outbox::answer.eq(answer))
    .execute(c)?;
    held(n)
}

/// Releases the job for another attempt after `delay` (only while this worker holds it).
pub fn retry_later(c: &mut Db, job_id: i64, owner: &str, delay: chrono::Duration, reason: &str) -> ApiResult<()> {
    let n = diesel::update(
        outbox::table.find(job_id).filter(outbox::lease_owner.eq(owner)).filter(outbox::done_at.is_null()),
    )
    .set((
        outbox::next_attempt_at.eq(now() + delay),
        outbox::lease_owner.eq(None::<String>),
        outbox::lease_until.eq(None::<chrono::NaiveDateTime>),
        outbox::last_error.eq(reason),
        outbox::attempt_started_at.eq(None::<chrono::NaiveDateTime>),
    ))
    .execute(c)?;
    held(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_stays_within_jitter() {
        for attempt in 1..6 {
            let want = 100 * 2_i64.pow(attempt as u32);
            let got = backoff(100, attempt).num_milliseconds();
            assert!(got >= want * 3 / 4 && got <= want * 5 / 4, "attempt {attempt}: {got} vs {want}");
        }
        assert!(backoff(1000, 40).num_milliseconds() <= 750_000);
    }
}
