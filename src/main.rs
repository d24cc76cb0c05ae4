//! The `herald` command line: thin over the library.

use clap::{Parser, Subcommand};
use herald::config::{Config, LogFormat, Overrides};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;

// glibc's malloc spends a quarter of the log writer's time in arena locking and
// consolidation under many threads (perf); mimalloc does not.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc asks the kernel for transparent huge pages, and sled's IO threads then fault and
/// zero 2 MiB at a time for buffers they use briefly: 8 % of the delivery drain's CPU in
/// perf, about 10 % less CPU per delivery without (BENCHMARKS.md). Only a hint to the kernel,
/// so a refusal changes nothing but speed.
fn no_huge_pages() {
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_THP_DISABLE takes plain integers and touches no memory of ours.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

#[derive(Parser)]
#[command(name = "herald", version, about = "Self-hosted webhook delivery engine")]
struct Cli {
    /// TOML configuration file (overridden by HERALD_* variables, then by flags).
    #[arg(long, global = true, env = "HERALD_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on, e.g. 127.0.0.1:8080 (port 0 picks a free one).
    #[arg(long, global = true)]
    listen: Option<String>,
    /// Data directory.
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    /// Where the records are kept: a postgres:// URL for cluster mode (default: the embedded
    /// log in the data directory).
    #[arg(long, global = true)]
    store: Option<String>,
    /// Development mode: allow http:// and private targets.
    #[arg(long, global = true)]
    dev: bool,
    /// Log format: text or json.
    #[arg(long, global = true, value_parser = parse_format)]
    log_format: Option<LogFormat>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run Herald.
    Serve,
    /// Print the effective configuration (secrets redacted).
    Config,
    /// Manage the admin token (with the server stopped).
    AdminToken {
        #[command(subcommand)]
        action: TokenAction,
    },
    /// Check a stopped node's log: every record's checksum, and the stored projection
    /// against a fresh fold of the records. With a `store`: the database's records (also on
    /// a live cluster) and, if the data directory holds a stopped node's tree, that tree
    /// against them.
    Verify,
    /// Rewrite a stopped node's log into a new data directory with every secret and custom
    /// header value sealed (for a directory an older Herald wrote in clear).
    Seal {
        /// The new data directory (must not hold a log yet).
        #[arg(long)]
        to: PathBuf,
    },
    /// Move a stopped single node's log (history, pending deliveries, accounts, keys,
    /// webhooks, admin token, public ids) into an empty cluster's database. The data
    /// directory is only read.
    Migrate {
        /// The single node's data directory.
        #[arg(long)]
        from: PathBuf,
        /// The cluster's database (default: `store`).
        #[arg(long)]
        to: Option<String>,
    },
    /// Print the OpenAPI document the server serves at /openapi.json (docs/openapi.json is this).
    Openapi,
    /// Manage the keyring that seals secrets at rest.
    SealKey {
        #[command(subcommand)]
        action: SealKeyAction,
    },
    /// Append a mixed load to the log until killed (crash tests).
    #[command(hide = true)]
    StressLog {
        #[arg(long, default_value_t = 8)]
        writers: usize,
        #[arg(long, default_value_t = u64::MAX)]
        records: u64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
}

#[derive(Subcommand)]
enum SealKeyAction {
    /// Put a new sealing key in front of the key file's keys (the old ones still open what
    /// they sealed; `herald seal` reseals everything with the new one).
    Rotate,
}

#[derive(Subcommand)]
enum TokenAction {
    /// Issue a new admin token, print it once, and keep only its hash.
    Reset,
}

fn parse_format(s: &str) -> Result<LogFormat, String> {
    match s {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        other => Err(format!("`{other}` is not text or json")),
    }
}

fn main() -> ExitCode {
    no_huge_pages();
    let cli = Cli::parse();
    let overrides = Overrides {
        listen: cli.listen.clone(),
        data_dir: cli.data_dir.clone(),
        store: cli.store.clone(),
        dev: cli.dev,
        log_format: cli.log_format,
    };
    let config = match Config::load(cli.config.as_deref(), std::env::vars(), &overrides) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("herald: {e}");
            return ExitCode::from(2);
        }
    };
    herald::telemetry::init_logging(config.log_format);
    let format = config.log_format;
    match run(cli.command, config) {
        Ok(code) => code,
        Err(e) => {
            // Once: as a log line where logs are JSON (collected), else as plain text.
            match format {
                LogFormat::Json => tracing::error!("{e}"),
                LogFormat::Text => eprintln!("herald: {e}"),
            }
            ExitCode::FAILURE
        }
    }
}

