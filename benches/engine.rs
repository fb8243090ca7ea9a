//! `cargo bench`: one engine decision on a big cluster, a day-long drill, and the fast path's
//! parse of one gateway pod's stats.
#![allow(clippy::unwrap_used)]
//!
//! Targets: a decision under 1 ms at 5,000 nodes and 100,000 pods (issue 12); a 24 h diurnal drill on a
//! 50-node cluster at 1 s steps under 2 s; reading 16 pods every 2 s a small fraction of a core.

use std::collections::BTreeMap;

use criterion::{Criterion, criterion_group, criterion_main};
use spillway::engine::{self, EngineState, Observation};
use spillway::model::LoadSample;
use spillway::model::{GatewayPod, INSTANCE_TYPE_LABEL, Node, Pool, Resources, Taint, TaintEffect};
use spillway::policy::{ElasticGateway, PoolWeights};
use spillway::sim::load::{Component, LoadProfile};
use spillway::sim::{PolicyKind, Scenario};

const GI: i64 = 1 << 30;
const GW: Resources = Resources::pod(2000, 2 * GI);

/// 5,000 nodes (200 dedicated to the gateway, 4,795 workers, 5 virtual), 100,000 pods, of which
/// 300 are the gateway's. Node requests are summed from the pods, as the live observer does.
fn big_cluster() -> (Vec<Node>, Vec<GatewayPod>) {
    let mut nodes = Vec::with_capacity(5000);
    for i in 0..5000 {
        let mut labels = BTreeMap::from([
            (
                INSTANCE_TYPE_LABEL.to_string(),
                "ecs.g7.4xlarge".to_string(),
            ),
            (
                "topology.kubernetes.io/zone".to_string(),
                format!("cn-hangzhou-{}", ["h", "i", "j", "k"][i % 4]),
            ),
        ]);
        let mut taints = vec![];
        let allocatable = if i >= 4995 {
            labels.insert("type".into(), "virtual-kubelet".into());
            taints.push(Taint {
                key: "virtual-kubelet.io/provider".into(),
                value: "alibabacloud".into(),
                effect: TaintEffect::NoSchedule,
            });
            Resources::new(10_000_000, 40_000 * GI, 200_000)
        } else {
            if i < 200 {
                labels.insert("mykey4pod".into(), "asmgateway".into());
                taints.push(Taint {
                    key: "mykey".into(),
                    value: "myvalue".into(),
                    effect: TaintEffect::NoSchedule,
                });
            }
            Resources::new(16_000, 64 * GI, 110)
        };
        nodes.push(Node {
            name: format!("node-{i:05}"),
            labels,
            taints,
            allocatable,
            requested: Resources::default(),
            unschedulable: false,
        });
    }
    // 99,700 other pods spread over the nodes.
    let mut per_node = vec![Resources::default(); nodes.len()];
    for p in 0..99_700usize {
        per_node[p % 4995].add(&Resources::pod(
            100 + (p % 7) as i64 * 50,
            (256 + (p % 5) as i64 * 128) << 20,
        ));
    }
    let mut pods = Vec::new();
    for g in 0..300usize {
        let (node, pool) = if g < 250 {
            (g % 200, Pool::Ecs)
        } else {
            (4995 + g % 5, Pool::Eci)
        };
        per_node[node].add(&GW);
        pods.push(GatewayPod {
            name: format!("istio-ingressgateway-{g:04}"),
            node: Some(nodes[node].name.clone()),
            pool,
            ready: true,
            pending: false,
            terminating: false,
            requests: GW,
            deletion_cost: None,
            created_at: g as f64,
            ready_since: None,
            drain: None,
        });
    }
    for (n, r) in nodes.iter_mut().zip(per_node) {
        n.requested = r;
    }
    (nodes, pods)
}

