//! torch.save checkpoints against what `torch.load` gives (tests/fixtures/torch, made by
//! gen.py with real PyTorch): every tensor's values, every report equal to the safetensors
//! twin's, `--key`, and a hostile pickle that must run nothing.

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use bnaudit::checkpoint::{Checkpoint, Format, ReadMode};
use serde_json::Value;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/torch")
        .join(name)
}

fn expected() -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture("expected.json")).unwrap()).unwrap()
}

/// torch's dtype name as bnaudit's.
fn dtype_name(torch: &str) -> &'static str {
    match torch {
        "float32" => "F32",
        "float64" => "F64",
        "float16" => "F16",
        "bfloat16" => "BF16",
        "int64" => "I64",
        "int32" => "I32",
        "int16" => "I16",
        "int8" => "I8",
        "uint8" => "U8",
        "uint16" => "U16",
        "uint32" => "U32",
        "uint64" => "U64",
        "bool" => "BOOL",
        "float8_e4m3fn" => "F8_E4M3",
        "float8_e5m2" => "F8_E5M2",
        "float8_e4m3fnuz" => "F8_E4M3FNUZ",
        "float8_e5m2fnuz" => "F8_E5M2FNUZ",
        other => panic!("no bnaudit dtype for torch.{other}"),
    }
}

fn same_value(ours: f64, theirs: &Value) -> bool {
    match theirs.as_f64() {
        Some(t) => ours == t || (ours == 0.0 && t == 0.0),
        None => ours.is_nan(),
    }
}

#[test]
fn every_tensor_equals_what_torch_load_gives() {
    let expected = expected();
    let mut checked = 0;
    for (entry, tensors) in expected.as_object().unwrap() {
        let (file, key) = match entry.split_once('#') {
            Some((f, k)) => (f, Some(k)),
            None => (entry.as_str(), None),
        };
        for mode in [ReadMode::Mmap, ReadMode::Pread] {
            let ckpt = Checkpoint::open_key(fixture(file), mode, key)
                .unwrap_or_else(|e| panic!("{entry}: {e}"));
            assert_eq!(ckpt.format(), Format::Torch, "{entry}");
            let tensors = tensors.as_object().unwrap();
            let mut names: Vec<&str> = ckpt.tensors().iter().map(|t| t.name.as_str()).collect();
            names.sort_unstable();
            let mut want: Vec<&str> = tensors.keys().map(String::as_str).collect();
            want.sort_unstable();
            assert_eq!(names, want, "{entry}: tensor names");
            let all: Vec<_> = ckpt.tensors().iter().collect();
            let many = ckpt.values_many(&all).unwrap();
            // In reverse, so runs are put back in the order asked.
            let mut backwards = all.clone();
            backwards.reverse();
            let mut positioned = ckpt.read_values_many(&backwards).unwrap();
            positioned.reverse();
            for ((t, batch), read) in all.iter().zip(many).zip(positioned) {
                let e = &tensors[&t.name];
                assert_eq!(t.dtype.as_str(), dtype_name(e["dtype"].as_str().unwrap()));
                let shape: Vec<u64> = e["shape"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_u64().unwrap())
                    .collect();
                assert_eq!(t.shape, shape, "{entry} {}", t.name);
                let values = ckpt.values(t).unwrap().expect("decodable");
                let theirs = e["values"].as_array().unwrap();
                assert_eq!(values.len(), theirs.len(), "{entry} {}", t.name);
                for (i, (a, b)) in values.iter().zip(theirs).enumerate() {
                    assert!(same_value(*a, b), "{entry} {}[{i}]: {a} vs {b}", t.name);
                }
                assert_eq!(batch.as_deref(), Some(&values[..]), "{entry} {}", t.name);
                assert_eq!(read.as_deref(), Some(&values[..]), "{entry} {}", t.name);
                // Streaming reads element by element agree with the whole read.
                let whole = ckpt.bytes(t).unwrap();
                let width = (t.dtype.bits() / 8) as usize;
                let mut piece = vec![0u8; width];
                for (i, chunk) in whole.chunks(width).enumerate() {
                    ckpt.read_into(t, (i * width) as u64, &mut piece).unwrap();
                    assert_eq!(piece, chunk, "{entry} {} element {i}", t.name);
                    let read = ckpt.read(t, (i * width) as u64, width as u64).unwrap();
                    assert_eq!(&read[..], chunk);
                }
                checked += 1;
            }
        }
    }
    // Every form of gen.py, with the strided and the sliced tensors among them.
    assert!(checked > 300, "only {checked} tensors checked");
    let views = &expected["views.pt"];
    assert_eq!(views["head.weight"]["contiguous"], false);
    assert_eq!(views["backbone.1.running_mean"]["storage_offset"], 3);
}

