//! A real Prometheus (Debian's package) scraping a load exporter, for the agent to query.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Kills its child on drop.
pub struct Killed(pub Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Serves `spillway_test_gateway_requests_per_second <value>` for Prometheus to scrape.
#[derive(Clone)]
pub struct LoadExporter {
    pub port: u16,
    pub rps: Arc<Mutex<f64>>,
}

/// Serves, on a loopback port, the exposition text `body()` gives at each scrape; the port.
fn serve_exposition(body: impl Fn() -> String + Send + 'static) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut buf = [0u8; 2048];
            let _ = stream.read(&mut buf);
            let text = body();
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
                text.len()
            );
        }
    });
    port
}

impl LoadExporter {
    pub fn start(rps: f64) -> Self {
        let value = Arc::new(Mutex::new(rps));
        let v = value.clone();
        let port = serve_exposition(move || {
            format!(
                "# HELP spillway_test_gateway_requests_per_second Load of the test gateway.\n# TYPE spillway_test_gateway_requests_per_second gauge\nspillway_test_gateway_requests_per_second{{namespace=\"istio-system\"}} {}\n",
                *v.lock().unwrap()
            )
        });
        Self { port, rps: value }
    }

    pub fn set(&self, rps: f64) {
        *self.rps.lock().unwrap() = rps;
    }
}

/// Serves what the kubelet's cAdvisor exports for each container: the counter
/// `container_cpu_usage_seconds_total{namespace, pod, container}`, advancing at the cores set for
/// it (read at each scrape, so `rate()` over the scrapes gives the cores back).
#[derive(Clone)]
pub struct CadvisorExporter {
    pub port: u16,
    containers: Arc<Mutex<Vec<Container>>>,
}

/// `(namespace, pod, container)` → (CPU seconds up to the instant, cores since then, the instant).
type Container = ((String, String, String), (f64, f64, Instant));

impl CadvisorExporter {
    pub fn start() -> Self {
        let containers: Arc<Mutex<Vec<_>>> = Arc::new(Mutex::new(Vec::new()));
        let c = containers.clone();
        let port = serve_exposition(move || {
            let mut out = String::from(
                "# HELP container_cpu_usage_seconds_total Cumulative cpu time consumed in seconds.\n# TYPE container_cpu_usage_seconds_total counter\n",
            );
            let list: &Vec<Container> = &c.lock().unwrap();
            for ((ns, pod, container), (base, cores, since)) in list {
                out.push_str(&format!(
                    "container_cpu_usage_seconds_total{{namespace=\"{ns}\",pod=\"{pod}\",container=\"{container}\"}} {:.6}\n",
                    base + cores * since.elapsed().as_secs_f64()
                ));
            }
            out
        });
        Self { port, containers }
    }

    /// The container uses `cores` from now on.
    pub fn set(&self, namespace: &str, pod: &str, container: &str, cores: f64) {
        let key = (
            namespace.to_string(),
            pod.to_string(),
            container.to_string(),
        );
        let mut list = self.containers.lock().unwrap();
        let now = Instant::now();
        match list.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => *v = (v.0 + v.1 * v.2.elapsed().as_secs_f64(), cores, now),
            None => list.push((key, (0.0, cores, now))),
        }
    }
}

/// Serves the caller's exposition text, then `steps_clock <seconds since start>`: each scrape
/// carries the time it was taken, so whoever reads the scrape later can tell which one it saw.
#[derive(Clone)]
pub struct TextExporter {
    pub port: u16,
    body: Arc<Mutex<String>>,
}

impl TextExporter {
    pub fn start() -> Self {
        let body = Arc::new(Mutex::new(String::new()));
        let b = body.clone();
        let start = Instant::now();
        let port = serve_exposition(move || {
            format!(
                "{}steps_clock {:.3}\n",
                b.lock().unwrap(),
                start.elapsed().as_secs_f64()
            )
        });
        Self { port, body }
    }

    pub fn set(&self, text: String) {
        *self.body.lock().unwrap() = text;
    }
}

/// A Prometheus that scrapes `targets` every second; it can be stopped and started again on
/// the same port and storage.
pub struct Prom {
    pub port: u16,
    dir: PathBuf,
    child: Option<Killed>,
}

impl Prom {
    pub fn start(dir: &Path, targets: &[u16]) -> Self {
        assert!(
            Command::new("prometheus")
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok(),
            "`prometheus` is not installed: `apt-get install prometheus` (as .ci/run does)"
        );
        let targets: Vec<String> = targets.iter().map(|p| format!("'127.0.0.1:{p}'")).collect();
        std::fs::write(
            dir.join("prometheus.yml"),
            format!(
                "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\nscrape_configs:\n- job_name: load\n  static_configs: [{{targets: [{}]}}]\n",
                targets.join(", ")
            ),
        )
        .unwrap();
        let mut p = Self {
            port: free_port(),
            dir: dir.to_path_buf(),
            child: None,
        };
        p.resume();
        p
    }

    /// A Prometheus scraping every second the Envoy stand-ins listed in the file-SD files
    /// `envoy_sd` ([`super::envoy::Envoys`]).
    pub fn scraping_envoys(dir: &Path, envoy_sd: &[&Path]) -> Self {
        let files: Vec<String> = envoy_sd
            .iter()
            .map(|f| format!("'{}'", f.display()))
            .collect();
        std::fs::write(
            dir.join("prometheus.yml"),
            format!(
                "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\nscrape_configs:\n- job_name: envoy\n  file_sd_configs: [{{files: [{}], refresh_interval: 1s}}]\n",
                files.join(", ")
            ),
        )
        .unwrap();
        Self::start_configured(dir)
    }

    /// A Prometheus with the caller's configuration file (already written at `dir/prometheus.yml`).
    pub fn start_configured(dir: &Path) -> Self {
        let mut p = Self {
            port: free_port(),
            dir: dir.to_path_buf(),
            child: None,
        };
        p.resume();
        p
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn stop(&mut self) {
        self.child = None;
    }

    pub fn resume(&mut self) {
        let child = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                self.dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                self.dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{}", self.port))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(Killed(child));
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "prometheus did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// A plain HTTP/1.0 GET on loopback: `(status, body)`.
pub fn http_get(port: u16, path_and_query: &str) -> (u16, String) {
    try_http_get(port, path_and_query)
        .unwrap_or_else(|| panic!("GET :{port}{path_and_query} failed"))
}

/// `http_get`, or `None` when nothing answers (a stopped Prometheus).
pub fn try_http_get(port: u16, path_and_query: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(20))).ok()?;
    write!(
        s,
        "GET {path_and_query} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n"
    )
    .ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Some((status, body.to_string()))
}

/// Percent-encodes a query parameter.
pub fn encode(q: &str) -> String {
    q.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
