//! `bnaudit explain` on captures of real PyTorch runs that once went wrong (the `small_*` and
//! `wrapped_*` fixtures of tests/fixtures/explain/gen.py): partial captures, untracked layers,
//! wrapped checkpoints, bfloat16, unknown momentum, non-finite statistics, stats-only captures,
//! and activation files that must be refused without a panic.

// Shared with tests/explain.rs, which uses the helpers this file does not.
#[allow(dead_code)]
mod common;

use assert_cmd::Command;
use bnaudit::audit::explain::{ExplainLayer, ExplainReport, Inputs, Source};
use bnaudit::audit::scope::Patterns;
use bnaudit::audit::{ExplainOptions, explain};
use bnaudit::bn::Momentum;
use common::{open, path};
use predicates::prelude::*;
use serde_json::json;

fn run(a: &str, b: &str, acts: Option<&str>, options: &ExplainOptions) -> ExplainReport {
    let acts = acts.map(open);
    explain(&open(a), &open(b), acts.as_ref(), options).expect("explains")
}

fn layer<'r>(r: &'r ExplainReport, name: &str) -> &'r ExplainLayer {
    r.layers
        .iter()
        .find(|l| l.name == name)
        .unwrap_or_else(|| panic!("layer {name}"))
}

/// The statistics PyTorch left in B, as the checkpoint stores them.
fn b_stats(b: &str, layer: &str) -> (Vec<f64>, Vec<f64>) {
    let ck = open(b);
    let values = |k: &str| {
        let t = ck.get(&format!("{layer}.{k}")).expect("tensor");
        ck.values(t).expect("read").expect("decodes")
    };
    (values("running_mean"), values("running_var"))
}

#[test]
fn a_capture_of_2_of_4_forwards_says_so_and_replays_them() {
    let r = run(
        "small_a.safetensors",
        "small_b.safetensors",
        Some("small_partial.safetensors"),
        &ExplainOptions::default(),
    );
    for name in ["bn", "cma"] {
        let l = layer(&r, name);
        assert_eq!(l.forwards, Some(4));
        let replay = l.replay.as_ref().expect("replay");
        assert_eq!(replay.batches, 2);
        assert_eq!(replay.nbt_replayed, Some(3));
        assert!(!replay.explains_b);
        assert!(
            l.verdict
                .starts_with("The capture holds 2 of the 4 train-mode forwards between A and B"),
            "{}",
            l.verdict
        );
        assert!(!l.verdict.contains("something else"));
    }
}

#[test]
fn an_untracked_layer_is_skipped_with_its_reason_and_the_rest_explained() {
    let r = run(
        "small_a.safetensors",
        "small_b.safetensors",
        Some("small_full.safetensors"),
        &ExplainOptions::default(),
    );
    assert_eq!(r.layers.len(), 2);
    assert_eq!(r.skipped.len(), 1);
    assert_eq!(r.skipped[0].name, "free");
    assert!(
        r.skipped[0].reason.contains("track_running_stats=False"),
        "{}",
        r.skipped[0].reason
    );
    for name in ["bn", "cma"] {
        assert!(layer(&r, name).replay.as_ref().expect("replay").explains_b);
    }
    // The CLI exits 0 and says it; with only the untracked layer, nothing is explained: 3.
    let cli = |extra: &[&str]| {
        Command::cargo_bin("bnaudit")
            .expect("binary")
            .args(["explain", "--color", "never", "--activations"])
            .arg(path("small_full.safetensors"))
            .arg(path("small_a.safetensors"))
            .arg(path("small_b.safetensors"))
            .args(extra)
            .assert()
    };
    cli(&[])
        .success()
        .stdout(predicate::str::contains(
            "2 layers explained: 2 accounted for, 0 not, 1 skipped",
        ))
        .stdout(predicate::str::contains("skipped free: "));
    cli(&["--layer", "free"])
        .code(3)
        .stderr(predicate::str::contains("track_running_stats=False"));
}

