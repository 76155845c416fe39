//! `diff`: what changed between two checkpoints, layer by layer, and why.
//!
//! The report types below are the JSON contract of DESIGN.md (`diff` section); `check`
//! embeds a [`DiffReport`] and the TUI presents one. [`diff`] builds it: align the names,
//! compare every tensor ([`super::compare`]), classify every BatchNorm layer and explain it
//! with the update rule's algebra ([`crate::bn::drift`]), then aggregate verdicts by module
//! prefix.

mod groups;
mod layers;

use std::collections::BTreeMap;

use foldhash::HashSet;

use serde::Serialize;

use super::align::{self, Aligned, normalise_prefix};
use super::compare::{self, Progress, Tolerance};
use super::{CheckpointSummary, SCHEMA_VERSION};
use crate::bn;
use crate::bn::Convention;
pub use crate::bn::Momentum;
use crate::checkpoint::Dtype;
use crate::checkpoint::{Checkpoint, CheckpointError};

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
    /// Module prefix added to A's names (after `strip_a`): A is a sub-model saved on its
    /// own, B the model that holds it under this prefix (empty for none).
    pub prefix_a: String,
    /// Module prefix added to B's names: B is the sub-model saved on its own.
    pub prefix_b: String,
    /// Whether the prefixes were detected (true) or forced by options (false).
    pub detected: bool,
    /// Tensors whose aligned names matched on both sides.
    pub matched: usize,
    /// Tensors of A with no counterpart in B after alignment.
    pub only_a: usize,
    /// Tensors of B with no counterpart in A after alignment.
    pub only_b: usize,
}

impl Alignment {
    /// A's tensor or layer name `raw`, as the report names it.
    pub fn name_a(&self, raw: &str) -> String {
        aligned_name(raw, &self.strip_a, &self.prefix_a)
    }

    /// B's tensor or layer name `raw`, as the report names it.
    pub fn name_b(&self, raw: &str) -> String {
        aligned_name(raw, &self.strip_b, &self.prefix_b)
    }

    /// The sub-model prefix added to one side, and which: `("A", "model_A.")`.
    pub fn submodel(&self) -> Option<(&'static str, &str)> {
        [("A", &self.prefix_a), ("B", &self.prefix_b)]
            .into_iter()
            .find(|(_, p)| !p.is_empty())
            .map(|(side, p)| (side, p.as_str()))
    }
}

fn aligned_name(raw: &str, strip: &str, added: &str) -> String {
    format!("{added}{}", raw.strip_prefix(strip).unwrap_or(raw))
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

impl Status {
    /// The JSON name.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Unchanged => "unchanged",
            Status::FrozenStatsDrift => "frozen_stats_drift",
            Status::Trained => "trained",
            Status::AffineOnly => "affine_only",
            Status::StatsReset => "stats_reset",
            Status::OnlyInA => "only_in_a",
            Status::OnlyInB => "only_in_b",
            Status::Incompatible => "incompatible",
        }
    }
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
    /// Smallest `B_var / A_var` over channels (A's variance positive), and where.
    pub var_ratio_min: Option<f64>,
    /// Channel of `var_ratio_min`.
    pub var_ratio_channel: Option<usize>,
    /// When the variance fell further than the assumed momentum allows: the smallest
    /// momentum that explains it over `forwards` forwards.
    pub momentum_min: Option<f64>,
    /// Channels whose running mean or variance is finite in A and NaN or infinite in B.
    pub nonfinite_channels: Vec<usize>,
    /// Signatures and explanations, one sentence each.
    pub notes: Vec<String>,
}

/// One BatchNorm layer's comparison.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LayerDiff {
    /// Aligned module path.
    pub name: String,
    /// Naming convention (A's, or B's when the layer is only in B).
    pub convention: Convention,
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
    /// Largest absolute difference of each tensor; `null` where the tensor is absent or
    /// some value became NaN or infinite (the difference is then no finite number).
    pub max_abs_diff: PerTensor<f64>,
    /// What the algebra supports.
    pub inference: Inference,
}

impl LayerDiff {
    /// Whether the layer only lost its counter: statistics and affine parameters unchanged,
    /// `num_batches_tracked` in A and not in B. That is a conversion to a BatchNorm whose
    /// statistics never move (torchvision's FrozenBatchNorm2d), not a change of the model.
    pub fn counter_dropped(&self) -> bool {
        self.status == Status::Unchanged && self.nbt_a.is_some() && self.nbt_b.is_none()
    }
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
    /// Module prefix (a top-level sub-model, or one level down); modules that behaved
    /// alike share one group, named by them all (`bn1, layer1, layer2`).
    pub prefix: String,
    /// The module prefixes of the group, one unless modules that behaved alike were merged.
    pub prefixes: Vec<String>,
    /// BatchNorm layers under it.
    pub layers: usize,
    /// Count of each status.
    pub statuses: BTreeMap<Status, usize>,
    /// Train-mode forwards (`inference.forwards`) when every layer of the group that counts
    /// them has the same number.
    pub forwards: Option<i64>,
    /// Tensors under the prefix other than running statistics and counters (weights,
    /// biases, affine parameters, other buffers).
    pub weights: usize,
    /// How many of those changed (a cast alone excluded).
    pub weights_changed: usize,
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

impl TensorChange {
    /// The JSON name.
    pub fn as_str(self) -> &'static str {
        match self {
            TensorChange::Unchanged => "unchanged",
            TensorChange::Changed => "changed",
            TensorChange::Added => "added",
            TensorChange::Removed => "removed",
            TensorChange::DtypeChanged => "dtype_changed",
            TensorChange::ShapeChanged => "shape_changed",
        }
    }
}

