//! The evidence store: envelopes kept under the SHA-256 of their bytes and
//! indexed by the SHA-256 of each subject, per owner, through the view
//! `attest/`:
//!
//! - `evidence/<owner>/<address>`: the envelope's bytes with what Vern
//!   knows of it (signer, keys, signing time), where `<owner>` is
//!   `platform` or `tenant/<tenant>`;
//! - `subject/<subject digest>/<owner>/<address>`: the index, empty values.
//!
//! An entry is written once, with the index, in one batch that expects all
//! of it absent: writing the same bytes again finds the entry and changes
//! nothing, and nothing is ever rewritten or deleted. Nothing is stored
//! that did not verify against the keys the caller trusts. Each owner
//! (tenant) has its own entries and index, so a lookup for one tenant
//! never sees another's envelopes.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use vern_crypto::SecretBytes;
use vern_seal::{Barrier, BarrierWrite, Expect, SealError};

use crate::digest::Sha256Digest;
use crate::dsse::Envelope;
use crate::keys::{KeyOwner, TrustedKey};
use crate::verify::{verify_envelope, Verified};
use crate::{view, AttestError};

/// The most entries one subject lookup returns.
pub const MAX_LOOKUP: usize = 1000;

/// What a write did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// The envelope's address, the SHA-256 of its bytes.
    pub address: Sha256Digest,
    /// `false` when the same bytes were already stored (nothing written).
    pub created: bool,
    /// The subjects it is indexed under.
    pub subjects: Vec<Sha256Digest>,
}

/// One stored envelope with what Vern recorded about it.
#[derive(Debug, Clone)]
pub struct Evidence {
    /// The SHA-256 of the envelope's bytes.
    pub address: Sha256Digest,
    /// Whose evidence it is.
    pub owner: KeyOwner,
    /// The envelope exactly as stored.
    pub bytes: Vec<u8>,
    /// Who had it signed (a service or operator id), or who imported it.
    pub signer: String,
    /// When it was signed, Unix seconds.
    pub signed_at: u64,
    /// The ids of the keys that signed it.
    pub kids: Vec<String>,
    /// Its statement's predicate type.
    pub predicate_type: String,
    /// Its statement's subjects.
    pub subjects: Vec<Sha256Digest>,
}

