//! The admin HTTP server: `/metrics`, `/healthz` (the process is alive), `/readyz` (caches
//! synced and Prometheus reached once). Plain hyper 1, as kubert's admin server.
//!
//! The probes may also have a listener of their own ([`bind_probes`]): the admin port is open
//! to Prometheus's pods, and clients there that open connections and never finish them hold
//! its slots until their header timeout; the kubelet's probes, on a port no pod may reach (the
//! NetworkPolicy admits none to it), are answered whatever happens on the admin port.
//!
//! The admission webhook ([`crate::webhook`]) is served by the same loop, over TLS.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{ACCEPT, CONTENT_TYPE};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;

use crate::metrics::Metrics;

/// What the server reports.
#[derive(Clone)]
pub struct Admin {
    pub metrics: Arc<Metrics>,
    pub ready: Arc<AtomicBool>,
}

impl Admin {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            metrics,
            ready: Arc::new(AtomicBool::new(false)),
        }
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    fn respond(&self, req: &Request<Incoming>, probes_only: bool) -> Response<Full<Bytes>> {
        let text = |status: StatusCode, body: &str| {
            let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
            *r.status_mut() = status;
            r.headers_mut().insert(
                CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            r
        };
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n");
        }
        match req.uri().path() {
            "/metrics" if !probes_only => {
                let openmetrics = req
                    .headers()
                    .get(ACCEPT)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| v.contains("application/openmetrics-text"));
                let (body, ctype) = if openmetrics {
                    (
                        self.metrics.openmetrics(),
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )
                } else {
                    (
                        self.metrics.prometheus_text(),
                        "text/plain; version=0.0.4; charset=utf-8",
                    )
                };
                let mut r = Response::new(Full::new(Bytes::from(body)));
                r.headers_mut()
                    .insert(CONTENT_TYPE, hyper::header::HeaderValue::from_static(ctype));
                r
            }
            "/healthz" | "/livez" => text(StatusCode::OK, "ok\n"),
            "/readyz" => {
                if self.ready.load(Ordering::Relaxed) {
                    text(StatusCode::OK, "ready\n")
                } else {
                    text(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "not ready: caches not synced or Prometheus not reached yet\n",
                    )
                }
            }
            "/" if probes_only => text(StatusCode::OK, "spillway probes: /healthz /readyz\n"),
            "/" => text(
                StatusCode::OK,
                "spillway admin: /metrics /healthz /readyz\n",
            ),
            _ => text(StatusCode::NOT_FOUND, "not found\n"),
        }
    }
}

/// Limits of the admin server: it must stay up (for the kubelet's probes and Prometheus)
/// whatever its clients do.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Connections served at once; more wait in the listen backlog.
    pub max_connections: usize,
    /// Time a client has to send a request's headers.
    pub header_read_timeout: Duration,
    /// Longest life of one connection, busy or idle.
    pub connection_lifetime: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 64,
            header_read_timeout: Duration::from_secs(5),
            connection_lifetime: Duration::from_secs(30),
        }
    }
}

impl Limits {
    /// The probe listener's: the kubelet sends a probe's headers at once and waits 1 s for the
    /// answer by default, so a client slower than that is not a kubelet.
    pub fn probes() -> Self {
        Self {
            max_connections: 16,
            header_read_timeout: Duration::from_secs(1),
            connection_lifetime: Duration::from_secs(10),
        }
    }
}

/// Binds `addr` now (so a bad address fails at start-up) and returns the bound address and the
/// serving future, which ends when `shutdown` turns true.
pub async fn bind(
    addr: SocketAddr,
    admin: Admin,
    shutdown: watch::Receiver<bool>,
) -> std::io::Result<(SocketAddr, impl std::future::Future<Output = ()>)> {
    bind_with(addr, admin, shutdown, Limits::default()).await
}

