//! Per-pool capacity (issue 27) read through a real Prometheus (Debian's package): cAdvisor's
//! per-container CPU counters, scraped every second, queried with the agent's own per-pod CPU
//! query, joined with the fast path's per-pod rates and learnt by the engine's own code. Other
//! containers of the pods, other namespaces and pods of no gateway are in the scrape too, and
//! must not count.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};

use spillway::engine::capacity::{CapacityMemory, PoolUsage, Source, relative};
use spillway::model::{GatewayPod, LoadSample, Pool, Resources};
use spillway::prom::{PromAuth, PromConfig, Prometheus};
use support::prom::{CadvisorExporter, Prom};

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn pod(name: &str, pool: Pool) -> GatewayPod {
    GatewayPod {
        name: name.into(),
        node: Some(format!("{}-node", pool.as_str())),
        pool,
        ready: true,
        pending: false,
        terminating: false,
        requests: Resources::pod(2000, 2 << 30),
        deletion_cost: None,
        created_at: 0.0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eci_pods_that_spend_more_cpu_per_request_are_counted_as_weaker() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let ns = "istio-system";
    let cadvisor = CadvisorExporter::start();
    // Each pod serves 400 rps; an ECS pod's Envoy spends 0.8 cores on it, an ECI pod's 1.25
    // (it serves 0.64 of an ECS pod).
    let gateway = [
        ("istio-ingressgateway-7d9f-ecs01", Pool::Ecs, 0.8),
        ("istio-ingressgateway-7d9f-ecs02", Pool::Ecs, 0.8),
        ("istio-ingressgateway-7d9f-eci01", Pool::Eci, 1.25),
        ("istio-ingressgateway-7d9f-eci02", Pool::Eci, 1.25),
    ];
    for (name, _, cores) in gateway {
        cadvisor.set(ns, name, "istio-proxy", cores);
        // The pod's other containers are not the gateway's work.
        cadvisor.set(ns, name, "", 3.0);
        cadvisor.set(ns, name, "POD", 0.01);
    }
    // A pod of the gateway's name in another namespace, and one of another workload.
    cadvisor.set(
        "default",
        "istio-ingressgateway-7d9f-ecs01",
        "istio-proxy",
        9.0,
    );
    cadvisor.set(ns, "istiod-5c4f-abcde", "discovery", 9.0);
    let work = support::live::workdir("capacity");
    let prom = Prom::start(work.path(), &[cadvisor.port]);
    let client = Prometheus::new(PromConfig {
        url: prom.url(),
        timeout: Duration::from_secs(10),
        auth: PromAuth::default(),
        ca_pem: None,
        max_skew: Duration::from_secs(60),
    })
    .unwrap();
    let query = spillway::policy::cpu_per_pod_query(ns, "istio-ingressgateway");
    // Until Prometheus has two scrapes of every series, `rate()` has nothing to say.
    let deadline = Instant::now() + Duration::from_secs(60);
    let cpu = loop {
        match client.query(&query, now()).await {
            LoadSample::PerPod(v) if v.len() == gateway.len() => break v,
            other => assert!(
                Instant::now() < deadline,
                "no per-pod CPU for the gateway's pods: {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    // `rate()` over a window Prometheus has not filled yet reads low, by the same factor for
    // every series scraped together: the pods' CPU in proportion is what the engine uses.
    let got = |name: &str| cpu.iter().find(|(n, _)| n == name).unwrap().1;
    let scale = got(gateway[0].0) / gateway[0].2;
    for (name, _, cores) in gateway {
        assert!(
            (got(name) / cores - scale).abs() < 0.05 * scale,
            "{name}: {} cores, set {cores} (the first pod reads {scale} of what was set)",
            got(name)
        );
    }
    let pods: Vec<GatewayPod> = gateway.iter().map(|(n, p, _)| pod(n, *p)).collect();
    let rates: Vec<(String, f64)> = gateway
        .iter()
        .map(|(n, ..)| (n.to_string(), 400.0))
        .collect();
    let usage = PoolUsage::of(&pods, &rates, &cpu).unwrap();
    assert_eq!((usage.ecs.pods, usage.eci.pods), (2, 2));
    let mut memory = CapacityMemory::default();
    for i in 0..spillway::engine::capacity::MIN_SAMPLES {
        memory.learn(Some(usage), 500.0, f64::from(i) * 15.0);
    }
    let r = relative(None, &memory);
    assert_eq!(r.source, Source::Learnt);
    assert!((r.eci - 0.64).abs() <= 0.05, "ECI share {}", r.eci);
}
