//! Issue 24 item 4 (README "Reliability"): the tenant isolation matrix, generated from the
//! server's own `/openapi.json` so that a new route is covered the day it is added.
//!
//! Two companies, A and B, each get one of every kind of resource, every text of A carrying a
//! marker string of A's. Then:
//! - every operation whose path takes an id is called with A's ids and each of B's admin, agent
//!   and customer tokens: the answer must be a refusal (401/403/404) that does not contain A's
//!   marker; multi-id paths are also called with B's own outer ids and A's innermost id;
//! - every `GET` operation is called by each of B's tokens with B's own ids (and search terms
//!   that match A's rows): no answer may contain A's marker;
//! - A's own `GET`s of its resources answer 200 before the attacks (so the ids are real) and
//!   the same bodies after them (so no refused call changed anything).
//!
//! A path parameter is resolved by its route's first segment and its name (`channel/id`,
//! `service/group_id`, …): a new route under a known resource is covered with no change here;
//! a parameter this file cannot resolve fails the test, naming the route, until it is added to
//! [`Tenant::ids`] or to [`NOT_EXERCISED`] with a reason.

use std::collections::{BTreeMap, HashMap};

use reqwest::Method;
use serde_json::{Value, json};

use crate::{
    arc::new_client,
    both_backends,
    fynd_platform::{app_bearer, create_app, platform},
    helpers::*,
    media::{png, upload},
};

/// Operations the matrix does not call, each with its reason (`METHOD path`).
const NOT_EXERCISED: &[(&str, &str)] = &[
    ("GET /auth/{provider}", "names an identity provider, not a tenant's row; no bearer is read"),
    ("POST /auth/{provider}", "names an identity provider, not a tenant's row; no bearer is read"),
    ("GET /auth/{provider}-auth-redirect", "an OAuth redirect target: provider name plus state, no bearer"),
    ("POST /auth/{provider}-auth-redirect", "an OAuth redirect target: provider name plus state, no bearer"),
];

/// Path parameters that are search terms, not ids: B searches for A's rows and must find none.
const SEARCH_PARAMS: &[&str] = &["contact/phone", "message/term"];

/// One company with one of every resource, and its three kinds of token.
pub struct Tenant {
    pub co: Company,
    customer: String,
    marker: String,
    /// An auth client of the company with the client-credentials grant: (id, secret).
    client: (String, String),
    /// `first-segment/param` → value, for every id a route can name.
    pub ids: HashMap<&'static str, String>,
    /// The storefront's `Authorization` bearer of the company's application.
    pub app_bearer: String,
}

