//! The zip archive torch.save writes: `<root>/data.pkl`, `<root>/data/<key>` storages,
//! `<root>/byteorder`. The central directory is read with the `zip` crate; entry bytes are
//! located through each local header and read in place through the [`RawFile`].

use std::collections::HashMap;
use std::io::{BufReader, Read};

use zip::{CompressionMethod, ZipArchive};

use super::error::TorchProblem;
use crate::checkpoint::error::CheckpointError;
use crate::checkpoint::raw::RawFile;

/// Largest `data.pkl` read: a 20,000-tensor state dict pickles to about 2 MiB.
pub const MAX_PICKLE_BYTES: u64 = 256 << 20;

/// Largest deflated storage inflated into memory (torch.save stores storages uncompressed;
/// a re-zipped archive may deflate them).
pub const MAX_INFLATED_BYTES: u64 = 1 << 30;

/// Where one entry's bytes are.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    /// Full name in the archive.
    pub(crate) name: String,
    /// Offset of its (possibly compressed) bytes in the file.
    pub(crate) data_start: u64,
    /// Stored length.
    pub(crate) compressed: u64,
    /// Uncompressed length.
    pub(crate) size: u64,
    /// Stored as is (else deflated).
    pub(crate) stored: bool,
}

/// The archive's directory: its root folder and the entries by name.
#[derive(Debug)]
pub(crate) struct Archive {
    /// The folder every entry lives in (`archive`, the file's stem, …).
    pub(crate) root: String,
    entries: HashMap<String, (u64, u64, u64, CompressionMethod, bool)>,
}

impl Archive {
    /// Reads the central directory and recognises what kind of archive it is.
    pub(crate) fn read(raw: &RawFile) -> Result<Archive, CheckpointError> {
        let fail = |p: TorchProblem| CheckpointError::new(raw.path(), p.into());
        let file = raw.file()?;
        let zip = ZipArchive::new(BufReader::with_capacity(64 * 1024, &*file))
            .map_err(|e| fail(TorchProblem::Zip(e.to_string())))?;
        let mut entries = HashMap::with_capacity(zip.len());
        for i in 0..zip.len() {
            let e = zip
                .by_index_data(i)
                .map_err(|e| fail(TorchProblem::Zip(e.to_string())))?;
            let Ok(name) = std::str::from_utf8(e.name_raw()) else {
                continue;
            };
            entries.insert(
                name.to_owned(),
                (
                    e.header_start(),
                    e.compressed_size(),
                    e.size(),
                    e.compression(),
                    e.encrypted(),
                ),
            );
        }
        let pickles: Vec<&str> = entries
            .keys()
            .filter_map(|n| n.strip_suffix("/data.pkl"))
            .filter(|root| !root.contains('/'))
            .collect();
        let is_script = |root: &str| {
            entries.contains_key(&format!("{root}/constants.pkl"))
                || entries
                    .keys()
                    .any(|n| n.starts_with(&format!("{root}/code/")))
        };
        let root = match pickles.as_slice() {
            [root] if !is_script(root) => (*root).to_owned(),
            [root] if is_script(root) => return Err(fail(TorchProblem::TorchScript)),
            _ if entries.keys().any(|n| n.ends_with("constants.pkl")) => {
                return Err(fail(TorchProblem::TorchScript));
            }
            _ => return Err(fail(TorchProblem::NotCheckpoint)),
        };
        Ok(Archive { root, entries })
    }

    /// The entry `<root>/<name>`, located, or `None` when the archive lacks it.
    pub(crate) fn entry(
        &self,
        raw: &RawFile,
        name: &str,
    ) -> Result<Option<Entry>, CheckpointError> {
        let full = format!("{}/{name}", self.root);
        let Some(&(header, compressed, size, method, encrypted)) = self.entries.get(&full) else {
            return Ok(None);
        };
        let fail = |what: String| {
            CheckpointError::new(
                raw.path(),
                TorchProblem::Entry {
                    entry: full.clone(),
                    what,
                }
                .into(),
            )
        };
        if encrypted {
            return Err(fail("is encrypted".to_owned()));
        }
        let stored = match method {
            CompressionMethod::Stored => true,
            CompressionMethod::Deflated => false,
            other => {
                return Err(fail(format!(
                    "uses compression {other:?}; only stored and deflated entries are read"
                )));
            }
        };
        if stored && compressed != size {
            return Err(fail(format!(
                "is stored uncompressed yet its sizes differ ({compressed} and {size} bytes)"
            )));
        }
        // The local header's name and extra field lengths give where the bytes start.
        let mut local = [0u8; 30];
        if header.checked_add(30).is_none_or(|end| end > raw.len()) {
            return Err(fail(
                "local header lies past the end of the file (truncated archive)".to_owned(),
            ));
        }
        raw.read_exact_at(&mut local, header, "cannot read a zip local header")?;
        if local[..4] != *b"PK\x03\x04" {
            return Err(fail(
                "local header signature is wrong (damaged archive)".to_owned(),
            ));
        }
        let name_len = u16::from_le_bytes([local[26], local[27]]) as u64;
        let extra_len = u16::from_le_bytes([local[28], local[29]]) as u64;
        let data_start = header + 30 + name_len + extra_len;
        if data_start
            .checked_add(compressed)
            .is_none_or(|end| end > raw.len())
        {
            return Err(fail(format!(
                "its {compressed} bytes from offset {data_start} run past the end of the file ({} bytes; truncated archive)",
                raw.len()
            )));
        }
        Ok(Some(Entry {
            name: full,
            data_start,
            compressed,
            size,
            stored,
        }))
    }
}

/// The entry's uncompressed bytes, at most `limit` of them (`what` names the bound).
pub(crate) fn contents(
    raw: &RawFile,
    entry: &Entry,
    limit: u64,
    what: &'static str,
) -> Result<Vec<u8>, CheckpointError> {
    if entry.size > limit {
        return Err(CheckpointError::new(
            raw.path(),
            TorchProblem::Limit {
                what,
                limit,
                found: entry.size,
            }
            .into(),
        ));
    }
    let raw_bytes = raw.read(
        entry.data_start,
        entry.data_start + entry.compressed,
        &entry.name,
    )?;
    if entry.stored {
        return Ok(raw_bytes.into_owned());
    }
    let mut out = Vec::with_capacity(entry.size as usize);
    let inflated = flate2::read::DeflateDecoder::new(&raw_bytes[..])
        .take(entry.size + 1)
        .read_to_end(&mut out);
    match inflated {
        Ok(n) if n as u64 == entry.size => Ok(out),
        Ok(n) => Err(CheckpointError::new(
            raw.path(),
            TorchProblem::Entry {
                entry: entry.name.clone(),
                what: format!(
                    "inflates to {n} bytes, not the {} its header declares",
                    entry.size
                ),
            }
            .into(),
        )),
        Err(e) => Err(CheckpointError::new(
            raw.path(),
            TorchProblem::Entry {
                entry: entry.name.clone(),
                what: format!("cannot be inflated ({e})"),
            }
            .into(),
        )),
    }
}
