//! Diesel queries of `campaigns` and `campaign_recipients` (this module owns them). Every query
//! on company data filters by company. Their messages' statuses come from `messaging::store`,
//! the owner of `messages`.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::{
    core::{
        db::{
            Db, dialect,
            schema::{campaign_recipients, campaigns},
        },
        error::ApiResult,
        types::now,
    },
    messaging::store::{self as messaging, CampaignMessageIds},
};

pub const QUEUED: &str = "queued";
pub const SENT: &str = "sent";
pub const SKIPPED: &str = "skipped";
pub const FAILED: &str = "failed";

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = campaigns)]
pub struct CampaignRow {
    pub id: i64,
    pub company_id: i64,
    pub name: String,
    pub channel_id: i64,
    pub template_id: i64,
    pub params: String,
    pub status: String,
    pub start_at: Option<NaiveDateTime>,
    pub rate_per_second: i32,
    pub created_by: i64,
    pub lease_owner: Option<String>,
    pub lease_until: Option<NaiveDateTime>,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
    pub finished_at: Option<NaiveDateTime>,
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = campaign_recipients)]
pub struct RecipientRow {
    pub id: i64,
    pub campaign_id: i64,
    pub company_id: i64,
    pub phone: String,
    pub params: Option<String>,
    pub status: String,
    pub message_id: Option<String>,
    pub error: Option<String>,
    pub created_at: NaiveDateTime,
    pub sent_at: Option<NaiveDateTime>,
}

/// A recipient to add: E.164 phone and its own params as JSON.
pub type NewRecipient = (String, Option<String>);
/// A recipient and its message's status.
pub type RecipientWithStatus = (RecipientRow, Option<String>);

pub struct NewCampaign<'a> {
    pub company_id: i64,
    pub name: &'a str,
    pub channel_id: i64,
    pub template_id: i64,
    pub params: &'a str,
    pub start_at: Option<NaiveDateTime>,
    pub rate_per_second: i32,
    pub created_by: i64,
}

pub fn insert(c: &mut Db, n: &NewCampaign<'_>) -> ApiResult<CampaignRow> {
    let t = now();
    let id: i64 = diesel::insert_into(campaigns::table)
        .values((
            campaigns::company_id.eq(n.company_id),
            campaigns::name.eq(n.name),
            campaigns::channel_id.eq(n.channel_id),
            campaigns::template_id.eq(n.template_id),
            campaigns::params.eq(n.params),
            campaigns::status.eq("draft"),
            campaigns::start_at.eq(n.start_at),
            campaigns::rate_per_second.eq(n.rate_per_second),
            campaigns::created_by.eq(n.created_by),
            campaigns::created_at.eq(t),
            campaigns::updated_at.eq(t),
        ))
        .returning(campaigns::id)
        .get_result(c)?;
    get(c, n.company_id, id)
}

pub fn get(c: &mut Db, company_id: i64, id: i64) -> ApiResult<CampaignRow> {
    Ok(campaigns::table
        .filter(campaigns::company_id.eq(company_id))
        .find(id)
        .select(CampaignRow::as_select())
        .first(c)?)
}

pub fn list(c: &mut Db, company_id: i64) -> ApiResult<Vec<CampaignRow>> {
    Ok(campaigns::table
        .filter(campaigns::company_id.eq(company_id))
        .order(campaigns::id.desc())
        .select(CampaignRow::as_select())
        .load(c)?)
}

pub fn set_status(c: &mut Db, id: i64, status: &str) -> ApiResult<()> {
    let t = now();
    let finished = matches!(status, "completed" | "cancelled").then_some(t);
    diesel::update(campaigns::table.find(id))
        .set((campaigns::status.eq(status), campaigns::updated_at.eq(t), campaigns::finished_at.eq(finished)))
        .execute(c)?;
    Ok(())
}

