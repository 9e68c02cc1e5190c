//! Diesel queries of `webhook_subscriptions`, `webhook_deliveries` and `webhook_attempts` (this
//! module owns those tables). Every query on company data filters by company.

use std::sync::atomic::{AtomicU64, Ordering};

use diesel::prelude::*;

use super::model::*;
use crate::core::{
    db::{
        CacheBySql, Db,
        schema::{webhook_attempts, webhook_deliveries, webhook_subscriptions},
    },
    error::{ApiError, ApiResult},
    outbox,
    realtime::event::Event,
    types::{now, rfc3339},
};

/// The outbox job kind of a delivery (`ref_id`: the delivery id).
pub const JOB_KIND: &str = "webhook";

pub struct NewSubscription<'a> {
    pub company_id: i64,
    pub url: &'a str,
    pub events: &'a [String],
    pub active: bool,
    /// The sealed list of [`SigningSecret`]s.
    pub secrets: &'a str,
    pub bot_id: Option<i64>,
}

pub fn insert(c: &mut Db, s: &NewSubscription<'_>) -> ApiResult<SubscriptionRow> {
    let t = now();
    let id: i64 = diesel::insert_into(webhook_subscriptions::table)
        .values((
            webhook_subscriptions::company_id.eq(s.company_id),
            webhook_subscriptions::url.eq(s.url),
            webhook_subscriptions::events.eq(serde_json::to_string(s.events).map_err(anyhow::Error::from)?),
            webhook_subscriptions::active.eq(s.active),
            webhook_subscriptions::secrets.eq(s.secrets),
            webhook_subscriptions::bot_id.eq(s.bot_id),
            webhook_subscriptions::created_at.eq(t),
            webhook_subscriptions::updated_at.eq(t),
        ))
        .returning(webhook_subscriptions::id)
        .get_result(c)?;
    get(c, s.company_id, id)
}

pub fn get(c: &mut Db, company_id: i64, id: i64) -> ApiResult<SubscriptionRow> {
    Ok(webhook_subscriptions::table
        .filter(webhook_subscriptions::company_id.eq(company_id))
        .find(id)
        .select(SubscriptionRow::as_select())
        .first(c)?)
}

pub fn list(c: &mut Db, company_id: i64) -> ApiResult<Vec<SubscriptionRow>> {
    Ok(webhook_subscriptions::table
        .filter(webhook_subscriptions::company_id.eq(company_id))
        .order(webhook_subscriptions::id)
        .select(SubscriptionRow::as_select())
        .load(c)?)
}

/// The subscription that is a bot's `webhookUrl`, if it has one.
pub fn of_bot(c: &mut Db, company_id: i64, bot_id: i64) -> ApiResult<Option<SubscriptionRow>> {
    Ok(webhook_subscriptions::table
        .filter(webhook_subscriptions::company_id.eq(company_id))
        .filter(webhook_subscriptions::bot_id.eq(bot_id))
        .order(webhook_subscriptions::id)
        .select(SubscriptionRow::as_select())
        .first(c)
        .optional()?)
}

pub fn update(
    c: &mut Db,
    company_id: i64,
    id: i64,
    url: Option<&str>,
    events: Option<&[String]>,
    active: Option<bool>,
) -> ApiResult<SubscriptionRow> {
    let row = get(c, company_id, id)?;
    let events = match events {
        Some(e) => serde_json::to_string(e).map_err(anyhow::Error::from)?,
        None => row.events.clone(),
    };
    diesel::update(webhook_subscriptions::table.find(row.id))
        .set((
            webhook_subscriptions::url.eq(url.unwrap_or(&row.url)),
            webhook_subscriptions::events.eq(events),
            webhook_subscriptions::active.eq(active.unwrap_or(row.active)),
            webhook_subscriptions::updated_at.eq(now()),
        ))
        .execute(c)?;
    get(c, company_id, id)
}

