//! The platform configuration of an application (Fynd `PlatformSchema`, seed 001): stored as
//! JSON in `applications.platform_config`, always answered whole with defaults filled in.
//! A few fields drive behaviour (login methods, registration, session policy, delete-account
//! rules); they are read through [`Settings`], which also validates their types on update.

use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::{
    core::{
        error::{ApiError, ApiResult},
        types::rfc3339,
    },
    users::application::ApplicationRow,
};

/// Server-managed keys: whatever a client sends for them is ignored.
const MANAGED: [&str; 4] = ["_id", "created_at", "updated_at", "__v"];

/// The defaults of a new application (the seed's example values, social logins off).
pub fn defaults(app: &ApplicationRow) -> Value {
    json!({
        "active": true,
        "mobile_image": "",
        "desktop_image": "",
        "social": {"facebook": false, "google": false, "apple": false, "account_kit": false},
        "flash_card": {"text": "", "text_color": "#FFFFFF", "background_color": "#EF5350"},
        "register": true,
        "forgot_password": true,
        "login": {"password": true, "otp": true},
        "skip_captcha": false,
        "display": app.name,
        "subtext": format!("Login to {}", app.name),
        "name": app.name,
        "meta": {"fynd_default": true},
        "required_fields": {
            "email": {"is_required": false, "level": "hard"},
            "mobile": {"is_required": true, "level": "hard"}
        },
        "register_required_fields": {
            "email": {"is_required": false, "level": "hard"},
            "mobile": {"is_required": true, "level": "hard"}
        },
        "skip_login": false,
        "look_and_feel": {"background_color": "#F5F5F5", "card_position": "center"},
        "social_tokens": {},
        "session_config": {"duration": 30, "type": "Days", "is_rolling": false},
        "delete_account_reasons": [],
        "delete_account_day": 7,
        "delete_account_consent": {"consent_text": ""}
    })
}

/// Overlays `patch` on `base`: objects merge key by key, anything else replaces; `null`
/// removes the key so its default shows again (the SDK rejects `null`, CONTRACT §9).
fn merge(base: &mut Value, patch: &Value) {
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    b.remove(k);
                } else if let Some(slot) = b.get_mut(k) {
                    merge(slot, v);
                } else {
                    b.insert(k.clone(), strip_nulls(v));
                }
            }
        }
        (b, p) => *b = strip_nulls(p),
    }
}

fn strip_nulls(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            Value::Object(m.iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| (k.clone(), strip_nulls(v))).collect())
        }
        Value::Array(a) => Value::Array(a.iter().filter(|v| !v.is_null()).map(strip_nulls).collect()),
        other => other.clone(),
    }
}

fn stored(app: &ApplicationRow) -> Map<String, Value> {
    match serde_json::from_str::<Value>(&app.platform_config) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    }
}

/// The whole configuration: defaults, overlaid with what the admin stored.
pub fn effective(app: &ApplicationRow) -> Value {
    let mut doc = defaults(app);
    let stored = stored(app);
    merge(&mut doc, &Value::Object(stored.clone()));
    if let Value::Object(m) = &mut doc {
        m.insert("_id".into(), json!(app.id.to_string()));
        m.insert("created_at".into(), json!(rfc3339(app.created_at)));
        let updated = stored.get("updated_at").cloned().unwrap_or_else(|| json!(rfc3339(app.created_at)));
        m.insert("updated_at".into(), updated);
        m.insert("__v".into(), stored.get("__v").cloned().unwrap_or(json!(0)));
    }
    doc
}

/// What clients see: the effective configuration without provider secrets (write-only).
pub fn public_view(app: &ApplicationRow) -> Value {
    let mut doc = effective(app);
    if let Some(Value::Object(tokens)) = doc.get_mut("social_tokens") {
        for provider in tokens.values_mut() {
            if let Value::Object(p) = provider {
                p.remove("app_secret");
            }
        }
    }
    doc
}

