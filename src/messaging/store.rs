//! Diesel queries for channels, conversations, messages, events, templates, attachments and the
//! outbox. Every query on company data filters by company (CONTRACT §2 tenancy).

use std::collections::{HashMap, HashSet};

use chrono::NaiveDateTime;
use diesel::{dsl, prelude::*};

use super::model::*;
use crate::{
    core::{
        db::{CACHED_FORMS, CacheBySql, Db, schema::*},
        error::{ApiError, ApiResult},
        query::like_contains,
        realtime::event::{Event, MESSAGE_CREATED},
        types::now,
    },
    media::db::AttachmentRow,
};

// ---- channels ----

pub fn channel(c: &mut Db, company_id: i64, id: i64) -> ApiResult<ChannelRow> {
    Ok(channels::table
        .filter(channels::company_id.eq(company_id).and(channels::deleted_at.is_null()))
        .find(id)
        .select(ChannelRow::as_select())
        .first(c)?)
}

pub fn channel_by_id(c: &mut Db, id: i64) -> ApiResult<ChannelRow> {
    Ok(channels::table.filter(channels::deleted_at.is_null()).find(id).select(ChannelRow::as_select()).first(c)?)
}

/// A channel's settings as written by create and update (`secrets`: sealed with the data key).
#[derive(Insertable, AsChangeset)]
#[diesel(table_name = channels, treat_none_as_null = true)]
pub struct ChannelFields<'a> {
    pub provider: &'a str,
    pub phone_e164: &'a str,
    pub phone_number_id: Option<&'a str>,
    pub display_name: &'a str,
    pub secrets: &'a str,
    pub is_default: bool,
}

/// Inserts a channel; the caller clears the company's other default first when needed.
pub fn insert_channel(c: &mut Db, company_id: i64, f: &ChannelFields<'_>) -> ApiResult<i64> {
    let t = now();
    Ok(diesel::insert_into(channels::table)
        .values((f, channels::company_id.eq(company_id), channels::created_at.eq(t), channels::updated_at.eq(t)))
        .returning(channels::id)
        .get_result(c)?)
}

/// Replaces a channel's settings (the caller checked that it belongs to the company).
pub fn update_channel(c: &mut Db, id: i64, f: &ChannelFields<'_>) -> ApiResult<()> {
    diesel::update(channels::table.find(id)).set((f, channels::updated_at.eq(now()))).execute(c)?;
    Ok(())
}

/// No channel of the company is its default any more.
pub fn clear_default_channel(c: &mut Db, company_id: i64) -> ApiResult<()> {
    diesel::update(channels::table.filter(channels::company_id.eq(company_id)))
        .set(channels::is_default.eq(false))
        .execute(c)?;
    Ok(())
}

/// Retires a channel (soft delete: its conversations and messages stay readable). The unique
/// (provider, phone_number_id) key must not block adding the number again, so it is cleared.
pub fn retire_channel(c: &mut Db, id: i64) -> ApiResult<()> {
    diesel::update(channels::table.find(id))
        .set((
            channels::deleted_at.eq(now()),
            channels::is_default.eq(false),
            channels::phone_number_id.eq(None::<String>),
        ))
        .execute(c)?;
    Ok(())
}

/// Every live channel of a provider, of every company (the webhook routes' list).
pub fn live_channels_of(c: &mut Db, provider: &str) -> ApiResult<Vec<ChannelRow>> {
    Ok(channels::table
        .filter(channels::provider.eq(provider).and(channels::deleted_at.is_null()))
        .order(channels::id)
        .select(ChannelRow::as_select())
        .load(c)?)
}

/// Sets (or clears) the team of a channel (the caller checked both).
pub fn set_team_of_channel(c: &mut Db, channel_id: i64, team_id: Option<i64>) -> ApiResult<()> {
    diesel::update(channels::table.find(channel_id))
        .set((channels::team_id.eq(team_id), channels::updated_at.eq(now())))
        .execute(c)?;
    Ok(())
}

/// The company's channels of a team lose it (the team is deleted).
pub fn clear_team_of_channels(c: &mut Db, company_id: i64, team_id: i64) -> ApiResult<()> {
    diesel::update(channels::table.filter(channels::company_id.eq(company_id)).filter(channels::team_id.eq(team_id)))
        .set(channels::team_id.eq(None::<i64>))
        .execute(c)?;
    Ok(())
}

pub fn channels(c: &mut Db, company_id: i64) -> ApiResult<Vec<ChannelRow>> {
    Ok(channels::table
        .filter(channels::company_id.eq(company_id).and(channels::deleted_at.is_null()))
        .order(channels::id)
        .select(ChannelRow::as_select())
        .load(c)?)
}

/// Sets (or clears) the channel's agent bot: `bot_id` must be an active bot user of the company
/// (400 `validation_failed` on `botId` otherwise).
pub fn set_channel_bot(c: &mut Db, company_id: i64, id: i64, bot_id: Option<i64>) -> ApiResult<ChannelRow> {
    channel(c, company_id, id)?;
    if let Some(bot) = bot_id {
        let user = crate::users::store::get(c, company_id, bot).map_err(|_| ApiError::field("botId", "no such bot"))?;
        if user.role() != crate::core::types::Role::Bot || !user.is_active() {
            return Err(ApiError::field("botId", "no such bot"));
        }
    }
    diesel::update(channels::table.find(id))
        .set((channels::bot_id.eq(bot_id), channels::updated_at.eq(now())))
        .execute(c)?;
    channel(c, company_id, id)
}

/// Takes a deleted bot off every channel of its company.
pub fn clear_channel_bot(c: &mut Db, company_id: i64, bot_id: i64) -> ApiResult<()> {
    diesel::update(channels::table.filter(channels::company_id.eq(company_id)).filter(channels::bot_id.eq(bot_id)))
        .set(channels::bot_id.eq(None::<i64>))
        .execute(c)?;
    Ok(())
}

/// The company's default channel: the one marked default, else its oldest.
pub fn default_channel(c: &mut Db, company_id: i64) -> ApiResult<ChannelRow> {
    channels::table
        .filter(channels::company_id.eq(company_id).and(channels::deleted_at.is_null()))
        .order((channels::is_default.desc(), channels::id))
        .select(ChannelRow::as_select())
        .first(c)
        .optional()?
        .ok_or_else(|| ApiError::unprocessable("no_channel", "the company has no channel to send on"))
}

// ---- customers ----

/// The customer with this E.164 phone in the company, created (with the given name) when
/// missing. One person per company and phone (CONTRACT §9 "one identity"). A contact created
/// because the number wrote in through a signed provider webhook has its phone `verified`:
/// the provider delivered a message from it. One an agent typed in (`new-chat`) has not.
pub fn find_or_create_customer(
    c: &mut Db,
    company_id: i64,
    phone: &crate::core::types::Phone,
    first_name: &str,
    last_name: &str,
    verified: bool,
) -> ApiResult<(i64, bool)> {
    if let Some(id) = crate::users::store::id_by_phone(c, company_id, phone)? {
        return Ok((id, false));
    }
    let user = crate::users::store::create_person(
        c,
        company_id,
        crate::core::types::Role::Customer,
        first_name,
        last_name,
        None,
        None,
        Some(phone),
        verified,
    )?;
    Ok((user.id, true))
}

/// The customer who sent an inbound message: by WhatsApp business-scoped user id first (the
/// identity WhatsApp keeps when a phone changes or is hidden), then by phone; created when
/// neither is known, with whichever the provider gave. A customer found by phone learns the
/// BSUID that came with it.
pub fn find_or_create_sender(
    c: &mut Db,
    company_id: i64,
    phone: Option<&crate::core::types::Phone>,
    bsuid: Option<&str>,
    first_name: &str,
    last_name: &str,
) -> ApiResult<i64> {
    if let Some(b) = bsuid
        && let Some((_, id)) = crate::users::store::customers_by_bsuid(c, company_id, &[b])?.pop()
    {
        return Ok(id);
    }
    let id = match phone {
        Some(phone) => find_or_create_customer(c, company_id, phone, first_name, last_name, true)?.0,
        None => {
            let role = crate::core::types::Role::Customer;
            crate::users::store::create_person(c, company_id, role, first_name, last_name, None, None, None, true)?.id
        }
    };
    if let Some(b) = bsuid {
        crate::users::store::set_bsuid_if_unset(c, id, b)?;
    }
    Ok(id)
}

pub fn customer(c: &mut Db, company_id: i64, user_id: i64) -> ApiResult<crate::users::model::UserRow> {
    let u = crate::users::store::get(c, company_id, user_id)?;
    if u.role != "customer" {
        return Err(ApiError::NotFound);
    }
    Ok(u)
}

pub fn contact_view(c: &mut Db, user: crate::users::model::UserRow) -> ApiResult<ContactView> {
    let p = crate::users::store::person(c, user)?;
    Ok(ContactView {
        user_id: p.user.id,
        first_name: p.user.first_name,
        last_name: p.user.last_name,
        phone: p.phone,
        email: p.email,
        opted_out: p.user.opted_out,
        whatsapp_user_id: p.user.wa_bsuid,
    })
}

// ---- conversations ----

pub fn conversation(c: &mut Db, company_id: i64, id: i64) -> ApiResult<ConversationRow> {
    Ok(conversations::table
        .filter(conversations::company_id.eq(company_id))
        .find(id)
        .select(ConversationRow::as_select())
        .first(c)?)
}

