//! The schedules (`pulse run`'s jobs) and their journal: which jobs the config describes, what each run recorded, and
//! what is true of a job now (`pulse status`, the dashboard). The daemon that runs them is `pulse_digest::daemon`.
//!
//! The daemon's schedules: each tenant's incremental ingest followed by its pipelines, and each digest
//! list's weekly send, at the times `[scheduler]` gives in its time zone.
//!
//! - Every run is journalled (stream `schedule`, keyed by job): `started`, then `succeeded`, `failed`, `skipped` (another
//!   process holds the job) or `interrupted` (shut down mid-run). `pulse status` and the dashboard read these.
//! - A job runs under a lease in the store, renewed while it runs, so two daemons never run it at once; a crashed
//!   daemon's lease lapses (or is taken at once when its process is gone from this machine).
//! - Obligations: a run ends `succeeded`, or with `owed` set when something is still to do for its tick (a digest's
//!   recipients waiting for a retry or not reached, a week whose data has not arrived yet, a run skipped because
//!   another process held the job, a run cut off by shutdown or a crash). On start, a daemon runs the latest due tick
//!   of every job that still owes anything for it, whatever happened before (a restart, a crash, another daemon
//!   dying mid-run); while it runs, a skipped run is tried again until the lease is free (taken over when its holder
//!   lapses or its process is gone). A tick missed while the daemon was down is run once (the latest one, not one per
//!   missed tick), when the job has run before. Next times are computed from now in the zone, so DST changes move
//!   them correctly.
//! - On shutdown (SIGTERM, Ctrl-C) no new job starts; a digest in flight stops between recipients, an ingest is given a
//!   grace period and otherwise abandoned (its checkpoints never run ahead of stored data, so nothing is lost).

use std::time::Instant;

use chrono::{DateTime, Duration, Utc};
use pulse_config::Config;
use pulse_config::schedule::Schedule;
use pulse_config::{Access, TenantScope, WriteScope};
use pulse_store::{LeaseView, Store};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::error::{AppError, AppResult};

pub const STREAM: &str = "schedule";

/// The daemon's time: the machine's clock, or (for tests and rehearsals) a clock started at a given instant running
/// `speed` times faster than real time.
#[derive(Debug, Clone)]
pub struct Clock {
    real_start: Instant,
    start: DateTime<Utc>,
    speed: f64,
}

impl Clock {
    pub fn system() -> Self {
        Self { real_start: Instant::now(), start: Utc::now(), speed: 1.0 }
    }

    pub fn driven(start: DateTime<Utc>, speed: f64) -> Self {
        Self { real_start: Instant::now(), start, speed: speed.max(f64::MIN_POSITIVE) }
    }

    pub fn now(&self) -> DateTime<Utc> {
        let real = self.real_start.elapsed().as_secs_f64() * self.speed;
        self.start + Duration::microseconds((real * 1e6) as i64)
    }

    /// The time on this clock when the machine's clock reads `real` (leases expire in the machine's time).
    pub fn at_real(&self, real: DateTime<Utc>) -> DateTime<Utc> {
        let left = (real - Utc::now()).num_microseconds().unwrap_or(i64::MAX) as f64 * self.speed;
        self.now() + Duration::microseconds(left.clamp(-1e15, 1e15) as i64)
    }

    /// Sleeps until `t` on this clock, or until `stop` turns true; returns whether `t` was reached.
    pub async fn sleep_until(&self, t: DateTime<Utc>, stop: &mut watch::Receiver<bool>) -> bool {
        loop {
            if *stop.borrow() {
                return false;
            }
            let left = (t - self.now()).num_microseconds().unwrap_or(i64::MAX);
            if left <= 0 {
                return true;
            }
            let real = std::time::Duration::from_secs_f64((left as f64 / 1e6 / self.speed).min(60.0));
            tokio::select! {
                _ = tokio::time::sleep(real) => {}
                _ = stop.changed() => {}
            }
        }
    }
}

/// What a job does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Task {
    /// Incremental ingest of the tenant, then its pipelines.
    Ingest,
    /// The list's digest for the last whole week.
    Digest { list: String },
}

/// A scheduled job.
#[derive(Debug, Clone)]
pub struct Job {
    /// `ingest:<tenant>` or `digest:<list>`.
    pub name: String,
    pub tenant: String,
    pub task: Task,
    pub schedule: Schedule,
}

