//! The application layer. Every surface (the `pulse` CLI today; the HTTP server and the scheduler next) calls these
//! functions and renders what they return; none of them opens a store, resolves a token or reads a report itself.
//!
//! - [`demo`]: the whole pipeline on the simulator, with nothing to install;
//! - [`migrate`]: the store's schema and each tenant's analyst views;
//! - [`open`]: the config and the store it names;
//! - [`ingest`]: configured pages → ingest targets, one ingest run, its exit status;
//! - [`jobs`]: campaigns and registered patients from config, one pipelines run per tenant;
//! - [`report`]: report queries (practice check, filters, sort, top-N, latest week, names beside codes), format
//!   writers, the data dictionary;
//! - [`query`]: the analyst query (metrics by dimensions, Plausible-style), its cache keyed by the data watermark;
//! - [`keys`]: API keys, hashed in a file, checked into an [`pulse_domain::Access`];
//! - [`error`]: the typed error every surface maps once (exit code, HTTP status);
//! - [`text`]: what a person reads: tables, bars, sparklines, thousands separators, as strings.

pub mod chart;
pub mod columns;
pub mod delivery;
pub mod demo;
pub mod digest;
pub mod error;
pub mod export;
pub mod ingest;
pub mod jobs;
pub mod keys;
pub mod mail;
pub mod migrate;
pub mod open;
pub mod overview;
pub mod query;
pub mod raster;
pub mod report;
pub mod scheduler;
pub mod subscriptions;
pub mod text;

pub use pulse_pipelines::limit_malloc_arenas;
