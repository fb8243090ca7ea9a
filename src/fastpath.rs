//! The fast path: the gateway pods' own request counters, read straight from their Envoys
//! (`:15090/stats/prometheus`) every second or two, as Knative's autoscaler reads its proxies.
//!
//! Through Prometheus a surge is seen a scrape interval plus a `rate()` window late; the pods'
//! counters show it within one read. The engine lets this reading only *raise* the count
//! ([`crate::model::FastSample`]); Prometheus stays the source for scale-down. So every fault
//! here (a pod that cannot be reached, a timeout, a body that is not an exposition, a counter
//! that went back to zero on a restart, a pod gone mid-read) makes that pod missing from this
//! read and nothing else: a read with no usable pod is no reading at all.
//!
//! [`Counters`] holds the arithmetic and is pure (the caller passes the time); [`FastPath`] does
//! the HTTP.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::model::FastSample;

/// Pods read per gateway per read, at most: enough for a mean within a few percent on a
/// balanced fleet, bounded on a large one (Knative samples its proxies the same way).
pub const DEFAULT_SAMPLE_PODS: usize = 16;
/// A pod's rate spans at least this long: from its newest reading at least this old to now.
/// Shorter, it is mostly the granularity of the counter and the arrival of requests (Knative
/// averages its proxies' readings over a 6 s panic window for the same reason).
pub const MIN_RATE_SECONDS: f64 = 1.0;
/// Readings older than this are dropped: a pod whose last one is older (out of the sample, or
/// failing) starts afresh, as a rate over a long span is Prometheus's job, not the fast path's.
pub const MAX_RATE_SECONDS: f64 = 15.0;
/// A pod ready for less than this and not read this time is assumed to serve nothing yet: a
/// load balancer adds a new backend seconds after it turns ready (endpoints, then the cloud
/// load balancer's sync), so counting it at the others' mean would overstate the load exactly
/// when the fleet grows.
pub const WARM_SECONDS: f64 = 5.0;
/// Largest body read from one pod (Envoy's full stats on a big mesh run to a few MiB).
const MAX_BODY_BYTES: usize = 16 << 20;

/// How the fast path reads the pods.
#[derive(Clone, Debug)]
pub struct FastPathConfig {
    /// Port of the pods' stats endpoint (Envoy's Prometheus listener in an Istio gateway).
    pub port: u16,
    /// Path of the stats endpoint.
    pub path: String,
    /// The request counter summed over its series.
    pub metric: String,
    /// How often a gateway with a request-rate metric is decided (and its pods read).
    pub interval: Duration,
    /// Pods read per gateway per read, at most.
    pub max_pods: usize,
    /// Longest one pod's read may take.
    pub timeout: Duration,
}

impl Default for FastPathConfig {
    fn default() -> Self {
        Self {
            port: 15090,
            path: "/stats/prometheus".into(),
            metric: "istio_requests_total".into(),
            interval: Duration::from_secs(2),
            max_pods: DEFAULT_SAMPLE_PODS,
            timeout: Duration::from_secs(1),
        }
    }
}

/// One pod to read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub pod: String,
    pub ip: IpAddr,
}

/// The pods to read: the ready ones (not terminating) among `pods` that have an address
/// (`ip_of` looks a pod's up by name, from the cluster index).
pub fn targets(
    pods: &[crate::model::GatewayPod],
    ip_of: impl Fn(&str) -> Option<IpAddr>,
) -> Vec<Target> {
    pods.iter()
        .filter(|p| p.ready && !p.terminating)
        .filter_map(|p| {
            Some(Target {
                pod: p.name.clone(),
                ip: ip_of(&p.name)?,
            })
        })
        .collect()
}

/// Why one pod's read gave nothing.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum PodError {
    /// Connection refused or reset, no route, or the pod went away mid-read.
    #[error("unreachable: {0}")]
    Unreachable(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("HTTP {0}")]
    Status(u16),
    /// Not an exposition, or the counter is absent or not a number.
    #[error("unusable body: {0}")]
    Garbage(String),
    /// The counter went down: the proxy restarted. This read is the new baseline.
    #[error("counter reset from {from} to {to}")]
    Reset { from: f64, to: f64 },
}

impl PodError {
    /// A short, stable label for `spillway_fast_path_failures_total{kind}`.
    pub fn kind(&self) -> &'static str {
        match self {
            PodError::Unreachable(_) => "unreachable",
            PodError::Timeout(_) => "timeout",
            PodError::Status(_) => "http_status",
            PodError::Garbage(_) => "garbage",
            PodError::Reset { .. } => "reset",
        }
    }
}

/// Every `kind` of [`PodError`].
pub const FAILURE_KINDS: [&str; 5] = ["unreachable", "timeout", "http_status", "garbage", "reset"];

