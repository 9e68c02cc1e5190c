//! Prometheus metrics. One registry per server (tests start many in one process), rendered as
//! text at `GET /metrics`.

use std::time::Instant;

use actix_web::{
    Error,
    body::MessageBody,
    dev::{ServiceRequest, ServiceResponse},
    middleware::Next,
    web::Data,
};
use prometheus::{HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder};

#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    pub http_requests: IntCounterVec,
    pub http_latency: HistogramVec,
    pub ws_open: IntGauge,
    pub ws_subscriptions: IntGauge,
    pub ws_events_out: IntCounter,
    pub ws_slow_closes: IntCounter,
    /// Provider webhooks by provider and verification result (`passed`, `failed`, `ignored`).
    pub webhook_verifications: IntCounterVec,
    /// Delivery jobs not yet done.
    pub outbox_depth: IntGauge,
    /// Delivery attempts by provider and outcome (`sent`, `transient`, `permanent`).
    pub outbox_attempts: IntCounterVec,
    /// Messages marked `FAILED` by the delivery worker, by provider.
    pub outbox_failures: IntCounterVec,
}

impl Metrics {
    pub fn new() -> anyhow::Result<Self> {
        let registry = Registry::new_custom(Some("confab".into()), None)?;
        let http_requests = IntCounterVec::new(
            Opts::new("http_requests_total", "HTTP requests by route pattern, method and status"),
            &["route", "method", "status"],
        )?;
        let http_latency = HistogramVec::new(
            HistogramOpts::new("http_request_duration_seconds", "HTTP request latency by route pattern")
                .buckets(vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]),
            &["route", "method"],
        )?;
        let ws_open = IntGauge::new("ws_open_connections", "Open WebSocket connections")?;
        let ws_subscriptions = IntGauge::new("ws_subscriptions", "Conversation subscriptions on this node")?;
        let ws_events_out = IntCounter::new("ws_events_fanned_out_total", "Event frames handed to WebSocket queues")?;
        let ws_slow_closes = IntCounter::new("ws_slow_consumer_closes_total", "Connections closed with 1013")?;
        let webhook_verifications = IntCounterVec::new(
            Opts::new("webhook_verifications_total", "Provider webhooks by provider and signature verification result"),
            &["provider", "result"],
        )?;
        let outbox_depth = IntGauge::new("outbox_depth", "Delivery jobs waiting or in flight")?;
        let outbox_attempts = IntCounterVec::new(
            Opts::new("outbox_attempts_total", "Delivery attempts by provider and outcome"),
            &["provider", "outcome"],
        )?;
        let outbox_failures = IntCounterVec::new(
            Opts::new("outbox_failures_total", "Messages the delivery worker marked FAILED, by provider"),
            &["provider"],
        )?;
        registry.register(Box::new(http_requests.clone()))?;
        registry.register(Box::new(http_latency.clone()))?;
        registry.register(Box::new(ws_open.clone()))?;
        registry.register(Box::new(ws_subscriptions.clone()))?;
        registry.register(Box::new(ws_events_out.clone()))?;
        registry.register(Box::new(ws_slow_closes.clone()))?;
        registry.register(Box::new(webhook_verifications.clone()))?;
        registry.register(Box::new(outbox_depth.clone()))?;
        registry.register(Box::new(outbox_attempts.clone()))?;
        registry.register(Box::new(outbox_failures.clone()))?;
        Ok(Self {
            registry,
            http_requests,
            http_latency,
            ws_open,
            ws_subscriptions,
            ws_events_out,
            ws_slow_closes,
            webhook_verifications,
            outbox_depth,
            outbox_attempts,
            outbox_failures,
        })
    }

    pub fn render(&self) -> String {
        TextEncoder::new().encode_to_string(&self.registry.gather()).unwrap_or_default()
    }
}

/// Counts and times every request by route pattern; unknown paths share the label
/// `unmatched`, so probing random URLs cannot blow up the series count.
pub async fn track(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let started = Instant::now();
    let metrics = req.app_data::<Data<Metrics>>().cloned();
    let method = req.method().to_string();
    let res = next.call(req).await?;
    if let Some(m) = metrics {
        let route = res.request().match_pattern().unwrap_or_else(|| "unmatched".to_owned());
        m.http_requests.with_label_values(&[&route, &method, res.status().as_str()]).inc();
        m.http_latency.with_label_values(&[&route, &method]).observe(started.elapsed().as_secs_f64());
    }
    Ok(res)
}
