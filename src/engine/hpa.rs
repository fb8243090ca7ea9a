//! The Kubernetes HPA algorithm, as kube-controller-manager runs it (`pkg/controller/podautoscaler`:
//! `replica_calculator.go` and `horizontal.go`), made pure: time and history are passed in.
//!
//! It is spillway's baseline, and on its own the `hpa` policy of a drill.

use serde::{Deserialize, Serialize};

use crate::model::GatewayPod;
use crate::policy::{EffectiveRules, PodGrouping, ScalingPolicyType, SelectPolicy, Tolerances};

/// `GetExternalPerPodMetricReplicas`: the total over a per-replica target, unless the usage
/// ratio (over the replicas the status counts) is within tolerance. With no replicas the ratio
/// is infinite (or NaN for no usage): always outside.
pub fn replicas_for_total(status_replicas: i32, total: f64, target: f64, tol: Tolerances) -> i32 {
    let ratio = total / (target * f64::from(status_replicas));
    if tol.is_within(ratio) {
        status_replicas
    } else {
        ceil_i32(total / target)
    }
}

/// `GetMetricReplicas` → `groupPods` and `calcPlainMetricReplicas` for per-pod values: pods
/// being deleted are ignored; unready and missing pods as `grouping` says. Missing pods are
/// taken at the target on a scale-down and at 0 on a scale-up, unready pods at 0 on a
/// scale-up; if that flips the direction, nothing changes.
pub fn replicas_for_per_pod(
    current_replicas: i32,
    samples: &[(String, f64)],
    pods: &[GatewayPod],
    target: f64,
    tol: Tolerances,
    grouping: PodGrouping,
) -> Result<i32, String> {
    let mut metrics: Vec<(&str, f64)> = Vec::new();
    let (mut unready, mut missing) = (Vec::new(), Vec::new());
    let mut ready_count = 0i32;
    let sample = |name: &str| samples.iter().find(|(n, _)| n == name).map(|(_, v)| *v);
    for pod in pods.iter().filter(|p| !p.terminating) {
        let unready_here = match grouping {
            PodGrouping::Serving => !pod.ready,
            PodGrouping::Upstream => pod.pending,
        };
        if unready_here {
            unready.push(pod.name.as_str());
        } else if let Some(v) = sample(&pod.name) {
            metrics.push((pod.name.as_str(), v));
            ready_count += 1;
        } else {
            missing.push(pod.name.as_str());
        }
    }
    if grouping == PodGrouping::Upstream {
        // Upstream removes the samples of ignored and unready pods from what the metrics API
        // returned, and keeps the rest: a pod it does not list still counts in the average.
        metrics.extend(
            samples
                .iter()
                .filter(|(n, _)| !pods.iter().any(|p| p.name == *n))
                .map(|(n, v)| (n.as_str(), *v)),
        );
    }
    if pods.is_empty() {
        return Err("no pods returned by the selector".into());
    }
    if metrics.is_empty() {
        return Err("no ready pod reported a value".into());
    }
    // Upstream's `GetMetricUsageRatio` works in milli-units (the quantities' `MilliValue`) and
    // truncates the average before dividing by the target.
    let milli = |v: f64| (v * 1000.0).round();
    let ratio = |m: &[(&str, f64)]| {
        (m.iter().map(|(_, v)| milli(*v)).sum::<f64>() / m.len() as f64).floor() / milli(target)
    };
    let usage_ratio = ratio(&metrics);
    let scale_up_with_unready = !unready.is_empty() && usage_ratio > 1.0;
    if !scale_up_with_unready && missing.is_empty() {
        if tol.is_within(usage_ratio) {
            return Ok(current_replicas);
        }
        return Ok(ceil_i32(usage_ratio * f64::from(ready_count)));
    }
    // Missing pods at the target on a scale-down, at 0 on a scale-up, and not at all at a ratio
    // of exactly 1 (upstream adds them only on either side).
    if usage_ratio != 1.0 {
        let fill = if usage_ratio < 1.0 { target } else { 0.0 };
        metrics.extend(missing.iter().map(|n| (*n, fill)));
    }
    if scale_up_with_unready {
        metrics.extend(unready.iter().map(|n| (*n, 0.0)));
    }
    let new_ratio = ratio(&metrics);
    if tol.is_within(new_ratio)
        || (usage_ratio < 1.0 && new_ratio > 1.0)
        || (usage_ratio > 1.0 && new_ratio < 1.0)
    {
        return Ok(current_replicas);
    }
    let new_replicas = ceil_i32(new_ratio * metrics.len() as f64);
    if (new_ratio < 1.0 && new_replicas > current_replicas)
        || (new_ratio > 1.0 && new_replicas < current_replicas)
    {
        return Ok(current_replicas);
    }
    Ok(new_replicas)
}

