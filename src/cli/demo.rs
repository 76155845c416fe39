//! The bundled demo pair, embedded in the binary: `bnaudit demo` must work from any directory
//! after `cargo install` or `pip install`, where no source tree is left to read it from.

use std::io;
use std::path::PathBuf;

use tempfile::TempDir;

/// The demo files by name, in the order A, B (see assets/demo/README.md).
const FILES: [(&str, &[u8]); 2] = [
    (
        "pretrained.safetensors",
        include_bytes!("../../assets/demo/pretrained.safetensors"),
    ),
    (
        "finetuned.safetensors",
        include_bytes!("../../assets/demo/finetuned.safetensors"),
    ),
];

/// The demo pair unpacked into a fresh temporary directory, removed when this is dropped.
/// Checkpoints are read from files (memory map or positioned reads), so the embedded bytes
/// are written out rather than read from memory.
pub struct DemoPair {
    dir: TempDir,
}

impl DemoPair {
    /// Writes both checkpoints into a new `bnaudit-demo-*` directory under the system's
    /// temporary directory.
    pub fn unpack() -> io::Result<DemoPair> {
        let dir = tempfile::Builder::new().prefix("bnaudit-demo-").tempdir()?;
        for (name, bytes) in FILES {
            std::fs::write(dir.path().join(name), bytes)?;
        }
        Ok(DemoPair { dir })
    }

    /// The paths of A (pretrained) and B (fine-tuned).
    pub fn paths(&self) -> Vec<PathBuf> {
        FILES
            .iter()
            .map(|(name, _)| self.dir.path().join(name))
            .collect()
    }
}
