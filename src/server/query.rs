//! Reading a resolve request from a query string and headers, without
//! building maps: one pass over `a=b&c=d`, percent-decoding only values
//! that need it.

use std::borrow::Cow;

use http::{HeaderMap, HeaderName};
use percent_encoding::percent_decode_str;

/// A resolve request as the client sent it (not yet syntax-checked).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ResolveQuery<'a> {
    pub project: Option<Cow<'a, str>>,
    pub environment: Option<Cow<'a, str>>,
    pub strict: bool,
}

/// Parses `project`, `environment` and `strict` from a query string; other
/// parameters are ignored. A repeated parameter, a value that is not UTF-8
/// once decoded, or a `strict` other than `true`/`false` is an error.
pub fn parse_query(query: &str) -> Result<ResolveQuery<'_>, String> {
    let mut out = ResolveQuery::default();
    let mut strict_seen = false;
    for pair in query.split('&') {
        if pair.is_empty() {
            continue;
        }
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let slot = match key {
            "project" => &mut out.project,
            "environment" => &mut out.environment,
            "strict" => {
                if strict_seen {
                    return Err("parameter \"strict\" is repeated".into());
                }
                strict_seen = true;
                out.strict = match value {
                    "true" => true,
                    "false" => false,
                    _ => return Err("parameter \"strict\" must be true or false".into()),
                };
                continue;
            }
            _ => continue,
        };
        if slot.is_some() {
            return Err(format!("parameter {key:?} is repeated"));
        }
        *slot = Some(decode_param(key, value)?);
    }
    Ok(out)
}

/// Percent-decodes a query value (borrowing when nothing is escaped).
pub fn decode_param<'a>(key: &str, value: &'a str) -> Result<Cow<'a, str>, String> {
    if !value.contains('%') {
        return Ok(Cow::Borrowed(value));
    }
    percent_decode_str(value)
        .decode_utf8()
        .map_err(|_| format!("parameter {key:?} is not valid UTF-8 once percent-decoded"))
}

/// Fills what the query left out from the configured headers.
pub fn fill_from_headers<'a>(
    query: &mut ResolveQuery<'a>,
    headers: &'a HeaderMap,
    project_header: &HeaderName,
    environment_header: &HeaderName,
) -> Result<(), String> {
    for (slot, name) in [
        (&mut query.project, project_header),
        (&mut query.environment, environment_header),
    ] {
        if slot.is_none() {
            if let Some(value) = headers.get(name) {
                let text = value
                    .to_str()
                    .map_err(|_| format!("header {name} must be visible ASCII"))?;
                *slot = Some(Cow::Borrowed(text));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_three_parameters_and_ignores_others() {
        let q = parse_query("x=1&project=acme&environment=QA&strict=true&&y").unwrap();
        assert_eq!(q.project.as_deref(), Some("acme"));
        assert_eq!(q.environment.as_deref(), Some("QA"));
        assert!(q.strict);
    }

    #[test]
    fn decodes_percent_escapes_only_when_present() {
        let q = parse_query("project=ac%6De").unwrap();
        assert_eq!(q.project.as_deref(), Some("acme"));
        assert!(matches!(
            parse_query("project=acme").unwrap().project,
            Some(Cow::Borrowed(_))
        ));
    }

    #[test]
    fn refuses_repeats_bad_utf8_and_bad_strict() {
        assert!(parse_query("project=a&project=b").is_err());
        assert!(parse_query("project=%FF%FE").is_err());
        assert!(parse_query("strict=yes").is_err());
        assert!(parse_query("strict=true&strict=false").is_err());
    }
}