fn ceil_i32(x: f64) -> i32 {
    if x.is_nan() {
        0
    } else {
        x.ceil().clamp(0.0, f64::from(i32::MAX)) as i32
    }
}

/// A past recommendation, for the stabilization windows.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Recommendation {
    pub at: f64,
    pub replicas: i32,
    /// Counts for the scale-down window only; scale-ups are not delayed. Recorded while load data
    /// was missing (the count held then), so that the first readings after a gap (often
    /// partial: a restarted Prometheus has no `rate()` for a series until it has two fresh
    /// samples) cannot shrink the fleet before the window has seen them settle; and for what the
    /// fast path reads above the recommendation (see [`HpaMemory::floor`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub held: bool,
}

/// A past change of the replica count, for the rate policies.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScaleEvent {
    pub at: f64,
    /// Positive for a scale-up, negative for a scale-down.
    pub change: i32,
}

/// What the HPA remembers between runs.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HpaMemory {
    pub recommendations: Vec<Recommendation>,
    pub events: Vec<ScaleEvent>,
}

/// Inputs of `normalizeDesiredReplicasWithBehaviors`.
pub struct Normalize<'a> {
    pub now: f64,
    pub current: i32,
    pub desired: i32,
    pub min: i32,
    pub max: i32,
    pub up: &'a EffectiveRules,
    pub down: &'a EffectiveRules,
}

/// Why the normalised count differs from the recommendation (HPA condition reasons).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Limit {
    DesiredWithinRange,
    ScaleUpStabilized,
    ScaleDownStabilized,
    ScaleUpLimit,
    ScaleDownLimit,
    TooManyReplicas,
    TooFewReplicas,
}

impl Limit {
    pub fn as_str(self) -> &'static str {
        match self {
            Limit::DesiredWithinRange => "DesiredWithinRange",
            Limit::ScaleUpStabilized => "ScaleUpStabilized",
            Limit::ScaleDownStabilized => "ScaleDownStabilized",
            Limit::ScaleUpLimit => "ScaleUpLimit",
            Limit::ScaleDownLimit => "ScaleDownLimit",
            Limit::TooManyReplicas => "TooManyReplicas",
            Limit::TooFewReplicas => "TooFewReplicas",
        }
    }
}

impl HpaMemory {
    /// The largest recommendation recorded at or after `since`.
    pub fn max_since(&self, since: f64) -> Option<i32> {
        self.recommendations
            .iter()
            .filter(|r| r.at >= since)
            .map(|r| r.replicas)
            .max()
    }

    /// `recordInitialRecommendation`: a fresh memory starts with the current count, so a
    /// restarted agent (or a new leader) does not scale down for a full scale-down window.
    pub fn seed(&mut self, now: f64, current: i32) {
        if self.recommendations.is_empty() {
            self.recommendations.push(Recommendation {
                at: now,
                replicas: current,
                held: false,
            });
        }
    }

    /// A level the count must not fall below for the scale-down window: what the pods' own
    /// counters read right now. Without it a count raised by the fast path (which sees every
    /// second) would be lowered by the window of Prometheus's smoothed recommendations, which
    /// never saw the level, and raised again at the next peak of the same load: a reversal
    /// each time, on noise alone.
    pub fn floor(&mut self, now: f64, replicas: i32, up: &EffectiveRules, down: &EffectiveRules) {
        self.recommendations.push(Recommendation {
            at: now,
            replicas,
            held: true,
        });
        self.prune(now, up, down);
    }

