//! spillway's own metrics: what it sees, what it decided and why, and what that costs.
//!
//! One prometheus-client registry under the `spillway_` prefix; every per-gateway series carries
//! `namespace` and `name` (of the ElasticGateway). The live agent and the drill record through
//! [`Metrics::record_decision`], so a drill's `/metrics` looks like a cluster's.
//!
//! Only the leader exports the per-gateway families: every replica decides (a standby keeps its
//! engine warm for a takeover), but dashboards and rules `sum()` over the replicas' scrapes, so a
//! standby exports only its process metrics (`spillway_leader 0`, `spillway_build_info`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

use crate::act::Plan;
use crate::engine::{Decision, Observation, Phase};
use crate::model::Pool;
use crate::policy::ElasticGatewaySpec;

type FGauge = Gauge<f64, AtomicU64>;
type FCounter = Counter<f64, AtomicU64>;
type HistFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Identifies one ElasticGateway.
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct Gw {
    pub namespace: String,
    pub name: String,
}

impl Gw {
    pub fn new(namespace: &str, name: &str) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PodLabels {
    namespace: String,
    name: String,
    pool: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabels {
    namespace: String,
    name: String,
    pool: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CostLabels {
    namespace: String,
    name: String,
    pool: String,
    currency: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CurrencyLabels {
    namespace: String,
    name: String,
    currency: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MetricLabels {
    namespace: String,
    name: String,
    metric: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    namespace: String,
    name: String,
    phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    namespace: String,
    name: String,
    action: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DrillLabels {
    namespace: String,
    name: String,
    drill: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    namespace: String,
    name: String,
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FencedLabels {
    reason: String,
    write: String,
}

/// What kind of change was applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ActionKind {
    Replicas,
    Weights,
    DeletionCost,
    Eviction,
}

impl ActionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ActionKind::Replicas => "replicas",
            ActionKind::Weights => "weights",
            ActionKind::DeletionCost => "deletion_cost",
            ActionKind::Eviction => "eviction",
        }
    }
}

/// What went wrong, for `spillway_errors_total{kind}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    PrometheusQuery,
    ApiRead,
    ApiWrite,
    Conflict,
    InvalidPolicy,
    /// An ElasticGateway the agent cannot decode (skipped; the others go on).
    Undecodable,
    /// A decision held because a watch has not synced or is failing.
    WatchUnsynced,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 7] = [
        ErrorKind::PrometheusQuery,
        ErrorKind::ApiRead,
        ErrorKind::ApiWrite,
        ErrorKind::Conflict,
        ErrorKind::InvalidPolicy,
        ErrorKind::Undecodable,
        ErrorKind::WatchUnsynced,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::PrometheusQuery => "prometheus_query",
            ErrorKind::ApiRead => "api_read",
            ErrorKind::ApiWrite => "api_write",
            ErrorKind::Conflict => "conflict",
            ErrorKind::InvalidPolicy => "invalid_policy",
            ErrorKind::Undecodable => "undecodable",
            ErrorKind::WatchUnsynced => "watch_unsynced",
        }
    }
}

/// Per-gateway memory the metrics need between decisions.
#[derive(Default)]
struct Memory {
    last_at: Option<f64>,
    /// When the load first asked for a different count than the current one.
    change_seen_at: Option<f64>,
    /// Label values seen, so that [`Metrics::forget`] removes every series of the gateway.
    metric_names: Vec<String>,
    currencies: Vec<String>,
    held: Option<String>,
    /// Drills marked on the gateway, exported last time.
    drills: Vec<String>,
}

