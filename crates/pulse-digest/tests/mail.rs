//! The mailer against a scripted SMTP server on a loopback socket: a failure before the message went is retried, one
//! after it (the server stored the message and dropped the line, or its final reply never came) is `Interrupted`,
//! never retried by itself; and every wait is cut at `timeout_secs`.

use std::time::{Duration, Instant};

use pulse_digest::mail::{Mailer, SendError};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

#[derive(Clone, Copy, PartialEq, Debug)]
enum Script {
    /// Answers everything: 250 after the message.
    Good,
    /// Refuses the recipient for now (451): nothing was sent.
    DeferRecipient,
    /// Reads the whole message, then closes the connection without the final reply.
    DropAfterData,
    /// Reads the whole message, then waits this long before the final reply.
    StallAfterData(u64),
    /// Answers the greeting only after this long.
    StallGreeting(u64),
}

/// A one-connection SMTP server following `script`; returns its port and how many messages it stored.
async fn server(script: Script) -> (u16, tokio::task::JoinHandle<usize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let (socket, _) = listener.accept().await.unwrap();
        let (read, mut write) = socket.into_split();
        let mut lines = BufReader::new(read).lines();
        if let Script::StallGreeting(s) = script {
            tokio::time::sleep(Duration::from_secs(s)).await;
        }
        write.write_all(b"220 test ESMTP\r\n").await.unwrap();
        let mut stored = 0;
        while let Ok(Some(line)) = lines.next_line().await {
            let upper = line.to_ascii_uppercase();
            let reply: &[u8] = if upper.starts_with("EHLO") {
                b"250-test\r\n250 8BITMIME\r\n"
            } else if upper.starts_with("RCPT") && script == Script::DeferRecipient {
                b"451 try later\r\n"
            } else if upper.starts_with("DATA") {
                write.write_all(b"354 go ahead\r\n").await.unwrap();
                while let Ok(Some(l)) = lines.next_line().await {
                    if l == "." {
                        break;
                    }
                }
                stored += 1;
                match script {
                    Script::DropAfterData => return stored,
                    Script::StallAfterData(s) => tokio::time::sleep(Duration::from_secs(s)).await,
                    _ => {}
                }
                b"250 queued\r\n"
            } else if upper.starts_with("QUIT") {
                let _ = write.write_all(b"221 bye\r\n").await;
                return stored;
            } else {
                b"250 ok\r\n"
            };
            if write.write_all(reply).await.is_err() {
                break;
            }
        }
        stored
    });
    (port, task)
}

fn mailer(port: u16, timeout_secs: u64) -> Mailer {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pulse.toml");
    std::fs::write(
        &path,
        format!(
            "[smtp]\nhost = \"127.0.0.1\"\nport = {port}\nsecurity = \"none\"\nfrom = \"Pulse <digests@example.nhs.uk>\"\ntimeout_secs = {timeout_secs}\n"
        ),
    )
    .unwrap();
    Mailer::from_config(&pulse_config::load(&path).unwrap()).unwrap()
}

fn message() -> lettre::Message {
    lettre::Message::builder()
        .from("Pulse <digests@example.nhs.uk>".parse().unwrap())
        .to("lead@example.nhs.uk".parse().unwrap())
        .subject("digest")
        .body(String::from("figures"))
        .unwrap()
}

#[tokio::test]
async fn a_stored_message_whose_reply_is_lost_is_interrupted_not_retried() {
    let (port, stored) = server(Script::DropAfterData).await;
    let result = mailer(port, 5).send(message()).await;
    assert!(matches!(result, Err(SendError::Interrupted(_))), "{result:?}");
    assert_eq!(stored.await.unwrap(), 1, "the server did store it: a retry would have been a second copy");
}

#[tokio::test]
async fn a_final_reply_slower_than_the_timeout_is_cut_there_and_interrupted() {
    let (port, stored) = server(Script::StallAfterData(6)).await;
    let started = Instant::now();
    let result = mailer(port, 2).send(message()).await;
    let took = started.elapsed();
    assert!(matches!(result, Err(SendError::Interrupted(ref w)) if w.contains("within 2 s")), "{result:?}");
    assert!(took < Duration::from_millis(4500), "cut at the 2 s timeout, took {took:?}");
    assert_eq!(stored.await.unwrap(), 1);
}

#[tokio::test]
async fn failures_before_the_message_went_are_transient_and_bounded() {
    let (port, stored) = server(Script::DeferRecipient).await;
    let result = mailer(port, 5).send(message()).await;
    assert!(matches!(result, Err(SendError::Transient(ref w)) if w.contains("451")), "{result:?}");
    drop(stored);
    let (port, _stored) = server(Script::StallGreeting(6)).await;
    let started = Instant::now();
    let result = mailer(port, 2).send(message()).await;
    assert!(matches!(result, Err(SendError::Transient(_))), "{result:?}");
    assert!(started.elapsed() < Duration::from_millis(4500), "the greeting wait is cut too");
    // Nothing listening: transient.
    let free = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap().port();
    let result = mailer(free, 2).send(message()).await;
    assert!(matches!(result, Err(SendError::Transient(_))), "{result:?}");
    let (port, stored) = server(Script::Good).await;
    assert_eq!(mailer(port, 5).send(message()).await.unwrap(), "queued");
    assert_eq!(stored.await.unwrap(), 1);
}

/// A digest's headers: the Message-ID's right-hand side is the sender's domain, the list has a List-Id, and
/// one-click unsubscribe (List-Unsubscribe-Post) is offered only with an https link, as RFC 8058 requires.
#[test]
fn digest_headers_name_the_senders_domain_and_one_click_needs_https() {
    let rendered = pulse_digest::digest::Rendered {
        subject: "Weekly digest".into(),
        text: "figures".into(),
        html: "<p>figures</p>".into(),
        pictures: vec![],
    };
    let headers = |unsubscribe: &str| pulse_digest::mail::ListHeaders {
        message_id: "digest.stoke-weekly.2018-03-25.0123456789abcdef".into(),
        list: Some("stoke-weekly".into()),
        unsubscribe: Some(unsubscribe.into()),
    };
    let build = |h| {
        let m = pulse_digest::mail::message(&rendered, "Pulse <digests@pulse.example.nhs.uk>", "a@example.nhs.uk", &h)
            .unwrap();
        // Headers unfolded (a long one is folded onto a continuation line).
        String::from_utf8(m.formatted()).unwrap().replace("\r\n ", " ")
    };
    let https = build(headers("https://pulse.example.nhs.uk/unsubscribe?t=x"));
    assert!(
        https.contains("Message-ID: <digest.stoke-weekly.2018-03-25.0123456789abcdef@pulse.example.nhs.uk>"),
        "{https}"
    );
    assert!(https.contains("List-Id: stoke-weekly digest <stoke-weekly.digests.pulse.example.nhs.uk>"), "{https}");
    assert!(https.contains("List-Unsubscribe: <https://pulse.example.nhs.uk/unsubscribe?t=x>"), "{https}");
    assert!(https.contains("List-Unsubscribe-Post: List-Unsubscribe=One-Click"), "{https}");
    let http = build(headers("http://127.0.0.1:8080/unsubscribe?t=x"));
    assert!(http.contains("List-Unsubscribe: <http://127.0.0.1:8080/unsubscribe?t=x>"), "{http}");
    assert!(!http.contains("List-Unsubscribe-Post"), "one-click needs https: {http}");
}
