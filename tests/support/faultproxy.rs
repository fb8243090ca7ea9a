//! A fault-injecting proxy between one agent and the real apiserver: it forwards every request
//! (the agent's ServiceAccount token included) and, on request, answers with an error status,
//! delays, drops or truncates watch streams, holds matching requests until released, or stops
//! forwarding altogether (a partition). It logs every request with its status, so a test can
//! say who wrote what, and when.
//!
//! A held or partitioned request waits with its body read: if its client gives up meanwhile
//! (closes the connection), hyper drops the handler and the request is never forwarded, as a
//! request lost in a partition is never delivered.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

type Body = BoxBody<Bytes, std::io::Error>;

/// One request as the proxy saw it.
#[derive(Clone, Debug)]
pub struct Logged {
    pub method: String,
    /// Path and query.
    pub path: String,
    pub status: u16,
    pub at: Instant,
    /// Whether it reached the apiserver (an injected fault or a partition did not).
    pub forwarded: bool,
}

impl Logged {
    pub fn is_write(&self) -> bool {
        matches!(self.method.as_str(), "POST" | "PUT" | "PATCH" | "DELETE")
    }

    /// A request to the Lease API: a renewal, or the create both candidates try at start
    /// (`POST …/leases`, which the loser sees refused with 409).
    pub fn is_lease(&self) -> bool {
        self.path.contains("/apis/coordination.k8s.io/")
    }
}

/// Requests whose method and path match wait (neither forwarded nor answered) while this is set.
#[derive(Clone, Debug)]
pub struct Hold {
    pub method: &'static str,
    pub path_contains: String,
}

/// Answer `status` to the next `times` requests whose method and path match.
#[derive(Clone, Debug)]
pub struct Fault {
    pub method: &'static str,
    pub path_contains: String,
    pub status: u16,
    pub times: usize,
}

#[derive(Default)]
pub struct State {
    pub faults: Vec<Fault>,
    /// Added before each request is forwarded.
    pub delay: Duration,
    /// No request is forwarded or answered while set: the agent is cut off.
    pub partitioned: bool,
    /// Matching requests wait until this is cleared (then go on, unless partitioned).
    pub hold: Option<Hold>,
    /// How many requests the hold has caught.
    pub held: usize,
    pub log: Vec<Logged>,
    /// Bumped to end every open watch stream.
    watch_generation: u64,
    /// When set, open watch streams end in the middle of an event.
    truncate: bool,
}

impl State {
    /// Ends every open watch stream cleanly.
    pub fn drop_watches(&mut self) {
        self.truncate = false;
        self.watch_generation += 1;
    }

    /// Ends every open watch stream in the middle of an event (half a JSON line).
    pub fn truncate_watches(&mut self) {
        self.truncate = true;
        self.watch_generation += 1;
    }

    pub fn writes(&self) -> Vec<&Logged> {
        self.log.iter().filter(|l| l.is_write()).collect()
    }

    fn take_fault(&mut self, method: &str, path: &str) -> Option<u16> {
        let f = self
            .faults
            .iter_mut()
            .find(|f| f.times > 0 && f.method == method && path.contains(&f.path_contains))?;
        f.times -= 1;
        Some(f.status)
    }
}

#[derive(Clone)]
pub struct FaultProxy {
    pub port: u16,
    state: Arc<Mutex<State>>,
}

