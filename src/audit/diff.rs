//! `diff`: what changed between two checkpoints, layer by layer, and why.
//!
//! The report types below are the JSON contract of DESIGN.md (`diff` section); `check`
//! embeds a [`DiffReport`] and the TUI presents one.

use std::collections::BTreeMap;

use serde::Serialize;

use super::CheckpointSummary;
use crate::checkpoint::Dtype;

pub use crate::bn::Momentum;

/// Options of `diff` (and of the diff inside `check`).
#[derive(Debug, Clone, Default)]
pub struct DiffOptions {
    /// Prefix to strip from A's names (`--strip-prefix-a`); `None` detects it.
    pub strip_prefix_a: Option<String>,
    /// Prefix to strip from B's names (`--strip-prefix-b`); `None` detects it.
    pub strip_prefix_b: Option<String>,
    /// Absolute tolerance; 0 with `rtol` 0 means bit-identical.
    pub atol: f64,
    /// Relative tolerance.
    pub rtol: f64,
    /// Momentum to assume instead of the convention's default (`--momentum`).
    pub momentum: Option<Momentum>,
}

/// How A's and B's names were aligned.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alignment {
    /// Prefix removed from A's names (empty for none).
    pub strip_a: String,
    /// Prefix removed from B's names (empty for none).
    pub strip_b: String,
    /// Whether the prefixes were detected (true) or forced by options (false).
    pub detected: bool,
    /// Tensors whose aligned names matched on both sides.
    pub matched: usize,
}

/// Classification of one BatchNorm layer (DESIGN's status table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Nothing changed (a cast alone included).
    Unchanged,
    /// Affine parameters unchanged or absent, running statistics changed.
    FrozenStatsDrift,
    /// Affine parameters and running statistics both changed.
    Trained,
    /// Affine parameters changed, running statistics not.
    AffineOnly,
    /// The counter went down or the statistics were re-initialised.
    StatsReset,
    /// The layer exists only in A.
    OnlyInA,
    /// The layer exists only in B.
    OnlyInB,
    /// Channel count or convention differs.
    Incompatible,
}

/// Per-tensor booleans or numbers of a layer, `null` where the tensor is absent.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct PerTensor<T> {
    /// Affine scale.
    pub weight: Option<T>,
    /// Affine shift.
    pub bias: Option<T>,
    /// Running mean.
    pub running_mean: Option<T>,
    /// Running variance.
    pub running_var: Option<T>,
}

/// What the update-rule algebra supports about a layer's change.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Inference {
    /// Train-mode forwards between A and B, from the counter delta.
    pub forwards: Option<i64>,
    /// Without a counter: the fewest forwards that can explain the change, where the algebra
    /// bounds it.
    pub forwards_min: Option<u64>,
    /// The momentum assumed.
    pub momentum: Momentum,
    /// Where the momentum came from: `convention`, `option`.
    pub momentum_source: String,
    /// Fraction of A's statistics retained in B, `(1-m)^k`.
    pub retained: Option<f64>,
    /// Whether B's statistics satisfy the update rule's bounds channel-wise.
    pub consistent: Option<bool>,
    /// Signatures and explanations, one sentence each.
    pub notes: Vec<String>,
}

/// One BatchNorm layer's comparison.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LayerDiff {
    /// Aligned module path.
    pub name: String,
    /// Classification.
    pub status: Status,
    /// Counter in A.
    pub nbt_a: Option<i64>,
    /// Counter in B.
    pub nbt_b: Option<i64>,
    /// `nbt_b - nbt_a` when both exist.
    pub nbt_delta: Option<i64>,
    /// Which tensors changed.
    pub changed: PerTensor<bool>,
    /// Largest absolute difference of each tensor.
    pub max_abs_diff: PerTensor<f64>,
    /// What the algebra supports.
    pub inference: Inference,
}

/// Severity of a group verdict, for colouring and ordering.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Nothing changed.
    Unchanged,
    /// Changes that look intended (training).
    Info,
    /// Changes worth a look.
    Warning,
    /// Frozen statistics drifted or were reset.
    Problem,
}

/// Statuses aggregated over a module prefix, with a verdict.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Group {
    /// Module prefix (a top-level sub-model, or one level down).
    pub prefix: String,
    /// BatchNorm layers under it.
    pub layers: usize,
    /// Count of each status.
    pub statuses: BTreeMap<Status, usize>,
    /// Severity for presentation.
    pub severity: Severity,
    /// One line a person understands at a glance.
    pub verdict: String,
}

/// Totals of a diff.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct DiffSummary {
    /// BatchNorm layers compared (both sides together).
    pub layers: usize,
    /// Count of each layer status.
    pub statuses: BTreeMap<Status, usize>,
    /// Tensors compared.
    pub tensors: usize,
    /// Count of each tensor change kind.
    pub tensor_changes: BTreeMap<TensorChange, usize>,
    /// Whether anything at all changed.
    pub changed: bool,
}

/// How one tensor differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TensorChange {
    /// Identical (or equal after casting to the narrower dtype, or within tolerance).
    Unchanged,
    /// Values differ.
    Changed,
    /// Only in B.
    Added,
    /// Only in A.
    Removed,
    /// Same values up to the cast, different dtype.
    DtypeChanged,
    /// Different shape.
    ShapeChanged,
}

/// One tensor's comparison.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TensorDiff {
    /// Aligned name.
    pub name: String,
    /// How it differs.
    pub change: TensorChange,
    /// Dtype in A.
    pub dtype_a: Option<Dtype>,
    /// Dtype in B.
    pub dtype_b: Option<Dtype>,
    /// Shape in A.
    pub shape_a: Option<Vec<u64>>,
    /// Shape in B.
    pub shape_b: Option<Vec<u64>>,
    /// Elements that differ.
    pub changed_elements: Option<u64>,
    /// Largest absolute difference.
    pub max_abs_diff: Option<f64>,
    /// `‖B−A‖₂ / ‖A‖₂`.
    pub rel_l2: Option<f64>,
}

/// What `diff` reports.
#[derive(Debug, Clone, Serialize)]
pub struct DiffReport {
    /// JSON schema version, 1.
    pub schema_version: u32,
    /// Checkpoint A.
    pub a: CheckpointSummary,
    /// Checkpoint B.
    pub b: CheckpointSummary,
    /// How names were aligned.
    pub alignment: Alignment,
    /// Totals.
    pub summary: DiffSummary,
    /// Verdicts by module prefix, most severe first.
    pub groups: Vec<Group>,
    /// Every BatchNorm layer.
    pub layers: Vec<LayerDiff>,
    /// Every tensor.
    pub tensors: Vec<TensorDiff>,
}
