//! The gateway namespaces' Deployments and HorizontalPodAutoscalers, kept from watches: a
//! decision reads its target here instead of fetching it (2,000 gateways at a 5 s interval would
//! be 400 reads a second), learns of an HPA as soon as one is made, and sees who last wrote the
//! target's replica count in its managedFields ([`super::target::replica_writers`]).

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;

use super::index::Change;

/// The Deployments and HPAs of the gateway namespaces.
#[derive(Debug, Default)]
pub struct Workloads {
    deployments: HashMap<(String, String), Arc<Deployment>>,
    /// HPA → the kind and name of its scale target.
    autoscalers: HashMap<(String, String), (String, String)>,
    deployment_buffer: HashMap<String, HashMap<String, Arc<Deployment>>>,
    autoscaler_buffer: HashMap<String, HashMap<String, (String, String)>>,
}

fn key_of(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> Option<(String, String)> {
    Some((meta.namespace.clone()?, meta.name.clone()?))
}

impl Workloads {
    pub fn apply_deployment(&mut self, d: Deployment) -> Option<Change> {
        let key = key_of(&d.metadata)?;
        let k = Arc::new(d);
        let change = Change::Workload {
            namespace: key.0.clone(),
            name: key.1.clone(),
        };
        self.deployments.insert(key, k);
        Some(change)
    }

    pub fn delete_deployment(&mut self, d: &Deployment) -> Option<Change> {
        let key = key_of(&d.metadata)?;
        self.deployments.remove(&key)?;
        Some(Change::Workload {
            namespace: key.0,
            name: key.1,
        })
    }

    /// A (re)list of `ns`'s Deployments starts.
    pub fn deployments_init(&mut self, ns: &str) {
        self.deployment_buffer
            .insert(ns.to_string(), HashMap::new());
    }

    pub fn deployments_init_apply(&mut self, ns: &str, d: Deployment) {
        if let (Some(buf), Some(name)) =
            (self.deployment_buffer.get_mut(ns), d.metadata.name.clone())
        {
            buf.insert(name, Arc::new(d));
        }
    }

    pub fn deployments_init_done(&mut self, ns: &str) {
        let listed = self.deployment_buffer.remove(ns).unwrap_or_default();
        self.deployments.retain(|(n, _), _| n != ns);
        for (name, k) in listed {
            self.deployments.insert((ns.to_string(), name), k);
        }
    }

    pub fn apply_autoscaler(&mut self, h: &HorizontalPodAutoscaler) -> Option<Change> {
        let key = key_of(&h.metadata)?;
        let r = &h.spec.scale_target_ref;
        let target = (r.kind.clone(), r.name.clone());
        if self.autoscalers.get(&key) == Some(&target) {
            return None;
        }
        self.autoscalers.insert(key.clone(), target);
        Some(Change::Autoscalers(key.0))
    }

    pub fn delete_autoscaler(&mut self, h: &HorizontalPodAutoscaler) -> Option<Change> {
        let key = key_of(&h.metadata)?;
        self.autoscalers.remove(&key)?;
        Some(Change::Autoscalers(key.0))
    }

    pub fn autoscalers_init(&mut self, ns: &str) {
        self.autoscaler_buffer
            .insert(ns.to_string(), HashMap::new());
    }

    pub fn autoscalers_init_apply(&mut self, ns: &str, h: &HorizontalPodAutoscaler) {
        if let (Some(buf), Some(name)) =
            (self.autoscaler_buffer.get_mut(ns), h.metadata.name.clone())
        {
            let r = &h.spec.scale_target_ref;
            buf.insert(name, (r.kind.clone(), r.name.clone()));
        }
    }

    pub fn autoscalers_init_done(&mut self, ns: &str) {
        let listed = self.autoscaler_buffer.remove(ns).unwrap_or_default();
        self.autoscalers.retain(|(n, _), _| n != ns);
        for (name, t) in listed {
            self.autoscalers.insert((ns.to_string(), name), t);
        }
    }

    /// The Deployment `ns/name`, as last seen.
    pub fn deployment(&self, ns: &str, name: &str) -> Option<Arc<Deployment>> {
        self.deployments
            .get(&(ns.to_string(), name.to_string()))
            .cloned()
    }

    /// The HPAs of `ns` whose scale target is one of `targets` (kind, name), by name.
    pub fn autoscalers_of(&self, ns: &str, targets: &[(&str, &str)]) -> Vec<String> {
        let mut out: Vec<String> = self
            .autoscalers
            .iter()
            .filter(|((n, _), (kind, name))| {
                n == ns && targets.iter().any(|(k, t)| k == kind && t == name)
            })
            .map(|((_, h), _)| h.clone())
            .collect();
        out.sort();
        out
    }

    pub fn counts(&self) -> (usize, usize) {
        (self.deployments.len(), self.autoscalers.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment(managed: serde_json::Value) -> Deployment {
        serde_json::from_value(json!({
            "metadata": {"name": "gw", "namespace": "istio-system", "managedFields": managed},
            "spec": {"replicas": 4, "selector": {"matchLabels": {"app": "gw"}},
                     "template": {"metadata": {"labels": {"app": "gw"}}}}
        }))
        .unwrap()
    }

    #[test]
    fn a_relist_replaces_a_namespace_and_hpas_name_their_targets() {
        let mut w = Workloads::default();
        w.apply_deployment(deployment(json!([])));
        w.deployments_init("istio-system");
        w.deployments_init_done("istio-system");
        assert!(w.deployment("istio-system", "gw").is_none());
        let hpa: HorizontalPodAutoscaler = serde_json::from_value(json!({
            "metadata": {"name": "gw-hpa", "namespace": "istio-system"},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "gw"}, "maxReplicas": 10}
        }))
        .unwrap();
        assert_eq!(
            w.apply_autoscaler(&hpa),
            Some(Change::Autoscalers("istio-system".into()))
        );
        assert_eq!(w.apply_autoscaler(&hpa), None);
        assert_eq!(
            w.autoscalers_of("istio-system", &[("Deployment", "gw")]),
            vec!["gw-hpa"]
        );
        assert!(
            w.autoscalers_of("istio-system", &[("Deployment", "other")])
                .is_empty()
        );
        assert!(
            w.autoscalers_of("team-b", &[("Deployment", "gw")])
                .is_empty()
        );
    }
}
