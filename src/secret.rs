//! Secrets (bearer tokens): read only from environment variables, never
//! printed (`Debug` shows `***`), compared in constant time.

use subtle::ConstantTimeEq;

#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    /// Reads the variable `name`; unset or empty means no secret.
    pub fn from_env(name: &str) -> Option<Secret> {
        if name.is_empty() {
            return None;
        }
        std::env::var(name)
            .ok()
            .filter(|v| !v.is_empty())
            .map(Secret)
    }

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
}
