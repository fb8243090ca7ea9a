//! A simulated cluster: nodes, the gateway's Deployment and its pods, kube-scheduler (the model
//! in [`crate::scheduler`]), the ReplicaSet controller's scale-in order, rolling updates, and pod
//! start and termination latencies per pool. Everything runs on the caller's virtual clock and
//! draws randomness from one seeded RNG, so a run is reproducible.

use rand_chacha::ChaCha8Rng;
use rand_core::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::model::{GatewayPod, Node, PodTemplate, Pool, classify_node};
use crate::policy::PoolWeights;
use crate::scheduler;

/// Start and stop latencies.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Latencies {
    /// Bind to ready on an ECS node that has the image.
    #[serde(default = "d_ecs_start")]
    pub ecs_start_seconds: f64,
    /// Bind to ready on a virtual node: the ECI instance is created and pulls the image.
    #[serde(default = "d_eci_start")]
    pub eci_start_seconds: f64,
    /// Each start latency is scaled by a factor drawn uniformly from `1 ± jitter`.
    #[serde(default = "d_jitter")]
    pub jitter: f64,
    /// Graceful termination: the pod stops serving at once but holds its node (and its ECI bill)
    /// this long.
    #[serde(default = "d_termination")]
    pub termination_seconds: f64,
}

fn d_ecs_start() -> f64 {
    5.0
}
fn d_eci_start() -> f64 {
    40.0
}
fn d_jitter() -> f64 {
    0.2
}
fn d_termination() -> f64 {
    15.0
}

impl Default for Latencies {
    fn default() -> Self {
        Self {
            ecs_start_seconds: d_ecs_start(),
            eci_start_seconds: d_eci_start(),
            jitter: d_jitter(),
            termination_seconds: d_termination(),
        }
    }
}

/// One simulated gateway pod.
#[derive(Clone, Debug, PartialEq)]
pub struct SimPod {
    pub name: String,
    /// Pod-template revision it was created from.
    pub revision: u32,
    pub node: Option<usize>,
    pub created_at: f64,
    /// When it becomes (or became) ready, once bound.
    pub ready_at: Option<f64>,
    /// Set when deleted: it is gone at this time.
    pub gone_at: Option<f64>,
    pub deletion_cost: Option<i32>,
    /// Stands for the apiserver's random UID: the ReplicaSet controller's last tie-break.
    pub uid: u64,
}

impl SimPod {
    pub fn ready(&self, now: f64) -> bool {
        self.gone_at.is_none() && self.ready_at.is_some_and(|r| r <= now)
    }
}

/// The gateway Deployment's rolling-update settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RollingUpdate {
    /// Fraction of replicas (rounded up), as `maxSurge: 25%`.
    pub max_surge: f64,
    /// Fraction of replicas (rounded down), as `maxUnavailable: 25%`.
    pub max_unavailable: f64,
}

impl Default for RollingUpdate {
    fn default() -> Self {
        Self {
            max_surge: 0.25,
            max_unavailable: 0.25,
        }
    }
}

/// The simulated cluster.
#[derive(Clone, Debug)]
pub struct SimCluster {
    pub nodes: Vec<Node>,
    pub pods: Vec<SimPod>,
    pub replicas: i32,
    pub template: PodTemplate,
    pub revision: u32,
    pub rolling: RollingUpdate,
    pub latencies: Latencies,
    pub weights_plugin: scheduler::Weights,
    pub rollouts: u32,
    next_pod: u64,
    rng: ChaCha8Rng,
    /// Pool of each node under the policy's selectors, cached.
    pools: Vec<Pool>,
}

impl SimCluster {
    pub fn new(
        nodes: Vec<Node>,
        template: PodTemplate,
        replicas: i32,
        latencies: Latencies,
        seed: u64,
        pool_of: impl Fn(&Node) -> Pool,
    ) -> Self {
        let pools = nodes.iter().map(pool_of).collect();
        Self {
            nodes,
            pods: Vec::new(),
            replicas,
            template,
            revision: 1,
            rolling: RollingUpdate::default(),
            latencies,
            weights_plugin: scheduler::Weights::default(),
            rollouts: 0,
            next_pod: 0,
            rng: ChaCha8Rng::seed_from_u64(seed),
            pools,
        }
    }

    /// Starts the gateway already running: `replicas` pods scheduled and ready at time 0.
    pub fn settle(&mut self) {
        self.reconcile(-1e9);
        self.schedule(-1e9);
        for p in &mut self.pods {
            p.ready_at = p.ready_at.map(|_| -1e9);
        }
    }

    pub fn pool_of(&self, node: Option<usize>) -> Pool {
        node.map_or(Pool::Pending, |n| self.pools[n])
    }

    /// Live pods: not deleted.
    pub fn live(&self) -> impl Iterator<Item = &SimPod> {
        self.pods.iter().filter(|p| p.gone_at.is_none())
    }

    pub fn rollout_in_progress(&self) -> bool {
        self.live().any(|p| p.revision != self.revision)
    }

