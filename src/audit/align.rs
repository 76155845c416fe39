//! Pairing the tensors of two checkpoints whose names differ by a wrapper prefix, or
//! because one of them holds a sub-model saved on its own.
//!
//! `DistributedDataParallel` and `DataParallel` save `module.…`, `torch.compile` saves
//! `_orig_mod.…`, training frameworks often save `model.…`, and wrappers nest. Each side's
//! candidate prefixes are the chains of those wrappers that start some of its names; the
//! pair of candidates that matches the most names wins (ties go to stripping less).
//!
//! A sub-model saved on its own (`model_A.state_dict()`) against the model that holds it
//! (`joint.state_dict()`, with `model_A.` and `model_B.` inside) matches no name until the
//! sub-model's names get their module prefix back: when every name of one side, wrappers
//! stripped, appears in the other under one module prefix ([`submodel_prefix`]), that prefix
//! is added to the names of the side it is missing from.

use foldhash::{HashSet, HashSetExt};
use std::borrow::Cow;

use super::compare::TensorPair;
use super::diff::Alignment;
use crate::checkpoint::{Checkpoint, TensorInfo};

/// Wrapper prefixes tried, alone and chained.
pub const WRAPPERS: [&str; 3] = ["module.", "_orig_mod.", "model."];

/// Longest chain of wrappers tried (e.g. `module._orig_mod.model.`).
const MAX_CHAIN: usize = 3;

/// Both sides' tensors under their aligned names, sorted by name.
///
/// The [`TensorInfo`]s are the checkpoint's own where nothing is stripped (a copy of a
/// million tensors costs a few hundred MB), else copies with only the name changed, so they
/// read from their checkpoint as before.
#[derive(Debug, Clone)]
pub struct Aligned<'t> {
    /// How the names were aligned.
    pub alignment: Alignment,
    /// A's tensors, renamed, sorted by name without repeats.
    pub a: Cow<'t, [TensorInfo]>,
    /// B's tensors, renamed, sorted by name without repeats.
    pub b: Cow<'t, [TensorInfo]>,
}

impl Aligned<'_> {
    /// Every aligned name with the tensor on each side, sorted by name.
    pub fn pairs(&self) -> Vec<TensorPair<'_>> {
        let mut pairs = Vec::with_capacity(self.a.len().max(self.b.len()));
        let (mut i, mut j) = (0, 0);
        while i < self.a.len() || j < self.b.len() {
            let (a, b) = (self.a.get(i), self.b.get(j));
            let order = match (a, b) {
                (Some(a), Some(b)) => a.name.cmp(&b.name),
                (Some(_), None) => std::cmp::Ordering::Less,
                _ => std::cmp::Ordering::Greater,
            };
            let (a, b) = match order {
                std::cmp::Ordering::Less => (a, None),
                std::cmp::Ordering::Greater => (None, b),
                std::cmp::Ordering::Equal => (a, b),
            };
            i += usize::from(a.is_some());
            j += usize::from(b.is_some());
            let name = a.or(b).map_or("", |t| t.name.as_str());
            pairs.push(TensorPair { name, a, b });
        }
        pairs
    }
}

/// The tensor named `name` among `tensors`, sorted by name as [`Aligned`] keeps each side:
/// found by binary search, with no index of a million names to build.
pub fn find<'t>(tensors: &'t [TensorInfo], name: &str) -> Option<&'t TensorInfo> {
    let at = tensors.binary_search_by(|t| t.name.as_str().cmp(name));
    at.ok().map(|i| &tensors[i])
}

/// Normalises a prefix given on the command line: `module` means `module.`.
pub fn normalise_prefix(prefix: &str) -> String {
    if prefix.is_empty() || prefix.ends_with(['.', '/']) {
        prefix.to_owned()
    } else {
        format!("{prefix}.")
    }
}

