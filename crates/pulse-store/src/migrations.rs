//! The SQL in `sql/`, embedded: numbered migrations, the named queries the ClickHouse backend runs, and the
//! rendering of DDL for a cluster.
//!
//! The files are plain SQL that runs as written on one server, old (18.16) or current: CI runs every statement on
//! both (`.ci/check_sql.py`). A cluster deployment renders the `/*ON_CLUSTER*/` markers and swaps engines for their
//! Replicated twins behind Distributed tables sharded by tenant, so a tenant's rows (and their de-duplication) stay
//! on one shard.

/// A numbered migration. Never edit one after release: add the next number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migration {
    pub version: u32,
    pub name: &'static str,
    pub sql: &'static str,
}

/// The table that records applied migrations.
pub const SCHEMA_MIGRATIONS: &str = include_str!("../../../sql/schema_migrations.sql");

pub const MIGRATIONS: &[Migration] = &[
    Migration { version: 1, name: "core", sql: include_str!("../../../sql/migrations/0001_core.sql") },
    Migration { version: 2, name: "reports", sql: include_str!("../../../sql/migrations/0002_reports.sql") },
    Migration {
        version: 3,
        name: "analyst_views",
        sql: include_str!("../../../sql/migrations/0003_analyst_views.sql"),
    },
    Migration { version: 4, name: "report_runs", sql: include_str!("../../../sql/migrations/0004_report_runs.sql") },
    Migration {
        version: 5,
        name: "units_and_levels",
        sql: include_str!("../../../sql/migrations/0005_units_and_levels.sql"),
    },
    Migration { version: 6, name: "export_audit", sql: include_str!("../../../sql/migrations/0006_export_audit.sql") },
    Migration {
        version: 7,
        name: "operational_state",
        sql: include_str!("../../../sql/migrations/0007_operational_state.sql"),
    },
    Migration {
        version: 8,
        name: "report_row_order",
        sql: include_str!("../../../sql/migrations/0008_report_row_order.sql"),
    },
    Migration {
        version: 9,
        name: "incremental_runs",
        sql: include_str!("../../../sql/migrations/0009_incremental_runs.sql"),
    },
    Migration { version: 10, name: "post_details", sql: include_str!("../../../sql/migrations/0010_post_details.sql") },
];

/// Per-tenant analyst views (`sql/tenant_views.sql`), rendered for one tenant by [`tenant_views`].
pub const TENANT_VIEWS: &str = include_str!("../../../sql/tenant_views.sql");

/// The statements creating one tenant's analyst views. The tenant id is validated (lowercase letters, digits, `-`,
/// `_`), so it is safe inside a quoted identifier and a string literal.
pub fn tenant_views(tenant: &pulse_domain::TenantId) -> Vec<String> {
    statements(TENANT_VIEWS).into_iter().map(|s| s.replace("{tenant}", tenant.as_str())).collect()
}

/// The schema version this build creates.
pub fn latest() -> u32 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

/// Named queries (`sql/queries/*.sql`), with `?` placeholders bound by the clickhouse crate.
pub mod queries {
    pub const READ_PAGE_INSIGHTS: &str = include_str!("../../../sql/queries/read_page_insights.sql");
    pub const READ_FACT_SERIES: &str = include_str!("../../../sql/queries/read_fact_series.sql");
    pub const READ_POSTS: &str = include_str!("../../../sql/queries/read_posts.sql");
    pub const READ_POST_INSIGHTS: &str = include_str!("../../../sql/queries/read_post_insights.sql");
    pub const READ_CHECKPOINTS: &str = include_str!("../../../sql/queries/read_checkpoints.sql");
    pub const READ_RUNS: &str = include_str!("../../../sql/queries/read_runs.sql");
    pub const FACT_DAYS_FETCHED_SINCE: &str = include_str!("../../../sql/queries/fact_days_fetched_since.sql");
    pub const POST_DAYS_FETCHED_SINCE: &str = include_str!("../../../sql/queries/post_days_fetched_since.sql");
    pub const SNAPSHOT_DAYS_FETCHED_SINCE: &str = include_str!("../../../sql/queries/snapshot_days_fetched_since.sql");
    pub const READ_EXPORT_AUDIT: &str = include_str!("../../../sql/queries/read_export_audit.sql");
    pub const READ_STATE: &str = include_str!("../../../sql/queries/read_state.sql");
    pub const READ_LEASE: &str = include_str!("../../../sql/queries/read_lease.sql");
    pub const REPORT_SLICE: &str = include_str!("../../../sql/queries/report_slice.sql");
    pub const SCHEMA_VERSION: &str = include_str!("../../../sql/queries/schema_version.sql");
}

/// The statements of a SQL file: `--` comment lines dropped, split at `;`. (Our SQL has no `;` inside strings.)
pub fn statements(sql: &str) -> Vec<String> {
    let body: Vec<&str> = sql.lines().filter(|l| !l.trim_start().starts_with("--")).collect();
    body.join("\n").split(';').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect()
}

