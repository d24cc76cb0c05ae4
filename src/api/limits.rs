//! What one client may take of the node: connections, time to send a body, and memory for
//! bodies — so that no tenant (nor anyone without a key) can make the node unreachable for
//! the others.
//!
//! Invariants:
//! - At most `max_connections` connections do API work at once. [`OPS_PATHS`] have
//!   `ops_connections` more to themselves: a connection accepted over the cap is answered
//!   503 `too_many_connections` and closed for anything else, so `/healthz`, `/readyz` and
//!   `/metrics` still get in while the cap is taken. The listener stops accepting beyond both
//!   (connections then wait in the kernel's backlog, holding no descriptor of Herald's).
//! - A request body must have arrived whole `body_read_timeout` after the request began
//!   (408 `body_timeout`, connection closed): a client trickling a byte now and then holds
//!   its connection and its share of the budget for that long at most.
//! - Before a body is read, its weight — what reading *and* parsing it may cost, its
//!   declared size times [`PARSE_FACTOR`], or the route's largest body when no
//!   `Content-Length` says — is taken from the node-wide `max_body_memory` budget, and given
//!   back when the answer is ready. A request that does not fit waits up to [`BUDGET_WAIT`],
//!   then gets 503 `busy` with `Retry-After`, once its body has been read and dropped (so
//!   a client sending it sees the answer, not a broken pipe). A body larger than its route
//!   takes is refused 413 from its `Content-Length`, before a byte of it is read.

use super::error::ApiError;
use actix_web::dev::{Payload, ServiceRequest};
use actix_web::error::PayloadError;
use actix_web::http::StatusCode;
use actix_web::web::Bytes;
use actix_web::HttpMessage;
use futures_util::{Stream, StreamExt};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Paths served on connections over the cap (health checks and scrapes must get through).
pub const OPS_PATHS: &[&str] = &["/healthz", "/readyz", "/metrics"];

/// What parsing a JSON body may cost in memory, as a multiple of its size: the body itself,
/// each event's `data` parsed (ordered maps, numbers kept as text) and written back compact,
/// and the record it becomes. Measured: a 16 MiB batch of 1,000 events peaks at about five
/// times its size (BENCHMARKS.md).
pub const PARSE_FACTOR: u64 = 6;

/// How long a request waits for room in the body budget before it is answered 503.
pub const BUDGET_WAIT: Duration = Duration::from_secs(2);

/// Seconds a client refused for load is told to wait.
const RETRY_AFTER_SECS: u64 = 1;

/// The limits, shared by every worker.
pub struct Limits {
    /// Connections open now.
    open: Arc<AtomicUsize>,
    max_connections: usize,
    body_timeout: Duration,
    /// In KiB of weight.
    budget: Arc<Semaphore>,
    budget_kib: u32,
    /// Largest body of each kind of route (bytes).
    pub largest: Largest,
}

/// The largest body each kind of route reads.
#[derive(Debug, Clone, Copy)]
pub struct Largest {
    pub event: u64,
    pub batch: u64,
    pub management: u64,
}

