//! What the fuzz targets share: a scratch directory for the inputs they turn into files, and
//! the audits a checkpoint goes through. Every target only asserts that nothing panics and
//! nothing hangs; errors are expected answers to garbage.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use bnaudit::audit::check::{self, CheckOptions};
use bnaudit::audit::scope::Scope;
use bnaudit::audit::{self, DiffOptions, ExplainOptions, LsOptions};
use bnaudit::checkpoint::{Checkpoint, ReadMode};

/// A directory that lives as long as the fuzzing process.
pub fn scratch() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    // In memory where there is a tmpfs: every execution writes its input as a file.
    DIR.get_or_init(|| {
        tempfile::tempdir_in("/dev/shm")
            .or_else(|_| tempfile::tempdir())
            .expect("temporary directory")
    })
    .path()
}

/// Writes `bytes` to `name` in the scratch directory.
pub fn write(name: &str, bytes: &[u8]) -> PathBuf {
    let path = scratch().join(name);
    std::fs::write(&path, bytes).expect("write scratch file");
    path
}

/// A fixture of the main crate's tests.
pub fn fixture(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(path)
}

/// Opens `path` in both read modes.
pub fn open_both(path: &Path) -> impl Iterator<Item = Checkpoint> + '_ {
    [ReadMode::Mmap, ReadMode::Pread]
        .into_iter()
        .filter_map(move |mode| Checkpoint::open(path, mode).ok())
}

/// Makes rayon's global pool the calling thread alone: the audits then run their parallel
/// loops inline instead of handing every loop to other threads, which costs more than the
/// work on fuzz-sized inputs, and the fuzzer uses one core.
pub fn one_thread() {
    rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .use_current_thread()
        .build_global()
        .expect("rayon's global pool is not built yet");
}

/// Writes `data` as `name` in the scratch directory, opens it in both read modes, reads
/// every tensor's values and puts it through [`audit_all`] against a small PyTorch-made
/// checkpoint (two BatchNorm layers of three channels, named as the `file` seeds are).
pub fn audit_input(name: &str, data: &[u8]) {
    static OTHER: OnceLock<Checkpoint> = OnceLock::new();
    let other = OTHER.get_or_init(|| {
        Checkpoint::open(fixture("explain/small_a.safetensors"), ReadMode::Mmap)
            .expect("fixture opens")
    });
    let path = write(name, data);
    for ckpt in open_both(&path) {
        for t in ckpt.tensors() {
            let _ = ckpt.values(t);
        }
        audit_all(&ckpt, other);
    }
}

/// Runs `ls`, `diff`, `check` and `explain` of `ckpt` against `other` (and itself), as the
/// subcommands do.
pub fn audit_all(ckpt: &Checkpoint, other: &Checkpoint) {
    let _ = audit::ls(ckpt, LsOptions { all: true });
    let diff = DiffOptions::default();
    for (a, b) in [(ckpt, other), (other, ckpt), (ckpt, ckpt)] {
        let _ = audit::diff(a, b, &diff, None);
        let _ = audit::explain(a, b, None, &ExplainOptions::default());
    }
    // Built once: compiling the glob set on every execution cost more than some audits.
    static CHECK: OnceLock<CheckOptions> = OnceLock::new();
    let options = CHECK.get_or_init(|| CheckOptions {
        scope: Scope::new(&["**".to_owned()], &[], &[]).expect("valid scope"),
        config: None,
        diff,
    });
    let _ = check::check(other, ckpt, options, None);
}
