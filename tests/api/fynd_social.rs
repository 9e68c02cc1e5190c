//! Storefront logins that do not take a password (auth.md §2.3): `login/token` (a session
//! handed over by the platform API) and the social logins, verified against local mocks of
//! Facebook's Graph API, Google's token-info endpoint and Apple's JWKS.

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use actix_web::{App, HttpResponse, HttpServer, web};
use aws_lc_rs::{
    rand::SystemRandom,
    signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair},
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use reqwest::Method;
use serde_json::{Value, json};
use sha2::Sha256;

use crate::{
    both_backends,
    fynd_platform::{app_bearer, company_of, cookie_value, create_app, platform, storefront},
    helpers::*,
};

const AUTH: &str = "/service/application/user/authentication/v1.0";
const FB_APP: &str = "fb-app";
const FB_SECRET: &str = "fb-secret";
/// The Google client the token-info mock accepts for `g-good` (e-mail `google@shop.test`).
pub const GOOGLE_CLIENT: &str = "g-client.apps.googleusercontent.com";
const APPLE_BUNDLE: &str = "com.shop.ios";

both_backends!(login_token_hands_over_a_platform_session_once, |app: TestApp| async move {
    let admin = app.admin_token().await;
    let company = company_of(&app, &admin).await;
    let (app_id, token) = create_app(&app, &admin, "handover").await;
    let bearer = app_bearer(app_id, &token);
    let (status, created) = app
        .post(&platform(company, app_id, "/customers"), Some(&admin), &json!({"phone_number": "+14155550142"}))
        .await;
    assert_eq!(status, 200, "{created}");
    let id = created["user"]["_id"].as_str().unwrap().to_owned();
    let (status, s) =
        app.post(&platform(company, app_id, "/customers/session"), Some(&admin), &json!({"user_id": id})).await;
    assert_eq!(status, 200, "{s}");
    let handed = s["cookie"]["f.session"].as_str().unwrap().to_owned();

    let login = |t: String| {
        let (app, bearer) = (&app, &bearer);
        async move {
            storefront(app, Method::POST, &format!("{AUTH}/login/token"), bearer, None, Some(&json!({"token": t})))
                .await
        }
    };
    let (status, body, set_cookie) = login(handed.clone()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user"]["_id"], id.as_str());
    let own = cookie_value(&set_cookie.expect("a session cookie"));
    assert_ne!(own, handed, "the browser gets a new session");
    let (status, me, _) = storefront(&app, Method::GET, &format!("{AUTH}/session"), &bearer, Some(&own), None).await;
    assert_eq!(status, 200, "{me}");
    // Single use: the handed-over session ended with the exchange.
    let (status, body, _) = login(handed.clone()).await;
    assert_error(status, &body, 401, "invalid_token");
    let (status, _, _) = storefront(&app, Method::GET, &format!("{AUTH}/session"), &bearer, Some(&handed), None).await;
    assert_eq!(status, 401);
    // Forged, and another application's.
    let (status, body, _) = login(format!("{}x", &own[..own.len() - 1])).await;
    assert_error(status, &body, 401, "invalid_token");
    let (other_id, other_token) = create_app(&app, &admin, "elsewhere").await;
    let (status, body, _) = storefront(
        &app,
        Method::POST,
        &format!("{AUTH}/login/token"),
        &app_bearer(other_id, &other_token),
        None,
        Some(&json!({"token": own})),
    )
    .await;
    assert_error(status, &body, 401, "invalid_token");
    let (status, body, _) =
        storefront(&app, Method::POST, &format!("{AUTH}/login/token"), &bearer, None, Some(&json!({"token": 5}))).await;
    assert_error(status, &body, 400, "validation_failed");
});

/// The identity providers' mocks: what they accept is fixed by the constants above (also used
/// by the attack tests of `security_takeover`).
pub struct Providers {
    pub base: String,
    /// How many times Apple's key set was fetched.
    pub apple_fetches: Arc<AtomicUsize>,
}

fn apple_jwk(public: &[u8]) -> Value {
    // An uncompressed P-256 point: 0x04 ‖ X ‖ Y.
    json!({"kty": "EC", "crv": "P-256", "kid": "apple-1", "alg": "ES256", "use": "sig",
           "x": URL_SAFE_NO_PAD.encode(&public[1..33]), "y": URL_SAFE_NO_PAD.encode(&public[33..65])})
}

async fn graph_debug(q: web::Query<Vec<(String, String)>>) -> HttpResponse {
    let get = |k: &str| q.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str()).unwrap_or("");
    if get("access_token") != format!("{FB_APP}|{FB_SECRET}") {
        return HttpResponse::BadRequest().json(json!({"error": {"message": "bad app token", "code": 190}}));
    }
    let valid = get("input_token") == "fb-good";
    HttpResponse::Ok().json(json!({"data": {"app_id": FB_APP, "is_valid": valid, "user_id": "fb-1001"}}))
}

