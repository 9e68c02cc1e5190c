//! Issue 18 item 2: the seeds' request shapes accepted as written (README "Seed shapes"). Each
//! test sends a body exactly as a seed's client does (every field of the seed's schema, blanks
//! included) and checks it does what the seed means.

use serde_json::{Value, json};

use crate::{
    both_backends,
    helpers::*,
    media::{pdf, png, upload},
    webhooks::{Mock, Reply},
};

// ---- messaging (seed 004 `POST /message`) ----

/// A customer who wrote in (window open): (conversation id, customer user id).
async fn customer(app: &TestApp, co: &Company, phone: &str) -> (i64, i64) {
    let conv = app.customer_says(co, phone, "hello").await;
    let (_, list) = app.get("/conversation/conversation-page-list?limit=100", Some(&co.agent)).await;
    let user = list["data"].as_array().unwrap().iter().find(|c| c["conversationId"] == conv).unwrap()["userId"]
        .as_i64()
        .unwrap();
    (conv, user)
}

/// Seed 004's body: every field present, blanks for those that do not apply.
fn seed_message(to: i64, kind: &str, text: &str, media_url: &str, document_type: &str, attachment_id: Value) -> Value {
    json!({"direction": "SENT", "to": to, "companyName": 1, "text": text, "mediaUrl": media_url,
           "documentType": document_type, "type": kind, "attachmentId": attachment_id})
}

both_backends!(seed_text_message_is_sent_as_written, |app: TestApp| async move {
    let co = app.default_company().await;
    let (conv, user) = customer(&app, &co, "+14155550161").await;
    for (kind, attachment) in [("TEXT", json!(0)), ("Text", Value::Null), ("text", json!("0"))] {
        let text = format!("hello as {kind}");
        let (status, sent) =
            app.post("/message", Some(&co.agent), &seed_message(user, kind, &text, "", "", attachment)).await;
        assert_eq!(status, 201, "{sent}");
        assert_eq!(sent["content"], text.as_str());
        assert_eq!(sent["conversationId"], conv);
        assert_eq!(sent["attachments"], json!([]));
    }
    // An unknown type is still a validation error naming the field.
    let (status, body) =
        app.post("/message", Some(&co.agent), &seed_message(user, "STICKERS", "x", "", "", json!(0))).await;
    assert_error(status, &body, 400, "validation_failed");
});

both_backends!(seed_media_message_honours_document_type, |app: TestApp| async move {
    let co = app.default_company().await;
    let (_, user) = customer(&app, &co, "+14155550162").await;
    let (status, saved) = upload(&app, &co.agent, "ice.png", &png(2, 2, 0)).await;
    assert_eq!(status, 201, "{saved}");
    let id = saved["attachmentId"].as_i64().unwrap();
    let (status, sent) =
        app.post("/message", Some(&co.agent), &seed_message(user, "IMAGE", "look", "", "IMAGE", json!(id))).await;
    assert_eq!(status, 201, "{sent}");
    assert_eq!(sent["attachments"][0]["attachmentId"], id);
    assert_eq!(sent["attachments"][0]["type"], "IMAGE");
    assert_eq!(sent["content"], "look");
    // The seed's "relative url of the media file": our own `/media/{id}` path.
    let (_, saved) = upload(&app, &co.agent, "ice3.png", &png(2, 2, 0)).await;
    let id3 = saved["attachmentId"].as_i64().unwrap();
    let (status, sent) = app
        .post(
            "/message",
            Some(&co.agent),
            &seed_message(user, "IMAGE", "", &format!("/media/{id3}"), "IMAGE", json!(0)),
        )
        .await;
    assert_eq!(status, 201, "{sent}");
    assert_eq!(sent["attachments"][0]["attachmentId"], id3);
    // `type: TEXT` with an attachment is a media message with a caption, not a dropped file.
    let (_, saved) = upload(&app, &co.agent, "ice2.png", &png(2, 2, 0)).await;
    let id2 = saved["attachmentId"].as_i64().unwrap();
    let (status, sent) =
        app.post("/message", Some(&co.agent), &seed_message(user, "TEXT", "cap", "", "image", json!(id2))).await;
    assert_eq!(status, 201, "{sent}");
    assert_eq!(sent["attachments"][0]["attachmentId"], id2);
    // A documentType that is not what the bytes are is refused.
    let (_, saved) = upload(&app, &co.agent, "report.pdf", &pdf(0)).await;
    let doc = saved["attachmentId"].as_i64().unwrap();
    let (status, body) =
        app.post("/message", Some(&co.agent), &seed_message(user, "TEXT", "", "", "IMAGE", json!(doc))).await;
    assert_error(status, &body, 422, "media_kind_mismatch");
    let (status, body) =
        app.post("/message", Some(&co.agent), &seed_message(user, "IMAGE", "", "", "VIDEO", json!(doc))).await;
    assert_error(status, &body, 400, "validation_failed");
    let (status, sent) =
        app.post("/message", Some(&co.agent), &seed_message(user, "DOCUMENT", "", "", "DOCUMENT", json!(doc))).await;
    assert_eq!(status, 201, "{sent}");
    assert_eq!(sent["attachments"][0]["type"], "DOCUMENT");
});

