//! `/webhook-subscriptions` (README "Outgoing webhooks"): company admins only.

use actix_web::{HttpResponse, delete, get, post, put, web};
use serde::Deserialize;
use utoipa::IntoParams;

use super::{model::*, service};
use crate::core::{
    auth::guard::Admin,
    error::{ApiResult, ErrorBody},
    extract::Json,
    query::Paging,
    state::AppState,
};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(list)
        .service(create)
        .service(get_one)
        .service(update)
        .service(remove)
        .service(rotate_secret)
        .service(deliveries)
        .service(retry);
}

#[derive(utoipa::OpenApi)]
#[openapi(
    paths(list, create, get_one, update, remove, rotate_secret, deliveries, retry),
    components(schemas(
        SubscriptionBody,
        SubscriptionPatch,
        SubscriptionView,
        SubscriptionWithSecret,
        DeliveryView,
        AttemptView,
        DeliveryPage
    ))
)]
pub struct Api;

#[derive(Debug, Deserialize, IntoParams)]
pub struct DeliveryQuery {
    /// 1 to 1000000 (default 1).
    pub page: Option<i64>,
    /// 1 to 100 (default 20).
    pub limit: Option<i64>,
    /// `pending`, `delivered` or `failed`.
    pub status: Option<String>,
}

/// The company's webhook subscriptions (bots' `webhookUrl` subscriptions included).
#[utoipa::path(tag = "webhooks-out", security(("bearer" = [])),
    responses((status = 200, body = [SubscriptionView]), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
#[get("/webhook-subscriptions")]
async fn list(admin: Admin, st: web::Data<AppState>) -> ApiResult<HttpResponse> {
    Ok(HttpResponse::Ok().json(service::list(&st, admin.company_id).await?))
}

/// Subscribes a URL to conversation events. The answer carries the signing `secret`, shown
/// only here. Deliveries: README "Outgoing webhooks".
#[utoipa::path(tag = "webhooks-out", request_body = SubscriptionBody, security(("bearer" = [])),
    responses((status = 201, body = SubscriptionWithSecret), (status = 400, body = ErrorBody, description = "bad URL (not http(s), or resolves to a non-public address) or event"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
#[post("/webhook-subscriptions")]
async fn create(admin: Admin, st: web::Data<AppState>, Json(b): Json<SubscriptionBody>) -> ApiResult<HttpResponse> {
    Ok(HttpResponse::Created().json(service::create(&st, admin.company_id, b).await?))
}

#[utoipa::path(tag = "webhooks-out", security(("bearer" = [])),
    responses((status = 200, body = SubscriptionView), (status = 404, body = ErrorBody)))]
#[get("/webhook-subscriptions/{id}")]
async fn get_one(admin: Admin, st: web::Data<AppState>, id: web::Path<i64>) -> ApiResult<HttpResponse> {
    Ok(HttpResponse::Ok().json(service::get(&st, admin.company_id, id.into_inner()).await?))
}

/// Changes the URL, the events or `active` (an inactive subscription gets no new events;
/// deliveries already queued are still sent).
#[utoipa::path(tag = "webhooks-out", request_body = SubscriptionPatch, security(("bearer" = [])),
    responses((status = 200, body = SubscriptionView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
#[put("/webhook-subscriptions/{id}")]
async fn update(
    admin: Admin,
    st: web::Data<AppState>,
    id: web::Path<i64>,
    Json(b): Json<SubscriptionPatch>,
) -> ApiResult<HttpResponse> {
    Ok(HttpResponse::Ok().json(service::update(&st, admin.company_id, id.into_inner(), b).await?))
}

/// Deletes the subscription with its delivery log; queued deliveries are dropped.
#[utoipa::path(tag = "webhooks-out", security(("bearer" = [])),
    responses((status = 204, description = "deleted"), (status = 404, body = ErrorBody)))]
#[delete("/webhook-subscriptions/{id}")]
async fn remove(admin: Admin, st: web::Data<AppState>, id: web::Path<i64>) -> ApiResult<HttpResponse> {
    service::delete(&st, admin.company_id, id.into_inner()).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// A new secret (shown once) signs from now on; the previous ones keep signing for 24 hours,
/// each delivery carrying one `v1=` per valid secret.
#[utoipa::path(tag = "webhooks-out", security(("bearer" = [])),
    responses((status = 200, body = SubscriptionWithSecret), (status = 404, body = ErrorBody)))]
#[post("/webhook-subscriptions/{id}/rotate-secret")]
async fn rotate_secret(admin: Admin, st: web::Data<AppState>, id: web::Path<i64>) -> ApiResult<HttpResponse> {
    Ok(HttpResponse::Ok().json(service::rotate(&st, admin.company_id, id.into_inner()).await?))
}

/// The subscription's deliveries, newest first, each with every attempt (status, HTTP code,
/// duration).
#[utoipa::path(tag = "webhooks-out", params(DeliveryQuery), security(("bearer" = [])),
    responses((status = 200, body = DeliveryPage), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
#[get("/webhook-subscriptions/{id}/deliveries")]
async fn deliveries(
    admin: Admin,
    st: web::Data<AppState>,
    id: web::Path<i64>,
    q: web::Query<DeliveryQuery>,
) -> ApiResult<HttpResponse> {
    let q = q.into_inner();
    let paging = Paging::parse(q.page, q.limit, 20, ("page", "limit"))?;
    Ok(HttpResponse::Ok().json(service::deliveries(&st, admin.company_id, id.into_inner(), q.status, paging).await?))
}

/// Replays a delivered or dead-lettered delivery (same event id and body, a fresh budget of
/// attempts, outside the conversation's order). A delivery still pending is 409
/// `delivery_pending`.
#[utoipa::path(tag = "webhooks-out", security(("bearer" = [])),
    responses((status = 202, body = DeliveryView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
#[post("/webhook-subscriptions/{id}/deliveries/{delivery_id}/retry")]
async fn retry(admin: Admin, st: web::Data<AppState>, path: web::Path<(i64, i64)>) -> ApiResult<HttpResponse> {
    let (id, delivery_id) = path.into_inner();
    Ok(HttpResponse::Accepted().json(service::retry(&st, admin.company_id, id, delivery_id).await?))
}
