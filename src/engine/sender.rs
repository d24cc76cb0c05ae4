//! Sending one attempt over HTTP (awc) under the safety rules of contract §6, and reporting how
//! it ended. Knows nothing of deliveries, retries or the log: the endpoint actor builds the
//! request ([`signature`](super::signature)), this module sends it, [`retry`](super::retry)
//! says what the outcome means.
//!
//! Invariants:
//! - A target is checked again at connect time: a literal IP before anything is sent, a
//!   name through [`GuardedResolver`], which drops every forbidden address the lookup
//!   returns. A name that passed at create time and now resolves to 127.0.0.1 is refused
//!   (no DNS-rebinding bypass). The lookup itself is the policy's [`HostLookup`](crate::security::safety::HostLookup), so tests
//!   can swap it.
//! - Redirects are never followed: a 3xx is an answer like any other non-2xx.
//! - At most [`RESPONSE_EXCERPT`] bytes of a response body are read, within the attempt's
//!   timeout; the rest is discarded (the connection is dropped, not drained).
//! - An awc client is bound to the thread that made it: make one [`Sender`] per thread.

use crate::model::{AttemptResult, Method};
use crate::security::safety::TargetPolicy;
use actix_tls::connect::{Resolve, Resolver};
use futures_util::future::LocalBoxFuture;
use futures_util::StreamExt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Most response bytes read and kept.
pub const RESPONSE_EXCERPT: usize = 4096;

/// The connect-time guard: resolves, then keeps only the addresses the policy allows.
pub struct GuardedResolver {
    policy: TargetPolicy,
}

impl Resolve for GuardedResolver {
    fn lookup<'a>(
        &'a self,
        host: &'a str,
        port: u16,
    ) -> LocalBoxFuture<'a, Result<Vec<SocketAddr>, Box<dyn std::error::Error>>> {
        Box::pin(async move {
            let found = self.policy.lookup.0.lookup(host, port).await?;
            let allowed: Vec<SocketAddr> = found.iter().copied().filter(|a| self.policy.allows_ip(a.ip())).collect();
            if allowed.is_empty() && !found.is_empty() {
                return Err(format!("refused: {host} resolves only to forbidden addresses").into());
            }
            Ok(allowed)
        })
    }
}

/// One request to send.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: Method,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: actix_web::web::Bytes,
    pub timeout: Duration,
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub result: AttemptResult,
    pub status_code: Option<u16>,
    pub latency: Duration,
    pub error: Option<String>,
    /// Up to [`RESPONSE_EXCERPT`] bytes of the body.
    pub body: Vec<u8>,
    pub retry_after: Option<String>,
}

/// Sends attempts from one thread.
pub struct Sender {
    client: awc::Client,
    policy: TargetPolicy,
}

impl Sender {
    pub fn new(policy: TargetPolicy) -> Self {
        let resolver = Resolver::custom(GuardedResolver { policy: policy.clone() });
        let tcp = actix_tls::connect::Connector::new(resolver).service();
        let client = awc::Client::builder()
            .connector(awc::Connector::new().connector(tcp).limit(0))
            .disable_redirects()
            .no_default_headers()
            .finish();
        Self { client, policy }
    }

    fn refused(why: String, started: Instant) -> Response {
        Response {
            result: AttemptResult::Refused,
            status_code: None,
            latency: started.elapsed(),
            error: Some(why),
            body: Vec::new(),
            retry_after: None,
        }
    }

    /// Sends `req` and reports the outcome; never panics, never waits past `req.timeout`.
    /// The request is read now, not kept: the caller may reuse its parts (the actor records
    /// its headers) while the attempt is under way.
    pub fn send(&self, req: &Request) -> impl std::future::Future<Output = Response> + 'static {
        let started = Instant::now();
        let timeout = req.timeout;
        let sent = match self.policy.check_url(&req.url) {
            Err(e) => Err(format!("refused: {e}")),
            Ok(_) => {
                let method = match req.method {
                    Method::Post => awc::http::Method::POST,
                    Method::Put => awc::http::Method::PUT,
                    Method::Patch => awc::http::Method::PATCH,
                };
                let mut builder = self.client.request(method, req.url.as_str()).timeout(timeout);
                for (name, value) in &req.headers {
                    builder = builder.insert_header((name.as_str(), value.as_str()));
                }
                Ok(builder.send_body(req.body.clone()))
            }
        };
        async move {
            match sent {
                Err(why) => Self::refused(why, started),
                Ok(sent) => Self::answer(sent, started, timeout).await,
            }
        }
    }

    async fn answer(sent: awc::SendClientRequest, started: Instant, timeout: Duration) -> Response {
        let mut response = match sent.await {
            Ok(r) => r,
            Err(e) => {
                let text = e.to_string();
                let result = match e {
                    awc::error::SendRequestError::Timeout => AttemptResult::Timeout,
                    _ if text.contains("refused: ") => AttemptResult::Refused,
                    _ => AttemptResult::NetworkError,
                };
                return Response {
                    result,
                    status_code: None,
                    latency: started.elapsed(),
                    error: Some(text),
                    body: Vec::new(),
                    retry_after: None,
                };
            }
        };
        let status = response.status().as_u16();
        let retry_after =
            response.headers().get("Retry-After").and_then(|v| v.to_str().ok()).map(|v| v.chars().take(64).collect());
        let left = timeout.saturating_sub(started.elapsed());
        let mut body = Vec::new();
        let read = tokio::time::timeout(left, async {
            while let Some(chunk) = response.next().await {
                let Ok(chunk) = chunk else { break };
                let room = RESPONSE_EXCERPT - body.len();
                body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                if body.len() >= RESPONSE_EXCERPT {
                    break;
                }
            }
        })
        .await;
        let success = (200..300).contains(&status);
        let (result, error) = match (success, read.is_ok()) {
            (true, _) => (AttemptResult::Success, None),
            (false, true) => (AttemptResult::HttpError, Some(format!("the receiver answered {status}"))),
            (false, false) => {
                (AttemptResult::HttpError, Some(format!("the receiver answered {status} (body cut off)")))
            }
        };
        Response { result, status_code: Some(status), latency: started.elapsed(), error, body, retry_after }
    }
}
