//! `explain`: re-run BatchNorm in every mode and replay the drift from A to B.
//!
//! For each layer: `impact` (how B's statistics shift eval outputs for inputs distributed as
//! A's), `implied_batch` (the batch statistics the update rule implies from A, B and the
//! number of forwards), and every mode (`train`, `train_no_track`, `eval_a`, `eval_b`,
//! `eval_no_track`) run either on the captured inputs of an activation file, compared with
//! the recorded outputs, or on seeded synthetic inputs drawn from the implied batch. With
//! captured train-mode forwards, A's statistics are replayed through them and compared with
//! B's.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};

use rand::SeedableRng;
use rand_distr::{Distribution, Normal};
use rayon::prelude::*;
use serde::Serialize;

use super::SCHEMA_VERSION;
use super::activations::{Activations, CapturedLayer, Forward};
use super::align::{self, WRAPPERS};
use super::diff::Alignment;
use super::ls::layer_values_unmapped;
use super::scope::Patterns;
use crate::bn::stream::{self, Affine, ChannelMap, Geometry, Moments, Normalising, Pooled};
use crate::bn::{
    self, BatchNorm, BatchStats, BnLayer, Convention, LayerValues, Momentum, Real, RunningStats,
    UpdateRule,
};
use crate::checkpoint::{Checkpoint, CheckpointError, Dtype, TensorInfo};

/// Options of `explain`.
#[derive(Debug, Clone, Default)]
pub struct ExplainOptions {
    /// Layers to explain (`--layer`); empty: the captured layers, or those whose statistics
    /// changed.
    pub layers: Vec<String>,
    /// Momentum overriding the activation metadata and the convention (`--momentum`).
    pub momentum: Option<Momentum>,
    /// Epsilon overriding the activation metadata and the convention (`--eps`).
    pub eps: Option<f64>,
    /// Momentum for the layers a pattern covers (`--momentum PATTERN=M`); the last pattern
    /// that covers a layer wins over `momentum`.
    pub momentum_for: Vec<(Patterns, Momentum)>,
    /// Epsilon for the layers a pattern covers (`--eps PATTERN=E`), as `momentum_for`.
    pub eps_for: Vec<(Patterns, f64)>,
    /// Seed of the synthetic inputs.
    pub seed: u64,
}

/// Input that `explain` cannot work with (exit 3).
#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    /// A checkpoint or activation file that does not open or read.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// A file that opens but does not fit: missing layer, wrong shape, malformed metadata.
    #[error("{}: {problem}", path.display())]
    Input {
        /// The file at fault.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
}

impl ExplainError {
    /// An input problem of `path`.
    pub fn input(path: impl AsRef<Path>, problem: impl Into<String>) -> ExplainError {
        ExplainError::Input {
            path: path.as_ref().to_owned(),
            problem: problem.into(),
        }
    }
}

/// What `explain` reports. `L` and `S` hold the layers and the skipped ones: vectors, or
/// sequences that [`Explained`] fills while the report is written out (so that a report of
/// layers of millions of channels is never held whole).
#[derive(Debug, Clone, Serialize)]
pub struct ExplainReport<L = Vec<ExplainLayer>, S = Vec<SkippedLayer>> {
    /// JSON schema version, 1.
    pub schema_version: u32,
    /// Checkpoint A's path.
    pub a: String,
    /// Checkpoint B's path.
    pub b: String,
    /// The activation file, if given.
    pub activations: Option<String>,
    /// How A's and B's names were aligned.
    pub alignment: Alignment,
    /// How the activation file's layer names were aligned with them, where they differ
    /// by a wrapper prefix: `strip_a` is taken off the checkpoints' names, `strip_b` off the
    /// capture's (`null` without activations or when nothing matched).
    pub activations_alignment: Option<Alignment>,
    /// The layers explained.
    pub layers: L,
    /// Layers that could not be explained, with the reason.
    pub skipped: S,
    /// Observations about the whole run.
    pub notes: Vec<String>,
}

/// A layer left out of the report.
#[derive(Debug, Clone, Serialize)]
pub struct SkippedLayer {
    /// Module path (aligned).
    pub name: String,
    /// Why it could not be explained.
    pub reason: String,
}

/// Where a setting came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The activation file's metadata.
    Activations,
    /// A command-line option.
    Option,
    /// The convention's default.
    Convention,
}

/// How the number of train-mode forwards between A and B is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ForwardsSource {
    /// The counter delta `num_batches_tracked(B) - num_batches_tracked(A)`.
    Counter,
    /// The train-mode forwards in the activation file.
    Activations,
    /// Nothing counts them: one is assumed.
    Assumed,
}

/// A BatchNorm mode, with the statistics it normalises with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ModeName {
    /// Train mode with running statistics: batch statistics, and the running ones move.
    Train,
    /// Train mode without running statistics.
    TrainNoTrack,
    /// Eval mode with A's running statistics.
    EvalA,
    /// Eval mode with B's running statistics.
    EvalB,
    /// Eval mode without running statistics: batch statistics.
    EvalNoTrack,
}

impl ModeName {
    /// Every mode, in report order.
    pub const ALL: [ModeName; 5] = [
        ModeName::Train,
        ModeName::TrainNoTrack,
        ModeName::EvalA,
        ModeName::EvalB,
        ModeName::EvalNoTrack,
    ];

    /// The JSON name.
    pub fn as_str(self) -> &'static str {
        match self {
            ModeName::Train => "train",
            ModeName::TrainNoTrack => "train_no_track",
            ModeName::EvalA => "eval_a",
            ModeName::EvalB => "eval_b",
            ModeName::EvalNoTrack => "eval_no_track",
        }
    }

    /// Which statistics normalise: `batch`, `running_a` or `running_b`.
    pub fn uses(self) -> &'static str {
        match self {
            ModeName::EvalA => "running_a",
            ModeName::EvalB => "running_b",
            _ => "batch",
        }
    }

    fn kind(self) -> Kind {
        match self {
            ModeName::EvalA => Kind::EvalA,
            ModeName::EvalB => Kind::EvalB,
            _ => Kind::Batch,
        }
    }
}

/// Per-channel shift of eval outputs when B's statistics replace A's, for inputs with A's
/// running mean and variance.
#[derive(Debug, Clone, Serialize)]
pub struct Impact {
    /// Shift of the output mean in units of the output's standard deviation under A
    /// (NaN, `null` in JSON, where that deviation is 0). Plain `f64`s: a layer of millions
    /// of channels keeps three of these vectors, and an `Option` would double them.
    pub mean_shift: Vec<f64>,
    /// Output standard deviation under B over that under A (NaN/`null` as `mean_shift`).
    pub scale_ratio: Vec<f64>,
    /// Root-mean-square change of the outputs in units of their deviation under A:
    /// `√(mean_shift² + (scale_ratio − 1)²)` (NaN/`null` as `mean_shift`).
    pub rms_change: Vec<f64>,
    /// Largest `rms_change`.
    pub max_rms_change: Option<f64>,
    /// The channels that change most (up to 3, largest first, only channels that change).
    pub worst: Vec<ChannelImpact>,
}

/// One channel's impact.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ChannelImpact {
    /// Channel index.
    pub channel: usize,
    /// Mean shift in output standard deviations.
    pub mean_shift: Option<f64>,
    /// Scale ratio.
    pub scale_ratio: Option<f64>,
    /// RMS change in output standard deviations.
    pub rms_change: Option<f64>,
}