fn bnaudit(args: &[&str]) -> (Value, String) {
    let out = Command::cargo_bin("bnaudit")
        .unwrap()
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (serde_json::from_slice(&out.stdout).unwrap(), stderr)
}

/// An `ls` report without what names the files (and, for shards, their index).
fn ls_content(mut report: Value) -> Value {
    let c = report["checkpoint"].as_object_mut().unwrap();
    for k in [
        "path", "files", "bytes", "format", "key", "warnings", "layout", "metadata",
    ] {
        c.remove(k);
    }
    report
}

/// A `diff` report without the two checkpoints' summaries.
fn diff_content(mut report: Value) -> Value {
    let o = report.as_object_mut().unwrap();
    o.remove("a");
    o.remove("b");
    report
}

fn path(name: &str) -> String {
    fixture(name).display().to_string()
}

/// Each torch.save form, with the key that picks the state dict, and its safetensors twin.
const TWINS: &[(&str, Option<&str>, &str)] = &[
    ("plain.pt", None, "model.safetensors"),
    ("lightning.ckpt", None, "model.safetensors"),
    ("timm.pth.tar", None, "model.safetensors"),
    ("timm.pth.tar", Some("state_dict_ema"), "ema.safetensors"),
    ("sharded", None, "model.safetensors"),
    (
        "sharded/pytorch_model.bin.index.json",
        None,
        "model.safetensors",
    ),
    ("half.pt", None, "half.safetensors"),
    ("bf16.pt", None, "bf16.safetensors"),
    ("views.pt", None, "model.safetensors"),
    ("deflated.pt", None, "model.safetensors"),
    ("hostile.pt", None, "model.safetensors"),
];

#[test]
fn every_report_equals_the_safetensors_twins() {
    for &(torch, key, twin) in TWINS {
        for mmap in [&[][..], &["--no-mmap"][..]] {
            let mut args = vec!["ls", "--all", "--format", "json"];
            args.extend_from_slice(mmap);
            let (want, _) = bnaudit(&[&args[..], &[path(twin).as_str()]].concat());
            let mut with_key = args.clone();
            if let Some(k) = key {
                with_key.extend(["--key", k]);
            }
            let (got, _) = bnaudit(&[&with_key[..], &[path(torch).as_str()]].concat());
            assert_eq!(ls_content(got), ls_content(want), "ls {torch}");
        }
        // Mixed freely: the torch file on either side of a diff, against the twin.
        let (want, _) = bnaudit(&["diff", "--format", "json", &path(twin), &path(twin)]);
        let mut args = vec!["diff", "--format", "json"];
        if let Some(k) = key {
            args.extend(["--key-b", k]);
        }
        let (got, _) = bnaudit(&[&args[..], &[path(twin).as_str(), path(torch).as_str()]].concat());
        assert_eq!(
            diff_content(got),
            diff_content(want.clone()),
            "diff twin {torch}"
        );
        assert_eq!(want["summary"]["changed"], false);
    }
    // A real change between two torch files reads as between their twins.
    let (want, _) = bnaudit(&[
        "diff",
        "--format",
        "json",
        &path("model.safetensors"),
        &path("ema.safetensors"),
    ]);
    let (got, _) = bnaudit(&[
        "diff",
        "--format",
        "json",
        "--key-b",
        "state_dict_ema",
        &path("plain.pt"),
        &path("timm.pth.tar"),
    ]);
    assert_eq!(diff_content(got), diff_content(want.clone()));
    assert_eq!(want["summary"]["changed"], true);
}

#[test]
fn ls_json_names_the_format_and_the_key() {
    for (file, key, format, used) in [
        ("model.safetensors", None, "safetensors", Value::Null),
        ("plain.pt", None, "torch", Value::Null),
        ("lightning.ckpt", None, "torch", "state_dict".into()),
        ("timm.pth.tar", None, "torch", "state_dict".into()),
        (
            "timm.pth.tar",
            Some("state_dict_ema"),
            "torch",
            "state_dict_ema".into(),
        ),
    ] {
        let mut args = vec!["ls", "--format", "json"];
        if let Some(k) = key {
            args.extend(["--key", k]);
        }
        let p = path(file);
        args.push(&p);
        let (report, _) = bnaudit(&args);
        assert_eq!(report["checkpoint"]["format"], format, "{file}");
        assert_eq!(report["checkpoint"]["key"], used, "{file}");
    }
}

