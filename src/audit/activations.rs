//! Activation files: what the capture plugin writes and `explain --activations` reads.
//!
//! A safetensors file with `<layer>.input.<i>` (the input of forward `i`, `N×C×…`) and
//! optionally `<layer>.output.<i>`, and in `__metadata__["bnaudit"]` a JSON object
//! `{<layer>: {momentum, eps, training, track_running_stats}}` (momentum `null` is the
//! cumulative average). The plugin adds `training_per_forward` (one flag per forward) and
//! `num_batches_tracked` (the counter before the first captured forward).

use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::ops::Range;
use std::path::PathBuf;

use serde_json::{Map, Value};

use super::explain::ExplainError;
use crate::bn::stream::{Geometry, TileSource};
use crate::bn::{BatchStats, Momentum, Real};
use crate::checkpoint::{Checkpoint, Dtype, TensorInfo};

/// The `__metadata__` key holding the plugin's JSON.
pub const METADATA_KEY: &str = "bnaudit";

/// What the capture recorded about a layer's settings.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LayerMeta {
    /// `Some(Cma)` for `momentum: null`; `None` when the key is absent.
    pub momentum: Option<Momentum>,
    /// Epsilon.
    pub eps: Option<f64>,
    /// Training mode of the layer (of its first captured forward).
    pub training: Option<bool>,
    /// Training mode of each forward.
    pub training_per_forward: Option<Vec<bool>>,
    /// Whether the layer tracked running statistics.
    pub track_running_stats: Option<bool>,
    /// Counter before the first captured forward.
    pub num_batches_tracked: Option<i64>,
}

/// One captured forward of a layer.
#[derive(Debug, Clone)]
pub enum Forward {
    /// The layer's input, and its output if recorded.
    Tensors {
        /// The input tensor.
        input: TensorInfo,
        /// The output tensor, if recorded.
        output: Option<TensorInfo>,
    },
    /// A stats-only capture: the batch statistics that normalised, computed by the plugin.
    Stats(BatchStats),
}

impl Forward {
    /// The key naming this forward in messages.
    pub fn key(&self, layer: &str, i: usize) -> String {
        match self {
            Forward::Tensors { input, .. } => input.name.clone(),
            Forward::Stats(_) => format!("{layer}.batch_mean.{i}"),
        }
    }
}

/// A layer's captured forwards, in call order, and its settings.
#[derive(Debug, Clone)]
pub struct CapturedLayer {
    /// Layer name as captured.
    pub name: String,
    /// Forwards `0..n`.
    pub forwards: Vec<Forward>,
    /// Settings from the metadata.
    pub meta: LayerMeta,
}

impl CapturedLayer {
    /// Whether forward `i` ran in train mode; without metadata every forward is assumed to.
    pub fn trained(&self, i: usize) -> bool {
        let m = &self.meta;
        m.training_per_forward
            .as_ref()
            .and_then(|t| t.get(i).copied())
            .or(m.training)
            .unwrap_or(true)
            && self.meta.track_running_stats.unwrap_or(true)
    }
}

/// The kinds of captured tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Input,
    Output,
    BatchMean,
    BatchVar,
    BatchCount,
}

impl Kind {
    const ALL: [(&'static str, Kind); 5] = [
        ("input", Kind::Input),
        ("output", Kind::Output),
        ("batch_mean", Kind::BatchMean),
        ("batch_var", Kind::BatchVar),
        ("batch_count", Kind::BatchCount),
    ];

    fn name(self) -> &'static str {
        Kind::ALL
            .iter()
            .find(|(_, k)| *k == self)
            .map_or("", |(n, _)| n)
    }
}

/// A key's parts, or why it has none.
enum Key<'n> {
    Parsed(&'n str, Kind, usize),
    Unnamed,
    IndexTooLarge(&'n str),
}

/// Values of a stats-only tensor: at most this many bytes are read (a few bytes a channel).
const STATS_MAX_BYTES: u64 = 1 << 30;

/// An opened activation file.
#[derive(Debug)]
pub struct Activations<'c> {
    file: &'c Checkpoint,
    /// Captured layers by name.
    pub layers: BTreeMap<String, CapturedLayer>,
}

