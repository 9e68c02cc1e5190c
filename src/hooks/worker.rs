//! The outgoing-webhook worker: claims due deliveries from the outbox — of each subscription
//! and conversation only the oldest unfinished one ([`outbox::claim_ordered`]), so a receiver
//! gets a conversation's events in order — and POSTs them, signed, concurrently across
//! conversations. Each attempt is recorded; a non-2xx answer, a timeout or an unreachable
//! receiver is retried with backoff (`CONFAB_WEBHOOK_BACKOFF_MS`) and dead-lettered after
//! [`outbox::MAX_ATTEMPTS`]; a receiver address the outbound checks refuse fails at once.
//! Woken by published events that queued deliveries (the broker: events are published after
//! their commit; [`store::queued_so_far`]) and by replays, polling as a fallback.

use std::time::{Duration, Instant};

use super::{model::*, service, store};
use crate::core::{
    crypto::random_hex_id,
    error::{ApiError, ApiResult},
    net, outbox,
    redact::outbound_error,
    state::AppState,
    types::now,
};

const POLL: Duration = Duration::from_secs(2);
/// How long to wait when jobs are due but all wait behind an earlier one of their conversation
/// (being sent, or waiting for its retry).
const BLOCKED: Duration = Duration::from_millis(100);

/// Runs until the process stops.
pub async fn run(st: AppState) {
    let timeout = Duration::from_secs(st.config.webhook_timeout_secs.max(1));
    let http = match net::client_with(timeout, st.config.webhook_allow_private) {
        Ok(http) => http,
        Err(e) => {
            tracing::error!(error = ?e, "no HTTP client for outgoing webhooks; they stay queued");
            return;
        }
    };
    let owner = random_hex_id();
    let mut events = st.broker.subscribe();
    loop {
        let queued = store::queued_so_far();
        let wait = match st.db.run(|c| outbox::next_due(c, &[store::JOB_KIND])).await {
            Ok(Some(at)) if at <= now() => match outbox::claim_ordered(&st, &owner, store::JOB_KIND).await {
                Ok(jobs) if !jobs.is_empty() => {
                    let runs = jobs.iter().map(|job| deliver(&st, &http, &owner, job));
                    for (job, outcome) in jobs.iter().zip(futures_util::future::join_all(runs).await) {
                        if let Err(e) = outcome {
                            tracing::warn!(job = job.id, error = ?e, "webhook attempt not recorded; retried after the lease");
                        }
                    }
                    continue;
                }
                Ok(_) => BLOCKED,
                Err(e) => {
                    tracing::warn!(error = ?e, "claiming webhook deliveries");
                    POLL
                }
            },
            Ok(Some(at)) => (at - now()).to_std().unwrap_or(Duration::ZERO).clamp(Duration::from_millis(5), POLL),
            Ok(None) => POLL,
            Err(e) => {
                tracing::warn!(error = ?e, "reading the outbox");
                POLL
            }
        };
        let until = tokio::time::Instant::now() + wait;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(until) => break,
                _ = st.webhook_wake.notified() => break,
                got = events.recv() => {
                    if matches!(got, Err(tokio::sync::broadcast::error::RecvError::Closed)) {
                        tokio::time::sleep_until(until).await;
                        break;
                    }
                    // One look at the outbox per burst of events, and only when deliveries
                    // were queued since the last look (events are published after their
                    // commit, so the count already holds theirs).
                    while events.try_recv().is_ok() {}
                    if store::queued_so_far() != queued {
                        break;
                    }
                }
            }
        }
    }
}

/// What one POST came to.
struct Outcome {
    delivered: bool,
    code: Option<i32>,
    error: Option<String>,
    /// Not worth retrying (the address was refused).
    permanent: bool,
}

async fn deliver(st: &AppState, http: &reqwest::Client, owner: &str, job: &outbox::Job) -> ApiResult<()> {
    let (job_id, owner) = (job.id, owner.to_owned());
    let delivery_id: i64 =
        job.ref_id.parse().map_err(|_| ApiError::Internal(anyhow::anyhow!("bad webhook job ref")))?;
    let Some((d, sub)) = st.db.run(move |c| store::for_sending(c, delivery_id)).await? else {
        // The subscription was deleted with its deliveries.
        return st.db.write(move |c| outbox::finish(c, job_id, &owner, Some("the subscription was deleted"))).await;
    };
    if !sub.active {
        // Switched off after this delivery was queued: nothing more goes to its URL. The
        // delivery is failed (not an attempt: nothing was sent); `POST …/retry` replays it once
        // the subscription is active again.
        let reason = "the subscription is inactive";
        return st
            .db
            .write(move |c| {
                store::skip(c, d.id, reason)?;
                outbox::finish(c, job_id, &owner, Some(reason))
            })
            .await;
    }
    let secrets = service::signing_secrets(st, &sub.secrets)?;
    let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();
    let t = chrono::Utc::now().timestamp();
    let started = Instant::now();
    let sent = http
        .post(&sub.url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header("X-Confab-Signature", signature_header(&secrets, t, d.body.as_bytes()))
        .header("X-Confab-Event-Id", &d.event_id)
        .header("X-Confab-Delivery-Id", d.id.to_string())
        .body(d.body.clone())
        .send()
        .await;
    let outcome = match sent {
        Ok(res) if res.status().is_success() => {
            Outcome { delivered: true, code: Some(res.status().as_u16().into()), error: None, permanent: false }
        }
        Ok(res) => Outcome {
            delivered: false,
            code: Some(res.status().as_u16().into()),
            error: Some(format!("HTTP {}", res.status())),
            permanent: false,
        },
        Err(e) => {
            let permanent = net::is_refused(&e);
            Outcome { delivered: false, code: None, error: Some(outbound_error(e)), permanent }
        }
    };
    let duration_ms = started.elapsed().as_millis().min(i64::MAX as u128) as i64;
    let attempts = job.attempts;
    let delay = outbox::backoff(st.config.webhook_backoff_ms, attempts);
    st.db
        .write(move |c| {
            let attempt = store::NewAttempt {
                delivered: outcome.delivered,
                code: outcome.code,
                duration_ms,
                error: outcome.error.as_deref(),
            };
            let reason = outcome.error.as_deref().unwrap_or("");
            if outcome.delivered {
                store::record_attempt(c, d.id, &attempt, DELIVERED)?;
                outbox::finish(c, job_id, &owner, None)
            } else if outcome.permanent || attempts >= outbox::MAX_ATTEMPTS {
                store::record_attempt(c, d.id, &attempt, FAILED)?;
                outbox::finish(c, job_id, &owner, Some(reason))
            } else {
                store::record_attempt(c, d.id, &attempt, PENDING)?;
                outbox::retry_later(c, job_id, &owner, delay, reason)
            }
        })
        .await
}