impl Tenant {
    pub async fn populate(app: &TestApp, phone: &str) -> Self {
        // Lower-case letters only: it survives e-mail normalisation and is never a number.
        let marker: String = confab::core::crypto::random_hex_id()
            .chars()
            .take(12)
            .map(|c| (b'g' + c.to_digit(16).unwrap() as u8) as char)
            .collect();
        let marker = format!("zq{marker}");
        let co = app.other_company(&marker).await;
        // A receiver that takes every delivery, so no retry changes A's delivery log later.
        let hook = &ok_receiver();
        let (status, sub) = app
            .post("/webhook-subscriptions", Some(&co.admin), &json!({"url": hook, "events": ["message.created"]}))
            .await;
        assert_eq!(status, 201, "{sub}");
        let sub = sub["subscriptionId"].as_i64().unwrap();

        let conv = app.customer_says(&co, phone, &format!("hello {marker}")).await;
        let (status, sent) = app
            .post("/message", Some(&co.agent), &json!({"conversationId": conv, "text": format!("re {marker}")}))
            .await;
        assert_eq!(status, 201, "{sent}");
        let (_, page) = app.get(&format!("/message/message-page-list/{conv}?limit=100"), Some(&co.agent)).await;
        let (_, list) = app.get("/conversation/conversation-page-list?limit=100", Some(&co.agent)).await;
        let customer_id =
            list["data"].as_array().unwrap().iter().find(|c| c["conversationId"] == conv).unwrap()["user"]["userId"]
                .as_i64()
                .unwrap();
        let customer = app.customer_token(co.company_id, customer_id).await;

        let post = |path: &'static str, body: Value| {
            let admin = co.admin.clone();
            async move {
                let (status, created) = app.post(path, Some(&admin), &body).await;
                assert_eq!(status, 201, "{path}: {created}");
                created
            }
        };
        let canned = post("/canned", json!({"shortCode": marker, "content": format!("canned {marker}")})).await;
        let template = post(
            "/template",
            json!({"name": marker, "content": format!("Hello {{{{1}}}} {marker}"), "language": "en_US",
                   "category": "utility"}),
        )
        .await;
        let bot = post("/bots", json!({"name": marker, "webhookUrl": hook})).await;
        let team = post("/team", json!({"name": marker, "agentIds": [co.agent_id]})).await;
        let campaign = post(
            "/campaigns",
            json!({"name": marker, "channelId": co.channel_id, "templateId": template["templateId"],
                   "params": [marker], "recipients": [{"phone": phone}]}),
        )
        .await;
        let (client_id, secret) = new_client(app, &co.admin, json!({"grants": ["client_credentials"]})).await;
        let (_, clients) = app.get("/auth-clients", Some(&co.admin)).await;
        let client =
            clients.as_array().unwrap().iter().find(|c| c["clientId"] == client_id.as_str()).unwrap()["id"].clone();
        let (application, app_token) = create_app(app, &co.admin, &marker).await;
        let group_path = platform(co.company_id, application, "/user_group");
        let (status, group) = app
            .post(&group_path, Some(&co.admin), &json!({"name": marker, "description": format!("group {marker}")}))
            .await;
        assert_eq!(status, 200, "{group}");
        let (status, fynd_user) = app
            .post(
                &platform(co.company_id, application, "/customers"),
                Some(&co.admin),
                &json!({"phone_number": phone, "email": format!("{marker}@customer.test"), "first_name": marker,
                        "last_name": marker}),
            )
            .await;
        assert_eq!(status, 200, "{fynd_user}");
        let (status, media) = upload(app, &co.agent, &format!("{marker}.png"), &png(4, 4, 0)).await;
        assert_eq!(status, 201, "{media}");
        let delivery = wait_for_delivery(app, &co.admin, sub).await;

        let s = |v: &Value| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let ids = HashMap::from([
            ("channel/id", co.channel_id.to_string()),
            ("agent/id", co.agent_id.to_string()),
            ("canned/id", s(&canned["cannedId"])),
            ("template/id", s(&template["templateId"])),
            ("bots/id", s(&bot["botId"])),
            ("team/id", s(&team["teamId"])),
            ("campaigns/id", s(&campaign["campaignId"])),
            ("webhook-subscriptions/id", sub.to_string()),
            ("webhook-subscriptions/delivery_id", delivery),
            ("auth-clients/id", s(&client)),
            ("application/id", application.to_string()),
            ("message/conversationId", conv.to_string()),
            ("conversation/conversationId", conv.to_string()),
            ("message/messageId", s(&page["data"][0]["messageId"])),
            ("profile/profileId", customer_id.to_string()),
            ("media/attachmentId", s(&media["attachmentId"])),
            ("service/company_id", co.company_id.to_string()),
            ("service/application_id", application.to_string()),
            ("service/group_id", s(&group["_id"])),
            ("service/user_id", s(&fynd_user["user"]["_id"])),
            ("service/?id", s(&fynd_user["user"]["_id"])),
            ("service/?session_id", "no-such-session".to_owned()),
            ("contact/phone", phone.trim_start_matches('+').to_owned()),
            ("message/term", marker.clone()),
        ]);
        for (k, v) in &ids {
            assert!(!v.is_empty() && v != "null", "{k} has no value");
        }
        let app_bearer = app_bearer(application, &app_token);
        Self { co, customer, marker, client: (client_id, secret.unwrap()), ids, app_bearer }
    }

    fn tokens(&self) -> [(&'static str, &str); 3] {
        [("admin", &self.co.admin), ("agent", &self.co.agent), ("customer", &self.customer)]
    }
}