/// Runs `$scenario(app, mock)` on both backends with a mock file server at `mock.base`.
macro_rules! with_files {
    ($name:ident, $scenario:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[actix_web::test]
            async fn sqlite() {
                let mock = Mock::start().await;
                let app = TestApp::spawn(Backend::Sqlite).await.unwrap();
                ($scenario)(app, mock).await;
            }

            #[actix_web::test]
            async fn postgres() {
                let mock = Mock::start().await;
                match TestApp::spawn(Backend::Postgres).await {
                    Some(app) => ($scenario)(app, mock).await,
                    None => eprintln!("skipped: CONFAB_TEST_DATABASE_URL is not set"),
                }
            }
        }
    };
}

with_files!(seed_media_url_is_fetched_under_the_media_rules, |app: TestApp, mock: Mock| async move {
    let co = app.default_company().await;
    let (conv, user) = customer(&app, &co, "+14155550163").await;
    let image = png(3, 3, 0);
    mock.fix("/files/ice%20cream.png", Reply::Bytes("image/png", image.clone()));
    // Three redirects are followed (each hop checked), a fourth is not.
    mock.fix("/r1", Reply::Redirect(format!("{}/r2", mock.base)));
    mock.fix("/r2", Reply::Redirect("/r3".into()));
    mock.fix("/r3", Reply::Redirect(format!("{}/files/ice%20cream.png", mock.base)));
    let url = format!("{}/r1", mock.base);
    let (status, sent) =
        app.post("/message", Some(&co.agent), &seed_message(user, "IMAGE", "fetched", &url, "IMAGE", json!(0))).await;
    assert_eq!(status, 201, "{sent}");
    let att = &sent["attachments"][0];
    assert_eq!(att["type"], "IMAGE");
    assert_eq!(att["filename"], "ice cream.png");
    assert_eq!(att["filesize"], image.len());
    let res = app
        .client
        .get(app.url(&format!("/media/{}", att["attachmentId"])))
        .bearer_auth(&co.agent)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.bytes().await.unwrap().to_vec(), image, "the stored bytes are the link's");
    app.wait_for_message_status(&co.agent, conv, sent["messageId"].as_str().unwrap(), "DELIVERED").await;

    // A retry with the same clientId answers the first message without fetching again.
    let mut body = seed_message(user, "image", "", &format!("{}/files/ice%20cream.png", mock.base), "", json!(0));
    body["clientId"] = json!("seed-retry-1");
    let (status, first) = app.post("/message", Some(&co.agent), &body).await;
    assert_eq!(status, 201, "{first}");
    let fetched = mock.seen().len();
    let (status, again) = app.post("/message", Some(&co.agent), &body).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["messageId"], first["messageId"]);
    assert_eq!(mock.seen().len(), fetched, "no second download");

    mock.fix("/l1", Reply::Redirect("/l2".into()));
    mock.fix("/l2", Reply::Redirect("/l3".into()));
    mock.fix("/l3", Reply::Redirect("/l4".into()));
    mock.fix("/l4", Reply::Redirect("/files/ice%20cream.png".into()));
    let too_many = format!("{}/l1", mock.base);
    let (status, body) =
        app.post("/message", Some(&co.agent), &seed_message(user, "IMAGE", "", &too_many, "", json!(0))).await;
    assert_error(status, &body, 502, "media_fetch_failed");
    // A link that answers an error, or is not there at all.
    mock.fix("/gone.png", Reply::Json(404, json!({"error": "not found"})));
    let gone = format!("{}/gone.png", mock.base);
    let (status, body) =
        app.post("/message", Some(&co.agent), &seed_message(user, "IMAGE", "", &gone, "", json!(0))).await;
    assert_error(status, &body, 502, "media_fetch_failed");
    // Not an allowed type: the upload rules apply (415), and nothing is kept.
    mock.fix("/page.html", Reply::Bytes("text/html", b"<html><script>x</script></html>".to_vec()));
    let html = format!("{}/page.html", mock.base);
    let (status, body) =
        app.post("/message", Some(&co.agent), &seed_message(user, "TEXT", "", &html, "", json!(0))).await;
    assert_error(status, &body, 415, "unsupported_media_type");
    // A documentType the bytes are not: refused, and the fetched file is not left behind.
    let url = format!("{}/files/ice%20cream.png", mock.base);
    let (status, body) =
        app.post("/message", Some(&co.agent), &seed_message(user, "TEXT", "", &url, "AUDIO", json!(0))).await;
    assert_error(status, &body, 422, "media_kind_mismatch");
    // Links that are not http(s), carry credentials, or redirect to such a link are refused.
    mock.fix("/to-ftp", Reply::Redirect("ftp://files.example.test/ice.png".into()));
    let with_user = mock.base.replacen("http://", "http://user:pw@", 1) + "/files/ice%20cream.png";
    for bad in ["ftp://files.example.test/ice.png", "not a url", &with_user, &format!("{}/to-ftp", mock.base)] {
        let (status, body) =
            app.post("/message", Some(&co.agent), &seed_message(user, "IMAGE", "", bad, "", json!(0))).await;
        assert_error(status, &body, 422, "media_url_refused");
    }
    // attachmentId and mediaUrl together are ambiguous.
    let (_, saved) = upload(&app, &co.agent, "x.png", &png(1, 1, 0)).await;
    let (status, body) = app
        .post("/message", Some(&co.agent), &seed_message(user, "IMAGE", "", &url, "", saved["attachmentId"].clone()))
        .await;
    assert_error(status, &body, 400, "validation_failed");
});

