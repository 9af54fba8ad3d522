//! Configuration: the TOML file, its defaults, and validation of every key;
//! [`secret`]: where secrets come from.
//!
//! Every key is optional; an unknown key, a wrong type or a bad value stops
//! the start with a message naming the key. Secrets never live here: the
//! file only names the environment variables that hold them. A base layer:
//! it imports nothing else of the crate.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::HeaderName;
use serde::{Deserialize, Deserializer};

pub mod secret;

/// The file read when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "config/sidecar.toml";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {key}: {message}")]
    Parse {
        path: PathBuf,
        key: String,
        message: String,
    },
    #[error("config: {key}: {message}")]
    Invalid { key: &'static str, message: String },
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub admin: AdminConfig,
    pub source: SourceConfig,
    pub cache: CacheConfig,
    pub readiness: ReadinessConfig,
    pub log: LogConfig,
    pub trust: TrustConfig,
    pub node: NodeConfig,
    pub report: ReportConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Also serve the data plane on this Unix socket when non-empty.
    pub unix_socket: String,
    #[serde(deserialize_with = "header_name")]
    pub project_header: HeaderName,
    #[serde(deserialize_with = "header_name")]
    pub environment_header: HeaderName,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            unix_socket: String::new(),
            project_header: HeaderName::from_static("x-project-id"),
            environment_header: HeaderName::from_static("x-environment"),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    /// Name of the environment variable holding the admin token.
    pub token_env: String,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 9901)),
            token_env: "ENV_SIDECAR_ADMIN_TOKEN".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    File,
    Http,
    Redis,
}

impl SourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::File => "file",
            SourceKind::Http => "http",
            SourceKind::Redis => "redis",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncMode {
    Watch,
    Poll,
}

impl SyncMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SyncMode::Watch => "watch",
            SyncMode::Poll => "poll",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SourceConfig {
    pub kind: SourceKind,
    /// `kind = "file"`: the snapshot file.
    pub path: PathBuf,
    /// `kind = "http"`: the control plane's base URL; `kind = "redis"`:
    /// `redis://` or `rediss://`.
    pub url: String,
    /// `kind = "redis"`: keys `{key_prefix}:projects` and
    /// `{key_prefix}:changes`.
    pub key_prefix: String,
    /// `kind = "redis"` over `rediss://`: a PEM bundle of CAs to trust
    /// instead of the system's (empty: the system's).
    pub tls_ca_file: PathBuf,
    pub mode: SyncMode,
    /// Name of the environment variable holding the control-plane token.
    pub token_env: String,
    #[serde(deserialize_with = "duration")]
    pub poll_interval: Duration,
    #[serde(deserialize_with = "duration")]
    pub request_timeout: Duration,
    #[serde(deserialize_with = "duration")]
    pub long_poll_wait: Duration,
    #[serde(deserialize_with = "duration")]
    pub backoff_max: Duration,
    pub max_removed_fraction: f64,
    /// The largest one document (or signed envelope) may be, in bytes;
    /// a larger one is refused unread (`too_large`).
    pub max_document_bytes: usize,
}

impl Default for SourceConfig {
    fn default() -> Self {
        SourceConfig {
            kind: SourceKind::File,
            path: PathBuf::from("config/snapshot.json"),
            url: String::new(),
            key_prefix: "env-sidecar".into(),
            tls_ca_file: PathBuf::new(),
            mode: SyncMode::Watch,
            token_env: "ENV_SIDECAR_CONTROL_PLANE_TOKEN".into(),
            poll_interval: Duration::from_secs(5),
            request_timeout: Duration::from_secs(5),
            long_poll_wait: Duration::from_secs(30),
            backoff_max: Duration::from_secs(30),
            max_removed_fraction: 0.5,
            // 4 MiB: model::wire::DEFAULT_MAX_DOCUMENT_BYTES (config imports nothing).
            max_document_bytes: 4 << 20,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Last-known-good file; empty disables the cache.
    pub path: PathBuf,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            path: PathBuf::from("var/last-known-good.json"),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReadinessConfig {
    /// Unready when the last successful contact with the source is older;
    /// zero means never.
    #[serde(deserialize_with = "duration")]
    pub max_staleness: Duration,
}

/// Labels a node may carry, and how long their keys and values may be.
pub const MAX_LABELS: usize = 8;
pub const MAX_LABEL_LEN: usize = 63;
pub const MAX_NODE_ID_LEN: usize = 128;

/// Who this sidecar is in a fleet.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    /// Empty: the host name and the data-plane port (`gw-7:8080`).
    pub id: String,
    /// Static labels (`region`, `zone`, ...): at most 8; keys 1-63 of
    /// `a-z 0-9 . _ -` starting with a letter, values 0-63 of
    /// `A-Z a-z 0-9 . _ -`.
    pub labels: std::collections::BTreeMap<String, String>,
}

/// The served report each sidecar publishes for fleet commands.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReportConfig {
    /// Publish it (to the Redis source, or to the control plane over
    /// HTTP; the file source only with `redis_url`).
    pub enabled: bool,
    /// Heartbeat: the report is written at least this often; it expires
    /// after three of them.
    #[serde(deserialize_with = "duration")]
    pub interval: Duration,
    /// At most one write this often: a burst of changes is one write.
    #[serde(deserialize_with = "duration")]
    pub min_interval: Duration,
    /// Where reports go instead of `source.url` (a primary, when data is
    /// read from a replica); for the file source, enables Redis reports.
    pub redis_url: String,
    /// The variable holding that Redis' password (empty: `source.token_env`).
    pub token_env: String,
}

impl Default for ReportConfig {
    fn default() -> Self {
        ReportConfig {
            enabled: true,
            interval: Duration::from_secs(10),
            min_interval: Duration::from_secs(1),
            redis_url: String::new(),
            token_env: String::new(),
        }
    }
}

/// True for a node id of 1-128 of `A-Z a-z 0-9 . _ : -`.
pub fn is_valid_node_id(id: &str) -> bool {
    (1..=MAX_NODE_ID_LEN).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b))
}

