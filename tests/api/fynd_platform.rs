//! Fynd platform (admin) user API: CONTRACT §9, seeds 000/001 (shapes field by field), the
//! `/application` admin routes of CONTRACT §3, tenancy and account states.

use base64::Engine;
use reqwest::Method;
use serde_json::{Value, json};

use crate::{both_backends, helpers::*};

/// The calling admin's company id.
pub async fn company_of(app: &TestApp, token: &str) -> i64 {
    app.get("/auth/me", Some(token)).await.1["companyId"].as_i64().unwrap()
}

/// Creates an application; returns (application id, application token).
pub async fn create_app(app: &TestApp, token: &str, name: &str) -> (i64, String) {
    let (status, body) =
        app.post("/application", Some(token), &json!({"name": name, "domain": format!("{name}.test")})).await;
    assert_eq!(status, 201, "{body}");
    (body["applicationId"].as_i64().unwrap(), body["token"].as_str().unwrap().to_owned())
}

pub fn app_bearer(id: i64, token: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("{id}:{token}"))
}

pub fn platform(company: i64, application: i64, rest: &str) -> String {
    format!("/service/platform/user/v1.0/company/{company}/application/{application}{rest}")
}

/// A storefront call: application bearer, optional `f.session` cookie; returns status, body
/// and the `Set-Cookie` header.
pub async fn storefront(
    app: &TestApp,
    method: Method,
    path: &str,
    bearer: &str,
    cookie: Option<&str>,
    body: Option<&Value>,
) -> (u16, Value, Option<String>) {
    let mut req = app.client.request(method, app.url(path)).header("Authorization", format!("Bearer {bearer}"));
    if let Some(c) = cookie {
        req = req.header("Cookie", format!("f.session={c}"));
    }
    if let Some(b) = body {
        req = req.json(b);
    }
    let res = req.send().await.unwrap();
    let set_cookie = res.headers().get("set-cookie").map(|v| v.to_str().unwrap().to_owned());
    let (status, body) = into_json(res).await;
    (status, body, set_cookie)
}

/// The `f.session` value of a `Set-Cookie` header.
pub fn cookie_value(set_cookie: &str) -> String {
    let first = set_cookie.split(';').next().unwrap();
    first.strip_prefix("f.session=").expect("f.session cookie").to_owned()
}

/// Registers a storefront customer with a password; returns its cookie value.
pub async fn register(app: &TestApp, bearer: &str, email: &str, mobile: &str, password: &str) -> String {
    let (status, body, set_cookie) = storefront(
        app,
        Method::POST,
        "/service/application/user/authentication/v1.0/register/form",
        bearer,
        None,
        Some(&json!({"first_name": "Akash", "last_name": "Mane", "gender": "male", "email": email,
                      "password": password, "phone": {"country_code": "91", "mobile": mobile}})),
    )
    .await;
    assert_eq!(status, 200, "register: {body}");
    cookie_value(&set_cookie.expect("register sets the session cookie"))
}

pub async fn login(app: &TestApp, bearer: &str, username: &str, password: &str) -> (u16, Value, Option<String>) {
    storefront(
        app,
        Method::POST,
        "/service/application/user/authentication/v1.0/login/password",
        bearer,
        None,
        Some(&json!({"username": username, "password": password})),
    )
    .await
}

fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
    k.sort();
    k
}

both_backends!(applications_are_created_listed_and_rotated, |app: TestApp| async move {
    let admin = app.admin_token().await;
    let (status, list) = app.get("/application", Some(&admin)).await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list.as_array().unwrap().len(), 1, "the Default company has one application: {list}");
    assert_eq!(list[0]["name"], "Default");
    assert_eq!(keys(&list[0]), ["applicationId", "domain", "name"]);

    let (status, created) =
        app.post("/application", Some(&admin), &json!({"name": "Shop", "domain": "Shop.Test"})).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(keys(&created), ["applicationId", "token"]);
    let id = created["applicationId"].as_i64().unwrap();
    let token = created["token"].as_str().unwrap();
    let (_, list) = app.get("/application", Some(&admin)).await;
    assert!(list.as_array().unwrap().iter().any(|a| a["applicationId"] == id && a["domain"] == "shop.test"));
    assert!(!list.to_string().contains(token), "tokens are never listed");

    let config = "/service/application/user/platform/v1.0/config";
    let (status, _, _) = storefront(&app, Method::GET, config, &app_bearer(id, token), None, None).await;
    assert_eq!(status, 200);
    let (status, rotated) = app.post(&format!("/application/{id}/token"), Some(&admin), &json!({})).await;
    assert_eq!(status, 200, "{rotated}");
    let new_token = rotated["token"].as_str().unwrap();
    assert_ne!(new_token, token);
    let (status, body, _) = storefront(&app, Method::GET, config, &app_bearer(id, token), None, None).await;
    assert_error(status, &body, 401, "invalid_application_token");
    let (status, _, _) = storefront(&app, Method::GET, config, &app_bearer(id, new_token), None, None).await;
    assert_eq!(status, 200);

    // Another company's admin cannot see or rotate it; anonymous callers are 401.
    let (other, _) = app.new_company("Other Co").await;
    let (_, theirs) = app.get("/application", Some(&other)).await;
    assert_eq!(theirs, json!([]));
    let (status, body) = app.post(&format!("/application/{id}/token"), Some(&other), &json!({})).await;
    assert_error(status, &body, 404, "not_found");
    let (status, body) = app.get("/application", None).await;
    assert_eq!(status, 401, "{body}");
    let (status, body) = app.post("/application", Some(&admin), &json!({"name": "", "domain": "x.test"})).await;
    assert_error(status, &body, 400, "validation_failed");
});

