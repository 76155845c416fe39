//! PyTorch `torch.save` files (the zip format of torch >= 1.6), read without executing
//! anything: the pickle is interpreted by a restricted stack machine ([`pickle`]) that only
//! builds values, the state dict is chosen among them ([`select`]), and tensor bytes are
//! read in place from the archive's stored entries ([`archive`]), through the same
//! positioned reads or memory map as safetensors files.

mod archive;
pub mod error;
mod globals;
mod pickle;
mod select;
mod view;

use std::borrow::Cow;
use std::path::Path;
use std::sync::OnceLock;

pub use archive::{MAX_INFLATED_BYTES, MAX_PICKLE_BYTES, MAX_ZIP_ENTRIES};
pub use error::TorchProblem;
pub use pickle::{MAX_MARK_DEPTH, MAX_MEMO, MAX_OPCODES};
pub use select::{MAX_DEPTH, STATE_DICT_KEYS};
pub use view::View;

use self::archive::{Archive, Entry, Place, Room};
use self::globals::Risk;
use self::pickle::{Pickle, Storage, TensorView};
use super::error::CheckpointError;
use super::raw::{RawFile, ReadMode};
use super::{Dtype, TensorInfo};

/// An open torch.save archive: its tensors located, their bytes read on demand.
#[derive(Debug)]
pub struct TorchFile {
    raw: RawFile,
    /// Deflated storage entries, inflated on first read.
    inflated: Vec<(Entry, OnceLock<Vec<u8>>)>,
    tensors: Vec<TensorInfo>,
    warnings: Vec<String>,
    key: Option<String>,
}

impl TorchFile {
    /// Opens the torch.save archive at `path` read-only: reads its central directory and
    /// pickle, picks the state dict (`key`, a dot path, or the usual places) and locates
    /// every tensor's bytes. No tensor data is read.
    pub fn open(path: &Path, mode: ReadMode, key: Option<&str>) -> Result<Self, CheckpointError> {
        Self::from_raw(RawFile::open(path)?, mode, key)
    }

