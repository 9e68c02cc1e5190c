//! The WebSocket load generator shared by every server: connects N clients (bounded
//! concurrency), subscribes each to one conversation, then reads until told to stop, timing
//! every message that carries a send timestamp (`bt:<µs since the run's base instant>:`).

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, anyhow, bail};
use futures_util::{SinkExt, StreamExt, stream};
use tokio::{net::TcpStream, sync::watch};
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream,
    tungstenite::{Message, client::IntoClientRequest, http::HeaderValue, protocol::WebSocketConfig},
};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How a server speaks: confab and the plain peers share the JSON frames of CONTRACT §4;
/// Socket.IO wraps them in its engine.io packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Json,
    SocketIo,
}

#[derive(Clone)]
pub struct Target {
    pub proto: Proto,
    pub url: String,
    /// Bearer tokens, used round-robin (confab); empty for the peers.
    pub tokens: Vec<String>,
}

pub const MARKER: &str = "bt:";

/// Text of a timed message: the marker, the scheduled send time in µs, padding.
pub fn timed_text(sched_us: u64, seq: u64) -> String {
    format!("{MARKER}{sched_us}: bench message {seq} lorem ipsum dolor sit amet")
}

fn parse_marker(text: &str) -> Option<u64> {
    let at = text.find(MARKER)? + MARKER.len();
    let rest = &text[at..];
    let end = rest.find(':')?;
    rest[..end].parse().ok()
}

fn ws_config() -> WebSocketConfig {
    WebSocketConfig { write_buffer_size: 4096, max_message_size: Some(1 << 20), ..Default::default() }
}

async fn recv_text(ws: &mut Ws, timeout: Duration) -> anyhow::Result<String> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, ws.next()).await {
            Err(_) => bail!("no frame within {timeout:?}"),
            Ok(None) => bail!("connection closed"),
            Ok(Some(Err(e))) => return Err(e.into()),
            Ok(Some(Ok(Message::Text(t)))) => return Ok(t),
            Ok(Some(Ok(Message::Close(c)))) => bail!("closed by server: {c:?}"),
            Ok(Some(Ok(_))) => continue,
        }
    }
}

/// Connects one client and subscribes it to every conversation of `conversation_ids`, one
/// after the other; returns once the server has confirmed the last subscription.
pub async fn connect_many(target: &Target, i: usize, conversation_ids: &[i64]) -> anyhow::Result<Ws> {
    let url = match target.proto {
        Proto::Json => target.url.clone(),
        Proto::SocketIo => format!("{}/socket.io/?EIO=4&transport=websocket", target.url.trim_end_matches("/ws")),
    };
    let mut req = url.as_str().into_client_request()?;
    if !target.tokens.is_empty() {
        let token = &target.tokens[i % target.tokens.len()];
        req.headers_mut().insert("Authorization", HeaderValue::from_str(&format!("Bearer {token}"))?);
    }
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(req, Some(ws_config()), true).await?;
    let t = Duration::from_secs(30);
    match target.proto {
        Proto::Json => {
            for conversation_id in conversation_ids {
                ws.send(Message::Text(format!(r#"{{"type":"subscribe","conversationId":{conversation_id}}}"#))).await?;
                loop {
                    let text = recv_text(&mut ws, t).await?;
                    if text.contains(r#""type":"subscribed""#) {
                        break;
                    }
                    if text.contains(r#""type":"error""#) {
                        bail!("subscribe refused: {text}");
                    }
                }
            }
        }
        Proto::SocketIo => {
            let open = recv_text(&mut ws, t).await?;
            if !open.starts_with('0') {
                bail!("engine.io open packet expected, got {open}");
            }
            ws.send(Message::Text("40".into())).await?;
            loop {
                let text = recv_text(&mut ws, t).await?;
                if text.starts_with("40") {
                    break;
                }
            }
            for conversation_id in conversation_ids {
                ws.send(Message::Text(format!(
                    r#"42["subscribe",{{"type":"subscribe","conversationId":{conversation_id}}}]"#
                )))
                .await?;
                loop {
                    let text = recv_text(&mut ws, t).await?;
                    if text == "2" {
                        ws.send(Message::Text("3".into())).await?;
                    } else if text.starts_with(r#"42["subscribed""#) {
                        break;
                    }
                }
            }
        }
    }
    Ok(ws)
}

/// Connects `n` clients, client `i` subscribed to `conversations[i % len]`, at most
/// `concurrency` handshakes at a time. Fails if any client fails.
pub async fn connect_all(
    target: &Target,
    n: usize,
    conversations: &[i64],
    concurrency: usize,
    timeout: Duration,
) -> anyhow::Result<Vec<(usize, Ws)>> {
    connect_all_many(target, n, conversations, 1, concurrency, timeout).await
}

/// As [`connect_all`], each client subscribed to `per_client` conversations: client `i` to
/// `conversations[(i + j) % len]` for `j` in `0..per_client`.
pub async fn connect_all_many(
    target: &Target,
    n: usize,
    conversations: &[i64],
    per_client: usize,
    concurrency: usize,
    timeout: Duration,
) -> anyhow::Result<Vec<(usize, Ws)>> {
    let work =
        stream::iter(0..n)
            .map(|i| {
                let target = target.clone();
                let convs: Vec<i64> =
                    (0..per_client.max(1)).map(|j| conversations[(i + j) % conversations.len()]).collect();
                async move {
                    connect_many(&target, i, &convs).await.map(|ws| (i, ws)).with_context(|| format!("client {i}"))
                }
            })
            .buffer_unordered(concurrency.max(1))
            .collect::<Vec<_>>();
    let results = tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| anyhow!("connecting {n} clients took over {timeout:?}"))?;
    results.into_iter().collect()
}

/// What one reader saw.
#[derive(Default)]
pub struct ReaderResult {
    pub latencies_us: Vec<u32>,
    pub closed: Option<String>,
}

/// Reads until `stop` flips; every timed message adds a latency sample and bumps `delivered`.
pub fn spawn_reader(
    mut ws: Ws,
    proto: Proto,
    base: Instant,
    delivered: Arc<AtomicU64>,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<ReaderResult> {
    tokio::spawn(async move {
        let mut out = ReaderResult::default();
        loop {
            tokio::select! {
                _ = stop.changed() => break,
                msg = ws.next() => match msg {
                    Some(Ok(Message::Text(t))) => {
                        if let Some(sched) = parse_marker(&t) {
                            let now = base.elapsed().as_micros() as u64;
                            out.latencies_us.push(now.saturating_sub(sched).min(u32::MAX as u64) as u32);
                            delivered.fetch_add(1, Ordering::Relaxed);
                        } else if proto == Proto::SocketIo && t == "2" {
                            let _ = ws.send(Message::Text("3".into())).await;
                        }
                    }
                    Some(Ok(Message::Close(c))) => { out.closed = Some(format!("{c:?}")); break; }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => { out.closed = Some(e.to_string()); break; }
                    None => { out.closed = Some("eof".into()); break; }
                }
            }
        }
        let _ = tokio::time::timeout(Duration::from_millis(200), ws.close(None)).await;
        out
    })
}
