//! `view` and `demo` off a terminal print reports instead of starting the UI.

use assert_cmd::Command;
use predicates::prelude::*;

use super::harness::{EXPLAIN_A, EXPLAIN_ACTS, EXPLAIN_B};

fn bnaudit() -> Command {
    Command::cargo_bin("bnaudit").expect("binary built")
}

#[test]
fn demo_off_a_terminal_prints_the_diff() {
    bnaudit()
        .arg("demo")
        .assert()
        .success()
        .stdout(predicate::str::contains("Verdicts"))
        .stdout(predicate::str::contains(
            "backbone: 20/20 BatchNorm layers drifted",
        ));
}

#[test]
fn view_with_activations_prints_diff_then_explain() {
    bnaudit()
        .args(["view", EXPLAIN_A, EXPLAIN_B, "--activations", EXPLAIN_ACTS])
        .assert()
        .success()
        .stdout(predicate::str::contains("frozen_stats_drift"))
        .stdout(predicate::str::contains(
            "The 3 captured train-mode forwards account for B exactly.",
        ));
}

#[test]
fn activations_need_a_pair_and_text() {
    bnaudit()
        .args(["view", EXPLAIN_A, "--activations", EXPLAIN_ACTS])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "--activations needs two checkpoints",
        ));
    bnaudit()
        .args([
            EXPLAIN_A,
            EXPLAIN_B,
            "--activations",
            EXPLAIN_ACTS,
            "--format",
            "json",
        ])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("no JSON form"));
}

#[test]
fn unreadable_activation_file_is_an_input_error() {
    bnaudit()
        .args([
            "view",
            EXPLAIN_A,
            EXPLAIN_B,
            "--activations",
            "no/such.safetensors",
        ])
        .assert()
        .code(3)
        .stderr(predicate::str::contains("no/such.safetensors"));
}

#[test]
fn no_checkpoint_is_a_usage_error() {
    bnaudit()
        .assert()
        .code(2)
        .stderr(predicate::str::contains("no checkpoint given"));
}

/// `view A` off a terminal is `ls A`, byte for byte, as text and as JSON (the contract's
/// object, not a list of one).
#[test]
fn view_of_one_checkpoint_prints_its_ls_report() {
    for format in ["text", "json"] {
        let out = |cmd: &str| {
            bnaudit()
                .args([cmd, EXPLAIN_A, "--format", format])
                .output()
                .expect("runs")
        };
        let (view, ls) = (out("view"), out("ls"));
        assert!(view.status.success() && ls.status.success());
        assert_eq!(
            String::from_utf8(view.stdout).expect("utf-8"),
            String::from_utf8(ls.stdout).expect("utf-8"),
            "--format {format}"
        );
    }
}
