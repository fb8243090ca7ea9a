//! Leader election on a Lease (kube-lease-manager), handed over on shutdown.
//!
//! kube-lease-manager releases the Lease only when its `release()` runs: its `watch()` task does
//! so once every receiver of its channel is gone, which a clone kept anywhere prevents, and a task
//! cancelled by the runtime's shutdown never does. Here the task owns the manager, and a
//! `release` signal (sent by `main` once the controller has stopped acting) makes it report
//! `false` and release the Lease before it returns.
//!
//! A follower in kube-lease-manager sleeps until the holder's Lease would expire, so it would not
//! see a Lease released early. The follower here also reads the Lease every `retry` period, as
//! client-go's elector does, and when it finds it free starts a fresh manager, which takes it at
//! once: the takeover after a clean shutdown is one retry period, not one Lease duration.

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, Client};
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder, LeaseManagerError};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

/// Where and as whom to elect.
#[derive(Clone, Debug)]
pub struct LeaseSettings {
    pub name: String,
    pub namespace: String,
    pub identity: String,
    /// How long the Lease holds without renewal.
    pub duration: Duration,
    /// How often a follower looks for a Lease released early.
    pub retry: Duration,
}

async fn manager(client: &Client, s: &LeaseSettings) -> Result<LeaseManager, LeaseManagerError> {
    let secs = s.duration.as_secs().max(2);
    LeaseManagerBuilder::new(client.clone(), &s.name)
        .with_namespace(&s.namespace)
        .with_identity(&s.identity)
        .with_duration(secs)
        .with_grace((secs / 3).max(1))
        .with_field_manager(format!("spillway-{}", s.identity))
        .build()
        .await
}

/// True when the Lease has no holder (released, or never held).
async fn is_free(leases: &Api<Lease>, name: &str) -> bool {
    match leases.get_opt(name).await {
        Ok(Some(l)) => l
            .spec
            .and_then(|s| s.holder_identity)
            .is_none_or(|h| h.is_empty()),
        Ok(None) => true,
        Err(e) => {
            debug!(error = %e, "cannot read the Lease");
            false
        }
    }
}

/// Starts electing: the receiver says whether this replica leads. When `release` resolves, the
/// receiver turns `false` and the Lease is released; then the task ends.
pub async fn elect(
    client: Client,
    settings: LeaseSettings,
    release: impl Future<Output = ()> + Send + 'static,
) -> Result<
    (
        watch::Receiver<bool>,
        JoinHandle<Result<(), LeaseManagerError>>,
    ),
    LeaseManagerError,
> {
    let mut current = manager(&client, &settings).await?;
    let leases = Api::<Lease>::namespaced(client.clone(), &settings.namespace);
    let (tx, rx) = watch::channel(false);
    let task = tokio::spawn(async move {
        tokio::pin!(release);
        let mut leading = false;
        loop {
            let step = tokio::select! {
                biased;
                () = &mut release => break,
                changed = current.changed() => Some(changed),
                () = tokio::time::sleep(settings.retry), if !leading => None,
            };
            match step {
                Some(Ok(now)) => {
                    leading = now;
                    tx.send_replace(now);
                    info!(leading, identity = %settings.identity, "leadership changed");
                }
                Some(Err(e)) => {
                    warn!(error = %e, "leader election: the Lease could not be read or written; retrying");
                    tokio::time::sleep(settings.retry).await;
                }
                None => {
                    if is_free(&leases, &settings.name).await {
                        match manager(&client, &settings).await {
                            Ok(fresh) => current = fresh,
                            Err(e) => debug!(error = %e, "cannot start a fresh lease manager"),
                        }
                    }
                }
            }
        }
        // Stop acting first, then hand the Lease over.
        tx.send_replace(false);
        let released = current.release().await;
        match &released {
            Ok(()) => info!(identity = %settings.identity, "released the leader Lease"),
            Err(e) => {
                warn!(error = %e, "could not release the leader Lease; it expires on its own")
            }
        }
        released
    });
    Ok((rx, task))
}
