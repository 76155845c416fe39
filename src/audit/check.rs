//! `check`: the CI gate. Every tensor in the frozen scope must be unchanged between A and B.
//!
//! The scope is matched against aligned names (wrapper prefixes removed, as `diff` aligns
//! them) without Flax's collection segment, so a pattern names modules of the bare model.
//! Only tensors in scope are read, through the diff engine; the embedded diff report covers
//! them (and the BatchNorm layers they belong to).

use std::borrow::Cow;
use std::collections::BTreeMap;

use foldhash::HashMap;
use std::path::PathBuf;

use serde::Serialize;

use super::SCHEMA_VERSION;
use super::align::{self, Aligned};
use super::compare::Progress;
use super::diff::{self, DiffOptions, DiffReport, LayerDiff, TensorChange, TensorDiff};
use super::scope::Scope;
use crate::bn::{self, BnKeys, BnLayer, LayerValues, Role};
use crate::checkpoint::{Checkpoint, CheckpointError, Dtype};
use crate::fmt::shape;
use crate::fmt::{num, opt_num};

/// What `check` needs besides the checkpoints.
#[derive(Debug, Clone)]
pub struct CheckOptions {
    /// What is held frozen.
    pub scope: Scope,
    /// The configuration file the patterns came from, for the report.
    pub config: Option<PathBuf>,
    /// How to align and compare.
    pub diff: DiffOptions,
}

/// Why `check` could not judge.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// A checkpoint cannot be read.
    #[error(transparent)]
    Input(#[from] CheckpointError),
    /// Frozen patterns that name nothing: the gate would pass without checking them.
    #[error(
        "frozen pattern{} {} match{} no tensor of A or B{aligned}; check the spelling, or \
         list the names with `bnaudit ls --all`",
        if patterns.len() == 1 { "" } else { "s" },
        patterns_list(patterns),
        if patterns.len() == 1 { "es" } else { "" }
    )]
    UnmatchedPatterns {
        /// The patterns.
        patterns: Vec<String>,
        /// Which wrapper prefixes were removed before matching, e.g. ` (names matched
        /// without B's prefix "module.")`; empty when none was.
        aligned: String,
    },
    /// The frozen patterns match tensors, but `trainable` carves all of them out: the gate
    /// would compare nothing and pass.
    #[error(
        "the scope leaves nothing frozen: trainable {} carve{} out every tensor that frozen {} \
         cover{}; narrow the trainable patterns",
        patterns_list(trainable),
        if trainable.len() == 1 { "s" } else { "" },
        patterns_list(frozen),
        if frozen.len() == 1 { "s" } else { "" }
    )]
    NothingFrozen {
        /// The frozen patterns.
        frozen: Vec<String>,
        /// The trainable patterns that carve them out.
        trainable: Vec<String>,
    },
}

/// Most unmatched patterns named in the error; a generated scope can hold hundreds of
/// thousands, and the error is one line.
pub const MAX_LISTED_PATTERNS: usize = 20;

/// `"a", "b"` for an error message: the first [`MAX_LISTED_PATTERNS`] patterns, then how
/// many more there are.
fn patterns_list(patterns: &[String]) -> String {
    let shown: Vec<String> = patterns
        .iter()
        .take(MAX_LISTED_PATTERNS)
        .map(|p| format!("{p:?}"))
        .collect();
    let more = patterns.len().saturating_sub(MAX_LISTED_PATTERNS);
    if more == 0 {
        shown.join(", ")
    } else {
        format!("{} and {more} more", shown.join(", "))
    }
}

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

/// The module of a tensor that belongs to no BatchNorm layer: its name up to the last
/// separator (the name itself at the top level).
pub(crate) fn parent(name: &str) -> &str {
    name.rfind(['.', '/']).map_or(name, |i| &name[..i])
}

/// A BatchNorm layer's tensor: which layer, in which role.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Member<'a> {
    /// The layer's (aligned) name.
    layer: &'a str,
    /// The tensor's role in it.
    role: Role,
}

/// What the evaluation of a diff against the scope found.
#[derive(Debug, Default)]
struct Evaluation {
    /// Every violation, by module.
    violations: Vec<Violation>,
    /// Every frozen module.
    modules: Vec<CheckedModule>,
    /// Totals.
    compared: Compared,
}

/// A frozen tensor with what we know about it.
struct Frozen<'r> {
    diff: &'r TensorDiff,
    role: Option<Role>,
    stats_allowed: bool,
}

pub(crate) fn is_buffer(role: Option<Role>) -> bool {
    matches!(
        role,
        Some(Role::RunningMean | Role::RunningVar | Role::NumBatchesTracked)
    )
}

fn dtype(d: Option<Dtype>) -> &'static str {
    d.map_or("-", Dtype::as_str)
}

