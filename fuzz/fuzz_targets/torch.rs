//! A file as a torch.save archive (the restricted pickle reader and the zip directory),
//! opened in both read modes and put through ls, diff, check and explain against a real
//! PyTorch-made checkpoint.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(init: bnaudit_fuzz::one_thread(), |data: &[u8]| {
    bnaudit_fuzz::audit_input("input.pt", data);
});
