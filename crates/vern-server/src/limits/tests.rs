//! The limiter and lockouts on a [`ManualClock`]: time moves only when a
//! test says so.

use std::net::{IpAddr, Ipv6Addr};
use std::time::{Duration, UNIX_EPOCH};

use vern_core::ManualClock;

use super::*;

fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(
        UNIX_EPOCH + Duration::from_secs(1_700_000_000),
    ))
}

fn dyn_clock(c: &Arc<ManualClock>) -> Arc<dyn Clock> {
    Arc::clone(c) as Arc<dyn Clock>
}

fn source(ip: &str) -> Source {
    Source::of(Some(ip.parse().unwrap()))
}

fn attempt(client: &str, ip: &str) -> Attempt {
    Attempt {
        identity: CredentialId::client(client),
        source: source(ip),
    }
}

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
fn buckets_allow_a_burst_refuse_per_key_and_refill_with_the_clock() {
    let c = clock();
    let b = Buckets::<String>::new(
        Rate {
            per_second: 1.0,
            burst: 3.0,
        },
        dyn_clock(&c),
    );
    for _ in 0..3 {
        b.take("a").unwrap();
    }
    let wait = b.take("a").unwrap_err();
    assert_eq!(wait, Duration::from_secs(1));
    assert_eq!(retry_after_secs(wait), 1);
    b.take("b").unwrap();

    c.advance(Duration::from_millis(500));
    assert_eq!(b.take("a").unwrap_err(), Duration::from_millis(500));
    c.advance(Duration::from_millis(500));
    b.take("a").unwrap();
    assert!(b.take("a").is_err(), "one second refilled one token");

    c.advance(Duration::from_secs(3600));
    for _ in 0..3 {
        b.take("a").unwrap();
    }
    assert!(b.take("a").is_err(), "refills stop at the burst");
}

#[test]
fn checking_a_bucket_neither_drains_it_nor_creates_it() {
    let c = clock();
    let b = Buckets::<String>::new(
        Rate {
            per_second: 1.0,
            burst: 2.0,
        },
        dyn_clock(&c),
    );
    for _ in 0..10 {
        b.check("x").unwrap();
    }
    assert!(b.table.lock().unwrap().map.is_empty());
    b.charge("x");
    b.charge("x");
    assert_eq!(b.check("x").unwrap_err(), Duration::from_secs(1));
    b.charge("x");
    c.advance(Duration::from_secs(1));
    b.check("x").unwrap();
}

#[test]
fn a_disabled_rate_never_refuses() {
    let b = Buckets::<String>::new(Rate::OFF, dyn_clock(&clock()));
    for _ in 0..1000 {
        b.take("a").unwrap();
    }
}

#[test]
fn lockout_backs_off_doubling_up_to_the_cap() {
    let c = clock();
    let l = Lockout::new(3, dyn_clock(&c));
    let k = attempt("x", "192.0.2.1");
    assert_eq!(l.fail(&k), None);
    assert_eq!(l.fail(&k), None);
    assert!(l.check(&k).is_ok(), "not yet");
    assert_eq!(l.fail(&k), Some(Duration::from_secs(1)));
    assert_eq!(l.check(&k), Err(Duration::from_secs(1)));
    c.advance(Duration::from_millis(999));
    assert_eq!(l.check(&k), Err(Duration::from_millis(1)));
    c.advance(Duration::from_millis(1));
    assert!(l.check(&k).is_ok(), "the lock expires with the clock");

    let mut expected = Vec::new();
    let mut got = Vec::new();
    for n in 1..=12u32 {
        expected.push(Duration::from_secs(1 << n).min(Duration::from_secs(900)));
        let lock = l.fail(&k).unwrap();
        assert_eq!(l.check(&k), Err(lock));
        got.push(lock);
        c.advance(lock);
    }
    assert_eq!(got, expected, "2 s, 4 s, … then 15 minutes");
    assert_eq!(got.last(), Some(&Duration::from_secs(900)));
}

#[test]
fn a_success_clears_the_record() {
    let c = clock();
    let l = Lockout::new(2, dyn_clock(&c));
    let k = attempt("x", "192.0.2.1");
    l.fail(&k);
    l.fail(&k);
    l.fail(&k);
    assert!(l.check(&k).is_err());
    l.succeed(&k);
    assert!(l.check(&k).is_ok());
    assert_eq!(l.fail(&k), None, "the streak starts over");
    assert_eq!(l.fail(&k), Some(Duration::from_secs(1)), "from one second");
    assert!(
        Lockout::new(0, dyn_clock(&c)).fail(&k).is_none(),
        "disabled"
    );
}

