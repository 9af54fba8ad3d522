//! `env-sidecar check-config`: the effective settings after every check
//! the sidecar makes at start, as TOML written from the config's own
//! types (secrets only as set / unset, in comments after it).

use crate::app::{preflight, StartError};
use crate::config::secret::Env;
use crate::config::{Config, Source};

/// The effective configuration as a TOML document, then a comment line
/// per variable that names a secret saying whether it is set, and one per
/// note a start would log. Every check a start makes of the config runs
/// first ([`preflight`]): an error is the start's own.
pub fn render(config: &Config, env: &Env, source_path: &str) -> Result<String, StartError> {
    let notes = preflight(config, env)?;
    let state = |name: &str| {
        if env.secret(name).is_some() {
            "set"
        } else {
            "unset"
        }
    };
    let mut secrets = vec![("admin.token_env", config.admin.token_env.as_str())];
    match &config.source.kind {
        Source::File(_) => {}
        Source::Http(h) => secrets.push(("source.token_env", &h.token_env)),
        Source::Redis(r) => secrets.push(("source.token_env", &r.token_env)),
    }
    if let Some(r) = &config.report.redis {
        secrets.push(("report.token_env", &r.token_env));
    }
    let mut out = format!("# effective configuration ({source_path}); every check passed\n");
    out.push_str(&config.to_toml());
    out.push_str("\n# secrets (never printed):\n");
    for (key, var) in secrets {
        out.push_str(&format!("#   {key} = {var}: {}\n", state(var)));
    }
    let port = config.server.listen.port();
    if let Ok(id) = config.node.resolve_id(env, port) {
        out.push_str(&format!("# node id: {id}\n"));
    }
    for note in notes {
        out.push_str(&format!("# note: {note}\n"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn the_rendering_reads_back_as_the_same_config() {
        // The start reads the keys, so they must be there.
        let dir = tempfile::tempdir().unwrap();
        let (a, keys) = (dir.path().join("a.pub"), dir.path().join("keys"));
        std::fs::create_dir(&keys).unwrap();
        let public = crate::model::keys::generate(Some("a")).unwrap().1;
        std::fs::write(&a, public.to_pem()).unwrap();
        let config = Config::from_toml(
            &format!(
                "[source]\npoll_interval = \"250ms\"\n[log]\nformat = \"json\"\n\
                 [trust]\nkeys = [{:?}, {:?}]\nrequire_signatures = true\n\
                 [node]\nid = \"gw-1\"\nlabels = {{ region = \"eu\", zone = \"b\" }}\n\
                 [report]\ninterval = \"20s\"\n",
                a.display().to_string(),
                format!("{}/", keys.display())
            ),
            Path::new("x.toml"),
        )
        .unwrap();
        let env = Env::from_pairs([("ENV_SIDECAR_ADMIN_TOKEN", "t")]);
        let text = render(&config, &env, "x.toml").unwrap();
        assert!(
            text.contains("#   admin.token_env = ENV_SIDECAR_ADMIN_TOKEN: set"),
            "{text}"
        );
        assert!(!text.contains("\"t\""), "never the secret itself");
        assert!(text.contains("# node id: gw-1\n"), "{text}");
        let again = Config::from_toml(&text, Path::new("rendered")).unwrap();
        assert_eq!(again.source, config.source);
        assert_eq!(again.log.format, config.log.format);
        assert_eq!(again.admin.listen, config.admin.listen);
        assert_eq!(again.trust.keys, config.trust.keys);
        assert!(again.trust.require_signatures);
        assert_eq!(again.node.labels, config.node.labels);
        assert_eq!(again.node.id, "gw-1");
        assert_eq!(again.report.interval, config.report.interval);
    }
}
