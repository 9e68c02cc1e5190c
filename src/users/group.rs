//! User groups of an application (Fynd platform `user_group` routes): a named set of
//! customers. The numeric id is both the group's `_id` (as a string) and its `uid`.
//!
//! A group's members are listed one by one (`basic`, `bulk`), or, for a `conditional` group,
//! are the application's customers whose attributes meet every one of its [`Condition`]s,
//! evaluated whenever the members are asked for (so they follow attribute changes).

use std::cmp::Ordering;

use chrono::NaiveDateTime;
use diesel::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::core::{
    db::{
        Db,
        schema::{user_group_members, user_groups, user_phones, users},
    },
    error::{ApiError, ApiResult},
    query::{LIKE_ESCAPE, like_contains},
    types::{Role, now},
};

/// One rule of a conditional group (the SDK's `ConditionsSchema`): the customer attribute
/// `user_attribute_definition_id` compared by `type` with `value`. confab keys customer
/// attributes by slug (`updateUserAttributes`), so the definition id is the attribute's slug.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Condition {
    pub user_attribute_definition_id: String,
    #[serde(rename = "type")]
    pub op: Op,
    /// Compared as a number when both sides are numbers, else as text; `in`/`nin` take a
    /// comma-separated list; ignored by `exists`/`not_exists`.
    #[serde(default)]
    pub value: String,
}

/// How a [`Condition`] compares. On a multi-valued (array) attribute the positive forms hold
/// when any item matches and the negative ones (`ne`, `nin`, `not_contains`) when none does;
/// a missing or `null` attribute meets only the negative forms and `not_exists`.
/// `contains`, `starts_with` and `ends_with` ignore case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    Eq,
    Ne,
    Gt,
    Gte,
    Lt,
    Lte,
    In,
    Nin,
    Contains,
    NotContains,
    StartsWith,
    EndsWith,
    Exists,
    NotExists,
}

/// Most rules one group may have.
pub const MAX_CONDITIONS: usize = 20;

impl Condition {
    /// Whether a customer with these attributes meets this rule.
    pub fn holds(&self, attributes: &Map<String, Value>) -> bool {
        let (op, negated) = match self.op {
            Op::Ne => (Op::Eq, true),
            Op::Nin => (Op::In, true),
            Op::NotContains => (Op::Contains, true),
            Op::NotExists => (Op::Exists, true),
            op => (op, false),
        };
        let found = match attributes.get(&self.user_attribute_definition_id).filter(|v| !v.is_null()) {
            None => false,
            Some(_) if op == Op::Exists => true,
            Some(Value::Array(items)) => items.iter().any(|item| self.matches(op, item)),
            Some(item) => self.matches(op, item),
        };
        found != negated
    }

    fn matches(&self, op: Op, item: &Value) -> bool {
        let text = match item {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let (lower, wanted) = (text.to_lowercase(), self.value.to_lowercase());
        match op {
            Op::Eq => compare(&text, &self.value) == Some(Ordering::Equal),
            Op::Gt => compare(&text, &self.value) == Some(Ordering::Greater),
            Op::Gte => matches!(compare(&text, &self.value), Some(Ordering::Greater | Ordering::Equal)),
            Op::Lt => compare(&text, &self.value) == Some(Ordering::Less),
            Op::Lte => matches!(compare(&text, &self.value), Some(Ordering::Less | Ordering::Equal)),
            Op::In => self.value.split(',').any(|v| compare(&text, v.trim()) == Some(Ordering::Equal)),
            Op::Contains => lower.contains(&wanted),
            Op::StartsWith => lower.starts_with(&wanted),
            Op::EndsWith => lower.ends_with(&wanted),
            // The negative forms are their positive forms negated ([`Condition::holds`]).
            Op::Ne | Op::Nin | Op::NotContains | Op::Exists | Op::NotExists => false,
        }
    }
}

/// Numbers by value (`"10"` > `"9"`), anything else as text (ISO dates order as text).
fn compare(a: &str, b: &str) -> Option<Ordering> {
    match (a.trim().parse::<f64>(), b.trim().parse::<f64>()) {
        (Ok(x), Ok(y)) => x.partial_cmp(&y),
        _ => Some(a.cmp(b)),
    }
}

/// Checks a conditional group's rules (1 to [`MAX_CONDITIONS`], attribute slugs of 1–100
/// characters, values up to 500) and returns them as stored.
pub fn stored_conditions(conditions: &[Condition]) -> ApiResult<String> {
    if conditions.is_empty() || conditions.len() > MAX_CONDITIONS {
        return Err(ApiError::field("conditions", format!("a conditional group has 1 to {MAX_CONDITIONS} conditions")));
    }
    for (i, c) in conditions.iter().enumerate() {
        let slug = c.user_attribute_definition_id.trim();
        if slug.is_empty() || slug.len() > 100 {
            let field = format!("conditions[{i}].user_attribute_definition_id");
            return Err(ApiError::field(&field, "must be an attribute slug of 1 to 100 characters"));
        }
        if c.value.len() > 500 {
            return Err(ApiError::field(&format!("conditions[{i}].value"), "must be at most 500 characters"));
        }
    }
    Ok(serde_json::to_string(conditions).map_err(anyhow::Error::from)?)
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = user_groups)]
pub struct GroupRow {
    pub id: i64,
    pub company_id: i64,
    pub application_id: i64,
    pub name: String,
    pub description: String,
    pub file_url: Option<String>,
    pub status: String,
    pub kind: String,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
    /// JSON array of [`Condition`]s; `[]` unless the group is conditional.
    pub conditions: String,
}

