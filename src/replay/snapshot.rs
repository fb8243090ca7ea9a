//! `spillway drill --from-cluster`: the cluster as it is now, as a drill scenario.
//!
//! Read-only: one list of nodes, one of pods, the ElasticGateway and its target. The ECS pool's
//! nodes keep what the other workloads request on them (the gateway's own pods are left out: the
//! drill places those), the virtual nodes are kept as they are, and the gateway's replicas, pod
//! requests and policy come from the cluster.

use k8s_openapi::api::core::v1::{Node as KNode, Pod};
use kube::Client;
use kube::api::{Api, ListParams};
use kube::core::Selector;

use super::Error;
use crate::k8s::index::ClusterIndex;
use crate::model::{Node, Pool, Resources, classify_node};
use crate::policy::ElasticGateway;
use crate::sim::Scenario;
use crate::sim::scenario::{ClusterSpec, NodeGroup};

/// Capacity of one pod against the policy's target, when not given: the built-in scenario's
/// 700 rps per pod against a 500 rps target.
pub const CAPACITY_OVER_TARGET: f64 = 1.4;

/// What the cluster holds for one gateway.
pub struct Objects<'a> {
    pub egw: &'a ElasticGateway,
    pub nodes: &'a [KNode],
    pub pods: &'a [Pod],
    /// The target's `spec.replicas` (or `replicaCount`).
    pub replicas: i32,
    /// One gateway pod's requests, from the target's template.
    pub pod_requests: Resources,
    pub selector: Selector,
    /// Requests per second one pod serves; default: the target per replica × 1.4.
    pub capacity_per_pod_rps: Option<f64>,
    /// Unix time of the reads, for the scenario's name.
    pub at: f64,
}

