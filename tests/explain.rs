//! `bnaudit explain` against PyTorch's recordings (tests/fixtures/explain, made by gen.py
//! with the capture plugin): replay, best mode, implied batch statistics, and the errors.

mod common;
mod writer;

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use bnaudit::audit::explain::{ExplainLayer, ExplainReport, Inputs, ModeName, Source};
use bnaudit::audit::{ExplainOptions, explain};
use bnaudit::bn::Momentum;
use bnaudit::checkpoint::{Checkpoint, ReadMode};
use common::{expected, numbers, open, path, rel_err};
use predicates::prelude::*;
use serde_json::{Value, json};
use writer::SafetensorsWriter;

fn run(b: &str, acts: Option<&str>, options: &ExplainOptions) -> ExplainReport {
    let acts = acts.map(open);
    explain(&open("a.safetensors"), &open(b), acts.as_ref(), options).expect("explains")
}

fn mode(l: &ExplainLayer, m: ModeName) -> &bnaudit::audit::explain::ModeResult {
    l.modes.iter().find(|r| r.mode == m).expect("every mode")
}

#[test]
fn captured_train_forwards_account_for_b() {
    let report = run(
        "b.safetensors",
        Some("train.safetensors"),
        &ExplainOptions::default(),
    );
    let exp = expected();
    assert_eq!(report.layers.len(), 6);
    for l in &report.layers {
        let e = &exp["layers"][&l.name];
        let r = l.replay.as_ref().expect("replay");
        assert_eq!(r.batches, 3, "{}", l.name);
        assert!(r.explains_b, "{}: {r:?}", l.name);
        assert!(
            r.max_rel_err_mean <= 1e-6 && r.max_rel_err_var <= 1e-6,
            "{}: {r:?}",
            l.name
        );
        assert_eq!(r.nbt_replayed, l.nbt_b);
        assert_eq!(l.best_mode, Some(ModeName::Train), "{}", l.name);
        assert_eq!(l.reproduced, Some(true));
        for m in [
            ModeName::Train,
            ModeName::TrainNoTrack,
            ModeName::EvalNoTrack,
        ] {
            let err = mode(l, m).max_abs_err.expect("recorded outputs");
            assert!(err <= 1e-5, "{} {m:?}: {err}", l.name);
        }
        assert!(mode(l, ModeName::EvalA).max_abs_err.expect("err") > 1e-2);
        // Settings come from the capture's metadata.
        assert_eq!(l.momentum_source, Source::Activations);
        assert_eq!(l.eps_source, Source::Activations);
        let m = e["momentum"]
            .as_f64()
            .map_or(Momentum::Cma, Momentum::Value);
        assert_eq!(l.momentum, m);
        assert!(
            l.verdict
                .starts_with("The 3 captured train-mode forwards account for B exactly")
        );
        assert!(matches!(
            l.inputs,
            Inputs::Captured {
                forwards: 3,
                train_forwards: 3,
                with_outputs: 3,
                statistics_only: 0
            }
        ));
    }
}

#[test]
fn forwards_that_did_not_run_do_not_account_for_b() {
    // b1 holds the statistics after the first forward only.
    let report = run(
        "b1.safetensors",
        Some("train.safetensors"),
        &ExplainOptions::default(),
    );
    for l in &report.layers {
        let r = l.replay.as_ref().expect("replay");
        assert!(!r.explains_b, "{}", l.name);
        // The counter moved by 1, the capture holds 3: the replay overshoots.
        assert!(
            l.verdict.starts_with(
                "The capture holds 3 train-mode forwards but the counter moved by only 1"
            ),
            "{}",
            l.verdict
        );
    }
    // A wrong momentum does not replay to B either.
    let options = ExplainOptions {
        momentum: Some(Momentum::Value(0.2)),
        ..ExplainOptions::default()
    };
    let report = run("b.safetensors", Some("train.safetensors"), &options);
    let l = &report.layers[0];
    assert_eq!(l.momentum_source, Source::Option);
    assert!(!l.replay.as_ref().expect("replay").explains_b);
    assert!(
        l.verdict
            .contains("do not account for B: something else changed"),
        "{}",
        l.verdict
    );
}

