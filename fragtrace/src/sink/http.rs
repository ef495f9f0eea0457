//! The daemon's HTTP listener (hyper, HTTP/1): `GET /metrics` and `GET /healthz`, read-only.
//! Nothing it serves changes fragtrace: there is no remote control. A scrape is answered by the
//! daemon's own loop (through [`ScrapeRequests`]), which owns every figure, so the metrics are
//! read at scrape time without locks shared with analysis. Connections are bounded in number
//! and time, so a slow or hostile client costs a fixed amount of memory.
use std::{
    convert::Infallible,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{
    Method, Request, Response, StatusCode, body::Incoming, header, server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{
    net::TcpListener,
    sync::{Semaphore, mpsc, oneshot},
};

use crate::decode::event::MonotonicClock;

/// Scrapes for the daemon's loop to answer, each with where to send the exposition text.
pub type ScrapeRequests = mpsc::Sender<oneshot::Sender<String>>;

/// Connections served at once; more wait in the kernel's accept queue.
const MAX_CONNECTIONS: usize = 16;
/// A connection is closed after this long, whatever it is doing.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(120);
/// A request's headers must arrive within this.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a scrape waits for the daemon's loop.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(10);
/// `/healthz` fails when the drain thread or the daemon's loop has not run for this long.
pub const STALE_AFTER: Duration = Duration::from_secs(5);

/// What `/healthz` judges: set by the daemon's loop, read by the listener.
#[derive(Default)]
pub struct Health {
    /// Hooks attached; 0 until attached.
    attached: AtomicUsize,
    summary: Mutex<String>,
    /// CLOCK_MONOTONIC ns of the loop's latest pass and of the drain thread's latest pass.
    loop_ns: AtomicU64,
    drain_ns: AtomicU64,
}

impl Health {
    pub fn attached(&self, hooks: usize, summary: String) {
        *self.summary.lock().unwrap_or_else(|p| p.into_inner()) = summary;
        self.attached.store(hooks, Ordering::Release);
    }

    /// The loop ran now; the drain thread last passed at `drain_ns`.
    pub fn beat(&self, drain_ns: u64) {
        self.loop_ns
            .store(MonotonicClock::monotonic_now_ns(), Ordering::Relaxed);
        self.drain_ns.store(drain_ns, Ordering::Relaxed);
    }

    /// Ok with a line when healthy, else Err with what is wrong.
    pub fn check(&self) -> Result<String, String> {
        let hooks = self.attached.load(Ordering::Acquire);
        if hooks == 0 {
            return Err("not attached yet".into());
        }
        let now = MonotonicClock::monotonic_now_ns();
        let age =
            |ns: &AtomicU64| Duration::from_nanos(now.saturating_sub(ns.load(Ordering::Relaxed)));
        let (loop_age, drain_age) = (age(&self.loop_ns), age(&self.drain_ns));
        let summary = self
            .summary
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if drain_age > STALE_AFTER {
            return Err(format!(
                "the ring-buffer drain has not run for {:.1}s",
                drain_age.as_secs_f64()
            ));
        }
        if loop_age > STALE_AFTER {
            return Err(format!(
                "the analysis loop has not run for {:.1}s",
                loop_age.as_secs_f64()
            ));
        }
        Ok(format!(
            "ok: {summary}; drained {:.1}s ago",
            drain_age.as_secs_f64()
        ))
    }
}

/// Serves connections from `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, health: Arc<Health>, scrapes: ScrapeRequests) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(_) => {
                // Out of file descriptors, say: wait rather than spin.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (health, scrapes) = (health.clone(), scrapes.clone());
        tokio::spawn(async move {
            let service = service_fn(move |req| respond(req, health.clone(), scrapes.clone()));
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .max_buf_size(16 << 10)
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(CONNECTION_LIFETIME, connection).await;
            drop(slot);
        });
    }
}

async fn respond(
    req: Request<Incoming>,
    health: Arc<Health>,
    scrapes: ScrapeRequests,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n".into());
        r.headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
        return Ok(r);
    }
    Ok(match req.uri().path() {
        "/metrics" => metrics(&scrapes).await,
        "/healthz" => match health.check() {
            Ok(line) => text(StatusCode::OK, line + "\n"),
            Err(line) => text(StatusCode::SERVICE_UNAVAILABLE, line + "\n"),
        },
        "/" => text(
            StatusCode::OK,
            "fragtrace daemon: /metrics (Prometheus), /healthz\n".into(),
        ),
        _ => text(StatusCode::NOT_FOUND, "not found: try /metrics\n".into()),
    })
}

async fn metrics(scrapes: &ScrapeRequests) -> Response<Full<Bytes>> {
    let (reply, answer) = oneshot::channel();
    if scrapes.try_send(reply).is_err() {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many scrapes at once\n".into(),
        );
    }
    match tokio::time::timeout(SCRAPE_TIMEOUT, answer).await {
        Ok(Ok(body)) => {
            let mut r = Response::new(Full::new(Bytes::from(body)));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static(super::metrics::CONTENT_TYPE),
            );
            r
        }
        Ok(Err(_)) => text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n".into()),
        Err(_) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "the daemon's loop did not answer in time\n".into(),
        ),
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}
