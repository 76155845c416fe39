//! Streaming comparison of tensors across two checkpoints: bytes first, numbers only where
//! the bytes differ.
//!
//! Each tensor is cut into chunks of about [`CHUNK_BYTES`]. A chunk whose bytes are equal on
//! both sides is bit-identical (NaN payloads included) and costs one `memcmp`; only chunks
//! that differ are decoded to `f64`. Chunks are read with positioned reads into buffers each
//! worker reuses, so resident memory stays bounded whatever the checkpoints' size, and the
//! workers (one per core) pull chunks from a shared queue. Small tensors are compared in
//! batches taken in A's storage order, so a run of neighbours costs one read per side (a
//! layer's tensors, and a million-tensor checkpoint's, are mostly adjacent).
//!
//! Tensors of different dtypes are compared value by value after rounding the wider one to
//! the narrower dtype: a cast alone is a [`TensorChange::DtypeChanged`], not a change.

use std::ops::Range;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use super::diff::{TensorChange, TensorDiff};
use crate::checkpoint::{Checkpoint, CheckpointError, Dtype, TensorInfo};

/// Bytes compared per chunk (per side): small enough to stay in cache next to its twin,
/// large enough that the per-chunk cost (two reads, one queue step) is negligible.
pub const CHUNK_BYTES: u64 = 1 << 18;

/// Most tensors in one batch: bounds the gaps read along with them (up to
/// [`crate::checkpoint::COALESCE_GAP`] each) to a megabyte.
const BATCH_TENSORS: usize = 256;

/// How far values may differ and still count as equal, as `numpy.isclose`:
/// `|a - b| <= atol + rtol * |b|`. Both zero (the default) means bit-identical.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Tolerance {
    /// Absolute tolerance.
    pub atol: f64,
    /// Relative tolerance, relative to B's value.
    pub rtol: f64,
}

impl Tolerance {
    /// Whether finite values `a` (from A) and `b` (from B) are close; with zero tolerances
    /// only equal values are.
    pub fn close(self, a: f64, b: f64) -> bool {
        (a - b).abs() <= self.atol + self.rtol * b.abs()
    }

    /// The tolerance that applies to values of `dtype`: tolerances absorb floating-point
    /// noise, so integers (a counter of train-mode forwards above all) compare exactly.
    pub fn for_dtype(self, dtype: Dtype) -> Tolerance {
        if dtype.is_float() {
            self
        } else {
            Tolerance::default()
        }
    }
}

/// Two tensors to compare under one (aligned) name; `None` on the side that lacks it.
#[derive(Debug, Clone)]
pub struct TensorPair<'a> {
    /// The aligned name reported.
    pub name: &'a str,
    /// The tensor in A.
    pub a: Option<&'a TensorInfo>,
    /// The tensor in B.
    pub b: Option<&'a TensorInfo>,
}

/// Progress callback: bytes compared so far and the total, both sides counted. Called from
/// the worker threads, often; throttling the display is the callee's business.
pub type Progress<'a> = &'a (dyn Fn(u64, u64) + Sync);

