//! The running-statistics update rule and its algebra.
//!
//! Every framework moves its running statistics by `new = (1-f)·old + f·batch`; they differ in
//! the factor `f` (a fixed momentum, or PyTorch's cumulative average `1/num_batches_tracked`)
//! and in the batch variance they fold in (unbiased in PyTorch, biased in Keras and Flax).
//! Composing `k` updates gives `B = r·A + (1-r)·b̄` with `r` the weight of A's statistics that
//! survives and `b̄` a weighted average of the batch statistics: the functions here solve that
//! for `r` and `b̄`.

use std::fmt;
use std::str::FromStr;

use serde::{Serialize, Serializer};

use super::layer::Convention;

/// Momentum of the running-statistics update in PyTorch's sense, or the cumulative average.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Momentum {
    /// `new = (1-m)·old + m·batch`.
    Value(f64),
    /// `momentum=None`: cumulative moving average with factor `1/num_batches_tracked`.
    Cma,
}

impl Momentum {
    /// The momentum of a Keras or Flax `decay` (their `momentum` argument, e.g. 0.99):
    /// they keep `decay` of the old value where PyTorch keeps `1-m`.
    pub fn from_decay(decay: f64) -> Momentum {
        Momentum::Value(1.0 - decay)
    }

    /// The weight of the batch statistic in the update after which the counter reads
    /// `counter` (PyTorch increments the counter first, then uses `1/counter`).
    pub fn factor(self, counter: i64) -> f64 {
        match self {
            Momentum::Value(m) => m,
            Momentum::Cma => 1.0 / counter as f64,
        }
    }
}

impl Serialize for Momentum {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Momentum::Value(m) => s.serialize_f64(*m),
            Momentum::Cma => s.serialize_str("cma"),
        }
    }
}

impl fmt::Display for Momentum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Momentum::Value(m) => write!(f, "{m}"),
            Momentum::Cma => f.write_str("cma"),
        }
    }
}

/// A momentum that is neither a number in `[0, 1]` nor `cma`/`none`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("momentum {0:?} is neither a number in [0, 1] nor `cma` (momentum=None)")]
pub struct BadMomentum(pub String);

impl FromStr for Momentum {
    type Err = BadMomentum;

    /// Parses `0.1`, or `cma`/`none` for the cumulative average.
    fn from_str(s: &str) -> Result<Momentum, BadMomentum> {
        let t = s.trim();
        if t.eq_ignore_ascii_case("cma") || t.eq_ignore_ascii_case("none") {
            return Ok(Momentum::Cma);
        }
        match t.parse::<f64>() {
            Ok(m) if (0.0..=1.0).contains(&m) => Ok(Momentum::Value(m)),
            _ => Err(BadMomentum(s.to_owned())),
        }
    }
}

/// How a framework folds a batch into its running statistics.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UpdateRule {
    /// Fixed momentum or cumulative average.
    pub momentum: Momentum,
    /// Whether the unbiased batch variance (`n/(n-1)` times the biased one) is folded in.
    pub unbiased_var: bool,
}

impl UpdateRule {
    /// The rule of `convention` with the given momentum.
    pub fn new(convention: Convention, momentum: Momentum) -> UpdateRule {
        UpdateRule {
            momentum,
            unbiased_var: convention.unbiased_running_var(),
        }
    }

    /// The variance folded into the running variance for a batch of `count` values per
    /// channel whose biased variance is `biased`; `None` when the unbiased one is undefined
    /// (a single value).
    pub fn folded_var(&self, biased: f64, count: u64) -> Option<f64> {
        if !self.unbiased_var {
            Some(biased)
        } else if count > 1 {
            Some(biased * count as f64 / (count - 1) as f64)
        } else {
            None
        }
    }

    /// The weight of the starting statistics that survives `k` updates, the first of which
    /// found the counter at `counter_before`: `(1-m)^k`, or `t/(t+k)` for the cumulative
    /// average.
    pub fn retained(&self, k: u64, counter_before: i64) -> f64 {
        match self.momentum {
            Momentum::Value(m) => (1.0 - m).powf(k as f64),
            Momentum::Cma => {
                let t = counter_before.max(0) as f64;
                t / (t + k as f64)
            }
        }
    }

    /// The batch statistic implied by a running statistic that went from `a` to `b` in `k`
    /// updates: `(b - r·a)/(1-r)`. For one update this is the batch's statistic exactly; for
    /// several it is their average weighted by each update's factor times what later
    /// updates retained (geometric weights `m(1-m)^(k-i)` for a momentum, equal weights for
    /// the cumulative average). `None` when nothing of the batches remains (`k = 0` or
    /// momentum 0).
    pub fn implied_batch(&self, a: f64, b: f64, k: u64, counter_before: i64) -> Option<f64> {
        let r = self.retained(k, counter_before);
        (k > 0 && r < 1.0).then(|| (b - r * a) / (1.0 - r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_momentum() {
        assert_eq!("0.1".parse(), Ok(Momentum::Value(0.1)));
        assert_eq!("CMA".parse(), Ok(Momentum::Cma));
        assert_eq!("none".parse(), Ok(Momentum::Cma));
        assert!("1.5".parse::<Momentum>().is_err());
        assert!("fast".parse::<Momentum>().is_err());
        assert_eq!(Momentum::from_decay(0.99), Momentum::Value(1.0 - 0.99));
    }

    #[test]
    fn cumulative_average_retains_the_counted_batches() {
        let rule = UpdateRule {
            momentum: Momentum::Cma,
            unbiased_var: true,
        };
        // A is the average of 3 batches; 1 more batch leaves it a quarter of the weight.
        assert_eq!(rule.retained(1, 3), 0.75);
        // From a fresh counter the first update replaces the statistics entirely.
        assert_eq!(rule.retained(1, 0), 0.0);
        assert_eq!(rule.implied_batch(5.0, 2.0, 0, 3), None);
    }
}
