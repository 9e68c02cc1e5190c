//! Conversation tools (issue 22): private notes and mentions, canned responses, edit and
//! delete, snooze, scheduled sends, reactions. REST and WebSocket against the real server, on
//! both backends. Due times are set in the past or a second ahead and polled for with a
//! generous deadline: nothing asserts how fast they fire.

use serde_json::{Value, json};

use crate::{both_backends, helpers::*, per_backend, realtime::Ws};

async fn me(app: &TestApp, token: &str) -> i64 {
    let (status, me) = app.get("/auth/me", Some(token)).await;
    assert_eq!(status, 200, "{me}");
    me["userId"].as_i64().unwrap()
}

/// Outbox jobs queued for a message (a private note must never have one).
async fn jobs_for(app: &TestApp, message_id: &str) -> i64 {
    let id = message_id.to_owned();
    app.state
        .db
        .run(move |c| {
            use confab::core::db::schema::outbox;
            use diesel::prelude::*;
            Ok(outbox::table.filter(outbox::ref_id.eq(id)).count().get_result::<i64>(c)?)
        })
        .await
        .unwrap()
}

/// The next `event` frame of kind `event` on the socket (other frames are skipped).
async fn next_event(ws: &mut Ws, event: &str) -> Value {
    loop {
        let f = ws.next().await;
        if f["type"] == "event" && f["event"] == event {
            return f;
        }
    }
}

async fn messages(app: &TestApp, token: &str, conv: i64) -> Vec<Value> {
    let (status, page) = app.get(&format!("/message/message-page-list/{conv}?limit=100"), Some(token)).await;
    assert_eq!(status, 200, "{page}");
    page["data"].as_array().unwrap().clone()
}

both_backends!(private_notes_stay_with_agents_and_mentions_notify, |app: TestApp| async move {
    let co = app.default_company().await;
    let other = app.other_company("Elsewhere").await;
    let admin_id = me(&app, &co.admin).await;
    let conv = app.customer_says(&co, "+14155550170", "my refund?").await;

    // Grace's socket is open before the note is written (a ping proves the hub knows it).
    let mut grace = Ws::connect(&app, &co.agent).await;
    grace.send(json!({"type": "ping"})).await;
    grace.until("pong").await;
    let mut watcher = Ws::connect(&app, &co.admin).await;
    let (_, last) = watcher.subscribe(conv, None).await;

    let (status, note) = app
        .post(
            "/message",
            Some(&co.admin),
            &json!({"conversationId": conv, "text": "@Grace can you check the refund? @Ada too", "private": true}),
        )
        .await;
    assert_eq!(status, 201, "{note}");
    assert_eq!(note["private"], true);
    assert_eq!(note["direction"], "SENT");
    assert_eq!(note["status"], "DELIVERED");
    let note_id = note["messageId"].as_str().unwrap().to_owned();
    assert_eq!(jobs_for(&app, &note_id).await, 0, "a private note is never queued for the provider");

    // Persisted like any message: message.created with the conversation's next seq.
    let created = watcher.events_until(conv, last + 1).await;
    assert_eq!(created[0]["event"], "message.created");
    assert_eq!(created[0]["data"]["private"], true);

    // Grace is mentioned: a `mention` event on her socket and an item at GET /mentions.
    let mention = next_event(&mut grace, "mention").await;
    assert_eq!(mention["data"]["messageId"], note_id.as_str());
    assert_eq!(mention["data"]["conversationId"], conv);
    assert_eq!(mention["data"]["byId"], admin_id);
    assert_eq!(mention["data"]["byName"], "Admin");
    assert!(mention["seq"].is_null(), "not persisted: {mention}");
    let (status, mine) = app.get("/mentions", Some(&co.agent)).await;
    assert_eq!(status, 200, "{mine}");
    assert_eq!(mine["totalCount"], 1);
    assert_eq!(mine["data"][0]["messageId"], note_id.as_str());
    assert_eq!(mine["data"][0]["content"], "@Grace can you check the refund? @Ada too");
    // The author is not notified, nor another company's Ada.
    let (_, admins) = app.get("/mentions", Some(&co.admin)).await;
    assert_eq!(admins["totalCount"], 0);
    let (_, others) = app.get("/mentions", Some(&other.admin)).await;
    assert_eq!(others["totalCount"], 0);
    let (status, body) = app.get("/mentions?limit=0", Some(&co.agent)).await;
    assert_error(status, &body, 400, "validation_failed");

    // Found by search, shown in the thread with its flag, and the 24-hour window is untouched.
    let (_, hits) = app.get("/message/message-search/refund", Some(&co.agent)).await;
    assert!(
        hits["data"].as_array().unwrap().iter().any(|m| m["messageId"] == note_id.as_str() && m["private"] == true)
    );
    let thread = messages(&app, &co.agent, conv).await;
    assert_eq!(thread.iter().filter(|m| m["private"] == true).count(), 1);
    assert!(thread.iter().filter(|m| m["private"] == false).all(|m| m["direction"] == "RECEIVED"));

    // Notes are text only.
    let (status, body) =
        app.post("/message", Some(&co.agent), &json!({"conversationId": conv, "templateId": 1, "private": true})).await;
    assert_error(status, &body, 400, "validation_failed");

    // Outside the 24-hour window a note is still allowed (free text is not), and it does not
    // open the window.
    let (status, tpl) = app
        .post(
            "/template",
            Some(&co.admin),
            &json!({"name": "hello", "content": "Hello {{1}}", "language": "en_US", "category": "utility"}),
        )
        .await;
    assert_eq!(status, 201, "{tpl}");
    let (status, chat) = app
        .post(
            "/message/new-chat",
            Some(&co.agent),
            &json!({"phone": "+14155550171", "templateId": tpl["templateId"], "params": ["Bo"]}),
        )
        .await;
    assert_eq!(status, 201, "{chat}");
    let closed = chat["conversation"]["conversationId"].as_i64().unwrap();
    let (status, body) =
        app.post("/message", Some(&co.agent), &json!({"conversationId": closed, "text": "free text"})).await;
    assert_error(status, &body, 422, "window_closed");
    let (status, _) = app
        .post(
            "/message",
            Some(&co.agent),
            &json!({"conversationId": closed, "text": "customer asked by phone", "private": true}),
        )
        .await;
    assert_eq!(status, 201);
    let (_, report) = app.get(&format!("/conversation/chat-time-report/{closed}"), Some(&co.agent)).await;
    assert_eq!(report["duration"], 0);
    assert_eq!(report["lastFreeMessageTime"], Value::Null);

    // The WebSocket `send` takes `private` too: the same service, the same rules.
    grace
        .send(json!({"type": "send", "conversationId": conv, "clientId": "note-1", "text": "noted", "private": true}))
        .await;
    let ack = grace.until("ack").await.pop().unwrap();
    let ws_note = ack["messageId"].as_str().unwrap().to_owned();
    assert_eq!(jobs_for(&app, &ws_note).await, 0);
    let thread = messages(&app, &co.agent, conv).await;
    let m = thread.iter().find(|m| m["messageId"] == ws_note.as_str()).unwrap();
    assert_eq!(m["private"], true);
    assert_eq!(m["status"], "DELIVERED");
});

