use super::*;

fn section(yaml: serde_json::Value) -> Result<NatsSection, String> {
    let s: NatsSection = serde_json::from_value(yaml).map_err(|e| e.to_string())?;
    s.check().map_err(|e| e.to_string())?;
    Ok(s)
}

#[test]
fn a_whole_section_checks() {
    let s = section(serde_json::json!({
        "site": "dc1",
        "sites": [{"name": "dc2",
                   "gateway": {"urls": ["nats://dc2.example:7222"]},
                   "leafnode": {"url": "nats-leaf://dc2.example:7422", "accounts": ["acme"],
                                "deny_exports": ["secret.>"]}}],
        "mappings": [{"tenant": "acme", "from": "orders.v1.>", "to": "orders.>"}],
    }))
    .unwrap();
    assert!(s.declares_sites());
    assert_eq!(
        s.mapping_tenants().into_iter().collect::<Vec<_>>(),
        vec!["acme"]
    );
}

#[test]
fn bad_declarations_are_refused() {
    let bad = |v: serde_json::Value| section(v).unwrap_err();
    assert!(bad(serde_json::json!({"site": "DC1"})).contains("not a site name"));
    assert!(bad(serde_json::json!({"site": "dc1", "sites": [{"name": "dc1", "gateway": {"urls": ["nats://a:1"]}}]}))
        .contains("is this site"));
    assert!(bad(
        serde_json::json!({"sites": [{"name": "dc2", "gateway": {"urls": ["nats://a:1"]}}]})
    )
    .contains("needs this site's name"));
    assert!(bad(serde_json::json!({"sites": [{"name": "dc2"}]})).contains("gateway or a leafnode"));
    let leaf = |url: &str, accounts: serde_json::Value| {
        bad(
            serde_json::json!({"sites": [{"name": "dc2", "leafnode": {"url": url, "accounts": accounts}}]}),
        )
    };
    assert!(leaf("nats-leaf://u:p@h:7422", serde_json::json!(["acme"])).contains("credentials"));
    assert!(leaf("http://h:7422", serde_json::json!(["acme"])).contains("must start with"));
    assert!(leaf("nats-leaf://h\":7422", serde_json::json!(["acme"])).contains("no quotes"));
    assert!(leaf("nats-leaf://h:7422", serde_json::json!(["SYS"])).contains("not a tenant"));
    assert!(leaf("nats-leaf://h:7422", serde_json::json!([])).contains("accounts"));
    let map = |from: &str, to: &str| {
        bad(serde_json::json!({"mappings": [{"tenant": "acme", "from": from, "to": to}]}))
    };
    assert!(map("a.>", "$JS.API.>").contains("privileged"));
    assert!(map("$SYS.>", "a.>").contains("privileged"));
    assert!(map("a.b", "c.>").contains("wildcards"));
    assert!(map("a.*", "c.*").contains("name the source's N-th"));
    assert!(map("a.*", "c.$2").contains("does not have"));
    assert!(map("a.*", "c.$x").contains("is not $N"));
    section(serde_json::json!({"mappings": [
        {"tenant": "acme", "from": "a.*.*", "to": "b.$2.{{wildcard(1)}}"}]}))
    .unwrap();
    let m = Mapping {
        tenant: "acme".to_owned(),
        from: Subject::parse("a.*.*").unwrap(),
        to: Subject::parse("b.$2.{{wildcard(1)}}").unwrap(),
    };
    assert_eq!(m.destination().as_str(), "b.*.*");
    assert!(map("a.b", "a.b").contains("itself"));
    assert!(bad(serde_json::json!({"mappings": [
        {"tenant": "acme", "from": "a", "to": "b"},
        {"tenant": "acme", "from": "a", "to": "c"}]}))
    .contains("mapped twice"));
    assert!(section(serde_json::json!({"sites": [], "extra": 1})).is_err());
}
