//! The safetensors writer: tensors of opened checkpoints, streamed into a new file.
//!
//! The `safetensors` crate, the format's reference implementation, lays out and validates
//! the header: each tensor is a [`View`], placed in the crate's order (descending dtype
//! alignment, then name) by [`safetensors::tensor::Metadata::new`], which checks every
//! offset and size, and serialised by its `TensorInfo`. The data section is not written
//! through `View::data`: the crate writes each tensor as one slice, so a 650 MiB tensor
//! would cost 650 MiB of memory (mapped pages count too). It is copied instead in
//! [`CHUNK`]-sized positioned reads (`Checkpoint::read_into`), cast where the dtype
//! changes, so memory stays at a few chunks whatever the checkpoint's size.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::io::{self, Write};

use safetensors::View;
use safetensors::tensor::{Metadata, TensorInfo as StInfo};
use serde::ser::{SerializeMap, Serializer};

use super::dtype::CastError;
use super::{Checkpoint, CheckpointError, Dtype, TensorInfo};

/// Bytes copied per read: large enough that system calls cost nothing next to the copy.
pub const CHUNK: usize = 8 << 20;

/// Why a checkpoint could not be written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// A source tensor could not be read.
    #[error(transparent)]
    Read(#[from] CheckpointError),
    /// A tensor's values do not convert to the dtype asked for.
    #[error("{tensor}: {source}")]
    Cast {
        /// The output tensor.
        tensor: String,
        /// Why.
        source: CastError,
    },
    /// The header is not a valid safetensors header (the crate's validation).
    #[error("invalid safetensors header: {0}")]
    Header(String),
    /// Writing failed.
    #[error("cannot write: {0}")]
    Io(#[from] io::Error),
}

/// One tensor of the output: its name and dtype there, and where its values come from.
#[derive(Debug, Clone)]
pub struct OutTensor<'c> {
    /// Name in the output.
    pub name: String,
    /// Dtype in the output; the source's values are cast to it where it differs.
    pub dtype: Dtype,
    /// The checkpoint holding the values.
    pub source: &'c Checkpoint,
    /// The tensor there (any name: only its place is read).
    pub tensor: &'c TensorInfo,
    shape: Vec<usize>,
}

impl<'c> OutTensor<'c> {
    /// `tensor` of `source`, written as `name` with `dtype`. Refuses a cast that cannot be
    /// made, and a shape this platform cannot index.
    pub fn new(
        name: String,
        dtype: Dtype,
        source: &'c Checkpoint,
        tensor: &'c TensorInfo,
    ) -> Result<OutTensor<'c>, WriteError> {
        if !tensor.dtype.can_cast(dtype) {
            return Err(WriteError::Cast {
                tensor: name,
                source: CastError::Unsupported {
                    from: tensor.dtype,
                    to: dtype,
                },
            });
        }
        let shape = tensor
            .shape
            .iter()
            .map(|&d| usize::try_from(d))
            .collect::<Result<Vec<usize>, _>>()
            .map_err(|e| WriteError::Header(format!("{name}: {e}")))?;
        Ok(OutTensor {
            name,
            dtype,
            source,
            tensor,
            shape,
        })
    }

    /// Output bytes per source byte, as a fraction (output element bytes, source's).
    fn widths(&self) -> (u64, u64) {
        (
            self.dtype.bits().div_ceil(8),
            self.tensor.dtype.bits().div_ceil(8),
        )
    }

    /// Streams the values into `out`, through `buf` (reused between tensors) and `cast`.
    fn copy(
        &self,
        out: &mut dyn Write,
        buf: &mut Vec<u8>,
        cast: &mut Vec<u8>,
    ) -> Result<(), WriteError> {
        let (_, from) = self.widths();
        // Whole elements per chunk, so a cast never splits one.
        let step = (CHUNK as u64 / from.max(1)).max(1) * from.max(1);
        let mut done = 0;
        while done < self.tensor.bytes {
            let len = step.min(self.tensor.bytes - done) as usize;
            buf.resize(len, 0);
            self.source.read_into(self.tensor, done, buf)?;
            if self.tensor.dtype == self.dtype {
                out.write_all(buf)?;
            } else {
                cast.clear();
                self.tensor
                    .dtype
                    .cast_into(buf, self.dtype, cast)
                    .map_err(|source| WriteError::Cast {
                        tensor: self.name.clone(),
                        source,
                    })?;
                out.write_all(cast)?;
            }
            done += len as u64;
        }
        Ok(())
    }
}

