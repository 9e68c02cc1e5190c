//! `/campaigns` (README "Campaigns"): company admins only.

use actix_web::{HttpResponse, get, post, web};
use serde::Deserialize;
use utoipa::IntoParams;

use super::service::{
    self, Action, Added, CampaignBody, CampaignView, Counts, InvalidLine, RecipientBody, RecipientPage, RecipientView,
};
use crate::core::{
    auth::guard::Admin,
    error::{ApiError, ApiResult, ErrorBody},
    extract::Json,
    query::Paging,
    state::AppState,
};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(list)
        .service(create)
        .service(get_one)
        .service(upload_recipients)
        .service(recipients)
        .service(start)
        .service(pause)
        .service(resume)
        .service(cancel);
}

#[derive(utoipa::OpenApi)]
#[openapi(
    paths(list, create, get_one, upload_recipients, recipients, start, pause, resume, cancel),
    components(schemas(
        CampaignBody,
        RecipientBody,
        CampaignView,
        Counts,
        Added,
        InvalidLine,
        RecipientView,
        RecipientPage
    ))
)]
pub struct Api;

#[derive(Debug, Deserialize, IntoParams)]
pub struct RecipientQuery {
    pub page: Option<i64>,
    pub limit: Option<i64>,
    /// `queued`, `sent`, `delivered`, `read`, `failed` or `skipped`.
    pub status: Option<String>,
}

#[utoipa::path(tag = "campaigns", security(("bearer" = [])), responses((status = 200, body = [CampaignView]), (status = 403, body = ErrorBody)))]
#[get("/campaigns")]
async fn list(admin: Admin, st: web::Data<AppState>) -> ApiResult<HttpResponse> {
    Ok(HttpResponse::Ok().json(service::list(&st, admin.company_id).await?))
}

/// A draft campaign: one template to `recipients` and/or a user group's members (phones
/// normalised to E.164, duplicates dropped). `POST /campaigns/{id}/start` sends it.
#[utoipa::path(tag = "campaigns", request_body = CampaignBody, security(("bearer" = [])),
    responses((status = 201, body = CampaignView), (status = 400, body = ErrorBody), (status = 422, body = ErrorBody)))]
#[post("/campaigns")]
async fn create(admin: Admin, st: web::Data<AppState>, Json(b): Json<CampaignBody>) -> ApiResult<HttpResponse> {
    Ok(HttpResponse::Created().json(service::create(&st, admin.company_id, admin.user_id, b).await?))
}

/// The campaign with its counts `{queued, sent, delivered, read, failed, skipped}`.
#[utoipa::path(tag = "campaigns", security(("bearer" = [])), responses((status = 200, body = CampaignView), (status = 404, body = ErrorBody)))]
#[get("/campaigns/{id}")]
async fn get_one(admin: Admin, st: web::Data<AppState>, id: web::Path<i64>) -> ApiResult<HttpResponse> {
    Ok(HttpResponse::Ok().json(service::get(&st, admin.company_id, id.into_inner()).await?))
}

/// Adds recipients from a CSV body (`Content-Type: text/csv`): `phone,param1,…` per line.
#[utoipa::path(tag = "campaigns", request_body(content = String, content_type = "text/csv"), security(("bearer" = [])),
    responses((status = 200, body = Added), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 415, body = ErrorBody)))]
#[post("/campaigns/{id}/recipients")]
async fn upload_recipients(
    admin: Admin,
    st: web::Data<AppState>,
    req: actix_web::HttpRequest,
    id: web::Path<i64>,
    body: web::Bytes,
) -> ApiResult<HttpResponse> {
    let ct = req.headers().get(actix_web::http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !ct.starts_with("text/csv") && !ct.starts_with("text/plain") {
        return Err(ApiError::UnsupportedMediaType("send text/csv".into()));
    }
    Ok(HttpResponse::Ok().json(service::add_csv(&st, admin.company_id, id.into_inner(), body).await?))
}

#[utoipa::path(tag = "campaigns", params(RecipientQuery), security(("bearer" = [])),
    responses((status = 200, body = RecipientPage), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
#[get("/campaigns/{id}/recipients")]
async fn recipients(
    admin: Admin,
    st: web::Data<AppState>,
    id: web::Path<i64>,
    q: web::Query<RecipientQuery>,
) -> ApiResult<HttpResponse> {
    let q = q.into_inner();
    let paging = Paging::parse(q.page, q.limit, 20, ("page", "limit"))?;
    Ok(HttpResponse::Ok().json(service::recipients(&st, admin.company_id, id.into_inner(), q.status, paging).await?))
}

async fn act(admin: Admin, st: web::Data<AppState>, id: i64, action: Action) -> ApiResult<HttpResponse> {
    Ok(HttpResponse::Ok().json(service::transition(&st, admin.company_id, id, action).await?))
}

/// draft → running (or scheduled until `startAt`).
#[utoipa::path(tag = "campaigns", security(("bearer" = [])), responses((status = 200, body = CampaignView), (status = 409, body = ErrorBody)))]
#[post("/campaigns/{id}/start")]
async fn start(admin: Admin, st: web::Data<AppState>, id: web::Path<i64>) -> ApiResult<HttpResponse> {
    act(admin, st, id.into_inner(), Action::Start).await
}

#[utoipa::path(tag = "campaigns", security(("bearer" = [])), responses((status = 200, body = CampaignView), (status = 409, body = ErrorBody)))]
#[post("/campaigns/{id}/pause")]
async fn pause(admin: Admin, st: web::Data<AppState>, id: web::Path<i64>) -> ApiResult<HttpResponse> {
    act(admin, st, id.into_inner(), Action::Pause).await
}

#[utoipa::path(tag = "campaigns", security(("bearer" = [])), responses((status = 200, body = CampaignView), (status = 409, body = ErrorBody)))]
#[post("/campaigns/{id}/resume")]
async fn resume(admin: Admin, st: web::Data<AppState>, id: web::Path<i64>) -> ApiResult<HttpResponse> {
    act(admin, st, id.into_inner(), Action::Resume).await
}

#[utoipa::path(tag = "campaigns", security(("bearer" = [])), responses((status = 200, body = CampaignView), (status = 409, body = ErrorBody)))]
#[post("/campaigns/{id}/cancel")]
async fn cancel(admin: Admin, st: web::Data<AppState>, id: web::Path<i64>) -> ApiResult<HttpResponse> {
    act(admin, st, id.into_inner(), Action::Cancel).await
}
