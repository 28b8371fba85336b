//! One module per subcommand.

pub mod campaign;
pub mod cluster;
pub mod config;
pub mod demo;
pub mod digest;
pub mod export;
pub mod ingest;
pub mod jobs;
pub mod keys;
pub mod metrics;
pub mod migrate;
pub mod report;
pub mod run;
pub mod serve;
pub mod sim;
pub mod vault;
