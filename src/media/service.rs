//! Media operations (CONTRACT §7): saving an upload as an attachment, signed download links
//! for providers, and the sweep of uploads that never made it into a message.

use std::time::Duration;

use actix_web::web;
use bytes::Bytes;
use futures_util::Stream;

use super::db::{self, AttachmentRow, NewAttachment};
use crate::core::{
    auth::session::Principal,
    crypto::constant_time_eq,
    error::{ApiError, ApiResult},
    state::AppState,
    types::now,
};

/// Uploads that no message references are deleted (row and object) after this long
/// (ARCHITECTURE "Storage": unattached uploads swept after 24 h).
pub const UNATTACHED_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// How often each node sweeps. Several nodes sweeping at once is harmless: a row is deleted
/// by whoever gets it, and only while it is still unattached.
const SWEEP_EVERY: Duration = Duration::from_secs(60 * 60);

const SWEEP_BATCH: i64 = 100;

/// Stores an agent's upload and records it as a `ready` attachment of the agent's company,
/// not yet attached to a message (`POST /media/save`). The guarantees of the bytes are those
/// of [`crate::core::media::blobs::MediaStore::save_stream`]; if the row cannot be written the object is
/// deleted again.
#[tracing::instrument(skip(st, p, body), fields(company_id = p.company_id))]
pub async fn save_upload<S>(st: &AppState, p: &Principal, filename: Option<&str>, body: S) -> ApiResult<AttachmentRow>
where
    S: Stream<Item = ApiResult<Bytes>> + Unpin,
{
    let stored = st.media.save_stream(p.company_id, filename, body).await?;
    let (company_id, user_id, s) = (p.company_id, p.user_id, stored.clone());
    let row = st
        .db
        .write(move |c| {
            db::insert(
                c,
                &NewAttachment {
                    company_id,
                    message_id: None,
                    ord: None,
                    kind: s.kind.as_str(),
                    filename: &s.filename,
                    filesize: s.size as i64,
                    content_type: s.content_type,
                    sha256: Some(&s.sha256),
                    storage_key: Some(&s.key),
                    state: db::READY,
                    provider_media_id: None,
                    uploaded_by: Some(user_id),
                    created_at: now(),
                },
            )
        })
        .await;
    if row.is_err()
        && let Err(e) = st.media.delete(&stored.key).await
    {
        tracing::warn!(error = %e, key = stored.key, "could not delete the object of a failed upload");
    }
    row
}

/// Redirects followed when fetching an agent's `mediaUrl` (as for provider media).
pub const MAX_URL_REDIRECTS: usize = 3;

/// Largest declared `Content-Length` accepted from a `mediaUrl` (the document limit, the
/// largest of CONTRACT §7); smaller kinds are cut off at their own limit while streaming.
const MAX_URL_BYTES: u64 = 100 * 1024 * 1024;

/// Downloads an agent's `mediaUrl` (`POST /message`, seed 004) and stores it as a `ready`
/// attachment of the agent's company, exactly as [`save_upload`] stores an upload (sniffed,
/// size-capped while streaming, hashed, never whole in memory).
///
/// The link must be `https` (plain `http` only while `CONFAB_ALLOW_PRIVATE_FETCH` is on, for
/// tests), without user-info, and lead to a public internet address ([`crate::core::net`]);
/// confab follows at most [`MAX_URL_REDIRECTS`] redirects itself, each hop checked the same
/// way. A refused link is 422 `media_url_refused`; a link that cannot be fetched (network
/// failure, a non-2xx answer, a broken redirect) is 502 `media_fetch_failed`.
#[tracing::instrument(skip(st, p, url), fields(company_id = p.company_id))]
pub async fn save_remote(st: &AppState, p: &Principal, url: &str) -> ApiResult<AttachmentRow> {
    use futures_util::TryStreamExt;

    use crate::core::{
        net::{FollowError, get_following, is_public, is_refused},
        redact::outbound_error,
    };
    let private_ok = st.config.allow_private_fetch;
    // An address written in the URL is judged here too (the connector would judge it only
    // after connecting, and a closed port would then look like a network failure).
    let public_host = |u: &url::Url| match u.host() {
        Some(url::Host::Ipv4(ip)) => is_public(ip.into()),
        Some(url::Host::Ipv6(ip)) => is_public(ip.into()),
        Some(url::Host::Domain(_)) => true,
        None => false,
    };
    let allow = |u: &url::Url| {
        (u.scheme() == "https" || (private_ok && u.scheme() == "http"))
            && (private_ok || public_host(u))
            && u.host_str().is_some()
            && u.username().is_empty()
            && u.password().is_none()
    };
    let refused = |why: String| ApiError::unprocessable("media_url_refused", format!("mediaUrl refused: {why}"));
    let failed = |why: String| ApiError::BadGateway { code: "media_fetch_failed", message: format!("mediaUrl: {why}") };
    let res = get_following(&st.http, url, MAX_URL_REDIRECTS, allow, |r| r).await.map_err(|e| match e {
        FollowError::Refused(u) => refused(format!("{u} is not an https link to a public host")),
        FollowError::Transport(e) if is_refused(&e) => refused("it does not lead to a public internet address".into()),
        FollowError::Transport(e) => failed(outbound_error(e)),
        e @ (FollowError::BadRedirect | FollowError::TooManyRedirects) => failed(e.to_string()),
    })?;
    if !res.status().is_success() {
        return Err(failed(format!("the link answered HTTP {}", res.status().as_u16())));
    }
    if res.content_length().is_some_and(|n| n > MAX_URL_BYTES) {
        return Err(ApiError::PayloadTooLarge);
    }
    let filename = res
        .url()
        .path_segments()
        .and_then(|mut s| s.next_back())
        .map(|s| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned())
        .filter(|s| !s.is_empty());
    let body = res.bytes_stream().map_err(move |e| failed(outbound_error(e)));
    save_upload(st, p, filename.as_deref(), body).await.map_err(|e| match e {
        ApiError::Invalid(f) if f.contains_key("file") => ApiError::field("mediaUrl", "the link's content is empty"),
        e => e,
    })
}