#[test]
fn eval_capture_after_drift_is_eval_with_b() {
    let report = run(
        "b.safetensors",
        Some("eval.safetensors"),
        &ExplainOptions::default(),
    );
    assert_eq!(report.layers.len(), 6);
    for l in &report.layers {
        assert_eq!(l.best_mode, Some(ModeName::EvalB), "{}", l.name);
        assert_eq!(l.reproduced, Some(true));
        assert!(mode(l, ModeName::EvalB).max_abs_err.expect("err") <= 1e-5);
        assert!(mode(l, ModeName::Train).max_abs_err.expect("err") > 1e-2);
        assert_eq!(l.replay.as_ref().expect("replay").batches, 0);
        assert!(l.verdict.contains("eval mode with B's statistics"));
    }
}

/// Every drifted layer explained without activations; a checkpoint does not say which
/// layers had momentum=None, so those are named with `--momentum cma`.
fn implied_layers(b: &str) -> Vec<ExplainLayer> {
    let exp = expected();
    let mut layers = Vec::new();
    for (name, e) in exp["layers"].as_object().expect("layers") {
        let options = ExplainOptions {
            layers: vec![name.clone()],
            momentum: e["momentum"].is_null().then_some(Momentum::Cma),
            ..ExplainOptions::default()
        };
        layers.extend(run(b, None, &options).layers);
    }
    assert_eq!(layers.len(), 6);
    layers
}

#[test]
fn implied_batch_of_one_forward_is_the_true_batch() {
    let exp = expected();
    for l in &implied_layers("b1.safetensors") {
        let first = &exp["layers"][&l.name]["batches"][0];
        let ib = l.implied_batch.as_ref().expect("implied");
        assert!(ib.exact && ib.forwards == 1 && ib.var_kind == "unbiased");
        let m = rel_err(&ib.mean, &numbers(&first["mean"]));
        let v = rel_err(&ib.var, &numbers(&first["var_unbiased"]));
        // B is stored in f32; undoing the update multiplies its rounding by 1/m.
        assert!(m <= 1e-5 && v <= 1e-5, "{}: {m} {v}", l.name);
    }
}

#[test]
fn implied_batch_of_several_forwards_is_their_weighted_average() {
    let exp = expected();
    for l in &implied_layers("b.safetensors") {
        let e = &exp["layers"][&l.name];
        let ib = l.implied_batch.as_ref().expect("implied");
        assert_eq!((ib.forwards, ib.exact), (3, false));
        // Weight of forward i (1-based) of k: its factor times what the later ones retain.
        let weights: Vec<f64> = match e["momentum"].as_f64() {
            Some(m) => (1..=3).map(|i| m * (1.0 - m).powi(3 - i)).collect(),
            None => vec![1.0; 3],
        };
        let total: f64 = weights.iter().sum();
        for (field, key) in [("mean", "mean"), ("var", "var_unbiased")] {
            let batches: Vec<Vec<f64>> = (0..3).map(|i| numbers(&e["batches"][i][key])).collect();
            let avg: Vec<f64> = (0..batches[0].len())
                .map(|c| {
                    batches
                        .iter()
                        .zip(&weights)
                        .map(|(b, w)| w * b[c])
                        .sum::<f64>()
                        / total
                })
                .collect();
            let ours = if field == "mean" { &ib.mean } else { &ib.var };
            let err = rel_err(ours, &avg);
            assert!(err <= 1e-5, "{} {field}: {err}", l.name);
        }
    }
}

