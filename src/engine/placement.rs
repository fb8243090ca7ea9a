//! Placement: where the desired replicas will land, which weights steer them, which pods go
//! first on scale-in, and which ECI pods could come back to ECS.

use serde::{Deserialize, Serialize};

use crate::model::{Drain, GatewayPod, Node, PodTemplate, Pool, classify_node};
use crate::policy::{ElasticGatewaySpec, PoolWeights};
use crate::scheduler;

/// Deletion cost for gateway pods on ECS: kept longest.
pub const ECS_DELETION_COST: i32 = 100;
/// Deletion cost for gateway pods on ECI: removed first on scale-in.
pub const ECI_DELETION_COST: i32 = -100;
/// Deletion cost of a ready pod chosen to go on this scale-in ([`victims`]): below both pools',
/// so the ReplicaSet takes exactly these among the ready pods.
pub const VICTIM_DELETION_COST: i32 = -1000;

/// The two pools as they stand.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Survey {
    pub ecs_pods: i32,
    pub eci_pods: i32,
    pub pending_pods: i32,
    pub other_pods: i32,
    pub ready_pods: i32,
    /// The gateway's own pods being deleted (a rollout, a scale-in): the room they hold on
    /// ECS is about to be free.
    #[serde(default)]
    pub terminating_pods: i32,
    /// ECS nodes the gateway may use (pool labels, taints tolerated, required affinity).
    pub ecs_nodes: i32,
    /// More gateway pods that fit on those nodes now, less the headroom and the pending pods.
    pub ecs_room: i32,
    /// The gateway pods ECS can hold: those running there, its own pending pods (bound for
    /// ECS first) and the free slots, counting the room its terminating pods are about to free.
    /// A rollout (surge pods pending, old pods terminating) leaves it unchanged.
    pub ecs_capacity: i32,
    /// ECS slots other gateways on these nodes have claimed (see [`Survey::less_claimed`]).
    #[serde(default)]
    pub ecs_claimed_elsewhere: i32,
}

impl Survey {
    /// The survey with `claimed` slots of ECS taken by other gateways' pods not placed yet: less
    /// room, and less capacity (never below what this gateway's own pods already hold).
    pub fn less_claimed(mut self, claimed: i32) -> Self {
        let claimed = claimed.max(0);
        self.ecs_claimed_elsewhere = claimed;
        self.ecs_room = (self.ecs_room - claimed).max(0);
        let own = self
            .ecs_pods
            .saturating_add(self.pending_pods.min(self.ecs_capacity - self.ecs_pods));
        self.ecs_capacity = (self.ecs_capacity - claimed).max(own.min(self.ecs_capacity));
        self
    }
}

/// Counts the gateway's pods per pool and the ECS room for more.
pub fn survey(
    policy: &ElasticGatewaySpec,
    template: &PodTemplate,
    pods: &[GatewayPod],
    nodes: &[Node],
) -> Survey {
    let mut s = Survey::default();
    for p in pods {
        if p.terminating {
            s.terminating_pods += 1;
            continue;
        }
        match p.pool {
            Pool::Ecs => s.ecs_pods += 1,
            Pool::Eci => s.eci_pods += 1,
            Pool::Pending => s.pending_pods += 1,
            Pool::Other => s.other_pods += 1,
        }
        s.ready_pods += i32::from(p.ready);
    }
    let (ecs_sel, eci_sel) = (
        &policy.pools.ecs.node_selector,
        &policy.pools.eci.node_selector,
    );
    // Slots free now, and once the gateway's own terminating pods are gone (within their grace
    // period): the room for more is what is free now; what ECS holds counts the room soon free.
    let (mut now, mut soon): (i64, i64) = (0, 0);
    for node in nodes {
        if classify_node(node, ecs_sel, eci_sel) != Pool::Ecs
            || scheduler::static_fit(template, node).is_err()
        {
            continue;
        }
        s.ecs_nodes += 1;
        let free = node.free();
        now += free.fits_count(&template.requests);
        let mut freed = free;
        for p in pods
            .iter()
            .filter(|p| p.terminating && p.node.as_deref() == Some(&node.name))
        {
            freed.add(&p.requests);
        }
        soon += freed.fits_count(&template.requests);
    }
    let headroom = i64::from(policy.placement.ecs_headroom_pods);
    // Pending pods will most likely take ECS room first (the weights prefer it): not room for
    // more, but part of what ECS holds.
    let room = now - headroom - i64::from(s.pending_pods);
    s.ecs_room = room.clamp(0, i64::from(i32::MAX)) as i32;
    let held = (soon - headroom).clamp(0, i64::from(i32::MAX)) as i32;
    s.ecs_capacity = s.ecs_pods.saturating_add(held.max(s.ecs_room));
    s
}

