//! Which template keeps the gateway on ECS while ECS has room, on the real kube-scheduler
//! (issue 34, the measurement the mechanism is chosen from).
//!
//! The cluster of the target: 9 ECS nodes (16 vCPU, 6 of them taken by other workloads: 10
//! gateway pods of 1 vCPU fit on each) and one virtual node, with or without zone labels (3 zones).
//! For each candidate template the gateway is scaled 10 → 20 → … → 60 (ECS room for
//! all), then to 100 (past the 90 slots), and at each checkpoint the test counts the pods the
//! scheduler sent to ECI and the spread of the ECS pods over the ECS nodes (most − fewest).
//!
//! `cargo test --test placement -- --ignored --nocapture` prints the table (about 3 minutes);
//! docs/benchmarks.md quotes it and says what it chose. CI runs three of the candidates (about
//! a minute): today's template against the chosen one, with and without zone labels, and the
//! drill's scheduler model against all three.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use serde_json::{Value, json};
use spillway::model::{Pool, SpreadConstraint};
use spillway::policy::PoolWeights;
use spillway::sim::Scenario;
use spillway::sim::cluster::{Latencies, SimCluster, pool_classifier};
use support::live::{agent, bed, egw_resource, policy, wait_for, workdir};
use support::prom::{LoadExporter, Prom};
use support::testbed::Testbed;

const ZONE: &str = "topology.kubernetes.io/zone";
const GW: &str = "istio-ingressgateway";
/// The key of the ECS pool's label (`mykey4pod=asmgateway`).
const POOL_KEY: &str = "mykey4pod";

fn latencies() -> Latencies {
    Latencies {
        ecs_start_seconds: 0.5,
        eci_start_seconds: 1.0,
        jitter: 0.0,
        termination_seconds: 0.5,
    }
}

fn scenario() -> Scenario {
    let mut s = Scenario::default();
    s.cluster.ecs.count = 9;
    s.cluster.ecs.cpu = "16".into();
    s.cluster.ecs.memory = "64Gi".into();
    s.cluster.ecs.other_cpu = "6".into();
    s.cluster.ecs.other_memory = "16Gi".into();
    s.cluster.ecs.other_pods = 6;
    s.gateway.cpu = "1".into();
    s.gateway.memory = "2Gi".into();
    s.gateway.replicas = 10;
    s
}

/// A candidate: its preferred weights, its own spread constraints (`None`: the scheduler's
/// system defaults apply), and whether the ECS nodes and the virtual node carry zone labels.
struct Candidate {
    name: &'static str,
    weights: PoolWeights,
    spread: Option<Value>,
    ecs_zones: bool,
    virtual_zone: bool,
    /// A preferred pod affinity (weight 100) to the gateway's own pods over the pool label's
    /// key: what an IstioGateway's `affinity` can carry where its template takes no spread
    /// constraints. The drill's model does not score pod affinity.
    pod_affinity: bool,
}

fn constraint(key: &str, skew: i32) -> Value {
    json!({"maxSkew": skew, "topologyKey": key, "whenUnsatisfiable": "ScheduleAnyway",
        "labelSelector": {"matchLabels": {"app": GW}}})
}

