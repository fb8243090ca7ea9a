//! The drill's `hpa` peer against the real HPA, sync by sync, with pods in every state the HPA
//! tells apart (issue 33).
//!
//! Three HorizontalPodAutoscalers in the real kube-controller-manager (syncing every 2 s here
//! instead of 15 s; nothing else changed) scale three objects of a test CRD with a scale
//! subresource, so that the test, acting as their ReplicaSet, makes the pods and decides what
//! state each is in:
//! - `a`: a Pods metric (`steps_load`, each pod's own value, served by upstream's
//!   prometheus-adapter from a real Prometheus), the cluster's tolerance (0.1);
//! - `b`: the same metric, per-direction tolerances (0 up, 0.3 down: KEP-4951);
//! - `c`: an External metric, the total over a per-pod `AverageValue` (the drill's `hpa` and
//!   tests/hpa.rs read the load this way), tolerances 0.05 up, 0.25 down.
//!
//! Each fleet is a seeded random walk: the load moves around the target, the test adds Pending
//! pods when the HPA scales up and deletes pods when it scales down (Pending first), and moves
//! pods through the states upstream's `groupPods` distinguishes: Pending (with or without a
//! stale value), Running and Ready, Running but not Ready with a value, Running without a
//! value (unmeasured), and being deleted while its value is still served. After each step,
//! every status the HPA writes is compared with what the drill's `hpa` policy decides
//! (`engine::decide` on `sim::drill::hpa_peer`) from the same pods, values and replica count.
//!
//! Which step a status belongs to: every HPA also reads `steps_clock`, the exporter's time at
//! each scrape, as a second External metric (`Value`, target 1e12: it never asks for more than
//! one pod, which `minReplicas` gives anyway). The scrape that first carries a step's values
//! carries its clock, so a status whose clock is at least that one was computed from the whole
//! step (the pods and the object's status are written before the values are served).
//!
//! Both sides have their rate limits opened (100 pods per second up, 100 % per second down)
//! and a scale-down window of 0, so that each sync depends only on what it reads; the windows
//! and limits are compared with upstream in the engine's tables and run live in tests/hpa.rs.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
};
use rand_chacha::ChaCha8Rng;
use rand_core::{Rng, SeedableRng};

fn pick(r: &mut ChaCha8Rng, n: u64) -> u64 {
    r.next_u64() % n
}
use serde_json::{Value, json};
use spillway::engine::{self, EngineState, Observation};
use spillway::model::{GatewayPod, LoadSample, Pool, Resources};
use spillway::policy::{ElasticGatewaySpec, ScalingPolicy, ScalingPolicyType, SelectPolicy};
use spillway::sim::scenario::ControllerTiming;
use support::adapter::{Adapter, parse_quantity};
use support::live::{wait_for, workdir};
use support::prom::{Prom, TextExporter, encode, http_get};
use support::testbed::Testbed;

const NS: &str = "steps";
const TARGET: f64 = 100.0;
const MAX_REPLICAS: i32 = 16;
const STEPS: usize = 24;
/// The finalizer that keeps a deleted pod in its terminating state until the test lets it go.
const HOLD: &str = "test.spillway.io/hold";

/// One fleet: its name (object, HPA, pod prefix and label), metric and tolerances.
struct Fleet {
    name: &'static str,
    external: bool,
    up: Option<f64>,
    down: Option<f64>,
}

const FLEETS: [Fleet; 3] = [
    Fleet {
        name: "a",
        external: false,
        up: None,
        down: None,
    },
    Fleet {
        name: "b",
        external: false,
        up: Some(0.0),
        down: Some(0.3),
    },
    Fleet {
        name: "c",
        external: true,
        up: Some(0.05),
        down: Some(0.25),
    },
];

/// A pod as the test holds it.
#[derive(Clone, Debug)]
struct PodState {
    name: String,
    running: bool,
    ready: bool,
    deleting: bool,
    /// The value its series serves (`steps_load`), if it has one.
    value: Option<u32>,
}

