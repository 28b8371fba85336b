//! Report tables: what the pipelines compute, declared once here with their columns, so both backends (and the
//! ClickHouse DDL in `sql/migrations`, checked by the conformance suite) agree on the shape.
//!
//! Every report table also has `tenant_id` (stamped from the scope) and, in ClickHouse, `version` (the write that
//! produced the slice; reads take the newest).

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;

use crate::{Result, StoreError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportType {
    Str,
    Date,
    F64,
    /// A figure that may be unavailable (stored as NULL, shown as "n/a": never a misleading zero).
    OptF64,
    U32,
    I64,
}

impl ReportType {
    pub fn arrow(self) -> DataType {
        match self {
            ReportType::Str => DataType::Utf8,
            ReportType::Date => DataType::Date32,
            ReportType::F64 | ReportType::OptF64 => DataType::Float64,
            ReportType::U32 => DataType::UInt32,
            ReportType::I64 => DataType::Int64,
        }
    }

    pub fn nullable(self) -> bool {
        matches!(self, ReportType::OptF64)
    }

    pub fn clickhouse(self) -> &'static str {
        match self {
            ReportType::Str => "String",
            ReportType::Date => "Date",
            ReportType::F64 => "Float64",
            ReportType::OptF64 => "Nullable(Float64)",
            ReportType::U32 => "UInt32",
            ReportType::I64 => "Int64",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportColumn {
    pub name: &'static str,
    pub ty: ReportType,
    pub doc: &'static str,
}

#[derive(Debug, PartialEq, Eq)]
pub struct ReportTable {
    /// Table name in ClickHouse and dataset name in the lake.
    pub name: &'static str,
    pub doc: &'static str,
    pub columns: &'static [ReportColumn],
}

const fn col(name: &'static str, ty: ReportType, doc: &'static str) -> ReportColumn {
    ReportColumn { name, ty, doc }
}

/// Weekly reach per practice page from the API's own 7-day unique counts, with change and outliers (Pacific-time weeks ending on Sundays).
pub static REACH_WEEKLY: ReportTable = ReportTable {
    name: "report_reach_weekly",
    doc: "Weekly reach per practice page from the API's own 7-day unique counts, with change and outliers (Pacific-time weeks ending on Sundays).",
    columns: &[
        col("practice_code", ReportType::Str, "ODS code of the practice"),
        col("page_id", ReportType::Str, "Facebook page id"),
        col("week_ending", ReportType::Date, "last Pacific-time day of the week"),
        col(
            "reach",
            ReportType::OptF64,
            "unique people reached in the week (the API's week value, never a sum of days)",
        ),
        col("engaged_users", ReportType::OptF64, "unique people who engaged in the week (API week value)"),
        col("views", ReportType::OptF64, "times content was seen in the week (additive: sum of days)"),
        col("engagements", ReportType::OptF64, "engagements in the week (sum of days)"),
        col("followers", ReportType::OptF64, "followers at the end of the week"),
        col("follower_growth", ReportType::OptF64, "followers gained over the week"),
        col("engagement_rate", ReportType::OptF64, "engagements / views"),
        col("reach_change", ReportType::OptF64, "reach against the previous week, as a fraction"),
        col(
            "outlier_score",
            ReportType::OptF64,
            "robust z-score of reach per follower against the tenant's pages that week",
        ),
        col("outlier_reason", ReportType::Str, "why the page stands out, empty when it does not"),
        col("days_with_data", ReportType::U32, "days of the week with a daily value stored"),
    ],
};

/// Tenant roll-up per week. Sums of page uniques are gross reach: people who follow several pages count more than once.
pub static REACH_TENANT_WEEKLY: ReportTable = ReportTable {
    name: "report_reach_tenant_weekly",
    doc: "Tenant roll-up per week. Sums of page uniques are gross reach: people who follow several pages count more than once.",
    columns: &[
        col("week_ending", ReportType::Date, "last Pacific-time day of the week"),
        col("pages", ReportType::U32, "pages with data that week"),
        col(
            "gross_reach",
            ReportType::OptF64,
            "sum of the pages' weekly unique reach (gross: not unique across pages)",
        ),
        col("gross_engaged_users", ReportType::OptF64, "sum of the pages' weekly unique engaged users (gross)"),
        col("views", ReportType::OptF64, "views across pages"),
        col("engagements", ReportType::OptF64, "engagements across pages"),
        col("followers", ReportType::OptF64, "followers across pages (gross)"),
        col("median_page_reach", ReportType::OptF64, "median page's weekly reach"),
    ],
};

/// Who engages, by age band and gender, per practice and per tenant, with penetration into registered patients.
pub static AGE_BANDS: ReportTable = ReportTable {
    name: "report_age_bands",
    doc: "Who engages, by age band and gender, per practice and per tenant, with penetration into registered patients.",
    columns: &[
        col("level", ReportType::Str, "practice or tenant"),
        col("practice_code", ReportType::Str, "ODS code, or ALL for the tenant"),
        col("source", ReportType::Str, "which metric the shares come from"),
        col("window_end", ReportType::Date, "last day of the 28-day window used"),
        col("age_band", ReportType::Str, "Meta's age band"),
        col(
            "unit",
            ReportType::Str,
            "what female, male, unknown and people count: `people`, or `ms of video watch time` (current API era)",
        ),
        col("female", ReportType::OptF64, "female (in `unit`)"),
        col("male", ReportType::OptF64, "male (in `unit`)"),
        col("unknown", ReportType::OptF64, "gender unknown (in `unit`)"),
        col("people", ReportType::OptF64, "the band's total, all genders (in `unit`: people, or watch time)"),
        col("share", ReportType::OptF64, "share of the level's total (people or watch time) in this band"),
        col(
            "registered",
            ReportType::OptF64,
            "registered patients mapped to this band (NHS 5-year groups, split uniformly within a group)",
        ),
        col("penetration", ReportType::OptF64, "people / registered"),
        col("note", ReportType::Str, "suppression or source notes"),
    ],
};

/// What a campaign achieved: its posts' own figures, and the incremental effect on the pages against a counterfactual, with an interval at its stated level.
pub static CAMPAIGN_UPLIFT: ReportTable = ReportTable {
    name: "report_campaign_uplift",
    doc: "What a campaign achieved: its posts' own figures, and the incremental effect on the pages against a counterfactual, with an interval at its stated level.",
    columns: &[
        col("campaign", ReportType::Str, "campaign name"),
        col("practice_code", ReportType::Str, "ODS code, or ALL for the total"),
        col("metric", ReportType::Str, "views, reach, engagements or video_views"),
        col("window_from", ReportType::Date, "first day of the campaign window"),
        col("window_to", ReportType::Date, "last day of the campaign window"),
        col("posts", ReportType::U32, "campaign posts matched"),
        col(
            "post_lifetime",
            ReportType::OptF64,
            "lifetime value of the campaign posts (latest snapshot; reach summed over pages is gross)",
        ),
        col("observed", ReportType::OptF64, "page figure over the window"),
        col("counterfactual", ReportType::OptF64, "what the pages would have had without the campaign"),
        col("effect", ReportType::OptF64, "observed - counterfactual"),
        col("effect_lo", ReportType::OptF64, "interval, low (at interval_level)"),
        col("effect_hi", ReportType::OptF64, "interval, high (at interval_level)"),
        col(
            "interval_level",
            ReportType::OptF64,
            "nominal coverage of the interval: 0.95 with 39 or more placebo windows, less with fewer (0.90 at 19)",
        ),
        col("lift_pct", ReportType::OptF64, "effect / counterfactual, percent"),
        col("p_value", ReportType::OptF64, "placebo-in-time p-value"),
        col("method", ReportType::Str, "how the counterfactual was built"),
        col("note", ReportType::Str, "why a figure is missing, when it is"),
    ],
};

/// Observed and counterfactual daily series around each campaign, for plotting.
pub static CAMPAIGN_SERIES: ReportTable = ReportTable {
    name: "report_campaign_series",
    doc: "Observed and counterfactual daily series around each campaign, for plotting.",
    columns: &[
        col("campaign", ReportType::Str, "campaign name"),
        col("practice_code", ReportType::Str, "ODS code, or ALL"),
        col("metric", ReportType::Str, "views, reach, engagements or video_views"),
        col("day", ReportType::Date, "Pacific-time day"),
        col("observed", ReportType::OptF64, "observed page figure"),
        col("counterfactual", ReportType::OptF64, "counterfactual"),
    ],
};

/// Posts ranked by reach, with engagement rate, type, topic, time, text excerpt and permalink.
pub static POST_PERFORMANCE: ReportTable = ReportTable {
    name: "report_post_performance",
    doc: "Posts ranked by reach, with engagement rate, type, topic, time, text excerpt and permalink.",
    columns: &[
        col("practice_code", ReportType::Str, "ODS code"),
        col("page_id", ReportType::Str, "Facebook page id"),
        col("post_id", ReportType::Str, "post id"),
        col("created", ReportType::Date, "day posted (UTC)"),
        col("post_type", ReportType::Str, "photo, video, link or status"),
        col("topic", ReportType::Str, "rule-based topic tag"),
        col("reach", ReportType::OptF64, "lifetime reach (latest snapshot)"),
        col("views", ReportType::OptF64, "lifetime views"),
        col("engagements", ReportType::OptF64, "lifetime engagements (clicks)"),
        col("engaged_users", ReportType::OptF64, "lifetime engaged users"),
        col("video_views", ReportType::OptF64, "lifetime video views"),
        col("engagement_rate", ReportType::OptF64, "engaged users (or engagements) / reach"),
        col("tenant_rank", ReportType::U32, "rank by reach within the tenant"),
        col(
            "posted_at",
            ReportType::Str,
            "when it was posted (RFC 3339, UTC); empty in rows computed before migration 10",
        ),
        col("excerpt", ReportType::Str, "the start of the post's text (public on its page), at most 160 characters"),
        col("permalink", ReportType::Str, "the post's address on Facebook"),
    ],
};

/// Problems found in the stored data: gaps, stale pages, pages needing re-authorisation, impossible values.
pub static DATA_QUALITY: ReportTable = ReportTable {
    name: "report_data_quality",
    doc: "Problems found in the stored data: gaps, stale pages, pages needing re-authorisation, impossible values.",
    columns: &[
        col("practice_code", ReportType::Str, "ODS code"),
        col("page_id", ReportType::Str, "Facebook page id, empty for practice-level checks"),
        col("check_name", ReportType::Str, "gap, stale, reauth, unique_above_total, week_below_max_day"),
        col("day_from", ReportType::Date, "first day concerned"),
        col("day_to", ReportType::Date, "last day concerned"),
        col("count", ReportType::U32, "how many days or values"),
        col("detail", ReportType::Str, "what was found and what to do"),
    ],
};

/// One pipelines run: which range it computed, when, and what it wrote. Written last, so a variant's run record
/// names the run whose tables readers see.
pub static REPORT_RUNS: ReportTable = ReportTable {
    name: "report_runs",
    doc: "One pipelines run per variant: the range it computed, when, and what it wrote.",
    columns: &[
        col("run_id", ReportType::Str, "pipelines run id"),
        col("variant", ReportType::Str, "report variant: empty for the main reports, else its name"),
        col("range_from", ReportType::Date, "first Pacific-time day of the report range"),
        col("range_to", ReportType::Date, "last Pacific-time day of the report range"),
        col("computed_at", ReportType::Str, "when the run finished (UTC, RFC 3339)"),
        col("facts", ReportType::I64, "facts read"),
        col("rows", ReportType::I64, "report rows written"),
        col(
            "started_at",
            ReportType::Str,
            "when the run started (UTC, RFC 3339): the next incremental run recomputes the days of facts fetched since",
        ),
        col(
            "inputs",
            ReportType::Str,
            "digest of the run's other inputs (campaigns, registered patients): a change makes the next run full",
        ),
        col("mode", ReportType::Str, "full, or incremental (the days it recomputed)"),
    ],
};

/// Which copy of a tenant's reports: the main one, or a named variant (a narrower `pulse jobs run --from/--to`
/// writes to one, so it never replaces the full-range reports analysts read by default).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReportVariant(String);

impl ReportVariant {
    /// The main reports.
    pub fn main() -> Self {
        Self(String::new())
    }

    /// A named variant: 1-64 characters of `A-Z a-z 0-9 . _ -` (it becomes part of a path and a key).
    pub fn named(name: &str) -> Result<Self> {
        let ok = !name.is_empty()
            && name.len() <= 64
            && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
            && !name.starts_with('.');
        if !ok {
            return Err(StoreError::Invalid {
                what: format!("report variant `{name}`"),
                reason: "use 1-64 characters of letters, digits, `.`, `_` and `-`, not starting with `.`".into(),
            });
        }
        Ok(Self(name.to_owned()))
    }

    pub fn is_main(&self) -> bool {
        self.0.is_empty()
    }

    /// The name (empty for the main reports).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The key a slice is stored under: the table name, or `table@variant`.
    pub fn slice_key(&self, table: &ReportTable) -> String {
        if self.is_main() { table.name.to_owned() } else { format!("{}@{}", table.name, self.0) }
    }
}

impl std::fmt::Display for ReportVariant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.is_main() { "main" } else { &self.0 })
    }
}