    pub(crate) fn from_raw(
        mut raw: RawFile,
        mode: ReadMode,
        key: Option<&str>,
    ) -> Result<Self, CheckpointError> {
        let fail = |raw: &RawFile, p: TorchProblem| CheckpointError::new(raw.path(), p.into());
        // Mapped before the pickle is read, so that it is parsed in place (megabytes) rather
        // than copied.
        raw.map(mode)?;
        // What borrows the file's bytes (the pickle, its strings) ends with this block,
        // before the file is moved.
        let archive_slot = OnceLock::new();
        let (tensors, inflated, warnings, key) = {
            let (entries, first) = archive::first_pickle(&raw);
            let mut room = Room::for_entries(entries);
            let early = first.and_then(|pkl| {
                let bytes = archive::contents(&raw, &pkl, MAX_PICKLE_BYTES, "data.pkl size");
                Some((pkl, bytes.ok()?))
            });
            // The central directory is read and the storages' local headers located on
            // another thread while this one parses the pickle, found first from the
            // directory's first record: the two take about as long on a large state dict.
            // The pickle is built here, where it is also freed: freeing a quarter million
            // values from another thread than the one that allocated them costs several
            // times more.
            let (early, located) = std::thread::scope(|s| {
                let side = s.spawn(|| {
                    let read = Archive::read(&raw, &mut room)?;
                    let archive: &Archive = archive_slot.get_or_init(|| read);
                    let mut locating = archive.storages(room);
                    locating.run(&raw);
                    Ok::<_, CheckpointError>(locating.by_key())
                });
                let early = early
                    .as_ref()
                    .map(|(pkl, bytes)| (pkl, read_pickle(&raw, bytes, key)));
                let located = side.join().expect("locating storages does not panic");
                (early, located)
            });
            // Errors in the order a reader finds them: the directory, the byte order, the
            // pickle's entry, the pickle.
            let mut storages = located?;
            let archive = archive_slot.get().expect("the directory was read");
            if let Some(order) = archive.entry(&raw, "byteorder")? {
                let text = archive::contents(&raw, &order, 16, "byteorder entry size")?;
                if text.trim_ascii() == b"big" {
                    return Err(fail(&raw, TorchProblem::BigEndian));
                }
            }
            let Some(pkl) = archive.entry(&raw, "data.pkl")? else {
                return Err(fail(&raw, TorchProblem::NotCheckpoint));
            };
            // The pickle parsed early is the archive's only if the whole directory agrees.
            let bytes;
            let parsed = match early {
                Some((first, parsed)) if first.name == pkl.name && first.place == pkl.place => {
                    parsed
                }
                _ => {
                    bytes = archive::contents(&raw, &pkl, MAX_PICKLE_BYTES, "data.pkl size")?;
                    read_pickle(&raw, &bytes, key)
                }
            };
            let (pickle, selected) = parsed?;
            let mut warnings = global_warnings(&pickle);
            if !selected.duplicates.is_empty() {
                warnings.push(format!(
                    "{} tensor names appear more than once after flattening nested mappings; the first of each is kept ({})",
                    selected.duplicates.len(),
                    selected.duplicates[0]
                ));
            }
            let mut tensors = Vec::with_capacity(selected.tensors.len());
            let mut inflated = Vec::new();
            // A deflated storage is inflated once, however many tensors share it.
            let mut inflated_at: foldhash::HashMap<&str, usize> = Default::default();
            let mut undecodable = Vec::new();
            for (name, id) in selected.tensors {
                let Some(view) = pickle.tensor(id) else {
                    continue;
                };
                let storage = pickle
                    .storage(view.storage)
                    .expect("the pickle reader only rebuilds tensors over storages");
                let place = match storages.get(&storage.key) {
                    Some(Ok(place)) => place,
                    Some(Err(_)) => {
                        let Some(Err(e)) = storages.remove(&storage.key) else {
                            unreachable!("the entry was just found damaged");
                        };
                        return Err(e);
                    }
                    None if resolve_dtype(&view, storage).is_none() => {
                        undecodable.push(name);
                        continue;
                    }
                    None => {
                        return Err(CheckpointError::new(
                            raw.path(),
                            TorchProblem::MissingStorage {
                                tensor: name,
                                storage: storage.key.to_string(),
                                entry: archive.storage_entry(&storage.key),
                            }
                            .into(),
                        ));
                    }
                };
                let inflated = (!place.stored).then(|| {
                    *inflated_at.entry(&storage.key).or_insert_with(|| {
                        let entry = Entry {
                            name: archive.storage_entry(&storage.key),
                            place: *place,
                        };
                        inflated.push((entry, OnceLock::new()));
                        inflated.len() - 1
                    })
                });
                match tensor(raw.path(), place, inflated, name, &view, storage)? {
                    Ok(t) => tensors.push(t),
                    Err(name) => undecodable.push(name),
                }
            }
            if let Some(first) = undecodable.first() {
                warnings.push(format!(
                    "{} tensors of a dtype bnaudit does not read (complex128, quantized, …) are left out ({first})",
                    undecodable.len()
                ));
            }
            (tensors, inflated, warnings, selected.key)
        };
        Ok(TorchFile {
            raw,
            inflated,
            tensors,
            warnings,
            key,
        })
    }

    /// The file's path as given.
    pub fn path(&self) -> &Path {
        self.raw.path()
    }

    /// The file's length in bytes when opened.
    pub fn len(&self) -> u64 {
        self.raw.len()
    }

    /// Whether the file is empty (never, for an archive that opened).
    pub fn is_empty(&self) -> bool {
        self.raw.len() == 0
    }

    /// The state dict's tensors, in pickle order (empty once a
    /// [`Checkpoint`](super::Checkpoint) has taken them).
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// Hands the tensor list over to the [`Checkpoint`](super::Checkpoint) owning the file.
    pub(crate) fn take_tensors(&mut self) -> Vec<TensorInfo> {
        std::mem::take(&mut self.tensors)
    }

    /// Globals that are not understood (the dangerous ones by name), duplicate names,
    /// tensors left out.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The dot path of the state dict used; `None` for the top level.
    pub fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }

    /// The archive's bytes; stored tensor offsets count from its start.
    pub(crate) fn raw(&self) -> &RawFile {
        &self.raw
    }

    /// `len` bytes of `t`'s logical (row-major) bytes from `offset`, gathered through its
    /// view: strided elements are copied out of the storage span they lie in.
    pub(crate) fn read_view(
        &self,
        t: &TensorInfo,
        layout: &View,
        offset: u64,
        len: u64,
    ) -> Result<Vec<u8>, CheckpointError> {
        if len == 0 {
            return Ok(Vec::new());
        }
        let width = t.dtype.bits() / 8;
        let first = offset / width;
        let end = (offset + len).div_ceil(width);
        let offsets = view::element_offsets(&t.shape, &layout.strides, first, end - first);
        let min = offsets.iter().copied().min().unwrap_or(0);
        let max = offsets.iter().copied().max().unwrap_or(0);
        let (lo, hi) = (t.start + min * width, t.start + (max + 1) * width);
        let span: Cow<'_, [u8]> = match layout.inflated {
            None => self.raw.read(lo, hi, &t.name)?,
            Some(i) => {
                let (entry, cell) = &self.inflated[i];
                let bytes = match cell.get() {
                    Some(b) => b,
                    None => {
                        let b = archive::contents(
                            &self.raw,
                            entry,
                            MAX_INFLATED_BYTES,
                            "deflated storage size",
                        )?;
                        cell.get_or_init(|| b.into_owned())
                    }
                };
                Cow::Borrowed(&bytes[lo as usize..hi as usize])
            }
        };
        let all = view::gather(&span, &offsets, min, width as usize);
        let skip = (offset - first * width) as usize;
        Ok(all[skip..skip + len as usize].to_vec())
    }
}

