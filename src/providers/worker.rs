//! The delivery worker: claims due `send`, `media_fetch`, `scheduled_send`, `unsnooze`,
//! `auto_assign` and `reaction` jobs from the outbox and runs them ([`outbox::deliver`],
//! [`fetcher::fetch`], `service::release_scheduled`, `service::reopen_snoozed`,
//! `teams::auto_assign`, [`outbox::deliver_reaction`]). Woken after commits, polling as a
//! fallback; a job queued to fall due later (a scheduled send, a snooze) is claimed when its
//! time comes. The claimed jobs run in `CONFAB_DELIVERY_LANES` lanes at once (default one), a
//! conversation's in one lane, in order; the next claim comes when every lane is through.

use std::time::Duration;

use super::{fetcher, outbox};
use crate::{
    core::{state::AppState, types::now},
    messaging::{
        model::{REACTION_JOB, SCHEDULED_SEND_JOB},
        service::{release_scheduled, reopen_snoozed},
        store,
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
                let lanes = lanes(&st, jobs).await;
                futures_util::future::join_all(lanes.into_iter().map(|lane| run_lane(&st, &owner, lane))).await;
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

/// Runs a lane's jobs one after another.
async fn run_lane(st: &AppState, owner: &str, jobs: Vec<outbox::Job>) {
    for job in jobs {
        let done = match job.kind.as_str() {
            "send" => outbox::deliver(st, owner, &job).await,
            "media_fetch" => fetcher::fetch(st, owner, &job).await,
            AUTO_ASSIGN_JOB => auto_assign(st, owner, &job).await,
            SCHEDULED_SEND_JOB => release_scheduled(st, owner, &job).await,
            REACTION_JOB => outbox::deliver_reaction(st, owner, &job).await,
            _ => reopen_snoozed(st, owner, &job).await,
        };
        if let Err(e) = done {
            tracing::warn!(job = job.id, kind = %job.kind, error = ?e, "outbox job failed; retried after the lease");
        }
    }
}

/// Splits claimed jobs into at most `CONFAB_DELIVERY_LANES` lanes, which run at once. The jobs
/// about one conversation's messages (sends, reactions) share a lane and keep their order; the
/// others go where their turn falls. One lane (the default) keeps every job in claim order.
async fn lanes(st: &AppState, jobs: Vec<outbox::Job>) -> Vec<Vec<outbox::Job>> {
    let n = st.config.delivery_lanes.max(1);
    if n == 1 || jobs.len() == 1 {
        return vec![jobs];
    }
    let message_of = |job: &outbox::Job| match job.kind.as_str() {
        "send" => Some(job.ref_id.clone()),
        REACTION_JOB => job.ref_id.split_once(':').map(|(m, _)| m.to_owned()),
        _ => None,
    };
    let ids: Vec<String> = jobs.iter().filter_map(message_of).collect();
    let found = if ids.is_empty() {
        Ok(Default::default())
    } else {
        st.db
            .run(move |c| {
                let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
                store::conversations_of_messages(c, &ids)
            })
            .await
    };
    let conversations = match found {
        Ok(found) => found,
        Err(e) => {
            // Without them, one lane: a conversation's jobs must not overtake each other.
            tracing::warn!(error = ?e, "looking up the conversations of claimed jobs");
            return vec![jobs];
        }
    };
    let mut keys: Vec<i64> = Vec::new();
    let mut lanes: Vec<Vec<outbox::Job>> = (0..n).map(|_| Vec::new()).collect();
    for job in jobs {
        // A conversation's jobs by its id; any other job by its own (negated, to stay apart).
        let key = message_of(&job).and_then(|m| conversations.get(&m).copied()).unwrap_or(-job.id);
        let at = keys.iter().position(|k| *k == key).unwrap_or_else(|| {
            keys.push(key);
            keys.len() - 1
        });
        lanes[at % n].push(job);
    }
    lanes.retain(|lane| !lane.is_empty());
    lanes
}
