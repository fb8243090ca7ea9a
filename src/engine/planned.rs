//! Planned events (issue 28): capacity ready before a known spike. A user states the demand a
//! gateway must be ready for and from when; the engine turns it into replicas with the capacity
//! it counts per pool (an ECS pod serves the request-rate target, an ECI pod its counted share,
//! ECS first up to the room it has), and raises the count each pool's start latency ahead:
//! the ECS part when an ECS pod started now would just be ready, the ECI part likewise with the
//! ECI start. The plan holds through the window; afterwards the count leaves by the normal
//! scale-down, since the plan's floor went into the HPA's recommendations like any other.
//! Reactive scaling stays on top: a load above the plan is served as ever.

use serde::{Deserialize, Serialize};

use super::capacity::Mix;

/// One planned event as the engine takes it, on the caller's clock, in the unit of the policy's
/// first request-rate metric.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlannedDemand {
    /// Names it in reasons and status.
    pub name: String,
    /// From when the demand is to be served in full.
    pub start: f64,
    /// Until when.
    pub end: f64,
    /// Requests per second to be ready for.
    pub rps: f64,
    /// The demand rises linearly over this long before `start` (0: a step at `start`).
    #[serde(default)]
    pub ramp_seconds: f64,
    /// When it was planned: before then it is not known, and planned after its pods had to
    /// start, it is too late to be met on time.
    #[serde(default)]
    pub created: f64,
    /// What one ECS pod serves of this demand, when it is stated in another metric's unit than
    /// the request-rate metric's (that metric's target). Unset: the request-rate target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_pod: Option<f64>,
}

impl PlannedDemand {
    /// The demand stated for instant `t`.
    pub fn at(&self, t: f64) -> f64 {
        let from = self.start - self.ramp_seconds.max(0.0);
        if t < from || t >= self.end {
            0.0
        } else if t < self.start {
            self.rps * (t - from) / (self.start - from)
        } else {
            self.rps
        }
    }

    /// When the demand first rises above nothing.
    fn rises(&self) -> f64 {
        self.start - self.ramp_seconds.max(0.0)
    }
}

/// How far ahead each pool is raised: its start latency, plus the gap since the previous
/// decision (the next may come that late).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Leads {
    pub ecs: f64,
    pub eci: f64,
    pub gap: f64,
}

/// What the engine may not exceed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Limits {
    pub max_replicas: i32,
    /// Most gateway pods allowed on ECI (pods and cost caps), if capped.
    pub eci_cap: Option<i32>,
}

/// The plan for the event that asks most now, or else for the next one.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub event: String,
    /// Replicas the event's full demand needs, and where they go: ECS up to the room it has,
    /// the rest on ECI at the ECI pods' counted share.
    pub replicas: i32,
    pub ecs: i32,
    pub eci: i32,
    /// When each pool is raised for it (the caller's clock): the event's rise less the pool's
    /// lead. `None` for a pool the plan does not use.
    pub ecs_from: Option<f64>,
    pub eci_from: Option<f64>,
    /// The replicas the plan asks for now (0 before its first pool is raised).
    pub floor: i32,
    /// Why the plan cannot be met, if it cannot: maxReplicas, the ECI cap, too late to start.
    pub at_risk: Option<String>,
    /// Which of those.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub risk: Option<Risk>,
}

/// What keeps a plan from being met.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Risk {
    MaxReplicas,
    EciCap,
    PlannedTooLate,
}

impl Risk {
    /// The `EventAtRisk` condition's reason.
    pub fn reason(self) -> &'static str {
        match self {
            Risk::MaxReplicas => "MaxReplicas",
            Risk::EciCap => "EciCap",
            Risk::PlannedTooLate => "PlannedTooLate",
        }
    }
}

/// Replicas that serve `rps` at `target` per ECS pod, with the pods past ECS's room at the ECI
/// pods' share (`mix`).
fn replicas(rps: f64, target: f64, mix: &Mix) -> i32 {
    if rps <= 0.0 || target <= 0.0 {
        return 0;
    }
    let pods = (rps / target).ceil().min(f64::from(i32::MAX)) as i32;
    mix.replicas(pods)
}

/// The plan at `now`: the floor the count may not be below, for the event that asks most now
/// (or, when none does yet, the next one, so that status shows what is coming). `current` is the
/// replica count now, to tell a plan made too late. `None` without events ahead or running.
pub fn plan(
    events: &[PlannedDemand],
    now: f64,
    target: f64,
    mix: &Mix,
    leads: Leads,
    limits: Limits,
    current: i32,
) -> Option<Plan> {
    pick(&plans(events, now, target, mix, leads, limits, current)).cloned()
}

