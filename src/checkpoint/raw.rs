//! A checkpoint file opened read-only, with byte ranges read by offset: through a memory
//! map or with positioned reads. Both container formats (safetensors, torch.save zip
//! archives) read their bytes through this one primitive.

use std::borrow::Cow;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;

use super::error::{CheckpointError, Problem};
use super::fault::Registration;
use super::handles::Handle;
use super::input;

/// How tensor bytes are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReadMode {
    /// Memory-map the file (default): no copy for large tensors that are read. Ranges
    /// smaller than [`MAP_AT_LEAST`] are still copied with one positioned read.
    #[default]
    Mmap,
    /// Positioned reads of each byte range: for network filesystems and WSL, where maps fail
    /// or crawl.
    Pread,
}

/// Smallest range read through the memory map. Below it, one positioned read costs less than
/// the page faults (each of which maps up to 16 neighbouring pages into our resident set) and
/// the length check against truncation that a mapped read needs. Listing BatchNorm layers
/// reads thousands of such small tensors.
pub const MAP_AT_LEAST: u64 = 64 * 1024;

/// An open regular file and, once [`RawFile::map`] is called in [`ReadMode::Mmap`], its map.
#[derive(Debug)]
pub(crate) struct RawFile {
    path: PathBuf,
    /// The descriptor, from a pool bounded across all files (thousands of shards).
    handle: Handle,
    map: Option<Mapped>,
    len: u64,
}

/// A memory map, registered with the SIGBUS handler for as long as it lives.
#[derive(Debug)]
struct Mapped {
    /// Declared first, so dropped first: the range leaves the handler's table before it is
    /// unmapped.
    _registration: Registration,
    map: Mmap,
}

impl RawFile {
    /// Opens `path` read-only; nothing is read yet.
    pub(crate) fn open(path: &Path) -> Result<Self, CheckpointError> {
        // A pipe (`<(curl …)`, /dev/stdin) has no length to check a header against and
        // cannot be read by offset; opening a FIFO without a writer would block forever.
        let (file, meta) =
            input::open_regular(path).map_err(|problem| CheckpointError::new(path, problem))?;
        Ok(RawFile {
            path: path.to_owned(),
            handle: Handle::new(path, file, &meta),
            map: None,
            len: meta.len(),
        })
    }

    /// Maps the file when `mode` asks for it, once its structure has been validated.
    pub(crate) fn map(&mut self, mode: ReadMode) -> Result<(), CheckpointError> {
        if mode == ReadMode::Mmap && self.len > 0 {
            // SAFETY: the map is read-only. A concurrent truncation is detected by
            // `check_len` before each access; one during the access raises SIGBUS, which
            // the registration turns into an input error (see `fault`).
            let map = unsafe { Mmap::map(&*self.file()?) }
                .map_err(|e| CheckpointError::new(&self.path, Problem::io("cannot map", e)))?;
            self.map = Some(Mapped {
                _registration: Registration::new(map.as_ptr(), map.len(), &self.path),
                map,
            });
        }
        Ok(())
    }

    /// The file's path as given.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The open file, for readers that parse structure themselves (the zip directory);
    /// reopened if the descriptor pool closed it.
    pub(crate) fn file(&self) -> Result<Arc<File>, CheckpointError> {
        self.handle
            .file()
            .map_err(|problem| CheckpointError::new(&self.path, problem))
    }

    /// The file's length in bytes when opened.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// Fills `buf` from `at` with a positioned read, for headers and other structure; `what`
    /// says what was being read when it fails.
    pub(crate) fn read_exact_at(
        &self,
        buf: &mut [u8],
        at: u64,
        what: &'static str,
    ) -> Result<(), CheckpointError> {
        self.file()?
            .read_exact_at(buf, at)
            .map_err(|e| CheckpointError::new(&self.path, Problem::io(what, e)))
    }

    /// Bytes `start..end` of the file, which begin with `tensor` (named if the file turns out
    /// to be truncated): borrowed from the map for large ranges, else read into a buffer.
    pub(crate) fn read(
        &self,
        start: u64,
        end: u64,
        tensor: &str,
    ) -> Result<Cow<'_, [u8]>, CheckpointError> {
        let len = end - start;
        if len == 0 {
            return Ok(Cow::Borrowed(&[]));
        }
        match &self.map {
            Some(mapped) if len >= MAP_AT_LEAST => {
                self.check_len(tensor, end)?;
                Ok(Cow::Borrowed(&mapped.map[start as usize..end as usize]))
            }
            _ => {
                let mut buf = vec![0u8; len as usize];
                self.read_into(start, &mut buf, tensor)?;
                Ok(Cow::Owned(buf))
            }
        }
    }

    /// Fills `buf` with a positioned read from `start`, whatever the read mode: streaming
    /// comparisons reuse fixed buffers so that resident memory stays bounded (mapped pages,
    /// once touched, count towards it). `tensor` is named if the file turns out truncated.
    pub(crate) fn read_into(
        &self,
        start: u64,
        buf: &mut [u8],
        tensor: &str,
    ) -> Result<(), CheckpointError> {
        self.file()?.read_exact_at(buf, start).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                self.truncated(tensor, start + buf.len() as u64)
            } else {
                CheckpointError::new(&self.path, Problem::io("cannot read", e))
            }
        })
    }

    /// Refuses to touch mapped bytes past the file's current end, which would raise SIGBUS.
    fn check_len(&self, tensor: &str, end: u64) -> Result<(), CheckpointError> {
        let now = self
            .file()?
            .metadata()
            .map_err(|e| CheckpointError::new(&self.path, Problem::io("cannot stat", e)))?
            .len();
        if now < end {
            return Err(self.truncated(tensor, end));
        }
        Ok(())
    }

    fn truncated(&self, tensor: &str, end: u64) -> CheckpointError {
        let len = self
            .file()
            .ok()
            .and_then(|f| f.metadata().ok())
            .map_or(0, |m| m.len());
        CheckpointError::new(
            &self.path,
            Problem::Truncated {
                tensor: tensor.to_owned(),
                len,
                end,
            },
        )
    }
}
