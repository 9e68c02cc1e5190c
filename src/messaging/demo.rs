//! `confab demo`: fills a company's sandbox channel with realistic data so a newcomer can try
//! the API and the console at once (issue "Messaging API" §5): a few hundred contacts and
//! conversations, messages in both directions with statuses, some with attachment metadata,
//! some conversations outside the 24-hour window, and a few templates. Everything goes through
//! the same store functions as live traffic, so counters and event `seq`s are consistent.

use chrono::Duration;

use super::{model::*, store};
use crate::core::{
    db::Db,
    error::ApiResult,
    types::{Phone, now},
};

const FIRST: [&str; 16] = [
    "Ada",
    "Alan",
    "Grace",
    "Linus",
    "Margaret",
    "Dennis",
    "Barbara",
    "Ken",
    "Frances",
    "Edsger",
    "Radia",
    "Tim",
    "Hedy",
    "John",
    "Katherine",
    "Donald",
];
const LAST: [&str; 12] = [
    "Lovelace",
    "Turing",
    "Hopper",
    "Torvalds",
    "Hamilton",
    "Ritchie",
    "Liskov",
    "Thompson",
    "Allen",
    "Dijkstra",
    "Perlman",
    "Berners-Lee",
];
const INBOUND: [&str; 8] = [
    "Hi! Is my order on its way?",
    "Does it come in another color?",
    "I'd like to change my delivery address.",
    "Thanks, that worked!",
    "Can I return an item after 30 days?",
    "The parcel arrived damaged.",
    "What are your opening hours?",
    "Is there a discount for students?",
];
const OUTBOUND: [&str; 6] = [
    "Hello! Let me check that for you.",
    "Your order ships tomorrow.",
    "Sure, I've updated it.",
    "Happy to help — anything else?",
    "I've sent you a return label.",
    "We're open 9 to 6, Monday to Saturday.",
];

pub struct Filled {
    pub conversations: usize,
    pub messages: usize,
}

/// Adds `count` demo conversations to the company's default channel.
pub fn fill(c: &mut Db, company_id: i64, count: usize) -> ApiResult<Filled> {
    let channel = store::default_channel(c, company_id)?;
    let t0 = now();
    for (name, content) in [
        ("order_shipped", "Your {{1}} order of {{2}} has shipped and should be delivered on {{3}}."),
        ("welcome", "Hi {{1}}! Thanks for contacting us. How can we help?"),
        ("follow_up", "Hello {{1}}, we're following up on your request. Reply to continue the chat."),
    ] {
        let fields = store::TemplateFields {
            name,
            language: "en_US",
            category: "UTILITY",
            content,
            param_count: placeholder_count(content) as i32,
            content_sid: None,
            updated_at: t0,
        };
        store::insert_template_unless_named(c, company_id, &fields)?;
    }
    let mut messages = 0;
    for i in 0..count {
        let phone =
            Phone::try_from(format!("+1415555{:04}", 2000 + i)).map_err(|e| anyhow::anyhow!("demo phone: {e}"))?;
        let (customer_id, _) =
            store::find_or_create_customer(c, company_id, &phone, FIRST[i % 16], LAST[(i / 16) % 12], true)?;
        let (conv, created) = store::find_or_create_conversation(c, company_id, channel.id, customer_id)?;
        if !created {
            continue;
        }
        // Every third conversation went quiet two days ago: its window is closed.
        let start =
            if i % 3 == 0 { t0 - Duration::hours(50) } else { t0 - Duration::minutes(5 + (i as i64 * 7) % 600) };
        let n = 3 + (i * 7) % 12;
        for k in 0..n {
            let at = start + Duration::seconds(k as i64 * 90);
            let inbound = k % 2 == 0;
            let conv_now = store::conversation(c, company_id, conv.id)?;
            let text = if inbound { INBOUND[(i + k) % 8] } else { OUTBOUND[(i + k) % 6] };
            let with_image = inbound && k == 2 && i % 5 == 0;
            store::create_message(
                c,
                &store::NewMessage {
                    conversation: &conv_now,
                    direction: if inbound { Direction::Received } else { Direction::Sent },
                    kind: if with_image { "image" } else { "text" },
                    content: Some(text),
                    template_id: None,
                    params: &[],
                    status: if inbound {
                        Status::Delivered
                    } else {
                        [Status::Read, Status::Delivered, Status::Sent][k % 3]
                    },
                    provider_message_id: Some(&format!("demo-{}-{k}", conv.id)),
                    client_id: None,
                    sender_id: Some(customer_id).filter(|_| inbound),
                    created_at: at,
                    private: false,
                    send_at: None,
                    fallback_template_id: None,
                },
                |c, row| {
                    if !with_image {
                        return Ok(0);
                    }
                    crate::media::db::insert(
                        c,
                        &crate::media::db::NewAttachment {
                            company_id,
                            message_id: Some(&row.id),
                            ord: Some(0),
                            kind: "IMAGE",
                            filename: "photo.jpg",
                            filesize: 289_516,
                            content_type: "image/jpeg",
                            sha256: None,
                            storage_key: None,
                            state: crate::media::db::READY,
                            provider_media_id: None,
                            uploaded_by: None,
                            created_at: at,
                        },
                    )?;
                    Ok(1)
                },
            )?;
            messages += 1;
        }
    }
    Ok(Filled { conversations: count, messages })
}