both_backends!(customers_create_list_search_update_match_the_seed_shapes, |app: TestApp| async move {
    let admin = app.admin_token().await;
    let company = company_of(&app, &admin).await;
    let (app_id, _) = create_app(&app, &admin, "shop").await;

    let (status, created) = app
        .post(
            &(platform(company, app_id, "/customers") + "?verified=true"),
            Some(&admin),
            &json!({"phone_number": "+918652523958", "email": "AkashMane@gofynd.com", "first_name": "Akash",
                    "last_name": "Mane", "gender": "male", "username": "akash", "meta": {"tier": "gold"},
                    "external_id": "100002000036789"}),
        )
        .await;
    assert_eq!(status, 200, "{created}");
    let user = &created["user"];
    assert_eq!(
        keys(user),
        [
            "_id",
            "account_type",
            "active",
            "application_id",
            "created_at",
            "emails",
            "external_id",
            "first_name",
            "gender",
            "last_name",
            "meta",
            "phone_numbers",
            "updated_at",
            "user_id",
            "username"
        ],
        "no nulls, absent optional fields omitted: {user}"
    );
    let id = user["_id"].as_str().expect("_id is a string").to_owned();
    assert_eq!(user["user_id"], id.as_str());
    assert_eq!(user["application_id"], app_id.to_string());
    assert_eq!(user["account_type"], "user");
    assert_eq!(user["active"], true);
    assert_eq!(user["meta"], json!({"tier": "gold"}));
    assert_eq!(user["external_id"], "100002000036789");
    assert_eq!(
        user["emails"],
        json!([{"email": "akashmane@gofynd.com", "active": true, "primary": true, "verified": true}])
    );
    assert_eq!(
        user["phone_numbers"],
        json!([{"phone": "8652523958", "country_code": 91, "active": true, "primary": true, "verified": true}])
    );
    assert!(user["created_at"].as_str().unwrap().ends_with('Z'));

    // Same phone again: one person, one account.
    let (status, body) = app
        .post(&platform(company, app_id, "/customers"), Some(&admin), &json!({"phone_number": "+91 86525 23958"}))
        .await;
    assert_error(status, &body, 409, "user_exists");
    let (status, body) =
        app.post(&platform(company, app_id, "/customers"), Some(&admin), &json!({"phone_number": "12"})).await;
    assert_error(status, &body, 400, "validation_failed");
    assert!(body["fields"]["phone_number"].is_string(), "{body}");

    for (i, phone) in ["+14155550101", "+14155550102"].iter().enumerate() {
        let (status, body) = app
            .post(
                &platform(company, app_id, "/customers"),
                Some(&admin),
                &json!({"phone_number": phone, "first_name": format!("C{i}")}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["user"]["phone_numbers"][0]["verified"], false);
        assert_eq!(body["user"]["emails"], json!([]));
    }

    let (status, page1) =
        app.get(&(platform(company, app_id, "/customers/list") + "?page_size=2&page_no=1"), Some(&admin)).await;
    assert_eq!(status, 200, "{page1}");
    assert_eq!(page1["page"], json!({"type": "number", "current": 1, "size": 2, "item_total": 3, "has_next": true}));
    assert_eq!(page1["items"].as_array().unwrap().len(), 2);
    assert_eq!(page1["items"][0]["_id"], id.as_str());
    assert_eq!(page1["items"][0]["status"], "active");
    assert_eq!(page1["items"][0]["archive"], false);
    let (_, page2) =
        app.get(&(platform(company, app_id, "/customers/list") + "?page_size=2&page_no=2"), Some(&admin)).await;
    assert_eq!(page2["page"], json!({"type": "number", "current": 2, "size": 2, "item_total": 3, "has_next": false}));
    assert_eq!(page2["items"].as_array().unwrap().len(), 1);
    let (_, defaults) = app.get(&platform(company, app_id, "/customers/list"), Some(&admin)).await;
    assert_eq!(defaults["page"]["size"], 10);
    let (status, body) = app.get(&(platform(company, app_id, "/customers/list") + "?page_size=0"), Some(&admin)).await;
    assert_error(status, &body, 400, "validation_failed");
    let (status, body) = app.get(&(platform(company, app_id, "/customers/list") + "?page_no=x"), Some(&admin)).await;
    assert_error(status, &body, 400, "invalid_query");

    let (_, by_email) = app.get(&(platform(company, app_id, "/customers/list") + "?q=akashmane"), Some(&admin)).await;
    assert_eq!(by_email["page"]["item_total"], 1, "{by_email}");
    let (status, search) =
        app.get(&(platform(company, app_id, "/customers/search") + "?q=8652523958"), Some(&admin)).await;
    assert_eq!(status, 200, "{search}");
    assert_eq!(search["users"].as_array().unwrap().len(), 1);
    assert_eq!(search["users"][0]["_id"], id.as_str());
    let (_, none) =
        app.get(&(platform(company, app_id, "/customers/search") + "?q=nobody@nowhere.test"), Some(&admin)).await;
    assert_eq!(none, json!({"users": []}));

    // updateUser: sent phone_numbers and emails replace the existing ones.
    let (status, updated) = app
        .put(
            &platform(company, app_id, &format!("/customers/{id}")),
            Some(&admin),
            &json!({"first_name": "Akash K", "dob": "1995-07-23", "meta": {},
                    "phone_numbers": [{"phone": "8652523959", "country_code": "91", "active": true, "primary": true, "verified": true}],
                    "emails": [{"email": "a@fynd.test", "active": true, "primary": false, "verified": false},
                               {"email": "b@fynd.test", "active": true, "primary": true, "verified": true}]}),
        )
        .await;
    assert_eq!(status, 200, "{updated}");
    let u = &updated["user"];
    assert_eq!(u["first_name"], "Akash K");
    assert_eq!(u["last_name"], "Mane");
    assert_eq!(u["dob"], "1995-07-23");
    assert_eq!(
        u["phone_numbers"],
        json!([{"phone": "8652523959", "country_code": 91, "active": true, "primary": true, "verified": true}])
    );
    assert_eq!(u["emails"][0], json!({"email": "b@fynd.test", "active": true, "primary": true, "verified": true}));
    assert_eq!(u["emails"][1]["primary"], false);
    // The released number can be used again.
    let (status, _) = app
        .post(&platform(company, app_id, "/customers"), Some(&admin), &json!({"phone_number": "+918652523958"}))
        .await;
    assert_eq!(status, 200);
    let (status, body) =
        app.put(&platform(company, app_id, "/customers/999999"), Some(&admin), &json!({"first_name": "x"})).await;
    assert_error(status, &body, 404, "not_found");
});

both_backends!(other_companies_and_applications_are_404, |app: TestApp| async move {
    let admin = app.admin_token().await;
    let company = company_of(&app, &admin).await;
    let (app1, _) = create_app(&app, &admin, "one").await;
    let (app2, _) = create_app(&app, &admin, "two").await;
    let (other, _) = app.new_company("Rival").await;
    let other_company = company_of(&app, &other).await;
    let (other_app, _) = create_app(&app, &other, "rival").await;

    let (_, created) =
        app.post(&platform(company, app1, "/customers"), Some(&admin), &json!({"phone_number": "+14155550111"})).await;
    let id = created["user"]["_id"].as_str().unwrap().to_owned();

    for path in [
        platform(company, app1, "/customers/list"),
        platform(company, other_app, "/customers/list"),
        platform(company, app1, "/platform/config"),
    ] {
        let (status, body) = app.get(&path, Some(&other)).await;
        assert_error(status, &body, 404, "not_found");
    }
    let (status, body) = app.get(&platform(company, other_app, "/platform/config"), Some(&admin)).await;
    assert_error(status, &body, 404, "not_found");
    let (status, body) = app.get(&platform(other_company, other_app, "/platform/config"), Some(&admin)).await;
    assert_error(status, &body, 404, "not_found");
    let (status, body) = app.get(&platform(company, 424242, "/customers/list"), Some(&admin)).await;
    assert_error(status, &body, 404, "not_found");

    // The customer belongs to application one, not two.
    let (status, body) =
        app.put(&platform(company, app2, &format!("/customers/{id}")), Some(&admin), &json!({"first_name": "x"})).await;
    assert_error(status, &body, 404, "not_found");
    let (status, body) = app
        .put(
            &platform(company, app2, "/customers/activation"),
            Some(&admin),
            &json!({"status": false, "user_id": [id], "reason": "x"}),
        )
        .await;
    assert_error(status, &body, 404, "not_found");
    let (_, list2) = app.get(&platform(company, app2, "/customers/list"), Some(&admin)).await;
    assert_eq!(list2["page"]["item_total"], 0);
    // Staff are never customers.
    let me = app.get("/auth/me", Some(&admin)).await.1["userId"].as_i64().unwrap();
    let (status, body) =
        app.get(&(platform(company, app1, "/customers/sessions") + &format!("?id={me}")), Some(&admin)).await;
    assert_error(status, &body, 404, "not_found");
    let (status, body) = app.get(&platform(company, app1, "/customers/list"), None).await;
    assert_eq!(status, 401, "{body}");
});

both_backends!(block_ends_sessions_and_login_until_unblocked, |app: TestApp| async move {
    let admin = app.admin_token().await;
    let company = company_of(&app, &admin).await;
    let (app_id, token) = create_app(&app, &admin, "shop").await;
    let bearer = app_bearer(app_id, &token);
    let cookie = register(&app, &bearer, "ada@shop.test", "9876543210", "password-123").await;
    let session = "/service/application/user/authentication/v1.0/session";
    let (status, me, _) = storefront(&app, Method::GET, session, &bearer, Some(&cookie), None).await;
    assert_eq!(status, 200, "{me}");
    let id = me["user"]["_id"].as_str().unwrap().to_owned();
    let (status, _, _) = login(&app, &bearer, "ada@shop.test", "password-123").await;
    assert_eq!(status, 200);
    let (_, sessions) =
        app.get(&(platform(company, app_id, "/customers/sessions") + &format!("?id={id}")), Some(&admin)).await;
    assert_eq!(sessions["items"].as_array().unwrap().len(), 2, "{sessions}");

    let (status, body) = app
        .put(
            &platform(company, app_id, "/customers/activation"),
            Some(&admin),
            &json!({"status": false, "user_id": [id], "reason": "fraud"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"success": true}));
    let (status, body, _) = storefront(&app, Method::GET, session, &bearer, Some(&cookie), None).await;
    assert_error(status, &body, 401, "unauthenticated");
    let (status, body, set_cookie) = login(&app, &bearer, "ada@shop.test", "password-123").await;
    assert_error(status, &body, 401, "invalid_credentials");
    assert!(set_cookie.is_none());
    let (_, sessions) =
        app.get(&(platform(company, app_id, "/customers/sessions") + &format!("?id={id}")), Some(&admin)).await;
    assert_eq!(sessions, json!({"items": []}));
    let (_, list) = app.get(&platform(company, app_id, "/customers/list"), Some(&admin)).await;
    assert_eq!(list["items"][0]["status"], "blocked");
    assert_eq!(list["items"][0]["active"], false);

    let (status, _) = app
        .put(
            &platform(company, app_id, "/customers/activation"),
            Some(&admin),
            &json!({"status": true, "user_id": [id], "reason": "ok"}),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _, _) = login(&app, &bearer, "ada@shop.test", "password-123").await;
    assert_eq!(status, 200);
});

both_backends!(archive_releases_contacts_and_undelete_restores, |app: TestApp| async move {
    let admin = app.admin_token().await;
    let company = company_of(&app, &admin).await;
    let (app_id, token) = create_app(&app, &admin, "shop").await;
    let bearer = app_bearer(app_id, &token);
    let cookie = register(&app, &bearer, "bo@shop.test", "9876500001", "password-123").await;
    let (_, me, _) = storefront(
        &app,
        Method::GET,
        "/service/application/user/authentication/v1.0/session",
        &bearer,
        Some(&cookie),
        None,
    )
    .await;
    let id = me["user"]["_id"].as_str().unwrap().to_owned();

    let (status, body) =
        app.put(&platform(company, app_id, "/customers/archive"), Some(&admin), &json!({"user_id": id})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"success": true}));
    let (status, _, _) = storefront(
        &app,
        Method::GET,
        "/service/application/user/authentication/v1.0/session",
        &bearer,
        Some(&cookie),
        None,
    )
    .await;
    assert_eq!(status, 401);
    let (status, _, _) = login(&app, &bearer, "bo@shop.test", "password-123").await;
    assert_eq!(status, 401);
    // Archived: the same mobile and e-mail can register again, as a new account.
    let cookie2 = register(&app, &bearer, "bo@shop.test", "9876500001", "password-456").await;
    let (_, me2, _) = storefront(
        &app,
        Method::GET,
        "/service/application/user/authentication/v1.0/session",
        &bearer,
        Some(&cookie2),
        None,
    )
    .await;
    assert_ne!(me2["user"]["_id"], id.as_str());

    // Undelete: a storefront-deleted user inside the grace period comes back.
    let id2: i64 = me2["user"]["_id"].as_str().unwrap().parse().unwrap();
    let (status, body) = app
        .put(
            &platform(company, app_id, "/customers/undelete"),
            Some(&admin),
            &json!({"user_id": id2.to_string(), "reason": "oops", "reason_id": "1"}),
        )
        .await;
    assert_error(status, &body, 422, "not_deleted");
    app.state
        .db
        .write(move |c| confab::users::customer::set_status(c, id2, "deleted", Some(confab::core::types::now())))
        .await
        .unwrap();
    let (status, _, _) = login(&app, &bearer, "bo@shop.test", "password-456").await;
    assert_eq!(status, 401, "deleted users cannot log in");
    let (status, body) = app
        .put(
            &platform(company, app_id, "/customers/undelete"),
            Some(&admin),
            &json!({"user_id": id2.to_string(), "reason": "oops", "reason_id": "1"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, _, _) = login(&app, &bearer, "bo@shop.test", "password-456").await;
    assert_eq!(status, 200);
});

both_backends!(platform_sessions_create_list_delete, |app: TestApp| async move {
    let admin = app.admin_token().await;
    let company = company_of(&app, &admin).await;
    let (app_id, token) = create_app(&app, &admin, "shop").await;
    let bearer = app_bearer(app_id, &token);
    let (_, created) = app
        .post(&platform(company, app_id, "/customers"), Some(&admin), &json!({"phone_number": "+14155550123"}))
        .await;
    let id = created["user"]["_id"].as_str().unwrap().to_owned();

    let (status, s) = app
        .post(
            &platform(company, app_id, "/customers/session"),
            Some(&admin),
            &json!({"user_id": id, "domain": "vinit.com", "max_age": 4555555}),
        )
        .await;
    assert_eq!(status, 200, "{s}");
    assert_eq!(keys(&s), ["cookie", "domain", "http_only", "max_age", "secure"]);
    assert_eq!(s["domain"], "vinit.com");
    assert_eq!(s["max_age"], 4555555);
    assert_eq!(s["http_only"], true);
    assert_eq!(s["secure"], false, "public URL is http in tests");
    let value = s["cookie"]["f.session"].as_str().expect("cookie is an object with f.session").to_owned();
    assert!(value.starts_with("s%3A"), "{value}");
    let session = "/service/application/user/authentication/v1.0/session";
    let (status, me, _) = storefront(&app, Method::GET, session, &bearer, Some(&value), None).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["user"]["_id"], id.as_str());
    let (_, s2) =
        app.post(&platform(company, app_id, "/customers/session"), Some(&admin), &json!({"user_id": id})).await;
    assert_eq!(s2["domain"], "shop.test", "defaults to the application's domain");
    assert_eq!(s2["max_age"], 30 * 86400, "defaults to session_config");

    let (status, list) =
        app.get(&(platform(company, app_id, "/customers/sessions") + &format!("?id={id}")), Some(&admin)).await;
    assert_eq!(status, 200, "{list}");
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    let first = items.iter().find(|i| i["domain"] == "vinit.com").unwrap();
    assert_eq!(keys(first), ["domain", "expire_in", "ip", "session_id", "user_agent"]);
    assert!(first["expire_in"].is_string());
    assert_eq!(first["ip"], "127.0.0.1");
    let sid = first["session_id"].as_str().unwrap().to_owned();

    let (status, body) = app.get(&platform(company, app_id, "/customers/sessions"), Some(&admin)).await;
    assert_error(status, &body, 400, "invalid_query");
    let (status, del) = app
        .delete(
            &(platform(company, app_id, "/customers/session") + &format!("?id={id}&session_id={sid}&reason=lost")),
            Some(&admin),
        )
        .await;
    assert_eq!(status, 200, "{del}");
    assert_eq!(del, json!({"user_id": id, "session_id": sid}));
    let (status, _, _) = storefront(&app, Method::GET, session, &bearer, Some(&value), None).await;
    assert_eq!(status, 401);
    let (status, body) = app
        .delete(
            &(platform(company, app_id, "/customers/session") + &format!("?id={id}&session_id={sid}&reason=lost")),
            Some(&admin),
        )
        .await;
    assert_error(status, &body, 404, "not_found");

    let (status, all) = app
        .delete(&(platform(company, app_id, "/customers/sessions") + &format!("?id={id}&reason=reset")), Some(&admin))
        .await;
    assert_eq!(status, 200, "{all}");
    assert_eq!(all["user_id"], id.as_str());
    assert_eq!(all["session_ids"].as_array().unwrap().len(), 1);
    let (_, list) =
        app.get(&(platform(company, app_id, "/customers/sessions") + &format!("?id={id}")), Some(&admin)).await;
    assert_eq!(list, json!({"items": []}));
});