/// The batch statistics the update rule implies.
#[derive(Debug, Clone, Serialize)]
pub struct ImpliedBatch {
    /// Per-channel batch mean (weighted average over the forwards).
    pub mean: Vec<f64>,
    /// Per-channel batch variance as the convention folds it (see `var_kind`).
    pub var: Vec<f64>,
    /// `unbiased` (PyTorch) or `biased` (Keras, Flax fold the biased variance).
    pub var_kind: &'static str,
    /// Forwards the statistics stand for.
    pub forwards: u64,
    /// True for one forward: the statistics of that batch exactly; else a weighted average.
    pub exact: bool,
    /// Channels whose implied variance is negative: the change does not follow the rule.
    pub negative_var_channels: Vec<usize>,
}

/// Mean and standard deviation of a mode's outputs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct OutputStats {
    /// Mean of every output value.
    pub mean: f64,
    /// Population standard deviation of every output value.
    pub std: f64,
}

/// One mode re-run on the layer's inputs.
#[derive(Debug, Clone, Serialize)]
pub struct ModeResult {
    /// The mode.
    pub mode: ModeName,
    /// `batch`, `running_a` or `running_b`.
    pub uses: &'static str,
    /// Whether the mode moves the running statistics.
    pub updates: bool,
    /// Summary of the outputs (`null` where batch statistics are undefined: one value per
    /// channel in every eval-mode forward).
    pub output: Option<OutputStats>,
    /// Largest difference from the recorded outputs, where the activation file has them.
    pub max_abs_err: Option<f64>,
    /// Largest difference from the train-mode output on the same inputs.
    pub max_abs_diff_vs_train: Option<f64>,
}

/// What the modes ran on.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Inputs {
    /// Captured inputs of the activation file.
    Captured {
        /// Captured forwards.
        forwards: usize,
        /// Those in train mode (per the metadata; all without it).
        train_forwards: usize,
        /// Those with a recorded output.
        with_outputs: usize,
        /// Those captured as batch statistics only (no modes run on them).
        statistics_only: usize,
    },
    /// Seeded synthetic inputs `samples × C`, normal per channel.
    Synthetic {
        /// PRNG seed (mixed with the layer name).
        seed: u64,
        /// Rows drawn.
        samples: usize,
        /// `implied_batch` or `running_a`: whose mean and variance the inputs have.
        drawn_from: &'static str,
    },
}

/// A's statistics pushed through the captured train-mode forwards, compared with B's.
#[derive(Debug, Clone, Serialize)]
pub struct Replay {
    /// Train-mode forwards replayed.
    pub batches: usize,
    /// Largest |replayed − B| of the running mean.
    pub max_abs_err_mean: f64,
    /// Largest |replayed − B| of the running variance.
    pub max_abs_err_var: f64,
    /// `max_abs_err_mean` relative to the largest |B running_mean|.
    pub max_rel_err_mean: f64,
    /// `max_abs_err_var` relative to the largest |B running_var|.
    pub max_rel_err_var: f64,
    /// Counter the replay ends with, where A has one.
    pub nbt_replayed: Option<i64>,
    /// Largest relative error still counted as reproducing B: each of the `batches`
    /// updates rounds to B's storage dtype, and so does PyTorch's batch statistic.
    pub tolerance: f64,
    /// B's storage dtype, whose rounding sets `tolerance`.
    pub dtype: Dtype,
    /// Whether the replay reproduces B's statistics (and counter) within `tolerance`.
    pub explains_b: bool,
}

/// One layer explained.
#[derive(Debug, Clone, Serialize)]
pub struct ExplainLayer {
    /// Module path (aligned).
    pub name: String,
    /// Naming convention.
    pub convention: Convention,
    /// Channels.
    pub channels: u64,
    /// Momentum used.
    pub momentum: Momentum,
    /// Where it came from.
    pub momentum_source: Source,
    /// Epsilon used.
    pub eps: f64,
    /// Where it came from.
    pub eps_source: Source,
    /// Counter in A.
    pub nbt_a: Option<i64>,
    /// Counter in B.
    pub nbt_b: Option<i64>,
    /// Train-mode forwards between A and B.
    pub forwards: Option<u64>,
    /// How they are known.
    pub forwards_source: Option<ForwardsSource>,
    /// Whether the running statistics differ between A and B.
    pub stats_changed: bool,
    /// Shift of eval outputs from A's statistics to B's.
    pub impact: Impact,
    /// Batch statistics the update implies (`null` when nothing can be implied).
    pub implied_batch: Option<ImpliedBatch>,
    /// What the modes ran on.
    pub inputs: Inputs,
    /// Every mode.
    pub modes: Vec<ModeResult>,
    /// The mode that reproduces the recorded outputs best.
    pub best_mode: Option<ModeName>,
    /// Whether `best_mode` reproduces them within float rounding.
    pub reproduced: Option<bool>,
    /// Replay of the captured train-mode forwards.
    pub replay: Option<Replay>,
    /// Where the momentum was assumed and did not replay to B: a momentum that does
    /// (`"cma"`, momentum=None).
    pub momentum_fits: Option<Momentum>,
    /// Channels whose running mean or variance is NaN or infinite in A.
    pub nonfinite_channels_a: Vec<usize>,
    /// Channels whose running mean or variance is NaN or infinite in B.
    pub nonfinite_channels_b: Vec<usize>,
    /// One sentence: what accounts for B.
    pub verdict: String,
    /// Further observations, one sentence each.
    pub notes: Vec<String>,
}

/// Rows of synthetic input per layer, at most.
pub const SYNTHETIC_SAMPLES: usize = 256;

/// Values of synthetic input per layer, at most (32 MiB of f64): wide layers get fewer
/// rows, so a layer of a million channels does not need gigabytes for its re-run.
pub const SYNTHETIC_VALUES: usize = 1 << 22;

/// Rows of synthetic input for `channels` channels: [`SYNTHETIC_SAMPLES`] within
/// [`SYNTHETIC_VALUES`], and at least 2 (train mode needs two values per channel).
pub fn synthetic_samples(channels: usize) -> usize {
    (SYNTHETIC_VALUES / channels.max(1)).clamp(2, SYNTHETIC_SAMPLES)
}

/// Channels named in `impact.worst`.
const WORST: usize = 3;

/// Explains the layers of A and B chosen by `options`, with captured activations if given.
///
/// A layer that cannot be explained (missing on a side, a capture that does not fit it) is
/// reported in `skipped` with the reason; the run fails only when no layer can be explained.
/// The report holds every layer's per-channel results: to write them out as they come, use
/// [`Explainer`] and [`Explained`].
pub fn explain(
    a: &Checkpoint,
    b: &Checkpoint,
    activations: Option<&Checkpoint>,
    options: &ExplainOptions,
) -> Result<ExplainReport, ExplainError> {
    let explainer = Explainer::new(a, b, activations, options)?;
    let mut layers = explainer.layers()?;
    let explained = layers.by_ref().collect();
    Ok(explainer.report(explained, layers.into_skipped()))
}

/// An `explain` run set up: A and B aligned, the capture read, the layers chosen.
pub struct Explainer<'c> {
    side_a: Side<'c>,
    side_b: Side<'c>,
    captured: Option<Activations<'c>>,
    options: &'c ExplainOptions,
    alignment: Alignment,
    capture_alignment: Option<Alignment>,
    /// The layers to explain, in report order, with the key of each one's capture.
    chosen: Vec<(String, Option<String>)>,
    notes: Vec<String>,
    /// Channels explained at once, at most ([`WINDOW_CHANNELS`] unless set).
    window: u64,
}

/// Channels explained at once, at most (one layer at least): layers are explained in
/// parallel a window at a time and handed out in order, so memory holds the window's
/// layers, whatever the number of layers.
pub const WINDOW_CHANNELS: u64 = 1 << 20;

/// Layers explained at once, at most.
pub const WINDOW_LAYERS: usize = 256;

