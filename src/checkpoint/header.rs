//! Parsing and strict validation of one safetensors header.
//!
//! Beyond what the `safetensors` crate checks, we reject duplicate tensor names (serde's
//! maps keep the last one silently), headers that do not start with `{`, and any byte of the
//! data section not covered by exactly one tensor.
//!
//! A big header (tens of thousands of entries, megabytes of JSON) is cut between entries and
//! its pieces parsed on several threads; any problem in any piece sends the whole header to
//! the one-thread parse, so that errors are the same either way.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, Visitor};

use super::dtype::Dtype;
use super::error::Problem;

/// Largest header we accept; the `safetensors` crate uses the same bound.
pub const MAX_HEADER_LEN: u64 = 100_000_000;

/// One tensor entry of a header, with its byte range relative to the data section.
#[derive(Debug, Clone, PartialEq)]
pub struct HeaderTensor {
    /// Tensor name.
    pub name: String,
    /// Element type.
    pub dtype: Dtype,
    /// Shape; empty for a scalar.
    pub shape: Vec<u64>,
    /// Start offset within the data section.
    pub start: u64,
    /// End offset (exclusive) within the data section.
    pub end: u64,
}

/// A validated header.
#[derive(Debug, Clone, Default)]
pub struct Header {
    /// The `__metadata__` string map.
    pub metadata: BTreeMap<String, String>,
    /// Tensors in data order.
    pub tensors: Vec<HeaderTensor>,
    /// File offset where the data section starts (8 + header length).
    pub data_start: u64,
}

/// Reads the 8-byte little-endian header length and checks it against the file length.
pub fn header_len(prefix: [u8; 8], file_len: u64) -> Result<u64, Problem> {
    let len = u64::from_le_bytes(prefix);
    if len > MAX_HEADER_LEN {
        return Err(Problem::HeaderTooLarge {
            len,
            limit: MAX_HEADER_LEN,
        });
    }
    if len > file_len - 8 {
        return Err(Problem::HeaderPastEnd { len, file_len });
    }
    Ok(len)
}

/// Parses header bytes and validates every tensor against a data section of `data_len` bytes
/// that starts at file offset `data_start`.
pub fn parse(bytes: &[u8], data_start: u64, data_len: u64) -> Result<Header, Problem> {
    let text = std::str::from_utf8(bytes).map_err(|e| Problem::HeaderNotUtf8 {
        offset: e.valid_up_to(),
    })?;
    if !text.starts_with('{') {
        return Err(Problem::HeaderNotObject {
            found: text.chars().take(16).collect(),
        });
    }
    let mut raw = match parse_in_pieces(text, rayon::current_num_threads()) {
        Some(raw) => raw,
        None => parse_whole(text)?,
    };
    check_tiling(&mut raw.tensors, data_len)?;
    Ok(Header {
        metadata: raw.metadata,
        tensors: raw.tensors,
        data_start,
    })
}

/// Parses the header `text` on this thread.
fn parse_whole(text: &str) -> Result<RawHeader, Problem> {
    let mut problem = None;
    let seed = HeaderSeed {
        problem: &mut problem,
        capacity: text.len() / ENTRY_BYTES,
        unique: true,
    };
    parse_object(text, seed)
        .map_err(|e| problem.unwrap_or_else(|| Problem::HeaderJson(e.to_string())))
}

/// Parses `text`, a whole JSON object, with `seed`.
fn parse_object(text: &str, seed: HeaderSeed<'_>) -> Result<RawHeader, serde_json::Error> {
    let mut json = serde_json::Deserializer::from_str(text);
    // The format pads headers with trailing spaces, which `end` accepts.
    let raw = seed.deserialize(&mut json)?;
    json.end()?;
    Ok(raw)
}

/// Headers from this length on are parsed in pieces (about 2,500 entries): below it, handing
/// pieces to other threads costs more than it saves.
const PIECES_FROM: usize = 256 << 10;

