//! Activation files: what the capture plugin writes and `explain --activations` reads.
//!
//! A safetensors file with `<layer>.input.<i>` (the input of forward `i`, `N×C×…`) and
//! optionally `<layer>.output.<i>`, and in `__metadata__["bnaudit"]` a JSON object
//! `{<layer>: {momentum, eps, training, track_running_stats}}` (momentum `null` is the
//! cumulative average). The plugin adds `training_per_forward` (one flag per forward) and
//! `num_batches_tracked` (the counter before the first captured forward).

use std::collections::BTreeMap;
use std::path::PathBuf;

use ndarray::ArrayD;
use serde_json::{Map, Value};

use super::explain::ExplainError;
use crate::bn::Momentum;
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
pub struct Forward {
    /// The input tensor.
    pub input: TensorInfo,
    /// The output tensor, if recorded.
    pub output: Option<TensorInfo>,
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

/// A captured tensor decoded in the precision the forward pass runs in.
#[derive(Debug, Clone)]
pub enum Values {
    /// `f32` and narrower floats (PyTorch computes half precision BatchNorm in `f32`).
    F32(ArrayD<f32>),
    /// `f64`.
    F64(ArrayD<f64>),
}

/// An opened activation file.
#[derive(Debug)]
pub struct Activations<'c> {
    file: &'c Checkpoint,
    /// Captured layers by name.
    pub layers: BTreeMap<String, CapturedLayer>,
}

impl<'c> Activations<'c> {
    /// Reads the key structure and metadata of `file`; tensor data is read on demand.
    pub fn read(file: &'c Checkpoint) -> Result<Activations<'c>, ExplainError> {
        let bad = |problem: String| ExplainError::input(file.path(), problem);
        let mut inputs: BTreeMap<String, BTreeMap<usize, &TensorInfo>> = BTreeMap::new();
        let mut outputs: BTreeMap<String, BTreeMap<usize, &TensorInfo>> = BTreeMap::new();
        for t in file.tensors() {
            let (layer, kind, index) = split_key(&t.name).ok_or_else(|| {
                bad(format!(
                    "tensor {:?} is not named <layer>.input.<i> or <layer>.output.<i>",
                    t.name
                ))
            })?;
            if !t.dtype.is_float() || !t.dtype.is_decodable() {
                return Err(bad(format!(
                    "tensor {:?} has dtype {}, not a float bnaudit can decode",
                    t.name, t.dtype
                )));
            }
            let map = if kind == "input" {
                &mut inputs
            } else {
                &mut outputs
            };
            map.entry(layer.to_owned()).or_default().insert(index, t);
        }
        let mut meta = metadata(file)?;
        let mut layers = BTreeMap::new();
        for (name, by_index) in inputs {
            let mut outs = outputs.remove(&name).unwrap_or_default();
            let mut forwards = Vec::with_capacity(by_index.len());
            for (expected, (i, input)) in by_index.into_iter().enumerate() {
                if i != expected {
                    return Err(bad(format!(
                        "layer {name:?}: inputs must be numbered 0, 1, 2, …; {name}.input.{expected} is missing"
                    )));
                }
                let output = outs.remove(&i).cloned();
                if let Some(o) = &output
                    && o.shape != input.shape
                {
                    return Err(bad(format!(
                        "{}: shape {:?} differs from its input's {:?}",
                        o.name, o.shape, input.shape
                    )));
                }
                forwards.push(Forward {
                    input: input.clone(),
                    output,
                });
            }
            if let Some((i, _)) = outs.into_iter().next() {
                return Err(bad(format!("{name}.output.{i} has no {name}.input.{i}")));
            }
            let meta = meta.remove(&name).unwrap_or_default();
            layers.insert(
                name.clone(),
                CapturedLayer {
                    name,
                    forwards,
                    meta,
                },
            );
        }
        if let Some((name, _)) = outputs.into_iter().next() {
            return Err(bad(format!("layer {name:?} has outputs but no inputs")));
        }
        if layers.is_empty() {
            return Err(bad("holds no <layer>.input.<i> tensor".to_owned()));
        }
        Ok(Activations { file, layers })
    }

    /// The file's path.
    pub fn path(&self) -> PathBuf {
        self.file.path().to_owned()
    }

    /// Reads and decodes a captured tensor.
    pub fn values(&self, t: &TensorInfo) -> Result<Values, ExplainError> {
        let shape: Vec<usize> = t.shape.iter().map(|&d| d as usize).collect();
        let bytes = self.file.bytes(t)?;
        fn array<T>(shape: Vec<usize>, v: Vec<T>) -> ArrayD<T> {
            ArrayD::from_shape_vec(shape, v).expect("header sizes were checked on open")
        }
        Ok(match t.dtype {
            Dtype::F64 => Values::F64(array(shape, from_le(&bytes, f64::from_le_bytes))),
            Dtype::F32 => Values::F32(array(shape, from_le(&bytes, f32::from_le_bytes))),
            // Narrower floats are exact in f32.
            other => Values::F32(array(
                shape,
                other
                    .decode(&bytes)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|v| v as f32)
                    .collect(),
            )),
        })
    }
}

/// Little-endian values of `N` bytes each.
fn from_le<const N: usize, T>(bytes: &[u8], f: fn([u8; N]) -> T) -> Vec<T> {
    bytes
        .chunks_exact(N)
        .map(|c| f(c.try_into().expect("chunk of N bytes")))
        .collect()
}

/// `(layer, "input" | "output", i)` of a key `<layer>.input.<i>`.
fn split_key(name: &str) -> Option<(&str, &str, usize)> {
    let (rest, index) = name.rsplit_once('.')?;
    let (layer, kind) = rest.rsplit_once('.')?;
    let index = (!index.is_empty() && index.bytes().all(|b| b.is_ascii_digit()))
        .then(|| index.parse().ok())??;
    (matches!(kind, "input" | "output") && !layer.is_empty()).then_some((layer, kind, index))
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

    #[test]
    fn keys() {
        assert_eq!(
            split_key("backbone.1.input.0"),
            Some(("backbone.1", "input", 0))
        );
        assert_eq!(split_key("a.output.12"), Some(("a", "output", 12)));
        assert_eq!(split_key("a.input.x"), None);
        assert_eq!(split_key("a.weight.0"), None);
        assert_eq!(split_key("input.0"), None);
    }
}
