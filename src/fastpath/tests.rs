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

fn live<'a>(pods: &[&'a str]) -> HashSet<&'a str> {
    pods.iter().copied().collect()
}

#[test]
fn rates_come_from_the_second_read_of_a_pod() {
    let mut c = Counters::default();
    let first = c.observe(
        10.0,
        vec![("a".into(), 10.0, Ok(100.0)), ("b".into(), 10.0, Ok(50.0))],
        &live(&["a", "b"]),
    );
    assert!(first.rates.is_empty() && first.failures.is_empty());
    assert_eq!(first.sample(), None, "a read with no rate is no reading");
    let second = c.observe(
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
    c.observe(
        0.0,
        vec![("a".into(), 0.0, Ok(0.0)), ("b".into(), 0.0, Ok(0.0))],
        &fleet,
    );
    let r = c.observe(
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
    let r = c.observe(
        WARM_SECONDS + 2.0,
        vec![
            ("a".into(), WARM_SECONDS + 2.0, Ok(900.0)),
            ("b".into(), WARM_SECONDS + 2.0, Ok(1900.0)),
        ],
        &grown,
    );
    assert_eq!(r.unread_serving, 2);
    assert_eq!(r.sample().map(|s| s.rps), Some(800.0));
    let r = c.observe(
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
    c.observe(0.0, vec![("a".into(), 0.0, Ok(5000.0))], &live(&["a"]));
    let r = c.observe(2.0, vec![("a".into(), 2.0, Ok(40.0))], &live(&["a"]));
    assert!(r.rates.is_empty(), "no rate across a restart: {r:?}");
    assert_eq!(r.failures[0].1.kind(), "reset");
    assert_eq!(r.sample(), None, "a read with no rate is no reading");
    let r = c.observe(4.0, vec![("a".into(), 4.0, Ok(240.0))], &live(&["a"]));
    assert_eq!(r.rates, vec![100.0]);
}

#[test]
fn rates_span_at_least_a_second_and_stale_readings_start_afresh() {
    let mut c = Counters::default();
    c.observe(0.0, vec![("a".into(), 0.0, Ok(0.0))], &live(&["a"]));
    let soon = c.observe(0.1, vec![("a".into(), 0.1, Ok(90.0))], &live(&["a"]));
    assert!(soon.rates.is_empty());
    let r = c.observe(1.0, vec![("a".into(), 1.0, Ok(100.0))], &live(&["a"]));
    assert_eq!(r.rates, vec![100.0], "the rate spans the reading 1 s old");

    let late = c.observe(100.0, vec![("a".into(), 100.0, Ok(200.0))], &live(&["a"]));
    assert!(late.rates.is_empty(), "a 99 s span is not a fast reading");
    let r = c.observe(102.0, vec![("a".into(), 102.0, Ok(400.0))], &live(&["a"]));
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
        rates.extend(
            c.observe(t, vec![("a".into(), t, Ok(v))], &live(&["a"]))
                .rates,
        );
    }
    assert_eq!(rates, vec![100.0; 5]);
}

#[test]
fn failed_and_vanished_pods_are_missing_and_forgotten() {
    let mut c = Counters::default();
    c.observe(
        0.0,
        vec![("a".into(), 0.0, Ok(0.0)), ("b".into(), 0.0, Ok(0.0))],
        &live(&["a", "b"]),
    );
    let r = c.observe(
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
    c.observe(3.0, vec![], &live(&["a"]));
    let r = c.observe(4.0, vec![("b".into(), 4.0, Ok(10.0))], &live(&["a", "b"]));
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
    c.observe(
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
    }

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
                let body = match pod {
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
        ];
        let port = serve(pods).await;
        // Nothing listens on this port of 127.0.0.7: refused.
        let fp = FastPath::new(FastPathConfig {
            port,
            timeout: Duration::from_millis(300),
            ..FastPathConfig::default()
        })
        .unwrap();
        let targets: Vec<Target> = (2..=6)
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
        let round = fp.read(&gw, &targets).await;
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
            )
            .await;
        assert_eq!(r.failures[0].1.kind(), "unreachable", "{r:?}");
        assert!(r.failures[0].1.to_string().contains("refused"), "{r:?}");
    }
}