    /// Stabilization, then rate limits, then bounds: the replica count the HPA would set.
    pub fn normalize(&mut self, n: &Normalize<'_>) -> (i32, Limit) {
        let (stabilized, mut limit) = self.stabilize(n);
        let (rated, rate_limit) = self.rate_limit(n, stabilized);
        if rate_limit != Limit::DesiredWithinRange {
            limit = rate_limit;
        }
        (rated, limit)
    }

    /// `stabilizeRecommendationWithBehaviors`.
    fn stabilize(&mut self, n: &Normalize<'_>) -> (i32, Limit) {
        let up_cutoff = n.now - f64::from(n.up.stabilization_window_seconds);
        let down_cutoff = n.now - f64::from(n.down.stabilization_window_seconds);
        let (mut up_rec, mut down_rec) = (n.desired, n.desired);
        let mut old = None;
        for (i, r) in self.recommendations.iter().enumerate() {
            if r.at > up_cutoff && !r.held {
                up_rec = up_rec.min(r.replicas);
            }
            if r.at > down_cutoff {
                down_rec = down_rec.max(r.replicas);
            }
            if r.at < up_cutoff && r.at < down_cutoff {
                old = Some(i);
            }
        }
        let mut rec = n.current;
        let mut limit = Limit::DesiredWithinRange;
        if rec < up_rec {
            rec = up_rec;
        }
        if rec > down_rec {
            rec = down_rec;
        }
        if rec != n.desired {
            limit = if n.desired > rec {
                Limit::ScaleUpStabilized
            } else {
                Limit::ScaleDownStabilized
            };
        }
        self.remember(
            old,
            Recommendation {
                at: n.now,
                replicas: n.desired,
                held: false,
            },
        );
        (rec, limit)
    }

    /// Upstream replaces the oldest entry outside both windows, else appends.
    fn remember(&mut self, old: Option<usize>, entry: Recommendation) {
        match old {
            Some(i) => self.recommendations[i] = entry,
            None => self.recommendations.push(entry),
        }
    }

    /// A run without load data: the count held is remembered for the scale-down window, so that
    /// scale-down after the gap waits a full window of fresh readings.
    pub fn hold(&mut self, now: f64, current: i32, up: &EffectiveRules, down: &EffectiveRules) {
        self.recommendations.push(Recommendation {
            at: now,
            replicas: current,
            held: true,
        });
        self.prune(now, up, down);
    }

    /// `convertDesiredReplicasWithBehaviorRate`.
    fn rate_limit(&self, n: &Normalize<'_>, desired: i32) -> (i32, Limit) {
        if desired > n.current {
            let limit = self.scale_up_limit(n.now, n.current, n.up).max(n.current);
            let (max_allowed, reason) = if n.max > limit {
                (limit, Limit::ScaleUpLimit)
            } else {
                (n.max, Limit::TooManyReplicas)
            };
            if desired > max_allowed {
                return (max_allowed, reason);
            }
        } else if desired < n.current {
            let limit = self
                .scale_down_limit(n.now, n.current, n.down)
                .min(n.current);
            let (min_allowed, reason) = if n.min < limit {
                (limit, Limit::ScaleDownLimit)
            } else {
                (n.min, Limit::TooFewReplicas)
            };
            if desired < min_allowed {
                return (min_allowed, reason);
            }
        }
        (desired, Limit::DesiredWithinRange)
    }

    /// `getReplicasChangePerPeriod` for both directions: (added, deleted) within the period.
    fn changes_in(&self, now: f64, period: i32) -> (i32, i32) {
        let cutoff = now - f64::from(period);
        self.events
            .iter()
            .filter(|e| e.at > cutoff)
            .fold((0, 0), |(up, down), e| {
                if e.change > 0 {
                    (up.saturating_add(e.change), down)
                } else {
                    (up, down.saturating_sub(e.change))
                }
            })
    }

