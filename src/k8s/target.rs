//! The gateway workload: read what the engine needs, write what it decided.
//!
//! A `Deployment` is read and scaled through `apps/v1` and its `scale` subresource; an ASM
//! `IstioGateway` (istio.alibabacloud.com/v1beta1) through its `spec.replicaCount`. In ASM the
//! IstioGateway lives on the mesh's own API server (the `mesh` client), and ASM renders it into
//! the Deployment `istio-<name>` of each data-plane cluster (the `data` client), whose rollout
//! and pod selector spillway reads there. Weights are
//! written with server-side apply under spillway's field manager, owning only the preferred
//! node-affinity terms and its own spread constraints (`placement.poolSpread`). Every write is absolute (a count, a weight, an annotation value), so a
//! retry after an error can neither lose nor double a change.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{Pod, PodSpec, PreferredSchedulingTerm};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Client;
use kube::api::{Api, DynamicObject, EvictParams, ListParams, Patch, PatchParams};
use kube::discovery::ApiResource;
use serde_json::{Value, json};

use kube::core::Selector;

use super::index::pod_requests;
use crate::model::{POD_DELETION_COST, Resources, quantity};
use crate::policy::{ElasticGatewaySpec, PoolWeights, TargetKind};

/// spillway's field manager for server-side apply.
pub const FIELD_MANAGER: &str = "spillway";

/// What the engine needs from the workload.
#[derive(Clone, Debug, PartialEq)]
pub struct TargetView {
    pub replicas: i32,
    pub pod_requests: Resources,
    pub weights: Option<PoolWeights>,
    pub rollout_in_progress: bool,
    pub selector: Selector,
    /// The pod template's preferred node-affinity terms as they are now (all of them).
    pub preferred_terms: Vec<PreferredSchedulingTerm>,
    /// ASM's own autoscaling settings on an IstioGateway (ASM then runs an HPA on the gateway),
    /// as `field=value` pairs; empty when there are none.
    pub asm_autoscaling: Vec<String>,
    /// The workload's UID: a target deleted and made again under the same name is another.
    pub uid: Option<String>,
    /// The field managers of the replica count where spillway writes it (the Deployment's
    /// `spec.replicas`, or an ASM-managed IstioGateway's `spec.replicaCount`).
    pub replica_writers: Vec<ReplicaWriter>,
    /// That object's generation: it moves whenever its spec (the count included) changes.
    pub generation: Option<i64>,
    /// `placement.poolSpread`: the constraints spillway's apply carries ([`pool_spread`]).
    pub spread: PoolSpread,
}

/// The pool spread constraints against the template as it is: which of them spillway's apply
/// carries when it writes them (those the gateway has no entry of its own for, on the same
/// key), which of those the template holds now, and whether any is not in the template yet
/// (adoption still to do, or another writer took them out).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PoolSpread {
    pub to_apply: Vec<Value>,
    pub in_place: Vec<Value>,
    pub missing: bool,
}

impl PoolSpread {
    /// What an apply of the weights carries: all of [`Self::to_apply`] when the engine adopts
    /// the spread with this write or wrote it and the template read does not show it yet (the
    /// forced apply would otherwise take out what spillway's field manager owns), otherwise
    /// only what the template holds. A weight change before the quiet time, or after another
    /// writer removed the entries, must not write them back behind the engine's back (a fight
    /// with that writer, and a rollout it did not plan).
    pub fn carried(&self, adopt: bool) -> &[Value] {
        if adopt {
            &self.to_apply
        } else {
            &self.in_place
        }
    }
}

/// One of spillway's spread constraints as the API takes it: soft, over the pods of the
/// gateway's own ReplicaSet (its selector and `pod-template-hash`, as the system defaults count).
fn spread_entry(key: &str, max_skew: i64, selector: &Value) -> Value {
    json!({
        "maxSkew": max_skew,
        "topologyKey": key,
        "whenUnsatisfiable": "ScheduleAnyway",
        "labelSelector": selector,
        "matchLabelKeys": ["pod-template-hash"],
    })
}

