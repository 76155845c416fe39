//! Output files (`--output` reports and restored checkpoints), written the way `cp` treats
//! its destination and atomically where the destination is a file:
//!
//! - a new file, or an existing regular one, is written to a temporary file beside it,
//!   flushed to disk and renamed over it, so a reader never sees a partial file. A new file
//!   gets `0666 & ~umask`; a replaced one keeps its mode (and owner, where allowed);
//! - a symbolic link is followed: its target is replaced, the link stays;
//! - an existing non-regular file (a device such as `/dev/stdout`, a FIFO) is written
//!   directly, as `cp` does: renaming over it would replace a device node with a file;
//! - a read-only target, a directory, or one we may not write is refused before anything
//!   is written;
//! - the temporary file is removed on failure, and on SIGINT, SIGTERM or SIGHUP (see
//!   [`crate::signals`]).

use std::fs::{self, File, Metadata, Permissions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::signals;

/// Why an output file cannot be written.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// The target exists and is read-only, or we have no permission to write it.
    #[error("{}: the file is read-only; refusing to replace it", .0.display())]
    ReadOnly(PathBuf),
    /// The target is a directory.
    #[error("{}: is a directory", .0.display())]
    Directory(PathBuf),
    /// Symbolic links that loop or nest too deeply.
    #[error("{}: too many levels of symbolic links", .0.display())]
    SymlinkLoop(PathBuf),
    /// Creating, writing, flushing or renaming failed.
    #[error("{}: cannot write output: {error}", path.display())]
    Io {
        /// The target.
        path: PathBuf,
        /// What the operating system said (in the message, not as a `source`: printing the
        /// chain would repeat it).
        error: io::Error,
    },
}

/// Most symbolic links followed, as Linux's `MAXSYMLINKS`.
const MAX_LINKS: usize = 40;

/// The temporary file of an atomic write, renamed over the target on [`Output::commit`].
#[derive(Debug)]
struct Atomic {
    temp: Registered,
    /// The replaced file's metadata, whose mode and owner the new file keeps.
    replaced: Option<Metadata>,
}

/// An output file being written. Dropped without [`Output::commit`], it leaves the target
/// as it was and removes its temporary file.
#[derive(Debug)]
pub struct Output {
    target: PathBuf,
    file: BufWriter<File>,
    /// `None` for an existing device or FIFO, written in place.
    atomic: Option<Atomic>,
}

impl Output {
    /// Opens `path` for writing as the module documentation says; nothing visible changes
    /// until [`Output::commit`] (except on a device or FIFO, written as it comes).
    pub fn create(path: &Path) -> Result<Output, OutputError> {
        let target = resolve(path)?;
        let io_err = |error| OutputError::Io {
            path: target.clone(),
            error,
        };
        let existing = match fs::metadata(&target) {
            Ok(m) => Some(m),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_err(e)),
        };
        if let Some(m) = &existing {
            if m.is_dir() {
                return Err(OutputError::Directory(target));
            }
            if !m.is_file() {
                let file = fs::OpenOptions::new()
                    .write(true)
                    .truncate(true)
                    .open(&target)
                    .map_err(io_err)?;
                return Ok(Output {
                    file: BufWriter::with_capacity(1 << 20, file),
                    atomic: None,
                    target,
                });
            }
            refuse_read_only(&target, m)?;
        }
        let dir = match target.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let name = target
            .file_name()
            .map_or_else(|| "output".into(), |n| n.to_string_lossy());
        let temp = Registered::create(dir, &name).map_err(io_err)?;
        let file = temp.file.try_clone().map_err(io_err)?;
        Ok(Output {
            file: BufWriter::with_capacity(1 << 20, file),
            atomic: Some(Atomic {
                temp,
                replaced: existing,
            }),
            target,
        })
    }

    /// The file that is written: the path given with symbolic links followed.
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// Flushes everything to disk and, for a file, renames it over the target.
    pub fn commit(self) -> Result<(), OutputError> {
        let io_err = |error| OutputError::Io {
            path: self.target.clone(),
            error,
        };
        let file = self.file.into_inner().map_err(|e| io_err(e.into_error()))?;
        let Some(Atomic { temp, replaced }) = self.atomic else {
            return Ok(());
        };
        if let Some(old) = &replaced {
            // The owner first: chown clears set-id bits that the mode then restores. Only
            // root may give a file away; others keep their own ownership.
            let _ = std::os::unix::fs::fchown(&file, Some(old.uid()), Some(old.gid()));
            file.set_permissions(Permissions::from_mode(old.mode() & 0o7777))
                .map_err(io_err)?;
        }
        file.sync_all().map_err(io_err)?;
        drop(file);
        temp.persist(&self.target).map_err(io_err)?;
        // The rename is durable once the directory is; not every filesystem lets a
        // directory be synced, and the data is complete either way.
        if let Some(dir) = self.target.parent().filter(|d| !d.as_os_str().is_empty()) {
            let _ = File::open(dir).and_then(|d| d.sync_all());
        }
        Ok(())
    }
}

