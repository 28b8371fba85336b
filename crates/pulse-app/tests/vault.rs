//! The token vault on both stores: tokens imported from the config's references are sealed in the store, the
//! ingester takes them from there (also once the references are gone), a rotation seals them again under a new key
//! so the old key can be dropped, and neither store holds a token in the clear: every byte of the lake, and of
//! ClickHouse's `state_events`, is searched for each token.
//!
//! The ClickHouse half runs when `PULSE_TEST_CLICKHOUSE_URL` is set (CI); with `PULSE_REQUIRE_CLICKHOUSE=1` a
//! missing server fails it.

use std::path::Path;

use pulse_app::vault;
use pulse_store::Store;

const TOKENS: [(&str, &str, &str, &str); 3] = [
    ("alpha", "M83001", "100000000001", "EAAB-alpha-page-token-0001-do-not-leak"),
    ("alpha", "M83002", "100000000002", "EAAB-alpha-page-token-0002-do-not-leak"),
    ("beta", "M84001", "100000000003", "EAAB-beta-page-token-0003-do-not-leak"),
];
const OLD_KEY: &str = "0101010101010101010101010101010101010101010101010101010101010101";
const NEW_KEY: &str = "0202020202020202020202020202020202020202020202020202020202020202";

/// A config of two tenants whose pages take their tokens from `tokens.secrets.toml`, with a vault under `key`
/// (and `previous`).
fn write_config(dir: &Path, store: &str, key: &str, previous: Option<&str>) -> pulse_config::Config {
    let mut toml = format!("{store}\n");
    let keys = match previous {
        Some(p) => format!("current = \"{key}\"\nprevious = \"{p}\"\n"),
        None => format!("current = \"{key}\"\n"),
    };
    std::fs::write(dir.join("vault.secrets.toml"), keys).unwrap();
    toml.push_str("[vault]\nkey = { file = \"vault.secrets.toml\", key = \"current\" }\n");
    if previous.is_some() {
        toml.push_str("previous_keys = [{ file = \"vault.secrets.toml\", key = \"previous\" }]\n");
    }
    for tenant in ["alpha", "beta"] {
        toml.push_str(&format!("\n[[tenant]]\nid = \"{tenant}\"\nname = \"{tenant}\"\n"));
        for (_, practice, page, _) in TOKENS.iter().filter(|t| t.0 == tenant) {
            toml.push_str(&format!(
                "[[tenant.practice]]\ncode = \"{practice}\"\nname = \"Practice {practice}\"\n[[tenant.practice.page]]\nid = \"{page}\"\ntoken = {{ file = \"tokens.secrets.toml\", key = \"{page}\" }}\n"
            ));
        }
    }
    std::fs::write(dir.join("pulse.toml"), toml).unwrap();
    pulse_config::load(&dir.join("pulse.toml")).unwrap()
}

fn write_tokens(dir: &Path) {
    let text: String = TOKENS.iter().map(|(_, _, page, token)| format!("\"{page}\" = \"{token}\"\n")).collect();
    std::fs::write(dir.join("tokens.secrets.toml"), text).unwrap();
}

async fn tokens_used(config: &pulse_config::Config) -> (Vec<(String, String)>, Vec<String>) {
    let store = pulse_app::open::store(config).unwrap();
    let (targets, skipped) = pulse_app::ingest::targets(&store, config, &[]).await.unwrap();
    (targets.iter().map(|t| (t.page.to_string(), t.token.expose().to_owned())).collect(), skipped)
}

