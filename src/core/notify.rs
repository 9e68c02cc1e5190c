//! Outgoing e-mail and SMS for one-time codes, reset links and invitations (CONTRACT §1).
//!
//! - [`EmailSender`]: SMTP through `lettre` when `CONFAB_SMTP_URL` is set
//!   (`smtp://user:pass@host:port`, or `smtps://` for implicit TLS), otherwise each message is
//!   written as an RFC 5322 `.eml` file to `<data_dir>/outbox/mail/`.
//! - [`SmsSender`]: each text is written to `<data_dir>/outbox/sms/` as a small file
//!   (`To: +4915…`, a blank line, the text).
//!
//! Usage: `EmailSender::from_config(&config)?.send("ada@example.com", "Subject", "text").await?`,
//! `SmsSender::from_config(&config).send("+4915112345678", "text").await?`. Outbox files are
//! named `<epoch millis>-<random>.eml|.txt`, so sorting the names sorts them by time.

use std::path::{Path, PathBuf};

use anyhow::Context;
use lettre::{
    AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor,
    message::{Mailbox, header::ContentType},
};
use secrecy::ExposeSecret;

use crate::core::config::Config;

#[derive(Clone)]
enum MailTransport {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    Files(PathBuf),
}

/// Sends plain-text e-mail (see the module docs).
#[derive(Clone)]
pub struct EmailSender {
    from: Mailbox,
    transport: MailTransport,
}

impl EmailSender {
    pub fn from_config(config: &Config) -> anyhow::Result<Self> {
        let transport = match &config.smtp_url {
            Some(url) => MailTransport::Smtp(
                AsyncSmtpTransport::<Tokio1Executor>::from_url(url.expose_secret()).context("CONFAB_SMTP_URL")?.build(),
            ),
            None => MailTransport::Files(config.data_dir.join("outbox").join("mail")),
        };
        Ok(Self { from: sender_address(&config.public_url), transport })
    }

    /// Sends one message. `to` must be an e-mail address.
    pub async fn send(&self, to: &str, subject: &str, body: &str) -> anyhow::Result<()> {
        let message = Message::builder()
            .from(self.from.clone())
            .to(to.parse().with_context(|| format!("recipient {to:?}"))?)
            .subject(subject)
            .header(ContentType::TEXT_PLAIN)
            .body(body.to_owned())
            .context("building the message")?;
        match &self.transport {
            MailTransport::Smtp(smtp) => {
                smtp.send(message).await.context("sending over SMTP")?;
            }
            MailTransport::Files(dir) => write_outbox(dir, "eml", &message.formatted()).await?,
        }
        Ok(())
    }
}

/// `no-reply@<host of CONFAB_PUBLIC_URL>`, or `no-reply@localhost` when that host is an IP.
fn sender_address(public_url: &str) -> Mailbox {
    let host = public_url.split("://").nth(1).unwrap_or("").split(['/', ':']).next().unwrap_or("");
    let domain = if host.contains('.') && host.parse::<std::net::IpAddr>().is_err() { host } else { "localhost" };
    format!("confab <no-reply@{domain}>")
        .parse()
        .unwrap_or_else(|_| "confab <no-reply@localhost>".parse().expect("a valid fixed address"))
}

/// Sends text messages (see the module docs).
#[derive(Clone)]
pub struct SmsSender {
    dir: PathBuf,
}

impl SmsSender {
    pub fn from_config(config: &Config) -> Self {
        Self { dir: config.data_dir.join("outbox").join("sms") }
    }

    /// Sends one text to an E.164 number.
    pub async fn send(&self, to: &str, body: &str) -> anyhow::Result<()> {
        write_outbox(&self.dir, "txt", format!("To: {to}\n\n{body}\n").as_bytes()).await
    }
}

async fn write_outbox(dir: &Path, ext: &str, contents: &[u8]) -> anyhow::Result<()> {
    tokio::fs::create_dir_all(dir).await.with_context(|| format!("creating {}", dir.display()))?;
    let name =
        format!("{}-{}.{ext}", chrono::Utc::now().timestamp_millis(), &crate::core::crypto::random_hex_id()[..8]);
    // Written under a temporary name and renamed, so a reader never sees half a message.
    let (tmp, path) = (dir.join(format!(".{name}.tmp")), dir.join(&name));
    tokio::fs::write(&tmp, contents).await.with_context(|| format!("writing {}", tmp.display()))?;
    tokio::fs::rename(&tmp, &path).await.with_context(|| format!("renaming {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sender_address_follows_the_public_host() {
        assert_eq!(sender_address("https://chat.example.com/x").email.to_string(), "no-reply@chat.example.com");
        assert_eq!(sender_address("http://127.0.0.1:8080").email.to_string(), "no-reply@localhost");
    }

    #[actix_web::test]
    async fn mail_and_sms_land_in_the_outbox() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::for_tests(dir.path().to_path_buf(), "sqlite://unused".into());
        EmailSender::from_config(&config).unwrap().send("ada@example.com", "Hello", "code 123456").await.unwrap();
        SmsSender::from_config(&config).send("+4915112345678", "code 654321").await.unwrap();
        let mail = std::fs::read_dir(dir.path().join("outbox/mail")).unwrap().next().unwrap().unwrap();
        let text = std::fs::read_to_string(mail.path()).unwrap();
        assert!(text.contains("To: ada@example.com") && text.contains("code 123456"), "{text}");
        let sms = std::fs::read_dir(dir.path().join("outbox/sms")).unwrap().next().unwrap().unwrap();
        assert!(std::fs::read_to_string(sms.path()).unwrap().contains("+4915112345678"));
    }
}