impl<'c> Explainer<'c> {
    /// Aligns A's and B's names, reads the capture's structure and chooses the layers: those
    /// named in `options`, else the captured ones, else those whose statistics changed.
    pub fn new(
        a: &'c Checkpoint,
        b: &'c Checkpoint,
        activations: Option<&'c Checkpoint>,
        options: &'c ExplainOptions,
    ) -> Result<Explainer<'c>, ExplainError> {
        let alignment = align::align(a.tensors(), b.tensors(), None, None).alignment;
        let side_a = Side::new(a, &alignment.strip_a);
        let side_b = Side::new(b, &alignment.strip_b);
        let captured = activations.map(Activations::read).transpose()?;
        let capture_alignment = captured.as_ref().map(|c| capture_alignment(&side_a, c));
        let mut notes = Vec::new();
        let captured_name = |l: &CapturedLayer| match &capture_alignment {
            Some(al) => side_a.aligned_name(&format!(
                "{}{}",
                al.strip_a,
                l.name.strip_prefix(al.strip_b.as_str()).unwrap_or(&l.name)
            )),
            None => side_a.aligned_name(&l.name),
        };
        let chosen: Vec<(String, Option<String>)> = if !options.layers.is_empty() {
            // A layer named twice is explained once, where it was first named.
            let mut seen = std::collections::HashSet::new();
            options
                .layers
                .iter()
                .filter(|n| seen.insert(n.as_str()))
                .map(|n| {
                    let name = side_a.aligned_name(n);
                    let cap = captured.as_ref().and_then(|c| {
                        c.layers
                            .iter()
                            .find(|(_, l)| captured_name(l) == name)
                            .map(|(key, _)| key.clone())
                    });
                    (name, cap)
                })
                .collect()
        } else if let Some(c) = &captured {
            c.layers
                .iter()
                .map(|(key, l)| (captured_name(l), Some(key.clone())))
                .collect()
        } else {
            changed_layers(&side_a, &side_b, &mut notes)?
                .into_iter()
                .map(|name| (name, None))
                .collect()
        };
        Ok(Explainer {
            side_a,
            side_b,
            captured,
            options,
            alignment,
            capture_alignment,
            chosen,
            notes,
            window: WINDOW_CHANNELS,
        })
    }

    /// Explains at most `channels` channels at once (one layer at least) instead of
    /// [`WINDOW_CHANNELS`]: less memory, less parallelism.
    pub fn with_window(mut self, channels: u64) -> Explainer<'c> {
        self.window = channels;
        self
    }

    /// Starts explaining the layers, in order. Fails with the first layer's error when no
    /// layer can be explained, before any is handed out.
    pub fn layers(&self) -> Result<Explained<'_, 'c>, ExplainError> {
        let mut layers = Explained {
            explainer: self,
            next: 0,
            ready: VecDeque::new(),
            skipped: Vec::new(),
        };
        let mut first_error = None;
        while layers.ready.is_empty() && layers.next < self.chosen.len() {
            if let Some(e) = layers.window() {
                first_error.get_or_insert(e);
            }
        }
        match first_error {
            Some(e) if layers.ready.is_empty() => Err(e),
            _ => Ok(layers),
        }
    }

    /// The report of this run, with `layers` and `skipped` as the caller holds them.
    pub fn report<L, S>(&self, layers: L, skipped: S) -> ExplainReport<L, S> {
        ExplainReport {
            schema_version: SCHEMA_VERSION,
            a: self.side_a.ckpt.path().display().to_string(),
            b: self.side_b.ckpt.path().display().to_string(),
            activations: self
                .captured
                .as_ref()
                .map(|c| c.path().display().to_string()),
            alignment: self.alignment.clone(),
            activations_alignment: self.capture_alignment.clone().filter(|al| al.matched > 0),
            layers,
            skipped,
            notes: self.notes.clone(),
        }
    }

    fn layer(&self, name: &str, key: Option<&str>) -> Result<ExplainLayer, ExplainError> {
        let acts = self.captured.as_ref();
        let cap = key.and_then(|k| acts?.layers.get(k));
        let la = self.side_a.layer(name, acts, cap)?;
        let lb = self.side_b.layer(name, acts, cap)?;
        let context = Context {
            acts,
            options: self.options,
        };
        context.layer(name, (self.side_a.ckpt, la), (self.side_b.ckpt, lb), cap)
    }
}

/// The layers of an [`Explainer`], explained in order a window at a time as they are asked
/// for; those that cannot be explained are set aside in [`Explained::skipped`].
pub struct Explained<'e, 'c> {
    explainer: &'e Explainer<'c>,
    /// The first chosen layer not explained yet.
    next: usize,
    ready: VecDeque<ExplainLayer>,
    skipped: Vec<SkippedLayer>,
}

impl Explained<'_, '_> {
    /// The layers skipped so far, with the reason (all of them once the iterator is done).
    pub fn skipped(&self) -> &[SkippedLayer] {
        &self.skipped
    }

    /// Layers explained and not handed out yet: at most one window's (see
    /// [`Explainer::with_window`]), however many layers there are.
    pub fn held(&self) -> usize {
        self.ready.len()
    }

    /// The skipped layers.
    pub fn into_skipped(self) -> Vec<SkippedLayer> {
        self.skipped
    }

    /// Explains the next window of layers in parallel; returns the first error among them.
    fn window(&mut self) -> Option<ExplainError> {
        let e = self.explainer;
        let start = self.next;
        let mut end = start;
        let mut channels = 0;
        while end < e.chosen.len() && end - start < WINDOW_LAYERS {
            let width = e
                .side_a
                .layers
                .get(&e.chosen[end].0)
                .map_or(0, |l| l.channels);
            if end > start && channels + width > e.window {
                break;
            }
            channels += width;
            end += 1;
        }
        self.next = end;
        let window = &e.chosen[start..end];
        let explain = |(name, key): &(String, Option<String>)| e.layer(name, key.as_deref());
        // A window of one wide layer runs on this thread (its passes over channels are still
        // parallel): the allocator reuses what this thread freed, the last layer's memory,
        // instead of taking more from the system for a worker thread.
        let results: Vec<Result<ExplainLayer, ExplainError>> = if window.len() == 1 {
            window.iter().map(explain).collect()
        } else {
            window.par_iter().map(explain).collect()
        };
        let mut first_error = None;
        for ((name, _), result) in window.iter().zip(results) {
            match result {
                Ok(l) => self.ready.push_back(l),
                Err(err) => {
                    self.skipped.push(SkippedLayer {
                        name: name.clone(),
                        reason: err.to_string(),
                    });
                    first_error.get_or_insert(err);
                }
            }
        }
        first_error
    }
}

impl Iterator for Explained<'_, '_> {
    type Item = ExplainLayer;

    fn next(&mut self) -> Option<ExplainLayer> {
        while self.ready.is_empty() && self.next < self.explainer.chosen.len() {
            self.window();
        }
        self.ready.pop_front()
    }
}

/// How the capture's layer names meet the checkpoints' (aligned) ones: the diff's wrapper
/// prefix detection, between A's layer names (`strip_a`) and the captured ones (`strip_b`),
/// so that a capture of the inner model explains a `module.`- or `_orig_mod.`-wrapped
/// checkpoint and the other way round.
fn capture_alignment(side_a: &Side<'_>, acts: &Activations<'_>) -> Alignment {
    let infos = |names: &mut dyn Iterator<Item = &String>| -> Vec<TensorInfo> {
        names
            .map(|n| TensorInfo {
                name: n.clone(),
                dtype: Dtype::F32,
                shape: Vec::new(),
                file: 0,
                bytes: 0,
                start: 0,
                view: None,
            })
            .collect()
    };
    let layers = infos(&mut side_a.layers.keys());
    let captured = infos(&mut acts.layers.keys());
    align::align(&layers, &captured, None, None).alignment
}