/// Adds recipients (E.164 phone, optional params as JSON), dropping phones the campaign
/// already has; returns how many were added. Serialised per campaign, so two uploads cannot
/// both add one phone.
pub fn add_recipients(
    c: &mut Db,
    company_id: i64,
    campaign_id: i64,
    rows: &[(String, Option<String>)],
) -> ApiResult<usize> {
    dialect::lock_key(c, &format!("campaign-recipients:{campaign_id}"))?;
    let mut added = 0;
    let t = now();
    for chunk in rows.chunks(500) {
        let phones: Vec<&str> = chunk.iter().map(|(p, _)| p.as_str()).collect();
        let known: std::collections::HashSet<String> = campaign_recipients::table
            .filter(campaign_recipients::campaign_id.eq(campaign_id))
            .filter(campaign_recipients::phone.eq_any(&phones))
            .select(campaign_recipients::phone)
            .load::<String>(c)?
            .into_iter()
            .collect();
        let fresh: Vec<_> = chunk
            .iter()
            .filter(|(p, _)| !known.contains(p))
            .map(|(phone, params)| {
                (
                    campaign_recipients::campaign_id.eq(campaign_id),
                    campaign_recipients::company_id.eq(company_id),
                    campaign_recipients::phone.eq(phone),
                    campaign_recipients::params.eq(params),
                    campaign_recipients::status.eq(QUEUED),
                    campaign_recipients::created_at.eq(t),
                )
            })
            .collect();
        for row in fresh {
            diesel::insert_into(campaign_recipients::table).values(row).execute(c)?;
            added += 1;
        }
    }
    Ok(added)
}

/// Takes the leases of up to `limit` campaigns that are due to send (running, or scheduled and
/// past their start), not in `held` (this node sends them already) and not held by a live
/// lease elsewhere; marks them running. Each is taken by an UPDATE that re-checks the lease,
/// so two nodes never both win one.
pub fn claim_campaigns(
    c: &mut Db,
    owner: &str,
    lease: chrono::Duration,
    held: &[i64],
    limit: usize,
) -> ApiResult<Vec<CampaignRow>> {
    let t = now();
    let due = || {
        campaigns::table
            .filter(
                campaigns::status.eq("running").or(campaigns::status.eq("scheduled").and(campaigns::start_at.le(t))),
            )
            .filter(campaigns::lease_until.is_null().or(campaigns::lease_until.lt(t)))
            .filter(campaigns::id.ne_all(held))
    };
    let ids: Vec<i64> = due().order(campaigns::id).limit(limit as i64).select(campaigns::id).load(c)?;
    let mut out = Vec::new();
    for id in ids {
        let n = diesel::update(due().filter(campaigns::id.eq(id)))
            .set((
                campaigns::status.eq("running"),
                campaigns::lease_owner.eq(owner),
                campaigns::lease_until.eq(t + lease),
            ))
            .execute(c)?;
        if n == 1 {
            out.push(campaigns::table.find(id).select(CampaignRow::as_select()).first(c)?);
        }
    }
    Ok(out)
}

/// Extends this node's lease; `None` when it lost it or the campaign stopped running (paused,
/// cancelled): the runner lets go.
pub fn renew(c: &mut Db, id: i64, owner: &str, lease: chrono::Duration) -> ApiResult<Option<CampaignRow>> {
    let n = diesel::update(
        campaigns::table.find(id).filter(campaigns::lease_owner.eq(owner)).filter(campaigns::status.eq("running")),
    )
    .set(campaigns::lease_until.eq(now() + lease))
    .execute(c)?;
    if n == 0 {
        return Ok(None);
    }
    Ok(Some(campaigns::table.find(id).select(CampaignRow::as_select()).first(c)?))
}

pub fn release(c: &mut Db, id: i64, owner: &str) -> ApiResult<()> {
    diesel::update(campaigns::table.find(id).filter(campaigns::lease_owner.eq(owner)))
        .set((campaigns::lease_owner.eq(None::<String>), campaigns::lease_until.eq(None::<NaiveDateTime>)))
        .execute(c)?;
    Ok(())
}

pub fn next_queued(c: &mut Db, campaign_id: i64, limit: i64) -> ApiResult<Vec<RecipientRow>> {
    Ok(campaign_recipients::table
        .filter(campaign_recipients::campaign_id.eq(campaign_id))
        .filter(campaign_recipients::status.eq(QUEUED))
        .order(campaign_recipients::id)
        .limit(limit)
        .select(RecipientRow::as_select())
        .load(c)?)
}

