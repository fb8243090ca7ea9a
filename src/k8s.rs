//! Kubernetes I/O: the watches that feed the cluster index, the target workload, the writes,
//! and the controller that runs the engine on every ElasticGateway.

pub mod controller;
pub mod index;
pub mod target;
pub mod watch;

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
        config.write_timeout = read_timeout;
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
