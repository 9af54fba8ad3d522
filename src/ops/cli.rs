//! The operator commands that need no sidecar config, as `clap`
//! subcommands: `validate`, `publish`, `keygen`, `sign`, `fleet`. `main` parses
//! them beside its own (`health`, `check-config`) and hands them to
//! [`Tool::run`], which returns the exit status.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::input::Input;
use super::retry::RetryFor;
use super::target::RedisTarget;
use super::{fleet, keygen, publish, sign, validate};
use crate::config::secret::Env;
use crate::config::{TlsFiles, DEFAULT_KEY_PREFIX, DEFAULT_TOKEN_ENV};
use crate::model::clock::SystemClock;
use crate::model::keys::{self, SigningKey};
use crate::model::trust::Trust;

#[derive(Debug, clap::Subcommand)]
pub enum Tool {
    /// Check snapshot bodies, project documents or signed envelopes (`-`:
    /// stdin) with every rule the sidecar applies; one line per project;
    /// exit 0 all pass, 1 any rejected, 2 a file unreadable or not JSON of
    /// any of those shapes
    Validate {
        /// The currently published snapshot: revision order and slug
        /// immutability are checked against it
        #[arg(long, value_name = "FILE")]
        previous: Option<PathBuf>,
        /// Require every document to be signed by one of these public keys
        /// (repeat for several; without it, signatures are not checked)
        #[arg(long = "trust-key", value_name = "FILE")]
        trust_keys: Vec<PathBuf>,
        /// Files to check (`-` reads stdin)
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
    /// Validate a snapshot file against what Redis holds and, only if every
    /// project passes, write the changes to Redis for a fleet that follows
    /// it; exit 0, 1 refused (nothing written), 2 unreadable or unreachable,
    /// 3 (with --wait) written but not served everywhere within --timeout
    Publish(PublishCmd),
    /// Check a control plane of your own against the sync protocol, as a
    /// sidecar reads it, or a Redis keyspace against the writer rules
    /// (read-only); one line per rule; exit 0 all held, 1 a rule broken, 2
    /// unreachable
    Conformance(ConformanceCmd),
    /// Which revision every gateway node serves, from the reports the
    /// sidecars publish
    Fleet {
        #[command(subcommand)]
        command: FleetCommand,
    },
    /// Make an Ed25519 key pair for signing documents (the private key
    /// file with mode 0600; neither file may exist)
    Keygen {
        #[arg(long, value_name = "FILE")]
        private: PathBuf,
        #[arg(long, value_name = "FILE")]
        public: PathBuf,
        /// Name the key (default: derived from the key, `ed25519:<hex>`)
        #[arg(long, value_name = "NAME")]
        key_id: Option<String>,
    },
    /// Sign a snapshot file (or one document) for sidecars that require
    /// signatures; exit 0, 1 a document rejected (nothing written), 2 a
    /// file unreadable or unwritable
    Sign {
        /// The private key
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        /// Set `expires_at` this long after now (e.g. `30d`)
        #[arg(long, value_name = "D", value_parser = humantime::parse_duration)]
        expires_in: Option<Duration>,
        /// Write here (atomically) instead of stdout
        #[arg(long, short, value_name = "FILE")]
        output: Option<PathBuf>,
        /// The snapshot file (`-` reads stdin)
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
}

/// The flags of `publish`.
#[derive(Debug, clap::Args)]
pub struct PublishCmd {
    #[command(flatten)]
    pub redis: RedisArgs,
    /// Refuse to remove more than this fraction of the projects in Redis
    #[arg(long, value_name = "F", default_value_t = 0.5)]
    pub max_removed_fraction: f64,
    /// Remove them anyway
    #[arg(long)]
    pub allow_mass_removal: bool,
    /// Sign every document written with this private key (removals
    /// become signed tombstones); what Redis holds counts only where
    /// its public half (or a --trust-key) verifies it
    #[arg(long, value_name = "FILE")]
    pub sign_key: Option<PathBuf>,
    /// Also believe what these public keys signed in Redis (repeat for
    /// several; a key being rotated out)
    #[arg(long = "trust-key", value_name = "FILE")]
    pub trust_keys: Vec<PathBuf>,
    /// Then wait until the fleet serves what was published (as `fleet
    /// wait`; exit 3 at the timeout)
    #[arg(long)]
    pub wait: bool,
    #[command(flatten)]
    pub waiting: WaitArgs,
    #[command(flatten)]
    pub retry: RetryArgs,
    /// The snapshot file (`-` reads stdin)
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
}

/// The flags of `conformance`.
#[derive(Debug, clap::Args)]
pub struct ConformanceCmd {
    /// The control plane's base URL (what `[source] url` would say)
    #[arg(
        long = "control-plane",
        value_name = "URL",
        required_unless_present = "redis",
        conflicts_with = "redis"
    )]
    pub control_plane: Option<String>,
    /// Any URL the sidecar takes: redis://, rediss://, redis+unix://,
    /// redis-sentinel:// (no password: see --password-env)
    #[arg(long, value_name = "URL")]
    pub redis: Option<String>,
    #[command(flatten)]
    pub login: RedisLogin,
    /// The variable holding the control plane's bearer token
    /// [default: ENV_SIDECAR_CONTROL_PLANE_TOKEN, sent when set]
    #[arg(long, value_name = "VAR")]
    pub token_env: Option<String>,
    /// How long the empty long poll waits
    #[arg(long, value_name = "D", value_parser = humantime::parse_duration, default_value = "1s")]
    pub wait: Duration,
}

