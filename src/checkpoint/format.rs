//! The container formats, told apart by content (never by extension), and one opened file
//! of either.

use std::borrow::Cow;
use std::path::Path;

use super::TensorInfo;
use super::error::CheckpointError;
use super::file::SafetensorsFile;
use super::raw::{RawFile, ReadMode};
use super::torch::{TorchFile, TorchProblem};

/// A checkpoint file's container format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// safetensors.
    Safetensors,
    /// PyTorch `torch.save` (zip archive).
    Torch,
}

/// The pickled magic number that opens a legacy (pre-1.6) torch.save file.
const LEGACY_MAGIC: &[u8] = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19";

/// What the first bytes of a file say it is.
fn sniff(raw: &RawFile) -> Result<Option<TorchProblem>, CheckpointError> {
    let mut head = [0u8; 16];
    let n = head.len().min(raw.len() as usize);
    raw.read_exact_at(&mut head[..n], 0, "cannot read")?;
    let head = &head[..n];
    Ok(if head.starts_with(LEGACY_MAGIC) {
        Some(TorchProblem::Legacy)
    } else if head.len() >= 2 && head[0] == 0x80 && (2..=5).contains(&head[1]) {
        Some(TorchProblem::BarePickle)
    } else if head.starts_with(b"PK\x05\x06") {
        Some(TorchProblem::NotCheckpoint)
    } else {
        None
    })
}

/// One opened file of a checkpoint.
#[derive(Debug)]
pub enum CheckpointFile {
    /// A safetensors file.
    Safetensors(SafetensorsFile),
    /// A torch.save archive.
    Torch(TorchFile),
}

impl CheckpointFile {
    /// Opens `path`, recognising its format by content. `key` picks the state dict of a
    /// torch.save file (see [`TorchFile::open`]); a safetensors file has only one.
    pub fn open(path: &Path, mode: ReadMode, key: Option<&str>) -> Result<Self, CheckpointError> {
        let raw = RawFile::open(path)?;
        if let Some(problem) = sniff(&raw)? {
            return Err(CheckpointError::new(path, problem.into()));
        }
        let mut magic = [0u8; 4];
        if raw.len() >= 4 {
            raw.read_exact_at(&mut magic, 0, "cannot read")?;
        }
        if magic == *b"PK\x03\x04" {
            Ok(CheckpointFile::Torch(TorchFile::from_raw(raw, mode, key)?))
        } else {
            Ok(CheckpointFile::Safetensors(SafetensorsFile::from_raw(
                raw, mode,
            )?))
        }
    }

    /// The file's path as given.
    pub fn path(&self) -> &Path {
        match self {
            CheckpointFile::Safetensors(f) => f.path(),
            CheckpointFile::Torch(f) => f.path(),
        }
    }

    /// The file's length in bytes when opened.
    pub fn len(&self) -> u64 {
        match self {
            CheckpointFile::Safetensors(f) => f.len(),
            CheckpointFile::Torch(f) => f.len(),
        }
    }

    /// Whether the file is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Its container format.
    pub fn format(&self) -> Format {
        match self {
            CheckpointFile::Safetensors(_) => Format::Safetensors,
            CheckpointFile::Torch(_) => Format::Torch,
        }
    }

    /// The state dict key used (torch.save), `None` for the top level or a safetensors file.
    pub fn key(&self) -> Option<&str> {
        match self {
            CheckpointFile::Safetensors(_) => None,
            CheckpointFile::Torch(f) => f.key(),
        }
    }

    /// Observations about the file that are not errors.
    pub fn warnings(&self) -> &[String] {
        match self {
            CheckpointFile::Safetensors(_) => &[],
            CheckpointFile::Torch(f) => f.warnings(),
        }
    }

    /// The names of the file's tensors (before the checkpoint takes them).
    pub(crate) fn tensor_names(&self) -> impl Iterator<Item = &str> + Clone {
        let (st, torch) = match self {
            CheckpointFile::Safetensors(f) => (f.header().tensors.as_slice(), &[][..]),
            CheckpointFile::Torch(f) => (&[][..], f.tensors()),
        };
        st.iter()
            .map(|t| t.name.as_str())
            .chain(torch.iter().map(|t| t.name.as_str()))
    }

    /// Hands the file's tensors over (file index 0; the checkpoint renumbers them).
    pub(crate) fn take_tensors(&mut self) -> Vec<TensorInfo> {
        match self {
            CheckpointFile::Safetensors(f) => f
                .take_tensors()
                .into_iter()
                .map(|t| TensorInfo {
                    bytes: t.end - t.start,
                    start: t.start,
                    name: t.name,
                    dtype: t.dtype,
                    shape: t.shape,
                    file: 0,
                    view: None,
                })
                .collect(),
            CheckpointFile::Torch(f) => f.take_tensors(),
        }
    }

    /// Bytes `start..end` of the file's tensor data, contiguous as stored; `tensor` is the
    /// first tensor of the range, named if the file turns out to be truncated.
    pub(crate) fn read_data(
        &self,
        start: u64,
        end: u64,
        tensor: &str,
    ) -> Result<Cow<'_, [u8]>, CheckpointError> {
        let (raw, at) = self.data();
        raw.read(at + start, at + end, tensor)
    }

    /// Fills `buf` with a positioned read from `start` of the tensor data.
    pub(crate) fn read_data_into(
        &self,
        start: u64,
        buf: &mut [u8],
        tensor: &str,
    ) -> Result<(), CheckpointError> {
        let (raw, at) = self.data();
        raw.read_into(at + start, buf, tensor)
    }

    /// The file's bytes and the offset in them from which tensor offsets count.
    fn data(&self) -> (&RawFile, u64) {
        match self {
            CheckpointFile::Safetensors(f) => (f.raw(), f.header().data_start),
            CheckpointFile::Torch(f) => (f.raw(), 0),
        }
    }
}
