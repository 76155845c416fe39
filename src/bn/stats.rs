//! Summary statistics of a tensor and health flags of a BatchNorm layer.

use serde::Serialize;

use super::layer::Role;

/// Summary of a tensor's values. `min`, `max`, `mean` and `std` are over the finite values
/// only (`std` is the population standard deviation); `nonfinite` counts NaN and ±Inf.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct TensorStats {
    /// Smallest finite value.
    pub min: Option<f64>,
    /// Largest finite value.
    pub max: Option<f64>,
    /// Mean of the finite values.
    pub mean: Option<f64>,
    /// Population standard deviation of the finite values.
    pub std: Option<f64>,
    /// Count of NaN and infinite values.
    pub nonfinite: u64,
}

impl TensorStats {
    /// Summarises `values` in two passes (count, sum and extremes, then squared deviations
    /// from the mean) for accuracy.
    pub fn of(values: &[f64]) -> TensorStats {
        // Usually every value is finite: then no value needs testing and the loops vectorise
        // fully. A NaN or infinity anywhere makes the plain sum non-finite, and only then
        // are the values filtered.
        let all = first_pass(values, |_| true);
        let (finite_only, (count, sum, min, max)) = if all.1.is_finite() {
            (false, all)
        } else {
            (true, first_pass(values, f64::is_finite))
        };
        let nonfinite = values.len() as u64 - count;
        if count == 0 {
            return TensorStats {
                min: None,
                max: None,
                mean: None,
                std: None,
                nonfinite,
            };
        }
        let n = count as f64;
        let mean = sum / n;
        let ss = if finite_only {
            squares(values, mean, f64::is_finite)
        } else {
            squares(values, mean, |_| true)
        };
        TensorStats {
            min: Some(min),
            max: Some(max),
            mean: Some(mean),
            std: Some((ss / n).sqrt()),
            nonfinite,
        }
    }
}

/// Independent accumulators per reduction: one running sum waits for each addition before
/// the next, while eight lanes keep the floating-point units busy and vectorise. Eight
/// interleaved partial sums are no less accurate than one.
const LANES: usize = 8;

/// Calls `f(lane, value)` for each value, value `i` in lane `i % LANES`. Whole blocks go
/// through a loop of fixed length, which the compiler unrolls and vectorises; the short last
/// block is fed to the same lanes, so the sums are those of a plain round-robin.
#[inline(always)]
fn for_each_lane(values: &[f64], mut f: impl FnMut(usize, f64)) {
    let blocks = values.chunks_exact(LANES);
    let rest = blocks.remainder();
    for block in blocks {
        for (k, &v) in block.iter().enumerate() {
            f(k, v);
        }
    }
    for (k, &v) in rest.iter().enumerate() {
        f(k, v);
    }
}

/// Count, sum, min and max of the values that `keep` accepts.
fn first_pass(values: &[f64], keep: impl Fn(f64) -> bool) -> (u64, f64, f64, f64) {
    let mut count = [0u64; LANES];
    let mut sum = [0.0; LANES];
    let mut min = [f64::INFINITY; LANES];
    let mut max = [f64::NEG_INFINITY; LANES];
    for_each_lane(values, |k, v| {
        let kept = keep(v);
        count[k] += u64::from(kept);
        sum[k] += if kept { v } else { 0.0 };
        min[k] = if kept && v < min[k] { v } else { min[k] };
        max[k] = if kept && v > max[k] { v } else { max[k] };
    });
    (
        count.iter().sum(),
        sum.iter().sum(),
        min.into_iter().fold(f64::INFINITY, f64::min),
        max.into_iter().fold(f64::NEG_INFINITY, f64::max),
    )
}

/// Sum of squared deviations from `mean` of the values that `keep` accepts.
fn squares(values: &[f64], mean: f64, keep: impl Fn(f64) -> bool) -> f64 {
    let mut ss = [0.0; LANES];
    for_each_lane(values, |k, v| {
        let d = v - mean;
        ss[k] += if keep(v) { d * d } else { 0.0 };
    });
    ss.iter().sum()
}

/// Whether `test` holds for any value. Like `Iterator::any`, but a block of values at a
/// time without stopping inside it, so that the test vectorises: listing a big checkpoint
/// runs these tests over millions of values that almost never match.
fn any(values: &[f64], test: impl Fn(f64) -> bool) -> bool {
    values
        .chunks(4 * LANES)
        .any(|block| block.iter().fold(false, |found, &v| found | test(v)))
}