/// Which signatures documents must carry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrustConfig {
    /// Public key files (several keys each, possibly) and folders of them
    /// (every `*.pub` / `*.pem`); read again when they change.
    pub keys: Vec<PathBuf>,
    /// Reject documents that are not signed by one of the keys, and
    /// removals that are not signed tombstones.
    pub require_signatures: bool,
    /// Reject documents from the source signed longer ago; zero: no limit.
    #[serde(deserialize_with = "duration")]
    pub max_signature_age: Duration,
    /// Reject documents from the source signed further ahead of this
    /// clock (`not_yet_valid`).
    #[serde(deserialize_with = "duration")]
    pub max_clock_skew: Duration,
}

impl Default for TrustConfig {
    fn default() -> Self {
        TrustConfig {
            keys: Vec::new(),
            require_signatures: false,
            max_signature_age: Duration::ZERO,
            max_clock_skew: Duration::from_secs(300),
        }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event.
    Text,
    /// One JSON object per line (for log pipelines).
    Json,
}

impl LogFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
    /// `error`, `warn`, `info`, `debug`, `trace`, or `target=level` lists
    /// (`info,env_sidecar::sync=debug`). `RUST_LOG`, when set, wins.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

impl LogConfig {
    /// The level directives (`RUST_LOG` when set and valid, else `level`).
    pub fn filter(&self) -> tracing_subscriber::filter::Targets {
        std::env::var("RUST_LOG")
            .ok()
            .and_then(|v| v.parse().ok())
            .or_else(|| self.level.parse().ok())
            .unwrap_or_else(|| {
                tracing_subscriber::filter::Targets::new()
                    .with_default(tracing_subscriber::filter::LevelFilter::INFO)
            })
    }
}

impl Config {
    /// Parses and checks a TOML document; `path` is only used in messages.
    pub fn from_toml(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let de = toml::Deserializer::new(text);
        let config: Config = serde_path_to_error::deserialize(de).map_err(|err| {
            let key = err.path().to_string();
            let inner = err.into_inner();
            let line = inner
                .span()
                .map(|span| {
                    format!(
                        " (line {})",
                        text[..span.start.min(text.len())].lines().count().max(1)
                    )
                })
                .unwrap_or_default();
            ConfigError::Parse {
                path: path.to_owned(),
                key: if key == "." {
                    "(top level)".into()
                } else {
                    key
                },
                message: format!("{}{line}", inner.message().trim_end()),
            }
        })?;
        config.check()?;
        Ok(config)
    }