fn candidates() -> Vec<Candidate> {
    let guide = PoolWeights { ecs: 80, eci: 20 };
    let ecs_only = PoolWeights { ecs: 100, eci: 0 };
    vec![
        Candidate {
            name: "80/20, system default spread, no zone labels (the test bed's default)",
            weights: guide,
            spread: None,
            ecs_zones: false,
            virtual_zone: false,
            pod_affinity: false,
        },
        Candidate {
            name: "80/20, system default spread, virtual node without zone",
            weights: guide,
            spread: None,
            ecs_zones: true,
            virtual_zone: false,
            pod_affinity: false,
        },
        Candidate {
            name: "80/20, system default spread (today)",
            weights: guide,
            spread: None,
            ecs_zones: true,
            virtual_zone: true,
            pod_affinity: false,
        },
        Candidate {
            name: "100/0, system default spread",
            weights: ecs_only,
            spread: None,
            ecs_zones: true,
            virtual_zone: true,
            pod_affinity: false,
        },
        Candidate {
            name: "80/20, own hostname spread (skew 3)",
            weights: guide,
            spread: Some(json!([constraint("kubernetes.io/hostname", 3)])),
            ecs_zones: true,
            virtual_zone: true,
            pod_affinity: false,
        },
        Candidate {
            name: "80/20, own zone spread (skew 5)",
            weights: guide,
            spread: Some(json!([constraint(ZONE, 5)])),
            ecs_zones: true,
            virtual_zone: true,
            pod_affinity: false,
        },
        Candidate {
            name: "80/20, own zone spread, virtual node without zone",
            weights: guide,
            spread: Some(json!([constraint(ZONE, 5)])),
            ecs_zones: true,
            virtual_zone: false,
            pod_affinity: false,
        },
        Candidate {
            name: "100/0, own zone spread (skew 5)",
            weights: ecs_only,
            spread: Some(json!([constraint(ZONE, 5)])),
            ecs_zones: true,
            virtual_zone: true,
            pod_affinity: false,
        },
        // The pool's own label as a topology key: only ECS nodes carry it, and a node without
        // every key of the pod's own constraints is left out of spreading (scored 0), so the
        // virtual node never wins on spread; hostname spreads the pods over the ECS nodes.
        Candidate {
            name: "80/20, own pool-label + hostname spread (skew 3), no zone labels",
            weights: guide,
            spread: Some(json!([
                constraint(POOL_KEY, 3),
                constraint("kubernetes.io/hostname", 3)
            ])),
            ecs_zones: false,
            virtual_zone: false,
            pod_affinity: false,
        },
        Candidate {
            name: "80/20, own pool-label + hostname spread (skew 3)",
            weights: guide,
            spread: Some(json!([
                constraint(POOL_KEY, 3),
                constraint("kubernetes.io/hostname", 3)
            ])),
            ecs_zones: true,
            virtual_zone: true,
            pod_affinity: false,
        },
        Candidate {
            name: "80/20, own pool-label + zone + hostname spread (3, 5, 3)",
            weights: guide,
            spread: Some(json!([
                constraint(POOL_KEY, 3),
                constraint(ZONE, 5),
                constraint("kubernetes.io/hostname", 3)
            ])),
            ecs_zones: true,
            virtual_zone: true,
            pod_affinity: false,
        },
        Candidate {
            name: "80/20, own zone spread (skew 5), ECS nodes without zone",
            weights: guide,
            spread: Some(json!([constraint(ZONE, 5)])),
            ecs_zones: false,
            virtual_zone: true,
            pod_affinity: false,
        },
        Candidate {
            name: "100/0, own zone + hostname spread (5, 3)",
            weights: ecs_only,
            spread: Some(json!([
                constraint(ZONE, 5),
                constraint("kubernetes.io/hostname", 3)
            ])),
            ecs_zones: true,
            virtual_zone: true,
            pod_affinity: false,
        },
        // For an IstioGateway, whose template ASM renders from `affinity` (no spread field):
        // the system default spread stays, and a preferred pod affinity to the gateway's own
        // pods over the pool label's key scores the ECS nodes (InterPodAffinity, weight 2) and
        // never the virtual node, which lacks the key.
        Candidate {
            name: "80/20 + pod affinity on the pool label, system default spread",
            weights: guide,
            spread: None,
            ecs_zones: true,
            virtual_zone: true,
            pod_affinity: true,
        },
        Candidate {
            name: "80/20 + pod affinity on the pool label, system default spread, no zone labels",
            weights: guide,
            spread: None,
            ecs_zones: false,
            virtual_zone: false,
            pod_affinity: true,
        },
    ]
}

/// One control plane at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The steps: 10 at rest, then these counts.
const STEPS: [i32; 6] = [20, 30, 40, 50, 60, 100];

