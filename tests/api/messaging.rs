//! Messaging API (CONTRACT §3, seed 004).

use serde_json::{Value, json};

use crate::{both_backends, helpers::*};

both_backends!(inbound_then_reply_shapes_and_sandbox_delivery, |app: TestApp| async move {
    let co = app.default_company().await;
    let conv = app.customer_says(&co, "+94 71 793 6775", "Does it come in another color?").await;

    let (status, list) = app.get("/conversation/conversation-page-list?page=1&limit=20", Some(&co.agent)).await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["totalCount"], 1);
    assert_eq!(list["page"], 1);
    assert_eq!(list["limit"], 20);
    let item = &list["data"][0];
    for key in ["conversationId", "companyId", "userId", "channelId", "lastUpdateTime", "lastFreeMessageTime", "user"] {
        assert!(item.get(key).is_some(), "seed field {key} missing: {item}");
    }
    assert_eq!(item["user"]["phone"], "+94717936775");
    assert_eq!(item["user"]["firstName"], "Ada");
    assert_eq!(item["user"]["lastName"], "Lovelace");
    assert_eq!(item["status"], "open");
    assert_eq!(item["unreadCount"], 1);
    assert_eq!(item["lastMessage"]["content"], "Does it come in another color?");

    let (status, report) = app.get(&format!("/conversation/chat-time-report/{conv}"), Some(&co.agent)).await;
    assert_eq!(status, 200);
    let duration = report["duration"].as_i64().unwrap();
    assert!((86_000..=86_400).contains(&duration), "{report}");
    assert!(report["comparedTime"].as_str().unwrap().ends_with('Z'));

    let (status, sent) =
        app.post("/message", Some(&co.agent), &json!({"conversationId": conv, "text": "Yes, in blue."})).await;
    assert_eq!(status, 201, "{sent}");
    assert_eq!(sent["status"], "PENDING");
    assert_eq!(sent["direction"], "SENT");
    assert_eq!(sent["content"], "Yes, in blue.");
    assert_eq!(sent["attachments"], json!([]));
    let mid = sent["messageId"].as_str().unwrap();
    assert_eq!(mid.len(), 32);
    assert!(mid.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
    let delivered = app.wait_for_message_status(&co.agent, conv, mid, "DELIVERED").await;
    assert_eq!(delivered["messageId"], mid);

    let (status, page) = app.get(&format!("/message/message-page-list/{conv}?page=1&limit=5"), Some(&co.agent)).await;
    assert_eq!(status, 200);
    assert_eq!(page["totalCount"], 2);
    assert_eq!(page["data"][0]["messageId"], mid, "newest first");
    assert_eq!(page["data"][1]["direction"], "RECEIVED");
    assert!(page["data"][1]["datetime"].as_str().unwrap().ends_with('Z'));
});

/// `CONFAB_SANDBOX_DELAY_MS`: the sandbox provider takes its time to accept a send, as a remote
/// provider does; the send stays `PENDING` until then.
#[actix_web::test]
async fn the_sandbox_provider_answers_after_its_configured_delay() {
    let app = TestApp::spawn_with(Backend::Sqlite, |c| c.sandbox_delay_ms = 1500).await.unwrap();
    let co = app.default_company().await;
    let conv = app.customer_says(&co, "+94 71 793 6775", "Hello?").await;
    let (status, sent) = app.post("/message", Some(&co.agent), &json!({"conversationId": conv, "text": "Hi."})).await;
    assert_eq!(status, 201, "{sent}");
    let mid = sent["messageId"].as_str().unwrap();
    actix_web::rt::time::sleep(std::time::Duration::from_millis(600)).await;
    let (_, page) = app.get(&format!("/message/message-page-list/{conv}?page=1&limit=5"), Some(&co.agent)).await;
    assert_eq!(page["data"][0]["messageId"], mid);
    assert_eq!(page["data"][0]["status"], "PENDING", "handed over before the sandbox's delay: {page}");
    app.wait_for_message_status(&co.agent, conv, mid, "DELIVERED").await;
}

