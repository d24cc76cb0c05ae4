//! Real PostgreSQL servers for the cluster tests: a primary and streaming standbys on
//! 127.0.0.1 ports the OS picks, in a temp dir of their own, stopped when dropped (and
//! killed with the test process however it ends: they are spawned tied to it).
//!
//! PostgreSQL refuses to run as root: as root, every server and tool runs as the `postgres`
//! system user, which owns the temp dir (`../shared/CLUSTER.md`). The binaries come from
//! `HERALD_PG_BIN` or the newest `/usr/lib/postgresql/*/bin`.

use super::{spawn_tied, wait_for};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The seal keyring every node these tests start on a cluster shares (`HERALD_SEAL_KEY`):
/// a cluster's nodes must seal with one key, and each node has a data directory of its own
/// (where it would otherwise generate a key of its own).
pub fn seal_key() -> &'static str {
    static KEY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    KEY.get_or_init(|| herald::security::seal::Keyring::generate().to_text())
}

/// Where PostgreSQL's binaries are, if anywhere.
pub fn bin_dir() -> Option<PathBuf> {
    if let Ok(dir) = std::env::var("HERALD_PG_BIN") {
        return Some(PathBuf::from(dir));
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("postgres").exists())
        .collect();
    found.sort_by_key(|p| {
        p.parent().and_then(|v| v.file_name()).and_then(|v| v.to_str()).and_then(|v| v.parse::<u32>().ok())
    });
    found.pop()
}

/// Whether the cluster tests can run here; prints why not. Under CI a missing PostgreSQL is
/// a failure, not a skip.
pub fn available(test: &str) -> bool {
    if bin_dir().is_some() {
        return true;
    }
    assert!(std::env::var("CI").is_err(), "{test}: PostgreSQL's binaries are missing (set HERALD_PG_BIN)");
    eprintln!("{test}: skipped, no PostgreSQL binaries (set HERALD_PG_BIN)");
    false
}

/// The `postgres` user's uid and gid when running as root (servers must not run as root).
fn run_as() -> Option<(u32, u32)> {
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").expect("read /etc/passwd");
    let line = passwd.lines().find(|l| l.starts_with("postgres:")).expect("no postgres user on this machine");
    let f: Vec<&str> = line.split(':').collect();
    Some((f[2].parse().expect("uid"), f[3].parse().expect("gid")))
}

fn tool(name: &str) -> Command {
    let mut cmd = Command::new(bin_dir().expect("PostgreSQL binaries").join(name));
    if let Some((uid, gid)) = run_as() {
        use std::os::unix::process::CommandExt;
        cmd.uid(uid).gid(gid);
    }
    cmd.env_remove("PGHOST").env_remove("PGPORT").env_remove("PGUSER").env_remove("PGDATABASE");
    cmd
}

