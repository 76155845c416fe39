//! `bnaudit check` end to end, on checkpoint pairs made by real PyTorch.
//!
//! The expected violations come from what PyTorch recorded about each pair
//! (tests/fixtures/check/expected.json: the tensors `torch.equal` calls changed, the ones
//! removed, added or reshaped, the counters, non-finite and negative statistics), filtered
//! by the frozen scope of the test.

use std::collections::BTreeSet;
use std::path::Path;

use assert_cmd::Command;
use serde_json::Value;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Checkpoint A and B of a pair of tests/fixtures/diff, relative to the crate root.
fn diff_pair(case: &str) -> [String; 2] {
    let dir = format!("tests/fixtures/diff/{case}");
    let b = if root().join(&dir).join("b.safetensors").exists() {
        format!("{dir}/b.safetensors")
    } else {
        format!("{dir}/b")
    };
    [format!("{dir}/a.safetensors"), b]
}

/// Checkpoint A and B of a pair of tests/fixtures/check.
fn check_pair(case: &str) -> [String; 2] {
    [
        "tests/fixtures/check/base.safetensors".to_owned(),
        format!("tests/fixtures/check/{case}.safetensors"),
    ]
}

/// What PyTorch recorded about a pair.
fn facts(group: &str, case: &str) -> Value {
    let text = std::fs::read_to_string(root().join("tests/fixtures/check/expected.json"))
        .expect("expected.json");
    let all: Value = serde_json::from_str(&text).expect("valid JSON");
    all[group][case].clone()
}

fn names(v: &Value, key: &str) -> Vec<String> {
    v[key]
        .as_array()
        .unwrap_or_else(|| panic!("{key} is a list"))
        .iter()
        .map(|n| n.as_str().expect("a name").to_owned())
        .collect()
}

/// Runs bnaudit in `dir` (the crate root by default): exit code, stdout, stderr.
fn run_in(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::cargo_bin("bnaudit")
        .expect("binary")
        .current_dir(dir)
        .env_remove("NO_COLOR")
        .args(args)
        .output()
        .expect("runs");
    (
        out.status.code().expect("exit code"),
        String::from_utf8(out.stdout).expect("UTF-8"),
        String::from_utf8(out.stderr).expect("UTF-8"),
    )
}

/// `check A B EXTRA… --format json` in `dir`: the exit code, the report, stderr.
fn check_json_in(dir: &Path, a: &str, b: &str, extra: &[&str]) -> (i32, Value, String) {
    let args = [&["check", a, b][..], extra, &["--format", "json"]].concat();
    let (code, out, err) = run_in(dir, &args);
    let report = serde_json::from_str(&out).unwrap_or_else(|e| panic!("JSON ({e}): {out}"));
    (code, report, err)
}

fn run(args: &[&str]) -> (i32, String, String) {
    run_in(root(), args)
}

/// `check A B ARGS --format json`: exit code and report.
fn check_json(pair: &[String; 2], args: &[&str]) -> (i32, Value) {
    let mut all = vec!["check", &pair[0], &pair[1]];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--format", "json"]);
    let (code, out, err) = run(&all);
    assert!(matches!(code, 0 | 1), "exit {code}: {err}");
    (code, serde_json::from_str(&out).expect("JSON report"))
}

type Found = BTreeSet<(String, String, Option<String>)>;

fn violations(report: &Value) -> Found {
    let list = report["violations"].as_array().expect("violations");
    let set: Found = list
        .iter()
        .map(|v| {
            (
                v["kind"].as_str().expect("kind").to_owned(),
                v["layer"].as_str().expect("layer").to_owned(),
                v["tensor"].as_str().map(str::to_owned),
            )
        })
        .collect();
    assert_eq!(set.len(), list.len(), "no duplicate violations");
    set
}

/// A name without Flax's collection segment (`params/`, `batch_stats/`).
fn module_tree(name: &str) -> &str {
    name.strip_prefix("params/")
        .or_else(|| name.strip_prefix("batch_stats/"))
        .unwrap_or(name)
}

fn parent(name: &str) -> &str {
    name.rfind(['.', '/']).map_or(name, |i| &name[..i])
}

/// Whether a tensor name is a BatchNorm running statistic or counter, by each framework's
/// naming.
fn is_stat(name: &str) -> bool {
    [
        ".running_mean",
        ".running_var",
        ".num_batches_tracked",
        "/moving_mean:0",
        "/moving_variance:0",
    ]
    .iter()
    .any(|s| name.ends_with(s))
        || (name.starts_with("batch_stats/") && (name.ends_with("/mean") || name.ends_with("/var")))
}

