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