/// A listener for the probes alone (`/healthz`, `/livez`, `/readyz`; no `/metrics`), with
/// [`Limits::probes`]: the kubelet's port, apart from the one Prometheus's pods reach.
pub async fn bind_probes(
    addr: SocketAddr,
    admin: Admin,
    shutdown: watch::Receiver<bool>,
) -> std::io::Result<(SocketAddr, impl std::future::Future<Output = ()>)> {
    serve(
        addr,
        admin_handler(admin, true),
        shutdown,
        Limits::probes(),
        None,
    )
    .await
}

/// [`bind`] with explicit limits.
pub async fn bind_with(
    addr: SocketAddr,
    admin: Admin,
    shutdown: watch::Receiver<bool>,
    limits: Limits,
) -> std::io::Result<(SocketAddr, impl std::future::Future<Output = ()>)> {
    serve(addr, admin_handler(admin, false), shutdown, limits, None).await
}

/// What answers each request of a connection.
pub(crate) type Handler =
    Arc<dyn Fn(Request<Incoming>) -> BoxFuture<'static, Response<Full<Bytes>>> + Send + Sync>;

fn admin_handler(admin: Admin, probes_only: bool) -> Handler {
    Arc::new(move |req| {
        let resp = admin.respond(&req, probes_only);
        Box::pin(async move { resp })
    })
}

/// Binds `addr` and returns the bound address and the loop that serves it under `limits` until
/// `shutdown`: plain HTTP/1.1, or TLS first when `tls` is set (the handshake bounded by the
/// header timeout too, so a client that never finishes it holds its slot at most twice that).
pub(crate) async fn serve(
    addr: SocketAddr,
    handler: Handler,
    mut shutdown: watch::Receiver<bool>,
    limits: Limits,
    tls: Option<TlsAcceptor>,
) -> std::io::Result<(SocketAddr, impl std::future::Future<Output = ()>)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let serve = async move {
        // Accept errors (out of file descriptors, above all) back off instead of spinning, and
        // are logged once per run of failures rather than once per attempt.
        let mut backoff = Duration::ZERO;
        let mut failures = 0u64;
        loop {
            let permit = tokio::select! {
                p = slots.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => break,
                },
                _ = shutdown.wait_for(|stop| *stop) => break,
            };
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = shutdown.wait_for(|stop| *stop) => break,
            };
            let stream = match accepted {
                Ok((s, _)) => {
                    if failures > 0 {
                        tracing::info!(addr = %local, failures, "accepting again");
                    }
                    failures = 0;
                    backoff = Duration::ZERO;
                    s
                }
                Err(e) => {
                    failures += 1;
                    if failures == 1 {
                        tracing::warn!(addr = %local, error = %e, "accept failed; backing off");
                    }
                    backoff =
                        (backoff * 2).clamp(Duration::from_millis(10), Duration::from_secs(1));
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        _ = shutdown.wait_for(|stop| *stop) => break,
                    }
                    continue;
                }
            };
            let handler = handler.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                let _permit = permit;
                connection(stream, handler, limits, tls).await;
            });
        }
    };
    Ok((local, serve))
}

/// Serves one accepted connection to its end.
async fn connection(stream: TcpStream, handler: Handler, limits: Limits, tls: Option<TlsAcceptor>) {
    match tls {
        None => drive(TokioIo::new(stream), handler, limits).await,
        Some(tls) => {
            match tokio::time::timeout(limits.header_read_timeout, tls.accept(stream)).await {
                Ok(Ok(stream)) => drive(TokioIo::new(stream), handler, limits).await,
                Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!("TLS handshake not finished within the header timeout"),
            }
        }
    }
}

