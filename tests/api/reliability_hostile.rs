//! Issue 24 item 6 (README "Reliability"): slow and hostile clients against the real binary
//! (a child process, so its memory is its own): WebSocket clients that never read, WebSocket
//! clients that send a frame one byte at a time, HTTP slowloris (headers, and a body, one byte
//! at a time) and a flood of upgrades with bad tickets. Meanwhile a well-behaved agent keeps
//! using REST and a WebSocket: every one of its requests must succeed and its subscription must
//! get every event exactly once, in order. Asserted: those functional outcomes, the refusals
//! (401 in the unified body for every bad ticket, 1013 for every non-reader, a pong for every
//! dripped ping, the header slowloris connections closed by the server after its 5 s request
//! timeout). A request whose body drips is not closed: actix-http has no body-read timeout, so
//! the connection stays until the client stops (counted and printed; README "Slow and hostile
//! clients"). Printed: the probe's p99
//! quiet and under attack, and the server's RSS before, during and after. `CONFAB_SOAK=1` (the
//! long form) drips at 1 byte a second, sends 10,000 bad tickets, and asserts the p99 under
//! attack within 2× of quiet (plus 5 ms) and RSS after within 10 % (plus 16 MiB) of before.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{
    helpers::ADMIN_PASSWORD,
    reliability_crash::{Launcher, soak},
    webhooks::sign,
};

const NON_READERS: usize = 10;
const DRIPPERS: usize = 10;
const SLOWLORIS: usize = 50;
const PROBES: usize = 100;

pub(crate) fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn p99_ms(lat: &mut [f64]) -> f64 {
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    lat.get((lat.len() * 99).div_ceil(100).saturating_sub(1)).copied().unwrap_or(0.0)
}

/// Opens a raw TCP connection and performs a WebSocket upgrade by hand (so the test controls
/// every byte after it); `recv_buffer` shrinks the client's receive window.
async fn raw_ws(port: u16, token: &str, recv_buffer: Option<u32>) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    if let Some(size) = recv_buffer {
        socket.set_recv_buffer_size(size).unwrap();
    }
    let mut s = socket.connect(format!("127.0.0.1:{port}").parse().unwrap()).await.unwrap();
    let req = format!(
        "GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Authorization: Bearer {token}\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    // The 101 head, byte by byte up to its blank line (nothing after it is consumed).
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        assert_eq!(s.read(&mut b).await.unwrap(), 1, "upgrade head: {}", String::from_utf8_lossy(&head));
        head.push(b[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&head));
    s
}

