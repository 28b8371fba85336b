//! The demo: the whole pipeline on the simulator, with nothing to install. The simulator starts in-process, every
//! practice's insights are ingested into the embedded lake, the pipelines run, and the headline figures are told.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use pulse_config::Secret;
use pulse_ingest::{GraphClient, IngestOptions, Ingester, PlanOptions, RunReport, Target};
use pulse_sim::{Sim, World, scenario};
use pulse_store::Store;
use pulse_store::lake::LakeStore;

/// What to run.
#[derive(Debug, Clone)]
pub struct DemoRequest {
    /// Directory of the embedded lake (created if missing).
    pub dir: PathBuf,
    /// Scenario to simulate: case-study, current, national, or a TOML file.
    pub scenario: String,
    /// HTTP calls in flight.
    pub concurrency: usize,
}

/// The secrets file `write_config` puts the simulator's page tokens in (git ignores `*.secrets.toml`).
pub const SIM_TOKENS: &str = "sim-tokens.secrets.toml";

fn thousands(n: u64) -> String {
    pulse_app::text::thousands(n as f64)
}

/// A config describing the simulated world, over a lake in `dir`. Without `graph_url` it is for reports and jobs
/// (`pulse demo` writes it; the simulator is gone afterwards). With the URL of a running simulator, every page gets
/// its token from a git-ignored secrets file beside it, so `pulse ingest --config <dir>/pulse.toml` works against it
/// (`pulse sim --config-out <dir>`).
pub fn write_config(world: &World, dir: &std::path::Path, graph_url: Option<&str>) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut toml = match graph_url {
        None => String::from(
            "# Written by `pulse demo`: the simulated world's tenants and practices, over the lake in this directory.\n\
             # Pages have no tokens here (the simulator that issued them is gone); use it for reports and jobs.\n\
             [store]\nbackend = \"lake\"\nlake_dir = \".\"\n\n",
        ),
        Some(_) => String::from(
            "# Written by `pulse sim --config-out`: the simulated world, its pages and their tokens (in\n\
             # sim-tokens.secrets.toml, git-ignored), for `pulse ingest` against the running simulator.\n\
             [store]\nbackend = \"lake\"\nlake_dir = \".\"\n\n",
        ),
    };
    match graph_url {
        None => {
            let _ = writeln!(toml, "[graph]\nversion = \"{}\"\n", world.api_version());
        }
        Some(url) => {
            let _ = writeln!(toml, "[graph]\nbase_url = \"{url}\"\nversion = \"{}\"\n", world.api_version());
            let tokens: String = world.pages.iter().map(|p| format!("\"{}\" = \"{}\"\n", p.id, p.token)).collect();
            std::fs::write(dir.join(SIM_TOKENS), tokens)?;
        }
    }
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
        if graph_url.is_some() {
            let _ = writeln!(toml, "[[tenant]]\nid = \"{}\"\nname = \"{}\"\n", t.id, t.name);
            for p in world.practices.iter().filter(|p| p.tenant == ti) {
                let _ = writeln!(toml, "[[tenant.practice]]\ncode = \"{}\"\nname = \"{}\"", p.code, p.name);
                if let Some(i) = p.page {
                    let page = &world.pages[i];
                    let _ = writeln!(
                        toml,
                        "[[tenant.practice.page]]\nid = \"{}\"\nkind = \"{}\"\ntoken = {{ file = \"{SIM_TOKENS}\", key = \"{}\" }}",
                        page.id,
                        page.kind.as_str(),
                        page.id
                    );
                }
                toml.push('\n');
            }
            continue;
        }
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

