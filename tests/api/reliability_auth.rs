//! Issue 24 item 5 (README "Reliability"): attacks on authentication that the security suites
//! (security_*.rs, arc.rs, accounts.rs) do not already make: races on single-use secrets
//! (refresh tokens, authorization codes, one-time codes) and forged access tokens. Each test
//! prints what it tried and how many attempts got through (always 0 or exactly the one
//! legitimate winner).

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use diesel::prelude::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use crate::{
    arc::new_client,
    both_backends,
    helpers::*,
    security_logins::{next_message, six_digits},
};

/// How many copies of one secret race each other.
const RACERS: usize = 16;

/// (statuses of the winners, bodies of the losers).
fn split(results: Vec<(u16, Value)>) -> (Vec<Value>, Vec<(u16, Value)>) {
    let (won, lost): (Vec<_>, Vec<_>) = results.into_iter().partition(|(s, _)| *s == 200);
    (won.into_iter().map(|(_, b)| b).collect(), lost)
}

// N parallel refreshes with one refresh token: exactly one is rotated; every other use is a
// replay (401 `token_reused` or `session_revoked`), and, a replay being theft, the session
// ends, the winner's new tokens with it.
both_backends!(refresh_token_replay_race_has_exactly_one_winner, |app: TestApp| async move {
    let login = app.login(&app.admin_email.clone(), ADMIN_PASSWORD).await;
    let body = json!({"refreshToken": login["refreshToken"]});
    let races = (0..RACERS).map(|_| app.post("/auth/token-refresh", None, &body));
    let (won, lost) = split(futures_util::future::join_all(races).await);
    assert_eq!(won.len(), 1, "exactly one refresh wins: {won:?} {lost:?}");
    for (status, body) in &lost {
        assert_eq!(*status, 401, "{body}");
        assert!(matches!(body["code"].as_str(), Some("token_reused" | "session_revoked" | "invalid_token")), "{body}");
    }
    let (status, body) = app.get("/auth/me", won[0]["accessToken"].as_str()).await;
    assert_error(status, &body, 401, "session_revoked");
    let (status, _) = app.post("/auth/token-refresh", None, &json!({"refreshToken": won[0]["refreshToken"]})).await;
    assert_eq!(status, 401, "the winner's refresh token died with the session");
    println!(
        "refresh replay race ({:?}): {RACERS} parallel refreshes, 1 won, {} refused, session revoked",
        app.backend,
        lost.len()
    );
});

// N parallel exchanges of one authorization code: exactly one gets tokens, and the reuse
// revokes the session that one opened (RFC 6749 §4.1.2).
both_backends!(auth_code_double_spend_race_has_exactly_one_winner, |app: TestApp| async move {
    let admin = app.admin_token().await;
    let (client, secret) = new_client(&app, &admin, json!({})).await;
    let secret = secret.unwrap();
    let creds = json!({"client_id": client, "client_secret": secret, "username": app.admin_email,
                       "password": ADMIN_PASSWORD});
    let (status, body) = app.post("/auth/login", None, &creds).await;
    assert_eq!(status, 200, "{body}");
    let exchange = json!({"code": body["code"], "clientId": client, "client_secret": secret});
    let races = (0..RACERS).map(|_| app.post("/auth/token", None, &exchange));
    let (won, lost) = split(futures_util::future::join_all(races).await);
    assert_eq!(won.len(), 1, "exactly one exchange wins: {won:?} {lost:?}");
    for (status, body) in &lost {
        assert_error(*status, body, 401, "invalid_grant");
    }
    let (status, body) = app.get("/auth/me", won[0]["accessToken"].as_str()).await;
    assert_error(status, &body, 401, "session_revoked");
    println!("auth-code double spend ({:?}): {RACERS} parallel exchanges, 1 won, {} refused", app.backend, lost.len());
});

