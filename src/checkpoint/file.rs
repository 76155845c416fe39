//! One safetensors file opened header-only, with its tensor bytes read on demand.

use std::borrow::Cow;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use super::error::{CheckpointError, Problem};
use super::header::{self, Header, HeaderTensor};

/// How tensor bytes are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReadMode {
    /// Memory-map the file (default): no copy for tensors that are read.
    #[default]
    Mmap,
    /// Positioned reads of each byte range: for network filesystems and WSL, where maps fail
    /// or crawl.
    Pread,
}

/// An open safetensors file: its validated header and a way to read tensor bytes.
#[derive(Debug)]
pub struct SafetensorsFile {
    path: PathBuf,
    file: File,
    map: Option<Mmap>,
    len: u64,
    header: Header,
}

impl SafetensorsFile {
    /// Opens `path` read-only and validates its header; tensor data is not touched.
    pub fn open(path: &Path, mode: ReadMode) -> Result<Self, CheckpointError> {
        let err = |problem| CheckpointError::new(path, problem);
        let file = File::open(path).map_err(|e| err(Problem::io("cannot open", e)))?;
        let meta = file
            .metadata()
            .map_err(|e| err(Problem::io("cannot stat", e)))?;
        if meta.is_dir() {
            return Err(err(Problem::Io {
                action: "expected a file",
                source: std::io::Error::other("is a directory"),
            }));
        }
        let len = meta.len();
        if len < 8 {
            return Err(err(Problem::TooShort { len }));
        }
        let mut prefix = [0u8; 8];
        file.read_exact_at(&mut prefix, 0)
            .map_err(|e| err(Problem::io("cannot read header length", e)))?;
        let header_len = header::header_len(prefix, len).map_err(err)?;
        let mut bytes = vec![0u8; header_len as usize];
        file.read_exact_at(&mut bytes, 8)
            .map_err(|e| err(Problem::io("cannot read header", e)))?;
        let data_start = 8 + header_len;
        let header = header::parse(&bytes, data_start, len - data_start).map_err(err)?;
        let map = match mode {
            // SAFETY: the map is read-only; a concurrent truncation is detected by
            // `check_len` before each access, which narrows (not closes) the SIGBUS window.
            ReadMode::Mmap if len > data_start => {
                Some(unsafe { Mmap::map(&file) }.map_err(|e| err(Problem::io("cannot map", e)))?)
            }
            _ => None,
        };
        Ok(SafetensorsFile {
            path: path.to_owned(),
            file,
            map,
            len,
            header,
        })
    }

    /// The file's path as given.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's length in bytes when opened.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the file holds no tensor data.
    pub fn is_empty(&self) -> bool {
        self.header.tensors.is_empty()
    }

    /// The validated header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Reads `len` bytes of `tensor` starting `offset` bytes into it: borrowed from the map,
    /// or read into a new buffer in [`ReadMode::Pread`].
    pub fn read(
        &self,
        tensor: &HeaderTensor,
        offset: u64,
        len: u64,
    ) -> Result<Cow<'_, [u8]>, CheckpointError> {
        debug_assert!(offset + len <= tensor.end - tensor.start);
        let start = self.header.data_start + tensor.start + offset;
        let end = start + len;
        if len == 0 {
            return Ok(Cow::Borrowed(&[]));
        }
        match &self.map {
            Some(map) => {
                self.check_len(tensor, end)?;
                Ok(Cow::Borrowed(&map[start as usize..end as usize]))
            }
            None => {
                let mut buf = vec![0u8; len as usize];
                self.read_into(tensor, offset, &mut buf)?;
                Ok(Cow::Owned(buf))
            }
        }
    }

    /// Fills `buf` with the bytes of `tensor` starting `offset` bytes into it, with a
    /// positioned read whatever the read mode: streaming comparisons reuse fixed buffers so
    /// that resident memory stays bounded (mapped pages, once touched, count towards it).
    pub fn read_into(
        &self,
        tensor: &HeaderTensor,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<(), CheckpointError> {
        let len = buf.len() as u64;
        debug_assert!(offset + len <= tensor.end - tensor.start);
        let start = self.header.data_start + tensor.start + offset;
        self.file.read_exact_at(buf, start).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                self.truncated(tensor, start + len)
            } else {
                CheckpointError::new(&self.path, Problem::io("cannot read", e))
            }
        })
    }

    /// All bytes of `tensor`.
    pub fn bytes(&self, tensor: &HeaderTensor) -> Result<Cow<'_, [u8]>, CheckpointError> {
        self.read(tensor, 0, tensor.end - tensor.start)
    }

    /// Refuses to touch mapped bytes past the file's current end, which would raise SIGBUS.
    fn check_len(&self, tensor: &HeaderTensor, end: u64) -> Result<(), CheckpointError> {
        let now = self
            .file
            .metadata()
            .map_err(|e| CheckpointError::new(&self.path, Problem::io("cannot stat", e)))?
            .len();
        if now < end {
            return Err(self.truncated(tensor, end));
        }
        Ok(())
    }

    fn truncated(&self, tensor: &HeaderTensor, end: u64) -> CheckpointError {
        let len = self.file.metadata().map_or(0, |m| m.len());
        CheckpointError::new(
            &self.path,
            Problem::Truncated {
                tensor: tensor.name.clone(),
                len,
                end,
            },
        )
    }
}
