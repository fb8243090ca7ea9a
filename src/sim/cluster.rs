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
    /// Long-lived client connections pinned to it ([`Connections`]).
    pub connections: f64,
    /// Its connections by when they opened, `(time, count)` in 10 s buckets, kept only under
    /// a maximum connection age.
    pub cohorts: Vec<(f64, f64)>,
}

impl SimPod {
    pub fn ready(&self, now: f64) -> bool {
        self.gone_at.is_none() && self.ready_at.is_some_and(|r| r <= now)
    }

    /// Takes `n` new connections at `now`. A cohort is dated by its connections' mean opening
    /// time, so that a maximum age closes them on time on average.
    fn accept(&mut self, n: f64, now: f64, aged: bool) {
        self.connections += n;
        if aged && n > 0.0 {
            match self.cohorts.last_mut() {
                Some((t, c)) if now - *t < COHORT_SECONDS => {
                    *t = (*t * *c + now * n) / (*c + n);
                    *c += n;
                }
                _ => self.cohorts.push((now, n)),
            }
        }
    }
}

/// Width of a pod's connection cohorts under a maximum connection age.
const COHORT_SECONDS: f64 = 10.0;

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

/// Long-lived client connections (websockets, gRPC and HTTP/2 streams): a share of the load
/// rides them, each lives an exponential time, new ones arrive as a Poisson stream dealt over
/// the ready pods that are not terminating as the load balancer's [`Dealing`] says (by weight
/// while a slow start ramps some), and
/// each stays on its pod until it closes or the pod goes. A pod that goes resets what it still
/// holds: its drain only stops new ones arriving. A client whose connection was cut (its pod
/// went, or a maximum connection age closed it) connects again at once, dealt as a new one.
/// Pods of one age differ by their connections' random lifetimes, as real pods do.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Connections {
    /// Share of the load's requests carried on long-lived connections.
    pub long_lived_share: f64,
    /// Requests per second one long-lived connection carries.
    #[serde(default = "d_one")]
    pub requests_per_connection: f64,
    /// Mean lifetime of one, in seconds.
    #[serde(default = "d_lifetime")]
    pub mean_lifetime_seconds: f64,
    /// The gateway closes each connection at this age (Envoy's `max_connection_duration`, the
    /// usual fix for connections pinned to old pods); its client connects again. Unset: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age_seconds: Option<f64>,
    /// How the load balancer in front of the gateway deals new connections.
    #[serde(default)]
    pub dealing: Dealing,
}

/// A load balancer's scheduling of new connections over the gateway's ready pods.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Dealing {
    /// In turn (Alibaba Cloud's `rr` and `wrr` at equal weights, kube-proxy's iptables mode at
    /// random, which comes to the same on average): a new pod takes its share of new
    /// connections only.
    #[default]
    RoundRobin,
    /// Each to the pod with the fewest open (`wlc`, weighted least connections; Envoy's and
    /// IPVS's least-connection schedulers): a new pod takes new connections first until it
    /// holds as many as the others.
    LeastConnections,
}

fn d_one() -> f64 {
    1.0
}
fn d_lifetime() -> f64 {
    600.0
}

/// Seconds a request is in flight, for a pod's requests-in-flight gauge.
const REQUEST_SECONDS: f64 = 0.05;

/// What the connections did over a run.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ConnectionTally {
    /// Connections still open on pods when they went.
    pub resets: f64,
    /// Seconds the ready pods' connections stood at a max/mean of [`UNBALANCED`] or more.
    pub unbalanced_seconds: f64,
    /// Spells of such seconds (each from the first unbalanced second to the next balanced
    /// one), and the longest.
    pub unbalanced_spells: u32,
    pub longest_unbalanced: f64,
    /// Connections a maximum connection age closed.
    pub aged_out: f64,
    /// The spell running now.
    spell: f64,
}

