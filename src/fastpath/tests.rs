use super::*;

const BODY: &str = r#"# TYPE istio_requests_total counter
istio_requests_total{reporter="source",response_code="200",destination_service_name="a{b}\"c"} 1200
istio_requests_total{reporter="source",response_code="503"} 34 1700000000000
# TYPE istio_requests_total_bucket counter
istio_requests_total_bucket{le="1"} 99999
istio_request_duration_milliseconds_sum{reporter="source"} 55.5
# TYPE envoy_server_total_connections gauge
envoy_server_total_connections{} 12
"#;

#[test]
fn sums_every_series_of_the_counter_and_nothing_else() {
    assert_eq!(counter_sum(BODY, "istio_requests_total"), Ok(1234.0));
    assert_eq!(
        counter_sum("istio_requests_total 7\n", "istio_requests_total"),
        Ok(7.0)
    );
}

#[test]
fn an_unusable_body_is_an_error_naming_what() {
    let absent = counter_sum("envoy_server_total_connections 3\n", "istio_requests_total");
    assert!(
        absent
            .unwrap_err()
            .contains("no istio_requests_total sample")
    );
    let nan = counter_sum(
        "istio_requests_total{a=\"b\"} NaN\n",
        "istio_requests_total",
    );
    assert!(nan.unwrap_err().contains("NaN"));
    let word = counter_sum(
        "istio_requests_total{a=\"b\"} lots\n",
        "istio_requests_total",
    );
    assert!(word.unwrap_err().contains("\"lots\""));
    let open = counter_sum("istio_requests_total{a=\"b} 3\n", "istio_requests_total");
    assert!(open.unwrap_err().contains("unterminated"));
    let negative = counter_sum("istio_requests_total -4\n", "istio_requests_total");
    assert!(negative.is_err());
    assert!(counter_sum("<html>502 Bad Gateway</html>", "istio_requests_total").is_err());
}

impl Counters {
    /// [`Counters::observe`] of single-series counters, with no floor.
    fn see(
        &mut self,
        now: f64,
        reads: Vec<(String, f64, Result<f64, PodError>)>,
        live: &HashSet<&str>,
    ) -> Round {
        let reads = reads
            .into_iter()
            .map(|(pod, at, r)| (pod, at, r.map(Series::one)))
            .collect();
        self.observe(now, reads, live, 0.0)
    }
}

fn live<'a>(pods: &[&'a str]) -> HashSet<&'a str> {
    pods.iter().copied().collect()
}

#[test]
fn rates_come_from_the_second_read_of_a_pod() {
    let mut c = Counters::default();
    let first = c.see(
        10.0,
        vec![("a".into(), 10.0, Ok(100.0)), ("b".into(), 10.0, Ok(50.0))],
        &live(&["a", "b"]),
    );
    assert!(first.rates.is_empty() && first.failures.is_empty());
    assert_eq!(first.sample(), None, "a read with no rate is no reading");
    let second = c.see(
        12.0,
        vec![("a".into(), 12.0, Ok(300.0)), ("b".into(), 12.0, Ok(250.0))],
        &live(&["a", "b"]),
    );
    assert_eq!(second.rates, vec![100.0, 100.0]);
    assert_eq!(
        second.sample(),
        Some(FastSample {
            rps: 200.0,
            pods_read: 2
        })
    );
}

