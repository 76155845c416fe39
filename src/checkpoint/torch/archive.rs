//! The zip archive torch.save writes: `<root>/data.pkl`, `<root>/data/<key>` storages,
//! `<root>/byteorder`. The central directory is read with the `rawzip` crate, which walks it
//! without an allocation per entry (a state dict has tens of thousands); entry bytes are
//! located through each local header and read in place through the [`RawFile`].

use std::borrow::Cow;
use std::io::Read;

use rawzip::{CompressionMethod, ReaderAt, ZipLocator};

use super::error::TorchProblem;
use crate::checkpoint::error::CheckpointError;
use crate::checkpoint::raw::RawFile;

/// Largest `data.pkl` read: a 20,000-tensor state dict pickles to about 2 MiB.
pub const MAX_PICKLE_BYTES: u64 = 256 << 20;

/// Largest deflated storage inflated into memory (torch.save stores storages uncompressed;
/// a re-zipped archive may deflate them).
pub const MAX_INFLATED_BYTES: u64 = 1 << 30;

/// Most entries a central directory may list. Each costs about 130 bytes once read, and a
/// state dict has one per storage (tens of thousands), so this bounds what a hostile
/// directory costs to about 270 MB.
pub const MAX_ZIP_ENTRIES: u64 = 1 << 21;

/// One entry of the archive, located.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    /// Full name in the archive.
    pub(crate) name: String,
    pub(crate) place: Place,
}

/// Where an entry's bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Place {
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
    entries: Directory,
}

/// The central directory's entries in their order, their names in one buffer: a state
/// dict's archive has tens of thousands, and only two or three are ever looked up by name
/// (the rest are walked once), so they are neither hashed nor allocated one by one.
#[derive(Debug, Default)]
struct Directory {
    names: String,
    /// Where each name ends in `names` (it starts where the previous one ends), and its
    /// record.
    entries: Vec<(usize, Record)>,
}

impl Directory {
    fn push(&mut self, name: &str, record: Record) {
        self.names.push_str(name);
        self.entries.push((self.names.len(), record));
    }

    /// Every entry, in directory order.
    fn iter(&self) -> impl Iterator<Item = (&str, &Record)> {
        let starts = std::iter::once(0).chain(self.entries.iter().map(|(end, _)| *end));
        starts
            .zip(&self.entries)
            .map(|(start, (end, record))| (&self.names[start..*end], record))
    }

    fn names(&self) -> impl Iterator<Item = &str> {
        self.iter().map(|(name, _)| name)
    }

    /// The entry `name`; the last of them when the directory lists it twice, as a zip
    /// reader extracting in order would leave it.
    fn get(&self, name: &str) -> Option<&Record> {
        let mut found = None;
        for (n, record) in self.iter() {
            if n == name {
                found = Some(record);
            }
        }
        found
    }

    fn len(&self) -> usize {
        self.entries.len()
    }

    /// Makes room for the `declared` entries of an end record (a count from the file: a
    /// capacity, trusted only up to a bound).
    fn reserve(&mut self, declared: u64) {
        let n = reserved_entries(declared);
        // torch.save's names are `<root>/data/<key>`: a few dozen bytes.
        self.names.reserve(n * 24);
        self.entries.reserve(n);
    }
}

/// How many entries' room a declared count reserves.
fn reserved_entries(declared: u64) -> usize {
    declared.min(1 << 20) as usize
}

/// What the central directory says of one entry.
#[derive(Debug, Clone, Copy)]
struct Record {
    /// Offset of its local header.
    header: u64,
    compressed: u64,
    size: u64,
    method: CompressionMethod,
    encrypted: bool,
}

/// Each storage entry `data/<key>` by key: located, or why its bytes cannot be read.
pub(crate) struct Storages<'a> {
    /// The entries whose key is a number below this vector's length, by that number.
    /// torch.save numbers its storages 0, 1, 2, … in the order the pickle names them, so
    /// the lookups of a state dict's tensors walk this in order; in a hash table of 20,000
    /// keys nearly every lookup missed the cache, twice (the bucket, then the key).
    numbered: Vec<Option<Result<Place, CheckpointError>>>,
    /// The others, by key.
    named: foldhash::HashMap<&'a str, Result<Place, CheckpointError>>,
}

