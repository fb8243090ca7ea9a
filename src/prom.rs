//! The load source: instant queries against Prometheus's HTTP API.
//!
//! Every way a query can fail (unreachable, timeout, HTTP or PromQL error, empty result, NaN,
//! several series where one was expected, a stale answer) becomes
//! [`LoadSample::Missing`] with the reason, so the engine holds and the status says why.

use std::path::PathBuf;
use std::time::Duration;

use reqwest::header::{HeaderName, HeaderValue};
use serde::Deserialize;

use crate::model::LoadSample;

/// Largest answer read from Prometheus.
pub const MAX_ANSWER_BYTES: usize = 16 << 20;

/// How to reach Prometheus.
#[derive(Clone, Debug)]
pub struct PromConfig {
    pub url: String,
    pub timeout: Duration,
    /// Credentials sent with every query, read from files.
    pub auth: PromAuth,
    /// PEM bundle of extra CAs for an HTTPS Prometheus.
    pub ca_pem: Option<Vec<u8>>,
    /// An answer whose evaluation time is further than this from our clock is stale.
    pub max_skew: Duration,
}

/// Largest credential file read (a token, a password or a header value).
const MAX_SECRET_BYTES: u64 = 64 << 10;

/// Credentials for a Prometheus behind authentication (ARMS, a proxy, `--web.config.file`).
///
/// Every value comes from a file (a mounted Secret) and is read again on every query: a Secret
/// rotated in place (the kubelet swaps the mounted files atomically) takes effect at the next
/// query, with no restart and no file watcher; the cost is one read of a few bytes per query.
/// The values never reach a log line, a status or an Event (see [`crate::redact`]).
#[derive(Clone, Debug, Default)]
pub struct PromAuth {
    /// A file holding a bearer token: `Authorization: Bearer <token>`.
    pub bearer_token_file: Option<PathBuf>,
    /// Basic authentication: `Authorization: Basic …`.
    pub basic_auth: Option<BasicAuth>,
    /// Extra headers, each a name and a file holding its value (e.g. a tenant or an API key).
    pub header_files: Vec<(String, PathBuf)>,
}

/// A user name and a file holding the password.
#[derive(Clone, Debug)]
pub struct BasicAuth {
    pub username: String,
    pub password_file: PathBuf,
}

/// What one query sends, as read from the files just now.
struct Credentials {
    bearer: Option<String>,
    basic: Option<(String, String)>,
    headers: Vec<(HeaderName, HeaderValue)>,
    /// Every value read, to scrub from messages.
    secrets: Vec<String>,
}

impl Credentials {
    /// Adds the credentials to a request.
    fn authorize(&self, mut req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        if let Some(t) = &self.bearer {
            req = req.bearer_auth(t);
        }
        if let Some((user, pw)) = &self.basic {
            req = req.basic_auth(user, Some(pw));
        }
        for (name, value) in &self.headers {
            req = req.header(name, value);
        }
        req
    }
}

impl PromAuth {
    /// Checks what can be checked without reading: one `Authorization` at most, valid names.
    fn validate(&self) -> Result<(), String> {
        if self.bearer_token_file.is_some() && self.basic_auth.is_some() {
            return Err("--prometheus-token-file and --prometheus-basic-auth-user both set the Authorization header; give one".into());
        }
        for (name, _) in &self.header_files {
            let parsed = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                format!("--prometheus-header-file: {name:?} is not an HTTP header name")
            })?;
            if parsed == reqwest::header::AUTHORIZATION
                && (self.bearer_token_file.is_some() || self.basic_auth.is_some())
            {
                return Err("--prometheus-header-file sets Authorization, and so does the bearer token or basic auth; give one".into());
            }
        }
        Ok(())
    }

    /// Reads every file now. The error names the file and the flag, never a value.
    fn load(&self) -> Result<Credentials, String> {
        let mut secrets = vec![];
        let bearer = match &self.bearer_token_file {
            Some(f) => Some(read_secret("--prometheus-token-file", f)?),
            None => None,
        };
        let basic = match &self.basic_auth {
            Some(b) => Some((
                b.username.clone(),
                read_secret("--prometheus-basic-auth-password-file", &b.password_file)?,
            )),
            None => None,
        };
        let mut headers = Vec::with_capacity(self.header_files.len());
        for (name, f) in &self.header_files {
            let value = read_secret("--prometheus-header-file", f)?;
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                format!("--prometheus-header-file: {name:?} is not an HTTP header name")
            })?;
            let mut v = HeaderValue::from_str(&value).map_err(|_| {
                format!(
                    "--prometheus-header-file {name}: {} does not hold a valid header value (one line of visible ASCII)",
                    f.display()
                )
            })?;
            v.set_sensitive(true);
            headers.push((name, v));
            secrets.push(value);
        }
        secrets.extend(bearer.clone());
        if let Some((user, pw)) = &basic {
            secrets.extend([user.clone(), pw.clone()]);
        }
        Ok(Credentials {
            bearer,
            basic,
            headers,
            secrets,
        })
    }
}

