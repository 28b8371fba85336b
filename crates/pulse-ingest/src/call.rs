//! One Graph call with the rate budget, bounded concurrency and retries, and what a failed stream tells the user.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;

use pulse_graph::ErrorClass;

use crate::client::CallError;
use crate::executor::{PageCtx, Shared};
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
            f().await
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
                        continue;
                    }
                    return Err(e);
                }
                attempt += 1;
                if !e.is_retryable() || attempt >= retry.max_attempts {
                    return Err(e);
                }
                ctx.counters.retries.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(attempt, error = %e, "retrying");
                retry.sleep(retry.backoff(attempt - 1, jitter())).await;
            }
        }
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
