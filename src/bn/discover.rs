//! Finding BatchNorm layers by structure and naming together.
//!
//! A layer is a module whose running mean and running variance are 1-D float tensors of the
//! same length C; affine tensors of length C and an integer scalar counter are attached when
//! present. Names alone are not enough (a LayerNorm also has `weight` and `bias`), and shapes
//! alone are not either (any pair of vectors would match).

use std::borrow::Cow;

use super::layer::{BnKeys, BnLayer, Convention};
use crate::checkpoint::{Dtype, TensorInfo};

/// Leaf names of one convention.
struct Naming {
    convention: Convention,
    mean: &'static str,
    var: &'static str,
    weight: &'static str,
    bias: &'static str,
}

const NAMINGS: [Naming; 3] = [
    Naming {
        convention: Convention::Pytorch,
        mean: "running_mean",
        var: "running_var",
        weight: "weight",
        bias: "bias",
    },
    Naming {
        convention: Convention::Keras,
        mean: "moving_mean",
        var: "moving_variance",
        weight: "gamma",
        bias: "beta",
    },
    Naming {
        convention: Convention::Paddle,
        mean: "_mean",
        var: "_variance",
        weight: "weight",
        bias: "bias",
    },
];

/// Flax keeps statistics and parameters in two collections of the same module tree.
const FLAX_STATS: &str = "batch_stats";
const FLAX_PARAMS: &str = "params";

/// A tensor name as layer names are given: without the Flax collection segment
/// (`params/…`, `batch_stats/…`), so that a layer's parameters and statistics share a path.
pub fn module_name(name: &str) -> Cow<'_, str> {
    // Borrowed for PyTorch's dotted names: a large `check` asks for millions of them.
    if !name.contains('/') {
        return Cow::Borrowed(name);
    }
    let segments: Vec<&str> = name.split('/').collect();
    match segments
        .iter()
        .position(|s| *s == FLAX_STATS || *s == FLAX_PARAMS)
    {
        Some(at) if segments.len() > 1 => {
            let mut rest = segments;
            rest.remove(at);
            Cow::Owned(rest.join("/"))
        }
        _ => Cow::Borrowed(name),
    }
}

/// A tensor name split into module path and leaf.
struct Split<'a> {
    module: &'a str,
    sep: char,
    leaf: &'a str,
}

/// Splits at the last `.` or `/`; Keras' `:0` variable suffix is dropped from the leaf.
fn split(name: &str) -> Option<Split<'_>> {
    let at = name.rfind(['.', '/'])?;
    let leaf = &name[at + 1..];
    Some(Split {
        module: &name[..at],
        sep: name[at..].chars().next()?,
        leaf: leaf.strip_suffix(":0").unwrap_or(leaf),
    })
}

/// One tensor under its module: (module path, separator, leaf name, tensor).
type Entry<'a> = (&'a str, char, &'a str, &'a TensorInfo);

/// The tensors of one module, in name order.
#[derive(Clone, Copy)]
struct Leaves<'a>(&'a [Entry<'a>]);

impl<'a> Leaves<'a> {
    /// The module's tensor called `leaf`.
    fn get(self, leaf: &str) -> Option<&'a TensorInfo> {
        self.0.iter().find(|e| e.2 == leaf).map(|e| e.3)
    }
}

