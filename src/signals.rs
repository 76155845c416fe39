//! The terminating signals (SIGINT, SIGTERM, SIGHUP), handled in one place for the whole
//! process: on the first one, the temporary files of unfinished outputs are removed, then
//! the terminal is restored if the UI holds it, then the process exits with status
//! 128 + the signal.
//!
//! One handler, so that the order holds whatever runs at the time: with a handler per
//! concern, a restore written from the UI could exit the process (removing its temporary
//! file) before the UI's handler had restored the terminal. The work runs on a thread of
//! its own, not in signal context, so it may lock and write like any other code.

use std::io;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

/// The signals handled; each otherwise ends the process without any of the clean-up.
pub const TERMINATING: [i32; 3] = [SIGINT, SIGTERM, SIGHUP];

/// Temporary files removed on a signal: outputs written but not yet renamed into place.
#[derive(Debug, Default)]
pub struct TempFiles(Vec<PathBuf>);

impl TempFiles {
    /// Removes `path` on a signal from now on.
    pub fn add(&mut self, path: PathBuf) {
        self.0.push(path);
    }

    /// Stops removing `path` (it was renamed or removed).
    pub fn forget(&mut self, path: &Path) {
        self.0.retain(|p| p != path);
    }

    /// Whether `path` is removed on a signal.
    #[cfg(test)]
    pub(crate) fn contains(&self, path: &Path) -> bool {
        self.0.iter().any(|p| p == path)
    }
}

/// What a signal does after the temporary files are gone, before the exit.
static TERMINAL: Mutex<Option<fn()>> = Mutex::new(None);

/// The list of temporary files, locked, with the handler installed. Hold it across creating,
/// renaming or removing one of them: the handler takes the lock for good before it removes
/// them, so that it sees each file either before it exists or once it is listed, and a rename
/// waiting for the lock never happens.
pub fn temp_files() -> MutexGuard<'static, TempFiles> {
    // Without a handler (which never happens in practice) the signal's default action
    // still ends the process, merely leaving the files behind.
    let _ = install();
    temp_list().lock().unwrap_or_else(PoisonError::into_inner)
}

/// Has a signal call `restore` (after removing the temporary files, before exiting);
/// `None` once the terminal is restored by other means. `restore` runs on the handler's
/// thread while other threads go on, so it should keep them from writing to the terminal
/// after it.
pub fn restore_terminal_with(restore: Option<fn()>) -> io::Result<()> {
    install()?;
    *TERMINAL.lock().unwrap_or_else(PoisonError::into_inner) = restore;
    Ok(())
}

fn temp_list() -> &'static Mutex<TempFiles> {
    static LIST: Mutex<TempFiles> = Mutex::new(TempFiles(Vec::new()));
    &LIST
}

/// Installs, once, the thread that waits for [`TERMINATING`] and cleans up.
fn install() -> io::Result<()> {
    static INSTALLED: OnceLock<Result<(), String>> = OnceLock::new();
    INSTALLED
        .get_or_init(|| {
            let mut signals =
                signal_hook::iterator::Signals::new(TERMINATING).map_err(|e| e.to_string())?;
            std::thread::Builder::new()
                .name("signals".to_owned())
                .spawn(move || {
                    if let Some(signal) = signals.forever().next() {
                        // Never unlocked: the process exits next, and a commit waiting
                        // for the lock must not rename a removed file.
                        let files = temp_list().lock().unwrap_or_else(PoisonError::into_inner);
                        let restore = *TERMINAL.lock().unwrap_or_else(PoisonError::into_inner);
                        // Exit whatever happens: a panic here would leave the process
                        // running with nothing left to end it.
                        let _ = std::panic::catch_unwind(AssertUnwindSafe(|| {
                            clean_up(&files, restore);
                        }));
                        std::mem::forget(files);
                        std::process::exit(128 + signal);
                    }
                })
                .map_err(|e| e.to_string())?;
            Ok(())
        })
        .clone()
        .map_err(io::Error::other)
}

/// Removes the temporary files, then restores the terminal.
fn clean_up(files: &TempFiles, restore: Option<fn()>) {
    for path in &files.0 {
        let _ = std::fs::remove_file(path);
    }
    if let Some(restore) = restore {
        restore();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    static FILE_GONE_BEFORE_RESTORE: AtomicBool = AtomicBool::new(false);
    static WATCHED: Mutex<Option<PathBuf>> = Mutex::new(None);

    fn record_restore() {
        let watched = WATCHED.lock().unwrap().clone().expect("a file is watched");
        FILE_GONE_BEFORE_RESTORE.store(!watched.exists(), Ordering::SeqCst);
    }

    /// The clean-up removes the temporary files first, then restores the terminal: a UI
    /// writing a restore leaves neither a partial file nor a raw terminal.
    #[test]
    fn temporary_files_go_before_the_terminal_is_restored() {
        let dir = tempfile::tempdir().unwrap();
        let temp = dir.path().join(".out.tmp");
        std::fs::write(&temp, b"partial").unwrap();
        *WATCHED.lock().unwrap() = Some(temp.clone());
        let mut files = TempFiles::default();
        files.add(temp.clone());
        clean_up(&files, Some(record_restore));
        assert!(!temp.exists(), "the temporary file is removed");
        assert!(
            FILE_GONE_BEFORE_RESTORE.load(Ordering::SeqCst),
            "and it was gone when the terminal was restored"
        );
    }
}
