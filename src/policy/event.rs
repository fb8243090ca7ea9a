//! The `PlannedEvent` custom resource (issue 28): "be ready for 40k requests/s from 20:00 to
//! 22:00", stated in demand units for one ElasticGateway, as an object of its own so that the
//! people who plan a sale need no write access to the gateway's policy. Times are RFC 3339, or
//! local in a time zone (IANA, bundled in the binary: the image has no zoneinfo); a recurrence
//! repeats the window daily or on weekdays at the same local time, across daylight-saving
//! changes. [`PlannedEventSpec::next`] finds the occurrence the agent plans for.

use jiff::civil::{DateTime, Weekday};
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan, Zoned};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::config::FieldError;

/// Demand a gateway must be ready for, over a window.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "spillway.io",
    version = "v1alpha1",
    kind = "PlannedEvent",
    plural = "plannedevents",
    shortname = "pev",
    doc = "Demand an ElasticGateway must be ready to serve over a window (a sale, a launch, a broadcast): spillway has the capacity up and Ready by the start.",
    namespaced,
    status = "PlannedEventStatus",
    printcolumn = r#"{"name":"Gateway","type":"string","jsonPath":".spec.gateway"}"#,
    printcolumn = r#"{"name":"RPS","type":"number","jsonPath":".spec.requestsPerSecond"}"#,
    printcolumn = r#"{"name":"Start","type":"string","jsonPath":".status.start"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Replicas","type":"integer","jsonPath":".status.plan.replicas"}"#,
    printcolumn = r#"{"name":"At risk","type":"string","jsonPath":".status.conditions[?(@.type==\"EventAtRisk\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[x_kube(
    validation = Rule::new(r"self.gateway.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')").message("gateway must be the name of an ElasticGateway in this namespace").field_path(".gateway"),
    validation = Rule::new("self.requestsPerSecond > 0.0 && self.requestsPerSecond <= 1e9").message("requestsPerSecond must be above 0 and at most 1e9").field_path(".requestsPerSecond")
)]
#[serde(rename_all = "camelCase")]
pub struct PlannedEventSpec {
    /// The ElasticGateway, in this namespace, that is to be ready.
    #[schemars(length(min = 1, max = 253))]
    pub gateway: String,
    /// Requests per second to be ready for from `start` to `end`, in the unit of `metric`. A
    /// floor: load above it is served as ever.
    pub requests_per_second: f64,
    /// The ElasticGateway metric (by name) whose unit the demand is in: one pod serves its
    /// `targetPerReplica`. Unset: the gateway's RequestRate metric.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub metric: Option<String>,
    /// From when the demand is served in full: RFC 3339 with an offset
    /// (`2026-11-11T20:00:00+08:00`), or a local time without one (`2026-11-11T20:00:00`) in
    /// `timeZone`. spillway starts each pool its measured start latency earlier.
    #[schemars(length(min = 1, max = 64))]
    pub start: String,
    /// Until when, in the same forms; after it, the capacity leaves by the normal scale-down.
    #[schemars(length(min = 1, max = 64))]
    pub end: String,
    /// The IANA time zone (`Asia/Shanghai`) of local times and of the recurrence. Unset: UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub time_zone: Option<String>,
    /// The demand rises linearly over this many seconds before `start` (0 to 86400; 0: all at
    /// the start).
    #[serde(default)]
    #[schemars(range(min = 0, max = 86400))]
    pub ramp_seconds: i64,
    /// Repeat the window at the same local time. Unset: once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recurrence: Option<Recurrence>,
}

/// How a window repeats.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Recurrence {
    /// `Daily`, or `Weekly` (on `days`, or on the start's weekday).
    pub every: Every,
    /// The weekdays of a weekly recurrence (`Monday` … `Sunday`). Unset: the start's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 7))]
    pub days: Vec<Day>,
    /// No window starts after this (same forms as `start`). Unset: no end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub until: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Every {
    Daily,
    Weekly,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Day {
    Monday,
    Tuesday,
    Wednesday,
    Thursday,
    Friday,
    Saturday,
    Sunday,
}

impl Day {
    fn weekday(self) -> Weekday {
        match self {
            Day::Monday => Weekday::Monday,
            Day::Tuesday => Weekday::Tuesday,
            Day::Wednesday => Weekday::Wednesday,
            Day::Thursday => Weekday::Thursday,
            Day::Friday => Weekday::Friday,
            Day::Saturday => Weekday::Saturday,
            Day::Sunday => Weekday::Sunday,
        }
    }
}