/// The drill's model of the same cluster and steps: the ECI pods at each step.
fn simulate(s: &Scenario, c: &Candidate) -> Vec<usize> {
    let p = &s.policy;
    let mut template = p.gateway_template(s.gateway_requests(), c.weights);
    // The candidate's own placement terms only (not what the scenario's policy would write).
    template.pod_affinity = if c.pod_affinity {
        vec![spillway::model::OwnPodAffinity {
            topology_key: POOL_KEY.into(),
            weight: 100,
        }]
    } else {
        vec![]
    };
    template.spread = c
        .spread
        .as_ref()
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|k| SpreadConstraint {
            topology_key: k["topologyKey"].as_str().unwrap().to_string(),
            max_skew: k["maxSkew"].as_i64().unwrap(),
        })
        .collect();
    let mut nodes = s.nodes();
    // The test bed lists the ECS nodes by name and zones them in that order.
    nodes.sort_by(|a, b| a.name.cmp(&b.name));
    let classify = pool_classifier(
        p.pools.ecs.node_selector.clone(),
        p.pools.eci.node_selector.clone(),
    );
    let mut ecs_index = 0;
    for n in &mut nodes {
        let zone = match classify(n) {
            Pool::Ecs if c.ecs_zones => {
                ecs_index += 1;
                Some(format!("z{}", (ecs_index - 1) % 3 + 1))
            }
            Pool::Eci if c.virtual_zone => Some("z1".to_string()),
            _ => None,
        };
        if let Some(z) = zone {
            n.labels.insert(ZONE.into(), z);
        }
    }
    let mut sim = SimCluster::new(nodes, template, 10, latencies(), s.seed, classify);
    sim.settle();
    let mut now = 0.0;
    STEPS
        .iter()
        .map(|n| {
            sim.replicas = *n;
            for _ in 0..100 {
                now += 0.5;
                sim.step(now);
            }
            sim.live()
                .filter(|pod| sim.pool_of(pod.node) == Pool::Eci)
                .count()
        })
        .collect()
}

/// (ECS pods, ECI pods, most − fewest ECS pods per ECS node) of the bound gateway pods.
async fn census(tb: &Testbed, ecs_nodes: &[String]) -> (usize, usize, usize) {
    let pods = tb.gateway_pods().await;
    let mut per_node: BTreeMap<&str, usize> = ecs_nodes.iter().map(|n| (n.as_str(), 0)).collect();
    let (mut ecs, mut eci) = (0, 0);
    for p in &pods {
        match (p.pool, p.node.as_deref()) {
            (Some(Pool::Ecs), Some(n)) => {
                ecs += 1;
                *per_node.entry(n).or_default() += 1;
            }
            (Some(Pool::Eci), _) => eci += 1,
            _ => {}
        }
    }
    let most = per_node.values().max().copied().unwrap_or(0);
    let fewest = per_node.values().min().copied().unwrap_or(0);
    (ecs, eci, most - fewest)
}

/// Scales the gateway to `n` and waits until every pod is bound and none is terminating.
async fn scale(tb: &Testbed, n: i32) {
    let deployments: Api<Deployment> = Api::namespaced(tb.client.clone(), "istio-system");
    deployments
        .patch_scale(
            GW,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": n}})),
        )
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(tb.client.clone(), "istio-system");
    wait_for(&format!("{n} gateway pods bound"), 120, || async {
        let all = pods
            .list(&ListParams::default().labels(&format!("app={GW}")))
            .await
            .unwrap()
            .items;
        all.len() == n as usize
            && all.iter().all(|p| {
                p.metadata.deletion_timestamp.is_none()
                    && p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some()
            })
    })
    .await;
}

/// One candidate's figures on the real scheduler and in the model.
struct Row {
    name: &'static str,
    real_eci: Vec<usize>,
    model_eci: Vec<usize>,
    spread_at_60: usize,
    real_at_100: (usize, usize),
}