fn show(sel: &std::collections::BTreeMap<String, String>) -> String {
    sel.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The scenario for these objects, or what is missing from the cluster.
pub fn scenario(o: &Objects<'_>) -> Result<Scenario, Error> {
    let ns = o.egw.metadata.namespace.clone().unwrap_or_default();
    let name = o.egw.metadata.name.clone().unwrap_or_default();
    let spec = &o.egw.spec;
    let mut index = ClusterIndex::new([ns.clone()]);
    index.nodes_init();
    for n in o.nodes {
        index.nodes_init_apply(n);
    }
    index.nodes_init_done();
    index.pods_init();
    for p in o.pods {
        index.pods_init_apply(p);
    }
    index.pods_init_done();
    let (ecs, eci) = (&spec.pools.ecs.node_selector, &spec.pools.eci.node_selector);
    let gateway = index.gateway_pods(&ns, &o.selector, ecs, eci);
    let mut kept: Vec<Node> = Vec::new();
    let (mut n_ecs, mut n_eci) = (0, 0);
    for node in index.nodes() {
        let pool = classify_node(node, ecs, eci);
        if !matches!(pool, Pool::Ecs | Pool::Eci) {
            continue;
        }
        let mut node = node.clone();
        // The gateway's own pods are the drill's to place.
        for p in gateway
            .iter()
            .filter(|p| p.node.as_deref() == Some(&node.name))
        {
            node.requested.sub(&p.requests);
        }
        match pool {
            Pool::Ecs => n_ecs += 1,
            _ => n_eci += 1,
        }
        kept.push(node);
    }
    if n_ecs == 0 {
        return Err(Error::Cluster(format!(
            "no node is in the ECS pool: none of the {} nodes has the labels {} (pools.ecs.nodeSelector of ElasticGateway {ns}/{name})",
            o.nodes.len(),
            show(ecs)
        )));
    }
    if n_eci == 0 {
        return Err(Error::Cluster(format!(
            "no node is in the ECI pool: none of the {} nodes has the labels {} (pools.eci.nodeSelector of ElasticGateway {ns}/{name}; is virtual-kubelet installed?)",
            o.nodes.len(),
            show(eci)
        )));
    }
    let target = spec.metrics.first().map_or(1.0, |m| m.target_per_replica);
    let base = Scenario::default();
    let mut s = Scenario {
        name: format!(
            "cluster snapshot of {ns}/{name} at {} ({n_ecs} ECS nodes, {n_eci} virtual)",
            crate::clock::rfc3339(o.at)
        ),
        cluster: ClusterSpec {
            ecs: NodeGroup {
                count: 0,
                ..NodeGroup::default()
            },
            workers: 0,
            virtual_nodes: 0,
            extra_nodes: kept,
        },
        policy: spec.clone(),
        ..base
    };
    s.gateway.replicas = o.replicas.max(1);
    s.gateway.cpu = format!("{}m", o.pod_requests.cpu_millis);
    s.gateway.memory = o.pod_requests.memory_bytes.to_string();
    s.gateway.capacity_per_pod_rps = o
        .capacity_per_pod_rps
        .unwrap_or(target * CAPACITY_OVER_TARGET);
    s.static_replicas = None;
    let errors = s.validate();
    if !errors.is_empty() {
        return Err(Error::Cluster(format!(
            "the scenario made from the cluster is invalid:\n{}",
            crate::config::render(&errors)
        )));
    }
    Ok(s)
}

/// Finds the ElasticGateway: `NS/NAME`, or a `NAME` unique across namespaces.
pub async fn find_gateway(client: &Client, gateway: &str) -> Result<ElasticGateway, Error> {
    let kube_err = |what: &str| {
        let what = what.to_string();
        move |e: kube::Error| Error::Kube {
            what: what.clone(),
            error: e.to_string(),
        }
    };
    if let Some((ns, name)) = gateway.split_once('/') {
        return Api::<ElasticGateway>::namespaced(client.clone(), ns)
            .get_opt(name)
            .await
            .map_err(kube_err(&format!("ElasticGateway {gateway}")))?
            .ok_or_else(|| Error::Cluster(format!("no ElasticGateway {name} in namespace {ns}")));
    }
    let all = Api::<ElasticGateway>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map_err(kube_err("ElasticGateways"))?;
    let mut found: Vec<ElasticGateway> = all
        .items
        .into_iter()
        .filter(|e| e.metadata.name.as_deref() == Some(gateway))
        .collect();
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(Error::Cluster(format!(
            "no ElasticGateway named {gateway} in any namespace"
        ))),
        n => Err(Error::Cluster(format!(
            "{n} ElasticGateways are named {gateway}; say which with --gateway NAMESPACE/{gateway}"
        ))),
    }
}