/// Headers longer than this (about 160,000 entries) are parsed whole: the pieces are copied
/// to be closed as objects, and their tensor lists are held until they are joined, which
/// would add a transient copy of the header and its list (170 MB for a million tensors) to
/// a peak that the scale benchmark bounds.
const PIECES_UP_TO: usize = 16 << 20;

/// How one entry ends and the next begins in the headers that the `safetensors` libraries
/// write: `data_offsets`' closing bracket, the entry's brace, the comma, the next name's
/// opening quote. The header is cut at the comma.
const SEAM: &[u8] = b"]},\"";

/// The header parsed in `pieces` pieces on the worker threads, or `None` when it is small,
/// has no seam to cut at, or any piece fails (the caller then parses it whole, for the
/// exact error).
///
/// A cut is sound even though a name may hold the seam's bytes: the first piece starts at
/// the object's real start, and a piece that starts at an entry's start parses as a
/// complete object only when its end, too, falls between two entries; so, piece by piece,
/// every cut is between entries when every piece parses.
fn parse_in_pieces(text: &str, pieces: usize) -> Option<RawHeader> {
    if pieces < 2 || !(PIECES_FROM..=PIECES_UP_TO).contains(&text.len()) {
        return None;
    }
    // Where each piece after the first starts: the opening quote of a name.
    let mut starts = Vec::with_capacity(pieces - 1);
    let mut from = 0;
    for i in 1..pieces {
        let target = (text.len() / pieces * i).max(from);
        let found = text.as_bytes()[target..]
            .windows(SEAM.len())
            .position(|w| w == SEAM)?;
        let start = target + found + SEAM.len() - 1;
        starts.push(start);
        from = start + 1;
    }
    let piece = |i: usize| -> Option<RawHeader> {
        // The first piece holds the object's opening brace; each piece but the last ends
        // before the comma that precedes the next, and is closed here.
        let begin = if i == 0 { 0 } else { starts[i - 1] };
        let end = starts.get(i).map_or(text.len(), |&s| s - 1);
        let mut json = String::with_capacity(end - begin + 2);
        if i > 0 {
            json.push('{');
        }
        json.push_str(&text[begin..end]);
        if i < starts.len() {
            json.push('}');
        }
        let mut problem = None;
        let seed = HeaderSeed {
            problem: &mut problem,
            // The first piece's list becomes the header's: room for all of it.
            capacity: if i == 0 { text.len() } else { end - begin } / ENTRY_BYTES,
            unique: false,
        };
        parse_object(&json, seed).ok()
    };
    // The first piece on this thread, so that the list it allocates (and most names) are
    // freed where they were allocated; the others on the pool.
    let mut rest: Vec<Option<RawHeader>> = Vec::new();
    let pieces = starts.len() + 1;
    let first = rayon::in_place_scope(|scope| {
        let rest = &mut rest;
        let piece = &piece;
        scope.spawn(move |_| {
            use rayon::prelude::*;
            (1..pieces)
                .into_par_iter()
                .map(piece)
                .collect_into_vec(rest);
        });
        piece(0)
    });
    let mut whole = first?;
    for raw in rest {
        let mut raw = raw?;
        if raw.metadata_key {
            if whole.metadata_key {
                return None;
            }
            whole.metadata_key = true;
            whole.metadata = std::mem::take(&mut raw.metadata);
        }
        whole.tensors.append(&mut raw.tensors);
    }
    (!has_repeats(&whole.tensors)).then_some(whole)
}

/// Whether a name appears twice. The table holds positions, each hashed once, so that it
/// stays small enough for the cache.
fn has_repeats(tensors: &[HeaderTensor]) -> bool {
    use std::hash::BuildHasher;
    let hasher = foldhash::fast::RandomState::default();
    let hashes: Vec<u64> = tensors.iter().map(|t| hasher.hash_one(&t.name)).collect();
    let mut table = hashbrown::HashTable::with_capacity(tensors.len());
    for (i, t) in tensors.iter().enumerate() {
        let same = |&j: &usize| tensors[j].name == t.name;
        match table.entry(hashes[i], same, |&j| hashes[j]) {
            hashbrown::hash_table::Entry::Occupied(_) => return true,
            hashbrown::hash_table::Entry::Vacant(slot) => {
                slot.insert(i);
            }
        }
    }
    false
}