/// One tensor's comparison.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TensorDiff {
    /// Aligned name.
    pub name: String,
    /// The BatchNorm layer it belongs to, if any.
    pub bn_layer: Option<String>,
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
    /// Elements that differ beyond the tolerance.
    pub changed_elements: Option<u64>,
    /// Of those, elements where either value is NaN or infinite (not in `max_abs_diff`).
    pub nonfinite_changed: Option<u64>,
    /// Largest absolute difference over elements that differ with both values finite.
    pub max_abs_diff: Option<f64>,
    /// `‖B−A‖₂ / ‖A‖₂`, over finite values; `null` when A is all zeros and B is not.
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

impl DiffOptions {
    /// The value tolerance in force.
    pub fn tolerance(&self) -> Tolerance {
        Tolerance {
            atol: self.atol,
            rtol: self.rtol,
        }
    }
}

/// Compares checkpoints `a` and `b`: every tensor, every BatchNorm layer, with verdicts.
///
/// `progress` is told the bytes compared so far (see [`compare::compare_tensors`]).
pub fn diff(
    a: &Checkpoint,
    b: &Checkpoint,
    options: &DiffOptions,
    progress: Option<Progress<'_>>,
) -> Result<DiffReport, CheckpointError> {
    let aligned = align_names(a, b, options);
    diff_aligned(a, b, &aligned, options, &|_| true, progress)
}

/// Aligns A's and B's names as `options` say (forced prefixes, or detection).
pub fn align_names<'c>(a: &'c Checkpoint, b: &'c Checkpoint, options: &DiffOptions) -> Aligned<'c> {
    let strip_a = options.strip_prefix_a.as_deref().map(normalise_prefix);
    let strip_b = options.strip_prefix_b.as_deref().map(normalise_prefix);
    align::align(
        a.tensors(),
        b.tensors(),
        strip_a.as_deref(),
        strip_b.as_deref(),
    )
}

/// [`diff`] of the aligned tensors `select` accepts (by aligned name), and of the BatchNorm
/// layers holding any of them, whole; the other tensors are not read. `check` selects its
/// scope this way.
pub fn diff_aligned(
    a: &Checkpoint,
    b: &Checkpoint,
    aligned: &Aligned<'_>,
    options: &DiffOptions,
    select: &dyn Fn(&str) -> bool,
    progress: Option<Progress<'_>>,
) -> Result<DiffReport, CheckpointError> {
    let all_a = bn::discover(&aligned.a);
    let all_b = bn::discover(&aligned.b);
    let (layers_a, layers_b) = (all_a.len(), all_b.len());
    let selected = |l: &bn::BnLayer| l.keys.iter().any(|(_, k)| select(k));
    // Moved, not copied: a checkpoint may hold hundreds of thousands of layers.
    let found_a: Vec<bn::BnLayer> = all_a.into_iter().filter(selected).collect();
    let found_b: Vec<bn::BnLayer> = all_b.into_iter().filter(selected).collect();
    let (pairs, whole_model) = {
        let layer_keys: HashSet<&str> = found_a
            .iter()
            .chain(&found_b)
            .flat_map(|l| l.keys.iter().map(|(_, k)| k))
            .collect();
        let mut pairs = aligned.pairs();
        let total = pairs.len();
        pairs.retain(|p| select(p.name) || layer_keys.contains(p.name));
        let whole = pairs.len() == total;
        (pairs, whole)
    };
    let mut tensors = compare::compare_tensors(a, b, &pairs, options.tolerance(), progress)?;
    drop(pairs);
    // Each layer names its tensors, found by binary search in the sorted diffs: a map of a
    // million names would be the largest thing alive at this point. B's layer wins a name
    // both sides' layers hold, as it always did.
    for l in found_a.iter().chain(&found_b) {
        for (_, k) in l.keys.iter() {
            if let Ok(i) = tensors.binary_search_by(|t| t.name.as_str().cmp(k)) {
                tensors[i].bn_layer = Some(l.name.clone());
            }
        }
    }
    let sides = layers::Sides::new(a, b, aligned);
    let layers = layers::compare(&sides, &found_a, &found_b, &tensors, options)?;
    let groups = groups::groups(
        &layers,
        &found_a,
        &found_b,
        &tensors,
        whole_model,
        aligned.alignment.submodel(),
    );
    let summary = summarise(&layers, &tensors);
    Ok(DiffReport {
        schema_version: SCHEMA_VERSION,
        a: CheckpointSummary::of(a, layers_a),
        b: CheckpointSummary::of(b, layers_b),
        alignment: aligned.alignment.clone(),
        summary,
        groups,
        layers,
        tensors,
    })
}

fn summarise(layers: &[LayerDiff], tensors: &[TensorDiff]) -> DiffSummary {
    let mut s = DiffSummary {
        layers: layers.len(),
        tensors: tensors.len(),
        ..DiffSummary::default()
    };
    for l in layers {
        *s.statuses.entry(l.status).or_insert(0) += 1;
    }
    for t in tensors {
        *s.tensor_changes.entry(t.change).or_insert(0) += 1;
    }
    // A cast alone is not a change; a moved counter is (it is a changed tensor).
    s.changed = layers.iter().any(|l| l.status != Status::Unchanged)
        || tensors.iter().any(|t| {
            !matches!(
                t.change,
                TensorChange::Unchanged | TensorChange::DtypeChanged
            )
        });
    s
}