fn run(command: Cmd, config: Config) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let against_store = matches!(
        command,
        Cmd::Serve | Cmd::Config | Cmd::AdminToken { .. } | Cmd::Verify | Cmd::Migrate { .. } | Cmd::Openapi
    );
    if config.store.is_some() && !against_store {
        return Err(herald::server::SINGLE_NODE_ONLY.into());
    }
    match command {
        Cmd::Serve => herald::server::serve(config)?,
        Cmd::Config => print!("{}", config.redacted_toml()),
        Cmd::AdminToken { action: TokenAction::Reset } if config.store.is_some() => {
            let store = config.store.as_deref().unwrap_or_default();
            let token = herald::server::issue_admin_token_in_store(&config, store)?;
            println!("{token}");
            eprintln!(
                "herald: issued a new admin token for the cluster (above; only its hash is stored). The old one \
                 stops working on every node as each folds the record, within moments."
            );
        }
        Cmd::AdminToken { action: TokenAction::Reset } => {
            // A directory that holds no log is a mistyped --data-dir, not a node to start.
            if !config.data_dir.join("log").exists() {
                return Err(format!(
                    "{} holds no Herald log (is --data-dir right?); nothing was changed",
                    config.data_dir.display()
                )
                .into());
            }
            let (log, _) = herald::log::Log::open(&config.data_dir, herald::server::log_options(&config))?;
            let token = herald::server::issue_admin_token(&log)?;
            log.close();
            // The token alone on stdout, so `T=$(herald admin-token reset)` works.
            println!("{token}");
            eprintln!(
                "herald: issued a new admin token (above; only its hash is stored). The old one no longer works."
            );
        }
        Cmd::Verify if config.store.is_some() => {
            let store = config.store.as_deref().unwrap_or_default();
            let report = herald::server::verify_store(&config, store)?;
            println!("{report}");
            if !report.is_clean() {
                return Ok(ExitCode::FAILURE);
            }
        }
        Cmd::Verify => {
            let found = herald::log::inspect(&config.data_dir)?;
            println!("{}", found.report);
            // Not damage: webhooks stored before a rule tightened, told so they get fixed.
            for (_, why) in herald::server::outdated_webhooks(&found.catalog, &config.target_policy()) {
                println!("notice: {why}");
            }
            if let Some(notice) = herald::server::clear_values_notice(&found.catalog) {
                println!("notice: {notice}");
            }
            if !found.report.is_clean() {
                return Ok(ExitCode::FAILURE);
            }
        }
        Cmd::Migrate { from, to } => {
            let Some(to) = to.or_else(|| config.store.clone()) else {
                return Err("herald migrate needs the cluster's database: --to postgres://… (or store)".into());
            };
            let done = herald::server::migrate(&config, &from, &to)?;
            println!(
                "moved {} records of {} into the cluster (up to record {}; {} numbers before it were compacted \
                 away). Start each node with this store, an empty data_dir and the seal key of {} (the same on \
                 every node). {} is unchanged: keep it until the cluster runs.",
                done.records,
                from.display(),
                done.head,
                done.removed,
                from.display(),
                from.display()
            );
        }
        Cmd::Openapi => {
            let doc = herald::api::document().to_pretty_json()?;
            println!("{doc}");
        }
        Cmd::Seal { to } => {
            // What the old directory holds sealed opens with its keyring (if it has one);
            // the new one is sealed with the keyring its own configuration names.
            let from = config.data_dir.clone();
            let old_ring = match from.join(herald::security::seal::CANARY_FILE).exists() {
                true => Some(herald::security::seal::load(&config.key_source(), &from)?),
                false => None,
            };
            let to_config = herald::config::Config { data_dir: to.clone(), ..config.clone() };
            let new_ring = herald::security::seal::load(&to_config.key_source(), &to)?;
            let open = old_ring.as_ref().unwrap_or(&new_ring);
            let done =
                herald::log::rewrite(&from, &to, |r| herald::domain::webhooks::sealed_record(r, open, &new_ring))?;
            println!(
                "rewrote {} records into {} ({} with secrets now sealed, key {}).
                 The old directory {} still holds them in clear (sled keeps old copies in its                  segments): start Herald on the new one, then delete the old one for good.",
                done.records,
                to.display(),
                done.changed,
                new_ring.ids()[0],
                from.display()
            );
        }
        Cmd::SealKey { action: SealKeyAction::Rotate } => {
            let herald::security::seal::KeySource::File(path) = config.key_source() else {
                return Err(
                    "seal_key is set inline: rotate it there (a new `<id> <key>` first, the old ones after)".into()
                );
            };
            let done = herald::security::seal::rotate_file(&path, &config.data_dir)?;
            if done.kept.is_empty() {
                println!(
                    "{}: created with sealing key {}. Back the file up apart from the data directory.",
                    path.display(),
                    done.new
                );
            } else {
                println!(
                    "{}: new sealing key {} (kept: {}). Back the file up apart from the data directory; \
                     running nodes take it at their next start.",
                    path.display(),
                    done.new,
                    done.kept.join(", ")
                );
            }
        }
        Cmd::StressLog { writers, records, seed } => {
            let (log, recovery) = herald::log::Log::open(&config.data_dir, herald::server::log_options(&config))?;
            println!(
                "recovered last_seq={} unfinished={} tail={} warnings={}",
                recovery.last_seq,
                recovery.unfinished,
                recovery.tail_records,
                recovery.warnings.len()
            );
            let stop = AtomicBool::new(false);
            let stdout = std::io::stdout();
            let acked = |seqs: &[u64]| {
                let mut out = stdout.lock();
                for seq in seqs {
                    let _ = writeln!(out, "ack {seq}");
                }
                let _ = out.flush();
            };
            herald::log::load::run(&log, writers, records, seed, &stop, &acked)?;
            log.close();
        }
    }
    Ok(ExitCode::SUCCESS)
}
