//! Offline verification of an envelope: every signature by a trusted key
//! that was valid at the signing time, over the envelope's PAE, and a
//! payload that is an in-toto Statement v1 naming the expected subject.
//! It reads no storage, so a verifier with exported keys needs nothing else.

use crate::digest::Sha256Digest;
use crate::dsse::{decode_b64, Envelope};
use crate::keys::TrustedKey;
use crate::statement::{Statement, IN_TOTO_PAYLOAD_TYPE};
use crate::AttestError;

/// What a verified envelope says, and who signed it.
#[derive(Debug, Clone)]
pub struct Verified {
    /// The statement.
    pub statement: Statement,
    /// The ids of the keys whose signatures verified.
    pub kids: Vec<String>,
}

/// Verifies `envelope` against `trusted`.
///
/// Every signature must verify under a trusted key (a signature that does
/// not is a refusal, not something skipped: an envelope is evidence as a
/// whole). The key is the one its `keyid` names; under an id no trusted
/// key has, each trusted key is tried, since DSSE key ids are only hints. `signed_at` is when the envelope was signed, as the
/// evidence store recorded it; each key must have been valid then. Without
/// it, each key must be valid at `now`. With `subject`, the statement must
/// name that digest.
pub fn verify_envelope(
    envelope: &Envelope,
    trusted: &[TrustedKey],
    signed_at: Option<u64>,
    now: u64,
    subject: Option<&Sha256Digest>,
) -> Result<Verified, AttestError> {
    if envelope.payload_type != IN_TOTO_PAYLOAD_TYPE {
        return Err(AttestError::Malformed(format!(
            "payloadType is `{}`, not `{IN_TOTO_PAYLOAD_TYPE}`",
            crate::digest::shown(&envelope.payload_type)
        )));
    }
    if envelope.signatures.is_empty() {
        return Err(AttestError::Malformed(
            "the envelope has no signature".into(),
        ));
    }
    let pae = envelope.pae()?;
    let at = signed_at.unwrap_or(now);
    let mut kids = Vec::with_capacity(envelope.signatures.len());
    for s in &envelope.signatures {
        let sig = decode_b64(&s.sig)
            .ok_or_else(|| AttestError::Malformed("a signature is not base64".into()))?;
        let key = match trusted.iter().find(|k| k.kid == s.keyid) {
            Some(key) if key.public.verify(&pae, &sig) => key,
            Some(key) => return Err(AttestError::BadSignature(key.kid.clone())),
            // DSSE's `keyid` is an unauthenticated hint, and signers name
            // keys their own way (securesystemslib's default is a hash of
            // its own key format): a signature under an id this site does
            // not use is tried against each trusted key.
            None => trusted
                .iter()
                .find(|k| k.public.verify(&pae, &sig))
                .ok_or_else(|| AttestError::UnknownKey(crate::digest::shown(&s.keyid)))?,
        };
        if !key.valid_at(at) {
            return Err(AttestError::KeyNotValid {
                kid: key.kid.clone(),
                at,
                valid_from: key.valid_from,
                until: key
                    .valid_until
                    .map(|u| format!(", until {u}"))
                    .unwrap_or_default(),
            });
        }
        kids.push(key.kid.clone());
    }
    let statement = Statement::parse(&envelope.payload_bytes()?)?;
    if let Some(digest) = subject {
        if !statement.names(digest) {
            return Err(AttestError::SubjectMismatch(format!(
                "the statement does not name subject {digest}"
            )));
        }
    }
    Ok(Verified { statement, kids })
}
