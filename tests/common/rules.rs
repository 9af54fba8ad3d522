//! An independent checker of the document rules, written from the rule
//! list of `docs/control-plane.md` and not from `src/validate.rs`: it works on the raw JSON value
//! and shares no code with the sidecar. The fuzz targets use it both ways:
//! every document the sidecar accepts must pass it, and every readable
//! document that passes it must be accepted.

use std::collections::HashSet;

use serde_json::{Map, Value};

const KINDS: [&str; 3] = ["prompts", "routing_rules", "providers"];

/// The first rule `doc` breaks, or `None` when it keeps every rule.
pub fn violation(doc: &Value) -> Option<String> {
    check(doc).err()
}

fn check(doc: &Value) -> Result<(), String> {
    let id = doc["id"].as_str().ok_or("project id is not a string")?;
    if !id_ok(id) {
        return Err(format!("project id {id:?}"));
    }
    let envs = doc["environments"]
        .as_array()
        .ok_or("environments is not an array")?;
    if envs.len() < 2 || envs.len() > 256 {
        return Err(format!("{} environments", envs.len()));
    }
    let mut ids = HashSet::new();
    let mut slugs = HashSet::new();
    let (mut fallbacks, mut targets) = (0, 0);
    for env in envs {
        let env_id = text(env, "id")?;
        let slug = text(env, "slug")?;
        if !id_ok(env_id) {
            return Err(format!("environment id {env_id:?}"));
        }
        if !slug_ok(slug) {
            return Err(format!("slug {slug:?}"));
        }
        if !ids.insert(env_id) {
            return Err(format!("duplicate environment id {env_id:?}"));
        }
        if !slugs.insert(slug) {
            return Err(format!("duplicate slug {slug:?}"));
        }
        let reserved = slug == "prod" || slug == "staging";
        if flag(env, "system") != reserved {
            return Err(format!("system flag on {slug:?}"));
        }
        let name = text(env, "name")?.chars().count();
        if !(1..=64).contains(&name) {
            return Err(format!("name of {slug:?} has {name} characters"));
        }
        if let Some(d) = env.get("description").and_then(Value::as_str) {
            if d.chars().count() > 280 {
                return Err(format!("description of {slug:?}"));
            }
        }
        let color = text(env, "color")?;
        let hex = |c: char| c.is_ascii_digit() || ('a'..='f').contains(&c.to_ascii_lowercase());
        if color.len() != 7 || !color.starts_with('#') || !color[1..].chars().all(hex) {
            return Err(format!("color {color:?}"));
        }
        fallbacks += usize::from(flag(env, "gateway_fallback"));
        targets += usize::from(flag(env, "default_publish_target"));

        let mut keys: HashSet<(String, String)> = HashSet::new();
        let empty = Map::new();
        let pointers = env["pointers"].as_object().unwrap_or(&empty);
        let mut direct = 0;
        for kind in KINDS {
            for (key, value) in pointers
                .get(kind)
                .and_then(Value::as_object)
                .unwrap_or(&empty)
            {
                pointer_ok(key, value)?;
                keys.insert((kind.to_string(), key.clone()));
                direct += 1;
            }
        }
        if direct > 4096 {
            return Err(format!("{direct} pointers in {slug:?}"));
        }
        for change in env["scheduled"].as_array().map_or(&[][..], Vec::as_slice) {
            let at = change["at"]
                .as_str()
                .ok_or("scheduled at is not a string")?;
            if !timestamp_ok(at) {
                return Err(format!("scheduled at {at:?}"));
            }
            let overlay = change["pointers"].as_object().unwrap_or(&empty);
            for (kind, map) in overlay {
                if !KINDS.contains(&kind.as_str()) {
                    return Err(format!("scheduled kind {kind:?}"));
                }
                for (key, value) in map.as_object().unwrap_or(&empty) {
                    pointer_ok(key, value)?;
                    keys.insert((kind.clone(), key.clone()));
                }
            }
        }
        if keys.len() > 4096 {
            return Err(format!(
                "{} pointers with schedules in {slug:?}",
                keys.len()
            ));
        }
    }
    for reserved in ["prod", "staging"] {
        if !slugs.contains(reserved) {
            return Err(format!("{reserved} is missing"));
        }
    }
    if fallbacks != 1 {
        return Err(format!("{fallbacks} gateway fallbacks"));
    }
    if targets != 1 {
        return Err(format!("{targets} publish targets"));
    }
    Ok(())
}

