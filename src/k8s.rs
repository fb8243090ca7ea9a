//! Kubernetes I/O: the watches that feed the cluster index, the target workload, the writes,
//! and the controller that runs the engine on every ElasticGateway.

pub mod controller;
pub mod index;
pub mod leader;
pub mod target;
pub mod watch;
