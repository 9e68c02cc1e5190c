//! Parse, don't validate: the small value types every feature shares. Each deserialises
//! through its parser, so bad input is a 400 with a field error before a handler runs.

use std::fmt;

use chrono::{NaiveDateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

/// Current UTC time truncated to milliseconds: both backends store milliseconds, so values
/// read back compare equal to the ones written (CONTRACT §2 timestamps).
pub fn now() -> NaiveDateTime {
    let t = Utc::now().naive_utc();
    t - chrono::Duration::nanoseconds(i64::from(t.and_utc().timestamp_subsec_nanos() % 1_000_000))
}

/// `2021-01-08T08:55:30.422Z`.
pub fn rfc3339(t: NaiveDateTime) -> String {
    t.and_utc().to_rfc3339_opts(SecondsFormat::Millis, true)
}

pub mod rfc3339_opt {
    use chrono::NaiveDateTime;
    use serde::Serializer;

    pub fn serialize<S: Serializer>(t: &Option<NaiveDateTime>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_str(&super::rfc3339(*t)),
            None => s.serialize_none(),
        }
    }
}

pub mod rfc3339_req {
    use chrono::NaiveDateTime;
    use serde::Serializer;

    pub fn serialize<S: Serializer>(t: &NaiveDateTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::rfc3339(*t))
    }
}

/// Why a value did not parse; becomes the `fields` entry of a 400.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError(pub String);

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A lower-cased e-mail address.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Email(String);

impl Email {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Email {
    type Error = FieldError;

    fn try_from(s: String) -> Result<Self, FieldError> {
        let s = s.trim().to_lowercase();
        let valid = s.len() <= 254
            && !s.chars().any(|c| c.is_whitespace() || c.is_control())
            && matches!(s.split_once('@'), Some((local, domain)) if !local.is_empty() && !domain.is_empty() && !domain.contains('@'));
        if valid { Ok(Self(s)) } else { Err(FieldError("must be an e-mail address".into())) }
    }
}

impl From<Email> for String {
    fn from(e: Email) -> String {
        e.0
    }
}

/// A phone number in E.164 (`+15551234567`), normalised with libphonenumber's metadata.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Phone {
    e164: String,
    country_code: u16,
}

impl Phone {
    pub fn as_str(&self) -> &str {
        &self.e164
    }

    pub fn country_code(&self) -> u16 {
        self.country_code
    }
}

impl TryFrom<String> for Phone {
    type Error = FieldError;

    fn try_from(s: String) -> Result<Self, FieldError> {
        let trimmed = s.trim();
        // Provider payloads (WhatsApp `wa_id`, Twilio `whatsapp:+…`) carry numbers without the
        // plus or with a scheme; both mean an international number.
        let trimmed = trimmed.strip_prefix("whatsapp:").unwrap_or(trimmed);
        let with_plus = if trimmed.starts_with('+') {
            trimmed.to_owned()
        } else {
            format!("+{}", trimmed.trim_start_matches("00"))
        };
        // Parsing runs the metadata's regexes (about 6 % of the server's CPU per ingested
        // message); customers write again and again from the same numbers.
        static PARSED: std::sync::LazyLock<moka::sync::Cache<String, Phone>> =
            std::sync::LazyLock::new(|| moka::sync::Cache::new(10_000));
        if let Some(phone) = PARSED.get(&with_plus) {
            return Ok(phone);
        }
        let parsed = phonenumber::parse(None, &with_plus)
            .map_err(|_| FieldError("must be a phone number in international format".into()))?;
        let e164 = parsed.format().mode(phonenumber::Mode::E164).to_string();
        // Strict validity would refuse the +1 555 numbers Meta and Twilio hand out as test
        // numbers; a parseable number of E.164 length (8 to 15 digits) is accepted.
        let digits = e164.len() - 1;
        if !phonenumber::is_valid(&parsed) && !(8..=15).contains(&digits) {
            return Err(FieldError("is not a valid phone number".into()));
        }
        let phone = Self { e164, country_code: parsed.code().value() };
        PARSED.insert(with_plus, phone.clone());
        Ok(phone)
    }
}

impl From<Phone> for String {
    fn from(p: Phone) -> String {
        p.e164
    }
}

impl std::str::FromStr for Phone {
    type Err = FieldError;

    fn from_str(s: &str) -> Result<Self, FieldError> {
        Self::try_from(s.to_owned())
    }
}

/// Roles of CONTRACT §2. `bot` is reserved for automated senders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    Agent,
    Customer,
    Bot,
    /// An auth client's own account (client-credentials tokens of the Fynd SDK): company-admin
    /// API access, no password, not an agent.
    Service,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Agent => "agent",
            Role::Customer => "customer",
            Role::Bot => "bot",
            Role::Service => "service",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "admin" => Some(Role::Admin),
            "agent" => Some(Role::Agent),
            "customer" => Some(Role::Customer),
            "bot" => Some(Role::Bot),
            "service" => Some(Role::Service),
            _ => None,
        }
    }

    /// Agents and admins work the console and the messaging API.
    pub fn is_staff(self) -> bool {
        matches!(self, Role::Admin | Role::Agent)
    }

    /// Who may be assigned conversations and work them through the messaging API and `/ws`:
    /// staff and agent bots (issue 23).
    pub fn works_conversations(self) -> bool {
        matches!(self, Role::Admin | Role::Agent | Role::Bot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phones_normalise_to_e164() {
        for raw in ["+94 71 793 6775", "94717936775", "whatsapp:+94717936775", "0094717936775"] {
            assert_eq!(Phone::try_from(raw.to_owned()).unwrap().as_str(), "+94717936775", "{raw}");
        }
        assert!(Phone::try_from("hello".to_owned()).is_err());
        assert!(Phone::try_from("+1555".to_owned()).is_err());
    }

    #[test]
    fn emails_are_lower_cased_and_checked() {
        assert_eq!(Email::try_from(" Ada@Example.COM ".to_owned()).unwrap().as_str(), "ada@example.com");
        for bad in ["", "ada", "@x", "a@", "a b@c.d", "a@b@c"] {
            assert!(Email::try_from(bad.to_owned()).is_err(), "{bad}");
        }
    }

    #[test]
    fn now_has_millisecond_precision() {
        assert_eq!(now().and_utc().timestamp_subsec_nanos() % 1_000_000, 0);
    }
}
