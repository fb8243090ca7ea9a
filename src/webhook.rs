//! The validating admission webhook for ElasticGateways: the agent's own validation (what
//! `spillway check` runs) at admission, for what the CRD's schema and CEL cannot judge: PromQL
//! above all. Every replica serves it (it needs no Lease and no cache), over TLS, with a
//! certificate read from files (the Secret the chart makes, or cert-manager's) and read again
//! when they change, as a Secret volume is updated in place.
//!
//! It judges the spec alone: an update that leaves the spec as it was passes (so an object
//! admitted while the webhook was away can still lose its finalizer and be deleted), and so does
//! every status write (the rules do not name `elasticgateways/status`).

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::CONTENT_TYPE;
use hyper::{Method, Request, Response, StatusCode};
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use kube::core::{DynamicObject, Status, response::StatusCause, response::StatusDetails};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::sync::watch;

use crate::metrics::Metrics;
use crate::server::{self, Limits};

/// The path the ValidatingWebhookConfiguration names.
pub const PATH: &str = "/validate";
/// Largest AdmissionReview read: an update carries the object and the old object, each at most
/// etcd's 1.5 MiB. The port is open to every pod (the apiserver's address is not a pod's), so
/// this and [`LIMITS`] bound what a flood can make the agent hold: 8 × 3 MiB.
pub const MAX_REVIEW_BYTES: usize = 3 << 20;
/// The apiserver keeps a few connections to a webhook and reuses them.
pub const LIMITS: Limits = Limits {
    max_connections: 8,
    header_read_timeout: std::time::Duration::from_secs(5),
    connection_lifetime: std::time::Duration::from_secs(30),
};
/// The certificate and key file names in the certificate folder (a `kubernetes.io/tls` Secret's
/// keys).
pub const CERT_FILE: &str = "tls.crt";
pub const KEY_FILE: &str = "tls.key";

/// Judges one admission request: allowed with the policy's advice as warnings, or denied with
/// every field error (each also a cause with its field path).
pub fn judge(req: &AdmissionRequest<DynamicObject>) -> AdmissionResponse {
    let allowed = AdmissionResponse::from(req);
    if req.sub_resource.is_some() || !matches!(req.operation, Operation::Create | Operation::Update)
    {
        return allowed;
    }
    let Some(object) = &req.object else {
        return allowed;
    };
    if object.metadata.deletion_timestamp.is_some() {
        return allowed;
    }
    if req.operation == Operation::Update
        && req
            .old_object
            .as_ref()
            .is_some_and(|old| old.data.get("spec") == object.data.get("spec"))
    {
        return allowed;
    }
    let Ok(value) = serde_json::to_value(object) else {
        return allowed.deny("the object could not be read back as JSON");
    };
    match crate::policy::policy_from_object(value) {
        Ok(egw) => {
            let advice = egw.spec.advice();
            let mut allowed = allowed;
            if !advice.is_empty() {
                allowed.warnings = Some(advice);
            }
            allowed
        }
        Err(errors) => {
            let message = errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ");
            let causes = errors
                .iter()
                .map(|e| StatusCause {
                    reason: "FieldValueInvalid".into(),
                    message: e.message.clone(),
                    field: e.path.clone(),
                })
                .collect();
            let mut denied = allowed.deny(&message);
            denied.result = Status::failure(&message, "Invalid")
                .with_code(422)
                .with_details(StatusDetails {
                    name: req.name.clone(),
                    group: req.kind.group.clone(),
                    kind: req.kind.kind.clone(),
                    uid: String::new(),
                    causes,
                    retry_after_seconds: 0,
                });
            denied
        }
    }
}

/// The answer to one request body, and its result for `spillway_admission_reviews_total`.
pub fn review(body: &[u8]) -> (AdmissionReview<DynamicObject>, &'static str) {
    let request = serde_json::from_slice::<AdmissionReview<DynamicObject>>(body)
        .map_err(|e| format!("not an AdmissionReview: {e}"))
        .and_then(|r| {
            r.try_into()
                .map_err(|_| "an AdmissionReview without a request".to_string())
        });
    let req: AdmissionRequest<DynamicObject> = match request {
        Ok(req) => req,
        Err(e) => return (AdmissionResponse::invalid(e).into_review(), "invalid"),
    };
    let resp = judge(&req);
    let ns = req.namespace.as_deref().unwrap_or("");
    if resp.allowed {
        tracing::debug!(namespace = ns, name = %req.name, operation = ?req.operation, "admitted");
        (resp.into_review(), "allowed")
    } else {
        tracing::info!(namespace = ns, name = %req.name, operation = ?req.operation, reason = %resp.result.message, "denied");
        (resp.into_review(), "denied")
    }
}

async fn respond(req: Request<Incoming>, metrics: &Metrics) -> Response<Full<Bytes>> {
    let text = |status: StatusCode, body: &'static str| {
        let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
        *r.status_mut() = status;
        r
    };
    if req.uri().path() != PATH {
        return text(StatusCode::NOT_FOUND, "not found\n");
    }
    if req.method() != Method::POST {
        return text(StatusCode::METHOD_NOT_ALLOWED, "POST only\n");
    }
    let body = match Limited::new(req.into_body(), MAX_REVIEW_BYTES)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            metrics.process.admission_review("invalid");
            tracing::info!(error = %e, "admission review not read");
            return text(StatusCode::PAYLOAD_TOO_LARGE, "review not read\n");
        }
    };
    let (answer, result) = review(&body);
    metrics.process.admission_review(result);
    match serde_json::to_vec(&answer) {
        Ok(json) => {
            let mut r = Response::new(Full::new(Bytes::from(json)));
            r.headers_mut().insert(
                CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("application/json"),
            );
            r
        }
        Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "answer not written\n"),
    }
}

