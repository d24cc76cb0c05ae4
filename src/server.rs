//! Running Herald: open the log, recover, serve HTTP, shut down gracefully.
//!
//! The HTTP listener starts first so `/healthz` answers at once and `/readyz` says 503 while
//! the log recovers; routes that need state answer 503 until the [`Node`] exists.
//! SIGTERM/SIGINT stop accepting connections, let requests in progress finish (up to
//! `shutdown_grace`), then the log writer commits what it holds and flushes.

use crate::config::{Config, ConfigError};
use crate::engine::Dispatcher;
use crate::log::{Log, OpenError};
use crate::model::{now_millis, WebhookId};
use crate::node::{Node, NodeHandle, RecoverySummary};
use crate::security::credentials;
use crate::storage::{AppendError, AppendTimer, Catalog, Command, Ledger, Precondition, Queued, Record};
use actix_web::dev::Service;
use actix_web::{web, App, HttpServer};
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use utoipa_actix_web::AppExt;

/// Why Herald could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
    #[error("HTTP server failed: {0}")]
    Server(std::io::Error),
    #[error("recovery failed: {0}")]
    Recovery(String),
    #[error("cannot write to the log: {0}")]
    Append(#[from] crate::storage::AppendError),
    #[error("cannot set up metrics: {0}")]
    Metrics(String),
    #[error(transparent)]
    Seal(#[from] crate::security::seal::SealError),
    #[error(transparent)]
    Store(#[from] crate::pg::PgError),
    #[error("{0}")]
    Unfinished(&'static str),
    #[error(transparent)]
    Migrate(#[from] crate::log::MigrateError),
}

/// What a command that rewrites or loads a single node's data directory says to a `store`
/// (a cluster node's data directory is only a cache of the database).
pub const SINGLE_NODE_ONLY: &str = "this command works on the embedded log of a single node (data_dir), not on a \
     cluster's store (docs/cluster.md); leave store unset to use it";

/// Opens the database `store` names: connects to its read-write server, migrates the
/// schema under the advisory lock, and reads (and, with `require_sync_replication`,
/// requires) synchronous replication. Blocks.
pub fn open_store(config: &Config, store: &str) -> Result<(crate::pg::Database, crate::pg::Opened), StartError> {
    let db = crate::pg::Database::new(store)?;
    let opened = db.open(config.require_sync_replication, config.store_timeout.0)?;
    tracing::info!(
        store = %db.shown_url(),
        schema_found = opened.schema.found,
        schema = opened.schema.now,
        "the database's schema is in place"
    );
    if opened.replication.is_synchronous() {
        tracing::info!(replication = %opened.replication, "commits wait for a synchronous standby");
    } else {
        tracing::warn!(
            replication = %opened.replication,
            "commits do not wait for a standby: an acknowledged write can be lost with the primary's disk \
             (set require_sync_replication = true to refuse this)"
        );
    }
    Ok((db, opened))
}

/// The key under which the cluster keeps the canary its first node sealed.
const SEAL_CANARY: &str = "seal_canary";

/// The keyring that seals secrets, checked against what it must open: the data directory's
/// canary on one node, the cluster's (in the database) on a node of a cluster, so every
/// node of a cluster holds the key the others seal with. Blocks.
fn load_keyring(
    config: &Config,
    store: Option<&crate::pg::Database>,
) -> Result<crate::security::seal::Keyring, StartError> {
    use crate::pg::records;
    use crate::security::seal::{self, SealError};
    let Some(db) = store else { return Ok(seal::load(&config.key_source(), &config.data_dir)?) };
    let deadline = config.store_timeout.0;
    let existing = db.block_on(async {
        let client = db.connect().await?;
        crate::pg::within(deadline, records::setting(&client, SEAL_CANARY)).await
    })?;
    let existing = existing.map(|v| String::from_utf8_lossy(&v).into_owned());
    let share = |mine: String| {
        db.block_on(async {
            let client = db.connect().await?;
            let kept = records::shared_setting(&client, SEAL_CANARY, || mine.into_bytes());
            crate::pg::within(deadline, kept).await
        })
        .map(|v| String::from_utf8_lossy(&v).into_owned())
        .map_err(|e| SealError::Io(format!("storing the cluster's seal canary: {e}")))
    };
    Ok(seal::load_for_cluster(&config.key_source(), existing, share)?)
}

/// How often a node looks for other nodes' appends when no notification came (a lost
/// notification, a listening connection being made again).
const STORE_POLL: Duration = Duration::from_millis(500);

/// How many partitions a new cluster hashes its webhooks into: enough to spread them
/// evenly over dozens of nodes, few enough that a node renews its share in one statement.
const PARTITIONS: u32 = 128;

/// This process's name among the cluster's nodes: its host, its process id and a random
/// part, so a node restarted on the same host is a new node (its old leases expire).
fn node_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let random = crate::model::IdKey::generate().0;
    format!("{}-{}-{:02x}{:02x}{:02x}", host.trim(), std::process::id(), random[0], random[1], random[2])
}

/// How the log is opened under `config`.
pub fn log_options(config: &Config) -> crate::log::LogOptions {
    crate::log::LogOptions {
        compaction: crate::log::CompactionPolicy {
            retention: config.retention.0,
            dead_retention: config.dead_retention.0,
            idempotency_window: config.idempotency_window.0,
            interval: config.compaction_interval.0,
        },
        min_free_bytes: config.min_free_disk,
        reserve_bytes: config.disk_reserve,
        ..Default::default()
    }
}

/// The delivery rules under `config`.
fn delivery_policy(config: &Config) -> crate::engine::Policy {
    use crate::engine::{breaker::BreakerPolicy, retry::Backoff};
    crate::engine::Policy {
        backoff: Backoff { initial: config.initial_backoff.0, max: config.max_backoff.0 },
        breaker: BreakerPolicy {
            threshold: config.breaker_threshold,
            cooldown: config.breaker_cooldown.0,
            disable_after: config.disable_after.0,
        },
        ttl: config.delivery_ttl.0,
        window: log_options(config).queue_window,
        target: config.target_policy(),
        idle: config.actor_idle.0,
    }
}

/// What the metrics are set up with under `config`.
fn metrics_settings(config: &Config) -> crate::metrics::Setup {
    crate::metrics::Setup {
        enabled: config.metrics_enabled,
        per_webhook: config.metrics_per_webhook,
        event_types: config.event_types.iter().map(|t| t.name.clone()).collect(),
        routes: crate::api::route_patterns().into_iter().chain([crate::api::UNMATCHED_ROUTE.to_owned()]).collect(),
        statuses: crate::api::STATUSES.to_vec(),
        cluster: config.store.is_some(),
    }
}

/// What recovery hands to the delivery actors.
type Waiting = HashMap<WebhookId, Vec<Queued>>;

/// Opens and recovers the log — in cluster mode, in the database `store` (opened by
/// [`open_store`]) — and makes sure an admin credential exists; the deliveries found waiting
/// are returned for the actors. Blocking: runs off the actix threads.
pub fn open_log(
    config: &Config,
    metrics: &Arc<crate::metrics::Metrics>,
    store: Option<Arc<crate::pg::Database>>,
) -> Result<OpenedLog, StartError> {
    // The key first: a data directory whose key is missing does not start at all.
    let keyring = Arc::new(load_keyring(config, store.as_deref())?);
    let timer = metrics.clone();
    let append_timer = metrics.enabled().then(|| AppendTimer::new(move |took| timer.append_took(took)));
    let cluster = store.map(|db| {
        let node = node_name();
        tracing::info!(node = %node, "this node's name in the cluster (its leases are held under it)");
        crate::log::Cluster {
            db,
            timeout: config.store_timeout.0,
            poll: STORE_POLL,
            node,
            ownership_ttl: config.ownership_ttl.0,
            partitions: PARTITIONS,
            commit_timer: metrics.enabled().then(|| {
                let timer = metrics.clone();
                AppendTimer::new(move |took| timer.store_commit_took(took))
            }),
        }
    });
    let options = crate::log::LogOptions { append_timer, cluster, ..log_options(config) };
    let (log, recovery) = Log::open(&config.data_dir, options)?;
    let summary = RecoverySummary {
        duration: recovery.duration,
        unfinished: recovery.unfinished,
        tail_records: recovery.tail_records,
        warnings: recovery.warnings.len(),
    };
    tracing::info!(
        recovery_ms = summary.duration.as_millis() as u64,
        unfinished = summary.unfinished,
        tail_records = summary.tail_records,
        last_seq = recovery.last_seq,
        warnings = summary.warnings,
        "log recovered"
    );
    ensure_admin_token(&log, config)?;
    let runtime =
        tokio::runtime::Builder::new_current_thread().build().map_err(|e| StartError::Recovery(e.to_string()))?;
    runtime
        .block_on(crate::domain::accounts::ensure_default_account(&log))
        .map_err(|e| StartError::Recovery(e.to_string()))?;
    if let Ok(catalog) = log.catalog().read() {
        for (id, why) in outdated_webhooks(&catalog, &config.target_policy()) {
            tracing::warn!(webhook_id = %id, "{why}");
        }
        if let Some(notice) = clear_values_notice(&catalog) {
            tracing::warn!("{notice}");
        }
    }
    Ok(OpenedLog { log: Arc::new(log), waiting: recovery.queues, recovery: summary, keyring })
}

/// Live webhooks that a rule added since they were stored refuses, with what it refuses
/// (reported at start and by `herald verify`; they keep working until their next edit,
/// which must fix them).
pub fn outdated_webhooks(
    catalog: &Catalog,
    policy: &crate::security::safety::TargetPolicy,
) -> Vec<(WebhookId, String)> {
    let mut found: Vec<(WebhookId, String)> = catalog
        .webhooks
        .values()
        .filter(|row| row.deleted_at.is_none())
        .flat_map(|row| {
            crate::domain::webhooks::violations(&row.webhook, policy).into_iter().map(|(field, why)| {
                let text = format!(
                    "webhook {} of {} breaks a current rule ({field}: {why}); it keeps working and its next edit must fix it",
                    row.webhook.id, row.webhook.account_id
                );
                (row.webhook.id.clone(), text)
            })
        })
        .collect();
    found.sort();
    found
}

/// Said at start and by `herald verify` when webhooks hold secrets an older Herald stored in
/// clear (they keep working; new writes are sealed).
pub fn clear_values_notice(catalog: &Catalog) -> Option<String> {
    let n = catalog.webhooks.values().filter(|row| crate::domain::webhooks::holds_clear_values(&row.webhook)).count();
    (n > 0).then(|| {
        format!(
            "{n} webhook(s) hold secrets or header values stored in clear by an older Herald; \
             `herald seal --to <new data dir>` rewrites the log with everything sealed"
        )
    })
}

/// Starts the delivery actors on the recovered log. Runs inside the actix system.
pub fn start_node(config: Arc<Config>, metrics: Arc<crate::metrics::Metrics>, opened: OpenedLog) -> Node {
    let OpenedLog { log, waiting, recovery, keyring } = opened;
    let ingest_limiter = config.ingest_rate_limit.map(crate::node::ratelimit::IngestLimiter::new);
    let disk =
        crate::node::disk::DiskGuard::new(config.data_dir.clone(), config.min_free_disk, crate::log::DISK_MARGIN);
    let ledger: Arc<dyn Ledger> = log;
    let delivery =
        Dispatcher::start(ledger.clone(), waiting, delivery_policy(&config), metrics.clone(), keyring.clone());
    let target = config.target_policy();
    Node { config, ledger, recovery, ingest_limiter, disk, metrics, target, delivery, keyring }
}

/// A recovered log, what it found waiting, and the keyring that opens its secrets.
pub struct OpenedLog {
    pub log: Arc<Log>,
    pub waiting: Waiting,
    pub recovery: RecoverySummary,
    pub keyring: Arc<crate::security::seal::Keyring>,
}

/// On first start without a configured admin token, issues one and prints it once.
fn ensure_admin_token(log: &Log, config: &Config) -> Result<(), StartError> {
    if config.admin_token.is_some() {
        return Ok(());
    }
    let has_one = log.catalog().read().map(|c| c.admin_token.is_some()).unwrap_or(true);
    if !has_one {
        // Only if none was issued meanwhile: nodes starting together on an empty cluster
        // print one token between them.
        let token = credentials::generate_admin_token();
        let record = Record::AdminTokenSet { hash: credentials::hash_token(&token), at: now_millis() };
        match log.append_blocking(Command::checked(vec![record], Precondition::AdminTokenAbsent)) {
            Ok(_) => {}
            Err(AppendError::Rejected(_)) => {
                tracing::info!("another node issued the admin token");
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        }
        // On stdout, apart from the log stream (stderr, maybe JSON, maybe collected): once.
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(
            out,
            "\nHerald admin token (shown this once; only its hash is stored):\n\n    {token}\n\n\
             Use it as `Authorization: Bearer <token>`. `herald admin-token reset` issues a new one.\n"
        );
        let _ = out.flush();
        tracing::info!("issued an admin token (printed on stdout, not logged)");
    }
    Ok(())
}

/// Issues a new admin token (replacing any stored one) and returns it; only its hash is
/// stored. The caller shows it, once.
/// `herald admin-token reset` against a cluster's `store`, running or not: the new token's
/// record is appended to the database's log directly, and every node folds it (the old
/// token stops working on each within moments). Blocks.
pub fn issue_admin_token_in_store(config: &Config, store: &str) -> Result<String, StartError> {
    let (db, _) = open_store(config, store)?;
    let token = credentials::generate_admin_token();
    let record = Record::AdminTokenSet { hash: credentials::hash_token(&token), at: now_millis() };
    crate::log::append_beside(&db, config.store_timeout.0, &[record])?;
    Ok(token)
}

/// `herald migrate`: moves the stopped single node in `from` into the empty cluster whose
/// database `to` names (its schema created as a node would). Blocks.
pub fn migrate(config: &Config, from: &std::path::Path, to: &str) -> Result<crate::log::Migrated, StartError> {
    let (db, _) = open_store(config, to)?;
    // Copying a large log takes longer than one append may: each statement gets a minute.
    let deadline = config.store_timeout.0.max(Duration::from_secs(60));
    Ok(crate::log::migrate(from, &db, deadline)?)
}

/// `herald verify` with a `store`: the database's records and, if the data directory holds
/// a stopped node's tree, that tree against them. Reads only (it creates no schema); each
/// read within `store_timeout`. Blocks.
pub fn verify_store(config: &Config, store: &str) -> Result<crate::log::StoreReport, StartError> {
    use crate::pg::records;
    let db = crate::pg::Database::new(store)?;
    let within = config.store_timeout.0;
    let client = db.block_within(within, db.connect())?;
    let head = db.block_within(within, records::head(&client))?;
    let next = |after: u64| db.block_within(within, records::read_after(&client, after, VERIFY_CHUNK));
    let removed = || db.block_within(within, records::removed_ranges(&client));
    crate::log::verify_against_store(&config.data_dir, head, next, removed)
        .map_err(|e| StartError::Recovery(e.to_string()))
}

/// Records `herald verify` reads from the database at a time.
const VERIFY_CHUNK: usize = 4_096;

pub fn issue_admin_token(log: &Log) -> Result<String, StartError> {
    let token = credentials::generate_admin_token();
    let record = Record::AdminTokenSet { hash: credentials::hash_token(&token), at: now_millis() };
    log.append_blocking(Command::new(vec![record]))?;
    Ok(token)
}

/// Raises this process's limit on open descriptors (its soft limit, up to the hard one) so
/// that the connections it may hold fit, with room for the log's files; says so if they
/// cannot.
fn raise_descriptor_limit(connections: usize) {
    let wanted = connections as u64 + 1024;
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: plain syscalls on a struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return;
        }
        if lim.rlim_cur < wanted && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = wanted.min(lim.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
    if lim.rlim_cur < wanted {
        tracing::warn!(
            limit = lim.rlim_cur,
            needed = wanted,
            "the descriptor limit (ulimit -n) is below max_connections + ops_connections + 1024: lower max_connections or raise the limit"
        );
    }
}

/// Runs Herald until SIGTERM/SIGINT.
pub fn serve(config: Config) -> Result<(), StartError> {
    let config = Arc::new(config);
    let addr = config.listen_addr()?;
    // What would stop start-up anyway stops it before the port is bound: a data directory
    // in use or not creatable, a missing or wrong seal key.
    crate::log::check_not_in_use(&config.data_dir)?;
    let store = match &config.store {
        Some(url) => Some(Arc::new(open_store(&config, url)?.0)),
        None => None,
    };
    load_keyring(&config, store.as_deref())?;
    actix_web::rt::System::new().block_on(async move {
        let metrics = Arc::new(
            crate::metrics::Metrics::new(&metrics_settings(&config)).map_err(|e| StartError::Metrics(e.to_string()))?,
        );
        let shared = web::Data::new(NodeHandle::new(config.clone(), metrics.clone()));
        let for_app = shared.clone();
        let limits = Arc::new(crate::api::limits::Limits::new(
            config.max_connections as usize,
            config.body_read_timeout.0,
            config.max_body_memory,
            crate::api::limits::Largest {
                event: config.max_payload_bytes + crate::api::events::ENVELOPE_BYTES as u64,
                batch: config.max_batch_bytes,
                management: crate::api::MANAGEMENT_BODY_BYTES as u64,
            },
        ));
        let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
        let connections = (config.max_connections as usize + config.ops_connections as usize).div_ceil(workers);
        raise_descriptor_limit(connections * workers);
        let (for_routes, for_connect) = (limits.clone(), limits.clone());
        let server = HttpServer::new(move || {
            let metrics = metrics.clone();
            let limits = for_routes.clone();
            App::new()
                .app_data(for_app.clone())
                .wrap(actix_web::middleware::from_fn(
                    move |mut req: actix_web::dev::ServiceRequest, next: actix_web::middleware::Next<_>| {
                        let limits = limits.clone();
                        async move {
                            use actix_web::ResponseError;
                            // HEAD wherever GET: routed as GET, answered without the body (the
                            // connection knows the request was a HEAD).
                            if let Some(refused) = crate::api::refused_on_fixed_path(req.path(), req.method().as_str())
                            {
                                return Ok(req.into_response(refused.error_response()).map_into_right_body());
                            }
                            if req.method() == actix_web::http::Method::HEAD {
                                req.head_mut().method = actix_web::http::Method::GET;
                            }
                            match limits.admit(&mut req).await {
                                Ok(share) => {
                                    let res = next.call(req).await?;
                                    // The body is read and parsed: its share of the budget goes back.
                                    drop(share);
                                    Ok(res.map_into_left_body())
                                }
                                Err(refused) => {
                                    let mut res = refused.error_response();
                                    res.head_mut().set_connection_type(actix_web::http::ConnectionType::Close);
                                    Ok(req.into_response(res).map_into_right_body())
                                }
                            }
                        }
                    },
                ))
                .wrap_fn(move |req, srv| {
                    let started = std::time::Instant::now();
                    let metrics = metrics.clone();
                    let answer = srv.call(req);
                    async move {
                        let res = answer.await?;
                        if metrics.enabled() {
                            let route =
                                res.request().match_pattern().unwrap_or_else(|| crate::api::UNMATCHED_ROUTE.into());
                            metrics.request_answered(&route, res.status().as_str(), started.elapsed().as_secs_f64());
                        }
                        Ok(res)
                    }
                })
                .into_utoipa_app()
                .configure(crate::api::routes)
                .into_app()
        })
        .shutdown_timeout(config.shutdown_grace.0.as_secs().max(1))
        // Herald takes the signals itself, to know when the grace began.
        .disable_signals()
        .workers(workers)
        .max_connections(connections)
        // A connection refused for the cap is closed without waiting long for the client
        // to close its side (it holds a slot meanwhile).
        .client_disconnect_timeout(Duration::from_millis(250))
        .on_connect(move |_, data| {
            data.insert(for_connect.connected());
        })
        .bind(addr)
        .map_err(|source| StartError::Bind { addr: addr.to_string(), source })?;
        if config.dev {
            // Loud on purpose: a node left in dev mode lets any account aim webhooks at the
            // machine's own services and its private network.
            let warning = "DEV MODE: webhook target checks are OFF — http://, loopback and private \
                           addresses are allowed; never run a shared or public node with --dev";
            if config.log_format == crate::config::LogFormat::Text {
                eprintln!("\n  !!! {warning} !!!\n");
            }
            tracing::warn!(dev = true, "{warning}");
        }
        for bound in server.addrs() {
            // Tests and scripts read the bound port (with `--listen 127.0.0.1:0`) from this
            // line; with JSON logs it is a log line like the others.
            match config.log_format {
                crate::config::LogFormat::Json => tracing::info!(%bound, "herald listening on http://{bound}"),
                crate::config::LogFormat::Text => {
                    eprintln!("herald listening on http://{bound}");
                    tracing::info!(%bound, "listening");
                }
            }
        }
        let server = server.run();
        let handle = server.handle();
        let stopping: Arc<OnceLock<std::time::Instant>> = Arc::default();
        let (on_signal, signalled) = (handle.clone(), stopping.clone());
        actix_web::rt::spawn(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
                tracing::error!("cannot listen for SIGTERM/SIGINT");
                return;
            };
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            };
            let _ = signalled.set(std::time::Instant::now());
            tracing::info!("{name} received: stopping within shutdown_grace");
            on_signal.stop(true).await;
        });
        let recovering = shared.clone();
        actix_web::rt::spawn(async move {
            let (cfg, metrics) = (recovering.config.clone(), recovering.metrics.clone());
            match web::block(move || open_log(&cfg, &metrics, store)).await {
                Ok(Ok(opened)) => {
                    let engine = start_node(recovering.config.clone(), recovering.metrics.clone(), opened);
                    tracing::info!(actors = engine.delivery.actors(), "ready");
                    recovering.ready(Arc::new(engine));
                }
                Ok(Err(e)) => {
                    let _ = recovering.failure.set(e.to_string());
                    handle.stop(false).await;
                }
                Err(e) => {
                    let _ = recovering.failure.set(format!("recovery task failed: {e}"));
                    handle.stop(false).await;
                }
            }
        });
        server.await.map_err(StartError::Server)?;
        if let Some(failure) = shared.failure.get() {
            return Err(StartError::Recovery(failure.clone()));
        }
        if let Some(engine) = shared.node().cloned() {
            tracing::info!("shutting down: letting attempts in flight finish, then flushing the log");
            let grace = engine.config.shutdown_grace.0;
            // The whole shutdown fits in the grace from the signal: requests in progress,
            // then attempts in flight, then the writer's last commit and flush with what is
            // left (a writer stuck in a failing disk is left behind: everything acknowledged
            // is durable already).
            let since = stopping.get().copied().unwrap_or_else(std::time::Instant::now);
            let deadline = since + grace;
            let _ = web::block(move || {
                engine.delivery.drain(deadline.saturating_duration_since(std::time::Instant::now()));
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                engine.ledger.close(left.max(Duration::from_millis(200)))
            })
            .await;
        }
        tracing::info!("stopped");
        Ok(())
    })
}
