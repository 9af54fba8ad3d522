//! Configuration: the TOML file, its defaults, and validation of every key;
//! [`source`]: `[source]`, one typed config per kind; [`report`]:
//! `[report]`, its own Redis read as the source's; [`secret`]: where
//! secrets come from.
//!
//! Every key is optional. An unknown key, a wrong type or a bad value
//! stops the start with a message naming the key; every such problem of
//! a file is reported together ([`ConfigErrors`]), one per key (within a
//! section, a key of the wrong type hides the type errors after it).
//! Secrets never live here: the file only names the environment
//! variables that hold them. The effective config serialises back to the
//! same TOML (`check-config` prints it). A base layer: it imports nothing
//! else of the crate.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::HeaderName;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub mod report;
pub mod secret;
pub mod source;

pub use report::{ReportConfig, ReportsTo};

pub use source::{
    is_redis_url, FileConfig, HttpConfig, ReadFrom, RedisConfig, Source, SourceConfig, SourceKind,
    SyncMode, Timing, TlsFiles, DEFAULT_KEY_PREFIX, DEFAULT_TOKEN_ENV,
};

/// The file read when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "config/sidecar.toml";

/// One problem with the config, naming its key.
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

impl ConfigError {
    /// The key the problem is with (`(file)` when the file itself).
    pub fn key(&self) -> &str {
        match self {
            ConfigError::Read { .. } => "(file)",
            ConfigError::Parse { key, .. } => key,
            ConfigError::Invalid { key, .. } => key,
        }
    }
}

/// Every problem found in a config, at least one.
#[derive(Debug, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl std::fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl From<ConfigError> for ConfigErrors {
    fn from(e: ConfigError) -> ConfigErrors {
        ConfigErrors(vec![e])
    }
}

pub(crate) fn invalid(key: &'static str, message: &str) -> ConfigError {
    ConfigError::Invalid {
        key,
        message: message.into(),
    }
}

#[derive(Debug, Clone, Default, Serialize)]
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

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Also serve the data plane on this Unix socket when non-empty.
    pub unix_socket: String,
    #[serde(deserialize_with = "header_name", serialize_with = "header_text")]
    pub project_header: HeaderName,
    #[serde(deserialize_with = "header_name", serialize_with = "header_text")]
    pub environment_header: HeaderName,
    /// `x-resolved-pointers` is left out of an answer (and
    /// `x-resolved-pointers-omitted: too_large` sent instead) when the
    /// pointers' JSON is longer than this many bytes: 3 KiB keeps an auth
    /// answer's headers within nginx's default 4 KiB `proxy_buffer_size`.
    pub max_pointers_header_bytes: usize,
    /// How a gRPC `Check`'s `pointers` metadata struct is made.
    pub grpc_pointers_struct: GrpcPointersStruct,
    /// Who reads HTTP/1.1 requests on the data plane first.
    pub http1: Http1Path,
}

/// `server.http1`: who reads HTTP/1.1 requests first. The same answers,
/// byte for byte (`date` aside), either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Http1Path {
    /// A narrow hot path answers plain resolve and forward-auth `GET` and
    /// `HEAD` requests; hyper takes the connection at the first request
    /// that is anything else.
    #[default]
    HotPath,
    /// hyper reads every request.
    HyperOnly,
}

/// `server.grpc_pointers_struct`: when the protobuf struct of a gRPC
/// `Check`'s `pointers` metadata is encoded. The same bytes either way;
/// a trade of CPU per `Check` against memory per environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GrpcPointersStruct {
    /// On each `Check`, from the answer's pointers text: no memory.
    #[default]
    PerCheck,
    /// Once per accepted revision, by the writer: a `Check` copies it.
    /// Holds about the pointers' JSON size again per environment.
    Prerendered,
}

/// The most `server.max_pointers_header_bytes` may be: Envoy's default
/// limit on a response's headers (`max_response_headers_kb`, 60 KiB).
pub const MAX_POINTERS_HEADER_LIMIT: usize = 60 * 1024;

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            unix_socket: String::new(),
            project_header: HeaderName::from_static("x-project-id"),
            environment_header: HeaderName::from_static("x-environment"),
            max_pointers_header_bytes: 3072,
            grpc_pointers_struct: GrpcPointersStruct::PerCheck,
            http1: Http1Path::HotPath,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    /// Name of the environment variable holding the admin token.
    pub token_env: String,
}