fn elements(s: &Option<Vec<u64>>) -> u64 {
    s.as_deref().map_or(0, crate::checkpoint::element_count)
}

fn tensor_bytes(d: Option<Dtype>, s: &Option<Vec<u64>>) -> u64 {
    d.and_then(|d| d.byte_len(elements(s))).unwrap_or(0)
}

/// "+25 train-mode forwards" and the like, from the layer's counter.
pub(crate) fn counter_clause(layer: Option<&LayerDiff>, stats_changed: bool) -> Option<String> {
    let l = layer?;
    let (a, b) = (l.nbt_a?, l.nbt_b?);
    let d = b - a;
    Some(match d {
        0 if stats_changed => format!(
            "num_batches_tracked unchanged at {a}: the statistics were overwritten (assigned \
             or loaded), not updated by forwards"
        ),
        0 => format!("num_batches_tracked unchanged at {a}"),
        1 => format!("num_batches_tracked {a} → {b}: +1 train-mode forward"),
        d if d > 0 => format!("num_batches_tracked {a} → {b}: +{d} train-mode forwards"),
        _ => format!(
            "num_batches_tracked {a} → {b}: the counter went down, the statistics were reset \
             or recomputed"
        ),
    })
}

fn stats_drift_detail(changed: &[&Frozen<'_>], layer: Option<&LayerDiff>) -> String {
    let stats: Vec<&&Frozen<'_>> = changed
        .iter()
        .filter(|f| f.role != Some(Role::NumBatchesTracked))
        .collect();
    let counter = counter_clause(layer, !stats.is_empty());
    if stats.is_empty() {
        let counter = counter.unwrap_or_else(|| "num_batches_tracked changed".to_owned());
        return format!("running statistics identical but {counter}");
    }
    let parts: Vec<String> = stats
        .iter()
        .map(|f| format!("{} ({})", leaf(&f.diff.name), magnitude(f.diff)))
        .collect();
    let mut detail = format!("{} changed", parts.join(" and "));
    match counter {
        Some(c) => {
            detail.push_str("; ");
            detail.push_str(&c);
        }
        None => {
            if let Some(min) = layer.and_then(|l| l.inference.forwards_min) {
                detail.push_str(&format!("; no counter, at least {min} train-mode forwards"));
            }
        }
    }
    detail
}

/// The last segment of a tensor name (`running_var`, `moving_variance:0`, `var`).
pub(crate) fn leaf(name: &str) -> &str {
    name.rfind(['.', '/']).map_or(name, |i| &name[i + 1..])
}

/// "max |Δ| 0.031", with the elements that became or stopped being NaN or infinite, whose
/// difference has no magnitude.
pub(crate) fn magnitude(d: &TensorDiff) -> String {
    let max = format!("max |Δ| {}", opt_num(d.max_abs_diff));
    match d.nonfinite_changed {
        Some(k) if k > 0 && d.max_abs_diff.is_some_and(|m| m > 0.0) => {
            format!("{max}, {}", to_or_from_nonfinite(k))
        }
        Some(k) if k > 0 => to_or_from_nonfinite(k),
        _ => max,
    }
}

fn to_or_from_nonfinite(k: u64) -> String {
    format!(
        "{k} element{} to or from NaN/Inf",
        if k == 1 { "" } else { "s" }
    )
}

/// "is" for one, "are" for more: "1 of 8 values is", "2 of 8 values are".
fn is_are(n: usize) -> &'static str {
    if n == 1 { "is" } else { "are" }
}

pub(crate) fn changed_detail(d: &TensorDiff) -> String {
    let n = elements(&d.shape_b);
    let mut detail = match d.changed_elements {
        Some(k) => format!("{k} of {n} elements changed, {}", magnitude(d)),
        // Sub-byte and complex dtypes are compared as bytes only.
        None => format!("bytes differ ({} values are not decoded)", dtype(d.dtype_b)),
    };
    if let Some(r) = d.rel_l2 {
        detail.push_str(&format!(", relative L2 {}", num(r)));
    }
    if d.dtype_a != d.dtype_b {
        detail.push_str(&format!(
            " (and cast {} → {})",
            dtype(d.dtype_a),
            dtype(d.dtype_b)
        ));
    }
    detail
}

