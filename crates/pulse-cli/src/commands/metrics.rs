//! `pulse metrics`: what the catalogue asks Meta for.

use std::process::ExitCode;

use anyhow::Result;
use chrono::NaiveDate;
use clap::Args;
use pulse_domain::{ApiVersion, CanonicalMetric, MetricCatalogue};

#[derive(Debug, Args)]
pub struct MetricsArgs {
    /// Graph API version, such as v2.12 or v25.0.
    #[arg(long, default_value = "v25.0")]
    api_version: ApiVersion,
    /// The day the request would be made (retirements apply from their day). Default: today.
    #[arg(long)]
    on: Option<NaiveDate>,
}

pub fn run(args: MetricsArgs) -> Result<ExitCode> {
    let on = args.on.unwrap_or_else(|| chrono::Utc::now().date_naive());
    let catalogue = MetricCatalogue::default();
    crate::outln!("Graph metrics requested under {} on {on}:", args.api_version);
    crate::outln!("{:<36} {:<48} {:<22} description", "canonical", "graph metric", "periods");
    for &metric in CanonicalMetric::ALL {
        let (name, periods) = match catalogue.graph_name(metric, args.api_version, on) {
            Some(g) => (g.name.to_owned(), g.periods.iter().map(|p| p.as_str()).collect::<Vec<_>>().join(",")),
            None => ("(unavailable: retired, no successor)".to_owned(), String::new()),
        };
        crate::outln!("{:<36} {:<48} {:<22} {}", metric.as_str(), name, periods, metric.description());
    }
    Ok(ExitCode::SUCCESS)
}
