//! Fault injection state: budgets, lockouts, dying tokens, retired metrics and per-request random faults.
//!
//! Random faults are decided from (seed, the request's canonical key, how many times that exact request has been
//! seen), so a run's faults do not depend on how requests from different pages interleave, and a retry gets a fresh
//! draw.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::rng::{Rng, text};
use crate::scenario::FaultSpec;

const T_FAULT: u64 = 100;
/// Calls per window that count as 100 % when no budget is set (usage headers still climb).
const NOMINAL_BUDGET: u32 = 4800;

#[derive(Debug, Default)]
struct Budget {
    window_start: Option<Instant>,
    calls: u32,
    locked_until: Option<Instant>,
}

impl Budget {
    /// Counts a call; returns the percentage used and, when locked out, the time left.
    fn call(
        &mut self,
        now: Instant,
        budget: Option<u32>,
        window: Duration,
        lockout: Duration,
    ) -> (u32, Option<Duration>) {
        if let Some(until) = self.locked_until {
            if now < until {
                // Calls made while throttled extend the lockout.
                let extended = until + lockout / 2;
                self.locked_until = Some(extended);
                return (100, Some(extended - now));
            }
            self.locked_until = None;
            self.window_start = Some(now);
            self.calls = 0;
        }
        if self.window_start.is_none_or(|s| now.duration_since(s) >= window) {
            self.window_start = Some(now);
            self.calls = 0;
        }
        self.calls += 1;
        let limit = budget.unwrap_or(NOMINAL_BUDGET).max(1);
        let percent = (self.calls as u64 * 100 / limit as u64) as u32;
        if budget.is_some() && self.calls > limit {
            self.locked_until = Some(now + lockout);
            return (100, Some(lockout));
        }
        (percent.min(99), None)
    }
}

/// What the fault layer decided for one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    AppThrottled { regain: Duration },
    PageThrottled { code: i64, regain: Duration },
    Transient { code: i64 },
    TokenDead { subcode: i64 },
    Permission,
}

/// How the body of a successful answer is damaged, if at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFault {
    None,
    Truncated,
    Malformed,
}

#[derive(Debug, Default)]
pub struct FaultState {
    app: Budget,
    pages: HashMap<usize, Budget>,
    page_calls: HashMap<usize, u32>,
    total_calls: u32,
    attempts: HashMap<u64, u32>,
}

/// The usage to report in headers.
#[derive(Debug, Clone, Copy, Default)]
pub struct UsageReport {
    pub app_percent: u32,
    pub page_percent: u32,
    pub regain_minutes: u32,
}