/// One checkpoint's BatchNorm layers under aligned names.
struct Side<'c> {
    ckpt: &'c Checkpoint,
    strip: String,
    layers: HashMap<String, BnLayer>,
}

impl<'c> Side<'c> {
    fn new(ckpt: &'c Checkpoint, strip: &str) -> Side<'c> {
        let layers = bn::discover(ckpt.tensors())
            .into_iter()
            .map(|l| (l.name.strip_prefix(strip).unwrap_or(&l.name).to_owned(), l))
            .collect();
        Side {
            ckpt,
            strip: strip.to_owned(),
            layers,
        }
    }

    /// `name` without this side's wrapper prefix (a name given either way is accepted).
    fn aligned_name(&self, name: &str) -> String {
        if self.layers.contains_key(name) {
            return name.to_owned();
        }
        let mut n = name.strip_prefix(self.strip.as_str()).unwrap_or(name);
        // Captures from a wrapped model carry the wrapper's prefix too.
        while let Some(rest) = WRAPPERS.iter().find_map(|w| n.strip_prefix(w)) {
            if self.layers.contains_key(n) {
                break;
            }
            n = rest;
        }
        n.to_owned()
    }

    fn layer(
        &self,
        name: &str,
        acts: Option<&Activations<'_>>,
        cap: Option<&CapturedLayer>,
    ) -> Result<&BnLayer, ExplainError> {
        self.layers.get(name).ok_or_else(|| {
            if let (Some(acts), Some(false)) = (acts, cap.and_then(|c| c.meta.track_running_stats))
            {
                return ExplainError::input(
                    acts.path(),
                    format!(
                        "layer {name:?} was captured with track_running_stats=False: it keeps no running statistics in A or B, so there is nothing to explain or replay"
                    ),
                );
            }
            let mut known: Vec<&str> = self.layers.keys().map(String::as_str).collect();
            known.sort_unstable();
            let listed = if known.len() > 8 {
                format!("{}, …", known[..8].join(", "))
            } else {
                known.join(", ")
            };
            let origin = acts.map_or_else(String::new, |c| {
                format!(" (captured in {})", c.path().display())
            });
            ExplainError::input(
                self.ckpt.path(),
                format!(
                    "no BatchNorm layer {name:?}{origin}; its BatchNorm layers are: {}",
                    if listed.is_empty() { "none" } else { &listed }
                ),
            )
        })
    }
}

/// Layers on both sides whose running statistics or counter differ, sorted by name.
fn changed_layers(
    a: &Side<'_>,
    b: &Side<'_>,
    notes: &mut Vec<String>,
) -> Result<Vec<String>, ExplainError> {
    let mut names: Vec<&String> = a
        .layers
        .keys()
        .filter(|n| b.layers.contains_key(*n))
        .collect();
    names.sort();
    let mut out = Vec::new();
    let mut skipped = false;
    for name in names {
        let (la, lb) = (&a.layers[name], &b.layers[name]);
        // A rebuilt layer cannot be re-run from the other's statistics: expected, not a
        // failure of the whole explanation (`diff` reports it as incompatible).
        if la.channels != lb.channels || la.convention != lb.convention {
            skipped = true;
            notes.push(format!(
                "{name} is not explained: {} channels ({}) in A, {} ({}) in B, not the same layer.",
                la.channels,
                la.convention.as_str(),
                lb.channels,
                lb.convention.as_str()
            ));
            continue;
        }
        let va = layer_values_unmapped(a.ckpt, la)?;
        let vb = layer_values_unmapped(b.ckpt, lb)?;
        if stats_differ(&va, &vb) {
            out.push(name.clone());
        }
    }
    if out.is_empty() && !skipped {
        // Say why there is nothing to explain: no layers, none in common, or no change.
        let (na, nb) = (a.layers.len(), b.layers.len());
        notes.push(if na == 0 && nb == 0 {
            "A and B have no BatchNorm layers.".to_owned()
        } else if na == 0 || nb == 0 {
            format!(
                "Only {} has BatchNorm layers ({}), so none can be compared.",
                if na == 0 { "B" } else { "A" },
                na.max(nb)
            )
        } else if !a.layers.keys().any(|n| b.layers.contains_key(n)) {
            format!(
                "No BatchNorm layer is in both A ({na}) and B ({nb}) under the same name, so none \
                 can be compared; `bnaudit diff` shows the names and the prefix alignment."
            )
        } else {
            "No BatchNorm layer's running statistics differ between A and B; name layers with --layer to re-run them anyway."
                .to_owned()
        });
    }
    Ok(out)
}

/// Whether running statistics or counters differ (bitwise: NaN payloads count).
fn stats_differ(a: &LayerValues, b: &LayerValues) -> bool {
    !same_bits(a.running_mean.as_deref(), b.running_mean.as_deref())
        || !same_bits(a.running_var.as_deref(), b.running_var.as_deref())
        || a.num_batches_tracked != b.num_batches_tracked
}

/// [`stats_differ`] of loaded layers, whose statistics moved out of their values.
fn loaded_differ(a: &Loaded, b: &Loaded) -> bool {
    !same_bits(Some(&a.stats.mean), Some(&b.stats.mean))
        || !same_bits(Some(&a.stats.var), Some(&b.stats.var))
        || a.stats.num_batches_tracked != b.stats.num_batches_tracked
}

fn same_bits(x: Option<&[f64]>, y: Option<&[f64]>) -> bool {
    match (x, y) {
        (Some(x), Some(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| p.to_bits() == q.to_bits())
        }
        (x, y) => x.is_none() && y.is_none(),
    }
}

/// A relative error for sentences: `1.27%`, or `7.2e-8` when too small for percent.
fn percent(x: f64) -> String {
    if x * 100.0 >= 0.01 {
        format!("{:.2}%", x * 100.0)
    } else {
        format!("{x:.1e}")
    }
}

/// Channels whose running mean or variance is NaN or infinite.
fn nonfinite_channels(s: &RunningStats) -> Vec<usize> {
    (0..s.mean.len())
        .filter(|&ch| !(s.mean[ch].is_finite() && s.var[ch].is_finite()))
        .collect()
}

/// The value of the last pattern that covers `name`, else `global`.
fn for_layer<T: Copy>(name: &str, list: &[(Patterns, T)], global: Option<T>) -> Option<T> {
    list.iter()
        .rev()
        .find(|(p, _)| p.covers(name))
        .map(|(_, v)| *v)
        .or(global)
}

/// A layer's decoded side: statistics and affine parameters.
struct Loaded {
    values: LayerValues,
    stats: RunningStats,
}

fn load(ckpt: &Checkpoint, layer: &BnLayer) -> Result<Loaded, ExplainError> {
    let mut values = layer_values_unmapped(ckpt, layer)?;
    let c = layer.channels as usize;
    let bad_len = [
        &values.weight,
        &values.bias,
        &values.running_mean,
        &values.running_var,
    ]
    .into_iter()
    .flatten()
    .any(|v| v.len() != c);
    if bad_len {
        return Err(ExplainError::input(
            ckpt.path(),
            format!(
                "layer {:?}: its tensors do not all hold {c} values, one per channel",
                layer.name
            ),
        ));
    }
    // Moved, not copied: a layer of millions of channels holds them once.
    let (Some(mean), Some(var)) = (values.running_mean.take(), values.running_var.take()) else {
        return Err(ExplainError::input(
            ckpt.path(),
            format!(
                "layer {:?}: running statistics of dtype {} cannot be decoded",
                layer.name, layer.dtype
            ),
        ));
    };
    let stats = RunningStats {
        mean,
        var,
        num_batches_tracked: values.num_batches_tracked,
        dtype: layer.dtype,
    };
    Ok(Loaded { values, stats })
}

/// Shared state of one `explain` run.
struct Context<'r, 'c> {
    acts: Option<&'r Activations<'c>>,
    options: &'r ExplainOptions,
}

/// The three distinct computations behind the five modes: the batch-statistics modes
/// compute the same output and differ only in what they update.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Batch,
    EvalA,
    EvalB,
}

