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

/// Weekly reach per page, from the API's own 7-day unique counts (never a sum of daily uniques).
pub static REACH_WEEKLY: ReportTable = ReportTable {
    name: "report_reach_weekly",
    doc: "Weekly reach, views, engagements and followers per practice page (Pacific-time weeks).",
    columns: &[
        col("practice_code", ReportType::Str, "ODS code of the practice"),
        col("page_id", ReportType::Str, "Facebook page id"),
        col(
            "week_ending",
            ReportType::Date,
            "last Pacific-time day of the 7-day window",
        ),
        col(
            "reach",
            ReportType::OptF64,
            "unique people reached in the week (the API's week value)",
        ),
        col(
            "views",
            ReportType::OptF64,
            "times content was seen in the week",
        ),
        col("engagements", ReportType::OptF64, "engagements in the week"),
        col(
            "followers",
            ReportType::OptF64,
            "followers at the end of the week",
        ),
        col("engagement_rate", ReportType::OptF64, "engagements / views"),
        col(
            "days_with_data",
            ReportType::U32,
            "days of the week with a daily value stored",
        ),
    ],
};

/// Every report table, in migration order.
pub static ALL: &[&ReportTable] = &[&REACH_WEEKLY];

impl ReportTable {
    /// The schema callers write and read (without `tenant_id`).
    pub fn schema(&self) -> SchemaRef {
        Arc::new(Schema::new(
            self.columns
                .iter()
                .map(|c| Field::new(c.name, c.ty.arrow(), c.ty.nullable()))
                .collect::<Vec<_>>(),
        ))
    }

    /// Checks that `batch` has exactly this table's columns, in order, with the right types.
    pub fn check(&self, batch: &RecordBatch) -> Result<()> {
        let expected = self.schema();
        let got = batch.schema();
        let names = |s: &Schema| {
            s.fields()
                .iter()
                .map(|f| format!("{}:{}", f.name(), f.data_type()))
                .collect::<Vec<_>>()
        };
        if names(&expected) != names(&got) {
            return Err(StoreError::Report {
                table: self.name.into(),
                reason: format!(
                    "columns {:?} do not match the table's {:?}",
                    names(&got),
                    names(&expected)
                ),
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

    /// An empty batch in this table's schema.
    pub fn empty(&self) -> RecordBatch {
        RecordBatch::new_empty(self.schema())
    }
}
