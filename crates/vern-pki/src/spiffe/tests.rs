use proptest::prelude::*;
use vern_core::{EnvironmentId, ProjectId};

use super::*;

fn check(input: &str, want: Result<(), SpiffeIdError>) {
    let got = SpiffeId::parse(input).map(|id| {
        assert_eq!(id.to_string(), input, "round trip");
    });
    assert_eq!(got, want, "input {input:?}");
}

#[test]
fn spiffe_ids_per_the_specification() {
    for good in [
        "spiffe://example.org/workload",
        "spiffe://vern.internal/t/acme/p/web/e/prod/s/api",
        "spiffe://a_b-c.d/Upper/CASE.ok-_",
        "spiffe://1/2",
    ] {
        check(good, Ok(()));
    }
    use SpiffeIdError::*;
    for (bad, err) in [
        ("", Scheme),
        ("https://example.org/x", Scheme),
        ("SPIFFE://example.org/x", Scheme),
        ("spiffe:/example.org/x", Scheme),
        ("spiffe://", EmptyTrustDomain),
        ("spiffe:///x", EmptyTrustDomain),
        ("spiffe://example.org", EmptySegment),
        ("spiffe://example.org/", EmptySegment),
        ("spiffe://example.org/a//b", EmptySegment),
        ("spiffe://example.org/a/", EmptySegment),
        ("spiffe://example.org/./a", DotSegment),
        ("spiffe://example.org/a/..", DotSegment),
        ("spiffe://Example.org/a", TrustDomainChar('E')),
        ("spiffe://example.org:8443/a", TrustDomainChar(':')),
        ("spiffe://user@example.org/a", TrustDomainChar('@')),
        ("spiffe://example.org/a%20b", PathChar('%')),
        ("spiffe://example.org/a?b", PathChar('?')),
        ("spiffe://example.org/a#b", PathChar('#')),
        ("spiffe://example.org/é", PathChar('é')),
    ] {
        check(bad, Err(err));
    }
    let long_td = format!("spiffe://{}/a", "a".repeat(256));
    check(&long_td, Err(TrustDomainTooLong(256)));
    let long = format!("spiffe://example.org/{}", "a".repeat(2048));
    check(&long, Err(TooLong(long.len())));
}

#[test]
fn trust_domains() {
    assert_eq!(
        TrustDomain::parse(TrustDomain::DEFAULT).unwrap().id(),
        "spiffe://vern.internal"
    );
    for bad in ["", "Vern.internal", "vern internal", "vern/x", "a:1"] {
        assert!(TrustDomain::parse(bad).is_err(), "{bad}");
    }
}

fn scope(t: &str, p: &str, e: &str) -> Scope {
    Scope {
        tenant: TenantId::parse(t).unwrap(),
        project: ProjectId::parse(p).unwrap(),
        environment: EnvironmentId::parse(e).unwrap(),
    }
}

#[test]
fn each_kind_of_principal_has_its_own_tree() {
    let td = TrustDomain::parse("vern.internal").unwrap();
    let id_of = |principal: Principal| -> Result<String, IdentityError> {
        Ok(Workload::of(&principal)?
            .spiffe_id(&td)
            .unwrap()
            .to_string())
    };
    let service = |id: &str, s: Scope| Principal {
        id: id.to_owned(),
        kind: PrincipalKind::Service { scope: s },
    };
    let operator = |id: &str, tenant: Option<&str>| Principal {
        id: id.to_owned(),
        kind: PrincipalKind::Operator {
            root: false,
            tenant: tenant.map(|t| TenantId::parse(t).unwrap()),
        },
    };
    assert_eq!(
        id_of(service(
            "svc.acme.web.prod.api",
            scope("acme", "web", "prod")
        ))
        .unwrap(),
        "spiffe://vern.internal/t/acme/p/web/e/prod/s/api"
    );
    assert_eq!(
        id_of(operator("op.alice", None)).unwrap(),
        "spiffe://vern.internal/operator/alice"
    );
    assert_eq!(
        id_of(operator("op.acme.bob", Some("acme"))).unwrap(),
        "spiffe://vern.internal/t/acme/operator/bob"
    );
    assert_eq!(
        Workload::Component("server".into())
            .spiffe_id(&td)
            .unwrap()
            .to_string(),
        "spiffe://vern.internal/vern/server"
    );
    assert_eq!(id_of(Principal::root()), Err(IdentityError::Root));
    // An id that does not match its kind's shape names no one: never a
    // guess, and never another tenant's tree.
    for p in [
        service("svc.globex.web.prod.api", scope("acme", "web", "prod")),
        service("svc.acme.web.prod.a.b", scope("acme", "web", "prod")),
        service("svc.acme.web.prod.", scope("acme", "web", "prod")),
        operator("op.globex.bob", Some("acme")),
        operator("alice", None),
        operator("op.a/b", None),
    ] {
        assert!(matches!(id_of(p), Err(IdentityError::Malformed(_))));
    }
}

