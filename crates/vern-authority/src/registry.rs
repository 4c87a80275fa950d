//! The client registry: create, read, list and delete clients, and apply
//! a declared client set (GitOps) as one compare-and-set batch. Records
//! live behind the barrier at `authority/clients/<id>`.

use base64::Engine as _;
use vern_crypto::{random_token, SecretBytes};
use vern_seal::{Barrier, BarrierWrite, Expect, SealError, ViewBatch};

use crate::authority::{view, Authority};
use crate::clients::{ClientKind, ClientRecord, ClientSpec, CreatedClient};
use crate::jwt_auth::{JwtAuthError, JwtRolePlan, JwtRoleSpec};
use crate::AuthError;

pub(crate) const CLIENTS: &str = "clients/";

/// A client record as stored.
pub(crate) fn parse_client(
    client_id: &str,
    stored: &SecretBytes,
) -> Result<ClientRecord, AuthError> {
    serde_json::from_slice(stored.expose())
        .map_err(|_| AuthError::Seal(SealError::Corrupt(format!("client {client_id}"))))
}
/// The index of clients by certificate SAN: `san/<b64url SHA-256 of the
/// SAN>/<client id>`, one key per client that authenticates with a
/// certificate. Only a hint where to look: a login reads and checks each
/// client it names, so a stale entry finds nothing, never a wrong client.
pub(crate) const SANS: &str = "san/";
/// Set once every client created before the index existed is in it.
const SANS_COMPLETE: &str = "san-index-complete";

/// The index key of client `client_id` with the certificate SAN `san`.
fn san_key(san: &str, client_id: &str) -> String {
    format!("{}{client_id}", san_prefix(san))
}

/// The index prefix of the clients with the certificate SAN `san`.
pub(crate) fn san_prefix(san: &str) -> String {
    let digest = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(vern_crypto::sha256(san.as_bytes()));
    format!("{SANS}{digest}/")
}

/// The index entry of `record`, if it authenticates with a certificate.
fn san_write(record: &ClientRecord) -> Option<BarrierWrite> {
    record.tls_client_auth_san.as_ref().map(|san| BarrierWrite {
        key: san_key(san, &record.client_id),
        value: Some(SecretBytes::new(record.client_id.clone().into_bytes())),
        expect: Expect::Any,
    })
}

/// The removal of `record`'s index entry, if it has one.
fn san_delete(record: &ClientRecord) -> Option<BarrierWrite> {
    record.tls_client_auth_san.as_ref().map(|san| BarrierWrite {
        key: san_key(san, &record.client_id),
        value: None,
        expect: Expect::Any,
    })
}

/// At most this many clients are looked at for one certificate SAN: a SAN
/// names one workload, and a login naming none of them must give `name`.
const MAX_SAME_SAN: usize = 16;

/// What an apply did (or, dry, would do).
#[derive(Debug, Default)]
pub struct ApplyPlan {
    /// Clients created.
    pub create: Vec<String>,
    /// Clients updated, with the fields that changed.
    pub update: Vec<(String, Vec<String>)>,
    /// Clients deleted (only with prune).
    pub delete: Vec<String>,
    /// Clients already as declared.
    pub unchanged: Vec<String>,
    /// Clients that exist but are not declared, kept because prune was off.
    pub kept: Vec<String>,
    /// Secrets of created clients, shown once.
    pub secrets: Vec<(String, SecretBytes)>,
    /// What became of the JWT roles (nothing when the declaration has no
    /// roles section).
    pub jwt_roles: JwtRolePlan,
}

/// What an apply declares: the clients, and the JWT roles when the
/// declaration has a roles section (without one, roles are left alone,
/// pruning included).
#[derive(Debug, Clone, Copy)]
pub struct Declaration<'a> {
    /// Every client, when declared; `None` leaves the clients alone, so
    /// a file without a `clients` section never prunes one.
    pub clients: Option<&'a [ClientSpec]>,
    /// Every JWT role, when declared.
    pub jwt_roles: Option<&'a [JwtRoleSpec]>,
}

