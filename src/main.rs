//! The `env-sidecar` binary: flags, logging, runtime, signals. Everything
//! else lives in the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

use env_sidecar::config::{Config, Source, DEFAULT_CONFIG_PATH};

/// Resolves LLM-gateway environments from a lock-free snapshot.
#[derive(Debug, Parser)]
#[command(name = "env-sidecar", version)]
struct Args {
    /// Config file [default: config/sidecar.toml, if present]
    #[arg(long, value_name = "PATH", global = true)]
    config: Option<PathBuf>,
    /// Overrides server.listen (data plane address)
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Overrides admin.listen (operator plane address)
    #[arg(long, value_name = "ADDR")]
    admin_listen: Option<SocketAddr>,
    /// Overrides source.path (kind = "file")
    #[arg(long, value_name = "PATH")]
    source_path: Option<PathBuf>,
    /// Overrides node.id (this sidecar's name in fleet reports)
    #[arg(long, value_name = "ID")]
    node_id: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Probe the operator plane's /readyz and exit 0 when ready, 1 when not
    /// (for container health checks; needs no shell tools)
    Health {
        /// Address of the operator plane [default: admin.listen of the config]
        #[arg(long, value_name = "ADDR")]
        addr: Option<SocketAddr>,
    },
    /// Load the config with every check the sidecar makes at start and
    /// print the effective settings (secrets only as set / unset); exit 0,
    /// or 78 with the message naming the key
    CheckConfig,
    #[command(flatten)]
    Tool(Box<ops::cli::Tool>),
}

use env_sidecar::ops::{self, EXIT_CONFIG};

fn main() -> ExitCode {
    allocator::configure();
    env_sidecar::sync::memory::set_release(allocator::release);
    let args = Args::parse();
    if let Some(Command::Tool(tool)) = args.command {
        // These need no config.
        return ExitCode::from(tool.run());
    }
    let config = match load_config(&args) {
        Ok(c) => c,
        Err(errors) => {
            for e in &errors.0 {
                eprintln!("env-sidecar: {e}");
            }
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    match args.command {
        Some(Command::Health { addr }) => {
            let addr = addr.unwrap_or(config.admin.listen);
            return ExitCode::from(ops::health::run(addr, &mut std::io::stderr()));
        }
        Some(Command::CheckConfig) => {
            let path = args
                .config
                .as_deref()
                .map_or(DEFAULT_CONFIG_PATH.to_owned(), |p| p.display().to_string());
            let env = env_sidecar::config::secret::Env::process();
            return match ops::check_config::render(&config, &env, &path) {
                Ok(text) => {
                    print!("{text}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("env-sidecar: {e}");
                    ExitCode::from(EXIT_CONFIG)
                }
            };
        }
        Some(Command::Tool(_)) | None => {}
    }
    env_sidecar::telemetry::logging::init(&config.log);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("env-sidecar: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let sidecar = match env_sidecar::app::start(config).await {
            Ok(s) => s,
            Err(e) if e.is_config() => {
                eprintln!("env-sidecar: {e}");
                return ExitCode::from(EXIT_CONFIG);
            }
            Err(e) => {
                eprintln!("env-sidecar: {e}");
                return ExitCode::FAILURE;
            }
        };
        wait_for_signal().await;
        tracing::info!("shutting down: draining in-flight requests");
        sidecar.shutdown().await;
        tracing::info!("stopped");
        ExitCode::SUCCESS
    })
}

fn load_config(args: &Args) -> Result<Config, env_sidecar::config::ConfigErrors> {
    let (path, required) = match &args.config {
        Some(p) => (p.clone(), true),
        None => (PathBuf::from(DEFAULT_CONFIG_PATH), false),
    };
    let mut config = Config::load(&path, required)?;
    if let Some(addr) = args.listen {
        config.server.listen = addr;
    }
    if let Some(addr) = args.admin_listen {
        config.admin.listen = addr;
    }
    if let Some(p) = &args.source_path {
        match &mut config.source.kind {
            Source::File(file) => file.path = p.clone(),
            _ => {
                return Err(env_sidecar::config::ConfigError::Invalid {
                    key: "--source-path",
                    message: "is read only when source.kind = \"file\"".into(),
                }
                .into())
            }
        }
    }
    if let Some(id) = &args.node_id {
        config.node.id = id.clone();
    }
    config.check()?;
    Ok(config)
}

/// glibc malloc, tuned so a snapshot load does not leave its peak
/// resident (see the memory figures in docs/performance.md).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod allocator {
    use std::ffi::c_int;

    extern "C" {
        fn mallopt(param: c_int, value: c_int) -> c_int;
        fn malloc_trim(pad: usize) -> c_int;
    }

    /// `M_MMAP_THRESHOLD` from `<malloc.h>`.
    const M_MMAP_THRESHOLD: c_int = -3;

    /// Allocations from 256 KiB up are mapped on their own and unmapped
    /// when freed. A fixed threshold turns off glibc's sliding one, which
    /// after the first large body was freed would serve the next (a 17 MB
    /// snapshot file read, say) from the heap and keep it resident: 3.7 ×
    /// the snapshot JSON instead of 2.9 × after a start from the cache
    /// followed by a full snapshot (`cargo bench --bench footprint`, last
    /// line). Arenas are left at glibc's default (one per thread, up to 8
    /// per core): the writer thread parses and builds in its own, so
    /// request threads never wait on its lock.
    pub fn configure() {
        // SAFETY: mallopt only sets a tuning parameter; called before any
        // other thread exists.
        unsafe {
            mallopt(M_MMAP_THRESHOLD, 256 * 1024);
        }
    }

    /// Returns free heap pages to the system: what a full snapshot load
    /// freed (the parsed documents) otherwise stays resident.
    pub fn release() {
        // SAFETY: malloc_trim has no preconditions; it only releases free
        // memory inside the allocator's own arenas.
        unsafe {
            malloc_trim(0);
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
mod allocator {
    pub fn configure() {}
    pub fn release() {}
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