both_backends!(window_closed_rejects_free_text_but_not_templates, |app: TestApp| async move {
    let co = app.default_company().await;
    let (status, created) = app
        .post(
            "/template",
            Some(&co.admin),
            &json!({"name": "shipped", "content": "Your {{1}} order of {{2}} has shipped", "language": "en_US", "category": "utility"}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["category"], "UTILITY");
    let template_id = created["templateId"].as_i64().unwrap();

    // new-chat opens a conversation with no customer message yet: the window is closed.
    let (status, chat) = app
        .post(
            "/message/new-chat",
            Some(&co.agent),
            &json!({"phone": "+1 415 555 0142", "firstName": "Alan", "templateId": template_id, "params": ["big", "shoes"]}),
        )
        .await;
    assert_eq!(status, 201, "{chat}");
    assert_eq!(chat["message"]["content"], "Your big order of shoes has shipped");
    assert_eq!(chat["conversation"]["user"]["phone"], "+14155550142");
    let conv = chat["conversation"]["conversationId"].as_i64().unwrap();

    let (status, body) =
        app.post("/message", Some(&co.agent), &json!({"conversationId": conv, "text": "hello?"})).await;
    assert_error(status, &body, 422, "window_closed");
    let (_, report) = app.get(&format!("/conversation/chat-time-report/{conv}"), Some(&co.agent)).await;
    assert_eq!(report["duration"], 0);
    assert_eq!(report["lastFreeMessageTime"], Value::Null);

    let (status, body) = app
        .post("/message", Some(&co.agent), &json!({"conversationId": conv, "templateId": template_id, "params": ["x"]}))
        .await;
    assert_error(status, &body, 422, "template_params");
    let (status, body) = app
        .post(
            "/message",
            Some(&co.agent),
            &json!({"conversationId": conv, "templateId": template_id, "params": ["a", "b", "c"]}),
        )
        .await;
    assert_error(status, &body, 422, "template_params");
    let (status, body) = app
        .post(
            "/message",
            Some(&co.agent),
            &json!({"conversationId": conv, "type": "template", "templateId": template_id, "params": ["a", "b"]}),
        )
        .await;
    assert_eq!(status, 201, "{body}");

    let (status, list) = app.get("/template", Some(&co.agent)).await;
    assert_eq!(status, 200);
    assert_eq!(list[0]["templateId"], template_id);
    assert_eq!(list[0]["content"], "Your {{1}} order of {{2}} has shipped");
});

both_backends!(client_id_replay_returns_the_same_message_once, |app: TestApp| async move {
    let co = app.default_company().await;
    let conv = app.customer_says(&co, "+14155550150", "hi").await;
    let body = json!({"conversationId": conv, "text": "only once", "clientId": "c-1"});
    let (s1, first) = app.post("/message", Some(&co.agent), &body).await;
    let (s2, second) = app.post("/message", Some(&co.agent), &body).await;
    assert_eq!((s1, s2), (201, 200));
    assert_eq!(first["messageId"], second["messageId"]);
    assert_eq!(second["clientId"], "c-1");
    let (_, page) = app.get(&format!("/message/message-page-list/{conv}"), Some(&co.agent)).await;
    assert_eq!(page["totalCount"], 2, "one inbound, one outbound: {page}");
    let st = app.state.clone();
    let jobs: i64 = st
        .db
        .run(|c| {
            use confab::core::db::schema::outbox;
            use diesel::prelude::*;
            Ok(outbox::table.filter(outbox::kind.eq("send")).count().get_result(c)?)
        })
        .await
        .unwrap();
    assert_eq!(jobs, 1, "no second delivery job");
});

// Issue 21: a clientId repeated inside one group-commit batch is not stored yet when the
// batch's later sends look it up; the unique index catches it and the batch is applied again
// item by item.
// Each of 4 clientIds is sent 6 times at once, with 16 distinct sends among them: every repeat
// gets the one message (201 once, then 200), and each message has one delivery job.
both_backends!(concurrent_repeats_of_a_client_id_store_one_message, |app: TestApp| async move {
    let co = app.default_company().await;
    let conv = app.customer_says(&co, "+14155550152", "hi").await;
    let ids: Vec<String> = (0..4)
        .flat_map(|k| std::iter::repeat_n(format!("rep-{k}"), 6))
        .chain((0..16).map(|i| format!("one-{i}")))
        .collect();
    let sends =
        ids.iter().map(|id| {
            let app = &app;
            let token = co.agent.clone();
            async move {
                app.post("/message", Some(&token), &json!({"conversationId": conv, "text": id, "clientId": id})).await
            }
        });
    let results = futures_util::future::join_all(sends).await;
    let mut by_id: std::collections::HashMap<&str, Vec<(u16, String)>> = Default::default();
    for (id, (status, body)) in ids.iter().zip(&results) {
        assert_eq!(body["clientId"], id.as_str(), "{status} {body}");
        by_id.entry(id).or_default().push((*status, body["messageId"].as_str().unwrap_or_default().to_owned()));
    }
    for (id, answers) in &by_id {
        assert_eq!(answers.iter().filter(|(s, _)| *s == 201).count(), 1, "{id}: {answers:?}");
        assert!(answers.iter().all(|(s, m)| (*s == 201 || *s == 200) && *m == answers[0].1), "{id}: {answers:?}");
    }
    let st = app.state.clone();
    let (messages, jobs): (i64, i64) = st
        .db
        .run(move |c| {
            use confab::core::db::schema::{messages, outbox};
            use diesel::prelude::*;
            let messages = messages::table
                .filter(messages::conversation_id.eq(conv).and(messages::client_id.is_not_null()))
                .count()
                .get_result(c)?;
            let jobs = outbox::table.filter(outbox::kind.eq("send")).count().get_result(c)?;
            Ok((messages, jobs))
        })
        .await
        .unwrap();
    assert_eq!((messages, jobs), (20, 20), "one message and one job per clientId");
});

both_backends!(concurrent_sends_get_gap_free_seqs, |app: TestApp| async move {
    let co = app.default_company().await;
    let conv = app.customer_says(&co, "+14155550151", "hi").await;
    let sends =
        (0..50).map(|i| {
            let app = &app;
            let token = co.agent.clone();
            async move {
                app.post("/message", Some(&token), &json!({"conversationId": conv, "text": format!("m{i}")})).await
            }
        });
    let results = futures_util::future::join_all(sends).await;
    assert!(results.iter().all(|(s, _)| *s == 201), "{results:?}");
    let st = app.state.clone();
    let seqs: Vec<i64> = st
        .db
        .run(move |c| {
            use confab::core::db::schema::events;
            use diesel::prelude::*;
            Ok(events::table
                .filter(events::conversation_id.eq(conv).and(events::kind.eq("message.created")))
                .order(events::seq)
                .select(events::seq)
                .load(c)?)
        })
        .await
        .unwrap();
    assert_eq!(seqs.len(), 51);
    let all: Vec<i64> = st
        .db
        .run(move |c| {
            use confab::core::db::schema::events;
            use diesel::prelude::*;
            Ok(events::table.filter(events::conversation_id.eq(conv)).order(events::seq).select(events::seq).load(c)?)
        })
        .await
        .unwrap();
    assert_eq!(all, (1..=all.len() as i64).collect::<Vec<_>>(), "gap-free and duplicate-free");
});

both_backends!(paging_bounds_order_and_keyset, |app: TestApp| async move {
    let co = app.default_company().await;
    let conv = app.customer_says(&co, "+14155550152", "first").await;
    for i in 0..11 {
        let (s, b) =
            app.post("/message", Some(&co.agent), &json!({"conversationId": conv, "text": format!("n{i}")})).await;
        assert_eq!(s, 201, "{b}");
    }
    for bad in ["limit=0", "limit=101", "page=0", "page=-1", "limit=abc"] {
        let (status, body) = app.get(&format!("/message/message-page-list/{conv}?{bad}"), Some(&co.agent)).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert_eq!(body["statusCode"], 400);
        let (status, _) = app.get(&format!("/conversation/conversation-page-list?{bad}"), Some(&co.agent)).await;
        assert_eq!(status, 400, "{bad}");
    }
    let (status, body) = app.get("/message/message-page-list/not-a-number", Some(&co.agent)).await;
    assert_error(status, &body, 400, "invalid_path");

    let mut by_offset = Vec::new();
    for page in 1..=3 {
        let (_, p) = app.get(&format!("/message/message-page-list/{conv}?page={page}&limit=5"), Some(&co.agent)).await;
        assert_eq!(p["totalCount"], 12);
        by_offset.extend(p["data"].as_array().unwrap().iter().map(|m| m["messageId"].clone()));
    }
    let mut by_keyset = Vec::new();
    let mut before: Option<String> = None;
    loop {
        let url = match &before {
            Some(b) => format!("/message/message-page-list/{conv}?limit=5&before={b}"),
            None => format!("/message/message-page-list/{conv}?limit=5"),
        };
        let (_, p) = app.get(&url, Some(&co.agent)).await;
        let data = p["data"].as_array().unwrap().clone();
        if data.is_empty() {
            break;
        }
        before = Some(data.last().unwrap()["messageId"].as_str().unwrap().to_owned());
        by_keyset.extend(data.iter().map(|m| m["messageId"].clone()));
    }
    assert_eq!(by_offset.len(), 12);
    assert_eq!(by_offset, by_keyset);
    assert_eq!(
        by_offset[0],
        by_offset.iter().max_by_key(|v| v.as_str().unwrap().to_owned()).unwrap().clone(),
        "newest first"
    );
});

both_backends!(search_finds_words_only_in_the_company, |app: TestApp| async move {
    let co = app.default_company().await;
    let other = app.other_company("Rival").await;
    app.customer_says(&co, "+14155550153", "my parcel never arrived").await;
    app.customer_says(&other, "+14155550153", "parcel for the rival").await;
    let (status, found) = app.get("/message/message-search/parcel", Some(&co.agent)).await;
    assert_eq!(status, 200, "{found}");
    assert_eq!(found["totalCount"], 1, "{found}");
    assert_eq!(found["data"][0]["content"], "my parcel never arrived");
    assert!(found["data"][0]["conversationId"].is_i64());
    let (_, none) = app.get("/message/message-search/rival", Some(&co.agent)).await;
    assert_eq!(none["totalCount"], 0);
    let (status, quoted) = app.get("/message/message-search/%22parcel%20never%22%20OR", Some(&co.agent)).await;
    assert_eq!(status, 200, "FTS syntax in the term is just text: {quoted}");
});

// On SQLite messages reach the full-text index after their commit (the indexer's turn, or the
// next search's). Notes edited and deleted both before and after they were indexed leave the
// search, and the index, exactly as the messages are.
both_backends!(search_follows_edits_and_deletions_before_and_after_indexing, |app: TestApp| async move {
    let co = app.default_company().await;
    let conv = app.customer_says(&co, "+14155550161", "a question").await;
    let note = |text: String| {
        let app = &app;
        let agent = co.agent.clone();
        async move {
            let (status, sent) = app
                .post("/message", Some(&agent), &json!({"conversationId": conv, "text": text, "private": true}))
                .await;
            assert_eq!(status, 201, "{sent}");
            sent["messageId"].as_str().unwrap().to_owned()
        }
    };
    let count = |term: &'static str| {
        let app = &app;
        let agent = co.agent.clone();
        async move {
            let (status, hits) = app.get(&format!("/message/message-search/{term}"), Some(&agent)).await;
            assert_eq!(status, 200, "{hits}");
            hits["totalCount"].as_i64().unwrap()
        }
    };
    // Changed at once, before the indexer's next turn (usually): edited, deleted.
    let early: Vec<String> = [note("draft apple".into()).await, note("draft apple".into()).await].into();
    let (status, b) = app.patch(&format!("/message/{}", early[0]), Some(&co.agent), &json!({"text": "kiwi"})).await;
    assert_eq!(status, 200, "{b}");
    let (status, b) = app.delete(&format!("/message/{}", early[1]), Some(&co.agent)).await;
    assert_eq!(status, 200, "{b}");
    // Found as soon as acknowledged, then changed once indexed.
    let late: Vec<String> = [note("later pear".into()).await, note("later pear".into()).await].into();
    assert_eq!((count("apple").await, count("kiwi").await, count("pear").await), (0, 1, 2));
    let (status, b) = app.patch(&format!("/message/{}", late[0]), Some(&co.agent), &json!({"text": "plum"})).await;
    assert_eq!(status, 200, "{b}");
    let (status, b) = app.delete(&format!("/message/{}", late[1]), Some(&co.agent)).await;
    assert_eq!(status, 200, "{b}");
    assert_eq!((count("pear").await, count("plum").await, count("kiwi").await), (0, 1, 1));
    if app.backend == Backend::Sqlite {
        // FTS5 compares its index with the messages table row by row.
        app.state
            .db
            .write(|c| {
                let confab::core::db::Db::Sqlite(conn) = c else { unreachable!() };
                use diesel::connection::SimpleConnection;
                conn.batch_execute("INSERT INTO messages_fts(messages_fts, rank) VALUES ('integrity-check', 1)")?;
                Ok(())
            })
            .await
            .expect("the full-text index matches the messages");
    }
});

