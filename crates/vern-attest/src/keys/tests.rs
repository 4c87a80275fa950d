use serde_json::json;

use super::*;

#[test]
fn thumbprint_matches_rfc_8037() {
    let vector: Value =
        serde_json::from_str(include_str!("../../tests/data/rfc8037_thumbprint.json")).unwrap();
    let key = PublicKey::from_jwk(&vector["jwk"]).unwrap();
    assert_eq!(key.thumbprint(), vector["thumbprint"].as_str().unwrap());
}

#[test]
fn public_keys_round_trip_through_jwk_and_pem() {
    for alg in [KeyAlg::Ed25519, KeyAlg::EcdsaP256] {
        let (signer, _) = Signer::generate(alg);
        let public = signer.public();
        assert_eq!(public.alg(), alg);
        let trusted = TrustedKey {
            kid: public.thumbprint(),
            owner: KeyOwner::Tenant(TenantId::parse("acme").unwrap()),
            public: public.clone(),
            valid_from: 10,
            valid_until: Some(20),
        };
        assert_eq!(TrustedKey::from_jwk(&trusted.to_jwk()).unwrap(), trusted);
        let pem = public.to_pem().unwrap();
        assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----"));
        assert_eq!(PublicKey::from_pem(&pem).unwrap(), public);

        let sig = signer.sign(b"message");
        assert!(public.verify(b"message", &sig));
        assert!(!public.verify(b"messagf", &sig));
        assert!(!public.verify(b"message", &sig[1..]));
    }
}

#[test]
fn ecdsa_signatures_are_der() {
    let (signer, _) = Signer::generate(KeyAlg::EcdsaP256);
    let sig = signer.sign(b"m");
    // A DER SEQUENCE of two INTEGERs.
    assert_eq!(sig[0], 0x30);
    assert!(p256::ecdsa::Signature::from_der(&sig).is_ok());
    // The fixed-size form is refused: securesystemslib sends DER only.
    let fixed = p256::ecdsa::Signature::from_der(&sig).unwrap().to_bytes();
    assert!(!signer.public().verify(b"m", &fixed));
}

#[test]
fn refuses_bad_jwks() {
    let (signer, _) = Signer::generate(KeyAlg::Ed25519);
    let mut jwk = TrustedKey {
        kid: signer.public().thumbprint(),
        owner: KeyOwner::Platform,
        public: signer.public(),
        valid_from: 0,
        valid_until: None,
    }
    .to_jwk();
    let mut other_kid = jwk.clone();
    other_kid["kid"] = json!("someone-else");
    let mut private = jwk.clone();
    private["d"] = json!("AAAA");
    let mut wrong_crv = jwk.clone();
    wrong_crv["crv"] = json!("X25519");
    jwk.as_object_mut().unwrap().remove("vern_owner");
    for bad in [other_kid, private, wrong_crv, jwk] {
        assert!(
            matches!(TrustedKey::from_jwk(&bad), Err(AttestError::BadKey(_))),
            "{bad}"
        );
    }
    assert!(
        PublicKey::from_pem("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
            .is_err()
    );
}

#[test]
fn owners_and_windows() {
    assert_eq!(KeyOwner::parse("platform").unwrap(), KeyOwner::Platform);
    assert_eq!(
        KeyOwner::parse("tenant:acme").unwrap().to_string(),
        "tenant:acme"
    );
    for bad in ["tenant:", "tenant:A", "acme", "tenant:a/b"] {
        assert!(KeyOwner::parse(bad).is_err(), "{bad}");
    }
    let (signer, _) = Signer::generate(KeyAlg::Ed25519);
    let key = TrustedKey {
        kid: String::new(),
        owner: KeyOwner::Platform,
        public: signer.public(),
        valid_from: 10,
        valid_until: Some(20),
    };
    assert!(!key.valid_at(9));
    assert!(key.valid_at(10));
    assert!(key.valid_at(19));
    assert!(key.valid_at(20));
    assert!(!key.valid_at(21));
}
