//! Garbage collection: unpacked images no live deployment runs, and the blobs only
//! they used.

use std::collections::HashSet;
use std::sync::atomic::Ordering;

use berth_store::DeploymentQueue;

use super::Deployer;

impl Deployer {
    /// Only the worker calls it, between deploys (no pull is in flight) and after a
    /// reconcile (no container of a deployment that is not live is left).
    /// Deletes the volumes here of services terminated (on whichever replica)
    /// or gone: a terminate deletes the volume only on the replica answering it.
    pub(super) async fn sweep_volumes(&self, store: &dyn berth_store::Services) {
        let Some(runtime) = &self.runtime else {
            return;
        };
        for id in runtime.volume_ids() {
            let service = berth_store::ServiceId::from(id.clone());
            let gone = match store.service_by_id(&service).await {
                Ok(None) => true,
                Ok(Some(s)) => s.status == berth_store::ServiceStatus::Terminated,
                Err(e) => {
                    tracing::error!(error = %e, "sweeping volumes: reading a service");
                    return;
                }
            };
            if gone {
                match runtime.remove_volume(&id).await {
                    Ok(()) => {
                        tracing::info!(service = %id, "removed the volume of a terminated service")
                    }
                    Err(e) => {
                        tracing::warn!(service = %id, error = %e, "removing a terminated service's volume")
                    }
                }
            }
        }
    }

    pub(super) async fn collect_garbage(&self, store: &dyn DeploymentQueue) {
        self.gc_wanted.store(false, Ordering::SeqCst);
        let live: HashSet<berth_types::Digest> = match store.live_deployments().await {
            Ok(l) => l.into_iter().map(|d| d.digest).collect(),
            Err(e) => {
                tracing::error!(error = %e, "garbage collection: reading live images");
                return;
            }
        };
        let (images, cache) = (self.images.clone(), self.cache.clone());
        let r = tokio::task::spawn_blocking(move || {
            let (removed_images, keep) = images.gc(&live)?;
            let removed_blobs = cache.gc(&keep)?;
            Ok::<_, std::io::Error>((removed_images, removed_blobs))
        })
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        match r {
            Ok((0, 0)) => {}
            Ok((images, blobs)) => tracing::info!(images, blobs, "garbage collected"),
            Err(e) => tracing::error!(error = %e, "garbage collection"),
        }
    }
}
