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
    /// Summarises `values` in two passes (mean, then squared deviations) for accuracy.
    pub fn of(values: &[f64]) -> TensorStats {
        let mut n = 0u64;
        let mut sum = 0.0;
        let mut min = f64::INFINITY;
        let mut max = f64::NEG_INFINITY;
        for &v in values.iter().filter(|v| v.is_finite()) {
            n += 1;
            sum += v;
            min = min.min(v);
            max = max.max(v);
        }
        let nonfinite = values.len() as u64 - n;
        if n == 0 {
            return TensorStats {
                min: None,
                max: None,
                mean: None,
                std: None,
                nonfinite,
            };
        }
        let mean = sum / n as f64;
        let ss: f64 = values
            .iter()
            .filter(|v| v.is_finite())
            .map(|v| (v - mean) * (v - mean))
            .sum();
        TensorStats {
            min: Some(min),
            max: Some(max),
            mean: Some(mean),
            std: Some((ss / n as f64).sqrt()),
            nonfinite,
        }
    }
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

    /// Health flags, sorted.
    pub fn flags(&self) -> Vec<Flag> {
        let mut flags = Vec::new();
        let all = [
            &self.weight,
            &self.bias,
            &self.running_mean,
            &self.running_var,
        ];
        if all
            .iter()
            .filter_map(|v| v.as_deref())
            .flatten()
            .any(|v| !v.is_finite())
        {
            flags.push(Flag::Nonfinite);
        }
        if let Some(var) = &self.running_var {
            if var.iter().any(|&v| v < 0.0) {
                flags.push(Flag::NegativeVar);
            }
            if var.contains(&0.0) {
                flags.push(Flag::ZeroVar);
            }
            if var.iter().any(|&v| v > 0.0 && v < TINY_VAR) {
                flags.push(Flag::TinyVar);
            }
        }
        if let (Some(mean), Some(var)) = (&self.running_mean, &self.running_var) {
            let initial = mean.iter().all(|&m| m == 0.0) && var.iter().all(|&v| v == 1.0);
            match self.num_batches_tracked {
                _ if !initial => {}
                None | Some(0) => flags.push(Flag::DefaultInit),
                Some(_) => flags.push(Flag::CounterWithoutStats),
            }
        }
        if self.weight.as_ref().is_some_and(|w| w.contains(&0.0)) {
            flags.push(Flag::ZeroWeight);
        }
        flags.sort();
        flags
    }
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
}