both_backends!(tenancy_and_roles, |app: TestApp| async move {
    let co = app.default_company().await;
    let other = app.other_company("Other").await;
    let conv = app.customer_says(&other, "+14155550154", "secret stuff").await;
    for path in [
        format!("/conversation/chat-time-report/{conv}"),
        format!("/message/message-page-list/{conv}"),
        format!("/channel/{}", other.channel_id),
        format!("/agent/{}", other.agent_id),
    ] {
        let token = if path.starts_with("/channel") || path.starts_with("/agent") { &co.admin } else { &co.agent };
        let (status, body) = app.get(&path, Some(token)).await;
        assert_error(status, &body, 404, "not_found");
    }
    let (status, body) = app.post("/message", Some(&co.agent), &json!({"conversationId": conv, "text": "hi"})).await;
    assert_error(status, &body, 404, "not_found");
    let (status, body) =
        app.patch(&format!("/conversation/{conv}"), Some(&co.agent), &json!({"status": "resolved"})).await;
    assert_error(status, &body, 404, "not_found");
    let (_, list) = app.get(&format!("/message/message-page-list/{conv}"), Some(&other.agent)).await;
    let customer_id = list["data"][0]["senderId"].as_i64().unwrap();
    let (status, body) = app.get(&format!("/profile/{customer_id}"), Some(&co.agent)).await;
    assert_error(status, &body, 404, "not_found");

    // Admin routes with an agent's token, agent routes with a customer's token.
    for path in ["/channel", "/agent"] {
        let (status, body) = app.get(path, Some(&co.agent)).await;
        assert_error(status, &body, 403, "forbidden");
    }
    let (status, body) = app
        .post(
            "/template",
            Some(&co.agent),
            &json!({"name": "x", "content": "y", "language": "en_US", "category": "UTILITY"}),
        )
        .await;
    assert_error(status, &body, 403, "forbidden");
    let customer = app.customer_token(other.company_id, customer_id).await;
    for path in ["/conversation/conversation-page-list", "/contact", "/template"] {
        let (status, body) = app.get(path, Some(&customer)).await;
        assert_error(status, &body, 403, "forbidden");
    }
    let (status, body) = app.get("/contact", None).await;
    assert_error(status, &body, 401, "unauthorized");
});

