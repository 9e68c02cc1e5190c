//! Teams and auto-assignment (issue 22 item 6), and the inbox counters: REST and WebSocket
//! against the real server, on both backends; presence across two nodes on one database.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::{both_backends, helpers::*, realtime::Ws};

/// Invites and signs up another agent of the company: (token, user id).
pub async fn invite_agent(app: &TestApp, admin: &str, first_name: &str, phone: &str) -> (String, i64) {
    let email = format!("{}-{}@example.test", first_name.to_lowercase(), confab::core::crypto::random_hex_id());
    let (status, invite) = app.post("/agent/invite", Some(admin), &json!({"email": email, "role": "agent"})).await;
    assert_eq!(status, 201, "{invite}");
    let (status, signup) = app
        .post(
            "/auth/signup",
            None,
            &json!({"email": email, "password": "agent-password", "firstName": first_name, "lastName": "Test",
                    "phone": phone, "inviteToken": invite["inviteToken"]}),
        )
        .await;
    assert_eq!(status, 201, "{signup}");
    let token = app.login(&email, "agent-password").await["accessToken"].as_str().unwrap().to_owned();
    (token, signup["userId"].as_i64().unwrap())
}

/// Waits (bounded) until the database says whether `user_id` is online on some node.
pub async fn wait_for_presence(app: &TestApp, company_id: i64, user_id: i64, online: bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now = app
            .state
            .db
            .run(move |c| confab::core::realtime::presence::online_among(c, company_id, &[user_id]))
            .await
            .unwrap();
        if now.contains(&user_id) == online {
            return;
        }
        assert!(Instant::now() < deadline, "agent {user_id} never became online={online}");
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until every auto-assignment job of the conversation has run; returns its view.
async fn assigned(app: &TestApp, token: &str, conv: i64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let pending = app
            .state
            .db
            .run(move |c| {
                use confab::core::db::schema::outbox;
                use diesel::prelude::*;
                Ok(outbox::table
                    .filter(outbox::kind.eq("auto_assign").and(outbox::ref_id.eq(conv.to_string())))
                    .filter(outbox::done_at.is_null())
                    .count()
                    .get_result::<i64>(c)?)
            })
            .await
            .unwrap();
        if pending == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the auto-assignment of {conv} never ran");
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    view(app, token, conv).await
}

async fn view(app: &TestApp, token: &str, conv: i64) -> Value {
    let (status, list) = app.get("/conversation/conversation-page-list?limit=100", Some(token)).await;
    assert_eq!(status, 200, "{list}");
    list["data"].as_array().unwrap().iter().find(|c| c["conversationId"] == conv).unwrap().clone()
}

fn ids(list: &Value) -> Vec<i64> {
    list["data"].as_array().unwrap().iter().map(|c| c["conversationId"].as_i64().unwrap()).collect()
}

both_backends!(teams_per_company_filter_and_counters, |app: TestApp| async move {
    let co = app.default_company().await;
    let other = app.other_company("Teams Elsewhere").await;
    let (_, alan) = invite_agent(&app, &co.admin, "Alan", "+14155550198").await;

    // Admins write, agents read; names are unique per company; members are the company's
    // active agents.
    let body = json!({"name": "Support", "agentIds": [co.agent_id, alan, co.agent_id], "autoAssign": false});
    let (status, team) = app.post("/team", Some(&co.admin), &body).await;
    assert_eq!(status, 201, "{team}");
    let team_id = team["teamId"].as_i64().unwrap();
    let mut want = vec![co.agent_id, alan];
    want.sort();
    assert_eq!(team["agentIds"], json!(want));
    assert_eq!(team["maxOpenPerAgent"], Value::Null);
    let (status, b) = app.post("/team", Some(&co.admin), &json!({"name": " Support "})).await;
    assert_error(status, &b, 409, "team_exists");
    let (status, b) = app.post("/team", Some(&co.agent), &json!({"name": "Mine"})).await;
    assert_error(status, &b, 403, "forbidden");
    for (body, field) in [
        (json!({"name": "  "}), "name"),
        (json!({"name": "X", "maxOpenPerAgent": 0}), "maxOpenPerAgent"),
        (json!({"name": "X", "agentIds": [other.agent_id]}), "agentIds"),
    ] {
        let (status, b) = app.post("/team", Some(&co.admin), &body).await;
        assert_error(status, &b, 400, "validation_failed");
        assert!(b["fields"][field].is_string(), "{b}");
    }
    let (status, sales) = app
        .post(
            "/team",
            Some(&co.admin),
            &json!({"name": "Sales", "agentIds": [alan], "autoAssign": true, "maxOpenPerAgent": 3}),
        )
        .await;
    assert_eq!(status, 201, "{sales}");
    let sales_id = sales["teamId"].as_i64().unwrap();
    let (status, list) = app.get("/team", Some(&co.agent)).await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(
        list.as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect::<Vec<_>>(),
        ["Sales", "Support"]
    );
    let (status, put) = app
        .put(&format!("/team/{team_id}"), Some(&co.admin), &json!({"name": "Support EU", "agentIds": [co.agent_id]}))
        .await;
    assert_eq!(status, 200, "{put}");
    assert_eq!(put["agentIds"], json!([co.agent_id]));
    let (status, got) = app.get(&format!("/team/{team_id}"), Some(&co.agent)).await;
    assert_eq!(status, 200);
    assert_eq!(got["name"], "Support EU");
    // Another company sees none of it.
    let (_, theirs) = app.get("/team", Some(&other.agent)).await;
    assert_eq!(theirs, json!([]));
    for (status, b) in [
        app.get(&format!("/team/{team_id}"), Some(&other.admin)).await,
        app.put(&format!("/team/{team_id}"), Some(&other.admin), &json!({"name": "Stolen"})).await,
        app.delete(&format!("/team/{team_id}"), Some(&other.admin)).await,
    ] {
        assert_error(status, &b, 404, "not_found");
    }

    // A conversation's team: set with PATCH (conversation.updated), filtered on, counted.
    let c1 = app.customer_says(&co, "+14155550301", "one").await;
    let c2 = app.customer_says(&co, "+14155550302", "two").await;
    let c3 = app.customer_says(&co, "+14155550303", "three").await;
    let mut ws = Ws::connect(&app, &co.admin).await;
    let (_, last) = ws.subscribe(c1, None).await;
    let (status, v) = app.patch(&format!("/conversation/{c1}"), Some(&co.agent), &json!({"teamId": team_id})).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["teamId"], team_id);
    let ev = ws.events_until(c1, last + 1).await;
    assert_eq!(ev[0]["event"], "conversation.updated");
    assert_eq!(ev[0]["data"]["teamId"], team_id);
    let (status, v) = app
        .patch(&format!("/conversation/{c2}"), Some(&co.agent), &json!({"teamId": team_id, "assigneeId": co.agent_id}))
        .await;
    assert_eq!(status, 200, "{v}");
    let (status, b) = app.patch(&format!("/conversation/{c3}"), Some(&co.agent), &json!({"teamId": 999_999})).await;
    assert_error(status, &b, 400, "validation_failed");
    let other_team = app.post("/team", Some(&other.admin), &json!({"name": "Theirs"})).await.1["teamId"].clone();
    let (status, b) = app.patch(&format!("/conversation/{c3}"), Some(&co.agent), &json!({"teamId": other_team})).await;
    assert_error(status, &b, 400, "validation_failed");
    let (status, b) = app.patch(&format!("/conversation/{c3}"), Some(&co.agent), &json!({"status": "resolved"})).await;
    assert_eq!(status, 200, "{b}");

    let list = |q: String| {
        let token = co.agent.clone();
        let app = &app;
        async move {
            let (status, list) = app.get(&format!("/conversation/conversation-page-list?{q}"), Some(&token)).await;
            assert_eq!(status, 200, "{q}: {list}");
            list
        }
    };
    let mut both = ids(&list(format!("teamId={team_id}")).await);
    both.sort();
    assert_eq!(both, [c1, c2]);
    assert_eq!(ids(&list(format!("teamId={team_id}&assigneeId=none")).await), [c1]);
    assert_eq!(ids(&list("teamId=none".into()).await), [c3]);
    assert_eq!(ids(&list(format!("teamId={sales_id}")).await), Vec::<i64>::new());
    let (status, b) = app.get("/conversation/conversation-page-list?teamId=sales", Some(&co.agent)).await;
    assert_error(status, &b, 400, "invalid_query");

    let (status, counts) = app.get("/conversation/counts", Some(&co.agent)).await;
    assert_eq!(status, 200, "{counts}");
    assert_eq!(
        counts,
        json!({"mine": {"open": 1, "pending": 0, "resolved": 0, "snoozed": 0},
               "unassigned": {"open": 1, "pending": 0, "resolved": 1, "snoozed": 0},
               "all": {"open": 2, "pending": 0, "resolved": 1, "snoozed": 0}})
    );
    let (_, admin_counts) = app.get(&format!("/conversation/counts?teamId={team_id}"), Some(&co.admin)).await;
    assert_eq!(admin_counts["mine"]["open"], 0, "the admin has none: {admin_counts}");
    assert_eq!(admin_counts["all"], json!({"open": 2, "pending": 0, "resolved": 0, "snoozed": 0}));
    assert_eq!(admin_counts["unassigned"]["open"], 1);
    let (_, none_counts) = app.get("/conversation/counts?teamId=none", Some(&co.admin)).await;
    assert_eq!(none_counts["all"]["resolved"], 1);
    let (_, their_counts) = app.get("/conversation/counts", Some(&other.agent)).await;
    assert_eq!(their_counts["all"], json!({"open": 0, "pending": 0, "resolved": 0, "snoozed": 0}));
    let (status, b) = app.get("/conversation/counts?teamId=x", Some(&co.agent)).await;
    assert_error(status, &b, 400, "invalid_query");

    // A channel's team: the channel's new conversations belong to it.
    let (status, ch) =
        app.put(&format!("/channel/{}/team", co.channel_id), Some(&co.admin), &json!({"teamId": team_id})).await;
    assert_eq!(status, 200, "{ch}");
    assert_eq!(ch["teamId"], team_id);
    let (status, b) =
        app.put(&format!("/channel/{}/team", co.channel_id), Some(&co.admin), &json!({"teamId": other_team})).await;
    assert_error(status, &b, 400, "validation_failed");
    let (status, b) =
        app.put(&format!("/channel/{}/team", co.channel_id), Some(&co.agent), &json!({"teamId": team_id})).await;
    assert_error(status, &b, 403, "forbidden");
    let c4 = app.customer_says(&co, "+14155550304", "four").await;
    assert_eq!(view(&app, &co.agent, c4).await["teamId"], team_id);

    // Deleting the team takes it off its conversations (conversation.updated) and channels.
    let (status, _) = app.delete(&format!("/team/{team_id}"), Some(&co.admin)).await;
    assert_eq!(status, 204);
    let ev = ws.events_until(c1, last + 2).await;
    let ev = ev.last().unwrap();
    assert_eq!((ev["seq"].as_i64(), ev["event"].as_str()), (Some(last + 2), Some("conversation.updated")));
    assert_eq!(ev["data"]["teamId"], Value::Null);
    assert_eq!(view(&app, &co.agent, c4).await["teamId"], Value::Null);
    let (_, channels) = app.get("/channel", Some(&co.admin)).await;
    assert!(channels.as_array().unwrap().iter().all(|c| c["teamId"].is_null()), "{channels}");
    let (status, b) = app.get(&format!("/team/{team_id}"), Some(&co.agent)).await;
    assert_error(status, &b, 404, "not_found");
});

