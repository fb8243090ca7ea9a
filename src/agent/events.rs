//! Planned events in the live agent (issue 28): a gateway's PlannedEvents read from the index
//! into the engine's demands ([`read`]), and each event's status (its plan per pool, phase,
//! `Accepted` and `EventAtRisk`) a pure function of what was read and what the engine planned
//! ([`status`]), written by the leader when it changes, with a Warning Event when an event turns
//! invalid or at risk ([`report`]).

use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use serde_json::json;
use tracing::{debug, warn};

use super::context::Context;
use super::report::{STATUS_MANAGER, carry_transitions, changed, condition};
use crate::clock::rfc3339;
use crate::engine::planned::{Plan, PlannedDemand};
use crate::k8s::bounded;
use crate::k8s::index::PlannedSeen;
use crate::model::GatewayKey;
use crate::policy::event::{EventPlan, PoolPlan, Window};
use crate::policy::{ElasticGatewaySpec, PlannedEvent, PlannedEventStatus};

/// One PlannedEvent of the gateway, as read for a decision.
#[derive(Clone, Debug)]
pub struct SeenEvent {
    pub event: Arc<PlannedEvent>,
    /// The window planned for (`None`: the last has ended), or the spec's problems.
    pub window: Result<Option<Window>, String>,
    /// Other events of the gateway whose windows overlap this one's.
    pub overlaps: Vec<String>,
    /// What one ECS pod serves of its demand (the metric's target), or why it cannot be
    /// planned on this gateway: `(reason, message)`.
    pub per_pod: Result<f64, (&'static str, String)>,
}

/// A gateway's planned events: how far they can be trusted, each one, and the demands the
/// engine plans for.
#[derive(Clone, Debug)]
pub struct SeenEvents {
    pub seen: PlannedSeen,
    pub events: Vec<SeenEvent>,
    pub demands: Vec<PlannedDemand>,
}

/// The gateway's PlannedEvents at `now`. An event that is invalid, over, or in the unit of no
/// metric of the gateway asks for nothing (and its status says why).
pub fn read(ctx: &Context, key: &GatewayKey, spec: &ElasticGatewaySpec, now: f64) -> SeenEvents {
    let (seen, events) = {
        let ix = ctx.index();
        (ix.planned_seen(), ix.planned.of(key))
    };
    seen_events(seen, events, spec, now)
}

/// [`read`] on what the index holds.
pub fn seen_events(
    seen: PlannedSeen,
    events: Vec<Arc<PlannedEvent>>,
    spec: &ElasticGatewaySpec,
    now: f64,
) -> SeenEvents {
    let mut events: Vec<SeenEvent> = events
        .into_iter()
        .map(|event| {
            let window = event.spec.next(now).map_err(|problems| {
                problems
                    .iter()
                    .map(|p| format!("{}: {}", p.path, p.message))
                    .collect::<Vec<_>>()
                    .join("; ")
            });
            let per_pod = per_pod(spec, &event);
            SeenEvent {
                event,
                window,
                overlaps: vec![],
                per_pod,
            }
        })
        .collect();
    let span = |e: &SeenEvent| match &e.window {
        Ok(Some(w)) => Some((w.start - e.event.spec.ramp_seconds as f64, w.end)),
        _ => None,
    };
    let spans: Vec<_> = events
        .iter()
        .map(|e| (e.event.name_any(), span(e)))
        .collect();
    for e in &mut events {
        let me = e.event.name_any();
        let Some((a0, a1)) = span(e) else { continue };
        e.overlaps = spans
            .iter()
            .filter(|(n, s)| *n != me && s.is_some_and(|(b0, b1)| a0 < b1 && b0 < a1))
            .map(|(n, _)| n.clone())
            .collect();
    }
    let demands = events
        .iter()
        .filter_map(|e| {
            let w = e.window.as_ref().ok()?.as_ref()?;
            let per_pod = *e.per_pod.as_ref().ok()?;
            Some(PlannedDemand {
                name: e.event.name_any(),
                start: w.start,
                end: w.end,
                rps: e.event.spec.requests_per_second,
                ramp_seconds: e.event.spec.ramp_seconds as f64,
                created: created(&e.event),
                per_pod: Some(per_pod),
            })
        })
        .collect();
    SeenEvents {
        seen,
        events,
        demands,
    }
}

/// What one ECS pod serves of the event's demand: the target of the metric it names, or of
/// the gateway's RequestRate metric.
fn per_pod(spec: &ElasticGatewaySpec, ev: &PlannedEvent) -> Result<f64, (&'static str, String)> {
    let gateway = &ev.spec.gateway;
    let metric = match &ev.spec.metric {
        Some(name) => spec
            .metrics
            .iter()
            .find(|m| m.display_name() == *name)
            .ok_or_else(|| {
                let known: Vec<String> = spec.metrics.iter().map(|m| m.display_name()).collect();
                (
                    "UnknownMetric",
                    format!(
                        "ElasticGateway {gateway} has no metric {name:?} (it has: {})",
                        known.join(", ")
                    ),
                )
            })?,
        None => spec
            .metrics
            .iter()
            .find(|m| m.preset == Some(crate::policy::Preset::RequestRate))
            .ok_or_else(|| {
                (
                    "NoRequestRateMetric",
                    format!("ElasticGateway {gateway} has no RequestRate metric to turn requests per second into replicas: name the metric the demand is in (spec.metric)"),
                )
            })?,
    };
    Ok(metric.target_per_replica)
}

/// When the event was made (Unix seconds; 0 if unknown, as for an object not yet stored).
fn created(ev: &PlannedEvent) -> f64 {
    ev.metadata
        .creation_timestamp
        .as_ref()
        .map_or(0.0, |t| t.0.as_second() as f64)
}

/// An event's status at `now`, from its window and the engine's plan for it. Condition
/// transition times are set by the caller.
pub fn status(seen: &SeenEvent, plan: Option<&Plan>, now: f64) -> PlannedEventStatus {
    let generation = seen.event.metadata.generation;
    let accepted = |ok: bool, reason: &str, message: &str| {
        condition("Accepted", ok, reason, message, generation)
    };
    let base = PlannedEventStatus {
        observed_generation: generation,
        ..Default::default()
    };
    let window = match &seen.window {
        Err(problems) => {
            return PlannedEventStatus {
                phase: Some("Invalid".into()),
                conditions: vec![accepted(false, "InvalidSpec", problems)],
                ..base
            };
        }
        Ok(w) => *w,
    };
    if let Err((reason, msg)) = &seen.per_pod {
        return PlannedEventStatus {
            phase: Some("Invalid".into()),
            conditions: vec![accepted(false, reason, msg)],
            ..base
        };
    }
    let Some(w) = window else {
        let before = seen.event.spec.next(created(&seen.event)).ok().flatten();
        let cond = if before.is_none() && created(&seen.event) > 0.0 {
            accepted(
                false,
                "EndedBeforeCreated",
                "its last window had ended before it was created: nothing to plan",
            )
        } else {
            accepted(true, "Ended", "its last window has ended")
        };
        return PlannedEventStatus {
            phase: Some("Ended".into()),
            conditions: vec![cond],
            ..base
        };
    };
    planned_status(seen, w, plan, now, base)
}

/// [`status`] of a valid event with a window to come or running: the plan, its phase, and
/// whether it is at risk.
fn planned_status(
    seen: &SeenEvent,
    w: Window,
    plan: Option<&Plan>,
    now: f64,
    base: PlannedEventStatus,
) -> PlannedEventStatus {
    let generation = seen.event.metadata.generation;
    let gateway = &seen.event.spec.gateway;
    let accepted =
        |reason: &str, message: &str| condition("Accepted", true, reason, message, generation);
    let mut conditions = vec![if seen.overlaps.is_empty() {
        accepted("Planned", &format!("planned for ElasticGateway {gateway}"))
    } else {
        accepted(
            "Overlapping",
            &format!(
                "its window overlaps {}: the larger demand holds while both run (state the total in one event)",
                seen.overlaps.join(", ")
            ),
        )
    }];
    let Some(p) = plan else {
        return PlannedEventStatus {
            phase: Some("Scheduled".into()),
            start: Some(rfc3339(w.start)),
            end: Some(rfc3339(w.end)),
            conditions,
            ..base
        };
    };
    // Start times to the minute: the lead moves with the gap between decisions, and a status
    // that changed every decision would be written every decision.
    let minute = |t: f64| rfc3339((t / 60.0).floor() * 60.0);
    let first = p
        .ecs_from
        .into_iter()
        .chain(p.eci_from)
        .fold(f64::INFINITY, f64::min);
    let phase = if now >= w.start {
        "Active"
    } else if now >= first || p.floor > 0 {
        "Raising"
    } else {
        "Scheduled"
    };
    conditions.push(match (&p.risk, &p.at_risk) {
        (Some(r), Some(why)) => condition("EventAtRisk", true, r.reason(), why, generation),
        _ => condition(
            "EventAtRisk",
            false,
            "OnTrack",
            &format!(
                "{} replicas ({} on ECS, {} on ECI) ready for {} rps by the start",
                p.replicas, p.ecs, p.eci, seen.event.spec.requests_per_second
            ),
            generation,
        ),
    });
    PlannedEventStatus {
        phase: Some(phase.into()),
        start: Some(rfc3339(w.start)),
        end: Some(rfc3339(w.end)),
        plan: Some(EventPlan {
            replicas: p.replicas,
            ecs: PoolPlan {
                replicas: p.ecs,
                start_time: p.ecs_from.map(minute),
            },
            eci: PoolPlan {
                replicas: p.eci,
                start_time: p.eci_from.map(minute),
            },
        }),
        conditions,
        ..base
    }
}

/// Writes each event's status where it changed, as the leader, with a Warning Event when an
/// event turns invalid or at risk. A failed write is logged and retried at the next decision:
/// an event's status never holds the gateway's.
pub async fn report(ctx: &Context, seen: &SeenEvents, plans: &[Plan], now: f64) {
    for e in &seen.events {
        let name = e.event.name_any();
        let plan = plans.iter().find(|p| p.event == name);
        let next = status(e, plan, now);
        write(ctx, &e.event, next, now).await;
    }
}

/// Writes `next` on the event when it differs from its status (transition times carried), and
/// publishes a Warning Event for each condition that turns bad.
pub async fn write(ctx: &Context, ev: &PlannedEvent, mut next: PlannedEventStatus, now: f64) {
    let prev = ev
        .status
        .as_ref()
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    next.conditions = carry_transitions(&prev, next.conditions, now);
    if ev.status.as_ref() == Some(&next) {
        return;
    }
    let oref = ev.object_ref(&());
    for c in next
        .conditions
        .iter()
        .filter(|c| changed(&prev, c) && bad(c))
    {
        warn!(event = %ev.name_any(), reason = %c.reason, message = %c.message, "planned event");
        ctx.publish(&oref, EventType::Warning, &c.reason, "Plan", &c.message)
            .await;
    }
    if let Err(e) = apply_status(ctx, ev, &next).await {
        debug!(event = %ev.name_any(), error = %e, "PlannedEvent status write failed; retried at the next decision");
    }
}

/// A condition that says something is wrong.
fn bad(c: &Condition) -> bool {
    (c.type_ == "Accepted" && c.status == "False")
        || (c.type_ == "EventAtRisk" && c.status == "True")
}

/// Server-side apply of the whole status, forced, behind the fence.
async fn apply_status(
    ctx: &Context,
    ev: &PlannedEvent,
    status: &PlannedEventStatus,
) -> Result<(), crate::Error> {
    ctx.fence("status")?;
    let ns = ev.namespace().unwrap_or_default();
    let api = Api::<PlannedEvent>::namespaced(ctx.client.clone(), &ns);
    let body = json!({
        "apiVersion": PlannedEvent::api_version(&()),
        "kind": PlannedEvent::kind(&()),
        "status": status,
    });
    let params = PatchParams::apply(STATUS_MANAGER).force();
    bounded(
        ctx.config.api_timeout,
        api.patch_status(&ev.name_any(), &params, &Patch::Apply(&body)),
    )
    .await?;
    Ok(())
}

/// The status of an event whose ElasticGateway does not exist.
pub fn orphan_status(ev: &PlannedEvent) -> PlannedEventStatus {
    let msg = format!(
        "no ElasticGateway {} in namespace {}",
        ev.spec.gateway,
        ev.namespace().unwrap_or_default()
    );
    PlannedEventStatus {
        observed_generation: ev.metadata.generation,
        phase: Some("Invalid".into()),
        conditions: vec![condition(
            "Accepted",
            false,
            "GatewayNotFound",
            &msg,
            ev.metadata.generation,
        )],
        ..Default::default()
    }
}

/// The gateway's own condition on its planned events, when there is something to say: the
/// events cannot be listed (decided on the load alone), or how many name it and are at risk.
pub fn gateway_condition(
    seen: &SeenEvents,
    plans: &[Plan],
    generation: Option<i64>,
) -> Option<Condition> {
    let hint =
        "install deploy/plannedevent-crd.yaml and the RBAC of deploy/ (plannedevents: list, watch)";
    match &seen.seen {
        PlannedSeen::Unavailable(e) => Some(condition(
            "PlannedEvents",
            false,
            "PlannedEventsUnavailable",
            &format!("cannot list PlannedEvents ({e}): deciding on the load alone; {hint}"),
            generation,
        )),
        PlannedSeen::Stale(e) => Some(condition(
            "PlannedEvents",
            false,
            "PlannedEventsStale",
            &format!("the PlannedEvent watch fails ({e}): planning for the events last seen"),
            generation,
        )),
        PlannedSeen::Listing if seen.events.is_empty() => Some(condition(
            "PlannedEvents",
            false,
            "PlannedEventsNotListed",
            "the PlannedEvents have not listed yet: deciding on the load alone",
            generation,
        )),
        _ if seen.events.is_empty() => None,
        _ => {
            let at_risk: Vec<&str> = plans
                .iter()
                .filter(|p| p.risk.is_some())
                .map(|p| p.event.as_str())
                .collect();
            Some(if at_risk.is_empty() {
                condition(
                    "PlannedEvents",
                    true,
                    "OnTrack",
                    "no planned event of this gateway is at risk",
                    generation,
                )
            } else {
                condition(
                    "PlannedEvents",
                    false,
                    "EventAtRisk",
                    &format!("at risk: {}", at_risk.join(", ")),
                    generation,
                )
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::planned::Risk;
    use crate::policy::{ElasticGateway, PlannedEventSpec};

    const NOW: f64 = 1_800_000_000.0;

    fn event(name: &str, start: f64, metric: Option<&str>) -> Arc<PlannedEvent> {
        let mut ev = PlannedEvent::new(
            name,
            PlannedEventSpec {
                gateway: "gw".into(),
                requests_per_second: 6000.0,
                metric: metric.map(String::from),
                start: rfc3339(start),
                end: rfc3339(start + 3600.0),
                time_zone: None,
                ramp_seconds: 0,
                recurrence: None,
            },
        );
        ev.metadata.generation = Some(1);
        ev.metadata.creation_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                jiff::Timestamp::from_second(NOW as i64 - 600).unwrap(),
            ));
        Arc::new(ev)
    }

    fn seen(events: Vec<Arc<PlannedEvent>>) -> SeenEvents {
        let spec = ElasticGateway::scenario_default().spec;
        seen_events(PlannedSeen::Listed, events, &spec, NOW)
    }

    fn cond(s: &PlannedEventStatus, kind: &str) -> (String, String) {
        let c = s.conditions.iter().find(|c| c.type_ == kind).unwrap();
        (c.status.clone(), c.reason.clone())
    }

    fn plan(event: &str, floor: i32, risk: Option<Risk>) -> Plan {
        Plan {
            event: event.into(),
            replicas: 12,
            ecs: 8,
            eci: 4,
            ecs_from: Some(NOW + 100.0),
            eci_from: Some(NOW + 100.0),
            floor,
            at_risk: risk.map(|_| "past maxReplicas".into()),
            risk,
        }
    }

    #[test]
    fn demands_come_from_valid_events_in_a_metric_the_gateway_has() {
        let s = seen(vec![
            event("sale", NOW + 200.0, None),
            event("typo", NOW + 200.0, Some("no-such-metric")),
            event("over", NOW - 7200.0, None),
        ]);
        let names: Vec<&str> = s.demands.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["sale"]);
        // The built-in policy's RequestRate target.
        assert!(s.demands[0].per_pod.is_some_and(|t| t > 0.0));
        assert_eq!(s.demands[0].created, NOW - 600.0);
        let typo = status(&s.events[1], None, NOW);
        assert_eq!(
            cond(&typo, "Accepted"),
            ("False".into(), "UnknownMetric".into())
        );
        let over = status(&s.events[2], None, NOW);
        assert_eq!(over.phase.as_deref(), Some("Ended"));
        assert_eq!(
            cond(&over, "Accepted"),
            ("False".into(), "EndedBeforeCreated".into())
        );
    }

    #[test]
    fn the_status_shows_the_plan_phase_and_risk() {
        let s = seen(vec![event("sale", NOW + 200.0, None)]);
        let e = &s.events[0];
        let ahead = status(e, Some(&plan("sale", 0, None)), NOW);
        assert_eq!(ahead.phase.as_deref(), Some("Scheduled"));
        assert_eq!(
            cond(&ahead, "EventAtRisk"),
            ("False".into(), "OnTrack".into())
        );
        let p = ahead.plan.unwrap();
        assert_eq!((p.replicas, p.ecs.replicas, p.eci.replicas), (12, 8, 4));
        // To the minute.
        assert_eq!(
            p.ecs.start_time,
            Some(rfc3339(((NOW + 100.0) / 60.0).floor() * 60.0))
        );
        let raising = status(e, Some(&plan("sale", 12, None)), NOW);
        assert_eq!(raising.phase.as_deref(), Some("Raising"));
        let active = status(e, Some(&plan("sale", 12, None)), NOW + 300.0);
        assert_eq!(active.phase.as_deref(), Some("Active"));
        let risky = status(e, Some(&plan("sale", 0, Some(Risk::MaxReplicas))), NOW);
        assert_eq!(
            cond(&risky, "EventAtRisk"),
            ("True".into(), "MaxReplicas".into())
        );
        let gw = gateway_condition(&s, &[plan("sale", 0, Some(Risk::EciCap))], Some(1)).unwrap();
        assert_eq!(
            (gw.status.as_str(), gw.reason.as_str()),
            ("False", "EventAtRisk")
        );
    }

    #[test]
    fn overlapping_events_name_each_other() {
        let s = seen(vec![
            event("a", NOW + 200.0, None),
            event("b", NOW + 1000.0, None),
            event("c", NOW + 9000.0, None),
        ]);
        let overlaps: Vec<Vec<String>> = s.events.iter().map(|e| e.overlaps.clone()).collect();
        assert_eq!(overlaps, [vec!["b".to_string()], vec!["a".into()], vec![]]);
        let a = status(&s.events[0], None, NOW);
        assert_eq!(cond(&a, "Accepted"), ("True".into(), "Overlapping".into()));
    }

    #[test]
    fn without_the_events_the_gateway_says_so_and_plans_nothing() {
        let spec = ElasticGateway::scenario_default().spec;
        let s = seen_events(
            PlannedSeen::Unavailable("404 page not found".into()),
            vec![],
            &spec,
            NOW,
        );
        assert!(s.demands.is_empty());
        let c = gateway_condition(&s, &[], None).unwrap();
        assert_eq!(c.reason, "PlannedEventsUnavailable");
        assert!(c.message.contains("404"), "{}", c.message);
        let listed = seen_events(PlannedSeen::Listed, vec![], &spec, NOW);
        assert!(
            gateway_condition(&listed, &[], None).is_none(),
            "nothing to say"
        );
    }
}
