//! Whether a gateway pod that goes has time to drain: the kubelet kills it
//! `terminationGracePeriodSeconds` after SIGTERM, and Istio's proxy drains for its
//! `terminationDrainDuration` before it exits. A grace period shorter than the drain cuts every
//! connection and request still open when it ends, on every scale-in and rollout.

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::SignedDuration;

use super::Outcome;

/// The kubelet's default grace period.
const DEFAULT_GRACE_SECONDS: i64 = 30;
/// Istio's default `terminationDrainDuration` (ProxyConfig).
const DEFAULT_DRAIN_SECONDS: f64 = 5.0;
/// Istio's default `MINIMUM_DRAIN_DURATION` with `EXIT_ON_ZERO_ACTIVE_CONNECTIONS`.
const DEFAULT_MINIMUM_DRAIN_SECONDS: f64 = 5.0;
/// Room the grace period should leave after the drain: the proxy exits, and the preStop and
/// SIGTERM are not delivered at the same instant.
const MARGIN_SECONDS: f64 = 5.0;
/// The annotation that carries a pod's own ProxyConfig.
const PROXY_CONFIG: &str = "proxy.istio.io/config";

/// How one gateway pod drains, read from its spec.
#[derive(Clone, Debug, PartialEq)]
pub struct DrainSetup {
    pub grace_seconds: i64,
    pub drain_seconds: f64,
    /// Where the drain duration came from.
    pub source: &'static str,
    /// `EXIT_ON_ZERO_ACTIVE_CONNECTIONS=true`: the proxy drains until its connections end (after
    /// `MINIMUM_DRAIN_DURATION`), within the grace period.
    pub exit_on_zero: bool,
    /// `MINIMUM_DRAIN_DURATION` (a Go duration), or Istio's default.
    pub minimum_drain_seconds: f64,
}

impl DrainSetup {
    /// Reads the pod: its grace period, and its proxy's drain from the `istio-proxy`
    /// container's `TERMINATION_DRAIN_DURATION_SECONDS` (whole seconds; pilot-agent lets this
    /// legacy variable win), else the `proxy.istio.io/config` annotation's
    /// `terminationDrainDuration`, else Istio's default (a mesh-wide `defaultConfig` is not
    /// visible on the pod).
    pub fn of(pod: &Pod) -> Result<Self, String> {
        let spec = pod.spec.as_ref().ok_or("the pod has no spec")?;
        let grace_seconds = spec
            .termination_grace_period_seconds
            .unwrap_or(DEFAULT_GRACE_SECONDS);
        let proxy = spec
            .containers
            .iter()
            .find(|c| c.name == "istio-proxy")
            .or(spec.containers.first());
        let env = |name: &str| {
            proxy?
                .env
                .as_ref()?
                .iter()
                .find(|e| e.name == name)?
                .value
                .clone()
        };
        let exit_on_zero = env("EXIT_ON_ZERO_ACTIVE_CONNECTIONS")
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
        let annotated = pod
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(PROXY_CONFIG))
            .and_then(|c| field(c, "terminationDrainDuration"));
        let (drain_seconds, source) = if let Some(v) = env("TERMINATION_DRAIN_DURATION_SECONDS") {
            let s: u32 = v.trim().parse().map_err(|_| {
                format!("TERMINATION_DRAIN_DURATION_SECONDS={v:?} is not a whole number of seconds")
            })?;
            (f64::from(s), "TERMINATION_DRAIN_DURATION_SECONDS")
        } else if let Some(v) = annotated {
            (
                seconds("terminationDrainDuration", &v)?,
                "proxy.istio.io/config terminationDrainDuration",
            )
        } else {
            (DEFAULT_DRAIN_SECONDS, "Istio's default")
        };
        let minimum_drain_seconds = match env("MINIMUM_DRAIN_DURATION") {
            Some(v) => seconds("MINIMUM_DRAIN_DURATION", v.trim())?,
            None => DEFAULT_MINIMUM_DRAIN_SECONDS,
        };
        Ok(Self {
            grace_seconds,
            drain_seconds,
            source,
            exit_on_zero,
            minimum_drain_seconds,
        })
    }

    /// The doctor's verdict.
    pub fn judge(&self) -> (Outcome, String) {
        let grace = self.grace_seconds as f64;
        let drain = if self.exit_on_zero {
            self.minimum_drain_seconds
        } else {
            self.drain_seconds
        };
        let how = if self.exit_on_zero {
            format!(
                "the proxy drains until its connections end (EXIT_ON_ZERO_ACTIVE_CONNECTIONS), at least {:.0} s",
                self.minimum_drain_seconds
            )
        } else {
            format!(
                "the proxy drains {:.0} s ({})",
                self.drain_seconds, self.source
            )
        };
        if grace < drain + MARGIN_SECONDS {
            (
                Outcome::Warn,
                format!(
                    "{how}, but the kubelet kills the pod {grace:.0} s after SIGTERM (terminationGracePeriodSeconds): every scale-in and rollout cuts what is still open; give it at least {:.0} s",
                    drain + MARGIN_SECONDS
                ),
            )
        } else {
            let left = if self.exit_on_zero {
                " (long-lived connections still open then are reset)".to_string()
            } else {
                String::new()
            };
            (
                Outcome::Ok,
                format!("{how} within a {grace:.0} s grace period{left}"),
            )
        }
    }
}