pub fn set_secrets(c: &mut Db, company_id: i64, id: i64, sealed: &str) -> ApiResult<SubscriptionRow> {
    get(c, company_id, id)?;
    diesel::update(webhook_subscriptions::table.find(id))
        .set((webhook_subscriptions::secrets.eq(sealed), webhook_subscriptions::updated_at.eq(now())))
        .execute(c)?;
    get(c, company_id, id)
}

/// Deletes the subscription with its deliveries and their attempts; jobs still queued for them
/// find nothing to send and finish.
pub fn delete(c: &mut Db, company_id: i64, id: i64) -> ApiResult<()> {
    get(c, company_id, id)?;
    let deliveries = webhook_deliveries::table.filter(webhook_deliveries::subscription_id.eq(id));
    diesel::delete(
        webhook_attempts::table.filter(webhook_attempts::delivery_id.eq_any(deliveries.select(webhook_deliveries::id))),
    )
    .execute(c)?;
    diesel::delete(deliveries).execute(c)?;
    diesel::delete(webhook_subscriptions::table.find(id)).execute(c)?;
    Ok(())
}

/// Queues `event` for every active subscription of its company that asked for its type (a
/// bot's subscription: only while the conversation is assigned to the bot, `assignee_id`), in
/// the caller's transaction: the event and its deliveries commit together or not at all
/// (at least once). Deliveries of one subscription and conversation are ordered by their
/// outbox job ([`outbox::claim_ordered`]), queued in the order the conversation's events are
/// appended (its row lock serialises them), so a receiver gets them in `seq` order.
/// Returns how many deliveries were queued.
pub fn enqueue(c: &mut Db, event: &Event, assignee_id: Option<i64>) -> ApiResult<usize> {
    enqueue_all(c, &[(event, assignee_id)])
}

/// Deliveries queued by this process since it started, in transactions that may or may not
/// have committed yet. The worker compares it before and after a burst of events: when no
/// delivery was queued in between, the events gave it nothing to send and it does not look at
/// the outbox (a look per event was 6 % of the server's CPU at 1,000 webhooks/s,
/// bench/README.md). Deliveries queued by another node are sent by that node's worker, woken
/// by its own events, or found by the periodic look.
static QUEUED: AtomicU64 = AtomicU64::new(0);

pub fn queued_so_far() -> u64 {
    QUEUED.load(Ordering::Acquire)
}

/// An active subscription, as [`enqueue_to`] matches it against events.
#[derive(QueryableByName, Queryable)]
pub struct Subscriber {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub company_id: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub id: i64,
    /// The event types it asked for, as a JSON array.
    #[diesel(sql_type = diesel::sql_types::Text)]
    pub events: String,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::BigInt>)]
    pub bot_id: Option<i64>,
}

/// The companies some of `events` may be sent to a subscription of (their type is one a
/// subscription can ask for), each once: whose subscriptions [`enqueue_to`] needs.
pub fn hookable_companies(events: &[(&Event, Option<i64>)]) -> Vec<i64> {
    let mut companies: Vec<i64> =
        events.iter().filter(|(e, _)| EVENT_TYPES.contains(&e.event.as_str())).map(|(e, _)| e.company_id).collect();
    companies.sort_unstable();
    companies.dedup();
    companies
}

/// [`enqueue`] for several events (of a group commit): the subscriptions of their companies
/// are read once.
pub fn enqueue_all(c: &mut Db, events: &[(&Event, Option<i64>)]) -> ApiResult<usize> {
    let companies = hookable_companies(events);
    if companies.is_empty() {
        return Ok(0);
    }
    let subs: Vec<Subscriber> = crate::on_backend!(c, |c| CacheBySql::up_to(
        companies.len(),
        webhook_subscriptions::table
            .filter(webhook_subscriptions::company_id.eq_any(&companies))
            .filter(webhook_subscriptions::active)
            .select((
                webhook_subscriptions::company_id,
                webhook_subscriptions::id,
                webhook_subscriptions::events,
                webhook_subscriptions::bot_id,
            ))
    )
    .load(c))?;
    enqueue_to(c, events, &subs)
}