/// The registry and every family in it.
pub struct Metrics {
    /// Per-gateway families: exported by the leader only.
    registry: Registry,
    /// This process: exported by every replica.
    process: Registry,
    pods: Family<PodLabels, Gauge>,
    phase: Family<PhaseLabels, Gauge>,
    desired: Family<Gw, Gauge>,
    current: Family<Gw, Gauge>,
    max: Family<Gw, Gauge>,
    min: Family<Gw, Gauge>,
    load: Family<MetricLabels, FGauge>,
    load_target: Family<MetricLabels, FGauge>,
    load_missing: Family<MetricLabels, Gauge>,
    ecs_free: Family<Gw, Gauge>,
    ecs_capacity: Family<Gw, Gauge>,
    eci_cap: Family<Gw, Gauge>,
    weight: Family<PoolLabels, Gauge>,
    cost_rate: Family<CostLabels, FGauge>,
    cost: Family<CostLabels, FCounter>,
    saving_rate: Family<CurrencyLabels, FGauge>,
    all_ecs_rate: Family<CurrencyLabels, FGauge>,
    peak_eci_spend: Family<CurrencyLabels, FGauge>,
    decisions: Family<DecisionLabels, Counter>,
    actions: Family<KindLabels, Counter>,
    errors: Family<KindLabels, Counter>,
    decision_seconds: HistFamily<Gw>,
    reaction_seconds: HistFamily<Gw>,
    last_decision: Family<Gw, FGauge>,
    held: Family<KindLabels, Gauge>,
    fast_rps: Family<Gw, FGauge>,
    fast_pods_read: Family<Gw, Gauge>,
    fast_failures: Family<KindLabels, Counter>,
    /// Process-wide (exported by every replica: a fenced one has just stopped leading).
    fenced: Family<FencedLabels, Counter>,
    drill_active: Family<DrillLabels, Gauge>,
    drill_start: Family<DrillLabels, FGauge>,
    drill_end: Family<DrillLabels, FGauge>,
    leader: Gauge,
    memory: Mutex<HashMap<Gw, Memory>>,
}

/// Every `kind` of `spillway_held` (the reasons of the controller's holds).
const HELD: [&str; 6] = [
    "CachesNotSynced",
    "WatchFailing",
    "InvalidPolicy",
    "Undecodable",
    "NamespaceNotWatched",
    "TargetNotFound",
];

fn decision_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_01, 4.0, 10))
}