#[derive(Debug, clap::Subcommand)]
pub enum FleetCommand {
    /// One line per node (provenance, report age, digest against the
    /// source, projects behind, rejections), then a summary; exit 0, 2
    /// when the store cannot be read
    Status {
        #[command(flatten)]
        from: FleetFrom,
        /// Also the revision each node serves of this project
        #[arg(long, value_name = "P")]
        project: Option<String>,
        /// One JSON document instead of lines
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        lost: LostArgs,
        #[command(flatten)]
        retry: RetryArgs,
    },
    /// Wait until the fleet serves a project at a revision (or later);
    /// exit 0 then, 3 at the timeout (naming the nodes behind and why), 2
    /// when the store cannot be read
    Wait {
        #[command(flatten)]
        from: FleetFrom,
        #[arg(long, value_name = "P")]
        project: String,
        #[arg(long, value_name = "R")]
        revision: u64,
        #[command(flatten)]
        waiting: WaitArgs,
        #[command(flatten)]
        retry: RetryArgs,
    },
}

/// How long to ride out a failover.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct RetryArgs {
    /// Retry what a Redis failover makes fail (connection refused or
    /// reset, READONLY, CLUSTERDOWN, TRYAGAIN, LOADING, no primary known
    /// to the sentinels) for up to this long, saying on stderr what it
    /// waits for; then exit 2
    #[arg(long, value_name = "D", default_value = "30s", value_parser = humantime::parse_duration)]
    pub retry_for: Duration,
}

impl RetryArgs {
    fn retry(self) -> RetryFor {
        RetryFor(self.retry_for)
    }
}

/// Where the node reports are: Redis, a control plane, or wherever a
/// sidecar config sends them (`config/sidecar.toml` when none is named
/// and it is there, as for the sidecar itself).
#[derive(Debug, Clone, clap::Args)]
#[group(skip)]
#[command(group(
    clap::ArgGroup::new("fleet_store")
        .multiple(false)
        .args(["redis", "control_plane", "config"])
))]
pub struct FleetFrom {
    /// The Redis the fleet reports to (any URL the sidecar takes:
    /// redis://, rediss://, redis+unix://, redis-sentinel://)
    #[arg(long, value_name = "URL")]
    pub redis: Option<String>,
    /// The control plane the fleet reports to over HTTP
    #[arg(long, value_name = "URL")]
    pub control_plane: Option<String>,
    /// Read the reports where this sidecar config sends them (its
    /// `[report]` and `[source]`; the change positions from its source
    /// when it reports elsewhere); the flags below override it [default:
    /// config/sidecar.toml, when none of --redis, --control-plane,
    /// --config is given]
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Where the change positions are, when the reports are elsewhere
    /// (`report.redis_url`): the source's Redis URL, or its control plane
    /// (http:// or https://)
    #[arg(long, value_name = "URL")]
    pub positions_from: Option<String>,
    #[command(flatten)]
    pub login: RedisLogin,
    /// The variable holding the control-plane token
    #[arg(long, value_name = "VAR")]
    pub token_env: Option<String>,
}

