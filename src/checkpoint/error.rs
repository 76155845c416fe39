//! Errors that name the file and say exactly what is wrong with it.

use std::io;
use std::path::{Path, PathBuf};

/// A checkpoint that cannot be opened or read, with the file at fault.
#[derive(Debug, thiserror::Error)]
#[error("{}: {problem}", path.display())]
pub struct CheckpointError {
    /// The file (or directory) at fault.
    pub path: PathBuf,
    /// What is wrong with it (boxed: errors are rare, results are everywhere).
    pub problem: Box<Problem>,
}

impl CheckpointError {
    /// Attaches `path` to `problem`.
    pub fn new(path: impl AsRef<Path>, problem: Problem) -> Self {
        CheckpointError {
            path: path.as_ref().to_owned(),
            problem: Box::new(problem),
        }
    }
}

/// What is wrong with a checkpoint file.
#[derive(Debug, thiserror::Error)]
pub enum Problem {
    /// The operating system refused or failed an operation.
    #[error("{action}: {source}")]
    Io {
        /// What we were doing, e.g. "cannot open".
        action: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A directory, pipe or device where a safetensors file was expected.
    #[error(
        "not a regular file ({kind}); bnaudit reads checkpoints by offset, so save it to a file first"
    )]
    NotRegularFile {
        /// What it is instead: "a directory", "a pipe or device".
        kind: &'static str,
    },
    /// A file read whole (an index, a configuration file) larger than its limit.
    #[error("{what} is {len} bytes, over the limit of {limit} bytes")]
    FileTooLarge {
        /// What the file is, e.g. "index".
        what: &'static str,
        /// Its length (or how much was read before giving up).
        len: u64,
        /// Our limit.
        limit: u64,
    },
    /// The path does not exist.
    #[error("no such file or directory")]
    NotFound,
    /// Permission denied.
    #[error("permission denied")]
    PermissionDenied,
    /// The file is too short to hold the 8-byte header length.
    #[error(
        "file is {len} bytes, too short for a safetensors file (at least 8 bytes of header length)"
    )]
    TooShort {
        /// The file's length.
        len: u64,
    },
    /// The header length is larger than any sane header.
    #[error(
        "header length {len} bytes exceeds the limit of {limit} bytes (corrupt or not a safetensors file)"
    )]
    HeaderTooLarge {
        /// Declared header length.
        len: u64,
        /// Our limit.
        limit: u64,
    },
    /// The header length runs past the end of the file.
    #[error("header length {len} bytes runs past the end of the file ({file_len} bytes)")]
    HeaderPastEnd {
        /// Declared header length.
        len: u64,
        /// The file's length.
        file_len: u64,
    },
    /// The header is not UTF-8.
    #[error("header is not valid UTF-8 (invalid byte at header offset {offset})")]
    HeaderNotUtf8 {
        /// Offset of the first invalid byte within the header.
        offset: usize,
    },
    /// The header does not start with `{`.
    #[error("header does not start with '{{' (found {found:?})")]
    HeaderNotObject {
        /// The first characters of the header.
        found: String,
    },
    /// The header is not valid JSON of the expected shape.
    #[error("invalid header JSON: {0}")]
    HeaderJson(String),
    /// A tensor name appears twice in the header.
    #[error("duplicate tensor name {0:?} in header")]
    DuplicateKey(String),
    /// A dtype string outside the format.
    #[error("tensor {tensor:?}: unknown dtype {dtype:?}")]
    UnknownDtype {
        /// The tensor.
        tensor: String,
        /// The dtype string found.
        dtype: String,
    },
    /// A tensor's shape times its dtype size overflows or disagrees with its byte range.
    #[error(
        "tensor {tensor:?}: shape {shape:?} of {dtype} needs {expected} bytes but data_offsets span {actual}"
    )]
    SizeMismatch {
        /// The tensor.
        tensor: String,
        /// Declared shape.
        shape: Vec<u64>,
        /// Declared dtype.
        dtype: String,
        /// Bytes implied by shape and dtype (as text, since it may overflow).
        expected: String,
        /// Bytes spanned by the offsets.
        actual: u64,
    },
    /// A tensor's offsets are reversed.
    #[error("tensor {tensor:?}: data_offsets [{start}, {end}] end before they start")]
    ReversedOffsets {
        /// The tensor.
        tensor: String,
        /// Start offset.
        start: u64,
        /// End offset.
        end: u64,
    },
    /// Tensor byte ranges overlap or leave a gap.
    #[error(
        "tensor {tensor:?}: data_offsets [{start}, {end}] {relation} the previous tensor {previous:?}, which ends at {previous_end}; tensors must tile the data exactly"
    )]
    NotTiled {
        /// The tensor.
        tensor: String,
        /// Its start offset.
        start: u64,
        /// Its end offset.
        end: u64,
        /// "overlap" or "leave a gap after".
        relation: &'static str,
        /// The tensor before it in byte order (empty for the start of the data).
        previous: String,
        /// Where that one ends.
        previous_end: u64,
    },
    /// Tensor data runs past the end of the file.
    #[error(
        "tensor {tensor:?}: data_offsets end at {end} but the data section holds {data_len} bytes (file truncated?)"
    )]
    OutOfRange {
        /// The tensor.
        tensor: String,
        /// End offset.
        end: u64,
        /// Length of the data section.
        data_len: u64,
    },
    /// Bytes after the last tensor.
    #[error("{extra} bytes after the last tensor are not covered by any tensor")]
    TrailingBytes {
        /// Number of unclaimed bytes.
        extra: u64,
    },
    /// The file shrank after it was opened.
    #[error("file shrank to {len} bytes while open; tensor {tensor:?} needs bytes up to {end}")]
    Truncated {
        /// The tensor being read.
        tensor: String,
        /// The file's current length.
        len: u64,
        /// End of the tensor in the file.
        end: u64,
    },
    /// The file shrank under its memory map while being read (reported from the SIGBUS
    /// handler, which knows the file but not the tensor).
    #[error(
        "file changed while reading: it shrank while memory-mapped; audit a finished copy, or use --no-mmap"
    )]
    ChangedWhileMapped,
    /// The path names another file than the one opened (replaced while being read).
    #[error("file changed while reading: the path now names a different file")]
    Replaced,
    /// A sharded index that is not valid JSON or lacks a `weight_map`.
    #[error("invalid index: {0}")]
    Index(String),
    /// A shard named by the index is missing.
    #[error("shard {shard:?} named by the index does not exist")]
    MissingShard {
        /// The shard's file name.
        shard: String,
    },
    /// A shard path in the index that is absolute or climbs out of the index's directory.
    #[error("shard {shard:?} named by the index is outside the index's directory")]
    ShardOutside {
        /// The shard path as written in the index.
        shard: String,
    },
    /// A tensor mapped by the index is not in its shard.
    #[error("index maps tensor {tensor:?} to shard {shard:?}, which does not contain it")]
    TensorNotInShard {
        /// The tensor.
        tensor: String,
        /// The shard named.
        shard: String,
    },
    /// A directory with no checkpoint.
    #[error(
        "directory holds no *.safetensors file or *.index.json (nor a torch.save .bin/.pt/.pth/.ckpt file)"
    )]
    EmptyDirectory,
    /// A torch.save file (or something posing as one) that cannot be read.
    #[error(transparent)]
    Torch(#[from] super::torch::TorchProblem),
    /// A directory with several candidate checkpoints.
    #[error("directory holds several checkpoints ({}); name one", candidates.join(", "))]
    AmbiguousDirectory {
        /// The candidate files.
        candidates: Vec<String>,
    },
}

impl Problem {
    /// Classifies an I/O error, turning the common cases into their own variants.
    pub fn io(action: &'static str, source: io::Error) -> Problem {
        match source.kind() {
            io::ErrorKind::NotFound => Problem::NotFound,
            io::ErrorKind::PermissionDenied => Problem::PermissionDenied,
            _ => Problem::Io { action, source },
        }
    }
}