#[test]
fn unread_pods_count_at_the_mean_once_they_have_been_ready_a_while() {
    let mut c = Counters::default();
    let fleet = live(&["a", "b", "c", "d"]);
    // A sample of two ("a", "b") out of four ready pods.
    c.see(
        0.0,
        vec![("a".into(), 0.0, Ok(0.0)), ("b".into(), 0.0, Ok(0.0))],
        &fleet,
    );
    let r = c.see(
        WARM_SECONDS,
        vec![
            ("a".into(), WARM_SECONDS, Ok(500.0)),
            ("b".into(), WARM_SECONDS, Ok(1500.0)),
        ],
        &fleet,
    );
    // "c" and "d" are unread, ready for WARM_SECONDS: each serves the mean (200/s).
    assert_eq!(r.sample().map(|s| s.rps), Some(800.0));
    // A pod just turned ready is not yet a backend of the load balancer: not counted, so a
    // growing fleet does not inflate the reading.
    let grown = live(&["a", "b", "c", "d", "e", "f"]);
    let r = c.see(
        WARM_SECONDS + 2.0,
        vec![
            ("a".into(), WARM_SECONDS + 2.0, Ok(900.0)),
            ("b".into(), WARM_SECONDS + 2.0, Ok(1900.0)),
        ],
        &grown,
    );
    assert_eq!(r.unread_serving, 2);
    assert_eq!(r.sample().map(|s| s.rps), Some(800.0));
    let r = c.see(
        2.0 * WARM_SECONDS + 2.0,
        vec![
            ("a".into(), 2.0 * WARM_SECONDS + 2.0, Ok(1400.0)),
            ("b".into(), 2.0 * WARM_SECONDS + 2.0, Ok(2400.0)),
        ],
        &grown,
    );
    assert_eq!(r.unread_serving, 4);
    assert_eq!(r.sample().map(|s| s.rps), Some(600.0));
}

#[test]
fn a_reset_counter_is_a_new_baseline_not_a_drop_in_load() {
    let mut c = Counters::default();
    c.see(0.0, vec![("a".into(), 0.0, Ok(5000.0))], &live(&["a"]));
    let r = c.see(2.0, vec![("a".into(), 2.0, Ok(40.0))], &live(&["a"]));
    assert!(r.rates.is_empty(), "no rate across a restart: {r:?}");
    assert_eq!(r.failures[0].1.kind(), "reset");
    assert_eq!(r.sample(), None, "a read with no rate is no reading");
    let r = c.see(4.0, vec![("a".into(), 4.0, Ok(240.0))], &live(&["a"]));
    assert_eq!(r.rates, vec![100.0]);
}

#[test]
fn rates_span_at_least_a_second_and_stale_readings_start_afresh() {
    let mut c = Counters::default();
    c.see(0.0, vec![("a".into(), 0.0, Ok(0.0))], &live(&["a"]));
    let soon = c.see(0.1, vec![("a".into(), 0.1, Ok(90.0))], &live(&["a"]));
    assert!(soon.rates.is_empty());
    let r = c.see(1.0, vec![("a".into(), 1.0, Ok(100.0))], &live(&["a"]));
    assert_eq!(r.rates, vec![100.0], "the rate spans the reading 1 s old");

    let late = c.see(100.0, vec![("a".into(), 100.0, Ok(200.0))], &live(&["a"]));
    assert!(late.rates.is_empty(), "a 99 s span is not a fast reading");
    let r = c.see(102.0, vec![("a".into(), 102.0, Ok(400.0))], &live(&["a"]));
    assert_eq!(r.rates, vec![100.0]);
}

#[test]
fn a_counter_that_advances_in_lumps_reads_steady() {
    // Read every half second, the counter adds 100 every second: each rate spans the newest
    // reading at least 1 s old, so it reads 100/s each time, not 200 and 0 in turn.
    let mut c = Counters::default();
    let mut rates = vec![];
    for (i, v) in [0.0, 0.0, 100.0, 100.0, 200.0, 200.0, 300.0]
        .into_iter()
        .enumerate()
    {
        let t = i as f64 * 0.5;
        rates.extend(c.see(t, vec![("a".into(), t, Ok(v))], &live(&["a"])).rates);
    }
    assert_eq!(rates, vec![100.0; 5]);
}