    /// The current preferred weights of the template, read as the live agent reads them.
    pub fn weights(&self) -> Option<PoolWeights> {
        match self.template.preferred_terms.as_slice() {
            [ecs, eci] => Some(PoolWeights {
                ecs: ecs.weight,
                eci: eci.weight,
            }),
            _ => None,
        }
    }

    /// A template change: the Deployment rolls every pod.
    pub fn set_weights(&mut self, w: PoolWeights) {
        if self.weights() == Some(w) {
            return;
        }
        if let [ecs, eci] = self.template.preferred_terms.as_mut_slice() {
            ecs.weight = w.ecs;
            eci.weight = w.eci;
        }
        self.revision += 1;
        self.rollouts += 1;
    }

    pub fn set_deletion_cost(&mut self, pod: &str, cost: i32) {
        if let Some(p) = self
            .pods
            .iter_mut()
            .find(|p| p.name == pod && p.gone_at.is_none())
        {
            p.deletion_cost = Some(cost);
        }
    }

    /// Evicts a pod (the ReplicaSet replaces it).
    pub fn evict(&mut self, pod: &str, now: f64) {
        let grace = self.latencies.termination_seconds;
        if let Some(p) = self
            .pods
            .iter_mut()
            .find(|p| p.name == pod && p.gone_at.is_none())
        {
            p.gone_at = Some(now + grace);
        }
    }

    /// What this Deployment's pods hold on each node: bound ones, draining included (they
    /// hold their room until gone). A drill of several gateways adds the others' to each view.
    pub fn held_per_node(&self) -> Vec<crate::model::Resources> {
        let mut held = vec![crate::model::Resources::default(); self.nodes.len()];
        for p in &self.pods {
            if let Some(n) = p.node {
                held[n].add(&self.template.requests);
            }
        }
        held
    }

    /// The gateway's pods as the engine sees them.
    pub fn gateway_pods(&self, now: f64) -> Vec<GatewayPod> {
        self.pods
            .iter()
            .map(|p| GatewayPod {
                name: p.name.clone(),
                node: p.node.map(|n| self.nodes[n].name.clone()),
                pool: self.pool_of(p.node),
                ready: p.ready(now),
                // A simulated pod is Running once it started, and Ready with it.
                pending: !p.ready(now),
                terminating: p.gone_at.is_some(),
                requests: self.template.requests,
                deletion_cost: p.deletion_cost,
                created_at: p.created_at,
            })
            .collect()
    }

    /// Advances the cluster to `now`: terminations finish, controllers reconcile, the scheduler
    /// binds pending pods.
    pub fn step(&mut self, now: f64) {
        let requests = self.template.requests;
        let mut i = 0;
        while i < self.pods.len() {
            if self.pods[i].gone_at.is_some_and(|g| g <= now) {
                let p = self.pods.swap_remove(i);
                if let Some(n) = p.node {
                    self.nodes[n].requested.sub(&requests);
                }
            } else {
                i += 1;
            }
        }
        self.reconcile(now);
        self.schedule(now);
    }

    /// Deployment and ReplicaSet controllers.
    fn reconcile(&mut self, now: f64) {
        let replicas = self.replicas.max(0) as usize;
        let current_rev = self.revision;
        let (new_live, old_live): (Vec<usize>, Vec<usize>) = self
            .pods
            .iter()
            .enumerate()
            .filter(|(_, p)| p.gone_at.is_none())
            .map(|(i, _)| i)
            .partition(|i| self.pods[*i].revision == current_rev);
        if old_live.is_empty() {
            // Plain ReplicaSet: create or delete to match.
            if new_live.len() < replicas {
                for _ in new_live.len()..replicas {
                    self.create_pod(now);
                }
            } else if new_live.len() > replicas {
                self.delete_some(&new_live, new_live.len() - replicas, now);
            }
            return;
        }
        // Rolling update (`pkg/controller/deployment/rolling.go`).
        let surge = (replicas as f64 * self.rolling.max_surge).ceil() as usize;
        let unavailable = (replicas as f64 * self.rolling.max_unavailable).floor() as usize;
        // Both zero is invalid upstream; validation defaults maxUnavailable to 1.
        let (surge, unavailable) = if surge == 0 && unavailable == 0 {
            (0, 1)
        } else {
            (surge, unavailable)
        };
        // reconcileNewReplicaSet: surge up to replicas + maxSurge pods in all.
        let total = new_live.len() + old_live.len();
        let max_total = replicas + surge;
        if new_live.len() > replicas {
            self.delete_some(&new_live, new_live.len() - replicas, now);
        } else if total < max_total {
            let up = (max_total - total).min(replicas - new_live.len());
            for _ in 0..up {
                self.create_pod(now);
            }
        }
        // reconcileOldReplicaSets: keep replicas - maxUnavailable available.
        let min_available = replicas.saturating_sub(unavailable);
        let all = self.live().count();
        let new_unavailable = self
            .live()
            .filter(|p| p.revision == current_rev && !p.ready(now))
            .count();
        let mut budget = all.saturating_sub(min_available + new_unavailable);
        if budget == 0 {
            return;
        }
        // cleanupUnhealthyReplicas first: old pods that are not available.
        let old_unready: Vec<usize> = old_live
            .iter()
            .copied()
            .filter(|i| !self.pods[*i].ready(now))
            .collect();
        let n = old_unready.len().min(budget);
        if n > 0 {
            self.delete_some(&old_unready, n, now);
            budget -= n;
        }
        // scaleDownOldReplicaSetsForRollingUpdate: as availability allows.
        let available = self.live().filter(|p| p.ready(now)).count();
        let old_ready: Vec<usize> = old_live
            .iter()
            .copied()
            .filter(|i| self.pods[*i].gone_at.is_none())
            .collect();
        let n = available
            .saturating_sub(min_available)
            .min(budget)
            .min(old_ready.len());
        if n > 0 {
            self.delete_some(&old_ready, n, now);
        }
    }

