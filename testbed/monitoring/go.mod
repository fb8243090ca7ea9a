// The Prometheus Operator's CRDs (ServiceMonitor, PrometheusRule) for tests/install.rs, which
// installs them on the test bed's apiserver and checks deploy/monitoring and the chart's
// monitoring objects against them (server-side dry-run). Only the module's YAML is used.
module spillway.dev/testbed/monitoring

go 1.26

require github.com/prometheus-operator/prometheus-operator v0.86.1
