use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::core::{
    db::schema::{invites, users},
    types::Role,
};

/// Status of a staff account whose e-mail is not verified yet: it cannot log in and does not
/// hold its address.
pub const PENDING: &str = "pending";

#[derive(Debug, Clone, Queryable, Selectable, Identifiable)]
#[diesel(table_name = users)]
pub struct UserRow {
    pub id: i64,
    pub company_id: i64,
    pub application_id: Option<i64>,
    pub role: String,
    pub first_name: String,
    pub last_name: String,
    pub username: Option<String>,
    pub gender: Option<String>,
    pub dob: Option<String>,
    pub password_hash: Option<String>,
    pub status: String,
    pub external_id: Option<String>,
    pub meta: String,
    pub attributes: String,
    pub profile_pic_url: Option<String>,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
    pub deleted_at: Option<NaiveDateTime>,
    /// The customer sent STOP: no campaign messages (issue 23).
    pub opted_out: bool,
    /// The customer's WhatsApp business-scoped user id (`US.1349…`), set once known; a
    /// customer may have it and no phone.
    pub wa_bsuid: Option<String>,
}

impl UserRow {
    pub fn role(&self) -> Role {
        Role::parse(&self.role).unwrap_or(Role::Customer)
    }

    /// Only active users may log in or act (blocked, archived, deleted and deactivated may not).
    pub fn is_active(&self) -> bool {
        self.status == "active" && self.deleted_at.is_none()
    }
}

#[derive(Debug, Insertable)]
#[diesel(table_name = users)]
pub struct NewUser<'a> {
    pub company_id: i64,
    pub application_id: Option<i64>,
    pub role: &'a str,
    pub first_name: &'a str,
    pub last_name: &'a str,
    pub password_hash: Option<&'a str>,
    pub status: &'a str,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

/// A user with the primary e-mail and phone, as most views need them.
#[derive(Debug, Clone)]
pub struct Person {
    pub user: UserRow,
    pub email: Option<String>,
    pub phone: Option<String>,
}

/// An e-mail (lower-cased) or an E.164 phone of an account, as someone from outside it proves
/// it (`auth::proof`).
#[derive(Debug, Clone, Copy)]
pub enum Contact<'a> {
    Email(&'a str),
    Phone(&'a str),
}

/// An open invitation to join a company as staff: what signing up with its token grants.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = invites)]
pub struct InviteRow {
    pub id: i64,
    pub company_id: i64,
    pub role: String,
    pub email: String,
}
