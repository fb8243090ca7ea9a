//! `deploy/`'s RBAC, enforced by the real kube-apiserver against `deploy/`'s ServiceAccount
//! token: the agent needs nothing more than it grants, and gets nothing more.
#![allow(clippy::unwrap_used)]

mod support;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, DeleteParams, EvictParams, ListParams, Patch, PatchParams};
use serde_json::json;
use spillway::sim::Scenario;
use spillway::sim::cluster::Latencies;
use support::live::{agent, wait_for, workdir};
use support::prom::{LoadExporter, Prom};
use support::testbed::{Testbed, client};

fn policy() -> serde_json::Value {
    json!({
        "apiVersion": "spillway.io/v1alpha1", "kind": "ElasticGateway",
        "metadata": {"name": "ingressgateway", "namespace": "istio-system"},
        "spec": {
            "target": {"kind": "Deployment", "name": "istio-ingressgateway"},
            "minReplicas": 2, "maxReplicas": 30,
            "metrics": [{"name": "rps", "query": "sum(spillway_test_gateway_requests_per_second)", "targetPerReplica": 500}],
            "placement": {"exhaustedWeights": {"ecs": 20, "eci": 80}, "exhaustedAfterSeconds": 2, "recoveredAfterSeconds": 2, "minWeightChangeIntervalSeconds": 1},
            "behavior": {"leadTime": {"seconds": 0}, "scaleUp": {"policies": [{"type": "Pods", "value": 30, "periodSeconds": 1}]},
                         "scaleDown": {"stabilizationWindowSeconds": 2}}
        }
    })
}

fn latencies() -> Latencies {
    Latencies {
        ecs_start_seconds: 1.0,
        eci_start_seconds: 2.0,
        jitter: 0.0,
        termination_seconds: 1.0,
    }
}

