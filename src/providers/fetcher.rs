//! The media fetcher (ARCHITECTURE "Media"): takes `media_fetch` jobs, which `ingest` queues
//! with each pending attachment of an inbound message, downloads the bytes from the channel's
//! provider (WhatsApp: media id → URL → bytes with the bearer token; Twilio: `MediaUrlN` with
//! basic auth), stores them through [`MediaStore::save_stream`](crate::core::media::blobs::MediaStore) —
//! sniffing and size limits as for uploads — and moves the attachment from `pending` to
//! `ready` (or `failed`), emitting `message.updated`. Jobs are claimed with the same
//! database lease as deliveries, so a crash retries them and two nodes never both fetch one.

use crate::{
    core::{
        error::{ApiError, ApiResult},
        realtime::event::MESSAGE_UPDATED,
        state::AppState,
    },
    messaging::{service, store},
    providers::{Provider, SendError, outbox},
};

/// Fetches one attachment. Transient provider failures are retried with backoff up to the
/// outbox's attempt limit; anything else marks the attachment `failed`.
pub async fn fetch(st: &AppState, owner: &str, job: &outbox::Job) -> ApiResult<()> {
    let attachment_id: i64 =
        job.ref_id.parse().map_err(|_| ApiError::Internal(anyhow::anyhow!("bad media_fetch ref")))?;
    let (attachment, channel) = st
        .db
        .run(move |c| {
            let a = crate::media::db::get_for_signed_link(c, attachment_id)?;
            let message = store::message_by_id(c, a.message_id.as_deref().unwrap_or_default())?;
            Ok((a, store::channel_by_id(c, message.channel_id)?))
        })
        .await?;
    let outcome = match (Provider::for_channel(st, &channel), attachment.provider_media_id.as_deref()) {
        (Ok(provider), Some(media_id)) => match provider.fetch_media(media_id).await {
            // Streamed: the store stops reading at the type's size limit.
            Ok(media) => {
                match st.media.save_stream(attachment.company_id, Some(&attachment.filename), media.body).await {
                    Ok(stored) => Ok(stored),
                    // Not an allowed type, too big, empty: retrying will not change the bytes.
                    Err(
                        e @ (ApiError::UnsupportedMediaType(_)
                        | ApiError::PayloadTooLarge
                        | ApiError::BadRequest { .. }),
                    ) => Err(SendError::Permanent { code: e.status_and_code().1.into(), message: e.to_string() }),
                    Err(e) => Err(SendError::Transient(e.to_string())),
                }
            }
            Err(e) => Err(e),
        },
        (Err(e), _) => Err(SendError::Permanent { code: "channel_misconfigured".into(), message: e.to_string() }),
        (_, None) => Err(SendError::Permanent { code: "no_media_id".into(), message: "no provider media id".into() }),
    };
    let (job_id, owner, attempts) = (job.id, owner.to_owned(), job.attempts);
    let retry = match &outcome {
        // A download changes nothing at the provider: an uncertain one is simply repeated.
        Err(SendError::Transient(reason) | SendError::Uncertain(reason)) if attempts < outbox::MAX_ATTEMPTS => {
            Some(reason.clone())
        }
        _ => None,
    };
    if let Some(reason) = retry {
        tracing::info!(job = job_id, attempts, %reason, "media fetch failed; retrying");
        let delay = outbox::backoff(st.config.outbox_backoff_ms, attempts);
        return st.db.write(move |c| outbox::retry_later(c, job_id, &owner, delay, &reason)).await;
    }
    let events = st
        .db
        .write(move |c| {
            let error = match &outcome {
                Ok(stored) => {
                    crate::media::db::mark_fetched(c, attachment_id, stored)?;
                    None
                }
                Err(e) => {
                    crate::media::db::mark_failed(c, attachment_id)?;
                    Some(format!("{e:?}"))
                }
            };
            outbox::finish(c, job_id, &owner, error.as_deref())?;
            let message = store::message_by_id(c, attachment.message_id.as_deref().unwrap_or_default())?;
            let conv = store::conversation(c, message.company_id, message.conversation_id)?;
            let view = store::message_view(c, &message)?;
            Ok(vec![store::append_event(
                c,
                &conv,
                MESSAGE_UPDATED,
                serde_json::to_value(view).map_err(anyhow::Error::from)?,
            )?])
        })
        .await?;
    service::publish_events(st, events);
    Ok(())
}