/// Runs `chosen` candidates (indices into [`candidates`]) on one control plane.
async fn measure(name: &str, chosen: &[usize]) -> Vec<Row> {
    let dir = workdir(name);
    let s = scenario();
    let tb = Testbed::start(dir.path(), &s, &latencies()).await;
    tb.seed(&s, &latencies(), None).await;
    let pools = tb.node_pools().await;
    let of_pool = |pool: Pool| -> Vec<String> {
        pools
            .iter()
            .filter(|(_, p)| **p == pool)
            .map(|(n, _)| n.clone())
            .collect()
    };
    let (ecs_nodes, virtual_nodes) = (of_pool(Pool::Ecs), of_pool(Pool::Eci));
    assert_eq!((ecs_nodes.len(), virtual_nodes.len()), (9, 1));
    let deployments: Api<Deployment> = Api::namespaced(tb.client.clone(), "istio-system");
    let all = candidates();
    let mut rows = vec![];
    for c in chosen.iter().map(|i| &all[*i]) {
        scale(&tb, 0).await;
        let label = |on: bool, value: String| {
            if on {
                format!("{ZONE}={value}")
            } else {
                format!("{ZONE}-")
            }
        };
        tb.kubectl_ok(
            &[
                "label",
                "node",
                &virtual_nodes[0],
                &label(c.virtual_zone, "z1".into()),
                "--overwrite",
            ],
            None,
        );
        for (i, n) in ecs_nodes.iter().enumerate() {
            let zone = label(c.ecs_zones, format!("z{}", i % 3 + 1));
            tb.kubectl_ok(&["label", "node", n, &zone, "--overwrite"], None);
        }
        // A preferred term of weight 0 is invalid: 100/0 is the ECS term alone.
        let terms: Vec<Value> = spillway::k8s::target::preferred_terms(&s.policy, c.weights)
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["weight"] != 0)
            .cloned()
            .collect();
        let pod_affinity = if c.pod_affinity {
            json!({"preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 100,
                "podAffinityTerm": {"topologyKey": POOL_KEY,
                    "labelSelector": {"matchLabels": {"app": GW}}}}]})
        } else {
            Value::Null
        };
        let patch = json!({"spec": {"template": {"spec": {
            "affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": terms},
                "podAffinity": pod_affinity},
            "topologySpreadConstraints": c.spread.clone().unwrap_or(Value::Null)}}}});
        deployments
            .patch(GW, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
        scale(&tb, 10).await;
        let mut row = Row {
            name: c.name,
            real_eci: vec![],
            model_eci: simulate(&s, c),
            spread_at_60: 0,
            real_at_100: (0, 0),
        };
        for n in STEPS {
            scale(&tb, n).await;
            let (ecs, eci, spread) = census(&tb, &ecs_nodes).await;
            row.real_eci.push(eci);
            if n == 60 {
                row.spread_at_60 = spread;
            }
            row.real_at_100 = (ecs, eci);
        }
        eprintln!("{}", line(&row));
        rows.push(row);
    }
    rows
}

fn line(r: &Row) -> String {
    let show = |v: &[usize]| {
        v[..5]
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("/")
    };
    format!(
        "| {} | {} | {} | {} | {}/{} | {}/{} |",
        r.name,
        show(&r.real_eci),
        show(&r.model_eci),
        r.spread_at_60,
        r.real_at_100.0,
        r.real_at_100.1,
        100 - r.model_eci[5],
        r.model_eci[5]
    )
}