// 40 parallel wrong guesses at one e-mailed code: at most 5 are checked, the rest refused
// unchecked; the right code is then refused too (the code's attempts and the address's
// brute-force counter are both spent), and works again only after the lock.
both_backends!(parallel_otp_brute_force_is_capped, |app: TestApp| async move {
    let admin = app.admin_token().await;
    let (client, secret) = new_client(&app, &admin, json!({})).await;
    let victim = app.admin_email.clone();
    let send = json!({"client_id": client, "client_secret": secret, "key": victim});
    let seen: Vec<String> = outbox(&app, "mail").into_iter().map(|m| m.text).collect();
    assert_eq!(app.post("/auth/send-otp", None, &send).await.0, 200);
    let code = six_digits(&next_message(&app, "mail", &victim, &seen).await);
    // 40 distinct wrong codes, none the right one.
    let guesses: Vec<String> =
        (0..41u32).map(|i| format!("{:06}", 100_000 + i * 7919)).filter(|g| *g != code).take(40).collect();
    let bodies: Vec<Value> = guesses.iter().map(|g| json!({"key": victim, "otp": g})).collect();
    let results = futures_util::future::join_all(bodies.iter().map(|b| app.post("/auth/verify-otp", None, b))).await;
    for (status, body) in &results {
        assert_error(*status, body, 401, "invalid_otp");
    }
    let (status, body) = app.post("/auth/verify-otp", None, &json!({"key": victim, "otp": code})).await;
    assert_error(status, &body, 401, "invalid_otp");
    let checked = app
        .state
        .db
        .run(|c| {
            use confab::core::db::schema::otp_challenges::dsl::*;
            Ok(otp_challenges.select(attempts).load::<i32>(c)?)
        })
        .await
        .unwrap();
    assert!(checked.iter().all(|a| *a <= 5), "no code was checked more than 5 times: {checked:?}");
    expire_lockouts(&app).await;
    skip_resend_window(&app).await;
    let seen: Vec<String> = outbox(&app, "mail").into_iter().map(|m| m.text).collect();
    assert_eq!(app.post("/auth/send-otp", None, &send).await.0, 200);
    let code = six_digits(&next_message(&app, "mail", &victim, &seen).await);
    let (status, body) = app.post("/auth/verify-otp", None, &json!({"key": victim, "otp": code})).await;
    assert_eq!(status, 200, "a fresh code after the lock works: {body}");
    println!(
        "OTP brute force ({:?}): {} parallel guesses, attempts per code {checked:?} (limit 5), 0 accepted",
        app.backend,
        guesses.len()
    );
});

/// The server's active signing key as a test would steal it: (kid, private key).
async fn signing_key(app: &TestApp) -> (String, EncodingKey) {
    let rows =
        app.state
            .db
            .run(|c| {
                use confab::core::db::schema::signing_keys::dsl::*;
                Ok(signing_keys
                    .filter(retired_at.is_null())
                    .order(created_at.desc())
                    .select((kid, private_key))
                    .load::<(String, String)>(c)?)
            })
            .await
            .unwrap();
    let (kid, sealed) = rows.into_iter().next().expect("a signing key");
    let der = app.state.data_key.decrypt(&sealed).unwrap();
    (kid, EncodingKey::from_ed_der(&der))
}

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(v.to_string())
}

fn hs256(header: &Value, claims: &Value, secret: &[u8]) -> String {
    use hmac::Mac;
    let input = format!("{}.{}", b64(header), b64(claims));
    let mut mac = <hmac::SimpleHmac<sha2::Sha256> as Mac>::new_from_slice(secret).unwrap();
    mac.update(input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()))
}