/// Variances below this (and above zero) let `eps` dominate the normalisation: the channel
/// is effectively constant, usually dead.
pub const TINY_VAR: f64 = 1e-5;

/// A health problem of a BatchNorm layer's stored values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Flag {
    /// A NaN or infinity in any of its tensors.
    Nonfinite,
    /// A running variance below zero: impossible for real statistics.
    NegativeVar,
    /// A running variance exactly zero: outputs of that channel are `bias` whatever the input.
    ZeroVar,
    /// A running variance in `(0, 1e-5)`: eps dominates, the channel is nearly constant.
    TinyVar,
    /// Mean 0, variance 1 and counter 0 or absent: the statistics were never updated.
    DefaultInit,
    /// The counter is positive but the statistics are still exactly the initial ones: they
    /// were reset after training (or the counter was copied without them).
    CounterWithoutStats,
    /// Some channel's weight is exactly zero: that channel's output is its bias alone.
    ZeroWeight,
}

impl Flag {
    /// The JSON name.
    pub fn as_str(self) -> &'static str {
        match self {
            Flag::Nonfinite => "nonfinite",
            Flag::NegativeVar => "negative_var",
            Flag::ZeroVar => "zero_var",
            Flag::TinyVar => "tiny_var",
            Flag::DefaultInit => "default_init",
            Flag::CounterWithoutStats => "counter_without_stats",
            Flag::ZeroWeight => "zero_weight",
        }
    }
}

/// The decoded values of one layer, as far as they exist and decode.
#[derive(Debug, Clone, Default)]
pub struct LayerValues {
    /// Affine scale.
    pub weight: Option<Vec<f64>>,
    /// Affine shift.
    pub bias: Option<Vec<f64>>,
    /// Running mean.
    pub running_mean: Option<Vec<f64>>,
    /// Running variance.
    pub running_var: Option<Vec<f64>>,
    /// Counter value.
    pub num_batches_tracked: Option<i64>,
}

impl LayerValues {
    /// The decoded values of `role` (the counter is not a float vector: `None`).
    pub fn get(&self, role: Role) -> Option<&[f64]> {
        match role {
            Role::Weight => self.weight.as_deref(),
            Role::Bias => self.bias.as_deref(),
            Role::RunningMean => self.running_mean.as_deref(),
            Role::RunningVar => self.running_var.as_deref(),
            Role::NumBatchesTracked => None,
        }
    }

    /// The summary of each float tensor, in [`Role::FLOATS`] order (`None` when absent).
    pub fn stats(&self) -> [Option<TensorStats>; 4] {
        Role::FLOATS.map(|role| self.get(role).map(TensorStats::of))
    }

    /// Health flags, sorted.
    pub fn flags(&self) -> Vec<Flag> {
        self.flags_of(&self.stats())
    }

    /// [`LayerValues::flags`], given the summaries [`LayerValues::stats`] made: most flags
    /// follow from a tensor's count of non-finite values, minimum and maximum, so a healthy
    /// layer needs no second look at its values; only a tensor whose summary leaves a
    /// question open (a zero or tiny minimum, non-finite values) is scanned again.
    pub fn flags_of(&self, stats: &[Option<TensorStats>; 4]) -> Vec<Flag> {
        let [weight_stats, _, mean_stats, var_stats] = stats;
        let mut flags = Vec::new();
        if stats.iter().flatten().any(|s| s.nonfinite > 0) {
            flags.push(Flag::Nonfinite);
        }
        if let (Some(var), Some(s)) = (&self.running_var, var_stats) {
            // With every value finite, `min` bounds them all from below.
            let min = s.min.filter(|_| s.nonfinite == 0);
            if min.is_none_or(|m| m < 0.0) && any(var, |v| v < 0.0) {
                flags.push(Flag::NegativeVar);
            }
            if min.is_none_or(|m| m <= 0.0) && any(var, |v| v == 0.0) {
                flags.push(Flag::ZeroVar);
            }
            if min.is_none_or(|m| m < TINY_VAR) && any(var, |v| v > 0.0 && v < TINY_VAR) {
                flags.push(Flag::TinyVar);
            }
        }
        if let (Some(mean_stats), Some(var_stats)) = (mean_stats, var_stats) {
            let initial = all_equal(mean_stats, 0.0) && all_equal(var_stats, 1.0);
            match self.num_batches_tracked {
                _ if !initial => {}
                None | Some(0) => flags.push(Flag::DefaultInit),
                Some(_) => flags.push(Flag::CounterWithoutStats),
            }
        }
        if let (Some(weight), Some(s)) = (&self.weight, weight_stats) {
            let spans_zero =
                s.nonfinite > 0 || s.min.is_some_and(|m| m <= 0.0 && s.max >= Some(0.0));
            if spans_zero && any(weight, |v| v == 0.0) {
                flags.push(Flag::ZeroWeight);
            }
        }
        flags.sort();
        flags
    }
}

