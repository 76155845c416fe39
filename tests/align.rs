//! Sub-model alignment and the verdicts that must not mislead, on checkpoints made by real
//! PyTorch (tests/fixtures/align/gen.py; expected.json records what the script did).

mod writer;

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use serde_json::Value;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/align")
}

fn case(name: &str) -> Value {
    let text = std::fs::read_to_string(dir().join("expected.json")).expect("expected.json");
    let all: Value = serde_json::from_str(&text).expect("JSON");
    all["cases"][name].clone()
}

fn file(case: &str, name: &str) -> String {
    dir()
        .join(case)
        .join(name)
        .to_str()
        .expect("UTF-8")
        .to_owned()
}

fn run(args: &[&str]) -> (i32, String) {
    let out = Command::cargo_bin("bnaudit")
        .expect("binary")
        .args(args)
        .output()
        .expect("runs");
    (
        out.status.code().expect("exit code"),
        String::from_utf8(out.stdout).expect("UTF-8"),
    )
}

fn diff_json(a: &str, b: &str) -> Value {
    let (code, out) = run(&["diff", a, b, "--format", "json"]);
    assert_eq!(code, 0);
    serde_json::from_str(&out).expect("JSON")
}

fn layer<'r>(report: &'r Value, name: &str) -> &'r Value {
    report["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .find(|l| l["name"] == name)
        .unwrap_or_else(|| panic!("no layer {name}"))
}