/// The jobs the config describes (an empty expression turns a kind off).
pub fn jobs(config: &Config) -> AppResult<Vec<Job>> {
    let tz = config.scheduler.tz();
    let parse = |e: &str| Schedule::new(e, tz).map_err(|m| AppError::bad_request(format!("schedule `{e}`: {m}")));
    let mut out = Vec::new();
    if !config.scheduler.ingest.trim().is_empty() {
        let s = parse(&config.scheduler.ingest)?;
        for t in &config.tenants {
            out.push(Job {
                name: format!("ingest:{}", t.id),
                tenant: t.id.to_string(),
                task: Task::Ingest,
                schedule: s.clone(),
            });
        }
    }
    if !config.scheduler.digest.trim().is_empty() {
        let s = parse(&config.scheduler.digest)?;
        for sub in &config.subscriptions {
            out.push(Job {
                name: format!("digest:{}", sub.name),
                tenant: sub.tenant.to_string(),
                task: Task::Digest { list: sub.name.clone() },
                schedule: s.clone(),
            });
        }
    }
    Ok(out)
}

/// One journalled step of a scheduled run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunStep {
    /// `started`, `succeeded`, `failed`, `skipped`, `interrupted`.
    pub state: String,
    /// The scheduled time this run is for.
    pub tick: DateTime<Utc>,
    pub run_id: String,
    /// Who ran it (`host:pid:uuid`).
    pub holder: String,
    pub detail: String,
    /// When the step happened on the daemon's clock.
    pub at: DateTime<Utc>,
    /// On a run's last step: something is still to do for this tick, so a daemon (re)started later runs it again.
    /// (`skipped`, `interrupted` and a `started` with no end always owe.)
    #[serde(default)]
    pub owed: bool,
}

impl RunStep {
    /// Whether this step, the last of its tick, leaves work owed.
    fn leaves_owed(&self) -> bool {
        match self.state.as_str() {
            "succeeded" => false,
            "failed" => self.owed,
            _ => true,
        }
    }
}

/// What a job is doing, or did, for its latest tick, told from the whole journal (not from whichever row is last).
#[derive(Debug, Clone, PartialEq)]
pub struct RunTruth {
    /// `succeeded`, `failed`, `owed` (still to do: waiting, skipped or cut off), `running`, or `cut off` (its process
    /// stopped mid-run and no run has picked it up yet).
    pub state: String,
    pub tick: DateTime<Utc>,
    pub detail: String,
}

/// The runs of `tick` in the order they began, each as (its first step, its last step).
fn runs_of(steps: &[RunStep], tick: DateTime<Utc>) -> Vec<(&RunStep, &RunStep)> {
    let mut runs: Vec<(&RunStep, &RunStep)> = Vec::new();
    for s in steps.iter().filter(|s| s.tick == tick) {
        match runs.iter_mut().find(|(first, _)| first.run_id == s.run_id) {
            Some(r) => r.1 = s,
            None => runs.push((s, s)),
        }
    }
    runs
}

/// The truth about `steps`' latest tick: a success by any run settles it; otherwise the latest run decides: its own
/// end, or, for a run with no end, whether its process is still there.
pub fn truth(steps: &[RunStep]) -> Option<RunTruth> {
    truth_with(steps, &LeaseView::Unknown)
}

/// [`truth`], knowing who holds the job's lease now (from a coordination service): a run started on another host
/// is running while its holder has the lease, and cut off once it has not.
pub fn truth_with(steps: &[RunStep], lease: &LeaseView) -> Option<RunTruth> {
    let tick = steps.iter().map(|s| s.tick).max()?;
    let runs = runs_of(steps, tick);
    if let Some((_, ok)) = runs.iter().rev().find(|(_, last)| last.state == "succeeded") {
        return Some(RunTruth { state: "succeeded".into(), tick, detail: ok.detail.clone() });
    }
    // The latest run that did something (a `skipped` after a run still going says nothing about it).
    let decisive = runs.iter().rev().find(|(_, last)| last.state != "skipped").or(runs.last()).map(|r| r.1)?;
    let (state, detail) = match decisive.state.as_str() {
        "started" if pulse_domain::holder_exited(&decisive.holder) => (
            "cut off",
            format!(
                "run {} by {} stopped mid-run (its process is gone); the next daemon to start runs what is owed",
                decisive.run_id, decisive.holder
            ),
        ),
        "started" if decisive.holder.split(':').next() == Some(pulse_domain::this_host().as_str()) => {
            ("running", format!("run {} by {}", decisive.run_id, decisive.holder))
        }
        "started" if matches!(lease, LeaseView::Held(l) if l.holder == decisive.holder) => {
            ("running", format!("run {} by {} (it holds the lease)", decisive.run_id, decisive.holder))
        }
        "started" if lease != &LeaseView::Unknown => (
            "cut off",
            format!(
                "run {} by {} stopped mid-run (its lease has ended with its process); the next daemon runs what is \
                 owed",
                decisive.run_id, decisive.holder
            ),
        ),
        "started" => (
            "started",
            format!(
                "run {} by {} on another machine: running, or cut off if that daemon died (its lease then lapses and \
                 the next daemon runs what is owed)",
                decisive.run_id, decisive.holder
            ),
        ),
        "failed" if !decisive.owed => ("failed", decisive.detail.clone()),
        "failed" | "skipped" | "interrupted" => ("owed", format!("{}: {}", decisive.state, decisive.detail)),
        other => (other, decisive.detail.clone()),
    };
    Some(RunTruth { state: state.to_owned(), tick, detail })
}