/// A fleet's pods and load.
struct Walk {
    rng: ChaCha8Rng,
    pods: Vec<PodState>,
    next: usize,
    /// The fleet's load, in units of one pod's target.
    load: f64,
}

impl Walk {
    fn live(&self) -> usize {
        self.pods.iter().filter(|p| !p.deleting).count()
    }

    fn add_pending(&mut self, fleet: &str) {
        let name = format!("{fleet}-{}", self.next);
        self.next += 1;
        self.pods.push(PodState {
            name,
            running: false,
            ready: false,
            deleting: false,
            value: None,
        });
    }

    /// The test as the objects' ReplicaSet: as many live pods as `spec.replicas`, deleting
    /// Pending pods first, then pods that are not Ready, then any.
    fn follow(&mut self, fleet: &str, spec: i32) {
        while (self.live() as i32) < spec {
            self.add_pending(fleet);
        }
        while self.live() as i32 > spec {
            let rank = |p: &PodState| (p.running, p.ready);
            let victim = self
                .pods
                .iter_mut()
                .filter(|p| !p.deleting)
                .min_by_key(|p| rank(p))
                .unwrap();
            victim.deleting = true;
        }
    }

    /// One step of the walk: the load moves, pods start, fail their readiness, lose their
    /// series, and deleted ones go.
    fn step(&mut self) {
        let r = &mut self.rng;
        // The load: mostly near the target per pod, sometimes a jump.
        let levels = [0.5, 0.8, 0.9, 0.95, 1.0, 1.05, 1.1, 1.2, 1.5, 2.0];
        if pick(r, 3) > 0 {
            let per_pod = levels[pick(r, levels.len() as u64) as usize];
            let serving = self
                .pods
                .iter()
                .filter(|p| p.running && p.ready && !p.deleting)
                .count()
                .max(1);
            self.load = (per_pod * serving as f64).clamp(0.5, f64::from(MAX_REPLICAS) * 2.0);
        }
        for p in self.pods.iter_mut() {
            if p.deleting {
                // A terminating pod leaves one step in two.
                if pick(r, 2) == 0 {
                    p.name.clear();
                }
                continue;
            }
            match (p.running, pick(r, 10)) {
                // Pending pods start (most Ready, some not yet), a few with a stale series.
                (false, 0..=3) => {
                    p.running = true;
                    p.ready = pick(r, 4) > 0;
                }
                (false, 4) => p.value = Some(pick(r, 200) as u32),
                (true, 0) => p.ready = !p.ready,
                (true, 1 | 2) => p.value = None,
                _ => {}
            }
        }
        self.pods.retain(|p| !p.name.is_empty());
        // Values: the load shared by the Ready pods; a pod that is not Ready takes little;
        // a Running pod keeps or gets a series (one in ten stays unmeasured for the step).
        let serving = self
            .pods
            .iter()
            .filter(|p| p.running && p.ready && !p.deleting)
            .count();
        let share = if serving == 0 {
            0.0
        } else {
            self.load * TARGET / serving as f64
        };
        for p in self.pods.iter_mut().filter(|p| p.running) {
            if p.value.is_none() && pick(r, 10) == 0 {
                continue;
            }
            let noise = 1.0 + (pick(r, 11) as f64 - 5.0) / 100.0;
            p.value = Some(if p.ready && !p.deleting {
                (share * noise).round() as u32
            } else {
                pick(r, (share * 0.2) as u64 + 1) as u32
            });
        }
    }

    /// What the HPA would see as the pods: listed, with their phase and readiness.
    fn gateway_pods(&self) -> Vec<GatewayPod> {
        self.pods
            .iter()
            .map(|p| GatewayPod {
                name: p.name.clone(),
                node: None,
                pool: Pool::Pending,
                ready: p.running && p.ready,
                pending: !p.running,
                terminating: p.deleting,
                requests: Resources::default(),
                deletion_cost: None,
                created_at: 0.0,
                ready_since: None,
                drain: None,
            })
            .collect()
    }

