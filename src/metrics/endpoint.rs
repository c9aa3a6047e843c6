//! The observability endpoint: a small HTTP/1.1 server for `/metrics`, `/rules`, `/decisions`,
//! `/healthz` and `/readyz`, and the page at `/` that shows the decisions.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{
    CACHE_CONTROL, CONNECTION, CONTENT_SECURITY_POLICY, CONTENT_TYPE, HeaderValue, REFERRER_POLICY,
    X_CONTENT_TYPE_OPTIONS,
};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use super::page::page;
use super::registry::Metrics;

/// Connections held at once. A new one beyond it closes the oldest: scrapers and probes connect,
/// ask and go, so clients that hold connections cannot keep the liveness probe out, and the
/// endpoint holds no more than this whatever they do.
pub const MAX_CLIENTS: usize = 64;
/// A client must send each request head within this time, the first and the next on a
/// kept-alive connection alike.
const HEADER_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest a connection is kept, however busy.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(10);
/// Requests one connection may make; the last answer closes it.
const MAX_REQUESTS: usize = 100;
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
        let socket = TcpListener::bind(addr).await.map_err(|e| crate::sys::bind_error("metrics endpoint", addr, e))?;
        Ok(Endpoint { socket, metrics })
    }

    /// The endpoint on a listening socket handed over by a running snigate.
    pub fn adopt(socket: socket2::Socket, metrics: Arc<Metrics>) -> io::Result<Endpoint> {
        socket.set_nonblocking(true)?;
        Ok(Endpoint { socket: TcpListener::from_std(std::net::TcpListener::from(socket))?, metrics })
    }

    /// A duplicate of the listening socket, to hand over to a new process.
    pub fn socket(&self) -> io::Result<socket2::Socket> {
        socket2::SockRef::from(&self.socket).try_clone()
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Answers requests until the task is dropped.
    pub async fn serve(self) {
        let clients = Arc::new(Mutex::new(Clients::default()));
        let mut backoff = Duration::from_millis(5);
        loop {
            match self.socket.accept().await {
                Ok((stream, _)) => {
                    backoff = Duration::from_millis(5);
                    let (id, evicted) = lock(&clients).admit();
                    let (metrics, clients) = (self.metrics.clone(), clients.clone());
                    tokio::spawn(async move {
                        let served = AtomicUsize::new(0);
                        let service = service_fn(|req| {
                            let mut response = respond(&metrics, &req);
                            if served.fetch_add(1, Ordering::Relaxed) + 1 >= MAX_REQUESTS {
                                response.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
                            }
                            async move { Ok::<_, Infallible>(response) }
                        });
                        let connection = http1::Builder::new()
                            .timer(TokioTimer::new())
                            .header_read_timeout(HEADER_TIMEOUT)
                            .serve_connection(TokioIo::new(stream), service);
                        tokio::select! {
                            _ = tokio::time::timeout(CONNECTION_LIFETIME, connection) => {}
                            _ = evicted => {}
                        }
                        lock(&clients).leave(id);
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

/// The connections held, oldest first, each with the sender whose drop closes it.
#[derive(Default)]
struct Clients {
    /// Numbers connections in accept order.
    next: u64,
    /// At most [`MAX_CLIENTS`] connections.
    open: VecDeque<(u64, oneshot::Sender<()>)>,
}

impl Clients {
    /// Admits a new connection, closing the oldest when full; the receiver resolves when the
    /// new one is to be closed in turn.
    fn admit(&mut self) -> (u64, oneshot::Receiver<()>) {
        if self.open.len() >= MAX_CLIENTS {
            self.open.pop_front();
        }
        let (tx, rx) = oneshot::channel();
        self.next += 1;
        self.open.push_back((self.next, tx));
        (self.next, rx)
    }

    /// A connection has ended.
    fn leave(&mut self, id: u64) {
        self.open.retain(|(open, _)| *open != id);
    }
}

fn lock(clients: &Mutex<Clients>) -> std::sync::MutexGuard<'_, Clients> {
    clients.lock().unwrap_or_else(|e| e.into_inner())
}

/// Routes one request. No answer is to be read as another type than it says.
fn respond(metrics: &Metrics, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let mut r = route(metrics, req);
    r.headers_mut().insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    r
}

fn route(metrics: &Metrics, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
    }
    match req.uri().path() {
        "/" => {
            let page = page();
            let mut r = Response::new(Full::new(Bytes::from_static(page.html.as_bytes())));
            let headers = r.headers_mut();
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
            if let Ok(policy) = HeaderValue::from_str(&page.policy) {
                headers.insert(CONTENT_SECURITY_POLICY, policy);
            }
            headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
            r
        }
        "/decisions" => {
            let mut r = Response::new(Full::new(Bytes::from(metrics.decisions().json())));
            r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            r.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }
        "/metrics" => {
            let mut r = Response::new(Full::new(Bytes::from(metrics.render())));
            r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(prometheus::TEXT_FORMAT));
            r
        }
        "/rules" => {
            let mut r = Response::new(Full::new(Bytes::from(metrics.rules_json())));
            r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            r
        }
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" if metrics.is_ready() => text(StatusCode::OK, "ready\n"),
        "/readyz" => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
        _ => text(StatusCode::NOT_FOUND, "not found: try /, /metrics, /rules, /decisions, /healthz or /readyz\n"),
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}