/// One secret from a file, without the line break editors and `kubectl create secret
/// --from-file` leave at its end.
fn read_secret(flag: &str, path: &std::path::Path) -> Result<String, String> {
    use std::io::Read as _;
    // A few bytes, read on the runtime's thread: cheaper than a hand-off to a blocking pool.
    let file = std::fs::File::open(path)
        .map_err(|e| format!("{flag}: cannot read {}: {e}", path.display()))?;
    let mut text = String::new();
    file.take(MAX_SECRET_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("{flag}: cannot read {}: {e}", path.display()))?;
    if text.len() as u64 > MAX_SECRET_BYTES {
        return Err(format!(
            "{flag}: {} is larger than {MAX_SECRET_BYTES} bytes; is it the right file?",
            path.display()
        ));
    }
    let value = text.trim();
    if value.is_empty() {
        return Err(format!("{flag}: {} is empty", path.display()));
    }
    Ok(value.to_string())
}

/// A Prometheus client.
#[derive(Clone)]
pub struct Prometheus {
    http: reqwest::Client,
    cfg: PromConfig,
    /// The URL as it may be printed (no credentials).
    shown_url: String,
    /// Strings that must never appear in a message.
    secrets: Vec<String>,
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

/// Redirects within Prometheus's own origin only (a proxy's path rewrite), at most 5: the
/// credential headers (`--prometheus-header-file`, an API key) go with every request, and
/// reqwest strips only `Authorization` and cookies on a hop to another host.
fn same_origin_redirects() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let first = attempt.previous().first().map(reqwest::Url::origin);
        if attempt.previous().len() > 5 {
            attempt.error("more than 5 redirects")
        } else if first.is_some_and(|o| o != attempt.url().origin()) {
            attempt.stop()
        } else {
            attempt.follow()
        }
    })
}