/// The conversation of (channel, customer), created when missing; `true` when created.
pub fn find_or_create_conversation(
    c: &mut Db,
    company_id: i64,
    channel_id: i64,
    customer_id: i64,
) -> ApiResult<(ConversationRow, bool)> {
    let found = crate::on_backend!(c, |c| conversations::table
        .filter(conversations::channel_id.eq(channel_id).and(conversations::customer_id.eq(customer_id)))
        .select(ConversationRow::as_select())
        .first(c)
        .optional())?;
    if let Some(conv) = found {
        return Ok((conv, false));
    }
    let t = now();
    // A channel's agent bot gets every new conversation first (issue 23); its team, if any,
    // works it (issue 22) and auto-assigns it when the bot does not take it.
    let (bot, team): (Option<i64>, Option<i64>) =
        channels::table.find(channel_id).select((channels::bot_id, channels::team_id)).first(c)?;
    let id: i64 = diesel::insert_into(conversations::table)
        .values((
            conversations::company_id.eq(company_id),
            conversations::channel_id.eq(channel_id),
            conversations::customer_id.eq(customer_id),
            conversations::assignee_id.eq(bot),
            conversations::team_id.eq(team),
            conversations::status.eq("open"),
            conversations::labels.eq("[]"),
            conversations::last_update_time.eq(t),
            conversations::created_at.eq(t),
        ))
        .returning(conversations::id)
        .get_result(c)?;
    let conv = conversation(c, company_id, id)?;
    super::teams::queue_assignment(c, &conv)?;
    Ok((conv, true))
}

/// The company's conversations with these ids (those that exist), in no order.
pub fn conversations_by_ids(c: &mut Db, company_id: i64, ids: &[i64]) -> ApiResult<Vec<ConversationRow>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    Ok(crate::on_backend!(c, |c| CacheBySql::up_to(
        ids.len(),
        conversations::table
            .filter(conversations::company_id.eq(company_id).and(conversations::id.eq_any(ids)))
            .select(ConversationRow::as_select())
    )
    .load(c))?)
}

/// The customers of `channel`'s company with these WhatsApp BSUIDs or (active) E.164 phones,
/// each with its conversation on `channel` if it has one: `(key, user id, conversation)`. One
/// statement per kind of key, where a lookup of the customers and then of their conversations
/// took two round trips in every group commit of webhooks (bench/README.md, issue 21).
pub fn customers_with_conversations(
    c: &mut Db,
    channel: &ChannelRow,
    bsuids: &[&str],
    phones: &[&str],
) -> ApiResult<Vec<(String, i64, Option<ConversationRow>)>> {
    let mut found = Vec::new();
    if !bsuids.is_empty() {
        let rows: Vec<(Option<String>, i64, Option<ConversationRow>)> = crate::on_backend!(c, |c| CacheBySql::up_to(
            bsuids.len(),
            users::table
                .left_join(
                    conversations::table
                        .on(conversations::customer_id.eq(users::id).and(conversations::channel_id.eq(channel.id)))
                )
                .filter(users::company_id.eq(channel.company_id))
                .filter(users::wa_bsuid.eq_any(bsuids))
                .select((users::wa_bsuid, users::id, Option::<ConversationRow>::as_select()))
        )
        .load(c))?;
        found.extend(rows.into_iter().filter_map(|(bsuid, id, conv)| Some((bsuid?, id, conv))));
    }
    if !phones.is_empty() {
        let rows: Vec<(String, i64, Option<ConversationRow>)> = crate::on_backend!(c, |c| CacheBySql::up_to(
            phones.len(),
            user_phones::table
                .left_join(conversations::table.on(
                    conversations::customer_id.eq(user_phones::user_id).and(conversations::channel_id.eq(channel.id))
                ),)
                .filter(user_phones::company_id.eq(channel.company_id))
                .filter(user_phones::e164.eq_any(phones))
                .filter(user_phones::active)
                .select((user_phones::e164, user_phones::user_id, Option::<ConversationRow>::as_select()))
        )
        .load(c))?;
        found.extend(rows);
    }
    Ok(found)
}

/// Appends a persisted event to a conversation: takes the next `seq` (the row lock of this
/// UPDATE serialises concurrent writers on PostgreSQL; SQLite has one writer) and inserts the
/// event row in the caller's transaction. Gap-free because a rolled-back transaction rolls
/// back its increment too (CONTRACT §4, SCHEMA `events`).
pub fn append_event(c: &mut Db, conv: &ConversationRow, kind: &str, data: serde_json::Value) -> ApiResult<Event> {
    Ok(append_events(c, conv, kind, vec![data])?.remove(0))
}

/// Like [`append_event`] for several events of one kind, in order: one seq bump and one INSERT.
pub fn append_events(
    c: &mut Db,
    conv: &ConversationRow,
    kind: &str,
    data: Vec<serde_json::Value>,
) -> ApiResult<Vec<Event>> {
    let n = data.len() as i64;
    if n == 0 {
        return Ok(Vec::new());
    }
    let last: i64 = diesel::update(conversations::table.find(conv.id))
        .set(conversations::last_seq.eq(conversations::last_seq + n))
        .returning(conversations::last_seq)
        .get_result(c)?;
    let events: Vec<Event> = data
        .into_iter()
        .zip(last - n + 1..)
        .map(|(data, seq)| Event {
            company_id: conv.company_id,
            conversation_id: conv.id,
            seq: Some(seq),
            event: kind.to_owned(),
            data,
            origin: None,
        })
        .collect();
    insert_events(c, &events.iter().map(|e| (e, conv.assignee_id)).collect::<Vec<_>>())?;
    Ok(events)
}

/// Inserts the rows of events whose `seq` the caller has just taken from their conversations
/// (one INSERT), and queues their outgoing webhooks in the same transaction (issue
/// 23). Each event comes with its conversation's assignee (bot subscriptions follow it).
///
/// On PostgreSQL one statement inserts the events and reads the subscriptions of their
/// companies (a round trip fewer per group commit, whether or not the company has any;
/// bench/README.md, issue 21), and its text does not vary with the number of events, so it is
/// prepared once per connection.
fn insert_events(c: &mut Db, events: &[(&Event, Option<i64>)]) -> ApiResult<()> {
    if events.is_empty() {
        return Ok(());
    }
    let t = now();
    let payloads: Vec<String> = events.iter().map(|(e, _)| e.data.to_string()).collect();
    if let Db::Pg(conn) = c {
        use diesel::sql_types::{Array, BigInt, Text, Timestamp};
        let subs: Vec<crate::hooks::store::Subscriber> = CacheBySql::new(
            diesel::sql_query(
                "WITH inserted AS (INSERT INTO events (conversation_id, seq, company_id, kind, payload, created_at) \
                 SELECT v.conversation_id, v.seq, v.company_id, v.kind, v.payload, $6 \
                 FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::text[], $5::text[]) \
                   AS v(conversation_id, seq, company_id, kind, payload)) \
                 SELECT s.company_id, s.id, s.events, s.bot_id FROM webhook_subscriptions s \
                 WHERE s.company_id = ANY($7::bigint[]) AND s.active",
            )
            .bind::<Array<BigInt>, _>(events.iter().map(|(e, _)| e.conversation_id).collect::<Vec<_>>())
            .bind::<Array<BigInt>, _>(events.iter().map(|(e, _)| e.seq.unwrap_or_default()).collect::<Vec<_>>())
            .bind::<Array<BigInt>, _>(events.iter().map(|(e, _)| e.company_id).collect::<Vec<_>>())
            .bind::<Array<Text>, _>(events.iter().map(|(e, _)| e.event.as_str()).collect::<Vec<_>>())
            .bind::<Array<Text>, _>(&payloads)
            .bind::<Timestamp, _>(t)
            .bind::<Array<BigInt>, _>(crate::hooks::store::hookable_companies(events)),
        )
        .load(conn)?;
        crate::hooks::store::enqueue_to(c, events, &subs)?;
        return Ok(());
    }
    let rows: Vec<_> = events
        .iter()
        .zip(&payloads)
        .map(|((e, _), payload)| {
            (
                events::conversation_id.eq(e.conversation_id),
                events::seq.eq(e.seq.unwrap_or_default()),
                events::company_id.eq(e.company_id),
                events::kind.eq(&e.event),
                events::payload.eq(payload),
                events::created_at.eq(t),
            )
        })
        .collect();
    crate::core::db::insert_batch(c, events::table, rows)?;
    crate::hooks::store::enqueue_all(c, events)?;
    Ok(())
}

/// Events of a conversation after `after_seq`, oldest first (resume, CONTRACT §4).
pub fn events_after(c: &mut Db, conversation_id: i64, after_seq: i64, limit: i64) -> ApiResult<Vec<Event>> {
    let rows: Vec<(i64, i64, String, String)> = events::table
        .filter(events::conversation_id.eq(conversation_id).and(events::seq.gt(after_seq)))
        .order(events::seq)
        .limit(limit)
        .select((events::company_id, events::seq, events::kind, events::payload))
        .load(c)?;
    Ok(rows
        .into_iter()
        .map(|(company_id, seq, kind, payload)| Event {
            company_id,
            conversation_id,
            seq: Some(seq),
            event: kind,
            data: serde_json::from_str(&payload).unwrap_or(serde_json::Value::Null),
            origin: None,
        })
        .collect())
}

/// Creation time of the first event after `after_seq` (retention check).
pub fn first_event_time_after(c: &mut Db, conversation_id: i64, after_seq: i64) -> ApiResult<Option<NaiveDateTime>> {
    Ok(events::table
        .filter(events::conversation_id.eq(conversation_id).and(events::seq.gt(after_seq)))
        .order(events::seq)
        .select(events::created_at)
        .first(c)
        .optional()?)
}

pub struct ConversationFilter {
    pub status: Option<String>,
    pub assignee_id: Option<i64>,
    pub unassigned: bool,
    /// A team (issue 22), or with `no_team` conversations of none.
    pub team_id: Option<i64>,
    pub no_team: bool,
    /// One customer's conversations (the console's merge dialog).
    pub customer_id: Option<i64>,
    pub unread: bool,
    pub q: Option<String>,
    pub before_update: Option<NaiveDateTime>,
}