/// Applies an update (the body of `updatePlatformConfig`) and returns the JSON to store.
/// The merged document must still parse as [`Settings`], else 400 naming the field.
pub fn apply_update(app: &ApplicationRow, body: &Value, updated_at: &str) -> ApiResult<String> {
    let Value::Object(patch) = body else {
        return Err(ApiError::bad_request("invalid_body", "expected a PlatformSchema object"));
    };
    let mut current = Value::Object(stored(app));
    let version = current.get("__v").and_then(Value::as_i64).unwrap_or(0);
    let patch: Map<String, Value> =
        patch.iter().filter(|(k, _)| !MANAGED.contains(&k.as_str())).map(|(k, v)| (k.clone(), v.clone())).collect();
    merge(&mut current, &Value::Object(patch));
    let mut check = defaults(app);
    merge(&mut check, &current);
    crate::core::extract::parse::<Settings>(check.to_string().as_bytes())?;
    if let Value::Object(m) = &mut current {
        m.insert("updated_at".into(), json!(updated_at));
        m.insert("__v".into(), json!(version + 1));
    }
    Ok(current.to_string())
}

#[derive(Debug, Clone, Deserialize)]
pub struct LoginMethods {
    pub password: bool,
    pub otp: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum DurationUnit {
    Days,
    Hours,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SessionConfig {
    pub duration: u32,
    #[serde(rename = "type")]
    pub unit: DurationUnit,
    pub is_rolling: bool,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Requirement {
    pub is_required: bool,
    pub level: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Required {
    pub email: Requirement,
    pub mobile: Requirement,
}

#[derive(Debug, Clone, Deserialize)]
pub struct DeleteReason {
    pub reason_id: String,
    #[allow(dead_code)]
    pub reason_text: String,
}

/// The typed view of the fields confab acts on.
#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    pub active: bool,
    pub register: bool,
    pub forgot_password: bool,
    pub login: LoginMethods,
    pub register_required_fields: Required,
    pub session_config: SessionConfig,
    pub delete_account_day: u32,
    pub delete_account_reasons: Vec<DeleteReason>,
    pub name: String,
    pub display: String,
}

impl Settings {
    pub fn of(app: &ApplicationRow) -> ApiResult<Self> {
        serde_json::from_value(effective(app))
            .map_err(|e| ApiError::Internal(anyhow::anyhow!("stored platform config of application {}: {e}", app.id)))
    }

    /// How long a storefront session lives (from its start, or from its last use when rolling).
    pub fn session_ttl(&self) -> chrono::Duration {
        let n = i64::from(self.session_config.duration.max(1));
        match self.session_config.unit {
            DurationUnit::Days => chrono::Duration::days(n),
            DurationUnit::Hours => chrono::Duration::hours(n),
        }
    }

    /// A field is mandatory at registration when required at the "hard" level.
    pub fn email_required(&self) -> bool {
        let r = &self.register_required_fields.email;
        r.is_required && r.level == "hard"
    }

    pub fn mobile_required(&self) -> bool {
        let r = &self.register_required_fields.mobile;
        r.is_required && r.level == "hard"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(config: &str) -> ApplicationRow {
        ApplicationRow {
            id: 7,
            company_id: 1,
            name: "Shop".into(),
            domain: "shop.test".into(),
            token_hash: String::new(),
            platform_config: config.into(),
            created_at: crate::core::types::now(),
        }
    }

    #[test]
    fn defaults_fill_missing_fields_and_updates_merge() {
        let a = app("{}");
        let doc = effective(&a);
        assert_eq!(doc["_id"], "7");
        assert_eq!(doc["session_config"]["duration"], 30);
        assert_eq!(doc["name"], "Shop");
        let stored = apply_update(
            &a,
            &json!({"login": {"otp": false}, "_id": "x", "display": null}),
            "2026-01-01T00:00:00.000Z",
        )
        .unwrap();
        let b = app(&stored);
        let doc = effective(&b);
        assert_eq!(doc["login"], json!({"password": true, "otp": false}));
        assert_eq!(doc["_id"], "7");
        assert_eq!(doc["__v"], 1);
        assert_eq!(doc["display"], "Shop");
        assert!(!Settings::of(&b).unwrap().login.otp);
    }

    #[test]
    fn wrong_types_are_rejected_with_the_field() {
        let e = apply_update(&app("{}"), &json!({"session_config": {"duration": "long"}}), "t").unwrap_err();
        assert!(e.body().fields.unwrap().contains_key("session_config.duration"));
        let e = apply_update(&app("{}"), &json!({"session_config": {"type": "Weeks"}}), "t").unwrap_err();
        assert_eq!(e.status_and_code().0, 400);
    }

    #[test]
    fn provider_secrets_are_write_only() {
        let a = app(r#"{"social_tokens":{"facebook":{"app_id":"1","app_secret":"s"}}}"#);
        let doc = public_view(&a);
        assert_eq!(doc["social_tokens"]["facebook"], json!({"app_id": "1"}));
    }
}
