//! Configuration: embedded defaults, overridden by an optional TOML file, overridden by
//! `HERALD_*` environment variables, overridden by command-line flags (contract §1).
//!
//! Invariants:
//! - Every key has a default, so `herald serve` runs with no configuration at all.
//! - An unknown key (in the file or as a `HERALD_*` variable) or an invalid value stops
//!   start-up with a message naming the key; nothing is silently ignored.
//! - Secrets (`admin_token`, `metrics_token`, `seal_key`) never leave this module unredacted except
//!   through their typed accessors; `Display`/`herald config` print them as `<redacted>`.

use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A duration written as `"250ms"`, `"30s"`, `"24h"`, `"7d"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Dur(pub Duration);

impl Serialize for Dur {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

/// In the units the README uses, so `herald config` prints what a user would write: days
/// from four days up, then hours, minutes from two up, seconds, milliseconds — the first the
/// duration is a whole number of (`"7d"`, `"24h"`, `"72h"`, `"60s"`, `"250ms"`).
impl std::fmt::Display for Dur {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = self.0.as_millis();
        if !self.0.subsec_nanos().is_multiple_of(1_000_000) {
            return write!(f, "{}", humantime::format_duration(self.0));
        }
        for (unit, size, from) in [("d", 86_400_000u128, 4), ("h", 3_600_000, 1), ("m", 60_000, 2), ("s", 1_000, 1)] {
            if ms.is_multiple_of(size) && ms / size >= from {
                return write!(f, "{}{unit}", ms / size);
            }
        }
        write!(f, "{ms}ms")
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(text.trim()).map(Dur).map_err(|e| {
            serde::de::Error::custom(format!("`{text}` is not a duration like \"250ms\", \"30s\" or \"24h\" ({e})"))
        })
    }
}

fn secs(s: u64) -> Dur {
    Dur(Duration::from_secs(s))
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// One entry of the event catalog.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventType {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub sample: Option<toml::Table>,
}

/// The effective configuration. Field docs give the contract §1 meaning.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address the HTTP API listens on.
    pub listen: String,
    /// Where the sled log lives (created 0700).
    pub data_dir: PathBuf,
    /// Where the records are kept: unset, the embedded sled log in `data_dir`; a
    /// `postgres://` URL, cluster mode (`docs/cluster.md`). Its password is never printed.
    pub store: Option<String>,
    /// Cluster mode: refuse to start unless the database commits synchronously to a standby.
    pub require_sync_replication: bool,
    /// Cluster mode: the longest Herald waits for the database to answer (a commit no
    /// standby confirms, a server gone silent) before it gives up on that request.
    pub store_timeout: Dur,
    /// Cluster mode: how long a node's lease on its share of the webhooks lasts unrenewed;
    /// a node that dies or stalls has its webhooks taken over by live nodes within it.
    pub ownership_ttl: Dur,
    /// Admin token; when unset Herald generates one on first start and keeps only its hash.
    pub admin_token: Option<String>,
    /// Allows `http://` and loopback/private targets, for local receivers.
    pub dev: bool,
    pub allow_http: bool,
    pub allowed_cidrs: Vec<IpNet>,
    pub initial_backoff: Dur,
    pub max_backoff: Dur,
    pub default_max_retries: u32,
    pub default_timeout: Dur,
    pub breaker_threshold: u32,
    pub breaker_cooldown: Dur,
    pub max_webhooks_per_account: u32,
    pub max_payload_bytes: u64,
    pub idempotency_window: Dur,
    pub secret_overlap: Dur,
    pub retention: Dur,
    pub strict_events: bool,
    pub event_types: Vec<EventType>,
    /// Events per second per account.
    pub ingest_rate_limit: Option<u32>,
    pub metrics_token: Option<String>,
    pub metrics_per_webhook: bool,
    /// Metrics off: nothing counted on the hot paths, `/metrics` answers 404 (for
    /// measuring what metrics cost, and for nodes scraped some other way).
    pub metrics_enabled: bool,
    pub log_format: LogFormat,
    pub shutdown_grace: Dur,
    pub delivery_ttl: Dur,
    pub disable_after: Dur,
    pub dead_retention: Dur,
    pub max_batch_bytes: u64,
    pub min_free_disk: u64,
    /// Bytes held in `<data_dir>/reserved-space` for when the disk fills: deliveries are
    /// still recorded and compaction still runs in it, and the log can be reopened after a
    /// storage fault . 0: none.
    pub disk_reserve: u64,
    pub max_pending_per_webhook: u64,
    /// How often retention compaction runs (an operator knob for tests
    /// and for very busy nodes).
    pub compaction_interval: Dur,
    /// A hosts file (`<address> <name>` lines) consulted before DNS for webhook targets, at
    /// create time and at connect time alike, read again at every lookup (pins
    /// names on a node without touching `/etc/hosts`).
    pub hosts_file: Option<PathBuf>,
    /// How long a webhook's actor stays up with nothing to send before it stops; its next
    /// delivery starts it again (idle webhooks then cost no actor).
    pub actor_idle: Dur,
    /// Connections that may do API work at once (one client must not
    /// take every descriptor).
    pub max_connections: u32,
    /// Connections beyond `max_connections` kept for `/healthz`, `/readyz` and `/metrics`.
    pub ops_connections: u32,
    /// How long a request's body may take to arrive, from the start of the request.
    pub body_read_timeout: Dur,
    /// Memory for request bodies in progress over the whole node, counted as what reading
    /// and parsing them may cost (their size times 6); over it, requests wait up to 2 s,
    /// then get 503 with `Retry-After`.
    pub max_body_memory: u64,
    /// The keyring that seals secrets at rest, inline (`<id> <base64 key>` pairs, separated
    /// by newlines or commas; the first seals). Secret: never printed.
    pub seal_key: Option<String>,
    /// The keyring's file when `seal_key` is unset; default `<data_dir>.seal-key` beside the
    /// data directory (or `$CREDENTIALS_DIRECTORY/herald-seal-key` under systemd), generated
    /// with mode 0600 on first start.
    pub seal_key_file: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            data_dir: PathBuf::from("./herald-data"),
            store: None,
            require_sync_replication: false,
            store_timeout: secs(10),
            ownership_ttl: secs(10),
            admin_token: None,
            dev: false,
            allow_http: false,
            allowed_cidrs: Vec::new(),
            initial_backoff: secs(1),
            max_backoff: secs(3600),
            default_max_retries: 5,
            default_timeout: secs(30),
            breaker_threshold: 5,
            breaker_cooldown: secs(30),
            max_webhooks_per_account: 10,
            max_payload_bytes: 1_048_576,
            idempotency_window: secs(86_400),
            secret_overlap: secs(86_400),
            retention: secs(7 * 86_400),
            strict_events: false,
            event_types: Vec::new(),
            ingest_rate_limit: None,
            metrics_token: None,
            metrics_per_webhook: false,
            metrics_enabled: true,
            log_format: LogFormat::Text,
            shutdown_grace: secs(10),
            delivery_ttl: secs(72 * 3600),
            disable_after: secs(5 * 86_400),
            dead_retention: secs(30 * 86_400),
            max_batch_bytes: 16_777_216,
            min_free_disk: 1_073_741_824,
            disk_reserve: 67_108_864,
            max_pending_per_webhook: 1_000_000,
            compaction_interval: secs(60),
            hosts_file: None,
            actor_idle: secs(60),
            max_connections: 10_000,
            ops_connections: 64,
            body_read_timeout: secs(30),
            max_body_memory: 536_870_912,
            seal_key: None,
            seal_key_file: None,
        }
    }
}

