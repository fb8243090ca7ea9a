//! The fast path: the gateway pods' own request counters, read straight from their Envoys
//! (`:15090/stats/prometheus`) every second or two, as Knative's autoscaler reads its proxies.
//!
//! Through Prometheus a surge is seen a scrape interval plus a `rate()` window late; the pods'
//! counters show it within one read. The engine lets this reading only *raise* the count
//! ([`crate::model::FastSample`]); Prometheus stays the source for scale-down. So every fault
//! here (a pod that cannot be reached, a timeout, a redirect, a body that is not an exposition
//! or too large, a counter that went back to zero on a restart, a pod gone mid-read) makes that
//! pod missing from this read and nothing else: a read with no usable pod is no reading at all.
//!
//! One pod must not be able to steer the fleet: its body is parsed as it streams in, within a
//! byte cap, holding one line at a time; its counter is followed series by series, so a series
//! that vanishes and comes back is not a reset and then a jump of its whole count; and its rate
//! counts at most [`PEER_FACTOR`] times the busiest of its peers (or the policy's target per
//! pod, whichever is higher) before it can raise the count.
//!
//! [`Counters`] holds the arithmetic and is pure (the caller passes the time); [`FastPath`] does
//! the HTTP.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::model::{Drain, FastSample};

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
/// The most open connections or requests in flight one pod's proxy is believed to report (a
/// proxy is bounded by its file descriptors, about a million at most): above it the pod's
/// drain is unknown.
pub const MAX_DRAIN_GAUGE: f64 = 10_000_000.0;
/// A pod ready for less than this and not read this time is assumed to serve nothing yet: a
/// load balancer adds a new backend seconds after it turns ready (endpoints, then the cloud
/// load balancer's sync), so counting it at the others' mean would overstate the load exactly
/// when the fleet grows.
pub const WARM_SECONDS: f64 = 5.0;
/// Largest body read from one pod (Envoy's full stats on a big mesh run to a few MiB). The
/// body is parsed as it arrives, so this bounds the time a read takes, not its memory.
pub const MAX_BODY_BYTES: usize = 16 << 20;
/// Longest line held while a body streams in (Envoy's lines run to a few hundred bytes): a
/// longer sample of the counter is an error, any other longer line is skipped.
pub const MAX_LINE_BYTES: usize = 64 << 10;
/// Most series of the counter one pod may show (a gateway's `istio_requests_total` has one per
/// destination, response code and flags: hundreds, a few thousand on a big mesh).
pub const MAX_SERIES: usize = 20_000;
/// A pod's rate counts at most this many times the busiest other pod read at the same time,
/// or the policy's target per pod when that is higher. Behind one load balancer pods serve
/// within a small factor of each other (long-lived connections pinned to old pods make the
/// widest spread); a pod far above every peer is broken or lying, and one pod alone must not
/// take the fleet to `maxReplicas`. Prometheus, which follows every pod, still sees a real
/// surge that only one pod carries.
pub const PEER_FACTOR: f64 = 4.0;

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
    /// A rate far above every peer's (and the target per pod): counted at the bound only.
    #[error("rate {}/s above {bound:.0}/s, {PEER_FACTOR} times its busiest peer or the target per pod: counted at that", shown(*.rate))]
    Implausible { rate: f64, bound: f64 },
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
            PodError::Implausible { .. } => "implausible",
        }
    }
}

/// Every `kind` of [`PodError`].
pub const FAILURE_KINDS: [&str; 6] = [
    "unreachable",
    "timeout",
    "http_status",
    "garbage",
    "reset",
    "implausible",
];

/// One reading of a pod's counter: each series' value, keyed by a hash of its label set (the
/// label text as the pod wrote it; Envoy writes a series' labels in one order); and what the
/// same body says of the pod's live connections and requests, when it says it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Series(HashMap<u64, f64>, Option<Drain>);