/// The serving certificate, read from `tls.crt` and `tls.key` in a folder, and read again on
/// the first handshake after either file changes (a Secret volume swaps both at once). A change
/// that does not load keeps the last good pair; with none yet, handshakes fail (the webhook's
/// `failurePolicy` decides) and the agent runs on.
#[derive(Debug)]
pub struct CertFiles {
    cert: PathBuf,
    key: PathBuf,
    provider: Arc<CryptoProvider>,
    loaded: RwLock<Loaded>,
}

#[derive(Debug, Default)]
struct Loaded {
    /// The files were looked at once (a first miss is warned about; the next ones are not).
    looked: bool,
    stamp: Option<Stamp>,
    key: Option<Arc<CertifiedKey>>,
}

/// What says a file changed: its inode (a Secret volume, like cert-manager, swaps in new
/// files), modification time and length, of both files.
type Stamp = [(u64, SystemTime, u64); 2];

impl CertFiles {
    pub fn new(dir: &Path, provider: Arc<CryptoProvider>) -> Self {
        let files = Self {
            cert: dir.join(CERT_FILE),
            key: dir.join(KEY_FILE),
            provider,
            loaded: RwLock::default(),
        };
        files.current();
        files
    }

    fn stamp(&self) -> Option<Stamp> {
        use std::os::unix::fs::MetadataExt as _;
        let of = |p: &Path| {
            let m = std::fs::metadata(p).ok()?;
            Some((m.ino(), m.modified().ok()?, m.len()))
        };
        Some([of(&self.cert)?, of(&self.key)?])
    }

    fn load(&self) -> Result<Arc<CertifiedKey>, String> {
        let certs = CertificateDer::pem_file_iter(&self.cert)
            .and_then(|i| i.collect::<Result<Vec<_>, _>>())
            .map_err(|e| format!("{}: {e}", self.cert.display()))?;
        if certs.is_empty() {
            return Err(format!("{}: holds no certificate", self.cert.display()));
        }
        let key = PrivateKeyDer::from_pem_file(&self.key)
            .map_err(|e| format!("{}: {e}", self.key.display()))?;
        CertifiedKey::from_der(certs, key, &self.provider)
            .map(Arc::new)
            .map_err(|e| format!("{} and {}: {e}", self.cert.display(), self.key.display()))
    }

    /// The pair to serve with, read again first if the files changed since the last read.
    fn current(&self) -> Option<Arc<CertifiedKey>> {
        let stamp = self.stamp();
        {
            let loaded = self.loaded.read().unwrap_or_else(|p| p.into_inner());
            if loaded.looked && loaded.stamp == stamp {
                return loaded.key.clone();
            }
        }
        let mut loaded = self.loaded.write().unwrap_or_else(|p| p.into_inner());
        if loaded.looked && loaded.stamp == stamp {
            return loaded.key.clone();
        }
        let first = !loaded.looked;
        loaded.looked = true;
        match stamp {
            None => {
                if first || loaded.stamp.is_some() {
                    tracing::warn!(cert = %self.cert.display(), key = %self.key.display(), "admission webhook: certificate files missing; handshakes fail until they appear");
                }
            }
            Some(_) => match self.load() {
                Ok(key) => {
                    tracing::info!(cert = %self.cert.display(), "admission webhook: certificate loaded");
                    loaded.key = Some(key);
                }
                Err(e) => {
                    tracing::warn!(error = %e, kept = loaded.key.is_some(), "admission webhook: certificate not loaded");
                }
            },
        }
        loaded.stamp = stamp;
        loaded.key.clone()
    }
}

impl ResolvesServerCert for CertFiles {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current()
    }
}

/// Binds the webhook on `addr` (so a bad address fails at start-up) and returns the bound
/// address and the serving future, which ends when `shutdown` turns true.
pub async fn bind(
    addr: std::net::SocketAddr,
    cert_dir: PathBuf,
    metrics: Arc<Metrics>,
    shutdown: watch::Receiver<bool>,
) -> Result<(std::net::SocketAddr, impl Future<Output = ()>), crate::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs = Arc::new(CertFiles::new(&cert_dir, provider.clone()));
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| crate::Error::Config(format!("admission webhook TLS: {e}")))?
        .with_no_client_auth()
        .with_cert_resolver(certs);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let handler: server::Handler = Arc::new(move |req| {
        let metrics = metrics.clone();
        Box::pin(async move { respond(req, &metrics).await })
    });
    server::serve(
        addr,
        handler,
        shutdown,
        LIMITS,
        Some(tokio_rustls::TlsAcceptor::from(Arc::new(config))),
    )
    .await
    .map_err(|e| crate::Error::Config(format!("binding the admission webhook on {addr}: {e}")))
}

#[cfg(test)]
mod tests;