/// Aligns A's and B's names; a forced prefix (`--strip-prefix-a/-b`) is used as given,
/// the other side's is detected, and so is a sub-model saved on its own on either side.
pub fn align<'t>(
    a: &'t [TensorInfo],
    b: &'t [TensorInfo],
    strip_a: Option<&str>,
    strip_b: Option<&str>,
) -> Aligned<'t> {
    // (matched, length of the sub-model prefix added, length stripped, strips, prefixes
    // added): the most names matched, then the shortest prefix added (none best: a wrapper
    // is stripped rather than made part of the sub-model's prefix), then the least stripped.
    type Best<'c> = (usize, usize, usize, &'c str, &'c str, String, String);
    // The same unique names on both sides (one model before and after training): leaving
    // them as they are matches every name at no cost, which no candidate can beat, so the
    // search (sets of every name per candidate) is skipped.
    let same = strip_a.is_none()
        && strip_b.is_none()
        && a.len() == b.len()
        && a.is_sorted_by(|x, y| x.name < y.name)
        && a.iter().zip(b).all(|(x, y)| x.name == y.name);
    let mut best: Option<Best<'_>> =
        same.then(|| (a.len(), 0, 0, "", "", String::new(), String::new()));
    let (cands_a, cands_b) = if same {
        (Vec::new(), Vec::new())
    } else {
        (candidates(a, strip_a), candidates(b, strip_b))
    };
    let stripped_b: Vec<Option<HashSet<&str>>> =
        cands_b.iter().map(|pb| stripped_names(b, pb)).collect();
    for pa in &cands_a {
        let Some(names_a) = stripped_names(a, pa) else {
            continue;
        };
        for (pb, names_b) in cands_b.iter().zip(&stripped_b) {
            let Some(names_b) = names_b else {
                continue;
            };
            let direct = names_a.intersection(names_b).count();
            let mut found = (direct, String::new(), String::new());
            // Only when names are left over on both sides can a sub-model prefix match more.
            if direct < names_a.len() && direct < names_b.len() {
                if let Some(p) = submodel_prefix(&names_a, names_b) {
                    found = (names_a.len(), p, String::new());
                } else if let Some(p) = submodel_prefix(names_b, &names_a) {
                    found = (names_b.len(), String::new(), p);
                }
            }
            let (matched, add_a, add_b) = found;
            let added = add_a.len() + add_b.len();
            let cost = pa.len() + pb.len();
            let better = best.as_ref().is_none_or(|&(m, ad, c, ..)| {
                matched > m || (matched == m && (added, cost) < (ad, c))
            });
            if better {
                best = Some((matched, added, cost, pa, pb, add_a, add_b));
            }
        }
    }
    // Forced prefixes that make two names collide are stripped anyway, first name wins.
    let (pa, pb, add_a, add_b) = best.map_or_else(
        || {
            let forced = |p: Option<&str>| p.unwrap_or("").to_owned();
            (
                forced(strip_a),
                forced(strip_b),
                String::new(),
                String::new(),
            )
        },
        |b| (b.3.to_owned(), b.4.to_owned(), b.5, b.6),
    );
    let mut aligned = Aligned {
        a: renamed(a, &pa, &add_a),
        b: renamed(b, &pb, &add_b),
        alignment: Alignment {
            strip_a: pa,
            strip_b: pb,
            prefix_a: add_a,
            prefix_b: add_b,
            detected: strip_a.is_none() && strip_b.is_none(),
            matched: 0,
            only_a: 0,
            only_b: 0,
        },
    };
    let pairs = aligned.pairs();
    let count = |f: fn(&TensorPair<'_>) -> bool| pairs.iter().filter(|p| f(p)).count();
    let (matched, only_a, only_b) = (
        count(|p| p.a.is_some() && p.b.is_some()),
        count(|p| p.b.is_none()),
        count(|p| p.a.is_none()),
    );
    drop(pairs);
    aligned.alignment.matched = matched;
    aligned.alignment.only_a = only_a;
    aligned.alignment.only_b = only_b;
    aligned
}

/// The module prefix under which every name of `inner` appears in `outer` (`"model_A."`
/// when `inner` is model_A's own state dict and `outer` the joint model's), if there is
/// exactly one; `None` when `inner` is empty or no prefix, or more than one, fits.
///
/// Linear in the names: the candidates are the prefixes that put `inner`'s longest name
/// into `outer` (one in practice), each checked against every name of `inner`.
pub fn submodel_prefix(inner: &HashSet<&str>, outer: &HashSet<&str>) -> Option<String> {
    let probe = inner
        .iter()
        .max_by(|x, y| x.len().cmp(&y.len()).then(y.cmp(x)))?;
    let mut fits = outer.iter().filter_map(|o| {
        let p = o.strip_suffix(probe)?;
        let fits = p.ends_with(['.', '/'])
            && p.len() > 1
            && inner
                .iter()
                .all(|n| outer.contains(format!("{p}{n}").as_str()));
        fits.then_some(p)
    });
    let first = fits.next()?;
    // Two prefixes that both fit (model_A and a copy of it) leave the choice open.
    fits.next().is_none().then(|| first.to_owned())
}

/// The tensor of `ckpt` that has the aligned name `aligned` after `prefix` was stripped
/// and the sub-model prefix `added` put in front: the inverse of the renaming, where a name
/// that did not start with the prefix kept it as it was, and a prefixed name wins a
/// collision as it does in [`align`].
pub fn original<'c>(
    ckpt: &'c Checkpoint,
    prefix: &str,
    added: &str,
    aligned: &str,
) -> Option<&'c TensorInfo> {
    let aligned = aligned.strip_prefix(added)?;
    ckpt.get(&format!("{prefix}{aligned}")).or_else(|| {
        ckpt.get(aligned)
            .filter(|t| !t.name.starts_with(prefix) || prefix.is_empty())
    })
}