impl<'c> Activations<'c> {
    /// Reads the key structure and metadata of `file`; tensor data is read on demand (the
    /// small statistics of a stats-only capture now).
    pub fn read(file: &'c Checkpoint) -> Result<Activations<'c>, ExplainError> {
        let bad = |problem: String| ExplainError::input(file.path(), problem);
        let mut keys: BTreeMap<&str, BTreeMap<usize, BTreeMap<Kind, &TensorInfo>>> =
            BTreeMap::new();
        for t in file.tensors() {
            let (layer, kind, index) = match split_key(&t.name) {
                Key::Parsed(l, k, i) => (l, k, i),
                Key::Unnamed => {
                    return Err(bad(format!(
                        "tensor {:?} is not named <layer>.input.<i>, <layer>.output.<i> or <layer>.batch_mean|batch_var|batch_count.<i>",
                        t.name
                    )));
                }
                Key::IndexTooLarge(i) => {
                    return Err(bad(format!(
                        "tensor {:?}: forward index {i} is too large (at most {})",
                        t.name,
                        usize::MAX
                    )));
                }
            };
            check_tensor(t, kind).map_err(|p| bad(format!("tensor {:?} {p}", t.name)))?;
            keys.entry(layer)
                .or_default()
                .entry(index)
                .or_default()
                .insert(kind, t);
        }
        let mut meta = metadata(file)?;
        let mut layers = BTreeMap::new();
        for (name, by_index) in keys {
            let mut forwards = Vec::with_capacity(by_index.len());
            for (expected, (i, kinds)) in by_index.into_iter().enumerate() {
                if i != expected {
                    return Err(bad(format!(
                        "layer {name:?}: forwards must be numbered 0, 1, 2, …; {name}.input.{expected} (or its batch statistics) is missing"
                    )));
                }
                forwards.push(forward(file, name, i, &kinds).map_err(bad)?);
            }
            let meta = meta.remove(name).unwrap_or_default();
            layers.insert(
                name.to_owned(),
                CapturedLayer {
                    name: name.to_owned(),
                    forwards,
                    meta,
                },
            );
        }
        if layers.is_empty() {
            return Err(bad(
                "holds no <layer>.input.<i> or <layer>.batch_mean.<i> tensor".to_owned(),
            ));
        }
        Ok(Activations { file, layers })
    }

    /// The file's path.
    pub fn path(&self) -> PathBuf {
        self.file.path().to_owned()
    }

    /// `t` as a source of tiles decoded to `T`.
    pub fn source<'a, T>(&'a self, t: &'a TensorInfo) -> Tensor<'a, T> {
        Tensor {
            file: self.file,
            tensor: t,
            element: PhantomData,
        }
    }
}

/// Refuses a tensor that cannot be what its key says.
fn check_tensor(t: &TensorInfo, kind: Kind) -> Result<(), String> {
    match kind {
        Kind::Input | Kind::Output => {
            if !t.dtype.is_float() || !t.dtype.is_decodable() {
                return Err(format!(
                    "has dtype {}, not a float bnaudit can decode",
                    t.dtype
                ));
            }
            if !(2..=5).contains(&t.shape.len()) {
                return Err(format!(
                    "has shape {:?} of rank {}; BatchNorm inputs are N×C (rank 2) to N×C×D×H×W (rank 5)",
                    t.shape,
                    t.shape.len()
                ));
            }
            Geometry::of(&t.shape).map(drop).map_err(|e| {
                e.to_string()
                    .replacen("input of shape", "of shape", 1)
                    .replacen(" is empty", " holds no value", 1)
            })
        }
        Kind::BatchMean | Kind::BatchVar => {
            if t.dtype != Dtype::F64 || t.shape.len() != 1 || t.bytes > STATS_MAX_BYTES {
                return Err(format!(
                    "has dtype {} and shape {:?}; batch statistics are F64 of shape [C]",
                    t.dtype, t.shape
                ));
            }
            Ok(())
        }
        Kind::BatchCount => {
            if t.dtype != Dtype::I64 || t.elements() != 1 {
                return Err(format!(
                    "has dtype {} and shape {:?}; a batch count is one I64",
                    t.dtype, t.shape
                ));
            }
            Ok(())
        }
    }
}

/// Forward `i` of `layer` from its tensors: an input (and maybe an output), or the three
/// batch statistics.
fn forward(
    file: &Checkpoint,
    layer: &str,
    i: usize,
    kinds: &BTreeMap<Kind, &TensorInfo>,
) -> Result<Forward, String> {
    let get = |k: Kind| kinds.get(&k).copied();
    let missing = |k: Kind| format!("{layer}.{}.{i} is missing", k.name());
    if let Some(input) = get(Kind::Input) {
        if let Some(k) = [Kind::BatchMean, Kind::BatchVar, Kind::BatchCount]
            .into_iter()
            .find(|&k| get(k).is_some())
        {
            return Err(format!(
                "{layer}.{}.{i} beside {layer}.input.{i}: a forward is captured as tensors or as statistics, not both",
                k.name()
            ));
        }
        let output = get(Kind::Output);
        if let Some(o) = output
            && o.shape != input.shape
        {
            return Err(format!(
                "{}: shape {:?} differs from its input's {:?}",
                o.name, o.shape, input.shape
            ));
        }
        return Ok(Forward::Tensors {
            input: input.clone(),
            output: output.cloned(),
        });
    }
    if get(Kind::Output).is_some() {
        return Err(format!("{layer}.output.{i} has no {layer}.input.{i}"));
    }
    let [mean, var, count] = [Kind::BatchMean, Kind::BatchVar, Kind::BatchCount]
        .map(|k| get(k).ok_or_else(|| missing(k)));
    let (mean, var, count) = (mean?, var?, count?);
    if mean.shape != var.shape {
        return Err(format!(
            "{}: shape {:?} differs from {}'s {:?}",
            var.name, var.shape, mean.name, mean.shape
        ));
    }
    let values = |t: &TensorInfo| -> Result<Vec<f64>, String> {
        file.read_values(t)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("{}: cannot be decoded", t.name))
    };
    let n = values(count)?[0];
    if n.is_nan() || n < 1.0 {
        return Err(format!("{}: {n} values per channel", count.name));
    }
    Ok(Forward::Stats(BatchStats {
        mean: values(mean)?,
        var: values(var)?,
        count: n as u64,
    }))
}

