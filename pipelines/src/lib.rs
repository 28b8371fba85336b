//! Practice Pulse's polars jobs: pure functions from fact frames to report frames, plus thin loaders.
//!
//! - [`frames`]: loading facts (Parquet scans of the lake with partition pruning, or any store through the tenant-
//!   scoped `Store` interface) and turning report frames into the store's report tables;
//! - [`reach`]: weekly reach per page from the API's own unique counts, change, outliers, tenant roll-ups;
//! - [`age_bands`]: who engages by age band and gender, and penetration into registered patients ([`registered`]);
//! - [`campaign`]: campaign matching and uplift against a counterfactual, with placebo-calibrated intervals;
//! - [`posts`]: post performance, by type and rule-based topic;
//! - [`quality`]: gaps, stale pages, pages needing re-authorisation, impossible values;
//! - [`jobs`]: runs them for a tenant and writes the report tables.
//!
//! The pipelines are synchronous; `jobs` runs them off the async runtime.

pub mod age_bands;
pub mod campaign;
pub mod donors;
pub mod frames;
pub mod jobs;
pub mod posts;
pub mod quality;
pub mod reach;
pub mod registered;

/// A pipeline failure: what, and what to do.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("polars: {0}")]
    Polars(#[from] polars::error::PolarsError),
    #[error("{0}")]
    Store(#[from] pulse_store::StoreError),
    #[error("{0}")]
    Input(String),
}

pub type Result<T> = std::result::Result<T, PipelineError>;

/// Caps glibc's malloc arenas at two. glibc gives threads that allocate at the same time arenas of their own (up to
/// eight per core), and the pipelines' threads (polars' pool, a tenant's uplift beside its other reports) fragment
/// them: with the default, a national year's pipelines peaked at 284 MiB in 15.3 s, with two arenas at 176 MiB in
/// 15.9 s, within the machine's run-to-run noise (`pipelines_bench` as `bash benches/pipelines-vs-duckdb.sh` runs it,
/// with `MALLOC_ARENA_MAX=2`; mimalloc instead: 375 MiB). Call it first thing in `main`, before any
/// thread starts. Elsewhere than glibc it does nothing.
pub fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; called before other threads exist.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}
