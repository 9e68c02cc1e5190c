//! Operations endpoints (CONTRACT §1): health, readiness, Prometheus metrics, the OpenAPI
//! document, and `GET /`.

pub mod openapi;
pub mod routes;
