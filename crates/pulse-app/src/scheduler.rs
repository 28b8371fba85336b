//! The daemon's schedules (`pulse run`): each tenant's incremental ingest followed by its pipelines, and each digest
//! list's weekly send, at the times `[scheduler]` gives in its time zone.
//!
//! - Every run is journalled (stream `schedule`, keyed by job): `started`, then `succeeded`, `failed`, `skipped` (another
//!   process holds the job) or `interrupted` (shut down mid-run). `pulse status` and the dashboard read these.
//! - A job runs under a lease in the store, renewed while it runs, so two daemons never run it at once; a crashed
//!   daemon's lease lapses (or is taken at once when its process is gone from this machine).
//! - After a restart, a tick missed while the daemon was down is run once (the latest one, not one per missed tick),
//!   when the job has run before. Next times are computed from now in the zone, so DST changes move them correctly.
//! - On shutdown (SIGTERM, Ctrl-C) no new job starts; a digest in flight stops between recipients, an ingest is given a
//!   grace period and otherwise abandoned (its checkpoints never run ahead of stored data, so nothing is lost).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use chrono::{DateTime, Duration, Utc};
use pulse_config::Config;
use pulse_config::schedule::Schedule;
use pulse_domain::{Access, StateEvent, TenantScope, WriteScope};
use pulse_store::{LeaseOutcome, Store};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::delivery;
use crate::digest;
use crate::error::{AppError, AppResult};
use crate::mail::Mailer;

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
    /// The last run that finished well.
    pub last_success: Option<DateTime<Utc>>,
    pub next: Option<DateTime<Utc>>,
}

fn scope_of(job: &Job) -> AppResult<WriteScope> {
    Ok(Access::operator([
        pulse_domain::TenantId::new(job.tenant.clone()).map_err(|e| AppError::bad_request(e.to_string()))?
    ])
    .write_scope(&job.tenant)?)
}

async fn steps<S: Store>(store: &S, scope: &TenantScope, job: &str) -> AppResult<Vec<RunStep>> {
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
        out.push(JobStatus {
            job: job.name.clone(),
            tenant: job.tenant.clone(),
            schedule: job.schedule.expression.clone(),
            timezone: config.scheduler.timezone.clone(),
            last: steps.last().cloned(),
            last_success: steps.iter().rev().find(|s| s.state == "succeeded").map(|s| s.at),
            next: job.schedule.next_after(now),
        });
    }
    Ok(out)
}

/// What happens while the daemon runs, for its log and its caller.
pub trait Observer: Send + Sync {
    fn event(&self, line: &str);
}

impl<F: Fn(&str) + Send + Sync> Observer for F {
    fn event(&self, line: &str) {
        self(line)
    }
}

/// The daemon: runs until `stop` turns true.
pub struct Daemon<S: Store + Clone + 'static> {
    pub store: S,
    pub config: Arc<Config>,
    pub clock: Clock,
    pub mailer: Option<Mailer>,
    pub holder: String,
    /// How long a job in flight may take to finish after shutdown is asked for.
    pub grace: std::time::Duration,
}

