//! The delivery worker: claims due `send`, `media_fetch`, `scheduled_send`, `unsnooze`,
//! `auto_assign` and `reaction` jobs from the outbox and runs them ([`outbox::deliver`],
//! [`fetcher::fetch`], `service::release_scheduled`, `service::reopen_snoozed`,
//! `teams::auto_assign`, [`outbox::deliver_reaction`]). Woken after commits, polling as a
//! fallback; a job queued to fall due later (a scheduled send, a snooze) is claimed when its
//! time comes.

use std::time::Duration;

use super::{fetcher, outbox};
use crate::{
    core::{state::AppState, types::now},
    messaging::{
        model::{REACTION_JOB, SCHEDULED_SEND_JOB},
        service::{release_scheduled, reopen_snoozed},
        teams::{AUTO_ASSIGN_JOB, auto_assign},
    },
};

const POLL: Duration = Duration::from_secs(2);

/// Runs until the process stops.
pub async fn run(st: AppState) {
    let owner = crate::core::crypto::random_hex_id();
    loop {
        match outbox::claim_kinds(&st, &owner, &outbox::WORKER_KINDS).await {
            Ok(jobs) if !jobs.is_empty() => {
                for job in jobs {
                    let done = match job.kind.as_str() {
                        "send" => outbox::deliver(&st, &owner, &job).await,
                        "media_fetch" => fetcher::fetch(&st, &owner, &job).await,
                        AUTO_ASSIGN_JOB => auto_assign(&st, &owner, &job).await,
                        SCHEDULED_SEND_JOB => release_scheduled(&st, &owner, &job).await,
                        REACTION_JOB => outbox::deliver_reaction(&st, &owner, &job).await,
                        _ => reopen_snoozed(&st, &owner, &job).await,
                    };
                    if let Err(e) = done {
                        tracing::warn!(job = job.id, kind = %job.kind, error = ?e, "outbox job failed; retried after the lease");
                    }
                }
                continue;
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = ?e, "claiming outbox jobs"),
        }
        let wait = match outbox::next_due(&st).await {
            Ok(Some(at)) => (at - now()).to_std().unwrap_or(Duration::ZERO).clamp(Duration::from_millis(5), POLL),
            Ok(None) => POLL,
            Err(e) => {
                tracing::warn!(error = ?e, "reading the outbox");
                POLL
            }
        };
        let _ = tokio::time::timeout(wait, st.outbox_wake.notified()).await;
    }
}
