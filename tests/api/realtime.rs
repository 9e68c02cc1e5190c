//! Real-time API (CONTRACT §4, §8): a real WebSocket client against the real server.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream,
    tungstenite::{Message, client::IntoClientRequest},
};

use crate::{both_backends, helpers::*};

pub struct Ws {
    inner: WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>,
}

/// What the server ended the connection with.
#[derive(Debug, PartialEq)]
pub enum Ended {
    Close(u16),
    Dropped,
}

impl Ws {
    pub fn from_stream(inner: WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>) -> Ws {
        Ws { inner }
    }

    pub async fn connect(app: &TestApp, token: &str) -> Ws {
        let mut req = app.ws_url("/ws").into_client_request().unwrap();
        req.headers_mut().insert("Authorization", format!("Bearer {token}").parse().unwrap());
        let (inner, _) = tokio_tungstenite::connect_async(req).await.expect("upgrade");
        Ws { inner }
    }

    pub async fn send(&mut self, v: Value) {
        self.inner.send(Message::Text(v.to_string())).await.unwrap();
    }

    /// The next JSON frame, or None after `wait` without one.
    pub async fn next_within(&mut self, wait: Duration) -> Option<Value> {
        loop {
            match tokio::time::timeout(wait, self.inner.next()).await {
                Err(_) => return None,
                Ok(None) => return None,
                Ok(Some(Ok(Message::Text(t)))) => return Some(serde_json::from_str(&t).unwrap()),
                Ok(Some(Ok(Message::Close(_)))) => return None,
                Ok(Some(Ok(_))) => continue,
                Ok(Some(Err(_))) => return None,
            }
        }
    }

    pub async fn next(&mut self) -> Value {
        self.next_within(Duration::from_secs(10)).await.expect("a frame within 10 s")
    }

    /// Frames until one of `type` arrives (returned last).
    pub async fn until(&mut self, kind: &str) -> Vec<Value> {
        let mut seen = Vec::new();
        loop {
            let f = self.next().await;
            let done = f["type"] == kind;
            seen.push(f);
            if done {
                return seen;
            }
        }
    }

    /// Subscribes and returns (replayed events, lastSeq).
    pub async fn subscribe(&mut self, conversation_id: i64, after_seq: Option<i64>) -> (Vec<Value>, i64) {
        let mut frame = json!({"type": "subscribe", "conversationId": conversation_id});
        if let Some(a) = after_seq {
            frame["afterSeq"] = a.into();
        }
        self.send(frame).await;
        let mut frames = self.until("subscribed").await;
        let done = frames.pop().unwrap();
        assert_eq!(done["conversationId"], conversation_id);
        (frames, done["lastSeq"].as_i64().unwrap())
    }

    /// Persisted events of a conversation until `seq` reaches `upto`.
    pub async fn events_until(&mut self, conversation_id: i64, upto: i64) -> Vec<Value> {
        let mut out: Vec<Value> = Vec::new();
        while out.last().and_then(|e| e["seq"].as_i64()).unwrap_or(0) < upto {
            let f = self.next().await;
            if f["type"] == "event" && f["conversationId"] == conversation_id && f["seq"].is_i64() {
                out.push(f);
            }
        }
        out
    }

    /// Reads until the server closes; returns how.
    pub async fn ended(&mut self) -> Ended {
        loop {
            match tokio::time::timeout(Duration::from_secs(30), self.inner.next()).await {
                Err(_) => panic!("the server did not close the connection"),
                Ok(Some(Ok(Message::Close(Some(frame))))) => return Ended::Close(u16::from(frame.code)),
                Ok(Some(Ok(Message::Close(None)))) => return Ended::Close(1005),
                Ok(Some(Ok(_))) => continue,
                Ok(None) | Ok(Some(Err(_))) => return Ended::Dropped,
            }
        }
    }
}