/// [`PoolSpread`] for a pod spec and the Deployment's selector.
pub fn pool_spread(
    policy: &ElasticGatewaySpec,
    pod: Option<&PodSpec>,
    selector: &Value,
) -> PoolSpread {
    let have: Vec<Value> = pod
        .and_then(|p| p.topology_spread_constraints.as_ref())
        .map(|cs| {
            cs.iter()
                .filter_map(|c| serde_json::to_value(c).ok())
                .collect()
        })
        .unwrap_or_default();
    let mut out = PoolSpread::default();
    for c in policy.pool_spread_constraints() {
        let ours = spread_entry(&c.topology_key, c.max_skew, selector);
        let same_key = have.iter().find(|h| {
            h["topologyKey"] == ours["topologyKey"] && h["whenUnsatisfiable"] == "ScheduleAnyway"
        });
        match same_key {
            // The gateway's own entry on this key: kept as it is, not taken over.
            Some(h) if !same_entry(h, &ours) => {}
            Some(_) => {
                out.in_place.push(ours.clone());
                out.to_apply.push(ours);
            }
            None => {
                out.missing = true;
                out.to_apply.push(ours);
            }
        }
    }
    out
}

/// The pool affinity term spillway writes into an IstioGateway's
/// `affinity.podAffinity.preferredDuringSchedulingIgnoredDuringExecution`: toward the gateway's
/// own pods (`selector`), over the ECS pool's label key.
fn affinity_entry(key: &str, weight: i32, selector: &Value) -> Value {
    json!({
        "weight": weight,
        "podAffinityTerm": {"topologyKey": key, "labelSelector": selector},
    })
}

/// [`PoolSpread`] for an IstioGateway's spec: the preferred pod-affinity list spillway's apply
/// carries (the gateway's own entries as they are, then spillway's term: the list is one value
/// in the CRD), and whether spillway's term is missing.
pub fn pool_affinity(policy: &ElasticGatewaySpec, spec: &Value, selector: &Value) -> PoolSpread {
    let ours: Vec<Value> = policy
        .pool_affinity()
        .iter()
        .map(|a| affinity_entry(&a.topology_key, a.weight, selector))
        .collect();
    if ours.is_empty() {
        return PoolSpread::default();
    }
    let have = own_affinity(spec, policy, selector);
    let mut out = PoolSpread {
        to_apply: have.clone(),
        in_place: have.clone(),
        missing: false,
    };
    let present =
        spec["affinity"]["podAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
            .as_array()
            .cloned()
            .unwrap_or_default();
    for o in ours {
        if present.contains(&o) {
            out.in_place.push(o.clone());
        } else {
            out.missing = true;
        }
        out.to_apply.push(o);
    }
    out
}

/// The gateway's own preferred pod-affinity entries: all but spillway's.
pub fn own_affinity(spec: &Value, policy: &ElasticGatewaySpec, selector: &Value) -> Vec<Value> {
    let keys = policy.pools.ecs.node_selector.keys().next().cloned();
    spec["affinity"]["podAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|e| {
            keys.as_deref().is_none_or(|k| {
                *e != affinity_entry(k, crate::policy::POOL_AFFINITY_WEIGHT, selector)
            })
        })
        .collect()
}

/// Whether an entry read back from the API server is the one spillway writes.
fn same_entry(have: &Value, ours: &Value) -> bool {
    [
        "maxSkew",
        "topologyKey",
        "whenUnsatisfiable",
        "labelSelector",
        "matchLabelKeys",
    ]
    .iter()
    .all(|k| have[k] == ours[k])
}

/// A field manager that owns the replica count, from the object's managedFields.
#[derive(Clone, Debug, PartialEq)]
pub struct ReplicaWriter {
    pub manager: String,
    /// `Update` or `Apply`.
    pub operation: String,
    /// `scale` when written through the scale subresource.
    pub subresource: Option<String>,
    /// Unix seconds of its last write, when the API server records one (it does not for
    /// writes through the scale subresource).
    pub at: Option<f64>,
}

/// The managers of the field `spec.<field>` in an object's managedFields.
pub fn replica_writers(meta: &ObjectMeta, field: &str) -> Vec<ReplicaWriter> {
    let key = format!("f:{field}");
    meta.managed_fields
        .iter()
        .flatten()
        .filter(|m| {
            m.fields_v1
                .as_ref()
                .and_then(|f| serde_json::to_value(f).ok())
                .is_some_and(|v: Value| v["f:spec"].get(&key).is_some())
        })
        .map(|m| ReplicaWriter {
            manager: m.manager.clone().unwrap_or_default(),
            operation: m.operation.clone().unwrap_or_default(),
            subresource: m.subresource.clone().filter(|s| !s.is_empty()),
            at: m.time.as_ref().map(|t| t.0.as_second() as f64),
        })
        .collect()
}

/// ASM's annotation on an IstioGateway: `"false"` stops ASM from copying `replicaCount` into the
/// rendered Deployment (ASM 1.19 and later, for HPAs or manual scaling); spillway then reads and
/// scales that Deployment in the data plane instead.
pub const ASM_REPLICAS_MANAGED: &str = "asm.alibabacloud.com/replicas-managed-by-asm";