/// What spillway planned for the event, and whether it can be met. Written by server-side
/// apply (field manager `spillway-status`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlannedEventStatus {
    /// The `metadata.generation` of the spec this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Scheduled (before its pods start), Raising (its pods are starting), Active (within the
    /// window), Ended, or Invalid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// The window planned for (the running one, or the next of a recurrence), in UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<String>,
    /// The replicas the demand needs and where they go.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<EventPlan>,
    /// Accepted (the spec is valid and names a gateway that can plan it) and EventAtRisk
    /// (before the start: whether the plan can be met), as standard `metav1.Condition`s.
    #[serde(default)]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}

/// The replicas an event needs: ECS first, up to the room it has, the rest on ECI.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventPlan {
    pub replicas: i32,
    pub ecs: PoolPlan,
    pub eci: PoolPlan,
}

/// One pool's part of a plan.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PoolPlan {
    pub replicas: i32,
    /// When its pods start (the window's rise less the pool's start latency), in UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
}

/// One window, in Unix seconds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Window {
    pub start: f64,
    pub end: f64,
}

/// The longest window: a week (a longer one is a policy, not an event).
pub const MAX_WINDOW_SECONDS: i64 = 7 * 86_400;

/// The spec, parsed: the first window, in its zone.
struct Parsed {
    start: Zoned,
    seconds: i64,
    until: Option<Timestamp>,
}

impl PlannedEventSpec {
    /// Every problem of the spec, each with its field.
    pub fn problems(&self) -> Vec<FieldError> {
        self.parsed().err().unwrap_or_default()
    }

    /// The window planned for at `now` (Unix seconds): the one running, or the next. `None`
    /// when the last has ended. `Err`: the spec's problems.
    pub fn next(&self, now: f64) -> Result<Option<Window>, Vec<FieldError>> {
        let p = self.parsed()?;
        let window = |k: i64| -> Option<Window> {
            let start = p.start.checked_add(k.days()).ok()?;
            let s = start.timestamp();
            if p.until.is_some_and(|u| s > u) {
                return None;
            }
            let start = s.as_millisecond() as f64 / 1000.0;
            Some(Window {
                start,
                end: start + p.seconds as f64,
            })
        };
        let Some(r) = &self.recurrence else {
            return Ok(window(0).filter(|w| w.end > now));
        };
        let first = p.start.timestamp().as_second() as f64;
        // Days before this cannot end after `now` (a window is at most a week).
        let from = (((now - first) / 86_400.0).floor() as i64 - 8).max(0);
        let days: Vec<Weekday> = match (r.every, r.days.is_empty()) {
            (Every::Daily, _) => vec![],
            (Every::Weekly, true) => vec![p.start.weekday()],
            (Every::Weekly, false) => r.days.iter().map(|d| d.weekday()).collect(),
        };
        for k in from..from + 16 {
            let on = days.is_empty()
                || p.start
                    .checked_add(k.days())
                    .is_ok_and(|z| days.contains(&z.weekday()));
            if !on {
                continue;
            }
            match window(k) {
                Some(w) if w.end > now => return Ok(Some(w)),
                Some(_) => {}
                None => return Ok(None),
            }
        }
        Ok(None)
    }

    fn zone(&self) -> Result<TimeZone, FieldError> {
        match &self.time_zone {
            None => Ok(TimeZone::UTC),
            Some(name) => TimeZone::get(name).map_err(|_| {
                FieldError::new(
                    "spec.timeZone",
                    format!("{name:?} is not a time zone of the IANA database (e.g. Asia/Shanghai, Europe/Berlin, UTC)"),
                )
            }),
        }
    }