// With the address checks on (every deployment), plain http and loopback are refused.
#[actix_web::test]
async fn seed_media_url_to_a_private_address_is_refused() {
    let app = TestApp::spawn_with(Backend::Sqlite, |cfg| cfg.allow_private_fetch = false).await.unwrap();
    let co = app.default_company().await;
    let (_, user) = customer(&app, &co, "+14155550164").await;
    for bad in [
        "https://127.0.0.1:9/ice.png",
        "https://[::1]:9/ice.png",
        "https://localhost:9/ice.png",
        "http://example.com/ice.png",
    ] {
        let (status, body) =
            app.post("/message", Some(&co.agent), &seed_message(user, "IMAGE", "", bad, "", json!(0))).await;
        assert_error(status, &body, 422, "media_url_refused");
    }
}

// ---- Fynd platform (seeds 000/001, the SDK) ----

both_backends!(seed_fynd_create_user_meta_string_and_email_only, |app: TestApp| async move {
    use crate::fynd_platform::{company_of, create_app, platform};
    let admin = app.admin_token().await;
    let company = company_of(&app, &admin).await;
    let (app_id, _) = create_app(&app, &admin, "seedshop").await;
    // Seed 001 types `meta` as a string: a JSON-encoded object is stored as that object.
    let (status, created) = app
        .post(
            &platform(company, app_id, "/customers"),
            Some(&admin),
            &json!({"email": "only.mail@seed.test", "first_name": "Only", "last_name": "Mail",
                    "meta": "{\"tier\":\"gold\",\"points\":12}", "username": "only.mail"}),
        )
        .await;
    assert_eq!(status, 200, "{created}");
    let user = &created["user"];
    assert_eq!(user["meta"], json!({"tier": "gold", "points": 12}));
    assert_eq!(user["emails"][0]["email"], "only.mail@seed.test");
    assert!(user.get("phone_numbers").is_none_or(|p| p.as_array().unwrap().is_empty()), "{user}");
    let id = user["_id"].as_str().unwrap().to_owned();
    // The same as an object, on update; `""` phone with an e-mail is also accepted on create.
    let (status, updated) = app
        .put(
            &platform(company, app_id, &format!("/customers/{id}")),
            Some(&admin),
            &json!({"meta": "{\"tier\":\"silver\"}"}),
        )
        .await;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(updated["user"]["meta"], json!({"tier": "silver"}));
    let (status, created) = app
        .post(
            &platform(company, app_id, "/customers"),
            Some(&admin),
            &json!({"phone_number": "", "email": "blank.phone@seed.test", "meta": {"a": 1}}),
        )
        .await;
    assert_eq!(status, 200, "{created}");
    assert_eq!(created["user"]["meta"], json!({"a": 1}));
    // Neither phone nor e-mail, or a `meta` that is not an object, is still refused.
    for bad in [
        json!({"first_name": "Nobody"}),
        json!({"email": "x@seed.test", "meta": "not json"}),
        json!({"email": "y@seed.test", "meta": "[1,2]"}),
    ] {
        let (status, body) = app.post(&platform(company, app_id, "/customers"), Some(&admin), &bad).await;
        assert_error(status, &body, 400, "validation_failed");
    }
});

