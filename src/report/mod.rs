//! Renderers of audit reports: text for people, JSON for scripts (and, for `check`, CI
//! formats). One module per format; none computes anything the report does not hold.

pub mod github;
pub mod json;
pub mod junit;
pub mod markdown;
mod style;
pub mod text;

use std::io::{self, Write};
use std::path::Path;

pub use style::Style;

/// Writes `contents` to `path` atomically: a temporary file in the same directory, flushed,
/// then renamed over the target, so readers never see a partial report.
pub fn write_atomic(path: &Path, contents: &[u8]) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(without_temp_path)?;
    tmp.write_all(contents).map_err(without_temp_path)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// tempfile's errors end with `at path "<dir>/.tmpXXXXXX"`, a file the user never named
/// (and tempfile exposes no other way to the reason); the caller names the target, so keep
/// only the operating system's reason.
fn without_temp_path(e: io::Error) -> io::Error {
    let text = e.to_string();
    match text.rfind(" at path \"") {
        Some(end) if e.get_ref().is_some() => io::Error::new(e.kind(), &text[..end]),
        _ => e,
    }
}
