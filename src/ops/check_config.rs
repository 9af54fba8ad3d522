//! `env-sidecar check-config`: the effective settings after every check
//! the sidecar makes at start, as TOML (secrets only as set / unset).

use std::fmt::Write;
use std::time::Duration;

use crate::config::secret::Env;
use crate::config::{Config, SourceKind};

/// The effective configuration as a TOML document, with `# set` /
/// `# unset` beside each variable that names a secret. A public operator
/// plane without a token is refused like the sidecar refuses it at start.
pub fn render(config: &Config, env: &Env, source_path: &str) -> Result<String, String> {
    let secret = |name: &str| {
        if env.secret(name).is_some() {
            "set"
        } else {
            "unset"
        }
    };
    if env.secret(&config.admin.token_env).is_none() && !config.admin.listen.ip().is_loopback() {
        return Err(format!(
            "admin.listen: {} is not a loopback address and {} holds no token: the sidecar would refuse to start",
            config.admin.listen, config.admin.token_env
        ));
    }
    let d = |d: Duration| humantime::format_duration(d).to_string();
    let q = |s: &str| toml_string(s);
    let (server, admin, s) = (&config.server, &config.admin, &config.source);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# effective configuration ({source_path}); every check passed"
    );
    let _ = writeln!(out, "[server]");
    let _ = writeln!(out, "listen = {}", q(&server.listen.to_string()));
    let _ = writeln!(out, "unix_socket = {}", q(&server.unix_socket));
    let _ = writeln!(
        out,
        "project_header = {}",
        q(server.project_header.as_str())
    );
    let _ = writeln!(
        out,
        "environment_header = {}",
        q(server.environment_header.as_str())
    );
    let _ = writeln!(out, "\n[admin]");
    let _ = writeln!(out, "listen = {}", q(&admin.listen.to_string()));
    let _ = writeln!(
        out,
        "token_env = {}  # {}",
        q(&admin.token_env),
        secret(&admin.token_env)
    );
    let _ = writeln!(out, "\n[source]");
    let _ = writeln!(out, "kind = {}", q(s.kind.as_str()));
    let _ = writeln!(out, "path = {}", q(&s.path.display().to_string()));
    let _ = writeln!(out, "url = {}", q(&s.url));
    let _ = writeln!(out, "key_prefix = {}", q(&s.key_prefix));
    let _ = writeln!(out, "mode = {}", q(s.mode.as_str()));
    let token_note = match s.kind {
        SourceKind::File => "unused by the file source".to_owned(),
        _ => secret(&s.token_env).to_owned(),
    };
    let _ = writeln!(out, "token_env = {}  # {token_note}", q(&s.token_env));
    let _ = writeln!(out, "poll_interval = {}", q(&d(s.poll_interval)));
    let _ = writeln!(out, "request_timeout = {}", q(&d(s.request_timeout)));
    let _ = writeln!(out, "long_poll_wait = {}", q(&d(s.long_poll_wait)));
    let _ = writeln!(out, "backoff_max = {}", q(&d(s.backoff_max)));
    let _ = writeln!(out, "max_removed_fraction = {}", s.max_removed_fraction);
    let _ = writeln!(out, "max_document_bytes = {}", s.max_document_bytes);
    let _ = writeln!(out, "\n[cache]");
    let _ = writeln!(
        out,
        "path = {}",
        q(&config.cache.path.display().to_string())
    );
    let _ = writeln!(out, "\n[readiness]");
    let _ = writeln!(
        out,
        "max_staleness = {}",
        q(&d(config.readiness.max_staleness))
    );
    let t = &config.trust;
    let _ = writeln!(out, "\n[trust]");
    let keys: Vec<String> = t.keys.iter().map(|k| q(&k.display().to_string())).collect();
    let _ = writeln!(out, "keys = [{}]", keys.join(", "));
    let _ = writeln!(out, "require_signatures = {}", t.require_signatures);
    let _ = writeln!(out, "max_signature_age = {}", q(&d(t.max_signature_age)));
    let _ = writeln!(out, "max_clock_skew = {}", q(&d(t.max_clock_skew)));
    let n = &config.node;
    let _ = writeln!(out, "\n[node]");
    let id_note = if n.id.is_empty() {
        "  # empty: the host name and the data-plane port"
    } else {
        ""
    };
    let _ = writeln!(out, "id = {}{id_note}", q(&n.id));
    let labels: Vec<String> = n
        .labels
        .iter()
        .map(|(k, v)| format!("{} = {}", q(k), q(v)))
        .collect();
    if labels.is_empty() {
        let _ = writeln!(out, "labels = {{}}");
    } else {
        let _ = writeln!(out, "labels = {{ {} }}", labels.join(", "));
    }
    let r = &config.report;
    let _ = writeln!(out, "\n[report]");
    let _ = writeln!(out, "enabled = {}", r.enabled);
    let _ = writeln!(out, "interval = {}", q(&d(r.interval)));
    let _ = writeln!(out, "min_interval = {}", q(&d(r.min_interval)));
    let _ = writeln!(out, "redis_url = {}", q(&r.redis_url));
    let token_note = if r.token_env.is_empty() {
        "the source's".to_owned()
    } else {
        secret(&r.token_env).to_owned()
    };
    let _ = writeln!(out, "token_env = {}  # {token_note}", q(&r.token_env));
    let _ = writeln!(out, "\n[log]");
    let _ = writeln!(out, "format = {}", q(config.log.format.as_str()));
    let _ = writeln!(out, "level = {}", q(&config.log.level));
    Ok(out)
}

/// A TOML basic string.
fn toml_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn the_rendering_reads_back_as_the_same_config() {
        let config = Config::from_toml(
            "[source]\npoll_interval = \"250ms\"\n[log]\nformat = \"json\"\n\
             [trust]\nkeys = [\"a.pub\", \"keys/\"]\nrequire_signatures = true\n\
             [node]\nid = \"gw-1\"\nlabels = { region = \"eu\", zone = \"b\" }\n\
             [report]\ninterval = \"20s\"\n",
            Path::new("x.toml"),
        )
        .unwrap();
        let env = Env::from_pairs([("ENV_SIDECAR_ADMIN_TOKEN", "t")]);
        let text = render(&config, &env, "x.toml").unwrap();
        assert!(
            text.contains("token_env = \"ENV_SIDECAR_ADMIN_TOKEN\"  # set"),
            "{text}"
        );
        assert!(!text.contains("\"t\""), "never the secret itself");
        let again = Config::from_toml(&text, Path::new("rendered")).unwrap();
        assert_eq!(again.source.poll_interval, config.source.poll_interval);
        assert_eq!(again.log.format, config.log.format);
        assert_eq!(again.admin.listen, config.admin.listen);
        assert_eq!(again.trust.keys, config.trust.keys);
        assert!(again.trust.require_signatures);
        assert_eq!(again.node.labels, config.node.labels);
        assert_eq!(again.node.id, "gw-1");
        assert_eq!(again.report.interval, config.report.interval);
    }
}