/// Whether ASM copies the IstioGateway's `replicaCount` into the rendered Deployment (the
/// default).
pub fn replicas_managed_by_asm(g: &DynamicObject) -> bool {
    g.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ASM_REPLICAS_MANAGED))
        .map(|v| v.trim())
        != Some("false")
}

/// The Deployment ASM renders from the IstioGateway `name` in each data-plane cluster.
pub fn rendered_deployment(name: &str) -> String {
    format!("istio-{name}")
}

/// The IstioGateway's fields that turn on ASM's autoscaling (ASM's CRD reference: with a target
/// utilisation set, ASM creates an HPA for the gateway's Deployment).
const ASM_AUTOSCALING_FIELDS: [(&str, &str); 2] = [
    ("cpu", "targetAverageUtilization"),
    ("memory", "targetAverageUtilization"),
];

/// ASM's IstioGateway, for the dynamic API (no typed binding ships for it).
pub fn istio_gateway_resource() -> ApiResource {
    ApiResource {
        group: "istio.alibabacloud.com".into(),
        version: "v1beta1".into(),
        api_version: "istio.alibabacloud.com/v1beta1".into(),
        kind: "IstioGateway".into(),
        plural: "istiogateways".into(),
    }
}

/// Reads the target from the API servers: the Deployment, or the IstioGateway (on `mesh`) and
/// the Deployment ASM renders from it (on `data`). `None`: the target does not exist.
pub async fn read(
    mesh: &Client,
    data: &Client,
    ns: &str,
    policy: &ElasticGatewaySpec,
) -> Result<Option<TargetView>, kube::Error> {
    let name = &policy.target.name;
    let deployments = Api::<Deployment>::namespaced(data.clone(), ns);
    match policy.target.kind {
        TargetKind::Deployment => Ok(deployments
            .get_opt(name)
            .await?
            .and_then(|d| assemble(policy, Some(&d), None, None))),
        TargetKind::IstioGateway => {
            let gateway = read_istio_gateway(mesh, ns, name).await?;
            let rendered = match &gateway {
                Some(_) => deployments.get_opt(&rendered_deployment(name)).await?,
                None => None,
            };
            Ok(assemble(policy, None, gateway.as_ref(), rendered.as_ref()))
        }
    }
}

/// The IstioGateway `ns/name` on the mesh's API server.
pub async fn read_istio_gateway(
    mesh: &Client,
    ns: &str,
    name: &str,
) -> Result<Option<DynamicObject>, kube::Error> {
    Api::<DynamicObject>::namespaced_with(mesh.clone(), ns, &istio_gateway_resource())
        .get_opt(name)
        .await
}

/// The view of the target from the objects read: its Deployment (kind Deployment), or its
/// IstioGateway and the Deployment ASM rendered from it (which may not be there yet). `None`:
/// the target does not exist.
pub fn assemble(
    policy: &ElasticGatewaySpec,
    deployment: Option<&Deployment>,
    gateway: Option<&DynamicObject>,
    rendered: Option<&Deployment>,
) -> Option<TargetView> {
    let name = &policy.target.name;
    let mut view = match policy.target.kind {
        TargetKind::Deployment => deployment_view(deployment?, policy),
        TargetKind::IstioGateway => {
            let g = gateway?;
            let mut view = istio_gateway_view(&g.data, name, policy);
            view.uid = g.metadata.uid.clone();
            view.replica_writers = replica_writers(&g.metadata, "replicaCount");
            view.generation = g.metadata.generation;
            // What ASM rendered: its rollout and its selector, when it is there yet; and its
            // replicas, when ASM leaves them to others.
            if let Some(d) = rendered {
                let rendered = deployment_view(d, policy);
                view.rollout_in_progress = rendered.rollout_in_progress;
                if !rendered.selector.to_string().is_empty() {
                    view.selector = rendered.selector;
                }
                if !replicas_managed_by_asm(g) {
                    // spillway scales the rendered Deployment: its writers are the ones that count.
                    view.replicas = rendered.replicas;
                    view.replica_writers = rendered.replica_writers;
                    view.generation = rendered.generation;
                }
            }
            view
        }
    };
    if let Some(sel) = &policy.target.pod_selector {
        view.selector = Selector::from_iter(sel.clone());
    }
    Some(view)
}

