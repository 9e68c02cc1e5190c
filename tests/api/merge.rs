//! Merging two conversations of one customer (issue 22 item 7): REST and WebSocket against the
//! real server, on both backends.

use serde_json::{Value, json};

use crate::{both_backends, helpers::*, realtime::Ws};

/// A second sandbox channel of the company, as a [`Company`] whose webhooks go to it.
async fn second_channel(app: &TestApp, co: &Company, phone: &str) -> Company {
    let secret = format!("secret-{}", confab::core::crypto::random_hex_id());
    let (status, ch) = app
        .post(
            "/channel",
            Some(&co.admin),
            &json!({"provider": "sandbox", "phoneNumber": phone, "displayName": "Second line", "webhookSecret": secret}),
        )
        .await;
    assert_eq!(status, 201, "{ch}");
    Company {
        admin: co.admin.clone(),
        agent: co.agent.clone(),
        agent_id: co.agent_id,
        company_id: co.company_id,
        channel_id: ch["channelId"].as_i64().unwrap(),
        secret,
    }
}

/// The customer writes on `co`'s channel; returns the conversation of that channel.
async fn says(app: &TestApp, co: &Company, from: &str, text: &str) -> i64 {
    let id = format!("sb-{}", confab::core::crypto::random_hex_id());
    let (status, body) = app
        .sandbox_webhook(
            co,
            &json!({"channelId": co.channel_id, "messages": [{"id": id, "from": from, "name": "Ada Lovelace", "text": text}]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, list) = app.get("/conversation/conversation-page-list?limit=100", Some(&co.agent)).await;
    list["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["channelId"] == co.channel_id && c["user"]["phone"] == from)
        .unwrap_or_else(|| panic!("conversation of {from} on {} in {list}", co.channel_id))["conversationId"]
        .as_i64()
        .unwrap()
}

async fn thread(app: &TestApp, token: &str, conv: i64) -> Value {
    let (status, page) = app.get(&format!("/message/message-page-list/{conv}?limit=100"), Some(token)).await;
    assert_eq!(status, 200, "{page}");
    page
}

fn texts(page: &Value) -> Vec<String> {
    page["data"].as_array().unwrap().iter().map(|m| m["content"].as_str().unwrap_or("").to_owned()).rev().collect()
}

async fn view(app: &TestApp, token: &str, conv: i64) -> Value {
    let (_, list) = app.get("/conversation/conversation-page-list?limit=100", Some(token)).await;
    list["data"].as_array().unwrap().iter().find(|c| c["conversationId"] == conv).unwrap().clone()
}

both_backends!(
    merge_moves_the_messages_in_time_order_and_the_source_answers_from_the_target,
    |app: TestApp| async move {
        let co = app.default_company().await;
        let line2 = second_channel(&app, &co, "+14155550124").await;
        let other = app.other_company("Merge Elsewhere").await;
        let ada = "+14155550401";

        // Ada writes on both lines, interleaved; an agent answers on each, and notes one.
        let target = says(&app, &co, ada, "a1 first line").await;
        let source = says(&app, &line2, ada, "b1 second line").await;
        assert_ne!(target, source);
        let send = |conv: i64, text: &'static str, private: bool| {
            let token = co.agent.clone();
            let app = &app;
            async move {
                let (status, m) = app
                    .post("/message", Some(&token), &json!({"conversationId": conv, "text": text, "private": private}))
                    .await;
                assert_eq!(status, 201, "{m}");
                m
            }
        };
        let b2 = send(source, "b2 reply on the second line", false).await;
        says(&app, &co, ada, "a2 first line again").await;
        send(source, "b3 a note @Admin", true).await;
        says(&app, &line2, ada, "b4 second line again").await;
        let a3 = send(target, "a3 reply on the first line", false).await;
        // Their deliveries are done, so no status event lands between the merge's events below.
        for (conv, m) in [(source, &b2), (target, &a3)] {
            app.wait_for_message_status(&co.agent, conv, m["messageId"].as_str().unwrap(), "DELIVERED").await;
        }
        let bob = says(&app, &co, "+14155550402", "bob here").await;

        let mut ws = Ws::connect(&app, &co.admin).await;
        let (_, target_last) = ws.subscribe(target, None).await;
        let (_, source_last) = ws.subscribe(source, None).await;
        let before = thread(&app, &co.agent, target).await;
        assert_eq!(before["totalCount"], 3);

        // Refusals: itself, another customer, another company's conversation (either side).
        let path = format!("/conversation/{source}/merge");
        let (status, b) = app.post(&path, Some(&co.agent), &json!({"intoConversationId": source})).await;
        assert_error(status, &b, 422, "same_conversation");
        let (status, b) = app.post(&path, Some(&co.agent), &json!({"intoConversationId": bob})).await;
        assert_error(status, &b, 422, "different_customer");
        let theirs = app.customer_says(&other, ada, "same phone, other company").await;
        let (status, b) = app.post(&path, Some(&co.agent), &json!({"intoConversationId": theirs})).await;
        assert_error(status, &b, 400, "validation_failed");
        assert!(b["fields"]["intoConversationId"].is_string(), "{b}");
        let (status, b) = app.post(&path, Some(&other.agent), &json!({"intoConversationId": theirs})).await;
        assert_error(status, &b, 404, "not_found");
        let (status, b) = app.post(&path, Some(&co.agent), &json!({"intoConversationId": "x"})).await;
        assert_error(status, &b, 400, "validation_failed");

        // The merge: 200 with the target's view.
        let (status, merged) = app.post(&path, Some(&co.agent), &json!({"intoConversationId": target})).await;
        assert_eq!(status, 200, "{merged}");
        assert_eq!(merged["conversationId"], target);

        // The target's subscribers get the source's four messages as its next seqs, in time
        // order, then conversation.updated; nothing skipped or doubled.
        let ev = ws.events_until(target, target_last + 5).await;
        let seqs: Vec<i64> = ev.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
        assert_eq!(seqs, (target_last + 1..=target_last + 5).collect::<Vec<_>>());
        let moved: Vec<&str> = ev[..4].iter().map(|e| e["data"]["content"].as_str().unwrap()).collect();
        assert_eq!(
            moved,
            ["b1 second line", "b2 reply on the second line", "b3 a note @Admin", "b4 second line again"]
        );
        assert!(ev[..4].iter().all(|e| e["event"] == "message.created" && e["data"]["conversationId"] == target));
        assert_eq!(ev[4]["event"], "conversation.updated");
        assert_eq!(ev[4]["data"]["mergedInto"], Value::Null);
        // The source: resolved, mergedInto, with its own next seq.
        let sev = ws.events_until(source, source_last + 1).await;
        assert_eq!(sev[0]["event"], "conversation.updated");
        assert_eq!(sev[0]["data"]["status"], "resolved");
        assert_eq!(sev[0]["data"]["mergedInto"], target);
        // A client resuming the target from before the merge gets the same events.
        let mut late = Ws::connect(&app, &co.agent).await;
        let (replayed, last) = late.subscribe(target, Some(target_last)).await;
        let brief = |e: &Value| (e["seq"].clone(), e["event"].clone(), e["data"]["messageId"].clone());
        assert_eq!(replayed.iter().map(brief).collect::<Vec<_>>(), ev.iter().map(brief).collect::<Vec<_>>());
        assert_eq!(last, target_last + 5);

        // Both threads read the same: every message in time order.
        let want = [
            "a1 first line",
            "b1 second line",
            "b2 reply on the second line",
            "a2 first line again",
            "b3 a note @Admin",
            "b4 second line again",
            "a3 reply on the first line",
        ];
        let t = thread(&app, &co.agent, target).await;
        assert_eq!(texts(&t), want);
        assert_eq!(t["totalCount"], 7);
        let datetimes: Vec<&str> =
            t["data"].as_array().unwrap().iter().map(|m| m["datetime"].as_str().unwrap()).collect();
        assert!(datetimes.windows(2).all(|w| w[0] >= w[1]), "newest first: {datetimes:?}");
        let s = thread(&app, &co.agent, source).await;
        assert_eq!(s, t, "the source's list answers from the target");
        let oldest_page = app
            .get(
                &format!(
                    "/message/message-page-list/{source}?limit=2&before={}",
                    t["data"][1]["messageId"].as_str().unwrap()
                ),
                Some(&co.agent),
            )
            .await;
        assert_eq!(oldest_page.0, 200, "{}", oldest_page.1);
        let sv = view(&app, &co.agent, source).await;
        assert_eq!((sv["status"].as_str(), sv["mergedInto"].as_i64()), (Some("resolved"), Some(target)));
        let tv = view(&app, &co.agent, target).await;
        assert_eq!(tv["mergedInto"], Value::Null);
        assert_eq!(tv["lastMessage"]["content"], "a3 reply on the first line");
        // The note's mention follows it.
        let (_, mentions) = app.get("/mentions", Some(&co.admin)).await;
        assert_eq!(mentions["data"][0]["conversationId"], target);

        // Merged once: again is 409, and nothing is sent to or changed on the source.
        let (status, b) = app.post(&path, Some(&co.agent), &json!({"intoConversationId": target})).await;
        assert_error(status, &b, 409, "already_merged");
        let (status, b) = app
            .post(&format!("/conversation/{target}/merge"), Some(&co.agent), &json!({"intoConversationId": source}))
            .await;
        assert_error(status, &b, 409, "already_merged");
        let (status, b) =
            app.post("/message", Some(&co.agent), &json!({"conversationId": source, "text": "hello?"})).await;
        assert_error(status, &b, 409, "conversation_merged");
        let (status, b) =
            app.patch(&format!("/conversation/{source}"), Some(&co.agent), &json!({"status": "open"})).await;
        assert_error(status, &b, 409, "conversation_merged");

        // Ada writes on the second line again: its conversation comes back as a new thread (open,
        // no longer merged) holding only the new message; the target keeps the history.
        says(&app, &line2, ada, "b5 back on the second line").await;
        let sev = ws.events_until(source, source_last + 3).await;
        assert_eq!(
            sev.iter().map(|e| e["seq"].as_i64().unwrap()).collect::<Vec<_>>(),
            [source_last + 2, source_last + 3]
        );
        assert_eq!(sev[0]["event"], "message.created");
        assert_eq!(sev[1]["event"], "conversation.updated");
        assert_eq!(sev[1]["data"]["mergedInto"], Value::Null);
        assert_eq!(sev[1]["data"]["status"], "open");
        assert_eq!(texts(&thread(&app, &co.agent, source).await), ["b5 back on the second line"]);
        assert_eq!(thread(&app, &co.agent, target).await["totalCount"], 7);
    }
);