fn text<'a>(env: &'a Value, field: &str) -> Result<&'a str, String> {
    env[field]
        .as_str()
        .ok_or_else(|| format!("{field} is not a string"))
}

fn flag(env: &Value, field: &str) -> bool {
    env[field].as_bool().unwrap_or(false)
}

fn id_ok(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn slug_ok(slug: &str) -> bool {
    let mut chars = slug.chars();
    slug.len() <= 64
        && chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && !slug.ends_with('-')
        && slug
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

fn pointer_ok(key: &str, value: &Value) -> Result<(), String> {
    let keylen = key.chars().count();
    if keylen == 0 || keylen > 128 || key.chars().any(char::is_control) {
        return Err(format!("pointer key {key:?}"));
    }
    let v = value.as_str().ok_or("pointer value is not a string")?;
    if v.is_empty() || v.len() > 128 || !v.chars().all(|c| (' '..='~').contains(&c)) {
        return Err(format!("pointer value {v:?}"));
    }
    Ok(())
}

/// `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`, a real calendar date, not
/// before 1970-01-01T00:00:00Z.
pub fn timestamp_ok(at: &str) -> bool {
    let c: Vec<char> = at.chars().collect();
    let num = |from: usize, len: usize| -> Option<i64> {
        let s: String = c.get(from..from + len)?.iter().collect();
        s.chars()
            .all(|d| d.is_ascii_digit())
            .then(|| s.parse().ok())?
    };
    let sep = |i: usize, want: &[char]| c.get(i).is_some_and(|x| want.contains(x));
    let (Some(y), Some(mo), Some(d), Some(h), Some(mi), Some(s)) = (
        num(0, 4),
        num(5, 2),
        num(8, 2),
        num(11, 2),
        num(14, 2),
        num(17, 2),
    ) else {
        return false;
    };
    let separators = [(4, '-'), (7, '-'), (13, ':'), (16, ':')];
    if !separators.iter().all(|&(i, c)| sep(i, &[c])) || !sep(10, &['T', 't', ' ']) {
        return false;
    }
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let month_days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if !(1..=12).contains(&mo) || d < 1 || d > month_days[(mo - 1) as usize] {
        return false;
    }
    if h > 23 || mi > 59 || s > 60 {
        return false;
    }
    let mut i = 19;
    if sep(i, &['.']) {
        i += 1;
        let start = i;
        while c.get(i).is_some_and(|x| x.is_ascii_digit()) {
            i += 1;
        }
        if i == start {
            return false;
        }
    }
    let offset = match c.get(i) {
        Some('Z' | 'z') if i + 1 == c.len() => 0,
        Some(sign @ ('+' | '-')) if i + 6 == c.len() && sep(i + 3, &[':']) => {
            let (Some(oh), Some(om)) = (num(i + 1, 2), num(i + 4, 2)) else {
                return false;
            };
            if oh > 23 || om > 59 {
                return false;
            }
            if *sign == '+' {
                oh * 60 + om
            } else {
                -(oh * 60 + om)
            }
        }
        _ => return false,
    };
    // Seconds since the epoch, counted year by year (not the sidecar's way).
    let mut days = 0i64;
    for year in y.min(1970)..y.max(1970) {
        let len = if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 {
            366
        } else {
            365
        };
        days += if y < 1970 { -len } else { len };
    }
    days += month_days[..(mo - 1) as usize].iter().sum::<i64>() + d - 1;
    days * 86_400 + h * 3600 + mi * 60 + s - offset * 60 >= 0
}
