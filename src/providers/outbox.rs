//! The delivery worker: takes `send` jobs from the outbox and hands them to the channel's
//! provider. A job is claimed with a lease in the database (`lease_owner`, `lease_until`), so
//! two nodes never send one message twice and a job claimed by a process that died is taken
//! again once its lease expires (SCHEMA `outbox`). Woken after commits, polling as a fallback.

use std::time::Duration;

use diesel::prelude::*;

use super::{Accepted, SendError, sandbox};
use crate::{
    db::{Db, schema::outbox},
    error::ApiResult,
    messaging::{service, store},
    state::AppState,
    types::now,
};

const LEASE: chrono::Duration = chrono::Duration::seconds(60);
const POLL: Duration = Duration::from_secs(2);
const BATCH: i64 = 32;
pub const MAX_ATTEMPTS: i32 = 8;

#[derive(Debug, Clone)]
pub struct Job {
    pub id: i64,
    pub ref_id: String,
    pub attempts: i32,
}

/// Runs until the process stops.
pub async fn run(st: AppState) {
    let owner = crate::crypto::random_hex_id();
    loop {
        match claim(&st, &owner).await {
            Ok(jobs) if !jobs.is_empty() => {
                for job in jobs {
                    if let Err(e) = deliver(&st, &job).await {
                        tracing::warn!(job = job.id, error = ?e, "delivery attempt failed; retried after the lease");
                    }
                }
                continue;
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = ?e, "claiming outbox jobs"),
        }
        let _ = tokio::time::timeout(POLL, st.outbox_wake.notified()).await;
    }
}

/// Claims due `send` jobs: an UPDATE that re-checks the lease, so concurrent claimers on other
/// nodes cannot both win a row.
pub async fn claim(st: &AppState, owner: &str) -> ApiResult<Vec<Job>> {
    let owner = owner.to_owned();
    st.db
        .write(move |c| {
            let t = now();
            let due = || {
                outbox::table
                    .filter(outbox::done_at.is_null())
                    .filter(outbox::kind.eq("send"))
                    .filter(outbox::next_attempt_at.le(t))
                    .filter(outbox::lease_until.is_null().or(outbox::lease_until.lt(t)))
            };
            let ids: Vec<i64> = due().order(outbox::next_attempt_at).limit(BATCH).select(outbox::id).load(c)?;
            if ids.is_empty() {
                return Ok(Vec::new());
            }
            diesel::update(due().filter(outbox::id.eq_any(&ids)))
                .set((
                    outbox::lease_owner.eq(&owner),
                    outbox::lease_until.eq(t + LEASE),
                    outbox::attempts.eq(outbox::attempts + 1),
                ))
                .execute(c)?;
            let rows: Vec<(i64, String, i32)> = outbox::table
                .filter(outbox::id.eq_any(&ids).and(outbox::lease_owner.eq(&owner)).and(outbox::lease_until.gt(t)))
                .select((outbox::id, outbox::ref_id, outbox::attempts))
                .load(c)?;
            Ok(rows.into_iter().map(|(id, ref_id, attempts)| Job { id, ref_id, attempts }).collect())
        })
        .await
}

async fn deliver(st: &AppState, job: &Job) -> ApiResult<()> {
    let message_id = job.ref_id.clone();
    let (message, channel) = st
        .db
        .run(move |c| {
            let m = store::message_by_id(c, &message_id)?;
            let ch = store::channel_by_id(c, m.channel_id)?;
            Ok((m, ch))
        })
        .await?;
    let outcome = match channel.provider.as_str() {
        "sandbox" => sandbox::send(&message),
        other => {
            Err(SendError::Permanent { code: "unsupported_provider".into(), message: format!("provider {other}") })
        }
    };
    let (job_id, attempts, message_id) = (job.id, job.attempts, job.ref_id.clone());
    match outcome {
        Ok(Accepted { provider_id, then }) => {
            let events = st
                .db
                .write(move |c| {
                    let events = service::record_sent_tx(c, &message_id, &provider_id)?;
                    finish(c, job_id, None)?;
                    Ok(events)
                })
                .await?;
            service::publish_events(st, events);
            let message_id = job.ref_id.clone();
            for status in then {
                let id = message_id.clone();
                let events = st.db.write(move |c| service::record_status_tx(c, &id, status)).await?;
                service::publish_events(st, events);
            }
        }
        Err(SendError::Permanent { code, message }) => {
            tracing::info!(job = job_id, %code, %message, "delivery failed permanently");
            let events = st
                .db
                .write(move |c| {
                    let events = service::record_failed_tx(c, &message_id, &code)?;
                    finish(c, job_id, Some(&message))?;
                    Ok(events)
                })
                .await?;
            service::publish_events(st, events);
        }
        Err(SendError::Transient(reason)) if attempts >= MAX_ATTEMPTS => {
            let events = st
                .db
                .write(move |c| {
                    let events = service::record_failed_tx(c, &message_id, "retries_exhausted")?;
                    finish(c, job_id, Some(&reason))?;
                    Ok(events)
                })
                .await?;
            service::publish_events(st, events);
        }
        Err(SendError::Transient(reason)) => {
            let delay = backoff(attempts);
            st.db.write(move |c| retry_later(c, job_id, delay, &reason)).await?;
        }
    }
    Ok(())
}

/// Exponential backoff with jitter: 2^attempts seconds (capped at 10 minutes), ±25 %.
pub fn backoff(attempts: i32) -> chrono::Duration {
    let base = 2_i64.saturating_pow(attempts.clamp(0, 20) as u32).min(600) * 1000;
    let jitter = (crate::crypto::random_bytes::<2>()[0] as i64 * base / 2 / 255) - base / 4;
    chrono::Duration::milliseconds(base + jitter)
}

fn finish(c: &mut Db, job_id: i64, error: Option<&str>) -> ApiResult<()> {
    diesel::update(outbox::table.find(job_id))
        .set((
            outbox::done_at.eq(now()),
            outbox::lease_until.eq(None::<chrono::NaiveDateTime>),
            outbox::last_error.eq(error),
        ))
        .execute(c)?;
    Ok(())
}

fn retry_later(c: &mut Db, job_id: i64, delay: chrono::Duration, reason: &str) -> ApiResult<()> {
    diesel::update(outbox::table.find(job_id))
        .set((
            outbox::next_attempt_at.eq(now() + delay),
            outbox::lease_owner.eq(None::<String>),
            outbox::lease_until.eq(None::<chrono::NaiveDateTime>),
            outbox::last_error.eq(reason),
        ))
        .execute(c)?;
    Ok(())
}
