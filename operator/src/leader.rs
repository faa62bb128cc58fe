//! Leader election on a `coordination.k8s.io/v1` Lease (through kube-lease-manager), so two or
//! more replicas are safe: only the holder reconciles and writes; the others keep their caches
//! warm and take over within the lease duration when the holder goes away.
//!
//! Losing the lease while leading ends the process (exit code 1): a replica that may have been
//! partitioned away restarts clean rather than racing the new leader.

use kube::Client;
use kube_lease_manager::{LeaseManagerBuilder, LeaseManagerError};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Lease settings.
#[derive(Clone, Debug)]
pub struct LeaseSettings {
    /// The Lease's name.
    pub name: String,
    /// Its namespace.
    pub namespace: String,
    /// This replica's identity (the pod name).
    pub identity: String,
    /// Seconds a lease is held without renewal.
    pub duration_seconds: u64,
    /// Seconds before expiry that the holder renews.
    pub grace_seconds: u64,
}

/// A running election.
pub struct Election {
    leading: watch::Receiver<bool>,
    task: JoinHandle<Result<kube_lease_manager::LeaseManager, LeaseManagerError>>,
}

impl Election {
    /// Joins the election.
    pub async fn start(client: Client, settings: &LeaseSettings) -> Result<Self, LeaseManagerError> {
        let manager = LeaseManagerBuilder::new(client, &settings.name)
            .with_namespace(&settings.namespace)
            .with_identity(&settings.identity)
            .with_duration(settings.duration_seconds)
            .with_grace(settings.grace_seconds)
            .build()
            .await?;
        let (leading, task) = manager.watch().await;
        Ok(Self { leading, task })
    }

    /// Resolves once this replica leads.
    pub async fn acquired(&mut self) -> bool {
        self.leading.wait_for(|leading| *leading).await.is_ok()
    }

    /// Resolves when this replica stops leading.
    pub async fn lost(&mut self) {
        let _ = self.leading.wait_for(|leading| !*leading).await;
    }

    /// Gives the lease up (on shutdown) so a standby takes over at once.
    pub async fn release(self) {
        drop(self.leading);
        match self.task.await {
            Ok(Ok(_)) => tracing::info!("released the leader Lease"),
            Ok(Err(e)) => tracing::warn!(error = %e, "could not release the leader Lease; it expires on its own"),
            Err(e) => tracing::warn!(error = %e, "the election task failed"),
        }
    }
}
