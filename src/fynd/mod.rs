//! Fynd user management (CONTRACT §9): the admin `/application` routes, the platform user API
//! and the storefront user API, over `users/` and the shared sessions table.

pub mod applications;
pub mod config;
pub mod cors;
pub mod credentials;
pub mod oauth;
pub mod platform;
pub mod service;
pub mod social;
pub mod store;
pub mod storefront;
pub mod storefront_links;
pub mod storefront_otp;
pub mod views;

use actix_web::web;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.configure(applications::configure)
        .configure(platform::configure)
        .configure(storefront::configure)
        .configure(storefront_otp::configure)
        .configure(storefront_links::configure)
        .configure(oauth::configure)
        .configure(social::configure);
}

/// The OpenAPI of every Fynd route.
pub fn openapi() -> utoipa::openapi::OpenApi {
    use utoipa::OpenApi;
    let mut doc = applications::Api::openapi();
    doc.merge(platform::Api::openapi());
    doc.merge(storefront::Api::openapi());
    doc.merge(storefront_otp::Api::openapi());
    doc.merge(storefront_links::Api::openapi());
    doc.merge(oauth::Api::openapi());
    doc.merge(social::Api::openapi());
    doc
}