#[test]
fn failed_and_vanished_pods_are_missing_and_forgotten() {
    let mut c = Counters::default();
    c.see(
        0.0,
        vec![("a".into(), 0.0, Ok(0.0)), ("b".into(), 0.0, Ok(0.0))],
        &live(&["a", "b"]),
    );
    let r = c.see(
        2.0,
        vec![
            ("a".into(), 2.0, Err(PodError::Status(503))),
            ("b".into(), 2.0, Ok(200.0)),
        ],
        &live(&["a", "b"]),
    );
    assert_eq!(r.rates, vec![100.0]);
    assert_eq!(r.failures.len(), 1);
    // "b" left the fleet: forgotten, so a pod of that name later starts from a new baseline.
    c.see(3.0, vec![], &live(&["a"]));
    let r = c.see(4.0, vec![("b".into(), 4.0, Ok(10.0))], &live(&["a", "b"]));
    assert!(r.rates.is_empty() && r.failures.is_empty());
}

#[test]
fn the_sample_is_bounded_and_prefers_pods_with_a_baseline() {
    let ip: IpAddr = "127.0.0.1".parse().unwrap();
    let targets: Vec<Target> = (0..40)
        .map(|i| Target {
            pod: format!("gw-{i:02}"),
            ip,
        })
        .collect();
    let mut c = Counters::default();
    let names = |s: Vec<&Target>| s.into_iter().map(|t| t.pod.clone()).collect::<Vec<_>>();
    assert_eq!(names(c.sample(&targets, 3)), ["gw-00", "gw-01", "gw-02"]);
    let all: HashSet<&str> = targets.iter().map(|t| t.pod.as_str()).collect();
    c.see(
        0.0,
        vec![
            ("gw-30".into(), 0.0, Ok(1.0)),
            ("gw-31".into(), 0.0, Ok(1.0)),
        ],
        &all,
    );
    assert_eq!(names(c.sample(&targets, 3)), ["gw-30", "gw-31", "gw-00"]);
    assert_eq!(c.sample(&targets, 16).len(), 16);
}

/// A body of `istio_requests_total` series, each `(labels, value)`.
fn exposition(series: &[(&str, f64)]) -> String {
    let mut body = String::from("# TYPE istio_requests_total counter\n");
    for (labels, v) in series {
        body.push_str(&format!("istio_requests_total{{{labels}}} {v}\n"));
    }
    body
}

fn counter(series: &[(&str, f64)]) -> Result<Series, PodError> {
    Ok(parse_counter(&exposition(series), "istio_requests_total").unwrap())
}