/// An operator plane bound to a non-loopback address without a token.
#[derive(Debug, thiserror::Error)]
#[error(
    "refusing to serve the operator plane on {0} without a token: set the variable named by \
     admin.token_env, or listen on a loopback address"
)]
pub struct InsecureAdmin(pub SocketAddr);

impl AdminConfig {
    /// The admin token, from `env`. An operator plane open beyond this
    /// host without one is refused: the one place that rule is made (the
    /// start, the embedded mode and `check-config` ask here).
    pub fn token(&self, env: &secret::Env) -> Result<Option<secret::Secret>, InsecureAdmin> {
        let token = env.secret(&self.token_env);
        if token.is_none() && !self.listen.ip().is_loopback() {
            return Err(InsecureAdmin(self.listen));
        }
        Ok(token)
    }
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 9901)),
            token_env: "ENV_SIDECAR_ADMIN_TOKEN".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
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

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReadinessConfig {
    /// Unready when the last successful contact with the source is older;
    /// zero means never.
    #[serde(deserialize_with = "duration", serialize_with = "duration_text")]
    pub max_staleness: Duration,
}

/// Labels a node may carry, and how long their keys and values may be.
pub const MAX_LABELS: usize = 8;
pub const MAX_LABEL_LEN: usize = 63;
pub const MAX_NODE_ID_LEN: usize = 128;

/// Who this sidecar is in a fleet.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    /// Empty: the value of `id_env` when that variable is set, else the
    /// host name and the data-plane port (`gw-7:8080`).
    pub id: String,
    /// A variable holding the id, read when `id` is empty (on Kubernetes,
    /// the pod name from the downward API: `metadata.name`).
    pub id_env: String,
    /// Static labels (`region`, `zone`, ...): at most 8; keys 1-63 of
    /// `a-z 0-9 . _ -` starting with a letter, values 0-63 of
    /// `A-Z a-z 0-9 . _ -`.
    pub labels: std::collections::BTreeMap<String, String>,
}

/// `node.id_env` names a variable whose value is not a node id.
#[derive(Debug, thiserror::Error)]
#[error("node.id_env: ${variable} = {value:?} is not a node id (1-128 of A-Z a-z 0-9 . _ : -)")]
pub struct BadNodeId {
    pub variable: String,
    pub value: String,
}

impl NodeConfig {
    /// The id this node reports under: `id`, else the value of `id_env`
    /// when that variable is set and not empty, else the host name and
    /// `port`.
    pub fn resolve_id(&self, env: &secret::Env, port: u16) -> Result<String, BadNodeId> {
        if !self.id.is_empty() {
            return Ok(self.id.clone());
        }
        match env.value(&self.id_env) {
            Some(value) if is_valid_node_id(&value) => Ok(value),
            Some(value) => Err(BadNodeId {
                variable: self.id_env.clone(),
                value,
            }),
            None => Ok(format!("{}:{port}", host_name())),
        }
    }
}

/// The host name (`/proc/sys/kernel/hostname`), or `localhost`.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| is_valid_node_id(h))
        .unwrap_or_else(|| "localhost".into())
}

/// True for a node id of 1-128 of `A-Z a-z 0-9 . _ : -`.
pub fn is_valid_node_id(id: &str) -> bool {
    (1..=MAX_NODE_ID_LEN).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b))
}

/// Which signatures documents must carry.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrustConfig {
    /// Public key files (several keys each, possibly) and folders of them
    /// (every `*.pub` / `*.pem`); read again when they change.
    pub keys: Vec<PathBuf>,
    /// Reject documents that are not signed by one of the keys, and
    /// removals that are not signed tombstones.
    pub require_signatures: bool,
    /// Reject documents from the source signed longer ago; zero: no limit.
    #[serde(deserialize_with = "duration", serialize_with = "duration_text")]
    pub max_signature_age: Duration,
    /// Reject documents from the source signed further ahead of this
    /// clock (`not_yet_valid`).
    #[serde(deserialize_with = "duration", serialize_with = "duration_text")]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
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

