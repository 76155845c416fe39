//! The safetensors header parser on its own: the first 8 bytes are the data section's
//! length, the rest the header text.
#![no_main]

use bnaudit::checkpoint::header;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((len, text)) = data.split_first_chunk::<8>() else {
        return;
    };
    let data_len = u64::from_le_bytes(*len);
    let _ = header::header_len(*len, data_len.saturating_add(8));
    let _ = header::parse(text, 8 + text.len() as u64, data_len);
});
