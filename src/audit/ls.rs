//! `ls`: the BatchNorm layers of one checkpoint, with statistics and health flags.

use std::collections::BTreeMap;

use rayon::prelude::*;
use serde::Serialize;

use super::SCHEMA_VERSION;
use crate::bn::{self, BnKeys, BnLayer, Convention, Flag, LayerValues, Role, TensorStats};
use crate::checkpoint::{Checkpoint, CheckpointError, Dtype, Format, Layout, TensorInfo};

/// Options of the `ls` report.
#[derive(Debug, Clone, Copy, Default)]
pub struct LsOptions {
    /// Also list every tensor of the checkpoint.
    pub all: bool,
}

/// What `ls` reports.
#[derive(Debug, Clone, Serialize)]
pub struct LsReport {
    /// JSON schema version, 1.
    pub schema_version: u32,
    /// The checkpoint.
    pub checkpoint: CheckpointSummary,
    /// Every BatchNorm layer, sorted by name.
    pub layers: Vec<LsLayer>,
    /// Every tensor, with `--all`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tensors: Option<Vec<TensorEntry>>,
}

/// A checkpoint as a whole.
#[derive(Debug, Clone, Serialize)]
pub struct CheckpointSummary {
    /// The file or index opened.
    pub path: String,
    /// The files read: the file itself, or each shard.
    pub files: Vec<String>,
    /// Number of tensors.
    pub tensors: usize,
    /// Size of the files on disk.
    pub bytes: u64,
    /// `__metadata__` (or the index's `metadata`).
    pub metadata: BTreeMap<String, String>,
    /// `file` or `sharded`.
    pub layout: Layout,
    /// `safetensors` or `torch`.
    pub format: Format,
    /// The state dict's key inside a torch.save file, `null` for the top level.
    pub key: Option<String>,
    /// Number of tensors of each dtype.
    pub dtypes: BTreeMap<Dtype, usize>,
    /// Number of BatchNorm layers.
    pub bn_layers: usize,
    /// Non-fatal observations about the files.
    pub warnings: Vec<String>,
}

impl CheckpointSummary {
    /// Where the tensors came from when that is not a plain safetensors file:
    /// `torch.save`, with the state dict's key when one was used.
    pub fn origin(&self) -> Option<String> {
        match (self.format, &self.key) {
            (Format::Safetensors, _) => None,
            (Format::Torch, None) => Some("torch.save".to_owned()),
            (Format::Torch, Some(key)) => Some(format!("torch.save, key {key}")),
        }
    }

    /// Summarises `ckpt`; `bn_layers` is the number of BatchNorm layers found in it.
    pub fn of(ckpt: &Checkpoint, bn_layers: usize) -> Self {
        let mut dtypes = BTreeMap::new();
        for t in ckpt.tensors() {
            *dtypes.entry(t.dtype).or_insert(0) += 1;
        }
        CheckpointSummary {
            path: ckpt.path().display().to_string(),
            files: ckpt
                .files()
                .iter()
                .map(|f| f.path().display().to_string())
                .collect(),
            tensors: ckpt.tensors().len(),
            bytes: ckpt.file_bytes(),
            metadata: ckpt.metadata().clone(),
            layout: ckpt.layout(),
            format: ckpt.format(),
            key: ckpt.key().map(str::to_owned),
            dtypes,
            bn_layers,
            warnings: ckpt.warnings().to_vec(),
        }
    }
}

/// One BatchNorm layer.
#[derive(Debug, Clone, Serialize)]
pub struct LsLayer {
    /// Module path (collection prefix removed).
    pub name: String,
    /// Naming convention.
    pub convention: Convention,
    /// Channel count.
    pub channels: u64,
    /// Dtype of the running statistics.
    pub dtype: Dtype,
    /// Checkpoint keys of its tensors.
    pub keys: BnKeys,
    /// Counter value, `null` when the layer has none.
    pub num_batches_tracked: Option<i64>,
    /// Summary of each float tensor, `null` when absent or undecodable.
    pub stats: BTreeMap<Role, Option<TensorStats>>,
    /// Health flags.
    pub flags: Vec<Flag>,
}