fn record_write(
    k: String,
    record: &ClientRecord,
    expect: Expect,
) -> Result<BarrierWrite, AuthError> {
    let bytes = serde_json::to_vec(record).map_err(|e| AuthError::Internal(e.to_string()))?;
    Ok(BarrierWrite {
        key: k,
        value: Some(SecretBytes::new(bytes)),
        expect,
    })
}

/// The reach of whoever applies a client set: which existing clients it
/// may change or prune, and which clients it may create.
pub trait ApplyGate: Sync {
    /// Whether the caller manages this existing client.
    fn manages(&self, existing: &ClientRecord) -> bool;
    /// Whether the caller may make a client like this one (created, or the
    /// new state of a changed one); the error says what it lacks.
    fn may_grant(
        &self,
        client_id: &str,
        kind: &ClientKind,
        scopes: &[String],
    ) -> Result<(), String>;
}

/// The reach of a caller trusted with every client: the platform's own
/// set-up and tests, never a request.
struct Unrestricted;

impl ApplyGate for Unrestricted {
    fn manages(&self, _: &ClientRecord) -> bool {
        true
    }
    fn may_grant(&self, _: &str, _: &ClientKind, _: &[String]) -> Result<(), String> {
        Ok(())
    }
}

impl Authority {
    /// Creates a client with no caller's reach to respect: for the
    /// platform's own set-up and tests; requests use
    /// [`Authority::create_client_with`]. A client without keys gets a
    /// generated secret (256 bits), returned here once and stored only as
    /// an HMAC.
    pub async fn create_client(
        &self,
        b: &Barrier,
        spec: &ClientSpec,
    ) -> Result<CreatedClient, AuthError> {
        self.create_client_with(b, spec, &Unrestricted).await
    }

    /// Creates a client on behalf of a caller whose reach is `gate`: the
    /// client must pass [`ApplyGate::may_grant`].
    pub async fn create_client_with(
        &self,
        b: &Barrier,
        spec: &ClientSpec,
        gate: &dyn ApplyGate,
    ) -> Result<CreatedClient, AuthError> {
        let (client_id, kind) = spec.validate()?;
        gate.may_grant(&client_id, &kind, &spec.scopes)
            .map_err(AuthError::Forbidden)?;
        let (record, secret) = self.new_record(b, spec, &client_id, kind).await?;
        let bytes = serde_json::to_vec(&record).map_err(|e| AuthError::Internal(e.to_string()))?;
        let mut writes = vec![BarrierWrite {
            key: format!("{CLIENTS}{client_id}"),
            value: Some(SecretBytes::new(bytes)),
            expect: Expect::Absent,
        }];
        writes.extend(san_write(&record));
        let result = view(b)?.commit(writes).await;
        match result {
            Ok(_) => {}
            Err(SealError::Conflict { .. }) => return Err(AuthError::Exists(client_id)),
            Err(e) => return Err(e.into()),
        }
        tracing::info!(client_id = %record.client_id, "Client created.");
        Ok(CreatedClient { record, secret })
    }

    /// A new client record and its generated secret (none for clients that
    /// authenticate with keys or a certificate).
    pub(crate) async fn new_record(
        &self,
        b: &Barrier,
        spec: &ClientSpec,
        client_id: &str,
        kind: ClientKind,
    ) -> Result<(ClientRecord, Option<SecretBytes>), AuthError> {
        let secret = (spec.jwks.is_empty() && spec.tls_client_auth_san.is_none())
            .then(|| random_token("vern.cs."));
        let secret_hmac = match &secret {
            Some(s) => Some(self.secret_hmac(b, s.expose()).await?),
            None => None,
        };
        let now = self.now();
        let record = ClientRecord {
            client_id: client_id.to_owned(),
            name: spec.name.clone(),
            kind,
            secret_hmac,
            jwks: spec.jwks.clone(),
            scopes: spec.scopes.clone(),
            dpop_bound: spec.dpop_bound,
            token_ttl: spec.token_ttl,
            tls_client_auth_san: spec.tls_client_auth_san.clone(),
            created: now,
            updated: now,
            nats: spec.nats.clone(),
        };
        Ok((record, secret))
    }

