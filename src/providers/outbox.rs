//! The outbox's `send` jobs: handed to the channel's provider ([`deliver`]). Claims, leases,
//! retries and finishing are `core::outbox`'s (re-exported here): a job is claimed with a lease
//! in the database, so two nodes never send one message twice and a job claimed by a process
//! that died is taken again once its lease expires (SCHEMA `outbox`). The loop that runs the
//! jobs is `worker`.

use std::time::Duration;

use super::{Accepted, Outbound, OutboundBody, OutboundMedia, Provider, Recipient, SendError};
use crate::{
    core::{
        db::Db,
        error::{ApiError, ApiResult},
        state::AppState,
    },
    messaging::{
        model::{MediaKind, MessageRow, REACTION_JOB, SCHEDULED_SEND_JOB, Status},
        service, store,
    },
};

pub use crate::core::outbox::{
    Job, MAX_ATTEMPTS, backoff, begin_attempt, claim, claim_kinds, finish, record_answer, retry_later,
};

/// The error code of a message whose at-most-once send was interrupted (the process died, or
/// no answer came, after the request may have reached the provider): it is not sent again.
pub const OUTCOME_UNKNOWN: &str = "outcome_unknown";

/// The job kinds the delivery worker runs (`worker`).
pub const WORKER_KINDS: [&str; 6] = [
    "send",
    "media_fetch",
    SCHEDULED_SEND_JOB,
    service::UNSNOOZE_JOB,
    crate::messaging::teams::AUTO_ASSIGN_JOB,
    REACTION_JOB,
];

/// Updates the depth gauge and tells when the next unleased job of the delivery worker
/// ([`WORKER_KINDS`]) is due.
pub async fn next_due(st: &AppState) -> ApiResult<Option<chrono::NaiveDateTime>> {
    let (depth, next) = st
        .db
        .run(|c| {
            let depth = crate::core::outbox::depth(c)?;
            Ok((depth, crate::core::outbox::next_due(c, &WORKER_KINDS)?))
        })
        .await?;
    st.metrics.outbox_depth.set(depth);
    Ok(next)
}

/// The provider-neutral description of a stored outbound message: the customer's number (or,
/// for a customer WhatsApp gave no number for, their business-scoped user id), the text, the
/// template (name, language, params) or the attachments as links.
///
/// Media go by signed link (`media::signed_url`, valid an hour), which the provider fetches
/// without credentials (CONTRACT §7).
fn outbound(c: &mut Db, m: &MessageRow, customer_id: i64, st: &AppState) -> ApiResult<Result<Outbound, SendError>> {
    let to = match recipient(c, customer_id)? {
        Ok(to) => to,
        Err(e) => return Ok(Err(e)),
    };
    let text = m.content.clone().unwrap_or_default();
    let body = match m.kind.as_str() {
        "text" => OutboundBody::Text(text),
        "template" => {
            let Some(tpl) = m.template_id.map(|id| store::template(c, m.company_id, id)).transpose()? else {
                return Ok(Err(SendError::Permanent {
                    code: "no_template".into(),
                    message: "template missing".into(),
                }));
            };
            OutboundBody::Template {
                name: tpl.name,
                language: tpl.language,
                params: serde_json::from_str(&m.params).unwrap_or_default(),
                rendered: text,
                content_sid: tpl.content_sid,
            }
        }
        _ => {
            let items: Vec<OutboundMedia> = crate::media::db::attachments_of(c, std::slice::from_ref(&m.id))?
                .into_iter()
                .map(|a| OutboundMedia {
                    kind: MediaKind::parse(&a.kind).unwrap_or(MediaKind::Document),
                    url: crate::media::signed_url(st, a.id, Duration::from_secs(3600)),
                    filename: a.filename,
                })
                .collect();
            if items.is_empty() {
                return Ok(Err(SendError::Permanent { code: "no_media".into(), message: "no attachment".into() }));
            }
            OutboundBody::Media { items, caption: m.content.clone().filter(|c| !c.is_empty()) }
        }
    };
    Ok(Ok(Outbound { message_id: m.id.clone(), to, body }))
}

/// Who a message to this customer goes to: their phone, or their WhatsApp business-scoped user
/// id when WhatsApp gave no phone.
fn recipient(c: &mut Db, customer_id: i64) -> ApiResult<Result<Recipient, SendError>> {
    Ok(match crate::users::store::recipient_phone(c, customer_id)? {
        Some(phone) => Ok(Recipient::Phone(phone)),
        None => match crate::users::store::bsuid_of(c, customer_id)? {
            Some(bsuid) => Ok(Recipient::Bsuid(bsuid)),
            None => {
                let message = "the customer has no phone".into();
                Err(SendError::Permanent { code: "no_phone".into(), message })
            }
        },
    })
}