both_backends!(canned_responses_per_company_agents_read_admins_write, |app: TestApp| async move {
    let co = app.default_company().await;
    let other = app.other_company("Canned Elsewhere").await;
    let body = json!({"shortCode": "Thanks", "content": "Thanks {{contact.firstName}}, this is {{agent.firstName}}."});
    let (status, created) = app.post("/canned", Some(&co.admin), &body).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["shortCode"], "thanks", "short codes are lower-cased");
    assert_eq!(created["content"], "Thanks {{contact.firstName}}, this is {{agent.firstName}}.");
    let id = created["cannedId"].as_i64().unwrap();

    // Unique per company (case-insensitively), but another company may use the same code.
    let (status, body_) = app.post("/canned", Some(&co.admin), &json!({"shortCode": "THANKS", "content": "x"})).await;
    assert_error(status, &body_, 409, "canned_exists");
    let (status, _) = app.post("/canned", Some(&other.admin), &body).await;
    assert_eq!(status, 201);

    // Agents read, only admins write.
    let (status, list) = app.get("/canned", Some(&co.agent)).await;
    assert_eq!(status, 200);
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["cannedId"], id);
    let (status, b) = app.post("/canned", Some(&co.agent), &json!({"shortCode": "hi", "content": "Hi"})).await;
    assert_error(status, &b, 403, "forbidden");
    let (status, b) = app.delete(&format!("/canned/{id}"), Some(&co.agent)).await;
    assert_error(status, &b, 403, "forbidden");

    // Bad input is 400 with the field named; another company's row is 404.
    for bad in [
        json!({"shortCode": "", "content": "x"}),
        json!({"shortCode": "a b", "content": "x"}),
        json!({"shortCode": "ok", "content": "  "}),
    ] {
        let (status, b) = app.post("/canned", Some(&co.admin), &bad).await;
        assert_error(status, &b, 400, "validation_failed");
    }
    let (status, b) = app.post("/canned", Some(&co.admin), &json!({"shortCode": "ok"})).await;
    assert_error(status, &b, 400, "invalid_json");
    let (status, b) =
        app.put(&format!("/canned/{id}"), Some(&other.admin), &json!({"shortCode": "x", "content": "y"})).await;
    assert_error(status, &b, 404, "not_found");
    let (status, b) = app.delete("/canned/not-a-number", Some(&co.admin)).await;
    assert_eq!(status, 400, "{b}");

    // Update, clash on update, delete.
    let (status, second) = app.post("/canned", Some(&co.admin), &json!({"shortCode": "bye", "content": "Bye!"})).await;
    assert_eq!(status, 201);
    let (status, updated) =
        app.put(&format!("/canned/{id}"), Some(&co.admin), &json!({"shortCode": "thx", "content": "Thank you!"})).await;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(updated["shortCode"], "thx");
    let (status, b) = app
        .put(&format!("/canned/{}", second["cannedId"]), Some(&co.admin), &json!({"shortCode": "thx", "content": "x"}))
        .await;
    assert_error(status, &b, 409, "canned_exists");
    let (status, _) = app.delete(&format!("/canned/{id}"), Some(&co.admin)).await;
    assert_eq!(status, 204);
    let (status, b) = app.delete(&format!("/canned/{id}"), Some(&co.admin)).await;
    assert_error(status, &b, 404, "not_found");
    let (_, list) = app.get("/canned", Some(&co.agent)).await;
    assert_eq!(list.as_array().unwrap().iter().map(|c| c["shortCode"].clone()).collect::<Vec<_>>(), vec![json!("bye")]);
    let (_, others) = app.get("/canned", Some(&other.agent)).await;
    assert_eq!(others[0]["shortCode"], "thanks");
});

/// Moves a message's creation time `minutes` into the past (edits are allowed for 15).
async fn age_message(app: &TestApp, message_id: &str, minutes: i64) {
    let id = message_id.to_owned();
    app.state
        .db
        .write(move |c| {
            use confab::core::db::schema::messages;
            use diesel::prelude::*;
            diesel::update(messages::table.filter(messages::id.eq(id)))
                .set(messages::created_at.eq(confab::core::types::now() - chrono::Duration::minutes(minutes)))
                .execute(c)?;
            Ok(())
        })
        .await
        .unwrap();
}

