//! The ingester: every practice's page and post insights from the Graph API (or `pulse sim`) into the store.
//!
//! - [`client`]: the Graph client (token in a header, `appsecret_proof`, usage headers, classified errors);
//! - [`parse`]: responses to records (strict: what cannot be placed is refused);
//! - [`plan`]: what to fetch per page and stream, in windows of at most 90 days, from a backfill start or from
//!   checkpoints with a lookback;
//! - [`budget`]: the adaptive rate budget from Meta's usage headers;
//! - [`retry`]: exponential backoff with full jitter, injectable sleep;
//! - [`run`]: the executor and the batch writer.

pub mod budget;
pub mod client;
pub mod parse;
pub mod plan;
pub mod retry;
pub mod run;

pub use client::{CallError, GraphClient};
pub use plan::{PlanOptions, Target};
pub use run::{IngestError, IngestOptions, Ingester, RunReport};
