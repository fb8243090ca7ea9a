//! A stand-in Kubernetes API server: the wire protocol spillway uses (list with
//! resourceVersion, chunked watch streams, get, merge / strategic / apply patches, the `scale`
//! and `status` subresources, eviction, events, leases with server-side-apply ownership of
//! `holderIdentity`), real status codes, and faults on request. Its gateway pods come from the
//! simulator's cluster (`spillway::sim::cluster`): the same scheduler and ReplicaSet behaviour
//! the drills use, stepped on wall time.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::channel::mpsc;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use spillway::model::{Node, Pool, Resources};
use spillway::sim::Scenario;
use spillway::sim::cluster::{Latencies, SimCluster, pool_classifier};

type Body = BoxBody<Bytes, Infallible>;

/// One request as the server saw it.
#[derive(Clone, Debug)]
pub struct Logged {
    pub method: String,
    pub path: String,
    pub status: u16,
    /// The bearer token: which agent sent it.
    pub who: String,
    pub at: Instant,
}

/// A fault: answer the next `times` requests matching `method` and `path_contains` with `status`.
#[derive(Clone, Debug)]
pub struct Fault {
    pub method: &'static str,
    pub path_contains: String,
    pub status: u16,
    pub times: usize,
}

#[derive(Default)]
struct Watcher {
    kind: String,
    ns: Option<String>,
    tx: Option<mpsc::UnboundedSender<Result<Frame<Bytes>, Infallible>>>,
}

/// A gateway pod the ReplicaSets deleted.
#[derive(Clone, Debug)]
pub struct Deletion {
    pub name: String,
    pub pool: Pool,
    /// Live ECI pods left when it went.
    pub eci_left: usize,
    /// From an older pod template: replaced by a rollout rather than removed by a scale-in.
    pub rolled: bool,
}

/// The gateway workload the server animates.
pub struct Gateway {
    pub ns: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub cluster: SimCluster,
    /// pod name → uid, creation
    known: HashMap<String, (String, String)>,
    /// Every replica count written, in order.
    pub replica_writes: Vec<i32>,
    /// Gateway pods deleted, in order.
    pub deletions: Vec<Deletion>,
    pub pdb_min_available: Option<usize>,
}

pub struct State {
    rv: u64,
    objects: BTreeMap<(String, String, String), Value>,
    history: VecDeque<(u64, String, String, Value)>,
    watchers: Vec<Watcher>,
    pub faults: Vec<Fault>,
    pub delay: Duration,
    pub log: Vec<Logged>,
    lease_owner: HashMap<(String, String), String>,
    pub gateway: Option<Gateway>,
    /// When set, requests are authorised against these rules (403 otherwise).
    pub rbac: Option<super::rbac::Rbac>,
    started: Instant,
}

#[derive(Clone)]
pub struct ApiServer {
    pub addr: SocketAddr,
    pub state: Arc<Mutex<State>>,
}

fn ts(secs_since_epoch: u64) -> String {
    k8s_openapi::jiff::Timestamp::from_second(secs_since_epoch as i64)
        .unwrap()
        .to_string()
}

fn now_epoch() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn status_body(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message, "reason": reason, "code": code})
}

/// RFC 7386 JSON merge patch.
pub fn merge(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = json!({});
            }
            let t = target.as_object_mut().unwrap();
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        other => *target = other.clone(),
    }
}

/// RFC 6902 JSON patch, the operations kube's finalizer helper sends (test, add, remove).
fn json_patch(target: &mut Value, ops: &Value) -> Result<(), String> {
    for op in ops.as_array().ok_or("a JSON patch is an array")? {
        let path = op["path"].as_str().ok_or("op without a path")?;
        let (parent, last) = path.rsplit_once('/').ok_or("bad path")?;
        match op["op"].as_str() {
            Some("test") => {
                let found = target.pointer(path).cloned().unwrap_or(Value::Null);
                if found != op["value"] {
                    return Err(format!("test failed at {path}: {found} != {}", op["value"]));
                }
            }
            Some("add") => {
                let p = target.pointer_mut(parent).ok_or("no parent")?;
                match p {
                    Value::Array(a) if last == "-" => a.push(op["value"].clone()),
                    Value::Array(a) => {
                        let i: usize = last.parse().map_err(|_| "bad index")?;
                        a.insert(i.min(a.len()), op["value"].clone());
                    }
                    Value::Object(o) => {
                        o.insert(last.to_string(), op["value"].clone());
                    }
                    _ => return Err("cannot add there".into()),
                }
            }
            Some("remove") => {
                let p = target.pointer_mut(parent).ok_or("no parent")?;
                match p {
                    Value::Array(a) => {
                        let i: usize = last.parse().map_err(|_| "bad index")?;
                        if i >= a.len() {
                            return Err("index out of range".into());
                        }
                        a.remove(i);
                    }
                    Value::Object(o) => {
                        o.remove(last).ok_or("nothing to remove")?;
                    }
                    _ => return Err("cannot remove there".into()),
                }
            }
            other => return Err(format!("unsupported op {other:?}")),
        }
    }
    Ok(())
}

