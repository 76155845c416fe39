//! Verdicts by module prefix: each top-level sub-model, split one level down where that
//! separates layers that behaved differently (a frozen `backbone.layer1` next to a trained
//! `backbone.layer4`).

use std::collections::{BTreeMap, HashSet};

use super::{Group, LayerDiff, Momentum, Severity, Status, TensorChange, TensorDiff};
use crate::bn::{self, BnLayer, Convention, Role};

/// The first `depth` segments of a module path (separated by `.` or `/`).
fn prefix(name: &str, depth: usize) -> &str {
    match name.match_indices(['.', '/']).nth(depth - 1) {
        Some((at, _)) => &name[..at],
        None => name,
    }
}

/// Statuses that call for the same verdict fall in one class; a group with several classes
/// is split one level down.
fn class(status: Status) -> u8 {
    match status {
        Status::Unchanged => 0,
        Status::FrozenStatsDrift => 1,
        Status::Trained | Status::AffineOnly => 2,
        Status::StatsReset => 3,
        Status::OnlyInA | Status::OnlyInB | Status::Incompatible => 4,
    }
}

/// Non-statistics tensors of the model and what happened to them.
struct Weights {
    /// Module name of every tensor that is not a running statistic or counter, sorted, so
    /// that the tensors under one module are two contiguous runs (see [`Weights::under`]).
    modules: Vec<String>,
    /// `changed_before[i]`: how many of the first `i` tensors of `modules` changed.
    changed_before: Vec<usize>,
    /// Whether any of them changed anywhere in the model (assumed when not all were
    /// compared).
    any_changed: bool,
}

impl Weights {
    fn new(found_a: &[BnLayer], found_b: &[BnLayer], tensors: &[TensorDiff]) -> Self {
        let stats: HashSet<&str> = found_a
            .iter()
            .chain(found_b)
            .flat_map(|l| {
                [Role::RunningMean, Role::RunningVar, Role::NumBatchesTracked]
                    .into_iter()
                    .filter_map(|r| l.keys.get(r))
            })
            .collect();
        let mut tensors: Vec<(String, bool)> = tensors
            .iter()
            .filter(|t| !stats.contains(t.name.as_str()))
            .map(|t| {
                let changed = !matches!(
                    t.change,
                    TensorChange::Unchanged | TensorChange::DtypeChanged
                );
                (bn::module_name(&t.name), changed)
            })
            .collect();
        tensors.sort_unstable();
        let mut changed_before = Vec::with_capacity(tensors.len() + 1);
        changed_before.push(0);
        for (_, changed) in &tensors {
            changed_before
                .push(changed_before.last().copied().unwrap_or(0) + usize::from(*changed));
        }
        Weights {
            any_changed: changed_before.last().is_some_and(|&c| c > 0),
            modules: tensors.into_iter().map(|(m, _)| m).collect(),
            changed_before,
        }
    }

    /// (tensors under `p`, how many changed), by binary search: a scan per group was
    /// quadratic on models with many sub-models.
    fn under(&self, p: &str) -> (usize, usize) {
        // Sorted, the names under `p` are `p` itself, then (after `p-…` and the like) the
        // names that continue `p` with `.` or `/`: those bytes are adjacent, so the second
        // run ends before `p0`.
        let at = |bound: &str| self.modules.partition_point(|m| m.as_str() < bound);
        let (same, children) = (at(p), at(&format!("{p}.")));
        let same_end = self.modules.partition_point(|m| m.as_str() <= p);
        let children_end = at(&format!("{p}0"));
        let n = (same_end - same) + (children_end - children);
        let c = (self.changed_before[same_end] - self.changed_before[same])
            + (self.changed_before[children_end] - self.changed_before[children]);
        (n, c)
    }
}