impl FleetFrom {
    fn target(self) -> Result<fleet::reader::Target, u8> {
        use crate::config::{ReportsTo, Source};
        use fleet::reader::{Store, Target};
        let token_env = self.token_env.clone();
        let control_plane = |url: String, default: &str| Store::ControlPlane {
            url,
            token_env: token_env.clone().unwrap_or_else(|| default.to_owned()),
        };
        let flagged = self.positions_from.clone().map(|url| {
            if url.starts_with("http://") || url.starts_with("https://") {
                control_plane(url, DEFAULT_TOKEN_ENV)
            } else {
                Store::Redis(self.login.clone().target(url, None))
            }
        });
        if let Some(url) = self.control_plane {
            return Ok(Target {
                reports: control_plane(url, DEFAULT_TOKEN_ENV),
                positions: flagged,
            });
        }
        if let Some(url) = self.redis {
            return Ok(Target {
                reports: Store::Redis(self.login.target(url, None)),
                positions: flagged,
            });
        }
        let path = match self.config {
            Some(path) => path,
            None if std::path::Path::new(crate::config::DEFAULT_CONFIG_PATH).exists() => {
                PathBuf::from(crate::config::DEFAULT_CONFIG_PATH)
            }
            None => {
                eprintln!(
                    "env-sidecar: fleet: name the store: --redis URL, --control-plane URL or \
                     --config FILE ({} is not here)",
                    crate::config::DEFAULT_CONFIG_PATH
                );
                return Err(USAGE);
            }
        };
        let config = sidecar_config(&path)?;
        // Reports sent elsewhere: the positions are at the source.
        let at_source = match (&config.source.kind, &config.report.redis) {
            (_, None) => None,
            (Source::Redis(source), Some(_)) => Some(Store::Redis(
                RedisLogin::default().target(source.url.clone(), Some(source)),
            )),
            (Source::Http(h), Some(_)) => Some(control_plane(h.url.clone(), &h.token_env)),
            (Source::File(_), Some(_)) => None,
        };
        let positions = flagged.or(at_source);
        match config.report.to(&config.source.kind) {
            Some(ReportsTo::Redis(r)) => Ok(Target {
                reports: Store::Redis(self.login.target(r.url.clone(), Some(&r))),
                positions,
            }),
            Some(ReportsTo::ControlPlane(h)) => Ok(Target {
                reports: control_plane(h.url, &h.token_env),
                positions,
            }),
            None => {
                eprintln!(
                    "env-sidecar: {}: the sidecar reports nowhere (the file source without report.redis_url)",
                    path.display()
                );
                Err(USAGE)
            }
        }
    }
}

/// Reads a sidecar config for its Redis or control-plane settings.
fn sidecar_config(path: &std::path::Path) -> Result<crate::config::Config, u8> {
    crate::config::Config::load(path, true).map_err(|errors| {
        for e in &errors.0 {
            eprintln!("env-sidecar: {e}");
        }
        USAGE
    })
}

/// Which silent nodes count as lost.
#[derive(Debug, Clone, clap::Args)]
pub struct LostArgs {
    /// A node whose report expired within this long is lost (stores keep
    /// silent nodes for an hour: a longer value sees no further)
    #[arg(long, value_name = "D", default_value = "10m", value_parser = humantime::parse_duration)]
    pub lost_after: Duration,
}

/// How long and for how much of the fleet to wait.
#[derive(Debug, Clone, clap::Args)]
pub struct WaitArgs {
    /// The fraction of live nodes that must serve it
    #[arg(long, value_name = "F", default_value_t = 1.0)]
    pub min_fraction: f64,
    /// Give up after this long (exit 3)
    #[arg(long, value_name = "D", default_value = "60s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Only nodes with this label (repeat: all must match)
    #[arg(long, value_name = "LABEL=VALUE", value_parser = fleet::parse_selector)]
    pub selector: Vec<(String, String)>,
    #[command(flatten)]
    pub lost: LostArgs,
    /// Say converged even while lost nodes exist (they may serve an old
    /// revision)
    #[arg(long)]
    pub ignore_lost: bool,
}

impl WaitArgs {
    fn wait(self, targets: Vec<(String, u64)>, retry: RetryFor) -> Result<fleet::Wait, u8> {
        if !(self.min_fraction > 0.0 && self.min_fraction <= 1.0) {
            eprintln!("env-sidecar: --min-fraction must be above 0 and at most 1");
            return Err(USAGE);
        }
        Ok(fleet::Wait {
            targets,
            min_fraction: self.min_fraction,
            timeout: self.timeout,
            selector: self.selector,
            lost_after: self.lost.lost_after,
            ignore_lost: self.ignore_lost,
            retry,
        })
    }
}

/// Exit status of a bad flag value (as clap's own usage errors).
const USAGE: u8 = 2;

