//! Email: a rendered digest as a MIME message (plain text and HTML alternatives, the charts as inline PNG parts,
//! List-Unsubscribe headers), and the SMTP connection `[smtp]` describes.

use std::time::Duration;

use lettre::Message;
use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::message::{Attachment, Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::TlsParameters;
use pulse_config::{Config, SmtpSecurity};

use crate::digest::Rendered;
use pulse_app::error::{AppError, AppResult, ErrorKind};

/// `List-Unsubscribe: <https://...>` (RFC 2369).
#[derive(Clone)]
struct ListUnsubscribe(String);

impl lettre::message::header::Header for ListUnsubscribe {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("List-Unsubscribe")
    }

    fn parse(s: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(Self(s.trim_matches(['<', '>']).to_owned()))
    }

    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), format!("<{}>", self.0))
    }
}

/// `List-Unsubscribe-Post: List-Unsubscribe=One-Click` (RFC 8058): mail clients may unsubscribe with one POST.
#[derive(Clone)]
struct ListUnsubscribePost;

impl lettre::message::header::Header for ListUnsubscribePost {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("List-Unsubscribe-Post")
    }

    fn parse(_: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(Self)
    }

    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), "List-Unsubscribe=One-Click".into())
    }
}

/// The email of `rendered` from `from` to `to`. `message_id` is stable for one (list, week, recipient), so a copy
/// that were ever sent twice would be recognised by the recipient's mail client as the same message.
pub fn message(rendered: &Rendered, from: &str, to: &str, headers: &ListHeaders) -> AppResult<Message> {
    let from: Mailbox = from.parse().map_err(|e| {
        AppError::bad_request(format!("smtp.from `{from}` is not a mailbox: {e}"))
            .with_hint("write `Name <address@domain>`")
    })?;
    let to_box: Mailbox =
        to.parse().map_err(|e| AppError::bad_request(format!("recipient `{to}` is not an email address: {e}")))?;
    let mut related = MultiPart::related().singlepart(SinglePart::html(rendered.html.clone()));
    for p in &rendered.pictures {
        related = related.singlepart(
            Attachment::new_inline_with_name(p.cid.clone(), format!("{}.png", p.cid))
                .body(p.png.clone(), ContentType::parse("image/png").expect("a valid content type")),
        );
    }
    let body = MultiPart::alternative().singlepart(SinglePart::plain(rendered.text.clone())).multipart(related);
    // Message-ID and List-Id are named in the sender's domain (RFC 5322 wants a domain on the right; RFC 2919 a
    // namespace the sender controls).
    let domain = from.email.domain().to_owned();
    let mut builder = Message::builder()
        .from(from)
        .to(to_box)
        .subject(rendered.subject.clone())
        .message_id(Some(format!("<{}@{domain}>", headers.message_id)))
        .date_now();
    if let Some(list) = &headers.list {
        builder = builder.header(ListId(format!("{list} digest <{list}.digests.{domain}>")));
    }
    if let Some(url) = &headers.unsubscribe {
        builder = builder.header(ListUnsubscribe(url.clone()));
        // One-click unsubscribe (RFC 8058) only over HTTPS, as the RFC requires; an http:// link is offered as a
        // plain link (`pulse config check` warns about it).
        if url.starts_with("https://") {
            builder = builder.header(ListUnsubscribePost);
        }
    }
    builder.multipart(body).map_err(|e| AppError::new(ErrorKind::Internal, format!("building the email: {e}")))
}

/// The list headers of one digest email.
#[derive(Debug, Clone, Default)]
pub struct ListHeaders {
    /// The left-hand side of the Message-ID; the sender's domain is the right.
    pub message_id: String,
    /// The list's name, for `List-Id`.
    pub list: Option<String>,
    /// The recipient's own unsubscribe link.
    pub unsubscribe: Option<String>,
}

/// `List-Id` (RFC 2919): lets mail clients file and filter the list's messages.
#[derive(Clone)]
struct ListId(String);

impl lettre::message::header::Header for ListId {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("List-Id")
    }

    fn parse(s: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(Self(s.to_owned()))
    }

    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), self.0.clone())
    }
}

/// A connection to the configured mail server.
#[derive(Clone)]
pub struct Mailer {
    host: String,
    port: u16,
    security: SmtpSecurity,
    credentials: Option<Credentials>,
    /// Every wait on the server (connecting, each reply, the reply to the message) is cut at this.
    timeout: Duration,
    pub from: String,
    /// `host:port`, for messages.
    pub server: String,
}

/// How a send went: sent, or failed with whether retrying can help.
#[derive(Debug)]
pub enum SendError {
    /// The server refused for good (a 5xx: unknown mailbox, policy): do not retry.
    Permanent(String),
    /// Not sent, try again later (a 4xx, a connection or TLS failure, a timeout before the message went).
    Transient(String),
    /// The message went but its reply never came (the connection dropped, the wait timed out): the server may have
    /// stored it. Never retried automatically: the recipient is reported interrupted for the operator to resend.
    Interrupted(String),
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::Permanent(m) => write!(f, "refused by the mail server: {m}"),
            SendError::Transient(m) => write!(f, "not sent yet: {m}"),
            SendError::Interrupted(m) => write!(f, "sent, but the server's reply was lost (it may have arrived): {m}"),
        }
    }
}