async fn db_last_seq(app: &TestApp, conversation_id: i64) -> i64 {
    let st = app.state.clone();
    st.db
        .run(move |c| {
            use confab::core::db::schema::conversations;
            use diesel::prelude::*;
            Ok(conversations::table.find(conversation_id).select(conversations::last_seq).first::<i64>(c)?)
        })
        .await
        .unwrap()
}

fn seqs(events: &[Value]) -> Vec<i64> {
    events.iter().filter_map(|e| e["seq"].as_i64()).collect()
}

both_backends!(subscribe_replays_then_goes_live, |app: TestApp| async move {
    let co = app.default_company().await;
    let conv = app.customer_says(&co, "+14155550160", "hello").await;
    let mut ws = Ws::connect(&app, &co.agent).await;
    let (replayed, last) = ws.subscribe(conv, Some(0)).await;
    assert_eq!(seqs(&replayed), (1..=last).collect::<Vec<_>>());
    assert_eq!(replayed[0]["event"], "message.created");
    assert_eq!(replayed[0]["data"]["content"], "hello");

    let (status, sent) =
        app.post("/message", Some(&co.agent), &json!({"conversationId": conv, "text": "hi there"})).await;
    assert_eq!(status, 201);
    // Created, then the sandbox's SENT and DELIVERED as message.updated, in seq order.
    let live = ws.events_until(conv, last + 3).await;
    assert_eq!(seqs(&live), vec![last + 1, last + 2, last + 3]);
    assert_eq!(live[0]["event"], "message.created");
    assert_eq!(live[0]["data"]["messageId"], sent["messageId"]);
    assert_eq!(live[1]["event"], "message.updated");
    assert_eq!(live[1]["data"]["status"], "SENT");
    assert_eq!(live[2]["data"]["status"], "DELIVERED");

    // Live-only subscribe: nothing replayed, lastSeq is the current one.
    let mut other = Ws::connect(&app, &co.agent).await;
    let (replayed, now_last) = other.subscribe(conv, None).await;
    assert!(replayed.iter().all(|f| f["seq"].is_null()), "{replayed:?}");
    assert_eq!(now_last, last + 3);
    other.send(json!({"type": "ping"})).await;
    assert_eq!(other.until("pong").await.last().unwrap()["type"], "pong");
});

both_backends!(missed_events_are_replayed_exactly_after_reconnect, |app: TestApp| async move {
    let co = app.default_company().await;
    let conv = app.customer_says(&co, "+14155550161", "hello").await;
    let mut ws = Ws::connect(&app, &co.agent).await;
    let (_, last) = ws.subscribe(conv, Some(0)).await;
    drop(ws);
    for i in 0..200 {
        let (s, _) = app
            .post("/message", Some(&co.agent), &json!({"conversationId": conv, "text": format!("while away {i}")}))
            .await;
        assert_eq!(s, 201);
    }
    let mut ws = Ws::connect(&app, &co.agent).await;
    let (replayed, new_last) = ws.subscribe(conv, Some(last)).await;
    assert_eq!(seqs(&replayed), (last + 1..=new_last).collect::<Vec<_>>(), "exactly the missed events, in order");
    let created: Vec<&Value> = replayed.iter().filter(|e| e["event"] == "message.created").collect();
    assert_eq!(created.len(), 200);
    assert_eq!(created[0]["data"]["content"], "while away 0");
    assert_eq!(created[199]["data"]["content"], "while away 199");
});

