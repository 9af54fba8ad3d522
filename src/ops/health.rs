//! `env-sidecar health`: `GET /readyz` over a plain TCP connection, for
//! container health checks (no shell tools needed). Exit 0 when it
//! answers 200, else 1.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

/// Probes `addr` (the operator plane), bounded by two seconds; writes why
/// not ready to `err`.
pub fn run(addr: SocketAddr, err: &mut dyn Write) -> u8 {
    let timeout = Duration::from_secs(2);
    let probe = || -> std::io::Result<String> {
        let mut stream = std::net::TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        stream
            .write_all(b"GET /readyz HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")?;
        let mut head = [0u8; 12];
        stream.read_exact(&mut head)?;
        Ok(String::from_utf8_lossy(&head).into_owned())
    };
    match probe() {
        Ok(head) if head.starts_with("HTTP/1.1 200") => 0,
        Ok(head) => {
            let _ = writeln!(err, "env-sidecar health: not ready ({})", head.trim());
            1
        }
        Err(e) => {
            let _ = writeln!(err, "env-sidecar health: {addr}: {e}");
            1
        }
    }
}