/// A page of the company's conversations, newest `last_update_time` first, and the total.
pub fn conversations_page(
    c: &mut Db,
    company_id: i64,
    f: &ConversationFilter,
    offset: i64,
    limit: i64,
) -> ApiResult<(Vec<ConversationRow>, i64)> {
    let build = || {
        let mut q = conversations::table.filter(conversations::company_id.eq(company_id)).into_boxed();
        if let Some(s) = &f.status {
            q = q.filter(conversations::status.eq(s.clone()));
        }
        if let Some(a) = f.assignee_id {
            q = q.filter(conversations::assignee_id.eq(a));
        }
        if f.unassigned {
            q = q.filter(conversations::assignee_id.is_null());
        }
        if let Some(t) = f.team_id {
            q = q.filter(conversations::team_id.eq(t));
        }
        if f.no_team {
            q = q.filter(conversations::team_id.is_null());
        }
        if let Some(u) = f.customer_id {
            q = q.filter(conversations::customer_id.eq(u));
        }
        if f.unread {
            q = q.filter(conversations::unread_count.gt(0));
        }
        if let Some(text) = f.q.as_deref().map(str::trim).filter(|t| !t.is_empty()) {
            let pattern = like_contains(&text.to_lowercase());
            let digits: String = text.chars().filter(char::is_ascii_digit).collect();
            let by_name = crate::users::store::ids_named_like(company_id, pattern);
            if digits.is_empty() {
                q = q.filter(conversations::customer_id.eq_any(by_name));
            } else {
                let by_phone = crate::users::store::ids_with_phone_containing(company_id, &digits);
                q = q
                    .filter(conversations::customer_id.eq_any(by_name).or(conversations::customer_id.eq_any(by_phone)));
            }
        }
        q
    };
    let total: i64 = build().count().get_result(c)?;
    let mut page = build();
    if let Some(t) = f.before_update {
        page = page.filter(conversations::last_update_time.lt(t));
    }
    let rows = page
        .order((conversations::last_update_time.desc(), conversations::id.desc()))
        .offset(offset)
        .limit(limit)
        .select(ConversationRow::as_select())
        .load(c)?;
    Ok((rows, total))
}

/// The company's conversations counted by (status, assignee), optionally of one team
/// (`(Some(id), _)`) or of none (`(None, true)`): the inbox counters (issue 22).
pub fn conversation_counts(
    c: &mut Db,
    company_id: i64,
    (team_id, no_team): (Option<i64>, bool),
) -> ApiResult<Vec<(String, Option<i64>, i64)>> {
    let all = conversations::table.filter(conversations::company_id.eq(company_id));
    let group = (conversations::status, conversations::assignee_id);
    let count = (conversations::status, conversations::assignee_id, diesel::dsl::count_star());
    // Not boxed: diesel cannot group a boxed query.
    Ok(match (team_id, no_team) {
        (Some(t), _) => all.filter(conversations::team_id.eq(t)).group_by(group).select(count).load(c)?,
        (None, true) => all.filter(conversations::team_id.is_null()).group_by(group).select(count).load(c)?,
        (None, false) => all.group_by(group).select(count).load(c)?,
    })
}

/// A conversation's fields as a patch leaves them (`PATCH /conversation/{id}`).
#[derive(AsChangeset)]
#[diesel(table_name = conversations, treat_none_as_null = true)]
pub struct ConversationFields<'a> {
    pub status: &'a str,
    pub snoozed_until: Option<NaiveDateTime>,
    pub assignee_id: Option<i64>,
    pub team_id: Option<i64>,
    pub labels: &'a str,
}

/// Replaces a conversation's patchable fields (the caller checked that it belongs to the company).
pub fn update_conversation(c: &mut Db, id: i64, f: &ConversationFields<'_>) -> ApiResult<()> {
    diesel::update(conversations::table.find(id)).set((f, conversations::last_update_time.eq(now()))).execute(c)?;
    Ok(())
}

/// Reopens a snoozed conversation of the company whose time has come (the claim of an
/// unsnooze job); false when it is not snoozed, or not yet due.
pub fn reopen_if_due(c: &mut Db, company_id: i64, id: i64) -> ApiResult<bool> {
    let t = now();
    let due = conversations::table
        .filter(conversations::id.eq(id).and(conversations::company_id.eq(company_id)))
        .filter(conversations::status.eq(ConversationStatus::Snoozed.as_str()))
        .filter(conversations::snoozed_until.le(t));
    let reopened = diesel::update(due)
        .set((
            conversations::status.eq(ConversationStatus::Open.as_str()),
            conversations::snoozed_until.eq(None::<NaiveDateTime>),
            conversations::last_update_time.eq(t),
        ))
        .execute(c)?;
    Ok(reopened > 0)
}

/// Clears a conversation's unread count; the agent has read it up to `last_read_seq`.
pub fn mark_read(c: &mut Db, id: i64, last_read_seq: i64) -> ApiResult<()> {
    diesel::update(conversations::table.find(id))
        .set((conversations::unread_count.eq(0), conversations::last_read_seq.eq(last_read_seq)))
        .execute(c)?;
    Ok(())
}

/// Unassigns the company's conversations assigned to `user_id`; returns their ids.
pub fn unassign_conversations_of(c: &mut Db, company_id: i64, user_id: i64) -> ApiResult<Vec<i64>> {
    let ids: Vec<i64> = conversations::table
        .filter(conversations::company_id.eq(company_id))
        .filter(conversations::assignee_id.eq(user_id))
        .select(conversations::id)
        .load(c)?;
    for &id in &ids {
        diesel::update(conversations::table.find(id))
            .set((conversations::assignee_id.eq(None::<i64>), conversations::last_update_time.eq(now())))
            .execute(c)?;
    }
    Ok(ids)
}

/// The company's conversations of a team lose it (the team is deleted); returns their ids.
pub fn clear_team_of_conversations(c: &mut Db, company_id: i64, team_id: i64) -> ApiResult<Vec<i64>> {
    let ids: Vec<i64> = conversations::table
        .filter(conversations::company_id.eq(company_id).and(conversations::team_id.eq(team_id)))
        .select(conversations::id)
        .load(c)?;
    for &id in &ids {
        diesel::update(conversations::table.find(id))
            .set((conversations::team_id.eq(None::<i64>), conversations::last_update_time.eq(now())))
            .execute(c)?;
    }
    Ok(ids)
}

/// How many open conversations of the company each of these users is assigned (none: absent).
pub fn open_counts(c: &mut Db, company_id: i64, assignee_ids: &[i64]) -> ApiResult<HashMap<i64, i64>> {
    Ok(conversations::table
        .filter(conversations::company_id.eq(company_id))
        .filter(conversations::assignee_id.eq_any(assignee_ids))
        .filter(conversations::status.eq("open"))
        .group_by(conversations::assignee_id)
        .select((conversations::assignee_id, diesel::dsl::count_star()))
        .load::<(Option<i64>, i64)>(c)?
        .into_iter()
        .filter_map(|(a, n)| Some((a?, n)))
        .collect())
}

/// Assigns a conversation to `agent` if it is still open, unassigned and in `team_id` (the
/// auto-assignment's compare-and-set, issue 22); false when it no longer is.
pub fn assign_if_unassigned(c: &mut Db, id: i64, team_id: i64, agent: i64, t: NaiveDateTime) -> ApiResult<bool> {
    let assigned = diesel::update(
        conversations::table
            .find(id)
            .filter(conversations::team_id.eq(team_id))
            .filter(conversations::assignee_id.is_null())
            .filter(conversations::status.eq("open")),
    )
    .set((conversations::assignee_id.eq(agent), conversations::last_update_time.eq(t)))
    .execute(c)?;
    Ok(assigned > 0)
}

// ---- merging (issue 22) ----

/// A conversation's messages, oldest first (time, then arrival).
pub fn messages_in_time_order(c: &mut Db, conversation_id: i64) -> ApiResult<Vec<MessageRow>> {
    Ok(messages::table
        .filter(messages::conversation_id.eq(conversation_id))
        .order((messages::created_at, messages::pk))
        .select(MessageRow::as_select())
        .load(c)?)
}

/// Moves a message into another conversation of its company as that conversation's next
/// event (`message.created` with its next `seq`, issue 22 merge); its mentions follow it. The
/// row keeps its id and `pk`, so the thread (ordered by `pk`) shows it in its time.
pub fn move_message(c: &mut Db, m: &MessageRow, into: &ConversationRow) -> ApiResult<Event> {
    diesel::update(messages::table.filter(messages::pk.eq(m.pk)))
        .set(messages::conversation_id.eq(into.id))
        .execute(c)?;
    diesel::update(mentions::table.filter(mentions::message_id.eq(&m.id)))
        .set(mentions::conversation_id.eq(into.id))
        .execute(c)?;
    let moved = message_by_id(c, &m.id)?;
    let view = serde_json::to_value(message_view(c, &moved)?).map_err(anyhow::Error::from)?;
    let event = append_event(c, into, MESSAGE_CREATED, view)?;
    diesel::update(messages::table.filter(messages::pk.eq(m.pk)))
        .set(messages::seq.eq(event.seq.unwrap_or_default()))
        .execute(c)?;
    Ok(event)
}

/// The target of a merge takes over the source's counters: message and unread counts, the
/// later 24-hour window, the newest message, both sets of labels.
pub fn absorb_counters(c: &mut Db, source: &ConversationRow, target: &ConversationRow, moved: i64) -> ApiResult<()> {
    let last: Option<String> = messages::table
        .filter(messages::conversation_id.eq(target.id))
        .order(messages::pk.desc())
        .select(messages::id)
        .first(c)
        .optional()?;
    let mut labels: Vec<String> = serde_json::from_str(&target.labels).unwrap_or_default();
    labels.extend(serde_json::from_str::<Vec<String>>(&source.labels).unwrap_or_default());
    labels.sort();
    labels.dedup();
    diesel::update(conversations::table.find(target.id))
        .set((
            conversations::message_count.eq(conversations::message_count + moved),
            conversations::unread_count.eq(conversations::unread_count + source.unread_count),
            conversations::last_free_message_time.eq(target.last_free_message_time.max(source.last_free_message_time)),
            conversations::last_message_id.eq(last),
            conversations::labels.eq(serde_json::to_string(&labels).map_err(anyhow::Error::from)?),
            conversations::last_update_time.eq(now()),
        ))
        .execute(c)?;
    Ok(())
}

