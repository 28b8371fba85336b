//! For tests only (the `testing` feature, enabled by dev-dependencies and never by a normal one:
//! `crates/pulse-server/tests/links.rs` checks): the operator's access over a config that declares `tenants`.
//! It parses a config like any other, so a test's access comes from a config as a deployment's does.

use std::fmt::{Display, Write};
use std::path::Path;

use crate::Access;

/// The operator's access of a deployment whose config declares exactly `tenants` (ids; panics on an invalid one).
pub fn operator<T: Display>(tenants: impl IntoIterator<Item = T>) -> Access {
    let mut text = String::from("[store]\nlake_dir = \"lake\"\n");
    for t in tenants {
        // A valid id has no quote or newline, so nothing else can be written into the config this way.
        let id = pulse_domain::TenantId::new(t.to_string()).unwrap_or_else(|e| panic!("a test tenant id: {e}"));
        let _ = write!(text, "\n[[tenant]]\nid = \"{id}\"\nname = \"{id}\"\n");
    }
    match crate::parse(&text, Path::new("pulse.toml")) {
        Ok(config) => config.operator_access(),
        Err(e) => panic!("a test config with tenants did not parse: {e}"),
    }
}

/// The ClickHouse server a test runs against (`PULSE_TEST_CLICKHOUSE_URL`, which CI sets). Without one the test is
/// skipped with a note (once per test binary) on how to run `what`, unless `PULSE_REQUIRE_CLICKHOUSE=1` (CI): then it fails.
pub fn clickhouse_url(what: &str) -> Option<String> {
    match std::env::var("PULSE_TEST_CLICKHOUSE_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            if std::env::var("PULSE_REQUIRE_CLICKHOUSE").is_ok_and(|v| v == "1") {
                panic!(
                    "PULSE_REQUIRE_CLICKHOUSE=1 but PULSE_TEST_CLICKHOUSE_URL is not set; start one with `bash .ci/clickhouse.sh`"
                );
            }
            // Written straight to stderr (eprintln! is captured by the test harness), once per test binary.
            static ONCE: std::sync::Once = std::sync::Once::new();
            ONCE.call_once(|| {
                use std::io::Write as _;
                let _ = writeln!(
                    std::io::stderr(),
                    "note: skipping {what}; to run it: export PULSE_TEST_CLICKHOUSE_URL=$(bash .ci/clickhouse.sh)"
                );
            });
            None
        }
    }
}
