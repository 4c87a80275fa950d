//! Whether a request may still begin to write. A request that runs out of
//! time is either abandoned before any of its writes begins, or, once one
//! has begun, allowed to finish so that its outcome is reported as it was
//! committed: a timeout never turns a committed write into a reported
//! failure. The gate travels with the request's task (a task-local), so
//! storage code needs no extra parameter; work outside a gated task (the
//! audit appender, background sweeps) is never gated.

use std::future::Future;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use crate::StoreError;

const OPEN: u8 = 0;
const COMMITTING: u8 = 1;
const ABANDONED: u8 = 2;

tokio::task_local! {
    static GATE: Arc<CommitGate>;
}

/// The commit state of one request (or one audit record): open, then
/// either committing (for good) or abandoned (for good).
#[derive(Debug, Default)]
pub struct CommitGate(AtomicU8);

impl CommitGate {
    /// A gate that is still open.
    pub fn new() -> Arc<Self> {
        Arc::new(Self(AtomicU8::new(OPEN)))
    }

    /// Runs `work` with this gate: its store commits first pass [`Self::begin`].
    pub async fn scope<F: Future>(self: &Arc<Self>, work: F) -> F::Output {
        GATE.scope(Arc::clone(self), work).await
    }

    /// Marks the work as committing; false if it was abandoned first.
    pub fn begin(&self) -> bool {
        match self
            .0
            .compare_exchange(OPEN, COMMITTING, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => true,
            Err(state) => state == COMMITTING,
        }
    }

    /// Abandons the work if nothing of it has begun to commit; false if a
    /// commit has begun (the work must then be awaited to its end).
    pub fn abandon(&self) -> bool {
        match self
            .0
            .compare_exchange(OPEN, ABANDONED, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => true,
            Err(state) => state == ABANDONED,
        }
    }
}

/// Called by every backend before a commit touches storage.
pub(crate) fn begin_commit() -> Result<(), StoreError> {
    match GATE.try_with(|g| g.begin()) {
        Ok(false) => Err(StoreError::Abandoned),
        Ok(true) | Err(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_gate_is_either_committing_or_abandoned_for_good() {
        let g = CommitGate::new();
        assert!(g.begin() && g.begin());
        assert!(!g.abandon());
        let g = CommitGate::new();
        assert!(g.abandon() && g.abandon());
        assert!(!g.begin());
        assert!(matches!(
            g.scope(async { begin_commit() }).await,
            Err(StoreError::Abandoned)
        ));
        assert!(
            begin_commit().is_ok(),
            "outside a gated task nothing is gated"
        );
    }
}
