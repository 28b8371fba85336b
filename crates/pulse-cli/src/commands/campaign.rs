//! `pulse campaign plan`: arguments in, [`pulse_app::plan`] does the work, words (or JSON) out.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;
use chrono::NaiveDate;
use clap::Subcommand;
use pulse_app::plan::{self, PlanRequest};

#[derive(Debug, Subcommand)]
pub enum CampaignCommand {
    /// Plan a campaign before it starts: the smallest effect it could detect (80% power, judged by the same 95%
    /// interval as its uplift report) from the tenant's own history (and the donor pool's, for a tenant in it), and
    /// with --target the days and share of pages that detecting that effect needs.
    Plan {
        /// The tenant whose pages take part.
        #[arg(long)]
        tenant: String,
        /// The campaign's first day.
        #[arg(long)]
        start: NaiveDate,
        /// How many days it runs (1 to 28).
        #[arg(long, default_value_t = 2)]
        days: u32,
        /// The share of the tenant's pages taking part (0.5: half of them).
        #[arg(long, default_value_t = 0.5)]
        share: f64,
        /// views, reach, engagements or video_views.
        #[arg(long, default_value = "views")]
        metric: String,
        /// An effect to detect: a total added over the participating pages and days (e.g. 20000 views).
        #[arg(long)]
        target: Option<f64>,
        /// Print the plan as JSON.
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(path: &Path, cmd: CampaignCommand) -> Result<ExitCode> {
    let CampaignCommand::Plan { tenant, start, days, share, metric, target, json } = cmd;
    let config = pulse_app::open::config(path)?;
    let answer = plan::plan(&config, &PlanRequest { tenant, start, days, share, metric, target }).await?;
    if json {
        crate::outln!("{}", plan::plan_json(&answer));
    } else {
        crate::out(&plan::plan_text(&answer));
    }
    Ok(ExitCode::SUCCESS)
}