/// Finds every BatchNorm layer among `tensors`, sorted by name.
pub fn discover(tensors: &[TensorInfo]) -> Vec<BnLayer> {
    // One flat list grouped by module rather than a map of maps: big checkpoints have tens
    // of thousands of modules, and an allocation for each would dominate the time.
    let mut entries: Vec<Entry> = tensors
        .iter()
        .filter_map(|t| split(&t.name).map(|s| (s.module, s.sep, s.leaf, t)))
        .collect();
    // Stable, so each module's leaves stay in name order.
    entries.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
    let modules: Vec<Leaves> = entries
        .chunk_by(|a, b| (a.0, a.1) == (b.0, b.1))
        .map(Leaves)
        .collect();
    let mut layers = Vec::new();
    for &leaves in &modules {
        let (path, sep, _, _) = leaves.0[0];
        if let Some(layer) = NAMINGS
            .iter()
            .find_map(|n| named_layer(path, leaves, n))
            .or_else(|| flax_layer(path, sep, leaves, &modules))
        {
            layers.push(layer);
        }
    }
    // The running mean's key breaks ties between equal names found under two separators.
    layers.sort_by(|a, b| (&a.name, &a.keys.running_mean).cmp(&(&b.name, &b.keys.running_mean)));
    layers
}

/// Length C when `t` is a 1-D float vector.
fn float_vector(t: &TensorInfo) -> Option<u64> {
    (t.shape.len() == 1 && t.dtype.is_float()).then(|| t.shape[0])
}

/// The key of `t` if it is a float vector of length `c`.
fn affine_key(t: Option<&TensorInfo>, c: u64) -> Option<String> {
    t.filter(|t| float_vector(t) == Some(c))
        .map(|t| t.name.clone())
}

/// Running statistics `(C, dtype)` when both are float vectors of the same length.
fn stats_shape(mean: &TensorInfo, var: &TensorInfo) -> Option<(u64, Dtype)> {
    let c = float_vector(mean)?;
    (float_vector(var) == Some(c)).then_some((c, mean.dtype))
}

fn named_layer(module: &str, leaves: Leaves<'_>, n: &Naming) -> Option<BnLayer> {
    let mean = leaves.get(n.mean)?;
    let var = leaves.get(n.var)?;
    let (channels, dtype) = stats_shape(mean, var)?;
    let counter = (n.convention == Convention::Pytorch)
        .then(|| leaves.get("num_batches_tracked"))
        .flatten()
        .filter(|t| t.dtype.is_integer() && t.elements() == 1 && t.shape.len() <= 1)
        .map(|t| t.name.clone());
    Some(BnLayer {
        name: module.to_owned(),
        convention: n.convention,
        channels,
        dtype,
        keys: BnKeys {
            weight: affine_key(leaves.get(n.weight), channels),
            bias: affine_key(leaves.get(n.bias), channels),
            running_mean: mean.name.clone(),
            running_var: var.name.clone(),
            num_batches_tracked: counter,
        },
    })
}

/// A Flax layer: `batch_stats/<m>/{mean,var}` with its affine tensors in `params/<m>`.
fn flax_layer(
    module: &str,
    sep: char,
    leaves: Leaves<'_>,
    modules: &[Leaves<'_>],
) -> Option<BnLayer> {
    let (mean, var) = (leaves.get("mean")?, leaves.get("var")?);
    let (channels, dtype) = stats_shape(mean, var)?;
    let segments: Vec<&str> = module.split(sep).collect();
    let at = segments.iter().position(|s| *s == FLAX_STATS)?;
    let rest = |replacement: Option<&str>| {
        let mut s = segments.clone();
        match replacement {
            Some(r) => s[at] = r,
            None => {
                s.remove(at);
            }
        }
        s.join(&sep.to_string())
    };
    let name = rest(None);
    let params_module = rest(Some(FLAX_PARAMS));
    let params = modules
        .binary_search_by(|m| (m.0[0].0, m.0[0].1).cmp(&(params_module.as_str(), sep)))
        .ok()
        .map(|i| modules[i]);
    Some(BnLayer {
        name,
        convention: Convention::Flax,
        channels,
        dtype,
        keys: BnKeys {
            weight: affine_key(params.and_then(|p| p.get("scale")), channels),
            bias: affine_key(params.and_then(|p| p.get("bias")), channels),
            running_mean: mean.name.clone(),
            running_var: var.name.clone(),
            num_batches_tracked: None,
        },
    })
}
