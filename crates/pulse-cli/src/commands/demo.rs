//! `pulse demo`: the whole pipeline on the simulator, in one command, with nothing to install.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;
use pulse_config::Secret;
use pulse_domain::Access;
use pulse_ingest::{GraphClient, IngestOptions, Ingester, PlanOptions, RunReport, Target};
use pulse_sim::{Sim, World, scenario};
use pulse_store::Store;
use pulse_store::lake::LakeStore;

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Directory of the embedded lake (created if missing).
    #[arg(long, default_value = "pulse-data")]
    dir: PathBuf,
    /// Scenario to simulate: case-study (default), current, national, or a TOML file.
    #[arg(long, default_value = "case-study")]
    scenario: String,
    /// HTTP calls in flight.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
}

fn thousands(n: u64) -> String {
    pulse_app::text::thousands(n as f64)
}

/// A config describing the simulated world, so `pulse report --config <dir>/pulse.toml` can be used afterwards.
fn write_demo_config(world: &World, dir: &std::path::Path) -> Result<PathBuf> {
    let mut toml = String::from(
        "# Written by `pulse demo`: the simulated world's tenants and practices, over the lake in this directory.\n\
         # Pages have no tokens here (the simulator that issued them is gone); use it for reports and jobs.\n\
         [store]\nbackend = \"lake\"\nlake_dir = \".\"\n\n",
    );
    let _ = writeln!(toml, "[graph]\nversion = \"{}\"\n", world.api_version());
    // Registered patients in NHS Digital's practice-level 5-year format, from the simulated practices.
    let mut nhs =
        String::from("PUBLICATION,EXTRACT_DATE,ORG_TYPE,ORG_CODE,POSTCODE,SEX,AGE_GROUP_5,NUMBER_OF_PATIENTS\n");
    for p in &world.practices {
        for (sex, i) in [("FEMALE", 0), ("MALE", 1)] {
            for (g, counts) in pulse_sim::world::NHS_AGE_GROUPS.iter().zip(p.registered.iter()) {
                let _ = writeln!(
                    nhs,
                    "GP_PRAC_PAT_LIST,01{},GP,{},,{sex},{g},{}",
                    world.end().format("%b%Y").to_string().to_uppercase(),
                    p.code,
                    counts[i]
                );
            }
        }
    }
    std::fs::write(dir.join("gp-reg-pat-prac-quin-age.csv"), nhs)?;
    // Top-level keys must come before the first table.
    toml.insert_str(
        toml.find("[store]").unwrap_or(0),
        "registered_patients_csv = \"gp-reg-pat-prac-quin-age.csv\"\n\n",
    );
    for c in &world.scenario.campaigns {
        let matcher = match (&c.hashtag, &c.link) {
            (Some(h), _) => format!("hashtag = \"{h}\""),
            (None, Some(l)) => format!("link = \"{l}\""),
            (None, None) => format!("text = \"{}\"", c.message.chars().take(30).collect::<String>()),
        };
        let kind = match c.kind {
            pulse_sim::scenario::CampaignKind::Video => "post_type = \"video\"\n",
            _ => "",
        };
        let _ = writeln!(
            toml,
            "[[campaign]]\nname = \"{}\"\nstart = \"{}\"\ndays = {}\n{matcher}\n{kind}",
            c.name.get_ref(),
            c.start,
            c.days
        );
    }
    for (ti, t) in world.tenants.iter().enumerate() {
        let csv_name = format!("practices-{}.csv", t.id);
        let mut csv = String::from("code,name,list_size,page_id,page_kind\n");
        for p in world.practices.iter().filter(|p| p.tenant == ti) {
            let (page, kind) =
                p.page.map(|i| (world.pages[i].id.as_str(), world.pages[i].kind.as_str())).unwrap_or(("", ""));
            let _ = writeln!(csv, "{},{},{},{page},{kind}", p.code, p.name, p.list_size);
        }
        std::fs::write(dir.join(&csv_name), csv)?;
        let _ =
            writeln!(toml, "[[tenant]]\nid = \"{}\"\nname = \"{}\"\npractices_csv = \"{csv_name}\"\n", t.id, t.name);
    }
    let path = dir.join("pulse.toml");
    std::fs::write(&path, toml)?;
    Ok(path)
}