/// Compares every pair, in parallel and streaming, and returns one [`TensorDiff`] per pair
/// in the order given (`bn_layer` left empty: this layer knows no BatchNorm). Fails on the
/// first tensor that cannot be read.
pub fn compare_tensors(
    a: &Checkpoint,
    b: &Checkpoint,
    pairs: &[TensorPair<'_>],
    tolerance: Tolerance,
    progress: Option<Progress<'_>>,
) -> Result<Vec<TensorDiff>, CheckpointError> {
    let plans: Vec<Plan> = pairs.iter().map(Plan::of).collect();
    let tasks = tasks(pairs, &plans);
    let ctx = Ctx {
        a,
        b,
        pairs,
        plans: &plans,
        tolerance,
    };
    let total = tasks.iter().map(|t| ctx.task_bytes(t)).sum();
    let done = AtomicU64::new(0);
    let report = |t: &Task| {
        let now = done.fetch_add(ctx.task_bytes(t), Ordering::Relaxed) + ctx.task_bytes(t);
        if let Some(p) = progress {
            p(now, total);
        }
    };
    let mut accs = vec![Acc::default(); pairs.len()];
    let partials = ctx.run(&tasks, report)?;
    for (t, p) in tasks.iter().zip(partials.iter().flatten()) {
        accs[t.pair].merge(p);
    }
    // ‖A‖₂ is needed only for tensors that changed; their chunks that were bit-identical
    // were not decoded in the first pass.
    let norm_tasks: Vec<Task> = tasks
        .iter()
        .zip(partials.iter().flatten())
        .filter(|(t, p)| accs[t.pair].differs && !p.norm_done && plans[t.pair].numeric())
        .map(|(t, _)| Task {
            norm_only: true,
            ..*t
        })
        .collect();
    drop((tasks, partials));
    let norms = ctx.run(&norm_tasks, |_| {})?;
    for (t, p) in norm_tasks.iter().zip(norms.iter().flatten()) {
        accs[t.pair].sum_sq_a += p.sum_sq_a;
    }
    Ok(pairs
        .iter()
        .zip(&plans)
        .zip(&accs)
        .map(|((pair, plan), acc)| plan.finish(pair, acc))
        .collect())
}

/// The chunk tasks of every pair, in A's storage order so that the tensors of a batch are
/// neighbours in the file.
fn tasks(pairs: &[TensorPair<'_>], plans: &[Plan]) -> Vec<Task> {
    let mut tasks: Vec<Task> = plans
        .iter()
        .enumerate()
        .flat_map(|(i, p)| p.chunks(i, false))
        .collect();
    tasks.sort_by_key(|t| pairs[t.pair].a.map(|a| (a.file, a.start, t.first)));
    tasks
}

/// What comparing one pair takes.
#[derive(Debug, Clone, Copy)]
enum Plan {
    /// Decided from the headers alone.
    Decided(TensorChange),
    /// Same dtype: bytes first.
    Bytes {
        dtype: Dtype,
        elements: u64,
        /// Elements can be told apart (whole bytes each) and decoded.
        numeric: bool,
    },
    /// Different dtypes, both decodable: values, with both rounded to `target`, the
    /// narrower dtype. `bits` is the wider one's width.
    Cast {
        target: Dtype,
        elements: u64,
        bits: u64,
    },
}

impl Plan {
    fn of(pair: &TensorPair<'_>) -> Plan {
        let (a, b) = match (pair.a, pair.b) {
            (Some(a), Some(b)) => (a, b),
            (Some(_), None) => return Plan::Decided(TensorChange::Removed),
            (None, _) => return Plan::Decided(TensorChange::Added),
        };
        if a.shape != b.shape {
            return Plan::Decided(TensorChange::ShapeChanged);
        }
        if a.dtype == b.dtype {
            return Plan::Bytes {
                dtype: a.dtype,
                elements: a.elements(),
                numeric: a.dtype.is_decodable() && a.dtype.bits() % 8 == 0,
            };
        }
        if !(a.dtype.is_decodable() && b.dtype.is_decodable()) {
            // No common values to compare: the dtype changed and nothing more can be said.
            return Plan::Decided(TensorChange::Changed);
        }
        // Round to the narrower dtype; at equal width (F16 vs BF16) to B's, the one saved.
        let target = if a.dtype.bits() < b.dtype.bits() {
            a.dtype
        } else {
            b.dtype
        };
        Plan::Cast {
            target,
            elements: a.elements(),
            bits: a.dtype.bits().max(b.dtype.bits()),
        }
    }

    /// Elements compared; 0 when decided from the headers.
    fn elements(&self) -> u64 {
        match *self {
            Plan::Decided(_) => 0,
            Plan::Bytes { elements, .. } | Plan::Cast { elements, .. } => elements,
        }
    }

    fn numeric(&self) -> bool {
        matches!(self, Plan::Bytes { numeric: true, .. } | Plan::Cast { .. })
    }

    /// The chunk tasks of pair `pair`.
    fn chunks(&self, pair: usize, norm_only: bool) -> Vec<Task> {
        let (elements, bits) = match *self {
            Plan::Decided(_) => return Vec::new(),
            Plan::Bytes {
                dtype, elements, ..
            } => (elements, dtype.bits()),
            Plan::Cast { elements, bits, .. } => (elements, bits),
        };
        // A multiple of 8 elements starts every chunk on a byte boundary, sub-byte dtypes too.
        let per_chunk = ((CHUNK_BYTES * 8 / bits) / 8 * 8).max(8);
        (0..elements.div_ceil(per_chunk))
            .map(|i| Task {
                pair,
                first: i * per_chunk,
                count: per_chunk.min(elements - i * per_chunk),
                norm_only,
            })
            .collect()
    }

    fn finish(&self, pair: &TensorPair<'_>, acc: &Acc) -> TensorDiff {
        let mut d = TensorDiff {
            name: pair.name.to_owned(),
            bn_layer: None,
            change: TensorChange::Unchanged,
            dtype_a: pair.a.map(|t| t.dtype),
            dtype_b: pair.b.map(|t| t.dtype),
            shape_a: pair.a.map(|t| t.shape.clone()),
            shape_b: pair.b.map(|t| t.shape.clone()),
            changed_elements: None,
            nonfinite_changed: None,
            max_abs_diff: None,
            rel_l2: None,
        };
        match *self {
            Plan::Decided(change) => d.change = change,
            Plan::Bytes { numeric: false, .. } if acc.differs => d.change = TensorChange::Changed,
            Plan::Bytes { .. } | Plan::Cast { .. } => {
                let cast = matches!(self, Plan::Cast { .. });
                d.change = match (acc.changed > 0, cast) {
                    (true, _) => TensorChange::Changed,
                    (false, true) => TensorChange::DtypeChanged,
                    (false, false) => TensorChange::Unchanged,
                };
                d.changed_elements = Some(acc.changed);
                d.nonfinite_changed = Some(acc.nonfinite);
                d.max_abs_diff = Some(acc.max_abs);
                d.rel_l2 = match (acc.sum_sq_diff, acc.sum_sq_a) {
                    (0.0, _) => Some(0.0),
                    // Relative to nothing: undefined rather than infinite.
                    (_, 0.0) => None,
                    (diff, norm) => Some((diff / norm).sqrt()),
                };
            }
        }
        d
    }
}

/// Elements `first..first + count` of pair `pair`.
#[derive(Debug, Clone, Copy)]
struct Task {
    pair: usize,
    first: u64,
    count: u64,
    /// Only sum the squares of A's values (second pass over chunks that were identical).
    norm_only: bool,
}

/// What a comparison shares across workers.
struct Ctx<'a> {
    a: &'a Checkpoint,
    b: &'a Checkpoint,
    pairs: &'a [TensorPair<'a>],
    plans: &'a [Plan],
    tolerance: Tolerance,
}

