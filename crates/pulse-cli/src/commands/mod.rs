//! One module per subcommand.

pub mod config;
pub mod demo;
pub mod ingest;
pub mod metrics;
pub mod migrate;
pub mod sim;
