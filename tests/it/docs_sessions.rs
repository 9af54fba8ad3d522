//! The shown sessions stay true: every console block of the README and
//! `docs/` marked `<!-- session: sample -->` or `<!-- session: commands
//! -->` is run as shown and its output compared with what the page prints.
//!
//! * `sample`: the real binary on the shipped `config/sidecar.toml` and
//!   `config/snapshot.json` (what `cargo run --release` serves), in a copy
//!   of `config/`; `127.0.0.1:8080` and `:9901` in commands stand for the
//!   ports it got.
//! * `commands`: the operator commands (`env-sidecar` is the built
//!   binary), in a directory holding a copy of `config/` (with
//!   `config/examples/`, the files the sessions name).
//!
//! Each `$ ` line runs under `sh -c` there; the lines up to the next `$ `
//! are its expected stdout and stderr. In the expected text a line `...`
//! stands for any number of lines; RFC 3339 times, the `date` header and
//! snapshot ages are compared as placeholders, and the node id as
//! `gw-1:8080`. Editing a shown output without the code, or the code
//! without the page, fails here.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::process::SidecarProcess;

/// A console block to check.
#[derive(Debug)]
struct Session {
    file: PathBuf,
    line: usize,
    kind: String,
    steps: Vec<(String, Vec<String>)>,
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every page: the README, CONTRIBUTING and `docs/*.md`.
fn pages() -> Vec<PathBuf> {
    let mut pages = vec![root().join("README.md"), root().join("CONTRIBUTING.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .expect("docs/ exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    pages.extend(docs);
    pages
}

fn sessions() -> Vec<Session> {
    let mut out = Vec::new();
    for file in pages() {
        let text = std::fs::read_to_string(&file).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let mut i = 0;
        while i < lines.len() {
            let kind = lines[i]
                .trim()
                .strip_prefix("<!-- session: ")
                .and_then(|r| r.strip_suffix(" -->"));
            let Some(kind) = kind else {
                i += 1;
                continue;
            };
            assert_eq!(
                lines.get(i + 1).map(|l| l.trim()),
                Some("```console"),
                "{}:{}: a session marker must precede a console block",
                file.display(),
                i + 1
            );
            let start = i + 1;
            let mut steps: Vec<(String, Vec<String>)> = Vec::new();
            i += 2;
            while i < lines.len() && lines[i].trim() != "```" {
                match lines[i].strip_prefix("$ ") {
                    Some(cmd) => steps.push((cmd.to_owned(), Vec::new())),
                    None => steps
                        .last_mut()
                        .expect("a session block starts with a command")
                        .1
                        .push(lines[i].to_owned()),
                }
                i += 1;
            }
            for (_, expected) in &mut steps {
                while expected.last().is_some_and(|l| l.is_empty()) {
                    expected.pop();
                }
            }
            out.push(Session {
                file: file.clone(),
                line: start + 1,
                kind: kind.to_owned(),
                steps,
            });
        }
    }
    out
}

/// What varies from run to run, as placeholders.
fn normalise(text: &str, host_port: Option<(&str, &str)>) -> String {
    let mut out = text.to_owned();
    if let Some((host, port)) = host_port {
        out = out.replace(&format!("{host}:{port}"), "gw-1:8080");
    }
    let mut result = String::with_capacity(out.len());
    let bytes = out.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        // 2026-12-02T17:35:23.919Z
        if i + 20 <= bytes.len() && is_timestamp(&out[i..]) {
            let len = out[i..]
                .find(|c: char| !(c.is_ascii_digit() || "-:.TZ".contains(c)))
                .unwrap_or(out.len() - i);
            result.push_str("<time>");
            i += len;
            continue;
        }
        if out[i..].starts_with("\"snapshot_age_seconds\":") {
            let key = "\"snapshot_age_seconds\":";
            result.push_str(key);
            i += key.len();
            let len = out[i..]
                .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == 'e' || c == '-'))
                .unwrap_or(out.len() - i);
            result.push_str("<age>");
            i += len;
            continue;
        }
        if out[i..].starts_with("date: ") && (i == 0 || bytes[i - 1] == b'\n') {
            result.push_str("date: <date>");
            i += out[i..].find('\n').unwrap_or(out.len() - i);
            continue;
        }
        let c = out[i..].chars().next().unwrap();
        result.push(c);
        i += c.len_utf8();
    }
    result
}

fn is_timestamp(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 20
        && b[..4].iter().all(u8::is_ascii_digit)
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
}

/// `expected` (with `...` lines) matches `actual`.
fn matches(expected: &[String], actual: &[&str]) -> bool {
    match expected.split_first() {
        None => actual.is_empty(),
        Some((first, rest)) if first.trim() == "..." => {
            (0..=actual.len()).any(|skip| matches(rest, &actual[skip..]))
        }
        Some((first, rest)) => {
            actual.first().is_some_and(|a| a == first) && matches(rest, &actual[1..])
        }
    }
}