impl Ctx<'_> {
    /// Compares `tasks` on every core, in batches; one [`Acc`] per task, in order, held per
    /// batch (flattening would copy a million of them). `done` is told of each task compared.
    fn run(
        &self,
        tasks: &[Task],
        done: impl Fn(&Task) + Sync,
    ) -> Result<Vec<Vec<Acc>>, CheckpointError> {
        let batches = self.batches(tasks);
        run_pool(&batches, |w, r| {
            let accs = w.compare(self, &tasks[r.clone()])?;
            tasks[r.clone()].iter().for_each(&done);
            Ok(accs)
        })
    }

    /// Consecutive tasks taken together: whole tensors, up to [`BATCH_TENSORS`] of them and
    /// a chunk's worth of bytes per side; a chunk of a larger tensor goes alone.
    fn batches(&self, tasks: &[Task]) -> Vec<Range<usize>> {
        let mut out = Vec::new();
        let (mut start, mut bytes) = (0, 0);
        for (i, t) in tasks.iter().enumerate() {
            let b = self.task_bytes(t);
            let joins = self.whole(t)
                && self.whole(&tasks[start])
                && i - start < BATCH_TENSORS
                && bytes + b <= 2 * CHUNK_BYTES;
            if i > start && !joins {
                out.push(start..i);
                (start, bytes) = (i, 0);
            }
            bytes += b;
        }
        if start < tasks.len() {
            out.push(start..tasks.len());
        }
        out
    }

    /// Whether the task covers its tensor whole.
    fn whole(&self, task: &Task) -> bool {
        task.first == 0 && task.count == self.plans[task.pair].elements()
    }

    /// The task's two tensors; tasks exist only for pairs with both.
    fn sides(&self, task: &Task) -> (&TensorInfo, &TensorInfo) {
        let pair = &self.pairs[task.pair];
        match (pair.a, pair.b) {
            (Some(a), Some(b)) => (a, b),
            _ => unreachable!("a pair missing a side is decided from the headers"),
        }
    }

    /// Byte range of the task's elements in tensor `t`.
    fn range(t: &TensorInfo, task: &Task) -> (u64, u64) {
        let bits = t.dtype.bits();
        let start = task.first * bits / 8;
        let end = t.dtype.byte_len(task.first + task.count).unwrap_or(t.bytes);
        (start, end.min(t.bytes) - start)
    }

    fn task_bytes(&self, task: &Task) -> u64 {
        let pair = &self.pairs[task.pair];
        [pair.a, pair.b]
            .into_iter()
            .flatten()
            .map(|t| Ctx::range(t, task).1)
            .sum()
    }
}