/// The gauge of a gateway's open downstream connections, one series per listener. Istio keeps
/// it in every proxy's stats whatever `proxyStatsMatcher` says (pilot-agent reads it to drain).
pub const CONNECTIONS_GAUGE: &str = "envoy_listener_downstream_cx_active";
/// The gauge of requests in flight, one series per HTTP connection manager.
pub const REQUESTS_GAUGE: &str = "envoy_http_downstream_rq_active";
/// Label values of the proxy's own listeners (Prometheus stats on 15090, health on 15021):
/// their connections are the scrapers' and the kubelet's, not clients'.
const OWN_LISTENERS: [&str; 4] = ["_15090\"", "_15021\"", "=\"stats\"", "=\"agent\""];

impl Series {
    /// A counter of one unlabelled series.
    pub fn one(value: f64) -> Self {
        Self(HashMap::from([(series_key(""), value)]), None)
    }

    /// The same with the pod's live work.
    pub fn with_drain(mut self, drain: Option<Drain>) -> Self {
        self.1 = drain;
        self
    }

    /// What the pod's Envoy said of its live connections and requests (`None` when its stats
    /// lack the connection gauge, or it read as no number).
    pub fn drain(&self) -> Option<Drain> {
        self.1
    }

    /// The sum over the series.
    pub fn total(&self) -> f64 {
        self.0.values().sum()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fn series_key(labels: &str) -> u64 {
    // SipHash with fixed keys: the same label text gives the same key in every reading.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    labels.hash(&mut h);
    h.finish()
}

/// Parses one exposition of `metric` as it streams in, chunk by chunk, holding at most one
/// line ([`MAX_LINE_BYTES`]) beside the series read so far: a pod's large body costs time
/// within [`MAX_BODY_BYTES`], not memory.
pub struct CounterParser<'m> {
    metric: &'m str,
    line: Vec<u8>,
    overlong: bool,
    bytes: usize,
    series: HashMap<u64, f64>,
    /// Open connections and requests in flight summed so far; `None` once a sample of either
    /// is not a number (the pod's drain is then unknown, its counter still read).
    connections: Option<Option<f64>>,
    requests: Option<Option<f64>>,
}

impl<'m> CounterParser<'m> {
    pub fn new(metric: &'m str) -> Self {
        Self {
            metric,
            line: Vec::new(),
            overlong: false,
            bytes: 0,
            series: HashMap::new(),
            connections: Some(None),
            requests: Some(None),
        }
    }

    /// Takes the next bytes of the body.
    pub fn feed(&mut self, mut chunk: &[u8]) -> Result<(), String> {
        self.bytes += chunk.len();
        if self.bytes > MAX_BODY_BYTES {
            return Err(format!("body larger than {MAX_BODY_BYTES} bytes"));
        }
        while let Some(end) = chunk.iter().position(|b| *b == b'\n') {
            self.hold(&chunk[..end]);
            self.end_line()?;
            chunk = &chunk[end + 1..];
        }
        self.hold(chunk);
        Ok(())
    }

    /// The series read, once the body has ended. No sample of the counter is an error.
    pub fn finish(mut self) -> Result<Series, String> {
        if !self.line.is_empty() || self.overlong {
            self.end_line()?;
        }
        if self.series.is_empty() {
            return Err(format!("no {} sample", self.metric));
        }
        // Without the connection gauge there is nothing to choose by; requests alone would
        // rank an idle websocket pod as empty. A count no proxy holds is garbage: it would
        // switch the reset budget off.
        let plausible = |v: &f64| v.is_finite() && *v <= MAX_DRAIN_GAUGE;
        let drain = match (self.connections, self.requests) {
            (Some(Some(connections)), requests) if plausible(&connections) => Some(Drain {
                connections,
                requests: requests.flatten().filter(plausible).unwrap_or(0.0),
            }),
            _ => None,
        };
        Ok(Series(self.series, drain))
    }