/// Whether `name` is under one of the literal module paths `prefixes`.
fn under(name: &str, prefixes: &[&str]) -> bool {
    let n = module_tree(name);
    prefixes.iter().any(|p| {
        n.strip_prefix(p)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '/']))
    })
}

/// The violations PyTorch's record implies for a scope of literal module paths.
fn expected(facts: &Value, frozen: &[&str], trainable: &[&str], allow_stats: &[&str]) -> Found {
    let in_scope = |n: &str| under(n, frozen) && !under(n, trainable);
    let layer = |n: &str| module_tree(parent(n)).to_owned();
    let mut out = Found::new();
    for n in names(facts, "changed").iter().filter(|n| in_scope(n)) {
        if !is_stat(n) {
            out.insert(("frozen_weight_changed".into(), layer(n), Some(n.clone())));
        } else if !under(n, allow_stats) {
            out.insert(("frozen_stats_drift".into(), layer(n), None));
        }
    }
    for (key, kind) in [
        ("removed", "frozen_tensor_missing"),
        ("added", "frozen_tensor_added"),
        ("reshaped", "frozen_shape_changed"),
        ("nonfinite_in_b", "nonfinite"),
        ("negative_var_in_b", "negative_var"),
    ] {
        for n in names(facts, key).iter().filter(|n| in_scope(n)) {
            out.insert((kind.into(), layer(n), Some(n.clone())));
        }
    }
    out
}

/// The counter delta PyTorch recorded for `layer`, if it has a counter on both sides.
fn counter(facts: &Value, layer: &str) -> Option<(i64, i64)> {
    let c = &facts["counters"][format!("{layer}.num_batches_tracked")];
    Some((c[0].as_i64()?, c[1].as_i64()?))
}

/// Every stats-drift detail states the counter as PyTorch recorded it.
fn assert_counter_details(report: &Value, facts: &Value) {
    for v in report["violations"].as_array().expect("list") {
        if v["kind"] != "frozen_stats_drift" {
            continue;
        }
        let layer = v["layer"].as_str().expect("layer");
        let detail = v["detail"].as_str().expect("detail");
        let Some((a, b)) = counter(facts, layer) else {
            continue;
        };
        let want = match b - a {
            0 => format!("unchanged at {a}"),
            1 => format!("{a} → {b}: +1 train-mode forward"),
            d if d > 0 => format!("{a} → {b}: +{d} train-mode forwards"),
            _ => format!("{a} → {b}: the counter went down"),
        };
        assert!(detail.contains(&want), "{layer}: {detail:?} lacks {want:?}");
    }
}

#[test]
fn frozen_backbone_left_in_train_mode_fails_with_stats_drift() {
    let f = facts("diff_pairs", "frozen_train_mode");
    let (code, report) = check_json(&diff_pair("frozen_train_mode"), &["--frozen", "backbone"]);
    assert_eq!(code, 1);
    assert_eq!(report["passed"], false);
    let found = violations(&report);
    assert_eq!(found, expected(&f, &["backbone"], &[], &[]));
    assert_eq!(found.len(), 5, "the five backbone BatchNorm layers");
    assert!(
        found
            .iter()
            .all(|(k, _, t)| k == "frozen_stats_drift" && t.is_none())
    );
    assert_counter_details(&report, &f);
    assert_eq!(report["scope"]["frozen"], serde_json::json!(["backbone"]));
    assert_eq!(report["diff"]["schema_version"], 1);
}

#[test]
fn frozen_backbone_done_right_passes() {
    let f = facts("diff_pairs", "frozen_eval");
    assert!(
        names(&f, "changed").iter().any(|n| n.starts_with("head.")),
        "the head was trained"
    );
    let (code, report) = check_json(&diff_pair("frozen_eval"), &["--frozen", "backbone"]);
    assert_eq!(code, 0);
    assert_eq!(report["passed"], true);
    assert_eq!(violations(&report), Found::new());
    assert_eq!(report["compared"]["batchnorm_layers"], 5);
    // Only the frozen scope was compared: no head tensor in the embedded diff.
    let tensors = report["diff"]["tensors"].as_array().expect("tensors");
    assert!(!tensors.is_empty());
    assert!(
        tensors
            .iter()
            .all(|t| t["name"].as_str().unwrap().starts_with("backbone."))
    );
}

