//! What a decision means for the cluster: the one translation from [`Decision`] to changes,
//! used by the live agent and by the drill alike.

use serde::{Deserialize, Serialize};

use crate::engine::Decision;
use crate::policy::{ElasticGatewaySpec, PoolWeights};

/// The changes to make, in the order to make them: pod deletion costs first (so a scale-in
/// that follows already removes ECI pods first), then replicas, weights, evictions.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub deletion_costs: Vec<(String, i32)>,
    pub replicas: Option<i32>,
    pub weights: Option<PoolWeights>,
    pub evictions: Vec<String>,
}

impl Plan {
    /// Nothing in dry-run mode (the decision is still reported); otherwise what changed.
    pub fn from_decision(policy: &ElasticGatewaySpec, d: &Decision) -> Self {
        if policy.dry_run || policy.paused {
            return Self::default();
        }
        Self {
            deletion_costs: d.deletion_costs.clone(),
            replicas: (d.replicas.desired != d.replicas.current).then_some(d.replicas.desired),
            weights: d.weights.changed().then_some(d.weights.target),
            evictions: d.moves.clone(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.deletion_costs.is_empty()
            && self.replicas.is_none()
            && self.weights.is_none()
            && self.evictions.is_empty()
    }
}
