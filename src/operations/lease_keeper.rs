//! Keeps a run's lease alive while this process drives the run.

use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::error::CliError;
use crate::journal::lease::LEASE_RENEW_EVERY;
use crate::journal::{Journal, Lease};

pub struct LeaseKeeper {
    journal: Arc<Journal>,
    lease: Lease,
    task: JoinHandle<()>,
    lost: watch::Receiver<bool>,
}

impl LeaseKeeper {
    /// Takes the run's lease (or fails with who holds it) and renews it in the background.
    pub fn acquire(journal: Arc<Journal>, run_id: &str) -> Result<LeaseKeeper, CliError> {
        let lease = journal
            .acquire(run_id)?
            .map_err(|holder| CliError::LeaseHeld {
                run: run_id.to_string(),
                holder,
            })?;
        let (tx, lost) = watch::channel(false);
        let (j, l) = (journal.clone(), lease.clone());
        let task = tokio::spawn(async move {
            loop {
                tokio::time::sleep(LEASE_RENEW_EVERY).await;
                // A failed renewal (journal busy) is retried next tick; the TTL leaves room.
                if let Ok(false) = j.renew(&l) {
                    let _ = tx.send(true);
                    return;
                }
            }
        });
        Ok(LeaseKeeper {
            journal,
            lease,
            task,
            lost,
        })
    }

    /// Resolves if another process took the lease over (ours had expired).
    pub async fn lost(&mut self) {
        let _ = self.lost.wait_for(|l| *l).await;
    }

    pub fn release(self) {
        self.task.abort();
        let _ = self.journal.release(&self.lease);
    }
}

impl Drop for LeaseKeeper {
    fn drop(&mut self) {
        self.task.abort();
    }
}