// Forged and out-of-date access tokens, every one refused with 401 on a route that needs a
// token, a WebSocket ticket and an admin route alike. The real key signs the time attacks, so
// only the claims are wrong.
both_backends!(forged_and_out_of_date_access_tokens_are_refused, |app: TestApp| async move {
    let login = app.login(&app.admin_email.clone(), ADMIN_PASSWORD).await;
    let good = login["accessToken"].as_str().unwrap().to_owned();
    let (status, _) = app.get("/auth/me", Some(&good)).await;
    assert_eq!(status, 200);
    let mut parts = good.split('.');
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts.next().unwrap()).unwrap()).unwrap();
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts.next().unwrap()).unwrap()).unwrap();
    let (kid, key) = signing_key(&app).await;
    assert_eq!(header["kid"], kid.as_str());
    let (_, jwks) = app.get("/.well-known/jwks.json", None).await;
    let x = jwks["keys"].as_array().unwrap().iter().find(|k| k["kid"] == kid.as_str()).unwrap()["x"]
        .as_str()
        .unwrap()
        .to_owned();
    let public_raw = URL_SAFE_NO_PAD.decode(&x).unwrap();

    let now = chrono::Utc::now().timestamp();
    let sign = |claims: &Value, kid: Option<&str>| {
        let mut h = Header::new(Algorithm::EdDSA);
        h.kid = kid.map(str::to_owned);
        jsonwebtoken::encode(&h, claims, &key).unwrap()
    };
    let with = |patch: Value| {
        let mut c = claims.clone();
        c.as_object_mut().unwrap().extend(patch.as_object().unwrap().clone());
        c
    };
    // Sanity: the stolen key does sign tokens the server accepts, so every refusal below is
    // for the one thing each token gets wrong.
    let (status, body) = app.get("/auth/me", Some(&sign(&claims, Some(&kid)))).await;
    assert_eq!(status, 200, "{body}");

    let escalated = with(json!({"role": "admin", "cid": claims["cid"].as_i64().unwrap() + 1}));
    let alg_none = |h: Value| format!("{}.{}.", b64(&h), b64(&escalated));
    let mut swapped_payload = good.split('.').map(str::to_owned).collect::<Vec<_>>();
    swapped_payload[1] = b64(&escalated);
    let mut attacks: Vec<(&str, String)> = vec![
        ("alg none", alg_none(json!({"alg": "none", "typ": "JWT", "kid": kid}))),
        ("alg None", alg_none(json!({"alg": "None", "typ": "JWT", "kid": kid}))),
        ("alg none, no kid", alg_none(json!({"alg": "none", "typ": "JWT"}))),
        (
            "alg none with the real signature",
            format!(
                "{}.{}.{}",
                b64(&json!({"alg": "none", "kid": kid})),
                b64(&claims),
                good.rsplit('.').next().unwrap()
            ),
        ),
        (
            "HS256 keyed with the raw public key",
            hs256(&json!({"alg": "HS256", "typ": "JWT", "kid": kid}), &escalated, &public_raw),
        ),
        (
            "HS256 keyed with the JWKS x",
            hs256(&json!({"alg": "HS256", "typ": "JWT", "kid": kid}), &escalated, x.as_bytes()),
        ),
        (
            "HS256 keyed with the JWKS document",
            hs256(&json!({"alg": "HS256", "kid": kid}), &escalated, jwks.to_string().as_bytes()),
        ),
        (
            "HS512 header, keyed with the public key",
            hs256(&json!({"alg": "HS512", "kid": kid}), &escalated, &public_raw),
        ),
        ("payload swapped under the real signature", swapped_payload.join(".")),
        ("expired an hour ago", sign(&with(json!({"iat": now - 7200, "exp": now - 3600})), Some(&kid))),
        ("expired 60 s ago (past the leeway)", sign(&with(json!({"exp": now - 60})), Some(&kid))),
        ("not valid for another hour (nbf)", sign(&with(json!({"nbf": now + 3600})), Some(&kid))),
        ("issued in the future (iat)", sign(&with(json!({"iat": now + 3600, "exp": now + 4500})), Some(&kid))),
        (
            "no exp",
            sign(
                &{
                    let mut c = claims.clone();
                    c.as_object_mut().unwrap().remove("exp");
                    c
                },
                Some(&kid),
            ),
        ),
        ("another issuer", sign(&with(json!({"iss": "not-confab"})), Some(&kid))),
        ("no kid", sign(&claims, None)),
        ("kid of no key", sign(&claims, Some("0000000000000000"))),
        ("kid path traversal", sign(&claims, Some("../../../../etc/passwd"))),
        ("kid SQL", sign(&claims, Some("' OR '1'='1"))),
        ("kid 10 KB", sign(&claims, Some(&"k".repeat(10_000)))),
        ("kid empty", sign(&claims, Some(""))),
        ("kid with NUL", sign(&claims, Some("a\0b"))),
        ("three dots", "a.b.c.d".to_owned()),
        ("empty", String::new()),
    ];
    // A second real key: a token signed by one key but naming the other's kid.
    let data_key = app.state.data_key.clone();
    app.state
        .db
        .write(move |c| {
            confab::core::auth::jwt::insert_new_key(c, &data_key).map_err(confab::core::error::ApiError::Internal)
        })
        .await
        .unwrap();
    let (new_kid, new_key) = signing_key(&app).await;
    assert_ne!(new_kid, kid);
    let mut h = Header::new(Algorithm::EdDSA);
    h.kid = Some(kid.clone());
    attacks.push(("signed by another real key, naming this kid", jsonwebtoken::encode(&h, &claims, &new_key).unwrap()));
    h.kid = Some(new_kid.clone());
    attacks.push(("signed by this key, naming another real kid", jsonwebtoken::encode(&h, &claims, &key).unwrap()));

    let mut refused = 0;
    for (what, token) in &attacks {
        for path in ["/auth/me", "/agent", "/ws/ticket"] {
            let (status, body) = if path == "/ws/ticket" {
                app.post(path, Some(token), &json!({})).await
            } else {
                app.get(path, Some(token)).await
            };
            assert_eq!(status, 401, "{what} on {path}: {body}");
            assert_eq!(body["statusCode"], 401, "{what}: unified body {body}");
            refused += 1;
        }
    }
    // Within the leeway (5 s) a just-expired token still works: the bound is tight, not loose.
    let just_expired = with(json!({"exp": chrono::Utc::now().timestamp() - 1}));
    let (status, body) = app.get("/auth/me", Some(&sign(&just_expired, Some(&kid)))).await;
    assert_eq!(status, 200, "{body}");
    println!("forged tokens ({:?}): {} kinds × 3 routes, {refused} refused, 0 accepted", app.backend, attacks.len());
});