impl<'a> Storages<'a> {
    /// The entry of storage `key`, if the archive has one.
    pub(crate) fn get(&self, key: &str) -> Option<&Result<Place, CheckpointError>> {
        match number(key, self.numbered.len()) {
            Some(i) => self.numbered[i].as_ref(),
            None => self.named.get(key),
        }
    }

    /// Takes the entry of storage `key` out.
    pub(crate) fn remove(&mut self, key: &str) -> Option<Result<Place, CheckpointError>> {
        match number(key, self.numbered.len()) {
            Some(i) => self.numbered[i].take(),
            None => self.named.remove(key),
        }
    }

    fn insert(&mut self, key: &'a str, found: Result<Place, CheckpointError>) {
        match number(key, self.numbered.len()) {
            Some(i) => self.numbered[i] = Some(found),
            None => {
                self.named.insert(key, found);
            }
        }
    }
}

/// `key` as an index below `len`, when it is a number written as torch.save writes them:
/// decimal digits without a leading zero (so that `"01"` stays a name of its own).
fn number(key: &str, len: usize) -> Option<usize> {
    let digits = key.as_bytes();
    let canonical = matches!(digits, [b'0'] | [b'1'..=b'9', ..])
        && digits.len() <= 9
        && digits.iter().all(u8::is_ascii_digit);
    canonical
        .then(|| key.parse().ok())
        .flatten()
        .filter(|&n| n < len)
}

/// Room for reading the directory of an archive of about `n` entries and locating its
/// storages, reserved by the thread that opens the archive for another thread to fill
/// while this one parses the pickle: memory a second thread allocates lands on huge pages
/// (2 MiB) of its own, and reading the directory there raised peak RSS by up to 18 MiB.
pub(crate) struct Room<'a> {
    zip_buf: Vec<u8>,
    directory: Directory,
    wanted: Vec<(&'a str, Record)>,
    scratch: Scratch,
}

impl Room<'_> {
    /// Room for about `n` entries (a count the file declares: bounded here).
    pub(crate) fn for_entries(declared: u64) -> Self {
        let mut directory = Directory::default();
        directory.reserve(declared);
        let n = reserved_entries(declared);
        Room {
            zip_buf: vec![0u8; rawzip::RECOMMENDED_BUFFER_SIZE],
            directory,
            wanted: Vec::with_capacity(n),
            scratch: Scratch::for_entries(n),
        }
    }
}

/// What [`Locating::run`] fills, but the list of entries.
struct Scratch {
    found: Vec<Result<Place, CheckpointError>>,
    numbered: Vec<Option<Result<Place, CheckpointError>>>,
    order: Vec<(u64, usize)>,
    buf: Vec<u8>,
}

impl Scratch {
    fn for_entries(n: usize) -> Self {
        Scratch {
            found: Vec::with_capacity(n),
            numbered: Vec::with_capacity(n),
            order: Vec::with_capacity(n),
            buf: Vec::with_capacity(if n > 1 { HEADER_BUF } else { 30 }),
        }
    }
}