    fn samples(&self) -> Vec<(String, f64)> {
        self.pods
            .iter()
            .filter_map(|p| p.value.map(|v| (p.name.clone(), f64::from(v))))
            .collect()
    }

    /// Whether the HPA has something to compute from (otherwise it reports an error and keeps
    /// its last answer, and so does the drill: a step that shows nothing is not compared).
    fn measurable(&self, external: bool) -> bool {
        if external {
            return self.live() > 0;
        }
        self.pods
            .iter()
            .any(|p| p.running && !p.deleting && p.value.is_some())
    }
}

fn crd() -> String {
    r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: steppers.test.spillway.io}
spec:
  group: test.spillway.io
  names: {kind: Stepper, plural: steppers, singular: stepper}
  scope: Namespaced
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec: {type: object, properties: {replicas: {type: integer}}}
          status: {type: object, properties: {replicas: {type: integer}, selector: {type: string}}}
    subresources:
      status: {}
      scale: {specReplicasPath: .spec.replicas, statusReplicasPath: .status.replicas, labelSelectorPath: .status.selector}
"#
    .to_string()
}

fn adapter_rules() -> String {
    r#"rules:
- seriesQuery: 'steps_load{namespace!="",pod!=""}'
  resources:
    overrides:
      namespace: {resource: namespace}
      pod: {resource: pod}
  name: {matches: "^steps_load$", as: "steps_load"}
  metricsQuery: 'sum(<<.Series>>{<<.LabelMatchers>>}) by (<<.GroupBy>>)'
externalRules:
- seriesQuery: 'steps_load{fleet!=""}'
  resources: {namespaced: false}
  name: {matches: "^steps_load$", as: "steps_total"}
  metricsQuery: 'sum(<<.Series>>{<<.LabelMatchers>>})'
- seriesQuery: 'steps_clock'
  resources: {namespaced: false}
  name: {matches: "^steps_clock$", as: "steps_clock"}
  metricsQuery: 'max(<<.Series>>{<<.LabelMatchers>>})'
"#
    .to_string()
}

/// Rules that never bind within a step, and no scale-down window.
fn open_rules(up: bool, tolerance: Option<f64>) -> Value {
    let policy = if up {
        json!({"type": "Pods", "value": 100, "periodSeconds": 1})
    } else {
        json!({"type": "Percent", "value": 100, "periodSeconds": 1})
    };
    let mut r =
        json!({"stabilizationWindowSeconds": 0, "selectPolicy": "Max", "policies": [policy]});
    if let Some(t) = tolerance {
        r["tolerance"] = json!(t);
    }
    r
}

fn hpa_json(f: &Fleet) -> Value {
    let main = if f.external {
        json!({"type": "External", "external": {
            "metric": {"name": "steps_total", "selector": {"matchLabels": {"fleet": f.name}}},
            "target": {"type": "AverageValue", "averageValue": format!("{TARGET}")}}})
    } else {
        json!({"type": "Pods", "pods": {
            "metric": {"name": "steps_load"},
            "target": {"type": "AverageValue", "averageValue": format!("{TARGET}")}}})
    };
    json!({
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": f.name, "namespace": NS},
        "spec": {
            "scaleTargetRef": {"apiVersion": "test.spillway.io/v1", "kind": "Stepper", "name": f.name},
            "minReplicas": 1, "maxReplicas": MAX_REPLICAS,
            "metrics": [main, {"type": "External", "external": {
                "metric": {"name": "steps_clock"},
                "target": {"type": "Value", "value": "1T"}}}],
            "behavior": {"scaleUp": open_rules(true, f.up), "scaleDown": open_rules(false, f.down)}
        }
    })
}

