//! Attack tests (issue 17, README "Security" → "Logins, codes and lockouts"): each performs an
//! attack against the real server and expects the refusal.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::{
    arc::new_client,
    arc_mfa::totp_for,
    both_backends,
    fynd_platform::{app_bearer, create_app, login, register, storefront},
    helpers::*,
};

const AUTH: &str = "/service/application/user/authentication/v1.0";

/// Waits (up to 10 s) for a message of `kind` to `to` whose text is not in `seen`.
pub(crate) async fn next_message(app: &TestApp, kind: &str, to: &str, seen: &[String]) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(m) = outbox(app, kind).into_iter().find(|m| m.to.contains(to) && !seen.iter().any(|s| s == &m.text))
        {
            return m.text;
        }
        assert!(std::time::Instant::now() < deadline, "no new {kind} to {to}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub(crate) fn six_digits(text: &str) -> String {
    text.split(|c: char| !c.is_ascii_digit()).find(|w| w.len() == 6).expect("a 6-digit code").to_owned()
}

/// A code that is not `right`.
fn wrong_for(right: &str) -> &'static str {
    if right == "000000" { "111111" } else { "000000" }
}

async fn audit_count(app: &TestApp, admin: &str, kind: &str) -> i64 {
    let (status, page) = app.get(&format!("/auth/audit?kind={kind}&limit=1"), Some(admin)).await;
    assert_eq!(status, 200, "{page}");
    page["totalCount"].as_i64().unwrap()
}

// Item 3: 30 parallel wrong storefront passwords, then the right one, used to log in.
both_backends!(storefront_password_guesses_lock_the_account, |app: TestApp| async move {
    let admin = app.admin_token().await;
    let (app_id, token) = create_app(&app, &admin, "shop").await;
    let bearer = app_bearer(app_id, &token);
    register(&app, &bearer, "victim@shop.test", "9812345678", "right-password-1").await;
    register(&app, &bearer, "bystander@shop.test", "9812345679", "right-password-2").await;

    let guesses =
        (0..30).map(|i| login(&app, &bearer, "victim@shop.test", if i % 2 == 0 { "guess-one" } else { "guess-two" }));
    let results = futures_util::future::join_all(guesses).await;
    assert!(results.iter().all(|(s, b, _)| *s == 401 && b["code"] == "invalid_credentials"), "{results:?}");
    // The counter is reserved before each check: 5 passwords were checked, 25 refused unchecked.
    assert_eq!(audit_count(&app, &admin, "login_failed").await, 5);
    assert_eq!(audit_count(&app, &admin, "login_locked").await, 25);

    // Locked answers exactly like a wrong password, by e-mail and by the account's phone alike.
    let (status, locked, cookie) = login(&app, &bearer, "victim@shop.test", "right-password-1").await;
    assert_error(status, &locked, 401, "invalid_credentials");
    assert!(cookie.is_none());
    let (_, wrong, _) = login(&app, &bearer, "nobody@shop.test", "right-password-1").await;
    assert_eq!(locked, wrong);
    // Per account: another customer of the application still logs in.
    let (status, body, _) = login(&app, &bearer, "bystander@shop.test", "right-password-2").await;
    assert_eq!(status, 200, "{body}");

    // When the lock runs out, the right password works again.
    expire_lockouts(&app).await;
    let (status, body, cookie) = login(&app, &bearer, "victim@shop.test", "right-password-1").await;
    assert_eq!(status, 200, "{body}");
    assert!(cookie.is_some());
});

