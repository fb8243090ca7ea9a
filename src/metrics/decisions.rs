//! The decisions: what the engine decided and why, what was applied, what went wrong, how long
//! deciding and reacting took, and whether a gateway is held (no decision, and why).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use super::{DecisionLabels, FGauge, GatewayLabels, HistFamily, KindLabels, lock};
use crate::act::Plan;
use crate::engine::{Decision, Direction, Why};
use crate::model::GatewayKey;

/// What kind of change was applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ActionKind {
    Replicas,
    Weights,
    DeletionCost,
    Eviction,
}

impl ActionKind {
    pub const ALL: [ActionKind; 4] = [
        ActionKind::Replicas,
        ActionKind::Weights,
        ActionKind::DeletionCost,
        ActionKind::Eviction,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ActionKind::Replicas => "replicas",
            ActionKind::Weights => "weights",
            ActionKind::DeletionCost => "deletion_cost",
            ActionKind::Eviction => "eviction",
        }
    }

    /// How many changes of this kind a plan holds.
    fn count(self, plan: &Plan) -> u64 {
        match self {
            ActionKind::Replicas => u64::from(plan.replicas.is_some()),
            ActionKind::Weights => u64::from(plan.weights.is_some()),
            ActionKind::DeletionCost => plan.deletion_costs.len() as u64,
            ActionKind::Eviction => plan.evictions.len() as u64,
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

/// Every `kind` of `spillway_held` (the reasons the agent holds a gateway without deciding).
pub const HELD: [&str; 8] = [
    "CachesNotSynced",
    "WatchFailing",
    "InvalidPolicy",
    "Undecodable",
    "NamespaceNotWatched",
    "TargetNotFound",
    "TargetForbidden",
    "TargetShared",
];

/// Per gateway, between decisions.
#[derive(Default)]
struct Memory {
    /// When the load first asked for a different count than the current one.
    change_seen_at: Option<f64>,
    /// The hold reason exported last, if it is not one of [`HELD`].
    held: Option<String>,
}

/// `spillway_decision_age_seconds`, read at each scrape: how long since the agent last decided
/// for (or held) each gateway, on the process's monotonic clock.
#[derive(Debug, Default)]
struct DecisionAge(Mutex<HashMap<GatewayKey, Instant>>);

impl Collector for DecisionAge {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let ages: Family<GatewayLabels, FGauge> = Family::default();
        for (k, at) in lock(&self.0).iter() {
            ages.get_or_create(&GatewayLabels::from(k))
                .set(at.elapsed().as_secs_f64());
        }
        let metric = encoder.encode_descriptor(
            "decision_age",
            "Seconds since spillway last decided for the gateway (or held it, saying why); alert when it passes a few times spillway_decision_interval_seconds",
            Some(&Unit::Seconds),
            ages.metric_type(),
        )?;
        ages.encode(metric)
    }
}

pub struct DecisionMetrics {
    decisions: Family<DecisionLabels, Counter>,
    actions: Family<KindLabels, Counter>,
    errors: Family<KindLabels, Counter>,
    duration: HistFamily<GatewayLabels>,
    reaction: HistFamily<GatewayLabels>,
    last: Family<GatewayLabels, FGauge>,
    held: Family<KindLabels, Gauge>,
    interval: Family<GatewayLabels, FGauge>,
    contested: Family<GatewayLabels, Gauge>,
    swaps: Family<KindLabels, Counter>,
    victims: Family<KindLabels, Counter>,
    cut: Family<GatewayLabels, Counter>,
    age: Arc<DecisionAge>,
    memory: Mutex<HashMap<GatewayKey, Memory>>,
}

fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_01, 4.0, 10))
}

fn reaction_histogram() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 11))
}