/// A stable checksum of a migration's statements (FNV-1a, 64 bit), to notice a migration edited after release.
pub fn checksum(sql: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for statement in statements(sql) {
        for b in statement.bytes().chain(std::iter::once(b';')) {
            hash ^= b as u64;
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    format!("{hash:016x}")
}

/// Where the DDL goes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Topology {
    #[default]
    Single,
    /// Every name in the DDL is qualified with `database`: a distributed DDL query runs on each host in that
    /// host's default database, not the one the client chose.
    Cluster { name: String, database: String },
}

const MARKER: &str = "/*ON_CLUSTER*/";

/// Renders one statement for `topology`. On one server the statement is unchanged. On a cluster, a MergeTree-family
/// table `t` becomes a Replicated `t_local` on every node plus a Distributed `t` sharded by `tenant_id`, and every
/// table and view name is qualified with the database.
pub fn render(statement: &str, topology: &Topology) -> Vec<String> {
    let Topology::Cluster { name: cluster, database } = topology else {
        return vec![statement.to_owned()];
    };
    let db = format!("`{database}`.");
    let on_cluster = format!("ON CLUSTER `{cluster}`");
    let finish = |s: &str| qualify(&s.replace(MARKER, &on_cluster), &db);
    // A column added to a table is added to its replicated local table; the Distributed table over it holds no
    // rows (the store inserts into the local tables, never through it), and a cluster with replicated shards refuses ALTER ON CLUSTER for it, so it is
    // created again over the altered local table. (Every altered table is a tenant table, sharded by tenant.)
    if let Some(rest) = statement.strip_prefix("ALTER TABLE ")
        && let Some(table) = rest.split_whitespace().next()
    {
        let local = statement.replacen(&format!("ALTER TABLE {table} "), &format!("ALTER TABLE {table}_local "), 1);
        return vec![
            finish(&local),
            format!("DROP TABLE IF EXISTS {db}{table} {on_cluster}"),
            distributed(table, cluster, database),
        ];
    }
    let Some(table) = created_table(statement) else {
        return vec![finish(statement)];
    };
    let Some(engine_at) = statement.find("ENGINE = ") else {
        return vec![finish(statement)];
    };
    // A table without tenants (the migration record) is one replicated table on every node, so each node can tell
    // the schema version with any shard down.
    if !statement.contains("tenant_id String") {
        let path = format!("'/clickhouse/tables/all/{{database}}/{table}', '{{shard}}-{{replica}}'");
        return vec![format!(
            "{}ENGINE = {}",
            finish(&statement[..engine_at]),
            replicated_engine(&statement[engine_at..], &path)
        )];
    }
    let local = format!("{table}_local");
    let path = format!("'/clickhouse/tables/{{shard}}/{{database}}/{local}', '{{replica}}'");
    let replicated = replicated_engine(&statement[engine_at..], &path);
    let head = finish(&statement[..engine_at].replacen(&format!(" {table} "), &format!(" {local} "), 1));
    vec![format!("{head}ENGINE = {replicated}"), distributed(table, cluster, database)]
}

/// `ENGINE = X(args) rest` as its Replicated twin with the ZooKeeper path and replica name `path`.
fn replicated_engine(engine: &str, path: &str) -> String {
    let rest = engine.strip_prefix("ENGINE = ").unwrap_or(engine);
    if let Some(args) = rest.strip_prefix("ReplacingMergeTree(") {
        format!("ReplicatedReplacingMergeTree({path}, {args}")
    } else if let Some(args) = rest.strip_prefix("MergeTree()") {
        format!("ReplicatedMergeTree({path}){args}")
    } else {
        rest.to_owned()
    }
}

/// The Distributed table `table` over `table_local`, sharded by tenant.
fn distributed(table: &str, cluster: &str, database: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS `{database}`.{table} ON CLUSTER `{cluster}` AS `{database}`.{table}_local ENGINE = Distributed(`{cluster}`, `{database}`, {table}_local, cityHash64(tenant_id))"
    )
}

/// Qualifies the created, altered or viewed names of a statement with `db` (`` `name`. ``).
fn qualify(statement: &str, db: &str) -> String {
    let mut out = statement.to_owned();
    for prefix in ["CREATE TABLE IF NOT EXISTS ", "CREATE VIEW IF NOT EXISTS ", "ALTER TABLE "] {
        if let Some(rest) = out.strip_prefix(prefix) {
            out = format!("{prefix}{db}{rest}");
        }
    }
    out.replace("FROM ", &format!("FROM {db}"))
}

