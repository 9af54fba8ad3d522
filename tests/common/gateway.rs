//! What the real-proxy tests share: an upstream that echoes what reached
//! it, recipes read from `docs/gateways.md` (so the documented recipe is the one
//! tested), and a guard that stops a proxy process.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};

use std::process::{Child, Command};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A plain HTTP/1.1 upstream that answers each request with the request
/// path and the `x-resolved-*` / `x-resolution-*` / `x-snapshot-*` headers
/// it received, one lower-case `name: value` per line; it counts requests.
pub fn echo_upstream() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let requests = Arc::new(AtomicUsize::new(0));
    let counter = requests.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let counter = counter.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut writer = stream;
                loop {
                    let mut echoed = String::new();
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    counter.fetch_add(1, SeqCst);
                    let path = line.split(' ').nth(1).unwrap_or("").to_string();
                    echoed.push_str(&format!("path: {path}\n"));
                    let mut content_length = 0usize;
                    loop {
                        line.clear();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        let header = line.trim_end();
                        if header.is_empty() {
                            break;
                        }
                        let lower = header.to_ascii_lowercase();
                        if let Some(n) = lower.strip_prefix("content-length:") {
                            content_length = n.trim().parse().unwrap_or(0);
                        }
                        if ["x-resolved-", "x-resolution-", "x-snapshot-"]
                            .iter()
                            .any(|p| lower.starts_with(p))
                        {
                            echoed.push_str(&lower);
                            echoed.push('\n');
                        }
                    }
                    let mut body = vec![0u8; content_length];
                    if std::io::Read::read_exact(&mut reader, &mut body).is_err() {
                        return;
                    }
                    let reply = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{echoed}",
                        echoed.len()
                    );
                    if writer.write_all(reply.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, requests)
}

/// Replaces `from` by `to` in `text`, insisting that it was there.
pub fn substitute(text: &str, from: &str, to: &str) -> String {
    assert!(
        text.contains(from),
        "{from:?} is not in the recipe:\n{text}"
    );
    text.replace(from, to)
}

/// Waits until something listens on `addr`; `log` is shown on failure.
pub fn wait_listening(addr: SocketAddr, what: &str, log: impl Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(
            Instant::now() < deadline,
            "{what} did not listen on {addr}: {}",
            log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A proxy process, stopped with SIGTERM (so a master takes its workers
/// down with it) when dropped.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