/// Validates one entry on its own: a known dtype, offsets in order, and a byte range as long
/// as shape × dtype.
fn tensor(name: Text<'_>, entry: RawEntry<'_>) -> Result<HeaderTensor, Problem> {
    let name = name.0.into_owned();
    let dtype: Dtype = entry.dtype.0.parse().map_err(|_| Problem::UnknownDtype {
        tensor: name.clone(),
        dtype: entry.dtype.0.to_string(),
    })?;
    let [start, end] = entry.data_offsets;
    if end < start {
        return Err(Problem::ReversedOffsets {
            tensor: name,
            start,
            end,
        });
    }
    // In u128, so that a size just past u64 (U8 × 2^64-1 is fine, F16 × 2^63 is not) is
    // told exactly.
    let expected = elements(&entry.shape)
        .and_then(|n| n.checked_mul(u128::from(dtype.bits())))
        .map(|bits| bits.div_ceil(8));
    if expected != Some(u128::from(end - start)) {
        return Err(Problem::SizeMismatch {
            tensor: name,
            dtype: dtype.to_string(),
            expected: expected.map_or_else(|| "more than 2^128".to_owned(), |n| n.to_string()),
            shape: entry.shape,
            actual: end - start,
        });
    }
    Ok(HeaderTensor {
        name,
        dtype,
        shape: entry.shape,
        start,
        end,
    })
}

/// Number of elements of `shape`, `None` past 2^128. Any zero dimension makes it 0, however
/// large the others: a `[0, 2^62, 2^62]` tensor is valid and holds no bytes.
pub(crate) fn elements(shape: &[u64]) -> Option<u128> {
    if shape.contains(&0) {
        return Some(0);
    }
    shape
        .iter()
        .try_fold(1u128, |acc, &d| acc.checked_mul(u128::from(d)))
}

/// Sorts tensors into data order and checks they cover `0..data_len` exactly once.
fn check_tiling(tensors: &mut [HeaderTensor], data_len: u64) -> Result<(), Problem> {
    // Zero-sized tensors may sit anywhere, so order by (start, end). Names are unique by
    // now, so an unstable sort gives the same order without a scratch copy of the list.
    tensors.sort_unstable_by(|a, b| (a.start, a.end, &a.name).cmp(&(b.start, b.end, &b.name)));
    let mut previous = String::new();
    let mut cursor = 0u64;
    for t in tensors.iter() {
        if t.end > data_len {
            return Err(Problem::OutOfRange {
                tensor: t.name.clone(),
                end: t.end,
                data_len,
            });
        }
        if t.start != cursor && !(t.start == t.end && t.start <= cursor) {
            return Err(Problem::NotTiled {
                tensor: t.name.clone(),
                start: t.start,
                end: t.end,
                relation: if t.start < cursor {
                    "overlap"
                } else {
                    "leave a gap after"
                },
                previous: previous.clone(),
                previous_end: cursor,
            });
        }
        if t.end > cursor {
            cursor = t.end;
            previous.clone_from(&t.name);
        }
    }
    if cursor != data_len {
        return Err(Problem::TrailingBytes {
            extra: data_len - cursor,
        });
    }
    Ok(())
}

#[derive(Deserialize)]
struct RawEntry<'a> {
    #[serde(borrow)]
    dtype: Text<'a>,
    shape: Vec<u64>,
    data_offsets: [u64; 2],
}

/// A string borrowed from the header when it holds no escape (as tensor names and dtypes
/// practically never do), so that tens of thousands of entries parse without allocating one
/// string each; serde's own `Cow<str>` always copies.
#[derive(PartialEq, Eq, Hash)]
struct Text<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct TextVisitor<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for TextVisitor<'a> {
            type Value = Text<'a>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }

            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Text<'a>, E> {
                Ok(Text(Cow::Borrowed(v)))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Text<'a>, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(TextVisitor(std::marker::PhantomData))
    }
}

