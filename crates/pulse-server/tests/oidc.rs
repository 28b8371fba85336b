//! Sign-in with the organisation's identity provider, against a real one: npm's `oidc-provider` run on loopback
//! (`tests/oidc/provider.mjs`), driven through headless Chromium by `tests/oidc_browser.py`. An analyst whose group
//! grants one tenant sees that tenant only; a regional lead's group grants both and the region page; a person no
//! grant covers, a cancelled sign-in, a replayed callback, a forged `state` and a callback from another browser are
//! refused with a page saying why; logging out ends the session; no code, token or email reaches the log.
//!
//! Needs `node`, `npm` (the provider is installed into the target directory on first run, or set
//! PULSE_OIDC_PROVIDER_DIR to a directory holding `node_modules/oidc-provider`) and Chromium. Skipped with a message
//! without them, unless `PULSE_REQUIRE_OIDC=1` (CI sets it), where anything missing fails the test.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use common::{captured_logs, chromium, client, config, demo_dir, free_port, serve_at};
use pulse_config::{OidcConfig, OidcGrant, SecretRef};

const CLIENT_SECRET: &str = "oidc-test-client-secret-0123456789abcdef";

/// A directory with `node_modules/oidc-provider`, installed there with npm when it is not yet.
fn provider_dir() -> Result<PathBuf, String> {
    let dir = std::env::var_os("PULSE_OIDC_PROVIDER_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("oidc-provider"));
    if dir.join("node_modules/oidc-provider/package.json").exists() {
        return Ok(dir);
    }
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let out = Command::new("npm")
        .args(["install", "--no-audit", "--no-fund", "--silent", "--prefix"])
        .arg(&dir)
        .arg("oidc-provider@9")
        .output()
        .map_err(|e| format!("npm: {e}"))?;
    if !out.status.success() {
        return Err(format!("npm install oidc-provider failed: {}", String::from_utf8_lossy(&out.stderr)));
    }
    Ok(dir)
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn skip_or_fail(why: &str) {
    if std::env::var_os("PULSE_REQUIRE_OIDC").is_some() {
        panic!("PULSE_REQUIRE_OIDC is set but {why}");
    }
    eprintln!(
        "skipped: {why}; the sign-in test needs node, npm (oidc-provider is installed on first run) and chromium"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_in_with_the_organisations_provider_opens_its_own_tenants_only() {
    let Some(browser) = chromium() else { return skip_or_fail("no chromium was found") };
    if Command::new("node").arg("--version").output().is_err() {
        return skip_or_fail("no node was found");
    }
    let dir = match provider_dir() {
        Ok(d) => d,
        Err(e) => return skip_or_fail(&e),
    };
    let logs = captured_logs();
    let (provider_port, server_port) = (free_port(), free_port());
    let issuer = format!("http://127.0.0.1:{provider_port}");
    let server = format!("http://127.0.0.1:{server_port}");
    let redirect = format!("{server}/auth/oidc/callback");
    // The script beside its node_modules, so `import 'oidc-provider'` resolves.
    std::fs::copy(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/oidc/provider.mjs"), dir.join("provider.mjs")).unwrap();
    let _provider = Killed(
        Command::new("node")
            .arg(dir.join("provider.mjs"))
            .args([&provider_port.to_string(), &redirect, CLIENT_SECRET])
            .current_dir(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("node starts"),
    );
    let c = client();
    let discovery = format!("{issuer}/.well-known/openid-configuration");
    let mut up = false;
    for _ in 0..100 {
        if c.get(&discovery).send().await.is_ok_and(|r| r.status().is_success()) {
            up = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(up, "oidc-provider answered at {discovery}");

    std::fs::write(demo_dir().join("oidc.secrets.toml"), format!("client = \"{CLIENT_SECRET}\"\n")).unwrap();
    let mut config = config();
    let grant = |value: &str, tenants: &[&str], scopes: &[&str]| OidcGrant {
        claim: "groups".into(),
        value: value.into(),
        tenants: tenants.iter().map(|t| t.to_string()).collect(),
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
    };
    config.server.oidc = Some(OidcConfig {
        issuer: issuer.clone(),
        client_id: "pulse-dashboard".into(),
        client_secret: Some(SecretRef {
            env: None,
            file: Some("oidc.secrets.toml".into()),
            key: Some("client".into()),
        }),
        redirect_url: redirect.clone(),
        scopes: ["openid", "email", "profile", "groups"].map(String::from).to_vec(),
        label: "NHSmail (test provider)".into(),
        grants: vec![
            grant("pulse-stoke-analysts", &["stoke"], &["read"]),
            grant("pulse-region-leads", &["stoke", "north-staffs"], &["read", "admin"]),
        ],
    });
    let own = config.tenants.iter().find(|t| t.id.as_str() == "stoke").unwrap().clone();
    let other = config.tenants.iter().find(|t| t.id.as_str() == "north-staffs").unwrap().clone();
    let s = serve_at(config, &format!("127.0.0.1:{server_port}")).await;

    // Hostile requests that need no browser. A forged state:
    let forged = c.get(format!("{server}/auth/oidc/callback?code=abc&state=forged")).send().await.unwrap();
    assert_eq!(forged.status(), 400);
    let text = forged.text().await.unwrap();
    assert!(text.contains("was not started here"), "{text}");
    // A real state, but from a browser that did not start it (no binding cookie):
    let started = c.get(format!("{server}/auth/oidc/start?next=/posts")).send().await.unwrap();
    assert_eq!(started.status(), 303);
    let binding = started.headers().get("set-cookie").unwrap().to_str().unwrap().to_owned();
    assert!(binding.starts_with("pulse_oidc=") && binding.contains("HttpOnly"), "{binding}");
    let to_provider = started.headers().get("location").unwrap().to_str().unwrap().to_owned();
    assert!(to_provider.starts_with(&format!("{issuer}/auth?")), "{to_provider}");
    let params: std::collections::HashMap<String, String> = url_params(&to_provider).into_iter().collect();
    assert_eq!(params["code_challenge_method"], "S256");
    assert_eq!(params["redirect_uri"], redirect);
    assert!(params["code_challenge"].len() == 43 && params["nonce"].len() >= 32 && params["state"].len() >= 32);
    let elsewhere =
        c.get(format!("{server}/auth/oidc/callback?code=abc&state={}", params["state"])).send().await.unwrap();
    assert_eq!(elsewhere.status(), 403);
    assert!(elsewhere.text().await.unwrap().contains("started in another browser"));
    // The same state again (it was taken out by the first try): refused as used.
    let cookie = binding.split(';').next().unwrap().to_owned();
    let again = c
        .get(format!("{server}/auth/oidc/callback?code=abc&state={}", params["state"]))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 400);
    assert!(again.text().await.unwrap().contains("already used"));
    // The login page offers the provider beside the key form; a key-only server does not.
    let login = c.get(format!("{server}/login?next=/posts")).send().await.unwrap().text().await.unwrap();
    assert!(
        login.contains("Sign in with NHSmail (test provider)") && login.contains("/auth/oidc/start?next=%2Fposts"),
        "{login}"
    );

    // Through the browser, as people would.
    let tmp = tempfile::tempdir().unwrap();
    let own_names: std::collections::BTreeSet<&str> = own.practices.iter().map(|p| p.name.as_str()).collect();
    let mut forbid: Vec<String> = other.practices.iter().map(|p| p.code.to_string()).collect();
    forbid.extend(other.practices.iter().map(|p| p.name.clone()).filter(|n| !own_names.contains(n.as_str())));
    forbid.push(other.name.clone());
    let (forbid_file, callbacks) = (tmp.path().join("forbid"), tmp.path().join("callbacks"));
    std::fs::write(&forbid_file, forbid.join("\n")).unwrap();
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("oidc-screenshots");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/oidc_browser.py");
    let url = s.url.clone();
    let (ff, cb) = (forbid_file.clone(), callbacks.clone());
    let status = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .args([script, "--chromium", &browser, "--url", &url])
            .arg("--forbid-file")
            .arg(&ff)
            .arg("--callbacks")
            .arg(&cb)
            .arg("--out")
            .arg(&out)
            .status()
    })
    .await
    .unwrap()
    .expect("python3 runs");
    assert!(status.success(), "the sign-in checks in the browser failed (see above)");

    // Nothing the provider gave reaches the log: no code, no email, no client secret; people appear by pseudonym.
    let text = String::from_utf8(logs.lock().unwrap().clone()).unwrap();
    let seen = std::fs::read_to_string(&callbacks).unwrap();
    let codes: Vec<String> =
        seen.lines().flat_map(url_params).filter(|(k, _)| k == "code" || k == "state").map(|(_, v)| v).collect();
    assert!(codes.len() >= 4, "codes and states were seen: {seen}");
    for secret in codes.iter().map(String::as_str).chain([CLIENT_SECRET, "ann.lee@stoke", "rae.khan@region"]) {
        assert!(!text.contains(secret), "{secret} reached the log");
    }
    let signed_in: Vec<&str> =
        text.lines().filter(|l| l.contains("/auth/oidc/callback") && l.contains("status=303")).collect();
    assert!(signed_in.len() >= 2, "each sign-in is logged: {text}");
    assert!(signed_in.iter().all(|l| l.contains("key=\"oidc-")), "by pseudonym: {signed_in:?}");
    assert!(signed_in.iter().any(|l| l.contains("tenant=\"stoke\"")), "with its tenant: {signed_in:?}");
}

/// A URL's query parameters, decoded.
fn url_params(url: &str) -> Vec<(String, String)> {
    let query = url.split_once('?').map_or("", |(_, q)| q);
    form_urlencoded::parse(query.as_bytes()).into_owned().collect()
}
