//! The record log kept in PostgreSQL, for cluster mode (`docs/cluster.md`): connecting to
//! the read-write server of a replicated cluster, the schema and its migrations, the
//! settings every node shares, and what the cluster's replication promises.
//!
//! It deals in bytes and sequence numbers, never in records or rows: what a record means is
//! the log's business (`crate::log`), which is the only module that uses this one.
//!
//! Invariants:
//! - Nothing here blocks an async thread: PostgreSQL is spoken to on a runtime of this
//!   module's own (`herald-pg` threads); plain threads wait for it, async code awaits it.
//! - Every wait on the database has a deadline: an unreachable host or a commit no standby
//!   confirms ends in an error, never a hang.
//! - No password reaches a log line or an error message (`url::redacted`).

pub mod leases;
pub mod records;
pub mod schema;
pub mod url;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// Why the database could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("cannot reach PostgreSQL at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error(
        "PostgreSQL at {url} answers, but only read-only (a standby, or default_transaction_read_only): \
         Herald needs the primary; list every server and add target_session_attrs=read-write"
    )]
    ReadOnly { url: String },
    #[error(
        "the database's Herald schema is version {found} and needs a binary that knows version \
         {compatible_from} or newer; this one knows up to {known}: upgrade this node"
    )]
    SchemaTooNew { found: i32, compatible_from: i32, known: i32 },
    #[error("schema migration {version} failed: {reason}")]
    Migration { version: i32, reason: String },
    #[error(
        "require_sync_replication is set, but the cluster does not replicate synchronously \
         ({found}): set synchronous_commit = on and name standbys in synchronous_standby_names"
    )]
    NotSynchronous { found: String },
    #[error(
        "PostgreSQL did not answer within {0:?} (is a commit waiting for a synchronous standby \
         that is not connected? see pg_stat_replication on the primary)"
    )]
    Timeout(Duration),
    #[error("PostgreSQL: {0}")]
    Query(String),
    #[error("cannot start the PostgreSQL client threads: {0}")]
    Runtime(std::io::Error),
}

impl From<tokio_postgres::Error> for PgError {
    fn from(e: tokio_postgres::Error) -> Self {
        // tokio-postgres's Display says only "db error"; the server's message is the source.
        match e.as_db_error() {
            Some(db) => PgError::Query(format!("{} ({})", db.message(), db.code().code())),
            None => PgError::Query(e.to_string()),
        }
    }
}

/// How long connecting may take before the server counts as unreachable.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What the cluster's settings promise about an acknowledged commit, as read at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replication {
    pub synchronous_commit: String,
    pub synchronous_standby_names: String,
    /// `(application_name, sync_state)` of every standby streaming now.
    pub standbys: Vec<(String, String)>,
}

impl Replication {
    /// Whether a commit waits for a standby: `synchronous_commit` at `on`, `remote_write` or
    /// `remote_apply`, and standbys named to wait for.
    pub fn is_synchronous(&self) -> bool {
        matches!(self.synchronous_commit.as_str(), "on" | "remote_write" | "remote_apply")
            && !self.synchronous_standby_names.trim().is_empty()
    }
}

impl std::fmt::Display for Replication {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names = if self.synchronous_standby_names.is_empty() { "''" } else { &self.synchronous_standby_names };
        write!(f, "synchronous_commit = {}, synchronous_standby_names = {names}, ", self.synchronous_commit)?;
        if self.standbys.is_empty() {
            write!(f, "no standby streaming")
        } else {
            let list: Vec<String> = self.standbys.iter().map(|(n, s)| format!("{n} ({s})")).collect();
            write!(f, "standbys streaming: {}", list.join(", "))
        }
    }
}

/// The database: its URL and the threads that speak to it.
pub struct Database {
    url: String,
    runtime: Arc<tokio::runtime::Runtime>,
}

/// What opening found.
#[derive(Debug, Clone)]
pub struct Opened {
    pub schema: schema::SchemaState,
    pub replication: Replication,
}

impl Database {
    /// Starts the client threads for `url` (nothing is connected yet).
    pub fn new(url: &str) -> Result<Database, PgError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("herald-pg")
            .enable_all()
            .build()
            .map_err(PgError::Runtime)?;
        Ok(Database { url: url.to_string(), runtime: Arc::new(runtime) })
    }

    /// The URL as it may be shown.
    pub fn shown_url(&self) -> String {
        url::redacted(&self.url)
    }

    /// Runs `work` on the client threads and waits for it, from a thread outside any async
    /// runtime (start-up, the writer, the CLI). Build timers inside `work` (an `async`
    /// block): outside it there is no runtime to make them on.
    pub fn block_on<T>(&self, work: impl Future<Output = T>) -> T {
        self.runtime.block_on(work)
    }

    /// [`Database::block_on`] for `work` that must be done within `deadline`
    /// ([`PgError::Timeout`] past it).
    pub fn block_within<T>(
        &self,
        deadline: Duration,
        work: impl Future<Output = Result<T, PgError>>,
    ) -> Result<T, PgError> {
        self.block_on(within(deadline, work))
    }

    /// Runs `work` on the client threads; the answer can be awaited from any runtime.
    pub fn spawn<T: Send + 'static>(
        &self,
        work: impl Future<Output = T> + Send + 'static,
    ) -> tokio::task::JoinHandle<T> {
        self.runtime.spawn(work)
    }

    /// A new connection to the read-write server, within [`CONNECT_TIMEOUT`]. Telling an
    /// unreachable cluster from one that answers only read-only costs a second attempt, made
    /// only when the first fails.
    pub async fn connect(&self) -> Result<tokio_postgres::Client, PgError> {
        connect_checked(&self.url, None).await
    }

    /// Listens on `channel` for as long as the returned [`Listener`] lives: `wake` is called
    /// with each notification's payload, and with `None` whenever the listening connection
    /// is (re)made — notifications sent while it was down are lost, so the caller must
    /// look for itself then. A lost connection is made again every [`RELISTEN`].
    pub fn listen(&self, channel: &'static str, wake: impl Fn(Option<&str>) + Send + 'static) -> Listener {
        let url = self.url.clone();
        let task = self.runtime.spawn(async move {
            loop {
                let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
                match connect_checked(&url, Some(tx)).await {
                    Ok(client) => match client.batch_execute(&format!("LISTEN {channel}")).await {
                        Ok(()) => {
                            wake(None);
                            while let Some(payload) = rx.recv().await {
                                wake(Some(&payload));
                            }
                            tracing::warn!(channel, "the connection listening for other nodes' appends ended");
                        }
                        Err(e) => tracing::warn!(channel, error = %PgError::from(e), "cannot listen"),
                    },
                    Err(e) => tracing::debug!(channel, error = %e, "cannot connect to listen"),
                }
                tokio::time::sleep(RELISTEN).await;
            }
        });
        Listener(task)
    }
}