/// One tensor of the checkpoint (`--all`).
#[derive(Debug, Clone, Serialize)]
pub struct TensorEntry {
    /// Full name.
    pub name: String,
    /// Dtype.
    pub dtype: Dtype,
    /// Shape.
    pub shape: Vec<u64>,
    /// Bytes of data.
    pub bytes: u64,
    /// Whether bnaudit can decode its values (false for sub-byte floats and complex).
    pub decodable: bool,
    /// The BatchNorm layer it belongs to, if any.
    pub bn_layer: Option<String>,
}

/// Reads and decodes every tensor of `layer`.
pub fn layer_values(ckpt: &Checkpoint, layer: &BnLayer) -> Result<LayerValues, CheckpointError> {
    decode_layer(ckpt, layer, |tensors| ckpt.values_many(tensors))
}

/// [`layer_values`] with one positioned read per tensor, never through the memory map: the
/// pages of a mapped read stay resident for the rest of the run, so a pass over layers of
/// millions of channels, each read once, would hold every layer it has read.
pub fn layer_values_unmapped(
    ckpt: &Checkpoint,
    layer: &BnLayer,
) -> Result<LayerValues, CheckpointError> {
    decode_layer(ckpt, layer, |tensors| {
        tensors.iter().map(|t| ckpt.read_values(t)).collect()
    })
}

/// The layer's values, its tensors decoded by `read` (in the order given).
fn decode_layer(
    ckpt: &Checkpoint,
    layer: &BnLayer,
    read: impl FnOnce(&[&TensorInfo]) -> Result<Vec<Option<Vec<f64>>>, CheckpointError>,
) -> Result<LayerValues, CheckpointError> {
    let (roles, tensors): (Vec<Role>, Vec<&TensorInfo>) = layer
        .keys
        .iter()
        .filter_map(|(role, key)| ckpt.get(key).map(|t| (role, t)))
        .unzip();
    let mut values = LayerValues::default();
    for (role, decoded) in roles.into_iter().zip(read(&tensors)?) {
        match role {
            Role::Weight => values.weight = decoded,
            Role::Bias => values.bias = decoded,
            Role::RunningMean => values.running_mean = decoded,
            Role::RunningVar => values.running_var = decoded,
            // Counters are integers far below 2^53, so the f64 round trip is exact.
            Role::NumBatchesTracked => {
                values.num_batches_tracked =
                    decoded.and_then(|v| v.first().copied()).map(|v| v as i64);
            }
        }
    }
    Ok(values)
}

/// Builds the `ls` report of an opened checkpoint.
pub fn ls(ckpt: &Checkpoint, options: LsOptions) -> Result<LsReport, CheckpointError> {
    let found = bn::discover(ckpt.tensors());
    // Layers are independent: reading and summarising thousands of them is most of the
    // work, so it is spread over the cores. Collecting the results in order before looking
    // at errors keeps the reported error the first layer's, as a sequential loop would.
    let layers = found
        .par_iter()
        .map(|layer| ls_layer(ckpt, layer))
        .collect::<Vec<_>>()
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?;
    let tensors = options.all.then(|| tensor_entries(ckpt.tensors(), &found));
    Ok(LsReport {
        schema_version: SCHEMA_VERSION,
        checkpoint: CheckpointSummary::of(ckpt, found.len()),
        layers,
        tensors,
    })
}

/// Reads one layer's tensors and summarises them.
fn ls_layer(ckpt: &Checkpoint, layer: &BnLayer) -> Result<LsLayer, CheckpointError> {
    let values = layer_values(ckpt, layer)?;
    let summaries = values.stats();
    let flags = values.flags_of(&summaries);
    let stats = Role::FLOATS.into_iter().zip(summaries).collect();
    Ok(LsLayer {
        name: layer.name.clone(),
        convention: layer.convention,
        channels: layer.channels,
        dtype: layer.dtype,
        keys: layer.keys.clone(),
        num_batches_tracked: values.num_batches_tracked,
        stats,
        flags,
    })
}

fn tensor_entries(tensors: &[TensorInfo], layers: &[BnLayer]) -> Vec<TensorEntry> {
    let owner: BTreeMap<&str, &str> = layers
        .iter()
        .flat_map(|l| l.keys.iter().map(move |(_, k)| (k, l.name.as_str())))
        .collect();
    tensors
        .iter()
        .map(|t| TensorEntry {
            name: t.name.clone(),
            dtype: t.dtype,
            shape: t.shape.clone(),
            bytes: t.bytes,
            decodable: t.dtype.is_decodable(),
            bn_layer: owner.get(t.name.as_str()).map(|s| (*s).to_owned()),
        })
        .collect()
}