both_backends!(seed_fynd_groups_and_sessions, |app: TestApp| async move {
    use crate::fynd_platform::{company_of, create_app, platform};
    let admin = app.admin_token().await;
    let company = company_of(&app, &admin).await;
    let (app_id, _) = create_app(&app, &admin, "seedgroups").await;
    // `createUserGroup` without `description`.
    let (status, group) =
        app.post(&platform(company, app_id, "/user_group"), Some(&admin), &json!({"name": "VIP"})).await;
    assert_eq!(status, 200, "{group}");
    assert_eq!(group["description"], "");
    assert_eq!(group["name"], "VIP");

    let (_, created) = app
        .post(&platform(company, app_id, "/customers"), Some(&admin), &json!({"phone_number": "+919812300051"}))
        .await;
    let id = created["user"]["_id"].as_str().unwrap().to_owned();
    for _ in 0..3 {
        let (status, s) =
            app.post(&platform(company, app_id, "/customers/session"), Some(&admin), &json!({"user_id": id})).await;
        assert_eq!(status, 200, "{s}");
    }
    let sessions = platform(company, app_id, "/customers/sessions") + &format!("?id={id}");
    let (status, list) = app.get(&sessions, Some(&admin)).await;
    assert_eq!(status, 200, "{list}");
    let items = list["items"].as_array().unwrap().clone();
    assert_eq!(items.len(), 3);
    assert!(items.iter().all(|s| s["session_id"].is_string()), "the SDK's shape: {list}");
    // `deleteSession` and `deleteActiveSessions` without `reason`.
    let first = items[0]["session_id"].as_str().unwrap();
    let (status, one) = app
        .delete(
            &(platform(company, app_id, "/customers/session") + &format!("?id={id}&session_id={first}")),
            Some(&admin),
        )
        .await;
    assert_eq!(status, 200, "{one}");
    assert_eq!(one["session_id"], first);
    let (status, all) = app.delete(&sessions, Some(&admin)).await;
    assert_eq!(status, 200, "{all}");
    assert_eq!(all["user_id"], id.as_str());
    assert_eq!(all["items"].as_array().unwrap().len(), 2, "seed 001's shape: {all}");
    assert_eq!(all["items"], all["session_ids"], "and the SDK's");
    assert_eq!(app.get(&sessions, Some(&admin)).await.1["items"], json!([]));
});

// ---- ARC (seed 003) ----

/// Waits (bounded) for mail number `n` (0-based) to `to` (links are mailed after the answer).
async fn nth_mail(app: &TestApp, to: &str, n: usize) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let mails: Vec<String> =
            outbox(app, "mail").into_iter().filter(|m| m.to.contains(to)).map(|m| m.text).collect();
        if let Some(m) = mails.get(n) {
            return m.clone();
        }
        assert!(std::time::Instant::now() < deadline, "no mail #{n} to {to}");
        actix_web::rt::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

fn token_in(text: &str) -> String {
    let at = text.find("Token: ").expect("a token") + "Token: ".len();
    text[at..].split_whitespace().next().unwrap().to_owned()
}

