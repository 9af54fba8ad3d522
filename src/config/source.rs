//! `[source]`: what the sidecar follows, one typed config per kind.
//!
//! The file keeps its documented flat form (`kind = "redis"`, `url =
//! …`), read through `RawSource` and turned into [`SourceConfig`]: the
//! kind is an enum carrying exactly its own settings, each checked by its
//! own rules, optional values are `Option`s. A key that only another kind
//! reads may be present with its default or empty value (the shipped
//! config lists every key); with any other value it is an error naming
//! the key, rather than silently ignored.

use std::path::PathBuf;
use std::time::Duration;

use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};

use super::{duration, has_password, invalid, ConfigError};

/// `[source]`.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceConfig {
    pub kind: Source,
    /// How often local files are looked at (the snapshot file, the
    /// trusted keys), and the HTTP poll mode's period.
    pub poll_interval: Duration,
    /// Blast-radius guard: refuse a fetch removing more than this
    /// fraction of the loaded projects (at least 10 loaded).
    pub max_removed_fraction: f64,
    /// The largest one document (or signed envelope) may be, in bytes;
    /// a larger one is refused unread (`too_large`).
    pub max_document_bytes: usize,
}

/// Which source, with its own settings.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    File(FileConfig),
    Http(HttpConfig),
    Redis(RedisConfig),
}

/// The kind of a source, without its settings (for status and labels).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
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

/// `kind = "file"`: a snapshot file, re-read when it changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileConfig {
    pub path: PathBuf,
}

/// How an HTTP source syncs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
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

/// Request timing of a networked source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub request_timeout: Duration,
    pub long_poll_wait: Duration,
    pub backoff_max: Duration,
}

impl Default for Timing {
    fn default() -> Timing {
        Timing {
            request_timeout: Duration::from_secs(5),
            long_poll_wait: Duration::from_secs(30),
            backoff_max: Duration::from_secs(30),
        }
    }
}

/// `kind = "http"`: a control plane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpConfig {
    /// The control plane's base URL (`http://` or `https://`).
    pub url: String,
    pub mode: SyncMode,
    /// The variable holding the control-plane token.
    pub token_env: String,
    pub timing: Timing,
}

impl HttpConfig {
    /// Following `url` in watch mode, with the default timing.
    pub fn new(url: impl Into<String>) -> HttpConfig {
        HttpConfig {
            url: url.into(),
            mode: SyncMode::Watch,
            token_env: DEFAULT_TOKEN_ENV.into(),
            timing: Timing::default(),
        }
    }
}

/// Files for TLS to Redis: a CA bundle to trust instead of the system's,
/// and a client certificate with its key. Each is optional.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

impl TlsFiles {
    /// The files set, as `tls_ca_file`, `tls_cert_file` and `tls_key_file`
    /// entries of `map` (the keys of `[source]` and `[report]` alike).
    pub(super) fn serialize_into<M: SerializeMap>(&self, map: &mut M) -> Result<(), M::Error> {
        for (key, file) in [
            ("tls_ca_file", &self.ca_file),
            ("tls_cert_file", &self.cert_file),
            ("tls_key_file", &self.key_file),
        ] {
            if let Some(file) = file {
                map.serialize_entry(key, &file.display().to_string())?;
            }
        }
        Ok(())
    }

    /// The files of three optional keys; an empty path is no file.
    pub(super) fn of(ca: Option<PathBuf>, cert: Option<PathBuf>, key: Option<PathBuf>) -> TlsFiles {
        let file = |p: Option<PathBuf>| p.filter(|p| !p.as_os_str().is_empty());
        TlsFiles {
            ca_file: file(ca),
            cert_file: file(cert),
            key_file: file(key),
        }
    }
}

/// Which node a Redis follower reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ReadFrom {
    /// A replica of the data's primary (in a cluster, of the slot's
    /// owner), the primary when none is up.
    Replica,
    /// Always the primary.
    Primary,
}

/// `kind = "redis"`: a hash and a stream in Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// `redis://host:port/db`, `rediss://…`, `redis+unix:///path`, or
    /// `redis-sentinel://h:p[,h:p…][/db]#MASTER` (no password in it).
    pub url: String,
    /// Keys `{key_prefix}:projects` and `{key_prefix}:changes`.
    pub key_prefix: String,
    /// The variable holding the password.
    pub token_env: String,
    pub tls: TlsFiles,
    /// `None`: as the URL names it (a sentinel's replica; the node given).
    pub read_from: Option<ReadFrom>,
    pub timing: Timing,
}

