//! Webhook subscription operations (README "Outgoing webhooks"): admins of a company manage
//! its subscriptions; every operation is scoped to the caller's company.

use super::{model::*, store};
use crate::core::{
    crypto::random_token,
    db::Db,
    error::{ApiError, ApiResult},
    net,
    query::Paging,
    state::AppState,
    types::now,
};

/// Longest subscription URL accepted.
const MAX_URL: usize = 2048;

/// A new signing secret: `whsec_` and 32 random bytes (base64url). Receivers use the whole
/// string, as UTF-8 bytes, as the HMAC key.
fn new_secret() -> String {
    format!("whsec_{}", random_token())
}

fn seal(st: &AppState, secrets: &[SigningSecret]) -> ApiResult<String> {
    let json = serde_json::to_vec(secrets).map_err(anyhow::Error::from)?;
    Ok(st.data_key.encrypt(&json))
}

fn unseal(st: &AppState, sealed: &str) -> ApiResult<Vec<SigningSecret>> {
    let json = st.data_key.decrypt(sealed)?;
    Ok(serde_json::from_slice(&json).map_err(anyhow::Error::from)?)
}

/// The secrets that sign now, newest first.
pub fn signing_secrets(st: &AppState, sealed: &str) -> ApiResult<Vec<String>> {
    let t = now();
    Ok(unseal(st, sealed)?.into_iter().filter(|s| s.until.is_none_or(|u| u > t)).map(|s| s.secret).collect())
}

/// A fresh secret and the sealed list holding only it (a new subscription's).
pub fn first_secret(st: &AppState) -> ApiResult<(String, String)> {
    let secret = new_secret();
    let sealed = seal(st, &[SigningSecret { secret: secret.clone(), until: None }])?;
    Ok((secret, sealed))
}

