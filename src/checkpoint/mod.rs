//! Checkpoints as bytes: safetensors files, torch.save archives, sharded indexes and
//! directories, and the safetensors writer ([`write`]).
//!
//! This layer knows dtypes, shapes and byte ranges, nothing about BatchNorm. Opening reads
//! headers (and a torch.save file's pickle) only; tensor bytes are read when asked for.

pub mod dtype;
pub mod error;
pub mod fault;
pub mod file;
pub mod format;
pub mod handles;
pub mod header;
mod index;
pub mod input;
mod raw;
pub mod torch;
pub mod write;

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasher;
use std::ops::Range;
use std::path::{Path, PathBuf};

use hashbrown::HashTable;

pub use dtype::{CastError, Dtype};
pub use error::{CheckpointError, Problem};
pub use file::SafetensorsFile;
pub use format::{CheckpointFile, Format};
pub use raw::{MAP_AT_LEAST, ReadMode};
pub use torch::TorchFile;

/// Largest gap between two tensors that [`Checkpoint::values_many`] reads through rather
/// than issuing a second read: one page costs less to copy than a system call.
pub const COALESCE_GAP: u64 = 4096;

/// How the checkpoint was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Layout {
    /// One file.
    File,
    /// A `*.index.json` (safetensors or `pytorch_model.bin`) and its shards.
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
    /// Where the data starts within its file's data section (safetensors), the file
    /// (torch.save), or the inflated storage (a deflated torch.save entry).
    pub(crate) start: u64,
    /// How a torch.save tensor that is not one contiguous stored run reaches its storage.
    pub(crate) view: Option<Box<torch::View>>,
}

impl TensorInfo {
    /// Where the data ends within its file's data section.
    fn end(&self) -> u64 {
        self.start + self.bytes
    }
}

impl TensorInfo {
    /// Number of elements.
    pub fn elements(&self) -> u64 {
        element_count(&self.shape)
    }
}

/// Number of elements of a shape, without overflow: any zero dimension makes it 0 however
/// large the others, and a count past `u64` (never in a validated header, whose byte count
/// fits) saturates.
pub fn element_count(shape: &[u64]) -> u64 {
    header::elements(shape).map_or(u64::MAX, |n| u64::try_from(n).unwrap_or(u64::MAX))
}

/// An opened checkpoint: one file, or the shards of an index.
#[derive(Debug)]
pub struct Checkpoint {
    path: PathBuf,
    layout: Layout,
    files: Vec<CheckpointFile>,
    format: Format,
    key: Option<String>,
    /// Sorted by name, names unique.
    tensors: Vec<TensorInfo>,
    /// Positions in `tensors` hashed by name: lookups compare one name, and building the
    /// index copies none (20,000 of them in a big checkpoint).
    index: HashTable<usize>,
    hasher: foldhash::fast::RandomState,
    metadata: BTreeMap<String, String>,
    warnings: Vec<String>,
}

impl Checkpoint {
    /// Opens a checkpoint file (safetensors or torch.save, told apart by content), a
    /// `*.index.json`, or a directory holding exactly one of those. Only headers (and a
    /// torch.save file's pickle) are read.
    pub fn open(path: impl AsRef<Path>, mode: ReadMode) -> Result<Self, CheckpointError> {
        Self::open_key(path, mode, None)
    }

    /// [`Checkpoint::open`], with `key` (a dot path) naming the state dict inside a
    /// torch.save file; a safetensors file ignores it, with a warning.
    pub fn open_key(
        path: impl AsRef<Path>,
        mode: ReadMode,
        key: Option<&str>,
    ) -> Result<Self, CheckpointError> {
        let path = path.as_ref();
        let meta = std::fs::metadata(path)
            .map_err(|e| CheckpointError::new(path, Problem::io("cannot open", e)))?;
        let target = if meta.is_dir() {
            index::resolve_directory(path)?
        } else {
            path.to_owned()
        };
        if index::is_index(&target) {
            index::open_sharded(&target, mode, key)
        } else {
            let file = CheckpointFile::open(&target, mode, key)?;
            let metadata = match &file {
                CheckpointFile::Safetensors(f) => f.header().metadata.clone(),
                CheckpointFile::Torch(_) => BTreeMap::new(),
            };
            Ok(Checkpoint::assemble(
                target,
                Layout::File,
                vec![file],
                metadata,
                Vec::new(),
                key,
                None,
            ))
        }
    }