/// Running summary of one computation's outputs.
#[derive(Debug, Default, Clone, Copy)]
struct Acc {
    out: Pooled,
    err: Option<f64>,
    diff_train: Option<f64>,
}

impl Acc {
    fn stats(&self) -> Option<OutputStats> {
        (self.out.count > 0).then(|| OutputStats {
            mean: self.out.mean,
            std: self.out.std(),
        })
    }
}

/// Values per tile read from an activation file: 1 MiB of f32, so a thread's buffers stay
/// at a few MiB whatever the capture's size.
const CHUNK: usize = 1 << 18;

/// The maps of the three computations on one batch (the batch one absent where batch
/// statistics do not exist), their output summaries folded into `accs`.
struct Maps<M> {
    batch: Option<M>,
    eval_a: M,
    eval_b: M,
}

impl<'s> Maps<Normalising<'s>> {
    /// The maps of `pair`, computed per channel as they are asked for; `batch`: the moments
    /// of the batch, where its statistics exist.
    fn new(pair: &Pair<'s>, batch: Option<&'s Moments>) -> Maps<Normalising<'s>> {
        let map =
            |mean: &'s [f64], var: &'s [f64], var_divisor: f64, bn: &BatchNorm<'s>| Normalising {
                mean,
                var,
                var_divisor,
                eps: bn.eps,
                weight: bn.weight,
                bias: bn.bias,
            };
        Maps {
            batch: batch.map(|m| map(&m.mean, &m.m2, m.count as f64, pair.bn_a)),
            eval_a: map(&pair.a.mean, &pair.a.var, 1.0, pair.bn_a),
            eval_b: map(&pair.b.mean, &pair.b.var, 1.0, pair.bn_b),
        }
    }

    /// The maps stored in `T`, the precision the captured values are mapped in.
    fn stored<T: Real>(&self) -> Maps<Affine<T>> {
        let c = self.eval_a.mean.len();
        Maps {
            batch: self.batch.as_ref().map(|m| Affine::of(m, c)),
            eval_a: Affine::of(&self.eval_a, c),
            eval_b: Affine::of(&self.eval_b, c),
        }
    }
}

impl<M: ChannelMap> Maps<M> {
    fn each(&self) -> Vec<(Kind, &M)> {
        let mut v: Vec<(Kind, &M)> = self.batch.iter().map(|m| (Kind::Batch, m)).collect();
        v.push((Kind::EvalA, &self.eval_a));
        v.push((Kind::EvalB, &self.eval_b));
        v
    }

    /// Output moments and the difference from train mode, from the input's moments.
    fn summarise(&self, m: &Moments, accs: &mut HashMap<Kind, Acc>) {
        for (kind, map) in self.each() {
            let acc = accs.entry(kind).or_default();
            acc.out.merge(&map.output_moments(m));
            if let Some(train) = &self.batch {
                let d = map.max_diff(train, m);
                acc.diff_train = Some(acc.diff_train.map_or(d, |x| x.max(d)));
            }
        }
    }
}

/// Rounds an output computed in `T` to `dtype` where that is narrower: PyTorch returns
/// half-precision outputs for half-precision inputs.
fn rounding<T: Real>(dtype: Dtype) -> Option<fn(T) -> T> {
    let wide = std::mem::size_of::<T>() == 8;
    match dtype {
        Dtype::F32 if wide => Some(|v: T| T::narrow(f64::from(v.widen() as f32))),
        Dtype::BF16 => Some(|v: T| T::narrow(Dtype::BF16.round_f64(v.widen()))),
        Dtype::F16 => Some(|v: T| T::narrow(Dtype::F16.round_f64(v.widen()))),
        _ => None,
    }
}

/// Largest `|a - b|`; equal values (infinities included) and NaN against NaN count 0, NaN
/// against a number counts infinite.
fn max_abs_diff(a: impl Iterator<Item = f64>, b: &[f64]) -> f64 {
    a.zip(b)
        .map(|(x, &y)| match (x.is_nan(), y.is_nan()) {
            (true, true) => 0.0,
            (false, false) if x == y => 0.0,
            (false, false) => (x - y).abs(),
            _ => f64::INFINITY,
        })
        .fold(0.0, f64::max)
}