/// Aggregates `layers` by module prefix, most severe group first. `whole_model` says
/// whether `tensors` covers the whole model (not a selection, as `check` makes): only then
/// can a verdict say that no weight changed anywhere.
pub(super) fn groups(
    layers: &[LayerDiff],
    found_a: &[BnLayer],
    found_b: &[BnLayer],
    tensors: &[TensorDiff],
    whole_model: bool,
) -> Vec<Group> {
    let mut weights = Weights::new(found_a, found_b, tensors);
    weights.any_changed |= !whole_model;
    let mut top: BTreeMap<&str, Vec<&LayerDiff>> = BTreeMap::new();
    for l in layers {
        top.entry(prefix(&l.name, 1)).or_default().push(l);
    }
    let mut out = Vec::new();
    for (p, members) in top {
        let classes: HashSet<u8> = members.iter().map(|l| class(l.status)).collect();
        let mut children: BTreeMap<&str, Vec<&LayerDiff>> = BTreeMap::new();
        for l in &members {
            children.entry(prefix(&l.name, 2)).or_default().push(l);
        }
        // Splitting pays only where the children are sub-models, not single layers (flat
        // Keras and Flax names).
        if classes.len() > 1 && children.len() > 1 && children.len() < members.len() {
            out.extend(children.iter().map(|(c, ls)| group(c, ls, &weights)));
        } else {
            out.push(group(p, &members, &weights));
        }
    }
    out.sort_by(|x, y| y.severity.cmp(&x.severity).then(x.prefix.cmp(&y.prefix)));
    out
}

/// "+5 train-mode forwards each (identical in all 8 layers: …)", or what the variance bound
/// gives without counters.
fn forwards_phrase(layers: &[&LayerDiff]) -> Option<String> {
    let deltas: Vec<i64> = layers.iter().filter_map(|l| l.nbt_delta).collect();
    let plural = |k: i64| if k == 1 { "forward" } else { "forwards" };
    if !deltas.is_empty() && deltas.len() == layers.len() {
        let (lo, hi) = (
            *deltas.iter().min().expect("not empty"),
            *deltas.iter().max().expect("not empty"),
        );
        return Some(match (lo == hi, layers.len()) {
            (true, 1) => format!("+{lo} train-mode {}", plural(lo)),
            (true, n) => format!(
                "+{lo} train-mode {} each (identical counter deltas in {}: the whole sub-model ran the same forwards)",
                plural(lo),
                all_layers(n)
            ),
            (false, _) => format!("+{lo} to +{hi} train-mode forwards"),
        });
    }
    layers
        .iter()
        .filter_map(|l| l.inference.forwards_min)
        .max()
        .map(|n| {
            format!(
                "at least {n} train-mode {} by the variance bound (no counter)",
                plural(n as i64)
            )
        })
}

/// "BatchNorm layer" or "BatchNorm layers", after a count of `n`.
fn batchnorm_layers(n: usize) -> &'static str {
    if n == 1 {
        "BatchNorm layer"
    } else {
        "BatchNorm layers"
    }
}

/// "both layers", "all 5 layers".
fn all_layers(n: usize) -> String {
    if n == 2 {
        "both layers".to_owned()
    } else {
        format!("all {n} layers")
    }
}

/// "weights unchanged", "3 of 8 weights changed", "no weights".
fn weights_phrase(weights: usize, changed: usize) -> String {
    match (weights, changed) {
        (0, _) => "no other weights".to_owned(),
        (_, 0) => "weights unchanged".to_owned(),
        (1, _) => "its 1 weight tensor changed".to_owned(),
        (w, c) => format!("{c} of {w} weight tensors changed"),
    }
}

/// Severity of one status in its group's context.
fn severity(status: Status, layers: &[&LayerDiff], weights_changed: usize) -> Severity {
    match status {
        Status::StatsReset => Severity::Problem,
        Status::FrozenStatsDrift if weights_changed == 0 => Severity::Problem,
        Status::FrozenStatsDrift | Status::Trained => Severity::Info,
        Status::AffineOnly | Status::Incompatible | Status::OnlyInA | Status::OnlyInB => {
            Severity::Warning
        }
        Status::Unchanged if counters_moved(layers) => Severity::Warning,
        Status::Unchanged if weights_changed > 0 => Severity::Info,
        Status::Unchanged => Severity::Unchanged,
    }
}

