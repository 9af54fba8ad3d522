//! `[report]`: how often a sidecar publishes what it serves, and where.
//!
//! Read through `RawReport` (every key optional, an empty string unset,
//! as the shipped file spells it) and turned once into [`ReportConfig`]:
//! a Redis of the reports' own (`report.redis_url` and the keys beside
//! it) becomes a [`RedisConfig`] checked by the same rules as the Redis
//! source's, with its defaults (password variable, key prefix, timing)
//! taken from `[source]`. Nothing after parsing asks whether a text is
//! empty; [`ReportConfig::to`] says where reports go.

use std::path::PathBuf;
use std::time::Duration;

use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};

use super::source::{check_redis_url, some_duration};
use super::{
    invalid, ConfigError, HttpConfig, RedisConfig, Source, SourceConfig, TlsFiles,
    DEFAULT_TOKEN_ENV,
};

/// The served report each sidecar publishes for fleet commands.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportConfig {
    /// Publish it (to the Redis source, or to the control plane over
    /// HTTP; the file source only with a Redis of its own).
    pub enabled: bool,
    /// Heartbeat: the report is written at least this often; it expires
    /// after three of them.
    pub interval: Duration,
    /// At most one write this often: a burst of changes is one write.
    pub min_interval: Duration,
    /// `report.redis_url` (with `report.token_env`, defaulting to the
    /// source's, and `report.tls_*`): reports go to this Redis instead of
    /// beside the source (a primary, when data is read from a replica).
    pub redis: Option<RedisConfig>,
}

impl Default for ReportConfig {
    fn default() -> Self {
        ReportConfig {
            enabled: true,
            interval: Duration::from_secs(10),
            min_interval: Duration::from_secs(1),
            redis: None,
        }
    }
}

/// Where a sidecar's reports go (and where fleet commands read them).
#[derive(Debug, Clone, PartialEq)]
pub enum ReportsTo {
    Redis(RedisConfig),
    ControlPlane(HttpConfig),
}

impl ReportConfig {
    /// Reports go to the reports' own Redis when there is one, else
    /// beside the source: the Redis source to its Redis, the HTTP source
    /// to its control plane, the file source nowhere. Whether they are
    /// sent at all is `enabled`.
    pub fn to(&self, source: &Source) -> Option<ReportsTo> {
        match (&self.redis, source) {
            (Some(redis), _) => Some(ReportsTo::Redis(redis.clone())),
            (None, Source::Redis(source)) => Some(ReportsTo::Redis(source.clone())),
            (None, Source::Http(h)) => Some(ReportsTo::ControlPlane(h.clone())),
            (None, Source::File(_)) => None,
        }
    }

    /// `interval` and `min_interval`: positive, and in order.
    pub(super) fn problems(&self, errors: &mut Vec<ConfigError>) {
        if self.interval.is_zero() || self.min_interval.is_zero() {
            errors.push(invalid(
                "report.interval",
                "report.interval and report.min_interval must be greater than zero",
            ));
        }
        if self.min_interval > self.interval {
            errors.push(invalid(
                "report.min_interval",
                "must not exceed report.interval",
            ));
        }
    }
}

/// `[report]` as the file spells it: every key optional; an empty
/// `redis_url`, `token_env` or `tls_*` is unset.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawReport {
    enabled: Option<bool>,
    #[serde(default, deserialize_with = "some_duration")]
    interval: Option<Duration>,
    #[serde(default, deserialize_with = "some_duration")]
    min_interval: Option<Duration>,
    redis_url: Option<String>,
    token_env: Option<String>,
    tls_ca_file: Option<PathBuf>,
    tls_cert_file: Option<PathBuf>,
    tls_key_file: Option<PathBuf>,
}

impl RawReport {
    /// The typed `[report]` for this `[source]`, with every problem of
    /// its Redis keys, each naming its key. A password variable or TLS
    /// file without `redis_url` would be read by nothing: an error.
    pub(super) fn into_config(
        self,
        source: &SourceConfig,
        errors: &mut Vec<ConfigError>,
    ) -> ReportConfig {
        let defaults = ReportConfig::default();
        let set = |t: Option<String>| t.filter(|t| !t.is_empty());
        let tls = TlsFiles::of(self.tls_ca_file, self.tls_cert_file, self.tls_key_file);
        let token_env = set(self.token_env);
        let redis = match set(self.redis_url) {
            Some(url) => {
                check_redis_url(&url, "report.redis_url", "report.token_env", errors);
                Some(beside(source, url, token_env, tls))
            }
            None => {
                for (key, used) in [
                    ("report.token_env", token_env.is_some()),
                    ("report.tls_ca_file", tls.ca_file.is_some()),
                    ("report.tls_cert_file", tls.cert_file.is_some()),
                    ("report.tls_key_file", tls.key_file.is_some()),
                ] {
                    if used {
                        errors.push(invalid(key, "is read only with report.redis_url"));
                    }
                }
                None
            }
        };
        ReportConfig {
            enabled: self.enabled.unwrap_or(defaults.enabled),
            interval: self.interval.unwrap_or(defaults.interval),
            min_interval: self.min_interval.unwrap_or(defaults.min_interval),
            redis,
        }
    }
}

