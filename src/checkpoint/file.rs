//! One safetensors file opened header-only, with its tensor bytes read on demand.

use std::borrow::Cow;
use std::path::Path;

use super::error::{CheckpointError, Problem};
use super::header::{self, Header, HeaderTensor};
use super::raw::{RawFile, ReadMode};

/// An open safetensors file: its validated header and a way to read tensor bytes.
#[derive(Debug)]
pub struct SafetensorsFile {
    raw: RawFile,
    header: Header,
}

impl SafetensorsFile {
    /// Opens `path` read-only and validates its header; tensor data is not touched.
    pub fn open(path: &Path, mode: ReadMode) -> Result<Self, CheckpointError> {
        let raw = RawFile::open(path)?;
        Self::from_raw(raw, mode)
    }

    /// Validates the header of an opened file and maps it when `mode` asks.
    pub(crate) fn from_raw(mut raw: RawFile, mode: ReadMode) -> Result<Self, CheckpointError> {
        let err = |problem| CheckpointError::new(raw.path(), problem);
        let len = raw.len();
        if len < 8 {
            return Err(err(Problem::TooShort { len }));
        }
        let mut prefix = [0u8; 8];
        raw.read_exact_at(&mut prefix, 0, "cannot read header length")?;
        let header_len = header::header_len(prefix, len).map_err(err)?;
        let mut bytes = vec![0u8; header_len as usize];
        raw.read_exact_at(&mut bytes, 8, "cannot read header")?;
        let data_start = 8 + header_len;
        let header = header::parse(&bytes, data_start, len - data_start).map_err(err)?;
        if len > data_start {
            raw.map(mode)?;
        }
        Ok(SafetensorsFile { raw, header })
    }

    /// The file's path as given.
    pub fn path(&self) -> &Path {
        self.raw.path()
    }

    /// The file's length in bytes when opened.
    pub fn len(&self) -> u64 {
        self.raw.len()
    }

    /// Whether the file holds no tensor data.
    pub fn is_empty(&self) -> bool {
        self.raw.len() == self.header.data_start
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
        let start = self.header.data_start + tensor.start + offset;
        self.raw.read(start, start + len, &tensor.name)
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
        let start = self.header.data_start + tensor.start + offset;
        self.raw.read_into(start, buf, &tensor.name)
    }

    /// The file's bytes; tensor offsets count from the header's `data_start`.
    pub(crate) fn raw(&self) -> &RawFile {
        &self.raw
    }

    /// All bytes of `tensor`.
    pub fn bytes(&self, tensor: &HeaderTensor) -> Result<Cow<'_, [u8]>, CheckpointError> {
        self.read(tensor, 0, tensor.end - tensor.start)
    }
}