fn counters_moved(layers: &[&LayerDiff]) -> bool {
    layers
        .iter()
        .any(|l| l.status == Status::Unchanged && l.nbt_delta.is_some_and(|d| d != 0))
}

fn group(p: &str, layers: &[&LayerDiff], weights: &Weights) -> Group {
    let mut statuses = BTreeMap::new();
    for l in layers {
        *statuses.entry(l.status).or_insert(0) += 1;
    }
    let (n_weights, n_changed) = weights.under(p);
    // Once per status, not per layer: per layer was quadratic in the group's size.
    let severities: BTreeMap<Status, Severity> = statuses
        .keys()
        .map(|&s| {
            let of: Vec<&LayerDiff> = layers.iter().copied().filter(|l| l.status == s).collect();
            (s, severity(s, &of, n_changed))
        })
        .collect();
    // The verdict speaks of the most severe status; ties go to the more frequent.
    let (&dominant, _) = statuses
        .iter()
        .max_by_key(|&(s, &count)| (severities[s], count))
        .expect("a group has layers");
    let of: Vec<&LayerDiff> = layers
        .iter()
        .copied()
        .filter(|l| l.status == dominant)
        .collect();
    let forwards: HashSet<i64> = layers.iter().filter_map(|l| l.inference.forwards).collect();
    let clause = Clause {
        p,
        n: layers.len(),
        of: &of,
        weights: weights_phrase(n_weights, n_changed),
        weights_changed: n_changed,
        model_trained: weights.any_changed,
    };
    let mut verdict = format!("{p}: {}", clause.text(dominant));
    let others: Vec<String> = statuses
        .iter()
        .filter(|&(&s, _)| s != dominant)
        .map(|(s, c)| format!("{c} {}", status_word(*s)))
        .collect();
    if !others.is_empty() {
        verdict.push_str(&format!("; also {}", others.join(", ")));
    }
    Group {
        prefix: p.to_owned(),
        layers: layers.len(),
        statuses,
        forwards: (forwards.len() == 1).then(|| *forwards.iter().next().expect("one")),
        weights: n_weights,
        weights_changed: n_changed,
        severity: severities
            .values()
            .copied()
            .max()
            .unwrap_or(Severity::Unchanged),
        verdict,
    }
}

fn status_word(s: Status) -> &'static str {
    match s {
        Status::Unchanged => "unchanged",
        Status::FrozenStatsDrift => "drifted",
        Status::Trained => "trained",
        Status::AffineOnly => "affine-only",
        Status::StatsReset => "reset",
        Status::OnlyInA => "only in A",
        Status::OnlyInB => "only in B",
        Status::Incompatible => "incompatible",
    }
}

/// How to keep a sub-model's BatchNorm out of train mode, and what an inference loop
/// forgot, in each framework.
fn advice(convention: Convention) -> (&'static str, &'static str) {
    match convention {
        Convention::Pytorch | Convention::Paddle => (
            "call .eval() on it after model.train(), or freeze its BatchNorm",
            "forgot model.eval(); call model.eval() before it",
        ),
        Convention::Keras => (
            "call it with training=False, or set trainable=False on it (Keras then runs BatchNorm in inference mode)",
            "called the model with training=True; call it with training=False",
        ),
        Convention::Flax => (
            "apply it with use_running_average=True and without mutable=['batch_stats']",
            "applied the model with use_running_average=False; use True",
        ),
    }
}

/// What a verdict is made of.
struct Clause<'a> {
    p: &'a str,
    /// Layers in the group.
    n: usize,
    /// Layers of the dominant status.
    of: &'a [&'a LayerDiff],
    weights: String,
    weights_changed: usize,
    /// Whether any weight changed anywhere in the model.
    model_trained: bool,
}