impl Prometheus {
    pub fn new(cfg: PromConfig) -> Result<Self, crate::Error> {
        let mut b = reqwest::Client::builder()
            .redirect(same_origin_redirects())
            .timeout(cfg.timeout)
            .user_agent(concat!("spillway/", env!("CARGO_PKG_VERSION")));
        if let Some(pem) = &cfg.ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| crate::Error::Config(format!("--prometheus-ca-file: {e}")))?;
            if certs.is_empty() {
                return Err(crate::Error::Config(
                    "--prometheus-ca-file holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
                        .into(),
                ));
            }
            for cert in certs {
                b = b.add_root_certificate(cert);
            }
        }
        let parsed = reqwest::Url::parse(&cfg.url).map_err(|e| {
            crate::Error::Config(format!(
                "--prometheus-url {}: {e}",
                crate::redact::url(&cfg.url)
            ))
        })?;
        let secrets: Vec<String> = [parsed.password().unwrap_or(""), parsed.username()]
            .into_iter()
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
        // Wrong flags and unreadable files are refused at start; later failures to read (a
        // Secret deleted) make each query missing, with the file named.
        cfg.auth.validate().map_err(crate::Error::Config)?;
        cfg.auth.load().map_err(crate::Error::Config)?;
        let http = b
            .build()
            .map_err(|e| crate::Error::Config(format!("Prometheus client: {e}")))?;
        Ok(Self {
            http,
            shown_url: crate::redact::url(&cfg.url),
            secrets,
            cfg,
        })
    }

    /// The URL as it may be printed.
    pub fn shown_url(&self) -> &str {
        &self.shown_url
    }

    fn scrub(&self, text: String, read: &[String]) -> String {
        let secrets: Vec<&str> = self
            .secrets
            .iter()
            .chain(read)
            .map(String::as_str)
            .collect();
        crate::redact::scrub(&text, &secrets)
    }

    /// Runs one instant query; `now` is Unix seconds. No reason it gives contains a credential.
    pub async fn query(&self, query: &str, now: f64) -> LoadSample {
        let creds = match self.cfg.auth.load() {
            Ok(c) => c,
            Err(why) => return LoadSample::Missing(why),
        };
        match self.query_raw(query, now, &creds).await {
            LoadSample::Missing(why) => LoadSample::Missing(self.scrub(why, &creds.secrets)),
            other => other,
        }
    }

    async fn query_raw(&self, query: &str, now: f64, creds: &Credentials) -> LoadSample {
        let url = format!("{}/api/v1/query", self.cfg.url.trim_end_matches('/'));
        let req = creds.authorize(self.http.get(&url).query(&[("query", query)]));
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) if e.is_timeout() => {
                return missing(format!("Prometheus timed out after {:?}", self.cfg.timeout));
            }
            Err(e) => {
                return missing(format!(
                    "Prometheus unreachable at {}: {}",
                    self.shown_url,
                    root_cause(&e.without_url())
                ));
            }
        };
        let status = resp.status();
        // An answer is a few KiB; a huge one (a query gone wrong, a hostile proxy) is refused
        // before it is held in memory whole.
        let mut resp = resp;
        let mut body = Vec::new();
        loop {
            match resp.chunk().await {
                Ok(Some(chunk)) => {
                    if body.len() + chunk.len() > MAX_ANSWER_BYTES {
                        return missing(format!(
                            "Prometheus's answer is larger than {MAX_ANSWER_BYTES} bytes; is the query a sum()?"
                        ));
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(e) => {
                    return missing(format!(
                        "reading Prometheus's answer: {}",
                        root_cause(&e.without_url())
                    ));
                }
            }
        }
        let body = String::from_utf8_lossy(&body);
        decode(status.as_u16(), &body, now, self.cfg.max_skew.as_secs_f64())
    }
}

/// One series of a range query: its labels and `(unix seconds, value)` points, values as
/// Prometheus wrote them (`NaN` included).
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct RangeSeries {
    #[serde(default)]
    pub metric: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub values: Vec<(f64, String)>,
}

#[derive(Deserialize)]
struct RangeResponse {
    status: String,
    #[serde(default)]
    data: Option<RangeData>,
    #[serde(default, rename = "errorType")]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
struct RangeData {
    #[serde(rename = "resultType")]
    result_type: String,
    #[serde(default)]
    result: Vec<RangeSeries>,
}

impl Prometheus {
    /// Runs one range query (`/api/v1/query_range`); `start`/`end` are Unix seconds. The
    /// error is a sentence naming the problem, without credentials.
    pub async fn query_range(
        &self,
        query: &str,
        start: f64,
        end: f64,
        step: f64,
    ) -> Result<Vec<RangeSeries>, String> {
        let creds = self.cfg.auth.load()?;
        self.query_range_raw(query, start, end, step, &creds)
            .await
            .map_err(|why| self.scrub(why, &creds.secrets))
    }

    async fn query_range_raw(
        &self,
        query: &str,
        start: f64,
        end: f64,
        step: f64,
        creds: &Credentials,
    ) -> Result<Vec<RangeSeries>, String> {
        let url = format!("{}/api/v1/query_range", self.cfg.url.trim_end_matches('/'));
        let req = self.http.get(&url).query(&[
            ("query", query.to_string()),
            ("start", format!("{start:.3}")),
            ("end", format!("{end:.3}")),
            ("step", format!("{step}")),
        ]);
        let req = creds.authorize(req);
        let resp = req.send().await.map_err(|e| {
            if e.is_timeout() {
                format!(
                    "Prometheus at {} did not answer within {:?}",
                    self.shown_url, self.cfg.timeout
                )
            } else {
                format!(
                    "Prometheus unreachable at {}: {}",
                    self.shown_url,
                    root_cause(&e.without_url())
                )
            }
        })?;
        let status = resp.status().as_u16();
        let mut resp = resp;
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| {
            format!(
                "reading Prometheus's answer: {}",
                root_cause(&e.without_url())
            )
        })? {
            if body.len() + chunk.len() > MAX_ANSWER_BYTES {
                return Err(format!(
                    "Prometheus's answer is larger than {MAX_ANSWER_BYTES} bytes; use a larger --step or a query that sums its series"
                ));
            }
            body.extend_from_slice(&chunk);
        }
        decode_range(status, &String::from_utf8_lossy(&body))
    }
}

