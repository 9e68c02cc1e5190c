//! The delivery worker: claims due `send` and `media_fetch` jobs from the outbox and runs them
//! ([`outbox::deliver`], [`fetcher::fetch`]). Woken after commits, polling as a fallback.

use std::time::Duration;

use super::{fetcher, outbox};
use crate::core::{state::AppState, types::now};

const POLL: Duration = Duration::from_secs(2);

/// Runs until the process stops.
pub async fn run(st: AppState) {
    let owner = crate::core::crypto::random_hex_id();
    loop {
        let claimed = match outbox::claim(&st, &owner, "send").await {
            Ok(sends) => outbox::claim(&st, &owner, "media_fetch").await.map(|fetches| (sends, fetches)),
            Err(e) => Err(e),
        };
        match claimed {
            Ok((sends, fetches)) if !sends.is_empty() || !fetches.is_empty() => {
                for job in sends {
                    if let Err(e) = outbox::deliver(&st, &owner, &job).await {
                        tracing::warn!(job = job.id, error = ?e, "delivery attempt failed; retried after the lease");
                    }
                }
                for job in fetches {
                    if let Err(e) = fetcher::fetch(&st, &owner, &job).await {
                        tracing::warn!(job = job.id, error = ?e, "media fetch failed; retried after the lease");
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
