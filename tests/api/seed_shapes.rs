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
