//! A file as `bnaudit.toml` and as `pyproject.toml`, loaded, and its patterns compiled into
//! a scope.
#![no_main]

use bnaudit::audit::config::{self, CONFIG_FILE, PYPROJECT_FILE};
use bnaudit::audit::scope::Scope;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for name in [CONFIG_FILE, PYPROJECT_FILE] {
        let path = bnaudit_fuzz::write(name, data);
        if let Ok(found) = config::load(&path) {
            let p = found.patterns;
            let _ = Scope::new(
                &p.frozen.unwrap_or_default(),
                &p.trainable.unwrap_or_default(),
                &p.allow_stats.unwrap_or_default(),
            );
        }
    }
});