impl FaultProxy {
    /// Listens on loopback (plain HTTP) and forwards to the apiserver at `upstream` (HTTPS,
    /// trusting `ca_pem`).
    pub async fn start(upstream: String, ca_pem: &[u8]) -> Self {
        super::testbed::install_crypto();
        let ca = reqwest::Certificate::from_pem(ca_pem).unwrap();
        let http = reqwest::Client::builder()
            .add_root_certificate(ca)
            .http1_only()
            .build()
            .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let proxy = Self {
            port,
            state: Arc::new(Mutex::new(State::default())),
        };
        let p = proxy.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let (p, http, upstream) = (p.clone(), http.clone(), upstream.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let (p, http, upstream) = (p.clone(), http.clone(), upstream.clone());
                        async move { Ok::<_, Infallible>(p.handle(req, &http, &upstream).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        proxy
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        f(&mut self.state.lock().unwrap())
    }

    fn log(&self, method: &str, path: &str, status: u16, forwarded: bool) {
        self.with(|st| {
            st.log.push(Logged {
                method: method.into(),
                path: path.into(),
                status,
                at: Instant::now(),
                forwarded,
            })
        });
    }

    async fn handle(
        &self,
        req: Request<Incoming>,
        http: &reqwest::Client,
        upstream: &str,
    ) -> Response<Body> {
        let method = req.method().to_string();
        let path = req
            .uri()
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default();
        let (parts, body) = req.into_parts();
        let body = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        // A partition or a hold: the request waits; one whose client gives up is never forwarded.
        let mut caught = false;
        loop {
            let (cut, held) = self.with(|st| {
                let held = st
                    .hold
                    .as_ref()
                    .is_some_and(|h| h.method == method && path.contains(&h.path_contains));
                if held && !caught {
                    st.held += 1;
                }
                (st.partitioned, held)
            });
            caught |= held;
            if !cut && !held {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (fault, delay, generation) =
            self.with(|st| (st.take_fault(&method, &path), st.delay, st.watch_generation));
        if let Some(status) = fault {
            self.log(&method, &path, status, false);
            let body = format!(
                r#"{{"kind":"Status","apiVersion":"v1","metadata":{{}},"status":"Failure","message":"injected by the fault proxy","reason":"InternalError","code":{status}}}"#
            );
            return Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .body(full(body))
                .unwrap();
        }
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let mut out = http.request(parts.method.clone(), format!("{upstream}{path}"));
        for (k, v) in &parts.headers {
            if k != hyper::header::HOST && k != hyper::header::CONNECTION {
                out = out.header(k, v);
            }
        }
        let resp = match out.body(body).send().await {
            Ok(r) => r,
            Err(e) => {
                self.log(&method, &path, 502, false);
                return Response::builder()
                    .status(502)
                    .body(full(format!("fault proxy: upstream failed: {e}")))
                    .unwrap();
            }
        };
        let status = resp.status().as_u16();
        self.log(&method, &path, status, true);
        let mut builder = Response::builder().status(status);
        for (k, v) in resp.headers() {
            if k != hyper::header::CONTENT_LENGTH && k != hyper::header::TRANSFER_ENCODING {
                builder = builder.header(k, v);
            }
        }
        let is_watch = path.contains("watch=true") || path.contains("watch=1");
        if !is_watch {
            let bytes = resp.bytes().await.unwrap_or_default();
            return builder.body(full(bytes)).unwrap();
        }
        // A watch: pass events through until the test drops or truncates the streams.
        let state = self.state.clone();
        let stream = resp
            .bytes_stream()
            .map(Some)
            .chain(futures::stream::once(async { None }));
        let body = futures::stream::unfold(
            (Box::pin(stream), state, false),
            move |(mut stream, state, done)| async move {
                if done {
                    return None;
                }
                let next = tokio::select! {
                    n = stream.next() => n.flatten(),
                    () = ended(&state, generation) => None,
                };
                let (now_gen, truncate) = {
                    let st = state.lock().unwrap();
                    (st.watch_generation, st.truncate)
                };
                match next {
                    Some(Ok(chunk)) if now_gen == generation => {
                        Some((Ok(Frame::data(chunk)), (stream, state, false)))
                    }
                    Some(Ok(chunk)) if truncate && chunk.len() > 1 => {
                        let half = chunk.slice(..chunk.len() / 2);
                        Some((Ok(Frame::data(half)), (stream, state, true)))
                    }
                    Some(Err(e)) => Some((
                        Err(std::io::Error::other(e.to_string())),
                        (stream, state, true),
                    )),
                    _ if truncate => Some((
                        Ok(Frame::data(Bytes::from_static(
                            b"{\"type\":\"MODIFIED\",\"object\":{\"kind\"",
                        ))),
                        (stream, state, true),
                    )),
                    _ => None,
                }
            },
        );
        builder.body(BodyExt::boxed(StreamBody::new(body))).unwrap()
    }
}

/// Resolves once the watch generation moves past `generation`.
async fn ended(state: &Arc<Mutex<State>>, generation: u64) {
    loop {
        if state.lock().unwrap().watch_generation != generation {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|e| match e {}).boxed()
}
