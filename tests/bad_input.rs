//! Bad input: every malformed checkpoint is refused with exit code 3 and one stderr line
//! naming the file and the problem, never a panic.
//!
//! The bad files are built at test time from a valid two-tensor header, one row per defect.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use assert_cmd::Command;
use bnaudit::checkpoint::input::MAX_INDEX_LEN;
use bnaudit::checkpoint::{Checkpoint, MAP_AT_LEAST, Problem, ReadMode};
use proptest::prelude::*;

/// Tensor `a`: two F32 at the start of the data section.
const A: &str = r#""a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}"#;
/// Tensor `b`: two F32 right after `a`.
const B: &str = r#""b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}"#;

/// A safetensors file: 8-byte little-endian header length, header, `data_len` data bytes.
fn safetensors(header: &[u8], data_len: usize) -> Vec<u8> {
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header);
    // Real float values, so that a file that does open also decodes.
    out.extend((0..data_len).map(|i| if i % 4 == 3 { 0x3f } else { 0 }));
    out
}

/// A header object of the given entries.
fn header(entries: &[&str]) -> Vec<u8> {
    format!("{{{}}}", entries.join(",")).into_bytes()
}

/// The valid file every defect starts from.
fn valid() -> Vec<u8> {
    safetensors(&header(&[A, B]), 16)
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, bytes).unwrap();
    path
}

/// What a row made: the path given to bnaudit, and the file the message must name.
struct Made {
    arg: PathBuf,
    named: PathBuf,
}

impl Made {
    fn file(dir: &Path, name: &str, bytes: &[u8]) -> Made {
        let path = write(dir, name, bytes);
        Made {
            arg: path.clone(),
            named: path,
        }
    }

    /// A file holding tensor `a`, then the tensor entry `b`, then `data_len` data bytes.
    fn after_a(dir: &Path, name: &str, b: &str, data_len: usize) -> Made {
        Made::file(dir, name, &safetensors(&header(&[A, b]), data_len))
    }

    /// A copy of a torch fixture (tests/fixtures/torch, made by its gen.py), cut to `keep` of
    /// its bytes when given.
    fn torch(dir: &Path, name: &str, keep: Option<fn(usize) -> usize>) -> Made {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/torch");
        let mut bytes = fs::read(src.join(name)).unwrap();
        if let Some(keep) = keep {
            bytes.truncate(keep(bytes.len()));
        }
        Made::file(dir, name, &bytes)
    }

    /// A zip archive `model.pt` holding `archive/data.pkl` with `pickle`.
    fn torch_pickle(dir: &Path, pickle: &[u8]) -> Made {
        use std::io::Write;
        let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        let stored = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        zip.start_file("archive/data.pkl", stored).unwrap();
        zip.write_all(pickle).unwrap();
        let bytes = zip.finish().unwrap().into_inner();
        Made::file(dir, "model.pt", &bytes)
    }

    /// A sharded index with the given text, next to a valid shard `shard.safetensors`.
    fn index(dir: &Path, text: &str) -> Made {
        write(dir, "shard.safetensors", &valid());
        Made::file(dir, "model.safetensors.index.json", text.as_bytes())
    }
}

/// One bad input: its name, how to make it in a fresh directory, and a fragment the error
/// line must contain.
struct Case {
    name: &'static str,
    make: fn(&Path) -> Made,
    expect: &'static str,
}