#[test]
fn synthetic_rerun_is_seeded() {
    let report = run("b.safetensors", None, &ExplainOptions::default());
    assert_eq!(report.layers.len(), 6, "every layer drifted");
    assert!(
        report
            .layers
            .iter()
            .all(|l| l.momentum_source == Source::Convention)
    );
    let again = run("b.safetensors", None, &ExplainOptions::default());
    let json = |r: &ExplainReport| serde_json::to_string(r).expect("serialises");
    assert_eq!(json(&report), json(&again));
    let other = run(
        "b.safetensors",
        None,
        &ExplainOptions {
            seed: 7,
            ..ExplainOptions::default()
        },
    );
    assert_ne!(json(&report), json(&other));
    let plain = report
        .layers
        .iter()
        .find(|l| l.name == "plain")
        .expect("plain");
    assert!(matches!(
        plain.inputs,
        Inputs::Synthetic {
            drawn_from: "implied_batch",
            ..
        }
    ));
    // Without affine parameters, batch statistics normalise to mean 0 and std 1.
    let train = mode(plain, ModeName::Train).output.expect("output");
    assert!(
        train.mean.abs() < 1e-9 && (train.std - 1.0).abs() < 1e-4,
        "{train:?}"
    );
    assert!(
        mode(plain, ModeName::EvalA)
            .max_abs_diff_vs_train
            .expect("diff")
            > 0.0
    );
    assert_eq!(mode(plain, ModeName::Train).max_abs_err, None);
    assert_eq!(plain.best_mode, None);
    assert!(plain.replay.is_none());
}

#[test]
fn impact_names_the_worst_channels() {
    let report = run("b.safetensors", None, &ExplainOptions::default());
    for l in &report.layers {
        let imp = &l.impact;
        assert_eq!(imp.mean_shift.len() as u64, l.channels);
        let worst = imp.worst.first().expect("something changed");
        assert_eq!(worst.rms_change, imp.max_rms_change);
        assert!(
            imp.worst
                .windows(2)
                .all(|w| w[0].rms_change >= w[1].rms_change)
        );
    }
}

#[test]
fn json_contract() {
    let out = Command::cargo_bin("bnaudit")
        .expect("binary")
        .args(["explain", "--format", "json", "--activations"])
        .arg(path("train.safetensors"))
        .arg(path("a.safetensors"))
        .arg(path("b.safetensors"))
        .output()
        .expect("runs");
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["schema_version"], 1);
    let layer = &v["layers"][0];
    for key in [
        "name",
        "momentum",
        "eps",
        "impact",
        "implied_batch",
        "modes",
        "best_mode",
        "replay",
    ] {
        assert!(layer.get(key).is_some(), "{key}");
    }
    assert_eq!(layer["name"], "backbone.1");
    assert_eq!(layer["best_mode"], "train");
    assert_eq!(layer["momentum_source"], "activations");
    let modes: Vec<&str> = layer["modes"]
        .as_array()
        .expect("modes")
        .iter()
        .map(|m| m["mode"].as_str().expect("name"))
        .collect();
    assert_eq!(
        modes,
        [
            "train",
            "train_no_track",
            "eval_a",
            "eval_b",
            "eval_no_track"
        ]
    );
    for key in ["mode", "uses", "updates", "output", "max_abs_err"] {
        assert!(layer["modes"][0].get(key).is_some(), "{key}");
    }
    for key in [
        "batches",
        "max_abs_err_mean",
        "max_abs_err_var",
        "explains_b",
    ] {
        assert!(layer["replay"].get(key).is_some(), "{key}");
    }
    let cma = v["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .find(|l| l["name"] == "backbone.4")
        .expect("cma layer");
    assert_eq!(cma["momentum"], "cma");
}

#[test]
fn text_leads_with_the_verdict() {
    Command::cargo_bin("bnaudit")
        .expect("binary")
        .args([
            "explain",
            "--color",
            "never",
            "--layer",
            "vol.1",
            "--activations",
        ])
        .arg(path("train.safetensors"))
        .arg(path("a.safetensors"))
        .arg(path("b.safetensors"))
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "vol.1  (pytorch, 2 channels, momentum 0.1 from the activation file",
        ))
        .stdout(predicate::str::contains(
            "\n  The 3 captured train-mode forwards account for B exactly.\n",
        ))
        .stdout(predicate::str::contains("best mode: train"));
}