impl Mailer {
    /// The mailer `[smtp]` describes; the password is resolved here and never shown.
    pub fn from_config(config: &Config) -> AppResult<Mailer> {
        let smtp = config.smtp.as_ref().ok_or_else(|| {
            AppError::bad_request(format!("no [smtp] section in {}", config.path.display()))
                .with_hint("add [smtp] with host, security and from (see config/pulse.example.toml)")
        })?;
        let port = smtp.port();
        if smtp.security != SmtpSecurity::None {
            TlsParameters::new(smtp.host.clone())
                .map_err(|e| AppError::new(ErrorKind::Internal, format!("TLS for {}: {e}", smtp.host)))?;
        }
        let credentials = match (&smtp.user, &smtp.password) {
            (Some(user), Some(password)) => {
                let secret = config.resolve(password).map_err(|e| {
                    AppError::bad_request(format!("smtp.password ({}): {e}", password.describe()))
                        .with_hint("set the environment variable or secrets file it names")
                })?;
                Some(Credentials::new(user.clone(), secret.expose().to_owned()))
            }
            _ => None,
        };
        Ok(Mailer {
            host: smtp.host.clone(),
            port,
            security: smtp.security,
            credentials,
            timeout: Duration::from_secs(smtp.timeout_secs.max(1)),
            from: smtp.from.clone(),
            server: format!("{}:{port}", smtp.host),
        })
    }

    /// Sends one message; returns the server's reply. The exchange is driven step by step so that a failure is
    /// known to come before the message went (transient or permanent) or after (interrupted), and every wait is
    /// bounded by `timeout_secs`.
    pub async fn send(&self, message: Message) -> Result<String, SendError> {
        use lettre::transport::smtp::client::AsyncSmtpConnection;
        use lettre::transport::smtp::commands::{Data, Mail, Rcpt};
        use lettre::transport::smtp::extension::{ClientId, Extension, MailBodyParameter, MailParameter};
        let before = |e: lettre::transport::smtp::Error| {
            if e.is_permanent() {
                SendError::Permanent(e.to_string())
            } else {
                SendError::Transient(format!("{} ({e})", self.server))
            }
        };
        let timed_out =
            |what: &str| format!("{}: no answer to {what} within {} s", self.server, self.timeout.as_secs());
        let step = |what: &'static str| move |_| SendError::Transient(timed_out(what));
        let tls = || TlsParameters::new(self.host.clone()).map_err(|e| SendError::Transient(format!("TLS: {e}")));
        let hello = ClientId::default();
        let wrapper = if self.security == SmtpSecurity::Tls { Some(tls()?) } else { None };
        let connect = AsyncSmtpConnection::connect_tokio1(
            (self.host.as_str(), self.port),
            Some(self.timeout),
            &hello,
            wrapper,
            None,
        );
        let mut conn =
            tokio::time::timeout(self.timeout, connect).await.map_err(step("connecting"))?.map_err(before)?;
        if self.security == SmtpSecurity::Starttls {
            let upgrade = conn.starttls(tls()?, &hello);
            tokio::time::timeout(self.timeout, upgrade).await.map_err(step("STARTTLS"))?.map_err(before)?;
        }
        if let Some(credentials) = &self.credentials {
            use lettre::transport::smtp::authentication::Mechanism;
            let auth = conn.auth(&[Mechanism::Plain, Mechanism::Login], credentials);
            tokio::time::timeout(self.timeout, auth).await.map_err(step("AUTH"))?.map_err(before)?;
        }
        let envelope = message.envelope().clone();
        let body = message.formatted();
        let mut options = vec![];
        if !body.is_ascii() && conn.server_info().supports_feature(Extension::EightBitMime) {
            options.push(MailParameter::Body(MailBodyParameter::EightBitMime));
        }
        let mail = conn.command(Mail::new(envelope.from().cloned(), options));
        tokio::time::timeout(self.timeout, mail).await.map_err(step("MAIL FROM"))?.map_err(before)?;
        for to in envelope.to() {
            let rcpt = conn.command(Rcpt::new(to.clone(), vec![]));
            tokio::time::timeout(self.timeout, rcpt).await.map_err(step("RCPT TO"))?.map_err(before)?;
        }
        let data = conn.command(Data);
        tokio::time::timeout(self.timeout, data).await.map_err(step("DATA"))?.map_err(before)?;
        // From here the message is on its way: only a reply from the server says it was not taken.
        let reply = match tokio::time::timeout(self.timeout, conn.message(&body)).await {
            Err(_) => return Err(SendError::Interrupted(timed_out("the message"))),
            // A 4xx or 5xx reply: the server did not take it (an "incomplete response" has no code: lost).
            Ok(Err(e)) if e.is_transient() || e.is_permanent() => return Err(before(e)),
            Ok(Err(e)) => return Err(SendError::Interrupted(format!("{} ({e})", self.server))),
            Ok(Ok(reply)) => reply,
        };
        let _ = tokio::time::timeout(self.timeout, conn.quit()).await;
        Ok(reply.message().collect::<Vec<_>>().join(" "))
    }
}
