//! Webhook receivers for the tests: a real actix-web server on 127.0.0.1:0 that records every
//! request and answers as the test says (status, headers, delay), and a black hole that
//! accepts connections and never answers.

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use std::collections::{HashMap, HashSet};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
pub struct Hit {
    pub at: Instant,
    pub method: String,
    pub path: String,
    /// The query string, `""` without one.
    pub query: String,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The status the receiver answered (or was about to, if the sender hung up first).
    pub status: u16,
}

impl Hit {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers.iter().find(|(k, _)| *k == name).map(|(_, v)| v.as_str())
    }

    pub fn delivery_id(&self) -> String {
        self.header("x-webhook-delivery-id").unwrap_or_default().to_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// Whether `X-Webhook-Signature` is `sha256=<hex HMAC-SHA256 of the body>` under `secret`.
    pub fn signed_with(&self, secret: &str) -> bool {
        use hmac::{Hmac, Mac};
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
        mac.update(&self.body);
        let hex: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
        self.header("x-webhook-signature") == Some(format!("sha256={hex}").as_str())
    }
}

/// How to answer one request.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub delay: Duration,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn status(status: u16) -> Reply {
        Reply { status, headers: Vec::new(), delay: Duration::ZERO, body: Vec::new() }
    }

    pub fn ok() -> Reply {
        Reply::status(200)
    }

    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn after(mut self, delay: Duration) -> Reply {
        self.delay = delay;
        self
    }

    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Reply {
        self.body = body.into();
        self
    }
}

type Behaviour = Arc<dyn Fn(&Hit) -> Reply + Send + Sync>;

struct State {
    hits: Mutex<Vec<Hit>>,
    behaviour: Mutex<Behaviour>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    /// Per path: (requests being answered now, the most at once).
    on_path: Mutex<HashMap<String, (usize, usize)>>,
}

/// One request being answered: counted in while it lives, out when dropped — also when
/// actix-web drops the handler because the sender hung up.
struct Answering<'a> {
    state: &'a State,
    path: String,
}

impl<'a> Answering<'a> {
    fn begin(state: &'a State, path: &str) -> Self {
        let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        state.max_in_flight.fetch_max(now, Ordering::SeqCst);
        let mut on = state.on_path.lock().unwrap();
        let (current, most) = on.entry(path.to_owned()).or_default();
        *current += 1;
        *most = (*most).max(*current);
        Answering { state, path: path.to_owned() }
    }
}

impl Drop for Answering<'_> {
    fn drop(&mut self) {
        self.state.in_flight.fetch_sub(1, Ordering::SeqCst);
        if let Some((current, _)) = self.state.on_path.lock().unwrap().get_mut(&self.path) {
            *current -= 1;
        }
    }
}

/// A receiver on 127.0.0.1, in a thread of its own.
pub struct Receiver {
    pub port: u16,
    state: Arc<State>,
}

impl Receiver {
    /// Starts a receiver that answers 200 to everything.
    pub fn start() -> Receiver {
        let state = Arc::new(State {
            hits: Mutex::new(Vec::new()),
            behaviour: Mutex::new(Arc::new(|_| Reply::ok())),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
            on_path: Mutex::new(HashMap::new()),
        });
        let (tx, rx) = std::sync::mpsc::channel();
        let data = web::Data::from(state.clone());
        std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                let server =
                    HttpServer::new(move || App::new().app_data(data.clone()).default_service(web::to(answer)))
                        .workers(2)
                        .bind(("127.0.0.1", 0))
                        .expect("bind receiver");
                tx.send(server.addrs()[0].port()).unwrap();
                server.run().await
            })
        });
        let port = rx.recv().expect("receiver port");
        Receiver { port, state }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Answers from now on as `f` says.
    pub fn answer(&self, f: impl Fn(&Hit) -> Reply + Send + Sync + 'static) {
        *self.state.behaviour.lock().unwrap() = Arc::new(f);
    }

    pub fn hits(&self) -> Vec<Hit> {
        self.state.hits.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.state.hits.lock().unwrap().len()
    }

    /// Requests received on one path.
    pub fn hits_on(&self, path: &str) -> Vec<Hit> {
        self.hits().into_iter().filter(|h| h.path == path).collect()
    }

    /// Requests answered 2xx.
    pub fn accepted(&self) -> Vec<Hit> {
        self.hits().into_iter().filter(|h| (200..300).contains(&h.status)).collect()
    }

    /// Distinct `X-Webhook-Delivery-Id`s received.
    pub fn distinct(&self) -> HashSet<String> {
        self.state.hits.lock().unwrap().iter().map(Hit::delivery_id).collect()
    }

    /// The most requests it was answering at once.
    pub fn max_concurrency(&self) -> usize {
        self.state.max_in_flight.load(Ordering::SeqCst)
    }

    /// The most requests on `path` it was answering at once.
    pub fn max_concurrency_on(&self, path: &str) -> usize {
        self.state.on_path.lock().unwrap().get(path).map_or(0, |(_, most)| *most)
    }
}

async fn answer(req: HttpRequest, body: web::Bytes, state: web::Data<State>) -> HttpResponse {
    let hit = Hit {
        at: Instant::now(),
        method: req.method().to_string(),
        path: req.path().to_owned(),
        query: req.query_string().to_owned(),
        headers: req
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_ascii_lowercase(), v.to_str().unwrap_or_default().to_owned()))
            .collect(),
        body: body.to_vec(),
        status: 0,
    };
    let behaviour = state.behaviour.lock().unwrap().clone();
    let reply = behaviour(&hit);
    let answering = Answering::begin(&state, &hit.path);
    state.hits.lock().unwrap().push(Hit { status: reply.status, ..hit });
    if !reply.delay.is_zero() {
        actix_web::rt::time::sleep(reply.delay).await;
    }
    drop(answering);
    let mut out = HttpResponse::build(actix_web::http::StatusCode::from_u16(reply.status).unwrap());
    for (k, v) in &reply.headers {
        out.insert_header((k.as_str(), v.as_str()));
    }
    out.body(reply.body)
}

/// A port that accepts connections and never answers (one per test process): deliveries to
/// it stay in flight, so they stay `pending`.
pub fn black_hole() -> u16 {
    static PORT: OnceLock<u16> = OnceLock::new();
    *PORT.get_or_init(|| {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind black hole");
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for stream in listener.incoming().map_while(Result::ok) {
                held.push(stream);
            }
        });
        port
    })
}
