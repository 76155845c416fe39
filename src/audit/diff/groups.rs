//! Verdicts by module prefix: each top-level sub-model, split one level down where that
//! separates layers that behaved differently (a frozen `backbone.layer1` next to a trained
//! `backbone.layer4`).

use std::collections::BTreeMap;

use foldhash::{HashMap, HashSet};

use super::{Group, LayerDiff, Momentum, Severity, Status, TensorChange, TensorDiff};
use crate::bn::{self, BnLayer, Convention, Role};
use crate::fmt::shape;

/// The first `depth` segments of a module path (separated by `.` or `/`).
fn prefix(name: &str, depth: usize) -> &str {
    match name.match_indices(['.', '/']).nth(depth - 1) {
        Some((at, _)) => &name[..at],
        None => name,
    }
}

/// Whether `name` is the module `p` or inside it.
fn under(name: &str, p: &str) -> bool {
    name.strip_prefix(p)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '/']))
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
struct Weights<'a> {
    /// Module name of every tensor that is not a running statistic or counter, sorted, so
    /// that the tensors under one module are two contiguous runs (see [`Weights::under`]).
    modules: Vec<String>,
    /// `changed_before[i]`: how many of the first `i` tensors of `modules` changed.
    changed_before: Vec<usize>,
    /// Whether any of them changed anywhere in the model (assumed when not all were
    /// compared).
    any_changed: bool,
    /// The sub-model saved on its own, if one side is.
    submodel: Submodel<'a>,
    /// Whether some running statistic or counter changed anywhere in the model.
    stats_changed: bool,
}

