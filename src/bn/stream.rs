//! BatchNorm over a batch seen tile by tile: per-channel moments, and the largest error of
//! every mode against recorded outputs, without materialising any mode's output.
//!
//! A batch `N×C×S` (`S` the spatial size) is cut into [`Tile`]s, each one contiguous range of
//! the row-major batch: a block of channels of one sample, several whole samples, or, when one
//! channel's run of `S` values exceeds the chunk, a segment of that run. Memory is bounded by
//! the chunk, not the batch, so the caller can read tiles from a file as it goes. Moments are
//! computed per tile and channel in `f64` (the mean first, then the squared deviations, while
//! the data is in cache) and merged across tiles with Chan's formula: as exact as ATen's `f64`
//! sums. A mode's output `y = x·α + β` is affine per channel, so its mean and deviation follow
//! from the input's moments exactly; only the comparison with recorded outputs visits values.

use std::convert::Infallible;
use std::ops::Range;

use rayon::prelude::*;

use super::forward::{BatchStats, ForwardError, Real};

/// Independent accumulators per loop, so the sums vectorise without reassociating one chain.
const LANES: usize = 8;

/// A batch's shape as `N × C × S`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// Samples `N`.
    pub samples: usize,
    /// Channels `C`.
    pub channels: usize,
    /// Values per sample and channel: the product of the dimensions after the second.
    pub spatial: usize,
}

impl Geometry {
    /// The geometry of `shape` (`N×C` or `N×C×…`), refusing ranks below 2, empty batches and
    /// shapes whose element count overflows.
    pub fn of(shape: &[u64]) -> Result<Geometry, ForwardError> {
        let dims = || shape.iter().map(|&d| d as usize).collect::<Vec<_>>();
        if shape.len() < 2 {
            return Err(ForwardError::Rank {
                shape: dims(),
                rank: shape.len(),
            });
        }
        let product = |d: &[u64]| {
            d.iter()
                .try_fold(1usize, |p, &x| p.checked_mul(usize::try_from(x).ok()?))
        };
        // Every dimension's product must fit, whatever a zero elsewhere makes of the total.
        let nonzero: Vec<u64> = shape.iter().copied().filter(|&d| d != 0).collect();
        if product(&nonzero).is_none() {
            return Err(ForwardError::TooLarge {
                shape: shape.to_vec(),
            });
        }
        let spatial = product(&shape[2..]).unwrap_or(0);
        let g = Geometry {
            samples: shape[0] as usize,
            channels: shape[1] as usize,
            spatial,
        };
        if g.is_empty() {
            return Err(ForwardError::Empty { shape: dims() });
        }
        Ok(g)
    }

    /// Values in the batch.
    pub fn len(&self) -> usize {
        self.samples * self.channels * self.spatial
    }

    /// Whether the batch holds no value (never, for a geometry from [`Geometry::of`]).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Values per channel, `N·S`.
    pub fn count(&self) -> u64 {
        (self.samples * self.spatial) as u64
    }
}

/// A rectangle of the batch that is one contiguous range of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tile {
    /// Channels covered.
    pub channels: Range<usize>,
    /// Samples covered (more than one only when `channels` is all of them).
    pub samples: Range<usize>,
    /// Positions within each run (all of `0..S` unless the tile is one segment of one run).
    pub spatial: Range<usize>,
}

impl Tile {
    /// The tile's values as a range of the row-major batch.
    pub fn range(&self, g: &Geometry) -> Range<usize> {
        let start = (self.samples.start * g.channels + self.channels.start) * g.spatial
            + self.spatial.start;
        start..start + self.len()
    }

    /// Values in the tile.
    pub fn len(&self) -> usize {
        self.channels.len() * self.samples.len() * self.spatial.len()
    }

    /// Whether the tile holds no value (never, for a tile from [`tiles`]).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Consecutive tiles of one block of channels: a unit of parallel work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// The block's channels.
    pub channels: Range<usize>,
    /// Its tiles, in batch order.
    pub tiles: Vec<Tile>,
}