/// A floor an event raised, as the engine remembers it: the event by name, start and demand.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Raised {
    pub event: String,
    pub start: f64,
    pub rps: f64,
    pub floor: i32,
}

/// Keeps each event's floor, once raised, until the event ends or changes: the start latency
/// is learnt again from the very pods the plan started, and a shorter one must not take the
/// floor away until the later raise (the count would fall and rise again before the start).
/// A cancelled event (no longer in `events`) lets its floor go.
pub fn hold(kept: &mut Vec<Raised>, events: &[PlannedDemand], mut plans: Vec<Plan>) -> Vec<Plan> {
    for p in &mut plans {
        let Some(e) = events.iter().find(|e| e.name == p.event) else {
            continue;
        };
        let same = |r: &Raised| r.event == e.name && r.start == e.start && r.rps == e.rps;
        if let Some(r) = kept.iter().find(|r| same(r)) {
            p.floor = p.floor.max(r.floor);
        }
    }
    kept.clear();
    kept.extend(plans.iter().filter(|p| p.floor > 0).filter_map(|p| {
        let e = events.iter().find(|e| e.name == p.event)?;
        Some(Raised {
            event: e.name.clone(),
            start: e.start,
            rps: e.rps,
            floor: p.floor,
        })
    }));
    plans
}

/// The one that asks most now; between those that ask nothing yet, the soonest.
pub fn pick(plans: &[Plan]) -> Option<&Plan> {
    plans.iter().min_by(|a, b| {
        b.floor.cmp(&a.floor).then_with(|| {
            let from = |p: &Plan| {
                p.ecs_from
                    .into_iter()
                    .chain(p.eci_from)
                    .fold(f64::INFINITY, f64::min)
            };
            from(a).total_cmp(&from(b))
        })
    })
}