/// Where a Redis store is and how to log in.
#[derive(Debug, Clone, clap::Args)]
#[command(group(
    clap::ArgGroup::new("redis_store")
        .required(true)
        .multiple(false)
        .args(["url", "config"])
))]
pub struct RedisArgs {
    /// Any URL the sidecar takes: redis://, rediss://, redis+unix://,
    /// redis-sentinel:// (no password: see --password-env)
    #[arg(long = "redis", value_name = "URL")]
    pub url: Option<String>,
    /// Take the Redis from this sidecar config's `[source]` (URL, key
    /// prefix, password variable, TLS files); the flags below override it
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub login: RedisLogin,
}

impl RedisArgs {
    fn target(self) -> Result<RedisTarget, u8> {
        use crate::config::Source;
        let Some(path) = self.config else {
            return Ok(self.login.target(self.url.unwrap_or_default(), None));
        };
        match sidecar_config(&path)?.source.kind {
            Source::Redis(r) => Ok(self.login.target(r.url.clone(), Some(&r))),
            other => {
                eprintln!(
                    "env-sidecar: {}: the source is {}, not Redis",
                    path.display(),
                    other.kind().as_str()
                );
                Err(USAGE)
            }
        }
    }
}

/// Which keys in a Redis, its password and TLS files (each overriding
/// what a `--config` says).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct RedisLogin {
    /// Keys {P}:projects, {P}:changes, {P}:population, {P}:positions,
    /// {P}:nodes, {P}:node:<id> [default: env-sidecar]
    #[arg(long, value_name = "P")]
    pub key_prefix: Option<String>,
    /// The variable holding the Redis password [default:
    /// ENV_SIDECAR_CONTROL_PLANE_TOKEN]
    #[arg(long, value_name = "VAR")]
    pub password_env: Option<String>,
    /// Trust this CA (PEM) for rediss:// instead of the system's
    #[arg(long, value_name = "FILE")]
    pub tls_ca_file: Option<PathBuf>,
    /// Present this client certificate (PEM; with --tls-key-file)
    #[arg(long, value_name = "FILE", requires = "tls_key_file")]
    pub tls_cert_file: Option<PathBuf>,
    /// The client certificate's private key (PEM)
    #[arg(long, value_name = "FILE", requires = "tls_cert_file")]
    pub tls_key_file: Option<PathBuf>,
}

impl RedisLogin {
    /// `url` with these flags over `config` (a sidecar's settings), over
    /// the defaults.
    fn target(self, url: String, config: Option<&crate::config::RedisConfig>) -> RedisTarget {
        let tls = config.map(|c| c.tls.clone()).unwrap_or_default();
        RedisTarget {
            url,
            key_prefix: self
                .key_prefix
                .or_else(|| config.map(|c| c.key_prefix.clone()))
                .unwrap_or_else(|| DEFAULT_KEY_PREFIX.into()),
            password_env: self
                .password_env
                .or_else(|| config.map(|c| c.token_env.clone()))
                .unwrap_or_else(|| DEFAULT_TOKEN_ENV.into()),
            tls: TlsFiles {
                ca_file: self.tls_ca_file.or(tls.ca_file),
                cert_file: self.tls_cert_file.or(tls.cert_file),
                key_file: self.tls_key_file.or(tls.key_file),
            },
        }
    }
}

/// Exit status when a key file cannot be read.
const KEY_UNREADABLE: u8 = 2;

impl Tool {
    /// Runs the command; returns the exit status.
    pub fn run(self) -> u8 {
        let mut stdout = std::io::stdout().lock();
        match self {
            Tool::Validate {
                previous,
                trust_keys,
                files,
            } => {
                let trust = if trust_keys.is_empty() {
                    Trust::skip_signatures()
                } else {
                    match crate::sync::key_watch::load(&trust_keys, true) {
                        Ok(loaded) => Trust::new(loaded.keys, true, None),
                        Err(e) => return key_error(&e.to_string()),
                    }
                };
                let previous = previous.as_deref().map(Input::parse);
                let inputs: Vec<Input> = files.iter().map(|f| Input::parse(f)).collect();
                validate::run(previous.as_ref(), &inputs, &trust, &mut stdout)
            }
            Tool::Publish(cmd) => cmd.run(&mut stdout),
            Tool::Conformance(cmd) => cmd.run(&mut stdout),
            Tool::Fleet { command } => command.run(&mut stdout),
            Tool::Keygen {
                private,
                public,
                key_id,
            } => keygen::run(
                &keygen::Keygen {
                    private,
                    public,
                    key_id,
                },
                &mut stdout,
            ),
            Tool::Sign {
                key,
                expires_in,
                output,
                file,
            } => {
                let key = match private_key(&key) {
                    Ok(key) => key,
                    Err(status) => return status,
                };
                let args = sign::Sign {
                    key,
                    expires_in,
                    output,
                    file: Input::parse(&file),
                };
                sign::run(&args, &mut stdout, &mut std::io::stderr())
            }
        }
    }
}

