//! Abuse protection at the edge, built so that it cannot be turned against
//! anyone else's valid credentials:
//!
//! - Failed authentications count against the *pair* of a credential's
//!   identity (a client id at the OAuth2 endpoints, the presented token on
//!   the API) and the source it was tried from. After repeated failures in a
//!   row that pair, and only that pair, is locked out with exponential
//!   backoff. Nobody can lock client X out without X's secret: guesses from
//!   address A lock (X, A), while X from B, and Y from A, carry on.
//! - Traffic without valid credentials (no token, a refused token, a wrong
//!   client secret) is throttled per source address. The throttle is only
//!   consulted once authentication has failed, so a valid credential from a
//!   throttled address (a shared NAT or proxy) is never refused by it.
//! - Rates of authenticated callers are limited per client (successful
//!   token issuance), per principal and per tenant; only the caller's own
//!   successes drain those buckets.
//!
//! Refusals are 429 with `Retry-After`. Time comes from the server's
//! [`Clock`] (its monotonic reading), so tests move it instead of sleeping.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use vern_core::Clock;

use crate::metrics::Metrics;

/// Entries a table holds before idle ones are swept; after a sweep the next
/// one waits until the table has doubled, so a table full of live entries
/// does not rescan on every insert.
const SWEEP_AT: usize = 50_000;

/// Entries a table never grows beyond, whatever a flood of made-up client
/// ids or addresses does: at the cap a new key is not recorded (its
/// failures go uncounted, its bucket is not limited) until a sweep, at
/// most one a second, makes room. Memory stays bounded (about 100 MB per
/// table) at the price of weaker limits during such a flood.
const MAX_ENTRIES: usize = 1_000_000;

/// How often a full table may be rescanned for room.
const FULL_SWEEP_EVERY: Duration = Duration::from_secs(1);

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
    /// Token endpoint, per authenticated client id (tokens issued).
    pub token_per_client: Rate,
    /// Token endpoint, failed client authentications per source address.
    pub token_per_address: Rate,
    /// API, per authenticated principal.
    pub api_per_principal: Rate,
    /// API, per tenant.
    pub api_per_tenant: Rate,
    /// API, requests without valid credentials (no token or a refused
    /// one) per source address.
    pub api_per_address: Rate,
    /// Consecutive authentication failures of one (identity, source) pair
    /// before it is locked out (0: never).
    pub lockout_after: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            token_per_client: Rate {
                per_second: 20.0,
                burst: 40.0,
            },
            // Failures only: a NAT of many well-configured clients makes
            // next to none, so these are generous to misconfigured
            // neighbours and still bound a flood.
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
            api_per_address: Rate {
                per_second: 50.0,
                burst: 200.0,
            },
            lockout_after: 5,
        }
    }
}

/// Where a request comes from, as limits count it: an IPv4 address, or the
/// /64 network of an IPv6 address. One subscriber usually holds a whole
/// /64, so counting single IPv6 addresses would hand an attacker 2^64
/// fresh budgets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Source {
    /// An IPv4 address (IPv4-mapped IPv6 addresses included).
    V4(Ipv4Addr),
    /// The first 64 bits of an IPv6 address.
    V6Net(u64),
    /// No address is known (no connection information).
    Unknown,
}

impl Source {
    pub(crate) fn of(ip: Option<IpAddr>) -> Self {
        match ip.map(|ip| ip.to_canonical()) {
            Some(IpAddr::V4(v4)) => Self::V4(v4),
            Some(IpAddr::V6(v6)) => Self::V6Net((v6.to_bits() >> 64) as u64),
            None => Self::Unknown,
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::V4(a) => a.fmt(f),
            Self::V6Net(net) => {
                let addr = std::net::Ipv6Addr::from_bits(u128::from(*net) << 64);
                write!(f, "{addr}/64")
            }
            Self::Unknown => f.write_str("unknown"),
        }
    }
}

/// A credential's identity as lockouts know it: a digest, so that names of
/// any length chosen by a caller take fixed space, and no token is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct CredentialId([u8; 16]);

impl CredentialId {
    /// A client id named at the OAuth2 endpoints.
    pub(crate) fn client(id: &str) -> Self {
        Self::digest(b"client\0", id.as_bytes())
    }

