//! `check`: the CI gate. Every tensor in the frozen scope must be unchanged between A and B.

use serde::Serialize;

use super::diff::DiffReport;
use super::scope::Scope;

/// Why the gate failed, one kind per DESIGN's list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ViolationKind {
    /// Running statistics (or the counter) of a frozen BatchNorm layer moved.
    FrozenStatsDrift,
    /// A frozen weight (any non-statistics tensor) changed.
    FrozenWeightChanged,
    /// A frozen tensor of A is not in B.
    FrozenTensorMissing,
    /// B has a tensor in the frozen scope that A has not.
    FrozenTensorAdded,
    /// A frozen tensor changed shape.
    FrozenShapeChanged,
    /// A BatchNorm tensor in scope holds NaN or infinity in B.
    Nonfinite,
    /// A BatchNorm running variance in scope is negative in B.
    NegativeVar,
}

impl ViolationKind {
    /// The JSON name.
    pub fn as_str(self) -> &'static str {
        match self {
            ViolationKind::FrozenStatsDrift => "frozen_stats_drift",
            ViolationKind::FrozenWeightChanged => "frozen_weight_changed",
            ViolationKind::FrozenTensorMissing => "frozen_tensor_missing",
            ViolationKind::FrozenTensorAdded => "frozen_tensor_added",
            ViolationKind::FrozenShapeChanged => "frozen_shape_changed",
            ViolationKind::Nonfinite => "nonfinite",
            ViolationKind::NegativeVar => "negative_var",
        }
    }
}

/// One reason the gate failed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Violation {
    /// What kind of change.
    pub kind: ViolationKind,
    /// The BatchNorm layer, or for other tensors the module holding them.
    pub layer: String,
    /// The tensor (aligned name); `null` for a layer-wide statistics drift.
    pub tensor: Option<String>,
    /// One sentence with the numbers.
    pub detail: String,
}

/// A frozen module that was checked: a BatchNorm layer, or the other tensors of one module.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckedModule {
    /// Module path (aligned).
    pub name: String,
    /// Whether it is a BatchNorm layer.
    pub batchnorm: bool,
    /// Whether its running statistics may move (`allow_stats`).
    pub allow_stats: bool,
    /// Frozen tensors compared.
    pub tensors: usize,
    /// Violations found in it.
    pub violations: usize,
}

/// Totals of what was compared.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Compared {
    /// Frozen tensors compared.
    pub tensors: usize,
    /// Bytes of them, A and B together.
    pub bytes: u64,
    /// Frozen modules.
    pub modules: usize,
    /// Frozen BatchNorm layers.
    pub batchnorm_layers: usize,
}

/// The scope as reported: the patterns and where they came from.
#[derive(Debug, Clone, Serialize)]
pub struct ScopeReport {
    /// The patterns.
    #[serde(flatten)]
    pub patterns: Scope,
    /// The configuration file that supplied patterns, if any.
    pub config: Option<String>,
}

/// What `check` reports.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    /// JSON schema version, 1.
    pub schema_version: u32,
    /// Whether there is no violation.
    pub passed: bool,
    /// What is held frozen.
    pub scope: ScopeReport,
    /// Every violation, grouped by module in name order.
    pub violations: Vec<Violation>,
    /// Totals of what was compared.
    pub compared: Compared,
    /// Each frozen module, in name order.
    pub modules: Vec<CheckedModule>,
    /// The diff of the tensors in scope.
    pub diff: DiffReport,
}
