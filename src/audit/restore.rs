//! `restore`: B with A's BatchNorm statistics put back where a frozen layer's drifted.
//!
//! The scope is `check`'s (patterns, from the command line or the configuration file) or,
//! without one, every layer whose `diff` status is `frozen_stats_drift`. In scope, each
//! BatchNorm layer whose running statistics or counter differ gets A's values of those
//! tensors (every convention's names: the roles of [`crate::bn::Role`]); with `all`, every
//! other changed tensor in scope too. Everything else is B's, under B's names (aligned
//! names map back to them), dtypes and metadata. [`plan`] decides from the diff engine's
//! comparison; [`Plan::write`] streams the result through the safetensors writer.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::SCHEMA_VERSION;
use super::align;
use super::check::{self, CheckError, ViolationKind};
use super::compare::Progress;
use super::diff::{self, Alignment, DiffOptions, LayerDiff, Status, TensorChange, TensorDiff};
use super::scope::Scope;
use crate::bn::{self, Role};
use crate::checkpoint::write::{OutTensor, Prepared, WriteError};
use crate::checkpoint::{Checkpoint, CheckpointError, TensorInfo};
use crate::{fmt, output};

/// The metadata key listing the restored tensors (a JSON list of names).
pub const RESTORED_KEY: &str = "bnaudit_restored";

/// What `restore` needs besides the checkpoints.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// The frozen scope; `None` restores every `frozen_stats_drift` layer.
    pub scope: Option<Scope>,
    /// The configuration file the patterns came from, for the report.
    pub config: Option<PathBuf>,
    /// Also put back the scope's weights and other changed tensors.
    pub all: bool,
    /// How to align and compare.
    pub diff: DiffOptions,
    /// The file to write, for the report.
    pub output: PathBuf,
    /// Plan only.
    pub dry_run: bool,
}

/// Why `restore` cannot go ahead.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// A checkpoint cannot be read.
    #[error(transparent)]
    Input(#[from] CheckpointError),
    /// Frozen patterns that match nothing.
    #[error(transparent)]
    Scope(CheckError),
    /// The output would replace one of the inputs.
    #[error(
        "{}: is {input} (one of the checkpoints read); restore never replaces an input, choose another --output",
        output.display()
    )]
    OutputIsInput {
        /// The output as given.
        output: PathBuf,
        /// Which input file it is.
        input: String,
    },
    /// Writing the output failed.
    #[error(transparent)]
    Write(#[from] WriteError),
}

impl From<CheckError> for RestoreError {
    fn from(e: CheckError) -> RestoreError {
        match e {
            CheckError::Input(e) => RestoreError::Input(e),
            e => RestoreError::Scope(e),
        }
    }
}

/// Where the scope came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ScopeSource {
    /// Patterns: `--frozen` and `--trainable`, or the configuration file's lists.
    Patterns,
    /// No patterns: every layer whose status is `frozen_stats_drift`.
    FrozenStatsDrift,
}

/// The scope as reported.
#[derive(Debug, Clone, Serialize)]
pub struct RestoreScope {
    /// Where it came from.
    pub source: ScopeSource,
    /// The patterns (empty lists for `frozen_stats_drift`).
    pub frozen: Vec<String>,
    /// Carved out of `frozen`.
    pub trainable: Vec<String>,
    /// Statistics allowed to move: left as B's.
    pub allow_stats: Vec<String>,
    /// The configuration file that supplied patterns, if any.
    pub config: Option<String>,
}

/// A tensor written with A's value.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Restored {
    /// Its name in B (and in the output).
    pub tensor: String,
    /// The BatchNorm layer, or the module of another tensor (aligned name).
    pub layer: String,
    /// The violation of `check` it repairs: `frozen_stats_drift` for statistics and
    /// counters, `frozen_weight_changed` for other tensors (`--all`).
    pub reason: ViolationKind,
    /// What differed, one phrase with the numbers.
    pub detail: String,
    /// A's dtype, when it differs from B's (A's value is cast to B's dtype).
    pub cast_from: Option<String>,
}

/// A tensor in scope that differs but cannot be put back.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Skipped {
    /// Its aligned name.
    pub tensor: String,
    /// The BatchNorm layer or module.
    pub layer: String,
    /// Why.
    pub reason: String,
}

/// What was restored in one top-level sub-model.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Submodel {
    /// The sub-model (first segment of the layer names).
    pub name: String,
    /// Layers or modules with restored tensors.
    pub layers: usize,
    /// Restored tensors.
    pub tensors: usize,
    /// Those that are BatchNorm statistics or counters.
    pub statistics: usize,
}

