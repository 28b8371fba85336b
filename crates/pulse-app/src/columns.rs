//! Reading report batches by column name: a column resolved once, then read row by row as text, a number or a day.
//! The query layer and the dashboard both read reports this way.

use arrow::array::{Array, Date32Array, Float64Array, StringArray, UInt32Array};
use arrow::record_batch::RecordBatch;

/// A column resolved once by name, read by row.
#[derive(Clone, Copy)]
pub enum Col<'a> {
    Str(&'a StringArray),
    F64(&'a Float64Array),
    U32(&'a UInt32Array),
    Date(&'a Date32Array),
    Missing,
}

impl<'a> Col<'a> {
    pub fn of(batch: &'a RecordBatch, name: &str) -> Col<'a> {
        let Some(c) = batch.column_by_name(name) else { return Col::Missing };
        let any = c.as_any();
        if let Some(a) = any.downcast_ref::<StringArray>() {
            Col::Str(a)
        } else if let Some(a) = any.downcast_ref::<Float64Array>() {
            Col::F64(a)
        } else if let Some(a) = any.downcast_ref::<UInt32Array>() {
            Col::U32(a)
        } else if let Some(a) = any.downcast_ref::<Date32Array>() {
            Col::Date(a)
        } else {
            Col::Missing
        }
    }

    pub fn text(self, i: usize) -> &'a str {
        match self {
            Col::Str(a) if !a.is_null(i) => a.value(i),
            _ => "",
        }
    }

    pub fn num(self, i: usize) -> Option<f64> {
        match self {
            Col::F64(a) if !a.is_null(i) => Some(a.value(i)).filter(|v| v.is_finite()),
            Col::U32(a) if !a.is_null(i) => Some(f64::from(a.value(i))),
            _ => None,
        }
    }

    pub fn day(self, i: usize) -> Option<i32> {
        match self {
            Col::Date(a) if !a.is_null(i) => Some(a.value(i)),
            _ => None,
        }
    }
}
