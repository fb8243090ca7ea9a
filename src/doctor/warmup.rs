//! Whether the mesh ramps the gateway's new pods: a DestinationRule for the gateway's Service
//! with `trafficPolicy.loadBalancer.warmup` (or the older `warmupDurationSecs`) makes every
//! mesh client (not a cloud load balancer in front) send a new pod a slowly growing share, so
//! right after a scale-out the warm pods carry the rest. spillway counts that only as
//! `spec.warmup` states it; the doctor compares the two.

use serde_json::Value;

use super::Outcome;
use crate::policy::Warmup;

/// Istio's defaults under `warmup` (and for `warmupDurationSecs`): Envoy's slow start.
const DEFAULT_MIN_PERCENT: f64 = 10.0;
const DEFAULT_AGGRESSION: f64 = 1.0;
/// The cluster domain short hosts resolve in (Istio's default).
const CLUSTER_DOMAIN: &str = "svc.cluster.local";

/// A ramp a DestinationRule gives the gateway's pods.
#[derive(Clone, Debug, PartialEq)]
pub struct Found {
    /// `namespace/name` of the rule, and the port when the ramp is a port's own.
    pub rule: String,
    pub warmup: Warmup,
}

/// The host a DestinationRule in `ns` names, as a full name. Istio expands only a name without
/// a dot (into the rule's own namespace); any other is taken as written.
fn full_host(host: &str, ns: &str) -> String {
    if host.contains('.') || host.starts_with('*') {
        host.to_string()
    } else {
        format!("{host}.{ns}.{CLUSTER_DOMAIN}")
    }
}

/// Whether a rule's host (full, possibly `*` or `*.suffix`) covers `service`'s full name.
fn covers(host: &str, service: &str) -> bool {
    match host.strip_prefix('*') {
        Some(suffix) => service.ends_with(suffix),
        None => host == service,
    }
}

/// The ramp of one `loadBalancer` block, if it has one that Istio applies: a slow start needs
/// round robin or least request (the default); a consistent hash or `RANDOM`/`PASSTHROUGH`
/// leaves it out.
fn ramp(lb: &Value) -> Result<Option<Warmup>, String> {
    let hashed = lb.get("consistentHash").is_some_and(|v| !v.is_null());
    let simple = lb.get("simple").and_then(Value::as_str).unwrap_or("");
    if hashed || matches!(simple, "RANDOM" | "PASSTHROUGH") {
        return Ok(None);
    }
    let present = |k: &str| lb.get(k).filter(|v| !v.is_null());
    let (duration, min, aggression) = match (present("warmup"), present("warmupDurationSecs")) {
        (Some(w), _) => (
            w.get("duration")
                .and_then(Value::as_str)
                .unwrap_or_default(),
            w.get("minimumPercent")
                .and_then(Value::as_f64)
                .unwrap_or(DEFAULT_MIN_PERCENT),
            w.get("aggression")
                .and_then(Value::as_f64)
                .unwrap_or(DEFAULT_AGGRESSION),
        ),
        (_, Some(d)) => (
            d.as_str().unwrap_or_default(),
            DEFAULT_MIN_PERCENT,
            DEFAULT_AGGRESSION,
        ),
        _ => return Ok(None),
    };
    let seconds = super::drain::seconds("warmup duration", duration)?;
    Ok((seconds > 0.0).then(|| Warmup {
        // spec.warmup is in whole seconds: a part of one rounds up.
        seconds: (seconds.ceil() as i64).max(1),
        min_weight_percent: min,
        aggression,
    }))
}

/// One load balancer's ramp: the port it is a port's own for (`None`: the rule-wide one), and
/// the ramp Istio applies there (`Ok(None)`: none), or what is wrong with it.
pub type Block = (Option<String>, Result<Option<Warmup>, String>);

