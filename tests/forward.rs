//! The BatchNorm engine against PyTorch's recorded numbers (tests/fixtures/explain, made by
//! gen.py there): every mode's output, the running statistics train mode leaves, for
//! BatchNorm1d (N×C and N×C×L), 2d (momentum 0.1 and None, affine or not) and 3d.

mod common;

use bnaudit::audit::ls::layer_values;
use bnaudit::bn::{
    self, BatchNorm, BnLayer, Convention, ForwardError, LayerValues, Mode, Momentum, RunningStats,
    UpdateRule,
};
use bnaudit::checkpoint::Checkpoint;
use common::{expected, numbers, open, rel_err};
use ndarray::{ArrayD, Axis};
use serde_json::Value;

fn tensor(ckpt: &Checkpoint, key: &str) -> ArrayD<f32> {
    let t = ckpt.get(key).unwrap_or_else(|| panic!("{key} in fixture"));
    let shape: Vec<usize> = t.shape.iter().map(|&d| d as usize).collect();
    let values = ckpt.values(t).expect("reads").expect("decodes");
    ArrayD::from_shape_vec(shape, values.into_iter().map(|v| v as f32).collect()).expect("shape")
}

fn layer(ckpt: &Checkpoint, name: &str) -> (BnLayer, LayerValues) {
    let l = bn::discover(ckpt.tensors())
        .into_iter()
        .find(|l| l.name == name)
        .unwrap_or_else(|| panic!("layer {name}"));
    let v = layer_values(ckpt, &l).expect("values");
    (l, v)
}

fn running(v: &LayerValues, l: &BnLayer) -> RunningStats {
    RunningStats {
        mean: v.running_mean.clone().expect("mean"),
        var: v.running_var.clone().expect("var"),
        num_batches_tracked: v.num_batches_tracked,
        dtype: l.dtype,
    }
}

/// The layer with A's affine parameters under PyTorch's rule.
fn pytorch(v: &LayerValues, momentum: Momentum) -> BatchNorm<'_> {
    BatchNorm {
        eps: 1e-5,
        weight: v.weight.as_deref(),
        bias: v.bias.as_deref(),
        rule: UpdateRule::new(Convention::Pytorch, momentum),
    }
}

fn momentum(layer: &Value) -> Momentum {
    layer["momentum"]
        .as_f64()
        .map_or(Momentum::Cma, Momentum::Value)
}

fn max_abs_diff(a: &ArrayD<f32>, b: &ArrayD<f32>) -> f64 {
    assert_eq!(a.shape(), b.shape());
    a.iter()
        .zip(b)
        .map(|(x, y)| (f64::from(*x) - f64::from(*y)).abs())
        .fold(0.0, f64::max)
}

fn as_f64(a: &ArrayD<f32>) -> Vec<f64> {
    a.iter().map(|&v| f64::from(v)).collect()
}

#[test]
fn every_mode_matches_pytorch() {
    let (a, b, train, modes) = (
        open("a.safetensors"),
        open("b.safetensors"),
        open("train.safetensors"),
        open("modes.safetensors"),
    );
    let exp = expected();
    let layers = exp["layers"].as_object().expect("layers");
    assert_eq!(layers.len(), 6);
    for (name, e) in layers {
        let (la, va) = layer(&a, name);
        let (lb, vb) = layer(&b, name);
        let x = tensor(&train, &format!("{name}.input.0"));
        let expect = |mode: &str| tensor(&modes, &format!("{name}.{mode}"));
        let bn_a = BatchNorm {
            eps: e["eps"].as_f64().expect("eps"),
            ..pytorch(&va, momentum(e))
        };
        let bn_b = BatchNorm {
            weight: vb.weight.as_deref(),
            bias: vb.bias.as_deref(),
            ..bn_a
        };
        let (stats_a, stats_b) = (running(&va, &la), running(&vb, &lb));

        let mut updated = stats_a.clone();
        let y = bn_a
            .forward(x.view(), Mode::Train(&mut updated))
            .expect("train");
        let err = max_abs_diff(&y, &expect("train"));
        assert!(err <= 1e-5, "{name} train: {err}");
        let m = rel_err(&updated.mean, &as_f64(&expect("train.running_mean")));
        let v = rel_err(&updated.var, &as_f64(&expect("train.running_var")));
        assert!(m <= 1e-6 && v <= 1e-6, "{name} running stats: {m} {v}");
        assert_eq!(
            updated.num_batches_tracked,
            Some(e["num_batches_tracked_a"].as_i64().expect("counter") + 1)
        );

        for (mode, run) in [
            ("train_no_track", bn_a.forward(x.view(), Mode::TrainNoTrack)),
            ("eval_a", bn_a.forward(x.view(), Mode::Eval(&stats_a))),
            ("eval_b", bn_b.forward(x.view(), Mode::Eval(&stats_b))),
            ("eval_no_track", bn_a.forward(x.view(), Mode::EvalNoTrack)),
        ] {
            let err = max_abs_diff(&run.expect(mode), &expect(mode));
            assert!(err <= 1e-5, "{name} {mode}: {err}");
        }
    }
}