/// A masked client text frame (RFC 6455 §5.2) of a short payload.
fn masked_text_frame(payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < 126);
    let mask = [0x11u8, 0x22, 0x33, 0x44];
    let mut f = vec![0x81, 0x80 | payload.len() as u8];
    f.extend(mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

/// Reads server frames (unmasked) until a text frame containing `needle` or a close frame;
/// returns the text, or the close code as `close:N`.
async fn read_until(s: &mut tokio::net::TcpStream, needle: &str, wait: Duration) -> Option<String> {
    let deadline = Instant::now() + wait;
    loop {
        let mut hdr = [0u8; 2];
        tokio::time::timeout_at(deadline.into(), s.read_exact(&mut hdr)).await.ok()?.ok()?;
        let mut len = (hdr[1] & 0x7f) as u64;
        if len == 126 {
            let mut b = [0u8; 2];
            s.read_exact(&mut b).await.ok()?;
            len = u16::from_be_bytes(b) as u64;
        } else if len == 127 {
            let mut b = [0u8; 8];
            s.read_exact(&mut b).await.ok()?;
            len = u64::from_be_bytes(b);
        }
        let mut payload = vec![0u8; len as usize];
        tokio::time::timeout_at(deadline.into(), s.read_exact(&mut payload)).await.ok()?.ok()?;
        match hdr[0] & 0x0f {
            0x8 => {
                let code = if payload.len() >= 2 { u16::from_be_bytes([payload[0], payload[1]]) } else { 1005 };
                return Some(format!("close:{code}"));
            }
            0x1 => {
                let text = String::from_utf8_lossy(&payload).into_owned();
                if text.contains(needle) {
                    return Some(text);
                }
            }
            _ => {}
        }
    }
}

/// Whether the server closed the connection (EOF, a reset, or an answer then EOF) within `wait`.
async fn closed_by_server(s: &mut tokio::net::TcpStream, wait: Duration) -> bool {
    let deadline = Instant::now() + wait;
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline.into(), s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

/// `n` timed REST calls of the well-behaved agent; every one must answer 200.
async fn probe(http: &reqwest::Client, base: &str, token: &str, n: usize) -> Vec<f64> {
    let mut lat = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let res = http
            .get(format!("{base}/conversation/conversation-page-list?limit=5"))
            .bearer_auth(token)
            .send()
            .await
            .expect("the well-behaved client's request");
        assert_eq!(res.status(), 200);
        res.bytes().await.unwrap();
        lat.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    lat
}

#[actix_web::test]
async fn slow_and_hostile_clients_do_not_hurt_others() {
    let long = soak();
    let drip = if long { Duration::from_secs(1) } else { Duration::from_millis(200) };
    let bad_tickets = if long { 10_000 } else { 1_000 };
    // How long a slowloris connection keeps dripping at most (the server closes the header ones
    // after its 5 s request timeout).
    let loris_for = if long { Duration::from_secs(60) } else { Duration::from_secs(12) };
    let dir = tempfile::tempdir().unwrap();
    let db_url = format!("sqlite://{}", dir.path().join("confab.db").display());
    let mut launcher = Launcher::new(dir.path().to_path_buf(), db_url);
    launcher.env = vec![
        ("CONFAB_WS_QUEUE_FRAMES".into(), "64".into()),
        // The per-user cap (README "Security") would refuse these clients before the attacks
        // they make; it is tested on its own (`security_ops`).
        ("CONFAB_WS_MAX_PER_USER".into(), "0".into()),
    ];
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
    let server = launcher.start(&http).await;
    let (base, port) = (server.base.clone(), server.base.rsplit(':').next().unwrap().parse::<u16>().unwrap());

    // The admin, the sandbox channel with a known secret, one conversation.
    let login: Value = http
        .post(format!("{base}/auth/login"))
        .json(&json!({"email": "admin@localhost", "password": ADMIN_PASSWORD}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = login["accessToken"].as_str().unwrap().to_owned();
    let channels: Value =
        http.get(format!("{base}/channel")).bearer_auth(&token).send().await.unwrap().json().await.unwrap();
    let ch = channels.as_array().unwrap().iter().find(|c| c["provider"] == "sandbox").unwrap().clone();
    let secret = "hostile-test-secret";
    let res = http
        .put(format!("{base}/channel/{}", ch["channelId"]))
        .bearer_auth(&token)
        .json(&json!({"provider": "sandbox", "phoneNumber": ch["phoneNumber"], "displayName": ch["displayName"],
                      "webhookSecret": secret}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let raw = serde_json::to_vec(&json!({"channelId": ch["channelId"],
        "messages": [{"id": "sb-hostile-1", "from": "+14155550177", "name": "Ada Lovelace", "text": "hello"}]}))
    .unwrap();
    let res = http
        .post(format!("{base}/webhooks/sandbox"))
        .header("Content-Type", "application/json")
        .header("X-Confab-Signature", sign(secret, &raw))
        .body(raw)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let list: Value = http
        .get(format!("{base}/conversation/conversation-page-list?limit=5"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let conv = list["data"][0]["conversationId"].as_i64().unwrap();

    // The quiet baseline.
    probe(&http, &base, &token, 20).await;
    let rss_before = rss_kib(server.pid);
    let mut quiet = probe(&http, &base, &token, PROBES).await;
    let quiet_p99 = p99_ms(&mut quiet);

    // The well-behaved agent's subscription.
    let mut reader = raw_ws(port, &token, None).await;
    reader
        .write_all(&masked_text_frame(format!(r#"{{"type":"subscribe","conversationId":{conv}}}"#).as_bytes()))
        .await
        .unwrap();
    let subscribed = read_until(&mut reader, "subscribed", Duration::from_secs(10)).await.expect("subscribed");
    let first_seq = serde_json::from_str::<Value>(&subscribed).unwrap()["lastSeq"].as_i64().unwrap();
    // It reads all along, as a real client does; the seqs of what it got.
    let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let reading = {
        let got = got.clone();
        actix_web::rt::spawn(async move {
            while let Some(frame) = read_until(&mut reader, "\"event\"", Duration::from_secs(60)).await {
                let Ok(v) = serde_json::from_str::<Value>(&frame) else { break };
                let created = v["event"] == "message.created";
                got.lock().unwrap().push((v["seq"].as_i64().unwrap_or(0), created));
            }
        })
    };

    // The attackers.
    let attack_started = Instant::now();
    let mut non_readers = Vec::new();
    for _ in 0..NON_READERS {
        let mut s = raw_ws(port, &token, Some(2048)).await;
        s.write_all(&masked_text_frame(format!(r#"{{"type":"subscribe","conversationId":{conv}}}"#).as_bytes()))
            .await
            .unwrap();
        non_readers.push(s);
    }
    let ping = masked_text_frame(br#"{"type":"ping"}"#);
    let mut drippers = Vec::new();
    for _ in 0..DRIPPERS {
        let mut s = raw_ws(port, &token, None).await;
        let frame = ping.clone();
        drippers.push(actix_web::rt::spawn(async move {
            for b in frame {
                s.write_all(&[b]).await.unwrap();
                tokio::time::sleep(drip).await;
            }
            read_until(&mut s, "pong", Duration::from_secs(30)).await
        }));
    }
    let mut slowloris = Vec::new();
    for i in 0..SLOWLORIS {
        let mut s = tokio::net::TcpStream::connect(format!("127.0.0.1:{port}")).await.unwrap();
        // Half drip headers that never end, half a body that never ends.
        let head = if i % 2 == 0 {
            "GET /healthz HTTP/1.1\r\nHost: x\r\n".to_owned()
        } else {
            "POST /auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{"
                .to_owned()
        };
        s.write_all(head.as_bytes()).await.unwrap();
        slowloris.push(actix_web::rt::spawn(async move {
            let started = Instant::now();
            let mut buf = [0u8; 1024];
            loop {
                if s.write_all(b"a").await.is_err() {
                    return (i % 2, true, started.elapsed());
                }
                // A read that ends (EOF, reset, or an answer) means the server let go of it.
                match tokio::time::timeout(drip, s.read(&mut buf)).await {
                    Ok(Ok(0)) | Ok(Err(_)) => return (i % 2, true, started.elapsed()),
                    Ok(Ok(_)) => {
                        return (i % 2, closed_by_server(&mut s, Duration::from_secs(10)).await, started.elapsed());
                    }
                    Err(_) => {}
                }
                if started.elapsed() > loris_for {
                    return (i % 2, false, started.elapsed());
                }
            }
        }));
    }
    let ticket_flood = {
        let (http, base) = (http.clone(), base.clone());
        actix_web::rt::spawn(async move {
            let mut refused = 0;
            let mut other = Vec::new();
            let mut n = 0;
            while n < bad_tickets {
                let batch: Vec<_> = (n..(n + 50).min(bad_tickets))
                    .map(|i| {
                        http.get(format!("{base}/ws?ticket=bad-ticket-{i}"))
                            .header("Connection", "Upgrade")
                            .header("Upgrade", "websocket")
                            .header("Sec-WebSocket-Version", "13")
                            .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
                            .send()
                    })
                    .collect();
                for res in futures_util::future::join_all(batch).await {
                    match res {
                        Ok(r) if r.status() == 401 => {
                            let body: Value = r.json().await.unwrap_or(Value::Null);
                            if body["statusCode"] == 401 && body["code"].is_string() {
                                refused += 1;
                            } else {
                                other.push(body.to_string());
                            }
                        }
                        Ok(r) => other.push(r.status().to_string()),
                        Err(e) => other.push(e.to_string()),
                    }
                }
                n += 50;
            }
            (refused, other)
        })
    };

    // Under attack: messages flow (4 KB each, which fills the non-readers' queues), the probe runs.
    let text = "z".repeat(4000);
    let mut sent = 0;
    let mut attacked = Vec::new();
    let mut rss_peak = 0;
    let mut slow_closes = 0.0;
    while sent < 1000 && (sent < 150 || !ticket_flood.is_finished() || slow_closes < NON_READERS as f64) {
        let res = http
            .post(format!("{base}/message"))
            .bearer_auth(&token)
            .json(&json!({"conversationId": conv, "text": text}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201, "the well-behaved agent's send under attack");
        sent += 1;
        attacked.extend(probe(&http, &base, &token, 2).await);
        rss_peak = rss_peak.max(rss_kib(server.pid));
        if sent % 10 == 0 {
            let metrics = http.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
            slow_closes = metrics
                .lines()
                .find_map(|l| l.strip_prefix("confab_ws_slow_consumer_closes_total "))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0.0);
        }
    }
    let attack_p99 = p99_ms(&mut attacked);
    let (refused, other) = ticket_flood.await.unwrap();
    assert!(other.is_empty(), "bad tickets not refused with the unified 401: {:?}", &other[..other.len().min(5)]);
    assert_eq!(refused, bad_tickets);

    // Each non-reader is closed with 1013 (its queue filled) — reading now sees the close frame
    // after what the kernel had buffered.
    let mut closed_1013 = 0;
    for mut s in non_readers {
        if read_until(&mut s, "\u{0}never", Duration::from_secs(30)).await.as_deref() == Some("close:1013") {
            closed_1013 += 1;
        }
    }
    // Every dripped ping is answered.
    let mut pongs = 0;
    for d in drippers {
        if d.await.unwrap().is_some_and(|t| t.contains("pong")) {
            pongs += 1;
        }
    }
    let mut loris = [(0, 0), (0, 0)];
    let mut loris_secs: f64 = 0.0;
    for s in slowloris {
        let (kind, closed, after) = s.await.unwrap();
        loris[kind].0 += 1;
        if closed {
            loris[kind].1 += 1;
            loris_secs = loris_secs.max(after.as_secs_f64());
        }
    }
    let attack_secs = attack_started.elapsed().as_secs_f64();

    // The well-behaved subscription got every event, in order, once.
    let deadline = Instant::now() + Duration::from_secs(60);
    let created = || got.lock().unwrap().iter().filter(|(_, created)| *created).count();
    while created() < sent && !reading.is_finished() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Every event (the sends' `message.created`, and the sandbox's `SENT` and `DELIVERED` as
    // `message.updated`) in seq order, without a gap or a repeat.
    let seqs: Vec<i64> = got.lock().unwrap().iter().map(|(seq, _)| *seq).collect();
    let received = created();
    // Afterwards: quiet again, memory.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut after = probe(&http, &base, &token, PROBES).await;
    let after_p99 = p99_ms(&mut after);
    let rss_after = rss_kib(server.pid);

    println!(
        "hostile clients: {NON_READERS} non-reading WebSockets ({closed_1013} closed with 1013), {DRIPPERS} WebSockets \
         dripping a ping 1 byte per {drip:?} ({pongs} answered), {} header and {} body slowloris connections \
         ({} and {} closed by the server, the last after {loris_secs:.1} s), {bad_tickets} bad-ticket upgrades \
         ({refused} refused 401); the well-behaved agent: {sent} sends and {} REST calls under attack, all \
         answered, {} events received in order (no gap); p99 quiet {quiet_p99:.1} ms, under attack {attack_p99:.1} ms, after \
         {after_p99:.1} ms; RSS before {} MiB, peak {} MiB, after {} MiB; attack {attack_secs:.1} s",
        loris[0].0,
        loris[1].0,
        loris[0].1,
        loris[1].1,
        attacked.len(),
        seqs.len(),
        rss_before / 1024,
        rss_peak / 1024,
        rss_after / 1024,
    );
    let last = seqs.last().copied().unwrap_or(first_seq);
    assert_eq!(seqs, (first_seq + 1..=last).collect::<Vec<_>>(), "the reading client's events: in order, no gap");
    assert_eq!(received, sent, "the reading client got every message.created");
    assert_eq!(closed_1013, NON_READERS, "every non-reading client is closed with 1013");
    assert_eq!(pongs, DRIPPERS, "every dripped ping is answered");
    assert_eq!(loris[0].1, loris[0].0, "header slowloris connections are closed by the server");
    if long {
        assert!(attack_p99 <= 2.0 * quiet_p99 + 5.0, "p99 under attack {attack_p99:.1} ms vs quiet {quiet_p99:.1} ms");
        assert!(
            rss_after <= rss_before + rss_before / 10 + 16 * 1024,
            "RSS {rss_before} KiB before, {rss_after} after"
        );
    }
}