impl Weights<'_> {
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
        let changed = |t: &TensorDiff| {
            !matches!(
                t.change,
                TensorChange::Unchanged | TensorChange::DtypeChanged
            )
        };
        let (stat_diffs, weight_diffs): (Vec<&TensorDiff>, Vec<&TensorDiff>) = tensors
            .iter()
            .partition(|t| stats.contains(t.name.as_str()));
        let mut tensors: Vec<(String, bool)> = weight_diffs
            .into_iter()
            .map(|t| (bn::module_name(&t.name).into_owned(), changed(t)))
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
            submodel: None,
            stats_changed: stat_diffs.into_iter().any(changed),
        }
    }

    /// Whether the module `p` is the rest of the model beside a sub-model saved on its own:
    /// its layers exist on one side only by construction.
    fn beside_submodel(&self, p: &str) -> bool {
        self.submodel.is_some_and(|(_, sub)| {
            let sub = sub.trim_end_matches(['.', '/']);
            !under(p, sub) && !under(sub, p)
        })
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

/// The side that is a sub-model saved on its own and its prefix in the other's names
/// (`("A", "model_A.")`, from the alignment): layers outside that prefix exist on the other
/// side only, as the rest of its model.
pub(super) type Submodel<'a> = Option<(&'static str, &'a str)>;

/// Aggregates `layers` by module prefix, most severe group first. `whole_model` says
/// whether `tensors` covers the whole model (not a selection, as `check` makes): only then
/// can a verdict say that no weight changed anywhere.
pub(super) fn groups(
    layers: &[LayerDiff],
    found_a: &[BnLayer],
    found_b: &[BnLayer],
    tensors: &[TensorDiff],
    whole_model: bool,
    submodel: Submodel<'_>,
) -> Vec<Group> {
    let mut weights = Weights::new(found_a, found_b, tensors);
    weights.any_changed |= !whole_model;
    weights.submodel = submodel;
    let mut top: BTreeMap<&str, Vec<&LayerDiff>> = BTreeMap::new();
    for l in layers {
        top.entry(prefix(&l.name, 1)).or_default().push(l);
    }
    let mut parts: Vec<(Vec<&str>, Vec<&LayerDiff>)> = Vec::new();
    for (p, members) in top {
        let classes: HashSet<u8> = members.iter().map(|l| class(l.status)).collect();
        let mut children: BTreeMap<&str, Vec<&LayerDiff>> = BTreeMap::new();
        for l in &members {
            children.entry(prefix(&l.name, 2)).or_default().push(l);
        }
        // Splitting pays only where the children are sub-models, not single layers (flat
        // Keras and Flax names).
        if classes.len() > 1 && children.len() > 1 && children.len() < members.len() {
            parts.extend(children.into_iter().map(|(c, ls)| (vec![c], ls)));
        } else {
            parts.push((vec![p], members));
        }
    }
    // Modules that behaved alike (a flat torchvision ResNet's bn1 and layer1…layer4, all
    // drifted by the same forwards) get one verdict that lists them, not one each.
    let mut merged: Vec<(Vec<&str>, Vec<&LayerDiff>)> = Vec::new();
    let mut by_key: HashMap<Behaviour, usize> = HashMap::default();
    for (prefixes, ls) in parts {
        let key = behaviour(&group(&prefixes, &ls, &weights), &ls);
        match by_key.get(&key) {
            Some(&i) => {
                merged[i].0.extend(prefixes);
                merged[i].1.extend(ls);
            }
            None => {
                by_key.insert(key, merged.len());
                merged.push((prefixes, ls));
            }
        }
    }
    let mut out: Vec<Group> = merged
        .iter()
        .map(|(prefixes, ls)| group(prefixes, ls, &weights))
        .collect();
    reshaped(&mut out, tensors);
    out.sort_by(|x, y| y.severity.cmp(&x.severity).then(x.prefix.cmp(&y.prefix)));
    out
}

/// Tensors outside BatchNorm layers that changed shape (a replaced `fc` head), told in the
/// verdict of their top-level module, or in a verdict of their own when that module has no
/// BatchNorm layer.
fn reshaped(out: &mut Vec<Group>, tensors: &[TensorDiff]) {
    let mut by_module: BTreeMap<&str, Vec<&TensorDiff>> = BTreeMap::new();
    for t in tensors
        .iter()
        .filter(|t| t.change == TensorChange::ShapeChanged && t.bn_layer.is_none())
    {
        by_module.entry(prefix(&t.name, 1)).or_default().push(t);
    }
    for (module, ts) in by_module {
        let shown: Vec<String> = ts
            .iter()
            .take(3)
            .map(|t| format!("{} {} → {}", t.name, shape(&t.shape_a), shape(&t.shape_b)))
            .collect();
        let more = match ts.len().saturating_sub(shown.len()) {
            0 => String::new(),
            r => format!(" and {r} more"),
        };
        let what = format!(
            "{} changed shape ({}{more})",
            if ts.len() == 1 {
                "1 tensor".to_owned()
            } else {
                format!("{} tensors", ts.len())
            },
            shown.join(", ")
        );
        let home = out
            .iter_mut()
            .find(|g| g.prefixes.iter().any(|p| under(p, module)));
        match home {
            Some(g) => {
                g.verdict.push_str(&format!("; {what}: a replaced layer"));
                g.severity = g.severity.max(Severity::Info);
            }
            None => out.push(Group {
                prefix: module.to_owned(),
                prefixes: vec![module.to_owned()],
                layers: 0,
                statuses: BTreeMap::new(),
                forwards: None,
                weights: ts.len(),
                weights_changed: ts.len(),
                severity: Severity::Info,
                verdict: format!(
                    "{module}: {what} — a replaced layer (a new head for other classes) or a different architecture; {} values are not compared",
                    pronoun(ts.len())
                ),
            }),
        }
    }
}

/// What makes two modules' verdicts the same but for their names and counts.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Behaviour {
    severity: Severity,
    statuses: Vec<Status>,
    forwards: Option<i64>,
    weights: bool,
    weights_changed: bool,
    nonfinite: bool,
    counter_dropped: bool,
    consistent: Vec<Option<bool>>,
}

