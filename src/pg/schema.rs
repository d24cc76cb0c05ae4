//! The tables Herald keeps in PostgreSQL (schema `herald`), and how they move from one
//! release to the next.
//!
//! Invariants:
//! - Migrations run under one advisory lock, so nodes starting together apply each once.
//! - Expand, then contract: a migration that only adds (tables, nullable or defaulted
//!   columns) keeps `compatible_from`, so binaries of the release before still run on it;
//!   one that removes or changes what an older binary reads raises `compatible_from`, and is
//!   shipped a release after the binaries stopped reading it. A binary refuses a schema whose
//!   `compatible_from` is above the newest version it knows.
//! - The versions row moves in the migration's own transaction: a migration is applied
//!   whole or not at all.

use super::PgError;
use tokio_postgres::Client;

/// One step of the schema.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: i32,
    /// The oldest schema version a binary may know and still run on this one.
    pub compatible_from: i32,
    pub sql: &'static str,
}

/// The schema's first version: the record log, its head, shared settings and leases.
const V1: &str = "
CREATE TABLE herald.meta (
    key text PRIMARY KEY,
    value bytea NOT NULL
);
-- The newest sequence number. Every append locks this row to commit, so sequence order is
-- commit order and a reader of seq > n always sees a prefix of the log.
CREATE TABLE herald.head (
    id int PRIMARY KEY CHECK (id = 1),
    last_seq bigint NOT NULL
);
INSERT INTO herald.head VALUES (1, 0);
-- One record per row, in the versioned, checksummed form of the sled log.
CREATE TABLE herald.records (
    seq bigint PRIMARY KEY,
    body bytea NOT NULL
);
-- Who delivers which partition of webhooks, until when (the database's clock).
CREATE TABLE herald.leases (
    part int PRIMARY KEY,
    owner text,
    epoch bigint NOT NULL DEFAULT 0,
    expires_at timestamptz
);
-- The nodes alive, each until its heartbeat runs out: how the partitions are shared.
CREATE TABLE herald.nodes (
    node text PRIMARY KEY,
    expires_at timestamptz NOT NULL
);
";

/// Version 2 (expand: binaries of version 1 run on it and never call it): a group appended
/// in one round trip, when the appender's fold is the database's head. One statement, so its
/// own transaction: the head moved from `expected` (the records are numbered after it),
/// the fence checked (every `parts[i]` still `node`'s with `epochs[i]`, those rows locked
/// until the commit), the records inserted and the other nodes woken — or nothing, raising
/// `HR001` when another node appended first (the caller folds that and appends under the
/// head lock instead) or `HR002` when a lease moved on.
const V2: &str = "
CREATE FUNCTION herald.append_at(expected bigint, seqs bigint[], bodies bytea[],
                                 parts int[], epochs bigint[], node text) RETURNS void
LANGUAGE plpgsql AS $fn$
DECLARE
    last_seq_now bigint := expected + coalesce(array_length(seqs, 1), 0);
    current_leases int;
BEGIN
    UPDATE herald.head SET last_seq = last_seq_now WHERE id = 1 AND last_seq = expected;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'the log''s head is not at %', expected USING ERRCODE = 'HR001';
    END IF;
    IF coalesce(array_length(parts, 1), 0) > 0 THEN
        SELECT count(*) INTO current_leases FROM (
            SELECT 1 FROM herald.leases l JOIN unnest(parts, epochs) AS h(part, epoch)
              ON l.part = h.part AND l.epoch = h.epoch
             WHERE l.owner = node AND l.expires_at > now()
               FOR SHARE OF l) held;
        IF current_leases <> array_length(parts, 1) THEN
            RAISE EXCEPTION 'a lease this group needs was taken over' USING ERRCODE = 'HR002';
        END IF;
    END IF;
    INSERT INTO herald.records (seq, body) SELECT * FROM unnest(seqs, bodies);
    PERFORM pg_notify('herald_log', last_seq_now::text);
END
$fn$;
";

/// Version 3 (expand: binaries of versions 1 and 2 never read it): what retention removed
/// from `herald.records`, as ranges of sequence numbers `[first, last]`, merged when they
/// touch — how `herald verify` tells a record removed from one lost, and how a node tells
/// that its fold is too old to be caught up record by record.
const V3: &str = "
CREATE TABLE herald.removed (
    first bigint PRIMARY KEY,
    last bigint NOT NULL CHECK (last >= first)
);
";

/// Every migration this binary knows, oldest first.
pub const MIGRATIONS: &[Migration] = &[
    Migration { version: 1, compatible_from: 1, sql: V1 },
    Migration { version: 2, compatible_from: 1, sql: V2 },
    Migration { version: 3, compatible_from: 1, sql: V3 },
];

/// The advisory lock migrations run under (any constant no other application uses).
const LOCK: i64 = 0x4845_5241_4c44_0001; // "HERALD" 0001

/// Where the schema stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchemaState {
    /// The version found before migrating (0: an empty database).
    pub found: i32,
    /// The version after.
    pub now: i32,
    pub compatible_from: i32,
}

/// Brings the schema up to the newest of `migrations` under the advisory lock, or refuses
/// a schema too new for a binary that knows up to `known`.
pub async fn migrate_with(client: &Client, migrations: &[Migration], known: i32) -> Result<SchemaState, PgError> {
    client.execute("SELECT pg_advisory_lock($1)", &[&LOCK]).await?;
    let result = migrate_locked(client, migrations, known).await;
    // Also released when the session ends; say so explicitly for a long-lived connection.
    let unlocked = client.execute("SELECT pg_advisory_unlock($1)", &[&LOCK]).await;
    let state = result?;
    unlocked?;
    Ok(state)
}

async fn migrate_locked(client: &Client, migrations: &[Migration], known: i32) -> Result<SchemaState, PgError> {
    client
        .batch_execute(
            "CREATE SCHEMA IF NOT EXISTS herald;
             CREATE TABLE IF NOT EXISTS herald.schema_version (
                 id int PRIMARY KEY CHECK (id = 1),
                 version int NOT NULL,
                 compatible_from int NOT NULL
             );",
        )
        .await?;
    let (found, mut compatible_from) = versions(client).await?;
    if compatible_from > known {
        return Err(PgError::SchemaTooNew { found, compatible_from, known });
    }
    let mut now = found;
    for m in migrations.iter().filter(|m| m.version > found && m.version <= known) {
        compatible_from = compatible_from.max(m.compatible_from);
        let mut sql = String::from("BEGIN;\n");
        sql.push_str(m.sql);
        sql.push_str(&format!(
            "\nINSERT INTO herald.schema_version VALUES (1, {}, {})
             ON CONFLICT (id) DO UPDATE SET version = EXCLUDED.version, compatible_from = EXCLUDED.compatible_from;
             COMMIT;",
            m.version, compatible_from
        ));
        if let Err(e) = client.batch_execute(&sql).await {
            let _ = client.batch_execute("ROLLBACK").await;
            return Err(PgError::Migration { version: m.version, reason: e.to_string() });
        }
        tracing::info!(version = m.version, "applied schema migration");
        now = m.version;
    }
    Ok(SchemaState { found, now, compatible_from })
}

/// The schema's version and compatibility (0, 0 before the first migration).
async fn versions(client: &Client) -> Result<(i32, i32), PgError> {
    let row = client.query_opt("SELECT version, compatible_from FROM herald.schema_version WHERE id = 1", &[]).await?;
    Ok(row.map(|r| (r.get(0), r.get(1))).unwrap_or((0, 0)))
}

/// The newest version this binary knows.
pub fn known() -> i32 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}
