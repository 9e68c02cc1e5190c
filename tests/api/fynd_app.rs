//! Fynd storefront (application) user API: CONTRACT §9, seed 002, reference auth.md §2.3.
//! Application credential, `f.session` cookie flags, and the account routes.

use reqwest::Method;
use serde_json::json;

use crate::{
    both_backends,
    fynd_platform::{app_bearer, company_of, cookie_value, create_app, login, platform, register, storefront},
    helpers::*,
};

const AUTH: &str = "/service/application/user/authentication/v1.0";
const PROFILE: &str = "/service/application/user/profile/v1.0";

both_backends!(register_login_session_logout_with_cookie_flags, |app: TestApp| async move {
    let admin = app.admin_token().await;
    let (app_id, token) = create_app(&app, &admin, "shop").await;
    let bearer = app_bearer(app_id, &token);

    let (status, body, set_cookie) = storefront(
        &app,
        Method::POST,
        &format!("{AUTH}/register/form?platform={app_id}"),
        &bearer,
        None,
        Some(&json!({"first_name": "Akash", "last_name": "Mane", "gender": "male", "email": "akash@shop.test",
                     "password": "password-123", "phone": {"country_code": "+91", "mobile": "8652523958"}})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["success"], true);
    assert_eq!(body["user_exists"], false);
    assert_eq!(body["mobile"], "8652523958");
    assert_eq!(body["country_code"], "91");
    assert_eq!(body["email"], "akash@shop.test");
    let set_cookie = set_cookie.unwrap();
    assert!(set_cookie.starts_with("f.session=s%3A"), "{set_cookie}");
    assert!(set_cookie.contains("HttpOnly"), "{set_cookie}");
    assert!(set_cookie.contains("SameSite=Lax"), "{set_cookie}");
    assert!(!set_cookie.contains("Secure"), "http public URL: {set_cookie}");
    assert!(set_cookie.contains("Path=/"), "{set_cookie}");
    let registered = cookie_value(&set_cookie);

    let (status, body, _) = storefront(&app, Method::POST, &format!("{AUTH}/register/form"), &bearer, None,
        Some(&json!({"email": "akash@shop.test", "password": "password-123", "phone": {"country_code": "91", "mobile": "8652523958"}}))).await;
    assert_error(status, &body, 409, "user_exists");

    // Login by e-mail and by mobile (international form); SDK extra headers are ignored.
    let (status, by_email, set_cookie) = login(&app, &bearer, "Akash@Shop.test", "password-123").await;
    assert_eq!(status, 200, "{by_email}");
    let cookie = cookie_value(&set_cookie.unwrap());
    let user = &by_email["user"];
    assert_eq!(user["first_name"], "Akash");
    assert_eq!(user["gender"], "male");
    assert_eq!(user["application_id"], app_id.to_string());
    assert_eq!(
        user["phone_numbers"],
        json!([{"phone": "8652523958", "country_code": 91, "active": true, "primary": true, "verified": false}])
    );
    assert_eq!(
        user["emails"],
        json!([{"email": "akash@shop.test", "active": true, "primary": true, "verified": false}])
    );
    assert!(user.get("dob").is_none() && user.get("username").is_none(), "absent, not null: {user}");
    let res = app
        .client
        .post(app.url(&format!("{AUTH}/login/password?platform=Fynd")))
        .header("Authorization", format!("Bearer {bearer}"))
        .header("x-fp-sdk-version", "3.4.0")
        .header("x-fp-date", "20261123T200000Z")
        .header("x-fp-signature", "v1.1:abc")
        .header("x-currency-code", "INR")
        .json(&json!({"username": "+91 86525 23958", "password": "password-123"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);

    let (status, body, _) = login(&app, &bearer, "akash@shop.test", "wrong-password").await;
    assert_error(status, &body, 401, "invalid_credentials");
    let (status, body, _) = login(&app, &bearer, "nobody@shop.test", "password-123").await;
    assert_error(status, &body, 401, "invalid_credentials");

    let (status, me, _) = storefront(&app, Method::GET, &format!("{AUTH}/session"), &bearer, Some(&cookie), None).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["user"], *user);
    let (status, sessions, _) =
        storefront(&app, Method::GET, &format!("{AUTH}/sessions"), &bearer, Some(&cookie), None).await;
    assert_eq!(status, 200);
    assert_eq!(sessions["sessions"].as_array().unwrap().len(), 3, "{sessions}");

    let (status, out, set_cookie) =
        storefront(&app, Method::GET, &format!("{AUTH}/logout"), &bearer, Some(&cookie), None).await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out, json!({"logout": true}));
    let cleared = set_cookie.unwrap();
    assert!(cleared.starts_with("f.session=;") && cleared.contains("Max-Age=0"), "{cleared}");
    let (status, body, _) =
        storefront(&app, Method::GET, &format!("{AUTH}/session"), &bearer, Some(&cookie), None).await;
    assert_error(status, &body, 401, "unauthenticated");
    // The registration session is still live.
    let (status, _, _) =
        storefront(&app, Method::GET, &format!("{AUTH}/session"), &bearer, Some(&registered), None).await;
    assert_eq!(status, 200);
    let (status, body, _) = storefront(&app, Method::GET, &format!("{AUTH}/session"), &bearer, None, None).await;
    assert_error(status, &body, 401, "unauthenticated");
    let tampered = registered.replacen("s%3A", "s%3Ab", 1);
    let (status, _, _) =
        storefront(&app, Method::GET, &format!("{AUTH}/session"), &bearer, Some(&tampered), None).await;
    assert_eq!(status, 401);
});

async fn https_cookie_flags(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, |cfg| cfg.public_url = "https://shop.example".into()).await else {
        return eprintln!("skipped: CONFAB_TEST_DATABASE_URL is not set");
    };
    let admin = app.admin_token().await;
    let company = company_of(&app, &admin).await;
    let (app_id, token) = create_app(&app, &admin, "shop").await;
    let bearer = app_bearer(app_id, &token);
    let (status, body, set_cookie) = storefront(&app, Method::POST, &format!("{AUTH}/register/form"), &bearer, None,
        Some(&json!({"email": "s@shop.test", "password": "password-123", "phone": {"country_code": "91", "mobile": "9876512345"}}))).await;
    assert_eq!(status, 200, "{body}");
    let set_cookie = set_cookie.unwrap();
    assert!(
        set_cookie.contains("HttpOnly") && set_cookie.contains("Secure") && set_cookie.contains("SameSite=None"),
        "{set_cookie}"
    );
    let (_, me, _) =
        storefront(&app, Method::GET, &format!("{AUTH}/session"), &bearer, Some(&cookie_value(&set_cookie)), None)
            .await;
    let id = me["user"]["_id"].as_str().unwrap().to_owned();
    let (_, s) =
        app.post(&platform(company, app_id, "/customers/session"), Some(&admin), &json!({"user_id": id})).await;
    assert_eq!(s["secure"], true, "{s}");
}

