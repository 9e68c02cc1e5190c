//! One error type for every route (CONTRACT §2): a status, a stable snake_case `code` that
//! clients switch on, a human-readable message and, for validation, per-field messages.
//! Internal failures are logged with their cause chain and answered with "internal error".

use std::collections::BTreeMap;

use actix_web::{HttpResponse, ResponseError, http::StatusCode};
use serde::Serialize;

pub type ApiResult<T> = Result<T, ApiError>;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Malformed input that is not about one field: bad JSON, wrong types, bad path ids.
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    /// Field-level validation failures (`fields` in the body).
    #[error("invalid input")]
    Invalid(BTreeMap<String, String>),
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("forbidden")]
    Forbidden,
    /// Forbidden for a reason clients switch on (a disabled login method, CONTRACT §9).
    #[error("{message}")]
    Denied { code: &'static str, message: String },
    /// Missing, or belonging to another company: both look the same (CONTRACT §2 tenancy).
    #[error("not found")]
    NotFound,
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    #[error("request body is too large")]
    PayloadTooLarge,
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{message}")]
    Unprocessable { code: &'static str, message: String },
    #[error("too many requests")]
    TooManyRequests { retry_after_secs: u64 },
    /// Any other HTTP failure (actix's own errors, panics) in the unified body.
    #[error("{message}")]
    Http { status: StatusCode, message: String },
    #[error("{0} is unavailable")]
    Unavailable(String),
    /// An upstream service (an identity provider) failed or is unreachable.
    #[error("{message}")]
    BadGateway { code: &'static str, message: String },
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// The unified error body of CONTRACT §2.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    pub status_code: u16,
    pub error: String,
    pub message: String,
    pub code: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fields: Option<BTreeMap<String, String>>,
}

impl ApiError {
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::BadRequest { code, message: message.into() }
    }

    pub fn unprocessable(code: &'static str, message: impl Into<String>) -> Self {
        Self::Unprocessable { code, message: message.into() }
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::Conflict { code, message: message.into() }
    }

    /// A single-field validation error.
    pub fn field(name: &str, message: impl Into<String>) -> Self {
        Self::Invalid(BTreeMap::from([(name.to_owned(), message.into())]))
    }

    /// True when this is a database unique-key violation (a race or a duplicate).
    pub fn is_unique_violation(&self) -> bool {
        matches!(self, Self::Internal(e) if e.downcast_ref::<diesel::result::Error>().is_some_and(is_unique_violation))
    }

    /// Turns a unique-key violation into a 409 with this code (realworld's `on_constraint`).
    pub fn on_unique(self, code: &'static str, message: &str) -> Self {
        if self.is_unique_violation() { Self::conflict(code, message) } else { self }
    }

    /// The status and `code` clients switch on: the one table of the contract.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::BadRequest { code, .. } => (StatusCode::BAD_REQUEST, code),
            Self::Invalid(_) => (StatusCode::BAD_REQUEST, "validation_failed"),
            Self::Unauthorized(code) => (StatusCode::UNAUTHORIZED, code),
            Self::Forbidden => (StatusCode::FORBIDDEN, "forbidden"),
            Self::Denied { code, .. } => (StatusCode::FORBIDDEN, code),
            Self::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            Self::Conflict { code, .. } => (StatusCode::CONFLICT, code),
            Self::PayloadTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            Self::UnsupportedMediaType(_) => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
            Self::Unprocessable { code, .. } => (StatusCode::UNPROCESSABLE_ENTITY, code),
            Self::TooManyRequests { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            Self::Http { status, .. } => (*status, code_for_status(*status)),
            Self::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "not_ready"),
            Self::BadGateway { code, .. } => (StatusCode::BAD_GATEWAY, code),
            Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }

    pub fn body(&self) -> ErrorBody {
        let (status, code) = self.status_and_code();
        let message = match self {
            Self::Internal(_) => "internal error".to_owned(),
            Self::Unauthorized(_) => "authentication failed".to_owned(),
            other => other.to_string(),
        };
        ErrorBody {
            status_code: status.as_u16(),
            error: status.canonical_reason().unwrap_or("Error").to_owned(),
            message,
            code: code.to_owned(),
            fields: match self {
                Self::Invalid(fields) => Some(fields.clone()),
                _ => None,
            },
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status_and_code().0
    }

    fn error_response(&self) -> HttpResponse {
        if let Self::Internal(e) = self {
            tracing::error!(error = ?e, "internal error");
        }
        let mut res = HttpResponse::build(self.status_code());
        if let Self::TooManyRequests { retry_after_secs } = self {
            res.insert_header(("Retry-After", retry_after_secs.to_string()));
        }
        res.json(self.body())
    }
}

impl From<diesel::result::Error> for ApiError {
    fn from(e: diesel::result::Error) -> Self {
        match e {
            diesel::result::Error::NotFound => Self::NotFound,
            // PostgreSQL refuses NUL in text (SQLSTATE 22021): a client's bad input, not a fault.
            diesel::result::Error::DatabaseError(_, info) if info.message().contains("0x00") => {
                Self::bad_request("invalid_text", "text must not contain NUL characters")
            }
            other => Self::Internal(anyhow::Error::new(other).context("database")),
        }
    }
}

impl From<diesel::r2d2::PoolError> for ApiError {
    fn from(e: diesel::r2d2::PoolError) -> Self {
        Self::Internal(anyhow::Error::new(e).context("database pool"))
    }
}

impl From<actix_web::error::BlockingError> for ApiError {
    fn from(e: actix_web::error::BlockingError) -> Self {
        Self::Internal(anyhow::anyhow!("blocking pool: {e}"))
    }
}

fn code_for_status(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "bad_request",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not_found",
        405 => "method_not_allowed",
        408 => "request_timeout",
        413 => "payload_too_large",
        414 => "uri_too_long",
        415 => "unsupported_media_type",
        429 => "rate_limited",
        431 => "headers_too_large",
        s if s >= 500 => "internal",
        _ => "error",
    }
}

