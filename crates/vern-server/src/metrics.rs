//! Prometheus metrics, served at `/metrics` in the OpenMetrics text format.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Labels of the HTTP families. Every value comes from a fixed set, so no
/// caller can grow `/metrics` with labels of its choosing: the method is
/// one of [`method_label`]'s, the route a template of the route table or
/// `unmatched`, the status a number.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct HttpLabels {
    pub(crate) method: &'static str,
    pub(crate) route: String,
    pub(crate) status: u16,
}

/// The `method` label: the methods Vern serves (`LIST` is Vault's), and
/// `other` for anything a client makes up.
pub(crate) fn method_label(method: &axum::http::Method) -> &'static str {
    match method.as_str() {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "OPTIONS" => "OPTIONS",
        "LIST" => "LIST",
        _ => "other",
    }
}

type HistogramFamily = Family<HttpLabels, Histogram, fn() -> Histogram>;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct GuardLabels {
    /// Which limit or check: `token_client`, `token_address`,
    /// `api_principal`, `api_tenant`, `api_address`, `lockout` (refusals);
    /// `token_endpoint`, `api` (failures).
    pub(crate) scope: &'static str,
}

/// The label of the identity expiry family: a SPIFFE ID Vern issued. The
/// family holds at most [`MAX_IDENTITIES`] of them, so its size is bounded
/// whatever the number of workloads.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct IdentityLabels {
    pub(crate) spiffe_id: String,
}

/// Most identities `vern_pki_identity_expiry_timestamp_seconds` shows: the
/// ones whose certificates run out soonest, which are the ones an alert
/// is about.
pub(crate) const MAX_IDENTITIES: usize = 1000;

/// When each identity's last certificate expires, as shown.
struct Expiries {
    family: Family<IdentityLabels, Gauge>,
    total: Gauge,
    shown: Mutex<HashMap<String, i64>>,
}

/// The server's metric families.
#[derive(Clone)]
pub(crate) struct Metrics {
    registry: Arc<Registry>,
    requests: Family<HttpLabels, Counter>,
    latency: HistogramFamily,
    limited: Family<GuardLabels, Counter>,
    auth_failures: Family<GuardLabels, Counter>,
    audit_records: Counter,
    audit_failures: Counter,
    expiries: Arc<Expiries>,
}

fn latency_histogram() -> Histogram {
    // 50 µs to about 1.6 s, doubling.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
}

impl Metrics {
    pub(crate) fn new() -> Self {
        let mut registry = Registry::with_prefix("vern");
        let requests = Family::<HttpLabels, Counter>::default();
        let latency: HistogramFamily = Family::new_with_constructor(latency_histogram);
        registry.register(
            "http_requests",
            "HTTP requests handled, by method, route and status",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency, by method, route and status",
            latency.clone(),
        );
        let limited = Family::<GuardLabels, Counter>::default();
        let auth_failures = Family::<GuardLabels, Counter>::default();
        registry.register(
            "rate_limited",
            "Requests refused with 429, by the limit or lockout that refused them",
            limited.clone(),
        );
        registry.register(
            "auth_failures",
            "Failed authentications, by where they happened",
            auth_failures.clone(),
        );
        let audit_records = Counter::default();
        let audit_failures = Counter::default();
        registry.register(
            "audit_records",
            "Audit records made durable",
            audit_records.clone(),
        );
        registry.register(
            "audit_failures",
            "Requests failed because their audit record could not be written",
            audit_failures.clone(),
        );
        let expiries = Arc::new(Expiries {
            family: Family::default(),
            total: Gauge::default(),
            shown: Mutex::new(HashMap::new()),
        });
        registry.register(
            "pki_identity_expiry_timestamp_seconds",
            "When the last unexpired certificate of a SPIFFE ID expires (Unix time), for the 1000 that expire soonest",
            expiries.family.clone(),
        );
        registry.register(
            "pki_identities",
            "SPIFFE IDs holding an unexpired certificate",
            expiries.total.clone(),
        );
        Self {
            registry: Arc::new(registry),
            requests,
            latency,
            limited,
            auth_failures,
            audit_records,
            audit_failures,
            expiries,
        }
    }

