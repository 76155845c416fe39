//! A whole file as a checkpoint, opened in both read modes and put through ls, diff, check
//! and explain against a real PyTorch-made checkpoint.
#![no_main]

use std::sync::OnceLock;

use bnaudit::checkpoint::{Checkpoint, ReadMode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    static OTHER: OnceLock<Checkpoint> = OnceLock::new();
    let other = OTHER.get_or_init(|| {
        Checkpoint::open(bnaudit_fuzz::fixture("explain/a.safetensors"), ReadMode::Mmap)
            .expect("fixture opens")
    });
    let path = bnaudit_fuzz::write("input.safetensors", data);
    for ckpt in bnaudit_fuzz::open_both(&path) {
        for t in ckpt.tensors() {
            let _ = ckpt.values(t);
        }
        bnaudit_fuzz::audit_all(&ckpt, other);
    }
});