/// Middleware that makes every failure speak the unified body: actix's own errors (payload
/// limits, unknown methods) are rebuilt as [`ApiError::Http`], and a panic in a handler becomes
/// a logged 500 instead of a dropped connection (CONTRACT §2: never a panic).
pub async fn unify(
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody + 'static>,
) -> Result<
    actix_web::dev::ServiceResponse<actix_web::body::EitherBody<impl actix_web::body::MessageBody>>,
    actix_web::Error,
> {
    use actix_web::dev::ServiceResponse;
    use futures_util::FutureExt;

    // No clone of the request before `next.call`: routing needs the only reference to it.
    let path = req.path().to_owned();
    match std::panic::AssertUnwindSafe(next.call(req)).catch_unwind().await {
        Ok(Ok(res)) => {
            use actix_web::body::BodySize;
            let status = res.status();
            let foreign = res.response().error().filter(|e| e.as_error::<ApiError>().is_none()).map(|e| e.to_string());
            // A failure without a body: actix's answer to a method a resource does not route
            // (405), found by Schemathesis (issue 24).
            let bare = status.as_u16() >= 400
                && res.response().error().is_none()
                && matches!(res.response().body().size(), BodySize::None | BodySize::Sized(0));
            let message = match foreign {
                Some(message) => message,
                None if bare => status.canonical_reason().unwrap_or("error").to_lowercase(),
                None => return Ok(res.map_into_left_body()),
            };
            let api = if status == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge
            } else {
                ApiError::Http { status, message }
            };
            let (http_req, _) = res.into_parts();
            Ok(ServiceResponse::new(http_req, api.error_response()).map_into_right_body())
        }
        Ok(Err(e)) if e.as_error::<ApiError>().is_some() => Err(e),
        Ok(Err(e)) => {
            Err(ApiError::Http { status: e.as_response_error().status_code(), message: e.to_string() }.into())
        }
        Err(_) => {
            tracing::error!(%path, "handler panicked");
            Err(ApiError::Internal(anyhow::anyhow!("handler panicked")).into())
        }
    }
}

/// True when a diesel error is a unique-key violation (used to turn races into 409s).
pub fn is_unique_violation(e: &diesel::result::Error) -> bool {
    matches!(e, diesel::result::Error::DatabaseError(diesel::result::DatabaseErrorKind::UniqueViolation, _))
}

/// Extractor error handlers: actix's own JSON, query, path and payload failures get the
/// unified body (CONTRACT §2) instead of actix's plain-text answers.
pub mod handlers {
    use actix_web::{HttpRequest, error};

    use super::ApiError;

    pub fn json(err: error::JsonPayloadError, _req: &HttpRequest) -> actix_web::Error {
        match err {
            error::JsonPayloadError::Overflow { .. } | error::JsonPayloadError::OverflowKnownLength { .. } => {
                ApiError::PayloadTooLarge.into()
            }
            error::JsonPayloadError::ContentType => {
                ApiError::bad_request("unsupported_content_type", "expected Content-Type: application/json").into()
            }
            error::JsonPayloadError::Deserialize(e) => ApiError::bad_request("invalid_json", e.to_string()).into(),
            error::JsonPayloadError::Payload(error::PayloadError::Overflow) => ApiError::PayloadTooLarge.into(),
            other => ApiError::bad_request("invalid_body", other.to_string()).into(),
        }
    }

    pub fn query(err: error::QueryPayloadError, _req: &HttpRequest) -> actix_web::Error {
        ApiError::bad_request("invalid_query", err.to_string()).into()
    }

    pub fn path(err: error::PathError, _req: &HttpRequest) -> actix_web::Error {
        ApiError::bad_request("invalid_path", err.to_string()).into()
    }

    pub fn form(err: error::UrlencodedError, _req: &HttpRequest) -> actix_web::Error {
        match err {
            error::UrlencodedError::Overflow { .. } => ApiError::PayloadTooLarge.into(),
            other => ApiError::bad_request("invalid_body", other.to_string()).into(),
        }
    }

    pub fn payload(err: error::PayloadError) -> actix_web::Error {
        match err {
            error::PayloadError::Overflow => ApiError::PayloadTooLarge.into(),
            other => ApiError::bad_request("invalid_body", other.to_string()).into(),
        }
    }
}