    /// A token presented to the API (the header value as sent).
    pub(crate) fn token(presented: &[u8]) -> Self {
        Self::digest(b"token\0", presented)
    }

    fn digest(kind: &[u8], value: &[u8]) -> Self {
        let mut input = Vec::with_capacity(kind.len() + value.len());
        input.extend_from_slice(kind);
        input.extend_from_slice(value);
        let full = vern_crypto::sha256(&input);
        let mut short = [0u8; 16];
        short.copy_from_slice(full.get(..16).unwrap_or(&[0u8; 16]));
        Self(short)
    }
}

/// What a lockout is keyed by: a credential tried from a source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Attempt {
    pub(crate) identity: CredentialId,
    pub(crate) source: Source,
}

/// A refusal: the limit that refused (the `scope` label of
/// `vern_rate_limited_total`) and how long to wait.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Refused {
    pub(crate) scope: &'static str,
    pub(crate) wait: Duration,
}

/// The abuse-protection state of one process.
pub(crate) struct Guard {
    token_client: Buckets<String>,
    token_address: Buckets<Source>,
    api_principal: Buckets<String>,
    api_tenant: Buckets<String>,
    api_address: Buckets<Source>,
    lockout: Lockout,
    metrics: Metrics,
}

impl Guard {
    pub(crate) fn new(limits: &Limits, clock: &Arc<dyn Clock>, metrics: Metrics) -> Self {
        Self {
            token_client: Buckets::new(limits.token_per_client, Arc::clone(clock)),
            token_address: Buckets::new(limits.token_per_address, Arc::clone(clock)),
            api_principal: Buckets::new(limits.api_per_principal, Arc::clone(clock)),
            api_tenant: Buckets::new(limits.api_per_tenant, Arc::clone(clock)),
            api_address: Buckets::new(limits.api_per_address, Arc::clone(clock)),
            lockout: Lockout::new(limits.lockout_after, Arc::clone(clock)),
            metrics,
        }
    }

    fn refuse(&self, scope: &'static str, wait: Duration) -> Refused {
        self.metrics.limited(scope);
        Refused { scope, wait }
    }

    /// Before a client's credential is checked at an OAuth2 endpoint:
    /// refuses a locked (client, source) pair, and a client whose own
    /// issued tokens have used up its rate. Nothing here is drained by
    /// requests that fail, so nobody can spend another client's budget.
    pub(crate) fn client_attempt(&self, attempt: &Attempt, client: &str) -> Result<(), Refused> {
        self.lockout
            .check(attempt)
            .map_err(|wait| self.refuse("lockout", wait))?;
        self.token_client
            .check(client)
            .map_err(|wait| self.refuse("token_client", wait))
    }

    /// A client authentication failed: counts it against the pair, and
    /// against the source's budget of failures, which refuses (429 instead
    /// of 401) once spent.
    pub(crate) fn client_failed(&self, attempt: &Attempt) -> Result<(), Refused> {
        self.metrics.auth_failed("token_endpoint");
        if let Some(lock) = self.lockout.fail(attempt) {
            tracing::warn!(source = %attempt.source, seconds = lock.as_secs(), "A client id is locked out from one source after repeated authentication failures.");
        }
        self.token_address
            .take(&attempt.source)
            .map_err(|wait| self.refuse("token_address", wait))
    }

    /// A client authenticated and got a token: its pair's failures are
    /// forgiven and the token counts against the client's rate.
    pub(crate) fn client_succeeded(&self, attempt: &Attempt, client: &str) {
        self.lockout.succeed(attempt);
        self.token_client.charge(client);
    }

    /// Before a client's credential is checked (at the OAuth2 endpoints or
    /// a Vault login): the attempt of `client` from `source`, refused as
    /// [`Guard::client_attempt`] refuses.
    pub(crate) fn admit_client(&self, source: Source, client: &str) -> Result<Attempt, Refused> {
        let attempt = Attempt {
            identity: CredentialId::client(client),
            source,
        };
        self.client_attempt(&attempt, client)?;
        Ok(attempt)
    }

    /// Records the outcome of a client authentication: a failure counts
    /// against the pair and the source's budget of failures (refused once
    /// spent), a success clears the pair and charges the client's rate.
    pub(crate) fn settle_client(
        &self,
        attempt: &Attempt,
        client: &str,
        failed: bool,
    ) -> Result<(), Refused> {
        if failed {
            self.client_failed(attempt)
        } else {
            self.client_succeeded(attempt, client);
            Ok(())
        }
    }

