//! No secrets in logs (issue 17): the request span every log line of a request carries shows
//! the path and query with the values of secret-looking parameters replaced, so WebSocket
//! tickets, signed media links (`sig`), reset and verification tokens, OAuth `code` and
//! `state` never reach the log.

use std::borrow::Cow;

use actix_web::{
    Error, HttpMessage,
    body::MessageBody,
    dev::{ServiceRequest, ServiceResponse},
};
use tracing::{Span, field::Empty};
use tracing_actix_web::{DefaultRootSpanBuilder, RequestId, RootSpanBuilder};

/// What a redacted value is logged as.
pub const REDACTED: &str = "[redacted]";

/// Parameter names whose values are secrets wherever they appear.
const SECRET_NAMES: [&str; 6] = ["code", "state", "ticket", "otp", "key", "hash"];
/// Any name containing one of these is a secret too (`token`, `verify_token`,
/// `hub.verify_token`, `client_secret`, `sig`, `signature`, `apikey`, …).
const SECRET_PARTS: [&str; 7] = ["token", "secret", "password", "sig", "ticket", "apikey", "api_key"];

fn is_secret(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    SECRET_NAMES.contains(&name.as_str()) || SECRET_PARTS.iter().any(|part| name.contains(part))
}

/// `path?query` with the value of every secret parameter replaced by [`REDACTED`]; names are
/// compared after percent-decoding, other parameters stay as they were sent.
pub fn redact_target(target: &str) -> Cow<'_, str> {
    let Some((path, query)) = target.split_once('?') else { return Cow::Borrowed(target) };
    let mut changed = false;
    let pairs: Vec<Cow<'_, str>> = query
        .split('&')
        .map(|pair| {
            let raw_name = pair.split_once('=').map_or(pair, |(n, _)| n);
            let name = url::form_urlencoded::parse(raw_name.as_bytes()).next().map(|(n, _)| n).unwrap_or_default();
            if pair.contains('=') && is_secret(&name) {
                changed = true;
                Cow::Owned(format!("{raw_name}={REDACTED}"))
            } else {
                Cow::Borrowed(pair)
            }
        })
        .collect();
    if changed { Cow::Owned(format!("{path}?{}", pairs.join("&"))) } else { Cow::Borrowed(target) }
}

/// An outbound call's error as logged and stored (`outbox.last_error`): reqwest's text names
/// the URL, whose query may carry a signature (a provider's media link, a presigned URL), so
/// the URL is shown redacted.
pub fn outbound_error(e: reqwest::Error) -> String {
    let url = e.url().map(|u| redact_target(u.as_str()).into_owned());
    let e = e.without_url();
    match url {
        Some(url) => format!("{e} for url ({url})"),
        None => e.to_string(),
    }
}

/// The request span of tracing-actix-web's default builder (same name and fields, so log
/// consumers see the usual shape), with `http.target` redacted and `http.client_ip` the TCP
/// peer (README: client addresses are never taken from forgeable headers).
///
/// `http.route` and `otel.name` are recorded when the request ends, from the route the router
/// matched: the span starts before routing, and asking for the route there matches the path
/// against every route of the app a second time (a regex per pattern, tens of microseconds per
/// request; issue 20). So a log line written while the handler runs carries the method and
/// the (redacted) target but not yet the route; a span exporter sees the route on the span.
pub struct RedactedRootSpan;

impl RootSpanBuilder for RedactedRootSpan {
    fn on_request_start(request: &ServiceRequest) -> Span {
        let target = request.uri().path_and_query().map_or("", |p| p.as_str());
        let user_agent = request.headers().get("User-Agent").and_then(|h| h.to_str().ok()).unwrap_or("");
        let client_ip = request.peer_addr().map(|a| a.ip().to_string()).unwrap_or_default();
        let request_id = request.extensions().get::<RequestId>().copied();
        let method = request.method().as_str();
        tracing::info_span!(
            "HTTP request",
            http.method = %method,
            http.route = Empty,
            http.flavor = ?request.version(),
            http.client_ip = %client_ip,
            http.user_agent = %user_agent,
            http.target = %redact_target(target),
            http.status_code = Empty,
            otel.name = Empty,
            otel.kind = "server",
            otel.status_code = Empty,
            request_id = %request_id.map(|id| id.to_string()).unwrap_or_default(),
            exception.message = Empty,
            exception.details = Empty,
        )
    }

    fn on_request_end<B: MessageBody>(span: Span, outcome: &Result<ServiceResponse<B>, Error>) {
        if let Ok(res) = outcome {
            // Routed by now: actix-web finds the pattern by the matched resource's index.
            let req = res.request();
            let route = req.match_pattern().unwrap_or_else(|| "default".to_owned());
            span.record("otel.name", tracing::field::display(format_args!("{} {route}", req.method())));
            span.record("http.route", tracing::field::display(route));
        }
        DefaultRootSpanBuilder::on_request_end(span, outcome);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_parameters_are_redacted() {
        for (raw, want) in [
            ("/ws?ticket=abc", "/ws?ticket=[redacted]"),
            ("/media/7?exp=1700000000&sig=deadbeef", "/media/7?exp=1700000000&sig=[redacted]"),
            ("/auth/verify-reset-password-link?token=t0k", "/auth/verify-reset-password-link?token=[redacted]"),
            (
                "/auth/google-auth-redirect?code=c&state=s",
                "/auth/google-auth-redirect?code=[redacted]&state=[redacted]",
            ),
            (
                "/webhooks/whatsapp?hub.mode=subscribe&hub.verify_token=v&hub.challenge=42",
                "/webhooks/whatsapp?hub.mode=subscribe&hub.verify_token=[redacted]&hub.challenge=42",
            ),
            ("/x?client_secret=s&page=2", "/x?client_secret=[redacted]&page=2"),
            ("/x?%74icket=abc", "/x?%74icket=[redacted]"),
            ("/x?Ticket=abc&TICKET=def", "/x?Ticket=[redacted]&TICKET=[redacted]"),
        ] {
            assert_eq!(redact_target(raw), want, "{raw}");
        }
    }

    #[actix_web::test]
    async fn outbound_errors_show_the_url_redacted() {
        let url = "http://127.0.0.1:1/attachments/?mid=7&hash=SIGNED&X-Amz-Signature=abc";
        let e = reqwest::Client::new().get(url).send().await.expect_err("nothing listens on port 1");
        assert!(e.to_string().contains("SIGNED"), "reqwest names the URL: {e}");
        let text = outbound_error(e);
        assert!(!text.contains("SIGNED") && !text.contains("abc"), "{text}");
        assert!(text.contains("mid=7&hash=[redacted]&X-Amz-Signature=[redacted]"), "{text}");
    }

    #[test]
    fn other_targets_are_unchanged() {
        for raw in ["/conversation/conversation-page-list?page=2&limit=5&q=ada", "/healthz", "/x?flag", "/x?"] {
            assert!(matches!(redact_target(raw), Cow::Borrowed(_)), "{raw}");
            assert_eq!(redact_target(raw), raw);
        }
    }
}
