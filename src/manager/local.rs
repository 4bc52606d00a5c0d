//! The registry of this process as a manager's source (`[[blocker]]` in `catchd run`):
//! the same queues and the same durability as the HTTP API, without the HTTP hop.

use std::sync::Arc;
use std::time::Duration;

use super::{QueueRow, Source, SourceError, UnblockRow};
use crate::api::bhr::AppState;
use crate::enforce::Rule;
use crate::time::Time;

/// Why a change was not made: the store failed (the server then stops) or the cluster's
/// database is unreachable.
const UNAVAILABLE: &str = "the store or the cluster's database is unavailable";

/// This process's registry, for one ident.
pub struct Local {
    state: Arc<AppState>,
    ident: String,
}

impl Local {
    /// The queues of `ident` in `state`.
    pub fn new(state: Arc<AppState>, ident: &str) -> Local {
        Local {
            state,
            ident: ident.to_string(),
        }
    }
}

fn rule(b: &crate::bhr::model::Block) -> Rule {
    Rule {
        cidr: b.cidr,
        until: b.unblock_at,
        why: b.why.to_string(),
    }
}

impl Source for Local {
    fn ident(&self) -> &str {
        &self.ident
    }

    fn now(&self) -> Time {
        self.state.now()
    }

    async fn queue(&self, wait: Duration, since: Time) -> Result<Vec<QueueRow>, SourceError> {
        Ok(self
            .state
            .manager_queue(&self.ident, since, wait)
            .await
            .iter()
            .map(|b| QueueRow {
                id: b.id,
                added: b.added,
                rule: rule(b),
            })
            .collect())
    }

    async fn set_blocked(&self, ids: &[u64]) -> Result<(), SourceError> {
        self.state
            .manager_set_blocked(&self.ident, ids)
            .await
            .map_err(|_| SourceError::Store(UNAVAILABLE.into()))
    }

    async fn unblock_queue(&self) -> Result<Vec<UnblockRow>, SourceError> {
        Ok(self
            .state
            .manager_unblock_queue(&self.ident)
            .into_iter()
            .map(|(id, cidr)| UnblockRow { id, cidr })
            .collect())
    }

    async fn set_unblocked(&self, ids: &[u64]) -> Result<(), SourceError> {
        self.state
            .manager_set_unblocked(ids)
            .await
            .map_err(|_| SourceError::Store(UNAVAILABLE.into()))
    }

    async fn expected(&self) -> Result<Vec<Rule>, SourceError> {
        Ok(self.state.expected_blocks().iter().map(rule).collect())
    }
}