impl<S: Store + Clone + 'static> Daemon<S> {
    pub fn new(store: S, config: Arc<Config>, clock: Clock, mailer: Option<Mailer>) -> Self {
        Self {
            store,
            config,
            clock,
            mailer,
            holder: format!("{}:{}:{}", pulse_domain::this_host(), std::process::id(), uuid::Uuid::new_v4().simple()),
            grace: std::time::Duration::from_secs(20),
        }
    }

    /// The first tick each job waits for: a catch-up tick (run at once) or the next one after now.
    async fn first_ticks(&self, jobs: &[Job], observer: &dyn Observer) -> AppResult<Vec<Option<DateTime<Utc>>>> {
        let now = self.clock.now();
        let mut out = Vec::new();
        for job in jobs {
            let scope = scope_of(job)?;
            let done = steps(&self.store, &scope, &job.name).await?;
            let last_tick = done.iter().filter(|s| s.state != "started").map(|s| s.tick).max();
            let started_tick = done.iter().map(|s| s.tick).max();
            let due = job.schedule.last_at_or_before(now);
            let missed = match (due, last_tick.or(started_tick)) {
                (Some(due), Some(last)) => due > last || (started_tick == Some(due) && last_tick < Some(due)),
                _ => false,
            };
            if missed && self.config.scheduler.catch_up {
                observer.event(&format!(
                    "{}: the run due {} was missed; running it now (once)",
                    job.name,
                    local(&self.config, due.unwrap_or(now))
                ));
                out.push(due);
            } else {
                out.push(job.schedule.next_after(now));
            }
        }
        Ok(out)
    }

    /// Runs the schedules until `stop` turns true.
    pub async fn run(&self, mut stop: watch::Receiver<bool>, observer: &dyn Observer) -> AppResult<()> {
        let jobs = jobs(&self.config)?;
        if jobs.is_empty() {
            return Err(AppError::bad_request("nothing to schedule: no tenants, and no [[subscription]] lists")
                .with_hint(
                    "declare tenants (ingest) and [[subscription]] lists (digests), or set the [scheduler] times",
                ));
        }
        let mut next = self.first_ticks(&jobs, observer).await?;
        // A retry of a run's failed parts: (wake at, the tick it belongs to).
        let mut retry: Vec<Option<(DateTime<Utc>, DateTime<Utc>)>> = vec![None; jobs.len()];
        for (job, t) in jobs.iter().zip(&next) {
            observer.event(&format!("{}: next run {}", job.name, t.map_or("never".into(), |t| local(&self.config, t))));
        }
        loop {
            // (when, which job, the tick it runs for)
            let due = (0..jobs.len())
                .flat_map(|i| {
                    let scheduled = next[i].map(|t| (t, i, t));
                    let retried = retry[i].map(|(wake, tick)| (wake, i, tick));
                    [scheduled, retried]
                })
                .flatten()
                .min_by_key(|(wake, _, _)| *wake);
            let Some((wake, i, tick)) = due else {
                observer.event("no job has a next run; stopping");
                return Ok(());
            };
            if !self.clock.sleep_until(wake, &mut stop).await {
                observer.event("shutting down: no job in flight");
                return Ok(());
            }
            let job = &jobs[i];
            let is_retry = retry[i].is_some_and(|(w, _)| w == wake) && next[i] != Some(wake);
            let (interrupted, retry_at) = self.run_job(job, tick, &mut stop, observer).await?;
            retry[i] = retry_at.map(|at| (at, tick));
            if !is_retry {
                next[i] = job.schedule.next_after(tick.max(self.clock.now()));
            }
            if let Some(t) = next[i] {
                observer.event(&format!("{}: next run {}", job.name, local(&self.config, t)));
            }
            if interrupted || *stop.borrow() {
                observer.event("shutting down");
                return Ok(());
            }
        }
    }

    async fn record(&self, scope: &WriteScope, job: &Job, step: RunStep) -> AppResult<()> {
        let event = StateEvent {
            id: uuid::Uuid::new_v4().to_string(),
            stream: STREAM.into(),
            key: job.name.clone(),
            at: Utc::now(),
            body: serde_json::to_string(&step).unwrap_or_default(),
        };
        self.store.append_state(scope, &[event]).await?;
        Ok(())
    }

    /// Runs one job for `tick` under its lease; returns whether shutdown interrupted it, and when to retry the parts
    /// that failed (a digest's recipients whose mail server said "later").
    pub async fn run_job(
        &self,
        job: &Job,
        tick: DateTime<Utc>,
        stop: &mut watch::Receiver<bool>,
        observer: &dyn Observer,
    ) -> AppResult<(bool, Option<DateTime<Utc>>)> {
        let scope = scope_of(job)?;
        let run_id = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
        let step = |state: &str, detail: String| RunStep {
            state: state.into(),
            tick,
            run_id: run_id.clone(),
            holder: self.holder.clone(),
            detail,
            at: self.clock.now(),
        };
        let ttl = std::time::Duration::from_secs(u64::from(self.config.scheduler.lease_minutes) * 60);
        match self.store.try_lease(&scope, &job.name, &self.holder, ttl).await? {
            LeaseOutcome::HeldBy(l) => {
                let why = format!(
                    "another process ({}) is running it, until {} at the latest",
                    l.holder,
                    l.expires_at.format("%H:%M:%S UTC")
                );
                observer.event(&format!("{}: skipped: {why}", job.name));
                self.record(&scope, job, step("skipped", why)).await?;
                return Ok((false, None));
            }
            LeaseOutcome::Acquired(_) => {}
        }
        self.record(&scope, job, step("started", String::new())).await?;
        observer.event(&format!("{}: started run {run_id} for {}", job.name, local(&self.config, tick)));
        let started = Instant::now();
        // Renew the lease while the job runs.
        let renew = {
            let (store, scope, name, holder) =
                (self.store.clone(), scope.clone(), job.name.clone(), self.holder.clone());
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(ttl / 3).await;
                    if let Err(e) = store.try_lease(&scope, &name, &holder, ttl).await {
                        tracing::warn!(job = %name, error = %e, "renewing the job's lease failed");
                    }
                }
            })
        };
        let halt = Arc::new(AtomicBool::new(false));
        let work = self.work(job, tick, halt.clone());
        tokio::pin!(work);
        let (result, interrupted) = tokio::select! {
            r = &mut work => (Some(r), false),
            _ = stop.changed() => {
                observer.event(&format!("{}: shutdown asked; letting the run finish (up to {}s)", job.name, self.grace.as_secs()));
                halt.store(true, Ordering::SeqCst);
                match tokio::time::timeout(self.grace, &mut work).await {
                    Ok(r) => (Some(r), true),
                    Err(_) => (None, true),
                }
            }
        };
        renew.abort();
        let secs = started.elapsed().as_secs_f64();
        let mut retry_at = None;
        let (state, detail) = match result {
            Some(Ok(Done { ok: true, detail, .. })) => ("succeeded", detail),
            Some(Ok(Done { ok: false, detail, retry_at: r })) => {
                retry_at = r;
                ("failed", detail)
            }
            Some(Err(e)) => ("failed", e.message),
            None => (
                "interrupted",
                "stopped by shutdown before it finished; the next run picks up from the checkpoints".into(),
            ),
        };
        let state = if interrupted && state != "succeeded" { "interrupted" } else { state };
        observer.event(&format!("{}: {state} in {secs:.1}s: {detail}", job.name));
        self.record(&scope, job, step(state, detail)).await?;
        self.store.release_lease(&scope, &job.name, &self.holder).await?;
        Ok((interrupted, retry_at))
    }

    /// The job's work.
    async fn work(&self, job: &Job, tick: DateTime<Utc>, halt: Arc<AtomicBool>) -> AppResult<Done> {
        match &job.task {
            Task::Ingest => {
                let today = pulse_domain::pacific_today_at(self.clock.now());
                let request = crate::ingest::IngestRequest {
                    tenants: vec![job.tenant.clone()],
                    today: Some(today),
                    lookback_days: 3,
                    concurrency: 8,
                    ..crate::ingest::IngestRequest::default()
                };
                let run = crate::ingest::run(&self.config, &request, |_| {}).await?;
                let mut detail = run.closing().trim().replace('\n', "; ");
                if run.outcome != crate::ingest::Outcome::Clean {
                    if run.outcome == crate::ingest::Outcome::StoreUnavailable {
                        return Ok(Done { ok: false, detail, retry_at: None });
                    }
                    detail.push_str("; some pages failed (see `pulse report quality`)");
                }
                let jobs = crate::jobs::run(
                    &self.config,
                    &crate::jobs::JobsRequest { tenants: vec![job.tenant.clone()], ..Default::default() },
                )
                .await?;
                let problems: Vec<String> = jobs.iter().filter_map(|j| j.problem()).collect();
                if problems.is_empty() {
                    detail.push_str("; pipelines run");
                    Ok(Done { ok: run.outcome == crate::ingest::Outcome::Clean, detail, retry_at: None })
                } else {
                    Ok(Done {
                        ok: false,
                        detail: format!("{detail}; pipelines: {}", problems.join("; ")),
                        retry_at: None,
                    })
                }
            }
            Task::Digest { list } => {
                let Some(mailer) = &self.mailer else {
                    return Ok(Done {
                        ok: false,
                        detail: "no [smtp] section: digests cannot be sent".into(),
                        retry_at: None,
                    });
                };
                let local_day = tick.with_timezone(&self.config.scheduler.tz()).date_naive();
                let week = digest::last_whole_week(local_day);
                // Until the week is complete in the data (the daily ingest after Meta closes Sunday), wait and retry
                // hourly; after WAIT_FOR_DATA_HOURS, send what there is (the digest says which days are missing).
                let now = self.clock.now();
                let waited_long = now - tick >= Duration::hours(WAIT_FOR_DATA_HOURS);
                let request = delivery::SendRequest {
                    list: list.clone(),
                    week_end: week,
                    now,
                    resend_interrupted: false,
                    allow_incomplete: waited_long,
                };
                let out = delivery::send_list(&self.store, &self.config, mailer, &request, &halt).await?;
                if (out.no_data || out.incomplete) && !waited_long {
                    let retry_at = now + Duration::hours(1);
                    let detail =
                        format!("{}; waiting for it, next try {}", out.summary(), local(&self.config, retry_at));
                    return Ok(Done { ok: false, detail, retry_at: Some(retry_at) });
                }
                let retry_at = out.waiting.iter().map(|w| w.1).min();
                Ok(Done { ok: out.clean() && !out.no_data, detail: out.summary(), retry_at })
            }
        }
    }
}

/// How long a digest waits for its week to be complete in the data before it goes out with what there is.
const WAIT_FOR_DATA_HOURS: i64 = 12;

/// How a job's work ended.
struct Done {
    ok: bool,
    detail: String,
    retry_at: Option<DateTime<Utc>>,
}

/// A time as the schedule's zone shows it.
pub fn local(config: &Config, t: DateTime<Utc>) -> String {
    t.with_timezone(&config.scheduler.tz()).format("%a %Y-%m-%d %H:%M %Z").to_string()
}
