//! `spillway doctor`: for one ElasticGateway, what works and what will not, against the live
//! cluster(s) and Prometheus, one line per check. A check that fails is one that would stop the
//! agent (hold it forever, or keep it from scaling); a warning is worth knowing but does not.
//!
//! Every check runs the agent's own code where it can (the same queries through the same client,
//! the same target read, the same HPA lookup) and writes only in dry-run mode.

use std::fmt;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node as KNode, Pod, Service};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::k8s::index::ClusterIndex;
use crate::k8s::{bounded, is_status, target};
use crate::model::LoadSample;
use crate::policy::{ElasticGateway, TargetKind};
use crate::prom::Prometheus;

mod balancer;
mod drain;
mod warmup;

/// How one check came out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Ok,
    /// Worth knowing; the agent runs.
    Warn,
    /// The agent would hold, or could not scale.
    Fail,
    /// Not applicable here.
    Skip,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Outcome::Ok => "ok  ",
            Outcome::Warn => "warn",
            Outcome::Fail => "FAIL",
            Outcome::Skip => "skip",
        }
    }
}

/// One line of the report.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Check {
    pub outcome: Outcome,
    /// What was checked: `prometheus rps`, `pools`, `target`, …
    pub what: String,
    pub detail: String,
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.outcome.label(), self.what, self.detail)
    }
}

/// Every check, in order.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub checks: Vec<Check>,
}

/// [`Report`] for machines (`spillway doctor -o json`): the gateway, every check, and whether
/// any would stop the agent.
#[derive(serde::Serialize)]
pub struct JsonReport<'a> {
    pub gateway: String,
    pub prometheus: String,
    pub checks: &'a [Check],
    pub failed: bool,
}

impl Report {
    fn push(&mut self, outcome: Outcome, what: impl Into<String>, detail: impl Into<String>) {
        self.checks.push(Check {
            outcome,
            what: what.into(),
            detail: detail.into(),
        });
    }

    /// Whether any check would stop the agent.
    pub fn failed(&self) -> bool {
        self.checks.iter().any(|c| c.outcome == Outcome::Fail)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in &self.checks {
            writeln!(f, "{c}")?;
        }
        let fails = self
            .checks
            .iter()
            .filter(|c| c.outcome == Outcome::Fail)
            .count();
        if fails == 0 {
            writeln!(f, "no check would stop the agent")
        } else {
            writeln!(f, "{fails} check(s) would stop the agent")
        }
    }
}

/// What the doctor talks to, as the agent would.
pub struct Doctor {
    /// The data plane: nodes, pods, Deployments, HPAs, the Lease.
    pub data: Client,
    /// ASM's API server for an IstioGateway, when it is elsewhere.
    pub mesh: Option<Client>,
    pub prom: Prometheus,
    /// The agent's Lease (name, namespace); `None` without leader election.
    pub lease: Option<(String, String)>,
    pub api_timeout: Duration,
    /// The agent's fast path, when it is on.
    pub fast_path: Option<crate::fastpath::FastPath>,
    /// Unix seconds, for the staleness check of the answers.
    pub now: f64,
}

fn api_error(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) if s.code == 403 => format!("forbidden (RBAC): {}", s.message),
        kube::Error::Api(s) => format!("HTTP {}: {}", s.code, s.message),
        other => other.to_string(),
    }
}