    fn parsed(&self) -> Result<Parsed, Vec<FieldError>> {
        let mut errors = Vec::new();
        if !(self.requests_per_second.is_finite()
            && self.requests_per_second > 0.0
            && self.requests_per_second <= 1e9)
        {
            errors.push(FieldError::new(
                "spec.requestsPerSecond",
                format!(
                    "must be above 0 and at most 1e9, got {}",
                    self.requests_per_second
                ),
            ));
        }
        if !(0..=86_400).contains(&self.ramp_seconds) {
            errors.push(FieldError::new(
                "spec.rampSeconds",
                format!("must be within 0..86400, got {}", self.ramp_seconds),
            ));
        }
        let zone = self.zone().map_err(|e| errors.push(e)).ok();
        let (start, end, until) = match &zone {
            Some(tz) => (
                instant(&self.start, tz, "spec.start").map_err(|e| errors.push(e)),
                instant(&self.end, tz, "spec.end").map_err(|e| errors.push(e)),
                self.recurrence
                    .as_ref()
                    .and_then(|r| r.until.as_deref())
                    .map(|u| instant(u, tz, "spec.recurrence.until").map(|z| z.timestamp()))
                    .transpose()
                    .map_err(|e| errors.push(e)),
            ),
            None => (Err(()), Err(()), Err(())),
        };
        let (Ok(start), Ok(end), Ok(until)) = (start, end, until) else {
            return Err(errors);
        };
        let seconds = end.timestamp().as_second() - start.timestamp().as_second();
        let period = match self.recurrence.as_ref().map(|r| (r.every, r.days.len())) {
            None => None,
            Some((Every::Daily, _)) => Some(86_400),
            // Weekly on several days: the windows may be a day apart.
            Some((Every::Weekly, n)) if n > 1 => Some(86_400),
            Some((Every::Weekly, _)) => Some(7 * 86_400),
        };
        if seconds <= 0 {
            errors.push(FieldError::new(
                "spec.end",
                format!(
                    "must be after the start ({} is not after {})",
                    self.end, self.start
                ),
            ));
        } else if seconds > MAX_WINDOW_SECONDS {
            errors.push(FieldError::new(
                "spec.end",
                format!("the window may last at most a week, got {seconds} s"),
            ));
        } else if let Some(period) = period.filter(|p| seconds >= *p) {
            errors.push(FieldError::new(
                "spec.recurrence",
                format!("each window ({seconds} s) must be shorter than the time between two of them ({period} s)"),
            ));
        }
        if until.is_some_and(|u| u < start.timestamp()) {
            errors.push(FieldError::new(
                "spec.recurrence.until",
                "is before the first start",
            ));
        }
        if errors.is_empty() {
            Ok(Parsed {
                start,
                seconds,
                until,
            })
        } else {
            Err(errors)
        }
    }
}

