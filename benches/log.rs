//! Log benchmarks: one durable append, group-committed appends from 1, 16 and 64 concurrent
//! writers, and recovery with 100k and 1M unfinished deliveries. (The record codec is the
//! log's own business, measured inside these appends.)
//!
//! `cargo bench --bench log` (all), or e.g. `cargo bench --bench log -- group_commit`.
//! The appended record is a real `EventIngested` of 300 bytes encoded, owed to one webhook,
//! so each append also pays its projection (event row, queue entry, status counter).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use herald::log::load::{ensure_webhooks, sample_event};
use herald::log::{Log, LogOptions};
use herald::model::*;
use herald::storage::{Command, Ledger, Record};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

// The allocator the `herald` binary uses, so the figures are the binary's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A 300-byte `EventIngested` for `webhook`.
fn record(webhook: &WebhookId) -> Record {
    sample_event(&AccountId::default_account(), vec![webhook.clone()], 182, now_millis())
}

fn open(dir: &Path) -> Log {
    Log::open(dir, LogOptions::default()).unwrap().0
}

fn appends(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(open(dir.path()));
    let webhook = ensure_webhooks(&log).unwrap()[0].id.clone();

    let mut g = c.benchmark_group("append");
    g.sample_size(20).measurement_time(Duration::from_secs(5));
    g.bench_function("one_append_and_flush", |b| {
        b.iter(|| log.append_blocking(Command::new(vec![record(&webhook)])).unwrap())
    });
    g.finish();

    let mut g = c.benchmark_group("group_commit");
    g.sample_size(10).measurement_time(Duration::from_secs(8)).throughput(Throughput::Elements(1));
    for writers in [1usize, 16, 64] {
        g.bench_with_input(BenchmarkId::from_parameter(writers), &writers, |b, &writers| {
            b.iter_custom(|iters| {
                let per = (iters as usize).div_ceil(writers);
                let start = Instant::now();
                std::thread::scope(|s| {
                    for _ in 0..writers {
                        let (log, webhook) = (&log, &webhook);
                        s.spawn(move || {
                            for _ in 0..per {
                                log.append_blocking(Command::new(vec![record(webhook)])).unwrap();
                            }
                        });
                    }
                });
                // Report per requested iteration, though up to `writers - 1` extra ran.
                start.elapsed().mul_f64(iters as f64 / (per * writers) as f64)
            })
        });
    }
    g.finish();

    // The same, as the server drives it: concurrent requests are async tasks on one runtime
    // thread awaiting the writer, not OS threads.
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let mut g = c.benchmark_group("group_commit_async");
    g.sample_size(10).measurement_time(Duration::from_secs(8)).throughput(Throughput::Elements(1));
    for writers in [16usize, 64] {
        g.bench_with_input(BenchmarkId::from_parameter(writers), &writers, |b, &writers| {
            b.iter_custom(|iters| {
                let per = (iters as usize).div_ceil(writers);
                let start = Instant::now();
                rt.block_on(async {
                    let tasks: Vec<_> = (0..writers)
                        .map(|_| {
                            let (log, webhook) = (log.clone(), webhook.clone());
                            tokio::spawn(async move {
                                for _ in 0..per {
                                    log.append(Command::new(vec![record(&webhook)])).await.unwrap();
                                }
                            })
                        })
                        .collect();
                    for t in tasks {
                        t.await.unwrap();
                    }
                });
                start.elapsed().mul_f64(iters as f64 / (per * writers) as f64)
            })
        });
    }
    g.finish();
    log.close();
}

/// sled alone, for the ratio: 64 inserts of 300-byte values under increasing keys, one
/// `apply_batch` and one `flush` per iteration, no fold, no threads. A group of 64 is what 64
/// concurrent writers give the log writer at best.
fn sled_ceiling(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let db = sled::Config::new().path(dir.path()).open().unwrap();
    let tree = db.open_tree("t").unwrap();
    let mut seq = 0u64;
    let mut g = c.benchmark_group("sled_ceiling");
    g.sample_size(10).measurement_time(Duration::from_secs(8)).throughput(Throughput::Elements(64));
    g.bench_function("batch_64x300B_and_flush", |b| {
        b.iter(|| {
            let mut batch = sled::Batch::default();
            for _ in 0..64 {
                seq += 1;
                batch.insert(&seq.to_be_bytes()[..], vec![7u8; 300]);
            }
            tree.apply_batch(batch).unwrap();
            tree.flush().unwrap();
        })
    });
    g.finish();
}

/// A data directory holding `deliveries` unfinished deliveries over 10 webhooks.
fn filled(deliveries: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    let account = AccountId::default_account();
    let at = now_millis();
    let mut records = vec![Record::AccountCreated {
        account: Account { id: account.clone(), name: "bench".into(), created_at: at, deleted_at: None },
    }];
    let hooks: Vec<Webhook> = (0..10).map(|i| herald::log::load::sample_webhook(&account, i, at)).collect();
    records.extend(hooks.iter().map(|w| Record::WebhookCreated { webhook: w.clone() }));
    log.append_blocking(Command::new(records)).unwrap();
    let targets: Vec<WebhookId> = hooks.iter().map(|w| w.id.clone()).collect();
    for _ in 0..deliveries / 10 / 1000 {
        let batch = (0..1000).map(|_| sample_event(&account, targets.clone(), 1024, now_millis())).collect();
        log.append_blocking(Command::new(batch)).unwrap();
    }
    log.close();
    dir
}

fn recovery(c: &mut Criterion) {
    let mut g = c.benchmark_group("recovery");
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    for (name, n) in [("100k", 100_000usize), ("1M", 1_000_000)] {
        let dir = filled(n);
        g.bench_function(BenchmarkId::new("unfinished", name), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    let (log, rec) = Log::open(dir.path(), LogOptions::default()).unwrap();
                    total += start.elapsed();
                    assert_eq!(rec.unfinished, n as u64);
                    log.close();
                }
                total
            })
        });
    }
    g.finish();
}

criterion_group!(benches, sled_ceiling, appends, recovery);
criterion_main!(benches);