impl GroupRow {
    pub fn conditions(&self) -> Vec<Condition> {
        serde_json::from_str(&self.conditions).unwrap_or_default()
    }
}

pub struct NewGroup<'a> {
    pub name: &'a str,
    pub description: &'a str,
    pub file_url: Option<&'a str>,
    pub kind: &'a str,
    /// As [`stored_conditions`] returns them; `[]` for a group of listed members.
    pub conditions: &'a str,
}

pub fn insert(c: &mut Db, company_id: i64, application_id: i64, g: &NewGroup<'_>) -> ApiResult<GroupRow> {
    let t = now();
    Ok(diesel::insert_into(user_groups::table)
        .values((
            user_groups::company_id.eq(company_id),
            user_groups::application_id.eq(application_id),
            user_groups::name.eq(g.name),
            user_groups::description.eq(g.description),
            user_groups::file_url.eq(g.file_url),
            user_groups::status.eq("active"),
            user_groups::kind.eq(g.kind),
            user_groups::conditions.eq(g.conditions),
            user_groups::created_at.eq(t),
            user_groups::updated_at.eq(t),
        ))
        .returning(user_groups::all_columns)
        .get_result(c)?)
}

pub fn get(c: &mut Db, company_id: i64, application_id: i64, id: i64) -> ApiResult<GroupRow> {
    Ok(user_groups::table
        .filter(user_groups::company_id.eq(company_id))
        .filter(user_groups::application_id.eq(application_id))
        .find(id)
        .select(GroupRow::as_select())
        .first(c)?)
}

#[derive(Debug, Default)]
pub struct GroupFilter {
    pub name: Option<String>,
    pub kind: Option<String>,
    pub status: Option<String>,
    pub uid: Option<i64>,
}

type Boxed<'a> = user_groups::BoxedQuery<'a, <Db as diesel::Connection>::Backend>;

fn filtered<'a>(company_id: i64, application_id: i64, f: &GroupFilter) -> Boxed<'a> {
    let mut q = user_groups::table
        .filter(user_groups::company_id.eq(company_id))
        .filter(user_groups::application_id.eq(application_id))
        .into_boxed();
    if let Some(name) = &f.name {
        q = q.filter(user_groups::name.like(like_contains(name)).escape(LIKE_ESCAPE));
    }
    if let Some(kind) = &f.kind {
        q = q.filter(user_groups::kind.eq(kind.clone()));
    }
    if let Some(status) = &f.status {
        q = q.filter(user_groups::status.eq(status.clone()));
    }
    if let Some(uid) = f.uid {
        q = q.filter(user_groups::id.eq(uid));
    }
    q
}

pub fn list(
    c: &mut Db,
    company_id: i64,
    application_id: i64,
    f: &GroupFilter,
    limit: i64,
    offset: i64,
) -> ApiResult<(Vec<GroupRow>, i64)> {
    let total = filtered(company_id, application_id, f).count().get_result(c)?;
    let rows = filtered(company_id, application_id, f)
        .order(user_groups::id)
        .limit(limit)
        .offset(offset)
        .select(GroupRow::as_select())
        .load(c)?;
    Ok((rows, total))
}

#[derive(Debug, Default, AsChangeset)]
#[diesel(table_name = user_groups)]
pub struct GroupChange {
    pub name: Option<String>,
    pub description: Option<String>,
    pub file_url: Option<String>,
    pub kind: Option<String>,
    pub conditions: Option<String>,
}

pub fn update(c: &mut Db, id: i64, change: &GroupChange) -> ApiResult<GroupRow> {
    Ok(diesel::update(user_groups::table.find(id))
        .set((change, user_groups::updated_at.eq(now())))
        .returning(user_groups::all_columns)
        .get_result(c)?)
}

pub fn add_member(c: &mut Db, group_id: i64, user_id: i64) -> ApiResult<()> {
    let exists: bool =
        diesel::select(diesel::dsl::exists(user_group_members::table.find((group_id, user_id)))).get_result(c)?;
    if !exists {
        diesel::insert_into(user_group_members::table)
            .values((
                user_group_members::group_id.eq(group_id),
                user_group_members::user_id.eq(user_id),
                user_group_members::created_at.eq(now()),
            ))
            .execute(c)?;
    }
    Ok(())
}

pub fn remove_member(c: &mut Db, group_id: i64, user_id: i64) -> ApiResult<()> {
    diesel::delete(user_group_members::table.find((group_id, user_id))).execute(c)?;
    Ok(())
}