/// Runs the demo, telling `say` what happens as it happens; returns the exit code (0 clean, 1 a tenant's jobs
/// failed, else the ingest outcome's).
pub async fn run(args: &DemoRequest, say: &mut dyn FnMut(&str)) -> Result<u8> {
    let started = Instant::now();
    let scenario = scenario::resolve(&args.scenario)?;
    let world = World::new(scenario, None);
    let name = world.scenario.world.name.clone();
    let (version, start, end) = (world.api_version(), world.start(), world.end());
    say(&format!(
        "Practice Pulse demo: scenario `{name}`: {} tenants, {} practices, {} with a Facebook page; Graph API {version}; data {start} to {end}",
        world.tenants.len(),
        world.practices.len(),
        world.pages.len()
    ));
    std::fs::create_dir_all(&args.dir).with_context(|| format!("creating {}", args.dir.display()))?;
    let config_path = write_config(&world, &args.dir, None)?;
    // The ingest runs as the operator of the config just written, as `pulse ingest` would.
    let access = pulse_config::load(&config_path)?.operator_access();
    let targets = world
        .page_logins()
        .into_iter()
        .map(|l| Target::new(&access, l.tenant.as_str(), l.practice, &l.page, Secret::new(l.token)))
        .collect::<Result<Vec<_>, _>>()?;
    let sim = Arc::new(Sim::new(world, None));
    let today = sim.today();
    let running = pulse_sim::start(sim, 0).await.context("starting the simulator on a loopback port")?;
    say(&format!("simulator: {} (in-process, simulated today {today})", running.url()));

    let store = LakeStore::open(&args.dir)?;
    store.migrate().await?;
    let mut opts = IngestOptions::new(PlanOptions::backfill(version, today, start));
    opts.concurrency = args.concurrency.max(1);
    let client = GraphClient::new(&running.url(), version, None, Duration::from_secs(60))?;
    let (report, _) = Ingester::new(store.clone(), client, opts).run(targets).await?;
    print_summary(&report, say);
    drop(running);

    // The pipelines, through the same path as `pulse jobs run --config <dir>/pulse.toml`.
    let config = pulse_config::load(&config_path)?;
    // Over everything ingested: the reports keep all history.
    let request =
        pulse_app::jobs::JobsRequest { from: None, to: Some(end), variant: Some("main".into()), ..Default::default() };
    let results = pulse_app::jobs::run_on(&store, &config, &request).await?;
    let mut jobs_failed = false;
    for r in &results {
        match r {
            pulse_app::jobs::TenantJob::Done { summary, from, to } => {
                say(pulse_app::jobs::summary_text(summary, *from, *to).trim_end())
            }
            other => {
                jobs_failed = true;
                say(&format!("error: {}", other.problem().unwrap_or_default()));
            }
        }
    }
    say("");
    say(&format!(
        "store: {} (Parquet, Hive-partitioned: <dataset>/tenant=<id>/month=<YYYY-MM>/data.parquet, compacted after each run; reports under reports/)",
        store.describe()
    ));
    say(&format!(
        "explore: pulse report reach --config {} --tenant {}   (also age-bands, campaigns, posts, quality; --format csv|json|parquet)",
        config_path.display(),
        config.tenants[0].id
    ));
    say(&format!("done in {:.1}s; run it again for an incremental update", started.elapsed().as_secs_f64()));
    if jobs_failed {
        return Ok(1);
    }
    Ok(pulse_app::ingest::Outcome::of(&report, false).exit_code())
}

fn print_summary(report: &RunReport, say: &mut dyn FnMut(&str)) {
    let secs = (report.finished_at - report.started_at).num_milliseconds().max(1) as f64 / 1000.0;
    let retries: u64 = report.practices.iter().map(|p| p.record.retries).sum();
    say(&format!(
        "ingest: {} requests ({:.1} MB), {} rows written in {secs:.1}s ({} rows/s), {retries} retries",
        thousands(report.requests),
        report.bytes as f64 / 1e6,
        thousands(report.rows_written),
        thousands((report.rows_written as f64 / secs) as u64)
    ));
    let mut tenants: std::collections::BTreeMap<&str, (usize, u64)> = std::collections::BTreeMap::new();
    for p in &report.practices {
        let e = tenants.entry(&p.tenant).or_default();
        e.0 += 1;
        e.1 += p.record.rows_written;
    }
    for (tenant, (practices, rows)) in tenants {
        say(&format!("  {tenant:<16} {practices:>4} practices with pages  {:>12} rows", thousands(rows)));
    }
    for line in report.problems().lines() {
        say(&format!("  {line}"));
    }
}
