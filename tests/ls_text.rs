//! The text report of `bnaudit ls`: snapshots of real output, and colour control.

use std::path::Path;

use assert_cmd::Command;

/// Runs `bnaudit ls ARGS` from the crate root (so that paths in the output are relative and
/// the snapshots machine-independent) with `env` set, returning stdout.
fn ls(args: &[&str], env: &[(&str, &str)]) -> String {
    let out = Command::cargo_bin("bnaudit")
        .unwrap()
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .arg("ls")
        .args(args)
        .env_remove("NO_COLOR")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn text_of_torch_zoo() {
    insta::assert_snapshot!(ls(&["tests/fixtures/ls/torch_zoo.safetensors"], &[]));
}

#[test]
fn text_of_the_demo_finetuned_checkpoint() {
    insta::assert_snapshot!(ls(&["assets/demo/finetuned.safetensors"], &[]));
}

#[test]
fn text_with_all_tensors() {
    insta::assert_snapshot!(ls(
        &["--all", "tests/fixtures/ls/metadata.safetensors"],
        &[]
    ));
}

#[test]
fn text_with_all_tensors_marks_undecodable_ones() {
    insta::assert_snapshot!(ls(
        &["--all", "tests/fixtures/ls/dtypes_exotic.safetensors"],
        &[]
    ));
}

const ZOO: &str = "tests/fixtures/ls/torch_zoo.safetensors";
const ESC: char = '\x1b';

#[test]
fn color_always_emits_ansi_and_never_does_not() {
    let coloured = ls(&["--color", "always", ZOO], &[]);
    assert!(coloured.contains("\x1b[1m"), "no bold heading:\n{coloured}");
    // Flagged layers are highlighted.
    assert!(coloured.contains("\x1b[33m"), "no yellow:\n{coloured}");
    // `always` beats NO_COLOR, which only governs `auto`.
    assert_eq!(
        ls(&["--color", "always", ZOO], &[("NO_COLOR", "1")]),
        coloured
    );
    let plain = ls(&["--color", "never", ZOO], &[]);
    assert!(!plain.contains(ESC));
    // Colour changes nothing but the escape codes.
    let stripped = coloured
        .replace("\x1b[0m", "")
        .replace("\x1b[1m", "")
        .replace("\x1b[2m", "")
        .replace("\x1b[33m", "");
    assert_eq!(stripped, plain);
}

/// `auto` colours a terminal unless NO_COLOR is set. A pipe is never coloured, so the
/// terminal case runs under `script` (util-linux), which gives the command a pseudo-terminal.
#[test]
fn color_auto_follows_the_terminal_and_no_color() {
    assert!(!ls(&[ZOO], &[]).contains(ESC), "auto coloured a pipe");
    let script = Path::new("/usr/bin/script");
    assert!(
        script.exists(),
        "CANNOT TEST colour on a terminal: /usr/bin/script (util-linux) is not installed"
    );
    let bin = assert_cmd::cargo::cargo_bin("bnaudit");
    let on_tty = |no_color: Option<&str>| {
        let mut cmd = std::process::Command::new(script);
        cmd.args(["-qec", &format!("{} ls {ZOO}", bin.display()), "/dev/null"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env_remove("NO_COLOR");
        if let Some(v) = no_color {
            cmd.env("NO_COLOR", v);
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap()
    };
    assert!(on_tty(None).contains(ESC), "auto did not colour a terminal");
    assert!(!on_tty(Some("1")).contains(ESC), "NO_COLOR=1 was ignored");
    // no-color.org: an empty NO_COLOR does not count.
    assert!(
        on_tty(Some("")).contains(ESC),
        "empty NO_COLOR turned colour off"
    );
}
