//! BatchNorm's forward pass in every mode, with PyTorch's CPU numbers.
//!
//! Inputs are `N×C` or `N×C×…` (BatchNorm1d, 2d, 3d), row-major. Per channel the kernel sums
//! in `f64` (as ATen's CPU kernel does), normalises with the biased variance and `eps` inside
//! the square root, and writes `y = x·α + β` with `α = weight/√(var+eps)` and
//! `β = bias − mean·α` in the input's precision. A channel's values lie in `N` contiguous
//! runs of `spatial` elements; both passes (sums, then the affine map) stream over those
//! runs in parallel, so a large batch is normalised at memory speed.

use std::ops::{Add, Mul, Sub};

use ndarray::{ArrayD, ArrayViewD};
use rayon::prelude::*;

use super::stream::{self, Geometry};
use super::update::UpdateRule;
use crate::checkpoint::Dtype;

/// An element type the forward pass computes in: `f32` or `f64`.
pub trait Real:
    Copy
    + Send
    + Sync
    + PartialOrd
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + 'static
{
    /// Zero.
    const ZERO: Self;
    /// Positive infinity.
    const INFINITY: Self;
    /// The value as `f64` (exact).
    fn widen(self) -> f64;
    /// `v` rounded to this type.
    fn narrow(v: f64) -> Self;
    /// `v` in this type (exact).
    fn from_f32(v: f32) -> Self;
    /// Absolute value.
    fn abs(self) -> Self;
    /// Whether the value is NaN.
    fn is_nan(self) -> bool;
}

impl Real for f32 {
    const ZERO: f32 = 0.0;
    const INFINITY: f32 = f32::INFINITY;
    fn widen(self) -> f64 {
        f64::from(self)
    }
    fn narrow(v: f64) -> f32 {
        v as f32
    }
    fn from_f32(v: f32) -> f32 {
        v
    }
    fn abs(self) -> f32 {
        f32::abs(self)
    }
    fn is_nan(self) -> bool {
        f32::is_nan(self)
    }
}

impl Real for f64 {
    const ZERO: f64 = 0.0;
    const INFINITY: f64 = f64::INFINITY;
    fn widen(self) -> f64 {
        self
    }
    fn narrow(v: f64) -> f64 {
        v
    }
    fn from_f32(v: f32) -> f64 {
        f64::from(v)
    }
    fn abs(self) -> f64 {
        f64::abs(self)
    }
    fn is_nan(self) -> bool {
        f64::is_nan(self)
    }
}

/// Running statistics of a layer, as a checkpoint stores them.
#[derive(Debug, Clone, PartialEq)]
pub struct RunningStats {
    /// Running mean per channel.
    pub mean: Vec<f64>,
    /// Running variance per channel.
    pub var: Vec<f64>,
    /// PyTorch's counter of train-mode forwards, if the layer keeps one.
    pub num_batches_tracked: Option<i64>,
    /// Storage dtype: each update is rounded to it, as writing into the buffer does.
    pub dtype: Dtype,
}

/// Which statistics normalise the batch and what is updated.
#[derive(Debug)]
pub enum Mode<'r> {
    /// Training with tracking: batch statistics; the running statistics and counter move.
    Train(&'r mut RunningStats),
    /// Training without running statistics (`track_running_stats=False`): batch statistics.
    TrainNoTrack,
    /// Inference with the given running statistics.
    Eval(&'r RunningStats),
    /// Inference without running statistics: PyTorch falls back to batch statistics.
    EvalNoTrack,
}

/// Per-channel statistics of one batch.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchStats {
    /// Mean per channel.
    pub mean: Vec<f64>,
    /// Biased (population) variance per channel: what normalises the batch.
    pub var: Vec<f64>,
    /// Values per channel, `N·spatial`.
    pub count: u64,
}