/// A merged conversation the customer writes to again (or an agent opens again on its channel)
/// comes back as a conversation of its own (issue 22): no longer merged; its earlier messages
/// stay in the target.
pub fn unmerge(c: &mut Db, conv: &mut ConversationRow) -> ApiResult<()> {
    if conv.merged_into.is_some() {
        diesel::update(conversations::table.find(conv.id))
            .set(conversations::merged_into.eq(None::<i64>))
            .execute(c)?;
        conv.merged_into = None;
    }
    Ok(())
}

/// Locks a conversation's row until the transaction ends: an UPDATE that changes nothing
/// (PostgreSQL row lock; SQLite has one writer).
pub fn lock_conversation(c: &mut Db, id: i64) -> ApiResult<()> {
    diesel::update(conversations::table.find(id))
        .set(conversations::last_seq.eq(conversations::last_seq))
        .execute(c)?;
    Ok(())
}

/// The source of a merge: resolved and merged into `target_id`, with no messages, unread
/// count, last message or snooze left.
pub fn mark_merged(c: &mut Db, source_id: i64, target_id: i64) -> ApiResult<()> {
    diesel::update(conversations::table.find(source_id))
        .set((
            conversations::status.eq(ConversationStatus::Resolved.as_str()),
            conversations::merged_into.eq(target_id),
            conversations::message_count.eq(0),
            conversations::unread_count.eq(0),
            conversations::last_message_id.eq(None::<String>),
            conversations::snoozed_until.eq(None::<NaiveDateTime>),
            conversations::last_update_time.eq(now()),
        ))
        .execute(c)?;
    Ok(())
}

/// The company's conversations merged into `from` now point at `to`; returns their ids.
pub fn redirect_merged(c: &mut Db, company_id: i64, from: i64, to: i64) -> ApiResult<Vec<i64>> {
    let ids: Vec<i64> = conversations::table
        .filter(conversations::company_id.eq(company_id).and(conversations::merged_into.eq(from)))
        .select(conversations::id)
        .load(c)?;
    for &id in &ids {
        diesel::update(conversations::table.find(id)).set(conversations::merged_into.eq(to)).execute(c)?;
    }
    Ok(ids)
}

// ---- messages ----

pub struct NewMessage<'a> {
    pub conversation: &'a ConversationRow,
    pub direction: Direction,
    pub kind: &'a str,
    pub content: Option<&'a str>,
    pub template_id: Option<i64>,
    pub params: &'a [String],
    pub status: Status,
    pub provider_message_id: Option<&'a str>,
    pub client_id: Option<&'a str>,
    pub sender_id: Option<i64>,
    pub created_at: NaiveDateTime,
    /// A private note (issue 22): stored and shown to agents, never queued for a provider.
    pub private: bool,
    /// A scheduled send (issue 22): its time and fallback template (`status` `SCHEDULED`).
    pub send_at: Option<NaiveDateTime>,
    pub fallback_template_id: Option<i64>,
}

/// A new message id: a UUIDv7 as 32 lowercase hex characters (CONTRACT §2).
pub fn new_message_id() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}

/// Stores a new message as its conversation's next event (CONTRACT §4): a [`Stage`] of one.
/// `attach` links the message's attachments once its row exists and returns how many.
/// Returns the row, its view and the event.
pub fn create_message<'a>(
    c: &mut Db,
    m: &NewMessage<'_>,
    attach: impl FnOnce(&mut Db, &MessageRow) -> ApiResult<usize> + 'a,
) -> ApiResult<(MessageRow, MessageView, Event)> {
    let mut stage = Stage::default();
    stage.push(m, Some(Box::new(attach)));
    let Created { row, view, event } =
        stage.finish(c)?.pop().ok_or_else(|| ApiError::Internal(anyhow::anyhow!("a stage of one gave nothing")))?;
    Ok((row, view, event))
}

/// What runs once a staged message's row exists (its attachments), before its event is built;
/// returns how many attachments it linked.
pub type AfterInsert<'a> = Box<dyn FnOnce(&mut Db, &MessageRow) -> ApiResult<usize> + 'a>;

/// New messages written together (a group commit's, bench/README.md "Ingest"): each message
/// is its conversation's next event (CONTRACT §4). [`Stage::flush`] takes the seqs with one
/// UPDATE per touched conversation (SQLite) or one for all of them (PostgreSQL), which also
/// bumps the counters (a customer message reopens the conversation, clears a snooze, counts
/// as unread and refreshes its 24-hour window), inserts every message with one multi-row INSERT, runs each
/// message's [`AfterInsert`], and inserts every `message.created` event with one more. Seqs
/// follow the order of [`Stage::push`], so they stay gap-free and in order per conversation.
#[derive(Default)]
pub struct Stage<'a> {
    pending: Vec<(MessageRow, ConversationRow, Option<AfterInsert<'a>>)>,
    done: Vec<Created>,
}

/// A stored message: its row, its view and its `message.created` event.
#[derive(Debug, Clone)]
pub struct Created {
    pub row: MessageRow,
    pub view: MessageView,
    pub event: Event,
}

impl<'a> Stage<'a> {
    /// Stages a message; returns its index among everything this stage created (the position
    /// of its [`Created`] in what [`Stage::finish`] returns).
    pub fn push(&mut self, m: &NewMessage<'_>, after_insert: Option<AfterInsert<'a>>) -> usize {
        let conv = m.conversation;
        let row = MessageRow {
            pk: 0,
            id: new_message_id(),
            conversation_id: conv.id,
            company_id: conv.company_id,
            channel_id: conv.channel_id,
            direction: m.direction.as_str().to_owned(),
            kind: m.kind.to_owned(),
            content: m.content.map(str::to_owned),
            template_id: m.template_id,
            params: serde_json::to_string(m.params).unwrap_or_else(|_| "[]".into()),
            status: m.status.as_str().to_owned(),
            status_rank: m.status.rank(),
            provider_message_id: m.provider_message_id.map(str::to_owned),
            client_id: m.client_id.map(str::to_owned),
            sender_id: m.sender_id,
            error_code: None,
            seq: 0,
            created_at: m.created_at,
            updated_at: now(),
            is_private: m.private,
            edited_at: None,
            deleted_at: None,
            send_at: m.send_at,
            fallback_template_id: m.fallback_template_id,
        };
        self.pending.push((row, conv.clone(), after_insert));
        self.done.len() + self.pending.len() - 1
    }

    /// Writes everything staged so far (later reads in the transaction see it).
    pub fn flush(&mut self, c: &mut Db) -> ApiResult<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let mut pending = std::mem::take(&mut self.pending);
        let t = now();
        // Per conversation, in order of first appearance: how many messages, how many from the
        // customer, the newest customer message time, the last message.
        let mut touched: Vec<Touch> = Vec::new();
        for (row, _, _) in &pending {
            let at = match touched.iter().position(|x| x.id == row.conversation_id) {
                Some(at) => at,
                None => {
                    touched.push(Touch { id: row.conversation_id, ..Touch::default() });
                    touched.len() - 1
                }
            };
            let x = &mut touched[at];
            x.count += 1;
            x.last_id = row.id.clone();
            if row.direction == Direction::Received.as_str() {
                x.received += 1;
                x.free_time = Some(x.free_time.map_or(row.created_at, |f: NaiveDateTime| f.max(row.created_at)));
            }
        }
        let rows: Vec<&MessageRow> = pending.iter().map(|(row, _, _)| row).collect();
        let stored = match &mut *c {
            Db::Pg(conn) => append_messages_pg(conn, &touched, &rows, t)?,
            Db::Sqlite(conn) => append_messages_sqlite(conn, &touched, &rows, t)?,
        };
        for (row, _, _) in pending.iter_mut() {
            let (pk, seq) = stored
                .iter()
                .find(|(id, _, _)| *id == row.id)
                .map(|(_, pk, seq)| (*pk, *seq))
                .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("message {} was not inserted", row.id)))?;
            (row.pk, row.seq) = (pk, seq);
        }
        let mut created = Vec::with_capacity(pending.len());
        for (row, conv, after_insert) in pending {
            let attached = match after_insert {
                Some(f) => f(c, &row)?,
                None => 0,
            };
            let view = match attached {
                0 => MessageView::new(&row, &[]),
                _ => message_view(c, &row)?,
            };
            let data = serde_json::to_value(&view).map_err(anyhow::Error::from)?;
            let event = Event {
                company_id: conv.company_id,
                conversation_id: conv.id,
                seq: Some(row.seq),
                event: MESSAGE_CREATED.to_owned(),
                data,
                origin: None,
            };
            created.push((Created { row, view, event }, conv.assignee_id));
        }
        let events: Vec<(&Event, Option<i64>)> = created.iter().map(|(x, a)| (&x.event, *a)).collect();
        insert_events(c, &events)?;
        self.done.extend(created.into_iter().map(|(x, _)| x));
        Ok(())
    }

    /// Flushes, then gives every message this stage created, in the order they were pushed.
    pub fn finish(mut self, c: &mut Db) -> ApiResult<Vec<Created>> {
        self.flush(c)?;
        Ok(self.done)
    }
}

/// One conversation's share of a [`Stage`] flush.
#[derive(Default)]
struct Touch {
    id: i64,
    count: i64,
    received: i64,
    free_time: Option<NaiveDateTime>,
    last_id: String,
}