/// What to grant when spillway may not change the target: the Role, the rule and the name.
pub fn rbac_hint(policy: &ElasticGatewaySpec, ns: &str) -> String {
    let name = &policy.target.name;
    let (what, chart) = match policy.target.kind {
        TargetKind::Deployment => (
            "deployments and deployments/scale (apps)",
            "gatewayWorkloads.deployments",
        ),
        TargetKind::IstioGateway => (
            "istiogateways (istio.alibabacloud.com)",
            "gatewayWorkloads.istioGateways",
        ),
    };
    format!(
        "add {name} to the resourceNames of the rule for {what} in the Role spillway-gateway in {ns} (deploy/rbac.yaml; the chart's {chart}), with the verbs get and patch"
    )
}

/// The Deployments the target's view is read from: the target, or the one ASM renders.
pub fn workload_names(policy: &ElasticGatewaySpec) -> Vec<String> {
    match policy.target.kind {
        TargetKind::Deployment => vec![policy.target.name.clone()],
        TargetKind::IstioGateway => vec![rendered_deployment(&policy.target.name)],
    }
}

/// The scale targets an HPA on this gateway would name: `(kind, name)`.
pub fn autoscaler_targets(policy: &ElasticGatewaySpec) -> Vec<(&'static str, String)> {
    let name = &policy.target.name;
    match policy.target.kind {
        TargetKind::Deployment => vec![("Deployment", name.clone())],
        TargetKind::IstioGateway => vec![
            ("IstioGateway", name.clone()),
            ("Deployment", rendered_deployment(name)),
        ],
    }
}

/// Deployment → view. A rollout is in progress while the controller has not observed the
/// latest generation or pods of an older template remain.
pub fn deployment_view(d: &Deployment, policy: &ElasticGatewaySpec) -> TargetView {
    // k8s-openapi's v1_37 types hold `spec` directly (1.37 made it required in the schema).
    let spec = Some(&d.spec);
    let status = d.status.as_ref();
    let replicas = spec.and_then(|s| s.replicas).unwrap_or(1);
    let pod_spec = spec.and_then(|s| s.template.spec.as_ref());
    let generation = d.metadata.generation.unwrap_or(0);
    let observed = status.and_then(|s| s.observed_generation).unwrap_or(0);
    let total = status.and_then(|s| s.replicas).unwrap_or(0);
    let updated = status.and_then(|s| s.updated_replicas).unwrap_or(0);
    let selector = spec.map(|s| &s.selector);
    let selector_json = selector
        .and_then(|s| serde_json::to_value(s).ok())
        .unwrap_or(Value::Null);
    TargetView {
        spread: pool_spread(policy, pod_spec, &selector_json),
        replicas,
        preferred_terms: pod_spec
            .and_then(|p| p.affinity.as_ref()?.node_affinity.as_ref())
            .and_then(|a| {
                a.preferred_during_scheduling_ignored_during_execution
                    .clone()
            })
            .unwrap_or_default(),
        pod_requests: pod_spec.map(pod_requests).unwrap_or_default(),
        weights: pod_spec.and_then(|p| weights_from_pod_spec(p, policy)),
        rollout_in_progress: observed < generation || total > updated,
        asm_autoscaling: vec![],
        uid: d.metadata.uid.clone(),
        replica_writers: replica_writers(&d.metadata, "replicas"),
        generation: d.metadata.generation,
        // A selector kube cannot parse (an unknown operator) selects nothing, rather than more.
        selector: selector
            .cloned()
            .and_then(|s| Selector::try_from(s).ok())
            .unwrap_or_default(),
    }
}

/// IstioGateway → view. ASM labels the gateway's pods `istio=<name>` unless the policy says
/// otherwise; rollouts are ASM's to run and are not visible here.
pub fn istio_gateway_view(data: &Value, name: &str, policy: &ElasticGatewaySpec) -> TargetView {
    let spec = &data["spec"];
    let req = &spec["resources"]["requests"];
    let cpu = req["cpu"]
        .as_str()
        .and_then(|q| quantity::cpu_millis(q).ok())
        .or_else(|| req["cpu"].as_f64().map(|c| (c * 1000.0) as i64));
    let mem = req["memory"].as_str().and_then(|q| quantity::bytes(q).ok());
    let preferred =
        spec["affinity"]["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"].clone();
    let terms: Vec<k8s_openapi::api::core::v1::PreferredSchedulingTerm> =
        serde_json::from_value(preferred).unwrap_or_default();
    TargetView {
        // Unvalidated by any schema we know: out of i32's range or negative reads as unset.
        replicas: spec["replicaCount"]
            .as_i64()
            .and_then(|r| i32::try_from(r).ok())
            .filter(|r| *r >= 0)
            .unwrap_or(1),
        pod_requests: Resources::pod(cpu.unwrap_or(0), mem.unwrap_or(0)),
        weights: weights_from_terms(&terms, policy),
        preferred_terms: terms,
        rollout_in_progress: false,
        selector: Selector::from_iter([("istio".to_string(), name.to_string())]),
        asm_autoscaling: ASM_AUTOSCALING_FIELDS
            .iter()
            .filter_map(|(group, field)| {
                let v = &spec[group][field];
                let set = v.as_f64().is_some_and(|x| x > 0.0)
                    || v.as_str().is_some_and(|x| !x.trim().is_empty());
                set.then(|| format!("spec.{group}.{field}={v}"))
            })
            .collect(),
        uid: data["metadata"]["uid"].as_str().map(String::from),
        replica_writers: vec![],
        generation: None,
        // ASM renders the template from `affinity`: a pod affinity, not spread constraints.
        spread: pool_affinity(policy, spec, &istio_selector(name)),
    }
}

