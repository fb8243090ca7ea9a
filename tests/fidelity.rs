//! Fidelity of the drill simulator's cluster model: the same nodes, gateway and sequence of
//! scale-ups, scale-ins (with spillway's deletion costs) and a rollout, once on the real
//! kube-scheduler and kube-controller-manager (the test bed) and once on `SimCluster` (the
//! model every drill runs on). At each checkpoint the pools' pod counts and each pool's per-node
//! spread are compared; the agreement figures are printed. The pool split — what the engine and
//! the cost depend on — must agree within one pod after every scale-up and scale-in. After a
//! template change the split depends on the rollout's timing (which surge pod is bound before
//! which old pod has gone: ECS is full of old pods while the first new ones are placed, and the
//! ReplicaSet removes the old ECI pods first, by their deletion cost), and differs from run to
//! run on the real control plane too (ECS 2 to 6 of 18 pods after the same rollout). Four
//! rollouts run (two per weight pass); the model's ECS count after each must fall within the
//! real rollouts' spread, widened by one pod: a model that kept the old pods' ECS slots for
//! the new ones (12 of 18) would not. Measured here: exact agreement of the pool split at 12 to
//! 18 of 24 checkpoints, every scale checkpoint before a rollout within one pod; after the
//! rollouts ECS 3 in the model, 2 to 6 on the real control plane.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;
use spillway::model::{POD_DELETION_COST, Pool};
use spillway::policy::PoolWeights;
use spillway::sim::Scenario;
use spillway::sim::cluster::{Latencies, SimCluster, pool_classifier};
use support::live::{wait_for, workdir};
use support::testbed::{Testbed, gateway_json};

fn latencies() -> Latencies {
    Latencies {
        ecs_start_seconds: 1.0,
        eci_start_seconds: 2.0,
        jitter: 0.0,
        termination_seconds: 1.0,
    }
}

/// Where the gateway's pods are: per pool, and the sorted per-node counts within each pool.
#[derive(Clone, Debug, PartialEq)]
struct Placement {
    ecs: usize,
    eci: usize,
    ecs_spread: Vec<usize>,
}

fn placement(pods: impl Iterator<Item = (Pool, String)>) -> Placement {
    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    let (mut ecs, mut eci) = (0, 0);
    for (pool, node) in pods {
        match pool {
            Pool::Ecs => {
                ecs += 1;
                *per_node.entry(node).or_default() += 1;
            }
            Pool::Eci => eci += 1,
            _ => {}
        }
    }
    let mut ecs_spread: Vec<usize> = per_node.into_values().collect();
    ecs_spread.sort_unstable();
    Placement {
        ecs,
        eci,
        ecs_spread,
    }
}

/// One step of the sequence.
#[derive(Clone, Copy, Debug)]
enum Step {
    Scale(i32),
    /// spillway's deletion costs: ECI pods -100, ECS pods 100.
    Costs,
    Weights(PoolWeights),
}

fn sequence() -> Vec<Step> {
    use Step::*;
    vec![
        Scale(8),
        Scale(12),
        Scale(14),
        Scale(20),
        Costs,
        Scale(13),
        Costs,
        Scale(6),
        Scale(18),
        Costs,
        Weights(PoolWeights { ecs: 100, eci: 1 }),
        Scale(10),
        Scale(18),
        Costs,
        Weights(PoolWeights { ecs: 80, eci: 20 }),
        Scale(12),
    ]
}