/// The sum of `metric`'s samples in a Prometheus text exposition (version 0.0.4, as Envoy
/// serves it): the lines `metric{…} value [timestamp]` and `metric value [timestamp]`.
/// Other families are skipped unparsed; a sample of this one that is not a finite number, or
/// no sample at all, is an error.
pub fn counter_sum(body: &str, metric: &str) -> Result<f64, String> {
    let mut sum = 0.0;
    let mut seen = 0usize;
    for line in body.lines() {
        let Some(rest) = line.strip_prefix(metric) else {
            continue;
        };
        let after_labels = match rest.as_bytes().first() {
            Some(b'{') => {
                skip_labels(rest).ok_or_else(|| format!("unterminated labels: {line}"))?
            }
            Some(b' ' | b'\t') => rest,
            // Another family sharing the prefix (`metric_bucket`, `metricfoo`), or a bare name.
            _ => continue,
        };
        let value = after_labels
            .split_whitespace()
            .next()
            .ok_or_else(|| format!("no value: {line}"))?;
        let v: f64 = value
            .parse()
            .map_err(|_| format!("not a number {value:?} in: {line}"))?;
        if !v.is_finite() || v < 0.0 {
            return Err(format!("counter value {v} in: {line}"));
        }
        sum += v;
        seen += 1;
    }
    if seen == 0 {
        return Err(format!("no {metric} sample"));
    }
    Ok(sum)
}

/// What follows the label set `{…}` at the start of `s`, honouring quoted values and their
/// escapes (`\"`, `\\`); `None` if it never closes.
fn skip_labels(s: &str) -> Option<&str> {
    let mut in_quotes = false;
    let mut escaped = false;
    for (i, c) in s.char_indices().skip(1) {
        match c {
            _ if escaped => escaped = false,
            '\\' if in_quotes => escaped = true,
            '"' => in_quotes = !in_quotes,
            '}' if !in_quotes => return Some(&s[i + 1..]),
            _ => {}
        }
    }
    None
}

/// One read of a gateway's pods, after the arithmetic.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Round {
    /// Request rate of each pod that gave one (per second).
    pub rates: Vec<f64>,
    /// The same rates by pod, for what each pool's pods serve ([`crate::engine::capacity`]).
    pub per_pod: Vec<(String, f64)>,
    /// Ready pods that gave no rate this time (not in the sample, failed, or a first read) but
    /// have been ready for [`WARM_SECONDS`]: each is taken to serve the mean of those read.
    pub unread_serving: usize,
    /// The pods that gave none, and why (a first read of a pod gives a baseline, not a failure).
    pub failures: Vec<(String, PodError)>,
}

impl Round {
    /// The fleet's rate: what the pods read serve, plus their mean for each unread pod that is
    /// serving (the load balancer spreads requests over its backends). On a fleet no larger
    /// than the sample that is the sum over the pods that serve. `None` when no pod gave a rate.
    pub fn sample(&self) -> Option<FastSample> {
        if self.rates.is_empty() {
            return None;
        }
        let sum = self.rates.iter().sum::<f64>();
        let mean = sum / self.rates.len() as f64;
        Some(FastSample {
            rps: sum + mean * self.unread_serving as f64,
            pods_read: i32::try_from(self.rates.len()).unwrap_or(i32::MAX),
        })
    }
}

/// The recent counter readings of each pod of one gateway. Pure: the caller passes the time (on
/// a monotonic clock, in seconds).
#[derive(Clone, Debug, Default)]
pub struct Counters {
    /// `(time, counter)` per pod over the last [`MAX_RATE_SECONDS`], oldest first.
    readings: HashMap<String, VecDeque<(f64, f64)>>,
    /// When each ready pod was first seen ready.
    ready_since: HashMap<String, f64>,
}

impl Counters {
    /// The pods to read from `candidates`: those with a baseline first (so that most reads give
    /// a rate), then the others, each group by name; at most `max`.
    pub fn sample<'a>(&self, candidates: &'a [Target], max: usize) -> Vec<&'a Target> {
        let mut known: Vec<&Target> = Vec::new();
        let mut fresh: Vec<&Target> = Vec::new();
        for t in candidates {
            if self.readings.contains_key(&t.pod) {
                known.push(t);
            } else {
                fresh.push(t);
            }
        }
        known.sort_by(|a, b| a.pod.cmp(&b.pod));
        fresh.sort_by(|a, b| a.pod.cmp(&b.pod));
        known.into_iter().chain(fresh).take(max).collect()
    }

    /// Takes one read at `now`: `(pod, time of the answer, counter or error)` per pod read;
    /// `live` are the ready pods. Pods not in `live` (gone, not ready) are forgotten. A pod
    /// gives a rate when one of its readings is [`MIN_RATE_SECONDS`] to [`MAX_RATE_SECONDS`]
    /// old; a counter lower than the last reading (a restart) starts its readings afresh.
    pub fn observe(
        &mut self,
        now: f64,
        reads: Vec<(String, f64, Result<f64, PodError>)>,
        live: &HashSet<&str>,
    ) -> Round {
        self.readings.retain(|pod, _| live.contains(pod.as_str()));
        self.ready_since
            .retain(|pod, _| live.contains(pod.as_str()));
        for pod in live {
            self.ready_since.entry((*pod).to_string()).or_insert(now);
        }
        let mut round = Round::default();
        let mut with_rate: HashSet<String> = HashSet::new();
        for (pod, at, read) in reads {
            let value = match read {
                Ok(v) => v,
                Err(e) => {
                    round.failures.push((pod, e));
                    continue;
                }
            };
            let history = self.readings.entry(pod.clone()).or_default();
            if let Some(&(_, last)) = history.back().filter(|(_, v)| value < *v) {
                history.clear();
                history.push_back((at, value));
                round.failures.push((
                    pod,
                    PodError::Reset {
                        from: last,
                        to: value,
                    },
                ));
                continue;
            }
            while history
                .front()
                .is_some_and(|(t, _)| at - t > MAX_RATE_SECONDS)
            {
                history.pop_front();
            }
            let reference = history
                .iter()
                .rev()
                .find(|(t, _)| at - t >= MIN_RATE_SECONDS)
                .copied();
            history.push_back((at, value));
            if let Some((t0, v0)) = reference {
                let rate = (value - v0) / (at - t0);
                round.rates.push(rate);
                round.per_pod.push((pod.clone(), rate));
                with_rate.insert(pod);
            }
        }
        round.unread_serving = self
            .ready_since
            .iter()
            .filter(|(pod, since)| !with_rate.contains(*pod) && now - **since >= WARM_SECONDS)
            .count();
        round
    }
}

