//! Conventions that the compiler cannot check, checked on every `cargo test`:
//! each crate forbids unsafe code and has module docs, domain crates know
//! nothing of HTTP and reach storage only through barrier views,
//! dependencies point down the layers, library crates do not print, and no
//! test is ignored.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation
)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Layer of each crate: a crate may depend only on crates of a lower layer.
const LAYERS: &[(&str, u8)] = &[
    ("vern-core", 0),
    ("vern-crypto", 0),
    ("vern-store", 0),
    ("vern-seal", 1),
    ("vern-pki", 2),
    ("vern-secrets", 2),
    ("vern-authority", 2),
    ("vern-attest", 2),
    ("vern-nats", 2),
    ("vern-policy", 2),
    ("vern-audit", 2),
    ("vern-server", 3),
    ("vern", 4),
];

/// The layer of domain crates, between the server and the seal.
const DOMAIN_LAYER: u8 = 2;

/// Domain crates allowed to use `vern-store` directly, with the reason.
/// Every other domain reaches storage only through a `vern_seal::BarrierView`
/// scoped to its own prefix.
const STORE_EXCEPTIONS: &[(&str, &str)] = &[(
    "vern-audit",
    "audit records and checkpoints hold only HMACs and are stored in clear, \
     so `vern audit verify` works without unsealing; its keys go through a view",
)];

/// Dependencies between crates of one layer, with the reason. Anything
/// else between peers is sideways and refused.
const SIDEWAYS: &[(&str, &str, &str)] = &[(
    "vern-authority",
    "vern-pki",
    "the token authority reads client certificates' SANs and issuers' PEM keys \
     with vern-pki's TLS helpers (RFC 8705 tls_client_auth, JWKS servers' CAs)",
)];

/// Crates allowed to depend on HTTP stacks.
const HTTP_CRATES: &[&str] = &["vern-server", "vern"];
const HTTP_DEPS: &[&str] = &[
    "axum",
    "axum-server",
    "hyper",
    "hyper-util",
    "tower",
    "tower-http",
    "reqwest",
    "http",
];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

fn crates() -> BTreeMap<String, PathBuf> {
    std::fs::read_dir(workspace().join("crates"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("Cargo.toml").exists())
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), p))
        .collect()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Names in the `[dependencies]` table (not dev-dependencies).
fn dependencies(manifest: &str) -> Vec<String> {
    let mut in_deps = false;
    let mut out = Vec::new();
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_deps = line == "[dependencies]";
            continue;
        }
        if in_deps && !line.is_empty() && !line.starts_with('#') {
            let name = line.split(['=', '.', ' ']).next().unwrap().trim();
            out.push(name.to_owned());
        }
    }
    out
}

#[test]
fn every_crate_is_known_and_layered() {
    let known: BTreeMap<&str, u8> = LAYERS.iter().copied().collect();
    for (name, dir) in crates() {
        let layer = *known
            .get(name.as_str())
            .unwrap_or_else(|| panic!("crate {name} has no layer in tidy.rs LAYERS"));
        let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
        assert!(
            manifest.contains("[lints]\nworkspace = true"),
            "{name} must inherit the workspace lints"
        );
        for dep in dependencies(&manifest) {
            if let Some(dep_layer) = known.get(dep.as_str()) {
                let allowed = SIDEWAYS
                    .iter()
                    .any(|(from, to, _)| *from == name && *to == dep);
                assert!(dep_layer < &layer || allowed, "{name} (layer {layer}) depends on {dep} (layer {dep_layer}): dependencies point down");
            }
            if HTTP_DEPS.contains(&dep.as_str()) {
                assert!(
                    HTTP_CRATES.contains(&name.as_str()),
                    "{name} depends on {dep}: only vern-server knows HTTP"
                );
            }
        }
    }
}

#[test]
fn sideways_exceptions_are_real() {
    let layers: BTreeMap<&str, u8> = LAYERS.iter().copied().collect();
    let crates = crates();
    for (from, to, reason) in SIDEWAYS {
        assert_eq!(
            layers.get(from),
            layers.get(to),
            "{from} -> {to} ({reason}) is not between peers; remove the exception"
        );
        let manifest = std::fs::read_to_string(crates[*from].join("Cargo.toml")).unwrap();
        assert!(
            dependencies(&manifest).iter().any(|d| d == to),
            "{from} no longer depends on {to}; remove the exception"
        );
    }
}

