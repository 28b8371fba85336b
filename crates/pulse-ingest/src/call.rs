//! One Graph call with the rate budget, bounded concurrency and retries, and what a failed stream tells the user.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;

use pulse_graph::ErrorClass;
use tracing::Instrument;

use crate::client::CallError;
use crate::context::{PageCtx, Shared};
use crate::parse;
use crate::retry::jitter;
use crate::summary::{Failure, FailureKind, Reauth};

pub(crate) type BoxFut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One call with the rate budget, bounded concurrency and retries. `f` does the request and the parsing; what it
/// returns decides whether a retry can help ([`CallError::is_retryable`]).
pub(crate) async fn call<T, F>(shared: &Shared, ctx: &PageCtx, f: F) -> Result<T, CallError>
where
    F: Fn() -> BoxFut<'static, Result<(T, usize, pulse_graph::Usage), CallError>> + Send + Sync,
{
    let page = ctx.target.page.as_str();
    let retry = &shared.opts.retry;
    let mut attempt = 0;
    let mut throttle_waits = 0;
    loop {
        let wait = shared.budget.wait_before(page);
        if !wait.is_zero() {
            ctx.counters.throttled_ms.fetch_add(wait.as_millis() as u64, Ordering::Relaxed);
            retry.sleep(wait).await;
        }
        if shared.stop.load(Ordering::Relaxed) {
            return Err(CallError::Stopped);
        }
        let result = {
            let _permit = shared.semaphore.acquire().await.expect("semaphore open");
            // Meta may have throttled the app or this page while the call waited for its turn: a call made while
            // throttled extends the lockout, so look again before calling.
            if !shared.budget.paused_for(page).is_zero() {
                continue;
            }
            ctx.counters.requests.fetch_add(1, Ordering::Relaxed);
            let started = std::time::Instant::now();
            let span = tracing::debug_span!("graph_call", attempt = attempt + throttle_waits + 1);
            let result = f().instrument(span).await;
            metrics::histogram!("pulse_graph_request_duration_seconds").record(started.elapsed().as_secs_f64());
            metrics::counter!("pulse_graph_requests_total", "outcome" => outcome(&result)).increment(1);
            result
        };
        match result {
            Ok((value, bytes, usage)) => {
                shared.budget.observe(&usage);
                ctx.counters.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
                return Ok(value);
            }
            Err(e) => {
                if let Some(u) = e.usage() {
                    shared.budget.observe(u);
                }
                if let CallError::Graph { class: ErrorClass::Throttled, error, usage } = &e {
                    throttle_waits += 1;
                    let pause = shared.budget.throttled(page, error.code, usage);
                    tracing::debug!(code = error.code, pause_ms = pause.as_millis() as u64, "throttled");
                    if throttle_waits <= 30 {
                        ctx.counters.retries.fetch_add(1, Ordering::Relaxed);
                        metrics::counter!("pulse_graph_retries_total", "after" => "throttled").increment(1);
                        continue;
                    }
                    return Err(e);
                }
                attempt += 1;
                if !e.is_retryable() || attempt >= retry.max_attempts {
                    return Err(e);
                }
                ctx.counters.retries.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("pulse_graph_retries_total", "after" => "error").increment(1);
                tracing::debug!(attempt, error = %e, "retrying");
                retry.sleep(retry.backoff(attempt - 1, jitter())).await;
            }
        }
    }
}

/// A call's outcome as `pulse_graph_requests_total` labels it.
fn outcome<T>(result: &Result<T, CallError>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(CallError::Graph { class: ErrorClass::Throttled, .. }) => "throttled",
        Err(CallError::Graph { class: ErrorClass::TokenDead, .. }) => "token",
        Err(CallError::Graph { class: ErrorClass::Transient, .. }) => "transient",
        Err(CallError::Graph { .. }) => "refused",
        Err(CallError::Network { .. }) => "unreachable",
        Err(CallError::Malformed { .. }) => "malformed",
        Err(CallError::Stopped) => "stopped",
    }
}

/// A body that arrived whole but cannot be placed (an `end_time` that is not a Pacific midnight, a value of the wrong
/// kind): asking again gets the same body, so it is not retried.
pub(crate) fn parse_failed(bytes: usize, e: parse::ParseError) -> CallError {
    CallError::Malformed { status: 200, bytes, reason: e.0, retryable: false }
}

