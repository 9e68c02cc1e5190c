//! ARC OTP, authenticator apps (TOTP) with recovery codes, password reset and the sign-up
//! token flow (CONTRACT §5). Codes and links are read from the outbox files.

use std::time::Duration;

use diesel::prelude::*;
use serde_json::{Value, json};
use totp_rs::{Algorithm, Secret, TOTP};

use crate::{arc::new_client, both_backends, helpers::*};

/// Texts of the outbox messages (mail or sms) to `to`, oldest first.
fn outbox_to(app: &TestApp, kind: &str, to: &str) -> Vec<String> {
    outbox(app, kind).into_iter().filter(|m| m.to.contains(to)).map(|m| m.text).collect()
}

/// Waits (up to 10 s) for message number `n` (0-based) to `to`.
async fn nth_message(app: &TestApp, kind: &str, to: &str, n: usize) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(m) = outbox_to(app, kind, to).get(n) {
            return m.clone();
        }
        assert!(std::time::Instant::now() < deadline, "no {kind} #{n} to {to}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn code_in(text: &str) -> String {
    let at = text.find("code is ").expect("a code") + "code is ".len();
    text[at..at + 6].to_owned()
}

fn token_in(text: &str) -> String {
    let at = text.find("Token: ").expect("a token") + "Token: ".len();
    text[at..].split_whitespace().next().unwrap().to_owned()
}

both_backends!(otp_by_email_limits_and_single_use, |app: TestApp| async move {
    let admin = app.admin_token().await;
    let (client, secret) = new_client(&app, &admin, json!({})).await;
    let send = json!({"client_id": client, "client_secret": secret, "key": app.admin_email});
    let (status, sent) = app.post("/auth/send-otp", None, &send).await;
    assert_eq!(status, 200, "{sent}");
    let code = code_in(&nth_message(&app, "mail", &app.admin_email, 0).await);

    // Resend is throttled.
    let (status, body) = app.post("/auth/send-otp", None, &send).await;
    assert_error(status, &body, 429, "rate_limited");

    // Five wrong answers use up the code: the right one no longer works.
    let wrong = if code == "000000" { "111111" } else { "000000" };
    for _ in 0..5 {
        let (status, body) = app.post("/auth/verify-otp", None, &json!({"key": app.admin_email, "otp": wrong})).await;
        assert_error(status, &body, 401, "invalid_otp");
    }
    let (status, _) = app.post("/auth/verify-otp", None, &json!({"key": app.admin_email, "otp": code})).await;
    assert_eq!(status, 401, "attempts exhausted");

    // The five failures also locked the address's codes: a new code is refused until the lock
    // expires (README "Security").
    skip_resend_window(&app).await;
    assert_eq!(app.post("/auth/send-otp", None, &send).await.0, 200);
    let code = code_in(&nth_message(&app, "mail", &app.admin_email, 1).await);
    let verify = json!({"key": app.admin_email, "otp": code, "clientId": client});
    let (status, body) = app.post("/auth/verify-otp", None, &verify).await;
    assert_error(status, &body, 401, "invalid_otp");
    expire_lockouts(&app).await;

    // Then the new code works once and gives a code for /auth/token.
    let (status, body) = app.post("/auth/verify-otp", None, &verify).await;
    assert_eq!(status, 200, "{body}");
    let (status, tokens) = app
        .post("/auth/token", None, &json!({"code": body["code"], "clientId": client, "client_secret": secret}))
        .await;
    assert_eq!(status, 200, "{tokens}");
    let (status, body) = app.post("/auth/verify-otp", None, &verify).await;
    assert_error(status, &body, 401, "invalid_otp");

    // Expired codes fail.
    skip_resend_window(&app).await;
    assert_eq!(app.post("/auth/send-otp", None, &send).await.0, 200);
    let code = code_in(&nth_message(&app, "mail", &app.admin_email, 2).await);
    app.state
        .db
        .write(|c| {
            use confab::core::db::schema::otp_challenges::dsl::*;
            diesel::update(otp_challenges)
                .set(expires_at.eq(confab::core::types::now() - chrono::Duration::seconds(1)))
                .execute(c)?;
            Ok(())
        })
        .await
        .unwrap();
    let (status, _) = app.post("/auth/verify-otp", None, &json!({"key": app.admin_email, "otp": code})).await;
    assert_eq!(status, 401);

    // Unknown accounts: the same answer, the same throttle, no message.
    let nobody = json!({"client_id": client, "client_secret": secret, "key": "nobody@example.com"});
    let (status, same) = app.post("/auth/send-otp", None, &nobody).await;
    assert_eq!((status, &same), (200, &sent));
    let (status, body) = app.post("/auth/send-otp", None, &nobody).await;
    assert_error(status, &body, 429, "rate_limited");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(outbox_to(&app, "mail", "nobody@example.com").is_empty());

    // The code is hashed at rest.
    let stored: Vec<String> = app
        .state
        .db
        .run(|c| {
            use confab::core::db::schema::otp_challenges::dsl::*;
            Ok(otp_challenges.select(code_hash).load(c)?)
        })
        .await
        .unwrap();
    assert!(stored.iter().all(|h| h.len() == 64 && !h.contains(&code)));
});