impl Doctor {
    /// Runs every check for `egw`; never stops at the first failure.
    pub async fn examine(&self, egw: &ElasticGateway) -> Report {
        let mut r = Report::default();
        let ns = egw.namespace().unwrap_or_else(|| "default".into());
        let spec = &egw.spec;
        let errors = crate::policy::validate(spec, &ns);
        if errors.is_empty() {
            r.push(
                Outcome::Ok,
                "policy",
                format!("ElasticGateway {ns}/{} is valid", egw.name_any()),
            );
        } else {
            let list: Vec<String> = errors.iter().map(ToString::to_string).collect();
            r.push(
                Outcome::Fail,
                "policy",
                format!("not acted on: {}", list.join("; ")),
            );
        }
        self.queries(&mut r, egw, &ns).await;
        let view = self.target(&mut r, egw, &ns).await;
        let index = self
            .pools(&mut r, egw, &ns, view.as_ref().map(|v| v.pod_requests))
            .await;
        self.autoscaling(&mut r, egw, &ns).await;
        self.lease(&mut r).await;
        self.fast_path(
            &mut r,
            egw,
            &ns,
            view.as_ref().map(|v| &v.selector),
            index.as_ref(),
        )
        .await;
        self.drain(&mut r, &ns, view.as_ref().map(|v| &v.selector))
            .await;
        let services = self
            .gateway_services(&ns, view.as_ref().map(|v| &v.selector))
            .await;
        self.warmup(&mut r, egw, &ns, &services).await;
        match &services {
            Ok(list) => {
                let (outcome, text) = balancer::judge(list);
                r.push(outcome, "load balancer", text);
            }
            Err(why) => r.push(Outcome::Skip, "load balancer", why.clone()),
        }
        self.capacity(&mut r, egw, &ns).await;
        r
    }

    /// How a gateway pod that goes drains ([`drain::DrainSetup`]), read from one of its pods.
    async fn drain(&self, r: &mut Report, ns: &str, selector: Option<&kube::core::Selector>) {
        const WHAT: &str = "drain";
        let Some(selector) = selector.filter(|s| !s.selects_all()) else {
            r.push(Outcome::Skip, WHAT, "no target, so no pods to read");
            return;
        };
        let pods: Api<Pod> = Api::namespaced(self.data.clone(), ns);
        let lp = ListParams::default().labels(&selector.to_string()).limit(1);
        match bounded(self.api_timeout, pods.list(&lp)).await {
            Err(e) => r.push(
                Outcome::Warn,
                WHAT,
                format!("cannot list the gateway's pods: {}", api_error(&e)),
            ),
            Ok(list) => match list.items.first() {
                None => r.push(Outcome::Skip, WHAT, "no gateway pod to read"),
                Some(pod) => match drain::DrainSetup::of(pod) {
                    Ok(setup) => {
                        let (outcome, text) = setup.judge();
                        r.push(outcome, WHAT, format!("{}: {text}", pod.name_any()));
                    }
                    Err(e) => r.push(Outcome::Warn, WHAT, format!("{}: {e}", pod.name_any())),
                },
            },
        }
    }

    /// The Services in the gateway's namespace that select its pods (matched against one
    /// pod's labels), or why they could not be read.
    async fn gateway_services(
        &self,
        ns: &str,
        selector: Option<&kube::core::Selector>,
    ) -> Result<Vec<Service>, String> {
        let t = self.api_timeout;
        let Some(selector) = selector.filter(|s| !s.selects_all()) else {
            return Err("no target, so no Service to look for".into());
        };
        let pods: Api<Pod> = Api::namespaced(self.data.clone(), ns);
        let lp = ListParams::default().labels(&selector.to_string()).limit(1);
        let labels = bounded(t, pods.list(&lp))
            .await
            .map_err(|e| format!("cannot list the gateway's pods: {}", api_error(&e)))?
            .items
            .first()
            .map(|p| p.labels().clone())
            .ok_or("no gateway pod to match Services against")?;
        let services: Api<Service> = Api::namespaced(self.data.clone(), ns);
        let services = bounded(t, services.list(&ListParams::default()))
            .await
            .map_err(|e| {
                format!(
                    "cannot list Services ({}): they are read with rights to Services",
                    api_error(&e)
                )
            })?
            .items;
        let selecting: Vec<Service> = services
            .into_iter()
            .filter(|s| {
                s.spec
                    .as_ref()
                    .and_then(|s| s.selector.as_ref())
                    .is_some_and(|sel| {
                        !sel.is_empty() && sel.iter().all(|(k, v)| labels.get(k) == Some(v))
                    })
            })
            .collect();
        if selecting.is_empty() {
            return Err("no Service selects the gateway's pods".into());
        }
        Ok(selecting)
    }