    /// Builds the tensor table. With `only`, a name → file map from an index, keeps just
    /// the tensors the index maps to that file.
    fn assemble(
        path: PathBuf,
        layout: Layout,
        mut files: Vec<CheckpointFile>,
        metadata: BTreeMap<String, String>,
        mut warnings: Vec<String>,
        key: Option<&str>,
        only: Option<&HashMap<String, usize>>,
    ) -> Checkpoint {
        let mut tensors = Vec::new();
        for (fi, file) in files.iter_mut().enumerate() {
            let shown = if layout == Layout::Sharded {
                format!("{}: ", file.path().display())
            } else {
                String::new()
            };
            warnings.extend(file.warnings().iter().map(|w| format!("{shown}{w}")));
            if key.is_some() && file.format() == Format::Safetensors {
                warnings.push(format!(
                    "{shown}--key applies to torch.save files; this safetensors file has one state dict"
                ));
            }
            // Moved, not copied: tens of thousands of names and shapes in big checkpoints.
            // The first file's list becomes the checkpoint's: building another one touched
            // megabytes of fresh memory for a single-file checkpoint.
            let mut taken = file.take_tensors();
            if let Some(m) = only {
                taken.retain(|t| m.get(&t.name) == Some(&fi));
            }
            for t in &mut taken {
                t.file = fi;
            }
            if tensors.is_empty() {
                tensors = taken;
            } else {
                tensors.append(&mut taken);
            }
        }
        // Names are unique (per file by header validation or the pickle reader, across
        // shards by the index's map), so an unstable sort gives the same order without a
        // scratch copy of the list.
        tensors.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        let hasher = foldhash::fast::RandomState::default();
        let mut index = HashTable::with_capacity(tensors.len());
        for (i, t) in tensors.iter().enumerate() {
            index.insert_unique(hasher.hash_one(&t.name), i, |&j| {
                hasher.hash_one(&tensors[j].name)
            });
        }
        let format = files
            .first()
            .map_or(Format::Safetensors, CheckpointFile::format);
        let key = files
            .iter()
            .find_map(CheckpointFile::key)
            .map(str::to_owned);
        Checkpoint {
            path,
            layout,
            files,
            format,
            key,
            tensors,
            index,
            hasher,
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
    pub fn files(&self) -> &[CheckpointFile] {
        &self.files
    }

    /// The container format (of the first shard, for an index).
    pub fn format(&self) -> Format {
        self.format
    }

    /// The dot path of the state dict inside a torch.save file, `None` for the top level
    /// or a safetensors file.
    pub fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }

    /// Every tensor, sorted by name.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// The tensor called `name`.
    pub fn get(&self, name: &str) -> Option<&TensorInfo> {
        self.index
            .find(self.hasher.hash_one(name), |&i| {
                self.tensors[i].name == name
            })
            .map(|&i| &self.tensors[i])
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
        self.files.iter().map(CheckpointFile::len).sum()
    }

    /// All bytes of a tensor of this checkpoint.
    pub fn bytes(&self, t: &TensorInfo) -> Result<Cow<'_, [u8]>, CheckpointError> {
        self.read(t, 0, t.bytes)
    }