#[test]
fn a_capture_of_the_inner_model_explains_a_wrapped_checkpoint() {
    let r = run(
        "wrapped_a.safetensors",
        "wrapped_b.safetensors",
        Some("train.safetensors"),
        &ExplainOptions::default(),
    );
    let al = r.activations_alignment.as_ref().expect("aligned");
    assert_eq!((al.strip_a.as_str(), al.strip_b.as_str()), ("module.", ""));
    assert_eq!(r.layers.len(), 6);
    assert!(r.skipped.is_empty());
    for l in &r.layers {
        assert!(l.name.starts_with("module."), "{}", l.name);
        assert!(l.replay.as_ref().expect("replay").explains_b, "{}", l.name);
    }
    Command::cargo_bin("bnaudit")
        .expect("binary")
        .args(["explain", "--color", "never", "--activations"])
        .arg(path("train.safetensors"))
        .arg(path("wrapped_a.safetensors"))
        .arg(path("wrapped_b.safetensors"))
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "activation names aligned: \"module.\" added to the captured names",
        ));
}

#[test]
fn a_bfloat16_replay_states_its_tolerance_instead_of_exactly() {
    let r = run(
        "small_a_bf16.safetensors",
        "small_b_bf16.safetensors",
        Some("small_bf16.safetensors"),
        &ExplainOptions::default(),
    );
    for name in ["bn", "cma"] {
        let l = layer(&r, name);
        let replay = l.replay.as_ref().expect("replay");
        let worst = replay.max_rel_err_mean.max(replay.max_rel_err_var);
        // bf16 keeps 8 significant bits: the replay is off by rounding, not exactly equal.
        assert!(worst > 1e-4 && worst <= replay.tolerance, "{name}: {worst}");
        assert!(replay.tolerance < 0.05, "{}", replay.tolerance);
        assert!(replay.explains_b);
        assert!(!l.verdict.contains("exactly"), "{}", l.verdict);
        assert!(l.verdict.contains("within BF16 rounding"), "{}", l.verdict);
    }
}

#[test]
fn an_unrecorded_momentum_none_is_detected_and_can_be_set_per_layer() {
    let r = run(
        "small_a.safetensors",
        "small_b.safetensors",
        Some("small_nometa.safetensors"),
        &ExplainOptions::default(),
    );
    let cma = layer(&r, "cma");
    assert_eq!(cma.momentum_source, Source::Convention);
    assert_eq!(cma.momentum_fits, Some(Momentum::Cma));
    assert!(
        cma.verdict.contains("with momentum=None"),
        "{}",
        cma.verdict
    );
    assert!(cma.notes.iter().any(|n| n.contains("--momentum cma")));
    let bn = layer(&r, "bn");
    assert_eq!(bn.momentum_fits, None);
    assert!(bn.replay.as_ref().expect("replay").explains_b);

    // `--momentum cma=cma`: that layer only; the other keeps the convention's.
    let options = ExplainOptions {
        momentum_for: vec![(
            Patterns::new("--momentum", &["cma".to_owned()]).expect("pattern"),
            Momentum::Cma,
        )],
        ..ExplainOptions::default()
    };
    let r = run(
        "small_a.safetensors",
        "small_b.safetensors",
        Some("small_nometa.safetensors"),
        &options,
    );
    let cma = layer(&r, "cma");
    assert_eq!(
        (cma.momentum, cma.momentum_source),
        (Momentum::Cma, Source::Option)
    );
    assert!(cma.replay.as_ref().expect("replay").explains_b);
    let bn = layer(&r, "bn");
    assert_eq!(bn.momentum_source, Source::Convention);
    // The same from the command line, with a global value beside it.
    Command::cargo_bin("bnaudit")
        .expect("binary")
        .args(["explain", "--format", "json", "--momentum", "cma=cma"])
        .args(["--momentum", "0.1", "--eps", "bn=1e-5", "--activations"])
        .arg(path("small_nometa.safetensors"))
        .arg(path("small_a.safetensors"))
        .arg(path("small_b.safetensors"))
        .assert()
        .success()
        .stdout(predicate::str::contains("\"momentum_fits\": \"cma\"").not());
}

