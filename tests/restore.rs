//! `bnaudit restore` against what a PyTorch repair script writes (tests/fixtures/restore),
//! read back through the `safetensors` crate, and the output-file rules it shares with
//! every `--output`.

mod writer;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use assert_cmd::cargo::CommandCargoExt;
use bnaudit::audit::restore::{self, RestoreOptions};
use bnaudit::audit::scope::Scope;
use bnaudit::checkpoint::{Checkpoint, ReadMode};
use serde_json::Value;

use writer::SafetensorsWriter;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/restore")
}

fn expected() -> Value {
    serde_json::from_str(&fs::read_to_string(fixtures().join("expected.json")).unwrap()).unwrap()
}

fn bnaudit(dir: &Path, args: &[&str]) -> Output {
    Command::cargo_bin("bnaudit")
        .unwrap()
        .current_dir(dir)
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Every tensor of a safetensors file as the crate reads it: dtype, shape, bytes.
type Tensors = BTreeMap<String, (String, Vec<usize>, Vec<u8>)>;

fn read_with_crate(path: &Path) -> (Tensors, BTreeMap<String, String>) {
    let bytes = fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let tensors = st
        .tensors()
        .into_iter()
        .map(|(n, v)| {
            (
                n,
                (
                    format!("{:?}", v.dtype()),
                    v.shape().to_vec(),
                    v.data().to_vec(),
                ),
            )
        })
        .collect();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let meta = meta
        .metadata()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    (tensors, meta)
}

fn restored_list(meta: &BTreeMap<String, String>) -> Vec<String> {
    serde_json::from_str(&meta["bnaudit_restored"]).unwrap()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect()
}

/// Each case: the output equals PyTorch's repaired state dict tensor for tensor, byte for
/// byte (A's buffers where restored, cast by `Tensor.to` for the fp16 B; B's everywhere
/// else, under B's names); B's metadata is kept; `check A OUT` then passes.
#[test]
fn output_equals_the_pytorch_repair() {
    let cases = expected();
    let dir = tempfile::tempdir().unwrap();
    for (case, facts) in cases.as_object().unwrap() {
        let a = fixtures().join(facts["a"].as_str().unwrap());
        let b = fixtures().join(facts["b"].as_str().unwrap());
        let out = dir.path().join(format!("{case}.safetensors"));
        let mut args = vec![
            "restore".to_owned(),
            a.display().to_string(),
            b.display().to_string(),
        ];
        args.extend(strings(&facts["args"]));
        args.extend(["-o".to_owned(), out.display().to_string()]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let run = bnaudit(dir.path(), &args);
        assert_eq!(run.status.code(), Some(0), "{case}: {}", text(&run.stderr));
        let (ours, meta) = read_with_crate(&out);
        let (theirs, _) = read_with_crate(&fixtures().join(case).join("expected.safetensors"));
        assert_eq!(
            ours.keys().collect::<Vec<_>>(),
            theirs.keys().collect::<Vec<_>>(),
            "{case}: names"
        );
        for (name, t) in &theirs {
            assert_eq!(&ours[name], t, "{case}: {name}");
        }
        let want = strings(&facts["restored"]);
        assert_eq!(restored_list(&meta), want, "{case}");
        let (_, b_meta) = read_with_crate(&b);
        for (k, v) in &b_meta {
            assert_eq!(meta.get(k), Some(v), "{case}: B's metadata {k}");
        }
        let check = bnaudit(
            dir.path(),
            &[
                "check",
                &a.display().to_string(),
                &out.display().to_string(),
                "--frozen",
                "backbone",
            ],
        );
        assert_eq!(
            check.status.code(),
            Some(0),
            "{case}: {}",
            text(&check.stdout)
        );
    }
}

fn pair(case: &str) -> (String, String) {
    let facts = &expected()[case];
    let p = |k: &str| {
        fixtures()
            .join(facts[k].as_str().unwrap())
            .display()
            .to_string()
    };
    (p("a"), p("b"))
}

/// Without patterns the scope is every frozen_stats_drift layer: here the backbone's, the
/// same tensors as `--frozen backbone`. JSON has the contract's fields; `--dry-run` writes
/// nothing and reports the same plan.
#[test]
fn derived_scope_json_and_dry_run() {
    let (a, b) = pair("frozen_train_mode");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.safetensors");
    let o = out.display().to_string();
    let run = bnaudit(
        dir.path(),
        &["restore", &a, &b, "-o", &o, "--dry-run", "--format", "json"],
    );
    assert_eq!(run.status.code(), Some(0), "{}", text(&run.stderr));
    assert!(!out.exists());
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    let report: Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(report["schema_version"], 1);
    assert_eq!(report["dry_run"], true);
    assert_eq!(report["output"], o);
    assert_eq!(report["scope"]["source"], "frozen_stats_drift");
    let tensors: Vec<String> = report["restored"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            assert_eq!(r["reason"], "frozen_stats_drift");
            assert!(r["layer"].as_str().unwrap().starts_with("backbone."));
            r["tensor"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(
        tensors,
        strings(&expected()["frozen_train_mode"]["restored"])
    );
    let (ours, _) = read_with_crate(Path::new(&b));
    assert_eq!(report["kept"], ours.len() - tensors.len());
    let text_run = bnaudit(dir.path(), &["restore", &a, &b, "-o", &o, "--dry-run"]);
    let shown = text(&text_run.stdout);
    assert!(
        shown.contains("backbone: 15 tensors restored in 5 layers"),
        "{shown}"
    );
    assert!(shown.contains("dry run: nothing written"), "{shown}");
    assert!(!out.exists());
}

/// The output may not be an input: A, B, through a symbolic link, or a shard of B.
#[test]
fn refuses_to_replace_an_input() {
    let (a, b) = pair("frozen_train_mode");
    let dir = tempfile::tempdir().unwrap();
    let copy_b = dir.path().join("b.safetensors");
    fs::copy(&b, &copy_b).unwrap();
    let link = dir.path().join("link.safetensors");
    std::os::unix::fs::symlink(&copy_b, &link).unwrap();
    let before = fs::read(&copy_b).unwrap();
    let copy_b = copy_b.display().to_string();
    for out in [a.clone(), copy_b.clone(), link.display().to_string()] {
        let run = bnaudit(dir.path(), &["restore", &a, &copy_b, "-o", &out]);
        assert_eq!(run.status.code(), Some(2), "{out}");
        assert!(text(&run.stderr).contains("never replaces an input"));
    }
    assert_eq!(fs::read(&copy_b).unwrap(), before);
    let sharded = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/diff/sharded");
    let shard = sharded.join("b/model-00002-of-00002.safetensors");
    let run = bnaudit(
        dir.path(),
        &[
            "restore",
            &sharded.join("a.safetensors").display().to_string(),
            &sharded.join("b").display().to_string(),
            "-o",
            &shard.display().to_string(),
        ],
    );
    assert_eq!(run.status.code(), Some(2));
    assert!(
        text(&run.stderr).contains("a file of B"),
        "{}",
        text(&run.stderr)
    );
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 2);
}

/// A sharded B restores into one file equal to the unsharded repair.
#[test]
fn sharded_b_restores_into_one_file() {
    let sharded = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/diff/sharded");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.safetensors");
    let run = bnaudit(
        dir.path(),
        &[
            "restore",
            &sharded.join("a.safetensors").display().to_string(),
            &sharded.join("b").display().to_string(),
            "--frozen",
            "backbone",
            "-o",
            &out.display().to_string(),
        ],
    );
    assert_eq!(run.status.code(), Some(0), "{}", text(&run.stderr));
    let (ours, _) = read_with_crate(&out);
    let (theirs, _) = read_with_crate(&fixtures().join("frozen_train_mode/expected.safetensors"));
    assert_eq!(ours, theirs);
}

/// A write that fails half-way (B truncated after it was opened) leaves neither the output
/// nor a temporary file, and an existing output as it was.
#[test]
fn failed_write_leaves_nothing() {
    let (a, b) = pair("frozen_train_mode");
    let dir = tempfile::tempdir().unwrap();
    let copy_b = dir.path().join("b.safetensors");
    fs::copy(&b, &copy_b).unwrap();
    let a = Checkpoint::open(&a, ReadMode::Pread).unwrap();
    let b = Checkpoint::open(&copy_b, ReadMode::Pread).unwrap();
    let out = dir.path().join("out.safetensors");
    fs::write(&out, "previous").unwrap();
    let options = RestoreOptions {
        scope: Some(Scope::new(&["backbone".to_owned()], &[], &[]).unwrap()),
        config: None,
        all: false,
        diff: Default::default(),
        output: out.clone(),
        dry_run: false,
    };
    let plan = restore::plan(&a, &b, &options, None).unwrap();
    let len = fs::metadata(&copy_b).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&copy_b)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let mut file = bnaudit::output::Output::create(&out).unwrap();
    assert!(plan.write(&mut file).is_err());
    drop(file);
    assert_eq!(fs::read_to_string(&out).unwrap(), "previous");
    let names: Vec<String> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
}

/// Every safetensors fixture our reader opens gives the crate's names, dtypes, shapes and
/// bytes.
#[test]
fn reader_agrees_with_the_crate_on_every_fixture() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    let mut stack = vec![root.join("tests/fixtures"), root.join("assets/demo")];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "safetensors") {
                files.push(p);
            }
        }
    }
    let mut opened = 0;
    for f in &files {
        let Ok(ours) = Checkpoint::open(f, ReadMode::Mmap) else {
            continue;
        };
        let bytes = fs::read(f).unwrap();
        let theirs = safetensors::SafeTensors::deserialize(&bytes)
            .unwrap_or_else(|e| panic!("{}: the crate refuses a file we open: {e}", f.display()));
        assert_eq!(ours.tensors().len(), theirs.len(), "{}", f.display());
        for t in ours.tensors() {
            let v = theirs.tensor(&t.name).unwrap();
            assert_eq!(
                format!("{:?}", v.dtype()).replace('_', ""),
                t.dtype.as_str().replace('_', "")
            );
            let shape: Vec<u64> = v.shape().iter().map(|&d| d as u64).collect();
            assert_eq!(shape, t.shape, "{}: {}", f.display(), t.name);
            assert_eq!(
                &*ours.bytes(t).unwrap(),
                v.data(),
                "{}: {}",
                f.display(),
                t.name
            );
        }
        opened += 1;
    }
    assert!(opened > 40, "only {opened} fixtures opened");
}