both_backends!(conversation_patch_contacts_and_profile, |app: TestApp| async move {
    let co = app.default_company().await;
    let conv = app.customer_says(&co, "+14155550155", "hello").await;
    let (status, patched) = app
        .patch(
            &format!("/conversation/{conv}"),
            Some(&co.agent),
            &json!({"status": "pending", "assigneeId": co.agent_id, "labels": ["vip", "vip", "billing"]}),
        )
        .await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched["status"], "pending");
    assert_eq!(patched["assigneeId"], co.agent_id);
    assert_eq!(patched["labels"], json!(["billing", "vip"]));
    let (_, mine) =
        app.get(&format!("/conversation/conversation-page-list?assigneeId={}", co.agent_id), Some(&co.agent)).await;
    assert_eq!(mine["totalCount"], 1);
    let (_, unassigned) = app.get("/conversation/conversation-page-list?assigneeId=none", Some(&co.agent)).await;
    assert_eq!(unassigned["totalCount"], 0);
    let (status, body) =
        app.patch(&format!("/conversation/{conv}"), Some(&co.agent), &json!({"status": "closed-ish"})).await;
    assert_error(status, &body, 400, "validation_failed");
    let (status, body) =
        app.patch(&format!("/conversation/{conv}"), Some(&co.agent), &json!({"assigneeId": 999999})).await;
    assert_error(status, &body, 400, "validation_failed");
    let (status, cleared) =
        app.patch(&format!("/conversation/{conv}"), Some(&co.agent), &json!({"assigneeId": null})).await;
    assert_eq!(status, 200);
    assert_eq!(cleared["assigneeId"], Value::Null);

    let (status, contacts) = app.get("/contact?page=1&limit=10", Some(&co.agent)).await;
    assert_eq!(status, 200);
    assert_eq!(contacts["totalCount"], 1);
    let user_id = contacts["data"][0]["userId"].as_i64().unwrap();
    let (_, found) = app.get("/contact/search/5550155", Some(&co.agent)).await;
    assert_eq!(found["data"][0]["userId"], user_id);
    let (_, missing) = app.get("/contact/search/999999", Some(&co.agent)).await;
    assert_eq!(missing["totalCount"], 0);

    let (status, updated) = app
        .put(
            "/contact",
            Some(&co.agent),
            &json!({"userId": user_id, "firstName": "Ada", "lastName": "King", "email": "ada@example.com"}),
        )
        .await;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(updated["lastName"], "King");
    assert_eq!(updated["email"], "ada@example.com");

    app.customer_says(&co, "+14155550156", "another customer").await;
    let (_, found) = app.get("/contact/search/5550156", Some(&co.agent)).await;
    let other_id = found["data"][0]["userId"].as_i64().unwrap();
    let (status, body) =
        app.put("/contact", Some(&co.agent), &json!({"userId": other_id, "email": "ada@example.com"})).await;
    assert_error(status, &body, 409, "contact_exists");
    let (status, body) =
        app.put("/contact", Some(&co.agent), &json!({"userId": other_id, "phone": "+14155550155"})).await;
    assert_error(status, &body, 409, "contact_exists");

    let (status, ok) = app
        .put("/profile", Some(&co.agent), &json!({"userId": user_id.to_string(), "firstName": "madhawa", "lastName": "samarawicrama", "phone": "+94717936775"}))
        .await;
    assert_eq!(status, 200, "{ok}");
    assert_eq!(ok, json!({"status": true, "message": "Profile Update sucessfully"}));
    let (status, profile) = app.get(&format!("/profile/{user_id}"), Some(&co.agent)).await;
    assert_eq!(status, 200);
    assert_eq!(
        profile,
        json!({"userId": user_id, "firstName": "madhawa", "lastName": "samarawicrama", "phone": "+94717936775"})
    );
    let (status, body) = app
        .put(
            "/profile",
            Some(&co.agent),
            &json!({"userId": user_id, "firstName": "a", "lastName": "b", "phone": "nope"}),
        )
        .await;
    assert_error(status, &body, 400, "validation_failed");
    assert!(body["fields"]["phone"].is_string());
});