/// The specification's grammar, written out independently of the parser.
fn valid_by_spec(s: &str) -> bool {
    let Some(rest) = s.strip_prefix("spiffe://") else {
        return false;
    };
    let Some(slash) = rest.find('/') else {
        return false;
    };
    let (td, path) = rest.split_at(slash);
    let td_ok = !td.is_empty()
        && td.len() <= 255
        && td
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    let path_ok = path[1..].split('/').all(|seg| {
        !seg.is_empty()
            && seg != "."
            && seg != ".."
            && seg
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    });
    td_ok && path_ok && s.len() <= 2048
}

proptest! {
    /// Any string: accepted exactly when the grammar says so, and an
    /// accepted ID prints back as given.
    #[test]
    fn parsing_matches_the_grammar(s in "(spiffe://)?[a-zA-Z0-9._:@%/ -]{0,40}") {
        let parsed = SpiffeId::parse(&s);
        prop_assert_eq!(parsed.is_ok(), valid_by_spec(&s), "{:?}", parsed);
        if let Ok(id) = parsed {
            prop_assert_eq!(id.to_string(), s);
        }
    }

    /// Every service principal gets a valid ID naming its own scope and
    /// name, and two different services never share one.
    #[test]
    fn service_ids_are_valid_and_distinct(
        a in ("[a-z][a-z0-9_-]{0,8}", "[a-z][a-z0-9]{0,5}", "[a-z]{1,4}", "[a-z0-9][a-z0-9_-]{0,8}"),
        b in ("[a-z][a-z0-9_-]{0,8}", "[a-z][a-z0-9]{0,5}", "[a-z]{1,4}", "[a-z0-9][a-z0-9_-]{0,8}"),
    ) {
        let td = TrustDomain::parse("example.org").unwrap();
        let id = |(t, p, e, n): &(String, String, String, String)| {
            let principal = Principal {
                id: format!("svc.{t}.{p}.{e}.{n}"),
                kind: PrincipalKind::Service { scope: scope(t, p, e) },
            };
            Workload::of(&principal).unwrap().spiffe_id(&td).unwrap()
        };
        let (ia, ib) = (id(&a), id(&b));
        prop_assert!(SpiffeId::parse(&ia.to_string()).is_ok());
        prop_assert_eq!(ia == ib, a == b);
    }
}

#[test]
fn only_service_ids_name_a_service_client() {
    for (id, want) in [
        (
            "spiffe://vern.internal/t/acme/p/web/e/prod/s/api",
            Some("svc.acme.web.prod.api"),
        ),
        ("spiffe://vern.internal/t/acme/operator/dana", None),
        ("spiffe://vern.internal/operator/dana", None),
        ("spiffe://vern.internal/vern/agent/n1", None),
        ("spiffe://vern.internal/vern/server", None),
        ("spiffe://vern.internal/t/acme/p/web/e/prod/s/api/x", None),
        ("spiffe://vern.internal/t/acme/p/web/e/prod/x/api", None),
        ("spiffe://vern.internal/t/ACME/p/web/e/prod/s/api", None),
        ("spiffe://vern.internal/t/acme/p/web/e/prod/s/a.b", None),
    ] {
        let parsed = SpiffeId::parse(id).unwrap();
        assert_eq!(parsed.service_client_id().as_deref(), want, "{id}");
    }
}
