//! Classification of each BatchNorm layer, and its explanation by the drift algebra.

use foldhash::{HashMap, HashSet};
use rayon::prelude::*;

use super::{
    DiffOptions, Inference, LayerDiff, Momentum, PerTensor, Status, TensorChange, TensorDiff,
};
use crate::audit::align::{self, Aligned};
use crate::bn::drift::{self, Drift, Observation, Signature};
use crate::bn::{BnLayer, Convention, Role};
use crate::checkpoint::{Checkpoint, CheckpointError, TensorInfo};

/// One checkpoint with its tensors looked up by aligned name.
struct Side<'a> {
    ckpt: &'a Checkpoint,
    /// Sorted by aligned name ([`Aligned`] keeps them so): looked up by binary search, with
    /// no index of a million names to build.
    by_name: &'a [TensorInfo],
}

impl Side<'_> {
    fn get(&self, name: &str) -> Option<&TensorInfo> {
        align::find(self.by_name, name)
    }

    /// Decoded values of the layer's tensors in `roles`, each `None` if absent or not
    /// decodable; adjacent tensors are read at once.
    fn values<const N: usize>(
        &self,
        layer: &BnLayer,
        roles: [Role; N],
    ) -> Result<[Option<Vec<f64>>; N], CheckpointError> {
        self.ckpt
            .read_values_of(roles.map(|role| layer.keys.get(role).and_then(|k| self.get(k))))
    }

    /// The layer's counter value.
    fn counter(&self, layer: &BnLayer) -> Result<Option<i64>, CheckpointError> {
        let [nbt] = self.values(layer, [Role::NumBatchesTracked])?;
        Ok(counter(nbt))
    }
}

/// A counter's value from its decoded tensor: counters are integers far below 2^53, so the
/// f64 round trip is exact.
fn counter(values: Option<Vec<f64>>) -> Option<i64> {
    values.and_then(|v| v.first().copied()).map(|v| v as i64)
}

/// Both checkpoints, for reading layer values under aligned names.
pub(super) struct Sides<'a> {
    a: Side<'a>,
    b: Side<'a>,
    /// The side that is a sub-model saved on its own, and its prefix in the other.
    submodel: Option<(&'static str, &'a str)>,
}

impl<'a> Sides<'a> {
    pub(super) fn new(a: &'a Checkpoint, b: &'a Checkpoint, aligned: &'a Aligned<'_>) -> Self {
        Sides {
            a: Side {
                ckpt: a,
                by_name: &aligned.a,
            },
            b: Side {
                ckpt: b,
                by_name: &aligned.b,
            },
            submodel: aligned.alignment.submodel(),
        }
    }
}

/// Classifies and explains every layer found on either side, sorted by name.
pub(super) fn compare(
    sides: &Sides<'_>,
    found_a: &[BnLayer],
    found_b: &[BnLayer],
    tensors: &[TensorDiff],
    options: &DiffOptions,
) -> Result<Vec<LayerDiff>, CheckpointError> {
    let by_name_b: HashMap<&str, &BnLayer> = found_b.iter().map(|l| (l.name.as_str(), l)).collect();
    let in_a: HashSet<&str> = found_a.iter().map(|l| l.name.as_str()).collect();
    let only_b: Vec<&BnLayer> = found_b
        .iter()
        .filter(|lb| !in_a.contains(lb.name.as_str()))
        .collect();
    // Layers are independent; each is a few small reads and the drift algebra. Indexed
    // parallel collection writes each result in place, so a few hundred thousand layers
    // are never held twice.
    let mut out: Vec<Result<LayerDiff, CheckpointError>> = found_a
        .par_iter()
        .map(|la| match by_name_b.get(la.name.as_str()) {
            Some(lb) => both(sides, la, lb, tensors, options),
            None => Ok(one_side(
                sides,
                la,
                Status::OnlyInA,
                sides.a.counter(la)?,
                options,
            )),
        })
        .collect();
    out.par_extend(only_b.par_iter().map(|lb| {
        Ok(one_side(
            sides,
            lb,
            Status::OnlyInB,
            sides.b.counter(lb)?,
            options,
        ))
    }));
    let mut out = out.into_iter().collect::<Result<Vec<_>, _>>()?;
    out.par_sort_unstable_by(|x, y| x.name.cmp(&y.name));
    Ok(out)
}

/// The momentum to assume for `convention`, and where it came from.
fn momentum(convention: Convention, options: &DiffOptions) -> (Momentum, &'static str) {
    match options.momentum {
        Some(m) => (m, "option"),
        None => (Momentum::Value(convention.default_momentum()), "convention"),
    }
}