/// A receiver URL: absolute `http`/`https`, at most 2048 characters, no credentials in it, and
/// (unless `CONFAB_WEBHOOK_ALLOW_PRIVATE`) a host that resolves to public addresses only
/// (`core::net`, the check every outbound call makes). 400 `validation_failed` on `field`.
pub async fn check_url(st: &AppState, field: &str, raw: &str) -> ApiResult<String> {
    let raw = raw.trim();
    if raw.len() > MAX_URL {
        return Err(ApiError::field(field, format!("must be at most {MAX_URL} characters")));
    }
    let url = url::Url::parse(raw).map_err(|_| ApiError::field(field, "must be an absolute http or https URL"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
        return Err(ApiError::field(field, "must be an absolute http or https URL"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(ApiError::field(field, "must not contain credentials"));
    }
    if !st.config.webhook_allow_private {
        net::check_public_url(&url).await.map_err(|why| ApiError::field(field, why))?;
    }
    Ok(url.to_string())
}

fn check_events(events: &[String]) -> ApiResult<Vec<String>> {
    if events.is_empty() {
        return Err(ApiError::field("events", "must name at least one event"));
    }
    let mut out: Vec<String> = Vec::new();
    for e in events {
        if !EVENT_TYPES.contains(&e.as_str()) {
            return Err(ApiError::field("events", format!("must be among {}", EVENT_TYPES.join(", "))));
        }
        if !out.contains(e) {
            out.push(e.clone());
        }
    }
    Ok(out)
}

pub async fn list(st: &AppState, company_id: i64) -> ApiResult<Vec<SubscriptionView>> {
    let rows = st.db.run(move |c| store::list(c, company_id)).await?;
    Ok(rows.iter().map(SubscriptionView::from).collect())
}

pub async fn get(st: &AppState, company_id: i64, id: i64) -> ApiResult<SubscriptionView> {
    let row = st.db.run(move |c| store::get(c, company_id, id)).await?;
    Ok(SubscriptionView::from(&row))
}

/// `POST /webhook-subscriptions`: the new subscription and its secret (shown once).
pub async fn create(st: &AppState, company_id: i64, b: SubscriptionBody) -> ApiResult<SubscriptionWithSecret> {
    let events = check_events(&b.events)?;
    let url = check_url(st, "url", &b.url).await?;
    let (secret, sealed) = first_secret(st)?;
    let active = b.active.unwrap_or(true);
    let row = st
        .db
        .write(move |c| {
            store::insert(
                c,
                &store::NewSubscription {
                    company_id,
                    url: &url,
                    events: &events,
                    active,
                    secrets: &sealed,
                    bot_id: None,
                },
            )
        })
        .await?;
    Ok(SubscriptionWithSecret { subscription: SubscriptionView::from(&row), secret })
}

pub async fn update(st: &AppState, company_id: i64, id: i64, p: SubscriptionPatch) -> ApiResult<SubscriptionView> {
    let events = p.events.as_deref().map(check_events).transpose()?;
    let url = match &p.url {
        Some(u) => Some(check_url(st, "url", u).await?),
        None => None,
    };
    let row =
        st.db.write(move |c| store::update(c, company_id, id, url.as_deref(), events.as_deref(), p.active)).await?;
    Ok(SubscriptionView::from(&row))
}

pub async fn delete(st: &AppState, company_id: i64, id: i64) -> ApiResult<()> {
    st.db.write(move |c| store::delete(c, company_id, id)).await
}

/// `POST …/rotate-secret`: a new secret signs from now on; the ones that were valid keep
/// signing for 24 hours (each delivery carries one `v1=` per valid secret), so receivers can
/// switch without missing a delivery. Expired secrets are dropped.
pub async fn rotate(st: &AppState, company_id: i64, id: i64) -> ApiResult<SubscriptionWithSecret> {
    let state = st.clone();
    let (row, secret) = st
        .db
        .write(move |c| {
            let row = store::get(c, company_id, id)?;
            let (secret, sealed) = rotated(&state, &row.secrets)?;
            Ok((store::set_secrets(c, company_id, id, &sealed)?, secret))
        })
        .await?;
    Ok(SubscriptionWithSecret { subscription: SubscriptionView::from(&row), secret })
}

fn rotated(st: &AppState, sealed: &str) -> ApiResult<(String, String)> {
    let t = now();
    let old_until = t + OLD_SECRET_TTL;
    let secret = new_secret();
    let mut list = vec![SigningSecret { secret: secret.clone(), until: None }];
    list.extend(
        unseal(st, sealed)?
            .into_iter()
            .filter(|s| s.until.is_none_or(|u| u > t))
            .map(|s| SigningSecret { until: Some(s.until.map_or(old_until, |u| u.min(old_until))), ..s }),
    );
    Ok((secret, seal(st, &list)?))
}

/// `GET …/deliveries`: newest first, each with its attempts.
pub async fn deliveries(
    st: &AppState,
    company_id: i64,
    id: i64,
    status: Option<String>,
    paging: Paging,
) -> ApiResult<DeliveryPage> {
    if let Some(s) = &status
        && ![PENDING, DELIVERED, FAILED].contains(&s.as_str())
    {
        return Err(ApiError::field("status", "must be pending, delivered or failed"));
    }
    st.db
        .run(move |c| {
            store::get(c, company_id, id)?;
            let (rows, total) =
                store::deliveries_page(c, company_id, id, status.as_deref(), paging.offset, paging.size)?;
            let items = views(c, &rows)?;
            Ok(DeliveryPage { items, total, page: paging.page, limit: paging.size })
        })
        .await
}

fn views(c: &mut Db, rows: &[DeliveryRow]) -> ApiResult<Vec<DeliveryView>> {
    let ids: Vec<i64> = rows.iter().map(|d| d.id).collect();
    let attempts = store::attempts_of(c, &ids)?;
    Ok(rows
        .iter()
        .map(|d| {
            let mine = attempts.iter().filter(|a| a.delivery_id == d.id).map(AttemptView::from).collect();
            DeliveryView::new(d, mine)
        })
        .collect())
}

/// `POST …/deliveries/{deliveryId}/retry`: sends a delivered or dead-lettered event again.
pub async fn retry(st: &AppState, company_id: i64, id: i64, delivery_id: i64) -> ApiResult<DeliveryView> {
    let view = st
        .db
        .write(move |c| {
            let d = store::replay(c, company_id, id, delivery_id)?;
            Ok(views(c, &[d])?.remove(0))
        })
        .await?;
    st.webhook_wake.notify_one();
    Ok(view)
}
