//! The daemon's schedules (`pulse run`): each tenant's incremental ingest followed by its pipelines, and each digest
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

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use chrono::{DateTime, Duration, Utc};
use pulse_config::Config;
use pulse_config::schedule::Schedule;
use pulse_domain::{Access, StateEvent, TenantScope, WriteScope};
use pulse_store::{LeaseOutcome, LeaseView, Store};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tracing::Instrument;

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

    /// The first tick each job waits for: its latest due tick when anything is still owed for it (run at once), or
    /// the next one after now.
    async fn first_ticks(&self, jobs: &[Job], observer: &dyn Observer) -> AppResult<Vec<Option<DateTime<Utc>>>> {
        let now = self.clock.now();
        let mut out = Vec::new();
        for job in jobs {
            let scope = scope_of(job)?;
            let done = steps(&self.store, &scope, &job.name).await?;
            match (job.schedule.last_at_or_before(now), owing(&done, job.schedule.last_at_or_before(now))) {
                // `catch_up = false` turns off running missed ticks, never finishing what a tick still owes.
                (Some(due), Some(why)) if self.config.scheduler.catch_up || why != "was missed" => {
                    observer.event(&format!(
                        "{}: the run due {} {why}; running it now (once)",
                        job.name,
                        local(&self.config, due)
                    ));
                    out.push(Some(due));
                }
                _ => out.push(job.schedule.next_after(now)),
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
            // A failure around the run (the store or the lease service unreachable when journalling or taking the
            // lease) does not end the daemon: the tick stays owed and is tried again in a few minutes.
            let (interrupted, retry_at) = match self.run_job(job, tick, &mut stop, observer).await {
                Ok(r) => r,
                Err(e) => {
                    observer.event(&format!(
                        "{}: could not run: {}; trying again in {RETRY_OWED_MINUTES} min",
                        job.name, e.message
                    ));
                    (false, Some(self.clock.now() + Duration::minutes(RETRY_OWED_MINUTES)))
                }
            };
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
            owed: state != "succeeded",
        };
        let ttl = std::time::Duration::from_secs(u64::from(self.config.scheduler.lease_minutes) * 60);
        let asked = tokio::time::Instant::now();
        match self.store.try_lease(&scope, &job.name, &self.holder, ttl).await? {
            LeaseOutcome::HeldBy(l) => {
                let why = format!(
                    "another process ({}) is running it, until {} at the latest",
                    l.holder,
                    l.expires_at.format("%H:%M:%S UTC")
                );
                // Owed until the lease is free: tried again when it lapses, or sooner (a minute on this clock) in
                // case its holder's process is gone. One `skipped` per tick is journalled, not one per try.
                let retry = (self.clock.at_real(l.expires_at) + Duration::seconds(1))
                    .min(self.clock.now() + Duration::minutes(1));
                let journalled = steps(&self.store, scope.read(), &job.name)
                    .await?
                    .iter()
                    .any(|s| s.tick == tick && s.state == "skipped" && s.holder == self.holder);
                if !journalled {
                    observer.event(&format!("{}: skipped: {why}; trying again when it is free", job.name));
                    self.record(&scope, job, step("skipped", why)).await?;
                }
                return Ok((false, Some(retry)));
            }
            LeaseOutcome::Acquired(_) => {}
        }
        let kind = match job.task {
            Task::Ingest => "ingest",
            Task::Digest { .. } => "digest",
        };
        let lease_held = metrics::gauge!("pulse_scheduler_lease_held", "job" => job.name.clone());
        lease_held.set(1.0);
        self.record(&scope, job, step("started", String::new())).await?;
        observer.event(&format!("{}: started run {run_id} for {}", job.name, local(&self.config, tick)));
        let started = Instant::now();
        // Renew the lease while the job runs; losing it halts the job before its next recipient.
        let halt = Arc::new(AtomicBool::new(false));
        let renew = delivery::keep_lease(&self.store, &scope, &job.name, &self.holder, ttl, asked, halt.clone());
        let span = tracing::info_span!("scheduled_run", job = %job.name, tenant = %job.tenant, run_id = %run_id);
        let work = self.work(job, tick, halt.clone()).instrument(span);
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
        let mut owed = true;
        let (state, detail) = match result {
            Some(Ok(Done { ok: true, detail, .. })) => ("succeeded", detail),
            Some(Ok(Done { ok: false, detail, retry_at: r, owed: o })) => {
                retry_at = r;
                owed = o;
                ("failed", detail)
            }
            Some(Err(e)) => ("failed", e.message),
            None => (
                "interrupted",
                "stopped by shutdown before it finished; the next daemon to start runs what is owed".into(),
            ),
        };
        let state = if interrupted && state != "succeeded" { "interrupted" } else { state };
        // Owed with no time of its own (an error: the store or the mail server unreachable; a sender halted): tried
        // again in a few minutes while this daemon runs, not left for a restart.
        if state == "failed" && owed && retry_at.is_none() {
            retry_at = Some(self.clock.now() + Duration::minutes(RETRY_OWED_MINUTES));
        }
        observer.event(&format!("{}: {state} in {secs:.1}s: {detail}", job.name));
        metrics::counter!("pulse_scheduler_runs_total", "kind" => kind, "state" => state).increment(1);
        metrics::histogram!("pulse_scheduler_run_duration_seconds", "kind" => kind).record(secs);
        let mut end = step(state, detail);
        end.owed = state == "interrupted" || (state == "failed" && owed);
        self.record(&scope, job, end).await?;
        let released = self.store.release_lease(&scope, &job.name, &self.holder).await;
        lease_held.set(0.0);
        released?;
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
                        return Ok(Done { ok: false, detail, retry_at: None, owed: false });
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
                    Ok(Done { ok: run.outcome == crate::ingest::Outcome::Clean, detail, retry_at: None, owed: false })
                } else {
                    Ok(Done {
                        ok: false,
                        detail: format!("{detail}; pipelines: {}", problems.join("; ")),
                        retry_at: None,
                        owed: false,
                    })
                }
            }
            Task::Digest { list } => {
                let Some(mailer) = &self.mailer else {
                    return Ok(Done {
                        ok: false,
                        detail: "no [smtp] section: digests cannot be sent".into(),
                        retry_at: None,
                        owed: false,
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
                    superseded: Some(delivery::next_digest_due(&self.config, week)),
                };
                let out = delivery::send_list(&self.store, &self.config, mailer, &request, &halt).await?;
                if (out.no_data || out.incomplete) && !waited_long {
                    let retry_at = now + Duration::hours(1);
                    let detail =
                        format!("{}; waiting for it, next try {}", out.summary(), local(&self.config, retry_at));
                    return Ok(Done { ok: false, detail, retry_at: Some(retry_at), owed: true });
                }
                if out.no_data {
                    // Past the wait and still no figures for the week (ingest down since Sunday): still owed, and
                    // tried every six hours (`pulse status` shows it owed) until there is something to send.
                    let retry_at = now + Duration::hours(6);
                    let detail = format!("{}; still owed, next try {}", out.summary(), local(&self.config, retry_at));
                    return Ok(Done { ok: false, detail, retry_at: Some(retry_at), owed: true });
                }
                let retry_at = out.waiting.iter().map(|w| w.1).min();
                let owed = !out.waiting.is_empty() || !out.not_reached.is_empty();
                Ok(Done { ok: out.clean() && !out.no_data, detail: out.summary(), retry_at, owed })
            }
        }
    }
}

/// How soon a run that failed owing something, with no retry time of its own, is tried again.
const RETRY_OWED_MINUTES: i64 = 5;

/// How long a digest waits for its week to be complete in the data before it goes out with what there is.
const WAIT_FOR_DATA_HOURS: i64 = 12;

/// How a job's work ended.
struct Done {
    ok: bool,
    detail: String,
    retry_at: Option<DateTime<Utc>>,
    /// Something is still to do for this tick (a retry, a wait for data, recipients not reached).
    owed: bool,
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
