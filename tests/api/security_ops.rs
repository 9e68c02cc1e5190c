//! Attack tests (issue 17, README "Security"): each performs an attack against the real server
//! and expects the refusal. Also issue 25: hostile search terms and contact items.

use std::time::{Duration, Instant};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest};

use crate::{both_backends, helpers::*};

const HUGE_PAGE: &str = "4611686018427387904"; // 2^62: (page - 1) × 20 overflows i64

async fn default_application(app: &TestApp, admin: &str) -> i64 {
    let (status, list) = app.get("/application", Some(admin)).await;
    assert_eq!(status, 200, "{list}");
    list[0]["applicationId"].as_i64().unwrap()
}

fn platform(company: i64, application: i64, rest: &str) -> String {
    format!("/service/platform/user/v1.0/company/{company}/application/{application}{rest}")
}

// Every paged route with a bad `page`/`limit` answers 400 `validation_failed` naming the
// field; before the fix page 2^62 wrapped around (or panicked) instead.
both_backends!(paging_overflow_is_refused_on_every_paged_route, |app: TestApp| async move {
    let co = app.default_company().await;
    let conv = app.customer_says(&co, "+14155550171", "hello paging").await;
    let application = default_application(&app, &co.admin).await;
    let customers = platform(co.company_id, application, "/customers/list");
    let groups = platform(co.company_id, application, "/user_group");
    // (path without query, token, page parameter, size parameter)
    let routes: Vec<(String, &str, &str, &str)> = vec![
        ("/conversation/conversation-page-list".into(), &co.agent, "page", "limit"),
        (format!("/message/message-page-list/{conv}"), &co.agent, "page", "limit"),
        ("/message/message-search/hello".into(), &co.agent, "page", "limit"),
        ("/contact".into(), &co.agent, "page", "limit"),
        ("/contact/search/555".into(), &co.agent, "page", "limit"),
        ("/auth/audit".into(), &co.admin, "page", "limit"),
        (customers, &co.admin, "page_no", "page_size"),
        (groups, &co.admin, "page_no", "page_size"),
    ];
    for (path, token, page, size) in &routes {
        for (query, field) in [
            (format!("{page}={HUGE_PAGE}"), *page),
            (format!("{page}={HUGE_PAGE}&{size}=100"), *page),
            (format!("{page}=9223372036854775807"), *page),
            (format!("{page}=1000001"), *page),
            (format!("{page}=0"), *page),
            (format!("{page}=-9223372036854775808"), *page),
            (format!("{size}={HUGE_PAGE}"), *size),
            (format!("{size}=101"), *size),
            (format!("{size}=0"), *size),
        ] {
            let (status, body) = app.get(&format!("{path}?{query}"), Some(token)).await;
            assert_error(status, &body, 400, "validation_failed");
            assert!(body["fields"][field].is_string(), "{path}?{query}: {body}");
        }
        // Valid values keep their seed behaviour: the deepest page is an empty page.
        let (status, body) = app.get(&format!("{path}?{page}=1000000&{size}=100"), Some(token)).await;
        assert_eq!(status, 200, "{path}: {body}");
        let items = body.get("data").or_else(|| body.get("items")).unwrap_or(&Value::Null);
        assert_eq!(items.as_array().map(Vec::len), Some(0), "{path}: {body}");
    }
    let (status, first) = app.get("/contact?page=1&limit=1", Some(&co.agent)).await;
    assert_eq!(status, 200);
    assert_eq!((first["page"].as_i64(), first["limit"].as_i64()), (Some(1), Some(1)), "{first}");
    assert_eq!(first["data"].as_array().unwrap().len(), 1);
});

// ---- /metrics ----

