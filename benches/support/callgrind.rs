//! A process run under `valgrind --tool=callgrind`, its counters zeroed
//! and dumped on demand: user-space instructions, which stay the same on
//! a busy machine where CPU time moves. Shared by the benches that count
//! instructions (`instructions`, and Redis's side of `fleet`).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `command` under callgrind, its dumps written as `<dir>/<name>.callgrind.<n>`.
pub fn under_callgrind(dir: &Path, name: &str, command: &mut Command) -> Child {
    let program = command.get_program().to_owned();
    let args: Vec<_> = command.get_args().map(|a| a.to_owned()).collect();
    Command::new("valgrind")
        .arg("--tool=callgrind")
        .arg(format!(
            "--callgrind-out-file={}",
            dir.join(format!("{name}.callgrind")).display()
        ))
        .arg(program)
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("valgrind starts")
}

/// `callgrind_control FLAG PID` (`-z` zeroes the counters, `-d` dumps them).
pub fn control(flag: &str, child: &Child) {
    let status = Command::new("callgrind_control")
        .arg(flag)
        .arg(child.id().to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("callgrind_control runs");
    assert!(status.success(), "callgrind_control {flag} failed");
}

/// The instructions counted in dump `n` of `name` (its `totals:` line),
/// once the process has taken the dump command and written it.
pub fn dumped_total(dir: &Path, name: &str, n: usize) -> u64 {
    let dump = dir.join(format!("{name}.callgrind.{n}"));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(&dump).unwrap_or_default();
        if let Some(total) = text
            .lines()
            .find_map(|l| l.strip_prefix("totals: "))
            .and_then(|t| t.trim().parse::<u64>().ok())
        {
            return total;
        }
        assert!(Instant::now() < deadline, "{name}: no callgrind dump");
        std::thread::sleep(Duration::from_millis(100));
    }
}
