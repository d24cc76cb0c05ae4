//! Helpers shared by the integration tests: start the real `herald` binary on a port the OS
//! picks, read what it prints, wait for conditions with deadlines, kill it.

#![allow(dead_code)]

pub mod disk;
pub mod pg;
pub mod receiver;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_herald");

/// Polls `cond` until it holds or `deadline` passes.
pub fn wait_for(what: &str, deadline: Duration, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + deadline;
    while Instant::now() < end {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("timed out after {deadline:?} waiting for {what}");
}

/// Spawns `cmd` so that it is killed when this test process exits, however it exits (a
/// server kept in a `static` is never dropped): from one thread that lives as long as the
/// process, with `PR_SET_PDEATHSIG`, which fires when the spawning thread ends.
pub fn spawn_tied(mut cmd: Command) -> Child {
    use std::os::unix::process::CommandExt;
    use std::sync::mpsc;
    type Job = (Command, mpsc::Sender<std::io::Result<Child>>);
    static SPAWNER: std::sync::OnceLock<Mutex<mpsc::Sender<Job>>> = std::sync::OnceLock::new();
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::spawn(move || {
            for (mut cmd, reply) in rx {
                let _ = reply.send(cmd.spawn());
            }
            // Never returns while the process lives: the sender is in a static.
        });
        Mutex::new(tx)
    });
    let (reply, answer) = mpsc::channel();
    spawner.lock().unwrap().send((cmd, reply)).expect("spawner thread");
    answer.recv().expect("spawner answer").expect("start herald")
}

/// A running `herald` process.
pub struct Herald {
    pub child: Child,
    pub stderr: Arc<Mutex<String>>,
    /// What it printed on stdout (the first start's admin token, nothing else).
    pub stdout: Arc<Mutex<String>>,
    pub base: String,
}

/// Collects what `pipe` says into `sink`, line by line, on a thread of its own.
fn collect(pipe: impl std::io::Read + Send + 'static, sink: Arc<Mutex<String>>) {
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            let mut s = sink.lock().unwrap();
            s.push_str(&line);
            s.push('\n');
        }
    });
}

