//! The running-statistics update rule of a framework, and the batch it implies.
//!
//! Every framework moves its running statistics by `new = (1-f)·old + f·batch`; they differ in
//! the factor `f` (a fixed momentum, or PyTorch's cumulative average `1/num_batches_tracked`)
//! and in the batch variance they fold in (unbiased in PyTorch, biased in Keras and Flax).
//! Composing `k` updates gives `B = r·A + (1-r)·b̄` with `r` the retained weight of A
//! ([`drift::retained`](super::drift::retained)) and `b̄` a weighted average of the batch
//! statistics, which [`UpdateRule::implied_batch`] solves for.

use super::drift::{Momentum, retained};
use super::layer::Convention;

/// How a framework folds a batch into its running statistics.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UpdateRule {
    /// Fixed momentum (in PyTorch's sense; Keras' and Flax's decay `d` is `1-d`) or
    /// cumulative average.
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

    /// The weight of the batch in the update after which the counter reads `counter`:
    /// PyTorch increments the counter first, then uses `1/counter` for the cumulative
    /// average. Without a counter (Keras, Flax) a cumulative average cannot be kept; the
    /// caller passes 1.
    pub fn factor(&self, counter: i64) -> f64 {
        match self.momentum {
            Momentum::Value(m) => m,
            Momentum::Cma => 1.0 / counter as f64,
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

    /// The batch statistic implied by a running statistic that went from `a` to `b` in `k`
    /// updates, the first of which found the counter at `counter_before`:
    /// `(b - r·a)/(1-r)`. For one update this is that batch's statistic exactly; for several
    /// it is their average weighted by each update's factor times what later updates
    /// retained (geometric weights `m(1-m)^(k-i)` for a momentum, equal weights for the
    /// cumulative average). `None` when nothing of the batches remains (`k = 0` or momentum
    /// 0).
    pub fn implied_batch(&self, a: f64, b: f64, k: u64, counter_before: i64) -> Option<f64> {
        let r = retained(self.momentum, k, counter_before);
        (k > 0 && r < 1.0).then(|| (b - r * a) / (1.0 - r))
    }
}
