//! How the cloud load balancer in front of the gateway deals new connections.
//!
//! Long-lived connections (websockets, gRPC, HTTP/2) stay on the pod that accepted them. Dealt
//! in turn (a CLB's `rr` or an NLB's `wrr`, the defaults), a pod added by a scale-out takes only
//! its share of new connections, and the old pods carry the rest for as long as the old connections
//! live; dealt to the pod with the fewest (`wlc`), a new pod takes new connections first until
//! it holds as many as the others. The drill measures both (`gateway.connections.dealing`):
//! the pods even out within a fraction of a connection lifetime, and a scale-in resets more,
//! since the newest pods, the first to go, hold as many as the others. Replacing the hottest
//! pods does not do it under round robin: their clients reconnect over every pod, the next
//! hottest among them, and the replacements start empty (docs/benchmarks.md).

use k8s_openapi::api::core::v1::Service;
use kube::ResourceExt;

use super::Outcome;

/// The Cloud Controller Manager's annotation for a listener's scheduler (CLB, NLB).
pub const SCHEDULER: &str = "service.beta.kubernetes.io/alibaba-cloud-loadbalancer-scheduler";
/// Its name before 2019, still honoured.
const SCHEDULER_OLD: &str = "service.beta.kubernetes.io/alicloud-loadbalancer-scheduler";

/// The `loadBalancerClass` of an NLB; without it, ACK makes a CLB.
const NLB_CLASS: &str = "alibabacloud.com/nlb";

/// The scheduler a LoadBalancer Service asks for: the annotation's value, lower-cased, or when
/// it has none the default of what ACK makes of it: `wrr` for an NLB, `rr` for a CLB.
pub fn scheduler(service: &Service) -> String {
    let a = service.annotations();
    let nlb = service
        .spec
        .as_ref()
        .and_then(|s| s.load_balancer_class.as_deref())
        == Some(NLB_CLASS);
    a.get(SCHEDULER)
        .or_else(|| a.get(SCHEDULER_OLD))
        .map_or_else(
            || if nlb { "wrr" } else { "rr" }.to_string(),
            |v| v.trim().to_ascii_lowercase(),
        )
}

fn is_load_balancer(service: &Service) -> bool {
    service
        .spec
        .as_ref()
        .and_then(|s| s.type_.as_deref())
        .is_some_and(|t| t == "LoadBalancer")
}

/// The report line for the Services that select the gateway's pods.
pub fn judge(services: &[Service]) -> (Outcome, String) {
    let balanced: Vec<(String, String)> = services
        .iter()
        .filter(|s| is_load_balancer(s))
        .map(|s| {
            let ns = s.namespace().unwrap_or_default();
            (format!("{ns}/{}", s.name_any()), scheduler(s))
        })
        .collect();
    if balanced.is_empty() {
        return (
            Outcome::Skip,
            "no LoadBalancer Service selects the gateway's pods".into(),
        );
    }
    let (least, other): (Vec<_>, Vec<_>) = balanced.iter().partition(|(_, s)| s == "wlc");
    if other.is_empty() {
        let names: Vec<&str> = least.iter().map(|(n, _)| n.as_str()).collect();
        return (
            Outcome::Ok,
            format!(
                "{} {} new connections to the pod with the fewest (wlc): pods a scale-out adds fill up first (a scale-in resets more for it: the newest pods hold as many as the others)",
                names.join(", "),
                if names.len() == 1 { "deals" } else { "deal" }
            ),
        );
    }
    let named: Vec<String> = other.iter().map(|(n, s)| format!("{n} ({s})")).collect();
    (
        Outcome::Warn,
        format!(
            "{} {} new connections {}: after a scale-out, long-lived connections (websockets, gRPC, HTTP/2) stay on the old pods for their lifetime, which run hotter than the fleet's mean, and the new pods take only their share of new ones; `{SCHEDULER}: wlc` sends new connections to the pods with the fewest (it closes no connection for it; scale-ins reset more, since the newest pods hold as many as the others: figures in docs/benchmarks.md); no matter for short-lived HTTP/1 requests",
            named.join(", "),
            if named.len() == 1 { "deals" } else { "deal" },
            if other
                .iter()
                .any(|(_, s)| s == "sch" || s == "tch" || s == "qch")
            {
                "by a hash or in turn"
            } else {
                "in turn"
            }
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn svc(kind: &str, scheduler: Option<&str>) -> Service {
        let mut s = json!({"metadata": {"name": "gw", "namespace": "istio-system"},
            "spec": {"type": kind}});
        if let Some(v) = scheduler {
            s["metadata"]["annotations"] = json!({SCHEDULER: v});
        }
        serde_json::from_value(s).unwrap()
    }

    #[test]
    fn round_robin_is_named_with_the_annotation_that_fixes_it() {
        for s in [None, Some("rr"), Some("WRR ")] {
            let (outcome, text) = judge(&[svc("LoadBalancer", s)]);
            assert_eq!(outcome, Outcome::Warn, "{s:?}");
            assert!(
                text.contains("istio-system/gw (") && text.contains(": wlc"),
                "{text}"
            );
        }
    }

    #[test]
    fn an_nlb_without_the_annotation_deals_by_weight() {
        let mut s = svc("LoadBalancer", None);
        assert_eq!(scheduler(&s), "rr");
        s.spec.as_mut().unwrap().load_balancer_class = Some(NLB_CLASS.into());
        assert_eq!(scheduler(&s), "wrr");
        let (outcome, text) = judge(&[s]);
        assert_eq!(outcome, Outcome::Warn);
        assert!(text.contains("istio-system/gw (wrr)"), "{text}");
    }

    #[test]
    fn least_connections_passes_and_cluster_ips_are_not_judged() {
        let (outcome, text) = judge(&[svc("LoadBalancer", Some("wlc")), svc("ClusterIP", None)]);
        assert_eq!(outcome, Outcome::Ok, "{text}");
        assert_eq!(judge(&[svc("ClusterIP", None)]).0, Outcome::Skip);
        // One of two still dealing in turn: warned, by name.
        let mut other = svc("LoadBalancer", Some("sch"));
        other.metadata.name = Some("gw-internal".into());
        let (outcome, text) = judge(&[svc("LoadBalancer", Some("wlc")), other]);
        assert_eq!(outcome, Outcome::Warn);
        assert!(
            text.contains("istio-system/gw-internal (sch)") && text.contains("by a hash"),
            "{text}"
        );
    }
}