    /// Whether a DestinationRule ramps the gateway's pods ([`warmup`]), beside `spec.warmup`:
    /// the rules (on the mesh's API server in ASM) whose host is a Service that selects the
    /// gateway's pods.
    async fn warmup(
        &self,
        r: &mut Report,
        egw: &ElasticGateway,
        ns: &str,
        services: &Result<Vec<Service>, String>,
    ) {
        const WHAT: &str = "warm-up";
        let t = self.api_timeout;
        let services = match services {
            Ok(list) => list,
            Err(why) => {
                r.push(Outcome::Skip, WHAT, why.clone());
                return;
            }
        };
        let names: Vec<(String, String)> = services
            .iter()
            .map(|s| (s.name_any(), ns.to_string()))
            .collect();
        let hosts = warmup::service_hosts(&names);
        let client = self.mesh.as_ref().unwrap_or(&self.data);
        let mut rules = None;
        for version in ["v1", "v1beta1", "v1alpha3"] {
            let ar = kube::discovery::ApiResource {
                group: "networking.istio.io".into(),
                version: version.into(),
                api_version: format!("networking.istio.io/{version}"),
                kind: "DestinationRule".into(),
                plural: "destinationrules".into(),
            };
            let api: Api<kube::api::DynamicObject> = Api::all_with(client.clone(), &ar);
            match bounded(t, api.list(&ListParams::default())).await {
                Ok(list) => {
                    rules = Some(list.items);
                    break;
                }
                Err(e) if is_status(&e, 404) => {}
                Err(e) => {
                    let e = api_error(&e);
                    r.push(
                        Outcome::Skip,
                        WHAT,
                        format!("cannot list DestinationRules: {e}"),
                    );
                    return;
                }
            }
        }
        let Some(rules) = rules else {
            let (outcome, text) = warmup::judge(&[], egw.spec.warmup.as_ref());
            r.push(
                outcome,
                WHAT,
                format!("{text} (no DestinationRule API here)"),
            );
            return;
        };
        let matched = rules.iter().filter_map(|rule| {
            let value = serde_json::to_value(rule).ok()?;
            warmup::matched(&value, &rule.namespace().unwrap_or_default(), &hosts)
        });
        // Istio applies one rule to the host: its rule-wide ramp, and each port's own.
        let mut found = Vec::new();
        if let Some(m) = warmup::applied(matched.collect()) {
            for (port, ramp) in m.blocks {
                let rule = match port {
                    None => m.rule.clone(),
                    Some(port) => format!("{} (port {port})", m.rule),
                };
                match ramp {
                    Ok(Some(w)) => found.push(warmup::Found { rule, warmup: w }),
                    Ok(None) => {}
                    Err(e) => r.push(Outcome::Warn, WHAT, format!("DestinationRule {rule}: {e}")),
                }
            }
        }
        let (outcome, text) = warmup::judge(&found, egw.spec.warmup.as_ref());
        r.push(outcome, WHAT, text);
    }

    /// Whether the ECI pods' share of an ECS pod can be learnt: stated by the policy, or the
    /// gateway pods' CPU in Prometheus (cAdvisor) beside the fast path's per-pod rates.
    async fn capacity(&self, r: &mut Report, egw: &ElasticGateway, ns: &str) {
        const WHAT: &str = "per-pool capacity";
        let spec = &egw.spec;
        if let Some(share) = spec.eci.relative_capacity {
            r.push(
                Outcome::Ok,
                WHAT,
                format!("an ECI pod counts as {share} of an ECS pod (eci.relativeCapacity)"),
            );
            return;
        }
        let rate = spec
            .metrics
            .iter()
            .any(|m| m.preset == Some(crate::policy::Preset::RequestRate));
        if !rate || self.fast_path.is_none() {
            r.push(
                Outcome::Skip,
                WHAT,
                "not learnt without a requestRate metric and the fast path: an ECI pod counts as an ECS pod unless eci.relativeCapacity says otherwise",
            );
            return;
        }
        let q = crate::policy::cpu_per_pod_query(ns, &spec.target.name);
        match self.prom.query(&q, self.now).await {
            LoadSample::PerPod(pods) => r.push(
                Outcome::Ok,
                WHAT,
                format!(
                    "CPU of {} gateway pod(s) in Prometheus: the ECI pods' share is learnt while both pools serve (check that ECI pods are among them at a peak) ({q})",
                    pods.len()
                ),
            ),
            LoadSample::Total(_) => r.push(
                Outcome::Ok,
                WHAT,
                format!(
                    "CPU of one gateway pod in Prometheus: the ECI pods' share is learnt while both pools serve ({q})"
                ),
            ),
            LoadSample::Missing(why) => r.push(
                Outcome::Warn,
                WHAT,
                format!(
                    "no per-pod CPU ({why}): ECI pods count as ECS pods; Prometheus needs cAdvisor's container_cpu_usage_seconds_total for the gateway's pods, or set eci.relativeCapacity ({q})"
                ),
            ),
        }
    }

