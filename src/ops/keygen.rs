//! `env-sidecar keygen --private FILE --public FILE [--key-id NAME]`: a
//! new Ed25519 key pair for signing documents. The private key file is
//! created with mode 0600 and never printed; neither file may exist yet
//! (an existing key is never overwritten). Prints the key id.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::input::quoted;
use crate::model::keys;

#[derive(Debug, Clone)]
pub struct Keygen {
    pub private: PathBuf,
    pub public: PathBuf,
    pub key_id: Option<String>,
}

pub const OK: u8 = 0;
pub const FAILED: u8 = 2;

/// Mode of the private key file.
pub const PRIVATE_MODE: u32 = 0o600;

pub fn run(args: &Keygen, out: &mut dyn Write) -> u8 {
    let fail = |out: &mut dyn Write, message: String| {
        let _ = writeln!(out, "error message={}", quoted(&message));
        FAILED
    };
    if args.private == args.public {
        return fail(out, "--private and --public must be different files".into());
    }
    for path in [&args.private, &args.public] {
        if path.exists() {
            return fail(
                out,
                format!("{} exists; refusing to overwrite a key", path.display()),
            );
        }
    }
    let (private, public) = match keys::generate(args.key_id.as_deref()) {
        Ok(pair) => pair,
        Err(e) => return fail(out, e.to_string()),
    };
    if let Err(e) = create(&args.private, PRIVATE_MODE, &private) {
        return fail(out, format!("{}: {e}", args.private.display()));
    }
    if let Err(e) = create(&args.public, 0o644, &public.to_pem()) {
        let _ = std::fs::remove_file(&args.private);
        return fail(out, format!("{}: {e}", args.public.display()));
    }
    let _ = writeln!(
        out,
        "keygen keyid={} private={} public={}",
        quoted(&public.keyid),
        quoted(&args.private.display().to_string()),
        quoted(&args.public.display().to_string())
    );
    OK
}

/// Creates `path` (never replacing a file) with `mode` from the start, so
/// the key is never readable by others, not even for a moment.
fn create(path: &Path, mode: u32, text: &str) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()
}