both_backends!(commits_during_replay_are_neither_lost_nor_doubled, |app: TestApp| async move {
    let co = app.default_company().await;
    let conv = app.customer_says(&co, "+14155550162", "hello").await;
    for round in 0..8 {
        let start = db_last_seq(&app, conv).await;
        let mut ws = Ws::connect(&app, &co.agent).await;
        let writer = {
            let (addr, token) = (app.url("/message"), co.agent.clone());
            let client = app.client.clone();
            actix_web::rt::spawn(async move {
                for i in 0..15 {
                    let res = client
                        .post(&addr)
                        .bearer_auth(&token)
                        .json(&json!({"conversationId": conv, "text": format!("r{round}-{i}")}))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(res.status().as_u16(), 201);
                }
            })
        };
        let after = (start - 5).max(0);
        let (mut got, _) = ws.subscribe(conv, Some(after)).await;
        writer.await.unwrap();
        // Wait until the sandbox has delivered everything, then read to the end.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let mut end = db_last_seq(&app, conv).await;
        loop {
            let before = end;
            let upto = got.last().and_then(|e| e["seq"].as_i64()).unwrap_or(after);
            if upto < end {
                got.extend(ws.events_until(conv, end).await);
            }
            actix_web::rt::time::sleep(Duration::from_millis(200)).await;
            end = db_last_seq(&app, conv).await;
            if end == before && got.last().and_then(|e| e["seq"].as_i64()) == Some(end) {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "round {round}: stuck at {:?} of {end}", got.last());
        }
        assert_eq!(seqs(&got), (after + 1..=end).collect::<Vec<_>>(), "round {round}: gap-free and duplicate-free");
        assert!(
            ws.next_within(Duration::from_millis(300)).await.is_none_or(|f| f["seq"].is_null()),
            "nothing after the end"
        );
    }
});

both_backends!(ws_send_acks_and_client_id_replay, |app: TestApp| async move {
    let co = app.default_company().await;
    let conv = app.customer_says(&co, "+14155550163", "hello").await;
    let mut ws = Ws::connect(&app, &co.agent).await;
    let frame = json!({"type": "send", "conversationId": conv, "clientId": "c-1", "text": "hi", "attachmentIds": [], "templateId": null, "params": []});
    ws.send(frame.clone()).await;
    let ack = ws.until("ack").await.pop().unwrap();
    assert_eq!(ack["clientId"], "c-1");
    assert_eq!(ack["messageId"].as_str().unwrap().len(), 32);
    assert!(ack["seq"].as_i64().unwrap() >= 2);
    ws.send(frame).await;
    let again = ws.until("ack").await.pop().unwrap();
    assert_eq!(again, ack, "a resend after reconnect is the same message");
    let (_, page) = app.get(&format!("/message/message-page-list/{conv}"), Some(&co.agent)).await;
    assert_eq!(page["totalCount"], 2);

    // Business errors come back as error frames with the REST code.
    let (_, chat) =
        app.post("/message/new-chat", Some(&co.agent), &json!({"phone": "+14155550164", "templateId": 999})).await;
    assert_eq!(chat["statusCode"], 400);
    ws.send(json!({"type": "send", "conversationId": 999_999, "clientId": "c-2", "text": "x"})).await;
    let err = ws.until("error").await.pop().unwrap();
    assert_eq!(err["clientId"], "c-2");
    assert_eq!(err["code"], "not_found");

    // One clientId rule for both transports (the service checks it, not a route).
    let long = "x".repeat(129);
    ws.send(json!({"type": "send", "conversationId": conv, "clientId": long, "text": "x"})).await;
    let err = ws.until("error").await.pop().unwrap();
    assert_eq!(err["code"], "validation_failed");
    let (status, body) =
        app.post("/message", Some(&co.agent), &json!({"conversationId": conv, "clientId": long, "text": "x"})).await;
    assert_eq!((status, body["code"].as_str()), (400, Some("validation_failed")));
    let (_, page) = app.get(&format!("/message/message-page-list/{conv}"), Some(&co.agent)).await;
    assert_eq!(page["totalCount"], 2, "neither refused send was stored");
});

