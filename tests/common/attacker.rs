//! A writer with access to the store but without any signing key: plain
//! `redis-cli`, writing what a publisher writes (the hash field and a
//! stream entry) or anything else it likes.

use std::process::Command;

use serde_json::Value;

/// The keys of the default prefix.
pub const PROJECTS: &str = "{env-sidecar}:projects";
pub const CHANGES: &str = "{env-sidecar}:changes";
pub const POPULATION: &str = "{env-sidecar}:population";

/// `redis-cli -p PORT ARGS…`: its output.
pub fn redis_cli(port: u16, args: &[&str]) -> String {
    let cli = super::system_tool("redis-cli", "redis-tools").expect("redis-cli");
    let out = Command::new(cli)
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli runs");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `redis-cli -x -p PORT ARGS…` with `stdin` as the last argument (values
/// too large for a command line).
pub fn redis_cli_stdin(port: u16, args: &[&str], stdin: &[u8]) -> String {
    use std::io::Write;
    let cli = super::system_tool("redis-cli", "redis-tools").expect("redis-cli");
    let mut child = Command::new(cli)
        .args(["-x", "-p", &port.to_string()])
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("redis-cli runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin)
        .expect("written");
    let out = child.wait_with_output().expect("redis-cli ends");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What a writer with store access does: the hash field and a stream
/// entry, as a publisher writes them. Returns the entry's id.
pub fn write_as_attacker(port: u16, id: &str, document: &Value) -> String {
    write_text_as_attacker(port, id, &document.to_string())
}

/// [`write_as_attacker`] of any text.
pub fn write_text_as_attacker(port: u16, id: &str, text: &str) -> String {
    redis_cli_stdin(port, &["HSET", PROJECTS, id], text.as_bytes());
    redis_cli_stdin(
        port,
        &["XADD", CHANGES, "*", "project", id, "document"],
        text.as_bytes(),
    )
    .trim()
    .to_owned()
}

/// The hash value of `id` now (what an attacker keeps to replay later).
pub fn held(port: u16, id: &str) -> Value {
    let text = redis_cli(port, &["HGET", PROJECTS, id]);
    serde_json::from_str(text.trim()).expect("a JSON value")
}