/// Customers read (or phones looked up) per statement while evaluating a group.
const CHUNK: usize = 1000;

/// The user ids of a group's members, ascending: its listed members, or for a conditional
/// group the application's customers (not deleted) meeting every condition.
pub fn members(c: &mut Db, group_id: i64) -> ApiResult<Vec<i64>> {
    let group: GroupRow = user_groups::table.find(group_id).select(GroupRow::as_select()).first(c)?;
    let conditions = group.conditions();
    if conditions.is_empty() {
        return Ok(user_group_members::table
            .filter(user_group_members::group_id.eq(group_id))
            .order(user_group_members::user_id)
            .select(user_group_members::user_id)
            .load(c)?);
    }
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let page: Vec<(i64, String)> = users::table
            .filter(users::company_id.eq(group.company_id))
            .filter(users::role.eq(Role::Customer.as_str()))
            .filter(users::application_id.eq(group.application_id).or(users::application_id.is_null()))
            .filter(users::deleted_at.is_null())
            .filter(users::id.gt(after))
            .order(users::id)
            .limit(CHUNK as i64)
            .select((users::id, users::attributes))
            .load(c)?;
        let Some(&(last, _)) = page.last() else { break };
        after = last;
        for (id, raw) in page {
            let attributes = match serde_json::from_str(&raw) {
                Ok(Value::Object(m)) => m,
                _ => Map::new(),
            };
            if conditions.iter().all(|rule| rule.holds(&attributes)) {
                out.push(id);
            }
        }
    }
    Ok(out)
}

/// The primary phones (E.164) of a group's members, for a group of the company (404 otherwise).
pub fn member_phones(c: &mut Db, company_id: i64, group_id: i64) -> ApiResult<Vec<String>> {
    let _: i64 = user_groups::table
        .filter(user_groups::company_id.eq(company_id))
        .find(group_id)
        .select(user_groups::id)
        .first(c)?;
    let mut phones = Vec::new();
    for ids in members(c, group_id)?.chunks(CHUNK) {
        let chunk: Vec<String> = user_phones::table
            .filter(user_phones::user_id.eq_any(ids))
            .filter(user_phones::active.and(user_phones::is_primary))
            .order(user_phones::user_id)
            .select(user_phones::e164)
            .load(c)?;
        phones.extend(chunk);
    }
    Ok(phones)
}

pub fn delete(c: &mut Db, id: i64) -> ApiResult<()> {
    diesel::delete(user_group_members::table.filter(user_group_members::group_id.eq(id))).execute(c)?;
    diesel::delete(user_groups::table.find(id)).execute(c)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn rule(slug: &str, op: Op, value: &str) -> Condition {
        Condition { user_attribute_definition_id: slug.into(), op, value: value.into() }
    }

    #[test]
    fn conditions_compare_numbers_text_lists_and_absence() {
        let attrs = json!({"tier": "Gold", "orders": 12, "tags": ["sale", "new"], "since": "2026-03-01", "gone": null});
        let attrs = attrs.as_object().unwrap();
        let holds = |slug: &str, op: Op, value: &str| rule(slug, op, value).holds(attrs);
        assert!(holds("tier", Op::Eq, "Gold") && !holds("tier", Op::Eq, "gold") && holds("tier", Op::Ne, "Silver"));
        assert!(holds("orders", Op::Gt, "9") && holds("orders", Op::Gte, "12") && !holds("orders", Op::Lt, "12"));
        assert!(holds("orders", Op::Eq, "12.0") && holds("orders", Op::Lte, "100"));
        assert!(holds("since", Op::Gte, "2026-01-01") && holds("since", Op::Lt, "2026-12-31"));
        assert!(holds("tier", Op::In, "Silver, Gold") && holds("tier", Op::Nin, "Silver,Bronze"));
        assert!(
            holds("tier", Op::Contains, "OL")
                && holds("tier", Op::StartsWith, "go")
                && holds("tier", Op::EndsWith, "LD")
        );
        assert!(holds("tags", Op::Eq, "new") && !holds("tags", Op::Ne, "new") && holds("tags", Op::NotContains, "vip"));
        assert!(
            holds("tier", Op::Exists, "") && holds("gone", Op::NotExists, "") && holds("missing", Op::NotExists, "")
        );
        assert!(!holds("missing", Op::Eq, "") && !holds("missing", Op::Gt, "0") && holds("missing", Op::Ne, "x"));
    }

    #[test]
    fn conditions_are_checked_before_they_are_stored() {
        assert!(stored_conditions(&[]).is_err());
        assert!(stored_conditions(&vec![rule("a", Op::Eq, "1"); MAX_CONDITIONS + 1]).is_err());
        assert!(stored_conditions(&[rule(" ", Op::Eq, "1")]).is_err());
        assert!(stored_conditions(&[rule("a", Op::Eq, &"x".repeat(501))]).is_err());
        let stored = stored_conditions(&[rule("tier", Op::NotContains, "x")]).unwrap();
        assert_eq!(stored, r#"[{"user_attribute_definition_id":"tier","type":"not_contains","value":"x"}]"#);
    }
}
