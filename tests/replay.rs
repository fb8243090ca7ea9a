//! Drills from the real world, on real parts: a day of load backfilled into a real Prometheus
//! (`promtool tsdb create-blocks-from openmetrics`) replayed under every policy; the bad inputs
//! (a gap, a counter reset, several series, an empty window, an unreachable Prometheus) each a
//! clear error or a reported repair, never a partial report; the HTML report opened in headless
//! Chromium and its screenshot checked for the chart; and `--from-cluster` and `drill mark` on the
//! real control plane.
#![allow(clippy::unwrap_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use spillway::sim::Scenario;
use spillway::sim::cluster::Latencies;
use support::prom::{Prom, encode, free_port, http_get};
use support::testbed::Testbed;

const STEP: f64 = 15.0;
const DAY: f64 = 86_400.0;

/// The recorded load, `t` seconds into the day: a diurnal swing, a flash crowd at 14:00 and a
/// smaller one at 20:00.
fn day_load(t: f64) -> f64 {
    let diurnal = 3000.0 + 1500.0 * (2.0 * std::f64::consts::PI * (t - 15.0 * 3600.0) / DAY).cos();
    let crowd = |at: f64, rps: f64, rise: f64, hold: f64, fall: f64| {
        let x = t - at;
        if x < 0.0 || x > rise + hold + fall {
            0.0
        } else if x < rise {
            rps * x / rise
        } else if x <= rise + hold {
            rps
        } else {
            rps * (1.0 - (x - rise - hold) / fall)
        }
    };
    diurnal
        + crowd(14.0 * 3600.0, 15_000.0, 120.0, 1200.0, 600.0)
        + crowd(20.0 * 3600.0, 6_000.0, 60.0, 600.0, 300.0)
}

/// The OpenMetrics text for the day starting at `start`: the load, a request counter that
/// resets at 06:00, a gauge with a 20-minute hole at 08:00, and a metric in two zones.
fn openmetrics(start: f64) -> String {
    let n = (DAY / STEP) as usize;
    let mut out = String::new();
    let ts = |i: usize| start + i as f64 * STEP;
    out.push_str("# TYPE replay_load gauge\n");
    for i in 0..=n {
        out.push_str(&format!(
            "replay_load {:.1} {}\n",
            day_load(i as f64 * STEP),
            ts(i)
        ));
    }
    out.push_str("# TYPE replay_requests counter\n");
    let reset = (6.0 * 3600.0 / STEP) as usize;
    for i in 0..=n {
        // The process restarted just after the scrape before 06:00: counting from zero again.
        let since = if i >= reset {
            i - reset + 1
        } else {
            i + 10_000
        };
        out.push_str(&format!(
            "replay_requests_total {} {}\n",
            since as f64 * STEP * 1000.0,
            ts(i)
        ));
    }
    out.push_str("# TYPE replay_holey gauge\n");
    let hole = (8.0 * 3600.0 / STEP) as usize..(8.0 * 3600.0 / STEP + 80.0) as usize;
    for i in (0..=n).filter(|i| !hole.contains(i)) {
        out.push_str(&format!("replay_holey 1000 {}\n", ts(i)));
    }
    out.push_str("# TYPE replay_multi gauge\n");
    for zone in ["a", "b"] {
        for i in 0..=n {
            out.push_str(&format!("replay_multi{{zone=\"{zone}\"}} 500 {}\n", ts(i)));
        }
    }
    out.push_str("# EOF\n");
    out
}

fn spillway(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_spillway"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn report(dir: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join("report.json")).unwrap()).unwrap()
}