impl RedisConfig {
    /// Following `url` with the default prefix and timing.
    pub fn new(url: impl Into<String>) -> RedisConfig {
        RedisConfig {
            url: url.into(),
            key_prefix: DEFAULT_KEY_PREFIX.into(),
            token_env: DEFAULT_TOKEN_ENV.into(),
            tls: TlsFiles::default(),
            read_from: None,
            timing: Timing::default(),
        }
    }
}

pub const DEFAULT_TOKEN_ENV: &str = "ENV_SIDECAR_CONTROL_PLANE_TOKEN";
pub const DEFAULT_KEY_PREFIX: &str = "env-sidecar";
pub const DEFAULT_SNAPSHOT_PATH: &str = "config/snapshot.json";
const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(5);
/// 4 MiB: `model::wire::DEFAULT_MAX_DOCUMENT_BYTES` (config imports
/// nothing of the crate).
const DEFAULT_MAX_DOCUMENT_BYTES: usize = 4 << 20;

impl Default for SourceConfig {
    fn default() -> Self {
        SourceConfig {
            kind: Source::File(FileConfig {
                path: PathBuf::from(DEFAULT_SNAPSHOT_PATH),
            }),
            poll_interval: DEFAULT_POLL_INTERVAL,
            max_removed_fraction: 0.5,
            max_document_bytes: DEFAULT_MAX_DOCUMENT_BYTES,
        }
    }
}

impl Source {
    pub fn kind(&self) -> SourceKind {
        match self {
            Source::File(_) => SourceKind::File,
            Source::Http(_) => SourceKind::Http,
            Source::Redis(_) => SourceKind::Redis,
        }
    }

    /// The request timing, for a networked source.
    pub fn timing(&self) -> Option<&Timing> {
        match self {
            Source::File(_) => None,
            Source::Http(h) => Some(&h.timing),
            Source::Redis(r) => Some(&r.timing),
        }
    }

    /// How long a request to the source may take (a forced refresh waits
    /// that long); the file source's read is local.
    pub fn request_timeout(&self) -> Duration {
        self.timing()
            .map_or(Timing::default().request_timeout, |t| t.request_timeout)
    }
}

/// `[source]` as the file spells it: every key of every kind, all
/// optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSource {
    kind: Option<SourceKind>,
    path: Option<PathBuf>,
    url: Option<String>,
    key_prefix: Option<String>,
    tls_ca_file: Option<PathBuf>,
    tls_cert_file: Option<PathBuf>,
    tls_key_file: Option<PathBuf>,
    read_from: Option<ReadFrom>,
    mode: Option<SyncMode>,
    token_env: Option<String>,
    #[serde(default, deserialize_with = "some_duration")]
    poll_interval: Option<Duration>,
    #[serde(default, deserialize_with = "some_duration")]
    request_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "some_duration")]
    long_poll_wait: Option<Duration>,
    #[serde(default, deserialize_with = "some_duration")]
    backoff_max: Option<Duration>,
    max_removed_fraction: Option<f64>,
    max_document_bytes: Option<usize>,
}

pub(super) fn some_duration<'de, D: serde::Deserializer<'de>>(
    de: D,
) -> Result<Option<Duration>, D::Error> {
    duration(de).map(Some)
}

