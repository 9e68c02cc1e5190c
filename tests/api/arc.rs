//! ARC authentication family (CONTRACT §5, seed 003): auth clients, the code flow, login-token,
//! change-password, keycloak logout, audit, brute-force lockout and rate limits.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use diesel::prelude::*;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::{both_backends, helpers::*};

/// Creates an auth client as `token`'s admin; returns (clientId, clientSecret).
pub async fn new_client(app: &TestApp, token: &str, extra: Value) -> (String, Option<String>) {
    let client_id = format!("web-{}", confab::core::crypto::random_hex_id());
    let mut body = json!({"clientId": client_id, "redirectUrl": "https://app.example.com/callback"});
    body.as_object_mut().unwrap().extend(extra.as_object().cloned().unwrap_or_default());
    let (status, created) = app.post("/auth-clients", Some(token), &body).await;
    assert_eq!(status, 201, "{created}");
    (client_id, created["clientSecret"].as_str().map(str::to_owned))
}

async fn code_for(app: &TestApp, client: &str, secret: &str, extra: Value) -> (u16, Value) {
    let mut body = json!({"client_id": client, "client_secret": secret, "username": app.admin_email,
                          "password": ADMIN_PASSWORD});
    body.as_object_mut().unwrap().extend(extra.as_object().cloned().unwrap_or_default());
    app.post("/auth/login", None, &body).await
}

