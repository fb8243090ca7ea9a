// Istio's API (its CRDs as istio.io/api publishes them) for tests/doctor.rs, which installs the
// DestinationRule CRD on the test bed's apiserver and checks what `spillway doctor` reads of a
// slow start on the gateway's host. Only the module's YAML is used.
module spillway.dev/testbed/istio

go 1.26

require istio.io/api v1.32.0 // indirect
