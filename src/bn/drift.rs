//! Drift algebra: what BatchNorm's running-statistics update rule allows between two
//! checkpoints A and B of the same layer.
//!
//! In train mode forward `j` folds the batch statistic `x_j` in as `r ← (1-m)·r + m·x_j`, so
//! after `k` forwards `B = (1-m)^k·A + Σ_j m(1-m)^(k-j)·x_j`. A keeps the weight
//! `(1-m)^k` (the *retained* fraction) and, batch variances being non-negative, every channel
//! satisfies `B_var ≥ (1-m)^k·A_var`. With `momentum=None` (a cumulative average) the factor
//! of forward `j` is `1/n_j`, `n_j` the counter after its increment, and the product over
//! `k` forwards from counter `n_a` telescopes to `n_a / (n_a + k)`.
//!
//! Everything here is arithmetic on decoded values: no I/O, no wording.

use std::fmt;
use std::str::FromStr;

use serde::{Serialize, Serializer};

/// Momentum of the running-statistics update in PyTorch's sense, or the cumulative average.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Momentum {
    /// `new = (1-m)·old + m·batch`.
    Value(f64),
    /// `momentum=None`: cumulative moving average with factor `1/num_batches_tracked`.
    Cma,
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

/// A momentum that is neither a number in `[0, 1]` nor `cma`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "momentum {0:?} is neither a number in [0, 1] (PyTorch's sense: new = (1-m)·old + m·batch) nor \"cma\" (momentum=None)"
)]
pub struct BadMomentum(pub String);

impl FromStr for Momentum {
    type Err = BadMomentum;

    /// `cma` or `none` for the cumulative average, else a number in `[0, 1]`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("cma") || s.eq_ignore_ascii_case("none") {
            return Ok(Momentum::Cma);
        }
        match s.parse::<f64>() {
            Ok(m) if (0.0..=1.0).contains(&m) => Ok(Momentum::Value(m)),
            _ => Err(BadMomentum(s.to_owned())),
        }
    }
}

/// Fraction of A's statistics that B retains after `k` forwards starting from counter
/// `nbt_a`: `(1-m)^k`, or `nbt_a / (nbt_a + k)` for the cumulative average.
pub fn retained(momentum: Momentum, k: u64, nbt_a: i64) -> f64 {
    match momentum {
        Momentum::Value(m) => (1.0 - m).powf(k as f64),
        Momentum::Cma => {
            let n_a = nbt_a.max(0) as f64;
            if n_a + k as f64 == 0.0 {
                1.0
            } else {
                n_a / (n_a + k as f64)
            }
        }
    }
}

/// Relative slack that float rounding allows in `B_var ≥ r·A_var` after `k` updates in a
/// dtype of unit roundoff `u`: each update rounds a product and a sum (and `1-m` itself
/// is rounded), and saving may round once more.
pub fn rounding_slack(k: u64, unit_roundoff: f64) -> f64 {
    (3.0 * k as f64 + 4.0) * unit_roundoff
}

/// The channel where B's running variance kept the smallest fraction of A's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VarRatio {
    /// Channel index.
    pub channel: usize,
    /// `B_var / A_var` there.
    pub ratio: f64,
}

/// The smallest `B_var / A_var` over channels where both are finite and `A_var > 0`.
pub fn var_ratio_min(var_a: &[f64], var_b: &[f64]) -> Option<VarRatio> {
    var_a
        .iter()
        .zip(var_b)
        .enumerate()
        .filter(|(_, (a, b))| a.is_finite() && b.is_finite() && **a > 0.0)
        .map(|(channel, (a, b))| VarRatio {
            channel,
            ratio: b / a,
        })
        .min_by(|x, y| x.ratio.total_cmp(&y.ratio))
}

/// The fewest forwards at momentum `m` that can bring the variance of some channel down to
/// `ratio` of A's (`(1-m)^k ≤ ratio`), at least 1 since something changed. `None` when no
/// number of forwards can (momentum 0, or a variance that fell to zero).
pub fn forwards_lower_bound(ratio: f64, m: f64, unit_roundoff: f64) -> Option<u64> {
    if m <= 0.0 || ratio <= 0.0 {
        return None;
    }
    let relaxed = ratio * (1.0 + rounding_slack(1, unit_roundoff));
    if m >= 1.0 || relaxed >= 1.0 {
        return Some(1);
    }
    Some(((relaxed.ln() / (1.0 - m).ln()).ceil() as u64).max(1))
}

