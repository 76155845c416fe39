//! One safetensors file opened header-only, with its tensor bytes read on demand.

use std::borrow::Cow;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;

use super::error::{CheckpointError, Problem};
use super::fault::Registration;
use super::handles::Handle;
use super::header::{self, Header, HeaderTensor};
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

/// An open safetensors file: its validated header and a way to read tensor bytes.
#[derive(Debug)]
pub struct SafetensorsFile {
    path: PathBuf,
    /// The descriptor, from a pool bounded across all files (thousands of shards).
    handle: Handle,
    map: Option<Mapped>,
    len: u64,
    header: Header,
}

/// A memory map, registered with the SIGBUS handler for as long as it lives.
#[derive(Debug)]
struct Mapped {
    /// Declared first, so dropped first: the range leaves the handler's table before it is
    /// unmapped.
    _registration: Registration,
    map: Mmap,
}

impl SafetensorsFile {
    /// Opens `path` read-only and validates its header; tensor data is not touched.
    pub fn open(path: &Path, mode: ReadMode) -> Result<Self, CheckpointError> {
        let err = |problem| CheckpointError::new(path, problem);
        // A pipe (`<(curl …)`, /dev/stdin) has no length to check a header against and
        // cannot be read by offset.
        let (file, meta) = input::open_regular(path).map_err(err)?;
        let len = meta.len();
        if len < 8 {
            return Err(err(Problem::TooShort { len }));
        }
        let mut prefix = [0u8; 8];
        file.read_exact_at(&mut prefix, 0)
            .map_err(|e| err(Problem::io("cannot read header length", e)))?;
        let header_len = header::header_len(prefix, len).map_err(err)?;
        let mut bytes = vec![0u8; header_len as usize];
        file.read_exact_at(&mut bytes, 8)
            .map_err(|e| err(Problem::io("cannot read header", e)))?;
        let data_start = 8 + header_len;
        let header = header::parse(&bytes, data_start, len - data_start).map_err(err)?;
        let map = match mode {
            // SAFETY: the map is read-only. A concurrent truncation is detected by
            // `check_len` before each access; one during the access raises SIGBUS, which
            // the registration turns into an input error (see `fault`).
            ReadMode::Mmap if len > data_start => {
                let map =
                    unsafe { Mmap::map(&file) }.map_err(|e| err(Problem::io("cannot map", e)))?;
                Some(Mapped {
                    _registration: Registration::new(map.as_ptr(), map.len(), path),
                    map,
                })
            }
            _ => None,
        };
        Ok(SafetensorsFile {
            path: path.to_owned(),
            handle: Handle::new(path, file, &meta),
            map,
            len,
            header,
        })
    }

    /// The file's path as given.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's length in bytes when opened.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the file holds no tensor data.
    pub fn is_empty(&self) -> bool {
        self.len == self.header.data_start
    }

    /// Hands the header's tensor list over to the [`Checkpoint`](super::Checkpoint) that
    /// owns this file, which keeps the only copy; the header's list is empty afterwards.
    pub(crate) fn take_tensors(&mut self) -> Vec<HeaderTensor> {
        std::mem::take(&mut self.header.tensors)
    }

    /// The validated header. Inside a [`Checkpoint`](super::Checkpoint) its tensor list is
    /// empty: the checkpoint holds the tensors (see [`Checkpoint::tensors`](super::Checkpoint::tensors)).
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Reads `len` bytes of `tensor` starting `offset` bytes into it: borrowed from the map,
    /// or read into a new buffer in [`ReadMode::Pread`].
    pub fn read(
        &self,
        tensor: &HeaderTensor,
        offset: u64,
        len: u64,
    ) -> Result<Cow<'_, [u8]>, CheckpointError> {
        debug_assert!(offset + len <= tensor.end - tensor.start);
        let start = tensor.start + offset;
        self.read_data(start, start + len, &tensor.name)
    }

    /// Reads bytes `start..end` of the data section, which begins with `tensor` (named if the
    /// file turns out to be truncated); the range may span several tensors.
    pub(crate) fn read_data(
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
                let (start, end) = (self.header.data_start + start, self.header.data_start + end);
                self.check_len(tensor, end)?;
                Ok(Cow::Borrowed(&mapped.map[start as usize..end as usize]))
            }
            _ => {
                let mut buf = vec![0u8; len as usize];
                self.read_data_into(start, &mut buf, tensor)?;
                Ok(Cow::Owned(buf))
            }
        }
    }

    /// Fills `buf` with the bytes of `tensor` starting `offset` bytes into it, with a
    /// positioned read whatever the read mode: streaming comparisons reuse fixed buffers so
    /// that resident memory stays bounded (mapped pages, once touched, count towards it).
    pub fn read_into(
        &self,
        tensor: &HeaderTensor,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<(), CheckpointError> {
        debug_assert!(offset + buf.len() as u64 <= tensor.end - tensor.start);
        self.read_data_into(tensor.start + offset, buf, &tensor.name)
    }

    /// Fills `buf` with a positioned read from `start` bytes into the data section; `tensor`
    /// is named if the file turns out to be truncated.
    pub(crate) fn read_data_into(
        &self,
        start: u64,
        buf: &mut [u8],
        tensor: &str,
    ) -> Result<(), CheckpointError> {
        let start = self.header.data_start + start;
        self.file()?.read_exact_at(buf, start).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                self.truncated(tensor, start + buf.len() as u64)
            } else {
                CheckpointError::new(&self.path, Problem::io("cannot read", e))
            }
        })
    }

    /// All bytes of `tensor`.
    pub fn bytes(&self, tensor: &HeaderTensor) -> Result<Cow<'_, [u8]>, CheckpointError> {
        self.read(tensor, 0, tensor.end - tensor.start)
    }

    /// The open file (reopened if the descriptor pool closed it).
    fn file(&self) -> Result<Arc<File>, CheckpointError> {
        self.handle
            .file()
            .map_err(|problem| CheckpointError::new(&self.path, problem))
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
