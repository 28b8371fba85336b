//! The ingester: every practice's page and post insights from the Graph API (or `pulse sim`) into the store.
//!
//! - [`client`]: the Graph client (token in a header, `appsecret_proof`, usage headers, classified errors);
//! - [`parse`]: responses to records (strict: what cannot be placed is refused);
//! - [`plan`]: what to fetch per page and stream, in windows of at most 90 days, from a backfill start or from
//!   checkpoints with a lookback;
//! - [`budget`]: the adaptive rate budget from Meta's usage headers;
//! - [`retry`]: exponential backoff with full jitter, injectable sleep;
//! - [`context`]: what a run's parts share (options, client, budget, findings, each page's counters);
//! - [`executor`]: runs the plan (bounded concurrency, a fixed set of page workers);
//! - `call`: one Graph call with the rate budget and retries, and what a failed stream tells the user;
//! - `fetch`: a window of page insights, a window of posts;
//! - [`writer`]: batches to the store, checkpoints after the store's acknowledgement;
//! - [`summary`]: what a run did, per practice, in words.

pub mod budget;
mod call;
pub mod client;
pub mod context;
pub mod executor;
mod fetch;
pub mod parse;
pub mod plan;
pub mod retry;
pub mod summary;
pub mod writer;

pub use client::{CallError, GraphClient};
pub use context::IngestOptions;
pub use executor::{IngestError, Ingester, RunRecordPlace};
pub use plan::{PlanOptions, Target, TargetError};
pub use summary::StoreFailure;
pub use summary::{Failure, FailureKind, Reauth, RunReport};
