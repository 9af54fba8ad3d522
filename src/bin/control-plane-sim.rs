//! `control-plane-sim`: a control plane for demos, load tests and manual
//! fault drills. A thin shell over `env_sidecar::simulator`.
//!
//! Prints `listening on http://ADDR` on stdout once it accepts requests.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use env_sidecar::sim::simulator::{Breach, Faults, Simulator};

/// Serves the env-sidecar sync protocol from a snapshot file or a generated
/// population, optionally mutating projects and injecting faults.
#[derive(Debug, Parser)]
#[command(name = "control-plane-sim", version)]
struct Args {
    /// Address to listen on (port 0: any free port)
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Serve the projects of this snapshot file
    #[arg(long, value_name = "FILE", conflicts_with = "generate")]
    snapshot: Option<PathBuf>,
    /// Serve N generated projects instead
    #[arg(long, value_name = "N")]
    generate: Option<usize>,
    /// Publish this many new project revisions per second (random projects
    /// among the generated ones)
    #[arg(long, value_name = "RATE", default_value_t = 0.0)]
    mutate: f64,
    /// Start with the mutator paused; SIGUSR1 resumes it (and pauses it
    /// again), so a drill or bench can load its sidecars first
    #[arg(long, requires = "mutate")]
    mutate_paused: bool,
    /// Require `Authorization: Bearer <value of this variable>`
    #[arg(long, value_name = "VAR")]
    token_env: Option<String>,
    /// Fraction of requests answered with --error-status
    #[arg(long, default_value_t = 0.0)]
    error_rate: f64,
    #[arg(long, default_value_t = 503)]
    error_status: u16,
    /// Added to every answer, e.g. 200ms
    #[arg(long, value_parser = humantime::parse_duration, default_value = "0s")]
    latency: Duration,
    /// Fraction of 200 answers with a body cut short
    #[arg(long, default_value_t = 0.0)]
    malformed_rate: f64,
    /// Fraction of requests that never get an answer
    #[arg(long, default_value_t = 0.0)]
    hang_rate: f64,
    /// Break one rule of the protocol on every request, as a control
    /// plane written by someone else might: misspelt-batch,
    /// no-content-poll, no-gone, no-etag, no-not-found or no-wait
    #[arg(long, value_name = "RULE")]
    breach: Option<Breach>,
    /// Go down (connection refused) every this long ...
    #[arg(long, value_parser = humantime::parse_duration)]
    down_every: Option<Duration>,
    /// ... for this long
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5s")]
    down_for: Duration,
    /// Also publish every change to this Redis (redis:// or rediss://), as
    /// `env-sidecar publish` would, for sidecars with `[source] kind =
    /// "redis"`
    #[arg(long, value_name = "URL")]
    redis: Option<String>,
    /// Redis keys {P}:projects and {P}:changes
    #[arg(long, value_name = "P", default_value = "env-sidecar")]
    key_prefix: String,
    /// The variable holding the Redis password
    #[arg(long, value_name = "VAR")]
    redis_password_env: Option<String>,
    /// Sign every document it serves with this private key (`env-sidecar
    /// keygen`); removals become signed tombstones
    #[arg(long, value_name = "FILE")]
    sign_key: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("control-plane-sim: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(args))
}

async fn run(args: Args) -> ExitCode {
    let token = args
        .token_env
        .as_deref()
        .and_then(|v| std::env::var(v).ok())
        .filter(|t| !t.is_empty());
    let sim = match Simulator::start(args.listen, token).await {
        Ok(sim) => sim,
        Err(e) => {
            eprintln!("control-plane-sim: cannot listen on {}: {e}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    let population = match populate(&sim, &args).await {
        Ok(population) => population,
        Err(e) => {
            eprintln!("control-plane-sim: {e}");
            return ExitCode::FAILURE;
        }
    };
    sim.set_faults(Faults {
        error_rate: args.error_rate,
        error_status: args.error_status,
        latency: args.latency,
        malformed_rate: args.malformed_rate,
        hang_rate: args.hang_rate,
        breach: args.breach,
    });
    if args.mutate > 0.0 {
        if population == 0 {
            eprintln!("control-plane-sim: --mutate needs --generate N");
            return ExitCode::FAILURE;
        }
        toggle_mutator_on_sigusr1(sim.clone(), population, args.mutate, !args.mutate_paused);
    }
    if let Some(every) = args.down_every {
        let sim = sim.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                eprintln!("going down for {:?}", args.down_for);
                sim.go_down(args.down_for);
                tokio::time::sleep(args.down_for).await;
            }
        });
    }
    println!("listening on {}", sim.url());
    let _ = std::io::stdout().flush();
    let _ = tokio::signal::ctrl_c().await;
    sim.stop();
    ExitCode::SUCCESS
}

/// Signing, the Redis mirror and the projects the flags ask for; the
/// size of a generated population (0 when none was generated), or why
/// the simulator cannot start.
async fn populate(sim: &Simulator, args: &Args) -> Result<usize, String> {
    if let Some(path) = &args.sign_key {
        let key = std::fs::read_to_string(path)
            .map_err(|e| e.to_string())
            .and_then(|text| {
                env_sidecar::model::keys::parse_private(&text).map_err(|e| e.to_string())
            })
            .map_err(|e| format!("--sign-key {}: {e}", path.display()))?;
        eprintln!("signing with key {}", key.keyid);
        sim.sign_with(std::sync::Arc::new(key));
    }
    if let Some(url) = &args.redis {
        let password = args
            .redis_password_env
            .as_deref()
            .and_then(|v| std::env::var(v).ok())
            .filter(|p| !p.is_empty())
            .map(env_sidecar::config::secret::Secret::new);
        sim.mirror_to_redis(url, password.as_ref(), &args.key_prefix)
            .await
            .map_err(|e| format!("cannot reach Redis at {url}: {e}"))?;
        eprintln!("publishing every change to Redis too ({url})");
    }
    if let Some(path) = &args.snapshot {
        let n = std::fs::read(path)
            .map_err(|e| e.to_string())
            .and_then(|b| sim.load_snapshot(&b))
            .map_err(|e| format!("{}: {e}", path.display()))?;
        eprintln!("serving {n} projects from {}", path.display());
    }
    if let Some(n) = args.generate {
        sim.generate(n);
        eprintln!("serving {n} generated projects");
        return Ok(n);
    }
    Ok(0)
}

/// Runs the mutator (at once when `running`), and pauses or resumes it on
/// each SIGUSR1.
fn toggle_mutator_on_sigusr1(sim: Simulator, population: usize, rate: f64, running: bool) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut mutator = running.then(|| sim.spawn_mutator(population, rate));
    let mut usr1 = match signal(SignalKind::user_defined1()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("control-plane-sim: no SIGUSR1 toggle: {e}");
            return;
        }
    };
    tokio::spawn(async move {
        while usr1.recv().await.is_some() {
            match mutator.take() {
                Some(task) => {
                    task.abort();
                    eprintln!("mutator paused");
                }
                None => {
                    mutator = Some(sim.spawn_mutator(population, rate));
                    eprintln!("mutating {rate} projects per second");
                }
            }
        }
    });
}