/// A DestinationRule whose host covers the gateway's Service, with what it sets.
#[derive(Clone, Debug, PartialEq)]
pub struct Matched {
    /// `namespace/name`.
    pub rule: String,
    /// Its host, as written.
    pub host: String,
    /// `metadata.creationTimestamp` (RFC 3339, so it sorts as text).
    pub created: String,
    /// The rule-wide load balancer's ramp (port `None`) and each port's own, which replaces
    /// the rule-wide one for that port: `Ok(None)` where Istio applies no ramp.
    pub blocks: Vec<Block>,
}

/// What a DestinationRule (as the API returns it, in namespace `ns`) sets for any of `services`
/// (full names), or `None` when its host covers none of them. Subsets' policies are left out:
/// they apply to routes that name the subset.
pub fn matched(rule: &Value, ns: &str, services: &[String]) -> Option<Matched> {
    let spec = rule.get("spec")?;
    let written = spec.get("host").and_then(Value::as_str)?;
    let host = full_host(written, ns);
    if !services.iter().any(|s| covers(&host, s)) {
        return None;
    }
    let policy = spec.get("trafficPolicy").unwrap_or(&Value::Null);
    let wide = policy.get("loadBalancer").map_or(Ok(None), ramp);
    let ports = policy
        .get("portLevelSettings")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|p| {
            let port = p
                .pointer("/port/number")
                .map_or_else(|| "?".to_string(), ToString::to_string);
            Some((Some(port), ramp(p.get("loadBalancer")?)))
        });
    let meta = |k: &str| {
        rule.pointer(&format!("/metadata/{k}"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    Some(Matched {
        rule: format!("{ns}/{}", meta("name")),
        host: written.to_string(),
        created: meta("creationTimestamp"),
        blocks: std::iter::once((None, wide)).chain(ports).collect(),
    })
}

/// The rule Istio applies to the gateway's host among those that cover it: an exact host before
/// a wildcard, then the oldest.
pub fn applied(mut rules: Vec<Matched>) -> Option<Matched> {
    rules.sort_by(|a, b| {
        (a.host.starts_with('*'), &a.created).cmp(&(b.host.starts_with('*'), &b.created))
    });
    rules.into_iter().next()
}

/// The full names of `services` (name, namespace).
pub fn service_hosts(services: &[(String, String)]) -> Vec<String> {
    services
        .iter()
        .map(|(name, ns)| format!("{name}.{ns}.{CLUSTER_DOMAIN}"))
        .collect()
}

fn describe(w: &Warmup) -> String {
    format!(
        "{} s from {}% (aggression {})",
        w.seconds, w.min_weight_percent, w.aggression
    )
}

/// What the doctor says of the ramps the applied rule sets ([`applied`]) beside `spec.warmup`:
/// the rule-wide one first, then each port's own.
pub fn judge(found: &[Found], stated: Option<&Warmup>) -> (Outcome, String) {
    let Some(first) = found.first() else {
        return match stated {
            None => (
                Outcome::Ok,
                "no DestinationRule ramps the gateway's Service: a new pod counts in full once Ready"
                    .into(),
            ),
            Some(w) => (
                Outcome::Ok,
                format!(
                    "spec.warmup states a ramp of {}; no DestinationRule for the gateway's Service has one (a cloud load balancer's slow start is not visible from here)",
                    describe(w)
                ),
            ),
        };
    };
    let more = match found.len() {
        1 => String::new(),
        n => format!(" (and {} more)", n - 1),
    };
    let w = &first.warmup;
    let cost = crate::engine::warmup::delay(w);
    let advice = if w.problems().is_empty() {
        format!(
            "state it as spec.warmup: {{seconds: {}, minWeightPercent: {}, aggression: {}}}",
            w.seconds, w.min_weight_percent, w.aggression
        )
    } else {
        "spec.warmup cannot state it (seconds 1..3600, minWeightPercent 0..100, aggression 0.01..100)"
            .to_string()
    };
    match stated {
        None => (
            Outcome::Warn,
            format!(
                "DestinationRule {}{more} ramps the gateway's new pods for mesh clients over {}, but spec.warmup is unset: spillway counts a new pod in full, and after a scale-out the warm pods carry the rest (each new pod serves about {cost:.0} s of traffic less); {advice}",
                first.rule,
                describe(w),
            ),
        ),
        Some(s) if s != w => (
            Outcome::Warn,
            format!(
                "DestinationRule {}{more} ramps new pods over {}, but spec.warmup says {}",
                first.rule,
                describe(w),
                describe(s)
            ),
        ),
        Some(_) => (
            Outcome::Ok,
            format!(
                "spec.warmup matches DestinationRule {}{more}: {}; each new pod serves about {cost:.0} s of traffic less than a warm one",
                first.rule,
                describe(w)
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn gateway() -> Vec<String> {
        service_hosts(&[("istio-ingressgateway".into(), "istio-system".into())])
    }

    /// The ramps a rule sets (blocks without one left out), errors as text.
    fn ramps(rule: &serde_json::Value, ns: &str) -> Vec<(Option<String>, Result<Warmup, String>)> {
        matched(rule, ns, &gateway())
            .map(|m| m.blocks)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(port, r)| r.transpose().map(|r| (port, r)))
            .collect()
    }

    fn ramp(seconds: i64, min: f64, aggression: f64) -> Warmup {
        Warmup {
            seconds,
            min_weight_percent: min,
            aggression,
        }
    }

    #[test]
    fn hosts_resolve_as_istio_resolves_them() {
        let dr = |host: &str| json!({"spec": {"host": host, "trafficPolicy": {"loadBalancer": {"warmupDurationSecs": "60s"}}}});
        for (host, ns, hit) in [
            ("istio-ingressgateway", "istio-system", true),
            // A short name resolves in the rule's own namespace.
            ("istio-ingressgateway", "default", false),
            // A name with a dot is taken as written: Istio expands only names without one.
            ("istio-ingressgateway.istio-system", "default", false),
            ("istio-ingressgateway.istio-system.svc", "default", false),
            (
                "istio-ingressgateway.istio-system.svc.cluster.local",
                "x",
                true,
            ),
            ("*.istio-system.svc.cluster.local", "x", true),
            ("*", "x", true),
            ("reviews", "istio-system", false),
        ] {
            assert_eq!(!ramps(&dr(host), ns).is_empty(), hit, "{host} in {ns}");
        }
    }

    #[test]
    fn the_new_and_the_old_field_and_port_settings_are_read() {
        let new = json!({"spec": {"host": "istio-ingressgateway", "trafficPolicy": {"loadBalancer": {
            "simple": "LEAST_REQUEST", "warmup": {"duration": "1m30s", "minimumPercent": 20, "aggression": 2.0}}}}});
        assert_eq!(
            ramps(&new, "istio-system"),
            [(None, Ok(ramp(90, 20.0, 2.0)))]
        );
        // The deprecated field takes Envoy's defaults; a part of a second rounds up; a port's
        // own is named with its port.
        let old = json!({"spec": {"host": "istio-ingressgateway", "trafficPolicy": {"portLevelSettings": [
            {"port": {"number": 80}}, {"port": {"number": 443}, "loadBalancer": {"warmupDurationSecs": "10.5s"}}]}}});
        assert_eq!(
            ramps(&old, "istio-system"),
            [(Some("443".to_string()), Ok(ramp(11, 10.0, 1.0)))]
        );
        // No ramp where Istio applies none: no warmup, a hash, RANDOM; a null field is absent.
        for lb in [
            json!({"simple": "ROUND_ROBIN"}),
            json!({"consistentHash": {"httpHeaderName": "x-user"}, "warmupDurationSecs": "60s"}),
            json!({"simple": "RANDOM", "warmupDurationSecs": "60s"}),
            json!({"warmupDurationSecs": null}),
        ] {
            let rule = json!({"spec": {"host": "istio-ingressgateway", "trafficPolicy": {"loadBalancer": lb}}});
            assert!(ramps(&rule, "istio-system").is_empty(), "{lb}");
        }
        // A bad duration is said as such, and another port's ramp is still read.
        let bad = json!({"spec": {"host": "istio-ingressgateway", "trafficPolicy": {
            "loadBalancer": {"warmupDurationSecs": "soon"},
            "portLevelSettings": [{"port": {"number": 443}, "loadBalancer": {"warmupDurationSecs": "30s"}}]}}});
        let got = ramps(&bad, "istio-system");
        assert!(got[0].1.is_err(), "{got:?}");
        assert_eq!(got[1], (Some("443".to_string()), Ok(ramp(30, 10.0, 1.0))));
    }

    /// Istio applies one rule to a host: an exact host before a wildcard, then the oldest. A
    /// rule without a ramp hides a wildcard's ramp, and a port's own balancer replaces the
    /// rule-wide one there.
    #[test]
    fn the_rule_istio_applies_is_the_one_judged() {
        let rule = |name: &str, host: &str, created: &str, lb: serde_json::Value| {
            let r = json!({"metadata": {"name": name, "creationTimestamp": created},
                "spec": {"host": host, "trafficPolicy": {"loadBalancer": lb}}});
            matched(&r, "istio-system", &gateway()).unwrap()
        };
        let exact = rule(
            "exact",
            "istio-ingressgateway",
            "2026-02-01T00:00:00Z",
            json!({"simple": "ROUND_ROBIN"}),
        );
        let any = rule(
            "any",
            "*",
            "2026-01-01T00:00:00Z",
            json!({"warmupDurationSecs": "60s"}),
        );
        let chosen = applied(vec![any.clone(), exact.clone()]).unwrap();
        assert_eq!(chosen.rule, "istio-system/exact");
        assert_eq!(chosen.blocks, [(None, Ok(None))]);
        // Between two exact rules, the older.
        let older = rule(
            "older",
            "istio-ingressgateway",
            "2025-12-01T00:00:00Z",
            json!({"warmupDurationSecs": "20s"}),
        );
        assert_eq!(
            applied(vec![exact, older, any]).unwrap().rule,
            "istio-system/older"
        );
        // A port's balancer without a ramp is said as such beside the rule-wide ramp.
        let r = json!({"metadata": {"name": "ports"}, "spec": {"host": "istio-ingressgateway", "trafficPolicy": {
            "loadBalancer": {"warmupDurationSecs": "60s"},
            "portLevelSettings": [{"port": {"number": 443}, "loadBalancer": {"simple": "RANDOM"}}]}}});
        let m = matched(&r, "istio-system", &gateway()).unwrap();
        assert_eq!(
            m.blocks,
            [
                (None, Ok(Some(ramp(60, 10.0, 1.0)))),
                (Some("443".into()), Ok(None))
            ]
        );
    }

    #[test]
    fn the_verdict_compares_the_rule_with_the_spec() {
        let w = ramp(60, 10.0, 1.0);
        let found = [
            Found {
                rule: "istio-system/gw".into(),
                warmup: w,
            },
            Found {
                rule: "istio-system/gw (port 443)".into(),
                warmup: ramp(30, 10.0, 1.0),
            },
        ];
        let (o, text) = judge(&found, None);
        assert_eq!(o, Outcome::Warn);
        assert!(text.contains("istio-system/gw (and 1 more)"), "{text}");
        assert!(
            text.contains("spec.warmup: {seconds: 60, minWeightPercent: 10, aggression: 1}"),
            "{text}"
        );
        assert_eq!(judge(&found, Some(&w)).0, Outcome::Ok);
        let other = Warmup { seconds: 30, ..w };
        let (o, text) = judge(&found, Some(&other));
        assert_eq!(o, Outcome::Warn);
        assert!(text.contains("spec.warmup says 30 s"), "{text}");
        assert_eq!(judge(&[], None).0, Outcome::Ok);
        assert!(judge(&[], Some(&w)).1.contains("not visible from here"));
        // A ramp spec.warmup cannot hold is not advised.
        let long = [Found {
            rule: "istio-system/gw".into(),
            warmup: ramp(7200, 10.0, 1.0),
        }];
        assert!(judge(&long, None).1.contains("spec.warmup cannot state it"));
    }
}