/// Writes a safetensors file of f32 tensors (zeros) with optional `bnaudit` metadata.
fn write_activations(dir: &Path, tensors: &[(&str, &[u64])], meta: Option<&str>) -> PathBuf {
    let mut header = serde_json::Map::new();
    let mut offset = 0u64;
    for (name, shape) in tensors {
        let bytes = 4 * shape.iter().product::<u64>();
        header.insert(
            (*name).to_owned(),
            json!({"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + bytes]}),
        );
        offset += bytes;
    }
    if let Some(m) = meta {
        header.insert("__metadata__".to_owned(), json!({ "bnaudit": m }));
    }
    let mut text = serde_json::to_string(&header).expect("header");
    while !text.len().is_multiple_of(8) {
        text.push(' ');
    }
    let mut file = (text.len() as u64).to_le_bytes().to_vec();
    file.extend_from_slice(text.as_bytes());
    // Values alternate so that batch statistics have a variance.
    file.extend((0..offset / 4).flat_map(|i| ((i % 3) as f32).to_le_bytes()));
    let path = dir.join("acts.safetensors");
    std::fs::write(&path, file).expect("write");
    path
}

fn explain_fails(acts: &Path, extra: &[&str], stderr: &[&str]) {
    let mut assert = Command::cargo_bin("bnaudit")
        .expect("binary")
        .arg("explain")
        .args(extra)
        .arg("--activations")
        .arg(acts)
        .arg(path("a.safetensors"))
        .arg(path("b.safetensors"))
        .assert()
        .code(3)
        .stdout("");
    for s in stderr {
        assert = assert.stderr(predicate::str::contains(*s));
    }
    assert.stderr(predicate::str::contains("panicked").not());
}

#[test]
fn bad_activation_files_exit_3_naming_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let name = |p: &Path| p.display().to_string();
    let p = write_activations(dir.path(), &[("backbone.1.input.0", &[4, 5, 3, 3])], None);
    explain_fails(
        &p,
        &[],
        &[&name(&p), "has 5 channels, layer \"backbone.1\" has 6"],
    );
    let p = write_activations(dir.path(), &[("head.1.input.0", &[5])], None);
    explain_fails(&p, &[], &[&name(&p), "rank 1"]);
    let p = write_activations(
        dir.path(),
        &[("head.1.input.0", &[1, 5])],
        Some(r#"{"head.1": {"training": true, "momentum": 0.1, "eps": 1e-5}}"#),
    );
    explain_fails(
        &p,
        &[],
        &[&name(&p), "1 value per channel in a train-mode forward"],
    );
    let p = write_activations(dir.path(), &[("head.1.input.0", &[4, 5])], Some("{oops"));
    explain_fails(&p, &[], &[&name(&p), "invalid JSON"]);
    let p = write_activations(dir.path(), &[("head.1.weights", &[5])], None);
    explain_fails(&p, &[], &[&name(&p), "not named <layer>.input.<i>"]);
    let p = write_activations(
        dir.path(),
        &[("head.1.input.0", &[4, 5]), ("head.1.output.1", &[4, 5])],
        None,
    );
    explain_fails(
        &p,
        &[],
        &[&name(&p), "head.1.output.1 has no head.1.input.1"],
    );
    let p = write_activations(dir.path(), &[("nothere.input.0", &[4, 5])], None);
    explain_fails(
        &p,
        &[],
        &[
            "a.safetensors",
            "no BatchNorm layer \"nothere\"",
            "captured in",
        ],
    );
    std::fs::write(&p, b"not a safetensors file").expect("write");
    explain_fails(&p, &[], &[&name(&p)]);
}

#[test]
fn eval_forward_of_one_sample_skips_batch_modes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = write_activations(
        dir.path(),
        &[("head.1.input.0", &[1, 5])],
        Some(r#"{"head.1": {"training": false, "track_running_stats": true}}"#),
    );
    let acts = Checkpoint::open(&p, ReadMode::Mmap).expect("opens");
    let report = explain(
        &open("a.safetensors"),
        &open("b.safetensors"),
        Some(&acts),
        &ExplainOptions::default(),
    )
    .expect("explains");
    let l = &report.layers[0];
    assert_eq!(mode(l, ModeName::Train).output, None);
    assert!(mode(l, ModeName::EvalB).output.is_some());
    // No outputs were recorded: nothing to pick a mode by.
    assert_eq!(l.best_mode, None);
}

#[test]
fn usage_and_layer_errors() {
    Command::cargo_bin("bnaudit")
        .expect("binary")
        .args(["explain", "--momentum", "fast"])
        .arg(path("a.safetensors"))
        .arg(path("b.safetensors"))
        .assert()
        .code(2);
    Command::cargo_bin("bnaudit")
        .expect("binary")
        .args(["explain", "--layer", "backbone.9"])
        .arg(path("a.safetensors"))
        .arg(path("b.safetensors"))
        .assert()
        .code(3)
        .stderr(predicate::str::contains(
            "a.safetensors: no BatchNorm layer \"backbone.9\"",
        ));
}

/// A safetensors file of F32 tensors and one I64 counter, written at test time.
fn write_bn(path: &Path, channels: usize, mean: f32, var: f32, counter: i64) {
    write_layers(path, &["wide.bn".to_owned()], channels, mean, var, counter);
}

/// BatchNorm layers `names` of `channels` channels, every statistic `mean`/`var`.
fn write_layers(path: &Path, names: &[String], channels: usize, mean: f32, var: f32, counter: i64) {
    let mut file = SafetensorsWriter::default();
    for name in names {
        for (key, value) in [
            ("weight", 1.0f32),
            ("bias", 0.0),
            ("running_mean", mean),
            ("running_var", var),
        ] {
            file.f32_filled(&format!("{name}.{key}"), channels, value);
        }
        file.i64_scalar(&format!("{name}.num_batches_tracked"), counter);
    }
    file.write(path);
}

/// The synthetic re-run of a very wide layer draws fewer rows (its memory is bounded);
/// a usual layer keeps all of them.
#[test]
fn synthetic_rerun_of_a_wide_layer_is_bounded() {
    use bnaudit::audit::explain::{SYNTHETIC_SAMPLES, SYNTHETIC_VALUES};
    let dir = tempfile::tempdir().expect("tempdir");
    let channels = SYNTHETIC_VALUES / 64;
    let (a, b) = (
        dir.path().join("a.safetensors"),
        dir.path().join("b.safetensors"),
    );
    write_bn(&a, channels, 0.0, 1.0, 10);
    write_bn(&b, channels, 0.5, 1.0, 11);
    let open = |p: &Path| Checkpoint::open(p, ReadMode::Mmap).expect("opens");
    let report = explain(&open(&a), &open(&b), None, &ExplainOptions::default()).expect("explains");
    let [layer] = report.layers.as_slice() else {
        panic!("one layer: {report:?}")
    };
    assert!(
        matches!(layer.inputs, Inputs::Synthetic { samples: 64, .. }),
        "{:?}",
        layer.inputs
    );
    assert!(
        layer.modes.iter().all(|m| m.output.is_some()),
        "{:?}",
        layer.modes
    );
    let usual = run("b.safetensors", None, &ExplainOptions::default());
    assert!(usual.layers.iter().all(|l| matches!(
        l.inputs,
        Inputs::Synthetic { samples, .. } if samples == SYNTHETIC_SAMPLES
    )));
}

/// `src` with only its tensors whose names end in `suffix` (and its metadata).
fn keep_tensors(src: &Path, dst: &Path, suffix: &str) {
    let bytes = std::fs::read(src).expect("read");
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
    let header: serde_json::Map<String, Value> =
        serde_json::from_slice(&bytes[8..8 + n]).expect("header");
    let data = &bytes[8 + n..];
    let mut file = SafetensorsWriter::default();
    for (name, info) in header {
        if name == "__metadata__" {
            file.metadata(info);
        } else if name.ends_with(suffix) {
            let [start, end] =
                [0, 1].map(|i| info["data_offsets"][i].as_u64().expect("offset") as usize);
            let shape: Vec<usize> = info["shape"]
                .as_array()
                .expect("shape")
                .iter()
                .map(|d| d.as_u64().expect("dimension") as usize)
                .collect();
            let dtype = info["dtype"].as_str().expect("dtype");
            file.raw(&name, dtype, &shape, &data[start..end]);
        }
    }
    file.write(dst);
}

/// When the implied batch variance is negative (B is not A plus the assumed forwards), the
/// synthetic inputs come from A's statistics, not from a "distribution" clamped to std 0.
#[test]
fn negative_implied_variance_draws_synthetic_inputs_from_a() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = (
        dir.path().join("a.safetensors"),
        dir.path().join("b.safetensors"),
    );
    write_bn(&a, 4, 0.0, 1.0, 10);
    write_bn(&b, 4, 0.5, 0.5, 11);
    // running_var 1 → 0.5 in one forward at m = 0.1: the implied batch variance is
    // (0.5 - 0.9·1)/0.1 = -4 in every channel.
    let open = |p: &Path| Checkpoint::open(p, ReadMode::Mmap).expect("opens");
    let options = ExplainOptions {
        momentum: Some(Momentum::Value(0.1)),
        ..ExplainOptions::default()
    };
    let report = explain(&open(&a), &open(&b), None, &options).expect("explains");
    let layer = &report.layers[0];
    let ib = layer.implied_batch.as_ref().expect("implied batch");
    assert!(!ib.negative_var_channels.is_empty(), "{ib:?}");
    assert!(
        matches!(
            layer.inputs,
            Inputs::Synthetic {
                drawn_from: "running_a",
                ..
            }
        ),
        "{:?}",
        layer.inputs
    );
    let train = mode(layer, ModeName::Train).output.expect("output");
    assert!(train.std > 0.5, "{train:?}");
}

/// `--layer X --layer Y --layer X` explains X and Y once each, in that order.
#[test]
fn a_layer_named_twice_is_explained_once() {
    let first = run("b.safetensors", None, &ExplainOptions::default());
    let [x, y] = [&first.layers[1].name, &first.layers[0].name];
    let options = ExplainOptions {
        layers: vec![x.clone(), y.clone(), x.clone()],
        ..ExplainOptions::default()
    };
    let report = run("b.safetensors", None, &options);
    let names: Vec<&String> = report.layers.iter().map(|l| &l.name).collect();
    assert_eq!(names, [x, y]);
}

/// B's NaN statistics make eval_b's outputs NaN: their std is unknown (null), not 0.
#[test]
fn nan_outputs_have_no_std() {
    let fixture = |f: &str| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/check")
            .join(f)
    };
    let out = Command::cargo_bin("bnaudit")
        .expect("binary")
        .arg("explain")
        .arg(fixture("base.safetensors"))
        .arg(fixture("health.safetensors"))
        .args(["--layer", "backbone.stem.bn", "--format", "json"])
        .output()
        .expect("runs");
    assert!(out.status.success());
    let report: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let modes = report["layers"][0]["modes"].as_array().expect("modes");
    let eval_b = modes
        .iter()
        .find(|m| m["mode"] == "eval_b")
        .expect("eval_b");
    assert_eq!(eval_b["output"], json!({"mean": null, "std": null}));
    let eval_a = modes
        .iter()
        .find(|m| m["mode"] == "eval_a")
        .expect("eval_a");
    assert!(eval_a["output"]["std"].as_f64().is_some_and(|s| s > 0.0));
}

