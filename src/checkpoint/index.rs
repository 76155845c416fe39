//! Sharded checkpoints (`*.safetensors.index.json`, `pytorch_model.bin.index.json`) and
//! directories.

use std::collections::{BTreeMap, HashMap};
use std::path::{Component, Path, PathBuf};

use serde_json::Value;

use super::error::{CheckpointError, Problem};
use super::format::CheckpointFile;
use super::input;
use super::raw::ReadMode;
use super::{Checkpoint, Layout};

const INDEX_SUFFIX: &str = ".safetensors.index.json";

/// Names a directory's torch.save checkpoint usually has; looked for only when the directory
/// holds no safetensors checkpoint (Hugging Face folders often hold both).
const TORCH_INDEX_SUFFIX: &str = ".bin.index.json";
const TORCH_SUFFIXES: [&str; 5] = [".bin", ".pt", ".pth", ".ckpt", ".pth.tar"];

/// Whether `path` names a sharded index rather than a safetensors file.
pub(super) fn is_index(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.ends_with(".index.json"))
}

/// The one checkpoint a directory holds: its index if it has exactly one, else its single
/// `.safetensors` file; without either, the same among torch.save names.
pub(super) fn resolve_directory(dir: &Path) -> Result<PathBuf, CheckpointError> {
    let err = |problem| CheckpointError::new(dir, problem);
    let mut indexes = Vec::new();
    let mut files = Vec::new();
    let mut torch_indexes = Vec::new();
    let mut torch_files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| err(Problem::io("cannot list", e)))? {
        let entry = entry.map_err(|e| err(Problem::io("cannot list", e)))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(INDEX_SUFFIX) {
            indexes.push(name);
        } else if name.ends_with(".safetensors") {
            files.push(name);
        } else if name.ends_with(TORCH_INDEX_SUFFIX) {
            torch_indexes.push(name);
        } else if TORCH_SUFFIXES.iter().any(|s| name.ends_with(s)) {
            torch_files.push(name);
        }
    }
    if indexes.is_empty() && files.is_empty() {
        (indexes, files) = (torch_indexes, torch_files);
    }
    indexes.sort();
    files.sort();
    let pick = match (indexes.len(), files.len()) {
        (1, _) => indexes.remove(0),
        (0, 1) => files.remove(0),
        (0, 0) => return Err(err(Problem::EmptyDirectory)),
        (0, _) => return Err(err(Problem::AmbiguousDirectory { candidates: files })),
        _ => {
            return Err(err(Problem::AmbiguousDirectory {
                candidates: indexes,
            }));
        }
    };
    Ok(dir.join(pick))
}

/// Opens an index and every shard it names, verifying that each mapped tensor is in its shard.
/// `key` picks the state dict inside each torch.save shard.
pub(super) fn open_sharded(
    path: &Path,
    mode: ReadMode,
    key: Option<&str>,
) -> Result<Checkpoint, CheckpointError> {
    let err = |problem| CheckpointError::new(path, problem);
    let text = input::read_small(path, "index", input::MAX_INDEX_LEN).map_err(err)?;
    let json: Value = serde_json::from_slice(&text)
        .map_err(|e| err(Problem::Index(format!("not valid JSON: {e}"))))?;
    let map = json
        .get("weight_map")
        .and_then(Value::as_object)
        .ok_or_else(|| err(Problem::Index("no \"weight_map\" object".to_owned())))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut shard_names: Vec<&str> = Vec::new();
    let mut shard_of: HashMap<String, usize> = HashMap::with_capacity(map.len());
    for (tensor, shard) in map {
        let shard = shard.as_str().ok_or_else(|| {
            err(Problem::Index(format!(
                "weight_map value for {tensor:?} is not a file name"
            )))
        })?;
        let i = match shard_names.iter().position(|s| *s == shard) {
            Some(i) => i,
            None => {
                shard_names.push(shard);
                shard_names.len() - 1
            }
        };
        shard_of.insert(tensor.clone(), i);
    }
    let mut files = Vec::with_capacity(shard_names.len());
    for name in &shard_names {
        if !inside(name) {
            return Err(err(Problem::ShardOutside {
                shard: (*name).to_owned(),
            }));
        }
        let shard_path = dir.join(name);
        if !shard_path.exists() {
            return Err(err(Problem::MissingShard {
                shard: (*name).to_owned(),
            }));
        }
        files.push(CheckpointFile::open(&shard_path, mode, key)?);
    }
    let mut warnings = Vec::new();
    for (i, file) in files.iter().enumerate() {
        let names = file.tensor_names();
        let present: std::collections::HashSet<&str> = names.clone().collect();
        let unmapped = names.filter(|t| !shard_of.contains_key(*t)).count();
        if unmapped > 0 {
            warnings.push(format!(
                "{}: {unmapped} tensors not in the index's weight_map are ignored",
                shard_names[i]
            ));
        }
        if let Some((tensor, _)) = shard_of
            .iter()
            .filter(|&(t, &s)| s == i && !present.contains(t.as_str()))
            .min()
        {
            return Err(err(Problem::TensorNotInShard {
                tensor: tensor.clone(),
                shard: shard_names[i].to_owned(),
            }));
        }
    }
    let metadata = flatten_metadata(json.get("metadata"));
    Ok(Checkpoint::assemble(
        path.to_owned(),
        Layout::Sharded,
        files,
        metadata,
        warnings,
        key,
        Some(&shard_of),
    ))
}

/// Whether a shard path stays inside the index's directory: relative, and no `..`. An index
/// from a downloaded repository could otherwise have us read `/etc/shadow` as a shard.
fn inside(shard: &str) -> bool {
    let path = Path::new(shard);
    !shard.is_empty()
        && path
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
}

/// The index's `metadata` object as strings (numbers such as `total_size` as written).
fn flatten_metadata(value: Option<&Value>) -> BTreeMap<String, String> {
    value
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    let s = match v {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    (k.clone(), s)
                })
                .collect()
        })
        .unwrap_or_default()
}
