//! Retries: exponential backoff with full jitter and a cap, and an injectable sleep so tests run in milliseconds.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Sleeps. Production sleeps on tokio's clock; tests record and shorten.
pub trait Sleeper: Send + Sync {
    fn sleep(&self, d: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;
}

#[derive(Debug, Default)]
pub struct TokioSleeper;

impl Sleeper for TokioSleeper {
    fn sleep(&self, d: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(tokio::time::sleep(d))
    }
}

/// Sleeps a fraction of what is asked and keeps the total asked, for tests.
#[derive(Debug)]
pub struct ScaledSleeper {
    pub divisor: u32,
    asked_ms: AtomicU64,
}

impl ScaledSleeper {
    pub fn new(divisor: u32) -> Self {
        Self { divisor: divisor.max(1), asked_ms: AtomicU64::new(0) }
    }

    pub fn asked(&self) -> Duration {
        Duration::from_millis(self.asked_ms.load(Ordering::Relaxed))
    }
}

impl Sleeper for ScaledSleeper {
    fn sleep(&self, d: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        self.asked_ms.fetch_add(d.as_millis() as u64, Ordering::Relaxed);
        Box::pin(tokio::time::sleep(d / self.divisor))
    }
}

#[derive(Clone)]
pub struct RetryPolicy {
    /// Attempts per call, including the first.
    pub max_attempts: u32,
    pub base: Duration,
    pub cap: Duration,
    pub sleeper: Arc<dyn Sleeper>,
}

impl std::fmt::Debug for RetryPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetryPolicy")
            .field("max_attempts", &self.max_attempts)
            .field("base", &self.base)
            .field("cap", &self.cap)
            .finish()
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 6,
            base: Duration::from_millis(500),
            cap: Duration::from_secs(30),
            sleeper: Arc::new(TokioSleeper),
        }
    }
}

impl RetryPolicy {
    /// Milliseconds instead of seconds.
    pub fn for_test() -> Self {
        Self {
            max_attempts: 8,
            base: Duration::from_millis(1),
            cap: Duration::from_millis(20),
            sleeper: Arc::new(TokioSleeper),
        }
    }

    /// Full jitter: a uniform draw in [0, min(cap, base * 2^attempt)] (AWS's recommendation for many clients).
    pub fn backoff(&self, attempt: u32, draw: f64) -> Duration {
        let exp = self.base.saturating_mul(1u32.checked_shl(attempt.min(20)).unwrap_or(u32::MAX));
        exp.min(self.cap).mul_f64(draw.clamp(0.0, 1.0))
    }

    pub async fn sleep(&self, d: Duration) {
        if !d.is_zero() {
            self.sleeper.sleep(d).await;
        }
    }
}

/// A cheap jitter source (no RNG crate): a per-process counter mixed into a float in [0, 1).
pub fn jitter() -> f64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0x9E37_79B9);
    let mut z = COUNTER.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_exponentially_is_capped_and_jittered() {
        let p = RetryPolicy { base: Duration::from_millis(100), cap: Duration::from_secs(2), ..RetryPolicy::default() };
        assert_eq!(p.backoff(0, 1.0), Duration::from_millis(100));
        assert_eq!(p.backoff(3, 1.0), Duration::from_millis(800));
        assert_eq!(p.backoff(10, 1.0), Duration::from_secs(2));
        assert_eq!(p.backoff(30, 1.0), Duration::from_secs(2));
        assert_eq!(p.backoff(3, 0.5), Duration::from_millis(400));
        assert_eq!(p.backoff(3, 0.0), Duration::ZERO);
        let draws: Vec<f64> = (0..1000).map(|_| jitter()).collect();
        assert!(draws.iter().all(|d| (0.0..1.0).contains(d)));
        let mean = draws.iter().sum::<f64>() / 1000.0;
        assert!((mean - 0.5).abs() < 0.05);
    }

    #[tokio::test]
    async fn the_sleeper_is_injectable() {
        let s = Arc::new(ScaledSleeper::new(1000));
        let p = RetryPolicy { sleeper: s.clone(), ..RetryPolicy::default() };
        let start = std::time::Instant::now();
        p.sleep(Duration::from_secs(30)).await;
        assert!(start.elapsed() < Duration::from_millis(500));
        assert_eq!(s.asked(), Duration::from_secs(30));
    }
}