/// With no layer in common, the report says so instead of "no statistics differ".
#[test]
fn disjoint_layers_are_named_as_the_reason_for_an_empty_report() {
    let dir = tempfile::tempdir().expect("tempdir");
    let other = dir.path().join("other.safetensors");
    write_bn(&other, 6, 0.0, 1.0, 1);
    let out = Command::cargo_bin("bnaudit")
        .expect("binary")
        .arg("explain")
        .arg(path("a.safetensors"))
        .arg(&other)
        .args(["--format", "json"])
        .output()
        .expect("runs");
    assert!(out.status.success());
    let report: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(report["layers"], json!([]));
    let notes = report["notes"].to_string();
    assert!(
        notes.contains("No BatchNorm layer is in both A (6) and B (1) under the same name"),
        "{notes}"
    );
}

/// One captured forward reads as one: "accounts", "1 batch", "1 captured forward".
#[test]
fn one_captured_forward_is_reported_in_the_singular() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = dir.path().join("first.safetensors");
    keep_tensors(&path("train.safetensors"), &first, ".0");
    let out = Command::cargo_bin("bnaudit")
        .expect("binary")
        .arg("explain")
        .arg(path("a.safetensors"))
        .arg(path("b1.safetensors"))
        .arg("--activations")
        .arg(&first)
        .output()
        .expect("runs");
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).expect("UTF-8");
    for sentence in [
        "The 1 captured train-mode forward accounts for B exactly.",
        "replay of 1 batch from A",
        "modes on 1 captured forward, 1 in train mode, 1 with recorded outputs",
    ] {
        assert!(text.contains(sentence), "{sentence:?} in:\n{text}");
    }
    assert!(!text.contains("(s)") && !text.contains("(es)"), "{text}");
}

