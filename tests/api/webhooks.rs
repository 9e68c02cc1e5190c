//! Provider webhooks and outbound delivery (CONTRACT §6, providers.md) against local mock
//! servers that speak the WhatsApp Cloud API and Twilio wire formats.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
    time::Duration,
};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use base64::Engine;
use diesel::prelude::*;
use hmac::Mac;
use serde_json::{Value, json};

use crate::{both_backends, helpers::*};

/// Like `both_backends!`, with a mock provider started first and configured as the operator's
/// WhatsApp and Twilio API (`CONFAB_WHATSAPP_API_URL`, `CONFAB_TWILIO_API_URL`); `$tweak`
/// adjusts the rest of the configuration (`fast`: a 10 ms delivery backoff).
macro_rules! with_mock {
    ($name:ident, $tweak:expr, $scenario:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[actix_web::test]
            async fn sqlite() {
                let mock = Mock::start().await;
                let app = TestApp::spawn_with(Backend::Sqlite, mock.operator($tweak)).await.unwrap();
                ($scenario)(app, mock).await;
            }

            #[actix_web::test]
            async fn postgres() {
                let mock = Mock::start().await;
                match TestApp::spawn_with(Backend::Postgres, mock.operator($tweak)).await {
                    Some(app) => ($scenario)(app, mock).await,
                    None => eprintln!("skipped: CONFAB_TEST_DATABASE_URL is not set"),
                }
            }
        }
    };
}

fn normal(_: &mut confab::core::config::Config) {}

pub(crate) fn fast(cfg: &mut confab::core::config::Config) {
    cfg.outbox_backoff_ms = 10;
}

// ---- the mock provider ----

#[derive(Debug, Clone)]
pub(crate) struct Seen {
    pub(crate) method: String,
    pub(crate) path: String,
    pub(crate) authorization: Option<String>,
    content_type: Option<String>,
    body: Vec<u8>,
    /// When the mock received it (the crash test orders sends and kills).
    pub(crate) at: std::time::Instant,
    /// The message id the mock answered a WhatsApp send with (`wamid.mock-N`).
    pub(crate) wamid: Option<String>,
}

impl Seen {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }

    fn form(&self) -> Vec<(String, String)> {
        serde_urlencoded::from_bytes(&self.body).unwrap()
    }
}

pub(crate) enum Reply {
    Json(u16, Value),
    Bytes(&'static str, Vec<u8>),
    /// Never answers (the caller is killed or times out).
    Hang,
    /// 307 to this URL.
    Redirect(String),
    /// 200 with this type: the head bytes, then zeros without end (no Content-Length); the
    /// counter says how many bytes were sent.
    Endless(&'static str, Vec<u8>, Arc<std::sync::atomic::AtomicU64>),
}

#[derive(Default)]
struct MockState {
    seen: Vec<Seen>,
    script: VecDeque<Reply>,
    /// Fixed answers by path (media lookups and downloads).
    fixed: Vec<(String, Reply)>,
    counter: u64,
    /// How long every request is held before its answer, and how many were held at once.
    hold: Duration,
    in_flight: usize,
    max_in_flight: usize,
}

#[derive(Clone, Default)]
pub(crate) struct Mock {
    pub(crate) base: String,
    state: Arc<Mutex<MockState>>,
}

impl Mock {
    /// A provider API on 127.0.0.1:0. Unscripted requests get a WhatsApp-style success with a
    /// fresh `wamid.mock-N` (or a Twilio `SMmockN` on Twilio paths).
    pub(crate) async fn start() -> Mock {
        let mut mock = Mock::default();
        let state = mock.state.clone();
        let server = HttpServer::new(move || {
            App::new().app_data(web::Data::new(state.clone())).default_service(web::to(answer))
        })
        .workers(1)
        .bind("127.0.0.1:0")
        .unwrap();
        let addr = server.addrs()[0];
        actix_web::rt::spawn(server.run());
        mock.base = format!("http://{addr}");
        mock
    }

    /// A configuration change that makes this mock the operator's provider APIs, then `tweak`.
    pub(crate) fn operator(
        &self,
        tweak: fn(&mut confab::core::config::Config),
    ) -> impl FnOnce(&mut confab::core::config::Config) {
        let base = self.base.clone();
        move |cfg| {
            cfg.whatsapp_api_url = base.clone();
            cfg.twilio_api_url = base;
            tweak(cfg);
        }
    }

    pub(crate) fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.state.lock().unwrap().script.extend(replies);
    }

    pub(crate) fn fix(&self, path: &str, reply: Reply) {
        self.state.lock().unwrap().fixed.push((path.to_owned(), reply));
    }

    /// Holds every later request this long before answering it (a provider taking its time).
    pub(crate) fn hold(&self, d: Duration) {
        self.state.lock().unwrap().hold = d;
    }

    /// The most requests the mock held at once.
    pub(crate) fn max_in_flight(&self) -> usize {
        self.state.lock().unwrap().max_in_flight
    }

    pub(crate) fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }

    pub(crate) async fn wait_for_requests(&self, n: usize) -> Vec<Seen> {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let seen = self.seen();
            if seen.len() >= n {
                return seen;
            }
            assert!(std::time::Instant::now() < deadline, "mock got {} of {n} requests", seen.len());
            actix_web::rt::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn answer(req: HttpRequest, body: web::Bytes, state: web::Data<Arc<Mutex<MockState>>>) -> HttpResponse {
    let reply = {
        let mut s = state.lock().unwrap();
        let header = |n: &str| req.headers().get(n).and_then(|v| v.to_str().ok()).map(str::to_owned);
        s.seen.push(Seen {
            method: req.method().to_string(),
            path: req.path().to_owned(),
            authorization: header("Authorization"),
            content_type: header("Content-Type"),
            body: body.to_vec(),
            at: std::time::Instant::now(),
            wamid: None,
        });
        s.counter += 1;
        let n = s.counter;
        if let Some(i) = s.fixed.iter().position(|(p, _)| p == req.path()) {
            match &s.fixed[i].1 {
                Reply::Json(code, v) => Reply::Json(*code, v.clone()),
                Reply::Bytes(ct, b) => Reply::Bytes(ct, b.clone()),
                Reply::Hang => Reply::Hang,
                Reply::Redirect(to) => Reply::Redirect(to.clone()),
                Reply::Endless(ct, head, sent) => Reply::Endless(ct, head.clone(), sent.clone()),
            }
        } else if let Some(r) = s.script.pop_front() {
            r
        } else if req.path().contains("/Accounts/") {
            Reply::Json(201, json!({"sid": format!("SMmock{n}"), "status": "queued"}))
        } else {
            if let Some(last) = s.seen.last_mut() {
                last.wamid = Some(format!("wamid.mock-{n}"));
            }
            Reply::Json(
                200,
                json!({"messaging_product": "whatsapp", "contacts": [{"input": "x", "wa_id": "x"}],
                       "messages": [{"id": format!("wamid.mock-{n}"), "message_status": "accepted"}]}),
            )
        }
    };
    let hold = state.lock().unwrap().hold;
    if !hold.is_zero() {
        {
            let mut s = state.lock().unwrap();
            s.in_flight += 1;
            s.max_in_flight = s.max_in_flight.max(s.in_flight);
        }
        actix_web::rt::time::sleep(hold).await;
        state.lock().unwrap().in_flight -= 1;
    }
    match reply {
        Reply::Json(code, v) => HttpResponse::build(actix_web::http::StatusCode::from_u16(code).unwrap()).json(v),
        Reply::Bytes(ct, b) => HttpResponse::Ok().content_type(ct).body(b),
        Reply::Hang => {
            actix_web::rt::time::sleep(Duration::from_secs(3600)).await;
            HttpResponse::Ok().finish()
        }
        Reply::Redirect(to) => HttpResponse::TemporaryRedirect().insert_header(("Location", to)).finish(),
        Reply::Endless(ct, head, sent) => {
            use futures_util::StreamExt;
            // `head`, then zeros for ever, chunked (no Content-Length); `sent` counts the bytes.
            let chunk = web::Bytes::from(vec![0u8; 64 * 1024]);
            let first = futures_util::stream::once(futures_util::future::ready(web::Bytes::from(head)));
            let body = first.chain(futures_util::stream::repeat(chunk)).map(move |b| {
                sent.fetch_add(b.len() as u64, std::sync::atomic::Ordering::Relaxed);
                Ok::<_, actix_web::Error>(b)
            });
            HttpResponse::Ok().content_type(ct).streaming(body)
        }
    }
}

fn meta_error(code: i64, message: &str) -> Value {
    json!({"error": {"message": message, "type": "OAuthException", "code": code, "error_data": {"details": message}, "fbtrace_id": "Axyz"}})
}

/// The whole body of a download.
pub(crate) async fn read_all(media: confab::providers::FetchedMedia) -> Vec<u8> {
    use futures_util::TryStreamExt;
    media.body.map_ok(|b| b.to_vec()).try_concat().await.unwrap()
}

// ---- WhatsApp helpers ----

pub(crate) const PNID: &str = "106540352242922";
pub(crate) const APP_SECRET: &str = "app_secret";
pub(crate) const ACCESS_TOKEN: &str = "EAAG-test-access-token";
const VERIFY_TOKEN: &str = "verify-me-123";

/// A WhatsApp channel in the default company pointing at the mock.
pub(crate) async fn whatsapp_channel(app: &TestApp, co: &Company, mock: &Mock, pnid: &str, app_secret: &str) -> i64 {
    let (status, ch) = app
        .post(
            "/channel",
            Some(&co.admin),
            &json!({"provider": "whatsapp", "phoneNumber": "+14155550100", "phoneNumberId": pnid,
                    "displayName": "WhatsApp", "apiBaseUrl": mock.base, "accessToken": ACCESS_TOKEN,
                    "appSecret": app_secret, "verifyToken": VERIFY_TOKEN}),
        )
        .await;
    assert_eq!(status, 201, "{ch}");
    ch["channelId"].as_i64().unwrap()
}

pub(crate) fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = <hmac::SimpleHmac<sha2::Sha256> as Mac>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

async fn post_raw(app: &TestApp, path: &str, headers: &[(&str, String)], body: Vec<u8>) -> (u16, Value) {
    let mut req = app.client.post(app.url(path)).body(body);
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    into_json(req.send().await.unwrap()).await
}

/// Posts a WhatsApp webhook body signed with `secret` (raw bytes, as given).
pub(crate) async fn wa_post(app: &TestApp, secret: &str, body: &[u8]) -> (u16, Value) {
    let headers = [("Content-Type", "application/json".to_owned()), ("X-Hub-Signature-256", sign(secret, body))];
    post_raw(app, "/webhooks/whatsapp", &headers, body.to_vec()).await
}

pub(crate) fn unix_now() -> String {
    chrono::Utc::now().timestamp().to_string()
}

pub(crate) fn envelope(pnid: &str, value: Value) -> Value {
    let mut value = value;
    value["messaging_product"] = json!("whatsapp");
    value["metadata"] = json!({"display_phone_number": "14155550100", "phone_number_id": pnid});
    json!({"object": "whatsapp_business_account",
           "entry": [{"id": "102290129340398", "changes": [{"field": "messages", "value": value}]}]})
}

pub(crate) fn wa_text(pnid: &str, from: &str, id: &str, text: &str) -> Value {
    envelope(
        pnid,
        json!({"contacts": [{"profile": {"name": "Sheena Nelson"}, "wa_id": from}],
               "messages": [{"from": from, "id": id, "timestamp": unix_now(), "type": "text", "text": {"body": text}}]}),
    )
}

pub(crate) fn wa_statuses(pnid: &str, statuses: &[(&str, &str)]) -> Value {
    let list: Vec<Value> = statuses
        .iter()
        .map(|(id, st)| {
            let mut s = json!({"id": id, "status": st, "timestamp": unix_now(), "recipient_id": "14155550123"});
            if *st == "failed" {
                s["errors"] = json!([{"code": 131026, "title": "Message undeliverable"}]);
            }
            s
        })
        .collect();
    envelope(pnid, json!({"statuses": list}))
}

#[derive(Debug, PartialEq, Eq)]
struct Counts {
    messages: i64,
    conversations: i64,
    users: i64,
    receipts: i64,
    outbox: i64,
}

async fn counts(app: &TestApp) -> Counts {
    use confab::core::db::schema::*;
    app.state
        .db
        .run(|c| {
            Ok(Counts {
                messages: messages::table.count().get_result(c)?,
                conversations: conversations::table.count().get_result(c)?,
                users: users::table.count().get_result(c)?,
                receipts: webhook_receipts::table.count().get_result(c)?,
                outbox: outbox::table.count().get_result(c)?,
            })
        })
        .await
        .unwrap()
}

/// (id, status, provider id, error code) of the messages of a channel, oldest first.
async fn channel_messages(app: &TestApp, channel_id: i64) -> Vec<(String, String, Option<String>, Option<String>)> {
    use confab::core::db::schema::messages;
    app.state
        .db
        .run(move |c| {
            Ok(messages::table
                .filter(messages::channel_id.eq(channel_id))
                .order(messages::pk)
                .select((messages::id, messages::status, messages::provider_message_id, messages::error_code))
                .load(c)?)
        })
        .await
        .unwrap()
}

pub(crate) async fn conversation_of(app: &TestApp, co: &Company, channel_id: i64) -> i64 {
    let (_, list) = app.get("/conversation/conversation-page-list?limit=100", Some(&co.agent)).await;
    *channel_conversations(&list, channel_id).first().expect("conversation")
}

/// The ids of a conversation list's conversations on `channel_id`, in the list's order.
pub(crate) fn channel_conversations(list: &Value, channel_id: i64) -> Vec<i64> {
    list["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["channelId"] == channel_id)
        .map(|c| c["conversationId"].as_i64().unwrap())
        .collect()
}

async fn metric(app: &TestApp, needle: &str) -> f64 {
    let text = app.client.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    text.lines()
        .find(|l| l.starts_with(needle))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

fn three_lanes(cfg: &mut confab::core::config::Config) {
    cfg.delivery_lanes = 3;
}

// CONFAB_DELIVERY_LANES: with a provider that takes its time, sends to different conversations
// are in flight at once (never more than the lanes), and one conversation's go one after
// another, in order.
with_mock!(
    delivery_lanes_send_conversations_at_once_each_in_order,
    three_lanes,
    |app: TestApp, mock: Mock| async move {
        let co = app.default_company().await;
        let channel_id = whatsapp_channel(&app, &co, &mock, PNID, APP_SECRET).await;
        for i in 0..3 {
            let body = wa_text(PNID, &format!("1415555013{i}"), &format!("wamid.lanes-{i}"), "hello");
            let (status, answer) = wa_post(&app, APP_SECRET, &serde_json::to_vec(&body).unwrap()).await;
            assert_eq!(status, 200, "{answer}");
        }
        let (_, list) = app.get("/conversation/conversation-page-list?limit=100", Some(&co.agent)).await;
        let conversations = channel_conversations(&list, channel_id);
        assert_eq!(conversations.len(), 3, "{list}");
        mock.hold(Duration::from_millis(1000));
        for round in 1..=2 {
            for conv in &conversations {
                let text = format!("to {conv}, number {round}");
                let (status, sent) =
                    app.post("/message", Some(&co.agent), &json!({"conversationId": conv, "text": text})).await;
                assert_eq!(status, 201, "{sent}");
            }
        }
        let seen = mock.wait_for_requests(6).await;
        let held = mock.max_in_flight();
        assert!((2..=3).contains(&held), "{held} provider calls at once with 3 lanes");
        let texts: Vec<String> =
            seen.iter().map(|s| s.json()["text"]["body"].as_str().unwrap_or_default().to_owned()).collect();
        for conv in &conversations {
            let first = texts.iter().position(|t| *t == format!("to {conv}, number 1")).expect("first sent");
            let second = texts.iter().position(|t| *t == format!("to {conv}, number 2")).expect("second sent");
            assert!(first < second, "conversation {conv} sent out of order: {texts:?}");
        }
    }
);

/// A customer writes in on the WhatsApp channel (opening the window); returns the conversation.
async fn wa_customer_says(app: &TestApp, co: &Company, channel_id: i64, text: &str) -> i64 {
    let id = format!("wamid.in-{}", confab::core::crypto::random_hex_id());
    let (status, body) =
        wa_post(app, APP_SECRET, &serde_json::to_vec(&wa_text(PNID, "14155550123", &id, text)).unwrap()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["received"], 1, "{body}");
    conversation_of(app, co, channel_id).await
}

// ---- handshake and signatures ----

with_mock!(
    meta_handshake_answers_the_challenge_only_for_a_known_token,
    normal,
    |app: TestApp, mock: Mock| async move {
        let co = app.default_company().await;
        whatsapp_channel(&app, &co, &mock, PNID, APP_SECRET).await;
        let res = app
            .client
            .get(app.url(&format!(
                "/webhooks/whatsapp?hub.mode=subscribe&hub.challenge=1158201444&hub.verify_token={VERIFY_TOKEN}"
            )))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        assert!(res.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
        assert_eq!(res.text().await.unwrap(), "1158201444", "the raw challenge, not JSON");

        for query in [
            "hub.mode=subscribe&hub.challenge=1&hub.verify_token=wrong",
            "hub.mode=unsubscribe&hub.challenge=1&hub.verify_token=verify-me-123",
            "hub.mode=subscribe&hub.challenge=1",
            "",
        ] {
            let (status, body) = app.get(&format!("/webhooks/whatsapp?{query}"), None).await;
            assert_error(status, &body, 403, "forbidden");
        }
    }
);

with_mock!(
    signed_bodies_with_emoji_and_accents_are_verified_over_raw_bytes,
    normal,
    |app: TestApp, mock: Mock| async move {
        let co = app.default_company().await;
        let channel = whatsapp_channel(&app, &co, &mock, PNID, APP_SECRET).await;

        // providers.md §2.2 worked example: the signature over the exact bytes is accepted.
        let reference = br#"{"object":"whatsapp_business_account","entry":[]}"#;
        let sig = "sha256=c236c758c9b2bd40b388a550eeca09eaca72384dd0aa5e7c31d19cddac5bba46";
        let (status, body) =
            post_raw(&app, "/webhooks/whatsapp", &[("X-Hub-Signature-256", sig.into())], reference.to_vec()).await;
        assert_eq!(status, 200, "{body}");

        // Raw UTF-8 (not \u-escaped), odd spacing: re-serialising would change the bytes.
        let text = "Olá, ¿qué tal? Ça va 😀🎉 — äöå";
        let raw = format!(
            "{{ \"object\":\"whatsapp_business_account\",  \"entry\":[{{\"id\":\"1\",\"changes\":[{{\"field\":\"messages\",\"value\":{{\"messaging_product\":\"whatsapp\",\"metadata\":{{\"display_phone_number\":\"14155550100\",\"phone_number_id\":\"{PNID}\"}},\"contacts\":[{{\"profile\":{{\"name\":\"José Ñúñez\"}},\"wa_id\":\"14155550123\"}}],\"messages\":[{{\"from\":\"14155550123\",\"id\":\"wamid.accents\",\"timestamp\":\"{}\",\"type\":\"text\",\"text\":{{\"body\":\"{text}\"}}}}]}}}}]}}]}}",
            unix_now()
        );
        let (status, body) = wa_post(&app, APP_SECRET, raw.as_bytes()).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["received"], 1);
        let conv = conversation_of(&app, &co, channel).await;
        let (_, page) = app.get(&format!("/message/message-page-list/{conv}"), Some(&co.agent)).await;
        assert_eq!(page["data"][0]["content"], text);
        let (_, list) = app.get("/conversation/conversation-page-list", Some(&co.agent)).await;
        let item = list["data"].as_array().unwrap().iter().find(|c| c["conversationId"] == conv).unwrap().clone();
        assert_eq!(item["user"]["firstName"], "José");
        assert_eq!(item["user"]["phone"], "+14155550123");
        assert!(
            metric(&app, "confab_webhook_verifications_total{provider=\"whatsapp\",result=\"passed\"}").await >= 2.0
        );
    }
);

with_mock!(bad_or_missing_signatures_are_401_and_store_nothing, normal, |app: TestApp, mock: Mock| async move {
    let co = app.default_company().await;
    whatsapp_channel(&app, &co, &mock, PNID, APP_SECRET).await;
    let before = counts(&app).await;
    let body = serde_json::to_vec(&wa_text(PNID, "14155550123", "wamid.forged", "forged")).unwrap();
    let cases: Vec<Vec<(&str, String)>> = vec![
        vec![],
        vec![("X-Hub-Signature-256", sign("wrong-secret", &body))],
        vec![("X-Hub-Signature-256", sign(APP_SECRET, b"another body"))],
        vec![("X-Hub-Signature-256", "sha256=zz".into())],
        vec![("X-Hub-Signature-256", sign(APP_SECRET, &body).replace("sha256=", "sha1="))],
    ];
    for headers in &cases {
        for path in ["/webhooks/whatsapp", "/message/messagein", "/message/status"] {
            let (status, res) = post_raw(&app, path, headers, body.clone()).await;
            assert_error(status, &res, 401, "invalid_signature");
        }
    }
    let (status, res) = post_raw(
        &app,
        "/webhooks/twilio",
        &[("X-Twilio-Signature", "bogus".into())],
        b"MessageSid=SM1&Body=x".to_vec(),
    )
    .await;
    assert_error(status, &res, 401, "invalid_signature");
    assert_eq!(counts(&app).await, before, "nothing stored");
    assert!(metric(&app, "confab_webhook_verifications_total{provider=\"whatsapp\",result=\"failed\"}").await >= 10.0);
});

// ---- idempotency, routing, ordering ----

with_mock!(duplicates_unknown_numbers_and_unsupported_types, normal, |app: TestApp, mock: Mock| async move {
    let co = app.default_company().await;
    let channel = whatsapp_channel(&app, &co, &mock, PNID, APP_SECRET).await;
    let body = serde_json::to_vec(&wa_text(PNID, "14155550123", "wamid.dup", "only once")).unwrap();
    for i in 0..3 {
        let (status, res) = wa_post(&app, APP_SECRET, &body).await;
        assert_eq!(status, 200, "{res}");
        assert_eq!(res["received"], if i == 0 { 1 } else { 0 });
    }
    // The alias route takes the same delivery and recognises it too.
    let headers = [("X-Hub-Signature-256", sign(APP_SECRET, &body))];
    let (status, res) = post_raw(&app, "/message/messagein", &headers, body.clone()).await;
    assert_eq!((status, res["duplicates"].clone()), (200, json!(1)), "{res}");
    assert_eq!(channel_messages(&app, channel).await.len(), 1);

    let before = counts(&app).await;
    let unknown = serde_json::to_vec(&wa_text("999999", "14155550123", "wamid.elsewhere", "hi")).unwrap();
    let (status, res) = wa_post(&app, APP_SECRET, &unknown).await;
    assert_eq!((status, res["ignored"].clone()), (200, json!(1)), "{res}");
    let unsupported = serde_json::to_vec(&envelope(
        PNID,
        json!({"messages": [{"from": "14155550123", "id": "wamid.unsup", "timestamp": unix_now(), "type": "unsupported",
                              "errors": [{"code": 131051, "title": "Message type unknown"}]}]}),
    ))
    .unwrap();
    let (status, res) = wa_post(&app, APP_SECRET, &unsupported).await;
    assert_eq!((status, res["ignored"].clone()), (200, json!(1)), "{res}");
    let after = counts(&app).await;
    assert_eq!(after.messages, before.messages, "nothing else stored");
    assert_eq!(after.receipts, before.receipts + 2, "both recorded");

    // A second app (other secret) cannot post into this channel.
    let (status, res) = wa_post(&app, "another-app", &unknown).await;
    assert_error(status, &res, 401, "invalid_signature");
});

with_mock!(every_inbound_type_is_stored_media_pending, normal, |app: TestApp, mock: Mock| async move {
    let co = app.default_company().await;
    let channel = whatsapp_channel(&app, &co, &mock, PNID, APP_SECRET).await;
    let t = unix_now();
    let m = |id: &str, kind: &str, part: Value| {
        let mut v = json!({"from": "14155550123", "id": id, "timestamp": t, "type": kind});
        v[kind] = part;
        v
    };
    let mut contacts = json!({"from": "14155550123", "id": "wamid.t8", "timestamp": t, "type": "contacts"});
    contacts["contacts"] =
        json!([{"name": {"formatted_name": "Chandler Bing"}, "phones": [{"phone": "+1 555-555-5555"}]}]);
    let body = envelope(
        PNID,
        json!({"contacts": [{"profile": {"name": "Sheena Nelson"}, "wa_id": "14155550123"}], "messages": [
            m("wamid.t1", "text", json!({"body": "hello"})),
            m("wamid.t2", "image", json!({"mime_type": "image/jpeg", "sha256": "x", "id": "111", "caption": "look"})),
            m("wamid.t3", "audio", json!({"mime_type": "audio/ogg; codecs=opus", "id": "222", "voice": true})),
            m("wamid.t4", "video", json!({"mime_type": "video/mp4", "id": "333"})),
            m("wamid.t5", "document", json!({"mime_type": "application/pdf", "id": "444", "filename": "invoice.pdf"})),
            m("wamid.t6", "sticker", json!({"mime_type": "image/webp", "id": "555"})),
            m("wamid.t7", "location", json!({"latitude": 12.25089, "longitude": 43.90539})),
            contacts,
            m("wamid.t9", "interactive", json!({"type": "button_reply", "button_reply": {"id": "y", "title": "Yes"}})),
            m("wamid.t10", "button", json!({"payload": "p", "text": "Stop"})),
            m("wamid.t11", "reaction", json!({"message_id": "wamid.t1", "emoji": "👍"})),
        ]}),
    );
    let (status, res) = wa_post(&app, APP_SECRET, &serde_json::to_vec(&body).unwrap()).await;
    assert_eq!(status, 200, "{res}");
    // The reaction is not a message: it attaches to wamid.t1 (issue 22).
    assert_eq!(res["received"], 10, "{res}");
    let conv = conversation_of(&app, &co, channel).await;
    let (_, page) = app.get(&format!("/message/message-page-list/{conv}?limit=50"), Some(&co.agent)).await;
    let data = page["data"].as_array().unwrap();
    assert_eq!(data.len(), 10);
    let hello = data.iter().find(|m| m["content"] == "hello").unwrap();
    assert_eq!(hello["reactions"], json!([{"emoji": "👍", "by": "customer"}]));
    let contents: Vec<&str> = data.iter().filter_map(|m| m["content"].as_str()).collect();
    for want in ["hello", "look", "Yes", "Stop", "👤 Contact: Chandler Bing (+1 555-555-5555)"] {
        assert!(contents.contains(&want), "{want} in {contents:?}");
    }
    assert!(contents.iter().any(|c| c.contains("12.25089")));
    let with_media = data.iter().filter(|m| !m["attachments"].as_array().unwrap().is_empty()).count();
    assert_eq!(with_media, 5, "image, audio, video, document, sticker");
    let media_jobs: i64 = app
        .state
        .db
        .run(|c| {
            use confab::core::db::schema::outbox;
            Ok(outbox::table.filter(outbox::kind.eq("media_fetch")).count().get_result(c)?)
        })
        .await
        .unwrap();
    assert_eq!(media_jobs, 5);
});

with_mock!(inbound_media_is_fetched_from_the_provider, normal, |app: TestApp, mock: Mock| async move {
    let co = app.default_company().await;
    let channel = whatsapp_channel(&app, &co, &mock, PNID, APP_SECRET).await;
    mock.fix(
        "/65463453",
        Reply::Json(
            200,
            json!({"messaging_product": "whatsapp", "url": format!("{}/download/65463453", mock.base),
                               "mime_type": "image/jpeg", "sha256": "x", "file_size": "4", "id": "65463453"}),
        ),
    );
    mock.fix("/download/65463453", Reply::Bytes("image/jpeg", vec![0xff, 0xd8, 0xff, 0xe0]));
    let st = app.state.clone();
    let row = st.db.run(move |c| confab::messaging::store::channel_by_id(c, channel)).await.unwrap();
    let provider = confab::providers::Provider::for_channel(&st, &row).unwrap();
    let media = provider.fetch_media("65463453").await.unwrap();
    assert_eq!(media.content_type, "image/jpeg");
    assert_eq!(read_all(media).await, [0xff, 0xd8, 0xff, 0xe0]);
    let seen = mock.seen();
    assert_eq!(seen.len(), 2);
    for s in &seen {
        assert_eq!(s.authorization.as_deref(), Some(format!("Bearer {ACCESS_TOKEN}").as_str()), "{s:?}");
    }
    assert!(provider.fetch_media("../etc/passwd").await.is_err());
});

// ---- outbound ----

with_mock!(
    outbound_text_reaches_the_cloud_api_and_statuses_only_move_forward,
    fast,
    |app: TestApp, mock: Mock| async move {
        let co = app.default_company().await;
        let channel = whatsapp_channel(&app, &co, &mock, PNID, APP_SECRET).await;
        let conv = wa_customer_says(&app, &co, channel, "hi").await;

        let (status, sent) =
            app.post("/message", Some(&co.agent), &json!({"conversationId": conv, "text": "Hello 👋"})).await;
        assert_eq!(status, 201, "{sent}");
        let mid = sent["messageId"].as_str().unwrap().to_owned();
        app.wait_for_message_status(&co.agent, conv, &mid, "SENT").await;
        let req = &mock.wait_for_requests(1).await[0];
        assert_eq!((req.method.as_str(), req.path.as_str()), ("POST", &*format!("/{PNID}/messages")));
        assert_eq!(req.authorization.as_deref(), Some(format!("Bearer {ACCESS_TOKEN}").as_str()));
        assert!(req.content_type.as_deref().unwrap().starts_with("application/json"));
        let body = req.json();
        assert_eq!(body["messaging_product"], "whatsapp");
        assert_eq!(body["to"], "14155550123");
        assert_eq!(body["type"], "text");
        assert_eq!(body["text"]["body"], "Hello 👋");
        let rows = channel_messages(&app, channel).await;
        let row = rows.iter().find(|r| r.0 == mid).unwrap();
        assert!(row.2.as_deref().unwrap().starts_with("wamid.mock-"), "{row:?}");

        // Statuses in every order end at the furthest state; a late "delivered" after "read"
        // keeps READ.
        let orders: [[&str; 3]; 6] = [
            ["sent", "delivered", "read"],
            ["sent", "read", "delivered"],
            ["delivered", "sent", "read"],
            ["delivered", "read", "sent"],
            ["read", "sent", "delivered"],
            ["read", "delivered", "sent"],
        ];
        for order in orders {
            let (_, sent) = app.post("/message", Some(&co.agent), &json!({"conversationId": conv, "text": "x"})).await;
            let mid = sent["messageId"].as_str().unwrap().to_owned();
            app.wait_for_message_status(&co.agent, conv, &mid, "SENT").await;
            let wamid = channel_messages(&app, channel).await.into_iter().find(|r| r.0 == mid).unwrap().2.unwrap();
            for s in order {
                let (status, res) =
                    wa_post(&app, APP_SECRET, &serde_json::to_vec(&wa_statuses(PNID, &[(&wamid, s)])).unwrap()).await;
                assert_eq!(status, 200, "{res}");
            }
            // The whole sequence again in one delivery (duplicates are harmless).
            let all: Vec<(&str, &str)> = order.iter().map(|s| (wamid.as_str(), *s)).collect();
            wa_post(&app, APP_SECRET, &serde_json::to_vec(&wa_statuses(PNID, &all)).unwrap()).await;
            let got = channel_messages(&app, channel).await.into_iter().find(|r| r.0 == mid).unwrap();
            assert_eq!(got.1, "READ", "order {order:?}");
        }
    }
);

with_mock!(status_before_its_message_is_applied_when_the_id_is_recorded, fast, |app: TestApp, mock: Mock| async move {
    let co = app.default_company().await;
    let channel = whatsapp_channel(&app, &co, &mock, PNID, APP_SECRET).await;
    let conv = wa_customer_says(&app, &co, channel, "hi").await;
    // Meta reports "delivered" for a wamid before the send call has returned it to us.
    let (status, res) =
        wa_post(&app, APP_SECRET, &serde_json::to_vec(&wa_statuses(PNID, &[("wamid.early", "delivered")])).unwrap())
            .await;
    assert_eq!(status, 200, "{res}");
    mock.script([Reply::Json(200, json!({"messaging_product": "whatsapp", "messages": [{"id": "wamid.early"}]}))]);
    let (_, sent) = app.post("/message", Some(&co.agent), &json!({"conversationId": conv, "text": "x"})).await;
    let mid = sent["messageId"].as_str().unwrap();
    app.wait_for_message_status(&co.agent, conv, mid, "DELIVERED").await;
});

with_mock!(transient_errors_are_retried_and_permanent_ones_fail, fast, |app: TestApp, mock: Mock| async move {
    let co = app.default_company().await;
    let channel = whatsapp_channel(&app, &co, &mock, PNID, APP_SECRET).await;
    let conv = wa_customer_says(&app, &co, channel, "hi").await;

    mock.script([
        Reply::Json(500, meta_error(2, "Service temporarily unavailable")),
        Reply::Json(503, json!({})),
        Reply::Json(200, json!({"messaging_product": "whatsapp", "messages": [{"id": "wamid.third-time"}]})),
    ]);
    let (_, sent) = app.post("/message", Some(&co.agent), &json!({"conversationId": conv, "text": "retry me"})).await;
    let mid = sent["messageId"].as_str().unwrap().to_owned();
    app.wait_for_message_status(&co.agent, conv, &mid, "SENT").await;
    assert_eq!(mock.seen().len(), 3, "two failures, then success");
    let row = channel_messages(&app, channel).await.into_iter().find(|r| r.0 == mid).unwrap();
    assert_eq!(row.2.as_deref(), Some("wamid.third-time"));
    let attempts: i32 = {
        let mid = mid.clone();
        app.state
            .db
            .run(move |c| {
                use confab::core::db::schema::outbox;
                Ok(outbox::table.filter(outbox::ref_id.eq(mid)).select(outbox::attempts).first(c)?)
            })
            .await
            .unwrap()
    };
    assert_eq!(attempts, 3);

    mock.script([Reply::Json(400, meta_error(131047, "Re-engagement message"))]);
    let (_, sent) = app.post("/message", Some(&co.agent), &json!({"conversationId": conv, "text": "too late"})).await;
    let mid = sent["messageId"].as_str().unwrap().to_owned();
    let failed = app.wait_for_message_status(&co.agent, conv, &mid, "FAILED").await;
    assert_eq!(failed["errorCode"], "131047");
    assert_eq!(mock.seen().len(), 4, "a permanent error is not retried");
    assert!(metric(&app, "confab_outbox_failures_total{provider=\"whatsapp\"}").await >= 1.0);
    assert!(metric(&app, "confab_outbox_attempts_total{outcome=\"transient\",provider=\"whatsapp\"}").await >= 2.0);
});

with_mock!(a_deleted_channel_fails_its_pending_jobs, fast, |app: TestApp, mock: Mock| async move {
    let co = app.default_company().await;
    let channel = whatsapp_channel(&app, &co, &mock, PNID, APP_SECRET).await;
    let conv = wa_customer_says(&app, &co, channel, "hi").await;
    mock.script((0..50).map(|_| Reply::Json(503, json!({}))));
    let (_, sent) = app.post("/message", Some(&co.agent), &json!({"conversationId": conv, "text": "orphan"})).await;
    let mid = sent["messageId"].as_str().unwrap().to_owned();
    mock.wait_for_requests(1).await;
    let (status, _) = app.delete(&format!("/channel/{channel}"), Some(&co.admin)).await;
    assert_eq!(status, 204);
    let failed = app.wait_for_message_status(&co.agent, conv, &mid, "FAILED").await;
    assert_eq!(failed["errorCode"], "channel_gone");
});

with_mock!(media_go_out_by_link, fast, |app: TestApp, mock: Mock| async move {
    let co = app.default_company().await;
    let channel = whatsapp_channel(&app, &co, &mock, PNID, APP_SECRET).await;
    let conv = wa_customer_says(&app, &co, channel, "send me the invoice").await;
    // An uploaded attachment: a real (minimal) PDF through `POST /media/save`.
    let pdf = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n";
    let (status, saved) = crate::media::upload(&app, &co.agent, "invoice.pdf", pdf).await;
    assert_eq!(status, 201, "{saved}");
    let attachment_id = saved["attachmentId"].as_i64().unwrap();
    let (status, sent) = app
        .post(
            "/message",
            Some(&co.agent),
            &json!({"conversationId": conv, "attachmentId": attachment_id, "text": "here"}),
        )
        .await;
    assert_eq!(status, 201, "{sent}");
    app.wait_for_message_status(&co.agent, conv, sent["messageId"].as_str().unwrap(), "SENT").await;
    let body = mock.wait_for_requests(1).await[0].json();
    assert_eq!(body["type"], "document");
    let public = app.config.public_url.trim_end_matches('/');
    assert_eq!(body["document"]["caption"], "here");
    assert_eq!(body["document"]["filename"], "invoice.pdf");
    // A signed link the provider can fetch without credentials (CONTRACT §7).
    let link = body["document"]["link"].as_str().unwrap();
    assert!(link.starts_with(&format!("{public}/media/{attachment_id}?exp=")), "{link}");
    let path = link.strip_prefix(public).unwrap();
    let res = app.client.get(app.url(path)).send().await.unwrap();
    assert_eq!(res.status().as_u16(), 200, "the signed link works without auth");
});

with_mock!(templates_go_out_as_template_messages, fast, |app: TestApp, mock: Mock| async move {
    let co = app.default_company().await;
    let channel = whatsapp_channel(&app, &co, &mock, PNID, APP_SECRET).await;
    let conv = wa_customer_says(&app, &co, channel, "hi").await;
    let (status, tpl) = app
        .post(
            "/template",
            Some(&co.admin),
            &json!({"name": "order_update", "content": "Hi {{1}}, your order {{2}} shipped", "language": "en_US", "category": "utility"}),
        )
        .await;
    assert_eq!(status, 201, "{tpl}");
    let tid = tpl["templateId"].as_i64().or_else(|| tpl["id"].as_i64()).unwrap();
    let (status, sent) = app
        .post(
            "/message",
            Some(&co.agent),
            &json!({"conversationId": conv, "templateId": tid, "params": ["Ann", "#42"]}),
        )
        .await;
    assert_eq!(status, 201, "{sent}");
    app.wait_for_message_status(&co.agent, conv, sent["messageId"].as_str().unwrap(), "SENT").await;
    let body = mock.wait_for_requests(1).await[0].json();
    assert_eq!(body["type"], "template");
    assert_eq!(body["template"]["name"], "order_update");
    assert_eq!(body["template"]["language"]["code"], "en_US");
    assert_eq!(
        body["template"]["components"],
        json!([{"type": "body", "parameters": [{"type": "text", "text": "Ann"}, {"type": "text", "text": "#42"}]}])
    );
});

with_mock!(whatsapp_users_known_only_by_bsuid_are_stored_and_answered, fast, |app: TestApp, mock: Mock| async move {
    let co = app.default_company().await;
    let channel = whatsapp_channel(&app, &co, &mock, PNID, APP_SECRET).await;
    let bsuid = "US.13491208655302741918";
    // A username user (WhatsApp 2026): no `from`, no `wa_id`, only business-scoped user ids.
    let username_text = |id: &str, text: &str| {
        envelope(
            PNID,
            json!({"contacts": [{"profile": {"name": "Kai Username"}, "user_id": bsuid, "parent_user_id": "US.ENT.1349"}],
                   "messages": [{"from_user_id": bsuid, "id": id, "timestamp": unix_now(), "type": "text", "text": {"body": text}}]}),
        )
    };
    let before = counts(&app).await;
    for (id, text) in [("wamid.bsuid-1", "hi, no number here"), ("wamid.bsuid-2", "still me")] {
        let (status, body) = wa_post(&app, APP_SECRET, &serde_json::to_vec(&username_text(id, text)).unwrap()).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["received"], 1, "{body}");
    }
    let after = counts(&app).await;
    assert_eq!((after.users - before.users, after.conversations - before.conversations), (1, 1), "one customer");
    assert_eq!(after.messages - before.messages, 2);
    let (_, list) = app.get("/conversation/conversation-page-list?limit=100", Some(&co.agent)).await;
    let conv = list["data"].as_array().unwrap().iter().find(|c| c["channelId"] == channel).unwrap().clone();
    assert_eq!(conv["user"]["whatsappUserId"], bsuid);
    assert_eq!(conv["user"]["phone"], Value::Null);
    assert_eq!(conv["user"]["firstName"], "Kai");
    let conv = conv["conversationId"].as_i64().unwrap();

    // The agent's reply goes to the BSUID as `recipient`, never as `to`.
    let (status, sent) =
        app.post("/message", Some(&co.agent), &json!({"conversationId": conv, "text": "hello Kai"})).await;
    assert_eq!(status, 201, "{sent}");
    app.wait_for_message_status(&co.agent, conv, sent["messageId"].as_str().unwrap(), "SENT").await;
    let body = mock.wait_for_requests(1).await[0].json();
    assert_eq!(body["recipient"], bsuid);
    assert!(body.get("to").is_none(), "{body}");
    assert_eq!(body["text"]["body"], "hello Kai");

    // A customer known by phone who then writes with phone and BSUID stays one customer and
    // learns the BSUID.
    let by_phone = wa_text(PNID, "14155550123", "wamid.phone", "by phone");
    let (status, body) = wa_post(&app, APP_SECRET, &serde_json::to_vec(&by_phone).unwrap()).await;
    assert_eq!((status, &body["received"]), (200, &json!(1)), "{body}");
    let users = counts(&app).await.users;
    let other = "US.99990000111122223333";
    let both = envelope(
        PNID,
        json!({"contacts": [{"profile": {"name": "Sheena Nelson"}, "wa_id": "14155550123", "user_id": other}],
               "messages": [{"from": "14155550123", "from_user_id": other, "id": "wamid.both", "timestamp": unix_now(),
                             "type": "text", "text": {"body": "now with a BSUID"}}]}),
    );
    let (status, body) = wa_post(&app, APP_SECRET, &serde_json::to_vec(&both).unwrap()).await;
    assert_eq!((status, &body["received"]), (200, &json!(1)), "{body}");
    assert_eq!(counts(&app).await.users, users, "no new customer");
    let (_, list) = app.get("/conversation/conversation-page-list?limit=100", Some(&co.agent)).await;
    let conv = list["data"].as_array().unwrap().iter().find(|c| c["user"]["phone"] == "+14155550123").unwrap().clone();
    assert_eq!(conv["user"]["whatsappUserId"], other, "{conv}");

    // A message with neither a phone nor a usable BSUID is acknowledged and not stored.
    let nobody = envelope(
        PNID,
        json!({"messages": [{"from_user_id": "not-a-bsuid", "id": "wamid.nobody", "timestamp": unix_now(),
                             "type": "text", "text": {"body": "?"}}]}),
    );
    let messages = counts(&app).await.messages;
    let (status, body) = wa_post(&app, APP_SECRET, &serde_json::to_vec(&nobody).unwrap()).await;
    assert_eq!((status, &body["received"]), (200, &json!(0)), "{body}");
    assert_eq!(counts(&app).await.messages, messages);
});

// ---- Twilio ----

pub(crate) const TWILIO_SID: &str = "AC0123456789abcdef0123456789abcdef";
pub(crate) const TWILIO_TOKEN: &str = "twilio-auth-token";
pub(crate) const TWILIO_NUMBER: &str = "+14155238886";

pub(crate) async fn twilio_channel(app: &TestApp, co: &Company, mock: &Mock) -> i64 {
    let (status, ch) = app
        .post(
            "/channel",
            Some(&co.admin),
            &json!({"provider": "twilio", "phoneNumber": TWILIO_NUMBER, "displayName": "Twilio",
                    "apiBaseUrl": mock.base, "accountSid": TWILIO_SID, "authToken": TWILIO_TOKEN}),
        )
        .await;
    assert_eq!(status, 201, "{ch}");
    ch["channelId"].as_i64().unwrap()
}

with_mock!(
    one_time_codes_go_out_through_the_company_twilio_sms_channel,
    normal,
    |app: TestApp, mock: Mock| async move {
        use crate::fynd_platform::{app_bearer, create_app, storefront};
        let co = app.default_company().await;
        // A Twilio channel whose sender is an SMS number (not `whatsapp:`) carries the codes.
        let (status, ch) = app
            .post(
                "/channel",
                Some(&co.admin),
                &json!({"provider": "twilio", "phoneNumber": TWILIO_NUMBER, "phoneNumberId": TWILIO_NUMBER,
                    "displayName": "SMS", "apiBaseUrl": mock.base, "accountSid": TWILIO_SID,
                    "authToken": TWILIO_TOKEN}),
            )
            .await;
        assert_eq!(status, 201, "{ch}");
        let (app_id, token) = create_app(&app, &co.admin, "texting").await;
        let bearer = app_bearer(app_id, &token);
        let (status, sent, _) = storefront(
            &app,
            reqwest::Method::POST,
            "/service/application/user/authentication/v1.0/login/otp",
            &bearer,
            None,
            Some(&json!({"country_code": "91", "mobile": "9812300001"})),
        )
        .await;
        assert_eq!(status, 200, "{sent}");
        let seen = mock.wait_for_requests(1).await;
        let text = seen.iter().find(|s| s.path.ends_with("/Messages.json")).expect("a Twilio send");
        assert_eq!(text.path, format!("/2010-04-01/Accounts/{TWILIO_SID}/Messages.json"));
        let form = text.form();
        let field = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        assert_eq!(field("To").as_deref(), Some("+919812300001"));
        assert_eq!(field("From").as_deref(), Some(TWILIO_NUMBER));
        assert_eq!(field("StatusCallback"), None, "no message row waits for its status");
        let body = field("Body").unwrap();
        let code = body.split(|c: char| !c.is_ascii_digit()).find(|w| w.len() == 6).expect("a code").to_owned();
        assert!(outbox(&app, "sms").is_empty(), "nothing in the file outbox");
        let (status, verified, _) = storefront(
            &app,
            reqwest::Method::POST,
            "/service/application/user/authentication/v1.0/otp/mobile/verify",
            &bearer,
            None,
            Some(&json!({"request_id": sent["request_id"], "otp": code})),
        )
        .await;
        assert_eq!(status, 200, "{verified}");
        // A provider failure is a clear 503, not a lost code reported as sent.
        mock.script([Reply::Json(500, json!({"code": 20500, "message": "down"}))]);
        let (status, body, _) = storefront(
            &app,
            reqwest::Method::POST,
            "/service/application/user/authentication/v1.0/login/otp",
            &bearer,
            None,
            Some(&json!({"country_code": "91", "mobile": "9812300002"})),
        )
        .await;
        assert_error(status, &body, 503, "not_ready");
    }
);

/// X-Twilio-Signature as twilio-python's `RequestValidator.compute_signature` computes it:
/// the URL, then for each sorted name each of its sorted values, HMAC-SHA1, base64.
pub(crate) fn twilio_signature(token: &str, url: &str, params: &[(&str, &str)]) -> String {
    let mut sorted: Vec<(&str, &str)> = params.to_vec();
    sorted.sort();
    sorted.dedup();
    let data: String = std::iter::once(url.to_owned()).chain(sorted.iter().map(|(k, v)| format!("{k}{v}"))).collect();
    let mut mac = <hmac::SimpleHmac<sha1::Sha1> as Mac>::new_from_slice(token.as_bytes()).unwrap();
    mac.update(data.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

pub(crate) async fn twilio_post(app: &TestApp, path: &str, params: &[(&str, &str)], sig: String) -> (u16, Value) {
    let body = serde_urlencoded::to_string(params).unwrap();
    let headers = [("Content-Type", "application/x-www-form-urlencoded".to_owned()), ("X-Twilio-Signature", sig)];
    post_raw(app, path, &headers, body.into_bytes()).await
}

#[test]
fn test_signer_matches_the_twilio_reference_vector() {
    let params = [
        ("CallSid", "CA1234567890ABCDE"),
        ("Caller", "+14158675309"),
        ("Digits", "1234"),
        ("From", "+14158675309"),
        ("To", "+18005551212"),
    ];
    assert_eq!(
        twilio_signature("12345", "https://mycompany.com/myapp.php?foo=1&bar=2", &params),
        "RSOYDt4T1cUTdK1PDd93/VVr8B8="
    );
}

with_mock!(twilio_inbound_status_and_outbound, fast, |app: TestApp, mock: Mock| async move {
    let co = app.default_company().await;
    let channel = twilio_channel(&app, &co, &mock).await;
    let public = app.config.public_url.trim_end_matches('/').to_owned();
    let inbound = [
        ("SmsMessageSid", "SM11"),
        ("NumMedia", "0"),
        ("ProfileName", "Ada Lovelace"),
        ("SmsSid", "SM11"),
        ("WaId", "14155550123"),
        ("SmsStatus", "received"),
        ("Body", "Hola, ¿tienen envíos? 🚚"),
        ("To", "whatsapp:+14155238886"),
        ("NumSegments", "1"),
        ("MessageSid", "SM11"),
        ("AccountSid", TWILIO_SID),
        ("From", "whatsapp:+14155550123"),
        ("ApiVersion", "2010-04-01"),
    ];
    let before = counts(&app).await;
    let (status, res) = twilio_post(
        &app,
        "/webhooks/twilio",
        &inbound,
        twilio_signature("wrong", &format!("{public}/webhooks/twilio"), &inbound),
    )
    .await;
    assert_error(status, &res, 401, "invalid_signature");
    let (status, res) = twilio_post(
        &app,
        "/webhooks/twilio",
        &inbound,
        twilio_signature(TWILIO_TOKEN, "http://elsewhere/webhooks/twilio", &inbound),
    )
    .await;
    assert_error(status, &res, 401, "invalid_signature");
    assert_eq!(counts(&app).await, before);

    let sig = twilio_signature(TWILIO_TOKEN, &format!("{public}/webhooks/twilio"), &inbound);
    for _ in 0..2 {
        let (status, res) = twilio_post(&app, "/webhooks/twilio", &inbound, sig.clone()).await;
        assert_eq!(status, 200, "{res}");
    }
    // The alias signs its own URL.
    let alias_sig = twilio_signature(TWILIO_TOKEN, &format!("{public}/message/messagein"), &inbound);
    let (status, res) = twilio_post(&app, "/message/messagein", &inbound, alias_sig).await;
    assert_eq!(status, 200, "{res}");
    let rows = channel_messages(&app, channel).await;
    assert_eq!(rows.len(), 1, "one message for three deliveries");
    let conv = conversation_of(&app, &co, channel).await;
    let (_, page) = app.get(&format!("/message/message-page-list/{conv}"), Some(&co.agent)).await;
    assert_eq!(page["data"][0]["content"], "Hola, ¿tienen envíos? 🚚");

    // Outbound through the Messages API, then its status callbacks.
    let (_, sent) = app.post("/message", Some(&co.agent), &json!({"conversationId": conv, "text": "Sí ✅"})).await;
    let mid = sent["messageId"].as_str().unwrap().to_owned();
    app.wait_for_message_status(&co.agent, conv, &mid, "SENT").await;
    let req = &mock.wait_for_requests(1).await[0];
    assert_eq!(req.path, format!("/2010-04-01/Accounts/{TWILIO_SID}/Messages.json"));
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{TWILIO_SID}:{TWILIO_TOKEN}"));
    assert_eq!(req.authorization.as_deref(), Some(format!("Basic {basic}").as_str()));
    let form = req.form();
    let get = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    assert_eq!(get("To"), Some("whatsapp:+14155550123"));
    assert_eq!(get("From"), Some("whatsapp:+14155238886"));
    assert_eq!(get("Body"), Some("Sí ✅"));
    let sid = channel_messages(&app, channel).await.into_iter().find(|r| r.0 == mid).unwrap().2.unwrap();
    assert!(sid.starts_with("SMmock"));
    for status_name in ["read", "delivered"] {
        let cb = [
            ("MessageSid", sid.as_str()),
            ("MessageStatus", status_name),
            ("AccountSid", TWILIO_SID),
            ("From", "whatsapp:+14155238886"),
            ("To", "whatsapp:+14155550123"),
        ];
        let sig = twilio_signature(TWILIO_TOKEN, &format!("{public}/webhooks/twilio"), &cb);
        let (status, res) = twilio_post(&app, "/webhooks/twilio", &cb, sig).await;
        assert_eq!(status, 200, "{res}");
    }
    app.wait_for_message_status(&co.agent, conv, &mid, "READ").await;
});

/// A customer's first Twilio WhatsApp message into `channel`; answers its conversation.
async fn twilio_customer_says(app: &TestApp, co: &Company, channel: i64, text: &str) -> i64 {
    let public = app.config.public_url.trim_end_matches('/').to_owned();
    let inbound = [
        ("MessageSid", "SM21"),
        ("NumMedia", "0"),
        ("WaId", "14155550123"),
        ("Body", text),
        ("To", "whatsapp:+14155238886"),
        ("AccountSid", TWILIO_SID),
        ("From", "whatsapp:+14155550123"),
    ];
    let sig = twilio_signature(TWILIO_TOKEN, &format!("{public}/webhooks/twilio"), &inbound);
    let (status, res) = twilio_post(app, "/webhooks/twilio", &inbound, sig).await;
    assert_eq!(status, 200, "{res}");
    conversation_of(app, co, channel).await
}

with_mock!(twilio_content_templates_send_content_sid_and_variables, fast, |app: TestApp, mock: Mock| async move {
    let co = app.default_company().await;
    let channel = twilio_channel(&app, &co, &mock).await;
    let conv = twilio_customer_says(&app, &co, channel, "hi").await;
    let template = |sid: Value| {
        json!({"name": "order_update", "content": "Hi {{1}}, your order {{2}} shipped", "language": "en_US",
               "category": "UTILITY", "contentSid": sid})
    };
    for bad in
        [json!("HX123"), json!("MG0123456789abcdef0123456789abcdef"), json!("HX0123456789abcdef0123456789abcdeg")]
    {
        let (status, res) = app.post("/template", Some(&co.admin), &template(bad)).await;
        assert_error(status, &res, 400, "validation_failed");
    }
    let sid = "HX0123456789abcdef0123456789abcdef";
    let (status, tpl) = app.post("/template", Some(&co.admin), &template(json!(sid))).await;
    assert_eq!(status, 201, "{tpl}");
    assert_eq!(tpl["contentSid"], sid);
    let tid = tpl["templateId"].as_i64().unwrap();
    let (status, sent) = app
        .post(
            "/message",
            Some(&co.agent),
            &json!({"conversationId": conv, "templateId": tid, "params": ["Ann", "#42"]}),
        )
        .await;
    assert_eq!(status, 201, "{sent}");
    app.wait_for_message_status(&co.agent, conv, sent["messageId"].as_str().unwrap(), "SENT").await;
    let form = mock.wait_for_requests(1).await[0].form();
    let get = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    assert_eq!(get("ContentSid").as_deref(), Some(sid));
    let variables: Value = serde_json::from_str(&get("ContentVariables").unwrap()).unwrap();
    assert_eq!(variables, json!({"1": "Ann", "2": "#42"}));
    assert_eq!(get("Body"), None, "a Content template goes without a body");
    assert_eq!(get("To").as_deref(), Some("whatsapp:+14155550123"));

    // Without a Content SID (set back to null) the rendered text goes as the body.
    let (status, tpl) = app.put(&format!("/template/{tid}"), Some(&co.admin), &template(Value::Null)).await;
    assert_eq!(status, 200, "{tpl}");
    assert!(tpl.get("contentSid").is_none(), "{tpl}");
    let (_, sent) = app
        .post("/message", Some(&co.agent), &json!({"conversationId": conv, "templateId": tid, "params": ["Bo", "#7"]}))
        .await;
    app.wait_for_message_status(&co.agent, conv, sent["messageId"].as_str().unwrap(), "SENT").await;
    let form = mock.wait_for_requests(2).await[1].form();
    let get = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    assert_eq!(get("Body").as_deref(), Some("Hi Bo, your order #7 shipped"));
    assert_eq!(get("ContentSid"), None);
});

/// Several nodes are a PostgreSQL deployment (CONTRACT §8): two servers on one database, each
/// with its delivery worker, share 20 jobs; the provider sees each message once.
#[actix_web::test]
async fn two_nodes_never_send_one_job_twice() {
    let mock = Mock::start().await;
    let Some(app) = TestApp::spawn_with(Backend::Postgres, mock.operator(fast)).await else {
        eprintln!("skipped: CONFAB_TEST_DATABASE_URL is not set");
        return;
    };
    let co = app.default_company().await;
    let channel = whatsapp_channel(&app, &co, &mock, PNID, APP_SECRET).await;
    let conv = wa_customer_says(&app, &co, channel, "hi").await;
    let second = TestApp::start(app.backend, app.config.clone(), app.dir.clone(), app.pg.clone()).await;
    let mut ids = Vec::new();
    for i in 0..20 {
        let node = if i % 2 == 0 { &app } else { &second };
        let (status, sent) =
            node.post("/message", Some(&co.agent), &json!({"conversationId": conv, "text": format!("n{i}")})).await;
        assert_eq!(status, 201, "{sent}");
        ids.push(sent["messageId"].as_str().unwrap().to_owned());
    }
    for id in &ids {
        app.wait_for_message_status(&co.agent, conv, id, "SENT").await;
    }
    let mut texts: Vec<String> =
        mock.seen().iter().map(|s| s.json()["text"]["body"].as_str().unwrap().to_owned()).collect();
    assert_eq!(texts.len(), 20, "each job sent exactly once");
    texts.sort();
    texts.dedup();
    assert_eq!(texts.len(), 20);
}

with_mock!(twilio_media_is_fetched_with_basic_auth, normal, |app: TestApp, mock: Mock| async move {
    let co = app.default_company().await;
    let channel = twilio_channel(&app, &co, &mock).await;
    // Twilio answers a media URL with a redirect to its CDN (here: the same mock).
    let path = format!("/2010-04-01/Accounts/{TWILIO_SID}/Messages/MM1/Media/ME1");
    mock.fix(&path, Reply::Redirect(format!("{}/cdn/ME1", mock.base)));
    mock.fix("/cdn/ME1", Reply::Bytes("audio/ogg", b"OggS".to_vec()));
    let st = app.state.clone();
    let row = st.db.run(move |c| confab::messaging::store::channel_by_id(c, channel)).await.unwrap();
    let provider = confab::providers::Provider::for_channel(&st, &row).unwrap();
    let media = provider.fetch_media(&format!("{}{path}", mock.base)).await.unwrap();
    assert_eq!(media.content_type, "audio/ogg");
    assert_eq!(read_all(media).await, b"OggS");
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{TWILIO_SID}:{TWILIO_TOKEN}"));
    let seen = mock.seen();
    assert_eq!(seen.iter().map(|s| s.path.as_str()).collect::<Vec<_>>(), [path.as_str(), "/cdn/ME1"]);
    assert_eq!(seen[0].authorization.as_deref(), Some(format!("Basic {basic}").as_str()));
});

// ---- crash safety ----

// The real binary claims a job, is SIGKILLed while the provider call is in flight, and a
// restarted process completes the job exactly once after the lease expires.
with_mock!(
    a_job_claimed_by_a_killed_process_completes_once_after_restart,
    normal,
    |app: TestApp, mock: Mock| async move {
        let co = app.default_company().await;
        let channel = whatsapp_channel(&app, &co, &mock, PNID, APP_SECRET).await;
        let conv = wa_customer_says(&app, &co, channel, "hi").await;
        // This in-process node stops (its worker with it); the message is written directly.
        app.stop().await;
        actix_web::rt::time::sleep(Duration::from_millis(200)).await;
        let principal = confab::core::auth::session::Principal {
            user_id: co.agent_id,
            company_id: co.company_id,
            role: confab::core::types::Role::Agent,
            session_id: String::new(),
        };
        let sent = confab::messaging::service::send(
            &app.state,
            &principal,
            confab::messaging::service::SendRequest {
                target: confab::messaging::service::Target::Conversation(conv),
                content: confab::messaging::service::Content::Text("survive a crash".into()),
                client_id: None,
                private: false,
                schedule: None,
            },
        )
        .await
        .unwrap();
        let mid = sent.message.message_id.clone();
        mock.script([Reply::Hang]);

        let db_url = app.config.database_url();
        let data_dir = app.data_dir();
        let spawn = || {
            std::process::Command::new(env!("CARGO_BIN_EXE_confab"))
                .env("CONFAB_DATABASE_URL", &db_url)
                .env("CONFAB_DATA_DIR", &data_dir)
                .env("CONFAB_BIND", "127.0.0.1:0")
                .env("CONFAB_OUTBOX_LEASE_SECS", "2")
                .env("CONFAB_OUTBOX_BACKOFF_MS", "10")
                .env("CONFAB_WHATSAPP_API_URL", &mock.base)
                .env("CONFAB_ALLOW_PRIVATE_FETCH", "true")
                .env("CONFAB_CONFIG", "/nonexistent/confab.toml")
                .env("CONFAB_LOG", "warn")
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("start confab")
        };
        let mut first = spawn();
        mock.wait_for_requests(1).await;
        first.kill().unwrap(); // SIGKILL
        first.wait().unwrap();
        let job = {
            let mid = mid.clone();
            move |app: &TestApp| {
                let mid = mid.clone();
                let db = app.state.db.clone();
                async move {
                    db.run(move |c| {
                        use confab::core::db::schema::outbox;
                        Ok(outbox::table
                            .filter(outbox::ref_id.eq(mid).and(outbox::kind.eq("send")))
                            .select((
                                outbox::attempts,
                                outbox::lease_owner.is_not_null(),
                                outbox::done_at.is_not_null(),
                            ))
                            .first::<(i32, bool, bool)>(c)?)
                    })
                    .await
                    .unwrap()
                }
            }
        };
        assert_eq!(job(&app).await, (1, true, false), "claimed, in flight, not done");

        let mut second = spawn();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let rows = channel_messages(&app, channel).await;
            let row = rows.iter().find(|r| r.0 == mid).unwrap();
            if row.1 == "SENT" {
                assert!(row.2.as_deref().unwrap().starts_with("wamid.mock-"));
                break;
            }
            assert!(std::time::Instant::now() < deadline, "never sent after restart: {row:?}");
            actix_web::rt::time::sleep(Duration::from_millis(100)).await;
        }
        // Give the restarted node time to misbehave (another lease period), then check.
        actix_web::rt::time::sleep(Duration::from_millis(2500)).await;
        second.kill().unwrap();
        second.wait().unwrap();
        let (attempts, _, done) = job(&app).await;
        assert!(done);
        assert_eq!(attempts, 2, "claimed once by each process");
        assert_eq!(mock.seen().len(), 2, "the killed attempt and the one that completed; no third send");
        let sent_events: i64 = {
            let db = app.state.db.clone();
            db.run(move |c| {
                use confab::core::db::schema::events;
                Ok(events::table
                    .filter(events::conversation_id.eq(conv).and(events::kind.eq("message.updated")))
                    .count()
                    .get_result(c)?)
            })
            .await
            .unwrap()
        };
        assert_eq!(sent_events, 1, "SENT recorded once");
    }
);

// ---- fuzz ----

fn mutate(v: &mut Value, rng: &mut impl rand::Rng) {
    let junk = |rng: &mut dyn rand::RngCore| -> Value {
        match rng.next_u32() % 8 {
            0 => Value::Null,
            1 => json!(rng.next_u64()),
            2 => json!(-1.5e300),
            3 => json!("\u{0}\u{7f}💥ünï"),
            4 => json!([]),
            5 => json!({}),
            6 => json!(true),
            _ => json!("x".repeat((rng.next_u32() % 5000) as usize)),
        }
    };
    match v {
        Value::Object(map) => {
            for (_, child) in map.iter_mut() {
                if rng.gen_ratio(1, 6) {
                    *child = junk(rng);
                } else {
                    mutate(child, rng);
                }
            }
        }
        Value::Array(items) => {
            for child in items.iter_mut() {
                if rng.gen_ratio(1, 6) {
                    *child = junk(rng);
                } else {
                    mutate(child, rng);
                }
            }
        }
        _ => {}
    }
}

with_mock!(fuzzed_signed_bodies_never_cause_a_500, normal, |app: TestApp, mock: Mock| async move {
    use rand::{Rng, SeedableRng};
    let co = app.default_company().await;
    whatsapp_channel(&app, &co, &mock, PNID, APP_SECRET).await;
    twilio_channel(&app, &co, &mock).await;
    let seed: u64 = rand::random();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let t = unix_now();
    let samples: Vec<Value> = vec![
        wa_text(PNID, "14155550123", "wamid.f", "fuzz"),
        wa_statuses(PNID, &[("wamid.f", "read"), ("wamid.g", "failed")]),
        envelope(
            PNID,
            json!({"messages": [
                {"from": "14155550123", "id": "wamid.i", "timestamp": t, "type": "image", "image": {"id": "1", "mime_type": "image/png"}},
                {"from": "14155550123", "id": "wamid.l", "timestamp": t, "type": "location", "location": {"latitude": 1.0, "longitude": 2.0}},
                {"from": "14155550123", "id": "wamid.c", "timestamp": t, "type": "contacts", "contacts": [{"name": {"formatted_name": "A"}}]},
                {"from": "14155550123", "id": "wamid.r", "timestamp": t, "type": "interactive", "interactive": {"type": "list_reply", "list_reply": {"title": "t"}}}
            ]}),
        ),
    ];
    for i in 0..1000 {
        let mut sample = samples[i % samples.len()].clone();
        let body: Vec<u8> = match i % 4 {
            0 => {
                let raw = serde_json::to_vec(&sample).unwrap();
                let cut = rng.gen_range(0..raw.len());
                raw[..cut].to_vec()
            }
            1 => (0..rng.gen_range(0..512)).map(|_| rng.r#gen::<u8>()).collect(),
            _ => {
                mutate(&mut sample, &mut rng);
                serde_json::to_vec(&sample).unwrap()
            }
        };
        let (status, res) = wa_post(&app, APP_SECRET, &body).await;
        assert!(status == 200 || status == 400, "seed {seed} case {i}: {status} {res}");
    }
    let public = app.config.public_url.trim_end_matches('/').to_owned();
    for i in 0..200 {
        let keys = [
            "MessageSid",
            "From",
            "To",
            "Body",
            "NumMedia",
            "MediaUrl0",
            "MediaContentType0",
            "MessageStatus",
            "AccountSid",
            "Latitude",
            "Longitude",
            "ErrorCode",
        ];
        let values = [
            "SM1",
            "whatsapp:+14155550123",
            "whatsapp:+14155238886",
            "",
            "\u{0}",
            "7",
            "99999999999",
            "delivered",
            TWILIO_SID,
            "💥",
            "received",
            "http://127.0.0.1:1/x",
        ];
        let params: Vec<(&str, &str)> = (0..rng.gen_range(0..12))
            .map(|_| (keys[rng.gen_range(0..keys.len())], values[rng.gen_range(0..values.len())]))
            .collect();
        let sig = twilio_signature(TWILIO_TOKEN, &format!("{public}/webhooks/twilio"), &params);
        let (status, res) = twilio_post(&app, "/webhooks/twilio", &params, sig).await;
        assert!(status == 200 || status == 400 || status == 401, "seed {seed} twilio case {i}: {status} {res}");
    }
    let (status, _) = app.get("/healthz", None).await;
    assert_eq!(status, 200);
});

// CONTRACT §6 inbound media: the message is stored at once with its attachment pending; the
// media fetcher downloads it from the provider into the media store and emits message.updated.
with_mock!(
    inbound_image_is_fetched_into_the_store_and_the_message_updated,
    fast,
    |app: TestApp, mock: Mock| async move {
        let co = app.default_company().await;
        let channel = whatsapp_channel(&app, &co, &mock, PNID, APP_SECRET).await;
        // A real (tiny) PNG, so the store's sniffing accepts it.
        let png: Vec<u8> = vec![
            0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 0x0d, 0x49, 0x48, 0x44, 0x52, 0, 0, 0, 1, 0, 0, 0,
            1, 8, 6, 0, 0, 0, 0x1f, 0x15, 0xc4, 0x89,
        ];
        mock.fix(
            "/998877",
            Reply::Json(
                200,
                json!({"messaging_product": "whatsapp", "url": format!("{}/download/998877", mock.base),
                                "mime_type": "image/png", "id": "998877"}),
            ),
        );
        mock.fix("/download/998877", Reply::Bytes("image/png", png.clone()));
        let body = envelope(
            PNID,
            json!({"contacts": [{"profile": {"name": "Sheena Nelson"}, "wa_id": "14155550177"}],
               "messages": [{"from": "14155550177", "id": "wamid.img-1", "timestamp": unix_now(), "type": "image",
                             "image": {"mime_type": "image/png", "sha256": "x", "id": "998877", "caption": "look"}}]}),
        );
        let (status, res) = wa_post(&app, APP_SECRET, &serde_json::to_vec(&body).unwrap()).await;
        assert_eq!(status, 200, "{res}");
        let conv = conversation_of(&app, &co, channel).await;
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let attachment = loop {
            let (_, page) = app.get(&format!("/message/message-page-list/{conv}"), Some(&co.agent)).await;
            let a = page["data"][0]["attachments"][0].clone();
            if a["state"] == "ready" {
                break a;
            }
            assert!(std::time::Instant::now() < deadline, "attachment never became ready: {page}");
            actix_web::rt::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(attachment["type"], "IMAGE");
        assert_eq!(attachment["filesize"], png.len());
        let res = app
            .client
            .get(app.url(&format!("/media/{}", attachment["attachmentId"])))
            .bearer_auth(&co.agent)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), 200);
        assert_eq!(res.bytes().await.unwrap().to_vec(), png, "the provider's bytes, stored durably");
    }
);

// ---- group commit ----

/// (provider message id, seq) of the messages of a conversation, in `pk` order (the thread's).
async fn conversation_messages(app: &TestApp, conversation_id: i64) -> Vec<(Option<String>, i64)> {
    use confab::core::db::schema::messages;
    app.state
        .db
        .run(move |c| {
            Ok(messages::table
                .filter(messages::conversation_id.eq(conversation_id))
                .order(messages::pk)
                .select((messages::provider_message_id, messages::seq))
                .load(c)?)
        })
        .await
        .unwrap()
}

async fn event_seqs(app: &TestApp, conversation_id: i64) -> Vec<i64> {
    use confab::core::db::schema::events;
    app.state
        .db
        .run(move |c| {
            Ok(events::table
                .filter(events::conversation_id.eq(conversation_id))
                .order(events::seq)
                .select(events::seq)
                .load(c)?)
        })
        .await
        .unwrap()
}

/// A group-commit write for [`a_panicking_write_loses_none_of_the_writes_queued_behind_it`]:
/// keeps a pending status under `key`, or sleeps and then panics.
struct Probe {
    channel_id: i64,
    key: String,
    panic_after: Option<std::time::Duration>,
}

impl confab::core::db::Batched for Probe {
    type Out = ();

    fn apply(c: &mut confab::core::db::Db, items: &[Self]) -> confab::core::error::ApiResult<Vec<()>> {
        use confab::core::db::schema::pending_statuses::dsl::*;
        for p in items {
            if let Some(after) = p.panic_after {
                std::thread::sleep(after);
                panic!("the probe panics, as a bug in a write would");
            }
            diesel::insert_into(pending_statuses)
                .values((
                    channel_id.eq(p.channel_id),
                    provider_message_id.eq(&p.key),
                    status.eq("READ"),
                    at.eq(confab::core::types::now()),
                ))
                .execute(c)?;
        }
        Ok(vec![(); items.len()])
    }
}

// A write that panics inside the group commit fails its own transaction and nothing queued
// behind it. The leader keeps its connection from one transaction to the next; the panic left
// that connection's transaction open, and the writes of the leader's next turn, run inside it
// as a savepoint, were acknowledged and then never committed. The leader now gives that
// connection up.
both_backends!(a_panicking_write_loses_none_of_the_writes_queued_behind_it, |app: TestApp| async move {
    use confab::core::db::schema::pending_statuses;
    use futures_util::future::join_all;
    let co = app.default_company().await;
    let db = app.state.db.clone();
    let probe = |key: String, panic_after| Probe { channel_id: co.channel_id, key, panic_after };
    let boom = db.write_batched(probe("boom".into(), Some(std::time::Duration::from_millis(300))), |_| {});
    let behind = async {
        // Queued while the leader sleeps in the panicking write: its next turn takes them.
        actix_web::rt::time::sleep(std::time::Duration::from_millis(100)).await;
        join_all((0..8).map(|i| db.write_batched(probe(format!("behind-{i}"), None), |_| {}))).await
    };
    let (boom, behind) = futures_util::future::join(boom, behind).await;
    assert!(boom.is_err(), "the panicking write is answered with an error");
    for answer in behind {
        answer.expect("a write queued behind the panicking one is acknowledged");
    }
    // Acknowledged means committed: another connection sees every one.
    let kept: i64 = db
        .run(|c| {
            Ok(pending_statuses::table
                .filter(pending_statuses::provider_message_id.like("behind-%"))
                .count()
                .get_result(c)?)
        })
        .await
        .unwrap();
    assert_eq!(kept, 8);
});

both_backends!(concurrent_webhooks_are_each_stored_and_published_once, |app: TestApp| async move {
    use futures_util::future::join_all;
    let co = app.default_company().await;
    let phones = ["+14155550201", "+14155550202", "+14155550203", "+14155550204"];
    let mut ws = crate::realtime::Ws::connect(&app, &co.agent).await;
    let mut convs = Vec::new();
    for phone in phones {
        let conv = app.customer_says(&co, phone, "hello").await;
        let (_, last) = ws.subscribe(conv, None).await;
        convs.push((conv, last));
    }
    // 64 deliveries: 48 distinct provider ids, 16 of them sent twice; four customers.
    let delivery = |i: usize| {
        let id = format!("grp-{}", if i < 48 { i } else { (i - 48) * 3 });
        let from = phones[if i < 48 { i } else { (i - 48) * 3 } % phones.len()];
        json!({"channelId": co.channel_id, "messages": [{"id": id, "from": from, "text": format!("m {id}")}]})
    };
    let bodies: Vec<Value> = (0..64).map(delivery).collect();
    let before = app.state.db.group_stats();
    let answers = join_all(bodies.iter().map(|b| app.sandbox_webhook(&co, b))).await;
    let after = app.state.db.group_stats();
    eprintln!("group commit: {} items in {} transactions", after.items - before.items, after.batches - before.batches);
    let (mut received, mut duplicates) = (0, 0);
    for (status, body) in &answers {
        assert_eq!(*status, 200, "{body}");
        received += body["received"].as_i64().unwrap();
        duplicates += body["duplicates"].as_i64().unwrap();
    }
    assert_eq!((received, duplicates), (48, 16));
    assert_eq!(after.items - before.items, 64, "every delivery went through the group commit");
    // The same counters at /metrics, with where the transactions' time went.
    let items = metric(&app, "confab_group_commit_items_total").await;
    assert!(items >= after.items as f64 && metric(&app, "confab_group_commit_batches_total").await >= 1.0, "{items}");
    for phase in ["wait", "apply", "commit", "after"] {
        let seconds = metric(&app, &format!("confab_group_commit_seconds_total{{phase=\"{phase}\"}}")).await;
        assert!(seconds > 0.0, "{phase}: {seconds}");
    }
    for (k, (conv, last_before)) in convs.iter().enumerate() {
        let stored = conversation_messages(&app, *conv).await;
        let mut ids: Vec<String> =
            stored.iter().filter_map(|(id, _)| id.clone()).filter(|id| id.starts_with("grp-")).collect();
        ids.sort();
        let mut want: Vec<String> = (0..48).filter(|i| i % phones.len() == k).map(|i| format!("grp-{i}")).collect();
        want.sort();
        assert_eq!(ids, want, "conversation {conv}: each acknowledged message exactly once");
        let seqs = event_seqs(&app, *conv).await;
        assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>(), "gap-free seqs in {conv}");
        let message_seqs: Vec<i64> = stored.iter().map(|(_, s)| *s).collect();
        assert!(message_seqs.iter().all(|s| seqs.contains(s)), "message seqs are event seqs");
        // The thread pages by pk: within a batch too, pk order is seq order.
        assert!(message_seqs.is_sorted_by(|a, b| a < b), "in pk order, seqs ascend in {conv}: {message_seqs:?}");
        assert_eq!(*seqs.last().unwrap(), last_before + want.len() as i64);
    }
    // The subscriber gets every new event of its conversations once, in seq order per
    // conversation, and nothing more.
    let mut got: std::collections::HashMap<i64, Vec<i64>> = Default::default();
    while got.values().map(Vec::len).sum::<usize>() < 48 {
        let f = ws.next().await;
        if f["type"] == "event" && f["event"] == "message.created" {
            got.entry(f["conversationId"].as_i64().unwrap()).or_default().push(f["seq"].as_i64().unwrap());
        }
    }
    for (conv, last_before) in &convs {
        let seqs = &got[conv];
        let want: Vec<i64> = (last_before + 1..=last_before + seqs.len() as i64).collect();
        assert_eq!(seqs, &want, "events of {conv} once each and in order");
    }
    while let Some(f) = ws.next_within(Duration::from_millis(500)).await {
        assert_ne!(f["type"], "event", "an event published twice: {f}");
    }
});

both_backends!(a_failing_item_in_a_group_commit_does_not_lose_the_others, |app: TestApp| async move {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use confab::core::db::schema::webhook_receipts as r;
    use futures_util::FutureExt;
    let db = app.state.db.clone();
    let insert = |c: &mut confab::core::db::Db, key: &str| -> confab::core::error::ApiResult<()> {
        diesel::insert_into(r::table)
            .values((r::provider.eq("test"), r::key.eq(key), r::received_at.eq(confab::core::types::now())))
            .execute(c)?;
        Ok(())
    };
    db.write(move |c| insert(c, "existing")).await.unwrap();
    // A first write holds the committer until the others are queued, so on SQLite they share
    // one transaction (on PostgreSQL each write is its own transaction, src/core/db/group.rs).
    let (started_tx, started) = std::sync::mpsc::channel::<()>();
    let (release, released) = std::sync::mpsc::channel::<()>();
    let plug_db = db.clone();
    let plug = async move {
        plug_db
            .write_grouped(
                move |c| {
                    started_tx.send(()).unwrap();
                    released.recv_timeout(Duration::from_secs(20)).unwrap();
                    insert(c, "plug")
                },
                |_| {},
            )
            .await
    };
    let plug = actix_web::rt::spawn(plug);
    web::block(move || started.recv_timeout(Duration::from_secs(20))).await.unwrap().unwrap();
    let before = db.group_stats();
    let published = Arc::new(AtomicUsize::new(0));
    let mut writes = Vec::new();
    for i in 1..=5 {
        let published = published.clone();
        let mut write = Box::pin(db.write_grouped(
            move |c| {
                insert(c, &format!("item-{i}"))?;
                if i == 3 {
                    insert(c, "existing")?; // a unique violation: this item fails
                }
                Ok(i)
            },
            move |_| {
                published.fetch_add(1, Ordering::SeqCst);
            },
        ));
        if app.backend == Backend::Sqlite {
            // On PostgreSQL each write is its own transaction and need not wait for the plug.
            assert!((&mut write).now_or_never().is_none(), "queued behind the plug");
        }
        writes.push(write);
    }
    release.send(()).unwrap();
    plug.await.unwrap().unwrap();
    let mut outcomes = Vec::new();
    for w in writes {
        outcomes.push(w.await);
    }
    for (i, outcome) in (1..=5).zip(&outcomes) {
        match (i, outcome) {
            (3, Err(e)) => assert!(e.is_unique_violation(), "item 3: {e:?}"),
            (3, Ok(_)) => panic!("item 3 must fail"),
            (_, Ok(v)) => assert_eq!(*v, i),
            (_, Err(e)) => panic!("item {i}: {e:?}"),
        }
    }
    let after = db.group_stats();
    let want = match app.backend {
        Backend::Sqlite => (2, 6), // the plug, then one batch of five
        // One transaction each; item 3, alone in its batch, rolls its transaction back.
        Backend::Postgres => (5, 5),
    };
    assert_eq!((after.batches - before.batches, after.items - before.items), want);
    assert_eq!(published.load(Ordering::SeqCst), 4, "on_commit runs for the committed items only");
    let mut keys: Vec<String> =
        db.run(|c| Ok(r::table.filter(r::provider.eq("test")).select(r::key).load(c)?)).await.unwrap();
    keys.sort();
    assert_eq!(keys, ["existing", "item-1", "item-2", "item-4", "item-5", "plug"], "item 3 rolled back alone");
});

// The channels webhooks are verified against are cached (messaging::channel_cache::WebhookChannels):
// a change through the API must still take effect at once on the node that took it.
both_backends!(a_rotated_secret_or_a_retired_channel_takes_effect_at_once, |app: TestApp| async move {
    let mut co = app.default_company().await;
    let say =
        |id: &str| json!({"channelId": co.channel_id, "messages": [{"id": id, "from": "+14155550101", "text": "hi"}]});
    let (status, body) = app.sandbox_webhook(&co, &say("rot-1")).await;
    assert_eq!(status, 200, "{body}");

    let (_, ch) = app.get(&format!("/channel/{}", co.channel_id), Some(&co.admin)).await;
    let (status, body) = app
        .put(
            &format!("/channel/{}", co.channel_id),
            Some(&co.admin),
            &json!({"provider": "sandbox", "phoneNumber": ch["phoneNumber"], "displayName": ch["displayName"],
                    "webhookSecret": "rotated-secret"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = app.sandbox_webhook(&co, &say("rot-2")).await;
    assert_eq!(status, 401, "the old secret is refused at once: {body}");
    co.secret = "rotated-secret".into();
    let (status, body) = app.sandbox_webhook(&co, &say("rot-3")).await;
    assert_eq!((status, body["received"].as_i64()), (200, Some(1)), "{body}");

    let (status, _) = app.delete(&format!("/channel/{}", co.channel_id), Some(&co.admin)).await;
    assert_eq!(status, 204);
    let (status, body) = app.sandbox_webhook(&co, &say("rot-4")).await;
    assert_eq!(status, 401, "a retired channel takes no delivery: {body}");
});

// ---- issue 22 item 4: deleting unsent messages; customers' edits and deletions ----

/// Waits (bounded) until the `send` job of a message has been tried and is waiting for its
/// next attempt (no worker holds it).
async fn wait_until_retry_pending(app: &TestApp, message_id: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let id = message_id.to_owned();
        let waiting: i64 = app
            .state
            .db
            .run(move |c| {
                use confab::core::db::schema::outbox;
                Ok(outbox::table
                    .filter(outbox::ref_id.eq(id).and(outbox::done_at.is_null()))
                    .filter(outbox::attempts.ge(1).and(outbox::lease_until.is_null()))
                    .count()
                    .get_result(c)?)
            })
            .await
            .unwrap();
        if waiting == 1 {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "the send job of {message_id} never waited for a retry");
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A WhatsApp channel with a customer's conversation, and an agent's send to it whose first
/// attempt the provider refused (500): the job waits for a retry (10 minutes away with
/// [`slow_retries`]). Returns (channel, conversation, message id).
async fn send_waiting_for_retry(app: &TestApp, co: &Company, mock: &Mock, text: &str) -> (i64, i64, String) {
    let channel = whatsapp_channel(app, co, mock, PNID, APP_SECRET).await;
    let inbound = wa_text(PNID, "14155550123", "wamid.in1", "hi");
    assert_eq!(wa_post(app, APP_SECRET, &serde_json::to_vec(&inbound).unwrap()).await.0, 200);
    let conv = conversation_of(app, co, channel).await;
    mock.script([Reply::Json(500, meta_error(2, "Service temporarily unavailable"))]);
    let (status, sent) = app.post("/message", Some(&co.agent), &json!({"conversationId": conv, "text": text})).await;
    assert_eq!(status, 201, "{sent}");
    let id = sent["messageId"].as_str().unwrap().to_owned();
    mock.wait_for_requests(1).await;
    wait_until_retry_pending(app, &id).await;
    (channel, conv, id)
}

/// (finished, last error) of each `send` job of a message.
async fn send_jobs(app: &TestApp, message_id: &str) -> Vec<(bool, Option<String>)> {
    let id = message_id.to_owned();
    app.state
        .db
        .run(move |c| {
            use confab::core::db::schema::outbox;
            Ok(outbox::table
                .filter(outbox::ref_id.eq(id))
                .select((outbox::done_at.is_not_null(), outbox::last_error))
                .load::<(bool, Option<String>)>(c)?)
        })
        .await
        .unwrap()
}

fn slow_retries(cfg: &mut confab::core::config::Config) {
    cfg.outbox_backoff_ms = 600_000;
}

with_mock!(
    unsent_messages_can_be_deleted_until_the_worker_takes_them,
    slow_retries,
    |app: TestApp, mock: Mock| async move {
        let co = app.default_company().await;
        let (_, conv, first_id) = send_waiting_for_retry(&app, &co, &mock, "first").await;
        let (status, deleted) = app.delete(&format!("/message/{first_id}"), Some(&co.agent)).await;
        assert_eq!(status, 200, "{deleted}");
        assert_eq!(deleted["deleted"], true);
        assert_eq!(deleted["content"], Value::Null);
        assert_eq!(deleted["status"], "PENDING");
        let jobs = send_jobs(&app, &first_id).await;
        assert_eq!(jobs, vec![(true, Some("deleted before it was sent".to_owned()))], "the delivery is cancelled");

        // A message the worker is sending right now cannot be taken back.
        mock.script([Reply::Hang]);
        let (_, second) =
            app.post("/message", Some(&co.agent), &json!({"conversationId": conv, "text": "second"})).await;
        mock.wait_for_requests(2).await;
        let (status, body) =
            app.delete(&format!("/message/{}", second["messageId"].as_str().unwrap()), Some(&co.agent)).await;
        assert_error(status, &body, 409, "already_sending");
    }
);

with_mock!(
    a_send_answered_before_a_crash_is_recorded_from_its_answer_and_not_sent_again,
    slow_retries,
    |app: TestApp, mock: Mock| async move {
        let co = app.default_company().await;
        let (channel, _, id) = send_waiting_for_retry(&app, &co, &mock, "once").await;

        // What a process killed after committing the provider's answer, before the write that
        // records it on the message, leaves behind: the answer, and its lease, now run out.
        let job = id.clone();
        app.state
            .db
            .write(move |c| {
                use confab::core::db::schema::outbox;
                let past = confab::core::types::now() - chrono::Duration::seconds(1);
                diesel::update(outbox::table.filter(outbox::ref_id.eq(job)))
                    .set((
                        outbox::answer.eq(r#"{"provider_id":"wamid.answered","then":["DELIVERED"]}"#),
                        outbox::lease_owner.eq("a-killed-process"),
                        outbox::lease_until.eq(past),
                        outbox::next_attempt_at.eq(past),
                    ))
                    .execute(c)?;
                Ok(())
            })
            .await
            .unwrap();
        app.state.outbox_wake.notify_one();

        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let rows = channel_messages(&app, channel).await;
            let row = rows.iter().find(|r| r.0 == id).unwrap();
            if row.1 == "DELIVERED" {
                assert_eq!(row.2.as_deref(), Some("wamid.answered"), "the answer's provider id is recorded");
                break;
            }
            assert!(std::time::Instant::now() < deadline, "the answered job was never recorded: {row:?}");
            actix_web::rt::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(mock.seen().len(), 1, "an answered send is not sent again");
        assert_eq!(send_jobs(&app, &id).await, vec![(true, None)], "the job is finished, without an error");
    }
);

with_mock!(
    whatsapp_edit_and_revoke_notices_apply_to_the_stored_message,
    normal,
    |app: TestApp, mock: Mock| async move {
        let co = app.default_company().await;
        let channel = whatsapp_channel(&app, &co, &mock, PNID, APP_SECRET).await;
        let post = |body: Value| {
            let app = &app;
            async move { wa_post(app, APP_SECRET, &serde_json::to_vec(&body).unwrap()).await }
        };
        assert_eq!(post(wa_text(PNID, "14155550123", "wamid.orig", "helo, my order?")).await.0, 200);
        let conv = conversation_of(&app, &co, channel).await;
        let notice = |id: &str, kind: &str, part: Value| {
            let mut m = json!({"from": "14155550123", "id": id, "timestamp": unix_now(), "type": kind});
            m[kind] = part;
            envelope(
                PNID,
                json!({"contacts": [{"profile": {"name": "Sheena Nelson"}, "wa_id": "14155550123"}], "messages": [m]}),
            )
        };
        let edit = notice(
            "wamid.edit1",
            "edit",
            json!({"original_message_id": "wamid.orig", "message": {"type": "text", "text": {"body": "hello, my order?"}}}),
        );
        let (status, body) = post(edit.clone()).await;
        assert_eq!(status, 200, "{body}");
        let seq_after_edit = app.get("/conversation/conversation-page-list", Some(&co.agent)).await.1["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["conversationId"] == conv)
            .unwrap()["lastSeq"]
            .clone();
        let (_, page) = app.get(&format!("/message/message-page-list/{conv}"), Some(&co.agent)).await;
        assert_eq!(page["totalCount"], 1, "an edit is not a new message: {page}");
        assert_eq!(page["data"][0]["content"], "hello, my order?");
        assert!(page["data"][0]["editedAt"].is_string());
        // A retried delivery of the same notice changes nothing (no second event).
        assert_eq!(post(edit).await.0, 200);
        let (_, list) = app.get("/conversation/conversation-page-list", Some(&co.agent)).await;
        let again =
            list["data"].as_array().unwrap().iter().find(|c| c["conversationId"] == conv).unwrap()["lastSeq"].clone();
        assert_eq!(again, seq_after_edit);

        // A notice about a message never seen is recorded and ignored.
        let (status, _) = post(notice("wamid.r0", "revoke", json!({"original_message_id": "wamid.unknown"}))).await;
        assert_eq!(status, 200);
        let (status, _) = post(notice("wamid.r1", "revoke", json!({"original_message_id": "wamid.orig"}))).await;
        assert_eq!(status, 200);
        let (_, page) = app.get(&format!("/message/message-page-list/{conv}"), Some(&co.agent)).await;
        assert_eq!(page["totalCount"], 1);
        assert_eq!(page["data"][0]["deleted"], true);
        assert_eq!(page["data"][0]["content"], Value::Null);
        let (_, hits) = app.get("/message/message-search/order", Some(&co.agent)).await;
        assert_eq!(hits["totalCount"], 0, "a revoked message's text is gone from search too");
    }
);