    /// Reads `path`. A missing file is an error only when `required`
    /// (an explicit `--config`); otherwise the defaults apply.
    pub fn load(path: &Path, required: bool) -> Result<Config, ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Config::from_toml(&text, path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
                Ok(Config::default())
            }
            Err(source) => Err(ConfigError::Read {
                path: path.to_owned(),
                source,
            }),
        }
    }

    /// Checks the values serde cannot: ranges and cross-key rules.
    pub fn check(&self) -> Result<(), ConfigError> {
        let invalid = |key, message: &str| {
            Err(ConfigError::Invalid {
                key,
                message: message.into(),
            })
        };
        let s = &self.source;
        if !(0.0..=1.0).contains(&s.max_removed_fraction) {
            return invalid("source.max_removed_fraction", "must be between 0 and 1");
        }
        if s.max_document_bytes < 1024 {
            return invalid("source.max_document_bytes", "must be at least 1024");
        }
        if s.kind == SourceKind::Http {
            if s.url.is_empty() {
                return invalid("source.url", "is required when source.kind = \"http\"");
            }
            if !(s.url.starts_with("http://") || s.url.starts_with("https://")) {
                return invalid("source.url", "must start with http:// or https://");
            }
        }
        if s.kind == SourceKind::Redis {
            if s.url.is_empty() {
                return invalid("source.url", "is required when source.kind = \"redis\"");
            }
            if !(s.url.starts_with("redis://") || s.url.starts_with("rediss://")) {
                return invalid("source.url", "must start with redis:// or rediss://");
            }
            if has_password(&s.url) {
                return invalid(
                    "source.url",
                    "must not carry a password: name the variable holding it in source.token_env",
                );
            }
            if s.key_prefix.is_empty() || s.key_prefix.contains(['{', '}']) {
                return invalid("source.key_prefix", "must be non-empty, without braces");
            }
        }
        if s.kind == SourceKind::File && s.path.as_os_str().is_empty() {
            return invalid("source.path", "is required when source.kind = \"file\"");
        }
        for (key, d) in [
            ("source.poll_interval", s.poll_interval),
            ("source.request_timeout", s.request_timeout),
            ("source.long_poll_wait", s.long_poll_wait),
            ("source.backoff_max", s.backoff_max),
        ] {
            if d.is_zero() {
                return invalid(key, "must be greater than zero");
            }
        }
        let level_ok = |text: &str| {
            text.trim()
                .parse::<tracing_subscriber::filter::LevelFilter>()
                .is_ok()
        };
        let directives_ok = !self.log.level.trim().is_empty()
            && self.log.level.split(',').all(|d| match d.split_once('=') {
                Some((target, level)) => !target.trim().is_empty() && level_ok(level),
                None => level_ok(d),
            });
        if !directives_ok {
            return invalid(
                "log.level",
                "must be a level (error, warn, info, debug, trace) or target=level list",
            );
        }
        if !self.node.id.is_empty() && !is_valid_node_id(&self.node.id) {
            return invalid("node.id", "must be 1-128 of A-Z a-z 0-9 . _ : -");
        }
        if self.node.labels.len() > MAX_LABELS {
            return invalid("node.labels", "at most 8 labels");
        }
        for (key, value) in &self.node.labels {
            let key_ok = (1..=MAX_LABEL_LEN).contains(&key.len())
                && key.starts_with(|c: char| c.is_ascii_lowercase())
                && key
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
            let value_ok = value.len() <= MAX_LABEL_LEN
                && value
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
            if !key_ok || !value_ok {
                return Err(ConfigError::Invalid {
                    key: "node.labels",
                    message: format!(
                        "{key:?} = {value:?}: keys are 1-63 of a-z 0-9 . _ - starting with a letter, values 0-63 of A-Z a-z 0-9 . _ -"
                    ),
                });
            }
        }
        let r = &self.report;
        if r.interval.is_zero() || r.min_interval.is_zero() {
            return invalid(
                "report.interval",
                "report.interval and report.min_interval must be greater than zero",
            );
        }
        if r.min_interval > r.interval {
            return invalid("report.min_interval", "must not exceed report.interval");
        }
        if !(r.redis_url.is_empty()
            || r.redis_url.starts_with("redis://")
            || r.redis_url.starts_with("rediss://"))
        {
            return invalid("report.redis_url", "must start with redis:// or rediss://");
        }
        if has_password(&r.redis_url) {
            return invalid(
                "report.redis_url",
                "must not carry a password: name the variable holding it in report.token_env",
            );
        }
        if self.trust.require_signatures && self.trust.keys.is_empty() {
            return invalid(
                "trust.keys",
                "must name at least one key file when trust.require_signatures = true",
            );
        }
        if self.server.project_header == self.server.environment_header {
            return invalid(
                "server.environment_header",
                "must differ from server.project_header",
            );
        }
        Ok(())
    }
}

/// True when a `redis://user:password@host` URL carries a password.
fn has_password(url: &str) -> bool {
    let authority = url
        .split("//")
        .nth(1)
        .unwrap_or("")
        .split('/')
        .next()
        .unwrap_or("");
    authority
        .rsplit_once('@')
        .is_some_and(|(userinfo, _)| userinfo.contains(':'))
}