#[derive(Debug, Clone, Deserialize, Serialize)]
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
    /// Every problem found is in the error, one per key.
    pub fn from_toml(text: &str, path: &Path) -> Result<Config, ConfigErrors> {
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            ConfigErrors::from(parse_error(text, path, "(top level)".into(), &e))
        })?;
        let mut errors = Vec::new();
        let mut config = Config::default();
        let mut raw_source = None;
        let mut raw_report = None;
        for (name, value) in table {
            let mut section = |into: &mut dyn FnMut(toml::Value) -> Result<(), SectionError>| {
                if let Err(e) = into(value.clone()) {
                    errors.push(e.at(text, path, &name));
                }
            };
            match name.as_str() {
                "server" => section(&mut |v| read(v, &mut config.server)),
                "admin" => section(&mut |v| read(v, &mut config.admin)),
                "source" => section(&mut |v| {
                    let mut raw = source::RawSource::default();
                    read(v, &mut raw)?;
                    raw_source = Some(raw);
                    Ok(())
                }),
                "cache" => section(&mut |v| read(v, &mut config.cache)),
                "readiness" => section(&mut |v| read(v, &mut config.readiness)),
                "log" => section(&mut |v| read(v, &mut config.log)),
                "trust" => section(&mut |v| read(v, &mut config.trust)),
                "node" => section(&mut |v| read(v, &mut config.node)),
                "report" => section(&mut |v| {
                    let mut raw = report::RawReport::default();
                    read(v, &mut raw)?;
                    raw_report = Some(raw);
                    Ok(())
                }),
                _ => errors.push(ConfigError::Parse {
                    path: path.to_owned(),
                    key: name.clone(),
                    message: format!("unknown section; the sections are {}", SECTIONS.join(", ")),
                }),
            }
        }
        config.source = raw_source.unwrap_or_default().into_config(&mut errors);
        config.report = raw_report
            .unwrap_or_default()
            .into_config(&config.source, &mut errors);
        errors.extend(config.problems());
        if errors.is_empty() {
            Ok(config)
        } else {
            Err(ConfigErrors(errors))
        }
    }

    /// Reads `path`. A missing file is an error only when `required`
    /// (an explicit `--config`); otherwise the defaults apply.
    pub fn load(path: &Path, required: bool) -> Result<Config, ConfigErrors> {
        match std::fs::read_to_string(path) {
            Ok(text) => Config::from_toml(&text, path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
                Ok(Config::default())
            }
            Err(source) => Err(ConfigError::Read {
                path: path.to_owned(),
                source,
            }
            .into()),
        }
    }

    /// Checks the values serde cannot: ranges and cross-key rules (after
    /// flags changed some). Every problem, one per key.
    pub fn check(&self) -> Result<(), ConfigErrors> {
        let problems = self.problems();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigErrors(problems))
        }
    }

    fn problems(&self) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        let mut check = |ok: bool, key: &'static str, message: &str| {
            if !ok {
                errors.push(invalid(key, message));
            }
        };
        let level_ok = |text: &str| {
            text.trim()
                .parse::<tracing_subscriber::filter::LevelFilter>()
                .is_ok()
        };
        let level = &self.log.level;
        check(
            !level.trim().is_empty()
                && level.split(',').all(|d| match d.split_once('=') {
                    Some((target, level)) => !target.trim().is_empty() && level_ok(level),
                    None => level_ok(d),
                }),
            "log.level",
            "must be a level (error, warn, info, debug, trace) or target=level list",
        );
        self.node_problems(&mut errors);
        self.report.problems(&mut errors);
        let mut check = |ok: bool, key: &'static str, message: &str| {
            if !ok {
                errors.push(invalid(key, message));
            }
        };
        check(
            !(self.trust.require_signatures && self.trust.keys.is_empty()),
            "trust.keys",
            "must name at least one key file when trust.require_signatures = true",
        );
        check(
            self.server.project_header != self.server.environment_header,
            "server.environment_header",
            "must differ from server.project_header",
        );
        check(
            self.server.max_pointers_header_bytes <= MAX_POINTERS_HEADER_LIMIT,
            "server.max_pointers_header_bytes",
            "at most 61440 (60 KiB, Envoy's default limit on a response's headers)",
        );
        self.tls_problems(&mut errors);
        errors
    }

    /// `[node]`: the id and the labels.
    fn node_problems(&self, errors: &mut Vec<ConfigError>) {
        if !(self.node.id.is_empty() || is_valid_node_id(&self.node.id)) {
            errors.push(invalid("node.id", "must be 1-128 of A-Z a-z 0-9 . _ : -"));
        }
        if self.node.labels.len() > MAX_LABELS {
            errors.push(invalid("node.labels", "at most 8 labels"));
        }
        for (key, value) in &self.node.labels {
            if !is_valid_label(key, value) {
                errors.push(ConfigError::Invalid {
                    key: "node.labels",
                    message: format!(
                        "{key:?} = {value:?}: keys are 1-63 of a-z 0-9 . _ - starting with a letter, values 0-63 of A-Z a-z 0-9 . _ -"
                    ),
                });
            }
        }
    }

    /// Every TLS file is read now, so a missing or garbled one stops the
    /// start (and check-config) naming its key, not the first connect; a
    /// client certificate goes with its key.
    fn tls_problems(&self, errors: &mut Vec<ConfigError>) {
        let mut sections: Vec<(&'static str, TlsFiles)> = Vec::new();
        if let Source::Redis(r) = &self.source.kind {
            sections.push(("source", r.tls.clone()));
        }
        if let Some(r) = &self.report.redis {
            sections.push(("report", r.tls.clone()));
        }
        for (section, tls) in &sections {
            for (key, path, what) in tls_keys(section, tls) {
                if let Err(message) = read_pem(path, what) {
                    errors.push(ConfigError::Invalid { key, message });
                }
            }
        }
        for (section, tls) in &sections {
            if tls.cert_file.is_some() != tls.key_file.is_some() {
                let (key, message) = match *section {
                    "source" => (
                        "source.tls_key_file",
                        "source.tls_cert_file and source.tls_key_file go together",
                    ),
                    _ => (
                        "report.tls_key_file",
                        "report.tls_cert_file and report.tls_key_file go together",
                    ),
                };
                errors.push(invalid(key, message));
            }
        }
    }

    /// The effective config as TOML (what `check-config` prints).
    pub fn to_toml(&self) -> String {
        // Plain data with string keys: cannot fail.
        toml::to_string(self).unwrap_or_default()
    }
}

