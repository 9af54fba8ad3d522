//! The operator commands that need no sidecar config, as `clap`
//! subcommands: `validate`, `publish`, `keygen`, `sign`. `main` parses
//! them beside its own (`health`, `check-config`) and hands them to
//! [`Tool::run`], which returns the exit status.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::input::Input;
use super::{keygen, publish, sign, validate};
use crate::config::secret::Env;
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
    /// it; exit 0, 1 refused (nothing written), 2 unreadable or unreachable
    Publish {
        #[command(flatten)]
        redis: RedisArgs,
        /// Refuse to remove more than this fraction of the projects in Redis
        #[arg(long, value_name = "F", default_value_t = 0.5)]
        max_removed_fraction: f64,
        /// Remove them anyway
        #[arg(long)]
        allow_mass_removal: bool,
        /// Sign every document written with this private key (removals
        /// become signed tombstones)
        #[arg(long, value_name = "FILE")]
        sign_key: Option<PathBuf>,
        /// The snapshot file (`-` reads stdin)
        #[arg(value_name = "FILE")]
        file: PathBuf,
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

/// Where a Redis store is and how to log in.
#[derive(Debug, Clone, clap::Args)]
pub struct RedisArgs {
    /// redis:// or rediss:// URL (no password: see --password-env)
    #[arg(long = "redis", value_name = "URL")]
    pub url: String,
    /// Keys {P}:projects and {P}:changes
    #[arg(long, value_name = "P", default_value = "env-sidecar")]
    pub key_prefix: String,
    /// The variable holding the Redis password
    #[arg(
        long,
        value_name = "VAR",
        default_value = "ENV_SIDECAR_CONTROL_PLANE_TOKEN"
    )]
    pub password_env: String,
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
                    match crate::sync::keys::load(&trust_keys, true) {
                        Ok(keys) => Trust::new(keys, true, None),
                        Err(e) => return key_error(&e.to_string()),
                    }
                };
                let previous = previous.as_deref().map(Input::parse);
                let inputs: Vec<Input> = files.iter().map(|f| Input::parse(f)).collect();
                validate::run(previous.as_ref(), &inputs, &trust, &mut stdout)
            }
            Tool::Publish {
                redis,
                max_removed_fraction,
                allow_mass_removal,
                sign_key,
                file,
            } => {
                let sign_key = match sign_key.as_deref().map(private_key).transpose() {
                    Ok(key) => key.map(Arc::new),
                    Err(status) => return status,
                };
                let args = publish::Publish {
                    redis: redis.url,
                    key_prefix: redis.key_prefix,
                    password_env: redis.password_env,
                    max_removed_fraction,
                    allow_mass_removal,
                    file: Input::parse(&file),
                    sign_key,
                };
                block_on(publish::run(&args, &Env::process(), &mut stdout))
            }
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