fn inference(convention: Convention, options: &DiffOptions) -> Inference {
    let (momentum, source) = momentum(convention, options);
    Inference {
        forwards: None,
        forwards_min: None,
        momentum,
        momentum_source: source.to_owned(),
        retained: None,
        consistent: None,
        var_ratio_min: None,
        var_ratio_channel: None,
        momentum_min: None,
        nonfinite_channels: Vec::new(),
        notes: Vec::new(),
    }
}

/// A layer present on one side only (`status` says which).
fn one_side(
    sides: &Sides<'_>,
    layer: &BnLayer,
    status: Status,
    counter: Option<i64>,
    options: &DiffOptions,
) -> LayerDiff {
    let in_a = status == Status::OnlyInA;
    let side = if in_a { "A" } else { "B" };
    let mut inference = inference(layer.convention, options);
    inference.notes.push(match sides.submodel {
        Some((sub_side, p)) if !layer.name.starts_with(p) => format!(
            "The layer exists only in {side}: {side}'s model holds it beside the sub-model {}, which {sub_side} holds on its own.",
            p.trim_end_matches(['.', '/'])
        ),
        _ => format!(
            "The layer exists only in {side}: it was {} in B, or renamed (see the alignment and --strip-prefix-a/-b).",
            if in_a { "removed" } else { "added" }
        ),
    });
    LayerDiff {
        name: layer.name.clone(),
        convention: layer.convention,
        status,
        nbt_a: counter.filter(|_| in_a),
        nbt_b: counter.filter(|_| !in_a),
        nbt_delta: None,
        changed: PerTensor::default(),
        max_abs_diff: PerTensor::default(),
        inference,
    }
}

/// Why two layers of the same name cannot be compared, if they cannot.
fn incompatibility(la: &BnLayer, lb: &BnLayer) -> Option<String> {
    if la.convention != lb.convention {
        return Some(format!(
            "The naming convention differs ({} in A, {} in B): not the same kind of layer.",
            la.convention.as_str(),
            lb.convention.as_str()
        ));
    }
    if la.channels != lb.channels {
        return Some(format!(
            "The channel count differs ({} in A, {} in B): a different architecture.",
            la.channels, lb.channels
        ));
    }
    if la.is_affine() != lb.is_affine() {
        return Some(format!(
            "Affine parameters exist only in {}: the layer was rebuilt with a different affine setting.",
            if la.is_affine() { "A" } else { "B" }
        ));
    }
    None
}