pub async fn run(args: DemoArgs) -> Result<ExitCode> {
    let started = Instant::now();
    let scenario = scenario::resolve(&args.scenario)?;
    let world = World::new(scenario, None);
    let name = world.scenario.world.name.clone();
    let (version, start, end) = (world.api_version(), world.start(), world.end());
    let access = Access::operator(world.tenants.iter().map(|t| t.id.clone()));
    let mut targets = Vec::new();
    for p in &world.pages {
        let practice = &world.practices[p.practice];
        targets.push(Target {
            scope: access.write_scope(world.tenants[practice.tenant].id.as_str())?,
            practice: practice.code.clone(),
            page: p.id.parse()?,
            token: Secret::new(p.token.clone()),
        });
    }
    println!(
        "Practice Pulse demo: scenario `{name}`: {} tenants, {} practices, {} with a Facebook page; Graph API {version}; data {start} to {end}",
        world.tenants.len(),
        world.practices.len(),
        world.pages.len()
    );
    std::fs::create_dir_all(&args.dir).with_context(|| format!("creating {}", args.dir.display()))?;
    let config_path = write_demo_config(&world, &args.dir)?;
    let sim = Arc::new(Sim::new(world, None));
    let today = sim.today();
    let running = pulse_sim::start(sim, 0).await.context("starting the simulator on a loopback port")?;
    println!("simulator: {} (in-process, simulated today {today})", running.url());

    let store = LakeStore::open(&args.dir)?;
    store.migrate().await?;
    let mut opts = IngestOptions::new(PlanOptions {
        version,
        today,
        backfill_from: start,
        lookback_days: 3,
        post_snapshot_days: 28,
    });
    opts.concurrency = args.concurrency.max(1);
    let client = GraphClient::new(&running.url(), version, None, Duration::from_secs(60))?;
    let (report, _) = Ingester::new(store.clone(), client, opts).run(targets).await?;
    print_summary(&report);
    drop(running);

    // The pipelines, through the same path as `pulse jobs run --config <dir>/pulse.toml`.
    let config = pulse_config::load(&config_path)?;
    let to = end;
    let from = to - chrono::Duration::days(364);
    let request = pulse_app::jobs::JobsRequest {
        from: Some(from),
        to: Some(to),
        variant: Some("main".into()),
        ..Default::default()
    };
    let results = pulse_app::jobs::run_on(&store, &config, &request).await?;
    let jobs_failed = super::jobs::print(&results) != ExitCode::SUCCESS;
    println!();
    println!(
        "store: {} (Parquet, Hive-partitioned: <dataset>/tenant=<id>/month=<YYYY-MM>/data.parquet; reports under reports/)",
        store.describe()
    );
    println!(
        "explore: pulse report reach --config {} --tenant {}   (also age-bands, campaigns, posts, quality; --format csv|json|parquet)",
        config_path.display(),
        config.tenants[0].id
    );
    println!("done in {:.1}s; run it again for an incremental update", started.elapsed().as_secs_f64());
    if jobs_failed {
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::from(pulse_app::ingest::Outcome::of(&report, false).exit_code()))
}

fn print_summary(report: &RunReport) {
    let secs = (report.finished_at - report.started_at).num_milliseconds().max(1) as f64 / 1000.0;
    let retries: u64 = report.practices.iter().map(|p| p.record.retries).sum();
    println!(
        "ingest: {} requests ({:.1} MB), {} rows written in {secs:.1}s ({} rows/s), {retries} retries",
        thousands(report.requests),
        report.bytes as f64 / 1e6,
        thousands(report.rows_written),
        thousands((report.rows_written as f64 / secs) as u64)
    );
    let mut tenants: std::collections::BTreeMap<&str, (usize, u64)> = std::collections::BTreeMap::new();
    for p in &report.practices {
        let e = tenants.entry(&p.tenant).or_default();
        e.0 += 1;
        e.1 += p.record.rows_written;
    }
    for (tenant, (practices, rows)) in tenants {
        println!("  {tenant:<16} {practices:>4} practices with pages  {:>12} rows", thousands(rows));
    }
    for r in &report.reauth {
        println!("  NEEDS RE-AUTHORISATION: {}", r.message);
    }
    for f in &report.failures {
        println!("  FAILED: page {} ({}): {}", f.page, f.stream, f.message);
    }
}
