//! Account operations shared by the messaging-family auth routes and (later) the ARC and Fynd
//! families: sign-up, password login, refresh rotation, logout.

use super::{clients, password};
use crate::{
    core::{
        auth::{
            lockout,
            session::{self, NewSession, Principal, Refreshed},
        },
        crypto::token_hash,
        db::Db,
        error::{ApiError, ApiResult},
        state::AppState,
        types::{Email, Phone, Role, now},
    },
    users::{
        model::{PENDING, UserRow},
        store,
    },
};

pub struct Signup {
    pub email: Email,
    pub password: String,
    pub first_name: String,
    pub last_name: String,
    pub phone: Option<Phone>,
    pub company_name: Option<String>,
    pub invite_token: Option<String>,
    /// The caller already proved the e-mail (the ARC sign-up token was mailed to it).
    pub email_proven: bool,
}

/// Purpose of the `otp_challenges` row of an e-mail verification token.
pub const VERIFY_EMAIL: &str = "verify_email";
/// How long a sign-up's verification token works; an account not verified by then stays
/// pending for good (and never held its address).
pub const VERIFY_TTL_SECS: i64 = 3600;

/// A sign-up's outcome: the account, and for a pending one the token mailed to its address.
pub struct SignedUp {
    pub user: UserRow,
    pub verify_token: Option<String>,
}

/// Tokens handed to a client after a login or a refresh.
pub struct Issued {
    pub access_token: String,
    pub refresh_token: String,
    /// Access-token expiry, epoch milliseconds (ARC's TokenResponse `expires`).
    pub expires: i64,
}

/// Where a request came from, for sessions and the audit log.
#[derive(Debug, Clone, Default)]
pub struct Origin {
    pub ip: String,
    pub user_agent: String,
}

impl actix_web::FromRequest for Origin {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, ApiError>>;

