//! The cluster's identity (name and id), shown by health and seal status.
//! Kept behind the barrier and created on the first unseal, so every replica
//! sharing the database reports the same identity.

use serde::{Deserialize, Serialize};
use vern_crypto::SecretBytes;
use vern_seal::{Barrier, BarrierWrite, Expect, SealError};

/// Storage key of the cluster identity, for messages.
const CLUSTER_KEY: &str = "core/cluster";
/// The server's view of the barrier for its own keys under `core/`: the
/// cluster identity, which predates views and so sits directly in `core/`.
/// The seal's keys (`core/seal/`) stay refused through it.
const CORE_VIEW: &str = "core/";
/// The cluster identity's name within [`CORE_VIEW`].
const CLUSTER_NAME: &str = "cluster";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ClusterInfo {
    pub(crate) name: String,
    pub(crate) id: String,
}

impl ClusterInfo {
    /// Reads the identity, creating it if this is the first unseal. A
    /// configured name wins over the stored one.
    pub(crate) async fn load_or_create(
        barrier: &Barrier,
        configured_name: Option<&str>,
    ) -> Result<Self, SealError> {
        let view = barrier.view(CORE_VIEW)?;
        for _ in 0..3 {
            if let Some(plain) = view.get(CLUSTER_NAME).await? {
                let mut info: Self = serde_json::from_slice(plain.value.expose())
                    .map_err(|_| SealError::Corrupt(CLUSTER_KEY.to_owned()))?;
                if let Some(name) = configured_name {
                    name.clone_into(&mut info.name);
                }
                return Ok(info);
            }
            let id = uuid::Uuid::new_v4();
            let info = Self {
                name: configured_name.map_or_else(
                    || format!("vern-cluster-{}", &id.simple().to_string()[..8]),
                    str::to_owned,
                ),
                id: id.to_string(),
            };
            let bytes = serde_json::to_vec(&info)
                .map_err(|_| SealError::Corrupt(CLUSTER_KEY.to_owned()))?;
            let write = BarrierWrite {
                key: CLUSTER_NAME.to_owned(),
                value: Some(SecretBytes::new(bytes)),
                expect: Expect::Absent,
            };
            match view.commit(vec![write]).await {
                Ok(_) => return Ok(info),
                // Another replica created it first: read theirs.
                Err(SealError::Conflict { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(SealError::Corrupt(CLUSTER_KEY.to_owned()))
    }
}
