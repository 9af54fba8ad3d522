//! The pointers of a pre-rendered answer, read back without parsing the
//! document: the answer's `x-resolved-pointers` text, which the project
//! rendered itself (serde_json, three maps in a fixed order, keys
//! sorted), so a lookup is a scan of that text, and borrows from it. Only
//! a key or value that needed escaping in JSON (a `"`, a `\`, or a
//! character beyond ASCII) comes back owned.
//!
//! This is for embedders that want one pointer out of an answer, and for
//! the gRPC `Check` reply's metadata struct; the HTTP path never reads it.

use std::borrow::Cow;

/// The three pointer maps, in the order answers render them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PointerKind {
    Prompts,
    RoutingRules,
    Providers,
}

impl PointerKind {
    pub const ALL: [PointerKind; 3] = [
        PointerKind::Prompts,
        PointerKind::RoutingRules,
        PointerKind::Providers,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PointerKind::Prompts => "prompts",
            PointerKind::RoutingRules => "routing_rules",
            PointerKind::Providers => "providers",
        }
    }
}

/// Every `(kind, key, value)` of a pointers object, in rendering order.
#[derive(Debug, Clone)]
pub struct PointerIter<'a> {
    rest: &'a str,
    kind: usize,
}

impl<'a> PointerIter<'a> {
    pub fn new(json: &'a str) -> PointerIter<'a> {
        PointerIter {
            // Past the outer `{`.
            rest: json.get(1..).unwrap_or(""),
            kind: 0,
        }
    }
}

impl<'a> Iterator for PointerIter<'a> {
    type Item = (PointerKind, Cow<'a, str>, Cow<'a, str>);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let rest = self.rest.trim_start_matches(',');
            if let Some(after) = rest.strip_prefix('}') {
                // The end of a kind's map.
                self.rest = after;
                self.kind += 1;
                continue;
            }
            let (name, after) = string(rest)?;
            let after = after.strip_prefix(':')?;
            if let Some(inner) = after.strip_prefix('{') {
                // A kind's name: its map follows.
                debug_assert_eq!(name, PointerKind::ALL.get(self.kind)?.as_str());
                self.rest = inner;
                continue;
            }
            let (value, after) = string(after)?;
            self.rest = after;
            return Some((*PointerKind::ALL.get(self.kind)?, name, value));
        }
    }
}

/// One JSON string at the start of `text`: its value and what follows.
fn string(text: &str) -> Option<(Cow<'_, str>, &str)> {
    let body = text.strip_prefix('"')?;
    let bytes = body.as_bytes();
    // The common case, found with one vectorised search: no escape
    // before the closing quote.
    let first = memchr::memchr2(b'"', b'\\', bytes)?;
    if bytes[first] == b'"' {
        return Some((Cow::Borrowed(&body[..first]), &body[first + 1..]));
    }
    let mut i = first;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'"' => {
                // Rare: a `"` or `\` in a key or value.
                let value = serde_json::from_str(&text[..i + 2]).ok()?;
                return Some((Cow::Owned(value), &body[i + 1..]));
            }
            _ => i += 1,
        }
    }
    None
}

/// The value of `key` in the `kind` map, if there is one.
pub fn lookup<'a>(json: &'a str, kind: PointerKind, key: &str) -> Option<Cow<'a, str>> {
    PointerIter::new(json)
        .skip_while(|(k, _, _)| *k != kind)
        .take_while(|(k, _, _)| *k == kind)
        .find(|(_, k, _)| k == key)
        .map(|(_, _, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    const JSON: &str = r#"{"prompts":{"a":"1","q\"uote":"x\\y"},"routing_rules":{},"providers":{"openai":"act-9"}}"#;

    #[test]
    fn every_pointer_is_read_back_in_order() {
        let all: Vec<_> = PointerIter::new(JSON)
            .map(|(k, key, v)| (k, key.into_owned(), v.into_owned()))
            .collect();
        assert_eq!(
            all,
            [
                (PointerKind::Prompts, "a".into(), "1".into()),
                (PointerKind::Prompts, "q\"uote".into(), "x\\y".into()),
                (PointerKind::Providers, "openai".into(), "act-9".into()),
            ]
        );
    }

    #[test]
    fn lookups_borrow_unless_escaped() {
        assert!(matches!(
            lookup(JSON, PointerKind::Prompts, "a"),
            Some(Cow::Borrowed("1"))
        ));
        assert_eq!(
            lookup(JSON, PointerKind::Prompts, "q\"uote").as_deref(),
            Some("x\\y")
        );
        assert_eq!(
            lookup(JSON, PointerKind::Providers, "openai").as_deref(),
            Some("act-9")
        );
        assert_eq!(lookup(JSON, PointerKind::RoutingRules, "a"), None);
        assert_eq!(lookup(JSON, PointerKind::Providers, "a"), None);
    }
}
