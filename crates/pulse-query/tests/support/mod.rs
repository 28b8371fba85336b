//! What the query tests share: the case-study demo run into a temporary lake, with its config, store and directory.

use pulse_query::Directory;
use pulse_store::AnyStore;

/// The demo world, ingested and computed; the directory lives as long as this value.
pub struct Demo {
    pub _dir: tempfile::TempDir,
    pub config: pulse_config::Config,
    pub lake: AnyStore,
    pub directory: Directory,
}

pub async fn demo() -> Demo {
    let dir = tempfile::tempdir().unwrap();
    let req = pulse_demo::DemoRequest { dir: dir.path().to_owned(), scenario: "case-study".into(), concurrency: 16 };
    assert_eq!(pulse_demo::run(&req, &mut |_| {}).await.expect("demo runs"), 0);
    let config = pulse_config::load(&dir.path().join("pulse.toml")).expect("demo config");
    let lake = pulse_app::open::store(&config).expect("lake");
    let directory = Directory::load(&config).unwrap();
    Demo { _dir: dir, config, lake, directory }
}