/// An HTTP endpoint on 127.0.0.1 that answers every request with 200 (outgoing webhooks and
/// bot calls of the fixture); its thread lives as long as the test binary.
fn ok_receiver() -> String {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream);
            let mut length = 0usize;
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                if let Some((k, v)) = line.split_once(':')
                    && k.eq_ignore_ascii_case("content-length")
                {
                    length = v.trim().parse().unwrap_or(0);
                }
                line.clear();
            }
            let _ = reader.by_ref().take(length as u64).read_to_end(&mut Vec::new());
            let _ = reader.get_mut().write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    });
    url
}

/// Waits (bounded) for the subscription's first delivery; returns its id.
async fn wait_for_delivery(app: &TestApp, admin: &str, sub: i64) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (status, page) = app.get(&format!("/webhook-subscriptions/{sub}/deliveries"), Some(admin)).await;
        assert_eq!(status, 200, "{page}");
        let items = page["items"].as_array().cloned().unwrap_or_default();
        if !items.is_empty() && items.iter().all(|d| d["status"] == "delivered") {
            let d = &items[0];
            return d["deliveryId"].to_string().trim_matches('"').to_owned();
        }
        assert!(std::time::Instant::now() < deadline, "deliveries of subscription {sub} not delivered: {page}");
        actix_web::rt::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// One operation of the document: method, path template, its `{param}` names.
#[derive(Debug, Clone)]
struct Operation {
    method: Method,
    template: String,
    params: Vec<String>,
    /// Required query parameters, resolved like path ones with a `?` (`service/?id`).
    query: Vec<String>,
}

impl Operation {
    fn name(&self) -> String {
        format!("{} {}", self.method, self.template)
    }

    /// `first-segment/param`: how [`Tenant::ids`] names a parameter of this route.
    fn key(&self, param: &str) -> String {
        let first = self.template.trim_start_matches('/').split('/').next().unwrap_or("");
        format!("{first}/{param}")
    }