impl DecisionMetrics {
    pub fn register(r: &mut Registry) -> Self {
        let m = Self {
            decisions: Family::default(),
            actions: Family::default(),
            errors: Family::default(),
            duration: Family::new_with_constructor(duration_histogram),
            reaction: Family::new_with_constructor(reaction_histogram),
            last: Family::default(),
            held: Family::default(),
            interval: Family::default(),
            contested: Family::default(),
            swaps: Family::default(),
            victims: Family::default(),
            cut: Family::default(),
            age: Arc::default(),
            memory: Mutex::default(),
        };
        r.register(
            "decisions",
            "Engine decisions by action (scale_up, scale_down, hold) and reason (load, lead_time, burst, eci_scale_down, ecs_hold, rebalance, steady, stabilized, rate_limited, bounds, eci_cap, missing_data, paused, scaled_to_zero, reset_budget)",
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
            m.duration.clone(),
        );
        r.register_with_unit(
            "reaction",
            "Time from the first decision whose load asked for a new replica count to the replica change being applied",
            Unit::Seconds,
            m.reaction.clone(),
        );
        r.register_with_unit(
            "last_decision_timestamp",
            "Unix time (or drill time) of the last decision",
            Unit::Seconds,
            m.last.clone(),
        );
        r.register(
            "held",
            "1 while spillway makes no decision for the gateway, for the reason in `kind` (CachesNotSynced, WatchFailing, InvalidPolicy, Undecodable, NamespaceNotWatched, TargetNotFound, TargetForbidden, TargetShared); 0 for the others",
            m.held.clone(),
        );
        r.register_with_unit(
            "decision_interval",
            "How soon spillway means to decide for the gateway again (its interval, the fast path's, or a hold's)",
            Unit::Seconds,
            m.interval.clone(),
        );
        r.register(
            "replicas_contested",
            "1 while another field manager than spillway writes the gateway's replica count (kubectl scale, a CronHPA, ASM's resync, a re-applied manifest); spillway then holds the count and the ElasticGateway's ReplicasContested condition names the writer",
            m.contested.clone(),
        );
        r.register(
            "swaps",
            "Moves of ECI pods back to ECS (placement.swapBack): started, one_more (an added pod landed off ECS as the scheduler model planned), landed_ecs, missed (every added pod off ECS, against the model), gave_up (not ready in time), held (not started: the model puts the next pods off ECS)",
            m.swaps.clone(),
        );
        r.register(
            "scale_in_victims",
            "Pods a scale-in chose to remove by their Envoys' connections, checked at the next decision: as_chosen (gone or terminating), kept (still serving: the ReplicaSet took another pod)",
            m.victims.clone(),
        );
        r.register(
            "scale_in_connections",
            "Open downstream connections on the pods applied scale-ins chose to remove (what they reset, less those that close while the pods drain)",
            m.cut.clone(),
        );
        r.register_collector(Box::new(m.age.clone()));
        m
    }

    /// Whether another writer contests the gateway's replica count.
    pub fn contested(&self, key: &GatewayKey, contested: bool) {
        self.contested
            .get_or_create(&GatewayLabels::from(key))
            .set(i64::from(contested));
    }

    /// A reconcile of the gateway ended (a decision or a hold); the next is due in `next`.
    pub fn reconciled(&self, key: &GatewayKey, next: std::time::Duration) {
        lock(&self.age.0).insert(key.clone(), Instant::now());
        self.interval
            .get_or_create(&GatewayLabels::from(key))
            .set(next.as_secs_f64());
    }

