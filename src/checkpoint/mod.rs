//! Checkpoints as bytes: safetensors files, sharded indexes and directories.
//!
//! This layer knows dtypes, shapes and byte ranges, nothing about BatchNorm. Opening reads
//! headers only; tensor bytes are read when asked for.

pub mod dtype;
pub mod error;
pub mod file;
pub mod header;
mod index;

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

pub use dtype::Dtype;
pub use error::{CheckpointError, Problem};
pub use file::{ReadMode, SafetensorsFile};
use header::HeaderTensor;

/// How the checkpoint was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Layout {
    /// One `.safetensors` file.
    File,
    /// A `*.safetensors.index.json` and its shards.
    Sharded,
}

/// One tensor of a checkpoint: where it lives and what it holds.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    /// Full tensor name.
    pub name: String,
    /// Element type.
    pub dtype: Dtype,
    /// Shape; empty for a scalar.
    pub shape: Vec<u64>,
    /// Index of the file holding it, into [`Checkpoint::files`].
    pub file: usize,
    /// Bytes of data.
    pub bytes: u64,
    pub(crate) entry: usize,
}

impl TensorInfo {
    /// Number of elements.
    pub fn elements(&self) -> u64 {
        self.shape.iter().product()
    }
}

/// An opened checkpoint: one file, or the shards of an index.
#[derive(Debug)]
pub struct Checkpoint {
    path: PathBuf,
    layout: Layout,
    files: Vec<SafetensorsFile>,
    tensors: Vec<TensorInfo>,
    by_name: HashMap<String, usize>,
    metadata: BTreeMap<String, String>,
    warnings: Vec<String>,
}

impl Checkpoint {
    /// Opens a `.safetensors` file, a `*.safetensors.index.json`, or a directory holding
    /// exactly one of those. Only headers are read.
    pub fn open(path: impl AsRef<Path>, mode: ReadMode) -> Result<Self, CheckpointError> {
        let path = path.as_ref();
        let meta = std::fs::metadata(path)
            .map_err(|e| CheckpointError::new(path, Problem::io("cannot open", e)))?;
        let target = if meta.is_dir() {
            index::resolve_directory(path)?
        } else {
            path.to_owned()
        };
        if index::is_index(&target) {
            index::open_sharded(&target, mode)
        } else {
            let file = SafetensorsFile::open(&target, mode)?;
            let metadata = file.header().metadata.clone();
            Ok(Checkpoint::assemble(
                target,
                Layout::File,
                vec![file],
                metadata,
                Vec::new(),
                None,
            ))
        }
    }

    /// Builds the tensor table. With `only`, a name → file map from an index, keeps just
    /// the tensors the index maps to that file.
    fn assemble(
        path: PathBuf,
        layout: Layout,
        files: Vec<SafetensorsFile>,
        metadata: BTreeMap<String, String>,
        warnings: Vec<String>,
        only: Option<&HashMap<String, usize>>,
    ) -> Checkpoint {
        let mut tensors = Vec::new();
        for (fi, file) in files.iter().enumerate() {
            for (entry, t) in file.header().tensors.iter().enumerate() {
                if only.is_some_and(|m| m.get(&t.name) != Some(&fi)) {
                    continue;
                }
                tensors.push(TensorInfo {
                    name: t.name.clone(),
                    dtype: t.dtype,
                    shape: t.shape.clone(),
                    file: fi,
                    bytes: t.end - t.start,
                    entry,
                });
            }
        }
        tensors.sort_by(|a, b| a.name.cmp(&b.name));
        let by_name = tensors
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i))
            .collect();
        Checkpoint {
            path,
            layout,
            files,
            tensors,
            by_name,
            metadata,
            warnings,
        }
    }

    /// The file or index that was opened (a directory resolves to the one it holds).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// File or sharded.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// The files read (one, or each shard).
    pub fn files(&self) -> &[SafetensorsFile] {
        &self.files
    }

    /// Every tensor, sorted by name.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// The tensor called `name`.
    pub fn get(&self, name: &str) -> Option<&TensorInfo> {
        self.by_name.get(name).map(|&i| &self.tensors[i])
    }

    /// `__metadata__` of the file, or the index's `metadata` object flattened to strings.
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    /// Things worth telling the user that are not errors, e.g. tensors in a shard that the
    /// index does not map.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Total bytes of tensor data.
    pub fn data_bytes(&self) -> u64 {
        self.tensors.iter().map(|t| t.bytes).sum()
    }

    /// Total size of the files on disk.
    pub fn file_bytes(&self) -> u64 {
        self.files.iter().map(SafetensorsFile::len).sum()
    }

    fn entry(&self, t: &TensorInfo) -> (&SafetensorsFile, &HeaderTensor) {
        let file = &self.files[t.file];
        (file, &file.header().tensors[t.entry])
    }

    /// All bytes of a tensor of this checkpoint.
    pub fn bytes(&self, t: &TensorInfo) -> Result<Cow<'_, [u8]>, CheckpointError> {
        let (file, entry) = self.entry(t);
        file.bytes(entry)
    }

    /// `len` bytes of a tensor starting `offset` bytes into it, for streaming comparisons.
    pub fn read(
        &self,
        t: &TensorInfo,
        offset: u64,
        len: u64,
    ) -> Result<Cow<'_, [u8]>, CheckpointError> {
        let (file, entry) = self.entry(t);
        file.read(entry, offset, len)
    }

    /// Fills `buf` with bytes of a tensor starting `offset` bytes into it, with a positioned
    /// read into the caller's buffer (see [`SafetensorsFile::read_into`]).
    pub fn read_into(
        &self,
        t: &TensorInfo,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<(), CheckpointError> {
        let (file, entry) = self.entry(t);
        file.read_into(entry, offset, buf)
    }

    /// The tensor's values as `f64`, or `None` when its dtype cannot be decoded.
    pub fn values(&self, t: &TensorInfo) -> Result<Option<Vec<f64>>, CheckpointError> {
        Ok(t.dtype.decode(&self.bytes(t)?))
    }

    /// [`Checkpoint::values`] through a positioned read rather than the map, for a few
    /// small tensors scattered through a large file: touching one mapped page can make the
    /// kernel map its whole large folio, megabytes of resident memory per small tensor.
    pub fn read_values(&self, t: &TensorInfo) -> Result<Option<Vec<f64>>, CheckpointError> {
        let mut bytes = vec![0; t.bytes as usize];
        self.read_into(t, 0, &mut bytes)?;
        Ok(t.dtype.decode(&bytes))
    }
}