/// The mechanisms issue 34 adopts, against today's template, on the real scheduler: the pool
/// label and hostname as the pod's own spreading keys (a Deployment), or a preferred pod
/// affinity on the pool label (an IstioGateway), keep every pod on ECS while it has room,
/// spread within the skew; today's template (no zone labels) does not; and the drill's model
/// agrees within one pod at every checkpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pool_label_spread_keeps_the_gateway_on_ecs() {
    let _one = SERIAL.lock().await;
    let rows = measure("placement-ci", &[0, 8, 9, 14]).await;
    let (today, pool_no_zones, pool_zoned, affinity_no_zones) =
        (&rows[0], &rows[1], &rows[2], &rows[3]);
    assert!(
        today.real_eci[..5].iter().any(|e| *e > 0),
        "today's template kept every pod on ECS here: the measurement lost its contrast"
    );
    // The spread for a Deployment, the pod affinity for an IstioGateway (no zone labels: the
    // case where today's template loses pods to ECI).
    for r in [pool_no_zones, pool_zoned, affinity_no_zones] {
        assert_eq!(r.real_eci[..5], [0; 5], "{}", line(r));
        assert!(r.spread_at_60 <= 3, "{}", line(r));
        assert_eq!(r.real_at_100, (90, 10), "ECS is filled first: {}", line(r));
    }
    for r in &rows {
        for (real, model) in r.real_eci.iter().zip(&r.model_eci) {
            assert!(real.abs_diff(*model) <= 1, "the model: {}", line(r));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement of about 3 minutes: cargo test --test placement -- --ignored --nocapture"]
async fn which_template_keeps_the_gateway_on_ecs() {
    let _one = SERIAL.lock().await;
    let all: Vec<usize> = (0..candidates().len()).collect();
    let rows = measure("placement", &all).await;
    let mut table = String::from(
        "| template | ECI pods at 20/30/40/50/60 (ECS room for all) | the drill's model | ECS spread (most − fewest) at 60 | at 100 (90 ECS slots): ECS/ECI | model |\n|---|---|---|---|---|---|\n",
    );
    let (mut agree, mut of) = (0, 0);
    for r in &rows {
        table.push_str(&line(r));
        table.push('\n');
        agree += r
            .real_eci
            .iter()
            .zip(&r.model_eci)
            .filter(|(a, b)| a == b)
            .count();
        of += r.real_eci.len();
    }
    println!("{table}\nthe drill's model: the same ECI count at {agree} of {of} checkpoints");
}

/// The agent's writes of the gateway Deployment's template (its applies, not scale writes).
fn template_writes(a: &support::live::Agent) -> usize {
    a.writes()
        .into_iter()
        .filter(|w| {
            w.method == "PATCH" && w.path.contains(&format!("/deployments/{GW}?")) && w.forwarded
        })
        .count()
}

/// The spread constraints of the template, as the apiserver holds them.
async fn spread_of(tb: &Testbed) -> Vec<Value> {
    let d = tb.gateway().await;
    d.spec
        .template
        .spec
        .and_then(|s| s.topology_spread_constraints)
        .unwrap_or_default()
        .iter()
        .map(|c| serde_json::to_value(c).unwrap())
        .collect()
}

/// `placement.poolSpread` by the real agent on the real apiserver: at a quiet time it applies
/// the weights with the constraints, once, beside the gateway's own soft hostname constraint
/// (kept as it is, and none of spillway's added on that key); the rollout completes; the
/// deletion of the ElasticGateway takes spillway's entry away and leaves the gateway's own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_writes_the_pool_spread_once_and_hands_it_back() {
    let _one = SERIAL.lock().await;
    let dir = workdir("pool-spread");
    // 400 rps: one pod's worth, 2 replicas at least: 40 % of the ready capacity, a quiet time.
    let load = LoadExporter::start(400.0);
    let prom = Prom::start(dir.path(), &[load.port]);
    let tb = bed(dir.path(), policy()).await;
    let deployments: Api<Deployment> = Api::namespaced(tb.client.clone(), "istio-system");
    let own = json!({"maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
        "whenUnsatisfiable": "ScheduleAnyway", "labelSelector": {"matchLabels": {"app": GW}}});
    deployments
        .patch(
            GW,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"template": {"spec": {"topologySpreadConstraints": [own.clone()]}}}})),
        )
        .await
        .unwrap();
    let a = agent(&tb, dir.path(), &prom.url(), "agent-a", false, &[]).await;
    wait_for("the pool-label constraint in the template", 90, || async {
        spread_of(&tb)
            .await
            .iter()
            .any(|c| c["topologyKey"] == POOL_KEY)
    })
    .await;
    let template_writes = || template_writes(&a);
    // The rollout completes, and a dozen decisions later nothing more was written.
    let seen = a.decisions();
    wait_for("the rollout and a dozen more decisions", 90, || async {
        let d = tb.gateway().await;
        let st = d.status.clone().unwrap_or_default();
        let replicas = d.spec.replicas.unwrap_or(0);
        a.decisions() >= seen + 12.0
            && st.observed_generation == d.metadata.generation
            && st.updated_replicas == Some(replicas)
            && st.ready_replicas == Some(replicas)
    })
    .await;
    let spread = spread_of(&tb).await;
    eprintln!(
        "pool spread: {} template write(s); constraints {spread:?}",
        template_writes()
    );
    assert_eq!(
        template_writes(),
        1,
        "one apply establishes the constraints"
    );
    let keys: Vec<&str> = spread
        .iter()
        .map(|c| c["topologyKey"].as_str().unwrap())
        .collect();
    assert_eq!(keys.len(), 2, "{spread:?}");
    assert!(keys.contains(&POOL_KEY) && keys.contains(&"kubernetes.io/hostname"));
    let hostname = spread
        .iter()
        .find(|c| c["topologyKey"] == "kubernetes.io/hostname")
        .unwrap();
    assert_eq!(hostname["maxSkew"], 1, "the gateway's own entry, untouched");
    let pool = spread
        .iter()
        .find(|c| c["topologyKey"] == POOL_KEY)
        .unwrap();
    assert_eq!(pool["whenUnsatisfiable"], "ScheduleAnyway");
    assert_eq!(pool["matchLabelKeys"], json!(["pod-template-hash"]));

    // Hand-back: the ElasticGateway goes, spillway's entry with it.
    let api: Api<DynamicObject> =
        Api::namespaced_with(tb.client.clone(), "istio-system", &egw_resource());
    api.delete("ingressgateway", &DeleteParams::default())
        .await
        .unwrap();
    wait_for(
        "the ElasticGateway to be handed back and gone",
        90,
        || async { api.get_opt("ingressgateway").await.unwrap().is_none() },
    )
    .await;
    let after = spread_of(&tb).await;
    assert_eq!(after.len(), 1, "{after:?}");
    assert_eq!(after[0]["topologyKey"], "kubernetes.io/hostname");
    assert_eq!(after[0]["maxSkew"], 1);
}

