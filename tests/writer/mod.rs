//! Writes small safetensors files tensor by tensor, for tests that need a file no committed
//! fixture has (hand-made numbers, not claims about PyTorch).

// Each test crate that includes this module uses a different part of it.
#![allow(dead_code)]

use std::path::Path;

use serde_json::{Map, Value, json};

/// A safetensors file being assembled: header entries and the data section.
#[derive(Default)]
pub struct SafetensorsWriter {
    header: Map<String, Value>,
    data: Vec<u8>,
}

impl SafetensorsWriter {
    /// Appends a tensor with its raw little-endian bytes.
    pub fn raw(&mut self, name: &str, dtype: &str, shape: &[usize], bytes: &[u8]) -> &mut Self {
        let start = self.data.len();
        self.data.extend_from_slice(bytes);
        self.header.insert(
            name.to_owned(),
            json!({"dtype": dtype, "shape": shape, "data_offsets": [start, self.data.len()]}),
        );
        self
    }

    /// Appends an F32 vector of `len` copies of `value`.
    pub fn f32_filled(&mut self, name: &str, len: usize, value: f32) -> &mut Self {
        let bytes: Vec<u8> = (0..len).flat_map(|_| value.to_le_bytes()).collect();
        self.raw(name, "F32", &[len], &bytes)
    }

    /// Appends an I64 scalar, as PyTorch stores `num_batches_tracked`.
    pub fn i64_scalar(&mut self, name: &str, value: i64) -> &mut Self {
        self.raw(name, "I64", &[], &value.to_le_bytes())
    }

    /// Appends a 4-channel PyTorch BatchNorm layer: weight 1, bias 0, running mean `moved`,
    /// running variance `1 + moved`, counter `count`.
    pub fn bn_layer(&mut self, layer: &str, moved: f32, count: i64) -> &mut Self {
        self.f32_filled(&format!("{layer}.weight"), 4, 1.0)
            .f32_filled(&format!("{layer}.bias"), 4, 0.0)
            .f32_filled(&format!("{layer}.running_mean"), 4, moved)
            .f32_filled(&format!("{layer}.running_var"), 4, 1.0 + moved)
            .i64_scalar(&format!("{layer}.num_batches_tracked"), count)
    }

    /// Sets `__metadata__`.
    pub fn metadata(&mut self, metadata: Value) -> &mut Self {
        self.header.insert("__metadata__".to_owned(), metadata);
        self
    }

    /// Writes the file: 8-byte header length, header JSON, data.
    pub fn write(&self, path: &Path) {
        let header = serde_json::to_vec(&self.header).expect("JSON");
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend(header);
        bytes.extend_from_slice(&self.data);
        std::fs::write(path, bytes).expect("write");
    }
}