impl Context<'_, '_> {
    fn layer(
        &self,
        name: &str,
        (ckpt_a, la): (&Checkpoint, &BnLayer),
        (ckpt_b, lb): (&Checkpoint, &BnLayer),
        cap: Option<&CapturedLayer>,
    ) -> Result<ExplainLayer, ExplainError> {
        if la.channels != lb.channels || la.convention != lb.convention {
            return Err(ExplainError::input(
                ckpt_b.path(),
                format!(
                    "layer {name:?} has {} channels ({}) but {} ({}) in {}: not the same layer",
                    lb.channels,
                    lb.convention.as_str(),
                    la.channels,
                    la.convention.as_str(),
                    ckpt_a.path().display()
                ),
            ));
        }
        let a = load(ckpt_a, la)?;
        let b = load(ckpt_b, lb)?;
        let meta = cap.map(|c| &c.meta);
        let (momentum, momentum_source) = match (
            for_layer(name, &self.options.momentum_for, self.options.momentum),
            meta.and_then(|m| m.momentum),
        ) {
            (Some(m), _) => (m, Source::Option),
            (None, Some(m)) => (m, Source::Activations),
            (None, None) => (
                Momentum::Value(la.convention.default_momentum()),
                Source::Convention,
            ),
        };
        let (eps, eps_source) = match (
            for_layer(name, &self.options.eps_for, self.options.eps),
            meta.and_then(|m| m.eps),
        ) {
            (Some(e), _) => (e, Source::Option),
            (None, Some(e)) => (e, Source::Activations),
            (None, None) => (la.convention.default_eps(), Source::Convention),
        };
        let rule = UpdateRule::new(la.convention, momentum);
        let mut notes = Vec::new();
        let stats_changed = loaded_differ(&a, &b);
        let train_forwards = cap.map(|c| (0..c.forwards.len()).filter(|&i| c.trained(i)).count());
        let (forwards, forwards_source) = match (
            a.stats.num_batches_tracked,
            b.stats.num_batches_tracked,
        ) {
            (Some(na), Some(nb)) if nb >= na => {
                (Some((nb - na) as u64), Some(ForwardsSource::Counter))
            }
            (Some(na), Some(nb)) => {
                notes.push(format!(
                    "The counter went down ({na} in A, {nb} in B): the statistics were reset, so no batch can be implied."
                ));
                (None, None)
            }
            _ => match train_forwards {
                Some(k) => (Some(k as u64), Some(ForwardsSource::Activations)),
                None if stats_changed => {
                    notes.push(format!(
                        "No counter ({} convention): one forward is assumed; an activation file counts them.",
                        la.convention.as_str()
                    ));
                    (Some(1), Some(ForwardsSource::Assumed))
                }
                None => (None, None),
            },
        };
        let counter_before = a
            .stats
            .num_batches_tracked
            .or(meta.and_then(|m| m.num_batches_tracked))
            .unwrap_or(0);
        let nonfinite_a = nonfinite_channels(&a.stats);
        let nonfinite_b = nonfinite_channels(&b.stats);
        // Non-finite statistics imply no batch: the rule's algebra turns them into noise.
        let implied_batch = forwards
            .filter(|_| stats_changed && nonfinite_a.is_empty() && nonfinite_b.is_empty())
            .and_then(|k| implied(&rule, &a.stats, &b.stats, k, counter_before));
        if let Some(ib) = &implied_batch
            && !ib.negative_var_channels.is_empty()
        {
            notes.push(format!(
                "The implied batch variance is negative in {} {}: {} at momentum {momentum} cannot produce B from A.",
                if ib.negative_var_channels.len() == 1 { "channel" } else { "channels" },
                list(&ib.negative_var_channels),
                if ib.forwards == 1 { "1 forward".to_owned() } else { format!("{} forwards", ib.forwards) }
            ));
        }
        let impact = impact(&a, &b, eps);
        let bn_a = BatchNorm {
            eps,
            weight: a.values.weight.as_deref(),
            bias: a.values.bias.as_deref(),
            rule,
        };
        let bn_b = BatchNorm {
            weight: b.values.weight.as_deref(),
            bias: b.values.bias.as_deref(),
            ..bn_a
        };
        let pair = Pair {
            bn_a: &bn_a,
            bn_b: &bn_b,
            a: &a.stats,
            b: &b.stats,
        };
        let runs = match (cap, self.acts) {
            (Some(cap), Some(acts)) => {
                // Nothing records the momentum: try the cumulative average too, which
                // `momentum=None` layers use.
                let alternative = (momentum_source == Source::Convention
                    && momentum != Momentum::Cma
                    && rule.unbiased_var)
                    .then(|| UpdateRule::new(la.convention, Momentum::Cma));
                self.captured(name, &pair, acts, cap, alternative)?
            }
            _ => self.synthetic(name, implied_batch.as_ref(), &pair),
        };
        notes.extend(runs.notes);
        let cma_fits = match (&runs.replay, &runs.replay_alternative) {
            (Some(r), Some((m, alt))) if alt.explains_b && !r.explains_b => {
                notes.push(format!(
                    "Nothing records this layer's momentum and the assumed {momentum} does not replay to B, but momentum=None (a cumulative average) does: max relative error {} against {} at {momentum}. Pass --momentum {m} (or capture with the plugin, which records it).",
                    percent(alt.max_rel_err_mean.max(alt.max_rel_err_var)),
                    percent(r.max_rel_err_mean.max(r.max_rel_err_var)),
                ));
                Some(*m)
            }
            _ => None,
        };
        let mut layer = ExplainLayer {
            name: name.to_owned(),
            convention: la.convention,
            channels: la.channels,
            momentum,
            momentum_source,
            eps,
            eps_source,
            nbt_a: a.stats.num_batches_tracked,
            nbt_b: b.stats.num_batches_tracked,
            forwards,
            forwards_source,
            stats_changed,
            impact,
            implied_batch,
            inputs: runs.inputs,
            modes: runs.modes,
            best_mode: runs.best_mode,
            reproduced: runs.reproduced,
            replay: runs.replay,
            momentum_fits: cma_fits,
            nonfinite_channels_a: nonfinite_a,
            nonfinite_channels_b: nonfinite_b,
            verdict: String::new(),
            notes,
        };
        layer.verdict = verdict(&layer);
        Ok(layer)
    }

    /// Every mode on the captured inputs, compared with the recorded outputs; the replay.
    fn captured(
        &self,
        name: &str,
        pair: &Pair<'_>,
        acts: &Activations<'_>,
        cap: &CapturedLayer,
        alternative: Option<UpdateRule>,
    ) -> Result<Runs, ExplainError> {
        let path = acts.path();
        let c = pair.a.mean.len();
        let mut replay = pair.a.clone();
        let bn_alt = alternative.map(|rule| BatchNorm { rule, ..*pair.bn_a });
        let mut replay_alt = pair.a.clone();
        let mut accs: HashMap<Kind, Acc> = HashMap::new();
        let (mut train_forwards, mut with_outputs, mut statistics) = (0, 0, 0);
        let mut single = false;
        let mut out_dtype = Dtype::F64;
        for (i, fwd) in cap.forwards.iter().enumerate() {
            let key = fwd.key(&cap.name, i);
            let bad = |problem: String| ExplainError::input(&path, format!("{key}: {problem}"));
            let trained = cap.trained(i);
            let batch = match fwd {
                Forward::Stats(stats) => {
                    statistics += 1;
                    if stats.mean.len() != c {
                        return Err(bad(format!(
                            "{} channels of batch statistics, layer {name:?} has {c}",
                            stats.mean.len()
                        )));
                    }
                    Some(stats.clone())
                }
                Forward::Tensors { input, output } => {
                    if input.shape[1] != c as u64 {
                        return Err(bad(format!(
                            "shape {:?} has {} channels, layer {name:?} has {c}",
                            input.shape, input.shape[1]
                        )));
                    }
                    if let Some(o) = output {
                        with_outputs += 1;
                        out_dtype = o.dtype;
                    }
                    let run = if input.dtype == Dtype::F64 {
                        tensor_forward::<f64>(pair, acts, input, output.as_ref(), &mut accs)
                    } else {
                        tensor_forward::<f32>(pair, acts, input, output.as_ref(), &mut accs)
                    };
                    let batch = run?;
                    single |= batch.is_none();
                    batch
                }
            };
            if trained {
                train_forwards += 1;
                match batch {
                    Some(b) if b.count > 1 || !pair.bn_a.rule.unbiased_var => {
                        pair.bn_a.update(&mut replay, &b);
                        if let Some(bn) = &bn_alt {
                            bn.update(&mut replay_alt, &b);
                        }
                    }
                    _ => {
                        return Err(bad(
                            "1 value per channel in a train-mode forward, which PyTorch refuses (\"Expected more than 1 value per channel when training\")".to_owned(),
                        ));
                    }
                }
            }
        }
        let mut notes = Vec::new();
        if single {
            notes.push(
                "Some eval-mode forwards hold one value per channel: batch statistics do not exist for them, so the batch modes skip them."
                    .to_owned(),
            );
        }
        if statistics > 0 {
            notes.push(format!(
                "{} of the capture {} batch statistics only: the modes need inputs and were not run on {}; the replay uses the recorded statistics.",
                plural(statistics, "forward", "forwards"),
                if statistics == 1 { "holds" } else { "hold" },
                if statistics == 1 { "it" } else { "them" },
            ));
        }
        let modes = modes(&accs);
        let (best_mode, reproduced) = if with_outputs > 0 {
            best_mode(&modes, cap, out_dtype)
        } else {
            (None, None)
        };
        Ok(Runs {
            inputs: Inputs::Captured {
                forwards: cap.forwards.len(),
                train_forwards,
                with_outputs,
                statistics_only: statistics,
            },
            modes,
            best_mode,
            reproduced,
            replay: Some(compare_replay(&replay, pair.b, train_forwards)),
            replay_alternative: bn_alt.filter(|_| train_forwards > 0).map(|bn| {
                (
                    bn.rule.momentum,
                    compare_replay(&replay_alt, pair.b, train_forwards),
                )
            }),
            notes,
        })
    }