/// The smallest momentum under which `k` forwards can bring a channel's variance down to
/// `ratio` of A's: `1 - ratio^(1/k)`.
pub fn momentum_lower_bound(ratio: f64, k: u64, unit_roundoff: f64) -> f64 {
    let relaxed = (ratio * (1.0 + rounding_slack(k, unit_roundoff))).clamp(0.0, 1.0);
    1.0 - relaxed.powf(1.0 / k.max(1) as f64)
}

/// Whether running statistics are exactly the initial ones (mean 0, variance 1).
pub fn is_initial(mean: &[f64], var: &[f64]) -> bool {
    !mean.is_empty() && mean.iter().all(|&m| m == 0.0) && var.iter().all(|&v| v == 1.0)
}

/// A layer's running statistics and counters in A and B, and what is assumed.
#[derive(Debug, Clone, Copy)]
pub struct Observation<'a> {
    /// Momentum assumed.
    pub momentum: Momentum,
    /// Counter in A (`None` without one).
    pub nbt_a: Option<i64>,
    /// Counter in B.
    pub nbt_b: Option<i64>,
    /// Running mean in A.
    pub mean_a: &'a [f64],
    /// Running mean in B.
    pub mean_b: &'a [f64],
    /// Running variance in A.
    pub var_a: &'a [f64],
    /// Running variance in B.
    pub var_b: &'a [f64],
    /// Whether the running statistics differ (by the comparison rules in force).
    pub stats_changed: bool,
    /// Largest unit roundoff of the dtypes the statistics were stored in.
    pub unit_roundoff: f64,
}

/// A pattern in the observation that means something beyond the update rule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Signature {
    /// Statistics changed, counter did not: assigned, loaded from other weights, or an old
    /// PyTorch that had no counter.
    CounterStill,
    /// Counter moved, statistics bit-identical: momentum 0, or statistics restored.
    CounterOnly {
        /// Counter delta.
        delta: i64,
    },
    /// The counter went down: it was reset (then possibly counted again).
    CounterDown {
        /// Counter in A.
        from: i64,
        /// Counter in B.
        to: i64,
    },
    /// B's statistics are exactly the initial ones and A's were not.
    Reinitialised,
    /// No counter on one side or both: forwards cannot be counted.
    NoCounter,
    /// Some channel's variance fell below what the retained fraction allows.
    VarBelowBound {
        /// Channel index.
        channel: usize,
        /// `B_var / A_var` there.
        ratio: f64,
        /// The retained fraction it falls below.
        bound: f64,
    },
    /// B holds a negative running variance, which no batch can produce.
    NegativeVar {
        /// First such channel.
        channel: usize,
    },
    /// A cumulative average from counter 0: B keeps nothing of A.
    ForgetsA,
    /// B's statistics hold NaN or infinity where A's were finite (`Drift::nonfinite` says
    /// where): no update rule bound applies to those channels.
    BecameNonfinite,
}

/// What the algebra supports about one layer's change.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Drift {
    /// Train-mode forwards: the counter delta, or after a counter reset the forwards
    /// counted since (B's counter).
    pub forwards: Option<i64>,
    /// Without a usable counter: the fewest forwards that explain the variance change.
    pub forwards_min: Option<u64>,
    /// Fraction of A's statistics retained in B.
    pub retained: Option<f64>,
    /// Whether B's statistics satisfy the update rule's bounds (`None`: nothing to check).
    pub consistent: Option<bool>,
    /// Smallest variance ratio over channels.
    pub var_ratio_min: Option<VarRatio>,
    /// With a counter: the smallest momentum that explains the variance ratio.
    pub momentum_min: Option<f64>,
    /// Patterns found, in the order checked.
    pub signatures: Vec<Signature>,
    /// Channels whose running mean or variance is finite in A and not in B.
    pub nonfinite: Vec<usize>,
}

impl Drift {
    /// Whether the statistics were reset rather than updated.
    pub fn is_reset(&self) -> bool {
        self.signatures
            .iter()
            .any(|s| matches!(s, Signature::CounterDown { .. } | Signature::Reinitialised))
    }
}