/// The model: the same steps on `SimCluster`, each run until the cluster is still.
fn simulate(scenario: &Scenario, steps: &[Step]) -> Vec<Placement> {
    let p = &scenario.policy;
    let mut template = p.gateway_template(scenario.gateway_requests(), p.placement.normal_weights);
    // The test bed's gateway is the guide's template: none of placement.poolSpread's terms.
    template.spread.clear();
    template.pod_affinity.clear();
    let classify = pool_classifier(
        p.pools.ecs.node_selector.clone(),
        p.pools.eci.node_selector.clone(),
    );
    let mut sim = SimCluster::new(
        scenario.nodes(),
        template,
        scenario.gateway.replicas,
        latencies(),
        scenario.seed,
        classify,
    );
    sim.settle();
    let mut now = 0.0;
    let mut out = vec![];
    for step in steps {
        match *step {
            Step::Scale(n) => sim.replicas = n,
            Step::Costs => {
                let costs: Vec<(String, i32)> = sim
                    .live()
                    .map(|pod| {
                        let cost = if sim.pool_of(pod.node) == Pool::Eci {
                            -100
                        } else {
                            100
                        };
                        (pod.name.clone(), cost)
                    })
                    .collect();
                for (name, cost) in costs {
                    sim.set_deletion_cost(&name, cost);
                }
                continue;
            }
            Step::Weights(w) => sim.set_weights(w),
        }
        for _ in 0..600 {
            now += 0.5;
            sim.step(now);
        }
        out.push(placement(
            sim.pods
                .iter()
                .filter(|pod| pod.gone_at.is_none())
                .map(|pod| {
                    (
                        sim.pool_of(pod.node),
                        pod.node
                            .map(|n| sim.nodes[n].name.clone())
                            .unwrap_or_default(),
                    )
                }),
        ));
    }
    out
}

/// The truth: the same steps on the real control plane.
async fn run_real(tb: &Testbed, scenario: &Scenario, steps: &[Step]) -> Vec<Placement> {
    let deployments: Api<Deployment> = Api::namespaced(tb.client.clone(), "istio-system");
    let pods: Api<Pod> = Api::namespaced(tb.client.clone(), "istio-system");
    let mut out = vec![];
    let mut replicas = scenario.gateway.replicas;
    for step in steps {
        match *step {
            Step::Scale(n) => {
                replicas = n;
                deployments
                    .patch_scale(
                        "istio-ingressgateway",
                        &PatchParams::default(),
                        &Patch::Merge(json!({"spec": {"replicas": n}})),
                    )
                    .await
                    .unwrap();
            }
            Step::Costs => {
                for p in tb.gateway_pods().await {
                    let cost = if p.pool == Some(Pool::Eci) {
                        "-100"
                    } else {
                        "100"
                    };
                    let patch = json!({"metadata": {"annotations": {POD_DELETION_COST: cost}}});
                    pods.patch(&p.name, &PatchParams::default(), &Patch::Merge(&patch))
                        .await
                        .unwrap();
                }
                continue;
            }
            Step::Weights(w) => {
                let terms = spillway::k8s::target::preferred_terms(&scenario.policy, w);
                let patch = json!({"spec": {"template": {"spec": {"affinity": {"nodeAffinity": {
                    "preferredDuringSchedulingIgnoredDuringExecution": terms}}}}}});
                deployments
                    .patch(
                        "istio-ingressgateway",
                        &PatchParams::default(),
                        &Patch::Merge(&patch),
                    )
                    .await
                    .unwrap();
            }
        }
        settle(tb, replicas).await;
        out.push(placement(
            tb.gateway_pods()
                .await
                .into_iter()
                .filter_map(|p| Some((p.pool?, p.node?))),
        ));
    }
    out
}