/// [`enqueue_all`] with the active subscriptions of the events' companies read already (by the
/// statement that inserted the events, on PostgreSQL: `messaging::store::insert_events`).
pub fn enqueue_to(c: &mut Db, events: &[(&Event, Option<i64>)], subs: &[Subscriber]) -> ApiResult<usize> {
    let mut queued = 0;
    for (event, assignee_id) in events {
        if !EVENT_TYPES.contains(&event.event.as_str()) {
            continue;
        }
        let wanted: Vec<i64> = subs
            .iter()
            .filter(|s| s.company_id == event.company_id)
            .filter(|s| {
                let types: Vec<String> = serde_json::from_str(&s.events).unwrap_or_default();
                types.contains(&event.event) && s.bot_id.is_none_or(|b| *assignee_id == Some(b))
            })
            .map(|s| s.id)
            .collect();
        queued += deliver_to(c, event, &wanted)?;
    }
    Ok(queued)
}

/// Queues `event` for each of the subscriptions `wanted`.
fn deliver_to(c: &mut Db, event: &Event, wanted: &[i64]) -> ApiResult<usize> {
    if wanted.is_empty() {
        return Ok(0);
    }
    let t = now();
    let event_id = uuid::Uuid::now_v7().to_string();
    let body = serde_json::json!({
        "id": event_id,
        "type": event.event,
        "companyId": event.company_id,
        "conversationId": event.conversation_id,
        "seq": event.seq,
        "createdAt": rfc3339(t),
        "data": event.data,
    })
    .to_string();
    for subscription_id in wanted {
        let id: i64 = diesel::insert_into(webhook_deliveries::table)
            .values((
                webhook_deliveries::company_id.eq(event.company_id),
                webhook_deliveries::subscription_id.eq(subscription_id),
                webhook_deliveries::event_id.eq(&event_id),
                webhook_deliveries::event_type.eq(&event.event),
                webhook_deliveries::conversation_id.eq(event.conversation_id),
                webhook_deliveries::seq.eq(event.seq),
                webhook_deliveries::body.eq(&body),
                webhook_deliveries::status.eq(PENDING),
                webhook_deliveries::created_at.eq(t),
            ))
            .returning(webhook_deliveries::id)
            .get_result(c)?;
        let key = format!("{subscription_id}:{}", event.conversation_id);
        outbox::insert(
            c,
            &outbox::NewJob {
                kind: JOB_KIND,
                ref_id: &id.to_string(),
                company_id: event.company_id,
                channel_id: None,
                ordering_key: Some(&key),
            },
        )?;
    }
    QUEUED.fetch_add(wanted.len() as u64, Ordering::Release);
    Ok(wanted.len())
}

/// A delivery with its subscription, for sending (any company: the worker's lookup by the
/// job's own reference).
pub fn for_sending(c: &mut Db, delivery_id: i64) -> ApiResult<Option<(DeliveryRow, SubscriptionRow)>> {
    Ok(webhook_deliveries::table
        .inner_join(webhook_subscriptions::table)
        .filter(webhook_deliveries::id.eq(delivery_id))
        .select((DeliveryRow::as_select(), SubscriptionRow::as_select()))
        .first(c)
        .optional()?)
}

pub fn delivery(c: &mut Db, company_id: i64, subscription_id: i64, id: i64) -> ApiResult<DeliveryRow> {
    Ok(webhook_deliveries::table
        .filter(webhook_deliveries::company_id.eq(company_id))
        .filter(webhook_deliveries::subscription_id.eq(subscription_id))
        .find(id)
        .select(DeliveryRow::as_select())
        .first(c)?)
}