/// `work`'s outcome, or [`PgError::Timeout`] once `deadline` has passed. Await it on the
/// client threads (in a future given to [`Database::block_on`] or [`Database::spawn`]).
pub async fn within<T>(deadline: Duration, work: impl Future<Output = Result<T, PgError>>) -> Result<T, PgError> {
    tokio::time::timeout(deadline, work).await.unwrap_or(Err(PgError::Timeout(deadline)))
}

/// Between attempts to make the listening connection again.
pub const RELISTEN: Duration = Duration::from_secs(1);

/// A connection listening for notifications; dropping it stops listening.
pub struct Listener(tokio::task::JoinHandle<()>);

impl Drop for Listener {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A connection to the read-write server `url` names; its notifications, if `notices` is
/// given, are sent there.
async fn connect_checked(
    url: &str,
    notices: Option<tokio::sync::mpsc::UnboundedSender<String>>,
) -> Result<tokio_postgres::Client, PgError> {
    let shown = url::redacted(url);
    match connect_to(url, notices).await {
        Ok(client) => {
            let ro: String = client.query_one("SHOW transaction_read_only", &[]).await?.get(0);
            if ro == "on" {
                return Err(PgError::ReadOnly { url: shown });
            }
            Ok(client)
        }
        Err(reason) => {
            let any = url::any_session(url);
            if any != url && connect_to(&any, None).await.is_ok() {
                return Err(PgError::ReadOnly { url: shown });
            }
            Err(PgError::Unreachable { url: shown, reason })
        }
    }
}

impl Database {
    /// Connects, migrates the schema and reads what the cluster's replication promises —
    /// refusing to go on without synchronous replication if `require_sync` is set — all
    /// within `deadline` (a commit waiting for a synchronous standby that is not there
    /// waits forever otherwise). Blocks: call it off Herald's async runtimes.
    pub fn open(&self, require_sync: bool, deadline: Duration) -> Result<Opened, PgError> {
        let opening = async {
            let client = self.connect().await?;
            let schema = schema::migrate_with(&client, schema::MIGRATIONS, schema::known()).await?;
            let replication = replication(&client).await?;
            if require_sync && !replication.is_synchronous() {
                return Err(PgError::NotSynchronous { found: replication.to_string() });
            }
            Ok(Opened { schema, replication })
        };
        self.block_within(deadline, opening)
    }
}

/// One connection attempt within [`CONNECT_TIMEOUT`]; its driver runs on the current
/// runtime. The error is a message without the URL (the caller names it, redacted).
async fn connect_to(
    url: &str,
    notices: Option<tokio::sync::mpsc::UnboundedSender<String>>,
) -> Result<tokio_postgres::Client, String> {
    let config: tokio_postgres::Config = url.parse().map_err(|e: tokio_postgres::Error| e.to_string())?;
    let connecting = config.connect(tokio_postgres::NoTls);
    let (client, connection) = match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
        Err(_) => return Err(format!("no answer within {CONNECT_TIMEOUT:?}")),
        Ok(Err(e)) => return Err(PgError::from(e).to_string()),
        Ok(Ok(pair)) => pair,
    };
    let Some(notices) = notices else {
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(error = %PgError::from(e), "PostgreSQL connection ended");
            }
        });
        return Ok(client);
    };
    let mut connection = connection;
    tokio::spawn(async move {
        use futures_util::StreamExt;
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(tokio_postgres::AsyncMessage::Notification(n)) => {
                    if notices.send(n.payload().to_owned()).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %PgError::from(e), "PostgreSQL connection ended");
                    return;
                }
            }
        }
    });
    Ok(client)
}

/// The replication settings of the server `client` is connected to.
async fn replication(client: &tokio_postgres::Client) -> Result<Replication, PgError> {
    let synchronous_commit: String = client.query_one("SHOW synchronous_commit", &[]).await?.get(0);
    let synchronous_standby_names: String = client.query_one("SHOW synchronous_standby_names", &[]).await?.get(0);
    let standbys = client
        .query(
            "SELECT coalesce(application_name, ''), coalesce(sync_state, '') FROM pg_stat_replication \
             WHERE state = 'streaming' ORDER BY application_name",
            &[],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    Ok(Replication { synchronous_commit, synchronous_standby_names, standbys })
}
