//! Signed outgoing webhooks and agent bots (issue 23, README "Outgoing webhooks" and "Agent
//! bots"). The receiver here is written from the README alone: it checks
//! `X-Confab-Signature` (`t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>." + raw body)>`, one `v1=`
//! per valid secret) over the raw bytes it got, dedups by `X-Confab-Event-Id` and orders a
//! conversation's events by `seq`.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
    time::Duration,
};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use hmac::Mac;
use serde_json::{Value, json};

use crate::{both_backends, helpers::*, realtime::Ws};

/// `both_backends!` with a configuration tweak.
macro_rules! both_with {
    ($name:ident, $tweak:expr, $scenario:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[actix_web::test]
            async fn sqlite() {
                let app = TestApp::spawn_with(Backend::Sqlite, $tweak).await.unwrap();
                ($scenario)(app).await;
            }

            #[actix_web::test]
            async fn postgres() {
                match TestApp::spawn_with(Backend::Postgres, $tweak).await {
                    Some(app) => ($scenario)(app).await,
                    None => eprintln!("skipped: CONFAB_TEST_DATABASE_URL is not set"),
                }
            }
        }
    };
}

fn fast(cfg: &mut confab::core::config::Config) {
    cfg.webhook_backoff_ms = 1;
}

#[derive(Clone, Debug)]
struct Got {
    signature: String,
    event_id: String,
    body: Vec<u8>,
}

impl Got {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

#[derive(Default)]
struct ReceiverState {
    got: Vec<Got>,
    /// Statuses to answer with, in order; then 200.
    script: VecDeque<u16>,
    /// Answer this to everything once the script is used up (default 200).
    always: Option<u16>,
}

#[derive(Clone)]
struct Receiver {
    url: String,
    state: Arc<Mutex<ReceiverState>>,
}

impl Receiver {
    async fn start() -> Receiver {
        let state: Arc<Mutex<ReceiverState>> = Arc::default();
        let shared = state.clone();
        let server = HttpServer::new(move || {
            App::new().app_data(web::Data::new(shared.clone())).default_service(web::to(receive))
        })
        .workers(1)
        .bind("127.0.0.1:0")
        .unwrap();
        let addr = server.addrs()[0];
        actix_web::rt::spawn(server.run());
        Receiver { url: format!("http://{addr}/hook"), state }
    }

    fn script(&self, statuses: impl IntoIterator<Item = u16>) {
        self.state.lock().unwrap().script.extend(statuses);
    }

    fn always(&self, status: Option<u16>) {
        self.state.lock().unwrap().always = status;
    }

    fn got(&self) -> Vec<Got> {
        self.state.lock().unwrap().got.clone()
    }