/// A client authenticated with `deploy/`'s ServiceAccount token, straight to the apiserver.
async fn agent_client(tb: &Testbed, dir: &std::path::Path) -> kube::Client {
    let server = format!("https://127.0.0.1:{}", tb.api_port());
    let kc = tb.kubeconfig_for(&dir.join("kubeconfig-sa"), &server, &tb.agent_token());
    client(&kc).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_needs_nothing_beyond_deploys_rbac() {
    let dir = workdir("rbac-needs");
    let load = LoadExporter::start(2000.0);
    let prom = Prom::start(dir.path(), &[load.port]);
    let scenario = Scenario::default();
    let tb = Testbed::start(dir.path(), &scenario, &latencies()).await;
    tb.seed(&scenario, &latencies(), Some(policy())).await;
    let mut agents = vec![];
    for who in ["spillway-a", "spillway-b"] {
        agents.push(agent(&tb, dir.path(), &prom.url(), who, true, &[]).await);
    }
    // A spike onto ECI, long enough for the weights to change, and back.
    load.set(10_000.0);
    wait_for("scaled up", 60, || async { tb.replicas().await == 20 }).await;
    let weights_applied = || {
        agents.iter().any(|a| {
            a.proxy.with(|st| {
                st.log.iter().any(|l| {
                    l.method == "PATCH"
                        && l.path.contains("/deployments/istio-ingressgateway?")
                        && l.path.contains("force=true")
                        && l.status == 200
                })
            })
        })
    };
    wait_for("weights applied server-side", 60, || async {
        weights_applied()
    })
    .await;
    load.set(1000.0);
    wait_for("scaled down", 90, || async { tb.replicas().await == 2 }).await;
    // An eviction, as a move back to ECS would send it, with the agent's identity.
    let c = agent_client(&tb, dir.path()).await;
    let pod = tb.gateway_pods().await[0].name.clone();
    Api::<Pod>::namespaced(c, "istio-system")
        .evict(&pod, &EvictParams::default())
        .await
        .unwrap();

    let log: Vec<_> = agents
        .iter()
        .flat_map(|a| a.proxy.with(|st| st.log.clone()))
        .collect();
    let denied: Vec<String> = log
        .iter()
        .filter(|l| l.status == 403)
        .map(|l| format!("{} {}", l.method, l.path))
        .collect();
    assert!(
        denied.is_empty(),
        "the apiserver denied the agent under deploy/'s RBAC: {denied:#?}"
    );
    // No Deployment is read cluster-wide any more.
    assert!(
        !log.iter()
            .any(|l| l.path.starts_with("/apis/apps/v1/deployments")),
        "the agent listed every Deployment"
    );
    // The run used every kind of request the agent makes, so the check covered them all.
    for (method, fragment) in [
        ("GET", "/api/v1/nodes"),
        ("GET", "/api/v1/pods"),
        // The gateway namespace's Deployments, watched (the target is read from that cache).
        ("GET", "/apis/apps/v1/namespaces/istio-system/deployments?"),
        ("GET", "/apis/spillway.io/v1alpha1/elasticgateways"),
        ("GET", "/horizontalpodautoscalers"),
        ("PATCH", "/deployments/istio-ingressgateway/scale"),
        ("PATCH", "/deployments/istio-ingressgateway?"),
        ("PATCH", "/namespaces/istio-system/pods/"),
        ("PATCH", "/elasticgateways/ingressgateway/status"),
        (
            "POST",
            "/apis/events.k8s.io/v1/namespaces/istio-system/events",
        ),
        ("GET", "/leases/spillway"),
    ] {
        assert!(
            log.iter()
                .any(|l| l.method == method && l.path.contains(fragment) && l.status < 400),
            "never exercised: {method} {fragment}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_outside_the_role_are_denied() {
    let dir = workdir("rbac-denied");
    let scenario = Scenario::default();
    let tb = Testbed::start(dir.path(), &scenario, &latencies()).await;
    tb.seed(&scenario, &latencies(), Some(policy())).await;
    let c = agent_client(&tb, dir.path()).await;
    let forbidden = |r: Result<(), kube::Error>| {
        matches!(&r, Err(kube::Error::Api(s)) if s.code == 403) || panic!("not denied: {r:?}")
    };
    let deployments = Api::<Deployment>::namespaced(c.clone(), "istio-system");
    // Only the gateway's Deployment may be changed in istio-system, not istiod.
    assert!(forbidden(
        deployments
            .patch(
                "istiod",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"replicas": 0}}))
            )
            .await
            .map(|_| ())
    ));
    assert!(forbidden(
        Api::<Deployment>::all(c.clone())
            .list(&ListParams::default())
            .await
            .map(|_| ())
    ));
    assert!(forbidden(
        deployments
            .delete("istio-ingressgateway", &DeleteParams::default())
            .await
            .map(|_| ())
    ));
    assert!(forbidden(
        Api::<Secret>::all(c.clone())
            .list(&ListParams::default())
            .await
            .map(|_| ())
    ));
    let pods_elsewhere = Api::<Pod>::namespaced(c.clone(), "default");
    let patch = json!({"metadata": {"annotations": {"x": "y"}}});
    assert!(forbidden(
        pods_elsewhere
            .patch(
                "other-cn-hangzhou-ecs-gw-0-0",
                &PatchParams::default(),
                &Patch::Merge(&patch)
            )
            .await
            .map(|_| ())
    ));
    let scale_elsewhere = Api::<Deployment>::namespaced(c.clone(), "default");
    assert!(forbidden(
        scale_elsewhere
            .patch_scale(
                "x",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"replicas": 1}}))
            )
            .await
            .map(|_| ())
    ));
    // And what it does need is allowed.
    assert!(
        Api::<Pod>::namespaced(c.clone(), "istio-system")
            .list(&ListParams::default().limit(5))
            .await
            .is_ok()
    );
    assert!(deployments.get("istio-ingressgateway").await.is_ok());
}