/// Waits until the Deployment is still: its replicas all bound and ready, one ReplicaSet, no pod
/// terminating (a terminating pod still holds its node's room).
async fn settle(tb: &Testbed, replicas: i32) {
    let pods: Api<Pod> = Api::namespaced(tb.client.clone(), "istio-system");
    wait_for("the gateway to settle", 120, || async {
        let all = pods
            .list(&kube::api::ListParams::default().labels("app=istio-ingressgateway"))
            .await
            .unwrap()
            .items;
        let d = tb.gateway().await;
        let status = d.status.unwrap_or_default();
        let generation_seen = status.observed_generation == d.metadata.generation;
        let owners: std::collections::BTreeSet<String> = all
            .iter()
            .filter_map(|p| {
                p.metadata
                    .owner_references
                    .as_ref()?
                    .first()
                    .map(|o| o.name.clone())
            })
            .collect();
        let ready = tb.gateway_pods().await.iter().filter(|p| p.ready).count();
        generation_seen
            && owners.len() == 1
            && all.len() == replicas as usize
            && all.iter().all(|p| p.metadata.deletion_timestamp.is_none())
            && ready == replicas as usize
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulator_places_and_removes_pods_as_the_real_controllers_do() {
    let dir = workdir("fidelity");
    let mut scenario = Scenario::default();
    let tb = Testbed::start(dir.path(), &scenario, &latencies()).await;
    tb.seed(&scenario, &latencies(), None).await;
    let steps = sequence();
    let mut report = vec![];
    let mut disagreements = vec![];
    // ECS pods after each rollout: (real, model, the line that says so).
    let mut rollouts: Vec<(usize, usize, String)> = vec![];
    // The guide's 80/20, then a weaker 50/50 preference on the same nodes.
    for (label, weights) in [
        ("80/20", PoolWeights { ecs: 80, eci: 20 }),
        ("50/50", PoolWeights { ecs: 50, eci: 50 }),
    ] {
        scenario.policy.placement.normal_weights = weights;
        let deployments: Api<Deployment> = Api::namespaced(tb.client.clone(), "istio-system");
        if label != "80/20" {
            deployments
                .delete("istio-ingressgateway", &DeleteParams::foreground())
                .await
                .unwrap();
            wait_for("the old gateway to go", 60, || async {
                deployments
                    .get_opt("istio-ingressgateway")
                    .await
                    .unwrap()
                    .is_none()
                    && tb.gateway_pods().await.is_empty()
            })
            .await;
            let d = gateway_json(&scenario, &latencies());
            deployments
                .create(&PostParams::default(), &serde_json::from_value(d).unwrap())
                .await
                .unwrap();
            settle(&tb, scenario.gateway.replicas).await;
        }
        let real = run_real(&tb, &scenario, &steps).await;
        let model = simulate(&scenario, &steps);
        let relevant: Vec<&Step> = steps.iter().filter(|s| !matches!(s, Step::Costs)).collect();
        let mut rolled = false;
        for ((step, r), m) in relevant.iter().zip(&real).zip(&model) {
            rolled |= matches!(step, Step::Weights(_));
            let pools = (r.ecs, r.eci) == (m.ecs, m.eci);
            let spread = r.ecs_spread == m.ecs_spread;
            report.push((pools, spread));
            let line = format!(
                "{label} {step:?}: real ECS {} ECI {} spread {:?} | model ECS {} ECI {} spread {:?}",
                r.ecs, r.eci, r.ecs_spread, m.ecs, m.eci, m.ecs_spread
            );
            eprintln!("{}{line}", if pools && spread { "  " } else { "≠ " });
            if matches!(step, Step::Weights(_)) {
                rollouts.push((r.ecs, m.ecs, line.clone()));
            }
            if !rolled && r.ecs.abs_diff(m.ecs) > 1 {
                disagreements.push(line);
            }
        }
    }
    let n = report.len();
    let pools = report.iter().filter(|(p, _)| *p).count();
    let spread = report.iter().filter(|(_, s)| *s).count();
    eprintln!(
        "fidelity: pool split agrees at {pools}/{n} checkpoints, per-node spread at {spread}/{n}"
    );
    std::fs::write(
        dir.path().join("fidelity.txt"),
        format!("pools {pools}/{n}, spread {spread}/{n}\n"),
    )
    .unwrap();
    let lo = rollouts.iter().map(|(r, ..)| *r).min().unwrap();
    let hi = rollouts.iter().map(|(r, ..)| *r).max().unwrap();
    eprintln!(
        "fidelity: after a rollout ECS holds {lo}..{hi} pods on the real control plane, {:?} in the model",
        rollouts.iter().map(|(_, m, _)| *m).collect::<Vec<_>>()
    );
    for (_, m, line) in &rollouts {
        if *m + 1 < lo || *m > hi + 1 {
            disagreements.push(format!(
                "{line} (outside the real rollouts' {lo}..{hi} ECS pods, ± 1)"
            ));
        }
    }
    assert!(
        disagreements.is_empty(),
        "the simulator's pool split differs from the real scheduler's by more than a pod:\n{}",
        disagreements.join("\n")
    );
}