impl Write for Output {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write(buf)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.file.write_all(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// Writes `contents` to `path` as [`Output`] does.
pub fn write_file(path: &Path, contents: &[u8]) -> Result<(), OutputError> {
    let mut out = Output::create(path)?;
    out.write_all(contents).map_err(|error| OutputError::Io {
        path: out.target().to_owned(),
        error,
    })?;
    out.commit()
}

/// `path` with symbolic links followed to the file they name (which may not exist yet).
/// Only the last component is followed; the directories on the way are the kernel's to
/// resolve when the temporary file is created beside the target.
pub fn resolve(path: &Path) -> Result<PathBuf, OutputError> {
    let mut current = path.to_owned();
    for _ in 0..MAX_LINKS {
        match fs::symlink_metadata(&current) {
            Ok(m) if m.file_type().is_symlink() => {}
            _ => return Ok(current),
        }
        // A link that names a device (`/dev/stdout` → `/proc/self/fd/1` → `pipe:[…]`) has
        // no path to follow: the kernel resolves it when it is opened.
        if fs::metadata(&current).is_ok_and(|m| !m.is_file()) {
            return Ok(current);
        }
        let link = fs::read_link(&current).map_err(|error| OutputError::Io {
            path: current.clone(),
            error,
        })?;
        current = match current.parent() {
            Some(dir) if link.is_relative() => dir.join(link),
            _ => link,
        };
    }
    Err(OutputError::SymlinkLoop(path.to_owned()))
}

/// Refuses an existing regular file that is read-only (no write bit, which root would
/// otherwise ignore) or that this process may not open for writing.
fn refuse_read_only(target: &Path, m: &Metadata) -> Result<(), OutputError> {
    if m.permissions().readonly() {
        return Err(OutputError::ReadOnly(target.to_owned()));
    }
    // Opening without truncating changes nothing; it asks the kernel the real question
    // (ownership, ACLs, read-only mounts).
    match fs::OpenOptions::new().write(true).open(target) {
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            Err(OutputError::ReadOnly(target.to_owned()))
        }
        _ => Ok(()),
    }
}

/// A temporary file registered for removal on signals; removed when dropped unless
/// persisted.
#[derive(Debug)]
struct Registered {
    file: File,
    path: Option<PathBuf>,
}

impl Registered {
    /// Creates `.NAME.XXXXXX.bnaudit-tmp` in `dir`, mode `0666 & ~umask`.
    fn create(dir: &Path, name: &str) -> io::Result<Registered> {
        let mut paths = signals::temp_files();
        let temp = tempfile::Builder::new()
            .prefix(&format!(".{name}."))
            .suffix(".bnaudit-tmp")
            .permissions(Permissions::from_mode(0o666))
            .tempfile_in(dir)
            .map_err(without_temp_path)?;
        let (file, path) = temp.keep().map_err(|e| e.error)?;
        paths.add(path.clone());
        Ok(Registered {
            file,
            path: Some(path),
        })
    }

