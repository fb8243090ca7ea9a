//! spillway: keeps an ingress gateway on ECS in normal times and lets the peak overflow onto
//! virtual-kubelet (ECI) nodes.
//!
//! Data flows one way: observe ([`model`]) → decide ([`engine`], pure) → act → report. The
//! drill ([`sim`]) feeds the same engine from a simulated cluster on a virtual clock.

pub mod model;
pub mod policy;
pub mod scheduler;
pub mod engine;
