//! `/bots` (README "Agent bots"): company admins only.

use actix_web::{HttpResponse, delete, get, post, web};

use super::service::{self, BotBody, BotCreated, BotToken, BotView};
use crate::core::{
    auth::guard::Admin,
    error::{ApiResult, ErrorBody},
    extract::Json,
    state::AppState,
};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(list).service(create).service(get_one).service(rotate_token).service(remove);
}

#[derive(utoipa::OpenApi)]
#[openapi(
    paths(list, create, get_one, rotate_token, remove),
    components(schemas(BotBody, BotView, BotCreated, BotToken))
)]
pub struct Api;

#[utoipa::path(tag = "bots", security(("bearer" = [])),
    responses((status = 200, body = [BotView]), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
#[get("/bots")]
async fn list(admin: Admin, st: web::Data<AppState>) -> ApiResult<HttpResponse> {
    Ok(HttpResponse::Ok().json(service::list(&st, admin.company_id).await?))
}

/// Creates an agent bot. The answer carries its API token (`cfbot_…`, shown once, stored only
/// hashed) and, with a `webhookUrl`, the secret its deliveries are signed with.
#[utoipa::path(tag = "bots", request_body = BotBody, security(("bearer" = [])),
    responses((status = 201, body = BotCreated), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody)))]
#[post("/bots")]
async fn create(admin: Admin, st: web::Data<AppState>, Json(b): Json<BotBody>) -> ApiResult<HttpResponse> {
    Ok(HttpResponse::Created().json(service::create(&st, admin.company_id, b).await?))
}

#[utoipa::path(tag = "bots", security(("bearer" = [])), responses((status = 200, body = BotView), (status = 404, body = ErrorBody)))]
#[get("/bots/{id}")]
async fn get_one(admin: Admin, st: web::Data<AppState>, id: web::Path<i64>) -> ApiResult<HttpResponse> {
    Ok(HttpResponse::Ok().json(service::get(&st, admin.company_id, id.into_inner()).await?))
}

/// A new API token (shown once); the old one stops working.
#[utoipa::path(tag = "bots", security(("bearer" = [])), responses((status = 200, body = BotToken), (status = 404, body = ErrorBody)))]
#[post("/bots/{id}/token")]
async fn rotate_token(admin: Admin, st: web::Data<AppState>, id: web::Path<i64>) -> ApiResult<HttpResponse> {
    Ok(HttpResponse::Ok().json(service::rotate_token(&st, admin.company_id, id.into_inner()).await?))
}

/// Deletes the bot: its token stops working; its webhook subscription and its place on
/// channels go.
#[utoipa::path(tag = "bots", security(("bearer" = [])),
    responses((status = 204, description = "deleted"), (status = 404, body = ErrorBody)))]
#[delete("/bots/{id}")]
async fn remove(admin: Admin, st: web::Data<AppState>, id: web::Path<i64>) -> ApiResult<HttpResponse> {
    service::delete(&st, admin.company_id, id.into_inner()).await?;
    Ok(HttpResponse::NoContent().finish())
}