    /// Before a presented token is verified: refuses a locked (token,
    /// source) pair. A request without a token has no pair.
    pub(crate) fn api_attempt(&self, attempt: Option<&Attempt>) -> Result<(), Refused> {
        match attempt {
            Some(a) => self
                .lockout
                .check(a)
                .map_err(|wait| self.refuse("lockout", wait)),
            None => Ok(()),
        }
    }

    /// An API request without valid credentials: counted against its pair
    /// (when it presented a token) and against its source's budget of such
    /// requests, which refuses once spent.
    pub(crate) fn api_failed(
        &self,
        attempt: Option<&Attempt>,
        source: Source,
    ) -> Result<(), Refused> {
        self.metrics.auth_failed("api");
        if let Some(a) = attempt {
            if let Some(lock) = self.lockout.fail(a) {
                tracing::warn!(source = %a.source, seconds = lock.as_secs(), "A token is locked out from one source after repeated authentication failures.");
            }
        }
        self.api_address
            .take(&source)
            .map_err(|wait| self.refuse("api_address", wait))
    }

    /// An API request authenticated: forgives its pair's failures, then
    /// charges the principal's and the tenant's rates.
    pub(crate) fn api_succeeded(
        &self,
        attempt: Option<&Attempt>,
        principal: &str,
        tenant: Option<&str>,
    ) -> Result<(), Refused> {
        if let Some(a) = attempt {
            self.lockout.succeed(a);
        }
        self.api_principal
            .take(principal)
            .map_err(|wait| self.refuse("api_principal", wait))?;
        match tenant {
            Some(t) => self
                .api_tenant
                .take(t)
                .map_err(|wait| self.refuse("api_tenant", wait)),
            None => Ok(()),
        }
    }
}

/// A table that forgets idle entries when it grows large, and never grows
/// beyond a cap.
struct Table<K, V> {
    map: HashMap<K, V>,
    sweep_at: usize,
    max: usize,
    /// Monotonic time of the last sweep.
    swept_at: Option<Duration>,
}

impl<K: Hash + Eq, V> Table<K, V> {
    fn new() -> Self {
        Self::with_caps(SWEEP_AT, MAX_ENTRIES)
    }

    fn with_caps(sweep_at: usize, max: usize) -> Self {
        Self {
            map: HashMap::new(),
            sweep_at: sweep_at.min(max),
            max,
            swept_at: None,
        }
    }

    /// Before inserting a new key: sweeps out entries `keep` rejects when
    /// the table is due for it, and says whether there is room.
    fn make_room(&mut self, now: Duration, keep: impl FnMut(&V) -> bool) -> bool {
        let len = self.map.len();
        let full = len >= self.max;
        let recently = self
            .swept_at
            .is_some_and(|t| now.saturating_sub(t) < FULL_SWEEP_EVERY);
        if len >= self.sweep_at && !(full && recently) {
            let mut keep = keep;
            self.map.retain(|_, v| keep(v));
            self.swept_at = Some(now);
            self.sweep_at = self
                .map
                .len()
                .saturating_mul(2)
                .max(SWEEP_AT.min(self.max))
                .min(self.max);
        }
        self.map.len() < self.max
    }
}

struct Bucket {
    tokens: f64,
    /// Monotonic time of the last refill.
    at: Duration,
}

/// Token buckets keyed by `K`.
pub(crate) struct Buckets<K> {
    rate: Rate,
    clock: Arc<dyn Clock>,
    table: Mutex<Table<K, Bucket>>,
}

impl<K: Hash + Eq> Buckets<K> {
    pub(crate) fn new(rate: Rate, clock: Arc<dyn Clock>) -> Self {
        Self {
            rate,
            clock,
            table: Mutex::new(Table::new()),
        }
    }

    fn refill(&self, bucket: &mut Bucket, now: Duration) {
        let elapsed = now.saturating_sub(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.rate.per_second).min(self.rate.burst);
        bucket.at = now;
    }

    fn wait_for_one(&self, tokens: f64) -> Duration {
        Duration::from_secs_f64(((1.0 - tokens) / self.rate.per_second).max(0.0))
    }