    /// `calculateScaleUpLimitWithScalingRules`.
    fn scale_up_limit(&self, now: f64, current: i32, rules: &EffectiveRules) -> i32 {
        let pick: fn(i32, i32) -> i32 = match rules.select_policy {
            SelectPolicy::Disabled => return current,
            SelectPolicy::Min => i32::min,
            SelectPolicy::Max => i32::max,
        };
        let mut result = if rules.select_policy == SelectPolicy::Min {
            i32::MAX
        } else {
            i32::MIN
        };
        for p in &rules.policies {
            let (added, deleted) = self.changes_in(now, p.period_seconds);
            // Saturating: a user's rate limit may be as large as i32 allows.
            let start = current.saturating_sub(added).saturating_add(deleted);
            let proposed = match p.kind {
                ScalingPolicyType::Pods => start.saturating_add(p.value),
                ScalingPolicyType::Percent => {
                    ceil_i32(f64::from(start) * (1.0 + f64::from(p.value) / 100.0))
                }
            };
            result = pick(result, proposed);
        }
        result
    }

    /// `calculateScaleDownLimitWithBehaviors`.
    fn scale_down_limit(&self, now: f64, current: i32, rules: &EffectiveRules) -> i32 {
        let pick: fn(i32, i32) -> i32 = match rules.select_policy {
            SelectPolicy::Disabled => return current,
            SelectPolicy::Min => i32::max,
            SelectPolicy::Max => i32::min,
        };
        let mut result = if rules.select_policy == SelectPolicy::Min {
            i32::MIN
        } else {
            i32::MAX
        };
        for p in &rules.policies {
            let (added, deleted) = self.changes_in(now, p.period_seconds);
            let start = current.saturating_sub(added).saturating_add(deleted);
            let proposed = match p.kind {
                ScalingPolicyType::Pods => start.saturating_sub(p.value),
                // Truncation, as upstream's int32() conversion.
                ScalingPolicyType::Percent => {
                    (f64::from(start) * (1.0 - f64::from(p.value) / 100.0)) as i32
                }
            };
            result = pick(result, proposed);
        }
        result
    }

    /// `storeScaleEvent`, with events older than the longest policy period dropped.
    pub fn record_scale(&mut self, now: f64, from: i32, to: i32, longest_period: i32) {
        let cutoff = now - f64::from(longest_period);
        self.events.retain(|e| e.at > cutoff);
        if to != from {
            self.events.push(ScaleEvent {
                at: now,
                change: to - from,
            });
        }
    }

    /// Drops recommendations older than both windows (upstream replaces one per run; this keeps
    /// the memory bounded the same way when runs are irregular).
    pub fn prune(&mut self, now: f64, up: &EffectiveRules, down: &EffectiveRules) {
        let keep = f64::from(
            up.stabilization_window_seconds
                .max(down.stabilization_window_seconds),
        );
        let latest = self
            .recommendations
            .iter()
            .map(|r| r.at)
            .fold(f64::MIN, f64::max);
        self.recommendations
            .retain(|r| r.at >= now - keep || r.at == latest);
    }
}

/// The longest period among the policies of both directions (how long events matter).
pub fn longest_period(up: &EffectiveRules, down: &EffectiveRules) -> i32 {
    up.policies
        .iter()
        .chain(&down.policies)
        .map(|p| p.period_seconds)
        .max()
        .unwrap_or(0)
}

#[cfg(test)]
mod upstream;

#[cfg(test)]
mod overflow_tests {
    use super::*;
    use crate::policy::{ScalingPolicy, ScalingPolicyType, SelectPolicy};

    /// A rate limit as large as i32 allows must not wrap around and freeze scale-up.
    #[test]
    fn a_huge_rate_limit_saturates() {
        let rules = EffectiveRules {
            stabilization_window_seconds: 0,
            select_policy: SelectPolicy::Max,
            policies: vec![ScalingPolicy {
                kind: ScalingPolicyType::Pods,
                value: i32::MAX,
                period_seconds: 15,
            }],
        };
        let mut m = HpaMemory::default();
        m.record_scale(0.0, 4, 10, 15);
        assert_eq!(m.scale_up_limit(1.0, 10, &rules), i32::MAX);
        assert_eq!(m.scale_down_limit(1.0, 10, &rules), i32::MIN + 5);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Pool, Resources};
    use crate::policy::ScalingRules;

