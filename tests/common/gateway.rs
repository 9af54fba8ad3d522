//! What the real-proxy tests share: an upstream that echoes what reached
//! it, recipes read from `docs/gateways.md` (so the documented recipe is the one
//! tested), and a guard that stops a proxy process.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};

use std::process::{Child, Command};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// A plain HTTP/1.1 upstream that answers each request with the request
/// path and the `x-resolved-*` / `x-resolution-*` / `x-snapshot-*` headers
/// it received, one `name: value` per line (the name in lower case, the
/// value as received); it counts requests.
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
                        // The name in lower case, the value as it came.
                        let (name, value) = header.split_once(':').unwrap_or((header, ""));
                        let name = name.to_ascii_lowercase();
                        if name == "content-length" {
                            content_length = value.trim().parse().unwrap_or(0);
                        }
                        if ["x-resolved-", "x-resolution-", "x-snapshot-"]
                            .iter()
                            .any(|p| name.starts_with(p))
                        {
                            echoed.push_str(&format!("{name}: {}\n", value.trim()));
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

/// The default `server.max_pointers_header_bytes`.
pub const POINTERS_LIMIT: usize = 3072;

/// What the client sends as its own `x-resolved-pointers` and
/// `x-resolved-pointers-omitted`: neither may reach the upstream.
pub const SMUGGLED_POINTERS: &str =
    r#"{"prompts":{"smuggled":"1"},"routing_rules":{},"providers":{}}"#;
pub const SMUGGLED_OMITTED: &str = "smuggled";

/// Projects whose pointers test what reaches the upstream, beside
/// [`super::project`]'s `acme` at revision 6 (which the recipes' tests
/// serve): `ptr-due`, whose canary has a scheduled change already due;
/// `ptr-at-limit`, whose prod pointers are exactly [`POINTERS_LIMIT`]
/// bytes of JSON; `ptr-over-limit`, one byte more.
pub fn pointer_projects() -> Vec<Value> {
    let mut due = super::project("ptr-due", 2);
    due["environments"][0]["scheduled"] = json!([{
        "at": "2020-01-01T00:00:00Z",
        "pointers": {"prompts": {"summarize": "due-now"}, "providers": {"openai": "act-7"}}
    }]);
    let sized = |id: &str, len: usize| {
        let mut p = super::project(id, 3);
        p["environments"][3]["pointers"] = json!({"prompts": prompts_of_json_len(len)});
        p
    };
    vec![
        due,
        sized("ptr-at-limit", POINTERS_LIMIT),
        sized("ptr-over-limit", POINTERS_LIMIT + 1),
    ]
}

/// A prompts map whose pointers object (`{"prompts":{…},"routing_rules":
/// {},"providers":{}}`) is exactly `len` bytes of compact JSON.
pub fn prompts_of_json_len(len: usize) -> serde_json::Map<String, Value> {
    const EMPTY: usize = r#"{"prompts":{},"routing_rules":{},"providers":{}}"#.len();
    // `"pNNN":"…"` is 9 bytes and the value; entries are joined by commas.
    let mut left = len - EMPTY;
    let mut map = serde_json::Map::new();
    while left > 0 {
        let comma = usize::from(!map.is_empty());
        let value = (left - comma - 9).min(100);
        // Never leave less than a whole entry with a one-byte value.
        let value = if left - comma - 9 - value < 11 && left - comma - 9 - value > 0 {
            value - 11
        } else {
            value
        };
        map.insert(format!("p{:03}", map.len()), json!("v".repeat(value)));
        left -= comma + 9 + value;
    }
    assert_eq!(
        pointers_text(&map, &Default::default(), &Default::default()).len(),
        len
    );
    map
}

/// The pointers object as the sidecar renders it: compact, the kinds in
/// their fixed order, keys sorted.
pub fn pointers_text(
    prompts: &serde_json::Map<String, Value>,
    routing_rules: &serde_json::Map<String, Value>,
    providers: &serde_json::Map<String, Value>,
) -> String {
    let map = |m: &serde_json::Map<String, Value>| {
        let sorted: std::collections::BTreeMap<_, _> = m.iter().collect();
        serde_json::to_string(&sorted).unwrap()
    };
    format!(
        r#"{{"prompts":{},"routing_rules":{},"providers":{}}}"#,
        map(prompts),
        map(routing_rules),
        map(providers)
    )
}

/// What the upstream must get for a request.
pub enum Pointers {
    /// `x-resolved-pointers` with exactly this text.
    Sent(String),
    /// `x-resolved-pointers-omitted: too_large`, and no pointers.
    Omitted,
}

/// One request through a proxy and the pointers the upstream must get.
pub struct PointerCase {
    pub project: &'static str,
    pub environment: Option<&'static str>,
    pub expect: Pointers,
}

/// The cases every recipe's test sends (each with the client's own
/// copies of both pointers headers): an exact environment, a fallback, a
/// scheduled change already due, pointers at the limit, and over it.
pub fn pointer_cases() -> Vec<PointerCase> {
    let summarize = |v: &str| json!({"summarize": v}).as_object().unwrap().clone();
    let none = serde_json::Map::new();
    let at_limit = prompts_of_json_len(POINTERS_LIMIT);
    vec![
        PointerCase {
            project: "acme",
            environment: Some("Staging"),
            expect: Pointers::Sent(pointers_text(&summarize("staging-r6"), &none, &none)),
        },
        PointerCase {
            project: "acme",
            environment: None,
            expect: Pointers::Sent(pointers_text(&summarize("prod-r6"), &none, &none)),
        },
        PointerCase {
            project: "ptr-due",
            environment: Some("canary"),
            expect: Pointers::Sent(pointers_text(
                &summarize("due-now"),
                &none,
                json!({"openai": "act-7"}).as_object().unwrap(),
            )),
        },
        PointerCase {
            project: "ptr-at-limit",
            environment: Some("prod"),
            expect: Pointers::Sent(pointers_text(&at_limit, &none, &none)),
        },
        PointerCase {
            project: "ptr-over-limit",
            environment: Some("prod"),
            expect: Pointers::Omitted,
        },
    ]
}

impl PointerCase {
    /// Checks what the echo upstream saw (its answer's text).
    pub fn check(&self, seen: &str) {
        let what = format!("{} {:?}", self.project, self.environment);
        assert!(
            !seen.contains("smuggled"),
            "{what}: a client's copy reached the upstream: {seen}"
        );
        let lines: Vec<&str> = seen.lines().collect();
        let count = |name: &str| lines.iter().filter(|l| l.starts_with(name)).count();
        match &self.expect {
            Pointers::Sent(text) => {
                assert!(
                    lines.contains(&format!("x-resolved-pointers: {text}").as_str()),
                    "{what}: expected the pointers {text}: {seen}"
                );
                assert_eq!(count("x-resolved-pointers:"), 1, "{what}: {seen}");
                assert_eq!(count("x-resolved-pointers-omitted:"), 0, "{what}: {seen}");
            }
            Pointers::Omitted => {
                assert!(
                    lines.contains(&"x-resolved-pointers-omitted: too_large"),
                    "{what}: expected the pointers omitted: {seen}"
                );
                assert_eq!(count("x-resolved-pointers:"), 0, "{what}: {seen}");
            }
        }
    }
}

/// Sends every [`pointer_cases`] request through the proxy at `url` (a
/// full URL of a path the recipe checks) with the client's own copies of
/// both pointers headers, and checks what the upstream received.
pub async fn check_pointer_cases(url: &str) {
    let client = reqwest::Client::new();
    for case in pointer_cases() {
        let mut req = client
            .get(url)
            .header("x-project-id", case.project)
            .header("x-resolved-pointers", SMUGGLED_POINTERS)
            .header("x-resolved-pointers-omitted", SMUGGLED_OMITTED);
        if let Some(env) = case.environment {
            req = req.header("x-environment", env);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let seen = resp.text().await.unwrap();
        assert_eq!(
            status, 200,
            "{} {:?}: {seen}",
            case.project, case.environment
        );
        case.check(&seen);
    }
}
