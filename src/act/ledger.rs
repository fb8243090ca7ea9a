//! One ledger of ECS room for the gateways whose pools share nodes: each decision claims the
//! ECS slots it counts on for pods not placed yet, and the others plan without them, so that
//! two gateways bursting at once never plan the same free slot (issue 26: two gateways, 8 free
//! slots, 4 → 14 and 4 → 15 in the same second, then a collapse).
//!
//! The rule when room is short: first come, first served. Decisions are made one at a time
//! (under the cluster index's lock), a claim stands until the claimant's next decision (when
//! its pods are placed, they hold the room themselves) or [`CLAIM_TTL`], and what one gateway
//! claimed is what the next sees as taken (`spillway_ecs_claimed_elsewhere_pods`, and the
//! decision's reason). Not a priority or a fair share: the ledger only sets how many pods each
//! gateway counts on, and the scheduler gives free ECS slots to the pods that exist first, so a
//! share it does not enforce would only be a plan that overflows to ECI anyway. A rule that holds
//! needs placement per gateway.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use crate::model::{GatewayKey, Node};

/// A claim lapses if its gateway does not decide again within this long (seconds).
pub const CLAIM_TTL: f64 = 30.0;

/// Seconds on a monotonic clock (since the first call): the agent's time for the ledger. The
/// drill passes its virtual time instead, to the same ledger.
pub fn monotonic_now() -> f64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_secs_f64()
}

/// One gateway's claim on its ECS pool.
#[derive(Clone, Debug)]
struct Claim {
    /// The pool's node selector.
    pool: BTreeMap<String, String>,
    slots: i32,
    /// When it was made, on the caller's clock.
    at: f64,
}

/// Every gateway's claim.
#[derive(Default)]
pub struct Ledger(Mutex<HashMap<GatewayKey, Claim>>);

fn in_pool(node: &Node, pool: &BTreeMap<String, String>) -> bool {
    !pool.is_empty() && node.has_labels(pool)
}

impl Ledger {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<GatewayKey, Claim>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The slots other gateways claimed on pools that share a node with `pool`.
    pub fn elsewhere(
        &self,
        key: &GatewayKey,
        pool: &BTreeMap<String, String>,
        nodes: &[Node],
        now: f64,
    ) -> i32 {
        let claims = self.lock();
        let mut shares: HashMap<&BTreeMap<String, String>, bool> = HashMap::new();
        claims
            .iter()
            .filter(|(k, c)| c.slots > 0 && now - c.at < CLAIM_TTL && *k != key)
            .filter(|(_, c)| {
                *shares.entry(&c.pool).or_insert_with(|| {
                    c.pool == *pool
                        || nodes
                            .iter()
                            .any(|n| in_pool(n, pool) && in_pool(n, &c.pool))
                })
            })
            .map(|(_, c)| c.slots)
            .sum()
    }

    /// Records `slots` as this gateway's claim on `pool`, in place of its last one.
    pub fn claim(&self, key: &GatewayKey, pool: &BTreeMap<String, String>, slots: i32, now: f64) {
        let claim = Claim {
            pool: pool.clone(),
            slots,
            at: now,
        };
        self.lock().insert(key.clone(), claim);
    }

    pub fn forget(&self, key: &GatewayKey) {
        self.lock().remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Resources;

    fn node(name: &str, labels: &[(&str, &str)]) -> Node {
        Node {
            name: name.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            taints: vec![],
            allocatable: Resources::new(8000, 32 << 30, 110),
            requested: Resources::default(),
            unschedulable: false,
        }
    }

    fn pool(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// Claims count against the gateways whose pools share a node, never against the claimant,
    /// and lapse when the claimant stops deciding.
    #[test]
    fn claims_count_against_gateways_on_shared_nodes() {
        let nodes = [
            node("a", &[("mykey4pod", "asmgateway"), ("team", "x")]),
            node("b", &[("pool", "other")]),
        ];
        let gw = pool(&[("mykey4pod", "asmgateway")]);
        let team = pool(&[("team", "x")]);
        let other = pool(&[("pool", "other")]);
        let (g1, g2, g3) = (
            GatewayKey::new("istio-system", "g1"),
            GatewayKey::new("istio-system", "g2"),
            GatewayKey::new("team-b", "g3"),
        );
        let ledger = Ledger::default();
        ledger.claim(&g1, &gw, 8, 0.0);
        assert_eq!(ledger.elsewhere(&g1, &gw, &nodes, 1.0), 0, "its own claim");
        assert_eq!(ledger.elsewhere(&g2, &gw, &nodes, 1.0), 8, "same pool");
        assert_eq!(
            ledger.elsewhere(&g3, &team, &nodes, 1.0),
            8,
            "another selector, a shared node"
        );
        assert_eq!(
            ledger.elsewhere(&g3, &other, &nodes, 1.0),
            0,
            "no shared node"
        );
        ledger.claim(&g2, &gw, 3, 0.0);
        assert_eq!(ledger.elsewhere(&g3, &team, &nodes, 1.0), 11);
        ledger.claim(&g1, &gw, 0, 0.0);
        assert_eq!(
            ledger.elsewhere(&g2, &gw, &nodes, 1.0),
            0,
            "placed: the claim is gone"
        );
        ledger.forget(&g2);
        assert_eq!(ledger.elsewhere(&g3, &team, &nodes, 1.0), 0);
        ledger.claim(&g1, &gw, 5, 100.0);
        assert_eq!(
            ledger.elsewhere(&g2, &gw, &nodes, 100.0 + CLAIM_TTL - 1.0),
            5
        );
        assert_eq!(
            ledger.elsewhere(&g2, &gw, &nodes, 100.0 + CLAIM_TTL),
            0,
            "lapsed: its gateway stopped deciding"
        );
    }
}