    fn pod(name: &str, ready: bool) -> GatewayPod {
        GatewayPod {
            name: name.into(),
            node: Some("n".into()),
            pool: Pool::Ecs,
            ready,
            pending: !ready,
            terminating: false,
            requests: Resources::pod(1000, 1 << 30),
            deletion_cost: None,
            created_at: 0.0,
            ready_since: None,
            drain: None,
        }
    }

    #[test]
    fn total_metric_follows_the_external_per_pod_formula() {
        // (current, total, target) -> want
        let cases = [
            (4, 400.0, 100.0, 4), // exactly on target
            (4, 430.0, 100.0, 4), // ratio 1.075: within tolerance
            (4, 450.0, 100.0, 5), // ratio 1.125: ceil(4.5)
            (4, 1000.0, 100.0, 10),
            (10, 250.0, 100.0, 3),  // scale down
            (10, 920.0, 100.0, 10), // ratio 0.92: within tolerance
            (10, 0.0, 100.0, 0),    // bounds are applied later
        ];
        for (cur, total, target, want) in cases {
            assert_eq!(
                replicas_for_total(cur, total, target, Tolerances::symmetric(0.1)),
                want,
                "{cur} {total} {target}"
            );
        }
    }

    #[test]
    fn per_pod_missing_and_unready_rules() {
        let pods = vec![
            pod("a", true),
            pod("b", true),
            pod("c", true),
            pod("d", false),
        ];
        let s = |v: &[(&str, f64)]| {
            v.iter()
                .map(|(n, x)| ((*n).to_string(), *x))
                .collect::<Vec<_>>()
        };
        // All ready pods at 2x target, one unready: unready taken at 0 on scale-up.
        // ratio with unready at 0: (200*3+0)/4/100 = 1.5 -> ceil(1.5*4) = 6
        assert_eq!(
            replicas_for_per_pod(
                4,
                &s(&[("a", 200.0), ("b", 200.0), ("c", 200.0)]),
                &pods,
                100.0,
                Tolerances::symmetric(0.1),
                PodGrouping::Serving
            ),
            Ok(6)
        );
        // Scale-down with a missing pod: missing taken at the target (100).
        // ready: a=50,b=50, c missing; ratio 0.5 -> with c=100: 200/3/100=0.667 -> ceil(2)=2
        let ready = vec![pod("a", true), pod("b", true), pod("c", true)];
        assert_eq!(
            replicas_for_per_pod(
                3,
                &s(&[("a", 50.0), ("b", 50.0)]),
                &ready,
                100.0,
                Tolerances::symmetric(0.1),
                PodGrouping::Serving
            ),
            Ok(2)
        );
        // Scale-up with a missing pod taken at 0 flipping the direction: hold.
        // a=105,b=105, c missing -> 210/3/100 = 0.7 < 1 while raw ratio 1.05 > 1 -> current
        assert_eq!(
            replicas_for_per_pod(
                3,
                &s(&[("a", 105.0), ("b", 105.0)]),
                &ready,
                100.0,
                Tolerances::symmetric(0.0),
                PodGrouping::Serving
            ),
            Ok(3)
        );
        // No values at all is an error (the metric is missing).
        for g in [PodGrouping::Serving, PodGrouping::Upstream] {
            assert!(
                replicas_for_per_pod(3, &[], &ready, 100.0, Tolerances::symmetric(0.1), g).is_err()
            );
        }
    }

    fn rules(up: &ScalingRules, down: &ScalingRules) -> (EffectiveRules, EffectiveRules) {
        (up.effective(true), down.effective(false))
    }