/// A page of a subscription's deliveries, newest first, and the total.
pub fn deliveries_page(
    c: &mut Db,
    company_id: i64,
    subscription_id: i64,
    status: Option<&str>,
    offset: i64,
    limit: i64,
) -> ApiResult<(Vec<DeliveryRow>, i64)> {
    let build = || {
        let mut q = webhook_deliveries::table
            .filter(webhook_deliveries::company_id.eq(company_id))
            .filter(webhook_deliveries::subscription_id.eq(subscription_id))
            .into_boxed();
        if let Some(s) = status {
            q = q.filter(webhook_deliveries::status.eq(s.to_owned()));
        }
        q
    };
    let total: i64 = build().count().get_result(c)?;
    let rows = build()
        .order(webhook_deliveries::id.desc())
        .offset(offset)
        .limit(limit)
        .select(DeliveryRow::as_select())
        .load(c)?;
    Ok((rows, total))
}

pub fn attempts_of(c: &mut Db, delivery_ids: &[i64]) -> ApiResult<Vec<AttemptRow>> {
    Ok(webhook_attempts::table
        .filter(webhook_attempts::delivery_id.eq_any(delivery_ids))
        .order(webhook_attempts::id)
        .select(AttemptRow::as_select())
        .load(c)?)
}

pub struct NewAttempt<'a> {
    pub delivered: bool,
    pub code: Option<i32>,
    pub duration_ms: i64,
    pub error: Option<&'a str>,
}

/// Records one attempt and the delivery's state after it (`status`: [`PENDING`] while it will
/// be retried).
pub fn record_attempt(c: &mut Db, delivery_id: i64, a: &NewAttempt<'_>, status: &str) -> ApiResult<()> {
    let t = now();
    diesel::insert_into(webhook_attempts::table)
        .values((
            webhook_attempts::delivery_id.eq(delivery_id),
            webhook_attempts::status.eq(if a.delivered { DELIVERED } else { FAILED }),
            webhook_attempts::code.eq(a.code),
            webhook_attempts::duration_ms.eq(a.duration_ms),
            webhook_attempts::error.eq(a.error),
            webhook_attempts::at.eq(t),
        ))
        .execute(c)?;
    diesel::update(webhook_deliveries::table.find(delivery_id))
        .set((
            webhook_deliveries::attempts.eq(webhook_deliveries::attempts + 1),
            webhook_deliveries::status.eq(status),
            webhook_deliveries::last_code.eq(a.code),
            webhook_deliveries::last_error.eq(a.error),
            webhook_deliveries::delivered_at.eq(a.delivered.then_some(t)),
        ))
        .execute(c)?;
    Ok(())
}

/// Fails a delivery without an attempt (its subscription was switched off before it went).
pub fn skip(c: &mut Db, delivery_id: i64, reason: &str) -> ApiResult<()> {
    diesel::update(webhook_deliveries::table.find(delivery_id))
        .set((webhook_deliveries::status.eq(FAILED), webhook_deliveries::last_error.eq(reason)))
        .execute(c)?;
    Ok(())
}

/// Queues a finished delivery again (a replay: outside the subscription's order, with a fresh
/// budget of attempts). A delivery still pending is 409 `delivery_pending`.
pub fn replay(c: &mut Db, company_id: i64, subscription_id: i64, id: i64) -> ApiResult<DeliveryRow> {
    let d = delivery(c, company_id, subscription_id, id)?;
    if d.status == PENDING {
        return Err(ApiError::conflict("delivery_pending", "the delivery is still queued or being retried"));
    }
    diesel::update(webhook_deliveries::table.find(d.id).filter(webhook_deliveries::status.ne(PENDING)))
        .set(webhook_deliveries::status.eq(PENDING))
        .execute(c)?;
    outbox::insert(
        c,
        &outbox::NewJob { kind: JOB_KIND, ref_id: &d.id.to_string(), company_id, channel_id: None, ordering_key: None },
    )?;
    delivery(c, company_id, subscription_id, id)
}