/// What `restore` reports.
#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    /// JSON schema version, 1.
    pub schema_version: u32,
    /// The file written (or that would be).
    pub output: String,
    /// Whether nothing was written.
    pub dry_run: bool,
    /// Checkpoint A, where the restored values come from.
    pub a: String,
    /// Checkpoint B, where everything else comes from.
    pub b: String,
    /// What was in scope.
    pub scope: RestoreScope,
    /// How A's and B's names were aligned.
    pub alignment: Alignment,
    /// Every tensor written with A's value, in name order.
    pub restored: Vec<Restored>,
    /// Tensors written as B has them.
    pub kept: usize,
    /// Restored tensors by sub-model.
    pub submodels: Vec<Submodel>,
    /// Tensors in scope that differ but were not put back.
    pub skipped: Vec<Skipped>,
    /// Size of the output file in bytes.
    pub bytes: u64,
}

/// A decided restore: the report and the tensors to write.
#[derive(Debug)]
pub struct Plan<'c> {
    /// What will be (or was) done.
    pub report: RestoreReport,
    file: Prepared<'c>,
}

impl Plan<'_> {
    /// Streams the restored checkpoint into `out`.
    pub fn write(&self, out: &mut dyn Write) -> Result<(), WriteError> {
        self.file.write(out)
    }
}

/// Refuses an output that is A, B, or one of their files (through links too).
pub fn refuse_inputs(out: &Path, a: &Checkpoint, b: &Checkpoint) -> Result<(), RestoreError> {
    for (side, ckpt) in [("A", a), ("B", b)] {
        let files = std::iter::once(ckpt.path()).chain(ckpt.files().iter().map(|f| f.path()));
        for f in files {
            if output::same_file(out, f) {
                return Err(RestoreError::OutputIsInput {
                    output: out.to_owned(),
                    input: if f == ckpt.path() {
                        side.to_owned()
                    } else {
                        format!("a file of {side}, {}", f.display())
                    },
                });
            }
        }
    }
    Ok(())
}

/// The buffer roles: what train-mode forwards move.
const BUFFERS: [Role; 3] = [Role::RunningMean, Role::RunningVar, Role::NumBatchesTracked];

/// Decides what to restore.
pub fn plan<'c>(
    a: &'c Checkpoint,
    b: &'c Checkpoint,
    options: &RestoreOptions,
    progress: Option<Progress<'_>>,
) -> Result<Plan<'c>, RestoreError> {
    let aligned = diff::align_names(a, b, &options.diff);
    let layers_a = bn::discover(&aligned.a);
    let layers_b = bn::discover(&aligned.b);
    let report = match &options.scope {
        Some(scope) => {
            check::require_matches(scope, &aligned)?;
            let select = |name: &str| check::is_frozen(scope, name);
            diff::diff_aligned(a, b, &aligned, &options.diff, &select, progress)?
        }
        None => {
            // The statuses need the layers' tensors only.
            let keys: BTreeSet<&str> = layers_a
                .iter()
                .chain(&layers_b)
                .flat_map(|l| l.keys.iter().map(|(_, k)| k))
                .collect();
            let select = |name: &str| keys.contains(name);
            diff::diff_aligned(a, b, &aligned, &options.diff, &select, progress)?
        }
    };
    let diffs: HashMap<&str, &TensorDiff> = report
        .tensors
        .iter()
        .map(|d| (d.name.as_str(), d))
        .collect();
    let layer_diffs: HashMap<&str, &LayerDiff> =
        report.layers.iter().map(|l| (l.name.as_str(), l)).collect();
    // (aligned name) → (layer, reason, detail) for every tensor to put back.
    let mut chosen: BTreeMap<String, (String, ViolationKind, String)> = BTreeMap::new();
    let mut skipped = Vec::new();
    let mut derived: BTreeSet<&str> = BTreeSet::new();
    let mut buffers: BTreeSet<&str> = BTreeSet::new();
    let mut seen: BTreeSet<&str> = BTreeSet::new();
    // B's keys first: a layer on both sides is judged once, under B's names.
    for layer in layers_b.iter().chain(&layers_a) {
        if !seen.insert(&layer.name) {
            continue;
        }
        let Some(ld) = layer_diffs.get(layer.name.as_str()) else {
            continue;
        };
        for role in BUFFERS {
            let Some(key) = layer.keys.get(role) else {
                continue;
            };
            buffers.insert(key);
            let in_scope = match &options.scope {
                Some(scope) => {
                    check::is_frozen(scope, key) && !scope.allows_stats(&bn::module_name(key))
                }
                None => ld.status == Status::FrozenStatsDrift,
            };
            let Some(d) = diffs.get(key).filter(|_| in_scope) else {
                continue;
            };
            if options.scope.is_none() {
                derived.insert(&layer.name);
            }
            let detail = match role {
                Role::NumBatchesTracked => check::counter_clause(Some(ld), false)
                    .unwrap_or_else(|| "num_batches_tracked changed".to_owned()),
                _ => format!("{} {}", role.as_str(), check::magnitude(d)),
            };
            consider(
                d,
                &layer.name,
                ViolationKind::FrozenStatsDrift,
                detail,
                &mut chosen,
                &mut skipped,
            );
        }
    }
    if options.all {
        for d in &report.tensors {
            if buffers.contains(d.name.as_str()) {
                continue;
            }
            let layer = d
                .bn_layer
                .clone()
                .unwrap_or_else(|| bn::module_name(check::parent(&d.name)).into_owned());
            let in_scope = match &options.scope {
                Some(scope) => check::is_frozen(scope, &d.name),
                None => derived.contains(layer.as_str()),
            };
            if in_scope {
                let detail = check::changed_detail(d);
                consider(
                    d,
                    &layer,
                    ViolationKind::FrozenWeightChanged,
                    detail,
                    &mut chosen,
                    &mut skipped,
                );
            }
        }
    }
    let al = &aligned.alignment;
    let mut restored = Vec::new();
    let mut from_a: HashMap<String, &'c TensorInfo> = HashMap::new();
    for (name, (layer, reason, detail)) in chosen {
        let (Some(ta), Some(tb)) = (
            align::original(a, &al.strip_a, &al.prefix_a, &name),
            align::original(b, &al.strip_b, &al.prefix_b, &name),
        ) else {
            continue;
        };
        if !ta.dtype.can_cast(tb.dtype) {
            skipped.push(Skipped {
                tensor: name,
                layer,
                reason: format!(
                    "A's {} values cannot be converted to B's {}",
                    ta.dtype, tb.dtype
                ),
            });
            continue;
        }
        restored.push(Restored {
            tensor: tb.name.clone(),
            layer,
            reason,
            detail,
            cast_from: (ta.dtype != tb.dtype).then(|| ta.dtype.as_str().to_owned()),
        });
        from_a.insert(tb.name.clone(), ta);
    }
    restored.sort_by(|x, y| x.tensor.cmp(&y.tensor));
    let mut tensors = Vec::with_capacity(b.tensors().len());
    for t in b.tensors() {
        let (source, info) = match from_a.get(&t.name) {
            Some(ta) => (a, *ta),
            None => (b, t),
        };
        tensors.push(OutTensor::new(t.name.clone(), t.dtype, source, info)?);
    }
    let mut metadata = b.metadata().clone();
    let names: Vec<&str> = restored.iter().map(|r| r.tensor.as_str()).collect();
    metadata.insert(
        RESTORED_KEY.to_owned(),
        serde_json::to_string(&names).expect("a list of strings serialises"),
    );
    let file = Prepared::new(tensors, &metadata)?;
    let report = RestoreReport {
        schema_version: SCHEMA_VERSION,
        output: options.output.display().to_string(),
        dry_run: options.dry_run,
        a: a.path().display().to_string(),
        b: b.path().display().to_string(),
        scope: scope_report(options),
        alignment: report.alignment.clone(),
        kept: b.tensors().len() - restored.len(),
        submodels: submodels(&restored),
        restored,
        skipped,
        bytes: file.len(),
    };
    Ok(Plan { report, file })
}