    /// Adds a sample of one of the drain gauges to `sum`, unless it is one of the proxy's own
    /// listeners; a sample that is not a count makes the gauge unknown for this read.
    fn gauge(line: &[u8], name: &str, sum: &mut Option<Option<f64>>) {
        let Some(rest) = line.strip_prefix(name.as_bytes()) else {
            return;
        };
        if !matches!(rest.first(), Some(b'{' | b' ' | b'\t')) || sum.is_none() {
            return;
        }
        let parsed = std::str::from_utf8(line)
            .ok()
            .and_then(|text| sample(text, name.len()).ok());
        *sum = match parsed {
            Some((labels, _)) if OWN_LISTENERS.iter().any(|own| labels.contains(own)) => *sum,
            Some((_, v)) => Some(Some(sum.flatten().unwrap_or(0.0) + v)),
            None => None,
        };
    }

    fn hold(&mut self, part: &[u8]) {
        let room = MAX_LINE_BYTES - self.line.len();
        if part.len() > room {
            self.overlong = true;
        }
        self.line.extend_from_slice(&part[..part.len().min(room)]);
    }

    /// Takes the line held, then clears it (the buffer is kept for the next).
    fn end_line(&mut self) -> Result<(), String> {
        let overlong = std::mem::take(&mut self.overlong);
        let mut line = std::mem::take(&mut self.line);
        let taken = self.take_line(&line, overlong);
        line.clear();
        self.line = line;
        taken
    }

