//! Revocation (RFC 7009): a marker per token `jti` under
//! `authority/revoked/`, checked on every verification, and the sweep that
//! deletes revocation and assertion markers once their tokens expired.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use vern_crypto::SecretBytes;
use vern_seal::{Barrier, BarrierWrite, Expect, SealError};

use crate::authority::{conflict, view, Authority};
use crate::claims::AccessClaims;
use crate::client_auth::ASSERTIONS;
use crate::registry::CLIENTS;
use crate::AuthError;

pub(crate) const REVOKED: &str = "revoked/";

/// The marker of a revoked token: the SHA-256 of its `jti`.
fn revocation_key(jti: &str) -> String {
    format!(
        "{REVOKED}{}",
        B64.encode(vern_crypto::sha256(jti.as_bytes()))
    )
}

/// The two fields of a client record that say when it last changed. Every
/// verified request reads them, so the rest of the record (its flattened
/// kind, scopes, keys) is skipped rather than parsed.
#[derive(serde::Deserialize)]
struct ChangedAt {
    created: u64,
    #[serde(default)]
    updated: u64,
}

/// [`crate::clients::ClientRecord::changed_at`] of a stored record.
fn client_changed_at(client_id: &str, stored: &SecretBytes) -> Result<u64, AuthError> {
    serde_json::from_slice::<ChangedAt>(stored.expose())
        .map(|r| r.updated.max(r.created))
        .map_err(|_| AuthError::Seal(SealError::Corrupt(format!("client {client_id}"))))
}

impl Authority {
    /// Refuses a revoked token ([`AuthError::Revoked`]), and one whose
    /// client no longer exists or whose record changed after the token was
    /// issued ([`AuthError::ClientChanged`]): revoking a token, deleting a
    /// client, or narrowing it with apply takes effect on its live tokens
    /// at once. The revocation marker and the client record are read
    /// together, in one storage round trip.
    ///
    /// Times are whole seconds, so a token issued in the same second as
    /// the change (or within the clock skew between replicas) is still
    /// honoured; only a deletion is exact. Also for claims verified
    /// earlier, such as those of a long-lived connection.
    pub async fn check_live(&self, b: &Barrier, claims: &AccessClaims) -> Result<(), AuthError> {
        let marker = revocation_key(&claims.jti);
        let client = format!("{CLIENTS}{}", claims.client_id);
        let (revoked, record) = match view(b)?.get_many(&[&marker, &client]).await {
            Ok(read) => {
                let mut read = read.into_iter();
                (read.next().flatten().is_some(), read.next().flatten())
            }
            // An id that cannot be a storage key names no client.
            Err(SealError::BadKey { .. }) => (self.is_revoked(b, &claims.jti).await?, None),
            Err(e) => return Err(e.into()),
        };
        if revoked {
            return Err(AuthError::Revoked);
        }
        let record = record.ok_or(AuthError::ClientChanged)?;
        if claims.iat < client_changed_at(&claims.client_id, &record.value)? {
            return Err(AuthError::ClientChanged);
        }
        Ok(())
    }

    pub(crate) async fn is_revoked(&self, b: &Barrier, jti: &str) -> Result<bool, AuthError> {
        Ok(view(b)?.get(&revocation_key(jti)).await?.is_some())
    }

    /// RFC 7009: revokes a token this authority issued, if `may_revoke`
    /// allows the caller to (the caller's reach over the token's claims).
    /// Unknown or invalid tokens are not an error.
    pub async fn revoke(
        &self,
        b: &Barrier,
        token: &str,
        may_revoke: impl FnOnce(&AccessClaims) -> bool,
    ) -> Result<(), AuthError> {
        let Ok(claims) = self.verify_jwt(b, token).await else {
            return Ok(());
        };
        if !may_revoke(&claims) {
            return Err(AuthError::UnauthorizedClient(
                "this client may not revoke that token".to_owned(),
            ));
        }
        let k = format!(
            "{REVOKED}{}",
            B64.encode(vern_crypto::sha256(claims.jti.as_bytes()))
        );
        let result = view(b)?
            .commit(vec![BarrierWrite {
                key: k,
                value: Some(SecretBytes::new(claims.exp.to_be_bytes().to_vec())),
                expect: Expect::Any,
            }])
            .await;
        match result {
            Ok(_) => {
                tracing::info!(client_id = %claims.client_id, "Token revoked.");
                Ok(())
            }
            Err(e) => {
                let e = AuthError::from(e);
                if conflict(&e) {
                    Ok(())
                } else {
                    Err(e)
                }
            }
        }
    }

    /// Deletes revocation markers and assertion `jti` markers whose tokens
    /// or assertions have expired (past the leeway): from then on, the
    /// expiry check alone refuses them. Returns how many were removed.
    pub async fn sweep(&self, b: &Barrier) -> Result<usize, AuthError> {
        let now = self.now();
        let mut removed = 0;
        for prefix in [REVOKED, ASSERTIONS] {
            let mut after: Option<String> = None;
            loop {
                let page = view(b)?.list(prefix, after.as_deref(), 500).await?;
                let Some(last) = page.last().cloned() else {
                    break;
                };
                let mut writes = Vec::new();
                for name in &page {
                    let k = name.clone();
                    let Some(plain) = view(b)?.get(&k).await? else {
                        continue;
                    };
                    let exp = <[u8; 8]>::try_from(plain.value.expose())
                        .map(u64::from_be_bytes)
                        .unwrap_or(0);
                    if exp.saturating_add(self.config.leeway) < now {
                        writes.push(BarrierWrite {
                            key: k,
                            value: None,
                            expect: Expect::Version(plain.version),
                        });
                    }
                }
                let n = writes.len();
                if n > 0 {
                    match view(b)?.commit(writes).await {
                        Ok(_) => removed += n,
                        // A concurrent sweep on another replica got there
                        // first; the next run picks up what is left.
                        Err(SealError::Conflict { .. }) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                if page.len() < 500 {
                    break;
                }
                after = Some(last);
            }
        }
        Ok(removed)
    }
}