/// Tiles of at most `chunk` values (a run segment at least), grouped by channel block; when
/// there are fewer blocks than `min_groups`, each block's samples are split over several
/// groups so that all threads have work. Groups of one block are adjacent, in batch order.
pub fn tiles(g: &Geometry, chunk: usize, min_groups: usize) -> Vec<Group> {
    let chunk = chunk.max(1);
    let (c, n, s) = (g.channels, g.samples, g.spatial);
    let (block, per_tile, segment) = if s >= chunk {
        (1, 1, chunk)
    } else {
        let block = (chunk / s).min(c);
        let per_tile = if block == c {
            (chunk / (c * s)).max(1)
        } else {
            1
        };
        (block, per_tile, s)
    };
    let blocks = c.div_ceil(block);
    let mut out = Vec::new();
    for b in 0..blocks {
        let channels = b * block..((b + 1) * block).min(c);
        let mut seq = Vec::new();
        for n0 in (0..n).step_by(per_tile) {
            for s0 in (0..s).step_by(segment) {
                seq.push(Tile {
                    channels: channels.clone(),
                    samples: n0..(n0 + per_tile).min(n),
                    spatial: s0..(s0 + segment).min(s),
                });
            }
        }
        let split = min_groups.div_ceil(blocks).clamp(1, seq.len());
        let per_group = seq.len().div_ceil(split);
        for piece in seq.chunks(per_group) {
            out.push(Group {
                channels: channels.clone(),
                tiles: piece.to_vec(),
            });
        }
    }
    out
}

/// Per-channel count, mean, sum of squared deviations, minimum and maximum of some of a
/// batch's values: mergeable, so tiles can be summarised apart and combined.
#[derive(Debug, Clone, PartialEq)]
pub struct Moments {
    /// Values per channel seen so far (the same for every channel).
    pub count: u64,
    /// Mean per channel.
    pub mean: Vec<f64>,
    /// Sum of squared deviations from the mean per channel.
    pub m2: Vec<f64>,
    /// Smallest value per channel (NaN ignored; +∞ before any value).
    pub min: Vec<f64>,
    /// Largest value per channel (NaN ignored; −∞ before any value).
    pub max: Vec<f64>,
}

impl Moments {
    /// Nothing seen yet, for `channels` channels.
    pub fn new(channels: usize) -> Moments {
        Moments {
            count: 0,
            mean: vec![0.0; channels],
            m2: vec![0.0; channels],
            min: vec![f64::INFINITY; channels],
            max: vec![f64::NEG_INFINITY; channels],
        }
    }

    /// Folds in the values of `tile`, laid out as the batch holds them (for each sample, its
    /// channels' runs in order); channels are counted from the tile's first.
    pub fn add_tile<T: Real>(&mut self, data: &[T], tile: &Tile) {
        let (cb, seg) = (tile.channels.len(), tile.spatial.len());
        let runs = |ch: usize| {
            data.chunks_exact(seg)
                .skip(ch)
                .step_by(cb)
                .take(tile.samples.len())
        };
        let count = (tile.samples.len() * seg) as u64;
        for ch in 0..cb {
            let sum: f64 = runs(ch).map(run_sum).sum();
            let mean = sum / count as f64;
            let (mut m2, mut lo, mut hi) = (0.0, f64::INFINITY, f64::NEG_INFINITY);
            for run in runs(ch) {
                let (q, a, b) = run_deviations(run, mean);
                m2 += q;
                lo = lo.min(a);
                hi = hi.max(b);
            }
            self.merge_channel(ch, count, mean, m2);
            self.min[ch] = self.min[ch].min(lo);
            self.max[ch] = self.max[ch].max(hi);
        }
        self.count += count;
    }