both_backends!(channels_keep_secrets_write_only_and_agents_can_be_deactivated, |app: TestApp| async move {
    let co = app.default_company().await;
    let (status, ch) = app
        .post(
            "/channel",
            Some(&co.admin),
            &json!({"provider": "whatsapp", "phoneNumber": "+1 555 078 3881", "phoneNumberId": "106540352242922",
                    "displayName": "Support",
                    "accessToken": "EAAG-token", "appSecret": "app_secret", "verifyToken": "verify-me"}),
        )
        .await;
    assert_eq!(status, 201, "{ch}");
    let text = ch.to_string();
    for secret in ["EAAG-token", "app_secret", "verify-me"] {
        assert!(!text.contains(secret), "secret returned: {text}");
    }
    assert_eq!(ch["phoneNumberId"], "106540352242922");
    let st = app.state.clone();
    let stored: String = st
        .db
        .run(|c| {
            use confab::core::db::schema::channels;
            use diesel::prelude::*;
            Ok(channels::table.filter(channels::provider.eq("whatsapp")).select(channels::secrets).first(c)?)
        })
        .await
        .unwrap();
    assert!(!stored.contains("EAAG-token"), "secrets are encrypted at rest");
    let (status, body) = app
        .post(
            "/channel",
            Some(&co.admin),
            &json!({"provider": "whatsapp", "phoneNumber": "+15550783881", "phoneNumberId": "1", "displayName": "x"}),
        )
        .await;
    assert_error(status, &body, 400, "validation_failed");
    let (status, body) = app
        .post(
            "/channel",
            Some(&co.admin),
            &json!({"provider": "carrier-pigeon", "phoneNumber": "+15550783881", "displayName": "x"}),
        )
        .await;
    assert_error(status, &body, 400, "validation_failed");

    let (status, agents) = app.get("/agent", Some(&co.admin)).await;
    assert_eq!(status, 200);
    assert_eq!(agents.as_array().unwrap().len(), 2);
    // The invitation was also mailed (no SMTP configured: an .eml file in the outbox).
    let agent_email = agents.as_array().unwrap().iter().find(|a| a["userId"] == co.agent_id).unwrap()["email"].clone();
    let mails = outbox(&app, "mail");
    assert!(
        mails.iter().any(|m| m.to.contains(agent_email.as_str().unwrap()) && m.text.contains("Invitation token")),
        "no invitation mail among {} files",
        mails.len()
    );
    assert_eq!(app.get("/auth/me", Some(&co.agent)).await.0, 200);
    let (status, patched) =
        app.patch(&format!("/agent/{}", co.agent_id), Some(&co.admin), &json!({"status": "deactivated"})).await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched["status"], "deactivated");
    let (status, body) = app.get("/auth/me", Some(&co.agent)).await;
    assert_error(status, &body, 401, "session_revoked");
});

