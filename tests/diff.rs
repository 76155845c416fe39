//! `bnaudit diff` against pairs made by real PyTorch (tests/fixtures/diff/gen.py): statuses,
//! counters, forwards, retained fractions, consistency and verdicts must be what PyTorch's
//! behaviour implies, as recorded in expected.json.

mod writer;

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use serde_json::Value;
use writer::SafetensorsWriter;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/diff")
}

fn expected() -> Value {
    let text = std::fs::read_to_string(fixtures().join("expected.json")).expect("expected.json");
    serde_json::from_str(&text).expect("expected.json parses")
}

fn bnaudit() -> Command {
    Command::cargo_bin("bnaudit").expect("binary")
}

/// Runs `bnaudit diff --format json A B ARGS` and returns the exit code and the report.
fn diff_json(a: &Path, b: &Path, args: &[&str]) -> (i32, Value) {
    let out = bnaudit()
        .arg("diff")
        .arg(a)
        .arg(b)
        .args(["--format", "json"])
        .args(args)
        .output()
        .expect("runs");
    let report = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stderr)));
    (out.status.code().expect("exit code"), report)
}

fn case_paths(case: &Value) -> (PathBuf, PathBuf) {
    let path = |k: &str| fixtures().join(case[k].as_str().expect("path"));
    (path("a"), path("b"))
}

