//! Small conversions shared by both backends.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, Date32Array, Float64Array, StringArray, TimestampMicrosecondArray, UInt32Array, UInt64Array,
};
use arrow::datatypes::{DataType, Field, TimeUnit};
use arrow::record_batch::RecordBatch;
use chrono::{DateTime, NaiveDate, Utc};

use crate::{Result, StoreError};

pub use pulse_domain::{day_number as day_to_i32, from_day_number as i32_to_day};

pub fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

pub fn from_micros(us: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(us).unwrap_or_default()
}

/// Builds a record batch column by column.
#[derive(Default)]
pub struct BatchBuilder {
    fields: Vec<Field>,
    columns: Vec<ArrayRef>,
}

impl BatchBuilder {
    pub fn str<'a>(mut self, name: &str, values: impl Iterator<Item = &'a str>) -> Self {
        self.fields.push(Field::new(name, DataType::Utf8, false));
        self.columns.push(Arc::new(StringArray::from_iter_values(values)));
        self
    }

    pub fn date(mut self, name: &str, values: impl Iterator<Item = NaiveDate>) -> Self {
        self.fields.push(Field::new(name, DataType::Date32, false));
        self.columns.push(Arc::new(Date32Array::from_iter_values(values.map(day_to_i32))));
        self
    }

    pub fn f64(mut self, name: &str, values: impl Iterator<Item = f64>) -> Self {
        self.fields.push(Field::new(name, DataType::Float64, false));
        self.columns.push(Arc::new(Float64Array::from_iter_values(values)));
        self
    }

    pub fn u64(mut self, name: &str, values: impl Iterator<Item = u64>) -> Self {
        self.fields.push(Field::new(name, DataType::UInt64, false));
        self.columns.push(Arc::new(UInt64Array::from_iter_values(values)));
        self
    }

    pub fn u32(mut self, name: &str, values: impl Iterator<Item = u32>) -> Self {
        self.fields.push(Field::new(name, DataType::UInt32, false));
        self.columns.push(Arc::new(UInt32Array::from_iter_values(values)));
        self
    }

    pub fn ts(mut self, name: &str, values: impl Iterator<Item = DateTime<Utc>>) -> Self {
        self.fields.push(Field::new(name, DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())), false));
        self.columns
            .push(Arc::new(TimestampMicrosecondArray::from_iter_values(values.map(micros)).with_timezone("UTC")));
        self
    }

    /// The batch of a core table's lake dataset. The columns must be the declaration's, in its order
    /// (`crate::table`): a codec that drifted from it fails here, in the first test that writes the dataset.
    pub fn finish_for(self, table: &crate::table::CoreTable) -> RecordBatch {
        let schema = table.lake_schema();
        let built: Vec<(&str, &DataType)> = self.fields.iter().map(|f| (f.name().as_str(), f.data_type())).collect();
        let declared: Vec<(&str, &DataType)> =
            schema.fields().iter().map(|f| (f.name().as_str(), f.data_type())).collect();
        assert_eq!(built, declared, "the lake codec of `{}` writes other columns than table.rs declares", table.name);
        RecordBatch::try_new(schema, self.columns).expect("columns built as declared")
    }
}

/// Typed access to a batch's columns by name, with errors that name the column.
pub struct Columns<'a> {
    batch: &'a RecordBatch,
    what: &'a str,
}

impl<'a> Columns<'a> {
    pub fn new(batch: &'a RecordBatch, what: &'a str) -> Self {
        Self { batch, what }
    }

    fn get<T: Array + 'static>(&self, name: &str) -> Result<&'a T> {
        let column = self.batch.column_by_name(name).ok_or_else(|| StoreError::Invalid {
            what: self.what.to_owned(),
            reason: format!("missing column `{name}`"),
        })?;
        column.as_any().downcast_ref::<T>().ok_or_else(|| StoreError::Invalid {
            what: self.what.to_owned(),
            reason: format!("column `{name}` has type {}", column.data_type()),
        })
    }

    pub fn str(&self, name: &str) -> Result<&'a StringArray> {
        self.get(name)
    }

    pub fn date(&self, name: &str) -> Result<&'a Date32Array> {
        self.get(name)
    }

    pub fn f64(&self, name: &str) -> Result<&'a Float64Array> {
        self.get(name)
    }

    pub fn u64(&self, name: &str) -> Result<&'a UInt64Array> {
        self.get(name)
    }

    pub fn u32(&self, name: &str) -> Result<&'a UInt32Array> {
        self.get(name)
    }

    pub fn ts(&self, name: &str) -> Result<&'a TimestampMicrosecondArray> {
        self.get(name)
    }
}

/// Parses a stored string into a domain type, naming the field on failure.
/// A stored Graph metric name as the catalogue's own string; a name it does not know is refused as invalid data.
pub fn graph_metric(what: &str, value: &str) -> Result<&'static str> {
    pulse_domain::graph_metric_name(value).ok_or_else(|| StoreError::Invalid {
        what: what.to_owned(),
        reason: format!("graph_metric: `{value}` is not a Graph metric this version knows"),
    })
}

pub fn parse_field<T: std::str::FromStr>(what: &str, field: &str, value: &str) -> Result<T>
where
    T::Err: std::fmt::Display,
{
    value.parse().map_err(|e: T::Err| StoreError::Invalid { what: what.to_owned(), reason: format!("{field}: {e}") })
}

/// An API version's text (`v25.0`), made once per version and kept: a row takes it without `to_string`'s allocation
/// and formatter (those were about 4% of the ingester's CPU in the national ingest benchmark). ClickHouse rows and
/// the lake's Arrow batches both take it. A run sees one or two versions, so what is kept is a few bytes.
pub(crate) fn version_text(v: pulse_domain::ApiVersion) -> &'static str {
    use std::cell::Cell;
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    thread_local! {
        static LAST: Cell<Option<(pulse_domain::ApiVersion, &'static str)>> = const { Cell::new(None) };
    }
    static TEXTS: OnceLock<Mutex<HashMap<pulse_domain::ApiVersion, &'static str>>> = OnceLock::new();
    if let Some((last, text)) = LAST.get()
        && last == v
    {
        return text;
    }
    let text = *TEXTS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .entry(v)
        .or_insert_with(|| Box::leak(v.to_string().into_boxed_str()));
    LAST.set(Some((v, text)));
    text
}