/// A layer present on both sides.
fn both(
    sides: &Sides<'_>,
    la: &BnLayer,
    lb: &BnLayer,
    diffs: &[TensorDiff],
    options: &DiffOptions,
) -> Result<LayerDiff, CheckpointError> {
    let stats = [Role::NumBatchesTracked, Role::RunningMean, Role::RunningVar];
    let [nbt_a, mean_a, var_a] = sides.a.values(la, stats)?;
    let [nbt_b, mean_b, var_b] = sides.b.values(lb, stats)?;
    let (nbt_a, nbt_b) = (counter(nbt_a), counter(nbt_b));
    let diff_of = |role: Role| {
        la.keys
            .get(role)
            .filter(|k| lb.keys.get(role) == Some(*k))
            .and_then(|k| {
                // Sorted by name, as the pairs they were compared from.
                let at = diffs.binary_search_by(|t| t.name.as_str().cmp(k));
                at.ok().map(|i| &diffs[i])
            })
    };
    let per = |f: &dyn Fn(&TensorDiff) -> Option<f64>| PerTensor {
        weight: diff_of(Role::Weight).and_then(f),
        bias: diff_of(Role::Bias).and_then(f),
        running_mean: diff_of(Role::RunningMean).and_then(f),
        running_var: diff_of(Role::RunningVar).and_then(f),
    };
    let changed_of = |role| diff_of(role).map(|d| d.change == TensorChange::Changed);
    let changed = PerTensor {
        weight: changed_of(Role::Weight),
        bias: changed_of(Role::Bias),
        running_mean: changed_of(Role::RunningMean),
        running_var: changed_of(Role::RunningVar),
    };
    let mut layer = LayerDiff {
        name: la.name.clone(),
        convention: la.convention,
        status: Status::Unchanged,
        nbt_a,
        nbt_b,
        nbt_delta: nbt_a.zip(nbt_b).map(|(a, b)| b - a),
        changed,
        // A value that became NaN or infinite has no finite difference: `null`, never a
        // finite maximum over the other elements beside it.
        max_abs_diff: per(&|d| {
            d.max_abs_diff
                .filter(|_| d.nonfinite_changed.unwrap_or(0) == 0)
        }),
        inference: inference(la.convention, options),
    };
    if let Some(reason) = incompatibility(la, lb) {
        layer.status = Status::Incompatible;
        layer.inference.notes.push(reason);
        return Ok(layer);
    }
    let affine_changed = changed.weight == Some(true) || changed.bias == Some(true);
    let stats_changed = changed.running_mean == Some(true) || changed.running_var == Some(true);
    let (Some(mean_a), Some(mean_b), Some(var_a), Some(var_b)) = (mean_a, mean_b, var_a, var_b)
    else {
        layer.status = classify(affine_changed, stats_changed, false);
        layer.inference.notes.push(
            "The running statistics are stored in a dtype bnaudit cannot decode: no inference."
                .to_owned(),
        );
        return Ok(layer);
    };
    let drift = drift::analyse(&Observation {
        momentum: layer.inference.momentum,
        nbt_a,
        nbt_b,
        mean_a: &mean_a,
        mean_b: &mean_b,
        var_a: &var_a,
        var_b: &var_b,
        stats_changed,
        unit_roundoff: la.dtype.unit_roundoff().max(lb.dtype.unit_roundoff()),
    });
    layer.status = classify(affine_changed, stats_changed, drift.is_reset());
    let inf = &mut layer.inference;
    inf.forwards = drift.forwards;
    inf.forwards_min = drift.forwards_min;
    inf.retained = drift.retained;
    inf.consistent = drift.consistent;
    inf.var_ratio_min = drift.var_ratio_min.map(|v| v.ratio);
    inf.var_ratio_channel = drift.var_ratio_min.map(|v| v.channel);
    inf.momentum_min = drift.momentum_min;
    inf.nonfinite_channels = drift.nonfinite.clone();
    layer.inference.notes = notes(&layer, la.convention, la.channels, &drift);
    Ok(layer)
}

/// DESIGN's status table.
fn classify(affine_changed: bool, stats_changed: bool, reset: bool) -> Status {
    match (reset, affine_changed, stats_changed) {
        (true, _, _) => Status::StatsReset,
        (false, false, false) => Status::Unchanged,
        (false, false, true) => Status::FrozenStatsDrift,
        (false, true, true) => Status::Trained,
        (false, true, false) => Status::AffineOnly,
    }
}

fn framework(convention: Convention) -> &'static str {
    match convention {
        Convention::Pytorch => "PyTorch",
        Convention::Keras => "Keras",
        Convention::Flax => "Flax",
        Convention::Paddle => "Paddle",
    }
}

/// The retained fraction in words.
fn retention(momentum: Momentum, k: i64, nbt_a: i64, retained: f64) -> String {
    match momentum {
        Momentum::Value(m) => format!("(1-{m})^{k} = {retained:.4} of A's statistics"),
        Momentum::Cma => format!(
            "{nbt_a}/{} = {retained:.4} of A's statistics (momentum=None: a cumulative average)",
            nbt_a + k
        ),
    }
}