fn metrics_value(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// By default `/metrics` answers loopback clients only, and not through a proxy: a request a
/// reverse proxy forwarded (it adds `X-Forwarded-For`, `Forwarded` or `X-Real-IP`) is refused.
#[actix_web::test]
async fn metrics_refuse_requests_forwarded_by_a_proxy() {
    let app = TestApp::spawn(Backend::Sqlite).await.unwrap();
    for (header, value) in
        [("X-Forwarded-For", "203.0.113.7"), ("Forwarded", "for=203.0.113.7"), ("X-Real-IP", "203.0.113.7")]
    {
        let res = app.client.get(app.url("/metrics")).header(header, value).send().await.unwrap();
        let (status, body) = into_json(res).await;
        assert_error(status, &body, 403, "forbidden");
    }
    let res = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(res.status(), 200, "a local scrape still works");
    assert!(res.text().await.unwrap().contains("confab_http_requests_total"));
}

/// `CONFAB_METRICS_TOKEN`: without the bearer token (or with a wrong one) `/metrics` is 401,
/// from anywhere; with it, 200 even through a proxy.
#[actix_web::test]
async fn metrics_token_is_required_when_set() {
    let app =
        TestApp::spawn_with(Backend::Sqlite, |c| c.metrics_token = Some("scrape-me-0123456789".to_owned().into()))
            .await
            .unwrap();
    for auth in [None, Some("Bearer wrong"), Some("Bearer scrape-me-012345678"), Some("Basic scrape-me-0123456789")] {
        let mut req = app.client.get(app.url("/metrics"));
        if let Some(a) = auth {
            req = req.header("Authorization", a);
        }
        let (status, body) = into_json(req.send().await.unwrap()).await;
        assert_error(status, &body, 401, "invalid_token");
    }
    let res = app
        .client
        .get(app.url("/metrics"))
        .header("Authorization", "Bearer scrape-me-0123456789")
        .header("X-Forwarded-For", "203.0.113.7")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.text().await.unwrap().contains("confab_http_requests_total"));
}