fn created_table(statement: &str) -> Option<&str> {
    let rest = statement.strip_prefix("CREATE TABLE IF NOT EXISTS ")?;
    rest.split_whitespace().next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_in_sql_migrations_is_embedded_in_order() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../sql/migrations");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".sql"))
            .collect();
        files.sort();
        let embedded: Vec<String> = MIGRATIONS.iter().map(|m| format!("{:04}_{}.sql", m.version, m.name)).collect();
        assert_eq!(files, embedded, "add new migration files to MIGRATIONS");
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version as usize, i + 1, "migration numbers are consecutive from 1");
        }
    }

    #[test]
    fn tenant_views_are_rendered_for_one_tenant_and_filter_on_it() {
        let tenant = pulse_domain::TenantId::new("north-staffs").unwrap();
        let views = tenant_views(&tenant);
        assert_eq!(views.len(), 2);
        assert!(views[0].starts_with("CREATE VIEW IF NOT EXISTS `tenant_north-staffs_page_insights`"), "{}", views[0]);
        assert!(views.iter().all(|v| v.ends_with("WHERE tenant_id = 'north-staffs'") && !v.contains('{')));
    }

    #[test]
    fn statements_split_and_drop_comments() {
        let s = statements("-- a comment; with a semicolon\nCREATE TABLE a (x UInt8) ENGINE = Memory;\n\nSELECT 1;\n");
        assert_eq!(s, vec!["CREATE TABLE a (x UInt8) ENGINE = Memory", "SELECT 1"]);
        assert_eq!(statements(MIGRATIONS[0].sql).len(), 5);
    }

    #[test]
    fn checksums_ignore_comments_but_not_statements() {
        let a = checksum("-- v1\nSELECT 1;");
        assert_eq!(a, checksum("-- reworded\nSELECT 1;"));
        assert_ne!(a, checksum("SELECT 2;"));
    }

    #[test]
    fn single_server_rendering_is_the_file_itself() {
        for m in MIGRATIONS {
            for s in statements(m.sql) {
                assert_eq!(render(&s, &Topology::Single), vec![s.clone()]);
            }
        }
    }

    #[test]
    fn cluster_rendering_replicates_and_distributes_by_tenant() {
        let cluster = Topology::Cluster { name: "pulse".into(), database: "pulse_db".into() };
        let facts = &statements(MIGRATIONS[0].sql)[0];
        let out = render(facts, &cluster);
        assert_eq!(out.len(), 2);
        assert!(
            out[0].starts_with("CREATE TABLE IF NOT EXISTS `pulse_db`.page_insights_local ON CLUSTER `pulse`"),
            "{}",
            out[0]
        );
        assert!(
            out[0].contains(
                "ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{database}/page_insights_local', '{replica}', version)"
            ),
            "{}",
            out[0]
        );
        assert!(out[0].contains("ORDER BY (tenant_id, metric, period, day, page_id, breakdown)"));
        assert_eq!(
            out[1],
            "CREATE TABLE IF NOT EXISTS `pulse_db`.page_insights ON CLUSTER `pulse` AS `pulse_db`.page_insights_local ENGINE = Distributed(`pulse`, `pulse_db`, page_insights_local, cityHash64(tenant_id))"
        );
        let migrations_table = &statements(SCHEMA_MIGRATIONS)[0];
        let out = render(migrations_table, &cluster);
        assert_eq!(out.len(), 1, "one table replicated on every node, no Distributed twin: {out:?}");
        assert!(out[0].starts_with("CREATE TABLE IF NOT EXISTS `pulse_db`.schema_migrations ON CLUSTER `pulse`"));
        assert!(out[0].contains(
            "ReplicatedMergeTree('/clickhouse/tables/all/{database}/schema_migrations', '{shard}-{replica}')"
        ));
        let view = &statements(MIGRATIONS[2].sql)[0];
        let out = render(view, &cluster);
        assert_eq!(out.len(), 1);
        assert!(out[0].starts_with("CREATE VIEW IF NOT EXISTS `pulse_db`.page_insights_latest ON CLUSTER `pulse` AS"));
        assert!(out[0].ends_with("FROM `pulse_db`.page_insights FINAL"), "{}", out[0]);
        let alter = &statements(MIGRATIONS[4].sql)[0];
        assert_eq!(
            render(alter, &cluster),
            vec![
                "ALTER TABLE `pulse_db`.report_campaign_uplift_local ON CLUSTER `pulse` ADD COLUMN interval_level Nullable(Float64) AFTER effect_hi",
                "DROP TABLE IF EXISTS `pulse_db`.report_campaign_uplift ON CLUSTER `pulse`",
                "CREATE TABLE IF NOT EXISTS `pulse_db`.report_campaign_uplift ON CLUSTER `pulse` AS `pulse_db`.report_campaign_uplift_local ENGINE = Distributed(`pulse`, `pulse_db`, report_campaign_uplift_local, cityHash64(tenant_id))",
            ]
        );
    }
}
