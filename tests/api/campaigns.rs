//! Campaign crash safety and concurrency (issue 23, README "Campaigns"). The crash test runs
//! the real binary as a child process against the mock WhatsApp API, `kill -9`s it twice in
//! the middle of a campaign and restarts it on the same database; the mock counts the sends
//! per recipient. `CONFAB_TEST_CAMPAIGN_RECIPIENTS` sets the campaign's size (default 1,000;
//! the long form is 10,000).

use std::{collections::HashMap, time::Duration};

use diesel::prelude::*;
use serde_json::{Value, json};

use crate::{
    both_backends,
    helpers::*,
    webhooks::{APP_SECRET, Mock, PNID, whatsapp_channel},
};

fn recipients_wanted() -> usize {
    std::env::var("CONFAB_TEST_CAMPAIGN_RECIPIENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(1000).clamp(10, 10_000)
}

/// The mock's sends, by recipient (`to`, E.164 without `+`).
fn sends_by_recipient(mock: &Mock) -> HashMap<String, usize> {
    let mut by = HashMap::new();
    for s in mock.seen().iter().filter(|s| s.path.ends_with("/messages")) {
        let to = s.json()["to"].as_str().unwrap_or_default().to_owned();
        *by.entry(to).or_insert(0) += 1;
    }
    by
}

/// `(status, error_code)` of the messages a campaign's runner wrote.
async fn campaign_message_statuses(app: &TestApp, id: i64) -> Vec<(String, Option<String>)> {
    use confab::core::db::schema::messages;
    let pattern = format!("campaign-{id}-%");
    app.state
        .db
        .run(move |c| {
            Ok(messages::table
                .filter(messages::client_id.like(pattern))
                .select((messages::status, messages::error_code))
                .load(c)?)
        })
        .await
        .unwrap()
}

async fn crash_scenario(backend: Backend) {
    let n = recipients_wanted();
    let mock = Mock::start().await;
    let Some(app) = TestApp::spawn_with(backend, mock.operator(|_| {})).await else {
        eprintln!("skipped: CONFAB_TEST_DATABASE_URL is not set");
        return;
    };
    let co = app.default_company().await;
    let channel = whatsapp_channel(&app, &co, &mock, PNID, APP_SECRET).await;
    let (status, tpl) = app
        .post(
            "/template",
            Some(&co.admin),
            &json!({"name": "promo", "content": "Hello {{1}}", "language": "en_US", "category": "marketing"}),
        )
        .await;
    assert_eq!(status, 201, "{tpl}");
    let recipients: Vec<Value> = (0..n).map(|i| json!({"phone": format!("+1 415 557 {i:04}")})).collect();
    let (status, campaign) = app
        .post(
            "/campaigns",
            Some(&co.admin),
            &json!({"name": "Crash", "channelId": channel, "templateId": tpl["templateId"], "params": ["friend"],
                    "recipients": recipients, "ratePerSecond": 1000}),
        )
        .await;
    assert_eq!(status, 201, "{campaign}");
    assert_eq!(campaign["counts"]["queued"], n, "{campaign}");
    let id = campaign["campaignId"].as_i64().unwrap();

    // From here only the child processes send: this in-process node stops (its runners with
    // it) and the campaign is started directly in the database.
    app.stop().await;
    actix_web::rt::time::sleep(Duration::from_millis(200)).await;
    let started = confab::campaigns::service::transition(
        &app.state,
        co.company_id,
        id,
        confab::campaigns::service::Action::Start,
    )
    .await
    .unwrap();
    assert_eq!(started.status, "running");

    let db_url = app.config.database_url();
    let data_dir = app.data_dir();
    let spawn = |run: usize| {
        let log = std::fs::File::create(app.dir.path().join(format!("child-{run}.log"))).unwrap();
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
            .env_remove("CONFAB_REDIS_URL")
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start confab")
    };
    let sends = |mock: &Mock| mock.seen().iter().filter(|s| s.path.ends_with("/messages")).count();
    let deadline = std::time::Instant::now() + Duration::from_secs(120 + n as u64 / 10);
    const KILLS: usize = 2;
    for run in 1..=KILLS {
        let mut child = spawn(run);
        // Killed in the middle: after a third, then two thirds, of the sends.
        while sends(&mock) < run * n / 3 {
            assert!(std::time::Instant::now() < deadline, "run {run}: {} of {n} sent", sends(&mock));
            actix_web::rt::time::sleep(Duration::from_millis(10)).await;
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
    }
    let mut child = spawn(KILLS + 1);
    let view = loop {
        let view = confab::campaigns::service::get(&app.state, co.company_id, id).await.unwrap();
        let statuses = campaign_message_statuses(&app, id).await;
        if view.status == "completed" && statuses.iter().all(|(s, _)| s != "PENDING") {
            break view;
        }
        assert!(std::time::Instant::now() < deadline, "not finished: {view:?}, {} of {n} sent", sends(&mock));
        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    };
    // Another lease period for a restarted node to misbehave (send again), then stop it.
    actix_web::rt::time::sleep(Duration::from_millis(2500)).await;
    child.kill().unwrap();
    child.wait().unwrap();

    let by = sends_by_recipient(&mock);
    let twice: Vec<_> = by.iter().filter(|(_, k)| **k > 1).collect();
    assert!(twice.is_empty(), "sent more than once: {twice:?}");
    let statuses = campaign_message_statuses(&app, id).await;
    if statuses.len() != n {
        let page = confab::campaigns::service::recipients(
            &app.state,
            co.company_id,
            id,
            Some("failed".into()),
            confab::core::query::Paging::parse(Some(1), Some(20), 20, ("page", "limit")).unwrap(),
        )
        .await
        .unwrap();
        panic!("{} messages for {n} recipients: {view:?}; failed: {page:?}", statuses.len());
    }
    // A send interrupted by a kill during its provider call is not repeated: its message
    // fails `outcome_unknown` (at most one per kill: a node makes one provider call at a time).
    let unknown = statuses.iter().filter(|(_, e)| e.as_deref() == Some("outcome_unknown")).count();
    let failed = statuses.iter().filter(|(s, _)| s == "FAILED").count();
    assert_eq!(failed, unknown, "no failure but the interrupted sends: {statuses:?}");
    assert!(unknown <= KILLS, "{unknown} sends interrupted by {KILLS} kills");
    // Nobody is lost: every recipient the provider never saw is one of those.
    assert!(n - by.len() <= unknown, "{} recipients never sent, {unknown} interrupted", n - by.len());
    let c = &view.counts;
    assert_eq!((c.queued, c.skipped, c.sent, c.failed), (0, 0, (n - unknown) as i64, unknown as i64), "{view:?}");
}

#[actix_web::test]
async fn a_campaign_survives_kill_9_and_sends_no_recipient_twice_sqlite() {
    crash_scenario(Backend::Sqlite).await;
}

#[actix_web::test]
async fn a_campaign_survives_kill_9_and_sends_no_recipient_twice_postgres() {
    crash_scenario(Backend::Postgres).await;
}

// A node sends several campaigns at once: each progresses while the others still have
// recipients queued (one campaign at a time would finish the first before starting the next).
both_backends!(a_node_sends_several_campaigns_at_once, |app: TestApp| async move {
    let co = app.default_company().await;
    let (status, tpl) = app
        .post(
            "/template",
            Some(&co.admin),
            &json!({"name": "promo", "content": "Hello {{1}}", "language": "en_US", "category": "marketing"}),
        )
        .await;
    assert_eq!(status, 201, "{tpl}");
    let mut ids = Vec::new();
    for k in 0..3 {
        let recipients: Vec<Value> = (0..10).map(|i| json!({"phone": format!("+1 415 556 {k}{i:03}")})).collect();
        let (status, c) = app
            .post(
                "/campaigns",
                Some(&co.admin),
                &json!({"name": format!("Slow {k}"), "channelId": co.channel_id, "templateId": tpl["templateId"],
                        "params": ["you"], "recipients": recipients, "ratePerSecond": 1}),
            )
            .await;
        assert_eq!(status, 201, "{c}");
        ids.push(c["campaignId"].as_i64().unwrap());
    }
    for id in &ids {
        let (status, body) = app.post(&format!("/campaigns/{id}/start"), Some(&co.admin), &json!({})).await;
        assert_eq!(status, 200, "{body}");
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let mut all_going = true;
        let mut views = Vec::new();
        for id in &ids {
            let (_, v) = app.get(&format!("/campaigns/{id}"), Some(&co.admin)).await;
            let c = &v["counts"];
            let done: i64 =
                ["sent", "delivered", "read", "failed", "skipped"].iter().map(|k| c[k].as_i64().unwrap()).sum();
            all_going &= done > 0 && c["queued"].as_i64().unwrap() > 0;
            views.push(v);
        }
        if all_going {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "not all campaigns progressing together: {views:?}");
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    for id in &ids {
        let (status, v) = app.post(&format!("/campaigns/{id}/cancel"), Some(&co.admin), &json!({})).await;
        assert_eq!((status, v["status"].as_str()), (200, Some("cancelled")), "{v}");
    }
});