both_backends!(agents_edit_their_messages_and_delete_notes, |app: TestApp| async move {
    let co = app.default_company().await;
    let other = app.other_company("Edits Elsewhere").await;
    let conv = app.customer_says(&co, "+14155550180", "where is my parcel").await;
    let (status, sent) =
        app.post("/message", Some(&co.agent), &json!({"conversationId": conv, "text": "It shiped"})).await;
    assert_eq!(status, 201);
    let id = sent["messageId"].as_str().unwrap().to_owned();
    let mut ws = Ws::connect(&app, &co.admin).await;
    let (_, last) = ws.subscribe(conv, Some(0)).await;

    // Edit within 15 minutes: the agents' view changes (editedAt), a message.updated follows.
    let (status, edited) = app.patch(&format!("/message/{id}"), Some(&co.agent), &json!({"text": "It shipped"})).await;
    assert_eq!(status, 200, "{edited}");
    assert_eq!(edited["content"], "It shipped");
    assert!(edited["editedAt"].is_string());
    let update = loop {
        let f = next_event(&mut ws, "message.updated").await;
        if f["data"]["editedAt"].is_string() {
            break f;
        }
    };
    assert!(update["seq"].as_i64().unwrap() > last);
    assert_eq!(update["data"]["messageId"], id.as_str());
    let (_, hits) = app.get("/message/message-search/shipped", Some(&co.agent)).await;
    assert_eq!(hits["totalCount"], 1, "search follows the edit");

    // Only the sender, only text, only for 15 minutes, only valid text.
    let (status, b) = app.patch(&format!("/message/{id}"), Some(&co.admin), &json!({"text": "x"})).await;
    assert_error(status, &b, 422, "not_editable");
    let (_, thread) = app.get(&format!("/message/message-page-list/{conv}"), Some(&co.agent)).await;
    let inbound = thread["data"].as_array().unwrap().iter().find(|m| m["direction"] == "RECEIVED").unwrap().clone();
    let (status, b) = app
        .patch(&format!("/message/{}", inbound["messageId"].as_str().unwrap()), Some(&co.agent), &json!({"text": "x"}))
        .await;
    assert_error(status, &b, 422, "not_editable");
    let (status, b) = app.patch(&format!("/message/{id}"), Some(&co.agent), &json!({"text": " "})).await;
    assert_error(status, &b, 400, "validation_failed");
    let (status, b) = app.patch(&format!("/message/{id}"), Some(&other.agent), &json!({"text": "x"})).await;
    assert_error(status, &b, 404, "not_found");
    let (status, b) =
        app.patch("/message/0123456789abcdef0123456789abcdef", Some(&co.agent), &json!({"text": "x"})).await;
    assert_error(status, &b, 404, "not_found");
    age_message(&app, &id, 16).await;
    let (status, b) = app.patch(&format!("/message/{id}"), Some(&co.agent), &json!({"text": "late"})).await;
    assert_error(status, &b, 422, "edit_window_passed");

    // What reached the provider cannot be deleted.
    app.wait_for_message_status(&co.agent, conv, &id, "DELIVERED").await;
    let (status, b) = app.delete(&format!("/message/{id}"), Some(&co.agent)).await;
    assert_error(status, &b, 422, "not_deletable");

    // A private note: edited by its author, deleted by an admin, gone for everyone.
    let (_, note) = app
        .post(
            "/message",
            Some(&co.agent),
            &json!({"conversationId": conv, "text": "refund approved by @Admin", "private": true}),
        )
        .await;
    let note_id = note["messageId"].as_str().unwrap().to_owned();
    let (status, b) = app.delete(&format!("/message/{note_id}"), Some(&other.admin)).await;
    assert_error(status, &b, 404, "not_found");
    let (status, deleted) = app.delete(&format!("/message/{note_id}"), Some(&co.admin)).await;
    assert_eq!(status, 200, "{deleted}");
    assert_eq!(deleted["deleted"], true);
    assert_eq!(deleted["content"], Value::Null);
    assert_eq!(deleted["private"], true);
    let seq_before = loop {
        let f = next_event(&mut ws, "message.updated").await;
        if f["data"]["messageId"] == note_id.as_str() && f["data"]["deleted"] == true {
            break f["seq"].clone();
        }
    };
    let (status, again) = app.delete(&format!("/message/{note_id}"), Some(&co.agent)).await;
    assert_eq!(status, 200, "deleting twice answers the deleted message: {again}");
    let (status, b) = app.patch(&format!("/message/{note_id}"), Some(&co.agent), &json!({"text": "x"})).await;
    assert_error(status, &b, 422, "message_deleted");
    let (_, hits) = app.get("/message/message-search/approved", Some(&co.agent)).await;
    assert_eq!(hits["totalCount"], 0);
    let (_, mentions) = app.get("/mentions", Some(&co.admin)).await;
    assert_eq!(mentions["data"][0]["content"], Value::Null, "the mention shows the note as it is now");
    // No second message.updated for the repeated delete: the next event is the next change.
    let (_, n2) = app
        .post("/message", Some(&co.agent), &json!({"conversationId": conv, "text": "marker", "private": true}))
        .await;
    let next = next_event(&mut ws, "message.created").await;
    assert_eq!(next["data"]["messageId"], n2["messageId"]);
    assert_eq!(next["seq"].as_i64().unwrap(), seq_before.as_i64().unwrap() + 1);
});