/// Hysteresis memory for the weights.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WeightMemory {
    /// Gateway pods seen bound to ECI while ECS had room for them.
    #[serde(default)]
    pub misplaced: u32,
    pub exhausted_since: Option<f64>,
    pub recovered_since: Option<f64>,
    pub last_change: Option<f64>,
    pub changes: u32,
}

/// The weights part of a decision.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WeightPlan {
    pub current: PoolWeights,
    pub target: PoolWeights,
    pub reason: String,
}

impl WeightPlan {
    pub fn changed(&self) -> bool {
        self.current != self.target
    }
}

/// Inputs of one weight step.
pub struct WeightInput {
    pub now: f64,
    pub observed: Option<PoolWeights>,
    pub desired: i32,
    pub survey_room: i32,
    pub ecs_capacity: i32,
    pub rollout_in_progress: bool,
    /// Most gateway pods allowed on ECI, if capped.
    pub eci_cap: Option<i32>,
    /// A quiet time: load well below the ready capacity, no recent scale-up, no rollout.
    pub quiet: bool,
}

/// Gateway pods created after `since` that are bound to ECI although ECS still has room: the
/// scheduler's soft preference lost to other scores. ECS room only shrinks as pods bind, so
/// room now means there was room when they were scheduled (a pod freed meanwhile can make this
/// an over-count by the pods freed, which the caller bounds by counting only new pods).
pub fn misplaced(pods: &[GatewayPod], survey: &Survey, since: f64) -> u32 {
    let new_on_eci = pods
        .iter()
        .filter(|p| !p.terminating && p.pool == Pool::Eci && p.created_at > since)
        .count();
    new_on_eci.min(survey.ecs_room.max(0) as usize) as u32
}