/// Partial results of a chunk, merged per tensor.
#[derive(Debug, Clone, Copy, Default)]
struct Acc {
    /// Some bytes (same dtype) or rounded values (cast) differ.
    differs: bool,
    /// Elements that differ beyond the tolerance.
    changed: u64,
    /// Of those, elements where either value is NaN or infinite.
    nonfinite: u64,
    /// Largest `|b - a|` over elements that differ with both values finite.
    max_abs: f64,
    /// `Σ (b - a)²` over the same elements.
    sum_sq_diff: f64,
    /// `Σ a²` over A's finite values of the chunk, when `norm_done`.
    sum_sq_a: f64,
    /// The chunk's values were decoded and `sum_sq_a` holds its part of ‖A‖².
    norm_done: bool,
}

impl Acc {
    fn merge(&mut self, o: &Acc) {
        self.differs |= o.differs;
        self.changed += o.changed;
        self.nonfinite += o.nonfinite;
        self.max_abs = self.max_abs.max(o.max_abs);
        self.sum_sq_diff += o.sum_sq_diff;
        self.sum_sq_a += o.sum_sq_a;
    }

    /// Records a pair of values whose bits differ.
    fn differing(&mut self, x: f64, y: f64, tolerance: Tolerance) {
        self.differs = true;
        if x.is_finite() && y.is_finite() {
            let d = (y - x).abs();
            self.max_abs = self.max_abs.max(d);
            self.sum_sq_diff += d * d;
            if !tolerance.close(x, y) {
                self.changed += 1;
            }
        } else {
            self.changed += 1;
            self.nonfinite += 1;
        }
    }
}

fn sum_sq_finite(values: &[f64]) -> f64 {
    values.iter().filter(|v| v.is_finite()).map(|v| v * v).sum()
}

/// One worker's reusable buffers.
#[derive(Default)]
struct Worker {
    bytes_a: Vec<u8>,
    bytes_b: Vec<u8>,
    values_a: Vec<f64>,
    values_b: Vec<f64>,
}

impl Worker {
    /// Compares a batch of tasks (see [`Ctx::batches`]): one read per side for a single
    /// chunk, else one per run of adjacent tensors.
    fn compare(&mut self, ctx: &Ctx<'_>, tasks: &[Task]) -> Result<Vec<Acc>, CheckpointError> {
        let mut a = std::mem::take(&mut self.bytes_a);
        let mut b = std::mem::take(&mut self.bytes_b);
        let norm_only = tasks.iter().all(|t| t.norm_only);
        let ranges = if let [task] = tasks {
            let (ta, tb) = ctx.sides(task);
            let ra = read(ctx.a, ta, task, &mut a)?;
            let rb = if norm_only {
                0..0
            } else {
                read(ctx.b, tb, task, &mut b)?
            };
            vec![(ra, rb)]
        } else {
            let (ta, tb): (Vec<_>, Vec<_>) = tasks.iter().map(|t| ctx.sides(t)).unzip();
            let ra = ctx.a.read_many_into(&ta, &mut a)?;
            let rb = if norm_only {
                vec![0..0; tasks.len()]
            } else {
                ctx.b.read_many_into(&tb, &mut b)?
            };
            ra.into_iter().zip(rb).collect()
        };
        let accs = tasks
            .iter()
            .zip(ranges)
            .map(|(t, (ra, rb))| self.judge(ctx, t, &a[ra], &b[rb]))
            .collect();
        (self.bytes_a, self.bytes_b) = (a, b);
        Ok(accs)
    }