/// Every report table, in migration order.
pub static ALL: &[&ReportTable] = &[
    &REACH_WEEKLY,
    &REACH_TENANT_WEEKLY,
    &AGE_BANDS,
    &CAMPAIGN_UPLIFT,
    &CAMPAIGN_SERIES,
    &POST_PERFORMANCE,
    &DATA_QUALITY,
    &REPORT_RUNS,
];

impl ReportTable {
    /// The schema callers write and read (without `tenant_id`).
    pub fn schema(&self) -> SchemaRef {
        Arc::new(Schema::new(
            self.columns.iter().map(|c| Field::new(c.name, c.ty.arrow(), c.ty.nullable())).collect::<Vec<_>>(),
        ))
    }

    /// Checks that `batch` has exactly this table's columns, in order, with the right types.
    pub fn check(&self, batch: &RecordBatch) -> Result<()> {
        let expected = self.schema();
        let got = batch.schema();
        let names =
            |s: &Schema| s.fields().iter().map(|f| format!("{}:{}", f.name(), f.data_type())).collect::<Vec<_>>();
        if names(&expected) != names(&got) {
            return Err(StoreError::Report {
                table: self.name.into(),
                reason: format!("columns {:?} do not match the table's {:?}", names(&got), names(&expected)),
            });
        }
        for (i, c) in self.columns.iter().enumerate() {
            if !c.ty.nullable() && batch.column(i).null_count() > 0 {
                return Err(StoreError::Report {
                    table: self.name.into(),
                    reason: format!("column `{}` has nulls but is not nullable", c.name),
                });
            }
        }
        Ok(())
    }

    /// A batch written before the table gained its last columns, with those columns added (text empty, figures
    /// missing), as ClickHouse's `ADD COLUMN ... DEFAULT` gives old rows. `None` when the batch's columns are not a
    /// prefix of the table's, or a missing column is neither text nor nullable.
    pub fn widen(&self, columns: &[arrow::array::ArrayRef], rows: usize) -> Option<RecordBatch> {
        use arrow::array::{StringArray, new_null_array};
        if columns.len() >= self.columns.len() {
            return None;
        }
        let schema = self.schema();
        let mut out = columns.to_vec();
        for c in &self.columns[columns.len()..] {
            out.push(match c.ty {
                ReportType::Str => Arc::new(StringArray::from(vec![""; rows])) as arrow::array::ArrayRef,
                t if t.nullable() => new_null_array(&t.arrow(), rows),
                _ => return None,
            });
        }
        RecordBatch::try_new(schema, out).ok()
    }

    /// An empty batch in this table's schema.
    pub fn empty(&self) -> RecordBatch {
        RecordBatch::new_empty(self.schema())
    }
}
