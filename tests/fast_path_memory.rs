//! Issue 30: fast-path bodies were buffered whole; 16 pods answering 15.9 MiB each took the
//! agent to a 459 MiB peak (the chart allows 256 MiB). Bodies are now parsed as they stream
//! in, one line held at a time. This binary counts every allocation (a counting global
//! allocator) while the fast path reads 16 stand-in pods that each answer just under the body
//! cap, and bounds the peak above what was allocated before the read; and the process's
//! resident set, as the kernel counts it (the target: RSS growth ≤ 64 MiB).
#![allow(clippy::unwrap_used)]

use std::net::IpAddr;
use std::sync::Arc;

use spillway::fastpath::{FastPath, FastPathConfig, MAX_BODY_BYTES, Target};
use spillway::model::GatewayKey;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Counts every allocation of this test binary (the workspace forbids `unsafe`, so the
/// counting allocator comes from a crate).
#[global_allocator]
static ALLOC: peak_alloc::PeakAlloc = peak_alloc::PeakAlloc;

/// Envoy-like lines of other families, with the counter's series among them, to just under
/// the body cap.
fn big_body(counter: u64) -> Vec<u8> {
    let mut body = String::with_capacity(MAX_BODY_BYTES);
    let mut i = 0u64;
    while body.len() < MAX_BODY_BYTES - 64 * 1024 {
        body.push_str(&format!(
            "envoy_cluster_upstream_rq{{cluster_name=\"outbound|8080||svc-{i}.shop.svc.cluster.local\",response_code_class=\"2xx\"}} {i}\n"
        ));
        if i.is_multiple_of(100) {
            body.push_str(&format!(
                "istio_requests_total{{destination_service_name=\"svc-{i}\",response_code=\"200\"}} {counter}\n"
            ));
        }
        i += 1;
    }
    body.into_bytes()
}

/// A field of /proc/self/status, in bytes (`VmRSS`, `VmHWM`).
fn proc_status_bytes(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with(&format!("{field}:")))
        .unwrap_or_else(|| panic!("{field} not in /proc/self/status"));
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap();
    kib * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_pods_of_sixteen_mib_are_read_in_bounded_memory() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let body: Arc<Vec<u8>> = Arc::new(big_body(7));
    assert!(body.len() > 15 << 20 && body.len() <= MAX_BODY_BYTES);
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let served = body.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let body = served.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = s.write_all(head.as_bytes()).await;
                let _ = s.write_all(&body).await;
            });
        }
    });
    let fp = FastPath::new(FastPathConfig {
        port,
        timeout: std::time::Duration::from_secs(60),
        ..FastPathConfig::default()
    })
    .unwrap();
    let targets: Vec<Target> = (2..18u8)
        .map(|n| Target {
            pod: format!("gw-{n}"),
            ip: IpAddr::from([127, 0, 0, n]),
        })
        .collect();
    let gw = GatewayKey::new("istio-system", "gw");
    let before = ALLOC.current_usage();
    ALLOC.reset_peak_usage();
    // The kernel's high-water mark of the resident set, reset to the current RSS ("5": see
    // proc(5), /proc/pid/clear_refs).
    std::fs::write("/proc/self/clear_refs", "5").expect("the peak RSS can be reset");
    let rss_before = proc_status_bytes("VmRSS");
    let round = fp.read(&gw, &targets, 500.0).await;
    let peak = ALLOC.peak_usage().saturating_sub(before);
    let rss_growth = proc_status_bytes("VmHWM").saturating_sub(rss_before);
    assert!(round.failures.is_empty(), "{:?}", round.failures);
    let read = 16 * body.len();
    println!(
        "fast path: 16 pods x {:.1} MiB read ({:.0} MiB) with a peak of {:.2} MiB allocated, peak RSS {:.1} MiB above the start",
        body.len() as f64 / (1 << 20) as f64,
        read as f64 / (1 << 20) as f64,
        peak as f64 / (1 << 20) as f64,
        rss_growth as f64 / (1 << 20) as f64
    );
    assert!(
        rss_growth <= 64 << 20,
        "the resident set grew by {rss_growth} bytes"
    );
    // Less than one body held whole (16 MiB); all of them held were 255 MiB. What is held is
    // hyper's read buffer per connection (at most about 400 KiB each) and one line per pod.
    assert!(
        peak < MAX_BODY_BYTES,
        "peak {peak} bytes for {read} bytes read"
    );
}