/// An instant in RFC 3339 (with its offset), or a local date-time in `tz`. A local time that a
/// daylight-saving change skips is taken as if the clock had not changed yet (RFC 5545's
/// rule, jiff's "compatible").
fn instant(text: &str, tz: &TimeZone, field: &str) -> Result<Zoned, FieldError> {
    let text = text.trim();
    if let Ok(ts) = text.parse::<Timestamp>() {
        return Ok(ts.to_zoned(tz.clone()));
    }
    let local: DateTime = text.parse().map_err(|_| {
        FieldError::new(
            field,
            format!("{text:?} is neither RFC 3339 (2026-11-11T20:00:00+08:00) nor a local date-time (2026-11-11T20:00:00)"),
        )
    })?;
    local
        .to_zoned(tz.clone())
        .map_err(|e| FieldError::new(field, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(start: &str, end: &str) -> PlannedEventSpec {
        PlannedEventSpec {
            gateway: "gw".into(),
            requests_per_second: 40_000.0,
            metric: None,
            start: start.into(),
            end: end.into(),
            time_zone: None,
            ramp_seconds: 0,
            recurrence: None,
        }
    }

    fn secs(t: &str) -> f64 {
        t.parse::<Timestamp>().unwrap().as_second() as f64
    }

    #[test]
    fn a_local_time_is_read_in_its_zone_and_an_offset_wins() {
        let mut s = spec("2026-11-11T20:00:00", "2026-11-11T22:00:00");
        s.time_zone = Some("Asia/Shanghai".into());
        let w = s.next(0.0).unwrap().unwrap();
        assert_eq!(w.start, secs("2026-11-11T12:00:00Z"));
        assert_eq!(w.end - w.start, 7200.0);
        s.start = "2026-11-11T20:00:00+00:00".into();
        s.end = "2026-11-11T22:00:00+00:00".into();
        assert_eq!(
            s.next(0.0).unwrap().unwrap().start,
            secs("2026-11-11T20:00:00Z")
        );
        // UTC without a zone.
        let s = spec("2026-11-11T20:00:00", "2026-11-11T22:00:00");
        assert_eq!(
            s.next(0.0).unwrap().unwrap().start,
            secs("2026-11-11T20:00:00Z")
        );
    }

    #[test]
    fn a_window_is_planned_until_it_ends() {
        let s = spec("2026-11-11T20:00:00Z", "2026-11-11T22:00:00Z");
        let end = secs("2026-11-11T22:00:00Z");
        assert!(s.next(end - 1.0).unwrap().is_some(), "running");
        assert_eq!(s.next(end).unwrap(), None, "over");
    }

    #[test]
    fn a_daily_window_keeps_its_local_time_across_a_clock_change() {
        // Berlin leaves summer time on 2026-10-25: 20:00 local is 18:00Z before, 19:00Z after.
        let mut s = spec("2026-10-20T20:00:00", "2026-10-20T21:00:00");
        s.time_zone = Some("Europe/Berlin".into());
        s.recurrence = Some(Recurrence {
            every: Every::Daily,
            days: vec![],
            until: Some("2026-10-30T00:00:00".into()),
        });
        let at = |now: &str| s.next(secs(now)).unwrap().map(|w| w.start);
        assert_eq!(
            at("2026-10-01T00:00:00Z"),
            Some(secs("2026-10-20T18:00:00Z"))
        );
        assert_eq!(
            at("2026-10-24T18:30:00Z"),
            Some(secs("2026-10-24T18:00:00Z"))
        );
        assert_eq!(
            at("2026-10-24T19:00:00Z"),
            Some(secs("2026-10-25T19:00:00Z"))
        );
        assert_eq!(at("2026-10-29T20:00:00Z"), None, "until");
    }

    #[test]
    fn a_weekly_window_falls_on_its_days() {
        // 2026-12-07 is a Monday.
        let mut s = spec("2026-12-07T09:00:00Z", "2026-12-07T10:00:00Z");
        s.recurrence = Some(Recurrence {
            every: Every::Weekly,
            days: vec![],
            until: None,
        });
        let at = |s: &PlannedEventSpec, now: &str| s.next(secs(now)).unwrap().unwrap().start;
        assert_eq!(at(&s, "2026-12-08T00:00:00Z"), secs("2026-12-14T09:00:00Z"));
        // A year on, still Mondays at 09:00.
        assert_eq!(at(&s, "2027-12-07T00:00:00Z"), secs("2027-12-13T09:00:00Z"));
        s.recurrence.as_mut().unwrap().days = vec![Day::Wednesday, Day::Friday];
        assert_eq!(at(&s, "2026-12-07T00:00:00Z"), secs("2026-12-09T09:00:00Z"));
        assert_eq!(at(&s, "2026-12-09T10:00:00Z"), secs("2026-12-11T09:00:00Z"));
        assert_eq!(at(&s, "2026-12-11T10:00:00Z"), secs("2026-12-16T09:00:00Z"));
    }

    #[test]
    fn bad_specs_name_their_fields() {
        let fields = |s: &PlannedEventSpec| -> Vec<String> {
            s.problems().into_iter().map(|e| e.path).collect()
        };
        let mut s = spec("2026-11-11T20:00:00", "2026-11-11T22:00:00");
        s.time_zone = Some("Mars/Olympus_Mons".into());
        assert_eq!(fields(&s), ["spec.timeZone"]);
        assert!(s.next(0.0).is_err(), "an invalid event plans nothing");
        let s = spec("tomorrow at eight", "2026-11-11T22:00:00");
        assert_eq!(fields(&s), ["spec.start"]);
        let s = spec("2026-11-11T22:00:00Z", "2026-11-11T20:00:00Z");
        assert_eq!(fields(&s), ["spec.end"]);
        let s = spec("2026-11-01T00:00:00Z", "2026-11-11T00:00:00Z");
        assert_eq!(fields(&s), ["spec.end"], "longer than a week");
        let mut s = spec("2026-11-11T20:00:00Z", "2026-11-13T20:00:00Z");
        s.recurrence = Some(Recurrence {
            every: Every::Daily,
            days: vec![],
            until: None,
        });
        assert_eq!(fields(&s), ["spec.recurrence"], "windows overlap");
        let mut s = spec("2026-11-11T20:00:00Z", "2026-11-11T22:00:00Z");
        s.requests_per_second = f64::NAN;
        s.ramp_seconds = -1;
        assert_eq!(fields(&s), ["spec.requestsPerSecond", "spec.rampSeconds"]);
    }
}