#[test]
fn non_finite_statistics_in_b_are_named_as_such() {
    let r = run(
        "small_a.safetensors",
        "small_nan_b.safetensors",
        None,
        &ExplainOptions::default(),
    );
    for name in ["bn", "cma"] {
        let l = layer(&r, name);
        let (mean, var) = b_stats("small_nan_b.safetensors", name);
        let nan: Vec<usize> = (0..mean.len())
            .filter(|&c| !(mean[c].is_finite() && var[c].is_finite()))
            .collect();
        assert!(!nan.is_empty());
        assert_eq!(l.nonfinite_channels_b, nan);
        assert!(l.implied_batch.is_none());
        assert!(
            l.verdict
                .starts_with("B's running statistics are not finite"),
            "{}",
            l.verdict
        );
        assert!(!l.verdict.contains("implies no batch"));
    }
}

#[test]
fn a_stats_only_capture_replays_a_to_b_and_runs_no_mode() {
    let r = run(
        "small_a.safetensors",
        "small_b.safetensors",
        Some("small_stats.safetensors"),
        &ExplainOptions {
            momentum_for: vec![(
                Patterns::new("--momentum", &["cma".to_owned()]).expect("pattern"),
                Momentum::Cma,
            )],
            ..ExplainOptions::default()
        },
    );
    for name in ["bn", "cma"] {
        let l = layer(&r, name);
        let replay = l.replay.as_ref().expect("replay");
        assert_eq!(replay.batches, 4);
        assert!(replay.explains_b, "{name}");
        assert!(replay.max_rel_err_mean <= 1e-6 && replay.max_rel_err_var <= 1e-6);
        assert!(matches!(
            l.inputs,
            Inputs::Captured {
                statistics_only: 4,
                with_outputs: 0,
                ..
            }
        ));
        assert!(l.modes.iter().all(|m| m.output.is_none()));
        assert!(l.notes.iter().any(|n| n.contains("batch statistics only")));
    }
}

#[test]
fn text_with_several_layers_leads_with_a_summary() {
    let out = Command::cargo_bin("bnaudit")
        .expect("binary")
        .args(["explain", "--color", "never", "--activations"])
        .arg(path("train.safetensors"))
        .arg(path("a.safetensors"))
        .arg(path("b.safetensors"))
        .output()
        .expect("runs");
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let summary = text
        .find("6 layers explained: 6 accounted for, 0 not")
        .expect("summary");
    let table = text
        .find("largest impact in eval mode (top 5 of 6):")
        .expect("top");
    let details = text.find("\nbackbone.1  (pytorch").expect("details");
    assert!(summary < table && table < details);
}

/// Writes an activation file of one zero-size F32 tensor named `name` with `shape`.
fn one_tensor_file(dir: &std::path::Path, name: &str, shape: &[u64]) -> std::path::PathBuf {
    let header = json!({ name: {"dtype": "F32", "shape": shape, "data_offsets": [0, 0]} });
    let mut text = header.to_string();
    while !text.len().is_multiple_of(8) {
        text.push(' ');
    }
    let mut file = (text.len() as u64).to_le_bytes().to_vec();
    file.extend_from_slice(text.as_bytes());
    let p = dir.join("acts.safetensors");
    std::fs::write(&p, file).expect("write");
    p
}

#[test]
fn hostile_activation_keys_and_shapes_exit_3_without_a_panic() {
    let dir = tempfile::tempdir().expect("tempdir");
    let huge = 1u64 << 62;
    for (name, shape, message) in [
        (
            "backbone.1.input.0",
            vec![0, 6, huge, huge],
            "backbone.1.input.0",
        ),
        ("backbone.1.input.0", vec![0, 6, 3, 3], "holds no value"),
        (
            "x.input.99999999999999999999999",
            vec![0, 6],
            "forward index 99999999999999999999999 is too large",
        ),
    ] {
        let p = one_tensor_file(dir.path(), name, &shape);
        Command::cargo_bin("bnaudit")
            .expect("binary")
            .arg("explain")
            .arg("--activations")
            .arg(&p)
            .arg(path("a.safetensors"))
            .arg(path("b.safetensors"))
            .assert()
            .code(3)
            .stderr(predicate::str::contains(message))
            .stderr(predicate::str::contains("acts.safetensors"))
            .stderr(predicate::str::contains("panicked").not());
    }
}