/// The drill's `hpa` policy for a fleet: its peer with the HPA's settings, rate limits opened
/// as the HPA's are.
fn drill_policy(f: &Fleet) -> ElasticGatewaySpec {
    let spec: ElasticGatewaySpec = serde_json::from_value(json!({
        "target": {"kind": "Deployment", "name": f.name},
        "minReplicas": 1, "maxReplicas": MAX_REPLICAS,
        "metrics": [{"name": "steps", "query": "steps", "targetPerReplica": TARGET}]
    }))
    .unwrap();
    let controllers = ControllerTiming {
        hpa_scale_down_window_seconds: Some(0),
        hpa_scale_up_tolerance: f.up,
        hpa_scale_down_tolerance: f.down,
        ..ControllerTiming::default()
    };
    let mut p = spillway::sim::drill::hpa_peer(&spec, &controllers);
    p.behavior.scale_up.select_policy = Some(SelectPolicy::Max);
    p.behavior.scale_up.policies = Some(vec![ScalingPolicy {
        kind: ScalingPolicyType::Pods,
        value: 100,
        period_seconds: 1,
    }]);
    p.behavior.scale_down.select_policy = Some(SelectPolicy::Max);
    p.behavior.scale_down.policies = Some(vec![ScalingPolicy {
        kind: ScalingPolicyType::Percent,
        value: 100,
        period_seconds: 1,
    }]);
    p
}

fn pod_json(f: &str, name: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": NS, "labels": {"app": format!("steps-{f}")},
            "finalizers": [HOLD]},
        // No scheduler takes it: the test plays its kubelet.
        "spec": {"schedulerName": "steps-none", "terminationGracePeriodSeconds": 0,
            "containers": [{"name": "gateway", "image": "gateway"}]}
    })
}

