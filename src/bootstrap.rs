//! First start (CONTRACT §1): on an empty database, create the company "Default", its admin
//! and a sandbox channel, once. The `instance` row (a single-row table) makes this happen
//! exactly once even when several nodes start together on one PostgreSQL.

use diesel::prelude::*;
use secrecy::ExposeSecret;

use crate::{
    auth::password,
    core::{
        config::Config,
        crypto::{DataKey, random_password, random_token, token_hash},
        db::{Db, Pool, schema::instance},
        error::ApiError,
        types::{Email, Role, now},
    },
    users::store,
};

/// What the first start created; printed once by `confab serve`.
#[derive(Debug, Clone)]
pub struct Bootstrapped {
    pub admin_email: String,
    /// Only when generated (not when `CONFAB_ADMIN_PASSWORD` was set).
    pub generated_password: Option<String>,
    pub console_url: String,
}

pub fn run(db: &Pool, config: &Config, data_key: &DataKey) -> anyhow::Result<Option<Bootstrapped>> {
    let done = db.write_blocking(|c| Ok(instance::table.count().get_result::<i64>(c)? > 0))?;
    if done {
        return Ok(None);
    }
    let email = Email::try_from(config.admin_email.clone()).map_err(|e| anyhow::anyhow!("CONFAB_ADMIN_EMAIL {e}"))?;
    let (password_text, generated) = match &config.admin_password {
        Some(p) => {
            // The same password rules as every other account (CONTRACT §5), before anything
            // is written: a weak first-start password is a start-up error, not an account.
            password::check_new(p.expose_secret(), Some(&email))
                .map_err(|e| anyhow::anyhow!("CONFAB_ADMIN_PASSWORD {}", password::policy_message(&e)))?;
            (p.expose_secret().to_owned(), false)
        }
        None => {
            let p = random_password();
            (p.clone(), true)
        }
    };
    let hash = password::hash(&password_text)?;
    let result = db.write_blocking(|c| {
        diesel::insert_into(instance::table)
            .values((instance::id.eq(1_i64), instance::bootstrapped_at.eq(now())))
            .execute(c)?;
        let company_id = store::insert_company(c, "Default")?;
        let admin =
            store::create_person(c, company_id, Role::Admin, "Admin", "", Some(&hash), Some(&email), None, true)?;
        insert_sandbox_channel(c, company_id, data_key)?;
        // CONTRACT §9: the Default company's first Fynd application. Its token is not shown
        // at start; an admin issues one with `POST /application/{id}/token`.
        crate::users::application::insert(
            c,
            company_id,
            "Default",
            &public_host(config),
            &token_hash(&random_token()),
        )?;
        store::audit(c, Some(company_id), Some(admin.id), "bootstrap", "", serde_json::json!({}))?;
        Ok(())
    });
    match result {
        Ok(()) => Ok(Some(Bootstrapped {
            admin_email: email.as_str().to_owned(),
            generated_password: generated.then_some(password_text),
            console_url: config.console_url(),
        })),
        // Another node bootstrapped between our check and our insert.
        Err(e) if e.is_unique_violation() => Ok(None),
        Err(e) => Err(anyhow::anyhow!("first-start bootstrap: {e:?}")),
    }
}

/// The sandbox channel needs no external account (CONTRACT §1), only a webhook secret.
pub fn insert_sandbox_channel(c: &mut Db, company_id: i64, data_key: &DataKey) -> Result<i64, ApiError> {
    let secrets = serde_json::json!({ "webhookSecret": random_token() });
    let sealed = data_key.encrypt(secrets.to_string().as_bytes());
    crate::messaging::store::insert_channel(
        c,
        company_id,
        &crate::messaging::store::ChannelFields {
            provider: "sandbox",
            phone_e164: "+14155550100",
            phone_number_id: None,
            display_name: "Sandbox",
            secrets: &sealed,
            is_default: true,
        },
    )
}

/// The host of `CONFAB_PUBLIC_URL` (the Default application's domain).
fn public_host(config: &Config) -> String {
    let rest = config.public_url.split_once("://").map_or(config.public_url.as_str(), |(_, r)| r);
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
    let host = if host.starts_with('[') { host } else { host.split(':').next().unwrap_or(host) };
    if host.is_empty() { "localhost".to_owned() } else { host.to_ascii_lowercase() }
}