/// A spread of connections over the ready pods (max / mean) at or above this is unbalanced.
pub const UNBALANCED: f64 = 1.25;

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
    /// The load's long-lived connections, if modelled.
    pub connections: Option<Connections>,
    /// The load balancer's slow start: new connections go to a pod by its ramp's weight.
    pub warmup: Option<crate::policy::Warmup>,
    pub connection_tally: ConnectionTally,
    /// Each pod's start as the drill made it, `(pool, creation to Ready in seconds)`, in the
    /// order they became ready (pods deleted first never start): the truth the engine's learnt
    /// start latencies are held to.
    pub starts: Vec<(Pool, f64)>,
    /// The last [`SimCluster::step`]: pods ready since then have just started.
    last_step: f64,
    /// Draws the connections' arrivals and lifetimes: apart from `rng`, so that modelling them
    /// leaves every scheduling draw as it was.
    connection_rng: ChaCha8Rng,
    /// The next ready pod a new connection is dealt to (round robin).
    deal: usize,
    /// Clients whose connection was cut, to be dealt again at the next step.
    reconnecting: f64,
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
            connections: None,
            warmup: None,
            connection_tally: ConnectionTally::default(),
            starts: Vec::new(),
            last_step: f64::NEG_INFINITY,
            connection_rng: ChaCha8Rng::seed_from_u64(seed ^ 0x636f_6e6e),
            deal: 0,
            reconnecting: 0.0,
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

    /// Moves the long-lived connections on by `dt` seconds at `load` requests per second:
    /// some close (a maximum age closes the old), new ones (and the clients cut since the last
    /// step) arrive on the ready pods that are not terminating as the [`Dealing`] says, and the
    /// spread is tallied.
    pub fn flow(&mut self, now: f64, dt: f64, load: f64) {
        let Some(m) = self.connections else { return };
        let lifetime = m.mean_lifetime_seconds.max(1.0);
        let close = 1.0 - (-dt / lifetime).exp();
        // At a steady load the open count settles at share × load / rate per connection.
        let arriving =
            m.long_lived_share * load.max(0.0) / m.requests_per_connection.max(1e-9) / lifetime
                * dt;
        let rng = &mut self.connection_rng;
        let max_age = m.max_age_seconds;
        for p in &mut self.pods {
            if let Some(age) = max_age {
                for (born, c) in &mut p.cohorts {
                    *c -= poisson(rng, *c * close).min(*c);
                    if now - *born >= age {
                        self.connection_tally.aged_out += *c;
                        self.reconnecting += *c;
                        *c = 0.0;
                    }
                }
                p.cohorts.retain(|(_, c)| *c > 0.0);
                p.connections = p.cohorts.iter().map(|(_, c)| c).sum();
            } else if p.connections > 0.0 {
                p.connections -= poisson(rng, p.connections * close).min(p.connections);
            }
        }
        let open: Vec<usize> = (0..self.pods.len())
            .filter(|i| self.pods[*i].ready(now))
            .collect();
        if open.is_empty() {
            // No spread without ready pods; the cut clients wait for one.
            self.connection_tally.spell = 0.0;
            return;
        }
        let again = self.reconnecting.floor();
        self.reconnecting -= again;
        let new = poisson(rng, arriving) as usize + again as usize;
        let aged = max_age.is_some();
        // A slow start: each pod its weight's part, while the weights differ (Envoy weighs only
        // then), as an expected count, unrounded, so a second of a few arrivals still follows
        // the weights.
        let weights: Vec<f64> = self.warmup.map_or_else(Vec::new, |w| {
            open.iter()
                .map(|i| {
                    let age = self.pods[*i].ready_at.map_or(f64::INFINITY, |r| now - r);
                    crate::engine::warmup::weight(&w, age)
                })
                .collect()
        });
        if m.dealing == Dealing::LeastConnections {
            // Each to the pod with the fewest per unit of weight (a ramp's weight, or 1), as
            // IPVS's wlc counts: an empty pod takes the next whatever its weight.
            let weight = |k: usize| weights.get(k).copied().unwrap_or(1.0).max(1e-6);
            for _ in 0..new {
                let mut best = 0;
                for k in 1..open.len() {
                    let (a, b) = (&self.pods[open[k]], &self.pods[open[best]]);
                    if a.connections / weight(k) < b.connections / weight(best) {
                        best = k;
                    }
                }
                self.pods[open[best]].accept(1.0, now, aged);
            }
        } else if weights.iter().any(|w| *w != weights[0]) {
            let total: f64 = weights.iter().sum();
            for (k, wk) in open.iter().zip(&weights) {
                self.pods[*k].accept(new as f64 * wk / total, now, aged);
            }
        } else {
            let (each, rest) = (new / open.len(), new % open.len());
            for k in 0..open.len() {
                let extra =
                    usize::from((k + open.len() - self.deal % open.len()) % open.len() < rest);
                self.pods[open[k]].accept((each + extra) as f64, now, aged);
            }
            self.deal = (self.deal + rest) % open.len();
        }
        let (mut max, mut sum) = (0.0_f64, 0.0);
        for i in &open {
            max = max.max(self.pods[*i].connections);
            sum += self.pods[*i].connections;
        }
        let mean = sum / open.len() as f64;
        let t = &mut self.connection_tally;
        if open.len() > 1 && mean >= 1.0 && max / mean >= UNBALANCED {
            t.unbalanced_seconds += dt;
            if t.spell == 0.0 {
                t.unbalanced_spells += 1;
            }
            t.spell += dt;
            t.longest_unbalanced = t.longest_unbalanced.max(t.spell);
        } else {
            t.spell = 0.0;
        }
    }

    /// What a pod's Envoy would say of its live work (ready pods, when connections are
    /// modelled): its connections, and the requests in flight of its share of `load`.
    fn drain(&self, p: &SimPod, now: f64, load: f64, ready: usize) -> Option<crate::model::Drain> {
        let m = self.connections?;
        (p.ready(now) && ready > 0).then(|| crate::model::Drain {
            connections: p.connections.round(),
            requests: (load / ready as f64 * REQUEST_SECONDS * (1.0 - m.long_lived_share)
                + p.connections * m.requests_per_connection * REQUEST_SECONDS)
                .round(),
        })
    }

    /// The gateway's pods as the engine sees them, with what the fast path reads of the
    /// `sampled` pods' Envoys at `load` (none: nothing read).
    pub fn gateway_pods_read(&self, now: f64, load: f64, sampled: usize) -> Vec<GatewayPod> {
        let mut pods = self.gateway_pods(now);
        if self.connections.is_none() {
            return pods;
        }
        // The fast path reads the ready pods by name, at most `sampled` of them
        // ([`crate::fastpath::Counters::sample`] once every pod has a baseline).
        let ready = self.pods.iter().filter(|p| p.ready(now)).count();
        let mut read: Vec<usize> = (0..self.pods.len())
            .filter(|i| self.pods[*i].ready(now))
            .collect();
        read.sort_by(|a, b| self.pods[*a].name.cmp(&self.pods[*b].name));
        for i in read.into_iter().take(sampled) {
            pods[i].drain = self.drain(&self.pods[i], now, load, ready);
        }
        pods
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
                ready_since: p.ready_at.filter(|r| *r <= now),
                drain: None,
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
                self.connection_tally.resets += p.connections;
                self.reconnecting += p.connections;
                if let Some(n) = p.node {
                    self.nodes[n].requested.sub(&requests);
                }
            } else {
                let p = &self.pods[i];
                if let (Some(ready), Some(node), None) = (p.ready_at, p.node, p.gone_at)
                    && ready > self.last_step
                    && ready <= now
                    && p.created_at >= 0.0
                {
                    self.starts.push((self.pools[node], ready - p.created_at));
                }
                i += 1;
            }
        }
        self.last_step = now;
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
            connections: 0.0,
            cohorts: Vec::new(),
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

/// A Poisson draw of mean `mean`: counted for small means, the normal approximation (rounded,
/// not below 0) for large ones.
fn poisson(rng: &mut ChaCha8Rng, mean: f64) -> f64 {
    if mean <= 0.0 {
        return 0.0;
    }
    if mean < 30.0 {
        let limit = (-mean).exp();
        let (mut k, mut p) = (0.0, unit(rng));
        while p > limit {
            k += 1.0;
            p *= unit(rng);
        }
        return k;
    }
    // Box-Muller; `1 - unit` is in (0, 1], so the logarithm is finite.
    let z = (-2.0 * (1.0 - unit(rng)).ln()).sqrt() * (std::f64::consts::TAU * unit(rng)).cos();
    (mean + z * mean.sqrt()).round().max(0.0)
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
