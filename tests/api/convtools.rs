//! Conversation tools (issue 22): private notes and mentions, canned responses, edit and
//! delete, snooze. REST and WebSocket against the real server, on both backends.

use serde_json::{Value, json};

use crate::{both_backends, helpers::*, realtime::Ws};

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