/// The label selector of an IstioGateway's pods, as its pod-affinity term names them.
fn istio_selector(name: &str) -> Value {
    json!({"matchLabels": {"istio": name}})
}

fn weights_from_pod_spec(p: &PodSpec, policy: &ElasticGatewaySpec) -> Option<PoolWeights> {
    let terms = p
        .affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .preferred_during_scheduling_ignored_during_execution
        .as_ref()?;
    weights_from_terms(terms, policy)
}

/// The weights of the two preferred terms that select the policy's pools, if both are there.
fn weights_from_terms(
    terms: &[k8s_openapi::api::core::v1::PreferredSchedulingTerm],
    policy: &ElasticGatewaySpec,
) -> Option<PoolWeights> {
    let find = |sel: &BTreeMap<String, String>| {
        terms.iter().find(|t| {
            let exprs = t
                .preference
                .match_expressions
                .as_deref()
                .unwrap_or_default();
            !sel.is_empty()
                && sel.iter().all(|(k, v)| {
                    exprs.iter().any(|e| {
                        e.key == *k
                            && e.operator == "In"
                            && e.values.as_deref() == Some(std::slice::from_ref(v))
                    })
                })
        })
    };
    Some(PoolWeights {
        ecs: find(&policy.pools.ecs.node_selector)?.weight,
        eci: find(&policy.pools.eci.node_selector)?.weight,
    })
}

/// The preferred terms spillway applies: one per pool, as the scenario's operator writes them.
pub fn preferred_terms(policy: &ElasticGatewaySpec, w: PoolWeights) -> Value {
    let term = |sel: &BTreeMap<String, String>, weight: i32| {
        json!({
            "weight": weight,
            "preference": {"matchExpressions": sel.iter().map(|(k, v)| json!({"key": k, "operator": "In", "values": [v]})).collect::<Vec<_>>()}
        })
    };
    json!([
        term(&policy.pools.ecs.node_selector, w.ecs),
        term(&policy.pools.eci.node_selector, w.eci)
    ])
}

/// Sets the replica count (`dry_run`: the API server checks the write and keeps nothing). An
/// IstioGateway's `replicaCount` is set on the mesh, unless ASM leaves the replicas to others
/// ([`ASM_REPLICAS_MANAGED`]): then the rendered Deployment is scaled in the data plane.
pub async fn scale(
    mesh: &Client,
    data: &Client,
    ns: &str,
    policy: &ElasticGatewaySpec,
    replicas: i32,
    dry_run: bool,
) -> Result<(), kube::Error> {
    let name = &policy.target.name;
    // Named, so that the replica count's managedFields say spillway wrote it.
    let pp = PatchParams {
        dry_run,
        field_manager: Some(FIELD_MANAGER.into()),
        ..PatchParams::default()
    };
    let scale_deployment = |d: &str| {
        let patch = json!({"spec": {"replicas": replicas}});
        let api = Api::<Deployment>::namespaced(data.clone(), ns);
        let (d, pp) = (d.to_string(), pp.clone());
        async move {
            api.patch_scale(&d, &pp, &Patch::Merge(&patch)).await?;
            Ok::<(), kube::Error>(())
        }
    };
    match policy.target.kind {
        TargetKind::Deployment => scale_deployment(name).await?,
        TargetKind::IstioGateway => {
            let api =
                Api::<DynamicObject>::namespaced_with(mesh.clone(), ns, &istio_gateway_resource());
            let g = api.get(name).await?;
            if replicas_managed_by_asm(&g) {
                api.patch(
                    name,
                    &pp,
                    &Patch::Merge(json!({"spec": {"replicaCount": replicas}})),
                )
                .await?;
            } else {
                scale_deployment(&rendered_deployment(name)).await?;
            }
        }
    }
    Ok(())
}