impl PublishCmd {
    fn run(self, stdout: &mut dyn std::io::Write) -> u8 {
        let PublishCmd {
            redis,
            max_removed_fraction,
            allow_mass_removal,
            sign_key,
            trust_keys,
            wait,
            waiting,
            retry,
            file,
        } = self;
        let sign_key = match sign_key.as_deref().map(private_key).transpose() {
            Ok(key) => key.map(Arc::new),
            Err(status) => return status,
        };
        let trust_keys = match crate::sync::key_watch::load(&trust_keys, false) {
            Ok(loaded) => loaded.keys,
            Err(e) => return key_error(&e.to_string()),
        };
        let redis = match redis.target() {
            Ok(target) => target,
            Err(status) => return status,
        };
        let target = fleet::reader::Target::one(fleet::reader::Store::Redis(redis.clone()));
        let args = publish::Publish {
            redis,
            max_removed_fraction,
            allow_mass_removal,
            file: Input::parse(&file),
            sign_key,
            trust_keys,
        };
        let env = Env::process();
        let retry = retry.retry();
        let mut stderr = std::io::stderr();
        block_on(async {
            let published = match publish::run(&args, &env, retry, stdout, &mut stderr).await {
                Ok(published) => published,
                Err(status) => return status,
            };
            if !wait {
                return publish::OK;
            }
            match waiting.wait(published, retry) {
                Ok(what) => {
                    fleet::wait(&SystemClock, &target, &what, &env, stdout, &mut stderr).await
                }
                Err(status) => status,
            }
        })
    }
}

impl ConformanceCmd {
    fn run(self, stdout: &mut dyn std::io::Write) -> u8 {
        let ConformanceCmd {
            control_plane,
            redis,
            login,
            token_env,
            wait,
        } = self;
        let env = Env::process();
        if let Some(url) = redis {
            let target = login.target(url, None);
            return block_on(super::conformance::redis::run(&target, &env, stdout));
        }
        let token_env = token_env.unwrap_or_else(|| DEFAULT_TOKEN_ENV.into());
        let args = super::conformance::http::Conformance {
            url: control_plane.unwrap_or_default(),
            token: env.secret(&token_env),
            wait,
            request_timeout: Duration::from_secs(10),
        };
        block_on(super::conformance::http::run(&args, stdout))
    }
}

impl FleetCommand {
    fn run(self, stdout: &mut dyn std::io::Write) -> u8 {
        let env = Env::process();
        match self {
            FleetCommand::Status {
                from,
                project,
                json,
                lost,
                retry,
            } => {
                let target = match from.target() {
                    Ok(target) => target,
                    Err(status) => return status,
                };
                let query = fleet::Status {
                    project,
                    json,
                    lost_after: lost.lost_after,
                    retry: retry.retry(),
                };
                block_on(fleet::status(
                    &SystemClock,
                    &target,
                    &query,
                    &env,
                    stdout,
                    &mut std::io::stderr(),
                ))
            }
            FleetCommand::Wait {
                from,
                project,
                revision,
                waiting,
                retry,
            } => {
                let targets = vec![(project, revision)];
                match (from.target(), waiting.wait(targets, retry.retry())) {
                    (Ok(target), Ok(what)) => block_on(fleet::wait(
                        &SystemClock,
                        &target,
                        &what,
                        &env,
                        stdout,
                        &mut std::io::stderr(),
                    )),
                    (Err(status), _) | (_, Err(status)) => status,
                }
            }
        }
    }
}

/// Reads a private key file; on failure says why (never its content).
pub fn private_key(path: &std::path::Path) -> Result<SigningKey, u8> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| key_error(&format!("{}: cannot read it: {e}", path.display())))?;
    keys::parse_private(&text).map_err(|e| key_error(&format!("{}: {e}", path.display())))
}

fn key_error(message: &str) -> u8 {
    println!("error message={}", super::input::quoted(message));
    KEY_UNREADABLE
}

/// Runs `future` on a runtime of this thread (the commands are short).
pub fn block_on<F: std::future::Future<Output = u8>>(future: F) -> u8 {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(future),
        Err(e) => {
            eprintln!("env-sidecar: cannot start the runtime: {e}");
            1
        }
    }
}