    /// Every mode on seeded normal inputs with the implied batch's (or A's) statistics.
    fn synthetic(&self, name: &str, implied: Option<&ImpliedBatch>, pair: &Pair<'_>) -> Runs {
        let (mean, var, drawn_from) = match implied {
            // A negative implied variance is no distribution to draw from (the update rule
            // does not explain B): fall back to A's statistics.
            Some(ib)
                if ib.negative_var_channels.is_empty()
                    && ib.mean.iter().chain(&ib.var).all(|v| v.is_finite()) =>
            {
                (&ib.mean, &ib.var, "implied_batch")
            }
            _ => (&pair.a.mean, &pair.a.var, "running_a"),
        };
        let samples = synthetic_samples(mean.len());
        let mut runs = Runs {
            inputs: Inputs::Synthetic {
                seed: self.options.seed,
                samples,
                drawn_from,
            },
            modes: Vec::new(),
            best_mode: None,
            reproduced: None,
            replay: None,
            replay_alternative: None,
            notes: Vec::new(),
        };
        // Each channel's distribution is made again for every value drawn (it is two
        // numbers): a vector of them would cost more than the layer's statistics.
        let dist = |ch: usize| Normal::new(mean[ch], var[ch].max(0.0).sqrt()).ok();
        let c = mean.len();
        if (0..c).any(|ch| dist(ch).is_none()) {
            runs.notes.push(
                "Non-finite statistics: no synthetic inputs can be drawn, so no mode was re-run."
                    .to_owned(),
            );
            return runs;
        }
        let mut rng = rand_pcg::Pcg64Mcg::seed_from_u64(self.options.seed ^ fnv1a(name));
        // Reserved, not grown: a doubling vector would hold its old and new buffer at once.
        let mut data = Vec::with_capacity(samples * c);
        data.extend((0..samples * c).filter_map(|i| dist(i % c).map(|d| d.sample(&mut rng))));
        let g = Geometry {
            samples,
            channels: c,
            spatial: 1,
        };
        let m = match stream::moments(&data[..], &g, CHUNK) {
            Ok(m) => m,
            Err(never) => match never {},
        };
        drop(data);
        let mut accs = HashMap::new();
        // In f64 the stored maps would equal these: computed per channel, none is held.
        Maps::new(pair, Some(&m)).summarise(&m, &mut accs);
        runs.modes = modes(&accs);
        runs
    }
}

/// One captured input (and recorded output) through every mode, in `T`: the batch
/// statistics in one pass over the input, then every mode's error against the recording in
/// one fused pass over both. Returns the batch statistics, `None` where a single value per
/// channel makes them undefined.
fn tensor_forward<T: Real>(
    pair: &Pair<'_>,
    acts: &Activations<'_>,
    input: &TensorInfo,
    output: Option<&TensorInfo>,
    accs: &mut HashMap<Kind, Acc>,
) -> Result<Option<BatchStats>, ExplainError> {
    let g = Geometry::of(&input.shape)
        .map_err(|e| ExplainError::input(acts.path(), format!("{}: {e}", input.name)))?;
    let x = acts.source::<T>(input);
    let m = stream::moments(&x, &g, CHUNK)?;
    let has_batch = m.count > 1 || !pair.bn_a.rule.unbiased_var;
    let maps = Maps::new(pair, has_batch.then_some(&m)).stored::<T>();
    maps.summarise(&m, accs);
    if let Some(o) = output {
        let each = maps.each();
        let affines: Vec<&Affine<T>> = each.iter().map(|(_, a)| *a).collect();
        let errs = stream::errors(
            &x,
            &acts.source::<T>(o),
            &g,
            CHUNK,
            &affines,
            rounding::<T>(o.dtype),
        )?;
        for ((kind, _), e) in each.iter().zip(errs) {
            let acc = accs.entry(*kind).or_default();
            acc.err = Some(acc.err.map_or(e, |x| x.max(e)));
        }
    }
    Ok(has_batch.then(|| m.batch()))
}

/// What re-running the modes found.
struct Runs {
    inputs: Inputs,
    modes: Vec<ModeResult>,
    best_mode: Option<ModeName>,
    reproduced: Option<bool>,
    replay: Option<Replay>,
    /// The replay under another momentum than the one assumed, where nothing recorded it.
    replay_alternative: Option<(Momentum, Replay)>,
    notes: Vec<String>,
}

/// Both sides' layers as the forward pass needs them.
struct Pair<'p> {
    bn_a: &'p BatchNorm<'p>,
    bn_b: &'p BatchNorm<'p>,
    a: &'p RunningStats,
    b: &'p RunningStats,
}

fn modes(accs: &HashMap<Kind, Acc>) -> Vec<ModeResult> {
    ModeName::ALL
        .into_iter()
        .map(|mode| {
            let acc = accs.get(&mode.kind()).copied().unwrap_or_default();
            ModeResult {
                mode,
                uses: mode.uses(),
                updates: mode == ModeName::Train,
                output: acc.stats(),
                max_abs_err: acc.err,
                max_abs_diff_vs_train: acc.diff_train,
            }
        })
        .collect()
}

/// The mode with the smallest error. The batch-statistics modes compute the same output, so
/// between them the capture's metadata decides: train mode with tracking is `train`.
fn best_mode(
    modes: &[ModeResult],
    cap: &CapturedLayer,
    dtype: Dtype,
) -> (Option<ModeName>, Option<bool>) {
    let Some(best) = modes
        .iter()
        .filter_map(|m| m.max_abs_err.map(|e| (m, e)))
        .min_by(|x, y| x.1.total_cmp(&y.1))
    else {
        return (None, None);
    };
    let mode = match best.0.mode.kind() {
        Kind::Batch => {
            let any_trained = (0..cap.forwards.len()).any(|i| cap.trained(i));
            if any_trained {
                ModeName::Train
            } else if cap.meta.training.unwrap_or(false) {
                ModeName::TrainNoTrack
            } else {
                ModeName::EvalNoTrack
            }
        }
        _ => best.0.mode,
    };
    let scale = best
        .0
        .output
        .map_or(1.0, |o| (o.mean.abs() + o.std).max(1.0));
    let tolerance = (16.0 * dtype.unit_roundoff()).max(1e-5) * scale;
    (Some(mode), Some(best.1 <= tolerance))
}

fn compare_replay(replay: &RunningStats, b: &RunningStats, batches: usize) -> Replay {
    // Errors relative to the tensor's largest magnitude: a channel whose statistic is near 0
    // still carries the rounding of the larger values it was computed from.
    let errs = |r: &[f64], t: &[f64]| {
        let abs = max_abs_diff(r.iter().copied(), t);
        let scale = t.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        (abs, if scale > 0.0 { abs / scale } else { abs })
    };
    let (abs_m, rel_m) = errs(&replay.mean, &b.mean);
    let (abs_v, rel_v) = errs(&replay.var, &b.var);
    // Each update rounds to the storage dtype once, and the error it leaves decays with the
    // later updates; PyTorch's batch statistics (computed at least in f32) add one rounding
    // each. Twice that, for the replay's own rounding.
    let slack =
        2.0 * (batches as f64 + 1.0) * b.dtype.unit_roundoff().max(f64::from(f32::EPSILON) / 2.0);
    let counter_ok = match (replay.num_batches_tracked, b.num_batches_tracked) {
        (Some(r), Some(t)) => r == t,
        _ => true,
    };
    Replay {
        batches,
        max_abs_err_mean: abs_m,
        max_abs_err_var: abs_v,
        max_rel_err_mean: rel_m,
        max_rel_err_var: rel_v,
        nbt_replayed: replay.num_batches_tracked,
        tolerance: slack,
        dtype: b.dtype,
        explains_b: counter_ok && rel_m <= slack && rel_v <= slack,
    }
}

