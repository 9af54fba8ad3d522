//! The trusted keys: read from the files and folders `[trust] keys`
//! names, and read again whenever one of them changes, so a key is
//! rotated without a restart (add the new key, publish with it, remove
//! the old one).
//!
//! A folder contributes every `*.pub` and `*.pem` file in it; a file may
//! hold several keys. A file in a folder that holds no Ed25519 `PUBLIC
//! KEY` block at all (an OpenSSH `.pub`, a certificate) is skipped with a
//! warning; a file named on its own must be a key file. A change that
//! does not read (a half-written file, a key id naming two keys, no key
//! left while signatures are required) is logged and shown in
//! `/admin/status`, and the keys in use stay as they were; the next good
//! read clears that error. New keys reach the writer as a command, behind whatever it
//! was already doing; documents are never checked on a request thread.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use super::status::Activity;
use super::writer::WriterHandle;
use crate::model::clock::SharedClock;
use crate::model::keys::{self, KeyError, PublicKey};
use crate::model::trust::Trust;

/// Why the key files could not be read.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("trust key {path}: cannot read it: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("trust key {path}: {source}")]
    Parse { path: PathBuf, source: KeyError },
    #[error("trust keys: {0}")]
    Ring(KeyError),
    #[error("trust keys: no key found in {0}, and trust.require_signatures is on")]
    Empty(String),
}

/// What the key files hold.
#[derive(Debug, Default)]
pub struct Loaded {
    pub keys: Vec<PublicKey>,
    /// Files in key folders that hold no key, and why (warnings).
    pub skipped: Vec<String>,
}

impl Loaded {
    /// Logs each skipped file.
    pub fn warn(&self) {
        for why in &self.skipped {
            tracing::warn!(file = %why, "not a key file; skipped");
        }
    }
}

/// Every key the files named by `paths` hold, and the files in folders
/// that were skipped as not key files.
pub fn load(paths: &[PathBuf], require: bool) -> Result<Loaded, KeyFileError> {
    let mut all = Vec::new();
    let mut skipped = Vec::new();
    for (path, in_folder) in files(paths)? {
        let text = std::fs::read(&path).map_err(|source| KeyFileError::Read {
            path: path.clone(),
            source,
        })?;
        let text = String::from_utf8_lossy(&text);
        match keys::parse_public(&text) {
            Ok(found) => all.extend(found),
            Err(e @ (KeyError::NoKey(_) | KeyError::NotEd25519Public)) if in_folder => {
                skipped.push(format!("{}: {e}", path.display()));
            }
            Err(source) => {
                return Err(KeyFileError::Parse {
                    path: path.clone(),
                    source,
                })
            }
        }
    }
    let ring = keys::ring_of(all).map_err(KeyFileError::Ring)?;
    if ring.is_empty() && require {
        let named: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        return Err(KeyFileError::Empty(named.join(", ")));
    }
    Ok(Loaded {
        keys: ring,
        skipped,
    })
}

/// The key files `paths` stand for: each file itself, each folder's
/// `*.pub` and `*.pem` files (sorted), and whether it was found in a
/// folder.
fn files(paths: &[PathBuf]) -> Result<Vec<(PathBuf, bool)>, KeyFileError> {
    let mut out = Vec::new();
    for path in paths {
        if !path.is_dir() {
            out.push((path.clone(), false));
            continue;
        }
        let entries = std::fs::read_dir(path).map_err(|source| KeyFileError::Read {
            path: path.clone(),
            source,
        })?;
        let mut found: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "pub" || e == "pem"))
            .collect();
        found.sort();
        out.extend(found.into_iter().map(|p| (p, true)));
    }
    Ok(out)
}

/// A file's size and modification time.
type Stat = (u64, Option<SystemTime>);

/// Size and modification time of every file the paths stand for (and
/// the folders' listings): a change in any of them means read again.
fn fingerprint(paths: &[PathBuf]) -> Vec<(PathBuf, Option<Stat>)> {
    let stat = |p: &Path| {
        std::fs::metadata(p)
            .ok()
            .map(|m| (m.len(), m.modified().ok()))
    };
    let mut out: Vec<_> = paths.iter().map(|p| (p.clone(), stat(p))).collect();
    if let Ok(listed) = files(paths) {
        out.extend(listed.into_iter().map(|(p, _)| {
            let s = stat(&p);
            (p, s)
        }));
    }
    out
}

/// What `/admin/status` shows of the trust in use.
#[derive(Debug, Default)]
pub struct TrustState {
    keys: Mutex<TrustKeys>,
    /// Key file reads: a success when the keys changed, an error when the
    /// files did not read.
    pub reloads: Activity,
}

/// What is trusted now.
#[derive(Debug, Default, Clone)]
pub struct TrustKeys {
    pub keyids: Vec<String>,
    pub require_signatures: bool,
    pub max_signature_age: Option<Duration>,
}