impl Archive {
    /// Reads the central directory into `room` and recognises what kind of archive it is.
    pub(crate) fn read(raw: &RawFile, room: &mut Room<'_>) -> Result<Archive, CheckpointError> {
        let fail = |p: TorchProblem| CheckpointError::new(raw.path(), p.into());
        let reserved = std::mem::take(&mut room.directory);
        let entries = directory(raw, MAX_ZIP_ENTRIES, reserved, &mut room.zip_buf).map_err(fail)?;
        let mut pickles: Vec<&str> = entries
            .names()
            .filter_map(|n| n.strip_suffix("/data.pkl"))
            .filter(|root| !root.contains('/'))
            .collect();
        // A name the directory lists twice is one entry (the last).
        pickles.sort_unstable();
        pickles.dedup();
        let is_script = |root: &str| {
            // The prefix is formatted once: the directory has tens of thousands of names.
            let code = format!("{root}/code/");
            entries.get(&format!("{root}/constants.pkl")).is_some()
                || entries.names().any(|n| n.starts_with(&code))
        };
        let root = match pickles.as_slice() {
            [root] if !is_script(root) => (*root).to_owned(),
            [root] if is_script(root) => return Err(fail(TorchProblem::TorchScript)),
            _ if entries.names().any(|n| n.ends_with("constants.pkl")) => {
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
        let Some(&record) = self.entries.get(&full) else {
            return Ok(None);
        };
        let mut one = Locating::new(vec![(&full, record)], 0, Scratch::for_entries(1));
        one.run(raw);
        let located = one.by_key().remove(&full);
        let place = located.expect("one entry was asked for")?;
        Ok(Some(Entry { name: full, place }))
    }

    /// The full name of storage `key`'s entry.
    pub(crate) fn storage_entry(&self, key: &str) -> String {
        format!("{}/data/{key}", self.root)
    }

    /// Every storage entry `<root>/data/<key>`, to be located by [`Locating::run`] in
    /// `room`. All of them, not only those the pickle names, so that this can run while
    /// the pickle is parsed; a damaged entry is an error only once a tensor uses it.
    pub(crate) fn storages<'a>(&'a self, room: Room<'a>) -> Locating<'a> {
        let prefix = self.storage_entry("");
        // Reserved for all (nearly every entry is a storage): growing a vector of 20,000
        // by doubling cost 3 ms.
        let Room {
            mut wanted,
            scratch,
            ..
        } = room;
        wanted.reserve(self.entries.len());
        wanted.extend(
            self.entries
                .iter()
                .filter(|(name, _)| name.starts_with(&prefix))
                .map(|(name, &record)| (name, record)),
        );
        Locating::new(wanted, prefix.len(), scratch)
    }
}

/// Entries being located. Everything [`Locating::run`] fills is allocated beforehand (see
/// [`Room`]).
pub(crate) struct Locating<'a> {
    /// Full name and record of each entry.
    wanted: Vec<(&'a str, Record)>,
    /// Length of the folder prefix of the names, left out of [`Locating::by_key`]'s keys.
    prefix: usize,
    /// Each entry's place (or why it has none), in the order of `wanted`.
    found: Vec<Result<Place, CheckpointError>>,
    /// The same by key, once located.
    by_key: Storages<'a>,
    /// Local header offsets with indices into `wanted`, sorted.
    order: Vec<(u64, usize)>,
    buf: Vec<u8>,
}

/// Room for the headers of one read reserved up front: a state dict's small storages put a
/// few headers in a few KiB.
const HEADER_BUF: usize = 64 << 10;

impl<'a> Locating<'a> {
    fn new(wanted: Vec<(&'a str, Record)>, prefix: usize, scratch: Scratch) -> Self {
        let n = wanted.len();
        let named = wanted
            .iter()
            .filter(|(name, _)| number(&name[prefix..], n).is_none())
            .count();
        let Scratch {
            mut found,
            mut numbered,
            mut order,
            buf,
        } = scratch;
        found.reserve(n);
        numbered.reserve(n);
        order.reserve(n);
        Locating {
            found,
            by_key: Storages {
                numbered,
                named: foldhash::HashMap::with_capacity_and_hasher(named, Default::default()),
            },
            wanted,
            prefix,
            order,
            buf,
        }
    }

    /// Locates the entries. Their local headers are read in offset order, neighbours within
    /// [`HEADER_GAP`] of each other in one read: a state dict's small storages lie close
    /// together, and one read per header costs a system call each (20,000 of them).
    pub(crate) fn run(&mut self, raw: &RawFile) {
        let Locating {
            wanted,
            prefix,
            found,
            by_key,
            order,
            buf,
        } = self;
        found.extend(wanted.iter().map(|(name, r)| {
            let stored = stored(raw, name, r)?;
            // `data_start` holds the local header's offset until the header is read.
            Ok(Place {
                data_start: r.header,
                compressed: r.compressed,
                size: r.size,
                stored,
            })
        }));
        order.extend(
            found
                .iter()
                .enumerate()
                .filter_map(|(i, e)| Some((e.as_ref().ok()?.data_start, i))),
        );
        order.sort_unstable();
        let mut group = 0;
        while group < order.len() {
            let first = order[group].0;
            let mut end = group + 1;
            while end < order.len()
                && order[end].0 - order[end - 1].0 <= HEADER_GAP
                && order[end].0 - first <= HEADER_SPAN
            {
                end += 1;
            }
            let span = &order[group..end];
            if let Err(e) = read_headers(raw, wanted, span, found, buf) {
                // The headers are read one by one then, so that the error is only that of
                // the entries it concerns.
                match span {
                    [(_, i)] => found[*i] = Err(e),
                    _ => {
                        for one in span.chunks(1) {
                            if let Err(e) = read_headers(raw, wanted, one, found, buf) {
                                found[one[0].1] = Err(e);
                            }
                        }
                    }
                }
            }
            group = end;
        }
        by_key.numbered.resize_with(wanted.len(), || None);
        for ((name, _), found) in wanted.iter().zip(found.drain(..)) {
            by_key.insert(&name[*prefix..], found);
        }
    }

    /// The located entries by key (the name without the folder prefix).
    pub(crate) fn by_key(self) -> Storages<'a> {
        self.by_key
    }
}

/// Reads the local headers at `span` (sorted offsets, with the entries' indices into
/// `wanted` and `found`) in one read, and places the entries' bytes.
fn read_headers(
    raw: &RawFile,
    wanted: &[(&str, Record)],
    span: &[(u64, usize)],
    found: &mut [Result<Place, CheckpointError>],
    buf: &mut Vec<u8>,
) -> Result<(), CheckpointError> {
    let (first, last) = (span[0].0, span[span.len() - 1].0);
    // Read, not borrowed from the map: touching a mapped page maps its neighbours too, and
    // 20,000 scattered headers would add tens of MiB to resident memory.
    let span_end = last.saturating_add(30).min(raw.len());
    buf.resize((span_end.max(first) - first) as usize, 0);
    if !buf.is_empty() {
        raw.read_exact_at(buf, first, "cannot read a zip local header")?;
    }
    for &(header, i) in span {
        let at = (header - first) as usize;
        let local = buf.get(at..at + 30);
        if let Ok(place) = &mut found[i] {
            match local_data_start(raw, wanted[i].0, place, local) {
                Ok(start) => place.data_start = start,
                Err(e) => found[i] = Err(e),
            }
        }
    }
    Ok(())
}

/// Every entry of the central directory, added to `entries` (empty), read with `buf`;
/// more than `limit` entries (declared or walked) are refused.
fn directory(
    raw: &RawFile,
    limit: u64,
    mut entries: Directory,
    buf: &mut Vec<u8>,
) -> Result<Directory, TorchProblem> {
    let zip_error = |e: rawzip::Error| TorchProblem::Zip(e.to_string());
    let too_many = |found| TorchProblem::Limit {
        what: "zip entry count",
        limit,
        found,
    };
    buf.resize(rawzip::RECOMMENDED_BUFFER_SIZE, 0);
    let zip = locate(raw, buf).map_err(zip_error)?;
    let declared = zip.entries_hint();
    if declared > limit {
        return Err(too_many(declared));
    }
    // Already done when the room was sized from this count; not when the first look at
    // the end record failed.
    entries.reserve(declared);
    let mut walk = zip.entries(buf);
    let mut walked = 0u64;
    while let Some(e) = walk.next_entry().map_err(zip_error)? {
        // A directory may list more entries than its end record declares.
        walked += 1;
        if walked > limit {
            return Err(too_many(walked));
        }
        let Ok(name) = std::str::from_utf8(e.file_path().as_bytes()) else {
            continue;
        };
        entries.push(name, Record::of(&e));
    }
    Ok(entries)
}

/// The archive's end records, found from the end of the file.
fn locate<'r>(
    raw: &'r RawFile,
    buf: &mut [u8],
) -> Result<rawzip::ZipArchive<At<'r>>, rawzip::Error> {
    ZipLocator::new()
        .locate_in_reader(At(raw), buf, raw.len())
        .map_err(|(_, e)| e)
}