#[actix_web::test]
async fn cookie_is_secure_and_cross_site_behind_https_sqlite() {
    https_cookie_flags(Backend::Sqlite).await;
}

#[actix_web::test]
async fn cookie_is_secure_and_cross_site_behind_https_postgres() {
    https_cookie_flags(Backend::Postgres).await;
}

both_backends!(application_credentials_are_checked, |app: TestApp| async move {
    let admin = app.admin_token().await;
    let (app1, token1) = create_app(&app, &admin, "one").await;
    let (app2, token2) = create_app(&app, &admin, "two").await;
    let config = "/service/application/user/platform/v1.0/config";
    for bad in [
        app_bearer(app1, "wrong"),
        app_bearer(app1, &token2),
        app_bearer(999, &token1),
        "bm90LWEtcGFpcg==".to_owned(),
        "%%%".to_owned(),
    ] {
        let (status, body, _) = storefront(&app, Method::GET, config, &bad, None, None).await;
        assert_error(status, &body, 401, "invalid_application_token");
    }
    let (status, body) = app.get(config, None).await;
    assert_error(status, &body, 401, "application_token_required");
    let (status, body) = app.get(config, Some(&admin)).await;
    assert_eq!(status, 401, "a staff JWT is not an application credential: {body}");

    // A session of application one is not a session of application two.
    let b1 = app_bearer(app1, &token1);
    let b2 = app_bearer(app2, &token2);
    let cookie = register(&app, &b1, "x@one.test", "9876511111", "password-123").await;
    let (status, _, _) = storefront(&app, Method::GET, &format!("{AUTH}/session"), &b1, Some(&cookie), None).await;
    assert_eq!(status, 200);
    let (status, body, _) = storefront(&app, Method::GET, &format!("{AUTH}/session"), &b2, Some(&cookie), None).await;
    assert_error(status, &body, 401, "unauthenticated");
    // ...and its customer cannot log in through application two.
    let (status, _, _) = login(&app, &b2, "x@one.test", "password-123").await;
    assert_eq!(status, 401);
    // Another company's application cannot reach this company's users either.
    let (other, _) = app.new_company("Elsewhere").await;
    let (app3, token3) = create_app(&app, &other, "three").await;
    let (status, _, _) = login(&app, &app_bearer(app3, &token3), "x@one.test", "password-123").await;
    assert_eq!(status, 401);
    let (_, exists, _) = storefront(
        &app,
        Method::GET,
        &format!("{AUTH}/user-exists?q=x@one.test"),
        &app_bearer(app3, &token3),
        None,
        None,
    )
    .await;
    assert_eq!(exists, json!({"user_exists": false}));
});

