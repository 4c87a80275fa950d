use serde_json::json;

use super::*;
use crate::digest::SubjectRef;
use crate::statement::{SLSA_PROVENANCE_V1, VULNS_V01};

fn env() -> Scope {
    parse_environment("acme/web/prod").unwrap()
}

fn counted(n: u8, predicate_type: &str, signer: &str, at: u64, predicate: Value) -> Counted {
    let subject = SubjectRef::parse(&format!("web@sha256:{}", "a".repeat(64))).unwrap();
    Counted {
        address: Sha256Digest::of(&[n]),
        signer: signer.to_owned(),
        signed_at: at,
        statement: Statement::new(&subject, predicate_type, predicate).unwrap(),
    }
}

fn scan(critical: usize) -> Value {
    let result: Vec<Value> = (0..critical)
        .map(|i| json!({"id": format!("CVE-{i}"), "severity": [{"method": "nvd", "score": "CRITICAL"}]}))
        .collect();
    json!({"scanner": {"result": result}})
}

fn gate() -> Gate {
    Gate::new(
        env(),
        vec![
            Requirement {
                predicate_type: SLSA_PROVENANCE_V1.into(),
                signer: Some("svc.acme.ci.prod.builder".into()),
                max_critical: None,
            },
            Requirement {
                predicate_type: VULNS_V01.into(),
                signer: None,
                max_critical: Some(0),
            },
        ],
    )
    .unwrap()
}

#[test]
fn every_requirement_must_be_met_and_each_miss_is_named() {
    let g = gate();
    let out = evaluate(&g, &[]);
    assert!(!out.allowed);
    assert_eq!(out.missing.len(), 2);
    assert!(
        out.missing[0].contains("requirement 1"),
        "{:?}",
        out.missing
    );
    assert!(out.missing[1].contains(VULNS_V01), "{:?}", out.missing);

    // Provenance by another signer does not count, and says so.
    let other = counted(
        1,
        SLSA_PROVENANCE_V1,
        "svc.acme.web.prod.dev",
        10,
        json!({}),
    );
    let out = evaluate(&g, std::slice::from_ref(&other));
    assert!(out.missing[0].contains("signed by svc.acme.web.prod.dev does not count"));

    let prov = counted(
        2,
        SLSA_PROVENANCE_V1,
        "svc.acme.ci.prod.builder",
        10,
        json!({}),
    );
    let clean = counted(3, VULNS_V01, "svc.acme.ci.prod.scanner", 11, scan(0));
    let out = evaluate(&g, &[other, prov.clone(), clean.clone()]);
    assert!(out.allowed, "{:?}", out.missing);
    assert_eq!(out.used.len(), 2);
    assert_eq!(out.used[0].address, prov.address);
    assert_eq!(out.used[1].critical, Some(0));

    // A newer scan with a critical finding outweighs the older clean one.
    let dirty = counted(4, VULNS_V01, "svc.acme.ci.prod.scanner", 12, scan(1));
    let out = evaluate(&g, &[prov.clone(), clean.clone(), dirty.clone()]);
    assert!(!out.allowed);
    assert!(
        out.missing[0].contains("1 critical findings"),
        "{:?}",
        out.missing
    );
    assert!(out.missing[0].contains(&dirty.address.to_string()));

    // In the same second, the worse scan decides, whatever the addresses.
    let same = counted(6, VULNS_V01, "svc.acme.ci.prod.scanner", 12, scan(0));
    let out = evaluate(&g, &[prov.clone(), same.clone(), dirty.clone()]);
    assert!(!out.allowed);
    let out = evaluate(&g, &[prov.clone(), dirty, same]);
    assert!(!out.allowed);

    // A predicate without a scan's shape does not meet a limit.
    let odd = counted(
        5,
        VULNS_V01,
        "svc.acme.ci.prod.scanner",
        13,
        json!({"x": 1}),
    );
    let out = evaluate(&g, &[prov, odd]);
    assert!(out.missing[0].contains("not a vulnerability scan"));
}

#[test]
fn malformed_gates_are_refused() {
    assert!(Gate::new(env(), vec![]).is_err());
    for (pt, signer) in [
        ("", None),
        ("a b", None),
        ("x", Some("")),
        ("x", Some("a\nb")),
    ] {
        let r = Requirement {
            predicate_type: pt.into(),
            signer: signer.map(str::to_owned),
            max_critical: None,
        };
        assert!(matches!(
            Gate::new(env(), vec![r]),
            Err(AttestError::BadGate(_))
        ));
    }
    for bad in ["acme/web", "acme/web/prod/x", "Acme/web/prod", "acme//prod"] {
        assert!(parse_environment(bad).is_err(), "{bad}");
    }
}
