//! A real `redis-server` for the benches that drive one, and plain
//! commands to it (INFO, HLEN) over a raw connection.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// A process killed when dropped (the source under test).
pub struct Peer(pub Child);

impl Drop for Peer {
    fn drop(&mut self) {
        super::stop(&mut self.0);
    }
}

/// A `redis-server` on a free loopback port, without persistence;
/// killed when dropped.
pub fn start_redis(dir: &Path) -> (Peer, String) {
    let (mut command, addr) = redis_server(dir);
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server starts");
    super::wait_listening(addr);
    (Peer(child), format!("redis://{addr}"))
}

/// The command line of a `redis-server` on a free port (no persistence,
/// working directory `dir`), and that port's address; for a caller that
/// runs it some other way (under callgrind, say).
pub fn redis_server(dir: &Path) -> (Command, SocketAddr) {
    let binary = super::which("redis-server")
        .expect("redis-server is needed for the Redis half (apt-get install redis-server)");
    let port = super::shared::free_addr().port();
    let mut command = Command::new(binary);
    command
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no", "--dir"])
        .arg(dir);
    (command, format!("127.0.0.1:{port}").parse().unwrap())
}

/// One inline command to Redis over a plain connection; the raw reply
/// (RESP2: a bulk reply is read to its announced length).
pub fn redis_command(url: &str, command: &str) -> String {
    use std::io::{Read, Write};
    let addr = url.trim_start_matches("redis://");
    let mut s = std::net::TcpStream::connect(addr).expect("redis connects");
    write!(s, "{command}\r\n").expect("redis command");
    let mut reply = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = s.read(&mut buf).expect("redis reply");
        reply.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&reply);
        let complete = match text.split_once("\r\n") {
            // `$-1`: nil.
            Some((head, rest)) if head.starts_with('$') => head[1..]
                .parse::<i64>()
                .is_ok_and(|len| usize::try_from(len).map_or(true, |len| rest.len() >= len)),
            Some(_) => true,
            None => false,
        };
        if complete || n == 0 {
            return text.into_owned();
        }
    }
}

/// A field of Redis' `INFO`.
pub fn redis_info(url: &str, field: &str) -> u64 {
    redis_command(url, "INFO")
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}
