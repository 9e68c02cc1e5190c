//! The agent console (issue 10, CONTRACT §3 `GET /`): the plain HTML, CSS and ES modules of
//! `static/console/`, served at `/console/`. Release builds embed the files, so the one binary
//! serves the console offline from any working directory; debug builds read them from disk on
//! each request (rust-embed's default), so editing a file needs only a reload.

use actix_web::{
    HttpRequest, HttpResponse, guard,
    http::header::{self, HeaderValue},
    web,
};

use crate::core::error::{ApiError, ApiResult};

#[derive(rust_embed::Embed)]
#[folder = "static/console/"]
struct Assets;

/// The page may talk only to its own origin (REST and `/ws`) and show only its own images and
/// the blob URLs it makes from `GET /media/{id}`.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; \
                   media-src 'self' blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; \
                   form-action 'self'; frame-ancestors 'none'";

pub fn configure(cfg: &mut web::ServiceConfig) {
    let read = || web::route().guard(guard::Any(guard::Get()).or(guard::Head()));
    cfg.route("/console", read().to(to_slash)).route("/console/{path:.*}", read().to(asset));
}

async fn to_slash() -> HttpResponse {
    HttpResponse::PermanentRedirect().insert_header((header::LOCATION, "/console/")).finish()
}

/// One file of the console; `/console/` is `index.html`. Revalidated on every load (`no-cache`)
/// with a content-hash `ETag`, so an upgrade of the server is never hidden by a stale cache.
async fn asset(req: HttpRequest, path: web::Path<String>) -> ApiResult<HttpResponse> {
    let path = path.into_inner();
    let name = if path.is_empty() || path.ends_with('/') { format!("{path}index.html") } else { path };
    let file = Assets::get(&name).ok_or(ApiError::NotFound)?;
    let etag = format!("\"{}\"", hex::encode(file.metadata.sha256_hash()));
    let fresh = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|tags| tags.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let mut res = if fresh { HttpResponse::NotModified() } else { HttpResponse::Ok() };
    res.insert_header((header::ETAG, etag))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")))
        .insert_header((header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")))
        .insert_header((header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP)));
    if fresh {
        return Ok(res.finish());
    }
    let mime = file.metadata.mimetype();
    let content_type = if mime.starts_with("text/") || mime.ends_with("javascript") || mime.ends_with("json") {
        format!("{mime}; charset=utf-8")
    } else {
        mime.to_owned()
    };
    res.insert_header((header::CONTENT_TYPE, content_type));
    Ok(res.body(file.data.into_owned()))
}
