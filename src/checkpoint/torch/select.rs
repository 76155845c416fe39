//! Which mapping of a torch.save pickle is the state dict, and its tensors by flat name.

use foldhash::HashSet;

use super::error::TorchProblem;
use super::pickle::{Id, Pickle, Value};

/// Keys that hold the state dict in the usual training checkpoints (Lightning, timm, most
/// scripts), tried in this order.
pub const STATE_DICT_KEYS: [&str; 5] = ["state_dict", "model_state_dict", "model", "module", "net"];

/// Deepest nesting of mappings followed when flattening.
pub const MAX_DEPTH: usize = 64;

/// The state dict chosen: its tensors by flat name, and the key path used.
#[derive(Debug)]
pub(crate) struct Selected {
    /// `(name, tensor value)` in pickle order; names unique.
    pub(crate) tensors: Vec<(String, Id)>,
    /// The dot path of the mapping used, `None` for the top level.
    pub(crate) key: Option<String>,
    /// Names that appeared twice after flattening (the first is kept).
    pub(crate) duplicates: Vec<String>,
}

fn items<'p>(p: &'p Pickle<'_>, id: Id) -> Option<&'p [(Id, Id)]> {
    match p.get(id) {
        Value::Dict(items) => Some(items),
        _ => None,
    }
}

/// A mapping key as a name segment: strings as they are, integers in decimal.
fn key_text(p: &Pickle, id: Id) -> Option<String> {
    match p.get(id) {
        Value::Str(s) => Some((*s).to_owned()),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

/// Tensors under `id` by flat name (`prefix.key.key…`), depth-first in pickle order.
fn flatten(
    p: &Pickle,
    id: Id,
    prefix: &str,
    depth: usize,
    seen: &mut HashSet<Id>,
    out: &mut Vec<(String, Id)>,
) -> Result<(), TorchProblem> {
    if depth > MAX_DEPTH {
        return Err(TorchProblem::TooDeep { limit: MAX_DEPTH });
    }
    // A mapping reachable twice (or from itself) is flattened once.
    if !seen.insert(id) {
        return Ok(());
    }
    let Some(items) = items(p, id) else {
        return Ok(());
    };
    for &(k, v) in items {
        let Some(k) = key_text(p, k) else { continue };
        let name = if prefix.is_empty() {
            k
        } else {
            format!("{prefix}.{k}")
        };
        match p.get(v) {
            Value::Tensor(_) => out.push((name, v)),
            Value::Dict(_) => flatten(p, v, &name, depth + 1, seen, out)?,
            _ => {}
        }
    }
    Ok(())
}

fn tensors_under(p: &Pickle, id: Id) -> Result<Vec<(String, Id)>, TorchProblem> {
    let mut out = Vec::new();
    flatten(p, id, "", 0, &mut HashSet::default(), &mut out)?;
    Ok(out)
}

/// Top-level keys holding tensors, with their counts, for an error that lists the choices.
fn candidates(p: &Pickle, root: Id) -> Result<Vec<(String, usize)>, TorchProblem> {
    let mut out = Vec::new();
    for &(k, v) in items(p, root).unwrap_or_default() {
        let (Some(k), Value::Dict(_)) = (key_text(p, k), p.get(v)) else {
            continue;
        };
        let n = tensors_under(p, v)?.len();
        if n > 0 {
            out.push((k, n));
        }
    }
    Ok(out)
}

/// Follows the dot path `path` from `root`; a key may itself contain dots, so the longest
/// key matching a prefix of the remaining path wins.
fn resolve(p: &Pickle, root: Id, path: &str) -> Option<Id> {
    let mut at = root;
    let mut rest = path;
    while !rest.is_empty() {
        let items = items(p, at)?;
        let (used, v) = items
            .iter()
            .filter_map(|&(k, v)| {
                let k = key_text(p, k)?;
                let matched = rest == k || rest.starts_with(&format!("{k}."));
                matched.then_some((k.len(), v))
            })
            .max_by_key(|&(len, _)| len)?;
        at = v;
        rest = rest[used..].strip_prefix('.').unwrap_or("");
    }
    Some(at)
}

fn unique(mut tensors: Vec<(String, Id)>, key: Option<String>) -> Selected {
    // Names are borrowed, not copied, to find the repeats: a state dict has tens of
    // thousands of names (and usually no repeat).
    let mut seen = HashSet::with_capacity_and_hasher(tensors.len(), Default::default());
    let repeated: Vec<bool> = tensors
        .iter()
        .map(|(name, _)| !seen.insert(name.as_str()))
        .collect();
    drop(seen);
    let mut repeated = repeated.into_iter();
    let duplicates = tensors
        .extract_if(.., |_| repeated.next() == Some(true))
        .map(|(name, _)| name)
        .collect();
    Selected {
        tensors,
        key,
        duplicates,
    }
}

/// Picks the state dict: `key`'s mapping when given; else the top level when it holds
/// tensors itself; else the first of [`STATE_DICT_KEYS`] that holds tensors.
pub(crate) fn select(p: &Pickle, key: Option<&str>) -> Result<Selected, TorchProblem> {
    let root = p.root;
    if let Some(path) = key {
        let found = resolve(p, root, path).filter(|&id| items(p, id).is_some());
        let tensors = match found {
            Some(id) => tensors_under(p, id)?,
            None => Vec::new(),
        };
        if tensors.is_empty() {
            let what = if found.is_some() {
                format!("--key {path:?} names a mapping that holds no tensors")
            } else {
                format!("--key {path:?} names no mapping in the checkpoint")
            };
            return Err(TorchProblem::NoStateDict {
                what,
                candidates: candidates(p, root)?,
            });
        }
        return Ok(unique(tensors, Some(path.to_owned())));
    }
    let Some(top) = items(p, root) else {
        return Err(TorchProblem::NoStateDict {
            what: "the pickle's top-level object is not a mapping (a whole pickled model?), so it holds no state dict".to_owned(),
            candidates: Vec::new(),
        });
    };
    if top
        .iter()
        .any(|&(_, v)| matches!(p.get(v), Value::Tensor(_)))
    {
        return Ok(unique(tensors_under(p, root)?, None));
    }
    for name in STATE_DICT_KEYS {
        let Some(&(_, v)) = top
            .iter()
            .find(|&&(k, _)| matches!(p.get(k), Value::Str(s) if *s == name))
        else {
            continue;
        };
        let tensors = tensors_under(p, v)?;
        if !tensors.is_empty() {
            return Ok(unique(tensors, Some(name.to_owned())));
        }
    }
    let candidates = candidates(p, root)?;
    let what = if candidates.is_empty() {
        "holds no tensors (no state dict)".to_owned()
    } else {
        format!(
            "no state dict at the top level or under {}",
            STATE_DICT_KEYS.join("/")
        )
    };
    Err(TorchProblem::NoStateDict { what, candidates })
}
