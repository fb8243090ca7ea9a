//! spillway: keeps an ingress gateway on ECS in normal times and lets the peak overflow onto
//! virtual-kubelet (ECI) nodes.
//!
//! Data flows one way: observe → decide ([`engine`], pure) → act ([`act`]) → report. The live
//! agent ([`agent`]) observes the cluster through the adapters ([`k8s`], [`prom`], [`fastpath`]);
//! the drill ([`sim`]) feeds the same step from a simulated cluster on a virtual clock. The
//! admission webhook ([`webhook`]) runs the policy's validation where the CRD's cannot reach.

pub mod act;
pub mod agent;
pub mod clock;
pub mod config;
pub mod doctor;
pub mod engine;
pub mod fastpath;
pub mod k8s;
pub mod metrics;
pub mod model;
pub mod policy;
pub mod prom;
pub mod redact;
pub mod replay;
pub mod scheduler;
pub mod server;
pub mod sim;
pub mod telemetry;
pub mod webhook;

/// Errors of the library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A setting or document is wrong.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The Kubernetes API failed.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// Work took longer than its bound.
    #[error("timed out: {0}")]
    Timeout(String),
    /// A write was not sent: this replica does not hold the leader Lease long enough to finish it.
    #[error("write not sent: {0}")]
    Fenced(#[from] crate::k8s::leader::Fenced),
    /// Leader election failed for good (its task ended).
    #[error("leader election: {0}")]
    Leadership(String),
}

impl Error {
    /// A short, stable label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Config(_) => "config",
            Error::Kube(_) => "kube",
            Error::Timeout(_) => "timeout",
            Error::Fenced(_) => "fenced",
            Error::Leadership(_) => "leadership",
        }
    }
}
