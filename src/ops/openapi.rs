//! The OpenAPI document, assembled from each feature's `Api` (CONTRACT §1 `/openapi.json`).

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
    modifiers(&Bearer),
    components(schemas(crate::core::error::ErrorBody))
)]
struct Root;

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
    doc.merge(crate::providers::webhooks::Api::openapi());
    doc.merge(crate::realtime::routes::Api::openapi());
    doc.merge(crate::fynd::openapi());
    doc.merge(crate::auth::arc_openapi());
    doc.merge(crate::media::routes::Api::openapi());
    doc
}