/// Writes the pods of a fleet as `want` has them, from `had`.
async fn write_pods(pods: &Api<Pod>, f: &str, had: &[PodState], want: &[PodState]) {
    let pp = PatchParams::default();
    for p in want {
        let before = had.iter().find(|h| h.name == p.name);
        if before.is_none() {
            pods.create(
                &PostParams::default(),
                &serde_json::from_value(pod_json(f, &p.name)).unwrap(),
            )
            .await
            .unwrap();
        }
        let status = |s: &PodState| (s.running, s.ready);
        if p.running && before.is_none_or(|b| status(b) != status(p)) {
            let ready = if p.ready { "True" } else { "False" };
            pods.patch_status(
                &p.name,
                &pp,
                &Patch::Merge(json!({"status": {"phase": "Running",
                    "conditions": [{"type": "Ready", "status": ready}]}})),
            )
            .await
            .unwrap();
        }
        if p.deleting && before.is_some_and(|b| !b.deleting) {
            pods.delete(&p.name, &DeleteParams::default())
                .await
                .unwrap();
        }
    }
    for gone in had
        .iter()
        .filter(|h| !want.iter().any(|p| p.name == h.name))
    {
        if !gone.deleting {
            pods.delete(&gone.name, &DeleteParams::default())
                .await
                .unwrap();
        }
        pods.patch(
            &gone.name,
            &pp,
            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await
        .unwrap();
    }
}

/// The exposition: each pod's series, labelled with its fleet.
fn exposition(walks: &[Walk]) -> String {
    let mut out = String::new();
    for (f, w) in FLEETS.iter().zip(walks) {
        for p in &w.pods {
            if let Some(v) = p.value {
                writeln!(
                    out,
                    "steps_load{{namespace=\"{NS}\",pod=\"{}\",fleet=\"{}\"}} {v}",
                    p.name, f.name
                )
                .unwrap();
            }
        }
    }
    out
}

/// Waits until Prometheus serves exactly these values, all from one scrape; returns that
/// scrape's clock.
async fn visible(prom: &Prom, walks: &[Walk]) -> f64 {
    let want: BTreeMap<String, f64> = walks.iter().flat_map(|w| w.samples()).collect();
    let query = format!(
        "/api/v1/query?query={}",
        encode(r#"{__name__=~"steps_load|steps_clock"}"#)
    );
    let mut clock = f64::NAN;
    wait_for("Prometheus to serve the step's values", 30, || {
        let (_, body) = http_get(prom.port, &query);
        let v: Value = serde_json::from_str(&body).unwrap_or_default();
        let mut got = BTreeMap::new();
        let (mut times, mut c) = (vec![], f64::NAN);
        for r in v["data"]["result"].as_array().into_iter().flatten() {
            let t = r["value"][0].as_f64().unwrap_or(f64::NAN);
            let x: f64 = r["value"][1]
                .as_str()
                .unwrap_or("NaN")
                .parse()
                .unwrap_or(f64::NAN);
            times.push(t);
            if r["metric"]["__name__"] == "steps_clock" {
                c = x;
            } else if let Some(p) = r["metric"]["pod"].as_str() {
                got.insert(p.to_string(), x);
            }
        }
        let one_scrape = times.windows(2).all(|w| w[0] == w[1]);
        let ok = got == want && one_scrape && c.is_finite();
        if ok {
            clock = c;
        }
        async move { ok }
    })
    .await;
    clock
}

/// One HPA status: the replica count it started from, its answer, the clock it read.
#[derive(Debug)]
struct Seen {
    rv: String,
    current: i32,
    desired: i32,
    clock: f64,
    /// A condition that says this sync computed nothing (a metric it could not read).
    failed: Option<String>,
}

fn seen(h: &HorizontalPodAutoscaler) -> Option<Seen> {
    let s = h.status.as_ref()?;
    let clock = s
        .current_metrics
        .iter()
        .flatten()
        .filter_map(|m| m.external.as_ref())
        .find(|e| e.metric.name == "steps_clock")
        .and_then(|e| e.current.value.as_ref())
        .map(|q| parse_quantity(&q.0))?;
    let failed = s
        .conditions
        .iter()
        .flatten()
        .find(|c| (c.type_ == "ScalingActive" || c.type_ == "AbleToScale") && c.status != "True")
        .map(|c| {
            format!(
                "{} {}: {}",
                c.type_,
                c.reason.clone().unwrap_or_default(),
                c.message.clone().unwrap_or_default()
            )
        });
    Some(Seen {
        rv: h.metadata.resource_version.clone().unwrap_or_default(),
        current: s.current_replicas.unwrap_or(0),
        desired: s.desired_replicas,
        clock,
        failed,
    })
}

/// What the drill's `hpa` decides from what this sync saw.
fn drill_answer(
    policy: &ElasticGatewaySpec,
    f: &Fleet,
    w: &Walk,
    current: i32,
    clock: f64,
    state: &mut EngineState,
) -> i32 {
    let pods = w.gateway_pods();
    let samples = w.samples();
    let loads = if f.external {
        vec![LoadSample::Total(samples.iter().map(|(_, v)| v).sum())]
    } else {
        vec![LoadSample::PerPod(samples)]
    };
    let obs = Observation {
        now: clock,
        loads: &loads,
        fast: None,
        spec_replicas: current,
        pod_requests: Resources::default(),
        weights: None,
        rollout_in_progress: false,
        pods: &pods,
        nodes: &[],
        ecs_claimed_elsewhere: 0,
        spread_missing: false,
        planned: &[],
        pool_usage: None,
    };
    let out = engine::decide(policy, &obs, state);
    *state = out.state;
    out.decision.replicas.desired
}

/// What a step had, for the report and the coverage check.
fn shape(w: &Walk) -> String {
    let n = |f: &dyn Fn(&PodState) -> bool| w.pods.iter().filter(|p| f(p)).count();
    format!(
        "ready {} pending {} not-ready {} unmeasured {} deleting {}",
        n(&|p| p.running && p.ready && !p.deleting),
        n(&|p| !p.running && !p.deleting),
        n(&|p| p.running && !p.ready && !p.deleting),
        n(&|p| p.running && !p.deleting && p.value.is_none()),
        n(&|p| p.deleting),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drills_hpa_answers_as_the_real_hpa_sync_by_sync() {
    let wd = workdir("hpa-steps");
    let dir = wd.path();
    let tb = Testbed::start_with_hpa_sync(dir, "2s").await;
    let exporter = TextExporter::start();
    let prom_dir = dir.join("prometheus");
    std::fs::create_dir_all(&prom_dir).unwrap();
    let prom = Prom::start(&prom_dir, &[exporter.port]);
    let _adapter = Adapter::start_with_config(&tb, dir, &prom.url(), &adapter_rules()).await;

    tb.kubectl_ok(&["create", "namespace", NS], None);
    tb.kubectl_ok(&["apply", "-f", "-"], Some(&crd()));
    tb.kubectl_ok(
        &[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/steppers.test.spillway.io",
        ],
        None,
    );
    tb.kubectl_ok(
        &[
            "wait",
            "--for=create",
            "--timeout=60s",
            "serviceaccount/default",
            "-n",
            NS,
        ],
        None,
    );
    let client = tb.client.clone();
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let gvk = GroupVersionKind::gvk("test.spillway.io", "v1", "Stepper");
    let steppers: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), NS, &ApiResource::from_gvk(&gvk));
    let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(client.clone(), NS);

    // Each fleet starts at 3 Ready pods at the target.
    let mut walks: Vec<Walk> = FLEETS
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let mut w = Walk {
                rng: ChaCha8Rng::seed_from_u64(3300 + i as u64),
                pods: vec![],
                next: 0,
                load: 3.0,
            };
            for _ in 0..3 {
                w.add_pending(f.name);
            }
            for p in &mut w.pods {
                p.running = true;
                p.ready = true;
                p.value = Some(TARGET as u32);
            }
            w
        })
        .collect();
    for (f, w) in FLEETS.iter().zip(&walks) {
        write_pods(&pods, f.name, &[], &w.pods).await;
        let obj: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "test.spillway.io/v1", "kind": "Stepper",
            "metadata": {"name": f.name, "namespace": NS},
            "spec": {"replicas": 3}
        }))
        .unwrap();
        steppers.create(&PostParams::default(), &obj).await.unwrap();
        set_status(&steppers, f.name, w.live()).await;
    }
    exporter.set(exposition(&walks));
    visible(&prom, &walks).await;
    for f in &FLEETS {
        let hpa: HorizontalPodAutoscaler = serde_json::from_value(hpa_json(f)).unwrap();
        let created = hpas.create(&PostParams::default(), &hpa).await.unwrap();
        // The tolerances are a beta field (HPAConfigurableTolerance, on by default since 1.35):
        // an apiserver without it would drop them and compare something else.
        let behavior = created.spec.behavior.clone().unwrap();
        assert_eq!(
            behavior
                .scale_up
                .and_then(|r| r.tolerance)
                .map(|q| parse_quantity(&q.0)),
            f.up,
            "{}: the apiserver kept spec.behavior.scaleUp.tolerance",
            f.name
        );
    }
    // The HPAs reach their objects through discovery of the new CRD and read both metrics.
    for f in &FLEETS {
        wait_for(
            &format!("HPA {} to compute from its metrics", f.name),
            90,
            || {
                let hpas = hpas.clone();
                async move {
                    hpas.get(f.name)
                        .await
                        .ok()
                        .and_then(|h| seen(&h))
                        .is_some_and(|s| s.failed.is_none())
                }
            },
        )
        .await;
    }

    let policies: Vec<ElasticGatewaySpec> = FLEETS.iter().map(drill_policy).collect();
    let mut states: Vec<EngineState> = vec![EngineState::default(); FLEETS.len()];
    let mut report = String::new();
    let mut disagreements = vec![];
    let mut compared = 0;
    // What the compared syncs saw: (unready pods on a scale-up, missing pods, not-Ready pods
    // with a value, deleted pods with a value, answers that differ from the current count).
    let mut coverage = [0usize; 5];
    for step in 0..STEPS {
        // The HPAs' last writes, which the test's "ReplicaSet" follows.
        let mut had = vec![];
        for (f, w) in FLEETS.iter().zip(walks.iter_mut()) {
            let spec = steppers.get(f.name).await.unwrap().data["spec"]["replicas"]
                .as_i64()
                .unwrap() as i32;
            had.push(w.pods.clone());
            w.follow(f.name, spec);
            w.step();
            // A step the HPA could not compute from is walked again.
            while !w.measurable(f.external) {
                w.step();
            }
        }
        for ((f, w), before) in FLEETS.iter().zip(&walks).zip(&had) {
            write_pods(&pods, f.name, before, &w.pods).await;
            set_status(&steppers, f.name, w.live()).await;
        }
        exporter.set(exposition(&walks));
        let from = visible(&prom, &walks).await;

        // Every status written from this step, until each HPA stands still.
        let mut last_rv = vec![String::new(); FLEETS.len()];
        let mut done = vec![false; FLEETS.len()];
        let deadline = Instant::now() + Duration::from_secs(60);
        while done.iter().any(|d| !d) {
            assert!(
                Instant::now() < deadline,
                "step {step}: no status from every HPA within 60 s\n{report}"
            );
            for (i, f) in FLEETS.iter().enumerate() {
                if done[i] {
                    continue;
                }
                let h = hpas.get(f.name).await.unwrap();
                let Some(s) = seen(&h) else { continue };
                if s.rv == last_rv[i] || s.clock < from - 0.0005 {
                    continue;
                }
                last_rv[i].clone_from(&s.rv);
                let w = &walks[i];
                if let Some(why) = &s.failed {
                    writeln!(report, "step {step:>2} {}: skipped, {why}", f.name).unwrap();
                    continue;
                }
                let drill = drill_answer(&policies[i], f, w, s.current, s.clock, &mut states[i]);
                compared += 1;
                let mark = if drill == s.desired {
                    ""
                } else {
                    "  <-- differs"
                };
                writeln!(
                    report,
                    "step {step:>2} {}: {} -> hpa {} drill {drill}  [{}]{mark}",
                    f.name,
                    s.current,
                    s.desired,
                    shape(w)
                )
                .unwrap();
                if drill != s.desired {
                    disagreements.push(format!(
                        "step {step} {}: current {} hpa {} drill {drill}; pods {:?}",
                        f.name, s.current, s.desired, w.pods
                    ));
                }
                let up = s.desired > s.current;
                let live = |p: &&PodState| !p.deleting;
                coverage[0] += usize::from(up && w.pods.iter().filter(live).any(|p| !p.running));
                coverage[1] += usize::from(
                    w.pods
                        .iter()
                        .filter(live)
                        .any(|p| p.running && p.value.is_none()),
                );
                coverage[2] += usize::from(
                    !f.external
                        && w.pods
                            .iter()
                            .filter(live)
                            .any(|p| p.running && !p.ready && p.value.is_some()),
                );
                coverage[3] += usize::from(w.pods.iter().any(|p| p.deleting && p.value.is_some()));
                coverage[4] += usize::from(s.desired != s.current);
                if s.desired == s.current {
                    done[i] = true;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    println!("{report}");
    println!(
        "{compared} syncs compared; with unready pods on a scale-up {}, missing pods {}, not-Ready pods with a value {}, deleted pods with a value {}, changes {}",
        coverage[0], coverage[1], coverage[2], coverage[3], coverage[4]
    );
    assert!(
        disagreements.is_empty(),
        "the drill's hpa and the real HPA disagree:\n{}\n\n{report}",
        disagreements.join("\n")
    );
    assert!(
        compared >= STEPS * FLEETS.len() && coverage.iter().all(|c| *c > 0),
        "the walk did not reach every case ({coverage:?}):\n{report}"
    );
}

async fn set_status(steppers: &Api<DynamicObject>, name: &str, replicas: usize) {
    steppers
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"replicas": replicas,
                "selector": format!("app=steps-{name}")}})),
        )
        .await
        .unwrap();
}