#[test]
fn domains_reach_storage_only_through_barrier_views() {
    let layers: BTreeMap<&str, u8> = LAYERS.iter().copied().collect();
    let crates = crates();
    for (name, reason) in STORE_EXCEPTIONS {
        assert!(
            layers.get(name) == Some(&DOMAIN_LAYER) && crates.contains_key(*name),
            "store exception for {name} ({reason}) names no domain crate; remove it"
        );
    }
    let domains = crates
        .iter()
        .filter(|(name, _)| layers.get(name.as_str()) == Some(&DOMAIN_LAYER))
        .filter(|(name, _)| !STORE_EXCEPTIONS.iter().any(|(e, _)| e == name));
    for (name, dir) in domains {
        let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
        assert!(
            !dependencies(&manifest).iter().any(|d| d == "vern-store"),
            "{name} depends on vern-store: a domain reaches storage only through \
             a barrier view (vern_seal::Barrier::view), and tests may use it as a \
             dev-dependency"
        );
        let mut files = Vec::new();
        rust_files(&dir.join("src"), &mut files);
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap();
            assert!(
                !text.contains("vern_store"),
                "{} names vern_store: use what vern_seal re-exports",
                f.display()
            );
        }
    }
}

#[test]
fn every_crate_root_forbids_unsafe_and_has_docs() {
    for (name, dir) in crates() {
        let root = ["src/lib.rs", "src/main.rs"]
            .iter()
            .map(|f| dir.join(f))
            .find(|p| p.exists())
            .unwrap();
        let text = std::fs::read_to_string(&root).unwrap();
        assert!(
            text.starts_with("//!"),
            "{name}: crate root must start with //! docs"
        );
        assert!(
            text.contains("#![forbid(unsafe_code)]"),
            "{name}: crate root must forbid unsafe code"
        );
        let mut files = Vec::new();
        rust_files(&dir.join("src/bin"), &mut files);
        for bin in files {
            let text = std::fs::read_to_string(&bin).unwrap();
            assert!(
                text.contains("#![forbid(unsafe_code)]"),
                "{} must forbid unsafe code",
                bin.display()
            );
        }
    }
}

#[test]
fn library_code_does_not_print() {
    for (name, dir) in crates() {
        if name == "vern" {
            continue;
        }
        let mut files = Vec::new();
        rust_files(&dir.join("src"), &mut files);
        for f in files {
            let rel = f.strip_prefix(&dir).unwrap().to_string_lossy().into_owned();
            // Binaries and test support talk to their terminal on purpose.
            if rel.starts_with("src/bin/") || rel == "src/testing.rs" {
                continue;
            }
            let text = std::fs::read_to_string(&f).unwrap();
            for bad in ["println!", "eprintln!", "dbg!"] {
                assert!(
                    !text.contains(bad),
                    "{name}/{rel} uses {bad}; log with tracing instead"
                );
            }
        }
    }
}

#[test]
fn no_test_is_ignored_or_expected_to_panic() {
    let mut files = Vec::new();
    for (_, dir) in crates() {
        rust_files(&dir, &mut files);
    }
    let (ignore, should_panic) = (["#[", "ignore]"].concat(), ["#[", "should_panic"].concat());
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        assert!(!text.contains(&ignore), "{} ignores a test", f.display());
        assert!(
            !text.contains(&should_panic),
            "{} uses should_panic",
            f.display()
        );
    }
}

#[test]
fn architecture_doc_maps_every_crate() {
    let doc = std::fs::read_to_string(workspace().join("docs/ARCHITECTURE.md")).unwrap();
    for name in crates().keys() {
        assert!(
            doc.contains(&format!("### `{name}`")),
            "docs/ARCHITECTURE.md has no section for {name}"
        );
    }
}

#[test]
fn readme_and_ci_run_the_same_test_command() {
    let readme = std::fs::read_to_string(workspace().join("README.md")).unwrap();
    let ci = std::fs::read_to_string(workspace().join(".ci/run")).unwrap();
    assert!(
        readme.contains("./scripts/test"),
        "README must give ./scripts/test"
    );
    assert!(
        ci.lines().any(|l| l.trim() == "./scripts/test"),
        ".ci/run must run ./scripts/test"
    );
    assert!(
        readme.contains("vern serve --dev"),
        "README must give the dev command"
    );
}
