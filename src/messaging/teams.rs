//! Teams and auto-assignment (issue 22 item 6). A team is a named group of a company's agents
//! (`GET/POST/PUT/DELETE /team[/{id}]`: agents read, admins write). A conversation belongs to
//! at most one team: the team of its channel when it opens (`PUT /channel/{id}/team`), or the
//! one an agent sets (`PATCH /conversation/{id}` `teamId`).
//!
//! With `autoAssign`, a conversation of the team that opens or reopens without an assignee
//! goes to one of the team's online agents ([`crate::core::realtime::presence`]): the one
//! with the fewest open conversations, below the team's `maxOpenPerAgent`, ties going to
//! whoever was given one longest ago (round-robin). The assignment is an outbox job
//! ([`AUTO_ASSIGN_JOB`]) queued in the transaction that opens or reopens the conversation, so
//! it happens after a crash too; the job takes the team's lock first (PostgreSQL advisory
//! lock; SQLite has one writer), so two assignments on two nodes never both see an agent
//! below the cap, and assigns only if the conversation is still open and unassigned
//! (`conversation.updated` with the next `seq`). When no member is online and below the cap
//! it stays unassigned in the team's queue.

use std::collections::{HashMap, HashSet};

use actix_web::{HttpResponse, delete, get, post, put, web};
use chrono::NaiveDateTime;
use diesel::prelude::*;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{model::ConversationRow, service};
use crate::core::{
    auth::guard::{Admin, Agent},
    db::{
        Db, dialect,
        schema::{team_members, teams},
    },
    error::{ApiError, ApiResult, ErrorBody},
    extract::Json,
    outbox::{self, Job, NewJob},
    realtime::{event::Event, presence},
    state::AppState,
    types::now,
};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(list).service(get_team).service(create).service(update).service(remove);
}

#[derive(utoipa::OpenApi)]
#[openapi(paths(list, get_team, create, update, remove), components(schemas(TeamView, TeamBody)))]
pub struct Api;

