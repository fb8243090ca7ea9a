//! Ready-made PromQL for Envoy/Istio gateways.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A query template for the common gateway load signals. `$ns` is the policy's namespace and
/// the pods are matched by the target's name as a prefix, as a Deployment names its pods.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Preset {
    /// Requests per second through the gateway, from Envoy's downstream request counter.
    RequestRate,
    /// Open downstream connections (HTTP and TCP) held by the gateway's Envoys.
    ActiveConnections,
    /// CPU cores used by the gateway's `istio-proxy` containers (cAdvisor).
    Cpu,
}

impl Preset {
    pub fn name(self) -> &'static str {
        match self {
            Preset::RequestRate => "request_rate",
            Preset::ActiveConnections => "active_connections",
            Preset::Cpu => "cpu",
        }
    }

    pub fn query(self, namespace: &str, workload: &str) -> String {
        let sel = format!(r#"namespace="{namespace}",pod=~"{workload}-.*""#);
        match self {
            Preset::RequestRate => {
                format!("sum(rate(envoy_http_downstream_rq_total{{{sel}}}[1m]))")
            }
            Preset::ActiveConnections => format!("sum(envoy_http_downstream_cx_active{{{sel}}})"),
            Preset::Cpu => {
                format!(
                    r#"sum(rate(container_cpu_usage_seconds_total{{{sel},container="istio-proxy"}}[1m]))"#
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_are_valid_promql() {
        for p in [Preset::RequestRate, Preset::ActiveConnections, Preset::Cpu] {
            let q = p.query("istio-system", "istio-ingressgateway");
            promql_parser::parser::parse(&q).unwrap_or_else(|e| panic!("{q}: {e}"));
            assert!(q.contains(r#"pod=~"istio-ingressgateway-.*""#));
        }
    }
}