impl Evidence {
    /// The parsed envelope.
    pub fn envelope(&self) -> Result<Envelope, AttestError> {
        Envelope::parse(&self.bytes)
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Record {
    envelope: String,
    signer: String,
    signed_at: u64,
    kids: Vec<String>,
    predicate_type: String,
    subjects: Vec<Sha256Digest>,
}

/// Who is storing an envelope, and when it was signed.
#[derive(Debug, Clone)]
pub struct Provenance {
    /// The principal that had it signed or imported it.
    pub signer: String,
    /// When it was signed, Unix seconds: now for Vern's own signatures,
    /// the time of the import for imported ones (a bundle's claim of when
    /// it was signed is not covered by any signature).
    pub signed_at: u64,
}

/// The evidence store; see the module documentation.
#[derive(Debug, Clone, Copy, Default)]
pub struct EvidenceStore;

impl EvidenceStore {
    /// Verifies the envelope `bytes` against `trusted` (keys valid at
    /// `provenance.signed_at`) and stores it for `owner`. Storing the same
    /// bytes again is not an error and writes nothing.
    pub async fn put(
        &self,
        barrier: &Barrier,
        owner: &KeyOwner,
        bytes: &[u8],
        trusted: &[TrustedKey],
        provenance: &Provenance,
        now: u64,
    ) -> Result<(Stored, Verified), AttestError> {
        let envelope = Envelope::parse(bytes)?;
        let verified = verify_envelope(&envelope, trusted, Some(provenance.signed_at), now, None)?;
        let stored = self
            .put_verified(barrier, owner, bytes, &verified, provenance)
            .await?;
        Ok((stored, verified))
    }

    /// Several envelopes, each for its owner, in one batch: all are stored
    /// or none. Each must already have verified (see
    /// [`EvidenceStore::put`]); entries already present are left as they
    /// are.
    pub async fn put_all(
        &self,
        barrier: &Barrier,
        items: &[(KeyOwner, Vec<u8>, Verified, Provenance)],
    ) -> Result<Vec<Stored>, AttestError> {
        let v = view(barrier)?;
        let mut writes = Vec::new();
        let mut out = Vec::with_capacity(items.len());
        let mut seen = std::collections::BTreeSet::new();
        for (owner, bytes, verified, provenance) in items {
            let address = Sha256Digest::of(bytes);
            let subjects = verified.statement.subject_digests();
            let existing = self.get(barrier, owner, &address).await?;
            let created = existing.is_none() && seen.insert((owner.clone(), address.clone()));
            if created {
                writes.extend(entry_writes(owner, &address, bytes, verified, provenance)?);
            } else if let Some(e) = existing {
                same_bytes(&e, bytes)?;
            }
            out.push(Stored {
                address,
                created,
                subjects,
            });
        }
        if !writes.is_empty() {
            v.commit(writes).await.map_err(raced)?;
        }
        Ok(out)
    }

    async fn put_verified(
        &self,
        barrier: &Barrier,
        owner: &KeyOwner,
        bytes: &[u8],
        verified: &Verified,
        provenance: &Provenance,
    ) -> Result<Stored, AttestError> {
        let address = Sha256Digest::of(bytes);
        let subjects = verified.statement.subject_digests();
        let writes = entry_writes(owner, &address, bytes, verified, provenance)?;
        match view(barrier)?.commit(writes).await {
            Ok(_) => Ok(Stored {
                address,
                created: true,
                subjects,
            }),
            Err(SealError::Conflict { .. }) => {
                // The same address means the same bytes, unless SHA-256
                // collides; compare anyway rather than trust that.
                let existing = self.get(barrier, owner, &address).await?.ok_or_else(|| {
                    AttestError::Conflict(format!(
                        "evidence {address} changed while it was stored; retry"
                    ))
                })?;
                same_bytes(&existing, bytes)?;
                Ok(Stored {
                    address,
                    created: false,
                    subjects,
                })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The owner's entry at `address`, if any.
    pub async fn get(
        &self,
        barrier: &Barrier,
        owner: &KeyOwner,
        address: &Sha256Digest,
    ) -> Result<Option<Evidence>, AttestError> {
        let key = evidence_key(owner, address);
        let Some(plain) = view(barrier)?.get(&key).await? else {
            return Ok(None);
        };
        let corrupt = || SealError::Corrupt(format!("{}{key}", crate::VIEW_PREFIX));
        let r: Record = serde_json::from_slice(plain.value.expose()).map_err(|_| corrupt())?;
        let bytes = STANDARD.decode(&r.envelope).map_err(|_| corrupt())?;
        if Sha256Digest::of(&bytes) != *address {
            return Err(corrupt().into());
        }
        Ok(Some(Evidence {
            address: address.clone(),
            owner: owner.clone(),
            bytes,
            signer: r.signer,
            signed_at: r.signed_at,
            kids: r.kids,
            predicate_type: r.predicate_type,
            subjects: r.subjects,
        }))
    }

    /// Entries about `subject`: the owner's, or with `None` every owner's
    /// (for platform auditors). At most [`MAX_LOOKUP`], in address order
    /// within each owner.
    pub async fn by_subject(
        &self,
        barrier: &Barrier,
        owner: Option<&KeyOwner>,
        subject: &Sha256Digest,
    ) -> Result<Vec<Evidence>, AttestError> {
        let under = match owner {
            Some(o) => format!("subject/{}/{}/", subject.hex(), o.segment()),
            None => format!("subject/{}/", subject.hex()),
        };
        let keys = view(barrier)?.list(&under, None, MAX_LOOKUP).await?;
        let base = format!("subject/{}/", subject.hex());
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            let (owner, address) = parse_index_key(key.strip_prefix(&base).unwrap_or(&key))
                .ok_or_else(|| SealError::Corrupt(format!("{}{key}", crate::VIEW_PREFIX)))?;
            if let Some(e) = self.get(barrier, &owner, &address).await? {
                out.push(e);
            }
        }
        Ok(out)
    }
}

impl EvidenceStore {
    /// The owner's entries about `subject`, each read on its own: an entry
    /// that cannot be read (its stored bytes were altered, so the barrier
    /// refuses them) comes back as its error beside its address instead of
    /// failing the lookup, so a gate can name it and weigh the rest. At
    /// most [`MAX_LOOKUP`].
    pub async fn by_subject_each(
        &self,
        barrier: &Barrier,
        owner: &KeyOwner,
        subject: &Sha256Digest,
    ) -> Result<Vec<(Sha256Digest, Result<Evidence, AttestError>)>, AttestError> {
        let under = format!("subject/{}/{}/", subject.hex(), owner.segment());
        let keys = view(barrier)?.list(&under, None, MAX_LOOKUP).await?;
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            let Some(address) = key.strip_prefix(&under).and_then(Sha256Digest::parse_hex) else {
                continue;
            };
            match self.get(barrier, owner, &address).await {
                Ok(Some(e)) => out.push((address, Ok(e))),
                Ok(None) => {}
                Err(e) => out.push((address, Err(e))),
            }
        }
        Ok(out)
    }
}

fn evidence_key(owner: &KeyOwner, address: &Sha256Digest) -> String {
    format!("evidence/{}/{}", owner.segment(), address.hex())
}

fn index_key(subject: &Sha256Digest, owner: &KeyOwner, address: &Sha256Digest) -> String {
    format!(
        "subject/{}/{}/{}",
        subject.hex(),
        owner.segment(),
        address.hex()
    )
}

/// `platform/<address>` or `tenant/<tenant>/<address>`.
fn parse_index_key(rest: &str) -> Option<(KeyOwner, Sha256Digest)> {
    let (owner, address) = rest.rsplit_once('/')?;
    let owner = match owner.strip_prefix("tenant/") {
        Some(t) => KeyOwner::Tenant(vern_core::TenantId::parse(t).ok()?),
        None if owner == "platform" => KeyOwner::Platform,
        None => return None,
    };
    Some((owner, Sha256Digest::parse_hex(address)?))
}

fn entry_writes(
    owner: &KeyOwner,
    address: &Sha256Digest,
    bytes: &[u8],
    verified: &Verified,
    provenance: &Provenance,
) -> Result<Vec<BarrierWrite>, AttestError> {
    let subjects = verified.statement.subject_digests();
    let record = Record {
        envelope: STANDARD.encode(bytes),
        signer: provenance.signer.clone(),
        signed_at: provenance.signed_at,
        kids: verified.kids.clone(),
        predicate_type: verified.statement.predicate_type.clone(),
        subjects: subjects.clone(),
    };
    let value = serde_json::to_vec(&record).map_err(|e| AttestError::Internal(e.to_string()))?;
    let mut writes = vec![BarrierWrite {
        key: evidence_key(owner, address),
        value: Some(SecretBytes::new(value)),
        expect: Expect::Absent,
    }];
    writes.extend(subjects.iter().map(|s| BarrierWrite {
        key: index_key(s, owner, address),
        value: Some(SecretBytes::new(Vec::new())),
        expect: Expect::Absent,
    }));
    Ok(writes)
}

fn same_bytes(existing: &Evidence, bytes: &[u8]) -> Result<(), AttestError> {
    if existing.bytes == bytes {
        Ok(())
    } else {
        Err(AttestError::Immutable(format!(
            "evidence {} is stored with other bytes; it is never rewritten",
            existing.address
        )))
    }
}

fn raced(e: SealError) -> AttestError {
    match e {
        SealError::Conflict { .. } => AttestError::Conflict(
            "another writer stored some of this evidence at the same time; retry".into(),
        ),
        e => e.into(),
    }
}