/// A captured tensor read tile by tile with positioned reads into reused buffers: resident
/// memory stays at a tile per thread whatever the capture's size, and a file truncated under
/// us is an error, not a fault.
pub struct Tensor<'a, T> {
    file: &'a Checkpoint,
    tensor: &'a TensorInfo,
    element: PhantomData<T>,
}

/// A thread's buffers: the bytes read and the values decoded from them.
pub struct TileBuf<T> {
    bytes: Vec<u8>,
    values: Vec<T>,
}

impl<T> Default for TileBuf<T> {
    fn default() -> Self {
        TileBuf {
            bytes: Vec::new(),
            values: Vec::new(),
        }
    }
}

impl<T: Real> TileSource<T> for Tensor<'_, T> {
    type Error = ExplainError;
    type Buf = TileBuf<T>;

    fn tile<'s>(
        &'s self,
        range: Range<usize>,
        buf: &'s mut TileBuf<T>,
    ) -> Result<&'s [T], ExplainError> {
        let dtype = self.tensor.dtype;
        let width = (dtype.bits() / 8) as usize;
        let offset = (range.start * width) as u64;
        let native = match dtype {
            Dtype::F32 => size_of::<T>() == 4,
            Dtype::F64 => size_of::<T>() == 8,
            _ => false,
        };
        if native && cfg!(target_endian = "little") {
            // Straight into the values: the file holds them as this machine does.
            buf.values.resize(range.len(), T::ZERO);
            // SAFETY: T is f32 or f64 (the only `Real`s), for which every bit pattern is a
            // value; the byte view covers exactly the vector's initialised elements.
            let bytes = unsafe {
                std::slice::from_raw_parts_mut(
                    buf.values.as_mut_ptr().cast::<u8>(),
                    range.len() * width,
                )
            };
            self.file.read_into(self.tensor, offset, bytes)?;
            return Ok(&buf.values);
        }
        buf.bytes.resize(range.len() * width, 0);
        self.file.read_into(self.tensor, offset, &mut buf.bytes)?;
        buf.values.clear();
        let bytes = &buf.bytes;
        match dtype {
            Dtype::F32 => buf.values.extend(
                bytes
                    .chunks_exact(4)
                    .map(|c| T::from_f32(f32::from_le_bytes([c[0], c[1], c[2], c[3]]))),
            ),
            Dtype::F64 => buf.values.extend(
                bytes
                    .chunks_exact(8)
                    .map(|c| T::narrow(f64::from_le_bytes(c.try_into().expect("8 bytes")))),
            ),
            Dtype::BF16 => buf.values.extend(
                bytes
                    .chunks_exact(2)
                    .map(|c| T::from_f32(half::bf16::from_le_bytes([c[0], c[1]]).to_f32())),
            ),
            Dtype::F16 => buf.values.extend(
                bytes
                    .chunks_exact(2)
                    .map(|c| T::from_f32(half::f16::from_le_bytes([c[0], c[1]]).to_f32())),
            ),
            // The 8-bit and narrower floats, rare in captures: through f64, exact.
            other => {
                let mut wide = Vec::with_capacity(range.len());
                other.decode_into(bytes, &mut wide);
                buf.values.extend(wide.into_iter().map(T::narrow));
            }
        }
        Ok(&buf.values)
    }
}

