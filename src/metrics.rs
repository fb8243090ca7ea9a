//! spillway's own metrics: what it sees, what it decided and why, and what that costs.
//!
//! One prometheus-client registry under the `spillway_` prefix, one struct per concern, each
//! registering its own families ([`fleet`], [`load`], [`cost`], [`decisions`], [`drills`],
//! [`process`]); every per-gateway series carries `namespace` and `name` (of the
//! ElasticGateway). The live agent and the drill record through [`Metrics::record_decision`], so
//! a drill's `/metrics` looks like a cluster's.
//!
//! Only the leader exports the per-gateway families: every replica decides (a standby keeps its
//! engine warm for a takeover), but dashboards and rules `sum()` over the replicas' scrapes, so a
//! standby exports only its process metrics (`spillway_leader 0`, `spillway_build_info`).

pub mod cost;
pub mod decisions;
pub mod drills;
pub mod events;
pub mod fleet;
pub mod load;
pub mod os;
pub mod process;

use std::sync::atomic::AtomicU64;
use std::sync::{Mutex, MutexGuard};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::act::Plan;
use crate::engine::{Decision, Phase};
use crate::model::{FastSample, GatewayKey, GatewayPod, Pool};
use crate::policy::ElasticGatewaySpec;
use crate::policy::marks::Mark;

pub use decisions::{ActionKind, ErrorKind};

type FGauge = Gauge<f64, AtomicU64>;
type FCounter = Counter<f64, AtomicU64>;
type HistFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// A metrics memory's lock; a panic elsewhere never stops the export.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The labels of one gateway's series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GatewayLabels {
    namespace: String,
    name: String,
}

