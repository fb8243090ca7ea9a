//! Traffic-spike drills: a simulated cluster and a scripted load feed the real engine on a
//! virtual clock, side by side with baseline policies.

pub mod chart;
pub mod cluster;
pub mod drill;
pub mod load;
pub mod report;
pub mod scenario;
pub mod suite;

pub use drill::{DrillReport, run};
pub use scenario::{PolicyKind, Scenario};