both_backends!(platform_config_defaults_merge_and_drive_login, |app: TestApp| async move {
    let admin = app.admin_token().await;
    let company = company_of(&app, &admin).await;
    let (app_id, token) = create_app(&app, &admin, "shop").await;
    let bearer = app_bearer(app_id, &token);
    let path = platform(company, app_id, "/platform/config");
    let (status, cfg) = app.get(&path, Some(&admin)).await;
    assert_eq!(status, 200, "{cfg}");
    for key in [
        "active",
        "mobile_image",
        "desktop_image",
        "social",
        "flash_card",
        "register",
        "forgot_password",
        "login",
        "skip_captcha",
        "display",
        "subtext",
        "name",
        "meta",
        "required_fields",
        "register_required_fields",
        "skip_login",
        "look_and_feel",
        "social_tokens",
        "session_config",
        "delete_account_reasons",
        "delete_account_day",
        "delete_account_consent",
        "_id",
        "created_at",
        "updated_at",
        "__v",
    ] {
        assert!(cfg.get(key).is_some(), "{key} missing in {cfg}");
    }
    assert!(!cfg.to_string().contains("null"), "never null: {cfg}");
    assert_eq!(cfg["_id"], app_id.to_string());
    assert_eq!(cfg["session_config"], json!({"duration": 30, "type": "Days", "is_rolling": false}));
    assert_eq!(cfg["delete_account_consent"], json!({"consent_text": ""}));
    assert_eq!(cfg["login"], json!({"password": true, "otp": true}));

    let (status, updated) = app
        .post(
            &path,
            Some(&admin),
            &json!({"login": {"password": false}, "display": "My Shop", "_id": "nope",
              "delete_account_reasons": [{"reason_text": "test", "reason_id": "123", "show_text_area": true}],
              "social_tokens": {"facebook": {"app_id": "fb1", "app_secret": "hush"}}}),
        )
        .await;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(updated["login"], json!({"password": false, "otp": true}));
    assert_eq!(updated["display"], "My Shop");
    assert_eq!(updated["_id"], app_id.to_string());
    assert_eq!(updated["__v"], 1);
    assert_eq!(updated["social_tokens"]["facebook"], json!({"app_id": "fb1"}), "secrets are write-only");
    assert_eq!(updated["delete_account_reasons"][0]["reason_id"], "123");
    let (_, again) = app.get(&path, Some(&admin)).await;
    assert_eq!(again, updated);
    let (status, seen, _) =
        storefront(&app, Method::GET, "/service/application/user/platform/v1.0/config?name=shop", &bearer, None, None)
            .await;
    assert_eq!(status, 200);
    assert_eq!(seen, updated);

    let (status, body) = app.post(&path, Some(&admin), &json!({"session_config": {"duration": "long"}})).await;
    assert_error(status, &body, 400, "validation_failed");
    assert!(body["fields"]["session_config.duration"].is_string(), "{body}");
    let (status, body) = app.post(&path, Some(&admin), &json!([1])).await;
    assert_error(status, &body, 400, "invalid_body");

    // Password login is off for this application now.
    let (status, body, _) = login(&app, &bearer, "x@shop.test", "password-123").await;
    assert_error(status, &body, 403, "password_login_disabled");
    let (status, _) = app.post(&path, Some(&admin), &json!({"login": {"password": true}, "register": false})).await;
    assert_eq!(status, 200);
    let (status, body, _) = storefront(&app, Method::POST, "/service/application/user/authentication/v1.0/register/form", &bearer, None,
        Some(&json!({"email": "x@shop.test", "password": "password-123", "phone": {"country_code": "91", "mobile": "9876543219"}}))).await;
    assert_error(status, &body, 403, "registration_disabled");
});