fn reaction_histogram() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 11))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut r = Registry::with_prefix("spillway");
        let m = Self {
            pods: Family::default(),
            phase: Family::default(),
            desired: Family::default(),
            current: Family::default(),
            max: Family::default(),
            min: Family::default(),
            load: Family::default(),
            load_target: Family::default(),
            load_missing: Family::default(),
            ecs_free: Family::default(),
            ecs_capacity: Family::default(),
            eci_cap: Family::default(),
            weight: Family::default(),
            cost_rate: Family::default(),
            cost: Family::default(),
            saving_rate: Family::default(),
            all_ecs_rate: Family::default(),
            peak_eci_spend: Family::default(),
            decisions: Family::default(),
            actions: Family::default(),
            errors: Family::default(),
            decision_seconds: Family::new_with_constructor(decision_histogram),
            reaction_seconds: Family::new_with_constructor(reaction_histogram),
            last_decision: Family::default(),
            held: Family::default(),
            fast_rps: Family::default(),
            fast_pods_read: Family::default(),
            fast_failures: Family::default(),
            fenced: Family::default(),
            drill_active: Family::default(),
            drill_start: Family::default(),
            drill_end: Family::default(),
            leader: Gauge::default(),
            memory: Mutex::new(HashMap::new()),
            registry: Registry::default(),
            process: Registry::default(),
        };
        let mut process = Registry::with_prefix("spillway");
        r.register(
            "gateway_pods",
            "Gateway pods by pool (ecs: dedicated ECS nodes, eci: virtual-kubelet nodes, pending: not yet scheduled, other: neither pool) and state (ready, starting, terminating)",
            m.pods.clone(),
        );
        r.register(
            "phase",
            "1 for the gateway's current phase: Normal (all on ECS), Overflow (the peak runs on ECI), Draining (ECI pods wait to go), Holding (load data missing), Paused",
            m.phase.clone(),
        );
        r.register(
            "replicas_desired",
            "Replica count spillway decided for the gateway",
            m.desired.clone(),
        );
        r.register(
            "replicas_current",
            "Replica count of the gateway workload (spec.replicas) when spillway decided",
            m.current.clone(),
        );
        r.register("replicas_max", "The policy's maxReplicas", m.max.clone());
        r.register("replicas_min", "The policy's minReplicas", m.min.clone());
        r.register(
            "load",
            "Gateway load per policy metric, as read from Prometheus (the query's unit)",
            m.load.clone(),
        );
        r.register(
            "load_target_per_replica",
            "The load one replica should carry, per policy metric",
            m.load_target.clone(),
        );
        r.register(
            "load_missing",
            "1 when a policy metric returned no usable value (error, timeout, empty, NaN, stale); spillway then never scales down",
            m.load_missing.clone(),
        );
        r.register(
            "ecs_free_pods",
            "More gateway pods the dedicated ECS nodes can take now, after headroom",
            m.ecs_free.clone(),
        );
        r.register(
            "ecs_capacity_pods",
            "Gateway pods the ECS pool can hold: those running there plus the free slots",
            m.ecs_capacity.clone(),
        );
        r.register(
            "eci_cap_pods",
            "Most gateway pods allowed on ECI (from the pod and cost caps); absent when uncapped",
            m.eci_cap.clone(),
        );
        r.register(
            "affinity_weight",
            "Preferred node-affinity weight in the gateway's pod template, per pool",
            m.weight.clone(),
        );
        r.register_with_unit(
            "cost_rate",
            "Estimated cost of the gateway per second and pool (ecs: the dedicated nodes' price, fixed whether or not the gateway uses them; eci: the marginal spend, requests rounded to an ECI size), in the label's currency",
            Unit::Other("per_second".into()),
            m.cost_rate.clone(),
        );
        r.register(
            "cost",
            "Estimated cost accumulated by the gateway per pool since spillway started, in the label's currency",
            m.cost.clone(),
        );
        r.register_with_unit(
            "saving_rate",
            "Estimated saving per second against an all-ECS fleet sized for the last day's peak",
            Unit::Other("per_second".into()),
            m.saving_rate.clone(),
        );
        r.register_with_unit(
            "all_ecs_peak_cost_rate",
            "What an all-ECS fleet sized for the last day's peak would cost per second",
            Unit::Other("per_second".into()),
            m.all_ecs_rate.clone(),
        );
        r.register(
            "peak_eci_spend",
            "ECI spend of the peak in progress (ECI pods running), or of the last one, in the label's currency",
            m.peak_eci_spend.clone(),
        );
        r.register(
            "decisions",
            "Engine decisions by action (scale_up, scale_down, hold) and reason (load, lead_time, burst, eci_scale_down, rebalance, steady, stabilized, rate_limited, bounds, eci_cap, missing_data, paused, scaled_to_zero)",
            m.decisions.clone(),
        );
        r.register(
            "actions",
            "Changes applied to the cluster by kind (replicas, weights, deletion_cost, eviction); none in dry-run mode",
            m.actions.clone(),
        );
        r.register(
            "errors",
            "Errors by kind (prometheus_query, api_read, api_write, conflict, invalid_policy)",
            m.errors.clone(),
        );
        r.register_with_unit(
            "decision_duration",
            "Time the engine took for one decision",
            Unit::Seconds,
            m.decision_seconds.clone(),
        );
        r.register_with_unit(
            "reaction",
            "Time from the first decision whose load asked for a new replica count to the replica change being applied",
            Unit::Seconds,
            m.reaction_seconds.clone(),
        );
        r.register_with_unit(
            "last_decision_timestamp",
            "Unix time (or drill time) of the last decision",
            Unit::Seconds,
            m.last_decision.clone(),
        );
        r.register(
            "held",
            "1 while spillway makes no decision for the gateway, for the reason in `kind` (CachesNotSynced, WatchFailing, InvalidPolicy, Undecodable, NamespaceNotWatched, TargetNotFound); 0 for the others",
            m.held.clone(),
        );
        r.register(
            "fast_path_requests_per_second",
            "The gateway's request rate read from its ready pods' own counters (the fast path, between Prometheus scrapes), scaled from the pods read to the ready fleet; absent when the last read gave none",
            m.fast_rps.clone(),
        );
        r.register(
            "fast_path_pods_read",
            "Gateway pods whose counters gave a rate at the last fast-path read (0: none; the fast path then adds nothing)",
            m.fast_pods_read.clone(),
        );
        r.register(
            "fast_path_failures",
            "Gateway pods whose counters the fast path could not use, by kind (unreachable, timeout, http_status, garbage, reset); each is missing from that read, never a reason to scale down",
            m.fast_failures.clone(),
        );
        r.register(
            "drill_active",
            "1 while a drill marked on the gateway (`spillway drill mark`, annotation drill.spillway.io/NAME) is running, else 0",
            m.drill_active.clone(),
        );
        r.register_with_unit(
            "drill_start_timestamp",
            "Unix time at which a marked drill starts",
            Unit::Seconds,
            m.drill_start.clone(),
        );
        r.register_with_unit(
            "drill_end_timestamp",
            "Unix time at which a marked drill ends (absent while it is open)",
            Unit::Seconds,
            m.drill_end.clone(),
        );
        process.register(
            "leader",
            "1 while this spillway replica holds the leader Lease and may write; only the leader exports the per-gateway metrics",
            m.leader.clone(),
        );
        process.register(
            "fenced_writes",
            "Writes not sent because this replica did not hold the leader Lease long enough to finish them, by reason (not_leader, expired: the hold ran out without a renewal, expiring: less than --api-timeout left) and write (scale, weights, deletion_cost, eviction, status, hand_back); the rest of that decision's plan is dropped",
            m.fenced.clone(),
        );
        process.register(
            "build",
            "spillway's version",
            Info::new(vec![(
                "version".to_string(),
                env!("CARGO_PKG_VERSION").to_string(),
            )]),
        );
        Self {
            registry: r,
            process,
            ..m
        }
    }

    /// Records one decision; `applied` is what was actually changed (empty in dry-run).
    pub fn record_decision(
        &self,
        gw: &Gw,
        policy: &ElasticGatewaySpec,
        obs: &Observation<'_>,
        d: &Decision,
        applied: &Plan,
        decision_seconds: f64,
    ) {
        let (ns, name) = (gw.namespace.clone(), gw.name.clone());
        let mut counts: HashMap<(Pool, &str), i64> = HashMap::new();
        for p in obs.pods {
            let state = if p.terminating {
                "terminating"
            } else if p.ready {
                "ready"
            } else {
                "starting"
            };
            *counts.entry((p.pool, state)).or_default() += 1;
        }
        for pool in [Pool::Ecs, Pool::Eci, Pool::Pending, Pool::Other] {
            for state in ["ready", "starting", "terminating"] {
                let l = PodLabels {
                    namespace: ns.clone(),
                    name: name.clone(),
                    pool: pool.as_str().into(),
                    state: state.into(),
                };
                self.pods
                    .get_or_create(&l)
                    .set(counts.get(&(pool, state)).copied().unwrap_or(0));
            }
        }
        for phase in [
            Phase::Normal,
            Phase::Overflow,
            Phase::Draining,
            Phase::Holding,
            Phase::Paused,
        ] {
            let l = PhaseLabels {
                namespace: ns.clone(),
                name: name.clone(),
                phase: phase.as_str().into(),
            };
            self.phase
                .get_or_create(&l)
                .set(i64::from(d.phase == phase));
        }
        match obs.fast {
            Some(f) => {
                self.fast_rps.get_or_create(gw).set(f.rps);
                self.fast_pods_read
                    .get_or_create(gw)
                    .set(i64::from(f.pods_read));
                // Every kind exported from the first reading on, at 0 until it happens.
                for kind in crate::fastpath::FAILURE_KINDS {
                    let _ = self.fast_failures.get_or_create(&KindLabels {
                        namespace: ns.clone(),
                        name: name.clone(),
                        kind: kind.into(),
                    });
                }
            }
            None => {
                self.fast_rps.remove(gw);
                self.fast_pods_read.get_or_create(gw).set(0);
            }
        }
        self.desired
            .get_or_create(gw)
            .set(i64::from(d.replicas.desired));
        self.current
            .get_or_create(gw)
            .set(i64::from(d.replicas.current));
        self.min
            .get_or_create(gw)
            .set(i64::from(policy.min_replicas));
        self.max
            .get_or_create(gw)
            .set(i64::from(policy.max_replicas));
        {
            let mut mem = self
                .memory
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let m = mem.entry(gw.clone()).or_default();
            for r in &d.readings {
                if !m.metric_names.contains(&r.metric) {
                    m.metric_names.push(r.metric.clone());
                }
            }
            if !m.currencies.contains(&d.cost.currency) {
                m.currencies.push(d.cost.currency.clone());
            }
        }
        for r in &d.readings {
            let l = MetricLabels {
                namespace: ns.clone(),
                name: name.clone(),
                metric: r.metric.clone(),
            };
            if let Some(v) = r.value {
                self.load.get_or_create(&l).set(v);
            }
            self.load_target.get_or_create(&l).set(r.target_per_replica);
            self.load_missing
                .get_or_create(&l)
                .set(i64::from(r.missing.is_some()));
        }
        self.ecs_free
            .get_or_create(gw)
            .set(i64::from(d.survey.ecs_room));
        self.ecs_capacity
            .get_or_create(gw)
            .set(i64::from(d.survey.ecs_capacity));
        match d.replicas.eci_cap {
            Some(cap) => {
                self.eci_cap.get_or_create(gw).set(i64::from(cap));
            }
            None => {
                self.eci_cap.remove(gw);
            }
        }
        let w = d.weights.target;
        for (pool, v) in [("ecs", w.ecs), ("eci", w.eci)] {
            let l = PoolLabels {
                namespace: ns.clone(),
                name: name.clone(),
                pool: pool.into(),
            };
            self.weight.get_or_create(&l).set(i64::from(v));
        }
        let currency = d.cost.currency.clone();
        let mut mem = self
            .memory
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let m = mem.entry(gw.clone()).or_default();
        let dt = m.last_at.map_or(0.0, |last| (d.at - last).max(0.0));
        m.last_at = Some(d.at);
        for (pool, per_hour) in [("ecs", d.cost.ecs_per_hour), ("eci", d.cost.eci_per_hour)] {
            let l = CostLabels {
                namespace: ns.clone(),
                name: name.clone(),
                pool: pool.into(),
                currency: currency.clone(),
            };
            self.cost_rate.get_or_create(&l).set(per_hour / 3600.0);
            self.cost.get_or_create(&l).inc_by(per_hour / 3600.0 * dt);
        }
        let cl = CurrencyLabels {
            namespace: ns.clone(),
            name: name.clone(),
            currency,
        };
        self.saving_rate
            .get_or_create(&cl)
            .set(d.cost.saving_per_hour / 3600.0);
        self.all_ecs_rate
            .get_or_create(&cl)
            .set(d.cost.all_ecs_peak_per_hour / 3600.0);
        self.peak_eci_spend
            .get_or_create(&cl)
            .set(d.cost.peak_eci_spend);
        let dl = DecisionLabels {
            namespace: ns.clone(),
            name: name.clone(),
            action: d.replicas.direction.as_str().into(),
            reason: d.replicas.why.as_str().into(),
        };
        self.decisions.get_or_create(&dl).inc();
        // Reaction: from the first decision whose load asked for another count to the change.
        let wants_change =
            d.replicas.hpa.is_some_and(|h| h != d.replicas.current) || d.replicas.lead.is_some();
        if applied.replicas.is_some() {
            if let Some(since) = m.change_seen_at.take().or(wants_change.then_some(d.at)) {
                self.reaction_seconds
                    .get_or_create(gw)
                    .observe((d.at - since).max(0.0));
            }
        } else if wants_change {
            m.change_seen_at.get_or_insert(d.at);
        } else {
            m.change_seen_at = None;
        }
        drop(mem);
        for (kind, n) in [
            (ActionKind::Replicas, u64::from(applied.replicas.is_some())),
            (ActionKind::Weights, u64::from(applied.weights.is_some())),
            (
                ActionKind::DeletionCost,
                applied.deletion_costs.len() as u64,
            ),
            (ActionKind::Eviction, applied.evictions.len() as u64),
        ] {
            let l = KindLabels {
                namespace: ns.clone(),
                name: name.clone(),
                kind: kind.as_str().into(),
            };
            // Create every kind at 0 so that rate() and increase() see the series from the start.
            self.actions.get_or_create(&l).inc_by(n);
        }
        for kind in ErrorKind::ALL {
            let l = KindLabels {
                namespace: ns.clone(),
                name: name.clone(),
                kind: kind.as_str().into(),
            };
            let _ = self.errors.get_or_create(&l);
        }
        self.decision_seconds
            .get_or_create(gw)
            .observe(decision_seconds);
        self.last_decision.get_or_create(gw).set(d.at);
        // A decision: held for no reason (every kind present, so alerts can see the series).
        for kind in HELD {
            let l = KindLabels {
                namespace: ns.clone(),
                name: name.clone(),
                kind: kind.into(),
            };
            let _ = self.held.get_or_create(&l);
        }
    }

    /// One pod the fast path could not read, by [`crate::fastpath::PodError::kind`].
    pub fn fast_path_failure(&self, gw: &Gw, kind: &str) {
        let l = KindLabels {
            namespace: gw.namespace.clone(),
            name: gw.name.clone(),
            kind: kind.into(),
        };
        self.fast_failures.get_or_create(&l).inc();
    }

    pub fn error(&self, gw: &Gw, kind: ErrorKind) {
        let l = KindLabels {
            namespace: gw.namespace.clone(),
            name: gw.name.clone(),
            kind: kind.as_str().into(),
        };
        self.errors.get_or_create(&l).inc();
    }

    /// Exports the drills marked on the gateway at `now`; marks gone since the last call go.
    pub fn record_drills(&self, gw: &Gw, marks: &[crate::policy::marks::Mark], now: f64) {
        let mut mem = self
            .memory
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let m = mem.entry(gw.clone()).or_default();
        let label = |drill: &str| DrillLabels {
            namespace: gw.namespace.clone(),
            name: gw.name.clone(),
            drill: drill.into(),
        };
        for old in m.drills.drain(..) {
            if !marks.iter().any(|k| k.name == old) {
                self.drill_active.remove(&label(&old));
                self.drill_start.remove(&label(&old));
                self.drill_end.remove(&label(&old));
            }
        }
        for k in marks {
            let l = label(&k.name);
            self.drill_active
                .get_or_create(&l)
                .set(i64::from(k.active(now)));
            self.drill_start.get_or_create(&l).set(k.start);
            match k.end {
                Some(e) => {
                    self.drill_end.get_or_create(&l).set(e);
                }
                None => {
                    self.drill_end.remove(&l);
                }
            }
            m.drills.push(k.name.clone());
        }
    }

    /// Marks the gateway as held (no decision) for `reason`, or deciding again with `None`.
    pub fn set_held(&self, gw: &Gw, reason: Option<&str>) {
        let mut mem = self
            .memory
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let m = mem.entry(gw.clone()).or_default();
        let label = |kind: &str| KindLabels {
            namespace: gw.namespace.clone(),
            name: gw.name.clone(),
            kind: kind.into(),
        };
        for kind in HELD {
            self.held
                .get_or_create(&label(kind))
                .set(i64::from(reason == Some(kind)));
        }
        if let Some(old) = m.held.take().filter(|o| Some(o.as_str()) != reason) {
            // A reason outside the known list: its series goes.
            if !HELD.contains(&old.as_str()) {
                self.held.remove(&label(&old));
            }
        }
        if let Some(r) = reason {
            self.held.get_or_create(&label(r)).set(1);
            m.held = Some(r.into());
        }
    }

    /// Removes every series of a gateway that no longer exists, so that its last values (and the
    /// alerts on them) do not outlive it.
    pub fn forget(&self, gw: &Gw) {
        let m = self
            .memory
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(gw)
            .unwrap_or_default();
        let (namespace, name) = (gw.namespace.clone(), gw.name.clone());
        for drill in &m.drills {
            let l = DrillLabels {
                namespace: namespace.clone(),
                name: name.clone(),
                drill: drill.clone(),
            };
            self.drill_active.remove(&l);
            self.drill_start.remove(&l);
            self.drill_end.remove(&l);
        }
        for pool in [Pool::Ecs, Pool::Eci, Pool::Pending, Pool::Other] {
            for state in ["ready", "starting", "terminating"] {
                self.pods.remove(&PodLabels {
                    namespace: namespace.clone(),
                    name: name.clone(),
                    pool: pool.as_str().into(),
                    state: state.into(),
                });
            }
            for currency in &m.currencies {
                let l = CostLabels {
                    namespace: namespace.clone(),
                    name: name.clone(),
                    pool: pool.as_str().into(),
                    currency: currency.clone(),
                };
                self.cost_rate.remove(&l);
                self.cost.remove(&l);
            }
            self.weight.remove(&PoolLabels {
                namespace: namespace.clone(),
                name: name.clone(),
                pool: pool.as_str().into(),
            });
        }
        for phase in [
            Phase::Normal,
            Phase::Overflow,
            Phase::Draining,
            Phase::Holding,
            Phase::Paused,
        ] {
            self.phase.remove(&PhaseLabels {
                namespace: namespace.clone(),
                name: name.clone(),
                phase: phase.as_str().into(),
            });
        }
        for f in [
            &self.desired,
            &self.current,
            &self.min,
            &self.max,
            &self.ecs_free,
            &self.ecs_capacity,
            &self.eci_cap,
        ] {
            f.remove(gw);
        }
        self.fast_rps.remove(gw);
        self.fast_pods_read.remove(gw);
        self.decision_seconds.remove(gw);
        self.reaction_seconds.remove(gw);
        self.last_decision.remove(gw);
        for metric in &m.metric_names {
            let l = MetricLabels {
                namespace: namespace.clone(),
                name: name.clone(),
                metric: metric.clone(),
            };
            self.load.remove(&l);
            self.load_target.remove(&l);
            self.load_missing.remove(&l);
        }
        for currency in &m.currencies {
            let l = CurrencyLabels {
                namespace: namespace.clone(),
                name: name.clone(),
                currency: currency.clone(),
            };
            self.saving_rate.remove(&l);
            self.all_ecs_rate.remove(&l);
            self.peak_eci_spend.remove(&l);
        }
        for action in ["scale_up", "scale_down", "hold"] {
            for reason in crate::engine::Why::ALL.map(crate::engine::Why::as_str) {
                self.decisions.remove(&DecisionLabels {
                    namespace: namespace.clone(),
                    name: name.clone(),
                    action: action.into(),
                    reason: reason.into(),
                });
            }
        }
        let kind = |k: &str| KindLabels {
            namespace: namespace.clone(),
            name: name.clone(),
            kind: k.into(),
        };
        for k in [
            ActionKind::Replicas,
            ActionKind::Weights,
            ActionKind::DeletionCost,
            ActionKind::Eviction,
        ] {
            self.actions.remove(&kind(k.as_str()));
        }
        for k in ErrorKind::ALL {
            self.errors.remove(&kind(k.as_str()));
        }
        for k in crate::fastpath::FAILURE_KINDS {
            self.fast_failures.remove(&kind(k));
        }
        for h in HELD.iter().copied().chain(m.held.as_deref()) {
            self.held.remove(&kind(h));
        }
    }

    /// Counts a write the fence stopped.
    pub fn fenced(&self, reason: &str, write: &str) {
        let l = FencedLabels {
            reason: reason.into(),
            write: write.into(),
        };
        self.fenced.get_or_create(&l).inc();
    }

    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }

    /// Whether the per-gateway families are exported: only while this replica leads.
    pub fn exports_gateways(&self) -> bool {
        self.leader.get() == 1
    }

    /// OpenMetrics text, as Prometheus asks for it.
    pub fn openmetrics(&self) -> String {
        use prometheus_client::encoding::text::{encode_eof, encode_registry};
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode_registry(&mut out, &self.process);
        if self.exports_gateways() {
            let _ = encode_registry(&mut out, &self.registry);
        }
        let _ = encode_eof(&mut out);
        out
    }

    /// The classic 0.0.4 text format, for clients that do not ask for OpenMetrics.
    pub fn prometheus_text(&self) -> String {
        use prometheus_client::encoding::prometheus_text::encode;
        let mut out = String::new();
        let _ = encode(&mut out, &self.process);
        if self.exports_gateways() {
            let _ = encode(&mut out, &self.registry);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marked_drills_are_exported_and_forgotten() {
        use crate::policy::marks::Mark;
        let m = Metrics::new();
        m.set_leader(true);
        let gw = Gw::new("istio-system", "gw");
        let open = Mark {
            name: "sale".into(),
            start: 1000.0,
            end: None,
        };
        let done = Mark {
            name: "old".into(),
            start: 100.0,
            end: Some(200.0),
        };
        m.record_drills(&gw, &[open.clone(), done], 1500.0);
        let text = m.prometheus_text();
        let sel = r#"{namespace="istio-system",name="gw",drill="#;
        assert!(
            text.contains(&format!("spillway_drill_active{sel}\"sale\"}} 1")),
            "{text}"
        );
        assert!(
            text.contains(&format!("spillway_drill_active{sel}\"old\"}} 0")),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "spillway_drill_start_timestamp_seconds{sel}\"sale\"}} 1000"
            )),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "spillway_drill_end_timestamp_seconds{sel}\"old\"}} 200"
            )),
            "{text}"
        );
        assert!(
            !text.contains(&format!(
                "spillway_drill_end_timestamp_seconds{sel}\"sale\"}}"
            )),
            "{text}"
        );
        // The old mark removed from the gateway: its series go.
        m.record_drills(&gw, &[open], 1500.0);
        assert!(!m.prometheus_text().contains("\"old\""));
        m.forget(&gw);
        assert!(!m.prometheus_text().contains("spillway_drill_active{"));
    }

    #[test]
    fn only_the_leader_exports_per_gateway_families() {
        let m = Metrics::new();
        m.error(&Gw::new("istio-system", "gw"), ErrorKind::ApiRead);
        let standby = m.openmetrics();
        assert!(standby.contains("spillway_leader 0"), "{standby}");
        assert!(standby.contains("spillway_build_info"), "{standby}");
        assert!(!standby.contains("istio-system"), "{standby}");
        assert!(standby.ends_with("# EOF\n"), "{standby}");
        m.set_leader(true);
        for text in [m.openmetrics(), m.prometheus_text()] {
            assert!(text.contains("spillway_leader 1"), "{text}");
            assert!(
                text.contains(
                    r#"spillway_errors_total{namespace="istio-system",name="gw",kind="api_read"} 1"#
                ),
                "{text}"
            );
        }
        assert_eq!(m.openmetrics().matches("# EOF").count(), 1);
    }
}