fn kind_of(resource: &str) -> (&'static str, &'static str) {
    match resource {
        "nodes" => ("v1", "Node"),
        "pods" => ("v1", "Pod"),
        "deployments" => ("apps/v1", "Deployment"),
        "elasticgateways" => ("spillway.io/v1alpha1", "ElasticGateway"),
        "events" => ("events.k8s.io/v1", "Event"),
        "leases" => ("coordination.k8s.io/v1", "Lease"),
        "horizontalpodautoscalers" => ("autoscaling/v2", "HorizontalPodAutoscaler"),
        _ => ("v1", "Unknown"),
    }
}

/// A parsed API path.
#[derive(Debug)]
struct Route {
    resource: String,
    ns: Option<String>,
    name: Option<String>,
    sub: Option<String>,
}

fn route(path: &str) -> Option<Route> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let rest = match parts.as_slice() {
        ["api", "v1", rest @ ..] => rest,
        ["apis", _group, _version, rest @ ..] => rest,
        _ => return None,
    };
    let (ns, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some(ns.to_string()), rest),
        r => (None, r),
    };
    Some(Route {
        resource: rest.first()?.to_string(),
        name: rest.get(1).map(|s| s.to_string()),
        sub: rest.get(2).map(|s| s.to_string()),
        ns,
    })
}