/// `(layer, kind, i)` of a key `<layer>.<kind>.<i>`.
fn split_key(name: &str) -> Key<'_> {
    let parsed = || {
        let (rest, index) = name.rsplit_once('.')?;
        let (layer, kind) = rest.rsplit_once('.')?;
        let kind = Kind::ALL.iter().find(|(n, _)| *n == kind)?.1;
        (!index.is_empty() && index.bytes().all(|b| b.is_ascii_digit()) && !layer.is_empty())
            .then_some((layer, kind, index))
    };
    match parsed() {
        None => Key::Unnamed,
        Some((layer, kind, index)) => match index.parse() {
            Ok(i) => Key::Parsed(layer, kind, i),
            Err(_) => Key::IndexTooLarge(index),
        },
    }
}

/// Parses `__metadata__["bnaudit"]`, if present.
fn metadata(file: &Checkpoint) -> Result<BTreeMap<String, LayerMeta>, ExplainError> {
    let Some(text) = file.metadata().get(METADATA_KEY) else {
        return Ok(BTreeMap::new());
    };
    let bad = |problem: String| {
        ExplainError::input(
            file.path(),
            format!("__metadata__[\"{METADATA_KEY}\"]: {problem}"),
        )
    };
    let value: Value = serde_json::from_str(text).map_err(|e| bad(format!("invalid JSON: {e}")))?;
    let Value::Object(layers) = value else {
        return Err(bad("not a JSON object of layers".to_owned()));
    };
    layers
        .into_iter()
        .map(|(name, v)| {
            let Value::Object(fields) = v else {
                return Err(bad(format!("layer {name:?}: not a JSON object")));
            };
            let meta = layer_meta(&fields).map_err(|p| bad(format!("layer {name:?}: {p}")))?;
            Ok((name, meta))
        })
        .collect()
}

fn layer_meta(fields: &Map<String, Value>) -> Result<LayerMeta, String> {
    let number = |key: &str| -> Result<Option<f64>, String> {
        match fields.get(key) {
            None => Ok(None),
            Some(Value::Number(n)) => Ok(n.as_f64()),
            Some(other) => Err(format!("{key} is {other}, not a number")),
        }
    };
    let boolean = |key: &str| -> Result<Option<bool>, String> {
        match fields.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err(format!("{key} is {other}, not true or false")),
        }
    };
    let momentum = match fields.get("momentum") {
        None => None,
        Some(Value::Null) => Some(Momentum::Cma),
        Some(Value::Number(n)) => match n.as_f64() {
            Some(m) if (0.0..=1.0).contains(&m) => Some(Momentum::Value(m)),
            _ => return Err(format!("momentum {n} is outside [0, 1]")),
        },
        Some(other) => return Err(format!("momentum is {other}, not a number or null")),
    };
    let eps = number("eps")?;
    if eps.is_some_and(|e| e.is_nan() || e < 0.0) {
        return Err(format!("eps {} is negative", eps.unwrap_or_default()));
    }
    let per_forward = match fields.get("training_per_forward") {
        None => None,
        Some(Value::Array(flags)) => Some(
            flags
                .iter()
                .map(|f| f.as_bool())
                .collect::<Option<Vec<bool>>>()
                .ok_or("training_per_forward is not a list of true/false")?,
        ),
        Some(other) => return Err(format!("training_per_forward is {other}, not a list")),
    };
    Ok(LayerMeta {
        momentum,
        eps,
        training: boolean("training")?,
        training_per_forward: per_forward,
        track_running_stats: boolean("track_running_stats")?,
        num_batches_tracked: number("num_batches_tracked")?.map(|n| n as i64),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(name: &str) -> Option<(&str, Kind, usize)> {
        match split_key(name) {
            Key::Parsed(l, k, i) => Some((l, k, i)),
            _ => None,
        }
    }

    #[test]
    fn keys() {
        assert_eq!(
            parsed("backbone.1.input.0"),
            Some(("backbone.1", Kind::Input, 0))
        );
        assert_eq!(parsed("a.output.12"), Some(("a", Kind::Output, 12)));
        assert_eq!(parsed("a.batch_var.3"), Some(("a", Kind::BatchVar, 3)));
        assert_eq!(parsed("a.input.x"), None);
        assert_eq!(parsed("a.weight.0"), None);
        assert_eq!(parsed("input.0"), None);
        assert!(matches!(
            split_key("x.input.99999999999999999999999"),
            Key::IndexTooLarge("99999999999999999999999")
        ));
    }
}