both_backends!(otp_by_sms, |app: TestApp| async move {
    let (admin, login) = app.new_company("Texting").await;
    let (client, secret) = new_client(&app, &admin, json!({})).await;
    let (status, _) = app
        .post("/auth/send-otp", None, &json!({"client_id": client, "client_secret": secret, "key": "+1 415 555 0100"}))
        .await;
    assert_eq!(status, 200);
    let code = code_in(&nth_message(&app, "sms", "+14155550100", 0).await);
    let (status, body) = app.post("/auth/verify-otp", None, &json!({"key": "+14155550100", "otp": code})).await;
    assert_eq!(status, 200, "{body}");
    let (_, tokens) = app
        .post("/auth/token", None, &json!({"code": body["code"], "clientId": client, "client_secret": secret}))
        .await;
    let (_, me) = app.get("/auth/me", tokens["accessToken"].as_str()).await;
    assert_eq!(me["userId"], login["user"]["userId"]);
});

pub fn totp_for(secret: &str) -> TOTP {
    let bytes = Secret::Encoded(secret.to_owned()).to_bytes().unwrap();
    TOTP::new(Algorithm::SHA1, 6, 1, 30, bytes, Some("confab".into()), "x".into()).unwrap()
}

fn step_now() -> u64 {
    chrono::Utc::now().timestamp() as u64 / 30
}