/// Issue 34's bad input, by the real agent on the real apiserver: a virtual node carrying the
/// ECS pool's label (it would join the pool spread) is named in `PoolSpread=False
/// VirtualNodeInPool` with a Warning Event, and nothing is written meanwhile; once the label is
/// gone the constraints are written; another writer then replaces the template without them
/// and with weights of its own (a whole-object update, as a pipeline applying the full manifest
/// does): `PoolSpread=False RemovedByAnotherWriter`, a Warning Event; spillway puts the
/// policy's weights back (it owns those) and that write does not carry the constraints: they
/// are not written again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mislabelled_node_and_a_rewritten_template_are_reported_not_fought() {
    let _one = SERIAL.lock().await;
    let dir = workdir("pool-spread-fought");
    let load = LoadExporter::start(400.0);
    let prom = Prom::start(dir.path(), &[load.port]);
    let tb = bed(dir.path(), policy()).await;
    let pools = tb.node_pools().await;
    let virtual_node = pools
        .iter()
        .find(|(_, p)| **p == Pool::Eci)
        .map(|(n, _)| n.clone())
        .unwrap();
    tb.kubectl_ok(
        &[
            "label",
            "node",
            &virtual_node,
            &format!("{POOL_KEY}=asmgateway"),
            "--overwrite",
        ],
        None,
    );
    let a = agent(&tb, dir.path(), &prom.url(), "agent-a", false, &[]).await;
    wait_for("PoolSpread=False VirtualNodeInPool", 60, || async {
        spread_reason(&tb).await.as_deref() == Some("VirtualNodeInPool")
    })
    .await;
    let msg = support::live::condition(&tb, "PoolSpread").await.unwrap()["message"].clone();
    assert!(msg.as_str().unwrap().contains(&virtual_node), "{msg}");
    assert!(
        support::live::event_reasons(&tb)
            .await
            .contains(&"VirtualNodeInPool".to_string())
    );
    tb.kubectl_ok(
        &["label", "node", &virtual_node, &format!("{POOL_KEY}-")],
        None,
    );
    wait_for("the constraints written (PoolSpread=True)", 90, || async {
        spread_reason(&tb).await.as_deref() == Some("InPlace")
    })
    .await;
    let template_writes = || template_writes(&a);
    assert_eq!(template_writes(), 1);

    // Another writer replaces the whole Deployment, without spillway's constraints and with
    // its own weights.
    let deployments: Api<Deployment> = Api::namespaced(tb.client.clone(), "istio-system");
    let mut d = deployments.get(GW).await.unwrap();
    d.metadata.managed_fields = None;
    if let Some(spec) = d.spec.template.spec.as_mut() {
        spec.topology_spread_constraints = None;
        let terms = spec
            .affinity
            .as_mut()
            .and_then(|a| a.node_affinity.as_mut())
            .and_then(|n| {
                n.preferred_during_scheduling_ignored_during_execution
                    .as_mut()
            })
            .unwrap();
        terms[0].weight = 60;
        terms[1].weight = 40;
    }
    deployments
        .replace(
            GW,
            &kube::api::PostParams {
                field_manager: Some("pipeline".into()),
                ..Default::default()
            },
            &d,
        )
        .await
        .unwrap();
    wait_for("PoolSpread=False RemovedByAnotherWriter", 60, || async {
        spread_reason(&tb).await.as_deref() == Some("RemovedByAnotherWriter")
    })
    .await;
    assert!(
        support::live::event_reasons(&tb)
            .await
            .contains(&"RemovedByAnotherWriter".to_string())
    );
    wait_for("spillway puts the policy's weights back", 120, || async {
        support::live::weights_of(&tb.gateway().await) == [80, 20]
    })
    .await;
    let seen = a.decisions();
    wait_for("a dozen more decisions", 60, || async {
        a.decisions() >= seen + 12.0
    })
    .await;
    assert_eq!(
        template_writes(),
        2,
        "one write of the constraints with the weights, one of the weights alone"
    );
    assert!(
        spread_of(&tb).await.is_empty(),
        "spillway wrote the constraints again, in a fight with the other writer"
    );
}

