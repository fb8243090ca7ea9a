//! The controller against a mocked API server (the tower-test `ApiServerVerifier` pattern of
//! kube-rs's controller-rs) and a one-answer Prometheus: the faults of issue 17, each replayed.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use http::{Request, Response};
use k8s_openapi::api::core::v1::{Node as KNode, Pod};
use kube::Client;
use kube::client::Body;
use kube::core::DeserializeGuard;
use kube::runtime::controller::Action;
use serde_json::{Value, json};
use tokio::sync::watch;

use super::context::{Config, Context};
use super::controller::{FINALIZER, WatchedGateway, forget_gone, reconcile, run};
use super::observe::validation_errors;
use crate::k8s::index::{ClusterIndex, Watched};
use crate::k8s::leader::{Leadership, Tenure};
use crate::k8s::target;
use crate::metrics::Metrics;
use crate::model::GatewayKey;
use crate::policy::{ElasticGateway, ElasticGatewaySpec};
use crate::prom::{PromConfig, Prometheus};

/// One request as the fake API server saw it.
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    path: String,
    body: String,
}

impl Seen {
    fn is(&self, method: &str, path_part: &str) -> bool {
        self.method == method && self.path.contains(path_part)
    }
}

/// What the fake answers: a status code and a JSON body, or `None` to never answer.
type Route = dyn Fn(&Seen) -> Option<(u16, Value)> + Send + Sync;

/// A kube client whose requests are answered by `route`, and the log of those requests.
fn fake_api(route: Arc<Route>) -> (Client, Arc<Mutex<Vec<Seen>>>) {
    let (svc, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        let mut hung = Vec::new();
        while let Some((req, send)) = handle.next_request().await {
            let (parts, body) = req.into_parts();
            let body = body.collect_bytes().await.unwrap_or_default();
            let s = Seen {
                method: parts.method.to_string(),
                path: parts.uri.to_string(),
                body: String::from_utf8_lossy(&body).into_owned(),
            };
            log.lock().unwrap().push(s.clone());
            match route(&s) {
                Some((code, v)) => send.send_response(
                    Response::builder()
                        .status(code)
                        .body(Body::from(serde_json::to_vec(&v).unwrap()))
                        .unwrap(),
                ),
                // Never answered: the caller's timeout must end the call.
                None => hung.push(send),
            }
        }
    });
    (Client::new(svc, "default"), seen)
}

fn status(code: u16, reason: &str) -> (u16, Value) {
    (
        code,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code,
               "reason": reason, "message": format!("{reason} (injected)")}),
    )
}

const NS: &str = "istio-system";
const NAME: &str = "gw";
const TARGET: &str = "istio-ingressgateway";

fn egw_json() -> Value {
    json!({
        "apiVersion": "spillway.io/v1alpha1", "kind": "ElasticGateway",
        "metadata": {"name": NAME, "namespace": NS, "generation": 1, "uid": "u1",
                     "finalizers": [FINALIZER]},
        "spec": {
            "target": {"kind": "Deployment", "name": TARGET},
            "minReplicas": 2, "maxReplicas": 40,
            "metrics": [{"query": "sum(load)", "targetPerReplica": 100.0}],
        }
    })
}

fn deployment_json(replicas: i32) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": TARGET, "namespace": NS, "generation": 1},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": TARGET}},
            "template": {"metadata": {"labels": {"app": TARGET}}, "spec": {"containers": [
                {"name": "istio-proxy", "resources": {"requests": {"cpu": "1", "memory": "1Gi"}}}]}}
        },
        "status": {"observedGeneration": 1, "replicas": replicas, "updatedReplicas": replicas}
    })
}