impl State {
    fn bump(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    /// Stores an object and tells the watchers.
    pub fn put(&mut self, resource: &str, ns: &str, name: &str, mut obj: Value) -> Value {
        let key = (resource.to_string(), ns.to_string(), name.to_string());
        let existed = self.objects.contains_key(&key);
        let rv = self.bump();
        let (api_version, kind) = kind_of(resource);
        obj["apiVersion"] = json!(api_version);
        obj["kind"] = json!(kind);
        obj["metadata"]["name"] = json!(name);
        if !ns.is_empty() {
            obj["metadata"]["namespace"] = json!(ns);
        }
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        if obj["metadata"]["uid"].is_null() {
            obj["metadata"]["uid"] = json!(format!("uid-{resource}-{rv}"));
        }
        if obj["metadata"]["creationTimestamp"].is_null() {
            obj["metadata"]["creationTimestamp"] = json!(ts(now_epoch()));
        }
        self.objects.insert(key, obj.clone());
        self.notify(
            rv,
            resource,
            ns,
            if existed { "MODIFIED" } else { "ADDED" },
            &obj,
        );
        obj
    }

    pub fn delete(&mut self, resource: &str, ns: &str, name: &str) -> Option<Value> {
        let mut obj =
            self.objects
                .remove(&(resource.to_string(), ns.to_string(), name.to_string()))?;
        let rv = self.bump();
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        self.notify(rv, resource, ns, "DELETED", &obj);
        Some(obj)
    }

    pub fn get(&self, resource: &str, ns: &str, name: &str) -> Option<&Value> {
        self.objects
            .get(&(resource.to_string(), ns.to_string(), name.to_string()))
    }

    pub fn list(&self, resource: &str, ns: Option<&str>) -> Vec<Value> {
        self.objects
            .iter()
            .filter(|((r, n, _), _)| r == resource && ns.is_none_or(|ns| ns == n))
            .map(|(_, v)| v.clone())
            .collect()
    }

    fn notify(&mut self, rv: u64, resource: &str, ns: &str, kind: &str, obj: &Value) {
        self.history.push_back((
            rv,
            resource.to_string(),
            ns.to_string(),
            json!({"type": kind, "object": obj}),
        ));
        while self.history.len() > 50_000 {
            self.history.pop_front();
        }
        let line = Bytes::from(format!("{}\n", json!({"type": kind, "object": obj})));
        for w in &mut self.watchers {
            if w.kind == resource && w.ns.as_deref().is_none_or(|n| n == ns) {
                if let Some(tx) = &w.tx {
                    if tx.unbounded_send(Ok(Frame::data(line.clone()))).is_err() {
                        w.tx = None;
                    }
                }
            }
        }
        self.watchers.retain(|w| w.tx.is_some());
    }

    /// Ends every open watch stream (as an API server restart or a load balancer would).
    pub fn drop_watches(&mut self) {
        self.watchers.clear();
    }

    pub fn writes_by(&self, who: &str) -> Vec<&Logged> {
        self.log
            .iter()
            .filter(|l| l.who == who && l.method != "GET" && !l.path.contains("/leases"))
            .collect()
    }

    fn take_fault(&mut self, method: &str, path: &str) -> Option<u16> {
        let f = self
            .faults
            .iter_mut()
            .find(|f| f.times > 0 && f.method == method && path.contains(&f.path_contains))?;
        f.times -= 1;
        Some(f.status)
    }

    fn seconds(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// Steps the simulated gateway and publishes what changed.
    pub fn step(&mut self) {
        let now = self.seconds();
        let Some(mut g) = self.gateway.take() else {
            return;
        };
        let before: HashMap<String, Pool> = g
            .cluster
            .live()
            .map(|p| (p.name.clone(), g.cluster.pool_of(p.node)))
            .collect();
        g.cluster.step(now);
        let live: HashMap<String, Pool> = g
            .cluster
            .pods
            .iter()
            .map(|p| (p.name.clone(), g.cluster.pool_of(p.node)))
            .collect();
        // Pods gone from the simulation are deleted.
        let gone: Vec<String> = g
            .known
            .keys()
            .filter(|n| !live.contains_key(*n))
            .cloned()
            .collect();
        for name in gone {
            g.known.remove(&name);
            self.delete("pods", &g.ns.clone(), &name);
        }
        for (name, pool) in &before {
            let Some(gone) = g
                .cluster
                .pods
                .iter()
                .find(|p| &p.name == name && p.gone_at.is_some())
            else {
                continue;
            };
            if !g.deletions.iter().any(|d| &d.name == name) {
                let eci_left = g
                    .cluster
                    .live()
                    .filter(|p| g.cluster.pool_of(p.node) == Pool::Eci)
                    .count();
                let rolled = gone.revision != g.cluster.revision;
                g.deletions.push(Deletion {
                    name: name.clone(),
                    pool: *pool,
                    eci_left,
                    rolled,
                });
            }
        }
        let sim_pods = g.cluster.pods.clone();
        let pods: Vec<(String, Value)> = sim_pods
            .iter()
            .map(|p| (p.name.clone(), self.pod_json(&mut g, p, now)))
            .collect();
        for (name, obj) in pods {
            let ns = g.ns.clone();
            let changed = self.get("pods", &ns, &name).is_none_or(|old| {
                old["spec"] != obj["spec"]
                    || old["status"] != obj["status"]
                    || old["metadata"]["annotations"] != obj["metadata"]["annotations"]
                    || old["metadata"]["deletionTimestamp"] != obj["metadata"]["deletionTimestamp"]
            });
            if changed {
                self.put("pods", &ns, &name, obj);
            }
        }
        // Deployment status.
        let (ns, name) = (g.ns.clone(), g.name.clone());
        if let Some(mut d) = self.get("deployments", &ns, &name).cloned() {
            let live: Vec<_> = g.cluster.live().collect();
            let updated = live
                .iter()
                .filter(|p| p.revision == g.cluster.revision)
                .count();
            let ready = live.iter().filter(|p| p.ready(now)).count();
            let status = json!({
                "observedGeneration": d["metadata"]["generation"],
                "replicas": live.len(), "updatedReplicas": updated, "readyReplicas": ready, "availableReplicas": ready
            });
            if d["status"] != status {
                d["status"] = status;
                self.put("deployments", &ns, &name, d);
            }
        }
        self.gateway = Some(g);
    }

    fn pod_json(&self, g: &mut Gateway, p: &spillway::sim::cluster::SimPod, now: f64) -> Value {
        let (uid, created) = g
            .known
            .entry(p.name.clone())
            .or_insert_with(|| (format!("uid-{}", p.name), ts(now_epoch())))
            .clone();
        let req = g.cluster.template.requests;
        let node = p.node.map(|n| g.cluster.nodes[n].name.clone());
        let ready = p.ready(now);
        let mut annotations = json!({});
        if let Some(c) = p.deletion_cost {
            annotations[spillway::model::POD_DELETION_COST] = json!(c.to_string());
        }
        json!({
            "metadata": {
                "name": p.name, "namespace": g.ns, "uid": uid, "creationTimestamp": created,
                "labels": g.labels, "annotations": annotations,
                "deletionTimestamp": if p.gone_at.is_some() { json!(ts(now_epoch())) } else { Value::Null },
            },
            "spec": {
                "nodeName": node,
                "containers": [{"name": "istio-proxy", "image": "istio/proxyv2",
                    "resources": {"requests": {"cpu": format!("{}m", req.cpu_millis), "memory": req.memory_bytes.to_string()}}}]
            },
            "status": {
                "phase": if ready { "Running" } else { "Pending" },
                "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]
            }
        })
    }
}

/// Node objects for the simulated nodes, and filler pods for what other workloads request.
fn seed_cluster(st: &mut State, nodes: &[Node]) {
    for n in nodes {
        let taints: Vec<Value> = n
            .taints
            .iter()
            .map(|t| json!({"key": t.key, "value": t.value, "effect": format!("{:?}", t.effect)}))
            .collect();
        st.put(
            "nodes",
            "",
            &n.name,
            json!({
                "metadata": {"labels": n.labels},
                "spec": {"taints": taints, "unschedulable": n.unschedulable},
                "status": {"allocatable": {"cpu": format!("{}m", n.allocatable.cpu_millis), "memory": n.allocatable.memory_bytes.to_string(), "pods": n.allocatable.pods.to_string()}}
            }),
        );
        let used = n.requested;
        if used.pods > 0 {
            let each = Resources::pod(used.cpu_millis / used.pods, used.memory_bytes / used.pods);
            for i in 0..used.pods {
                st.put(
                    "pods",
                    "default",
                    &format!("other-{}-{i}", n.name.replace('.', "-")),
                    json!({
                        "metadata": {"labels": {"app": "other"}},
                        "spec": {"nodeName": n.name, "containers": [{"name": "app", "resources": {"requests": {"cpu": format!("{}m", each.cpu_millis), "memory": each.memory_bytes.to_string()}}}]},
                        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}
                    }),
                );
            }
        }
    }
}

/// The scenario's gateway Deployment object.
fn deployment_json(scenario: &Scenario, labels: &BTreeMap<String, String>, replicas: i32) -> Value {
    let p = &scenario.policy;
    let terms = spillway::k8s::target::preferred_terms(p, p.placement.normal_weights);
    let req = scenario.gateway_requests();
    let tolerations: Vec<Value> = p
        .pools
        .ecs
        .tolerations
        .iter()
        .chain(&p.pools.eci.tolerations)
        .map(|t| serde_json::to_value(t).unwrap())
        .collect();
    json!({
        "metadata": {"generation": 1, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [{"name": "istio-proxy", "image": "istio/proxyv2",
                        "resources": {"requests": {"cpu": format!("{}m", req.cpu_millis), "memory": req.memory_bytes.to_string()}}}],
                    "tolerations": tolerations,
                    "affinity": {"nodeAffinity": {
                        "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                            {"matchExpressions": [{"key": "mykey4pod", "operator": "In", "values": ["asmgateway"]}]},
                            {"matchExpressions": [{"key": "type", "operator": "In", "values": ["virtual-kubelet"]}]}]},
                        "preferredDuringSchedulingIgnoredDuringExecution": terms
                    }}
                }
            }
        },
        "status": {"observedGeneration": 1}
    })
}