/// Sends one `send` job's message and records the outcome. An at-most-once job (a campaign's
/// send) records that its attempt began before calling the provider; one found begun and
/// unfinished, or one whose call got no answer, is not repeated: its message fails with
/// [`OUTCOME_UNKNOWN`] (README "Campaigns").
///
/// The provider's answer is committed on its own (one small write, [`record_answer`]) before the
/// next job's call; the job's end, `SENT` and the statuses reported with the answer follow in
/// the group commit, shared with the ingest, without the worker waiting for it
/// ([`record_sent`]). A job found answered but unfinished is finished from its answer.
pub async fn deliver(st: &AppState, owner: &str, job: &Job) -> ApiResult<()> {
    if let Some(answer) = &job.answer {
        let accepted = decode_answer(answer)?;
        return record_sent(st.clone(), owner.to_owned(), job.id, job.ref_id.clone(), None, accepted).await;
    }
    if job.interrupted {
        tracing::warn!(job = job.id, "an at-most-once send was interrupted; its outcome is unknown, not sent again");
        return give_up(st, owner, job, "interrupted during the provider call", OUTCOME_UNKNOWN).await;
    }
    let (message_id, company_id) = (job.ref_id.clone(), job.company_id);
    let state = st.clone();
    let loaded = st
        .db
        .run(move |c| {
            let (m, ch, customer_id) = store::message_to_deliver(c, company_id, &message_id)?;
            let out = outbound(c, &m, customer_id, &state)?;
            Ok((m, ch, out))
        })
        .await;
    let (message, channel, out) = match loaded {
        Ok(found) => found,
        // The channel was deleted (or the message is gone): nothing can ever send it.
        Err(ApiError::NotFound) => {
            return give_up(st, owner, job, "the message or its channel no longer exists", "channel_gone").await;
        }
        Err(e) => return Err(e),
    };
    let provider = Provider::for_channel(st, &channel);
    let name = provider.as_ref().map(Provider::name).unwrap_or("unknown");
    if job.at_most_once {
        let (job_id, owner) = (job.id, owner.to_owned());
        st.db.write(move |c| begin_attempt(c, job_id, &owner)).await?;
    }
    let outcome = match (&provider, out) {
        (Ok(p), Ok(out)) => p.send(&out).await,
        (Err(e), _) => Err(SendError::Permanent { code: "channel_misconfigured".into(), message: e.to_string() }),
        (_, Err(e)) => Err(e),
    };
    let (job_id, attempts, message_id, owner) = (job.id, job.attempts, job.ref_id.clone(), owner.to_owned());
    let m = &st.metrics;
    match outcome {
        Ok(accepted) => {
            m.outbox_attempts.with_label_values(&[name, "sent"]).inc();
            let answer = serde_json::to_string(&accepted).expect("an answer serialises");
            let held = owner.clone();
            st.db.write(move |c| record_answer(c, job_id, &held, &answer)).await?;
            // Not awaited: a failure leaves the job answered and leased, and the claim after
            // the lease finishes it from the answer.
            let st = st.clone();
            actix_web::rt::spawn(async move {
                if let Err(e) = record_sent(st, owner, job_id, message_id, Some(message), accepted).await {
                    tracing::warn!(job = job_id, error = ?e, "recording a send; recorded from its answer after the lease");
                }
            });
        }
        Err(SendError::Permanent { code, message }) => {
            tracing::info!(job = job_id, %code, %message, "delivery failed permanently");
            m.outbox_attempts.with_label_values(&[name, "permanent"]).inc();
            m.outbox_failures.with_label_values(&[name]).inc();
            give_up(st, &owner, job, &message, &code).await?;
        }
        Err(SendError::Uncertain(reason)) if job.at_most_once => {
            tracing::warn!(job = job_id, %reason, "an at-most-once send got no answer; not sent again");
            m.outbox_attempts.with_label_values(&[name, "uncertain"]).inc();
            m.outbox_failures.with_label_values(&[name]).inc();
            give_up(st, &owner, job, &reason, OUTCOME_UNKNOWN).await?;
        }
        Err(SendError::Transient(reason) | SendError::Uncertain(reason)) if attempts >= MAX_ATTEMPTS => {
            m.outbox_attempts.with_label_values(&[name, "transient"]).inc();
            m.outbox_failures.with_label_values(&[name]).inc();
            give_up(st, &owner, job, &reason, "retries_exhausted").await?;
        }
        Err(SendError::Transient(reason) | SendError::Uncertain(reason)) => {
            tracing::info!(job = job_id, attempts, %reason, "delivery failed; retrying");
            m.outbox_attempts.with_label_values(&[name, "transient"]).inc();
            let delay = backoff(st.config.outbox_backoff_ms, attempts);
            st.db.write(move |c| retry_later(c, job_id, &owner, delay, &reason)).await?;
        }
    }
    Ok(())
}

/// The provider's answer as kept in the job ([`record_answer`]).
fn decode_answer(text: &str) -> ApiResult<Accepted> {
    serde_json::from_str(text).map_err(|e| ApiError::Internal(anyhow::anyhow!("a stored answer: {e}")))
}

