//! The observability endpoint: a small HTTP/1.1 server for `/metrics`, `/healthz` and `/readyz`.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::registry::Metrics;

/// Scrapers served at once; more wait in the accept queue. Scrapes are rare and cheap, so this
/// only bounds what a misbehaving client can hold.
const MAX_CLIENTS: usize = 32;
/// A client must send its request head within this time.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest pause of the accept loop after an accept error.
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// The bound endpoint; [`serve`](Endpoint::serve) answers until dropped (abort its task).
pub struct Endpoint {
    /// The bound socket: binding happens before any proxy listener accepts, so that a taken
    /// port is a startup error.
    socket: TcpListener,
    /// What the endpoint reports.
    metrics: Arc<Metrics>,
}

impl Endpoint {
    /// Binds `addr`.
    pub async fn bind(addr: SocketAddr, metrics: Arc<Metrics>) -> io::Result<Endpoint> {
        let socket = TcpListener::bind(addr)
            .await
            .map_err(|e| io::Error::new(e.kind(), format!("bind metrics endpoint {addr}: {e}")))?;
        Ok(Endpoint { socket, metrics })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Answers requests until the task is dropped.
    pub async fn serve(self) {
        let slots = Arc::new(Semaphore::new(MAX_CLIENTS));
        let mut backoff = Duration::from_millis(5);
        loop {
            let Ok(permit) = slots.clone().acquire_owned().await else { return };
            match self.socket.accept().await {
                Ok((stream, _)) => {
                    backoff = Duration::from_millis(5);
                    let metrics = self.metrics.clone();
                    tokio::spawn(async move {
                        let service = service_fn(move |req| {
                            let response = respond(&metrics, &req);
                            async move { Ok::<_, Infallible>(response) }
                        });
                        let _ = http1::Builder::new()
                            .timer(TokioTimer::new())
                            .header_read_timeout(HEADER_TIMEOUT)
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                        drop(permit);
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, ?backoff, "metrics endpoint: accept failed; backing off");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_ACCEPT_BACKOFF);
                }
            }
        }
    }
}

/// Routes one request.
fn respond(metrics: &Metrics, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
    }
    match req.uri().path() {
        "/metrics" => {
            let mut r = Response::new(Full::new(Bytes::from(metrics.render())));
            r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(prometheus::TEXT_FORMAT));
            r
        }
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" if metrics.is_ready() => text(StatusCode::OK, "ready\n"),
        "/readyz" => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
        _ => text(StatusCode::NOT_FOUND, "not found: try /metrics, /healthz or /readyz\n"),
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}
