//! Foundation accounts and tokens: CONTRACT §2 authentication, §3 sign-up/login, §5 refresh,
//! logout and me.

use serde_json::json;

use crate::{both_backends, helpers::*};

both_backends!(signup_login_me_refresh_logout, |app: TestApp| async move {
    let (status, body) = app
        .post(
            "/auth/signup",
            None,
            &json!({"email": "Madhawa@Example.com", "password": "s3cret-pass", "firstName": "madhawa",
                    "lastName": "samarawicrama", "phone": "+94 71 793 6775", "companyName": "Acme"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["firstName"], "madhawa");
    assert_eq!(body["lastName"], "samarawicrama");
    assert_eq!(body["phone"], "+94717936775");
    assert!(body["userId"].is_i64());
    assert_eq!(body.as_object().unwrap().len(), 4, "exactly the seed's fields: {body}");

    // An open sign-up is pending until its e-mail is confirmed (README "Security").
    let verified = app.verify_signup("madhawa@example.com").await;
    assert_eq!(verified, json!({"userId": body["userId"], "email": "madhawa@example.com", "emailVerified": true}));
    let login = app.login("madhawa@example.com", "s3cret-pass").await;
    let access = login["accessToken"].as_str().unwrap();
    assert!(login["refreshToken"].is_string());
    assert!(login["expires"].as_i64().unwrap() > chrono::Utc::now().timestamp_millis());
    assert_eq!(login["user"]["email"], "madhawa@example.com");
    assert_eq!(login["user"]["role"], "admin");
    assert_eq!(login["user"]["userId"], body["userId"]);

    let (status, me) = app.get("/auth/me", Some(access)).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["userId"], body["userId"]);
    assert_eq!(me["id"], body["userId"]);
    assert_eq!(me["role"], "admin");
    assert_eq!(me["companyId"], login["user"]["companyId"]);
    assert_ne!(me["companyId"], 1, "a new company, not the bootstrap one");

    let (status, refreshed) =
        app.post("/auth/token-refresh", None, &json!({"refreshToken": login["refreshToken"]})).await;
    assert_eq!(status, 200, "{refreshed}");
    let access2 = refreshed["accessToken"].as_str().unwrap();
    assert_ne!(refreshed["refreshToken"], login["refreshToken"]);
    assert_eq!(app.get("/auth/me", Some(access2)).await.0, 200);

    let (status, out) = app.post("/logout", Some(access2), &json!({})).await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["success"], true);
    let (status, body) = app.get("/auth/me", Some(access2)).await;
    assert_error(status, &body, 401, "session_revoked");
    // The first access token belongs to the same session.
    assert_eq!(app.get("/auth/me", Some(access)).await.0, 401);
    // And so does the rotated refresh token.
    let (status, _) = app.post("/auth/token-refresh", None, &json!({"refreshToken": refreshed["refreshToken"]})).await;
    assert_eq!(status, 401);
});

both_backends!(reused_refresh_token_revokes_the_session, |app: TestApp| async move {
    let login = app.login(&app.admin_email.clone(), ADMIN_PASSWORD).await;
    let first = login["refreshToken"].clone();
    let (status, second) = app.post("/auth/token-refresh", None, &json!({"refreshToken": first})).await;
    assert_eq!(status, 200);
    let access = second["accessToken"].as_str().unwrap();
    assert_eq!(app.get("/auth/me", Some(access)).await.0, 200);

    // Replaying the rotated-away token is theft: the whole session dies.
    let (status, body) = app.post("/auth/token-refresh", None, &json!({"refreshToken": first})).await;
    assert_error(status, &body, 401, "token_reused");
    let (status, body) = app.get("/auth/me", Some(access)).await;
    assert_error(status, &body, 401, "session_revoked");
    let (status, _) = app.post("/auth/token-refresh", None, &json!({"refreshToken": second["refreshToken"]})).await;
    assert_eq!(status, 401, "the newest refresh token of the session is dead too");
});