#[test]
fn allow_stats_lets_backbone_statistics_move() {
    let (code, report) = check_json(
        &diff_pair("frozen_train_mode"),
        &["--frozen", "backbone", "--allow-stats", "backbone"],
    );
    assert_eq!((code, violations(&report)), (0, Found::new()));
    let modules = report["modules"].as_array().expect("modules");
    assert!(
        modules
            .iter()
            .filter(|m| m["batchnorm"] == true)
            .all(|m| m["allow_stats"] == true)
    );
}

#[test]
fn leaked_requires_grad_changes_frozen_conv_weights() {
    let f = facts("diff_pairs", "leaked_requires_grad");
    let (code, report) = check_json(
        &diff_pair("leaked_requires_grad"),
        &["--frozen", "backbone"],
    );
    assert_eq!(code, 1);
    let found = violations(&report);
    assert_eq!(found, expected(&f, &["backbone"], &[], &[]));
    for conv in ["backbone.layer2.0.conv", "backbone.layer2.1.conv"] {
        let tensor = format!("{conv}.weight");
        assert!(found.contains(&(
            "frozen_weight_changed".into(),
            conv.into(),
            Some(tensor.clone())
        )));
    }
    assert!(found.iter().all(|(k, _, _)| k == "frozen_weight_changed"));
    // With allow-stats the weights still count.
    let (code, report) = check_json(
        &diff_pair("leaked_requires_grad"),
        &["--frozen", "backbone", "--allow-stats", "backbone"],
    );
    assert_eq!((code, violations(&report)), (1, found));
}

#[test]
fn trainable_carves_out_of_the_frozen_scope() {
    let f = facts("diff_pairs", "partial_freeze");
    let args = [
        "--frozen",
        "backbone",
        "--trainable",
        "backbone.layer2,backbone.stem",
    ];
    let (code, report) = check_json(&diff_pair("partial_freeze"), &args);
    assert_eq!(code, 1);
    let found = violations(&report);
    let want = expected(
        &f,
        &["backbone"],
        &["backbone.layer2", "backbone.stem"],
        &[],
    );
    assert_eq!(found, want);
    let layers: BTreeSet<&str> = found.iter().map(|(_, l, _)| l.as_str()).collect();
    assert_eq!(
        layers,
        BTreeSet::from(["backbone.layer1.0.bn", "backbone.layer1.1.bn"])
    );
    let (code, report) = check_json(
        &diff_pair("leaked_requires_grad"),
        &["--frozen", "backbone", "--trainable", "backbone.layer2"],
    );
    assert_eq!((code, violations(&report)), (0, Found::new()));
}

#[test]
fn pattern_forms_select_the_modules_they_name() {
    let f = facts("diff_pairs", "frozen_train_mode");
    let pair = diff_pair("frozen_train_mode");
    let cases: [(&[&str], &[&str]); 5] = [
        (
            &["backbone.layer[12]"],
            &["backbone.layer1", "backbone.layer2"],
        ),
        (&["backbone.layer[2]"], &["backbone.layer2"]),
        (
            &["backbone.*.0"],
            &["backbone.layer1.0", "backbone.layer2.0"],
        ),
        (
            &["**.bn"],
            &[
                "backbone.stem.bn",
                "backbone.layer1.0.bn",
                "backbone.layer1.1.bn",
                "backbone.layer2.0.bn",
                "backbone.layer2.1.bn",
                "head.bn",
            ],
        ),
        (
            &["backbone.**.1"],
            &["backbone.layer1.1", "backbone.layer2.1"],
        ),
    ];
    for (patterns, literal) in cases {
        let mut args = vec!["--frozen"];
        args.extend_from_slice(patterns);
        let (_, report) = check_json(&pair, &args);
        assert_eq!(
            violations(&report),
            expected(&f, literal, &[], &[]),
            "{patterns:?}"
        );
    }
}

#[test]
fn wrapper_prefix_is_aligned_before_matching() {
    let f = facts("diff_pairs", "ddp_prefix");
    let (code, report) = check_json(&diff_pair("ddp_prefix"), &["--frozen", "backbone"]);
    assert_eq!(code, 1);
    assert_eq!(report["diff"]["alignment"]["strip_b"], "module.");
    assert_eq!(violations(&report), expected(&f, &["backbone"], &[], &[]));
    assert_counter_details(&report, &f);
}