/// Chooses a differing tensor `d` of `layer`, or records why it cannot be put back.
fn consider(
    d: &TensorDiff,
    layer: &str,
    reason: ViolationKind,
    detail: String,
    chosen: &mut BTreeMap<String, (String, ViolationKind, String)>,
    skipped: &mut Vec<Skipped>,
) {
    let why = match d.change {
        TensorChange::Unchanged | TensorChange::DtypeChanged => return,
        TensorChange::Changed => {
            chosen.insert(d.name.clone(), (layer.to_owned(), reason, detail));
            return;
        }
        TensorChange::ShapeChanged => format!(
            "shape {} in A, {} in B",
            crate::fmt::shape(&d.shape_a),
            crate::fmt::shape(&d.shape_b)
        ),
        TensorChange::Removed => "in A but not in B; the output holds B's tensors".to_owned(),
        TensorChange::Added => "in B but not in A: nothing to put back".to_owned(),
    };
    skipped.push(Skipped {
        tensor: d.name.clone(),
        layer: layer.to_owned(),
        reason: why,
    });
}

fn scope_report(options: &RestoreOptions) -> RestoreScope {
    let list = |p: &super::scope::Patterns| p.as_slice().to_vec();
    match &options.scope {
        Some(s) => RestoreScope {
            source: ScopeSource::Patterns,
            frozen: list(&s.frozen),
            trainable: list(&s.trainable),
            allow_stats: list(&s.allow_stats),
            config: options.config.as_ref().map(|p| p.display().to_string()),
        },
        None => RestoreScope {
            source: ScopeSource::FrozenStatsDrift,
            frozen: Vec::new(),
            trainable: Vec::new(),
            allow_stats: Vec::new(),
            config: None,
        },
    }
}

fn submodels(restored: &[Restored]) -> Vec<Submodel> {
    let mut by: BTreeMap<&str, (BTreeSet<&str>, usize, usize)> = BTreeMap::new();
    for r in restored {
        let e = by.entry(fmt::submodel(&r.layer)).or_default();
        e.0.insert(&r.layer);
        e.1 += 1;
        e.2 += usize::from(r.reason == ViolationKind::FrozenStatsDrift);
    }
    by.into_iter()
        .map(|(name, (layers, tensors, statistics))| Submodel {
            name: name.to_owned(),
            layers: layers.len(),
            tensors,
            statistics,
        })
        .collect()
}