    /// Folds in `other`, the moments of further values of the same channels.
    pub fn merge(&mut self, other: &Moments) {
        for ch in 0..self.mean.len() {
            self.merge_channel(ch, other.count, other.mean[ch], other.m2[ch]);
            self.min[ch] = self.min[ch].min(other.min[ch]);
            self.max[ch] = self.max[ch].max(other.max[ch]);
        }
        self.count += other.count;
    }

    /// Chan's update of channel `ch` with `n` more values of mean `mean` and squared
    /// deviations `m2`; `self.count` is updated by the caller, once for all channels.
    fn merge_channel(&mut self, ch: usize, n: u64, mean: f64, m2: f64) {
        if self.count == 0 {
            self.mean[ch] = mean;
            self.m2[ch] = m2;
            return;
        }
        let (na, nb) = (self.count as f64, n as f64);
        let total = na + nb;
        let delta = mean - self.mean[ch];
        self.mean[ch] += delta * nb / total;
        self.m2[ch] += m2 + delta * delta * na * nb / total;
    }

    /// The batch statistics: mean and biased variance per channel.
    pub fn batch(&self) -> BatchStats {
        let n = self.count as f64;
        BatchStats {
            mean: self.mean.clone(),
            var: self.m2.iter().map(|&q| q / n).collect(),
            count: self.count,
        }
    }
}

/// Sum of a run in `f64`.
fn run_sum<T: Real>(run: &[T]) -> f64 {
    let chunks = run.chunks_exact(LANES);
    let tail = chunks.remainder();
    let mut acc = [0.0f64; LANES];
    for chunk in chunks {
        for i in 0..LANES {
            acc[i] += chunk[i].widen();
        }
    }
    acc.iter().sum::<f64>() + tail.iter().map(|x| x.widen()).sum::<f64>()
}

/// Sum of squared deviations from `mean`, minimum and maximum of a run, in `f64`.
fn run_deviations<T: Real>(run: &[T], mean: f64) -> (f64, f64, f64) {
    let chunks = run.chunks_exact(LANES);
    let tail = chunks.remainder();
    let mut q = [0.0f64; LANES];
    let mut lo = [f64::INFINITY; LANES];
    let mut hi = [f64::NEG_INFINITY; LANES];
    for chunk in chunks {
        for i in 0..LANES {
            let x = chunk[i].widen();
            let d = x - mean;
            q[i] += d * d;
            lo[i] = if x < lo[i] { x } else { lo[i] };
            hi[i] = if x > hi[i] { x } else { hi[i] };
        }
    }
    let (mut sq, mut mn, mut mx) = (
        q.iter().sum::<f64>(),
        lo.iter().copied().fold(f64::INFINITY, f64::min),
        hi.iter().copied().fold(f64::NEG_INFINITY, f64::max),
    );
    for x in tail.iter().map(|x| x.widen()) {
        let d = x - mean;
        sq += d * d;
        mn = mn.min(x);
        mx = mx.max(x);
    }
    (sq, mn, mx)
}

/// A per-channel affine map `y = x·α + β`: stored ([`Affine`]) or computed channel by
/// channel when asked ([`Normalising`]), which holds no per-channel vector of its own.
pub trait ChannelMap {
    /// `(α, β)` of channel `ch`, widened to `f64`.
    fn at(&self, ch: usize) -> (f64, f64);

    /// Pooled count, mean and squared deviations of the outputs over every channel, from
    /// the input's moments: exact, as the map is affine per channel.
    fn output_moments(&self, m: &Moments) -> Pooled {
        let mut pooled = Pooled::default();
        for ch in 0..m.mean.len() {
            let (a, b) = self.at(ch);
            pooled.merge(&Pooled {
                count: m.count,
                mean: a * m.mean[ch] + b,
                m2: a * a * m.m2[ch],
            });
        }
        pooled
    }