fn behaviour(g: &Group, layers: &[&LayerDiff]) -> Behaviour {
    let mut consistent: Vec<Option<bool>> = layers.iter().map(|l| l.inference.consistent).collect();
    consistent.sort_unstable();
    consistent.dedup();
    Behaviour {
        severity: g.severity,
        statuses: g.statuses.keys().copied().collect(),
        forwards: g.forwards,
        weights: g.weights > 0,
        weights_changed: g.weights_changed > 0,
        nonfinite: layers
            .iter()
            .any(|l| !l.inference.nonfinite_channels.is_empty()),
        counter_dropped: layers.iter().any(|l| l.counter_dropped()),
        consistent,
    }
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

/// "a", "a and b", "a, b and 3 more".
fn name_list(names: &[&str]) -> String {
    match names {
        [one] => (*one).to_owned(),
        [a, b] => format!("{a} and {b}"),
        [a, b, rest @ ..] => format!("{a}, {b} and {} more", rest.len()),
        [] => String::new(),
    }
}

/// The pronoun for `k` layers: "its" or "their".
fn pronoun(k: usize) -> &'static str {
    if k == 1 { "its" } else { "their" }
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

/// Severity of one status in its group's context; `beside` says the group is the rest of
/// the model beside a sub-model saved on its own.
fn severity(
    status: Status,
    layers: &[&LayerDiff],
    weights_changed: usize,
    beside: bool,
) -> Severity {
    match status {
        Status::OnlyInA | Status::OnlyInB if beside => Severity::Info,
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

/// The group of the modules `prefixes` (one, or several that behaved alike), named by
/// them all.
fn group(prefixes: &[&str], layers: &[&LayerDiff], weights: &Weights<'_>) -> Group {
    let label = prefixes.join(", ");
    let p = label.as_str();
    let beside = prefixes.iter().all(|p| weights.beside_submodel(p));
    let mut statuses = BTreeMap::new();
    for l in layers {
        *statuses.entry(l.status).or_insert(0) += 1;
    }
    let (n_weights, n_changed) = prefixes
        .iter()
        .map(|p| weights.under(p))
        .fold((0, 0), |(w, c), (pw, pc)| (w + pw, c + pc));
    // Once per status, not per layer: per layer was quadratic in the group's size.
    let severities: BTreeMap<Status, Severity> = statuses
        .keys()
        .map(|&s| {
            let of: Vec<&LayerDiff> = layers.iter().copied().filter(|l| l.status == s).collect();
            (s, severity(s, &of, n_changed, beside))
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
        model_changed: weights.any_changed || weights.stats_changed,
        submodel: weights.submodel.filter(|_| beside),
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
        prefixes: prefixes.iter().map(|p| (*p).to_owned()).collect(),
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
    /// Whether anything changed anywhere in the model, statistics and counters included.
    model_changed: bool,
    /// The sub-model saved on its own, when this group is the rest of the model beside it.
    submodel: Submodel<'a>,
}

impl Clause<'_> {
    fn text(&self, status: Status) -> String {
        let Clause { p, n, of, .. } = *self;
        let k = of.len();
        let bn = batchnorm_layers(n);
        let their = pronoun(k);
        let w = &self.weights;
        let fw = forwards_phrase(of).map_or_else(String::new, |f| format!(", {f}"));
        let convention = of.first().map_or(Convention::Pytorch, |l| l.convention);
        let (freeze, eval) = advice(convention);
        // Modules that behaved alike share this verdict: advise on them all.
        let freeze = if self.p.contains(", ") {
            freeze
                .replace(" on it ", " on them ")
                .replace("its BatchNorm", "their BatchNorm")
        } else {
            freeze.to_owned()
        };
        let broken: Vec<&str> = of
            .iter()
            .filter(|l| !l.inference.nonfinite_channels.is_empty())
            .map(|l| l.name.as_str())
            .collect();
        let mut text = match status {
            Status::FrozenStatsDrift | Status::Trained | Status::StatsReset
                if !broken.is_empty() =>
            {
                format!(
                    "{}/{n} {bn} had {} statistics become non-finite (NaN or infinity in {}){fw}, {w} — a forward on a batch holding NaN or infinity (a bad input, an fp16 overflow, a diverged loss) folded it in; restore A's statistics and find the cause",
                    broken.len(),
                    pronoun(broken.len()),
                    name_list(&broken)
                )
            }
            Status::FrozenStatsDrift if of.iter().all(|l| l.nbt_delta == Some(0)) => format!(
                "{k}/{n} {bn} changed {their} statistics with counters unchanged, {w} — the statistics were assigned or loaded from other weights, not updated by forwards; restore A's if {p} was meant to stay frozen"
            ),
            Status::FrozenStatsDrift if self.weights_changed > 0 => format!(
                "{k}/{n} {bn} updated {their} statistics{fw}, {w} — {p} was trained (its BatchNorm layers have no affine parameters, or kept them fixed)"
            ),
            // A sub-model saved on its own looks the same after a parent's .train() as
            // after an evaluation loop without .eval(): name both.
            Status::FrozenStatsDrift
                if !self.model_trained
                    && matches!(convention, Convention::Pytorch | Convention::Paddle) =>
            {
                format!(
                    "{k}/{n} {bn} drifted, weights unchanged{fw} — no weight changed anywhere in the model, and these files cannot tell which of two causes ran those train-mode forwards: an evaluation or inference loop that forgot model.eval() (call model.eval() before it), or, if this file holds a sub-model saved on its own, its parent's .train() while the parent trained other parts ({freeze})"
                )
            }
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
                "{k}/{n} {bn} changed {their} affine parameters but kept {their} statistics, {w} — gradients reached {p} while its BatchNorm ran in eval mode: a leaked requires_grad, unless {p} was fine-tuned with frozen BatchNorm on purpose"
            ),
            Status::StatsReset => self.reset_text(convention),
            Status::Incompatible => format!(
                "{k}/{n} {bn} {} in channel count, convention or affine setting — a different architecture; {their} values are not compared",
                if k == 1 { "differs" } else { "differ" }
            ),
            Status::OnlyInA | Status::OnlyInB if self.submodel.is_some() => {
                let (side, sub) = self.submodel.expect("checked");
                let only = if status == Status::OnlyInA { "A" } else { "B" };
                format!(
                    "{k}/{n} {bn} only in {only} — the rest of {only}'s model, beside the sub-model {} that {side} holds on its own",
                    sub.trim_end_matches(['.', '/'])
                )
            }
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
                    "{}/{n} {bn} kept {} but {} counter{} moved{fw}{rest} — train-mode forwards with momentum 0 (harmless), or statistics restored afterwards",
                    moved.len(),
                    if exact {
                        "bit-identical statistics"
                    } else {
                        "statistics equal within --atol/--rtol"
                    },
                    pronoun(moved.len()),
                    if moved.len() == 1 { "" } else { "s" }
                )
            }
            Status::Unchanged if of.iter().any(|l| l.counter_dropped()) => {
                let c = of.iter().filter(|l| l.counter_dropped()).count();
                let rest = match k - c {
                    0 => String::new(),
                    r => format!(" ({r} more unchanged)"),
                };
                format!(
                    "{c}/{n} {bn} converted to FrozenBatchNorm2d (num_batches_tracked dropped, statistics and affine parameters unchanged){rest}, {w} — frozen for good: {} statistics can no longer move",
                    pronoun(c)
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
            Status::Unchanged if !self.model_trained && !self.model_changed => {
                format!("{k}/{n} {bn} unchanged, {w} — nothing in the model changed")
            }
            // Statistics moved elsewhere while no weight changed: no training to be frozen
            // against, so nothing more to say.
            Status::Unchanged if !self.model_trained => format!("{k}/{n} {bn} unchanged, {w}"),
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
        let their = pronoun(k);
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
                "{k}/{n} {bn} had {their} statistics reset and re-estimated over {to} forwards (counter {from} → {to}){together}, {w} — torch.optim.swa_utils.update_bn or precise-BN; expected after SWA, wrong if {p} was meant to keep its pretrained statistics"
            ),
            (None, Convention::Pytorch | Convention::Paddle) => format!(
                "{k}/{n} {bn} had {their} statistics reset to mean 0, variance 1 and never re-estimated, {w} — reset_running_stats() or a re-created layer; restore A's statistics or re-estimate them"
            ),
            (None, _) => format!(
                "{k}/{n} {bn} had {their} statistics reset to mean 0, variance 1 and never re-estimated, {w} — re-created or re-initialised variables; restore A's statistics or re-estimate them"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Weights, under as is_under};

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
            submodel: None,
            stats_changed: false,
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