/// Shifts weights only when the balance must shift and has for a while: to the exhausted
/// weights after ECS stayed full through `exhaustedAfterSeconds`, back after ECS could hold
/// every desired replica through `recoveredAfterSeconds`; never more often than
/// `minWeightChangeIntervalSeconds` and never during a rollout, because each change rolls every
/// gateway pod.
pub fn weights(policy: &ElasticGatewaySpec, mem: &mut WeightMemory, i: &WeightInput) -> WeightPlan {
    let p = &policy.placement;
    let current = i.observed.unwrap_or(p.normal_weights);
    let exhausted = i.survey_room == 0 && i.desired > i.ecs_capacity;
    let recovered = i.desired <= i.ecs_capacity;
    mem.exhausted_since = if exhausted {
        mem.exhausted_since.or(Some(i.now))
    } else {
        None
    };
    mem.recovered_since = if recovered {
        mem.recovered_since.or(Some(i.now))
    } else {
        None
    };
    let held = |since: Option<f64>, need: i64| since.is_some_and(|s| i.now - s >= need as f64);

    // In the opt-in yield mode the user asked for ECI under pressure: misplacement is moot there.
    let yield_mode = p.exhausted_weights != p.normal_weights;
    let strengthen = mem.misplaced > 0 && p.strong_weights != p.normal_weights && !yield_mode;
    let (target, why) = if current == p.normal_weights && strengthen {
        if !i.quiet {
            return WeightPlan {
                current,
                target: current,
                reason: format!(
                    "{} gateway pods landed on ECI while ECS had room; strengthening the ECS \
                     preference at the next quiet time",
                    mem.misplaced
                ),
            };
        }
        (
            p.strong_weights,
            format!(
                "{} gateway pods landed on ECI while ECS had room: stronger ECS preference",
                mem.misplaced
            ),
        )
    } else if current == p.strong_weights && p.strong_weights != p.normal_weights {
        return WeightPlan {
            current,
            target: current,
            reason: "strong ECS preference".into(),
        };
    } else if current == p.normal_weights {
        if p.exhausted_weights != p.normal_weights
            && held(mem.exhausted_since, p.exhausted_after_seconds)
        {
            // The rollout re-creates every pod under the new weights: when they prefer ECI, the
            // whole fleet lands there, and the ECI cap would then force the count down.
            if let Some(cap) = i
                .eci_cap
                .filter(|cap| p.exhausted_weights.eci > p.exhausted_weights.ecs && i.desired > *cap)
            {
                return WeightPlan {
                    current,
                    target: current,
                    reason: format!(
                        "ECS exhausted, but {current} -> {} would put all {} replicas on ECI, above its cap of {cap}; keeping {current}",
                        p.exhausted_weights, i.desired
                    ),
                };
            }
            (
                p.exhausted_weights,
                format!(
                    "ECS exhausted for {}s (desired {} > ECS capacity {})",
                    p.exhausted_after_seconds, i.desired, i.ecs_capacity
                ),
            )
        } else {
            return WeightPlan {
                current,
                target: current,
                reason: "normal weights; ECS preferred".into(),
            };
        }
    } else if current == p.exhausted_weights {
        if held(mem.recovered_since, p.recovered_after_seconds) {
            (
                p.normal_weights,
                format!(
                    "ECS can hold all {} desired replicas again for {}s",
                    i.desired, p.recovered_after_seconds
                ),
            )
        } else {
            return WeightPlan {
                current,
                target: current,
                reason: "ECS still exhausted; bursting on ECI".into(),
            };
        }
    } else {
        (
            p.normal_weights,
            format!("observed weights {current} are not the policy's; restoring normal weights"),
        )
    };
    if i.rollout_in_progress {
        return WeightPlan {
            current,
            target: current,
            reason: format!("{why}; waiting: a rollout is in progress"),
        };
    }
    if let Some(last) = mem.last_change {
        let wait = p.min_weight_change_interval_seconds as f64 - (i.now - last);
        if wait > 0.0 {
            return WeightPlan {
                current,
                target: current,
                reason: format!("{why}; rate-limited for {wait:.0}s more"),
            };
        }
    }
    mem.last_change = Some(i.now);
    mem.changes += 1;
    WeightPlan {
        current,
        target,
        reason: format!("{current} -> {target}: {why}"),
    }
}

/// The deletion cost each pod should carry, for the pods whose annotation differs: its pool's,
/// or [`VICTIM_DELETION_COST`] for the `victims` of this scale-in (a victim of an earlier one
/// that is still here goes back to its pool's).
pub fn deletion_costs(pods: &[GatewayPod], victims: &[String]) -> Vec<(String, i32)> {
    pods.iter()
        .filter(|p| !p.terminating)
        .filter_map(|p| {
            let want = if victims.contains(&p.name) {
                VICTIM_DELETION_COST
            } else {
                match p.pool {
                    Pool::Ecs => ECS_DELETION_COST,
                    Pool::Eci => ECI_DELETION_COST,
                    // No pool's cost: only a victim's is taken back (0 is the default's rank).
                    Pool::Pending | Pool::Other
                        if p.deletion_cost == Some(VICTIM_DELETION_COST) =>
                    {
                        0
                    }
                    Pool::Pending | Pool::Other => return None,
                }
            };
            (p.deletion_cost != Some(want)).then(|| (p.name.clone(), want))
        })
        .collect()
}

