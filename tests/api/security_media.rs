//! Attack tests (issue 17, README "Security"): each performs an attack against the real server
//! and expects the refusal. Here: server-side request forgery through provider media and
//! channel settings, and provider media too large to hold in memory.

use std::{
    sync::{Arc, atomic::AtomicU64},
    time::Duration,
};

use serde_json::{Value, json};

use crate::{
    helpers::*,
    webhooks::{
        ACCESS_TOKEN, APP_SECRET, Mock, PNID, Reply, TWILIO_NUMBER, TWILIO_SID, TWILIO_TOKEN, conversation_of,
        envelope, fast, twilio_channel, twilio_post, twilio_signature, unix_now, wa_post, whatsapp_channel,
    },
};

/// Spawns a server whose provider APIs are `mock` (as the webhook tests do), then `tweak`.
async fn spawn(
    backend: Backend,
    mock: &Mock,
    tweak: impl FnOnce(&mut confab::core::config::Config),
) -> Option<TestApp> {
    let operator = mock.operator(fast);
    TestApp::spawn_with(backend, move |cfg| {
        operator(cfg);
        tweak(cfg);
    })
    .await
}

macro_rules! attack {
    ($name:ident, $tweak:expr, $scenario:expr) => {
        mod $name {
            use super::*;

            #[actix_web::test]
            async fn sqlite() {
                let mock = Mock::start().await;
                let app = spawn(Backend::Sqlite, &mock, $tweak).await.unwrap();
                ($scenario)(app, mock).await;
            }

            #[actix_web::test]
            async fn postgres() {
                let mock = Mock::start().await;
                match spawn(Backend::Postgres, &mock, $tweak).await {
                    Some(app) => ($scenario)(app, mock).await,
                    None => eprintln!("skipped: CONFAB_TEST_DATABASE_URL is not set"),
                }
            }
        }
    };
}

fn as_configured(_: &mut confab::core::config::Config) {}

/// The attachment of the newest message of a conversation, once the media worker is done with
/// it (no longer `pending`).
async fn settled_attachment(app: &TestApp, agent: &str, conv: i64) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (_, page) = app.get(&format!("/message/message-page-list/{conv}"), Some(agent)).await;
        let a = page["data"][0]["attachments"][0].clone();
        if a.is_object() && a["state"] != "pending" {
            return a;
        }
        assert!(std::time::Instant::now() < deadline, "the media fetch never finished: {page}");
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `GET /media/{id}` as the company's agent: status and body text.
async fn download(app: &TestApp, agent: &str, attachment: &Value) -> (u16, String) {
    let res = app
        .client
        .get(app.url(&format!("/media/{}", attachment["attachmentId"])))
        .bearer_auth(agent)
        .send()
        .await
        .unwrap();
    (res.status().as_u16(), res.text().await.unwrap_or_default())
}

/// A customer's WhatsApp media message of `kind` (`image`, `document`…) whose media id the
/// mock answers with `lookup`.
async fn whatsapp_media(app: &TestApp, co: &Company, mock: &Mock, kind: &str, lookup: Value) -> i64 {
    let channel = whatsapp_channel(app, co, mock, PNID, APP_SECRET).await;
    mock.fix("/4455", Reply::Json(200, lookup.clone()));
    let body = envelope(
        PNID,
        json!({"contacts": [{"profile": {"name": "Mallory"}, "wa_id": "14155550166"}],
               "messages": [{"from": "14155550166", "id": format!("wamid.{}", confab::core::crypto::random_hex_id()),
                             "timestamp": unix_now(), "type": kind,
                             kind: {"mime_type": lookup["mime_type"], "sha256": "x", "id": "4455",
                                    "filename": "notes.txt"}}]}),
    );
    let (status, res) = wa_post(app, APP_SECRET, &serde_json::to_vec(&body).unwrap()).await;
    assert_eq!(status, 200, "{res}");
    conversation_of(app, co, channel).await
}

const PNG_HEAD: [u8; 33] = [
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 0x0d, 0x49, 0x48, 0x44, 0x52, 0, 0, 0, 1, 0, 0, 0, 1, 8,
    6, 0, 0, 0, 0x1f, 0x15, 0xc4, 0x89,
];

