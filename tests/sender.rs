//! The sender against real receivers on 127.0.0.1 that misbehave on purpose: errors, 429
//! with Retry-After, a receiver too slow for the timeout, a closed port, a redirect, a
//! 10 MB answer; and the connect-time address check, with a name that resolves to
//! 127.0.0.1 through a lookup the test controls.

use actix_web::{web, App, HttpResponse, HttpServer};
use futures_util::future::LocalBoxFuture;
use herald::engine::sender::{Request, Sender, RESPONSE_EXCERPT};
use herald::model::{AttemptResult, Method};
use herald::security::safety::{HostLookup, Lookup, TargetPolicy};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The headers and body of a request as the receiver saw them.
type Received = (Vec<(String, String)>, Vec<u8>);

#[derive(Default)]
struct Seen {
    hits: AtomicUsize,
    redirect_target_hits: AtomicUsize,
    last: Mutex<Option<Received>>,
}

/// Starts the receiver on 127.0.0.1:0 in a thread of its own; returns its port.
fn receiver(seen: Arc<Seen>) -> u16 {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let data = web::Data::from(seen);
            let server = HttpServer::new(move || {
                App::new()
                    .app_data(data.clone())
                    .route(
                        "/ok",
                        web::post().to(
                            |req: actix_web::HttpRequest, body: web::Bytes, s: web::Data<Seen>| async move {
                                s.hits.fetch_add(1, Ordering::SeqCst);
                                let headers = req
                                    .headers()
                                    .iter()
                                    .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
                                    .collect();
                                *s.last.lock().unwrap() = Some((headers, body.to_vec()));
                                HttpResponse::Ok().body("fine")
                            },
                        ),
                    )
                    .route("/fail", web::post().to(|| async { HttpResponse::InternalServerError().body("boom") }))
                    .route(
                        "/busy",
                        web::post().to(|| async {
                            HttpResponse::TooManyRequests().insert_header(("Retry-After", "7")).finish()
                        }),
                    )
                    .route(
                        "/slow",
                        web::post().to(|| async {
                            actix_web::rt::time::sleep(Duration::from_secs(3)).await;
                            HttpResponse::Ok().finish()
                        }),
                    )
                    .route(
                        "/redirect",
                        web::post()
                            .to(|| async { HttpResponse::Found().insert_header(("Location", "/target")).finish() }),
                    )
                    .route(
                        "/target",
                        web::route().to(|s: web::Data<Seen>| async move {
                            s.redirect_target_hits.fetch_add(1, Ordering::SeqCst);
                            HttpResponse::Ok().finish()
                        }),
                    )
                    .route("/huge", web::post().to(|| async { HttpResponse::BadGateway().body(vec![b'x'; 10 << 20]) }))
            })
            .workers(1)
            .bind("127.0.0.1:0")
            .unwrap();
            tx.send(server.addrs()[0].port()).unwrap();
            server.run().await.unwrap();
        });
    });
    rx.recv_timeout(Duration::from_secs(10)).unwrap()
}

/// Resolves one made-up name to 127.0.0.1, like a DNS record changed after create time.
struct Rebinding;

impl HostLookup for Rebinding {
    fn lookup(&self, host: &str, port: u16) -> LocalBoxFuture<'_, std::io::Result<Vec<SocketAddr>>> {
        let answer = if host == "hooks.example.test" {
            Ok(vec![SocketAddr::from(([127, 0, 0, 1], port))])
        } else {
            Err(std::io::Error::new(std::io::ErrorKind::NotFound, "no such name"))
        };
        Box::pin(async move { answer })
    }
}

