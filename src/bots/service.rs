//! Bot operations; every one is scoped to the admin's company.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{
    core::{
        auth::session,
        db::Db,
        error::{ApiError, ApiResult},
        state::AppState,
        types::{Role, rfc3339},
    },
    hooks::{self, model::EVENT_TYPES},
    messaging,
    users::{self, model::UserRow},
};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BotBody {
    /// 1 to 100 characters; shown as the bot's name on its messages.
    pub name: String,
    /// Where the bot gets the events of its conversations, in the outgoing-webhook format.
    pub webhook_url: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BotView {
    /// The bot's user id: its messages' `senderId`, the `assigneeId` of its conversations.
    pub bot_id: i64,
    pub name: String,
    pub webhook_url: Option<String>,
    /// The webhook subscription of `webhookUrl` (see `/webhook-subscriptions/{id}/deliveries`).
    pub subscription_id: Option<i64>,
    pub created_at: String,
}

/// `POST /bots`: the bot, its API token and (with a `webhookUrl`) the webhook signing secret,
/// each shown only here.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BotCreated {
    #[serde(flatten)]
    pub bot: BotView,
    /// `Authorization: Bearer <token>`.
    pub token: String,
    pub webhook_secret: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BotToken {
    pub bot_id: i64,
    pub token: String,
}

fn view(c: &mut Db, user: &UserRow) -> ApiResult<BotView> {
    let sub = hooks::store::of_bot(c, user.company_id, user.id)?;
    Ok(BotView {
        bot_id: user.id,
        name: user.first_name.clone(),
        webhook_url: sub.as_ref().map(|s| s.url.clone()),
        subscription_id: sub.map(|s| s.id),
        created_at: rfc3339(user.created_at),
    })
}

/// An active bot of the company, else 404.
fn bot(c: &mut Db, company_id: i64, id: i64) -> ApiResult<UserRow> {
    let user = users::store::get(c, company_id, id)?;
    if user.role() != Role::Bot || !user.is_active() {
        return Err(ApiError::NotFound);
    }
    Ok(user)
}

pub async fn create(st: &AppState, company_id: i64, b: BotBody) -> ApiResult<BotCreated> {
    let name = b.name.trim().to_owned();
    if name.is_empty() || name.chars().count() > 100 || name.contains('\0') {
        return Err(ApiError::field("name", "must be 1 to 100 characters"));
    }
    let url = match &b.webhook_url {
        Some(u) => Some(hooks::service::check_url(st, "webhookUrl", u).await?),
        None => None,
    };
    let secret = url.as_ref().map(|_| hooks::service::first_secret(st)).transpose()?;
    st.db
        .write(move |c| {
            let user = users::store::create_person(c, company_id, Role::Bot, &name, "", None, None, None, false)?;
            let token = session::create_bot(c, user.id, company_id)?;
            if let (Some(url), Some((_, sealed))) = (&url, &secret) {
                let events: Vec<String> = EVENT_TYPES.iter().map(|e| (*e).to_owned()).collect();
                hooks::store::insert(
                    c,
                    &hooks::store::NewSubscription {
                        company_id,
                        url,
                        events: &events,
                        active: true,
                        secrets: sealed,
                        bot_id: Some(user.id),
                    },
                )?;
            }
            Ok(BotCreated { bot: view(c, &user)?, token, webhook_secret: secret.map(|(s, _)| s) })
        })
        .await
}

pub async fn list(st: &AppState, company_id: i64) -> ApiResult<Vec<BotView>> {
    st.db
        .run(move |c| {
            let bots = users::store::with_role(c, company_id, Role::Bot)?;
            bots.iter().filter(|u| u.is_active()).map(|u| view(c, u)).collect()
        })
        .await
}

pub async fn get(st: &AppState, company_id: i64, id: i64) -> ApiResult<BotView> {
    st.db
        .run(move |c| {
            let user = bot(c, company_id, id)?;
            view(c, &user)
        })
        .await
}

/// A new token; the old one stops working at once on this node and within 2 seconds on the
/// others (the session cache).
pub async fn rotate_token(st: &AppState, company_id: i64, id: i64) -> ApiResult<BotToken> {
    let (token, revoked) = st
        .db
        .write(move |c| {
            bot(c, company_id, id)?;
            let revoked = session::revoke_all(c, id, None, "bot_token_rotated")?;
            Ok((session::create_bot(c, id, company_id)?, revoked))
        })
        .await?;
    for sid in revoked {
        st.sessions.forget(&sid);
    }
    Ok(BotToken { bot_id: id, token })
}

/// Deletes the bot: its token stops working, its webhook subscription and its place on
/// channels go, and its conversations are unassigned (`conversation.updated` each), back in
/// the humans' Unassigned list.
pub async fn delete(st: &AppState, company_id: i64, id: i64) -> ApiResult<()> {
    let (revoked, events) = st
        .db
        .write(move |c| {
            bot(c, company_id, id)?;
            users::store::set_status(c, id, "deleted")?;
            let revoked = session::revoke_all(c, id, None, "bot_deleted")?;
            if let Some(sub) = hooks::store::of_bot(c, company_id, id)? {
                hooks::store::delete(c, company_id, sub.id)?;
            }
            messaging::store::clear_channel_bot(c, company_id, id)?;
            let events = messaging::service::unassign_all_tx(c, company_id, id)?;
            Ok((revoked, events))
        })
        .await?;
    messaging::service::publish_events(st, events);
    for sid in revoked {
        st.sessions.forget(&sid);
    }
    Ok(())
}