impl ApiServer {
    /// Starts a server with the scenario's cluster, a gateway Deployment `istio-ingressgateway`
    /// in `istio-system` animated by the simulator, and `egw` (an ElasticGateway manifest).
    pub async fn start(scenario: &Scenario, latencies: Latencies, egw: Option<Value>) -> Self {
        let nodes = scenario.nodes();
        let labels: BTreeMap<String, String> =
            [("app".to_string(), "istio-ingressgateway".to_string())].into();
        let p = &scenario.policy;
        let template = p.gateway_template(scenario.gateway_requests(), p.placement.normal_weights);
        let classify = pool_classifier(
            p.pools.ecs.node_selector.clone(),
            p.pools.eci.node_selector.clone(),
        );
        let mut cluster = SimCluster::new(
            nodes.clone(),
            template,
            scenario.gateway.replicas,
            latencies,
            scenario.seed,
            classify,
        );
        cluster.settle();
        let mut st = State {
            rv: 100,
            objects: BTreeMap::new(),
            history: VecDeque::new(),
            watchers: vec![],
            faults: vec![],
            delay: Duration::ZERO,
            log: vec![],
            lease_owner: HashMap::new(),
            gateway: None,
            rbac: None,
            started: Instant::now(),
        };
        seed_cluster(&mut st, &nodes);
        st.put(
            "deployments",
            "istio-system",
            "istio-ingressgateway",
            deployment_json(scenario, &labels, scenario.gateway.replicas),
        );
        if let Some(e) = egw {
            let (ns, name) = (
                e["metadata"]["namespace"].as_str().unwrap().to_string(),
                e["metadata"]["name"].as_str().unwrap().to_string(),
            );
            st.put("elasticgateways", &ns, &name, e);
        }
        st.gateway = Some(Gateway {
            ns: "istio-system".into(),
            name: "istio-ingressgateway".into(),
            labels,
            cluster,
            known: HashMap::new(),
            replica_writes: vec![],
            deletions: vec![],
            pdb_min_available: None,
        });
        st.step();
        let state = Arc::new(Mutex::new(st));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = Self {
            addr,
            state: state.clone(),
        };
        let s2 = server.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let s = s2.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let s = s.clone();
                        async move { Ok::<_, Infallible>(s.handle(req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        let ticker = state.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                ticker.lock().unwrap().step();
            }
        });
        server
    }