/// Applies the preferred weights (server-side apply, spillway's field manager, forced: the list
/// is atomic, and the policy makes spillway its owner).
pub async fn apply_weights(
    client: &Client,
    ns: &str,
    policy: &ElasticGatewaySpec,
    w: PoolWeights,
    spread: &[Value],
) -> Result<(), kube::Error> {
    let name = &policy.target.name;
    let terms = preferred_terms(policy, w);
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    match policy.target.kind {
        TargetKind::Deployment => {
            // Every apply carries every field spillway owns: one left out would be removed.
            let mut pod = json!({"affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": terms}}});
            if !spread.is_empty() {
                pod["topologySpreadConstraints"] = json!(spread);
            }
            let patch = json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": name, "namespace": ns},
                "spec": {"template": {"spec": pod}}
            });
            Api::<Deployment>::namespaced(client.clone(), ns)
                .patch(name, &pp, &Patch::Apply(&patch))
                .await?;
        }
        TargetKind::IstioGateway => {
            let mut affinity =
                json!({"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": terms}});
            if !spread.is_empty() {
                affinity["podAffinity"] =
                    json!({"preferredDuringSchedulingIgnoredDuringExecution": spread});
            }
            let patch = json!({
                "apiVersion": "istio.alibabacloud.com/v1beta1", "kind": "IstioGateway",
                "metadata": {"name": name, "namespace": ns},
                "spec": {"affinity": affinity}
            });
            let api = Api::<DynamicObject>::namespaced_with(
                client.clone(),
                ns,
                &istio_gateway_resource(),
            );
            api.patch(name, &pp, &Patch::Apply(&patch)).await?;
        }
    }
    Ok(())
}

/// Hands the preferred node-affinity terms back as they were before spillway's first change:
/// applies `original` under spillway's field manager, or, when there were none, an apply without
/// them, which removes the list spillway owns. The apply carries no spread constraints: those
/// spillway wrote go, the gateway's own stay.
pub async fn restore_preferred_terms(
    client: &Client,
    ns: &str,
    policy: &ElasticGatewaySpec,
    original: &[PreferredSchedulingTerm],
) -> Result<(), kube::Error> {
    let name = &policy.target.name;
    let affinity = if original.is_empty() {
        json!({})
    } else {
        json!({"affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": original}}})
    };
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    match policy.target.kind {
        TargetKind::Deployment => {
            let patch = json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": name, "namespace": ns},
                "spec": {"template": {"spec": affinity}}
            });
            Api::<Deployment>::namespaced(client.clone(), ns)
                .patch(name, &pp, &Patch::Apply(&patch))
                .await?;
        }
        TargetKind::IstioGateway => {
            let api = Api::<DynamicObject>::namespaced_with(
                client.clone(),
                ns,
                &istio_gateway_resource(),
            );
            // The preferred pod-affinity list is one value in the CRD and spillway's apply took
            // it whole: the gateway's own entries go back with this apply, spillway's term not.
            let mut affinity = affinity;
            if let Some(g) = api.get_opt(name).await? {
                let data = serde_json::to_value(&g).unwrap_or_default();
                let own = own_affinity(&data["spec"], policy, &istio_selector(name));
                if !own.is_empty() {
                    affinity["affinity"]["podAffinity"] =
                        json!({"preferredDuringSchedulingIgnoredDuringExecution": own});
                }
            }
            let patch = json!({
                "apiVersion": "istio.alibabacloud.com/v1beta1", "kind": "IstioGateway",
                "metadata": {"name": name, "namespace": ns},
                "spec": affinity
            });
            api.patch(name, &pp, &Patch::Apply(&patch)).await?;
        }
    }
    Ok(())
}

