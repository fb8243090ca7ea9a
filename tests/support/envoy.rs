//! Stand-ins for the gateway's Envoys: one metrics endpoint per gateway pod (`:15090/stats/
//! prometheus` in a real pod), exporting what a default Istio install exports, under the same
//! names and labels: `istio_requests_total` reported by the gateway (`reporter="source"`,
//! `source_workload`, `source_workload_namespace`, response code), and the
//! `envoy_server_total_connections` gauge. `envoy_http_*` statistics are absent, as they are
//! until a `proxyStatsMatcher` asks for them. The load is divided over the ready pods; starting
//! pods serve nothing. Prometheus finds the pods through a file-SD file rewritten as they come
//! and go (`127.0.0.1:PORT/pods/NAME/metrics`). Each pod also answers at its own address, as a
//! real one does: `POD_IP:PORT/stats/prometheus` (the test bed's pod IPs are loopback
//! addresses, and the listener takes every one of them), which the agent's fast path reads
//! with `--fast-path-port PORT`.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{IpAddr, TcpListener};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

#[derive(Default)]
struct PodStats {
    /// Requests served up to the last update…
    requests: f64,
    /// …and served per second since: a scrape sees the counter where it is now, as Envoy's
    /// counters advance with every request.
    rate: f64,
    active: f64,
    /// The `istio-proxy` container's CPU seconds up to the last update, and cores since.
    cpu_seconds: f64,
    cores: f64,
}

struct Fleet {
    rps: f64,
    pods: BTreeMap<String, PodStats>,
    /// Pod by address, for `/stats/prometheus`.
    by_ip: BTreeMap<IpAddr, String>,
    last: Option<Instant>,
    /// When set, each pod's scrape also carries cAdvisor's CPU counter for it: (CPU seconds per
    /// request on ECS, the share of an ECS pod an ECI pod serves: it spends 1/share as much).
    cpu: Option<(f64, f64)>,
    /// When set, each pod's stats carry its open downstream connections
    /// ([`Envoys::connections_of`]) on the gateway's listener and one on the stats listener.
    connections: bool,
}

#[derive(Clone)]
pub struct Envoys {
    pub port: u16,
    fleet: Arc<Mutex<Fleet>>,
    sd_file: PathBuf,
}

impl Envoys {
    /// The Envoys of `istio-system/istio-ingressgateway`.
    pub fn start(sd_file: PathBuf) -> Self {
        Self::start_for(sd_file, "istio-ingressgateway")
    }