impl RawSource {
    /// The typed `[source]`, with every problem of it, each naming its key.
    pub(super) fn into_config(self, errors: &mut Vec<ConfigError>) -> SourceConfig {
        let defaults = SourceConfig::default();
        let kind = self.kind.unwrap_or(SourceKind::File);
        let max_removed_fraction = self
            .max_removed_fraction
            .unwrap_or(defaults.max_removed_fraction);
        if !(0.0..=1.0).contains(&max_removed_fraction) {
            errors.push(invalid(
                "source.max_removed_fraction",
                "must be between 0 and 1",
            ));
        }
        let max_document_bytes = self
            .max_document_bytes
            .unwrap_or(defaults.max_document_bytes);
        if max_document_bytes < 1024 {
            errors.push(invalid(
                "source.max_document_bytes",
                "must be at least 1024",
            ));
        }
        let positive = |key: &'static str, d: Option<Duration>, errors: &mut Vec<ConfigError>| {
            if d.is_some_and(|d| d.is_zero()) {
                errors.push(invalid(key, "must be greater than zero"));
            }
        };
        positive("source.poll_interval", self.poll_interval, errors);
        positive("source.request_timeout", self.request_timeout, errors);
        positive("source.long_poll_wait", self.long_poll_wait, errors);
        positive("source.backoff_max", self.backoff_max, errors);
        let timing = Timing {
            request_timeout: self
                .request_timeout
                .unwrap_or(Timing::default().request_timeout),
            long_poll_wait: self
                .long_poll_wait
                .unwrap_or(Timing::default().long_poll_wait),
            backoff_max: self.backoff_max.unwrap_or(Timing::default().backoff_max),
        };
        let poll_interval = self.poll_interval.unwrap_or(DEFAULT_POLL_INTERVAL);
        let token_env = self
            .token_env
            .clone()
            .unwrap_or_else(|| DEFAULT_TOKEN_ENV.into());
        let url = self.url.clone().filter(|u| !u.is_empty());
        self.foreign(kind, errors);
        let source = match kind {
            SourceKind::File => Source::File(self.file_config(errors)),
            SourceKind::Http => Source::Http(self.http_config(url, token_env, timing, errors)),
            SourceKind::Redis => Source::Redis(self.redis_config(url, token_env, timing, errors)),
        };
        SourceConfig {
            kind: source,
            poll_interval,
            max_removed_fraction,
            max_document_bytes,
        }
    }

    fn file_config(&self, errors: &mut Vec<ConfigError>) -> FileConfig {
        let path = self
            .path
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_SNAPSHOT_PATH));
        if path.as_os_str().is_empty() {
            errors.push(invalid(
                "source.path",
                "is required when source.kind = \"file\"",
            ));
        }
        FileConfig { path }
    }

    fn http_config(
        &self,
        url: Option<String>,
        token_env: String,
        timing: Timing,
        errors: &mut Vec<ConfigError>,
    ) -> HttpConfig {
        match &url {
            None => errors.push(invalid(
                "source.url",
                "is required when source.kind = \"http\"",
            )),
            Some(u) if !(u.starts_with("http://") || u.starts_with("https://")) => {
                errors.push(invalid("source.url", "must start with http:// or https://"))
            }
            Some(_) => {}
        }
        HttpConfig {
            url: url.unwrap_or_default(),
            mode: self.mode.unwrap_or(SyncMode::Watch),
            token_env,
            timing,
        }
    }

    fn redis_config(
        &self,
        url: Option<String>,
        token_env: String,
        timing: Timing,
        errors: &mut Vec<ConfigError>,
    ) -> RedisConfig {
        match &url {
            None => errors.push(invalid(
                "source.url",
                "is required when source.kind = \"redis\"",
            )),
            Some(u) => check_redis_url(u, "source.url", "source.token_env", errors),
        }
        let key_prefix = self
            .key_prefix
            .clone()
            .unwrap_or_else(|| DEFAULT_KEY_PREFIX.into());
        if key_prefix.is_empty() || key_prefix.contains(['{', '}']) {
            errors.push(invalid(
                "source.key_prefix",
                "must be non-empty, without braces",
            ));
        }
        RedisConfig {
            url: url.unwrap_or_default(),
            key_prefix,
            token_env,
            tls: TlsFiles::of(
                self.tls_ca_file.clone(),
                self.tls_cert_file.clone(),
                self.tls_key_file.clone(),
            ),
            read_from: self.read_from,
            timing,
        }
    }

    /// Keys only another kind reads, set to something other than their
    /// default or empty value: errors naming them.
    fn foreign(&self, kind: SourceKind, errors: &mut Vec<ConfigError>) {
        let set_path = |p: &Option<PathBuf>| p.as_ref().is_some_and(|p| !p.as_os_str().is_empty());
        let set_text = |t: &Option<String>, default: &str| {
            t.as_ref().is_some_and(|t| !t.is_empty() && t != default)
        };
        let used_by: [(&'static str, bool, &'static [SourceKind]); 8] = [
            (
                "source.read_from",
                self.read_from.is_some(),
                &[SourceKind::Redis],
            ),
            (
                "source.path",
                self.path.as_ref().is_some_and(|p| {
                    p != &PathBuf::from(DEFAULT_SNAPSHOT_PATH) && !p.as_os_str().is_empty()
                }),
                &[SourceKind::File],
            ),
            (
                "source.url",
                set_text(&self.url, ""),
                &[SourceKind::Http, SourceKind::Redis],
            ),
            (
                "source.key_prefix",
                set_text(&self.key_prefix, DEFAULT_KEY_PREFIX),
                &[SourceKind::Redis],
            ),
            (
                "source.mode",
                self.mode.is_some_and(|m| m != SyncMode::Watch),
                &[SourceKind::Http],
            ),
            (
                "source.tls_ca_file",
                set_path(&self.tls_ca_file),
                &[SourceKind::Redis],
            ),
            (
                "source.tls_cert_file",
                set_path(&self.tls_cert_file),
                &[SourceKind::Redis],
            ),
            (
                "source.tls_key_file",
                set_path(&self.tls_key_file),
                &[SourceKind::Redis],
            ),
        ];
        for (key, set, kinds) in used_by {
            if set && !kinds.contains(&kind) {
                let names: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
                errors.push(ConfigError::Invalid {
                    key,
                    message: format!(
                        "is read only when source.kind = \"{}\" (this one is \"{}\")",
                        names.join("\" or \""),
                        kind.as_str()
                    ),
                });
            }
        }
    }
}