fn duration<'de, D: Deserializer<'de>>(de: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(de)?;
    humantime::parse_duration(&text).map_err(|e| {
        serde::de::Error::custom(format!(
            "{text:?} is not a duration like \"250ms\", \"5s\" or \"1m\": {e}"
        ))
    })
}

fn header_name<'de, D: Deserializer<'de>>(de: D) -> Result<HeaderName, D::Error> {
    let text = String::deserialize(de)?;
    HeaderName::from_bytes(text.as_bytes())
        .map_err(|_| serde::de::Error::custom(format!("{text:?} is not a valid HTTP header name")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(text, Path::new("test.toml"))
    }

    #[test]
    fn empty_file_gives_the_documented_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c.server.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.admin.listen.to_string(), "127.0.0.1:9901");
        assert_eq!(c.source.kind, SourceKind::File);
        assert_eq!(c.source.mode, SyncMode::Watch);
        assert_eq!(c.source.long_poll_wait, Duration::from_secs(30));
        assert_eq!(c.source.max_removed_fraction, 0.5);
        assert_eq!(c.readiness.max_staleness, Duration::ZERO);
        assert_eq!(c.server.project_header, "x-project-id");
    }

    #[test]
    fn unknown_key_is_refused_with_its_name() {
        let err = parse("[server]\nlisten = \"127.0.0.1:1\"\nlisten_port = 3\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("listen_port"), "{err}");
        let err = parse("[surce]\nkind = \"file\"\n").unwrap_err().to_string();
        assert!(err.contains("surce"), "{err}");
    }

    #[test]
    fn wrong_type_names_the_key() {
        let err = parse("[source]\nrequest_timeout = 5\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("source.request_timeout"), "{err}");
        let err = parse("[server]\nlisten = \"nowhere\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("server.listen"), "{err}");
    }

    #[test]
    fn bad_values_name_the_key() {
        for (text, key) in [
            (
                "[source]\nrequest_timeout = \"5 parsecs\"\n",
                "source.request_timeout",
            ),
            ("[source]\nkind = \"ftp\"\n", "source.kind"),
            (
                "[source]\nmax_removed_fraction = 1.5\n",
                "source.max_removed_fraction",
            ),
            ("[source]\nkind = \"http\"\n", "source.url"),
            (
                "[server]\nproject_header = \"bad header\"\n",
                "server.project_header",
            ),
            ("[source]\npoll_interval = \"0s\"\n", "source.poll_interval"),
            ("[log]\nlevel = \"verbose\"\n", "log.level"),
            ("[log]\nlevel = \"info,env_sidecar=loud\"\n", "log.level"),
            ("[log]\nformat = \"xml\"\n", "log.format"),
            ("[trust]\nrequire_signatures = true\n", "trust.keys"),
            (
                "[trust]\nmax_signature_age = \"soon\"\n",
                "trust.max_signature_age",
            ),
            ("[trust]\nkeys = \"one.pub\"\n", "trust.keys"),
            ("[node]\nid = \"has space\"\n", "node.id"),
            ("[node.labels]\nRegion = \"eu\"\n", "node.labels"),
            ("[node.labels]\nregion = \"eu west\"\n", "node.labels"),
            (
                "[node.labels]\na = \"1\"\nb = \"1\"\nc = \"1\"\nd = \"1\"\ne = \"1\"\nf = \"1\"\ng = \"1\"\nh = \"1\"\ni = \"1\"\n",
                "node.labels",
            ),
            ("[report]\ninterval = \"0s\"\n", "report.interval"),
            ("[report]\nmin_interval = \"1m\"\n", "report.min_interval"),
            ("[report]\nredis_url = \"http://x\"\n", "report.redis_url"),
            (
                "[report]\nredis_url = \"redis://u:secret@h:6379/0\"\n",
                "report.redis_url",
            ),
        ] {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains(key), "{text:?} gave {err}");
        }
    }

    #[test]
    fn log_levels_accept_levels_and_target_lists() {
        for level in ["warn", "INFO", "info,env_sidecar::sync=debug"] {
            let c = parse(&format!("[log]\nlevel = \"{level}\"\nformat = \"json\"\n")).unwrap();
            assert_eq!(c.log.format, LogFormat::Json);
        }
    }

    #[test]
    fn durations_accept_the_documented_forms() {
        let c = parse("[source]\npoll_interval = \"250ms\"\nbackoff_max = \"1m\"\n").unwrap();
        assert_eq!(c.source.poll_interval, Duration::from_millis(250));
        assert_eq!(c.source.backoff_max, Duration::from_secs(60));
    }

    #[test]
    fn the_shipped_config_file_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(DEFAULT_CONFIG_PATH);
        Config::load(&path, true).unwrap();
    }
}