/// Issue 30: `pods: patch` in the gateway namespace let spillway's ServiceAccount swap any pod's
/// image (istiod's included) or relabel a pod into the gateway's Service. deploy/admission.yaml's
/// ValidatingAdmissionPolicy, enforced by the real apiserver, leaves it the deletion-cost
/// annotation only: set and cleared as the agent does, everything else refused and named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_account_may_change_only_the_deletion_cost_of_a_pod() {
    let dir = workdir("rbac-admission");
    let scenario = Scenario::default();
    let tb = Testbed::start(dir.path(), &scenario, &latencies()).await;
    tb.seed(&scenario, &latencies(), Some(policy())).await;
    let c = agent_client(&tb, dir.path()).await;
    let admin_pods = Api::<Pod>::namespaced(tb.client.clone(), "istio-system");
    let pod = admin_pods
        .list(&ListParams::default().labels("app=istio-ingressgateway"))
        .await
        .unwrap()
        .items
        .into_iter()
        .next()
        .and_then(|p| p.metadata.name)
        .unwrap();
    let pods = Api::<Pod>::namespaced(c.clone(), "istio-system");
    // What the agent does, through its own functions.
    spillway::k8s::target::set_deletion_cost(&c, "istio-system", &pod, -100)
        .await
        .unwrap();
    let cost = |p: Pod| {
        p.metadata
            .annotations
            .unwrap_or_default()
            .get(spillway::model::POD_DELETION_COST)
            .cloned()
    };
    assert_eq!(
        cost(admin_pods.get(&pod).await.unwrap()).as_deref(),
        Some("-100")
    );
    spillway::k8s::target::clear_deletion_cost(&c, "istio-system", &pod)
        .await
        .unwrap();
    assert_eq!(cost(admin_pods.get(&pod).await.unwrap()), None);
    // Everything else on a pod is refused, with the policy's reason.
    let refused = |what: &str, patch: serde_json::Value| {
        let pods = pods.clone();
        let (what, pod) = (what.to_string(), pod.clone());
        async move {
            // Strategic: the containers merge by name, so the image is all that changes.
            let r = pods
                .patch(&pod, &PatchParams::default(), &Patch::Strategic(&patch))
                .await;
            match r {
                Err(kube::Error::Api(s)) if s.code == 403 => {
                    assert!(s.message.contains("deletion-cost"), "{what}: {}", s.message)
                }
                other => panic!("{what}: not refused: {other:?}"),
            }
        }
    };
    let container = admin_pods.get(&pod).await.unwrap().spec.unwrap().containers[0]
        .name
        .clone();
    refused(
        "an image",
        json!({"spec": {"containers": [{"name": container, "image": "evil:latest"}]}}),
    )
    .await;
    refused(
        "a label",
        json!({"metadata": {"labels": {"app": "something-else"}}}),
    )
    .await;
    refused(
        "another annotation",
        json!({"metadata": {"annotations": {"sidecar.istio.io/inject": "false"}}}),
    )
    .await;
    refused(
        "a finalizer",
        json!({"metadata": {"finalizers": ["example.com/hold"]}}),
    )
    .await;
    // The cluster's own writers are not spillway: an administrator still labels the pod.
    admin_pods
        .patch(
            &pod,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"checked": "yes"}}})),
        )
        .await
        .unwrap();
}

/// Issue 30: an app team with Kubernetes' `edit` role in its namespace could not create an
/// ElasticGateway. deploy/'s aggregated ClusterRoles add them to view, edit and admin (the
/// controller-manager's aggregation controller folds them in): `edit` may write the policy and
/// not its status (spillway's), `view` may read both and write neither.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_roles_reach_elastic_gateways() {
    let dir = workdir("rbac-aggregated");
    let scenario = Scenario::default();
    let tb = Testbed::start(dir.path(), &scenario, &latencies()).await;
    tb.seed(&scenario, &latencies(), Some(policy())).await;
    for (binding, role, user) in [("alice-edit", "edit", "alice"), ("bob-view", "view", "bob")] {
        tb.kubectl_ok(
            &[
                "-n",
                "istio-system",
                "create",
                "rolebinding",
                binding,
                &format!("--clusterrole={role}"),
                &format!("--user={user}"),
            ],
            None,
        );
    }
    // `resource` or `resource:subresource`.
    let can = |user: &str, verb: &str, resource: &str| {
        let (resource, sub) = resource.split_once(':').unwrap_or((resource, ""));
        let sub = format!("--subresource={sub}");
        let who = format!("--as={user}");
        let mut args = vec!["auth", "can-i", verb, resource, "-n", "istio-system", &who];
        if sub != "--subresource=" {
            args.push(&sub);
        }
        let out = tb.kubectl(&args, None);
        match String::from_utf8_lossy(&out.stdout).trim() {
            "yes" => true,
            "no" => false,
            other => panic!(
                "kubectl auth can-i {args:?}: {other:?} {}",
                String::from_utf8_lossy(&out.stderr)
            ),
        }
    };
    let egw = "elasticgateways.spillway.io";
    let status = "elasticgateways.spillway.io:status";
    // The aggregation controller folds the rules in moments after the roles exist: a bound.
    wait_for("edit reaches ElasticGateways", 60, || async {
        can("alice", "create", egw)
    })
    .await;
    wait_for("view reaches ElasticGateways", 60, || async {
        can("bob", "list", egw)
    })
    .await;
    for verb in [
        "get", "list", "watch", "create", "update", "patch", "delete",
    ] {
        assert!(can("alice", verb, egw), "edit may {verb} ElasticGateways");
    }
    for verb in ["patch", "update"] {
        assert!(
            !can("alice", verb, status),
            "edit may not {verb} the status"
        );
        assert!(!can("bob", verb, status), "view may not {verb} the status");
    }
    for verb in ["create", "update", "patch", "delete"] {
        assert!(
            !can("bob", verb, egw),
            "view may not {verb} ElasticGateways"
        );
    }
    assert!(can("bob", "get", status), "view reads the status");
    // The user's own write, as the team would make it, is admitted.
    let mut mine = policy();
    mine["metadata"]["name"] = json!("team-edge");
    let out = tb.kubectl(&["apply", "-f", "-", "--as=alice"], Some(&mine.to_string()));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