/// Severity and words the verdict of a sub-model must carry, by what the script did to it.
fn verdict_expectation(situation: &str) -> (&'static str, &'static [&'static str]) {
    match situation {
        "frozen_train_mode" => (
            "problem",
            &[
                "drifted",
                "weights unchanged",
                "ran in train mode",
                ".eval()",
            ],
        ),
        "frozen_train_mode_no_counter" => {
            ("problem", &["drifted", "at least", "ran in train mode"])
        }
        "eval_loop_train_mode" => ("problem", &["no weight changed anywhere", "drifted"]),
        "frozen_eval" => ("unchanged", &["unchanged"]),
        "trained" => ("info", &["trained"]),
        "trained_affine_free" => ("info", &["was trained", "no affine parameters"]),
        "leaked_requires_grad" => ("warning", &["requires_grad", "eval mode", "affine"]),
        "assigned" => ("problem", &["counters unchanged", "assigned or loaded"]),
        "momentum_zero" => (
            "warning",
            &["bit-identical", "momentum 0", "counters moved"],
        ),
        "update_bn" => ("problem", &["update_bn", "reset and re-estimated"]),
        "reset" => ("problem", &["reset to mean 0, variance 1"]),
        other => panic!("unknown situation {other}"),
    }
}

fn approx(x: &Value, y: f64, rel: f64) -> bool {
    x.as_f64()
        .is_some_and(|x| (x - y).abs() <= rel * y.abs().max(1e-300))
}

/// Checks every run of a case against expected.json.
fn check(name: &str) {
    let all = expected();
    let case = &all["cases"][name];
    assert!(case.is_object(), "no case {name} in expected.json");
    let (a, b) = case_paths(case);
    for run in case["runs"].as_array().expect("runs") {
        let args: Vec<&str> = run["args"]
            .as_array()
            .expect("args")
            .iter()
            .map(|v| v.as_str().expect("arg"))
            .collect();
        let ctx = format!("{name} {args:?}");
        let (code, report) = diff_json(&a, &b, &args);
        let want_code = run["exit_code"].as_i64().unwrap_or(0);
        assert_eq!(i64::from(code), want_code, "{ctx}: exit code");
        for side in ["strip_a", "strip_b"] {
            assert_eq!(
                report["alignment"][side], case["alignment"][side],
                "{ctx}: alignment {side}"
            );
        }
        check_layers(&ctx, case, run, &report);
        check_groups(&ctx, case, &report);
    }
}

fn check_layers(ctx: &str, case: &Value, run: &Value, report: &Value) {
    let want = case["layers"].as_object().expect("layers");
    let got = report["layers"].as_array().expect("layers");
    let mut names: Vec<&str> = got
        .iter()
        .map(|l| l["name"].as_str().expect("name"))
        .collect();
    names.sort_unstable();
    let mut want_names: Vec<&str> = want.keys().map(String::as_str).collect();
    want_names.sort_unstable();
    assert_eq!(names, want_names, "{ctx}: layer names");
    for l in got {
        let name = l["name"].as_str().expect("name");
        let f = &want[name];
        let ctx = format!("{ctx} {name}");
        let inf = &l["inference"];
        assert_eq!(l["status"], f["status"], "{ctx}: status");
        assert_eq!(l["nbt_a"], f["nbt_a"], "{ctx}: nbt_a");
        assert_eq!(l["nbt_b"], f["nbt_b"], "{ctx}: nbt_b");
        if let (Some(na), Some(nb)) = (f["nbt_a"].as_i64(), f["nbt_b"].as_i64()) {
            assert_eq!(l["nbt_delta"].as_i64(), Some(nb - na), "{ctx}: nbt_delta");
        }
        if !f["forwards"].is_null() {
            assert_eq!(inf["forwards"], f["forwards"], "{ctx}: forwards");
        }
        let default = if l["convention"] == "pytorch" {
            0.1
        } else {
            0.01
        };
        let assumed = if run["assumed"].is_null() {
            Value::from(default)
        } else {
            run["assumed"].clone()
        };
        assert_eq!(inf["momentum"], assumed, "{ctx}: momentum assumed");
        let true_momentum = &f["momentum"];
        let matches = true_momentum == &assumed
            || true_momentum
                .as_f64()
                .zip(assumed.as_f64())
                .is_some_and(|(x, y)| x == y);
        if matches && !f["retained"].is_null() {
            let r = f["retained"].as_f64().expect("retained");
            assert!(
                approx(&inf["retained"], r, 1e-12),
                "{ctx}: retained {} vs {r}",
                inf["retained"]
            );
            assert_eq!(
                inf["consistent"], f["consistent"],
                "{ctx}: consistent under the true momentum"
            );
        }
        if let Some(ratio) = f["var_ratio_min"].as_f64() {
            assert!(
                approx(&inf["var_ratio_min"], ratio, 1e-6),
                "{ctx}: var_ratio_min"
            );
            let truth = true_momentum.as_f64().expect("a value");
            if assumed.as_f64().is_some_and(|m| m < truth) {
                assert_eq!(
                    inf["consistent"], false,
                    "{ctx}: inconsistent under a smaller momentum"
                );
                let m_min = inf["momentum_min"].as_f64().expect("momentum_min");
                assert!(
                    m_min > assumed.as_f64().expect("value") && m_min <= truth,
                    "{ctx}: momentum_min {m_min} outside (assumed, {truth}]"
                );
            }
        }
        if let Some(k) = f["forwards_true"].as_u64() {
            assert!(inf["forwards"].is_null(), "{ctx}: no counter, no forwards");
            let k_min = inf["forwards_min"].as_u64().expect("forwards_min");
            assert!(
                (1..=k).contains(&k_min),
                "{ctx}: forwards_min {k_min} not in 1..={k}"
            );
        }
        for note in inf["notes"].as_array().expect("notes") {
            let note = note.as_str().expect("a note");
            assert!(note.ends_with('.'), "{ctx}: not a full sentence: {note}");
        }
    }
}

fn check_groups(ctx: &str, case: &Value, report: &Value) {
    let groups = report["groups"].as_array().expect("groups");
    for (prefix, g) in case["groups"].as_object().expect("groups") {
        // Modules that behaved alike share a group listing them all.
        let got = groups
            .iter()
            .find(|x| {
                x["prefixes"]
                    .as_array()
                    .expect("prefixes")
                    .iter()
                    .any(|p| p == prefix.as_str())
            })
            .unwrap_or_else(|| panic!("{ctx}: no group {prefix} in {groups:#?}"));
        let verdict = got["verdict"].as_str().expect("verdict");
        let name = got["prefix"].as_str().expect("prefix");
        let (severity, words) = verdict_expectation(g["situation"].as_str().expect("situation"));
        assert_eq!(
            got["severity"], severity,
            "{ctx}: severity of {prefix}: {verdict}"
        );
        assert!(
            verdict.starts_with(&format!("{name}: "))
                && name.split(", ").any(|p| p == prefix.as_str()),
            "{ctx}: {verdict}"
        );
        for w in words {
            assert!(
                verdict.contains(w),
                "{ctx}: {prefix} verdict lacks {w:?}: {verdict}"
            );
        }
        if let Some(k) = g["forwards"].as_i64() {
            let count = if g["situation"] == "update_bn" {
                format!("over {k} forwards")
            } else {
                format!("+{k} train-mode")
            };
            assert!(
                verdict.contains(&count),
                "{ctx}: {prefix} verdict lacks {count:?}: {verdict}"
            );
            assert_eq!(got["forwards"].as_i64(), Some(k), "{ctx}: group forwards");
            if got["layers"].as_u64() > Some(1) {
                assert!(
                    verdict.contains("identical counter deltas"),
                    "{ctx}: {verdict}"
                );
            }
        }
    }
}

#[test]
fn frozen_backbone_left_in_train_mode() {
    check("frozen_train_mode");
}

#[test]
fn frozen_backbone_in_eval_mode() {
    check("frozen_eval");
}

#[test]
fn partial_freeze_splits_the_backbone() {
    check("partial_freeze");
}

#[test]
fn leaked_requires_grad_is_affine_only() {
    check("leaked_requires_grad");
}

#[test]
fn eval_loop_that_forgot_eval() {
    check("eval_forgot_eval");
}

#[test]
fn per_layer_momenta() {
    check("momentum");
}

#[test]
fn batchnorm_without_affine_parameters() {
    check("affine_false");
}

#[test]
fn batchnorm_1d_and_3d() {
    check("bn1d_3d");
}

#[test]
fn ddp_prefix_is_aligned() {
    check("ddp_prefix");
}

#[test]
fn torch_compile_prefix_is_aligned() {
    check("compile_prefix");
}

#[test]
fn fp16_save_is_not_drift() {
    check("fp16_save");
    let case = &expected()["cases"]["fp16_save"];
    let (a, b) = case_paths(case);
    let (_, report) = diff_json(&a, &b, &[]);
    for t in report["tensors"].as_array().expect("tensors") {
        let want = if t["dtype_a"] == "I64" {
            "unchanged"
        } else {
            "dtype_changed"
        };
        assert_eq!(t["change"], want, "{}", t["name"]);
    }
    assert_eq!(report["summary"]["changed"], false);
}

#[test]
fn sharded_b_reads_like_a_single_file() {
    check("sharded");
    let all = expected();
    let (a, b) = case_paths(&all["cases"]["sharded"]);
    let (_, single) = diff_json(&a, &fixtures().join("frozen_train_mode/b.safetensors"), &[]);
    let (_, sharded) = diff_json(&a, &b, &[]);
    assert_eq!(sharded["b"]["layout"], "sharded");
    assert_eq!(sharded["b"]["files"].as_array().map(Vec::len), Some(2));
    for key in ["layers", "tensors", "groups", "summary"] {
        assert_eq!(sharded[key], single[key], "{key}");
    }
}

#[test]
fn frozen_batchnorm2d_has_no_counter() {
    check("frozen_bn");
}

#[test]
fn stats_assigned_counter_still() {
    check("counter_still");
}

#[test]
fn counter_moved_stats_identical() {
    check("counter_only");
}

#[test]
fn swa_update_bn_resets() {
    check("update_bn");
}

#[test]
fn reset_running_stats() {
    check("reset");
}

#[test]
fn keras_naming() {
    check("keras");
}

#[test]
fn flax_naming() {
    check("flax");
}

#[test]
fn every_case_has_a_test() {
    let tested = [
        "frozen_train_mode",
        "frozen_eval",
        "partial_freeze",
        "leaked_requires_grad",
        "eval_forgot_eval",
        "momentum",
        "affine_false",
        "bn1d_3d",
        "ddp_prefix",
        "compile_prefix",
        "fp16_save",
        "sharded",
        "frozen_bn",
        "counter_still",
        "counter_only",
        "update_bn",
        "reset",
        "keras",
        "flax",
    ];
    let all = expected();
    let mut cases: Vec<&str> = all["cases"]
        .as_object()
        .expect("cases")
        .keys()
        .map(String::as_str)
        .collect();
    cases.sort_unstable();
    let mut tested = tested.to_vec();
    tested.sort_unstable();
    assert_eq!(cases, tested);
}

fn keys(v: &Value) -> Vec<&str> {
    let mut k: Vec<&str> = v
        .as_object()
        .expect("an object")
        .keys()
        .map(String::as_str)
        .collect();
    k.sort_unstable();
    k
}

fn has_all(v: &Value, want: &[&str], what: &str) {
    let got = keys(v);
    for w in want {
        assert!(got.contains(w), "{what} lacks {w:?}: {got:?}");
    }
}

/// The field names DESIGN.md fixes for `diff --format json`.
#[test]
fn json_contract_field_names() {
    let (a, b) = case_paths(&expected()["cases"]["frozen_train_mode"]);
    let (_, r) = diff_json(&a, &b, &[]);
    assert_eq!(
        keys(&r),
        [
            "a",
            "alignment",
            "b",
            "groups",
            "layers",
            "schema_version",
            "summary",
            "tensors"
        ]
    );
    assert_eq!(r["schema_version"], 1);
    has_all(
        &r["a"],
        &["path", "files", "tensors", "bytes", "metadata"],
        "a",
    );
    has_all(
        &r["alignment"],
        &["strip_a", "strip_b", "detected", "matched"],
        "alignment",
    );
    has_all(
        &r["summary"],
        &["layers", "statuses", "tensors", "changed"],
        "summary",
    );
    let layer = &r["layers"][0];
    has_all(
        layer,
        &[
            "name",
            "status",
            "nbt_a",
            "nbt_b",
            "nbt_delta",
            "changed",
            "max_abs_diff",
            "inference",
        ],
        "layer",
    );
    for per in ["changed", "max_abs_diff"] {
        assert_eq!(
            keys(&layer[per]),
            ["bias", "running_mean", "running_var", "weight"]
        );
    }
    has_all(
        &layer["inference"],
        &["forwards", "momentum", "retained", "consistent", "notes"],
        "inference",
    );
    has_all(
        &r["groups"][0],
        &["prefix", "layers", "statuses", "severity", "verdict"],
        "group",
    );
    has_all(
        &r["tensors"][0],
        &[
            "name",
            "change",
            "dtype_a",
            "dtype_b",
            "shape_a",
            "shape_b",
            "changed_elements",
            "max_abs_diff",
            "rel_l2",
        ],
        "tensor",
    );
    let statuses = keys(&r["summary"]["statuses"]);
    assert_eq!(statuses, ["frozen_stats_drift", "trained"]);
}

/// The head's conv bias moves by rounding noise only (3e-8): `--atol` absorbs it.
#[test]
fn tolerance_loosens() {
    let (a, b) = case_paths(&expected()["cases"]["frozen_bn"]);
    let bias = |args: &[&str]| {
        let (_, r) = diff_json(&a, &b, args);
        r["tensors"]
            .as_array()
            .expect("tensors")
            .iter()
            .find(|t| t["name"] == "head.conv.bias")
            .expect("head.conv.bias")
            .clone()
    };
    let exact = bias(&[]);
    assert_eq!(exact["change"], "changed");
    assert!(exact["max_abs_diff"].as_f64().expect("max") < 1e-6);
    let loose = bias(&["--atol", "1e-6"]);
    assert_eq!(loose["change"], "unchanged");
    assert_eq!(loose["changed_elements"], 0);
    assert_eq!(bias(&["--rtol", "1e-3"])["change"], "unchanged");
}

#[test]
fn text_leads_with_verdicts() {
    let (a, b) = case_paths(&expected()["cases"]["frozen_train_mode"]);
    let out = bnaudit()
        .arg("diff")
        .arg(&a)
        .arg(&b)
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let at = |s: &str| {
        text.find(s)
            .unwrap_or_else(|| panic!("no {s:?} in\n{text}"))
    };
    assert!(at("Verdicts") < at("BatchNorm layers:"));
    assert!(at("BatchNorm layers:") < at("Tensors:"));
    assert!(text.contains("✗ backbone: 5/5 BatchNorm layers drifted"));
    assert!(!text.contains('\x1b'), "no colour when not a terminal");
    let coloured = bnaudit()
        .arg("diff")
        .arg(&a)
        .arg(&b)
        .args(["--color", "always"])
        .output()
        .expect("runs");
    assert!(String::from_utf8_lossy(&coloured.stdout).contains("\x1b[31m"));
    // `view A B` prints the same diff report.
    let view = bnaudit()
        .arg("view")
        .arg(&a)
        .arg(&b)
        .output()
        .expect("runs");
    assert_eq!(String::from_utf8(view.stdout).expect("utf-8"), text);
}

#[test]
fn output_file_matches_stdout() {
    let (a, b) = case_paths(&expected()["cases"]["update_bn"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("report.json");
    let out = bnaudit()
        .arg("diff")
        .arg(&a)
        .arg(&b)
        .args(["--format", "json", "--output"])
        .arg(&file)
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(0));
    assert!(out.stdout.is_empty());
    let (_, report) = diff_json(&a, &b, &[]);
    let written: Value =
        serde_json::from_str(&std::fs::read_to_string(&file).expect("written")).expect("JSON");
    assert_eq!(written, report);
}

/// An output file in a missing directory: one line naming that file and the reason, not
/// the temporary file bnaudit tried to create beside it.
#[test]
fn unwritable_output_names_the_output_file() {
    let (a, b) = case_paths(&expected()["cases"]["update_bn"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("no/such/dir/report.json");
    let out = bnaudit()
        .arg("diff")
        .arg(&a)
        .arg(&b)
        .arg("--output")
        .arg(&file)
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).expect("utf-8");
    assert_eq!(
        err,
        format!(
            "bnaudit: error: {}: cannot write output: No such file or directory (os error 2)\n",
            file.display()
        )
    );
}

/// A forced prefix that starts no name would strip nothing while the alignment line says
/// it stripped it: a usage error naming the checkpoint (for check too). One that applies
/// works.
#[test]
fn forced_prefix_that_starts_no_name_is_a_usage_error() {
    let (a, b) = case_paths(&expected()["cases"]["ddp_prefix"]);
    for (cmd, rest) in [("diff", &[][..]), ("check", &["--frozen", "backbone"])] {
        let out = bnaudit()
            .arg(cmd)
            .arg(&a)
            .arg(&b)
            .args(["--strip-prefix-a", "module"])
            .args(rest)
            .output()
            .expect("runs");
        assert_eq!(out.status.code(), Some(2), "{cmd:?}");
        let err = String::from_utf8(out.stderr).expect("utf-8");
        assert_eq!(
            err,
            format!(
                "bnaudit: error: --strip-prefix-a \"module.\": no tensor name of {} starts with it\n",
                a.display()
            )
        );
    }
    let (code, report) = diff_json(&a, &b, &["--strip-prefix-b", "module"]);
    assert_eq!(code, 0);
    assert_eq!(report["alignment"]["strip_b"], "module.");
}

/// `--output` with a checkpoint's name is refused before anything is written: the
/// checkpoint just read stays intact.
#[test]
fn output_over_a_checkpoint_is_refused() {
    let (a, b) = case_paths(&expected()["cases"]["update_bn"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let copy = dir.path().join("b.safetensors");
    std::fs::copy(&b, &copy).expect("copy");
    let out = bnaudit()
        .arg("diff")
        .arg(&a)
        .arg(&copy)
        .arg("-o")
        .arg(&copy)
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).expect("utf-8");
    assert!(
        err.contains("refusing to write a report to a checkpoint's name"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(&copy).expect("read"),
        std::fs::read(&b).expect("read")
    );
}

/// A safetensors file of two PyTorch BatchNorm layers `net.bn1`, `net.bn2` of 4 channels:
/// running_mean `mean[i]` and counter `counter[i]` for layer i, the rest fixed.
fn write_two_bn(path: &Path, mean: [f32; 2], counter: [i64; 2]) {
    let mut file = SafetensorsWriter::default();
    for (i, layer) in ["net.bn1", "net.bn2"].into_iter().enumerate() {
        file.f32_filled(&format!("{layer}.running_mean"), 4, mean[i])
            .f32_filled(&format!("{layer}.running_var"), 4, 1.0)
            .i64_scalar(&format!("{layer}.num_batches_tracked"), counter[i]);
    }
    file.write(path);
}

/// Statistics equal within --atol while one of two counters moved: the verdict counts the
/// one layer whose counter moved and its forwards, not "+0 to +1" over both, and does not
/// call tolerated statistics bit-identical.
#[test]
fn counters_moved_verdict_counts_only_the_layers_that_moved() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = (
        dir.path().join("a.safetensors"),
        dir.path().join("b.safetensors"),
    );
    write_two_bn(&a, [0.0, 0.0], [10, 10]);
    write_two_bn(&b, [1e-9, 0.0], [11, 10]);
    let (_, report) = diff_json(&a, &b, &["--atol", "1e-6"]);
    let verdict = report["groups"][0]["verdict"].as_str().expect("verdict");
    assert!(
        verdict.starts_with(
            "net: 1/2 BatchNorm layers kept statistics equal within --atol/--rtol but its counter moved, +1 train-mode forward (1 more unchanged, counters included)"
        ),
        "{verdict}"
    );
}

/// A pipe (here a FIFO with no writer, which would block an open forever) is an input
/// error naming it, at once.
#[cfg(unix)]
#[test]
fn a_pipe_is_refused_without_blocking() {
    let (a, _) = case_paths(&expected()["cases"]["update_bn"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let fifo = dir.path().join("fifo.safetensors");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo");
    assert!(made.success());
    let out = bnaudit()
        .arg("diff")
        .arg(&a)
        .arg(&fifo)
        .timeout(std::time::Duration::from_secs(20))
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8(out.stderr).expect("utf-8");
    assert!(
        err.contains(&format!("{}: not a regular file", fifo.display()))
            && err.lines().count() == 1,
        "{err}"
    );
}

/// A checkpoint against itself: nothing was trained, so no verdict claims the sub-model
/// was frozen with its BatchNorm kept in eval mode.
#[test]
fn a_checkpoint_against_itself_claims_nothing_happened() {
    let (a, _) = case_paths(&expected()["cases"]["frozen_train_mode"]);
    let (code, report) = diff_json(&a, &a, &["--exit-code"]);
    assert_eq!(code, 0);
    let groups = report["groups"].as_array().expect("groups");
    assert!(!groups.is_empty());
    for g in groups {
        let verdict = g["verdict"].as_str().expect("verdict");
        assert!(
            verdict.ends_with("— nothing in the model changed"),
            "{verdict}"
        );
    }
}

#[test]
fn input_and_usage_errors() {
    let (a, _) = case_paths(&expected()["cases"]["frozen_eval"]);
    let missing = bnaudit()
        .arg("diff")
        .arg(&a)
        .arg("no/such.safetensors")
        .output()
        .expect("runs");
    assert_eq!(missing.status.code(), Some(3));
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(
        err.contains("no/such.safetensors") && err.lines().count() == 1,
        "{err}"
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let cut = dir.path().join("cut.safetensors");
    let bytes = std::fs::read(&a).expect("read");
    std::fs::write(&cut, &bytes[..bytes.len() - 10]).expect("write");
    let truncated = bnaudit()
        .arg("diff")
        .arg(&a)
        .arg(&cut)
        .output()
        .expect("runs");
    assert_eq!(truncated.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&truncated.stderr).contains("cut.safetensors"));

    for bad in [
        ["--momentum", "2"],
        ["--momentum", "fast"],
        ["--atol", "-1"],
        ["--rtol", "nan"],
    ] {
        let out = bnaudit()
            .arg("diff")
            .arg(&a)
            .arg(&a)
            .args(bad)
            .output()
            .expect("runs");
        assert_eq!(out.status.code(), Some(2), "{bad:?}");
    }
    let junit = bnaudit()
        .arg("diff")
        .arg(&a)
        .arg(&a)
        .args(["--format", "junit"])
        .output()
        .expect("runs");
    assert_eq!(junit.status.code(), Some(2));
}

#[test]
fn identical_checkpoints() {
    let (a, _) = case_paths(&expected()["cases"]["frozen_eval"]);
    let (code, r) = diff_json(&a, &a, &["--exit-code"]);
    assert_eq!(code, 0);
    assert_eq!(r["summary"]["changed"], false);
    assert!(
        r["layers"]
            .as_array()
            .expect("layers")
            .iter()
            .all(|l| l["status"] == "unchanged" && l["inference"]["consistent"] == true)
    );
}

/// Pairs of different architectures: layers on one side only, a channel count and an
/// affine setting that differ.
#[test]
fn architecture_changes() {
    let f = fixtures();
    let status = |report: &Value, name: &str| {
        report["layers"]
            .as_array()
            .expect("layers")
            .iter()
            .find(|l| l["name"] == name)
            .unwrap_or_else(|| panic!("no layer {name}"))["status"]
            .clone()
    };
    let (code, r) = diff_json(
        &f.join("frozen_train_mode/a.safetensors"),
        &f.join("bn1d_3d/a.safetensors"),
        &["--exit-code"],
    );
    assert_eq!(code, 1);
    assert_eq!(status(&r, "backbone.stem.bn"), "only_in_a");
    assert_eq!(status(&r, "backbone.bn"), "only_in_b");
    // BatchNorm2d(8) in A, BatchNorm1d(6) in B.
    assert_eq!(status(&r, "head.bn"), "incompatible");
    let (_, r) = diff_json(
        &f.join("frozen_train_mode/a.safetensors"),
        &f.join("affine_false/a.safetensors"),
        &[],
    );
    assert_eq!(status(&r, "backbone.stem.bn"), "incompatible");
    let verdicts: Vec<&str> = r["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .map(|g| g["verdict"].as_str().expect("verdict"))
        .collect();
    assert!(
        verdicts.iter().any(|v| v.contains("affine setting")),
        "{verdicts:?}"
    );
}

/// `bnaudit demo` shows the diff of the bundled pair, whose generator fine-tuned the head
/// for FINETUNE_STEPS steps with the backbone frozen but in train mode.
#[test]
fn demo_shows_the_diff_of_the_pair() {
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/demo");
    let script = std::fs::read_to_string(demo.join("gen_demo.py")).expect("gen_demo.py");
    let steps: i64 = script
        .lines()
        .find_map(|l| l.strip_prefix("FINETUNE_STEPS = "))
        .and_then(|v| v.trim().parse().ok())
        .expect("FINETUNE_STEPS in gen_demo.py");
    // From `/`: the pair is embedded in the binary, not read from the source tree.
    let out = bnaudit()
        .arg("demo")
        .current_dir("/")
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(0));
    assert!(
        out.stderr.is_empty(),
        "no progress line when not a terminal"
    );
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let (a, b) = (
        demo.join("pretrained.safetensors"),
        demo.join("finetuned.safetensors"),
    );
    let direct = bnaudit().arg("diff").args([&a, &b]).output().expect("runs");
    let direct = String::from_utf8(direct.stdout).expect("utf-8");
    // The same report but for the A and B lines' paths: the unpacked copies' directory.
    let unpacked = text
        .lines()
        .find_map(|l| l.strip_prefix("A  "))
        .and_then(|l| l.split("  ").next())
        .and_then(|p| Path::new(p).parent())
        .expect("the A line names the unpacked pretrained checkpoint")
        .to_path_buf();
    assert_ne!(unpacked, demo);
    assert!(
        !unpacked.exists(),
        "the unpacked copies are removed after the run"
    );
    assert_eq!(
        text.replace(&unpacked.display().to_string(), &demo.display().to_string()),
        direct
    );
    let backbone = text
        .lines()
        .find(|l| l.contains("backbone: "))
        .expect("a backbone verdict");
    assert!(
        backbone.contains("BatchNorm layers drifted, weights unchanged"),
        "{backbone}"
    );
    assert!(
        backbone.contains(&format!("+{steps} train-mode forwards each")),
        "{backbone}"
    );
}

/// The README shows real output of `bnaudit diff` on the demo pair; it must stay real.
#[test]
fn readme_shows_the_real_demo_diff() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    let marker = "On the demo pair (`bnaudit diff assets/demo/pretrained.safetensors assets/demo/finetuned.safetensors`):\n\n```\n";
    let start = readme.find(marker).expect("the demo block in README.md") + marker.len();
    let end = start + readme[start..].find("\n```\n").expect("its end");
    let out = bnaudit()
        .current_dir(root)
        .args([
            "diff",
            "assets/demo/pretrained.safetensors",
            "assets/demo/finetuned.safetensors",
        ])
        .output()
        .expect("runs");
    let text = String::from_utf8(out.stdout).expect("utf-8");
    assert_eq!(&readme[start..end], text.trim_end_matches('\n'));
}
