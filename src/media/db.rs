//! Diesel queries for `attachments` (SCHEMA.md). Reads for a caller are scoped by company
//! (CONTRACT §2 tenancy); the unscoped read is only for signed links, whose signature names
//! the attachment.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::core::{
    db::{CacheBySql, Db, schema::attachments},
    error::{ApiError, ApiResult},
    media::blobs::StoredObject,
};

/// `attachments.state`: uploads are `ready` at once; inbound provider media starts `pending`
/// and becomes `ready` or `failed` (CONTRACT §6 inbound media).
pub const READY: &str = "ready";
pub const PENDING: &str = "pending";
pub const FAILED: &str = "failed";

/// The attachment row, shared with the messaging views.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = attachments)]
pub struct AttachmentRow {
    pub id: i64,
    pub company_id: i64,
    pub message_id: Option<String>,
    pub ord: Option<i32>,
    pub kind: String,
    pub filename: String,
    pub filesize: i64,
    pub content_type: String,
    pub sha256: Option<String>,
    pub storage_key: Option<String>,
    pub state: String,
    pub provider_media_id: Option<String>,
    pub uploaded_by: Option<i64>,
    pub created_at: NaiveDateTime,
}

#[derive(Debug, Insertable)]
#[diesel(table_name = attachments)]
pub struct NewAttachment<'a> {
    pub company_id: i64,
    pub message_id: Option<&'a str>,
    pub ord: Option<i32>,
    pub kind: &'a str,
    pub filename: &'a str,
    pub filesize: i64,
    pub content_type: &'a str,
    pub sha256: Option<&'a str>,
    pub storage_key: Option<&'a str>,
    pub state: &'a str,
    pub provider_media_id: Option<&'a str>,
    pub uploaded_by: Option<i64>,
    pub created_at: NaiveDateTime,
}

pub fn insert(c: &mut Db, new: &NewAttachment<'_>) -> ApiResult<AttachmentRow> {
    Ok(diesel::insert_into(attachments::table).values(new).returning(attachments::all_columns).get_result(c)?)
}

/// One of the company's attachments; another company's is `NotFound` like a missing one.
pub fn get(c: &mut Db, company_id: i64, id: i64) -> ApiResult<AttachmentRow> {
    Ok(attachments::table
        .filter(attachments::id.eq(id))
        .filter(attachments::company_id.eq(company_id))
        .select(AttachmentRow::as_select())
        .first(c)?)
}

/// Any company's attachment: only after a signed link's signature has been checked.
pub fn get_for_signed_link(c: &mut Db, id: i64) -> ApiResult<AttachmentRow> {
    Ok(attachments::table.find(id).select(AttachmentRow::as_select()).first(c)?)
}

/// Attachments never attached to a message and created before `cutoff`, oldest first:
/// `(id, storage_key)`.
pub fn list_unattached_before(c: &mut Db, cutoff: NaiveDateTime, limit: i64) -> ApiResult<Vec<(i64, Option<String>)>> {
    Ok(attachments::table
        .filter(attachments::message_id.is_null())
        .filter(attachments::created_at.lt(cutoff))
        .order(attachments::created_at.asc())
        .select((attachments::id, attachments::storage_key))
        .limit(limit)
        .load(c)?)
}

/// Deletes the attachment if it is still unattached; `false` when a message took it meanwhile.
pub fn delete_unattached(c: &mut Db, id: i64) -> ApiResult<bool> {
    let n = diesel::delete(attachments::table.find(id).filter(attachments::message_id.is_null())).execute(c)?;
    Ok(n == 1)
}

/// The attachments of these messages, in their order within each message.
pub fn attachments_of(c: &mut Db, message_ids: &[String]) -> ApiResult<Vec<AttachmentRow>> {
    if message_ids.is_empty() {
        return Ok(Vec::new());
    }
    // Kept prepared: every message view (an event's payload, an answer) runs this for one
    // message or a few, and preparing it again each time was half of building the view.
    Ok(crate::on_backend!(c, |c| CacheBySql::up_to(
        message_ids.len(),
        attachments::table
            .filter(attachments::message_id.eq_any(message_ids))
            .order((attachments::ord, attachments::id))
            .select(AttachmentRow::as_select())
    )
    .load(c))?)
}

/// Attaches an uploaded attachment of the company to a message (once).
pub fn attach(c: &mut Db, company_id: i64, attachment_id: i64, message_id: &str, ord: i32) -> ApiResult<()> {
    let n = diesel::update(
        attachments::table
            .filter(attachments::id.eq(attachment_id))
            .filter(attachments::company_id.eq(company_id))
            .filter(attachments::message_id.is_null())
            .filter(attachments::state.eq(READY)),
    )
    .set((attachments::message_id.eq(message_id), attachments::ord.eq(ord)))
    .execute(c)?;
    if n == 0 {
        return Err(ApiError::field("attachmentId", "no such uploaded attachment, or it is already used"));
    }
    Ok(())
}

/// A pending inbound media attachment was fetched and stored: it is `ready` with what the
/// store recorded. `false` when it was not pending any more.
pub fn mark_fetched(c: &mut Db, id: i64, stored: &StoredObject) -> ApiResult<bool> {
    let n = diesel::update(attachments::table.find(id).filter(attachments::state.eq(PENDING)))
        .set((
            attachments::state.eq(READY),
            attachments::storage_key.eq(&stored.key),
            attachments::sha256.eq(&stored.sha256),
            attachments::filesize.eq(stored.size as i64),
            attachments::content_type.eq(stored.content_type),
            attachments::kind.eq(stored.kind.as_str()),
            attachments::filename.eq(&stored.filename),
        ))
        .execute(c)?;
    Ok(n == 1)
}

/// A pending inbound media attachment could not be fetched: it is `failed`.
pub fn mark_failed(c: &mut Db, id: i64) -> ApiResult<()> {
    diesel::update(attachments::table.find(id).filter(attachments::state.eq(PENDING)))
        .set(attachments::state.eq(FAILED))
        .execute(c)?;
    Ok(())
}
