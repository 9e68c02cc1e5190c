//! Request extractors shared by every family.

use std::{future::Future, pin::Pin};

use actix_web::{FromRequest, HttpRequest, dev::Payload, http::header, web::Bytes};
use serde::de::DeserializeOwned;

use crate::core::error::ApiError;

/// A JSON body whose errors name the offending field: `{"fields":{"email":"must be an e-mail
/// address"}}` for a value that fails its parser, 400 `invalid_json` for bad syntax, 413 past
/// the body limit (the app's `PayloadConfig`, 1 MiB by default) — CONTRACT §2.
#[derive(Debug)]
pub struct Json<T>(pub T);

impl<T: DeserializeOwned + 'static> FromRequest for Json<T> {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let body = read_body(req, payload, false);
        Box::pin(async move { body.await.map(Json) })
    }
}

/// A body sent either as JSON or as `application/x-www-form-urlencoded`: OAuth token
/// endpoints and ARC's social-login routes take forms, and SDKs send either.
#[derive(Debug)]
pub struct JsonOrForm<T>(pub T);

impl<T: DeserializeOwned + 'static> FromRequest for JsonOrForm<T> {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let body = read_body(req, payload, true);
        Box::pin(async move { body.await.map(JsonOrForm) })
    }
}

/// Reads and parses a JSON body (or a form one, when `forms` are accepted): 415 for another
/// media type, 413 past the body limit, 400 for a broken payload.
fn read_body<T: DeserializeOwned + 'static>(
    req: &HttpRequest,
    payload: &mut Payload,
    forms: bool,
) -> impl Future<Output = Result<T, ApiError>> + 'static {
    let kind = match body_kind(req) {
        BodyKind::Form if !forms => BodyKind::Other,
        k => k,
    };
    let bytes = Bytes::from_request(req, payload);
    async move {
        if kind == BodyKind::Other {
            let expected = if forms {
                "expected Content-Type: application/json or application/x-www-form-urlencoded"
            } else {
                "expected Content-Type: application/json"
            };
            return Err(ApiError::UnsupportedMediaType(expected.into()));
        }
        let bytes = bytes.await.map_err(|e| {
            if e.as_response_error().status_code() == actix_web::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge
            } else {
                ApiError::bad_request("invalid_body", e.to_string())
            }
        })?;
        parse_as(kind, &bytes)
    }
}

/// Parses a buffered body as JSON or as a form, by the request's media type (415 otherwise).
pub fn parse_json_or_form<T: DeserializeOwned>(req: &HttpRequest, bytes: &[u8]) -> Result<T, ApiError> {
    match body_kind(req) {
        BodyKind::Other => Err(ApiError::UnsupportedMediaType(
            "expected Content-Type: application/json or application/x-www-form-urlencoded".into(),
        )),
        kind => parse_as(kind, bytes),
    }
}

fn parse_as<T: DeserializeOwned>(kind: BodyKind, bytes: &[u8]) -> Result<T, ApiError> {
    match kind {
        BodyKind::Form => {
            serde_urlencoded::from_bytes(bytes).map_err(|e| ApiError::bad_request("invalid_form", e.to_string()))
        }
        _ => parse(bytes),
    }
}

#[derive(Debug, PartialEq, Eq)]
enum BodyKind {
    Json,
    Form,
    Other,
}

/// The body's media type; a request without `Content-Type` is read as JSON.
fn body_kind(req: &HttpRequest) -> BodyKind {
    let Some(ct) = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return BodyKind::Json;
    };
    let essence = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    if essence == "application/json" || essence.ends_with("+json") {
        BodyKind::Json
    } else if essence == "application/x-www-form-urlencoded" {
        BodyKind::Form
    } else {
        BodyKind::Other
    }
}

/// Deserialises JSON, reporting data errors against the path of the field that failed.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        match inner.classify() {
            serde_json::error::Category::Data if path != "." => ApiError::field(&path, clean_message(&inner)),
            _ => ApiError::bad_request("invalid_json", inner.to_string()),
        }
    })
}

/// serde_json appends " at line L column C" to data errors; the field name says it better.
fn clean_message(e: &serde_json::Error) -> String {
    let text = e.to_string();
    match text.rfind(" at line ") {
        Some(i) => text[..i].to_owned(),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Body {
        email: crate::core::types::Email,
        n: u32,
    }

    #[test]
    fn data_errors_name_the_field_and_syntax_errors_do_not() {
        let e = parse::<Body>(br#"{"email":"nope","n":1}"#).unwrap_err();
        assert_eq!(e.body().fields.unwrap()["email"], "must be an e-mail address");
        let e = parse::<Body>(br#"{"email":"a@b.c","n":"x"}"#).unwrap_err();
        assert!(e.body().fields.unwrap().contains_key("n"));
        let e = parse::<Body>(br#"{"email":"#).unwrap_err();
        assert_eq!(e.status_and_code().1, "invalid_json");
    }
}