/// The shape of each key's value, for reading it from an environment variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    Bool,
    Int,
    /// A TOML array (`["10.0.0.0/8"]`) or a comma-separated list.
    List,
    /// A TOML value written inline (`[{name = "a"}]`).
    Toml,
}

/// Every key, with its kind. The env layer refuses any `HERALD_*` not listed here.
const KEYS: &[(&str, Kind)] = &[
    ("listen", Kind::Text),
    ("data_dir", Kind::Text),
    ("store", Kind::Text),
    ("require_sync_replication", Kind::Bool),
    ("store_timeout", Kind::Text),
    ("ownership_ttl", Kind::Text),
    ("admin_token", Kind::Text),
    ("dev", Kind::Bool),
    ("allow_http", Kind::Bool),
    ("allowed_cidrs", Kind::List),
    ("initial_backoff", Kind::Text),
    ("max_backoff", Kind::Text),
    ("default_max_retries", Kind::Int),
    ("default_timeout", Kind::Text),
    ("breaker_threshold", Kind::Int),
    ("breaker_cooldown", Kind::Text),
    ("max_webhooks_per_account", Kind::Int),
    ("max_payload_bytes", Kind::Int),
    ("idempotency_window", Kind::Text),
    ("secret_overlap", Kind::Text),
    ("retention", Kind::Text),
    ("strict_events", Kind::Bool),
    ("event_types", Kind::Toml),
    ("ingest_rate_limit", Kind::Int),
    ("metrics_token", Kind::Text),
    ("metrics_per_webhook", Kind::Bool),
    ("metrics_enabled", Kind::Bool),
    ("log_format", Kind::Text),
    ("shutdown_grace", Kind::Text),
    ("delivery_ttl", Kind::Text),
    ("disable_after", Kind::Text),
    ("dead_retention", Kind::Text),
    ("max_batch_bytes", Kind::Int),
    ("min_free_disk", Kind::Int),
    ("disk_reserve", Kind::Int),
    ("max_pending_per_webhook", Kind::Int),
    ("compaction_interval", Kind::Text),
    ("hosts_file", Kind::Text),
    ("actor_idle", Kind::Text),
    ("max_connections", Kind::Int),
    ("ops_connections", Kind::Int),
    ("body_read_timeout", Kind::Text),
    ("max_body_memory", Kind::Int),
    ("seal_key", Kind::Text),
    ("seal_key_file", Kind::Text),
];