/// Each event's plan at `now`, in the order of `events`, for those known, not over and valid.
/// `target` is what one ECS pod serves of a demand without its own `per_pod` (0: none).
pub fn plans(
    events: &[PlannedDemand],
    now: f64,
    target: f64,
    mix: &Mix,
    leads: Leads,
    limits: Limits,
    current: i32,
) -> Vec<Plan> {
    let ecs_room = mix.ecs_capacity.max(0);
    let (ecs_lead, eci_lead) = (leads.ecs + leads.gap, leads.eci + leads.gap);
    events
        .iter()
        .filter(|e| {
            [e.start, e.end, e.ramp_seconds, e.created]
                .iter()
                .all(|v| v.is_finite())
                && e.created <= now
                && e.end > now
                && e.rps.is_finite()
                && e.rps > 0.0
        })
        .filter_map(|e| {
            let target = e.per_pod.unwrap_or(target);
            (target.is_finite() && target > 0.0).then_some((e, target))
        })
        .map(|(e, target)| {
            // The pods raised at `t` must serve the demand when they are ready, and until then
            // what the event asks already. Past what ECS holds, the ECI lead: the scheduler
            // fills ECS first, so the ECS part goes up with the ECI part.
            let floor_at = |t: f64| {
                let need = |lead: f64| replicas(e.at(t).max(e.at(t + lead)), target, mix);
                let (by_ecs, by_eci) = (need(ecs_lead), need(eci_lead));
                by_ecs
                    .min(ecs_room)
                    .max(if by_eci > ecs_room { by_eci } else { 0 })
            };
            let floor = floor_at(now);
            let full = replicas(e.rps, target, mix);
            let ecs = full.min(ecs_room);
            let eci = full - ecs;
            let eci_from = (eci > 0).then(|| e.rises() - eci_lead);
            let ecs_from = (ecs > 0).then(|| (e.rises() - ecs_lead).min(eci_from.unwrap_or(f64::INFINITY)));
            let late = [ecs_from, eci_from]
                .into_iter()
                .flatten()
                .reduce(f64::min)
                .filter(|from| e.created > *from && now < e.start && current < floor)
                .map(|from| {
                    format!(
                        "planned too late: its pods had to start {:.0}s before it was planned to be ready at the start",
                        e.created - from
                    )
                });
            let risk = if full > limits.max_replicas {
                Some((Risk::MaxReplicas, format!(
                    "{full} replicas serve {:.0} rps; maxReplicas is {}",
                    e.rps, limits.max_replicas
                )))
            } else if let Some(cap) = limits.eci_cap.filter(|c| eci > *c) {
                Some((Risk::EciCap, format!(
                    "{eci} of its {full} replicas go to ECI past the {ecs} ECS has room for; the ECI cap allows {cap}"
                )))
            } else {
                late.map(|l| (Risk::PlannedTooLate, l))
            };
            let (risk, at_risk) = risk.unzip();
            Plan {
                event: e.name.clone(),
                replicas: full,
                ecs,
                eci,
                ecs_from,
                eci_from,
                floor: floor.min(limits.max_replicas),
                at_risk,
                risk,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIX: Mix = Mix {
        relative: 1.0,
        ecs_capacity: 10,
    };
    const LEADS: Leads = Leads {
        ecs: 15.0,
        eci: 40.0,
        gap: 0.0,
    };
    const LIMITS: Limits = Limits {
        max_replicas: 100,
        eci_cap: None,
    };

    fn event(start: f64, rps: f64) -> PlannedDemand {
        PlannedDemand {
            name: "sale".into(),
            start,
            end: start + 3600.0,
            rps,
            ramp_seconds: 0.0,
            created: 0.0,
            per_pod: None,
        }
    }

    fn floor_at(e: &[PlannedDemand], now: f64) -> i32 {
        plan(e, now, 100.0, &MIX, LEADS, LIMITS, 0).map_or(0, |p| p.floor)
    }

    #[test]
    fn each_pool_is_raised_its_own_start_ahead() {
        // 25 pods: 10 on ECS, 15 on ECI. The ECI part needs 40 s, so all goes at T − 40.
        let e = [event(1000.0, 2500.0)];
        assert_eq!(floor_at(&e, 959.0), 0);
        assert_eq!(floor_at(&e, 960.0), 25);
        let p = plan(&e, 900.0, 100.0, &MIX, LEADS, LIMITS, 0).unwrap();
        assert_eq!((p.replicas, p.ecs, p.eci), (25, 10, 15));
        // ECS goes up with the ECI part: the scheduler fills it first.
        assert_eq!((p.ecs_from, p.eci_from), (Some(960.0), Some(960.0)));
        // All on ECS: raised an ECS start ahead, not an ECI one.
        let e = [event(1000.0, 800.0)];
        assert_eq!(floor_at(&e, 984.0), 0);
        assert_eq!(floor_at(&e, 985.0), 8);
        assert_eq!(floor_at(&e, 4599.0), 8, "held through the window");
        assert_eq!(floor_at(&e, 4600.0), 0, "and not after it");
    }

    #[test]
    fn a_raised_floor_holds_when_the_lead_learnt_shrinks() {
        let e = [event(1000.0, 800.0)];
        let fast = Leads {
            ecs: 3.0,
            eci: 3.0,
            gap: 0.0,
        };
        let mut kept = vec![];
        let at = |kept: &mut Vec<Raised>, e: &[PlannedDemand], now: f64, leads: Leads| {
            let all = plans(e, now, 100.0, &MIX, leads, LIMITS, 0);
            pick(&hold(kept, e, all)).map_or(0, |p| p.floor)
        };
        assert_eq!(at(&mut kept, &e, 985.0, LEADS), 8);
        // The raised pods started in 3 s: the lead learnt is 3 s, the floor stays.
        assert_eq!(at(&mut kept, &e, 990.0, fast), 8);
        assert_eq!(at(&mut kept, &e, 4599.0, fast), 8);
        assert_eq!(at(&mut kept, &e, 4600.0, fast), 0, "until the end");
        // Changed (a smaller demand) or cancelled: the floor goes with it.
        let mut kept = vec![];
        at(&mut kept, &e, 985.0, LEADS);
        assert_eq!(at(&mut kept, &[event(1000.0, 300.0)], 990.0, fast), 0);
        at(&mut kept, &e, 985.0, LEADS);
        assert_eq!(at(&mut kept, &[event(5000.0, 100.0)], 990.0, fast), 0);
        assert!(kept.is_empty(), "another event raised nothing yet");
    }

    #[test]
    fn a_slower_ecs_pool_starts_first_with_what_ecs_holds() {
        let leads = Leads {
            ecs: 60.0,
            eci: 20.0,
            gap: 0.0,
        };
        let e = [event(1000.0, 2500.0)];
        let at = |now| plan(&e, now, 100.0, &MIX, leads, LIMITS, 0).unwrap().floor;
        assert_eq!(at(939.0), 0);
        assert_eq!(at(940.0), 10);
        assert_eq!(at(979.0), 10);
        assert_eq!(at(980.0), 25);
    }

    #[test]
    fn a_ramp_is_followed_a_lead_ahead() {
        let e = [PlannedDemand {
            ramp_seconds: 100.0,
            ..event(1000.0, 1000.0)
        }];
        // At 945 the ECS pods ready at 960 must serve 600 rps.
        assert_eq!(floor_at(&e, 945.0), 6);
        assert_eq!(floor_at(&e, 900.0 - 15.0), 0);
        assert_eq!(floor_at(&e, 1000.0), 10);
    }

    #[test]
    fn weaker_eci_pods_are_counted_at_their_share() {
        let mix = Mix {
            relative: 0.5,
            ecs_capacity: 10,
        };
        let p = plan(&[event(1000.0, 2000.0)], 0.0, 100.0, &mix, LEADS, LIMITS, 0).unwrap();
        assert_eq!((p.replicas, p.ecs, p.eci), (30, 10, 20));
    }

    #[test]
    fn what_cannot_be_met_is_at_risk() {
        let e = [event(1000.0, 2500.0)];
        let at = |limits, now, current| {
            plan(&e, now, 100.0, &MIX, LEADS, limits, current)
                .unwrap()
                .at_risk
        };
        assert_eq!(at(LIMITS, 0.0, 2), None);
        let small = Limits {
            max_replicas: 20,
            eci_cap: None,
        };
        let r = at(small, 0.0, 2).unwrap();
        assert!(r.contains("maxReplicas is 20"), "{r}");
        let capped = Limits {
            max_replicas: 100,
            eci_cap: Some(5),
        };
        let r = at(capped, 0.0, 2).unwrap();
        assert!(r.contains("ECI cap allows 5"), "{r}");
        assert_eq!(
            at(LIMITS, 990.0, 2),
            None,
            "planned in time, raised late: not the plan's"
        );
        let late = [PlannedDemand {
            created: 980.0,
            ..event(1000.0, 2500.0)
        }];
        let r = plan(&late, 985.0, 100.0, &MIX, LEADS, LIMITS, 2)
            .unwrap()
            .at_risk
            .unwrap();
        assert!(
            r.contains("planned too late: its pods had to start 20s before"),
            "{r}"
        );
        assert_eq!(
            plan(&late, 986.0, 100.0, &MIX, LEADS, LIMITS, 25)
                .unwrap()
                .at_risk,
            None,
            "raised"
        );
        assert_eq!(
            plan(&late, 979.0, 100.0, &MIX, LEADS, LIMITS, 2),
            None,
            "not yet planned"
        );
        // A ramp followed decision by decision is on time at every step.
        let ramp = [PlannedDemand {
            ramp_seconds: 100.0,
            ..event(1000.0, 1000.0)
        }];
        let leads = Leads { gap: 2.0, ..LEADS };
        let mut current = 2;
        for now in (880..1000).step_by(2) {
            let p = plan(&ramp, f64::from(now), 100.0, &MIX, leads, LIMITS, current).unwrap();
            assert_eq!(p.at_risk, None, "at {now} with {current}");
            current = current.max(p.floor);
        }
        // The floor never goes past maxReplicas.
        let p = plan(&e, 990.0, 100.0, &MIX, LEADS, small, 0).unwrap();
        assert_eq!(p.floor, 20);
    }

    #[test]
    fn the_event_that_asks_most_now_is_the_plan() {
        let e = [
            PlannedDemand {
                name: "later".into(),
                ..event(5000.0, 5000.0)
            },
            event(1000.0, 800.0),
        ];
        assert_eq!(
            plan(&e, 0.0, 100.0, &MIX, LEADS, LIMITS, 0).unwrap().event,
            "sale"
        );
        assert_eq!(
            plan(&e, 990.0, 100.0, &MIX, LEADS, LIMITS, 0)
                .unwrap()
                .event,
            "sale"
        );
        let p = plan(&e, 4970.0, 100.0, &MIX, LEADS, LIMITS, 0).unwrap();
        assert_eq!((p.event.as_str(), p.floor), ("later", 50));
        // Past, cancelled (no demand) or bad figures plan nothing.
        let none = [
            event(-9000.0, 800.0),
            event(1000.0, 0.0),
            event(1000.0, f64::NAN),
            event(f64::NAN, 800.0),
            PlannedDemand {
                ramp_seconds: f64::INFINITY,
                ..event(1000.0, 800.0)
            },
        ];
        assert_eq!(plan(&none, 0.0, 100.0, &MIX, LEADS, LIMITS, 0), None);
    }
}