/// PostgreSQL: bumps the touched conversations and inserts the staged messages `rows` with the
/// seqs that took, in one statement; returns each message's (id, pk, seq).
///
/// The bump (`v`: id, k messages, received of them, last message id, newest customer message
/// time) takes `k` seqs from each conversation and moves its counters: a customer message
/// reopens the conversation, clears a snooze, counts as unread and moves
/// `last_free_message_time` forward (never back). Its row locks serialise the writers of a
/// conversation; `c.id = ANY($1)` has the planner find them by primary key (joined to the
/// `unnest` alone, the cached generic plan scanned every conversation, 1 ms a batch at 1,000
/// of them and growing with the table; bench/README.md). A message's seq is its
/// conversation's new `last_seq` less the number of its messages staged after it. One round
/// trip, and one statement text whatever the number of rows, so it is prepared once per
/// connection, where the bump and a multi-row INSERT (parsed and planned again on every
/// execution) took two (bench/README.md, issue 21).
fn append_messages_pg(
    c: &mut diesel::PgConnection,
    touched: &[Touch],
    rows: &[&MessageRow],
    t: NaiveDateTime,
) -> ApiResult<Vec<(String, i64, i64)>> {
    use diesel::sql_types::{Array, BigInt, Bool, Integer, Nullable, Text, Timestamp};
    #[derive(QueryableByName)]
    struct Stored {
        #[diesel(sql_type = Text)]
        id: String,
        #[diesel(sql_type = BigInt)]
        pk: i64,
        #[diesel(sql_type = BigInt)]
        seq: i64,
    }
    let back: Vec<i64> = rows
        .iter()
        .enumerate()
        .map(|(i, row)| rows[i + 1..].iter().filter(|r| r.conversation_id == row.conversation_id).count() as i64)
        .collect();
    let col = |f: fn(&MessageRow) -> i64| rows.iter().map(|r| f(r)).collect::<Vec<i64>>();
    let text = |f: fn(&MessageRow) -> &str| rows.iter().map(|r| f(r)).collect::<Vec<&str>>();
    let opt_text = |f: fn(&MessageRow) -> Option<&str>| rows.iter().map(|r| f(r)).collect::<Vec<Option<&str>>>();
    let opt_id = |f: fn(&MessageRow) -> Option<i64>| rows.iter().map(|r| f(r)).collect::<Vec<Option<i64>>>();
    let stored: Vec<Stored> = CacheBySql::new(
        diesel::sql_query(
            "WITH b AS (UPDATE conversations AS c SET last_seq = c.last_seq + v.k, \
               message_count = c.message_count + v.k, unread_count = c.unread_count + v.received, \
               last_update_time = $6, last_message_id = v.last_id, \
               last_free_message_time = CASE WHEN v.free_time IS NULL THEN c.last_free_message_time \
                 ELSE GREATEST(c.last_free_message_time, v.free_time) END, \
               status = CASE WHEN v.received > 0 THEN 'open' ELSE c.status END, \
               snoozed_until = CASE WHEN v.received > 0 THEN NULL ELSE c.snoozed_until END \
               FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::text[], $5::timestamp[]) \
                 AS v(id, k, received, last_id, free_time) \
               WHERE c.id = v.id AND c.id = ANY($1::bigint[]) RETURNING c.id, c.last_seq) \
             INSERT INTO messages (id, conversation_id, company_id, channel_id, direction, kind, content, \
               template_id, params, status, status_rank, provider_message_id, client_id, sender_id, seq, \
               created_at, updated_at, is_private, send_at, fallback_template_id) \
             SELECT m.id, m.conversation_id, m.company_id, m.channel_id, m.direction, m.kind, m.content, \
               m.template_id, m.params, m.status, m.status_rank, m.provider_message_id, m.client_id, \
               m.sender_id, (SELECT b.last_seq FROM b WHERE b.id = m.conversation_id) - m.back, \
               m.created_at, m.updated_at, m.is_private, m.send_at, m.fallback_template_id \
             FROM unnest($7::text[], $8::bigint[], $9::bigint[], $10::bigint[], $11::text[], $12::text[], \
               $13::text[], $14::bigint[], $15::text[], $16::text[], $17::int[], $18::text[], $19::text[], \
               $20::bigint[], $21::bigint[], $22::timestamp[], $23::timestamp[], $24::bool[], \
               $25::timestamp[], $26::bigint[]) WITH ORDINALITY \
               AS m(id, conversation_id, company_id, channel_id, direction, kind, content, template_id, \
                 params, status, status_rank, provider_message_id, client_id, sender_id, back, created_at, \
                 updated_at, is_private, send_at, fallback_template_id, ord) \
             ORDER BY m.ord \
             RETURNING id, pk, seq",
        )
        .bind::<Array<BigInt>, _>(touched.iter().map(|x| x.id).collect::<Vec<_>>())
        .bind::<Array<BigInt>, _>(touched.iter().map(|x| x.count).collect::<Vec<_>>())
        .bind::<Array<BigInt>, _>(touched.iter().map(|x| x.received).collect::<Vec<_>>())
        .bind::<Array<Text>, _>(touched.iter().map(|x| x.last_id.as_str()).collect::<Vec<_>>())
        .bind::<Array<Nullable<Timestamp>>, _>(touched.iter().map(|x| x.free_time).collect::<Vec<_>>())
        .bind::<Timestamp, _>(t)
        .bind::<Array<Text>, _>(text(|r| &r.id))
        .bind::<Array<BigInt>, _>(col(|r| r.conversation_id))
        .bind::<Array<BigInt>, _>(col(|r| r.company_id))
        .bind::<Array<BigInt>, _>(col(|r| r.channel_id))
        .bind::<Array<Text>, _>(text(|r| &r.direction))
        .bind::<Array<Text>, _>(text(|r| &r.kind))
        .bind::<Array<Nullable<Text>>, _>(opt_text(|r| r.content.as_deref()))
        .bind::<Array<Nullable<BigInt>>, _>(opt_id(|r| r.template_id))
        .bind::<Array<Text>, _>(text(|r| &r.params))
        .bind::<Array<Text>, _>(text(|r| &r.status))
        .bind::<Array<Integer>, _>(rows.iter().map(|r| r.status_rank).collect::<Vec<i32>>())
        .bind::<Array<Nullable<Text>>, _>(opt_text(|r| r.provider_message_id.as_deref()))
        .bind::<Array<Nullable<Text>>, _>(opt_text(|r| r.client_id.as_deref()))
        .bind::<Array<Nullable<BigInt>>, _>(opt_id(|r| r.sender_id))
        .bind::<Array<BigInt>, _>(back)
        .bind::<Array<Timestamp>, _>(rows.iter().map(|r| r.created_at).collect::<Vec<_>>())
        .bind::<Array<Timestamp>, _>(rows.iter().map(|r| r.updated_at).collect::<Vec<_>>())
        .bind::<Array<Bool>, _>(rows.iter().map(|r| r.is_private).collect::<Vec<_>>())
        .bind::<Array<Nullable<Timestamp>>, _>(rows.iter().map(|r| r.send_at).collect::<Vec<_>>())
        .bind::<Array<Nullable<BigInt>>, _>(opt_id(|r| r.fallback_template_id)),
    )
    .load(c)?;
    Ok(stored.into_iter().map(|s| (s.id, s.pk, s.seq)).collect())
}

/// SQLite: [`append_messages_pg`] in a statement per conversation (the bump)
/// and one INSERT per message (as `core::db::insert_batch`, with the rows' keys returned):
/// SQLite has no round trips to save, and its statements are prepared once.
fn append_messages_sqlite(
    c: &mut diesel::SqliteConnection,
    touched: &[Touch],
    rows: &[&MessageRow],
    t: NaiveDateTime,
) -> ApiResult<Vec<(String, i64, i64)>> {
    use diesel::sql_types::{BigInt, Nullable, Text, Timestamp};
    #[derive(QueryableByName)]
    struct Bumped {
        #[diesel(sql_type = BigInt)]
        last_seq: i64,
    }
    let mut seqs: Vec<i64> = vec![0; rows.len()];
    for x in touched {
        let b: Bumped = CacheBySql::new(
            diesel::sql_query(
                "UPDATE conversations SET last_seq = last_seq + ?1, message_count = message_count + ?1, \
                 unread_count = unread_count + ?2, last_update_time = ?3, last_message_id = ?4, \
                 last_free_message_time = CASE WHEN ?5 IS NULL THEN last_free_message_time \
                   WHEN last_free_message_time IS NULL OR last_free_message_time < ?5 THEN ?5 \
                   ELSE last_free_message_time END, \
                 status = CASE WHEN ?2 > 0 THEN 'open' ELSE status END, \
                 snoozed_until = CASE WHEN ?2 > 0 THEN NULL ELSE snoozed_until END \
                 WHERE id = ?6 RETURNING last_seq",
            )
            .bind::<BigInt, _>(x.count)
            .bind::<BigInt, _>(x.received)
            .bind::<Timestamp, _>(t)
            .bind::<Text, _>(&x.last_id)
            .bind::<Nullable<Timestamp>, _>(x.free_time)
            .bind::<BigInt, _>(x.id),
        )
        .get_result(c)?;
        // The conversation's new last_seq is its last staged message's.
        let mut seq = b.last_seq - x.count;
        for (at, _) in rows.iter().enumerate().filter(|(_, r)| r.conversation_id == x.id) {
            seq += 1;
            seqs[at] = seq;
        }
    }
    let values: Vec<_> = rows
        .iter()
        .zip(&seqs)
        .map(|(row, seq)| {
            (
                messages::id.eq(&row.id),
                messages::conversation_id.eq(row.conversation_id),
                messages::company_id.eq(row.company_id),
                messages::channel_id.eq(row.channel_id),
                messages::direction.eq(&row.direction),
                messages::kind.eq(&row.kind),
                messages::content.eq(&row.content),
                messages::template_id.eq(row.template_id),
                messages::params.eq(&row.params),
                messages::status.eq(&row.status),
                messages::status_rank.eq(row.status_rank),
                messages::provider_message_id.eq(&row.provider_message_id),
                messages::client_id.eq(&row.client_id),
                messages::sender_id.eq(row.sender_id),
                messages::seq.eq(*seq),
                messages::created_at.eq(row.created_at),
                messages::updated_at.eq(row.updated_at),
                messages::is_private.eq(row.is_private),
                messages::send_at.eq(row.send_at),
                messages::fallback_template_id.eq(row.fallback_template_id),
            )
        })
        .collect();
    let returning = (messages::id, messages::pk, messages::seq);
    Ok(if values.len() <= CACHED_FORMS {
        values
            .into_iter()
            .map(|v| diesel::insert_into(messages::table).values(v).returning(returning).get_result(c))
            .collect::<Result<_, _>>()?
    } else {
        diesel::insert_into(messages::table).values(values).returning(returning).get_results(c)?
    })
}

