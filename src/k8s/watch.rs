//! The two watches behind the index: every node, and every pod that is not finished. kube's
//! watcher relists and resumes on its own (with backoff); events go straight into the index
//! without keeping the full objects.

use std::sync::{Arc, RwLock};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Client;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::watch;
use tracing::{info, warn};

use super::index::{ClusterIndex, Watched};

fn bump(tx: &watch::Sender<u64>) {
    tx.send_modify(|v| *v = v.wrapping_add(1));
}

/// Feeds nodes into the index until the stream ends (it does not, short of shutdown).
pub async fn nodes(client: Client, index: Arc<RwLock<ClusterIndex>>, changed: watch::Sender<u64>) {
    let stream = watcher(Api::<Node>::all(client), watcher::Config::default()).default_backoff();
    futures::pin_mut!(stream);
    while let Some(ev) = stream.next().await {
        let mut ix = index
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if ev.is_ok() {
            ix.watch_ok(Watched::Nodes);
        }
        match ev {
            Ok(watcher::Event::Apply(n)) => ix.apply_node(&n),
            Ok(watcher::Event::Delete(n)) => ix.delete_node(&n.metadata.name.unwrap_or_default()),
            Ok(watcher::Event::Init) => ix.nodes_init(),
            Ok(watcher::Event::InitApply(n)) => {
                ix.nodes_init_apply(&n);
                continue;
            }
            Ok(watcher::Event::InitDone) => {
                ix.nodes_init_done();
                info!(nodes = ix.counts().0, "node watch synced");
            }
            Err(e) => {
                warn!(error = %e, "node watch failed; decisions hold until it recovers");
                ix.watch_failed(Watched::Nodes, e.to_string());
            }
        }
        drop(ix);
        bump(&changed);
    }
}

/// Feeds pods into the index. Only changes to pods in the gateway namespaces wake the
/// controller; the rest (most of a big cluster) only move ECS capacity, which the periodic
/// decision picks up.
pub async fn pods(client: Client, index: Arc<RwLock<ClusterIndex>>, changed: watch::Sender<u64>) {
    let cfg = watcher::Config::default().fields("status.phase!=Succeeded,status.phase!=Failed");
    let stream = watcher(Api::<Pod>::all(client), cfg).default_backoff();
    futures::pin_mut!(stream);
    while let Some(ev) = stream.next().await {
        let mut ix = index
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if ev.is_ok() {
            ix.watch_ok(Watched::Pods);
        }
        let wake = match ev {
            Ok(watcher::Event::Apply(p)) => {
                ix.apply_pod(&p);
                p.metadata
                    .namespace
                    .as_deref()
                    .is_some_and(|ns| ix.watches_namespace(ns))
            }
            Ok(watcher::Event::Delete(p)) => {
                ix.delete_pod(&p);
                p.metadata
                    .namespace
                    .as_deref()
                    .is_some_and(|ns| ix.watches_namespace(ns))
            }
            Ok(watcher::Event::Init) => {
                ix.pods_init();
                false
            }
            Ok(watcher::Event::InitApply(p)) => {
                ix.pods_init_apply(&p);
                false
            }
            Ok(watcher::Event::InitDone) => {
                ix.pods_init_done();
                info!(pods = ix.counts().1, "pod watch synced");
                true
            }
            Err(e) => {
                warn!(error = %e, "pod watch failed; decisions hold until it recovers");
                ix.watch_failed(Watched::Pods, e.to_string());
                true
            }
        };
        drop(ix);
        if wake {
            bump(&changed);
        }
    }
}