impl View for OutTensor<'_> {
    fn dtype(&self) -> safetensors::Dtype {
        st_dtype(self.dtype)
    }

    fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The whole tensor in memory, as `safetensors::serialize` asks for it; the writer of
    /// this module streams instead.
    fn data(&self) -> Cow<'_, [u8]> {
        let mut out = Vec::with_capacity(self.data_len());
        let (mut buf, mut cast) = (Vec::new(), Vec::new());
        match self.copy(&mut out, &mut buf, &mut cast) {
            Ok(()) => Cow::Owned(out),
            // The trait has no error path; an unreadable tensor reads as empty, which the
            // caller's length check then rejects.
            Err(_) => Cow::Owned(Vec::new()),
        }
    }

    fn data_len(&self) -> usize {
        let (to, from) = self.widths();
        (self.tensor.bytes / from.max(1) * to) as usize
    }
}

/// The crate's dtype for ours (the same list, named alike).
fn st_dtype(d: Dtype) -> safetensors::Dtype {
    use safetensors::Dtype as S;
    match d {
        Dtype::Bool => S::BOOL,
        Dtype::U8 => S::U8,
        Dtype::I8 => S::I8,
        Dtype::U16 => S::U16,
        Dtype::I16 => S::I16,
        Dtype::U32 => S::U32,
        Dtype::I32 => S::I32,
        Dtype::U64 => S::U64,
        Dtype::I64 => S::I64,
        Dtype::F16 => S::F16,
        Dtype::BF16 => S::BF16,
        Dtype::F32 => S::F32,
        Dtype::F64 => S::F64,
        Dtype::F8E4M3 => S::F8_E4M3,
        Dtype::F8E5M2 => S::F8_E5M2,
        Dtype::F8E4M3Fnuz => S::F8_E4M3FNUZ,
        Dtype::F8E5M2Fnuz => S::F8_E5M2FNUZ,
        Dtype::F8E8M0 => S::F8_E8M0,
        Dtype::F6E2M3 => S::F6_E2M3,
        Dtype::F6E3M2 => S::F6_E3M2,
        Dtype::F4 => S::F4,
        Dtype::C64 => S::C64,
    }
}

/// The header: `__metadata__` (sorted, so that the same inputs give the same bytes) and
/// the tensors in data order, each serialised by the crate.
struct Header<'m> {
    metadata: &'m BTreeMap<String, String>,
    layout: &'m Metadata,
}

impl serde::Serialize for Header<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let keys = self.layout.offset_keys();
        let mut map = s.serialize_map(Some(keys.len() + 1))?;
        if !self.metadata.is_empty() {
            map.serialize_entry("__metadata__", self.metadata)?;
        }
        for k in &keys {
            map.serialize_entry(k, &self.layout.info(k))?;
        }
        map.end()
    }
}

/// A safetensors file laid out and ready to stream: the header is built, nothing read.
#[derive(Debug)]
pub struct Prepared<'c> {
    tensors: Vec<OutTensor<'c>>,
    header: Vec<u8>,
    data: u64,
}