both_backends!(seed_arc_change_password_old_password_or_reset_token, |app: TestApp| async move {
    use crate::arc::new_client;
    let co = app.default_company().await;
    let admin = co.admin.clone();
    let email = app.admin_email.clone();
    // Seed 003's whole body, with the old password.
    let (status, ok) = app
        .patch(
            "/auth/change-password",
            Some(&admin),
            &json!({"refreshToken": "ignored", "username": email, "password": "second-password-1",
                    "oldPassword": ADMIN_PASSWORD}),
        )
        .await;
    assert_eq!((status, &ok), (200, &json!({"success": true})), "{ok}");
    // Without it, an account that has a password needs a reset token.
    let (status, body) = app
        .patch("/auth/change-password", Some(&admin), &json!({"username": email, "password": "third-password-1"}))
        .await;
    assert_error(status, &body, 400, "validation_failed");
    assert!(body["fields"]["oldPassword"].is_string(), "{body}");
    let (client, secret) = new_client(&app, &admin, json!({})).await;
    let (status, _) = app
        .post("/auth/forget-password", None, &json!({"username": email, "client_id": client, "client_secret": secret}))
        .await;
    assert_eq!(status, 204);
    let token = token_in(&nth_mail(&app, &email, 0).await);
    let body = json!({"password": "third-password-1", "resetToken": token});
    let (status, ok) = app.patch("/auth/change-password", Some(&admin), &body).await;
    assert_eq!(status, 200, "{ok}");
    app.login(&email, "third-password-1").await;
    // Single use, and only the token's own user.
    let (status, err) = app
        .patch("/auth/change-password", Some(&admin), &json!({"password": "fourth-password-1", "resetToken": token}))
        .await;
    assert_error(status, &err, 401, "invalid_token");
    skip_resend_window(&app).await;
    let (status, _) = app
        .post("/auth/forget-password", None, &json!({"username": email, "client_id": client, "client_secret": secret}))
        .await;
    assert_eq!(status, 204);
    let fresh = token_in(&nth_mail(&app, &email, 1).await);
    assert_ne!(fresh, token);
    let (status, err) = app
        .patch("/auth/change-password", Some(&co.agent), &json!({"password": "agent-new-pass-1", "resetToken": fresh}))
        .await;
    assert_error(status, &err, 401, "invalid_token");
    // An account without a password (it signs in through a provider) sets one with its session.
    let agent_id = co.agent_id;
    app.state
        .db
        .write(move |c| {
            use confab::core::db::schema::users;
            use diesel::prelude::*;
            diesel::update(users::table.find(agent_id)).set(users::password_hash.eq(None::<String>)).execute(c)?;
            Ok(())
        })
        .await
        .unwrap();
    let (status, ok) =
        app.patch("/auth/change-password", Some(&co.agent), &json!({"password": "agent-first-pass-1"})).await;
    assert_eq!(status, 200, "{ok}");
});

both_backends!(seed_arc_create_qr_code_with_a_login_code, |app: TestApp| async move {
    use crate::arc::new_client;
    let admin = app.admin_token().await;
    let (client, secret) = new_client(&app, &admin, json!({})).await;
    let secret = secret.unwrap();
    let (status, login) = app
        .post(
            "/auth/login",
            None,
            &json!({"client_id": client, "client_secret": secret, "username": app.admin_email, "password": ADMIN_PASSWORD}),
        )
        .await;
    assert_eq!(status, 200, "{login}");
    let code = login["code"].as_str().unwrap().to_owned();
    // Seed 003: `{code, clientId}`, no bearer.
    let (status, qr) = app.post("/auth/create-qr-code", None, &json!({"code": code, "clientId": client})).await;
    assert_eq!(status, 200, "{qr}");
    assert!(qr["qrCode"].as_str().unwrap().starts_with("data:image/png;base64,"));
    let (status, checked) = app.get("/auth/check-qr-code", Some(&admin)).await;
    assert_eq!((status, &checked["isGenerated"]), (200, &json!(false)), "not confirmed yet: {checked}");
    // The code was not used up: the login completes.
    let (status, tokens) =
        app.post("/auth/token", None, &json!({"code": code, "clientId": client, "client_secret": secret})).await;
    assert_eq!(status, 200, "{tokens}");
    // A used, unknown or other client's code is refused; so is no proof at all.
    for body in [json!({"code": code, "clientId": client}), json!({"code": "nope", "clientId": client}), json!({})] {
        let (status, err) = app.post("/auth/create-qr-code", None, &body).await;
        assert_error(status, &err, 401, "invalid_token");
    }
    let (status, err) = app.post("/auth/create-qr-code", None, &json!({"code": code})).await;
    assert_error(status, &err, 400, "validation_failed");
    // The bearer form still works.
    let (status, qr) = app.post("/auth/create-qr-code", Some(&admin), &json!({})).await;
    assert_eq!(status, 200, "{qr}");
});

both_backends!(seed_arc_sign_up_create_user_answers_the_seed_fields, |app: TestApp| async move {
    let (status, _) = app.post("/auth/sign-up/create-token", None, &json!({"email": "seed.signup@example.com"})).await;
    assert_eq!(status, 204);
    let token = token_in(&nth_mail(&app, "seed.signup@example.com", 0).await);
    // Seed 003's `LocalUserProfileDto`: just e-mail and password.
    let (status, created) = app
        .post(
            "/auth/sign-up/create-user",
            Some(&token),
            &json!({"email": "seed.signup@example.com", "password": "password-123"}),
        )
        .await;
    assert_eq!(status, 200, "{created}");
    assert_eq!(created["email"], "seed.signup@example.com");
    assert_eq!(created["user"]["email"], "seed.signup@example.com");
    assert_eq!(created["user"]["id"], created["userId"]);
    assert!(created.get("password").is_none() && created["user"].get("password").is_none(), "never echoed");
    app.login("seed.signup@example.com", "password-123").await;
});