fn implied(
    rule: &UpdateRule,
    a: &RunningStats,
    b: &RunningStats,
    k: u64,
    counter_before: i64,
) -> Option<ImpliedBatch> {
    let solve = |x: &[f64], y: &[f64]| -> Option<Vec<f64>> {
        // Reserved: collecting into an `Option` cannot know the length.
        let mut out = Vec::with_capacity(x.len());
        for (&x, &y) in x.iter().zip(y) {
            out.push(rule.implied_batch(x, y, k, counter_before)?);
        }
        Some(out)
    };
    let mean = solve(&a.mean, &b.mean)?;
    let var = solve(&a.var, &b.var)?;
    let negative_var_channels = var
        .iter()
        .enumerate()
        .filter(|(_, v)| **v < 0.0)
        .map(|(i, _)| i)
        .collect();
    Some(ImpliedBatch {
        mean,
        var,
        var_kind: if rule.unbiased_var {
            "unbiased"
        } else {
            "biased"
        },
        forwards: k,
        exact: k == 1,
        negative_var_channels,
    })
}

/// Eval outputs under A (`y = (x-μa)/√(va+ε)·wa + ba`) and B, for `x` with mean `μa` and
/// variance `va`: both are affine in `x`, so their means and deviations are exact.
fn impact(a: &Loaded, b: &Loaded, eps: f64) -> Impact {
    let c = a.stats.mean.len();
    let param =
        |v: &Option<Vec<f64>>, ch: usize, default: f64| v.as_ref().map_or(default, |v| v[ch]);
    let mut mean_shift = Vec::with_capacity(c);
    let mut scale_ratio = Vec::with_capacity(c);
    let mut rms_change = Vec::with_capacity(c);
    for ch in 0..c {
        let (ma, va) = (a.stats.mean[ch], a.stats.var[ch]);
        let (mb, vb) = (b.stats.mean[ch], b.stats.var[ch]);
        let (wa, ba) = (
            param(&a.values.weight, ch, 1.0),
            param(&a.values.bias, ch, 0.0),
        );
        let (wb, bb) = (
            param(&b.values.weight, ch, 1.0),
            param(&b.values.bias, ch, 0.0),
        );
        let sd_x = va.max(0.0).sqrt();
        let std_a = (wa / (va + eps).sqrt()).abs() * sd_x;
        let std_b = (wb / (vb + eps).sqrt()).abs() * sd_x;
        let mean_b = (ma - mb) / (vb + eps).sqrt() * wb + bb;
        let ok = |v: f64| {
            if std_a > 0.0 && v.is_finite() {
                v
            } else {
                f64::NAN
            }
        };
        let shift = ok((mean_b - ba) / std_a);
        let ratio = ok(std_b / std_a);
        mean_shift.push(shift);
        scale_ratio.push(ratio);
        rms_change.push(shift.hypot(ratio - 1.0));
    }
    // The WORST largest changes, in one pass (no sort of millions of channels).
    let mut top: Vec<usize> = Vec::with_capacity(WORST + 1);
    for ch in (0..c).filter(|&ch| rms_change[ch] > 0.0) {
        let at = top.partition_point(|&t| rms_change[t] >= rms_change[ch]);
        if at < WORST {
            top.insert(at, ch);
            top.truncate(WORST);
        }
    }
    let some = |v: f64| (!v.is_nan()).then_some(v);
    let worst = top
        .into_iter()
        .map(|channel| ChannelImpact {
            channel,
            mean_shift: some(mean_shift[channel]),
            scale_ratio: some(scale_ratio[channel]),
            rms_change: some(rms_change[channel]),
        })
        .collect();
    Impact {
        max_rms_change: rms_change
            .iter()
            .copied()
            .filter(|v| !v.is_nan())
            .reduce(f64::max),
        mean_shift,
        scale_ratio,
        rms_change,
        worst,
    }
}

fn list(channels: &[usize]) -> String {
    let shown: Vec<String> = channels.iter().take(5).map(usize::to_string).collect();
    if channels.len() > 5 {
        format!("{}, … ({} in all)", shown.join(", "), channels.len())
    } else {
        shown.join(", ")
    }
}

/// FNV-1a: a stable per-layer seed, independent of the standard library's hasher.
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// What a mode means, for sentences.
fn describe(mode: ModeName) -> &'static str {
    match mode {
        ModeName::Train => "train mode (batch statistics; the running statistics move)",
        ModeName::TrainNoTrack => "train mode without running statistics",
        ModeName::EvalA => "eval mode with A's statistics",
        ModeName::EvalB => "eval mode with B's statistics",
        ModeName::EvalNoTrack => "eval mode without running statistics (batch statistics)",
    }
}

/// The lead sentence of a layer.
fn verdict(l: &ExplainLayer) -> String {
    if !l.nonfinite_channels_b.is_empty() {
        let n = l.nonfinite_channels_b.len();
        return format!(
            "B's running statistics are not finite (NaN or Inf in {} {}){}: a train-mode forward saw NaN or Inf inputs or overflowed, and eval mode with B outputs NaN there.",
            if n == 1 { "channel" } else { "channels" },
            list(&l.nonfinite_channels_b),
            if l.nonfinite_channels_a.is_empty() {
                ""
            } else {
                "; A's already were"
            }
        );
    }
    if let Some(r) = &l.replay {
        let fwd = plural(
            r.batches,
            "captured train-mode forward",
            "captured train-mode forwards",
        );
        if r.batches > 0 {
            let one = r.batches == 1;
            let k = r.batches as u64;
            match l
                .forwards
                .filter(|_| l.forwards_source == Some(ForwardsSource::Counter))
            {
                Some(n) if k < n => {
                    return format!(
                        "The capture holds {k} of the {n} train-mode forwards between A and B (the counter moved by {n}): {} replayed, the other {} were not captured, so the replay stops short of B.",
                        if one { "that one is" } else { "those are" },
                        n - k
                    );
                }
                Some(n) if k > n => {
                    return format!(
                        "The capture holds {k} train-mode forwards but the counter moved by only {n} between A and B: B was saved before the capture ended (or A after it began), so the replay overshoots B."
                    );
                }
                _ => {}
            }
            if r.explains_b {
                let how = match r.dtype {
                    Dtype::F32 | Dtype::F64 => " exactly".to_owned(),
                    d => format!(
                        " within {d} rounding: max relative error {}, inside the tolerance {} of {} updates each rounded to {d}",
                        percent(r.max_rel_err_mean.max(r.max_rel_err_var)),
                        percent(r.tolerance),
                        r.batches
                    ),
                };
                return format!(
                    "The {fwd} account{} for B{how}.",
                    if one { "s" } else { "" }
                );
            }
            if l.momentum_fits == Some(Momentum::Cma) {
                return format!(
                    "The {fwd} account{} for B with momentum=None (a cumulative average), not with the assumed momentum {}.",
                    if one { "s" } else { "" },
                    l.momentum
                );
            }
            return format!(
                "The {fwd} {} not account for B: something else changed these statistics.",
                if one { "does" } else { "do" }
            );
        }
        let outputs = match l.best_mode {
            Some(m) => format!("; their outputs are those of {}", describe(m)),
            None => String::new(),
        };
        let change = if l.stats_changed {
            ", and none of them accounts for the change from A to B"
        } else {
            ", and B's statistics equal A's"
        };
        return format!("No captured forward ran in train mode{outputs}{change}.");
    }
    if !l.stats_changed {
        return "B's statistics equal A's; the modes differ only by batch against running statistics.".to_owned();
    }
    let impact = match l.impact.worst.first() {
        Some(w) => format!(
            "; in eval mode B's statistics move outputs by up to {:.2} output std (channel {})",
            w.rms_change.unwrap_or(0.0),
            w.channel
        ),
        None => String::new(),
    };
    match &l.implied_batch {
        Some(ib) if ib.exact => format!(
            "One train-mode forward moved A to B; its batch statistics are implied exactly{impact}."
        ),
        Some(ib) => format!(
            "{} train-mode forwards moved A to B; the implied batch is their weighted average{impact}.",
            ib.forwards
        ),
        None => {
            format!("B's statistics differ from A's, but the update rule implies no batch{impact}.")
        }
    }
}