#[test]
fn pairs_are_independent() {
    let c = clock();
    let l = Lockout::new(2, dyn_clock(&c));
    let x_from_a = attempt("x", "192.0.2.1");
    l.fail(&x_from_a);
    l.fail(&x_from_a);
    assert!(l.check(&x_from_a).is_err());
    assert!(l.check(&attempt("x", "192.0.2.2")).is_ok(), "X from B");
    assert!(l.check(&attempt("y", "192.0.2.1")).is_ok(), "Y from A");
    let token_a = Attempt {
        identity: CredentialId::token(b"x"),
        source: source("192.0.2.1"),
    };
    assert!(l.check(&token_a).is_ok(), "a token is not a client id");
}

#[test]
fn ipv6_sources_count_per_64_and_mapped_ipv4_as_ipv4() {
    assert_eq!(source("2001:db8:1:2::1"), source("2001:db8:1:2:ffff::9"));
    assert_ne!(source("2001:db8:1:2::1"), source("2001:db8:1:3::1"));
    assert_eq!(source("::ffff:192.0.2.7"), source("192.0.2.7"));
    assert_eq!(source("2001:db8:1:2::1").to_string(), "2001:db8:1:2::/64");
    assert_eq!(Source::of(None).to_string(), "unknown");
    let v6: IpAddr = Ipv6Addr::LOCALHOST.into();
    assert_eq!(Source::of(Some(v6)).to_string(), "::/64");
}

fn guard(limits: Limits) -> (Arc<ManualClock>, Guard) {
    let c = clock();
    let g = Guard::new(&limits, &dyn_clock(&c), Metrics::new());
    (c, g)
}

#[test]
fn failures_never_spend_a_client_s_own_rate() {
    let (_, g) = guard(Limits {
        token_per_client: Rate {
            per_second: 1.0,
            burst: 2.0,
        },
        token_per_address: Rate::OFF,
        lockout_after: 0,
        ..Limits::default()
    });
    for i in 0..100 {
        let a = attempt("victim", &format!("192.0.2.{}", i % 250));
        g.client_attempt(&a, "victim").unwrap();
        g.client_failed(&a).unwrap();
    }
    let a = attempt("victim", "198.51.100.1");
    g.client_attempt(&a, "victim").unwrap();
    g.client_succeeded(&a, "victim");
    g.client_attempt(&a, "victim").unwrap();
    g.client_succeeded(&a, "victim");
    let refused = g.client_attempt(&a, "victim").unwrap_err();
    assert_eq!(refused.scope, "token_client", "only its own tokens count");
}

#[test]
fn an_address_s_failure_budget_never_refuses_valid_credentials() {
    let (c, g) = guard(Limits {
        api_per_address: Rate {
            per_second: 1.0,
            burst: 3.0,
        },
        ..Limits::default()
    });
    let nat = source("203.0.113.9");
    let results: Vec<_> = (0..5).map(|_| g.api_failed(None, nat).is_ok()).collect();
    assert_eq!(results, [true, true, true, false, false]);
    assert_eq!(
        g.api_failed(None, nat).unwrap_err(),
        Refused {
            scope: "api_address",
            wait: Duration::from_secs(1)
        }
    );
    let valid = Attempt {
        identity: CredentialId::token(b"good"),
        source: nat,
    };
    g.api_attempt(Some(&valid)).unwrap();
    g.api_succeeded(Some(&valid), "svc.acme.web.prod.app", Some("acme"))
        .unwrap();
    c.advance(Duration::from_secs(1));
    assert!(g.api_failed(None, nat).is_ok(), "the budget refills");
}

#[test]
fn tables_sweep_idle_entries_and_never_pass_their_cap() {
    let c = clock();
    let rate = Rate {
        per_second: 1.0,
        burst: 2.0,
    };
    let b = Buckets::<String>::new(rate, dyn_clock(&c));
    *b.table.lock().unwrap() = Table::with_caps(4, 8);
    for i in 0..8 {
        b.take(&format!("k{i}")).unwrap();
    }
    assert_eq!(b.table.lock().unwrap().map.len(), 8);
    // Full of live entries: a new key is let through unrecorded.
    b.take("new").unwrap();
    assert_eq!(b.table.lock().unwrap().map.len(), 8);
    assert!(!b.table.lock().unwrap().map.contains_key("new"));
    // Once the old buckets have refilled they are forgotten.
    c.advance(Duration::from_secs(2));
    b.take("new").unwrap();
    let table = b.table.lock().unwrap();
    assert_eq!(table.map.len(), 1);
    assert!(table.map.contains_key("new"));
    drop(table);

    let l = Lockout::new(1, dyn_clock(&c));
    *l.table.lock().unwrap() = Table::with_caps(2, 2);
    let locked = attempt("x", "192.0.2.1");
    assert!(l.fail(&locked).is_some());
    assert!(l.fail(&attempt("y", "192.0.2.1")).is_some());
    assert_eq!(l.fail(&attempt("z", "192.0.2.1")), None, "full: uncounted");
    assert!(l.check(&locked).is_err(), "existing locks stay");
    // Locks expire, streaks go quiet: there is room again.
    c.advance(Duration::from_secs(901));
    assert!(l.fail(&attempt("z", "192.0.2.1")).is_some());
}