impl Herald {
    /// Starts `herald serve` on 127.0.0.1:0 in `cwd` with extra args and env, and waits
    /// until it prints its address. On the suite's backend: the embedded log, or with
    /// `TEST_BACKEND=postgres` a PostgreSQL database of `cwd`'s own ([`pg::on_postgres`]).
    pub fn serve(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Herald {
        let mut cmd = Command::new(BIN);
        cmd.current_dir(cwd).args(["--listen", "127.0.0.1:0"]).args(args).arg("serve");
        // The suite's backend (`pg::on_postgres`), unless the test names a store itself.
        let on_shared_store = pg::on_postgres() && !env.iter().any(|(k, _)| *k == "HERALD_STORE");
        if on_shared_store {
            for (k, v) in pg::store_env_for(cwd) {
                cmd.env(k, v);
            }
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        if !env.iter().any(|(k, _)| *k == "RUST_LOG") {
            cmd.env("RUST_LOG", "info");
        }
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = spawn_tied(cmd);
        let stderr = Arc::new(Mutex::new(String::new()));
        let stdout = Arc::new(Mutex::new(String::new()));
        collect(child.stderr.take().expect("stderr"), stderr.clone());
        collect(child.stdout.take().expect("stdout"), stdout.clone());
        let until = Instant::now() + Duration::from_secs(30);
        let base = loop {
            {
                let s = stderr.lock().unwrap();
                if let Some(at) = s.find("herald listening on ") {
                    let rest = &s[at + "herald listening on ".len()..];
                    // Up to the end of the line, or of the JSON string holding it.
                    break rest.split(['\n', '"']).next().unwrap_or_default().trim().to_owned();
                }
                // What it said matters more than that it timed out.
                assert!(Instant::now() < until, "herald did not print its address within 30s; it said:\n{s}");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        if on_shared_store {
            let said = stderr.lock().unwrap();
            assert!(said.contains("the database's schema is in place"), "not on PostgreSQL:\n{said}");
        }
        Herald { child, stderr, stdout, base }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// GET, returning status and body whatever the status.
    pub fn get(&self, path: &str) -> (u16, String) {
        match ureq::get(&self.url(path)).timeout(Duration::from_secs(10)).call() {
            Ok(r) => (r.status(), r.into_string().unwrap_or_default()),
            Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap_or_default()),
            Err(e) => (0, e.to_string()),
        }
    }

    /// The value of the sample `name` (with its labels, if any) in the node's `/metrics`.
    pub fn metric(&self, name: &str) -> u64 {
        let (status, text) = self.get("/metrics");
        assert_eq!(status, 200, "{text}");
        let prefix = format!("{name} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no {name} in:\n{text}")) as u64
    }

    pub fn wait_ready(&self) {
        wait_for("/readyz to answer 200", Duration::from_secs(30), || self.get("/readyz").0 == 200);
    }

    pub fn signal(&self, sig: i32) {
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
    }

    /// Waits for the process to exit and returns its status.
    pub fn wait_exit(&mut self, deadline: Duration) -> std::process::ExitStatus {
        let end = Instant::now() + deadline;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(Instant::now() < end, "herald did not exit within {deadline:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Herald {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `herald <args>` to completion: (exit code, stdout, stderr).
pub fn run(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(cwd).args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run herald");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A request's answer: status and the body as JSON (`Null` if it is not JSON).
pub struct Answer {
    pub status: u16,
    pub body: serde_json::Value,
    pub text: String,
    pub retry_after: Option<String>,
    /// The Content-Type header, `""` without one.
    pub content_type: String,
}

impl Herald {
    /// Sends `method path` with a bearer token (if any), extra headers and a raw body.
    pub fn send(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Answer {
        let mut req = ureq::request(method, &self.url(path)).timeout(Duration::from_secs(10));
        if let Some(t) = token {
            req = req.set("Authorization", &format!("Bearer {t}"));
        }
        for (k, v) in headers {
            req = req.set(k, v);
        }
        let result = match body {
            Some(b) => req.send_bytes(b),
            None => req.call(),
        };
        let response = match result {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("{method} {path}: {e}"),
        };
        let status = response.status();
        let retry_after = response.header("Retry-After").map(str::to_owned);
        let content_type = response.header("Content-Type").unwrap_or_default().to_owned();
        let text = response.into_string().unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
        Answer { status, body, text, retry_after, content_type }
    }

    /// Sends JSON.
    pub fn json(&self, method: &str, path: &str, token: Option<&str>, body: &serde_json::Value) -> Answer {
        let bytes = serde_json::to_vec(body).unwrap();
        self.send(method, path, token, &[("Content-Type", "application/json")], Some(&bytes))
    }
}

/// The admin token the API tests start Herald with.
pub const ADMIN: &str = "test-admin-token-0123456789";

/// Herald with a known admin token, ready (on the suite's backend, as every
/// [`Herald::serve`]).
pub fn herald_for_api(dir: &Path) -> Herald {
    herald_with(dir, &[])
}

/// Herald under `--dev` with the test admin token and extra environment, ready.
pub fn herald_with(dir: &Path, env: &[(&str, &str)]) -> Herald {
    let mut all = vec![("HERALD_ADMIN_TOKEN", ADMIN)];
    all.extend_from_slice(env);
    let h = Herald::serve(dir, &["--dev"], &all);
    h.wait_ready();
    h
}

/// Creates a webhook from a JSON body; returns its id.
pub fn create_webhook(h: &Herald, key: &str, body: serde_json::Value) -> String {
    let a = h.json("POST", "/api/v1/webhooks", Some(key), &body);
    assert_eq!(a.status, 201, "{}", a.text);
    a.body["id"].as_str().unwrap().to_owned()
}

/// Creates an account with the admin token; returns its first API key.
pub fn account(h: &Herald, name: &str) -> String {
    let a = h.json("POST", "/api/v1/accounts", Some(ADMIN), &serde_json::json!({ "name": name }));
    assert_eq!(a.status, 201, "{}", a.text);
    a.body["api_key"].as_str().unwrap().to_owned()
}

/// Creates a webhook to a receiver that never answers (`--dev`, the longest timeout), so its
/// deliveries stay `pending` for the whole test; returns its id.
pub fn webhook(h: &Herald, key: &str, events: serde_json::Value, active: bool) -> String {
    let url = format!("http://127.0.0.1:{}/in", receiver::black_hole());
    let body = serde_json::json!({"url": url, "events": events, "is_active": active, "timeout": 120});
    let a = h.json("POST", "/api/v1/webhooks", Some(key), &body);
    assert_eq!(a.status, 201, "{}", a.text);
    a.body["id"].as_str().unwrap().to_owned()
}

/// A webhook as a Herald from before sealing stored it: its secret and header values in
/// clear (written straight into a log by the tests that need such a directory).
pub fn legacy_webhook(url: String, secret: &str, headers: &[(&str, &str)]) -> herald::model::Webhook {
    let at = herald::model::now_millis();
    let clear = herald::security::seal::SealedText::in_clear;
    herald::model::Webhook {
        id: herald::model::WebhookId::generate_at(at),
        account_id: herald::model::AccountId::default_account(),
        name: "legacy".into(),
        description: String::new(),
        url,
        events: vec!["*".into()],
        secrets: vec![herald::model::Secret { value: clear(secret), created_at: at, expires_at: None }],
        is_active: true,
        max_retries: 0,
        timeout_ms: 10_000,
        method: herald::model::Method::Post,
        headers: headers.iter().map(|(k, v)| (k.to_string(), clear(v))).collect(),
        signature_header: "X-Webhook-Signature".into(),
        signature_prefix: "sha256=".into(),
        ordering: herald::model::DeliveryOrder::None,
        max_in_flight: 4,
        rate_limit: None,
        created_at: at,
        updated_at: at,
        filter: None,
        body_format: herald::model::BodyFormat::Original,
    }
}
