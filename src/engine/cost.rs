//! Cost arithmetic: a pod's share of an ECS node, and an ECI pod's per-second bill.

use serde::{Deserialize, Serialize};

use crate::model::{Node, Resources};
use crate::policy::CostModel;

const GIB: f64 = (1u64 << 30) as f64;

/// ECI vCPU/memory specifications (vCPU, GiB) a pod's requests are rounded up to, from
/// Alibaba Cloud's "ECI instance specifications" (general-purpose, CPU-only).
pub const ECI_SIZES: &[(f64, f64)] = &[
    (0.25, 0.5),
    (0.25, 1.0),
    (0.5, 1.0),
    (0.5, 2.0),
    (1.0, 2.0),
    (1.0, 4.0),
    (1.0, 8.0),
    (2.0, 1.0),
    (2.0, 2.0),
    (2.0, 4.0),
    (2.0, 8.0),
    (2.0, 16.0),
    (4.0, 4.0),
    (4.0, 8.0),
    (4.0, 16.0),
    (4.0, 32.0),
    (8.0, 4.0),
    (8.0, 8.0),
    (8.0, 16.0),
    (8.0, 32.0),
    (8.0, 64.0),
    (12.0, 12.0),
    (12.0, 24.0),
    (12.0, 48.0),
    (12.0, 96.0),
    (16.0, 16.0),
    (16.0, 32.0),
    (16.0, 64.0),
    (16.0, 128.0),
    (24.0, 24.0),
    (24.0, 48.0),
    (24.0, 96.0),
    (24.0, 192.0),
    (32.0, 32.0),
    (32.0, 64.0),
    (32.0, 128.0),
    (32.0, 256.0),
    (52.0, 96.0),
    (52.0, 192.0),
    (52.0, 384.0),
    (64.0, 128.0),
    (64.0, 256.0),
    (64.0, 512.0),
];

/// The cheapest ECI size that covers `requests`; past the largest, the requests themselves.
pub fn eci_size(requests: &Resources, model: &CostModel) -> (f64, f64) {
    let cpu = requests.cpu_millis as f64 / 1000.0;
    let mem = requests.memory_bytes as f64 / GIB;
    let price = |(c, m): (f64, f64)| {
        c * model.eci_vcpu_price_per_second + m * model.eci_gib_price_per_second
    };
    ECI_SIZES
        .iter()
        .copied()
        .filter(|(c, m)| *c >= cpu - 1e-9 && *m >= mem - 1e-9)
        .min_by(|a, b| price(*a).total_cmp(&price(*b)))
        .unwrap_or((cpu, mem))
}

/// What one ECI pod with these requests costs per second.
pub fn eci_pod_per_second(requests: &Resources, model: &CostModel) -> f64 {
    let (c, m) = eci_size(requests, model);
    c * model.eci_vcpu_price_per_second + m * model.eci_gib_price_per_second
}

/// A node's hourly price from its instance type.
pub fn node_price_per_hour(node: &Node, model: &CostModel) -> f64 {
    node.instance_type()
        .and_then(|t| model.ecs_node_price_per_hour.get(t))
        .copied()
        .unwrap_or(model.ecs_default_node_price_per_hour)
}

/// A pod's share of its ECS node's price per hour: the larger of its CPU and memory fractions.
pub fn ecs_pod_per_hour(requests: &Resources, node: &Node, model: &CostModel) -> f64 {
    let frac = |r: i64, a: i64| if a > 0 { r as f64 / a as f64 } else { 0.0 };
    let share = frac(requests.cpu_millis, node.allocatable.cpu_millis)
        .max(frac(requests.memory_bytes, node.allocatable.memory_bytes))
        .min(1.0);
    share * node_price_per_hour(node, model)
}

/// The cost part of a decision, per hour in the model's currency.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CostEstimate {
    pub currency: String,
    /// The dedicated ECS nodes' price: a fixed cost, whether or not gateway pods run there.
    pub ecs_per_hour: f64,
    /// The ECI pods' price: the marginal cost of the overflow.
    pub eci_per_hour: f64,
    /// An all-ECS fleet with enough whole nodes for the day's peak, held all the time.
    pub all_ecs_peak_per_hour: f64,
    /// `all_ecs_peak_per_hour - ecs_per_hour - eci_per_hour`.
    pub saving_per_hour: f64,
    /// ECI spend of the peak in progress, or of the last one (total, not per hour).
    #[serde(default)]
    pub peak_eci_spend: f64,
    /// Spent on the dedicated ECS nodes since the previous decision: this decision's price over
    /// the time since then (what `spillway_cost_total{pool="ecs"}` adds up).
    #[serde(default)]
    pub ecs_spent: f64,
    /// Spent on ECI pods since the previous decision, likewise.
    #[serde(default)]
    pub eci_spent: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> CostModel {
        CostModel {
            eci_vcpu_price_per_second: 0.00005,
            eci_gib_price_per_second: 0.000005,
            ..CostModel::default()
        }
    }

    #[test]
    fn requests_round_up_to_an_eci_size() {
        let m = model();
        assert_eq!(eci_size(&Resources::pod(2000, 2 << 30), &m), (2.0, 2.0));
        assert_eq!(eci_size(&Resources::pod(1500, 3 << 30), &m), (2.0, 4.0));
        assert_eq!(eci_size(&Resources::pod(100, 100 << 20), &m), (0.25, 0.5));
        assert_eq!(eci_size(&Resources::pod(3000, 1 << 30), &m), (4.0, 4.0));
        // 2 vCPU + 2 GiB = 0.0001 + 0.00001 per second.
        assert!((eci_pod_per_second(&Resources::pod(2000, 2 << 30), &m) - 0.00011).abs() < 1e-12);
    }

    #[test]
    fn ecs_share_is_the_larger_fraction() {
        let mut m = model();
        m.ecs_node_price_per_hour
            .insert("ecs.g7.2xlarge".into(), 2.0);
        let mut node = Node {
            name: "n".into(),
            allocatable: Resources::new(8000, 32 << 30, 110),
            ..Default::default()
        };
        node.labels.insert(
            crate::model::INSTANCE_TYPE_LABEL.into(),
            "ecs.g7.2xlarge".into(),
        );
        // cpu 2/8 = 0.25, mem 2/32: 0.25 * 2.0
        assert!((ecs_pod_per_hour(&Resources::pod(2000, 2 << 30), &node, &m) - 0.5).abs() < 1e-12);
        node.labels.clear();
        assert!(
            (ecs_pod_per_hour(&Resources::pod(2000, 16 << 30), &node, &m)
                - 0.5 * m.ecs_default_node_price_per_hour)
                .abs()
                < 1e-12
        );
    }
}
