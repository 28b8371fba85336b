//! Schema: create or upgrade the store's schema, then each configured tenant's analyst views (ClickHouse).

use anyhow::Result;
use pulse_config::Config;
use pulse_store::migrations::{self, Topology};
use pulse_store::{AnyStore, Store};

use crate::open;

/// The DDL this build would apply, rendered for the configured topology: migrations, then per-tenant views.
pub fn plan_sql(config: &Config) -> String {
    let clickhouse = config.store.clickhouse.as_ref();
    let topology = match clickhouse.and_then(|c| c.cluster.clone()).filter(|c| !c.is_empty()) {
        Some(name) => Topology::Cluster { name, database: clickhouse.map(|c| c.database.clone()).unwrap_or_default() },
        None => Topology::Single,
    };
    let mut out = String::new();
    let files = std::iter::once(("schema_migrations", migrations::SCHEMA_MIGRATIONS))
        .chain(migrations::MIGRATIONS.iter().map(|m| (m.name, m.sql)));
    for (name, sql) in files {
        out.push_str(&format!("-- {name}\n"));
        for statement in migrations::statements(sql) {
            for rendered in migrations::render(&statement, &topology) {
                out.push_str(&format!("{rendered};\n\n"));
            }
        }
    }
    for tenant in &config.tenants {
        out.push_str(&format!("-- analyst views of tenant {}\n", tenant.id));
        for statement in migrations::tenant_views(&tenant.id) {
            for rendered in migrations::render(&statement, &topology) {
                out.push_str(&format!("{rendered};\n\n"));
            }
        }
    }
    out
}

/// Applies what is missing and says what was done.
pub async fn run(config: &Config) -> Result<String> {
    let store = open::store(config)?;
    let report = store.migrate().await?;
    let mut out = if report.applied.is_empty() {
        format!("{}: already at schema version {}; nothing to do\n", store.describe(), report.current_version)
    } else {
        format!(
            "{}: applied {}\nnow at schema version {}\n",
            store.describe(),
            report.applied.join(", "),
            report.current_version
        )
    };
    if let AnyStore::ClickHouse(ch) = &store {
        let tenants: Vec<_> = config.tenants.iter().map(|t| t.id.clone()).collect();
        ch.create_tenant_views(&tenants).await?;
        out.push_str(&format!(
            "analyst views: tenant_<id>_page_insights and tenant_<id>_post_insights for {} tenants (grant analysts \
             SELECT on their own tenant's views only)\n",
            tenants.len()
        ));
    }
    Ok(out)
}