both_backends!(wrong_password_and_unknown_email_look_the_same, |app: TestApp| async move {
    let (s1, wrong) = app.post("/auth/login", None, &json!({"email": app.admin_email, "password": "nope-nope"})).await;
    let (s2, unknown) =
        app.post("/auth/login", None, &json!({"email": "ghost@nowhere.test", "password": "nope-nope"})).await;
    assert_error(s1, &wrong, 401, "invalid_credentials");
    assert_eq!((s1, &wrong), (s2, &unknown));
});

both_backends!(signup_rules, |app: TestApp| async move {
    let base = json!({"email": "x@y.test", "password": "password-1", "firstName": "A", "lastName": "B", "phone": "+14155550101"});
    let with = |k: &str, v: serde_json::Value| {
        let mut b = base.clone();
        b[k] = v;
        b
    };
    let (status, body) = app.post("/auth/signup", None, &with("password", json!("short"))).await;
    assert_error(status, &body, 400, "validation_failed");
    assert!(body["fields"]["password"].is_string());
    let (status, body) = app.post("/auth/signup", None, &with("password", json!("x@y.test"))).await;
    assert_error(status, &body, 400, "validation_failed");
    let (status, body) = app.post("/auth/signup", None, &with("phone", json!("12"))).await;
    assert_error(status, &body, 400, "validation_failed");
    assert!(body["fields"]["phone"].is_string());
    let (status, body) = app.post("/auth/signup", None, &with("email", json!("not-an-email"))).await;
    assert_error(status, &body, 400, "validation_failed");
    assert!(body["fields"]["email"].is_string());
    assert_eq!(app.post("/auth/signup", None, &base).await.0, 201);
    // One verification mail per address per 30 s; nothing is created by the refused sign-up.
    let (status, body) = app.post("/auth/signup", None, &with("email", json!("X@Y.test"))).await;
    assert_error(status, &body, 429, "rate_limited");
    // A confirmed address is taken.
    app.verify_signup("x@y.test").await;
    let (status, body) = app.post("/auth/signup", None, &with("email", json!("X@Y.test"))).await;
    assert_error(status, &body, 409, "email_taken");
});

#[actix_web::test]
async fn closed_signup_needs_an_invite() {
    let app = TestApp::spawn_with(Backend::Sqlite, |c| c.open_signup = false).await.unwrap();
    let (status, body) = app
        .post(
            "/auth/signup",
            None,
            &json!({"email": "x@y.test", "password": "password-1", "firstName": "A", "lastName": "B", "phone": "+14155550101"}),
        )
        .await;
    assert_error(status, &body, 422, "signup_closed");
}

both_backends!(bad_tokens_are_401_with_the_unified_body, |app: TestApp| async move {
    let (status, body) = app.get("/auth/me", None).await;
    assert_error(status, &body, 401, "unauthorized");
    let (status, body) = app.get("/auth/me", Some("a.b.c")).await;
    assert_error(status, &body, 401, "invalid_token");
    let token = app.admin_token().await;
    let mut tampered = token.clone();
    tampered.pop();
    tampered.push(if token.ends_with('A') { 'B' } else { 'A' });
    let (status, body) = app.get("/auth/me", Some(&tampered)).await;
    assert_error(status, &body, 401, "invalid_token");
});

#[actix_web::test]
async fn jwks_verifies_the_access_token() {
    let app = TestApp::spawn(Backend::Sqlite).await.unwrap();
    let token = app.admin_token().await;
    let (status, jwks) = app.get("/.well-known/jwks.json", None).await;
    assert_eq!(status, 200);
    let header = jsonwebtoken::decode_header(&token).unwrap();
    assert_eq!(header.alg, jsonwebtoken::Algorithm::EdDSA);
    let key = jwks["keys"].as_array().unwrap().iter().find(|k| k["kid"] == header.kid.clone().unwrap()).unwrap();
    let decoding = jsonwebtoken::DecodingKey::from_ed_components(key["x"].as_str().unwrap()).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
    validation.set_issuer(&["confab"]);
    let data = jsonwebtoken::decode::<serde_json::Value>(&token, &decoding, &validation).unwrap();
    assert_eq!(data.claims["role"], "admin");
    let lifetime = data.claims["exp"].as_i64().unwrap() - data.claims["iat"].as_i64().unwrap();
    assert_eq!(lifetime, 15 * 60, "access tokens last 15 minutes");
}
