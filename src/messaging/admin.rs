//! Admin routes of the messaging family (CONTRACT §3): templates, channels and agents. Agents
//! may list templates; managing them, channels and agents needs an admin of the company.

use actix_web::{HttpResponse, delete, get, patch, post, put, web};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{
    channel_cache::WebhookChannels,
    model::{ChannelRow, TemplateRow, placeholder_count},
    store,
};
use crate::core::{
    auth::guard::{Admin, Agent},
    config::Config,
    crypto::{random_token, token_hash},
    error::{ApiError, ApiResult, ErrorBody},
    extract::Json,
    state::AppState,
    types::{Email, Phone, Role, now, rfc3339},
};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(list_templates)
        .service(create_template)
        .service(update_template)
        .service(delete_template)
        .service(list_channels)
        .service(get_channel)
        .service(create_channel)
        .service(update_channel)
        .service(delete_channel)
        .service(put_channel_bot)
        .service(put_channel_team)
        .service(list_agents)
        .service(get_agent)
        .service(invite_agent)
        .service(patch_agent);
}

#[derive(utoipa::OpenApi)]
#[openapi(
    paths(
        list_templates,
        create_template,
        update_template,
        delete_template,
        list_channels,
        get_channel,
        create_channel,
        update_channel,
        delete_channel,
        put_channel_bot,
        put_channel_team,
        list_agents,
        get_agent,
        invite_agent,
        patch_agent
    ),
    components(schemas(
        TemplateView,
        TemplateBody,
        Category,
        ChannelView,
        ChannelBody,
        ChannelBotBody,
        ChannelTeamBody,
        ChannelProvider,
        AgentView,
        InviteBody,
        InviteView,
        AgentPatchBody,
        StaffRole,
        AgentStatus
    ))
)]
pub struct Api;

// ---- templates ----

#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum Category {
    Utility,
    Marketing,
    Authentication,
}

impl<'de> Deserialize<'de> for Category {
    /// Case-insensitive (CONTRACT §3).
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match String::deserialize(d)?.to_ascii_uppercase().as_str() {
            "UTILITY" => Ok(Self::Utility),
            "MARKETING" => Ok(Self::Marketing),
            "AUTHENTICATION" => Ok(Self::Authentication),
            _ => Err(serde::de::Error::custom("must be UTILITY, MARKETING or AUTHENTICATION")),
        }
    }
}