/// An input BatchNorm cannot process.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ForwardError {
    /// Fewer than two dimensions.
    #[error("input of shape {shape:?} has rank {rank}; BatchNorm needs N×C or N×C×…")]
    Rank {
        /// The input's shape.
        shape: Vec<usize>,
        /// Its rank.
        rank: usize,
    },
    /// A parameter or statistic whose length is not the channel count.
    #[error("{what} has {found} values for {expected} channels")]
    ParamLength {
        /// Which vector.
        what: &'static str,
        /// The channel count.
        expected: usize,
        /// Its length.
        found: usize,
    },
    /// Batch statistics of one value per channel (PyTorch refuses them in training).
    #[error(
        "expected more than 1 value per channel when using batch statistics, got input of shape {shape:?}"
    )]
    SingleValue {
        /// The input's shape.
        shape: Vec<usize>,
    },
    /// An empty batch.
    #[error("input of shape {shape:?} is empty")]
    Empty {
        /// The input's shape.
        shape: Vec<usize>,
    },
    /// A shape whose dimensions multiply past the address space.
    #[error("input of shape {shape:?} has more values than memory can address")]
    TooLarge {
        /// The input's shape.
        shape: Vec<u64>,
    },
}

/// A BatchNorm layer's constants: epsilon, affine parameters and update rule.
#[derive(Debug, Clone, Copy)]
pub struct BatchNorm<'p> {
    /// Added to the variance inside the square root.
    pub eps: f64,
    /// Affine scale; `None` is 1.
    pub weight: Option<&'p [f64]>,
    /// Affine shift; `None` is 0.
    pub bias: Option<&'p [f64]>,
    /// How train mode moves the running statistics.
    pub rule: UpdateRule,
}

/// Elements per parallel task: large enough to amortise scheduling, small enough to balance.
const GRAIN: usize = 1 << 15;

/// The input seen as `N × C × spatial`, contiguous.
struct Layout {
    channels: usize,
    spatial: usize,
    len: usize,
}

impl Layout {
    fn of(shape: &[usize]) -> Result<Layout, ForwardError> {
        if shape.len() < 2 {
            return Err(ForwardError::Rank {
                shape: shape.to_vec(),
                rank: shape.len(),
            });
        }
        let len = shape.iter().product();
        if len == 0 {
            return Err(ForwardError::Empty {
                shape: shape.to_vec(),
            });
        }
        Ok(Layout {
            channels: shape[1],
            spatial: shape[2..].iter().product(),
            len,
        })
    }

    fn count(&self) -> u64 {
        (self.len / self.channels) as u64
    }

    /// Runs of one channel per parallel task.
    fn min_runs(&self) -> usize {
        GRAIN.div_ceil(self.spatial)
    }
}

/// Values per tile of the batch-statistics pass: a few MiB, which stay in cache between the
/// mean and the squared deviations.
const CHUNK: usize = 1 << 18;

/// Per-channel mean and biased variance of a contiguous `N×C×…` slice.
fn stats_of<T: Real>(data: &[T], shape: &[usize]) -> BatchStats {
    let dims: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
    let g = Geometry::of(&dims).expect("the shape was checked");
    match stream::moments(data, &g, CHUNK) {
        Ok(m) => m.batch(),
        Err(never) => match never {},
    }
}

/// Row-major contiguous data of `x`, copied only when `x` is not already so.
fn contiguous<'a, T: Real>(x: &'a ArrayViewD<'_, T>) -> std::borrow::Cow<'a, [T]> {
    match x.as_slice() {
        Some(s) => std::borrow::Cow::Borrowed(s),
        None => std::borrow::Cow::Owned(x.iter().copied().collect()),
    }
}

fn check_len(what: &'static str, v: Option<&[f64]>, c: usize) -> Result<(), ForwardError> {
    match v {
        Some(v) if v.len() != c => Err(ForwardError::ParamLength {
            what,
            expected: c,
            found: v.len(),
        }),
        _ => Ok(()),
    }
}