/// The ready pods a scale-in of `n` should remove, by what removing each would cut, with the
/// connections each holds (read, or its pool's mean), when some pod's Envoy said (`None`
/// otherwise: the pool costs alone steer the ReplicaSet, as before).
///
/// The ReplicaSet's own first choices stay first (unbound, pending, not ready: they carry no
/// traffic, and it takes them whatever their cost), then ECI before ECS as the pool costs say,
/// then the fewest open connections, the fewest requests in flight, the name. A pod whose
/// gauges were not read counts at the mean of its pool's read pods (at 0 when none of its pool
/// was read): its place is today's, by pool, not a guess that it is empty.
pub fn victims(pods: &[GatewayPod], n: usize) -> Option<Vec<(String, f64)>> {
    let active: Vec<&GatewayPod> = pods.iter().filter(|p| !p.terminating).collect();
    if n == 0 || active.iter().all(|p| p.drain.is_none()) {
        return None;
    }
    let serving = |p: &GatewayPod| p.ready && !p.pending && p.node.is_some();
    let unready = active.iter().filter(|p| !serving(p)).count();
    let rank = |pool: Pool| match pool {
        Pool::Eci => 0,
        Pool::Pending | Pool::Other => 1,
        Pool::Ecs => 2,
    };
    let mean = |pool: Pool| {
        let read: Vec<Drain> = active
            .iter()
            .filter(|p| serving(p) && p.pool == pool)
            .filter_map(|p| p.drain)
            .collect();
        let k = read.len().max(1) as f64;
        Drain {
            connections: read.iter().map(|d| d.connections).sum::<f64>() / k,
            requests: read.iter().map(|d| d.requests).sum::<f64>() / k,
        }
    };
    let mut ready: Vec<(&GatewayPod, Drain)> = active
        .iter()
        .filter(|p| serving(p))
        .map(|p| (*p, p.drain.unwrap_or_else(|| mean(p.pool))))
        .collect();
    ready.sort_by(|(a, da), (b, db)| {
        rank(a.pool)
            .cmp(&rank(b.pool))
            .then(da.connections.total_cmp(&db.connections))
            .then(da.requests.total_cmp(&db.requests))
            .then_with(|| a.name.cmp(&b.name))
    });
    Some(
        ready
            .into_iter()
            .take(n.saturating_sub(unready))
            .map(|(p, d)| (p.name.clone(), d.connections))
            .collect(),
    )
}

/// The open connections of the serving pods: as read, a pod not read at its pool's mean of
/// those read ([`victims`]' estimate), or the mean of all read when none of its pool was; 0
/// when none was read.
pub fn open_connections(pods: &[GatewayPod]) -> f64 {
    let serving: Vec<&GatewayPod> = pods
        .iter()
        .filter(|p| p.ready && !p.pending && !p.terminating && p.node.is_some())
        .collect();
    let mean_of = |pool: Option<Pool>| {
        let read: Vec<f64> = serving
            .iter()
            .filter(|p| pool.is_none_or(|pool| p.pool == pool))
            .filter_map(|p| p.drain.map(|d| d.connections))
            .collect();
        (!read.is_empty()).then(|| read.iter().sum::<f64>() / read.len() as f64)
    };
    let mean = |pool: Pool| mean_of(Some(pool)).or_else(|| mean_of(None)).unwrap_or(0.0);
    serving
        .iter()
        .map(|p| p.drain.map_or_else(|| mean(p.pool), |d| d.connections))
        .sum()
}

/// What removing `victims` cuts, by their Envoys (a pod not read counts nothing: the sum is
/// what is known).
pub fn cut(pods: &[GatewayPod], victims: &[String]) -> Drain {
    pods.iter()
        .filter(|p| victims.contains(&p.name))
        .filter_map(|p| p.drain)
        .fold(Drain::default(), |a, d| Drain {
            connections: a.connections + d.connections,
            requests: a.requests + d.requests,
        })
}

/// How the last scale-in's choice was honoured, seen at the next decision: of the pods chosen,
/// how many are gone or terminating (`as_chosen`) and how many still serve (`kept`: the
/// ReplicaSet took another, or the scale-in was not applied).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VictimCheck {
    pub as_chosen: u32,
    pub kept: u32,
}

/// Checks the `chosen` pods of the last scale-in against the pods now.
pub fn check_victims(chosen: &[String], pods: &[GatewayPod]) -> VictimCheck {
    let kept = chosen
        .iter()
        .filter(|v| pods.iter().any(|p| &p.name == *v && !p.terminating))
        .count() as u32;
    VictimCheck {
        as_chosen: chosen.len() as u32 - kept,
        kept,
    }
}

/// A make-before-break move in progress (`placement.swapBack`): pods were added to a steady
/// fleet of `base` pods while `ecs_pods` ran on ECS; once they run ready (on ECS, as planned)
/// the count goes back to `base` (or what the load asks since, if more), and the ReplicaSet
/// removes ECI pods first (lowest deletion cost).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Swap {
    pub base: i32,
    /// Pods added so far: a batch of up to a quarter of the count where the model puts the
    /// first on ECS, or one at a time up to [`SWAP_MAX_ADDED`] while they land on ECI.
    pub added: i32,
    pub ecs_pods: i32,
    pub started: f64,
}