both_backends!(tickets_auth_and_tenancy, |app: TestApp| async move {
    let co = app.default_company().await;
    let other = app.other_company("Elsewhere").await;
    let foreign = app.customer_says(&other, "+14155550165", "private").await;

    let (status, ticket) = app.post("/ws/ticket", Some(&co.agent), &json!({})).await;
    assert_eq!(status, 200, "{ticket}");
    let url = app.ws_url(&format!("/ws?ticket={}", ticket["ticket"].as_str().unwrap()));
    let (mut ws, _) = tokio_tungstenite::connect_async(url.clone()).await.expect("ticket upgrade");
    let err = tokio_tungstenite::connect_async(url).await.expect_err("a ticket works once");
    assert!(err.to_string().contains("401"), "{err}");
    let err = tokio_tungstenite::connect_async(app.ws_url("/ws")).await.expect_err("no auth");
    assert!(err.to_string().contains("401"), "{err}");

    ws.send(Message::Text(json!({"type": "subscribe", "conversationId": foreign, "afterSeq": 0}).to_string()))
        .await
        .unwrap();
    let frame = loop {
        if let Some(Ok(Message::Text(t))) = ws.next().await {
            break serde_json::from_str::<Value>(&t).unwrap();
        }
    };
    assert_eq!(frame["type"], "error");
    assert_eq!(frame["code"], "not_found");
    assert_eq!(frame["conversationId"], foreign);
});

both_backends!(typing_is_relayed_and_not_persisted, |app: TestApp| async move {
    let co = app.default_company().await;
    let conv = app.customer_says(&co, "+14155550166", "hello").await;
    let before = db_last_seq(&app, conv).await;
    let mut a = Ws::connect(&app, &co.agent).await;
    let mut b = Ws::connect(&app, &co.admin).await;
    a.subscribe(conv, None).await;
    b.subscribe(conv, None).await;
    a.send(json!({"type": "typing", "conversationId": conv, "on": true})).await;
    let typing = b.next().await;
    assert_eq!(typing["type"], "event");
    assert_eq!(typing["event"], "typing");
    assert_eq!(typing["data"]["on"], true);
    assert!(typing["seq"].is_null());
    assert!(a.next_within(Duration::from_millis(500)).await.is_none(), "not echoed to the typist");
    assert_eq!(db_last_seq(&app, conv).await, before, "typing is not persisted");
});

both_backends!(oversized_frames_close_with_1009, |app: TestApp| async move {
    let co = app.default_company().await;
    let mut ws = Ws::connect(&app, &co.agent).await;
    let big = "x".repeat(70 * 1024);
    ws.send(json!({"type": "ping", "pad": big})).await;
    assert_eq!(ws.ended().await, Ended::Close(1009));
});

