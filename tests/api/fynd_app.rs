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
    assert_eq!(body, json!({"result": true}));
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
    assert_eq!(body, json!({"result": false}));

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