/// A working directory with a copy of `config/` (its examples included),
/// as a clone of the repository has it.
fn workdir() -> tempfile::TempDir {
    fn copy(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let path = entry.unwrap().path();
            let target = to.join(path.file_name().unwrap());
            if path.is_dir() {
                copy(&path, &target);
            } else {
                std::fs::copy(&path, target).unwrap();
            }
        }
    }
    let dir = tempfile::tempdir().unwrap();
    copy(&root().join("config"), &dir.path().join("config"));
    dir
}

fn sh(dir: &Path, command: &str) -> String {
    let bin = Path::new(env!("CARGO_BIN_EXE_env-sidecar"))
        .parent()
        .unwrap()
        .to_owned();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    // One stream, in the order it was written, as a terminal shows it.
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("exec 2>&1\n{command}"))
        .current_dir(dir)
        .env("PATH", path)
        .env_remove("ENV_SIDECAR_ADMIN_TOKEN")
        .env_remove("ENV_SIDECAR_CONTROL_PLANE_TOKEN")
        .env_remove("RUST_LOG")
        .output()
        .expect("sh runs");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn check(
    session: &Session,
    run: impl Fn(&str) -> String,
    host_port: Option<(&str, &str)>,
) -> Vec<String> {
    let mut failures = Vec::new();
    for (command, expected) in &session.steps {
        let actual = run(command);
        let actual = normalise(&actual, host_port);
        let expected: Vec<String> = expected.iter().map(|l| normalise(l, None)).collect();
        let actual_lines: Vec<&str> = actual.trim_end_matches('\n').lines().collect();
        let actual_lines: Vec<&str> = if actual.trim().is_empty() {
            Vec::new()
        } else {
            actual_lines
        };
        if !matches(&expected, &actual_lines) {
            failures.push(format!(
                "{}:{}: `$ {command}`\n--- shown ---\n{}\n--- got ---\n{}",
                session.file.display(),
                session.line,
                expected.join("\n"),
                actual_lines.join("\n")
            ));
        }
    }
    failures
}

#[test]
fn the_shown_sample_sessions_are_what_the_sidecar_answers() {
    if common::system_tool("curl", "curl").is_none() {
        return;
    }
    let all: Vec<Session> = sessions()
        .into_iter()
        .filter(|s| s.kind == "sample")
        .collect();
    assert!(
        all.iter().any(|s| s.file.ends_with("README.md")),
        "the README's sample session is marked"
    );
    let dir = workdir();
    let mut command = common::shared::sidecar_command();
    command
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .current_dir(dir.path())
        .env_remove("ENV_SIDECAR_ADMIN_TOKEN")
        .env("RUST_LOG", "info");
    let sidecar = SidecarProcess::spawn(command);
    let (data, admin) = (sidecar.data_addr, sidecar.admin_addr);
    // What the status session shows: the cache written once.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !sh(dir.path(), &format!("curl -s {admin}/admin/status")).contains("\"writes\":1") {
        assert!(std::time::Instant::now() < deadline, "{}", sidecar.log());
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let host = env_sidecar::config::host_name();
    let port = data.port().to_string();
    let run = |cmd: &str| {
        let cmd = cmd
            .replace("127.0.0.1:8080", &data.to_string())
            .replace("127.0.0.1:9901", &admin.to_string());
        sh(dir.path(), &cmd)
    };
    let failures: Vec<String> = all
        .iter()
        .flat_map(|s| check(s, run, Some((host.as_str(), port.as_str()))))
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn the_shown_command_sessions_are_what_the_commands_print() {
    let all: Vec<Session> = sessions()
        .into_iter()
        .filter(|s| s.kind == "commands")
        .collect();
    assert!(
        all.len() >= 3,
        "validate, check-config and sign sessions are marked"
    );
    // check-config names the node: this host, as `gw-1` in the docs.
    let host = env_sidecar::config::host_name();
    let mut failures = Vec::new();
    for session in &all {
        let dir = workdir();
        let host_port = Some((host.as_str(), "8080"));
        failures.extend(check(session, |cmd| sh(dir.path(), cmd), host_port));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn every_marker_names_a_known_kind() {
    for s in sessions() {
        assert!(
            s.kind == "sample" || s.kind == "commands",
            "{}:{}: unknown session kind {:?}",
            s.file.display(),
            s.line,
            s.kind
        );
        assert!(
            !s.steps.is_empty(),
            "{}:{}: an empty session",
            s.file.display(),
            s.line
        );
    }
}

#[test]
fn the_check_fails_when_a_shown_output_is_edited() {
    let expected = vec!["{\"ready\":true}".to_owned()];
    assert!(matches(&expected, &["{\"ready\":true}"]));
    assert!(!matches(&expected, &["{\"ready\":false}"]));
    let elided = vec!["a".to_owned(), "...".to_owned(), "z".to_owned()];
    assert!(matches(&elided, &["a", "b", "c", "z"]));
    assert!(matches(&elided, &["a", "z"]));
    assert!(!matches(&elided, &["a", "b"]));
    assert_eq!(
        normalise(
            "{\"at\":\"2026-12-02T17:35:23.919Z\",\"snapshot_age_seconds\":1.04}",
            None
        ),
        "{\"at\":\"<time>\",\"snapshot_age_seconds\":<age>}"
    );
}