impl Clause<'_> {
    fn text(&self, status: Status) -> String {
        let Clause { p, n, of, .. } = *self;
        let k = of.len();
        let bn = batchnorm_layers(n);
        let w = &self.weights;
        let fw = forwards_phrase(of).map_or_else(String::new, |f| format!(", {f}"));
        let convention = of.first().map_or(Convention::Pytorch, |l| l.convention);
        let (freeze, eval) = advice(convention);
        let mut text = match status {
            Status::FrozenStatsDrift if of.iter().all(|l| l.nbt_delta == Some(0)) => format!(
                "{k}/{n} {bn} changed their statistics with counters unchanged, {w} — the statistics were assigned or loaded from other weights, not updated by forwards; restore A's if {p} was meant to stay frozen"
            ),
            Status::FrozenStatsDrift if self.weights_changed > 0 => format!(
                "{k}/{n} {bn} updated their statistics{fw}, {w} — {p} was trained (its BatchNorm layers have no affine parameters, or kept them fixed)"
            ),
            Status::FrozenStatsDrift if !self.model_trained => format!(
                "{k}/{n} {bn} drifted, weights unchanged{fw} — no weight changed anywhere in the model: forwards ran in train mode without training, as in an evaluation or inference loop that {eval}"
            ),
            Status::FrozenStatsDrift => format!(
                "{k}/{n} {bn} drifted, weights unchanged{fw} — the frozen {p} ran in train mode; {freeze}"
            ),
            Status::Trained => format!(
                "{k}/{n} {bn} trained (affine parameters and statistics changed){fw}, {w} — {p} was trained"
            ),
            Status::AffineOnly => format!(
                "{k}/{n} {bn} changed their affine parameters but kept their statistics, {w} — gradients reached {p} while its BatchNorm ran in eval mode: a leaked requires_grad, unless {p} was fine-tuned with frozen BatchNorm on purpose"
            ),
            Status::StatsReset => self.reset_text(convention),
            Status::Incompatible => format!(
                "{k}/{n} {bn} differ in channel count, convention or affine setting — a different architecture; their values are not compared"
            ),
            Status::OnlyInA | Status::OnlyInB => {
                let (side, what) = if status == Status::OnlyInA {
                    ("A", "removed in B")
                } else {
                    ("B", "added in B")
                };
                format!(
                    "{k}/{n} {bn} only in {side} — {what}, or renamed (see the alignment; --strip-prefix-a/-b force it)"
                )
            }
            Status::Unchanged if counters_moved(of) => {
                // Only the layers whose counter moved: the others are plainly unchanged.
                let moved: Vec<&LayerDiff> = of
                    .iter()
                    .copied()
                    .filter(|l| l.nbt_delta.is_some_and(|d| d != 0))
                    .collect();
                let fw = forwards_phrase(&moved).map_or_else(String::new, |f| format!(", {f}"));
                let rest = match k - moved.len() {
                    0 => String::new(),
                    r => format!(" ({r} more unchanged, counters included)"),
                };
                // Equal within --atol/--rtol is not bit-identical.
                let exact = moved.iter().all(|l| {
                    let d = &l.max_abs_diff;
                    [d.running_mean, d.running_var]
                        .iter()
                        .all(|v| v.is_none_or(|v| v == 0.0))
                });
                format!(
                    "{}/{n} {bn} kept {} but their counters moved{fw}{rest} — train-mode forwards with momentum 0 (harmless), or statistics restored afterwards",
                    moved.len(),
                    if exact {
                        "bit-identical statistics"
                    } else {
                        "statistics equal within --atol/--rtol"
                    }
                )
            }
            Status::Unchanged if self.weights_changed > 0 => format!(
                "{k}/{n} {bn} unchanged, {w} — trained with its BatchNorm frozen in eval mode"
            ),
            Status::Unchanged if of.iter().all(|l| l.nbt_a.is_none()) => format!(
                "{k}/{n} {bn} unchanged, {w} — frozen; without counters, whether it ran in train mode cannot be told (FrozenBatchNorm2d never moves)"
            ),
            // Nothing anywhere changed (a checkpoint against itself, or a re-save): no
            // training happened, so "kept in eval mode" would claim too much.
            Status::Unchanged if !self.model_trained && !counters_moved(of) => {
                format!("{k}/{n} {bn} unchanged, {w} — nothing in the model changed")
            }
            Status::Unchanged if self.weights_changed == 0 && w != "no other weights" => format!(
                "{k}/{n} {bn} unchanged, weights unchanged — frozen, with its BatchNorm kept in eval mode"
            ),
            Status::Unchanged => format!("{k}/{n} {bn} unchanged"),
        };
        let inconsistent: Vec<&LayerDiff> = of
            .iter()
            .copied()
            .filter(|l| l.inference.consistent == Some(false) && l.nbt_delta.is_some_and(|d| d > 0))
            .collect();
        if let Some(first) = inconsistent.first().filter(|_| status != Status::Unchanged) {
            let momentum = first.inference.momentum;
            text.push_str(&format!(
                "; {} moved further than momentum {} allows{} (see its notes; --momentum)",
                if inconsistent.len() == 1 {
                    first.name.clone()
                } else {
                    format!("{} layers", inconsistent.len())
                },
                momentum,
                match (momentum, first.inference.momentum_min) {
                    (Momentum::Value(_), Some(m)) if inconsistent.len() == 1 => {
                        format!(": its momentum is at least {m:.4}")
                    }
                    _ => String::new(),
                }
            ));
        }
        text
    }

    fn reset_text(&self, convention: Convention) -> String {
        let Clause { p, n, of, .. } = *self;
        let k = of.len();
        let bn = batchnorm_layers(n);
        let w = &self.weights;
        let recount = of
            .iter()
            .find_map(|l| l.nbt_a.zip(l.nbt_b).filter(|(a, b)| b < a && *b > 0));
        let same = of.iter().all(|l| l.nbt_b == of[0].nbt_b);
        let together = if same && k > 1 {
            format!(
                " (identical counter deltas in {}: re-estimated together)",
                all_layers(k)
            )
        } else {
            String::new()
        };
        match (recount, convention) {
            (Some((from, to)), _) => format!(
                "{k}/{n} {bn} had their statistics reset and re-estimated over {to} forwards (counter {from} → {to}){together}, {w} — torch.optim.swa_utils.update_bn or precise-BN; expected after SWA, wrong if {p} was meant to keep its pretrained statistics"
            ),
            (None, Convention::Pytorch | Convention::Paddle) => format!(
                "{k}/{n} {bn} had their statistics reset to mean 0, variance 1 and never re-estimated, {w} — reset_running_stats() or a re-created layer; restore A's statistics or re-estimate them"
            ),
            (None, _) => format!(
                "{k}/{n} {bn} had their statistics reset to mean 0, variance 1 and never re-estimated, {w} — re-created or re-initialised variables; restore A's statistics or re-estimate them"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Weights;

    /// Whether `name` is the module `p` or inside it: the definition `Weights::under`
    /// answers by binary search.
    fn is_under(name: &str, p: &str) -> bool {
        name.strip_prefix(p)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '/']))
    }

    #[test]
    fn under_counts_what_a_scan_counts() {
        let names = [
            "a", "a", "a-b", "a-b.x", "a.x", "a.x.y", "a/y", "a0", "ab.x", "a.", "b", "", "a.x-1",
        ];
        let mut modules: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        modules.sort_unstable();
        // Every third tensor changed.
        let changed: Vec<bool> = (0..modules.len()).map(|i| i % 3 == 0).collect();
        let mut changed_before = vec![0];
        for c in &changed {
            changed_before.push(changed_before.last().unwrap() + usize::from(*c));
        }
        let weights = Weights {
            modules: modules.clone(),
            changed_before,
            any_changed: true,
        };
        for p in ["a", "a-b", "a.x", "a/y", "b", "ab", "a0", "c", "a.x.y"] {
            let expected = modules
                .iter()
                .zip(&changed)
                .filter(|(m, _)| is_under(m, p))
                .fold((0, 0), |(n, c), (_, ch)| (n + 1, c + usize::from(*ch)));
            assert_eq!(weights.under(p), expected, "under {p:?}");
        }
    }
}