both_backends!(user_groups_create_list_update_and_members, |app: TestApp| async move {
    let admin = app.admin_token().await;
    let company = company_of(&app, &admin).await;
    let (app_id, _) = create_app(&app, &admin, "shop").await;
    let (app2, _) = create_app(&app, &admin, "other").await;
    let (_, a) = app
        .post(
            &platform(company, app_id, "/customers"),
            Some(&admin),
            &json!({"phone_number": "+14155550131", "email": "a@g.test"}),
        )
        .await;
    let (_, b) = app
        .post(&platform(company, app_id, "/customers"), Some(&admin), &json!({"phone_number": "+14155550132"}))
        .await;
    let a_id: i64 = a["user"]["_id"].as_str().unwrap().parse().unwrap();
    let b_id: i64 = b["user"]["_id"].as_str().unwrap().parse().unwrap();

    let (status, g) = app
        .post(
            &platform(company, app_id, "/user_group"),
            Some(&admin),
            &json!({"name": "Group 1", "description": "description", "file_url": "url"}),
        )
        .await;
    assert_eq!(status, 200, "{g}");
    assert_eq!(
        keys(&g),
        [
            "__v",
            "_id",
            "application_id",
            "conditions",
            "created_at",
            "description",
            "file_url",
            "is_active",
            "modified_at",
            "name",
            "status",
            "type",
            "uid"
        ]
    );
    assert!(g["_id"].is_string() && g["uid"].is_i64());
    assert_eq!(g["application_id"], app_id.to_string());
    assert_eq!(g["is_active"], true);
    let gid = g["_id"].as_str().unwrap().to_owned();
    let (_, g2) = app
        .post(&platform(company, app_id, "/user_group"), Some(&admin), &json!({"name": "VIP", "description": ""}))
        .await;
    assert!(g2.get("file_url").is_none(), "absent, not null: {g2}");
    let (status, body) =
        app.post(&platform(company, app_id, "/user_group"), Some(&admin), &json!({"description": "x"})).await;
    assert_error(status, &body, 400, "invalid_json");
    let (status, body) = app
        .post(&platform(company, app_id, "/user_group"), Some(&admin), &json!({"name": " ", "description": "x"}))
        .await;
    assert_error(status, &body, 400, "validation_failed");

    let (status, list) = app.get(&(platform(company, app_id, "/user_group") + "?page_size=1"), Some(&admin)).await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["page"], json!({"type": "number", "current": 1, "size": 1, "item_total": 2, "has_next": true}));
    let (_, named) = app.get(&(platform(company, app_id, "/user_group") + "?name=VI"), Some(&admin)).await;
    assert_eq!(named["items"].as_array().unwrap().len(), 1);
    assert_eq!(named["items"][0]["name"], "VIP");
    let (status, one) = app.get(&platform(company, app_id, &format!("/user_group/{gid}")), Some(&admin)).await;
    assert_eq!(status, 200);
    assert_eq!(one, g);
    let (status, body) = app.get(&platform(company, app2, &format!("/user_group/{gid}")), Some(&admin)).await;
    assert_error(status, &body, 404, "not_found");

    let (status, put) = app
        .put(
            &platform(company, app_id, &format!("/user_group/{gid}")),
            Some(&admin),
            &json!({"name": "Group One", "description": "d2"}),
        )
        .await;
    assert_eq!(status, 200, "{put}");
    assert_eq!(put["name"], "Group One");
    assert_eq!(put["file_url"], "url");

    let (status, patched) = app
        .patch(
            &platform(company, app_id, &format!("/user_group/{gid}")),
            Some(&admin),
            &json!({"description": "d3", "user_data": [{"user_id": a_id.to_string(), "action": "add"},
                    {"phone_number": "+14155550132", "action": "add"}, {"email": "a@g.test", "action": "add"}]}),
        )
        .await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched["description"], "d3");
    let group: i64 = gid.parse().unwrap();
    let members = app.state.db.run(move |c| confab::users::group::members(c, group)).await.unwrap();
    assert_eq!(members, vec![a_id, b_id]);
    let (status, _) = app
        .patch(
            &platform(company, app_id, &format!("/user_group/{gid}")),
            Some(&admin),
            &json!({"user_data": [{"email": "a@g.test", "action": "remove"}]}),
        )
        .await;
    assert_eq!(status, 200);
    let members = app.state.db.run(move |c| confab::users::group::members(c, group)).await.unwrap();
    assert_eq!(members, vec![b_id]);
    let (status, body) = app
        .patch(
            &platform(company, app_id, &format!("/user_group/{gid}")),
            Some(&admin),
            &json!({"user_data": [{"email": "nobody@g.test", "action": "add"}]}),
        )
        .await;
    assert_error(status, &body, 400, "validation_failed");
    assert!(body["fields"]["user_data[0]"].is_string(), "{body}");
    let (status, body) = app
        .patch(
            &platform(company, app_id, &format!("/user_group/{gid}")),
            Some(&admin),
            &json!({"user_data": [{"user_id": "1", "action": "explode"}]}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
});

