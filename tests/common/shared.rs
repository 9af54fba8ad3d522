//! Helpers the tests and the benches share, standing on their own (no
//! other part of `tests/common`), so `benches/support` includes this file
//! too (`#[path]`): one port picker, one documented-recipe reader, one way
//! to run the binary.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A free loopback port for a program that binds it itself. Never the
/// same one twice in this process: the kernel may hand a port that was
/// just let go to the next `bind(0)`, and two servers started side by
/// side would then get one port.
pub fn free_addr() -> SocketAddr {
    static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let addr = TcpListener::bind("127.0.0.1:0")
            .expect("a loopback port")
            .local_addr()
            .expect("its address");
        let mut used = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
        if !used.contains(&addr.port()) {
            used.push(addr.port());
            return addr;
        }
    }
}

/// The body of the fenced block of `docs/gateways.md` whose first line
/// contains `marker` (for example `# envoy: ext_authz over HTTP`): the
/// documented recipe is the one tested and measured.
pub fn readme_block(marker: &str) -> String {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/gateways.md"))
            .expect("docs/gateways.md is readable");
    let mut rest = readme.as_str();
    while let Some(at) = rest.find("```") {
        let after = &rest[at + 3..];
        let Some(newline) = after.find('\n') else {
            break;
        };
        let body_start = &after[newline + 1..];
        let Some(end) = body_start.find("```") else {
            break;
        };
        let body = &body_start[..end];
        if body.lines().next().is_some_and(|l| l.contains(marker)) {
            return body.to_string();
        }
        rest = &body_start[end + 3..];
    }
    panic!("docs/gateways.md has no block starting with {marker:?}");
}

/// The `env-sidecar` binary under test: `ENV_SIDECAR_BENCH_BIN` when set
/// (another build, for a before/after in one run), else this build's.
pub fn binary() -> PathBuf {
    std::env::var_os("ENV_SIDECAR_BENCH_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_env-sidecar")))
}

/// A command running the binary with a clean environment for what it
/// reads: no token or password variable, no `RUST_LOG`, leaking in from
/// the shell that runs the tests.
pub fn sidecar_command() -> Command {
    sidecar_command_for(&binary())
}

/// [`sidecar_command`] for another build of the binary.
pub fn sidecar_command_for(binary: &Path) -> Command {
    let mut command = Command::new(binary);
    for var in [
        "ENV_SIDECAR_CONTROL_PLANE_TOKEN",
        "ENV_SIDECAR_ADMIN_TOKEN",
        "RUST_LOG",
    ] {
        command.env_remove(var);
    }
    command
}