/// Headless Chromium's screenshot of `page`: `(width, height, RGB pixels)`.
fn screenshot(page: &Path, dir: &Path) -> (u32, u32, Vec<[u8; 3]>) {
    let png_path = dir.join("screenshot.png");
    let profile = dir.join("chromium-profile");
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--screenshot={}", png_path.display()))
        .arg("--window-size=1600,2600")
        .arg(format!("file://{}", page.display()))
        .stdin(Stdio::null())
        .output()
        .expect("`chromium` is needed (.ci/run installs Debian's package)");
    assert!(
        png_path.exists(),
        "chromium wrote no screenshot: {}",
        text(&out)
    );
    let mut decoder = png::Decoder::new(std::io::BufReader::new(
        std::fs::File::open(&png_path).unwrap(),
    ));
    decoder.set_transformations(png::Transformations::EXPAND);
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!(info.bit_depth, png::BitDepth::Eight);
    let channels = info.line_size / info.width as usize;
    let mut pixels = Vec::with_capacity((info.width * info.height) as usize);
    for row in buf[..info.line_size * info.height as usize].chunks(info.line_size) {
        for px in row.chunks(channels).take(info.width as usize) {
            pixels.push([px[0], px[1], px[2]]);
        }
    }
    (info.width, info.height, pixels)
}

fn near(p: [u8; 3], c: [u8; 3], tol: i32) -> bool {
    p.iter()
        .zip(c)
        .all(|(a, b)| (i32::from(*a) - i32::from(b)).abs() <= tol)
}