/// The whole life of the vault on one store; `raw` reads every byte the store keeps.
async fn exercise(dir: &Path, store_toml: &str, raw: &dyn Fn() -> Vec<u8>) {
    write_tokens(dir);
    let config = write_config(dir, store_toml, OLD_KEY, None);
    let store = pulse_app::open::store(&config).unwrap();
    store.migrate().await.unwrap();
    let access = config.operator_access();
    let v = vault::Vault::from_config(&config).unwrap().unwrap();

    let moved = vault::import(&store, &config, &v, &access).await.unwrap();
    assert_eq!((moved.sealed, moved.unchanged, moved.failed.len()), (3, 0, 0));
    let again = vault::import(&store, &config, &v, &access).await.unwrap();
    assert_eq!((again.sealed, again.unchanged), (0, 3), "importing twice changes nothing");

    // A page connected since through an invitation keeps its newer token: an import never replaces it.
    let connected = pulse_config::Secret::new("EAAB-connected-by-the-manager-do-not-leak");
    vault::put(
        &store,
        &config,
        &v,
        "alpha",
        "M83001",
        "100000000001",
        &connected,
        "invitation x: manager",
        chrono::Utc::now(),
    )
    .await
    .unwrap();
    let kept = vault::import(&store, &config, &v, &access).await.unwrap();
    assert_eq!((kept.sealed, kept.kept.len()), (0, 1), "{kept:?}");
    assert_eq!(tokens_used(&config).await.0[0].1, connected.expose());
    // Put back as imported, for what follows.
    vault::put(
        &store,
        &config,
        &v,
        "alpha",
        "M83001",
        "100000000001",
        &pulse_config::Secret::new(TOKENS[0].3),
        "import from config (test)",
        chrono::Utc::now(),
    )
    .await
    .unwrap();

    // The references are gone (the secrets file deleted): the ingester takes every token from the vault.
    std::fs::remove_file(dir.join("tokens.secrets.toml")).unwrap();
    let (used, skipped) = tokens_used(&config).await;
    let expected: Vec<(String, String)> = TOKENS.iter().map(|t| (t.2.to_owned(), t.3.to_owned())).collect();
    assert_eq!(used, expected, "{skipped:?}");

    // Rotation: the old key becomes a previous key; everything is sealed again under the new one.
    let rotated = write_config(dir, store_toml, NEW_KEY, Some(OLD_KEY));
    let v2 = vault::Vault::from_config(&rotated).unwrap().unwrap();
    let r = vault::rotate(&store, &rotated, &v2, &rotated.operator_access()).await.unwrap();
    assert_eq!((r.sealed, r.failed.len()), (3, 0));
    let r = vault::rotate(&store, &rotated, &v2, &rotated.operator_access()).await.unwrap();
    assert_eq!((r.sealed, r.unchanged), (0, 3), "a second rotation has nothing to do");
    // Once rotated, the old key can go.
    let dropped = write_config(dir, store_toml, NEW_KEY, None);
    assert_eq!(tokens_used(&dropped).await.0, expected);
    // A disconnected page's vault token is no longer used (its reference is gone too, so it is skipped, saying so).
    vault::disconnect(&store, &dropped, "beta", "100000000003", "test").await.unwrap();
    let (used, skipped) = tokens_used(&dropped).await;
    assert_eq!(used, expected[..2].to_vec());
    assert!(skipped.len() == 1 && skipped[0].contains("100000000003"), "{skipped:?}");
    assert!(vault::disconnect(&store, &dropped, "beta", "100000000003", "test").await.is_err(), "once");
    let (_, _, _, beta_token) = TOKENS[2];
    vault::put(
        &store,
        &dropped,
        &v2,
        "beta",
        "M84001",
        "100000000003",
        &pulse_config::Secret::new(beta_token),
        "test",
        chrono::Utc::now(),
    )
    .await
    .unwrap();

    // Without the new key (only the old one), nothing opens, and the reason names the key, not the token.
    let only_old = write_config(dir, store_toml, OLD_KEY, None);
    let (used, skipped) = tokens_used(&only_old).await;
    assert!(used.is_empty(), "{used:?}");
    assert_eq!(skipped.len(), 3, "{skipped:?}");
    assert!(skipped.iter().all(|s| s.contains("not configured") && !s.contains("do-not-leak")), "{skipped:?}");

    // Nowhere in the store in the clear.
    let bytes = raw();
    assert!(!bytes.is_empty());
    for token in TOKENS.iter().map(|t| t.3).chain(["EAAB-connected-by-the-manager-do-not-leak"]) {
        assert!(!bytes.windows(token.len()).any(|w| w == token.as_bytes()), "a token is stored in the clear");
    }
    // The search can find what is there: the sealed entries' key id (written beside the sealed bytes) is found.
    assert!(bytes.windows(v2.key_id().len()).any(|w| w == v2.key_id().as_bytes()), "the sealed entries are there");
}

/// Every value of a Parquet file, decoded, as text.
fn parquet_text(path: &Path) -> String {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let reader = SerializedFileReader::new(std::fs::File::open(path).unwrap()).expect("a Parquet file");
    let mut out = String::new();
    for row in reader.get_row_iter(None).expect("rows") {
        out.push_str(&row.expect("a row").to_string());
        out.push('\n');
    }
    out
}

/// Every byte the lake keeps, with Parquet files also decoded.
fn every_byte(dir: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if !p.to_string_lossy().ends_with(".secrets.toml") {
                let bytes = std::fs::read(&p).unwrap_or_default();
                // Parquet pages are compressed: search what they decode to as well as the raw bytes.
                if p.extension().is_some_and(|e| e == "parquet") {
                    out.extend(parquet_text(&p).into_bytes());
                }
                out.extend(bytes);
            }
        }
    }
    out
}

#[tokio::test]
async fn the_vault_on_the_lake_keeps_only_sealed_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_owned();
    exercise(dir.path(), "[store]\nbackend = \"lake\"\nlake_dir = \"lake\"\n", &|| every_byte(&root.join("lake")))
        .await;
}

#[tokio::test]
async fn the_vault_on_clickhouse_keeps_only_sealed_tokens() {
    let Some(url) = pulse_config::testing::clickhouse_url("the vault on ClickHouse") else {
        return;
    };
    let db = format!("pulse_vault_{}", std::process::id());
    let dir = tempfile::tempdir().unwrap();
    let store =
        format!("[store]\nbackend = \"clickhouse\"\n[store.clickhouse]\nurl = \"{url}\"\ndatabase = \"{db}\"\n");
    let (u, d) = (url.clone(), db.clone());
    let dump = move || {
        let out = std::process::Command::new("curl")
            .args(["-fsS", &format!("{u}/?database={d}"), "--data-binary", "SELECT * FROM state_events FORMAT TSV"])
            .output()
            .expect("curl runs");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        out.stdout
    };
    exercise(dir.path(), &store, &dump).await;
    let _ = std::process::Command::new("curl")
        .args(["-fsS", &url, "--data-binary", &format!("DROP DATABASE {db}")])
        .output();
}