/// The reason of the ElasticGateway's `PoolSpread` condition.
async fn spread_reason(tb: &Testbed) -> Option<String> {
    support::live::condition(tb, "PoolSpread")
        .await
        .map(|c| c["reason"].as_str().unwrap_or_default().to_string())
}

/// Bound gateway pods once the Deployment asks for a count in `n` and every pod is bound and
/// none is terminating: (ECS pods, ECI pods, most − fewest ECS pods per ECS node). On the way
/// down the HPA's tolerance may stop the count a pod or so above the load's.
async fn settled_at(
    tb: &Testbed,
    n: std::ops::RangeInclusive<i32>,
    ecs_nodes: &[String],
) -> (usize, usize, usize) {
    let pods: Api<Pod> = Api::namespaced(tb.client.clone(), "istio-system");
    wait_for(
        &format!("the agent's {n:?} gateway pods bound"),
        120,
        || async {
            let Ok(list) = pods
                .list(&ListParams::default().labels(&format!("app={GW}")))
                .await
            else {
                return false;
            };
            let replicas = tb.replicas().await;
            n.contains(&replicas)
                && list.items.len() == replicas as usize
                && list.items.iter().all(|p| {
                    p.metadata.deletion_timestamp.is_none()
                        && p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some()
                })
        },
    )
    .await;
    census(tb, ecs_nodes).await
}

