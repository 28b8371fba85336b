//! The adaptive rate budget, driven by Meta's usage headers: slow down as usage nears the limit, stop at 100 % and
//! make no call to that page (or, for app-level usage, any page) until the regain time has passed. Calls made while
//! throttled extend Meta's lockout, so a paused gate really does not call.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use pulse_graph::Usage;

/// Usage above this slows calls down.
pub const SLOW_FROM: u32 = 75;

#[derive(Debug, Default, Clone, Copy)]
struct GateState {
    percent: u32,
    paused_until: Option<Instant>,
}

#[derive(Debug)]
pub struct RateBudget {
    /// Real duration of one "minute" of `estimated_time_to_regain_access` (tests shrink it).
    minute: Duration,
    /// Extra delay per call at 100 % usage (scaled linearly from SLOW_FROM).
    max_slowdown: Duration,
    app: Mutex<GateState>,
    pages: Mutex<HashMap<String, GateState>>,
}

impl RateBudget {
    pub fn new(minute: Duration, max_slowdown: Duration) -> Self {
        Self { minute, max_slowdown, app: Mutex::new(GateState::default()), pages: Mutex::new(HashMap::new()) }
    }

    /// How long to wait before calling `page` now (zero: go): a pause for throttling, else a slowdown as usage
    /// nears the limit.
    pub fn wait_before(&self, page: &str) -> Duration {
        let pause = self.paused_for(page);
        if !pause.is_zero() {
            return pause;
        }
        let app = self.app.lock().expect("budget lock").percent;
        let page_percent = self.pages.lock().expect("budget lock").get(page).map_or(0, |s| s.percent);
        let percent = app.max(page_percent);
        if percent >= SLOW_FROM {
            let f = ((percent - SLOW_FROM) as f64 / (100 - SLOW_FROM) as f64).min(1.0);
            return self.max_slowdown.mul_f64(f);
        }
        Duration::ZERO
    }

    /// How long calls to `page` are paused for throttling (the app's or the page's; zero: not paused).
    pub fn paused_for(&self, page: &str) -> Duration {
        let now = Instant::now();
        let app = self.app.lock().expect("budget lock").paused_until;
        let page_paused = self.pages.lock().expect("budget lock").get(page).and_then(|s| s.paused_until);
        [app, page_paused].into_iter().flatten().filter(|t| *t > now).map(|t| t - now).max().unwrap_or_default()
    }

    /// Records what a response said about usage (the per-page header names its pages itself).
    pub fn observe(&self, usage: &Usage) {
        let now = Instant::now();
        if let Some(app) = usage.app {
            let mut a = self.app.lock().expect("budget lock");
            a.percent = app.call_count.max(app.total_time).max(app.total_cputime);
            if a.percent >= 100 {
                a.paused_until = Some(now + self.minute);
            }
        }
        let mut pages = self.pages.lock().expect("budget lock");
        for (id, u) in usage.pages.iter().filter_map(|(id, v)| v.first().map(|u| (id, u))) {
            let state = pages.entry(id.clone()).or_default();
            state.percent = u.call_count.max(u.total_time).max(u.total_cputime);
            if u.estimated_time_to_regain_access > 0 || state.percent >= 100 {
                let minutes = u.estimated_time_to_regain_access.max(1);
                state.paused_until = Some(now + self.minute * minutes);
            }
        }
    }

    /// Records a throttling error: pause the page (or the app, for app-level codes) for the regain time.
    pub fn throttled(&self, page: &str, code: i64, usage: &Usage) -> Duration {
        let minutes = usage.regain_minutes().max(1);
        let pause = self.minute * minutes;
        let until = Instant::now() + pause;
        if code == 4 {
            let mut a = self.app.lock().expect("budget lock");
            a.percent = 100;
            a.paused_until = Some(until);
        } else {
            let mut pages = self.pages.lock().expect("budget lock");
            let state = pages.entry(page.to_owned()).or_default();
            state.percent = 100;
            state.paused_until = Some(until);
        }
        pause
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(page: &str, pct: u32, regain: u32) -> Usage {
        Usage::parse(
            Some(r#"{"call_count":10,"total_cputime":5,"total_time":5}"#),
            Some(&format!(
                r#"{{"{page}":[{{"type":"pages","call_count":{pct},"total_cputime":1,"total_time":1,"estimated_time_to_regain_access":{regain}}}]}}"#
            )),
        )
    }

    #[test]
    fn slows_near_the_limit_and_stops_at_it() {
        let b = RateBudget::new(Duration::from_millis(100), Duration::from_millis(400));
        b.observe(&usage("1", 50, 0));
        assert_eq!(b.wait_before("1"), Duration::ZERO);
        b.observe(&usage("1", 90, 0));
        let slow = b.wait_before("1");
        assert!(slow > Duration::from_millis(200) && slow < Duration::from_millis(300), "{slow:?}");
        b.observe(&usage("1", 100, 3));
        let wait = b.wait_before("1");
        assert!(wait > Duration::from_millis(250) && wait <= Duration::from_millis(300), "{wait:?}");
        assert_eq!(b.wait_before("2"), Duration::ZERO, "other pages go on");
    }

    #[test]
    fn app_throttling_stops_every_page() {
        let b = RateBudget::new(Duration::from_millis(100), Duration::ZERO);
        let pause = b.throttled("1", 4, &Usage::default());
        assert_eq!(pause, Duration::from_millis(100));
        assert!(b.wait_before("2") > Duration::ZERO);
    }
}
