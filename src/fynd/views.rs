//! Fynd wire types shared by the platform and storefront routes: snake_case, ids as strings,
//! absent optional fields left out rather than `null` (CONTRACT §9 SDK rules; seed 001
//! `UserSchema`, `PaginationSchema`, `UserGroupResponseSchema`).

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::{
    core::{
        error::{ApiError, ApiResult},
        query::Paging,
        types::{Phone, rfc3339},
    },
    users::{
        customer::Customer,
        group::{Condition, GroupRow},
    },
};

#[derive(Debug, Serialize, ToSchema)]
pub struct EmailView {
    pub email: String,
    pub active: bool,
    pub primary: bool,
    pub verified: bool,
}

/// `PhoneNumber`: the national number and a numeric country code.
#[derive(Debug, Serialize, ToSchema)]
pub struct PhoneView {
    pub phone: String,
    pub country_code: i32,
    pub active: bool,
    pub primary: bool,
    pub verified: bool,
}

/// `UserSchema` (and, with `status`/`archive`/`deleted_on`, `UserSearchSchema`).
#[derive(Debug, Serialize, ToSchema)]
pub struct UserView {
    pub _id: String,
    pub user_id: String,
    pub application_id: String,
    pub first_name: String,
    pub last_name: String,
    #[schema(value_type = Object)]
    pub meta: Value,
    pub phone_numbers: Vec<PhoneView>,
    pub emails: Vec<EmailView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gender: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dob: Option<String>,
    pub active: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile_pic_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    pub account_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub archive: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deleted_on: Option<String>,
}

impl UserView {
    /// `application_id` is the user's application, or the asking one for a company-wide
    /// contact that has not registered on any storefront yet.
    pub fn new(c: Customer, application_id: i64) -> Self {
        let u = c.user;
        let active = u.is_active();
        Self {
            _id: u.id.to_string(),
            user_id: u.id.to_string(),
            application_id: u.application_id.unwrap_or(application_id).to_string(),
            first_name: u.first_name,
            last_name: u.last_name,
            meta: serde_json::from_str::<Value>(&u.meta)
                .ok()
                .filter(Value::is_object)
                .unwrap_or_else(|| Value::Object(Default::default())),
            phone_numbers: c
                .phones
                .iter()
                .map(|p| PhoneView {
                    phone: p.national().to_owned(),
                    country_code: p.country_code,
                    active: p.active,
                    primary: p.is_primary,
                    verified: p.verified,
                })
                .collect(),
            emails: c
                .emails
                .into_iter()
                .map(|e| EmailView { email: e.email, active: e.active, primary: e.is_primary, verified: e.verified })
                .collect(),
            gender: u.gender,
            dob: u.dob,
            active,
            profile_pic_url: u.profile_pic_url,
            username: u.username,
            account_type: "user".into(),
            external_id: u.external_id,
            created_at: rfc3339(u.created_at),
            updated_at: rfc3339(u.updated_at),
            status: None,
            archive: None,
            deleted_on: None,
        }
    }

    /// The platform list/search form: adds the account state.
    pub fn with_state(mut self, status: &str, deleted_at: Option<chrono::NaiveDateTime>) -> Self {
        self.status = Some(status.to_owned());
        self.archive = Some(status == "archived");
        self.deleted_on = deleted_at.map(rfc3339);
        self
    }
}

pub fn user_view(c: Customer, application_id: i64) -> UserView {
    UserView::new(c, application_id)
}

pub fn search_view(c: Customer, application_id: i64) -> UserView {
    let (status, deleted_at) = (c.user.status.clone(), c.user.deleted_at);
    UserView::new(c, application_id).with_state(&status, deleted_at)
}

/// `PaginationSchema`.
#[derive(Debug, Serialize, ToSchema)]
pub struct PageView {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub current: i64,
    pub size: i64,
    pub item_total: i64,
    pub has_next: bool,
}

impl PageView {
    pub fn new(current: i64, size: i64, item_total: i64) -> Self {
        Self { kind: "number", current, size, item_total, has_next: current * size < item_total }
    }
}

