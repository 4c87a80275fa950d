//! Abuse protection at the edge: token buckets per key (client, source
//! address, principal, tenant), and lockout with exponential backoff after
//! repeated authentication failures. Refusals are 429 with `Retry-After`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Entries kept per table before idle ones are swept.
const SWEEP_AT: usize = 50_000;

/// A rate and a burst; a rate of zero disables the limit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Requests per second, sustained.
    pub per_second: f64,
    /// Requests allowed at once.
    pub burst: f64,
}

impl Rate {
    /// No limit.
    pub const OFF: Self = Self {
        per_second: 0.0,
        burst: 0.0,
    };

    /// Parses `RATE` or `RATE:BURST` (requests per second; the burst
    /// defaults to twice the rate; `0` disables).
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad = || format!("rate limit `{s}` must be RATE or RATE:BURST, in requests per second");
        let (rate, burst) = match s.split_once(':') {
            Some((r, b)) => (
                r.trim().parse::<f64>().map_err(|_| bad())?,
                Some(b.trim().parse::<f64>().map_err(|_| bad())?),
            ),
            None => (s.trim().parse::<f64>().map_err(|_| bad())?, None),
        };
        if !rate.is_finite() || rate < 0.0 || burst.is_some_and(|b| !b.is_finite() || b < 1.0) {
            return Err(bad());
        }
        Ok(Self {
            per_second: rate,
            burst: burst.unwrap_or((rate * 2.0).max(1.0)),
        })
    }

    fn enabled(&self) -> bool {
        self.per_second > 0.0
    }
}

/// The limits of one server.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Token endpoint, per client id.
    pub token_per_client: Rate,
    /// Token endpoint, per source address.
    pub token_per_address: Rate,
    /// API, per authenticated principal.
    pub api_per_principal: Rate,
    /// API, per tenant.
    pub api_per_tenant: Rate,
    /// Consecutive authentication failures before a lockout (0: never).
    pub lockout_after: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            token_per_client: Rate {
                per_second: 20.0,
                burst: 40.0,
            },
            token_per_address: Rate {
                per_second: 50.0,
                burst: 100.0,
            },
            api_per_principal: Rate {
                per_second: 2000.0,
                burst: 4000.0,
            },
            api_per_tenant: Rate {
                per_second: 10000.0,
                burst: 20000.0,
            },
            lockout_after: 5,
        }
    }
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Token buckets keyed by string.
pub(crate) struct Buckets {
    rate: Rate,
    table: Mutex<HashMap<String, Bucket>>,
}

impl Buckets {
    pub(crate) fn new(rate: Rate) -> Self {
        Self {
            rate,
            table: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `key`; on refusal, how long until one is there.
    pub(crate) fn take(&self, key: &str) -> Result<(), Duration> {
        if !self.rate.enabled() {
            return Ok(());
        }
        let now = Instant::now();
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        if table.len() >= SWEEP_AT {
            let full_after = Duration::from_secs_f64(self.rate.burst / self.rate.per_second);
            table.retain(|_, b| now.duration_since(b.at) < full_after);
        }
        let bucket = table.entry(key.to_owned()).or_insert(Bucket {
            tokens: self.rate.burst,
            at: now,
        });
        let refill = now.duration_since(bucket.at).as_secs_f64() * self.rate.per_second;
        bucket.tokens = (bucket.tokens + refill).min(self.rate.burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (1.0 - bucket.tokens) / self.rate.per_second,
            ))
        }
    }
}

struct Failures {
    count: u32,
    locked_until: Option<Instant>,
}

/// Lockout after repeated authentication failures: after `after` failures
/// in a row, each further failure locks the key for 1 s, 2 s, 4 s, … up to
/// 15 minutes. A success clears the record.
pub(crate) struct Lockout {
    after: u32,
    table: Mutex<HashMap<String, Failures>>,
}

const LOCK_BASE: Duration = Duration::from_secs(1);
const LOCK_CAP: Duration = Duration::from_secs(900);

impl Lockout {
    pub(crate) fn new(after: u32) -> Self {
        Self {
            after,
            table: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `key` is locked now, and for how long.
    pub(crate) fn check(&self, key: &str) -> Result<(), Duration> {
        let table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        match table.get(key).and_then(|f| f.locked_until) {
            Some(until) if until > Instant::now() => Err(until - Instant::now()),
            _ => Ok(()),
        }
    }

    /// Records a failure; returns the lock it caused, if any.
    pub(crate) fn fail(&self, key: &str) -> Option<Duration> {
        if self.after == 0 {
            return None;
        }
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        if table.len() >= SWEEP_AT {
            let now = Instant::now();
            table.retain(|_, f| f.locked_until.is_some_and(|u| u > now));
        }
        let f = table.entry(key.to_owned()).or_insert(Failures {
            count: 0,
            locked_until: None,
        });
        f.count = f.count.saturating_add(1);
        if f.count < self.after {
            return None;
        }
        let doublings = (f.count - self.after).min(20);
        let lock = LOCK_BASE.saturating_mul(1 << doublings).min(LOCK_CAP);
        f.locked_until = Some(Instant::now() + lock);
        Some(lock)
    }

    /// Clears `key`'s failures.
    pub(crate) fn succeed(&self, key: &str) {
        self.table
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }
}

/// Seconds for `Retry-After`, rounded up, at least one.
pub(crate) fn retry_after_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0).max(u64::from(d.is_zero()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse() {
        assert_eq!(
            Rate::parse("10").unwrap(),
            Rate {
                per_second: 10.0,
                burst: 20.0
            }
        );
        assert_eq!(
            Rate::parse("0.5:3").unwrap(),
            Rate {
                per_second: 0.5,
                burst: 3.0
            }
        );
        assert!(!Rate::parse("0").unwrap().enabled());
        for bad in ["", "x", "-1", "1:0", "1:x", "inf"] {
            assert!(Rate::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn buckets_allow_a_burst_then_refuse_per_key() {
        let b = Buckets::new(Rate {
            per_second: 1.0,
            burst: 3.0,
        });
        for _ in 0..3 {
            b.take("a").unwrap();
        }
        let wait = b.take("a").unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_secs(1));
        b.take("b").unwrap();
        assert_eq!(retry_after_secs(wait), 1);
    }

    #[test]
    fn lockout_backs_off_and_clears_on_success() {
        let l = Lockout::new(3);
        assert_eq!(l.fail("k"), None);
        assert_eq!(l.fail("k"), None);
        assert_eq!(l.fail("k"), Some(Duration::from_secs(1)));
        assert!(l.check("k").is_err());
        assert_eq!(l.fail("k"), Some(Duration::from_secs(2)));
        assert_eq!(l.fail("k"), Some(Duration::from_secs(4)));
        l.succeed("k");
        assert!(l.check("k").is_ok());
        assert!(Lockout::new(0).fail("k").is_none(), "disabled");
    }
}
