//! The files operator commands read: a snapshot body, a single project
//! document or a single signed envelope, from a path or stdin (`-`),
//! checked to be JSON as it is read; and how their output quotes values.

use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::model::wire::{parse_element, parse_snapshot, Incoming};

/// A file or `-` for stdin.
#[derive(Debug, Clone)]
pub enum Input {
    Stdin,
    File(PathBuf),
}

impl Input {
    pub fn parse(arg: &Path) -> Input {
        if arg == Path::new("-") {
            Input::Stdin
        } else {
            Input::File(arg.to_owned())
        }
    }

    pub fn name(&self) -> String {
        match self {
            Input::Stdin => "-".into(),
            Input::File(p) => p.display().to_string(),
        }
    }
}

/// Why a file could not be judged at all.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("cannot read it: {0}")]
    Read(#[source] std::io::Error),
    #[error("is a directory")]
    Directory,
    #[error("is empty")]
    Empty,
    #[error("is not JSON: {0}")]
    NotJson(#[source] serde_json::Error),
    #[error("is neither a snapshot body {{\"revision\", \"projects\"}}, a project document {{\"id\", \"revision\", \"environments\"}} nor a signed envelope {{\"payloadType\", \"payload\", \"signatures\"}}")]
    Shape,
    #[error("{0}")]
    Malformed(#[source] crate::model::wire::MalformedBody),
}

/// `key=value` values: bare when plain, else a JSON string.
pub fn quoted(text: &str) -> String {
    if !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:".contains(&b))
    {
        text.to_owned()
    } else {
        serde_json::to_string(text).unwrap_or_default()
    }
}

/// The whole input, checked to be JSON while it is read: garbage fails at
/// its first bad byte, without reading (or holding) the rest.
pub fn read(input: &Input) -> Result<Box<RawValue>, InputError> {
    let reader: Box<dyn Read> = match input {
        Input::Stdin => Box::new(std::io::stdin().lock()),
        Input::File(path) => {
            let meta = std::fs::metadata(path).map_err(InputError::Read)?;
            if meta.is_dir() {
                return Err(InputError::Directory);
            }
            if meta.len() == 0 {
                return Err(InputError::Empty);
            }
            Box::new(std::fs::File::open(path).map_err(InputError::Read)?)
        }
    };
    let mut de = serde_json::Deserializer::from_reader(BufReader::with_capacity(64 * 1024, reader));
    let raw = Box::<RawValue>::deserialize(&mut de).map_err(|e| {
        if e.is_eof() && e.line() == 1 && e.column() == 0 {
            InputError::Empty
        } else {
            InputError::NotJson(e)
        }
    })?;
    de.end().map_err(InputError::NotJson)?;
    Ok(raw)
}

/// The `revision` of a snapshot body; `None` for a single document.
pub fn snapshot_revision(raw: &RawValue) -> Option<u64> {
    #[derive(Deserialize)]
    struct Head {
        revision: u64,
        #[allow(dead_code)]
        projects: serde::de::IgnoredAny,
    }
    serde_json::from_str::<Head>(raw.get())
        .ok()
        .map(|h| h.revision)
}

/// The project elements of a snapshot body, or the single document or
/// envelope.
#[allow(clippy::boxed_local)] // the box is what `read` hands over
pub fn documents(raw: Box<RawValue>) -> Result<Vec<Incoming>, InputError> {
    #[derive(Deserialize)]
    struct Shape {
        #[serde(default)]
        projects: Option<serde::de::IgnoredAny>,
        #[serde(default)]
        environments: Option<serde::de::IgnoredAny>,
        #[serde(default, rename = "payloadType")]
        payload_type: Option<serde::de::IgnoredAny>,
    }
    let shape: Shape = serde_json::from_str(raw.get()).map_err(|_| InputError::Shape)?;
    if shape.projects.is_some() {
        Ok(parse_snapshot(raw.get().as_bytes())
            .map_err(InputError::Malformed)?
            .projects)
    } else if shape.environments.is_some() || shape.payload_type.is_some() {
        Ok(vec![
            parse_element(raw.get()).map_err(InputError::Malformed)?
        ])
    } else {
        Err(InputError::Shape)
    }
}