/// `page_no` (1-based, default 1, at most 10⁶) and `page_size` (1–100, default 10); out of
/// range is 400 `validation_failed` naming the field. The rule every paged route shares.
pub fn paging(page_no: Option<i64>, page_size: Option<i64>) -> ApiResult<Paging> {
    Paging::parse(page_no, page_size, 10, ("page_no", "page_size"))
}

/// `UserGroupResponseSchema`.
#[derive(Debug, Serialize, ToSchema)]
pub struct GroupView {
    pub _id: String,
    pub uid: i64,
    pub name: String,
    pub description: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file_url: Option<String>,
    pub status: String,
    pub is_active: bool,
    #[serde(rename = "type")]
    pub kind: String,
    /// A `conditional` group's rules; `[]` for groups of listed members.
    pub conditions: Vec<Condition>,
    pub application_id: String,
    pub created_at: String,
    pub modified_at: String,
    pub __v: i64,
}

impl From<GroupRow> for GroupView {
    fn from(g: GroupRow) -> Self {
        Self {
            _id: g.id.to_string(),
            uid: g.id,
            is_active: g.status == "active",
            conditions: g.conditions(),
            name: g.name,
            description: g.description,
            file_url: g.file_url,
            status: g.status,
            kind: g.kind,
            application_id: g.application_id.to_string(),
            created_at: rfc3339(g.created_at),
            modified_at: rfc3339(g.updated_at),
            __v: 0,
        }
    }
}

/// An id the SDK sends as a JSON string (`"42"`); numbers are accepted too.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum IdParam {
    Text(String),
    Number(i64),
}

impl IdParam {
    /// Not a number means no such record: 404 like any missing id.
    pub fn id(&self) -> ApiResult<i64> {
        match self {
            IdParam::Number(n) => Ok(*n),
            IdParam::Text(s) => s.trim().parse().map_err(|_| ApiError::NotFound),
        }
    }
}

pub fn parse_id(s: &str) -> ApiResult<i64> {
    s.trim().parse().map_err(|_| ApiError::NotFound)
}

/// A phone from Fynd's split form (`country_code` "91" or "+91", national `mobile`), or one
/// number in international form.
pub fn phone_from_parts(country_code: Option<&str>, number: &str, field: &str) -> ApiResult<Phone> {
    let number = number.trim();
    let text = match country_code.map(|c| c.trim().trim_start_matches('+')).filter(|c| !c.is_empty()) {
        Some(cc) if !number.starts_with('+') => format!("+{cc}{number}"),
        _ => number.to_owned(),
    };
    Phone::try_from(text).map_err(|e| ApiError::field(field, e.0))
}

pub fn email(value: &str, field: &str) -> ApiResult<crate::core::types::Email> {
    crate::core::types::Email::try_from(value.to_owned()).map_err(|e| ApiError::field(field, e.0))
}

/// `EditMobileRequestSchema` / `SendVerificationLinkMobileRequestSchema`: one of the user's
/// numbers, in a body or (on `DELETE`) a query string. `active`, `primary` and `verified` are
/// the seed's and are ignored: the server decides them.
#[derive(Debug, Deserialize, ToSchema, utoipa::IntoParams)]
pub struct MobileBody {
    pub phone: String,
    pub country_code: Option<String>,
    pub active: Option<bool>,
    pub primary: Option<bool>,
    pub verified: Option<bool>,
}

impl MobileBody {
    pub fn number(&self) -> ApiResult<Phone> {
        phone_from_parts(self.country_code.as_deref(), &self.phone, "phone")
    }
}

/// `EditEmailRequestSchema`: one of the user's e-mails, in a body or (on `DELETE`) a query
/// string.
#[derive(Debug, Deserialize, ToSchema, utoipa::IntoParams)]
pub struct EmailBody {
    pub email: String,
}

impl EmailBody {
    pub fn address(&self) -> ApiResult<crate::core::types::Email> {
        email(&self.email, "email")
    }
}