/// What a PEM file must hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pem {
    Certificate,
    PrivateKey,
}

/// The TLS files of `files` with the keys naming them under `section`.
fn tls_keys<'a>(section: &str, files: &'a TlsFiles) -> Vec<(&'static str, &'a Path, Pem)> {
    let key = |name: &str| -> &'static str {
        match (section, name) {
            ("source", "ca") => "source.tls_ca_file",
            ("source", "cert") => "source.tls_cert_file",
            ("source", "key") => "source.tls_key_file",
            (_, "ca") => "report.tls_ca_file",
            (_, "cert") => "report.tls_cert_file",
            _ => "report.tls_key_file",
        }
    };
    [
        (key("ca"), files.ca_file.as_deref(), Pem::Certificate),
        (key("cert"), files.cert_file.as_deref(), Pem::Certificate),
        (key("key"), files.key_file.as_deref(), Pem::PrivateKey),
    ]
    .into_iter()
    .filter_map(|(k, p, w)| Some((k, p?, w)))
    .collect()
}

/// Reads a PEM file and checks it holds `what`; its bytes, or why not.
pub fn read_pem(path: &Path, what: Pem) -> Result<Vec<u8>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if pem_holds(&bytes, what) {
        Ok(bytes)
    } else {
        Err(format!(
            "{} holds no {} in PEM",
            path.display(),
            match what {
                Pem::Certificate => "certificate",
                Pem::PrivateKey => "private key",
            }
        ))
    }
}

/// True when `bytes` hold at least one PEM block of `what` that decodes.
pub fn pem_holds(bytes: &[u8], what: Pem) -> bool {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    match what {
        Pem::Certificate => CertificateDer::pem_slice_iter(bytes).any(|c| c.is_ok()),
        Pem::PrivateKey => PrivateKeyDer::from_pem_slice(bytes).is_ok(),
    }
}