/// The header's tensors, each validated on its own, in header order.
struct RawHeader {
    metadata: BTreeMap<String, String>,
    /// Whether the `__metadata__` key was there (a piece's, to see it twice).
    metadata_key: bool,
    tensors: Vec<HeaderTensor>,
}

/// Fewer bytes than one header entry (name, dtype, shape and offsets) takes in real
/// checkpoints (about 100 with PyTorch names, 85 in the scale benchmark's), to size the
/// tensor list and the name set from the header's length: grown entry by entry instead,
/// they are copied and rehashed a dozen times on a big header, and a guess that falls short
/// costs one more doubling of the largest copy.
const ENTRY_BYTES: usize = 64;

/// Deserialises a [`RawHeader`], entry by entry so that duplicates are seen rather than
/// merged.
struct HeaderSeed<'a> {
    /// A problem with an entry (a duplicate name, an unknown dtype...), recorded so that it
    /// becomes its own [`Problem`] instead of a generic JSON error.
    problem: &'a mut Option<Problem>,
    /// The expected number of entries.
    capacity: usize,
    /// Whether duplicate names are looked for here (else by the caller, across pieces).
    unique: bool,
}

impl<'de> DeserializeSeed<'de> for HeaderSeed<'_> {
    type Value = RawHeader;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<RawHeader, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for HeaderSeed<'_> {
    type Value = RawHeader;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object mapping tensor names to {dtype, shape, data_offsets}")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawHeader, A::Error> {
        // foldhash: several times faster than the default SipHash on 20,000 names, and
        // randomly seeded, so a crafted header cannot force collisions.
        let seen_capacity = if self.unique { self.capacity } else { 0 };
        let mut seen =
            foldhash::HashSet::with_capacity_and_hasher(seen_capacity, Default::default());
        let mut metadata = None;
        let mut metadata_key = false;
        let mut tensors = Vec::with_capacity(self.capacity);
        while let Some(key) = map.next_key::<Text<'de>>()? {
            // Cloning a borrowed name copies a pointer.
            if self.unique && !seen.insert(key.0.clone()) {
                *self.problem = Some(Problem::DuplicateKey(key.0.into_owned()));
                return Err(de::Error::custom("duplicate tensor name"));
            }
            if key.0 == "__metadata__" {
                if metadata_key {
                    return Err(de::Error::custom("duplicate __metadata__"));
                }
                metadata_key = true;
                metadata = map.next_value::<Option<BTreeMap<String, String>>>()?;
            } else {
                let entry = map
                    .next_value::<RawEntry>()
                    .map_err(|e| de::Error::custom(format!("tensor {:?}: {e}", key.0)))?;
                match tensor(key, entry) {
                    Ok(t) => tensors.push(t),
                    Err(problem) => {
                        *self.problem = Some(problem);
                        return Err(de::Error::custom("invalid tensor entry"));
                    }
                }
            }
        }
        Ok(RawHeader {
            metadata: metadata.unwrap_or_default(),
            metadata_key,
            tensors,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A header of `n` one-float tensors named by `name`, with `metadata` after entry
    /// `meta_at`, padded as the format allows.
    fn big_header(n: usize, name: impl Fn(usize) -> String, meta_at: usize) -> String {
        let mut text = String::from("{");
        for i in 0..n {
            if i == meta_at {
                text.push_str(r#""__metadata__":{"format":"pt"},"#);
            }
            let (a, b) = (4 * i, 4 * i + 4);
            let name = serde_json::to_string(&name(i)).unwrap();
            text.push_str(&format!(
                r#"{name}:{{"dtype":"F32","shape":[1],"data_offsets":[{a},{b}]}},"#
            ));
        }
        text.pop();
        text.push_str("}   ");
        text
    }

    fn parsed(text: &str, n: usize) -> Result<Header, Problem> {
        parse(text.as_bytes(), 8 + text.len() as u64, 4 * n as u64)
    }

    /// Cut into any number of pieces, a big header gives what the one-thread parse gives:
    /// the same tensors in the same order and the metadata wherever it sits, also when
    /// names hold the bytes of the seam the header is cut at (`x]},` then the closing quote).
    #[test]
    fn a_header_parsed_in_pieces_is_the_header_parsed_whole() {
        let n = 12_000;
        let names: [&dyn Fn(usize) -> String; 3] = [
            &|i| format!("layer{i}.weight"),
            &|i| format!("x{i}]}},"),
            &|i| {
                if i % 3 == 0 {
                    format!("a{i}]}},")
                } else {
                    format!("q\"{i}]}},")
                }
            },
        ];
        for name in names {
            for meta_at in [0, n / 2, n - 1] {
                let text = big_header(n, name, meta_at);
                assert!(text.len() >= PIECES_FROM);
                let want = parse_whole(&text).unwrap();
                for pieces in [2, 3, 7, 64] {
                    let Some(got) = parse_in_pieces(&text, pieces) else {
                        // Only a cut inside a name may refuse, and then the whole parse
                        // answers; plain names always cut.
                        assert!(name(0).contains(']'), "{pieces} pieces refused");
                        continue;
                    };
                    assert_eq!(got.tensors, want.tensors, "{pieces} pieces");
                    assert_eq!(got.metadata, want.metadata);
                    assert!(got.metadata_key);
                }
                assert_eq!(parsed(&text, n).unwrap().tensors.len(), n);
            }
        }
    }

    /// A repeat in another piece than the first, a second `__metadata__`, and a bad entry
    /// late in the header are each the error the one-thread parse gives.
    #[test]
    fn problems_in_any_piece_are_the_whole_parse_problems() {
        let n = 12_000;
        let repeated = big_header(n, |i| format!("t{}", if i == n - 10 { 3 } else { i }), 1);
        assert!(parse_in_pieces(&repeated, 2).is_none());
        assert!(matches!(parsed(&repeated, n), Err(Problem::DuplicateKey(name)) if name == "t3"));
        let two_metadata = big_header(n, |i| format!("t{i}"), 0).replacen(
            r#""t11000":"#,
            r#""__metadata__":{},"t11000":"#,
            1,
        );
        assert!(parse_in_pieces(&two_metadata, 2).is_none());
        assert!(
            matches!(parsed(&two_metadata, n), Err(Problem::DuplicateKey(name)) if name == "__metadata__")
        );
        let bad_dtype = big_header(n, |i| format!("t{i}"), 0).replacen(
            r#""t11000":{"dtype":"F32""#,
            r#""t11000":{"dtype":"F33""#,
            1,
        );
        assert!(parse_in_pieces(&bad_dtype, 2).is_none());
        assert!(matches!(
            parsed(&bad_dtype, n),
            Err(Problem::UnknownDtype { tensor, dtype }) if tensor == "t11000" && dtype == "F33"
        ));
        let bad_json =
            big_header(n, |i| format!("t{i}"), 0).replacen(r#""t11000":{"#, r#""t11000":["#, 1);
        let (Err(Problem::HeaderJson(a)), Err(Problem::HeaderJson(b))) =
            (parsed(&bad_json, n), parse_whole(&bad_json))
        else {
            panic!("a malformed entry is a JSON error");
        };
        assert_eq!(a, b, "the error of the whole parse, with its position");
    }

    #[test]
    fn escaped_names_are_unescaped_and_still_checked_for_duplicates() {
        // `\u0062` is "b": names with escapes cannot be borrowed from the header text.
        let text = br#"{"a":{"dtype":"F\u0033\u0032","shape":[1],"data_offsets":[0,4]},"\u0062.x":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#;
        let header = parse(text, 8 + text.len() as u64, 8).unwrap();
        let names: Vec<&str> = header.tensors.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["a", "b.x"]);
        assert_eq!(header.tensors[0].dtype, Dtype::F32);
        let dup = br#"{"b":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"\u0062":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#;
        assert!(matches!(
            parse(dup, 8 + dup.len() as u64, 8),
            Err(Problem::DuplicateKey(name)) if name == "b"
        ));
    }
}