/// `--output` of a report: `/dev/stdout`, a FIFO, a symbolic link, a read-only file, the
/// umask for a new file, the old mode for a replaced one, and the checkpoint-name guard in
/// any case.
#[test]
fn report_outputs_follow_cp() {
    let (a, _) = pair("frozen_train_mode");
    let dir = tempfile::tempdir().unwrap();
    let ls = |out: &str| bnaudit(dir.path(), &["ls", &a, "--format", "json", "-o", out]);
    let run = ls("/dev/stdout");
    assert_eq!(run.status.code(), Some(0), "{}", text(&run.stderr));
    let shown: Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(shown["schema_version"], 1);

    let fifo = dir.path().join("pipe");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || fs::read(fifo).unwrap())
    };
    assert_eq!(ls(&fifo.display().to_string()).status.code(), Some(0));
    let through: Value = serde_json::from_slice(&reader.join().unwrap()).unwrap();
    assert_eq!(through, shown);

    let real = dir.path().join("real.json");
    fs::write(&real, "old").unwrap();
    fs::set_permissions(&real, fs::Permissions::from_mode(0o640)).unwrap();
    let link = dir.path().join("link.json");
    std::os::unix::fs::symlink("real.json", &link).unwrap();
    assert_eq!(ls("link.json").status.code(), Some(0));
    assert!(
        fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    let replaced = fs::metadata(&real).unwrap();
    assert_eq!(replaced.permissions().mode() & 0o777, 0o640);
    assert_eq!(
        serde_json::from_slice::<Value>(&fs::read(&real).unwrap()).unwrap(),
        shown
    );

    let ro = dir.path().join("ro.json");
    fs::write(&ro, "keep").unwrap();
    fs::set_permissions(&ro, fs::Permissions::from_mode(0o444)).unwrap();
    let run = ls("ro.json");
    assert_eq!(run.status.code(), Some(2));
    assert!(
        text(&run.stderr).contains("read-only"),
        "{}",
        text(&run.stderr)
    );
    assert_eq!(fs::read_to_string(&ro).unwrap(), "keep");

    for (umask, mode) in [("022", 0o644), ("077", 0o600)] {
        let name = format!("new-{umask}.json");
        let status = Command::new("sh")
            .current_dir(dir.path())
            .arg("-c")
            .arg(format!(
                "umask {umask}; exec \"$0\" ls \"$1\" --format json -o {name}"
            ))
            .arg(assert_cmd::cargo::cargo_bin("bnaudit"))
            .arg(&a)
            .status()
            .unwrap();
        assert!(status.success());
        let m = fs::metadata(dir.path().join(&name)).unwrap();
        assert_eq!(m.permissions().mode() & 0o777, mode, "umask {umask}");
    }

    let run = ls("report.SAFETENSORS");
    assert_eq!(run.status.code(), Some(2));
    assert!(!dir.path().join("report.SAFETENSORS").exists());
    let leftovers: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".bnaudit-tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// The restored checkpoint follows the same rules: a new file gets the umask's mode.
#[test]
fn restored_file_mode_follows_the_umask() {
    let (a, b) = pair("frozen_train_mode");
    let dir = tempfile::tempdir().unwrap();
    let status = Command::new("sh")
        .current_dir(dir.path())
        .arg("-c")
        .arg("umask 027; exec \"$0\" restore \"$1\" \"$2\" -o out.safetensors")
        .arg(assert_cmd::cargo::cargo_bin("bnaudit"))
        .arg(&a)
        .arg(&b)
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let m = fs::metadata(dir.path().join("out.safetensors")).unwrap();
    assert_eq!(m.permissions().mode() & 0o777, 0o640);
}

/// SIGTERM while the output is being written removes the temporary file.
#[test]
fn sigterm_removes_the_temporary_file() {
    let dir = tempfile::tempdir().unwrap();
    // Large enough that comparing and copying it takes a while in any build.
    let n = 24 << 20;
    let a_bytes = vec![0u8; n];
    let mut b_bytes = a_bytes.clone();
    b_bytes[n - 1] = 1;
    for (name, bytes) in [("a.safetensors", &a_bytes), ("b.safetensors", &b_bytes)] {
        SafetensorsWriter::default()
            .raw("big.weight", "U8", &[n], bytes)
            .f32_filled("big.bn.running_mean", 4, 0.0)
            .write(&dir.path().join(name));
    }
    let mut killed = false;
    for _ in 0..5 {
        let mut child = Command::cargo_bin("bnaudit")
            .unwrap()
            .current_dir(dir.path())
            .args([
                "restore",
                "a.safetensors",
                "b.safetensors",
                "--frozen",
                "big",
                "--all",
                "--no-mmap",
                "-o",
                "out.safetensors",
            ])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let temp = loop {
            let found = fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().path())
                .find(|p| p.to_string_lossy().ends_with(".bnaudit-tmp"));
            if found.is_some() || child.try_wait().unwrap().is_some() {
                break found;
            }
        };
        let Some(temp) = temp else {
            let _ = child.wait();
            let _ = fs::remove_file(dir.path().join("out.safetensors"));
            continue;
        };
        let pid = child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        let status = child.wait().unwrap();
        if status.code() == Some(0) {
            let _ = fs::remove_file(dir.path().join("out.safetensors"));
            continue;
        }
        assert_eq!(status.code(), Some(128 + 15));
        assert!(!temp.exists());
        assert!(!dir.path().join("out.safetensors").exists());
        killed = true;
        break;
    }
    assert!(killed, "the restore always finished before the signal");
}

/// A torch.save B (views, shared storages) comes out as a safetensors file with the same
/// names, dtypes, shapes and bytes as the torch reader gives (which tests/torch.rs checks
/// against PyTorch).
#[test]
fn torch_b_is_written_as_safetensors() {
    let torch = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/torch/views.pt");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.safetensors");
    let t = torch.display().to_string();
    let run = bnaudit(
        dir.path(),
        &["restore", &t, &t, "-o", &out.display().to_string()],
    );
    assert_eq!(run.status.code(), Some(0), "{}", text(&run.stderr));
    let (ours, _) = read_with_crate(&out);
    let b = Checkpoint::open(&torch, ReadMode::Mmap).unwrap();
    assert_eq!(ours.len(), b.tensors().len());
    for info in b.tensors() {
        let (dtype, shape, bytes) = &ours[&info.name];
        assert_eq!(dtype.replace('_', ""), info.dtype.as_str().replace('_', ""));
        let shape: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
        assert_eq!(shape, info.shape);
        assert_eq!(bytes.as_slice(), &*b.bytes(info).unwrap(), "{}", info.name);
    }
}
