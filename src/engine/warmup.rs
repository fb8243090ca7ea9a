//! A slow start in front of the gateway (`spec.warmup`): a pod that became Ready `age` seconds
//! ago takes a part of a warm pod's traffic, so right after a scale-out the fleet serves less
//! than its count says. The same arithmetic serves the engine (what the ready pods serve), the
//! drill (what the load balancer does) and `spillway doctor` (what a ramp costs).

use crate::model::{GatewayPod, Pool};
use crate::policy::Warmup;

/// The least weight a pod gets: a floor of 0 % with a steep `aggression` would otherwise round a
/// second-old pod's weight to 0, and a fleet of such pods to serving nothing.
const MIN_WEIGHT: f64 = 1e-6;

/// A pod's weight beside a warm pod's (0 to 1), `age` seconds after it joined: Envoy's slow
/// start, `max(minWeightPercent, (max(age, 1) / window) ^ (1 / aggression))` (Envoy's docs count
/// the age from 1 s). An age that is not a number counts as warm; in [`ready_serves`] a Ready
/// time more than [`CLOCK_SKEW_SECONDS`] ahead counts as warm, and one less ahead at the floor.
pub fn weight(w: &Warmup, age: f64) -> f64 {
    let window = w.seconds as f64;
    if age.is_nan() || age >= window || window <= 0.0 {
        return 1.0;
    }
    let factor = age.max(1.0) / window;
    factor
        .powf(1.0 / w.aggression.max(0.01))
        .max(w.min_weight_percent / 100.0)
        .clamp(MIN_WEIGHT, 1.0)
}

/// The seconds of traffic a new pod misses over its ramp, beside a warm one: `∫ (1 − weight)`
/// over the window (half the window, less the floor's part, for a linear ramp). A pod started
/// this much earlier has served as much as a warm pod started on time.
pub fn delay(w: &Warmup) -> f64 {
    let window = w.seconds.max(0) as f64;
    let steps = 200;
    let dt = window / f64::from(steps);
    (0..steps)
        .map(|i| (1.0 - weight(w, (f64::from(i) + 0.5) * dt)) * dt)
        .sum()
}

/// What pods that take traffic by weight serve together, in warm pods of full share: each
/// `(weight, share)` is a pod's ramp weight and what it serves when warm (1 an ECS pod, an ECI
/// pod its relative capacity). The balancer gives each pod its weight's part of the load, so the
/// pods at the largest weight fill first: the fleet serves `Σ weight·share / max weight`. When
/// every pod is equally new, the ramp changes nothing (as Envoy's docs say of a fresh rollout).
pub fn serves(pods: impl Iterator<Item = (f64, f64)>) -> f64 {
    let (mut sum, mut top) = (0.0, 0.0_f64);
    for (w, share) in pods {
        sum += w * share;
        top = top.max(w);
    }
    // `top` is 0 only for no pods: [`weight`] gives at least `MIN_WEIGHT`.
    if top > 0.0 { sum / top } else { 0.0 }
}

/// A Ready time this far past the caller's clock is the node's clock ahead, not a pod that just
/// joined: it counts as warm, so that a skewed kubelet cannot hold a fleet at its ramps' floor.
pub const CLOCK_SKEW_SECONDS: f64 = 30.0;

