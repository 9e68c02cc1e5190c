//! User groups of an application (Fynd platform `user_group` routes): a named set of
//! customers. The numeric id is both the group's `_id` (as a string) and its `uid`.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::core::{
    db::{
        Db,
        schema::{user_group_members, user_groups},
    },
    error::ApiResult,
    query::{LIKE_ESCAPE, like_contains},
    types::now,
};

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
}

pub struct NewGroup<'a> {
    pub name: &'a str,
    pub description: &'a str,
    pub file_url: Option<&'a str>,
    pub kind: &'a str,
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

pub fn members(c: &mut Db, group_id: i64) -> ApiResult<Vec<i64>> {
    Ok(user_group_members::table
        .filter(user_group_members::group_id.eq(group_id))
        .order(user_group_members::user_id)
        .select(user_group_members::user_id)
        .load(c)?)
}

/// The primary phones (E.164) of a group's members, for a group of the company (404 otherwise).
pub fn member_phones(c: &mut Db, company_id: i64, group_id: i64) -> ApiResult<Vec<String>> {
    use crate::core::db::schema::user_phones;
    let _: i64 = user_groups::table
        .filter(user_groups::company_id.eq(company_id))
        .find(group_id)
        .select(user_groups::id)
        .first(c)?;
    let members =
        user_group_members::table.filter(user_group_members::group_id.eq(group_id)).select(user_group_members::user_id);
    Ok(user_phones::table
        .filter(user_phones::user_id.eq_any(members))
        .filter(user_phones::active.and(user_phones::is_primary))
        .order(user_phones::user_id)
        .select(user_phones::e164)
        .load(c)?)
}

pub fn delete(c: &mut Db, id: i64) -> ApiResult<()> {
    diesel::delete(user_group_members::table.filter(user_group_members::group_id.eq(id))).execute(c)?;
    diesel::delete(user_groups::table.find(id)).execute(c)?;
    Ok(())
}