fn run(mut cmd: Command, what: &str) -> String {
    let out = cmd.stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// One PostgreSQL server.
pub struct Server {
    pub name: String,
    pub port: u16,
    pub dir: PathBuf,
    child: Option<Child>,
}

impl Server {
    pub fn start(&mut self) {
        let mut cmd = tool("postgres");
        cmd.arg("-D").arg(&self.dir).stdout(Stdio::null()).stderr(Stdio::null());
        self.child = Some(spawn_tied(cmd));
        let port = self.port;
        wait_for(&format!("PostgreSQL {} on port {port}", self.name), Duration::from_secs(30), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
                && tool("pg_isready")
                    .args(["-h", "127.0.0.1", "-p", &port.to_string()])
                    .output()
                    .is_ok_and(|o| o.status.success())
        });
    }

    /// `sql` through psql, unaligned and tuples only.
    pub fn psql(&self, sql: &str) -> String {
        let mut cmd = tool("psql");
        cmd.args([
            "-X",
            "-A",
            "-t",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-d",
            "postgres",
        ])
        .args(["-p", &self.port.to_string(), "-c", sql]);
        run(cmd, &format!("psql on {}: {sql}", self.name)).trim().to_string()
    }

    /// `pgbench` against this server with the custom `script` (written beside the data
    /// directory, where the `postgres` user can read it) and `args`; what it printed.
    pub fn pgbench(&self, script: &str, args: &[&str]) -> String {
        let file = self.dir.with_extension("pgbench.sql");
        std::fs::write(&file, script).expect("write the pgbench script");
        let mut cmd = tool("pgbench");
        cmd.args(["-n", "-h", "127.0.0.1", "-U", "postgres", "-p", &self.port.to_string(), "-f"])
            .arg(&file)
            .args(args)
            .arg("postgres");
        run(cmd, &format!("pgbench on {}", self.name))
    }

    /// SIGKILL, as a crash.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// A fast shutdown (SIGINT), waited for.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            unsafe {
                libc::kill(c.id() as i32, libc::SIGINT);
            }
            let _ = c.wait();
        }
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Appends lines to its `postgresql.auto.conf`, which is read last and so wins over
    /// what `initdb` and `pg_basebackup -R` wrote (the latter writes `primary_conninfo` there).
    fn configure(&self, lines: &str) {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(self.dir.join("postgresql.auto.conf"))
            .expect("conf");
        writeln!(f, "{lines}").expect("write conf");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A primary with `standbys` streaming standbys, quorum-synchronous (`ANY 1`).
pub struct Cluster {
    pub servers: Vec<Server>,
    /// Which of `servers` is the primary now.
    current: usize,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts the servers and waits until every standby streams.
    pub fn start(standbys: usize) -> Cluster {
        let dir = tempfile::Builder::new().prefix("herald-pg-").tempdir().expect("temp dir");
        if let Some((uid, gid)) = run_as() {
            let c = std::ffi::CString::new(dir.path().as_os_str().as_encoded_bytes()).expect("path");
            assert_eq!(unsafe { libc::chown(c.as_ptr(), uid, gid) }, 0, "chown the temp dir to postgres");
        }
        let names: Vec<String> = (1..=standbys + 1).map(|i| format!("s{i}")).collect();
        let primary_dir = dir.path().join(&names[0]);
        let mut init = tool("initdb");
        init.arg("-D").arg(&primary_dir).args(["-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8"]);
        run(init, "initdb");
        let mut primary = Server { name: names[0].clone(), port: free_port(), dir: primary_dir, child: None };
        let sync = if standbys > 0 {
            format!("synchronous_standby_names = 'ANY 1 ({})'", names[1..].join(", "))
        } else {
            String::new()
        };
        primary.configure(&format!(
            "port = {}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\nwal_level = replica\n\
             max_wal_senders = 10\nsynchronous_commit = on\n{sync}\nfsync = on\nmax_connections = 100\n\
             shared_buffers = 64MB\nlog_min_messages = warning\n",
            primary.port,
            dir.path().display()
        ));
        primary.start();
        let mut servers = vec![primary];
        for name in &names[1..] {
            let standby_dir = dir.path().join(name);
            let mut backup = tool("pg_basebackup");
            backup
                .args(["-h", "127.0.0.1", "-p", &servers[0].port.to_string(), "-U", "postgres", "-R", "-X", "stream"])
                .arg("-D")
                .arg(&standby_dir);
            run(backup, "pg_basebackup");
            let standby = Server { name: name.clone(), port: free_port(), dir: standby_dir, child: None };
            standby.configure(&format!(
                "port = {}\nprimary_conninfo = 'host=127.0.0.1 port={} user=postgres application_name={name}'\n",
                standby.port, servers[0].port
            ));
            servers.push(standby);
        }
        for s in &mut servers[1..] {
            s.start();
        }
        let cluster = Cluster { servers, current: 0, _dir: dir };
        if standbys > 0 {
            wait_for("every standby streaming as a synchronous candidate", Duration::from_secs(30), || {
                cluster.servers[0].psql(
                    "select count(*) from pg_stat_replication where state = 'streaming' and sync_state in ('quorum', 'sync')",
                ) == standbys.to_string()
            });
        }
        cluster
    }

    pub fn primary(&self) -> &Server {
        &self.servers[self.current]
    }

    /// Failover by hand, as `../shared/CLUSTER.md` does it once the primary `dead` is gone:
    /// the standby that received the most WAL is promoted, every other live standby is
    /// re-pointed at it and restarted. Returns the new primary's index.
    pub fn fail_over_from(&mut self, dead: usize) -> usize {
        let lsn = |s: &Server| -> u64 {
            let text = s.psql("select pg_wal_lsn_diff(pg_last_wal_receive_lsn(), '0/0')::bigint");
            text.parse().unwrap_or(0)
        };
        let standbys: Vec<usize> =
            (0..self.servers.len()).filter(|&i| i != dead && self.servers[i].is_running()).collect();
        let chosen = *standbys.iter().max_by_key(|&&i| lsn(&self.servers[i])).expect("a standby to promote");
        assert_eq!(
            self.servers[chosen].psql("select pg_promote(true, 30)"),
            "t",
            "promote {}",
            self.servers[chosen].name
        );
        let to = self.servers[chosen].port;
        for &i in standbys.iter().filter(|&&i| i != chosen) {
            let s = &mut self.servers[i];
            s.configure(&format!(
                "primary_conninfo = 'host=127.0.0.1 port={to} user=postgres application_name={}'",
                s.name
            ));
            s.stop();
            s.start();
        }
        let expected = standbys.len() - 1;
        let new = &self.servers[chosen];
        wait_for("the other standbys streaming from the new primary", Duration::from_secs(30), || {
            new.psql("select count(*) from pg_stat_replication where state = 'streaming'") == expected.to_string()
        });
        self.current = chosen;
        chosen
    }

    /// A URL naming every server, for the read-write one.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self.servers.iter().map(|s| format!("127.0.0.1:{}", s.port)).collect();
        format!("postgres://postgres@{}/postgres?target_session_attrs=read-write", hosts.join(","))
    }

    /// A URL naming one server.
    pub fn url_of(&self, i: usize) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.servers[i].port)
    }
}

