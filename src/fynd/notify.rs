//! Delivery of one-time codes for the storefront OTP routes. Minimal and private to `fynd`:
//! SMS and mail are written as files under `<data_dir>/outbox/sms/` and
//! `<data_dir>/outbox/mail/` (CONTRACT §1: "mail and SMS written to ./data/outbox/"), written
//! to a temporary name and renamed so a reader never sees half a message. SMTP delivery
//! (`CONFAB_SMTP_URL`) belongs to the shared notifier of the authentication service, which
//! should replace this module when both are merged.

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::{crypto::random_hex_id, error::ApiResult, types::now};

fn write(dir: PathBuf, extension: &str, contents: String) -> ApiResult<()> {
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let name = format!("{}-{}", now().and_utc().timestamp_millis(), random_hex_id());
    let tmp = dir.join(format!(".{name}.tmp"));
    let path = dir.join(format!("{name}.{extension}"));
    std::fs::write(&tmp, contents).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("renaming {}", path.display()))?;
    Ok(())
}

/// One text message to an E.164 number.
pub async fn sms(data_dir: &Path, to: &str, text: &str) -> ApiResult<()> {
    let (dir, contents) = (data_dir.join("outbox").join("sms"), format!("To: {to}\n\n{text}\n"));
    actix_web::web::block(move || write(dir, "txt", contents)).await?
}

/// One plain-text e-mail, as an RFC 5322 message.
pub async fn mail(data_dir: &Path, to: &str, subject: &str, text: &str) -> ApiResult<()> {
    let contents = format!(
        "From: confab <no-reply@localhost>\r\nTo: {to}\r\nSubject: {subject}\r\nDate: {}\r\nMIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\r\n{text}\r\n",
        now().and_utc().to_rfc2822()
    );
    let dir = data_dir.join("outbox").join("mail");
    actix_web::web::block(move || write(dir, "eml", contents)).await?
}