/// True for a node label: a key of 1-63 of `a-z 0-9 . _ -` starting with
/// a letter, a value of 0-63 of `A-Z a-z 0-9 . _ -`.
fn is_valid_label(key: &str, value: &str) -> bool {
    let key_ok = (1..=MAX_LABEL_LEN).contains(&key.len())
        && key.starts_with(|c: char| c.is_ascii_lowercase())
        && key
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    let value_ok = value.len() <= MAX_LABEL_LEN
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    key_ok && value_ok
}

/// A section that did not read: the path inside it and why.
struct SectionError(serde_path_to_error::Error<toml::de::Error>);

impl SectionError {
    fn at(self, text: &str, path: &Path, section: &str) -> ConfigError {
        let inner = self.0.path().to_string();
        let key = if inner == "." {
            section.to_owned()
        } else {
            format!("{section}.{inner}")
        };
        let line = line_of(text, section, inner.rsplit('.').next().unwrap_or(""))
            .map(|n| format!(" (line {n})"))
            .unwrap_or_default();
        ConfigError::Parse {
            path: path.to_owned(),
            key,
            message: format!("{}{line}", self.0.inner().message().trim_end()),
        }
    }
}

/// The line (from 1) where `key` is set in `[section]`, if it is found.
fn line_of(text: &str, section: &str, key: &str) -> Option<usize> {
    let header = format!("[{section}]");
    let mut inside = false;
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.starts_with('[') {
            inside = line == header;
            continue;
        }
        let name = line.split('=').next().unwrap_or("").trim();
        if inside && !key.is_empty() && name == key {
            return Some(i + 1);
        }
    }
    None
}

/// Reads one section's value into `into`.
fn read<T: serde::de::DeserializeOwned>(
    value: toml::Value,
    into: &mut T,
) -> Result<(), SectionError> {
    // A section's value read again as a TOML document: serde then names
    // the key inside it that is wrong.
    let text = match value {
        toml::Value::Table(t) => toml::to_string(&t).unwrap_or_default(),
        other => format!("value = {other}"),
    };
    let de = toml::Deserializer::new(&text);
    *into = serde_path_to_error::deserialize(de).map_err(SectionError)?;
    Ok(())
}

fn parse_error(text: &str, path: &Path, key: String, inner: &toml::de::Error) -> ConfigError {
    let line = inner
        .span()
        .filter(|_| key == "(top level)")
        .map(|span| {
            format!(
                " (line {})",
                text[..span.start.min(text.len())].lines().count().max(1)
            )
        })
        .unwrap_or_default();
    ConfigError::Parse {
        path: path.to_owned(),
        key,
        message: format!("{}{line}", inner.message().trim_end()),
    }
}

/// True when a `redis://user:password@host` URL carries a password.
pub(crate) fn has_password(url: &str) -> bool {
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

/// Every section of the file, in the order the shipped file has them.
pub const SECTIONS: [&str; 9] = [
    "server",
    "admin",
    "source",
    "cache",
    "readiness",
    "log",
    "trust",
    "node",
    "report",
];

/// A duration written as text with its unit (`"250ms"`, `"5s"`, `"1m"`);
/// a bare number is refused with the text to write instead.
pub(crate) fn duration<'de, D: Deserializer<'de>>(de: D) -> Result<Duration, D::Error> {
    struct Visitor;
    impl serde::de::Visitor<'_> for Visitor {
        type Value = Duration;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a duration like \"250ms\", \"5s\" or \"1m\"")
        }

        fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Duration, E> {
            humantime::parse_duration(text).map_err(|e| {
                E::custom(format!(
                    "{text:?} is not a duration like \"250ms\", \"5s\" or \"1m\": {e}"
                ))
            })
        }

        fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<Duration, E> {
            Err(E::custom(format!(
                "{n} is a number without a unit: write a duration as text, \"{n}s\" for {n} seconds"
            )))
        }

        fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Duration, E> {
            self.visit_i64(i64::try_from(n).unwrap_or(i64::MAX))
        }

        fn visit_f64<E: serde::de::Error>(self, n: f64) -> Result<Duration, E> {
            Err(E::custom(format!(
                "{n} is a number without a unit: write a duration as text, \"{}ms\" for {n} seconds",
                (n * 1000.0).round()
            )))
        }
    }
    de.deserialize_any(Visitor)
}

