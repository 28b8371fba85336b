//! Practice Pulse's polars jobs.
use polars::prelude::*;

pub fn probe() -> PolarsResult<DataFrame> {
    df!("a" => [1i64, 2, 3])
}