    /// Reads a client.
    pub async fn client(&self, b: &Barrier, client_id: &str) -> Result<ClientRecord, AuthError> {
        let k = format!("{CLIENTS}{client_id}");
        // An id that cannot be a storage key names no client.
        let plain = match view(b)?.get(&k).await {
            Err(SealError::BadKey { .. }) => None,
            other => other?,
        }
        .ok_or_else(|| AuthError::NoClient(client_id.to_owned()))?;
        parse_client(client_id, &plain.value)
    }

    /// Every client id.
    pub async fn client_ids(&self, b: &Barrier) -> Result<Vec<String>, AuthError> {
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = view(b)?.list(CLIENTS, after.as_deref(), 1000).await?;
            let Some(last) = page.last().cloned() else {
                break;
            };
            out.extend(
                page.iter()
                    .filter_map(|k| k.strip_prefix(CLIENTS).map(str::to_owned)),
            );
            if page.len() < 1000 {
                break;
            }
            after = Some(last);
        }
        Ok(out)
    }

    /// Brings the clients in line with `specs` (GitOps): creates missing
    /// ones, updates changed settings (secrets and keys of existing clients
    /// are kept unless the spec's keys changed), and deletes clients not in
    /// `specs` only when `prune`. Everything is one atomic, compare-and-set
    /// guarded batch: a concurrent change fails the whole apply, and a bad
    /// spec writes nothing. With `dry_run`, only the plan is returned.
    ///
    /// `gate` is the caller's reach: every client created or changed must
    /// pass [`ApplyGate::may_grant`], an existing client is changed only if
    /// the caller [`ApplyGate::manages`] it, and pruning deletes only such
    /// clients (the others are kept).
    pub async fn apply(
        &self,
        b: &Barrier,
        specs: &[ClientSpec],
        prune: bool,
        dry_run: bool,
        gate: &dyn ApplyGate,
    ) -> Result<ApplyPlan, AuthError> {
        let declared = Declaration {
            clients: Some(specs),
            jwt_roles: None,
        };
        self.apply_declared(b, declared, prune, dry_run, gate).await
    }

    /// Like [`Authority::apply`], for a declaration that may also hold the
    /// JWT roles: those are brought in line the same way, in the same
    /// batch, so a role may name a client the same apply creates, and a
    /// bad role writes nothing at all. A role's client must exist after
    /// the apply and be one the caller may make; an existing role is
    /// changed or pruned only if the caller manages its client.
    pub async fn apply_declared(
        &self,
        b: &Barrier,
        declared: Declaration<'_>,
        prune: bool,
        dry_run: bool,
        gate: &dyn ApplyGate,
    ) -> Result<ApplyPlan, AuthError> {
        self.apply_declared_with(b, declared, prune, dry_run, gate, Vec::new(), &mut |_| None)
            .await
    }

    /// Like [`Authority::apply_declared`], committing `also` (other
    /// domains' writes declared in the same file, such as promotion gates)
    /// in the same transaction as the clients and roles: the whole
    /// declaration is stored, or none of it. `dependents` gives, for a
    /// client the apply deletes, other domains' writes that go with it
    /// (a node's registration entries), committed in that transaction too.
    #[allow(clippy::too_many_arguments)]
    pub async fn apply_declared_with(
        &self,
        b: &Barrier,
        declared: Declaration<'_>,
        prune: bool,
        dry_run: bool,
        gate: &dyn ApplyGate,
        mut also: Vec<ViewBatch>,
        dependents: &mut (dyn FnMut(&str) -> Option<ViewBatch> + Send),
    ) -> Result<ApplyPlan, AuthError> {
        let specs = declared.clients.unwrap_or_default();
        let mut desired = std::collections::BTreeMap::new();
        for spec in specs {
            let (id, kind) = spec.validate()?;
            gate.may_grant(&id, &kind, &spec.scopes)
                .map_err(AuthError::Forbidden)?;
            if desired.insert(id.clone(), (spec, kind)).is_some() {
                return Err(AuthError::InvalidClientSpec(format!(
                    "client `{id}` is declared twice"
                )));
            }
        }
        let existing = match declared.clients {
            Some(_) => self.client_ids(b).await?,
            None => Vec::new(),
        };
        let mut plan = ApplyPlan::default();
        let mut writes = Vec::new();
        for (id, (spec, kind)) in &desired {
            let k = format!("{CLIENTS}{id}");
            match view(b)?.get(&k).await? {
                None => {
                    plan.create.push(id.clone());
                    if !dry_run {
                        let (record, secret) = self.new_record(b, spec, id, kind.clone()).await?;
                        writes.push(record_write(k, &record, Expect::Absent)?);
                        writes.extend(san_write(&record));
                        if let Some(s) = secret {
                            plan.secrets.push((id.clone(), s));
                        }
                    }
                }
                Some(plain) => {
                    let mut record: ClientRecord = serde_json::from_slice(plain.value.expose())
                        .map_err(|_| AuthError::Seal(SealError::Corrupt(format!("client {id}"))))?;
                    if !gate.manages(&record) {
                        return Err(AuthError::Forbidden(format!(
                            "client `{id}` exists and is not yours to change"
                        )));
                    }
                    let mut changes = Vec::new();
                    if record.scopes != spec.scopes {
                        changes.push("scopes".to_owned());
                        record.scopes.clone_from(&spec.scopes);
                    }
                    if record.dpop_bound != spec.dpop_bound {
                        changes.push("dpop_bound".to_owned());
                        record.dpop_bound = spec.dpop_bound;
                    }
                    if record.token_ttl != spec.token_ttl {
                        changes.push("token_ttl".to_owned());
                        record.token_ttl = spec.token_ttl;
                    }
                    if record.jwks != spec.jwks {
                        changes.push("jwks".to_owned());
                        record.jwks.clone_from(&spec.jwks);
                    }
                    if record.tls_client_auth_san != spec.tls_client_auth_san {
                        changes.push("tls_client_auth_san".to_owned());
                        writes.extend(san_delete(&record));
                        record
                            .tls_client_auth_san
                            .clone_from(&spec.tls_client_auth_san);
                        writes.extend(san_write(&record));
                    }
                    if record.nats != spec.nats {
                        changes.push("nats".to_owned());
                        record.nats.clone_from(&spec.nats);
                    }
                    if record.kind != *kind {
                        changes.push("roles".to_owned());
                        record.kind = kind.clone();
                    }
                    if changes.is_empty() {
                        plan.unchanged.push(id.clone());
                    } else {
                        // Tokens issued before this change are refused from
                        // now on (see `Authority::verify_access`).
                        record.updated = self.now();
                        writes.push(record_write(k, &record, Expect::Version(plain.version))?);
                        plan.update.push((id.clone(), changes));
                    }
                }
            }
        }
        for id in existing.iter().filter(|id| !desired.contains_key(*id)) {
            if !prune {
                plan.kept.push(id.clone());
                continue;
            }
            let k = format!("{CLIENTS}{id}");
            let Some(plain) = view(b)?.get(&k).await? else {
                continue;
            };
            let record: ClientRecord = serde_json::from_slice(plain.value.expose())
                .map_err(|_| AuthError::Seal(SealError::Corrupt(format!("client {id}"))))?;
            if gate.manages(&record) {
                writes.push(BarrierWrite {
                    key: k,
                    value: None,
                    expect: Expect::Version(plain.version),
                });
                writes.extend(san_delete(&record));
                also.extend(dependents(id));
                plan.delete.push(id.clone());
            } else {
                plan.kept.push(id.clone());
            }
        }
        if let Some(roles) = declared.jwt_roles {
            let mut client_after = std::collections::BTreeMap::new();
            for spec in roles {
                if client_after.contains_key(&spec.client_id) {
                    continue;
                }
                let after = match desired.get(&spec.client_id) {
                    Some((declared, kind)) => Some((kind.clone(), declared.scopes.clone())),
                    None if plan.delete.contains(&spec.client_id) => None,
                    None => match self.client(b, &spec.client_id).await {
                        Ok(r) => Some((r.kind, r.scopes)),
                        Err(AuthError::NoClient(_)) => None,
                        Err(e) => return Err(e),
                    },
                };
                client_after.insert(spec.client_id.clone(), after);
            }
            let (role_plan, role_writes) = self
                .plan_jwt_roles(b, roles, &client_after, prune, gate)
                .await
                .map_err(role_error)?;
            plan.jwt_roles = role_plan;
            writes.extend(role_writes);
        }
        let mut batches = vec![view(b)?.batch(writes)?];
        batches.extend(also);
        if !dry_run && batches.iter().any(|w| !w.is_empty()) {
            b.commit_batches(batches).await.map_err(|e| match e {
                SealError::Conflict { .. } => AuthError::Conflict(
                    "what the file declares changed while applying; run apply again".to_owned(),
                ),
                other => other.into(),
            })?;
            tracing::info!(
                created = plan.create.len(),
                updated = plan.update.len(),
                deleted = plan.delete.len(),
                roles_created = plan.jwt_roles.create.len(),
                roles_updated = plan.jwt_roles.update.len(),
                roles_deleted = plan.jwt_roles.delete.len(),
                "Clients applied."
            );
        }
        Ok(plan)
    }

    /// Deletes a client. Its tokens stop working on Vern's API and read as
    /// inactive in introspection at once (verification reads the client
    /// record); offline verifiers honour them until they expire.
    pub async fn delete_client(&self, b: &Barrier, client_id: &str) -> Result<(), AuthError> {
        self.delete_client_with(b, client_id, Vec::new()).await
    }

    /// Deletes a client and, in the same transaction, commits `also` (the
    /// writes of other views that go with it, such as a node's
    /// registration entries): all or nothing.
    pub async fn delete_client_with(
        &self,
        b: &Barrier,
        client_id: &str,
        also: Vec<ViewBatch>,
    ) -> Result<(), AuthError> {
        let record = self.client(b, client_id).await?;
        let mut writes = vec![BarrierWrite {
            key: format!("{CLIENTS}{client_id}"),
            value: None,
            expect: Expect::Any,
        }];
        writes.extend(san_delete(&record));
        let mut batches = vec![view(b)?.batch(writes)?];
        batches.extend(also);
        b.commit_batches(batches).await?;
        Ok(())
    }

    /// The ids the certificate SAN index holds for `san`. Clients created
    /// before the index existed are added to it first, once per deployment
    /// (whichever replica looks first; others adding the same entries at
    /// once do no harm).
    pub(crate) async fn indexed_by_san(
        &self,
        b: &Barrier,
        san: &str,
    ) -> Result<Vec<String>, AuthError> {
        if view(b)?.get(SANS_COMPLETE).await?.is_none() {
            self.index_existing_sans(b).await?;
        }
        let prefix = san_prefix(san);
        let keys = view(b)?.list(&prefix, None, MAX_SAME_SAN).await?;
        Ok(keys
            .iter()
            .filter_map(|k| k.strip_prefix(&prefix).map(str::to_owned))
            .collect())
    }

    /// Adds every client that authenticates with a certificate to the SAN
    /// index, then marks the index complete.
    async fn index_existing_sans(&self, b: &Barrier) -> Result<(), AuthError> {
        let mut writes = Vec::new();
        for id in self.client_ids(b).await? {
            match self.client(b, &id).await {
                Ok(record) => writes.extend(san_write(&record)),
                // Deleted since it was listed.
                Err(AuthError::NoClient(_)) => {}
                Err(e) => return Err(e),
            }
        }
        writes.push(BarrierWrite {
            key: SANS_COMPLETE.to_owned(),
            value: Some(SecretBytes::new(b"1".to_vec())),
            expect: Expect::Any,
        });
        let n = writes.len().saturating_sub(1);
        view(b)?.commit(writes).await?;
        tracing::info!(clients = n, "Certificate SAN index built.");
        Ok(())
    }
}

/// A role's refusal in the terms of an apply: its declaration is the
/// caller's (400 or 403), a conflict or fault is Vern's.
fn role_error(e: JwtAuthError) -> AuthError {
    match e {
        JwtAuthError::InvalidRole(m) => AuthError::InvalidClientSpec(m),
        JwtAuthError::Forbidden(m) => AuthError::Forbidden(m),
        JwtAuthError::Conflict(m) => AuthError::Conflict(m),
        JwtAuthError::Seal(e) => AuthError::Seal(e),
        other => AuthError::Internal(other.to_string()),
    }
}