/// Records why a page stream stopped: a dead token marks the page for re-authorisation, anything else is a failure.
pub(crate) fn report_failure(shared: &Shared, ctx: &PageCtx, stream: &str, e: &CallError) {
    if matches!(e, CallError::Stopped) {
        return; // the run is stopping for another reason, already reported
    }
    ctx.counters.errors.fetch_add(1, Ordering::Relaxed);
    let t = &ctx.target;
    if e.class() == Some(ErrorClass::TokenDead) {
        if !ctx.dead.swap(true, Ordering::Relaxed) {
            let (code, sub) = match e {
                CallError::Graph { error, .. } => {
                    (error.code, error.error_subcode.map(|s| format!("/{s}")).unwrap_or_default())
                }
                _ => (190, String::new()),
            };
            let why = match sub.as_str() {
                "/463" => "expired",
                "/460" => "invalidated by a password change",
                _ => "rejected",
            };
            let message = format!(
                "page {} (practice {}, tenant {}): access token rejected (code {code}{sub}, {why}); re-authorise the page and run again",
                t.page, t.practice, t.scope
            );
            tracing::warn!(tenant = %t.scope, practice = %t.practice, page = %t.page, "{message}");
            shared.reauth.lock().expect("lock").push(Reauth {
                tenant: t.scope.to_string(),
                practice: t.practice.clone(),
                page: t.page.to_string(),
                message,
            });
        }
        return;
    }
    let unreachable = matches!(e, CallError::Network { .. });
    let advice = match e.class() {
        Some(ErrorClass::Permission) => {
            "; grant the page's token read_insights and pages_read_engagement, then run again"
        }
        Some(ErrorClass::BadRequest) => "; this request cannot succeed as sent: please report it",
        _ if matches!(e, CallError::Malformed { retryable: false, .. }) => {
            "; the response is not in the shape Meta documents, so asking again would not help: please report it"
        }
        _ => "; retries were exhausted: run again later (checkpoints keep what was stored)",
    };
    let message = format!("{e}{advice}");
    if unreachable {
        // One line for the whole run, not one per page: the summary says it once.
        if !shared.unreachable_logged.swap(true, Ordering::Relaxed) {
            tracing::error!("{message}");
        }
    } else {
        tracing::error!(tenant = %t.scope, practice = %t.practice, page = %t.page, stream = %stream, "{message}");
    }
    if e.class() == Some(ErrorClass::Permission) || unreachable {
        ctx.dead.store(true, Ordering::Relaxed);
    }
    shared.failures.lock().expect("lock").push(Failure {
        tenant: t.scope.to_string(),
        practice: t.practice.clone(),
        page: t.page.to_string(),
        stream: stream.to_owned(),
        kind: if unreachable { FailureKind::Unreachable } else { FailureKind::Refused },
        message: if unreachable { e.to_string() } else { message },
    });
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicU32};
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use chrono::{NaiveDate, Utc};

    use pulse_config::Secret;
    use pulse_domain::{ApiVersion, TenantId};
    use tokio::sync::Semaphore;

    use super::*;
    use crate::budget::RateBudget;
    use crate::client::GraphClient;
    use crate::context::{Counters, IngestOptions};
    use crate::parse::Origin;
    use crate::plan::{PlanOptions, Target};

    fn shared(pause: Duration) -> Arc<Shared> {
        let version = ApiVersion::new(25, 0);
        let day = NaiveDate::from_ymd_opt(2026, 11, 1).unwrap();
        Arc::new(Shared {
            client: GraphClient::new("http://127.0.0.1:9", version, None, Duration::from_secs(1)).unwrap(),
            opts: IngestOptions::new(PlanOptions::backfill(version, day, day)),
            budget: RateBudget::new(pause, Duration::ZERO),
            semaphore: Semaphore::new(1),
            retired: Mutex::default(),
            reauth: Mutex::default(),
            failures: Mutex::default(),
            stop: AtomicBool::new(false),
            unreachable_logged: AtomicBool::new(false),
            progress: indicatif::ProgressBar::hidden(),
        })
    }

    fn ctx() -> Arc<PageCtx> {
        let access = pulse_config::testing::operator([TenantId::new("alpha").unwrap()]);
        let target =
            Target::new(&access, "alpha", "M83001".parse().unwrap(), "1001", Secret::new("t".to_owned())).unwrap();
        let origin = Origin {
            practice: target.practice.clone(),
            page: target.page.clone(),
            version: ApiVersion::new(25, 0),
            fetched_at: Utc::now(),
        };
        Arc::new(PageCtx { target, origin, dead: AtomicBool::new(false), counters: Arc::new(Counters::default()) })
    }

    /// Meta's lockout grows with every call made while throttled: a call that passed the budget before the pause
    /// began, and then waited for its turn, must not go out until the pause is over.
    #[tokio::test]
    async fn a_call_waiting_for_its_turn_does_not_go_out_during_a_pause() {
        let pause = Duration::from_millis(400);
        let (shared, ctx) = (shared(pause), ctx());
        let made = Arc::new(AtomicU32::new(0));
        let busy = shared.semaphore.acquire().await.unwrap(); // another call is in flight
        let task = {
            let (shared, ctx, made) = (shared.clone(), ctx.clone(), made.clone());
            tokio::spawn(async move {
                let f = move || -> BoxFut<'static, _> {
                    let made = made.clone();
                    Box::pin(async move {
                        made.fetch_add(1, Ordering::SeqCst);
                        Ok(((), 0, pulse_graph::Usage::default()))
                    })
                };
                call(&shared, &ctx, f).await
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await; // the call is waiting for its turn
        let paused_at = Instant::now();
        shared.budget.throttled("1001", 4, &pulse_graph::Usage::default()); // the app is throttled meanwhile
        drop(busy);
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(made.load(Ordering::SeqCst), 0, "no call while the app is paused");
        task.await.unwrap().unwrap();
        assert_eq!(made.load(Ordering::SeqCst), 1);
        assert!(paused_at.elapsed() >= pause, "the call went out after the pause: {:?}", paused_at.elapsed());
    }
}