    /// The Envoys of the gateway Deployment `istio-system/<workload>` (Istio's
    /// `source_workload` is the Deployment's name).
    pub fn start_for(sd_file: PathBuf, workload: &str) -> Self {
        let workload = workload.to_string();
        // Every address: the pods' own (loopback) IPs reach it too.
        let listener = TcpListener::bind("0.0.0.0:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let fleet = Arc::new(Mutex::new(Fleet {
            rps: 0.0,
            pods: BTreeMap::new(),
            by_ip: BTreeMap::new(),
            last: None,
            cpu: None,
            connections: false,
        }));
        let f = fleet.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut stream = stream;
                let mut buf = [0u8; 2048];
                let n = stream.read(&mut buf).unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]);
                let path = req.split_whitespace().nth(1).unwrap_or("");
                let local = stream.local_addr().map(|a| a.ip()).ok();
                let body = {
                    let fleet = f.lock().unwrap();
                    let pod = match path {
                        "/stats/prometheus" => local
                            .and_then(|ip| fleet.by_ip.get(&ip))
                            .map_or("", String::as_str),
                        _ => path
                            .strip_prefix("/pods/")
                            .and_then(|p| p.strip_suffix("/metrics"))
                            .unwrap_or(""),
                    };
                    let since = fleet.last.map_or(0.0, |l| l.elapsed().as_secs_f64());
                    let with_cpu = fleet.cpu.is_some();
                    let connections = if fleet.connections {
                        format!(
                            "# TYPE envoy_listener_downstream_cx_active gauge\nenvoy_listener_downstream_cx_active{{listener_address=\"0.0.0.0_8080\"}} {}\nenvoy_listener_downstream_cx_active{{listener_address=\"0.0.0.0_15090\"}} 1\n",
                            Envoys::connections_of(pod)
                        )
                    } else {
                        String::new()
                    };
                    fleet.pods.get(pod).map(|s| {
                        let requests = s.requests + s.rate * since;
                        // Target labels (file SD) add `pod` and `namespace`, as the kubelet's
                        // cAdvisor series carry them.
                        let cpu = if with_cpu {
                            format!(
                                "# TYPE container_cpu_usage_seconds_total counter\ncontainer_cpu_usage_seconds_total{{container=\"istio-proxy\"}} {:.6}\n",
                                s.cpu_seconds + s.cores * since
                            )
                        } else {
                            String::new()
                        };
                        let ok = (requests * 0.99).floor();
                        let labels = |code: u16| {
                            format!(
                                "reporter=\"source\",source_workload=\"{workload}\",source_workload_namespace=\"istio-system\",source_app=\"{workload}\",destination_service_name=\"productpage\",destination_workload=\"productpage-v1\",destination_workload_namespace=\"default\",request_protocol=\"http\",response_code=\"{code}\",response_flags=\"-\",connection_security_policy=\"unknown\""
                            )
                        };
                        format!(
                            "# TYPE istio_requests_total counter\nistio_requests_total{{{}}} {ok}\nistio_requests_total{{{}}} {}\n# TYPE envoy_server_total_connections gauge\nenvoy_server_total_connections{{}} {}\n{cpu}{connections}",
                            labels(200),
                            labels(503),
                            requests.floor() - ok,
                            s.active.round()
                        )
                    })
                };
                let (status, body) = match body {
                    Some(b) => ("200 OK", b),
                    None => ("404 Not Found", "no such pod\n".to_string()),
                };
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        let e = Self {
            port,
            fleet,
            sd_file,
        };
        e.write_sd(&[]);
        e
    }

    /// Keeps these Envoys following the live pods labelled `app=<app>` (every 200 ms) until the
    /// guard is dropped. A read the apiserver drops (a busy machine, or the test bed going away
    /// while a failed assertion unwinds) skips one update: a panic here would print its
    /// backtrace after the failing assertion's own message and hide it.
    pub fn follow(
        &self,
        cluster: super::testbed::Cluster,
        app: &str,
    ) -> super::live::AbortOnDrop<()> {
        let (envoys, app) = (self.clone(), app.to_string());
        super::live::AbortOnDrop(tokio::spawn(async move {
            loop {
                if let Ok(pods) = cluster.try_pods_of(&app).await {
                    envoys.update(&pods);
                }
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        }))
    }

    /// Each pod's stats carry its open downstream connections from now on.
    pub fn set_connections(&self) {
        self.fleet.lock().unwrap().connections = true;
    }

    /// The open downstream connections the pod `name` reports: fixed by its name, 1 to 997.
    pub fn connections_of(name: &str) -> u64 {
        // FNV-1a: stable across runs and platforms.
        let h = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
        h % 997 + 1
    }

    pub fn set_load(&self, rps: f64) {
        self.fleet.lock().unwrap().rps = rps;
    }

    /// Exports each pod's CPU too: `cpu_per_request` seconds on ECS (an idle Envoy's 0.02
    /// cores beside), `1 / eci_share` times as much on ECI.
    pub fn set_cpu(&self, cpu_per_request: f64, eci_share: f64) {
        self.fleet.lock().unwrap().cpu = Some((cpu_per_request, eci_share));
    }

    /// Advances the counters to now and follows the pod set (the live pods, as listed).
    pub fn update(&self, pods: &[super::testbed::GatewayPod]) {
        let mut fleet = self.fleet.lock().unwrap();
        let now = Instant::now();
        let dt = fleet
            .last
            .map_or(0.0, |l| now.duration_since(l).as_secs_f64());
        fleet.last = Some(now);
        let ready = pods.iter().filter(|p| p.ready).count();
        let share = if ready > 0 {
            fleet.rps / ready as f64
        } else {
            0.0
        };
        let before: Vec<String> = fleet.pods.keys().cloned().collect();
        fleet
            .pods
            .retain(|name, _| pods.iter().any(|p| &p.name == name));
        fleet.by_ip = pods
            .iter()
            .filter_map(|p| Some((p.ip?, p.name.clone())))
            .collect();
        let cpu = fleet.cpu;
        for p in pods {
            let s = fleet.pods.entry(p.name.clone()).or_default();
            s.cpu_seconds += s.cores * dt;
            s.cores = cpu.map_or(0.0, |(cost, eci_share)| {
                let cost = if p.pool == Some(spillway::model::Pool::Eci) {
                    cost / eci_share
                } else {
                    cost
                };
                0.02 + if p.ready { share * cost } else { 0.0 }
            });
            if p.ready {
                s.requests += s.rate * dt;
                s.rate = share;
                s.active = share * 0.5;
            } else {
                s.requests += s.rate * dt;
                s.rate = 0.0;
                s.active = 0.0;
            }
        }
        let after: Vec<String> = fleet.pods.keys().cloned().collect();
        drop(fleet);
        if before != after {
            self.write_sd(&after);
        }
    }

    fn write_sd(&self, pods: &[String]) {
        let groups: Vec<serde_json::Value> = pods
            .iter()
            .map(|p| {
                serde_json::json!({
                    "targets": [format!("127.0.0.1:{}", self.port)],
                    "labels": {"__metrics_path__": format!("/pods/{p}/metrics"), "pod": p, "namespace": "istio-system"}
                })
            })
            .collect();
        let tmp = self.sd_file.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec(&groups).unwrap()).unwrap();
        std::fs::rename(&tmp, &self.sd_file).unwrap();
    }
}