fn s256(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

async fn audit_kinds(app: &TestApp, token: &str) -> Vec<String> {
    let (status, page) = app.get("/auth/audit?limit=100", Some(token)).await;
    assert_eq!(status, 200, "{page}");
    page["data"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap().to_owned()).collect()
}

both_backends!(auth_clients_crud_and_tenancy, |app: TestApp| async move {
    let admin = app.admin_token().await;
    let (status, created) = app
        .post(
            "/auth-clients",
            Some(&admin),
            &json!({"clientId": "webapp", "clientSecret": "a-very-long-client-secret", "secret": "ignored",
                    "redirectUrl": "https://app.example.com/cb", "accessTokenExpiration": 600,
                    "refreshTokenExpiration": 86400, "authCodeExpiration": 30}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["clientId"], "webapp");
    assert_eq!(created["clientSecret"], "a-very-long-client-secret", "shown once, on create");
    assert_eq!(created["accessTokenExpiration"], 600);
    assert_eq!(created["authCodeExpiration"], 30);
    assert_eq!(created["redirectUrl"], "https://app.example.com/cb");
    let id = created["id"].as_i64().unwrap();

    let (status, list) = app.get("/auth-clients", Some(&admin)).await;
    assert_eq!(status, 200);
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert!(list[0].get("clientSecret").is_none(), "never shown again: {list}");
    let (status, one) = app.get(&format!("/auth-clients/{id}"), Some(&admin)).await;
    assert_eq!(status, 200);
    assert!(one.get("clientSecret").is_none());

    // The secret is stored hashed.
    let stored: Option<String> = app
        .state
        .db
        .run(|c| {
            use confab::core::db::schema::auth_clients::dsl::*;
            Ok(auth_clients.filter(client_id.eq("webapp")).select(secret_hash).first(c)?)
        })
        .await
        .unwrap();
    assert!(stored.unwrap().starts_with("$argon2id$"));

    let (status, body) = app.post("/auth-clients", Some(&admin), &json!({"clientId": "webapp"})).await;
    assert_error(status, &body, 409, "client_id_taken");
    let (status, body) =
        app.post("/auth-clients", Some(&admin), &json!({"clientId": "x", "authCodeExpiration": 3600})).await;
    assert_error(status, &body, 400, "validation_failed");
    assert!(body["fields"]["authCodeExpiration"].is_string());
    let (status, body) = app.post("/auth-clients", Some(&admin), &json!({"clientId": 5})).await;
    assert_error(status, &body, 400, "validation_failed");

    let (status, patched) =
        app.patch(&format!("/auth-clients/{id}"), Some(&admin), &json!({"accessTokenExpiration": 300})).await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched["accessTokenExpiration"], 300);
    assert!(patched.get("clientSecret").is_none());

    // Another company sees nothing of it.
    let (other, _) = app.new_company("Other").await;
    let (status, body) = app.get(&format!("/auth-clients/{id}"), Some(&other)).await;
    assert_error(status, &body, 404, "not_found");
    let (status, body) = app.delete(&format!("/auth-clients/{id}"), Some(&other)).await;
    assert_error(status, &body, 404, "not_found");
    assert_eq!(app.get("/auth-clients", Some(&other)).await.1, json!([]));
    let (status, body) = app.get("/auth-clients", None).await;
    assert_error(status, &body, 401, "unauthorized");

    let (status, _) = app.delete(&format!("/auth-clients/{id}"), Some(&admin)).await;
    assert_eq!(status, 204);
    let (status, body) = app.get(&format!("/auth-clients/{id}"), Some(&admin)).await;
    assert_error(status, &body, 404, "not_found");
});

both_backends!(code_flow_single_use_and_reuse_revokes, |app: TestApp| async move {
    let admin = app.admin_token().await;
    let (client, secret) = new_client(&app, &admin, json!({})).await;
    let secret = secret.unwrap();

    let (status, body) = code_for(&app, &client, &secret, json!({})).await;
    assert_eq!(status, 200, "{body}");
    let code = body["code"].as_str().unwrap().to_owned();
    assert_eq!(body.as_object().unwrap().len(), 1);

    let (status, tokens) =
        app.post("/auth/token", None, &json!({"code": code, "clientId": client, "client_secret": secret})).await;
    assert_eq!(status, 200, "{tokens}");
    let access = tokens["accessToken"].as_str().unwrap().to_owned();
    assert!(tokens["refreshToken"].is_string());
    assert!(tokens["expires"].as_i64().unwrap() > chrono::Utc::now().timestamp_millis());
    let (status, me) = app.get("/auth/me", Some(&access)).await;
    assert_eq!(status, 200);
    assert_eq!(me["email"], app.admin_email);

    // Second use: 401, and the session the first use opened is revoked.
    let (status, body) =
        app.post("/auth/token", None, &json!({"code": code, "clientId": client, "client_secret": secret})).await;
    assert_error(status, &body, 401, "invalid_grant");
    let (status, body) = app.get("/auth/me", Some(&access)).await;
    assert_error(status, &body, 401, "session_revoked");
    let (status, _) = app.post("/auth/token-refresh", None, &json!({"refreshToken": tokens["refreshToken"]})).await;
    assert_eq!(status, 401);

    // A code is bound to its client.
    let (other_client, other_secret) = new_client(&app, &admin, json!({})).await;
    let (_, body) = code_for(&app, &client, &secret, json!({})).await;
    let (status, body) = app
        .post(
            "/auth/token",
            None,
            &json!({"code": body["code"], "clientId": other_client, "client_secret": other_secret}),
        )
        .await;
    assert_error(status, &body, 401, "invalid_grant");

    // Unknown codes, wrong client secrets, unknown clients.
    let (status, body) =
        app.post("/auth/token", None, &json!({"code": "nope", "clientId": client, "client_secret": secret})).await;
    assert_error(status, &body, 401, "invalid_grant");
    let (status, body) = code_for(&app, &client, "wrong-secret-wrong-secret", json!({})).await;
    assert_error(status, &body, 401, "invalid_client");
    let (status, body) = code_for(&app, "no-such-client", &secret, json!({})).await;
    assert_error(status, &body, 401, "invalid_client");
    let (status, body) = app
        .post(
            "/auth/login",
            None,
            &json!({"client_id": client, "client_secret": secret, "username": app.admin_email, "password": "wrong-password"}),
        )
        .await;
    assert_error(status, &body, 401, "invalid_credentials");
    let (status, body) = app.post("/auth/login", None, &json!({"client_id": client, "username": 3})).await;
    assert_error(status, &body, 400, "validation_failed");

    // Expired codes fail (the code's lifetime is moved into the past).
    let (_, body) = code_for(&app, &client, &secret, json!({})).await;
    app.state
        .db
        .write(|c| {
            use confab::core::db::schema::auth_codes::dsl::*;
            diesel::update(auth_codes.filter(used_at.is_null()))
                .set(expires_at.eq(confab::core::types::now() - chrono::Duration::seconds(1)))
                .execute(c)?;
            Ok(())
        })
        .await
        .unwrap();
    let (status, body) = app
        .post("/auth/token", None, &json!({"code": body["code"], "clientId": client, "client_secret": secret}))
        .await;
    assert_error(status, &body, 401, "invalid_grant");

    // The messaging-family login on the same path still works.
    app.login(&app.admin_email.clone(), ADMIN_PASSWORD).await;

    let kinds = audit_kinds(&app, &admin).await;
    assert!(kinds.contains(&"auth_code_reuse".to_owned()), "{kinds:?}");
});

both_backends!(code_flow_with_pkce_and_public_clients, |app: TestApp| async move {
    let admin = app.admin_token().await;
    let (client, secret) = new_client(&app, &admin, json!({})).await;
    let secret = secret.unwrap();
    let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    let challenge = s256(verifier);

    let (_, body) = code_for(&app, &client, &secret, json!({"code_challenge": challenge})).await;
    let (status, body) = app
        .post(
            "/auth/token",
            None,
            &json!({"code": body["code"], "clientId": client, "client_secret": secret, "code_verifier": "wrong-verifier"}),
        )
        .await;
    assert_error(status, &body, 401, "invalid_grant");
    let (_, body) = code_for(&app, &client, &secret, json!({"code_challenge": challenge})).await;
    let (status, body) = app
        .post("/auth/token", None, &json!({"code": body["code"], "clientId": client, "client_secret": secret}))
        .await;
    assert_error(status, &body, 401, "invalid_grant");
    let (_, body) = code_for(&app, &client, &secret, json!({"code_challenge": challenge})).await;
    let code = body["code"].clone();
    let (status, tokens) = app
        .post(
            "/auth/token",
            None,
            &json!({"code": code, "clientId": client, "client_secret": secret, "code_verifier": verifier}),
        )
        .await;
    assert_eq!(status, 200, "{tokens}");
    let (status, body) =
        code_for(&app, &client, &secret, json!({"code_challenge": challenge, "code_challenge_method": "plain"})).await;
    assert_error(status, &body, 400, "validation_failed");

    // A public client has no secret and must use PKCE.
    let (public, none) = new_client(&app, &admin, json!({"clientType": "public"})).await;
    assert!(none.is_none());
    let (status, body) = code_for(&app, &public, "", json!({})).await;
    assert_error(status, &body, 400, "pkce_required");
    let (status, body) = code_for(&app, &public, "", json!({"code_challenge": challenge})).await;
    assert_eq!(status, 200, "{body}");
    let (status, tokens) = app
        .post("/auth/token", None, &json!({"code": body["code"], "clientId": public, "code_verifier": verifier}))
        .await;
    assert_eq!(status, 200, "{tokens}");
    // Public clients get no direct tokens.
    let (status, body) = app
        .post(
            "/auth/login-token",
            None,
            &json!({"client_id": public, "username": app.admin_email, "password": ADMIN_PASSWORD}),
        )
        .await;
    assert_error(status, &body, 401, "unauthorized_client");
});

both_backends!(client_logs_in_only_its_company_users, |app: TestApp| async move {
    let admin = app.admin_token().await;
    let (client, secret) = new_client(&app, &admin, json!({})).await;
    let (_, login) = app.new_company("Elsewhere").await;
    let email = login["user"]["email"].as_str().unwrap();
    let (status, body) = app
        .post(
            "/auth/login",
            None,
            &json!({"client_id": client, "client_secret": secret, "username": email, "password": "password-123"}),
        )
        .await;
    assert_error(status, &body, 401, "invalid_credentials");
});

both_backends!(login_token_change_password_and_keycloak_logout, |app: TestApp| async move {
    let admin = app.admin_token().await;
    let (client, secret) = new_client(&app, &admin, json!({"accessTokenExpiration": 120})).await;
    let creds = json!({"client_id": client, "client_secret": secret, "username": app.admin_email,
                       "password": ADMIN_PASSWORD});
    let (status, first) = app.post("/auth/login-token", None, &creds).await;
    assert_eq!(status, 200, "{first}");
    let expires = first["expires"].as_i64().unwrap() - chrono::Utc::now().timestamp_millis();
    assert!(expires <= 121_000 && expires > 100_000, "client's access lifetime: {expires}");
    // Refreshing keeps the client's lifetime.
    let (status, refreshed) =
        app.post("/auth/token-refresh", None, &json!({"refreshToken": first["refreshToken"]})).await;
    assert_eq!(status, 200, "{refreshed}");
    let expires = refreshed["expires"].as_i64().unwrap() - chrono::Utc::now().timestamp_millis();
    assert!(expires <= 121_000 && expires > 100_000, "client's access lifetime after refresh: {expires}");
    let first = json!({"accessToken": refreshed["accessToken"], "refreshToken": refreshed["refreshToken"]});
    let (_, second) = app.post("/auth/login-token", None, &creds).await;
    let (a1, a2) = (first["accessToken"].as_str().unwrap(), second["accessToken"].as_str().unwrap());

    let (status, body) = app
        .patch("/auth/change-password", Some(a1), &json!({"password": "new-password-1", "oldPassword": "wrong-one"}))
        .await;
    assert_error(status, &body, 401, "invalid_credentials");
    let (status, body) = app.patch("/auth/change-password", Some(a1), &json!({"password": "new-password-1"})).await;
    assert_error(status, &body, 400, "validation_failed");
    let (status, body) = app
        .patch("/auth/change-password", Some(a1), &json!({"password": "short", "oldPassword": ADMIN_PASSWORD}))
        .await;
    assert_error(status, &body, 400, "validation_failed");
    let (status, body) = app
        .patch(
            "/auth/change-password",
            Some(a1),
            &json!({"password": "new-password-1", "oldPassword": ADMIN_PASSWORD, "username": app.admin_email,
                    "refreshToken": first["refreshToken"]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["success"], true);
    // Other sessions are revoked, this one lives on.
    let (status, body) = app.get("/auth/me", Some(a2)).await;
    assert_error(status, &body, 401, "session_revoked");
    assert_eq!(app.get("/auth/me", Some(&admin)).await.0, 401);
    assert_eq!(app.get("/auth/me", Some(a1)).await.0, 200);
    let (status, body) = app.post("/auth/login-token", None, &creds).await;
    assert_error(status, &body, 401, "invalid_credentials");
    let mut new_creds = creds.clone();
    new_creds["password"] = json!("new-password-1");
    assert_eq!(app.post("/auth/login-token", None, &new_creds).await.0, 200);

    let (status, out) = app.post("/keycloak/logout", Some(a1), &json!({"refreshToken": first["refreshToken"]})).await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["success"], true);
    assert_eq!(app.get("/auth/me", Some(a1)).await.0, 401);

    // A client without the password grant gets no direct tokens.
    let fresh = app.login(&app.admin_email.clone(), "new-password-1").await["accessToken"].as_str().unwrap().to_owned();
    let (code_only, code_secret) = new_client(&app, &fresh, json!({"grants": ["authorization_code"]})).await;
    let (status, body) = app
        .post(
            "/auth/login-token",
            None,
            &json!({"client_id": code_only, "client_secret": code_secret, "username": app.admin_email,
                    "password": "new-password-1"}),
        )
        .await;
    assert_error(status, &body, 401, "unauthorized_client");

    let kinds = audit_kinds(&app, &fresh).await;
    for kind in ["login", "password_changed", "password_change_failed", "logout", "login_failed"] {
        assert!(kinds.contains(&kind.to_owned()), "{kind} in {kinds:?}");
    }
});

both_backends!(audit_is_paged_and_admin_only, |app: TestApp| async move {
    let admin = app.admin_token().await;
    for _ in 0..3 {
        let (status, _) =
            app.post("/auth/login", None, &json!({"email": app.admin_email, "password": "wrong-password"})).await;
        assert_eq!(status, 401);
    }
    let (status, page) = app.get("/auth/audit?page=1&limit=2&kind=login_failed", Some(&admin)).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["totalCount"], 3);
    assert_eq!(page["page"], 1);
    assert_eq!(page["limit"], 2);
    assert_eq!(page["data"].as_array().unwrap().len(), 2);
    assert_eq!(page["data"][0]["kind"], "login_failed");
    assert!(page["data"][0]["at"].as_str().unwrap().ends_with('Z'));
    let (_, page2) = app.get("/auth/audit?page=2&limit=2&kind=login_failed", Some(&admin)).await;
    assert_eq!(page2["data"].as_array().unwrap().len(), 1);
    let (status, body) = app.get("/auth/audit?limit=500", Some(&admin)).await;
    assert_error(status, &body, 400, "validation_failed");
    // Another company sees none of these.
    let (other, _) = app.new_company("Other").await;
    let (_, page) = app.get("/auth/audit?kind=login_failed", Some(&other)).await;
    assert_eq!(page["totalCount"], 0);
    let (status, body) = app.get("/auth/audit", None).await;
    assert_error(status, &body, 401, "unauthorized");
});

async fn wrong_login(app: &TestApp, password: &str) -> (u16, Value) {
    app.post("/auth/login", None, &json!({"email": app.admin_email, "password": password})).await
}

// Successes never use up an address: many people behind one NAT can keep logging in. The
// address's counter is set just under its limit, then two good logins must both pass and leave
// it where it was.
both_backends!(successful_logins_do_not_use_up_the_address, |app: TestApp| async move {
    let set = |n: i32| {
        let db = app.state.db.clone();
        async move {
            db.write(move |c| {
                use confab::core::db::schema::login_failures::dsl::*;
                diesel::insert_into(login_failures)
                    .values((
                        key.eq("ip:127.0.0.1"),
                        count.eq(n),
                        lock_count.eq(0),
                        updated_at.eq(confab::core::types::now()),
                    ))
                    .execute(c)?;
                Ok(())
            })
            .await
            .unwrap()
        }
    };
    set(confab::core::auth::lockout::IP_LIMIT - 1).await;
    for _ in 0..2 {
        let (status, body) = wrong_login(&app, ADMIN_PASSWORD).await;
        assert_eq!(status, 200, "{body}");
    }
    let left: i32 = app
        .state
        .db
        .run(|c| {
            use confab::core::db::schema::login_failures::dsl::*;
            Ok(login_failures.filter(key.eq("ip:127.0.0.1")).select(count).first(c)?)
        })
        .await
        .unwrap();
    assert_eq!(left, confab::core::auth::lockout::IP_LIMIT - 1);
});

both_backends!(lockout_looks_like_a_wrong_password_and_backs_off, |app: TestApp| async move {
    let admin = app.admin_token().await;
    let (status, wrong) = wrong_login(&app, "wrong-password").await;
    assert_error(status, &wrong, 401, "invalid_credentials");
    for _ in 0..4 {
        assert_eq!(wrong_login(&app, "wrong-password").await.0, 401);
    }
    // Locked: even the right password gets exactly the wrong-password answer.
    let (status, locked) = wrong_login(&app, ADMIN_PASSWORD).await;
    assert_eq!(status, 401);
    assert_eq!(locked, wrong);
    // The ARC login is locked too (same account).
    let (client, secret) = new_client(&app, &admin, json!({})).await;
    let (status, body) = code_for(&app, &client, &secret.unwrap(), json!({})).await;
    assert_eq!((status, &body), (401, &wrong));

    let lock = |app: &TestApp| {
        let db = app.state.db.clone();
        async move {
            db.run(|c| {
                use confab::core::db::schema::login_failures::dsl::*;
                Ok(login_failures
                    .filter(key.like("acct:%"))
                    .select((lock_count, locked_until))
                    .first::<(i32, Option<chrono::NaiveDateTime>)>(c)?)
            })
            .await
            .unwrap()
        }
    };
    let (count, until) = lock(&app).await;
    assert_eq!(count, 1);
    let secs = (until.unwrap() - confab::core::types::now()).num_seconds();
    assert!((55..=60).contains(&secs), "first lock is 1 minute: {secs}");

    // Let the lock run out; five more failures lock for twice as long.
    let expire = |app: &TestApp| {
        let db = app.state.db.clone();
        async move {
            db.write(|c| {
                use confab::core::db::schema::login_failures::dsl::*;
                diesel::update(login_failures)
                    .set(locked_until.eq(confab::core::types::now() - chrono::Duration::seconds(1)))
                    .execute(c)?;
                Ok(())
            })
            .await
            .unwrap()
        }
    };
    expire(&app).await;
    for _ in 0..5 {
        assert_eq!(wrong_login(&app, "wrong-password").await.0, 401);
    }
    assert_eq!(wrong_login(&app, ADMIN_PASSWORD).await.0, 401);
    let (count, until) = lock(&app).await;
    assert_eq!(count, 2);
    let secs = (until.unwrap() - confab::core::types::now()).num_seconds();
    assert!((115..=120).contains(&secs), "second lock is 2 minutes: {secs}");

    // After the lock the right password works and clears the counter.
    expire(&app).await;
    app.login(&app.admin_email.clone(), ADMIN_PASSWORD).await;
    let kinds = audit_kinds(&app, &admin).await;
    assert!(kinds.contains(&"account_locked".to_owned()) && kinds.contains(&"login_locked".to_owned()), "{kinds:?}");
});

both_backends!(parallel_wrong_passwords_never_exceed_the_limit, |app: TestApp| async move {
    let admin = app.admin_token().await;
    let attempts = (0..20).map(|_| wrong_login(&app, "wrong-password"));
    let results = futures_util::future::join_all(attempts).await;
    assert!(results.iter().all(|(s, b)| *s == 401 && b["code"] == "invalid_credentials"));
    // Every checked password wrote `login_failed`; refused attempts wrote `login_locked`.
    let (_, checked) = app.get("/auth/audit?kind=login_failed&limit=1", Some(&admin)).await;
    let (_, refused) = app.get("/auth/audit?kind=login_locked&limit=1", Some(&admin)).await;
    assert_eq!(checked["totalCount"], 5, "passwords checked");
    assert_eq!(refused["totalCount"], 15);
    assert_eq!(wrong_login(&app, ADMIN_PASSWORD).await.0, 401, "locked");
});

mod auth_routes_are_rate_limited_per_ip {
    use super::*;

    #[actix_web::test]
    async fn sqlite() {
        rate_limit_scenario(Backend::Sqlite).await;
    }

    #[actix_web::test]
    async fn postgres() {
        rate_limit_scenario(Backend::Postgres).await;
    }
}

async fn rate_limit_scenario(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, |c| c.auth_rate_per_minute = 3).await else {
        eprintln!("skipped: CONFAB_TEST_DATABASE_URL is not set");
        return;
    };
    for _ in 0..3 {
        assert_eq!(wrong_login(&app, "wrong-password").await.0, 401);
    }
    let res = app
        .client
        .post(app.url("/auth/login"))
        .json(&json!({"email": app.admin_email, "password": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 429);
    let retry: u64 = res.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    let (status, body) = into_json(res).await;
    assert_error(status, &body, 429, "rate_limited");
    // Other routes are not limited.
    assert_eq!(app.get("/healthz", None).await.0, 200);
}

/// CONTRACT §8: with Redis, the auth rate limit is one budget for all nodes of a deployment.
#[actix_web::test]
async fn rate_limit_is_shared_by_nodes_through_redis() {
    let (Some(redis), Some(_)) = (redis_url(), pg_base_url()) else {
        eprintln!("skipped: needs CONFAB_TEST_REDIS_URL and CONFAB_TEST_DATABASE_URL");
        return;
    };
    let a = TestApp::spawn_with(Backend::Postgres, |c| {
        c.redis_url = Some(redis.clone());
        c.auth_rate_per_minute = 3;
    })
    .await
    .unwrap();
    let b = TestApp::start(Backend::Postgres, a.config.clone(), a.dir.clone(), a.pg.clone()).await;
    // The budget is per minute: do not straddle a minute boundary.
    let into_minute = chrono::Utc::now().timestamp() % 60;
    if into_minute > 50 {
        actix_web::rt::time::sleep(std::time::Duration::from_secs((61 - into_minute) as u64)).await;
    }
    assert_eq!(wrong_login(&a, "wrong-password").await.0, 401);
    assert_eq!(wrong_login(&b, "wrong-password").await.0, 401);
    assert_eq!(wrong_login(&a, "wrong-password").await.0, 401);
    let (status, body) = wrong_login(&b, "wrong-password").await;
    assert_error(status, &body, 429, "rate_limited");
    // Another deployment (its own data key) on the same Redis has its own budget.
    let other = TestApp::spawn_with(Backend::Postgres, |c| {
        c.redis_url = Some(redis.clone());
        c.auth_rate_per_minute = 3;
    })
    .await
    .unwrap();
    assert_eq!(wrong_login(&other, "wrong-password").await.0, 401);
}

both_backends!(imported_bcrypt_password_is_rehashed_on_login, |app: TestApp| async move {
    let legacy = bcrypt::hash("arc-era-password", 4).unwrap();
    let email = app.admin_email.clone();
    let set = legacy.clone();
    app.state
        .db
        .write(move |c| {
            use confab::core::db::schema::users::dsl::*;
            diesel::update(users.filter(role.eq("admin"))).set(password_hash.eq(Some(set))).execute(c)?;
            Ok(())
        })
        .await
        .unwrap();
    let (status, body) = wrong_login(&app, "not-the-password").await;
    assert_error(status, &body, 401, "invalid_credentials");
    app.login(&email, "arc-era-password").await;
    let stored: Vec<Option<String>> = app
        .state
        .db
        .run(|c| {
            use confab::core::db::schema::users::dsl::*;
            Ok(users.filter(role.eq("admin")).select(password_hash).load(c)?)
        })
        .await
        .unwrap();
    assert!(stored.iter().all(|h| h.as_deref().unwrap().starts_with("$argon2id$")), "{stored:?}");
    app.login(&email, "arc-era-password").await;
});

both_backends!(arc_routes_are_in_the_openapi_document, |app: TestApp| async move {
    let (status, doc) = app.get("/openapi.json", None).await;
    assert_eq!(status, 200);
    for path in [
        "/auth/login",
        "/auth/token",
        "/auth/login-token",
        "/auth/token-refresh",
        "/auth/change-password",
        "/auth/send-otp",
        "/auth/verify-otp",
        "/auth/create-qr-code",
        "/auth/check-qr-code",
        "/auth/totp/confirm",
        "/auth/forget-password",
        "/auth/verify-reset-password-link",
        "/auth/reset-password",
        "/auth/sign-up/create-token",
        "/auth/sign-up/verify-token",
        "/auth/sign-up/create-user",
        "/auth/audit",
        "/auth-clients",
        "/auth-clients/{id}",
        "/keycloak/logout",
        "/logout",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path} missing from /openapi.json");
    }
});