    #[test]
    fn scale_down_is_stabilized_for_five_minutes() {
        let (up, down) = rules(&ScalingRules::default(), &ScalingRules::default());
        let mut m = HpaMemory::default();
        m.seed(0.0, 10);
        let mut current = 10;
        let mut history = vec![];
        for t in (15..=330).step_by(15) {
            let n = Normalize {
                now: t as f64,
                current,
                desired: 3,
                min: 1,
                max: 20,
                up: &up,
                down: &down,
            };
            let (r, limit) = m.normalize(&n);
            m.record_scale(t as f64, current, r, longest_period(&up, &down));
            current = r;
            history.push((t, r, limit));
        }
        // Held at 10 while the seed (t=0) is inside the 300 s window, then straight to 3.
        assert!(
            history
                .iter()
                .filter(|(t, ..)| *t < 300)
                .all(|(_, r, l)| *r == 10 && *l == Limit::ScaleDownStabilized)
        );
        assert_eq!(history.last().map(|h| h.1), Some(3));
    }

    #[test]
    fn scale_up_rate_is_max_of_100_percent_and_4_pods_per_15s() {
        let (up, down) = rules(&ScalingRules::default(), &ScalingRules::default());
        let mut m = HpaMemory::default();
        let mut current = 2;
        let mut seen = vec![];
        for step in 0..5 {
            let now = f64::from(step) * 15.0;
            let n = Normalize {
                now,
                current,
                desired: 40,
                min: 1,
                max: 30,
                up: &up,
                down: &down,
            };
            let (r, _) = m.normalize(&n);
            m.record_scale(now, current, r, longest_period(&up, &down));
            current = r;
            seen.push(r);
        }
        // 2 -> max(4, 6)=6 -> max(12, 10)=12 -> 24 -> capped at max 30.
        assert_eq!(seen, vec![6, 12, 24, 30, 30]);
    }

    #[test]
    fn events_within_the_period_count_against_the_limit() {
        let (up, down) = rules(&ScalingRules::default(), &ScalingRules::default());
        let mut m = HpaMemory::default();
        // Scaled 2 -> 6 five seconds ago: the period started at 2, so the limit is max(4, 6) = 6.
        m.record_scale(0.0, 2, 6, 15);
        let n = Normalize {
            now: 5.0,
            current: 6,
            desired: 20,
            min: 1,
            max: 30,
            up: &up,
            down: &down,
        };
        assert_eq!(m.normalize(&n), (6, Limit::ScaleUpLimit));
    }

    #[test]
    fn select_policy_min_and_disabled() {
        let up_min = ScalingRules {
            select_policy: Some(SelectPolicy::Min),
            ..Default::default()
        };
        let (up, down) = rules(&up_min, &ScalingRules::default());
        let mut m = HpaMemory::default();
        let n = Normalize {
            now: 0.0,
            current: 10,
            desired: 40,
            min: 1,
            max: 50,
            up: &up,
            down: &down,
        };
        // min(20, 14) = 14
        assert_eq!(m.normalize(&n).0, 14);
        let off = ScalingRules {
            select_policy: Some(SelectPolicy::Disabled),
            ..Default::default()
        };
        let (up, down) = rules(&ScalingRules::default(), &off);
        let mut m = HpaMemory::default();
        let n = Normalize {
            now: 0.0,
            current: 10,
            desired: 2,
            min: 1,
            max: 50,
            up: &up,
            down: &down,
        };
        assert_eq!(m.normalize(&n).0, 10);
    }

    #[test]
    fn pods_policy_scale_down_with_stabilization_off() {
        let down_rules = ScalingRules {
            stabilization_window_seconds: Some(0),
            select_policy: None,
            policies: Some(vec![crate::policy::ScalingPolicy {
                kind: ScalingPolicyType::Pods,
                value: 2,
                period_seconds: 60,
            }]),
            tolerance: None,
        };
        let (up, down) = rules(&ScalingRules::default(), &down_rules);
        let mut m = HpaMemory::default();
        let mut current = 10;
        let mut seen = vec![];
        for step in 0..3 {
            let now = f64::from(step) * 30.0;
            let n = Normalize {
                now,
                current,
                desired: 1,
                min: 1,
                max: 50,
                up: &up,
                down: &down,
            };
            let (r, _) = m.normalize(&n);
            m.record_scale(now, current, r, longest_period(&up, &down));
            current = r;
            seen.push(r);
        }
        // -2 per 60 s: 8 at t=0, held at 8 at t=30, 6 at t=60 (the first event left the period).
        assert_eq!(seen, vec![8, 8, 6]);
    }
}
