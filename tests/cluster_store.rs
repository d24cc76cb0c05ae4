//! Cluster mode's start-up against real PostgreSQL servers this test starts (a primary and
//! two quorum-synchronous standbys on ports the OS picks): the schema created once under a
//! lock by nodes starting together, expand-then-contract upgrades, and start-up refusing —
//! with a message that says which — an unreachable database, a read-only one, a schema too
//! new, or (when required) one that does not replicate synchronously. The store's password
//! never reaches the output.

mod common;

use common::pg::Cluster;
use common::run;
use herald::pg::schema::{migrate_with, Migration, MIGRATIONS};
use herald::pg::Database;

/// `herald serve` with `store` in a fresh directory; (exit code, stderr).
fn serve_with(store: &str, env: &[(&str, &str)]) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut all = vec![("HERALD_STORE", store), ("HERALD_SEAL_KEY", common::pg::seal_key())];
    all.extend_from_slice(env);
    let (code, _, stderr) = run(dir.path(), &["serve", "--listen", "127.0.0.1:0"], &all);
    (code, stderr)
}

/// A cluster with `standbys` standbys and its database opened (the schema in place), or
/// `None` where PostgreSQL's binaries are missing (outside CI).
fn opened(test: &str, standbys: usize, require_sync: bool) -> Option<(Cluster, std::sync::Arc<Database>)> {
    if !common::pg::available(test) {
        return None;
    }
    let cluster = Cluster::start(standbys);
    let db = std::sync::Arc::new(Database::new(&cluster.url()).unwrap());
    db.open(require_sync, std::time::Duration::from_secs(10)).unwrap();
    Some((cluster, db))
}

fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn config_shows_the_store_with_its_password_redacted_and_refuses_what_is_not_postgres() {
    let dir = tempfile::tempdir().unwrap();
    let url = "postgres://herald:hunter2@10.0.0.1:5432,10.0.0.2:5432/herald?target_session_attrs=read-write";
    let (code, out, err) = run(dir.path(), &["config", "--store", url], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(
            "store = \"postgres://herald:<redacted>@10.0.0.1:5432,10.0.0.2:5432/herald?target_session_attrs=read-write\""
        ),
        "{out}"
    );
    assert!(!out.contains("hunter2"), "{out}");

    let (code, _, err) = run(dir.path(), &["config"], &[("HERALD_STORE", "mysql://root:hunter2@db/x")]);
    assert_eq!(code, 2);
    assert!(err.contains("store: `mysql://root:<redacted>@db/x` is not a postgres:// URL"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
    let (code, _, err) = run(dir.path(), &["config", "--store", "postgres://db:port/x"], &[]);
    assert_eq!(code, 2);
    assert!(err.contains("is not a PostgreSQL URL"), "{err}");
    // Commands that work on the embedded log say so instead of using it behind the store's back.
    let to = dir.path().join("sealed");
    let (code, _, err) = run(dir.path(), &["--store", "postgres://db/x", "seal", "--to", to.to_str().unwrap()], &[]);
    assert_ne!(code, 0);
    assert!(err.contains("this command works on the embedded log of a single node"), "{err}");
    // `verify` with a store checks the database, and says when it cannot reach it.
    let (code, _, err) = run(dir.path(), &["verify", "--store", "postgres://db/x?connect_timeout=2"], &[]);
    assert_ne!(code, 0);
    assert!(err.contains("cannot reach PostgreSQL at postgres://db/x"), "{err}");
}

#[test]
fn an_unreachable_database_stops_start_up_saying_so_without_the_password() {
    let port = closed_port();
    let (code, err) = serve_with(&format!("postgres://herald:hunter2@127.0.0.1:{port}/herald?connect_timeout=2"), &[]);
    assert_ne!(code, 0);
    assert!(
        err.contains(&format!("cannot reach PostgreSQL at postgres://herald:<redacted>@127.0.0.1:{port}/herald")),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "{err}");
}

#[test]
fn start_up_creates_the_schema_once_and_refuses_read_only_and_too_new_databases() {
    if !common::pg::available("start_up_creates_the_schema_once") {
        return;
    }
    let cluster = Cluster::start(2);

    // Four nodes starting together on an empty database: one creates the schema, the others
    // find it; none fails, and one admin token is printed between them.
    let url = cluster.url();
    let dirs: Vec<_> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let nodes: Vec<_> = dirs
        .iter()
        .map(|d| {
            let (dir, url) = (d.path().to_owned(), url.clone());
            std::thread::spawn(move || {
                let h = common::Herald::serve(
                    &dir,
                    &[],
                    &[("HERALD_STORE", &url), ("HERALD_SEAL_KEY", common::pg::seal_key())],
                );
                h.wait_ready();
                h
            })
        })
        .collect();
    let nodes: Vec<_> = nodes.into_iter().map(|n| n.join().unwrap()).collect();
    let mut tokens = Vec::new();
    for node in &nodes {
        let err = node.stderr();
        assert!(err.contains("commits wait for a synchronous standby"), "{err}");
        assert!(err.contains("standbys streaming: s2 (quorum), s3 (quorum)"), "{err}");
        let out = node.stdout.lock().unwrap().clone();
        tokens.extend(
            out.lines()
                .map(str::trim)
                .filter(|l| l.starts_with(herald::security::credentials::ADMIN_TOKEN_PREFIX))
                .map(str::to_owned),
        );
    }
    assert_eq!(tokens.len(), 1, "one admin token between the four nodes: {tokens:?}");
    // It works on every node.
    for node in &nodes {
        let a = node.send("GET", "/api/v1/accounts", Some(&tokens[0]), &[], None);
        assert_eq!(a.status, 200, "{}", a.text);
    }
    drop(nodes);

    // Every node must hold the key the others seal with: a node with a key of its own, or
    // with none (where it would generate one), refuses to start and says what to do.
    let other = herald::security::seal::Keyring::generate().to_text();
    let (code, err) = serve_with(&url, &[("HERALD_SEAL_KEY", &other)]);
    assert_ne!(code, 0, "{err}");
    assert!(err.contains("the cluster's secrets are sealed with key"), "{err}");
    assert!(err.contains("every node needs the same seal key"), "{err}");
    let no_key = tempfile::tempdir().unwrap();
    let key_file = no_key.path().join("none.seal-key");
    let env = [("HERALD_STORE", url.as_str()), ("HERALD_SEAL_KEY_FILE", key_file.to_str().unwrap())];
    let (code, _, err) = run(no_key.path(), &["serve", "--listen", "127.0.0.1:0"], &env);
    assert_ne!(code, 0, "{err}");
    assert!(err.contains("no seal key file at") && err.contains("copy the key file from a node"), "{err}");
    assert!(!key_file.exists(), "no key generated for a cluster that already seals with one");

    let p = cluster.primary();
    let newest = MIGRATIONS.last().unwrap().version;
    assert_eq!(p.psql("select version || '|' || compatible_from from herald.schema_version"), format!("{newest}|1"));
    assert_eq!(p.psql("select count(*) from herald.head"), "1");

    // Only a standby named, asking for read-write: it answers, but read-only.
    let standby_only =
        format!("postgres://postgres@127.0.0.1:{}/postgres?target_session_attrs=read-write", cluster.servers[1].port);
    let (code, err) = serve_with(&standby_only, &[]);
    assert_ne!(code, 0);
    assert!(err.contains("answers, but only read-only"), "{err}");
    let (code, err) = serve_with(&cluster.url_of(2), &[]);
    assert_ne!(code, 0);
    assert!(err.contains("answers, but only read-only"), "{err}");

    // A schema that a newer release contracted: this binary is too old for it.
    p.psql("update herald.schema_version set compatible_from = 7, version = 9");
    let (code, err) = serve_with(&url, &[]);
    assert_ne!(code, 0);
    let knows =
        format!("schema is version 9 and needs a binary that knows version 7 or newer; this one knows up to {newest}");
    assert!(err.contains(&knows), "{err}");
}

#[test]
fn require_sync_replication_refuses_a_database_without_synchronous_standbys() {
    if !common::pg::available("require_sync_replication") {
        return;
    }
    let cluster = Cluster::start(0);
    let (code, err) = serve_with(&cluster.url(), &[("HERALD_REQUIRE_SYNC_REPLICATION", "true")]);
    assert_ne!(code, 0);
    assert!(err.contains("require_sync_replication is set, but the cluster does not replicate synchronously"), "{err}");
    assert!(err.contains("synchronous_standby_names = '', no standby streaming"), "{err}");
    // Without the requirement it starts, warning.
    let dir = tempfile::tempdir().unwrap();
    let h = common::Herald::serve(
        dir.path(),
        &[],
        &[("HERALD_STORE", &cluster.url()), ("HERALD_SEAL_KEY", common::pg::seal_key())],
    );
    h.wait_ready();
    assert!(h.stderr().contains("commits do not wait for a standby"), "{}", h.stderr());
    drop(h);

    // A synchronous standby named that never connects: the schema's first commit would wait
    // forever; start-up gives up at store_timeout and says why.
    let p = cluster.primary();
    p.psql("create database fresh");
    p.psql("alter system set synchronous_standby_names = 'ghost'");
    p.psql("select pg_reload_conf()");
    let fresh = format!("postgres://postgres@127.0.0.1:{}/fresh", p.port);
    let started = std::time::Instant::now();
    let (code, err) = serve_with(&fresh, &[("HERALD_STORE_TIMEOUT", "2s")]);
    assert_ne!(code, 0);
    assert!(err.contains("PostgreSQL did not answer within 2s"), "{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(20), "gave up only after {:?}", started.elapsed());
}

#[test]
fn a_rolling_upgrade_runs_old_and_new_binaries_on_one_schema_until_the_contract_step() {
    if !common::pg::available("a_rolling_upgrade") {
        return;
    }
    let cluster = Cluster::start(0);
    let db = Database::new(&cluster.url()).unwrap();
    let newest = MIGRATIONS.last().unwrap().version;
    // Two releases after this one: the first expands (a table and a defaulted column the
    // older binary does not read), the second contracts (drops what only it had stopped using).
    let expand = Migration {
        version: newest + 1,
        compatible_from: MIGRATIONS.last().unwrap().compatible_from,
        sql: "CREATE TABLE herald.expanded (id int PRIMARY KEY);
              ALTER TABLE herald.records ADD COLUMN note text NOT NULL DEFAULT '';",
    };
    let contract = Migration {
        version: newest + 2,
        compatible_from: newest + 1,
        sql: "ALTER TABLE herald.records DROP COLUMN note;",
    };
    let old: Vec<Migration> = MIGRATIONS.to_vec();
    let mut new = old.clone();
    new.push(expand);
    let mut newer = new.clone();
    newer.push(contract);

    db.block_on(async {
        let c = db.connect().await.unwrap();
        let s = migrate_with(&c, &old, newest).await.unwrap();
        assert_eq!((s.found, s.now), (0, newest));
        // The new release starts first and expands the schema.
        let s = migrate_with(&c, &new, newest + 1).await.unwrap();
        assert_eq!((s.found, s.now), (newest, newest + 1));
        // An old node restarting now runs on it, touching nothing, and its writes still work.
        let s = migrate_with(&c, &old, newest).await.unwrap();
        assert_eq!((s.found, s.now, s.compatible_from), (newest + 1, newest + 1, 1));
        c.execute("INSERT INTO herald.records (seq, body) VALUES (1, '\\x00')", &[]).await.unwrap();
        // The release after contracts it; from then on an old binary is refused.
        let s = migrate_with(&c, &newer, newest + 2).await.unwrap();
        assert_eq!((s.found, s.now, s.compatible_from), (newest + 1, newest + 2, newest + 1));
        let refused = migrate_with(&c, &old, newest).await.unwrap_err().to_string();
        assert!(refused.contains(&format!("needs a binary that knows version {} or newer", newest + 1)), "{refused}");
        // A failing migration leaves the schema as it was.
        let broken =
            Migration { version: newest + 3, compatible_from: newest + 1, sql: "CREATE TABLE herald.head (x int);" };
        let mut broken_list = newer.clone();
        broken_list.push(broken);
        let failed = migrate_with(&c, &broken_list, newest + 3).await.unwrap_err().to_string();
        assert!(failed.contains(&format!("schema migration {} failed", newest + 3)), "{failed}");
        let s = migrate_with(&c, &newer, newest + 2).await.unwrap();
        assert_eq!(s.now, newest + 2);
    });
}

#[test]
fn appends_from_many_connections_commit_in_sequence_order_and_readers_never_see_a_gap() {
    use herald::pg::records::{head, read_after, shared_setting, Appender};
    use std::time::Duration;
    let Some((_cluster, db)) = opened("appends_from_many_connections", 1, true) else { return };
    const WRITERS: u8 = 4;
    const GROUPS: u64 = 40;
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let db2 = db.clone();
            db.spawn(async move {
                let mut appender = Appender::new();
                for g in 0..GROUPS {
                    let locked = appender.lock(&db2, Duration::from_secs(10)).await.unwrap();
                    let n = 1 + (g % 5);
                    let group: Vec<(u64, Vec<u8>)> = (1..=n).map(|i| (locked.last_seq + i, vec![w])).collect();
                    locked.commit(&group, Duration::from_secs(10)).await.unwrap();
                }
            })
        })
        .collect();
    let total: u64 = WRITERS as u64 * (0..GROUPS).map(|g| 1 + g % 5).sum::<u64>();
    // A reader tailing the log meanwhile: every read continues exactly where the last ended.
    let db2 = db.clone();
    let reader = db.spawn(async move {
        let client = db2.connect().await.unwrap();
        let (mut seen, mut authors) = (0u64, std::collections::BTreeSet::new());
        let end = std::time::Instant::now() + Duration::from_secs(60);
        while seen < total && std::time::Instant::now() < end {
            for (seq, body) in read_after(&client, seen, 500).await.unwrap() {
                assert_eq!(seq, seen + 1, "a reader saw record {seq} right after {seen}");
                seen = seq;
                authors.insert(body[0]);
            }
        }
        (seen, authors.len(), head(&client).await.unwrap())
    });
    for w in writers {
        db.block_on(w).unwrap();
    }
    let (seen, authors, last) = db.block_on(reader).unwrap();
    assert_eq!((seen, last), (total, total));
    assert_eq!(authors, WRITERS as usize);

    // A setting every node shares: one value however many ask for it at once.
    let askers: Vec<_> = (0..8u8)
        .map(|i| {
            let db2 = db.clone();
            db.spawn(async move {
                let c = db2.connect().await.unwrap();
                shared_setting(&c, "id_key", || vec![i; 16]).await.unwrap()
            })
        })
        .collect();
    let values: std::collections::BTreeSet<Vec<u8>> = askers.into_iter().map(|a| db.block_on(a).unwrap()).collect();
    assert_eq!(values.len(), 1, "{values:?}");
}

#[test]
fn a_commit_no_standby_confirms_is_an_unknown_outcome_not_a_hang() {
    use herald::pg::records::{read_after, AppendError, Appender};
    use std::time::Duration;
    let Some((cluster, db)) = opened("a_commit_no_standby_confirms", 0, false) else { return };
    let p = cluster.primary();
    p.psql("alter system set synchronous_standby_names = 'ghost'");
    p.psql("select pg_reload_conf()");
    let mut appender = Appender::new();
    let started = std::time::Instant::now();
    let outcome = db.block_on(async {
        let locked = appender.lock(&db, Duration::from_secs(5)).await.unwrap();
        let seq = locked.last_seq + 1;
        locked.commit(&[(seq, b"r".to_vec())], Duration::from_millis(500)).await
    });
    assert!(matches!(outcome, Err(AppendError::Unknown(_))), "{outcome:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    appender.reset();
    // Unknown is the right word: once a standby (here: none required) lets it go, it is there.
    p.psql("alter system reset synchronous_standby_names");
    p.psql("select pg_reload_conf()");
    common::wait_for("the waiting commit to finish", Duration::from_secs(10), || {
        db.block_on(async {
            let c = db.connect().await.unwrap();
            read_after(&c, 0, 10).await.unwrap().len() == 1
        })
    });
}

#[test]
fn a_fenced_or_outrun_group_writes_nothing_and_leaves_the_head_free_for_the_others() {
    use herald::pg::leases::Holding;
    use herald::pg::records::{head, AppendError, Appender};
    use std::time::Duration;
    let Some((cluster, db)) = opened("a_fenced_or_outrun_group", 0, false) else { return };
    let p = cluster.primary();
    p.psql("insert into herald.leases values (0, 'a', 2, now() + interval '1 minute')");
    let (current, stale) = ([Holding { part: 0, epoch: 2 }], [Holding { part: 0, epoch: 1 }]);
    let second = Duration::from_secs(1);
    let mut a = Appender::new();
    let mut other = Appender::new();
    db.block_on(async {
        // Under the lock: a stale epoch refuses the group, and the head row is let go at
        // once (another appender locks it within a second, not at this one's next append).
        let locked = a.lock(&db, second).await.unwrap();
        let refused = locked.commit_fenced(&[(1, b"x".to_vec())], "a", &stale, second).await;
        assert!(matches!(refused, Err(AppendError::Fenced)), "{refused:?}");
        let locked = other.lock(&db, second).await.expect("the head row is free again");
        assert_eq!(locked.last_seq, 0);
        locked.commit(&[], second).await.unwrap();
        // In one round trip: a stale epoch is fenced, another node's append first is
        // "head moved"; neither writes anything. The current epoch appends.
        let refused = a.append_at(&db, 0, &[(1, b"x".to_vec())], "a", &stale, second).await;
        assert!(matches!(refused, Err(AppendError::Fenced)), "{refused:?}");
        let outrun = a.append_at(&db, 5, &[(6, b"x".to_vec())], "a", &current, second).await;
        assert!(matches!(outrun, Err(AppendError::HeadMoved)), "{outrun:?}");
        a.append_at(&db, 0, &[(1, b"x".to_vec()), (2, b"y".to_vec())], "a", &current, second).await.unwrap();
        let c = db.connect().await.unwrap();
        assert_eq!(head(&c).await.unwrap(), 2);
        // And the lock path still follows: the head is where the fast path left it.
        let locked = other.lock(&db, second).await.unwrap();
        assert_eq!(locked.last_seq, 2);
        locked.commit(&[(3, b"z".to_vec())], second).await.unwrap();
    });
    assert_eq!(
        p.psql("select string_agg(seq::text || convert_from(body, 'UTF8'), ',' order by seq) from herald.records"),
        "1x,2y,3z"
    );
}

#[test]
fn an_appender_frozen_holding_the_head_lock_is_cut_off_and_the_others_append() {
    use herald::pg::records::Appender;
    use std::time::{Duration, Instant};
    let Some((_cluster, db)) = opened("an_appender_frozen_holding_the_head_lock", 0, false) else { return };
    let second = Duration::from_secs(1);
    let (mut frozen, mut other) = (Appender::new(), Appender::new());
    db.block_on(async {
        // A node stopped mid-append (SIGSTOP): its transaction holds the head row and says
        // nothing more.
        let held = frozen.lock(&db, second).await.unwrap();
        let started = Instant::now();
        let locked = other.lock(&db, Duration::from_secs(20)).await.expect("the head row freed by the server");
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(900), "the lock was free after {waited:?}: nothing held it");
        assert!(waited < Duration::from_secs(5), "the others waited {waited:?} behind a frozen node");
        locked.commit(&[(1, b"a".to_vec())], second).await.unwrap();
        // Thawed, the frozen one's transaction is gone: its commit fails, nothing written.
        assert!(held.commit(&[(1, b"b".to_vec())], second).await.is_err());
    });
}

#[test]
fn partitions_change_hands_only_once_free_and_every_holding_has_its_own_epoch() {
    use herald::pg::leases::{ensure_partitions, fair_share, fenced, heartbeat, release, renew, take, Holding};
    use std::time::Duration;
    let Some((_cluster, db)) = opened("partitions_change_hands", 0, false) else { return };
    const PARTS: u32 = 16;
    let long = Duration::from_secs(60);
    db.block_on(async {
        let c = db.connect().await.unwrap();
        ensure_partitions(&c, PARTS).await.unwrap();
        ensure_partitions(&c, PARTS).await.unwrap();

        // A alone takes everything, each partition at epoch 1.
        let live = heartbeat(&c, "a", long).await.unwrap();
        let a = take(&c, "a", fair_share(PARTS, live), long).await.unwrap();
        assert_eq!(a.len(), PARTS as usize);
        assert!(a.iter().all(|h| h.epoch == 1));
        // B arrives: nothing is free until A lets its extra share go.
        let live = heartbeat(&c, "b", long).await.unwrap();
        assert_eq!(live, 2);
        assert!(take(&c, "b", fair_share(PARTS, live), long).await.unwrap().is_empty());
        let (keep, extra) = a.split_at(fair_share(PARTS, live) as usize);
        release(&c, "a", extra).await.unwrap();
        let b = take(&c, "b", fair_share(PARTS, live), long).await.unwrap();
        assert_eq!(b.iter().map(|h| h.part).collect::<Vec<_>>(), extra.iter().map(|h| h.part).collect::<Vec<_>>());
        assert!(b.iter().all(|h| h.epoch == 2), "{b:?}");
        // Fencing: A's old holdings of them are stale, its kept ones current; B's current.
        assert!(!fenced(&c, "a", &extra[..1]).await.unwrap());
        assert!(fenced(&c, "a", keep).await.unwrap());
        assert!(fenced(&c, "b", &b).await.unwrap());
        assert!(!fenced(&c, "b", &[Holding { part: b[0].part, epoch: 1 }]).await.unwrap());
        // Renewing is the holder's alone.
        assert_eq!(renew(&c, "a", long).await.unwrap(), keep.to_vec());
        assert!(renew(&c, "c", long).await.unwrap().is_empty());

        // A stops renewing: once the database's clock says expired, its partitions are free,
        // and A's late renewal and late appends find nothing of them.
        let short = Duration::from_millis(300);
        assert_eq!(renew(&c, "a", short).await.unwrap().len(), keep.len());
        let end = std::time::Instant::now() + Duration::from_secs(10);
        while fenced(&c, "a", keep).await.unwrap() {
            assert!(std::time::Instant::now() < end, "A's leases never expired");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(renew(&c, "a", long).await.unwrap().is_empty());
    });

    // B and C take A's partitions at the same moment: each is taken once.
    let takers: Vec<_> = ["b", "c"]
        .into_iter()
        .map(|node| {
            let db2 = db.clone();
            db.spawn(async move {
                let c = db2.connect().await.unwrap();
                take(&c, node, PARTS, Duration::from_secs(60)).await.unwrap()
            })
        })
        .collect();
    let taken: Vec<Vec<Holding>> = takers.into_iter().map(|t| db.block_on(t).unwrap()).collect();
    let mut parts: Vec<u32> = taken.iter().flatten().map(|h| h.part).collect();
    parts.sort();
    let before = parts.len();
    parts.dedup();
    assert_eq!((before, parts.len()), (PARTS as usize / 2, PARTS as usize / 2), "{taken:?}");
    assert!(taken.iter().flatten().all(|h| h.epoch == 2), "{taken:?}");

    // An append under way holds its partitions against a takeover: checked (FOR SHARE) while
    // the lease was current, it commits before anyone can take them, even past the expiry.
    db.block_on(async {
        let mut x = db.connect().await.unwrap();
        let y = db.connect().await.unwrap();
        let held = renew(&y, "b", Duration::from_millis(300)).await.unwrap();
        assert!(!held.is_empty());
        let append = x.transaction().await.unwrap();
        assert!(fenced(&append, "b", &held).await.unwrap());
        let end = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let row = y.query_one("select count(*) from herald.leases where owner = 'b' and expires_at > now()", &[]);
            if row.await.unwrap().get::<_, i64>(0) == 0 {
                break;
            }
            assert!(std::time::Instant::now() < end, "B's leases never expired");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(take(&y, "d", PARTS, Duration::from_secs(60)).await.unwrap().is_empty(), "taken under an append");
        append.commit().await.unwrap();
        let d = take(&y, "d", PARTS, Duration::from_secs(60)).await.unwrap();
        assert_eq!(d.iter().map(|h| h.part).collect::<Vec<_>>(), held.iter().map(|h| h.part).collect::<Vec<_>>());
        assert!(d.iter().zip(&held).all(|(new, old)| new.epoch == old.epoch + 1));
    });
}

#[test]
fn keepers_share_the_partitions_and_take_over_a_dead_nodes_within_the_ttl() {
    use herald::pg::leases::{Keeper, KeeperOptions};
    use std::collections::BTreeSet;
    use std::time::{Duration, Instant};
    let Some((mut cluster, db)) = opened("keepers_share_the_partitions", 0, false) else { return };
    let ttl = Duration::from_millis(1000);
    let keeper =
        |node: &str| Keeper::spawn(db.clone(), KeeperOptions { node: node.into(), partitions: 16, ttl }).unwrap();
    let parts = |k: &Keeper| k.holdings().held.keys().copied().collect::<BTreeSet<u32>>();
    let split_evenly = |x: &Keeper, y: &Keeper| {
        let (a, b) = (parts(x), parts(y));
        a.len() == 8 && b.len() == 8 && a.is_disjoint(&b)
    };

    let a = keeper("a");
    assert_eq!(parts(&a).len(), 16, "alone, the first round takes everything");
    let b = keeper("b");
    common::wait_for("a and b holding 8 each", Duration::from_secs(10), || split_evenly(&a, &b));
    let of_b = b.holdings().held;

    // b dies without a word: a takes its partitions once their leases expire, each with a
    // new epoch.
    let died = Instant::now();
    b.stop(false);
    common::wait_for("a holding all 16", Duration::from_secs(10), || parts(&a).len() == 16);
    assert!(died.elapsed() < ttl * 3, "took {:?}", died.elapsed());
    let now = a.holdings().held;
    assert!(of_b.iter().all(|(part, epoch)| now[part] > *epoch), "{of_b:?} → {now:?}");

    // c arrives and gets half; leaving gracefully, it hands them back before any TTL runs out.
    let c = keeper("c");
    common::wait_for("a and c holding 8 each", Duration::from_secs(10), || split_evenly(&a, &c));
    c.stop(true);
    common::wait_for("a holding all 16 again", Duration::from_secs(10), || parts(&a).len() == 16);

    // The database gone: a may start nothing once its local deadline passes, before any
    // other node could have been given its partitions.
    assert!(a.holdings().may_start(0, Instant::now()));
    let lost = Instant::now();
    cluster.servers[0].kill();
    common::wait_for("a to stop starting work", Duration::from_secs(10), || !a.holdings().may_start(0, Instant::now()));
    assert!(lost.elapsed() < ttl, "stopped only after {:?}", lost.elapsed());
    a.stop(false);
}