#[test]
fn a_key_that_names_nothing_lists_the_candidates() {
    let out = Command::cargo_bin("bnaudit")
        .unwrap()
        .args(["ls", "--key", "ema"])
        .arg(fixture("timm.pth.tar"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("timm.pth.tar"), "{stderr}");
    assert!(
        stderr.contains("state_dict (21 tensors), state_dict_ema (21 tensors)"),
        "{stderr}"
    );
}

#[test]
fn a_key_on_a_safetensors_file_is_a_warning() {
    let (report, _) = bnaudit(&[
        "ls",
        "--format",
        "json",
        "--key",
        "state_dict",
        &path("model.safetensors"),
    ]);
    let warnings = report["checkpoint"]["warnings"].to_string();
    assert!(
        warnings.contains("--key applies to torch.save files"),
        "{warnings}"
    );
}

#[test]
fn unknown_globals_are_named_in_the_warnings() {
    let (report, _) = bnaudit(&["ls", "--format", "json", &path("lightning.ckpt")]);
    let warnings = report["checkpoint"]["warnings"].to_string();
    assert!(
        warnings.contains("lightning.fabric.utilities.data.AttributeDict"),
        "{warnings}"
    );
    assert!(!warnings.contains("DANGEROUS"), "{warnings}");
}

const MARKER: &str = "bnaudit_hostile_marker";

fn no_marker(dirs: &[&Path]) {
    for d in dirs {
        assert!(
            !d.join(MARKER).exists(),
            "{} appeared in {}",
            MARKER,
            d.display()
        );
    }
}

#[test]
fn a_hostile_pickle_is_listed_never_run() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hostile.pt");
    std::fs::copy(fixture("hostile.pt"), &file).unwrap();
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let run = |args: &[&str]| {
        Command::cargo_bin("bnaudit")
            .unwrap()
            .current_dir(dir.path())
            .args(args)
            .arg(&file)
            .output()
            .unwrap()
    };
    for no_mmap in [false, true] {
        let mut args = vec!["ls", "--format", "json", "--all"];
        if no_mmap {
            args.push("--no-mmap");
        }
        let json = run(&args);
        assert!(json.status.success());
        let report: Value = serde_json::from_slice(&json.stdout).unwrap();
        assert_eq!(report["checkpoint"]["tensors"], 21);
        assert_eq!(report["layers"].as_array().unwrap().len(), 3);
        let warnings = report["checkpoint"]["warnings"].to_string();
        assert!(
            warnings.contains("DANGEROUS global posix.system"),
            "{warnings}"
        );
        let text = run(&["ls", "--color", "never"]);
        let stdout = String::from_utf8_lossy(&text.stdout);
        assert!(stdout.contains("posix.system"), "{stdout}");
        assert!(stdout.contains("backbone.1"), "{stdout}");
        let diff = Command::cargo_bin("bnaudit")
            .unwrap()
            .current_dir(dir.path())
            .args(["diff", "--color", "never"])
            .arg(fixture("model.safetensors"))
            .arg(&file)
            .output()
            .unwrap();
        assert!(String::from_utf8_lossy(&diff.stdout).contains("system"));
        no_marker(&[dir.path(), &here, &fixture("")]);
    }
}

/// `--output` with a torch.save checkpoint's name (any case) is refused before anything is
/// written: the checkpoint just read stays intact, and no file of the other names appears.
#[test]
fn output_over_a_torch_checkpoint_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("model.pt");
    std::fs::copy(fixture("plain.pt"), &copy).unwrap();
    let before = std::fs::read(&copy).unwrap();
    let names = [
        "model.pt",
        "Model.PTH",
        "pytorch_model.bin",
        "last.ckpt",
        "timm.pth.tar",
        "pytorch_model.bin.index.json",
    ];
    for name in names {
        let target = dir.path().join(name);
        let out = Command::cargo_bin("bnaudit")
            .unwrap()
            .arg("ls")
            .arg(&copy)
            .arg("-o")
            .arg(&target)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{name}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(
            err.contains("refusing to write a report to a checkpoint's name"),
            "{name}: {err}"
        );
        assert_eq!(target.exists(), name == "model.pt", "{name}");
    }
    assert_eq!(std::fs::read(&copy).unwrap(), before);
}

