//! Campaign operations (README "Campaigns"); every one is scoped to the admin's company.

use chrono::NaiveDateTime;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::store::{self, CampaignRow, RecipientRow};
use crate::{
    core::{
        db::Db,
        error::{ApiError, ApiResult},
        query::Paging,
        state::AppState,
        types::{Phone, rfc3339},
    },
    messaging, users,
};

/// Messages a second when the request names no rate: the WhatsApp Cloud API's default
/// throughput per business phone number (80 mps).
pub const DEFAULT_RATE: i32 = 80;
const MAX_RATE: i32 = 1000;
const MAX_RECIPIENTS_PER_REQUEST: usize = 100_000;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RecipientBody {
    /// Any international format; normalised to E.164.
    pub phone: String,
    /// This recipient's template params (else the campaign's).
    pub params: Option<Vec<String>>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CampaignBody {
    pub name: String,
    pub channel_id: i64,
    pub template_id: i64,
    #[serde(default)]
    pub params: Vec<String>,
    pub recipients: Option<Vec<RecipientBody>>,
    /// A user group of the company: its members' primary phones.
    pub user_group_id: Option<i64>,
    /// RFC 3339; `start` before it schedules the campaign.
    pub start_at: Option<String>,
    /// 1 to 1000 (default 80).
    pub rate_per_second: Option<i32>,
}

#[derive(Debug, Default, Serialize, ToSchema)]
pub struct Counts {
    pub queued: i64,
    pub sent: i64,
    pub delivered: i64,
    pub read: i64,
    pub failed: i64,
    /// Opted out (STOP).
    pub skipped: i64,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CampaignView {
    pub campaign_id: i64,
    pub name: String,
    pub channel_id: i64,
    pub template_id: i64,
    pub params: Vec<String>,
    /// `draft`, `scheduled`, `running`, `paused`, `completed` or `cancelled`.
    pub status: String,
    pub start_at: Option<String>,
    pub rate_per_second: i32,
    pub counts: Counts,
    pub created_at: String,
    pub finished_at: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Added {
    pub added: usize,
    /// Phones the campaign already had, or repeated in this request.
    pub duplicates: usize,
    /// Lines (1-based) that were not a usable phone.
    pub invalid: Vec<InvalidLine>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct InvalidLine {
    pub line: usize,
    pub error: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecipientView {
    pub phone: String,
    /// `queued`, `sent`, `delivered`, `read`, `failed` or `skipped`.
    pub status: String,
    pub message_id: Option<String>,
    pub error: Option<String>,
    pub sent_at: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RecipientPage {
    pub items: Vec<RecipientView>,
    pub total: i64,
    pub page: i64,
    pub limit: i64,
}

fn view(c: &mut Db, row: &CampaignRow) -> ApiResult<CampaignView> {
    let mut counts = Counts::default();
    for (status, n) in store::counts(c, row.id)? {
        match status.as_str() {
            store::QUEUED => counts.queued += n,
            store::SKIPPED => counts.skipped += n,
            store::FAILED | "FAILED" => counts.failed += n,
            "PENDING" | "SENT" => counts.sent += n,
            "DELIVERED" => counts.delivered += n,
            "READ" => counts.read += n,
            _ => {}
        }
    }
    Ok(CampaignView {
        campaign_id: row.id,
        name: row.name.clone(),
        channel_id: row.channel_id,
        template_id: row.template_id,
        params: serde_json::from_str(&row.params).unwrap_or_default(),
        status: row.status.clone(),
        start_at: row.start_at.map(rfc3339),
        rate_per_second: row.rate_per_second,
        counts,
        created_at: rfc3339(row.created_at),
        finished_at: row.finished_at.map(rfc3339),
    })
}

fn recipient_view(r: RecipientRow, message_status: Option<String>) -> RecipientView {
    let status = match (r.status.as_str(), message_status.as_deref()) {
        (store::SENT, Some("FAILED")) => "failed",
        (store::SENT, Some("DELIVERED")) => "delivered",
        (store::SENT, Some("READ")) => "read",
        (s, _) => s,
    }
    .to_owned();
    RecipientView { phone: r.phone, status, message_id: r.message_id, error: r.error, sent_at: r.sent_at.map(rfc3339) }
}

fn check_params(c: &mut Db, company_id: i64, template_id: i64, params: &[String]) -> ApiResult<usize> {
    let tpl = messaging::store::template(c, company_id, template_id)
        .map_err(|_| ApiError::field("templateId", "no such template"))?;
    if params.len() != tpl.param_count as usize {
        return Err(ApiError::unprocessable(
            "template_params",
            format!("the template takes {} params, {} given", tpl.param_count, params.len()),
        ));
    }
    Ok(tpl.param_count as usize)
}

/// Normalises and dedups recipients; `(E.164, params as JSON)` plus the duplicates dropped
/// and the invalid lines. `param_count`: what each recipient's own params must number.
fn normalise(
    input: impl IntoIterator<Item = (usize, String, Option<Vec<String>>)>,
    param_count: usize,
) -> (Vec<store::NewRecipient>, usize, Vec<InvalidLine>) {
    let mut seen = std::collections::HashSet::new();
    let (mut out, mut duplicates, mut invalid) = (Vec::new(), 0, Vec::new());
    for (line, phone, params) in input {
        let phone = match Phone::try_from(phone) {
            Ok(p) => p.as_str().to_owned(),
            Err(e) => {
                invalid.push(InvalidLine { line, error: format!("phone {e}") });
                continue;
            }
        };
        if let Some(p) = &params
            && p.len() != param_count
        {
            invalid.push(InvalidLine {
                line,
                error: format!("the template takes {param_count} params, {} given", p.len()),
            });
            continue;
        }
        if !seen.insert(phone.clone()) {
            duplicates += 1;
            continue;
        }
        out.push((phone, params.map(|p| serde_json::Value::from(p).to_string())));
    }
    (out, duplicates, invalid)
}

pub async fn create(st: &AppState, company_id: i64, user_id: i64, b: CampaignBody) -> ApiResult<CampaignView> {
    let name = b.name.trim().to_owned();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(ApiError::field("name", "must be 1 to 200 characters"));
    }
    let rate = b.rate_per_second.unwrap_or(DEFAULT_RATE);
    if !(1..=MAX_RATE).contains(&rate) {
        return Err(ApiError::field("ratePerSecond", format!("must be between 1 and {MAX_RATE}")));
    }
    let start_at: Option<NaiveDateTime> = b
        .start_at
        .as_deref()
        .map(|s| chrono::DateTime::parse_from_rfc3339(s).map(|t| t.naive_utc()))
        .transpose()
        .map_err(|_| ApiError::field("startAt", "must be an RFC 3339 time"))?;
    if b.recipients.as_ref().is_some_and(|r| r.len() > MAX_RECIPIENTS_PER_REQUEST) {
        return Err(ApiError::field("recipients", format!("at most {MAX_RECIPIENTS_PER_REQUEST} per request")));
    }
    st.db
        .write(move |c| {
            messaging::store::channel(c, company_id, b.channel_id)
                .map_err(|_| ApiError::field("channelId", "no such channel"))?;
            let count = check_params(c, company_id, b.template_id, &b.params)?;
            let mut input: Vec<(usize, String, Option<Vec<String>>)> = Vec::new();
            for (i, r) in b.recipients.into_iter().flatten().enumerate() {
                input.push((i + 1, r.phone, r.params));
            }
            if let Some(group) = b.user_group_id {
                let phones = users::group::member_phones(c, company_id, group)
                    .map_err(|_| ApiError::field("userGroupId", "no such user group"))?;
                let base = input.len();
                input.extend(phones.into_iter().enumerate().map(|(i, p)| (base + i + 1, p, None)));
            }
            let (rows, _, invalid) = normalise(input, count);
            if let Some(bad) = invalid.first() {
                return Err(ApiError::field("recipients", format!("recipient {}: {}", bad.line, bad.error)));
            }
            let params = serde_json::Value::from(b.params.clone()).to_string();
            let row = store::insert(
                c,
                &store::NewCampaign {
                    company_id,
                    name: &name,
                    channel_id: b.channel_id,
                    template_id: b.template_id,
                    params: &params,
                    start_at,
                    rate_per_second: rate,
                    created_by: user_id,
                },
            )?;
            store::add_recipients(c, company_id, row.id, &rows)?;
            view(c, &row)
        })
        .await
}

/// `POST /campaigns/{id}/recipients` with a CSV body: `phone,param1,…` per line (no header; a
/// first line whose phone does not parse and that names `phone` is taken as a header). A line
/// with only a phone uses the campaign's params.
pub async fn add_csv(st: &AppState, company_id: i64, id: i64, body: bytes::Bytes) -> ApiResult<Added> {
    let mut reader =
        csv::ReaderBuilder::new().has_headers(false).flexible(true).trim(csv::Trim::All).from_reader(&body[..]);
    let mut input = Vec::new();
    let mut invalid = Vec::new();
    for (i, rec) in reader.records().enumerate() {
        let line = i + 1;
        let rec = match rec {
            Ok(r) => r,
            Err(e) => {
                invalid.push(InvalidLine { line, error: e.to_string() });
                continue;
            }
        };
        let mut fields = rec.iter();
        let Some(phone) = fields.next().filter(|p| !p.is_empty()) else { continue };
        if line == 1 && phone.eq_ignore_ascii_case("phone") {
            continue;
        }
        let params: Vec<String> = fields.map(str::to_owned).collect();
        input.push((line, phone.to_owned(), (!params.is_empty()).then_some(params)));
        if input.len() > MAX_RECIPIENTS_PER_REQUEST {
            return Err(ApiError::bad_request(
                "too_many_recipients",
                format!("at most {MAX_RECIPIENTS_PER_REQUEST} lines per upload"),
            ));
        }
    }
    st.db
        .write(move |c| {
            let row = store::get(c, company_id, id)?;
            if matches!(row.status.as_str(), "completed" | "cancelled") {
                return Err(ApiError::conflict("campaign_finished", "the campaign is finished"));
            }
            let tpl = messaging::store::template(c, company_id, row.template_id)?;
            let (rows, duplicates, mut more) = normalise(input, tpl.param_count as usize);
            invalid.append(&mut more);
            invalid.sort_by_key(|l| l.line);
            let added = store::add_recipients(c, company_id, id, &rows)?;
            Ok(Added { added, duplicates: duplicates + rows.len() - added, invalid })
        })
        .await
}

pub async fn list(st: &AppState, company_id: i64) -> ApiResult<Vec<CampaignView>> {
    st.db
        .run(move |c| {
            let rows = store::list(c, company_id)?;
            rows.iter().map(|r| view(c, r)).collect()
        })
        .await
}

pub async fn get(st: &AppState, company_id: i64, id: i64) -> ApiResult<CampaignView> {
    st.db
        .run(move |c| {
            let row = store::get(c, company_id, id)?;
            view(c, &row)
        })
        .await
}

#[derive(Debug, Clone, Copy)]
pub enum Action {
    Start,
    Pause,
    Resume,
    Cancel,
}

/// `start` (draft → running, or scheduled when `startAt` is ahead), `pause` (running or
/// scheduled → paused), `resume` (paused → running/scheduled), `cancel` (anything unfinished
/// → cancelled; queued recipients are never sent). Anything else is 409 `invalid_transition`.
pub async fn transition(st: &AppState, company_id: i64, id: i64, action: Action) -> ApiResult<CampaignView> {
    let view = st
        .db
        .write(move |c| {
            let row = store::get(c, company_id, id)?;
            let go = if row.start_at.is_some_and(|t| t > crate::core::types::now()) { "scheduled" } else { "running" };
            let next = match (action, row.status.as_str()) {
                (Action::Start, "draft") => go,
                (Action::Pause, "running" | "scheduled") => "paused",
                (Action::Resume, "paused") => go,
                (Action::Cancel, "draft" | "scheduled" | "running" | "paused") => "cancelled",
                (_, from) => {
                    return Err(ApiError::conflict("invalid_transition", format!("the campaign is {from}")));
                }
            };
            store::set_status(c, id, next)?;
            let row = store::get(c, company_id, id)?;
            view(c, &row)
        })
        .await?;
    st.campaign_wake.notify_one();
    Ok(view)
}

pub async fn recipients(
    st: &AppState,
    company_id: i64,
    id: i64,
    status: Option<String>,
    paging: Paging,
) -> ApiResult<RecipientPage> {
    if let Some(s) = &status
        && !["queued", "sent", "delivered", "read", "failed", "skipped"].contains(&s.as_str())
    {
        return Err(ApiError::field("status", "must be queued, sent, delivered, read, failed or skipped"));
    }
    st.db
        .run(move |c| {
            store::get(c, company_id, id)?;
            let (rows, total) =
                store::recipients_page(c, company_id, id, status.as_deref(), paging.offset, paging.size)?;
            let items = rows.into_iter().map(|(r, s)| recipient_view(r, s)).collect();
            Ok(RecipientPage { items, total, page: paging.page, limit: paging.size })
        })
        .await
}