impl TrustState {
    pub fn new(trust: &Trust) -> TrustState {
        TrustState {
            keys: Mutex::new(TrustKeys {
                keyids: trust.keys().iter().map(|k| k.keyid.clone()).collect(),
                require_signatures: trust.require_signatures,
                max_signature_age: trust.max_signature_age,
            }),
            reloads: Activity::default(),
        }
    }

    pub fn keys(&self) -> TrustKeys {
        crate::lock::lock(&self.keys).clone()
    }
}

/// Watches the key files and hands new keys to the writer.
#[derive(Debug)]
pub struct KeyWatcher {
    pub paths: Vec<PathBuf>,
    /// The trust in use (its keys are replaced on a change).
    pub trust: Trust,
    pub writer: WriterHandle,
    pub state: Arc<TrustState>,
    pub clock: SharedClock,
    /// How often the files are looked at.
    pub interval: Duration,
}

impl KeyWatcher {
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let mut seen = fingerprint(&self.paths);
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.interval) => {}
                _ = shutdown.changed() => return,
            }
            let now = fingerprint(&self.paths);
            if now == seen {
                continue;
            }
            seen = now;
            self.reload();
        }
    }

    /// Reads the files again; on success the writer gets the new keys.
    fn reload(&mut self) {
        let at = self.clock.now();
        match load(&self.paths, self.trust.require_signatures) {
            Ok(loaded) => {
                loaded.warn();
                // The files read again: whatever failed before is over.
                self.state.reloads.clear_error();
                let keys = loaded.keys;
                let ids = |keys: &[PublicKey]| -> Vec<String> {
                    keys.iter().map(|k| k.keyid.clone()).collect()
                };
                let (old, new) = (ids(self.trust.keys()), ids(&keys));
                if old == new && self.trust.keys() == keys.as_slice() {
                    return;
                }
                let added: Vec<&String> = new.iter().filter(|k| !old.contains(k)).collect();
                let removed: Vec<&String> = old.iter().filter(|k| !new.contains(k)).collect();
                let message = format!(
                    "keys now {}; added {added:?}, removed {removed:?}",
                    new.join(", ")
                );
                self.trust = self.trust.with_keys(keys);
                if self.writer.set_trust(Arc::new(self.trust.clone())).is_err() {
                    return;
                }
                tracing::info!(keys = ?new, added = ?added, removed = ?removed, "trusted keys changed");
                crate::lock::lock(&self.state.keys).keyids = new;
                self.state.reloads.success(at, message);
            }
            Err(e) => {
                tracing::warn!(error = %e, "trusted keys not changed: the key files do not read");
                self.state.reloads.error(at, e.to_string());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_and_folders_of_keys_load_and_broken_ones_say_which() {
        let dir = tempfile::tempdir().unwrap();
        let (_, a) = keys::generate(Some("a")).unwrap();
        let (_, b) = keys::generate(Some("b")).unwrap();
        let ring = dir.path().join("ring");
        std::fs::create_dir(&ring).unwrap();
        std::fs::write(ring.join("a.pub"), a.to_pem()).unwrap();
        std::fs::write(ring.join("notes.txt"), "not a key").unwrap();
        let single = dir.path().join("b.pem");
        std::fs::write(&single, b.to_pem()).unwrap();
        let loaded = load(&[ring.clone(), single.clone()], true).unwrap();
        assert_eq!(loaded.keys, vec![a.clone(), b.clone()]);
        assert!(loaded.skipped.is_empty());

        // A stray OpenSSH key in the folder is skipped, not fatal; the
        // same file named on its own is an error.
        let ssh = ring.join("id_ed25519.pub");
        std::fs::write(&ssh, "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG me@host\n").unwrap();
        let loaded = load(std::slice::from_ref(&ring), true).unwrap();
        assert_eq!(loaded.keys, vec![a.clone()]);
        assert!(
            loaded.skipped[0].contains("id_ed25519.pub"),
            "{:?}",
            loaded.skipped
        );
        assert!(load(std::slice::from_ref(&ssh), true).is_err());
        std::fs::remove_file(&ssh).unwrap();

        std::fs::write(ring.join("broken.pub"), "-----BEGIN PUBLIC KEY-----\n").unwrap();
        let err = load(std::slice::from_ref(&ring), true)
            .unwrap_err()
            .to_string();
        assert!(err.contains("broken.pub"), "{err}");
        std::fs::remove_file(ring.join("broken.pub")).unwrap();

        let empty = dir.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        assert!(matches!(
            load(std::slice::from_ref(&empty), true),
            Err(KeyFileError::Empty(_))
        ));
        assert!(load(&[empty], false).unwrap().keys.is_empty());
        let missing = dir.path().join("missing.pub");
        assert!(matches!(
            load(&[missing], false),
            Err(KeyFileError::Read { .. })
        ));
    }
}