#[test]
fn a_cast_alone_is_not_a_violation() {
    let f = facts("diff_pairs", "fp16_save");
    assert_eq!(names(&f, "changed"), Vec::<String>::new());
    let (code, report) = check_json(&diff_pair("fp16_save"), &["--frozen", "backbone,head"]);
    assert_eq!((code, violations(&report)), (0, Found::new()));
    let tensors = report["diff"]["tensors"].as_array().expect("tensors");
    assert!(tensors.iter().any(|t| t["change"] == "dtype_changed"));
}

#[test]
fn every_recorded_pair_gives_the_violations_pytorch_implies() {
    for case in [
        "sharded",
        "eval_forgot_eval",
        "update_bn",
        "counter_only",
        "counter_still",
        "keras",
        "flax",
    ] {
        let f = facts("diff_pairs", case);
        let (code, report) = check_json(&diff_pair(case), &["--frozen", "backbone"]);
        let want = expected(&f, &["backbone"], &[], &[]);
        assert!(!want.is_empty(), "{case}: the backbone changed");
        assert_eq!(violations(&report), want, "{case}");
        assert_eq!(code, 1, "{case}");
        assert_counter_details(&report, &f);
    }
}

#[test]
fn counter_only_and_overwritten_statistics_are_explained() {
    let (_, report) = check_json(&diff_pair("counter_only"), &["--frozen", "backbone"]);
    let detail = report["violations"][0]["detail"].as_str().expect("detail");
    assert!(
        detail.starts_with("running statistics identical but"),
        "{detail}"
    );
    let (_, report) = check_json(&diff_pair("counter_still"), &["--frozen", "backbone"]);
    let detail = report["violations"][0]["detail"].as_str().expect("detail");
    assert!(detail.contains("overwritten"), "{detail}");
}

#[test]
fn structural_edits_inside_the_scope_are_violations() {
    let f = facts("pairs", "structure");
    let (code, report) = check_json(&check_pair("structure"), &["--frozen", "backbone"]);
    assert_eq!(code, 1);
    let found = violations(&report);
    assert_eq!(found, expected(&f, &["backbone"], &[], &[]));
    let kinds: BTreeSet<&str> = found.iter().map(|(k, _, _)| k.as_str()).collect();
    assert_eq!(
        kinds,
        BTreeSet::from([
            "frozen_shape_changed",
            "frozen_tensor_added",
            "frozen_tensor_missing"
        ])
    );
    let shape = report["violations"]
        .as_array()
        .expect("list")
        .iter()
        .find(|v| v["kind"] == "frozen_shape_changed")
        .expect("a shape change");
    assert_eq!(
        shape["detail"],
        "shape [4, 4, 3, 3] in A, [4, 4, 1, 1] in B"
    );
    // The head changed too, outside the scope.
    let (code, _) = check_json(&check_pair("structure"), &["--frozen", "head"]);
    assert_eq!(code, 1);
    let (code, _) = check_json(&check_pair("structure"), &["--frozen", "backbone.stem"]);
    assert_eq!(code, 0);
}

#[test]
fn nonfinite_and_negative_statistics_in_b_are_violations() {
    let f = facts("pairs", "health");
    let (code, report) = check_json(&check_pair("health"), &["--frozen", "backbone"]);
    assert_eq!(code, 1);
    let found = violations(&report);
    assert_eq!(found, expected(&f, &["backbone"], &[], &[]));
    assert!(found.contains(&(
        "negative_var".into(),
        "backbone.stage2.bn".into(),
        Some("backbone.stage2.bn.running_var".into())
    )));
    // Allowing the statistics to move does not make NaN or a negative variance healthy.
    let (code, report) = check_json(
        &check_pair("health"),
        &["--frozen", "backbone", "--allow-stats", "backbone"],
    );
    assert_eq!(code, 1);
    let kinds: BTreeSet<String> = violations(&report).into_iter().map(|v| v.0).collect();
    assert_eq!(
        kinds,
        BTreeSet::from(["negative_var".to_owned(), "nonfinite".to_owned()])
    );
    assert_counter_details(&report, &f);
}

/// Counts of one read in the singular: "1 module", "1 of 4 channels … is negative".
#[test]
fn singular_counts_in_check_text() {
    let [a, b] = check_pair("health");
    let (code, out, _) = run(&["check", &a, &b, "--frozen", "backbone.stage2.bn"]);
    assert_eq!(code, 1);
    assert!(
        out.contains("in 1 module, 1 of them a BatchNorm layer")
            && out.contains("1 of 4 channels of running_var in B is negative"),
        "{out}"
    );
}