/// Kept in a connection's data for as long as it is open.
pub struct Connection {
    open: Arc<AtomicUsize>,
    /// Accepted while `max_connections` others were open: for [`OPS_PATHS`] only.
    pub over_cap: bool,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Limits {
    pub fn new(max_connections: usize, body_timeout: Duration, max_body_memory: u64, largest: Largest) -> Self {
        let budget_kib = u32::try_from(max_body_memory.div_ceil(1024)).unwrap_or(u32::MAX).max(1);
        Self {
            open: Arc::default(),
            max_connections,
            body_timeout,
            budget: Arc::new(Semaphore::new(budget_kib as usize)),
            budget_kib,
            largest,
        }
    }

    /// Counts a new connection (the server's `on_connect`).
    pub fn connected(&self) -> Connection {
        let before = self.open.fetch_add(1, Ordering::Relaxed);
        Connection { open: self.open.clone(), over_cap: before >= self.max_connections }
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// The largest body the route of `req` reads.
    fn largest_for(&self, req: &ServiceRequest) -> u64 {
        match req.path() {
            "/api/v1/events" => self.largest.event,
            "/api/v1/events/batch" => self.largest.batch,
            _ => self.largest.management,
        }
    }

    /// What a request may do before its handler runs: refused (over the connection cap, a
    /// body declared too large, no room in the budget), or let in holding its share of the
    /// budget, with a deadline on its body.
    pub async fn admit(&self, req: &mut ServiceRequest) -> Result<Option<OwnedSemaphorePermit>, ApiError> {
        let over_cap = req.conn_data::<Connection>().is_some_and(|c| c.over_cap);
        if over_cap && !OPS_PATHS.contains(&req.path()) {
            return Err(too_many_connections());
        }
        let declared = content_length(req);
        let largest = self.largest_for(req);
        if declared.is_some_and(|n| n > largest) {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("body is larger than {largest} bytes"),
            ));
        }
        let has_body = declared.is_some_and(|n| n > 0) || (declared.is_none() && is_chunked(req));
        if !has_body {
            return Ok(None);
        }
        let bytes = declared.unwrap_or(largest);
        let weight = bytes.saturating_mul(PARSE_FACTOR).div_ceil(1024);
        // One request heavier than the whole budget may still go, alone.
        let weight = u32::try_from(weight).unwrap_or(u32::MAX).clamp(1, self.budget_kib);
        let permit = match tokio::time::timeout(BUDGET_WAIT, self.budget.clone().acquire_many_owned(weight)).await {
            Ok(Ok(permit)) => permit,
            _ => {
                // The body is read and dropped first (streamed: it costs no memory). Answered
                // with its body unread, a client still sending sees the connection closed
                // under it (a broken pipe), never the 503 and its Retry-After.
                let mut unread = Deadline::new(req.take_payload(), self.body_timeout);
                while let Some(Ok(_)) = unread.next().await {}
                return Err(busy());
            }
        };
        let payload = req.take_payload();
        req.set_payload(Payload::Stream { payload: Box::pin(Deadline::new(payload, self.body_timeout)) });
        Ok(Some(permit))
    }
}

fn content_length(req: &ServiceRequest) -> Option<u64> {
    req.headers().get(actix_web::http::header::CONTENT_LENGTH)?.to_str().ok()?.trim().parse().ok()
}

fn is_chunked(req: &ServiceRequest) -> bool {
    req.headers()
        .get(actix_web::http::header::TRANSFER_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
}

pub fn too_many_connections() -> ApiError {
    ApiError {
        retry_after: Some(RETRY_AFTER_SECS),
        ..ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_connections",
            "the node holds max_connections connections; try again shortly",
        )
    }
}

pub fn busy() -> ApiError {
    ApiError {
        retry_after: Some(RETRY_AFTER_SECS),
        ..ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            "request bodies in progress fill max_body_memory; try again shortly",
        )
    }
}

/// The error a body stream gives once its deadline passed.
pub fn is_timeout(e: &PayloadError) -> bool {
    matches!(e, PayloadError::Io(io) if io.kind() == std::io::ErrorKind::TimedOut)
}

/// A request body that must have arrived by a deadline.
struct Deadline {
    inner: Payload,
    sleep: Pin<Box<tokio::time::Sleep>>,
    expired: bool,
}

impl Deadline {
    fn new(inner: Payload, within: Duration) -> Self {
        Self { inner, sleep: Box::pin(tokio::time::sleep(within)), expired: false }
    }
}

impl Stream for Deadline {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.expired {
            return Poll::Ready(None);
        }
        if let Poll::Ready(next) = Pin::new(&mut self.inner).poll_next(cx) {
            return Poll::Ready(next);
        }
        if self.sleep.as_mut().poll(cx).is_ready() {
            self.expired = true;
            let e =
                std::io::Error::new(std::io::ErrorKind::TimedOut, "the body did not arrive within body_read_timeout");
            return Poll::Ready(Some(Err(PayloadError::Io(e))));
        }
        Poll::Pending
    }
}