/// Answers every call a healthy reconcile makes; `over` may answer first.
fn cluster(
    over: impl Fn(&Seen) -> Option<Option<(u16, Value)>> + Send + Sync + 'static,
) -> Arc<Route> {
    Arc::new(move |s: &Seen| {
        if let Some(answer) = over(s) {
            return answer;
        }
        Some(if s.path.contains("/events") {
            (201, serde_json::from_str(&s.body).unwrap_or(json!({})))
        } else if s.path.contains("/elasticgateways") {
            (200, egw_json())
        } else if s.path.contains("/horizontalpodautoscalers") {
            (
                200,
                json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscalerList", "metadata": {}, "items": []}),
            )
        } else if s.path.contains("/scale") {
            (
                200,
                json!({"apiVersion": "autoscaling/v1", "kind": "Scale", "metadata": {"name": TARGET}, "spec": {"replicas": 4}}),
            )
        } else if s.path.contains("/deployments/") {
            (200, deployment_json(4))
        } else if s.path.contains("/pods/") {
            (
                200,
                json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": NS}}),
            )
        } else {
            status(404, "NotFound")
        })
    })
}

fn node(name: &str) -> KNode {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"mykey4pod": "asmgateway"}},
        "spec": {"taints": [{"key": "mykey", "value": "myvalue", "effect": "NoSchedule"}]},
        "status": {"allocatable": {"cpu": "16", "memory": "64Gi", "pods": "110"}}
    }))
    .unwrap()
}

fn pod(name: &str, node: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": NS, "labels": {"app": TARGET},
                     "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"nodeName": node, "containers": [{"name": "istio-proxy",
                 "resources": {"requests": {"cpu": "1", "memory": "1Gi"}}}]},
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}
    }))
    .unwrap()
}

/// An index with two ECS nodes, four gateway pods and their Deployment at 4 replicas; synced
/// or not.
fn index(synced: bool) -> Arc<RwLock<ClusterIndex>> {
    index_with(synced, deployment_json(4))
}

fn index_with(synced: bool, deployment: Value) -> Arc<RwLock<ClusterIndex>> {
    let mut ix = ClusterIndex::new([NS.to_string()]);
    ix.workloads
        .apply_deployment(serde_json::from_value(deployment).unwrap());
    ix.apply_node(&node("ecs-1"));
    ix.apply_node(&node("ecs-2"));
    for i in 0..4 {
        ix.apply_pod(&pod(
            &format!("gw-{i}"),
            if i % 2 == 0 { "ecs-1" } else { "ecs-2" },
        ));
    }
    if synced {
        ix.nodes_init_done();
        ix.pods_init_done();
        ix.listed(Watched::Deployments(NS.into()));
        ix.listed(Watched::Autoscalers(NS.into()));
        ix.listed(Watched::PlannedEvents);
    }
    Arc::new(RwLock::new(ix))
}