/// The effective `[source]`, flat as the file spells it: `kind` first,
/// then the keys this kind reads (what `check-config` prints).
impl Serialize for SourceConfig {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        let d = |d: Duration| humantime::format_duration(d).to_string();
        let mut map = ser.serialize_map(None)?;
        map.serialize_entry("kind", &self.kind.kind())?;
        match &self.kind {
            Source::File(f) => {
                map.serialize_entry("path", &f.path.display().to_string())?;
            }
            Source::Http(h) => {
                map.serialize_entry("url", &h.url)?;
                map.serialize_entry("mode", &h.mode)?;
                map.serialize_entry("token_env", &h.token_env)?;
            }
            Source::Redis(r) => {
                map.serialize_entry("url", &r.url)?;
                map.serialize_entry("key_prefix", &r.key_prefix)?;
                map.serialize_entry("token_env", &r.token_env)?;
                if let Some(read_from) = r.read_from {
                    map.serialize_entry("read_from", &read_from)?;
                }
                r.tls.serialize_into(&mut map)?;
            }
        }
        map.serialize_entry("poll_interval", &d(self.poll_interval))?;
        if let Some(t) = self.kind.timing() {
            map.serialize_entry("request_timeout", &d(t.request_timeout))?;
            map.serialize_entry("long_poll_wait", &d(t.long_poll_wait))?;
            map.serialize_entry("backoff_max", &d(t.backoff_max))?;
        }
        map.serialize_entry("max_removed_fraction", &self.max_removed_fraction)?;
        map.serialize_entry("max_document_bytes", &(self.max_document_bytes as u64))?;
        map.end()
    }
}

/// True for the URL forms the Redis source reads.
/// The rules of a Redis URL in `key` (whose password lives in the
/// variable `token_key` names), for `[source]` and `[report]` alike:
/// one of the schemes the connector reads, certificate checks on, no
/// password in the URL. Each rule broken is an error.
pub(super) fn check_redis_url(
    url: &str,
    key: &'static str,
    token_key: &str,
    errors: &mut Vec<ConfigError>,
) {
    if !is_redis_url(url) {
        errors.push(invalid(
            key,
            "must start with redis://, rediss://, redis+unix://, unix://, redis-sentinel:// or rediss-sentinel://",
        ));
    }
    if url.contains("#insecure") {
        errors.push(invalid(
            key,
            "#insecure: this build cannot turn certificate checks off",
        ));
    }
    if has_password(url) {
        errors.push(invalid(
            key,
            &format!("must not carry a password: name the variable holding it in {token_key}"),
        ));
    }
}

pub fn is_redis_url(url: &str) -> bool {
    [
        "redis://",
        "rediss://",
        "redis+unix://",
        "unix://",
        "redis-sentinel://",
        "rediss-sentinel://",
    ]
    .iter()
    .any(|scheme| url.starts_with(scheme))
}