impl BatchNorm<'_> {
    /// Runs the layer on `x` (`N×C` or `N×C×…`) in `mode` and returns the output; in
    /// [`Mode::Train`] the running statistics and counter are updated as PyTorch does.
    pub fn forward<T: Real>(
        &self,
        x: ArrayViewD<'_, T>,
        mode: Mode<'_>,
    ) -> Result<ArrayD<T>, ForwardError> {
        let data = contiguous(&x);
        let mut out = vec![T::ZERO; data.len()];
        self.forward_into(x.shape(), &data, &mut out, mode)?;
        Ok(ArrayD::from_shape_vec(x.shape(), out).expect("output has the input's length"))
    }

    /// Like [`BatchNorm::forward`] on a row-major slice of `shape`, writing into `out`
    /// (same length) instead of allocating.
    pub fn forward_into<T: Real>(
        &self,
        shape: &[usize],
        x: &[T],
        out: &mut [T],
        mode: Mode<'_>,
    ) -> Result<(), ForwardError> {
        let layout = Layout::of(shape)?;
        let c = layout.channels;
        assert_eq!(x.len(), layout.len, "slice length matches its shape");
        assert_eq!(out.len(), layout.len, "output length matches the input");
        check_len("weight", self.weight, c)?;
        check_len("bias", self.bias, c)?;
        let (mean, var) = match mode {
            Mode::Eval(rs) => {
                check_len("running_mean", Some(&rs.mean), c)?;
                check_len("running_var", Some(&rs.var), c)?;
                (rs.mean.clone(), rs.var.clone())
            }
            Mode::Train(rs) => {
                check_len("running_mean", Some(&rs.mean), c)?;
                check_len("running_var", Some(&rs.var), c)?;
                let batch = self.batch(shape, x, &layout)?;
                self.update(rs, &batch);
                (batch.mean, batch.var)
            }
            Mode::TrainNoTrack | Mode::EvalNoTrack => {
                let batch = self.batch(shape, x, &layout)?;
                (batch.mean, batch.var)
            }
        };
        // α and β in f64, then rounded: ATen keeps them in the parameter type.
        let (alpha, beta): (Vec<T>, Vec<T>) = (0..c)
            .map(|ch| {
                let w = self.weight.map_or(1.0, |w| w[ch]);
                let b = self.bias.map_or(0.0, |b| b[ch]);
                let a = w / (var[ch] + self.eps).sqrt();
                (T::narrow(a), T::narrow(b - mean[ch] * a))
            })
            .unzip();
        out.par_chunks_mut(layout.spatial)
            .zip(x.par_chunks(layout.spatial))
            .enumerate()
            .with_min_len(layout.min_runs())
            .for_each(|(k, (o, i))| {
                let (a, b) = (alpha[k % c], beta[k % c]);
                for (y, &v) in o.iter_mut().zip(i) {
                    *y = v * a + b;
                }
            });
        Ok(())
    }

    /// Per-channel mean and biased variance of a batch `N×C×…`, refusing a single value per
    /// channel where the rule needs the unbiased variance (PyTorch's "Expected more than 1
    /// value per channel when training").
    pub fn batch_stats<T: Real>(&self, x: ArrayViewD<'_, T>) -> Result<BatchStats, ForwardError> {
        let layout = Layout::of(x.shape())?;
        self.batch(x.shape(), &contiguous(&x), &layout)
    }

    fn batch<T: Real>(
        &self,
        shape: &[usize],
        x: &[T],
        layout: &Layout,
    ) -> Result<BatchStats, ForwardError> {
        if layout.count() < 2 && self.rule.unbiased_var {
            return Err(ForwardError::SingleValue {
                shape: shape.to_vec(),
            });
        }
        Ok(stats_of(x, shape))
    }

    /// Folds `batch` into `rs`: counter first, then `(1-f)·old + f·batch` rounded to the
    /// storage dtype.
    pub fn update(&self, rs: &mut RunningStats, batch: &BatchStats) {
        if let Some(n) = rs.num_batches_tracked.as_mut() {
            *n += 1;
        }
        let f = self.rule.factor(rs.num_batches_tracked.unwrap_or(1));
        for ch in 0..rs.mean.len() {
            let folded = self
                .rule
                .folded_var(batch.var[ch], batch.count)
                .unwrap_or(f64::NAN);
            rs.mean[ch] = rs
                .dtype
                .round_f64((1.0 - f) * rs.mean[ch] + f * batch.mean[ch]);
            rs.var[ch] = rs.dtype.round_f64((1.0 - f) * rs.var[ch] + f * folded);
        }
    }
}