/// Turns an answer of `/api/v1/query_range` into its series, or the reason it has none.
pub fn decode_range(status: u16, body: &str) -> Result<Vec<RangeSeries>, String> {
    let parsed: RangeResponse = serde_json::from_str(body).map_err(|_| {
        let snippet: String = body.chars().take(120).collect();
        format!("Prometheus answered HTTP {status} with no API response: {snippet:?}")
    })?;
    if parsed.status != "success" {
        let cut = |s: Option<String>| s.unwrap_or_default().chars().take(500).collect::<String>();
        return Err(format!(
            "query failed: {}: {}",
            cut(parsed.error_type),
            cut(parsed.error)
        ));
    }
    let data = parsed
        .data
        .ok_or_else(|| "Prometheus answered success without data".to_string())?;
    if data.result_type != "matrix" {
        return Err(format!(
            "a range query returned a {}, expected a matrix",
            data.result_type
        ));
    }
    Ok(data.result)
}

/// Turns an answer of `/api/v1/query` (HTTP status and body) into a sample. Every value from
/// outside is checked here, at the edge: finite, not negative, fresh, one per pod.
pub fn decode(status: u16, body: &str, now: f64, max_skew: f64) -> LoadSample {
    let parsed: Response = match serde_json::from_str(body) {
        Ok(p) => p,
        Err(_) if status == 401 || status == 403 => {
            return missing(format!(
                "Prometheus refused the request (HTTP {status}): credentials missing or wrong \
                 (--prometheus-token-file, --prometheus-basic-auth-*, --prometheus-header-file)"
            ));
        }
        Err(_) => {
            let snippet: String = body.chars().take(120).collect();
            return missing(format!(
                "Prometheus answered HTTP {status} with no API response: {snippet:?}"
            ));
        }
    };
    if parsed.status != "success" {
        let cut = |s: Option<String>| s.unwrap_or_default().chars().take(500).collect::<String>();
        return missing(format!(
            "query failed: {}: {}",
            cut(parsed.error_type),
            cut(parsed.error)
        ));
    }
    interpret(parsed.data, now, max_skew)
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
    if x < 0.0 {
        return Err(format!("value is negative ({x}); a load cannot be"));
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
                per_pod(many, now, max_skew)
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

/// Per-pod values. A pod whose value is unusable (NaN, negative, stale, unparsable) or that has
/// several series (which one is right?) is left out: the engine then treats it as a pod without
/// a value, which upstream's HPA takes at the target on a scale-down, so bad data for a pod can
/// never shrink the fleet.
fn per_pod(series: &[Series], now: f64, max_skew: f64) -> LoadSample {
    let mut seen: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for s in series {
        *seen.entry(s.metric["pod"].as_str()).or_default() += 1;
    }
    let mut out = Vec::with_capacity(series.len());
    for s in series {
        let pod = s.metric["pod"].as_str();
        if pod.is_empty() || seen[pod] > 1 {
            continue;
        }
        if let Ok(x) = value(&s.value, now, max_skew) {
            out.push((pod.to_string(), x));
        }
    }
    if out.is_empty() {
        return missing(format!(
            "none of the {} per-pod series has a usable value (NaN, negative, stale or duplicated)",
            series.len()
        ));
    }
    LoadSample::PerPod(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> LoadSample {
        decode(200, json, 1000.0, 60.0)
    }

    #[test]
    fn bad_per_pod_values_are_missing_for_that_pod_only() {
        let body = r#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"pod":"a"},"value":[1000,"-500"]},
            {"metric":{"pod":"b"},"value":[1000,"7"]},
            {"metric":{"pod":"c"},"value":[1000,"1"]},
            {"metric":{"pod":"c"},"value":[1000,"900"]},
            {"metric":{"pod":"d"},"value":[1000,"NaN"]},
            {"metric":{"pod":"e"},"value":[1000,"3"]}]}}"#;
        assert_eq!(
            parse(body),
            LoadSample::PerPod(vec![("b".into(), 7.0), ("e".into(), 3.0)])
        );
        let negative_total = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1000,"-1"]}]}}"#;
        assert!(matches!(parse(negative_total), LoadSample::Missing(w) if w.contains("negative")));
        let all_bad = r#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"pod":"a"},"value":[1000,"-1"]},{"metric":{"pod":"a"},"value":[1000,"1"]}]}}"#;
        assert!(matches!(parse(all_bad), LoadSample::Missing(_)));
    }

    fn secret_file(dir: &std::path::Path, name: &str, value: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, value).unwrap();
        p
    }

    #[test]
    fn credentials_stay_out_of_reasons_and_garbage_cas_are_refused() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().unwrap();
        let prom = Prometheus::new(PromConfig {
            url: "http://spill:hunter22@127.0.0.1:1/?token=tok999".into(),
            timeout: Duration::from_secs(2),
            auth: PromAuth {
                bearer_token_file: Some(secret_file(dir.path(), "token", "bearer777\n")),
                header_files: vec![(
                    "X-Api-Key".into(),
                    secret_file(dir.path(), "key", "headerkey55"),
                )],
                ..PromAuth::default()
            },
            ca_pem: None,
            max_skew: Duration::from_secs(60),
        })
        .unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let got = rt.block_on(prom.query("up", 1000.0));
        let LoadSample::Missing(why) = got else {
            panic!("expected a missing sample, got {got:?}")
        };
        for secret in ["hunter22", "tok999", "bearer777", "headerkey55"] {
            assert!(!why.contains(secret), "{why}");
            assert!(!prom.shown_url().contains(secret));
        }
        let garbage = Prometheus::new(PromConfig {
            url: "http://prom:9090".into(),
            timeout: Duration::from_secs(1),
            auth: PromAuth::default(),
            ca_pem: Some(b"this is not a certificate".to_vec()),
            max_skew: Duration::from_secs(60),
        });
        assert!(garbage.is_err());
    }

    #[test]
    fn auth_flags_are_checked_at_start_and_files_on_every_query() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().unwrap();
        let cfg = |auth: PromAuth| PromConfig {
            url: "http://127.0.0.1:1".into(),
            timeout: Duration::from_secs(1),
            auth,
            ca_pem: None,
            max_skew: Duration::from_secs(60),
        };
        let token = secret_file(dir.path(), "token", "t0ken-value");
        let basic = BasicAuth {
            username: "arms-user".into(),
            password_file: secret_file(dir.path(), "pw", "pw-value"),
        };
        let both = PromAuth {
            bearer_token_file: Some(token.clone()),
            basic_auth: Some(basic.clone()),
            ..PromAuth::default()
        };
        let err = Prometheus::new(cfg(both)).err().unwrap().to_string();
        assert!(err.contains("give one"), "{err}");
        let bad_name = PromAuth {
            header_files: vec![("X Bad".into(), token.clone())],
            ..PromAuth::default()
        };
        let err = Prometheus::new(cfg(bad_name)).err().unwrap().to_string();
        assert!(err.contains("not an HTTP header name"), "{err}");
        let absent = PromAuth {
            bearer_token_file: Some(dir.path().join("nope")),
            ..PromAuth::default()
        };
        let err = Prometheus::new(cfg(absent)).err().unwrap().to_string();
        assert!(
            err.contains("--prometheus-token-file") && err.contains("nope"),
            "{err}"
        );
        let two_lines = PromAuth {
            header_files: vec![(
                "X-Key".into(),
                secret_file(dir.path(), "two", "line-one\nline-two"),
            )],
            ..PromAuth::default()
        };
        let err = Prometheus::new(cfg(two_lines)).err().unwrap().to_string();
        assert!(
            err.contains("valid header value") && !err.contains("line-one"),
            "{err}"
        );

        // A Secret removed after start: each query is missing, naming the file, not the value.
        let prom = Prometheus::new(cfg(PromAuth {
            basic_auth: Some(basic.clone()),
            ..PromAuth::default()
        }))
        .unwrap();
        std::fs::remove_file(&basic.password_file).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let LoadSample::Missing(why) = rt.block_on(prom.query("up", 1000.0)) else {
            panic!("a query without its password file gave a value")
        };
        assert!(
            why.contains("--prometheus-basic-auth-password-file") && why.contains("pw"),
            "{why}"
        );
        let refused = decode(401, "Unauthorized\n", 1000.0, 60.0);
        assert!(matches!(refused, LoadSample::Missing(w) if w.contains("credentials")));
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
