//! Email: a rendered digest as a MIME message (plain text and HTML alternatives, the charts as inline PNG parts,
//! List-Unsubscribe headers), and the SMTP connection `[smtp]` describes.

use std::time::Duration;

use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::message::{Attachment, Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use pulse_config::{Config, SmtpSecurity};

use crate::digest::Rendered;
use crate::error::{AppError, AppResult, ErrorKind};

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
pub fn message(
    rendered: &Rendered,
    from: &str,
    to: &str,
    message_id: &str,
    unsubscribe: Option<&str>,
) -> AppResult<Message> {
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
    let mut builder = Message::builder()
        .from(from)
        .to(to_box)
        .subject(rendered.subject.clone())
        .message_id(Some(message_id.to_owned()))
        .date_now();
    if let Some(url) = unsubscribe {
        builder = builder.header(ListUnsubscribe(url.to_owned())).header(ListUnsubscribePost);
    }
    builder.multipart(body).map_err(|e| AppError::new(ErrorKind::Internal, format!("building the email: {e}")))
}

/// A connection to the configured mail server.
#[derive(Clone)]
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    pub from: String,
    /// `host:port`, for messages.
    pub server: String,
}

/// How a send went: sent, or failed with whether retrying can help.
#[derive(Debug)]
pub enum SendError {
    /// The server refused for good (a 5xx: unknown mailbox, policy): do not retry.
    Permanent(String),
    /// Try again later (a 4xx, a connection or TLS failure, a timeout).
    Transient(String),
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::Permanent(m) => write!(f, "refused by the mail server: {m}"),
            SendError::Transient(m) => write!(f, "not sent yet: {m}"),
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
        let tls = |host: &str| {
            TlsParameters::new(host.to_owned())
                .map_err(|e| AppError::new(ErrorKind::Internal, format!("TLS for {host}: {e}")))
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&smtp.host).port(port);
        builder = match smtp.security {
            SmtpSecurity::None => builder.tls(Tls::None),
            SmtpSecurity::Starttls => builder.tls(Tls::Required(tls(&smtp.host)?)),
            SmtpSecurity::Tls => builder.tls(Tls::Wrapper(tls(&smtp.host)?)),
        };
        if let (Some(user), Some(password)) = (&smtp.user, &smtp.password) {
            let secret = config.resolve(password).map_err(|e| {
                AppError::bad_request(format!("smtp.password ({}): {e}", password.describe()))
                    .with_hint("set the environment variable or secrets file it names")
            })?;
            builder = builder.credentials(Credentials::new(user.clone(), secret.expose().to_owned()));
        }
        let transport = builder.timeout(Some(Duration::from_secs(smtp.timeout_secs))).build();
        Ok(Mailer { transport, from: smtp.from.clone(), server: format!("{}:{port}", smtp.host) })
    }

    /// Sends one message; returns the server's reply.
    pub async fn send(&self, message: Message) -> Result<String, SendError> {
        match self.transport.send(message).await {
            Ok(reply) => Ok(reply.message().collect::<Vec<_>>().join(" ")),
            Err(e) if e.is_permanent() => Err(SendError::Permanent(e.to_string())),
            Err(e) => Err(SendError::Transient(format!("{} ({e})", self.server))),
        }
    }
}