/// Claims a queued recipient: `true` when this transaction moved it on (only one ever does).
pub fn claim_recipient(
    c: &mut Db,
    id: i64,
    status: &str,
    message_id: Option<&str>,
    error: Option<&str>,
) -> ApiResult<bool> {
    let n = diesel::update(campaign_recipients::table.find(id).filter(campaign_recipients::status.eq(QUEUED)))
        .set((
            campaign_recipients::status.eq(status),
            campaign_recipients::message_id.eq(message_id),
            campaign_recipients::error.eq(error),
            campaign_recipients::sent_at.eq(now()),
        ))
        .execute(c)?;
    Ok(n == 1)
}

pub fn set_message(c: &mut Db, id: i64, message_id: &str) -> ApiResult<()> {
    diesel::update(campaign_recipients::table.find(id))
        .set(campaign_recipients::message_id.eq(message_id))
        .execute(c)?;
    Ok(())
}

/// Recipient counts by the campaign's view: queued, skipped, failed (not sent, or the message
/// failed), and of the sent ones by their message's status.
pub fn counts(c: &mut Db, campaign_id: i64) -> ApiResult<Vec<(String, i64)>> {
    let mut out: Vec<(String, i64)> = campaign_recipients::table
        .filter(campaign_recipients::campaign_id.eq(campaign_id))
        .filter(campaign_recipients::status.ne(SENT))
        .group_by(campaign_recipients::status)
        .select((campaign_recipients::status, diesel::dsl::count_star()))
        .load(c)?;
    let sent: CampaignMessageIds = campaign_recipients::table
        .filter(campaign_recipients::campaign_id.eq(campaign_id))
        .filter(campaign_recipients::status.eq(SENT))
        .select(campaign_recipients::message_id);
    let by_message = messaging::status_counts(c, sent)?;
    out.extend(by_message);
    Ok(out)
}

/// A page of recipients, oldest first, with their message's status; `status` filters by the
/// campaign's view (`queued`, `skipped`, `failed`, `sent`, `delivered`, `read`).
pub fn recipients_page(
    c: &mut Db,
    company_id: i64,
    campaign_id: i64,
    status: Option<&str>,
    offset: i64,
    limit: i64,
) -> ApiResult<(Vec<RecipientWithStatus>, i64)> {
    let message_statuses: Option<Vec<&str>> = match status {
        Some("sent") => Some(vec!["PENDING", "SENT"]),
        Some("delivered") => Some(vec!["DELIVERED"]),
        Some("read") => Some(vec!["READ"]),
        _ => None,
    };
    let build = || {
        let mut q = campaign_recipients::table
            .filter(campaign_recipients::company_id.eq(company_id))
            .filter(campaign_recipients::campaign_id.eq(campaign_id))
            .into_boxed();
        if let Some(statuses) = &message_statuses {
            let ids = messaging::ids_with_status_in(company_id, statuses.clone());
            q = q.filter(campaign_recipients::status.eq(SENT)).filter(campaign_recipients::message_id.eq_any(ids));
        } else if status == Some(FAILED) {
            let failed = messaging::ids_with_status(company_id, "FAILED");
            q = q.filter(campaign_recipients::status.eq(FAILED).or(campaign_recipients::message_id.eq_any(failed)));
        } else if let Some(s) = status {
            q = q.filter(campaign_recipients::status.eq(s.to_owned()));
        }
        q
    };
    let total: i64 = build().count().get_result(c)?;
    let rows: Vec<RecipientRow> =
        build().order(campaign_recipients::id).offset(offset).limit(limit).select(RecipientRow::as_select()).load(c)?;
    let ids: Vec<String> = rows.iter().filter_map(|r| r.message_id.clone()).collect();
    let statuses = messaging::statuses_by_id(c, &ids)?;
    let rows = rows
        .into_iter()
        .map(|r| {
            let s = r.message_id.as_ref().and_then(|id| statuses.get(id).cloned());
            (r, s)
        })
        .collect();
    Ok((rows, total))
}

pub fn has_queued(c: &mut Db, campaign_id: i64) -> ApiResult<bool> {
    Ok(diesel::select(diesel::dsl::exists(
        campaign_recipients::table
            .filter(campaign_recipients::campaign_id.eq(campaign_id))
            .filter(campaign_recipients::status.eq(QUEUED)),
    ))
    .get_result(c)?)
}
