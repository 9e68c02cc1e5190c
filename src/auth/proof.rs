//! What it means for an account when someone from outside it proves a contact: an identity
//! provider vouches for an e-mail (storefront social logins, the ARC OAuth logins), or a
//! one-time code reaches a phone or an e-mail (storefront OTP login). These are the
//! pre-account-takeover rules of README "Account takeover and abuse" (issue 17 items 4 and 5):
//!
//! - A contact that was already verified proves the account as it is.
//! - An account on which nobody ever proved anything (no verified contact, no provider link)
//!   is *claimed* by the prover: whatever the earlier holder set up (password, authenticator
//!   app and recovery codes, sessions) is dropped, and the contact becomes verified. Otherwise
//!   someone who registered with another person's address keeps a way in after that person
//!   signs in with Google or by code.
//! - An account on which someone else already proved a contact or linked a provider is theirs:
//!   the unverified contact was only *claimed* on it, never proven. The caller then releases
//!   it ([`release`]) so that the address's owner gets an account of their own, or refuses.

use super::totp;
use crate::{
    core::{
        auth::session,
        db::Db,
        error::{ApiError, ApiResult},
        state::AppState,
    },
    users::store,
};

pub use crate::users::model::Contact;

/// The outcome of [`prove`].
#[derive(Debug)]
pub enum Proof {
    /// The contact was verified before: the account is the prover's as it stands.
    AlreadyVerified,
    /// Nobody had proved anything on the account: it is now the prover's, its earlier
    /// credentials are gone and these sessions were revoked (forget them with [`forget`]
    /// after the commit).
    Claimed { revoked: Vec<String> },
    /// Another contact of the account is verified or a provider is linked to it: the
    /// unverified contact does not open it.
    Unproven,
}

/// The account's active row for `contact`: (row id, verified).
fn row(c: &mut Db, user_id: i64, contact: Contact<'_>) -> ApiResult<(i64, bool)> {
    store::contact_row(c, user_id, contact)?.ok_or(ApiError::NotFound)
}

/// Whether the account's active row for `contact` is verified (`false` when it has no such row).
pub fn is_verified(c: &mut Db, user_id: i64, contact: Contact<'_>) -> ApiResult<bool> {
    match row(c, user_id, contact) {
        Ok((_, verified)) => Ok(verified),
        Err(ApiError::NotFound) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Whether anything other than `contact` was ever proven on the account: another verified
/// contact, or a linked provider identity.
fn proven_otherwise(c: &mut Db, user_id: i64, contact: Contact<'_>, row_id: i64) -> ApiResult<bool> {
    let verified = store::has_verified_contact_besides(c, user_id, contact, row_id)?;
    let linked = store::has_linked_identity(c, user_id)?;
    Ok(verified || linked)
}

/// Applies a proof of `contact` from outside the account (see the module doc). Call it in the
/// transaction that then links the provider or opens the session; on [`Proof::Claimed`] call
/// [`forget`] after the commit.
pub fn prove(c: &mut Db, user_id: i64, contact: Contact<'_>) -> ApiResult<Proof> {
    let (row_id, verified) = row(c, user_id, contact)?;
    if verified {
        return Ok(Proof::AlreadyVerified);
    }
    if proven_otherwise(c, user_id, contact, row_id)? {
        return Ok(Proof::Unproven);
    }
    let revoked = session::revoke_all(c, user_id, None, "account_claimed")?;
    store::clear_password_hash(c, user_id)?;
    totp::forget(c, user_id)?;
    store::verify_contact_row(c, contact, row_id)?;
    Ok(Proof::Claimed { revoked })
}

/// Takes an unverified contact off an account (it stays in the table, inactive), so that the
/// person who proved it can have it. A primary contact's place goes to the account's oldest
/// other active contact of that kind.
pub fn release(c: &mut Db, user_id: i64, contact: Contact<'_>) -> ApiResult<()> {
    let (row_id, _) = row(c, user_id, contact)?;
    store::release_contact_row(c, user_id, contact, row_id)
}

/// After the commit of a [`Proof::Claimed`]: this node stops answering from its session cache
/// at once and open WebSockets of those sessions close (other nodes follow within the cache
/// TTL, CONTRACT §2).
pub fn forget(st: &AppState, revoked: Vec<String>) {
    for id in &revoked {
        st.sessions.forget(id);
    }
    st.broker.revoked(revoked);
}