/// Deletes an attachment that no message took after all (a send that failed after its
/// `mediaUrl` was stored), row first, then the object; failures are only logged (the hourly
/// sweep deletes what is left).
pub async fn discard_unattached(st: &AppState, row: &AttachmentRow) {
    let id = row.id;
    match st.db.write(move |c| db::delete_unattached(c, id)).await {
        Ok(true) => {
            if let Some(key) = &row.storage_key
                && let Err(e) = st.media.delete(key).await
            {
                tracing::warn!(error = %e, key, "could not delete the object of a discarded attachment");
            }
        }
        Ok(false) => {}
        Err(e) => tracing::warn!(error = %e, id, "could not discard an unattached attachment"),
    }
}

/// A link to `GET /media/{attachmentId}` that works without authentication until `ttl` has
/// passed: `{CONFAB_PUBLIC_URL}/media/{id}?exp=<unix seconds>&sig=<hex HMAC-SHA256>`, signed
/// with the data key. This is what outbound provider delivery hands WhatsApp or Twilio as the
/// media `link`; keep `ttl` short (minutes), as anyone holding the link can fetch the bytes.
pub fn signed_url(st: &AppState, attachment_id: i64, ttl: Duration) -> String {
    let exp = chrono::Utc::now().timestamp() + i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX / 2);
    format!(
        "{}/media/{attachment_id}?exp={exp}&sig={}",
        st.config.public_url.trim_end_matches('/'),
        link_signature(st, attachment_id, exp)
    )
}

fn link_signature(st: &AppState, attachment_id: i64, exp: i64) -> String {
    st.data_key.sign(format!("media:{attachment_id}:{exp}").as_bytes())
}

/// Checks a signed link's `exp` and `sig` (constant-time); a tampered, incomplete or expired
/// link is 403 (CONTRACT §7).
pub fn verify_link(st: &AppState, attachment_id: i64, exp: Option<i64>, sig: Option<&str>) -> ApiResult<()> {
    let (Some(exp), Some(sig)) = (exp, sig) else { return Err(ApiError::Forbidden) };
    let expected = link_signature(st, attachment_id, exp);
    if !constant_time_eq(expected.as_bytes(), sig.to_ascii_lowercase().as_bytes()) {
        return Err(ApiError::Forbidden);
    }
    if exp <= chrono::Utc::now().timestamp() {
        return Err(ApiError::Forbidden);
    }
    Ok(())
}

/// Deletes attachments that no message references and that are older than `max_age`: the
/// row first (only while still unattached, so a message attaching it concurrently wins), then
/// the object. Returns how many were deleted.
#[tracing::instrument(skip(st))]
pub async fn sweep_unattached(st: &AppState, max_age: Duration) -> ApiResult<usize> {
    let cutoff = now() - chrono::Duration::from_std(max_age).map_err(anyhow::Error::new)?;
    let mut deleted = 0;
    loop {
        let batch = st.db.run(move |c| db::list_unattached_before(c, cutoff, SWEEP_BATCH)).await?;
        let full = batch.len() as i64 == SWEEP_BATCH;
        for (id, key) in batch {
            if !st.db.write(move |c| db::delete_unattached(c, id)).await? {
                continue;
            }
            deleted += 1;
            if let Some(key) = key
                && let Err(e) = st.media.delete(&key).await
            {
                tracing::warn!(error = %e, key, "swept attachment row, but its object could not be deleted");
            }
        }
        if !full {
            return Ok(deleted);
        }
    }
}

/// Starts the periodic sweep of [`sweep_unattached`] on the current actix system (stops with
/// it).
pub fn spawn_housekeeping(st: web::Data<AppState>) {
    actix_web::rt::spawn(async move {
        let mut tick = tokio::time::interval(SWEEP_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match sweep_unattached(&st, UNATTACHED_TTL).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(deleted = n, "swept unattached uploads"),
                Err(e) => tracing::warn!(error = %e, "sweeping unattached uploads failed"),
            }
        }
    });
}