/// Violations of one frozen tensor taken alone (structure and weights).
fn tensor_violation(f: &Frozen<'_>) -> Option<(ViolationKind, String)> {
    let d = f.diff;
    match d.change {
        TensorChange::Unchanged | TensorChange::DtypeChanged => None,
        TensorChange::Removed => Some((
            ViolationKind::FrozenTensorMissing,
            format!(
                "in A ({} {}) but not in B",
                dtype(d.dtype_a),
                shape(&d.shape_a)
            ),
        )),
        TensorChange::Added => Some((
            ViolationKind::FrozenTensorAdded,
            format!(
                "in B ({} {}) but not in A",
                dtype(d.dtype_b),
                shape(&d.shape_b)
            ),
        )),
        TensorChange::ShapeChanged => Some((
            ViolationKind::FrozenShapeChanged,
            format!(
                "shape {} in A, {} in B",
                shape(&d.shape_a),
                shape(&d.shape_b)
            ),
        )),
        // Statistics are judged per layer, with the counter.
        TensorChange::Changed if is_buffer(f.role) => None,
        TensorChange::Changed => Some((ViolationKind::FrozenWeightChanged, changed_detail(d))),
    }
}

/// Health violations of a frozen BatchNorm layer's statistics in B.
fn health_violations(layer: &str, keys: &BnKeys, values: &LayerValues) -> Vec<Violation> {
    let mut out = Vec::new();
    for role in [Role::RunningMean, Role::RunningVar] {
        let Some(v) = values.get(role) else { continue };
        let bad = v.iter().filter(|x| !x.is_finite()).count();
        if bad > 0 {
            out.push(Violation {
                kind: ViolationKind::Nonfinite,
                layer: layer.to_owned(),
                tensor: keys.get(role).map(str::to_owned),
                detail: format!(
                    "{bad} of {} values of {} in B {} NaN or infinite",
                    v.len(),
                    keys.get(role).map_or(role.as_str(), leaf),
                    is_are(bad)
                ),
            });
        }
    }
    if let Some(var) = values.get(Role::RunningVar) {
        let negative: Vec<f64> = var.iter().copied().filter(|&x| x < 0.0).collect();
        if !negative.is_empty() {
            let min = negative.iter().copied().fold(f64::INFINITY, f64::min);
            out.push(Violation {
                kind: ViolationKind::NegativeVar,
                layer: layer.to_owned(),
                tensor: keys.get(Role::RunningVar).map(str::to_owned),
                detail: format!(
                    "{} of {} channels of {} in B {} negative (min {}): no batch can \
                     produce a negative variance",
                    negative.len(),
                    var.len(),
                    leaf(&keys.running_var),
                    is_are(negative.len()),
                    num(min)
                ),
            });
        }
    }
    out
}

