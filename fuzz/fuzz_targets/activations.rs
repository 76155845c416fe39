//! A file as the activation file of `explain A B --activations FILE`, with A and B the
//! PyTorch-made pair of tests/fixtures/explain.
#![no_main]

use std::sync::OnceLock;

use bnaudit::audit::{self, ExplainOptions};
use bnaudit::checkpoint::{Checkpoint, ReadMode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(init: bnaudit_fuzz::one_thread(), |data: &[u8]| {
    static PAIR: OnceLock<[Checkpoint; 2]> = OnceLock::new();
    let [a, b] = PAIR.get_or_init(|| {
        ["explain/a.safetensors", "explain/b.safetensors"].map(|f| {
            Checkpoint::open(bnaudit_fuzz::fixture(f), ReadMode::Mmap).expect("fixture opens")
        })
    });
    let path = bnaudit_fuzz::write("activations.safetensors", data);
    for acts in bnaudit_fuzz::open_both(&path) {
        let _ = audit::explain(a, b, Some(&acts), &ExplainOptions::default());
    }
});