    /// Takes one token for `key`; on refusal, how long until one is there.
    pub(crate) fn take<Q>(&self, key: &Q) -> Result<(), Duration>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        if !self.rate.enabled() {
            return Ok(());
        }
        let now = self.clock.monotonic();
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        if !table.map.contains_key(key) {
            let full_after = Duration::from_secs_f64(self.rate.burst / self.rate.per_second);
            if !table.make_room(now, |b| now.saturating_sub(b.at) < full_after) {
                return Ok(());
            }
            table.map.insert(
                key.to_owned(),
                Bucket {
                    tokens: self.rate.burst,
                    at: now,
                },
            );
        }
        let Some(bucket) = table.map.get_mut(key) else {
            return Ok(());
        };
        self.refill(bucket, now);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(self.wait_for_one(bucket.tokens))
        }
    }

    /// Whether `key` has a token now, without taking it (and without
    /// making an entry for a key never charged).
    pub(crate) fn check<Q>(&self, key: &Q) -> Result<(), Duration>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        if !self.rate.enabled() {
            return Ok(());
        }
        let now = self.clock.monotonic();
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        match table.map.get_mut(key) {
            Some(bucket) => {
                self.refill(bucket, now);
                if bucket.tokens >= 1.0 {
                    Ok(())
                } else {
                    Err(self.wait_for_one(bucket.tokens))
                }
            }
            None => Ok(()),
        }
    }

    /// Takes a token for `key` if one is there; for work already done
    /// (a token issued after [`Buckets::check`] let it through).
    pub(crate) fn charge<Q>(&self, key: &Q)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let _ = self.take(key);
    }
}

struct Failures {
    count: u32,
    /// Monotonic time of the last failure.
    last: Duration,
    /// Monotonic time until which the key is locked.
    locked_until: Option<Duration>,
}

/// Lockout after repeated authentication failures: after `after` failures
/// in a row, each further failure locks the key for 1 s, 2 s, 4 s, … up to
/// 15 minutes. A success clears the record.
pub(crate) struct Lockout {
    after: u32,
    clock: Arc<dyn Clock>,
    table: Mutex<Table<Attempt, Failures>>,
}

const LOCK_BASE: Duration = Duration::from_secs(1);
const LOCK_CAP: Duration = Duration::from_secs(900);

impl Lockout {
    pub(crate) fn new(after: u32, clock: Arc<dyn Clock>) -> Self {
        Self {
            after,
            clock,
            table: Mutex::new(Table::new()),
        }
    }

    /// Whether `key` is locked now, and for how long.
    pub(crate) fn check(&self, key: &Attempt) -> Result<(), Duration> {
        let now = self.clock.monotonic();
        let table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        match table.map.get(key).and_then(|f| f.locked_until) {
            Some(until) if until > now => Err(until - now),
            _ => Ok(()),
        }
    }

    /// Records a failure; returns the lock it caused, if any.
    pub(crate) fn fail(&self, key: &Attempt) -> Option<Duration> {
        if self.after == 0 {
            return None;
        }
        let now = self.clock.monotonic();
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        if !table.map.contains_key(key) {
            // Under memory pressure, streaks that are neither locked nor
            // recent (quiet for the longest lock) are forgotten first.
            let room = table.make_room(now, |f| {
                f.locked_until.is_some_and(|u| u > now) || now.saturating_sub(f.last) < LOCK_CAP
            });
            if !room {
                tracing::debug!("The lockout table is full; a failure goes uncounted.");
                return None;
            }
        }
        let f = table.map.entry(*key).or_insert(Failures {
            count: 0,
            last: now,
            locked_until: None,
        });
        f.count = f.count.saturating_add(1);
        f.last = now;
        if f.count < self.after {
            return None;
        }
        let doublings = (f.count - self.after).min(20);
        let lock = LOCK_BASE.saturating_mul(1 << doublings).min(LOCK_CAP);
        f.locked_until = Some(now + lock);
        Some(lock)
    }

    /// Clears `key`'s failures.
    pub(crate) fn succeed(&self, key: &Attempt) {
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        if !table.map.is_empty() {
            table.map.remove(key);
        }
    }
}

/// Seconds for `Retry-After`, rounded up, at least one.
pub(crate) fn retry_after_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0).max(u64::from(d.is_zero()))
}

#[cfg(test)]
mod tests;