/// Runs HTTP/1.1 on `io` for at most the connection's lifetime.
async fn drive<I>(io: I, handler: Handler, limits: Limits)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let svc = service_fn(move |req| {
        let resp = handler(req);
        async move { Ok::<_, std::convert::Infallible>(resp.await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .serve_connection(io, svc);
    let mut conn = std::pin::pin!(conn);
    // At the end of its lifetime a connection finishes the request in flight (a scrape is
    // never cut) and closes; a client that will not finish is cut.
    let ended = tokio::select! {
        r = conn.as_mut() => Some(r),
        () = tokio::time::sleep(limits.connection_lifetime) => None,
    };
    let ended = match ended {
        Some(r) => Some(r),
        None => {
            conn.as_mut().graceful_shutdown();
            tokio::time::timeout(limits.header_read_timeout, conn)
                .await
                .ok()
        }
    };
    match ended {
        Some(Ok(())) => {}
        Some(Err(e)) => tracing::debug!(error = %e, "connection ended with an error"),
        None => tracing::debug!("connection cut at its lifetime"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(addr: SocketAddr, path: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    /// Idle and slow clients fill the connection slots; the header timeout frees them, so the
    /// probes get through. (Without a header timeout the idle connections hold forever, and
    /// the probe below never finishes.)
    #[tokio::test(start_paused = true)]
    async fn slow_and_idle_clients_cannot_starve_the_probes() {
        let (_stop, stopped) = watch::channel(false);
        let admin = Admin::new(Arc::new(Metrics::new()));
        let limits = Limits {
            max_connections: 4,
            header_read_timeout: Duration::from_secs(5),
            connection_lifetime: Duration::from_secs(30),
        };
        let (addr, serve) = bind_with("127.0.0.1:0".parse().unwrap(), admin, stopped, limits)
            .await
            .unwrap();
        tokio::spawn(serve);
        let mut idle = vec![];
        for _ in 0..4 {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            // Slowloris: half a request line, never finished.
            s.write_all(b"GET /metr").await.unwrap();
            idle.push(s);
        }
        let started = tokio::time::Instant::now();
        let answer = get(addr, "/healthz").await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        // Served once the header timeout (5 s) freed a slot, not at the connection lifetime.
        assert!(
            started.elapsed() <= Duration::from_secs(6),
            "{:?}",
            started.elapsed()
        );
        // The slow clients were cut off (EOF or a 408, then EOF).
        for mut s in idle {
            let mut buf = Vec::new();
            let _ = s.read_to_end(&mut buf).await;
        }
        assert!(started.elapsed() <= Duration::from_secs(6));
    }

    /// Issue 30: 200 clients re-opening slowloris connections to the admin port left 0 of 20
    /// `/healthz` answered within the kubelet's 1 s. With 500 such clients holding every admin
    /// slot and filling its backlog, a probe on the admin port waits for a header timeout; on
    /// the probe listener each of 100 probes is answered at once (virtual time: a wait on
    /// any timer would show), and it serves no `/metrics`.
    #[tokio::test(start_paused = true)]
    async fn probes_on_their_own_listener_are_answered_under_a_flood() {
        let (_stop, stopped) = watch::channel(false);
        let admin = Admin::new(Arc::new(Metrics::new()));
        admin.set_ready(true);
        let any = "127.0.0.1:0".parse().unwrap();
        let (admin_addr, serve) = bind(any, admin.clone(), stopped.clone()).await.unwrap();
        tokio::spawn(serve);
        let (probe_addr, serve) = bind_probes(any, admin, stopped).await.unwrap();
        tokio::spawn(serve);
        let mut flood = vec![];
        for _ in 0..500 {
            let mut s = tokio::net::TcpStream::connect(admin_addr).await.unwrap();
            let _ = s.write_all(b"GET /metr").await;
            flood.push(s);
        }
        for _ in 0..100 {
            let started = tokio::time::Instant::now();
            for path in ["/healthz", "/readyz"] {
                let answer = get(probe_addr, path).await;
                assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
            }
            assert!(
                started.elapsed() < Duration::from_secs(1),
                "{:?}",
                started.elapsed()
            );
        }
        assert!(
            get(probe_addr, "/metrics")
                .await
                .starts_with("HTTP/1.1 404")
        );
        let started = tokio::time::Instant::now();
        let answer = get(admin_addr, "/healthz").await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(
            started.elapsed() >= Duration::from_secs(4),
            "{:?}",
            started.elapsed()
        );
        drop(flood);
    }
}