/// Whether every value of the tensor `s` summarises equals `x` (true for no value): a
/// non-finite value never does, and finite values all do when both extremes do.
fn all_equal(s: &TensorStats, x: f64) -> bool {
    s.nonfinite == 0 && s.min.is_none_or(|m| m == x) && s.max.is_none_or(|m| m == x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_skip_nonfinite() {
        let s = TensorStats::of(&[1.0, f64::NAN, 3.0, f64::INFINITY]);
        assert_eq!(s.min, Some(1.0));
        assert_eq!(s.max, Some(3.0));
        assert_eq!(s.mean, Some(2.0));
        assert_eq!(s.std, Some(1.0));
        assert_eq!(s.nonfinite, 2);
        let empty = TensorStats::of(&[f64::NAN]);
        assert_eq!((empty.mean, empty.nonfinite), (None, 1));
        // A sum that overflows is no non-finite value.
        let huge = TensorStats::of(&[f64::MAX; 3]);
        assert_eq!((huge.max, huge.nonfinite), (Some(f64::MAX), 0));
    }

    #[test]
    fn default_init_and_reset() {
        let mut v = LayerValues {
            running_mean: Some(vec![0.0; 3]),
            running_var: Some(vec![1.0; 3]),
            num_batches_tracked: Some(0),
            ..LayerValues::default()
        };
        assert_eq!(v.flags(), vec![Flag::DefaultInit]);
        v.num_batches_tracked = Some(7);
        assert_eq!(v.flags(), vec![Flag::CounterWithoutStats]);
    }

    /// The flags as the definitions say them, one pass per question.
    fn flags_by_definition(v: &LayerValues) -> Vec<Flag> {
        let mut flags = Vec::new();
        let all = [&v.weight, &v.bias, &v.running_mean, &v.running_var];
        if all
            .iter()
            .flat_map(|t| t.iter().flatten())
            .any(|x| !x.is_finite())
        {
            flags.push(Flag::Nonfinite);
        }
        if let Some(var) = &v.running_var {
            for (flag, test) in [
                (Flag::NegativeVar, (|x: f64| x < 0.0) as fn(f64) -> bool),
                (Flag::ZeroVar, |x| x == 0.0),
                (Flag::TinyVar, |x| x > 0.0 && x < TINY_VAR),
            ] {
                if var.iter().any(|&x| test(x)) {
                    flags.push(flag);
                }
            }
        }
        if let (Some(mean), Some(var)) = (&v.running_mean, &v.running_var)
            && mean.iter().all(|&m| m == 0.0)
            && var.iter().all(|&x| x == 1.0)
        {
            flags.push(match v.num_batches_tracked {
                None | Some(0) => Flag::DefaultInit,
                Some(_) => Flag::CounterWithoutStats,
            });
        }
        if v.weight.as_ref().is_some_and(|w| w.contains(&0.0)) {
            flags.push(Flag::ZeroWeight);
        }
        flags.sort();
        flags
    }

    /// Values drawn mostly from those that sit on a flag's edge.
    fn edgy() -> impl proptest::strategy::Strategy<Value = Option<Vec<f64>>> {
        use proptest::prelude::*;
        let value = prop_oneof![
            Just(0.0),
            Just(-0.0),
            Just(1.0),
            Just(TINY_VAR),
            Just(TINY_VAR / 2.0),
            Just(-1.0),
            Just(f64::NAN),
            Just(f64::INFINITY),
            Just(f64::NEG_INFINITY),
            Just(f64::MAX),
            -2.0..2.0f64,
        ];
        proptest::option::of(proptest::collection::vec(value, 0..6))
    }

    proptest::proptest! {
        /// Flags from the summaries are the flags of the definitions, whatever the values.
        #[test]
        fn flags_from_summaries_match_the_definitions(
            weight in edgy(),
            bias in edgy(),
            running_mean in edgy(),
            running_var in edgy(),
            num_batches_tracked in proptest::option::of(0i64..3),
        ) {
            let v = LayerValues { weight, bias, running_mean, running_var, num_batches_tracked };
            proptest::prop_assert_eq!(v.flags(), flags_by_definition(&v));
        }
    }
}
