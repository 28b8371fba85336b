//! The application core. Every surface (the `pulse` CLI, the analyst service, the scheduler) calls these functions
//! and renders what they return; none of them opens a store, resolves a token or reads a report itself. The rooms
//! built on it, one surface each: `pulse-query` (the analyst query and its cache), `pulse-export` (research exports
//! with disclosure control), `pulse-digest` (weekly digests, mail, and the scheduler daemon), `pulse-demo` (the
//! simulator's world end to end). See ARCHITECTURE.md.
//!
//! - [`migrate`]: the store's schema and each tenant's analyst views;
//! - [`open`]: the config and the store it names;
//! - [`ingest`]: configured pages → ingest targets, one ingest run, its exit status;
//! - [`jobs`]: campaigns and registered patients from config, one pipelines run per tenant;
//! - [`report`]: report queries (practice check, filters, sort, top-N, latest week, names beside codes), format
//!   writers, the data dictionary;
//! - [`keys`]: API keys, hashed in a file, checked into an [`pulse_config::Access`];
//! - [`subscriptions`]: digest lists, who is on them, signed unsubscribe links (no mail is sent from here);
//! - [`scheduler`]: the schedules the config describes, the journal of their runs, a job's status now;
//! - [`plan`]: a campaign planned from a tenant's history: its minimum detectable effect, what a target needs;
//! - [`overview`], [`chart`], [`columns`]: a tenant's weeks at a glance, SVG charts, report columns by name;
//! - [`tenant`]: which tenant a request is for (the one named, or the access's only one), one rule everywhere;
//! - [`error`]: the typed error every surface maps once (exit code, HTTP status);
//! - [`health`]: page tokens checked through `debug_token`, and re-authorisation links for those that need one;
//! - [`onboarding`]: invitations (single use, expiring) a tenant's admin sends practice managers, and their journal;
//! - [`vault`]: page tokens sealed (AES-256-GCM) in the store, rotation, import from the config's references;
//! - [`text`]: what a person reads: tables, bars, sparklines, thousands separators, as strings.

pub mod campaigns;
pub mod chart;
pub mod columns;
pub mod error;
pub mod health;
pub mod ingest;
pub mod jobs;
pub mod keys;
pub mod migrate;
pub mod onboarding;
pub mod open;
pub mod overview;
pub mod plan;
pub mod quality;
pub mod report;
pub mod scheduler;
pub mod subscriptions;
pub mod tenant;
pub mod text;
pub mod vault;
pub mod views;

pub use pulse_pipelines::limit_malloc_arenas;