// The review's attack: a channel pointed at an internal host. The provider API is the
// operator's setting; a tenant's other value is refused on create and on update.
attack!(a_tenant_cannot_point_a_channel_at_another_host, as_configured, |app: TestApp, mock: Mock| async move {
    let co = app.default_company().await;
    for url in ["http://169.254.169.254/latest/meta-data", "http://127.0.0.1:8080", "https://graph.facebook.com/v21.0"]
    {
        let (status, body) = app
            .post(
                "/channel",
                Some(&co.admin),
                &json!({"provider": "whatsapp", "phoneNumber": "+14155550100", "phoneNumberId": "555",
                        "displayName": "WhatsApp", "apiBaseUrl": url, "accessToken": ACCESS_TOKEN,
                        "appSecret": APP_SECRET, "verifyToken": "v"}),
            )
            .await;
        assert_error(status, &body, 400, "validation_failed");
        assert!(body["fields"]["apiBaseUrl"].is_string(), "{body}");
    }
    // The operator's own value (what a client read back) is accepted and shown.
    let channel = whatsapp_channel(&app, &co, &mock, PNID, APP_SECRET).await;
    let (status, ch) = app.get(&format!("/channel/{channel}"), Some(&co.admin)).await;
    assert_eq!(status, 200);
    assert_eq!(ch["apiBaseUrl"], mock.base);
    let (status, body) = app
        .put(
            &format!("/channel/{channel}"),
            Some(&co.admin),
            &json!({"provider": "whatsapp", "phoneNumber": "+14155550100", "phoneNumberId": PNID,
                    "displayName": "WhatsApp", "apiBaseUrl": "http://10.0.0.1/"}),
        )
        .await;
    assert_error(status, &body, 400, "validation_failed");
});