    /// Waits (bounded) until `pred` holds for what arrived.
    async fn wait_until(&self, what: &str, pred: impl Fn(&[Got]) -> bool) -> Vec<Got> {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let got = self.got();
            if pred(&got) {
                return got;
            }
            assert!(std::time::Instant::now() < deadline, "receiver: {what}; got {} requests", got.len());
            actix_web::rt::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn receive(req: HttpRequest, body: web::Bytes, state: web::Data<Arc<Mutex<ReceiverState>>>) -> HttpResponse {
    let header = |n: &str| req.headers().get(n).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let mut s = state.lock().unwrap();
    s.got.push(Got {
        signature: header("X-Confab-Signature"),
        event_id: header("X-Confab-Event-Id"),
        body: body.to_vec(),
    });
    let status = s.script.pop_front().or(s.always).unwrap_or(200);
    HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap()).finish()
}

/// The README's verification: parse `t` and every `v1`, recompute the HMAC over `"<t>." + raw
/// body` with the secret, compare in constant time.
fn verifies(secret: &str, got: &Got) -> bool {
    let mut t = None;
    let mut sigs = Vec::new();
    for part in got.signature.split(',') {
        match part.split_once('=') {
            Some(("t", v)) => t = Some(v.to_owned()),
            Some(("v1", v)) => sigs.push(v.to_owned()),
            _ => {}
        }
    }
    let Some(t) = t else { return false };
    let mut mac = <hmac::SimpleHmac<sha2::Sha256> as Mac>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(t.as_bytes());
    mac.update(b".");
    mac.update(&got.body);
    let want = mac.finalize().into_bytes();
    sigs.iter().any(|s| {
        hex::decode(s).is_ok_and(|given| {
            let mut check = <hmac::SimpleHmac<sha2::Sha256> as Mac>::new_from_slice(secret.as_bytes()).unwrap();
            check.update(t.as_bytes());
            check.update(b".");
            check.update(&got.body);
            given.len() == want.len() && check.verify_slice(&given).is_ok()
        })
    })
}

/// The distinct events (by event id) of one conversation, in arrival order.
fn events_of(got: &[Got], conversation_id: i64) -> Vec<Value> {
    let mut seen = std::collections::HashSet::new();
    got.iter()
        .filter(|g| seen.insert(g.event_id.clone()))
        .map(Got::json)
        .filter(|e| e["conversationId"] == conversation_id)
        .collect()
}

async fn subscribe(app: &TestApp, admin: &str, url: &str) -> (i64, String) {
    let (status, sub) = app
        .post(
            "/webhook-subscriptions",
            Some(admin),
            &json!({"url": url, "events": ["message.created", "message.updated", "conversation.created", "conversation.updated"]}),
        )
        .await;
    assert_eq!(status, 201, "{sub}");
    (sub["subscriptionId"].as_i64().unwrap(), sub["secret"].as_str().unwrap().to_owned())
}

/// Waits (bounded) until the subscription's delivery log satisfies `pred`.
async fn wait_deliveries(
    app: &TestApp,
    admin: &str,
    sub: i64,
    what: &str,
    pred: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (status, page) = app.get(&format!("/webhook-subscriptions/{sub}/deliveries?limit=100"), Some(admin)).await;
        assert_eq!(status, 200, "{page}");
        let items = page["items"].as_array().unwrap().clone();
        if pred(&items) {
            return items;
        }
        assert!(std::time::Instant::now() < deadline, "deliveries: {what}; have {page}");
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
}

both_with!(
    a_receiver_verifies_every_event_of_a_conversation_in_order_across_a_rotation,
    fast,
    |app: TestApp| async move {
        let co = app.default_company().await;
        let rx = Receiver::start().await;
        let (sub, secret) = subscribe(&app, &co.admin, &rx.url).await;

        let conv = app.customer_says(&co, "+14155550101", "Hi, is my order shipped?").await;
        let (status, sent) =
            app.post("/message", Some(&co.agent), &json!({"conversationId": conv, "text": "Yes, yesterday."})).await;
        assert_eq!(status, 201, "{sent}");
        let _ = app.customer_says(&co, "+14155550101", "Thanks!").await;
        let (status, _) =
            app.patch(&format!("/conversation/{conv}"), Some(&co.agent), &json!({"status": "resolved"})).await;
        assert_eq!(status, 200);

        app.wait_for_message_status(&co.agent, conv, sent["messageId"].as_str().unwrap(), "DELIVERED").await;
        // Every event of the conversation, as the database numbered them.
        let last_seq = {
            let (_, list) = app.get("/conversation/conversation-page-list?limit=100", Some(&co.agent)).await;
            list["data"].as_array().unwrap().iter().find(|c| c["conversationId"] == conv).unwrap()["lastSeq"]
                .as_i64()
                .unwrap()
        };
        let got = rx
            .wait_until("every event up to the conversation's last seq", |got| {
                events_of(got, conv).iter().filter(|e| e["seq"].as_i64().is_some_and(|s| s <= last_seq)).count()
                    == last_seq as usize
            })
            .await;
        for g in &got {
            assert!(verifies(&secret, g), "signature of {}", String::from_utf8_lossy(&g.body));
            assert_eq!(g.json()["id"], g.event_id, "X-Confab-Event-Id is the event's id");
        }
        let events = events_of(&got, conv);
        assert_eq!(events[0]["type"], "conversation.created", "{events:?}");
        assert!(events[0]["seq"].is_null());
        let seqs: Vec<i64> = events[1..].iter().map(|e| e["seq"].as_i64().unwrap()).collect();
        assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>(), "every seq once, in order");
        assert!(seqs.len() as i64 >= last_seq);
        let first_message = events.iter().find(|e| e["type"] == "message.created").unwrap();
        assert_eq!(first_message["companyId"], co.company_id);
        assert_eq!(first_message["data"]["content"], "Hi, is my order shipped?", "{first_message}");
        assert!(events.iter().any(|e| e["type"] == "conversation.updated" && e["data"]["status"] == "resolved"));
        assert!(events.iter().any(|e| e["type"] == "message.updated"), "the agent's message moved on: {events:?}");

        // A tampered body or another secret does not verify.
        let mut forged = got[0].clone();
        forged.body.extend_from_slice(b" ");
        assert!(!verifies(&secret, &forged));
        assert!(!verifies("whsec_not-the-secret", &got[0]));

        // Rotation: the new secret signs from now on and the old one keeps verifying (24 h).
        let (status, rotated) =
            app.post(&format!("/webhook-subscriptions/{sub}/rotate-secret"), Some(&co.admin), &json!({})).await;
        assert_eq!(status, 200, "{rotated}");
        let new_secret = rotated["secret"].as_str().unwrap().to_owned();
        assert_ne!(new_secret, secret);
        let before = got.len();
        let (status, _) =
            app.post("/message", Some(&co.agent), &json!({"conversationId": conv, "text": "Anything else?"})).await;
        assert_eq!(status, 201);
        let got = rx.wait_until("a delivery after the rotation", |got| got.len() > before).await;
        let after = &got[before];
        assert_eq!(after.signature.matches("v1=").count(), 2, "{}", after.signature);
        assert!(verifies(&new_secret, after) && verifies(&secret, after));

        // The delivery log: each delivered with one attempt.
        let items = wait_deliveries(&app, &co.admin, sub, "all delivered", |items| {
            items.iter().all(|d| d["status"] == "delivered")
        })
        .await;
        assert!(
            items.iter().all(|d| d["attempts"][0]["code"] == 200 && d["attempts"][0]["durationMs"].is_i64()),
            "{items:?}"
        );
    }
);

both_with!(failed_deliveries_are_retried_in_order_then_dead_lettered_and_replayed, fast, |app: TestApp| async move {
    let co = app.default_company().await;
    let rx = Receiver::start().await;
    let (status, sub) = app
        .post("/webhook-subscriptions", Some(&co.admin), &json!({"url": rx.url, "events": ["message.created"]}))
        .await;
    assert_eq!(status, 201, "{sub}");
    let (sub, secret) = (sub["subscriptionId"].as_i64().unwrap(), sub["secret"].as_str().unwrap().to_owned());

    // The first event fails twice (500, 503); the second must wait for it.
    rx.script([500, 503]);
    let conv = app.customer_says(&co, "+14155550102", "one").await;
    let (status, _) = app.post("/message", Some(&co.agent), &json!({"conversationId": conv, "text": "two"})).await;
    assert_eq!(status, 201);
    let got = rx.wait_until("both events delivered", |got| got.len() >= 4).await;
    let texts: Vec<String> =
        got.iter().map(|g| g.json()["data"]["content"].as_str().unwrap_or_default().to_owned()).collect();
    assert_eq!(texts, ["one", "one", "one", "two"], "retried, and in order");
    assert!(got.iter().all(|g| verifies(&secret, g)));
    assert_eq!(got[0].event_id, got[2].event_id, "a retry carries the same event id");
    let items = wait_deliveries(&app, &co.admin, sub, "both delivered", |items| {
        items.len() == 2 && items.iter().all(|d| d["status"] == "delivered")
    })
    .await;
    let first = items.iter().find(|d| d["seq"] == 1).unwrap();
    let codes: Vec<Value> = first["attempts"].as_array().unwrap().iter().map(|a| a["code"].clone()).collect();
    assert_eq!(codes, [json!(500), json!(503), json!(200)]);

    // A receiver that keeps failing: dead-lettered after 8 attempts, and the subscription goes on.
    rx.always(Some(502));
    let (status, _) = app.post("/message", Some(&co.agent), &json!({"conversationId": conv, "text": "three"})).await;
    assert_eq!(status, 201);
    let items = wait_deliveries(&app, &co.admin, sub, "the third dead-lettered", |items| {
        items.iter().any(|d| d["status"] == "failed")
    })
    .await;
    let dead = items.iter().find(|d| d["status"] == "failed").unwrap().clone();
    assert_eq!(dead["attempts"].as_array().unwrap().len(), 8, "{dead}");
    let (status, failed) =
        app.get(&format!("/webhook-subscriptions/{sub}/deliveries?status=failed"), Some(&co.admin)).await;
    assert_eq!((status, failed["total"].as_i64()), (200, Some(1)), "{failed}");

    rx.always(None);
    let (status, _) = app.post("/message", Some(&co.agent), &json!({"conversationId": conv, "text": "four"})).await;
    assert_eq!(status, 201);
    let got = rx
        .wait_until("the next event after the dead letter", |got| {
            got.iter().any(|g| g.json()["data"]["content"] == "four")
        })
        .await;
    assert!(verifies(&secret, got.last().unwrap()));

    // A replay of the dead letter: same event id, delivered.
    let dead_id = dead["deliveryId"].as_i64().unwrap();
    let (status, replay) = app
        .post(&format!("/webhook-subscriptions/{sub}/deliveries/{dead_id}/retry"), Some(&co.admin), &json!({}))
        .await;
    assert_eq!(status, 202, "{replay}");
    let got = rx
        .wait_until("the replay", |got| {
            got.iter().filter(|g| g.event_id == dead["eventId"].as_str().unwrap()).count() == 9
        })
        .await;
    assert!(verifies(&secret, got.last().unwrap()));
    wait_deliveries(&app, &co.admin, sub, "the replay delivered", |items| {
        items.iter().any(|d| d["deliveryId"] == dead_id && d["status"] == "delivered")
    })
    .await;
    let (status, body) =
        app.post(&format!("/webhook-subscriptions/{sub}/deliveries/999999/retry"), Some(&co.admin), &json!({})).await;
    assert_error(status, &body, 404, "not_found");
});

fn slow_retry(cfg: &mut confab::core::config::Config) {
    cfg.webhook_backoff_ms = 1000;
}

// A delivery queued before the subscription was switched off is not sent: it fails as
// "inactive" without an attempt, and a replay after switching it on delivers it.
both_with!(an_inactive_subscription_sends_nothing_already_queued, slow_retry, |app: TestApp| async move {
    let co = app.default_company().await;
    let rx = Receiver::start().await;
    let (status, sub) = app
        .post("/webhook-subscriptions", Some(&co.admin), &json!({"url": rx.url, "events": ["message.created"]}))
        .await;
    assert_eq!(status, 201, "{sub}");
    let sub = sub["subscriptionId"].as_i64().unwrap();
    // The first attempt fails; the retry waits ~2 s (backoff 1 s · 2¹), during which it is
    // switched off.
    rx.script([500]);
    app.customer_says(&co, "+14155550105", "queued").await;
    rx.wait_until("the first attempt", |got| got.len() == 1).await;
    let (status, off) =
        app.put(&format!("/webhook-subscriptions/{sub}"), Some(&co.admin), &json!({"active": false})).await;
    assert_eq!((status, off["active"].as_bool()), (200, Some(false)), "{off}");
    let sent_before_off = rx.got().len();
    let items = wait_deliveries(&app, &co.admin, sub, "failed as inactive", |items| {
        items.len() == 1 && items[0]["status"] == "failed"
    })
    .await;
    assert_eq!(rx.got().len(), sent_before_off, "nothing sent after it was switched off");
    assert_eq!(items[0]["attempts"].as_array().unwrap().len(), sent_before_off, "{items:?}");
    let (status, on) =
        app.put(&format!("/webhook-subscriptions/{sub}"), Some(&co.admin), &json!({"active": true})).await;
    assert_eq!(status, 200, "{on}");
    let id = items[0]["deliveryId"].as_i64().unwrap();
    let (status, replay) =
        app.post(&format!("/webhook-subscriptions/{sub}/deliveries/{id}/retry"), Some(&co.admin), &json!({})).await;
    assert_eq!(status, 202, "{replay}");
    wait_deliveries(&app, &co.admin, sub, "the replay delivered", |items| items[0]["status"] == "delivered").await;
});

both_backends!(subscriptions_are_admin_only_validated_and_per_company, |app: TestApp| async move {
    let co = app.default_company().await;
    let other = app.other_company("Initech").await;
    let rx = Receiver::start().await;
    let (sub, _) = subscribe(&app, &co.admin, &rx.url).await;

    let (status, body) = app.get("/webhook-subscriptions", Some(&co.agent)).await;
    assert_error(status, &body, 403, "forbidden");
    let (status, body) = app.get("/webhook-subscriptions", None).await;
    assert_eq!(status, 401, "{body}");
    for (path, token) in [(format!("/webhook-subscriptions/{sub}"), &other.admin)] {
        let (status, body) = app.get(&path, Some(token)).await;
        assert_error(status, &body, 404, "not_found");
        let (status, body) = app.delete(&path, Some(token)).await;
        assert_error(status, &body, 404, "not_found");
        let (status, body) = app.put(&path, Some(token), &json!({"active": false})).await;
        assert_error(status, &body, 404, "not_found");
    }
    let (status, list) = app.get("/webhook-subscriptions", Some(&other.admin)).await;
    assert_eq!((status, list), (200, json!([])));

    for bad in [
        json!({"url": "ftp://example.com/x", "events": ["message.created"]}),
        json!({"url": "not a url", "events": ["message.created"]}),
        json!({"url": "https://user:pw@example.com/", "events": ["message.created"]}),
        json!({"url": rx.url, "events": []}),
        json!({"url": rx.url, "events": ["message.deleted-ish"]}),
    ] {
        let (status, body) = app.post("/webhook-subscriptions", Some(&co.admin), &bad).await;
        assert_error(status, &body, 400, "validation_failed");
    }
    let (status, body) = app.post("/webhook-subscriptions", Some(&co.admin), &json!({"url": rx.url})).await;
    assert_eq!(status, 400, "{body}");

    let (status, updated) = app
        .put(
            &format!("/webhook-subscriptions/{sub}"),
            Some(&co.admin),
            &json!({"events": ["message.created"], "active": false}),
        )
        .await;
    assert_eq!(status, 200, "{updated}");
    assert_eq!((updated["events"].clone(), updated["active"].clone()), (json!(["message.created"]), json!(false)));
    assert!(updated.get("secret").is_none(), "the secret is shown only on create and rotate");
    let (status, body) = app.get(&format!("/webhook-subscriptions/{sub}/deliveries?status=odd"), Some(&co.admin)).await;
    assert_error(status, &body, 400, "validation_failed");
    let (status, body) = app.get(&format!("/webhook-subscriptions/{sub}/deliveries?limit=0"), Some(&co.admin)).await;
    assert_error(status, &body, 400, "validation_failed");
    let (status, _) = app.delete(&format!("/webhook-subscriptions/{sub}"), Some(&co.admin)).await;
    assert_eq!(status, 204);
    let (status, body) = app.get(&format!("/webhook-subscriptions/{sub}"), Some(&co.admin)).await;
    assert_error(status, &body, 404, "not_found");
});

#[actix_web::test]
async fn urls_reaching_private_addresses_are_refused_unless_allowed() {
    let app = TestApp::spawn_with(Backend::Sqlite, |cfg| cfg.webhook_allow_private = false).await.unwrap();
    let admin = app.admin_token().await;
    for url in [
        "http://127.0.0.1:9/hook",
        "http://localhost/hook",
        "http://10.0.0.5/",
        "http://169.254.169.254/latest",
        "http://[::1]/",
    ] {
        let (status, body) =
            app.post("/webhook-subscriptions", Some(&admin), &json!({"url": url, "events": ["message.created"]})).await;
        assert_error(status, &body, 400, "validation_failed");
        assert!(body["fields"]["url"].is_string(), "{body}");
        let (status, body) = app.post("/bots", Some(&admin), &json!({"name": "Helper", "webhookUrl": url})).await;
        assert_error(status, &body, 400, "validation_failed");
    }
}

both_with!(a_bot_gets_new_conversations_answers_and_hands_off, fast, |app: TestApp| async move {
    let co = app.default_company().await;
    let rx = Receiver::start().await;
    let (status, bot) = app.post("/bots", Some(&co.admin), &json!({"name": "Triage", "webhookUrl": rx.url})).await;
    assert_eq!(status, 201, "{bot}");
    let bot_id = bot["botId"].as_i64().unwrap();
    let token = bot["token"].as_str().unwrap().to_owned();
    let secret = bot["webhookSecret"].as_str().unwrap().to_owned();
    assert!(token.starts_with("cfbot_"), "{bot}");
    let (status, body) = app.post("/bots", Some(&co.agent), &json!({"name": "Nope"})).await;
    assert_error(status, &body, 403, "forbidden");
    let (status, body) = app.post("/bots", Some(&co.admin), &json!({"name": "  "})).await;
    assert_error(status, &body, 400, "validation_failed");

    let (status, ch) =
        app.put(&format!("/channel/{}/bot", co.channel_id), Some(&co.admin), &json!({"botId": bot_id})).await;
    assert_eq!((status, ch["botId"].as_i64()), (200, Some(bot_id)), "{ch}");
    let (status, body) =
        app.put(&format!("/channel/{}/bot", co.channel_id), Some(&co.admin), &json!({"botId": co.agent_id})).await;
    assert_error(status, &body, 400, "validation_failed");

    // A new conversation goes to the bot first, and the bot hears of it by webhook.
    let conv = app.customer_says(&co, "+14155550103", "Where is my parcel?").await;
    let got = rx
        .wait_until("the customer's message", |got| events_of(got, conv).iter().any(|e| e["type"] == "message.created"))
        .await;
    assert!(got.iter().all(|g| verifies(&secret, g)));
    let events = events_of(&got, conv);
    assert_eq!(events[0]["type"], "conversation.created");
    assert_eq!(events[0]["data"]["assigneeId"], bot_id);

    // It can also follow the conversation over /ws with its token.
    let mut ws = Ws::connect(&app, &token).await;
    let (_, last) = ws.subscribe(conv, Some(0)).await;
    assert!(last >= 1);

    // It answers as itself.
    let (status, reply) = app
        .post("/message", Some(&token), &json!({"conversationId": conv, "text": "Let me check that for you."}))
        .await;
    assert_eq!(status, 201, "{reply}");
    assert_eq!(reply["senderId"], bot_id);
    let (_, page) = app.get(&format!("/message/message-page-list/{conv}"), Some(&co.agent)).await;
    assert!(page.to_string().contains("Let me check that for you."));

    // It hands off to the humans.
    let (status, handed) =
        app.patch(&format!("/conversation/{conv}"), Some(&token), &json!({"assigneeId": null, "status": "open"})).await;
    assert_eq!(status, 200, "{handed}");
    assert!(handed["assigneeId"].is_null(), "{handed}");
    let (status, mine) =
        app.patch(&format!("/conversation/{conv}"), Some(&co.agent), &json!({"assigneeId": co.agent_id})).await;
    assert_eq!((status, mine["assigneeId"].as_i64()), (200, Some(co.agent_id)));

    // Admin routes stay closed to it; a rotated token replaces the old one; deletion ends it.
    let (status, body) = app.get("/bots", Some(&token)).await;
    assert_error(status, &body, 403, "forbidden");
    let (status, list) = app.get("/bots", Some(&co.admin)).await;
    assert_eq!(status, 200);
    assert_eq!(list[0]["webhookUrl"], rx.url.as_str(), "{list}");
    let (status, rotated) = app.post(&format!("/bots/{bot_id}/token"), Some(&co.admin), &json!({})).await;
    assert_eq!(status, 200, "{rotated}");
    let new_token = rotated["token"].as_str().unwrap().to_owned();
    let (status, _) = app.get("/template", Some(&token)).await;
    assert_eq!(status, 401, "the old token is revoked");
    let (status, _) = app.get("/template", Some(&new_token)).await;
    assert_eq!(status, 200);
    let (status, body) = app.get("/template", Some("cfbot_not-a-token")).await;
    assert_error(status, &body, 401, "invalid_token");
    // A conversation still with the bot when it is deleted goes back to the humans, unassigned.
    let kept = app.customer_says(&co, "+14155550104", "Hello? Anyone?").await;
    let assignee = |list: &Value| {
        list["data"].as_array().unwrap().iter().find(|c| c["conversationId"] == kept).unwrap()["assigneeId"].clone()
    };
    let (_, list) = app.get("/conversation/conversation-page-list?limit=100", Some(&co.agent)).await;
    assert_eq!(assignee(&list), bot_id, "{list}");
    let (status, _) = app.delete(&format!("/bots/{bot_id}"), Some(&co.admin)).await;
    assert_eq!(status, 204);
    let (_, list) = app.get("/conversation/conversation-page-list?limit=100", Some(&co.agent)).await;
    assert!(assignee(&list).is_null(), "{list}");
    let (status, _) = app.get("/template", Some(&new_token)).await;
    assert_eq!(status, 401);
    let (_, channels) = app.get("/channel", Some(&co.admin)).await;
    assert!(channels.as_array().unwrap().iter().all(|c| c["botId"].is_null()), "{channels}");
    let (status, list) = app.get("/bots", Some(&co.admin)).await;
    assert_eq!((status, list), (200, json!([])));
});

// ---- campaigns (issue 23 item 3) ----

async fn wait_campaign(app: &TestApp, admin: &str, id: i64, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (status, c) = app.get(&format!("/campaigns/{id}"), Some(admin)).await;
        assert_eq!(status, 200, "{c}");
        if pred(&c) {
            return c;
        }
        assert!(std::time::Instant::now() < deadline, "campaign: {what}; have {c}");
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Messages the runner wrote for a campaign (its `clientId`s), and how many distinct
/// recipients they went to.
async fn campaign_messages(app: &TestApp, id: i64) -> (i64, i64) {
    use confab::core::db::schema::messages;
    use diesel::prelude::*;
    let pattern = format!("campaign-{id}-%");
    app.state
        .db
        .run(move |c| {
            let ids: Vec<Option<String>> =
                messages::table.filter(messages::client_id.like(pattern)).select(messages::client_id).load(c)?;
            let distinct: std::collections::HashSet<_> = ids.iter().cloned().collect();
            Ok((ids.len() as i64, distinct.len() as i64))
        })
        .await
        .unwrap()
}

both_backends!(a_campaign_sends_each_recipient_once_skips_opt_outs_and_pauses, |app: TestApp| async move {
    let co = app.default_company().await;
    let (status, tpl) = app
        .post(
            "/template",
            Some(&co.admin),
            &json!({"name": "promo", "content": "Hello {{1}}, our sale starts today", "language": "en_US", "category": "marketing"}),
        )
        .await;
    assert_eq!(status, 201, "{tpl}");
    let template_id = tpl["templateId"].as_i64().unwrap();

    // A customer who wrote STOP is opted out (and START would undo it).
    let conv = app.customer_says(&co, "+14155550170", "STOP").await;
    let (_, list) = app.get("/conversation/conversation-page-list?limit=100", Some(&co.agent)).await;
    let user = &list["data"].as_array().unwrap().iter().find(|c| c["conversationId"] == conv).unwrap()["user"];
    assert_eq!(user["optedOut"], true, "{user}");

    let mut recipients: Vec<Value> = (0..40).map(|i| json!({"phone": format!("+1 415 555 {:04}", 2000 + i)})).collect();
    recipients.push(json!({"phone": "14155552000"})); // the first one again, written differently
    recipients.push(json!({"phone": "+14155550170"})); // opted out
    recipients.push(json!({"phone": "+14155552001", "params": ["Grace"]})); // a duplicate with params
    let (status, campaign) = app
        .post(
            "/campaigns",
            Some(&co.admin),
            &json!({"name": "December sale", "channelId": co.channel_id, "templateId": template_id, "params": ["friend"],
                    "recipients": recipients, "ratePerSecond": 1000}),
        )
        .await;
    assert_eq!(status, 201, "{campaign}");
    let id = campaign["campaignId"].as_i64().unwrap();
    assert_eq!(
        (campaign["status"].as_str(), campaign["counts"]["queued"].as_i64()),
        (Some("draft"), Some(41)),
        "{campaign}"
    );

    // A CSV upload: header, params per line, a bad number, a duplicate.
    let csv = "phone,name\n+14155553000,Ada\n+1 415 555 3001\nnot-a-phone,X\n+14155553000,Again\n";
    let res = app
        .client
        .post(app.url(&format!("/campaigns/{id}/recipients")))
        .bearer_auth(&co.admin)
        .header("Content-Type", "text/csv")
        .body(csv)
        .send()
        .await
        .unwrap();
    let (status, added) = into_json(res).await;
    assert_eq!(status, 200, "{added}");
    assert_eq!((added["added"].as_i64(), added["duplicates"].as_i64()), (Some(2), Some(1)), "{added}");
    assert_eq!(added["invalid"][0]["line"], 4, "{added}");

    let (status, started) = app.post(&format!("/campaigns/{id}/start"), Some(&co.admin), &json!({})).await;
    assert_eq!((status, started["status"].as_str()), (200, Some("running")), "{started}");
    let done = wait_campaign(&app, &co.admin, id, "completed and delivered", |c| {
        c["status"] == "completed" && c["counts"]["sent"] == 0 && c["counts"]["queued"] == 0
    })
    .await;
    let counts = &done["counts"];
    assert_eq!(counts["skipped"], 1, "{done}");
    assert_eq!(counts["failed"], 0, "{done}");
    assert_eq!(counts["delivered"].as_i64().unwrap() + counts["read"].as_i64().unwrap(), 42, "{done}");
    assert_eq!(campaign_messages(&app, id).await, (42, 42), "one message per recipient");

    let (status, skipped) = app.get(&format!("/campaigns/{id}/recipients?status=skipped"), Some(&co.admin)).await;
    assert_eq!(status, 200, "{skipped}");
    assert_eq!(skipped["items"][0]["phone"], "+14155550170", "{skipped}");
    let (_, ada) = app.get(&format!("/campaigns/{id}/recipients?status=delivered&limit=100"), Some(&co.admin)).await;
    assert!(ada["items"].as_array().unwrap().iter().all(|r| r["messageId"].is_string()), "{ada}");
    let (status, body) = app.post(&format!("/campaigns/{id}/cancel"), Some(&co.admin), &json!({})).await;
    assert_error(status, &body, 409, "invalid_transition");

    // Pause stops sending; resume finishes it, each recipient still once.
    let many: Vec<Value> = (0..30).map(|i| json!({"phone": format!("+1 415 555 {:04}", 4000 + i)})).collect();
    let (status, slow) = app
        .post(
            "/campaigns",
            Some(&co.admin),
            &json!({"name": "Slow", "channelId": co.channel_id, "templateId": template_id, "params": ["you"],
                    "recipients": many, "ratePerSecond": 2}),
        )
        .await;
    assert_eq!(status, 201, "{slow}");
    let slow_id = slow["campaignId"].as_i64().unwrap();
    let (status, _) = app.post(&format!("/campaigns/{slow_id}/start"), Some(&co.admin), &json!({})).await;
    assert_eq!(status, 200);
    let (status, paused) = app.post(&format!("/campaigns/{slow_id}/pause"), Some(&co.admin), &json!({})).await;
    assert_eq!((status, paused["status"].as_str()), (200, Some("paused")), "{paused}");
    assert!(paused["counts"]["queued"].as_i64().unwrap() > 0, "{paused}");
    let (status, resumed) = app.post(&format!("/campaigns/{slow_id}/resume"), Some(&co.admin), &json!({})).await;
    assert_eq!((status, resumed["status"].as_str()), (200, Some("running")), "{resumed}");
    let (status, body) = app.post(&format!("/campaigns/{slow_id}/resume"), Some(&co.admin), &json!({})).await;
    assert_error(status, &body, 409, "invalid_transition");
    let (status, cancelled) = app.post(&format!("/campaigns/{slow_id}/cancel"), Some(&co.admin), &json!({})).await;
    assert_eq!((status, cancelled["status"].as_str()), (200, Some("cancelled")), "{cancelled}");
    let (sent, distinct) = campaign_messages(&app, slow_id).await;
    assert_eq!(sent, distinct, "no recipient twice");
    assert!(sent < 30, "cancelled before the end: {sent}");
});

both_backends!(campaigns_are_admin_only_validated_and_per_company, |app: TestApp| async move {
    let co = app.default_company().await;
    let other = app.other_company("Hooli").await;
    let (_, tpl) = app
        .post(
            "/template",
            Some(&co.admin),
            &json!({"name": "hello", "content": "Hello {{1}}", "language": "en_US", "category": "marketing"}),
        )
        .await;
    let template_id = tpl["templateId"].as_i64().unwrap();
    let base = json!({"name": "X", "channelId": co.channel_id, "templateId": template_id, "params": ["a"],
                      "recipients": [{"phone": "+14155559000"}]});
    let (status, body) = app.post("/campaigns", Some(&co.agent), &base).await;
    assert_error(status, &body, 403, "forbidden");
    let (status, created) = app.post("/campaigns", Some(&co.admin), &base).await;
    assert_eq!(status, 201, "{created}");
    let id = created["campaignId"].as_i64().unwrap();
    let (status, body) = app.get(&format!("/campaigns/{id}"), Some(&other.admin)).await;
    assert_error(status, &body, 404, "not_found");
    let (status, body) = app.post(&format!("/campaigns/{id}/start"), Some(&other.admin), &json!({})).await;
    assert_error(status, &body, 404, "not_found");

    let mut bad = base.clone();
    bad["ratePerSecond"] = json!(0);
    let (status, body) = app.post("/campaigns", Some(&co.admin), &bad).await;
    assert_error(status, &body, 400, "validation_failed");
    let mut bad = base.clone();
    bad["params"] = json!([]);
    let (status, body) = app.post("/campaigns", Some(&co.admin), &bad).await;
    assert_error(status, &body, 422, "template_params");
    let mut bad = base.clone();
    bad["recipients"] = json!([{"phone": "nope"}]);
    let (status, body) = app.post("/campaigns", Some(&co.admin), &bad).await;
    assert_error(status, &body, 400, "validation_failed");
    let mut bad = base.clone();
    bad["channelId"] = json!(999999);
    let (status, body) = app.post("/campaigns", Some(&co.admin), &bad).await;
    assert_error(status, &body, 400, "validation_failed");
    let (status, body) = app.get(&format!("/campaigns/{id}/recipients?status=odd"), Some(&co.admin)).await;
    assert_error(status, &body, 400, "validation_failed");
    let res = app
        .client
        .post(app.url(&format!("/campaigns/{id}/recipients")))
        .bearer_auth(&co.admin)
        .header("Content-Type", "application/pdf")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 415);
});