    /// Replaces the identity expiries with a fresh reading: the soonest
    /// `shown` (at most [`MAX_IDENTITIES`]) and the number of identities.
    pub(crate) fn identity_expiries(&self, shown: &[(String, u64)], total: usize) {
        let e = &self.expiries;
        let mut map = e.shown.lock().unwrap_or_else(|p| p.into_inner());
        e.family.clear();
        map.clear();
        for (id, at) in shown.iter().take(MAX_IDENTITIES) {
            let at = i64::try_from(*at).unwrap_or(i64::MAX);
            e.family
                .get_or_create(&IdentityLabels {
                    spiffe_id: id.clone(),
                })
                .set(at);
            map.insert(id.clone(), at);
        }
        e.total.set(i64::try_from(total).unwrap_or(i64::MAX));
    }

    /// A certificate issued here for `spiffe_id`, until `not_after`: shown
    /// at once if the identity is shown or there is room, else at the next
    /// reading.
    pub(crate) fn certificate_issued(&self, spiffe_id: &str, not_after: u64) {
        let e = &self.expiries;
        let mut map = e.shown.lock().unwrap_or_else(|p| p.into_inner());
        let at = i64::try_from(not_after).unwrap_or(i64::MAX);
        let known = map.contains_key(spiffe_id);
        if !known && map.len() >= MAX_IDENTITIES {
            return;
        }
        let entry = map.entry(spiffe_id.to_owned()).or_insert(at);
        *entry = (*entry).max(at);
        e.family
            .get_or_create(&IdentityLabels {
                spiffe_id: spiffe_id.to_owned(),
            })
            .set(*entry);
        if !known {
            e.total.inc();
        }
    }

    pub(crate) fn limited(&self, scope: &'static str) {
        self.limited.get_or_create(&GuardLabels { scope }).inc();
    }

    pub(crate) fn auth_failed(&self, scope: &'static str) {
        self.auth_failures
            .get_or_create(&GuardLabels { scope })
            .inc();
    }

    /// One audit record appended, or one that could not be.
    pub(crate) fn audited(&self, ok: bool) {
        if ok {
            self.audit_records.inc();
        } else {
            self.audit_failures.inc();
        }
    }

    pub(crate) fn observe(&self, labels: HttpLabels, seconds: f64) {
        self.latency.get_or_create(&labels).observe(seconds);
        self.requests.get_or_create(&labels).inc();
    }

    pub(crate) fn render(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use axum::http::Method;

    use super::*;

    #[test]
    fn identity_expiries_stay_bounded() {
        let m = Metrics::new();
        let many: Vec<(String, u64)> = (0..MAX_IDENTITIES as u64 + 50)
            .map(|i| (format!("spiffe://td/s/{i}"), 1000 + i))
            .collect();
        m.identity_expiries(&many, many.len());
        for i in 0..100 {
            m.certificate_issued(&format!("spiffe://td/new/{i}"), 5000);
        }
        m.certificate_issued("spiffe://td/s/0", 9000);
        let text = m.render().unwrap();
        let shown = text
            .lines()
            .filter(|l| l.starts_with("vern_pki_identity_expiry_timestamp_seconds{"))
            .count();
        assert_eq!(shown, MAX_IDENTITIES);
        assert!(text.contains(
            r#"vern_pki_identity_expiry_timestamp_seconds{spiffe_id="spiffe://td/s/0"} 9000"#
        ));
        assert!(!text.contains("spiffe://td/new/"));
        assert!(text.contains(&format!("vern_pki_identities {}", MAX_IDENTITIES + 50)));
        m.identity_expiries(&many[..2], 2);
        let text = m.render().unwrap();
        assert!(!text.contains("spiffe://td/s/5\""));
        assert!(text.contains("vern_pki_identities 2"));
    }

    #[test]
    fn made_up_methods_share_one_label() {
        let m = Metrics::new();
        for i in 0..100 {
            let method = Method::from_bytes(format!("X{i}").as_bytes()).unwrap();
            assert_eq!(method_label(&method), "other");
            m.observe(
                HttpLabels {
                    method: method_label(&method),
                    route: "unmatched".to_owned(),
                    status: 405,
                },
                0.001,
            );
        }
        assert_eq!(method_label(&Method::from_bytes(b"LIST").unwrap()), "LIST");
        assert_eq!(method_label(&Method::GET), "GET");
        let text = m.render().unwrap();
        assert!(!text.contains("X1"), "{text}");
        assert!(text.contains(
            r#"vern_http_requests_total{method="other",route="unmatched",status="405"} 100"#
        ));
    }
}