/// Issue 30: a series that vanishes and comes back was a reset (the sum went down) and then a
/// jump of its whole count (4 -> 40 pods). Followed series by series, it adds nothing while
/// gone and nothing on its return; the others keep giving the rate.
#[test]
fn a_series_that_vanishes_and_returns_is_neither_a_reset_nor_a_jump() {
    let mut c = Counters::default();
    let pods = live(&["a"]);
    let read = |c: &mut Counters, t: f64, series: &[(&str, f64)]| {
        c.observe(t, vec![("a".into(), t, counter(series))], &pods, 500.0)
    };
    let both = |ok: f64| [(r#"code="200""#, ok), (r#"code="503""#, 1_000_000.0)];
    read(&mut c, 0.0, &both(0.0));
    assert_eq!(read(&mut c, 2.0, &both(200.0)).rates, vec![100.0]);
    // The 503 series (a million requests) is gone from this body: no reset, the 200s go on.
    let r = read(&mut c, 4.0, &[(r#"code="200""#, 400.0)]);
    assert!(r.failures.is_empty(), "{r:?}");
    assert_eq!(r.rates, vec![100.0]);
    // It comes back with its whole count: nothing added for it.
    let r = read(&mut c, 6.0, &both(600.0));
    assert_eq!(r.rates, vec![100.0]);
    // A series seen for the first time adds from its second reading on.
    let r = read(
        &mut c,
        8.0,
        &[
            (r#"code="200""#, 800.0),
            (r#"code="503""#, 1_000_000.0),
            (r#"code="404""#, 50.0),
        ],
    );
    assert_eq!(r.rates, vec![100.0]);
    let r = read(
        &mut c,
        10.0,
        &[
            (r#"code="200""#, 1000.0),
            (r#"code="503""#, 1_000_100.0),
            (r#"code="404""#, 50.0),
        ],
    );
    assert_eq!(r.rates, vec![150.0]);
}

/// A restarted proxy: most series went down, or none of the last reading's is left. A new
/// baseline, as a single counter's reset is; one series that went down alone adds nothing.
#[test]
fn a_restart_is_most_series_going_down() {
    let mut c = Counters::default();
    let pods = live(&["a"]);
    let series = |a: f64, b: f64, d: f64| [("x=\"a\"", a), ("x=\"b\"", b), ("x=\"d\"", d)];
    let read = |c: &mut Counters, t: f64, s: &[(&str, f64)]| {
        c.observe(t, vec![("a".into(), t, counter(s))], &pods, 500.0)
    };
    read(&mut c, 0.0, &series(100.0, 100.0, 100.0));
    // One series went down (its own reset): the others' 300 requests in 2 s count.
    let r = read(&mut c, 2.0, &series(200.0, 300.0, 5.0));
    assert!(r.failures.is_empty(), "{r:?}");
    assert_eq!(r.rates, vec![150.0]);
    // Two of three went down: the proxy restarted.
    let r = read(&mut c, 4.0, &series(1.0, 2.0, 500.0));
    assert_eq!(r.failures[0].1.kind(), "reset", "{r:?}");
    assert!(r.rates.is_empty());
    assert_eq!(
        read(&mut c, 6.0, &series(21.0, 22.0, 520.0)).rates,
        vec![30.0]
    );
    // Entirely new series: a new baseline, not a rate of nothing.
    let r = read(&mut c, 8.0, &[("y=\"z\"", 7.0)]);
    assert_eq!(r.failures[0].1.kind(), "reset", "{r:?}");
}

/// Issue 30: a counter reading 1e300 on one pod took the fleet to `maxReplicas`. A pod's rate
/// counts at most PEER_FACTOR times the busiest other pod (or the target per pod, if higher),
/// and the round says which pod and by how much; a surge that every pod shows is not bounded.
#[test]
fn one_pod_cannot_steer_the_fleet() {
    let mut c = Counters::default();
    let names = ["a", "b", "c", "d"];
    let pods = live(&names);
    let read = |c: &mut Counters, t: f64, values: [f64; 4]| {
        let reads = names
            .iter()
            .zip(values)
            .map(|(p, v)| (p.to_string(), t, Ok(Series::one(v))))
            .collect();
        c.observe(t, reads, &pods, 500.0)
    };
    read(&mut c, 0.0, [0.0; 4]);
    let forged = read(&mut c, 2.0, [200.0, 200.0, 200.0, 1e300]);
    // 4 x max(100 busiest other, 500 target) = 2000/s for "d".
    assert_eq!(forged.rates, vec![100.0, 100.0, 100.0, 2000.0]);
    assert_eq!(forged.sample().map(|s| s.rps), Some(2300.0));
    let (pod, e) = &forged.failures[0];
    assert_eq!((pod.as_str(), e.kind()), ("d", "implausible"));
    assert!(e.to_string().contains("2000/s"), "{e}");
    // A real surge shows on every pod: 20x in two seconds, counted whole.
    let surge = read(&mut c, 4.0, [4200.0, 4200.0, 4200.0, 1e300 + 1.0]);
    assert_eq!(&surge.rates[..3], &[2000.0, 2000.0, 2000.0]);
    assert!(surge.failures.is_empty(), "{surge:?}");
    // A pod alone, with no peer read: bounded by the target per pod.
    let mut alone = Counters::default();
    let one = live(&["a"]);
    alone.observe(
        0.0,
        vec![("a".into(), 0.0, Ok(Series::one(0.0)))],
        &one,
        500.0,
    );
    let r = alone.observe(
        2.0,
        vec![("a".into(), 2.0, Ok(Series::one(1e9)))],
        &one,
        500.0,
    );
    assert_eq!(r.rates, vec![2000.0]);
    // Two pods whose series add up past f64::MAX: garbage, not two infinite rates that lift
    // each other's bound.
    let mut c = Counters::default();
    let pods = live(&["a", "b", "c"]);
    let huge = |v: f64| counter(&[("x=\"1\"", v), ("x=\"2\"", v)]);
    let read = |c: &mut Counters, t: f64, v: f64| {
        let reads = vec![
            ("a".to_string(), t, huge(v)),
            ("b".to_string(), t, huge(v)),
            ("c".to_string(), t, Ok(Series::one(t * 100.0))),
        ];
        c.observe(t, reads, &pods, 500.0)
    };
    read(&mut c, 0.0, 0.0);
    let r = read(&mut c, 2.0, f64::MAX);
    assert_eq!(r.rates, vec![100.0], "{r:?}");
    let kinds: Vec<&str> = r.failures.iter().map(|(_, e)| e.kind()).collect();
    assert_eq!(kinds, ["garbage", "garbage"]);
    assert_eq!(r.sample().map(|s| s.rps.is_finite()), Some(true));
}

/// The exposition is parsed as it streams in: any split into chunks reads the same; a long
/// line of another family is skipped, one of the counter is an error; the series and the
/// body are bounded.
#[test]
fn the_body_streams_line_by_line_within_bounds() {
    let long_other = format!(
        "envoy_cluster_x{{a=\"{}\"}} 1\n",
        "z".repeat(MAX_LINE_BYTES)
    );
    let body = format!("{long_other}{BODY}");
    let whole = parse_counter(&body, "istio_requests_total").unwrap();
    assert_eq!(whole.total(), 1234.0);
    assert_eq!(whole.len(), 2);
    for size in [1, 7, 4096] {
        let mut p = CounterParser::new("istio_requests_total");
        for chunk in body.as_bytes().chunks(size) {
            p.feed(chunk).unwrap();
        }
        assert_eq!(p.finish().as_ref(), Ok(&whole), "chunks of {size}");
    }
    // Without a final newline too.
    assert_eq!(
        counter_sum("istio_requests_total 7", "istio_requests_total"),
        Ok(7.0)
    );
    let long_ours = format!(
        "istio_requests_total{{a=\"{}\"}} 1\n",
        "z".repeat(MAX_LINE_BYTES)
    );
    let e = parse_counter(&long_ours, "istio_requests_total").unwrap_err();
    assert!(e.contains("longer than"), "{e}");
    let many: String = (0..=MAX_SERIES)
        .map(|i| format!("istio_requests_total{{n=\"{i}\"}} 1\n"))
        .collect();
    let e = parse_counter(&many, "istio_requests_total").unwrap_err();
    assert!(e.contains("more than 20000 series"), "{e}");
    let mut p = CounterParser::new("istio_requests_total");
    let chunk = vec![b'#'; 1 << 20];
    let fed: Result<Vec<()>, String> = (0..17).map(|_| p.feed(&chunk)).collect();
    assert!(fed.unwrap_err().contains("body larger than"));
}

/// Stand-in pods on one port, told apart by the loopback address they were reached on.
mod http {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[derive(Clone, Copy)]
    enum Pod {
        Counter(u64),
        Status500,
        Garbage,
        /// Reads the request and closes: gone mid-read.
        Vanish,
        /// Never answers.
        Silent,
        /// Sends the reader to 127.0.0.9 (where an internal service would answer).
        Redirect,
        /// The address a redirect names: counts every request it gets.
        Internal,
    }

    static INTERNAL_HITS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

    async fn serve(pods: Vec<(IpAddr, Pod)>) -> u16 {
        let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let mut held = Vec::new();
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                let ip = s.local_addr().unwrap().ip();
                let Some((_, pod)) = pods.iter().find(|(a, _)| *a == ip).copied() else {
                    continue;
                };
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let port = s.local_addr().unwrap().port();
                let body = match pod {
                    Pod::Redirect => {
                        let _ = s
                            .write_all(
                                format!("HTTP/1.1 302 Found\r\nlocation: http://127.0.0.9:{port}/secret\r\ncontent-length: 0\r\n\r\n")
                                    .as_bytes(),
                            )
                            .await;
                        continue;
                    }
                    Pod::Internal => {
                        INTERNAL_HITS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        "istio_requests_total 1\n".to_string()
                    }
                    Pod::Counter(n) => format!("istio_requests_total{{reporter=\"source\"}} {n}\n"),
                    Pod::Garbage => "<html>not metrics</html>".to_string(),
                    Pod::Status500 => {
                        let _ = s
                            .write_all(
                                b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\n\r\n",
                            )
                            .await;
                        continue;
                    }
                    Pod::Vanish => continue,
                    Pod::Silent => {
                        held.push(s);
                        continue;
                    }
                };
                let _ = s
                    .write_all(
                        format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                            body.len()
                        )
                        .as_bytes(),
                    )
                    .await;
            }
        });
        port
    }

    fn addr(n: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, n])
    }

    #[tokio::test]
    async fn every_fault_is_that_pods_missing_reading_and_says_which() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let pods = vec![
            (addr(2), Pod::Counter(1000)),
            (addr(3), Pod::Status500),
            (addr(4), Pod::Garbage),
            (addr(5), Pod::Vanish),
            (addr(6), Pod::Silent),
            (addr(8), Pod::Redirect),
            (addr(9), Pod::Internal),
        ];
        let port = serve(pods).await;
        // Nothing listens on this port of 127.0.0.7: refused.
        let fp = FastPath::new(FastPathConfig {
            port,
            timeout: Duration::from_millis(300),
            ..FastPathConfig::default()
        })
        .unwrap();
        let targets: Vec<Target> = [2, 3, 4, 5, 6, 8]
            .into_iter()
            .map(|n| Target {
                pod: format!("pod-{n}"),
                ip: addr(n),
            })
            .collect();
        let refused = {
            let l = std::net::TcpListener::bind("127.0.0.7:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let gw = crate::model::GatewayKey::new("istio-system", "gw");
        let round = fp.read(&gw, &targets, 500.0).await;
        assert!(
            round.rates.is_empty(),
            "a first read is a baseline: {round:?}"
        );
        let kinds: HashMap<String, &str> = round
            .failures
            .iter()
            .map(|(p, e)| (p.clone(), e.kind()))
            .collect();
        assert_eq!(kinds.get("pod-3"), Some(&"http_status"));
        assert_eq!(kinds.get("pod-4"), Some(&"garbage"));
        assert_eq!(kinds.get("pod-5"), Some(&"unreachable"));
        assert_eq!(kinds.get("pod-6"), Some(&"timeout"));
        // A redirect is that pod's failure, never followed to the address it names.
        assert_eq!(kinds.get("pod-8"), Some(&"http_status"));
        assert_eq!(INTERNAL_HITS.load(std::sync::atomic::Ordering::SeqCst), 0);
        assert!(!kinds.contains_key("pod-2"), "{round:?}");
        // A refused connection on a port where nothing listens.
        let other = FastPath::new(FastPathConfig {
            port: refused,
            ..FastPathConfig::default()
        })
        .unwrap();
        let r = other
            .read(
                &gw,
                &[Target {
                    pod: "x".into(),
                    ip: addr(7),
                }],
                500.0,
            )
            .await;
        assert_eq!(r.failures[0].1.kind(), "unreachable", "{r:?}");
        assert!(r.failures[0].1.to_string().contains("refused"), "{r:?}");
    }
}

/// A gateway's stats as Envoy writes them: the clients' listeners beside the proxy's own.
const DRAIN_BODY: &str = r#"# TYPE envoy_listener_downstream_cx_active gauge
envoy_listener_downstream_cx_active{listener_address="0.0.0.0_8080"} 40
envoy_listener_downstream_cx_active{listener_address="0.0.0.0_8443"} 2
envoy_listener_downstream_cx_active{listener_address="0.0.0.0_15090"} 3
envoy_listener_downstream_cx_active{listener_address="0.0.0.0_15021"} 1
# TYPE envoy_http_downstream_rq_active gauge
envoy_http_downstream_rq_active{http_conn_manager_prefix="outbound_0.0.0.0_8080"} 7
envoy_http_downstream_rq_active{http_conn_manager_prefix="stats"} 1
envoy_http_downstream_rq_active{http_conn_manager_prefix="agent"} 1
envoy_listener_downstream_cx_active_other 99
istio_requests_total{response_code="200"} 1200
"#;

#[test]
fn the_clients_connections_and_requests_ride_along_the_counter() {
    let s = parse_counter(DRAIN_BODY, "istio_requests_total").unwrap();
    assert_eq!(s.total(), 1200.0);
    assert_eq!(
        s.drain(),
        Some(Drain {
            connections: 42.0,
            requests: 7.0
        })
    );
}

#[test]
fn stats_without_the_connection_gauge_or_with_a_bad_one_say_nothing_of_drain() {
    // An older Envoy or a stats filter: the counter alone, drain unknown.
    assert_eq!(
        parse_counter(BODY, "istio_requests_total").unwrap().drain(),
        None
    );
    let requests_only = "envoy_http_downstream_rq_active{http_conn_manager_prefix=\"x\"} 4\nistio_requests_total 5\n";
    assert_eq!(
        parse_counter(requests_only, "istio_requests_total")
            .unwrap()
            .drain(),
        None
    );
    // A gauge that is no count: the pod's drain is unknown, its counter still read.
    let bad = DRAIN_BODY.replace("} 2\n", "} NaN\n");
    let s = parse_counter(&bad, "istio_requests_total").unwrap();
    assert_eq!((s.total(), s.drain()), (1200.0, None));
}

#[test]
fn a_round_carries_each_read_pods_drain_first_reads_included() {
    let mut c = Counters::default();
    let live: HashSet<&str> = ["a", "b"].into_iter().collect();
    let drain = |n: f64| {
        Some(Drain {
            connections: n,
            requests: 0.0,
        })
    };
    let round = c.observe(
        0.0,
        vec![
            (
                "a".into(),
                0.0,
                Ok(Series::one(10.0).with_drain(drain(5.0))),
            ),
            ("b".into(), 0.0, Ok(Series::one(10.0))),
        ],
        &live,
        0.0,
    );
    // No rate yet (a first read is a baseline), but the gauges need none.
    assert!(round.rates.is_empty());
    assert_eq!(round.drains, vec![("a".to_string(), drain(5.0).unwrap())]);
}

#[test]
fn a_pod_that_misses_a_read_keeps_its_last_drain_for_a_while() {
    let mut c = Counters::default();
    let live: HashSet<&str> = ["a"].into_iter().collect();
    let drain = Drain {
        connections: 7.0,
        requests: 1.0,
    };
    let timeout = || Err(PodError::Timeout(Duration::from_secs(1)));
    c.observe(
        0.0,
        vec![(
            "a".into(),
            0.0,
            Ok(Series::one(10.0).with_drain(Some(drain))),
        )],
        &live,
        0.0,
    );
    // One timeout does not move its rank: the last gauges stand in.
    let round = c.observe(2.0, vec![("a".into(), 2.0, timeout())], &live, 0.0);
    assert_eq!(round.drains, vec![("a".to_string(), drain)]);
    // A pod that stopped answering is unknown again (its pool's mean ranks it).
    let round = c.observe(
        MAX_RATE_SECONDS + 1.0,
        vec![("a".into(), MAX_RATE_SECONDS + 1.0, timeout())],
        &live,
        0.0,
    );
    assert!(round.drains.is_empty());
}

#[test]
fn a_gauge_no_proxy_could_hold_says_nothing_of_drain() {
    let huge = DRAIN_BODY.replace("} 2\n", "} 1e15\n");
    let s = parse_counter(&huge, "istio_requests_total").unwrap();
    assert_eq!((s.total(), s.drain()), (1200.0, None));
}
