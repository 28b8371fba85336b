//! The daemon (`pulse run`): runs the schedules of [`pulse_app::scheduler`] (each tenant's incremental ingest and
//! pipelines, each list's weekly digest) under leases, journals every run, catches up what is owed after a restart,
//! and stops gracefully. What the journal means and how a job's status is read are in [`pulse_app::scheduler`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use chrono::{DateTime, Duration, Utc};
use pulse_app::error::{AppError, AppResult};
use pulse_app::scheduler::{Clock, Job, RunStep, STREAM, Task, jobs, local, owing, scope_of, steps};
use pulse_config::Config;
use pulse_config::WriteScope;
use pulse_domain::StateEvent;
use pulse_store::{LeaseOutcome, Store};
use tokio::sync::watch;
use tracing::Instrument;

use crate::delivery;
use crate::digest;
use crate::mail::Mailer;

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
            let scope = scope_of(&self.config, job)?;
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
        let scope = scope_of(&self.config, job)?;
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
        // 1 while this run holds the lease; back to 0 however the run ends (an early return included).
        let _lease_held = LeaseGauge::held(&job.name);
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
        self.store.release_lease(&scope, &job.name, &self.holder).await?;
        Ok((interrupted, retry_at))
    }

    /// The job's work.
    async fn work(&self, job: &Job, tick: DateTime<Utc>, halt: Arc<AtomicBool>) -> AppResult<Done> {
        match &job.task {
            Task::Ingest => {
                let today = pulse_domain::pacific_today_at(self.clock.now());
                let request = pulse_app::ingest::IngestRequest {
                    tenants: vec![job.tenant.clone()],
                    today: Some(today),
                    lookback_days: 3,
                    concurrency: 8,
                    ..pulse_app::ingest::IngestRequest::default()
                };
                let run = pulse_app::ingest::run(&self.config, &request, |_| {}).await?;
                let mut detail = run.closing().trim().replace('\n', "; ");
                // The daily token check (debug_token), when the Meta app is configured: a page that needs
                // re-authorisation gets an invitation, shown on the data-quality page and in the digest.
                if self.config.graph.app_id.is_some() && self.config.graph.app_secret.is_some() {
                    match pulse_app::health::check(
                        &self.store,
                        &self.config,
                        std::slice::from_ref(&job.tenant),
                        self.clock.now(),
                    )
                    .await
                    {
                        Ok(c) => {
                            let n = c.pages.iter().filter(|(_, h)| h.needs_attention()).count();
                            detail
                                .push_str(&format!("; {} token(s) checked, {n} need re-authorisation", c.pages.len()));
                        }
                        Err(e) => detail.push_str(&format!("; tokens not checked: {}", e.message)),
                    }
                }
                if run.outcome != pulse_app::ingest::Outcome::Clean {
                    if run.outcome == pulse_app::ingest::Outcome::StoreUnavailable {
                        return Ok(Done { ok: false, detail, retry_at: None, owed: false });
                    }
                    detail.push_str("; some pages failed (see `pulse report quality`)");
                }
                let jobs = pulse_app::jobs::run(
                    &self.config,
                    &pulse_app::jobs::JobsRequest { tenants: vec![job.tenant.clone()], ..Default::default() },
                )
                .await?;
                let problems: Vec<String> = jobs.iter().filter_map(|j| j.problem()).collect();
                if problems.is_empty() {
                    detail.push_str("; pipelines run");
                    Ok(Done {
                        ok: run.outcome == pulse_app::ingest::Outcome::Clean,
                        detail,
                        retry_at: None,
                        owed: false,
                    })
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

/// `pulse_scheduler_lease_held{job}`: set to 1 when made, to 0 when dropped.
struct LeaseGauge(metrics::Gauge);

impl LeaseGauge {
    fn held(job: &str) -> Self {
        let gauge = metrics::gauge!("pulse_scheduler_lease_held", "job" => job.to_owned());
        gauge.set(1.0);
        Self(gauge)
    }
}

impl Drop for LeaseGauge {
    fn drop(&mut self) {
        self.0.set(0.0);
    }
}