/// Reads gateway pods' counters over HTTP, keeping each gateway's [`Counters`].
pub struct FastPath {
    config: FastPathConfig,
    client: reqwest::Client,
    /// The monotonic origin of the times given to [`Counters`].
    origin: Instant,
    gateways: Mutex<HashMap<crate::model::GatewayKey, Counters>>,
}

impl FastPath {
    pub fn new(config: FastPathConfig) -> Result<Self, crate::Error> {
        let client = reqwest::Client::builder()
            // Pod addresses are in-cluster: a proxy set for the agent's egress must not catch them.
            .no_proxy()
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .pool_max_idle_per_host(1)
            .build()
            .map_err(|e| crate::Error::Config(format!("fast path HTTP client: {e}")))?;
        Ok(Self {
            config,
            client,
            origin: Instant::now(),
            gateways: Mutex::new(HashMap::new()),
        })
    }

    pub fn config(&self) -> &FastPathConfig {
        &self.config
    }

    /// Reads a sample of `targets` (the gateway's ready pods with an address) and returns what
    /// they say; [`Round::sample`] scales it to the serving fleet.
    pub async fn read(&self, gateway: &crate::model::GatewayKey, targets: &[Target]) -> Round {
        let sample: Vec<Target> = {
            let gws = self.gateways();
            let counters = gws.get(gateway);
            match counters {
                Some(c) => c.sample(targets, self.config.max_pods),
                None => Counters::default().sample(targets, self.config.max_pods),
            }
            .into_iter()
            .cloned()
            .collect()
        };
        let reads = self.probe(&sample).await;
        let live: HashSet<&str> = targets.iter().map(|t| t.pod.as_str()).collect();
        let now = self.origin.elapsed().as_secs_f64();
        self.gateways()
            .entry(gateway.clone())
            .or_default()
            .observe(now, reads, &live)
    }

    /// Reads every one of `targets` once, concurrently: `(pod, when answered, counter)`, the
    /// time on the clock [`Counters`] is given.
    pub async fn probe(&self, targets: &[Target]) -> Vec<(String, f64, Result<f64, PodError>)> {
        futures::future::join_all(targets.iter().map(|t| async move {
            let read = self.read_pod(t).await;
            (t.pod.clone(), self.origin.elapsed().as_secs_f64(), read)
        }))
        .await
    }

    /// Forgets a gateway that is gone.
    pub fn forget(&self, gateway: &crate::model::GatewayKey) {
        self.gateways().remove(gateway);
    }

    fn gateways(&self) -> std::sync::MutexGuard<'_, HashMap<crate::model::GatewayKey, Counters>> {
        self.gateways
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn read_pod(&self, t: &Target) -> Result<f64, PodError> {
        let url = format!(
            "http://{}{}",
            std::net::SocketAddr::new(t.ip, self.config.port),
            self.config.path
        );
        let classify = |e: reqwest::Error| {
            if e.is_timeout() {
                PodError::Timeout(self.config.timeout)
            } else {
                PodError::Unreachable(short_error(&e))
            }
        };
        let mut resp = self.client.get(&url).send().await.map_err(classify)?;
        if !resp.status().is_success() {
            return Err(PodError::Status(resp.status().as_u16()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(classify)? {
            if body.len() + chunk.len() > MAX_BODY_BYTES {
                return Err(PodError::Garbage(format!(
                    "body larger than {MAX_BODY_BYTES} bytes"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        let text = std::str::from_utf8(&body)
            .map_err(|_| PodError::Garbage("body is not UTF-8".into()))?;
        counter_sum(text, &self.config.metric).map_err(PodError::Garbage)
    }
}

/// The innermost cause of a reqwest error: "connection refused", not the whole chain.
fn short_error(e: &reqwest::Error) -> String {
    let mut cause: &dyn std::error::Error = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

#[cfg(test)]
mod tests;