/// Most pods one swap adds one at a time. While an added pod lands on ECI as well, the next is added: each
/// raises the virtual node's count for the scheduler's topology spreading (which favours the
/// node with fewer of the set), until affinity wins; once one runs on ECS, the count goes back
/// and every surplus pod goes, ECI first. Three covers an ECS node holding three gateway pods.
pub const SWAP_MAX_ADDED: i32 = 3;
/// A swap gives up waiting for its added pods after this long (an ECI start is well under it).
pub const SWAP_TIMEOUT_SECONDS: f64 = 300.0;
/// The longest wait between two swaps after misses (added pods that landed on ECI as well).
pub const SWAP_MAX_BACKOFF_SECONDS: f64 = 3600.0;

/// Seconds to wait after the last move before the next swap: the rebalance interval, doubled
/// for each swap in a row whose added pod landed on ECI too (the scheduler prefers the virtual
/// node on this cluster: retrying at once would only pay ECI starts), at most an hour.
pub fn swap_wait(interval_seconds: i64, misses: u32) -> f64 {
    let base = interval_seconds.max(0) as f64;
    (base * 2f64.powi(misses.min(16) as i32)).min(SWAP_MAX_BACKOFF_SECONDS.max(base))
}

/// Where the scheduler would put one more gateway pod now, by the model of its default profile
/// ([`scheduler`]): the pools of the best-scoring nodes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Landing {
    /// Every best node is an ECS node.
    Ecs,
    /// Every best node is outside ECS: `node` is one of them.
    Elsewhere { node: String, pool: Pool },
    /// The best nodes are in both (a tie the scheduler breaks at random).
    Either,
    /// No node passes the filters: the pod would stay Pending.
    Nowhere,
}

/// Predicts [`Landing`] for the next pod of `template` among `nodes`, counting the gateway's
/// live pods on each node for the topology spreading (its pods are one ReplicaSet when no
/// rollout runs, which is when a swap may start).
pub fn landing(
    policy: &ElasticGatewaySpec,
    template: &PodTemplate,
    pods: &[GatewayPod],
    nodes: &[Node],
) -> Landing {
    landing_with(policy, template, nodes, &|node: &Node| live_on(pods, node))
}

fn live_on(pods: &[GatewayPod], node: &Node) -> i64 {
    pods.iter()
        .filter(|p| !p.terminating && p.node.as_deref() == Some(node.name.as_str()))
        .count() as i64
}

fn landing_with(
    policy: &ElasticGatewaySpec,
    template: &PodTemplate,
    nodes: &[Node],
    on: &dyn Fn(&Node) -> i64,
) -> Landing {
    let (feasible, infeasible): (Vec<&Node>, Vec<&Node>) = nodes
        .iter()
        .partition(|n| scheduler::filter(template, n).is_ok());
    let counts: Vec<i64> = feasible.iter().map(|n| on(n)).collect();
    let elsewhere: Vec<(&Node, i64)> = infeasible
        .into_iter()
        .map(|n| (n, on(n)))
        .filter(|(_, c)| *c > 0)
        .collect();
    let scores = scheduler::score(
        template,
        &feasible,
        &counts,
        &elsewhere,
        &scheduler::Weights::default(),
    );
    let Some(best) = scores.iter().max() else {
        return Landing::Nowhere;
    };
    let (ecs_sel, eci_sel) = (
        &policy.pools.ecs.node_selector,
        &policy.pools.eci.node_selector,
    );
    let top: Vec<(&Node, Pool)> = feasible
        .iter()
        .zip(&scores)
        .filter(|(_, s)| *s == best)
        .map(|(n, _)| (*n, classify_node(n, ecs_sel, eci_sel)))
        .collect();
    let on_ecs = top.iter().filter(|(_, p)| *p == Pool::Ecs).count();
    match top.iter().find(|(_, p)| *p != Pool::Ecs) {
        None => Landing::Ecs,
        Some((node, pool)) if on_ecs == 0 => Landing::Elsewhere {
            node: node.name.clone(),
            pool: *pool,
        },
        Some(_) => Landing::Either,
    }
}