both_backends!(totp_enrolment_mfa_login_and_recovery_codes, |app: TestApp| async move {
    let admin = app.admin_token().await;
    let (client, secret) = new_client(&app, &admin, json!({})).await;
    let (status, check) = app.get("/auth/check-qr-code", Some(&admin)).await;
    assert_eq!((status, &check), (200, &json!({"isGenerated": false})));

    let (status, qr) = app.post("/auth/create-qr-code", Some(&admin), &json!({})).await;
    assert_eq!(status, 200, "{qr}");
    assert!(qr["qrCode"].as_str().unwrap().starts_with("data:image/png;base64,"));
    assert!(qr["otpauthUrl"].as_str().unwrap().starts_with("otpauth://totp/"));
    let totp = totp_for(qr["secret"].as_str().unwrap());
    // Not enabled before confirmation: a login still gets a plain code.
    let creds = json!({"client_id": client, "client_secret": secret, "username": app.admin_email,
                       "password": ADMIN_PASSWORD});
    let (_, body) = app.post("/auth/login", None, &creds).await;
    assert!(body.get("mfa").is_none(), "{body}");

    let step = step_now();
    let (status, body) = app.post("/auth/totp/confirm", Some(&admin), &json!({"otp": "000000"})).await;
    assert_error(status, &body, 401, "invalid_otp");
    let (status, confirmed) =
        app.post("/auth/totp/confirm", Some(&admin), &json!({"otp": totp.generate(step * 30)})).await;
    assert_eq!(status, 200, "{confirmed}");
    let recovery: Vec<String> =
        confirmed["recoveryCodes"].as_array().unwrap().iter().map(|c| c.as_str().unwrap().to_owned()).collect();
    assert_eq!(recovery.len(), 10);
    assert_eq!(app.get("/auth/check-qr-code", Some(&admin)).await.1, json!({"isGenerated": true}));
    let (status, body) = app.post("/auth/create-qr-code", Some(&admin), &json!({})).await;
    assert_error(status, &body, 409, "totp_already_enabled");

    // Password login now needs the second step.
    let (status, first) = app.post("/auth/login", None, &creds).await;
    assert_eq!(status, 200);
    assert_eq!(first["mfa"], true);
    let (status, body) = app
        .post("/auth/token", None, &json!({"code": first["code"], "clientId": client, "client_secret": secret}))
        .await;
    assert_error(status, &body, 401, "mfa_required");
    let res = app
        .client
        .get(app.url("/auth/check-qr-code"))
        .header("code", first["code"].as_str().unwrap())
        .header("clientId", &client)
        .send()
        .await
        .unwrap();
    assert_eq!(into_json(res).await, (200, json!({"isGenerated": true})));
    let (status, body) = app.post("/auth/login-token", None, &creds).await;
    assert_error(status, &body, 401, "mfa_required");
    let (status, body) =
        app.post("/auth/login", None, &json!({"email": app.admin_email, "password": ADMIN_PASSWORD})).await;
    assert_error(status, &body, 401, "mfa_required");

    // The step used to confirm is never accepted again; the next one is.
    let (_, first) = app.post("/auth/login", None, &creds).await;
    let mfa = |otp: String| json!({"key": app.admin_email, "otp": otp, "clientId": client});
    let (status, body) = app.post("/auth/verify-otp", None, &mfa(totp.generate(step * 30))).await;
    assert_error(status, &body, 401, "invalid_otp");
    let (status, body) = app.post("/auth/verify-otp", None, &mfa(totp.generate((step + 1) * 30))).await;
    assert_eq!(status, 200, "{body}");
    let (status, tokens) = app
        .post("/auth/token", None, &json!({"code": body["code"], "clientId": client, "client_secret": secret}))
        .await;
    assert_eq!(status, 200, "{tokens}");
    // The MFA code itself is spent.
    let (status, _) = app
        .post("/auth/token", None, &json!({"code": first["code"], "clientId": client, "client_secret": secret}))
        .await;
    assert_eq!(status, 401);

    // A recovery code works once.
    app.post("/auth/login", None, &creds).await;
    let (status, body) = app.post("/auth/verify-otp", None, &mfa(recovery[0].clone())).await;
    assert_eq!(status, 200, "{body}");
    app.post("/auth/login", None, &creds).await;
    let (status, body) = app.post("/auth/verify-otp", None, &mfa(recovery[0].clone())).await;
    assert_error(status, &body, 401, "invalid_otp");
    let (status, body) = app.post("/auth/verify-otp", None, &mfa(recovery[1].to_uppercase())).await;
    assert_eq!(status, 200, "{body}");

    // Secrets and recovery codes are not stored in the clear.
    let (sealed, hashes): (String, Vec<String>) = app
        .state
        .db
        .run(|c| {
            use confab::core::db::schema::{recovery_codes, totp_secrets};
            Ok((
                totp_secrets::table.select(totp_secrets::secret).first(c)?,
                recovery_codes::table.select(recovery_codes::code_hash).load(c)?,
            ))
        })
        .await
        .unwrap();
    assert!(!sealed.contains(qr["secret"].as_str().unwrap()));
    assert!(hashes.iter().all(|h| !recovery.contains(h)));

    // Guessing codes to regenerate recovery codes locks like a password would.
    let access = tokens["accessToken"].as_str().unwrap();
    let wrong = if totp.generate((step + 2) * 30) == "000000" { "111111" } else { "000000" };
    for _ in 0..5 {
        let (status, body) = app.post("/auth/totp/recovery-codes", Some(access), &json!({"otp": wrong})).await;
        assert_error(status, &body, 401, "invalid_otp");
    }
    let (status, _) =
        app.post("/auth/totp/recovery-codes", Some(access), &json!({"otp": totp.generate((step + 2) * 30)})).await;
    assert_eq!(status, 401, "locked");
    expire_lockouts(&app).await;
    // Steps up to step + 1 are spent: step + 2 is accepted once the clock is past step + 1.
    let deadline = std::time::Instant::now() + Duration::from_secs(40);
    while step_now() < step + 1 {
        assert!(std::time::Instant::now() < deadline, "clock did not advance");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (status, fresh) =
        app.post("/auth/totp/recovery-codes", Some(access), &json!({"otp": totp.generate((step + 2) * 30)})).await;
    assert_eq!(status, 200, "{fresh}");
    assert_eq!(fresh["recoveryCodes"].as_array().unwrap().len(), 10);
    // The old recovery codes are gone.
    app.post("/auth/login", None, &creds).await;
    let (status, _) = app.post("/auth/verify-otp", None, &mfa(recovery[2].clone())).await;
    assert_eq!(status, 401);

    let kinds: Vec<Value> =
        app.get("/auth/audit?kind=mfa_enabled", Some(tokens["accessToken"].as_str().unwrap())).await.1["data"]
            .as_array()
            .unwrap()
            .clone();
    assert_eq!(kinds.len(), 1);
});

both_backends!(forget_and_reset_password, |app: TestApp| async move {
    let admin = app.admin_token().await;
    let (client, secret) = new_client(&app, &admin, json!({})).await;
    let (status, known) = app
        .post(
            "/auth/forget-password",
            None,
            &json!({"username": app.admin_email, "client_id": client, "client_secret": secret}),
        )
        .await;
    assert_eq!(status, 204);
    let (status, unknown) = app
        .post(
            "/auth/forget-password",
            None,
            &json!({"username": "nobody@example.com", "client_id": client, "client_secret": secret}),
        )
        .await;
    assert_eq!((status, &unknown), (204, &known), "same answer for unknown accounts");
    let token = token_in(&nth_message(&app, "mail", &app.admin_email, 0).await);

    let (status, ok) = app.get(&format!("/auth/verify-reset-password-link?token={token}"), None).await;
    assert_eq!((status, ok), (200, json!({"success": true})));
    let (status, body) = app.get("/auth/verify-reset-password-link?token=nope", None).await;
    assert_error(status, &body, 401, "invalid_token");

    let reset =
        |password: &str| json!({"token": token, "password": password, "client_id": client, "client_secret": secret});
    let (status, body) = app.patch("/auth/reset-password", None, &reset("short")).await;
    assert_error(status, &body, 400, "validation_failed");
    let (status, _) = app.patch("/auth/reset-password", None, &reset("brand-new-password")).await;
    assert_eq!(status, 204);
    // Every session is gone; the token is spent; the new password works.
    assert_eq!(app.get("/auth/me", Some(&admin)).await.0, 401);
    let (status, body) = app.patch("/auth/reset-password", None, &reset("another-password")).await;
    assert_error(status, &body, 401, "invalid_token");
    let (status, _) = app.get(&format!("/auth/verify-reset-password-link?token={token}"), None).await;
    assert_eq!(status, 401);
    app.login(&app.admin_email.clone(), "brand-new-password").await;
});

both_backends!(signup_token_flow, |app: TestApp| async move {
    let (status, _) =
        app.post("/auth/sign-up/create-token", None, &json!({"email": "New.Person@Example.com", "data": {}})).await;
    assert_eq!(status, 204);
    let token = token_in(&nth_message(&app, "mail", "new.person@example.com", 0).await);
    let (status, view) = app.get("/auth/sign-up/verify-token", Some(&token)).await;
    assert_eq!((status, view), (200, json!({"email": "new.person@example.com"})));
    let (status, body) = app.get("/auth/sign-up/verify-token", Some("bogus")).await;
    assert_error(status, &body, 401, "invalid_token");

    let (status, body) = app
        .post(
            "/auth/sign-up/create-user",
            Some(&token),
            &json!({"email": "other@example.com", "password": "password-123"}),
        )
        .await;
    assert_error(status, &body, 400, "validation_failed");
    let user = json!({"email": "new.person@example.com", "password": "password-123", "firstName": "New",
                      "companyName": "Newco"});
    let (status, created) = app.post("/auth/sign-up/create-user", Some(&token), &user).await;
    assert_eq!(status, 200, "{created}");
    assert_eq!(created["email"], "new.person@example.com");
    assert_eq!(created["role"], "admin");
    let (status, body) = app.post("/auth/sign-up/create-user", Some(&token), &user).await;
    assert_error(status, &body, 401, "invalid_token");
    app.login("new.person@example.com", "password-123").await;

    // An address with an account gets the same answer and no mail.
    let (status, _) = app.post("/auth/sign-up/create-token", None, &json!({"email": app.admin_email})).await;
    assert_eq!(status, 204);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(outbox_to(&app, "mail", &app.admin_email).is_empty());
});

// The messaging-family login (the console's) takes the second factor in the same request, and
// the authenticator can be turned off with a code (issue 18 item 3).
both_backends!(messaging_login_takes_the_second_factor_and_it_can_be_turned_off, |app: TestApp| async move {
    let admin = app.admin_token().await;
    let (_, qr) = app.post("/auth/create-qr-code", Some(&admin), &json!({})).await;
    let totp = totp_for(qr["secret"].as_str().unwrap());
    let step = step_now();
    let (status, confirmed) =
        app.post("/auth/totp/confirm", Some(&admin), &json!({"otp": totp.generate(step * 30)})).await;
    assert_eq!(status, 200, "{confirmed}");
    let recovery: Vec<String> =
        confirmed["recoveryCodes"].as_array().unwrap().iter().map(|c| c.as_str().unwrap().to_owned()).collect();
    let login = |otp: Option<&str>| {
        let mut body = json!({"email": app.admin_email, "password": ADMIN_PASSWORD});
        if let Some(otp) = otp {
            body["otp"] = json!(otp);
        }
        body
    };
    let (status, body) = app.post("/auth/login", None, &login(None)).await;
    assert_error(status, &body, 401, "mfa_required");
    let next = totp.generate((step + 1) * 30);
    let wrong = if next == "000000" { "111111" } else { "000000" };
    let (status, body) = app.post("/auth/login", None, &login(Some(wrong))).await;
    assert_error(status, &body, 401, "invalid_otp");
    // The step that turned it on is spent; the next one opens a session.
    let (status, body) = app.post("/auth/login", None, &login(Some(&totp.generate(step * 30)))).await;
    assert_error(status, &body, 401, "invalid_otp");
    let (status, body) = app.post("/auth/login", None, &login(Some(&next))).await;
    assert_eq!(status, 200, "{body}");
    let access = body["accessToken"].as_str().unwrap().to_owned();
    assert_eq!(app.get("/auth/me", Some(&access)).await.0, 200);

    // Guesses count on the second-factor lockout: after five wrong codes even a right one is refused.
    for _ in 0..5 {
        let (status, body) = app.post("/auth/login", None, &login(Some(wrong))).await;
        assert_error(status, &body, 401, "invalid_otp");
    }
    let (status, body) = app.post("/auth/login", None, &login(Some(&recovery[0]))).await;
    assert_error(status, &body, 401, "invalid_otp");
    expire_lockouts(&app).await;
    let (status, body) = app.post("/auth/login", None, &login(Some(&recovery[0]))).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = app.post("/auth/login", None, &login(Some(&recovery[0]))).await;
    assert_error(status, &body, 401, "invalid_otp");

    // Turning it off needs a code; afterwards the password alone signs in.
    let (status, body) = app.post("/auth/totp/disable", Some(&access), &json!({"otp": wrong})).await;
    assert_error(status, &body, 401, "invalid_otp");
    let (status, _) = app.post("/auth/totp/disable", Some(&access), &json!({"otp": recovery[1]})).await;
    assert_eq!(status, 204);
    assert_eq!(app.get("/auth/check-qr-code", Some(&access)).await.1, json!({"isGenerated": false}));
    let (status, body) = app.post("/auth/login", None, &login(None)).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = app.post("/auth/totp/disable", Some(&access), &json!({"otp": recovery[2]})).await;
    assert_error(status, &body, 401, "invalid_otp");
    let (_, audit) = app.get("/auth/audit?kind=mfa_disabled", Some(&access)).await;
    assert_eq!(audit["data"].as_array().unwrap().len(), 1, "{audit}");
});