/// The backend the API and delivery suites run Herald on: the embedded sled log, or — with
/// `TEST_BACKEND=postgres` — a PostgreSQL database of its own for every Herald the
/// suite starts, on one server the test process starts on first use (and stops as it
/// exits). One suite, two backends: `.ci/run` runs those suites once more this way.
pub fn on_postgres() -> bool {
    match std::env::var("TEST_BACKEND").as_deref() {
        Ok("postgres") => true,
        Ok("sled") | Err(_) => false,
        Ok(other) => panic!("TEST_BACKEND={other}: use sled or postgres"),
    }
}

/// The environment that puts a Herald whose data directory is `dir` on a database of the
/// shared server: a fresh one for a new `dir`, the same one when it is started again there.
pub fn store_env_for(dir: &std::path::Path) -> Vec<(&'static str, String)> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static SHARED: std::sync::Mutex<Option<Cluster>> = std::sync::Mutex::new(None);
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    static BY_DIR: std::sync::Mutex<Vec<(PathBuf, String)>> = std::sync::Mutex::new(Vec::new());
    extern "C" fn stop_shared() {
        // The test harness exits through `exit`, which runs this: the server stops and its
        // directory goes.
        if let Ok(mut shared) = SHARED.lock() {
            shared.take();
        }
    }
    let mut shared = SHARED.lock().unwrap_or_else(|e| e.into_inner());
    if shared.is_none() {
        assert!(bin_dir().is_some(), "TEST_BACKEND=postgres: PostgreSQL's binaries are missing (set HERALD_PG_BIN)");
        *shared = Some(Cluster::start(0));
        unsafe {
            libc::atexit(stop_shared);
        }
    }
    let cluster = shared.as_ref().expect("started above");
    let mut by_dir = BY_DIR.lock().unwrap_or_else(|e| e.into_inner());
    let name = match by_dir.iter().find(|(d, _)| d == dir) {
        Some((_, name)) => name.clone(),
        None => {
            let name = format!("herald_{}_{}", std::process::id(), NEXT.fetch_add(1, Ordering::SeqCst));
            cluster.primary().psql(&format!("CREATE DATABASE {name}"));
            by_dir.push((dir.to_owned(), name.clone()));
            name
        }
    };
    let url = format!("postgres://postgres@127.0.0.1:{}/{name}", cluster.primary().port);
    vec![("HERALD_STORE", url), ("HERALD_SEAL_KEY", seal_key().to_owned())]
}

/// For a test of the embedded log itself (it writes or reads the sled files, or runs an
/// offline command on them): whether to skip it on the PostgreSQL pass, saying so.
pub fn sled_only(test: &str, why: &str) -> bool {
    let skip = on_postgres();
    if skip {
        eprintln!("{test}: sled only ({why}): skipped with TEST_BACKEND=postgres");
    }
    skip
}