#[test]
fn large_batch_on_every_thread_matches_pytorch() {
    // The batch repeated 256 times along N has the same mean and biased variance, so its
    // normalised output is PyTorch's repeated; at 230 400 values it spans several parallel
    // tasks of the engine.
    let (a, train, modes) = (
        open("a.safetensors"),
        open("train.safetensors"),
        open("modes.safetensors"),
    );
    let (_, va) = layer(&a, "backbone.1");
    let x = tensor(&train, "backbone.1.input.0");
    let reps = 256;
    let views = vec![x.view(); reps];
    let big = ndarray::concatenate(Axis(0), &views).expect("same shapes");
    let bn = pytorch(&va, Momentum::Value(0.1));
    let y = bn.forward(big.view(), Mode::TrainNoTrack).expect("forward");
    let expect = tensor(&modes, "backbone.1.train_no_track");
    let expect_views = vec![expect.view(); reps];
    let expect_big = ndarray::concatenate(Axis(0), &expect_views).expect("same shapes");
    let err = max_abs_diff(&y, &expect_big);
    assert!(err <= 1e-5, "{err}");
}

#[test]
fn keras_rule_folds_the_biased_variance() {
    // Keras and Flax fold the biased batch variance; the mean update is PyTorch's.
    let (a, train, modes) = (
        open("a.safetensors"),
        open("train.safetensors"),
        open("modes.safetensors"),
    );
    let exp = expected();
    let (la, va) = layer(&a, "backbone.1");
    let x = tensor(&train, "backbone.1.input.0");
    let bn = BatchNorm {
        rule: UpdateRule::new(Convention::Keras, Momentum::Value(0.1)),
        ..pytorch(&va, Momentum::Value(0.1))
    };
    let mut stats = running(&va, &la);
    stats.num_batches_tracked = None;
    let a_var = stats.var.clone();
    let y = bn
        .forward(x.view(), Mode::Train(&mut stats))
        .expect("train");
    // The output does not depend on how the running variance is updated.
    assert!(max_abs_diff(&y, &tensor(&modes, "backbone.1.train")) <= 1e-5);
    let biased = numbers(&exp["layers"]["backbone.1"]["batches"][0]["var_biased"]);
    let folded: Vec<f64> = a_var
        .iter()
        .zip(&biased)
        .map(|(a, b)| 0.9 * a + 0.1 * b)
        .collect();
    assert!(rel_err(&stats.var, &folded) <= 1e-6);
    let m = rel_err(
        &stats.mean,
        &as_f64(&tensor(&modes, "backbone.1.train.running_mean")),
    );
    assert!(m <= 1e-6, "{m}");
    assert_eq!(stats.num_batches_tracked, None);
}

#[test]
fn one_value_per_channel_is_refused_in_training() {
    let (a, train) = (open("a.safetensors"), open("train.safetensors"));
    let (la, va) = layer(&a, "head.1");
    let x = tensor(&train, "head.1.input.0");
    let one = x.slice_axis(Axis(0), (0..1).into()).to_owned();
    let torch = pytorch(&va, Momentum::Value(0.1));
    let mut stats = running(&va, &la);
    let before = stats.clone();
    for mode in [
        Mode::Train(&mut stats),
        Mode::TrainNoTrack,
        Mode::EvalNoTrack,
    ] {
        assert!(matches!(
            torch.forward(one.view(), mode),
            Err(ForwardError::SingleValue { .. })
        ));
    }
    assert_eq!(stats, before, "a refused forward moves nothing");
    assert!(torch.forward(one.view(), Mode::Eval(&before)).is_ok());
    // Keras normalises a single value to the bias (variance 0).
    let keras = BatchNorm {
        rule: UpdateRule::new(Convention::Keras, Momentum::Value(0.01)),
        ..torch
    };
    let y = keras
        .forward(one.view(), Mode::TrainNoTrack)
        .expect("keras");
    let bias = va.bias.as_deref().expect("bias");
    for (y, b) in y.iter().zip(bias) {
        assert!((f64::from(*y) - b).abs() < 1e-4, "{y} vs {b}");
    }
}

#[test]
fn strided_input_equals_contiguous() {
    let (a, train) = (open("a.safetensors"), open("train.safetensors"));
    let (_, va) = layer(&a, "vol.1");
    let x = tensor(&train, "vol.1.input.0");
    // Channels-last storage seen through a permuted view: same logical tensor.
    let stored = x
        .view()
        .permuted_axes(vec![0, 2, 3, 4, 1])
        .as_standard_layout()
        .to_owned();
    let strided = stored.view().permuted_axes(vec![0, 4, 1, 2, 3]);
    assert!(strided.as_slice().is_none());
    let bn = pytorch(&va, Momentum::Value(0.1));
    assert_eq!(
        bn.forward(strided, Mode::TrainNoTrack).expect("strided"),
        bn.forward(x.view(), Mode::TrainNoTrack)
            .expect("contiguous")
    );
}

#[test]
fn shape_errors() {
    let bn = BatchNorm {
        eps: 1e-5,
        weight: None,
        bias: None,
        rule: UpdateRule::new(Convention::Pytorch, Momentum::Value(0.1)),
    };
    let flat = ArrayD::<f32>::zeros(vec![6]);
    assert!(matches!(
        bn.forward(flat.view(), Mode::TrainNoTrack),
        Err(ForwardError::Rank { rank: 1, .. })
    ));
    let x = ArrayD::<f32>::zeros(vec![4, 3, 2]);
    let stats = RunningStats {
        mean: vec![0.0; 5],
        var: vec![1.0; 5],
        num_batches_tracked: None,
        dtype: bnaudit::checkpoint::Dtype::F32,
    };
    assert!(matches!(
        bn.forward(x.view(), Mode::Eval(&stats)),
        Err(ForwardError::ParamLength {
            expected: 3,
            found: 5,
            ..
        })
    ));
    let empty = ArrayD::<f32>::zeros(vec![0, 3]);
    assert!(matches!(
        bn.forward(empty.view(), Mode::TrainNoTrack),
        Err(ForwardError::Empty { .. })
    ));
}