impl Prepared<'_> {
    /// Lays out `tensors` (names unique) with `metadata`.
    pub fn new<'c>(
        mut tensors: Vec<OutTensor<'c>>,
        metadata: &BTreeMap<String, String>,
    ) -> Result<Prepared<'c>, WriteError> {
        // The crate's order: descending alignment, then name.
        tensors.sort_by(|x, y| y.dtype().cmp(&x.dtype()).then(x.name.cmp(&y.name)));
        let mut offset = 0;
        let mut infos = Vec::with_capacity(tensors.len());
        for t in &tensors {
            let n = t.data_len();
            infos.push((
                t.name.clone(),
                StInfo {
                    dtype: t.dtype(),
                    shape: t.shape.clone(),
                    data_offsets: (offset, offset + n),
                },
            ));
            offset += n;
        }
        let layout = Metadata::new(None::<HashMap<String, String>>, infos)
            .map_err(|e| WriteError::Header(e.to_string()))?;
        let mut header = serde_json::to_vec(&Header {
            metadata,
            layout: &layout,
        })
        .map_err(|e| WriteError::Header(e.to_string()))?;
        // The data section starts 8-byte aligned, padded with spaces as the crate does.
        header.resize(header.len().next_multiple_of(8), b' ');
        Ok(Prepared {
            tensors,
            header,
            data: offset as u64,
        })
    }

    /// Size of the file in bytes.
    pub fn len(&self) -> u64 {
        8 + self.header.len() as u64 + self.data
    }

    /// Whether the file would be empty (never: it has a header).
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Streams the file into `out`.
    pub fn write(&self, out: &mut dyn Write) -> Result<(), WriteError> {
        out.write_all(&(self.header.len() as u64).to_le_bytes())?;
        out.write_all(&self.header)?;
        let (mut buf, mut cast) = (Vec::new(), Vec::new());
        for t in &self.tensors {
            t.copy(out, &mut buf, &mut cast)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::ReadMode;

    /// The crate's own serialiser, given the same views, writes the same tensors at the
    /// same offsets, and the crate reads our file back as it wrote its own.
    #[test]
    fn matches_the_crates_serialiser() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src.safetensors");
        let f32s: Vec<u8> = [1.5f32, -2.0, 0.1]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        let counter = 7i64.to_le_bytes().to_vec();
        let tensors: Vec<(&str, safetensors::tensor::TensorView<'_>)> = vec![
            (
                "bn.running_mean",
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![3], &f32s)
                    .unwrap(),
            ),
            (
                "bn.num_batches_tracked",
                safetensors::tensor::TensorView::new(safetensors::Dtype::I64, vec![], &counter)
                    .unwrap(),
            ),
        ];
        safetensors::serialize_to_file(tensors, None, &src).unwrap();
        let ck = Checkpoint::open(&src, ReadMode::Pread).unwrap();
        let views = || {
            ck.tensors()
                .iter()
                .map(|t| {
                    let dtype = if t.dtype == Dtype::F32 {
                        Dtype::F16
                    } else {
                        t.dtype
                    };
                    OutTensor::new(format!("x.{}", t.name), dtype, &ck, t).unwrap()
                })
                .collect::<Vec<_>>()
        };
        let metadata = BTreeMap::from([("format".to_owned(), "pt".to_owned())]);
        let mut ours = Vec::new();
        let prepared = Prepared::new(views(), &metadata).unwrap();
        prepared.write(&mut ours).unwrap();
        assert_eq!(prepared.len(), ours.len() as u64);
        let theirs = safetensors::serialize(
            views().into_iter().map(|v| (v.name.clone(), v)),
            Some(HashMap::from([("format".to_owned(), "pt".to_owned())])),
        )
        .unwrap();
        // One metadata key: the crate's HashMap order cannot differ from ours.
        assert_eq!(ours, theirs);
        let read = safetensors::SafeTensors::deserialize(&ours).unwrap();
        let mean = read.tensor("x.bn.running_mean").unwrap();
        assert_eq!(mean.dtype(), safetensors::Dtype::F16);
        let halves: Vec<f32> = mean
            .data()
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect();
        assert_eq!(halves, [1.5, -2.0, half::f16::from_f32(0.1).to_f32()]);
    }
}
