//! Hand-over and hand-back with the real `spillway run` binary against the stand-in API server:
//! SIGTERM releases the Lease and the standby takes over within its retry period; a restart
//! reads the conditions back from status (same `lastTransitionTime`, no second Event) and a
//! steady gateway's status is not rewritten; deleting the ElasticGateway restores the preferred
//! terms spillway found and removes its deletion costs before the object goes.
#![allow(clippy::unwrap_used)]

mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use spillway::sim::Scenario;
use spillway::sim::cluster::Latencies;
use support::apiserver::ApiServer;
use support::prom::{LoadExporter, Prom, free_port, http_get};

fn latencies() -> Latencies {
    Latencies {
        ecs_start_seconds: 1.0,
        eci_start_seconds: 3.0,
        jitter: 0.0,
        termination_seconds: 1.0,
    }
}

fn policy() -> Value {
    json!({
        "apiVersion": "spillway.io/v1alpha1", "kind": "ElasticGateway",
        "metadata": {"name": "ingressgateway", "namespace": "istio-system", "generation": 1},
        "spec": {
            "target": {"kind": "Deployment", "name": "istio-ingressgateway"},
            "minReplicas": 2, "maxReplicas": 30,
            "metrics": [{"name": "rps", "query": "sum(spillway_test_gateway_requests_per_second)", "targetPerReplica": 500}],
            "behavior": {
                "leadTime": {"seconds": 0},
                "scaleUp": {"policies": [{"type": "Pods", "value": 30, "periodSeconds": 1}]},
                "scaleDown": {"stabilizationWindowSeconds": 4, "policies": [{"type": "Pods", "value": 30, "periodSeconds": 1}]}
            }
        }
    })
}

/// An agent process; killed on drop if still running.
struct Agent {
    child: Child,
    admin: u16,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Agent {
    fn start(
        api: &ApiServer,
        dir: &std::path::Path,
        prom: &str,
        who: &str,
        leader_election: bool,
    ) -> Self {
        let admin = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_spillway"))
            .arg("run")
            .args(["--kubeconfig", api.kubeconfig(dir, who).to_str().unwrap()])
            .args(["--prometheus-url", prom, "--prometheus-timeout", "1s"])
            .args(["--interval", "1s"])
            .args(["--admin-addr", &format!("127.0.0.1:{admin}")])
            .args([
                "--leader-election",
                if leader_election { "true" } else { "false" },
            ])
            .args(["--lease-duration", "15s", "--lease-retry-period", "500ms"])
            .args(["--lease-namespace", "spillway-system", "--identity", who])
            .env("SPILLWAY_LOG", "info,spillway=debug")
            .stdout(Stdio::null())
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(dir.join(format!("{who}.log")))
                    .unwrap(),
            )
            .spawn()
            .unwrap();
        Self { child, admin }
    }

    /// SIGTERM, as the kubelet stops a pod; returns the exit status.
    fn terminate(&mut self) -> std::process::ExitStatus {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        self.child.wait().unwrap()
    }