    /// Renames the file over `target`.
    fn persist(mut self, target: &Path) -> io::Result<()> {
        let mut paths = signals::temp_files();
        let path = self.path.take().expect("persisted once");
        let renamed = fs::rename(&path, target);
        if renamed.is_err() {
            let _ = fs::remove_file(&path);
        }
        paths.forget(&path);
        renamed
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        if let Some(path) = self.path.take() {
            let mut paths = signals::temp_files();
            let _ = fs::remove_file(&path);
            paths.forget(&path);
        }
    }
}

/// tempfile's errors end with `at path "<dir>/.tmpXXXXXX"`, a file the user never named
/// (and tempfile exposes no other way to the reason); the caller names the target, so keep
/// only the operating system's reason.
fn without_temp_path(e: io::Error) -> io::Error {
    let text = e.to_string();
    match text.rfind(" at path \"") {
        Some(end) if e.get_ref().is_some() => io::Error::new(e.kind(), &text[..end]),
        _ => e,
    }
}

/// Whether `a` and `b` name the same file (hard links and symbolic links included).
pub fn same_file(a: &Path, b: &Path) -> bool {
    match (fs::metadata(a), fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    fn leftovers(dir: &Path) -> Vec<String> {
        fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".bnaudit-tmp"))
            .collect()
    }

    #[test]
    fn replaced_file_keeps_its_mode() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.json");
        fs::write(&p, "old").unwrap();
        fs::set_permissions(&p, Permissions::from_mode(0o640)).unwrap();
        write_file(&p, b"new").unwrap();
        assert_eq!(fs::read_to_string(&p).unwrap(), "new");
        assert_eq!(mode(&p), 0o640);
    }

    #[test]
    fn symlink_is_followed_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real.txt");
        fs::write(&real, "old").unwrap();
        let link = dir.path().join("link.txt");
        std::os::unix::fs::symlink("real.txt", &link).unwrap();
        write_file(&link, b"new").unwrap();
        assert!(
            fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(fs::read_to_string(&real).unwrap(), "new");
        // A dangling link creates its target.
        let dangling = dir.path().join("dangling");
        std::os::unix::fs::symlink("made.txt", &dangling).unwrap();
        write_file(&dangling, b"x").unwrap();
        assert_eq!(
            fs::read_to_string(dir.path().join("made.txt")).unwrap(),
            "x"
        );
        // A loop is refused.
        let a = dir.path().join("a");
        std::os::unix::fs::symlink("b", &a).unwrap();
        std::os::unix::fs::symlink("a", dir.path().join("b")).unwrap();
        assert!(matches!(
            write_file(&a, b"x"),
            Err(OutputError::SymlinkLoop(_))
        ));
    }

    #[test]
    fn read_only_and_directories_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ro.txt");
        fs::write(&p, "keep").unwrap();
        fs::set_permissions(&p, Permissions::from_mode(0o444)).unwrap();
        assert!(matches!(
            write_file(&p, b"x"),
            Err(OutputError::ReadOnly(_))
        ));
        assert_eq!(fs::read_to_string(&p).unwrap(), "keep");
        assert!(matches!(
            write_file(dir.path(), b"x"),
            Err(OutputError::Directory(_))
        ));
        assert!(leftovers(dir.path()).is_empty());
    }

    #[test]
    fn dropped_output_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("out.bin");
        let mut out = Output::create(&p).unwrap();
        out.write_all(b"partial").unwrap();
        let temp = leftovers(dir.path());
        assert_eq!(temp.len(), 1);
        let temp = dir.path().join(&temp[0]);
        assert!(signals::temp_files().contains(&temp));
        drop(out);
        assert!(!p.exists());
        assert!(leftovers(dir.path()).is_empty());
        assert!(!signals::temp_files().contains(&temp));
    }

    #[test]
    fn fifo_is_written_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pipe");
        let status = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(status.success());
        let reader = {
            let fifo = fifo.clone();
            std::thread::spawn(move || fs::read(&fifo).unwrap())
        };
        write_file(&fifo, b"through the pipe").unwrap();
        assert_eq!(reader.join().unwrap(), b"through the pipe");
        assert!(fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo());
        assert!(leftovers(dir.path()).is_empty());
    }

    use std::os::unix::fs::FileTypeExt;
}