/// The reports' own Redis at `url`: the Redis source's key prefix and
/// timing (reports and data share them), the password variable given or
/// the source's, the TLS files given (never the source's: another
/// server), read from the node the URL names.
fn beside(
    source: &SourceConfig,
    url: String,
    token_env: Option<String>,
    tls: TlsFiles,
) -> RedisConfig {
    let source_token = match &source.kind {
        Source::File(_) => DEFAULT_TOKEN_ENV,
        Source::Http(h) => &h.token_env,
        Source::Redis(r) => &r.token_env,
    };
    let base = match &source.kind {
        Source::Redis(r) => r.clone(),
        _ => RedisConfig::new(String::new()),
    };
    RedisConfig {
        url,
        token_env: token_env.unwrap_or_else(|| source_token.to_owned()),
        tls,
        read_from: None,
        ..base
    }
}

/// The effective `[report]`, flat as the file spells it (what
/// `check-config` prints): the reports' own Redis as `redis_url`, its
/// resolved `token_env` and its TLS files.
impl Serialize for ReportConfig {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        let d = |d: Duration| humantime::format_duration(d).to_string();
        let mut map = ser.serialize_map(None)?;
        map.serialize_entry("enabled", &self.enabled)?;
        map.serialize_entry("interval", &d(self.interval))?;
        map.serialize_entry("min_interval", &d(self.min_interval))?;
        if let Some(redis) = &self.redis {
            map.serialize_entry("redis_url", &redis.url)?;
            map.serialize_entry("token_env", &redis.token_env)?;
            redis.tls.serialize_into(&mut map)?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::{Config, ConfigErrors};

    fn parse(text: &str) -> Result<Config, ConfigErrors> {
        Config::from_toml(text, Path::new("test.toml"))
    }

    fn redis_of(config: &Config) -> RedisConfig {
        match config.report.to(&config.source.kind) {
            Some(ReportsTo::Redis(r)) => r,
            other => panic!("reports to {other:?}"),
        }
    }

    #[test]
    fn empty_keys_are_unset_and_reports_go_beside_the_source() {
        let text = "[source]\nkind = \"http\"\nurl = \"http://cp\"\n\
                    [report]\nredis_url = \"\"\ntoken_env = \"\"\ntls_ca_file = \"\"\n";
        let config = parse(text).unwrap();
        assert_eq!(config.report.redis, None);
        assert!(matches!(
            config.report.to(&config.source.kind),
            Some(ReportsTo::ControlPlane(h)) if h.url == "http://cp"
        ));
        let file = parse("").unwrap();
        assert_eq!(file.report.to(&file.source.kind), None);
    }

    #[test]
    fn a_redis_of_their_own_takes_the_sources_prefix_timing_and_password_variable() {
        let text = "[source]\nkind = \"redis\"\nurl = \"rediss://replica:6380/0\"\n\
                    key_prefix = \"gw\"\ntoken_env = \"DATA_PW\"\nbackoff_max = \"7s\"\n\
                    read_from = \"replica\"\ntls_ca_file = \"/data-ca.pem\"\n\
                    [report]\nredis_url = \"redis://primary:6379/0\"\n";
        // The CA file is not there: only the key naming it fails.
        let errors = parse(text).unwrap_err().to_string();
        assert!(errors.contains("source.tls_ca_file"), "{errors}");
        assert!(!errors.contains("report."), "{errors}");
        let text = text.replace("tls_ca_file = \"/data-ca.pem\"\n", "");
        let config = parse(&text).unwrap();
        let r = redis_of(&config);
        assert_eq!(r.url, "redis://primary:6379/0");
        assert_eq!(r.key_prefix, "gw");
        assert_eq!(r.token_env, "DATA_PW");
        assert_eq!(r.timing.backoff_max, Duration::from_secs(7));
        assert_eq!(r.read_from, None);
        assert_eq!(r.tls, TlsFiles::default());
        // Its own password variable wins; the file source has the default.
        let own = "[report]\nredis_url = \"redis://r:6379/0\"\ntoken_env = \"REPORT_PW\"\n";
        assert_eq!(redis_of(&parse(own).unwrap()).token_env, "REPORT_PW");
        let file = "[report]\nredis_url = \"redis://r:6379/0\"\n";
        assert_eq!(redis_of(&parse(file).unwrap()).token_env, DEFAULT_TOKEN_ENV);
    }

    #[test]
    fn keys_read_only_with_redis_url_are_errors_without_it() {
        let text = "[report]\ntoken_env = \"PW\"\ntls_cert_file = \"/c.pem\"\n";
        let errors = parse(text).unwrap_err().to_string();
        for key in ["report.token_env", "report.tls_cert_file"] {
            assert!(
                errors.contains(&format!("{key}: is read only with report.redis_url")),
                "{errors}"
            );
        }
        let errors = parse("[report]\nredis_url = \"redis://u:pw@h:6379/0\"\n")
            .unwrap_err()
            .to_string();
        assert!(errors.contains("report.redis_url"), "{errors}");
    }

    #[test]
    fn the_printed_report_reads_back_the_same() {
        for text in [
            "",
            "[report]\nenabled = false\ninterval = \"30s\"\nmin_interval = \"2s\"\n",
            "[source]\nkind = \"redis\"\nurl = \"redis://d:6379/0\"\ntoken_env = \"D\"\n\
             [report]\nredis_url = \"redis://r:6379/0\"\n",
        ] {
            let config = parse(text).unwrap();
            let again = parse(&config.to_toml()).unwrap();
            assert_eq!(again.report, config.report, "{}", config.to_toml());
        }
    }
}
