//! The load source: instant queries against Prometheus's HTTP API.
//!
//! Every way a query can fail (unreachable, timeout, HTTP or PromQL error, empty result, NaN,
//! several series where one was expected, a stale answer) becomes
//! [`LoadSample::Missing`] with the reason, so the engine holds and the status says why.

use std::time::Duration;

use serde::Deserialize;

use crate::engine::LoadSample;

/// How to reach Prometheus.
#[derive(Clone, Debug)]
pub struct PromConfig {
    pub url: String,
    pub timeout: Duration,
    /// Bearer token sent with every query (e.g. a ServiceAccount token for a proxy).
    pub bearer_token: Option<String>,
    /// PEM bundle of extra CAs for an HTTPS Prometheus.
    pub ca_pem: Option<Vec<u8>>,
    /// An answer whose evaluation time is further than this from our clock is stale.
    pub max_skew: Duration,
}

/// A Prometheus client.
#[derive(Clone)]
pub struct Prometheus {
    http: reqwest::Client,
    cfg: PromConfig,
}

#[derive(Deserialize)]
struct Response {
    status: String,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default, rename = "errorType")]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
#[serde(tag = "resultType", content = "result", rename_all = "lowercase")]
enum Data {
    Vector(Vec<Series>),
    Scalar((f64, String)),
    Matrix(serde::de::IgnoredAny),
    String(serde::de::IgnoredAny),
}

#[derive(Deserialize)]
struct Series {
    #[serde(default)]
    metric: std::collections::BTreeMap<String, String>,
    value: (f64, String),
}

impl Prometheus {
    pub fn new(cfg: PromConfig) -> Result<Self, crate::Error> {
        let mut b = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .user_agent(concat!("spillway/", env!("CARGO_PKG_VERSION")));
        if let Some(pem) = &cfg.ca_pem {
            for cert in reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| crate::Error::Config(format!("--prometheus-ca-file: {e}")))?
            {
                b = b.add_root_certificate(cert);
            }
        }
        let http = b
            .build()
            .map_err(|e| crate::Error::Config(format!("Prometheus client: {e}")))?;
        Ok(Self { http, cfg })
    }

    /// Runs one instant query; `now` is Unix seconds.
    pub async fn query(&self, query: &str, now: f64) -> LoadSample {
        let url = format!("{}/api/v1/query", self.cfg.url.trim_end_matches('/'));
        let mut req = self.http.get(&url).query(&[("query", query)]);
        if let Some(t) = &self.cfg.bearer_token {
            req = req.bearer_auth(t);
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) if e.is_timeout() => {
                return missing(format!("Prometheus timed out after {:?}", self.cfg.timeout));
            }
            Err(e) => {
                return missing(format!(
                    "Prometheus unreachable at {}: {}",
                    self.cfg.url,
                    root_cause(&e)
                ));
            }
        };
        let status = resp.status();
        let body = match resp.text().await {
            Ok(b) => b,
            Err(e) => return missing(format!("reading Prometheus's answer: {}", root_cause(&e))),
        };
        let parsed: Response = match serde_json::from_str(&body) {
            Ok(p) => p,
            Err(_) => {
                let snippet: String = body.chars().take(120).collect();
                return missing(format!(
                    "Prometheus answered HTTP {status} with no API response: {snippet:?}"
                ));
            }
        };
        if parsed.status != "success" {
            return missing(format!(
                "query failed: {}: {}",
                parsed.error_type.unwrap_or_default(),
                parsed.error.unwrap_or_default()
            ));
        }
        interpret(parsed.data, now, self.cfg.max_skew.as_secs_f64())
    }
}

fn missing(why: String) -> LoadSample {
    LoadSample::Missing(why)
}

fn root_cause(e: &dyn std::error::Error) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

fn value(v: &(f64, String), now: f64, max_skew: f64) -> Result<f64, String> {
    let x: f64 =
        v.1.parse()
            .map_err(|_| format!("unparsable value {:?}", v.1))?;
    if !x.is_finite() {
        return Err(format!("value is {x}"));
    }
    if (now - v.0).abs() > max_skew {
        return Err(format!(
            "stale answer: evaluated at {:.0}, {:.0}s from now",
            v.0,
            now - v.0
        ));
    }
    Ok(x)
}

/// One series is the total; several with a `pod` label are per-pod values; anything else is a
/// mistake in the query, reported as such.
fn interpret(data: Option<Data>, now: f64, max_skew: f64) -> LoadSample {
    match data {
        Some(Data::Scalar(v)) => value(&v, now, max_skew).map_or_else(missing, LoadSample::Total),
        Some(Data::Vector(series)) => match series.as_slice() {
            [] => missing(
                "empty result: no series matched (is the gateway scraped? is the query right?)"
                    .into(),
            ),
            [one] => value(&one.value, now, max_skew).map_or_else(missing, LoadSample::Total),
            many if many.iter().all(|s| s.metric.contains_key("pod")) => {
                let mut per_pod = Vec::with_capacity(many.len());
                for s in many {
                    match value(&s.value, now, max_skew) {
                        Ok(x) => per_pod.push((s.metric["pod"].clone(), x)),
                        Err(e) => return missing(format!("pod {}: {e}", s.metric["pod"])),
                    }
                }
                LoadSample::PerPod(per_pod)
            }
            many => missing(format!(
                "query returned {} series without a `pod` label; expected one total (wrap it in sum())",
                many.len()
            )),
        },
        Some(Data::Matrix(_)) | Some(Data::String(_)) => {
            missing("query returned a range vector or string; expected an instant vector".into())
        }
        None => missing("success without data".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> LoadSample {
        let r: Response = serde_json::from_str(json).unwrap();
        interpret(r.data, 1000.0, 60.0)
    }

    #[test]
    fn answers_become_samples_or_reasons() {
        let total = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1000,"1234.5"]}]}}"#;
        assert_eq!(parse(total), LoadSample::Total(1234.5));
        let empty = r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
        assert!(matches!(parse(empty), LoadSample::Missing(w) if w.contains("empty result")));
        let nan = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1000,"NaN"]}]}}"#;
        assert!(matches!(parse(nan), LoadSample::Missing(w) if w.contains("NaN")));
        let stale = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[100,"1"]}]}}"#;
        assert!(matches!(parse(stale), LoadSample::Missing(w) if w.contains("stale")));
        let per_pod = r#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"pod":"a"},"value":[1000,"1"]},{"metric":{"pod":"b"},"value":[1000,"2"]}]}}"#;
        assert_eq!(
            parse(per_pod),
            LoadSample::PerPod(vec![("a".into(), 1.0), ("b".into(), 2.0)])
        );
        let ambiguous = r#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"job":"a"},"value":[1000,"1"]},{"metric":{"job":"b"},"value":[1000,"2"]}]}}"#;
        assert!(matches!(parse(ambiguous), LoadSample::Missing(w) if w.contains("sum()")));
        let scalar = r#"{"status":"success","data":{"resultType":"scalar","result":[1000,"7"]}}"#;
        assert_eq!(parse(scalar), LoadSample::Total(7.0));
    }
}