/// What the ready, non-terminating `pods` serve at time `at` (in ECS pods, ECI pods at
/// `eci_share`), their ramps counted when `warmup` is set. A pod Ready since an unknown time, or
/// since a time more than [`CLOCK_SKEW_SECONDS`] ahead, counts as warm.
pub fn ready_serves(pods: &[GatewayPod], warmup: Option<&Warmup>, eci_share: f64, at: f64) -> f64 {
    let share = |p: &GatewayPod| match p.pool {
        Pool::Eci => eci_share,
        _ => 1.0,
    };
    let ready = pods.iter().filter(|p| p.ready && !p.terminating);
    match warmup {
        None => ready.map(share).sum(),
        Some(w) => serves(ready.map(|p| {
            let age = p
                .ready_since
                .map(|r| at - r)
                .filter(|age| *age >= -CLOCK_SKEW_SECONDS)
                .unwrap_or(f64::INFINITY);
            (weight(w, age), share(p))
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(seconds: i64, min: f64, aggression: f64) -> Warmup {
        Warmup {
            seconds,
            min_weight_percent: min,
            aggression,
        }
    }

    #[test]
    fn the_weight_follows_envoys_slow_start() {
        let w = ramp(60, 10.0, 1.0);
        // The floor until the ramp passes it, then linear, then warm.
        assert_eq!(weight(&w, 0.0), 0.1);
        assert_eq!(weight(&w, 3.0), 0.1);
        assert!((weight(&w, 30.0) - 0.5).abs() < 1e-12);
        assert_eq!(weight(&w, 60.0), 1.0);
        assert_eq!(weight(&w, 1e9), 1.0);
        assert_eq!(weight(&w, f64::NAN), 1.0);
        // Aggression 2: the square root, fast at first.
        let fast = ramp(100, 0.0, 2.0);
        assert!((weight(&fast, 25.0) - 0.5).abs() < 1e-12);
        // A zero floor still gives the first second's weight (age counts from 1).
        assert!((weight(&ramp(100, 0.0, 1.0), 0.0) - 0.01).abs() < 1e-12);
    }

    #[test]
    fn a_fleet_serves_by_its_warm_pods_and_an_all_new_fleet_in_full() {
        // 4 warm pods and 4 at weight 0.1: the warm ones fill at 4.4 pods' worth.
        let mixed = (0..4).map(|_| (1.0, 1.0)).chain((0..4).map(|_| (0.1, 1.0)));
        assert!((serves(mixed) - 4.4).abs() < 1e-12);
        // Every pod equally new: equal shares, so each serves in full.
        assert!((serves((0..5).map(|_| (0.2, 1.0))) - 5.0).abs() < 1e-12);
        assert_eq!(serves(std::iter::empty()), 0.0);
    }

    #[test]
    fn a_linear_ramp_costs_half_its_window_less_the_floor() {
        // ∫ (1 − max(0.1, a/60)) over 60 s: 0.9 × 6 s + the triangle from 6 s to 60 s.
        let d = delay(&ramp(60, 10.0, 1.0));
        assert!((d - (5.4 + 0.5 * 54.0 * 0.9)).abs() < 0.1, "{d}");
        // A floor of 100 %: no ramp at all.
        assert!(delay(&ramp(60, 100.0, 1.0)).abs() < 1e-9);
    }

    #[test]
    fn ready_pods_count_by_their_ramp_and_others_not_at_all() {
        let pod = |name: &str, pool: Pool, ready: bool, since: Option<f64>| GatewayPod {
            name: name.into(),
            node: Some("n".into()),
            pool,
            ready,
            pending: false,
            terminating: false,
            requests: Default::default(),
            deletion_cost: None,
            created_at: 0.0,
            ready_since: since,
            drain: None,
        };
        let pods = [
            pod("warm", Pool::Ecs, true, Some(0.0)),
            pod("unknown", Pool::Ecs, true, None),
            // A kubelet whose clock runs an hour ahead: warm, not at the floor for an hour.
            pod("skewed", Pool::Ecs, true, Some(4600.0)),
            pod("new-eci", Pool::Eci, true, Some(1000.0)),
            pod("starting", Pool::Eci, false, None),
        ];
        let w = ramp(60, 10.0, 1.0);
        // Without a ramp: 3 ECS pods and an ECI pod at half an ECS pod.
        assert_eq!(ready_serves(&pods, None, 0.5, 1000.0), 3.5);
        // With it: the new ECI pod at 10 % of its half.
        assert!((ready_serves(&pods, Some(&w), 0.5, 1000.0) - 3.05).abs() < 1e-12);
        // 30 s on, half way up its ramp.
        assert!((ready_serves(&pods, Some(&w), 0.5, 1030.0) - 3.25).abs() < 1e-12);
    }
}
