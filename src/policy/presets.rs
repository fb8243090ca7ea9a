//! Ready-made PromQL for Envoy/Istio gateways.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A query template for the common gateway load signals, written for what a default Istio or
/// ASM install exports: Istio's standard metrics (`istio_requests_total`, labelled by Istio
/// itself with the reporting workload) and the `envoy_server_*` statistics that Istio's default
/// `proxyStatsMatcher` keeps, plus cAdvisor for CPU. Most `envoy_http_*` and `envoy_listener_*`
/// statistics exist only after a `proxyStatsMatcher` asks for them, so no preset uses them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Preset {
    /// Requests per second through the gateway: `istio_requests_total` as the gateway reports
    /// it (`reporter="source"`: a gateway is the client side of the requests it forwards),
    /// selected by Istio's own `source_workload` labels, so no scrape relabelling is assumed.
    RequestRate,
    /// Connections held by the gateway's Envoys (`envoy_server_total_connections`, one of the
    /// `server.*` statistics a default install exports), by the scrape's `namespace` and `pod`
    /// labels.
    ActiveConnections,
    /// CPU cores used by the gateway's `istio-proxy` containers (cAdvisor's
    /// `container_cpu_usage_seconds_total`).
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

    /// The query for the gateway `workload` (its Deployment's name; ASM names the rendered
    /// Deployment after the IstioGateway) in `namespace`.
    pub fn query(self, namespace: &str, workload: &str) -> String {
        let pods = format!(r#"namespace="{namespace}",pod=~"{workload}-.*""#);
        match self {
            Preset::RequestRate => format!(
                r#"sum(rate(istio_requests_total{{reporter="source",source_workload="{workload}",source_workload_namespace="{namespace}"}}[1m]))"#
            ),
            Preset::ActiveConnections => format!("sum(envoy_server_total_connections{{{pods}}})"),
            Preset::Cpu => {
                format!(
                    r#"sum(rate(container_cpu_usage_seconds_total{{{pods},container="istio-proxy"}}[1m]))"#
                )
            }
        }
    }
}

/// CPU cores each of the gateway's `istio-proxy` containers uses, by pod (cAdvisor's own `pod`
/// label, which no scrape relabelling changes), over its last two scrapes (`irate`: a pod that
/// started inside a longer window would read low through `rate`): with each pod's request rate
/// it shows what a request costs on each pool.
pub fn cpu_per_pod_query(namespace: &str, workload: &str) -> String {
    format!(
        r#"sum by (pod) (irate(container_cpu_usage_seconds_total{{namespace="{namespace}",pod=~"{workload}-.*",container="istio-proxy"}}[2m]))"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_are_valid_promql() {
        for p in [Preset::RequestRate, Preset::ActiveConnections, Preset::Cpu] {
            let q = p.query("istio-system", "istio-ingressgateway");
            promql_parser::parser::parse(&q).unwrap_or_else(|e| panic!("{q}: {e}"));
            assert!(q.contains("istio-ingressgateway"), "{q}");
            let per_pod = cpu_per_pod_query("istio-system", "istio-ingressgateway");
            promql_parser::parser::parse(&per_pod).unwrap_or_else(|e| panic!("{per_pod}: {e}"));
            // Only metrics a default Istio install exports.
            assert!(
                !q.contains("envoy_http_") && !q.contains("envoy_listener_"),
                "{q}"
            );
        }
    }
}
