//! The core tables (what the ingester, research exports and the scheduler keep), each declared once, here.
//!
//! From a declaration come the lake dataset's Arrow schema (the codec writes through [`CoreTable::lake_schema`]
//! and names its columns with the declaration's constants), the column names every other crate uses (the pipelines
//! scan the lake's Parquet with `page_insights::DAY`, not `"day"`), and the ClickHouse column list. What cannot be
//! generated is checked against it by tests: the ClickHouse row structs' columns (`clickhouse/rows.rs`), the DDL in
//! `sql/migrations` on ClickHouse 18.16 and a current engine (`sql/tables.json`, written from these declarations
//! and the report tables' by `cargo test -p pulse-store`, is what `.ci/check_sql.py` compares `DESCRIBE TABLE` with
//! on both), and the named read queries (run by the conformance suite into the same row structs).
//!
//! A column may be kept differently by the two backends, and the declaration says so rather than a second list:
//! `version` exists only in ClickHouse (its `ReplacingMergeTree` keeps the highest; the lake keeps the newest by
//! `fetched_at`), and an instant kept to the microsecond is a `Timestamp(µs, UTC)` in the lake but a `UInt64` named
//! `<name>_us` in ClickHouse (18.16 has no `DateTime64`).

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

/// The first column of every tenant's table: the tenant, stamped from the scope on write and checked on read.
pub const TENANT_ID: &str = "tenant_id";

/// How a column's values are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Str,
    /// A calendar day (US-Pacific for the Graph API's days).
    Date,
    /// An instant: microseconds in the lake, seconds (`DateTime`) in ClickHouse.
    Time,
    /// An instant kept to the microsecond on both: `Timestamp(µs)` in the lake, `UInt64` microseconds in ClickHouse.
    Micros,
    F64,
    U64,
    U32,
    I64,
}

impl Kind {
    pub fn arrow(self) -> DataType {
        match self {
            Kind::Str => DataType::Utf8,
            Kind::Date => DataType::Date32,
            Kind::Time | Kind::Micros => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            Kind::F64 => DataType::Float64,
            Kind::U64 => DataType::UInt64,
            Kind::U32 => DataType::UInt32,
            Kind::I64 => DataType::Int64,
        }
    }

    pub fn clickhouse(self) -> &'static str {
        match self {
            Kind::Str => "String",
            Kind::Date => "Date",
            Kind::Time => "DateTime",
            Kind::Micros | Kind::U64 => "UInt64",
            Kind::F64 => "Float64",
            Kind::U32 => "UInt32",
            Kind::I64 => "Int64",
        }
    }
}

/// One column of a core table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Column {
    pub name: &'static str,
    pub kind: Kind,
    pub doc: &'static str,
    /// The column's name in ClickHouse when it differs (`at` is `at_us` there).
    pub clickhouse_name: Option<&'static str>,
    /// Kept by the lake (false for ClickHouse's `version`).
    pub in_lake: bool,
}

impl Column {
    pub const fn new(name: &'static str, kind: Kind, doc: &'static str) -> Self {
        Column { name, kind, doc, clickhouse_name: None, in_lake: true }
    }

    /// Only ClickHouse keeps it.
    pub const fn clickhouse_only(self) -> Self {
        Column { in_lake: false, ..self }
    }

    /// ClickHouse names it `name`.
    pub const fn clickhouse_name(self, name: &'static str) -> Self {
        Column { clickhouse_name: Some(name), ..self }
    }

    pub fn clickhouse_column(&self) -> &'static str {
        self.clickhouse_name.unwrap_or(self.name)
    }
}

/// A core table: its ClickHouse table, its lake dataset and its columns in ClickHouse's order (the lake writes the
/// same order; it reads by name).
#[derive(Debug, PartialEq, Eq)]
pub struct CoreTable {
    /// The ClickHouse table.
    pub name: &'static str,
    /// The lake dataset (a directory under the lake), `None` for tables only ClickHouse has.
    pub lake: Option<&'static str>,
    pub doc: &'static str,
    pub columns: &'static [Column],
}

