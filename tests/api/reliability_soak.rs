//! Issue 24 item 7 (README "Reliability"): resource bounds. The real binary (a child process,
//! so its memory and descriptors are its own) runs under a steady, moderate load for a while:
//! signed sandbox webhooks (customer messages), agents' REST sends (and the sandbox's status
//! callbacks they cause), REST reads, uploads, and WebSocket clients that reconnect and resume
//! all along. Every second the test samples the process's resident memory (`VmRSS`) and its
//! open file descriptors (`/proc/PID/fd`).
//!
//! "Flat", as asserted: after a warm-up, the mean of the last window of samples exceeds the
//! mean of the first window after the warm-up by at most 10 % (RSS) and by at most 10 % or 8
//! descriptors, whichever is more (fds). Every request of the load must succeed. The samples go
//! to a CSV and a PNG (`CONFAB_SOAK_PLOT`, default in the temporary folder).
//!
//! Short form (`cargo test`): 30 s, warm-up 10 s, windows of 10 s. `CONFAB_SOAK=1`: 10 minutes,
//! warm-up 60 s, windows of 60 s (`CONFAB_SOAK_SECS` sets the length, windows scale with it).

use std::{
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use futures_util::{SinkExt, StreamExt};
use rand::Rng;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest};

use crate::{
    helpers::ADMIN_PASSWORD,
    reliability_crash::{Launcher, soak},
    reliability_hostile::rss_kib,
    webhooks::sign,
};

const CUSTOMERS: usize = 10;
const WS_CLIENTS: usize = 20;

fn open_fds(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count() as u64).unwrap_or(0)
}

/// One sample: seconds since the load started, RSS in KiB, open descriptors.
#[derive(Clone, Copy)]
struct Sample {
    t: f64,
    rss_kib: u64,
    fds: u64,
}

/// What the load did; every request must succeed.
#[derive(Default)]
struct Counts {
    messages_in: AtomicU64,
    sends: AtomicU64,
    reads: AtomicU64,
    uploads: AtomicU64,
    ws_connections: AtomicU64,
    ws_events: AtomicU64,
    failures: Mutex<Vec<String>>,
}

impl Counts {
    fn fail(&self, what: String) {
        self.failures.lock().unwrap().push(what);
    }
}

struct Target {
    base: String,
    port: u16,
    token: String,
    conversations: Vec<i64>,
}

/// Runs `step` every `every` until `end`; a failure is recorded, not retried.
async fn paced<F, Fut>(every: Duration, end: Instant, counts: Arc<Counts>, mut step: F)
where
    F: FnMut(u64) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let mut next = Instant::now();
    let mut n = 0;
    while Instant::now() < end {
        tokio::time::sleep_until(next.into()).await;
        next += every;
        if let Err(e) = step(n).await {
            counts.fail(e);
        }
        n += 1;
    }
}

async fn expect(res: Result<reqwest::Response, reqwest::Error>, want: u16, what: &str) -> Result<Value, String> {
    let res = res.map_err(|e| format!("{what}: {e}"))?;
    let status = res.status().as_u16();
    let body: Value = res.json().await.unwrap_or(Value::Null);
    if status != want {
        return Err(format!("{what}: {status} {body}"));
    }
    Ok(body)
}

/// A tiny PNG (1×1), enough for the type sniffing of `/media/save`.
const PNG: &[u8] = &[
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52, 0x00, 0x00, 0x00,
    0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00, 0x00, 0x00, 0x1f, 0x15, 0xc4, 0x89, 0x00, 0x00, 0x00, 0x0d, 0x49,
    0x44, 0x41, 0x54, 0x78, 0x9c, 0x63, 0x60, 0x00, 0x02, 0x00, 0x00, 0x05, 0x00, 0x01, 0xe9, 0xfa, 0xdc, 0xd8, 0x00,
    0x00, 0x00, 0x00, 0x49, 0x45, 0x4e, 0x44, 0xae, 0x42, 0x60, 0x82,
];

