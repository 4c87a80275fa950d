//! Who is asking. Every authenticated request carries exactly one
//! [`Principal`]; authorization and audit both speak in these terms.

use serde::Serialize;

use crate::ids::{Scope, TenantId};

/// The kind of actor behind a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PrincipalKind {
    /// A platform operator; `root` marks the root token issued at init.
    Operator {
        /// Whether this is the root token of init, whose every use is marked.
        root: bool,
        /// The tenant a tenant operator is confined to.
        #[serde(skip_serializing_if = "Option::is_none")]
        tenant: Option<TenantId>,
    },
    /// A workload inside one tenant's environment.
    Service {
        /// The environment the service lives in.
        scope: Scope,
    },
    /// A node running `vern agent`: it attests workloads on its host and
    /// fetches SVIDs for the services its registration entries name, and
    /// may do nothing else.
    Node,
}

/// An authenticated actor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Principal {
    /// Stable identifier of the actor (operator name, client id, `root`).
    pub id: String,
    /// What kind of actor it is.
    #[serde(flatten)]
    pub kind: PrincipalKind,
}

impl Principal {
    /// The operator principal behind the root token.
    pub fn root() -> Self {
        Self {
            id: "root".to_owned(),
            kind: PrincipalKind::Operator {
                root: true,
                tenant: None,
            },
        }
    }

    /// Whether this principal has platform (operator) scope.
    pub fn is_operator(&self) -> bool {
        matches!(self.kind, PrincipalKind::Operator { .. })
    }
}