both_backends!(auto_assignment_goes_round_robin_to_online_agents_below_the_cap, |app: TestApp| async move {
    let co = app.default_company().await;
    let grace = co.agent_id;
    let (alan_token, alan) = invite_agent(&app, &co.admin, "Alan", "+14155550198").await;
    let (status, team) = app
        .post(
            "/team",
            Some(&co.admin),
            &json!({"name": "Support", "agentIds": [grace, alan], "autoAssign": true, "maxOpenPerAgent": 2}),
        )
        .await;
    assert_eq!(status, 201, "{team}");
    let team_id = team["teamId"].as_i64().unwrap();
    let (status, ch) =
        app.put(&format!("/channel/{}/team", co.channel_id), Some(&co.admin), &json!({"teamId": team_id})).await;
    assert_eq!(status, 200, "{ch}");

    // Nobody online: a new conversation waits in the team's queue, unassigned.
    let waiting = app.customer_says(&co, "+14155550310", "anyone?").await;
    let v = assigned(&app, &co.admin, waiting).await;
    assert_eq!(v["teamId"], team_id);
    assert_eq!(v["assigneeId"], Value::Null);

    // Grace is online on this node, Alan on a second node on the same database: presence is
    // shared through it.
    let node_b = TestApp::start(app.backend, app.config.clone(), app.dir.clone(), app.pg.clone()).await;
    let mut grace_ws = Ws::connect(&app, &co.agent).await;
    let alan_ws = Ws::connect(&node_b, &alan_token).await;
    wait_for_presence(&app, co.company_id, grace, true).await;
    wait_for_presence(&app, co.company_id, alan, true).await;

    // Round-robin among the fewest open: (0, 0) → the never-assigned lower id, then the other,
    // then (1, 1) → whoever waited longest, then the other; both at the cap of 2: unassigned.
    let first = grace.min(alan);
    let second = grace.max(alan);
    let mut got = Vec::new();
    for (i, phone) in
        ["+14155550311", "+14155550312", "+14155550313", "+14155550314", "+14155550315"].iter().enumerate()
    {
        let conv = app.customer_says(&co, phone, &format!("hello {i}")).await;
        if i == 0 {
            // The subscriber of the new conversation sees the assignment as its next seq.
            let (events, _) = grace_ws.subscribe(conv, Some(0)).await;
            let mut all = events;
            if all.len() < 2 {
                all.extend(grace_ws.events_until(conv, 2).await);
            }
            assert_eq!(all[0]["event"], "message.created");
            assert_eq!(all[1]["seq"], 2);
            assert_eq!(all[1]["event"], "conversation.updated");
            assert_eq!(all[1]["data"]["assigneeId"], first);
        }
        got.push(assigned(&app, &co.admin, conv).await["assigneeId"].clone());
    }
    assert_eq!(got, [json!(first), json!(second), json!(first), json!(second), Value::Null]);

    // Alan goes offline; Grace resolves one of hers and a customer of hers comes back
    // (reopened unassigned: Grace has room again, Alan is offline).
    drop(alan_ws);
    wait_for_presence(&app, co.company_id, alan, false).await;
    let (_, mine) = app.get(&format!("/conversation/conversation-page-list?assigneeId={grace}"), Some(&co.admin)).await;
    let hers = ids(&mine)[0];
    let phone = view(&app, &co.admin, hers).await["user"]["phone"].as_str().unwrap().to_owned();
    let (status, b) = app
        .patch(&format!("/conversation/{hers}"), Some(&co.agent), &json!({"status": "resolved", "assigneeId": null}))
        .await;
    assert_eq!(status, 200, "{b}");
    assert_eq!(assigned(&app, &co.admin, hers).await["assigneeId"], Value::Null, "resolving assigns nothing");
    app.customer_says(&co, &phone, "one more thing").await;
    let v = assigned(&app, &co.admin, hers).await;
    assert_eq!((v["status"].as_str(), v["assigneeId"].as_i64()), (Some("open"), Some(grace)));
    // Reopened by an agent (unassigned, at the cap: Grace has 2 open now) stays in the queue.
    let (_, b) = app.patch(&format!("/conversation/{waiting}"), Some(&co.admin), &json!({"status": "resolved"})).await;
    assert_eq!(b["status"], "resolved");
    let (_, b) = app.patch(&format!("/conversation/{waiting}"), Some(&co.admin), &json!({"status": "open"})).await;
    assert_eq!(b["status"], "open");
    assert_eq!(assigned(&app, &co.admin, waiting).await["assigneeId"], Value::Null);
    // Without autoAssign nothing is assigned, even with room.
    let (status, b) = app
        .put(
            &format!("/team/{team_id}"),
            Some(&co.admin),
            &json!({"name": "Support", "agentIds": [grace, alan], "maxOpenPerAgent": 5}),
        )
        .await;
    assert_eq!(status, 200, "{b}");
    let quiet = app.customer_says(&co, "+14155550316", "quiet").await;
    assert_eq!(assigned(&app, &co.admin, quiet).await["assigneeId"], Value::Null);
    // Moving an open unassigned conversation to a team with autoAssign assigns it.
    let (_, b) = app
        .put(
            &format!("/team/{team_id}"),
            Some(&co.admin),
            &json!({"name": "Support", "agentIds": [grace, alan], "autoAssign": true, "maxOpenPerAgent": 5}),
        )
        .await;
    assert_eq!(b["autoAssign"], true);
    let (status, b) = app.patch(&format!("/conversation/{quiet}"), Some(&co.admin), &json!({"teamId": null})).await;
    assert_eq!((status, b["teamId"].clone()), (200, Value::Null));
    let (status, _) = app.patch(&format!("/conversation/{quiet}"), Some(&co.admin), &json!({"teamId": team_id})).await;
    assert_eq!(status, 200);
    assert_eq!(assigned(&app, &co.admin, quiet).await["assigneeId"], grace);
    drop(grace_ws);
    node_b.stop().await;
});