impl From<&GatewayKey> for GatewayLabels {
    fn from(k: &GatewayKey) -> Self {
        Self {
            namespace: k.namespace.clone(),
            name: k.name.clone(),
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

impl PodLabels {
    fn new(k: &GatewayKey, pool: Pool, state: &str) -> Self {
        Self {
            namespace: k.namespace.clone(),
            name: k.name.clone(),
            pool: pool.as_str().into(),
            state: state.into(),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabels {
    namespace: String,
    name: String,
    pool: String,
}

impl PoolLabels {
    fn new(k: &GatewayKey, pool: Pool) -> Self {
        Self {
            namespace: k.namespace.clone(),
            name: k.name.clone(),
            pool: pool.as_str().into(),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CostLabels {
    namespace: String,
    name: String,
    pool: String,
    currency: String,
}

impl CostLabels {
    fn new(k: &GatewayKey, pool: Pool, currency: &str) -> Self {
        Self {
            namespace: k.namespace.clone(),
            name: k.name.clone(),
            pool: pool.as_str().into(),
            currency: currency.into(),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CurrencyLabels {
    namespace: String,
    name: String,
    currency: String,
}

impl CurrencyLabels {
    fn new(k: &GatewayKey, currency: &str) -> Self {
        Self {
            namespace: k.namespace.clone(),
            name: k.name.clone(),
            currency: currency.into(),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MetricLabels {
    namespace: String,
    name: String,
    metric: String,
}

impl MetricLabels {
    fn new(k: &GatewayKey, metric: &str) -> Self {
        Self {
            namespace: k.namespace.clone(),
            name: k.name.clone(),
            metric: metric.into(),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    namespace: String,
    name: String,
    phase: String,
}

impl PhaseLabels {
    fn new(k: &GatewayKey, phase: Phase) -> Self {
        Self {
            namespace: k.namespace.clone(),
            name: k.name.clone(),
            phase: phase.as_str().into(),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    namespace: String,
    name: String,
    action: String,
    reason: String,
}

impl DecisionLabels {
    fn new(k: &GatewayKey, action: &str, reason: &str) -> Self {
        Self {
            namespace: k.namespace.clone(),
            name: k.name.clone(),
            action: action.into(),
            reason: reason.into(),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DrillLabels {
    namespace: String,
    name: String,
    drill: String,
}

impl DrillLabels {
    fn new(k: &GatewayKey, drill: &str) -> Self {
        Self {
            namespace: k.namespace.clone(),
            name: k.name.clone(),
            drill: drill.into(),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    namespace: String,
    name: String,
    kind: String,
}

impl KindLabels {
    fn new(k: &GatewayKey, kind: &str) -> Self {
        Self {
            namespace: k.namespace.clone(),
            name: k.name.clone(),
            kind: kind.into(),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FencedLabels {
    reason: String,
    write: String,
}

/// Every concern's families, in three registries: the per-gateway ones (exported by the
/// leader), the process's (exported by every replica), and the standard `process_*` ones
/// (unprefixed, as every Prometheus client names them).
pub struct Metrics {
    gateways: Registry,
    process_registry: Registry,
    os_registry: Registry,
    pub fleet: fleet::FleetMetrics,
    pub load: load::LoadMetrics,
    pub cost: cost::CostMetrics,
    pub decisions: decisions::DecisionMetrics,
    pub drills: drills::DrillMetrics,
    pub events: events::EventMetrics,
    pub process: process::ProcessMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut gateways = Registry::with_prefix("spillway");
        let mut process_registry = Registry::with_prefix("spillway");
        let mut os_registry = Registry::default();
        os_registry.register_collector(Box::new(os::ProcessCollector));
        Self {
            fleet: fleet::FleetMetrics::register(&mut gateways),
            load: load::LoadMetrics::register(&mut gateways),
            cost: cost::CostMetrics::register(&mut gateways),
            decisions: decisions::DecisionMetrics::register(&mut gateways),
            drills: drills::DrillMetrics::register(&mut gateways),
            events: events::EventMetrics::register(&mut gateways),
            process: process::ProcessMetrics::register(&mut process_registry),
            gateways,
            process_registry,
            os_registry,
        }
    }

    /// Records one decision: the fleet it saw (`pods`), the fast path's sample it used, what it
    /// decided, what was applied (empty in dry-run), and how long the engine took.
    #[allow(clippy::too_many_arguments)]
    pub fn record_decision(
        &self,
        key: &GatewayKey,
        policy: &ElasticGatewaySpec,
        pods: &[GatewayPod],
        fast: Option<FastSample>,
        d: &Decision,
        applied: &Plan,
        seconds: f64,
    ) {
        self.fleet.record(key, policy, pods, d);
        self.load.record(key, d, fast);
        self.cost.record(key, &d.cost);
        self.decisions.record(key, d, applied, seconds);
    }

    /// Exports the drills marked on the gateway at `now`.
    pub fn record_drills(&self, key: &GatewayKey, marks: &[Mark], now: f64) {
        self.drills.record(key, marks, now);
    }

    /// Exports the gateway's planned events' plans.
    pub fn record_events(&self, key: &GatewayKey, plans: &[crate::engine::planned::Plan]) {
        self.events.record(key, plans);
    }

    pub fn error(&self, key: &GatewayKey, kind: ErrorKind) {
        self.decisions.error(key, kind);
    }

    /// A reconcile of the gateway ended, a decision or a hold; the next is due in `next`.
    pub fn reconciled(&self, key: &GatewayKey, next: std::time::Duration) {
        self.decisions.reconciled(key, next);
    }

    /// The ECS slots other gateways claimed on this one's nodes.
    pub fn claimed_elsewhere(&self, key: &GatewayKey, slots: i32) {
        self.fleet.claimed_elsewhere(key, slots);
    }

    /// Whether another writer contests the gateway's replica count.
    pub fn contested(&self, key: &GatewayKey, contested: bool) {
        self.decisions.contested(key, contested);
    }

    /// Marks the gateway as held (no decision) for `reason`, or deciding again with `None`.
    pub fn set_held(&self, key: &GatewayKey, reason: Option<&str>) {
        self.decisions.set_held(key, reason);
    }

    /// One pod the fast path could not read.
    pub fn fast_path_failure(&self, key: &GatewayKey, kind: &str) {
        self.load.fast_path_failure(key, kind);
    }

    /// Removes every series of a gateway that no longer exists, so that its last values (and the
    /// alerts on them) do not outlive it.
    pub fn forget(&self, key: &GatewayKey) {
        self.fleet.forget(key);
        self.load.forget(key);
        self.cost.forget(key);
        self.decisions.forget(key);
        self.drills.forget(key);
        self.events.forget(key);
    }

    /// Counts a write the fence stopped.
    pub fn fenced(&self, reason: &str, write: &str) {
        self.process.fenced(reason, write);
    }

    pub fn set_leader(&self, leader: bool) {
        self.process.set_leader(leader);
    }

    /// Whether the per-gateway families are exported: only while this replica leads.
    pub fn exports_gateways(&self) -> bool {
        self.process.is_leader()
    }

    /// OpenMetrics text, as Prometheus asks for it.
    pub fn openmetrics(&self) -> String {
        use prometheus_client::encoding::text::{encode_eof, encode_registry};
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode_registry(&mut out, &self.os_registry);
        let _ = encode_registry(&mut out, &self.process_registry);
        if self.exports_gateways() {
            let _ = encode_registry(&mut out, &self.gateways);
        }
        let _ = encode_eof(&mut out);
        out
    }

    /// The classic 0.0.4 text format, for clients that do not ask for OpenMetrics.
    pub fn prometheus_text(&self) -> String {
        use prometheus_client::encoding::prometheus_text::encode;
        let mut out = String::new();
        let _ = encode(&mut out, &self.os_registry);
        let _ = encode(&mut out, &self.process_registry);
        if self.exports_gateways() {
            let _ = encode(&mut out, &self.gateways);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marked_drills_are_exported_and_forgotten() {
        let m = Metrics::new();
        m.set_leader(true);
        let gw = GatewayKey::new("istio-system", "gw");
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

    /// Issue 30: 4,000 drill annotations made 8,005 series. At most 16 marks are exported (the
    /// running one first, then the latest), and the rest counted.
    #[test]
    fn marked_drills_are_capped_and_the_rest_counted() {
        let m = Metrics::new();
        m.set_leader(true);
        let gw = GatewayKey::new("istio-system", "gw");
        let mut marks: Vec<Mark> = (0..4000)
            .map(|i| Mark {
                name: format!("d{i}"),
                start: f64::from(i),
                end: Some(f64::from(i) + 0.5),
            })
            .collect();
        marks[7].end = None;
        m.record_drills(&gw, &marks, 5000.0);
        let text = m.prometheus_text();
        let series = text
            .lines()
            .filter(|l| l.starts_with("spillway_drill_active{"))
            .count();
        assert_eq!(series, crate::metrics::drills::MAX_MARKS);
        assert!(text.contains(r#"drill="d7"} 1"#), "the running one is kept");
        assert!(text.contains(r#"drill="d3999"}"#), "the latest is kept");
        assert!(!text.contains(r#"drill="d3000"}"#));
        assert!(
            text.contains(
                r#"spillway_drill_marks_ignored{namespace="istio-system",name="gw"} 3984"#
            ),
            "{text}"
        );
        m.record_drills(&gw, &marks[..3], 5000.0);
        assert!(
            !m.prometheus_text()
                .contains("spillway_drill_marks_ignored{")
        );
    }

    #[test]
    fn only_the_leader_exports_per_gateway_families() {
        let m = Metrics::new();
        m.error(&GatewayKey::new("istio-system", "gw"), ErrorKind::ApiRead);
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

    /// A decision of the built-in policy on an empty cluster, its one metric renamed.
    fn decision_for(metric: &str, now: f64) -> Decision {
        use crate::engine::{EngineState, Observation, decide};
        let spec = crate::policy::ElasticGateway::scenario_default().spec;
        let loads = [crate::model::LoadSample::Total(1000.0)];
        let obs = Observation {
            now,
            loads: &loads,
            fast: None,
            spec_replicas: 2,
            pod_requests: crate::model::Resources::pod(2000, 2 << 30),
            weights: None,
            rollout_in_progress: false,
            pods: &[],
            nodes: &[],
            ecs_claimed_elsewhere: 0,
            spread_missing: false,
            planned: &[],
            pool_usage: None,
        };
        let mut d = decide(&spec, &obs, &EngineState::default()).decision;
        d.readings[0].metric = metric.into();
        d
    }

    /// A policy metric renamed (or removed) loses its series: `SpillwayBlind` alerts on
    /// `spillway_load_missing`, and a stale 1 under the old name would fire for ever.
    #[test]
    fn a_renamed_policy_metric_loses_its_series() {
        let m = Metrics::new();
        m.set_leader(true);
        let key = GatewayKey::new("istio-system", "gw");
        let spec = crate::policy::ElasticGateway::scenario_default().spec;
        let mut old = decision_for("old", 1000.0);
        old.readings[0].missing = Some("empty result".into());
        m.record_decision(&key, &spec, &[], None, &old, &Plan::default(), 0.001);
        let text = m.prometheus_text();
        assert!(
            text.contains(
                r#"spillway_load_missing{namespace="istio-system",name="gw",metric="old"} 1"#
            ),
            "{text}"
        );
        m.record_decision(
            &key,
            &spec,
            &[],
            None,
            &decision_for("new", 1005.0),
            &Plan::default(),
            0.001,
        );
        let text = m.prometheus_text();
        assert!(!text.contains(r#"metric="old""#), "{text}");
        assert!(
            text.contains(
                r#"spillway_load_missing{namespace="istio-system",name="gw",metric="new"} 0"#
            ),
            "{text}"
        );
        m.forget(&key);
        assert!(!m.prometheus_text().contains("istio-system"));
    }

    /// The age of the last decision is read at each scrape, beside the interval it is due in.
    #[test]
    fn decision_age_is_read_at_the_scrape() {
        let m = Metrics::new();
        m.set_leader(true);
        let key = GatewayKey::new("istio-system", "gw");
        m.reconciled(&key, std::time::Duration::from_secs(5));
        let text = m.prometheus_text();
        let age = text
            .lines()
            .find(|l| {
                l.starts_with(
                    r#"spillway_decision_age_seconds{namespace="istio-system",name="gw"}"#,
                )
            })
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok());
        assert!(age.is_some_and(|a| (0.0..5.0).contains(&a)), "{text}");
        assert!(
            text.contains(
                r#"spillway_decision_interval_seconds{namespace="istio-system",name="gw"} 5"#
            ),
            "{text}"
        );
        assert!(
            m.openmetrics()
                .contains("# TYPE spillway_decision_age_seconds gauge")
        );
        m.forget(&key);
        assert!(!m.prometheus_text().contains("istio-system"));
    }
}