/// Reads the cluster (nodes, pods, the ElasticGateway and its target) and makes the scenario;
/// also returns the ElasticGateway's namespace.
pub async fn read(
    client: &Client,
    gateway: &str,
    capacity_per_pod_rps: Option<f64>,
    at: f64,
) -> Result<(Scenario, String), Error> {
    let egw = find_gateway(client, gateway).await?;
    let ns = egw.metadata.namespace.clone().unwrap_or_default();
    let kube_err = |what: &'static str| {
        move |e: kube::Error| Error::Kube {
            what: what.into(),
            error: e.to_string(),
        }
    };
    let view = crate::k8s::target::read(client, client, &ns, &egw.spec)
        .await
        .map_err(kube_err("the gateway workload"))?
        .ok_or_else(|| {
            Error::Cluster(format!(
                "the ElasticGateway's target {:?} {}/{} does not exist",
                egw.spec.target.kind, ns, egw.spec.target.name
            ))
        })?;
    let nodes = Api::<KNode>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map_err(kube_err("nodes"))?
        .items;
    let pods = Api::<Pod>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map_err(kube_err("pods"))?
        .items;
    let s = scenario(&Objects {
        egw: &egw,
        nodes: &nodes,
        pods: &pods,
        replicas: view.replicas,
        pod_requests: view.pod_requests,
        selector: view.selector,
        capacity_per_pod_rps,
        at,
    })?;
    Ok((s, ns))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(name: &str, labels: serde_json::Value) -> KNode {
        serde_json::from_value(json!({
            "metadata": {"name": name, "labels": labels},
            "status": {"allocatable": {"cpu": "8", "memory": "32Gi", "pods": "110"}},
        }))
        .unwrap()
    }

    fn pod(ns: &str, name: &str, node: &str, labels: serde_json::Value, cpu: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"namespace": ns, "name": name, "labels": labels},
            "spec": {"nodeName": node, "containers": [{"name": "c", "resources": {"requests": {"cpu": cpu, "memory": "1Gi"}}}]},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]},
        }))
        .unwrap()
    }

    #[test]
    fn the_snapshot_keeps_other_workloads_and_round_trips() {
        let egw = crate::policy::ElasticGateway::scenario_default();
        let nodes = vec![
            node("ecs-a", json!({"mykey4pod": "asmgateway"})),
            node("ecs-b", json!({"mykey4pod": "asmgateway"})),
            node("worker", json!({})),
            node("vk", json!({"type": "virtual-kubelet"})),
        ];
        let gw = json!({"app": "istio-ingressgateway"});
        let pods = vec![
            pod("istio-system", "gw-1", "ecs-a", gw.clone(), "2"),
            pod("istio-system", "gw-2", "ecs-b", gw.clone(), "2"),
            pod("default", "db", "ecs-a", json!({}), "3"),
            pod("default", "web", "worker", json!({}), "1"),
        ];
        let objects = Objects {
            egw: &egw,
            nodes: &nodes,
            pods: &pods,
            replicas: 2,
            pod_requests: Resources::pod(2000, 2 << 30),
            selector: Selector::from_iter([(
                "app".to_string(),
                "istio-ingressgateway".to_string(),
            )]),
            capacity_per_pod_rps: None,
            at: 1_795_165_200.0,
        };
        let s = scenario(&objects).unwrap();
        let names: Vec<&str> = s
            .cluster
            .extra_nodes
            .iter()
            .map(|n| n.name.as_str())
            .collect();
        assert_eq!(names, ["ecs-a", "ecs-b", "vk"]);
        // ecs-a keeps the database's 3 CPUs, not the gateway's 2.
        assert_eq!(s.cluster.extra_nodes[0].requested.cpu_millis, 3000);
        assert_eq!(s.cluster.extra_nodes[1].requested.cpu_millis, 0);
        assert_eq!(s.gateway.replicas, 2);
        assert_eq!(s.gateway.capacity_per_pod_rps, 700.0);
        assert_eq!(s.nodes().len(), 3);
        let yaml = serde_saphyr::to_string(&s).unwrap();
        let back = Scenario::parse(&yaml).unwrap();
        assert_eq!(back, s);

        let no_eci: Vec<KNode> = nodes[..3].to_vec();
        let e = scenario(&Objects {
            nodes: &no_eci,
            ..objects_again(&objects)
        })
        .unwrap_err();
        assert!(
            e.to_string().contains("no node is in the ECI pool")
                && e.to_string().contains("type=virtual-kubelet"),
            "{e}"
        );
        let no_ecs: Vec<KNode> = nodes[2..].to_vec();
        let e = scenario(&Objects {
            nodes: &no_ecs,
            ..objects_again(&objects)
        })
        .unwrap_err();
        assert!(
            e.to_string().contains("no node is in the ECS pool")
                && e.to_string().contains("mykey4pod=asmgateway"),
            "{e}"
        );
    }

    fn objects_again<'a>(o: &Objects<'a>) -> Objects<'a> {
        Objects {
            egw: o.egw,
            nodes: o.nodes,
            pods: o.pods,
            replicas: o.replicas,
            pod_requests: o.pod_requests,
            selector: o.selector.clone(),
            capacity_per_pod_rps: o.capacity_per_pod_rps,
            at: o.at,
        }
    }
}