fn multipart_png(n: u64) -> (String, Vec<u8>) {
    let boundary = format!("soak-boundary-{n}");
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"soak-{n}.png\"\r\n\
         Content-Type: image/png\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(PNG);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// A WebSocket client that follows two conversations, resuming with `afterSeq`, and
/// reconnects every 1–4 s until `end`.
async fn ws_client(t: Arc<Target>, counts: Arc<Counts>, end: Instant, i: usize) {
    let follows = [t.conversations[i % CUSTOMERS], t.conversations[(i + 3) % CUSTOMERS]];
    let mut last = [0i64; 2];
    while Instant::now() < end {
        let mut req = format!("ws://127.0.0.1:{}/ws", t.port).into_client_request().unwrap();
        req.headers_mut().insert("Authorization", format!("Bearer {}", t.token).parse().unwrap());
        let mut ws = match tokio_tungstenite::connect_async(req).await {
            Ok((ws, _)) => ws,
            Err(e) => {
                counts.fail(format!("ws connect: {e}"));
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        counts.ws_connections.fetch_add(1, Ordering::Relaxed);
        for (k, c) in follows.iter().enumerate() {
            let frame = json!({"type": "subscribe", "conversationId": c, "afterSeq": last[k]});
            let _ = ws.send(Message::Text(frame.to_string())).await;
        }
        let until = (Instant::now() + Duration::from_millis(rand::thread_rng().gen_range(1000..4000))).min(end);
        while let Ok(Some(frame)) = tokio::time::timeout_at(until.into(), ws.next()).await {
            match frame {
                Ok(Message::Text(text)) => {
                    let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                    if let (Some(c), Some(seq)) = (v["conversationId"].as_i64(), v["seq"].as_i64())
                        && let Some(k) = follows.iter().position(|f| *f == c)
                    {
                        if seq != last[k] + 1 {
                            counts.fail(format!("ws: conversation {c} seq {seq} after {}", last[k]));
                        }
                        last[k] = last[k].max(seq);
                        counts.ws_events.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    counts.fail(format!("ws read: {e}"));
                    break;
                }
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
    }
}

fn mean(v: impl Iterator<Item = f64>) -> f64 {
    let (sum, n) = v.fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    if n == 0 { 0.0 } else { sum / n as f64 }
}

/// Least-squares slope of `y` over `t`, per minute.
fn slope_per_min(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    let (mt, my) = (mean(points.iter().map(|p| p.0)), mean(points.iter().map(|p| p.1)));
    let cov: f64 = points.iter().map(|(t, y)| (t - mt) * (y - my)).sum();
    let var: f64 = points.iter().map(|(t, _)| (t - mt).powi(2)).sum();
    if n < 2.0 || var == 0.0 { 0.0 } else { cov / var * 60.0 }
}

/// The figure: RSS (MiB) and open descriptors against time, the warm-up shaded, the two
/// compared windows marked.
fn plot(samples: &[Sample], warmup: f64, window: f64, path: &std::path::Path, title: &str) {
    use plotters::prelude::*;
    static FONT: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    FONT.get_or_init(|| {
        let candidates = [
            "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
            "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
        ];
        let bytes = candidates
            .iter()
            .find_map(|p| std::fs::read(p).ok())
            .expect("a TrueType font (Debian fonts-dejavu-core; .ci/run installs it)");
        plotters::style::register_font("sans-serif", FontStyle::Normal, Box::leak(bytes.into_boxed_slice()))
            .map_err(|_| "font")
            .unwrap();
    });
    let end = samples.last().map(|s| s.t).unwrap_or(1.0).max(1.0);
    let root = BitMapBackend::new(path, (1000, 640)).into_drawing_area();
    root.fill(&WHITE).unwrap();
    let (top, bottom) = root.split_vertically(320);
    let rss: fn(&Sample) -> f64 = |s| s.rss_kib as f64 / 1024.0;
    let fds: fn(&Sample) -> f64 = |s| s.fds as f64;
    let panels = [(top, "RSS (MiB)", rss, BLUE), (bottom, "open file descriptors", fds, RED)];
    for (i, (area, label, value, color)) in panels.into_iter().enumerate() {
        let max = samples.iter().map(&value).fold(0.0f64, f64::max) * 1.15 + 1.0;
        let caption = if i == 0 { title.to_owned() } else { String::new() };
        let mut chart = ChartBuilder::on(&area)
            .caption(caption, ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..end, 0f64..max)
            .unwrap();
        chart
            .configure_mesh()
            .x_desc("seconds (grey: warm-up; green: first window; orange: last window)")
            .y_desc(label)
            .light_line_style(WHITE)
            .label_style(("sans-serif", 13))
            .draw()
            .unwrap();
        let shade = |from: f64, to: f64, c: RGBColor| Rectangle::new([(from, 0.0), (to, max)], c.mix(0.15).filled());
        chart
            .draw_series([
                shade(0.0, warmup, BLACK),
                shade(warmup, warmup + window, GREEN),
                shade(end - window, end, RGBColor(255, 140, 0)),
            ])
            .unwrap();
        chart
            .draw_series(LineSeries::new(samples.iter().map(|s| (s.t, value(s))), color.stroke_width(2)))
            .unwrap()
            .label(label)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], color));
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .label_font(("sans-serif", 13))
            .position(SeriesLabelPosition::LowerRight)
            .draw()
            .unwrap();
    }
    root.present().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rss_and_fds_stay_flat_under_steady_load() {
    let long = soak();
    let secs: u64 =
        std::env::var("CONFAB_SOAK_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(if long { 600 } else { 30 });
    // Warm-up and windows: a tenth of the run each, 60 s in the long form.
    let window = (secs as f64 / 10.0).clamp(10.0, 60.0);
    let warmup = window;
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let db_url = format!("sqlite://{}", dir.path().join("confab.db").display());
    let mut launcher = Launcher::new(dir.path().to_path_buf(), db_url);
    launcher.env = vec![("CONFAB_WS_MAX_PER_USER".into(), "0".into())];
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_idle_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let server = launcher.start(&http).await;
    let base = server.base.clone();
    let port: u16 = base.rsplit(':').next().unwrap().parse().unwrap();

    // The admin, the sandbox channel with a known secret, the customers' conversations.
    let login = expect(
        http.post(format!("{base}/auth/login"))
            .json(&json!({"email": "admin@localhost", "password": ADMIN_PASSWORD}))
            .send()
            .await,
        200,
        "login",
    )
    .await
    .unwrap();
    let token = login["accessToken"].as_str().unwrap().to_owned();
    let channels =
        expect(http.get(format!("{base}/channel")).bearer_auth(&token).send().await, 200, "channels").await.unwrap();
    let ch = channels.as_array().unwrap().iter().find(|c| c["provider"] == "sandbox").unwrap().clone();
    let secret = "soak-test-secret".to_owned();
    expect(
        http.put(format!("{base}/channel/{}", ch["channelId"]))
            .bearer_auth(&token)
            .json(&json!({"provider": "sandbox", "phoneNumber": ch["phoneNumber"], "displayName": ch["displayName"],
                          "webhookSecret": secret}))
            .send()
            .await,
        200,
        "channel secret",
    )
    .await
    .unwrap();
    let channel_id = ch["channelId"].as_i64().unwrap();
    let phones: Vec<String> = (0..CUSTOMERS).map(|k| format!("+1415555{:04}", 4000 + k)).collect();
    let (hook_base, hook_secret) = (base.clone(), secret.clone());
    let webhook = move |http: reqwest::Client, messages: Vec<Value>| {
        let raw = serde_json::to_vec(&json!({"channelId": channel_id, "messages": messages})).unwrap();
        let sig = sign(&hook_secret, &raw);
        let url = format!("{hook_base}/webhooks/sandbox");
        async move {
            let res = http
                .post(url)
                .header("Content-Type", "application/json")
                .header("X-Confab-Signature", sig)
                .body(raw)
                .send()
                .await;
            expect(res, 200, "webhook").await.map(|_| ())
        }
    };
    let opening: Vec<Value> = phones
        .iter()
        .enumerate()
        .map(|(k, p)| json!({"id": format!("soak-open-{k}"), "from": p, "name": "Ada Lovelace", "text": "hello"}))
        .collect();
    webhook(http.clone(), opening).await.unwrap();
    let list = expect(
        http.get(format!("{base}/conversation/conversation-page-list?limit=100")).bearer_auth(&token).send().await,
        200,
        "list",
    )
    .await
    .unwrap();
    let conversations: Vec<i64> =
        list["data"].as_array().unwrap().iter().map(|c| c["conversationId"].as_i64().unwrap()).collect();
    assert_eq!(conversations.len(), CUSTOMERS);
    let target = Arc::new(Target { base: base.clone(), port, token, conversations });

    // The load.
    let counts = Arc::new(Counts::default());
    let load_started = Instant::now();
    let end = load_started + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    {
        // 50 customer messages a second: a webhook of 5 every 100 ms.
        let (http, counts2, phones) = (http.clone(), counts.clone(), phones.clone());
        let webhook = webhook.clone();
        tasks.push(tokio::spawn(paced(Duration::from_millis(100), end, counts.clone(), move |n| {
            let messages: Vec<Value> = (0..5)
                .map(|i| {
                    json!({"id": format!("soak-{n}-{i}"), "from": phones[(n as usize + i) % CUSTOMERS],
                           "name": "Ada Lovelace", "text": format!("message {n}-{i}")})
                })
                .collect();
            let (sent, counts) = (webhook(http.clone(), messages), counts2.clone());
            async move {
                sent.await?;
                counts.messages_in.fetch_add(5, Ordering::Relaxed);
                Ok(())
            }
        })));
    }
    {
        // 5 agent sends a second (each then SENT and DELIVERED by the sandbox).
        let (http, t, counts2) = (http.clone(), target.clone(), counts.clone());
        tasks.push(tokio::spawn(paced(Duration::from_millis(200), end, counts.clone(), move |n| {
            let conv = t.conversations[n as usize % CUSTOMERS];
            let res = http
                .post(format!("{}/message", t.base))
                .bearer_auth(&t.token)
                .json(&json!({"conversationId": conv, "clientId": format!("soak-{n}"), "text": format!("reply {n}")}))
                .send();
            let counts = counts2.clone();
            async move {
                expect(res.await, 201, "send").await?;
                counts.sends.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
        })));
    }
    {
        // 10 reads a second: the conversation list and a conversation's messages in turn.
        let (http, t, counts2) = (http.clone(), target.clone(), counts.clone());
        tasks.push(tokio::spawn(paced(Duration::from_millis(100), end, counts.clone(), move |n| {
            let path = if n % 2 == 0 {
                "/conversation/conversation-page-list?limit=20".to_owned()
            } else {
                format!("/message/message-page-list/{}", t.conversations[n as usize % CUSTOMERS])
            };
            let res = http.get(format!("{}{path}", t.base)).bearer_auth(&t.token).send();
            let counts = counts2.clone();
            async move {
                expect(res.await, 200, "read").await?;
                counts.reads.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
        })));
    }
    {
        // An upload a second.
        let (http, t, counts2) = (http.clone(), target.clone(), counts.clone());
        tasks.push(tokio::spawn(paced(Duration::from_secs(1), end, counts.clone(), move |n| {
            let (content_type, body) = multipart_png(n);
            let res = http
                .post(format!("{}/media/save", t.base))
                .bearer_auth(&t.token)
                .header("Content-Type", content_type)
                .body(body)
                .send();
            let counts = counts2.clone();
            async move {
                expect(res.await, 201, "upload").await?;
                counts.uploads.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
        })));
    }
    for i in 0..WS_CLIENTS {
        tasks.push(tokio::spawn(ws_client(target.clone(), counts.clone(), end, i)));
    }

    // The samples, every second.
    let mut samples = Vec::new();
    let pid = server.pid;
    let mut next = load_started;
    while Instant::now() < end {
        tokio::time::sleep_until(next.into()).await;
        next += Duration::from_secs(1);
        samples.push(Sample { t: load_started.elapsed().as_secs_f64(), rss_kib: rss_kib(pid), fds: open_fds(pid) });
    }
    for t in tasks {
        t.await.unwrap();
    }
    drop(server);

    // Flat: the last window against the first one after the warm-up.
    let in_window = |from: f64, to: f64| samples.iter().filter(move |s| s.t >= from && s.t < to);
    let total = samples.last().unwrap().t;
    let first_rss = mean(in_window(warmup, warmup + window).map(|s| s.rss_kib as f64 / 1024.0));
    let last_rss = mean(in_window(total - window, total + 1.0).map(|s| s.rss_kib as f64 / 1024.0));
    let first_fds = mean(in_window(warmup, warmup + window).map(|s| s.fds as f64));
    let last_fds = mean(in_window(total - window, total + 1.0).map(|s| s.fds as f64));
    let after_warmup: Vec<&Sample> = samples.iter().filter(|s| s.t >= warmup).collect();
    let rss_slope = slope_per_min(&after_warmup.iter().map(|s| (s.t, s.rss_kib as f64 / 1024.0)).collect::<Vec<_>>());
    let fds_slope = slope_per_min(&after_warmup.iter().map(|s| (s.t, s.fds as f64)).collect::<Vec<_>>());
    let peak_rss = samples.iter().map(|s| s.rss_kib).max().unwrap() as f64 / 1024.0;
    let peak_fds = samples.iter().map(|s| s.fds).max().unwrap();
    let rss_growth = (last_rss / first_rss - 1.0) * 100.0;
    let fds_allowed = (first_fds * 0.10).max(8.0);

    // The curve: CSV and PNG.
    let png: PathBuf = std::env::var("CONFAB_SOAK_PLOT")
        .map(PathBuf::from)
        .unwrap_or_else(|_| std::env::temp_dir().join("confab-soak.png"));
    let csv = png.with_extension("csv");
    let mut rows = String::from("seconds,rss_kib,open_fds\n");
    for s in &samples {
        rows.push_str(&format!("{:.1},{},{}\n", s.t, s.rss_kib, s.fds));
    }
    std::fs::write(&csv, rows).unwrap();
    let load_avg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load_avg: Vec<&str> = load_avg.split_whitespace().take(3).collect();
    plot(
        &samples,
        warmup,
        window,
        &png,
        &format!(
            "confab soak (debug build, SQLite): {secs} s; RSS {first_rss:.1} -> {last_rss:.1} MiB, fds {first_fds:.0} -> {last_fds:.0}"
        ),
    );

    let failures = std::mem::take(&mut *counts.failures.lock().unwrap());
    let c = |a: &AtomicU64| a.load(Ordering::Relaxed);
    println!(
        "resource soak ({secs} s, warm-up {warmup:.0} s, windows {window:.0} s; load average {}): {} customer \
         messages in, {} agent sends, {} reads, {} uploads, {} WebSocket connections ({} events); failures {}; \
         RSS first window {first_rss:.1} MiB, last window {last_rss:.1} MiB ({rss_growth:+.1} %, allowed +10 %), \
         peak {peak_rss:.1} MiB, slope {rss_slope:+.2} MiB/min; open fds first window {first_fds:.1}, last window \
         {last_fds:.1} (allowed +{fds_allowed:.0}), peak {peak_fds}, slope {fds_slope:+.2}/min; {} samples; \
         plot {} (csv {}); {:.1} s in all",
        load_avg.join(" "),
        c(&counts.messages_in),
        c(&counts.sends),
        c(&counts.reads),
        c(&counts.uploads),
        c(&counts.ws_connections),
        c(&counts.ws_events),
        failures.len(),
        samples.len(),
        png.display(),
        csv.display(),
        started.elapsed().as_secs_f64(),
    );
    assert!(failures.is_empty(), "{} failed requests:\n{}", failures.len(), failures.join("\n"));
    assert!(last_rss <= first_rss * 1.10, "RSS grew {rss_growth:+.1} % ({first_rss:.1} -> {last_rss:.1} MiB)");
    assert!(last_fds <= first_fds + fds_allowed, "open fds grew: {first_fds:.1} -> {last_fds:.1}");
    assert!(c(&counts.messages_in) > 0 && c(&counts.ws_events) > 0);
}