impl FaultState {
    /// Decides a call to `page` (if any) with canonical request key `request`.
    pub fn decide(
        &mut self,
        spec: &FaultSpec,
        seed: u64,
        page: Option<usize>,
        request: &str,
    ) -> (Verdict, BodyFault, u64, UsageReport) {
        let now = Instant::now();
        let window = Duration::from_millis(if spec.budget_window_ms == 0 { 60_000 } else { spec.budget_window_ms });
        let lockout = Duration::from_millis(if spec.lockout_ms == 0 { 60_000 } else { spec.lockout_ms });
        let minute = spec.minute_ms.unwrap_or(60_000).max(1) as f64;
        let minutes = |d: Duration| (d.as_millis() as f64 / minute).ceil() as u32;
        self.total_calls += 1;
        let mut usage = UsageReport::default();
        let (app_percent, app_locked) = self.app.call(now, spec.app_budget, window, lockout);
        usage.app_percent = app_percent;
        if let Some(regain) = app_locked {
            usage.regain_minutes = minutes(regain);
            return (Verdict::AppThrottled { regain }, BodyFault::None, 0, usage);
        }
        if let Some(page) = page {
            let calls = self.page_calls.entry(page).or_default();
            *calls += 1;
            let calls = *calls;
            let (percent, locked) = self.pages.entry(page).or_default().call(now, spec.page_budget, window, lockout);
            usage.page_percent = percent;
            if let Some(regain) = locked {
                usage.regain_minutes = minutes(regain);
                let code = [80001, 32, 613, 17][page % 4];
                return (Verdict::PageThrottled { code, regain }, BodyFault::None, 0, usage);
            }
            if let Some(death) = spec.token_deaths.iter().find(|d| d.page == page && calls > d.after_calls) {
                return (Verdict::TokenDead { subcode: death.subcode }, BodyFault::None, 0, usage);
            }
            if spec.permission_errors.contains(&page) {
                return (Verdict::Permission, BodyFault::None, 0, usage);
            }
        }
        let key = text(request);
        let attempt = self.attempts.entry(key).or_default();
        *attempt += 1;
        let mut r = Rng::new(seed, &[T_FAULT, key, *attempt as u64]);
        let delay = if r.chance(spec.slow_rate) { spec.slow_ms } else { 0 };
        if r.chance(spec.transient_rate) {
            let code = if r.chance(0.5) { 1 } else { 2 };
            return (Verdict::Transient { code }, BodyFault::None, delay, usage);
        }
        let body = if r.chance(spec.truncated_rate) {
            BodyFault::Truncated
        } else if r.chance(spec.malformed_rate) {
            BodyFault::Malformed
        } else {
            BodyFault::None
        };
        (Verdict::Pass, body, delay, usage)
    }

    /// Whether the scenario's mid-run retirement has happened.
    pub fn retired<'a>(&self, spec: &'a FaultSpec) -> Option<&'a str> {
        spec.retire_metric.as_ref().filter(|r| self.total_calls > r.after_calls).map(|r| r.metric.as_str())
    }

    pub fn total_calls(&self) -> u32 {
        self.total_calls
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::TokenDeath;

    #[test]
    fn a_page_budget_locks_out_and_calls_while_locked_extend_it() {
        let spec = FaultSpec {
            page_budget: Some(3),
            budget_window_ms: 60_000,
            lockout_ms: 200,
            minute_ms: Some(100),
            ..FaultSpec::default()
        };
        let mut s = FaultState::default();
        for i in 0..3 {
            let (v, _, _, u) = s.decide(&spec, 1, Some(0), &format!("r{i}"));
            assert_eq!(v, Verdict::Pass);
            assert!(u.page_percent <= 100);
        }
        let (v, _, _, u) = s.decide(&spec, 1, Some(0), "r3");
        assert!(matches!(v, Verdict::PageThrottled { code: 80001, .. }), "{v:?}");
        assert_eq!(u.regain_minutes, 2);
        let (v, _, _, _) = s.decide(&spec, 1, Some(0), "r4");
        match v {
            Verdict::PageThrottled { regain, .. } => {
                assert!(regain > Duration::from_millis(200), "extended: {regain:?}")
            }
            other => panic!("{other:?}"),
        }
        // Another page is unaffected.
        assert_eq!(s.decide(&spec, 1, Some(1), "x").0, Verdict::Pass);
    }

    #[test]
    fn tokens_die_after_their_calls_and_random_faults_are_deterministic() {
        let spec = FaultSpec {
            token_deaths: vec![TokenDeath { page: 2, after_calls: 1, subcode: 463 }],
            transient_rate: 0.5,
            ..FaultSpec::default()
        };
        let mut s = FaultState::default();
        let _ = s.decide(&spec, 1, Some(2), "a");
        assert_eq!(s.decide(&spec, 1, Some(2), "b").0, Verdict::TokenDead { subcode: 463 });
        let run = || {
            let mut s = FaultState::default();
            (0..50).map(|i| s.decide(&spec, 9, Some(0), &format!("q{}", i % 7)).0).collect::<Vec<_>>()
        };
        assert_eq!(run(), run());
        assert!(run().iter().any(|v| matches!(v, Verdict::Transient { .. })));
    }
}