/// How many pods a swap must add, one after another, until the scheduler model puts one on
/// ECS (a tie counts): each pod placed off ECS raises that node's count for the topology
/// spreading and takes its room, so the next weighs differently. `Err` with where the first
/// would go when none of `most` does.
pub fn pods_until_ecs(
    policy: &ElasticGatewaySpec,
    template: &PodTemplate,
    pods: &[GatewayPod],
    nodes: &[Node],
    most: i32,
) -> Result<i32, Landing> {
    let mut nodes = nodes.to_vec();
    let mut added: std::collections::BTreeMap<String, i64> = Default::default();
    let mut first = None;
    for k in 1..=most.max(0) {
        let on = |n: &Node| live_on(pods, n) + added.get(&n.name).copied().unwrap_or(0);
        let l = landing_with(policy, template, &nodes, &on);
        match &l {
            Landing::Ecs | Landing::Either => return Ok(k),
            Landing::Nowhere => return Err(first.unwrap_or(l)),
            Landing::Elsewhere { node, .. } => {
                *added.entry(node.clone()).or_default() += 1;
                if let Some(n) = nodes.iter_mut().find(|n| n.name == *node) {
                    n.requested.add(&template.requests);
                }
            }
        }
        first.get_or_insert(l);
    }
    Err(first.unwrap_or(Landing::Nowhere))
}

/// What `placement.swapBack` did in one decision: the drill's report and the agent's metrics
/// count them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SwapEvent {
    /// One pod added: the scheduler model puts it (or one of the next two) on ECS.
    Started,
    /// An added pod landed off ECS, as the model planned: one more.
    OneMore,
    /// An added pod runs on ECS: the count goes back, ECI pods first.
    LandedEcs,
    /// The added pods all landed off ECS, against the model: the count goes back.
    Missed,
    /// The added pods were not ready in time: the count goes back.
    GaveUp,
    /// Not started: the model puts the next pods off ECS (the scheduler's scores outweigh the
    /// weights), so a swap would pay ECI starts and deletions for nothing.
    Held,
}

impl SwapEvent {
    pub const ALL: [SwapEvent; 6] = [
        SwapEvent::Started,
        SwapEvent::OneMore,
        SwapEvent::LandedEcs,
        SwapEvent::Missed,
        SwapEvent::GaveUp,
        SwapEvent::Held,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SwapEvent::Started => "started",
            SwapEvent::OneMore => "one_more",
            SwapEvent::LandedEcs => "landed_ecs",
            SwapEvent::Missed => "missed",
            SwapEvent::GaveUp => "gave_up",
            SwapEvent::Held => "held",
        }
    }
}

/// Chooses at most one ECI pod to move back to ECS, when the fleet is steady, fully ready, ECS
/// has room and the weights prefer ECS (so the replacement lands there).
pub struct MoveInput<'a> {
    pub pods: &'a [GatewayPod],
    pub survey: &'a Survey,
    pub steady: bool,
    pub weights_prefer_ecs: bool,
    pub rollout_in_progress: bool,
}

pub fn choose_move(i: &MoveInput<'_>) -> Result<String, &'static str> {
    if i.survey.eci_pods == 0 {
        return Err("no ECI pods");
    }
    if !i.steady {
        return Err("replica count not steady");
    }
    if i.rollout_in_progress {
        return Err("rollout in progress");
    }
    if !i.weights_prefer_ecs {
        return Err("weights do not prefer ECS");
    }
    if i.survey.ecs_room < 1 {
        return Err("no ECS room");
    }
    let live: Vec<&GatewayPod> = i.pods.iter().filter(|p| !p.terminating).collect();
    if i.survey.pending_pods > 0 || live.iter().any(|p| !p.ready) {
        return Err("not every gateway pod is ready");
    }
    live.iter()
        .filter(|p| p.pool == Pool::Eci)
        .max_by(|a, b| {
            a.created_at
                .total_cmp(&b.created_at)
                .then_with(|| a.name.cmp(&b.name))
        })
        .map(|p| p.name.clone())
        .ok_or("no ready ECI pod")
}
