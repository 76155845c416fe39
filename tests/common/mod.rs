//! Shared by the explain and engine tests: the PyTorch fixtures of tests/fixtures/explain.

use std::path::PathBuf;

use bnaudit::checkpoint::{Checkpoint, ReadMode};
use serde_json::Value;

/// A file of tests/fixtures/explain.
pub fn path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/explain")
        .join(name)
}

/// A fixture opened as a checkpoint.
pub fn open(name: &str) -> Checkpoint {
    Checkpoint::open(path(name), ReadMode::Mmap).expect("fixture opens")
}

/// expected.json: what PyTorch recorded about each layer and batch.
pub fn expected() -> Value {
    serde_json::from_str(&std::fs::read_to_string(path("expected.json")).expect("read"))
        .expect("JSON")
}

/// A JSON list of numbers.
pub fn numbers(v: &Value) -> Vec<f64> {
    v.as_array()
        .expect("list")
        .iter()
        .map(|x| x.as_f64().expect("number"))
        .collect()
}

/// Largest error relative to the largest magnitude of `expected` (norm-wise: a channel whose
/// value is near 0 still carries the rounding of the larger values it came from).
pub fn rel_err(ours: &[f64], expected: &[f64]) -> f64 {
    assert_eq!(ours.len(), expected.len());
    let scale = expected.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    ours.iter()
        .zip(expected)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max)
        / scale
}
