//! The real `env-sidecar` binary as a child process: started from a config
//! file, its addresses read off its log, its log kept, and its resident
//! memory and open file descriptors read from `/proc`.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

pub struct SidecarProcess {
    pub child: Child,
    pub data_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    log: Arc<Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl SidecarProcess {
    /// `env-sidecar --config <config>` with `RUST_LOG=debug` and `envs`.
    pub fn start(config: &Path, envs: &[(&str, &str)]) -> SidecarProcess {
        let mut command = super::shared::sidecar_command();
        command.arg("--config").arg(config).env("RUST_LOG", "debug");
        for (key, value) in envs {
            command.env(key, value);
        }
        SidecarProcess::spawn(command)
    }

    /// Spawns `command` (which runs the sidecar) and waits for its listen line.
    pub fn spawn(mut command: Command) -> SidecarProcess {
        let mut child = command
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the sidecar binary starts");
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        let sink = log.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { return };
                if line.contains("data_addr=") {
                    let _ = tx.send((
                        addr_after(&line, "data_addr="),
                        addr_after(&line, "admin_addr="),
                    ));
                }
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let Ok((Some(data_addr), Some(admin_addr))) = rx.recv_timeout(Duration::from_secs(20))
        else {
            let _ = child.kill();
            panic!(
                "the sidecar never said where it listens:\n{}",
                log.lock().unwrap()
            );
        };
        SidecarProcess {
            child,
            data_addr,
            admin_addr,
            log,
            reader: Some(reader),
        }
    }

    /// Everything it has logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Resident memory, KiB (`VmRSS`).
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("the sidecar is running");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc status")
    }

    /// Open file descriptors.
    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id()))
            .expect("the sidecar is running")
            .count()
    }

    /// True while the process has not exited.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
    }

    /// Waits for the exit, at most `limit`, and for the last of its log.
    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                if let Some(reader) = self.reader.take() {
                    let _ = reader.join();
                }
                return status;
            }
            assert!(Instant::now() < deadline, "did not exit:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for SidecarProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn addr_after(line: &str, key: &str) -> Option<SocketAddr> {
    line.split(key)
        .nth(1)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}
