//! The watches behind the index: every node and every pod that is not finished, cluster-wide;
//! the Deployments and HorizontalPodAutoscalers of each gateway namespace. kube's watcher
//! relists and resumes on its own (with backoff); events go straight into the index without
//! keeping the full objects, and what each one changed there goes out on `changes`, so that the
//! agent wakes only the gateways it concerns.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Client;
use kube::api::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event, watcher};
use tokio::sync::mpsc::UnboundedSender;
use tracing::{info, warn};

use super::index::{Change, ClusterIndex, Watched};
use super::planned::WatchedEvent;

/// How a watch comes back after an error.
#[derive(Clone, Copy)]
enum Retry {
    /// kube's watcher resumes on its own, with backoff; the watch counts as failing until its
    /// next event (nodes and pods change all the time in a real cluster).
    Resume,
    /// The watch is made afresh after a backoff: it lists again, and the completed list says it
    /// works (a namespace's Deployments may not change for hours after a failure).
    Relist,
}

/// Feeds one watch's events into the index with `apply` until shutdown, and sends what they
/// changed. A completed list and a watch that recovers change everything; so does the first
/// failure (the gateways it feeds then hold).
async fn feed<K, S>(
    mut make: impl FnMut() -> S,
    index: Arc<RwLock<ClusterIndex>>,
    changes: UnboundedSender<Change>,
    watched: Watched,
    retry: Retry,
    mut apply: impl FnMut(&mut ClusterIndex, Event<K>) -> Vec<Change>,
) where
    S: Stream<Item = Result<Event<K>, watcher::Error>>,
{
    let mut backoff = Duration::from_millis(500);
    loop {
        let stream = make();
        futures::pin_mut!(stream);
        while let Some(ev) = stream.next().await {
            let mut ix = index
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let (changed, failed) = match ev {
                Ok(ev) => {
                    let recovered = ix.watch_ok(&watched);
                    let listed = matches!(ev, Event::InitDone);
                    let mut changed = apply(&mut ix, ev);
                    if listed {
                        ix.listed(watched.clone());
                        info!(watch = %watched, "watch synced");
                        backoff = Duration::from_millis(500);
                    }
                    if listed || recovered {
                        changed.push(Change::All);
                    }
                    (changed, false)
                }
                Err(e) => {
                    warn!(watch = %watched, error = %e, "watch failed; the gateways it feeds hold until it recovers");
                    let first = ix.watch_failed(watched.clone(), e.to_string());
                    (first.then_some(Change::All).into_iter().collect(), true)
                }
            };
            drop(ix);
            for c in changed {
                // A closed receiver (the agent stopping) is not an error here.
                let _ = changes.send(c);
            }
            if failed && matches!(retry, Retry::Relist) {
                break;
            }
        }
        if matches!(retry, Retry::Resume) {
            return;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

/// Every node.
pub async fn nodes(
    client: Client,
    index: Arc<RwLock<ClusterIndex>>,
    changes: UnboundedSender<Change>,
) {
    let make =
        || watcher(Api::<Node>::all(client.clone()), watcher::Config::default()).default_backoff();
    feed(
        make,
        index,
        changes,
        Watched::Nodes,
        Retry::Resume,
        |ix, ev| match ev {
            Event::Apply(n) => ix.apply_node(&n).into_iter().collect(),
            Event::Delete(n) => ix
                .delete_node(n.metadata.name.as_deref().unwrap_or_default())
                .into_iter()
                .collect(),
            Event::Init => {
                ix.nodes_init();
                vec![]
            }
            Event::InitApply(n) => {
                ix.nodes_init_apply(&n);
                vec![]
            }
            Event::InitDone => {
                ix.nodes_init_done();
                vec![]
            }
        },
    )
    .await;
}

/// Every pod that is not finished: its node and requests (the room on each node), and what a
/// gateway sees of the pods in the gateway namespaces.
pub async fn pods(
    client: Client,
    index: Arc<RwLock<ClusterIndex>>,
    changes: UnboundedSender<Change>,
) {
    let cfg = watcher::Config::default().fields("status.phase!=Succeeded,status.phase!=Failed");
    let make = || watcher(Api::<Pod>::all(client.clone()), cfg.clone()).default_backoff();
    feed(
        make,
        index,
        changes,
        Watched::Pods,
        Retry::Resume,
        |ix, ev| match ev {
            Event::Apply(p) => ix.apply_pod(&p),
            Event::Delete(p) => ix.delete_pod(&p),
            Event::Init => {
                ix.pods_init();
                vec![]
            }
            Event::InitApply(p) => {
                ix.pods_init_apply(&p);
                vec![]
            }
            Event::InitDone => {
                ix.pods_init_done();
                vec![]
            }
        },
    )
    .await;
}

/// The Deployments of one gateway namespace.
pub async fn deployments(
    client: Client,
    index: Arc<RwLock<ClusterIndex>>,
    changes: UnboundedSender<Change>,
    ns: String,
) {
    let api = Api::<Deployment>::namespaced(client, &ns);
    let make = || watcher(api.clone(), watcher::Config::default());
    let watched = Watched::Deployments(ns.clone());
    feed(
        make,
        index,
        changes,
        watched,
        Retry::Relist,
        move |ix, ev| {
            let w = &mut ix.workloads;
            match ev {
                Event::Apply(d) => w.apply_deployment(d).into_iter().collect(),
                Event::Delete(d) => w.delete_deployment(&d).into_iter().collect(),
                Event::Init => {
                    w.deployments_init(&ns);
                    vec![]
                }
                Event::InitApply(d) => {
                    w.deployments_init_apply(&ns, d);
                    vec![]
                }
                Event::InitDone => {
                    w.deployments_init_done(&ns);
                    vec![]
                }
            }
        },
    )
    .await;
}

/// Every PlannedEvent. Made afresh after a failure: the CRD may be installed later, and
/// nothing changes for hours in a quiet cluster.
pub async fn planned_events(
    client: Client,
    index: Arc<RwLock<ClusterIndex>>,
    changes: UnboundedSender<Change>,
) {
    let api = Api::<WatchedEvent>::all(client);
    let make = || watcher(api.clone(), watcher::Config::default());
    feed(
        make,
        index,
        changes,
        Watched::PlannedEvents,
        Retry::Relist,
        |ix, ev| {
            let b = &mut ix.planned;
            match ev {
                Event::Apply(e) => b.apply(e),
                Event::Delete(e) => b.delete(&e),
                Event::Init => {
                    b.init();
                    vec![]
                }
                Event::InitApply(e) => {
                    b.init_apply(e);
                    vec![]
                }
                Event::InitDone => {
                    b.init_done();
                    vec![]
                }
            }
        },
    )
    .await;
}

/// The HorizontalPodAutoscalers of one gateway namespace.
pub async fn autoscalers(
    client: Client,
    index: Arc<RwLock<ClusterIndex>>,
    changes: UnboundedSender<Change>,
    ns: String,
) {
    let api = Api::<HorizontalPodAutoscaler>::namespaced(client, &ns);
    let make = || watcher(api.clone(), watcher::Config::default());
    let watched = Watched::Autoscalers(ns.clone());
    feed(
        make,
        index,
        changes,
        watched,
        Retry::Relist,
        move |ix, ev| {
            let w = &mut ix.workloads;
            match ev {
                Event::Apply(h) => w.apply_autoscaler(&h).into_iter().collect(),
                Event::Delete(h) => w.delete_autoscaler(&h).into_iter().collect(),
                Event::Init => {
                    w.autoscalers_init(&ns);
                    vec![]
                }
                Event::InitApply(h) => {
                    w.autoscalers_init_apply(&ns, &h);
                    vec![]
                }
                Event::InitDone => {
                    w.autoscalers_init_done(&ns);
                    vec![]
                }
            }
        },
    )
    .await;
}