fn duration_text<S: Serializer>(d: &Duration, ser: S) -> Result<S::Ok, S::Error> {
    ser.serialize_str(&humantime::format_duration(*d).to_string())
}

fn header_text<S: Serializer>(h: &HeaderName, ser: S) -> Result<S::Ok, S::Error> {
    ser.serialize_str(h.as_str())
}

fn header_name<'de, D: Deserializer<'de>>(de: D) -> Result<HeaderName, D::Error> {
    let text = String::deserialize(de)?;
    HeaderName::from_bytes(text.as_bytes())
        .map_err(|_| serde::de::Error::custom(format!("{text:?} is not a valid HTTP header name")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigErrors> {
        Config::from_toml(text, Path::new("test.toml"))
    }

    /// `tests/fixtures/tls/<name>`: PEM of the right kinds.
    fn pem(name: &str) -> String {
        format!("{}/tests/fixtures/tls/{name}", env!("CARGO_MANIFEST_DIR"))
    }

    #[test]
    fn empty_file_gives_the_documented_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c.server.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.admin.listen.to_string(), "127.0.0.1:9901");
        assert_eq!(
            c.source.kind,
            Source::File(FileConfig {
                path: PathBuf::from("config/snapshot.json")
            })
        );
        assert_eq!(c.source.poll_interval, Duration::from_secs(5));
        assert_eq!(c.source.max_removed_fraction, 0.5);
        assert_eq!(c.source.max_document_bytes, 4 << 20);
        assert_eq!(c.readiness.max_staleness, Duration::ZERO);
        assert_eq!(c.server.project_header, "x-project-id");
        assert_eq!(c.trust.max_clock_skew, Duration::from_secs(300));
    }

    #[test]
    fn each_kind_reads_its_own_settings() {
        let c = parse("[source]\nkind = \"http\"\nurl = \"http://cp:7000\"\nmode = \"poll\"\n")
            .unwrap();
        let Source::Http(h) = &c.source.kind else {
            panic!("{:?}", c.source.kind)
        };
        assert_eq!((h.url.as_str(), h.mode), ("http://cp:7000", SyncMode::Poll));
        assert_eq!(h.timing.long_poll_wait, Duration::from_secs(30));
        let c = parse(&format!(
            "[source]\nkind = \"redis\"\nurl = \"rediss://r:6380/0\"\nkey_prefix = \"gw\"\n\
             tls_ca_file = \"{}\"\nbackoff_max = \"1m\"\n",
            pem("ca.pem")
        ))
        .unwrap();
        let Source::Redis(r) = &c.source.kind else {
            panic!("{:?}", c.source.kind)
        };
        assert_eq!(r.key_prefix, "gw");
        assert_eq!(r.tls.ca_file, Some(PathBuf::from(pem("ca.pem"))));
        assert_eq!(r.tls.cert_file, None);
        assert_eq!(r.timing.backoff_max, Duration::from_secs(60));
    }

    #[test]
    fn the_shipped_keys_of_other_kinds_at_their_defaults_are_fine_but_not_other_values() {
        // The shipped file lists every key, with kind = "file".
        parse("[source]\nkind = \"file\"\nurl = \"\"\nmode = \"watch\"\nkey_prefix = \"env-sidecar\"\n")
            .unwrap();
        let err =
            parse("[source]\nkind = \"file\"\nurl = \"http://cp\"\nmode = \"poll\"\n").unwrap_err();
        let keys: Vec<&str> = err.0.iter().map(|e| e.key()).collect();
        assert_eq!(keys, ["source.url", "source.mode"], "{err}");
        let err =
            parse("[source]\nkind = \"http\"\nurl = \"http://cp\"\ntls_ca_file = \"ca.pem\"\n")
                .unwrap_err()
                .to_string();
        assert!(
            err.contains("source.tls_ca_file") && err.contains("\"redis\""),
            "{err}"
        );
    }

    #[test]
    fn every_problem_of_a_file_is_reported_together_each_naming_its_key() {
        let err = parse(
            "[source]\nkind = \"redis\"\nmax_removed_fraction = 2.0\npoll_interval = \"0s\"\n\
             [server]\nlisten = \"nowhere\"\n\
             [log]\nlevel = \"loud\"\n\
             [node]\nid = \"has space\"\n\
             [report]\nmin_interval = \"1m\"\n\
             [surce]\n",
        )
        .unwrap_err();
        let mut keys: Vec<&str> = err.0.iter().map(|e| e.key()).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "log.level",
                "node.id",
                "report.min_interval",
                "server.listen",
                "source.max_removed_fraction",
                "source.poll_interval",
                "source.url",
                "surce",
            ],
            "{err}"
        );
        assert_eq!(err.to_string().lines().count(), 8, "{err}");
    }

    #[test]
    fn unknown_key_is_refused_with_its_name() {
        let err = parse("[server]\nlisten = \"127.0.0.1:1\"\nlisten_port = 3\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("listen_port"), "{err}");
        let err = parse("[surce]\nkind = \"file\"\n").unwrap_err().to_string();
        assert!(err.contains("surce"), "{err}");
        let err = parse("[source]\nurll = \"x\"\n").unwrap_err().to_string();
        assert!(err.contains("urll"), "{err}");
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
            ("[source]\nkind = \"redis\"\nurl = \"http://x\"\n", "source.url"),
            (
                "[source]\nkind = \"redis\"\nurl = \"redis://u:pw@h\"\n",
                "source.url",
            ),
            (
                "[source]\nkind = \"redis\"\nurl = \"redis://h\"\nkey_prefix = \"{x}\"\n",
                "source.key_prefix",
            ),
            (
                "[source]\nmax_document_bytes = 10\n",
                "source.max_document_bytes",
            ),
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
        let c = parse("[source]\nkind = \"http\"\nurl = \"http://x\"\npoll_interval = \"250ms\"\nbackoff_max = \"1m\"\n").unwrap();
        assert_eq!(c.source.poll_interval, Duration::from_millis(250));
        assert_eq!(
            c.source.kind.timing().unwrap().backoff_max,
            Duration::from_secs(60)
        );
    }

    #[test]
    fn the_effective_config_reads_back_the_same_for_every_kind() {
        for text in [
            "[source]\npath = \"s.json\"\npoll_interval = \"250ms\"\n".to_owned(),
            "[source]\nkind = \"http\"\nurl = \"https://cp\"\nmode = \"poll\"\ntoken_env = \"T\"\n"
                .to_owned(),
            format!(
                "[source]\nkind = \"redis\"\nurl = \"redis://r/1\"\ntls_ca_file = \"{}\"\n\
                 tls_cert_file = \"{}\"\ntls_key_file = \"{}\"\nlong_poll_wait = \"2s\"\n\
                 read_from = \"primary\"\n",
                pem("ca.pem"),
                pem("client.pem"),
                pem("client.key")
            ),
        ] {
            let c = parse(&text).unwrap();
            let again = parse(&c.to_toml()).unwrap();
            assert_eq!(again.source, c.source, "{}", c.to_toml());
        }
    }

    /// The shipped file says it shows every default: it must, section by
    /// section, and change nothing.
    #[test]
    fn the_shipped_config_file_is_every_default_in_every_section() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(DEFAULT_CONFIG_PATH);
        let shipped = Config::load(&path, true).unwrap();
        assert_eq!(shipped.to_toml(), parse("").unwrap().to_toml());
        let text = std::fs::read_to_string(&path).unwrap();
        for section in SECTIONS {
            assert!(text.contains(&format!("\n[{section}]\n")), "no [{section}]");
        }
    }

    #[test]
    fn every_section_is_known_and_an_unknown_one_lists_them() {
        for section in SECTIONS {
            parse(&format!("[{section}]\n")).unwrap();
        }
        let err = parse("[surce]\n").unwrap_err().to_string();
        for section in SECTIONS {
            assert!(err.contains(section), "{section} missing from {err}");
        }
    }

    #[test]
    fn a_duration_without_a_unit_says_what_to_write() {
        let err = parse("[report]\ninterval = 10\n").unwrap_err().to_string();
        assert!(err.contains("report.interval"), "{err}");
        assert!(err.contains("\"10s\""), "{err}");
        let err = parse("[source]\nrequest_timeout = 0.25\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"250ms\""), "{err}");
    }
}
