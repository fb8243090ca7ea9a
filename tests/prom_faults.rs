//! Prometheus-side faults on a real Prometheus (Debian's package): per-pod answers with a
//! negative value and with two series for one pod, a range vector, and credentials in the URL.
//! The series are made by PromQL itself (`label_replace(vector(..))`), so nothing is scraped.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};

use spillway::model::LoadSample;
use spillway::prom::{PromAuth, PromConfig, Prometheus};
use support::prom::Prom;

fn client(url: String) -> Prometheus {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let token = std::env::temp_dir().join(format!("spillway-prom-faults-{}", std::process::id()));
    std::fs::write(&token, "sekret-bearer\n").unwrap();
    Prometheus::new(PromConfig {
        url,
        timeout: Duration::from_secs(10),
        auth: PromAuth {
            bearer_token_file: Some(token),
            ..PromAuth::default()
        },
        ca_pem: None,
        max_skew: Duration::from_secs(60),
    })
    .unwrap()
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// `pod` = `name` on a constant series (with an `x` label to tell duplicates apart).
fn series(pod: &str, x: &str, value: f64) -> String {
    format!(
        r#"label_replace(label_replace(vector({value}), "pod", "{pod}", "", ""), "x", "{x}", "", "")"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_per_pod_values_from_a_real_prometheus_are_missing_for_that_pod() {
    let dir = tempfile::tempdir().unwrap();
    let prom = Prom::start(dir.path(), &[]);
    let p = client(format!("http://spill:hunter22@127.0.0.1:{}", prom.port));
    // Up within a bound (a start-up, not a synchronisation by sleep).
    let deadline = Instant::now() + Duration::from_secs(60);
    while matches!(p.query("vector(1)", now()).await, LoadSample::Missing(_)) {
        assert!(Instant::now() < deadline, "Prometheus did not start");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let q = [
        series("a", "1", -500.0),
        series("b", "1", 7.0),
        series("c", "1", 1.0),
        series("c", "2", 900.0),
        series("e", "1", 3.0),
    ]
    .join(" or ");
    let mut got = match p.query(&q, now()).await {
        LoadSample::PerPod(v) => v,
        other => panic!("expected per-pod values, got {other:?}"),
    };
    got.sort_by(|x, y| x.0.cmp(&y.0));
    assert_eq!(got, vec![("b".to_string(), 7.0), ("e".to_string(), 3.0)]);

    // A range vector is refused by `check`, and answered as missing if it gets here anyway.
    let LoadSample::Missing(why) = p.query("prometheus_build_info[1m]", now()).await else {
        panic!("a range vector gave a value")
    };
    assert!(why.contains("range vector"), "{why}");

    // A failing query's reason names no credential.
    let down = client(format!(
        "http://spill:hunter22@127.0.0.1:{}/?token=tok999",
        support::prom::free_port()
    ));
    let LoadSample::Missing(why) = down.query("vector(1)", now()).await else {
        panic!("a closed port answered")
    };
    for secret in ["hunter22", "tok999", "sekret-bearer"] {
        assert!(!why.contains(secret), "{why}");
    }
    assert!(why.contains("REDACTED"), "{why}");
}
