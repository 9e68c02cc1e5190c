//! Brute-force protection (CONTRACT §5): per-account and per-IP failure counters in
//! `login_failures`, shared by every node through the database.
//!
//! An attempt first *reserves* a slot: one `UPDATE … SET count = count + 1 WHERE count < LIMIT
//! AND not locked`, before the password is checked. Parallel attempts therefore cannot get
//! more than [`ACCOUNT_LIMIT`] tries between locks, however they interleave. A failed attempt
//! that used the last slot locks the key for 1 minute, doubling with each further lock up to 1
//! hour; a success clears the account's key and gives the address its slot back. A locked key
//! answers exactly like a wrong password — the caller decides the answer, this module only says
//! whether the password may be checked.

use chrono::Duration;
use diesel::prelude::*;

use crate::core::{
    db::{Db, schema::login_failures},
    error::{ApiResult, is_unique_violation},
    types::now,
};

/// Consecutive failures that lock an account.
pub const ACCOUNT_LIMIT: i32 = 5;
/// Consecutive failures that lock an address (many accounts tried from one place).
pub const IP_LIMIT: i32 = 50;
pub const FIRST_LOCK_SECS: i64 = 60;
pub const MAX_LOCK_SECS: i64 = 3600;
/// Failures older than this no longer count (a typo a day does not add up to a lock).
pub const FORGET_FAILURES_AFTER_SECS: i64 = 3600;
/// A key with no activity for this long starts again from the 1-minute lock.
pub const FORGET_LOCKS_AFTER_SECS: i64 = 86_400;

/// The counters one login attempt touches.
#[derive(Debug, Clone)]
pub struct Keys {
    account: String,
    ip: String,
}

impl Keys {
    /// `account` is the login name as typed (normalised by the caller), so unknown accounts are
    /// counted and locked too and answer exactly like known ones.
    pub fn new(account: &str, ip: &str) -> Self {
        Self { account: format!("acct:{}", account.trim().to_lowercase()), ip: format!("ip:{ip}") }
    }

    /// A counter for something other than a staff login name, in its own namespace so that no
    /// typed login name can reach it: `fynd:<application>:<identifier>` (storefront password),
    /// `totp:<user>` (authenticator and recovery codes), `otp:<company>:<contact>` (codes sent
    /// by e-mail or SMS, across every challenge and flow).
    pub fn scoped(kind: &str, subject: &str, ip: &str) -> Self {
        Self { account: format!("{kind}:{}", subject.trim().to_lowercase()), ip: format!("ip:{ip}") }
    }
}

/// Runs one secret check under the counters: a slot is reserved first (a locked or exhausted
/// key is never checked, so even the right secret is refused until the lock expires), then the
/// outcome is settled. For the checks that run inside one database transaction (codes); the
/// password check, which hashes on the blocking pool, reserves and settles in two steps.
pub fn guard(c: &mut Db, keys: &Keys, check: impl FnOnce(&mut Db) -> ApiResult<bool>) -> ApiResult<bool> {
    if !reserve(c, keys)? {
        return Ok(false);
    }
    let ok = check(c)?;
    settle(c, keys, ok)?;
    Ok(ok)
}

/// Reserves one attempt on both counters. `false` when either is locked or out of attempts:
/// the password must then not be checked.
pub fn reserve(c: &mut Db, keys: &Keys) -> ApiResult<bool> {
    Ok(reserve_one(c, &keys.ip, IP_LIMIT)? && reserve_one(c, &keys.account, ACCOUNT_LIMIT)?)
}

fn reserve_one(c: &mut Db, key: &str, limit: i32) -> ApiResult<bool> {
    let t = now();
    let unlocked = login_failures::locked_until.is_null().or(login_failures::locked_until.le(t));
    diesel::update(
        login_failures::table
            .filter(login_failures::key.eq(key))
            .filter(login_failures::updated_at.lt(t - Duration::seconds(FORGET_LOCKS_AFTER_SECS)))
            .filter(unlocked),
    )
    .set((login_failures::count.eq(0), login_failures::lock_count.eq(0)))
    .execute(c)?;
    diesel::update(
        login_failures::table
            .filter(login_failures::key.eq(key))
            .filter(login_failures::updated_at.lt(t - Duration::seconds(FORGET_FAILURES_AFTER_SECS)))
            .filter(unlocked),
    )
    .set(login_failures::count.eq(0))
    .execute(c)?;
    let claim = |c: &mut Db| -> QueryResult<usize> {
        diesel::update(
            login_failures::table
                .filter(login_failures::key.eq(key))
                .filter(login_failures::count.lt(limit))
                .filter(login_failures::locked_until.is_null().or(login_failures::locked_until.le(t))),
        )
        .set((login_failures::count.eq(login_failures::count + 1), login_failures::updated_at.eq(t)))
        .execute(c)
    };
    if claim(c)? == 1 {
        return Ok(true);
    }
    let exists: bool =
        diesel::select(diesel::dsl::exists(login_failures::table.filter(login_failures::key.eq(key)))).get_result(c)?;
    if exists {
        return Ok(false);
    }
    // First attempt for this key: insert it in a savepoint (a parallel attempt may insert first).
    let inserted = c.transaction(|c| {
        diesel::insert_into(login_failures::table)
            .values((
                login_failures::key.eq(key),
                login_failures::count.eq(1),
                login_failures::lock_count.eq(0),
                login_failures::updated_at.eq(t),
            ))
            .execute(c)
    });
    match inserted {
        Ok(_) => Ok(true),
        Err(e) if is_unique_violation(&e) => Ok(claim(c)? == 1),
        Err(e) => Err(e.into()),
    }
}

/// Records the outcome of a reserved attempt. Returns `true` when this failure locked the
/// account (for the audit log).
pub fn settle(c: &mut Db, keys: &Keys, success: bool) -> ApiResult<bool> {
    if success {
        diesel::delete(login_failures::table.filter(login_failures::key.eq(&keys.account))).execute(c)?;
        // The address's slot was only reserved: a success gives it back, so many people behind
        // one address (an office, a NAT) can log in all day; only failures add up there.
        diesel::update(login_failures::table.find(&keys.ip).filter(login_failures::count.gt(0)))
            .set(login_failures::count.eq(login_failures::count - 1))
            .execute(c)?;
        return Ok(false);
    }
    let mut locked = false;
    for (key, limit) in [(&keys.account, ACCOUNT_LIMIT), (&keys.ip, IP_LIMIT)] {
        let row: Option<(i32, i32)> = login_failures::table
            .find(key)
            .select((login_failures::count, login_failures::lock_count))
            .first(c)
            .optional()?;
        let Some((count, lock_count)) = row else { continue };
        if count < limit {
            continue;
        }
        let secs = (FIRST_LOCK_SECS << lock_count.clamp(0, 6)).min(MAX_LOCK_SECS);
        let t = now();
        // Only the attempt that used the last slot locks (count is still at the limit).
        let n = diesel::update(login_failures::table.find(key).filter(login_failures::count.ge(limit)))
            .set((
                login_failures::count.eq(0),
                login_failures::lock_count.eq(lock_count + 1),
                login_failures::locked_until.eq(t + Duration::seconds(secs)),
                login_failures::updated_at.eq(t),
            ))
            .execute(c)?;
        locked |= n == 1 && key == &keys.account;
    }
    Ok(locked)
}
