//! `bnaudit ls` against the ground truth PyTorch recorded in tests/fixtures/ls/expected.json
//! (made by tests/fixtures/ls/gen.py): detected layers, keys, counters, flags and per-tensor
//! statistics of every fixture file, directories, sharded indexes, `--all` and `--no-mmap`.

use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use assert_cmd::Command;
use bnaudit::bn::TensorStats;
use bnaudit::checkpoint::{Checkpoint, ReadMode};
use serde_json::{Value, json};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ls")
}

static EXPECTED: LazyLock<Value> = LazyLock::new(|| {
    let text = std::fs::read_to_string(fixtures().join("expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
});

/// Every checkpoint described in expected.json: (path relative to the fixtures, entry).
fn checkpoints() -> Vec<(&'static str, &'static Value)> {
    let all = EXPECTED.as_object().unwrap();
    let list: Vec<_> = all
        .iter()
        .filter(|(k, _)| k.ends_with(".safetensors") || k.ends_with(".index.json"))
        .map(|(k, v)| (k.as_str(), v))
        .collect();
    assert!(list.len() >= 13, "expected.json lists {} files", list.len());
    list
}

/// The keys of a JSON object, in order.
fn keys(object: &Value) -> Vec<&str> {
    object
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect()
}

/// Runs `bnaudit ARGS`, asserting success, and returns stdout.
fn run(args: &[&str]) -> String {
    let out = Command::cargo_bin("bnaudit")
        .unwrap()
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "bnaudit {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn ls_json(path: &Path, extra: &[&str]) -> Value {
    let mut args = vec!["ls", "--format", "json", path.to_str().unwrap()];
    args.extend(extra);
    serde_json::from_str(&run(&args)).unwrap()
}

/// `a` equals PyTorch's `b` within a relative 1e-12 (summation order differs).
fn close(a: f64, b: f64) -> bool {
    a == b || (a - b).abs() <= 1e-12 * a.abs().max(b.abs())
}

/// Compares summary statistics with PyTorch's: min, max and the non-finite count exactly
/// (decoding must be exact), mean and std within [`close`]. Returns what differs.
fn compare_stats(what: &str, ours: &Value, torch: &Value) -> Vec<String> {
    let mut diffs = Vec::new();
    for key in ["min", "max", "nonfinite"] {
        if ours[key].as_f64() != torch[key].as_f64() {
            diffs.push(format!(
                "{what}.{key}: ours {} torch {}",
                ours[key], torch[key]
            ));
        }
    }
    for key in ["mean", "std"] {
        let ok = match (ours[key].as_f64(), torch[key].as_f64()) {
            (Some(a), Some(b)) => close(a, b),
            (a, b) => a == b,
        };
        if !ok {
            diffs.push(format!(
                "{what}.{key}: ours {} torch {}",
                ours[key], torch[key]
            ));
        }
    }
    diffs
}

#[test]
fn ls_json_matches_pytorch_for_every_fixture() {
    let mut diffs = Vec::new();
    for (file, truth) in checkpoints() {
        let report = ls_json(&fixtures().join(file), &[]);
        let mut diff = |d: String| diffs.push(format!("{file}: {d}"));
        let c = &report["checkpoint"];
        if c["tensors"] != truth["n_tensors"] {
            diff(format!(
                "tensors {} vs {}",
                c["tensors"], truth["n_tensors"]
            ));
        }
        if c["bytes"] != truth["file_bytes"] {
            diff(format!("bytes {} vs {}", c["bytes"], truth["file_bytes"]));
        }
        let want_metadata = match truth.get("total_size") {
            // A sharded checkpoint's metadata is the index's, flattened to strings.
            Some(total) => json!({ "total_size": total.to_string() }),
            None if truth["metadata"].is_null() => json!({}),
            None => truth["metadata"].clone(),
        };
        if c["metadata"] != want_metadata {
            diff(format!("metadata {} vs {want_metadata}", c["metadata"]));
        }

        let layers = report["layers"].as_array().unwrap();
        let ours: Vec<&str> = layers.iter().map(|l| l["name"].as_str().unwrap()).collect();
        let torch: Vec<&str> = keys(&truth["bn_layers"]);
        if ours != torch {
            diff(format!("layers {ours:?} vs {torch:?}"));
        }
        for not_bn in truth["not_bn"].as_array().unwrap() {
            if ours.contains(&not_bn.as_str().unwrap()) {
                diff(format!("{not_bn} is not BatchNorm but was listed"));
            }
        }
        for layer in layers {
            let name = layer["name"].as_str().unwrap();
            let Some(t) = truth["bn_layers"].get(name) else {
                continue;
            };
            for key in [
                "convention",
                "channels",
                "dtype",
                "keys",
                "num_batches_tracked",
                "flags",
            ] {
                if layer[key] != t[key] {
                    diff(format!(
                        "{name}.{key}: ours {} torch {}",
                        layer[key], t[key]
                    ));
                }
            }
            for role in ["weight", "bias", "running_mean", "running_var"] {
                let ours = &layer["stats"][role];
                match t["keys"][role].as_str() {
                    Some(key) => {
                        for d in
                            compare_stats(&format!("{name}.{role}"), ours, &truth["tensors"][key])
                        {
                            diff(d);
                        }
                    }
                    None if !ours.is_null() => {
                        diff(format!("{name}.{role}: stats {ours} for an absent tensor"))
                    }
                    None => {}
                }
            }
        }
    }
    assert!(diffs.is_empty(), "\n{}", diffs.join("\n"));
}

/// Decoding of every dtype, checked on every tensor of every fixture through the library.
#[test]
fn every_tensor_decodes_to_pytorch_values() {
    let mut diffs = Vec::new();
    for (file, truth) in checkpoints() {
        let ckpt = Checkpoint::open(fixtures().join(file), ReadMode::Mmap).unwrap();
        let names: Vec<&str> = ckpt.tensors().iter().map(|t| t.name.as_str()).collect();
        let want: Vec<&str> = keys(&truth["tensors"]);
        assert_eq!(names, want, "{file}");
        assert_eq!(ckpt.data_bytes(), truth["tensor_bytes"].as_u64().unwrap());
        for t in ckpt.tensors() {
            let torch = &truth["tensors"][&t.name];
            assert_eq!(t.dtype.as_str(), torch["dtype"], "{file} {}", t.name);
            assert_eq!(json!(t.shape), torch["shape"], "{file} {}", t.name);
            let ours = match ckpt.values(t).unwrap() {
                Some(v) => serde_json::to_value(TensorStats::of(&v)).unwrap(),
                // Undecodable (complex): PyTorch's truth has no statistics either.
                None => {
                    json!({"min": null, "max": null, "mean": null, "std": null, "nonfinite": null})
                }
            };
            diffs.extend(compare_stats(&format!("{file} {}", t.name), &ours, torch));
        }
    }
    assert!(diffs.is_empty(), "\n{}", diffs.join("\n"));
}

#[test]
fn all_lists_every_tensor_with_its_layer_and_decodability() {
    for (file, truth) in checkpoints() {
        let report = ls_json(&fixtures().join(file), &["--all"]);
        let tensors = report["tensors"].as_array().unwrap();
        let names: Vec<&str> = tensors
            .iter()
            .map(|t| t["name"].as_str().unwrap())
            .collect();
        let want: Vec<&str> = keys(&truth["tensors"]);
        assert_eq!(names, want, "{file}");
        let mut owner = std::collections::HashMap::new();
        for (layer, t) in truth["bn_layers"].as_object().unwrap() {
            for key in t["keys"].as_object().unwrap().values() {
                if let Some(key) = key.as_str() {
                    owner.insert(key, layer.as_str());
                }
            }
        }
        let mut total = 0;
        for t in tensors {
            let name = t["name"].as_str().unwrap();
            let torch = &truth["tensors"][name];
            assert_eq!(t["dtype"], torch["dtype"], "{file} {name}");
            assert_eq!(t["shape"], torch["shape"], "{file} {name}");
            // PyTorch gives statistics exactly for the tensors we can decode.
            assert_eq!(
                t["decodable"].as_bool().unwrap(),
                !torch["nonfinite"].is_null(),
                "{file} {name}"
            );
            assert_eq!(
                t["bn_layer"].as_str(),
                owner.get(name).copied(),
                "{file} {name}"
            );
            total += t["bytes"].as_u64().unwrap();
        }
        assert_eq!(total, truth["tensor_bytes"].as_u64().unwrap(), "{file}");
        // --all adds the tensor list and changes nothing else.
        let mut without = report.clone();
        without.as_object_mut().unwrap().remove("tensors");
        assert_eq!(without, ls_json(&fixtures().join(file), &[]), "{file}");
    }
}

#[test]
fn no_mmap_gives_identical_output() {
    for (file, _) in checkpoints() {
        let path = fixtures().join(file);
        let path = path.to_str().unwrap();
        for format in ["text", "json"] {
            assert_eq!(
                run(&["ls", "--all", "--format", format, path]),
                run(&["ls", "--all", "--format", format, "--no-mmap", path]),
                "{file} {format}"
            );
        }
    }
}

#[test]
fn directories_resolve_to_the_checkpoint_they_hold() {
    let dirs = EXPECTED["_about"]["directories"].as_object().unwrap();
    for (dir, target) in dirs {
        let Some(target) = target.as_str() else {
            continue;
        };
        let via_dir = ls_json(&fixtures().join(dir), &[]);
        let direct = ls_json(&fixtures().join(target), &[]);
        assert_eq!(via_dir, direct, "{dir}");
        assert!(
            via_dir["checkpoint"]["path"]
                .as_str()
                .unwrap()
                .ends_with(target),
            "{dir} resolved to {}",
            via_dir["checkpoint"]["path"]
        );
    }
}

#[test]
fn directory_with_two_checkpoints_is_refused_naming_them() {
    assert!(EXPECTED["_about"]["directories"]["dir_two"].is_null());
    let dir = fixtures().join("dir_two");
    let out = Command::cargo_bin("bnaudit")
        .unwrap()
        .args(["ls", dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    for part in [dir.to_str().unwrap(), "a.safetensors", "b.safetensors"] {
        assert!(stderr.contains(part), "{stderr}");
    }
}

#[test]
fn sharded_layer_is_assembled_across_shards() {
    let file = "sharded/model.safetensors.index.json";
    let truth = &EXPECTED[file];
    let report = ls_json(&fixtures().join(file), &["--all"]);
    let c = &report["checkpoint"];
    assert_eq!(c["layout"], "sharded");
    let shards: Vec<&str> = c["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap().rsplit('/').next().unwrap())
        .collect();
    assert_eq!(json!(shards), truth["shards"]);

    let split = truth["split_layer"].as_str().unwrap();
    let layer = report["layers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == split)
        .unwrap();
    assert_eq!(layer["keys"], truth["bn_layers"][split]["keys"]);
    assert!(layer["stats"]["running_var"].is_object());
    // The checkpoint's file list names each tensor's shard: the split is real.
    let ckpt = Checkpoint::open(fixtures().join(file), ReadMode::Pread).unwrap();
    let shard_of = |key: &str| ckpt.get(&format!("{split}.{key}")).unwrap().file;
    assert_eq!(shard_of("running_mean"), 0);
    assert_eq!(shard_of("running_var"), 1);
}

#[test]
fn text_lists_every_layer_with_its_flags() {
    for (file, truth) in checkpoints() {
        let text = run(&["ls", fixtures().join(file).to_str().unwrap()]);
        let layers = truth["bn_layers"].as_object().unwrap();
        let count = text.lines().nth(1).unwrap().split_whitespace().next();
        assert_eq!(
            count,
            Some(layers.len().to_string().as_str()),
            "{file}:\n{text}"
        );
        for (name, t) in layers {
            let line = text
                .lines()
                .find(|l| l.split_whitespace().next() == Some(name))
                .unwrap_or_else(|| panic!("{file}: no line for {name}:\n{text}"));
            for flag in t["flags"].as_array().unwrap() {
                assert!(line.contains(flag.as_str().unwrap()), "{file}: {line}");
            }
        }
    }
}
