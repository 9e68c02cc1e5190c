//! The campaign runner: each node sends up to [`PER_NODE`] running campaigns at once, one task
//! per campaign, each holding the campaign's lease (so one node sends it, at its rate). A task
//! sends up to `ratePerSecond` recipients each second, each in one transaction with its claim
//! (exactly once), renews the lease between batches (a pause or a cancel is seen within a
//! second) and completes the campaign when nothing is queued. A node that dies leaves its
//! campaigns to another once their leases expire (`CONFAB_OUTBOX_LEASE_SECS`).

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use super::store::{self, CampaignRow, RecipientRow};
use crate::{
    core::{
        crypto::random_hex_id,
        error::{ApiError, ApiResult},
        state::AppState,
        types::Phone,
    },
    messaging::{
        self,
        service::{Content, SendRequest, Target},
    },
    users,
};

const POLL: Duration = Duration::from_secs(1);
/// Campaigns one node sends at the same time; more wait for a free slot (or another node).
pub const PER_NODE: usize = 8;

fn lease(st: &AppState) -> chrono::Duration {
    chrono::Duration::seconds(st.config.outbox_lease_secs.max(1) as i64)
}

/// Runs until the process stops.
pub async fn run(st: AppState) {
    let owner = random_hex_id();
    // The campaigns this node's tasks are sending: never claimed twice here, also when a slow
    // batch let a lease run out.
    let active: Arc<Mutex<HashSet<i64>>> = Arc::default();
    loop {
        let held: Vec<i64> = active.lock().map(|a| a.iter().copied().collect()).unwrap_or_default();
        let claimed = if held.len() < PER_NODE {
            let (owner, lease, room) = (owner.clone(), lease(&st), PER_NODE - held.len());
            st.db.write(move |c| store::claim_campaigns(c, &owner, lease, &held, room)).await
        } else {
            Ok(Vec::new())
        };
        match claimed {
            Ok(campaigns) => {
                for campaign in campaigns {
                    let id = campaign.id;
                    if let Ok(mut a) = active.lock() {
                        a.insert(id);
                    }
                    let (st, owner, active) = (st.clone(), owner.clone(), active.clone());
                    actix_web::rt::spawn(async move {
                        if let Err(e) = send_campaign(&st, &owner, campaign).await {
                            tracing::warn!(campaign = id, error = ?e, "campaign batch failed; retried after the lease");
                        }
                        if let Ok(mut a) = active.lock() {
                            a.remove(&id);
                        }
                        // A slot is free: look for waiting campaigns now.
                        st.campaign_wake.notify_one();
                    });
                }
            }
            Err(e) => tracing::warn!(error = ?e, "claiming campaigns"),
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = st.campaign_wake.notified() => {}
        }
    }
}

async fn send_campaign(st: &AppState, owner: &str, mut campaign: CampaignRow) -> ApiResult<()> {
    let lease = lease(st);
    loop {
        let started = Instant::now();
        let (id, rate) = (campaign.id, campaign.rate_per_second.max(1) as i64);
        let batch = st.db.run(move |c| store::next_queued(c, id, rate)).await?;
        if batch.is_empty() {
            let owner = owner.to_owned();
            return st
                .db
                .write(move |c| {
                    if !store::has_queued(c, id)? && store::renew(c, id, &owner, lease)?.is_some() {
                        store::set_status(c, id, "completed")?;
                    }
                    store::release(c, id, &owner)
                })
                .await;
        }
        for r in batch {
            send_one(st, &campaign, r).await?;
        }
        let renewed = {
            let owner = owner.to_owned();
            st.db.write(move |c| store::renew(c, id, &owner, lease)).await?
        };
        match renewed {
            Some(c) => campaign = c,
            None => {
                // Paused or cancelled (or the lease passed on): let go.
                let owner = owner.to_owned();
                return st.db.write(move |c| store::release(c, id, &owner)).await;
            }
        }
        tokio::time::sleep(Duration::from_secs(1).saturating_sub(started.elapsed())).await;
    }
}

/// Sends one recipient: in one transaction, claims it (`queued` → `sent`, or `skipped` for a
/// customer who opted out) and writes its message and delivery job. A request the messaging
/// rules refuse (the channel is gone, the template changed…) marks it `failed`.
async fn send_one(st: &AppState, campaign: &CampaignRow, r: RecipientRow) -> ApiResult<()> {
    let (company_id, sender, channel_id, template_id, campaign_id) =
        (campaign.company_id, campaign.created_by, campaign.channel_id, campaign.template_id, campaign.id);
    let default_params: Vec<String> = serde_json::from_str(&campaign.params).unwrap_or_default();
    let recipient_id = r.id;
    let attempt = st
        .db
        .write(move |c| {
            let phone = Phone::try_from(r.phone.clone()).map_err(|e| ApiError::field("phone", e.to_string()))?;
            let (user_id, _) = messaging::store::find_or_create_customer(c, company_id, &phone, "", "", false)?;
            let user = users::store::get(c, company_id, user_id)?;
            if user.role() != crate::core::types::Role::Customer {
                // The company's own staff (or a bot) has this number: not a customer to message.
                store::claim_recipient(c, r.id, store::FAILED, None, Some("the phone belongs to a staff member"))?;
                return Ok(Vec::new());
            }
            if user.opted_out {
                store::claim_recipient(c, r.id, store::SKIPPED, None, Some("opted_out"))?;
                return Ok(Vec::new());
            }
            if !store::claim_recipient(c, r.id, store::SENT, None, None)? {
                return Ok(Vec::new());
            }
            let params = r.params.as_deref().and_then(|p| serde_json::from_str(p).ok()).unwrap_or(default_params);
            let req = SendRequest {
                target: Target::Customer { user_id, channel_id: Some(channel_id) },
                content: Content::Template { template_id, params },
                client_id: Some(format!("campaign-{campaign_id}-{}", r.id)),
                private: false,
                schedule: None,
            };
            // A template is never a private note, so it mentions no one: no notices.
            let (sent, events, _) = messaging::service::send_tx(c, company_id, sender, &req)?;
            store::set_message(c, r.id, &sent.message.message_id)?;
            // Never sent twice, also when a process dies during the provider call.
            crate::core::outbox::mark_at_most_once(c, "send", &sent.message.message_id)?;
            Ok(events)
        })
        .await;
    match attempt {
        Ok(events) => {
            if !events.is_empty() {
                messaging::service::publish_events(st, events);
                st.outbox_wake.notify_one();
            }
            Ok(())
        }
        Err(e @ (ApiError::Internal(_) | ApiError::Unavailable(_))) => Err(e),
        Err(refused) => {
            let why = refused.to_string();
            st.db
                .write(move |c| store::claim_recipient(c, recipient_id, store::FAILED, None, Some(&why)).map(|_| ()))
                .await
        }
    }
}