/// A temporary working directory holding `files`.
fn workdir(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).expect("write");
    }
    dir
}

/// Absolute paths of a diff pair, for runs outside the crate root.
fn abs(pair: &[String; 2]) -> [String; 2] {
    pair.clone()
        .map(|p| root().join(p).to_str().expect("UTF-8 path").to_owned())
}

#[test]
fn configuration_file_supplies_the_scope_and_the_command_line_wins() {
    let [a, b] = abs(&diff_pair("frozen_train_mode"));
    let dir = workdir(&[(
        "bnaudit.toml",
        "frozen = [\"backbone\"]\nallow_stats = [\"backbone.layer1\"]\n",
    )]);
    let (code, report, err) = check_json_in(dir.path(), &a, &b, &[]);
    assert_eq!(code, 1, "{err}");
    let layers: BTreeSet<&str> = report["violations"]
        .as_array()
        .expect("list")
        .iter()
        .map(|v| v["layer"].as_str().expect("layer"))
        .collect();
    assert_eq!(
        layers,
        BTreeSet::from([
            "backbone.layer2.0.bn",
            "backbone.layer2.1.bn",
            "backbone.stem.bn"
        ])
    );
    assert!(
        report["scope"]["config"]
            .as_str()
            .unwrap()
            .ends_with("bnaudit.toml")
    );
    // --frozen replaces the file's `frozen`; its `allow_stats` still applies.
    let (code, report, _) = check_json_in(dir.path(), &a, &b, &["--frozen", "backbone.layer1"]);
    assert_eq!(code, 0);
    assert_eq!(
        report["scope"]["frozen"],
        serde_json::json!(["backbone.layer1"])
    );
    assert_eq!(
        report["scope"]["allow_stats"],
        serde_json::json!(["backbone.layer1"])
    );
    // --allow-stats replaces the file's list.
    let (code, report, _) = check_json_in(dir.path(), &a, &b, &["--allow-stats", "backbone"]);
    assert_eq!(code, 0, "{report}");
}

#[test]
fn pyproject_and_explicit_config_files_are_read() {
    let [a, b] = abs(&diff_pair("frozen_train_mode"));
    let dir = workdir(&[
        (
            "pyproject.toml",
            "[project]\nname = \"x\"\n\n[tool.bnaudit]\nfrozen = [\"head\"]\n",
        ),
        (
            "gate.toml",
            "frozen = [\"backbone.layer2\"]\ntrainable = []\n",
        ),
    ]);
    let (code, report, _) = check_json_in(dir.path(), &a, &b, &[]);
    assert_eq!(code, 1);
    assert_eq!(report["scope"]["frozen"], serde_json::json!(["head"]));
    assert!(
        report["scope"]["config"]
            .as_str()
            .unwrap()
            .ends_with("pyproject.toml")
    );
    let (code, report, _) = check_json_in(dir.path(), &a, &b, &["--config", "gate.toml"]);
    assert_eq!(code, 1);
    assert_eq!(
        report["scope"]["frozen"],
        serde_json::json!(["backbone.layer2"])
    );
    assert_eq!(report["violations"].as_array().unwrap().len(), 2);
}