/// What the delivery worker reads before handing a message of `company_id` to its provider, in
/// one statement: the message, its live channel and its conversation's customer. `NotFound`
/// when the message is gone or its channel deleted.
pub fn message_to_deliver(c: &mut Db, company_id: i64, id: &str) -> ApiResult<(MessageRow, ChannelRow, i64)> {
    Ok(messages::table
        .inner_join(channels::table)
        .inner_join(conversations::table)
        .filter(messages::id.eq(id).and(messages::company_id.eq(company_id)))
        .filter(channels::deleted_at.is_null().and(channels::company_id.eq(company_id)))
        .filter(conversations::company_id.eq(company_id))
        .select((MessageRow::as_select(), ChannelRow::as_select(), conversations::customer_id))
        .first(c)?)
}

pub fn message_by_id(c: &mut Db, id: &str) -> ApiResult<MessageRow> {
    Ok(messages::table.filter(messages::id.eq(id)).select(MessageRow::as_select()).first(c)?)
}

/// [`message_by_id`], `None` when there is no such message.
pub fn find_message_by_id(c: &mut Db, id: &str) -> ApiResult<Option<MessageRow>> {
    match message_by_id(c, id) {
        Ok(m) => Ok(Some(m)),
        Err(ApiError::NotFound) => Ok(None),
        Err(e) => Err(e),
    }
}

pub fn message(c: &mut Db, company_id: i64, id: &str) -> ApiResult<MessageRow> {
    Ok(messages::table
        .filter(messages::id.eq(id).and(messages::company_id.eq(company_id)))
        .select(MessageRow::as_select())
        .first(c)?)
}

pub fn message_by_client_id(c: &mut Db, sender_id: i64, client_id: &str) -> ApiResult<Option<MessageRow>> {
    Ok(messages::table
        .filter(messages::sender_id.eq(sender_id).and(messages::client_id.eq(client_id)))
        .select(MessageRow::as_select())
        .first(c)
        .optional()?)
}

/// Which of `keys` (sender, clientId) name a stored message, in one statement (PostgreSQL
/// only: a round trip per key cost a group commit of agents' sends a millisecond, bench/README.md
/// issue 21). Each key is one lookup of the unique `(sender_id, client_id)` index (`LATERAL …
/// LIMIT 1`), whatever plan the table's size would otherwise suggest.
pub fn taken_client_ids_pg(c: &mut diesel::PgConnection, keys: &[(i64, &str)]) -> ApiResult<HashSet<(i64, String)>> {
    use diesel::sql_types::{Array, BigInt, Text};
    #[derive(QueryableByName)]
    struct Taken {
        #[diesel(sql_type = BigInt)]
        sender_id: i64,
        #[diesel(sql_type = Text)]
        client_id: String,
    }
    if keys.is_empty() {
        return Ok(HashSet::new());
    }
    let taken: Vec<Taken> = CacheBySql::new(
        diesel::sql_query(
            "SELECT k.sender_id, k.client_id FROM unnest($1::bigint[], $2::text[]) AS k(sender_id, client_id) \
             CROSS JOIN LATERAL (SELECT 1 FROM messages m \
               WHERE m.sender_id = k.sender_id AND m.client_id = k.client_id LIMIT 1) AS found",
        )
        .bind::<Array<BigInt>, _>(keys.iter().map(|k| k.0).collect::<Vec<_>>())
        .bind::<Array<Text>, _>(keys.iter().map(|k| k.1).collect::<Vec<_>>()),
    )
    .load(c)?;
    Ok(taken.into_iter().map(|t| (t.sender_id, t.client_id)).collect())
}

pub fn message_by_provider_id(c: &mut Db, channel_id: i64, provider_id: &str) -> ApiResult<Option<MessageRow>> {
    Ok(crate::on_backend!(c, |c| messages::table
        .filter(messages::channel_id.eq(channel_id).and(messages::provider_message_id.eq(provider_id)))
        .select(MessageRow::as_select())
        .first(c)
        .optional())?)
}

/// Which of these provider message ids a channel already has.
pub fn known_provider_ids(c: &mut Db, channel_id: i64, provider_ids: &[&str]) -> ApiResult<Vec<String>> {
    if provider_ids.is_empty() {
        return Ok(Vec::new());
    }
    let known: Vec<Option<String>> = crate::on_backend!(c, |c| CacheBySql::up_to(
        provider_ids.len(),
        messages::table
            .filter(messages::channel_id.eq(channel_id).and(messages::provider_message_id.eq_any(provider_ids)))
            .select(messages::provider_message_id)
    )
    .load(c))?;
    Ok(known.into_iter().flatten().collect())
}

/// Newest first; either by offset or, with `before_pk`, by keyset (no OFFSET scan).
pub fn messages_page(
    c: &mut Db,
    conversation_id: i64,
    before_pk: Option<i64>,
    offset: i64,
    limit: i64,
) -> ApiResult<Vec<MessageRow>> {
    let mut q = messages::table.filter(messages::conversation_id.eq(conversation_id)).into_boxed();
    if let Some(pk) = before_pk {
        q = q.filter(messages::pk.lt(pk));
    } else {
        q = q.offset(offset);
    }
    Ok(q.order(messages::pk.desc()).limit(limit).select(MessageRow::as_select()).load(c)?)
}

pub fn messages_by_pks(c: &mut Db, company_id: i64, pks: &[i64]) -> ApiResult<Vec<MessageRow>> {
    Ok(messages::table
        .filter(messages::company_id.eq(company_id).and(messages::pk.eq_any(pks)))
        .order(messages::pk.desc())
        .select(MessageRow::as_select())
        .load(c)?)
}

/// The conversation of each of these messages, by message id, whatever their company (ids the
/// caller read from its own rows: the delivery worker's jobs); an unknown id is absent.
pub fn conversations_of_messages(c: &mut Db, ids: &[&str]) -> ApiResult<HashMap<String, i64>> {
    Ok(messages::table
        .filter(messages::id.eq_any(ids))
        .select((messages::id, messages::conversation_id))
        .load::<(String, i64)>(c)?
        .into_iter()
        .collect())
}

/// The messages with these ids, whatever their company: for ids the caller read from rows it
/// already scoped (a conversation list's last messages).
pub fn messages_with_ids(c: &mut Db, ids: &[String]) -> ApiResult<Vec<MessageRow>> {
    Ok(messages::table.filter(messages::id.eq_any(ids)).select(MessageRow::as_select()).load(c)?)
}

/// The status of each of these messages, by id, whatever their company (ids the caller read
/// from its own company's rows); an unknown id is absent.
pub fn statuses_by_id(c: &mut Db, ids: &[String]) -> ApiResult<HashMap<String, String>> {
    Ok(messages::table
        .filter(messages::id.eq_any(ids))
        .select((messages::id, messages::status))
        .load::<(String, String)>(c)?
        .into_iter()
        .collect())
}

/// The message ids of a campaign's recipients in one status, as `campaigns::store` (the owner
/// of `campaign_recipients`) builds them for [`status_counts`]: named here because a subquery
/// is passed by its concrete type (the multi-backend connection cannot run a boxed subselect,
/// and diesel does not let a generic one be named).
pub type CampaignMessageIds = dsl::Select<
    dsl::Filter<
        dsl::Filter<campaign_recipients::table, dsl::Eq<campaign_recipients::campaign_id, i64>>,
        dsl::Eq<campaign_recipients::status, &'static str>,
    >,
    campaign_recipients::message_id,
>;

/// How many of the messages whose id is in `ids` are in each status: `(status, count)`. One
/// statement, the subquery inside it.
pub fn status_counts(c: &mut Db, ids: CampaignMessageIds) -> ApiResult<Vec<(String, i64)>> {
    Ok(messages::table
        .filter(messages::id.nullable().eq_any(ids))
        .group_by(messages::status)
        .select((messages::status, dsl::count_star()))
        .load(c)?)
}

/// The subquery of [`ids_with_status_in`].
pub type IdsWithStatusIn<'a> = dsl::Select<
    dsl::Filter<
        dsl::Filter<messages::table, dsl::Eq<messages::company_id, i64>>,
        dsl::EqAny<messages::status, Vec<&'a str>>,
    >,
    dsl::Nullable<messages::id>,
>;

/// The subquery of [`ids_with_status`].
pub type IdsWithStatus<'a> = dsl::Select<
    dsl::Filter<dsl::Filter<messages::table, dsl::Eq<messages::company_id, i64>>, dsl::Eq<messages::status, &'a str>>,
    dsl::Nullable<messages::id>,
>;

/// A subquery for another table's filter (a campaign's recipients by their message's status):
/// the (nullable) ids of the company's messages in one of `statuses`. Not boxed: the
/// multi-backend connection cannot run a boxed subselect.
pub fn ids_with_status_in(company_id: i64, statuses: Vec<&str>) -> IdsWithStatusIn<'_> {
    messages::table
        .filter(messages::company_id.eq(company_id))
        .filter(messages::status.eq_any(statuses))
        .select(messages::id.nullable())
}

/// A subquery for another table's filter: the (nullable) ids of the company's messages in
/// `status`. Not boxed, like [`ids_with_status_in`].
pub fn ids_with_status(company_id: i64, status: &str) -> IdsWithStatus<'_> {
    messages::table
        .filter(messages::company_id.eq(company_id))
        .filter(messages::status.eq(status))
        .select(messages::id.nullable())
}

