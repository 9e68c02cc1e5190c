//! The OpenAPI document, assembled from each feature's `Api`, and its route (CONTRACT §1
//! `/openapi.json`).

use actix_web::{HttpResponse, get, web};
use utoipa::{
    Modify, OpenApi,
    openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
};

#[derive(OpenApi)]
#[openapi(
    info(title = "confab", description = "Real-time customer-messaging server. Errors on every route use the \
        unified body `{statusCode, error, message, code, fields?}`; messaging and ARC routes use camelCase, \
        Fynd routes snake_case; timestamps are RFC 3339 UTC with milliseconds. A messaging-family contact \
        (`GET /contact` items, a conversation's `user`) always has `phone` and `email`: `null` when the \
        customer has none, never a missing key. Paging: `page`/`page_no` 1–1000000, `limit`/`page_size` 1–100; anything else \
        is 400 `validation_failed` naming the field."),
    paths(openapi_json),
    modifiers(&Bearer),
    components(schemas(crate::core::error::ErrorBody))
)]
struct Root;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(openapi_json);
}

/// This document.
#[utoipa::path(tag = "ops", responses((status = 200, body = Object)))]
#[get("/openapi.json")]
async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok().json(document())
}

struct Bearer;

impl Modify for Bearer {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build()),
        );
    }
}

pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = Root::openapi();
    doc.merge(crate::ops::routes::Api::openapi());
    doc.merge(crate::auth::routes::Api::openapi());
    doc.merge(crate::messaging::routes::Api::openapi());
    doc.merge(crate::messaging::admin::Api::openapi());
    doc.merge(crate::messaging::canned::Api::openapi());
    doc.merge(crate::messaging::teams::Api::openapi());
    doc.merge(crate::providers::webhooks::Api::openapi());
    doc.merge(crate::realtime::routes::Api::openapi());
    doc.merge(crate::fynd::openapi());
    doc.merge(crate::auth::arc_openapi());
    doc.merge(crate::media::routes::Api::openapi());
    doc.merge(crate::hooks::routes::Api::openapi());
    doc.merge(crate::bots::routes::Api::openapi());
    doc.merge(crate::campaigns::routes::Api::openapi());
    doc
}