    /// Compares one task's bytes `a` (from A) and `b` (from B; empty for `norm_only`).
    fn judge(&mut self, ctx: &Ctx<'_>, task: &Task, a: &[u8], b: &[u8]) -> Acc {
        let (ta, tb) = ctx.sides(task);
        let mut acc = Acc::default();
        if task.norm_only {
            self.values_a.clear();
            ta.dtype.decode_into(a, &mut self.values_a);
            acc.sum_sq_a = sum_sq_finite(&self.values_a);
            return acc;
        }
        match ctx.plans[task.pair] {
            Plan::Decided(_) => {}
            Plan::Bytes { dtype, numeric, .. } => {
                if a == b {
                    return acc;
                }
                acc.differs = true;
                if numeric {
                    self.bytes_differ(a, b, dtype, ctx.tolerance.for_dtype(dtype), &mut acc);
                }
            }
            Plan::Cast { target, .. } => {
                self.decode(a, b, ta.dtype, tb.dtype);
                self.values_differ(target, ctx.tolerance.for_dtype(target), &mut acc)
            }
        }
        acc
    }

    /// Same dtype, chunk bytes differ: decode both and compare element by element, bits
    /// first.
    fn bytes_differ(
        &mut self,
        a: &[u8],
        b: &[u8],
        dtype: Dtype,
        tolerance: Tolerance,
        acc: &mut Acc,
    ) {
        self.decode(a, b, dtype, dtype);
        let width = (dtype.bits() / 8) as usize;
        let elements = a.chunks_exact(width).zip(b.chunks_exact(width));
        for ((ea, eb), (&x, &y)) in elements.zip(self.values_a.iter().zip(&self.values_b)) {
            if ea != eb {
                acc.differing(x, y, tolerance);
            }
        }
        acc.sum_sq_a = sum_sq_finite(&self.values_a);
        acc.norm_done = true;
    }

    /// Different dtypes, values decoded: round both to `target` and compare them.
    fn values_differ(&mut self, target: Dtype, tolerance: Tolerance, acc: &mut Acc) {
        for (x, y) in self.values_a.iter_mut().zip(&mut self.values_b) {
            *x = target.round_f64(*x);
            *y = target.round_f64(*y);
            // A cast keeps NaN but not necessarily its payload.
            if x.to_bits() != y.to_bits() && !(x.is_nan() && y.is_nan()) {
                acc.differing(*x, *y, tolerance);
            }
        }
        acc.sum_sq_a = sum_sq_finite(&self.values_a);
        acc.norm_done = true;
    }

    fn decode(&mut self, a: &[u8], b: &[u8], da: Dtype, db: Dtype) {
        self.values_a.clear();
        self.values_b.clear();
        da.decode_into(a, &mut self.values_a);
        db.decode_into(b, &mut self.values_b);
    }
}

/// Reads the task's bytes of tensor `t` into `buf`; their range in it.
fn read(
    ckpt: &Checkpoint,
    t: &TensorInfo,
    task: &Task,
    buf: &mut Vec<u8>,
) -> Result<Range<usize>, CheckpointError> {
    let (offset, len) = Ctx::range(t, task);
    buf.resize(len as usize, 0);
    ckpt.read_into(t, offset, buf)?;
    Ok(0..buf.len())
}

