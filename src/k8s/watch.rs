//! The two watches behind the index: every node, and every pod that is not finished. kube's
//! watcher relists and resumes on its own (with backoff); events go straight into the index
//! without keeping the full objects, and what each one changed there goes out on `changes`, so
//! that the agent wakes only the gateways it concerns.

use std::sync::{Arc, RwLock};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Client;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::mpsc::UnboundedSender;
use tracing::{info, warn};

use super::index::{Change, ClusterIndex, Watched};

/// Sends what changed; a closed receiver (the agent stopping) is not an error here.
fn send(tx: &UnboundedSender<Change>, changes: impl IntoIterator<Item = Change>) {
    for c in changes {
        let _ = tx.send(c);
    }
}

/// Feeds nodes into the index until the stream ends (it does not, short of shutdown).
pub async fn nodes(
    client: Client,
    index: Arc<RwLock<ClusterIndex>>,
    changes: UnboundedSender<Change>,
) {
    let stream = watcher(Api::<Node>::all(client), watcher::Config::default()).default_backoff();
    futures::pin_mut!(stream);
    while let Some(ev) = stream.next().await {
        let mut ix = index
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // A watch that delivers again after failing: decisions held meanwhile may go on.
        let recovered = ev.is_ok() && ix.watch_ok(Watched::Nodes);
        let changed = match ev {
            Ok(watcher::Event::Apply(n)) => ix.apply_node(&n),
            Ok(watcher::Event::Delete(n)) => ix.delete_node(&n.metadata.name.unwrap_or_default()),
            Ok(watcher::Event::Init) => {
                ix.nodes_init();
                None
            }
            Ok(watcher::Event::InitApply(n)) => {
                ix.nodes_init_apply(&n);
                None
            }
            Ok(watcher::Event::InitDone) => {
                ix.nodes_init_done();
                info!(nodes = ix.counts().0, "node watch synced");
                Some(Change::All)
            }
            Err(e) => {
                warn!(error = %e, "node watch failed; decisions hold until it recovers");
                ix.watch_failed(Watched::Nodes, e.to_string())
                    .then_some(Change::All)
            }
        };
        drop(ix);
        send(
            &changes,
            changed.into_iter().chain(recovered.then_some(Change::All)),
        );
    }
}

/// Feeds pods into the index: every pod's node and requests (the room on each node), and what a
/// gateway sees of the pods in the gateway namespaces.
pub async fn pods(
    client: Client,
    index: Arc<RwLock<ClusterIndex>>,
    changes: UnboundedSender<Change>,
) {
    let cfg = watcher::Config::default().fields("status.phase!=Succeeded,status.phase!=Failed");
    let stream = watcher(Api::<Pod>::all(client), cfg).default_backoff();
    futures::pin_mut!(stream);
    while let Some(ev) = stream.next().await {
        let mut ix = index
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let recovered = ev.is_ok() && ix.watch_ok(Watched::Pods);
        let changed = match ev {
            Ok(watcher::Event::Apply(p)) => ix.apply_pod(&p),
            Ok(watcher::Event::Delete(p)) => ix.delete_pod(&p),
            Ok(watcher::Event::Init) => {
                ix.pods_init();
                vec![]
            }
            Ok(watcher::Event::InitApply(p)) => {
                ix.pods_init_apply(&p);
                vec![]
            }
            Ok(watcher::Event::InitDone) => {
                ix.pods_init_done();
                info!(pods = ix.counts().1, "pod watch synced");
                vec![Change::All]
            }
            Err(e) => {
                warn!(error = %e, "pod watch failed; decisions hold until it recovers");
                let first = ix.watch_failed(Watched::Pods, e.to_string());
                first.then_some(Change::All).into_iter().collect()
            }
        };
        drop(ix);
        send(
            &changes,
            changed.into_iter().chain(recovered.then_some(Change::All)),
        );
    }
}