/// Views of messages with their attachments, in the given order.
pub fn message_views(c: &mut Db, rows: &[MessageRow]) -> ApiResult<Vec<MessageView>> {
    // One message may come more than once (the rows a delivery's status steps left).
    let mut ids: Vec<String> = rows.iter().map(|m| m.id.clone()).collect();
    ids.sort_unstable();
    ids.dedup();
    let atts = crate::media::db::attachments_of(c, &ids)?;
    let reactions = reactions_of(c, &ids)?;
    Ok(rows
        .iter()
        .map(|m| {
            let mine: Vec<AttachmentRow> =
                atts.iter().filter(|a| a.message_id.as_deref() == Some(&m.id)).cloned().collect();
            let mut view = MessageView::new(m, &mine);
            view.reactions = reactions.iter().filter(|(id, _)| *id == m.id).map(|(_, r)| r.clone()).collect();
            view
        })
        .collect())
}

// ---- reactions (issue 22) ----

/// The reactions on these messages, oldest first: (message id, reaction).
fn reactions_of(c: &mut Db, message_ids: &[String]) -> ApiResult<Vec<(String, ReactionView)>> {
    if message_ids.is_empty() {
        return Ok(Vec::new());
    }
    // Kept prepared, like `media::db::attachments_of` beside it in every message view.
    let rows: Vec<(String, i64, bool, String)> = crate::on_backend!(c, |c| CacheBySql::up_to(
        message_ids.len(),
        message_reactions::table
            .filter(message_reactions::message_id.eq_any(message_ids))
            .order(message_reactions::id)
            .select((
                message_reactions::message_id,
                message_reactions::by_id,
                message_reactions::by_customer,
                message_reactions::emoji,
            ))
    )
    .load(c))?;
    Ok(rows
        .into_iter()
        .map(|(id, by_id, customer, emoji)| {
            let by = if customer { ReactionBy::Customer("customer".into()) } else { ReactionBy::Agent(by_id) };
            (id, ReactionView { emoji, by })
        })
        .collect())
}

/// One person's reaction on a message (the customer's, or an agent's), now `emoji`; an empty
/// one removes it. False when nothing changed (the same reaction again, a retried notice).
pub fn set_reaction(c: &mut Db, m: &MessageRow, by_id: i64, by_customer: bool, emoji: &str) -> ApiResult<bool> {
    let mine = || {
        message_reactions::table
            .filter(message_reactions::message_id.eq(&m.id))
            .filter(message_reactions::by_id.eq(by_id))
            .filter(message_reactions::company_id.eq(m.company_id))
    };
    if emoji.is_empty() {
        return Ok(diesel::delete(mine()).execute(c)? > 0);
    }
    let current: Option<String> = mine().select(message_reactions::emoji).first(c).optional()?;
    match current {
        Some(e) if e == emoji => Ok(false),
        Some(_) => {
            diesel::update(mine())
                .set((message_reactions::emoji.eq(emoji), message_reactions::updated_at.eq(now())))
                .execute(c)?;
            Ok(true)
        }
        None => {
            diesel::insert_into(message_reactions::table)
                .values((
                    message_reactions::company_id.eq(m.company_id),
                    message_reactions::message_id.eq(&m.id),
                    message_reactions::by_id.eq(by_id),
                    message_reactions::by_customer.eq(by_customer),
                    message_reactions::emoji.eq(emoji),
                    message_reactions::updated_at.eq(now()),
                ))
                .execute(c)?;
            Ok(true)
        }
    }
}

/// An agent's reaction on a message as it is now (`""` when they have none).
pub fn reaction_of(c: &mut Db, company_id: i64, message_id: &str, by_id: i64) -> ApiResult<String> {
    Ok(message_reactions::table
        .filter(message_reactions::message_id.eq(message_id))
        .filter(message_reactions::by_id.eq(by_id))
        .filter(message_reactions::company_id.eq(company_id))
        .select(message_reactions::emoji)
        .first(c)
        .optional()?
        .unwrap_or_default())
}

pub fn message_view(c: &mut Db, row: &MessageRow) -> ApiResult<MessageView> {
    Ok(message_views(c, std::slice::from_ref(row))?.remove(0))
}

/// Moves a message's status forward (never backwards); `None` when it did not move.
pub fn advance_status(
    c: &mut Db,
    m: &MessageRow,
    to: Status,
    error_code: Option<&str>,
) -> ApiResult<Option<MessageRow>> {
    let current = Status::parse(&m.status).unwrap_or(Status::Pending);
    if !to.advances(current) {
        return Ok(None);
    }
    // The rank guard in SQL keeps two concurrent updates from moving it backwards. The row
    // comes back from the UPDATE itself (`RETURNING`), not from a second read. Kept prepared
    // (diesel prepares an UPDATE again at each execution): every status a provider reports
    // comes through here.
    Ok(crate::on_backend!(c, |c| CacheBySql::new(
        diesel::update(messages::table.filter(messages::pk.eq(m.pk).and(messages::status_rank.eq(m.status_rank))))
            .set((
                messages::status.eq(to.as_str()),
                messages::status_rank.eq(to.rank()),
                messages::error_code.eq(error_code.or(m.error_code.as_deref())),
                messages::updated_at.eq(now()),
            ))
            .returning(MessageRow::as_returning())
    )
    .get_result(c)
    .optional())?)
}

/// Records the provider's id of a sent message; returns the row as it now is.
pub fn set_provider_id(c: &mut Db, m: &MessageRow, provider_id: &str) -> ApiResult<MessageRow> {
    Ok(crate::on_backend!(c, |c| CacheBySql::new(
        diesel::update(messages::table.filter(messages::pk.eq(m.pk)))
            .set(messages::provider_message_id.eq(provider_id))
            .returning(MessageRow::as_returning())
    )
    .get_result(c))?)
}

/// Replaces a message's text (an edit, issue 22); search follows (FTS trigger / generated
/// `tsvector`).
pub fn set_text(c: &mut Db, m: &MessageRow, text: &str) -> ApiResult<MessageRow> {
    let t = now();
    diesel::update(messages::table.filter(messages::pk.eq(m.pk)))
        .set((messages::content.eq(text), messages::edited_at.eq(t), messages::updated_at.eq(t)))
        .execute(c)?;
    message_by_id(c, &m.id)
}

/// Deletes a message's content for everyone (issue 22): the row stays (its `seq` and place in
/// the thread), the text is dropped from storage and search.
pub fn mark_deleted(c: &mut Db, m: &MessageRow) -> ApiResult<MessageRow> {
    let t = now();
    diesel::update(messages::table.filter(messages::pk.eq(m.pk)))
        .set((messages::content.eq(None::<String>), messages::deleted_at.eq(t), messages::updated_at.eq(t)))
        .execute(c)?;
    message_by_id(c, &m.id)
}

/// A scheduled text goes as its fallback template (issue 22): the template's rendered text,
/// `PENDING`, unless its status moved meanwhile (compare-and-set on the rank, like
/// [`advance_status`]).
pub fn use_template(c: &mut Db, m: &MessageRow, tpl: &TemplateRow, params: &[String]) -> ApiResult<Option<MessageRow>> {
    let moved =
        diesel::update(messages::table.filter(messages::pk.eq(m.pk).and(messages::status_rank.eq(m.status_rank))))
            .set((
                messages::kind.eq("template"),
                messages::template_id.eq(tpl.id),
                messages::content.eq(render_template(&tpl.content, params)),
                messages::status.eq(Status::Pending.as_str()),
                messages::status_rank.eq(Status::Pending.rank()),
                messages::updated_at.eq(now()),
            ))
            .execute(c)?;
    if moved == 0 {
        return Ok(None);
    }
    Ok(Some(message_by_id(c, &m.id)?))
}

// ---- search ----

#[derive(diesel::QueryableByName)]
struct Unindexed {
    #[diesel(sql_type = diesel::sql_types::Bool)]
    pending: bool,
}

/// SQLite: whether messages past the full-text index's cursor wait to be indexed
/// ([`index_messages`]); always false on PostgreSQL, whose index is written with each row.
pub fn unindexed_messages(c: &mut Db) -> ApiResult<bool> {
    match c {
        Db::Sqlite(conn) => Ok(diesel::sql_query(
            "SELECT coalesce((SELECT max(pk) FROM messages), 0) > indexed_pk AS pending FROM messages_fts_cursor",
        )
        .get_result::<Unindexed>(conn)?
        .pending),
        Db::Pg(_) => Ok(false),
    }
}

#[derive(diesel::QueryableByName)]
struct IndexRange {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    lo: i64,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::BigInt>)]
    hi: Option<i64>,
}

/// SQLite: adds the messages of the next `limit` pks past the cursor to the FTS5 index, as
/// they are now, and moves the cursor past them, in the caller's transaction (migration
/// `2026-12-07-002102_fts_off_the_commit_path`: FTS5 writes an index segment per transaction,
/// so one write for many messages costs far less than one per message). Returns how many it
/// indexed. No-op on PostgreSQL.
pub fn index_messages(c: &mut Db, limit: i64) -> ApiResult<usize> {
    use diesel::sql_types::BigInt;
    let Db::Sqlite(conn) = c else { return Ok(0) };
    let range: IndexRange =
        diesel::sql_query("SELECT indexed_pk AS lo, (SELECT max(pk) FROM messages) AS hi FROM messages_fts_cursor")
            .get_result(conn)?;
    // The next `limit` pks (fewer rows where pks were skipped).
    let hi = range.hi.unwrap_or(0).min(range.lo + limit);
    if hi <= range.lo {
        return Ok(0);
    }
    let n = diesel::sql_query(
        "INSERT INTO messages_fts(rowid, content) SELECT pk, content FROM messages WHERE pk > ? AND pk <= ?",
    )
    .bind::<BigInt, _>(range.lo)
    .bind::<BigInt, _>(hi)
    .execute(conn)?;
    diesel::sql_query("UPDATE messages_fts_cursor SET indexed_pk = ?").bind::<BigInt, _>(hi).execute(conn)?;
    Ok(n)
}