/// The outbox job that auto-assigns a conversation of a team ([`auto_assign`]).
pub const AUTO_ASSIGN_JOB: &str = "auto_assign";

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = teams)]
pub struct TeamRow {
    pub id: i64,
    pub company_id: i64,
    pub name: String,
    pub auto_assign: bool,
    pub max_open_per_agent: Option<i32>,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TeamView {
    pub team_id: i64,
    pub name: String,
    /// The team's agents and admins, by id.
    pub agent_ids: Vec<i64>,
    /// New and reopened conversations of the team go to its online agents by themselves.
    pub auto_assign: bool,
    /// Auto-assignment skips an agent with this many open conversations; `null`: no cap.
    pub max_open_per_agent: Option<i32>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TeamBody {
    /// 1 to 100 characters, unique in the company (409 `team_exists`).
    pub name: String,
    /// Active agents or admins of the company (at most 500).
    #[serde(default)]
    pub agent_ids: Vec<i64>,
    #[serde(default)]
    pub auto_assign: bool,
    /// 1 to 10,000, or `null` for no cap.
    #[serde(default)]
    pub max_open_per_agent: Option<i32>,
}

impl TeamBody {
    /// The trimmed name and the de-duplicated agent ids.
    fn check(&self) -> ApiResult<(String, Vec<i64>)> {
        let name = self.name.trim().to_owned();
        if name.is_empty() || name.chars().count() > 100 || name.contains('\0') {
            return Err(ApiError::field("name", "must be 1 to 100 characters"));
        }
        if self.max_open_per_agent.is_some_and(|n| !(1..=10_000).contains(&n)) {
            return Err(ApiError::field("maxOpenPerAgent", "must be 1 to 10000, or null"));
        }
        let mut ids = self.agent_ids.clone();
        ids.sort_unstable();
        ids.dedup();
        if ids.len() > 500 {
            return Err(ApiError::field("agentIds", "at most 500 agents"));
        }
        Ok((name, ids))
    }
}

// ---- store ----

pub fn get_one(c: &mut Db, company_id: i64, id: i64) -> ApiResult<TeamRow> {
    Ok(teams::table.filter(teams::company_id.eq(company_id)).find(id).select(TeamRow::as_select()).first(c)?)
}

/// A team of the company named in a body (`teamId`): 400 `validation_failed` when there is none.
pub fn named(c: &mut Db, company_id: i64, id: i64) -> ApiResult<TeamRow> {
    get_one(c, company_id, id).map_err(|_| ApiError::field("teamId", "no such team in this company"))
}

fn members(c: &mut Db, company_id: i64, team_ids: &[i64]) -> ApiResult<HashMap<i64, Vec<i64>>> {
    let rows: Vec<(i64, i64)> = team_members::table
        .filter(team_members::company_id.eq(company_id).and(team_members::team_id.eq_any(team_ids)))
        .order((team_members::team_id, team_members::user_id))
        .select((team_members::team_id, team_members::user_id))
        .load(c)?;
    let mut out: HashMap<i64, Vec<i64>> = HashMap::new();
    for (team, user) in rows {
        out.entry(team).or_default().push(user);
    }
    Ok(out)
}

fn views(c: &mut Db, company_id: i64, rows: Vec<TeamRow>) -> ApiResult<Vec<TeamView>> {
    let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
    let mut members = members(c, company_id, &ids)?;
    Ok(rows
        .into_iter()
        .map(|r| TeamView {
            team_id: r.id,
            name: r.name,
            agent_ids: members.remove(&r.id).unwrap_or_default(),
            auto_assign: r.auto_assign,
            max_open_per_agent: r.max_open_per_agent,
        })
        .collect())
}

fn view(c: &mut Db, company_id: i64, id: i64) -> ApiResult<TeamView> {
    let row = get_one(c, company_id, id)?;
    Ok(views(c, company_id, vec![row])?.remove(0))
}

/// Makes the team's members exactly `ids` (each an active agent or admin of the company, else
/// 400 on `agentIds`); members who stay keep their place in the round-robin.
fn set_members(c: &mut Db, company_id: i64, team_id: i64, ids: &[i64]) -> ApiResult<()> {
    let staff: HashSet<i64> = crate::users::store::active_staff_among(c, company_id, ids)?.into_iter().collect();
    if let Some(bad) = ids.iter().find(|id| !staff.contains(id)) {
        return Err(ApiError::field("agentIds", format!("{bad} is not an active agent of this company")));
    }
    diesel::delete(
        team_members::table.filter(team_members::team_id.eq(team_id)).filter(team_members::user_id.ne_all(ids)),
    )
    .execute(c)?;
    let have: HashSet<i64> = team_members::table
        .filter(team_members::team_id.eq(team_id))
        .select(team_members::user_id)
        .load::<i64>(c)?
        .into_iter()
        .collect();
    let new: Vec<_> = ids
        .iter()
        .filter(|id| !have.contains(id))
        .map(|id| {
            (team_members::team_id.eq(team_id), team_members::user_id.eq(*id), team_members::company_id.eq(company_id))
        })
        .collect();
    if !new.is_empty() {
        crate::on_backend!(c, |c| diesel::insert_into(team_members::table).values(new).execute(c))?;
    }
    Ok(())
}

fn insert(c: &mut Db, company_id: i64, b: &TeamBody, name: &str, ids: &[i64]) -> ApiResult<TeamView> {
    let t = now();
    let id: i64 = diesel::insert_into(teams::table)
        .values((
            teams::company_id.eq(company_id),
            teams::name.eq(name),
            teams::auto_assign.eq(b.auto_assign),
            teams::max_open_per_agent.eq(b.max_open_per_agent),
            teams::created_at.eq(t),
            teams::updated_at.eq(t),
        ))
        .returning(teams::id)
        .get_result(c)?;
    set_members(c, company_id, id, ids)?;
    view(c, company_id, id)
}

fn set(c: &mut Db, company_id: i64, id: i64, b: &TeamBody, name: &str, ids: &[i64]) -> ApiResult<TeamView> {
    get_one(c, company_id, id)?;
    diesel::update(teams::table.find(id))
        .set((
            teams::name.eq(name),
            teams::auto_assign.eq(b.auto_assign),
            teams::max_open_per_agent.eq(b.max_open_per_agent),
            teams::updated_at.eq(now()),
        ))
        .execute(c)?;
    set_members(c, company_id, id, ids)?;
    view(c, company_id, id)
}

/// Deletes a team: its channels lose it, and so do its conversations (each with
/// `conversation.updated`, returned for publishing after commit).
fn delete_one(c: &mut Db, company_id: i64, id: i64) -> ApiResult<Vec<Event>> {
    get_one(c, company_id, id)?;
    super::store::clear_team_of_channels(c, company_id, id)?;
    let mut events = Vec::new();
    for conv in super::store::clear_team_of_conversations(c, company_id, id)? {
        events.extend(service::conversation_updated(c, company_id, conv)?.1);
    }
    diesel::delete(team_members::table.filter(team_members::team_id.eq(id))).execute(c)?;
    diesel::delete(teams::table.find(id)).execute(c)?;
    Ok(events)
}

/// Sets (or clears) a channel's team: new conversations of the channel belong to it.
pub fn set_channel_team(c: &mut Db, company_id: i64, channel_id: i64, team_id: Option<i64>) -> ApiResult<()> {
    super::store::channel(c, company_id, channel_id)?;
    if let Some(team) = team_id {
        named(c, company_id, team)?;
    }
    super::store::set_team_of_channel(c, channel_id, team_id)
}

/// Queues [`AUTO_ASSIGN_JOB`] for a conversation that is (re)opening unassigned in a team
/// with auto-assignment, in the caller's transaction. The caller wakes the worker after commit.
pub fn queue_assignment(c: &mut Db, conv: &ConversationRow) -> ApiResult<bool> {
    let Some(team_id) = conv.team_id else { return Ok(false) };
    if conv.assignee_id.is_some() {
        return Ok(false);
    }
    let auto: Option<bool> = teams::table
        .filter(teams::company_id.eq(conv.company_id))
        .find(team_id)
        .select(teams::auto_assign)
        .first(c)
        .optional()?;
    if auto != Some(true) {
        return Ok(false);
    }
    let job = NewJob {
        kind: AUTO_ASSIGN_JOB,
        ref_id: &conv.id.to_string(),
        company_id: conv.company_id,
        channel_id: None,
        ordering_key: None,
    };
    outbox::insert(c, &job)?;
    Ok(true)
}

/// The member the team's next conversation goes to: online, below the cap, fewest open
/// conversations, then longest since their last assignment (never first), then lowest id.
fn pick(c: &mut Db, team: &TeamRow) -> ApiResult<Option<i64>> {
    let members: Vec<(i64, Option<NaiveDateTime>)> = team_members::table
        .filter(team_members::team_id.eq(team.id).and(team_members::company_id.eq(team.company_id)))
        .select((team_members::user_id, team_members::last_assigned_at))
        .load(c)?;
    let ids: Vec<i64> = members.iter().map(|(id, _)| *id).collect();
    let active: HashSet<i64> = crate::users::store::active_staff_among(c, team.company_id, &ids)?.into_iter().collect();
    let online: HashSet<i64> = presence::online_among(c, team.company_id, &ids)?.into_iter().collect();
    let candidates: Vec<i64> = ids.iter().copied().filter(|id| active.contains(id) && online.contains(id)).collect();
    if candidates.is_empty() {
        return Ok(None);
    }
    let open = super::store::open_counts(c, team.company_id, &candidates)?;
    let cap = team.max_open_per_agent.map(i64::from);
    Ok(members
        .into_iter()
        .filter(|(id, _)| candidates.contains(id))
        .map(|(id, last)| (open.get(&id).copied().unwrap_or(0), last, id))
        .filter(|(n, _, _)| cap.is_none_or(|cap| *n < cap))
        .min()
        .map(|(_, _, id)| id))
}

/// The company's teams, by name.
fn all(c: &mut Db, company_id: i64) -> ApiResult<Vec<TeamRow>> {
    Ok(teams::table.filter(teams::company_id.eq(company_id)).order(teams::name).select(TeamRow::as_select()).load(c)?)
}

/// The member was just given a conversation: [`pick`] prefers whoever waited longest.
fn mark_assigned(c: &mut Db, team_id: i64, agent: i64, t: NaiveDateTime) -> ApiResult<()> {
    diesel::update(team_members::table.find((team_id, agent))).set(team_members::last_assigned_at.eq(t)).execute(c)?;
    Ok(())
}

/// Runs an [`AUTO_ASSIGN_JOB`]: under the team's lock, assigns the conversation to the member
/// [`pick`] chooses if it is still open, unassigned and in a team with auto-assignment, with
/// `conversation.updated`; otherwise (or with nobody to take it) finishes without a change.
pub async fn auto_assign(st: &AppState, owner: &str, job: &Job) -> ApiResult<()> {
    let (job_id, company_id, owner) = (job.id, job.company_id, owner.to_owned());
    let conv_id = job.ref_id.parse::<i64>().ok();
    let events = st
        .db
        .write(move |c| {
            outbox::finish(c, job_id, &owner, None)?;
            let Some(id) = conv_id else { return Ok(Vec::new()) };
            let conv = match super::store::conversation(c, company_id, id) {
                Ok(conv) => conv,
                Err(ApiError::NotFound) => return Ok(Vec::new()),
                Err(e) => return Err(e),
            };
            let Some(team_id) = conv.team_id else { return Ok(Vec::new()) };
            dialect::lock_key(c, &format!("team:{team_id}"))?;
            let Some(team) = get_one(c, company_id, team_id).ok().filter(|t| t.auto_assign) else {
                return Ok(Vec::new());
            };
            let Some(agent) = pick(c, &team)? else { return Ok(Vec::new()) };
            let t = now();
            if !super::store::assign_if_unassigned(c, id, team_id, agent, t)? {
                return Ok(Vec::new());
            }
            mark_assigned(c, team_id, agent, t)?;
            Ok(service::conversation_updated(c, company_id, id)?.1)
        })
        .await?;
    service::publish_events(st, events);
    Ok(())
}

// ---- routes ----

const EXISTS: &str = "a team with this name exists";

/// The company's teams, by name.
#[utoipa::path(tag = "teams", security(("bearer" = [])), responses((status = 200, body = [TeamView])))]
#[get("/team")]
async fn list(agent: Agent, st: web::Data<AppState>) -> ApiResult<HttpResponse> {
    let company_id = agent.company_id;
    let views = st
        .db
        .run(move |c| {
            let rows = all(c, company_id)?;
            views(c, company_id, rows)
        })
        .await?;
    Ok(HttpResponse::Ok().json(views))
}

#[utoipa::path(tag = "teams", security(("bearer" = [])),
    responses((status = 200, body = TeamView), (status = 404, body = ErrorBody)))]