async fn graph_me(q: web::Query<Vec<(String, String)>>) -> HttpResponse {
    let get = |k: &str| q.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str()).unwrap_or("");
    let mut mac = Hmac::<Sha256>::new_from_slice(FB_SECRET.as_bytes()).unwrap();
    mac.update(get("access_token").as_bytes());
    if get("access_token") != "fb-good" || get("appsecret_proof") != hex::encode(mac.finalize().into_bytes()) {
        return HttpResponse::BadRequest().json(json!({"error": {"message": "invalid token", "code": 190}}));
    }
    HttpResponse::Ok().json(json!({"id": "fb-1001", "email": "fb@shop.test", "first_name": "Fab", "last_name": "Book"}))
}

async fn tokeninfo(q: web::Query<Vec<(String, String)>>) -> HttpResponse {
    let token = q.iter().find(|(n, _)| n == "access_token").map(|(_, v)| v.as_str()).unwrap_or("");
    let aud = if token == "g-other-app" { "someone-else" } else { GOOGLE_CLIENT };
    match token {
        "g-good" | "g-other-app" => HttpResponse::Ok().json(json!({"azp": aud, "aud": aud, "sub": "g-2002",
            "email": "google@shop.test", "email_verified": "true", "expires_in": "3599"})),
        _ => HttpResponse::BadRequest().json(json!({"error": "invalid_token"})),
    }
}

impl Providers {
    pub async fn start(jwks: Value) -> Providers {
        let jwks = Arc::new(jwks);
        let apple_fetches = Arc::new(AtomicUsize::new(0));
        let fetches = apple_fetches.clone();
        let server = HttpServer::new(move || {
            let (jwks, fetches) = (jwks.clone(), fetches.clone());
            App::new()
                .route("/graph/debug_token", web::get().to(graph_debug))
                .route("/graph/me", web::get().to(graph_me))
                .route("/tokeninfo", web::get().to(tokeninfo))
                .route(
                    "/apple/keys",
                    web::get().to(move || {
                        fetches.fetch_add(1, Ordering::SeqCst);
                        let jwks = jwks.clone();
                        async move { HttpResponse::Ok().json(&*jwks) }
                    }),
                )
        })
        .workers(1)
        .bind("127.0.0.1:0")
        .unwrap();
        let addr = server.addrs()[0];
        actix_web::rt::spawn(server.run());
        Providers { base: format!("http://{addr}"), apple_fetches }
    }
}

/// An Apple identity token signed with `key`.
fn apple_token(key_pkcs8: &[u8], claims: Value) -> String {
    apple_token_kid(key_pkcs8, claims, "apple-1")
}

fn apple_token_kid(key_pkcs8: &[u8], claims: Value, kid: &str) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some(kid.into());
    jsonwebtoken::encode(&header, &claims, &jsonwebtoken::EncodingKey::from_ec_der(key_pkcs8)).unwrap()
}

fn now_secs() -> i64 {
    chrono::Utc::now().timestamp()
}