impl CoreTable {
    /// The lake dataset's name; a table without one does not compile as a lake record.
    pub const fn dataset(&self) -> &'static str {
        match self.lake {
            Some(name) => name,
            None => panic!("this table has no lake dataset"),
        }
    }

    /// The lake dataset's schema: every column the lake keeps, in order, none nullable.
    pub fn lake_schema(&self) -> SchemaRef {
        Arc::new(Schema::new(
            self.columns
                .iter()
                .filter(|c| c.in_lake)
                .map(|c| Field::new(c.name, c.kind.arrow(), false))
                .collect::<Vec<_>>(),
        ))
    }

    /// The ClickHouse columns as `(name, type)`, in the DDL's order.
    pub fn clickhouse_columns(&self) -> Vec<(&'static str, &'static str)> {
        self.columns.iter().map(|c| (c.clickhouse_column(), c.kind.clickhouse())).collect()
    }

    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }
}

/// Declares a core table as a module holding `TABLE` and one constant per column name, written once:
/// `CONST name: Kind "doc" [.clickhouse_only()] [.clickhouse_name("x")]`.
macro_rules! core_table {
    (
        $(#[doc = $doc:literal])+
        mod $module:ident = $name:literal, lake $lake:expr;
        $( $konst:ident $column:ident : $kind:ident $cdoc:literal $(. $flag:ident ( $($arg:literal)? ))* ;)+
    ) => {
        $(#[doc = $doc])+
        pub mod $module {
            use super::{Column, CoreTable, Kind};
            $(
                #[doc = $cdoc]
                pub const $konst: &str = stringify!($column);
            )+
            pub const TABLE: CoreTable = CoreTable {
                name: $name,
                lake: $lake,
                doc: concat!($($doc, "\n"),+),
                columns: &[$( Column::new(stringify!($column), Kind::$kind, $cdoc) $(. $flag ( $($arg)? ))* ),+],
            };
        }
    };
}

core_table! {
    /// Page insight facts: one value per page, canonical metric, period, US-Pacific day and breakdown (`''` for the
    /// total, `F.25-34` for an age and gender band). Re-fetching a day replaces it (the newest fetch wins).
    mod page_insights = "page_insights", lake Some("page_insights");
    TENANT_ID tenant_id: Str "the tenant, stamped from the write scope";
    PRACTICE_CODE practice_code: Str "ODS code of the practice";
    PAGE_ID page_id: Str "Facebook page id";
    METRIC metric: Str "canonical metric (the same name across Graph API versions)";
    GRAPH_METRIC graph_metric: Str "the Graph API's name for it in the version fetched";
    PERIOD period: Str "day, week, days_28 or lifetime";
    DAY day: Date "the US-Pacific day the value covers (the API's end_time minus one day)";
    BREAKDOWN breakdown: Str "'' for the total, else the breakdown key (F.25-34)";
    VALUE value: F64 "the value";
    API_VERSION api_version: Str "the Graph API version it was fetched with";
    FETCHED_AT fetched_at: Time "when it was fetched";
    VERSION version: U64 "fetched_at in microseconds: ReplacingMergeTree keeps the newest" .clickhouse_only();
}

core_table! {
    /// Posts: one row per post, its text, type, time and permalink (practices' posts are public).
    mod posts = "posts", lake Some("posts");
    TENANT_ID tenant_id: Str "the tenant, stamped from the write scope";
    PRACTICE_CODE practice_code: Str "ODS code of the practice";
    PAGE_ID page_id: Str "Facebook page id";
    POST_ID post_id: Str "Facebook post id";
    CREATED_TIME created_time: Time "when the post was published";
    POST_TYPE post_type: Str "status, photo, video, link, ...";
    MESSAGE message: Str "the post's text";
    PERMALINK permalink: Str "the post's public URL";
    FETCHED_AT fetched_at: Time "when it was fetched";
    VERSION version: U64 "fetched_at in microseconds: ReplacingMergeTree keeps the newest" .clickhouse_only();
}

core_table! {
    /// Post insight snapshots: a post's lifetime metrics as they stood on the day they were fetched.
    mod post_insights = "post_insights", lake Some("post_insights");
    TENANT_ID tenant_id: Str "the tenant, stamped from the write scope";
    PRACTICE_CODE practice_code: Str "ODS code of the practice";
    PAGE_ID page_id: Str "Facebook page id";
    POST_ID post_id: Str "Facebook post id";
    METRIC metric: Str "canonical metric";
    GRAPH_METRIC graph_metric: Str "the Graph API's name for it in the version fetched";
    BREAKDOWN breakdown: Str "'' for the total, else the breakdown key";
    SNAPSHOT_DAY snapshot_day: Date "the US-Pacific day of the snapshot";
    VALUE value: F64 "the lifetime value on that day";
    API_VERSION api_version: Str "the Graph API version it was fetched with";
    FETCHED_AT fetched_at: Time "when it was fetched";
    VERSION version: U64 "fetched_at in microseconds: ReplacingMergeTree keeps the newest" .clickhouse_only();
}

core_table! {
    /// Ingest checkpoints: per page and stream, the last day stored; moved only after the store acknowledged it.
    mod checkpoints = "ingest_checkpoints", lake Some("checkpoints");
    TENANT_ID tenant_id: Str "the tenant, stamped from the write scope";
    PRACTICE_CODE practice_code: Str "ODS code of the practice";
    PAGE_ID page_id: Str "Facebook page id";
    STREAM stream: Str "the metric stream (a metric and period, or posts)";
    THROUGH_DAY through_day: Date "the last US-Pacific day stored";
    UPDATED_AT updated_at: Time "when the checkpoint moved";
    VERSION version: U64 "updated_at in microseconds: ReplacingMergeTree keeps the newest" .clickhouse_only();
}

core_table! {
    /// Ingest runs: one row per run and practice, what it asked, waited and wrote, and how it ended.
    mod ingest_runs = "ingest_runs", lake Some("ingest_runs");
    TENANT_ID tenant_id: Str "the tenant, stamped from the write scope";
    RUN_ID run_id: Str "the run";
    PRACTICE_CODE practice_code: Str "ODS code of the practice";
    STARTED_AT started_at: Time "when the run started";
    FINISHED_AT finished_at: Time "when the practice's part ended";
    REQUESTS requests: U64 "Graph API requests";
    RETRIES retries: U64 "requests retried";
    THROTTLED_MS throttled_ms: U64 "milliseconds waited for Meta's rate budget";
    ROWS_WRITTEN rows_written: U64 "rows the store acknowledged";
    ERRORS errors: U64 "errors";
    PAGES_NEEDING_REAUTH pages_needing_reauth: U32 "pages whose token needs re-authorisation";
    STATUS status: Str "ok, partial, failed or needs_reauth";
    MESSAGE message: Str "what went wrong, for a person";
    VERSION version: U64 "finished_at in microseconds: ReplacingMergeTree keeps the newest" .clickhouse_only();
}

core_table! {
    /// The research exports' audit trail, append-only: one row per export per tenant it covered.
    mod export_audit = "export_audit", lake Some("export_audit");
    TENANT_ID tenant_id: Str "the tenant, stamped from the write scope";
    EXPORT_ID export_id: Str "the export";
    CREATED_AT created_at: Time "when it was made";
    REQUESTED_BY requested_by: Str "who asked";
    TENANTS tenants: Str "every tenant it covered, comma-separated";
    PROJECT project: Str "the research project";
    PURPOSE purpose: Str "why, as the researcher stated it";
    SPEC_HASH spec_hash: Str "SHA-256 of the export's specification";
    SPEC spec: Str "the specification";
    ROWS rows: U64 "rows exported";
    FILES files: Str "each file's name and SHA-256";
}

core_table! {
    /// The operational journal, append-only: scheduled runs, deliveries, subscription changes; a key's state is its
    /// events read in order.
    mod state_events = "state_events", lake Some("state_events");
    TENANT_ID tenant_id: Str "the tenant, stamped from the write scope";
    STREAM stream: Str "the journal (scheduler, delivery, subscriptions)";
    KEY key: Str "what the event is about";
    AT at: Micros "when it happened" .clickhouse_name("at_us");
    ID id: Str "the event's unique id (orders events at the same microsecond)";
    BODY body: Str "the event, as JSON";
}

core_table! {
    /// Leases: every claim, renewal and release of a named lease; the holder is found by replaying them in order.
    mod leases = "leases", lake Some("leases");
    TENANT_ID tenant_id: Str "the tenant, stamped from the write scope";
    NAME name: Str "the lease (ingest:<tenant>, digest:<list>)";
    HOLDER holder: Str "host:pid:nonce of the holder";
    ACQUIRED_AT acquired_at: Micros "when it was claimed or renewed" .clickhouse_name("acquired_us");
    EXPIRES_AT expires_at: Micros "when it lapses unless renewed" .clickhouse_name("expires_us");
}

core_table! {
    /// Which report slice is current per tenant and report (ClickHouse only: the lake swaps files).
    mod report_slices = "report_slices", lake None;
    TENANT_ID tenant_id: Str "the tenant";
    REPORT report: Str "the report and variant";
    CURRENT_VERSION current_version: U64 "the version readers follow";
    ROWS rows: U64 "rows in the slice";
    WRITTEN_AT written_at: Time "when it was written";
    VERSION version: U64 "ReplacingMergeTree keeps the newest pointer";
}

core_table! {
    /// The migrations applied to this database (ClickHouse only: the lake records its format in a file).
    mod schema_migrations = "schema_migrations", lake None;
    VERSION version: U32 "the migration's number";
    NAME name: Str "its file name";
    CHECKSUM checksum: Str "SHA-256 of its text, so an edited migration is refused";
    APPLIED_AT applied_at: Time "when it was applied";
}

/// Every core table.
pub static ALL: &[&CoreTable] = &[
    &page_insights::TABLE,
    &posts::TABLE,
    &post_insights::TABLE,
    &checkpoints::TABLE,
    &ingest_runs::TABLE,
    &export_audit::TABLE,
    &state_events::TABLE,
    &leases::TABLE,
    &report_slices::TABLE,
    &schema_migrations::TABLE,
];

/// Every ClickHouse table as `(name, [(column, type)])`: the core tables and the report tables, in the DDL's
/// column order. `sql/tables.json` is this, written by the test below.
pub fn clickhouse_tables() -> Vec<(&'static str, Vec<(&'static str, String)>)> {
    let mut out: Vec<(&'static str, Vec<(&'static str, String)>)> = ALL
        .iter()
        .map(|t| (t.name, t.clickhouse_columns().into_iter().map(|(n, ty)| (n, ty.to_owned())).collect()))
        .collect();
    for table in crate::report::ALL {
        let mut columns = vec![("tenant_id", "String".to_owned()), ("version", "UInt64".to_owned())];
        columns.extend(table.columns.iter().map(|c| (c.name, c.ty.clickhouse().to_owned())));
        columns.push(("row_ordinal", "UInt32".to_owned()));
        out.push((table.name, columns));
    }
    out
}