#[test]
fn scope_errors_are_usage_errors_naming_the_culprit() {
    let [a, b] = abs(&diff_pair("frozen_train_mode"));
    let empty = workdir(&[]);
    let (code, _, err) = run_in(empty.path(), &["check", &a, &b]);
    assert_eq!(code, 2);
    assert!(err.contains("no frozen scope"), "{err}");
    let (code, _, err) = run_in(empty.path(), &["check", &a, &b, "--frozen", "layer[12"]);
    assert_eq!(code, 2);
    assert!(err.contains("\"layer[12\""), "{err}");
    let (code, _, err) = run_in(empty.path(), &["check", &a, &b, "--frozen", "backbon"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("\"backbon\"") && err.contains("no tensor"),
        "{err}"
    );
    let bad = workdir(&[("bnaudit.toml", "frozen = [\"backbone\"]\nfrozn = []\n")]);
    let (code, _, err) = run_in(bad.path(), &["check", &a, &b]);
    assert_eq!(code, 2);
    assert!(
        err.contains("bnaudit.toml:2:1") && err.contains("frozn"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    let (code, _, err) = run_in(empty.path(), &["check", &a, &b, "--config", "missing.toml"]);
    assert_eq!(code, 2);
    assert!(err.contains("missing.toml"), "{err}");
    // The reason once, not repeated by the error chain.
    assert_eq!(err.matches("no such file or directory").count(), 1, "{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
}

#[test]
fn unreadable_checkpoint_is_an_input_error() {
    let [a, _] = diff_pair("frozen_eval");
    let (code, _, err) = run(&["check", &a, "no/such.safetensors", "--frozen", "backbone"]);
    assert_eq!(code, 3);
    assert!(err.contains("no/such.safetensors"), "{err}");
}

/// `check` of the frozen-backbone-in-train-mode pair in `format`.
fn rendered(format: &str) -> String {
    let [a, b] = diff_pair("frozen_train_mode");
    let (code, out, err) = run(&["check", &a, &b, "--frozen", "backbone", "--format", format]);
    assert_eq!(code, 1, "{err}");
    out
}

#[test]
fn text_leads_with_the_verdict() {
    let text = rendered("text");
    assert!(text.starts_with("bnaudit check: FAILED: 5 violations"));
    insta::assert_snapshot!("text", text);
    let [a, b] = diff_pair("frozen_train_mode");
    let (_, coloured, _) = run(&["check", &a, &b, "--frozen", "backbone", "--color", "always"]);
    assert!(coloured.contains("\x1b[31m"));
}

#[test]
fn json_report_follows_the_contract() {
    let mut report: Value = serde_json::from_str(&rendered("json")).expect("JSON");
    let diff = report
        .as_object_mut()
        .expect("object")
        .remove("diff")
        .expect("diff");
    assert_eq!(diff["layers"].as_array().expect("layers").len(), 5);
    insta::assert_snapshot!("json", serde_json::to_string_pretty(&report).expect("JSON"));
}

#[test]
fn junit_is_well_formed_with_one_case_per_frozen_module() {
    use quick_xml::Reader;
    use quick_xml::events::Event;

    let xml = rendered("junit");
    let mut reader = Reader::from_str(&xml);
    let (mut cases, mut failures, mut depth) = (0, 0, 0i32);
    loop {
        match reader.read_event().expect("well-formed XML") {
            Event::Start(e) => {
                depth += 1;
                match e.name().as_ref() {
                    b"testcase" => cases += 1,
                    b"failure" => failures += 1,
                    _ => {}
                }
            }
            Event::Empty(e) if e.name().as_ref() == b"testcase" => cases += 1,
            Event::End(_) => depth -= 1,
            Event::Eof => break,
            _ => {}
        }
    }
    assert_eq!(depth, 0, "balanced");
    assert_eq!((cases, failures), (10, 5), "10 frozen modules, 5 drifted");
    insta::assert_snapshot!("junit", xml);
}

#[test]
fn github_annotations_are_escaped() {
    let out = rendered("github");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines.len(),
        1 + 5 + 5 + 1,
        "summary annotation, one per violation, the plain list, summary"
    );
    assert!(
        lines[..6]
            .iter()
            .all(|l| l.starts_with("::error title=bnaudit"))
    );
    // Titles hold ':' and ',', escaped in properties; messages are single lines.
    assert!(lines[1].starts_with("::error title=bnaudit%3A frozen_stats_drift in "));
    assert!(lines[0].contains("%0A"));
    assert!(
        lines[6..11]
            .iter()
            .all(|l| l.starts_with("bnaudit: frozen_stats_drift in "))
    );
    assert!(lines[11].starts_with("bnaudit check: FAILED"));
    insta::assert_snapshot!("github", out);
}

/// GitHub shows about ten annotations per step: the ten most severe violations are
/// annotated, the leading annotation counts the rest, and the log lists every violation.
#[test]
fn github_annotates_the_ten_most_severe() {
    let [a, b] = check_pair("structure");
    let (code, out, _) = run(&["check", &a, &b, "--frozen", "**", "--format", "github"]);
    assert_eq!(code, 1);
    let (_, json, _) = run(&["check", &a, &b, "--frozen", "**", "--format", "json"]);
    let report: Value = serde_json::from_str(&json).expect("JSON");
    let total = report["violations"].as_array().expect("list").len();
    assert!(
        total > 10,
        "the fixture has more violations than annotations"
    );
    let annotations: Vec<&str> = out.lines().filter(|l| l.starts_with("::")).collect();
    assert_eq!(annotations.len(), 1 + 10, "{out}");
    assert!(annotations[0].contains(&format!(
        "The 10 most severe violations are annotated; the other {} are listed in this step's log.",
        total - 10
    )));
    // Most severe first: weights before shapes before missing before added tensors.
    let rank = |line: &str| {
        [
            "frozen_weight_changed",
            "frozen_shape_changed",
            "frozen_tensor_missing",
            "frozen_tensor_added",
        ]
        .iter()
        .position(|k| line.contains(&format!("%3A {k} in ")))
        .expect("a known kind")
    };
    let ranks: Vec<usize> = annotations[1..].iter().map(|l| rank(l)).collect();
    assert!(ranks.is_sorted(), "{ranks:?}");
    assert_eq!(
        out.lines().filter(|l| l.starts_with("bnaudit: ")).count(),
        total,
        "every violation in the log"
    );
    // Broken statistics lead.
    let [a, b] = check_pair("health");
    let (_, out, _) = run(&["check", &a, &b, "--frozen", "**", "--format", "github"]);
    let second = out.lines().nth(1).expect("a violation annotation");
    assert!(second.contains("%3A nonfinite in "), "{out}");
}

#[test]
fn markdown_table_has_a_row_per_violation() {
    let md = rendered("markdown");
    assert!(md.starts_with("### ❌ bnaudit check: FAILED"));
    assert_eq!(
        md.lines().filter(|l| l.starts_with("| `frozen_")).count(),
        5
    );
    insta::assert_snapshot!("markdown", md);
}

#[test]
fn output_file_is_written_whole() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("report.xml");
    let [a, b] = diff_pair("frozen_eval");
    let p = path.to_str().expect("UTF-8");
    let (code, out, _) = run(&[
        "check", &a, &b, "--frozen", "backbone", "--format", "junit", "--output", p,
    ]);
    assert_eq!((code, out.as_str()), (0, ""));
    let xml = std::fs::read_to_string(&path).expect("written");
    assert!(xml.starts_with("<?xml") && xml.contains("failures=\"0\""));
}

#[test]
fn ci_formats_are_for_check_only() {
    let [a, b] = diff_pair("frozen_eval");
    for args in [
        vec!["ls", &a, "--format", "junit"],
        vec!["diff", &a, &b, "--format", "github"],
        vec![&a, &b, "--format", "markdown"],
    ] {
        let (code, _, err) = run(&args);
        assert_eq!(code, 2, "{args:?}");
        assert!(err.contains("[possible values: text, json]"), "{err}");
    }
    // Help lists what each subcommand accepts.
    let (_, ls_help, _) = run(&["ls", "--help"]);
    assert!(!ls_help.contains("junit"), "{ls_help}");
    let (_, check_help, _) = run(&["check", "--help"]);
    assert!(
        ["junit", "github", "markdown"]
            .iter()
            .all(|f| check_help.contains(f))
    );
}

/// Every command's help ends with its exit codes and examples; check's also shows the
/// configuration file.
#[test]
fn every_help_gives_exit_codes_and_examples() {
    for cmd in [
        &[][..],
        &["view"],
        &["demo"],
        &["ls"],
        &["diff"],
        &["check"],
        &["explain"],
    ] {
        let mut args = cmd.to_vec();
        args.push("--help");
        let (code, out, _) = run(&args);
        assert_eq!(code, 0, "{args:?}");
        assert!(out.contains("Exit codes: 0"), "{args:?}:\n{out}");
        assert!(out.contains("Examples:\n  bnaudit "), "{args:?}:\n{out}");
    }
    let (_, out, _) = run(&["diff", "--help"]);
    assert!(out.contains("1 with --exit-code: something"), "{out}");
    // The commands in DESIGN's order.
    let (_, out, _) = run(&["--help"]);
    let at = |c: &str| {
        out.find(&format!("\n  {c} "))
            .unwrap_or_else(|| panic!("{c}: {out}"))
    };
    let order: Vec<usize> = ["view", "demo", "ls", "diff", "check", "explain", "help"]
        .iter()
        .map(|c| at(c))
        .collect();
    assert!(order.is_sorted(), "{out}");
    let (_, out, _) = run(&["check", "--help"]);
    assert!(
        out.contains("[tool.bnaudit]") && out.contains("frozen = [\"backbone\"]"),
        "{out}"
    );
}

/// The README shows the first lines of real `check` output on the demo pair.
#[test]
fn readme_shows_the_real_demo_check() {
    let readme = std::fs::read_to_string(root().join("README.md")).expect("README.md");
    let marker = "On the demo pair (`bnaudit check assets/demo/pretrained.safetensors \
                  assets/demo/finetuned.safetensors --frozen backbone`, exit code 1), the first \
                  lines:\n\n```\n";
    let start = readme.find(marker).expect("the check demo block") + marker.len();
    let end = start + readme[start..].find("\n  …\n```\n").expect("its end");
    let (code, out, _) = run(&[
        "check",
        "assets/demo/pretrained.safetensors",
        "assets/demo/finetuned.safetensors",
        "--frozen",
        "backbone",
    ]);
    assert_eq!(code, 1);
    assert!(
        out.starts_with(&readme[start..end]),
        "README block is not a prefix of:\n{out}"
    );
}

/// Each pattern option takes one value per occurrence, a comma-separated list, so options
/// go anywhere among A and B; the configuration file's lists split the same way.
#[test]
fn pattern_options_take_comma_lists_anywhere() {
    let [a, b] = diff_pair("frozen_train_mode");
    let scope = |args: &[&str]| {
        let mut all = vec!["check"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--format", "json"]);
        let (code, out, err) = run(&all);
        assert_eq!(code, 1, "{args:?}: {err}");
        let report: Value = serde_json::from_str(&out).expect("JSON");
        (report["scope"].clone(), report["violations"].clone())
    };
    let first = scope(&[
        "--frozen",
        "backbone",
        &a,
        "--allow-stats",
        "backbone.layer1,backbone.stem",
        &b,
        "--frozen",
        "head",
    ]);
    let last = scope(&[
        &a,
        &b,
        "--frozen",
        "backbone,head",
        "--allow-stats",
        "backbone.layer1",
        "--allow-stats",
        "backbone.stem",
    ]);
    assert_eq!(first, last);
    assert_eq!(first.0["frozen"], serde_json::json!(["backbone", "head"]));
    assert_eq!(
        first.0["allow_stats"],
        serde_json::json!(["backbone.layer1", "backbone.stem"])
    );
    // The typed-first form of the issue.
    assert_eq!(run(&["check", "--frozen", "backbone", &a, &b]).0, 1);

    let [a, b] = abs(&diff_pair("frozen_train_mode"));
    let dir = workdir(&[("bnaudit.toml", "frozen = [\"backbone, head\"]\n")]);
    let (code, report, err) = check_json_in(dir.path(), &a, &b, &[]);
    assert_eq!(code, 1, "{err}");
    assert_eq!(
        report["scope"]["frozen"],
        serde_json::json!(["backbone", "head"])
    );
}

/// A scope whose frozen patterns match, but which `--trainable` empties, is a usage error:
/// the gate would compare nothing and pass.
#[test]
fn a_scope_that_leaves_nothing_frozen_is_a_usage_error() {
    let [a, b] = diff_pair("frozen_train_mode");
    let (code, out, err) = run(&["check", &a, &b, "--frozen", "*", "--trainable", "*"]);
    assert_eq!((code, out.as_str()), (2, ""));
    assert!(
        err.contains("the scope leaves nothing frozen: trainable \"*\" carves out every tensor"),
        "{err}"
    );
    let (code, _, err) = run(&[
        "check",
        &a,
        &b,
        "--frozen",
        "backbone",
        "--trainable",
        "backbone.stem,backbone.layer[12]",
    ]);
    assert_eq!(code, 2, "{err}");
    // Something left frozen: judged as usual.
    let (code, _, _) = run(&[
        "check",
        &a,
        &b,
        "--frozen",
        "backbone",
        "--trainable",
        "backbone.layer[12]",
    ]);
    assert_eq!(code, 1);
}

/// A first word that is no file and is close to a subcommand is a typo, not a checkpoint.
#[test]
fn a_mistyped_subcommand_is_named() {
    let [a, _] = diff_pair("frozen_train_mode");
    for (typo, meant) in [("chek", "check"), ("dif", "diff"), ("explian", "explain")] {
        let (code, out, err) = run(&[typo, &a]);
        assert_eq!((code, out.as_str()), (2, ""), "{typo}");
        assert!(
            err.contains(&format!(
                "unknown command '{typo}'; did you mean '{meant}'?"
            )),
            "{err}"
        );
    }
    // An existing file of that name is a checkpoint (here: not one, an input error).
    let dir = workdir(&[("chek", "not a checkpoint")]);
    let (code, _, err) = run_in(dir.path(), &["chek"]);
    assert_eq!(code, 3, "{err}");
}
