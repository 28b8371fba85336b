//! The dashboard in a real browser: headless Chromium (Debian's `chromium`) driven by `tests/browser.py` over the
//! DevTools protocol logs in with a key, loads every page, checks the charts drew, that the other tenant's practices
//! are absent and nothing is fetched from elsewhere, and saves screenshots under the target directory
//! (`<target>/tmp/dashboard-screenshots/`).
//!
//! Without Chromium the test is skipped with a message, unless `PULSE_REQUIRE_BROWSER=1` (CI sets it), where a
//! missing browser fails it.

mod common;

use std::collections::BTreeSet;
use std::process::Command;

use common::{chromium, config, key, serve};
use pulse_app::keys::KeyScope;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_renders_every_page_in_chromium_for_its_tenant_only() {
    let Some(browser) = chromium() else {
        if std::env::var_os("PULSE_REQUIRE_BROWSER").is_some() {
            panic!(
                "PULSE_REQUIRE_BROWSER is set but no chromium was found: install Debian's `chromium` or set PULSE_CHROMIUM"
            );
        }
        eprintln!("skipped: no chromium; `apt-get install chromium` (or set PULSE_CHROMIUM) to run the browser test");
        return;
    };
    let config = config();
    let s = serve().await;
    let secret = key(&config, &["north-staffs"], &[KeyScope::Read]);
    let own = config.tenants.iter().find(|t| t.id.as_str() == "north-staffs").unwrap();
    let other = config.tenants.iter().find(|t| t.id.as_str() == "stoke").unwrap();
    // Forbidden: the other tenant's codes, and its names that no practice of our own shares.
    let own_names: BTreeSet<&str> = own.practices.iter().map(|p| p.name.as_str()).collect();
    let mut forbid: Vec<String> = other.practices.iter().map(|p| p.code.to_string()).collect();
    forbid.extend(other.practices.iter().map(|p| p.name.clone()).filter(|n| !own_names.contains(n.as_str())));
    forbid.push(other.name.clone());
    let dir = tempfile::tempdir().unwrap();
    let (key_file, forbid_file) = (dir.path().join("key"), dir.path().join("forbid"));
    std::fs::write(&key_file, &secret).unwrap();
    std::fs::write(&forbid_file, forbid.join("\n")).unwrap();
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard-screenshots");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser.py");
    let practice = format!("/practices/{}", own.practices[0].code);
    let url = s.url.clone();
    let status = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .args([script, "--chromium", &browser, "--url", &url, "--page", &practice])
            .arg("--key-file")
            .arg(&key_file)
            .arg("--forbid-file")
            .arg(&forbid_file)
            .arg("--out")
            .arg(&out)
            .status()
    })
    .await
    .unwrap()
    .expect("python3 runs");
    assert!(status.success(), "the browser checks failed (see above)");
    let shots = std::fs::read_dir(std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard-screenshots"))
        .unwrap()
        .count();
    assert!(shots >= 8, "{shots} screenshots");
}