both_backends!(conditional_user_groups_follow_customer_attributes, |app: TestApp| async move {
    let admin = app.admin_token().await;
    let company = company_of(&app, &admin).await;
    let (app_id, token) = create_app(&app, &admin, "rules").await;
    let bearer = app_bearer(app_id, &token);
    // Three storefront customers with attributes set as the customers set them.
    let mut ids = Vec::new();
    for (i, attributes) in [
        json!({"tier": "gold", "orders": 12, "tags": ["sale"]}),
        json!({"tier": "silver", "orders": 3}),
        json!({"tier": "gold", "orders": 2}),
    ]
    .into_iter()
    .enumerate()
    {
        let cookie =
            register(&app, &bearer, &format!("r{i}@shop.test"), &format!("987650000{i}"), "password-123").await;
        let (status, body, _) = storefront(
            &app,
            Method::PATCH,
            "/service/application/user/profile/v1.0/user-attributes",
            &bearer,
            Some(&cookie),
            Some(&json!({"attributes": attributes})),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let (_, me, _) = storefront(
            &app,
            Method::GET,
            "/service/application/user/authentication/v1.0/session",
            &bearer,
            Some(&cookie),
            None,
        )
        .await;
        ids.push((me["user"]["_id"].as_str().unwrap().parse::<i64>().unwrap(), cookie));
    }
    let groups = platform(company, app_id, "/user_group");
    // The SDK's shape: `conditions: [{user_attribute_definition_id, type, value}]`.
    let rules = json!([{"user_attribute_definition_id": "tier", "type": "eq", "value": "gold"},
                       {"user_attribute_definition_id": "orders", "type": "gte", "value": "10"}]);
    let (status, g) = app
        .post(&groups, Some(&admin), &json!({"name": "Loyal", "description": "gold, 10+ orders", "conditions": rules}))
        .await;
    assert_eq!(status, 200, "{g}");
    assert_eq!((&g["type"], &g["conditions"]), (&json!("conditional"), &rules));
    let gid: i64 = g["uid"].as_i64().unwrap();
    let members = |app: &TestApp| {
        let state = app.state.clone();
        async move { state.db.run(move |c| confab::users::group::members(c, gid)).await.unwrap() }
    };
    assert_eq!(members(&app).await, vec![ids[0].0]);
    // Members follow attribute changes: the third customer reaches 10 orders.
    let (status, _, _) = storefront(
        &app,
        Method::PATCH,
        "/service/application/user/profile/v1.0/user-attributes",
        &bearer,
        Some(&ids[2].1),
        Some(&json!({"attributes": {"orders": 10}})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(members(&app).await, vec![ids[0].0, ids[2].0]);
    // The rules can be replaced; members cannot be listed by hand.
    let path = platform(company, app_id, &format!("/user_group/{gid}"));
    let silver = json!([{"user_attribute_definition_id": "tier", "type": "in", "value": "silver, bronze"}]);
    let (status, put) = app.put(&path, Some(&admin), &json!({"conditions": silver})).await;
    assert_eq!((status, &put["conditions"]), (200, &silver), "{put}");
    assert_eq!(members(&app).await, vec![ids[1].0]);
    let (status, body) = app
        .patch(&path, Some(&admin), &json!({"user_data": [{"user_id": ids[0].0.to_string(), "action": "add"}]}))
        .await;
    assert_error(status, &body, 400, "validation_failed");
    assert!(body["fields"]["user_data"].is_string(), "{body}");

    // Refused: an unknown comparison, no rules for a conditional group, rules on a basic
    // group, and turning a conditional group into a listed one.
    for bad in [
        json!({"name": "x", "conditions": [{"user_attribute_definition_id": "tier", "type": "like", "value": "g"}]}),
        json!({"name": "x", "type": "conditional"}),
        json!({"name": "x", "type": "conditional", "conditions": []}),
        json!({"name": "x", "type": "basic", "conditions": rules}),
        json!({"name": "x", "conditions": [{"user_attribute_definition_id": "", "type": "eq", "value": "g"}]}),
    ] {
        let (status, body) = app.post(&groups, Some(&admin), &bad).await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
    let (status, body) = app.patch(&path, Some(&admin), &json!({"type": "basic"})).await;
    assert_error(status, &body, 400, "validation_failed");
    let (status, basic) = app.post(&groups, Some(&admin), &json!({"name": "Plain"})).await;
    assert_eq!((status, &basic["conditions"]), (200, &json!([])));
    let plain = platform(company, app_id, &format!("/user_group/{}", basic["uid"]));
    let (status, body) = app.put(&plain, Some(&admin), &json!({"conditions": rules})).await;
    assert_error(status, &body, 400, "validation_failed");
});

both_backends!(whatsapp_contact_and_storefront_user_are_one_identity, |app: TestApp| async move {
    let admin = app.admin_token().await;
    let company = company_of(&app, &admin).await;
    let (app_id, token) = create_app(&app, &admin, "shop").await;
    let bearer = app_bearer(app_id, &token);
    let contact = app
        .state
        .db
        .write(move |c| {
            let phone: confab::core::types::Phone = "+918888877777".parse().unwrap();
            confab::users::store::create_person(
                c,
                company,
                confab::core::types::Role::Customer,
                "Wa",
                "Contact",
                None,
                None,
                Some(&phone),
                false,
            )
        })
        .await
        .unwrap();
    // The contact shows in the platform list before it ever registers.
    let (_, list) = app.get(&(platform(company, app_id, "/customers/list") + "?q=8888877777"), Some(&admin)).await;
    assert_eq!(list["items"][0]["_id"], contact.id.to_string(), "{list}");
    // Typing the number is not enough to claim the contact...
    let (status, body, _) = storefront(&app, Method::POST, "/service/application/user/authentication/v1.0/register/form", &bearer, None,
        Some(&json!({"email": "wa@shop.test", "password": "password-123", "phone": {"country_code": "91", "mobile": "8888877777"}}))).await;
    assert_error(status, &body, 409, "user_exists");
    // ...proving it by OTP is: the contact logs in as itself.
    let (status, sent, _) = storefront(
        &app,
        Method::POST,
        "/service/application/user/authentication/v1.0/login/otp",
        &bearer,
        None,
        Some(&json!({"country_code": "91", "mobile": "8888877777"})),
    )
    .await;
    assert_eq!(status, 200, "{sent}");
    assert_eq!(sent["user_exists"], true);
    let sms = std::fs::read_dir(app.data_dir().join("outbox/sms")).unwrap().next().unwrap().unwrap().path();
    let text = std::fs::read_to_string(sms).unwrap();
    let code = text.split(|c: char| !c.is_ascii_digit()).find(|w| w.len() == 6).unwrap().to_owned();
    let (status, me, _) = storefront(
        &app,
        Method::POST,
        "/service/application/user/authentication/v1.0/otp/mobile/verify",
        &bearer,
        None,
        Some(&json!({"request_id": sent["request_id"], "otp": code})),
    )
    .await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["user_exists"], true);
    assert_eq!(me["user"]["_id"], contact.id.to_string(), "the same user row: {me}");
    assert_eq!(me["user"]["first_name"], "Wa");
    assert_eq!(me["user"]["application_id"], app_id.to_string());
    assert_eq!(me["user"]["phone_numbers"][0]["verified"], true);
    // An admin may adopt a contact by its phone without proof.
    let other = app
        .state
        .db
        .write(move |c| {
            let phone: confab::core::types::Phone = "+918888866666".parse().unwrap();
            confab::users::store::create_person(
                c,
                company,
                confab::core::types::Role::Customer,
                "",
                "",
                None,
                None,
                Some(&phone),
                false,
            )
        })
        .await
        .unwrap();
    let (status, adopted) = app
        .post(
            &platform(company, app_id, "/customers"),
            Some(&admin),
            &json!({"phone_number": "+918888866666", "first_name": "Named", "email": "named@shop.test"}),
        )
        .await;
    assert_eq!(status, 200, "{adopted}");
    assert_eq!(adopted["user"]["_id"], other.id.to_string());
    assert_eq!(adopted["user"]["first_name"], "Named");
    let (_, list) = app.get(&platform(company, app_id, "/customers/list"), Some(&admin)).await;
    assert_eq!(list["page"]["item_total"], 2);
});