/// One sentence per finding, most telling first.
fn notes(layer: &LayerDiff, convention: Convention, channels: u64, d: &Drift) -> Vec<String> {
    let m = layer.inference.momentum;
    let counters = layer.nbt_a.zip(layer.nbt_b);
    let mut notes = Vec::new();
    let updated = layer.status != Status::Unchanged && !d.is_reset();
    if let (Some((a, b)), true) = (counters, updated)
        && b > a
    {
        notes.push(format!(
                "num_batches_tracked went from {a} to {b}: {} train-mode forward{}, after which B keeps {}.",
                b - a,
                if b - a == 1 { "" } else { "s" },
                retention(m, b - a, a, d.retained.unwrap_or(1.0))
            ));
    }
    for s in &d.signatures {
        notes.push(match *s {
            Signature::NoCounter => match convention {
                Convention::Pytorch | Convention::Paddle => "There is no num_batches_tracked counter: FrozenBatchNorm2d (whose statistics never change in forward), track_running_stats=False, or a PyTorch older than 0.4.1; train-mode forwards cannot be counted.".to_owned(),
                c => format!("{} keeps no counter of train-mode forwards.", framework(c)),
            },
            Signature::CounterDown { from, to: 0 } => format!(
                "num_batches_tracked went down from {from} to 0: the statistics were reset (reset_running_stats, a re-created layer) and not re-estimated since."
            ),
            Signature::CounterDown { from, to } => format!(
                "num_batches_tracked went down from {from} to {to}: the statistics were reset and re-estimated over {to} train-mode forwards (torch.optim.swa_utils.update_bn and precise-BN do this, update_bn as a cumulative average), so B keeps nothing of A."
            ),
            Signature::Reinitialised => "B's running statistics are exactly the initial ones (mean 0, variance 1) and A's were not: they were re-initialised and never updated since.".to_owned(),
            Signature::CounterStill => format!(
                "The running statistics changed but num_batches_tracked stayed at {}: they were assigned or loaded from other weights (or written by a PyTorch older than 0.4.1), not updated by train-mode forwards.",
                layer.nbt_a.unwrap_or(0)
            ),
            Signature::CounterOnly { delta } => format!(
                "num_batches_tracked moved by +{delta} but the running statistics are bit-identical: the layer ran {delta} train-mode forwards with momentum 0, or its statistics were restored afterwards."
            ),
            Signature::ForgetsA => format!(
                "With momentum=None and A's counter at 0, B is the plain average of the {} batches' statistics and keeps nothing of A.",
                d.forwards.unwrap_or(0)
            ),
            Signature::VarBelowBound {
                channel,
                ratio,
                bound,
            } => format!(
                "Channel {channel}'s running variance fell to {ratio:.4}× of A's, below the {bound:.4} that momentum {m} over {} forwards allows: the momentum is at least {:.4} (give it with --momentum), or the statistics were also assigned.",
                d.forwards.unwrap_or(0),
                d.momentum_min.unwrap_or(1.0)
            ),
            Signature::BecameNonfinite => format!(
                "B's running statistics became non-finite (NaN or infinite) in {} of {}, finite in A: {}, and every later forward keeps it; restore A's statistics and find the batch or the overflow (fp16) that caused it.",
                channel_list(&d.nonfinite),
                crate::fmt::plural(usize::try_from(channels).unwrap_or(usize::MAX), "channel"),
                match counters {
                    Some((a, b)) if b > a => format!(
                        "a train-mode forward on a batch holding NaN or infinity folded it in ({} forward{} ran)",
                        b - a,
                        if b - a == 1 { "" } else { "s" }
                    ),
                    Some(_) => "the counter did not move, so they were written, not updated by a forward".to_owned(),
                    None => "a train-mode forward on a batch holding NaN or infinity folds it in".to_owned(),
                }
            ),
            Signature::NegativeVar { channel } => format!(
                "Channel {channel} of B's running variance is negative, which no batch can produce: something other than BatchNorm wrote it."
            ),
        });
    }
    if let (Some(n), Some(v)) = (d.forwards_min, d.var_ratio_min) {
        notes.push(format!(
            "Channel {}'s running variance kept {:.4}× of A's; at momentum {m} that takes at least {n} train-mode forward{} ((1-m)^k ≤ ratio).",
            v.channel,
            v.ratio,
            if n == 1 { "" } else { "s" }
        ));
    }
    let moved = counters.is_some_and(|(a, b)| b > a);
    if let (true, Some(true), true, Some(v)) = (updated, d.consistent, moved, d.var_ratio_min) {
        notes.push(format!(
            "Every channel satisfies the update rule's bound B_var ≥ {:.4}·A_var (smallest ratio {:.4}, channel {}).",
            d.retained.unwrap_or(1.0),
            v.ratio,
            v.channel
        ));
    }
    if layer.counter_dropped() {
        notes.push("num_batches_tracked is gone in B while the statistics and affine parameters are unchanged: the layer was converted to FrozenBatchNorm2d (torchvision.ops.misc) or another BatchNorm whose statistics never move.".to_owned());
    }
    if layer.status == Status::AffineOnly {
        notes.push("The affine parameters changed while the running statistics did not: gradients reached the layer while it ran in eval mode.".to_owned());
    }
    notes
}

/// "channel 1", "channels 0, 3 and 5", "channels 0, 1, 2 … (12 in all)".
fn channel_list(channels: &[usize]) -> String {
    const SHOWN: usize = 8;
    let names: Vec<String> = channels.iter().take(SHOWN).map(usize::to_string).collect();
    match names.as_slice() {
        [one] => format!("channel {one}"),
        _ if channels.len() > SHOWN => format!(
            "channels {} … ({} in all)",
            names.join(", "),
            channels.len()
        ),
        [rest @ .., last] => format!("channels {} and {last}", rest.join(", ")),
        [] => "no channel".to_owned(),
    }
}