impl Category {
    fn as_str(self) -> &'static str {
        match self {
            Self::Utility => "UTILITY",
            Self::Marketing => "MARKETING",
            Self::Authentication => "AUTHENTICATION",
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TemplateView {
    pub template_id: i64,
    pub content: String,
    pub name: String,
    pub language: String,
    pub category: String,
    /// How many `{{n}}` params a send must supply.
    pub param_count: i32,
    /// The Twilio Content template (`HX` + 32 hex digits) sent on Twilio channels; absent when
    /// none is set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_sid: Option<String>,
}

impl From<TemplateRow> for TemplateView {
    fn from(t: TemplateRow) -> Self {
        Self {
            template_id: t.id,
            content: t.content,
            name: t.name,
            language: t.language,
            category: t.category,
            param_count: t.param_count,
            content_sid: t.content_sid,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TemplateBody {
    pub name: String,
    pub content: String,
    /// e.g. `en_US`
    pub language: String,
    pub category: Category,
    /// Twilio channels send this template as a Twilio Content template: `ContentSid` plus
    /// `ContentVariables` (`{"1": first param, …}`) instead of the rendered text, which Twilio
    /// refuses for business-initiated WhatsApp messages. `HX` + 32 hex digits; omit or `null`
    /// for none (WhatsApp Cloud API channels send by `name` and `language`).
    #[serde(default)]
    pub content_sid: Option<String>,
}

impl TemplateBody {
    /// The checked body as the row's columns.
    fn fields(&self) -> ApiResult<store::TemplateFields<'_>> {
        let param_count = self.check()? as i32;
        if let Some(sid) = &self.content_sid {
            let hex = sid.strip_prefix("HX").filter(|h| h.len() == 32 && h.chars().all(|c| c.is_ascii_hexdigit()));
            if hex.is_none() {
                return Err(ApiError::field("contentSid", "must be a Twilio Content SID: HX and 32 hex digits"));
            }
        }
        Ok(store::TemplateFields {
            name: self.name.trim(),
            language: &self.language,
            category: self.category.as_str(),
            content: &self.content,
            param_count,
            content_sid: self.content_sid.as_deref(),
            updated_at: now(),
        })
    }

    fn check(&self) -> ApiResult<usize> {
        if self.name.trim().is_empty() || self.name.len() > 512 {
            return Err(ApiError::field("name", "must be 1 to 512 characters"));
        }
        if self.content.trim().is_empty() || self.content.chars().count() > 1024 {
            return Err(ApiError::field("content", "must be 1 to 1024 characters (WhatsApp's template body limit)"));
        }
        let lang_ok = !self.language.is_empty()
            && self.language.len() <= 16
            && self.language.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !lang_ok {
            return Err(ApiError::field("language", "must be a language code like en_US"));
        }
        Ok(placeholder_count(&self.content))
    }
}

/// The company's message templates (agents may read them to send).
#[utoipa::path(tag = "templates", security(("bearer" = [])), responses((status = 200, body = [TemplateView])))]
#[get("/template")]
async fn list_templates(agent: Agent, st: web::Data<AppState>) -> ApiResult<HttpResponse> {
    let company_id = agent.company_id;
    let rows = st.db.run(move |c| store::templates(c, company_id)).await?;
    Ok(HttpResponse::Ok().json(rows.into_iter().map(TemplateView::from).collect::<Vec<_>>()))
}

#[utoipa::path(tag = "templates", request_body = TemplateBody, security(("bearer" = [])),
    responses((status = 201, body = TemplateView), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
#[post("/template")]
async fn create_template(
    admin: Admin,
    st: web::Data<AppState>,
    Json(b): Json<TemplateBody>,
) -> ApiResult<HttpResponse> {
    b.fields()?;
    let company_id = admin.company_id;
    let row = st
        .db
        .write(move |c| store::insert_template(c, company_id, &b.fields()?))
        .await
        .map_err(|e| e.on_unique("template_exists", "a template with this name and language exists"))?;
    Ok(HttpResponse::Created().json(TemplateView::from(row)))
}

#[utoipa::path(tag = "templates", request_body = TemplateBody, security(("bearer" = [])),
    responses((status = 200, body = TemplateView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
#[put("/template/{id}")]
async fn update_template(
    admin: Admin,
    st: web::Data<AppState>,
    id: web::Path<i64>,
    Json(b): Json<TemplateBody>,
) -> ApiResult<HttpResponse> {
    b.fields()?;
    let (company_id, id) = (admin.company_id, id.into_inner());
    let row = st
        .db
        .write(move |c| store::update_template(c, company_id, id, &b.fields()?))
        .await
        .map_err(|e| e.on_unique("template_exists", "a template with this name and language exists"))?;
    Ok(HttpResponse::Ok().json(TemplateView::from(row)))
}

#[utoipa::path(tag = "templates", security(("bearer" = [])),
    responses((status = 204, description = "deleted"), (status = 404, body = ErrorBody)))]
#[delete("/template/{id}")]
async fn delete_template(admin: Admin, st: web::Data<AppState>, id: web::Path<i64>) -> ApiResult<HttpResponse> {
    let (company_id, id) = (admin.company_id, id.into_inner());
    st.db.write(move |c| store::delete_template(c, company_id, id)).await?;
    Ok(HttpResponse::NoContent().finish())
}

// ---- channels ----

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ChannelProvider {
    Whatsapp,
    Twilio,
    Sandbox,
}

impl ChannelProvider {
    fn as_str(self) -> &'static str {
        match self {
            Self::Whatsapp => "whatsapp",
            Self::Twilio => "twilio",
            Self::Sandbox => "sandbox",
        }
    }

    /// The write-only secrets each provider needs (CONTRACT §3 channels).
    fn secret_names(self) -> &'static [&'static str] {
        match self {
            Self::Whatsapp => &["accessToken", "appSecret", "verifyToken"],
            Self::Twilio => &["accountSid", "authToken"],
            Self::Sandbox => &["webhookSecret"],
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChannelView {
    pub channel_id: i64,
    pub provider: String,
    pub phone_number: String,
    pub phone_number_id: Option<String>,
    pub display_name: String,
    /// The provider API this channel talks to: the operator's setting
    /// (`CONFAB_WHATSAPP_API_URL`, `CONFAB_TWILIO_API_URL`), the same for every channel of a
    /// provider; none for the sandbox.
    pub api_base_url: Option<String>,
    pub is_default: bool,
    /// Which secrets are set (their values are never returned).
    pub secrets_set: Vec<String>,
    /// The agent bot every new conversation of the channel is assigned to first
    /// (`PUT /channel/{id}/bot`).
    pub bot_id: Option<i64>,
    /// The team every new conversation of the channel belongs to (`PUT /channel/{id}/team`).
    pub team_id: Option<i64>,
}

impl ChannelView {
    fn new(ch: ChannelRow, st: &AppState) -> Self {
        let secrets: serde_json::Map<String, serde_json::Value> =
            st.data_key.decrypt(&ch.secrets).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
        Self {
            api_base_url: operator_api_url(&st.config, &ch.provider).map(str::to_owned),
            channel_id: ch.id,
            provider: ch.provider,
            phone_number: ch.phone_e164,
            phone_number_id: ch.phone_number_id,
            display_name: ch.display_name,
            is_default: ch.is_default,
            secrets_set: secrets.keys().cloned().collect(),
            bot_id: ch.bot_id,
            team_id: ch.team_id,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ChannelBotBody {
    /// An agent bot of the company (`POST /bots`), or `null` for none.
    pub bot_id: Option<i64>,
}

/// Sets the agent bot that gets every new conversation of the channel first (its `assigneeId`
/// is the bot; the bot hands off with `PATCH /conversation/{id}`). Conversations that exist
/// keep their assignee.
#[utoipa::path(tag = "channels", request_body = ChannelBotBody, security(("bearer" = [])),
    responses((status = 200, body = ChannelView), (status = 400, body = ErrorBody, description = "not a bot of the company"),
        (status = 404, body = ErrorBody)))]
#[put("/channel/{id}/bot")]
async fn put_channel_bot(
    admin: Admin,
    st: web::Data<AppState>,
    id: web::Path<i64>,
    Json(b): Json<ChannelBotBody>,
) -> ApiResult<HttpResponse> {
    let (company_id, id) = (admin.company_id, id.into_inner());
    let row = st.db.write(move |c| store::set_channel_bot(c, company_id, id, b.bot_id)).await?;
    Ok(HttpResponse::Ok().json(ChannelView::new(row, &st)))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChannelTeamBody {
    /// A team of the company (`GET /team`), or `null` for none.
    pub team_id: Option<i64>,
}

/// Sets the team every new conversation of the channel belongs to (issue 22); with the team's
/// `autoAssign` it goes to one of the team's online agents unless the channel's bot takes it.
/// Conversations that exist keep their team.
#[utoipa::path(tag = "channels", request_body = ChannelTeamBody, security(("bearer" = [])),
    responses((status = 200, body = ChannelView), (status = 400, body = ErrorBody, description = "not a team of the company"),
        (status = 404, body = ErrorBody)))]
#[put("/channel/{id}/team")]
async fn put_channel_team(
    admin: Admin,
    st: web::Data<AppState>,
    id: web::Path<i64>,
    Json(b): Json<ChannelTeamBody>,
) -> ApiResult<HttpResponse> {
    let (company_id, id) = (admin.company_id, id.into_inner());
    let row = st
        .db
        .write(move |c| {
            super::teams::set_channel_team(c, company_id, id, b.team_id)?;
            store::channel(c, company_id, id)
        })
        .await?;
    Ok(HttpResponse::Ok().json(ChannelView::new(row, &st)))
}

/// The operator's API URL for a provider's channels.
fn operator_api_url<'c>(config: &'c Config, provider: &str) -> Option<&'c str> {
    match provider {
        "whatsapp" => Some(&config.whatsapp_api_url),
        "twilio" => Some(&config.twilio_api_url),
        _ => None,
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChannelBody {
    pub provider: ChannelProvider,
    #[schema(value_type = String)]
    pub phone_number: Phone,
    pub phone_number_id: Option<String>,
    pub display_name: String,
    /// Read-only, accepted for compatibility: the provider API is the operator's setting
    /// (`CONFAB_WHATSAPP_API_URL`, `CONFAB_TWILIO_API_URL`). A value other than that one is
    /// refused (400), so a tenant can never point the server at another host.
    pub api_base_url: Option<String>,
    pub is_default: Option<bool>,
    pub access_token: Option<String>,
    pub app_secret: Option<String>,
    pub verify_token: Option<String>,
    pub account_sid: Option<String>,
    pub auth_token: Option<String>,
    pub webhook_secret: Option<String>,
}

impl ChannelBody {
    /// The settings to write, with the sealed secrets and whether the channel is the default.
    fn fields<'a>(&'a self, sealed: &'a str, is_default: bool) -> store::ChannelFields<'a> {
        store::ChannelFields {
            provider: self.provider.as_str(),
            phone_e164: self.phone_number.as_str(),
            phone_number_id: self.phone_number_id.as_deref(),
            display_name: self.display_name.trim(),
            secrets: sealed,
            is_default,
        }
    }

    fn given_secrets(&self) -> serde_json::Map<String, serde_json::Value> {
        let all = [
            ("accessToken", &self.access_token),
            ("appSecret", &self.app_secret),
            ("verifyToken", &self.verify_token),
            ("accountSid", &self.account_sid),
            ("authToken", &self.auth_token),
            ("webhookSecret", &self.webhook_secret),
        ];
        all.into_iter()
            .filter(|(name, _)| self.provider.secret_names().contains(name))
            .filter_map(|(name, v)| v.clone().filter(|v| !v.is_empty()).map(|v| (name.to_owned(), v.into())))
            .collect()
    }

    fn check(&self, config: &Config) -> ApiResult<()> {
        if self.display_name.trim().is_empty() || self.display_name.len() > 128 {
            return Err(ApiError::field("displayName", "must be 1 to 128 characters"));
        }
        if self.provider == ChannelProvider::Whatsapp && self.phone_number_id.as_deref().is_none_or(str::is_empty) {
            return Err(ApiError::field("phoneNumberId", "is required for WhatsApp"));
        }
        if let Some(url) = self.api_base_url.as_deref().filter(|u| !u.is_empty())
            && operator_api_url(config, self.provider.as_str())
                .is_none_or(|ours| ours.trim_end_matches('/') != url.trim_end_matches('/'))
        {
            return Err(ApiError::field(
                "apiBaseUrl",
                "is set by the server's operator (CONFAB_WHATSAPP_API_URL, CONFAB_TWILIO_API_URL) and cannot be changed",
            ));
        }
        Ok(())
    }
}

#[utoipa::path(tag = "channels", security(("bearer" = [])), responses((status = 200, body = [ChannelView])))]
#[get("/channel")]
async fn list_channels(admin: Admin, st: web::Data<AppState>) -> ApiResult<HttpResponse> {
    let company_id = admin.company_id;
    let rows = st.db.run(move |c| store::channels(c, company_id)).await?;
    Ok(HttpResponse::Ok().json(rows.into_iter().map(|r| ChannelView::new(r, &st)).collect::<Vec<_>>()))
}

#[utoipa::path(tag = "channels", security(("bearer" = [])), responses((status = 200, body = ChannelView), (status = 404, body = ErrorBody)))]
#[get("/channel/{id}")]
async fn get_channel(admin: Admin, st: web::Data<AppState>, id: web::Path<i64>) -> ApiResult<HttpResponse> {
    let (company_id, id) = (admin.company_id, id.into_inner());
    let row = st.db.run(move |c| store::channel(c, company_id, id)).await?;
    Ok(HttpResponse::Ok().json(ChannelView::new(row, &st)))
}

/// Creates a channel; its secrets are encrypted at rest with the data key and never returned.
#[utoipa::path(tag = "channels", request_body = ChannelBody, security(("bearer" = [])),
    responses((status = 201, body = ChannelView), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
#[post("/channel")]
async fn create_channel(
    admin: Admin,
    st: web::Data<AppState>,
    cache: web::Data<WebhookChannels>,
    Json(b): Json<ChannelBody>,
) -> ApiResult<HttpResponse> {
    b.check(&st.config)?;
    let secrets = b.given_secrets();
    if let Some(missing) = b.provider.secret_names().iter().find(|n| !secrets.contains_key(**n)) {
        return Err(ApiError::field(missing, "is required for this provider"));
    }
    let sealed = st.data_key.encrypt(serde_json::Value::Object(secrets).to_string().as_bytes());
    let company_id = admin.company_id;
    let row = st
        .db
        .write(move |c| {
            let is_default = b.is_default.unwrap_or(false) || store::channels(c, company_id)?.is_empty();
            if is_default {
                store::clear_default_channel(c, company_id)?;
            }
            let id = store::insert_channel(c, company_id, &b.fields(&sealed, is_default))?;
            store::channel(c, company_id, id)
        })
        .await
        .map_err(|e| e.on_unique("channel_exists", "a channel with this provider and phoneNumberId exists"))?;
    cache.invalidate();
    Ok(HttpResponse::Created().json(ChannelView::new(row, &st)))
}

/// Replaces a channel's settings; secrets not given keep their stored values.
#[utoipa::path(tag = "channels", request_body = ChannelBody, security(("bearer" = [])),
    responses((status = 200, body = ChannelView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
#[put("/channel/{id}")]
async fn update_channel(
    admin: Admin,
    st: web::Data<AppState>,
    cache: web::Data<WebhookChannels>,
    id: web::Path<i64>,
    Json(b): Json<ChannelBody>,
) -> ApiResult<HttpResponse> {
    b.check(&st.config)?;
    let (company_id, id) = (admin.company_id, id.into_inner());
    let state = st.clone();
    let row = st
        .db
        .write(move |c| {
            let current = store::channel(c, company_id, id)?;
            let mut secrets: serde_json::Map<String, serde_json::Value> = if current.provider == b.provider.as_str() {
                state
                    .data_key
                    .decrypt(&current.secrets)
                    .ok()
                    .and_then(|v| serde_json::from_slice(&v).ok())
                    .unwrap_or_default()
            } else {
                Default::default()
            };
            secrets.extend(b.given_secrets());
            if let Some(missing) = b.provider.secret_names().iter().find(|n| !secrets.contains_key(**n)) {
                return Err(ApiError::field(missing, "is required for this provider"));
            }
            if b.is_default == Some(true) {
                store::clear_default_channel(c, company_id)?;
            }
            let sealed = state.data_key.encrypt(serde_json::Value::Object(secrets).to_string().as_bytes());
            store::update_channel(c, id, &b.fields(&sealed, b.is_default.unwrap_or(current.is_default)))?;
            store::channel(c, company_id, id)
        })
        .await
        .map_err(|e| e.on_unique("channel_exists", "a channel with this provider and phoneNumberId exists"))?;
    cache.invalidate();
    Ok(HttpResponse::Ok().json(ChannelView::new(row, &st)))
}

/// Retires a channel (soft delete: its conversations and messages stay readable).
#[utoipa::path(tag = "channels", security(("bearer" = [])),
    responses((status = 204, description = "deleted"), (status = 404, body = ErrorBody)))]
#[delete("/channel/{id}")]
async fn delete_channel(
    admin: Admin,
    st: web::Data<AppState>,
    cache: web::Data<WebhookChannels>,
    id: web::Path<i64>,
) -> ApiResult<HttpResponse> {
    let (company_id, id) = (admin.company_id, id.into_inner());
    st.db
        .write(move |c| {
            store::channel(c, company_id, id)?;
            store::retire_channel(c, id)
        })
        .await?;
    cache.invalidate();
    Ok(HttpResponse::NoContent().finish())
}

// ---- agents ----

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum StaffRole {
    Admin,
    Agent,
}

impl From<StaffRole> for Role {
    fn from(r: StaffRole) -> Role {
        match r {
            StaffRole::Admin => Role::Admin,
            StaffRole::Agent => Role::Agent,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AgentStatus {
    Active,
    Deactivated,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentView {
    pub user_id: i64,
    pub first_name: String,
    pub last_name: String,
    pub email: Option<String>,
    pub role: String,
    pub status: String,
    pub created_at: String,
}

fn agent_view(c: &mut crate::core::db::Db, u: crate::users::model::UserRow) -> ApiResult<AgentView> {
    let email = crate::users::store::primary_email(c, u.id)?;
    Ok(AgentView {
        user_id: u.id,
        first_name: u.first_name,
        last_name: u.last_name,
        email,
        role: u.role,
        status: u.status,
        created_at: rfc3339(u.created_at),
    })
}

fn staff(c: &mut crate::core::db::Db, company_id: i64, id: i64) -> ApiResult<crate::users::model::UserRow> {
    let u = crate::users::store::get(c, company_id, id)?;
    if !u.role().is_staff() {
        return Err(ApiError::NotFound);
    }
    Ok(u)
}

#[utoipa::path(tag = "agents", security(("bearer" = [])), responses((status = 200, body = [AgentView])))]
#[get("/agent")]
async fn list_agents(admin: Admin, st: web::Data<AppState>) -> ApiResult<HttpResponse> {
    let company_id = admin.company_id;
    let views = st
        .db
        .run(move |c| {
            let rows = crate::users::store::list_staff(c, company_id)?;
            rows.into_iter().map(|u| agent_view(c, u)).collect::<ApiResult<Vec<_>>>()
        })
        .await?;
    Ok(HttpResponse::Ok().json(views))
}

#[utoipa::path(tag = "agents", security(("bearer" = [])), responses((status = 200, body = AgentView), (status = 404, body = ErrorBody)))]
#[get("/agent/{id}")]
async fn get_agent(admin: Admin, st: web::Data<AppState>, id: web::Path<i64>) -> ApiResult<HttpResponse> {
    let (company_id, id) = (admin.company_id, id.into_inner());
    let view = st
        .db
        .run(move |c| {
            let u = staff(c, company_id, id)?;
            agent_view(c, u)
        })
        .await?;
    Ok(HttpResponse::Ok().json(view))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct InviteBody {
    #[schema(value_type = String)]
    pub email: Email,
    pub role: StaffRole,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct InviteView {
    /// Single use; `POST /auth/signup` takes it as `inviteToken`.
    pub invite_token: String,
    pub expires: String,
}

/// Invites a teammate: 201 with a single-use token valid 7 days, stored hashed.
#[utoipa::path(tag = "agents", request_body = InviteBody, security(("bearer" = [])),
    responses((status = 201, body = InviteView), (status = 409, body = ErrorBody)))]
#[post("/agent/invite")]
async fn invite_agent(admin: Admin, st: web::Data<AppState>, Json(b): Json<InviteBody>) -> ApiResult<HttpResponse> {
    let token = random_token();
    let hash = token_hash(&token);
    let expires = now() + chrono::Duration::days(7);
    let (company_id, inviter) = (admin.company_id, admin.user_id);
    let (email, role) = (b.email.as_str().to_owned(), Role::from(b.role).as_str());
    st.db
        .write(move |c| {
            if crate::users::store::email_in_use_by_staff(c, &b.email)? {
                return Err(ApiError::conflict("email_taken", "an account with this e-mail already exists"));
            }
            crate::users::store::insert_invite(c, &hash, company_id, Role::from(b.role), &b.email, inviter, expires)?;
            Ok(())
        })
        .await?;
    // CONTRACT §3: the invitation is also mailed (SMTP, or an .eml file in the outbox).
    let link = format!("{}?invite={token}", st.config.console_url());
    let body = format!(
        "You have been invited to confab as {role}.\n\nSign up with this invitation (valid until {}):\n{link}\n\nInvitation token: {token}\n",
        rfc3339(expires)
    );
    if let Err(e) = st.mail.send(&email, "Your confab invitation", &body).await {
        tracing::warn!(error = %e, "mailing an invitation failed; the token was returned to the admin");
    }
    Ok(HttpResponse::Created().json(InviteView { invite_token: token, expires: rfc3339(expires) }))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct AgentPatchBody {
    pub role: Option<StaffRole>,
    pub status: Option<AgentStatus>,
}

/// Changes an agent's role or deactivates them; deactivation revokes every session at once
/// (their open WebSockets close with 4001).
#[utoipa::path(tag = "agents", request_body = AgentPatchBody, security(("bearer" = [])),
    responses((status = 200, body = AgentView), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
#[patch("/agent/{id}")]
async fn patch_agent(
    admin: Admin,
    st: web::Data<AppState>,
    id: web::Path<i64>,
    Json(b): Json<AgentPatchBody>,
) -> ApiResult<HttpResponse> {
    let (company_id, id, me) = (admin.company_id, id.into_inner(), admin.user_id);
    if id == me && (b.status == Some(AgentStatus::Deactivated) || b.role == Some(StaffRole::Agent)) {
        return Err(ApiError::unprocessable("self_demotion", "admins cannot deactivate or demote themselves"));
    }
    let (view, revoked) = st
        .db
        .write(move |c| {
            staff(c, company_id, id)?;
            let mut revoked = Vec::new();
            if let Some(role) = b.role {
                crate::users::store::set_role(c, id, Role::from(role))?;
            }
            if let Some(status) = b.status {
                let value = match status {
                    AgentStatus::Active => "active",
                    AgentStatus::Deactivated => "deactivated",
                };
                crate::users::store::set_status(c, id, value)?;
                if status == AgentStatus::Deactivated {
                    revoked = crate::core::auth::session::revoke_all(c, id, None, "deactivated")?;
                }
            }
            let u = staff(c, company_id, id)?;
            Ok((agent_view(c, u)?, revoked))
        })
        .await?;
    for sid in &revoked {
        st.sessions.forget(sid);
    }
    st.broker.revoked(revoked);
    Ok(HttpResponse::Ok().json(view))
}