/// Removes a pod's deletion-cost annotation (a merge patch setting it to null; a no-op when it
/// is absent).
pub async fn clear_deletion_cost(client: &Client, ns: &str, pod: &str) -> Result<(), kube::Error> {
    let patch = json!({"metadata": {"annotations": {POD_DELETION_COST: null}}});
    Api::<Pod>::namespaced(client.clone(), ns)
        .patch(pod, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(())
}

/// Sets a pod's deletion cost (a merge patch of one annotation; nothing else is touched).
pub async fn set_deletion_cost(
    client: &Client,
    ns: &str,
    pod: &str,
    cost: i32,
) -> Result<(), kube::Error> {
    let patch = json!({"metadata": {"annotations": {POD_DELETION_COST: cost.to_string()}}});
    Api::<Pod>::namespaced(client.clone(), ns)
        .patch(pod, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(())
}

/// Evicts a pod through the Eviction API, which honours PodDisruptionBudgets (429 when one
/// forbids it).
pub async fn evict(client: &Client, ns: &str, pod: &str) -> Result<(), kube::Error> {
    Api::<Pod>::namespaced(client.clone(), ns)
        .evict(pod, &EvictParams::default())
        .await?;
    Ok(())
}

/// The HorizontalPodAutoscalers in `ns` (of the data plane) that scale the target, by name: for
/// an IstioGateway, those on it and those on the Deployment ASM renders from it.
pub async fn competing_hpas(
    client: &Client,
    ns: &str,
    policy: &ElasticGatewaySpec,
) -> Result<Vec<String>, kube::Error> {
    let targets = autoscaler_targets(policy);
    let hpas = Api::<HorizontalPodAutoscaler>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await?;
    Ok(hpas
        .items
        .into_iter()
        .filter(|h| {
            let r = &h.spec.scale_target_ref;
            targets.iter().any(|(k, n)| r.kind == *k && r.name == *n)
        })
        .filter_map(|h| h.metadata.name)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::ElasticGateway;

    fn deployment(generation: i64, observed: i64, total: i32, updated: i32) -> Deployment {
        let policy = ElasticGateway::scenario_default().spec;
        serde_json::from_value(json!({
            "metadata": {"name": "istio-ingressgateway", "namespace": "istio-system", "generation": generation},
            "spec": {
                "replicas": 4,
                "selector": {"matchLabels": {"app": "istio-ingressgateway"}},
                "template": {
                    "metadata": {"labels": {"app": "istio-ingressgateway"}},
                    "spec": {
                        "containers": [{"name": "istio-proxy", "resources": {"requests": {"cpu": "2", "memory": "2Gi"}}}],
                        "affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": preferred_terms(&policy, PoolWeights { ecs: 80, eci: 20 })}}
                    }
                }
            },
            "status": {"observedGeneration": observed, "replicas": total, "updatedReplicas": updated}
        }))
        .unwrap()
    }

    #[test]
    fn a_deployment_reads_as_the_engine_needs_it() {
        let policy = ElasticGateway::scenario_default().spec;
        let v = deployment_view(&deployment(3, 3, 4, 4), &policy);
        assert_eq!(v.replicas, 4);
        assert_eq!(v.pod_requests, Resources::pod(2000, 2 << 30));
        assert_eq!(v.weights, Some(PoolWeights { ecs: 80, eci: 20 }));
        assert!(!v.rollout_in_progress);
        assert_eq!(v.selector.to_string(), "app=istio-ingressgateway");
        assert!(deployment_view(&deployment(4, 3, 4, 4), &policy).rollout_in_progress);
        assert!(deployment_view(&deployment(3, 3, 6, 2), &policy).rollout_in_progress);
    }

    /// `placement.poolSpread` against the template: added where the gateway has no entry of
    /// its own on the key, kept (and carried by every apply) once written, never taking over
    /// the gateway's own entry.
    #[test]
    fn the_pool_spread_composes_with_the_gateways_own_constraints() {
        let mut policy = ElasticGateway::scenario_default().spec;
        policy.target.kind = TargetKind::Deployment;
        let sel = json!({"matchLabels": {"app": "istio-ingressgateway"}});
        let spec = |cs: Value| -> PodSpec {
            serde_json::from_value(json!({"containers": [], "topologySpreadConstraints": cs}))
                .unwrap()
        };
        let none = pool_spread(&policy, Some(&spec(json!([]))), &sel);
        assert!(none.missing);
        let keys = |p: &PoolSpread| -> Vec<String> {
            p.to_apply
                .iter()
                .map(|c| c["topologyKey"].as_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(keys(&none), ["mykey4pod", "kubernetes.io/hostname"]);
        assert_eq!(none.to_apply[1]["labelSelector"], sel);
        assert_eq!(
            none.to_apply[1]["matchLabelKeys"],
            json!(["pod-template-hash"])
        );
        // Only the adopting write carries what is missing.
        assert_eq!(none.carried(true), none.to_apply);
        assert!(none.carried(false).is_empty());
        // Written: nothing missing, and every apply still carries both.
        let written = pool_spread(&policy, Some(&spec(json!(none.to_apply))), &sel);
        assert!(!written.missing);
        assert_eq!(written.to_apply, none.to_apply);
        assert_eq!(written.carried(false), none.to_apply);
        // One taken out by another writer: a weight change carries the other one only.
        let one_left = pool_spread(&policy, Some(&spec(json!([none.to_apply[0]]))), &sel);
        assert!(one_left.missing);
        assert_eq!(one_left.carried(false), &none.to_apply[..1]);
        // The gateway's own soft hostname entry stays its own; a hard one is another key.
        let own = json!([{"maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
            "whenUnsatisfiable": "ScheduleAnyway", "labelSelector": sel}]);
        let composed = pool_spread(&policy, Some(&spec(own)), &sel);
        assert!(composed.missing);
        assert_eq!(keys(&composed), ["mykey4pod"]);
        let hard = json!([{"maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
            "whenUnsatisfiable": "DoNotSchedule", "labelSelector": sel}]);
        assert_eq!(
            keys(&pool_spread(&policy, Some(&spec(hard)), &sel)),
            ["mykey4pod", "kubernetes.io/hostname"]
        );
        policy.placement.pool_spread = false;
        assert_eq!(
            pool_spread(&policy, Some(&spec(json!([]))), &sel),
            PoolSpread::default()
        );
    }

    #[test]
    fn weights_need_both_pool_terms() {
        let mut policy = ElasticGateway::scenario_default().spec;
        let d = deployment(1, 1, 4, 4);
        policy.pools.eci.node_selector = [("type".to_string(), "other".to_string())].into();
        assert_eq!(deployment_view(&d, &policy).weights, None);
    }

    #[test]
    /// An IstioGateway's pool affinity: the gateway's own preferred pod-affinity entries are
    /// carried as they are (the list is one value in the CRD), spillway's term after them;
    /// missing until the spec has it; off with `placement.poolSpread`.
    fn an_istio_gateway_gets_the_pool_affinity_beside_its_own() {
        let mut policy = ElasticGateway::scenario_default().spec;
        let sel = istio_selector("ingressgateway");
        let own = json!({"weight": 10, "podAffinityTerm": {"topologyKey": "topology.kubernetes.io/zone",
            "labelSelector": {"matchLabels": {"app": "cache"}}}});
        let spec = |entries: Value| json!({"affinity": {"podAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": entries}}});
        let ours = affinity_entry("mykey4pod", 100, &sel);
        let fresh = pool_affinity(&policy, &spec(json!([own.clone()])), &sel);
        assert!(fresh.missing);
        assert_eq!(fresh.to_apply, vec![own.clone(), ours.clone()]);
        assert_eq!(fresh.carried(false), vec![own.clone()]);
        let written = pool_affinity(&policy, &spec(json!([own.clone(), ours.clone()])), &sel);
        assert!(!written.missing);
        assert_eq!(written.to_apply, vec![own.clone(), ours.clone()]);
        assert_eq!(
            own_affinity(&spec(json!([own.clone(), ours])), &policy, &sel),
            vec![own.clone()]
        );
        let view = istio_gateway_view(&json!({"spec": spec(json!([]))}), "ingressgateway", &policy);
        assert!(view.spread.missing);
        policy.placement.pool_spread = false;
        assert_eq!(
            pool_affinity(&policy, &spec(json!([own])), &sel),
            PoolSpread::default()
        );
    }

    #[test]
    fn an_istio_gateway_reads_too() {
        let policy = ElasticGateway::scenario_default().spec;
        let data = json!({"spec": {"replicaCount": 6, "resources": {"requests": {"cpu": "2", "memory": "4Gi"}},
            "affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": preferred_terms(&policy, PoolWeights { ecs: 70, eci: 30 })}}}});
        let v = istio_gateway_view(&data, "ingressgateway", &policy);
        assert_eq!(
            (v.replicas, v.pod_requests, v.weights),
            (
                6,
                Resources::pod(2000, 4 << 30),
                Some(PoolWeights { ecs: 70, eci: 30 })
            )
        );
        assert_eq!(v.selector.to_string(), "istio=ingressgateway");
        assert!(v.asm_autoscaling.is_empty());
        let autoscaled = json!({"spec": {"replicaCount": 2, "cpu": {"targetAverageUtilization": 80},
            "memory": {"targetAverageUtilization": 0}, "maxReplicas": 10}});
        let v = istio_gateway_view(&autoscaled, "ingressgateway", &policy);
        assert_eq!(
            v.asm_autoscaling,
            vec!["spec.cpu.targetAverageUtilization=80"]
        );
    }
}