/// `sql/tables.json`'s text: every ClickHouse table's columns and types, one table per line.
pub fn tables_json() -> String {
    let mut text = String::from("{\n");
    let tables = clickhouse_tables();
    for (i, (name, columns)) in tables.iter().enumerate() {
        let cols = columns.iter().map(|(c, ty)| format!("[\"{c}\", \"{ty}\"]")).collect::<Vec<_>>().join(", ");
        let comma = if i + 1 < tables.len() { "," } else { "" };
        text.push_str(&format!("  \"{name}\": [{cols}]{comma}\n"));
    }
    text.push_str("}\n");
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `sql/tables.json` is what the declarations say. Regenerate it with `PULSE_BLESS=1 cargo test -p pulse-store
    /// table` after changing a declaration (and write the migration that makes the DDL agree: the SQL check fails
    /// until it does).
    #[test]
    fn sql_tables_json_is_written_from_the_declarations() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../sql/tables.json");
        let expected = tables_json();
        if std::env::var_os("PULSE_BLESS").is_some() {
            std::fs::write(&path, &expected).unwrap();
        }
        let got = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            got == expected,
            "sql/tables.json differs from the declarations in crates/pulse-store/src/table.rs and report.rs; \
             regenerate it with `PULSE_BLESS=1 cargo test -p pulse-store table` and add a migration if the DDL changes"
        );
        let parsed: serde_json::Value = serde_json::from_str(&got).expect("sql/tables.json is JSON");
        assert_eq!(parsed.as_object().unwrap().len(), ALL.len() + crate::report::ALL.len());
    }

    #[test]
    fn names_are_unique_and_the_lake_keeps_all_but_clickhouse_versions() {
        for table in ALL.iter().filter(|t| t.lake.is_some()) {
            let mut names: Vec<&str> = table.columns.iter().map(|c| c.clickhouse_column()).collect();
            names.sort();
            names.dedup();
            assert_eq!(names.len(), table.columns.len(), "{}", table.name);
            for c in table.columns.iter().filter(|c| !c.in_lake) {
                assert_eq!(c.name, "version", "{}: only ClickHouse's version is kept by one backend", table.name);
            }
            assert_eq!(table.lake_schema().fields().len(), table.columns.iter().filter(|c| c.in_lake).count());
        }
        for table in ALL.iter().filter(|t| t.name != "schema_migrations") {
            assert_eq!(table.columns[0].name, TENANT_ID, "{}", table.name);
        }
        assert_eq!(page_insights::DAY, "day");
        assert_eq!(state_events::TABLE.column("at").unwrap().clickhouse_column(), "at_us");
    }
}