    /// Largest difference between this map's outputs and `other`'s over the values `m`
    /// summarises: the difference is affine in `x`, so it peaks at a channel's extremes.
    fn max_diff(&self, other: &Self, m: &Moments) -> f64 {
        (0..m.mean.len())
            .map(|ch| {
                let ((sa, sb), (oa, ob)) = (self.at(ch), other.at(ch));
                let (da, db) = (sa - oa, sb - ob);
                if da == 0.0 && db == 0.0 {
                    return 0.0;
                }
                if !(da.is_finite() && db.is_finite()) {
                    // NaN or infinite outputs against finite ones.
                    return f64::INFINITY;
                }
                [m.min[ch], m.max[ch]]
                    .into_iter()
                    .filter(|x| x.is_finite())
                    .map(|x| (da * x + db).abs())
                    .fold(0.0, f64::max)
            })
            .fold(0.0, f64::max)
    }
}

/// The map that normalises with a mean and a biased variance (`eps` inside the square
/// root), then applies `weight` and `bias` (`None`: 1 and 0), computed per channel in `f64`.
#[derive(Debug, Clone, Copy)]
pub struct Normalising<'s> {
    /// Mean per channel.
    pub mean: &'s [f64],
    /// Per channel, the variance times `var_divisor`.
    pub var: &'s [f64],
    /// What `var` is divided by: 1 for a variance, the count for squared deviations
    /// ([`Moments::m2`]), so the batch variance needs no vector of its own.
    pub var_divisor: f64,
    /// Epsilon.
    pub eps: f64,
    /// Scale per channel.
    pub weight: Option<&'s [f64]>,
    /// Shift per channel.
    pub bias: Option<&'s [f64]>,
}

impl ChannelMap for Normalising<'_> {
    fn at(&self, ch: usize) -> (f64, f64) {
        let w = self.weight.map_or(1.0, |w| w[ch]);
        let b = self.bias.map_or(0.0, |b| b[ch]);
        let a = w / (self.var[ch] / self.var_divisor + self.eps).sqrt();
        (a, b - self.mean[ch] * a)
    }
}

/// Per-channel affine map `y = x·α + β` of one mode, in the input's precision (ATen keeps
/// `α` and `β` in the parameter type and maps each value with them).
#[derive(Debug, Clone, PartialEq)]
pub struct Affine<T> {
    /// Scale per channel.
    pub alpha: Vec<T>,
    /// Shift per channel.
    pub beta: Vec<T>,
}

impl<T: Real> Affine<T> {
    /// `map`'s scales and shifts for `channels` channels, rounded to `T`.
    pub fn of(map: &Normalising<'_>, channels: usize) -> Affine<T> {
        let (alpha, beta) = (0..channels)
            .map(|ch| {
                let (a, b) = map.at(ch);
                (T::narrow(a), T::narrow(b))
            })
            .unzip();
        Affine { alpha, beta }
    }
}

impl<T: Real> ChannelMap for Affine<T> {
    fn at(&self, ch: usize) -> (f64, f64) {
        (self.alpha[ch].widen(), self.beta[ch].widen())
    }
}

/// Count, mean and squared deviations of values pooled over channels and batches.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Pooled {
    /// Values.
    pub count: u64,
    /// Their mean.
    pub mean: f64,
    /// Sum of squared deviations from it.
    pub m2: f64,
}

impl Pooled {
    /// Folds in `other` (Chan's formula).
    pub fn merge(&mut self, other: &Pooled) {
        if other.count == 0 {
            return;
        }
        if self.count == 0 {
            *self = *other;
            return;
        }
        let (na, nb) = (self.count as f64, other.count as f64);
        let total = na + nb;
        let delta = other.mean - self.mean;
        self.mean += delta * nb / total;
        self.m2 += other.m2 + delta * delta * na * nb / total;
        self.count += other.count;
    }

    /// Population standard deviation (NaN stays NaN).
    pub fn std(&self) -> f64 {
        let var = self.m2 / self.count as f64;
        if var.is_nan() {
            var
        } else {
            var.max(0.0).sqrt()
        }
    }
}