/// Issue 34's live target, through the real agent: 9 ECS nodes carrying other work (10 gateway
/// pods fit on each) and a virtual node. The agent writes its pool spread at a quiet time, then
/// the load takes the gateway 10 → 20 → … → 60 pods: none on ECI at any step, the ECS pods
/// spread within the skew (3); past ECS room (100 pods for 90 slots) the overflow goes to ECI;
/// when the load falls back to 60 the ECI pods go first, and at 10 every pod is on ECS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_keeps_the_gateway_on_ecs_from_10_to_60_and_back() {
    let _one = SERIAL.lock().await;
    let dir = workdir("pool-spread-steps");
    let s = scenario();
    // 2,000 rps on 10 pods: 40 % of the ready capacity, a quiet time to write the spread.
    let load = LoadExporter::start(2000.0);
    let prom = Prom::start(dir.path(), &[load.port]);
    let mut egw = policy();
    egw["spec"]["minReplicas"] = json!(10);
    egw["spec"]["maxReplicas"] = json!(100);
    egw["spec"]["behavior"]["scaleUp"]["policies"][0]["value"] = json!(100);
    egw["spec"]["behavior"]["scaleDown"]["policies"][0]["value"] = json!(100);
    let tb = Testbed::start(dir.path(), &s, &latencies()).await;
    tb.seed(&s, &latencies(), Some(egw)).await;
    let pools = tb.node_pools().await;
    let ecs_nodes: Vec<String> = pools
        .iter()
        .filter(|(_, p)| **p == Pool::Ecs)
        .map(|(n, _)| n.clone())
        .collect();
    assert_eq!(ecs_nodes.len(), 9);
    let _a = agent(&tb, dir.path(), &prom.url(), "agent-a", false, &[]).await;
    wait_for("the pool spread written and rolled out", 120, || async {
        let d = tb.gateway().await;
        let st = d.status.clone().unwrap_or_default();
        spread_of(&tb)
            .await
            .iter()
            .any(|c| c["topologyKey"] == POOL_KEY)
            && st.observed_generation == d.metadata.generation
            && st.updated_replicas == Some(10)
            && st.replicas == Some(10)
    })
    .await;
    let mut seen = vec![];
    for n in [10, 20, 30, 40, 50, 60] {
        // Just under n pods' worth: the count the HPA formula gives is n.
        load.set(f64::from(n) * 500.0 - 100.0);
        let (ecs, eci, spread) = settled_at(&tb, n..=n, &ecs_nodes).await;
        eprintln!("{n} pods: {ecs} on ECS, {eci} on ECI, ECS spread {spread}");
        seen.push((n, eci, spread));
    }
    for (n, eci, spread) in &seen {
        assert_eq!(*eci, 0, "{n} pods with ECS room for all: {seen:?}");
        assert!(*spread <= 3, "{n} pods spread {spread} over ECS: {seen:?}");
    }
    load.set(100.0 * 500.0 - 100.0);
    let (ecs, eci, _) = settled_at(&tb, 100..=100, &ecs_nodes).await;
    eprintln!("100 pods: {ecs} on ECS, {eci} on ECI");
    assert_eq!(
        (ecs, eci),
        (90, 10),
        "ECS filled first, the overflow on ECI"
    );
    load.set(60.0 * 500.0 - 100.0);
    let (ecs, eci, _) = settled_at(&tb, 60..=66, &ecs_nodes).await;
    eprintln!("back to 60: {ecs} on ECS, {eci} on ECI");
    assert_eq!(
        eci, 0,
        "the ECI pods went first: {ecs} on ECS, {eci} on ECI"
    );
    load.set(10.0 * 500.0 * 0.5);
    let (ecs, eci, _) = settled_at(&tb, 10..=10, &ecs_nodes).await;
    assert_eq!((ecs, eci), (10, 0));
}
