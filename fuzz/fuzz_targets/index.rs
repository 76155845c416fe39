//! A `*.safetensors.index.json` next to two real shards (tests/fixtures/ls/sharded), opened
//! and listed.
#![no_main]

use std::sync::OnceLock;

use bnaudit::audit::{self, LsOptions};
use libfuzzer_sys::fuzz_target;

fuzz_target!(init: bnaudit_fuzz::one_thread(), |data: &[u8]| {
    static SHARDS: OnceLock<()> = OnceLock::new();
    SHARDS.get_or_init(|| {
        for shard in [
            "model-00001-of-00002.safetensors",
            "model-00002-of-00002.safetensors",
        ] {
            let bytes = std::fs::read(bnaudit_fuzz::fixture(&format!("ls/sharded/{shard}")))
                .expect("fixture shard");
            bnaudit_fuzz::write(shard, &bytes);
        }
    });
    let path = bnaudit_fuzz::write("model.safetensors.index.json", data);
    for ckpt in bnaudit_fuzz::open_both(&path) {
        let _ = audit::ls(&ckpt, LsOptions { all: true });
    }
});
