//! A bounded set of open file descriptors, shared by every checkpoint file of the process.
//!
//! A sharded checkpoint can have thousands of shards, and a process may hold only about a
//! thousand descriptors (`ulimit -n`). Each file keeps a [`Handle`]: the most recently used
//! [`MAX_OPEN_FILES`] stay open, others are closed and opened again on their next read,
//! after checking that the path still names the same file.

use std::fs::{File, Metadata};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use super::error::Problem;
use super::input;

/// Most checkpoint files held open at once.
pub const MAX_OPEN_FILES: usize = 64;

/// Files this close to the most recently used end of the pool are not moved on a read.
const RECENT: usize = MAX_OPEN_FILES / 4;

/// Open files by handle id, least recently used first (within [`RECENT`] places).
static OPEN: Mutex<Vec<(u64, Arc<File>)>> = Mutex::new(Vec::new());
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

fn open_files() -> MutexGuard<'static, Vec<(u64, Arc<File>)>> {
    // A panic elsewhere while holding the lock leaves a valid list behind.
    OPEN.lock().unwrap_or_else(|e| e.into_inner())
}

/// One file's claim on a descriptor; closing it is the pool's business.
#[derive(Debug)]
pub(crate) struct Handle {
    id: u64,
    path: PathBuf,
    /// Device and inode when first opened: a reopened path must name the same file.
    identity: (u64, u64),
}

impl Handle {
    /// Puts `file`, just opened from `path` with metadata `meta`, into the pool.
    pub(crate) fn new(path: &Path, file: File, meta: &Metadata) -> Handle {
        let handle = Handle {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            path: path.to_owned(),
            identity: (meta.dev(), meta.ino()),
        };
        insert(handle.id, Arc::new(file));
        handle
    }

    /// The open file, reopened if the pool closed it.
    pub(crate) fn file(&self) -> Result<Arc<File>, Problem> {
        {
            let mut open = open_files();
            if let Some(i) = open.iter().rposition(|(id, _)| *id == self.id) {
                let file = Arc::clone(&open[i].1);
                // Among the most recent already: left in place. A diff reads millions of
                // small tensors from two files in turn, and moving one to the end on each
                // read cost more than the read.
                if i + RECENT < open.len() {
                    let entry = open.remove(i);
                    open.push(entry);
                }
                return Ok(file);
            }
        }
        // Opened outside the lock: other files' reads need not wait for this one.
        let (file, meta) = input::open_regular(&self.path)?;
        if (meta.dev(), meta.ino()) != self.identity {
            return Err(Problem::Replaced);
        }
        let file = Arc::new(file);
        insert(self.id, Arc::clone(&file));
        Ok(file)
    }
}

/// Adds an open file as the most recently used, closing the least recently used beyond the
/// bound (a reader still holding one keeps it open until it is done).
fn insert(id: u64, file: Arc<File>) {
    let mut open = open_files();
    open.retain(|(other, _)| *other != id);
    if open.len() >= MAX_OPEN_FILES {
        open.remove(0);
    }
    open.push((id, file));
}

impl Drop for Handle {
    fn drop(&mut self) {
        open_files().retain(|(id, _)| *id != self.id);
    }
}
