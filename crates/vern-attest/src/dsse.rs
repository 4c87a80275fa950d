//! DSSE envelopes (Dead Simple Signing Envelope, v1.0.2): a payload, its
//! type and signatures over the pre-authentication encoding of both, so a
//! signature can never be read as one over another type's bytes.
//!
//! Signatures and the payload are written in standard base64 as the spec's
//! JSON envelope and securesystemslib use; both standard and URL-safe
//! base64, padded or not, are read, as the spec asks of verifiers.

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::digest::Sha256Digest;
use crate::AttestError;

/// The largest envelope accepted, in bytes: statements are small, and a
/// bound keeps a hostile body from costing memory.
pub const MAX_ENVELOPE_BYTES: usize = 1 << 20;

/// The most signatures an envelope may carry.
const MAX_SIGNATURES: usize = 16;

/// `PAE(type, body) = "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body`,
/// lengths as ASCII decimal byte counts: the bytes a signature covers.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload_type.len() + payload.len() + 32);
    out.extend_from_slice(b"DSSEv1 ");
    out.extend_from_slice(payload_type.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload_type.as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload);
    out
}

/// One signature of an envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvelopeSignature {
    /// The signing key's id; Vern's keys are named by their RFC 7638 JWK
    /// thumbprint. It is not covered by the signature, so it only says
    /// which key to try, never who signed.
    #[serde(default)]
    pub keyid: String,
    /// The signature, base64.
    pub sig: String,
}

/// A DSSE envelope as it travels in JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    /// The payload, base64.
    pub payload: String,
    /// The payload's media type.
    #[serde(rename = "payloadType")]
    pub payload_type: String,
    /// The signatures over `PAE(payloadType, payload)`.
    pub signatures: Vec<EnvelopeSignature>,
}

impl Envelope {
    /// An unsigned envelope around `payload`.
    pub fn new(payload_type: &str, payload: &[u8]) -> Self {
        Self {
            payload: STANDARD.encode(payload),
            payload_type: payload_type.to_owned(),
            signatures: Vec::new(),
        }
    }

    /// Parses an envelope from its JSON bytes, refusing oversize input,
    /// unknown fields, undecodable base64 and envelopes without signatures.
    pub fn parse(bytes: &[u8]) -> Result<Self, AttestError> {
        if bytes.len() > MAX_ENVELOPE_BYTES {
            return Err(AttestError::Malformed(format!(
                "the envelope is {} bytes, more than the {MAX_ENVELOPE_BYTES} accepted",
                bytes.len()
            )));
        }
        let env: Self = serde_json::from_slice(bytes)
            .map_err(|e| AttestError::Malformed(format!("not a DSSE envelope: {e}")))?;
        if env.signatures.is_empty() {
            return Err(AttestError::Malformed(
                "the envelope has no signature".into(),
            ));
        }
        if env.signatures.len() > MAX_SIGNATURES {
            return Err(AttestError::Malformed(format!(
                "the envelope has {} signatures, more than the {MAX_SIGNATURES} accepted",
                env.signatures.len()
            )));
        }
        env.payload_bytes()?;
        for s in &env.signatures {
            decode_b64(&s.sig)
                .ok_or_else(|| AttestError::Malformed("a signature is not base64".into()))?;
        }
        Ok(env)
    }

    /// The decoded payload.
    pub fn payload_bytes(&self) -> Result<Vec<u8>, AttestError> {
        decode_b64(&self.payload)
            .ok_or_else(|| AttestError::Malformed("the payload is not base64".into()))
    }

    /// The bytes signatures cover.
    pub fn pae(&self) -> Result<Vec<u8>, AttestError> {
        Ok(pae(&self.payload_type, &self.payload_bytes()?))
    }

    /// Adds a signature (raw bytes, encoded here) by `keyid`.
    pub fn push_signature(&mut self, keyid: &str, sig: &[u8]) {
        self.signatures.push(EnvelopeSignature {
            keyid: keyid.to_owned(),
            sig: STANDARD.encode(sig),
        });
    }

    /// The envelope's JSON bytes, as stored and addressed.
    pub fn to_bytes(&self) -> Result<Vec<u8>, AttestError> {
        serde_json::to_vec(self).map_err(|e| AttestError::Internal(e.to_string()))
    }

    /// The address of `bytes` in the evidence store.
    pub fn address(bytes: &[u8]) -> Sha256Digest {
        Sha256Digest::of(bytes)
    }
}

/// Decodes base64 in any of the four forms DSSE allows.
pub(crate) fn decode_b64(s: &str) -> Option<Vec<u8>> {
    [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
        .iter()
        .find_map(|e| e.decode(s).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The DSSE specification's test vector (protocol.md).
    #[test]
    fn pae_matches_the_spec_vector() {
        let vector: serde_json::Value =
            serde_json::from_str(include_str!("../tests/data/dsse_pae.json")).unwrap();
        let got = pae(
            vector["payloadType"].as_str().unwrap(),
            vector["payload"].as_str().unwrap().as_bytes(),
        );
        assert_eq!(got, vector["pae"].as_str().unwrap().as_bytes());
    }

    #[test]
    fn refuses_malformed_envelopes() {
        for bad in [
            &b"not json"[..],
            br#"{"payload":"e30=","payloadType":"t","signatures":[]}"#,
            br#"{"payload":"***","payloadType":"t","signatures":[{"keyid":"k","sig":"AA=="}]}"#,
            br#"{"payload":"e30=","payloadType":"t","signatures":[{"keyid":"k","sig":"%%"}]}"#,
            br#"{"payload":"e30=","payloadType":"t","signatures":[{"keyid":"k","sig":"AA=="}],"x":1}"#,
            br#"{"payloadType":"t","signatures":[{"keyid":"k","sig":"AA=="}]}"#,
        ] {
            assert!(
                matches!(Envelope::parse(bad), Err(AttestError::Malformed(_))),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let big = vec![b' '; MAX_ENVELOPE_BYTES + 1];
        assert!(matches!(
            Envelope::parse(&big),
            Err(AttestError::Malformed(_))
        ));
    }

    #[test]
    fn reads_every_base64_form() {
        for payload in ["e30=", "e30", "-_8", "+/8="] {
            let json = format!(
                r#"{{"payload":"{payload}","payloadType":"t","signatures":[{{"keyid":"k","sig":"AA"}}]}}"#
            );
            assert!(Envelope::parse(json.as_bytes()).is_ok(), "{payload}");
        }
    }
}