impl Record {
    fn of(e: &rawzip::ZipFileHeaderRecord<'_>) -> Record {
        Record {
            header: e.local_header_offset(),
            compressed: e.compressed_size_hint(),
            size: e.uncompressed_size_hint(),
            method: e.compression_method(),
            encrypted: e.flags().is_encrypted(),
        }
    }
}

/// The number of entries the archive's end record declares (0 when it has none), and its
/// first entry, located, when it is a `<root>/data.pkl`: torch.save writes the pickle
/// first, so it can be found from the end record and the directory's first record alone,
/// and parsed while the rest of the directory (tens of thousands of records) is read.
/// `None` for anything else, or any error: [`Archive::read`] then says what it is.
pub(crate) fn first_pickle(raw: &RawFile) -> (u64, Option<Entry>) {
    let mut buf = vec![0u8; rawzip::RECOMMENDED_BUFFER_SIZE];
    let Ok(zip) = locate(raw, &mut buf) else {
        return (0, None);
    };
    (zip.entries_hint(), first_entry_pickle(raw, &zip))
}

fn first_entry_pickle(raw: &RawFile, zip: &rawzip::ZipArchive<At<'_>>) -> Option<Entry> {
    let mut buf = vec![0u8; rawzip::RECOMMENDED_BUFFER_SIZE];
    let mut walk = zip.entries(&mut buf);
    let first = walk.next_entry().ok()??;
    let name = std::str::from_utf8(first.file_path().as_bytes()).ok()?;
    name.strip_suffix("/data.pkl")
        .filter(|root| !root.contains('/'))?;
    let mut one = Locating::new(vec![(name, Record::of(&first))], 0, Scratch::for_entries(1));
    one.run(raw);
    let place = one.by_key().remove(name)?.ok()?;
    Some(Entry {
        name: name.to_owned(),
        place,
    })
}

