//! Time as a dependency: domain code and limiters ask a [`Clock`] so tests
//! can move time deliberately instead of sleeping.

use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A source of wall-clock and monotonic time.
pub trait Clock: Send + Sync + 'static {
    /// The current time.
    fn now(&self) -> SystemTime;

    /// Time elapsed since a fixed, arbitrary origin. Unlike [`Clock::now`]
    /// it never goes backwards (the wall clock can be set back), so it is
    /// what durations such as lockouts and rate-limit refills are measured
    /// with.
    fn monotonic(&self) -> Duration;

    /// Seconds since the Unix epoch; times before the epoch read as zero.
    fn unix_seconds(&self) -> u64 {
        self.now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    }
}

/// The operating system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }

    fn monotonic(&self) -> Duration {
        // One origin per process, so readings from every `SystemClock`
        // value can be compared.
        static ORIGIN: OnceLock<Instant> = OnceLock::new();
        ORIGIN.get_or_init(Instant::now).elapsed()
    }
}

/// A clock that only moves when told to; for tests.
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<(SystemTime, Duration)>,
}

impl ManualClock {
    /// A clock standing at `start`; its monotonic reading starts at zero.
    pub fn new(start: SystemTime) -> Self {
        Self {
            now: Mutex::new((start, Duration::ZERO)),
        }
    }

    /// Moves the clock forward by `by`, both its wall-clock and its
    /// monotonic reading.
    pub fn advance(&self, by: Duration) {
        let mut now = self.now.lock().unwrap_or_else(|e| e.into_inner());
        now.0 += by;
        now.1 += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        self.now.lock().unwrap_or_else(|e| e.into_inner()).0
    }

    fn monotonic(&self) -> Duration {
        self.now.lock().unwrap_or_else(|e| e.into_inner()).1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_advanced() {
        let clock = ManualClock::new(UNIX_EPOCH + Duration::from_secs(100));
        assert_eq!(clock.unix_seconds(), 100);
        assert_eq!(clock.monotonic(), Duration::ZERO);
        clock.advance(Duration::from_secs(5));
        assert_eq!(clock.unix_seconds(), 105);
        assert_eq!(clock.monotonic(), Duration::from_secs(5));
    }

    #[test]
    fn system_clock_is_monotonic() {
        let a = SystemClock.monotonic();
        let b = SystemClock.monotonic();
        assert!(b >= a);
    }
}