#[get("/team/{id}")]
async fn get_team(agent: Agent, st: web::Data<AppState>, id: web::Path<i64>) -> ApiResult<HttpResponse> {
    let (company_id, id) = (agent.company_id, id.into_inner());
    Ok(HttpResponse::Ok().json(st.db.run(move |c| view(c, company_id, id)).await?))
}

/// Creates a team (admins).
#[utoipa::path(tag = "teams", request_body = TeamBody, security(("bearer" = [])),
    responses((status = 201, body = TeamView), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
#[post("/team")]
async fn create(admin: Admin, st: web::Data<AppState>, Json(b): Json<TeamBody>) -> ApiResult<HttpResponse> {
    let (name, ids) = b.check()?;
    let company_id = admin.company_id;
    let view = st
        .db
        .write(move |c| insert(c, company_id, &b, &name, &ids))
        .await
        .map_err(|e| e.on_unique("team_exists", EXISTS))?;
    Ok(HttpResponse::Created().json(view))
}

/// Replaces a team's name, agents and assignment settings (admins).
#[utoipa::path(tag = "teams", request_body = TeamBody, security(("bearer" = [])),
    responses((status = 200, body = TeamView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
#[put("/team/{id}")]
async fn update(
    admin: Admin,
    st: web::Data<AppState>,
    id: web::Path<i64>,
    Json(b): Json<TeamBody>,
) -> ApiResult<HttpResponse> {
    let (name, ids) = b.check()?;
    let (company_id, id) = (admin.company_id, id.into_inner());
    let view = st
        .db
        .write(move |c| set(c, company_id, id, &b, &name, &ids))
        .await
        .map_err(|e| e.on_unique("team_exists", EXISTS))?;
    Ok(HttpResponse::Ok().json(view))
}

/// Deletes a team (admins): its conversations and channels no longer have one (each
/// conversation with `conversation.updated`).
#[utoipa::path(tag = "teams", security(("bearer" = [])),
    responses((status = 204, description = "deleted"), (status = 404, body = ErrorBody)))]
#[delete("/team/{id}")]
async fn remove(admin: Admin, st: web::Data<AppState>, id: web::Path<i64>) -> ApiResult<HttpResponse> {
    let (company_id, id) = (admin.company_id, id.into_inner());
    let events = st.db.write(move |c| delete_one(c, company_id, id)).await?;
    service::publish_events(&st, events);
    Ok(HttpResponse::NoContent().finish())
}
