//! One module per subcommand.

pub mod config;
pub mod metrics;
pub mod migrate;
pub mod sim;