async fn social_logins(backend: Backend) {
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
    let rogue = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let providers = Providers::start(json!({"keys": [apple_jwk(pair.public_key().as_ref())]})).await;
    let base = providers.base.clone();
    let Some(app) = TestApp::spawn_with(backend, |cfg| {
        cfg.facebook_graph_url = format!("{base}/graph");
        cfg.google_tokeninfo_url = format!("{base}/tokeninfo");
        cfg.apple_keys_url = format!("{base}/apple/keys");
    })
    .await
    else {
        return eprintln!("skipped: CONFAB_TEST_DATABASE_URL is not set");
    };
    let admin = app.admin_token().await;
    let company = company_of(&app, &admin).await;
    let (app_id, token) = create_app(&app, &admin, "social").await;
    let bearer = app_bearer(app_id, &token);
    let post = |path: &'static str, body: Value| {
        let (app, bearer) = (&app, &bearer);
        async move { storefront(app, Method::POST, &format!("{AUTH}/login/{path}"), bearer, None, Some(&body)).await }
    };
    let fb = |t: &str| {
        json!({"is_signed_in": true, "oauth2": {"access_token": t, "expiry": 0},
                             "profile": {"id": "spoofed", "email": "victim@shop.test", "first_name": "X"}})
    };

    // Off by default.
    let (status, body, _) = post("facebook-token", fb("fb-good")).await;
    assert_error(status, &body, 403, "facebook_login_disabled");
    let (status, body) = app
        .post(
            &platform(company, app_id, "/platform/config"),
            Some(&admin),
            &json!({"social": {"facebook": true, "google": true, "apple": true},
                    "social_tokens": {"facebook": {"app_id": FB_APP, "app_secret": FB_SECRET},
                                      "google": {"app_id": GOOGLE_CLIENT},
                                      "apple": {"app_id": APPLE_BUNDLE}}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    // Facebook: the body's profile is ignored; Graph's identity and e-mail are used.
    let (status, body, cookie) = post("facebook-token", fb("fb-good")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user_exists"], false);
    assert_eq!(body["user"]["emails"][0]["email"], "fb@shop.test");
    assert_eq!(body["user"]["emails"][0]["verified"], true);
    assert_eq!(body["user"]["first_name"], "Fab");
    let fb_user = body["user"]["_id"].clone();
    let cookie = cookie_value(&cookie.expect("a session cookie"));
    let (status, _, _) = storefront(&app, Method::GET, &format!("{AUTH}/session"), &bearer, Some(&cookie), None).await;
    assert_eq!(status, 200);
    let (status, body, _) = post("facebook-token", fb("fb-good")).await;
    assert_eq!((status, body["user_exists"].clone(), body["user"]["_id"].clone()), (200, json!(true), fb_user.clone()));
    let (status, body, _) = post("facebook-token", fb("fb-stolen")).await;
    assert_error(status, &body, 401, "invalid_social_token");

    // Google (web, Android and iOS routes): the audience must be this application's client.
    let g = |t: &str| json!({"oauth2": {"access_token": t}, "profile": {"first_name": "Gee"}});
    let (status, body, _) = post("google-token", g("g-good")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user_exists"], false);
    assert_eq!(body["user"]["first_name"], "Gee", "names come from the profile when the provider has none");
    let google_user = body["user"]["_id"].clone();
    for route in ["google-android", "google-ios"] {
        let (status, body, _) = post(route, g("g-good")).await;
        assert_eq!((status, body["user"]["_id"].clone()), (200, google_user.clone()), "{route}: {body}");
    }
    let (status, body, _) = post("google-token", g("g-other-app")).await;
    assert_error(status, &body, 401, "invalid_social_token");
    let (status, body, _) = post("google-token", g("g-expired-or-unknown")).await;
    assert_error(status, &body, 401, "invalid_social_token");

    // Apple: an identity token signed by Apple's key, for this bundle, naming the user.
    let claims = |aud: &str, sub: &str, exp: i64| {
        json!({"iss": "https://appleid.apple.com", "aud": aud, "sub": sub,
        "exp": exp, "iat": now_secs(), "email": "google@shop.test", "email_verified": "true"})
    };
    let apple = |token: String, user: &str| json!({"user_identifier": user, "oauth": {"identity_token": token}});
    let good = apple_token(pkcs8.as_ref(), claims(APPLE_BUNDLE, "apple-3003", now_secs() + 600));
    let (status, body, _) = post("apple-ios", apple(good.clone(), "apple-3003")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user_exists"], true, "same verified e-mail as the Google login: one account");
    assert_eq!(body["user"]["_id"], google_user);
    let rejected = [
        apple(good.clone(), "someone-else"),
        apple(apple_token(rogue.as_ref(), claims(APPLE_BUNDLE, "apple-3003", now_secs() + 600)), "apple-3003"),
        apple(apple_token(pkcs8.as_ref(), claims("com.other.app", "apple-3003", now_secs() + 600)), "apple-3003"),
        apple(apple_token(pkcs8.as_ref(), claims(APPLE_BUNDLE, "apple-3003", now_secs() - 600)), "apple-3003"),
        apple("not-a-jwt".into(), "apple-3003"),
    ];
    for body in rejected {
        let (status, answer, _) = post("apple-ios", body).await;
        assert_error(status, &answer, 401, "invalid_social_token");
    }
    assert_eq!(providers.apple_fetches.load(Ordering::SeqCst), 1, "Apple's keys are fetched once, then kept");
    // A key the kept set lacks (Apple may have rotated): the set is fetched again.
    let unknown = apple_token_kid(pkcs8.as_ref(), claims(APPLE_BUNDLE, "apple-3003", now_secs() + 600), "apple-2");
    let (status, answer, _) = post("apple-ios", apple(unknown, "apple-3003")).await;
    assert_error(status, &answer, 401, "invalid_social_token");
    assert_eq!(providers.apple_fetches.load(Ordering::SeqCst), 2, "an unknown key id fetches the set again");

    // A blocked account cannot log in socially either.
    let (status, body) = app
        .put(
            &platform(company, app_id, "/customers/activation"),
            Some(&admin),
            &json!({"user_id": [fb_user.clone()], "status": false, "reason": "fraud"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body, _) = post("facebook-token", fb("fb-good")).await;
    assert_error(status, &body, 401, "invalid_credentials");
}

#[actix_web::test]
async fn social_logins_sqlite() {
    social_logins(Backend::Sqlite).await;
}

#[actix_web::test]
async fn social_logins_postgres() {
    social_logins(Backend::Postgres).await;
}