/// An RFC 3339 time `secs` from now.
fn in_secs(secs: i64) -> String {
    (chrono::Utc::now() + chrono::Duration::seconds(secs)).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The conversation as the list shows it.
async fn conversation(app: &TestApp, token: &str, id: i64) -> Value {
    let (status, list) = app.get("/conversation/conversation-page-list?limit=100", Some(token)).await;
    assert_eq!(status, 200, "{list}");
    list["data"].as_array().unwrap().iter().find(|c| c["conversationId"] == id).unwrap().clone()
}

/// Polls (bounded, generously) until the conversation has `status`.
async fn wait_for_conversation_status(app: &TestApp, token: &str, id: i64, status: &str) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let conv = conversation(app, token, id).await;
        if conv["status"] == status {
            return conv;
        }
        assert!(std::time::Instant::now() < deadline, "conversation {id} never became {status}: {conv}");
        actix_web::rt::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// The persisted events of a conversation after `after_seq`: (seq, kind, data).
async fn stored_events(app: &TestApp, conv: i64, after_seq: i64) -> Vec<(i64, String, Value)> {
    app.state
        .db
        .run(move |c| {
            use confab::core::db::schema::events;
            use diesel::prelude::*;
            let rows: Vec<(i64, String, String)> = events::table
                .filter(events::conversation_id.eq(conv).and(events::seq.gt(after_seq)))
                .order(events::seq)
                .select((events::seq, events::kind, events::payload))
                .load(c)?;
            Ok(rows.into_iter().map(|(s, k, p)| (s, k, serde_json::from_str(&p).unwrap())).collect())
        })
        .await
        .unwrap()
}

both_backends!(snooze_reopens_once_at_its_time_or_at_the_next_customer_message, |app: TestApp| async move {
    let co = app.default_company().await;
    let other = app.other_company("Snooze Elsewhere").await;
    let conv = app.customer_says(&co, "+14155550190", "call me tomorrow").await;
    let mut ws = Ws::connect(&app, &co.admin).await;
    let (_, last) = ws.subscribe(conv, None).await;

    // Bad input is 400 naming the field; another company's conversation is 404.
    let path = format!("/conversation/{conv}");
    for (body, field) in [
        (json!({"status": "snoozed", "snoozedUntil": "tomorrow"}), "snoozedUntil"),
        (json!({"status": "snoozed", "snoozedUntil": in_secs(2 * 366 * 86400)}), "snoozedUntil"),
        (json!({"status": "open", "snoozedUntil": in_secs(60)}), "snoozedUntil"),
        (json!({"status": "asleep"}), "status"),
    ] {
        let (status, b) = app.patch(&path, Some(&co.agent), &body).await;
        assert_error(status, &b, 400, "validation_failed");
        assert!(b["fields"][field].is_string(), "{b}");
    }
    let (status, b) =
        app.patch(&path, Some(&other.agent), &json!({"status": "snoozed", "snoozedUntil": in_secs(3600)})).await;
    assert_error(status, &b, 404, "not_found");

    // Snoozed for an hour: the view says until when, conversation.updated has the next seq.
    let (status, snoozed) =
        app.patch(&path, Some(&co.agent), &json!({"status": "snoozed", "snoozedUntil": in_secs(3600)})).await;
    assert_eq!(status, 200, "{snoozed}");
    assert_eq!(snoozed["status"], "snoozed");
    assert!(snoozed["snoozedUntil"].is_string(), "{snoozed}");
    let ev = ws.events_until(conv, last + 1).await;
    assert_eq!(ev[0]["event"], "conversation.updated");
    assert_eq!(ev[0]["data"]["status"], "snoozed");
    let (_, snoozed_list) = app.get("/conversation/conversation-page-list?status=snoozed", Some(&co.agent)).await;
    assert_eq!(snoozed_list["totalCount"], 1);

    // The customer writes: the snooze ends at once (message.created, then conversation.updated).
    app.customer_says(&co, "+14155550190", "actually, now is fine").await;
    let ev = ws.events_until(conv, last + 3).await;
    assert_eq!(ev[0]["event"], "message.created");
    assert_eq!(ev[1]["event"], "conversation.updated");
    assert_eq!(ev[1]["data"]["status"], "open");
    assert_eq!(ev[1]["data"]["snoozedUntil"], Value::Null);
    let open = conversation(&app, &co.agent, conv).await;
    assert_eq!(open["status"], "open");
    assert_eq!(open["snoozedUntil"], Value::Null);

    // Snoozed until the next message only (no time): nothing reopens it by itself.
    let (status, b) = app.patch(&path, Some(&co.agent), &json!({"status": "snoozed"})).await;
    assert_eq!(status, 200, "{b}");
    assert_eq!(b["snoozedUntil"], Value::Null);

    // A time already past: the worker reopens it, once, with conversation.updated.
    let (status, b) =
        app.patch(&path, Some(&co.agent), &json!({"status": "snoozed", "snoozedUntil": in_secs(-5)})).await;
    assert_eq!(status, 200, "{b}");
    let from = b["lastSeq"].as_i64().unwrap();
    let reopened = wait_for_conversation_status(&app, &co.agent, conv, "open").await;
    assert_eq!(reopened["snoozedUntil"], Value::Null);
    let ev = ws.events_until(conv, from + 1).await;
    assert_eq!(ev.last().unwrap()["event"], "conversation.updated");
    assert_eq!(ev.last().unwrap()["data"]["status"], "open");

    // A snooze a second ahead, set on a node that then stops: two other nodes started later
    // on the same database reopen it exactly once between them.
    let b_node = TestApp::start(app.backend, app.config.clone(), app.dir.clone(), app.pg.clone()).await;
    app.stop().await;
    let (status, b) =
        b_node.patch(&path, Some(&co.agent), &json!({"status": "snoozed", "snoozedUntil": in_secs(1)})).await;
    assert_eq!(status, 200, "{b}");
    let from = b["lastSeq"].as_i64().unwrap();
    b_node.stop().await;
    let c_node = TestApp::start(app.backend, app.config.clone(), app.dir.clone(), app.pg.clone()).await;
    let d_node = TestApp::start(app.backend, app.config.clone(), app.dir.clone(), app.pg.clone()).await;
    wait_for_conversation_status(&c_node, &co.agent, conv, "open").await;
    // Both nodes poll the outbox; the job is finished, so neither reopens it again.
    let done = c_node
        .state
        .db
        .run(move |c| {
            use confab::core::db::schema::outbox;
            use diesel::prelude::*;
            Ok(outbox::table
                .filter(outbox::kind.eq("unsnooze").and(outbox::ref_id.eq(conv.to_string())))
                .filter(outbox::done_at.is_null())
                .count()
                .get_result::<i64>(c)?)
        })
        .await
        .unwrap();
    assert_eq!(done, 1, "only the hour-long snooze's job is left (it will change nothing)");
    let reopens: Vec<_> = stored_events(&c_node, conv, from)
        .await
        .into_iter()
        .filter(|(_, kind, data)| kind == "conversation.updated" && data["status"] == "open")
        .collect();
    assert_eq!(reopens.len(), 1, "{reopens:?}");
    d_node.stop().await;
    c_node.stop().await;
});

/// Moves the conversation's 24-hour window into the past (the customer wrote 25 hours ago).
async fn close_window(app: &TestApp, conv: i64) {
    app.state
        .db
        .write(move |c| {
            use confab::core::db::schema::conversations;
            use diesel::prelude::*;
            let long_ago = confab::core::types::now() - chrono::Duration::hours(25);
            diesel::update(conversations::table.find(conv))
                .set(conversations::last_free_message_time.eq(long_ago))
                .execute(c)?;
            Ok(())
        })
        .await
        .unwrap();
}

/// (kind, finished) of the outbox jobs of a message.
async fn jobs_of(app: &TestApp, message_id: &str) -> Vec<(String, bool)> {
    let id = message_id.to_owned();
    app.state
        .db
        .run(move |c| {
            use confab::core::db::schema::outbox;
            use diesel::prelude::*;
            let rows: Vec<(String, Option<chrono::NaiveDateTime>)> = outbox::table
                .filter(outbox::ref_id.eq(id))
                .order(outbox::id)
                .select((outbox::kind, outbox::done_at))
                .load(c)?;
            Ok(rows.into_iter().map(|(k, d)| (k, d.is_some())).collect())
        })
        .await
        .unwrap()
}

/// The statuses a message moved through, from its stored events (`message.created` first).
async fn status_trail(app: &TestApp, conv: i64, message_id: &str) -> Vec<String> {
    stored_events(app, conv, 0)
        .await
        .into_iter()
        .filter(|(_, kind, data)| kind.starts_with("message.") && data["messageId"] == message_id)
        .map(|(_, _, data)| data["status"].as_str().unwrap().to_owned())
        .collect()
}

async fn template(app: &TestApp, co: &Company, name: &str, content: &str) -> i64 {
    let (status, tpl) = app
        .post(
            "/template",
            Some(&co.admin),
            &json!({"name": name, "content": content, "language": "en_US", "category": "utility"}),
        )
        .await;
    assert_eq!(status, 201, "{tpl}");
    tpl["templateId"].as_i64().unwrap()
}

both_backends!(scheduled_sends_wait_can_be_cancelled_and_meet_the_window_at_their_time, |app: TestApp| async move {
    let co = app.default_company().await;
    let other = app.other_company("Schedule Elsewhere").await;
    let conv = app.customer_says(&co, "+14155550210", "send me the invoice tomorrow").await;
    let tid = template(&app, &co, "invoice_ready", "Hi {{1}}, your invoice is ready").await;
    let other_tid = template(&app, &other, "elsewhere", "Hello").await;
    let mut ws = Ws::connect(&app, &co.admin).await;
    let (_, last) = ws.subscribe(conv, None).await;

    // Bad input is 400 naming the field (422 for a fallback's wrong param count).
    let text = |extra: Value| {
        let mut b = json!({"conversationId": conv, "text": "your invoice"});
        b.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        b
    };
    for (body, field) in [
        (text(json!({"sendAt": "tomorrow"})), "sendAt"),
        (text(json!({"sendAt": in_secs(-60)})), "sendAt"),
        (text(json!({"sendAt": in_secs(2 * 366 * 86400)})), "sendAt"),
        (text(json!({"sendAt": in_secs(3600), "private": true})), "sendAt"),
        (text(json!({"fallbackTemplateId": tid, "params": ["Ada"]})), "fallbackTemplateId"),
        (text(json!({"sendAt": in_secs(3600), "fallbackTemplateId": other_tid})), "fallbackTemplateId"),
        (
            json!({"conversationId": conv, "templateId": tid, "params": ["Ada"], "sendAt": in_secs(3600), "fallbackTemplateId": tid}),
            "fallbackTemplateId",
        ),
    ] {
        let (status, b) = app.post("/message", Some(&co.agent), &body).await;
        assert_error(status, &b, 400, "validation_failed");
        assert!(b["fields"][field].is_string(), "{body} -> {b}");
    }
    let (status, b) =
        app.post("/message", Some(&co.agent), &text(json!({"sendAt": in_secs(3600), "fallbackTemplateId": tid}))).await;
    assert_error(status, &b, 422, "template_params");
    let (status, b) = app.post("/message", Some(&other.agent), &text(json!({"sendAt": in_secs(3600)}))).await;
    assert_error(status, &b, 404, "not_found");

    // Scheduled an hour ahead: 201 SCHEDULED with its time, message.created with the next seq,
    // one job due then and no send; DELETE cancels it (message.updated, the job closed).
    let (status, later) = app.post("/message", Some(&co.agent), &text(json!({"sendAt": in_secs(3600)}))).await;
    assert_eq!(status, 201, "{later}");
    assert_eq!(later["status"], "SCHEDULED");
    assert!(later["sendAt"].is_string(), "{later}");
    let id = later["messageId"].as_str().unwrap().to_owned();
    let ev = ws.events_until(conv, last + 1).await;
    assert_eq!(ev[0]["event"], "message.created");
    assert_eq!(ev[0]["data"]["status"], "SCHEDULED");
    assert_eq!(jobs_of(&app, &id).await, vec![("scheduled_send".to_owned(), false)]);
    let (status, b) = app.delete(&format!("/message/{id}"), Some(&other.agent)).await;
    assert_error(status, &b, 404, "not_found");
    let (status, cancelled) = app.delete(&format!("/message/{id}"), Some(&co.agent)).await;
    assert_eq!(status, 200, "{cancelled}");
    assert_eq!(cancelled["deleted"], true);
    assert_eq!(cancelled["status"], "SCHEDULED");
    let ev = ws.events_until(conv, last + 2).await;
    assert_eq!(ev[0]["event"], "message.updated");
    assert_eq!(ev[0]["data"]["deleted"], true);
    assert_eq!(jobs_of(&app, &id).await, vec![("scheduled_send".to_owned(), true)]);

    // Over the WebSocket, a second ahead, window open: at its time message.updated PENDING,
    // then the send (SENT, DELIVERED), each with the next seq.
    ws.send(json!({"type": "send", "conversationId": conv, "clientId": "sched-1", "text": "on its way",
                   "sendAt": in_secs(1)}))
        .await;
    // The message.created frame may come before or after the ack.
    let mut frames = ws.until("ack").await;
    let ack = frames.pop().unwrap();
    let id = ack["messageId"].as_str().unwrap().to_owned();
    let done = app.wait_for_message_status(&co.agent, conv, &id, "DELIVERED").await;
    assert!(done["sendAt"].is_string());
    assert_eq!(status_trail(&app, conv, &id).await, ["SCHEDULED", "PENDING", "SENT", "DELIVERED"]);
    let seq = ack["seq"].as_i64().unwrap();
    let early: Vec<Value> = frames.into_iter().filter(|f| f["type"] == "event" && f["seq"] == seq).collect();
    let ev = [early, ws.events_until(conv, seq + 3).await].concat();
    assert_eq!(ev.iter().map(|e| e["seq"].as_i64().unwrap()).collect::<Vec<_>>(), [seq, seq + 1, seq + 2, seq + 3]);
    assert_eq!(
        ev.iter().map(|e| e["data"]["status"].as_str().unwrap()).collect::<Vec<_>>(),
        ["SCHEDULED", "PENDING", "SENT", "DELIVERED"]
    );
    assert_eq!(jobs_of(&app, &id).await, vec![("scheduled_send".to_owned(), true), ("send".to_owned(), true)]);
    // A bad sendAt over the socket is an error frame naming the clientId.
    ws.send(json!({"type": "send", "conversationId": conv, "clientId": "sched-bad", "text": "x", "sendAt": "soon"}))
        .await;
    let err = ws.until("error").await.pop().unwrap();
    assert_eq!(err["clientId"], "sched-bad");
    assert_eq!(err["code"], "validation_failed");

    // The window has closed by its time: without a fallback it fails window_closed, which
    // the agent sees on the message; with one, the template goes instead.
    close_window(&app, conv).await;
    let (status, lost) = app.post("/message", Some(&co.agent), &text(json!({"sendAt": in_secs(1)}))).await;
    assert_eq!(status, 201, "{lost}");
    let lost_id = lost["messageId"].as_str().unwrap();
    let failed = app.wait_for_message_status(&co.agent, conv, lost_id, "FAILED").await;
    assert_eq!(failed["errorCode"], "window_closed");
    assert_eq!(failed["content"], "your invoice", "the agent still sees what was not sent");
    assert_eq!(status_trail(&app, conv, lost_id).await, ["SCHEDULED", "FAILED"]);
    assert_eq!(jobs_of(&app, lost_id).await, vec![("scheduled_send".to_owned(), true)]);
    let (status, saved) = app
        .post(
            "/message",
            Some(&co.agent),
            &text(json!({"sendAt": in_secs(1), "fallbackTemplateId": tid, "params": ["Ada"]})),
        )
        .await;
    assert_eq!(status, 201, "{saved}");
    assert_eq!(saved["fallbackTemplateId"], tid);
    let saved_id = saved["messageId"].as_str().unwrap();
    let sent = app.wait_for_message_status(&co.agent, conv, saved_id, "DELIVERED").await;
    assert_eq!(sent["content"], "Hi Ada, your invoice is ready");
    assert_eq!(sent["templateId"], tid);
    assert_eq!(status_trail(&app, conv, saved_id).await, ["SCHEDULED", "PENDING", "SENT", "DELIVERED"]);
});

/// A server with a WhatsApp Cloud API channel on a mock, and the conversation a customer opened
/// with `text` (provider id `wamid`); `None` (skipped) when the backend is not configured.
async fn whatsapp_conversation(
    backend: Backend,
    wamid: &str,
    text: &str,
) -> Option<(crate::webhooks::Mock, TestApp, Company, i64)> {
    use crate::webhooks::{APP_SECRET, Mock, PNID, conversation_of, wa_post, wa_text, whatsapp_channel};
    let mock = Mock::start().await;
    let Some(app) = TestApp::spawn_with(backend, mock.operator(crate::webhooks::fast)).await else {
        eprintln!("skipped: CONFAB_TEST_DATABASE_URL is not set");
        return None;
    };
    let co = app.default_company().await;
    let channel = whatsapp_channel(&app, &co, &mock, PNID, APP_SECRET).await;
    let inbound = wa_text(PNID, "14155550123", wamid, text);
    let (status, body) = wa_post(&app, APP_SECRET, &serde_json::to_vec(&inbound).unwrap()).await;
    assert_eq!(status, 200, "{body}");
    let conv = conversation_of(&app, &co, channel).await;
    Some((mock, app, co, conv))
}

/// A scheduled send on the WhatsApp Cloud API (the mock counts what reaches it): a node takes
/// it and stops before its time; two nodes started later on the same database send it exactly
/// once between them. Then a fallback template goes out on the wire as a template message.
async fn scheduled_send_survives_a_restart_and_falls_back_on_the_wire(backend: Backend) {
    let Some((mock, app, co, conv)) = whatsapp_conversation(backend, "wamid.in-sched-1", "ping me at noon").await
    else {
        return;
    };
    let tid = template(&app, &co, "noon_ping", "Hello {{1}}, as promised").await;

    let b_node = TestApp::start(app.backend, app.config.clone(), app.dir.clone(), app.pg.clone()).await;
    app.stop().await;
    let (status, later) = b_node
        .post("/message", Some(&co.agent), &json!({"conversationId": conv, "text": "it is noon", "sendAt": in_secs(2)}))
        .await;
    assert_eq!(status, 201, "{later}");
    assert_eq!(later["status"], "SCHEDULED");
    let id = later["messageId"].as_str().unwrap().to_owned();
    b_node.stop().await;
    actix_web::rt::time::sleep(std::time::Duration::from_secs(2)).await;
    assert!(mock.seen().is_empty(), "nothing went out while no node ran");
    let c_node = TestApp::start(app.backend, app.config.clone(), app.dir.clone(), app.pg.clone()).await;
    let d_node = TestApp::start(app.backend, app.config.clone(), app.dir.clone(), app.pg.clone()).await;
    c_node.wait_for_message_status(&co.agent, conv, &id, "SENT").await;
    // Both nodes keep polling the outbox for a while: still one request.
    actix_web::rt::time::sleep(std::time::Duration::from_secs(3)).await;
    let sends: Vec<Value> = mock.seen().iter().filter(|s| s.path.ends_with("/messages")).map(|s| s.json()).collect();
    assert_eq!(sends.len(), 1, "{sends:?}");
    assert_eq!(sends[0]["type"], "text");
    assert_eq!(sends[0]["text"]["body"], "it is noon");
    assert_eq!(status_trail(&c_node, conv, &id).await, ["SCHEDULED", "PENDING", "SENT"]);
    d_node.stop().await;

    // The window has closed by the time: the fallback template is what WhatsApp gets.
    close_window(&c_node, conv).await;
    let (status, saved) = c_node
        .post(
            "/message",
            Some(&co.agent),
            &json!({"conversationId": conv, "text": "free text no longer allowed", "sendAt": in_secs(1),
                    "fallbackTemplateId": tid, "params": ["Sheena"]}),
        )
        .await;
    assert_eq!(status, 201, "{saved}");
    let saved_id = saved["messageId"].as_str().unwrap();
    let sent = c_node.wait_for_message_status(&co.agent, conv, saved_id, "SENT").await;
    assert_eq!(sent["content"], "Hello Sheena, as promised");
    let body = mock.wait_for_requests(2).await[1].json();
    assert_eq!(body["type"], "template", "{body}");
    assert_eq!(body["template"]["name"], "noon_ping");
    assert_eq!(
        body["template"]["components"],
        json!([{"type": "body", "parameters": [{"type": "text", "text": "Sheena"}]}])
    );
    c_node.stop().await;
}

per_backend!(scheduled_send_survives_a_restart_and_falls_back_on_the_wire);

/// A customer's reaction through the sandbox webhook (WhatsApp `reaction`): `emoji` on the
/// message with provider id `target` (`""` removes it).
async fn customer_reacts(app: &TestApp, co: &Company, from: &str, target: &str, emoji: &str) -> Value {
    let id = format!("sb-react-{}", confab::core::crypto::random_hex_id());
    let (status, body) = app
        .sandbox_webhook(
            co,
            &json!({"channelId": co.channel_id, "messages": [{"id": id, "from": from, "text": emoji, "reactsTo": target}]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

both_backends!(reactions_attach_to_their_message_from_customers_and_agents, |app: TestApp| async move {
    let co = app.default_company().await;
    let other = app.other_company("React Elsewhere").await;
    let from = "+14155550230";
    let conv = app.customer_says(&co, from, "is it in stock?").await;
    let (status, reply) =
        app.post("/message", Some(&co.agent), &json!({"conversationId": conv, "text": "Yes, two left"})).await;
    assert_eq!(status, 201, "{reply}");
    let reply_id = reply["messageId"].as_str().unwrap().to_owned();
    app.wait_for_message_status(&co.agent, conv, &reply_id, "DELIVERED").await;
    let mut ws = Ws::connect(&app, &co.admin).await;
    let (_, last) = ws.subscribe(conv, None).await;

    // The customer reacts to the agent's reply (its provider id): no new message, the reply
    // carries the reaction, message.updated with the next seq.
    let provider_id = format!("sandbox-{reply_id}");
    let body = customer_reacts(&app, &co, from, &provider_id, "❤️").await;
    assert_eq!(body["received"], 0, "{body}");
    let ev = ws.events_until(conv, last + 1).await;
    assert_eq!(ev[0]["event"], "message.updated");
    assert_eq!(ev[0]["data"]["messageId"], reply_id.as_str());
    assert_eq!(ev[0]["data"]["reactions"], json!([{"emoji": "❤️", "by": "customer"}]));
    let list = messages(&app, &co.agent, conv).await;
    assert_eq!(list.len(), 2, "a reaction is not a message: {list:?}");
    // The same notice again changes nothing (no event); a new emoji replaces it.
    customer_reacts(&app, &co, from, &provider_id, "❤️").await;
    customer_reacts(&app, &co, from, &provider_id, "👍").await;
    let ev = ws.events_until(conv, last + 2).await;
    assert_eq!(ev[0]["seq"], last + 2);
    assert_eq!(ev[0]["data"]["reactions"], json!([{"emoji": "👍", "by": "customer"}]));
    // A reaction on a message never received is ignored.
    customer_reacts(&app, &co, from, "sandbox-unknown", "😮").await;

    // An agent reacts to the customer's message: {emoji, by: agentId}; one per agent,
    // replaced by the next, removed by "".
    let customer_msg =
        list.iter().find(|m| m["direction"] == "RECEIVED").unwrap()["messageId"].as_str().unwrap().to_owned();
    let path = format!("/message/{customer_msg}/reaction");
    for bad in ["thumbs up", "🙂🙂🙂🙂🙂🙂🙂🙂🙂🙂🙂🙂🙂🙂🙂🙂🙂"] {
        let (status, b) = app.post(&path, Some(&co.agent), &json!({"emoji": bad})).await;
        assert_error(status, &b, 400, "validation_failed");
        assert!(b["fields"]["emoji"].is_string(), "{b}");
    }
    let (status, b) = app.post(&path, Some(&other.agent), &json!({"emoji": "👍"})).await;
    assert_error(status, &b, 404, "not_found");
    let (status, reacted) = app.post(&path, Some(&co.agent), &json!({"emoji": "🙏"})).await;
    assert_eq!(status, 200, "{reacted}");
    assert_eq!(reacted["reactions"], json!([{"emoji": "🙏", "by": co.agent_id}]));
    let (status, both) = app.post(&path, Some(&co.admin), &json!({"emoji": "🙏"})).await;
    assert_eq!(status, 200, "{both}");
    assert_eq!(both["reactions"].as_array().unwrap().len(), 2, "{both}");
    let ev = ws.events_until(conv, last + 4).await;
    assert_eq!(
        ev.iter().map(|e| e["event"].as_str().unwrap()).collect::<Vec<_>>(),
        ["message.updated", "message.updated"]
    );
    let (status, removed) = app.post(&path, Some(&co.agent), &json!({"emoji": ""})).await;
    assert_eq!(status, 200, "{removed}");
    assert_eq!(removed["reactions"].as_array().unwrap().len(), 1, "{removed}");
    assert_eq!(removed["reactions"][0]["by"].as_i64(), Some(me(&app, &co.admin).await));
    // The customer removes theirs (an empty emoji, as WhatsApp sends without one).
    customer_reacts(&app, &co, from, &provider_id, "").await;
    let ev = ws.events_until(conv, last + 6).await;
    assert_eq!(ev.last().unwrap()["data"]["messageId"], reply_id.as_str());
    assert_eq!(ev.last().unwrap()["data"]["reactions"], json!([]));
    // Replayed on resume like any event.
    let mut again = Ws::connect(&app, &co.admin).await;
    let (replayed, _) = again.subscribe(conv, Some(last)).await;
    assert_eq!(replayed.len(), 6, "{replayed:?}");
    // A deleted message takes no reaction.
    let (_, note) =
        app.post("/message", Some(&co.agent), &json!({"conversationId": conv, "text": "gone", "private": true})).await;
    let note_id = note["messageId"].as_str().unwrap();
    app.delete(&format!("/message/{note_id}"), Some(&co.agent)).await;
    let (status, b) = app.post(&format!("/message/{note_id}/reaction"), Some(&co.agent), &json!({"emoji": "👍"})).await;
    assert_error(status, &b, 422, "message_deleted");
});

/// Reactions on the WhatsApp Cloud API: the customer's `reaction` notice attaches to the
/// agent's message by its wamid; an agent's reaction goes out through the outbox in
/// WhatsApp's wire format (and its removal with an empty emoji).
async fn reactions_on_the_whatsapp_wire(backend: Backend) {
    use crate::webhooks::{APP_SECRET, PNID, envelope, unix_now, wa_post};
    let Some((mock, app, co, conv)) =
        whatsapp_conversation(backend, "wamid.in-react-1", "do you ship to Lisbon?").await
    else {
        return;
    };
    let (_, reply) = app.post("/message", Some(&co.agent), &json!({"conversationId": conv, "text": "We do!"})).await;
    let reply_id = reply["messageId"].as_str().unwrap().to_owned();
    app.wait_for_message_status(&co.agent, conv, &reply_id, "SENT").await;
    let wamid = mock.wait_for_requests(1).await[0].wamid.clone().unwrap();

    let reaction = |emoji: Option<&str>| {
        let mut r = json!({"message_id": wamid});
        if let Some(e) = emoji {
            r["emoji"] = json!(e);
        }
        envelope(
            PNID,
            json!({"contacts": [{"profile": {"name": "Sheena Nelson"}, "wa_id": "14155550123"}],
                   "messages": [{"from": "14155550123", "id": format!("wamid.react-{}", emoji.unwrap_or("none")),
                                 "timestamp": unix_now(), "type": "reaction", "reaction": r}]}),
        )
    };
    let (status, body) = wa_post(&app, APP_SECRET, &serde_json::to_vec(&reaction(Some("😮"))).unwrap()).await;
    assert_eq!(status, 200, "{body}");
    let list = messages(&app, &co.agent, conv).await;
    assert_eq!(list.len(), 2, "{list:?}");
    let mine = list.iter().find(|m| m["messageId"] == reply_id.as_str()).unwrap();
    assert_eq!(mine["reactions"], json!([{"emoji": "😮", "by": "customer"}]));
    // Removed: WhatsApp sends the notice without an emoji.
    wa_post(&app, APP_SECRET, &serde_json::to_vec(&reaction(None)).unwrap()).await;
    let list = messages(&app, &co.agent, conv).await;
    assert_eq!(list.iter().find(|m| m["messageId"] == reply_id.as_str()).unwrap()["reactions"], json!([]));

    // The agent reacts to the customer's message: a reaction message on its wamid.
    let theirs = list.iter().find(|m| m["direction"] == "RECEIVED").unwrap()["messageId"].as_str().unwrap().to_owned();
    let (status, b) = app.post(&format!("/message/{theirs}/reaction"), Some(&co.agent), &json!({"emoji": "👍"})).await;
    assert_eq!(status, 200, "{b}");
    let sent = mock.wait_for_requests(2).await[1].json();
    assert_eq!(sent["messaging_product"], "whatsapp");
    assert_eq!(sent["to"], "14155550123");
    assert_eq!(sent["type"], "reaction");
    assert_eq!(sent["reaction"], json!({"message_id": "wamid.in-react-1", "emoji": "👍"}));
    let (status, _) = app.post(&format!("/message/{theirs}/reaction"), Some(&co.agent), &json!({"emoji": ""})).await;
    assert_eq!(status, 200);
    let removed = mock.wait_for_requests(3).await[2].json();
    assert_eq!(removed["reaction"], json!({"message_id": "wamid.in-react-1", "emoji": ""}));
    app.stop().await;
}

per_backend!(reactions_on_the_whatsapp_wire);