// A signed Twilio webhook (the tenant's own credentials) naming the server's own /metrics as
// its media: never fetched, and GET /media answers media_failed, not the metrics.
attack!(a_webhook_cannot_make_the_server_fetch_an_internal_url, as_configured, |app: TestApp, mock: Mock| async move {
    let co = app.default_company().await;
    let channel = twilio_channel(&app, &co, &mock).await;
    let public = app.config.public_url.trim_end_matches('/').to_owned();
    for (i, target) in [
        app.url("/metrics"),
        // The account prefix with a path that climbs out of it.
        format!("{}/2010-04-01/Accounts/{TWILIO_SID}/../../../metrics", mock.base),
        // Another account at the same API.
        format!("{}/2010-04-01/Accounts/ACffffffffffffffffffffffffffffffff/Media/ME1", mock.base),
    ]
    .iter()
    .enumerate()
    {
        let sid = format!("MMattack{i}");
        let from = format!("whatsapp:+1415555017{i}");
        let params = [
            ("MessageSid", sid.as_str()),
            ("AccountSid", TWILIO_SID),
            ("From", from.as_str()),
            ("To", "whatsapp:+14155238886"),
            ("Body", ""),
            ("NumMedia", "1"),
            ("MediaUrl0", target.as_str()),
            ("MediaContentType0", "text/plain"),
        ];
        let sig = twilio_signature(TWILIO_TOKEN, &format!("{public}/webhooks/twilio"), &params);
        let (status, res) = twilio_post(&app, "/webhooks/twilio", &params, sig).await;
        assert_eq!(status, 200, "{res}");
        let (_, list) = app.get("/conversation/conversation-page-list?limit=100", Some(&co.agent)).await;
        let conv = list["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["channelId"] == channel && c["user"]["phone"] == from.trim_start_matches("whatsapp:"))
            .expect("conversation")["conversationId"]
            .as_i64()
            .unwrap();
        let attachment = settled_attachment(&app, &co.agent, conv).await;
        assert_eq!(attachment["state"], "failed", "{target}: {attachment}");
        let (status, body) = download(&app, &co.agent, &attachment).await;
        assert_eq!(status, 409, "{target}");
        assert!(!body.contains("confab_"), "metrics leaked: {body}");
    }
    assert!(mock.seen().iter().all(|s| !s.path.contains("metrics")), "{:?}", mock.seen());
    let _ = TWILIO_NUMBER;
});

// The lookup may only hand out a download URL on Meta's media hosts (or the operator's API);
// every redirect is checked the same way.
attack!(
    media_urls_and_redirects_off_the_provider_hosts_are_refused,
    as_configured,
    |app: TestApp, mock: Mock| async move {
        let co = app.default_company().await;
        // `localhost` is not the operator's API host (127.0.0.1) nor a Meta media host.
        let internal = format!("http://localhost:{}/metrics", app.port);
        // A text document, so the metrics text would pass the type check if it were fetched.
        let conv = whatsapp_media(
            &app,
            &co,
            &mock,
            "document",
            json!({"messaging_product": "whatsapp", "url": internal, "mime_type": "text/plain", "id": "4455"}),
        )
        .await;
        let attachment = settled_attachment(&app, &co.agent, conv).await;
        assert_eq!(attachment["state"], "failed", "{attachment}");
        assert_eq!(download(&app, &co.agent, &attachment).await.0, 409);

        // Allowed URL, then a redirect to the internal one.
        mock.fix("/download/4456", Reply::Redirect(internal.clone()));
        let st = app.state.clone();
        let row = st
            .db
            .run(|c| {
                use confab::core::db::schema::channels;
                use diesel::prelude::*;
                Ok(channels::table.filter(channels::provider.eq("whatsapp")).select(channels::id).first::<i64>(c)?)
            })
            .await
            .unwrap();
        let row = st.db.run(move |c| confab::messaging::store::channel_by_id(c, row)).await.unwrap();
        let provider = confab::providers::Provider::for_channel(&st, &row).unwrap();
        mock.fix(
            "/4456",
            Reply::Json(
                200,
                json!({"url": format!("{}/download/4456", mock.base), "mime_type": "image/png", "id": "4456"}),
            ),
        );
        match provider.fetch_media("4456").await {
            Err(confab::providers::SendError::Permanent { code, .. }) => assert_eq!(code, "media_host_refused"),
            other => panic!("followed the redirect: {other:?}"),
        }
    }
);

// With the address checks on (production), a provider URL that resolves to, or names, a
// loopback address is never connected to: the resolver hook refuses `localhost`, the
// connection check refuses 127.0.0.1.
mod private_addresses_are_refused_after_resolution {
    use super::*;

    async fn attempt(base: String, mock: &Mock) {
        let app = TestApp::spawn_with(Backend::Sqlite, move |cfg| {
            cfg.whatsapp_api_url = base;
            cfg.allow_private_fetch = false;
        })
        .await
        .unwrap();
        let co = app.default_company().await;
        let channel = {
            let (status, ch) = app
                .post(
                    "/channel",
                    Some(&co.admin),
                    &json!({"provider": "whatsapp", "phoneNumber": "+14155550100", "phoneNumberId": PNID,
                            "displayName": "WhatsApp", "accessToken": ACCESS_TOKEN, "appSecret": APP_SECRET,
                            "verifyToken": "v"}),
                )
                .await;
            assert_eq!(status, 201, "{ch}");
            ch["channelId"].as_i64().unwrap()
        };
        let st = app.state.clone();
        let row = st.db.run(move |c| confab::messaging::store::channel_by_id(c, channel)).await.unwrap();
        let provider = confab::providers::Provider::for_channel(&st, &row).unwrap();
        match provider.fetch_media("4455").await {
            Err(confab::providers::SendError::Permanent { code, .. }) => assert_eq!(code, "address_refused"),
            other => panic!("reached a loopback address: {other:?}"),
        }
        assert!(mock.seen().is_empty(), "{:?}", mock.seen());
    }

    #[actix_web::test]
    async fn by_name() {
        let mock = Mock::start().await;
        let port = mock.base.rsplit(':').next().unwrap().to_owned();
        attempt(format!("http://localhost:{port}"), &mock).await;
    }

    #[actix_web::test]
    async fn by_address() {
        let mock = Mock::start().await;
        attempt(mock.base.clone(), &mock).await;
    }
}

// The review's memory attack: a media body without Content-Length that never ends. It is
// streamed to the store and cut off at the type's limit (5 MB for an image); nothing is kept.
attack!(endless_provider_media_is_cut_off_at_the_limit, as_configured, |app: TestApp, mock: Mock| async move {
    let co = app.default_company().await;
    let sent = Arc::new(AtomicU64::new(0));
    mock.fix("/download/4455", Reply::Endless("image/png", PNG_HEAD.to_vec(), sent.clone()));
    let conv = whatsapp_media(
        &app,
        &co,
        &mock,
        "image",
        json!({"url": format!("{}/download/4455", mock.base), "mime_type": "image/png", "id": "4455"}),
    )
    .await;
    let attachment = settled_attachment(&app, &co.agent, conv).await;
    assert_eq!(attachment["state"], "failed", "{attachment}");
    let sent = sent.load(std::sync::atomic::Ordering::Relaxed);
    // The limit plus what the sockets buffer: far from the unbounded body.
    assert!(sent < 64 * 1024 * 1024, "read {sent} bytes of an endless body");
    let objects: Vec<_> = {
        use futures_util::TryStreamExt;
        app.state.media.object_store().list(None).try_collect::<Vec<_>>().await.unwrap()
    };
    assert!(objects.is_empty(), "nothing stored: {objects:?}");
});