/// Prefixes to try on one side: the forced one, or "" and every chain of wrappers that
/// starts at least one name.
fn candidates(tensors: &[TensorInfo], forced: Option<&str>) -> Vec<String> {
    if let Some(p) = forced {
        return vec![p.to_owned()];
    }
    let mut out = vec![String::new()];
    let mut frontier = vec![String::new()];
    for _ in 0..MAX_CHAIN {
        let mut next = Vec::new();
        for chain in &frontier {
            for w in WRAPPERS {
                let c = format!("{chain}{w}");
                if tensors.iter().any(|t| t.name.starts_with(&c)) {
                    next.push(c);
                }
            }
        }
        out.extend(next.iter().cloned());
        frontier = next;
    }
    out
}

fn strip<'n>(name: &'n str, prefix: &str) -> &'n str {
    name.strip_prefix(prefix).unwrap_or(name)
}

/// Names with `prefix` stripped where present, or `None` when stripping makes two equal.
fn stripped_names<'n>(tensors: &'n [TensorInfo], prefix: &str) -> Option<HashSet<&'n str>> {
    let mut set = HashSet::with_capacity(tensors.len());
    tensors
        .iter()
        .all(|t| set.insert(strip(&t.name, prefix)))
        .then_some(set)
}

/// The tensors with `prefix` stripped (first name wins) and `added` put in front of every
/// name, sorted by name; borrowed when that changes nothing (a checkpoint's tensors are
/// sorted and unique already).
fn renamed<'t>(tensors: &'t [TensorInfo], prefix: &str, added: &str) -> Cow<'t, [TensorInfo]> {
    let strips = !prefix.is_empty() && tensors.iter().any(|t| t.name.starts_with(prefix));
    if !strips && added.is_empty() && tensors.is_sorted_by(|x, y| x.name < y.name) {
        return Cow::Borrowed(tensors);
    }
    // Each name is built once (no clone to overwrite); the stable sort keeps the first of
    // names that collide after stripping, as a set of seen names would, without hashing.
    let mut out: Vec<TensorInfo> = tensors
        .iter()
        .map(|t| TensorInfo {
            name: format!("{added}{}", strip(&t.name, prefix)),
            dtype: t.dtype,
            shape: t.shape.clone(),
            file: t.file,
            bytes: t.bytes,
            start: t.start,
            view: t.view.clone(),
        })
        .collect();
    out.sort_by(|x, y| x.name.cmp(&y.name));
    out.dedup_by(|later, first| later.name == first.name);
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::Dtype;

    fn tensors(names: &[&str]) -> Vec<TensorInfo> {
        names
            .iter()
            .map(|n| TensorInfo {
                name: (*n).to_owned(),
                dtype: Dtype::F32,
                shape: vec![1],
                file: 0,
                bytes: 4,
                start: 0,
                view: None,
            })
            .collect()
    }

    fn detected(a: &[&str], b: &[&str]) -> (String, String, usize) {
        let al = align(&tensors(a), &tensors(b), None, None).alignment;
        assert!(al.detected);
        (al.strip_a, al.strip_b, al.matched)
    }

    const PLAIN: [&str; 3] = [
        "backbone.bn.weight",
        "backbone.bn.running_mean",
        "head.fc.weight",
    ];

    #[test]
    fn wrappers_alone_and_chained() {
        let with = |p: &str| PLAIN.iter().map(|n| format!("{p}{n}")).collect::<Vec<_>>();
        for prefix in [
            "module.",
            "_orig_mod.",
            "model.",
            "module._orig_mod.",
            "_orig_mod.module.",
        ] {
            let b = with(prefix);
            let b: Vec<&str> = b.iter().map(String::as_str).collect();
            assert_eq!(detected(&PLAIN, &b), (String::new(), prefix.to_owned(), 3));
            assert_eq!(detected(&b, &PLAIN), (prefix.to_owned(), String::new(), 3));
        }
        // Different wrappers on each side.
        let a = with("module.");
        let b = with("_orig_mod.");
        let (a, b): (Vec<&str>, Vec<&str>) = (
            a.iter().map(String::as_str).collect(),
            b.iter().map(String::as_str).collect(),
        );
        assert_eq!(
            detected(&a, &b),
            ("module.".to_owned(), "_orig_mod.".to_owned(), 3)
        );
    }

    /// `model.` that both sides share is part of the names (Hugging Face models): kept.
    #[test]
    fn shared_prefixes_stay() {
        let a = ["model.encoder.bn.weight", "model.encoder.bn.running_var"];
        assert_eq!(detected(&a, &a), (String::new(), String::new(), 2));
    }

    /// Identical sorted names take the shortcut past the search and still come out as the
    /// search would leave them: wrappers both sides share stay, every name matched.
    #[test]
    fn identical_names_are_left_as_they_are() {
        let a = [
            "module.encoder.bn.running_var",
            "module.encoder.bn.weight",
            "module.head",
        ];
        let (ta, tb) = (tensors(&a), tensors(&a));
        let al = align(&ta, &tb, None, None);
        assert!(matches!(al.a, Cow::Borrowed(_)) && matches!(al.b, Cow::Borrowed(_)));
        let al = al.alignment;
        assert_eq!((al.strip_a.as_str(), al.strip_b.as_str()), ("", ""));
        assert_eq!((al.matched, al.only_a, al.only_b), (3, 0, 0));
        assert!(al.detected);
    }

    #[test]
    fn forced_and_partial() {
        let b = [
            "module.backbone.bn.weight",
            "module.backbone.bn.running_mean",
            "extra",
        ];
        let al = align(&tensors(&PLAIN), &tensors(&b), None, Some("module.")).alignment;
        assert!(!al.detected);
        assert_eq!((al.matched, al.only_a, al.only_b), (2, 1, 1));
        assert_eq!(normalise_prefix("module"), "module.");
        assert_eq!(normalise_prefix("params/"), "params/");
        assert_eq!(normalise_prefix(""), "");
        // Forcing "" keeps the names as they are: nothing matches.
        let none = align(&tensors(&PLAIN), &tensors(&b), Some(""), Some("")).alignment;
        assert_eq!(none.matched, 0);
    }

    /// model_A's own file against the joint model's, either way round and under wrappers.
    #[test]
    fn a_submodel_saved_on_its_own_gets_its_prefix() {
        let joint: Vec<String> = PLAIN
            .iter()
            .map(|n| format!("model_A.{n}"))
            .chain([
                "model_B.bn.weight".to_owned(),
                "model_B.fc.weight".to_owned(),
            ])
            .collect();
        let joint: Vec<&str> = joint.iter().map(String::as_str).collect();
        let al = align(&tensors(&PLAIN), &tensors(&joint), None, None).alignment;
        assert_eq!(
            (al.prefix_a.as_str(), al.prefix_b.as_str()),
            ("model_A.", "")
        );
        assert_eq!((al.matched, al.only_a, al.only_b), (3, 0, 2));
        assert_eq!(al.name_a("head.fc.weight"), "model_A.head.fc.weight");
        let al = align(&tensors(&joint), &tensors(&PLAIN), None, None).alignment;
        assert_eq!(
            (al.prefix_a.as_str(), al.prefix_b.as_str()),
            ("", "model_A.")
        );
        assert_eq!((al.matched, al.only_a, al.only_b), (3, 2, 0));
        // A DDP wrapper on top is stripped, not made part of the sub-model's prefix.
        let ddp: Vec<String> = joint.iter().map(|n| format!("module.{n}")).collect();
        let ddp: Vec<&str> = ddp.iter().map(String::as_str).collect();
        let al = align(&tensors(&PLAIN), &tensors(&ddp), None, None).alignment;
        assert_eq!(
            (al.strip_b.as_str(), al.prefix_a.as_str(), al.matched),
            ("module.", "model_A.", 3)
        );
        // Two sub-models that both hold A's names: no guess.
        let twins: Vec<String> = ["x.", "y."]
            .iter()
            .flat_map(|p| PLAIN.iter().map(move |n| format!("{p}{n}")))
            .collect();
        let twins: Vec<&str> = twins.iter().map(String::as_str).collect();
        let al = align(&tensors(&PLAIN), &tensors(&twins), None, None).alignment;
        assert_eq!((al.prefix_a.as_str(), al.matched), ("", 0));
        // A name of A missing from B: not a sub-model.
        let partial = [
            "model_A.backbone.bn.weight",
            "model_A.head.fc.weight",
            "other.w",
        ];
        let al = align(&tensors(&PLAIN), &tensors(&partial), None, None).alignment;
        assert_eq!(al.prefix_a, "");
    }

    #[test]
    fn pairs_merge_sorted_names() {
        let (a, b) = (tensors(&["a", "c"]), tensors(&["b", "c"]));
        let al = align(&a, &b, None, None);
        let pairs = al.pairs();
        let pairs: Vec<(&str, bool, bool)> = pairs
            .iter()
            .map(|p| (p.name, p.a.is_some(), p.b.is_some()))
            .collect();
        assert_eq!(
            pairs,
            [("a", true, false), ("b", false, true), ("c", true, true)]
        );
    }
}