/// Waits until Prometheus has loaded the backfilled blocks.
fn wait_for_blocks(prom: &Prom, start: f64, end: f64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let q = encode("count_over_time(replay_load[2d])");
    loop {
        let (_, body) = http_get(prom.port, &format!("/api/v1/query?query={q}&time={end}"));
        if body.contains("\"result\":[{") {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus did not load the backfilled day {start}..{end}: {body}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_recorded_day_is_replayed_and_bad_data_is_named() {
    for tool in ["prometheus", "promtool"] {
        assert!(
            Command::new(tool)
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok(),
            "`{tool}` is needed (.ci/run installs Debian's prometheus)"
        );
    }
    let work = support::live::workdir("replay");
    let dir = work.path();
    // A day ending an hour ago, on the step grid.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let end = ((now - 3600.0) / STEP).floor() * STEP;
    let start = end - DAY;
    let om = dir.join("day.om");
    std::fs::write(&om, openmetrics(start)).unwrap();
    let tsdb = dir.join("tsdb");
    let out = Command::new("promtool")
        .args(["tsdb", "create-blocks-from", "openmetrics"])
        .arg(&om)
        .arg(&tsdb)
        .output()
        .unwrap();
    assert!(out.status.success(), "backfill: {}", text(&out));
    std::fs::write(
        dir.join("prometheus.yml"),
        "global: {scrape_interval: 15s}\n",
    )
    .unwrap();
    let prom = Prom::start_configured(dir);
    wait_for_blocks(&prom, start, end);
    let url = prom.url();
    let (s, e) = (format!("{start}"), format!("{end}"));
    let window = ["--start", s.as_str(), "--end", e.as_str(), "--step", "15s"];
    let replay = |query: &str, out: &Path, extra: &[&str]| -> Output {
        let out_s = out.display().to_string();
        let mut args = vec![
            "drill",
            "--load-from-prometheus",
            url.as_str(),
            "--query",
            query,
            "--out",
            out_s.as_str(),
        ];
        args.extend_from_slice(&window);
        args.extend_from_slice(extra);
        spillway(&args)
    };

    // The day, under four policies: chunked range queries, two surges found, nothing repaired.
    let day = dir.join("day");
    let started = Instant::now();
    let o = replay(
        "replay_load",
        &day,
        &["--policies", "spillway,hpa,static,reactive"],
    );
    let took = started.elapsed();
    assert!(o.status.success(), "{}", text(&o));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("load: 6/6 range queries"), "{stderr}");
    let r = report(&day);
    assert_eq!(r["duration_s"], DAY as u64);
    assert_eq!(r["surges"].as_array().unwrap().len(), 2, "{}", r["surges"]);
    assert!(r.get("data_notes").is_none(), "{}", r["data_notes"]);
    let runs = r["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 4);
    let sw = &runs[0]["summary"];
    assert_eq!(sw["policy"], "spillway");
    // The 14:00 crowd (19,500 rps at its peak) needs 28 pods at 700 rps: it spills onto ECI.
    assert!(sw["peak_eci_pods"].as_i64().unwrap() > 0, "{sw}");
    assert_eq!(sw["time_to_capacity_s"].as_array().unwrap().len(), 2);
    let peak = runs[0]["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["load_rps"].as_f64().unwrap())
        .fold(0.0, f64::max);
    assert!(
        (peak - day_load(14.0 * 3600.0 + 600.0)).abs() < 50.0,
        "peak {peak}"
    );
    eprintln!(
        "replayed a day at a 15 s step ({} values) under 4 policies in {:.1} s (fetch, replay and report)",
        DAY / STEP + 1.0,
        took.as_secs_f64()
    );

    // What --print-scenario writes, `drill SCENARIO` runs to the same figures.
    let o = replay("replay_load", &dir.join("unused"), &["--print-scenario"]);
    assert!(o.status.success(), "{}", text(&o));
    let file = dir.join("recorded.yaml");
    std::fs::write(&file, &o.stdout).unwrap();
    let again = dir.join("again");
    let o = spillway(&[
        "drill",
        file.to_str().unwrap(),
        "--policies",
        "spillway,hpa,static,reactive",
        "--out",
        again.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let summaries = |r: &Value| -> Vec<Value> {
        r["runs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["summary"].clone())
            .collect()
    };
    assert_eq!(summaries(&report(&again)), summaries(&r));

    // The HTML report in a real browser: the chart is drawn (the ready-capacity line's blue and
    // the ECI area's orange are on screen), with the figures above it.
    let html = std::fs::read_to_string(day.join("report.html")).unwrap();
    assert!(html.contains("<svg") && html.contains("time to capacity"));
    let (w, h, pixels) = screenshot(&day.join("report.html"), dir);
    let blue = pixels
        .iter()
        .filter(|p| near(**p, [30, 100, 200], 40))
        .count();
    let orange = pixels
        .iter()
        .filter(|p| near(**p, [244, 152, 76], 40))
        .count();
    eprintln!("screenshot {w}x{h}: {blue} capacity-blue pixels, {orange} ECI-orange pixels");
    assert!(
        blue > 500,
        "no capacity line on screen ({blue} blue pixels)"
    );
    assert!(
        orange > 500,
        "no ECI area on screen ({orange} orange pixels)"
    );

    // A raw counter: replayed as its rate, the reset at 06:00 counted from zero and reported.
    let counter = dir.join("counter");
    let o = replay(
        "replay_requests_total",
        &counter,
        &["--policies", "spillway"],
    );
    assert!(o.status.success(), "{}", text(&o));
    let reset_at = spillway::clock::rfc3339(start + 6.0 * 3600.0);
    let notes = report(&counter)["data_notes"].to_string();
    assert!(
        notes.contains("1 counter reset") && notes.contains(&reset_at),
        "{notes}"
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains(&reset_at));
    let load: Vec<f64> = report(&counter)["runs"][0]["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["load_rps"].as_f64().unwrap())
        .collect();
    let off: Vec<&f64> = load.iter().filter(|v| (*v - 1000.0).abs() >= 1.0).collect();
    assert!(off.is_empty(), "the counter's rate is not 1,000/s: {off:?}");

    // A 20-minute hole: an error naming it, and no report; bridged and reported when allowed.
    let holey = dir.join("holey");
    let o = replay("replay_holey", &holey, &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    // Prometheus holds a value 5 minutes past its last sample (its lookback), so the 20-minute
    // hole (from the sample before 08:00 to the one at 08:20) shows as the last 915 s of it.
    let hole_from = spillway::clock::rfc3339(start + 8.0 * 3600.0 - STEP + 300.0);
    assert!(
        err.contains("gap in the data") && err.contains(&hole_from) && err.contains("915 s"),
        "{err}"
    );
    assert!(
        !holey.join("report.json").exists(),
        "a partial report was written"
    );
    let o = replay(
        "replay_holey",
        &holey,
        &["--max-gap", "30m", "--policies", "spillway"],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        report(&holey)["data_notes"]
            .to_string()
            .contains("1 gap(s) bridged")
    );

    // Several series: refused, naming them; added up with --sum.
    let multi = dir.join("multi");
    let o = replay("replay_multi", &multi, &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("2 series") && err.contains("zone=\"a\""),
        "{err}"
    );
    assert!(!multi.join("report.json").exists());
    let o = replay("replay_multi", &multi, &["--sum", "--policies", "spillway"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        report(&multi)["data_notes"]
            .to_string()
            .contains("2 series added up")
    );

    // Nothing in the window.
    let empty = dir.join("empty");
    let o = replay("replay_nothing_here", &empty, &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("empty window"), "{err}");
    assert!(!empty.join("report.json").exists());

    // A score where spillway never ran: named, no report; a drill never marked: named.
    let score = dir.join("score");
    let o = spillway(&[
        "drill",
        "score",
        "--prometheus",
        &url,
        "--gateway",
        "istio-system/ingressgateway",
        "--query",
        "replay_load",
        "--start",
        &s,
        "--end",
        &e,
        "--out",
        score.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success()
            && err.contains("no spillway metrics for ElasticGateway istio-system/ingressgateway"),
        "{}",
        text(&o)
    );
    assert!(!score.join("report.json").exists());
    let o = spillway(&[
        "drill",
        "score",
        "--prometheus",
        &url,
        "--gateway",
        "istio-system/ingressgateway",
        "--name",
        "never-marked",
        "--out",
        score.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("no drill named \"never-marked\""),
        "{}",
        text(&o)
    );

    // Nobody there.
    let gone = format!("http://127.0.0.1:{}", free_port());
    let o = spillway(&[
        "drill",
        "--load-from-prometheus",
        &gone,
        "--query",
        "replay_load",
        "--start",
        &s,
        "--end",
        &e,
        "--out",
        empty.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("Prometheus unreachable at") && err.contains(&gone),
        "{err}"
    );
    assert!(!empty.join("report.json").exists());
}

fn gateway_policy() -> Value {
    json!({"apiVersion": "spillway.io/v1alpha1", "kind": "ElasticGateway",
        "metadata": {"name": "ingressgateway", "namespace": "istio-system"},
        "spec": {"target": {"kind": "Deployment", "name": "istio-ingressgateway"},
                 "minReplicas": 2, "maxReplicas": 40,
                 "metrics": [{"preset": "RequestRate", "targetPerReplica": 500}]}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_as_it_is_becomes_a_scenario_and_a_drill_is_marked() {
    let work = support::live::workdir("snapshot");
    let dir: PathBuf = work.path().to_path_buf();
    let scenario = Scenario::default();
    let latencies = Latencies {
        ecs_start_seconds: 1.0,
        eci_start_seconds: 2.0,
        jitter: 0.0,
        termination_seconds: 1.0,
    };
    let tb = Testbed::start(&dir, &scenario, &latencies).await;
    tb.seed(&scenario, &latencies, Some(gateway_policy())).await;
    let kubeconfig = tb.kubeconfig().display().to_string();
    let from_cluster = |extra: &[&str]| -> Output {
        let mut args = vec![
            "drill",
            "--from-cluster",
            "--gateway",
            "istio-system/ingressgateway",
            "--kubeconfig",
            kubeconfig.as_str(),
        ];
        args.extend_from_slice(extra);
        spillway(&args)
    };
    // The cluster admin's name, as the audit log has it from the seeding's kubectl.
    let admin = tb
        .audit()
        .iter()
        .find(|e| {
            e["userAgent"]
                .as_str()
                .is_some_and(|a| a.starts_with("kubectl"))
        })
        .map(|e| e["user"]["username"].clone())
        .unwrap();
    // What the snapshot's own client (kube-rs, not kubectl, kwok or a controller) wrote.
    let admin_writes = || {
        tb.audit()
            .iter()
            .filter(|e| e["user"]["username"] == admin)
            .filter(|e| {
                e["userAgent"]
                    .as_str()
                    .is_none_or(|a| !a.starts_with("kubectl") && !a.starts_with("kwok"))
            })
            .map(|e| format!("{} {} {}", e["verb"], e["requestURI"], e["userAgent"]))
            .collect::<Vec<_>>()
    };
    let writes_before = admin_writes();
    let o = from_cluster(&["--print-scenario"]);
    assert!(o.status.success(), "{}", text(&o));
    let yaml = String::from_utf8_lossy(&o.stdout).to_string();
    let s = Scenario::parse(&yaml).unwrap();
    // The guide's cluster: 4 ECS nodes each with 2 CPUs of other work, one virtual node; the
    // gateway's 4 pods of 2 CPUs are the drill's to place, not counted as other work.
    let ecs: Vec<_> = s
        .cluster
        .extra_nodes
        .iter()
        .filter(|n| n.labels.get("mykey4pod").is_some_and(|v| v == "asmgateway"))
        .collect();
    assert_eq!(ecs.len(), 4, "{yaml}");
    for n in &ecs {
        // The test bed splits the 2 CPUs over 6 pods (333m each).
        assert!(
            (n.requested.cpu_millis - 2000).abs() <= 6 && n.requested.pods == 6,
            "{}: {:?}",
            n.name,
            n.requested
        );
        assert_eq!(n.allocatable.cpu_millis, 8000);
    }
    assert_eq!(s.cluster.extra_nodes.len(), 5);
    assert_eq!(s.gateway.replicas, 4);
    assert_eq!(s.gateway.cpu, "2000m");
    assert_eq!(s.gateway.capacity_per_pod_rps, 700.0);
    assert_eq!(s.policy.target.name, "istio-ingressgateway");
    // The snapshot only read: no write reached the apiserver's audit log.
    assert_eq!(
        admin_writes(),
        writes_before,
        "the snapshot wrote to the cluster"
    );
    // It runs as it is.
    let file = dir.join("snapshot.yaml");
    std::fs::write(&file, &yaml).unwrap();
    let out = dir.join("drill");
    let o = spillway(&[
        "drill",
        file.to_str().unwrap(),
        "--duration",
        "1800",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let r = report(&out);
    // 4 × (8 − 2) CPUs hold 12 gateway pods of 2 CPUs; the built-in crowd needs 29.
    assert!(
        r["runs"][0]["summary"]["peak_eci_pods"].as_i64().unwrap() >= 15,
        "{}",
        r["runs"][0]["summary"]
    );

    // A drill marked on the gateway, opened then closed; then removed.
    let mark = |extra: &[&str]| -> Output {
        let mut args = vec![
            "drill",
            "mark",
            "--name",
            "sale-rehearsal",
            "--gateway",
            "ingressgateway",
            "--kubeconfig",
            kubeconfig.as_str(),
        ];
        args.extend_from_slice(extra);
        spillway(&args)
    };
    let annotation = || {
        tb.kubectl_ok(
            &[
                "-n",
                "istio-system",
                "get",
                "elasticgateway",
                "ingressgateway",
                "-o",
                "jsonpath={.metadata.annotations.drill\\.spillway\\.io/sale-rehearsal}",
            ],
            None,
        )
    };
    let o = mark(&["--start", "2026-11-20T09:00:00Z"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(annotation(), "2026-11-20T09:00:00Z/");
    let o = mark(&["--end", "2026-11-20T09:30:00Z"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(annotation(), "2026-11-20T09:00:00Z/2026-11-20T09:30:00Z");
    let o = mark(&["--end", "2026-11-20T08:00:00Z"]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("before its start"),
        "{}",
        text(&o)
    );
    let o = mark(&["--remove"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(annotation(), "");

    // A cluster without a virtual node: named, no scenario.
    tb.kubectl_ok(&["delete", "node", "virtual-kubelet-cn-hangzhou-k"], None);
    let o = from_cluster(&["--print-scenario"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success()
            && err.contains("no node is in the ECI pool")
            && err.contains("type=virtual-kubelet"),
        "{}",
        text(&o)
    );
    assert!(o.stdout.is_empty());
}