/// `CONFAB_METRICS_BIND`: `/metrics` moves to its own listener, which serves nothing else;
/// the public listener answers 404 for it.
#[actix_web::test]
async fn metrics_bind_serves_metrics_only_on_its_own_listener() {
    let app = TestApp::spawn_with(Backend::Sqlite, |c| c.metrics_bind = Some("127.0.0.1:0".into())).await.unwrap();
    let (status, body) = app.get("/metrics", None).await;
    assert_error(status, &body, 404, "not_found");
    let (status, _) = app.get("/healthz", None).await;
    assert_eq!(status, 200);
    let port = app.metrics_port.expect("a metrics listener");
    let res = app.client.get(format!("http://127.0.0.1:{port}/metrics")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let text = res.text().await.unwrap();
    assert!(text.contains(r#"confab_http_requests_total{method="GET",route="/healthz",status="200"} 1"#), "{text}");
    for path in ["/healthz", "/auth/me", "/contact"] {
        let res = app.client.get(format!("http://127.0.0.1:{port}{path}")).send().await.unwrap();
        let (status, body) = into_json(res).await;
        assert_error(status, &body, 404, "not_found");
    }
}

// ---- WebSocket connections per user ----

async fn upgrade(app: &TestApp, token: Option<&str>, query: &str) -> Result<crate::realtime::Ws, (u16, Value)> {
    let mut req = app.ws_url(&format!("/ws{query}")).into_client_request().unwrap();
    if let Some(t) = token {
        req.headers_mut().insert("Authorization", format!("Bearer {t}").parse().unwrap());
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok((inner, _)) => Ok(crate::realtime::Ws::from_stream(inner)),
        Err(tungstenite::Error::Http(res)) => {
            let status = res.status().as_u16();
            let body = res.body().as_deref().map(|b| serde_json::from_slice(b).unwrap()).unwrap_or(Value::Null);
            Err((status, body))
        }
        Err(e) => panic!("upgrade failed: {e}"),
    }
}

/// One token opened 500 sockets: now the 21st open connection of a user (default
/// `CONFAB_WS_MAX_PER_USER` = 20) is refused with 429 before the upgrade, tickets included;
/// other users are unaffected and a closed connection frees its slot.
#[actix_web::test]
async fn websocket_connections_per_user_are_capped() {
    let app = TestApp::spawn(Backend::Sqlite).await.unwrap();
    let co = app.default_company().await;
    let mut open = Vec::new();
    for i in 0..20 {
        open.push(upgrade(&app, Some(&co.agent), "").await.unwrap_or_else(|e| panic!("connection {i}: {e:?}")));
    }
    let Err((status, body)) = upgrade(&app, Some(&co.agent), "").await else { panic!("the 21st connection opened") };
    assert_error(status, &body, 429, "rate_limited");
    let (status, ticket) = app.post("/ws/ticket", Some(&co.agent), &json!({})).await;
    assert_eq!(status, 200, "{ticket}");
    let query = format!("?ticket={}", ticket["ticket"].as_str().unwrap());
    let Err((status, body)) = upgrade(&app, None, &query).await else { panic!("a ticket passed the cap") };
    assert_error(status, &body, 429, "rate_limited");

    let mut admin = upgrade(&app, Some(&co.admin), "").await.expect("another user connects");
    admin.send(json!({"type": "ping"})).await;
    assert_eq!(admin.next().await["type"], "pong");

    drop(open.pop());
    let deadline = Instant::now() + Duration::from_secs(15);
    let again = loop {
        match upgrade(&app, Some(&co.agent), "").await {
            Ok(ws) => break ws,
            Err((429, _)) if Instant::now() < deadline => actix_web::rt::time::sleep(Duration::from_millis(50)).await,
            Err(e) => panic!("the closed connection's slot was never freed: {e:?}"),
        }
    };
    drop(again);
}

// ---- secrets in logs ----

/// `?ticket=` and `?sig=` appeared in warning logs: every request whose query carries a secret
/// (WebSocket ticket, media link signature, reset token, OAuth code and state, the WhatsApp
/// verify token) is logged with the value redacted.
#[actix_web::test]
async fn secret_query_parameters_never_reach_the_logs() {
    let logs = captured_logs();
    let app = TestApp::spawn(Backend::Sqlite).await.unwrap();
    let probe = format!("probe-{}", confab::core::crypto::random_hex_id());
    let secret = |name: &str| format!("{name}SECRET{}", &confab::core::crypto::random_hex_id()[..12]);
    let secrets: Vec<(String, String)> = ["ticket", "sig", "token", "code", "state", "hub.verify_token"]
        .iter()
        .map(|n| (n.to_string(), secret(n)))
        .collect();
    let get = |name: &str| secrets.iter().find(|(n, _)| n == name).unwrap().1.clone();
    let paths = [
        format!("/ws?ticket={}&p={probe}", get("ticket")),
        format!("/media/1?exp=4102444800&sig={}&p={probe}", get("sig")),
        format!("/auth/verify-reset-password-link?token={}&p={probe}", get("token")),
        format!("/auth/google-auth-redirect?code={}&state={}&p={probe}", get("code"), get("state")),
        format!(
            "/webhooks/whatsapp?hub.mode=subscribe&hub.verify_token={}&hub.challenge=1&p={probe}",
            get("hub.verify_token")
        ),
    ];
    for path in &paths {
        let res = app.client.get(app.url(path)).send().await.unwrap();
        assert!(res.status().is_client_error(), "{path}: {}", res.status());
    }
    // Each refusal is logged (a warning inside the request span) before the answer is sent.
    let lines = logs.0.lock().unwrap().iter().filter(|l| l.contains(&probe)).cloned().collect::<Vec<_>>();
    assert!(lines.len() >= paths.len(), "every refused request was logged: {lines:#?}");
    let text = lines.join("");
    for (name, value) in &secrets {
        assert!(!text.contains(value.as_str()), "{name} leaked into the log:\n{text}");
        assert!(text.contains(&format!("{name}=[redacted]")), "{name} is shown redacted:\n{text}");
    }
    assert!(text.contains("exp=4102444800") && text.contains("hub.challenge=1"), "harmless parameters stay:\n{text}");
}

// ---- unknown key ids ----

fn reloads(metrics: &str) -> f64 {
    metrics_value(metrics, "confab_signing_key_reloads_total").expect("the reload counter is exported")
}

// A token naming a key id this node does not know made it re-read the key table on every
// request: now made-up key ids cost at most one read per second (the same id none at all
// while remembered), and a key created by another node is still accepted within a bounded time.
both_backends!(unknown_key_ids_do_not_reload_keys_per_request, |app: TestApp| async move {
    let login = app.login(&app.admin_email.clone(), ADMIN_PASSWORD).await;
    let (_, metrics) = app.get("/metrics", None).await;
    let before = reloads(metrics.as_str().unwrap());

    let forged = |kid: &str| {
        let header = URL_SAFE_NO_PAD.encode(json!({"alg": "EdDSA", "typ": "JWT", "kid": kid}).to_string());
        let claims = URL_SAFE_NO_PAD.encode(json!({"sub": "1", "sid": "x", "cid": 1, "role": "admin"}).to_string());
        format!("{header}.{claims}.{}", URL_SAFE_NO_PAD.encode([7u8; 64]))
    };
    let same = forged(&confab::core::crypto::random_hex_id()[..16]);
    let started = Instant::now();
    for i in 0..200 {
        let token = if i % 2 == 0 { same.clone() } else { forged(&confab::core::crypto::random_hex_id()[..16]) };
        let (status, body) = app.get("/auth/me", Some(&token)).await;
        assert_error(status, &body, 401, "invalid_token");
    }
    let elapsed = started.elapsed();
    let (_, metrics) = app.get("/metrics", None).await;
    let done = reloads(metrics.as_str().unwrap()) - before;
    assert!(done >= 1.0, "an unknown key id is looked up once");
    // At most one re-read per started second (before the fix: one per request, 200).
    let bound = elapsed.as_secs_f64().floor() + 1.0;
    assert!(done <= bound, "{done} key reloads for 200 forged tokens in {elapsed:?}");

    // Another node creates a key and signs with it: this node accepts it within bounded time.
    let claims: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD.decode(login["accessToken"].as_str().unwrap().split('.').nth(1).unwrap()).unwrap(),
    )
    .unwrap();
    let data_key = app.state.data_key.clone();
    app.state
        .db
        .write(move |c| {
            confab::core::auth::jwt::insert_new_key(c, &data_key).map_err(confab::core::error::ApiError::Internal)
        })
        .await
        .unwrap();
    let (db, data_key) = (app.state.db.clone(), app.state.data_key.clone());
    let other_node = actix_web::web::block(move || confab::core::auth::jwt::Keys::load_or_create(&db, &data_key))
        .await
        .unwrap()
        .unwrap();
    let (token, _) = other_node
        .sign(
            claims["sub"].as_str().unwrap().parse().unwrap(),
            claims["cid"].as_i64().unwrap(),
            claims["role"].as_str().unwrap(),
            claims["sid"].as_str().unwrap(),
        )
        .unwrap();
    assert!(app.state.keys.verify(&token).unwrap().is_none(), "this node does not know the new key yet");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, body) = app.get("/auth/me", Some(&token)).await;
        if status == 200 {
            break;
        }
        assert_error(status, &body, 401, "invalid_token");
        assert!(Instant::now() < deadline, "the new key was never picked up");
        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    }
});

