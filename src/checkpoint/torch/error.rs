//! What can be wrong with a torch.save file, in words a user can act on.

/// Why a torch.save file (or something that looks like one) cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum TorchProblem {
    /// A pickle stream at the start of the file: torch.save before PyTorch 1.6.
    #[error(
        "a legacy torch.save file (PyTorch < 1.6, not a zip archive); re-save it with a current torch.save"
    )]
    Legacy,
    /// A plain pickle that is not a torch.save file at all.
    #[error("a bare Python pickle, not a torch.save zip archive")]
    BarePickle,
    /// The archive of `torch.jit.save`.
    #[error("a TorchScript archive (torch.jit.save), not a state dict")]
    TorchScript,
    /// A zip archive without `data.pkl`.
    #[error("a zip archive that is not a torch.save checkpoint (no */data.pkl entry)")]
    NotCheckpoint,
    /// The zip structure cannot be read: truncated or damaged.
    #[error("truncated or damaged zip archive ({0})")]
    Zip(String),
    /// An entry uses a feature we do not read.
    #[error("zip entry {entry:?}: {what}")]
    Entry {
        /// The entry's name.
        entry: String,
        /// What is wrong with it.
        what: String,
    },
    /// The pickle (or an entry it needs) exceeds a stated bound.
    #[error("{what} exceeds the limit of {limit} ({found}); not a checkpoint bnaudit will read")]
    Limit {
        /// What was counted.
        what: &'static str,
        /// Our limit.
        limit: u64,
        /// What was found.
        found: u64,
    },
    /// The pickle stream is malformed or uses something torch.save does not emit.
    #[error("data.pkl: {what} at byte {at}")]
    Pickle {
        /// What went wrong.
        what: String,
        /// Byte offset in data.pkl.
        at: usize,
    },
    /// Tensors stored big-endian (torch.save on a big-endian machine).
    #[error("tensors are stored big-endian; only little-endian archives are read")]
    BigEndian,
    /// The pickle names a storage the archive does not hold.
    #[error(
        "tensor {tensor:?} needs storage {storage:?}, which the archive lacks (entry {entry:?})"
    )]
    MissingStorage {
        /// The tensor.
        tensor: String,
        /// The storage key.
        storage: String,
        /// The entry expected.
        entry: String,
    },
    /// A storage holds fewer bytes than its tensor's view needs.
    #[error("tensor {tensor:?} needs {needed} bytes of storage {storage:?}, which holds {len}")]
    ShortStorage {
        /// The tensor.
        tensor: String,
        /// The storage key.
        storage: String,
        /// Bytes the view reaches.
        needed: u64,
        /// Bytes the storage holds.
        len: u64,
    },
    /// A tensor whose rebuild arguments are not a valid view.
    #[error("tensor {tensor:?}: {what}")]
    BadTensor {
        /// The tensor.
        tensor: String,
        /// What is wrong.
        what: String,
    },
    /// No state dict found, or `--key` named nothing usable.
    #[error("{what}{}", candidates_text(.candidates))]
    NoStateDict {
        /// What was looked for.
        what: String,
        /// Keys that hold tensors, with their tensor counts.
        candidates: Vec<(String, usize)>,
    },
    /// Nested deeper than we follow.
    #[error("containers nest deeper than {limit} levels")]
    TooDeep {
        /// Our limit.
        limit: usize,
    },
}

fn candidates_text(candidates: &[(String, usize)]) -> String {
    if candidates.is_empty() {
        return String::new();
    }
    let list: Vec<String> = candidates
        .iter()
        .map(|(k, n)| format!("{k} ({n} tensors)"))
        .collect();
    format!(
        "; keys holding tensors: {}; pick one with --key",
        list.join(", ")
    )
}
