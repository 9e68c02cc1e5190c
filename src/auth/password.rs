//! Password hashing: argon2id with the RustCrypto defaults (m=19 MiB, t=2, p=1, the OWASP
//! recommendation) as PHC strings. Always run on the blocking pool: a hash takes tens of ms.

use argon2::{
    Argon2,
    password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString, rand_core::OsRng},
};

use crate::core::{error::ApiError, types::Email};

pub const MIN_LENGTH: usize = 8;
pub const MAX_LENGTH: usize = 1024;

pub fn hash(password: &str) -> anyhow::Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| anyhow::anyhow!("hashing password: {e}"))
}

/// Verifies against a stored PHC string, or a bcrypt hash imported from ARC (`$2a$`, `$2b$`,
/// `$2y$`; see [`needs_rehash`]). A malformed hash never matches.
pub fn verify(stored: &str, password: &str) -> bool {
    if is_bcrypt(stored) {
        return bcrypt::verify(password, stored).unwrap_or(false);
    }
    PasswordHash::new(stored)
        .map(|parsed| Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
        .unwrap_or(false)
}

fn is_bcrypt(stored: &str) -> bool {
    ["$2a$", "$2b$", "$2y$"].iter().any(|p| stored.starts_with(p))
}

/// Whether a verified hash should be replaced by an argon2id one (CONTRACT §5: ARC's bcrypt
/// hashes verify and are rehashed on login).
pub fn needs_rehash(stored: &str) -> bool {
    !stored.starts_with("$argon2id$")
}

/// Burns the same work as a real verification, so an unknown account answers in about the same
/// time as a wrong password (CONTRACT §5 "no account enumeration").
pub fn verify_dummy(password: &str) {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let stored = DUMMY.get_or_init(|| hash("dummy-password-for-timing").unwrap_or_default());
    let _ = verify(stored, password);
}

/// CONTRACT §5: at least 8 characters and not the e-mail address.
pub fn check_new(password: &str, email: Option<&Email>) -> Result<(), ApiError> {
    if password.chars().count() < MIN_LENGTH {
        return Err(ApiError::field("password", format!("must be at least {MIN_LENGTH} characters")));
    }
    if password.len() > MAX_LENGTH {
        return Err(ApiError::field("password", format!("must be at most {MAX_LENGTH} bytes")));
    }
    if email.is_some_and(|e| e.as_str().eq_ignore_ascii_case(password.trim())) {
        return Err(ApiError::field("password", "must not be the e-mail address"));
    }
    Ok(())
}

/// The reason [`check_new`] refused a password, as text for the command line and start-up
/// errors ("must be at least 8 characters").
pub fn policy_message(e: &ApiError) -> String {
    match e {
        ApiError::Invalid(fields) => fields.values().cloned().collect::<Vec<_>>().join("; "),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_argon2id_and_verify() {
        let h = hash("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify(&h, "correct horse"));
        assert!(!verify(&h, "wrong horse"));
        assert!(!verify("not a hash", "correct horse"));
    }

    #[test]
    fn imported_bcrypt_hashes_verify_and_need_a_rehash() {
        // bcrypt("correct horse", cost 4), as ARC's user_credentials would hold it.
        let stored =
            bcrypt::hash_with_salt("correct horse", 4, [7u8; 16]).unwrap().format_for_version(bcrypt::Version::TwoA);
        assert!(verify(&stored, "correct horse"));
        assert!(!verify(&stored, "wrong horse"));
        assert!(needs_rehash(&stored));
        assert!(!needs_rehash(&hash("x").unwrap()));
    }

    #[test]
    fn short_or_email_passwords_are_rejected() {
        let email = Email::try_from("ada@example.com".to_owned()).unwrap();
        assert!(check_new("short", None).is_err());
        assert!(check_new("ada@example.com", Some(&email)).is_err());
        assert!(check_new("long enough", Some(&email)).is_ok());
    }
}