// ---- issue 25: hostile search input ----

/// Path segments (already percent-encoded) and query values that used to reach FTS5,
/// `plainto_tsquery` or `LIKE` unchecked.
fn hostile_terms() -> Vec<String> {
    let mut terms: Vec<String> = [
        "%00",
        "%00%ff",
        "a%00b",
        "%ff",
        "%C0%80",
        "%ED%A0%80",
        "%22",
        "%22%22",
        "%22unbalanced",
        "*",
        "hello*",
        "NEAR(",
        "NEAR(hello%20world)",
        "NEAR(hello%20world,%20-1)",
        "%5E",
        "%5Ehello",
        "-hello",
        "hello%20OR%20",
        "AND",
        "OR%20NOT",
        "(",
        ")",
        "(hello",
        ":",
        "content:hello",
        "m.content:x",
        "%7B%7D",
        "%5C",
        "hello%5C",
        "%25",
        "_",
        "%25_%5C",
        "'",
        "%27;DROP%20TABLE%20messages;--",
        "%E2%80%8B",
        "%F0%9F%98%80",
        "%09",
        "%0A",
        "%0D%0A",
        "%20%20",
        "+",
        "!",
        "%26",
        "%7C",
        "hello%20%7C%20world",
        "%3C-%3E",
        "!hello",
        "%23",
        "%3F",
        "%EF%BF%BD",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    terms.push("x".repeat(10_000));
    terms.push("%22".repeat(300));
    terms.push(format!("{}hello", "(".repeat(200)));
    terms
}

fn assert_200_or_validation(route: &str, status: u16, body: &Value) {
    if status != 200 {
        assert_error(status, body, 400, "validation_failed");
        assert!(body["fields"].is_object(), "{route}: {body}");
    }
}

both_backends!(hostile_search_terms_answer_200_or_400_never_500, |app: TestApp| async move {
    let co = app.default_company().await;
    app.customer_says(&co, "+14155550172", "hello world, 50% off_now \\o/").await;
    let application = default_application(&app, &co.admin).await;
    for term in hostile_terms() {
        let shown = &term[..term.len().min(40)];
        let route = format!("/message/message-search/{term}");
        let (status, body) = app.get(&route, Some(&co.agent)).await;
        assert_200_or_validation(&format!("message-search {shown}"), status, &body);
        let (status, body) = app.get(&format!("/contact/search/{term}"), Some(&co.agent)).await;
        assert_200_or_validation(&format!("contact/search {shown}"), status, &body);
        let (status, body) = app.get(&format!("/conversation/conversation-page-list?q={term}"), Some(&co.agent)).await;
        assert_200_or_validation(&format!("conversation q {shown}"), status, &body);
        let path = platform(co.company_id, application, &format!("/customers/list?q={term}"));
        let (status, body) = app.get(&path, Some(&co.admin)).await;
        assert_200_or_validation(&format!("customers q {shown}"), status, &body);
        let path = platform(co.company_id, application, &format!("/customers/search?q={term}"));
        let (status, body) = app.get(&path, Some(&co.admin)).await;
        assert_200_or_validation(&format!("customers search {shown}"), status, &body);
        let path = platform(co.company_id, application, &format!("/user_group?name={term}"));
        let (status, body) = app.get(&path, Some(&co.admin)).await;
        assert_200_or_validation(&format!("groups name {shown}"), status, &body);
    }
    // NUL and over-long terms are validation errors naming the field.
    for (route, field) in [
        ("/message/message-search/a%00b".to_owned(), "term"),
        (format!("/message/message-search/{}", "x".repeat(10_000)), "term"),
        ("/conversation/conversation-page-list?q=a%00b".to_owned(), "q"),
        ("/contact/search/%00".to_owned(), "phone"),
    ] {
        let (status, body) = app.get(&route, Some(&co.agent)).await;
        assert_error(status, &body, 400, "validation_failed");
        assert!(body["fields"][field].is_string(), "{route}: {body}");
    }
    // Operators and wildcards are plain text: they match themselves, not everything.
    let (status, found) = app.get("/message/message-search/hello%20OR%20nothing", Some(&co.agent)).await;
    assert_eq!((status, found["totalCount"].as_i64()), (200, Some(0)), "OR is a word: {found}");
    let (_, found) = app.get("/message/message-search/%22hello%20world", Some(&co.agent)).await;
    assert_eq!(found["totalCount"], 1, "an unbalanced quote is just a quote: {found}");
    for (q, hits) in [("Ada", 1), ("%25", 0), ("_", 0), ("%5C", 0), ("ad_", 0), ("a%25a", 0)] {
        let (status, list) = app.get(&format!("/conversation/conversation-page-list?q={q}"), Some(&co.agent)).await;
        assert_eq!(status, 200, "{list}");
        assert_eq!(list["totalCount"], hits, "q={q} matches literally: {list}");
    }
});

// CONTRACT §3: `GET /contact` items are `{userId, firstName, lastName, phone, email}`: a
// contact without an e-mail has `"email": null` (not a missing key), and so does the `user`
// of a conversation.
both_backends!(contact_items_always_carry_email, |app: TestApp| async move {
    let co = app.default_company().await;
    app.customer_says(&co, "+14155550173", "no e-mail yet").await;
    let (status, contacts) = app.get("/contact", Some(&co.agent)).await;
    assert_eq!(status, 200, "{contacts}");
    let item = contacts["data"][0].as_object().unwrap().clone();
    for key in ["userId", "firstName", "lastName", "phone", "email"] {
        assert!(item.contains_key(key), "{key} in {item:?}");
    }
    assert_eq!(item["email"], Value::Null);
    let user_id = item["userId"].as_i64().unwrap();
    let (_, found) = app.get("/contact/search/5550173", Some(&co.agent)).await;
    assert_eq!(found["data"][0]["email"], Value::Null, "{found}");
    assert!(found["data"][0].as_object().unwrap().contains_key("email"));
    let (_, list) = app.get("/conversation/conversation-page-list", Some(&co.agent)).await;
    let user = list["data"][0]["user"].as_object().unwrap().clone();
    assert!(user.contains_key("email") && user["email"].is_null(), "{user:?}");

    let (status, updated) =
        app.put("/contact", Some(&co.agent), &json!({"userId": user_id, "email": "grace@example.com"})).await;
    assert_eq!(status, 200, "{updated}");
    let (_, contacts) = app.get("/contact", Some(&co.agent)).await;
    assert_eq!(contacts["data"][0]["email"], "grace@example.com");
});