/// Layers wider than half a window are explained one at a time, when asked for: however
/// many there are, no more than one is held, so memory does not grow with the layers.
#[test]
fn wide_layers_are_explained_one_at_a_time() {
    use bnaudit::audit::explain::Explainer;
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = (
        dir.path().join("a.safetensors"),
        dir.path().join("b.safetensors"),
    );
    let channels = 600;
    let names = ["bn0".to_owned(), "bn1".to_owned(), "bn2".to_owned()];
    write_layers(&a, &names, channels, 0.0, 1.0, 10);
    write_layers(&b, &names, channels, 0.25, 1.5, 11);
    let open = |p: &Path| Checkpoint::open(p, ReadMode::Mmap).expect("opens");
    let (a, b) = (open(&a), open(&b));
    let options = ExplainOptions::default();
    let explainer = Explainer::new(&a, &b, None, &options)
        .expect("sets up")
        .with_window(1000);
    let mut layers = explainer.layers().expect("explains");
    let mut names = Vec::new();
    // One explained ahead (to know that the run does not fail), none more.
    assert_eq!(layers.held(), 1);
    while let Some(l) = layers.next() {
        assert_eq!(layers.held(), 0, "{} handed out", l.name);
        assert_eq!(l.impact.rms_change.len(), channels);
        names.push(l.name);
    }
    assert_eq!(names, ["bn0", "bn1", "bn2"]);
    assert!(layers.skipped().is_empty());
}