/// The file as `rawzip` reads it: by positioned reads, through the descriptor pool.
struct At<'a>(&'a RawFile);

impl ReaderAt for At<'_> {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
        std::os::unix::fs::FileExt::read_at(
            &*self.0.file().map_err(std::io::Error::other)?,
            buf,
            offset,
        )
    }
}

/// Headers this close after the previous one are read with it (the gap is read too).
const HEADER_GAP: u64 = 8 << 10;
/// Longest span of headers read at once.
const HEADER_SPAN: u64 = 1 << 20;

fn entry_error(raw: &RawFile, entry: &str, what: String) -> CheckpointError {
    CheckpointError::new(
        raw.path(),
        TorchProblem::Entry {
            entry: entry.to_owned(),
            what,
        }
        .into(),
    )
}

/// Whether an entry is stored as is (else deflated); an error for what is not read.
fn stored(raw: &RawFile, full: &str, record: &Record) -> Result<bool, CheckpointError> {
    let Record {
        compressed, size, ..
    } = *record;
    if record.encrypted {
        return Err(entry_error(raw, full, "is encrypted".to_owned()));
    }
    let stored = match record.method {
        CompressionMethod::STORE => true,
        CompressionMethod::DEFLATE => false,
        other => {
            return Err(entry_error(
                raw,
                full,
                format!(
                    "uses compression method {other}; only stored and deflated entries are read"
                ),
            ));
        }
    };
    if stored && compressed != size {
        return Err(entry_error(
            raw,
            full,
            format!("is stored uncompressed yet its sizes differ ({compressed} and {size} bytes)"),
        ));
    }
    Ok(stored)
}

/// Where the bytes of entry `name` start, from its 30-byte local header at
/// `place.data_start` (`None` when the header lies past the end of the file).
fn local_data_start(
    raw: &RawFile,
    name: &str,
    place: &Place,
    local: Option<&[u8]>,
) -> Result<u64, CheckpointError> {
    let header = place.data_start;
    let fail = |what: String| entry_error(raw, name, what);
    let Some(local) = local else {
        return Err(fail(
            "local header lies past the end of the file (truncated archive)".to_owned(),
        ));
    };
    if local[..4] != *b"PK\x03\x04" {
        return Err(fail(
            "local header signature is wrong (damaged archive)".to_owned(),
        ));
    }
    // The local header's name and extra field lengths give where the bytes start.
    let name_len = u16::from_le_bytes([local[26], local[27]]) as u64;
    let extra_len = u16::from_le_bytes([local[28], local[29]]) as u64;
    let data_start = header + 30 + name_len + extra_len;
    let compressed = place.compressed;
    if data_start
        .checked_add(compressed)
        .is_none_or(|end| end > raw.len())
    {
        return Err(fail(format!(
            "its {compressed} bytes from offset {data_start} run past the end of the file ({} bytes; truncated archive)",
            raw.len()
        )));
    }
    Ok(data_start)
}