    /// The peer address, not `X-Forwarded-For`: a client can forge that header, and rate limits
    /// and the audit log key on this value.
    fn from_request(req: &actix_web::HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        std::future::ready(Ok(Origin {
            ip: req.peer_addr().map(|a| a.ip().to_string()).unwrap_or_default(),
            user_agent: req
                .headers()
                .get(actix_web::http::header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned(),
        }))
    }
}

/// CONTRACT §3 `POST /auth/signup`: with an invite the user joins the inviting company with the
/// invited role; without one (when open sign-up is on) a new company is created with the user
/// as its admin. Staff e-mails are unique across companies because staff log in by e-mail, so
/// an address is only taken by an account that proved it (issue 17): an invitation (mailed to
/// the address) or the ARC sign-up token (likewise) proves it and the account is active at once;
/// an open sign-up creates the company and its admin *pending* and mails a verification token
/// ([`verify_signup`]). A pending account cannot log in and does not hold its address, so a
/// squatter's sign-up never blocks the address's owner. A second open sign-up for the same
/// address within 30 s is 429 (one verification mail per address per 30 s).
pub async fn signup(st: &AppState, s: Signup, origin: &Origin) -> ApiResult<UserRow> {
    password::check_new(&s.password, Some(&s.email))?;
    if s.invite_token.is_none() && !st.config.open_signup {
        return Err(ApiError::Unprocessable {
            code: "signup_closed",
            message: "sign-up requires an invitation".into(),
        });
    }
    let pw = s.password.clone();
    let hash = actix_web::web::block(move || password::hash(&pw)).await??;
    let ip = origin.ip.clone();
    let email = s.email.as_str().to_owned();
    let signed =
        st.db
            .write(move |c| {
                if store::email_in_use_by_staff(c, &s.email)? {
                    return Err(ApiError::conflict("email_taken", "an account with this e-mail already exists"));
                }
                let (company_id, role) = match &s.invite_token {
                    Some(token) => claim_invite(c, token, &s.email)?,
                    None => {
                        let name = s
                            .company_name
                            .as_deref()
                            .map(str::trim)
                            .filter(|n| !n.is_empty())
                            .map(str::to_owned)
                            .unwrap_or_else(|| format!("{} {}", s.first_name, s.last_name).trim().to_owned());
                        (store::insert_company(c, &name)?, Role::Admin)
                    }
                };
                let user = store::create_person(
                    c,
                    company_id,
                    role,
                    s.first_name.trim(),
                    s.last_name.trim(),
                    Some(&hash),
                    Some(&s.email),
                    s.phone.as_ref(),
                    false,
                )?;
                let proven = s.invite_token.is_some() || s.email_proven;
                let verify_token = if proven {
                    store::set_email_verified(c, user.id, &s.email)?;
                    None
                } else {
                    store::set_status(c, user.id, PENDING)?;
                    let token = super::recovery::store_token(
                        c,
                        Some(company_id),
                        Some(user.id),
                        s.email.as_str(),
                        VERIFY_EMAIL,
                        VERIFY_TTL_SECS,
                    )?;
                    // Rolls the whole sign-up back: nothing is created while a mail is in flight.
                    Some(token.ok_or(ApiError::TooManyRequests {
                        retry_after_secs: super::recovery::RESEND_AFTER_SECS as u64,
                    })?)
                };
                store::audit(
                    c,
                    Some(company_id),
                    Some(user.id),
                    "signup",
                    &ip,
                    serde_json::json!({"role": role.as_str(), "emailVerified": proven}),
                )?;
                let user = store::get(c, company_id, user.id)?;
                Ok(SignedUp { user, verify_token })
            })
            .await?;
    if let Some(token) = &signed.verify_token {
        let body = format!(
            "Someone signed up for confab ({}) with this address. The account is inactive until the \
             address is confirmed: send this token to POST /auth/signup/verify within {} minutes.\n\n\
             Token: {token}\n\n\
             If this was not you, ignore this mail: the account stays inactive and does not hold your address.\n",
            st.config.public_url.trim_end_matches('/'),
            VERIFY_TTL_SECS / 60,
        );
        if let Err(e) = st.mail.send(&email, "Confirm your e-mail address", &body).await {
            tracing::warn!(error = %e, "mailing a sign-up verification failed");
        }
    }
    Ok(signed.user)
}

/// `POST /auth/signup/verify`: the token mailed by an open sign-up activates that account and
/// marks its e-mail verified, once. 401 `invalid_token` for an unknown, used or expired token;
/// 409 `email_taken` when another account proved the address first (the pending one then stays
/// inactive for good).
pub async fn verify_signup(st: &AppState, token: String, origin: &Origin) -> ApiResult<UserRow> {
    let ip = origin.ip.clone();
    st.db
        .write(move |c| {
            let invalid = || ApiError::Unauthorized("invalid_token");
            let (user_id, email, _) =
                super::recovery::live_token(c, &token, &[VERIFY_EMAIL.to_owned()])?.ok_or_else(invalid)?;
            let user_id = user_id.ok_or_else(invalid)?;
            if !crate::codes::claim_hashed(c, &token, VERIFY_EMAIL)? {
                return Err(invalid());
            }
            let user: UserRow = store::find_by_id(c, user_id)?.filter(|u| u.status == PENDING).ok_or_else(invalid)?;
            let email =
                Email::try_from(email).map_err(|e| ApiError::Internal(anyhow::anyhow!("stored e-mail: {}", e.0)))?;
            if store::email_in_use_by_staff(c, &email)? {
                return Err(ApiError::conflict("email_taken", "an account with this e-mail already exists"));
            }
            store::set_email_verified(c, user.id, &email)?;
            store::set_status(c, user.id, "active")?;
            store::audit(c, Some(user.company_id), Some(user.id), "email_verified", &ip, serde_json::json!({}))?;
            store::get(c, user.company_id, user.id)
        })
        .await
}

/// Marks an invite used (single use, atomic) and returns its company and role.
fn claim_invite(c: &mut crate::core::db::Db, token: &str, email: &Email) -> ApiResult<(i64, Role)> {
    let invalid = || ApiError::unprocessable("invalid_invite", "the invitation is unknown, used or expired");
    let t = now();
    let invite = store::open_invite(c, &token_hash(token), t)?.ok_or_else(invalid)?;
    if invite.email != email.as_str() {
        return Err(ApiError::unprocessable(
            "invite_email_mismatch",
            "the invitation was sent to another e-mail address",
        ));
    }
    if !store::mark_invite_used(c, invite.id, t)? {
        return Err(invalid());
    }
    Ok((invite.company_id, Role::parse(&invite.role).unwrap_or(Role::Agent)))
}

/// Password login for staff. Unknown e-mail, wrong password, an inactive account and a locked
/// account all give exactly the same 401 `invalid_credentials`, after the same amount of
/// hashing work.
///
/// An account with an authenticator app needs `otp` too (an authenticator or recovery code, in
/// the same request: the console asks for it after a first 401 `mfa_required`); a wrong one is
/// 401 `invalid_otp` and counts on the user's second-factor lockout ([`super::totp::keys`]).
pub async fn login(
    st: &AppState,
    email: Email,
    password: String,
    otp: Option<String>,
    origin: &Origin,
) -> ApiResult<(UserRow, Issued)> {
    let user = check_credentials(st, email.as_str(), password, origin, None).await?;
    let (user_id, company_id, ip, state) = (user.id, user.company_id, origin.ip.clone(), st.clone());
    // Answered outside the transaction: an error inside would roll back the failure count.
    let refusal = st
        .db
        .write(move |c| {
            if !super::totp::enabled(c, user_id)? {
                return Ok(None);
            }
            let Some(answer) = otp.filter(|o| !o.trim().is_empty()) else { return Ok(Some("mfa_required")) };
            let ok = lockout::guard(c, &super::totp::keys(user_id, &ip), |c| {
                super::totp::check_second_factor(c, &state, user_id, &answer)
            })?;
            let kind = if ok { "mfa_login" } else { "mfa_failed" };
            store::audit(c, Some(company_id), Some(user_id), kind, &ip, serde_json::json!({}))?;
            Ok((!ok).then_some("invalid_otp"))
        })
        .await?;
    if let Some(code) = refusal {
        return Err(ApiError::Unauthorized(code));
    }
    let issued = start_session(st, &user, "api", None, origin).await?;
    Ok((user, issued))
}

/// Checks a staff login name (e-mail) and password under brute-force protection
/// ([`verify_password`] on the login name's counter): every failure (unknown, wrong, inactive,
/// locked, or — with `company` — another company's user) is the same 401
/// `invalid_credentials`.
pub async fn check_credentials(
    st: &AppState,
    login: &str,
    password: String,
    origin: &Origin,
    company: Option<i64>,
) -> ApiResult<UserRow> {
    let email = Email::try_from(login.trim().to_owned()).ok();
    let find = move |c: &mut Db| match &email {
        Some(e) => store::find_staff_by_email(c, e),
        None => Ok(None),
    };
    let keys = lockout::Keys::new(login, &origin.ip);
    verify_password(st, keys, find, password, origin, company, serde_json::json!({})).await
}

/// The one password check of every login (staff logins of both families, the storefront's
/// `login/password`): a slot on `keys` ([`lockout`]) is reserved *before* the password is
/// checked, so parallel guesses get at most 5 checks; a locked key is never checked, so even
/// the right password is refused until the lock expires. `find` loads the account the login
/// names; `company`, when given, is the only company whose account may log in. Unknown, wrong,
/// inactive, locked and another company's account all answer the same 401
/// `invalid_credentials` after the same hashing work. A matching legacy (bcrypt) hash is
/// replaced by an argon2id one. Failures and locks are audited with `detail`.
pub async fn verify_password<F>(
    st: &AppState,
    keys: lockout::Keys,
    find: F,
    password: String,
    origin: &Origin,
    company: Option<i64>,
    detail: serde_json::Value,
) -> ApiResult<UserRow>
where
    F: FnOnce(&mut Db) -> ApiResult<Option<UserRow>> + Send + 'static,
{
    let reserve_keys = keys.clone();
    let (allowed, user) = st
        .db
        .write(move |c| {
            let allowed = lockout::reserve(c, &reserve_keys)?;
            Ok((allowed, find(c)?))
        })
        .await?;
    let stored = if allowed { user.as_ref().and_then(|u| u.password_hash.clone()) } else { None };
    let (matched, rehashed) = actix_web::web::block(move || -> anyhow::Result<(bool, Option<String>)> {
        match stored {
            Some(hash) if password::verify(&hash, &password) => {
                Ok((true, if password::needs_rehash(&hash) { Some(password::hash(&password)?) } else { None }))
            }
            Some(_) => Ok((false, None)),
            None => {
                password::verify_dummy(&password);
                Ok((false, None))
            }
        }
    })
    .await??;
    let ok = matched && user.as_ref().is_some_and(|u| u.is_active() && company.is_none_or(|c| c == u.company_id));
    let ip = origin.ip.clone();
    let who = user.as_ref().map(|u| (u.company_id, u.id));
    st.db
        .write(move |c| {
            let locked = allowed && lockout::settle(c, &keys, ok)?;
            if let (true, Some(hash), Some((_, user_id))) = (ok, &rehashed, who) {
                store::set_password_hash(c, user_id, hash)?;
            }
            // An unknown account's failure is the company's where it was tried, if known.
            let (company_id, user_id) = who.map_or((company, None), |(c, u)| (Some(c), Some(u)));
            if locked {
                store::audit(c, company_id, user_id, "account_locked", &ip, detail.clone())?;
            }
            if !ok {
                let kind = if allowed { "login_failed" } else { "login_locked" };
                store::audit(c, company_id, user_id, kind, &ip, detail)?;
            }
            Ok(())
        })
        .await?;
    match user {
        Some(u) if ok => Ok(u),
        _ => Err(ApiError::Unauthorized("invalid_credentials")),
    }
}

/// Opens a session for `user` and issues its first token pair.
pub async fn start_session(
    st: &AppState,
    user: &UserRow,
    kind: &'static str,
    client_id: Option<String>,
    origin: &Origin,
) -> ApiResult<Issued> {
    let (user_id, company_id) = (user.id, user.company_id);
    let origin = origin.clone();
    let (session_id, refresh_token) = st
        .db
        .write(move |c| {
            let created = session::create(
                c,
                &NewSession {
                    user_id,
                    company_id,
                    kind,
                    client_id: client_id.as_deref(),
                    application_id: None,
                    ip: &origin.ip,
                    user_agent: &origin.user_agent,
                    ttl: session::SESSION_TTL,
                },
            )?;
            store::audit(c, Some(company_id), Some(user_id), "login", &origin.ip, serde_json::json!({"kind": kind}))?;
            Ok(created)
        })
        .await?;
    let (access_token, expires) = st.keys.sign(user.id, user.company_id, &user.role, &session_id)?;
    Ok(Issued { access_token, refresh_token, expires })
}

/// Rotates a refresh token. A reused token revokes its session and answers 401.
pub async fn refresh(st: &AppState, token: String, origin: &Origin) -> ApiResult<Issued> {
    let ip = origin.ip.clone();
    let outcome = st.db.write(move |c| session::rotate(c, &token, clients::lifetimes)).await?;
    match outcome {
        Refreshed::Rotated { principal, refresh_token, access_ttl } => {
            let (access_token, expires) = st.keys.sign_for(
                principal.user_id,
                principal.company_id,
                principal.role.as_str(),
                &principal.session_id,
                access_ttl,
            )?;
            Ok(Issued { access_token, refresh_token, expires })
        }
        Refreshed::Reused { principal } => {
            st.sessions.forget(&principal.session_id);
            st.broker.revoked(vec![principal.session_id.clone()]);
            st.db
                .write(move |c| {
                    store::audit(
                        c,
                        Some(principal.company_id),
                        Some(principal.user_id),
                        "refresh_token_reuse",
                        &ip,
                        serde_json::json!({"session": principal.session_id}),
                    )
                })
                .await?;
            Err(ApiError::Unauthorized("token_reused"))
        }
    }
}

/// Ends the caller's session: its access and refresh tokens stop working.
pub async fn logout(st: &AppState, p: &Principal, origin: &Origin) -> ApiResult<()> {
    let (sid, user_id, company_id, ip) = (p.session_id.clone(), p.user_id, p.company_id, origin.ip.clone());
    st.db
        .write(move |c| {
            session::revoke(c, &sid, "logout")?;
            store::audit(c, Some(company_id), Some(user_id), "logout", &ip, serde_json::json!({}))
        })
        .await?;
    st.sessions.forget(&p.session_id);
    st.broker.revoked(vec![p.session_id.clone()]);
    Ok(())
}
