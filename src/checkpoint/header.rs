//! Parsing and strict validation of one safetensors header.
//!
//! Beyond what the `safetensors` crate checks, we reject duplicate tensor names (serde's
//! maps keep the last one silently), headers that do not start with `{`, and any byte of the
//! data section not covered by exactly one tensor.

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
    let mut problem = None;
    let mut json = serde_json::Deserializer::from_str(text);
    // The format pads headers with trailing spaces, which `end` accepts.
    let raw = HeaderSeed(&mut problem, bytes.len() / ENTRY_BYTES)
        .deserialize(&mut json)
        .and_then(|raw| json.end().map(|()| raw));
    let mut raw = raw.map_err(|e| problem.unwrap_or_else(|| Problem::HeaderJson(e.to_string())))?;
    check_tiling(&mut raw.tensors, data_len)?;
    Ok(Header {
        metadata: raw.metadata,
        tensors: raw.tensors,
        data_start,
    })
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
    tensors: Vec<HeaderTensor>,
}

/// Fewer bytes than one header entry (name, dtype, shape and offsets) takes in real
/// checkpoints (about 100 with PyTorch names, 85 in the scale benchmark's), to size the
/// tensor list and the name set from the header's length: grown entry by entry instead,
/// they are copied and rehashed a dozen times on a big header, and a guess that falls short
/// costs one more doubling of the largest copy.
const ENTRY_BYTES: usize = 64;

/// Deserialises a [`RawHeader`], entry by entry so that duplicates are seen rather than
/// merged. A problem with an entry (a duplicate name, an unknown dtype...) is recorded in
/// `.0` so that it becomes its own [`Problem`] instead of a generic JSON error; `.1` is
/// the expected number of entries.
struct HeaderSeed<'a>(&'a mut Option<Problem>, usize);

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
        let mut seen = foldhash::HashSet::with_capacity_and_hasher(self.1, Default::default());
        let mut metadata = None;
        let mut tensors = Vec::with_capacity(self.1);
        while let Some(key) = map.next_key::<Text<'de>>()? {
            // Cloning a borrowed name copies a pointer.
            if !seen.insert(key.0.clone()) {
                *self.0 = Some(Problem::DuplicateKey(key.0.into_owned()));
                return Err(de::Error::custom("duplicate tensor name"));
            }
            if key.0 == "__metadata__" {
                metadata = map.next_value::<Option<BTreeMap<String, String>>>()?;
            } else {
                let entry = map
                    .next_value::<RawEntry>()
                    .map_err(|e| de::Error::custom(format!("tensor {:?}: {e}", key.0)))?;
                match tensor(key, entry) {
                    Ok(t) => tensors.push(t),
                    Err(problem) => {
                        *self.0 = Some(problem);
                        return Err(de::Error::custom("invalid tensor entry"));
                    }
                }
            }
        }
        Ok(RawHeader {
            metadata: metadata.unwrap_or_default(),
            tensors,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
