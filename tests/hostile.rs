//! Hostile inputs beyond malformed bytes: FIFOs and devices where files are expected,
//! endless or huge configuration files, files that shrink while being read, and more shards
//! than the process may hold open. Each is refused with one line naming the file, never a
//! hang, a crash or unbounded memory.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use assert_cmd::Command;
use bnaudit::audit::check::MAX_LISTED_PATTERNS;
use bnaudit::checkpoint::input::MAX_CONFIG_LEN;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A PyTorch-made pair whose backbone drifted, by absolute path.
fn pair() -> [String; 2] {
    let dir = root().join("tests/fixtures/diff/frozen_train_mode");
    ["a.safetensors", "b.safetensors"].map(|f| dir.join(f).display().to_string())
}

/// Runs bnaudit in `dir`, giving up after 20 s: a FIFO opened for reading would block.
fn run_in(dir: &Path, args: &[&str]) -> Output {
    Command::cargo_bin("bnaudit")
        .unwrap()
        .current_dir(dir)
        .args(args)
        .timeout(Duration::from_secs(20))
        .output()
        .unwrap()
}

fn mkfifo(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    let made = std::process::Command::new("mkfifo").arg(&path).status();
    assert!(made.is_ok_and(|s| s.success()), "mkfifo failed");
    path
}

/// Exit `code`, one stderr line naming `named` and containing `expect`, nothing on stdout.
fn refused(out: &Output, code: i32, named: &str, expect: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.contains(named), "names {named}: {err}");
    assert!(err.contains(expect), "says {expect:?}: {err}");
    assert!(out.stdout.is_empty());
}

/// `--config` naming a FIFO, /dev/zero, /dev/urandom or an oversized file, and the same
/// found in the working directory: a usage error naming it, before any read.
#[test]
fn configuration_that_is_not_a_small_regular_file_is_refused() {
    let [a, b] = pair();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let fifo = mkfifo(d, "fifo.toml");
    std::os::unix::fs::symlink("/dev/zero", d.join("zero.toml")).unwrap();
    std::os::unix::fs::symlink("/dev/urandom", d.join("pyproject.toml")).unwrap();
    let big = d.join("big.toml");
    fs::File::create(&big)
        .unwrap()
        .set_len(MAX_CONFIG_LEN + 1)
        .unwrap();
    for (name, expect) in [
        ("fifo.toml", "not a regular file (a pipe or device)"),
        ("zero.toml", "not a regular file (a pipe or device)"),
        ("pyproject.toml", "not a regular file (a pipe or device)"),
        (
            "big.toml",
            "configuration file is 16777217 bytes, over the limit of 16777216 bytes",
        ),
    ] {
        let out = run_in(
            d,
            &["check", &a, &b, "--frozen", "backbone", "--config", name],
        );
        refused(&out, 2, name, expect);
    }
    // Found rather than named: the FIFO bnaudit.toml is reported, not opened.
    fs::rename(&fifo, d.join("bnaudit.toml")).unwrap();
    let out = run_in(d, &["check", &a, &b, "--frozen", "backbone"]);
    refused(&out, 2, "bnaudit.toml", "not a regular file");
}

/// Another tool's broken table in pyproject.toml is not ours to judge: `check` with its
/// scope on the command line runs; once the file has a `[tool.bnaudit]` table, its errors count.
#[test]
fn broken_pyproject_without_bnaudit_table_is_ignored() {
    // A against itself: the gate passes, so any non-zero exit is the configuration's.
    let [a, _] = pair();
    let b = a.clone();
    let dir = tempfile::tempdir().unwrap();
    let py = dir.path().join("pyproject.toml");
    fs::write(
        &py,
        "[project]\nname = \"x\"\n[tool.poetry\nversion = = 1\n",
    )
    .unwrap();
    let out = run_in(dir.path(), &["check", &a, &b, "--frozen", "backbone"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    fs::write(
        &py,
        "[tool.poetry\nversion = = 1\n[tool.bnaudit]\ntrainable = []\n",
    )
    .unwrap();
    let out = run_in(dir.path(), &["check", &a, &b, "--frozen", "backbone"]);
    refused(&out, 2, "pyproject.toml", "pyproject.toml:1:");
}

/// An activation file that is a FIFO or a device is an input error, not a hang.
#[test]
fn activation_file_that_is_a_pipe_or_device_is_refused() {
    let [a, b] = pair();
    let dir = tempfile::tempdir().unwrap();
    let fifo = mkfifo(dir.path(), "acts.safetensors").display().to_string();
    for acts in [fifo.as_str(), "/dev/zero"] {
        let out = run_in(dir.path(), &["explain", &a, &b, "--activations", acts]);
        refused(&out, 3, acts, "not a regular file (a pipe or device)");
    }
}

/// 200,000 patterns that match nothing: the error stays one short line.
#[test]
fn unmatched_pattern_list_is_capped() {
    let [a, b] = pair();
    let dir = tempfile::tempdir().unwrap();
    let n = 200_000;
    let list: Vec<String> = (0..n).map(|i| format!("\"nothing{i}\"")).collect();
    fs::write(
        dir.path().join("bnaudit.toml"),
        format!("frozen = [{}]\n", list.join(",")),
    )
    .unwrap();
    let out = run_in(dir.path(), &["check", &a, &b]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.lines().count(), 1);
    assert!(err.len() < 2000, "{} bytes", err.len());
    assert!(err.contains("\"nothing0\""), "{err}");
    assert!(
        err.contains(&format!("and {} more", n - MAX_LISTED_PATTERNS)),
        "{err}"
    );
}