    fn create_pod(&mut self, now: f64) {
        self.next_pod += 1;
        self.pods.push(SimPod {
            name: format!("gateway-{}-{:05}", self.revision, self.next_pod),
            revision: self.revision,
            node: None,
            created_at: now,
            ready_at: None,
            gone_at: None,
            deletion_cost: None,
            uid: victims::uid(self.next_pod),
        });
    }

    /// Deletes `n` of `candidates` in the ReplicaSet controller's order, ranked against every
    /// active pod of the Deployment (all revisions), as `getIndirectlyRelatedPods` lists them.
    fn delete_some(&mut self, candidates: &[usize], n: usize, now: f64) {
        let ranked: Vec<victims::Candidate> = candidates
            .iter()
            .map(|i| candidate(&self.pods[*i], now))
            .collect();
        let related: Vec<Option<usize>> = self.live().map(|p| p.node).collect();
        let chosen: Vec<usize> = victims::to_delete(&ranked, &related, n, now)
            .into_iter()
            .map(|k| candidates[k])
            .collect();
        let grace = self.latencies.termination_seconds;
        for i in chosen {
            let p = &mut self.pods[i];
            // An unbound pod has nothing to drain.
            p.gone_at = Some(if p.node.is_some() { now + grace } else { now });
        }
    }

    /// kube-scheduler, one pending pod at a time, oldest first.
    fn schedule(&mut self, now: f64) {
        let pending: Vec<usize> = (0..self.pods.len())
            .filter(|i| self.pods[*i].node.is_none() && self.pods[*i].gone_at.is_none())
            .collect();
        for i in pending {
            // PodTopologySpread counts the pods of the pending pod's own ReplicaSet (the
            // template revision), not terminating, on each node.
            let revision = self.pods[i].revision;
            let mut same_set = vec![0i64; self.nodes.len()];
            for p in &self.pods {
                if let (Some(n), None, true) = (p.node, p.gone_at, p.revision == revision) {
                    same_set[n] += 1;
                }
            }
            let index: std::collections::HashMap<&str, usize> = self
                .nodes
                .iter()
                .enumerate()
                .map(|(k, n)| (n.name.as_str(), k))
                .collect();
            let rng = &mut self.rng;
            let chosen = scheduler::select_node(
                &self.template,
                &self.nodes,
                &self.weights_plugin,
                |n| index.get(n.name.as_str()).map_or(0, |k| same_set[*k]),
                |n| (rng.next_u64() % n as u64) as usize,
            )
            .map(|n| n.name.clone());
            let Some(name) = chosen else { continue };
            let Some(idx) = self.nodes.iter().position(|n| n.name == name) else {
                continue;
            };
            self.nodes[idx].requested.add(&self.template.requests);
            let base = match self.pools[idx] {
                Pool::Eci => self.latencies.eci_start_seconds,
                _ => self.latencies.ecs_start_seconds,
            };
            let j = self.latencies.jitter.clamp(0.0, 1.0);
            let factor = if j > 0.0 {
                1.0 - j + 2.0 * j * unit(&mut self.rng)
            } else {
                1.0
            };
            let p = &mut self.pods[i];
            p.node = Some(idx);
            p.ready_at = Some(now + base * factor);
        }
    }
}

fn unit(rng: &mut ChaCha8Rng) -> f64 {
    (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
}

/// What the ReplicaSet controller reads of a simulated pod when it ranks victims. The model
/// knows no restarts, and a bound pod that is not ready yet is still starting (Pending).
pub fn candidate(p: &SimPod, now: f64) -> victims::Candidate {
    let ready = p.ready(now);
    victims::Candidate {
        node: p.node,
        phase: if ready {
            victims::Phase::Running
        } else {
            victims::Phase::Pending
        },
        ready,
        ready_since: p.ready_at.filter(|_| ready),
        restarts: (0, 0),
        deletion_cost: p.deletion_cost.unwrap_or(0),
        created: Some(p.created_at),
        uid: p.uid,
    }
}

/// Pool classifier for the policy's selectors.
pub fn pool_classifier(
    ecs: std::collections::BTreeMap<String, String>,
    eci: std::collections::BTreeMap<String, String>,
) -> impl Fn(&Node) -> Pool {
    move |n| classify_node(n, &ecs, &eci)
}

pub mod victims;

#[cfg(test)]
mod tests;
