//! Reading request input from a query string and headers, without building
//! maps: one pass over `a=b&c=d`, percent-decoding only values that need
//! it. Shared by both planes, so a repeated parameter is a `400`
//! everywhere.

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

/// Reads the parameters `names` from a query string, each percent-decoded;
/// other parameters are ignored. A parameter given twice, or a value that
/// is not UTF-8 once decoded, is an error.
pub fn params<'a, const N: usize>(
    query: &'a str,
    names: [&str; N],
) -> Result<[Option<Cow<'a, str>>; N], String> {
    let mut out = [const { None }; N];
    // Byte scanning: `&` and `=` are ASCII, so every cut is on a char
    // boundary (this runs on every resolve).
    let bytes = query.as_bytes();
    let mut start = 0;
    while start < bytes.len() {
        let end = bytes[start..]
            .iter()
            .position(|&b| b == b'&')
            .map_or(bytes.len(), |i| start + i);
        let pair = &query[start..end];
        start = end + 1;
        if pair.is_empty() {
            continue;
        }
        let (key, value) = match pair.as_bytes().iter().position(|&b| b == b'=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, ""),
        };
        let Some(slot) = names.iter().position(|n| *n == key) else {
            continue;
        };
        if out[slot].is_some() {
            return Err(format!("parameter {key:?} is repeated"));
        }
        out[slot] = Some(decode_param(key, value)?);
    }
    Ok(out)
}

/// `true` / `false` (absent: false).
pub fn flag(name: &str, value: Option<&str>) -> Result<bool, String> {
    match value {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(_) => Err(format!("parameter {name:?} must be true or false")),
    }
}

/// Parses `project`, `environment` and `strict` from a query string.
pub fn parse_query(query: &str) -> Result<ResolveQuery<'_>, String> {
    let [project, environment, strict] = params(query, ["project", "environment", "strict"])?;
    Ok(ResolveQuery {
        project,
        environment,
        strict: flag("strict", strict.as_deref())?,
    })
}

/// Percent-decodes a query value (borrowing when nothing is escaped).
pub fn decode_param<'a>(key: &str, value: &'a str) -> Result<Cow<'a, str>, String> {
    if !value.as_bytes().contains(&b'%') {
        return Ok(Cow::Borrowed(value));
    }
    percent_decode_str(value)
        .decode_utf8()
        .map_err(|_| format!("parameter {key:?} is not valid UTF-8 once percent-decoded"))
}

/// A request's headers, as hyper's map holds them or as the HTTP/1.1 hot
/// path parsed them in place (`super::hot`): one rule reads both.
pub trait Headers {
    /// Every value of header `name`, in the order received.
    fn values<'s>(&'s self, name: &HeaderName) -> impl Iterator<Item = &'s [u8]>;
}

impl Headers for HeaderMap {
    fn values<'s>(&'s self, name: &HeaderName) -> impl Iterator<Item = &'s [u8]> {
        self.get_all(name).iter().map(|v| v.as_bytes())
    }
}

impl Headers for [httparse::Header<'_>] {
    fn values<'s>(&'s self, name: &HeaderName) -> impl Iterator<Item = &'s [u8]> {
        let name = name.as_str();
        self.iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    }
}

/// The single value of header `name`, if present. A header that arrives
/// more than once is an error: a proxy that appends its own value to the
/// client's cannot be told apart from the client, so no copy is trusted.
pub fn single_header<'a, H: Headers + ?Sized>(
    headers: &'a H,
    name: &HeaderName,
) -> Result<Option<&'a str>, String> {
    let mut values = headers.values(name);
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(format!("header {name} is repeated"));
    }
    visible_ascii(value)
        .map(Some)
        .ok_or_else(|| format!("header {name} must be visible ASCII"))
}

/// `value` as text when it is visible ASCII or tabs, the rule of
/// `HeaderValue::to_str`.
fn visible_ascii(value: &[u8]) -> Option<&str> {
    value
        .iter()
        .all(|&b| b == b'\t' || (0x20..0x7f).contains(&b))
        .then(|| std::str::from_utf8(value).ok())
        .flatten()
}

/// Fills what the query left out from the configured headers.
pub fn fill_from_headers<'a, H: Headers + ?Sized>(
    query: &mut ResolveQuery<'a>,
    headers: &'a H,
    project_header: &HeaderName,
    environment_header: &HeaderName,
) -> Result<(), String> {
    for (slot, name) in [
        (&mut query.project, project_header),
        (&mut query.environment, environment_header),
    ] {
        // Checked even when the query has the value: a repeated identity
        // header is refused however the request is made.
        let value = single_header(headers, name)?;
        if slot.is_none() {
            *slot = value.map(Cow::Borrowed);
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
        assert!(params("a=1&b=2&a=1", ["a"]).is_err());
    }

    #[test]
    fn a_repeated_identity_header_is_refused() {
        let name = HeaderName::from_static("x-project-id");
        let mut headers = HeaderMap::new();
        headers.append(&name, "acme".parse().unwrap());
        assert_eq!(single_header(&headers, &name), Ok(Some("acme")));
        headers.append(&name, "globex".parse().unwrap());
        assert!(single_header(&headers, &name).is_err());
        let mut q = ResolveQuery {
            project: Some(Cow::Borrowed("from-query")),
            ..ResolveQuery::default()
        };
        let env = HeaderName::from_static("x-environment");
        assert!(fill_from_headers(&mut q, &headers, &name, &env).is_err());
    }
}