/// The value of `key` in a ProxyConfig annotation, YAML (`key: 30s`) or JSON (`"key": "30s"`).
fn field(config: &str, key: &str) -> Option<String> {
    let at = config.find(key)?;
    let rest = config[at + key.len()..].trim_start_matches(['"', '\'']);
    let rest = rest.trim_start().strip_prefix(':')?;
    let value: String = rest
        .trim_start()
        .chars()
        .take_while(|c| !matches!(c, ',' | '}' | '\n'))
        .collect();
    let value = value.trim().trim_matches(['"', '\'']).trim();
    (!value.is_empty()).then(|| value.to_string())
}

/// A Go duration (`30s`, `1m30s`, `500ms`) in seconds, not negative.
pub(super) fn seconds(what: &str, v: &str) -> Result<f64, String> {
    v.parse::<SignedDuration>()
        .map_err(|e| format!("{what} {v:?} is not a duration: {e}"))
        .and_then(|d| {
            (!d.is_negative())
                .then(|| d.as_secs_f64())
                .ok_or_else(|| format!("{what} {v:?} is negative"))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(grace: Option<i64>, annotation: Option<&str>, env: &[(&str, &str)]) -> Pod {
        let env: Vec<_> = env
            .iter()
            .map(|(n, v)| json!({"name": n, "value": v}))
            .collect();
        let mut p = json!({
            "metadata": {"name": "gw-1"},
            "spec": {"containers": [{"name": "istio-proxy", "env": env}]}
        });
        if let Some(g) = grace {
            p["spec"]["terminationGracePeriodSeconds"] = json!(g);
        }
        if let Some(a) = annotation {
            p["metadata"]["annotations"] = json!({PROXY_CONFIG: a});
        }
        serde_json::from_value(p).unwrap()
    }

    #[test]
    fn istios_defaults_drain_within_the_kubelets_default_grace() {
        let s = DrainSetup::of(&pod(None, None, &[])).unwrap();
        assert_eq!((s.grace_seconds, s.drain_seconds), (30, 5.0));
        let (outcome, text) = s.judge();
        assert_eq!(outcome, Outcome::Ok, "{text}");
        assert!(
            text.contains("drains 5 s (Istio's default) within a 30 s grace"),
            "{text}"
        );
    }

    #[test]
    fn a_drain_longer_than_the_grace_period_is_warned_about() {
        // YAML, as the annotation is usually written, and JSON.
        for a in [
            "holdApplicationUntilProxyStarts: true\nterminationDrainDuration: 45s\n",
            r#"{"terminationDrainDuration": "1m"}"#,
        ] {
            let s = DrainSetup::of(&pod(Some(40), Some(a), &[])).unwrap();
            let (outcome, text) = s.judge();
            assert_eq!(outcome, Outcome::Warn, "{text}");
            assert!(text.contains("kills the pod 40 s after SIGTERM"), "{text}");
        }
        let env = DrainSetup::of(&pod(
            Some(20),
            None,
            &[("TERMINATION_DRAIN_DURATION_SECONDS", "20")],
        ))
        .unwrap();
        assert_eq!(env.judge().0, Outcome::Warn);
        assert_eq!(env.source, "TERMINATION_DRAIN_DURATION_SECONDS");
        // The legacy variable wins over the annotation, as in pilot-agent; whole seconds only.
        let both = DrainSetup::of(&pod(
            Some(60),
            Some("terminationDrainDuration: 5s"),
            &[("TERMINATION_DRAIN_DURATION_SECONDS", "90")],
        ))
        .unwrap();
        assert_eq!((both.drain_seconds, both.judge().0), (90.0, Outcome::Warn));
        for bad in ["NaN", "-5", "2.5"] {
            let e = DrainSetup::of(&pod(
                None,
                None,
                &[("TERMINATION_DRAIN_DURATION_SECONDS", bad)],
            ))
            .unwrap_err();
            assert!(e.contains("whole number"), "{bad}: {e}");
        }
    }

    #[test]
    fn exit_on_zero_connections_uses_the_grace_period_and_says_what_is_left() {
        let s = DrainSetup::of(&pod(
            Some(300),
            None,
            &[("EXIT_ON_ZERO_ACTIVE_CONNECTIONS", "true")],
        ))
        .unwrap();
        let (outcome, text) = s.judge();
        assert_eq!(outcome, Outcome::Ok, "{text}");
        assert!(text.contains("until its connections end"), "{text}");
        // Its minimum drain is what the grace period must cover.
        let long = DrainSetup::of(&pod(
            Some(30),
            None,
            &[
                ("EXIT_ON_ZERO_ACTIVE_CONNECTIONS", "true"),
                ("MINIMUM_DRAIN_DURATION", "60s"),
            ],
        ))
        .unwrap();
        let (outcome, text) = long.judge();
        assert_eq!(outcome, Outcome::Warn, "{text}");
        assert!(text.contains("at least 60 s"), "{text}");
    }

    #[test]
    fn a_drain_that_is_no_duration_is_an_error_naming_it() {
        let e =
            DrainSetup::of(&pod(None, Some("terminationDrainDuration: soon"), &[])).unwrap_err();
        assert!(e.contains("\"soon\""), "{e}");
    }
}
