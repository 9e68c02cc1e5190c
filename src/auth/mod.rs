//! Authentication: passwords, access tokens and JWKS, sessions with refresh rotation, the
//! request middleware and role extractors, and the account routes.

pub mod arc;
pub mod clients;
pub mod oauth;
pub mod otp;
pub mod password;
pub mod proof;
pub mod recovery;
pub mod routes;
pub mod saml;
pub mod service;
pub mod totp;

/// The OpenAPI of the ARC routes (code flow, auth clients, MFA, recovery), merged into the
/// document by `ops::openapi`.
pub fn arc_openapi() -> utoipa::openapi::OpenApi {
    use utoipa::OpenApi;
    let mut doc = arc::Api::openapi();
    doc.merge(clients::Api::openapi());
    doc.merge(oauth::Api::openapi());
    doc.merge(saml::Api::openapi());
    doc.merge(otp::Api::openapi());
    doc.merge(totp::Api::openapi());
    doc.merge(recovery::Api::openapi());
    doc
}