    /// One decision; `applied` is what was actually changed (empty in dry-run).
    pub fn record(&self, key: &GatewayKey, d: &Decision, applied: &Plan, seconds: f64) {
        let gw = GatewayLabels::from(key);
        self.decisions
            .get_or_create(&DecisionLabels::new(
                key,
                d.replicas.direction.as_str(),
                d.replicas.why.as_str(),
            ))
            .inc();
        // Reaction: from the first decision whose load asked for another count to the change.
        let wants_change =
            d.replicas.hpa.is_some_and(|h| h != d.replicas.current) || d.replicas.lead.is_some();
        {
            let mut memory = lock(&self.memory);
            let m = memory.entry(key.clone()).or_default();
            if applied.replicas.is_some() {
                if let Some(since) = m.change_seen_at.take().or(wants_change.then_some(d.at)) {
                    self.reaction
                        .get_or_create(&gw)
                        .observe((d.at - since).max(0.0));
                }
            } else if wants_change {
                m.change_seen_at.get_or_insert(d.at);
            } else {
                m.change_seen_at = None;
            }
        }
        // Every kind created at 0, so that rate() and increase() see the series from the start.
        for kind in ActionKind::ALL {
            self.actions
                .get_or_create(&KindLabels::new(key, kind.as_str()))
                .inc_by(kind.count(applied));
        }
        for kind in ErrorKind::ALL {
            let _ = self
                .errors
                .get_or_create(&KindLabels::new(key, kind.as_str()));
        }
        for kind in crate::engine::placement::SwapEvent::ALL {
            let swaps = self
                .swaps
                .get_or_create(&KindLabels::new(key, kind.as_str()));
            if d.swap == Some(kind) {
                swaps.inc();
            }
        }
        let check = d.victim_check.unwrap_or_default();
        for (kind, n) in [("as_chosen", check.as_chosen), ("kept", check.kept)] {
            self.victims
                .get_or_create(&KindLabels::new(key, kind))
                .inc_by(u64::from(n));
        }
        let cut = self.cut.get_or_create(&gw);
        if let (Some(c), Some(_)) = (d.cut, applied.replicas) {
            cut.inc_by(c.connections.max(0.0) as u64);
        }
        self.duration.get_or_create(&gw).observe(seconds);
        self.last.get_or_create(&gw).set(d.at);
        // A decision: held for no reason (every kind present, so alerts can see the series).
        for kind in HELD {
            let _ = self.held.get_or_create(&KindLabels::new(key, kind));
        }
    }

    pub fn error(&self, key: &GatewayKey, kind: ErrorKind) {
        self.errors
            .get_or_create(&KindLabels::new(key, kind.as_str()))
            .inc();
    }

    /// Marks the gateway as held (no decision) for `reason`, or deciding again with `None`.
    pub fn set_held(&self, key: &GatewayKey, reason: Option<&str>) {
        for kind in HELD {
            self.held
                .get_or_create(&KindLabels::new(key, kind))
                .set(i64::from(reason == Some(kind)));
        }
        let mut memory = lock(&self.memory);
        let m = memory.entry(key.clone()).or_default();
        // A reason outside the known list: its series goes when it no longer holds.
        if let Some(old) = m.held.take().filter(|o| Some(o.as_str()) != reason) {
            self.held.remove(&KindLabels::new(key, &old));
        }
        if let Some(r) = reason.filter(|r| !HELD.contains(r)) {
            self.held.get_or_create(&KindLabels::new(key, r)).set(1);
            m.held = Some(r.into());
        }
    }

    pub fn forget(&self, key: &GatewayKey) {
        let m = lock(&self.memory).remove(key).unwrap_or_default();
        let gw = GatewayLabels::from(key);
        for direction in [Direction::ScaleUp, Direction::ScaleDown, Direction::Hold] {
            for why in Why::ALL {
                self.decisions
                    .remove(&DecisionLabels::new(key, direction.as_str(), why.as_str()));
            }
        }
        for kind in ActionKind::ALL {
            self.actions.remove(&KindLabels::new(key, kind.as_str()));
        }
        for kind in ErrorKind::ALL {
            self.errors.remove(&KindLabels::new(key, kind.as_str()));
        }
        for kind in crate::engine::placement::SwapEvent::ALL {
            self.swaps.remove(&KindLabels::new(key, kind.as_str()));
        }
        for kind in HELD.iter().copied().chain(m.held.as_deref()) {
            self.held.remove(&KindLabels::new(key, kind));
        }
        for kind in ["as_chosen", "kept"] {
            self.victims.remove(&KindLabels::new(key, kind));
        }
        self.cut.remove(&gw);
        self.duration.remove(&gw);
        self.reaction.remove(&gw);
        self.last.remove(&gw);
        self.interval.remove(&gw);
        self.contested.remove(&gw);
        lock(&self.age.0).remove(key);
    }
}
