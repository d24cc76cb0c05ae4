//! The receiver the delivery benchmarks deliver to: actix-web on one worker in the bench's
//! own process, answering 200 at once; it counts, remembers when the latest delivery came
//! and, when asked, when each event index came (for lag).

use actix_web::{web, App, HttpResponse, HttpServer};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

#[derive(Default)]
pub struct Sink {
    pub count: AtomicU64,
    pub last_us: AtomicU64,
    pub arrivals: Mutex<Vec<(u64, Instant)>>,
    pub record_arrivals: AtomicBool,
    epoch: std::sync::OnceLock<Instant>,
}

impl Sink {
    /// Microseconds since the sink started.
    pub fn now_us(&self) -> u64 {
        self.epoch.get_or_init(Instant::now).elapsed().as_micros() as u64
    }
}

async fn receive(body: web::Bytes, sink: web::Data<Sink>) -> HttpResponse {
    let at = Instant::now();
    if sink.record_arrivals.load(Ordering::Relaxed) {
        if let Some(i) = index_of(&body) {
            sink.arrivals.lock().unwrap().push((i, at));
        }
    }
    sink.last_us.store(sink.now_us(), Ordering::Relaxed);
    sink.count.fetch_add(1, Ordering::Relaxed);
    HttpResponse::Ok().finish()
}

/// The `"i":<n>` that every benchmark event carries first in its data.
fn index_of(body: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(body).ok()?;
    let rest = &text[text.find("\"data\":{\"i\":")? + 12..];
    rest[..rest.find([',', '}'])?].parse().ok()
}

/// Starts the receiver listening on `ports` ports (one worker serves them all); returns them.
///
/// Why more than one: Linux gives `connect()` the even half of the ephemeral range first
/// (14,116 ports with the default 32768–60999) and scans every one of them, per connect,
/// once that half is in use towards one destination. 1,000 webhooks with 16 in flight to
/// one port sit right at that edge, so `many` used to measure whether a run crossed it
/// (8,000 or 13,000 deliveries/s, either build) rather than Herald.
pub fn start(sink: Arc<Sink>, ports: usize) -> Vec<u16> {
    let _ = sink.now_us();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let data = web::Data::from(sink);
            let mut server =
                HttpServer::new(move || App::new().app_data(data.clone()).default_service(web::to(receive)))
                    .workers(1)
                    .backlog(4096)
                    .max_connection_rate(4096);
            for _ in 0..ports {
                server = server.bind(("127.0.0.1", 0)).expect("bind receiver");
            }
            tx.send(server.addrs().iter().map(|a| a.port()).collect()).unwrap();
            server.run().await
        })
    });
    rx.recv().expect("receiver ports")
}
