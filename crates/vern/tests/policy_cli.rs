//! `vern policy` as authors and CI use it: validation, test cases with a
//! failing exit code, and explanations.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation
)]

mod common;

use common::*;

fn shipped() -> String {
    path_str(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies"))
}

#[test]
fn the_shipped_policies_validate_and_pass_their_cases() {
    let dir = shipped();
    let out = vern(&["policy", "validate", &dir], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("valid against Vern's schema"));
    let out = vern(&["policy", "test", &format!("{dir}/cases.yaml")], &[]);
    assert!(out.status.success(), "{}", text(&out.stdout));
    assert!(text(&out.stdout).contains("64 passed, 0 failed"));
    let report = ok_json(&vern(
        &["policy", "test", "-o", "json", &format!("{dir}/cases.yaml")],
        &[],
    ));
    assert_eq!(report["failed"], 0);
}

#[test]
fn a_broken_policy_or_a_wrong_expectation_fails() {
    let work = temp();
    std::fs::write(
        work.path().join("bad.cedar"),
        "permit (principal is Vern::Operater, action, resource);",
    )
    .unwrap();
    let d = path_str(work.path());
    let out = vern(&["policy", "validate", &d], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("bad.cedar") || text(&out.stderr).contains("Operater"),
        "{}",
        text(&out.stderr)
    );

    std::fs::remove_file(work.path().join("bad.cedar")).unwrap();
    std::fs::write(
        work.path().join("cases.yaml"),
        "policies: .\ncases:\n  - name: wrongly expected\n    principal: service:svc.a.b.c.d@a/b/c\n    action: secret.read\n    resource: secret:x/b/c/d\n    expect: allow\n",
    )
    .unwrap();
    let out = vern(&["policy", "test", &format!("{d}/cases.yaml")], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stdout).contains("FAIL wrongly expected"),
        "{}",
        text(&out.stdout)
    );
    assert!(text(&out.stdout).contains("0 passed, 1 failed"));
}

#[test]
fn explain_names_the_deciding_policies() {
    let dir = shipped();
    let allow = ok_json(&vern(
        &[
            "policy",
            "explain",
            "--policies",
            &dir,
            "--principal",
            "service:svc.acme.web.prod.api@acme/web/prod",
            "--action",
            "secret.read",
            "--resource",
            "secret:globex/shared/prod/flags",
            "-o",
            "json",
        ],
        &[],
    ));
    assert_eq!(allow["decision"], "allow");
    assert_eq!(allow["cross_tenant_grant"], "acme-web-reads-globex-shared");
    // An SVID's DNS names are part of the question.
    let svid = |names: &[&str]| {
        let mut args = vec![
            "policy",
            "explain",
            "--policies",
            &dir,
            "--principal",
            "service:svc.acme.web.prod.api@acme/web/prod",
            "--action",
            "svid.issue",
            "--resource",
            "service:svc.acme.web.prod.api@acme/web/prod",
            "-o",
            "json",
        ];
        for n in names {
            args.extend(["--dns-name", n]);
        }
        serde_json::from_slice::<serde_json::Value>(&vern(&args, &[]).stdout).unwrap()
    };
    assert_eq!(
        svid(&[])["policies"],
        serde_json::json!(["acme-api-dns-names", "vern.svid-self"])
    );
    assert_eq!(
        svid(&["api.acme.example"])["policies"],
        serde_json::json!(["acme-api-dns-names"])
    );
    assert_eq!(svid(&["evil.example"])["decision"], "deny");
    let out = vern(
        &[
            "policy",
            "explain",
            "--principal",
            "service:svc.acme.web.prod.api@acme/web/prod",
            "--action",
            "secret.read",
            "--resource",
            "secret:globex/web/prod/db",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2), "deny exits 2");
    assert!(text(&out.stdout).contains("DENY: determined by vern.tenant-isolation"));
    let out = vern(
        &[
            "policy",
            "explain",
            "--principal",
            "nobody",
            "--action",
            "secret.read",
            "--resource",
            "platform",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("principal `nobody`"),
        "{}",
        text(&out.stderr)
    );
}
