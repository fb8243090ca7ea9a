//! This process: leadership, writes the Lease fence stopped, and the build. Exported by every
//! replica (a standby says it is one; a fenced replica has just stopped leading).

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use super::{FencedLabels, ResultLabels};

#[derive(Default)]
pub struct ProcessMetrics {
    leader: Gauge,
    fenced: Family<FencedLabels, Counter>,
    admission_reviews: Family<ResultLabels, Counter>,
}

impl ProcessMetrics {
    pub fn register(r: &mut Registry) -> Self {
        let m = Self::default();
        r.register(
            "leader",
            "1 while this spillway replica holds the leader Lease and may write; only the leader exports the per-gateway metrics",
            m.leader.clone(),
        );
        r.register(
            "fenced_writes",
            "Writes not sent because this replica did not hold the leader Lease long enough to finish them, by reason (not_leader, expired: the hold ran out without a renewal, expiring: less than --api-timeout left) and write (scale, weights, deletion_cost, eviction, status, hand_back); the rest of that decision's plan is dropped",
            m.fenced.clone(),
        );
        r.register(
            "admission_reviews",
            "ElasticGateway creates and updates the admission webhook judged, by result (allowed, denied: the agent's validation refused the spec, invalid: the request was not an AdmissionReview)",
            m.admission_reviews.clone(),
        );
        r.register(
            "build",
            "spillway's version",
            Info::new(vec![(
                "version".to_string(),
                env!("CARGO_PKG_VERSION").to_string(),
            )]),
        );
        m
    }

    /// Counts a write the fence stopped.
    pub fn fenced(&self, reason: &str, write: &str) {
        self.fenced
            .get_or_create(&FencedLabels {
                reason: reason.into(),
                write: write.into(),
            })
            .inc();
    }

    /// Counts one admission review by its result.
    pub fn admission_review(&self, result: &str) {
        self.admission_reviews
            .get_or_create(&ResultLabels {
                result: result.into(),
            })
            .inc();
    }

    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }

    pub fn is_leader(&self) -> bool {
        self.leader.get() == 1
    }
}