/// A job's state for `pulse status` and the dashboard.
#[derive(Debug, Clone, PartialEq)]
pub struct JobStatus {
    pub job: String,
    pub tenant: String,
    pub schedule: String,
    pub timezone: String,
    /// The latest step of the latest run.
    pub last: Option<RunStep>,
    /// What the latest tick's runs add up to.
    pub truth: Option<RunTruth>,
    /// The last run that finished well.
    pub last_success: Option<DateTime<Utc>>,
    pub next: Option<DateTime<Utc>>,
}

/// The scope a job runs in: its tenant, checked against the deployment's config.
pub fn scope_of(config: &Config, job: &Job) -> AppResult<WriteScope> {
    Ok(config.operator_access().write_scope(&job.tenant)?)
}

pub async fn steps<S: Store>(store: &S, scope: &TenantScope, job: &str) -> AppResult<Vec<RunStep>> {
    Ok(store
        .read_state(scope, STREAM)
        .await?
        .into_iter()
        .filter(|e| e.key == job)
        .filter_map(|e| serde_json::from_str::<RunStep>(&e.body).ok())
        .collect())
}

/// Every job's last run and next time, for `access`'s tenants.
pub async fn status<S: Store>(
    store: &S,
    config: &Config,
    access: &Access,
    now: DateTime<Utc>,
) -> AppResult<Vec<JobStatus>> {
    let mut out = Vec::new();
    for job in jobs(config)? {
        let Ok(scope) = access.scope(&job.tenant) else { continue };
        let steps = steps(store, &scope, &job.name).await?;
        // Only a run with no end on another host needs the lease's word (a coordination service may be asked).
        let lease = match truth(&steps) {
            Some(t) if t.state == "started" => store.lease_holder(&scope, &job.name).await.unwrap_or_else(|e| {
                tracing::warn!(job = %job.name, error = %e, "cannot ask who holds the lease; status from the journal only");
                LeaseView::Unknown
            }),
            _ => LeaseView::Unknown,
        };
        out.push(JobStatus {
            job: job.name.clone(),
            tenant: job.tenant.clone(),
            schedule: job.schedule.expression.clone(),
            timezone: config.scheduler.timezone.clone(),
            last: steps.last().cloned(),
            truth: truth_with(&steps, &lease),
            last_success: steps.iter().rev().find(|s| s.state == "succeeded").map(|s| s.at),
            next: job.schedule.next_after(now),
        });
    }
    Ok(out)
}

/// Why the job still owes its run for `due` (its latest due tick), or `None` when nothing is owed: a tick after the
/// last one journalled was missed (when the job has run before); for the tick itself, nothing is owed once a run
/// succeeded or ended with nothing left to do, and everything else (a run cut off, skipped, interrupted, or failed
/// with recipients or data still to wait for) is owed.
pub fn owing(steps: &[RunStep], due: Option<DateTime<Utc>>) -> Option<&'static str> {
    let due = due?;
    let last_tick = steps.iter().map(|s| s.tick).max()?;
    if due > last_tick {
        return Some("was missed");
    }
    if due < last_tick {
        return None;
    }
    let runs = runs_of(steps, due);
    if runs.iter().any(|(_, last)| last.state == "succeeded") {
        return None;
    }
    // The latest run decides (a later run that ended with nothing left to do settles an earlier one cut off); a
    // `skipped` stamped after a run that never ended (its process died) does not hide that run.
    let decisive = runs.iter().rev().find(|(_, last)| last.state != "skipped").or(runs.last()).map(|r| r.1)?;
    if decisive.state == "started" {
        return Some("was cut off mid-run");
    }
    let last = runs.last().map(|r| r.1)?;
    if last.state == "skipped" && decisive.leaves_owed() {
        return Some("was skipped while another process held it");
    }
    decisive.leaves_owed().then_some(match decisive.state.as_str() {
        "interrupted" => "was interrupted",
        "skipped" => "was skipped while another process held it",
        _ => "still owes recipients or is waiting for data",
    })
}

/// A time as the schedule's zone shows it.
pub fn local(config: &Config, t: DateTime<Utc>) -> String {
    t.with_timezone(&config.scheduler.tz()).format("%a %Y-%m-%d %H:%M %Z").to_string()
}
