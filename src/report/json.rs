//! JSON output: the serialised report, pretty-printed, newline-terminated.

use std::cell::RefCell;
use std::io::{self, BufWriter, Write};

use rayon::prelude::*;
use serde::ser::SerializeSeq;
use serde::{Serialize, Serializer};

use crate::audit::LsReport;
use crate::audit::explain::{Explained, Explainer};

/// Serialises any report as the JSON contract of DESIGN.md into `out` as it goes: an `ls`
/// report of thousands of layers is megabytes, which need not be built in memory first.
pub fn write<T: Serialize + ?Sized>(out: impl Write, report: &T) -> io::Result<()> {
    // The serialiser writes token by token; a buffer of a concrete type keeps each of those
    // writes an inlined copy even when `out` is a `dyn Write`, which passes it whole chunks.
    let mut buffered = BufWriter::with_capacity(64 * 1024, out);
    serde_json::to_writer_pretty(&mut buffered, report)?;
    buffered.write_all(b"\n")?;
    buffered.flush()
}

/// Writes the `ls` report as [`write`] does, byte for byte, with its long lists (the layers,
/// and every tensor with `--all`) rendered on all cores: serialising thousands of layers is
/// a third of listing a big checkpoint, and one core would do it while the other waits.
pub fn ls(out: impl Write, report: &LsReport) -> io::Result<()> {
    ls_in(out, report, Chunks::DEFAULT)
}

/// [`ls`] with the list slices given (small in tests, to cross slice and window edges).
fn ls_in(out: impl Write, report: &LsReport, chunks: Chunks) -> io::Result<()> {
    // The fields in the order `#[derive(Serialize)]` writes them; a test holds the two to
    // the same bytes.
    let mut out = BufWriter::with_capacity(64 * 1024, out);
    out.write_all(b"{\n  \"schema_version\": ")?;
    serde_json::to_writer(&mut out, &report.schema_version)?;
    out.write_all(b",\n  \"checkpoint\": ")?;
    out.write_all(nested(&report.checkpoint, 1)?.as_slice())?;
    out.write_all(b",\n  \"layers\": ")?;
    list(&mut out, &report.layers, chunks)?;
    if let Some(tensors) = &report.tensors {
        out.write_all(b",\n  \"tensors\": ")?;
        list(&mut out, tensors, chunks)?;
    }
    out.write_all(b"\n}\n")?;
    out.flush()
}

/// How a long list is cut up: `slice` items rendered by one task, `window` items rendered
/// before they are written (so the rendered text held at once stays bounded).
#[derive(Clone, Copy)]
struct Chunks {
    slice: usize,
    window: usize,
}

impl Chunks {
    const DEFAULT: Chunks = Chunks {
        slice: 64,
        window: 512,
    };
}

/// Writes `items` as the pretty-printed array that is a field of the report's top-level
/// object, slices of it rendered in parallel.
fn list<T: Serialize + Sync>(out: &mut impl Write, items: &[T], chunks: Chunks) -> io::Result<()> {
    if items.is_empty() {
        return out.write_all(b"[]");
    }
    // A slice rendered where the whole array sits is `[` + its items, each after a
    // newline and the indent, + the newline, indent and `]` that close it: what lies
    // between those brackets is exactly its items' part of the whole array's text.
    let close = b"\n  ]";
    out.write_all(b"[")?;
    for (w, window) in items.chunks(chunks.window).enumerate() {
        let rendered = window
            .par_chunks(chunks.slice)
            .map(|slice| nested(slice, 1))
            .collect::<io::Result<Vec<_>>>()?;
        for (i, text) in rendered.iter().enumerate() {
            if w > 0 || i > 0 {
                out.write_all(b",")?;
            }
            out.write_all(&text[1..text.len() - close.len()])?;
        }
    }
    out.write_all(close)
}

/// `value` pretty-printed as it reads at `depth` levels of nesting: rendered as the only
/// item of `depth` nested one-item arrays, which puts it at that depth, and cut out of them.
fn nested<T: Serialize + ?Sized>(value: &T, depth: usize) -> io::Result<Vec<u8>> {
    let mut text = serde_json::to_vec_pretty(&Nest(value, depth))?;
    let open: usize = (1..=depth).map(|level| 2 + 2 * level).sum();
    let close: usize = (0..depth).map(|level| 2 + 2 * level).sum();
    text.truncate(text.len() - close);
    text.drain(..open);
    Ok(text)
}

/// `.0` inside `.1` one-item arrays.
struct Nest<'a, T: ?Sized>(&'a T, usize);

impl<T: Serialize + ?Sized> Serialize for Nest<'_, T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.1 == 0 {
            return self.0.serialize(s);
        }
        let mut seq = s.serialize_seq(Some(1))?;
        seq.serialize_element(&Nest(self.0, self.1 - 1))?;
        seq.end()
    }
}

/// Writes the `explain` report as [`write`] does, each layer explained when the serialiser
/// reaches it and dropped once written: the report of layers of millions of channels holds a
/// window of layers, never all of them. The same JSON as the collected report's.
pub fn explain(
    out: impl Write,
    explainer: &Explainer<'_>,
    layers: Explained<'_, '_>,
) -> io::Result<()> {
    let layers = RefCell::new(layers);
    write(out, &explainer.report(Layers(&layers), Skipped(&layers)))
}

/// The layers, pulled from the iterator as they are serialised.
struct Layers<'r, 'e, 'c>(&'r RefCell<Explained<'e, 'c>>);

impl Serialize for Layers<'_, '_, '_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(std::iter::from_fn(|| self.0.borrow_mut().next()))
    }
}

/// The skipped layers: serialised after [`Layers`], when all are known.
struct Skipped<'r, 'e, 'c>(&'r RefCell<Explained<'e, 'c>>);

impl Serialize for Skipped<'_, '_, '_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.borrow().skipped().serialize(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{LsOptions, ls as ls_report};
    use crate::checkpoint::{Checkpoint, ReadMode};

    fn report(fixture: &str, all: bool) -> LsReport {
        let path = format!("{}/tests/fixtures/{fixture}", env!("CARGO_MANIFEST_DIR"));
        let ckpt = Checkpoint::open(path, ReadMode::Mmap).unwrap();
        ls_report(&ckpt, LsOptions { all }).unwrap()
    }

    /// The hand-ordered fields and the parallel lists give the derived serialisation's
    /// bytes, whatever the slices and windows, with and without `--all`, and with no layer.
    #[test]
    fn ls_is_the_derived_serialisation_byte_for_byte() {
        for (fixture, all) in [
            ("ls/torch_zoo.safetensors", false),
            ("ls/torch_zoo.safetensors", true),
            ("torch/plain.pt", true),
            ("ls/metadata.safetensors", false),
        ] {
            let report = report(fixture, all);
            let mut expected = Vec::new();
            write(&mut expected, &report).unwrap();
            for (slice, window) in [(1, 1), (2, 3), (3, 2), (64, 512)] {
                let mut got = Vec::new();
                ls_in(&mut got, &report, Chunks { slice, window }).unwrap();
                assert_eq!(
                    String::from_utf8(got).unwrap(),
                    String::from_utf8(expected.clone()).unwrap(),
                    "{fixture}, --all {all}, slices of {slice}, windows of {window}"
                );
            }
        }
        let mut empty = report("ls/metadata.safetensors", false);
        empty.layers.clear();
        let mut expected = Vec::new();
        write(&mut expected, &empty).unwrap();
        let mut got = Vec::new();
        ls(&mut got, &empty).unwrap();
        assert_eq!(got, expected);
    }
}