/// Largest `|x·α + β − r|` over `tile` for each map in `maps`, folded into `worst`: `x` the
/// inputs and `r` the recorded outputs, both laid out as the batch holds them. Equal values
/// (infinities included) and NaN against NaN count 0, NaN against a number infinite.
/// `round` rounds an output to the recorded precision first (PyTorch rounds half precision
/// outputs), where that is narrower than `T`.
pub fn max_errors<T: Real>(
    x: &[T],
    r: &[T],
    tile: &Tile,
    maps: &[&Affine<T>],
    round: Option<fn(T) -> T>,
    worst: &mut [f64],
) {
    let (cb, seg) = (tile.channels.len(), tile.spatial.len());
    let c0 = tile.channels.start;
    for (k, (xs, rs)) in x.chunks_exact(seg).zip(r.chunks_exact(seg)).enumerate() {
        let ch = c0 + k % cb;
        for (map, w) in maps.iter().zip(worst.iter_mut()) {
            let (a, b) = (map.alpha[ch], map.beta[ch]);
            let e = match round {
                None => run_max_error(xs, rs, |v| v * a + b),
                Some(round) => run_max_error(xs, rs, |v| round(v * a + b)),
            };
            *w = w.max(e);
        }
    }
}

/// Largest error of `f(x)` against `r` over a run (see [`max_errors`]). Branch-free, so
/// it vectorises: a NaN difference (NaN on a side, or equal infinities) is skipped by the
/// maximum, and NaN on exactly one side is flagged apart and counts infinite.
#[inline(always)]
fn run_max_error<T: Real>(xs: &[T], rs: &[T], f: impl Fn(T) -> T) -> f64 {
    let xc = xs.chunks_exact(LANES);
    let rc = rs.chunks_exact(LANES);
    let tail = xc.remainder().iter().zip(rc.remainder());
    let mut m = [T::ZERO; LANES];
    let mut lone_nan = [false; LANES];
    for (x, r) in xc.zip(rc) {
        for i in 0..LANES {
            let y = f(x[i]);
            let d = (y - r[i]).abs();
            m[i] = if d > m[i] { d } else { m[i] };
            lone_nan[i] |= y.is_nan() != r[i].is_nan();
        }
    }
    let mut worst = m.iter().fold(0.0f64, |w, e| w.max(e.widen()));
    let mut lone = lone_nan.iter().any(|&b| b);
    for (&x, &r) in tail {
        let y = f(x);
        let d = (y - r).abs().widen();
        worst = if d > worst { d } else { worst };
        lone |= y.is_nan() != r.is_nan();
    }
    if lone { f64::INFINITY } else { worst }
}

/// Where tiles' values come from: a slice in memory, or a file read tile by tile.
pub trait TileSource<T>: Sync {
    /// Why a tile could not be had.
    type Error: Send;
    /// Per-thread scratch space, reused from tile to tile.
    type Buf: Default + Send;
    /// The values of `range` of the row-major batch, in `buf` or borrowed from the source.
    fn tile<'s>(
        &'s self,
        range: Range<usize>,
        buf: &'s mut Self::Buf,
    ) -> Result<&'s [T], Self::Error>;
}

impl<T: Real> TileSource<T> for [T] {
    type Error = Infallible;
    type Buf = ();
    fn tile<'s>(&'s self, range: Range<usize>, _: &'s mut ()) -> Result<&'s [T], Infallible> {
        Ok(&self[range])
    }
}

/// Groups per thread: enough to balance uneven tiles.
const GROUPS_PER_THREAD: usize = 4;

fn groups(g: &Geometry, chunk: usize) -> Vec<Group> {
    tiles(g, chunk, GROUPS_PER_THREAD * rayon::current_num_threads())
}

