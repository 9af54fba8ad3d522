//! Secrets (bearer tokens, passwords): read only from environment
//! variables named in the config, never printed (`Debug` shows `***`),
//! compared in constant time.
//!
//! Lookups go through [`Env`], so an embedding program or a test can hand
//! the sidecar its secrets without touching the process environment
//! (which is shared by every thread and racy to change).

use std::collections::HashMap;
use std::sync::Arc;

use subtle::ConstantTimeEq;

#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// True when `Authorization` is exactly `Bearer <secret>`. The
    /// comparison of the token takes the same time wherever it differs.
    pub fn matches_bearer(&self, authorization: Option<&[u8]>) -> bool {
        let Some(value) = authorization else {
            return false;
        };
        let Some(token) = value.strip_prefix(b"Bearer ") else {
            return false;
        };
        token.ct_eq(self.0.as_bytes()).into()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Where secrets are looked up by variable name.
#[derive(Clone, Default)]
pub struct Env {
    /// `None`: the process environment.
    vars: Option<Arc<HashMap<String, String>>>,
}

impl Env {
    /// The process environment.
    pub fn process() -> Env {
        Env { vars: None }
    }

    /// Exactly these variables, nothing from the process.
    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Env {
        Env {
            vars: Some(Arc::new(
                pairs
                    .into_iter()
                    .map(|(k, v)| (k.into(), v.into()))
                    .collect(),
            )),
        }
    }

    /// The secret in variable `name`; an empty name, an unset or an empty
    /// variable means none.
    pub fn secret(&self, name: &str) -> Option<Secret> {
        self.value(name).map(Secret)
    }

    /// The value of variable `name`, not a secret (a node id); an empty
    /// name, an unset or an empty variable means none.
    pub fn value(&self, name: &str) -> Option<String> {
        if name.is_empty() {
            return None;
        }
        let value = match &self.vars {
            None => std::env::var(name).ok(),
            Some(vars) => vars.get(name).cloned(),
        };
        value.filter(|v| !v.is_empty())
    }
}

impl std::fmt::Debug for Env {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.vars {
            None => f.write_str("Env(process)"),
            Some(vars) => f
                .debug_set()
                .entries(vars.keys().map(|k| format!("{k}=***")))
                .finish(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_matching() {
        let s = Secret::new("t0ken");
        assert!(s.matches_bearer(Some(b"Bearer t0ken")));
        for bad in [
            &b"Bearer t0ke"[..],
            b"Bearer t0ken2",
            b"bearer t0ken",
            b"t0ken",
            b"Bearer ",
            b"",
        ] {
            assert!(
                !s.matches_bearer(Some(bad)),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(!s.matches_bearer(None));
        assert_eq!(format!("{s:?}"), "Secret(***)");
    }

    #[test]
    fn injected_variables_replace_the_process_environment() {
        let env = Env::from_pairs([("TOKEN", "abc"), ("EMPTY", "")]);
        assert_eq!(env.secret("TOKEN").map(|s| s.0), Some("abc".into()));
        assert!(env.secret("EMPTY").is_none());
        assert!(env.secret("PATH").is_none(), "must not read the process");
        assert!(env.secret("").is_none());
        assert!(!format!("{env:?}").contains("abc"));
    }
}