fn bench_decision(c: &mut Criterion) {
    let mut policy = ElasticGateway::scenario_default().spec;
    policy.max_replicas = 1000;
    policy.eci.max_replicas = Some(500);
    let (nodes, pods) = big_cluster();
    let loads = [LoadSample::Total(180_000.0)];
    let mut state = EngineState::default();
    // Warm the engine's memory as a running agent's would be.
    for t in 0..60 {
        let obs = Observation {
            now: f64::from(t) * 5.0,
            loads: &loads,
            fast: None,
            spec_replicas: 300,
            pod_requests: GW,
            weights: Some(PoolWeights { ecs: 80, eci: 20 }),
            rollout_in_progress: false,
            pods: &pods,
            nodes: &nodes,
            ecs_claimed_elsewhere: 0,
            spread_missing: false,
            planned: &[],
            pool_usage: None,
        };
        state = engine::decide(&policy, &obs, &state).state;
    }
    c.bench_function("decide/5000-nodes-100k-pods", |b| {
        b.iter(|| {
            let obs = Observation {
                now: 301.0,
                loads: &loads,
                // The fast path's reading, as the drill models it: a burst above the fleet.
                fast: Some(spillway::model::FastSample {
                    rps: 400_000.0,
                    pods_read: 16,
                }),
                spec_replicas: 300,
                pod_requests: GW,
                weights: Some(PoolWeights { ecs: 80, eci: 20 }),
                rollout_in_progress: false,
                pods: &pods,
                nodes: &nodes,
                ecs_claimed_elsewhere: 0,
                spread_missing: false,
                planned: &[],
                pool_usage: None,
            };
            engine::decide(&policy, &obs, &state)
        })
    });
}

fn bench_drill(c: &mut Criterion) {
    let mut s = Scenario {
        duration_seconds: 86_400,
        step_seconds: 1,
        ..Scenario::default()
    };
    s.cluster.ecs.count = 10;
    s.cluster.workers = 39;
    s.cluster.virtual_nodes = 1;
    s.policy.max_replicas = 60;
    s.policies = vec![PolicyKind::Spillway];
    s.load = LoadProfile {
        components: vec![Component::Diurnal {
            mean_rps: 8000.0,
            amplitude_rps: 6000.0,
            period_seconds: 86_400.0,
            peak_at_seconds: 50_400.0,
        }],
    };
    let mut g = c.benchmark_group("drill");
    g.sample_size(10);
    g.bench_function("24h-diurnal-50-nodes-1s-steps-spillway", |b| {
        b.iter(|| spillway::sim::run(&s, &mut spillway::sim::drill::Quiet))
    });
    g.finish();
}

/// One Envoy's `/stats/prometheus` on a busy mesh: `istio_requests_total` for 200 upstream
/// services × 3 response codes, a duration histogram for each (20 buckets), and 2,000 other
/// Envoy statistics: 6,600 lines, about 0.8 MB.
fn envoy_stats() -> String {
    let mut body = String::from("# TYPE istio_requests_total counter\n");
    for svc in 0..200 {
        for code in [200, 404, 503] {
            body.push_str(&format!(
                "istio_requests_total{{reporter=\"source\",source_workload=\"istio-ingressgateway\",source_workload_namespace=\"istio-system\",destination_service_name=\"svc-{svc}\",destination_workload_namespace=\"default\",request_protocol=\"http\",response_code=\"{code}\",response_flags=\"-\",connection_security_policy=\"unknown\"}} {}\n",
                svc * 1000 + code
            ));
        }
    }
    for svc in 0..200 {
        for le in 0..20 {
            body.push_str(&format!(
                "istio_request_duration_milliseconds_bucket{{reporter=\"source\",destination_service_name=\"svc-{svc}\",response_code=\"200\",le=\"{le}\"}} {le}\n"
            ));
        }
    }
    for i in 0..2000 {
        body.push_str(&format!("envoy_cluster_upstream_cx_total{{envoy_cluster_name=\"outbound|80||svc-{i}.default.svc.cluster.local\"}} {i}\n"));
    }
    body
}

fn bench_fast_path(c: &mut Criterion) {
    let body = envoy_stats();
    assert!(spillway::fastpath::counter_sum(&body, "istio_requests_total").is_ok());
    c.bench_function("fastpath/counter_sum-one-envoy-6600-lines", |b| {
        b.iter(|| spillway::fastpath::counter_sum(&body, "istio_requests_total"))
    });
}

criterion_group!(benches, bench_decision, bench_drill, bench_fast_path);
criterion_main!(benches);
