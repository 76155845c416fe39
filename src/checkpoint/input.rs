//! Opening input files without trusting them: regular files only, small files read whole
//! up to a stated limit.
//!
//! Every path a user or a file names (checkpoint, index, shard, directory entry, activation
//! file, configuration file) enters through here. A FIFO would block `open` until a writer
//! appears and a device such as `/dev/zero` never ends, so both are refused before any read.

use std::fs::{File, Metadata, OpenOptions};
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use super::error::Problem;

/// Largest `*.safetensors.index.json` read: an index of a million tensors is about 60 MB.
pub const MAX_INDEX_LEN: u64 = 256 * 1024 * 1024;

/// Largest configuration file (`bnaudit.toml`, `pyproject.toml`) read.
pub const MAX_CONFIG_LEN: u64 = 16 * 1024 * 1024;

/// Refuses directories, pipes, sockets and devices.
pub(crate) fn regular(meta: &Metadata) -> Result<(), Problem> {
    if meta.is_file() {
        return Ok(());
    }
    let kind = if meta.is_dir() {
        "a directory"
    } else {
        "a pipe or device"
    };
    Err(Problem::NotRegularFile { kind })
}

/// Opens `path` read-only if it is a regular file, with its metadata.
///
/// The path is checked before opening, and what was opened is checked again in case the
/// path was replaced in between; `O_NONBLOCK` keeps that second case from blocking in
/// `open` on a FIFO (it changes nothing for reads of a regular file).
pub fn open_regular(path: &Path) -> Result<(File, Metadata), Problem> {
    let meta = std::fs::metadata(path).map_err(|e| Problem::io("cannot open", e))?;
    regular(&meta)?;
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| Problem::io("cannot open", e))?;
    let meta = file.metadata().map_err(|e| Problem::io("cannot stat", e))?;
    regular(&meta)?;
    Ok((file, meta))
}

/// Reads a regular file of at most `limit` bytes whole. The size is checked before reading,
/// and the read stops at `limit + 1` bytes in case the file grows meanwhile.
pub fn read_small(path: &Path, what: &'static str, limit: u64) -> Result<Vec<u8>, Problem> {
    let (file, meta) = open_regular(path)?;
    let too_large = |len| Problem::FileTooLarge { what, len, limit };
    if meta.len() > limit {
        return Err(too_large(meta.len()));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Problem::io("cannot read", e))?;
    if bytes.len() as u64 > limit {
        return Err(too_large(bytes.len() as u64));
    }
    Ok(bytes)
}