    /// The path with each parameter taken from `pick(param index, key)`, and the required
    /// query parameters from `ids` (the same tenant's as the innermost path id's).
    fn fill(&self, pick: impl Fn(usize, &str) -> String, ids: &HashMap<&'static str, String>) -> String {
        let mut path = self.template.clone();
        for (i, p) in self.params.iter().enumerate() {
            let value = pick(i, &self.key(p));
            path = path.replace(&format!("{{{p}}}"), &urlencode(&value));
        }
        let query: Vec<String> = self
            .query
            .iter()
            .filter_map(|q| ids.get(self.key(&format!("?{q}")).as_str()).map(|v| format!("{q}={}", urlencode(v))))
            .collect();
        if query.is_empty() { path } else { format!("{path}?{}", query.join("&")) }
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Every operation of the running server's `/openapi.json`.
async fn operations(app: &TestApp) -> Vec<Operation> {
    let (status, doc) = app.get("/openapi.json", None).await;
    assert_eq!(status, 200);
    let mut ops = Vec::new();
    for (template, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let Ok(method) = Method::from_bytes(method.to_uppercase().as_bytes()) else { continue };
            if !matches!(method, Method::GET | Method::POST | Method::PUT | Method::PATCH | Method::DELETE) {
                continue;
            }
            let params = template.split('{').skip(1).map(|rest| rest.split('}').next().unwrap().to_owned()).collect();
            let query = op["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| p["in"] == "query" && p["required"] == true)
                .map(|p| p["name"].as_str().unwrap().to_owned())
                .collect();
            ops.push(Operation { method, template: template.clone(), params, query });
        }
    }
    ops
}

/// What a call sends besides its path.
enum Payload {
    None,
    Json(Value),
    Csv(&'static str),
    Form(Vec<(&'static str, String)>),
}

/// The panel's OAuth routes take an auth client's credentials, not a bearer token.
fn takes_client_credentials(op: &Operation) -> bool {
    op.template.starts_with("/service/panel/authentication/")
}

/// A body the route accepts from its own tenant, so that a refusal is the ownership check and
/// not body validation. `own` is the caller's tenant; ids named in the body are `target`'s
/// (the caller's own, or the victim's to try a foreign id in the body).
fn body_for(op: &Operation, own: &Tenant, target: &Tenant) -> Payload {
    if matches!(op.method, Method::GET | Method::DELETE) {
        return Payload::None;
    }
    let t = op.template.as_str();
    let phone = "+14155550199";
    let (client, secret) = (own.client.0.clone(), own.client.1.clone());
    Payload::Json(match t {
        "/campaigns/{id}/recipients" => return Payload::Csv("phone\n+14155550199\n"),
        _ if t.ends_with("/oauth/token") => {
            return Payload::Form(vec![("grant_type", "client_credentials".into())]);
        }
        _ if t.ends_with("/oauth/offline-token") => json!({"client_id": client, "client_secret": secret,
                                                          "grant_type": "authorization_code", "code": "stolen"}),
        "/channel/{id}" => json!({"provider": "sandbox", "phoneNumber": "+14155550123", "displayName": "Sandbox",
                                  "webhookSecret": "attacker-secret"}),
        "/channel/{id}/bot" => json!({"botId": target.ids["bots/id"].parse::<i64>().unwrap()}),
        "/channel/{id}/team" => json!({"teamId": target.ids["team/id"].parse::<i64>().unwrap()}),
        "/team/{id}" => json!({"name": "stolen", "agentIds": [target.co.agent_id]}),
        "/canned/{id}" => json!({"shortCode": "stolen", "content": "stolen"}),
        "/template/{id}" => {
            json!({"name": "stolen", "content": "Hello {{1}}", "language": "en_US", "category": "utility"})
        }
        "/agent/{id}" => json!({"role": "admin"}),
        "/auth-clients/{id}" => json!({"redirectUrl": "https://evil.example/callback"}),
        "/conversation/{conversationId}" => {
            json!({"status": "resolved", "teamId": target.ids["team/id"].parse::<i64>().unwrap()})
        }
        "/conversation/{conversationId}/merge" => {
            json!({"intoConversationId": target.ids["conversation/conversationId"].parse::<i64>().unwrap()})
        }
        "/message/{messageId}" => json!({"text": "stolen"}),
        "/webhook-subscriptions/{id}" => json!({"url": "http://127.0.0.1:9/evil", "events": ["message.created"]}),
        _ if t.ends_with("/user_group/{group_id}") || t.ends_with("/user_group") => {
            json!({"name": "stolen", "description": "stolen"})
        }
        _ if t.ends_with("/customers/{user_id}") => json!({"first_name": "Stolen"}),
        _ if t.ends_with("/customers") => json!({"phone_number": phone}),
        _ if t.ends_with("/customers/activation") => {
            json!({"user_id": [target.ids["service/user_id"]], "status": false, "reason": "stolen"})
        }
        _ if t.ends_with("/customers/archive") || t.ends_with("/customers/undelete") => {
            json!({"user_id": target.ids["service/user_id"]})
        }
        _ if t.ends_with("/customers/session") => json!({"user_id": target.ids["service/user_id"]}),
        _ => json!({}),
    })
}

/// How a call authenticates.
#[derive(Clone, Copy)]
enum Auth<'a> {
    Bearer(&'a str),
    /// An auth client's id and secret in a Basic header.
    Client(&'a (String, String)),
}

async fn call(app: &TestApp, op: &Operation, path: &str, auth: Auth<'_>, payload: &Payload) -> (u16, String) {
    let mut req = app.client.request(op.method.clone(), app.url(path));
    req = match auth {
        Auth::Bearer(token) => req.bearer_auth(token),
        Auth::Client((id, secret)) => req.basic_auth(id, Some(secret)),
    };
    req = match payload {
        Payload::None => req,
        Payload::Json(b) => req.json(b),
        Payload::Csv(text) => req.header("Content-Type", "text/csv").body(*text),
        Payload::Form(form) => req.form(form),
    };
    let res = req.send().await.unwrap();
    (res.status().as_u16(), res.text().await.unwrap_or_default())
}

/// Fields that change with the clock alone (`chat-time-report` counts down to a deadline).
const VOLATILE: &[&str] = &["comparedTime", "duration"];

fn without_volatile(text: &str) -> String {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(mut o)) => {
            o.retain(|k, _| !VOLATILE.contains(&k.as_str()));
            Value::Object(o).to_string()
        }
        _ => text.to_owned(),
    }
}

/// The `GET`s of A's own resources, answered by A's admin (or agent): what must not change.
async fn snapshot(app: &TestApp, ops: &[Operation], a: &Tenant) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for op in ops.iter().filter(|o| o.method == Method::GET && !o.params.is_empty()) {
        if NOT_EXERCISED.iter().any(|(n, _)| *n == op.name()) || op.params.iter().any(|p| is_search(op, p)) {
            continue;
        }
        let path = op.fill(|_, k| a.ids[k].clone(), &a.ids);
        let (mut status, mut body) = call(app, op, &path, Auth::Bearer(&a.co.admin), &Payload::None).await;
        if status == 403 {
            (status, body) = call(app, op, &path, Auth::Bearer(&a.co.agent), &Payload::None).await;
        }
        assert_eq!(
            status,
            200,
            "{}: A's own call with A's ids must work, or the matrix proves nothing: {body}",
            op.name()
        );
        out.insert(path, without_volatile(&body));
    }
    out
}

fn is_search(op: &Operation, param: &str) -> bool {
    SEARCH_PARAMS.contains(&op.key(param).as_str())
}

both_backends!(tenant_isolation_matrix_from_the_openapi_document, |app: TestApp| async move {
    let a = Tenant::populate(&app, "+14155550181").await;
    let b = Tenant::populate(&app, "+14155550182").await;
    let ops = operations(&app).await;

    // Every parameter resolves, or its operation is listed with a reason.
    let mut unresolved = Vec::new();
    for op in &ops {
        if NOT_EXERCISED.iter().any(|(n, _)| *n == op.name()) {
            continue;
        }
        let in_matrix = op.params.iter().any(|p| !is_search(op, p));
        let query = op.query.iter().filter(|_| in_matrix).map(|q| format!("?{q}"));
        for p in op.params.iter().cloned().chain(query) {
            if !a.ids.contains_key(op.key(&p).as_str()) {
                unresolved.push(format!("{} ({})", op.name(), op.key(&p)));
            }
        }
    }
    assert!(
        unresolved.is_empty(),
        "routes the isolation matrix cannot fill: add their ids to Tenant::populate in \
         tests/api/reliability_isolation.rs, or list them in NOT_EXERCISED with a reason: {unresolved:#?}"
    );

    let before = snapshot(&app, &ops, &a).await;
    let leak = |text: &str| text.contains(&a.marker);

    // The matrix: A's ids, B's tokens.
    let (mut calls, mut refusals) = (0usize, BTreeMap::<(&str, u16), usize>::new());
    let mut failures = Vec::new();
    for op in &ops {
        let ids: Vec<usize> = (0..op.params.len()).filter(|&i| !is_search(op, &op.params[i])).collect();
        if ids.is_empty() || NOT_EXERCISED.iter().any(|(n, _)| *n == op.name()) {
            continue;
        }
        // All of A's ids; and B's own outer ids around A's innermost one.
        let mut paths = vec![op.fill(|_, k| a.ids[k].clone(), &a.ids)];
        if ids.len() > 1 {
            let last = *ids.last().unwrap();
            paths.push(op.fill(|i, k| if i == last { a.ids[k].clone() } else { b.ids[k].clone() }, &a.ids));
        }
        let payload = body_for(op, &b, &b);
        let callers: Vec<(&str, Auth)> = if takes_client_credentials(op) {
            vec![("auth client", Auth::Client(&b.client))]
        } else {
            b.tokens().into_iter().map(|(role, token)| (role, Auth::Bearer(token))).collect()
        };
        for path in &paths {
            for &(role, auth) in &callers {
                let (status, text) = call(&app, op, path, auth, &payload).await;
                calls += 1;
                *refusals.entry((role, status)).or_default() += 1;
                if !matches!(status, 401 | 403 | 404) || leak(&text) {
                    failures.push(format!("{} as B's {role} → {status}: {}", path_of(op, path), clip(&text)));
                } else {
                    let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                    if body["statusCode"] != status || !body["code"].is_string() {
                        failures.push(format!("{} as B's {role}: not the unified error body: {text}", op.name()));
                    }
                }
            }
        }
    }

    // Ids in bodies: B's own path, A's id in the body (a bot for B's channel, A's customer to
    // block in B's application, …).
    let mut body_ids = 0usize;
    for op in &ops {
        let (Payload::Json(foreign), Payload::Json(own)) = (body_for(op, &b, &a), body_for(op, &b, &b)) else {
            continue;
        };
        if foreign == own || NOT_EXERCISED.iter().any(|(n, _)| *n == op.name()) {
            continue;
        }
        let path = op.fill(|_, k| b.ids[k].clone(), &b.ids);
        for (role, token) in b.tokens() {
            let (status, text) = call(&app, op, &path, Auth::Bearer(token), &Payload::Json(foreign.clone())).await;
            body_ids += 1;
            *refusals.entry(("body id", status)).or_default() += 1;
            if !matches!(status, 400 | 401 | 403 | 404 | 422) || leak(&text) {
                failures.push(format!(
                    "{} with A's id in the body as B's {role} → {status}: {}",
                    path_of(op, &path),
                    clip(&text)
                ));
            }
        }
    }
    assert!(body_ids > 0, "the body-id variant ran");

    // Listings and searches: B's own ids, no row of A's.
    let mut listed = 0usize;
    for op in ops.iter().filter(|o| o.method == Method::GET) {
        if NOT_EXERCISED.iter().any(|(n, _)| *n == op.name()) {
            continue;
        }
        let path =
            op.fill(|i, k| if is_search(op, &op.params[i]) { a.ids[k].clone() } else { b.ids[k].clone() }, &b.ids);
        for (role, token) in b.tokens() {
            let (status, text) = call(&app, op, &path, Auth::Bearer(token), &Payload::None).await;
            listed += 1;
            if status >= 500 || leak(&text) {
                failures.push(format!("listing {path} as B's {role} → {status}: {}", clip(&text)));
            }
        }
    }
    // The searches do find A's rows for A: the terms are not vacuous.
    for op in ops.iter().filter(|o| o.method == Method::GET && o.params.iter().any(|p| is_search(o, p))) {
        let path = op.fill(|_, k| a.ids[k].clone(), &a.ids);
        let (status, text) = call(&app, op, &path, Auth::Bearer(&a.co.agent), &Payload::None).await;
        assert_eq!(status, 200, "{path}: {text}");
        let found: Value = serde_json::from_str(&text).unwrap();
        let rows = found["data"].as_array().or(found.as_array()).map(Vec::len).unwrap_or(0);
        assert!(rows > 0, "A's own search {path} finds A's rows: {text}");
    }

    let after = snapshot(&app, &ops, &a).await;
    for (path, was) in &before {
        if after.get(path) != Some(was) {
            failures.push(format!(
                "{path} changed under B's refused calls:\n  before {was}\n  after  {:?}",
                after.get(path)
            ));
        }
    }
    println!(
        "isolation matrix ({:?}): {} operations in /openapi.json, {} id calls and {} body-id calls refused {:?}, \
         {} listing calls, {} own resources unchanged, {} not exercised, leaks = {}",
        app.backend,
        ops.len(),
        calls,
        body_ids,
        refusals,
        listed,
        before.len(),
        NOT_EXERCISED.len(),
        failures.len()
    );
    assert!(failures.is_empty(), "tenant isolation failures:\n{}", failures.join("\n"));
});

fn path_of(op: &Operation, path: &str) -> String {
    format!("{} {path}", op.method)
}

fn clip(text: &str) -> &str {
    &text[..text.char_indices().nth(300).map(|(i, _)| i).unwrap_or(text.len())]
}