// Item 6: a code another company sends to the same address must not void the user's code.
both_backends!(another_company_cannot_void_an_otp, |app: TestApp| async move {
    let admin = app.admin_token().await;
    let (ours, our_secret) = new_client(&app, &admin, json!({})).await;
    let (rival_admin, _) = app.new_company("Rival").await;
    let (rival, rival_secret) = new_client(&app, &rival_admin, json!({})).await;
    let victim = app.admin_email.clone();

    for client_id in [None, Some(ours.clone())] {
        skip_resend_window(&app).await;
        let seen: Vec<String> = outbox(&app, "mail").into_iter().map(|m| m.text).collect();
        let send = json!({"client_id": ours, "client_secret": our_secret, "key": victim});
        assert_eq!(app.post("/auth/send-otp", None, &send).await.0, 200);
        let code = six_digits(&next_message(&app, "mail", &victim, &seen).await);
        // The rival company asks for a code for the same address afterwards.
        let attack = json!({"client_id": rival, "client_secret": rival_secret, "key": victim});
        assert_eq!(app.post("/auth/send-otp", None, &attack).await.0, 200);

        // The seed's body ({key, otp}) and the one naming the client both still work.
        let mut verify = json!({"key": victim, "otp": code});
        if let Some(id) = &client_id {
            verify["clientId"] = json!(id);
        }
        let (status, body) = app.post("/auth/verify-otp", None, &verify).await;
        assert_eq!(status, 200, "{client_id:?}: {body}");
        let (status, tokens) = app
            .post("/auth/token", None, &json!({"code": body["code"], "clientId": ours, "client_secret": our_secret}))
            .await;
        assert_eq!(status, 200, "{tokens}");
    }

    // Two companies whose admins share a phone number: each one's texted code opens its own
    // account, whichever was sent last.
    let (a_admin, a_login) = app.new_company("Alpha").await;
    let (b_admin, b_login) = app.new_company("Beta").await;
    let (a_client, a_secret) = new_client(&app, &a_admin, json!({})).await;
    let (b_client, b_secret) = new_client(&app, &b_admin, json!({})).await;
    let phone = "+14155550100";
    let mut codes = Vec::new();
    for (client, secret) in [(&a_client, &a_secret), (&b_client, &b_secret)] {
        let seen: Vec<String> = outbox(&app, "sms").into_iter().map(|m| m.text).collect();
        let send = json!({"client_id": client, "client_secret": secret, "key": phone});
        assert_eq!(app.post("/auth/send-otp", None, &send).await.0, 200);
        codes.push(six_digits(&next_message(&app, "sms", phone, &seen).await));
    }
    for ((client, secret, login), code) in
        [(&a_client, &a_secret, &a_login), (&b_client, &b_secret, &b_login)].into_iter().zip(&codes)
    {
        let (status, body) = app.post("/auth/verify-otp", None, &json!({"key": phone, "otp": code})).await;
        assert_eq!(status, 200, "{body}");
        let (_, tokens) = app
            .post("/auth/token", None, &json!({"code": body["code"], "clientId": client, "client_secret": secret}))
            .await;
        let (_, me) = app.get("/auth/me", tokens["accessToken"].as_str()).await;
        assert_eq!(me["userId"], login["user"]["userId"]);
    }
});

// Item 7: 18 wrong authenticator codes over 3 password logins, then the right one, used to work.
both_backends!(second_factor_guesses_add_up_across_logins, |app: TestApp| async move {
    let admin = app.admin_token().await;
    let (client, secret) = new_client(&app, &admin, json!({})).await;
    let (_, qr) = app.post("/auth/create-qr-code", Some(&admin), &json!({})).await;
    let totp = totp_for(qr["secret"].as_str().unwrap());
    let step = chrono::Utc::now().timestamp() as u64 / 30;
    let (status, body) = app.post("/auth/totp/confirm", Some(&admin), &json!({"otp": totp.generate(step * 30)})).await;
    assert_eq!(status, 200, "{body}");
    // Accepted while the clock is within a step of `step + 1` (the test takes seconds).
    let right = totp.generate((step + 1) * 30);
    let valid: Vec<String> = (step.saturating_sub(1)..=step + 3).map(|s| totp.generate(s * 30)).collect();
    let wrong = ["000000", "111111", "222222"].into_iter().find(|w| !valid.iter().any(|v| v == w)).unwrap();

    let creds = json!({"client_id": client, "client_secret": secret, "username": app.admin_email,
                       "password": ADMIN_PASSWORD});
    let mfa = |otp: &str| json!({"key": app.admin_email, "otp": otp, "clientId": client});
    for _ in 0..3 {
        let (status, first) = app.post("/auth/login", None, &creds).await;
        assert_eq!((status, &first["mfa"]), (200, &json!(true)), "{first}");
        for _ in 0..6 {
            let (status, body) = app.post("/auth/verify-otp", None, &mfa(wrong)).await;
            assert_error(status, &body, 401, "invalid_otp");
        }
    }
    let (status, _) = app.post("/auth/login", None, &creds).await;
    assert_eq!(status, 200, "the password itself is not locked by second-factor guesses");
    let (status, body) = app.post("/auth/verify-otp", None, &mfa(&right)).await;
    assert_error(status, &body, 401, "invalid_otp");
    // A recovery-code route shares the counter: no way around it with a bearer token either.
    let (status, body) = app.post("/auth/totp/recovery-codes", Some(&admin), &json!({"otp": right})).await;
    assert_error(status, &body, 401, "invalid_otp");

    expire_lockouts(&app).await;
    let (status, body) = app.post("/auth/verify-otp", None, &mfa(&right)).await;
    assert_eq!(status, 200, "after the lock the right code works: {body}");
});