fn verdicts(report: &Value) -> Vec<&str> {
    report["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .map(|g| g["verdict"].as_str().expect("verdict"))
        .collect()
}

/// The seed's scene: model_A's own file against the joint checkpoint in which it drifted.
#[test]
fn standalone_model_a_against_the_joint_checkpoint() {
    let c = case("joint");
    let (a, b) = (
        file("joint", "modelA_pretrained.safetensors"),
        file("joint", "joint_epoch3.safetensors"),
    );
    let report = diff_json(&a, &b);
    let al = &report["alignment"];
    assert_eq!(
        (&al["prefix_a"], &al["prefix_b"]),
        (&c["prefix"], &"".into())
    );
    assert_eq!(al["only_a"], 0);
    for (name, nbt) in c["counters_b"].as_object().expect("counters") {
        let l = layer(&report, name);
        assert_eq!(l["status"], "frozen_stats_drift", "{name}");
        assert_eq!(&l["nbt_b"], nbt, "{name}");
        assert_eq!(l["nbt_a"], c["counters_a"][name], "{name}");
    }
    for name in c["other_layers"].as_array().expect("others") {
        assert_eq!(
            layer(&report, name.as_str().expect("name"))["status"],
            "only_in_b"
        );
    }
    let groups = report["groups"].as_array().expect("groups");
    let model_a = groups
        .iter()
        .find(|g| g["prefix"] == "model_A")
        .expect("model_A");
    assert_eq!(model_a["severity"], "problem");
    assert_eq!(model_a["forwards"], c["forwards"]);
    let model_b = groups
        .iter()
        .find(|g| g["prefix"] == "model_B")
        .expect("model_B");
    assert_eq!(
        model_b["severity"], "info",
        "B's other modules are expected"
    );
    // The text says so in its first lines.
    let (_, text) = run(&["diff", &a, &b]);
    let third = text.lines().nth(2).expect("alignment line");
    assert!(
        third.contains("\"model_A.\" added to A's names")
            && third.contains("A is B's sub-model model_A, saved on its own"),
        "{third}"
    );
    // check names the joint model's modules.
    let (code, _) = run(&["check", &a, &b, "--frozen", "model_A"]);
    assert_eq!(code, 1);
}

/// The joint checkpoint as A, model_A saved on its own as B; and B under DDP's `module.`.
#[test]
fn reverse_and_wrapped_submodels_align() {
    let c = case("reverse");
    let report = diff_json(
        &file("reverse", "joint_epoch0.safetensors"),
        &file("reverse", "modelA_epoch3.safetensors"),
    );
    assert_eq!(report["alignment"]["prefix_b"], c["prefix"]);
    assert_eq!(report["alignment"]["only_b"], 0);
    for name in c["other_layers"].as_array().expect("others") {
        assert_eq!(
            layer(&report, name.as_str().expect("name"))["status"],
            "only_in_a"
        );
    }
    assert_eq!(
        layer(&report, "model_A.head.bn")["status"],
        "frozen_stats_drift"
    );

    let c = case("ddp");
    let report = diff_json(
        &file("ddp", "modelA_pretrained.safetensors"),
        &file("ddp", "joint_ddp.safetensors"),
    );
    let al = &report["alignment"];
    assert_eq!(
        (&al["strip_b"], &al["prefix_a"]),
        (&c["strip_b"], &c["prefix"])
    );
    for (name, nbt) in c["counters_b"].as_object().expect("counters") {
        assert_eq!(&layer(&report, name)["nbt_b"], nbt, "{name}");
    }
}

/// model_A's own file before and after the joint run: no weight changed, so the verdict
/// names both causes it cannot tell apart.
#[test]
fn a_standalone_drift_names_both_causes() {
    let report = diff_json(
        &file("standalone", "modelA_pretrained.safetensors"),
        &file("standalone", "modelA_epoch3.safetensors"),
    );
    let v = verdicts(&report);
    assert_eq!(v.len(), 1, "backbone and head behaved alike: {v:?}");
    assert!(
        v[0].contains("forgot model.eval()") && v[0].contains("its parent's .train()"),
        "{}",
        v[0]
    );
}

/// Conversion to FrozenBatchNorm2d drops the counter only: a conversion, no violation.
#[test]
fn frozen_batchnorm_conversion_is_no_change_of_the_frozen_layers() {
    let c = case("frozen_bn_convert");
    let (a, b) = (
        file("frozen_bn_convert", "a.safetensors"),
        file("frozen_bn_convert", "b.safetensors"),
    );
    let report = diff_json(&a, &b);
    for name in c["converted"].as_array().expect("converted") {
        let l = layer(&report, name.as_str().expect("name"));
        assert_eq!(
            (&l["status"], &l["nbt_b"]),
            (&"unchanged".into(), &Value::Null)
        );
        assert!(
            l["inference"]["notes"][0]
                .as_str()
                .is_some_and(|n| n.contains("FrozenBatchNorm2d"))
        );
    }
    assert!(
        verdicts(&report)
            .iter()
            .any(|v| v.starts_with("backbone: 5/5 BatchNorm layers converted to FrozenBatchNorm2d")),
        "{:?}",
        verdicts(&report)
    );
    let (code, out) = run(&["check", &a, &b, "--frozen", "backbone", "--format", "json"]);
    let check: Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!((code, &check["violations"]), (0, &Value::Array(vec![])));
}

/// NaN folded into one channel by a train-mode forward: said, counted, no finite maximum.
#[test]
fn statistics_that_became_nonfinite_are_named() {
    let c = case("nonfinite");
    let report = diff_json(
        &file("nonfinite", "a.safetensors"),
        &file("nonfinite", "b.safetensors"),
    );
    let name = c["layer"].as_str().expect("layer");
    let l = layer(&report, name);
    assert_eq!(l["inference"]["nonfinite_channels"], c["nonfinite_mean"]);
    assert_eq!(l["changed"]["running_mean"], true);
    assert_eq!(l["max_abs_diff"]["running_mean"], Value::Null);
    assert_eq!(l["max_abs_diff"]["running_var"], Value::Null);
    assert_eq!(
        l["nbt_delta"],
        c["counter"][1].as_i64().unwrap() - c["counter"][0].as_i64().unwrap()
    );
    let notes: Vec<&str> = l["inference"]["notes"]
        .as_array()
        .expect("notes")
        .iter()
        .map(|n| n.as_str().expect("note"))
        .collect();
    assert!(
        notes
            .iter()
            .any(|n| n.contains("became non-finite") && n.contains("channel 1 "))
    );
    assert!(
        !notes
            .iter()
            .any(|n| n.contains("at least") || n.contains("assigned")),
        "{notes:?}"
    );
    let v = verdicts(&report);
    assert!(v[0].contains("statistics become non-finite"), "{v:?}");
    assert!(
        !v.iter().any(|v| v.contains("nothing in the model changed")),
        "{v:?}"
    );
    let (_, text) = run(&[
        "diff",
        &file("nonfinite", "a.safetensors"),
        &file("nonfinite", "b.safetensors"),
    ]);
    assert!(text.contains("non-finite"), "{text}");
}

/// A flat torchvision ResNet whose body drifted alike gets one verdict listing its
/// modules, and the replaced head is told.
#[test]
fn a_flat_resnet_gets_one_verdict_and_its_new_head_is_told() {
    let c = case("flat_resnet");
    let report = diff_json(
        &file("flat_resnet", "a.safetensors"),
        &file("flat_resnet", "b.safetensors"),
    );
    let groups = report["groups"].as_array().expect("groups");
    let body = &groups[0];
    assert_eq!(body["prefixes"], c["groups"]);
    assert_eq!(body["forwards"], c["forwards"]);
    assert!(
        body["verdict"]
            .as_str()
            .unwrap()
            .starts_with("bn1, layer1, layer2, layer3, layer4: ")
    );
    let fc = groups
        .iter()
        .find(|g| g["prefix"] == "fc")
        .expect("a verdict on fc");
    let verdict = fc["verdict"].as_str().expect("verdict");
    for t in c["reshaped"].as_array().expect("reshaped") {
        assert!(verdict.contains(t.as_str().unwrap()), "{verdict}");
    }
    assert!(verdict.contains("changed shape"), "{verdict}");
}

/// A layer rebuilt with another channel count next to one that drifted: explain (which the
/// UI runs in the background) explains the one and says why not the other, no failure.
#[test]
fn explain_skips_an_incompatible_layer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = (
        dir.path().join("a.safetensors"),
        dir.path().join("b.safetensors"),
    );
    for (path, channels, mean, nbt) in [(&a, 4, 0.0, 10), (&b, 6, 0.5, 12)] {
        let mut file = writer::SafetensorsWriter::default();
        file.f32_filled("net.bn1.running_mean", 4, mean)
            .f32_filled("net.bn1.running_var", 4, 1.0)
            .i64_scalar("net.bn1.num_batches_tracked", nbt)
            .f32_filled("net.bn2.running_mean", channels, mean)
            .f32_filled("net.bn2.running_var", channels, 1.0)
            .i64_scalar("net.bn2.num_batches_tracked", nbt);
        file.write(path);
    }
    let (a, b) = (a.to_str().unwrap(), b.to_str().unwrap());
    let (code, out) = run(&["explain", a, b, "--format", "json"]);
    assert_eq!(code, 0, "{out}");
    let report: Value = serde_json::from_str(&out).expect("JSON");
    let names: Vec<&str> = report["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| l["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["net.bn1"]);
    assert!(
        report
            .to_string()
            .contains("net.bn2 is not explained: 4 channels"),
        "{report}"
    );
}

/// The README shows the real first lines of the joint scene's diff.
#[test]
fn readme_shows_the_real_joint_scene() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    let out = Command::cargo_bin("bnaudit")
        .expect("binary")
        .current_dir(root)
        .args([
            "diff",
            "tests/fixtures/align/joint/modelA_pretrained.safetensors",
            "tests/fixtures/align/joint/joint_epoch3.safetensors",
        ])
        .output()
        .expect("runs");
    let text = String::from_utf8(out.stdout).expect("UTF-8");
    let head: Vec<&str> = text.lines().take(7).collect();
    assert!(
        readme.contains(&format!("```\n{}\n  …\n```", head.join("\n"))),
        "{text}"
    );
}