    async fn queries(&self, r: &mut Report, egw: &ElasticGateway, ns: &str) {
        let spec = &egw.spec;
        for m in &spec.metrics {
            let what = format!("prometheus {}", m.display_name());
            let Some(q) = m.effective_query(ns, &spec.target) else {
                r.push(
                    Outcome::Fail,
                    what,
                    "no query (neither a preset nor `query`)",
                );
                continue;
            };
            match self.prom.query(&q, self.now).await {
                LoadSample::Total(v) => {
                    r.push(Outcome::Ok, what, format!("1 series, value {v} ({q})"))
                }
                LoadSample::PerPod(pods) => {
                    let sum: f64 = pods.iter().map(|(_, v)| v).sum();
                    r.push(
                        Outcome::Ok,
                        what,
                        format!("{} per-pod series, sum {sum} ({q})", pods.len()),
                    )
                }
                LoadSample::Missing(why) => r.push(
                    Outcome::Fail,
                    what,
                    format!("no usable value, the agent would hold: {why} ({q})"),
                ),
            }
        }
    }

    fn target_client<'a>(&'a self, egw: &ElasticGateway) -> &'a Client {
        match (&egw.spec.target.kind, &self.mesh) {
            (TargetKind::IstioGateway, Some(mesh)) => mesh,
            _ => &self.data,
        }
    }

    /// The target read as the agent reads it, and a dry-run write of its replica count; returns
    /// the pod's requests for the pools check.
    async fn target(
        &self,
        r: &mut Report,
        egw: &ElasticGateway,
        ns: &str,
    ) -> Option<target::TargetView> {
        let spec = &egw.spec;
        let t = self.api_timeout;
        let client = self.target_client(egw);
        let what = format!("target {:?} {ns}/{}", spec.target.kind, spec.target.name);
        let view = match bounded(t, target::read(client, &self.data, ns, spec)).await {
            Ok(Some(v)) => v,
            Ok(None) => {
                let hint = if spec.target.kind == TargetKind::IstioGateway && self.mesh.is_none() {
                    " (in ASM it lives on the mesh's API server: --mesh-kubeconfig)"
                } else {
                    ""
                };
                r.push(Outcome::Fail, what, format!("not found{hint}"));
                return None;
            }
            Err(e) => {
                r.push(
                    Outcome::Fail,
                    what,
                    format!("cannot read: {}", api_error(&e)),
                );
                return None;
            }
        };
        r.push(
            Outcome::Ok,
            what.clone(),
            format!(
                "found: {} replicas, pods request {} mCPU and {} MiB, weights {}, selector {}",
                view.replicas,
                view.pod_requests.cpu_millis,
                view.pod_requests.memory_bytes >> 20,
                view.weights
                    .map_or("not set by pool".into(), |w| format!("{}/{}", w.ecs, w.eci)),
                view.selector
            ),
        );
        let write = target::scale(client, &self.data, ns, spec, view.replicas, true);
        let written = bounded(t, write).await;
        match written {
            Ok(()) => r.push(
                Outcome::Ok,
                format!("{what} writable"),
                "a dry-run write of the replica count was accepted (where spillway writes it)",
            ),
            Err(e) => r.push(
                Outcome::Fail,
                format!("{what} writable"),
                format!("a dry-run write was refused: {}", api_error(&e)),
            ),
        }
        pool_spread(r, spec, &view);
        if view.asm_autoscaling.is_empty() {
            if spec.target.kind == TargetKind::IstioGateway {
                r.push(Outcome::Ok, "ASM autoscaling", "none on the IstioGateway");
            }
        } else {
            r.push(
                Outcome::Fail,
                "ASM autoscaling",
                format!(
                    "the IstioGateway sets {}: ASM runs an HPA; spillway would hold the replica count",
                    view.asm_autoscaling.join(", ")
                ),
            );
        }
        Some(view)
    }

    /// One read of the gateway's ready pods' counters, as the agent's fast path makes it, from
    /// the pods [`Self::pools`] listed. A failure only warns: the agent then sizes from
    /// Prometheus alone.
    async fn fast_path(
        &self,
        r: &mut Report,
        egw: &ElasticGateway,
        ns: &str,
        selector: Option<&kube::core::Selector>,
        index: Option<&ClusterIndex>,
    ) {
        const WHAT: &str = "fast path";
        let Some(fp) = &self.fast_path else {
            r.push(Outcome::Skip, WHAT, "off (--fast-path=false)");
            return;
        };
        let applies = egw
            .spec
            .metrics
            .iter()
            .any(|m| m.preset == Some(crate::policy::Preset::RequestRate));
        if !applies {
            r.push(
                Outcome::Skip,
                WHAT,
                "no requestRate metric: the fast path does not apply",
            );
            return;
        }
        let Some(selector) = selector.filter(|s| !s.selects_all()) else {
            r.push(Outcome::Skip, WHAT, "no target, so no pods to read");
            return;
        };
        let Some(ix) = index else {
            r.push(
                Outcome::Warn,
                WHAT,
                "cannot list the gateway's pods (see pools)",
            );
            return;
        };
        let pools = &egw.spec.pools;
        let pods = ix.gateway_pods(
            ns,
            selector,
            &pools.ecs.node_selector,
            &pools.eci.node_selector,
        );
        let targets: Vec<crate::fastpath::Target> =
            crate::fastpath::targets(&pods, |pod| ix.pod_ip(ns, pod))
                .into_iter()
                .take(fp.config().max_pods)
                .collect();
        if targets.is_empty() {
            r.push(
                Outcome::Warn,
                WHAT,
                "no ready gateway pod with an address to read",
            );
            return;
        }
        let reads = fp.probe(&targets).await;
        let ok: Vec<f64> = reads
            .iter()
            .filter_map(|(_, _, v)| v.as_ref().ok().map(crate::fastpath::Series::total))
            .collect();
        let drains: Vec<crate::model::Drain> = reads
            .iter()
            .filter_map(|(_, _, v)| v.as_ref().ok()?.drain())
            .collect();
        let connections = if drains.is_empty() {
            format!(
                "; no {} in their stats: a scale-in removes pods by pool alone",
                crate::fastpath::CONNECTIONS_GAUGE
            )
        } else {
            format!(
                "; {:.0} open connections on {} of them: a scale-in removes the pods that hold fewest",
                drains.iter().map(|d| d.connections).sum::<f64>(),
                drains.len()
            )
        };
        let c = fp.config();
        let endpoint = format!(":{}{} {}", c.port, c.path, c.metric);
        match reads.iter().find_map(|(pod, _, v)| Some((pod, v.as_ref().err()?))) {
            Some((pod, e)) if ok.is_empty() => r.push(
                Outcome::Warn,
                WHAT,
                format!(
                    "no pod's {endpoint} could be read ({pod}: {e}); the agent would size from Prometheus alone (a NetworkPolicy, the port, the metric name?)"
                ),
            ),
            _ => r.push(
                Outcome::Ok,
                WHAT,
                format!(
                    "read {endpoint} from {} of {} ready pod(s) tried ({:.0} requests counted so far){connections}",
                    ok.len(),
                    reads.len(),
                    ok.iter().sum::<f64>()
                ),
            ),
        }
    }

    /// Nodes and pods listed as the agent's watches list them, and the pools they make.
    async fn pools(
        &self,
        r: &mut Report,
        egw: &ElasticGateway,
        ns: &str,
        requests: Option<crate::model::Resources>,
    ) -> Option<ClusterIndex> {
        let t = self.api_timeout;
        let nodes = match bounded(
            t,
            Api::<KNode>::all(self.data.clone()).list(&ListParams::default()),
        )
        .await
        {
            Ok(n) => n.items,
            Err(e) => {
                r.push(
                    Outcome::Fail,
                    "pools",
                    format!(
                        "cannot list nodes, the agent's cache would never sync: {}",
                        api_error(&e)
                    ),
                );
                return None;
            }
        };
        let pods = match bounded(
            t,
            Api::<Pod>::all(self.data.clone()).list(&ListParams::default()),
        )
        .await
        {
            Ok(p) => p.items,
            Err(e) => {
                r.push(
                    Outcome::Fail,
                    "pools",
                    format!(
                        "cannot list pods, the agent's cache would never sync: {}",
                        api_error(&e)
                    ),
                );
                return None;
            }
        };
        let mut ix = ClusterIndex::new([ns.to_string()]);
        ix.nodes_init();
        for n in &nodes {
            ix.nodes_init_apply(n);
        }
        ix.nodes_init_done();
        ix.pods_init();
        for p in &pods {
            ix.pods_init_apply(p);
        }
        ix.pods_init_done();
        let pools = &egw.spec.pools;
        let all = ix.nodes();
        let ecs: Vec<_> = all
            .iter()
            .filter(|n| n.has_labels(&pools.ecs.node_selector))
            .collect();
        let eci = all
            .iter()
            .filter(|n| n.has_labels(&pools.eci.node_selector))
            .count();
        let slots = requests.map(|req| {
            ecs.iter()
                .filter(|n| !n.unschedulable)
                .map(|n| n.free().fits_count(&req).max(0))
                .sum::<i64>()
        });
        let detail = format!(
            "{} ECS node(s) match {:?}, {eci} virtual node(s) match {:?}; {} ({} nodes, {} pods listed)",
            ecs.len(),
            pools.ecs.node_selector,
            pools.eci.node_selector,
            slots.map_or("free ECS slots unknown (no target)".into(), |s| format!(
                "{s} more gateway pod(s) fit on ECS now"
            )),
            nodes.len(),
            pods.len()
        );
        let outcome = match (ecs.len(), eci) {
            (0, 0) => Outcome::Fail,
            (0, _) | (_, 0) => Outcome::Warn,
            _ => Outcome::Ok,
        };
        r.push(outcome, "pools", detail);
        // A virtual node with the ECS pool's label: the agent counts it as virtual, but the
        // label lets it into the pool spread's domains, where an empty node wins the spread.
        let both = egw.spec.pools_overlap(all);
        if !both.is_empty() {
            r.push(
                Outcome::Warn,
                "pool labels",
                format!(
                    "{} carry both pools' labels: counted as virtual nodes, but the ECS label puts them in placement.poolSpread's spreading, where an empty one draws gateway pods while ECS has room; take the ECS label off them",
                    both.join(", ")
                ),
            );
        }
        Some(ix)
    }

    async fn autoscaling(&self, r: &mut Report, egw: &ElasticGateway, ns: &str) {
        match bounded(
            self.api_timeout,
            target::competing_hpas(&self.data, ns, &egw.spec),
        )
        .await
        {
            Ok(h) if h.is_empty() => r.push(
                Outcome::Ok,
                "HPA",
                "no HorizontalPodAutoscaler targets the gateway",
            ),
            Ok(h) => r.push(
                Outcome::Fail,
                "HPA",
                format!(
                    "HorizontalPodAutoscaler {} also scales the gateway; spillway would hold the replica count",
                    h.join(", ")
                ),
            ),
            Err(e) => r.push(
                Outcome::Fail,
                "HPA",
                format!(
                    "cannot list HorizontalPodAutoscalers, spillway would hold the replica count: {}",
                    api_error(&e)
                ),
            ),
        }
    }

    /// The Lease read, and written in dry-run mode (created when absent, patched when present).
    async fn lease(&self, r: &mut Report) {
        let Some((name, ns)) = &self.lease else {
            r.push(Outcome::Skip, "lease", "leader election is off");
            return;
        };
        let what = format!("lease {ns}/{name}");
        let api = Api::<Lease>::namespaced(self.data.clone(), ns);
        let t = self.api_timeout;
        let existing = match bounded(t, api.get_opt(name)).await {
            Ok(l) => l,
            Err(e) => {
                r.push(
                    Outcome::Fail,
                    what,
                    format!("cannot read, no replica could lead: {}", api_error(&e)),
                );
                return;
            }
        };
        let holder = existing
            .as_ref()
            .and_then(|l| l.spec.as_ref()?.holder_identity.clone());
        let written = match &existing {
            Some(_) => {
                let pp = PatchParams {
                    dry_run: true,
                    ..PatchParams::default()
                };
                let patch = json!({"metadata": {"labels": {"spillway.io/doctor": "dry-run"}}});
                bounded(t, api.patch(name, &pp, &Patch::Merge(&patch)))
                    .await
                    .map(|_| ())
            }
            None => {
                let pp = PostParams {
                    dry_run: true,
                    ..PostParams::default()
                };
                let lease: Lease = match serde_json::from_value(
                    json!({"metadata": {"name": name, "namespace": ns}}),
                ) {
                    Ok(l) => l,
                    Err(e) => {
                        r.push(Outcome::Fail, what, format!("building a Lease: {e}"));
                        return;
                    }
                };
                match bounded(t, api.create(&pp, &lease)).await {
                    Err(e) if is_status(&e, 409) => Ok(()),
                    other => other.map(|_| ()),
                }
            }
        };
        match written {
            Ok(()) => r.push(
                Outcome::Ok,
                what,
                format!(
                    "readable and writable (dry run); held by {}",
                    holder.as_deref().unwrap_or("nobody")
                ),
            ),
            Err(e) => r.push(
                Outcome::Fail,
                what,
                format!(
                    "a dry-run write was refused, no replica could lead: {}",
                    api_error(&e)
                ),
            ),
        }
    }
}
/// What `placement.poolSpread` will do to the template, said before the agent does it; and the
/// policy's settings that move the fleet in ways users rarely mean ([`ElasticGatewaySpec::advice`]).
fn pool_spread(
    r: &mut Report,
    spec: &crate::policy::ElasticGatewaySpec,
    view: &target::TargetView,
) {
    for a in spec.advice() {
        r.push(Outcome::Warn, "policy", a);
    }
    let what = "pool spread (placement.poolSpread)";
    let wanted = spec.pool_spread_constraints();
    if !spec.placement.pool_spread {
        r.push(
            Outcome::Warn,
            what,
            "off: the scheduler's default spreading applies, under which pods can land on ECI while ECS has room",
        );
        return;
    }
    if spec.target.kind == TargetKind::IstioGateway {
        let keys = spec.pool_placement_keys().join(", ");
        let what_it_is = format!(
            "a preferred pod affinity to the gateway's own pods on {keys} in the IstioGateway's affinity (ASM renders no spread constraints)"
        );
        r.push(
            Outcome::Ok,
            what,
            if view.spread.missing {
                format!(
                    "to be written with the weights at the next quiet time (one rollout): {what_it_is}"
                )
            } else {
                format!("in place: {what_it_is}")
            },
        );
        return;
    }
    let keys = |cs: &[serde_json::Value]| {
        cs.iter()
            .filter_map(|c| c["topologyKey"].as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let kept: Vec<&str> = wanted
        .iter()
        .map(|c| c.topology_key.as_str())
        .filter(|k| !view.spread.to_apply.iter().any(|c| c["topologyKey"] == *k))
        .collect();
    let kept = if kept.is_empty() {
        String::new()
    } else {
        format!(
            "; the gateway's own entry on {} is kept instead",
            kept.join(", ")
        )
    };
    if view.spread.missing {
        r.push(
            Outcome::Ok,
            what,
            format!(
                "to be written with the weights at the next quiet time (one rollout): soft spreading on {}{kept}",
                keys(&view.spread.to_apply)
            ),
        );
    } else {
        r.push(
            Outcome::Ok,
            what,
            format!("in place: {}{kept}", keys(&view.spread.to_apply)),
        );
    }
}