both_backends!(logout_and_deactivation_close_with_4001, |app: TestApp| async move {
    let co = app.default_company().await;
    let mut ws = Ws::connect(&app, &co.agent).await;
    ws.send(json!({"type": "ping"})).await;
    ws.until("pong").await;
    let (status, _) = app.post("/logout", Some(&co.agent), &json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(ws.ended().await, Ended::Close(4001));

    let admin_ws_token =
        app.login(&app.admin_email.clone(), ADMIN_PASSWORD).await["accessToken"].as_str().unwrap().to_owned();
    let mut admin_ws = Ws::connect(&app, &admin_ws_token).await;
    admin_ws.send(json!({"type": "subscribe_inbox"})).await;
    let agent2 = co_agent_login(&app, &co).await;
    let mut ws2 = Ws::connect(&app, &agent2).await;
    ws2.send(json!({"type": "ping"})).await;
    ws2.until("pong").await;
    let (status, _) =
        app.patch(&format!("/agent/{}", co.agent_id), Some(&co.admin), &json!({"status": "deactivated"})).await;
    assert_eq!(status, 200);
    assert_eq!(ws2.ended().await, Ended::Close(4001));
});

async fn co_agent_login(app: &TestApp, co: &Company) -> String {
    let (_, agents) = app.get("/agent", Some(&co.admin)).await;
    let email = agents.as_array().unwrap().iter().find(|a| a["userId"] == co.agent_id).unwrap()["email"]
        .as_str()
        .unwrap()
        .to_owned();
    app.login(&email, "agent-password").await["accessToken"].as_str().unwrap().to_owned()
}

both_backends!(inbox_gets_company_events_and_presence, |app: TestApp| async move {
    let co = app.default_company().await;
    let mut inbox = Ws::connect(&app, &co.admin).await;
    inbox.send(json!({"type": "subscribe_inbox"})).await;
    inbox.send(json!({"type": "ping"})).await;
    inbox.until("pong").await;
    let agent_ws = Ws::connect(&app, &co.agent).await;
    let presence = inbox.until("event").await.pop().unwrap();
    assert_eq!(presence["event"], "presence");
    assert_eq!(presence["data"]["userId"], co.agent_id);
    assert_eq!(presence["data"]["online"], true);
    drop(agent_ws);
    let conv = app.customer_says(&co, "+14155550167", "new customer").await;
    let mut kinds = Vec::new();
    while !kinds.contains(&"message.created".to_owned()) {
        let f = inbox.next().await;
        if f["type"] == "event" {
            kinds.push(f["event"].as_str().unwrap().to_owned());
            if f["event"] == "message.created" {
                assert_eq!(f["conversationId"], conv);
            }
        }
    }
    assert!(kinds.contains(&"conversation.created".to_owned()), "{kinds:?}");
});

#[actix_web::test]
async fn slow_consumer_is_closed_with_1013_and_others_get_everything() {
    // 64 frames of slack: small enough that the non-reading client (2 KB receive window) is
    // closed within the loop below, large enough that the reading client, whose reader task
    // shares 2 cores with the rest of the suite, is never mistaken for a slow one.
    let app = TestApp::spawn_with(Backend::Sqlite, |c| c.ws_queue_frames = 64).await.unwrap();
    let co = app.default_company().await;
    let conv = app.customer_says(&co, "+14155550168", "hello").await;
    // A client with a tiny receive window that never reads.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(2048).unwrap();
    let stream = socket.connect(format!("127.0.0.1:{}", app.port).parse().unwrap()).await.unwrap();
    let mut req = app.ws_url("/ws").into_client_request().unwrap();
    req.headers_mut().insert("Authorization", format!("Bearer {}", co.agent).parse().unwrap());
    let (slow, _) = tokio_tungstenite::client_async(req, MaybeTlsStream::Plain(stream)).await.unwrap();
    let mut slow = Ws { inner: slow };
    slow.send(json!({"type": "subscribe", "conversationId": conv})).await;
    let mut fast = Ws::connect(&app, &co.admin).await;
    let (_, start) = fast.subscribe(conv, None).await;
    // The reading client reads all along, as a real one does.
    let (frames_tx, mut frames) = tokio::sync::mpsc::unbounded_channel();
    actix_web::rt::spawn(async move {
        while let Some(f) = fast.next_within(Duration::from_secs(60)).await {
            if frames_tx.send(f).is_err() {
                break;
            }
        }
    });
    let text = "y".repeat(4000);
    let mut sent = 0;
    let mut closed = false;
    for _ in 0..400 {
        let (s, _) = app.post("/message", Some(&co.agent), &json!({"conversationId": conv, "text": text})).await;
        assert_eq!(s, 201);
        sent += 1;
        let metrics = app.client.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
        if metrics.contains("confab_ws_slow_consumer_closes_total 1") {
            closed = true;
            break;
        }
    }
    assert!(closed, "the non-reading client was never closed after {sent} messages");
    // Let the sandbox finish delivering, then the reader must have every event.
    let mut end = db_last_seq(&app, conv).await;
    let mut got = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while got.last().and_then(|e: &Value| e["seq"].as_i64()) != Some(end) {
        assert!(std::time::Instant::now() < deadline, "reader stuck at {:?} of {end}", got.last());
        match tokio::time::timeout(Duration::from_millis(500), frames.recv()).await {
            Ok(Some(f)) if f["type"] == "event" && f["seq"].is_i64() => got.push(f),
            Ok(Some(_)) => {}
            Ok(None) => panic!("the reading client was disconnected"),
            Err(_) => end = db_last_seq(&app, conv).await,
        }
    }
    assert_eq!(seqs(&got), (start + 1..=end).collect::<Vec<_>>(), "the reading client got everything");
    assert_eq!(slow.ended().await, Ended::Close(1013));
}

/// CONTRACT §8: two nodes on one PostgreSQL and one Redis.
#[actix_web::test]
async fn two_nodes_share_events_and_tickets_through_redis() {
    let (Some(redis), Some(_)) = (redis_url(), pg_base_url()) else {
        eprintln!("skipped: needs CONFAB_TEST_REDIS_URL and CONFAB_TEST_DATABASE_URL");
        return;
    };
    let a = TestApp::spawn_with(Backend::Postgres, |c| c.redis_url = Some(redis.clone())).await.unwrap();
    let b = TestApp::start(Backend::Postgres, a.config.clone(), a.dir.clone(), a.pg.clone()).await;
    assert!(b.bootstrap.is_none());
    assert_eq!(a.get("/readyz", None).await.0, 200, "database and Redis reachable");
    let co = a.default_company().await;
    let conv = a.customer_says(&co, "+14155550169", "hello").await;
    let mut ws = Ws::connect(&a, &co.agent).await;
    let (_, last) = ws.subscribe(conv, Some(0)).await;
    for i in 0..20 {
        let (s, _) =
            b.post("/message", Some(&co.agent), &json!({"conversationId": conv, "text": format!("via b {i}")})).await;
        assert_eq!(s, 201);
    }
    let end = last + 60;
    let got = ws.events_until(conv, end).await;
    assert_eq!(seqs(&got), (last + 1..=end).collect::<Vec<_>>());
    let created: Vec<_> =
        got.iter().filter(|e| e["event"] == "message.created").map(|e| e["data"]["content"].clone()).collect();
    assert_eq!(created, (0..20).map(|i| json!(format!("via b {i}"))).collect::<Vec<_>>());

    let (_, ticket) = a.post("/ws/ticket", Some(&co.agent), &json!({})).await;
    let url = b.ws_url(&format!("/ws?ticket={}", ticket["ticket"].as_str().unwrap()));
    tokio_tungstenite::connect_async(url).await.expect("a ticket minted on A works on B");
}

/// CONTRACT §1: SIGTERM drains — WebSockets close with 1001 and the process exits 0.
#[actix_web::test]
async fn sigterm_closes_sockets_with_1001_and_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_confab"))
        .env("CONFAB_DATA_DIR", dir.path())
        .env("CONFAB_BIND", "127.0.0.1:0")
        .env("CONFAB_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .env("CONFAB_LOG", "warn")
        .env_remove("CONFAB_DATABASE_URL")
        .env_remove("CONFAB_REDIS_URL")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The port the kernel gave it, from the line it prints once bound; the rest of its output is
    // drained, so the pipe stays open until it exits.
    let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(stdout).map_while(Result::ok) {
            if let Some(port) = crate::reliability_crash::listening_port(&line) {
                let _ = tx.send(port);
            }
        }
    });
    let port = rx.recv_timeout(Duration::from_secs(30)).expect("confab printed the address it listens on");
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while client.get(format!("{base}/healthz")).send().await.is_err() {
        assert!(std::time::Instant::now() < deadline, "server did not start");
        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    }
    let login: Value = client
        .post(format!("{base}/auth/login"))
        .json(&json!({"email": "admin@localhost", "password": ADMIN_PASSWORD}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut req = format!("ws://127.0.0.1:{port}/ws").into_client_request().unwrap();
    req.headers_mut()
        .insert("Authorization", format!("Bearer {}", login["accessToken"].as_str().unwrap()).parse().unwrap());
    let (inner, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    let mut ws = Ws { inner };
    ws.send(json!({"type": "ping"})).await;
    ws.until("pong").await;
    let killed = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(killed.success());
    assert_eq!(ws.ended().await, Ended::Close(1001));
    let status = web_wait(&mut child).await;
    assert!(status.success(), "exit status {status}");
}

async fn web_wait(child: &mut std::process::Child) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + Duration::from_secs(40);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(std::time::Instant::now() < deadline, "did not exit after SIGTERM");
        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    }
}
