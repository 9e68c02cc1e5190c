//! CORS for browser storefronts (CONTRACT §9): the origins of `CONFAB_CORS_ORIGINS`
//! (comma-separated) and the server's own public origin may call the API with credentials
//! (the `f.session` cookie) and the Fynd SDK's headers. Without the setting no CORS layer is
//! installed (same origin only).

use actix_cors::Cors;
use actix_web::http::{Method, header};

use crate::core::config::Config;

/// `scheme://host[:port]` of a URL, as browsers send it in `Origin`.
fn origin_of(url: &str) -> String {
    let url = url.trim().trim_end_matches('/');
    match url.split_once("://") {
        Some((scheme, rest)) => {
            format!("{}://{}", scheme.to_ascii_lowercase(), rest.split('/').next().unwrap_or("").to_ascii_lowercase())
        }
        None => url.to_ascii_lowercase(),
    }
}

pub fn enabled(config: &Config) -> bool {
    config.cors_origins.as_deref().is_some_and(|o| !o.trim().is_empty())
}

pub fn middleware(config: &Config) -> Cors {
    let mut allowed: Vec<String> =
        config.cors_origins.as_deref().unwrap_or("").split(',').map(origin_of).filter(|o| !o.is_empty()).collect();
    allowed.push(origin_of(&config.public_url));
    Cors::default()
        .allowed_origin_fn(move |origin, _| {
            origin.to_str().is_ok_and(|o| allowed.iter().any(|a| a.eq_ignore_ascii_case(o)))
        })
        .allowed_methods([Method::GET, Method::POST, Method::PUT, Method::PATCH, Method::DELETE, Method::OPTIONS])
        .allowed_headers([header::AUTHORIZATION, header::CONTENT_TYPE, header::ACCEPT])
        .allowed_header("x-fp-sdk-version")
        .allowed_header("x-fp-date")
        .allowed_header("x-fp-signature")
        .allowed_header("x-currency-code")
        .supports_credentials()
        .max_age(3600)
}

#[cfg(test)]
mod tests {
    #[test]
    fn origins_are_scheme_and_host() {
        assert_eq!(super::origin_of(" https://Shop.Example/path/ "), "https://shop.example");
        assert_eq!(super::origin_of("http://127.0.0.1:8080"), "http://127.0.0.1:8080");
    }
}