/// Environment variables that are not configuration keys but belong to Herald.
const NON_KEY_VARS: &[&str] = &["HERALD_CONFIG"];

/// Why the configuration is unusable. Every message names the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("unknown configuration variable {0} (known keys: see `herald config`)")]
    UnknownVariable(String),
    #[error("{var}: {message}")]
    Variable { var: String, message: String },
    #[error("configuration: {0}")]
    Invalid(String),
}

/// Values given on the command line; `None` leaves the lower layers' value.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub store: Option<String>,
    pub dev: bool,
    pub log_format: Option<LogFormat>,
}

impl Config {
    /// Layers defaults, the file, the environment and the flags, then validates.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        flags: &Overrides,
    ) -> Result<Config, ConfigError> {
        let mut table = toml::Table::new();
        if let Some(path) = file {
            let text =
                std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
            table = text
                .parse::<toml::Table>()
                .map_err(|e| ConfigError::File { path: path.to_owned(), message: e.to_string() })?;
            // Deserialize once on its own so file errors name the file.
            Config::deserialize(toml::Value::Table(table.clone()))
                .map_err(|e| ConfigError::File { path: path.to_owned(), message: e.to_string() })?;
        }
        for (var, raw) in env {
            let Some(name) = var.strip_prefix("HERALD_") else {
                continue;
            };
            if NON_KEY_VARS.contains(&var.as_str()) {
                continue;
            }
            let key = name.to_ascii_lowercase();
            let Some((_, kind)) = KEYS.iter().find(|(k, _)| *k == key) else {
                return Err(ConfigError::UnknownVariable(var));
            };
            let value =
                env_value(&raw, *kind).map_err(|message| ConfigError::Variable { var: var.clone(), message })?;
            table.insert(key, value);
            Config::deserialize(toml::Value::Table(table.clone()))
                .map_err(|e| ConfigError::Variable { var: var.clone(), message: e.to_string() })?;
        }
        if let Some(listen) = &flags.listen {
            table.insert("listen".into(), toml::Value::String(listen.clone()));
        }
        if let Some(dir) = &flags.data_dir {
            table.insert("data_dir".into(), toml::Value::String(dir.to_string_lossy().into_owned()));
        }
        if let Some(store) = &flags.store {
            table.insert("store".into(), toml::Value::String(store.clone()));
        }
        if flags.dev {
            table.insert("dev".into(), toml::Value::Boolean(true));
        }
        if let Some(format) = flags.log_format {
            let text = if format == LogFormat::Json { "json" } else { "text" };
            table.insert("log_format".into(), toml::Value::String(text.into()));
        }
        let config = Config::deserialize(toml::Value::Table(table)).map_err(|e| ConfigError::Invalid(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks ranges and relations that types alone do not.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |msg: String| Err(ConfigError::Invalid(msg));
        if self.listen.parse::<SocketAddr>().is_err() {
            return bad(format!("listen: `{}` is not an address like 127.0.0.1:8080", self.listen));
        }
        if let Some(store) = &self.store {
            if let Err(why) = crate::pg::url::check(store) {
                return bad(format!("store: `{}` {why}", crate::pg::url::redacted(store)));
            }
        }
        if self.default_max_retries > 20 {
            return bad(format!("default_max_retries: must be 0–20, got {}", self.default_max_retries));
        }
        let timeout = self.default_timeout.0;
        if timeout < Duration::from_secs(1) || timeout > Duration::from_secs(120) || timeout.subsec_nanos() != 0 {
            return bad(format!(
                "default_timeout: must be whole seconds from 1s to 120s, got {}",
                self.default_timeout
            ));
        }
        let positive = [
            ("initial_backoff", self.initial_backoff),
            ("max_backoff", self.max_backoff),
            ("breaker_cooldown", self.breaker_cooldown),
            ("delivery_ttl", self.delivery_ttl),
            ("disable_after", self.disable_after),
            ("compaction_interval", self.compaction_interval),
            ("actor_idle", self.actor_idle),
            ("body_read_timeout", self.body_read_timeout),
            ("store_timeout", self.store_timeout),
            ("ownership_ttl", self.ownership_ttl),
        ];
        for (name, d) in positive {
            if d.0.is_zero() {
                return bad(format!("{name}: must be more than zero"));
            }
        }
        if self.max_backoff < self.initial_backoff {
            return bad("max_backoff: must be at least initial_backoff".into());
        }
        if self.breaker_threshold == 0 {
            return bad("breaker_threshold: must be at least 1".into());
        }
        if self.max_webhooks_per_account == 0 || self.max_webhooks_per_account as usize > crate::model::MAX_FANOUT {
            return bad(format!("max_webhooks_per_account: must be 1–{}", crate::model::MAX_FANOUT));
        }
        if self.max_payload_bytes == 0 || self.max_batch_bytes < self.max_payload_bytes {
            return bad("max_payload_bytes: must be more than zero and at most max_batch_bytes".into());
        }
        if self.ingest_rate_limit == Some(0) {
            return bad("ingest_rate_limit: must be at least 1 (leave it unset for no limit)".into());
        }
        if self.max_connections == 0 {
            return bad("max_connections: must be at least 1".into());
        }
        if self.max_body_memory < self.max_batch_bytes {
            return bad("max_body_memory: must be at least max_batch_bytes (one batch must fit)".into());
        }
        if self.max_pending_per_webhook == 0 {
            return bad("max_pending_per_webhook: must be at least 1".into());
        }
        if let Some(token) = &self.admin_token {
            if token.len() < 16 {
                return bad("admin_token: must be at least 16 characters".into());
            }
        }
        for (i, t) in self.event_types.iter().enumerate() {
            if !crate::model::is_event_name(&t.name) {
                return bad(format!("event_types[{i}].name: `{}` is not an event name like lead.qualified", t.name));
            }
        }
        Ok(())
    }

    /// The configuration as TOML, secrets redacted.
    pub fn redacted_toml(&self) -> String {
        let mut shown = self.clone();
        let redact = |s: &mut Option<String>| {
            if s.is_some() {
                *s = Some("<redacted>".into());
            }
        };
        redact(&mut shown.admin_token);
        redact(&mut shown.metrics_token);
        redact(&mut shown.seal_key);
        shown.store = shown.store.as_deref().map(crate::pg::url::redacted);
        toml::to_string(&shown).unwrap_or_else(|e| format!("# cannot print configuration: {e}\n"))
    }

    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.listen.parse().map_err(|_| ConfigError::Invalid(format!("listen: `{}` is not an address", self.listen)))
    }

    /// Where the keyring that seals secrets at rest comes from.
    pub fn key_source(&self) -> crate::security::seal::KeySource {
        match (&self.seal_key, &self.seal_key_file) {
            (Some(inline), _) => crate::security::seal::KeySource::Inline(inline.clone()),
            (None, Some(file)) => crate::security::seal::KeySource::File(file.clone()),
            (None, None) => {
                crate::security::seal::KeySource::File(crate::security::seal::default_key_file(&self.data_dir))
            }
        }
    }

    /// Where webhooks may point, and how their names resolve.
    pub fn target_policy(&self) -> crate::security::safety::TargetPolicy {
        let lookup = match &self.hosts_file {
            Some(path) => crate::security::safety::Lookup::new(crate::security::safety::HostsFile(path.clone())),
            None => crate::security::safety::Lookup::default(),
        };
        crate::security::safety::TargetPolicy {
            dev: self.dev,
            allow_http: self.allow_http,
            allowed_cidrs: self.allowed_cidrs.clone(),
            lookup,
        }
    }
}

