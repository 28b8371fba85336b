//! Report tables: what the pipelines compute, declared once here with their columns, so both backends (and the
//! ClickHouse DDL in `sql/migrations`, checked by the conformance suite) agree on the shape.
//!
//! Every report table also has `tenant_id` (stamped from the scope) and, in ClickHouse, `version` (the write that
//! produced the slice; reads take the newest).

use std::sync::Arc;

use arrow::array::{BooleanArray, Date32Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use chrono::{Datelike, NaiveDate};
use pulse_domain::{day_number, from_day_number};

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
    /// The date column whose month partitions the table in storage (tables of a row per week or window), so that
    /// an incremental run reads and writes only the months it recomputed; `None`: stored whole.
    pub partition: Option<&'static str>,
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
    partition: Some("week_ending"),
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
    partition: Some("week_ending"),
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
    partition: Some("window_end"),
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
    partition: None,
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
    partition: None,
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
    partition: None,
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
    partition: None,
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
    partition: None,
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

    /// The first day of the storage partition (month) holding `day`: where [`crate::Store::replace_report_from`]
    /// may start.
    pub fn partition_start(&self, day: NaiveDate) -> NaiveDate {
        day.with_day(1).expect("every month has a first day")
    }

    /// The partition column's values as day numbers (days since 1970-01-01).
    fn partition_days(&self, batch: &RecordBatch) -> Result<Vec<i32>> {
        let column = self.partition.ok_or_else(|| StoreError::Report {
            table: self.name.into(),
            reason: "the table is stored whole, not by month".into(),
        })?;
        let days =
            batch.column_by_name(column).and_then(|c| c.as_any().downcast_ref::<Date32Array>()).ok_or_else(|| {
                StoreError::Report { table: self.name.into(), reason: format!("no date column `{column}`") }
            })?;
        Ok(days.values().to_vec())
    }

    /// The rows on or after `from` (by the partition column), in order.
    pub fn rows_from(&self, batch: &RecordBatch, from: NaiveDate) -> Result<RecordBatch> {
        Ok(self.split(batch, from)?.1)
    }

    /// The rows before `from` and the rows on or after it (by the partition column), each in order.
    pub fn split(&self, batch: &RecordBatch, from: NaiveDate) -> Result<(RecordBatch, RecordBatch)> {
        let from = day_number(from);
        let after: BooleanArray = self.partition_days(batch)?.iter().map(|d| Some(*d >= from)).collect();
        let before = arrow::compute::not(&after)
            .map_err(|e| StoreError::Report { table: self.name.into(), reason: e.to_string() })?;
        let pick = |mask: &BooleanArray| {
            arrow::compute::filter_record_batch(batch, mask)
                .map_err(|e| StoreError::Report { table: self.name.into(), reason: e.to_string() })
        };
        Ok((pick(&before)?, pick(&after)?))
    }

    /// `old`'s rows before `from`, then `tail` (rows on or after `from`): a slice replaced from `from` on.
    pub fn with_tail(&self, old: &RecordBatch, from: NaiveDate, tail: &RecordBatch) -> Result<RecordBatch> {
        let (head, _) = self.split(old, from)?;
        arrow::compute::concat_batches(&self.schema(), [&head, tail])
            .map_err(|e| StoreError::Report { table: self.name.into(), reason: e.to_string() })
    }

    /// A partitioned table's rows split by month (`YYYY-MM`), months ascending, each month's rows in the order
    /// given. Storage keeps this order, so a table written whole reads back as one updated month by month does.
    pub fn by_month(&self, batch: &RecordBatch) -> Result<Vec<(String, RecordBatch)>> {
        let months: Vec<String> =
            self.partition_days(batch)?.iter().map(|d| from_day_number(*d).format("%Y-%m").to_string()).collect();
        let mut rows: std::collections::BTreeMap<&str, Vec<u32>> = Default::default();
        for (i, m) in months.iter().enumerate() {
            rows.entry(m.as_str()).or_default().push(i as u32);
        }
        rows.into_iter()
            .map(|(month, idx)| {
                let idx = arrow::array::UInt32Array::from(idx);
                let columns = batch
                    .columns()
                    .iter()
                    .map(|c| arrow::compute::take(c, &idx, None))
                    .collect::<std::result::Result<Vec<_>, _>>()
                    .and_then(|c| RecordBatch::try_new(batch.schema(), c))
                    .map_err(|e| StoreError::Report { table: self.name.into(), reason: e.to_string() })?;
                Ok((month.to_owned(), columns))
            })
            .collect()
    }

    /// `batch` in the order storage keeps it: a partitioned table's rows month by month (each month's in the order
    /// given), any other table's as given.
    pub fn in_storage_order(&self, batch: &RecordBatch) -> Result<RecordBatch> {
        if self.partition.is_none() || batch.num_rows() == 0 {
            return Ok(batch.clone());
        }
        let parts: Vec<RecordBatch> = self.by_month(batch)?.into_iter().map(|(_, b)| b).collect();
        arrow::compute::concat_batches(&batch.schema(), &parts)
            .map_err(|e| StoreError::Report { table: self.name.into(), reason: e.to_string() })
    }
}
