//! Kubernetes adapters: the watches that feed the cluster index, the target workload's reads
//! and writes, and the Lease. They import only the model and the policy; the agent
//! ([`crate::agent`]) sits above them.

pub mod index;
pub mod leader;
pub mod planned;
pub mod target;
pub mod watch;
pub mod workloads;

use std::time::Duration;

/// How long one request/response call to the API server may take, unless configured otherwise.
pub const DEFAULT_API_TIMEOUT: Duration = Duration::from_secs(10);

/// Builds a client that never waits on its own: kube's default retry layer (429, 503 and 504,
/// up to 15 times with backoff to 1,000 s, and `Retry-After` honoured) is turned off, because
/// a PodDisruptionBudget answers an eviction with 429 and the caller must see that at once and
/// decide again later. `read_timeout` bounds every read; leave it `None` for a client that
/// watches (a quiet watch would trip it), and bound those calls by the watcher's own timeout.
pub fn client(
    mut config: kube::Config,
    read_timeout: Option<Duration>,
) -> Result<kube::Client, kube::Error> {
    config.default_retry = false;
    config.read_timeout = read_timeout;
    if read_timeout.is_some() {
        // Every phase of a request within the bound (kube's default connect timeout is 30 s),
        // also for the calls kube-runtime makes itself (the finalizer's patches).
        config.write_timeout = read_timeout;
        config.connect_timeout = read_timeout;
    }
    kube::Client::try_from(config)
}

/// Runs one API call, failing it when it takes longer than `limit`: no call may hold a
/// reconcile (or the shutdown waiting for it) indefinitely.
pub async fn bounded<T>(
    limit: Duration,
    call: impl std::future::Future<Output = Result<T, kube::Error>>,
) -> Result<T, kube::Error> {
    match tokio::time::timeout(limit, call).await {
        Ok(r) => r,
        Err(_) => Err(kube::Error::Service(
            format!("no answer from the API server within {limit:?}").into(),
        )),
    }
}

/// Whether the API server answered with this HTTP status code.
pub fn is_status(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use hyper::service::service_fn;

    /// A PodDisruptionBudget refuses an eviction with 429. kube's default client retries that
    /// itself (15 times, backoff to 1,000 s); ours must return it at once, so that the reconcile
    /// goes on and the next decision may try again.
    #[tokio::test]
    async fn a_429_comes_back_at_once() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let h = hits.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let h = h.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |_req| {
                        h.fetch_add(1, Ordering::SeqCst);
                        async move {
                            let body = r#"{"kind":"Status","apiVersion":"v1","status":"Failure","code":429,"reason":"TooManyRequests","message":"Cannot evict pod as it would violate the pod's disruption budget."}"#;
                            let mut r = hyper::Response::new(http_body_util::Full::new(
                                bytes::Bytes::from(body),
                            ));
                            *r.status_mut() = hyper::StatusCode::TOO_MANY_REQUESTS;
                            r.headers_mut().insert(
                                "retry-after",
                                hyper::header::HeaderValue::from_static("1"),
                            );
                            Ok::<_, std::convert::Infallible>(r)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        let config = kube::Config::new(format!("http://{addr}").parse().unwrap());
        let client = super::client(config, Some(super::DEFAULT_API_TIMEOUT)).unwrap();
        let err = super::target::evict(&client, "istio-system", "gw-1")
            .await
            .unwrap_err();
        assert!(super::is_status(&err, 429), "{err}");
        assert_eq!(hits.load(Ordering::SeqCst), 1, "the client retried the 429");
    }
}
