//! Whether the mesh ramps the gateway's new pods: a DestinationRule for the gateway's Service
//! with `trafficPolicy.loadBalancer.warmup` (or the older `warmupDurationSecs`) makes every
//! mesh client send a new pod a slowly growing share, so right after a scale-out the warm pods
//! carry the rest. spillway counts that only as `spec.warmup` states it; the doctor compares
//! the two.

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
    /// `namespace/name` of the rule.
    pub rule: String,
    pub warmup: Warmup,
}

/// The host a DestinationRule in `ns` names, as a full name (a short name resolves in the
/// rule's own namespace).
fn full_host(host: &str, ns: &str) -> String {
    let host = host.trim_end_matches('.');
    match host.matches('.').count() {
        _ if host.starts_with('*') || host.ends_with(CLUSTER_DOMAIN) => host.to_string(),
        0 => format!("{host}.{ns}.{CLUSTER_DOMAIN}"),
        1 => format!("{host}.{CLUSTER_DOMAIN}"),
        2 if host.ends_with(".svc") => format!("{host}.cluster.local"),
        _ => host.to_string(),
    }
}

/// Whether a rule's host (full, possibly `*` or `*.suffix`) covers `service`'s full name.
fn covers(host: &str, service: &str) -> bool {
    match host.strip_prefix('*') {
        Some(suffix) => service.ends_with(suffix),
        None => host == service,
    }
}

/// The ramp of one `loadBalancer` block, if it has one.
fn ramp(lb: &Value) -> Result<Option<Warmup>, String> {
    let (duration, min, aggression) = match (lb.get("warmup"), lb.get("warmupDurationSecs")) {
        (Some(w), _) if !w.is_null() => (
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

/// The ramp a DestinationRule (as the API returns it, in namespace `ns`) gives traffic to any of
/// `services` (full names), from its `trafficPolicy` or, failing that, a port's settings.
/// Subsets' policies are left out: they apply to routes that name the subset.
pub fn ramp_of(rule: &Value, ns: &str, services: &[String]) -> Result<Option<Warmup>, String> {
    let spec = rule.get("spec").unwrap_or(&Value::Null);
    let Some(host) = spec.get("host").and_then(Value::as_str) else {
        return Ok(None);
    };
    let host = full_host(host, ns);
    if !services.iter().any(|s| covers(&host, s)) {
        return Ok(None);
    }
    let policy = spec.get("trafficPolicy").unwrap_or(&Value::Null);
    let ports = policy
        .get("portLevelSettings")
        .and_then(Value::as_array)
        .into_iter()
        .flatten();
    for lb in std::iter::once(policy)
        .chain(ports)
        .filter_map(|p| p.get("loadBalancer"))
    {
        if let Some(w) = ramp(lb)? {
            return Ok(Some(w));
        }
    }
    Ok(None)
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

/// What the doctor says of the ramps found beside `spec.warmup`.
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
        n => format!(" (and {} more rule(s))", n - 1),
    };
    let w = &first.warmup;
    let cost = crate::engine::warmup::delay(w);
    match stated {
        None => (
            Outcome::Warn,
            format!(
                "DestinationRule {}{more} ramps the gateway's new pods over {}, but spec.warmup is unset: spillway counts a new pod in full, and after a scale-out the warm pods carry the rest (each new pod serves about {cost:.0} s of traffic less); state it as spec.warmup: {{seconds: {}, minWeightPercent: {}, aggression: {}}}",
                first.rule,
                describe(w),
                w.seconds,
                w.min_weight_percent,
                w.aggression
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

    #[test]
    fn hosts_resolve_as_istio_resolves_them() {
        let dr = |host: &str| json!({"spec": {"host": host, "trafficPolicy": {"loadBalancer": {"warmupDurationSecs": "60s"}}}});
        for (host, ns, hit) in [
            ("istio-ingressgateway", "istio-system", true),
            // A short name resolves in the rule's own namespace.
            ("istio-ingressgateway", "default", false),
            ("istio-ingressgateway.istio-system", "default", true),
            ("istio-ingressgateway.istio-system.svc", "default", true),
            (
                "istio-ingressgateway.istio-system.svc.cluster.local",
                "x",
                true,
            ),
            ("*.istio-system.svc.cluster.local", "x", true),
            ("*", "x", true),
            ("reviews", "istio-system", false),
        ] {
            let got = ramp_of(&dr(host), ns, &gateway()).expect("parses");
            assert_eq!(got.is_some(), hit, "{host} in {ns}");
        }
    }

    #[test]
    fn the_new_and_the_old_field_and_port_settings_are_read() {
        let new = json!({"spec": {"host": "istio-ingressgateway", "trafficPolicy": {"loadBalancer": {
            "simple": "LEAST_REQUEST", "warmup": {"duration": "1m30s", "minimumPercent": 20, "aggression": 2.0}}}}});
        assert_eq!(
            ramp_of(&new, "istio-system", &gateway()).unwrap(),
            Some(Warmup {
                seconds: 90,
                min_weight_percent: 20.0,
                aggression: 2.0
            })
        );
        // The deprecated field takes Envoy's defaults; a part of a second rounds up.
        let old = json!({"spec": {"host": "istio-ingressgateway", "trafficPolicy": {"portLevelSettings": [
            {"port": {"number": 80}}, {"port": {"number": 443}, "loadBalancer": {"warmupDurationSecs": "10.5s"}}]}}});
        assert_eq!(
            ramp_of(&old, "istio-system", &gateway()).unwrap(),
            Some(Warmup {
                seconds: 11,
                min_weight_percent: 10.0,
                aggression: 1.0
            })
        );
        // No ramp, or a bad duration said as such.
        let none = json!({"spec": {"host": "istio-ingressgateway", "trafficPolicy": {"loadBalancer": {"simple": "ROUND_ROBIN"}}}});
        assert_eq!(ramp_of(&none, "istio-system", &gateway()).unwrap(), None);
        let bad = json!({"spec": {"host": "istio-ingressgateway", "trafficPolicy": {"loadBalancer": {"warmupDurationSecs": "soon"}}}});
        assert!(ramp_of(&bad, "istio-system", &gateway()).is_err());
    }

    #[test]
    fn the_verdict_compares_the_rule_with_the_spec() {
        let w = Warmup {
            seconds: 60,
            min_weight_percent: 10.0,
            aggression: 1.0,
        };
        let found = [Found {
            rule: "istio-system/gw".into(),
            warmup: w,
        }];
        let (o, text) = judge(&found, None);
        assert_eq!(o, Outcome::Warn);
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
    }
}