const CASES: &[Case] = &[
    Case {
        name: "empty file",
        make: |d| Made::file(d, "empty.safetensors", b""),
        expect: "file is 0 bytes, too short",
    },
    Case {
        name: "fewer than 8 bytes",
        make: |d| Made::file(d, "short.safetensors", &[1, 2, 3]),
        expect: "file is 3 bytes, too short",
    },
    Case {
        name: "truncated data",
        make: |d| {
            let v = valid();
            Made::file(d, "truncated.safetensors", &v[..v.len() - 4])
        },
        expect: "tensor \"b\": data_offsets end at 16 but the data section holds 12 bytes (file truncated?)",
    },
    Case {
        name: "header length past the end",
        make: |d| {
            let mut v = 1000u64.to_le_bytes().to_vec();
            v.extend_from_slice(b"{}");
            Made::file(d, "past_end.safetensors", &v)
        },
        expect: "header length 1000 bytes runs past the end of the file (10 bytes)",
    },
    Case {
        name: "absurdly large header length",
        make: |d| {
            let mut v = valid();
            v[..8].copy_from_slice(&u64::MAX.to_le_bytes());
            Made::file(d, "huge_header.safetensors", &v)
        },
        expect: "header length 18446744073709551615 bytes exceeds the limit",
    },
    Case {
        name: "invalid JSON",
        make: |d| {
            Made::file(
                d,
                "bad_json.safetensors",
                &safetensors(br#"{"a":{"dtype":"F32","#, 0),
            )
        },
        expect: "invalid header JSON",
    },
    Case {
        name: "non-UTF-8 header",
        make: |d| Made::file(d, "latin1.safetensors", &safetensors(b"{\"\xe9\":1}", 0)),
        expect: "header is not valid UTF-8 (invalid byte at header offset 2)",
    },
    Case {
        name: "header not starting with '{'",
        make: |d| Made::file(d, "array.safetensors", &safetensors(b"[{}]", 0)),
        expect: "header does not start with '{' (found \"[{}]\")",
    },
    Case {
        name: "header starting with a space",
        make: |d| {
            let mut h = b" ".to_vec();
            h.extend(header(&[A, B]));
            Made::file(d, "space.safetensors", &safetensors(&h, 16))
        },
        expect: "header does not start with '{'",
    },
    Case {
        name: "metadata not a string map",
        make: |d| {
            let h = header(&[r#""__metadata__":{"epoch":3}"#, A, B]);
            Made::file(d, "metadata_int.safetensors", &safetensors(&h, 16))
        },
        expect: "invalid header JSON",
    },
    Case {
        name: "overlapping offsets",
        make: |d| {
            Made::after_a(
                d,
                "overlap.safetensors",
                r#""b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}"#,
                12,
            )
        },
        expect: "tensor \"b\": data_offsets [4, 12] overlap the previous tensor \"a\", which ends at 8",
    },
    Case {
        name: "out-of-range offsets",
        make: |d| {
            Made::after_a(
                d,
                "out_of_range.safetensors",
                r#""b":{"dtype":"F32","shape":[4],"data_offsets":[8,24]}"#,
                16,
            )
        },
        expect: "tensor \"b\": data_offsets end at 24 but the data section holds 16 bytes",
    },
    Case {
        name: "reversed offsets",
        make: |d| {
            Made::after_a(
                d,
                "reversed.safetensors",
                r#""b":{"dtype":"F32","shape":[2],"data_offsets":[16,8]}"#,
                16,
            )
        },
        expect: "tensor \"b\": data_offsets [16, 8] end before they start",
    },
    Case {
        name: "gap between tensors",
        make: |d| {
            Made::after_a(
                d,
                "gap.safetensors",
                r#""b":{"dtype":"F32","shape":[2],"data_offsets":[12,20]}"#,
                20,
            )
        },
        expect: "tensor \"b\": data_offsets [12, 20] leave a gap after the previous tensor \"a\"",
    },
    Case {
        name: "trailing bytes",
        make: |d| {
            Made::file(
                d,
                "trailing.safetensors",
                &safetensors(&header(&[A, B]), 20),
            )
        },
        expect: "4 bytes after the last tensor are not covered by any tensor",
    },
    Case {
        name: "unknown dtype",
        make: |d| {
            Made::after_a(
                d,
                "f128.safetensors",
                r#""b":{"dtype":"F128","shape":[2],"data_offsets":[8,16]}"#,
                16,
            )
        },
        expect: "tensor \"b\": unknown dtype \"F128\"",
    },
    Case {
        name: "shape/size mismatch",
        make: |d| {
            Made::after_a(
                d,
                "size.safetensors",
                r#""b":{"dtype":"F32","shape":[3],"data_offsets":[8,16]}"#,
                16,
            )
        },
        expect: "tensor \"b\": shape [3] of F32 needs 12 bytes but data_offsets span 8",
    },
    Case {
        name: "shape overflowing 64 bits",
        make: |d| {
            Made::after_a(
                d,
                "overflow.safetensors",
                r#""b":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[8,16]}"#,
                16,
            )
        },
        expect: "shape [4294967296, 4294967296] of F32 needs 73786976294838206464 bytes",
    },
    Case {
        name: "U8 shape of 2^64-1 elements",
        make: |d| {
            Made::after_a(
                d,
                "u8_max.safetensors",
                r#""b":{"dtype":"U8","shape":[18446744073709551615],"data_offsets":[8,16]}"#,
                16,
            )
        },
        expect: "needs 18446744073709551615 bytes but data_offsets span 8",
    },
    Case {
        name: "shape overflowing 128 bits",
        make: |d| {
            Made::after_a(
                d,
                "overflow128.safetensors",
                r#""b":{"dtype":"F32","shape":[18446744073709551615,18446744073709551615,3],"data_offsets":[8,16]}"#,
                16,
            )
        },
        expect: "needs more than 2^128 bytes",
    },
    Case {
        name: "duplicate key",
        make: |d| Made::file(d, "dup.safetensors", &safetensors(&header(&[A, A, B]), 16)),
        expect: "duplicate tensor name \"a\" in header",
    },
    Case {
        name: "index with a missing shard",
        make: |d| Made::index(d, r#"{"weight_map":{"a":"gone.safetensors"}}"#),
        expect: "shard \"gone.safetensors\" named by the index does not exist",
    },
    Case {
        name: "index whose shard is a pipe",
        make: |d| {
            let pipe = mkfifo(d, "pipe.safetensors");
            Made::index(d, r#"{"weight_map":{"a":"pipe.safetensors"}}"#);
            Made {
                arg: d.join("model.safetensors.index.json"),
                named: pipe,
            }
        },
        expect: "not a regular file (a pipe or device)",
    },
    Case {
        name: "index whose shard is a directory",
        make: |d| {
            std::fs::create_dir(d.join("dir.safetensors")).expect("mkdir");
            Made::index(d, r#"{"weight_map":{"a":"dir.safetensors"}}"#);
            Made {
                arg: d.join("model.safetensors.index.json"),
                named: d.join("dir.safetensors"),
            }
        },
        expect: "not a regular file (a directory)",
    },
    Case {
        name: "index that is a pipe",
        make: |d| {
            write(d, "shard.safetensors", &valid());
            let index = mkfifo(d, "model.safetensors.index.json");
            Made {
                arg: index.clone(),
                named: index,
            }
        },
        expect: "not a regular file (a pipe or device)",
    },
    Case {
        name: "directory holding an index that is a pipe",
        make: |d| {
            let index = mkfifo(d, "model.safetensors.index.json");
            Made {
                arg: d.to_owned(),
                named: index,
            }
        },
        expect: "not a regular file (a pipe or device)",
    },
    Case {
        name: "directory holding one file that is a pipe",
        make: |d| {
            let file = mkfifo(d, "model.safetensors");
            Made {
                arg: d.to_owned(),
                named: file,
            }
        },
        expect: "not a regular file (a pipe or device)",
    },
    Case {
        name: "index that is /dev/zero",
        make: |d| {
            let index = d.join("model.safetensors.index.json");
            std::os::unix::fs::symlink("/dev/zero", &index).unwrap();
            Made {
                arg: index.clone(),
                named: index,
            }
        },
        expect: "not a regular file (a pipe or device)",
    },
    Case {
        name: "index over the size limit",
        make: |d| {
            let index = write(d, "model.safetensors.index.json", b"");
            // Sparse: no disk space, and nothing should read it anyway.
            fs::File::options()
                .write(true)
                .open(&index)
                .unwrap()
                .set_len(MAX_INDEX_LEN + 1)
                .unwrap();
            Made {
                arg: index.clone(),
                named: index,
            }
        },
        expect: "index is 268435457 bytes, over the limit of 268435456 bytes",
    },
    Case {
        name: "index with a shard path climbing out of its directory",
        make: |d| {
            fs::create_dir(d.join("outside")).unwrap();
            write(&d.join("outside"), "x.safetensors", &valid());
            fs::create_dir(d.join("model")).unwrap();
            let index = write(
                &d.join("model"),
                "model.safetensors.index.json",
                br#"{"weight_map":{"a":"../outside/x.safetensors"}}"#,
            );
            Made {
                arg: index.clone(),
                named: index,
            }
        },
        expect: "shard \"../outside/x.safetensors\" named by the index is outside the index's directory",
    },
    Case {
        name: "index with an absolute shard path",
        make: |d| {
            let shard = write(d, "abs.safetensors", &valid());
            let text = format!(r#"{{"weight_map":{{"a":{:?}}}}}"#, shard.display());
            Made::index(d, &text)
        },
        expect: "named by the index is outside the index's directory",
    },
    Case {
        name: "index with invalid JSON",
        make: |d| Made::index(d, r#"{"weight_map":{"a":"shard.safetensors""#),
        expect: "invalid index: not valid JSON",
    },
    Case {
        name: "index without weight_map",
        make: |d| Made::index(d, r#"{"metadata":{"total_size":16}}"#),
        expect: "invalid index: no \"weight_map\" object",
    },
    Case {
        name: "index mapping a tensor to a shard that lacks it",
        make: |d| {
            Made::index(
                d,
                r#"{"weight_map":{"a":"shard.safetensors","c":"shard.safetensors"}}"#,
            )
        },
        expect: "index maps tensor \"c\" to shard \"shard.safetensors\", which does not contain it",
    },
    Case {
        name: "index naming a malformed shard",
        make: |d| {
            let index = Made::index(d, r#"{"weight_map":{"a":"bad.safetensors"}}"#);
            Made {
                arg: index.arg,
                named: write(d, "bad.safetensors", b"{}"),
            }
        },
        expect: "file is 2 bytes, too short",
    },
    Case {
        name: "directory with no checkpoint",
        make: |d| {
            write(d, "notes.txt", b"not a checkpoint");
            write(d, "model.onnx", b"");
            Made {
                arg: d.to_owned(),
                named: d.to_owned(),
            }
        },
        expect: "directory holds no *.safetensors file or *.index.json",
    },
    Case {
        name: "directory with two checkpoints",
        make: |d| {
            write(d, "b.safetensors", &valid());
            write(d, "a.safetensors", &valid());
            Made {
                arg: d.to_owned(),
                named: d.to_owned(),
            }
        },
        expect: "directory holds several checkpoints (a.safetensors, b.safetensors); name one",
    },
    Case {
        name: "legacy torch.save",
        make: |d| Made::torch(d, "legacy.pt", None),
        expect: "a legacy torch.save file (PyTorch < 1.6, not a zip archive)",
    },
    Case {
        name: "TorchScript archive",
        make: |d| Made::torch(d, "script.pt", None),
        expect: "a TorchScript archive (torch.jit.save), not a state dict",
    },
    Case {
        name: "zip that is not a checkpoint",
        make: |d| Made::torch(d, "other.zip", None),
        expect: "a zip archive that is not a torch.save checkpoint",
    },
    Case {
        name: "truncated torch.save archive",
        make: |d| Made::torch(d, "plain.pt", Some(|n| n * 2 / 3)),
        expect: "truncated or damaged zip archive",
    },
    Case {
        name: "torch.save pickle naming a missing storage",
        make: |d| Made::torch(d, "missing_storage.pt", None),
        expect: "needs storage \"0\", which the archive lacks",
    },
    Case {
        name: "torch.save storage shorter than its tensor",
        make: |d| Made::torch(d, "short_storage.pt", None),
        expect: "tensor \"backbone.0.weight\" needs 432 bytes of storage \"0\", which holds 4",
    },
    Case {
        name: "bare pickle",
        make: |d| Made::file(d, "model.pkl", b"\x80\x04K\x01."),
        expect: "a bare Python pickle, not a torch.save zip archive",
    },
    Case {
        name: "pickle nested past the limit",
        make: |d| Made::torch_pickle(d, &[b'('; 5000]),
        expect: "pickle nesting depth exceeds the limit of 1000",
    },
    Case {
        name: "truncated pickle",
        make: |d| Made::torch_pickle(d, b"\x80\x02}q\x00(X\x05\x00\x00"),
        expect: "stream ends inside an opcode (truncated data.pkl)",
    },
    Case {
        name: "pickle with an opcode torch.save never writes",
        make: |d| Made::torch_pickle(d, b"\x80\x02\x82\x01."),
        expect: "opcode 0x82 is not one torch.save writes",
    },
    Case {
        name: "missing path",
        make: |d| {
            let path = d.join("missing.safetensors");
            Made {
                arg: path.clone(),
                named: path,
            }
        },
        expect: "no such file or directory",
    },
];

/// A FIFO called `name` in `dir`: opening it for reading blocks until a writer comes.
fn mkfifo(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    let made = std::process::Command::new("mkfifo").arg(&path).status();
    assert!(made.is_ok_and(|s| s.success()), "mkfifo failed");
    path
}

/// Checks the contract of a refused input; returns what is wrong, if anything.
fn refused(out: &Output, named: &Path, expect: &str) -> Result<(), String> {
    let stderr = String::from_utf8_lossy(&out.stderr);
    let mut problems = Vec::new();
    if out.status.code() != Some(3) {
        problems.push(format!("exit status {:?}, want 3", out.status.code()));
    }
    if stderr.contains("panicked") {
        problems.push("panicked".to_owned());
    }
    if stderr.lines().count() != 1 {
        problems.push(format!("{} stderr lines, want 1", stderr.lines().count()));
    }
    if !stderr.starts_with("bnaudit: error: ") {
        problems.push("no `bnaudit: error: ` prefix".to_owned());
    }
    if !stderr.contains(&named.display().to_string()) {
        problems.push(format!("does not name {}", named.display()));
    }
    if !stderr.contains(expect) {
        problems.push(format!("lacks {expect:?}"));
    }
    if !out.stdout.is_empty() {
        problems.push("wrote to stdout".to_owned());
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!("{}\n    stderr: {stderr:?}", problems.join("; ")))
    }
}

#[test]
fn every_bad_input_exits_3_with_one_line_naming_the_file() {
    let mut failures = Vec::new();
    for case in CASES {
        let dir = tempfile::tempdir().unwrap();
        let made = (case.make)(dir.path());
        for no_mmap in [false, true] {
            let mut cmd = Command::cargo_bin("bnaudit").unwrap();
            cmd.arg("ls").arg(&made.arg);
            if no_mmap {
                cmd.arg("--no-mmap");
            }
            // A hang (a FIFO opened for reading) fails the row rather than the whole run.
            let out = cmd.timeout(Duration::from_secs(20)).output().unwrap();
            if let Err(e) = refused(&out, &made.named, case.expect) {
                failures.push(format!("{} (no_mmap={no_mmap}): {e}", case.name));
            }
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn the_valid_base_file_opens() {
    // Guards the table: every row must fail because of its own defect, not the base's.
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "valid.safetensors", &valid());
    let ckpt = Checkpoint::open(&path, ReadMode::Mmap).unwrap();
    let a = ckpt.get("a").unwrap();
    assert_eq!(ckpt.values(a).unwrap(), Some(vec![0.5, 0.5]));
    Command::cargo_bin("bnaudit")
        .unwrap()
        .arg("ls")
        .arg(&path)
        .assert()
        .success();
}

/// Any zero dimension makes a tensor empty however large the others are: valid, 0 bytes.
#[test]
fn zero_element_tensor_with_huge_dims_is_valid() {
    let z = r#""z":{"dtype":"F32","shape":[4611686018427387904,0,4611686018427387904],"data_offsets":[16,16]}"#;
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "empty_dims.safetensors",
        &safetensors(&header(&[A, B, z]), 16),
    );
    for mode in [ReadMode::Mmap, ReadMode::Pread] {
        let ckpt = Checkpoint::open(&path, mode).unwrap();
        let t = ckpt.get("z").unwrap();
        assert_eq!((t.elements(), t.bytes), (0, 0));
        assert_eq!(ckpt.values(t).unwrap(), Some(vec![]));
    }
    Command::cargo_bin("bnaudit")
        .unwrap()
        .args(["ls", "--all"])
        .arg(&path)
        .assert()
        .success();
}

/// Runs as root by default in CI, where file modes do not deny anything: drop to `nobody`
/// with setpriv to see a real EACCES.
#[test]
fn permission_denied() {
    let dir = tempfile::tempdir().unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let path = write(dir.path(), "locked.safetensors", &valid());
    fs::set_permissions(&path, fs::Permissions::from_mode(0o000)).unwrap();
    let bin = assert_cmd::cargo::cargo_bin("bnaudit");
    let out = if fs::metadata(&path).unwrap().uid() == 0 {
        let setpriv = ["/usr/bin/setpriv", "/bin/setpriv"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect(
                "running as root, where mode 000 denies nothing, and setpriv (util-linux) is \
                 not installed: CANNOT TEST permission denied; install util-linux or run as a \
                 normal user",
            );
        // The binary may sit under a directory `nobody` cannot traverse: run a copy.
        let copy = dir.path().join("bnaudit");
        fs::copy(&bin, &copy).unwrap();
        fs::set_permissions(&copy, fs::Permissions::from_mode(0o755)).unwrap();
        // Another test thread forking while the copy was still open for writing holds that
        // descriptor until it execs, and exec then fails with ETXTBSY: try again briefly.
        let run = || {
            std::process::Command::new(setpriv)
                .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
                .arg(&copy)
                .arg("ls")
                .arg(&path)
                .output()
                .unwrap()
        };
        let busy = |o: &std::process::Output| {
            String::from_utf8_lossy(&o.stderr).contains("Text file busy")
        };
        let mut out = run();
        for _ in 0..50 {
            if !busy(&out) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
            out = run();
        }
        out
    } else {
        std::process::Command::new(&bin)
            .arg("ls")
            .arg(&path)
            .output()
            .unwrap()
    };
    refused(&out, &path, "permission denied").unwrap();
}

/// A file truncated while mapped must give an error, not SIGBUS: both for a tensor read
/// through the map (at least `MAP_AT_LEAST` bytes) and for a small one read by copy.
#[test]
fn truncated_while_mapped_is_an_error() {
    let big_len = 2 * MAP_AT_LEAST;
    let big = format!(
        r#""big":{{"dtype":"U8","shape":[{big_len}],"data_offsets":[8,{}]}}"#,
        8 + big_len
    );
    let bytes = safetensors(&header(&[A, &big]), 8 + big_len as usize);
    let data_start = bytes.len() as u64 - 8 - big_len;
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "shrinks.safetensors", &bytes);
    let ckpt = Checkpoint::open(&path, ReadMode::Mmap).unwrap();
    let (a, big) = (ckpt.get("a").unwrap(), ckpt.get("big").unwrap());
    assert!(matches!(
        ckpt.bytes(big).unwrap(),
        std::borrow::Cow::Borrowed(_)
    ));

    let cut = data_start + 8 + big_len / 2;
    fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(cut)
        .unwrap();
    let err = ckpt.bytes(big).unwrap_err();
    assert_eq!(err.path, path);
    match *err.problem {
        Problem::Truncated {
            ref tensor,
            len,
            end,
        } => assert_eq!(
            (tensor.as_str(), len, end),
            ("big", cut, data_start + 8 + big_len)
        ),
        ref other => panic!("want Truncated, got {other:?}"),
    }
    assert!(ckpt.values_many(&[a, big]).is_err());
    // What is still inside the file reads fine.
    assert_eq!(ckpt.values(a).unwrap(), Some(vec![0.5, 0.5]));
    assert_eq!(ckpt.read(big, 0, 16).unwrap().len(), 16);

    // Cut into the small tensor too: the copy path reports it the same way.
    fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(data_start + 4)
        .unwrap();
    let err = ckpt.values(a).unwrap_err();
    assert!(
        matches!(err.problem.as_ref(), Problem::Truncated { tensor, .. } if tensor == "a"),
        "{err}"
    );
}

/// One way of damaging a valid file.
#[derive(Debug, Clone)]
enum Mutation {
    /// Replace the byte at this position (modulo the length).
    Set(usize, u8),
    /// Insert a byte.
    Insert(usize, u8),
    /// Remove a byte.
    Remove(usize),
    /// Cut the file to this length (modulo the length).
    Truncate(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Set(i, b)),
        // Printable JSON-ish bytes reach the validation past the JSON parser more often.
        (
            any::<usize>(),
            prop::sample::select(b"{}[]\",:0123456789-eE. ".to_vec())
        )
            .prop_map(|(i, b)| Mutation::Set(i, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        any::<usize>().prop_map(Mutation::Remove),
        any::<usize>().prop_map(Mutation::Truncate),
    ]
}

fn apply(bytes: &mut Vec<u8>, m: &Mutation) {
    let n = bytes.len().max(1);
    match *m {
        Mutation::Set(i, b) if !bytes.is_empty() => bytes[i % n] = b,
        Mutation::Insert(i, b) => bytes.insert(i % (bytes.len() + 1), b),
        Mutation::Remove(i) if !bytes.is_empty() => {
            bytes.remove(i % n);
        }
        Mutation::Truncate(i) => bytes.truncate(i % n),
        _ => {}
    }
}

/// Opens `bytes` as a checkpoint in both modes and reads every tensor; errors are fine,
/// panics are not (proptest reports a panic as a failure with the input).
fn open_and_read_all(bytes: &[u8]) {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "fuzz.safetensors", bytes);
    for mode in [ReadMode::Mmap, ReadMode::Pread] {
        if let Ok(ckpt) = Checkpoint::open(&path, mode) {
            for t in ckpt.tensors() {
                let _ = ckpt.values(t);
            }
            let _ = bnaudit::audit::ls(&ckpt, bnaudit::audit::LsOptions { all: true });
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn damaged_torch_files_never_panic(
        file in prop::sample::select(vec!["plain.pt", "views.pt", "lightning.ckpt", "deflated.pt"]),
        mutations in prop::collection::vec(mutation(), 1..6),
    ) {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/torch").join(file);
        let mut bytes = fs::read(src).unwrap();
        for m in &mutations {
            apply(&mut bytes, m);
        }
        open_and_read_all(&bytes);
    }

    #[test]
    fn mutated_headers_never_panic(mutations in prop::collection::vec(mutation(), 1..6)) {
        // A BatchNorm layer, so that discovery and statistics run on whatever survives.
        let h = header(&[
            r#""__metadata__":{"format":"pt"}"#,
            r#""bn.running_mean":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}"#,
            r#""bn.running_var":{"dtype":"F16","shape":[2],"data_offsets":[8,12]}"#,
            r#""bn.num_batches_tracked":{"dtype":"I64","shape":[],"data_offsets":[12,20]}"#,
        ]);
        let mut bytes = safetensors(&h, 20);
        for m in &mutations {
            apply(&mut bytes, m);
        }
        open_and_read_all(&bytes);
    }

    #[test]
    fn random_bytes_never_panic(
        len in any::<u64>(),
        body in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        // A random header length (small ones half of the time) before random bytes.
        let len = if len % 2 == 0 { len % 80 } else { len };
        let mut bytes = len.to_le_bytes().to_vec();
        bytes.extend(body);
        open_and_read_all(&bytes);
    }
}