/// Small layers share a window (explained in parallel), still handed out in order.
#[test]
fn small_layers_share_a_window_in_order() {
    use bnaudit::audit::explain::{Explainer, WINDOW_LAYERS};
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = (
        dir.path().join("a.safetensors"),
        dir.path().join("b.safetensors"),
    );
    let mut names: Vec<String> = (0..WINDOW_LAYERS + 3).map(|i| format!("bn{i}")).collect();
    write_layers(&a, &names, 4, 0.0, 1.0, 10);
    write_layers(&b, &names, 4, 0.25, 1.5, 11);
    let open = |p: &Path| Checkpoint::open(p, ReadMode::Mmap).expect("opens");
    let (a, b) = (open(&a), open(&b));
    let options = ExplainOptions::default();
    let explainer = Explainer::new(&a, &b, None, &options).expect("sets up");
    let mut layers = explainer.layers().expect("explains");
    assert_eq!(layers.held(), WINDOW_LAYERS);
    // Changed layers come in name order.
    names.sort();
    let explained: Vec<String> = layers.by_ref().map(|l| l.name).collect();
    assert_eq!(explained, names);
}

/// The JSON written layer by layer is the collected report's, byte for byte, skipped
/// layers included.
#[test]
fn streamed_json_is_the_collected_report() {
    let acts = path("small_full.safetensors");
    let (a, b) = (path("small_a.safetensors"), path("small_b.safetensors"));
    let out = Command::cargo_bin("bnaudit")
        .expect("binary")
        .args(["explain", "--format", "json", "--activations"])
        .arg(&acts)
        .arg(&a)
        .arg(&b)
        .output()
        .expect("runs");
    assert!(out.status.success());
    let open = |p: &Path| Checkpoint::open(p, ReadMode::Mmap).expect("opens");
    let (a, b, acts) = (open(&a), open(&b), open(&acts));
    let report = explain(&a, &b, Some(&acts), &ExplainOptions::default()).expect("explains");
    assert!(!report.skipped.is_empty() && report.layers.len() > 1);
    let collected = serde_json::to_string_pretty(&report).expect("serialises") + "\n";
    assert_eq!(String::from_utf8(out.stdout).expect("UTF-8"), collected);
}