both_backends!(demo_data_is_consistent, |app: TestApp| async move {
    let st = app.state.clone();
    let filled = st.db.write(|c| confab::messaging::demo::fill(c, 1, 12)).await.unwrap();
    assert_eq!(filled.conversations, 12);
    let admin = app.admin_token().await;
    let (_, list) = app.get("/conversation/conversation-page-list?limit=100", Some(&admin)).await;
    assert_eq!(list["totalCount"], 12);
    let mut closed = 0;
    for conv in list["data"].as_array().unwrap() {
        let id = conv["conversationId"].as_i64().unwrap();
        let (_, page) = app.get(&format!("/message/message-page-list/{id}?limit=100"), Some(&admin)).await;
        assert_eq!(page["totalCount"].as_i64().unwrap(), page["data"].as_array().unwrap().len() as i64);
        assert_eq!(conv["lastSeq"], page["totalCount"], "one message.created event per message");
        let (_, report) = app.get(&format!("/conversation/chat-time-report/{id}"), Some(&admin)).await;
        if report["duration"] == 0 {
            closed += 1;
        }
    }
    assert_eq!(closed, 4, "every third conversation is outside the 24-hour window");
    let (_, templates) = app.get("/template", Some(&admin)).await;
    assert_eq!(templates.as_array().unwrap().len(), 3);
});

// NUL characters: PostgreSQL cannot store them. A client's text with one is a field error on
// both backends; a provider's is stored without it (never a 500, nothing lost).
both_backends!(nul_characters_are_refused_from_clients_and_scrubbed_from_providers, |app: TestApp| async move {
    let co = app.default_company().await;
    let conv = app.customer_says(&co, "+14155550177", "hi\u{0}there").await;
    let (status, page) = app.get(&format!("/message/message-page-list/{conv}?limit=10"), Some(&co.agent)).await;
    assert_eq!(status, 200, "{page}");
    assert!(page.to_string().contains("hithere"), "{page}");
    let (status, body) =
        app.post("/message", Some(&co.agent), &json!({"conversationId": conv, "text": "bad\u{0}text"})).await;
    assert_error(status, &body, 400, "validation_failed");
    assert!(body.to_string().contains("NUL"), "{body}");
    let (status, body) =
        app.patch(&format!("/conversation/{conv}"), Some(&co.agent), &json!({"labels": ["a\u{0}b"]})).await;
    assert!(status == 400 || status == 200, "never a 500: {status} {body}");
});