    /// `len` bytes of a tensor starting `offset` bytes into it, for streaming comparisons.
    pub fn read(
        &self,
        t: &TensorInfo,
        offset: u64,
        len: u64,
    ) -> Result<Cow<'_, [u8]>, CheckpointError> {
        debug_assert!(offset + len <= t.bytes);
        match (&self.files[t.file], t.view.as_deref()) {
            (CheckpointFile::Torch(f), Some(view)) => {
                Ok(Cow::Owned(f.read_view(t, view, offset, len)?))
            }
            (file, _) => {
                let start = t.start + offset;
                file.read_data(start, start + len, &t.name)
            }
        }
    }

    /// Fills `buf` with bytes of a tensor starting `offset` bytes into it, with a positioned
    /// read into the caller's buffer (see [`SafetensorsFile::read_into`]); a strided
    /// torch.save view is gathered.
    pub fn read_into(
        &self,
        t: &TensorInfo,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<(), CheckpointError> {
        debug_assert!(offset + buf.len() as u64 <= t.bytes);
        match (&self.files[t.file], t.view.as_deref()) {
            (CheckpointFile::Torch(f), Some(view)) => {
                buf.copy_from_slice(&f.read_view(t, view, offset, buf.len() as u64)?);
                Ok(())
            }
            (file, _) => file.read_data_into(t.start + offset, buf, &t.name),
        }
    }

    /// The tensor's values as `f64`, or `None` when its dtype cannot be decoded.
    pub fn values(&self, t: &TensorInfo) -> Result<Option<Vec<f64>>, CheckpointError> {
        Ok(t.dtype.decode(&self.bytes(t)?))
    }

    /// The values of several tensors, as [`Checkpoint::values`] gives them, in the order
    /// asked. Tensors stored at most [`COALESCE_GAP`] bytes apart in one file are fetched
    /// with a single read: a BatchNorm layer's four or five small tensors are usually
    /// adjacent, so listing thousands of layers costs one read per layer, not per tensor.
    pub fn values_many(
        &self,
        tensors: &[&TensorInfo],
    ) -> Result<Vec<Option<Vec<f64>>>, CheckpointError> {
        let mut out = vec![None; tensors.len()];
        let plan = ReadPlan::of(tensors);
        for &i in &plan.views {
            out[i] = self.values(tensors[i])?;
        }
        for run in plan.runs() {
            let (first, end) = run_span(run);
            let bytes = self.files[first.file].read_data(first.start, end, &first.name)?;
            for &(i, t) in run {
                let at = (t.start - first.start) as usize;
                out[i] = t.dtype.decode(&bytes[at..at + t.bytes as usize]);
            }
        }
        Ok(out)
    }

    /// Reads the bytes of several tensors into `buf`, which is resized to hold them, and
    /// returns where each tensor's bytes are in it, in the order asked. Like
    /// [`Checkpoint::values_many`], one positioned read fetches each run of tensors stored
    /// at most [`COALESCE_GAP`] bytes apart (the gaps are read too, so `buf` may be a little
    /// larger than the tensors); never through the memory map, as [`Checkpoint::read_into`].
    pub fn read_many_into(
        &self,
        tensors: &[&TensorInfo],
        buf: &mut Vec<u8>,
    ) -> Result<Vec<Range<usize>>, CheckpointError> {
        let plan = ReadPlan::of(tensors);
        let spans: Vec<(&TensorInfo, u64)> = plan.runs().map(run_span).collect();
        let views: usize = plan.views.iter().map(|&i| tensors[i].bytes as usize).sum();
        let stored: usize = spans.iter().map(|(f, end)| (end - f.start) as usize).sum();
        buf.resize(views + stored, 0);
        let mut out = vec![0..0; tensors.len()];
        let mut at = 0;
        for &i in &plan.views {
            let t = tensors[i];
            out[i] = at..at + t.bytes as usize;
            self.read_into(t, 0, &mut buf[out[i].clone()])?;
            at = out[i].end;
        }
        for (run, (first, end)) in plan.runs().zip(spans) {
            let len = (end - first.start) as usize;
            self.files[first.file].read_data_into(
                first.start,
                &mut buf[at..at + len],
                &first.name,
            )?;
            for &(i, t) in run {
                let from = at + (t.start - first.start) as usize;
                out[i] = from..from + t.bytes as usize;
            }
            at += len;
        }
        Ok(out)
    }

    /// [`Checkpoint::values_many`] through positioned reads ([`Checkpoint::read_many_into`])
    /// rather than the map, for the same reason as [`Checkpoint::read_values`].
    pub fn read_values_many(
        &self,
        tensors: &[&TensorInfo],
    ) -> Result<Vec<Option<Vec<f64>>>, CheckpointError> {
        let mut buf = Vec::new();
        let ranges = self.read_many_into(tensors, &mut buf)?;
        Ok(tensors
            .iter()
            .zip(ranges)
            .map(|(t, r)| t.dtype.decode(&buf[r]))
            .collect())
    }

    /// [`Checkpoint::read_values_many`] of the tensors given, `None` for those absent.
    pub fn read_values_of<const N: usize>(
        &self,
        tensors: [Option<&TensorInfo>; N],
    ) -> Result<[Option<Vec<f64>>; N], CheckpointError> {
        let present: Vec<&TensorInfo> = tensors.iter().flatten().copied().collect();
        let mut read = self.read_values_many(&present)?.into_iter();
        Ok(tensors.map(|t| t.and_then(|_| read.next().flatten())))
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

/// How to read several tensors with few reads: positions into the tensors asked for.
struct ReadPlan<'t> {
    /// Tensors reached through a strided torch.save view, gathered one by one.
    views: Vec<usize>,
    /// The others, sorted by file and offset.
    stored: Vec<(usize, &'t TensorInfo)>,
}

impl<'t> ReadPlan<'t> {
    fn of(tensors: &[&'t TensorInfo]) -> Self {
        let (views, mut stored): (Vec<_>, Vec<_>) = tensors
            .iter()
            .copied()
            .enumerate()
            .partition(|(_, t)| t.view.is_some());
        stored.sort_by_key(|(_, t)| (t.file, t.start));
        ReadPlan {
            views: views.into_iter().map(|(i, _)| i).collect(),
            stored,
        }
    }

    /// Runs of stored tensors close enough together to be read at once.
    fn runs(&self) -> impl Iterator<Item = &[(usize, &'t TensorInfo)]> {
        self.stored
            .chunk_by(|(_, a), (_, b)| a.file == b.file && b.start <= a.end() + COALESCE_GAP)
    }
}

/// A run's first tensor and the end of its last byte (runs may overlap: tied tensors).
fn run_span<'t>(run: &[(usize, &'t TensorInfo)]) -> (&'t TensorInfo, u64) {
    let first = run[0].1;
    let end = run
        .iter()
        .map(|(_, t)| t.end())
        .max()
        .unwrap_or(first.start);
    (first, end)
}
