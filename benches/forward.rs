//! Train-mode BatchNorm forward on a 64×256×56×56 f32 batch (~200 MB), the size of a
//! ResNet stage-1 activation: the engine must run at memory speed. Compare with PyTorch by
//! `benches/compare.sh` (which also runs `benches/torch_batch_norm.py`).
//!
//! Run: `cargo bench --bench forward` (env `BENCH_ITERS`, default 15; `BENCH_SHAPE`, e.g.
//! `64,256,56,56`).

use std::time::{Duration, Instant};

use bnaudit::bn::{BatchNorm, Convention, Mode, Momentum, RunningStats, UpdateRule};
use bnaudit::checkpoint::Dtype;
use ndarray::ArrayD;
use rand::SeedableRng;
use rand_distr::{Distribution, Normal};

/// Median and minimum: on a shared machine the minimum is the least disturbed run.
fn summary(mut v: Vec<Duration>) -> (f64, f64) {
    v.sort();
    (v[v.len() / 2].as_secs_f64() * 1e3, v[0].as_secs_f64() * 1e3)
}

fn main() {
    let shape: Vec<usize> = std::env::var("BENCH_SHAPE")
        .unwrap_or_else(|_| "64,256,56,56".to_owned())
        .split(',')
        .map(|s| {
            s.trim()
                .parse()
                .expect("BENCH_SHAPE is a comma-separated shape")
        })
        .collect();
    let iters: usize = std::env::var("BENCH_ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(15);
    let len: usize = shape.iter().product();
    let c = shape[1];
    let mut rng = rand_pcg::Pcg64Mcg::seed_from_u64(7);
    let normal = Normal::new(0.5f32, 2.0).expect("valid normal");
    let x = ArrayD::from_shape_vec(
        shape.clone(),
        (0..len).map(|_| normal.sample(&mut rng)).collect(),
    )
    .expect("shape matches");
    let weight = vec![1.5; c];
    let bias = vec![0.25; c];
    let bn = BatchNorm {
        eps: 1e-5,
        weight: Some(&weight),
        bias: Some(&bias),
        rule: UpdateRule::new(Convention::Pytorch, Momentum::Value(0.1)),
    };
    let mut running = RunningStats {
        mean: vec![0.0; c],
        var: vec![1.0; c],
        num_batches_tracked: Some(0),
        dtype: Dtype::F32,
    };
    let mb = (len * 4) as f64 / 1e6;
    println!(
        "shape {shape:?} f32, {mb:.0} MB, {} threads, {iters} iterations",
        rayon::current_num_threads()
    );

    // Allocating a fresh output each time, as torch.nn.functional.batch_norm does.
    let mut times = Vec::new();
    for _ in 0..iters {
        let t = Instant::now();
        let y = bn
            .forward(x.view(), Mode::Train(&mut running))
            .expect("valid input");
        times.push(t.elapsed());
        std::hint::black_box(y);
    }
    let (alloc, alloc_min) = summary(times);
    println!(
        "forward (allocating output): median {alloc:.2} ms, min {alloc_min:.2} ms, {:.1} GB/s of input at the median",
        mb / alloc
    );

    let mut out = vec![0f32; len];
    let data = x.as_slice().expect("standard layout");
    let mut times = Vec::new();
    for _ in 0..iters {
        let t = Instant::now();
        bn.forward_into(&shape, data, &mut out, Mode::Train(&mut running))
            .expect("valid input");
        times.push(t.elapsed());
        std::hint::black_box(&out);
    }
    let (into, into_min) = summary(times);
    println!(
        "forward_into (reused output): median {into:.2} ms, min {into_min:.2} ms, {:.1} GB/s of input at the median",
        mb / into
    );
    println!("median_ms={alloc:.3}");
    println!("min_ms={alloc_min:.3}");
}