/// Places one tensor in its located storage; `Err(name)` for one whose dtype bnaudit has
/// no counterpart of.
fn tensor(
    path: &Path,
    place: &Place,
    inflated: Option<usize>,
    name: String,
    view: &TensorView,
    storage: &Storage,
) -> Result<Result<TensorInfo, String>, CheckpointError> {
    let Some(dtype) = resolve_dtype(view, storage) else {
        return Ok(Err(name));
    };
    let bad = |what: String| {
        CheckpointError::new(
            path,
            TorchProblem::BadTensor {
                tensor: name.clone(),
                what,
            }
            .into(),
        )
    };
    let width = dtype.bits() / 8;
    let elements = view
        .shape
        .iter()
        .try_fold(1u64, |a, &n| a.checked_mul(n))
        .ok_or_else(|| bad(format!("shape {:?} overflows", view.shape)))?;
    let needed = view::extent(view.shape, view.stride)
        .and_then(|e| {
            if e == 0 {
                Some(0)
            } else {
                e.checked_add(view.offset)?.checked_mul(width)
            }
        })
        .ok_or_else(|| bad("its view reaches past any storage".to_owned()))?;
    if needed > place.size {
        return Err(CheckpointError::new(
            path,
            TorchProblem::ShortStorage {
                tensor: name,
                storage: storage.key.to_string(),
                needed,
                len: place.size,
            }
            .into(),
        ));
    }
    let offset_bytes = view.offset * width;
    let contiguous = view::is_contiguous(view.shape, view.stride);
    let (start, layout) = match (contiguous, inflated) {
        (true, None) => (place.data_start + offset_bytes, None),
        (_, inflated) => {
            let start = match inflated {
                Some(_) => offset_bytes,
                None => place.data_start + offset_bytes,
            };
            let strides = if contiguous {
                view::contiguous_strides(view.shape)
            } else {
                view.stride.to_vec()
            };
            let v = View {
                strides: strides.into(),
                inflated,
            };
            (start, Some(Box::new(v)))
        }
    };
    Ok(Ok(TensorInfo {
        name,
        dtype,
        shape: view.shape.to_vec(),
        file: 0,
        bytes: elements * width,
        start,
        view: layout,
    }))
}

/// Parses the pickle stream `bytes` and picks its state dict (`key`, or the usual places).
fn read_pickle<'b>(
    raw: &RawFile,
    bytes: &'b [u8],
    key: Option<&str>,
) -> Result<(Pickle<'b>, select::Selected), CheckpointError> {
    let fail = |p: TorchProblem| CheckpointError::new(raw.path(), p.into());
    let pickle = pickle::parse(bytes).map_err(fail)?;
    let selected = select::select(&pickle, key).map_err(fail)?;
    Ok((pickle, selected))
}

/// A tensor's element type; `None` for one bnaudit has no counterpart of.
fn resolve_dtype(view: &TensorView, storage: &Storage) -> Option<Dtype> {
    match view.dtype {
        Some(d) => d,
        None if storage.unknown_type => None,
        // An untyped storage under `_rebuild_tensor_v2` is bytes.
        None => Some(storage.dtype.unwrap_or(Dtype::U8)),
    }
}

/// One line per dangerous global, naming it; one line listing the others.
fn global_warnings(pickle: &Pickle) -> Vec<String> {
    let mut out = Vec::new();
    let mut unknown = Vec::new();
    for g in &pickle.unknown_globals {
        match globals::risk(g) {
            Risk::Dangerous => out.push(format!(
                "DANGEROUS global {g}: torch.load(weights_only=False) would call it and run code; bnaudit executed nothing (inert placeholder)"
            )),
            Risk::Unknown => unknown.push(&**g),
        }
    }
    if !unknown.is_empty() {
        out.push(format!(
            "globals not understood, kept as inert placeholders: {}",
            unknown.join(", ")
        ));
    }
    out
}
