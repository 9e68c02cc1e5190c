//! Fynd applications (sales channels) of a company (SCHEMA "Tenancy and identity"): an id, a
//! name, a domain, the SHA-256 of the application token (shown once, CONTRACT §3) and the
//! platform configuration as JSON.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::core::{
    db::{Db, schema::applications},
    error::ApiResult,
    types::now,
};

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = applications)]
pub struct ApplicationRow {
    pub id: i64,
    pub company_id: i64,
    pub name: String,
    pub domain: String,
    pub token_hash: String,
    pub platform_config: String,
    pub created_at: NaiveDateTime,
}

pub fn insert(c: &mut Db, company_id: i64, name: &str, domain: &str, token_hash: &str) -> ApiResult<ApplicationRow> {
    Ok(diesel::insert_into(applications::table)
        .values((
            applications::company_id.eq(company_id),
            applications::name.eq(name),
            applications::domain.eq(domain),
            applications::token_hash.eq(token_hash),
            applications::platform_config.eq("{}"),
            applications::created_at.eq(now()),
        ))
        .returning(applications::all_columns)
        .get_result(c)?)
}

pub fn list(c: &mut Db, company_id: i64) -> ApiResult<Vec<ApplicationRow>> {
    Ok(applications::table
        .filter(applications::company_id.eq(company_id))
        .order(applications::id)
        .select(ApplicationRow::as_select())
        .load(c)?)
}

/// The company's application; another company's is `NotFound` like a missing one.
pub fn get(c: &mut Db, company_id: i64, id: i64) -> ApiResult<ApplicationRow> {
    Ok(applications::table
        .filter(applications::company_id.eq(company_id))
        .find(id)
        .select(ApplicationRow::as_select())
        .first(c)?)
}

/// By id alone: only for authenticating an application credential, which names no company.
pub fn find_for_credential(c: &mut Db, id: i64) -> ApiResult<Option<ApplicationRow>> {
    Ok(applications::table.find(id).select(ApplicationRow::as_select()).first(c).optional()?)
}

pub fn set_token_hash(c: &mut Db, company_id: i64, id: i64, hash: &str) -> ApiResult<()> {
    let n = diesel::update(applications::table.filter(applications::company_id.eq(company_id)).find(id))
        .set(applications::token_hash.eq(hash))
        .execute(c)?;
    if n == 0 {
        return Err(crate::core::error::ApiError::NotFound);
    }
    Ok(())
}

pub fn set_platform_config(c: &mut Db, company_id: i64, id: i64, json: &str) -> ApiResult<()> {
    diesel::update(applications::table.filter(applications::company_id.eq(company_id)).find(id))
        .set(applications::platform_config.eq(json))
        .execute(c)?;
    Ok(())
}