fn request(url: String, timeout_ms: u64) -> Request {
    Request {
        method: Method::Post,
        url,
        headers: vec![
            ("Content-Type".into(), "application/json".into()),
            ("X-Webhook-Delivery-Id".into(), "dlv_test".into()),
        ],
        body: web::Bytes::from_static(br#"{"id":"evt_1","data":{"a":1}}"#),
        timeout: Duration::from_millis(timeout_ms),
    }
}

fn dev() -> TargetPolicy {
    TargetPolicy { dev: true, lookup: Lookup::new(Rebinding), ..Default::default() }
}

#[test]
fn outcomes_of_misbehaving_receivers() {
    let seen = Arc::new(Seen::default());
    let port = receiver(seen.clone());
    let url = |path: &str| format!("http://127.0.0.1:{port}{path}");
    actix_web::rt::System::new().block_on(async move {
        let s = Sender::new(dev());

        let ok = s.send(&request(url("/ok"), 5_000)).await;
        assert_eq!((ok.result, ok.status_code), (AttemptResult::Success, Some(200)), "{ok:?}");
        let (headers, body) = seen.last.lock().unwrap().clone().unwrap();
        assert_eq!(body, br#"{"id":"evt_1","data":{"a":1}}"#, "the body arrives byte for byte");
        assert!(headers.iter().any(|(k, v)| k == "x-webhook-delivery-id" && v == "dlv_test"));

        let fail = s.send(&request(url("/fail"), 5_000)).await;
        assert_eq!((fail.result, fail.status_code), (AttemptResult::HttpError, Some(500)));
        assert_eq!(fail.body, b"boom");

        let busy = s.send(&request(url("/busy"), 5_000)).await;
        assert_eq!((busy.status_code, busy.retry_after.as_deref()), (Some(429), Some("7")));

        let started = Instant::now();
        let slow = s.send(&request(url("/slow"), 300)).await;
        assert_eq!(slow.result, AttemptResult::Timeout, "{slow:?}");
        assert!(started.elapsed() < Duration::from_secs(2), "gave up at the timeout: {:?}", started.elapsed());

        let redirect = s.send(&request(url("/redirect"), 5_000)).await;
        assert_eq!((redirect.result, redirect.status_code), (AttemptResult::HttpError, Some(302)));
        assert_eq!(seen.redirect_target_hits.load(Ordering::SeqCst), 0, "redirects are not followed");

        let huge = s.send(&request(url("/huge"), 5_000)).await;
        assert_eq!(huge.status_code, Some(502));
        assert_eq!(huge.body.len(), RESPONSE_EXCERPT, "the read stops at 4 KiB");

        // A port nothing listens on.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let closed_port = closed.local_addr().unwrap().port();
        drop(closed);
        let refused = s.send(&request(format!("http://127.0.0.1:{closed_port}/in"), 2_000)).await;
        assert_eq!(refused.result, AttemptResult::NetworkError, "{refused:?}");
    });
}

#[test]
fn forbidden_addresses_are_refused_at_connect_time_unless_allowed() {
    let seen = Arc::new(Seen::default());
    let port = receiver(seen.clone());
    actix_web::rt::System::new().block_on(async move {
        // http allowed (the receiver has no TLS), private addresses not: production rules.
        let strict = TargetPolicy { allow_http: true, lookup: Lookup::new(Rebinding), ..Default::default() };
        let s = Sender::new(strict.clone());
        // The name passed its create-time check elsewhere; now it resolves to 127.0.0.1.
        let rebound = s.send(&request(format!("http://hooks.example.test:{port}/ok"), 2_000)).await;
        assert_eq!(rebound.result, AttemptResult::Refused, "{rebound:?}");
        let literal = s.send(&request(format!("http://127.0.0.1:{port}/ok"), 2_000)).await;
        assert_eq!(literal.result, AttemptResult::Refused, "{literal:?}");
        let mapped = s.send(&request(format!("http://[::ffff:127.0.0.1]:{port}/ok"), 2_000)).await;
        assert_eq!(mapped.result, AttemptResult::Refused, "{mapped:?}");
        for url in [
            format!("http://[::127.0.0.1]:{port}/ok"),
            format!("http://[2002:7f00:1::]:{port}/ok"),
            format!("http://localhost:{port}/ok"),
            format!("http://api.localhost.:{port}/ok"),
        ] {
            let embedded = s.send(&request(url.clone(), 2_000)).await;
            assert_eq!(embedded.result, AttemptResult::Refused, "{url}: {embedded:?}");
        }
        assert_eq!(seen.hits.load(Ordering::SeqCst), 0, "nothing reached the receiver");

        // https only without allow_http.
        let https_only = Sender::new(TargetPolicy { lookup: Lookup::new(Rebinding), ..Default::default() });
        let plain = https_only.send(&request(format!("http://hooks.example.test:{port}/ok"), 2_000)).await;
        assert_eq!(plain.result, AttemptResult::Refused);

        // allowed_cidrs opens exactly that range.
        let allowed = TargetPolicy { allowed_cidrs: vec!["127.0.0.1/32".parse().unwrap()], ..strict };
        let s = Sender::new(allowed);
        let ok = s.send(&request(format!("http://hooks.example.test:{port}/ok"), 2_000)).await;
        assert_eq!(ok.result, AttemptResult::Success, "{ok:?}");
        assert_eq!(seen.hits.load(Ordering::SeqCst), 1);
    });
}