/// Judges the diff of the frozen tensors.
///
/// `members` maps aligned tensor names of BatchNorm layers (of A or B) to their layer and
/// role; `health` holds B's frozen BatchNorm layers (aligned keys) with their running
/// statistics.
fn evaluate(
    scope: &Scope,
    diff: &DiffReport,
    members: &HashMap<&str, Member<'_>>,
    health: &[(&BnLayer, LayerValues)],
) -> Evaluation {
    let layers: HashMap<&str, &LayerDiff> =
        diff.layers.iter().map(|l| (l.name.as_str(), l)).collect();
    let mut modules: BTreeMap<String, (bool, Vec<Frozen<'_>>)> = BTreeMap::new();
    for d in diff.tensors.iter().filter(|d| is_frozen(scope, &d.name)) {
        let member = members.get(d.name.as_str());
        let role = member.map(|m| m.role);
        let module = member.map_or_else(
            || bn::module_name(parent(&d.name)).into_owned(),
            |m| m.layer.to_owned(),
        );
        let entry = modules
            .entry(module)
            .or_insert((member.is_some(), Vec::new()));
        entry.1.push(Frozen {
            diff: d,
            role,
            stats_allowed: is_buffer(role) && scope.allows_stats(&bn::module_name(&d.name)),
        });
    }
    let mut health_by_layer: HashMap<&str, Vec<Violation>> = health
        .iter()
        .map(|(l, v)| (l.name.as_str(), health_violations(&l.name, &l.keys, v)))
        .collect();
    let mut out = Evaluation::default();
    for (name, (batchnorm, frozen)) in &modules {
        let mut found = Vec::new();
        let drifted: Vec<&Frozen<'_>> = frozen
            .iter()
            .filter(|f| {
                f.diff.change == TensorChange::Changed && is_buffer(f.role) && !f.stats_allowed
            })
            .collect();
        if !drifted.is_empty() {
            found.push(Violation {
                kind: ViolationKind::FrozenStatsDrift,
                layer: name.clone(),
                tensor: None,
                detail: stats_drift_detail(&drifted, layers.get(name.as_str()).copied()),
            });
        }
        let converted = layers
            .get(name.as_str())
            .is_some_and(|l| l.counter_dropped());
        for f in frozen {
            // A counter dropped by a conversion to FrozenBatchNorm2d changes nothing the
            // frozen layer computes.
            if converted && f.role == Some(Role::NumBatchesTracked) {
                continue;
            }
            if let Some((kind, detail)) = tensor_violation(f) {
                found.push(Violation {
                    kind,
                    layer: name.clone(),
                    tensor: Some(f.diff.name.clone()),
                    detail,
                });
            }
        }
        found.extend(health_by_layer.remove(name.as_str()).unwrap_or_default());
        found.sort_by(|x, y| (x.kind, &x.tensor).cmp(&(y.kind, &y.tensor)));
        out.compared.tensors += frozen.len();
        out.compared.bytes += frozen
            .iter()
            .map(|f| {
                tensor_bytes(f.diff.dtype_a, &f.diff.shape_a)
                    + tensor_bytes(f.diff.dtype_b, &f.diff.shape_b)
            })
            .sum::<u64>();
        out.modules.push(CheckedModule {
            name: name.clone(),
            batchnorm: *batchnorm,
            allow_stats: frozen.iter().any(|f| f.stats_allowed),
            tensors: frozen.len(),
            violations: found.len(),
        });
        out.violations.extend(found);
    }
    out.compared.modules = out.modules.len();
    out.compared.batchnorm_layers = out.modules.iter().filter(|m| m.batchnorm).count();
    out
}

/// Whether the aligned tensor `name` is frozen (matched without a Flax collection segment).
pub(crate) fn is_frozen(scope: &Scope, name: &str) -> bool {
    scope.is_frozen(&bn::module_name(name))
}

/// Refuses frozen patterns that match no aligned tensor name of A or B.
pub(crate) fn require_matches(scope: &Scope, aligned: &Aligned) -> Result<(), CheckError> {
    let names: Vec<Cow<'_, str>> = aligned
        .a
        .iter()
        .chain(aligned.b.iter())
        .map(|t| bn::module_name(&t.name))
        .collect();
    let unmatched = scope.frozen.unmatched(names.iter().map(AsRef::as_ref));
    if !unmatched.is_empty() {
        let al = &aligned.alignment;
        let stripped: Vec<String> = [("A", &al.strip_a), ("B", &al.strip_b)]
            .into_iter()
            .filter(|(_, p)| !p.is_empty())
            .map(|(side, p)| format!("{side}'s prefix {p:?}"))
            .collect();
        return Err(CheckError::UnmatchedPatterns {
            patterns: unmatched.into_iter().map(str::to_owned).collect(),
            aligned: if stripped.is_empty() {
                String::new()
            } else {
                format!(" (names matched without {})", stripped.join(" and "))
            },
        });
    }
    if !names.iter().any(|n| scope.is_frozen(n)) {
        return Err(CheckError::NothingFrozen {
            frozen: scope.frozen.as_slice().to_vec(),
            trainable: scope.trainable.as_slice().to_vec(),
        });
    }
    Ok(())
}

/// Runs the gate: compares every tensor in scope and lists the violations.
pub fn check(
    a: &Checkpoint,
    b: &Checkpoint,
    options: &CheckOptions,
    progress: Option<Progress<'_>>,
) -> Result<CheckReport, CheckError> {
    let scope = &options.scope;
    let aligned = diff::align_names(a, b, &options.diff);
    require_matches(scope, &aligned)?;
    let report = diff::diff_aligned(
        a,
        b,
        &aligned,
        &options.diff,
        &|name| is_frozen(scope, name),
        progress,
    )?;
    let layers_a = bn::discover(&aligned.a);
    let layers_b = bn::discover(&aligned.b);
    // Borrowed keys: the layers outlive the evaluation, and a million-tensor pair would
    // otherwise copy every name twice more.
    let members: HashMap<&str, Member<'_>> = layers_a
        .iter()
        .chain(&layers_b)
        .flat_map(|l| {
            l.keys.iter().map(|(role, k)| {
                let member = Member {
                    layer: &l.name,
                    role,
                };
                (k, member)
            })
        })
        .collect();
    let mut health = Vec::new();
    for layer in layers_b
        .iter()
        .filter(|l| is_frozen(scope, &l.keys.running_mean) || is_frozen(scope, &l.keys.running_var))
    {
        // The aligned names are sorted (`align_names`), so no map of B's tensors is needed.
        let find = |key: &str| align::find(&aligned.b, key);
        let [running_mean, running_var] = b.read_values_of([
            find(&layer.keys.running_mean),
            find(&layer.keys.running_var),
        ])?;
        let values = LayerValues {
            running_mean,
            running_var,
            ..LayerValues::default()
        };
        health.push((layer, values));
    }
    let evaluation = evaluate(scope, &report, &members, &health);
    Ok(CheckReport {
        schema_version: SCHEMA_VERSION,
        passed: evaluation.violations.is_empty(),
        scope: ScopeReport {
            patterns: scope.clone(),
            config: options.config.as_ref().map(|p| p.display().to_string()),
        },
        violations: evaluation.violations,
        compared: evaluation.compared,
        modules: evaluation.modules,
        diff: report,
    })
}