/// Channels whose mean or variance is finite in A and NaN or infinite in B.
pub fn became_nonfinite(o: &Observation<'_>) -> Vec<usize> {
    let went = |a: &[f64], b: &[f64], c: usize| {
        a.get(c).is_some_and(|v| v.is_finite()) && b.get(c).is_some_and(|v| !v.is_finite())
    };
    (0..o.mean_b.len().max(o.var_b.len()))
        .filter(|&c| went(o.mean_a, o.mean_b, c) || went(o.var_a, o.var_b, c))
        .collect()
}

/// Applies the update rule's algebra to one layer.
pub fn analyse(o: &Observation<'_>) -> Drift {
    let mut d = Drift {
        var_ratio_min: var_ratio_min(o.var_a, o.var_b),
        nonfinite: became_nonfinite(o),
        ..Drift::default()
    };
    if !d.nonfinite.is_empty() {
        d.signatures.push(Signature::BecameNonfinite);
    }
    let nonfinite = !d.nonfinite.is_empty();
    let reinitialised =
        o.stats_changed && is_initial(o.mean_b, o.var_b) && !is_initial(o.mean_a, o.var_a);
    let lower_bound = |d: &Drift| match (o.momentum, d.var_ratio_min) {
        (Momentum::Value(m), Some(v)) => forwards_lower_bound(v.ratio, m, o.unit_roundoff),
        _ => None,
    };
    match (o.nbt_a, o.nbt_b) {
        (Some(a), Some(b)) if b < a || reinitialised => {
            if b < a {
                d.signatures.push(Signature::CounterDown { from: a, to: b });
            }
            if reinitialised {
                d.signatures.push(Signature::Reinitialised);
            }
            // A reset sets the counter to 0; what it holds now was counted since.
            d.forwards = Some(if b < a { b } else { b - a });
            d.retained = Some(0.0);
            d.consistent = Some(true);
        }
        (Some(a), Some(b)) if b == a => {
            d.forwards = Some(0);
            d.retained = Some(1.0);
            // Non-finite values say what happened to the statistics; the finite channels'
            // ratios cannot bound forwards that never ran.
            if o.stats_changed && !nonfinite {
                d.signatures.push(Signature::CounterStill);
                d.forwards_min = lower_bound(&d);
            }
            // Zero forwards leave the statistics exactly as they were.
            d.consistent = Some(!o.stats_changed);
        }
        (Some(a), Some(b)) => {
            let k = (b - a) as u64;
            let r = retained(o.momentum, k, a);
            d.forwards = Some(b - a);
            d.retained = Some(r);
            if o.momentum == Momentum::Cma && a == 0 {
                d.signatures.push(Signature::ForgetsA);
            }
            if !o.stats_changed {
                d.signatures.push(Signature::CounterOnly { delta: b - a });
                // Bit-identical statistics after k forwards need every batch to match the
                // running statistics exactly, unless momentum is 0.
                d.consistent = Some(o.momentum == Momentum::Value(0.0));
            } else {
                d.consistent = Some(true);
                if let Some(v) = d.var_ratio_min {
                    let bound = r * (1.0 - rounding_slack(k, o.unit_roundoff));
                    if v.ratio < bound {
                        d.signatures.push(Signature::VarBelowBound {
                            channel: v.channel,
                            ratio: v.ratio,
                            bound: r,
                        });
                        d.consistent = Some(false);
                        d.momentum_min = Some(momentum_lower_bound(v.ratio, k, o.unit_roundoff));
                    }
                }
            }
        }
        _ => {
            d.signatures.push(Signature::NoCounter);
            if reinitialised {
                d.signatures.push(Signature::Reinitialised);
                d.retained = Some(0.0);
                d.consistent = Some(true);
            } else if !o.stats_changed {
                d.consistent = Some(true);
            } else if !nonfinite {
                d.forwards_min = lower_bound(&d);
            }
        }
    }
    if nonfinite && d.consistent == Some(true) {
        // The bounds hold on the finite channels only: the others cannot be checked.
        d.consistent = None;
    }
    if let Some(channel) = o.var_b.iter().position(|&v| v < 0.0) {
        d.signatures.push(Signature::NegativeVar { channel });
        d.consistent = Some(false);
    }
    d
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    /// Running statistics of one BatchNorm2d module before and after known train-mode
    /// forwards, recorded from PyTorch by tests/fixtures/diff/gen.py.
    #[derive(Deserialize)]
    struct Recorded {
        momentum: serde_json::Value,
        forwards: u64,
        a: Stats,
        b: Stats,
        batch_mean: Vec<Vec<f64>>,
        batch_var_unbiased: Vec<Vec<f64>>,
    }

    #[derive(Deserialize)]
    struct Stats {
        mean: Vec<f64>,
        var: Vec<f64>,
        nbt: i64,
    }

    impl Recorded {
        fn momentum(&self) -> Momentum {
            match &self.momentum {
                serde_json::Value::Number(m) => Momentum::Value(m.as_f64().expect("a number")),
                _ => Momentum::Cma,
            }
        }

        fn observation(&self, momentum: Momentum) -> Observation<'_> {
            Observation {
                momentum,
                nbt_a: Some(self.a.nbt),
                nbt_b: Some(self.b.nbt),
                mean_a: &self.a.mean,
                mean_b: &self.b.mean,
                var_a: &self.a.var,
                var_b: &self.b.var,
                stats_changed: true,
                unit_roundoff: 2f64.powi(-24),
            }
        }
    }

    fn recorded() -> Vec<Recorded> {
        serde_json::from_str(include_str!("../../tests/fixtures/diff/algebra.json"))
            .expect("algebra.json parses")
    }

    const F32_REL: f64 = 1e-5;

    #[test]
    fn a_single_forward_retains_nine_tenths() {
        let r = recorded();
        let one = r
            .iter()
            .find(|c| c.forwards == 1 && c.momentum() == Momentum::Value(0.1))
            .expect("recorded");
        assert_eq!(one.b.nbt - one.a.nbt, 1);
        let d = analyse(&one.observation(Momentum::Value(0.1)));
        assert_eq!(d.forwards, Some(1));
        assert!((d.retained.expect("retained") - 0.9).abs() < 1e-15);
        assert_eq!(d.consistent, Some(true));
    }

    /// B = retained·A + the batch statistics' weights: our retained fraction reproduces
    /// PyTorch's running statistics from its own recorded batch statistics.
    #[test]
    fn retained_fraction_reproduces_torch() {
        for c in recorded() {
            let m = c.momentum();
            let k = c.forwards;
            let r = retained(m, k, c.a.nbt);
            // Weight of batch j (1-based) in B, by the update rule's definition.
            let weight = |j: u64| match m {
                Momentum::Value(m) => m * (1.0 - m).powf((k - j) as f64),
                Momentum::Cma => 1.0 / c.b.nbt as f64,
            };
            for (a, b, batches) in [
                (&c.a.mean, &c.b.mean, &c.batch_mean),
                (&c.a.var, &c.b.var, &c.batch_var_unbiased),
            ] {
                for ch in 0..a.len() {
                    let rebuilt = r * a[ch]
                        + (1..=k)
                            .map(|j| weight(j) * batches[j as usize - 1][ch])
                            .sum::<f64>();
                    assert!(
                        (rebuilt - b[ch]).abs() <= F32_REL * b[ch].abs().max(1.0),
                        "momentum {m}, k {k}, channel {ch}: rebuilt {rebuilt} vs torch {}",
                        b[ch]
                    );
                }
            }
        }
    }

    #[test]
    fn torch_forwards_are_consistent_under_their_momentum() {
        for c in recorded() {
            let d = analyse(&c.observation(c.momentum()));
            assert_eq!(d.forwards, Some(c.forwards as i64));
            assert_eq!(d.consistent, Some(true), "momentum {}", c.momentum());
            assert!(
                d.signatures
                    .iter()
                    .all(|s| !matches!(s, Signature::VarBelowBound { .. }))
            );
        }
    }

    /// Ten forwards at momentum 0.1 on near-constant batches bring the variance to about
    /// 0.9^10 of A's: momentum 0.01 cannot explain it, and the momentum bound stays at or
    /// below the true 0.1.
    #[test]
    fn too_small_a_momentum_is_caught_and_bounded() {
        let r = recorded();
        let c = r
            .iter()
            .find(|c| c.forwards == 10)
            .expect("the near-constant case");
        let d = analyse(&c.observation(Momentum::Value(0.01)));
        assert_eq!(d.consistent, Some(false));
        let m_min = d.momentum_min.expect("a bound");
        assert!((0.09..=0.1).contains(&m_min), "momentum_min {m_min}");
        assert!(matches!(
            d.signatures.as_slice(),
            [Signature::VarBelowBound { .. }]
        ));
    }

    /// Without the counter the variance still bounds the forwards from below; the bound
    /// never exceeds the forwards PyTorch ran and is tight when batches are near-constant.
    #[test]
    fn forwards_bound_is_sound_and_tight() {
        for c in recorded() {
            let Momentum::Value(m) = c.momentum() else {
                continue;
            };
            let v = var_ratio_min(&c.a.var, &c.b.var).expect("positive variances");
            let bound = forwards_lower_bound(v.ratio, m, 2f64.powi(-24)).expect("a bound");
            assert!(
                bound <= c.forwards,
                "bound {bound} > {} forwards",
                c.forwards
            );
            if c.forwards == 10 {
                assert!(bound >= 9, "bound {bound} not tight");
            }
        }
    }

    #[test]
    fn signatures_of_other_writers() {
        let (a, b) = ([0.5, -0.5], [0.2, 0.1]);
        let (va, vb) = ([2.0, 1.0], [1.5, 1.2]);
        let base = Observation {
            momentum: Momentum::Value(0.1),
            nbt_a: Some(7),
            nbt_b: Some(7),
            mean_a: &a,
            mean_b: &b,
            var_a: &va,
            var_b: &vb,
            stats_changed: true,
            unit_roundoff: 2f64.powi(-24),
        };
        let still = analyse(&base);
        assert_eq!(still.signatures, vec![Signature::CounterStill]);
        assert_eq!(still.consistent, Some(false));
        // 1.5/2.0 = 0.75 ≥ 0.9^k needs k ≥ 3.
        assert_eq!(still.forwards_min, Some(3));

        let only = analyse(&Observation {
            nbt_b: Some(9),
            mean_b: &a,
            var_b: &va,
            stats_changed: false,
            ..base
        });
        assert_eq!(only.signatures, vec![Signature::CounterOnly { delta: 2 }]);
        assert_eq!(only.consistent, Some(false));

        let down = analyse(&Observation {
            nbt_b: Some(3),
            ..base
        });
        assert_eq!(
            down.signatures,
            vec![Signature::CounterDown { from: 7, to: 3 }]
        );
        assert!(down.is_reset());
        assert_eq!((down.forwards, down.retained), (Some(3), Some(0.0)));

        let (zeros, ones) = ([0.0, 0.0], [1.0, 1.0]);
        let reinit = analyse(&Observation {
            nbt_a: None,
            nbt_b: None,
            mean_b: &zeros,
            var_b: &ones,
            ..base
        });
        assert_eq!(
            reinit.signatures,
            vec![Signature::NoCounter, Signature::Reinitialised]
        );
        assert!(reinit.is_reset());

        let negative = [1.0, -0.1];
        let bad = analyse(&Observation {
            nbt_b: Some(8),
            var_b: &negative,
            ..base
        });
        assert_eq!(bad.consistent, Some(false));
        assert!(
            bad.signatures
                .contains(&Signature::NegativeVar { channel: 1 })
        );
    }

    #[test]
    fn cma_from_zero_forgets_a() {
        assert_eq!(retained(Momentum::Cma, 4, 0), 0.0);
        assert_eq!(retained(Momentum::Cma, 0, 0), 1.0);
        assert_eq!(retained(Momentum::Cma, 5, 20), 0.8);
        assert_eq!(retained(Momentum::Value(1.0), 1, 3), 0.0);
    }

    #[test]
    fn momentum_parses() {
        assert_eq!("cma".parse(), Ok(Momentum::Cma));
        assert_eq!("None".parse(), Ok(Momentum::Cma));
        assert_eq!("0.01".parse(), Ok(Momentum::Value(0.01)));
        assert!("1.5".parse::<Momentum>().is_err());
        assert!("fast".parse::<Momentum>().is_err());
    }
}