both_backends!(user_exists_has_password_and_update_password, |app: TestApp| async move {
    let admin = app.admin_token().await;
    let company = company_of(&app, &admin).await;
    let (app_id, token) = create_app(&app, &admin, "shop").await;
    let bearer = app_bearer(app_id, &token);
    let cookie = register(&app, &bearer, "p@shop.test", "9876522222", "password-123").await;

    for (q, expected) in
        [("p@shop.test", true), ("%2B919876522222", true), ("q@shop.test", false), ("%2B919876522223", false)]
    {
        let (status, body, _) =
            storefront(&app, Method::GET, &format!("{AUTH}/user-exists?q={q}"), &bearer, None, None).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body, json!({"user_exists": expected}), "{q}");
    }
    let (status, body, _) = storefront(&app, Method::GET, &format!("{AUTH}/user-exists"), &bearer, None, None).await;
    assert_error(status, &body, 400, "invalid_query");

    let (status, body, _) =
        storefront(&app, Method::GET, &format!("{AUTH}/has-password"), &bearer, Some(&cookie), None).await;
    assert_eq!(status, 200);
    assert_eq!(body, json!({"result": 1}), "an integer, as the seed says");
    // A customer created by the admin has no password.
    let (_, created) = app
        .post(&platform(company, app_id, "/customers"), Some(&admin), &json!({"phone_number": "+14155550141"}))
        .await;
    let (_, s) = app
        .post(
            &platform(company, app_id, "/customers/session"),
            Some(&admin),
            &json!({"user_id": created["user"]["_id"]}),
        )
        .await;
    let admin_made = s["cookie"]["f.session"].as_str().unwrap().to_owned();
    let (_, body, _) =
        storefront(&app, Method::GET, &format!("{AUTH}/has-password"), &bearer, Some(&admin_made), None).await;
    assert_eq!(body, json!({"result": 0}));

    let (_, _, other) = login(&app, &bearer, "p@shop.test", "password-123").await;
    let other = cookie_value(&other.unwrap());
    let (status, body, _) = storefront(
        &app,
        Method::POST,
        &format!("{AUTH}/password"),
        &bearer,
        Some(&cookie),
        Some(&json!({"old_password": "not-it-at-all", "new_password": "password-456"})),
    )
    .await;
    assert_error(status, &body, 400, "validation_failed");
    let (status, body, _) = storefront(
        &app,
        Method::POST,
        &format!("{AUTH}/password"),
        &bearer,
        Some(&cookie),
        Some(&json!({"old_password": "password-123", "new_password": "short"})),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let (status, body, _) = storefront(
        &app,
        Method::POST,
        &format!("{AUTH}/password"),
        &bearer,
        Some(&cookie),
        Some(&json!({"old_password": "password-123", "new_password": "password-456"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"message": "success"}));
    let (status, _, _) = storefront(&app, Method::GET, &format!("{AUTH}/session"), &bearer, Some(&cookie), None).await;
    assert_eq!(status, 200, "the session that changed the password stays");
    let (status, _, _) = storefront(&app, Method::GET, &format!("{AUTH}/session"), &bearer, Some(&other), None).await;
    assert_eq!(status, 401, "other sessions end");
    assert_eq!(login(&app, &bearer, "p@shop.test", "password-123").await.0, 401);
    assert_eq!(login(&app, &bearer, "p@shop.test", "password-456").await.0, 200);
});

both_backends!(profile_contacts_and_attributes, |app: TestApp| async move {
    let admin = app.admin_token().await;
    let (app_id, token) = create_app(&app, &admin, "shop").await;
    let bearer = app_bearer(app_id, &token);
    let cookie = register(&app, &bearer, "r@shop.test", "9876533333", "password-123").await;
    let call = |method: Method, path: String, body: Option<serde_json::Value>| {
        let (app, bearer, cookie) = (&app, bearer.clone(), cookie.clone());
        async move { storefront(app, method, &path, &bearer, Some(&cookie), body.as_ref()).await }
    };

    let (status, body, _) = call(
        Method::POST,
        format!("{PROFILE}/detail"),
        Some(json!({"first_name": "Rita", "last_name": "R",
        "dob": "1990-01-02", "profile_pic_url": "https://img.test/r.png", "email": "r2@shop.test"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["success"], true);
    assert_eq!(body["user"]["first_name"], "Rita");
    assert_eq!(body["user"]["dob"], "1990-01-02");
    assert_eq!(body["user"]["profile_pic_url"], "https://img.test/r.png");
    assert_eq!(body["user"]["emails"].as_array().unwrap().len(), 2);

    let (status, body, _) =
        call(Method::PUT, format!("{PROFILE}/mobile"), Some(json!({"country_code": "91", "phone": "9876544444"})))
            .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["verify_mobile_link"], false);
    assert_eq!(
        body["user"]["phone_numbers"][1],
        json!({"phone": "9876544444", "country_code": 91, "active": true, "primary": false, "verified": false})
    );
    let (status, body, _) = call(
        Method::DELETE,
        format!("{PROFILE}/mobile?active=true&primary=true&verified=false&country_code=91&phone=9876533333"),
        None,
    )
    .await;
    assert_error(status, &body, 422, "primary_contact");
    let (status, body, _) = call(
        Method::POST,
        format!("{PROFILE}/mobile/primary"),
        Some(json!({"country_code": "91", "phone": "9876544444", "active": true, "primary": true, "verified": false})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user"]["phone_numbers"][0]["phone"], "9876544444");
    assert_eq!(body["user"]["phone_numbers"][0]["primary"], true);
    let (status, body, _) = call(
        Method::DELETE,
        format!("{PROFILE}/mobile?active=true&primary=false&verified=false&country_code=91&phone=9876533333"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user"]["phone_numbers"].as_array().unwrap().len(), 1);
    let (status, body, _) =
        call(Method::DELETE, format!("{PROFILE}/mobile?country_code=91&phone=9876533333"), None).await;
    assert_error(status, &body, 404, "not_found");

    let (status, body, _) = call(Method::PUT, format!("{PROFILE}/email"), Some(json!({"email": "r3@shop.test"}))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["verify_email_link"], false);
    assert_eq!(body["user"]["emails"].as_array().unwrap().len(), 3);
    let (status, body, _) =
        call(Method::POST, format!("{PROFILE}/email/primary"), Some(json!({"email": "r3@shop.test"}))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user"]["emails"][0]["email"], "r3@shop.test");
    let (status, body, _) = call(
        Method::DELETE,
        format!("{PROFILE}/email?active=true&primary=false&verified=false&email=r@shop.test"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user"]["emails"].as_array().unwrap().len(), 2);
    // Another account's e-mail cannot be added.
    register(&app, &bearer, "taken@shop.test", "9876555555", "password-123").await;
    let (status, body, _) =
        call(Method::PUT, format!("{PROFILE}/email"), Some(json!({"email": "taken@shop.test"}))).await;
    assert_error(status, &body, 409, "user_exists");
    let (status, body, _) = call(Method::PUT, format!("{PROFILE}/email"), Some(json!({"email": "not-an-email"}))).await;
    assert_error(status, &body, 400, "validation_failed");

    let (status, body, _) = call(Method::GET, format!("{PROFILE}/user-attributes"), None).await;
    assert_eq!(status, 200);
    assert_eq!(body, json!({"attributes": {}}));
    let (status, body, _) = call(
        Method::PATCH,
        format!("{PROFILE}/user-attributes"),
        Some(json!({"attributes": {"size": "M", "vip": true}})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"attributes": {"size": "M", "vip": true}}));
    let (_, body, _) =
        call(Method::PATCH, format!("{PROFILE}/user-attributes"), Some(json!({"attributes": {"vip": null}}))).await;
    assert_eq!(body, json!({"attributes": {"size": "M"}}));
    let (_, body, _) = call(Method::GET, format!("{PROFILE}/user-attributes?slug=size"), None).await;
    assert_eq!(body, json!({"attributes": {"size": "M"}}));
    let (_, body, _) = call(Method::GET, format!("{PROFILE}/user-attributes?slug=none"), None).await;
    assert_eq!(body, json!({"attributes": {}}));
    let (status, body, _) =
        call(Method::PATCH, format!("{PROFILE}/user-attributes"), Some(json!({"attributes": [1]}))).await;
    assert_error(status, &body, 400, "validation_failed");
});

/// The newest code sent to `to` (a phone in E.164 or an e-mail), read from the outbox files.
fn code_for(app: &TestApp, kind: &str, to: &str) -> Option<String> {
    let sent = last_sent(app, kind, to)?;
    sent.text.split(|c: char| !c.is_ascii_digit()).find(|w| w.len() == 6).map(str::to_owned)
}

both_backends!(otp_registration_login_and_attempt_limit, |app: TestApp| async move {
    let admin = app.admin_token().await;
    let (app_id, token) = create_app(&app, &admin, "shop").await;
    let bearer = app_bearer(app_id, &token);

    let (status, sent, _) = storefront(
        &app,
        Method::POST,
        &format!("{AUTH}/login/otp?platform={app_id}"),
        &bearer,
        None,
        Some(&json!({"country_code": "91", "mobile": "9812345678", "android_hash": "FA+9qCX9VSu"})),
    )
    .await;
    assert_eq!(status, 200, "{sent}");
    assert_eq!(sent["success"], true);
    assert_eq!(sent["mobile"], "9812345678");
    assert_eq!(sent["country_code"], "91");
    assert_eq!(sent["resend_timer"], 30);
    assert_eq!(sent["user_exists"], false);
    let request_id = sent["request_id"].as_str().unwrap().to_owned();
    let code = code_for(&app, "sms", "+919812345678").expect("the SMS is in the outbox");
    let sms = std::fs::read_dir(app.data_dir().join("outbox/sms")).unwrap().count();
    assert_eq!(sms, 1);
    // The resend window (30 s) applies per number.
    let (status, body, _) = storefront(
        &app,
        Method::POST,
        &format!("{AUTH}/otp/mobile/send"),
        &bearer,
        None,
        Some(&json!({"country_code": "91", "mobile": "9812345678"})),
    )
    .await;
    assert_error(status, &body, 429, "rate_limited");

    let wrong = if code == "000000" { "111111" } else { "000000" };
    let (status, body, _) = storefront(
        &app,
        Method::POST,
        &format!("{AUTH}/otp/mobile/verify"),
        &bearer,
        None,
        Some(&json!({"request_id": request_id, "otp": wrong})),
    )
    .await;
    assert_error(status, &body, 400, "invalid_otp");
    let (status, verified, set_cookie) = storefront(
        &app,
        Method::POST,
        &format!("{AUTH}/otp/mobile/verify"),
        &bearer,
        None,
        Some(&json!({"request_id": request_id, "otp": code})),
    )
    .await;
    assert_eq!(status, 200, "{verified}");
    assert_eq!(verified["user_exists"], false);
    assert!(verified.get("user").is_none(), "{verified}");
    assert!(set_cookie.is_none());
    let register_token = verified["register_token"].as_str().unwrap().to_owned();
    // Single use.
    let (status, _, _) = storefront(
        &app,
        Method::POST,
        &format!("{AUTH}/otp/mobile/verify"),
        &bearer,
        None,
        Some(&json!({"request_id": request_id, "otp": code})),
    )
    .await;
    assert_eq!(status, 400);

    let (status, body, set_cookie) = storefront(
        &app,
        Method::POST,
        &format!("{AUTH}/register/form"),
        &bearer,
        None,
        Some(&json!({"first_name": "Otp", "email": "otp@shop.test", "password": "password-123",
                     "phone": {"country_code": "91", "mobile": "9812345678"}, "register_token": register_token})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let cookie = cookie_value(&set_cookie.unwrap());
    let (_, me, _) = storefront(&app, Method::GET, &format!("{AUTH}/session"), &bearer, Some(&cookie), None).await;
    assert_eq!(me["user"]["phone_numbers"][0]["verified"], true, "the register_token vouched for the phone: {me}");
    assert_eq!(me["user"]["emails"][0]["verified"], false);

    // E-mail OTP logs the existing account in once the account verified that address (a code
    // to an address the account never verified releases it instead: README "Account takeover
    // and abuse", tested in `security_takeover`).
    let (status, _, _) = storefront(
        &app,
        Method::POST,
        &format!("{PROFILE}/email/link/send"),
        &bearer,
        Some(&cookie),
        Some(&json!({"email": "otp@shop.test"})),
    )
    .await;
    assert_eq!(status, 200);
    let link = link_code_for(&app, "mail", "otp@shop.test").expect("a verification link");
    let (status, _, _) =
        storefront(&app, Method::POST, &format!("{AUTH}/verify/email"), &bearer, None, Some(&json!({"code": link})))
            .await;
    assert_eq!(status, 200);
    let (status, body, _) = storefront(
        &app,
        Method::POST,
        &format!("{AUTH}/otp/email/send"),
        &bearer,
        None,
        Some(&json!({"email": "otp@shop.test", "action": "send"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"success": true}));
    let code = code_for(&app, "mail", "otp@shop.test").expect("the mail is in the outbox");
    let (status, body, set_cookie) = storefront(
        &app,
        Method::POST,
        &format!("{AUTH}/otp/email/verify"),
        &bearer,
        None,
        Some(&json!({"email": "otp@shop.test", "otp": code, "action": "verify"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user_exists"], true);
    assert_eq!(body["user"]["_id"], me["user"]["_id"]);
    assert_eq!(body["user"]["emails"][0]["verified"], true);
    assert!(set_cookie.unwrap().starts_with("f.session=s%3A"));

    // Five wrong attempts exhaust a challenge: the right code no longer works.
    let (_, sent, _) = storefront(
        &app,
        Method::POST,
        &format!("{AUTH}/otp/mobile/send"),
        &bearer,
        None,
        Some(&json!({"country_code": "91", "mobile": "9812340000"})),
    )
    .await;
    let rid = sent["request_id"].as_str().unwrap().to_owned();
    let code = code_for(&app, "sms", "+919812340000").unwrap();
    let wrong = if code == "000000" { "111111" } else { "000000" };
    for _ in 0..5 {
        let (status, _, _) = storefront(
            &app,
            Method::POST,
            &format!("{AUTH}/otp/mobile/verify"),
            &bearer,
            None,
            Some(&json!({"request_id": rid, "otp": wrong})),
        )
        .await;
        assert_eq!(status, 400);
    }
    let (status, body, _) = storefront(
        &app,
        Method::POST,
        &format!("{AUTH}/otp/mobile/verify"),
        &bearer,
        None,
        Some(&json!({"request_id": rid, "otp": code})),
    )
    .await;
    assert_error(status, &body, 400, "invalid_otp");

    // Codes are stored hashed.
    let codes = app
        .state
        .db
        .run(|c| {
            use diesel::prelude::*;
            Ok(confab::core::db::schema::otp_challenges::table
                .select(confab::core::db::schema::otp_challenges::code_hash)
                .load::<String>(c)?)
        })
        .await
        .unwrap();
    assert!(codes.iter().all(|h| h.len() == 64 && h != &code));

    // OTP login can be switched off.
    let company = company_of(&app, &admin).await;
    app.post(&platform(company, app_id, "/platform/config"), Some(&admin), &json!({"login": {"otp": false}})).await;
    let (status, body, _) = storefront(
        &app,
        Method::POST,
        &format!("{AUTH}/login/otp"),
        &bearer,
        None,
        Some(&json!({"country_code": "91", "mobile": "9812349999"})),
    )
    .await;
    assert_error(status, &body, 403, "otp_login_disabled");
});

/// Verifies a signed-in customer's e-mail and number through the verification links (forgot
/// codes and reset links go only to verified contacts).
async fn verify_contacts(app: &TestApp, bearer: &str, cookie: &str, email: &str, mobile: &str) {
    for (path, body, kind, to, verify) in [
        ("email/link/send", json!({"email": email}), "mail", email.to_owned(), "verify/email"),
        (
            "mobile/link/send",
            json!({"country_code": "91", "phone": mobile}),
            "sms",
            format!("+91{mobile}"),
            "verify/mobile",
        ),
    ] {
        let (status, answer, _) =
            storefront(app, Method::POST, &format!("{PROFILE}/{path}"), bearer, Some(cookie), Some(&body)).await;
        assert_eq!(status, 200, "{answer}");
        let code = link_code_for(app, kind, &to).expect("a verification link");
        let (status, answer, _) =
            storefront(app, Method::POST, &format!("{AUTH}/{verify}"), bearer, None, Some(&json!({"code": code})))
                .await;
        assert_eq!(status, 200, "{answer}");
    }
}

both_backends!(forgot_password_by_mobile_and_email_otp, |app: TestApp| async move {
    let admin = app.admin_token().await;
    let (app_id, token) = create_app(&app, &admin, "shop").await;
    let bearer = app_bearer(app_id, &token);
    let cookie = register(&app, &bearer, "f@shop.test", "9811111111", "password-123").await;
    verify_contacts(&app, &bearer, &cookie, "f@shop.test", "9811111111").await;

    let (status, sent, _) = storefront(
        &app,
        Method::POST,
        &format!("{AUTH}/otp/forgot/mobile/send"),
        &bearer,
        None,
        Some(&json!({"country_code": "91", "mobile": "9811111111", "action": "send"})),
    )
    .await;
    assert_eq!(status, 200, "{sent}");
    assert!(sent.get("user_exists").is_none());
    let code = code_for(&app, "sms", "+919811111111").unwrap();
    let (status, verified, _) = storefront(
        &app,
        Method::POST,
        &format!("{AUTH}/otp/forgot/mobile/verify"),
        &bearer,
        None,
        Some(&json!({"request_id": sent["request_id"], "otp": code})),
    )
    .await;
    assert_eq!(status, 200, "{verified}");
    assert_eq!(verified["success"], true);
    let forgot = verified["forgot_token"].as_str().unwrap().to_owned();
    let (status, body, _) = storefront(
        &app,
        Method::POST,
        &format!("{AUTH}/login/password/forgot"),
        &bearer,
        None,
        Some(&json!({"code": forgot, "password": "password-789"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"success": true}));
    let (status, body, _) = storefront(
        &app,
        Method::POST,
        &format!("{AUTH}/login/password/forgot"),
        &bearer,
        None,
        Some(&json!({"code": forgot, "password": "password-000"})),
    )
    .await;
    assert_error(status, &body, 400, "invalid_code");
    let (status, _, _) = storefront(&app, Method::GET, &format!("{AUTH}/session"), &bearer, Some(&cookie), None).await;
    assert_eq!(status, 401, "a reset ends every session");
    assert_eq!(login(&app, &bearer, "f@shop.test", "password-123").await.0, 401);
    assert_eq!(login(&app, &bearer, "f@shop.test", "password-789").await.0, 200);

    // By e-mail.
    let (status, body, _) = storefront(
        &app,
        Method::POST,
        &format!("{AUTH}/otp/forgot/email/send"),
        &bearer,
        None,
        Some(&json!({"email": "f@shop.test"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let code = code_for(&app, "mail", "f@shop.test").unwrap();
    let (status, verified, _) = storefront(
        &app,
        Method::POST,
        &format!("{AUTH}/otp/forgot/email/verify"),
        &bearer,
        None,
        Some(&json!({"email": "f@shop.test", "otp": code})),
    )
    .await;
    assert_eq!(status, 200, "{verified}");
    let (status, _, _) = storefront(
        &app,
        Method::POST,
        &format!("{AUTH}/login/password/forgot"),
        &bearer,
        None,
        Some(&json!({"code": verified["forgot_token"], "password": "password-abc"})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(login(&app, &bearer, "f@shop.test", "password-abc").await.0, 200);

    // Unknown accounts get the same answer and no message.
    let (status, sent, _) = storefront(
        &app,
        Method::POST,
        &format!("{AUTH}/otp/forgot/mobile/send"),
        &bearer,
        None,
        Some(&json!({"country_code": "91", "mobile": "9822222222"})),
    )
    .await;
    assert_eq!(status, 200, "{sent}");
    assert!(sent["request_id"].is_string());
    assert!(code_for(&app, "sms", "+919822222222").is_none());
    let (status, body, _) = storefront(
        &app,
        Method::POST,
        &format!("{AUTH}/otp/forgot/email/send"),
        &bearer,
        None,
        Some(&json!({"email": "ghost@shop.test"})),
    )
    .await;
    assert_eq!((status, body), (200, json!({"success": true})));
    assert!(code_for(&app, "mail", "ghost@shop.test").is_none());
});

both_backends!(delete_account_by_otp_then_undelete, |app: TestApp| async move {
    let admin = app.admin_token().await;
    let company = company_of(&app, &admin).await;
    let (app_id, token) = create_app(&app, &admin, "shop").await;
    let bearer = app_bearer(app_id, &token);
    app.post(&platform(company, app_id, "/platform/config"), Some(&admin),
        &json!({"delete_account_reasons": [{"reason_text": "Not using it", "reason_id": "r1", "show_text_area": false}]})).await;
    let cookie = register(&app, &bearer, "d@shop.test", "9833333333", "password-123").await;
    let (_, me, _) = storefront(&app, Method::GET, &format!("{AUTH}/session"), &bearer, Some(&cookie), None).await;
    let id = me["user"]["_id"].as_str().unwrap().to_owned();

    let (_, sent, _) = storefront(
        &app,
        Method::POST,
        &format!("{AUTH}/otp/mobile/send"),
        &bearer,
        None,
        Some(&json!({"country_code": "91", "mobile": "9833333333", "action": "delete"})),
    )
    .await;
    let rid = sent["request_id"].as_str().unwrap().to_owned();
    let code = code_for(&app, "sms", "+919833333333").unwrap();
    let delete = format!("{AUTH}/delete");
    let (status, body, _) = storefront(
        &app,
        Method::POST,
        &delete,
        &bearer,
        Some(&cookie),
        Some(&json!({"user_id": id, "reason_id": "nope", "reason": "x", "request_id": rid, "otp": code})),
    )
    .await;
    assert_error(status, &body, 400, "validation_failed");
    let (status, body, _) = storefront(
        &app,
        Method::POST,
        &delete,
        &bearer,
        Some(&cookie),
        Some(&json!({"user_id": "12345", "reason_id": "r1", "request_id": rid, "otp": code})),
    )
    .await;
    assert_error(status, &body, 403, "forbidden");
    let (status, body, _) = storefront(
        &app,
        Method::POST,
        &delete,
        &bearer,
        None,
        Some(&json!({"user_id": id, "reason_id": "r1", "request_id": rid, "otp": code})),
    )
    .await;
    assert_error(status, &body, 401, "unauthenticated");
    let (status, body, set_cookie) = storefront(
        &app,
        Method::POST,
        &delete,
        &bearer,
        Some(&cookie),
        Some(&json!({"user_id": id, "reason_id": "r1", "reason": "Not using it", "request_id": rid, "otp": code})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"success": true}));
    assert!(set_cookie.unwrap().contains("Max-Age=0"));
    let (status, _, _) = storefront(&app, Method::GET, &format!("{AUTH}/session"), &bearer, Some(&cookie), None).await;
    assert_eq!(status, 401);
    assert_eq!(login(&app, &bearer, "d@shop.test", "password-123").await.0, 401);
    let (_, list) = app.get(&platform(company, app_id, "/customers/list"), Some(&admin)).await;
    assert_eq!(list["items"][0]["status"], "deleted");
    assert!(list["items"][0]["deleted_on"].is_string(), "{list}");

    let (status, body) = app
        .put(
            &platform(company, app_id, "/customers/undelete"),
            Some(&admin),
            &json!({"user_id": id, "reason": "asked", "reason_id": "1"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(login(&app, &bearer, "d@shop.test", "password-123").await.0, 200);
});

/// The `code` of the newest link sent to `to`, read from the outbox files.
fn link_code_for(app: &TestApp, kind: &str, to: &str) -> Option<String> {
    let sent = last_sent(app, kind, to)?;
    let (_, rest) = sent.text.split_once("code=")?;
    Some(rest.split_whitespace().next()?.to_owned())
}

both_backends!(password_reset_and_verification_links, |app: TestApp| async move {
    let admin = app.admin_token().await;
    let (app_id, token) = create_app(&app, &admin, "shop").await;
    let bearer = app_bearer(app_id, &token);
    let cookie = register(&app, &bearer, "l@shop.test", "9844444444", "password-123").await;

    // Verification links mark the contact verified (reset links and codes go only to
    // verified contacts: README "Account takeover and abuse").
    let (status, body, _) = storefront(
        &app,
        Method::POST,
        &format!("{PROFILE}/email/link/send"),
        &bearer,
        Some(&cookie),
        Some(&json!({"email": "l@shop.test"})),
    )
    .await;
    assert_eq!((status, body), (200, json!({"verify_email_link": true})));
    let code = link_code_for(&app, "mail", "l@shop.test").unwrap();
    let (status, body, _) =
        storefront(&app, Method::POST, &format!("{AUTH}/verify/email"), &bearer, None, Some(&json!({"code": code})))
            .await;
    assert_eq!((status, body), (200, json!({"message": "verified"})));
    let (status, body, _) = storefront(
        &app,
        Method::POST,
        &format!("{PROFILE}/mobile/link/send"),
        &bearer,
        Some(&cookie),
        Some(&json!({"country_code": "91", "phone": "9844444444", "active": true, "primary": true, "verified": false})),
    )
    .await;
    assert_eq!((status, body), (200, json!({"verify_mobile_link": true})));
    let code = link_code_for(&app, "sms", "+919844444444").unwrap();
    let (status, body, _) =
        storefront(&app, Method::POST, &format!("{AUTH}/verify/mobile"), &bearer, None, Some(&json!({"code": code})))
            .await;
    assert_eq!((status, body), (200, json!({"message": "verified"})));
    let (status, body, _) =
        storefront(&app, Method::POST, &format!("{AUTH}/verify/mobile"), &bearer, None, Some(&json!({"code": code})))
            .await;
    assert_error(status, &body, 400, "invalid_code");
    let (_, me, _) = storefront(&app, Method::GET, &format!("{AUTH}/session"), &bearer, Some(&cookie), None).await;
    assert_eq!(me["user"]["emails"][0]["verified"], true);
    assert_eq!(me["user"]["phone_numbers"][0]["verified"], true);

    let (status, body, _) = storefront(
        &app,
        Method::POST,
        &format!("{AUTH}/login/password/reset"),
        &bearer,
        None,
        Some(&json!({"email": "l@shop.test"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"status": "sent"}));
    let code = link_code_for(&app, "mail", "l@shop.test").expect("a reset link was mailed");
    assert!(outbox(&app, "mail").last().unwrap().text.contains("http://shop.test/auth/reset-password?code="));
    let (status, body, _) = storefront(
        &app,
        Method::POST,
        &format!("{AUTH}/login/password/reset/token"),
        &bearer,
        None,
        Some(&json!({"code": code})),
    )
    .await;
    assert_eq!((status, body), (200, json!({"status": "success"})));
    let (status, body, _) = storefront(
        &app,
        Method::POST,
        &format!("{AUTH}/login/password/reset/token"),
        &bearer,
        None,
        Some(&json!({"code": "nope.nope"})),
    )
    .await;
    assert_error(status, &body, 400, "invalid_code");
    let (status, body, set_cookie) = storefront(
        &app,
        Method::POST,
        &format!("{AUTH}/login/password/reset/forgot"),
        &bearer,
        None,
        Some(&json!({"code": code, "password": "password-new"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user"]["emails"][0]["email"], "l@shop.test");
    let fresh = cookie_value(&set_cookie.unwrap());
    let (status, _, _) = storefront(&app, Method::GET, &format!("{AUTH}/session"), &bearer, Some(&fresh), None).await;
    assert_eq!(status, 200, "reset and logged in");
    let (status, _, _) = storefront(&app, Method::GET, &format!("{AUTH}/session"), &bearer, Some(&cookie), None).await;
    assert_eq!(status, 401, "older sessions end");
    let (status, body, _) = storefront(
        &app,
        Method::POST,
        &format!("{AUTH}/login/password/reset/forgot"),
        &bearer,
        None,
        Some(&json!({"code": code, "password": "password-again"})),
    )
    .await;
    assert_error(status, &body, 400, "invalid_code");
    assert_eq!(login(&app, &bearer, "l@shop.test", "password-new").await.0, 200);

    // By text message, and silence for unknown accounts.
    let (status, body, _) = storefront(
        &app,
        Method::POST,
        &format!("{AUTH}/login/password/mobile/reset"),
        &bearer,
        None,
        Some(&json!({"country_code": "91", "mobile": "9844444444"})),
    )
    .await;
    assert_eq!((status, body), (200, json!({"status": "sent"})));
    assert!(link_code_for(&app, "sms", "+919844444444").is_some());
    let (status, body, _) = storefront(
        &app,
        Method::POST,
        &format!("{AUTH}/login/password/reset"),
        &bearer,
        None,
        Some(&json!({"email": "ghost@shop.test"})),
    )
    .await;
    assert_eq!((status, body), (200, json!({"status": "sent"})));
    assert!(link_code_for(&app, "mail", "ghost@shop.test").is_none());

    let (status, body, _) = storefront(
        &app,
        Method::POST,
        &format!("{PROFILE}/email/link/send"),
        &bearer,
        Some(&fresh),
        Some(&json!({"email": "someone@else.test"})),
    )
    .await;
    assert_error(status, &body, 404, "not_found");
});

both_backends!(every_fynd_route_is_in_the_openapi_document, |app: TestApp| async move {
    let (status, doc) = app.get("/openapi.json", None).await;
    assert_eq!(status, 200);
    let p = "/service/platform/user/v1.0/company/{company_id}/application/{application_id}";
    for path in [
        "/application".to_owned(),
        "/application/{id}/token".to_owned(),
        format!("{p}/customers/list"),
        format!("{p}/customers/{{user_id}}"),
        format!("{p}/customers/activation"),
        format!("{p}/platform/config"),
        format!("{p}/user_group/{{group_id}}"),
        format!("{AUTH}/login/password"),
        format!("{AUTH}/login/otp"),
        format!("{AUTH}/otp/forgot/email/verify"),
        format!("{AUTH}/login/password/reset/forgot"),
        format!("{AUTH}/delete"),
        format!("{PROFILE}/user-attributes"),
        "/service/application/user/platform/v1.0/config".to_owned(),
    ] {
        assert!(doc["paths"][&path].is_object(), "{path} missing from /openapi.json");
    }
});

#[actix_web::test]
async fn cors_lets_configured_storefront_origins_call_with_credentials() {
    let app = TestApp::spawn_with(Backend::Sqlite, |cfg| {
        cfg.cors_origins = Some("https://shop.example, https://b.example".into())
    })
    .await
    .unwrap();
    let preflight = |origin: &'static str| {
        app.client
            .request(Method::OPTIONS, app.url(&format!("{AUTH}/login/password")))
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "POST")
            .header(
                "Access-Control-Request-Headers",
                "authorization,content-type,x-fp-sdk-version,x-fp-date,x-fp-signature,x-currency-code",
            )
            .send()
    };
    let res = preflight("https://shop.example").await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["access-control-allow-origin"], "https://shop.example");
    assert_eq!(res.headers()["access-control-allow-credentials"], "true");
    let allowed = res.headers()["access-control-allow-headers"].to_str().unwrap().to_ascii_lowercase();
    assert!(allowed.contains("x-fp-signature") && allowed.contains("x-currency-code"), "{allowed}");
    let res = preflight("https://evil.example").await.unwrap();
    assert!(res.headers().get("access-control-allow-origin").is_none());
    // A simple request from an allowed origin gets the header too, errors included.
    let res = app
        .client
        .get(app.url("/service/application/user/platform/v1.0/config"))
        .header("Origin", "https://b.example")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(res.headers()["access-control-allow-origin"], "https://b.example");
}

both_backends!(session_policy_follows_session_config, |app: TestApp| async move {
    let admin = app.admin_token().await;
    let company = company_of(&app, &admin).await;
    let (app_id, token) = create_app(&app, &admin, "shop").await;
    let bearer = app_bearer(app_id, &token);
    let (status, _) = app
        .post(
            &platform(company, app_id, "/platform/config"),
            Some(&admin),
            &json!({"session_config": {"duration": 2, "type": "Hours", "is_rolling": false}}),
        )
        .await;
    assert_eq!(status, 200);
    register(&app, &bearer, "t@shop.test", "9855555555", "password-123").await;
    let (_, _, set_cookie) = login(&app, &bearer, "t@shop.test", "password-123").await;
    let set_cookie = set_cookie.unwrap();
    assert!(set_cookie.contains("Max-Age=7200"), "{set_cookie}");
    let cookie = cookie_value(&set_cookie);
    // Fixed expiry: use does not refresh the cookie.
    let (status, _, refreshed) =
        storefront(&app, Method::GET, &format!("{AUTH}/session"), &bearer, Some(&cookie), None).await;
    assert_eq!(status, 200);
    assert!(refreshed.is_none());

    // Rolling: a session used after a while is extended and its cookie re-sent.
    app.post(
        &platform(company, app_id, "/platform/config"),
        Some(&admin),
        &json!({"session_config": {"duration": 1, "type": "Days", "is_rolling": true}}),
    )
    .await;
    let (_, _, set_cookie) = login(&app, &bearer, "t@shop.test", "password-123").await;
    let cookie = cookie_value(&set_cookie.unwrap());
    let (_, me, _) = storefront(&app, Method::GET, &format!("{AUTH}/session"), &bearer, Some(&cookie), None).await;
    let user_id: i64 = me["user"]["_id"].as_str().unwrap().parse().unwrap();
    let before = confab::core::types::now() - chrono::Duration::hours(20);
    app.state
        .db
        .write(move |c| {
            use confab::core::db::schema::sessions;
            use diesel::prelude::*;
            diesel::update(sessions::table.filter(sessions::user_id.eq(user_id)))
                .set((sessions::last_seen_at.eq(before), sessions::expires_at.eq(before + chrono::Duration::days(1))))
                .execute(c)?;
            Ok(())
        })
        .await
        .unwrap();
    let (status, _, refreshed) =
        storefront(&app, Method::GET, &format!("{AUTH}/session"), &bearer, Some(&cookie), None).await;
    assert_eq!(status, 200);
    let refreshed = refreshed.expect("a rolling session re-sends its cookie");
    assert!(refreshed.contains("Max-Age=86400"), "{refreshed}");
    let (_, list) =
        app.get(&(platform(company, app_id, "/customers/sessions") + &format!("?id={user_id}")), Some(&admin)).await;
    let newest =
        list["items"].as_array().unwrap().iter().filter_map(|i| i["expire_in"].as_str()).max().unwrap().to_owned();
    let expires = chrono::DateTime::parse_from_rfc3339(&newest).unwrap();
    assert!(expires > chrono::Utc::now() + chrono::Duration::hours(23), "extended from now: {newest}");
});

#[actix_web::test]
async fn storefront_login_is_rate_limited_per_ip() {
    let app = TestApp::spawn_with(Backend::Sqlite, |cfg| cfg.auth_rate_per_minute = 3).await.unwrap();
    let admin = app.admin_token().await;
    let (app_id, token) = create_app(&app, &admin, "shop").await;
    let bearer = app_bearer(app_id, &token);
    // One limit per IP over every auth route of both families: the admin's login above was
    // the first of the 3 requests a minute.
    for _ in 0..2 {
        assert_eq!(login(&app, &bearer, "who@shop.test", "password-123").await.0, 401);
    }
    let res = app
        .client
        .post(app.url(&format!("{AUTH}/login/password")))
        .header("Authorization", format!("Bearer {bearer}"))
        .json(&json!({"username": "who@shop.test", "password": "password-123"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 429);
    assert!(res.headers().get("retry-after").is_some());
    let (status, body) = into_json(res).await;
    assert_error(status, &body, 429, "rate_limited");
    // `user-exists` discloses accounts: it is in the same limit.
    let (status, body, _) =
        storefront(&app, Method::GET, &format!("{AUTH}/user-exists?q=who@shop.test"), &bearer, None, None).await;
    assert_error(status, &body, 429, "rate_limited");
}