/// Finishes an answered send job and records the answer on its message (provider id, `SENT`,
/// the statuses reported with it: `service::record_sent_tx`) in the group commit, then
/// publishes the events. `read` is the message as read before the call; a job answered before
/// a crash reads it in the transaction (a message deleted since only ends the job).
async fn record_sent(
    st: AppState,
    owner: String,
    job_id: i64,
    message_id: String,
    read: Option<MessageRow>,
    accepted: Accepted,
) -> ApiResult<()> {
    let broker = st.broker.clone();
    st.db
        .write_grouped(
            move |c| {
                finish(c, job_id, &owner, None)?;
                let message = match read {
                    Some(m) => Some(m),
                    None => store::find_message_by_id(c, &message_id)?,
                };
                let Some(message) = message else { return Ok(Vec::new()) };
                service::record_sent_tx(c, &message, &accepted.provider_id, &accepted.then)
            },
            move |events: &mut Vec<_>| broker.publish(std::mem::take(events)),
        )
        .await?;
    Ok(())
}

/// Runs a [`REACTION_JOB`] (issue 22): sends the agent's reaction on the message, as it is
/// now (`""` once removed), to WhatsApp as a reaction message on the message's provider id.
/// Other providers have no reaction API: the job ends there (the reaction stays with the
/// agents). A message not handed to WhatsApp yet is waited for; a failure is retried with
/// backoff like a send and otherwise only logged (a reaction is not a message: nothing fails).
pub async fn deliver_reaction(st: &AppState, owner: &str, job: &Job) -> ApiResult<()> {
    let (job_id, company_id, owner) = (job.id, job.company_id, owner.to_owned());
    let Some((message_id, agent_id)) =
        job.ref_id.split_once(':').and_then(|(m, a)| Some((m.to_owned(), a.parse::<i64>().ok()?)))
    else {
        return st.db.write(move |c| finish(c, job_id, &owner, Some("malformed reaction job"))).await;
    };
    let loaded = st
        .db
        .run(move |c| {
            let (m, channel, customer_id) = store::message_to_deliver(c, company_id, &message_id)?;
            let emoji = store::reaction_of(c, company_id, &m.id, agent_id)?;
            Ok((channel, recipient(c, customer_id)?, m, emoji))
        })
        .await;
    let finish_with = |reason: &'static str| {
        let owner = owner.clone();
        async move { st.db.write(move |c| finish(c, job_id, &owner, Some(reason))).await }
    };
    let (channel, to, m, emoji) = match loaded {
        Ok(found) => found,
        Err(ApiError::NotFound) => return finish_with("the message or its channel no longer exists").await,
        Err(e) => return Err(e),
    };
    let client = match Provider::for_channel(st, &channel) {
        Ok(Provider::WhatsApp(client)) => client,
        Ok(_) => return finish_with("the provider has no reaction API").await,
        Err(_) => return finish_with("channel_misconfigured").await,
    };
    let outcome = match (to, m.provider_message_id) {
        (Err(e), _) => Err(e),
        (Ok(to), Some(target)) => {
            let body = OutboundBody::Reaction { message_id: target, emoji };
            client.send(&Outbound { message_id: m.id.clone(), to, body }).await.map(|_| ())
        }
        (Ok(_), None) if m.status == Status::Failed.as_str() || m.deleted_at.is_some() => {
            return finish_with("the message never reached WhatsApp").await;
        }
        (Ok(_), None) => Err(SendError::Transient("the message has not reached WhatsApp yet".into())),
    };
    let attempts = job.attempts;
    match outcome {
        Ok(()) => st.db.write(move |c| finish(c, job_id, &owner, None)).await,
        Err(SendError::Permanent { code, message }) => {
            tracing::info!(job = job_id, %code, %message, "a reaction was refused");
            let reason = format!("{code}: {message}");
            st.db.write(move |c| finish(c, job_id, &owner, Some(&reason))).await
        }
        Err(SendError::Transient(reason) | SendError::Uncertain(reason)) if attempts >= MAX_ATTEMPTS => {
            st.db.write(move |c| finish(c, job_id, &owner, Some(&reason))).await
        }
        Err(SendError::Transient(reason) | SendError::Uncertain(reason)) => {
            let delay = backoff(st.config.outbox_backoff_ms, attempts);
            st.db.write(move |c| retry_later(c, job_id, &owner, delay, &reason)).await
        }
    }
}

/// Finishes the job, recording `reason`, and fails its message with `code` (a message gone since
/// only ends the job). Every way a send job ends without the provider taking it comes here.
async fn give_up(st: &AppState, owner: &str, job: &Job, reason: &str, code: &str) -> ApiResult<()> {
    let (job_id, owner, message_id) = (job.id, owner.to_owned(), job.ref_id.clone());
    let (reason, code) = (reason.to_owned(), code.to_owned());
    let events = st
        .db
        .write(move |c| {
            finish(c, job_id, &owner, Some(&reason))?;
            match store::find_message_by_id(c, &message_id)? {
                Some(m) => service::record_failed_tx(c, &m, &code),
                None => Ok(Vec::new()),
            }
        })
        .await?;
    service::publish_events(st, events);
    Ok(())
}