/// The entry's uncompressed bytes, at most `limit` of them (`what` names the bound): a
/// large stored entry is borrowed from the map.
pub(crate) fn contents<'a>(
    raw: &'a RawFile,
    entry: &Entry,
    limit: u64,
    what: &'static str,
) -> Result<Cow<'a, [u8]>, CheckpointError> {
    if entry.place.size > limit {
        return Err(CheckpointError::new(
            raw.path(),
            TorchProblem::Limit {
                what,
                limit,
                found: entry.place.size,
            }
            .into(),
        ));
    }
    let raw_bytes = raw.read(
        entry.place.data_start,
        entry.place.data_start + entry.place.compressed,
        &entry.name,
    )?;
    if entry.place.stored {
        return Ok(raw_bytes);
    }
    let mut out = Vec::with_capacity(entry.place.size as usize);
    let inflated = flate2::read::DeflateDecoder::new(&raw_bytes[..])
        .take(entry.place.size + 1)
        .read_to_end(&mut out);
    match inflated {
        Ok(n) if n as u64 == entry.place.size => Ok(Cow::Owned(out)),
        Ok(n) => Err(CheckpointError::new(
            raw.path(),
            TorchProblem::Entry {
                entry: entry.name.clone(),
                what: format!(
                    "inflates to {n} bytes, not the {} its header declares",
                    entry.place.size
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

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    /// A stored zip of `n` small entries, opened.
    fn zip_of(dir: &std::path::Path, n: usize) -> RawFile {
        let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        let stored = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        for i in 0..n {
            zip.start_file(format!("archive/data/{i}"), stored).unwrap();
            zip.write_all(b"x").unwrap();
        }
        let path = dir.join("many.pt");
        std::fs::write(&path, zip.finish().unwrap().into_inner()).unwrap();
        RawFile::open(&path).unwrap()
    }

    /// Keys written as torch.save writes them are looked up by number; any other key
    /// (a leading zero or sign, a number past the entries) by name, and both are found.
    #[test]
    fn storages_are_found_by_number_and_by_name() {
        assert_eq!(number("0", 3), Some(0));
        assert_eq!(number("2", 3), Some(2));
        for key in ["3", "01", "+1", "-1", "1x", "", "99999999999", "١"] {
            assert_eq!(number(key, 3), None, "{key:?}");
        }
        let place = |size| Place {
            data_start: 0,
            compressed: size,
            size,
            stored: true,
        };
        let mut storages = Storages {
            numbered: (0..3).map(|_| None).collect(),
            named: Default::default(),
        };
        for (key, size) in [("0", 10), ("01", 11), ("3", 13), ("x", 14)] {
            storages.insert(key, Ok(place(size)));
        }
        let size = |s: &Storages, key| s.get(key).map(|r| r.as_ref().unwrap().size);
        for (key, want) in [
            ("0", Some(10)),
            ("01", Some(11)),
            ("3", Some(13)),
            ("x", Some(14)),
        ] {
            assert_eq!(size(&storages, key), want, "{key:?}");
        }
        assert_eq!(size(&storages, "1"), None);
        assert!(storages.remove("0").is_some() && storages.get("0").is_none());
        assert!(storages.remove("x").is_some() && storages.get("x").is_none());
    }

    /// A directory listing more entries than the limit is refused before it is walked.
    #[test]
    fn a_directory_past_the_entry_limit_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let raw = zip_of(dir.path(), 5);
        let room = || Room::for_entries(0);
        let dir = |limit| directory(&raw, limit, room().directory, &mut room().zip_buf);
        assert_eq!(dir(5).unwrap().len(), 5);
        let refused = dir(4).unwrap_err();
        assert!(
            matches!(
                refused,
                TorchProblem::Limit {
                    what: "zip entry count",
                    limit: 4,
                    found: 5
                }
            ),
            "{refused:?}"
        );
        assert_eq!(
            refused.to_string(),
            "zip entry count exceeds the limit of 4 (5); not a checkpoint bnaudit will read"
        );
    }
}