fn env_value(raw: &str, kind: Kind) -> Result<toml::Value, String> {
    let inline = |raw: &str| -> Result<toml::Value, String> {
        let table: toml::Table = format!("v = {raw}")
            .parse()
            .map_err(|e: toml::de::Error| format!("`{raw}` is not a TOML value: {}", e.message()))?;
        table.get("v").cloned().ok_or_else(|| format!("`{raw}` is not a TOML value"))
    };
    match kind {
        Kind::Text => Ok(toml::Value::String(raw.to_owned())),
        Kind::Bool => match raw.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok(toml::Value::Boolean(true)),
            "false" | "0" | "no" | "off" => Ok(toml::Value::Boolean(false)),
            _ => Err(format!("expected true or false, got `{raw}`")),
        },
        Kind::Int => raw
            .trim()
            .parse::<i64>()
            .map(toml::Value::Integer)
            .map_err(|_| format!("expected a whole number, got `{raw}`")),
        Kind::List if raw.trim_start().starts_with('[') => inline(raw),
        Kind::List => Ok(toml::Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| toml::Value::String(s.to_owned()))
                .collect(),
        )),
        Kind::Toml => inline(raw),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn defaults_match_the_spec_table() {
        let c = Config::load(None, Vec::new(), &Overrides::default()).unwrap();
        assert_eq!(c.listen, "127.0.0.1:8080");
        assert_eq!(c.data_dir, PathBuf::from("./herald-data"));
        assert_eq!(c.default_max_retries, 5);
        assert_eq!(c.initial_backoff.0, Duration::from_secs(1));
        assert_eq!(c.retention.0, Duration::from_secs(7 * 86_400));
        assert_eq!(c.max_payload_bytes, 1_048_576);
        assert_eq!(KEYS.len(), 45, "every field has an env kind");
        let printed: toml::Table = c.redacted_toml().parse().unwrap();
        for (key, _) in KEYS {
            let optional = matches!(
                *key,
                "admin_token"
                    | "metrics_token"
                    | "ingest_rate_limit"
                    | "hosts_file"
                    | "seal_key"
                    | "seal_key_file"
                    | "store"
            );
            assert!(optional || printed.contains_key(*key), "{key} is printed");
        }
    }

    #[test]
    fn durations_print_in_the_units_a_user_writes() {
        let shown = |ms: u64| Dur(Duration::from_millis(ms)).to_string();
        assert_eq!(shown(86_400_000), "24h");
        assert_eq!(shown(72 * 3_600_000), "72h");
        assert_eq!(shown(7 * 86_400_000), "7d");
        assert_eq!(shown(30 * 86_400_000), "30d");
        assert_eq!(shown(3_600_000), "1h");
        assert_eq!(shown(60_000), "60s");
        assert_eq!(shown(30_000), "30s");
        assert_eq!(shown(90_000), "90s");
        assert_eq!(shown(600_000), "10m");
        assert_eq!(shown(250), "250ms");
        assert_eq!(shown(0), "0ms");
        // What is printed parses back to the same duration.
        for ms in [250, 30_000, 3_600_000, 86_400_000, 90_061_001] {
            assert_eq!(humantime::parse_duration(&shown(ms)).unwrap(), Duration::from_millis(ms));
        }
        let printed = Config::default().redacted_toml();
        for line in
            ["idempotency_window = \"24h\"", "retention = \"7d\"", "max_backoff = \"1h\"", "actor_idle = \"60s\""]
        {
            assert!(printed.contains(line), "{line} in {printed}");
        }
    }

    #[test]
    fn layers_apply_in_order_file_env_flags() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("herald.toml");
        std::fs::write(&file, "listen = \"127.0.0.1:9000\"\nretention = \"2s\"\ndefault_max_retries = 7\n").unwrap();
        let c = Config::load(
            Some(&file),
            env(&[("HERALD_DEFAULT_MAX_RETRIES", "9"), ("HERALD_LISTEN", "127.0.0.1:9100"), ("PATH", "/bin")]),
            &Overrides { listen: Some("127.0.0.1:9200".into()), ..Default::default() },
        )
        .unwrap();
        assert_eq!(c.retention.0, Duration::from_secs(2));
        assert_eq!(c.default_max_retries, 9);
        assert_eq!(c.listen, "127.0.0.1:9200");
    }

    #[test]
    fn env_values_of_every_kind_parse() {
        let c = Config::load(
            None,
            env(&[
                ("HERALD_DEV", "true"),
                ("HERALD_ALLOWED_CIDRS", "10.0.0.0/8, 192.168.1.0/24"),
                ("HERALD_EVENT_TYPES", r#"[{name = "lead.qualified", description = "A lead qualified"}]"#),
                ("HERALD_INITIAL_BACKOFF", "250ms"),
                ("HERALD_ADMIN_TOKEN", "0123456789abcdef0123"),
            ]),
            &Overrides::default(),
        )
        .unwrap();
        assert!(c.dev);
        assert_eq!(c.allowed_cidrs.len(), 2);
        assert_eq!(c.event_types[0].name, "lead.qualified");
        assert_eq!(c.initial_backoff.0, Duration::from_millis(250));
        assert!(!c.redacted_toml().contains("0123456789abcdef"));
        assert!(c.redacted_toml().contains("<redacted>"));
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key() {
        let err = |e: ConfigError| e.to_string();
        let e = err(Config::load(None, env(&[("HERALD_LISTN", "x")]), &Overrides::default()).unwrap_err());
        assert!(e.contains("HERALD_LISTN"), "{e}");
        let e =
            err(Config::load(None, env(&[("HERALD_DEFAULT_MAX_RETRIES", "many")]), &Overrides::default()).unwrap_err());
        assert!(e.contains("HERALD_DEFAULT_MAX_RETRIES"), "{e}");
        let e = err(Config::load(None, env(&[("HERALD_RETENTION", "soon")]), &Overrides::default()).unwrap_err());
        assert!(e.contains("HERALD_RETENTION") && e.contains("soon"), "{e}");
        let e =
            err(Config::load(None, env(&[("HERALD_DEFAULT_MAX_RETRIES", "50")]), &Overrides::default()).unwrap_err());
        assert!(e.contains("default_max_retries"), "{e}");

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("herald.toml");
        std::fs::write(&file, "retentoin = \"1d\"\n").unwrap();
        let e = err(Config::load(Some(&file), Vec::new(), &Overrides::default()).unwrap_err());
        assert!(e.contains("retentoin") && e.contains("herald.toml"), "{e}");
        std::fs::write(&file, "listen = 8080\n").unwrap();
        let e = err(Config::load(Some(&file), Vec::new(), &Overrides::default()).unwrap_err());
        assert!(e.contains("listen"), "{e}");
        std::fs::write(&file, "listen = \"nowhere\"\n").unwrap();
        let e = err(Config::load(Some(&file), Vec::new(), &Overrides::default()).unwrap_err());
        assert!(e.contains("listen"), "{e}");
    }
}