/// Sends a storefront OTP to +91 98123 45678 at `path`; returns (request id, code).
async fn storefront_code(app: &TestApp, bearer: &str, path: &str) -> (String, String) {
    skip_resend_window(app).await;
    let seen: Vec<String> = outbox(app, "sms").into_iter().map(|m| m.text).collect();
    let body = json!({"country_code": "91", "mobile": "9812345678"});
    let (status, sent, _) = storefront(app, Method::POST, &format!("{AUTH}{path}"), bearer, None, Some(&body)).await;
    assert_eq!(status, 200, "{sent}");
    let code = six_digits(&next_message(app, "sms", "+919812345678", &seen).await);
    (sent["request_id"].as_str().unwrap().to_owned(), code)
}

async fn storefront_verify(app: &TestApp, bearer: &str, path: &str, rid: &str, otp: &str) -> (u16, Value, bool) {
    let body = json!({"request_id": rid, "otp": otp});
    let (status, body, cookie) =
        storefront(app, Method::POST, &format!("{AUTH}{path}"), bearer, None, Some(&body)).await;
    (status, body, cookie.is_some())
}

// Item 7: 9 storefront OTP guesses over 2 codes, then the right one, used to log in.
both_backends!(storefront_otp_guesses_add_up_across_codes, |app: TestApp| async move {
    let admin = app.admin_token().await;
    let (app_id, token) = create_app(&app, &admin, "shop").await;
    let bearer = app_bearer(app_id, &token);
    let cookie = register(&app, &bearer, "otp@shop.test", "9812345678", "password-123").await;
    // Forgot-password codes go only to a verified number (README "Account takeover and abuse"):
    // the customer verifies it by link first.
    let link = json!({"country_code": "91", "phone": "9812345678"});
    let (status, _, _) = storefront(
        &app,
        Method::POST,
        "/service/application/user/profile/v1.0/mobile/link/send",
        &bearer,
        Some(&cookie),
        Some(&link),
    )
    .await;
    assert_eq!(status, 200);
    let text = next_message(&app, "sms", "+919812345678", &[]).await;
    let code = text.split_once("code=").unwrap().1.split_whitespace().next().unwrap().to_owned();
    let (status, _, _) =
        storefront(&app, Method::POST, &format!("{AUTH}/verify/mobile"), &bearer, None, Some(&json!({"code": code})))
            .await;
    assert_eq!(status, 200);
    const VERIFY: &str = "/otp/mobile/verify";

    // Five guesses use up the first code, four more go to a second one: its own attempt limit
    // is not reached, but the number's is.
    let (rid, code) = storefront_code(&app, &bearer, "/login/otp").await;
    for _ in 0..5 {
        let (status, body, _) = storefront_verify(&app, &bearer, VERIFY, &rid, wrong_for(&code)).await;
        assert_error(status, &body, 400, "invalid_otp");
    }
    let (rid, code) = storefront_code(&app, &bearer, "/login/otp").await;
    for _ in 0..4 {
        let (status, body, _) = storefront_verify(&app, &bearer, VERIFY, &rid, wrong_for(&code)).await;
        assert_error(status, &body, 400, "invalid_otp");
    }
    let (status, body, cookie) = storefront_verify(&app, &bearer, VERIFY, &rid, &code).await;
    assert_error(status, &body, 400, "invalid_otp");
    assert!(!cookie);
    // The counter is the contact's in every flow: a forgot-password code to the same number is
    // refused too.
    let (forgot_rid, forgot_code) = storefront_code(&app, &bearer, "/otp/forgot/mobile/send").await;
    let (status, body, _) =
        storefront_verify(&app, &bearer, "/otp/forgot/mobile/verify", &forgot_rid, &forgot_code).await;
    assert_error(status, &body, 400, "invalid_otp");

    expire_lockouts(&app).await;
    let (status, body, cookie) = storefront_verify(&app, &bearer, VERIFY, &rid, &code).await;
    assert_eq!(status, 200, "after the lock the right code works: {body}");
    assert!(cookie);
});