#[derive(diesel::QueryableByName)]
struct SearchPk {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pk: i64,
}

#[derive(diesel::QueryableByName)]
struct SearchCount {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

/// Full-text search over a company's messages (CONTRACT §3 message-search): SQLite FTS5 over
/// `messages_fts`, PostgreSQL `tsvector` with `plainto_tsquery('simple', …)`. Every word of the
/// term must match. Returns message `pk`s newest first and the total number of matches.
pub fn search_messages(c: &mut Db, company_id: i64, term: &str, offset: i64, limit: i64) -> ApiResult<(Vec<i64>, i64)> {
    use diesel::sql_types::{BigInt, Text};
    match c {
        Db::Sqlite(conn) => {
            // Each word quoted: user input never reaches FTS5's query syntax.
            let query: String = term
                .split_whitespace()
                .map(|w| format!("\"{}\"", w.replace('"', "\"\"")))
                .collect::<Vec<_>>()
                .join(" ");
            if query.is_empty() {
                return Ok((Vec::new(), 0));
            }
            let from = "FROM messages_fts JOIN messages m ON m.pk = messages_fts.rowid \
                        WHERE messages_fts MATCH ? AND m.company_id = ?";
            let pks: Vec<SearchPk> =
                diesel::sql_query(format!("SELECT m.pk AS pk {from} ORDER BY m.pk DESC LIMIT ? OFFSET ?"))
                    .bind::<Text, _>(&query)
                    .bind::<BigInt, _>(company_id)
                    .bind::<BigInt, _>(limit)
                    .bind::<BigInt, _>(offset)
                    .load(conn)?;
            let n: SearchCount = diesel::sql_query(format!("SELECT count(*) AS n {from}"))
                .bind::<Text, _>(&query)
                .bind::<BigInt, _>(company_id)
                .get_result(conn)?;
            Ok((pks.into_iter().map(|p| p.pk).collect(), n.n))
        }
        Db::Pg(conn) => {
            let from = "FROM messages WHERE company_id = $2 AND content_tsv @@ plainto_tsquery('simple', $1)";
            let pks: Vec<SearchPk> = diesel::sql_query(format!("SELECT pk {from} ORDER BY pk DESC LIMIT $3 OFFSET $4"))
                .bind::<Text, _>(term)
                .bind::<BigInt, _>(company_id)
                .bind::<BigInt, _>(limit)
                .bind::<BigInt, _>(offset)
                .load(conn)?;
            let n: SearchCount = diesel::sql_query(format!("SELECT count(*) AS n {from}"))
                .bind::<Text, _>(term)
                .bind::<BigInt, _>(company_id)
                .get_result(conn)?;
            Ok((pks.into_iter().map(|p| p.pk).collect(), n.n))
        }
    }
}

// ---- templates ----

pub fn template(c: &mut Db, company_id: i64, id: i64) -> ApiResult<TemplateRow> {
    Ok(templates::table
        .filter(templates::company_id.eq(company_id))
        .find(id)
        .select(TemplateRow::as_select())
        .first(c)?)
}

pub fn templates(c: &mut Db, company_id: i64) -> ApiResult<Vec<TemplateRow>> {
    Ok(templates::table
        .filter(templates::company_id.eq(company_id))
        .order(templates::id)
        .select(TemplateRow::as_select())
        .load(c)?)
}

/// The stored columns of a template, for both its insert and its update.
#[derive(Insertable, AsChangeset)]
#[diesel(table_name = templates, treat_none_as_null = true)]
pub struct TemplateFields<'a> {
    pub name: &'a str,
    pub language: &'a str,
    pub category: &'static str,
    pub content: &'a str,
    pub param_count: i32,
    pub content_sid: Option<&'a str>,
    pub updated_at: chrono::NaiveDateTime,
}

/// Adds a template to the company; a second one with the same name and language is a unique
/// violation.
pub fn insert_template(c: &mut Db, company_id: i64, f: &TemplateFields<'_>) -> ApiResult<TemplateRow> {
    let id: i64 = diesel::insert_into(templates::table)
        .values((templates::company_id.eq(company_id), templates::created_at.eq(f.updated_at), f))
        .returning(templates::id)
        .get_result(c)?;
    template(c, company_id, id)
}

/// Adds a template unless the company has one of that name already (the demo data's seed).
pub fn insert_template_unless_named(c: &mut Db, company_id: i64, f: &TemplateFields<'_>) -> ApiResult<()> {
    let exists: i64 = templates::table
        .filter(templates::company_id.eq(company_id).and(templates::name.eq(f.name)))
        .count()
        .get_result(c)?;
    if exists == 0 {
        insert_template(c, company_id, f)?;
    }
    Ok(())
}

/// Replaces a template of the company (404 for another company's).
pub fn update_template(c: &mut Db, company_id: i64, id: i64, f: &TemplateFields<'_>) -> ApiResult<TemplateRow> {
    template(c, company_id, id)?;
    diesel::update(templates::table.find(id)).set(f).execute(c)?;
    template(c, company_id, id)
}

/// Deletes a template of the company (404 for another company's).
pub fn delete_template(c: &mut Db, company_id: i64, id: i64) -> ApiResult<()> {
    template(c, company_id, id)?;
    diesel::delete(templates::table.find(id)).execute(c)?;
    Ok(())
}

// ---- outbox ----

/// Queues a job in the caller's transaction (the outbox pattern, CONTRACT §6).
pub fn enqueue(c: &mut Db, kind: &str, ref_id: &str, company_id: i64, channel_id: Option<i64>) -> ApiResult<()> {
    crate::core::outbox::insert(
        c,
        &crate::core::outbox::NewJob { kind, ref_id, company_id, channel_id, ordering_key: None },
    )
}

/// Cancels a message's `send` job (or a scheduled send's [`SCHEDULED_SEND_JOB`]) unless a
/// worker holds it (an unexpired lease: the send is in flight). True when the job was
/// cancelled, or there was none left to run.
pub fn cancel_send(c: &mut Db, message_id: &str) -> ApiResult<bool> {
    crate::core::outbox::cancel_unleased(c, &["send", SCHEDULED_SEND_JOB], message_id, "deleted before it was sent")
}

/// Statuses that arrived before their message, taken (deleted) for applying.
pub fn take_pending_statuses(
    c: &mut Db,
    channel_id: i64,
    provider_id: &str,
) -> ApiResult<Vec<(String, Option<String>)>> {
    let rows: Vec<(String, Option<String>)> = pending_statuses::table
        .filter(pending_statuses::channel_id.eq(channel_id).and(pending_statuses::provider_message_id.eq(provider_id)))
        .select((pending_statuses::status, pending_statuses::error_code))
        .load(c)?;
    if !rows.is_empty() {
        diesel::delete(
            pending_statuses::table
                .filter(pending_statuses::channel_id.eq(channel_id))
                .filter(pending_statuses::provider_message_id.eq(provider_id)),
        )
        .execute(c)?;
    }
    Ok(rows)
}

pub fn keep_pending_status(
    c: &mut Db,
    channel_id: i64,
    provider_id: &str,
    status: Status,
    error_code: Option<&str>,
) -> ApiResult<()> {
    let exists: i64 = pending_statuses::table
        .filter(pending_statuses::channel_id.eq(channel_id))
        .filter(pending_statuses::provider_message_id.eq(provider_id))
        .filter(pending_statuses::status.eq(status.as_str()))
        .count()
        .get_result(c)?;
    if exists == 0 {
        diesel::insert_into(pending_statuses::table)
            .values((
                pending_statuses::channel_id.eq(channel_id),
                pending_statuses::provider_message_id.eq(provider_id),
                pending_statuses::status.eq(status.as_str()),
                pending_statuses::error_code.eq(error_code),
                pending_statuses::at.eq(now()),
            ))
            .execute(c)?;
    }
    Ok(())
}

// ---- mentions (issue 22) ----

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = mentions)]
pub struct MentionRow {
    pub id: i64,
    pub company_id: i64,
    pub user_id: i64,
    pub conversation_id: i64,
    pub message_id: String,
    pub by_id: i64,
    pub created_at: NaiveDateTime,
}

/// Records that `message` mentions each of `user_ids` (once per message and user); returns
/// `(mention id, user id)` pairs.
pub fn insert_mentions(c: &mut Db, message: &MessageRow, by_id: i64, user_ids: &[i64]) -> ApiResult<Vec<(i64, i64)>> {
    let t = now();
    let mut out = Vec::with_capacity(user_ids.len());
    for &user_id in user_ids {
        let id: i64 = diesel::insert_into(mentions::table)
            .values((
                mentions::company_id.eq(message.company_id),
                mentions::user_id.eq(user_id),
                mentions::conversation_id.eq(message.conversation_id),
                mentions::message_id.eq(&message.id),
                mentions::by_id.eq(by_id),
                mentions::created_at.eq(t),
            ))
            .returning(mentions::id)
            .get_result(c)?;
        out.push((id, user_id));
    }
    Ok(out)
}

/// A page of the mentions of `user_id`, newest first, and their total.
pub fn mentions_page(
    c: &mut Db,
    company_id: i64,
    user_id: i64,
    offset: i64,
    limit: i64,
) -> ApiResult<(Vec<MentionRow>, i64)> {
    let mine = || mentions::table.filter(mentions::company_id.eq(company_id).and(mentions::user_id.eq(user_id)));
    let total: i64 = mine().count().get_result(c)?;
    let rows = mine().order(mentions::id.desc()).offset(offset).limit(limit).select(MentionRow::as_select()).load(c)?;
    Ok((rows, total))
}

pub fn messages_by_ids(c: &mut Db, company_id: i64, ids: &[String]) -> ApiResult<Vec<MessageRow>> {
    Ok(messages::table
        .filter(messages::company_id.eq(company_id).and(messages::id.eq_any(ids)))
        .select(MessageRow::as_select())
        .load(c)?)
}
