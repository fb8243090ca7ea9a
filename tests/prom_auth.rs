//! Prometheus behind authentication, as ARMS and friends put it: a real Prometheus (Debian's
//! package) serving HTTPS with a test CA and basic auth (`--web.config.file`,
//! `basic_auth_users` with a bcrypt hash), and in front of it a small auth-checking reverse
//! proxy that wants a bearer token and a tenant header, as a managed gateway does. The
//! credentials come from files, which are rewritten during the test: the next query uses them.
#![allow(clippy::unwrap_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use spillway::model::LoadSample;
use spillway::prom::{BasicAuth, PromAuth, PromConfig, Prometheus};
use support::prom::{Killed, free_port};

/// `arms-test-password`, bcrypt cost 4 (see tests/fixtures/prometheus-web-basic-auth.md).
const HASH: &str = "$2b$04$8PN7jUoYbxrYTJXTTsdmEeNHVk.hn47nfacK5ogKTYZLUyEhJYYze";
const PASSWORD: &str = "arms-test-password";

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs");
    assert!(out.status.success(), "openssl {args:?}: {out:?}");
}

/// A CA and a server certificate for 127.0.0.1, as scripts/testbed.sh makes them.
fn certs(dir: &Path) {
    for key in ["ca.key", "tls.key"] {
        openssl(
            dir,
            &[
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-out",
                key,
            ],
        );
    }
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-new",
            "-key",
            "ca.key",
            "-subj",
            "/CN=prom-test-ca",
            "-days",
            "2",
            "-out",
            "ca.crt",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-key",
            "tls.key",
            "-subj",
            "/CN=prometheus",
            "-out",
            "tls.csr",
        ],
    );
    std::fs::write(
        dir.join("tls.ext"),
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "tls.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "tls.ext",
            "-out",
            "tls.crt",
        ],
    );
}