    /// `spillway_decisions_total` summed over its series, as this agent exports it.
    fn decisions(&self) -> f64 {
        let Some((_, text)) = support::prom::try_http_get(self.admin, "/metrics") else {
            return 0.0;
        };
        text.lines()
            .filter(|l| l.starts_with("spillway_decisions_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

async fn wait_until(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(
            Instant::now() < deadline,
            "timed out after {secs}s waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn egw(api: &ApiServer) -> Option<Value> {
    api.with(|st| {
        st.get("elasticgateways", "istio-system", "ingressgateway")
            .cloned()
    })
}

fn condition(api: &ApiServer, kind: &str) -> Option<Value> {
    egw(api)?["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == kind).cloned())
}

fn events(api: &ApiServer, reason: &str) -> Vec<Value> {
    api.with(|st| {
        st.list("events", Some("istio-system"))
            .into_iter()
            .filter(|e| e["reason"] == reason)
            .collect()
    })
}

fn lease_holder(api: &ApiServer) -> Option<String> {
    api.with(|st| {
        st.get("leases", "spillway-system", "spillway")
            .and_then(|l| l["spec"]["holderIdentity"].as_str().map(String::from))
    })
}

fn replicas(api: &ApiServer) -> i64 {
    api.with(|st| {
        st.get("deployments", "istio-system", "istio-ingressgateway")
            .unwrap()["spec"]["replicas"]
            .as_i64()
            .unwrap()
    })
}

fn preferred_terms(api: &ApiServer) -> Value {
    api.with(|st| {
        st.get("deployments", "istio-system", "istio-ingressgateway")
            .unwrap()["spec"]["template"]["spec"]["affinity"]["nodeAffinity"]
            ["preferredDuringSchedulingIgnoredDuringExecution"]
            .clone()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_hands_the_lease_over_within_the_retry_period() {
    let dir = tempfile::tempdir().unwrap();
    let load = LoadExporter::start(2000.0);
    let prom = Prom::start(dir.path(), &[load.port]);
    let api = ApiServer::start(&Scenario::default(), latencies(), Some(policy())).await;
    let mut a = Agent::start(&api, dir.path(), &prom.url(), "agent-a", true);
    wait_until("agent-a leads", 30, || {
        lease_holder(&api).as_deref() == Some("agent-a")
    })
    .await;
    let b = Agent::start(&api, dir.path(), &prom.url(), "agent-b", true);
    wait_until("agent-b decides as a standby", 30, || {
        support::prom::try_http_get(b.admin, "/metrics")
            .is_some_and(|(_, m)| m.contains("spillway_leader 0"))
    })
    .await;

    let stopped_at = Instant::now();
    let exit = a.terminate();
    let stopped = stopped_at.elapsed();
    assert!(exit.success(), "agent-a exited with {exit:?}");
    wait_until("agent-b takes the released Lease", 10, || {
        lease_holder(&api).as_deref() == Some("agent-b")
    })
    .await;
    let takeover = stopped_at.elapsed();
    eprintln!("SIGTERM → agent-a exited in {stopped:?}; agent-b held the Lease after {takeover:?}");
    // A Lease left to expire would take 15 s; a released one takes a retry period (0.5 s) plus
    // the acquisition.
    assert!(
        takeover < Duration::from_secs(5),
        "takeover took {takeover:?}: the Lease was not released"
    );
    load.set(5000.0);
    wait_until("the new leader acts", 30, || replicas(&api) == 10).await;
    assert!(
        http_get(b.admin, "/metrics")
            .1
            .contains("spillway_leader 1")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_conditions_and_sends_no_event_twice() {
    let dir = tempfile::tempdir().unwrap();
    let load = LoadExporter::start(2000.0);
    let mut prom = Prom::start(dir.path(), &[load.port]);
    let api = ApiServer::start(&Scenario::default(), latencies(), Some(policy())).await;
    let mut first = Agent::start(&api, dir.path(), &prom.url(), "agent-a", false);
    wait_until("the first status with the load", 30, || {
        condition(&api, "Ready").is_some_and(|c| c["status"] == "True")
            && condition(&api, "MetricsAvailable").is_some_and(|c| c["status"] == "True")
    })
    .await;
    let ready = condition(&api, "Ready").unwrap();
    assert_eq!(ready["observedGeneration"], 1);
    assert!(
        !ready["message"].as_str().unwrap().contains("rps"),
        "no live values in Ready: {ready}"
    );

    // A steady gateway: no status writes at all.
    let decided = first.decisions();
    wait_until("three more decisions", 30, || {
        first.decisions() >= decided + 3.0
    })
    .await;
    let status_writes = || {
        api.with(|st| {
            st.log
                .iter()
                .filter(|l| {
                    l.method == "PATCH" && l.path.contains("/elasticgateways/ingressgateway/status")
                })
                .count()
        })
    };
    let before = (status_writes(), egw(&api).unwrap()["status"].clone());
    let decided = first.decisions();
    wait_until("three more decisions", 30, || {
        first.decisions() >= decided + 3.0
    })
    .await;
    let after = (status_writes(), egw(&api).unwrap()["status"].clone());
    assert_eq!(
        after.0, before.0,
        "a steady gateway's status was rewritten:\n{}\n{}",
        before.1, after.1
    );

    // Prometheus goes: one Warning, one transition.
    prom.stop();
    wait_until("MetricsAvailable False", 30, || {
        condition(&api, "MetricsAvailable").is_some_and(|c| c["status"] == "False")
    })
    .await;
    let failed = condition(&api, "MetricsAvailable").unwrap();
    assert_eq!(events(&api, "QueryFailed").len(), 1);

    // Restart: the new process reads the conditions back.
    assert!(first.terminate().success());
    let second = Agent::start(&api, dir.path(), &prom.url(), "agent-a", false);
    wait_until("the restarted agent decides three times", 30, || {
        second.decisions() >= 3.0
    })
    .await;
    let again = condition(&api, "MetricsAvailable").unwrap();
    assert_eq!(again["status"], "False");
    assert_eq!(
        again["lastTransitionTime"], failed["lastTransitionTime"],
        "the restart reset lastTransitionTime"
    );
    assert_eq!(
        events(&api, "QueryFailed").len(),
        1,
        "the restart sent the Warning again"
    );
    // And a real transition is still one.
    prom.resume();
    wait_until("MetricsAvailable True", 30, || {
        condition(&api, "MetricsAvailable").is_some_and(|c| c["status"] == "True")
    })
    .await;
    assert_ne!(
        condition(&api, "MetricsAvailable").unwrap()["lastTransitionTime"],
        Value::Null
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_policy_hands_the_gateway_back() {
    let dir = tempfile::tempdir().unwrap();
    let load = LoadExporter::start(2000.0);
    let prom = Prom::start(dir.path(), &[load.port]);
    let mut policy = policy();
    // Weights other than the gateway's 80/20, so that spillway changes them at once.
    policy["spec"]["placement"] = json!({"normalWeights": {"ecs": 90, "eci": 10}, "exhaustedWeights": {"ecs": 90, "eci": 10}});
    let api = ApiServer::start(&Scenario::default(), latencies(), Some(policy)).await;
    let found = preferred_terms(&api);
    assert_eq!(found[0]["weight"], 80);
    let _agent = Agent::start(&api, dir.path(), &prom.url(), "agent-a", false);
    wait_until("spillway's weights applied", 30, || {
        preferred_terms(&api)[0]["weight"] == 90
    })
    .await;
    load.set(5000.0);
    wait_until("scaled, with deletion costs", 30, || {
        replicas(&api) == 10 && !events(&api, "DeletionCostsSet").is_empty()
    })
    .await;
    let e = egw(&api).unwrap();
    assert_eq!(
        e["metadata"]["finalizers"],
        json!(["spillway.io/restore-gateway"])
    );
    assert_eq!(
        e["status"]["original"]["preferredTerms"], found,
        "status.original records the terms spillway found"
    );

    // `kubectl delete egw`: the API server marks it and waits for the finalizer.
    let marked = api.with(|st| st.log.len());
    api.with(|st| {
        let mut o = st
            .get("elasticgateways", "istio-system", "ingressgateway")
            .unwrap()
            .clone();
        o["metadata"]["deletionTimestamp"] = json!("2026-11-25T19:00:00Z");
        o["metadata"]["generation"] = json!(2);
        st.put("elasticgateways", "istio-system", "ingressgateway", o);
    });
    wait_until("the ElasticGateway is gone", 30, || egw(&api).is_none()).await;
    assert_eq!(preferred_terms(&api), found, "the original terms are back");
    let handed = events(&api, "HandedBack");
    assert_eq!(handed.len(), 1, "{handed:?}");
    let note = handed[0]["note"].as_str().unwrap();
    assert!(
        note.contains("restored the 2 preferred affinity term(s)"),
        "{note}"
    );
    // Every gateway pod spillway knew at the hand-back had its annotation cleared: one patch
    // each (restoring the terms then rolls the gateway, so the pods are counted from the note).
    let cleared: usize = note
        .split("removed pod-deletion-cost from ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{note}"));
    assert!(cleared >= 10, "{note}");
    let pod_patches = api.with(|st| {
        st.log[marked..]
            .iter()
            .filter(|l| l.method == "PATCH" && l.path.contains("/pods/"))
            .count()
    });
    assert_eq!(pod_patches, cleared);
    // The replica count stays where spillway left it.
    assert_eq!(replicas(&api), 10);
}