/// A Prometheus that always answers `value` as the total (evaluated "now" enough: the skew
/// allowed is large).
async fn prometheus(value: f64) -> Prometheus {
    use hyper::service::service_fn;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let svc = service_fn(move |_req| async move {
                    let body = json!({"status": "success", "data": {"resultType": "vector",
                        "result": [{"metric": {}, "value": [crate::clock::unix_now(), value.to_string()]}]}});
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(
                        http_body_util::Full::new(bytes::Bytes::from(body.to_string())),
                    ))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Prometheus::new(PromConfig {
        url: format!("http://{addr}"),
        timeout: Duration::from_secs(30),
        auth: crate::prom::PromAuth::default(),
        ca_pem: None,
        max_skew: Duration::from_secs(3600),
    })
    .unwrap()
}

fn context(
    client: Client,
    ix: Arc<RwLock<ClusterIndex>>,
    prom: Prometheus,
    leader: bool,
) -> Arc<Context> {
    let rx = Leadership::fixed(leader);
    // As main.rs does: the leader exports the per-gateway metrics.
    let metrics = Arc::new(Metrics::new());
    metrics.set_leader(leader);
    Arc::new(Context::new(
        client.clone(),
        client,
        metrics,
        prom,
        ix,
        rx,
        Config {
            api_timeout: Duration::from_secs(2),
            ..Config::new(Duration::from_secs(5))
        },
    ))
}

fn gateway(v: Value) -> Arc<WatchedGateway> {
    Arc::new(serde_json::from_value::<DeserializeGuard<ElasticGateway>>(v).unwrap())
}

fn status_patches(seen: &Mutex<Vec<Seen>>) -> Vec<String> {
    seen.lock()
        .unwrap()
        .iter()
        .filter(|s| s.is("PATCH", "/elasticgateways/gw/status"))
        .map(|s| s.body.clone())
        .collect()
}

fn count(seen: &Mutex<Vec<Seen>>, method: &str, part: &str) -> usize {
    seen.lock()
        .unwrap()
        .iter()
        .filter(|s| s.is(method, part))
        .count()
}

/// Just after start, the watches still listing: a quiet wait (a restart flips no condition and
/// sends no Event), but no decision either.
#[tokio::test]
async fn no_decision_and_no_noise_while_the_caches_list_at_start() {
    let (client, seen) = fake_api(cluster(|_| None));
    let ctx = context(client, index(false), prometheus(10_000.0).await, true);
    let action = reconcile(gateway(egw_json()), ctx.clone()).await.unwrap();
    assert_eq!(count(&seen, "GET", "/deployments/"), 0);
    assert_eq!(count(&seen, "PATCH", "/scale"), 0);
    assert_eq!(status_patches(&seen), Vec::<String>::new());
    assert_eq!(count(&seen, "POST", "/events"), 0);
    assert_eq!(action, Action::requeue(Duration::from_secs(1)));
    assert!(
        ctx.metrics.prometheus_text().contains(
            r#"spillway_held{namespace="istio-system",name="gw",kind="CachesNotSynced"} 1"#
        )
    );
}

#[tokio::test]
async fn no_decision_before_the_caches_have_synced() {
    let (client, seen) = fake_api(cluster(|_| None));
    let ix = index(false);
    let ix = Arc::new(RwLock::new(
        std::mem::take(&mut *ix.write().unwrap()).made_ago(Duration::from_secs(60)),
    ));
    let ctx = context(client, ix, prometheus(10_000.0).await, true);
    reconcile(gateway(egw_json()), ctx.clone()).await.unwrap();
    // Nothing read or written but the status (and its Event): no decision was made.
    assert_eq!(count(&seen, "GET", "/deployments/"), 0);
    assert_eq!(count(&seen, "PATCH", "/scale"), 0);
    let patches = status_patches(&seen);
    assert!(
        patches.iter().any(|b| b.contains("CachesNotSynced")),
        "{patches:?}"
    );
    assert!(
        ctx.metrics.prometheus_text().contains(
            r#"spillway_held{namespace="istio-system",name="gw",kind="CachesNotSynced"} 1"#
        )
    );
}

#[tokio::test]
async fn no_decision_while_a_watch_is_failing() {
    let (client, seen) = fake_api(cluster(|_| None));
    let ix = index(true);
    ix.write()
        .unwrap()
        .watch_failed(Watched::Nodes, "403 Forbidden".into());
    let ctx = context(client, ix.clone(), prometheus(10_000.0).await, true);
    reconcile(gateway(egw_json()), ctx.clone()).await.unwrap();
    assert_eq!(count(&seen, "PATCH", "/scale"), 0);
    assert!(
        status_patches(&seen)
            .iter()
            .any(|b| b.contains("WatchFailing") && b.contains("403"))
    );
    // Recovered: the next reconcile decides (and scales up for the load).
    ix.write().unwrap().watch_ok(&Watched::Nodes);
    reconcile(gateway(egw_json()), ctx.clone()).await.unwrap();
    assert_eq!(count(&seen, "PATCH", "/scale"), 1);
    let text = ctx.metrics.prometheus_text();
    assert!(
        text.contains(r#"spillway_held{namespace="istio-system",name="gw",kind="WatchFailing"} 0"#),
        "{text}"
    );
}

#[tokio::test]
async fn an_undecodable_gateway_is_reported_and_skipped() {
    let mut bad = egw_json();
    bad["spec"]["maxReplicas"] = json!("forty");
    bad["metadata"]["name"] = json!("gw");
    let (client, seen) = fake_api(cluster(|_| None));
    let ctx = context(client, index(true), prometheus(10.0).await, true);
    reconcile(gateway(bad.clone()), ctx.clone()).await.unwrap();
    assert!(
        status_patches(&seen)
            .iter()
            .any(|b| b.contains("Undecodable"))
    );
    assert_eq!(count(&seen, "GET", "/deployments/"), 0);
    assert!(
        ctx.metrics
            .prometheus_text()
            .contains(r#"kind="undecodable"} 1"#)
    );
    // In a list, the bad one does not stop the good one from decoding.
    let list = json!({"apiVersion": "spillway.io/v1alpha1", "kind": "ElasticGatewayList",
                      "metadata": {}, "items": [bad, egw_json()]});
    let l: kube::core::ObjectList<WatchedGateway> = serde_json::from_value(list).unwrap();
    assert!(l.items[0].0.is_err() && l.items[1].0.is_ok());
}

#[tokio::test]
async fn an_hpa_on_the_target_holds_the_replica_count_and_a_failing_hpa_watch_holds_all() {
    // An HPA on the target (as the namespace's watch shows it): the count is held, the rest
    // decided, and the status says which HPA.
    let (client, seen) = fake_api(cluster(|_| None));
    let ix = index(true);
    let hpa = serde_json::from_value(json!({
        "metadata": {"name": "gw-hpa", "namespace": NS},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": TARGET}, "maxReplicas": 10}
    }))
    .unwrap();
    ix.write().unwrap().workloads.apply_autoscaler(&hpa);
    let ctx = context(client, ix.clone(), prometheus(10_000.0).await, true);
    reconcile(gateway(egw_json()), ctx.clone()).await.unwrap();
    assert_eq!(count(&seen, "PATCH", "/scale"), 0, "scaled despite an HPA");
    let patches = status_patches(&seen);
    assert!(
        patches
            .iter()
            .any(|b| b.contains("HpaTargetsGateway") && b.contains("gw-hpa")),
        "{patches:?}"
    );
    // The HPA watch fails (its RBAC taken away, say): no decision at all until it recovers,
    // since an HPA could be made meanwhile unseen.
    ix.write()
        .unwrap()
        .watch_failed(Watched::Autoscalers(NS.into()), "403 Forbidden".into());
    reconcile(gateway(egw_json()), ctx).await.unwrap();
    assert!(
        status_patches(&seen)
            .iter()
            .any(|b| b.contains("WatchFailing")
                && b.contains("horizontalpodautoscalers in istio-system")),
        "{:?}",
        status_patches(&seen)
    );
}

#[tokio::test]
async fn a_refused_scale_is_retried_on_the_next_decision() {
    let refusals = Arc::new(Mutex::new(1));
    let r = refusals.clone();
    let (client, seen) = fake_api(cluster(move |s| {
        let mut left = r.lock().unwrap();
        (s.is("PATCH", "/scale") && *left > 0).then(|| {
            *left -= 1;
            Some(status(403, "Forbidden"))
        })
    }));
    let ctx = context(client, index(true), prometheus(10_000.0).await, true);
    reconcile(gateway(egw_json()), ctx.clone()).await.unwrap();
    assert!(
        status_patches(&seen)
            .last()
            .unwrap()
            .contains("WriteFailed")
    );
    reconcile(gateway(egw_json()), ctx.clone()).await.unwrap();
    // The second decision scales again instead of counting the refused one against the rate
    // limit.
    assert_eq!(count(&seen, "PATCH", "/scale"), 2);
    assert!(
        status_patches(&seen)
            .last()
            .unwrap()
            .contains("WritesSucceeded")
    );
}

#[tokio::test]
async fn refused_deletion_costs_make_one_event_per_decision() {
    let (client, seen) = fake_api(cluster(|s| {
        s.is("PATCH", "/pods/")
            .then(|| Some(status(403, "Forbidden")))
    }));
    let ctx = context(client, index(true), prometheus(400.0).await, true);
    reconcile(gateway(egw_json()), ctx).await.unwrap();
    assert_eq!(count(&seen, "PATCH", "/pods/"), 4);
    let failures = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.path.contains("/events") && s.body.contains("WriteFailed"))
        .count();
    assert_eq!(failures, 1);
}

#[tokio::test(start_paused = true)]
async fn a_hung_api_call_ends_at_its_timeout() {
    // The scale write never answers: the reconcile fails at the API timeout instead of holding
    // the gateway (and shutdown) forever.
    let (client, _seen) = fake_api(cluster(|s| s.is("PATCH", "/scale").then_some(None)));
    let ctx = context(client, index(true), prometheus(10_000.0).await, true);
    reconcile(gateway(egw_json()), ctx.clone()).await.unwrap();
    let text = ctx.metrics.prometheus_text();
    assert!(
        text.contains(
            r#"spillway_errors_total{namespace="istio-system",name="gw",kind="api_write"} 1"#
        ),
        "{text}"
    );
}

#[tokio::test(start_paused = true)]
async fn shutdown_is_bounded_by_the_grace_period() {
    // One ElasticGateway; its reconcile's first write never answers, and (to isolate the bound
    // on shutdown) neither the API timeout nor the reconcile timeout would end it for an hour.
    let (client, seen) = fake_api(Arc::new(|s: &Seen| {
        if s.is("GET", "/elasticgateways") && !s.path.contains("watch=") {
            Some((
                200,
                json!({"apiVersion": "spillway.io/v1alpha1", "kind": "ElasticGatewayList",
                              "metadata": {"resourceVersion": "1"}, "items": [egw_json()]}),
            ))
        } else {
            None
        }
    }));
    let rx = Leadership::fixed(true);
    let ctx = Arc::new(Context::new(
        client.clone(),
        client,
        Arc::new(Metrics::new()),
        prometheus(10.0).await,
        index(true),
        rx,
        Config {
            api_timeout: Duration::from_secs(3600),
            reconcile_timeout: Duration::from_secs(3600),
            ..Config::new(Duration::from_secs(5))
        },
    ));
    let (stop_tx, mut stop_rx) = watch::channel(false);
    let (_changes_tx, changes_rx) = tokio::sync::mpsc::unbounded_channel();
    let grace = ctx.config.shutdown_grace;
    let run = tokio::spawn(run(ctx, changes_rx, async move {
        let _ = stop_rx.wait_for(|s| *s).await;
    }));
    tokio::time::sleep(Duration::from_secs(5)).await;
    stop_tx.send(true).unwrap();
    let stopped_at = tokio::time::Instant::now();
    run.await.unwrap().unwrap();
    let took = stopped_at.elapsed();
    assert!(
        took >= grace && took <= grace + Duration::from_secs(1),
        "{took:?} {:?}",
        seen.lock().unwrap()
    );
}

#[tokio::test]
async fn a_new_leader_waits_a_full_window_before_scaling_down() {
    // As a follower it sees a low load (and would scale down); on becoming leader its memory
    // starts afresh: the seed holds the count for the scale-down window.
    let (client, seen) = fake_api(cluster(|_| None));
    let (tx, rx) = watch::channel(Tenure::Following);
    let ctx = Arc::new(Context::new(
        client.clone(),
        client,
        Arc::new(Metrics::new()),
        prometheus(10.0).await,
        index(true),
        Leadership::new(rx),
        Config::new(Duration::from_secs(5)),
    ));
    reconcile(gateway(egw_json()), ctx.clone()).await.unwrap();
    // A follower for long: everything it remembers is older than any window.
    ctx.memory.edit_engines(|engine| {
        for r in &mut engine.hpa.recommendations {
            r.at -= 3600.0;
        }
    });
    tx.send(Tenure::Leading { until: None }).unwrap();
    reconcile(gateway(egw_json()), ctx.clone()).await.unwrap();
    assert_eq!(count(&seen, "PATCH", "/scale"), 0);
    let patches = status_patches(&seen);
    assert!(
        patches.last().unwrap().contains("\"desiredReplicas\":4"),
        "{patches:?}"
    );
}

#[test]
fn a_deleted_gateway_loses_its_series() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (client, _seen) = fake_api(cluster(|_| None));
        let ctx = context(client, index(true), prometheus(10_000.0).await, true);
        reconcile(gateway(egw_json()), ctx.clone()).await.unwrap();
        assert!(ctx.metrics.prometheus_text().contains(r#"name="gw""#));
        forget_gone(&ctx, &HashSet::new());
        let text = ctx.metrics.prometheus_text();
        assert!(!text.contains(r#"name="gw""#), "{text}");
    });
}

#[tokio::test]
async fn a_refused_weight_change_is_retried_on_the_next_decision() {
    // The template carries 50/50; the policy's normal weights are 80/20: spillway restores them.
    let spec: ElasticGatewaySpec = serde_json::from_value(egw_json()["spec"].clone()).unwrap();
    let mut d = deployment_json(4);
    d["spec"]["template"]["spec"]["affinity"] = json!({"nodeAffinity": {
        "preferredDuringSchedulingIgnoredDuringExecution":
            target::preferred_terms(&spec, crate::policy::PoolWeights { ecs: 50, eci: 50 })}});
    let refusals = Arc::new(Mutex::new(1));
    let r = refusals.clone();
    let (client, seen) = fake_api(cluster(move |s| {
        let mut left = r.lock().unwrap();
        (s.is("PATCH", "/deployments/") && !s.path.contains("/scale") && *left > 0).then(|| {
            *left -= 1;
            Some(status(422, "Invalid"))
        })
    }));
    let ctx = context(client, index_with(true, d), prometheus(400.0).await, true);
    reconcile(gateway(egw_json()), ctx.clone()).await.unwrap();
    reconcile(gateway(egw_json()), ctx.clone()).await.unwrap();
    let weight_patches = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.is("PATCH", "/deployments/") && !s.path.contains("/scale"))
        .count();
    assert_eq!(
        weight_patches, 2,
        "the refused weight change was not retried"
    );
}

#[tokio::test]
async fn the_leader_puts_the_finalizer_on_a_decoded_gateway_first_and_a_follower_never() {
    let mut bare = egw_json();
    bare["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("finalizers");
    let finalizer_patches = |seen: &Mutex<Vec<Seen>>| {
        seen.lock()
            .unwrap()
            .iter()
            .filter(|s| s.is("PATCH", "/elasticgateways/gw") && !s.path.contains("/status"))
            .map(|s| s.body.clone())
            .collect::<Vec<_>>()
    };
    // A follower decides but writes nothing, not even the finalizer.
    let (client, seen) = fake_api(cluster(|_| None));
    let ctx = context(client, index(true), prometheus(10_000.0).await, false);
    reconcile(gateway(bare.clone()), ctx).await.unwrap();
    assert!(finalizer_patches(&seen).is_empty());
    assert_eq!(count(&seen, "PATCH", "/scale"), 0);
    // The leader adds the finalizer before any change to the gateway.
    let (client, seen) = fake_api(cluster(|_| None));
    let ctx = context(client, index(true), prometheus(10_000.0).await, true);
    reconcile(gateway(bare), ctx).await.unwrap();
    let patches = finalizer_patches(&seen);
    assert_eq!(patches.len(), 1, "{patches:?}");
    assert!(patches[0].contains(FINALIZER), "{patches:?}");
    assert_eq!(count(&seen, "PATCH", "/scale"), 0);
}

/// Validation (PromQL parsing included, linear but not free for a 4 KiB query) runs once per
/// generation of the ElasticGateway, not on every reconcile: a spec that changed without a new
/// generation (which the apiserver never serves) keeps the verdict of its generation.
#[tokio::test]
async fn a_policy_is_validated_once_per_generation() {
    let (client, _) = fake_api(cluster(|_| None));
    let ctx = context(client, index(true), prometheus(10.0).await, true);
    let egw = |generation: i64, min: i32| {
        let mut v = egw_json();
        v["metadata"]["generation"] = json!(generation);
        v["spec"]["minReplicas"] = json!(min);
        serde_json::from_value::<ElasticGateway>(v).unwrap()
    };
    let key = GatewayKey::new(NS, NAME);
    assert!(validation_errors(&egw(1, 2), &key, &ctx).is_empty());
    assert!(
        validation_errors(&egw(1, 99), &key, &ctx).is_empty(),
        "validated again within generation 1"
    );
    let errors = validation_errors(&egw(2, 99), &key, &ctx);
    assert!(
        errors.iter().any(|e| e.contains("minReplicas")),
        "generation 2 is validated: {errors:?}"
    );
}

/// The fence: a leader whose hold on the Lease is shorter than one API call decides, but sends
/// nothing (not the scale, not the status), counts it, and its memory does not record the scale
/// as done; with the Lease renewed, the next decision scales.
#[tokio::test]
async fn a_leader_without_time_left_on_the_lease_sends_no_write() {
    let (client, seen) = fake_api(cluster(|_| None));
    let api_timeout = Duration::from_secs(2);
    let until = std::time::Instant::now() + Duration::from_secs(1);
    let (tx, rx) = watch::channel(Tenure::Leading { until: Some(until) });
    let metrics = Arc::new(Metrics::new());
    metrics.set_leader(true);
    let ctx = Arc::new(Context::new(
        client.clone(),
        client,
        metrics,
        prometheus(10_000.0).await,
        index(true),
        Leadership::new(rx),
        Config {
            api_timeout,
            ..Config::new(Duration::from_secs(5))
        },
    ));
    reconcile(gateway(egw_json()), ctx.clone()).await.unwrap();
    let writes: Vec<String> = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.method != "GET")
        .map(|s| format!("{} {}", s.method, s.path))
        .collect();
    assert!(writes.is_empty(), "sent while fenced: {writes:?}");
    let text = ctx.metrics.prometheus_text();
    assert!(
        text.contains(r#"spillway_fenced_writes_total{reason="expiring",write="status"} 1"#),
        "{text}"
    );
    // Renewed: the scale goes out now (the fenced one did not start a rate-limit period).
    let until = std::time::Instant::now() + Duration::from_secs(3600);
    tx.send(Tenure::Leading { until: Some(until) }).unwrap();
    reconcile(gateway(egw_json()), ctx.clone()).await.unwrap();
    assert_eq!(count(&seen, "PATCH", "/scale"), 1);
}

/// A deleted ElasticGateway is handed back once. A second Cleanup of the same object (the
/// cache's copy still shows the finalizer while a wake queued during the hand-back runs) writes
/// nothing to the gateway and sends no second Event, and the finalizer's removal answering 404
/// (the object has gone) ends that reconcile without an error.
#[tokio::test]
async fn a_deleted_gateway_is_handed_back_once() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let mut deleted = egw_json();
    deleted["metadata"]["deletionTimestamp"] = json!("2026-12-07T00:00:00Z");
    deleted["status"] = json!({"original": {"preferredTerms": []}});
    let removals = Arc::new(AtomicUsize::new(0));
    let r = removals.clone();
    let (client, seen) = fake_api(cluster(move |s| {
        (s.is("PATCH", "/elasticgateways/gw") && !s.path.contains("/status")).then(|| {
            Some(if r.fetch_add(1, Ordering::SeqCst) == 0 {
                (200, egw_json())
            } else {
                status(404, "NotFound")
            })
        })
    }));
    let ctx = context(client, index(true), prometheus(10.0).await, true);
    for _ in 0..2 {
        reconcile(gateway(deleted.clone()), ctx.clone())
            .await
            .unwrap();
    }
    assert_eq!(
        removals.load(Ordering::SeqCst),
        2,
        "the finalizer's removal"
    );
    assert_eq!(
        count(&seen, "PATCH", "/deployments/"),
        1,
        "the affinity restored once"
    );
    assert_eq!(count(&seen, "POST", "/events"), 1, "one HandedBack Event");
    // A new object of the same name is a new policy: its deletion hands back again.
    deleted["metadata"]["uid"] = json!("u2");
    reconcile(gateway(deleted.clone()), ctx.clone())
        .await
        .unwrap();
    assert_eq!(count(&seen, "PATCH", "/deployments/"), 2);
    // Deleted paused, the gateway is left as it is; unpaused while still terminating (the
    // finalizer's removal failed), it is handed back for real, once.
    deleted["metadata"]["uid"] = json!("u3");
    deleted["spec"]["paused"] = json!(true);
    reconcile(gateway(deleted.clone()), ctx.clone())
        .await
        .unwrap();
    assert_eq!(
        count(&seen, "PATCH", "/deployments/"),
        2,
        "paused: untouched"
    );
    deleted["spec"]["paused"] = json!(false);
    for _ in 0..2 {
        reconcile(gateway(deleted.clone()), ctx.clone())
            .await
            .unwrap();
    }
    assert_eq!(count(&seen, "PATCH", "/deployments/"), 3);
}
