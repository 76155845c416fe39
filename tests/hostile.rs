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

/// Runs bnaudit in `dir`, giving up after 120 s (a FIFO opened for reading would block; the
/// debug build on a loaded machine can be slow).
fn run_in(dir: &Path, args: &[&str]) -> Output {
    Command::cargo_bin("bnaudit")
        .unwrap()
        .current_dir(dir)
        .args(args)
        .timeout(Duration::from_secs(120))
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

/// A checkpoint of one BatchNorm layer of `channels` F32 channels, sparse (all zeros) so
/// that it costs no disk; returns its path and where its data starts.
fn big_layer(dir: &Path, channels: u64) -> (PathBuf, u64) {
    let bytes = channels * 4;
    let mut entries = Vec::new();
    for (i, name) in ["bias", "running_mean", "running_var", "weight"]
        .iter()
        .enumerate()
    {
        let start = i as u64 * bytes;
        entries.push(format!(
            r#""bn.{name}":{{"dtype":"F32","shape":[{channels}],"data_offsets":[{start},{}]}}"#,
            start + bytes
        ));
    }
    let end = 4 * bytes;
    entries.push(format!(
        r#""bn.num_batches_tracked":{{"dtype":"I64","shape":[],"data_offsets":[{end},{}]}}"#,
        end + 8
    ));
    let header = format!("{{{}}}", entries.join(","));
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    let data_start = out.len() as u64;
    let path = dir.join("big.safetensors");
    fs::write(&path, &out).unwrap();
    set_len(&path, data_start + end + 8);
    (path, data_start)
}

fn set_len(path: &Path, len: u64) {
    fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len)
        .unwrap();
}

/// `ls` and `explain` while another process truncates the checkpoint under them, at delays
/// spread over one untruncated run: through the memory map this used to die of SIGBUS
/// (exit 135, no message) in about half the trials. Now every run either finishes or exits
/// 3 with one line naming the file, in both read modes; and some mapped runs do get the
/// fault (the handler's "while memory-mapped" message), so the test reproduces the bug.
#[test]
fn truncating_a_checkpoint_while_it_is_read_is_an_input_error() {
    let dir = tempfile::tempdir().unwrap();
    let (path, data_start) = big_layer(dir.path(), 1 << 20);
    let full = fs::metadata(&path).unwrap().len();
    let file = path.display().to_string();
    let commands: [&[&str]; 2] = [&["ls", &file], &["explain", &file, &file]];
    let bin = assert_cmd::cargo::cargo_bin("bnaudit");
    let mut signalled = Vec::new();
    let mut faults = 0;
    for no_mmap in [false, true] {
        for args in commands {
            let mut command = std::process::Command::new(&bin);
            command.args(args);
            if no_mmap {
                command.arg("--no-mmap");
            }
            command
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped());
            let started = std::time::Instant::now();
            let out = command.output().unwrap();
            assert!(out.status.success(), "{out:?}");
            let span = started.elapsed();
            let trials = 8;
            let mut cut_while_reading = 0;
            for trial in 0..trials {
                let child = command.spawn().unwrap();
                std::thread::sleep(span * trial / trials);
                // Into the first tensor: every tensor the statistics read lies past it.
                set_len(&path, data_start + 1024);
                let out = child.wait_with_output().unwrap();
                set_len(&path, full);
                let err = String::from_utf8_lossy(&out.stderr);
                match out.status.code() {
                    Some(0) => {}
                    Some(3) => {
                        assert_eq!(err.lines().count(), 1, "{err}");
                        assert!(err.contains(&file) && !err.contains("panicked"), "{err}");
                        if err.contains("while memory-mapped") {
                            faults += 1;
                            cut_while_reading += 1;
                        } else if err.contains("shrank") {
                            cut_while_reading += 1;
                        }
                    }
                    _ => signalled.push(format!("{args:?} no_mmap={no_mmap}: {out:?}")),
                }
            }
            eprintln!(
                "{args:?} no_mmap={no_mmap}: {cut_while_reading}/{trials} cut while reading \
                 (one run {span:?})"
            );
        }
    }
    assert!(signalled.is_empty(), "{}", signalled.join("\n"));
    assert!(
        faults > 0,
        "no mapped read was ever cut: the test did not reach the fault"
    );
}

/// A sharded checkpoint of `shards` shards, one BatchNorm layer's statistics in each.
fn many_shards(dir: &Path, shards: usize) -> PathBuf {
    let mut map = Vec::new();
    for i in 0..shards {
        let shard = format!("model-{i:05}.safetensors");
        let header = format!(
            r#"{{"layer{i}.bn.running_mean":{{"dtype":"F32","shape":[2],"data_offsets":[0,8]}},"layer{i}.bn.running_var":{{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}}}"#
        );
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header.as_bytes());
        bytes.extend(1.5f32.to_le_bytes().repeat(4));
        fs::write(dir.join(&shard), bytes).unwrap();
        for t in ["running_mean", "running_var"] {
            map.push(format!(r#""layer{i}.bn.{t}":"{shard}""#));
        }
    }
    let index = dir.join("model.safetensors.index.json");
    fs::write(&index, format!(r#"{{"weight_map":{{{}}}}}"#, map.join(","))).unwrap();
    index
}

/// Every shard used to keep its descriptor open, so a directory of more shards than
/// `ulimit -n` failed with "Too many open files". Under a limit of 200 descriptors, `ls` and
/// `diff` of 2,000 shards (4,000 files for the two sides) work, in both read modes.
#[test]
fn open_files_stay_bounded_whatever_the_number_of_shards() {
    use std::os::unix::process::CommandExt;
    const { assert!(bnaudit::checkpoint::handles::MAX_OPEN_FILES < 150) };
    let dir = tempfile::tempdir().unwrap();
    many_shards(dir.path(), 2_000);
    let d = dir.path().display().to_string();
    for no_mmap in [false, true] {
        for args in [vec!["ls", &d], vec!["diff", &d, &d]] {
            let mut command = std::process::Command::new(assert_cmd::cargo::cargo_bin("bnaudit"));
            command.args(&args).args(["--format", "json"]);
            if no_mmap {
                command.arg("--no-mmap");
            }
            // SAFETY: setrlimit is async-signal-safe, as a pre_exec closure must be.
            unsafe {
                command.pre_exec(|| {
                    let limit = libc::rlimit {
                        rlim_cur: 200,
                        rlim_max: 200,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                });
            }
            let out = command.output().unwrap();
            assert!(
                out.status.success(),
                "{args:?} no_mmap={no_mmap}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(text.contains("layer1999.bn"), "{text}");
        }
    }
}
