//! The real control plane for the live tests: `scripts/testbed.sh run` (etcd, kube-apiserver,
//! kube-scheduler, kube-controller-manager built from upstream, kwok for the nodes' kubelets) in
//! a temporary folder, with the scenario's nodes, `deploy/` applied for real, and the gateway.
//! Nothing here places, scales or deletes a pod: the upstream scheduler and controllers do.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node as KNode, Pod};
use kube::api::{Api, ListParams, PostParams};
use serde_json::{Value, json};
use spillway::model::{Node, Pool, Resources};
use spillway::sim::Scenario;
use spillway::sim::cluster::Latencies;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The binaries, or a panic that says how to build them. Never builds inside a test: a cold
/// build takes many minutes, and `.ci/run` builds before it tests.
pub fn binaries() -> PathBuf {
    prebuilt("testbed/build.sh", "the test bed's control plane")
}

/// The last line `bash SCRIPT --check` prints (the built path), or a panic that names `what` and
/// how to build it. For the Go builds of `testbed/`, which `.ci/run` runs before the tests.
pub fn prebuilt(script: &str, what: &str) -> PathBuf {
    let out = Command::new("bash")
        .arg(format!("{ROOT}/{script}"))
        .arg("--check")
        .output()
        .unwrap_or_else(|e| panic!("bash runs {script}: {e}"));
    assert!(
        out.status.success(),
        "{what} is not built (or is out of date): {}\n\
         build it with `bash {script}` (needs Go and the module proxy; `bash .ci/run` does it)",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    PathBuf::from(
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .lines()
            .last()
            .unwrap_or(""),
    )
}

/// One running control plane; stopped (all its processes) on drop. It derefs to [`Cluster`],
/// the reads a test makes of it.
pub struct Testbed {
    pub dir: PathBuf,
    pub bin: PathBuf,
    cluster: Cluster,
    child: Child,
}

/// What a test reads from the control plane, as the cluster admin; cheap to clone into a task.
#[derive(Clone)]
pub struct Cluster {
    pub client: kube::Client,
}

impl std::ops::Deref for Testbed {
    type Target = Cluster;
    fn deref(&self) -> &Cluster {
        &self.cluster
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Names of the scenario's virtual nodes (kwok starts pods there after the ECI latency).
fn virtual_nodes(scenario: &Scenario) -> Vec<String> {
    let eci = &scenario.policy.pools.eci.node_selector;
    scenario
        .nodes()
        .into_iter()
        .filter(|n| eci.iter().all(|(k, v)| n.labels.get(k) == Some(v)))
        .map(|n| n.name)
        .collect()
}

impl Testbed {
    /// Starts a bare control plane (no nodes, no objects) under `dir`, with kwok starting pods
    /// after the scenario's latencies.
    pub async fn start(dir: &Path, scenario: &Scenario, latencies: &Latencies) -> Self {
        Self::start_with(dir, scenario, latencies, &[], false, None).await
    }

    /// A bare control plane whose HPA controller syncs every `period` (a Go duration) instead
    /// of upstream's 15 s.
    pub async fn start_with_hpa_sync(dir: &Path, period: &str) -> Self {
        let s = Scenario::default();
        Self::start_with(dir, &s, &Latencies::default(), &[], false, Some(period)).await
    }

    /// [`Testbed::start`], with more virtual nodes than the scenario's (a test that registers
    /// its own, such as a second fleet's twin pools): kwok starts pods there after the ECI
    /// latency too.
    pub async fn start_with_virtual_nodes(
        dir: &Path,
        scenario: &Scenario,
        latencies: &Latencies,
        extra_virtual_nodes: &[String],
    ) -> Self {
        Self::start_with(dir, scenario, latencies, extra_virtual_nodes, false, None).await
    }

    /// etcd and kube-apiserver alone: for benchmarks that bulk-create objects, with no
    /// controllers or kubelets to react to them.
    pub async fn start_apiserver_only(dir: &Path) -> Self {
        Self::start_with(
            dir,
            &Scenario::default(),
            &Latencies::default(),
            &[],
            true,
            None,
        )
        .await
    }

    async fn start_with(
        dir: &Path,
        scenario: &Scenario,
        latencies: &Latencies,
        extra_virtual_nodes: &[String],
        apiserver_only: bool,
        hpa_sync: Option<&str>,
    ) -> Self {
        install_crypto();
        let bin = binaries();
        let tb_dir = dir.join("testbed");
        // A kept folder may hold an earlier run's `ready`.
        let _ = std::fs::remove_dir_all(&tb_dir);
        let child = Command::new("bash")
            .arg(format!("{ROOT}/scripts/testbed.sh"))
            .args(["run", "--bare", "--exit-with-parent", "--dir"])
            .arg(&tb_dir)
            .env(
                "SPILLWAY_TESTBED_ECS_START_MS",
                format!("{}", (latencies.ecs_start_seconds * 1000.0) as u64),
            )
            .env(
                "SPILLWAY_TESTBED_ECI_START_MS",
                format!("{}", (latencies.eci_start_seconds * 1000.0) as u64),
            )
            .env(
                "SPILLWAY_TESTBED_VIRTUAL_NODES",
                virtual_nodes(scenario)
                    .iter()
                    .chain(extra_virtual_nodes)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(","),
            )
            .env(
                "SPILLWAY_TESTBED_HPA_SYNC_PERIOD",
                hpa_sync.unwrap_or("15s"),
            )
            .env(
                "SPILLWAY_TESTBED_APISERVER_ONLY",
                if apiserver_only { "1" } else { "0" },
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("testbed.log")).unwrap())
            .spawn()
            .expect("bash runs scripts/testbed.sh");
        let mut tb = Self {
            dir: tb_dir,
            bin,
            cluster: Cluster {
                client: placeholder_client(),
            },
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(180);
        while !tb.dir.join("ready").exists() {
            if let Ok(Some(status)) = tb.child.try_wait() {
                panic!(
                    "the test bed exited ({status}) before it was ready:\n{}",
                    std::fs::read_to_string(dir.join("testbed.log")).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "the test bed was not ready within 180 s; see {}",
                dir.join("testbed.log").display()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        tb.cluster.client = client_from(&tb.dir.join("kubeconfig")).await;
        tb
    }

    /// The reads, for a task that outlives a borrow of the test bed.
    pub fn handle(&self) -> Cluster {
        self.cluster.clone()
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }

    pub fn api_port(&self) -> u16 {
        std::fs::read_to_string(self.dir.join("apiserver.port"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("pki/ca.crt")
    }

    /// Runs the test bed's own kubectl (the pinned version) as the cluster admin.
    pub fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut cmd = Command::new(self.bin.join("kubectl"));
        cmd.arg("--kubeconfig").arg(self.kubeconfig()).args(args);
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        if stdin.is_some() {
            cmd.stdin(Stdio::piped());
        }
        let mut child = cmd.spawn().unwrap();
        if let Some(s) = stdin {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
        }
        child.wait_with_output().unwrap()
    }

    /// kubectl that must succeed.
    pub fn kubectl_ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.kubectl(args, stdin);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Applies `deploy/` as an operator would (`kubectl apply -k deploy/`, the monitoring
    /// objects left out when their CRDs are absent) and waits for the CRD to be served.
    pub fn apply_deploy(&self) {
        let out = self.kubectl(&["apply", "-k", &format!("{ROOT}/deploy")], None);
        if !out.status.success() {
            // Without the Prometheus Operator, the ServiceMonitor and PrometheusRule cannot apply.
            self.kubectl_ok(
                &[
                    "apply",
                    "-f",
                    &format!("{ROOT}/deploy/namespace.yaml"),
                    "-f",
                    &format!("{ROOT}/deploy/crd.yaml"),
                    "-f",
                    &format!("{ROOT}/deploy/rbac.yaml"),
                    "-f",
                    &format!("{ROOT}/deploy/admission.yaml"),
                ],
                None,
            );
        }
        self.kubectl_ok(
            &[
                "wait",
                "--for=condition=Established",
                "--timeout=60s",
                "crd/elasticgateways.spillway.io",
            ],
            None,
        );
    }

    /// A ServiceAccount token for `deploy/`'s `spillway` account (TokenRequest, as a projected
    /// token in a pod would be).
    pub fn agent_token(&self) -> String {
        self.kubectl_ok(
            &[
                "create",
                "token",
                "spillway",
                "-n",
                "spillway-system",
                "--duration=2h",
            ],
            None,
        )
        .trim()
        .to_string()
    }

    /// A kubeconfig that reaches the apiserver at `server` (the apiserver itself, or a fault
    /// proxy in front of it) with `token`.
    pub fn kubeconfig_for(&self, path: &Path, server: &str, token: &str) -> PathBuf {
        let cluster = if server.starts_with("https") {
            format!(
                "{{server: '{server}', certificate-authority: '{}'}}",
                self.ca_file().display()
            )
        } else {
            format!("{{server: '{server}'}}")
        };
        std::fs::write(
            path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: testbed\n  cluster: {cluster}\nusers:\n- name: agent\n  user: {{token: {token}}}\ncontexts:\n- name: testbed\n  context: {{cluster: testbed, user: agent, namespace: istio-system}}\ncurrent-context: testbed\n"
            ),
        )
        .unwrap();
        path.to_path_buf()
    }

    /// Registers the scenario's nodes, the other workloads' pods on them, `deploy/`, the gateway
    /// Deployment `istio-system/istio-ingressgateway` and `egw`; waits until the gateway's pods
    /// are ready.
    pub async fn seed(&self, scenario: &Scenario, latencies: &Latencies, egw: Option<Value>) {
        let nodes: Api<KNode> = Api::all(self.client.clone());
        for n in scenario.nodes() {
            nodes
                .create(
                    &PostParams::default(),
                    &serde_json::from_value(node_json(&n)).unwrap(),
                )
                .await
                .unwrap();
        }
        self.kubectl_ok(&["create", "namespace", "istio-system"], None);
        self.wait_for_default_sa("istio-system").await;
        self.wait_for_default_sa("default").await;
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), "default");
        for n in scenario.nodes() {
            for p in other_pods(&n) {
                pods.create(&PostParams::default(), &serde_json::from_value(p).unwrap())
                    .await
                    .unwrap();
            }
        }
        self.apply_deploy();
        let deployments: Api<Deployment> = Api::namespaced(self.client.clone(), "istio-system");
        deployments
            .create(
                &PostParams::default(),
                &serde_json::from_value(gateway_json(scenario, latencies)).unwrap(),
            )
            .await
            .unwrap();
        if let Some(e) = egw {
            let api: Api<kube::api::DynamicObject> = Api::namespaced_with(
                self.client.clone(),
                e["metadata"]["namespace"].as_str().unwrap(),
                &kube::api::ApiResource {
                    group: "spillway.io".into(),
                    version: "v1alpha1".into(),
                    api_version: "spillway.io/v1alpha1".into(),
                    kind: "ElasticGateway".into(),
                    plural: "elasticgateways".into(),
                },
            );
            let mut e = e;
            e["metadata"].as_object_mut().unwrap().remove("generation");
            api.create(&PostParams::default(), &serde_json::from_value(e).unwrap())
                .await
                .unwrap();
        }
        let want = scenario.gateway.replicas as usize;
        let start = Instant::now();
        loop {
            let ready = self.gateway_pods().await.iter().filter(|p| p.ready).count();
            if ready == want {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "the gateway's {want} pods were not ready after 120 s ({ready} were)"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The apiserver's audit log: one JSON object per request that changed something.
    pub fn audit(&self) -> Vec<Value> {
        std::fs::read_to_string(self.dir.join("audit.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    async fn wait_for_default_sa(&self, ns: &str) {
        self.kubectl_ok(
            &[
                "wait",
                "--for=create",
                "--timeout=60s",
                "serviceaccount/default",
                "-n",
                ns,
            ],
            None,
        );
    }
}

impl Cluster {
    /// The gateway's live pods (not terminating): name, pool, node, ready.
    pub async fn gateway_pods(&self) -> Vec<GatewayPod> {
        self.pods_of("istio-ingressgateway").await
    }

    /// The live pods (not terminating) labelled `app=<app>` in istio-system.
    pub async fn pods_of(&self, app: &str) -> Vec<GatewayPod> {
        self.try_pods_of(app).await.unwrap()
    }

    /// [`Cluster::pods_of`], or the apiserver's error (for a loop that samples through a
    /// dropped connection on a busy machine).
    pub async fn try_pods_of(&self, app: &str) -> kube::Result<Vec<GatewayPod>> {
        let nodes = self.try_node_pools().await?;
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), "istio-system");
        let list = pods
            .list(&ListParams::default().labels(&format!("app={app}")))
            .await?;
        Ok(list
            .items
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .map(|p| {
                let node = p.spec.as_ref().and_then(|s| s.node_name.clone());
                let ready = p
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
                GatewayPod {
                    name: p.metadata.name.clone().unwrap_or_default(),
                    pool: node.as_ref().and_then(|n| nodes.get(n).copied()),
                    node,
                    ready,
                    annotations: p.metadata.annotations.clone().unwrap_or_default(),
                    ip: p
                        .status
                        .as_ref()
                        .and_then(|s| s.pod_ip.as_deref())
                        .and_then(|ip| ip.parse().ok()),
                }
            })
            .collect())
    }

    /// Each node's pool, from its labels as the guide sets them.
    pub async fn node_pools(&self) -> BTreeMap<String, Pool> {
        self.try_node_pools().await.unwrap()
    }

    async fn try_node_pools(&self) -> kube::Result<BTreeMap<String, Pool>> {
        let nodes: Api<KNode> = Api::all(self.client.clone());
        Ok(nodes
            .list(&ListParams::default())
            .await?
            .items
            .into_iter()
            .map(|n| {
                let labels = n.metadata.labels.unwrap_or_default();
                let pool = if labels.get("type").map(String::as_str) == Some("virtual-kubelet") {
                    Pool::Eci
                } else {
                    Pool::Ecs
                };
                (n.metadata.name.unwrap_or_default(), pool)
            })
            .collect())
    }

    /// The gateway Deployment as the apiserver holds it.
    pub async fn gateway(&self) -> Deployment {
        self.deployment("istio-ingressgateway").await
    }

    /// The Deployment `istio-system/<name>` as the apiserver holds it.
    pub async fn deployment(&self, name: &str) -> Deployment {
        let deployments: Api<Deployment> = Api::namespaced(self.client.clone(), "istio-system");
        deployments.get(name).await.unwrap()
    }

    pub async fn replicas(&self) -> i32 {
        self.gateway().await.spec.replicas.unwrap_or(0)
    }
}

#[derive(Clone, Debug)]
pub struct GatewayPod {
    pub name: String,
    pub node: Option<String>,
    pub pool: Option<Pool>,
    pub ready: bool,
    pub annotations: BTreeMap<String, String>,
    /// `status.podIP`: a loopback address on the test bed (kwok's --cidr).
    pub ip: Option<std::net::IpAddr>,
}

/// (ECS, ECI) counts of pods that are bound.
pub fn pool_counts(pods: &[GatewayPod]) -> (usize, usize) {
    (
        pods.iter().filter(|p| p.pool == Some(Pool::Ecs)).count(),
        pods.iter().filter(|p| p.pool == Some(Pool::Eci)).count(),
    )
}

async fn client_from(kubeconfig: &Path) -> kube::Client {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    kube::Client::try_from(config).unwrap()
}

/// A client that is replaced before use (the real one needs the kubeconfig the script writes).
fn placeholder_client() -> kube::Client {
    let config = kube::Config::new("http://127.0.0.1:1".parse().unwrap());
    kube::Client::try_from(config).unwrap()
}

/// A client for `kubeconfig` (for tests that act as another user).
pub async fn client(kubeconfig: &Path) -> kube::Client {
    client_from(kubeconfig).await
}

pub fn node_json(n: &Node) -> Value {
    let taints: Vec<Value> = n
        .taints
        .iter()
        .map(|t| json!({"key": t.key, "value": t.value, "effect": format!("{:?}", t.effect)}))
        .collect();
    let mut labels = n.labels.clone();
    labels.insert("kubernetes.io/hostname".into(), n.name.clone());
    let alloc = json!({
        "cpu": format!("{}m", n.allocatable.cpu_millis),
        "memory": n.allocatable.memory_bytes.to_string(),
        "pods": n.allocatable.pods.to_string(),
    });
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": n.name, "labels": labels, "annotations": {"kwok.x-k8s.io/node": "fake"}},
        "spec": {"taints": taints, "unschedulable": n.unschedulable},
        "status": {"allocatable": alloc, "capacity": alloc}
    })
}

/// Pods of other workloads, bound to the node, requesting what the scenario says they use.
pub fn other_pods(n: &Node) -> Vec<Value> {
    let used = n.requested;
    if used.pods <= 0 {
        return vec![];
    }
    let each = Resources::pod(used.cpu_millis / used.pods, used.memory_bytes / used.pods);
    (0..used.pods)
        .map(|i| {
            json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": format!("other-{}-{i}", n.name.replace('.', "-")), "labels": {"app": "other"}},
                "spec": {"nodeName": n.name, "tolerations": [{"operator": "Exists"}],
                    "containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10",
                        "resources": {"requests": {"cpu": format!("{}m", each.cpu_millis), "memory": each.memory_bytes.to_string()}}}]}
            })
        })
        .collect()
}

/// The scenario's gateway Deployment: the guide's tolerations, required affinity (ECS or
/// virtual nodes) and 80/20 preferred terms, the scenario's requests and rollout settings.
pub fn gateway_json(scenario: &Scenario, latencies: &Latencies) -> Value {
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
    let labels = json!({"app": "istio-ingressgateway"});
    let pct = |f: f64| format!("{}%", (f * 100.0).round() as i64);
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "istio-ingressgateway", "namespace": "istio-system", "labels": labels},
        "spec": {
            "replicas": scenario.gateway.replicas,
            "selector": {"matchLabels": labels},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {
                "maxSurge": pct(scenario.gateway.max_surge), "maxUnavailable": pct(scenario.gateway.max_unavailable)}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "terminationGracePeriodSeconds": latencies.termination_seconds.ceil() as i64,
                    "containers": [{"name": "istio-proxy", "image": "istio/proxyv2:1.27.0",
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
        }
    })
}

/// A gateway pod's deletion, as the ReplicaSet controller chose it.
#[derive(Clone, Debug)]
pub struct Deletion {
    pub pod: String,
    pub pool: Option<Pool>,
    /// ECI pods that were live when this pod was chosen and outlived that choice by more than
    /// [`SAME_BATCH`]: the ones a scale-in should have taken first. (The ReplicaSet controller
    /// deletes a whole batch at once, and the watch reports it in any order.)
    pub eci_left: usize,
    /// Pods of more than one ReplicaSet were live: a rollout, not a scale-in.
    pub during_rollout: bool,
    pub at: Instant,
}

/// Deletions this close together are one decision of the ReplicaSet controller.
pub const SAME_BATCH: Duration = Duration::from_secs(2);

/// Deletions, with each one's `eci_left` computed from what happened after it.
pub struct Deletions {
    log: Vec<Deletion>,
    /// ECI pods: when each became live and when it was deleted.
    eci: BTreeMap<String, (Instant, Option<Instant>)>,
}

impl Deletions {
    pub fn list(&self) -> Vec<Deletion> {
        self.log
            .iter()
            .map(|d| {
                let mut d = d.clone();
                d.eci_left = self
                    .eci
                    .values()
                    .filter(|(born, gone)| {
                        *born < d.at && gone.is_none_or(|g| g > d.at + SAME_BATCH)
                    })
                    .count();
                d
            })
            .collect()
    }
}

impl Cluster {
    /// Watches the gateway's pods and records each deletion the moment it starts.
    pub async fn track_deletions(&self) -> std::sync::Arc<std::sync::Mutex<Deletions>> {
        use futures::StreamExt;
        use kube::runtime::{WatchStreamExt, watcher};
        let pools = self.node_pools().await;
        let out = std::sync::Arc::new(std::sync::Mutex::new(Deletions {
            log: vec![],
            eci: BTreeMap::new(),
        }));
        let log = out.clone();
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), "istio-system");
        tokio::spawn(async move {
            let mut live: BTreeMap<String, (Option<Pool>, String)> = BTreeMap::new();
            let cfg = watcher::Config::default().labels("app=istio-ingressgateway");
            // With a backoff: once the control plane is gone, a failing watch must wait between
            // attempts, or this task never yields and the test's runtime never shuts down.
            let mut events = watcher(pods, cfg).default_backoff().boxed();
            while let Some(ev) = events.next().await {
                let Ok(ev) = ev else { continue };
                let (watcher::Event::Apply(p) | watcher::Event::InitApply(p)) = ev else {
                    continue;
                };
                let name = p.metadata.name.clone().unwrap_or_default();
                let owner = p
                    .metadata
                    .owner_references
                    .as_ref()
                    .and_then(|o| o.first())
                    .map(|o| o.name.clone())
                    .unwrap_or_default();
                let pool = p
                    .spec
                    .as_ref()
                    .and_then(|s| s.node_name.as_ref())
                    .and_then(|n| pools.get(n).copied());
                let now = Instant::now();
                let mut log = log.lock().unwrap();
                if p.metadata.deletion_timestamp.is_some() {
                    if let Some((pool, _)) = live.remove(&name) {
                        let owners: std::collections::BTreeSet<&String> =
                            live.values().map(|(_, o)| o).collect();
                        let during_rollout = owners.len() > 1;
                        if let Some(e) = log.eci.get_mut(&name) {
                            e.1 = Some(now);
                        }
                        log.log.push(Deletion {
                            pod: name,
                            pool,
                            eci_left: 0,
                            during_rollout,
                            at: now,
                        });
                    }
                } else {
                    if pool == Some(Pool::Eci) {
                        log.eci.entry(name.clone()).or_insert((now, None));
                    }
                    live.insert(name, (pool, owner));
                }
            }
        });
        out
    }
}
