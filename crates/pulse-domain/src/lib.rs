//! The Practice Pulse domain: who the data belongs to, what the Graph API measures, and how to read its dates.
//!
//! This crate is deliberately small (no I/O, no async, no heavy dependencies) so every other crate,
//! including the polars pipelines, can share one vocabulary.

pub mod demographics;
pub mod error;
pub mod ids;
pub mod metrics;
pub mod page;
pub mod records;
pub mod text;
pub mod time;

pub use demographics::{AgeBand, AgeGenderKey, Gender};
pub use error::DomainError;
pub use ids::{PageId, PostId, PracticeCode, TenantId};
pub use metrics::{
    ApiVersion, CanonicalMetric, GraphMetric, Level, MetricCatalogue, Period, ValueKind, graph_metric_name,
};
pub use page::PageKind;
pub use records::{
    Checkpoint, ExportAuditRecord, IngestRunRecord, Lease, PageInsightFact, Post, PostInsightSnapshot, RunStatus,
    StateEvent, Stream, holder_exited, this_host,
};
pub use time::{
    CoveredDays, EPOCH, covered_days, day_number, end_time_for_day, format_graph_time, from_day_number,
    pacific_midnight, pacific_today, pacific_today_at, parse_end_time,
};