    /// A kubeconfig for this server, authenticating as `token`.
    pub fn kubeconfig(&self, dir: &std::path::Path, token: &str) -> std::path::PathBuf {
        let path = dir.join(format!("kubeconfig-{token}"));
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: standin\n  cluster: {{server: 'http://{}'}}\nusers:\n- name: {token}\n  user: {{token: {token}}}\ncontexts:\n- name: standin\n  context: {{cluster: standin, user: {token}}}\ncurrent-context: standin\n",
                self.addr
            ),
        )
        .unwrap();
        path
    }

    pub fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        f(&mut self.state.lock().unwrap())
    }

    async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        let method = req.method().to_string();
        let path = req.uri().path().to_string();
        let query: HashMap<String, String> =
            req.uri().query().map(url_decode_pairs).unwrap_or_default();
        let who = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim_start_matches("Bearer ").to_string())
            .unwrap_or_default();
        let ctype = req
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let body = req
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let delay = self.state.lock().unwrap().delay;
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let full_path = format!(
            "{path}?{}",
            query
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("&")
        );
        let (status, resp) = {
            let mut st = self.state.lock().unwrap();
            let watch = query.get("watch").is_some_and(|w| w == "true" || w == "1");
            let denied = st.rbac.as_ref().and_then(|rbac| {
                let super::rbac::Attributes { group, resource, verb, ns, name } = super::rbac::Rbac::attributes(&method, &path, watch)?;
                (!rbac.allows(&group, &resource, &verb, ns.as_deref(), name.as_deref())).then(|| {
                    let in_ns = ns.map(|n| format!(" in the namespace \"{n}\"")).unwrap_or_default();
                    let msg = format!(
                        "{resource} is forbidden: User \"system:serviceaccount:spillway-system:spillway\" cannot {verb} resource \"{resource}\" in API group \"{group}\"{in_ns}"
                    );
                    status_body(403, "Forbidden", &msg)
                })
            });
            let fault = st.take_fault(&method, &path);
            let r = match (denied, fault) {
                (Some(body), _) => Err((403, body)),
                (None, fault) => match fault {
                    Some(code) => {
                        let reason = match code {
                            409 => "Conflict",
                            429 => "TooManyRequests",
                            _ => "InternalError",
                        };
                        Err((code, status_body(code, reason, "injected fault")))
                    }
                    None => self.dispatch(&mut st, &method, &path, &query, &ctype, &body),
                },
            };
            let (status, resp) = match r {
                Ok(Reply::Json(code, v)) => (code, Ok(v)),
                Ok(Reply::Watch(rx)) => (200, Err(rx)),
                Err((code, v)) => (code, Ok(v)),
            };
            st.log.push(Logged {
                method: method.clone(),
                path: full_path,
                status,
                who,
                at: Instant::now(),
            });
            (status, resp)
        };
        match resp {
            Ok(v) => Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(v.to_string())).boxed())
                .unwrap(),
            Err(rx) => Response::builder()
                .status(200)
                .header("content-type", "application/json")
                .body(BodyExt::boxed(StreamBody::new(rx)))
                .unwrap(),
        }
    }

    fn dispatch(
        &self,
        st: &mut State,
        method: &str,
        path: &str,
        query: &HashMap<String, String>,
        ctype: &str,
        body: &[u8],
    ) -> Result<Reply, (u16, Value)> {
        let not_found = |what: &str| {
            (
                404,
                status_body(404, "NotFound", &format!("{what} not found")),
            )
        };
        let r = route(path).ok_or_else(|| not_found(path))?;
        let ns = r.ns.clone().unwrap_or_default();
        let resource = r.resource.as_str();
        let parse = || {
            serde_json::from_slice::<Value>(body)
                .map_err(|e| (400, status_body(400, "BadRequest", &e.to_string())))
        };
        match (method, r.name.as_deref(), r.sub.as_deref()) {
            ("GET", None, None) if query.get("watch").is_some_and(|w| w == "true" || w == "1") => {
                let from: u64 = query
                    .get("resourceVersion")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(st.rv);
                let oldest = st.history.front().map_or(st.rv, |h| h.0);
                if from + 1 < oldest {
                    return Err((410, status_body(410, "Expired", "too old resource version")));
                }
                let (tx, rx) = mpsc::unbounded();
                for (rv, res, hns, ev) in &st.history {
                    if *rv > from && res == resource && r.ns.as_deref().is_none_or(|n| n == hns) {
                        let _ = tx.unbounded_send(Ok(Frame::data(Bytes::from(format!("{ev}\n")))));
                    }
                }
                st.watchers.push(Watcher {
                    kind: resource.into(),
                    ns: r.ns.clone(),
                    tx: Some(tx),
                });
                Ok(Reply::Watch(rx))
            }
            ("GET", None, None) => {
                // Paginated as the real server does: `limit`, and `continue` as an offset.
                let (api_version, kind) = kind_of(resource);
                let limit = query
                    .get("limit")
                    .and_then(|l| l.parse::<usize>().ok())
                    .filter(|l| *l > 0)
                    .unwrap_or(usize::MAX);
                let start = query
                    .get("continue")
                    .and_then(|c| c.parse::<usize>().ok())
                    .unwrap_or(0);
                let mut matching = st
                    .objects
                    .iter()
                    .filter(|((res, n, _), _)| {
                        res == resource && r.ns.as_deref().is_none_or(|ns| ns == n)
                    })
                    .skip(start);
                let items: Vec<Value> = matching
                    .by_ref()
                    .take(limit)
                    .map(|(_, v)| v.clone())
                    .collect();
                let more = matching.next().is_some();
                let mut meta = json!({"resourceVersion": st.rv.to_string()});
                if more {
                    meta["continue"] = json!((start + items.len()).to_string());
                }
                Ok(Reply::Json(
                    200,
                    json!({"apiVersion": api_version, "kind": format!("{kind}List"), "metadata": meta, "items": items}),
                ))
            }
            ("GET", Some(name), None) => st
                .get(resource, &ns, name)
                .cloned()
                .map(|v| Reply::Json(200, v))
                .ok_or_else(|| not_found(name)),
            ("GET", Some(name), Some("scale")) => {
                let d = st.get(resource, &ns, name).ok_or_else(|| not_found(name))?;
                Ok(Reply::Json(200, scale_json(d)))
            }
            ("POST", None, None) => {
                let obj = parse()?;
                let name = obj["metadata"]["name"]
                    .as_str()
                    .map(String::from)
                    .or_else(|| {
                        obj["metadata"]["generateName"]
                            .as_str()
                            .map(|g| format!("{g}{}", st.rv + 1))
                    });
                let name =
                    name.ok_or((422, status_body(422, "Invalid", "metadata.name required")))?;
                if st.get(resource, &ns, &name).is_some() {
                    return Err((
                        409,
                        status_body(
                            409,
                            "AlreadyExists",
                            &format!("{resource} {name} already exists"),
                        ),
                    ));
                }
                if resource == "leases" && !obj["spec"]["holderIdentity"].is_null() {
                    st.lease_owner.insert(
                        (ns.clone(), name.clone()),
                        query.get("fieldManager").cloned().unwrap_or_default(),
                    );
                }
                Ok(Reply::Json(201, st.put(resource, &ns, &name, obj)))
            }
            ("POST", Some(name), Some("eviction")) => {
                let Some(g) = st.gateway.as_mut() else {
                    return Err(not_found(name));
                };
                if g.ns != ns || !g.cluster.live().any(|p| p.name == name) {
                    return Err(not_found(name));
                }
                if let Some(min) = g.pdb_min_available {
                    let ready = g
                        .cluster
                        .live()
                        .filter(|p| p.ready(st.started.elapsed().as_secs_f64()))
                        .count();
                    if ready <= min {
                        return Err((
                            429,
                            status_body(
                                429,
                                "TooManyRequests",
                                "Cannot evict pod as it would violate the pod's disruption budget.",
                            ),
                        ));
                    }
                }
                let now = st.started.elapsed().as_secs_f64();
                st.gateway.as_mut().unwrap().cluster.evict(name, now);
                Ok(Reply::Json(
                    201,
                    json!({"kind": "Status", "apiVersion": "v1", "status": "Success", "metadata": {}}),
                ))
            }
            ("PATCH", Some(name), sub) => {
                let patch = parse()?;
                let apply = ctype.starts_with("application/apply-patch");
                let force = query.get("force").is_some_and(|f| f == "true");
                let manager = query.get("fieldManager").cloned().unwrap_or_default();
                let existing = st.get(resource, &ns, name).cloned();
                let mut obj = match (existing, apply) {
                    (Some(o), _) => o,
                    (None, true) => json!({"metadata": {"name": name}}),
                    (None, false) => return Err(not_found(name)),
                };
                if resource == "leases" {
                    let key = (ns.clone(), name.to_string());
                    let holder = obj["spec"]["holderIdentity"].clone();
                    let new_holder = patch["spec"].get("holderIdentity");
                    if let Some(nh) = new_holder {
                        let owner = st.lease_owner.get(&key).cloned();
                        if apply
                            && !force
                            && !holder.is_null()
                            && *nh != holder
                            && owner.as_deref().is_some_and(|o| o != manager)
                        {
                            return Err((
                                409,
                                status_body(
                                    409,
                                    "Conflict",
                                    "Apply failed with 1 conflict: conflict with another field manager: .spec.holderIdentity",
                                ),
                            ));
                        }
                        if nh.is_null() {
                            st.lease_owner.remove(&key);
                        } else {
                            st.lease_owner.insert(key, manager.clone());
                        }
                    }
                }
                match sub {
                    Some("scale") => {
                        let replicas = patch["spec"]["replicas"]
                            .as_i64()
                            .ok_or((422, status_body(422, "Invalid", "spec.replicas required")))?;
                        obj["spec"]["replicas"] = json!(replicas);
                        if let Some(g) =
                            st.gateway.as_mut().filter(|g| g.name == name && g.ns == ns)
                        {
                            g.cluster.replicas = replicas as i32;
                            g.replica_writes.push(replicas as i32);
                        }
                        let stored = st.put(resource, &ns, name, obj);
                        Ok(Reply::Json(200, scale_json(&stored)))
                    }
                    Some("status") => {
                        merge(&mut obj["status"], &patch["status"]);
                        Ok(Reply::Json(200, st.put(resource, &ns, name, obj)))
                    }
                    Some(other) => Err(not_found(other)),
                    None if ctype.starts_with("application/json-patch+json") => {
                        json_patch(&mut obj, &patch)
                            .map_err(|e| (422, status_body(422, "Invalid", &e)))?;
                        let finalized = obj["metadata"]["finalizers"]
                            .as_array()
                            .is_none_or(Vec::is_empty);
                        if !obj["metadata"]["deletionTimestamp"].is_null() && finalized {
                            let gone = st.delete(resource, &ns, name);
                            return Ok(Reply::Json(200, gone.unwrap_or(obj)));
                        }
                        Ok(Reply::Json(200, st.put(resource, &ns, name, obj)))
                    }
                    None => {
                        let before_template = obj["spec"]["template"].clone();
                        merge(&mut obj, &patch);
                        if resource == "deployments" {
                            if obj["spec"]["template"] != before_template {
                                let generation =
                                    obj["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
                                obj["metadata"]["generation"] = json!(generation);
                                let terms = obj["spec"]["template"]["spec"]["affinity"]["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"].clone();
                                if let (Some(g), Some([e, i])) =
                                    (st.gateway.as_mut(), terms.as_array().map(Vec::as_slice))
                                {
                                    g.cluster.set_weights(spillway::policy::PoolWeights {
                                        ecs: e["weight"].as_i64().unwrap_or(0) as i32,
                                        eci: i["weight"].as_i64().unwrap_or(0) as i32,
                                    });
                                }
                            }
                            if let Some(r) = patch["spec"]["replicas"].as_i64() {
                                if let Some(g) = st.gateway.as_mut() {
                                    g.cluster.replicas = r as i32;
                                    g.replica_writes.push(r as i32);
                                }
                            }
                        }
                        if resource == "pods" {
                            if let Some(c) = obj["metadata"]["annotations"]
                                [spillway::model::POD_DELETION_COST]
                                .as_str()
                                .and_then(|c| c.parse().ok())
                            {
                                if let Some(g) = st.gateway.as_mut() {
                                    g.cluster.set_deletion_cost(name, c);
                                }
                            }
                        }
                        Ok(Reply::Json(200, st.put(resource, &ns, name, obj)))
                    }
                }
            }
            ("PUT", Some(name), None) => {
                let obj = parse()?;
                let current = st.get(resource, &ns, name).ok_or_else(|| not_found(name))?;
                if obj["metadata"]["resourceVersion"] != current["metadata"]["resourceVersion"] {
                    return Err((
                        409,
                        status_body(
                            409,
                            "Conflict",
                            "the object has been modified; please apply your changes to the latest version",
                        ),
                    ));
                }
                Ok(Reply::Json(200, st.put(resource, &ns, name, obj)))
            }
            ("DELETE", Some(name), None) => {
                let mut obj = st
                    .get(resource, &ns, name)
                    .cloned()
                    .ok_or_else(|| not_found(name))?;
                let finalizers = obj["metadata"]["finalizers"]
                    .as_array()
                    .is_some_and(|f| !f.is_empty());
                if !finalizers {
                    return Ok(Reply::Json(
                        200,
                        st.delete(resource, &ns, name).unwrap_or(obj),
                    ));
                }
                // As the API server does: mark it, bump the generation, wait for the finalizers.
                if obj["metadata"]["deletionTimestamp"].is_null() {
                    obj["metadata"]["deletionTimestamp"] = json!(ts(now_epoch()));
                    let generation = obj["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
                    obj["metadata"]["generation"] = json!(generation);
                }
                Ok(Reply::Json(200, st.put(resource, &ns, name, obj)))
            }
            _ => Err((
                405,
                status_body(405, "MethodNotAllowed", &format!("{method} {path}")),
            )),
        }
    }
}

enum Reply {
    Json(u16, Value),
    Watch(mpsc::UnboundedReceiver<Result<Frame<Bytes>, Infallible>>),
}

fn scale_json(d: &Value) -> Value {
    json!({
        "apiVersion": "autoscaling/v1", "kind": "Scale",
        "metadata": {"name": d["metadata"]["name"], "namespace": d["metadata"]["namespace"], "resourceVersion": d["metadata"]["resourceVersion"]},
        "spec": {"replicas": d["spec"]["replicas"]},
        "status": {"replicas": d["status"]["replicas"].as_i64().unwrap_or(0)}
    })
}

fn url_decode_pairs(q: &str) -> HashMap<String, String> {
    q.split('&')
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