/// Runs `work` over `tasks` on one thread per core (as many as rayon's pool has), returning
/// results in task order. Stops at the first error.
fn run_pool<T: Sync, R: Send + Default + Clone>(
    tasks: &[T],
    work: impl Fn(&mut Worker, &T) -> Result<R, CheckpointError> + Sync,
) -> Result<Vec<R>, CheckpointError> {
    // Rayon's count, read once per process: `available_parallelism` reads cgroup files on
    // every call, and the thread count the rest of bnaudit runs on is the one to match.
    let threads = rayon::current_num_threads().min(tasks.len());
    if threads <= 1 {
        // One batch (most small checkpoints) or one core: a thread costs more than the work.
        let mut worker = Worker::default();
        return tasks.iter().map(|t| work(&mut worker, t)).collect();
    }
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let error = Mutex::new(None);
    let results = Mutex::new(vec![R::default(); tasks.len()]);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                let mut worker = Worker::default();
                let mut mine = Vec::new();
                while !failed.load(Ordering::Relaxed) {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(task) = tasks.get(i) else { break };
                    match work(&mut worker, task) {
                        Ok(r) => mine.push((i, r)),
                        Err(e) => {
                            failed.store(true, Ordering::Relaxed);
                            error
                                .lock()
                                .expect("no panics under the lock")
                                .get_or_insert(e);
                        }
                    }
                }
                let mut results = results.lock().expect("no panics under the lock");
                for (i, r) in mine {
                    results[i] = r;
                }
            });
        }
    });
    match error.into_inner().expect("no panics under the lock") {
        Some(e) => Err(e),
        None => Ok(results.into_inner().expect("no panics under the lock")),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Mutex;

    use super::*;
    use crate::checkpoint::ReadMode;

    /// Writes a safetensors file of `tensors` (name, dtype, shape, little-endian bytes).
    fn write(dir: &Path, file: &str, tensors: &[(&str, Dtype, Vec<u64>, Vec<u8>)]) -> Checkpoint {
        let mut header = serde_json::Map::new();
        let mut data = Vec::new();
        for (name, dtype, shape, bytes) in tensors {
            let start = data.len();
            data.extend_from_slice(bytes);
            header.insert(
                (*name).to_owned(),
                serde_json::json!({"dtype": dtype.as_str(), "shape": shape, "data_offsets": [start, data.len()]}),
            );
        }
        let header = serde_json::to_vec(&header).expect("json");
        let mut out = (header.len() as u64).to_le_bytes().to_vec();
        out.extend(header);
        out.extend(data);
        let path = dir.join(file);
        std::fs::write(&path, out).expect("write");
        Checkpoint::open(&path, ReadMode::Mmap).expect("open")
    }

    fn f32s(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    fn f16s(v: &[f32]) -> Vec<u8> {
        v.iter()
            .flat_map(|x| half::f16::from_f32(*x).to_le_bytes())
            .collect()
    }

    fn compare_all(a: &Checkpoint, b: &Checkpoint, tolerance: Tolerance) -> Vec<TensorDiff> {
        let names: std::collections::BTreeSet<&str> = a
            .tensors()
            .iter()
            .chain(b.tensors())
            .map(|t| t.name.as_str())
            .collect();
        let pairs: Vec<TensorPair<'_>> = names
            .into_iter()
            .map(|n| TensorPair {
                name: n,
                a: a.get(n),
                b: b.get(n),
            })
            .collect();
        compare_tensors(a, b, &pairs, tolerance, None).expect("compare")
    }

    #[test]
    fn nan_payloads_count_as_bits() {
        let dir = tempfile::tempdir().expect("tempdir");
        let nan1 = f32::from_bits(0x7fc0_0000);
        let nan2 = f32::from_bits(0x7fc0_0001);
        let a = write(
            dir.path(),
            "a",
            &[
                ("same", Dtype::F32, vec![2], f32s(&[1.0, nan1])),
                ("payload", Dtype::F32, vec![2], f32s(&[1.0, nan1])),
            ],
        );
        let b = write(
            dir.path(),
            "b",
            &[
                ("same", Dtype::F32, vec![2], f32s(&[1.0, nan1])),
                ("payload", Dtype::F32, vec![2], f32s(&[1.0, nan2])),
            ],
        );
        let d = compare_all(&a, &b, Tolerance::default());
        let payload = &d[0];
        assert_eq!(
            (payload.name.as_str(), payload.change),
            ("payload", TensorChange::Changed)
        );
        assert_eq!(payload.changed_elements, Some(1));
        assert_eq!(payload.nonfinite_changed, Some(1));
        assert_eq!(payload.max_abs_diff, Some(0.0));
        assert_eq!(d[1].change, TensorChange::Unchanged);
    }

    /// A tensor over several chunks with changes in the second: only that chunk differs,
    /// and ‖A‖ still covers the whole tensor.
    #[test]
    fn chunks_and_norms() {
        let dir = tempfile::tempdir().expect("tempdir");
        let n = 600_000usize;
        let av: Vec<f32> = (0..n)
            .map(|i| ((i % 1000) as f32 - 500.0) / 250.0)
            .collect();
        let mut bv = av.clone();
        for (i, delta) in [(300_000usize, 0.5f32), (300_001, -0.25), (400_000, 2.0)] {
            bv[i] += delta;
        }
        let a = write(
            dir.path(),
            "a",
            &[("w", Dtype::F32, vec![n as u64], f32s(&av))],
        );
        let b = write(
            dir.path(),
            "b",
            &[("w", Dtype::F32, vec![n as u64], f32s(&bv))],
        );
        let calls = Mutex::new(Vec::new());
        let progress = |done, total| calls.lock().expect("lock").push((done, total));
        let pairs = [TensorPair {
            name: "w",
            a: a.get("w"),
            b: b.get("w"),
        }];
        let d = compare_tensors(&a, &b, &pairs, Tolerance::default(), Some(&progress))
            .expect("compare");
        let diff_sq: f64 = av
            .iter()
            .zip(&bv)
            .map(|(x, y)| (f64::from(*y) - f64::from(*x)).powi(2))
            .sum();
        let norm_sq: f64 = av.iter().map(|x| f64::from(*x).powi(2)).sum();
        assert_eq!(d[0].change, TensorChange::Changed);
        assert_eq!(d[0].changed_elements, Some(3));
        assert_eq!(d[0].max_abs_diff, Some(2.0));
        let rel = d[0].rel_l2.expect("rel_l2");
        assert!((rel - (diff_sq / norm_sq).sqrt()).abs() < 1e-12 * rel);
        let calls = calls.into_inner().expect("lock");
        let total = 2 * 4 * n as u64;
        assert!(calls.iter().all(|&(_, t)| t == total));
        assert_eq!(calls.iter().map(|c| c.0).max(), Some(total));
    }

    /// Hundreds of small tensors stored in opposite orders in A and B (and a gap in B) are
    /// read in batches of neighbours and still each compared with its own twin.
    #[test]
    fn small_tensors_are_compared_in_batches_in_any_storage_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let n = 600;
        let names: Vec<String> = (0..n).map(|i| format!("t{i:03}")).collect();
        let name = |i: usize| names[i].as_str();
        let values = |shift: f32| f32s(&[0.5, -0.5, 0.25 + shift, 2.0 + shift]);
        let big = f32s(&(0..100_000).map(|i| i as f32).collect::<Vec<_>>());
        let mut in_a: Vec<_> = (0..n)
            .map(|i| (name(i), Dtype::F32, vec![4], values(0.0)))
            .collect();
        in_a.push(("w", Dtype::F32, vec![100_000], big.clone()));
        let changed = |i: usize| i.is_multiple_of(7);
        let mut in_b: Vec<_> = (0..n)
            .rev()
            .map(|i| {
                let shift = if changed(i) { (i + 1) as f32 } else { 0.0 };
                (name(i), Dtype::F32, vec![4], values(shift))
            })
            .collect();
        in_b.insert(n / 2, ("pad", Dtype::U8, vec![65_536], vec![7; 65_536]));
        in_b.push(("w", Dtype::F32, vec![100_000], big));
        let a = write(dir.path(), "a", &in_a);
        let b = write(dir.path(), "b", &in_b);
        let d = compare_all(&a, &b, Tolerance::default());
        let by_name: std::collections::HashMap<&str, &TensorDiff> =
            d.iter().map(|t| (t.name.as_str(), t)).collect();
        for i in 0..n {
            let t = by_name[name(i)];
            if changed(i) {
                assert_eq!(t.change, TensorChange::Changed, "{}", t.name);
                assert_eq!(t.changed_elements, Some(2), "{}", t.name);
                assert_eq!(t.max_abs_diff, Some((i + 1) as f64), "{}", t.name);
            } else {
                assert_eq!(t.change, TensorChange::Unchanged, "{}", t.name);
            }
        }
        assert_eq!(by_name["w"].change, TensorChange::Unchanged);
        assert_eq!(by_name["pad"].change, TensorChange::Added);

        // Whole small tensors share batches; each chunk of `w` goes alone.
        let names: Vec<&str> = by_name.keys().copied().collect();
        let pairs: Vec<TensorPair<'_>> = names
            .iter()
            .map(|&n| TensorPair {
                name: n,
                a: a.get(n),
                b: b.get(n),
            })
            .collect();
        let plans: Vec<Plan> = pairs.iter().map(Plan::of).collect();
        let ctx = Ctx {
            a: &a,
            b: &b,
            pairs: &pairs,
            plans: &plans,
            tolerance: Tolerance::default(),
        };
        let sizes: Vec<usize> = ctx
            .batches(&tasks(&pairs, &plans))
            .iter()
            .map(|r| r.len())
            .collect();
        assert_eq!(
            sizes,
            [BATCH_TENSORS, BATCH_TENSORS, n - 2 * BATCH_TENSORS, 1, 1]
        );
    }

    #[test]
    fn a_cast_alone_is_a_dtype_change() {
        let dir = tempfile::tempdir().expect("tempdir");
        let v = [0.1f32, 1.0 / 3.0, -65504.0, 1e-8];
        let mut w = v;
        w[1] = 0.3;
        let a = write(
            dir.path(),
            "a",
            &[
                ("same", Dtype::F32, vec![4], f32s(&v)),
                ("moved", Dtype::F32, vec![4], f32s(&v)),
            ],
        );
        let b = write(
            dir.path(),
            "b",
            &[
                ("same", Dtype::F16, vec![4], f16s(&v)),
                ("moved", Dtype::F16, vec![4], f16s(&w)),
            ],
        );
        let d = compare_all(&a, &b, Tolerance::default());
        assert_eq!(
            (d[1].name.as_str(), d[1].change),
            ("same", TensorChange::DtypeChanged)
        );
        assert_eq!(d[1].changed_elements, Some(0));
        assert_eq!(d[0].change, TensorChange::Changed);
        assert_eq!(d[0].changed_elements, Some(1));
        let expected =
            (half::f16::from_f32(0.3).to_f64() - half::f16::from_f32(1.0 / 3.0).to_f64()).abs();
        assert_eq!(d[0].max_abs_diff, Some(expected));
    }

    #[test]
    fn tolerance_is_numpy_isclose() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = write(
            dir.path(),
            "a",
            &[("w", Dtype::F32, vec![3], f32s(&[1.0, 2.0, 100.0]))],
        );
        let b = write(
            dir.path(),
            "b",
            &[("w", Dtype::F32, vec![3], f32s(&[1.000_001, 2.5, 101.0]))],
        );
        let loose = |atol, rtol| compare_all(&a, &b, Tolerance { atol, rtol }).remove(0);
        assert_eq!(loose(0.0, 0.0).changed_elements, Some(3));
        // |a-b| <= atol + rtol·|b|: 1e-6 passes atol 1e-5; 1.0 passes rtol 0.01 (·101).
        assert_eq!(loose(1e-5, 0.01).changed_elements, Some(1));
        let close = loose(0.5, 0.01);
        assert_eq!(close.change, TensorChange::Unchanged);
        assert_eq!(close.max_abs_diff, Some(1.0));
    }

    #[test]
    fn tolerance_never_hides_a_counter_change() {
        let dir = tempfile::tempdir().expect("tempdir");
        let counter = |n: i64| {
            (
                "bn.num_batches_tracked",
                Dtype::I64,
                vec![],
                n.to_le_bytes().to_vec(),
            )
        };
        let a = write(dir.path(), "a", &[counter(10)]);
        let b = write(dir.path(), "b", &[counter(11)]);
        let d = compare_all(
            &a,
            &b,
            Tolerance {
                atol: 1.0,
                rtol: 0.5,
            },
        )
        .remove(0);
        assert_eq!(d.change, TensorChange::Changed);
        assert_eq!(d.changed_elements, Some(1));
    }

    #[test]
    fn decided_from_headers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = write(
            dir.path(),
            "a",
            &[
                ("gone", Dtype::F32, vec![1], f32s(&[1.0])),
                ("reshaped", Dtype::F32, vec![2], f32s(&[1.0, 2.0])),
                ("sub_byte", Dtype::F4, vec![4], vec![0x12, 0x34]),
            ],
        );
        let b = write(
            dir.path(),
            "b",
            &[
                ("new", Dtype::I64, vec![], 5i64.to_le_bytes().to_vec()),
                ("reshaped", Dtype::F32, vec![1, 2], f32s(&[1.0, 2.0])),
                ("sub_byte", Dtype::F4, vec![4], vec![0x12, 0x35]),
            ],
        );
        let d = compare_all(&a, &b, Tolerance::default());
        let changes: Vec<(&str, TensorChange)> =
            d.iter().map(|t| (t.name.as_str(), t.change)).collect();
        assert_eq!(
            changes,
            [
                ("gone", TensorChange::Removed),
                ("new", TensorChange::Added),
                ("reshaped", TensorChange::ShapeChanged),
                ("sub_byte", TensorChange::Changed),
            ]
        );
        assert_eq!(d[3].changed_elements, None);
    }
}