/// The moments of every channel of the batch `src` holds, tiles of at most `chunk` values
/// read in parallel, one buffer per thread.
pub fn moments<T: Real, S: TileSource<T> + ?Sized>(
    src: &S,
    g: &Geometry,
    chunk: usize,
) -> Result<Moments, S::Error> {
    let parts = groups(g, chunk)
        .par_iter()
        .map_init(S::Buf::default, |buf, group| {
            let mut m = Moments::new(group.channels.len());
            for t in &group.tiles {
                m.add_tile(src.tile(t.range(g), buf)?, t);
            }
            Ok((group.channels.clone(), m))
        })
        .collect::<Result<Vec<_>, S::Error>>()?;
    // Blocks are in channel order: each is appended and freed in turn, so the parts and the
    // whole are not both held.
    let mut full = Moments {
        count: g.count(),
        mean: Vec::with_capacity(g.channels),
        m2: Vec::with_capacity(g.channels),
        min: Vec::with_capacity(g.channels),
        max: Vec::with_capacity(g.channels),
    };
    let mut parts = parts.into_iter().peekable();
    while let Some((channels, mut m)) = parts.next() {
        while let Some((_, more)) = parts.next_if(|next| next.0 == channels) {
            m.merge(&more);
        }
        full.mean.extend_from_slice(&m.mean);
        full.m2.extend_from_slice(&m.m2);
        full.min.extend_from_slice(&m.min);
        full.max.extend_from_slice(&m.max);
    }
    Ok(full)
}

/// The largest error of each map in `maps` over the batch (inputs from `x`, recorded outputs
/// from `r`, the same geometry), as [`max_errors`] computes it, in parallel tiles.
pub fn errors<T: Real, S: TileSource<T> + ?Sized>(
    x: &S,
    r: &S,
    g: &Geometry,
    chunk: usize,
    maps: &[&Affine<T>],
    round: Option<fn(T) -> T>,
) -> Result<Vec<f64>, S::Error> {
    let worst = groups(g, chunk)
        .par_iter()
        .map_init(
            || (S::Buf::default(), S::Buf::default()),
            |(bx, br), group| {
                let mut worst = vec![0.0f64; maps.len()];
                for t in &group.tiles {
                    let xs = x.tile(t.range(g), bx)?;
                    let rs = r.tile(t.range(g), br)?;
                    max_errors(xs, rs, t, maps, round, &mut worst);
                }
                Ok(worst)
            },
        )
        .collect::<Result<Vec<_>, S::Error>>()?;
    Ok(worst.into_iter().fold(vec![0.0; maps.len()], |mut acc, w| {
        for (a, b) in acc.iter_mut().zip(w) {
            *a = a.max(b);
        }
        acc
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiles_cover_the_batch_once_in_order() {
        for (shape, chunk, groups) in [
            ([4u64, 3, 5], 7usize, 1usize),
            ([4, 3, 5], 40, 4),
            ([2, 1000, 1], 64, 2),
            ([3, 2, 100], 16, 8),
            ([5, 2, 3], 1 << 20, 3),
        ] {
            let g = Geometry::of(&shape).expect("geometry");
            let mut seen = vec![0u8; g.len()];
            for group in tiles(&g, chunk, groups) {
                for t in &group.tiles {
                    assert_eq!(t.channels, group.channels);
                    assert!(t.len() <= chunk.max(g.spatial.min(chunk)));
                    for i in t.range(&g) {
                        seen[i] += 1;
                    }
                }
            }
            assert!(seen.iter().all(|&s| s == 1), "{shape:?} chunk {chunk}");
        }
    }

    #[test]
    fn shapes_that_overflow_or_hold_nothing_are_refused() {
        let huge = 1u64 << 62;
        assert!(matches!(
            Geometry::of(&[0, 6, huge, huge]),
            Err(ForwardError::TooLarge { .. })
        ));
        assert!(matches!(
            Geometry::of(&[2, 0, 3]),
            Err(ForwardError::Empty { .. })
        ));
        assert!(matches!(Geometry::of(&[5]), Err(ForwardError::Rank { .. })));
    }
}