// Item 10: the first-start admin password bypassed the password policy.
#[actix_web::test]
async fn weak_first_start_admin_password_is_a_start_up_error() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("confab.db").display());
    for weak in ["pw", "admin@localhost"] {
        let mut config = confab::core::config::Config::for_tests(dir.path().to_path_buf(), url.clone());
        config.admin_password = Some(weak.to_owned().into());
        let Err(e) = confab::build(config).await else { panic!("{weak:?} was accepted as the admin password") };
        let text = format!("{e:#}");
        assert!(text.contains("CONFAB_ADMIN_PASSWORD"), "{text}");
        assert!(text.contains("at least 8 characters") || text.contains("not be the e-mail"), "{text}");
    }
    // Nothing was created: a start with a good password bootstraps with it.
    let app = TestApp::start(
        Backend::Sqlite,
        {
            let mut c = confab::core::config::Config::for_tests(dir.path().to_path_buf(), url);
            c.admin_password = Some(ADMIN_PASSWORD.to_owned().into());
            c
        },
        std::sync::Arc::new(dir),
        None,
    )
    .await;
    assert!(app.bootstrap.is_some());
    app.login("admin@localhost", ADMIN_PASSWORD).await;

    // `confab user create --password` applies the same rules, with a clear message.
    let data = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_confab"))
        .args(["user", "create", "--email", "ops@example.test", "--role", "admin", "--company", "Ops"])
        .args(["--password", "pw"])
        .env("CONFAB_DATA_DIR", data.path())
        .env("CONFAB_LOG", "warn")
        .env_remove("CONFAB_DATABASE_URL")
        .env_remove("CONFAB_REDIS_URL")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--password must be at least 8 characters"), "{stderr}");
}

// Item 10: an open sign-up squatted another company's future staff e-mail.
both_backends!(open_signup_does_not_squat_a_staff_email, |app: TestApp| async move {
    let victim = "ada@corp.test";
    let squat = json!({"email": victim, "password": "squatter-password", "firstName": "Mallory", "lastName": "X",
                       "phone": "+14155550111", "companyName": "Squat"});
    let (status, body) = app.post("/auth/signup", None, &squat).await;
    assert_eq!(status, 201, "{body}");
    // Pending: it cannot log in.
    let (status, body) =
        app.post("/auth/login", None, &json!({"email": victim, "password": "squatter-password"})).await;
    assert_error(status, &body, 401, "invalid_credentials");

    // The address's real company invites its owner, who joins at once (the invitation mailed to
    // the address proves it).
    let admin = app.admin_token().await;
    let (status, invite) = app.post("/agent/invite", Some(&admin), &json!({"email": victim, "role": "agent"})).await;
    assert_eq!(status, 201, "{invite}");
    let (status, joined) = app
        .post(
            "/auth/signup",
            None,
            &json!({"email": victim, "password": "owner-password", "firstName": "Ada", "lastName": "L",
                    "phone": "+14155550112", "inviteToken": invite["inviteToken"]}),
        )
        .await;
    assert_eq!(status, 201, "{joined}");
    let login = app.login(victim, "owner-password").await;
    assert_eq!(login["user"]["userId"], joined["userId"]);

    // The squatter's account can never be activated now, even with its token.
    let (status, body) = app.post("/auth/signup/verify", None, &json!({"token": signup_token(&app, victim)})).await;
    assert_error(status, &body, 409, "email_taken");
    let (status, _) = app.post("/auth/login", None, &json!({"email": victim, "password": "squatter-password"})).await;
    assert_eq!(status, 401);

    // Verification tokens: unknown ones are refused; a real one works once.
    let (status, body) = app.post("/auth/signup/verify", None, &json!({"token": "forged"})).await;
    assert_error(status, &body, 401, "invalid_token");
    let (status, _) = app
        .post(
            "/auth/signup",
            None,
            &json!({"email": "grace@else.test", "password": "grace-password", "firstName": "Grace", "lastName": "H",
                    "phone": "+14155550113"}),
        )
        .await;
    assert_eq!(status, 201);
    let token = signup_token(&app, "grace@else.test");
    let (status, verified): (u16, Value) = app.post("/auth/signup/verify", None, &json!({"token": token})).await;
    assert_eq!(status, 200, "{verified}");
    let (status, body) = app.post("/auth/signup/verify", None, &json!({"token": token})).await;
    assert_error(status, &body, 401, "invalid_token");
    let me = app.login("grace@else.test", "grace-password").await;
    assert_eq!(me["user"]["role"], "admin");
});
