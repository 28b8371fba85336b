//! A served demo world for the server's tests: the case-study demo (two tenants) computed once per test binary into
//! a temporary directory, and a server on a loopback port per test over it.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use pulse_app::keys::{KeyScope, Keys};
use pulse_config::Config;

/// The demo's directory (config, lake, reports), made once.
pub fn demo_dir() -> PathBuf {
    static DIR: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().to_owned();
        let run = path.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
            rt.block_on(async {
                let req = pulse_demo::DemoRequest { dir: run, scenario: "case-study".into(), concurrency: 16 };
                let code = pulse_demo::run(&req, &mut |_| {}).await.expect("demo runs");
                assert_eq!(code, 0, "the demo finished cleanly");
            });
        })
        .join()
        .expect("demo thread");
        // A research export project, its key in a git-ignored secrets file beside the config.
        // And a digest list per tenant, unsubscribe links signed with a key in the same file.
        std::fs::write(
            path.join("projects.secrets.toml"),
            "\"study\" = \"key-of-the-test-study-0001-0123456789abcdef\"\n\"digest\" = \"link-secret-of-the-tests\"\n",
        )
        .unwrap();
        let mut toml = std::fs::read_to_string(path.join("pulse.toml")).unwrap();
        toml.push_str(
            "\n[[export_project]]\nname = \"study\"\nkey = { file = \"projects.secrets.toml\", key = \"study\" }\n\n\
             [digest]\nlink_secret = { file = \"projects.secrets.toml\", key = \"digest\" }\n\n\
             [[subscription]]\nname = \"stoke-weekly\"\ntenant = \"stoke\"\nrecipients = [\"lead@stoke.example.nhs.uk\"]\n\n\
             [[subscription]]\nname = \"north-weekly\"\ntenant = \"north-staffs\"\nrecipients = [\"lead@north.example.nhs.uk\"]\n",
        );
        std::fs::write(path.join("pulse.toml"), toml).unwrap();
        (dir, path)
    })
    .1
    .clone()
}

pub fn config() -> Config {
    pulse_config::load(&demo_dir().join("pulse.toml")).expect("demo config")
}

/// A copy of the demo (config, lake, journal) for a test that changes it, and its config.
pub fn demo_copy() -> (tempfile::TempDir, Config) {
    let dir = tempfile::tempdir().expect("temp dir");
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", demo_dir().display()))
        .arg(dir.path())
        .status()
        .expect("cp runs");
    assert!(status.success(), "the demo is copied");
    let config = pulse_config::load(&dir.path().join("pulse.toml")).expect("the copy's config");
    (dir, config)
}

/// The practices of a tenant in the demo config.
pub fn practices(config: &Config, tenant: &str) -> Vec<String> {
    config
        .tenants
        .iter()
        .find(|t| t.id.as_str() == tenant)
        .map(|t| t.practices.iter().map(|p| p.code.to_string()).collect())
        .unwrap_or_default()
}

pub fn key(config: &Config, tenants: &[&str], scopes: &[KeyScope]) -> String {
    let tenants: Vec<String> = tenants.iter().map(|t| t.to_string()).collect();
    Keys::for_config(config).create(config, "test", &tenants, scopes, None).expect("key").secret
}

/// A running server over the demo world.
pub struct Served {
    pub url: String,
    pub config: Config,
    pub state: pulse_server::Shared,
    _stop: tokio::sync::oneshot::Sender<()>,
}

pub async fn serve_with(config: Config) -> Served {
    serve_at(config, "127.0.0.1:0").await
}

pub async fn serve() -> Served {
    serve_with(config()).await
}

pub fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client")
}

/// Everything the tests' tracing writes at INFO and above, from the first call on (one subscriber per test binary).
pub fn captured_logs() -> std::sync::Arc<std::sync::Mutex<Vec<u8>>> {
    use std::sync::{Arc, Mutex, OnceLock};
    static LOG: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOG.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        struct W(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for W {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let sink = buf.clone();
        tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .with_writer(move || W(sink.clone()))
            .init();
        buf
    })
    .clone()
}

/// A loopback port free just now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A running server over `config` on `addr` (a port chosen before the config named it).
pub async fn serve_at(config: Config, addr: &str) -> Served {
    let store = pulse_app::open::store(&config).expect("store");
    let state = Arc::new(pulse_server::AppState::new(config.clone(), store).expect("state"));
    let (listener, addr) = pulse_server::bind(addr).await.expect("bind");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(pulse_server::serve(state.clone(), listener, async {
        let _ = rx.await;
    }));
    Served { url: format!("http://{addr}"), config, state, _stop: tx }
}

/// Headless Chromium's command (`PULSE_CHROMIUM`, or Debian's `chromium`), when one runs.
pub fn chromium() -> Option<String> {
    let candidates = [std::env::var("PULSE_CHROMIUM").ok(), Some("chromium".into()), Some("chromium-browser".into())];
    candidates
        .into_iter()
        .flatten()
        .find(|c| std::process::Command::new(c).arg("--version").output().is_ok_and(|o| o.status.success()))
}

/// Logs `key` in through the form and answers the session cookie (`pulse_session=...`).
pub async fn dashboard_session(url: &str, key: &str) -> String {
    let c = client();
    let form = c.get(format!("{url}/login")).send().await.unwrap();
    let set = form.headers()["set-cookie"].to_str().unwrap().to_owned();
    let token = set.split(';').next().unwrap().split_once('=').unwrap().1.to_owned();
    let r = c
        .post(format!("{url}/login"))
        .header("cookie", format!("pulse_login_csrf={token}"))
        .form(&[("key", key), ("csrf", token.as_str()), ("next", "/")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    r.headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|v| v.starts_with("pulse_session="))
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned()
}

/// A dashboard page's HTML for a signed-in session (asserting a 200); the future owns what it needs.
pub fn dashboard_page(url: &str, session: &str, path: &str) -> impl std::future::Future<Output = String> + use<> {
    let (full, session) = (format!("{url}{path}"), session.to_owned());
    async move {
        let r = client().get(&full).header("cookie", session).send().await.unwrap();
        assert_eq!(r.status(), 200, "{full}");
        r.text().await.unwrap()
    }
}