/// `plain.pt` with one more storage entry `plain/data/<extra>` whose local header is damaged,
/// or, with `extra` `None`, with the local header of storage `0` (which a tensor uses)
/// damaged instead.
fn with_damaged_header(dir: &Path, extra: Option<&str>) -> PathBuf {
    use std::io::{Cursor, Write};
    let src = std::fs::read(fixture("plain.pt")).unwrap();
    let mut zip = zip::ZipArchive::new(Cursor::new(&src[..])).unwrap();
    let mut out = zip::ZipWriter::new(Cursor::new(Vec::new()));
    for i in 0..zip.len() {
        out.raw_copy_file(zip.by_index(i).unwrap()).unwrap();
    }
    let damaged = format!("plain/data/{}", extra.unwrap_or("0"));
    if extra.is_some() {
        let stored = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        out.start_file(damaged.as_str(), stored).unwrap();
        out.write_all(&[0; 16]).unwrap();
    }
    let mut bytes = out.finish().unwrap().into_inner();
    let at = zip::ZipArchive::new(Cursor::new(&bytes[..]))
        .unwrap()
        .by_name(&damaged)
        .unwrap()
        .header_start() as usize;
    bytes[at] = b'X';
    let file = dir.join("plain.pt");
    std::fs::write(&file, bytes).unwrap();
    file
}

/// Storage entries are located while the pickle is parsed, all of them; one that no tensor
/// uses is never an error, one that a tensor uses is.
#[test]
fn a_damaged_storage_no_tensor_uses_is_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let (want, _) = bnaudit(&["ls", "--format", "json", "--all", &path("plain.pt")]);
    for no_mmap in [false, true] {
        let mut args = vec!["ls", "--format", "json", "--all"];
        if no_mmap {
            args.push("--no-mmap");
        }
        let unused = with_damaged_header(dir.path(), Some("unused"));
        let p = unused.display().to_string();
        let (got, _) = bnaudit(&[&args[..], &[p.as_str()]].concat());
        assert_eq!(ls_content(got), ls_content(want.clone()));
        let used = with_damaged_header(dir.path(), None);
        let out = Command::cargo_bin("bnaudit")
            .unwrap()
            .args(&args)
            .arg(&used)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(3));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("plain/data/0") && stderr.contains("signature is wrong"),
            "{stderr}"
        );
    }
}

/// The pickle is parsed early from the directory's first record while the rest of the
/// directory is read; when the whole directory names another `data.pkl` (a record repeated
/// with a decoy first), the early parse is dropped and the directory's entry is read, as if
/// nothing had been parsed early.
#[test]
fn an_early_pickle_the_directory_disowns_is_not_used() {
    use std::io::{Cursor, Write};
    let dir = tempfile::tempdir().unwrap();
    let src = std::fs::read(fixture("plain.pt")).unwrap();
    let mut zip = zip::ZipArchive::new(Cursor::new(&src[..])).unwrap();
    let mut out = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let stored =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    // Renamed below to a second `plain/data.pkl`, the first in the archive.
    out.start_file("plain/data.pkx", stored).unwrap();
    out.write_all(b"not a pickle").unwrap();
    for i in 0..zip.len() {
        out.raw_copy_file(zip.by_index(i).unwrap()).unwrap();
    }
    let mut bytes = out.finish().unwrap().into_inner();
    let (from, to) = (b"plain/data.pkx", b"plain/data.pkl");
    let mut renamed = 0;
    for at in 0..bytes.len() - from.len() {
        if &bytes[at..at + from.len()] == from {
            bytes[at..at + to.len()].copy_from_slice(to);
            renamed += 1;
        }
    }
    assert_eq!(renamed, 2, "the local header and the directory record");
    let file = dir.path().join("plain.pt");
    std::fs::write(&file, bytes).unwrap();
    let p = file.display().to_string();
    for mode in [None, Some("--no-mmap")] {
        let mut args = vec!["ls", "--format", "json", "--all"];
        args.extend(mode);
        let (want, _) = bnaudit(&[&args[..], &[path("plain.pt").as_str()]].concat());
        let (got, _) = bnaudit(&[&args[..], &[p.as_str()]].concat());
        assert_eq!(ls_content(got), ls_content(want), "{mode:?}");
    }
}
