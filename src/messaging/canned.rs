//! Canned responses (issue 22 item 2): short texts an agent inserts by typing `/shortCode` in
//! the console's composer. Per company; agents read them, admins write them; `shortCode` is
//! unique per company (409 `canned_exists`). The `{{contact.firstName}}`,
//! `{{contact.lastName}}`, `{{contact.phone}}` and `{{agent.firstName}}` placeholders are kept
//! as written and filled in by the console when it inserts one (the text is the agent's to
//! review and edit before sending). This module owns the `canned_responses` table.

use actix_web::{HttpResponse, delete, get, post, put, web};
use chrono::NaiveDateTime;
use diesel::prelude::*;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::model::MAX_TEXT_CHARS;
use crate::core::{
    auth::guard::{Admin, Agent},
    db::{Db, schema::canned_responses},
    error::{ApiError, ApiResult, ErrorBody},
    extract::Json,
    state::AppState,
    types::now,
};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(list).service(create).service(update).service(remove);
}

#[derive(utoipa::OpenApi)]
#[openapi(paths(list, create, update, remove), components(schemas(CannedView, CannedBody)))]
pub struct Api;

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = canned_responses)]
pub struct CannedRow {
    pub id: i64,
    pub company_id: i64,
    pub short_code: String,
    pub content: String,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CannedView {
    pub canned_id: i64,
    /// What follows `/` in the composer: letters, digits, `_` and `-`, 1 to 32 characters.
    pub short_code: String,
    /// The text, with optional `{{contact.firstName}}`, `{{contact.lastName}}`,
    /// `{{contact.phone}}` and `{{agent.firstName}}` placeholders.
    pub content: String,
}

impl From<CannedRow> for CannedView {
    fn from(r: CannedRow) -> Self {
        Self { canned_id: r.id, short_code: r.short_code, content: r.content }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CannedBody {
    pub short_code: String,
    pub content: String,
}

impl CannedBody {
    /// The short code as stored (lower-cased: `/Thanks` and `/thanks` are one code).
    fn check(&self) -> ApiResult<String> {
        let code = self.short_code.trim().to_lowercase();
        let ok = !code.is_empty()
            && code.chars().count() <= 32
            && code.chars().all(|c| c.is_alphanumeric() || c == '_' || c == '-');
        if !ok {
            return Err(ApiError::field("shortCode", "must be 1 to 32 letters, digits, _ or -"));
        }
        if self.content.trim().is_empty() || self.content.chars().count() > MAX_TEXT_CHARS {
            return Err(ApiError::field("content", format!("must be 1 to {MAX_TEXT_CHARS} characters")));
        }
        if self.content.contains('\0') {
            return Err(ApiError::field("content", "must not contain NUL characters"));
        }
        Ok(code)
    }
}

// ---- store ----

pub fn get_one(c: &mut Db, company_id: i64, id: i64) -> ApiResult<CannedRow> {
    Ok(canned_responses::table
        .filter(canned_responses::company_id.eq(company_id))
        .find(id)
        .select(CannedRow::as_select())
        .first(c)?)
}

pub fn all(c: &mut Db, company_id: i64) -> ApiResult<Vec<CannedRow>> {
    Ok(canned_responses::table
        .filter(canned_responses::company_id.eq(company_id))
        .order(canned_responses::short_code)
        .select(CannedRow::as_select())
        .load(c)?)
}

fn insert(c: &mut Db, company_id: i64, short_code: &str, content: &str) -> ApiResult<CannedRow> {
    let t = now();
    let id: i64 = diesel::insert_into(canned_responses::table)
        .values((
            canned_responses::company_id.eq(company_id),
            canned_responses::short_code.eq(short_code),
            canned_responses::content.eq(content),
            canned_responses::created_at.eq(t),
            canned_responses::updated_at.eq(t),
        ))
        .returning(canned_responses::id)
        .get_result(c)?;
    get_one(c, company_id, id)
}

fn set(c: &mut Db, company_id: i64, id: i64, short_code: &str, content: &str) -> ApiResult<CannedRow> {
    get_one(c, company_id, id)?;
    diesel::update(canned_responses::table.find(id))
        .set((
            canned_responses::short_code.eq(short_code),
            canned_responses::content.eq(content),
            canned_responses::updated_at.eq(now()),
        ))
        .execute(c)?;
    get_one(c, company_id, id)
}

fn delete_one(c: &mut Db, company_id: i64, id: i64) -> ApiResult<()> {
    get_one(c, company_id, id)?;
    diesel::delete(canned_responses::table.find(id)).execute(c)?;
    Ok(())
}

// ---- routes ----

const EXISTS: &str = "a canned response with this short code exists";

/// The company's canned responses, by short code.
#[utoipa::path(tag = "canned", security(("bearer" = [])), responses((status = 200, body = [CannedView])))]
#[get("/canned")]
async fn list(agent: Agent, st: web::Data<AppState>) -> ApiResult<HttpResponse> {
    let company_id = agent.company_id;
    let rows = st.db.run(move |c| all(c, company_id)).await?;
    Ok(HttpResponse::Ok().json(rows.into_iter().map(CannedView::from).collect::<Vec<_>>()))
}

/// Creates a canned response (admins); a short code already used in the company is 409.
#[utoipa::path(tag = "canned", request_body = CannedBody, security(("bearer" = [])),
    responses((status = 201, body = CannedView), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
#[post("/canned")]
async fn create(admin: Admin, st: web::Data<AppState>, Json(b): Json<CannedBody>) -> ApiResult<HttpResponse> {
    let code = b.check()?;
    let company_id = admin.company_id;
    let row = st
        .db
        .write(move |c| insert(c, company_id, &code, &b.content))
        .await
        .map_err(|e| e.on_unique("canned_exists", EXISTS))?;
    Ok(HttpResponse::Created().json(CannedView::from(row)))
}

/// Replaces a canned response's short code and text (admins).
#[utoipa::path(tag = "canned", request_body = CannedBody, security(("bearer" = [])),
    responses((status = 200, body = CannedView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
#[put("/canned/{id}")]
async fn update(
    admin: Admin,
    st: web::Data<AppState>,
    id: web::Path<i64>,
    Json(b): Json<CannedBody>,
) -> ApiResult<HttpResponse> {
    let code = b.check()?;
    let (company_id, id) = (admin.company_id, id.into_inner());
    let row = st
        .db
        .write(move |c| set(c, company_id, id, &code, &b.content))
        .await
        .map_err(|e| e.on_unique("canned_exists", EXISTS))?;
    Ok(HttpResponse::Ok().json(CannedView::from(row)))
}

#[utoipa::path(tag = "canned", security(("bearer" = [])),
    responses((status = 204, description = "deleted"), (status = 404, body = ErrorBody)))]
#[delete("/canned/{id}")]
async fn remove(admin: Admin, st: web::Data<AppState>, id: web::Path<i64>) -> ApiResult<HttpResponse> {
    let (company_id, id) = (admin.company_id, id.into_inner());
    st.db.write(move |c| delete_one(c, company_id, id)).await?;
    Ok(HttpResponse::NoContent().finish())
}