    fn take_line(&mut self, line: &[u8], overlong: bool) -> Result<(), String> {
        if line.starts_with(b"envoy_") && !overlong {
            Self::gauge(line, CONNECTIONS_GAUGE, &mut self.connections);
            Self::gauge(line, REQUESTS_GAUGE, &mut self.requests);
        }
        let Some(rest) = line.strip_prefix(self.metric.as_bytes()) else {
            return Ok(());
        };
        // Another family sharing the prefix (`metric_bucket`, `metricfoo`), or a bare name.
        if !matches!(rest.first(), Some(b'{' | b' ' | b'\t')) {
            return Ok(());
        }
        if overlong {
            return Err(format!(
                "a {} line longer than {MAX_LINE_BYTES} bytes",
                self.metric
            ));
        }
        let text = std::str::from_utf8(line)
            .map_err(|_| format!("a {} line that is not UTF-8", self.metric))?;
        let (labels, value) = sample(text, self.metric.len())?;
        let key = series_key(labels);
        if !self.series.contains_key(&key) && self.series.len() >= MAX_SERIES {
            return Err(format!("more than {MAX_SERIES} series of {}", self.metric));
        }
        *self.series.entry(key).or_insert(0.0) += value;
        Ok(())
    }
}

/// The label text and the value of a sample line `metric{…} value [timestamp]` or
/// `metric value [timestamp]`; `name_len` is the length of `metric`. The value must be a
/// finite number, not negative.
fn sample(line: &str, name_len: usize) -> Result<(&str, f64), String> {
    let rest = &line[name_len..];
    let after_labels = if rest.starts_with('{') {
        skip_labels(rest).ok_or_else(|| format!("unterminated labels: {line}"))?
    } else {
        rest
    };
    let labels = &rest[..rest.len() - after_labels.len()];
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
    Ok((labels, v))
}

/// `metric`'s series in a whole Prometheus text exposition (version 0.0.4, as Envoy serves
/// it). Other families are skipped unparsed; a sample of this one that is not a finite number,
/// or no sample at all, is an error.
pub fn parse_counter(body: &str, metric: &str) -> Result<Series, String> {
    let mut p = CounterParser::new(metric);
    p.feed(body.as_bytes())?;
    p.finish()
}

/// The sum of `metric`'s samples in a whole exposition ([`parse_counter`]).
pub fn counter_sum(body: &str, metric: &str) -> Result<f64, String> {
    parse_counter(body, metric).map(|s| s.total())
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
    /// What each pod read said of its live connections and requests (a first read and a
    /// restart's too: gauges need no baseline), or for a pod whose read failed, its last for
    /// [`MAX_RATE_SECONDS`]; pods whose stats lack them are not here.
    pub drains: Vec<(String, Drain)>,
    /// Ready pods that gave no rate this time (not in the sample, failed, or a first read) but
    /// have been ready for [`WARM_SECONDS`]: each is taken to serve the mean of those read.
    pub unread_serving: usize,
    /// The pods that gave none, and why (a first read of a pod gives a baseline, not a
    /// failure), and those whose rate was out of bounds ([`PodError::Implausible`]: counted at
    /// the bound).
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
    /// `(time, series)` per pod, oldest first: the newest reading at least
    /// [`MIN_RATE_SECONDS`] old (the next rate's reference; older ones can never be again) and
    /// those after it, none older than [`MAX_RATE_SECONDS`].
    readings: HashMap<String, VecDeque<(f64, Series)>>,
    /// When each ready pod was first seen ready.
    ready_since: HashMap<String, f64>,
    /// Each pod's last drain gauges and when they were read: a pod that misses one read keeps
    /// them for [`MAX_RATE_SECONDS`], so one timeout does not move its rank.
    drains: HashMap<String, (f64, Drain)>,
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
    /// `live` are the ready pods; `floor` is the rate per pod that is plausible whatever the
    /// peers read (the policy's target per pod). Pods not in `live` (gone, not ready) are
    /// forgotten. A pod gives a rate when one of its readings is [`MIN_RATE_SECONDS`] to
    /// [`MAX_RATE_SECONDS`] old: what its series present in both readings added (a series that
    /// appeared since adds nothing yet, one that went down adds nothing this time). When most
    /// of its series went down (a restart), or none is left of the last reading's, its
    /// readings start afresh. Each rate counts at most [`PEER_FACTOR`] times the higher of
    /// `floor` and the busiest other pod's rate.
    pub fn observe(
        &mut self,
        now: f64,
        reads: Vec<(String, f64, Result<Series, PodError>)>,
        live: &HashSet<&str>,
        floor: f64,
    ) -> Round {
        self.readings.retain(|pod, _| live.contains(pod.as_str()));
        self.ready_since
            .retain(|pod, _| live.contains(pod.as_str()));
        self.drains.retain(|pod, _| live.contains(pod.as_str()));
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
            if let Some(d) = value.drain() {
                round.drains.push((pod.clone(), d));
                self.drains.insert(pod.clone(), (at, d));
            }
            let history = self.readings.entry(pod.clone()).or_default();
            if let Some((_, last)) = history.back().filter(|(_, last)| restarted(last, &value)) {
                let from = last.total();
                let to = value.total();
                history.clear();
                history.push_back((at, value));
                round.failures.push((pod, PodError::Reset { from, to }));
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
                .rposition(|(t, _)| at - t >= MIN_RATE_SECONDS);
            let rate = reference.map(|i| {
                let (t0, v0) = &history[i];
                added(v0, &value) / (at - t0)
            });
            // Counters near f64::MAX can add up to infinity: that pod's reading is garbage,
            // never a rate (two such pods would otherwise lift each other's peer bound).
            if rate.is_some_and(|r| !r.is_finite()) {
                history.clear();
                history.push_back((at, value));
                round.failures.push((
                    pod,
                    PodError::Garbage("counters too large to give a finite rate".into()),
                ));
                continue;
            }
            // A later read's reference is this one or a newer reading: older ones go.
            history.drain(..reference.unwrap_or(0));
            history.push_back((at, value));
            if let Some(rate) = rate {
                round.per_pod.push((pod.clone(), rate));
                with_rate.insert(pod);
            }
        }
        for (pod, _) in &round.failures {
            if round.drains.iter().any(|(p, _)| p == pod) {
                continue;
            }
            if let Some((_, d)) = self
                .drains
                .get(pod)
                .filter(|(at, _)| now - at <= MAX_RATE_SECONDS)
            {
                round.drains.push((pod.clone(), *d));
            }
        }
        bound_by_peers(&mut round, floor);
        round.rates = round.per_pod.iter().map(|(_, r)| *r).collect();
        round.unread_serving = self
            .ready_since
            .iter()
            .filter(|(pod, since)| !with_rate.contains(*pod) && now - **since >= WARM_SECONDS)
            .count();
        round
    }
}

/// Whether `now` is the counter of a restarted proxy, against its `last` reading: most of
/// the series both show went down, or none of the last reading's series is left.
fn restarted(last: &Series, now: &Series) -> bool {
    let (mut common, mut down) = (0usize, 0usize);
    for (key, v) in &now.0 {
        if let Some(v0) = last.0.get(key) {
            common += 1;
            down += usize::from(v < v0);
        }
    }
    common == 0 || down * 2 > common
}

/// What the series present in both readings added from `then` to `now`. A series new since
/// (it may be one that vanished and came back with its whole count) adds nothing yet; one
/// that went down (its own reset) adds nothing this time: the fast path may only raise the
/// count, so it errs low.
fn added(then: &Series, now: &Series) -> f64 {
    now.0
        .iter()
        .filter_map(|(key, v)| then.0.get(key).map(|v0| (v - v0).max(0.0)))
        .sum()
}

/// Bounds each pod's rate by [`PEER_FACTOR`] times the higher of `floor` and the busiest other
/// pod's rate, and says which pods were bounded. A bound that is not positive (no floor and
/// idle peers) bounds nothing.
fn bound_by_peers(round: &mut Round, floor: f64) {
    let (mut first, mut second) = (0.0_f64, 0.0_f64);
    for (_, r) in &round.per_pod {
        if *r > first {
            second = first;
            first = *r;
        } else if *r > second {
            second = *r;
        }
    }
    for (pod, rate) in &mut round.per_pod {
        let busiest_other = if *rate >= first { second } else { first };
        let bound = PEER_FACTOR * busiest_other.max(floor);
        if bound > 0.0 && *rate > bound {
            round
                .failures
                .push((pod.clone(), PodError::Implausible { rate: *rate, bound }));
            *rate = bound;
        }
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
            // A pod's stats endpoint answers itself: a redirect would make the agent fetch
            // whatever address a pod names, every read.
            .redirect(reqwest::redirect::Policy::none())
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
    /// they say; [`Round::sample`] scales it to the serving fleet. `floor` is the rate per pod
    /// that is plausible whatever its peers read ([`Counters::observe`]).
    pub async fn read(
        &self,
        gateway: &crate::model::GatewayKey,
        targets: &[Target],
        floor: f64,
    ) -> Round {
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
            .observe(now, reads, &live, floor)
    }

    /// Reads every one of `targets` once, concurrently: `(pod, when answered, counter)`, the
    /// time on the clock [`Counters`] is given.
    pub async fn probe(&self, targets: &[Target]) -> Vec<(String, f64, Result<Series, PodError>)> {
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

    async fn read_pod(&self, t: &Target) -> Result<Series, PodError> {
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
        if resp
            .content_length()
            .is_some_and(|n| n > MAX_BODY_BYTES as u64)
        {
            return Err(PodError::Garbage(format!(
                "body larger than {MAX_BODY_BYTES} bytes"
            )));
        }
        let mut parser = CounterParser::new(&self.config.metric);
        while let Some(chunk) = resp.chunk().await.map_err(classify)? {
            parser.feed(&chunk).map_err(PodError::Garbage)?;
        }
        parser.finish().map_err(PodError::Garbage)
    }
}

/// A rate for a message: whole numbers, or powers of ten when a forged counter makes it huge.
fn shown(rate: f64) -> String {
    if rate < 1e12 {
        format!("{rate:.0}")
    } else {
        format!("{rate:.2e}")
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