/// Prometheus on HTTPS with basic auth; returns the process and its port.
fn secured_prometheus(dir: &Path) -> (Killed, u16) {
    certs(dir);
    std::fs::write(
        dir.join("web.yml"),
        format!(
            "tls_server_config:\n  cert_file: {}\n  key_file: {}\nbasic_auth_users:\n  spillway: '{HASH}'\n",
            dir.join("tls.crt").display(),
            dir.join("tls.key").display()
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("prometheus.yml"),
        "global: {scrape_interval: 1s}\n",
    )
    .unwrap();
    let port = free_port();
    let child = Command::new("prometheus")
        .arg(format!(
            "--config.file={}",
            dir.join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("tsdb").display()
        ))
        .arg(format!(
            "--web.config.file={}",
            dir.join("web.yml").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("prometheus.log")).unwrap())
        .spawn()
        .expect("`prometheus` is installed (apt-get install prometheus, as .ci/run does)");
    (Killed(child), port)
}

fn client(url: String, auth: PromAuth, ca: Option<&Path>) -> Prometheus {
    Prometheus::new(PromConfig {
        url,
        timeout: Duration::from_secs(10),
        auth,
        ca_pem: ca.map(|c| std::fs::read(c).unwrap()),
        max_skew: Duration::from_secs(60),
    })
    .unwrap()
}

fn write(path: &Path, value: &str) -> PathBuf {
    std::fs::write(path, value).unwrap();
    path.to_path_buf()
}

/// Polls until `vector(1)` answers 1 through `p` (a start-up bound, not a synchronisation).
async fn until_up(p: &Prometheus) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got = p.query("vector(1)", now()).await;
        if got == LoadSample::Total(1.0) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus did not answer: {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn missing(s: LoadSample) -> String {
    match s {
        LoadSample::Missing(why) => why,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_and_a_custom_ca_against_a_real_prometheus() {
    support::testbed::install_crypto();
    let dir = tempfile::tempdir().unwrap();
    let (_prom, port) = secured_prometheus(dir.path());
    let url = format!("https://127.0.0.1:{port}");
    let ca = dir.path().join("ca.crt");
    let password = write(&dir.path().join("password"), &format!("{PASSWORD}\n"));
    let auth = PromAuth {
        basic_auth: Some(BasicAuth {
            username: "spillway".into(),
            password_file: password.clone(),
        }),
        ..PromAuth::default()
    };
    let p = client(url.clone(), auth.clone(), Some(&ca));
    until_up(&p).await;

    // Without the CA, the certificate is not trusted, and the reason says so.
    let untrusted = client(url.clone(), auth.clone(), None);
    let why = missing(untrusted.query("vector(1)", now()).await);
    assert!(why.to_lowercase().contains("certificate"), "{why}");

    // Without credentials, or with the wrong ones: refused, and the reason says which flags.
    let anonymous = client(url.clone(), PromAuth::default(), Some(&ca));
    let why = missing(anonymous.query("vector(1)", now()).await);
    assert!(
        why.contains("HTTP 401") && why.contains("credentials"),
        "{why}"
    );
    write(&password, "not-the-password\n");
    let why = missing(p.query("vector(1)", now()).await);
    assert!(why.contains("HTTP 401"), "{why}");
    assert!(!why.contains("not-the-password"), "{why}");

    // The Secret rotated back in place: the very next query uses it, with no restart.
    write(&password, PASSWORD);
    assert_eq!(p.query("vector(7)", now()).await, LoadSample::Total(7.0));

    // The drill's history (range queries) takes the same flags: a recorded window replays
    // through basic auth and the CA; without the password it is refused, saying so.
    let replay = |password_file: &Path| {
        let out = dir.path().join("replay");
        Command::new(env!("CARGO_BIN_EXE_spillway"))
            .args([
                "drill",
                "--load-from-prometheus",
                &url,
                "--query",
                "vector(3000)",
            ])
            .args([
                "--start",
                "now-5m",
                "--end",
                "now",
                "--policies",
                "spillway,hpa",
            ])
            .arg("--prometheus-basic-auth-user")
            .arg("spillway")
            .arg("--prometheus-basic-auth-password-file")
            .arg(password_file)
            .arg("--prometheus-ca-file")
            .arg(&ca)
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap()
    };
    let ok = replay(&password);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(dir.path().join("replay/report.json").exists());
    let wrong = write(&dir.path().join("wrong"), "not-the-password");
    let refused = replay(&wrong);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && err.contains("401"), "{err}");
    assert!(!err.contains("not-the-password"), "{err}");
}

/// A reverse proxy that forwards to `upstream` (with its basic auth and CA) only requests that
/// carry `Authorization: Bearer <token>` and `X-Scope-OrgID: <tenant>`; 401 otherwise.
async fn auth_proxy(
    upstream: String,
    ca: Vec<u8>,
    token: &'static str,
    tenant: &'static str,
) -> u16 {
    use http_body_util::Full;
    use hyper::service::service_fn;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .build()
        .unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (http, upstream) = (http.clone(), upstream.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let (http, upstream) = (http.clone(), upstream.clone());
                    async move {
                        let h = req.headers();
                        let ok = h.get("authorization").and_then(|v| v.to_str().ok())
                            == Some(&format!("Bearer {token}"))
                            && h.get("x-scope-orgid").and_then(|v| v.to_str().ok()) == Some(tenant);
                        let (status, body) = if ok {
                            let path = req
                                .uri()
                                .path_and_query()
                                .map(|p| p.to_string())
                                .unwrap_or_default();
                            let r = http
                                .get(format!("{upstream}{path}"))
                                .basic_auth("spillway", Some(PASSWORD))
                                .send()
                                .await
                                .unwrap();
                            (r.status().as_u16(), r.bytes().await.unwrap())
                        } else {
                            (401, bytes::Bytes::from_static(b"Unauthorized\n"))
                        };
                        let mut resp = hyper::Response::new(Full::new(body));
                        *resp.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                        Ok::<_, std::convert::Infallible>(resp)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_token_and_headers_from_files_through_an_auth_proxy() {
    support::testbed::install_crypto();
    let dir = tempfile::tempdir().unwrap();
    let (_prom, port) = secured_prometheus(dir.path());
    let ca = std::fs::read(dir.path().join("ca.crt")).unwrap();
    let proxy = auth_proxy(
        format!("https://127.0.0.1:{port}"),
        ca,
        "arms-t0ken-1",
        "tenant-a",
    )
    .await;
    let token = write(&dir.path().join("token"), "arms-t0ken-1\n");
    let tenant = write(&dir.path().join("tenant"), "tenant-a");
    let p = client(
        format!("http://127.0.0.1:{proxy}"),
        PromAuth {
            bearer_token_file: Some(token.clone()),
            header_files: vec![("X-Scope-OrgID".into(), tenant.clone())],
            ..PromAuth::default()
        },
        None,
    );
    until_up(&p).await;
    assert_eq!(p.query("vector(3)", now()).await, LoadSample::Total(3.0));

    // The header alone, or the token alone, is refused.
    let no_header = client(
        format!("http://127.0.0.1:{proxy}"),
        PromAuth {
            bearer_token_file: Some(token.clone()),
            ..PromAuth::default()
        },
        None,
    );
    let why = missing(no_header.query("vector(1)", now()).await);
    assert!(why.contains("HTTP 401"), "{why}");

    // A token rotated to one the proxy does not know: refused at the next query, and neither
    // value is printed.
    write(&token, "arms-t0ken-2");
    let why = missing(p.query("vector(1)", now()).await);
    assert!(why.contains("HTTP 401"), "{why}");
    for secret in ["arms-t0ken-2", "tenant-a"] {
        assert!(!why.contains(secret), "{why}");
    }
    write(&token, "arms-t0ken-1");
    assert_eq!(p.query("vector(4)", now()).await, LoadSample::Total(4.0));
}

/// A front on 127.0.0.1 that sends `/same/<path>` to `/<path>` on itself (a proxy's path
/// rewrite), `/away/<path>` to `http://127.0.0.2:<away>/<path>` (another origin), and forwards
/// anything else to `upstream` with the request's credential headers.
async fn redirecting_front(upstream: String, away: u16) -> u16 {
    use http_body_util::Full;
    use hyper::service::service_fn;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let http = reqwest::Client::new();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (http, upstream) = (http.clone(), upstream.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let (http, upstream) = (http.clone(), upstream.clone());
                    async move {
                        let path = req
                            .uri()
                            .path_and_query()
                            .map(|p| p.to_string())
                            .unwrap_or_default();
                        let mut resp = if let Some(rest) = path.strip_prefix("/same") {
                            redirect(rest.to_string())
                        } else if let Some(rest) = path.strip_prefix("/away") {
                            redirect(format!("http://127.0.0.2:{away}{rest}"))
                        } else {
                            let mut fwd = http.get(format!("{upstream}{path}"));
                            for h in ["authorization", "x-scope-orgid"] {
                                if let Some(v) = req.headers().get(h) {
                                    fwd = fwd.header(h, v.as_bytes());
                                }
                            }
                            let r = fwd.send().await.unwrap();
                            let status = r.status().as_u16();
                            let mut resp =
                                hyper::Response::new(Full::new(r.bytes().await.unwrap()));
                            *resp.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                            resp
                        };
                        resp.headers_mut()
                            .insert("content-type", "application/json".parse().unwrap());
                        Ok::<_, std::convert::Infallible>(resp)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    port
}

fn redirect(to: String) -> hyper::Response<http_body_util::Full<bytes::Bytes>> {
    let mut resp = hyper::Response::new(http_body_util::Full::new(bytes::Bytes::new()));
    *resp.status_mut() = hyper::StatusCode::FOUND;
    resp.headers_mut().insert("location", to.parse().unwrap());
    resp
}

/// Issue 30: a custom credential header (an API key, a tenant) went on across a redirect to
/// another host; reqwest strips only `Authorization`. Redirects are followed within
/// Prometheus's own origin, headers and all; a hop to another origin is not taken: the query
/// is missing, with the status said, and the other host sees nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_follow_redirects_within_prometheus_only() {
    support::testbed::install_crypto();
    let dir = tempfile::tempdir().unwrap();
    let (_prom, port) = secured_prometheus(dir.path());
    let ca = std::fs::read(dir.path().join("ca.crt")).unwrap();
    let proxy = auth_proxy(
        format!("https://127.0.0.1:{port}"),
        ca,
        "arms-t0ken-1",
        "tenant-a",
    )
    .await;
    // The other origin: counts the requests it gets.
    let away = tokio::net::TcpListener::bind("127.0.0.2:0").await.unwrap();
    let away_port = away.local_addr().unwrap().port();
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let h = hits.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = away.accept().await {
            h.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            drop(s);
        }
    });
    let front = redirecting_front(format!("http://127.0.0.1:{proxy}"), away_port).await;
    let auth = PromAuth {
        bearer_token_file: Some(write(&dir.path().join("token"), "arms-t0ken-1")),
        header_files: vec![(
            "X-Scope-OrgID".into(),
            write(&dir.path().join("tenant"), "tenant-a"),
        )],
        ..PromAuth::default()
    };
    let direct = client(format!("http://127.0.0.1:{front}"), auth.clone(), None);
    until_up(&direct).await;
    let same = client(format!("http://127.0.0.1:{front}/same"), auth.clone(), None);
    assert_eq!(same.query("vector(5)", now()).await, LoadSample::Total(5.0));
    let elsewhere = client(format!("http://127.0.0.1:{front}/away"), auth, None);
    let why = missing(elsewhere.query("vector(5)", now()).await);
    assert!(why.contains("302"), "{why}");
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 0);
}
